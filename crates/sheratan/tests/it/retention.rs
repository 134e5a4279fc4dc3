//! Retention (docs/API.md, "Retention") on a real hub: finished jobs go after
//! `SHERATAN_RETENTION` in small audited batches, the SQLite file shrinks, running and waiting
//! jobs stay, a purged job's id says what happened to it, and a queue's settings override the
//! hub's. (Both stores' deletes are in the conformance suite.)

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sheratan_proto::EventKind;
use sheratan_testkit::{HubProcess, count_events};

use crate::common::*;
use crate::limits::submit_batch;

fn store_bytes(hub: &HubProcess) -> u64 {
    ["sheratan.db", "sheratan.db-wal"]
        .iter()
        .map(|f| std::fs::metadata(hub.home.join(f)).map_or(0, |m| m.len()))
        .sum()
}

async fn count(hub: &HubProcess, query: &str) -> usize {
    let (status, list) = get(
        &format!("{}/v1/jobs?{query}&limit=1000", hub.data_url),
        Auth::Bearer(&hub.token()),
    )
    .await;
    assert_eq!(status.as_u16(), 200, "{list}");
    list["jobs"].as_array().unwrap().len()
}

async fn metric(hub: &HubProcess, name: &str) -> f64 {
    let (_, text) = call(
        reqwest::Method::GET,
        &format!("{}/metrics", hub.data_url),
        Auth::Bearer(&hub.token()),
        None,
    )
    .await;
    let text = text.as_str().unwrap().to_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_finished_jobs_gives_space_back_and_leaves_live_ones() {
    let mut hub = hub()
        .env("SHERATAN_RETENTION", "0")
        .env("SHERATAN_MAX_QUEUE_DEPTH", "100000")
        .start();
    let token = hub.token();
    // 3,000 finished jobs of 4 KB each (cancelled by a queue purge: finished, kept).
    let pad = "x".repeat(4000);
    let mut old = Vec::new();
    for batch in 0..15 {
        let jobs = (0..200)
            .map(|i| json!({"queue": "old", "kind": "echo", "payload": {"b": batch, "i": i, "pad": pad}}))
            .collect();
        old.extend(submit_batch(&hub, jobs).await);
    }
    let (status, purged) = post(
        &format!("{}/admin/queues/old/purge", hub.data_url),
        Auth::Bearer(&token),
        "",
    )
    .await;
    assert_eq!(status.as_u16(), 200, "{purged}");
    // Live jobs as old as those: one waiting, one running.
    let live = submit_batch(
        &hub,
        vec![
            json!({"queue": "live", "kind": "echo", "payload": {"n": 1}}),
            json!({"queue": "live", "kind": "echo", "payload": {"n": 2}}),
        ],
    )
    .await;
    let (status, leased) = post(
        &format!("{}/v1/leases", hub.data_url),
        Auth::Bearer(&token),
        &json!({"node_id": "w-1", "queues": ["live"], "capabilities": ["echo"]}).to_string(),
    )
    .await;
    assert_eq!(status.as_u16(), 200, "{leased}");
    assert_eq!(leased["jobs"].as_array().unwrap().len(), 1, "{leased}");
    hub.terminate();
    let before = store_bytes(&hub);
    assert!(
        before > 12_000_000,
        "{before} bytes with 3,000 jobs of 4 KB"
    );

    // Restarted with a retention of one second: the finished jobs go, in batches.
    hub.set_env("SHERATAN_RETENTION", "1s");
    hub.restart();
    let started = Instant::now();
    while count(&hub, "queue=old").await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "retention did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, answer) = get(
        &format!("{}/v1/jobs/{}", hub.data_url, old[0]),
        Auth::Bearer(&token),
    )
    .await;
    assert_error(status, &answer, 404, "NOT_FOUND");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("deleted by retention") && message.contains("1s"),
        "{message}"
    );
    // An id never seen, made now, is a plain 404.
    let fresh = uuid::Uuid::now_v7();
    let (_, answer) = get(
        &format!("{}/v1/jobs/{fresh}", hub.data_url),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(answer["error"]["message"], format!("no job {fresh}"));
    for id in &live {
        let (status, job) = get(
            &format!("{}/v1/jobs/{id}", hub.data_url),
            Auth::Bearer(&token),
        )
        .await;
        assert_eq!(status.as_u16(), 200, "a live job stays: {job}");
        assert!(
            ["accepted", "in_progress"].contains(&job["status"].as_str().unwrap()),
            "{job}"
        );
    }
    assert_eq!(metric(&hub, "sheratan_jobs_purged_total").await, 3000.0);
    // Give the freed pages a moment to go back, then look at the file with the hub stopped.
    tokio::time::sleep(Duration::from_secs(6)).await;
    hub.terminate();
    let after = store_bytes(&hub);
    assert!(
        after * 3 < before,
        "the store did not shrink: {before} → {after} bytes"
    );
    // One audit line per batch of at most 32 (identical lines fold into one with a count;
    // a clean stop writes them all).
    let records = hub.audit_records();
    let purges: Vec<_> = records
        .iter()
        .filter(|r| r.event == EventKind::JobsPurged)
        .collect();
    let batches = count_events(&records, EventKind::JobsPurged);
    let deleted: u64 = purges
        .iter()
        .map(|r| r.count * r.detail["count"].as_u64().unwrap())
        .sum();
    assert_eq!(deleted, 3000, "{purges:?}");
    assert!(
        batches >= 94,
        "3,000 jobs in batches of at most 32: {batches} batches"
    );
    assert!(
        purges
            .iter()
            .all(|r| r.detail["count"].as_u64() <= Some(32)),
        "{purges:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queues_retention_overrides_the_hubs_and_bad_values_are_refused() {
    let hub = hub().env("SHERATAN_RETENTION", "0").start();
    let token = hub.token();
    let (code, out, err) = cli(
        &hub,
        &[
            "queue",
            "set",
            "brief",
            "--retention",
            "1s",
            "--failed-retention",
            "1h",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("retention        1s") && out.contains("failed_retention 1h"),
        "{out}"
    );
    for bad in [
        json!({"retention": "soon"}),
        json!({"failed_retention": "-1d"}),
        json!({"retention": 7}),
        // Past 100 years: it would overflow the cutoff's arithmetic.
        json!({"retention": "18446744073709551615s"}),
        json!({"failed_retention": "36501d"}),
    ] {
        let (status, answer) = call(
            reqwest::Method::PUT,
            &format!("{}/admin/queues/brief/settings", hub.data_url),
            Auth::Bearer(&token),
            Some(&bad.to_string()),
        )
        .await;
        assert_error(status, &answer, 400, "INVALID_REQUEST");
    }
    let home = tempfile::tempdir().unwrap();
    for bad in ["soon", "5000000d"] {
        let home = home.path().to_str().unwrap();
        let (code, _, err) = cli(&hub, &["hub", "--home", home, "--retention", bad]);
        assert_eq!(code, 2, "a bad SHERATAN_RETENTION is a usage error");
        assert!(err.contains("SHERATAN_RETENTION"), "{err}");
        // A usage error leaves nothing behind: no CA, no store.
        assert_eq!(std::fs::read_dir(home).unwrap().count(), 0, "{home}");
    }
    // A cancelled job in the queue goes within a few seconds; one elsewhere stays (hub: keep).
    let ids = submit_batch(
        &hub,
        vec![
            json!({"queue": "brief", "kind": "echo"}),
            json!({"queue": "other", "kind": "echo"}),
        ],
    )
    .await;
    for id in &ids {
        post(
            &format!("{}/v1/jobs/{id}/cancel", hub.data_url),
            Auth::Bearer(&token),
            "",
        )
        .await;
    }
    let started = Instant::now();
    loop {
        let (status, _) = get(
            &format!("{}/v1/jobs/{}", hub.data_url, ids[0]),
            Auth::Bearer(&token),
        )
        .await;
        if status.as_u16() == 404 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the brief queue's job stayed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, job): (_, Value) = get(
        &format!("{}/v1/jobs/{}", hub.data_url, ids[1]),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(status.as_u16(), 200, "{job}");
}
