//! Every error code the data plane answers with (docs/API.md, "Wire rules"), and hostile input on every data
//! route: the contract's error, never a panic, and the hub keeps serving.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use sheratan_proto::EventKind;
use sheratan_testkit::count_events;

use crate::common::*;

const SOME_ID: &str = "01a21c3e-5aa9-764e-872c-8ebc57110b2d";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_planes_error_codes() {
    let hub = hub()
        .env("SHERATAN_MAX_QUEUE_DEPTH", "2")
        .env("SHERATAN_MAX_INFLIGHT", "1")
        .env("SHERATAN_AUDIT_FOLD_WINDOW_SEC", "1")
        .start();
    let token = hub.token();
    let d = &hub.data_url;

    // 409 IDEMPOTENCY_KEY_COLLISION
    submit(
        d,
        &token,
        &json!({"kind": "k", "payload": 1, "idempotency_key": "x"}),
    )
    .await;
    let (status, body) = submit(
        d,
        &token,
        &json!({"kind": "k", "payload": 2, "idempotency_key": "x"}),
    )
    .await;
    let (message, _) = assert_error(status, &body, 409, "IDEMPOTENCY_KEY_COLLISION");
    assert!(message.contains("different"), "{message}");

    // 429 BACKPRESSURE_DROP with Retry-After
    submit(d, &token, &json!({"kind": "k"})).await;
    let response = http()
        .post(format!("{d}/v1/jobs"))
        .bearer_auth(&token)
        .body(json!({"kind": "k"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "BACKPRESSURE_DROP");
    assert!(
        body["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("SHERATAN_MAX_QUEUE_DEPTH")
    );

    // Inflight at its limit: no jobs, defer_ms > 0, INFLIGHT_SATURATED.
    let (jobs, _) = lease(d, &token, "w", &["default"], 5, 0).await;
    assert_eq!(jobs.len(), 1, "one call never passes the inflight limit");
    let (jobs2, defer) = lease(d, &token, "w2", &["default"], 5, 0).await;
    assert!(jobs2.is_empty());
    assert!(defer > 0);

    // 409 LEASE_EXPIRED for a lease that is not held.
    let (status, body) = post(
        &format!("{d}/v1/leases/{SOME_ID}/extend"),
        Auth::Bearer(&token),
        "{}",
    )
    .await;
    assert_error(status, &body, 409, "LEASE_EXPIRED");

    // 404 NOT_FOUND
    let (status, body) = get(&format!("{d}/v1/jobs/{SOME_ID}"), Auth::Bearer(&token)).await;
    assert_error(status, &body, 404, "NOT_FOUND");
    let (status, body) = send_result(
        d,
        &token,
        &json!({"job_id": SOME_ID, "lease_id": SOME_ID, "outcome": "success"}),
    )
    .await;
    assert_error(status, &body, 404, "NOT_FOUND");
    let (status, body) = post(
        &format!("{d}/v1/jobs/{SOME_ID}/cancel"),
        Auth::Bearer(&token),
        "",
    )
    .await;
    assert_error(status, &body, 404, "NOT_FOUND");

    // 422 RESULT_INTEGRITY_FAIL: missing or wrong hash, missing or wrong signature.
    let raw = json!({"job_id": jobs[0]["job_id"], "lease_id": jobs[0]["lease_id"], "outcome": "success", "result": 1}).to_string();
    let (hash, signature) = sheratan_client::sign_result(raw.as_bytes(), &token);
    let (other_hash, _) = sheratan_client::sign_result(b"something else", &token);
    let (_, wrong_sig) = sheratan_client::sign_result(raw.as_bytes(), "not-the-token-0123456789");
    for (h, s) in [
        (None, Some(signature.as_str())),
        (Some(other_hash.as_str()), Some(signature.as_str())),
        (Some(hash.as_str()), None),
        (Some(hash.as_str()), Some(wrong_sig.as_str())),
        (Some(hash.as_str()), Some("md5=abc")),
    ] {
        let mut req = http()
            .post(format!("{d}/v1/results"))
            .bearer_auth(&token)
            .body(raw.clone());
        if let Some(h) = h {
            req = req.header("x-sheratan-content-sha256", h);
        }
        if let Some(s) = s {
            req = req.header("x-sheratan-signature", s);
        }
        let response = req.send().await.unwrap();
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap();
        assert_error(status, &body, 422, "RESULT_INTEGRITY_FAIL");
    }
    // The job is untouched by the refused results; a proper one still lands.
    let (status, body) = complete(d, &token, &jobs[0], json!(1)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let records = hub.wait_audit(Duration::from_secs(10), |r| {
        count_events(r, EventKind::ResultIntegrityFail) == 5
            && count_events(r, EventKind::BackpressureDrop) >= 1
            && count_events(r, EventKind::IdempotencyKeyCollision) == 1
            && count_events(r, EventKind::InflightSaturated) >= 1
    });
    let saturated = records
        .iter()
        .find(|r| r.event == EventKind::InflightSaturated)
        .unwrap();
    assert_eq!(saturated.node_id.as_deref(), Some("w2"));
    let (_, metrics) = get(&format!("{d}/metrics?format=json"), Auth::Bearer(&token)).await;
    assert_eq!(metrics["events.result_integrity_fail"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_each_item_by_the_same_rules() {
    let hub = hub().env("SHERATAN_MAX_QUEUE_DEPTH", "3").start();
    let token = hub.token();
    let d = &hub.data_url;
    let (_, first) = submit(d, &token, &json!({"kind": "k", "idempotency_key": "dup"})).await;
    let batch = json!({"jobs": [
        {"kind": "ok-1"},
        {"kind": 5},
        {"kind": "k", "idempotency_key": "dup"},
        {"kind": "k", "idempotency_key": "dup", "payload": "different"},
        {"kind": "ok-2", "queue": "bad queue"},
        {"kind": "ok-3"},
        {"kind": "over-the-limit"},
        {"nope": true}
    ]});
    let (status, body) = post(
        &format!("{d}/v1/jobs/batch"),
        Auth::Bearer(&token),
        &batch.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let codes: Vec<u64> = body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["code"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, vec![202, 400, 200, 409, 400, 202, 429, 400]);
    let items = body["jobs"].as_array().unwrap();
    assert!(
        items[1]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("jobs[1].kind"),
        "{}",
        items[1]
    );
    assert_eq!(items[2]["job_id"], first["job_id"]);
    assert_eq!(items[3]["error"]["code"], "IDEMPOTENCY_KEY_COLLISION");
    assert!(
        items[4]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("queue")
    );
    assert_eq!(items[6]["error"]["code"], "BACKPRESSURE_DROP");

    for bad in [
        json!({"jobs": []}),
        json!({"jobs": "x"}),
        json!({}),
        json!({"jobs": [{}], "extra": 1}),
    ] {
        let (status, body) = post(
            &format!("{d}/v1/jobs/batch"),
            Auth::Bearer(&token),
            &bad.to_string(),
        )
        .await;
        assert_error(status, &body, 400, "INVALID_REQUEST");
    }
    let too_many: Vec<serde_json::Value> = (0..1001).map(|_| json!({"kind": "k"})).collect();
    let (status, body) = post(
        &format!("{d}/v1/jobs/batch"),
        Auth::Bearer(&token),
        &json!({"jobs": too_many}).to_string(),
    )
    .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_on_every_data_route_gets_the_contracts_error() {
    let hub = hub().start();
    let token = hub.token();
    let d = &hub.data_url;
    let big = "x".repeat(1024 * 1024 + 10);
    let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    let garbage = [
        "",
        "{",
        "null",
        "[]",
        "\"str\"",
        "{\"a\":",
        deep.as_str(),
        "\u{0}\u{1}",
    ];
    let json_routes = [
        "/v1/jobs",
        "/v1/jobs/batch",
        "/v1/leases",
        &format!("/v1/leases/{SOME_ID}/extend"),
        "/v1/results/ack",
        "/admin/token-rotation",
    ];
    for route in json_routes {
        for body in garbage {
            let (status, answer) = post(&format!("{d}{route}"), Auth::Bearer(&token), body).await;
            // An empty extend body is the default extension; the lease is unknown, so 409.
            if route.ends_with("/extend") && body.is_empty() {
                assert_error(status, &answer, 409, "LEASE_EXPIRED");
                continue;
            }
            assert_error(status, &answer, 400, "INVALID_REQUEST");
        }
        let (status, answer) = post(&format!("{d}{route}"), Auth::Bearer(&token), &big).await;
        assert_error(status, &answer, 413, "PAYLOAD_TOO_LARGE");
    }
    // Results: a well-signed body that is not a valid result is 400, not 422 or 500.
    for body in [
        json!(null),
        json!({}),
        json!({"job_id": "x", "lease_id": SOME_ID, "outcome": "success"}),
        json!({"job_id": SOME_ID, "lease_id": SOME_ID, "outcome": "maybe"}),
        json!({"job_id": SOME_ID, "lease_id": SOME_ID, "outcome": "success", "surprise": 1}),
    ] {
        let (status, answer) = send_result(d, &token, &body).await;
        assert_error(status, &answer, 400, "INVALID_REQUEST");
    }
    // Wrong types and out-of-range fields name the field.
    for (route, body, field) in [
        (
            "/v1/jobs",
            json!({"kind": "k", "priority": "high"}),
            "priority",
        ),
        (
            "/v1/jobs",
            json!({"kind": "k", "max_attempts": 0}),
            "max_attempts",
        ),
        (
            "/v1/jobs",
            json!({"kind": "k", "timeout_s": -1}),
            "timeout_s",
        ),
        (
            "/v1/jobs",
            json!({"kind": "k", "run_at": "tomorrow"}),
            "run_at",
        ),
        ("/v1/jobs", json!({"kind": "", "payload": {}}), "kind"),
        ("/v1/jobs", json!({"kind": "k", "queue": "../etc"}), "queue"),
        (
            "/v1/jobs",
            json!({"kind": "k", "required_capabilities": "gpu"}),
            "required_capabilities",
        ),
        ("/v1/jobs", json!({"kind": "k", "unknown": 1}), "unknown"),
        (
            "/v1/leases",
            json!({"node_id": "w", "max_jobs": 0}),
            "max_jobs",
        ),
        (
            "/v1/leases",
            json!({"node_id": "w", "max_jobs": 101}),
            "max_jobs",
        ),
        (
            "/v1/leases",
            json!({"node_id": "w", "wait_ms": 30001}),
            "wait_ms",
        ),
        ("/v1/leases", json!({"node_id": "a b"}), "node_id"),
        (
            "/v1/leases",
            json!({"node_id": "w", "queues": []}),
            "queues",
        ),
        (
            "/v1/leases",
            json!({"node_id": "w", "queues": ["x y"]}),
            "queues[0]",
        ),
        (
            "/v1/results/ack",
            json!({"job_ids": ["nope"]}),
            "job_ids[0]",
        ),
    ] {
        let (status, answer) = post(
            &format!("{d}{route}"),
            Auth::Bearer(&token),
            &body.to_string(),
        )
        .await;
        let (message, _) = assert_error(status, &answer, 400, "INVALID_REQUEST");
        assert!(
            message.contains(field),
            "{route} {body}: {message:?} should name {field}"
        );
    }
    // Bad ids in paths and query strings.
    for path in [
        "/v1/jobs/not-a-uuid",
        "/v1/jobs/01a21c3e5aa9764e872c8ebc57110b2d",
        "/v1/jobs?status=sleeping",
        "/v1/jobs?limit=0",
        "/v1/jobs?limit=abc",
        "/v1/jobs?cursor=zzz",
        "/v1/jobs?queue=a%20b",
        "/v1/jobs?colour=red",
        "/v1/results?pending=0",
        "/v1/results?wait_ms=999999",
    ] {
        let (status, answer) = get(&format!("{d}{path}"), Auth::Bearer(&token)).await;
        assert_error(status, &answer, 400, "INVALID_REQUEST");
    }
    for (method, path) in [
        (Method::POST, "/v1/jobs/nope/cancel"),
        (Method::POST, "/v1/leases/nope/extend"),
        (Method::POST, "/admin/jobs/nope/requeue"),
        (Method::POST, "/admin/queues/a%20b/pause"),
    ] {
        let (status, answer) = call(
            method,
            &format!("{d}{path}"),
            Auth::Bearer(&token),
            Some("{}"),
        )
        .await;
        assert_error(status, &answer, 400, "INVALID_REQUEST");
    }
    let (status, _) = get(&format!("{}/health", hub.control_url), Auth::None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!hub.stderr().contains("panicked"), "{}", hub.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_fault_answers_503_keeps_reads_and_recovers() {
    let hub = hub().start();
    let token = hub.token();
    let d = &hub.data_url;
    let (_, first) = submit(d, &token, &json!({"kind": "before"})).await;
    // An immutable WAL file makes every write fail at the filesystem, even for root.
    let wal = hub.home.join("sheratan.db-wal");
    let chattr = |flag: &str| {
        let status = std::process::Command::new("chattr")
            .arg(flag)
            .arg(&wal)
            .status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "this test needs chattr (e2fsprogs) and CAP_LINUX_IMMUTABLE: {status:?}"
        );
    };
    chattr("+i");
    let (status, body) = submit(d, &token, &json!({"kind": "during"})).await;
    let (_, hint) = assert_error(status, &body, 503, "UNAVAILABLE");
    assert!(hint.contains("disk"), "{hint}");
    // Reads keep working.
    let (status, view) = get(
        &format!("{d}/v1/jobs/{}", first["job_id"].as_str().unwrap()),
        Auth::Bearer(&token),
    )
    .await;
    chattr("-i");
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["kind"], "before");
    // And it recovers by itself; nothing committed was lost.
    let (status, _) = submit(d, &token, &json!({"kind": "after"})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, list) = get(&format!("{d}/v1/jobs"), Auth::Bearer(&token)).await;
    let kinds: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["after", "before"]);
    assert!(!hub.stderr().contains("panicked"));
}

/// A tmpfs of a few MiB mounted for one test, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "this test mounts a small tmpfs to fill it (needs root / CAP_SYS_ADMIN): {status:?}"
        );
        SmallDisk { dir }
    }

    /// Writes zeros into `filler` until the disk is full.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.dir.path().join("filler")).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.dir.path().join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_keeps_reads_and_recovers_when_space_returns() {
    let disk = SmallDisk::mount("16m");
    let home = disk.dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let hub = hub().home(&home).start();
    let token = hub.token();
    let d = &hub.data_url;
    let (status, first) = submit(d, &token, &json!({"kind": "before"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");

    disk.fill();
    // Writes that need new space fail: 503 with the contract's body, never a 2xx that is not
    // durable, never a crash.
    let big = "x".repeat(4000);
    let mut refused = 0;
    let mut accepted_batches = 0u64;
    for i in 0..50 {
        let jobs: Vec<_> = (0..100)
            .map(|n| json!({"kind": "during", "payload": {"i": i, "n": n, "pad": big}}))
            .collect();
        let (status, body) = post(
            &format!("{d}/v1/jobs/batch"),
            Auth::Bearer(&token),
            &json!({ "jobs": jobs }).to_string(),
        )
        .await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let (_, hint) = assert_error(status, &body, 503, "UNAVAILABLE");
            assert!(hint.contains("disk"), "{hint}");
            refused += 1;
            break;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        accepted_batches += 1;
    }
    assert_eq!(refused, 1, "a full disk must refuse writes");
    // Reads keep working.
    let (status, view) = get(
        &format!("{d}/v1/jobs/{}", first["job_id"].as_str().unwrap()),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["kind"], "before");

    // Space returns: the hub recovers on its own and nothing committed was lost.
    disk.free();
    let mut recovered = false;
    for _ in 0..50 {
        let (status, _) = submit(d, &token, &json!({"kind": "after"})).await;
        if status == StatusCode::ACCEPTED {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(recovered, "the hub takes writes again once there is space");
    let (status, view) = get(
        &format!("{d}/v1/jobs/{}", first["job_id"].as_str().unwrap()),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(
        (status, view["status"].as_str()),
        (StatusCode::OK, Some("accepted"))
    );
    // Every job that got a 2xx is there, and nothing of the refused batch.
    let (_, health) = get(&format!("{d}/health"), Auth::None).await;
    assert_eq!(
        health["queue_depth"],
        json!(1 + accepted_batches * 100 + 1),
        "{health}"
    );
    assert!(!hub.stderr().contains("panicked"), "{}", hub.stderr());
    drop(hub);
}
