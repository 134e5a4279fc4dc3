//! Dual-token rotation (docs/API.md, "Control plane"): both tokens before the deadline, a timer that finalizes
//! while the hub runs, the old token refused and counted afterwards, and state that survives
//! restarts.

use std::time::Duration;

use reqwest::StatusCode;
use sheratan_proto::EventKind;
use sheratan_testkit::count_events;
use time::OffsetDateTime;

use crate::common::*;

const A: &str = "token-a-0123456789abcdef";
const B: &str = "token-b-0123456789abcdef";

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_finalizes_on_a_timer_while_the_hub_runs() {
    let until = OffsetDateTime::now_utc() + time::Duration::seconds(4);
    let mut hub = hub()
        .env("SHERATAN_HUB_TOKEN", A)
        .env("SHERATAN_HUB_TOKEN_NEXT", B)
        .env("SHERATAN_HUB_TOKEN_ROTATION_UNTIL", rfc3339(until))
        .start();
    let nodes = format!("{}/v1/nodes", hub.control_url);

    // Before the deadline both tokens work; the next token is noticed once per source.
    assert_eq!(get(&nodes, Auth::Bearer(A)).await.0, StatusCode::OK);
    for _ in 0..5 {
        assert_eq!(get(&nodes, Auth::Header(B)).await.0, StatusCode::OK);
    }
    let (_, metrics) = get(
        &format!("{}/metrics?format=json", hub.control_url),
        Auth::Bearer(A),
    )
    .await;
    assert_eq!(metrics["token.rotation_active"], 1);

    // No request is sent meanwhile: only the timer can finalize the rotation.
    let records = hub.wait_audit(Duration::from_secs(20), |r| {
        count_events(r, EventKind::TokenRotationFinalized) == 1
    });
    assert_eq!(count_events(&records, EventKind::TokenAcceptedNext), 1);
    assert_eq!(count_events(&records, EventKind::TokenRetired), 1);
    assert!(OffsetDateTime::now_utc() >= until);

    let (status, body) = get(&nodes, Auth::Bearer(A)).await;
    let (message, hint) = assert_error(status, &body, 403, "AUTH_FAIL");
    assert!(message.contains("retired"), "{message}");
    assert!(hint.contains("new token"), "{hint}");
    assert_eq!(get(&nodes, Auth::Bearer(B)).await.0, StatusCode::OK);
    let (_, metrics) = get(
        &format!("{}/metrics?format=json", hub.control_url),
        Auth::Bearer(B),
    )
    .await;
    assert_eq!(metrics["auth_failure.old_token_1m"], 1);
    assert_eq!(metrics["auth_failure.invalid_1m"], 0);
    assert_eq!(metrics["token.rotation_active"], 0);

    // A restart with the same (now stale) environment keeps the outcome and emits nothing new.
    hub.restart();
    let nodes = format!("{}/v1/nodes", hub.control_url);
    assert_eq!(get(&nodes, Auth::Bearer(A)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(get(&nodes, Auth::Bearer(B)).await.0, StatusCode::OK);
    // And so does one where the operator has moved the environment to the new token.
    hub.set_env("SHERATAN_HUB_TOKEN", B);
    hub.remove_env("SHERATAN_HUB_TOKEN_NEXT");
    hub.remove_env("SHERATAN_HUB_TOKEN_ROTATION_UNTIL");
    hub.restart();
    let nodes = format!("{}/v1/nodes", hub.control_url);
    let (status, body) = get(&nodes, Auth::Bearer(A)).await;
    let (message, _) = assert_error(status, &body, 403, "AUTH_FAIL");
    assert!(message.contains("retired"), "{message}");
    assert_eq!(get(&nodes, Auth::Bearer(B)).await.0, StatusCode::OK);
    let records = hub.audit_records();
    assert_eq!(count_events(&records, EventKind::TokenRotationFinalized), 1);
    assert_eq!(count_events(&records, EventKind::TokenRetired), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_started_on_the_admin_path_survives_restarts_and_updates_the_token_file() {
    let mut hub = hub().start();
    let old = hub.token();
    let rotation = format!("{}/admin/token-rotation", hub.data_url);

    // Validation first: the deadline must be in the future, the token new and non-empty.
    let past = rfc3339(OffsetDateTime::now_utc() - time::Duration::hours(1));
    let (status, body) = post(
        &rotation,
        Auth::Bearer(&old),
        &format!(r#"{{"next_token":"{B}","until":"{past}"}}"#),
    )
    .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    let (status, body) = post(
        &rotation,
        Auth::Bearer(&old),
        &format!(r#"{{"next_token":"{old}","until":"2099-01-01T00:00:00Z"}}"#),
    )
    .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    // A token that would not survive a header or the token file (spaces, control characters).
    for bad in ["with space-0123456789", "   ", "tab\there-0123456789"] {
        let body =
            serde_json::json!({"next_token": bad, "until": "2099-01-01T00:00:00Z"}).to_string();
        let (status, answer) = post(&rotation, Auth::Bearer(&old), &body).await;
        let (message, _) = assert_error(status, &answer, 400, "INVALID_REQUEST");
        assert!(
            message.contains("visible ASCII") || message.contains("empty"),
            "{message}"
        );
    }
    let (status, body) = post(
        &rotation,
        Auth::Bearer(&old),
        r#"{"until":"2099-01-01T00:00:00Z"}"#,
    )
    .await;
    let (message, _) = assert_error(status, &body, 400, "INVALID_REQUEST");
    assert!(message.contains("next_token"), "{message}");
    let (status, body) = post(
        &rotation,
        Auth::Bearer(&old),
        &format!(r#"{{"next_token":"{B}","until":"soon"}}"#),
    )
    .await;
    let (message, _) = assert_error(status, &body, 400, "INVALID_REQUEST");
    assert!(message.contains("until"), "{message}");

    let later = rfc3339(OffsetDateTime::now_utc() + time::Duration::hours(1));
    let (status, body) = post(
        &rotation,
        Auth::Bearer(&old),
        &format!(r#"{{"next_token":"{B}","until":"{later}"}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["active"], true);

    hub.restart();
    let nodes = format!("{}/v1/nodes", hub.control_url);
    assert_eq!(get(&nodes, Auth::Bearer(&old)).await.0, StatusCode::OK);
    assert_eq!(get(&nodes, Auth::Bearer(B)).await.0, StatusCode::OK);

    // Replace it with a rotation that ends in two seconds; the token file follows the rotation.
    let soon = rfc3339(OffsetDateTime::now_utc() + time::Duration::seconds(2));
    let rotation = format!("{}/admin/token-rotation", hub.data_url);
    let (status, body) = post(
        &rotation,
        Auth::Bearer(&old),
        &format!(r#"{{"next_token":"{B}","until":"{soon}"}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    hub.wait_audit(Duration::from_secs(20), |r| {
        count_events(r, EventKind::TokenRotationFinalized) == 1
    });
    assert_eq!(hub.token(), B, "hub_token now holds the new token");

    hub.restart();
    let nodes = format!("{}/v1/nodes", hub.control_url);
    assert_eq!(get(&nodes, Auth::Bearer(B)).await.0, StatusCode::OK);
    let (status, body) = get(&nodes, Auth::Bearer(&old)).await;
    let (message, _) = assert_error(status, &body, 403, "AUTH_FAIL");
    assert!(message.contains("retired"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_already_past_at_start_finalizes_at_once() {
    let hub = hub()
        .env("SHERATAN_HUB_TOKEN", A)
        .env("SHERATAN_HUB_TOKEN_NEXT", B)
        .env("SHERATAN_HUB_TOKEN_ROTATION_UNTIL", "1000000000")
        .start();
    let nodes = format!("{}/v1/nodes", hub.control_url);
    assert_eq!(get(&nodes, Auth::Bearer(B)).await.0, StatusCode::OK);
    assert_eq!(get(&nodes, Auth::Bearer(A)).await.0, StatusCode::FORBIDDEN);
    hub.wait_audit(Duration::from_secs(5), |r| {
        count_events(r, EventKind::TokenRotationFinalized) == 1
    });
}

/// `sheratan up` finalizes a rotation without a restart for everything it runs: from the
/// rotation's start its worker, hosts, broker and core send the next token (and core accepts
/// both); after the deadline they use only the new one, and jobs keep running through them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_components_up_runs_follow_a_rotation() {
    let hub = hub()
        .up()
        .env("SHERATAN_HUB_TOKEN", A)
        .env("SHERATAN_AUDIT_FOLD_WINDOW_SEC", "0.1")
        .start();
    let (d, core) = (hub.data_url.clone(), hub.urls["core"].clone());
    let until = OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let (status, body) = post(
        &format!("{d}/admin/token-rotation"),
        Auth::Bearer(A),
        &serde_json::json!({"next_token": B, "until": rfc3339(until)}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // During the rotation core, the broker and the relay accept both tokens (once `up` looked:
    // every 250 ms). The hosts and the worker run on node credentials of their own, which a
    // rotation of the mesh token leaves alone: a host takes neither mesh token, only its own
    // secret (and the broker's per-job grants).
    let guarded = [
        format!("{core}/api/jobs"),
        format!("{}/v1/auctions", hub.urls["broker"]),
        format!("{}/v1/sessions", hub.urls["relay"]),
    ];
    let host_metrics = format!("{}/metrics", hub.urls["host-a"]);
    let host_secret = std::fs::read_to_string(hub.home.join("credentials/host-a")).unwrap();
    assert!(host_secret.starts_with("shtc_"), "{host_secret}");
    for mesh in [A, B] {
        assert_eq!(
            get(&host_metrics, Auth::Bearer(mesh)).await.0,
            StatusCode::FORBIDDEN
        );
    }
    assert_eq!(
        get(&host_metrics, Auth::Bearer(&host_secret)).await.0,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    for url in &guarded {
        assert_eq!(get(url, Auth::Bearer(A)).await.0, StatusCode::OK, "{url}");
        assert_eq!(get(url, Auth::Bearer(B)).await.0, StatusCode::OK, "{url}");
    }

    hub.wait_audit(Duration::from_secs(20), |r| {
        count_events(r, EventKind::TokenRotationFinalized) == 1
    });
    // Let the neighbours notice: those on the mesh token look every 250 ms, those on
    // credentials of their own believe the hub's word on a token for 2 s.
    for url in &guarded {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while get(url, Auth::Bearer(A)).await.0 != StatusCode::FORBIDDEN {
            assert!(
                std::time::Instant::now() < deadline,
                "{url} still takes the retired token"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(get(url, Auth::Bearer(B)).await.0, StatusCode::OK, "{url}");
    }
    // Those probes with the retired token were asked of the hub by the members on credentials
    // (an AUTH_FAIL each); from here on, nothing may use it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let probed = count_events(&hub.audit_records(), EventKind::AuthFail);

    // A pulled job (the worker) and an auctioned one (core → broker → hosts) both finish.
    let (status, pulled) = post(
        &format!("{d}/v1/jobs"),
        Auth::Bearer(B),
        r#"{"kind":"echo","payload":{"after":"rotation"}}"#,
    )
    .await;
    assert_eq!(status.as_u16(), 202, "{pulled}");
    let (status, auctioned) = post(
        &format!("{core}/api/jobs"),
        Auth::Bearer(B),
        r#"{"kind":"echo","dispatch":"auction","payload":{"after":"rotation"}}"#,
    )
    .await;
    assert_eq!(status.as_u16(), 202, "{auctioned}");
    for job in [&pulled, &auctioned] {
        let id = job["job_id"].as_str().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (_, view) = get(&format!("{d}/v1/jobs/{id}"), Auth::Bearer(B)).await;
            if view["status"] == "completed" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job {id} did not complete after the rotation: {view}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let old_token_failures = count_events(&hub.audit_records(), EventKind::AuthFail);
    assert_eq!(
        old_token_failures, probed,
        "nothing beside the hub used the retired token"
    );
}
