//! Port isolation (docs/API.md, "Wire rules"): routes of the other plane get 421 with a hint naming the right
//! port, before auth; the data plane's `/health` and admin path answer loopback peers only.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use sheratan_proto::EventKind;
use sheratan_testkit::{count_events, non_loopback_ipv4};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_of_the_other_plane_get_421_naming_the_right_port() {
    let hub = hub().env("SHERATAN_AUDIT_FOLD_WINDOW_SEC", "1").start();
    let token = hub.token();
    let control_port = hub.control_url.rsplit(':').next().unwrap().to_owned();
    let data_port = hub.data_url.rsplit(':').next().unwrap().to_owned();

    let on_control = [
        (Method::POST, "/v1/jobs"),
        (Method::GET, "/v1/jobs/0190e3a4-0000-7000-8000-000000000000"),
        (Method::POST, "/v1/jobs/batch"),
        (Method::POST, "/v1/leases"),
        (Method::POST, "/v1/results"),
        (Method::GET, "/admin/registry"),
        (Method::PUT, "/admin/bundles/x"),
    ];
    for (method, path) in on_control {
        // Without a token too: a wrong port is a configuration error and route names are public.
        for auth in [Auth::None, Auth::Bearer(&token)] {
            let (status, body) = call(
                method.clone(),
                &format!("{}{path}", hub.control_url),
                auth,
                Some("{}"),
            )
            .await;
            let (_, hint) = assert_error(status, &body, 421, "PORT_MISMATCH");
            assert!(hint.contains(&data_port), "{path}: {hint}");
            assert!(hint.contains("SHERATAN_DATA_URL"), "{hint}");
        }
    }
    let on_data = [
        (Method::POST, "/v1/heartbeat"),
        (Method::GET, "/v1/nodes"),
        (Method::GET, "/v1/nodes/w1"),
        (Method::GET, "/v1/bundles"),
        (Method::GET, "/v1/bundles/b"),
    ];
    for (method, path) in on_data {
        let (status, body) = call(
            method.clone(),
            &format!("{}{path}", hub.data_url),
            Auth::None,
            Some("{}"),
        )
        .await;
        let (_, hint) = assert_error(status, &body, 421, "PORT_MISMATCH");
        assert!(hint.contains(&control_port), "{path}: {hint}");
        assert!(hint.contains("SHERATAN_CONTROL_URL"), "{hint}");
    }
    // Prefixes match whole segments only.
    let (status, _) = get(
        &format!("{}/v1/jobsx", hub.control_url),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let records = hub.wait_audit(Duration::from_secs(10), |r| {
        count_events(r, EventKind::PortMismatch) >= 19
    });
    assert_eq!(count_events(&records, EventKind::PortMismatch), 19);
    let data_side = records
        .iter()
        .find(|r| r.event == EventKind::PortMismatch && r.plane == sheratan_proto::Plane::Data)
        .unwrap();
    assert_eq!(data_side.detail["right_plane"], "control");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_health_and_admin_answer_loopback_peers_only() {
    let Some(ip) = non_loopback_ipv4() else {
        panic!("this test needs a non-loopback IPv4 address on the machine (none found)");
    };
    // Bind the data plane on every address so a non-loopback peer can reach it at all.
    let hub = hub().data_addr("0.0.0.0:0").start();
    let token = hub.token();
    let port = hub.data_url.rsplit(':').next().unwrap().to_owned();
    let local = format!("http://127.0.0.1:{port}");
    // Other machines speak TLS to it (SHERATAN_TLS=auto), this one may stay plain.
    let remote = format!("https://{ip}:{port}");

    let (status, body) = get(&format!("{local}/health"), Auth::None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["plane"], "data");

    let (status, body) = get(&format!("{remote}/health"), Auth::None).await;
    let (_, hint) = assert_error(status, &body, 403, "LOCALHOST_ONLY");
    assert!(hint.contains("127.0.0.1"), "{hint}");

    // The admin path: the token is checked first, then the peer.
    let (status, body) = get(&format!("{remote}/admin/registry"), Auth::None).await;
    assert_error(status, &body, 403, "AUTH_FAIL");
    let (status, body) = get(&format!("{remote}/admin/registry"), Auth::Bearer(&token)).await;
    assert_error(status, &body, 403, "LOCALHOST_ONLY");
    // Unknown admin routes and wrong methods too: a remote peer learns nothing of the admin
    // path's routes.
    let (status, body) = get(
        &format!("{remote}/admin/no-such-thing"),
        Auth::Bearer(&token),
    )
    .await;
    assert_error(status, &body, 403, "LOCALHOST_ONLY");
    let (status, body) = call(
        Method::DELETE,
        &format!("{remote}/admin/registry"),
        Auth::Bearer(&token),
        None,
    )
    .await;
    assert_error(status, &body, 403, "LOCALHOST_ONLY");
    let (status, body) = get(&format!("{local}/admin/registry"), Auth::Bearer(&token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["nodes"].is_array());

    let records = hub.wait_audit(Duration::from_secs(5), |r| {
        count_events(r, EventKind::LocalhostOnly) >= 2
    });
    let event = records
        .iter()
        .find(|r| r.event == EventKind::LocalhostOnly)
        .unwrap();
    assert_eq!(event.remote_addr.as_deref(), Some(ip.to_string().as_str()));
}
