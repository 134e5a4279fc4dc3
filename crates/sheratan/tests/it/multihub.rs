//! Several hubs on one PostgreSQL database (issue 9), as real processes against the database
//! at `SHERATAN_TEST_POSTGRES_URL` (`./scripts/test.sh` starts a throwaway cluster). Each test
//! works in its own schema.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sheratan_testkit::{HubProcess, Proc};

use crate::common::*;

const TOKEN: &str = "multi-hub-test-token-0123456789abcdef";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sheratan"))
}

fn pg_url() -> String {
    std::env::var("SHERATAN_TEST_POSTGRES_URL").expect(
        "SHERATAN_TEST_POSTGRES_URL is not set: run ./scripts/test.sh, or scripts/pg-cluster.sh start and export the URL",
    )
}

/// A schema of its own for one test.
fn schema() -> String {
    format!("multihub_{}", uuid::Uuid::now_v7().simple())
}

fn store_url(base: &str, schema: &str) -> String {
    format!("{base}?schema={schema}")
}

fn pg_hub(store: &str, extra_env: &[(&str, &str)]) -> HubProcess {
    let mut builder = hub()
        .env("SHERATAN_STORE", store)
        .env("SHERATAN_HUB_TOKEN", TOKEN)
        .env("SHERATAN_MAX_QUEUE_DEPTH", "100000")
        .env("SHERATAN_MAX_INFLIGHT", "10000")
        .env("SHERATAN_RETRY_BASE_MS", "200");
    for (k, v) in extra_env {
        builder = builder.env(k, *v);
    }
    builder.start()
}

fn worker(hub: &HubProcess, node: &str) -> Proc {
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
            "--concurrency",
            "16",
        ],
        &[("SHERATAN_HUB_TOKEN", TOKEN)],
        true,
    )
}

async fn sql(base: &str, schema: &str, query: &str) -> i64 {
    let client = connect(base, schema).await;
    client.query_one(query, &[]).await.expect(query).get(0)
}

/// Submits `n` echo jobs in batches of 1,000, alternating between the hubs; the ids of the
/// accepted ones.
async fn submit_many(hubs: &[&HubProcess], n: usize, timeout_s: u32) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let hub = hubs[(i / 1000) % hubs.len()];
        let jobs: Vec<Value> = (i..(i + 1000).min(n))
            .map(|k| json!({"kind": "echo", "payload": {"k": k}, "timeout_s": timeout_s}))
            .collect();
        let (status, body) = post(
            &format!("{}/v1/jobs/batch", hub.data_url),
            Auth::Bearer(TOKEN),
            &json!({"jobs": jobs}).to_string(),
        )
        .await;
        assert_eq!(status.as_u16(), 200, "{body}");
        for outcome in body["jobs"].as_array().unwrap() {
            assert_eq!(outcome["code"], 202, "{outcome}");
            ids.push(outcome["job_id"].as_str().unwrap().to_owned());
        }
        i += 1000;
    }
    ids
}

async fn wait_completed(base: &str, schema: &str, n: i64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let done = sql(base, schema, "SELECT count(*) FROM jobs WHERE status = 2").await;
        if done == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {n} jobs completed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_on_one_database_complete_each_job_exactly_once() {
    let base = pg_url();
    let schema = schema();
    let store = store_url(&base, &schema);
    let a = pg_hub(&store, &[]);
    let b = pg_hub(&store, &[]);
    let _workers = [
        worker(&a, "wa-1"),
        worker(&a, "wa-2"),
        worker(&b, "wb-1"),
        worker(&b, "wb-2"),
    ];
    let ids = submit_many(&[&a, &b], 20_000, 300).await;
    assert_eq!(ids.len(), 20_000);
    wait_completed(&base, &schema, 20_000, Duration::from_secs(240)).await;
    // Exactly once: every job completed, each leased once (a second lease would show as a
    // second attempt), every result recorded once.
    assert_eq!(
        sql(&base, &schema, "SELECT count(*) FROM jobs").await,
        20_000
    );
    assert_eq!(
        sql(
            &base,
            &schema,
            "SELECT count(*) FROM jobs WHERE attempt <> 1"
        )
        .await,
        0
    );
    assert_eq!(
        sql(&base, &schema, "SELECT count(DISTINCT lease_id) FROM jobs").await,
        20_000
    );
    // Both hubs did part of the work.
    for hub in [&a, &b] {
        let metrics = metrics_text(&hub.data_url, TOKEN).await;
        let leased: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("sheratan_jobs_total{event=\"leased\"} "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        assert!(
            leased > 1000.0,
            "each hub leased a share: {leased}\n{metrics}"
        );
    }
    // A job submitted to one hub is visible on the other.
    let (status, job) = get(
        &format!("{}/v1/jobs/{}", b.data_url, ids[0]),
        Auth::Bearer(TOKEN),
    )
    .await;
    assert_eq!(status.as_u16(), 200, "{job}");
    assert_eq!(job["status"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_killed_mid_run_loses_nothing_and_the_other_goes_on() {
    let base = pg_url();
    let schema = schema();
    let store = store_url(&base, &schema);
    let mut a = pg_hub(&store, &[]);
    let b = pg_hub(&store, &[]);
    let _wa = worker(&a, "wa-1");
    let _wb = [worker(&b, "wb-1"), worker(&b, "wb-2")];
    // Short leases: jobs held by hub A's worker when A dies come back quickly.
    let ids = submit_many(&[&a, &b], 4_000, 3).await;
    // Kill hub A once part of the work is done.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sql(&base, &schema, "SELECT count(*) FROM jobs WHERE status = 2").await < 800 {
        assert!(Instant::now() < deadline, "no progress before the kill");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.kill9();
    // Hub B goes on alone: every job that was accepted completes.
    wait_completed(&base, &schema, ids.len() as i64, Duration::from_secs(180)).await;
    assert_eq!(
        sql(&base, &schema, "SELECT count(*) FROM jobs").await,
        ids.len() as i64
    );
    assert_eq!(
        sql(
            &base,
            &schema,
            "SELECT count(*) FROM jobs WHERE status <> 2"
        )
        .await,
        0
    );
    let (status, _) = get(
        &format!("{}/v1/jobs/{}", b.data_url, ids[ids.len() - 1]),
        Auth::Bearer(TOKEN),
    )
    .await;
    assert_eq!(status.as_u16(), 200);
}

/// A PostgreSQL cluster of a test's own, stopped when the test ends.
#[derive(Clone)]
struct Cluster {
    dir: std::path::PathBuf,
    port: u16,
}

impl Cluster {
    fn run(&self, cmd: &str) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg-cluster.sh");
        let out = std::process::Command::new(script)
            .args([cmd, self.dir.to_str().unwrap(), &self.port.to_string()])
            .output()
            .expect("run pg-cluster.sh");
        assert!(
            out.status.success(),
            "pg-cluster.sh {cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// Stops the cluster when the test ends, passed or not.
struct StopOnDrop(Cluster);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg-cluster.sh");
        let _ = std::process::Command::new(script)
            .args(["stop", self.0.dir.to_str().unwrap_or_default()])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_restarting_mid_run_means_503_then_recovery_without_loss() {
    // A cluster of its own: restarting the shared one would disturb the other tests.
    let dir = tempfile::Builder::new()
        .prefix("sheratan-pg-restart-")
        .tempdir()
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cluster = Cluster {
        dir: dir.path().join("pg"),
        port,
    };
    // pg-cluster.sh runs the server as the postgres user, which must be able to reach the dir.
    let _ = std::process::Command::new("chmod")
        .args(["755", dir.path().to_str().unwrap()])
        .status();
    let base = cluster.run("start");
    let _stop = StopOnDrop(cluster.clone());
    let schema = schema();
    let hub = pg_hub(&store_url(&base, &schema), &[]);
    let _w = worker(&hub, "w-1");
    let mut accepted = submit_many(&[&hub], 1_000, 30).await;

    // Restart the database while submits keep coming.
    let restarting = cluster.clone();
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        restarting.run("restart")
    });
    let mut refused = 0;
    let started = Instant::now();
    let mut k = 0;
    while started.elapsed() < Duration::from_secs(8) {
        k += 1;
        let body = json!({"kind": "echo", "payload": {"during": k}}).to_string();
        let response = reqwest::Client::new()
            .post(format!("{}/v1/jobs", hub.data_url))
            .bearer_auth(TOKEN)
            .body(body)
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        match status {
            202 => accepted.push(answer["job_id"].as_str().unwrap().to_owned()),
            503 => {
                assert_eq!(answer["error"]["code"], "UNAVAILABLE", "{answer}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {answer}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    restarter.join().unwrap();
    assert!(refused > 0, "the hub never noticed the database was down");
    // Recovered: new submits work and every accepted job completes.
    accepted.extend(submit_many(&[&hub], 200, 30).await);
    wait_completed(
        &base,
        &schema,
        accepted.len() as i64,
        Duration::from_secs(120),
    )
    .await;
    for id in accepted.iter().step_by(97) {
        let (status, job) = get(
            &format!("{}/v1/jobs/{id}", hub.data_url),
            Auth::Bearer(TOKEN),
        )
        .await;
        assert_eq!(status.as_u16(), 200);
        assert_eq!(job["status"], "completed", "{job}");
    }
}

/// Polls `f` every 100 ms for up to `secs` seconds.
async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_share_the_registry_the_token_rotation_and_bundles() {
    let base = pg_url();
    let schema = schema();
    let store = store_url(&base, &schema);
    let a = pg_hub(&store, &[]);
    let b = pg_hub(&store, &[]);

    // A node heartbeating to hub A is seen by hub B, and the other way round.
    let beat = |load: u32| {
        json!({"node_id": "edge-7", "role": "worker", "capabilities": ["echo"], "build_id": "b1",
        "capability_hash": "h1", "runtime": {"os": "linux"}, "load": {"inflight": load, "capacity": 8}}).to_string()
    };
    let (s, body) = post(
        &format!("{}/v1/heartbeat", a.control_url),
        Auth::Bearer(TOKEN),
        &beat(1),
    )
    .await;
    assert_eq!(s.as_u16(), 200, "{body}");
    eventually(10, "hub B lists the node hub A heard from", || async {
        let (_, node) = get(
            &format!("{}/v1/nodes/edge-7", b.control_url),
            Auth::Bearer(TOKEN),
        )
        .await;
        node["status"] == "ONLINE" && node["load"]["inflight"] == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (s, _) = post(
        &format!("{}/v1/heartbeat", b.control_url),
        Auth::Bearer(TOKEN),
        &beat(5),
    )
    .await;
    assert_eq!(s.as_u16(), 200);
    eventually(10, "hub A sees the newer heartbeat hub B took", || async {
        let (_, node) = get(
            &format!("{}/v1/nodes/edge-7", a.control_url),
            Auth::Bearer(TOKEN),
        )
        .await;
        node["load"]["inflight"] == 5
    })
    .await;

    // A node an operator removes on hub B is gone from hub A too, and stays gone (hub A's
    // own older copy in the database does not bring it back); its next heartbeat does.
    let removed = reqwest::Client::new()
        .delete(format!("{}/admin/nodes/edge-7", b.data_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status().as_u16(), 200);
    eventually(10, "hub A forgets the node hub B removed", || async {
        let (s, _) = get(
            &format!("{}/v1/nodes/edge-7", a.control_url),
            Auth::Bearer(TOKEN),
        )
        .await;
        s.as_u16() == 404
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for hub in [&a, &b] {
        let (s, _) = get(
            &format!("{}/v1/nodes/edge-7", hub.control_url),
            Auth::Bearer(TOKEN),
        )
        .await;
        assert_eq!(
            s.as_u16(),
            404,
            "a mirror round brought the removed node back"
        );
    }
    let (s, _) = post(
        &format!("{}/v1/heartbeat", a.control_url),
        Auth::Bearer(TOKEN),
        &beat(2),
    )
    .await;
    assert_eq!(s.as_u16(), 200);
    eventually(
        10,
        "hub B sees the node again after its heartbeat",
        || async {
            let (_, node) = get(
                &format!("{}/v1/nodes/edge-7", b.control_url),
                Auth::Bearer(TOKEN),
            )
            .await;
            node["load"]["inflight"] == 2
        },
    )
    .await;

    // A bundle published on hub A is served by hub B.
    let bytes = b"#!/bin/sh\necho shared\n".to_vec();
    let put = reqwest::Client::new()
        .put(format!("{}/admin/bundles/tool.sh", a.data_url))
        .bearer_auth(TOKEN)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());
    eventually(10, "hub B serves the bundle", || async {
        let r = reqwest::Client::new()
            .get(format!("{}/v1/bundles/tool.sh", b.control_url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        r.status().as_u16() == 200 && r.bytes().await.unwrap().as_ref() == bytes.as_slice()
    })
    .await;

    // A rotation started on hub A is honoured by hub B: the next token works there before the
    // deadline, and only it after.
    let next = "rotated-token-abcdefghijklmnopqrstuvwxyz-0123";
    let until = (time::OffsetDateTime::now_utc() + time::Duration::seconds(6))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (s, body) = post(
        &format!("{}/admin/token-rotation", a.data_url),
        Auth::Bearer(TOKEN),
        &json!({"next_token": next, "until": until}).to_string(),
    )
    .await;
    assert_eq!(s.as_u16(), 200, "{body}");
    eventually(10, "hub B accepts the next token", || async {
        get(&format!("{}/v1/nodes", b.control_url), Auth::Bearer(next))
            .await
            .0
            .as_u16()
            == 200
    })
    .await;
    assert_eq!(
        get(&format!("{}/v1/nodes", b.control_url), Auth::Bearer(TOKEN))
            .await
            .0
            .as_u16(),
        200,
        "both tokens work before the deadline"
    );
    eventually(
        15,
        "hub B retires the old token after the deadline",
        || async {
            let (s, body) = get(&format!("{}/v1/nodes", b.control_url), Auth::Bearer(TOKEN)).await;
            s.as_u16() == 403
                && body["error"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("retired")
        },
    )
    .await;
    assert_eq!(
        get(&format!("{}/v1/nodes", b.control_url), Auth::Bearer(next))
            .await
            .0
            .as_u16(),
        200
    );
    assert_eq!(
        get(&format!("{}/v1/nodes", a.control_url), Auth::Bearer(TOKEN))
            .await
            .0
            .as_u16(),
        403
    );
}

/// Credentials live in the shared database: one created on hub A works on hub B, and one
/// revoked on hub A stops working on hub B within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_revoked_on_one_hub_is_refused_by_the_other_within_two_seconds() {
    let store = store_url(&pg_url(), &schema());
    let a = pg_hub(&store, &[]);
    let b = pg_hub(&store, &[]);
    let (status, created) = post(
        &format!("{}/admin/tokens", a.data_url),
        Auth::Bearer(TOKEN),
        &json!({"name": "viewer", "role": "read"}).to_string(),
    )
    .await;
    assert_eq!(status.as_u16(), 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    // Known to B after its next re-read (at most a second or so).
    let jobs_on_b = format!("{}/v1/jobs", b.data_url);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) = get(&jobs_on_b, Auth::Bearer(&secret)).await;
        if status.is_success() {
            break;
        }
        assert!(Instant::now() < deadline, "hub B never took the credential");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = call(
        reqwest::Method::DELETE,
        &format!("{}/admin/tokens/viewer", a.data_url),
        Auth::Bearer(TOKEN),
        None,
    )
    .await;
    assert_eq!(status.as_u16(), 200, "{body}");
    let revoked_at = Instant::now();
    loop {
        let (status, body) = get(&jobs_on_b, Auth::Bearer(&secret)).await;
        if status.as_u16() == 403 {
            assert_eq!(body["error"]["code"], "AUTH_FAIL", "{body}");
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(2),
            "hub B still accepts the revoked credential after 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A hub that cannot re-read the credentials fails closed: after 10 s without a good re-read
/// it refuses every credential (a revocation elsewhere could be missing), and says why in the
/// audit line; the mesh token keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_fail_closed_when_they_cannot_be_re_read() {
    let schema = schema();
    let hub = pg_hub(
        &store_url(&pg_url(), &schema),
        &[("SHERATAN_AUDIT_FOLD_WINDOW_SEC", "0.1")],
    );
    let (status, created) = post(
        &format!("{}/admin/tokens", hub.data_url),
        Auth::Bearer(TOKEN),
        &json!({"name": "viewer", "role": "read"}).to_string(),
    )
    .await;
    assert_eq!(status.as_u16(), 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    let jobs = format!("{}/v1/jobs", hub.data_url);
    let (status, _) = get(&jobs, Auth::Bearer(&secret)).await;
    assert!(status.is_success());
    // The table goes away under the hub (a broken database, a bad migration).
    let (client, connection) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "ALTER TABLE {schema}.credentials RENAME TO credentials_gone"
        ))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(&jobs, Auth::Bearer(&secret)).await;
        if status.as_u16() == 403 {
            assert_eq!(body["error"]["code"], "AUTH_FAIL", "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stale credential is still accepted"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    hub.wait_audit(Duration::from_secs(5), |r| {
        r.iter()
            .any(|x| format!("{x:?}").contains("credentials_stale"))
    });
    let (status, _) = get(&jobs, Auth::Bearer(TOKEN)).await;
    assert!(status.is_success(), "the mesh token is not a credential");
}

/// A cancel made on one hub reaches a job running on a worker of the other hub (issue 19,
/// item 1): the other hub hears that a job ended (NOTIFY), looks at its watched leases, and
/// the worker stops the handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_on_one_hub_stops_a_job_running_through_the_other() {
    let base = pg_url();
    let schema = schema();
    let store = store_url(&base, &schema);
    let a = pg_hub(&store, &[]);
    let b = pg_hub(&store, &[]);
    let w = worker(&b, "wb-1");
    let (status, body) = post(
        &format!("{}/v1/jobs", b.data_url),
        Auth::Bearer(TOKEN),
        &serde_json::json!({"kind": "sleep", "payload": {"ms": 60000}, "timeout_s": 300})
            .to_string(),
    )
    .await;
    assert_eq!(status.as_u16(), 202, "{body}");
    let id = body["job_id"].as_str().unwrap().to_owned();
    eventually(10, "the job runs on wb-1", || async {
        let (_, view) = get(&format!("{}/v1/jobs/{id}", a.data_url), Auth::Bearer(TOKEN)).await;
        view["status"] == "in_progress"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let cancelled_at = std::time::Instant::now();
    let (status, view) = post(
        &format!("{}/v1/jobs/{id}/cancel", a.data_url),
        Auth::Bearer(TOKEN),
        "",
    )
    .await;
    assert_eq!(status.as_u16(), 200, "{view}");
    while !w.stderr().contains("stopping its handler") {
        assert!(
            cancelled_at.elapsed() < Duration::from_secs(3),
            "a cancel on hub A did not reach the job running through hub B: {}",
            w.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An `@every 1s` schedule on two hubs sharing one database makes exactly one job per tick
/// for 30 s, through one hub killed (`kill -9`, possibly between its submit and its record of
/// the tick) and started again: the tick's idempotency key holds it to one job, and the
/// compare-and-set on the schedule counts it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_every_second_schedule_on_two_hubs_makes_one_job_per_tick_through_a_kill() {
    let base = pg_url();
    let schema = schema();
    let store = store_url(&base, &schema);
    let mut a = pg_hub(&store, &[]);
    let b = pg_hub(&store, &[]);
    let spec =
        json!({"name": "tick", "cron": "@every 1s", "job": {"kind": "echo", "queue": "sched"}});
    let (status, view) = post(
        &format!("{}/v1/schedules", a.data_url),
        Auth::Bearer(TOKEN),
        &spec.to_string(),
    )
    .await;
    assert_eq!(status.as_u16(), 201, "{view}");
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(12)).await;
    a.kill9();
    tokio::time::sleep(Duration::from_secs(8)).await;
    a.restart();
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(started.elapsed())).await;
    let (status, view) = call(
        reqwest::Method::PATCH,
        &format!("{}/v1/schedules/tick", b.data_url),
        Auth::Bearer(TOKEN),
        Some(r#"{"paused": true}"#),
    )
    .await;
    assert_eq!(status.as_u16(), 200, "{view}");
    // A pass that began before the pause may still record its tick.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let client = connect(&base, &schema).await;
    let rows = client
        .query(
            "SELECT idempotency_key FROM jobs WHERE queue = 'sched'",
            &[],
        )
        .await
        .unwrap();
    let mut ticks: Vec<i64> = rows
        .iter()
        .map(|r| {
            let key: String = r.get(0);
            key.strip_prefix("schedule:tick:").unwrap().parse().unwrap()
        })
        .collect();
    ticks.sort();
    let jobs = ticks.len();
    ticks.dedup();
    assert_eq!(ticks.len(), jobs, "a tick made more than one job");
    assert!((27..=33).contains(&jobs), "{jobs} jobs in 30 s");
    let gaps: Vec<i64> = ticks
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d != 1000)
        .collect();
    assert!(
        gaps.is_empty(),
        "ticks without a job: {gaps:?} in {ticks:?}"
    );
    let (_, view) = get(
        &format!("{}/v1/schedules/tick", a.data_url),
        Auth::Bearer(TOKEN),
    )
    .await;
    assert_eq!(
        view["runs"].as_u64(),
        Some(jobs as u64),
        "each tick counted once: {view}"
    );
    assert_eq!(view["missed"], 0, "{view}");
}

async fn connect(base: &str, schema: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(base, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("SET search_path TO {schema}"))
        .await
        .unwrap();
    client
}
