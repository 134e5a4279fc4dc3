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
            "token", "create", "--role", "read", "--name", "r1", "--queues", "x",
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("queues limit submit and node credentials only"),
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

/// A credential made with the CLI over the data plane's loopback address; its secret.
pub(crate) fn create(hub: &sheratan_testkit::HubProcess, role: &str, name: &str) -> String {
    create_with(hub, role, name, &[])
}

/// A submit credential limited to `queues`; its secret.
fn create_scoped(hub: &sheratan_testkit::HubProcess, name: &str, queues: &str) -> String {
    create_limited(hub, "submit", name, queues)
}

/// A credential of `role` limited to `queues`; its secret.
pub(crate) fn create_limited(
    hub: &sheratan_testkit::HubProcess,
    role: &str,
    name: &str,
    queues: &str,
) -> String {
    create_with(hub, role, name, &["--queues", queues])
}

fn create_with(
    hub: &sheratan_testkit::HubProcess,
    role: &str,
    name: &str,
    extra: &[&str],
) -> String {
    let data = loopback_data(hub);
    let mut args = vec!["token", "create", "--role", role, "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--data-url", &data]);
    let (code, out, err) = cli(hub, &args);
    assert_eq!(code, 0, "{err}");
    out.lines().nth(1).unwrap().trim().to_owned()
}

/// The data plane as this machine reaches it in plain HTTP (it listens on every address).
fn loopback_data(hub: &sheratan_testkit::HubProcess) -> String {
    format!(
        "http://127.0.0.1:{}",
        hub.data_url.rsplit(':').next().unwrap()
    )
}

/// Each role's boundary, crossed and refused: a read credential cancelling, a submit
/// credential leasing, a node credential heartbeating or leasing as another node, a result for
/// a node credential's lease signed with the mesh token, a revoked credential; an admin
/// credential uses the admin path from another address; a worker runs on a node credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_its_part_and_is_refused_the_rest() {
    let hub = hub()
        .data_addr("0.0.0.0:0")
        .env("SHERATAN_AUDIT_FOLD_WINDOW_SEC", "0.1")
        .start();
    let port = hub.data_url.rsplit(':').next().unwrap().to_owned();
    let data = format!("http://127.0.0.1:{port}");
    let control = hub.control_url.clone();
    let read = create(&hub, "read", "viewer");
    let submit = create(&hub, "submit", "ci");
    let node = create(&hub, "node", "w-1");
    let admin = create(&hub, "admin", "boss");

    // read: every GET, no change.
    let (status, _) = get(&format!("{data}/v1/jobs"), Auth::Bearer(&read)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, job) = post(
        &format!("{data}/v1/jobs"),
        Auth::Bearer(&submit),
        &json!({"queue": "q", "kind": "echo", "payload": {"n": 1}}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "submit may submit: {job}");
    let id = job["job_id"].as_str().unwrap().to_owned();
    let (status, body) = post(
        &format!("{data}/v1/jobs/{id}/cancel"),
        Auth::Bearer(&read),
        "",
    )
    .await;
    let (message, _) = assert_error(status, &body, 403, "FORBIDDEN");
    assert!(
        message.contains("the read credential \"viewer\" may not POST"),
        "{message}"
    );

    // A submit credential with queues: those queues only (one item elsewhere refuses a batch).
    let scoped = create_scoped(&hub, "only-a", "a");
    let (status, body) = post(
        &format!("{data}/v1/jobs"),
        Auth::Bearer(&scoped),
        &json!({"queue": "b", "kind": "echo"}).to_string(),
    )
    .await;
    let (message, _) = assert_error(status, &body, 403, "FORBIDDEN");
    assert!(message.contains("submit to queue \"b\""), "{message}");
    let (status, body) = post(
        &format!("{data}/v1/jobs/batch"),
        Auth::Bearer(&scoped),
        &json!({"jobs": [{"queue": "a", "kind": "echo"}, {"kind": "echo"}]}).to_string(),
    )
    .await;
    assert_error(status, &body, 403, "FORBIDDEN");
    let (status, body) = post(
        &format!("{data}/v1/jobs"),
        Auth::Bearer(&scoped),
        &json!({"queue": "a", "kind": "echo"}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // ...and cancels or acknowledges nothing of other queues.
    let (status, body) = post(
        &format!("{data}/v1/jobs/{id}/cancel"),
        Auth::Bearer(&scoped),
        "",
    )
    .await;
    assert_error(status, &body, 403, "FORBIDDEN");
    let (status, body) = post(
        &format!("{data}/v1/results/ack"),
        Auth::Bearer(&scoped),
        &json!({"job_ids": [id]}).to_string(),
    )
    .await;
    assert_error(status, &body, 403, "FORBIDDEN");
    // ...and reads only its queues' jobs: not another queue's job, not the whole list.
    let (status, body) = get(&format!("{data}/v1/jobs/{id}"), Auth::Bearer(&scoped)).await;
    let (message, _) = assert_error(status, &body, 403, "FORBIDDEN");
    assert!(message.contains("read a job of queue \"q\""), "{message}");
    let (status, body) = get(&format!("{data}/v1/jobs"), Auth::Bearer(&scoped)).await;
    assert_error(status, &body, 403, "FORBIDDEN");
    let (status, body) = get(&format!("{data}/v1/jobs?queue=a"), Auth::Bearer(&scoped)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["jobs"].as_array().map(Vec::len), Some(1), "{body}");

    // submit: no leases, no heartbeats.
    let lease_as = |who: &str| {
        json!({"node_id": who, "queues": ["q"], "capabilities": ["echo"], "wait_ms": 0}).to_string()
    };
    let (status, body) = post(
        &format!("{data}/v1/leases"),
        Auth::Bearer(&submit),
        &lease_as("w-1"),
    )
    .await;
    assert_error(status, &body, 403, "FORBIDDEN");

    // node: itself only.
    let (status, body) = post(
        &format!("{control}/v1/heartbeat"),
        Auth::Bearer(&node),
        &heartbeat_body("w-2"),
    )
    .await;
    let (message, _) = assert_error(status, &body, 403, "FORBIDDEN");
    assert!(message.contains("act as node \"w-2\""), "{message}");
    let (status, body) = post(
        &format!("{data}/v1/leases"),
        Auth::Bearer(&node),
        &lease_as("w-2"),
    )
    .await;
    assert_error(status, &body, 403, "FORBIDDEN");
    // Nobody but w-1's credential registers w-1 (its address is where a broker sends jobs):
    // not the mesh token, not another node's credential.
    let hijack = json!({"node_id": "w-1", "role": "host", "addr": "https://attacker.example"});
    let stranger = create(&hub, "node", "w-8");
    for token in [hub.token(), stranger] {
        let (status, body) = post(
            &format!("{control}/v1/heartbeat"),
            Auth::Bearer(&token),
            &hijack.to_string(),
        )
        .await;
        assert_error(status, &body, 403, "FORBIDDEN");
    }
    let (status, body) = post(
        &format!("{control}/v1/heartbeat"),
        Auth::Bearer(&node),
        &heartbeat_body("w-1"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, grant) = post(
        &format!("{data}/v1/leases"),
        Auth::Bearer(&node),
        &lease_as("w-1"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    let leased = &grant["jobs"][0];
    // A node names jobs by their whole id: a piece's lookup would list other jobs' ids.
    let piece = &leased["job_id"].as_str().unwrap()[..10];
    let (status, body) = get(&format!("{data}/v1/jobs/{piece}"), Auth::Bearer(&node)).await;
    let (message, _) = assert_error(status, &body, 400, "INVALID_REQUEST");
    assert!(message.contains("whole id"), "{message}");
    let result = json!({"job_id": leased["job_id"], "lease_id": leased["lease_id"], "outcome": "success", "result": {"ok": true}});
    // The mesh token's holder cannot complete a node credential's lease...
    let (status, body) = send_result(&data, &hub.token(), &result).await;
    assert_error(status, &body, 403, "FORBIDDEN");
    // ...nor can another node's credential; the holder can, signing with its derived key.
    let other = create(&hub, "node", "w-9");
    let (status, body) = send_result(&data, &other, &result).await;
    assert_error(status, &body, 403, "FORBIDDEN");
    // Nor may they keep it alive (the lease id is no key on its own); its holder may.
    let extend = format!(
        "{data}/v1/leases/{}/extend",
        leased["lease_id"].as_str().unwrap()
    );
    for stranger in [&other, &hub.token()] {
        let (status, body) = post(&extend, Auth::Bearer(stranger), "{}").await;
        let (message, _) = assert_error(status, &body, 403, "FORBIDDEN");
        assert!(message.contains("held by node \"w-1\""), "{message}");
    }
    let (status, body) = post(&extend, Auth::Bearer(&node), "{}").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = send_result(&data, &node, &result).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "completed", "{body}");

    // admin: the admin path from another machine's address.
    let ip = sheratan_testkit::non_loopback_ipv4().expect("a non-loopback IPv4 address");
    let remote = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .local_address(std::net::IpAddr::V4(ip))
        .build()
        .unwrap();
    let r = remote
        .get(format!("https://{ip}:{port}/admin/tokens"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        200,
        "an admin credential from anywhere"
    );
    let r = remote
        .get(format!("https://{ip}:{port}/admin/tokens"))
        .bearer_auth(&read)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // Revoked: refused like an unknown token; the audit line says why.
    let (code, _, err) = cli(&hub, &["token", "revoke", "viewer", "--data-url", &data]);
    assert_eq!(code, 0, "{err}");
    let (status, body) = get(&format!("{data}/v1/jobs"), Auth::Bearer(&read)).await;
    assert_error(status, &body, 403, "AUTH_FAIL");
    let records = hub.wait_audit(std::time::Duration::from_secs(5), |r| {
        count_events(r, EventKind::IdentityMismatch) >= 6
            && r.iter().any(|x| format!("{x:?}").contains("revoked"))
    });
    assert!(count_events(&records, EventKind::IdentityMismatch) >= 6);
    // Each line names the credential that tried.
    for who in ["w-9 (node)", "the mesh token", "w-1 (node)"] {
        assert!(
            records
                .iter()
                .any(|r| r.event == EventKind::IdentityMismatch
                    && r.credential.as_deref() == Some(who)),
            "an IDENTITY_MISMATCH line names {who}"
        );
    }
    let (_, metrics) = get(
        &format!("{data}/metrics?format=json"),
        Auth::Bearer(&hub.token()),
    )
    .await;
    assert!(
        metrics["forbidden.read"].as_f64().unwrap_or(0.0) >= 2.0,
        "{metrics}"
    );
    assert!(
        metrics["forbidden.node"].as_f64().unwrap_or(0.0) >= 4.0,
        "{metrics}"
    );

    // A worker runs on its node credential: heartbeats, leases, signed results.
    let worker_secret = create(&hub, "node", "w-run");
    let _worker = sheratan_testkit::Proc::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_sheratan")),
        &[
            "worker",
            "--node-id",
            "w-run",
            "--queues",
            "runq",
            "--control-url",
            &control,
            "--data-url",
            &data,
        ],
        &[("SHERATAN_HUB_TOKEN", &worker_secret)],
        true,
    );
    let (code, out, err) = cli(
        &hub,
        &[
            "submit",
            "--queue",
            "runq",
            "--kind",
            "echo",
            "--payload",
            "{\"w\":1}",
            "--wait",
            "--data-url",
            &data,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"w\": 1"), "{out}");
}

/// SHERATAN_MESH_TOKEN_SCOPE=bootstrap: the mesh token only makes credentials; the credentials
/// it makes do the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_mesh_token_only_makes_credentials() {
    let hub = hub().env("SHERATAN_MESH_TOKEN_SCOPE", "bootstrap").start();
    let token = hub.token();
    let (status, body) = get(&format!("{}/v1/jobs", hub.data_url), Auth::Bearer(&token)).await;
    let (message, _) = assert_error(status, &body, 403, "FORBIDDEN");
    assert!(
        message.contains("SHERATAN_MESH_TOKEN_SCOPE=bootstrap"),
        "{message}"
    );
    let (status, body) = post(
        &format!("{}/v1/heartbeat", hub.control_url),
        Auth::Bearer(&token),
        &heartbeat_body("w1"),
    )
    .await;
    assert_error(status, &body, 403, "FORBIDDEN");
    let admin = create(&hub, "admin", "boss");
    let (status, body) = get(&format!("{}/v1/jobs", hub.data_url), Auth::Bearer(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A mesh token may not look like a credential's secret (results would be signed with the
/// wrong key).
#[test]
fn a_mesh_token_shaped_like_a_credential_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sheratan"))
        .args(["hub", "--home"])
        .arg(dir.path())
        .env("SHERATAN_HUB_TOKEN", format!("shtc_{}", "0".repeat(64)))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("marks a credential's secret"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sheratan up` runs its members on credentials of their own (node ones for the worker, hosts,
/// broker and relay, an admin one for Core), made once and kept (0600) under its home; a restart
/// reuses them; nobody else can take their names; the mesh token still signs in to Core.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_its_members_on_credentials_of_their_own() {
    use std::os::unix::fs::PermissionsExt;
    let mut hub = hub().up().start();
    let dir = hub.home.join("credentials");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    let secret = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    for name in ["worker-1", "host-a", "host-b", "broker", "relay", "core"] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
        assert!(secret(name).starts_with("shtc_"), "{name}");
    }
    let listed = |hub: &sheratan_testkit::HubProcess| {
        let (code, out, err) = cli(hub, &["token", "list", "--json"]);
        assert_eq!(code, 0, "{err}");
        let list: Value = serde_json::from_str(&out).unwrap();
        list["credentials"].as_array().unwrap().clone()
    };
    let nodes: Vec<String> = listed(&hub)
        .iter()
        .filter(|c| c["role"] == "node")
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(nodes, ["broker", "host-a", "host-b", "relay", "worker-1"]);
    let admins: Vec<Value> = listed(&hub)
        .into_iter()
        .filter(|c| c["role"] == "admin")
        .collect();
    assert_eq!(admins.len(), 1);
    assert_eq!(admins[0]["name"], "core");
    // Core runs on its credential and still takes the mesh token (the hub vouches for it), as
    // the broker does from Core.
    let (status, who) = get(
        &format!("{}/api/whoami", hub.urls["core"]),
        Auth::Bearer(&hub.token()),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{who}");
    assert_eq!(who["credential"], "the mesh token");
    let (status, body) = get(
        &format!("{}/api/auctions", hub.urls["core"]),
        Auth::Bearer(&hub.token()),
    )
    .await;
    assert_eq!(
        status,
        reqwest::StatusCode::OK,
        "Core reaches the broker: {body}"
    );
    // The broker and the relay hold vouched credentials to their roles: a node's may not read
    // the auctions, a submit credential not the relay's sessions, a read one no completions.
    let submitter = create(&hub, "submit", "ci");
    let reader = create(&hub, "read", "viewer");
    let refused = [
        (
            "GET",
            format!("{}/v1/auctions", hub.urls["broker"]),
            secret("worker-1"),
        ),
        (
            "GET",
            format!("{}/v1/sessions", hub.urls["relay"]),
            submitter,
        ),
        (
            "POST",
            format!("{}/v1/complete", hub.urls["relay"]),
            reader.clone(),
        ),
    ];
    for (method, url, token) in refused {
        let (status, body) = if method == "GET" {
            get(&url, Auth::Bearer(&token)).await
        } else {
            post(&url, Auth::Bearer(&token), r#"{"prompt":"hi"}"#).await
        };
        assert_error(status, &body, 403, "FORBIDDEN");
    }
    let (status, _) = get(
        &format!("{}/v1/auctions", hub.urls["broker"]),
        Auth::Bearer(&reader),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    // The mesh token can no longer be worker-1 or host-a.
    for name in ["worker-1", "host-a"] {
        let (status, body) = post(
            &format!("{}/v1/heartbeat", hub.control_url),
            Auth::Bearer(&hub.token()),
            &heartbeat_body(name),
        )
        .await;
        assert_error(status, &body, 403, "FORBIDDEN");
    }
    // The worker runs jobs on its credential: the job completes, held by worker-1.
    let (code, out, err) = cli(
        &hub,
        &[
            "submit",
            "--kind",
            "echo",
            "--payload",
            "{\"up\":1}",
            "--wait",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"up\": 1"), "{out}");
    // A restart keeps the same credentials (no new ones, the same secrets).
    let before = secret("worker-1");
    hub.restart();
    assert_eq!(secret("worker-1"), before);
    assert_eq!(listed(&hub).len(), 8, "up's six and the two made above");
    let (code, _, err) = cli(
        &hub,
        &[
            "submit",
            "--kind",
            "echo",
            "--payload",
            "{\"up\":2}",
            "--wait",
        ],
    );
    assert_eq!(code, 0, "{err}");
    // A member credential revoked (by an admin, say) or whose secret file was lost is given a
    // new secret at the next start: up heals its members, the old secret stays dead.
    let old_relay = secret("relay");
    let (code, _, err) = cli(&hub, &["token", "revoke", "relay"]);
    assert_eq!(code, 0, "{err}");
    std::fs::remove_file(dir.join("worker-1")).unwrap();
    hub.restart();
    assert_ne!(secret("relay"), old_relay);
    assert_ne!(secret("worker-1"), before);
    let (status, body) = get(
        &format!("{}/v1/jobs", hub.data_url),
        Auth::Bearer(&old_relay),
    )
    .await;
    assert_error(status, &body, 403, "AUTH_FAIL");
    let (code, _, err) = cli(
        &hub,
        &[
            "submit",
            "--kind",
            "echo",
            "--payload",
            "{\"up\":3}",
            "--wait",
        ],
    );
    assert_eq!(code, 0, "{err}");
}

/// Core takes any credential the hub knows, with its role: what the role may not do is refused
/// at Core, what it may do goes to the hub with the caller's own token (so a submit
/// credential's queues hold through Core); an admin credential takes Core's admin actions from
/// another machine, the mesh token only from Core's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_takes_credentials_with_their_roles() {
    let hub = hub()
        .up()
        .env("SHERATAN_CORE_ADDR", "0.0.0.0:0")
        .env("SHERATAN_AUDIT_FOLD_WINDOW_SEC", "0.1")
        .start();
    let core = hub.urls["core"].clone();
    let port = core
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let local = format!("https://127.0.0.1:{port}");
    let node = std::fs::read_to_string(hub.home.join("credentials/worker-1")).unwrap();
    let read = create(&hub, "read", "viewer");
    let scoped = create_scoped(&hub, "only-a", "a");
    let admin = create(&hub, "admin", "ops");
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let call = |method: reqwest::Method, path: &str, token: &str, body: Option<Value>| {
        let mut r = client
            .request(method, format!("{local}{path}"))
            .bearer_auth(token);
        if let Some(body) = body {
            r = r.json(&body);
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, who) = call(reqwest::Method::GET, "/api/whoami", &node, None).await;
    assert_eq!(status, StatusCode::OK, "{who}");
    assert_eq!(who["credential"], "worker-1 (node)");
    let (status, body) = call(reqwest::Method::GET, "/api/overview", &node, None).await;
    assert_error(status, &body, 403, "FORBIDDEN");
    let junk = format!("shtc_{}", "0".repeat(64));
    let (status, body) = call(reqwest::Method::GET, "/api/overview", &junk, None).await;
    assert_error(status, &body, 403, "AUTH_FAIL");
    let (status, _) = call(reqwest::Method::GET, "/api/overview", &read, None).await;
    assert_eq!(status, StatusCode::OK);
    let job = json!({"kind": "echo", "queue": "b", "payload": {}});
    let (status, body) = call(reqwest::Method::POST, "/api/jobs", &read, Some(job.clone())).await;
    assert_error(status, &body, 403, "FORBIDDEN");
    // The hub refuses the scoped credential's other queue: Core sent the caller's token.
    let (status, body) = call(reqwest::Method::POST, "/api/jobs", &scoped, Some(job)).await;
    let (message, _) = assert_error(status, &body, 403, "FORBIDDEN");
    assert!(message.contains("submit to queue \"b\""), "{message}");

    // From another machine's address: an admin credential lists credentials; the mesh token
    // may not (LOCALHOST_ONLY, as on the hub's admin path); a read credential may not either.
    let ip = sheratan_testkit::non_loopback_ipv4().expect("a non-loopback IPv4 address");
    let remote = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .local_address(std::net::IpAddr::V4(ip))
        .build()
        .unwrap();
    let tokens = format!("https://{ip}:{port}/api/tokens");
    for (token, want) in [(&admin, 200), (&hub.token(), 403), (&read, 403)] {
        let r = remote.get(&tokens).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status().as_u16(), want, "{}", r.text().await.unwrap());
    }

    // An open event stream of a credential ends soon after it is revoked.
    let mut events = client
        .get(format!("{local}/api/events"))
        .bearer_auth(&read)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    assert!(events.chunk().await.unwrap().is_some(), "the ready event");
    let (code, _, err) = cli(&hub, &["token", "revoke", "viewer"]);
    assert_eq!(code, 0, "{err}");
    let ended = tokio::time::timeout(std::time::Duration::from_secs(8), async {
        while let Ok(Some(_)) = events.chunk().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the revoked credential's stream is still open"
    );

    // Junk shaped like credentials: refused, and after a few the hub is not even asked (its
    // AUTH_FAIL lines would name Core, not the caller). Last: the address is then held off.
    let before = count_events(&hub.audit_records(), EventKind::AuthFail);
    for i in 0..40 {
        let junk = format!("shtc_{i:064}");
        let (status, body) = call(reqwest::Method::GET, "/api/jobs", &junk, None).await;
        assert_error(status, &body, 403, "AUTH_FAIL");
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let asked = count_events(&hub.audit_records(), EventKind::AuthFail) - before;
    assert!(
        asked <= u64::from(sheratan_client::MAX_UNKNOWN_PER_MINUTE),
        "the hub was asked about {asked} junk tokens"
    );
    // The hold-off spares tokens the hub vouched for lately: the flood does not lock out
    // whoever is signed in from the same address, after Core's 2 s memory of them ran out.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (status, body) = call(reqwest::Method::GET, "/api/whoami", &admin, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
