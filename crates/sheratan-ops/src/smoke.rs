//! `sheratan smoke`: the port-isolation and security checklist, run against a live hub. Each
//! check says PASS or FAIL with what it saw and what to do; any FAIL makes the command exit
//! non-zero.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone)]
pub struct SmokeInput {
    pub control_url: String,
    pub data_url: String,
    pub token: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    pub hint: String,
}

fn check(name: &str, failures: Vec<String>, pass: &str, hint: &str) -> Check {
    let ok = failures.is_empty();
    Check {
        name: name.into(),
        ok,
        detail: if ok { pass.into() } else { failures.join("; ") },
        hint: if ok { String::new() } else { hint.into() },
    }
}

/// Answer of one request: the status and the contract's error code, if any.
async fn probe(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
) -> Result<(u16, String, String), String> {
    let mut req = http.request(method, url).body("{}");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let response = req.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    Ok((
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
        body["error"]["hint"].as_str().unwrap_or("").to_owned(),
    ))
}

const CONTROL_PROTECTED: [(&str, &str); 5] = [
    ("GET", "/v1/nodes"),
    ("POST", "/v1/heartbeat"),
    ("GET", "/v1/bundles"),
    ("GET", "/metrics"),
    ("GET", "/metrics?format=json"),
];
const DATA_PROTECTED: [(&str, &str); 7] = [
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs"),
    ("POST", "/v1/leases"),
    ("POST", "/v1/results"),
    ("GET", "/v1/results"),
    ("GET", "/metrics"),
    ("GET", "/admin/registry"),
];

pub async fn run(input: &SmokeInput) -> anyhow::Result<Vec<Check>> {
    if input.token.is_some() {
        for url in [&input.control_url, &input.data_url] {
            if let Some(why) = reqwest::Url::parse(url)
                .ok()
                .and_then(|u| sheratan_client::clear_text_refusal(&u))
            {
                anyhow::bail!(why);
            }
        }
    }
    let http = probe_client(input.token.as_deref())?;
    let c = input.control_url.trim_end_matches('/');
    let d = input.data_url.trim_end_matches('/');
    let mut checks = vec![
        public_health(
            &http,
            c,
            "control /health is public",
            "without a token",
            "200 without a token",
            "is the control plane running at SHERATAN_CONTROL_URL?",
        )
        .await,
        public_health(
            &http,
            d,
            "data /health answers loopback peers",
            "from this machine",
            "200 from loopback without a token",
            "run smoke on the hub's machine, with SHERATAN_DATA_URL on 127.0.0.1",
        )
        .await,
    ];
    for (plane, base, routes) in [
        ("control", c, &CONTROL_PROTECTED[..]),
        ("data", d, &DATA_PROTECTED[..]),
    ] {
        checks.extend(refused_without_the_token(&http, plane, base, routes).await);
    }
    let data_routes = [
        ("POST", "/v1/jobs"),
        ("POST", "/v1/leases"),
        ("GET", "/admin/registry"),
    ];
    checks.push(wrong_port(&http, ("data", d), ("control", c), &data_routes).await);
    let control_routes = [("POST", "/v1/heartbeat"), ("GET", "/v1/nodes")];
    checks.push(wrong_port(&http, ("control", c), ("data", d), &control_routes).await);
    if let Some(token) = &input.token {
        checks.push(token_accepted(&http, c, d, token).await);
    }
    checks.push(remote_peers(&http, d, input.token.as_deref()).await);
    checks.push(tls_to_other_machines(&http, c, d).await);
    Ok(checks)
}

/// How a listener answers a peer on another machine (this one's non-loopback address).
#[derive(Debug, PartialEq)]
enum Remote {
    /// Nothing listens there: the plane is on loopback only.
    Refused,
    /// TLS: plain HTTP gets the "this port speaks TLS" answer.
    Tls,
    Plain,
}

async fn remote_scheme(http: &reqwest::Client, ip: IpAddr, port: u16) -> Remote {
    let addr = SocketAddr::new(ip, port);
    let connects =
        tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr)).await;
    if !matches!(connects, Ok(Ok(_))) {
        return Remote::Refused;
    }
    match http.get(format!("http://{addr}/health")).send().await {
        Ok(r) if r.status() == 400 => match r.text().await {
            Ok(body) if body.contains("this port speaks TLS") => Remote::Tls,
            _ => Remote::Plain,
        },
        _ => Remote::Plain,
    }
}

fn port_number(url: &str) -> Option<u16> {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok())
}

/// Listeners other machines can reach must speak TLS (`SHERATAN_TLS=off` fails this item).
async fn tls_to_other_machines(http: &reqwest::Client, control: &str, data: &str) -> Check {
    let name = "listeners other machines reach speak TLS";
    let Some(ip) = non_loopback_ip() else {
        return check(
            name,
            Vec::new(),
            "this machine has no non-loopback address",
            "",
        );
    };
    let mut f = Vec::new();
    for (plane, url) in [("control", control), ("data", data)] {
        let Some(port) = port_number(url) else {
            f.push(format!("cannot read the port of {url}"));
            continue;
        };
        if remote_scheme(http, ip, port).await == Remote::Plain {
            f.push(format!(
                "the {plain} plane answers plain HTTP at {ip}:{port}",
                plain = plane
            ));
        }
    }
    check(
        name,
        f,
        &format!("TLS (or loopback only) at {ip}"),
        "the token and payloads cross the network in clear text: remove SHERATAN_TLS=off (the hub then serves TLS with its mesh CA), or bind the plane to 127.0.0.1",
    )
}

/// The checklist's HTTP client. Its probes say who they are (`User-Agent:
/// sheratan-smoke/<version>`) and, with the token, carry a signed `X-Sheratan-Probe` for this
/// run: the hub records the run's nonce in the audit lines the probes provoke and the audit
/// watcher raises no alert for them. Without the token the probes are ordinary refused
/// requests, and alert as such.
fn probe_client(token: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let nonce = format!("{:016x}", rand::random::<u64>());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let probe = sheratan_client::probe_header(token, &nonce, now);
        headers.insert(sheratan_proto::headers::PROBE, probe.parse()?);
    }
    Ok(sheratan_client::http_client_builder()?
        .no_proxy()
        .user_agent(concat!("sheratan-smoke/", env!("CARGO_PKG_VERSION")))
        .default_headers(headers)
        .timeout(Duration::from_secs(10))
        .build()?)
}

fn method(m: &str) -> reqwest::Method {
    reqwest::Method::from_bytes(m.as_bytes()).expect("a known method")
}

/// The port of a base URL (`http://host:PORT`), as text; empty when there is none.
fn port_of(base: &str) -> &str {
    base.rsplit(':').next().unwrap_or("").trim_end_matches('/')
}

/// `GET /health` answers 200 without a token.
async fn public_health(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    how: &str,
    pass: &str,
    hint: &str,
) -> Check {
    let mut f = Vec::new();
    match probe(http, reqwest::Method::GET, &format!("{base}/health"), None).await {
        Ok((200, _, _)) => {}
        Ok((s, code, _)) => f.push(format!("GET /health {how} answered {s} {code}")),
        Err(e) => f.push(e),
    }
    check(name, f, pass, hint)
}

/// Every protected route answers 403 AUTH_FAIL without a token and with a wrong one.
async fn refused_without_the_token(
    http: &reqwest::Client,
    plane: &str,
    base: &str,
    routes: &[(&str, &str)],
) -> Vec<Check> {
    let mut checks = Vec::new();
    for (label, token) in [
        ("without a token", None),
        ("with a wrong token", Some("smoke-wrong-token-0123456789")),
    ] {
        let mut f = Vec::new();
        for (m, path) in routes {
            match probe(http, method(m), &format!("{base}{path}"), token).await {
                Ok((403, code, _)) if code == "AUTH_FAIL" => {}
                Ok((s, code, _)) => f.push(format!("{m} {path} answered {s} {code}")),
                Err(e) => f.push(e),
            }
        }
        checks.push(check(
            &format!("{plane} routes refuse requests {label}"),
            f,
            &format!("403 AUTH_FAIL on {} routes", routes.len()),
            "authentication is off or broken: is the hub running with SHERATAN_HUB_TOKEN_REQUIRED=0? set it to 1 (the default)",
        ));
    }
    checks
}

/// Routes of one plane sent to the other plane's port answer 421 PORT_MISMATCH, with a hint
/// naming the right port.
async fn wrong_port(
    http: &reqwest::Client,
    (plane, right): (&str, &str),
    (other, wrong): (&str, &str),
    routes: &[(&str, &str)],
) -> Check {
    let right_port = port_of(right);
    let mut f = Vec::new();
    for (m, path) in routes {
        match probe(http, method(m), &format!("{wrong}{path}"), None).await {
            Ok((421, code, hint)) if code == "PORT_MISMATCH" && hint.contains(right_port) => {}
            Ok((s, code, hint)) => f.push(format!(
                "{m} {path} on the {other} port answered {s} {code} {hint}"
            )),
            Err(e) => f.push(e),
        }
    }
    check(
        &format!("{plane} routes on the {other} port answer 421"),
        f,
        &format!("421 PORT_MISMATCH naming the {plane} port"),
        "the planes must run on separate listeners (SHERATAN_CONTROL_ADDR, SHERATAN_DATA_ADDR)",
    )
}

/// Protected routes answer 200 with the token.
async fn token_accepted(http: &reqwest::Client, c: &str, d: &str, token: &str) -> Check {
    let mut f = Vec::new();
    for (base, path) in [
        (c, "/v1/nodes"),
        (c, "/metrics"),
        (d, "/metrics"),
        (d, "/admin/registry"),
    ] {
        let url = format!("{base}{path}");
        match probe(http, reqwest::Method::GET, &url, Some(token)).await {
            Ok((200, _, _)) => {}
            Ok((s, code, _)) => f.push(format!("GET {path} with the token answered {s} {code}")),
            Err(e) => f.push(e),
        }
    }
    check(
        "the token is accepted",
        f,
        "200 on protected routes with the token",
        "check SHERATAN_HUB_TOKEN (or $SHERATAN_HOME/hub_token) against the hub's",
    )
}

/// The data plane's `/health` and `/admin` must refuse peers that are not loopback. Smoke
/// connects to the data port through this machine's non-loopback address: refused connections
/// mean the plane listens on loopback only (also a pass).
async fn remote_peers(http: &reqwest::Client, data_url: &str, token: Option<&str>) -> Check {
    let name = "data /health and /admin refuse non-loopback peers";
    let Some(port) = port_number(data_url) else {
        return check(
            name,
            vec![format!("cannot read the port of {data_url}")],
            "",
            "set SHERATAN_DATA_URL to http://127.0.0.1:PORT",
        );
    };
    let Some(ip) = non_loopback_ip() else {
        return check(
            name,
            Vec::new(),
            "this machine has no non-loopback address: nothing remote can reach the data plane",
            "",
        );
    };
    let scheme = match remote_scheme(http, ip, port).await {
        Remote::Refused => {
            return check(
                name,
                Vec::new(),
                &format!(
                    "{ip}:{port} refuses connections: the data plane listens on loopback only"
                ),
                "",
            );
        }
        Remote::Tls => "https",
        Remote::Plain => "http",
    };
    let base = format!("{scheme}://{}", SocketAddr::new(ip, port));
    let mut f = Vec::new();
    for (path, tok) in [("/health", None), ("/admin/registry", token)] {
        match probe(http, reqwest::Method::GET, &format!("{base}{path}"), tok).await {
            Ok((403, code, _))
                if code == "LOCALHOST_ONLY"
                    || (tok.is_none() && code == "AUTH_FAIL" && path != "/health") => {}
            Ok((s, code, _)) => f.push(format!("GET {path} from {ip} answered {s} {code}")),
            Err(e) => f.push(e),
        }
    }
    check(
        name,
        f,
        &format!("403 LOCALHOST_ONLY from {ip}"),
        "the data plane answered a remote peer: upgrade the hub, and bind SHERATAN_DATA_ADDR to 127.0.0.1 unless remote executors need it",
    )
}

/// A local non-loopback IPv4 address, from the routing table (a UDP "connect" sends nothing).
pub fn non_loopback_ip() -> Option<IpAddr> {
    for probe in ["192.0.2.1:9", "10.255.255.1:9", "8.8.8.8:53"] {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        if socket.connect(probe).is_ok()
            && let Ok(local) = socket.local_addr()
            && !local.ip().is_loopback()
            && !local.ip().is_unspecified()
        {
            return Some(local.ip());
        }
    }
    None
}

/// The checklist as a table.
pub fn render(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(10);
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{} {:<width$}  {}\n",
            if c.ok { "PASS" } else { "FAIL" },
            c.name,
            c.detail
        ));
        if !c.ok {
            out.push_str(&format!("     {:<width$}  hint: {}\n", "", c.hint));
        }
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    out.push_str(&if failed == 0 {
        format!("all {} checks passed\n", checks.len())
    } else {
        format!("{failed} of {} checks failed\n", checks.len())
    });
    out
}
