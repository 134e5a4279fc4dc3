//! Auth on both planes, token sources, metrics and bundles (docs/API.md, "Wire rules"; docs/API.md, "Control plane").

use std::os::unix::fs::PermissionsExt;

use reqwest::{Method, StatusCode};
use sheratan_proto::EventKind;
use sheratan_testkit::count_events;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_health_is_public_and_every_other_route_needs_the_token() {
    let hub = hub().env("SHERATAN_AUDIT_FOLD_WINDOW_SEC", "1").start();
    let token = hub.token();
    let c = &hub.control_url;
    let d = &hub.data_url;

    let (status, body) = get(&format!("{c}/health"), Auth::None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["plane"], "control");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));

    let protected = [
        (Method::GET, format!("{c}/v1/nodes")),
        (Method::GET, format!("{c}/v1/nodes/w1")),
        (Method::POST, format!("{c}/v1/heartbeat")),
        (Method::GET, format!("{c}/v1/bundles")),
        (Method::GET, format!("{c}/v1/bundles/b1")),
        (Method::GET, format!("{c}/metrics")),
        (Method::GET, format!("{c}/metrics?format=json")),
        (Method::GET, format!("{c}/no/such/route")),
        (Method::GET, format!("{d}/metrics")),
        (Method::GET, format!("{d}/admin/registry")),
        (Method::POST, format!("{d}/admin/token-rotation")),
        (Method::PUT, format!("{d}/admin/bundles/b1")),
        (
            Method::POST,
            format!("{d}/admin/nodes/w1/attestation/accept"),
        ),
        (Method::DELETE, format!("{d}/admin/nodes/w1")),
        (Method::GET, format!("{d}/no/such/route")),
    ];
    for (method, url) in &protected {
        let (status, body) = call(method.clone(), url, Auth::None, Some("{}")).await;
        let (message, hint) = assert_error(status, &body, 403, "AUTH_FAIL");
        assert!(message.contains("no token"), "{url}: {message}");
        assert!(hint.contains("SHERATAN_HUB_TOKEN"), "{url}: {hint}");

        let (status, body) =
            call(method.clone(), url, Auth::Bearer("wrong-token"), Some("{}")).await;
        let (message, _) = assert_error(status, &body, 403, "AUTH_FAIL");
        assert_eq!(
            message,
            "the token does not match the hub's SHERATAN_HUB_TOKEN"
        );

        for auth in [Auth::Bearer(&token), Auth::Header(&token)] {
            let (status, body) = call(method.clone(), url, auth, Some("{}")).await;
            assert_ne!(
                status,
                StatusCode::FORBIDDEN,
                "{method} {url} with the token: {body}"
            );
        }
    }
    // The scheme is case-insensitive, as RFC 7235 says.
    let response = http()
        .get(format!("{c}/v1/nodes"))
        .header("authorization", format!("bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let records = hub.wait_audit(std::time::Duration::from_secs(10), |r| {
        count_events(r, EventKind::AuthFail) >= 2 * protected.len() as u64
    });
    let fail = records
        .iter()
        .find(|r| r.event == EventKind::AuthFail)
        .unwrap();
    assert_eq!(fail.remote_addr.as_deref(), Some("127.0.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_token_is_private_and_stable_across_restarts() {
    let mut hub = hub().start();
    let path = hub.home.join("hub_token");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The job store holds payloads and results: private too, WAL included.
    for file in ["sheratan.db", "sheratan.db-wal"] {
        let mode = std::fs::metadata(hub.home.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    let token = hub.token();
    assert_eq!(token.len(), 64, "32 random bytes, hex");
    assert!(hub.stdout().contains(&format!(
        "token: {}",
        std::fs::canonicalize(&path).unwrap().display()
    )));
    hub.restart();
    assert_eq!(hub.token(), token);
    let (status, _) = get(
        &format!("{}/v1/nodes", hub.control_url),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_well_known_token_works_when_allowed_but_is_reported_as_weak() {
    // Without SHERATAN_ALLOW_WEAK_TOKEN=1 the hub refuses to start (attacks.rs).
    let hub = hub()
        .env("SHERATAN_HUB_TOKEN", "shared-secret")
        .env("SHERATAN_ALLOW_WEAK_TOKEN", "1")
        .start();
    let (status, _) = get(
        &format!("{}/v1/nodes", hub.control_url),
        Auth::Bearer("shared-secret"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let records = hub.wait_audit(std::time::Duration::from_secs(5), |r| {
        count_events(r, EventKind::WeakToken) == 1
    });
    let weak = records
        .iter()
        .find(|r| r.event == EventKind::WeakToken)
        .unwrap();
    assert_eq!(weak.detail["which"], "current");
    assert!(hub.stderr().contains("WEAK_TOKEN"));
    assert!(hub.stdout().contains("token: from SHERATAN_HUB_TOKEN"));
    assert!(
        !hub.home.join("hub_token").exists(),
        "no token file when the token is set"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_auth_warns_loudly_and_lets_requests_through() {
    let hub = hub().env("SHERATAN_HUB_TOKEN_REQUIRED", "0").start();
    assert!(
        hub.stderr().contains("authentication is DISABLED"),
        "{}",
        hub.stderr()
    );
    assert!(hub.stdout().contains("token: NONE"));
    let (status, _) = get(&format!("{}/v1/nodes", hub.control_url), Auth::None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, metrics) = get(
        &format!("{}/metrics?format=json", hub.control_url),
        Auth::None,
    )
    .await;
    assert_eq!(metrics["auth.required"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_speak_prometheus_text_and_the_seeds_json_names() {
    let hub = hub().start();
    let token = hub.token();
    let c = &hub.control_url;
    post(
        &format!("{c}/v1/heartbeat"),
        Auth::Bearer(&token),
        &heartbeat_body("m1"),
    )
    .await;
    get(&format!("{c}/v1/nodes"), Auth::Bearer("bad")).await;

    let response = http()
        .get(format!("{c}/metrics"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for line in [
        "# TYPE sheratan_nodes gauge",
        "sheratan_nodes{status=\"online\"} 1",
        "sheratan_nodes{status=\"stale\"} 0",
        "sheratan_auth_failures_1m{reason=\"invalid\"} 1",
        "sheratan_auth_failures_1m{reason=\"old_token\"} 0",
        "sheratan_security_events_total{event=\"AUTH_FAIL\"} 1",
        "sheratan_heartbeats_total 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }

    let (status, json) = get(&format!("{c}/metrics?format=json"), Auth::Bearer(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["auth_failure.invalid_1m"], 1);
    assert_eq!(json["auth_failure.old_token_1m"], 0);
    assert_eq!(json["nodes.online"], 1);
    assert_eq!(json["events.auth_fail"], 1);

    let (status, body) = get(&format!("{c}/metrics?format=xml"), Auth::Bearer(&token)).await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_are_published_on_the_admin_path_and_served_with_etags() {
    let hub = hub().start();
    let token = hub.token();
    let (c, d) = (&hub.control_url, &hub.data_url);
    let client = http();

    let put = |name: &str, bytes: &'static [u8]| {
        client
            .put(format!("{d}/admin/bundles/{name}"))
            .bearer_auth(&token)
            .body(bytes)
            .send()
    };
    let response = put("tool.sh", b"#!/bin/sh\necho v1\n").await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let info: serde_json::Value = response.json().await.unwrap();
    let sha_v1 = info["sha256"].as_str().unwrap().to_owned();
    assert_eq!(info["size"], 18);

    let (status, list) = get(&format!("{c}/v1/bundles"), Auth::Bearer(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["bundles"][0]["name"], "tool.sh");
    assert_eq!(list["bundles"][0]["sha256"], sha_v1.as_str());

    let hub_client = sheratan_client::ControlClient::new(c, Some(token.clone())).unwrap();
    match hub_client.bundle("tool.sh", None).await.unwrap() {
        sheratan_client::BundleFetch::Body { sha256, bytes } => {
            assert_eq!(sha256, sha_v1);
            assert_eq!(&bytes[..], b"#!/bin/sh\necho v1\n");
        }
        other => panic!("expected the body, got {other:?}"),
    }
    assert!(matches!(
        hub_client.bundle("tool.sh", Some(&sha_v1)).await.unwrap(),
        sheratan_client::BundleFetch::NotModified
    ));

    // A new version changes the ETag; the old tag no longer matches.
    put("tool.sh", b"#!/bin/sh\necho v2\n").await.unwrap();
    match hub_client.bundle("tool.sh", Some(&sha_v1)).await.unwrap() {
        sheratan_client::BundleFetch::Body { sha256, .. } => assert_ne!(sha256, sha_v1),
        other => panic!("expected the new body, got {other:?}"),
    }

    let (status, body) = get(&format!("{c}/v1/bundles/nope"), Auth::Bearer(&token)).await;
    assert_error(status, &body, 404, "NOT_FOUND");
    let (status, body) = get(&format!("{c}/v1/bundles/.hidden"), Auth::Bearer(&token)).await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    let response = put("bad%20name", b"x").await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

/// Refusals beyond `SHERATAN_REFUSALS_PER_SEC` (burst of as many) wait for their answer, on
/// both planes and whatever the refusal; valid requests never go through the pacer. A refused
/// token keeps its connection while pacing is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_beyond_the_rate_wait_and_valid_requests_do_not() {
    use std::time::{Duration, Instant};
    let hub = hub().env("SHERATAN_REFUSALS_PER_SEC", "20").start();
    let (c, d) = (hub.control_url.clone(), hub.data_url.clone());
    let token = hub.token();
    let paced = || async {
        let metrics = sheratan_client::ControlClient::new(&hub.control_url, Some(hub.token()))
            .unwrap()
            .metrics_json()
            .await
            .unwrap();
        metrics["refusals.paced"].as_f64().unwrap()
    };
    let client = http();
    // One refusal of each kind in turn; returns its status and how long its answer took.
    let refuse = |i: usize| {
        let (client, c, d, token) = (client.clone(), c.clone(), d.clone(), token.clone());
        async move {
            let request = match i % 4 {
                0 => client.get(format!("{c}/v1/nodes")).bearer_auth("wrong"),
                1 => client
                    .post(format!("{d}/v1/jobs"))
                    .bearer_auth(&token)
                    .body("{"),
                2 => client.delete(format!("{d}/v1/leases")).bearer_auth(&token),
                _ => client.get(format!("{d}/v1/nodes")).bearer_auth(&token),
            };
            let sent = Instant::now();
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            assert!([403, 400, 405, 421].contains(&status), "{i}: {status}");
            if status == 403 {
                assert!(response.headers().get("connection").is_none());
            }
            sent.elapsed()
        }
    };

    // The burst: 20 at once, none waits.
    let started = Instant::now();
    let at_once = |range: std::ops::Range<usize>| {
        let tasks: Vec<_> = range.map(|i| tokio::spawn(refuse(i))).collect();
        async move {
            let mut waits = Vec::new();
            for task in tasks {
                waits.push(task.await.unwrap());
            }
            waits
        }
    };
    at_once(0..20).await;
    assert_eq!(paced().await, 0.0, "the burst passes without waiting");

    // 20 more at once: their slots are 50 ms apart, so the last is answered a second after
    // the first refusal at the earliest; the first of them hardly waits.
    let waits = at_once(20..40).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(950),
        "40 refusals at 20/s (burst 20) take a second: took {elapsed:?}"
    );
    let shortest = waits.iter().min().unwrap();
    assert!(
        *shortest < Duration::from_millis(900),
        "refusals are spaced, not all held for the longest wait: {waits:?}"
    );
    let before = paced().await;
    assert!(before >= 1.0, "{before} refusals waited");

    for _ in 0..50 {
        let good = client
            .get(format!("{c}/v1/nodes"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(good.status(), StatusCode::OK);
    }
    assert_eq!(paced().await, before, "valid requests are not paced");
}

/// With pacing off (`SHERATAN_REFUSALS_PER_SEC=0`) nothing waits, and a refused token ends its
/// connection instead, so each further guess costs its sender a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pacing_off_a_refused_token_closes_its_connection() {
    let hub = hub().env("SHERATAN_REFUSALS_PER_SEC", "0").start();
    let c = &hub.control_url;
    let client = http();
    for _ in 0..3 {
        let bad = client
            .get(format!("{c}/v1/nodes"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            bad.headers().get("connection").map(|v| v.as_bytes()),
            Some(&b"close"[..])
        );
    }
    let metrics = sheratan_client::ControlClient::new(c, Some(hub.token()))
        .unwrap()
        .metrics_json()
        .await
        .unwrap();
    assert_eq!(metrics["refusals.paced"], 0.0);
}

/// A home the hub creates is readable by its owner only.
#[test]
fn a_home_the_hub_creates_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("fresh").join("home");
    let mut child = hub_command(&home)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let created = sheratan_testkit::wait_for(std::time::Duration::from_secs(20), || {
        home.join("hub_token").exists().then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        created.is_some(),
        "the hub did not start in {}",
        home.display()
    );
    let mode = std::fs::metadata(&home).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}
