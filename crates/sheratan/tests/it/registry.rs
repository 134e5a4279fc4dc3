//! Heartbeats, the node registry and its snapshot, and attestation (docs/API.md, "Control plane").

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sheratan_proto::EventKind;
use sheratan_testkit::{count_events, wait_for};

use crate::common::*;

async fn node(control: &str, token: &str, id: &str) -> Value {
    let (status, body) = get(&format!("{control}/v1/nodes/{id}"), Auth::Bearer(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn wait_status(control: &str, token: &str, id: &str, want: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let body = node(control, token, id).await;
        if body["status"] == want {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} never became {want}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_health_follow_the_heartbeats() {
    let hub = hub()
        .env("SHERATAN_NODE_TTL_SEC", "1")
        .env("SHERATAN_NODE_DEAD_SEC", "2")
        .start();
    let token = hub.token();
    let c = &hub.control_url;

    let (status, answer) = post(
        &format!("{c}/v1/heartbeat"),
        Auth::Bearer(&token),
        &heartbeat_body("w1"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["node_id"], "w1");
    assert_eq!(answer["status"], "ONLINE");
    assert_eq!(answer["health"], "GREEN");
    assert_eq!(answer["attestation"], "OK");
    assert!(answer["heartbeat_interval_s"].as_u64().unwrap() >= 1);
    let host = json!({"node_id": "host-a", "role": "host", "addr": "http://127.0.0.1:8081",
                      "capabilities": ["echo"], "load": {"inflight": 1, "capacity": 2}});
    post(
        &format!("{c}/v1/heartbeat"),
        Auth::Bearer(&token),
        &host.to_string(),
    )
    .await;

    let (_, all) = get(&format!("{c}/v1/nodes"), Auth::Bearer(&token)).await;
    let ids: Vec<&str> = all["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["host-a", "w1"]);
    let (_, hosts) = get(&format!("{c}/v1/nodes?role=host"), Auth::Bearer(&token)).await;
    assert_eq!(hosts["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(hosts["nodes"][0]["addr"], "http://127.0.0.1:8081");
    assert_eq!(
        hosts["nodes"][0]["load"],
        json!({"inflight": 1, "capacity": 2})
    );

    let w1 = node(c, &token, "w1").await;
    assert_eq!(w1["role"], "worker");
    assert_eq!(w1["capabilities"], json!(["echo", "sleep"]));
    assert_eq!(w1["first_seen"]["build_id"], "0.1.0+test");
    assert_eq!(
        w1["first_seen"]["runtime"],
        json!({"arch": "x86_64", "os": "linux"})
    );
    assert!(
        w1["last_seen"].as_str().unwrap().ends_with('Z'),
        "RFC 3339 UTC: {w1}"
    );

    let stale = wait_status(c, &token, "w1", "STALE").await;
    assert_eq!(stale["health"], "YELLOW");
    let dead = wait_status(c, &token, "w1", "DEAD").await;
    assert_eq!(dead["health"], "RED");
    // host-a beat a little after w1: under load it may take a moment longer to be DEAD too.
    let started = std::time::Instant::now();
    loop {
        let (_, dead_list) = get(&format!("{c}/v1/nodes?status=DEAD"), Auth::Bearer(&token)).await;
        let dead = dead_list["nodes"].as_array().unwrap().len();
        if dead == 2 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{dead_list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (_, answer) = post(
        &format!("{c}/v1/heartbeat"),
        Auth::Bearer(&token),
        &heartbeat_body("w1"),
    )
    .await;
    assert_eq!(answer["status"], "ONLINE");
    let records = hub.wait_audit(Duration::from_secs(10), |r| {
        count_events(r, EventKind::NodeRecovered) == 1 && count_events(r, EventKind::NodeDead) == 2
    });
    // Each transition is reported once per node, however many sweeps ran.
    for id in ["w1", "host-a"] {
        for kind in [EventKind::NodeStale, EventKind::NodeDead] {
            let n: u64 = records
                .iter()
                .filter(|r| r.event == kind && r.node_id.as_deref() == Some(id))
                .map(|r| r.count)
                .sum();
            assert_eq!(n, 1, "{kind} for {id}");
        }
    }
    let recovered = records
        .iter()
        .find(|r| r.event == EventKind::NodeRecovered)
        .unwrap();
    assert_eq!(recovered.detail["from"], "DEAD");

    let (status, body) = get(&format!("{c}/v1/nodes/nobody"), Auth::Bearer(&token)).await;
    assert_error(status, &body, 404, "NOT_FOUND");
    let (status, body) = get(&format!("{c}/v1/nodes?status=ASLEEP"), Auth::Bearer(&token)).await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    let (status, body) = get(&format!("{c}/v1/nodes?role=king"), Auth::Bearer(&token)).await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    let (status, body) = get(&format!("{c}/v1/nodes?colour=red"), Auth::Bearer(&token)).await;
    let (message, _) = assert_error(status, &body, 400, "INVALID_REQUEST");
    assert!(message.contains("colour"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_is_coalesced_and_rewritten_after_the_file_is_deleted() {
    let hub = hub().start();
    let token = hub.token();
    let c = &hub.control_url;
    let file = hub.home.join("nodes_registry.json");
    let snapshot_has = |ids: &[&str]| {
        let text = std::fs::read_to_string(&file).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        let nodes = v["nodes"].as_array()?;
        ids.iter()
            .all(|id| nodes.iter().any(|n| n["id"] == *id))
            .then_some(())
    };

    for i in 0..300 {
        post(
            &format!("{c}/v1/heartbeat"),
            Auth::Bearer(&token),
            &heartbeat_body(&format!("n{}", i % 3)),
        )
        .await;
    }
    wait_for(Duration::from_secs(10), || {
        snapshot_has(&["n0", "n1", "n2"])
    })
    .expect("snapshot written");
    // The counter is bumped right after the file's rename, so it may trail the file briefly.
    let mut writes = 0;
    for _ in 0..100 {
        let (_, metrics) = get(&format!("{c}/metrics?format=json"), Auth::Bearer(&token)).await;
        writes = metrics["registry.snapshots"].as_u64().unwrap();
        if writes > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        (1..30).contains(&writes),
        "300 heartbeats must not cost 300 writes: {writes}"
    );

    // Deleted while running and nothing changes afterwards: the hub notices the missing file
    // on its own and writes it again.
    std::fs::remove_file(&file).unwrap();
    wait_for(Duration::from_secs(10), || {
        snapshot_has(&["n0", "n1", "n2"])
    })
    .expect("snapshot rewritten without any new heartbeat");
    // Deleted again, then a new node: both the old entries and the new one are in it.
    std::fs::remove_file(&file).unwrap();
    post(
        &format!("{c}/v1/heartbeat"),
        Auth::Bearer(&token),
        &heartbeat_body("late"),
    )
    .await;
    wait_for(Duration::from_secs(10), || {
        snapshot_has(&["n0", "n1", "n2", "late"])
    })
    .expect("snapshot rewritten");
    // No temp files are left next to it.
    let stray: Vec<_> = std::fs::read_dir(&hub.home)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_registry_is_moved_aside_and_nodes_repopulate() {
    let home = tempfile_home();
    std::fs::write(
        home.path().join("nodes_registry.json"),
        b"{\"format\":1,\"nodes\":[{trunc",
    )
    .unwrap();
    let hub = hub().home(home.path()).start();
    let token = hub.token();
    let records = hub.wait_audit(Duration::from_secs(5), |r| {
        count_events(r, EventKind::RegistryCorrupt) == 1
    });
    let corrupt = records
        .iter()
        .find(|r| r.event == EventKind::RegistryCorrupt)
        .unwrap();
    assert_eq!(corrupt.severity, sheratan_proto::Severity::Critical);
    let aside: Vec<_> = std::fs::read_dir(home.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("nodes_registry.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(
        std::fs::read(aside[0].path()).unwrap(),
        b"{\"format\":1,\"nodes\":[{trunc"
    );
    assert!(hub.stderr().contains("REGISTRY_CORRUPT"));

    let (_, list) = get(
        &format!("{}/v1/nodes", hub.control_url),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(list["nodes"], json!([]));
    post(
        &format!("{}/v1/heartbeat", hub.control_url),
        Auth::Bearer(&token),
        &heartbeat_body("back"),
    )
    .await;
    let (_, list) = get(
        &format!("{}/v1/nodes", hub.control_url),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(list["nodes"][0]["node_id"], "back");
}

fn tempfile_home() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sheratan-test-")
        .tempdir()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_registry_and_grants_one_ttl_of_grace() {
    let mut hub = hub()
        .env("SHERATAN_NODE_TTL_SEC", "5")
        .env("SHERATAN_NODE_DEAD_SEC", "30")
        .start();
    let token = hub.token();
    post(
        &format!("{}/v1/heartbeat", hub.control_url),
        Auth::Bearer(&token),
        &heartbeat_body("g1"),
    )
    .await;
    let before = node(&hub.control_url, &token, "g1").await;
    assert_eq!(hub.terminate().code(), Some(0));

    // Down for longer than the TTL: without the grace the node would come back STALE.
    tokio::time::sleep(Duration::from_secs(6)).await;
    hub.restart();
    let after = node(&hub.control_url, &token, "g1").await;
    assert_eq!(after["status"], "ONLINE", "{after}");
    assert_eq!(after["first_seen"], before["first_seen"]);
    assert_eq!(after["last_seen"], before["last_seen"]);
    // The grace lasts one TTL, then the silent node turns STALE as usual.
    wait_status(&hub.control_url, &token, "g1", "STALE").await;
    // The sweeper reports the transition within a second of the view showing it.
    let records = hub.wait_audit(Duration::from_secs(5), |r| {
        count_events(r, EventKind::NodeStale) >= 1
    });
    assert_eq!(count_events(&records, EventKind::NodeStale), 1);

    // A hub killed with SIGKILL loses at most the last second of heartbeats.
    post(
        &format!("{}/v1/heartbeat", hub.control_url),
        Auth::Bearer(&token),
        &heartbeat_body("k1"),
    )
    .await;
    let file = hub.home.join("nodes_registry.json");
    wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&file)
            .ok()
            .filter(|t| t.contains("\"k1\""))
            .map(|_| ())
    })
    .expect("k1 reaches the snapshot");
    hub.kill9();
    hub.restart();
    let k1 = node(&hub.control_url, &token, "k1").await;
    assert_eq!(k1["status"], "ONLINE");

    // Missing at start: the hub starts empty and nodes repopulate it.
    hub.terminate();
    std::fs::remove_file(&file).unwrap();
    hub.restart();
    let (_, list) = get(
        &format!("{}/v1/nodes", hub.control_url),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(list["nodes"], json!([]));
    post(
        &format!("{}/v1/heartbeat", hub.control_url),
        Auth::Bearer(&token),
        &heartbeat_body("k1"),
    )
    .await;
    assert_eq!(
        node(&hub.control_url, &token, "k1").await["status"],
        "ONLINE"
    );
}

fn attested(build: &str, hash: &str) -> String {
    json!({"node_id": "a1", "role": "worker", "capabilities": ["echo"], "build_id": build,
           "capability_hash": hash, "runtime": {"os": "linux"}})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attestation_reports_drift_and_flip_flops_without_blocking() {
    // A one-second fold window, so folded repeats of identical changes reach the file soon.
    let hub = hub().env("SHERATAN_AUDIT_FOLD_WINDOW_SEC", "1").start();
    let token = hub.token();
    let hb = format!("{}/v1/heartbeat", hub.control_url);
    let beat = |body: String| {
        let hb = hb.clone();
        let token = token.clone();
        async move {
            let (status, answer) = post(&hb, Auth::Bearer(&token), &body).await;
            assert_eq!(status, StatusCode::OK, "attestation never blocks: {answer}");
            answer
        }
    };

    assert_eq!(beat(attested("b1", "h1")).await["attestation"], "OK");
    // A new build: DRIFT, reported once however often the node repeats it.
    for _ in 0..3 {
        let answer = beat(attested("b2", "h1")).await;
        assert_eq!(answer["attestation"], "DRIFT");
        assert_eq!(answer["health"], "YELLOW");
    }
    let records = hub.wait_audit(Duration::from_secs(5), |r| {
        count_events(r, EventKind::AttestationDrift) >= 1
    });
    assert_eq!(count_events(&records, EventKind::AttestationFirstSeen), 1);
    assert_eq!(count_events(&records, EventKind::AttestationDrift), 1);
    let drift = records
        .iter()
        .find(|r| r.event == EventKind::AttestationDrift)
        .unwrap();
    assert_eq!(drift.detail["changed"], json!(["build_id"]));
    assert_eq!(drift.detail["from"]["build_id"], "b1");
    assert_eq!(drift.detail["to"]["build_id"], "b2");
    let view = node(&hub.control_url, &token, "a1").await;
    assert_eq!(view["first_seen"]["build_id"], "b1");
    assert_eq!(view["build_id"], "b2");

    // The capability hash flip-flops: three changes within the window raise SPOOF_SUSPECT.
    beat(attested("b2", "h2")).await;
    beat(attested("b2", "h1")).await;
    let answer = beat(attested("b2", "h2")).await;
    assert_eq!(answer["attestation"], "SPOOF_SUSPECT");
    beat(attested("b2", "h1")).await;
    // Five changes away from the baseline, each reported; the repeat of an identical change
    // (b2/h2 -> b2/h1 twice) folds into its first line's window and arrives as a count.
    let records = hub.wait_audit(Duration::from_secs(10), |r| {
        count_events(r, EventKind::AttestationSpoofSuspect) == 1
            && count_events(r, EventKind::AttestationDrift) == 5
    });
    let spoof = records
        .iter()
        .find(|r| r.event == EventKind::AttestationSpoofSuspect)
        .unwrap();
    assert_eq!(spoof.node_id.as_deref(), Some("a1"));
    assert_eq!(spoof.detail["capability_hash_changes"], 3);

    // The operator accepts what the node reports now as its new baseline.
    let accept = format!("{}/admin/nodes/a1/attestation/accept", hub.data_url);
    let (status, view) = post(&accept, Auth::Bearer(&token), "").await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["attestation"], "OK");
    assert_eq!(view["health"], "GREEN");
    assert_eq!(view["first_seen"]["build_id"], "b2");
    assert_eq!(beat(attested("b2", "h1")).await["attestation"], "OK");
    let (status, body) = post(
        &format!("{}/admin/nodes/ghost/attestation/accept", hub.data_url),
        Auth::Bearer(&token),
        "",
    )
    .await;
    assert_error(status, &body, 404, "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_removes_a_node_with_the_cli_and_the_removal_survives_a_restart() {
    let mut hub = hub().start();
    let token = hub.token();
    post(
        &format!("{}/v1/heartbeat", hub.control_url),
        Auth::Bearer(&token),
        &heartbeat_body("w1"),
    )
    .await;
    let (code, out, err) = cli(&hub, &["nodes", "rm", "w1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("removed w1 (ONLINE"), "{out}");
    let (code, _, err) = cli(&hub, &["nodes", "rm", "w1"]);
    assert_eq!(code, 1);
    assert!(err.contains("NOT_FOUND"), "{err}");
    let (_, list, _) = cli(&hub, &["nodes", "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&list).unwrap()["nodes"],
        json!([])
    );
    let records = hub.wait_audit(Duration::from_secs(5), |r| {
        count_events(r, EventKind::NodeRemoved) >= 1
    });
    let removed = records
        .iter()
        .find(|r| r.event == EventKind::NodeRemoved)
        .unwrap();
    assert_eq!(removed.node_id.as_deref(), Some("w1"));
    // The snapshot forgets it: a restart does not bring it back.
    hub.terminate();
    hub.restart();
    let (status, _) = get(
        &format!("{}/v1/nodes/w1", hub.control_url),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
