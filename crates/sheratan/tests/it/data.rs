//! The job lifecycle over HTTP (docs/API.md, "Data plane"): submit, long-poll lease, extend, signed results,
//! retries with backoff, the reaper, pending results, cancel, admin, and concurrency.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sheratan_proto::{ErrorCode, EventKind};
use sheratan_testkit::count_events;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_goes_from_submit_to_acknowledged_result() {
    let hub = hub().start();
    let token = hub.token();
    let d = &hub.data_url;

    // A long poll waits for a job and is woken by its submission, not by polling.
    let waiter = {
        let (d, token) = (d.clone(), token.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let (jobs, _) = lease(&d, &token, "w1", &["mail"], 5, 10_000).await;
            (jobs, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = submit(
        d,
        &token,
        &json!({"queue": "mail", "kind": "email.send", "payload": {"to": "a@b"}, "timeout_s": 30}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "accepted");
    let job_id = body["job_id"].as_str().unwrap().to_owned();
    assert_eq!(job_id.len(), 36);
    assert_eq!(&job_id[14..15], "7", "UUIDv7: {job_id}");

    let (jobs, waited) = waiter.await.unwrap();
    assert!(
        waited >= Duration::from_millis(250),
        "the poll waited for the job"
    );
    assert_eq!(jobs.len(), 1);
    let leased = &jobs[0];
    assert_eq!(leased["job_id"], job_id.as_str());
    assert_eq!(leased["queue"], "mail");
    assert_eq!(leased["kind"], "email.send");
    assert_eq!(leased["payload"], json!({"to": "a@b"}));
    assert_eq!(leased["attempt"], 1);

    let (_, view) = get(&format!("{d}/v1/jobs/{job_id}"), Auth::Bearer(&token)).await;
    assert_eq!(view["status"], "in_progress");
    assert_eq!(view["lease"]["node_id"], "w1");

    // Extend: {} takes the job's timeout; extend_s sets it.
    let extend = format!(
        "{d}/v1/leases/{}/extend",
        leased["lease_id"].as_str().unwrap()
    );
    let (status, ext) = post(&extend, Auth::Bearer(&token), "{}").await;
    assert_eq!(status, StatusCode::OK, "{ext}");
    let (status, ext2) = post(&extend, Auth::Bearer(&token), r#"{"extend_s": 600}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert!(ext2["lease_expires_at"].as_str().unwrap() > ext["lease_expires_at"].as_str().unwrap());
    let (status, _) = post(&extend, Auth::Bearer(&token), "").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an empty body is the default extension"
    );

    // Follow pending results: the completion wakes the follower.
    let follower = {
        let (d, token) = (d.clone(), token.clone());
        tokio::spawn(async move {
            get(
                &format!("{d}/v1/results?pending=1&wait_ms=10000"),
                Auth::Bearer(&token),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, answer) = complete(d, &token, leased, json!({"sent": true})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer,
        json!({"job_id": job_id, "status": "completed", "duplicate": false})
    );
    // The same result again is accepted and counted once.
    let (status, again) = complete(d, &token, leased, json!({"sent": true})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["duplicate"], true);

    let (status, followed) = follower.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(followed["results"][0]["job_id"], job_id.as_str());
    assert_eq!(followed["results"][0]["result"], json!({"sent": true}));

    let (_, view) = get(&format!("{d}/v1/jobs/{job_id}"), Auth::Bearer(&token)).await;
    assert_eq!(view["status"], "completed");
    assert_eq!(view["result"], json!({"sent": true}));
    assert_eq!(view["result_acked"], false);
    let (_, metrics) = get(&format!("{d}/metrics?format=json"), Auth::Bearer(&token)).await;
    assert_eq!(metrics["jobs.completed"], 1);
    assert_eq!(metrics["jobs.duplicate_result"], 1);
    assert_eq!(metrics["results_pending"], 1);

    let (status, acked) = post(
        &format!("{d}/v1/results/ack"),
        Auth::Bearer(&token),
        &json!({"job_ids": [job_id]}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(acked["acked"], 1);
    let (_, pending) = get(&format!("{d}/v1/results?pending=1"), Auth::Bearer(&token)).await;
    assert_eq!(pending["results"], json!([]));
    let (_, health) = get(&format!("{d}/health"), Auth::None).await;
    assert_eq!(health["queue_depth"], 0);
    assert_eq!(health["inflight"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_capabilities_delays_and_listing() {
    let hub = hub().start();
    let token = hub.token();
    let d = &hub.data_url;
    let low = submit(d, &token, &json!({"kind": "k", "priority": 1}))
        .await
        .1["job_id"]
        .clone();
    let gpu = submit(
        d,
        &token,
        &json!({"kind": "k", "priority": 9, "required_capabilities": ["gpu"]}),
    )
    .await
    .1["job_id"]
        .clone();
    let high = submit(d, &token, &json!({"kind": "k", "priority": 5}))
        .await
        .1["job_id"]
        .clone();
    let later = (time::OffsetDateTime::now_utc() + time::Duration::seconds(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let delayed = submit(
        d,
        &token,
        &json!({"kind": "k", "priority": 100, "run_at": later}),
    )
    .await
    .1["job_id"]
        .clone();

    // A node without "gpu": priority order among what it can run; the delayed job waits.
    let (jobs, _) = lease(d, &token, "cpu", &["default"], 10, 0).await;
    let ids: Vec<&Value> = jobs.iter().map(|j| &j["job_id"]).collect();
    assert_eq!(ids, vec![&high, &low]);
    let (status, body) = post(
        &format!("{d}/v1/leases"),
        Auth::Bearer(&token),
        &json!({"node_id": "gpu", "capabilities": ["gpu", "cuda", "k"], "max_jobs": 10})
            .to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(body["jobs"][0]["job_id"], gpu);
    // Nothing ready and no wait: asked to come back later.
    let (jobs, defer) = lease(d, &token, "cpu", &["default"], 10, 0).await;
    assert!(jobs.is_empty());
    assert!(defer > 0);
    // The delayed job turns up once due (the long poll is woken by the reaper's promotion).
    let (jobs, _) = lease(d, &token, "cpu", &["default"], 10, 10_000).await;
    assert_eq!(jobs[0]["job_id"], delayed);

    let (status, list) = get(
        &format!("{d}/v1/jobs?status=in_progress&limit=2"),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["jobs"].as_array().unwrap().len(), 2);
    let cursor = list["next_cursor"].as_str().unwrap().to_owned();
    let (_, page2) = get(
        &format!("{d}/v1/jobs?status=in_progress&limit=2&cursor={cursor}"),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(page2["jobs"].as_array().unwrap().len(), 2);
    assert!(page2["next_cursor"].is_string() || page2["next_cursor"].is_null());
    let (_, all) = get(&format!("{d}/v1/jobs?queue=default"), Auth::Bearer(&token)).await;
    assert_eq!(all["jobs"].as_array().unwrap().len(), 4);
    assert_eq!(all["next_cursor"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_leases_are_reaped_and_late_results_refused() {
    let hub = hub().start();
    let token = hub.token();
    let d = &hub.data_url;
    let (_, body) = submit(
        d,
        &token,
        &json!({"kind": "slow", "timeout_s": 1, "max_attempts": 2}),
    )
    .await;
    let job_id = body["job_id"].as_str().unwrap().to_owned();
    let (jobs, _) = lease(d, &token, "dies", &["default"], 1, 0).await;
    let first = jobs[0].clone();
    // The holder goes silent; the reaper puts the job back and a second worker gets it.
    let (jobs, _) = lease(d, &token, "alive", &["default"], 1, 10_000).await;
    assert_eq!(jobs[0]["job_id"], job_id.as_str());
    assert_eq!(jobs[0]["attempt"], 2);
    let (status, body) = complete(d, &token, &first, json!(1)).await;
    let (message, _) = assert_error(status, &body, 409, "LEASE_EXPIRED");
    assert!(message.contains("in_progress"), "{message}");
    let (status, body) = post(
        &format!(
            "{d}/v1/leases/{}/extend",
            first["lease_id"].as_str().unwrap()
        ),
        Auth::Bearer(&token),
        "{}",
    )
    .await;
    assert_error(status, &body, 409, "LEASE_EXPIRED");
    // The second holder dies too: attempts are used up, the job is dead.
    let failed = wait_status(d, &token, &job_id, "failed").await;
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{failed}"
    );
    let records = hub.wait_audit(Duration::from_secs(10), |r| {
        count_events(r, EventKind::LeaseReap) >= 2
    });
    let reap = records
        .iter()
        .find(|r| r.event == EventKind::LeaseReap)
        .unwrap();
    assert_eq!(reap.node_id.as_deref(), Some("dies"));
    assert_eq!(reap.detail["jobs"], 1);
}

async fn wait_status(d: &str, token: &str, job_id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, view) = get(&format!("{d}/v1/jobs/{job_id}"), Auth::Bearer(token)).await;
        if view["status"] == want {
            return view;
        }
        assert!(Instant::now() < deadline, "job never became {want}: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_come_back_after_a_backoff_then_go_to_the_dead_set() {
    let hub = hub().env("SHERATAN_RETRY_BASE_MS", "200").start();
    let token = hub.token();
    let d = &hub.data_url;
    let (_, body) = submit(d, &token, &json!({"kind": "flaky", "max_attempts": 2})).await;
    let job_id = body["job_id"].as_str().unwrap().to_owned();
    let fail = |leased: Value, retryable: bool| {
        let (d, token) = (d.clone(), token.clone());
        async move {
            send_result(&d, &token, &json!({
                "job_id": leased["job_id"], "lease_id": leased["lease_id"], "outcome": "failure",
                "error": {"message": "smtp timeout", "retryable": retryable}
            }))
            .await
        }
    };
    let (jobs, _) = lease(d, &token, "w", &["default"], 1, 0).await;
    let failed_at = Instant::now();
    let (status, answer) = fail(jobs[0].clone(), true).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["status"], "accepted", "a retry, not the dead set");
    let (jobs, _) = lease(d, &token, "w", &["default"], 1, 10_000).await;
    let waited = failed_at.elapsed();
    assert!(
        waited >= Duration::from_millis(150),
        "backoff of 200 ms ± 20 %, waited {waited:?}"
    );
    assert_eq!(jobs[0]["attempt"], 2);
    let (_, answer) = fail(jobs[0].clone(), true).await;
    assert_eq!(answer["status"], "failed");
    let view = wait_status(d, &token, &job_id, "failed").await;
    assert_eq!(
        view["error"],
        json!({"message": "smtp timeout", "retryable": true})
    );
    assert_eq!(view["attempt"], 2);

    // Not retryable: straight to the dead set.
    let (_, body) = submit(d, &token, &json!({"kind": "bad"})).await;
    let (jobs, _) = lease(d, &token, "w", &["default"], 1, 0).await;
    let (_, answer) = fail(jobs[0].clone(), false).await;
    assert_eq!(answer["status"], "failed");
    wait_status(d, &token, body["job_id"].as_str().unwrap(), "failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_workers_never_hold_the_same_job() {
    let hub = hub()
        .env("SHERATAN_MAX_QUEUE_DEPTH", "5000")
        .env("SHERATAN_MAX_INFLIGHT", "1000")
        .start();
    let token = hub.token();
    let d = hub.data_url.clone();
    for chunk in 0..4 {
        let jobs: Vec<Value> = (0..100)
            .map(|i| json!({"kind": "echo", "payload": {"n": chunk * 100 + i}}))
            .collect();
        let (status, body) = post(
            &format!("{d}/v1/jobs/batch"),
            Auth::Bearer(&token),
            &json!({"jobs": jobs}).to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let mut workers = Vec::new();
    for w in 0..8 {
        let (d, token) = (d.clone(), token.clone());
        workers.push(tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (jobs, _) = lease(&d, &token, &format!("w{w}"), &["default"], 3, 0).await;
                if jobs.is_empty() {
                    return held;
                }
                for job in jobs {
                    let (status, body) = complete(&d, &token, &job, json!({"by": w})).await;
                    assert_eq!(status, StatusCode::OK, "{body}");
                    assert_eq!(body["duplicate"], false);
                    held.push(job["job_id"].as_str().unwrap().to_owned());
                }
            }
        }));
    }
    let mut seen = HashSet::new();
    for w in workers {
        for id in w.await.unwrap() {
            assert!(
                seen.insert(id.clone()),
                "job {id} was leased to two workers"
            );
        }
    }
    assert_eq!(seen.len(), 400);
    let (_, metrics) = get(&format!("{d}/metrics?format=json"), Auth::Bearer(&token)).await;
    assert_eq!(metrics["jobs.completed"], 400);
    assert_eq!(metrics["inflight"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submits_with_one_idempotency_key_make_one_job() {
    let hub = hub().start();
    let token = hub.token();
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let (d, token) = (hub.data_url.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            submit(
                &d,
                &token,
                &json!({"kind": "charge", "payload": {"cents": 500}, "idempotency_key": "order-7"}),
            )
            .await
        }));
    }
    let mut ids = HashSet::new();
    let mut created = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            StatusCode::ACCEPTED => created += 1,
            StatusCode::OK => {}
            other => panic!("unexpected {other}: {body}"),
        }
        ids.insert(body["job_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    // Completed: a repeat returns the cached result.
    let (jobs, _) = lease(&hub.data_url, &token, "w", &["default"], 1, 0).await;
    complete(&hub.data_url, &token, &jobs[0], json!({"charged": true})).await;
    let (status, body) = submit(
        &hub.data_url,
        &token,
        &json!({"kind": "charge", "payload": {"cents": 500}, "idempotency_key": "order-7"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "completed");
    assert_eq!(body["result"], json!({"charged": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_the_admin_path() {
    let hub = hub().start();
    let token = hub.token();
    let d = &hub.data_url;
    let (_, a) = submit(d, &token, &json!({"kind": "k", "queue": "ops"})).await;
    let a = a["job_id"].as_str().unwrap().to_owned();
    let (status, view) = post(&format!("{d}/v1/jobs/{a}/cancel"), Auth::Bearer(&token), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["status"], "cancelled");
    let (status, view) = post(
        &format!("{d}/admin/jobs/{a}/requeue"),
        Auth::Bearer(&token),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["status"], "accepted");

    let (status, body) = post(
        &format!("{d}/admin/queues/ops/pause"),
        Auth::Bearer(&token),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"queue": "ops", "paused": true}));
    assert!(lease(d, &token, "w", &["ops"], 5, 0).await.0.is_empty());
    post(
        &format!("{d}/admin/queues/ops/resume"),
        Auth::Bearer(&token),
        "",
    )
    .await;
    assert_eq!(lease(d, &token, "w", &["ops"], 5, 0).await.0.len(), 1);
    for _ in 0..3 {
        submit(d, &token, &json!({"kind": "k", "queue": "ops"})).await;
    }
    let (_, body) = post(
        &format!("{d}/admin/queues/ops/purge"),
        Auth::Bearer(&token),
        "",
    )
    .await;
    assert_eq!(body["purged"], 3);
    let (status, body) = post(
        &format!("{d}/admin/queues/ops/explode"),
        Auth::Bearer(&token),
        "",
    )
    .await;
    assert_error(status, &body, 404, "NOT_FOUND");
    let (status, body) = post(
        &format!("{d}/admin/jobs/{}/requeue", uuid_v7_like()),
        Auth::Bearer(&token),
        "",
    )
    .await;
    assert_error(status, &body, 404, "NOT_FOUND");
}

fn uuid_v7_like() -> &'static str {
    "01a21c3e-5aa9-764e-872c-8ebc57110b2d"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_signed_with_the_token_that_authenticated_them() {
    let a = "token-a-0123456789abcdef";
    let b = "token-b-0123456789abcdef";
    let hub = hub()
        .env("SHERATAN_HUB_TOKEN", a)
        .env("SHERATAN_HUB_TOKEN_NEXT", b)
        .env("SHERATAN_HUB_TOKEN_ROTATION_UNTIL", "2099-01-01T00:00:00Z")
        .start();
    let d = &hub.data_url;
    for _ in 0..2 {
        submit(d, a, &json!({"kind": "k"})).await;
    }
    let (jobs, _) = lease(d, b, "w", &["default"], 2, 0).await;
    // During a rotation a worker on the new token signs with the new token.
    let (status, body) = complete(d, b, &jobs[0], json!(1)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Signed with the other token than the one it authenticates with: refused.
    let raw = json!({"job_id": jobs[1]["job_id"], "lease_id": jobs[1]["lease_id"], "outcome": "success", "result": 1}).to_string();
    let (hash, signature) = sheratan_client::sign_result(raw.as_bytes(), a);
    let response = http()
        .post(format!("{d}/v1/results"))
        .bearer_auth(b)
        .header("x-sheratan-content-sha256", hash)
        .header("x-sheratan-signature", signature)
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);
}

/// The Rust client's `submit_many`: batches with several in flight, one outcome per job in
/// order, a refused job among good ones and a full queue reported per job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_many_keeps_one_outcome_per_job_in_order() {
    let hub = hub().env("SHERATAN_MAX_QUEUE_DEPTH", "240").start();
    let token = hub.token();
    let client = sheratan_client::DataClient::new(&hub.data_url, Some(token.clone())).unwrap();
    let job = |i: usize| {
        serde_json::from_value::<sheratan_proto::data::SubmitJob>(
            json!({"kind": "echo", "payload": {"i": i}, "queue": "many"}),
        )
        .unwrap()
    };
    let mut jobs: Vec<_> = (0..250).map(job).collect();
    jobs[7].kind = String::new();
    let outcomes = client.submit_many(jobs, 40, 3).await.unwrap();
    assert_eq!(outcomes.len(), 250);
    assert_eq!(outcomes[7].code, 400);
    assert!(outcomes[7].error.as_ref().unwrap().message.contains("kind"));
    // 249 valid jobs, room for 240: the queue's limit refuses the last nine, each on its own.
    let accepted: Vec<_> = outcomes.iter().filter(|o| o.code == 202).collect();
    let full: Vec<_> = outcomes.iter().filter(|o| o.code == 429).collect();
    assert_eq!((accepted.len(), full.len()), (240, 9));
    assert!(
        full.iter()
            .all(|o| o.error.as_ref().unwrap().code == ErrorCode::BackpressureDrop)
    );
    let id = outcomes[123].job_id.clone().unwrap();
    let (_, view) = get(
        &format!("{}/v1/jobs/{id}", hub.data_url),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(
        view["payload"],
        json!({"i": 123}),
        "answers come back in the jobs' order"
    );
    let wrong = sheratan_client::DataClient::new(
        &hub.data_url,
        Some("not-the-token-at-all-000".to_string()),
    )
    .unwrap();
    let err = wrong
        .submit_many((0..3).map(job).collect(), 40, 3)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::AuthFail));
}
