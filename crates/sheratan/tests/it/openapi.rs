//! `GET /openapi.json` on every component `up` runs that has one: the checked-in document
//! (docs/openapi/), to any valid token and to nobody else; and the documents and the routers
//! agree both ways (every documented operation is routed, every routed path is documented).

use std::collections::BTreeSet;
use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn checked_in(name: &str) -> String {
    std::fs::read_to_string(repo().join(format!("docs/openapi/{name}.json"))).unwrap()
}

/// (document name, base URL) of every server with a document.
fn servers(hub: &sheratan_testkit::HubProcess) -> Vec<(&'static str, String)> {
    vec![
        ("hub-control", hub.control_url.clone()),
        ("hub-data", hub.data_url.clone()),
        ("core", hub.urls["core"].clone()),
        ("relay", hub.urls["relay"].clone()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_component_serves_its_document_to_tokens_only() {
    let hub = hub().up().start();
    let token = hub.token();
    // A node credential, the narrowest role: the description is every credential's.
    let (code, created) = post(
        &format!("{}/admin/tokens", hub.data_url),
        Auth::Bearer(&token),
        r#"{"name":"n1","role":"node"}"#,
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let node = created["secret"].as_str().unwrap().to_string();
    for (name, base) in servers(&hub) {
        let url = format!("{base}/openapi.json");
        for who in [&token, &node] {
            let resp = http().get(&url).bearer_auth(who).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{name}");
            assert_eq!(resp.headers()["content-type"], "application/json", "{name}");
            let text = resp.text().await.unwrap();
            assert!(
                text == checked_in(name),
                "{name}: the served document is not docs/openapi/{name}.json"
            );
        }
        // Without a token, or with a wrong one: refused like every other read.
        let (code, body) = get(&url, Auth::None).await;
        assert_error(code, &body, 403, "AUTH_FAIL");
        let (code, body) = get(&url, Auth::Bearer("not-the-token-at-all-00000000")).await;
        assert_error(code, &body, 403, "AUTH_FAIL");
    }
}

/// Every operation of every document reaches a handler (no 405, no "no route" 404), and every
/// path a router declares is in its document with the methods it routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documents_and_the_routers_agree() {
    let hub = hub().up().start();
    let token = hub.token();
    for (name, base) in servers(&hub) {
        let doc: Value = serde_json::from_str(&checked_in(name)).unwrap();
        for (path, method) in operations(&doc) {
            assert_routed(&base, &token, name, &path, &method).await;
        }
    }
    for (name, sources) in ROUTER_SOURCES {
        let doc: Value = serde_json::from_str(&checked_in(name)).unwrap();
        let documented: BTreeSet<(String, String)> = operations(&doc).into_iter().collect();
        let routed = routed_in(sources);
        assert!(routed.len() > 5, "{name}: the router sources were not read");
        for r in routed {
            assert!(
                documented.contains(&r),
                "{name}: {} {} is routed but not in docs/openapi/{name}.json",
                r.1,
                r.0
            );
        }
    }
}

fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.push((path.clone(), method.clone()));
        }
    }
    ops
}

/// Sends `method path` with the token, path parameters `x`, and a body that is not JSON (so
/// nothing changes), and checks a handler answered.
async fn assert_routed(base: &str, token: &str, name: &str, path: &str, method: &str) {
    let concrete: String = path
        .split('/')
        .map(|s| if s.starts_with('{') { "x" } else { s })
        .collect::<Vec<_>>()
        .join("/");
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut req = http()
        .request(method.clone(), format!("{base}{concrete}"))
        .bearer_auth(token);
    if method != reqwest::Method::GET && method != reqwest::Method::DELETE {
        req = req.header("content-type", "application/json").body("{");
    }
    // Headers are enough (an event stream never ends).
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let body: Value = if resp.headers()["content-type"] == "application/json" && status != 200 {
        resp.json().await.unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        status != StatusCode::METHOD_NOT_ALLOWED
            && status != StatusCode::MISDIRECTED_REQUEST
            && !message.starts_with("no route"),
        "{name}: {method} {path} is documented but not routed: {status} {body}"
    );
}

/// The router source files of each document.
const ROUTER_SOURCES: [(&str, &[&str]); 4] = [
    ("hub-control", &["sheratan-hub/src/http/control.rs"]),
    (
        "hub-data",
        &[
            "sheratan-hub/src/http/data.rs",
            "sheratan-hub/src/http/job_routes.rs",
            "sheratan-hub/src/http/schedule_routes.rs",
            "sheratan-hub/src/http/credential_routes.rs",
        ],
    ),
    ("core", &["sheratan-core/src/lib.rs"]),
    ("relay", &["sheratan-relay/src/lib.rs"]),
];

/// The text up to the parenthesis that closes the call `text` begins inside of.
fn arguments(text: &str) -> &str {
    let mut depth = 1;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 1 => return &text[..i],
            ')' => depth -= 1,
            _ => {}
        }
    }
    text
}

/// Every `.route("path", get(…).post(…))` of the files: (path, method) pairs.
fn routed_in(files: &[&str]) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(repo().join("crates").join(file)).unwrap();
        for call in text.split(".route(").skip(1) {
            let call = arguments(call).trim_start();
            let Some(rest) = call.strip_prefix('"') else {
                continue; // a path from a constant: checked from the document's side
            };
            let (path, handlers) = rest.split_once('"').unwrap();
            for method in ["get", "post", "put", "patch", "delete"] {
                let called = handlers
                    .match_indices(&format!("{method}("))
                    .any(|(i, _)| i == 0 || !handlers.as_bytes()[i - 1].is_ascii_alphanumeric());
                if called {
                    out.insert((path.to_string(), method.to_string()));
                }
            }
        }
    }
    out
}
