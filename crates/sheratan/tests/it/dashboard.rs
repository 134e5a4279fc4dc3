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
    // Every toast the page shows, kept (toasts vanish after 6 s).
    tab.call(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": "window.__toasts = []; new MutationObserver((ms) => ms.forEach((m) => m.addedNodes.forEach((n) => n.classList && n.classList.contains('toast') && window.__toasts.push(n.textContent)))).observe(document, {childList: true, subtree: true});"}),
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
    // A delayed job says so in the list.
    let later = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (status, body) = post(
        &format!("{}/v1/jobs", hub.data_url),
        Auth::Bearer(&token),
        &json!({"kind": "echo", "queue": "later", "run_at": later}).to_string(),
    )
    .await;
    assert_eq!(status.as_u16(), 202, "{body}");
    let delayed = body["job_id"].as_str().unwrap().to_owned();
    ui.wait(
        "the delayed job marked",
        &format!("(document.querySelector('tr[data-job=\"{delayed}\"] .job-delayed') || {{}}).textContent"),
    )
    .await;
    ui.shot("05-jobs").await;
    jobs_show_their_node_error_and_distinguishing_id(&ui, &job_id).await;
    // The detail, named by the end of its id as the list shows it.
    ui.go(&format!("#/jobs/{}", &job_id[job_id.len() - 8..]))
        .await;
    ui.wait(
        "the job's detail",
        "document.body.innerText.includes('slept_ms')",
    )
    .await;
    assert!(
        ui.js("document.body.innerText")
            .await
            .as_str()
            .unwrap()
            .contains(&job_id),
        "the detail shows the whole id"
    );
    ui.shot("06-job-detail").await;
    progress_shows_live_and_queues_are_set_from_the_page(&ui, &hub, &token).await;
    schedules_are_shown_paused_and_run_from_the_page(&ui, &hub, &token).await;
    cancelled_jobs_are_requeued_and_deleted_in_bulk_after_a_confirmation(&ui, &hub, &token).await;

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
    // An LLM job, so the relay view has a row to lay out too.
    let (status, body) = post(
        &format!("{}/api/jobs", hub.urls["core"]),
        Auth::Bearer(&token),
        &json!({"kind": "chat", "dispatch": "llm", "payload": {"prompt": "hello"}}).to_string(),
    )
    .await;
    assert_eq!(status.as_u16(), 202, "{body}");
    every_view_fits_at_three_widths(&ui, &job_id).await;

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
    only_alerts_raised_after_sign_in_pop_up(&ui, &hub, &token).await;
    each_role_sees_what_it_may_do(&ui, &hub).await;
    let errors = page_errors(&mut events);
    assert!(errors.is_empty(), "the page reported errors: {errors:#?}");
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

/// The jobs list shows the end of each id (the start of a UUIDv7 is its time), the node that
/// ran the job and its error; a submit to a queue nobody serves says so, and so does its row.
async fn jobs_show_their_node_error_and_distinguishing_id(ui: &Ui, job_id: &str) {
    let row = format!("document.querySelector('tr[data-job=\"{job_id}\"]')");
    assert_eq!(
        ui.js(&format!("{row}.querySelector('a').textContent"))
            .await,
        json!(format!("…{}", &job_id[job_id.len() - 8..]))
    );
    ui.wait(
        "the node that ran the job",
        &format!("{row}.querySelector('.job-node').textContent === 'worker-1'"),
    )
    .await;

    ui.fill("#submit-kind", "sleep").await;
    ui.fill("#submit-payload", r#"{"ms": "soon"}"#).await;
    ui.click("#submit-button").await;
    let failed = submitted_job(ui, job_id).await;
    ui.wait(
        "the failed job's error in its row",
        &format!("(document.querySelector('tr[data-job=\"{failed}\"] .job-error') || {{}}).textContent === 'sleep needs {{\"ms\": N}} or {{\"seconds\": S}}'"),
    )
    .await;

    ui.fill("#submit-kind", "echo").await;
    ui.fill("#submit-queue", "nobody-serves").await;
    ui.fill("#submit-payload", "{}").await;
    ui.click("#submit-button").await;
    let waiting = submitted_job(ui, &failed).await;
    ui.wait(
        "the submit's warning",
        "(document.getElementById('submit-warning') || {}).textContent.includes('\"nobody-serves\"')",
    )
    .await;
    ui.click("#filter-apply").await;
    ui.wait(
        "the waiting job's note",
        &format!("(document.querySelector('tr[data-job=\"{waiting}\"] .warn-note') || {{}}).textContent === 'waiting: no node serves queue nobody-serves'"),
    )
    .await;
    ui.fill("#submit-queue", "default").await;

    // Dispatching to the relay picks a kind it runs (it offers chat and llm, not echo).
    let pick = |to: &str| {
        format!(
            "(() => {{ const d = document.getElementById('submit-dispatch'); d.value = '{to}'; d.dispatchEvent(new Event('change')); return document.getElementById('submit-kind').value; }})()"
        )
    };
    ui.fill("#submit-kind", "echo").await;
    assert_eq!(ui.js(&pick("llm")).await, json!("chat"));
    assert_eq!(ui.js(&pick("queue")).await, json!("echo"));
}

/// The id of the job the submit form just submitted, once it is not `previous`.
async fn submitted_job(ui: &Ui, previous: &str) -> String {
    ui.wait(
        "a new submitted job",
        &format!("document.querySelector('#submit-result a') && !document.querySelector('#submit-result a').getAttribute('href').endsWith('{previous}')"),
    )
    .await;
    let id = ui
        .js("document.querySelector('#submit-result a').getAttribute('href').split('/').pop()")
        .await;
    id.as_str().unwrap().to_owned()
}

/// Every view at 800, 1400 and 1920 px: the page never scrolls sideways, and from 1400 px on
/// every table fits its card (nothing, such as the alerts' Message column, is cut off).
/// Screenshots of each go to the artifacts folder.
async fn every_view_fits_at_three_widths(ui: &Ui, job_id: &str) {
    let views = [
        ("overview", "#/overview".to_string()),
        ("nodes", "#/nodes".to_string()),
        ("jobs", "#/jobs".to_string()),
        ("job", format!("#/jobs/{job_id}")),
        ("queues", "#/queues".to_string()),
        ("schedules", "#/schedules".to_string()),
        ("auctions", "#/auctions".to_string()),
        ("security", "#/security".to_string()),
        ("relay", "#/relay".to_string()),
    ];
    for width in [800, 1400, 1920] {
        ui.tab
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await
            .unwrap();
        for (name, hash) in &views {
            ui.go(hash).await;
            ui.wait(
                &format!("the {name} view at {width} px"),
                "document.querySelector('.main .panel') && !document.querySelector('.main .loading')",
            )
            .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            ui.shot(&format!("width-{width}-{name}")).await;
            let fits = ui
                .js("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
                .await;
            if fits != json!(true) {
                // Name what reaches past the right edge, to say what to fix.
                let wide = ui
                    .js("Array.from(document.querySelectorAll('body *')).filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1).slice(0, 8).map((e) => `${e.tagName}.${e.className}#${e.id}`)")
                    .await;
                panic!("{name} at {width} px scrolls sideways; too wide: {wide}");
            }
            // Every row of every table has as many cells as its header has columns.
            let misaligned = ui
                .js("Array.from(document.querySelectorAll('.main table')).filter((t) => t.tHead && t.tBodies.length).filter((t) => Array.from(t.tBodies[0].rows).some((r) => r.cells.length !== t.tHead.rows[0].cells.length)).map((t) => t.closest('.panel').querySelector('h3').textContent)")
                .await;
            assert_eq!(
                misaligned,
                json!([]),
                "{name}: rows that do not match their header"
            );
            if width >= 1400 {
                let cut = ui
                    .js("Array.from(document.querySelectorAll('.table-wrap')).filter((w) => w.scrollWidth > w.clientWidth + 1).map((w) => w.closest('.panel').querySelector('h3').textContent)")
                    .await;
                assert_eq!(cut, json!([]), "{name} at {width} px: tables cut off");
            }
        }
    }
    ui.tab
        .call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1366, "height": 860, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await
        .unwrap();
}

/// A running sleep job's detail follows its progress live; the Queues view sets a key limit
/// and a rate, pauses and resumes a queue, and the hub has what the page set.
async fn progress_shows_live_and_queues_are_set_from_the_page(
    ui: &Ui,
    hub: &HubProcess,
    token: &str,
) {
    let (status, body) = post(
        &format!("{}/api/jobs", hub.urls["core"]),
        Auth::Bearer(token),
        &json!({"kind": "sleep", "payload": {"ms": 5000}}).to_string(),
    )
    .await;
    assert_eq!(status.as_u16(), 202, "{body}");
    let id = body["job_id"].as_str().unwrap().to_owned();
    ui.go(&format!("#/jobs/{id}")).await;
    ui.wait(
        "the first progress",
        "document.getElementById('job-progress-pct')",
    )
    .await;
    let first = ui
        .js("parseInt(document.getElementById('job-progress-pct').textContent)")
        .await
        .as_i64()
        .unwrap();
    ui.wait(
        "progress moving on the open page",
        &format!(
            "parseInt((document.getElementById('job-progress-pct') || {{}}).textContent) > {first}"
        ),
    )
    .await;
    ui.shot("06b-job-progress").await;

    ui.go("#/queues").await;
    ui.wait("the queues view", "document.getElementById('queue-form')")
        .await;
    ui.fill("#q-name", "default").await;
    ui.fill("#q-key-concurrency", "1").await;
    ui.fill("#q-rate", "50/s").await;
    ui.click("#queue-save").await;
    ui.wait(
        "the new limits in the table",
        "(document.querySelector('tr[data-queue=\"default\"]') || {}).textContent && document.querySelector('tr[data-queue=\"default\"]').textContent.includes('50/s')",
    )
    .await;
    let (status, settings) = get(
        &format!("{}/admin/queues/default/settings", hub.data_url),
        Auth::Bearer(token),
    )
    .await;
    assert_eq!(status.as_u16(), 200, "{settings}");
    assert_eq!(settings["key_concurrency"], 1, "{settings}");
    assert_eq!(settings["rate"]["limit"], 50, "{settings}");
    ui.shot("06c-queues").await;
    ui.click("[data-pause=\"default\"]").await;
    ui.wait(
        "the queue paused",
        "document.querySelector('[data-pause=\"default\"]').textContent === 'Resume'",
    )
    .await;
    ui.click("[data-pause=\"default\"]").await;
    ui.wait(
        "the queue resumed",
        "document.querySelector('[data-pause=\"default\"]').textContent === 'Pause'",
    )
    .await;
    // Back to no limits for the rest of the run.
    ui.fill("#q-name", "default").await;
    ui.fill("#q-key-concurrency", "none").await;
    ui.fill("#q-rate", "none").await;
    ui.click("#queue-save").await;
    ui.wait(
        "the limits removed",
        "!document.querySelector('tr[data-queue=\"default\"]').textContent.includes('50/s')",
    )
    .await;
    let (_, settings) = get(
        &format!("{}/admin/queues/default/settings", hub.data_url),
        Auth::Bearer(token),
    )
    .await;
    assert_eq!(settings, json!({"paused": false}));
}

/// The Schedules view shows a schedule's next run and its last job as it finishes; the page
/// pauses it and runs it now, and the hub has what the page did.
async fn schedules_are_shown_paused_and_run_from_the_page(ui: &Ui, hub: &HubProcess, token: &str) {
    let spec = json!({
        "name": "heartbeat-report",
        "cron": "@every 2s",
        "timezone": "Europe/Berlin",
        "job": {"kind": "echo", "payload": {"report": "daily"}},
        "overlap": "skip"
    });
    let (status, body) = post(
        &format!("{}/v1/schedules", hub.data_url),
        Auth::Bearer(token),
        &spec.to_string(),
    )
    .await;
    assert_eq!(status.as_u16(), 201, "{body}");
    ui.go("#/schedules").await;
    ui.wait(
        "the schedule's last job completed",
        "((document.querySelector('tr[data-schedule=\"heartbeat-report\"] .schedule-job') || {}).textContent || '').includes('completed')",
    )
    .await;
    let next = ui
        .js("document.querySelector('tr[data-schedule=\"heartbeat-report\"] .schedule-next time').getAttribute('datetime')")
        .await;
    assert!(next.as_str().is_some_and(|t| t.ends_with('Z')), "{next}");
    ui.shot("06d-schedules").await;
    ui.click("[data-pause=\"heartbeat-report\"]").await;
    ui.wait(
        "the schedule paused",
        "document.querySelector('[data-pause=\"heartbeat-report\"]').textContent === 'Resume'",
    )
    .await;
    let (_, view) = get(
        &format!("{}/v1/schedules/heartbeat-report", hub.data_url),
        Auth::Bearer(token),
    )
    .await;
    assert_eq!(view["paused"], true, "{view}");
    let runs = view["runs"].as_u64().unwrap();
    ui.click("[data-run=\"heartbeat-report\"]").await;
    ui.wait(
        "the run-now toast",
        "window.__toasts.some((t) => t.includes('heartbeat-report ran now'))",
    )
    .await;
    let (_, view) = get(
        &format!("{}/v1/schedules/heartbeat-report", hub.data_url),
        Auth::Bearer(token),
    )
    .await;
    assert_eq!(view["runs"].as_u64(), Some(runs + 1), "{view}");
    assert_eq!(view["last_run"]["reason"], "run now", "{view}");
    ui.shot("06e-schedules-paused").await;
}

/// Three cancelled jobs: the Jobs view, filtered to them, requeues the selection after a
/// confirmation that names the count (one audited action), then deletes one of them.
async fn cancelled_jobs_are_requeued_and_deleted_in_bulk_after_a_confirmation(
    ui: &Ui,
    hub: &HubProcess,
    token: &str,
) {
    let mut ids = Vec::new();
    for i in 0..3 {
        let (status, body) = submit(
            &hub.data_url,
            token,
            &json!({"kind": "echo", "queue": "nobody-serves", "payload": {"i": i}}),
        )
        .await;
        assert_eq!(status.as_u16(), 202, "{body}");
        let id = body["job_id"].as_str().unwrap().to_owned();
        let (status, body) = post(
            &format!("{}/v1/jobs/{id}/cancel", hub.data_url),
            Auth::Bearer(token),
            "",
        )
        .await;
        assert_eq!(status.as_u16(), 200, "{body}");
        ids.push(id);
    }
    ui.go("#/jobs").await;
    ui.wait("the jobs view", "document.getElementById('filter-apply')")
        .await;
    ui.fill("#filter-queue", "nobody-serves").await;
    ui.js("document.getElementById('filter-status').value = 'cancelled'")
        .await;
    ui.click("#filter-apply").await;
    ui.wait(
        "three selectable rows",
        "document.querySelectorAll('#job-rows .pick').length === 3",
    )
    .await;
    ui.click("#pick-all").await;
    ui.wait(
        "three selected",
        "document.getElementById('bulk-count').textContent === '3 selected'",
    )
    .await;
    ui.click("#bulk-requeue").await;
    ui.wait(
        "the confirmation",
        "!document.getElementById('bulk-confirm').hidden && document.getElementById('bulk-yes').textContent === 'Requeue 3'",
    )
    .await;
    ui.shot("06f-bulk-confirm").await;
    // Nothing happens before the confirmation.
    let (_, job) = get(
        &format!("{}/v1/jobs/{}", hub.data_url, ids[0]),
        Auth::Bearer(token),
    )
    .await;
    assert_eq!(job["status"], "cancelled");
    ui.click("#bulk-yes").await;
    ui.wait(
        "the requeued toast",
        "window.__toasts.some((t) => t.includes('Requeued 3 job(s)'))",
    )
    .await;
    for id in &ids {
        let (_, job) = get(
            &format!("{}/v1/jobs/{id}", hub.data_url),
            Auth::Bearer(token),
        )
        .await;
        assert_eq!(job["status"], "accepted", "{job}");
    }
    let records = hub.wait_audit(Duration::from_secs(5), |r| {
        sheratan_testkit::count_events(r, sheratan_proto::EventKind::JobsRequeued) >= 1
    });
    let line = records
        .iter()
        .find(|r| r.event == sheratan_proto::EventKind::JobsRequeued)
        .unwrap();
    assert_eq!(
        line.detail["count"], 3,
        "one audit line for the lot: {line:?}"
    );

    // Cancelled again; only the first one is selected and deleted.
    for id in &ids {
        post(
            &format!("{}/v1/jobs/{id}/cancel", hub.data_url),
            Auth::Bearer(token),
            "",
        )
        .await;
    }
    ui.click("#filter-apply").await;
    ui.wait(
        "three selectable rows again",
        "document.querySelectorAll('#job-rows .pick').length === 3 && document.querySelectorAll('#job-rows .badge').length && Array.from(document.querySelectorAll('#job-rows .job-status')).every((c) => c.textContent.includes('cancelled'))",
    )
    .await;
    ui.click(&format!("#job-rows .pick[value=\"{}\"]", ids[0]))
        .await;
    ui.js("document.getElementById('job-rows').dispatchEvent(new Event('change'))")
        .await;
    ui.click("#bulk-delete").await;
    ui.wait(
        "the delete confirmation",
        "document.getElementById('bulk-yes').textContent === 'Delete 1' && document.getElementById('bulk-question').textContent.includes('cannot be undone')",
    )
    .await;
    ui.click("#bulk-yes").await;
    ui.wait(
        "the deleted toast",
        "window.__toasts.some((t) => t.includes('Deleted 1 job(s)'))",
    )
    .await;
    let (status, _) = get(
        &format!("{}/v1/jobs/{}", hub.data_url, ids[0]),
        Auth::Bearer(token),
    )
    .await;
    assert_eq!(status.as_u16(), 404);
    for id in &ids[1..] {
        let (_, job) = get(
            &format!("{}/v1/jobs/{id}", hub.data_url),
            Auth::Bearer(token),
        )
        .await;
        assert_eq!(job["status"], "cancelled", "{job}");
    }
    // The list unfiltered again for what follows.
    ui.fill("#filter-queue", "").await;
    ui.js("document.getElementById('filter-status').value = ''")
        .await;
    ui.click("#filter-apply").await;
    ui.wait(
        "the unfiltered list",
        "!document.getElementById('bulk-bar')",
    )
    .await;
}

/// Alerts raised while nobody was signed in are listed in the Security view, never replayed
/// as toasts at the next sign-in; an alert raised after it pops up.
async fn only_alerts_raised_after_sign_in_pop_up(ui: &Ui, hub: &HubProcess, token: &str) {
    let alerts = hub.home.join("logs").join("alerts.jsonl");
    let line = |message: &str| {
        let alert = json!({
            "ts": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap(),
            "rule": "auth_fail_burst", "event": "AUTH_FAIL", "severity": "warning",
            "source": "192.0.2.9", "count": 12, "window_s": 60, "message": message,
            "detail": {"reason": "invalid"},
        });
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&alerts)
            .unwrap();
        std::io::Write::write_all(&mut file, format!("{alert}\n").as_bytes()).unwrap();
    };
    // Signed out: Core stops following (give its poller two rounds to notice).
    tokio::time::sleep(Duration::from_secs(3)).await;
    line("raised while nobody was signed in");
    ui.fill("#login-token", token).await;
    ui.click("#login-submit").await;
    ui.wait(
        "live updates again",
        "document.getElementById('live').textContent === 'Live'",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    line("raised after sign-in");
    ui.wait(
        "the new alert's toast",
        "window.__toasts.some((t) => t.includes('raised after sign-in'))",
    )
    .await;
    let toasts = ui.js("window.__toasts").await;
    assert!(
        !toasts.to_string().contains("raised while nobody"),
        "an old alert popped up at sign-in: {toasts}"
    );
    ui.go("#/security").await;
    ui.wait(
        "the old alert in the Security view",
        "document.body.innerText.includes('raised while nobody was signed in')",
    )
    .await;
}

/// Signs in as `secret` (after signing out whoever is in).
async fn sign_in_as(ui: &Ui, secret: &str) {
    ui.js("sessionStorage.clear(); setTimeout(() => location.reload(), 0); true")
        .await;
    ui.wait("the login form", "document.getElementById('login-token')")
        .await;
    ui.fill("#login-token", secret).await;
    ui.click("#login-submit").await;
    ui.wait("the signed-in shell", "document.querySelector('nav.side')")
        .await;
}

/// Any credential signs in; the page shows what its role allows. A read credential sees no
/// submit form and no cancel, requeue or remove buttons (and Core refuses them anyway); an
/// admin credential manages credentials in the Tokens view.
async fn each_role_sees_what_it_may_do(ui: &Ui, hub: &HubProcess) {
    use crate::credentials::create;
    let viewer = create(hub, "read", "viewer");
    sign_in_as(ui, &viewer).await;
    ui.wait(
        "who is signed in",
        "document.getElementById('signed-in-as').textContent === 'viewer (read)'",
    )
    .await;
    assert_eq!(
        ui.js("[...document.querySelectorAll('nav.side a')].map((a) => a.textContent).join(',')")
            .await,
        json!("Overview,Nodes,Jobs,Queues,Schedules,Auctions,Security,Relay"),
        "a read credential has no Tokens view"
    );
    // It sees the schedules, and no way to pause or run them; Core and the hub refuse too.
    ui.go("#/schedules").await;
    ui.wait(
        "the schedule list",
        "document.getElementById('schedules-table')",
    )
    .await;
    assert_eq!(
        ui.js("document.querySelectorAll('[data-pause], [data-run]').length")
            .await,
        json!(0)
    );
    for (method, path) in [
        (reqwest::Method::PATCH, "/api/schedules/heartbeat-report"),
        (reqwest::Method::POST, "/api/schedules/heartbeat-report/run"),
        (reqwest::Method::POST, "/api/jobs/bulk/requeue"),
    ] {
        let (status, body) = call(
            method,
            &format!("{}{path}", hub.urls["core"]),
            Auth::Bearer(&viewer),
            Some(r#"{"paused": false}"#),
        )
        .await;
        assert_error(status, &body, 403, "FORBIDDEN");
    }
    // It sees the queues, and no way to change them; Core refuses the change too.
    ui.go("#/queues").await;
    ui.wait("the queue list", "document.getElementById('queues-table')")
        .await;
    assert_eq!(
        ui.js("!!document.getElementById('queue-form') || document.querySelectorAll('[data-pause]').length > 0")
            .await,
        json!(false)
    );
    let (status, body) = call(
        reqwest::Method::PUT,
        &format!("{}/api/queues/default/settings", hub.urls["core"]),
        Auth::Bearer(&viewer),
        Some(r#"{"paused": true}"#),
    )
    .await;
    assert_error(status, &body, 403, "FORBIDDEN");
    ui.go("#/jobs").await;
    ui.wait("the job list", "document.getElementById('jobs-list')")
        .await;
    assert_eq!(
        ui.js("!!document.getElementById('submit-form')").await,
        json!(false)
    );
    ui.go("#/nodes").await;
    ui.wait("the node list", "document.querySelector('tr[data-node]')")
        .await;
    assert_eq!(
        ui.js("document.querySelectorAll('[data-remove]').length")
            .await,
        json!(0)
    );
    ui.shot("20-read-credential-nodes").await;
    // The Security view names who did what (the viewer's refused cancel below is audited at
    // the hub; here, the credentials made for this test).
    ui.go("#/security").await;
    ui.wait(
        "an audit line naming a credential",
        "document.body.innerText.includes('the mesh token')",
    )
    .await;
    // Core refuses what the page does not offer.
    let core = &hub.urls["core"];
    let (status, body) = post(
        &format!("{core}/api/jobs"),
        Auth::Bearer(&viewer),
        r#"{"kind":"echo","payload":{}}"#,
    )
    .await;
    assert_error(status, &body, 403, "FORBIDDEN");

    let ops = create(hub, "admin", "ops");
    sign_in_as(ui, &ops).await;
    ui.go("#/tokens").await;
    ui.wait(
        "the Tokens view",
        "document.querySelector('tr[data-token=\"viewer\"]')",
    )
    .await;
    ui.fill("#token-name", "ci-bot").await;
    ui.js("document.getElementById('token-role').value = 'submit'")
        .await;
    ui.fill("#token-queues", "build").await;
    ui.click("#token-create").await;
    ui.wait(
        "the new secret, shown once",
        "(document.getElementById('token-secret-value') || {}).textContent?.startsWith('shtc_')",
    )
    .await;
    ui.shot("21-tokens-created").await;
    let secret = ui
        .js("document.getElementById('token-secret-value').textContent")
        .await;
    // The new credential works, within its queues, through Core.
    let secret = secret.as_str().unwrap().to_owned();
    let (status, body) = post(
        &format!("{core}/api/jobs"),
        Auth::Bearer(&secret),
        r#"{"kind":"echo","queue":"other","payload":{}}"#,
    )
    .await;
    assert_error(status, &body, 403, "FORBIDDEN");
    let (status, body) = post(
        &format!("{core}/api/jobs"),
        Auth::Bearer(&secret),
        r#"{"kind":"echo","queue":"build","payload":{}}"#,
    )
    .await;
    assert_eq!(status.as_u16(), 202, "{body}");
    // Revoked with two clicks; Core refuses it within its few seconds of memory.
    ui.click("[data-revoke=\"ci-bot\"]").await;
    ui.click("[data-revoke=\"ci-bot\"]").await;
    ui.wait(
        "ci-bot revoked",
        "(document.querySelector('tr[data-token=\"ci-bot\"]') || {}).textContent?.includes('revoked')",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = get(&format!("{core}/api/jobs"), Auth::Bearer(&secret)).await;
        if status.as_u16() == 403 {
            assert_eq!(body["error"]["code"], "AUTH_FAIL", "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Core still takes a revoked credential"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
