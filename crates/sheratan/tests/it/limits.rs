//! Queue settings and the limits leasing obeys (issue "Running jobs", items 4–6): real hubs
//! and workers, SQLite and two hubs on PostgreSQL. `key_concurrency` is checked by sampling
//! the jobs in progress under load: no sample may show two of one key.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sheratan_testkit::{HubProcess, Proc};

use crate::common::*;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sheratan"))
}

fn worker(hub: &HubProcess, node: &str, queue: &str, concurrency: u32) -> Proc {
    Proc::start(
        bin(),
        &[
            "worker",
            "--node-id",
            node,
            "--control-url",
            &hub.control_url,
            "--data-url",
            &hub.data_url,
            "--queues",
            queue,
            "--concurrency",
            &concurrency.to_string(),
        ],
        &[("SHERATAN_HUB_TOKEN", &hub.token())],
        true,
    )
}

pub(crate) async fn submit_batch(hub: &HubProcess, jobs: Vec<Value>) -> Vec<String> {
    let (status, body) = post(
        &format!("{}/v1/jobs/batch", hub.data_url),
        Auth::Bearer(&hub.token()),
        &json!({ "jobs": jobs }).to_string(),
    )
    .await;
    assert_eq!(status.as_u16(), 200, "{body}");
    body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            assert_eq!(o["code"], 202, "{o}");
            o["job_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

async fn jobs_of(hub: &HubProcess, queue: &str, status: &str) -> Vec<Value> {
    let (code, body) = get(
        &format!(
            "{}/v1/jobs?queue={queue}&status={status}&limit=1000",
            hub.data_url
        ),
        Auth::Bearer(&hub.token()),
    )
    .await;
    assert_eq!(code.as_u16(), 200, "{body}");
    body["jobs"].as_array().unwrap().clone()
}

/// Samples the jobs in progress on `hubs` (round robin) until `n` jobs of `queue` completed;
/// panics if a sample shows two jobs of one key. The most jobs seen in progress at once.
async fn sample_until_done(hubs: &[&HubProcess], queue: &str, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut most = 0;
    let mut samples = 0;
    for round in 0.. {
        let hub = hubs[round % hubs.len()];
        let running = jobs_of(hub, queue, "in_progress").await;
        let keys: Vec<&str> = running
            .iter()
            .map(|j| j["concurrency_key"].as_str().expect("every job has a key"))
            .collect();
        let distinct: HashSet<&str> = keys.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            keys.len(),
            "two jobs of one key in progress at once: {keys:?}"
        );
        most = most.max(keys.len());
        samples += 1;
        if jobs_of(hub, queue, "completed").await.len() == n {
            break;
        }
        assert!(Instant::now() < deadline, "the jobs did not complete");
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    assert!(samples > 20, "too few samples ({samples}) to say anything");
    most
}

/// Sixty 150 ms jobs over six keys, 24 slots on three workers: with `key_concurrency` 1 at
/// most six run at once, one per key, and every job completes.
fn keyed_sleeps(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "queue": "work",
                "kind": "sleep",
                "payload": {"ms": 150},
                "concurrency_key": format!("account-{}", i % 6),
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_concurrency_one_never_runs_two_jobs_of_a_key_at_once() {
    let hub = hub().env("SHERATAN_MAX_INFLIGHT", "1000").start();
    let (code, out, err) = cli(&hub, &["queue", "set", "work", "--key-concurrency", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("key_concurrency  1"), "{out}");
    submit_batch(&hub, keyed_sleeps(60)).await;
    let _workers = [
        worker(&hub, "w-1", "work", 8),
        worker(&hub, "w-2", "work", 8),
        worker(&hub, "w-3", "work", 8),
    ];
    let most = sample_until_done(&[&hub], "work", 60).await;
    assert!(
        most >= 2,
        "keys ran one after another only ({most} at once): the limit must not serialize keys"
    );
    // Nothing failed or was retried for being held back.
    for job in jobs_of(&hub, "work", "completed").await {
        assert_eq!(job["attempt"], 1, "{job}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_on_postgres_share_settings_and_hold_key_concurrency_together() {
    let base = std::env::var("SHERATAN_TEST_POSTGRES_URL").expect(
        "SHERATAN_TEST_POSTGRES_URL is not set: run ./scripts/test.sh, or scripts/pg-cluster.sh start and export the URL",
    );
    let store = format!("{base}?schema=limits_{}", uuid::Uuid::now_v7().simple());
    let start = || {
        hub()
            .env("SHERATAN_STORE", &store)
            .env("SHERATAN_HUB_TOKEN", "limits-test-token-0123456789abcdef")
            .env("SHERATAN_MAX_INFLIGHT", "1000")
            .start()
    };
    let a = start();
    let b = start();
    // Set on one hub, read back on the other.
    let (code, _, err) = cli(&a, &["queue", "set", "work", "--key-concurrency", "1"]);
    assert_eq!(code, 0, "{err}");
    let (code, body) = get(
        &format!("{}/admin/queues/work/settings", b.data_url),
        Auth::Bearer(&b.token()),
    )
    .await;
    assert_eq!(code.as_u16(), 200, "{body}");
    assert_eq!(body["key_concurrency"], 1, "{body}");
    // Let the other hub's copy catch up (it re-reads settings every tick).
    tokio::time::sleep(Duration::from_millis(600)).await;
    submit_batch(&a, keyed_sleeps(30)).await;
    submit_batch(&b, keyed_sleeps(30)).await;
    let _workers = [
        worker(&a, "wa-1", "work", 8),
        worker(&a, "wa-2", "work", 8),
        worker(&b, "wb-1", "work", 8),
        worker(&b, "wb-2", "work", 8),
    ];
    let most = sample_until_done(&[&a, &b], "work", 60).await;
    assert!(most >= 2, "{most} at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_of_five_per_second_spreads_twenty_starts_over_nearly_four_seconds() {
    let hub = hub().env("SHERATAN_MAX_INFLIGHT", "1000").start();
    let (code, out, err) = cli(&hub, &["queue", "set", "paced", "--rate", "5/s"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rate             5/s"), "{out}");
    let jobs = (0..20)
        .map(|i| json!({"queue": "paced", "kind": "echo", "payload": {"i": i}}))
        .collect();
    submit_batch(&hub, jobs).await;
    let _worker = worker(&hub, "w-1", "paced", 16);
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let done = jobs_of(&hub, "paced", "completed").await;
        if done.len() == 20 {
            break done;
        }
        assert!(Instant::now() < deadline, "only {} completed", done.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut finished: Vec<time::OffsetDateTime> = done
        .iter()
        .map(|j| {
            time::OffsetDateTime::parse(
                j["finished_at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
        })
        .collect();
    finished.sort();
    // Nineteen gaps of at least 200 ms between starts; an echo finishes right after it
    // starts, so the finishes are as far apart give or take a few milliseconds.
    let spread = finished[19] - finished[0];
    assert!(
        spread >= time::Duration::milliseconds(3700),
        "20 jobs at 5/s finished within {spread}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_settings_survive_a_restart_and_refuse_bad_input_and_non_admins() {
    let mut hub = hub().start();
    let url = format!("{}/admin/queues/llm/settings", hub.data_url);
    // A job's own retry backoff is checked at submit, naming the field.
    for (retry, field) in [
        (json!({"base_ms": 0}), "retry.base_ms"),
        (json!({"base_ms": 5000, "max_ms": 10}), "retry.max_ms"),
        (json!({"base": 5}), "base"),
    ] {
        let (code, body) = post(
            &format!("{}/v1/jobs", hub.data_url),
            Auth::Bearer(&hub.token()),
            &json!({"kind": "echo", "retry": retry}).to_string(),
        )
        .await;
        let (message, _) = assert_error(code, &body, 400, "INVALID_REQUEST");
        assert!(message.contains(field), "{message}");
    }
    let token = hub.token();
    let put = |body: &'static str| {
        let url = url.clone();
        let token = token.clone();
        async move { call(reqwest::Method::PUT, &url, Auth::Bearer(&token), Some(body)).await }
    };
    let (code, body) = put(
        r#"{"concurrency": 4, "key_rate": {"limit": 60, "period_s": 60}, "retry_base_ms": 500}"#,
    )
    .await;
    assert_eq!(code.as_u16(), 200, "{body}");
    // A PUT names only what it changes.
    let (code, body) = put(r#"{"key_concurrency": 1}"#).await;
    assert_eq!(code.as_u16(), 200, "{body}");
    assert_eq!(body["concurrency"], 4, "{body}");
    assert_eq!(body["key_concurrency"], 1, "{body}");
    // Bad values: 400 naming the field, nothing changed.
    for (bad, field) in [
        (r#"{"concurrency": 0}"#, "concurrency"),
        (r#"{"concurrency": -3}"#, "concurrency"),
        (
            r#"{"rate": {"limit": 5, "period_s": 100000}}"#,
            "rate.period_s",
        ),
        (
            r#"{"retry_base_ms": 1000, "retry_max_ms": 5}"#,
            "retry_max_ms",
        ),
        (r#"{"max_attempts": 1000}"#, "max_attempts"),
        (r#"{"concurency": 1}"#, "concurency"),
        (r#"[1, 2]"#, ""),
    ] {
        let (code, body) = put(bad).await;
        let (message, _) = assert_error(code, &body, 400, "INVALID_REQUEST");
        assert!(message.contains(field), "{bad}: {message}");
    }
    let (code, body) = call(
        reqwest::Method::PUT,
        &format!("{}/admin/queues/bad%20name/settings", hub.data_url),
        Auth::Bearer(&token),
        Some("{}"),
    )
    .await;
    assert_error(code, &body, 400, "INVALID_REQUEST");
    // A concurrency_key over 256 bytes is refused at submit, naming the field.
    let long_key = "k".repeat(257);
    let (code, body) = post(
        &format!("{}/v1/jobs", hub.data_url),
        Auth::Bearer(&token),
        &json!({"kind": "echo", "concurrency_key": long_key}).to_string(),
    )
    .await;
    let (message, _) = assert_error(code, &body, 400, "INVALID_REQUEST");
    assert!(message.contains("concurrency_key"), "{message}");
    // Credentials other than admin may neither read nor change settings.
    for role in ["submit", "read", "node"] {
        let name = format!("cred-{role}");
        let (code, out, err) = cli(&hub, &["token", "create", "--role", role, "--name", &name]);
        assert_eq!(code, 0, "{err}");
        let secret = out.lines().nth(1).unwrap().trim().to_owned();
        let (code, body) = call(
            reqwest::Method::PUT,
            &url,
            Auth::Bearer(&secret),
            Some(r#"{"concurrency": 1000}"#),
        )
        .await;
        assert_error(code, &body, 403, "FORBIDDEN");
        let (code, body) = get(&url, Auth::Bearer(&secret)).await;
        assert_error(code, &body, 403, "FORBIDDEN");
    }
    // The queue's retry default reaches jobs submitted to it; all of it survives a restart.
    hub.restart();
    let url = format!("{}/admin/queues/llm/settings", hub.data_url);
    let (code, body) = get(&url, Auth::Bearer(&hub.token())).await;
    assert_eq!(code.as_u16(), 200, "{body}");
    assert_eq!(
        body,
        json!({
            "paused": false,
            "concurrency": 4,
            "key_concurrency": 1,
            "key_rate": {"limit": 60, "period_s": 60},
            "retry_base_ms": 500
        })
    );
    let (code, out, err) = cli(&hub, &["queue", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("llm") && out.contains("concurrency=4 key_concurrency=1 key_rate=60/m"),
        "{out}"
    );
    let (code, out, err) = cli(&hub, &["queue", "pause", "llm"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("paused"), "{out}");
    let (code, out, _) = cli(&hub, &["queue", "show", "llm", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["paused"], true);
    let (code, _, err) = cli(&hub, &["queue", "set", "llm"]);
    assert_eq!(code, 2, "nothing to change is a usage error: {err}");
    assert!(err.contains("name at least one setting"), "{err}");
}

/// `timeout_s` caps the run on the hub too: a node that keeps extending (a hand-written worker
/// that never kills its handler) gets extensions up to lease start + `timeout_s` + 5 s and no
/// further, then the reaper takes the job back with a retryable `TIMEOUT` error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_ends_a_lease_at_its_run_time_cap_whatever_the_extensions() {
    let hub = hub().env("SHERATAN_RETRY_BASE_MS", "100").start();
    let token = hub.token();
    let data = hub.data_url.clone();
    let (status, body) = post(
        &format!("{data}/v1/jobs"),
        Auth::Bearer(&token),
        &json!({"kind": "echo", "timeout_s": 2, "max_attempts": 2, "retry": {"base_ms": 60000}})
            .to_string(),
    )
    .await;
    assert_eq!(status.as_u16(), 202, "{body}");
    let job_id = body["job_id"].as_str().unwrap().to_owned();
    let (jobs, _) = lease(&data, &token, "stubborn", &["default"], 1, 0).await;
    let started = Instant::now();
    let lease_id = jobs[0]["lease_id"].as_str().unwrap().to_owned();
    let leased_at = time::OffsetDateTime::now_utc();
    let mut last_expiry = None;
    let reaped = loop {
        let (status, answer) = post(
            &format!("{data}/v1/leases/{lease_id}/extend"),
            Auth::Bearer(&token),
            r#"{"extend_s": 600}"#,
        )
        .await;
        if status.as_u16() == 409 {
            break answer;
        }
        assert_eq!(status.as_u16(), 200, "{answer}");
        let expiry = time::OffsetDateTime::parse(
            answer["lease_expires_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert!(
            expiry <= leased_at + time::Duration::seconds(8),
            "extended past the cap: {expiry} (leased {leased_at})"
        );
        last_expiry = Some(expiry);
        assert!(started.elapsed() < Duration::from_secs(20), "never cut off");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_error(reqwest::StatusCode::CONFLICT, &reaped, 409, "LEASE_EXPIRED");
    assert!(
        last_expiry.is_some(),
        "extensions were answered until the cap"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "cut off at {:?}, before timeout_s + 5 s",
        started.elapsed()
    );
    let (_, view) = get(&format!("{data}/v1/jobs/{job_id}"), Auth::Bearer(&token)).await;
    assert_eq!(view["status"], "accepted", "retried: {view}");
    let error = &view["error"];
    assert!(
        error["message"].as_str().unwrap().starts_with("TIMEOUT"),
        "{view}"
    );
    assert_eq!(error["retryable"], true);
    // A lease taken back runs again at once: the job's own retry backoff (60 s) is for
    // failures its node reports.
    let run_at = time::OffsetDateTime::parse(
        view["run_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        run_at <= time::OffsetDateTime::now_utc() + time::Duration::seconds(1),
        "a reaped lease runs again at once: {view}"
    );
}

/// Delayed jobs from the command line (issue 20, item 4): `--in` and `--at` set `run_at`; the
/// list and the detail say "delayed" with the time; a bad time is a usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_jobs_are_submitted_and_shown_as_such() {
    let hub = hub().start();
    let (code, out, err) = cli(
        &hub,
        &["submit", "--kind", "echo", "--queue", "later", "--in", "1h"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("submitted, delayed until"), "{out}");
    let id = out.split_whitespace().next().unwrap().to_owned();
    let (code, out, err) = cli(&hub, &["jobs", "show", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("status    delayed") && out.contains("runs at"),
        "{out}"
    );
    let (code, out, _) = cli(&hub, &["jobs", "list", "--queue", "later"]);
    assert_eq!(code, 0);
    assert!(out.contains("delayed"), "{out}");
    let (_, view) = get(
        &format!("{}/v1/jobs/{id}", hub.data_url),
        Auth::Bearer(&hub.token()),
    )
    .await;
    let run_at = time::OffsetDateTime::parse(
        view["run_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let ahead = run_at - time::OffsetDateTime::now_utc();
    assert!(
        ahead > time::Duration::minutes(59) && ahead <= time::Duration::minutes(60),
        "{view}"
    );
    // --at: a time given as such; in the past it means now (not delayed).
    let (code, out, err) = cli(
        &hub,
        &[
            "submit",
            "--kind",
            "echo",
            "--queue",
            "later",
            "--at",
            "2026-01-01T00:00:00Z",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("delayed"), "{out}");
    for bad in [["--in", "soon"], ["--at", "tomorrow"]] {
        let (code, _, err) = cli(&hub, &["submit", "--kind", "echo", bad[0], bad[1]]);
        assert_eq!(code, 2, "{err}");
    }
    let (code, _, err) = cli(
        &hub,
        &[
            "submit",
            "--kind",
            "echo",
            "--in",
            "1m",
            "--at",
            "2026-01-01T00:00:00Z",
        ],
    );
    assert_eq!(code, 2, "--in and --at together: {err}");
}

/// Failed jobs are found by kind, error text and time (issue 20, item 3, the listing): over
/// HTTP and with `sheratan jobs list`; a bad `since` is 400 naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_jobs_are_listed_by_kind_error_and_time() {
    let hub = hub().start();
    let token = hub.token();
    let data = hub.data_url.clone();
    for kind in ["charge", "echo"] {
        let (status, body) = post(
            &format!("{data}/v1/jobs"),
            Auth::Bearer(&token),
            &json!({"kind": kind, "queue": "dl", "max_attempts": 1}).to_string(),
        )
        .await;
        assert_eq!(status.as_u16(), 202, "{body}");
    }
    let (jobs, _) = lease(&data, &token, "n-1", &["dl"], 10, 0).await;
    assert_eq!(jobs.len(), 2);
    for j in &jobs {
        let message = format!("SMTP refused {}", j["kind"].as_str().unwrap());
        let (status, answer) = send_result(
            &data,
            &token,
            &json!({"job_id": j["job_id"], "lease_id": j["lease_id"], "outcome": "failure",
                    "error": {"message": message, "retryable": false}}),
        )
        .await;
        assert_eq!(status.as_u16(), 200, "{answer}");
    }
    let list = |query: &str| {
        let url = format!("{data}/v1/jobs?status=failed&{query}");
        let token = token.clone();
        async move { get(&url, Auth::Bearer(&token)).await }
    };
    let (status, body) = list("kind=charge&error=smtp%20REFUSED&since=1h").await;
    assert_eq!(status.as_u16(), 200, "{body}");
    let jobs = body["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{body}");
    assert_eq!(jobs[0]["kind"], "charge");
    let (_, body) = list("error=refused").await;
    assert_eq!(body["jobs"].as_array().unwrap().len(), 2, "{body}");
    let (_, body) = list("since=2099-01-01T00:00:00Z").await;
    assert!(body["jobs"].as_array().unwrap().is_empty(), "{body}");
    let (status, body) = list("since=yesterday").await;
    let (message, _) = assert_error(status, &body, 400, "INVALID_REQUEST");
    assert!(message.contains("since"), "{message}");
    let (code, out, err) = cli(
        &hub,
        &[
            "jobs", "list", "--status", "failed", "--kind", "echo", "--error", "smtp", "--since",
            "10m",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("echo") && !out.contains("charge"), "{out}");

    // Bulk requeue moves exactly the selected jobs, audited once with its count.
    let (code, _, err) = cli(&hub, &["jobs", "requeue"]);
    assert_eq!(code, 2, "no id and no filter: {err}");
    let (status, body) = post(
        &format!("{data}/admin/jobs/requeue"),
        Auth::Bearer(&token),
        r#"{"status": "in_progress"}"#,
    )
    .await;
    let (message, _) = assert_error(status, &body, 400, "INVALID_REQUEST");
    assert!(message.starts_with("status"), "{message}");
    let (code, out, err) = cli(
        &hub,
        &[
            "jobs", "requeue", "--status", "failed", "--queue", "dl", "--kind", "charge",
            "--since", "1h",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("requeued 1 job(s)"), "{out}");
    let (_, body) = list("").await;
    let still: Vec<&str> = body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["kind"].as_str().unwrap())
        .collect();
    assert_eq!(still, ["echo"], "only the charge job moved: {body}");
    let (_, body) = get(
        &format!("{data}/v1/jobs?queue=dl&status=accepted"),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(body["jobs"][0]["kind"], "charge", "{body}");
    assert_eq!(body["jobs"][0]["attempt"], 0, "fresh attempts: {body}");
    let records = hub.wait_audit(Duration::from_secs(5), |r| {
        r.iter()
            .any(|e| e.event == sheratan_proto::EventKind::JobsRequeued)
    });
    let line = records
        .iter()
        .find(|e| e.event == sheratan_proto::EventKind::JobsRequeued)
        .unwrap();
    assert_eq!(line.detail["count"], 1, "{line:?}");
    // Only admins requeue or delete.
    let (code, out, err) = cli(
        &hub,
        &["token", "create", "--role", "submit", "--name", "ci"],
    );
    assert_eq!(code, 0, "{err}");
    let ci = out.lines().nth(1).unwrap().trim().to_owned();
    for action in ["requeue", "delete"] {
        let (status, body) = post(
            &format!("{data}/admin/jobs/{action}"),
            Auth::Bearer(&ci),
            "{}",
        )
        .await;
        assert_error(status, &body, 403, "FORBIDDEN");
    }
    // Bulk delete: the failed echo job goes, the requeued one stays; audited with its count.
    let (_, body) = list("").await;
    let echo_id = body["jobs"][0]["job_id"].as_str().unwrap().to_owned();
    let (code, out, err) = cli(
        &hub,
        &["jobs", "delete", "--status", "failed", "--queue", "dl"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("deleted 1 job(s)"), "{out}");
    let (status, _) = get(&format!("{data}/v1/jobs/{echo_id}"), Auth::Bearer(&token)).await;
    assert_eq!(status.as_u16(), 404);
    let (_, body) = get(&format!("{data}/v1/jobs?queue=dl"), Auth::Bearer(&token)).await;
    assert_eq!(body["jobs"].as_array().unwrap().len(), 1, "{body}");
    let records = hub.wait_audit(Duration::from_secs(5), |r| {
        r.iter()
            .any(|e| e.event == sheratan_proto::EventKind::JobsDeleted)
    });
    let line = records
        .iter()
        .find(|e| e.event == sheratan_proto::EventKind::JobsDeleted)
        .unwrap();
    assert_eq!(line.detail["count"], 1, "{line:?}");
    let (status, body) = post(
        &format!("{data}/admin/jobs/delete"),
        Auth::Bearer(&token),
        r#"{"status": "accepted"}"#,
    )
    .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    // An empty filter (an unset field in some form) is refused, never "every queue".
    for (field, action) in [
        ("queue", "delete"),
        ("kind", "requeue"),
        ("error", "delete"),
        ("since", "requeue"),
    ] {
        let (status, body) = post(
            &format!("{data}/admin/jobs/{action}"),
            Auth::Bearer(&token),
            &json!({"status": "failed", field: ""}).to_string(),
        )
        .await;
        assert_error(status, &body, 400, "INVALID_REQUEST");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{body}"
        );
    }
}
