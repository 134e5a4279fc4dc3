//! Both planes in process: the real routers over a real SQLite store, driven with
//! `Router::oneshot`, a manual clock shared by hub and store, and peer addresses of the test's
//! choosing. The edge cases here need no process and no socket, so each runs in milliseconds;
//! the process tests in `crates/sheratan/tests/it` keep the whole system's guarantee.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sheratan_store::{Clock, ManualClock};
use sheratan_store_sqlite::{SqliteConfig, SqliteStore};
use tower::ServiceExt;

use crate::auth::{Secret, TokenConfig};
use crate::{Hub, HubConfig, HubState};

const TOKEN: &str = "router-test-token-0123456789";
const NEXT: &str = "router-test-next-0123456789";

struct TestHub {
    state: Arc<HubState>,
    control: Router,
    data: Router,
    clock: Arc<ManualClock>,
    /// Holds the audit writer and the (unused) listeners.
    _hub: Hub,
    _dir: tempfile::TempDir,
}

async fn hub_with(tweak: impl FnOnce(&mut HubConfig, &mut sheratan_store::StoreLimits)) -> TestHub {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        time::macros::datetime!(2026-12-05 08:00 UTC),
    ));
    let tokens = TokenConfig {
        token: Some(Secret::new(TOKEN)),
        required: true,
        next: None,
        rotation_until: None,
        allow_weak: false,
    };
    let mut config = HubConfig::new(dir.path().join("home"), tokens);
    config.control_addr = "127.0.0.1:0".parse().unwrap();
    config.data_addr = "127.0.0.1:0".parse().unwrap();
    let mut store_config = SqliteConfig::new(dir.path().join("jobs.db"), clock.clone());
    tweak(&mut config, &mut store_config.limits);
    let store = tokio::task::block_in_place(|| SqliteStore::open(store_config)).unwrap();
    let hub = Hub::build_with_clock(config, Arc::new(store), clock.clone())
        .await
        .unwrap();
    let state = hub.state().clone();
    TestHub {
        control: super::control_router(state.clone()),
        data: super::data_router(state.clone()),
        state,
        clock,
        _hub: hub,
        _dir: dir,
    }
}

async fn hub() -> TestHub {
    hub_with(|_, _| {}).await
}

fn loopback() -> SocketAddr {
    "127.0.0.1:50000".parse().unwrap()
}

fn remote() -> SocketAddr {
    "192.0.2.7:50000".parse().unwrap()
}

/// One request: method, path, peer, token, body.
struct Call<'a> {
    method: Method,
    path: &'a str,
    peer: SocketAddr,
    token: Option<&'a str>,
    body: Option<Vec<u8>>,
    headers: Vec<(&'a str, String)>,
}

fn call<'a>(method: Method, path: &'a str) -> Call<'a> {
    Call {
        method,
        path,
        peer: loopback(),
        token: Some(TOKEN),
        body: None,
        headers: Vec::new(),
    }
}

impl<'a> Call<'a> {
    fn json(mut self, body: Value) -> Self {
        self.body = Some(body.to_string().into_bytes());
        self
    }
    fn token(mut self, token: Option<&'a str>) -> Self {
        self.token = token;
        self
    }
    fn from(mut self, peer: SocketAddr) -> Self {
        self.peer = peer;
        self
    }
    fn header(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    async fn to(self, router: &Router) -> (StatusCode, Value) {
        let (status, _, body) = self.answered(router).await;
        (status, body)
    }

    /// Status, headers and body (parsed as JSON when it is JSON).
    async fn answered(self, router: &Router) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut req = Request::builder().method(self.method).uri(self.path);
        if let Some(token) = self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if self.body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in self.headers {
            req = req.header(name, value);
        }
        let mut req = req.body(Body::from(self.body.unwrap_or_default())).unwrap();
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let response = router.clone().oneshot(req).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (parts.status, parts.headers, body)
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

/// Submits a job; its id.
async fn submit(h: &TestHub, job: Value) -> String {
    let (status, body) = call(Method::POST, "/v1/jobs").json(job).to(&h.data).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["job_id"].as_str().unwrap().to_owned()
}

/// Leases one job of the default queue as `node`.
async fn lease(h: &TestHub, node: &str) -> Vec<Value> {
    let (status, body) = call(Method::POST, "/v1/leases")
        .json(json!({"node_id": node, "capabilities": ["echo"]}))
        .to(&h.data)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["jobs"].as_array().unwrap().clone()
}

async fn job(h: &TestHub, id: &str) -> Value {
    let (status, body) = call(Method::GET, &format!("/v1/jobs/{id}"))
        .to(&h.data)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// A signed result for `leased`, signed with `key`.
fn result(leased: &Value, key: &str) -> Call<'static> {
    let body = json!({
        "job_id": leased["job_id"], "lease_id": leased["lease_id"],
        "outcome": "success", "result": {"ok": true},
    })
    .to_string();
    let (sha, signature) = sheratan_client::sign_result(body.as_bytes(), key);
    let mut c = call(Method::POST, "/v1/results")
        .header(sheratan_proto::headers::CONTENT_SHA256, sha)
        .header(sheratan_proto::headers::SIGNATURE, signature);
    c.body = Some(body.into_bytes());
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn both_planes_refuse_missing_wrong_and_conflicting_tokens() {
    let h = hub().await;
    for (router, path) in [(&h.control, "/v1/nodes"), (&h.data, "/v1/jobs")] {
        for token in [None, Some("router-test-token-012345678"), Some("")] {
            let (status, body) = call(Method::GET, path).token(token).to(router).await;
            assert_eq!(
                (status, code(&body)),
                (StatusCode::FORBIDDEN, "AUTH_FAIL"),
                "{path} {token:?}"
            );
        }
        let (status, _) = call(Method::GET, path)
            .header(sheratan_proto::headers::TOKEN, "another-guess-0123456789")
            .to(router)
            .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "two tokens, one right: {path}"
        );
        assert_eq!(call(Method::GET, path).to(router).await.0, StatusCode::OK);
    }
    let (old, invalid) = h.state.tokens.failures_last_minute();
    assert_eq!((old, invalid), (0, 8), "every refusal counts as invalid");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_path_and_data_health_refuse_a_remote_peer_with_the_right_token() {
    let h = hub().await;
    for (method, path) in [
        (Method::GET, "/admin/registry"),
        (Method::GET, "/health"),
        (Method::POST, "/admin/queues/default/pause"),
        (Method::GET, "/admin/queues/default/settings"),
        (Method::PUT, "/admin/queues/default/settings"),
        (Method::POST, "/admin/jobs/requeue"),
        (Method::POST, "/admin/jobs/delete"),
    ] {
        let (status, body) = call(method.clone(), path)
            .json(json!({}))
            .from(remote())
            .to(&h.data)
            .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::FORBIDDEN, "LOCALHOST_ONLY"),
            "{path}"
        );
        let (status, _) = call(method, path).json(json!({})).to(&h.data).await;
        assert_eq!(status, StatusCode::OK, "{path} from loopback");
    }
    // The data plane's job routes serve remote workers with the token.
    assert_eq!(
        call(Method::GET, "/v1/jobs")
            .from(remote())
            .to(&h.data)
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_of_the_other_plane_answers_421_naming_the_right_port() {
    let h = hub().await;
    let ports = h.state.ports;
    let (status, body) = call(Method::POST, "/v1/jobs")
        .token(None)
        .to(&h.control)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::MISDIRECTED_REQUEST, "PORT_MISMATCH")
    );
    assert!(
        body["error"]["hint"]
            .as_str()
            .unwrap()
            .contains(&ports.data.to_string()),
        "{body}"
    );
    let (status, body) = call(Method::POST, "/v1/heartbeat")
        .token(None)
        .to(&h.data)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::MISDIRECTED_REQUEST, "PORT_MISMATCH")
    );
    assert!(
        body["error"]["hint"]
            .as_str()
            .unwrap()
            .contains(&ports.control.to_string()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_are_checked_before_anything_is_stored() {
    let h = hub_with(|config, _| config.max_body_bytes = 1024).await;
    let refused = [
        (
            json!({"kind": "echo", "payload": {}, "priority": "high"}),
            "priority",
        ),
        (json!({"kind": "", "payload": {}}), "kind"),
        (
            json!({"kind": "echo", "payload": {}, "queue": "a b"}),
            "queue",
        ),
        (
            json!({"kind": "echo", "payload": {}, "max_attempts": 0}),
            "max_attempts",
        ),
        (json!([{"kind": "echo"}]), "JSON object"),
    ];
    for (body, says) in refused {
        let (status, answer) = call(Method::POST, "/v1/jobs")
            .json(body.clone())
            .to(&h.data)
            .await;
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
            "{body}"
        );
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(says),
            "{body}: {answer}"
        );
    }
    let big = json!({"kind": "echo", "payload": {"pad": "x".repeat(2000)}});
    let (status, answer) = call(Method::POST, "/v1/jobs").json(big).to(&h.data).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE")
    );
    assert_eq!(
        h.state.store.counts().total_depth(),
        0,
        "nothing was stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotent_repeat_answers_the_same_job_and_a_changed_one_collides() {
    let h = hub().await;
    let first = json!({"kind": "echo", "payload": {"n": 1}, "idempotency_key": "k-1"});
    let id = submit(&h, first.clone()).await;
    let (status, again) = call(Method::POST, "/v1/jobs").json(first).to(&h.data).await;
    assert_eq!(
        (status, again["job_id"].as_str()),
        (StatusCode::OK, Some(id.as_str()))
    );
    let changed = json!({"kind": "echo", "payload": {"n": 2}, "idempotency_key": "k-1"});
    let (status, body) = call(Method::POST, "/v1/jobs")
        .json(changed)
        .to(&h.data)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "IDEMPOTENCY_KEY_COLLISION")
    );
    assert_eq!(h.state.store.counts().total_depth(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_refuses_with_retry_after() {
    let h = hub_with(|_, limits| limits.max_queue_depth = 2).await;
    for n in 0..2 {
        submit(&h, json!({"kind": "echo", "payload": {"n": n}})).await;
    }
    let (status, headers, body) = call(Method::POST, "/v1/jobs")
        .json(json!({"kind": "echo", "payload": {}}))
        .answered(&h.data)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "BACKPRESSURE_DROP")
    );
    let retry_after = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse::<u64>();
    assert!(retry_after.is_ok_and(|s| s >= 1), "{headers:?}");
    assert_eq!(
        h.state.store.counts().total_depth(),
        2,
        "the refused job is not stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_lease_is_reaped_and_its_late_result_refused() {
    let h = hub().await;
    let id = submit(&h, json!({"kind": "echo", "payload": {}, "timeout_s": 30})).await;
    let first = lease(&h, "node-a").await.remove(0);
    assert_eq!(first["attempt"], 1);
    h.clock.advance(time::Duration::seconds(31));
    crate::job_service::reap_once(&h.state).await;
    assert_eq!(job(&h, &id).await["status"], "accepted");
    let second = lease(&h, "node-b").await.remove(0);
    assert_eq!(
        (second["job_id"].as_str(), second["attempt"].as_u64()),
        (Some(id.as_str()), Some(2))
    );
    // The first node comes back with its result: its lease is no longer the job's.
    let (status, body) = result(&first, TOKEN).to(&h.data).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "LEASE_EXPIRED"),
        "{body}"
    );
    let (status, body) = call(
        Method::POST,
        &format!("/v1/leases/{}/extend", first["lease_id"].as_str().unwrap()),
    )
    .json(json!({}))
    .to(&h.data)
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "LEASE_EXPIRED")
    );
    let (status, body) = result(&second, TOKEN).to(&h.data).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("completed")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_signed_with_another_key_or_altered_is_refused() {
    let h = hub().await;
    submit(&h, json!({"kind": "echo", "payload": {}})).await;
    let leased = lease(&h, "node-a").await.remove(0);
    let (status, body) = result(&leased, "not-the-token-0123456789")
        .to(&h.data)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "RESULT_INTEGRITY_FAIL"),
        "{body}"
    );
    // The right signature over other bytes.
    let mut altered = result(&leased, TOKEN);
    altered.body = Some(
        String::from_utf8(altered.body.unwrap())
            .unwrap()
            .replace("true", "false")
            .into_bytes(),
    );
    let (status, body) = altered.to(&h.data).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "RESULT_INTEGRITY_FAIL"),
        "{body}"
    );
    let mut unsigned = result(&leased, TOKEN);
    unsigned.headers.clear();
    let (status, body) = unsigned.to(&h.data).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "RESULT_INTEGRITY_FAIL"),
        "unsigned: {body}"
    );
    let (status, body) = result(&leased, TOKEN).to(&h.data).await;
    assert_eq!(
        (status, body["duplicate"].as_bool()),
        (StatusCode::OK, Some(false)),
        "{body}"
    );
    let (status, body) = result(&leased, TOKEN).to(&h.data).await;
    assert_eq!(
        (status, body["duplicate"].as_bool()),
        (StatusCode::OK, Some(true)),
        "counted once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_accepts_both_tokens_until_its_deadline_then_only_the_next() {
    let h = hub().await;
    let until = h.clock.now() + time::Duration::minutes(10);
    let rfc = until
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (status, body) = call(Method::POST, "/admin/token-rotation")
        .json(json!({"next_token": "short", "until": rfc}))
        .to(&h.data)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
        "weak: {body}"
    );
    let (status, body) = call(Method::POST, "/admin/token-rotation")
        .json(json!({"next_token": NEXT, "until": rfc}))
        .from(remote())
        .to(&h.data)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "LOCALHOST_ONLY"),
        "remote: {body}"
    );
    let (status, body) = call(Method::POST, "/admin/token-rotation")
        .json(json!({"next_token": NEXT, "until": rfc}))
        .to(&h.data)
        .await;
    assert_eq!(
        (status, body["active"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{body}"
    );
    for token in [TOKEN, NEXT] {
        let (status, _) = call(Method::GET, "/v1/nodes")
            .token(Some(token))
            .to(&h.control)
            .await;
        assert_eq!(status, StatusCode::OK, "{token}");
    }
    h.clock.advance(time::Duration::minutes(10));
    let (status, body) = call(Method::GET, "/v1/nodes").to(&h.control).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "AUTH_FAIL"),
        "the old token"
    );
    let (status, _) = call(Method::GET, "/v1/nodes")
        .token(Some(NEXT))
        .to(&h.control)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        h.state.tokens.failures_last_minute(),
        (1, 0),
        "counted as old_token"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_with_hostile_fields_are_refused() {
    let h = hub().await;
    let beat = |fields: Value| {
        let mut body = json!({"node_id": "w-1", "role": "worker"});
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        call(Method::POST, "/v1/heartbeat").json(body)
    };
    for (fields, says) in [
        (json!({"addr": "http://user:pw@10.0.0.1:8080"}), "user name"),
        (json!({"addr": "ftp://10.0.0.1"}), "addr"),
        (json!({"node_id": "../etc"}), "node_id"),
        (json!({"role": "emperor"}), "role"),
        (json!({"load": {"inflight": -1, "capacity": 1}}), "load"),
    ] {
        let (status, body) = beat(fields.clone()).to(&h.control).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
            "{fields}"
        );
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{fields}: {body}"
        );
    }
    let (status, body) = beat(json!({"addr": "http://10.0.0.1:8080"}))
        .from(remote())
        .to(&h.control)
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ONLINE")),
        "{body}"
    );
    assert_eq!(h.state.registry.list(None, None).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_poll_answers_at_once_when_the_hub_stops() {
    let h = hub().await;
    let data = h.data.clone();
    let poll = tokio::spawn(async move {
        call(Method::POST, "/v1/leases")
            .json(json!({"node_id": "w", "wait_ms": 30000}))
            .to(&data)
            .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.state.stopping.cancel();
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["jobs"], json!([]));
}

/// `POST /v1/leases/watch`: hostile bodies are the contract's 400; a lease that is not its
/// job's live one is answered at once; a parked watch wakes at its lease's cancel, and only
/// then; another lease's id (guessed) says nothing about the real one.
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_watch_wakes_at_its_cancel_and_refuses_hostile_bodies() {
    let h = hub().await;
    let watch = |body: Value| call(Method::POST, "/v1/leases/watch").json(body);
    let many: Vec<Value> = (0..257)
        .map(|_| json!({"job_id": uuid::Uuid::now_v7(), "lease_id": uuid::Uuid::now_v7()}))
        .collect();
    for hostile in [
        json!({"leases": many}),
        json!({"leases": [{"job_id": "not-an-id", "lease_id": uuid::Uuid::now_v7()}]}),
        json!({"leases": [], "wait_ms": 3_600_000}),
        json!({"leases": [], "extra": 1}),
    ] {
        let (status, body) = watch(hostile).to(&h.data).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
            "{body}"
        );
    }
    let id = submit(&h, json!({"kind": "echo", "payload": {}})).await;
    let leased = lease(&h, "w").await.remove(0);
    let lease_id = leased["lease_id"].as_str().unwrap().to_owned();
    // A guessed lease of the same job: "ended" at once, whatever the real one does.
    let guess = uuid::Uuid::now_v7().to_string();
    let (status, body) =
        watch(json!({"leases": [{"job_id": id, "lease_id": guess}], "wait_ms": 5000}))
            .to(&h.data)
            .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["ended"], json!([guess]));
    // The real one parks until the cancel.
    let data = h.data.clone();
    let body = json!({"leases": [{"job_id": id, "lease_id": lease_id}], "wait_ms": 10000});
    let parked = tokio::spawn(async move { watch(body).to(&data).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!parked.is_finished(), "a live lease's watch waits");
    let (status, _) = call(Method::POST, &format!("/v1/jobs/{id}/cancel"))
        .to(&h.data)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = tokio::time::timeout(Duration::from_secs(2), parked)
        .await
        .expect("the watch wakes at the cancel")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["ended"], json!([lease_id]));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_bundle_is_refused_with_a_hint() {
    let h = hub().await;
    let mut empty = call(Method::PUT, "/admin/bundles/tool.sh");
    empty.body = Some(Vec::new());
    let (status, body) = empty.to(&h.data).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "INVALID_REQUEST")
    );
    assert!(
        body["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("--data-binary"),
        "{body}"
    );
    assert!(
        h.state.bundles.get("tool.sh").is_none(),
        "nothing was published"
    );
    let mut file = call(Method::PUT, "/admin/bundles/tool.sh");
    file.body = Some(b"#!/bin/sh\necho hi\n".to_vec());
    let (status, body) = file.to(&h.data).await;
    assert_eq!(
        (status, body["size"].as_u64()),
        (StatusCode::CREATED, Some(18)),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_removes_a_node_and_a_heartbeat_brings_it_back() {
    let h = hub().await;
    let beat = json!({"node_id": "w1", "role": "worker", "capabilities": ["echo"]});
    assert_eq!(
        call(Method::POST, "/v1/heartbeat")
            .json(beat.clone())
            .to(&h.control)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(h.state.registry.counts(), [1, 0, 0]);
    let (status, body) = call(Method::DELETE, "/admin/nodes/w1")
        .from(remote())
        .to(&h.data)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "LOCALHOST_ONLY"),
        "from elsewhere"
    );
    let (status, body) = call(Method::DELETE, "/admin/nodes/w1")
        .token(None)
        .to(&h.data)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "AUTH_FAIL"),
        "without the token"
    );
    let (status, body) = call(Method::DELETE, "/admin/nodes/w1").to(&h.data).await;
    assert_eq!(
        (status, body["node_id"].as_str()),
        (StatusCode::OK, Some("w1")),
        "{body}"
    );
    assert_eq!(h.state.registry.counts(), [0, 0, 0]);
    let (status, body) = call(Method::GET, "/v1/nodes/w1").to(&h.control).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "NOT_FOUND"));
    let (status, body) = call(Method::DELETE, "/admin/nodes/w1").to(&h.data).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "NOT_FOUND"),
        "once"
    );
    h.state.audit.flush();
    assert_eq!(
        h.state.audit.count(sheratan_proto::EventKind::NodeRemoved),
        1
    );
    // The node is still alive somewhere: its next heartbeat registers it again.
    h.clock.advance(time::Duration::seconds(1));
    assert_eq!(
        call(Method::POST, "/v1/heartbeat")
            .json(beat)
            .to(&h.control)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        call(Method::GET, "/v1/nodes/w1").to(&h.control).await.0,
        StatusCode::OK
    );
    assert_eq!(h.state.registry.counts(), [1, 0, 0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_goes_only_to_a_node_that_offers_its_kind_and_the_submit_says_why_it_waits() {
    let h = hub().await;
    // Nobody has asked the queue for jobs, and no node offers the kind.
    let (status, body) = call(Method::POST, "/v1/jobs")
        .json(json!({"kind": "resize", "payload": {}}))
        .to(&h.data)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let warning = body["warning"].as_str().unwrap();
    assert!(
        warning.contains("no ONLINE node offers kind \"resize\""),
        "{warning}"
    );
    assert!(warning.contains("no node is ONLINE"), "{warning}");
    let id = body["job_id"].as_str().unwrap().to_owned();
    assert_eq!(
        job(&h, &id).await["required_capabilities"],
        json!(["resize"])
    );
    // A node without the kind gets nothing; one that offers nothing is told why; one with
    // the kind gets the job.
    assert!(lease(&h, "echo-only").await.is_empty());
    let (_, nothing) = call(Method::POST, "/v1/leases")
        .json(json!({"node_id": "bare"}))
        .to(&h.data)
        .await;
    assert_eq!(nothing["jobs"], json!([]));
    assert!(
        nothing["warning"]
            .as_str()
            .unwrap()
            .contains("every job requires its kind"),
        "{nothing}"
    );
    let (_, grant) = call(Method::POST, "/v1/leases")
        .json(json!({"node_id": "resizer", "capabilities": ["resize"]}))
        .to(&h.data)
        .await;
    assert_eq!(grant["jobs"][0]["job_id"], id.as_str());
    // Now a node has asked the default queue with `resize`: no warning.
    let (_, body) = call(Method::POST, "/v1/jobs")
        .json(json!({"kind": "resize", "payload": {}}))
        .to(&h.data)
        .await;
    assert!(body.get("warning").is_none(), "{body}");
    // A queue nobody serves, though an ONLINE node offers the kind.
    let beat = json!({"node_id": "w1", "role": "worker", "capabilities": ["echo"]});
    call(Method::POST, "/v1/heartbeat")
        .json(beat)
        .to(&h.control)
        .await;
    let (_, body) = call(Method::POST, "/v1/jobs")
        .json(json!({"kind": "echo", "queue": "nobody", "payload": {}}))
        .to(&h.data)
        .await;
    let warning = body["warning"].as_str().unwrap();
    assert!(
        warning.contains("no node has asked queue \"nobody\""),
        "{warning}"
    );
    let (status, queues) = call(Method::GET, "/v1/queues").to(&h.data).await;
    assert_eq!(status, StatusCode::OK);
    let of = |name: &str| {
        queues["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["queue"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        (
            of("default")["served"].as_bool(),
            of("default")["depth"].as_u64()
        ),
        (Some(true), Some(1))
    );
    assert_eq!(
        (
            of("nobody")["served"].as_bool(),
            of("nobody")["depth"].as_u64()
        ),
        (Some(false), Some(1))
    );
    assert!(of("nobody").get("last_asked_s").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_is_found_by_the_start_or_end_of_its_id_and_an_ambiguous_piece_lists_the_matches() {
    let h = hub().await;
    // The first 8 characters of a UUIDv7 change every 65 s: two jobs submitted now share them
    // (try again once if a boundary fell between them).
    let (a, b) = loop {
        let a = submit(&h, json!({"kind": "echo", "payload": 1})).await;
        let b = submit(&h, json!({"kind": "echo", "payload": 2})).await;
        if a[..8] == b[..8] {
            break (a, b);
        }
    };
    let tail = &b[b.len() - 8..];
    assert_eq!(job(&h, tail).await["job_id"], b.as_str());
    assert_eq!(job(&h, &tail.to_uppercase()).await["job_id"], b.as_str());
    assert_eq!(job(&h, &a[..35]).await["job_id"], a.as_str());

    let (status, body) = call(Method::GET, &format!("/v1/jobs/{}", &a[..8]))
        .to(&h.data)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(code(&body), "INVALID_REQUEST");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&a) && message.contains(&b), "{message}");
    assert!(
        body["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("more characters")
    );

    let cancel = format!("/v1/jobs/{tail}/cancel");
    let (status, body) = call(Method::POST, &cancel).to(&h.data).await;
    assert_eq!(
        (status, body["job_id"].as_str()),
        (StatusCode::OK, Some(b.as_str()))
    );
    assert_eq!(body["status"], "cancelled");
    let requeue = format!("/admin/jobs/{tail}/requeue");
    let (status, body) = call(Method::POST, &requeue).to(&h.data).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("accepted"))
    );

    // Not found, too short, or not an id at all: the contract's errors, nothing else.
    let (status, body) = call(Method::GET, "/v1/jobs/0000000000").to(&h.data).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "NOT_FOUND"),
        "{body}"
    );
    for bad in ["%2e%2e%2fadmin", &tail[1..], "zzzzzzzzzz", "0123_4567"] {
        let (status, body) = call(Method::GET, &format!("/v1/jobs/{bad}"))
            .to(&h.data)
            .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
            "{bad}: {body}"
        );
    }
}

/// The read routes this hub added (which queues are served; a job named by a piece of its
/// id) answer only the token: without it a caller learns neither the queues nor whether a
/// job with that piece exists.
#[tokio::test(flavor = "multi_thread")]
async fn queues_and_short_id_lookups_refuse_callers_without_the_token() {
    let h = hub().await;
    let id = submit(&h, json!({"kind": "echo", "payload": 1})).await;
    let tail = format!("/v1/jobs/{}", &id[id.len() - 8..]);
    for path in ["/v1/queues", tail.as_str(), "/v1/jobs/0000000000"] {
        for token in [None, Some("router-test-token-012345678")] {
            let (status, body) = call(Method::GET, path).token(token).to(&h.data).await;
            assert_eq!(
                (status, code(&body)),
                (StatusCode::FORBIDDEN, "AUTH_FAIL"),
                "{path} {token:?}"
            );
        }
    }
    // With the token, from another address too (these are reads, not the admin path).
    let (status, _) = call(Method::GET, "/v1/queues")
        .from(remote())
        .to(&h.data)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(Method::GET, &tail).from(remote()).to(&h.data).await;
    assert_eq!(
        (status, body["job_id"].as_str()),
        (StatusCode::OK, Some(id.as_str()))
    );
}
