//! Credentials with a role and a name (issue 18, management half): created, listed and
//! revoked on the admin path through the CLI, the secret shown once and stored only as a
//! digest, names never reused; the admin path's rules hold for them (a remote caller with the
//! mesh token is refused).

use reqwest::StatusCode;
use serde_json::{Value, json};
use sheratan_proto::EventKind;
use sheratan_testkit::count_events;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_created_listed_and_revoked_and_their_secrets_kept_nowhere() {
    let hub = hub().env("SHERATAN_AUDIT_FOLD_WINDOW_SEC", "0.1").start();
    let (code, out, err) = cli(
        &hub,
        &[
            "token",
            "create",
            "--role",
            "submit",
            "--name",
            "ci",
            "--queues",
            "a,b",
            "--expires",
            "30d",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("created ci (submit); its secret, shown only now:"),
        "{out}"
    );
    let secret = out.lines().nth(1).unwrap().trim().to_owned();
    assert!(
        secret.starts_with("shtc_") && secret.len() == 69,
        "{secret}"
    );

    // Listed without the secret; the database holds only its digest.
    let (code, out, err) = cli(&hub, &["token", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ci") && out.contains("submit") && out.contains("a,b"),
        "{out}"
    );
    assert!(!out.contains(&secret), "{out}");
    let (_, json_out, _) = cli(&hub, &["token", "list", "--json"]);
    let list: Value = serde_json::from_str(&json_out).unwrap();
    let ci = &list["credentials"][0];
    assert_eq!(ci["name"], "ci");
    assert!(
        ci["expires_at"].is_string() && ci["revoked_at"].is_null(),
        "{ci}"
    );
    assert!(
        !json_out.contains("secret") && !json_out.contains(&secret),
        "{json_out}"
    );
    let db = std::fs::read(hub.home.join("sheratan.db")).unwrap();
    let wal = std::fs::read(hub.home.join("sheratan.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret is in the store"
        );
    }

    // Bad input: a taken name (409), a bad name, queues for another role (400).
    let (code, _, err) = cli(&hub, &["token", "create", "--role", "read", "--name", "ci"]);
    assert_eq!(code, 1);
    assert!(err.contains("CONFLICT") && err.contains("\"ci\""), "{err}");
    let (code, _, err) = cli(
        &hub,
        &["token", "create", "--role", "read", "--name", "a b"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("INVALID_REQUEST"), "{err}");
    let (code, _, err) = cli(
        &hub,
        &[
            "token", "create", "--role", "node", "--name", "w1", "--queues", "x",
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("queues limit submit credentials only"),
        "{err}"
    );
    let (code, _, err) = cli(&hub, &["token", "create", "--role", "root", "--name", "x"]);
    assert_eq!(code, 2, "{err}");

    // Revoked once; the name stays taken.
    let (code, out, err) = cli(&hub, &["token", "revoke", "ci"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked ci (submit)"), "{out}");
    let (code, _, err) = cli(&hub, &["token", "revoke", "ci"]);
    assert_eq!(code, 1);
    assert!(err.contains("NOT_FOUND"), "{err}");
    let (code, _, err) = cli(&hub, &["token", "create", "--role", "read", "--name", "ci"]);
    assert_eq!(code, 1, "{err}");
    let (_, json_out, _) = cli(&hub, &["token", "list", "--json"]);
    let list: Value = serde_json::from_str(&json_out).unwrap();
    assert!(list["credentials"][0]["revoked_at"].is_string(), "{list}");

    let records = hub.wait_audit(std::time::Duration::from_secs(5), |r| {
        count_events(r, EventKind::CredentialRevoked) >= 1
    });
    assert_eq!(count_events(&records, EventKind::CredentialCreated), 1);
    let created = records
        .iter()
        .find(|r| r.event == EventKind::CredentialCreated)
        .unwrap();
    assert!(
        format!("{created:?}").contains("ci (submit)"),
        "the audit line names the credential: {created:?}"
    );
}

/// The admin path's rule holds for credentials: the mesh token from another address is
/// refused, and nothing is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_cannot_be_made_from_another_machine_with_the_mesh_token() {
    let ip = sheratan_testkit::non_loopback_ipv4()
        .expect("this test needs a non-loopback IPv4 address on this machine");
    // The data plane on every address, speaking TLS to other machines.
    let hub = hub().data_addr("0.0.0.0:0").start();
    let token = hub.token();
    let port = hub.data_url.rsplit(':').next().unwrap().to_owned();
    let remote = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .local_address(std::net::IpAddr::V4(ip))
        .build()
        .unwrap();
    let r = remote
        .post(format!("https://{ip}:{port}/admin/tokens"))
        .bearer_auth(&token)
        .json(&json!({"name": "evil", "role": "admin"}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_error(status, &body, 403, "LOCALHOST_ONLY");
    let (status, list) = get(
        &format!("http://127.0.0.1:{port}/admin/tokens"),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["credentials"], json!([]), "nothing was created");
    let (status, body) = get(&format!("http://127.0.0.1:{port}/admin/tokens"), Auth::None).await;
    assert_error(status, &body, 403, "AUTH_FAIL");
}
