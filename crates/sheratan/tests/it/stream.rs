//! The worker stream (issue 22, docs/API.md "The worker stream"): `GET /v1/stream`, a
//! WebSocket on the data plane. Driven frame by frame by a raw WebSocket client (as an
//! attacker would), and through real `sheratan worker` processes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sheratan_testkit::{HubProcess, Proc};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::{Auth, assert_error, cli, get, hub, metrics_text, post, submit};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens `/v1/stream?{query}` with `token`; the refusal's status and body otherwise.
async fn open(hub: &HubProcess, token: Option<&str>, query: &str) -> Result<Ws, (u16, Value)> {
    let url = format!(
        "{}/v1/stream?{query}",
        hub.data_url.replacen("http", "ws", 1)
    );
    let mut req = url.into_client_request().expect("a WebSocket request");
    if let Some(t) = token {
        let value = format!("Bearer {t}").parse().expect("a header value");
        req.headers_mut().insert("authorization", value);
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response.into_body().unwrap_or_default();
            Err((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
        }
        Err(e) => panic!("the stream's upgrade failed: {e}"),
    }
}

/// The refusal of an upgrade that must be refused.
fn refused(r: Result<Ws, (u16, Value)>) -> (u16, Value) {
    match r {
        Ok(_) => panic!("the upgrade was not refused"),
        Err(refusal) => refusal,
    }
}

async fn open_ok(hub: &HubProcess, token: &str, query: &str) -> Ws {
    let mut ws = open(hub, Some(token), query)
        .await
        .unwrap_or_else(|(s, b)| panic!("refused {s}: {b}"));
    let welcome = frame(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    ws
}

/// The next hub frame (pings skipped), within 10 s.
async fn frame(ws: &mut Ws) -> Value {
    use futures_util::StreamExt;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("the stream is open")
            .expect("a readable frame");
        match next {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON"),
            Message::Close(c) => {
                return json!({"type": "close", "reason": c.map(|c| c.reason.to_string())});
            }
            _ => continue,
        }
    }
}

/// Nothing arrives within `wait`, and the stream is still open.
async fn quiet(ws: &mut Ws, wait: Duration) {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("expected no frame on an open stream, got {other:?}"),
        }
    }
}

/// Asks for one job, submits an echo job, and returns it as pushed.
async fn pushed_job(ws: &mut Ws, hub: &HubProcess) -> Value {
    send(ws, r#"{"type":"want","n":1}"#).await;
    let echo = json!({"kind": "echo", "payload": {}});
    assert_eq!(submit(&hub.data_url, &hub.token(), &echo).await.0, 202);
    let pushed = frame(ws).await;
    assert_eq!(pushed["type"], "job", "{pushed}");
    pushed["job"].clone()
}

async fn send(ws: &mut Ws, text: impl Into<String>) {
    use futures_util::SinkExt;
    ws.send(Message::text(text.into()))
        .await
        .expect("send a frame");
}

/// A result (or progress) frame: the line, then the signed body.
fn signed(kind: &str, id: u64, extra: Value, body: &Value, token: &str) -> String {
    let body = body.to_string();
    let (hash, signature) = sheratan_client::sign_result(body.as_bytes(), token);
    let mut line = json!({"type": kind, "id": id, "content_sha256": hash, "signature": signature});
    for (k, v) in extra.as_object().unwrap() {
        line[k] = v.clone();
    }
    format!("{line}\n{body}")
}

fn result_body(job: &Value) -> Value {
    json!({"job_id": job["job_id"], "lease_id": job["lease_id"], "outcome": "success", "result": {"ok": 1}})
}

const Q: &str = "node_id=s1&queues=default&capabilities=echo&max_jobs=2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_pushes_jobs_up_to_max_jobs_and_answers_each_frame_after_its_commit() {
    let hub = hub().start();
    let token = hub.token();
    let mut ws = open_ok(&hub, &token, Q).await;
    let echo = json!({"kind": "echo", "payload": {"x": 1}});

    // Asking for more than max_jobs is refused; what fits (2) is kept.
    send(&mut ws, r#"{"type":"want","n":5}"#).await;
    let refused = frame(&mut ws).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["error"]["code"], "INVALID_REQUEST");
    for _ in 0..3 {
        assert_eq!(submit(&hub.data_url, &token, &echo).await.0, 202);
    }
    let (a, b) = (frame(&mut ws).await, frame(&mut ws).await);
    assert_eq!(
        (a["type"].as_str(), b["type"].as_str()),
        (Some("job"), Some("job"))
    );
    let (a, b) = (a["job"].clone(), b["job"].clone());
    quiet(&mut ws, Duration::from_millis(500)).await;

    // An extension and progress of a held lease, each answered after its commit.
    let extend = json!({"type": "extend", "id": 1, "lease_id": a["lease_id"]});
    send(&mut ws, extend.to_string()).await;
    let ack = frame(&mut ws).await;
    assert_eq!(
        (ack["type"].as_str(), ack["id"].as_u64()),
        (Some("extend_ack"), Some(1)),
        "{ack}"
    );
    assert_eq!(ack["answer"]["job_id"], a["job_id"]);
    let report = json!({"job_id": a["job_id"], "progress": 0.5, "output": "half"});
    send(
        &mut ws,
        signed(
            "progress",
            2,
            json!({"lease_id": a["lease_id"]}),
            &report,
            &token,
        ),
    )
    .await;
    let ack = frame(&mut ws).await;
    assert_eq!(
        (ack["type"].as_str(), ack["id"].as_u64()),
        (Some("progress_ack"), Some(2)),
        "{ack}"
    );

    // The result: recorded; the slot it frees lets the third job in.
    let result = signed("result", 3, json!({}), &result_body(&a), &token);
    send(&mut ws, result.clone()).await;
    let ack = frame(&mut ws).await;
    assert_eq!(ack["type"], "result_ack", "{ack}");
    assert_eq!(
        (
            ack["answer"]["status"].as_str(),
            ack["answer"]["duplicate"].as_bool()
        ),
        (Some("completed"), Some(false))
    );
    send(&mut ws, r#"{"type":"want","n":1}"#).await;
    let c = frame(&mut ws).await;
    assert_eq!(c["type"], "job", "{c}");
    let c = c["job"].clone();
    let (_, view) = get(
        &format!("{}/v1/jobs/{}", hub.data_url, a["job_id"].as_str().unwrap()),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(
        (view["status"].as_str(), view["result"].clone()),
        (Some("completed"), json!({"ok": 1}))
    );

    // A result whose answer was lost is sent again: answered duplicate, counted once.
    send(&mut ws, result.replace("\"id\":3", "\"id\":4")).await;
    let ack = frame(&mut ws).await;
    assert_eq!(
        (ack["id"].as_u64(), ack["answer"]["duplicate"].as_bool()),
        (Some(4), Some(true)),
        "{ack}"
    );

    // A cancel reaches the stream at once; the lease is then no longer held.
    let (status, _) = post(
        &format!(
            "{}/v1/jobs/{}/cancel",
            hub.data_url,
            b["job_id"].as_str().unwrap()
        ),
        Auth::Bearer(&token),
        "",
    )
    .await;
    assert_eq!(status, 200);
    let ended = frame(&mut ws).await;
    assert_eq!(
        (ended["type"].as_str(), &ended["lease_id"]),
        (Some("ended"), &b["lease_id"]),
        "{ended}"
    );
    send(
        &mut ws,
        json!({"type": "extend", "id": 5, "lease_id": b["lease_id"]}).to_string(),
    )
    .await;
    let refused = frame(&mut ws).await;
    assert_eq!(
        (refused["id"].as_u64(), refused["error"]["code"].as_str()),
        (Some(5), Some("LEASE_EXPIRED")),
        "{refused}"
    );

    let done = signed("result", 6, json!({}), &result_body(&c), &token);
    send(&mut ws, done).await;
    assert_eq!(frame(&mut ws).await["answer"]["status"], "completed");

    // A node that stops: `stopped` comes after the last job pushed, and none follows it.
    send(&mut ws, r#"{"type":"want","n":2}"#).await;
    send(&mut ws, r#"{"type":"stop"}"#).await;
    assert_eq!(frame(&mut ws).await["type"], "stopped");
    assert_eq!(submit(&hub.data_url, &token, &echo).await.0, 202);
    quiet(&mut ws, Duration::from_millis(700)).await;
    let metrics = metrics_text(&hub.data_url, &token).await;
    assert!(metrics.contains("sheratan_worker_streams 1"), "{metrics}");
    assert!(
        metrics.contains("sheratan_jobs_total{event=\"duplicate_result\"} 1"),
        "{metrics}"
    );
    // Each answered frame is timed by its type: results 3, 4 (the repeat) and 6, extension 1
    // (5 was refused before its commit), progress 2.
    for (kind, count) in [("result", 3), ("extend", 1), ("progress", 1)] {
        let line =
            format!("sheratan_stream_frame_duration_seconds_count{{frame=\"{kind}\"}} {count}");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_the_contracts_error_and_the_stream_stays_open() {
    let hub = hub().start();
    let token = hub.token();
    let mut ws = open_ok(&hub, &token, Q).await;
    let job = pushed_job(&mut ws, &hub).await;

    let expect = |text: String, id: Option<u64>, code: &'static str| (text, id, code);
    let other = uuid::Uuid::now_v7().to_string();
    let cases = vec![
        expect("{not json".into(), None, "INVALID_REQUEST"),
        expect(
            r#"{"type":"lease","id":7}"#.into(),
            Some(7),
            "INVALID_REQUEST",
        ),
        expect(
            r#"{"type":"want","n":1,"extra":true}"#.into(),
            None,
            "INVALID_REQUEST",
        ),
        // A lease this stream does not hold.
        expect(
            json!({"type": "extend", "id": 8, "lease_id": other}).to_string(),
            Some(8),
            "LEASE_EXPIRED",
        ),
        expect(
            json!({"type": "extend", "id": 9, "lease_id": "not-a-uuid"}).to_string(),
            Some(9),
            "INVALID_REQUEST",
        ),
        // Signed with another key; a body changed after signing; no signature at all.
        expect(
            signed(
                "result",
                10,
                json!({}),
                &result_body(&job),
                "another-token-0123456789",
            ),
            Some(10),
            "RESULT_INTEGRITY_FAIL",
        ),
        expect(
            signed("result", 11, json!({}), &result_body(&job), &token)
                .replace("\"ok\":1", "\"ok\":2"),
            Some(11),
            "RESULT_INTEGRITY_FAIL",
        ),
        expect(
            format!(
                "{}\n{}",
                json!({"type": "result", "id": 12, "content_sha256": "00"}),
                result_body(&job)
            ),
            Some(12),
            "RESULT_INTEGRITY_FAIL",
        ),
        // Signed, but not a result.
        expect(
            signed("result", 13, json!({}), &json!({"job_id": 1}), &token),
            Some(13),
            "INVALID_REQUEST",
        ),
        // Progress of a lease not held.
        expect(
            signed(
                "progress",
                14,
                json!({"lease_id": other}),
                &json!({"job_id": job["job_id"]}),
                &token,
            ),
            Some(14),
            "LEASE_EXPIRED",
        ),
        // Too large: over the 1 MiB a body may carry (and under twice that, which closes).
        expect(
            format!(
                "{}\n{}",
                r#"{"type":"want","n":1}"#,
                "x".repeat(1200 * 1024)
            ),
            None,
            "PAYLOAD_TOO_LARGE",
        ),
    ];
    for (text, id, code) in cases {
        send(&mut ws, text.clone()).await;
        let answer = frame(&mut ws).await;
        assert_eq!(
            answer["type"],
            "error",
            "{} → {answer}",
            &text[..text.len().min(120)]
        );
        assert_eq!(
            answer["error"]["code"],
            code,
            "{} → {answer}",
            &text[..text.len().min(120)]
        );
        assert_eq!(answer["id"].as_u64(), id, "{answer}");
        assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
    }
    {
        use futures_util::SinkExt;
        ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    }
    assert_eq!(frame(&mut ws).await["error"]["code"], "INVALID_REQUEST");

    // Still open: the real result is recorded.
    send(
        &mut ws,
        signed("result", 20, json!({}), &result_body(&job), &token),
    )
    .await;
    let ack = frame(&mut ws).await;
    assert_eq!(
        (ack["type"].as_str(), ack["answer"]["status"].as_str()),
        (Some("result_ack"), Some("completed")),
        "{ack}"
    );
    let metrics = metrics_text(&hub.data_url, &token).await;
    let refused: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sheratan_stream_frames_refused_total "))
        .and_then(|v| v.parse().ok())
        .expect("the refusal counter");
    assert!(refused >= 12.0, "{refused}");
    // A bad signature is audited as on the request route.
    hub.wait_audit(Duration::from_secs(10), |r| {
        sheratan_testkit::count_events(r, sheratan_proto::EventKind::ResultIntegrityFail) >= 3
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_frames_is_paced_like_refused_requests() {
    let hub = hub().env("SHERATAN_REFUSALS_PER_SEC", "20").start();
    let token = hub.token();
    let mut ws = open_ok(&hub, &token, Q).await;
    let started = Instant::now();
    for _ in 0..60 {
        send(&mut ws, "garbage").await;
    }
    for _ in 0..60 {
        assert_eq!(frame(&mut ws).await["error"]["code"], "INVALID_REQUEST");
    }
    // 20 a second with a burst of 20: the last of 60 waits about two seconds.
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upgrade_is_authenticated_and_scoped_like_a_lease() {
    let hub = hub().start();
    let token = hub.token();
    let credential = |role: &str, name: &str| {
        let (code, out, err) = cli(&hub, &["token", "create", "--role", role, "--name", name]);
        assert_eq!(code, 0, "{err}");
        out.lines().nth(1).unwrap().trim().to_owned()
    };
    let (read, submitter, node) = (
        credential("read", "r"),
        credential("submit", "s"),
        credential("node", "n1"),
    );

    let (s, b) = refused(open(&hub, None, Q).await);
    assert_error(StatusCode::from_u16(s).unwrap(), &b, 403, "AUTH_FAIL");
    let (s, b) = refused(open(&hub, Some("wrong-token-0123456789abcdef"), Q).await);
    assert_error(StatusCode::from_u16(s).unwrap(), &b, 403, "AUTH_FAIL");
    // GET, but it leases: not for a read or submit credential.
    for secret in [&read, &submitter] {
        let (s, b) = refused(open(&hub, Some(secret), Q).await);
        assert_error(StatusCode::from_u16(s).unwrap(), &b, 403, "FORBIDDEN");
    }
    // A node credential is its own node only.
    let (s, b) = refused(open(&hub, Some(&node), Q).await);
    assert_error(StatusCode::from_u16(s).unwrap(), &b, 403, "FORBIDDEN");
    let mut ws = open_ok(&hub, &node, &Q.replace("s1", "n1")).await;

    // Its results are signed with its own key: one signed with the mesh token is refused.
    let job = pushed_job(&mut ws, &hub).await;
    send(
        &mut ws,
        signed("result", 1, json!({}), &result_body(&job), &token),
    )
    .await;
    assert_eq!(
        frame(&mut ws).await["error"]["code"],
        "RESULT_INTEGRITY_FAIL"
    );
    send(
        &mut ws,
        signed("result", 2, json!({}), &result_body(&job), &node),
    )
    .await;
    assert_eq!(frame(&mut ws).await["answer"]["status"], "completed");

    // Hostile queries and a GET that is no upgrade.
    for q in [
        "node_id=s1&queues=default&max_jobs=0",
        "node_id=s1&queues=default&max_jobs=1001",
        "node_id=s1&queues=bad%20queue!&max_jobs=1",
        "node_id=bad%20id!&queues=default&max_jobs=1",
        "node_id=s1&max_jobs=1",
        "node_id=s1&queues=default&max_jobs=1&extra=1",
    ] {
        let (s, b) = refused(open(&hub, Some(&token), q).await);
        assert_error(StatusCode::from_u16(s).unwrap(), &b, 400, "INVALID_REQUEST");
    }
    let (status, body) = get(
        &format!("{}/v1/stream?{Q}", hub.data_url),
        Auth::Bearer(&token),
    )
    .await;
    let (message, _) = assert_error(status, &body, 400, "INVALID_REQUEST");
    assert!(message.contains("WebSocket"), "{message}");
    // The control plane does not serve it.
    let url = format!("{}/v1/stream?{Q}", hub.control_url);
    let (status, body) = get(&url, Auth::Bearer(&token)).await;
    assert_error(status, &body, 421, "PORT_MISMATCH");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_close_and_pings_keep_them_open() {
    use futures_util::SinkExt;
    let hub = hub().env("SHERATAN_KEEPALIVE_TIMEOUT_MS", "800").start();
    let token = hub.token();
    let mut pinging = open_ok(&hub, &token, Q).await;
    let mut idle = open_ok(&hub, &token, &Q.replace("s1", "s2")).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2000) {
        pinging
            .send(Message::Ping(Default::default()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let closed = frame(&mut idle).await;
    assert_eq!(closed["type"], "close", "{closed}");
    // The pinging one still gets its jobs.
    pushed_job(&mut pinging, &hub).await;
}

fn worker(hub: &HubProcess, node: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "worker",
        "--node-id",
        node,
        "--control-url",
        &hub.control_url,
        "--data-url",
        &hub.data_url,
    ];
    args.extend_from_slice(extra);
    let token = hub.token();
    Proc::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_sheratan")),
        &args,
        &[("SHERATAN_HUB_TOKEN", &token)],
        true,
    )
}

/// Requests answered by route, from the hub's histogram.
fn route_count(metrics: &str, route: &str) -> f64 {
    let prefix = format!("sheratan_http_request_duration_seconds_count{{route=\"{route}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn run_jobs(hub: &HubProcess, n: usize) {
    let token = hub.token();
    let jobs: Vec<Value> = (0..n)
        .map(|i| json!({"kind": "echo", "payload": {"i": i}}))
        .collect();
    let (status, batch) = post(
        &format!("{}/v1/jobs/batch", hub.data_url),
        Auth::Bearer(&token),
        &json!({"jobs": jobs}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{batch}");
    for j in batch["jobs"].as_array().unwrap() {
        let url = format!("{}/v1/jobs/{}", hub.data_url, j["job_id"].as_str().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, view) = get(&url, Auth::Bearer(&token)).await;
            if view["status"] == "completed" {
                assert_eq!(view["attempt"], 1, "{view}");
                break;
            }
            assert!(Instant::now() < deadline, "not completed: {view}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_use_the_stream_and_fall_back_to_requests_where_it_is_not_served() {
    let on = hub().start();
    let _w = worker(&on, "streaming", &["--concurrency", "4"]);
    run_jobs(&on, 40).await;
    let metrics = metrics_text(&on.data_url, &on.token()).await;
    assert!(metrics.contains("sheratan_worker_streams 1"), "{metrics}");
    // The label is spelled as this reads it: the batch submit is counted.
    assert_eq!(
        route_count(&metrics, "POST /v1/jobs/batch"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        route_count(&metrics, "POST /v1/leases"),
        0.0,
        "no lease request"
    );
    assert_eq!(
        route_count(&metrics, "POST /v1/results"),
        0.0,
        "no result request"
    );

    let off = hub().env("SHERATAN_NO_WORKER_STREAM", "1").start();
    let (s, b) = refused(open(&off, Some(&off.token()), Q).await);
    assert_error(StatusCode::from_u16(s).unwrap(), &b, 404, "NOT_FOUND");
    let w = worker(&off, "requesting", &["--concurrency", "4"]);
    run_jobs(&off, 40).await;
    let metrics = metrics_text(&off.data_url, &off.token()).await;
    assert!(
        route_count(&metrics, "POST /v1/results") >= 40.0,
        "{metrics}"
    );
    assert!(
        w.stderr().contains("does not serve the worker stream"),
        "{}",
        w.stderr()
    );
}

/// A hub on fixed ports, so that it can be killed and restarted where its clients look.
fn restartable_hub() -> HubProcess {
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    hub()
        .control_addr(format!("127.0.0.1:{}", port()))
        .data_addr(format!("127.0.0.1:{}", port()))
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_survives_a_hub_restart_on_the_resumed_stream() {
    let mut hub = restartable_hub();
    let token = hub.token();
    let w = worker(&hub, "resumer", &["--concurrency", "1"]);
    // A 3 s lease, extended every second: after the restart only on the new connection,
    // which holds the lease only if the worker resumed it there.
    let job = json!({"kind": "sleep", "payload": {"ms": 2600}, "timeout_s": 3});
    let (_, body) = submit(&hub.data_url, &token, &job).await;
    let id = body["job_id"].as_str().unwrap().to_owned();
    let url = format!("{}/v1/jobs/{id}", hub.data_url);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, view) = get(&url, Auth::Bearer(&token)).await;
        if view["status"] == "in_progress" {
            break;
        }
        assert!(Instant::now() < deadline, "never started: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hub.kill9();
    hub.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    let view = loop {
        let (_, view) = get(&url, Auth::Bearer(&token)).await;
        if view["status"] == "completed" {
            break view;
        }
        assert!(Instant::now() < deadline, "not completed: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The same run: its lease resumed on the new connection, not reaped and run again.
    assert_eq!(view["attempt"], 1, "{view}");
    assert!(w.stderr().contains("worker stream lost"), "{}", w.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_submit_over_a_stream_as_post_v1_jobs_would() {
    let hub = hub().env("SHERATAN_MAX_QUEUE_DEPTH", "3").start();
    let token = hub.token();
    let credential = |role: &str, name: &str, queues: Option<&str>| {
        let mut args = vec!["token", "create", "--role", role, "--name", name];
        if let Some(q) = queues {
            args.extend(["--queues", q]);
        }
        let (code, out, err) = cli(&hub, &args);
        assert_eq!(code, 0, "{err}");
        out.lines().nth(1).unwrap().trim().to_owned()
    };
    let scoped = credential("submit", "producer", Some("a"));
    let node = credential("node", "n1", None);
    let submit_frame =
        |id: u64, job: &Value| format!("{}\n{job}", json!({"type": "submit", "id": id}));

    // The mesh token's stream: a new job, then the same key again (the existing job).
    let mut ws = open_ok(&hub, &token, "").await;
    let keyed =
        json!({"kind": "echo", "queue": "a", "payload": {"n": 1}, "idempotency_key": "k-1"});
    send(&mut ws, submit_frame(1, &keyed)).await;
    let first = frame(&mut ws).await;
    assert_eq!(
        (
            first["type"].as_str(),
            first["id"].as_u64(),
            first["created"].as_bool()
        ),
        (Some("submit_ack"), Some(1), Some(true)),
        "{first}"
    );
    send(&mut ws, submit_frame(2, &keyed)).await;
    let again = frame(&mut ws).await;
    assert_eq!(
        (again["created"].as_bool(), &again["answer"]["job_id"]),
        (Some(false), &first["answer"]["job_id"]),
        "{again}"
    );
    let (_, view) = get(
        &format!(
            "{}/v1/jobs/{}",
            hub.data_url,
            first["answer"]["job_id"].as_str().unwrap()
        ),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(view["status"], "accepted", "{view}");
    // Refused jobs get the contract's codes; the stream stays open.
    send(
        &mut ws,
        submit_frame(3, &json!({"kind": "", "payload": {}})),
    )
    .await;
    assert_eq!(frame(&mut ws).await["error"]["code"], "INVALID_REQUEST");
    send(
        &mut ws,
        format!("{}\nnot json", json!({"type": "submit", "id": 4})),
    )
    .await;
    assert_eq!(frame(&mut ws).await["error"]["code"], "INVALID_REQUEST");
    for id in 5..8 {
        send(
            &mut ws,
            submit_frame(
                id,
                &json!({"kind": "echo", "queue": "a", "payload": {"n": id}}),
            ),
        )
        .await;
    }
    let mut codes = Vec::new();
    for _ in 5..8 {
        let f = frame(&mut ws).await;
        codes.push(
            f["error"]["code"]
                .as_str()
                .unwrap_or(f["type"].as_str().unwrap())
                .to_owned(),
        );
    }
    // Answers come as commits end, not necessarily in order.
    codes.sort();
    assert_eq!(
        codes,
        ["BACKPRESSURE_DROP", "submit_ack", "submit_ack"],
        "the queue holds 3"
    );

    // A queue-limited submit credential submits to its queues only, and never leases.
    let mut ws = open_ok(&hub, &scoped, "").await;
    send(
        &mut ws,
        submit_frame(1, &json!({"kind": "echo", "queue": "b", "payload": {}})),
    )
    .await;
    assert_eq!(frame(&mut ws).await["error"]["code"], "FORBIDDEN");
    let (s, b) = refused(open(&hub, Some(&scoped), "node_id=p&queues=a&max_jobs=1").await);
    assert_error(StatusCode::from_u16(s).unwrap(), &b, 403, "FORBIDDEN");
    // A node credential's stream leases and reports; it does not submit.
    let mut ws = open_ok(
        &hub,
        &node,
        "node_id=n1&queues=a&capabilities=echo&max_jobs=1",
    )
    .await;
    send(
        &mut ws,
        submit_frame(1, &json!({"kind": "echo", "queue": "a", "payload": {}})),
    )
    .await;
    assert_eq!(frame(&mut ws).await["error"]["code"], "FORBIDDEN");
    // A submit credential's stream (it only submits) takes no result, extension or want.
    let mut ws = open_ok(&hub, &scoped, "").await;
    let fake = json!({"job_id": uuid::Uuid::now_v7(), "lease_id": uuid::Uuid::now_v7(), "outcome": "success", "result": 1});
    send(&mut ws, signed("result", 9, json!({}), &fake, &scoped)).await;
    let refused_frame = frame(&mut ws).await;
    assert_eq!(
        (
            refused_frame["id"].as_u64(),
            refused_frame["error"]["code"].as_str()
        ),
        (Some(9), Some("FORBIDDEN")),
        "{refused_frame}"
    );
    send(&mut ws, r#"{"type":"want","n":1}"#).await;
    assert_eq!(frame(&mut ws).await["error"]["code"], "FORBIDDEN");
    // A stream that only submits names no node.
    let (s, b) = refused(open(&hub, Some(&token), "node_id=x").await);
    assert_error(StatusCode::from_u16(s).unwrap(), &b, 400, "INVALID_REQUEST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_credential_loses_its_open_stream_and_a_huge_frame_closes_it() {
    let hub = hub().start();
    let (code, out, err) = cli(&hub, &["token", "create", "--role", "node", "--name", "n1"]);
    assert_eq!(code, 0, "{err}");
    let secret = out.lines().nth(1).unwrap().trim().to_owned();
    let mut ws = open_ok(&hub, &secret, &Q.replace("s1", "n1")).await;
    let (code, _, err) = cli(&hub, &["token", "revoke", "n1"]);
    assert_eq!(code, 0, "{err}");
    // Checked again every 2 s, as each request would be.
    let closed = frame(&mut ws).await;
    assert_eq!(closed["type"], "close", "{closed}");
    let (s, b) = refused(open(&hub, Some(&secret), &Q.replace("s1", "n1")).await);
    assert_error(StatusCode::from_u16(s).unwrap(), &b, 403, "AUTH_FAIL");

    // A message over twice the frame limit ends the stream (no error frame can answer it).
    let mut ws = open_ok(&hub, &hub.token(), Q).await;
    let huge = format!(
        "{}\n{}",
        r#"{"type":"want","n":1}"#,
        "x".repeat(3 * 1024 * 1024)
    );
    {
        use futures_util::SinkExt;
        let _ = ws.send(Message::text(huge)).await;
    }
    use futures_util::StreamExt;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(Message::Text(t))) => panic!("expected the stream to end, got {t}"),
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream stayed open");
}

/// A node that stops while its stream is reconnecting still gets `stopped` (its stop goes on
/// the next connection) instead of waiting out its grace for an answer that never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_asked_while_reconnecting_is_answered_on_the_next_connection() {
    use sheratan_client::stream::{StreamEvent, StreamSpec};
    let mut hub = restartable_hub();
    let data = sheratan_client::DataClient::new(&hub.data_url, Some(hub.token())).unwrap();
    let spec = StreamSpec {
        node_id: "stopper".into(),
        queues: vec!["default".into()],
        capabilities: vec!["echo".into()],
        max_jobs: 1,
    };
    let (stream, mut events) = data.open_stream(spec, Arc::new(Vec::new)).await.unwrap();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("no stream event within 20 s")
            .expect("the stream's events ended")
    };
    hub.kill9();
    assert!(matches!(next().await, StreamEvent::Lost(_)));
    stream.stop();
    hub.restart();
    assert!(matches!(next().await, StreamEvent::Reconnected));
    // A job queued now is not pushed: the stop reached the hub before the credit.
    submit(
        &hub.data_url,
        &hub.token(),
        &json!({"kind": "echo", "payload": {}}),
    )
    .await;
    stream.want(1);
    let event = next().await;
    assert!(matches!(event, StreamEvent::Stopped), "{event:?}");
    let event = tokio::time::timeout(Duration::from_millis(500), events.recv()).await;
    assert!(event.is_err(), "pushed after its stop: {event:?}");
    stream.close();
}
