//! The Dashboard (issue 8) end to end in a real headless Chromium (Debian's), driven over CDP
//! with the relay's client, against `sheratan up` on free ports. Screenshots of every view go
//! to `$CARGO_TARGET_DIR/test-artifacts/dashboard/`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sheratan_relay::cdp::{Browser, BrowserSource, find_chromium};
use sheratan_relay::page::Tab;
use sheratan_testkit::HubProcess;

use crate::common::*;

fn artifacts() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = base.join("test-artifacts").join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Ui {
    tab: Tab,
    shots: PathBuf,
}

impl Ui {
    async fn js(&self, expression: &str) -> Value {
        self.tab
            .eval(expression)
            .await
            .unwrap_or_else(|e| panic!("{expression}: {e}"))
    }

    /// Waits until `condition` (JavaScript) is true; on timeout saves a screenshot and fails
    /// with the page's text.
    async fn wait(&self, what: &str, condition: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.tab.eval(&format!("!!({condition})")).await.ok() == Some(Value::Bool(true)) {
                return;
            }
            if Instant::now() > deadline {
                self.shot(&format!("timeout-{}", what.replace(' ', "-")))
                    .await;
                let text = self.js("document.body.innerText").await;
                panic!(
                    "timed out waiting for {what} ({condition}); the page says:\n{}",
                    text.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn fill(&self, selector: &str, value: &str) {
        let js = format!(
            "(() => {{ const el = document.querySelector({s}); el.focus(); el.value = {v}; el.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()",
            s = json!(selector),
            v = json!(value)
        );
        self.js(&js).await;
    }

    async fn click(&self, selector: &str) {
        self.js(&format!(
            "document.querySelector({}).click()",
            json!(selector)
        ))
        .await;
    }

    async fn go(&self, hash: &str) {
        self.js(&format!("location.hash = {}", json!(hash))).await;
    }

    async fn shot(&self, name: &str) {
        if let Some(png) = self.tab.screenshot().await {
            let _ = std::fs::write(self.shots.join(format!("{name}.png")), png);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_end_to_end() {
    let hub = hub().up().env("SHERATAN_RETRY_BASE_MS", "300").start();
    let token = hub.token();
    let dashboard = hub
        .urls
        .get("dashboard")
        .expect("up prints the dashboard's address")
        .clone();

    let chromium = find_chromium().expect("chromium is installed by the test command");
    let browser = Browser::new(BrowserSource::Launch {
        chromium,
        dir: hub.home.join("e2e-browser"),
        sandbox: Default::default(),
    });
    let tab = Tab::open(browser.connection().await.unwrap())
        .await
        .unwrap();
    tab.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1366, "height": 860, "deviceScaleFactor": 1, "mobile": false}),
    )
    .await
    .unwrap();
    // The page's errors, as the browser reports them: exceptions, console errors, and (from
    // a listener this test adds before any script runs) Content-Security-Policy violations.
    let mut events = tab.events();
    for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
        tab.call(domain, json!({})).await.unwrap();
    }
    tab.call(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": "document.addEventListener('securitypolicyviolation', (e) => console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`))"}),
    )
    .await
    .unwrap();
    let ui = Ui {
        tab,
        shots: artifacts(),
    };
    ui.tab
        .call("Page.navigate", json!({"url": dashboard}))
        .await
        .unwrap();
    ui.wait("the login form", "document.getElementById('login-token')")
        .await;
    ui.shot("01-login").await;

    // A wrong token: a clear message, and no way in.
    ui.fill("#login-token", "not-the-token").await;
    ui.click("#login-submit").await;
    ui.wait(
        "the wrong-token message",
        "document.getElementById('login-error').textContent.includes('does not match')",
    )
    .await;
    ui.shot("02-login-wrong-token").await;
    assert_eq!(
        ui.js("sessionStorage.getItem('sheratan.token')").await,
        Value::Null
    );

    // The right token: in, and it stays out of the URL.
    ui.fill("#login-token", &token).await;
    ui.click("#login-submit").await;
    ui.wait(
        "the overview",
        "document.querySelector('nav.side') && document.querySelector('.card .value')",
    )
    .await;
    assert!(
        !ui.js("location.href")
            .await
            .as_str()
            .unwrap()
            .contains(&token),
        "the token must never be in a URL"
    );
    assert_eq!(
        ui.js("sessionStorage.getItem('sheratan.token')").await,
        json!(token)
    );
    ui.wait(
        "live updates",
        "document.getElementById('live').textContent === 'Live'",
    )
    .await;
    ui.shot("03-overview").await;

    // Nodes: Host-A, Host-B and the worker ONLINE.
    ui.go("#/nodes").await;
    for node in ["host-a", "host-b", "worker-1"] {
        ui.wait(
            &format!("{node} ONLINE"),
            &format!("(document.querySelector('tr[data-node=\"{node}\"] .node-status') || {{}}).textContent === 'ONLINE'"),
        )
        .await;
    }
    ui.shot("04-nodes").await;

    // A node reported by hand (the README's sample heartbeat) is removed with two clicks.
    let (status, _) = post(
        &format!("{}/v1/heartbeat", hub.control_url),
        Auth::Bearer(&token),
        &json!({"node_id": "w1", "role": "worker", "capabilities": ["echo"]}).to_string(),
    )
    .await;
    assert_eq!(status.as_u16(), 200);
    ui.wait(
        "w1 listed",
        "document.querySelector('tr[data-node=\"w1\"]')",
    )
    .await;
    ui.click("[data-remove=\"w1\"]").await;
    ui.wait(
        "the confirmation",
        "document.querySelector('[data-remove=\"w1\"]').textContent === 'Confirm remove'",
    )
    .await;
    ui.click("[data-remove=\"w1\"]").await;
    ui.wait("w1 gone", "!document.querySelector('tr[data-node=\"w1\"]')")
        .await;
    let (status, _) = get(
        &format!("{}/v1/nodes/w1", hub.control_url),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(status.as_u16(), 404, "the hub forgot w1");

    // Jobs: submit with the form and watch it complete live (no reload).
    ui.go("#/jobs").await;
    ui.wait("the submit form", "document.getElementById('submit-form')")
        .await;
    ui.js("window.__noReload = true").await;
    ui.fill("#submit-kind", "sleep").await;
    ui.fill("#submit-payload", r#"{"ms": 1500}"#).await;
    ui.click("#submit-button").await;
    ui.wait(
        "the submitted job",
        "document.querySelector('#submit-result a')",
    )
    .await;
    let job_id = ui
        .js("document.querySelector('#submit-result a').getAttribute('href').split('/').pop()")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    let row = format!("document.querySelector('tr[data-job=\"{job_id}\"] .job-status')");
    ui.wait("the job's row", &row).await;
    ui.wait(
        "the job completing live",
        &format!("{row}.textContent === 'completed'"),
    )
    .await;
    assert_eq!(
        ui.js("window.__noReload").await,
        json!(true),
        "the page was not reloaded"
    );
    ui.shot("05-jobs").await;
    ui.go(&format!("#/jobs/{job_id}")).await;
    ui.wait(
        "the job's detail",
        "document.body.innerText.includes('slept_ms')",
    )
    .await;
    ui.shot("06-job-detail").await;

    // Security: bad-token requests make an alert appear.
    ui.go("#/security").await;
    ui.wait(
        "the security view",
        "document.body.textContent.includes('Audit log')",
    )
    .await;
    for _ in 0..12 {
        let _ = get(
            &format!("{}/v1/nodes", hub.control_url),
            Auth::Bearer("wrong-token"),
        )
        .await;
    }
    ui.wait(
        "the auth_fail_burst alert",
        "document.querySelector('tr[data-alert-rule=\"auth_fail_burst\"]')",
    )
    .await;
    ui.shot("07-security").await;

    // An auction job, then the auctions view.
    let (status, _) = post(
        &format!("{}/api/jobs", hub.urls["core"]),
        Auth::Bearer(&token),
        &json!({"kind": "echo", "dispatch": "auction", "payload": {"x": 1}}).to_string(),
    )
    .await;
    assert_eq!(status.as_u16(), 202);
    ui.go("#/auctions").await;
    ui.wait(
        "an auction record",
        "document.querySelector('[data-auction]')",
    )
    .await;
    ui.shot("08-auctions").await;

    ui.go("#/relay").await;
    ui.wait(
        "the relay view",
        "document.body.textContent.includes('Open sessions')",
    )
    .await;
    ui.shot("09-relay").await;

    ui.go("#/overview").await;
    ui.wait(
        "the overview again",
        "document.querySelector('.chart') || document.body.innerText.includes('No samples')",
    )
    .await;
    ui.shot("10-overview-after").await;

    hostile_data_is_shown_as_text(&ui, &hub, &token).await;
    the_html_tag_escapes_what_it_interpolates(&ui).await;

    let errors = page_errors(&mut events);
    assert!(errors.is_empty(), "the page reported errors: {errors:#?}");

    // Logging out forgets the token.
    ui.click("#logout").await;
    ui.wait(
        "the login form again",
        "document.getElementById('login-token')",
    )
    .await;
    assert_eq!(
        ui.js("sessionStorage.getItem('sheratan.token')").await,
        Value::Null
    );
    ui.tab.close().await;
    browser.shutdown().await;
}

/// Exceptions, console errors and CSP violations the page reported so far. Failed requests
/// (the wrong-token login's 403) are the test's doing and not counted.
fn page_errors(events: &mut tokio::sync::mpsc::UnboundedReceiver<Value>) -> Vec<String> {
    let mut errors = Vec::new();
    while let Ok(event) = events.try_recv() {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let details = &params["exceptionDetails"];
                let text = details["exception"]["description"]
                    .as_str()
                    .or_else(|| details["text"].as_str());
                errors.push(format!("exception: {}", text.unwrap_or("?")));
            }
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => {
                errors.push(format!("console.error: {}", params["args"]));
            }
            Some("Log.entryAdded")
                if params["entry"]["level"] == "error"
                    && params["entry"]["source"] != "network" =>
            {
                errors.push(format!("log: {}", params["entry"]["text"]));
            }
            _ => {}
        }
    }
    errors
}

/// An attack through the data: a job whose kind and payload are markup. Every view shows
/// them as text; no element of theirs reaches the page.
async fn hostile_data_is_shown_as_text(ui: &Ui, hub: &HubProcess, token: &str) {
    let kind = r#"<img src=x id=pwned-kind onerror="document.title='pwned'">"#;
    let note = r#"</pre><img src=x id=pwned-payload><pre>"#;
    let (status, body) = post(
        &format!("{}/api/jobs", hub.urls["core"]),
        Auth::Bearer(token),
        &json!({"kind": kind, "payload": {"note": note}}).to_string(),
    )
    .await;
    assert_eq!(status.as_u16(), 202, "{body}");
    let job_id = body["job_id"].as_str().unwrap().to_owned();
    ui.go("#/jobs").await;
    ui.wait(
        "the hostile job's row",
        &format!("document.querySelector('tr[data-job=\"{job_id}\"]')"),
    )
    .await;
    let row_text = ui
        .js(&format!(
            "document.querySelector('tr[data-job=\"{job_id}\"]').innerText"
        ))
        .await;
    assert!(row_text.as_str().unwrap().contains(kind), "{row_text}");
    ui.go(&format!("#/jobs/{job_id}")).await;
    ui.wait("the hostile job's detail", "document.querySelector('pre')")
        .await;
    let shown = ui.js("document.querySelector('pre').innerText").await;
    assert!(shown.as_str().unwrap().contains(note), "{shown}");
    ui.shot("11-hostile-job").await;
    for id in ["pwned-kind", "pwned-payload"] {
        assert_eq!(
            ui.js(&format!("document.getElementById('{id}') === null"))
                .await,
            json!(true),
            "an element from the data ({id}) reached the page"
        );
    }
    assert_ne!(ui.js("document.title").await, json!("pwned"));
}

/// The dashboard's html`…` tag, imported in the page: data is escaped in text and in
/// attributes, markup made by the tag is kept, and put() refuses plain strings.
async fn the_html_tag_escapes_what_it_interpolates(ui: &Ui) {
    let checks = ui
        .js(r#"(async () => {
            const { html, raw, put } = await import('/js/html.js');
            const data = '<b onclick="x">&\'' + String.fromCharCode(96) + '</b>';
            let refused = false;
            try { put(document.createElement('div'), '<b>plain</b>'); } catch (e) { refused = e instanceof TypeError; }
            return {
                text: String(html`<p>${data}</p>`),
                attribute: String(html`<a title="${data}">`),
                nested: String(html`<ul>${[1, 2].map((n) => html`<li>${n}</li>`)}</ul>`),
                empty: String(html`${null}${undefined}${false}${0}`),
                trusted: String(html`${raw('<br>')}`),
                refused,
            };
        })()"#)
        .await;
    let escaped = "&lt;b onclick=&quot;x&quot;&gt;&amp;&#39;&#96;&lt;/b&gt;";
    assert_eq!(checks["text"], format!("<p>{escaped}</p>"));
    assert_eq!(checks["attribute"], format!("<a title=\"{escaped}\">"));
    assert_eq!(checks["nested"], "<ul><li>1</li><li>2</li></ul>");
    assert_eq!(checks["empty"], "0");
    assert_eq!(checks["trusted"], "<br>");
    assert_eq!(checks["refused"], true);
}
