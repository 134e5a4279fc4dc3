//! Helpers shared by the integration tests.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use sheratan_testkit::HubBuilder;

pub fn hub() -> HubBuilder {
    HubBuilder::new(env!("CARGO_BIN_EXE_sheratan"))
}

/// `sheratan hub` on free loopback ports with `home`, no token from the environment; for
/// tests that watch the process itself rather than a started hub.
pub fn hub_command(home: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sheratan"));
    cmd.args([
        "hub",
        "--control-addr",
        "127.0.0.1:0",
        "--data-addr",
        "127.0.0.1:0",
    ])
    .arg("--home")
    .arg(home)
    .env_remove("SHERATAN_HUB_TOKEN");
    cmd
}

/// The tests' client for what is not about certificates: it speaks `https://` to the
/// listeners other machines reach without checking whose certificate it gets (every hub in
/// the suite has a CA of its own; tests/it/tls.rs checks verification).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("build an HTTP client")
}

/// The Prometheus text of `{base}/metrics`, read with `token`.
pub async fn metrics_text(base: &str, token: &str) -> String {
    metrics_text_via(&http(), base, token).await
}

/// `GET {base}/metrics` through `client` (one that trusts a hub's TLS CA, say).
pub async fn metrics_text_via(client: &reqwest::Client, base: &str, token: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the metrics text")
}

/// How a request presents its token.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    None,
    Bearer(&'a str),
    Header(&'a str),
}

pub async fn call(
    method: Method,
    url: &str,
    auth: Auth<'_>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = http().request(method, url);
    req = match auth {
        Auth::None => req,
        Auth::Bearer(t) => req.bearer_auth(t),
        Auth::Header(t) => req.header("X-Sheratan-Token", t),
    };
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = req.send().await.expect("the hub answers");
    let status = response.status();
    let text = response.text().await.expect("read the body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

pub async fn get(url: &str, auth: Auth<'_>) -> (StatusCode, Value) {
    call(Method::GET, url, auth, None).await
}

pub async fn post(url: &str, auth: Auth<'_>, body: &str) -> (StatusCode, Value) {
    call(Method::POST, url, auth, Some(body)).await
}

/// Asserts the contract's error body with `code`, and returns its message and hint.
#[track_caller]
pub fn assert_error(
    status: StatusCode,
    body: &Value,
    want_status: u16,
    code: &str,
) -> (String, String) {
    assert_eq!(status.as_u16(), want_status, "status; body: {body}");
    assert_eq!(body["error"]["code"], code, "code; body: {body}");
    let message = body["error"]["message"]
        .as_str()
        .expect("message is a string")
        .to_owned();
    let hint = body["error"]["hint"]
        .as_str()
        .expect("hint is a string")
        .to_owned();
    assert!(!message.is_empty(), "empty message: {body}");
    (message, hint)
}

pub fn heartbeat_body(node_id: &str) -> String {
    serde_json::json!({
        "node_id": node_id,
        "role": "worker",
        "capabilities": ["echo", "sleep"],
        "build_id": "0.1.0+test",
        "capability_hash": "h1",
        "runtime": {"os": "linux", "arch": "x86_64"},
        "load": {"inflight": 0, "capacity": 4}
    })
    .to_string()
}

/// A signed `POST /v1/results`, as an executor sends it.
pub async fn send_result(data: &str, token: &str, body: &serde_json::Value) -> (StatusCode, Value) {
    send_signed(&format!("{data}/v1/results"), token, &body.to_string()).await
}

/// A `POST` of `raw`, signed like a result (content SHA-256 and HMAC with `token`).
pub async fn send_signed(url: &str, token: &str, raw: &str) -> (StatusCode, Value) {
    let raw = raw.to_owned();
    let (hash, signature) = sheratan_client::sign_result(raw.as_bytes(), token);
    let response = http()
        .post(url)
        .bearer_auth(token)
        .header("x-sheratan-content-sha256", hash)
        .header("x-sheratan-signature", signature)
        .body(raw)
        .send()
        .await
        .expect("the hub answers");
    let status = response.status();
    let text = response.text().await.expect("read the body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Completes a leased job (an item of a lease answer) successfully with `result`.
pub async fn complete(
    data: &str,
    token: &str,
    leased: &Value,
    result: Value,
) -> (StatusCode, Value) {
    send_result(
        data,
        token,
        &serde_json::json!({
            "job_id": leased["job_id"], "lease_id": leased["lease_id"],
            "outcome": "success", "result": result
        }),
    )
    .await
}

/// The kinds the tests' hand-made node offers when it leases: a job goes only to a node that
/// offers its kind.
pub const TEST_KINDS: [&str; 15] = [
    "echo",
    "sleep",
    "k",
    "before",
    "during",
    "after",
    "charge",
    "slow",
    "flaky",
    "bad",
    "ok-1",
    "ok-2",
    "ok-3",
    "nope",
    "email.send",
];

/// `POST /v1/leases`, as a node offering [`TEST_KINDS`]; returns the leased jobs and
/// `defer_ms`.
pub async fn lease(
    data: &str,
    token: &str,
    node: &str,
    queues: &[&str],
    max: u32,
    wait_ms: u64,
) -> (Vec<Value>, u64) {
    let (status, body) = post(
        &format!("{data}/v1/leases"),
        Auth::Bearer(token),
        &serde_json::json!({"node_id": node, "queues": queues, "capabilities": TEST_KINDS, "max_jobs": max, "wait_ms": wait_ms}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "lease: {body}");
    (
        body["jobs"].as_array().cloned().unwrap_or_default(),
        body["defer_ms"].as_u64().unwrap_or(0),
    )
}

/// `POST /v1/jobs`; returns the status and the body.
pub async fn submit(data: &str, token: &str, job: &Value) -> (StatusCode, Value) {
    post(
        &format!("{data}/v1/jobs"),
        Auth::Bearer(token),
        &job.to_string(),
    )
    .await
}

/// Runs a `sheratan` CLI command against `hub`; returns (exit code, stdout, stderr).
pub fn cli(hub: &sheratan_testkit::HubProcess, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sheratan"))
        .args(args)
        .env("SHERATAN_CONTROL_URL", &hub.control_url)
        .env("SHERATAN_DATA_URL", &hub.data_url)
        .env("SHERATAN_HUB_TOKEN", hub.token())
        .env("SHERATAN_LOG", "warn")
        .output()
        .expect("run sheratan");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
