//! The attacks of docs/SECURITY.md, each tried against real processes and each required to
//! fail: connections that never send a request, two tokens in one request, weak tokens,
//! oversized result bodies. (SSRF, remote admin actions, lease takeovers, secrets and the
//! relay's browser have their own tests beside these.)

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sheratan_proto::EventKind;
use sheratan_testkit::count_events;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// A client whose connections come from `source` (another loopback address is another
/// source to the server's per-address cap).
fn http_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        // Listeners on every address speak TLS (mesh CA); what is tested here is not whose.
        .danger_accept_invalid_certs(true)
        .local_address(source.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    socket.connect(addr).await.unwrap()
}

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// Whether the server has closed `stream` (without waiting).
fn is_closed_now(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match stream.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Whether the server closes `stream` within `within` (a read returns end of file or an
/// error) without having sent anything but, at most, an HTTP/1.1 error.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Every listener `up` runs: connections that never send a byte are closed at the header
/// deadline, one address cannot hold more than its cap, another address is served meanwhile,
/// and HTTP/2 with prior knowledge is not spoken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_exhaust_any_listener() {
    let hub = hub()
        .up()
        .env("SHERATAN_HEADER_TIMEOUT_MS", "1500")
        .env("SHERATAN_MAX_CONN_PER_IP", "24")
        .start();
    let mut listeners = vec![
        ("control", hub.control_url.clone()),
        ("data", hub.data_url.clone()),
    ];
    for name in ["core", "broker", "host-a", "relay", "dashboard"] {
        let url = hub.urls.get(name).unwrap_or_else(|| panic!("{name} url"));
        listeners.push((name, url.clone()));
    }
    let other_source = http_from("127.0.0.2");
    for (name, url) in &listeners {
        let addr = addr_of(url);
        let opened = Instant::now();
        // From an address of their own: `up`'s components hold connections from 127.0.0.1.
        let mut idle = Vec::new();
        for _ in 0..30 {
            idle.push(connect_from("127.0.0.3", addr).await);
        }
        // Beyond the cap, connections are closed at once.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cut_at_once = idle.iter().filter(|s| is_closed_now(s)).count();
        assert_eq!(cut_at_once, 6, "{name}: 30 connections, cap 24");
        // Another address is served while this one holds its cap.
        let r = other_source
            .get(format!("{url}/health"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: /health from another source: {e}"));
        assert_eq!(r.status(), StatusCode::OK, "{name}");
        // And the idle ones are gone at the deadline (1.5 s), not held forever.
        for stream in idle.iter_mut() {
            assert!(
                closed_within(stream, Duration::from_secs(5)).await,
                "{name}: an idle connection outlived the header deadline"
            );
        }
        let held = opened.elapsed();
        assert!(
            held >= Duration::from_millis(1400),
            "{name}: closed early ({held:?})"
        );

        // A request head trickled in a byte at a time is cut at the same deadline.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        for byte in b"GET /health HTTP/1.1\r\nHost: x\r\n".iter() {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            if closed_within(&mut slow, Duration::from_millis(200)).await {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{name}: a slow request head was not cut"
        );

        // HTTP/2 with prior knowledge: no HTTP/2 answer (its frames would start with a
        // SETTINGS frame, type 4), only an HTTP/1.1 error or a closed connection.
        let mut h2 = TcpStream::connect(addr).await.unwrap();
        h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), h2.read_to_end(&mut answer)).await;
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
            "{name}: answered HTTP/2: {:?}",
            &answer[..answer.len().min(16)]
        );
    }
    // The hub counts what its listeners closed, so an operator sees it.
    let (_, metrics) = get(
        &format!("{}/metrics?format=json", hub.control_url),
        Auth::Bearer(&hub.token()),
    )
    .await;
    for plane in ["control", "data"] {
        assert_eq!(
            metrics[format!("connections.{plane}.source_cap")],
            6,
            "{metrics}"
        );
        assert!(
            metrics[format!("connections.{plane}.deadline")]
                .as_u64()
                .unwrap()
                >= 24,
            "{metrics}"
        );
    }
}

/// A keep-alive connection that stays idle after its response is closed at the keep-alive
/// deadline, while one that keeps sending requests is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    let hub = hub()
        .env("SHERATAN_HEADER_TIMEOUT_MS", "5000")
        .env("SHERATAN_KEEPALIVE_TIMEOUT_MS", "1000")
        .start();
    let addr = addr_of(&hub.control_url);
    let request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for _ in 0..5 {
        stream.write_all(request).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let idle_from = Instant::now();
    assert!(closed_within(&mut stream, Duration::from_secs(4)).await);
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(400) && idle < Duration::from_secs(3),
        "closed after {idle:?} idle"
    );
}

/// A request that presents two different tokens is refused even when one of them is right,
/// on the hub and on every other server: otherwise each request is a batch of guesses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_many_tokens_is_refused_even_with_the_right_one() {
    let hub = hub().up().start();
    let mesh = hub.token();
    // up's hosts run on node credentials of their own: a host takes its own secret.
    let host = std::fs::read_to_string(hub.home.join("credentials/host-a")).unwrap();
    let targets = [
        (format!("{}/v1/nodes", hub.control_url), &mesh),
        (format!("{}/v1/jobs", hub.data_url), &mesh),
        (format!("{}/v1/queues", hub.data_url), &mesh),
        (format!("{}/api/nodes", hub.urls["core"]), &mesh),
        (format!("{}/api/queues", hub.urls["core"]), &mesh),
        (format!("{}/metrics", hub.urls["broker"]), &mesh),
        (format!("{}/metrics", hub.urls["host-a"]), &host),
        (format!("{}/v1/sessions", hub.urls["relay"]), &mesh),
    ];
    for (url, token) in &targets {
        let token = token.as_str();
        // The right token alone works.
        let r = http().get(url).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{url}");
        // 90 guesses and the right token: refused.
        let mut req = http().get(url);
        for i in 0..90 {
            req = req.header("authorization", format!("Bearer guess-{i}"));
        }
        let r = req.bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{url}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "AUTH_FAIL", "{url}");
        // A guess in one header and the right token in the other: refused.
        let r = http()
            .get(url)
            .header("authorization", "Bearer guess")
            .header("x-sheratan-token", token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{url}");
        // The same token in both headers is one token.
        let r = http()
            .get(url)
            .bearer_auth(token)
            .header("x-sheratan-token", token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{url}");
    }
    let mut hub = hub;
    hub.terminate();
    let records = hub.audit_records();
    assert!(
        records
            .iter()
            .any(|r| r.event == EventKind::AuthFail && r.detail["reason"] == "conflicting"),
        "the hub audits the refusal as conflicting"
    );
}

/// A weak token stops the hub from starting, unless the operator allows it on purpose (then
/// WEAK_TOKEN is reported); a rotation to a weak token is refused with 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_tokens_are_refused_unless_allowed() {
    for weak in ["abc", "shared-secret", "fifteen-chars-x"] {
        let home = tempfile::tempdir().unwrap();
        let out = hub_command(home.path())
            .env("SHERATAN_HUB_TOKEN", weak)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{weak}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is weak"), "{err}");
        assert!(err.contains("SHERATAN_ALLOW_WEAK_TOKEN=1"), "{err}");
    }
    // A weak token in the token file is refused too.
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("hub_token"), "abc\n").unwrap();
    let out = hub_command(home.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));

    let mut weak = hub()
        .env("SHERATAN_HUB_TOKEN", "abc")
        .env("SHERATAN_ALLOW_WEAK_TOKEN", "1")
        .start();
    let (status, _) = get(
        &format!("{}/v1/nodes", weak.control_url),
        Auth::Bearer("abc"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let strong = hub().start();
    let token = strong.token();
    let (status, body) = post(
        &format!("{}/admin/token-rotation", strong.data_url),
        Auth::Bearer(&token),
        r#"{"next_token":"x","until":"2099-01-01T00:00:00Z"}"#,
    )
    .await;
    let (message, _) = assert_error(status, &body, 400, "INVALID_REQUEST");
    assert!(message.contains("weak"), "{message}");
    let (status, body) = post(
        &format!("{}/admin/token-rotation", strong.data_url),
        Auth::Bearer(&token),
        r#"{"next_token":"shared-secret","until":"2099-01-01T00:00:00Z"}"#,
    )
    .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");

    weak.terminate();
    assert_eq!(count_events(&weak.audit_records(), EventKind::WeakToken), 1);
}

/// `POST /v1/results` has the same body limit, and the same JSON 413, as every other route,
/// whether the body declares its length or arrives chunked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_result_gets_the_contract_413() {
    let hub = hub().start();
    let token = hub.token();
    let addr = addr_of(&hub.data_url);
    for (size, chunked) in [(1_500_000usize, true), (3 << 20, false), (3 << 20, true)] {
        let body = format!(
            r#"{{"job_id":"x","lease_id":"y","outcome":"success","result":"{}"}}"#,
            "a".repeat(size)
        );
        let answer = raw_post(addr, "/v1/results", &token, body.as_bytes(), chunked).await;
        let (head, json) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(
            head.starts_with("HTTP/1.1 413"),
            "{size} chunked={chunked}: {head}"
        );
        let json = json.trim_start_matches(|c: char| c.is_ascii_hexdigit() || c.is_whitespace());
        let value: serde_json::Value = serde_json::Deserializer::from_str(json)
            .into_iter()
            .next()
            .expect("a body")
            .unwrap_or_else(|e| panic!("not JSON ({e}): {json}"));
        assert_eq!(value["error"]["code"], "PAYLOAD_TOO_LARGE", "{value}");
    }
}

/// A POST written by hand, so the body can be sent chunked; returns what came back before
/// the connection closed or went quiet.
async fn raw_post(addr: SocketAddr, path: &str, token: &str, body: &[u8], chunked: bool) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_owned()
    } else {
        format!("Content-Length: {}", body.len())
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nX-Sheratan-Content-Sha256: 00\r\nX-Sheratan-Signature: sha256=00\r\nConnection: close\r\n{framing}\r\n\r\n"
    );
    let _ = stream.write_all(head.as_bytes()).await;
    for chunk in body.chunks(64 * 1024) {
        let sent = if chunked {
            let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
            framed.extend_from_slice(chunk);
            framed.extend_from_slice(b"\r\n");
            stream.write_all(&framed).await
        } else {
            stream.write_all(chunk).await
        };
        // The server may answer and close before it has read everything.
        if sent.is_err() {
            break;
        }
    }
    if chunked {
        let _ = stream.write_all(b"0\r\n\r\n").await;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A host, broker, relay, Core or worker that finds no token refuses to start (exit 2)
/// instead of serving everyone; running without authentication takes the operator's
/// explicit SHERATAN_HUB_TOKEN_REQUIRED=0, and then the banner and /health say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_without_a_token_refuse_to_start() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_sheratan"));
    let home = tempfile::tempdir().unwrap();
    let home_arg = home.path().to_str().unwrap();
    let commands: [&[&str]; 5] = [
        &["host", "--listen", "127.0.0.1:0"],
        &["broker", "--listen", "127.0.0.1:0"],
        &["core", "--listen", "127.0.0.1:0"],
        &["relay", "--listen", "127.0.0.1:0"],
        &["worker"],
    ];
    for args in commands {
        let out = std::process::Command::new(bin)
            .args(args)
            .args(["--home", home_arg])
            .env_remove("SHERATAN_HUB_TOKEN")
            .env_remove("SHERATAN_HUB_TOKEN_FILE")
            .env_remove("SHERATAN_HUB_TOKEN_REQUIRED")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for place in [
            "SHERATAN_HUB_TOKEN",
            "--token-file",
            "hub_token",
            "SHERATAN_HUB_TOKEN_REQUIRED=0",
        ] {
            assert!(err.contains(place), "{args:?} does not name {place}: {err}");
        }
    }
    // On purpose: it runs, and says so.
    let host = sheratan_testkit::Proc::start(
        bin,
        &["host", "--listen", "127.0.0.1:0", "--home", home_arg],
        &[("SHERATAN_HUB_TOKEN_REQUIRED", "0")],
        true,
    );
    assert!(
        host.stdout().contains("AUTHENTICATION DISABLED"),
        "{}",
        host.stdout()
    );
    let url = host.urls.values().next().expect("the host's URL").clone();
    let (status, health) = get(&format!("{url}/health"), Auth::None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["auth"], "disabled", "{health}");
}

/// Core on the hub's machine must not turn a remote caller's request into a loopback call to
/// the hub's admin path: a requeue or an attestation accept from another address is refused
/// with LOCALHOST_ONLY, exactly as the hub refuses it; from loopback both still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_does_not_relay_admin_actions_for_remote_callers() {
    let ip = sheratan_testkit::non_loopback_ipv4()
        .expect("this test needs a non-loopback IPv4 address on this machine, to call Core from");
    let hub = hub().up().env("SHERATAN_CORE_ADDR", "0.0.0.0:0").start();
    let token = hub.token();
    let core_port = addr_of(&hub.urls["core"]).port();
    let remote_core = format!("https://{ip}:{core_port}");
    let local_core = hub.urls["core"].clone();
    let remote = http_from(&ip.to_string());
    let (_, job) = submit(
        &hub.data_url,
        &token,
        &serde_json::json!({"queue": "nobody-serves-this", "kind": "echo", "payload": {}}),
    )
    .await;
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    let refused_from_remote = |method: reqwest::Method, route: String| {
        let request = remote
            .request(method, format!("{remote_core}{route}"))
            .bearer_auth(&token);
        async move {
            let r = request.send().await.unwrap();
            let status = r.status();
            let body: serde_json::Value = r.json().await.unwrap();
            let (_, hint) = assert_error(status, &body, 403, "LOCALHOST_ONLY");
            assert!(hint.contains("ssh"), "{route}: {hint}");
        }
    };
    let admin_routes = [
        format!("/api/jobs/{job_id}/requeue"),
        "/api/nodes/worker-1/attestation/accept".to_owned(),
    ];
    for route in &admin_routes {
        refused_from_remote(reqwest::Method::POST, route.clone()).await;
        // The same call from loopback reaches the hub's admin path.
        let (status, body) = post(&format!("{local_core}{route}"), Auth::Bearer(&token), "").await;
        assert_ne!(body["error"]["code"], "LOCALHOST_ONLY", "{route}: {body}");
        assert!(
            status.is_success() || status == StatusCode::CONFLICT,
            "{route}: {status} {body}"
        );
    }
    // Bulk actions and queue settings (with the bodies they need) are admin actions too.
    for (method, route, body) in [
        (
            reqwest::Method::POST,
            "/api/jobs/bulk/delete",
            serde_json::json!({"status": "cancelled", "job_ids": [job_id]}),
        ),
        (
            reqwest::Method::PUT,
            "/api/queues/nobody-serves-this/settings",
            serde_json::json!({"paused": true}),
        ),
    ] {
        let r = remote
            .request(method, format!("{remote_core}{route}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let answer: serde_json::Value = r.json().await.unwrap();
        assert_error(status, &answer, 403, "LOCALHOST_ONLY");
    }
    let (_, settings) = get(
        &format!("{}/admin/queues/nobody-serves-this/settings", hub.data_url),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(settings["paused"], false, "{settings}");
    // Removing a node is an admin action too.
    refused_from_remote(reqwest::Method::DELETE, "/api/nodes/worker-1".into()).await;
    let (status, _) = get(
        &format!("{}/v1/nodes/worker-1", hub.control_url),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "the node is still there");
    // Reads from a remote caller are fine.
    let r = remote
        .get(format!("{remote_core}/api/nodes"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// A lease id is a capability of the node that took the lease: no job view, list, Core answer
/// or event shows it, so another token holder cannot extend or complete the lease; guessing
/// is answered LEASE_EXPIRED and audited as LEASE_MISMATCH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_cannot_be_taken_over_by_another_caller() {
    let hub = hub().up().start();
    let token = hub.token();
    let data = &hub.data_url;
    let core = &hub.urls["core"];
    let (_, job) = submit(
        data,
        &token,
        &serde_json::json!({"queue": "q-lease", "kind": "echo", "payload": {"n": 1}}),
    )
    .await;
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    let (leased, _) = lease(data, &token, "worker-a", &["q-lease"], 1, 1000).await;
    let lease_id = leased[0]["lease_id"].as_str().unwrap().to_owned();

    // Everything another caller can read about the job: who holds it, never the lease id.
    let mut seen = Vec::new();
    for url in [
        format!("{data}/v1/jobs/{job_id}"),
        format!("{data}/v1/jobs?queue=q-lease"),
        format!("{core}/api/jobs/{job_id}"),
        format!("{core}/api/jobs?queue=q-lease"),
    ] {
        let (status, body) = get(&url, Auth::Bearer(&token)).await;
        assert_eq!(status, StatusCode::OK, "{url}");
        seen.push(body.to_string());
    }
    let (_, view) = get(&format!("{data}/v1/jobs/{job_id}"), Auth::Bearer(&token)).await;
    assert_eq!(view["lease"]["node_id"], "worker-a", "{view}");
    assert!(view["lease"]["expires_at"].is_string(), "{view}");
    seen.push(core_events(core, &token).await);
    for text in &seen {
        assert!(!text.contains(&lease_id), "the lease id leaked: {text}");
    }

    // Guessing: correctly signed results and extensions naming other lease ids.
    let attacker = http_from("127.0.0.2");
    for _ in 0..25 {
        let guess = uuid::Uuid::now_v7().to_string();
        let body = serde_json::json!({"job_id": job_id, "lease_id": guess, "outcome": "success", "result": "forged"}).to_string();
        let (hash, signature) = sheratan_client::sign_result(body.as_bytes(), &token);
        let r = attacker
            .post(format!("{data}/v1/results"))
            .bearer_auth(&token)
            .header("x-sheratan-content-sha256", hash)
            .header("x-sheratan-signature", signature)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        let r = attacker
            .post(format!("{data}/v1/leases/{guess}/extend"))
            .bearer_auth(&token)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CONFLICT);
    }
    // The holder completes its job as usual.
    let (status, body) = complete(data, &token, &leased[0], serde_json::json!("real")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, view) = get(&format!("{data}/v1/jobs/{job_id}"), Auth::Bearer(&token)).await;
    assert_eq!(view["result"], "real");

    let mut hub = hub;
    hub.terminate();
    let records = hub.audit_records();
    let mismatches: Vec<_> = records
        .iter()
        .filter(|r| r.event == EventKind::LeaseMismatch)
        .collect();
    assert_eq!(count_events(&records, EventKind::LeaseMismatch), 50);
    assert!(mismatches.len() <= 6, "folded: {} lines", mismatches.len());
    assert!(
        mismatches
            .iter()
            .all(|r| r.remote_addr.as_deref() == Some("127.0.0.2")),
        "attributed to the guessing source"
    );
}

/// The first events of Core's stream (the current state of jobs and nodes), as text.
async fn core_events(core: &str, token: &str) -> String {
    let mut response = http()
        .get(format!("{core}/api/events"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(1500), response.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            _ => break,
        }
    }
    assert!(text.contains("event: job"), "{text}");
    text
}

/// A command handler runs with an empty environment plus PATH, HOME, LANG, TZ and what its
/// handler names: it cannot read the node's mesh token or API keys, neither from its own
/// environment nor from its worker's (`/proc/PPID/environ`: the worker is not dumpable). And a
/// token given as a file never shows in the process list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_and_the_process_list_do_not_see_the_token() {
    use std::os::unix::fs::PermissionsExt;
    let hub = hub().start();
    let token = hub.token();
    let bin = env!("CARGO_BIN_EXE_sheratan");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let handlers = dir.path().join("handlers.toml");
    std::fs::write(
        &handlers,
        r#"[handlers.envdump]
command = ["/bin/sh", "-c", "printf '{\"token\":\"%s\",\"key\":\"%s\",\"parent\":%s,\"path\":\"%s\",\"mine\":\"%s\",\"count\":%s}' \"$SHERATAN_HUB_TOKEN\" \"$SHERATAN_OPENAI_API_KEY\" \"$(tr '\\0' '\\n' < /proc/$PPID/environ 2>/dev/null | grep -c SHERATAN_HUB_TOKEN)\" \"$PATH\" \"$MINE\" \"$(env | wc -l)\""]
env = { MINE = "yes" }
"#,
    )
    .unwrap();
    std::fs::set_permissions(&handlers, std::fs::Permissions::from_mode(0o644)).unwrap();
    // As an unprivileged user where this test can switch to one (as root, it could read any
    // process's environment anyway): the worker's secrets are in its environment.
    let setpriv = std::path::Path::new("/usr/bin/setpriv");
    let as_nobody = ["--reuid=65534", "--regid=65534", "--clear-groups", "--"];
    let unprivileged = setpriv.exists()
        && std::process::Command::new(setpriv)
            .args(as_nobody)
            .args([bin, "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
    let worker_args = [
        "worker",
        "--node-id",
        "w-env",
        "--queues",
        "env",
        "--handlers",
        handlers.to_str().unwrap(),
        "--control-url",
        &hub.control_url,
        "--data-url",
        &hub.data_url,
    ];
    let env = [
        ("SHERATAN_HUB_TOKEN", token.as_str()),
        ("SHERATAN_OPENAI_API_KEY", "sk-node-secret-key"),
    ];
    let _worker = if unprivileged {
        let mut args: Vec<&str> = as_nobody.to_vec();
        args.push(bin);
        args.extend(worker_args);
        sheratan_testkit::Proc::start(setpriv, &args, &env, true)
    } else {
        eprintln!(
            "note: not root, so the worker runs as this user; /proc/PPID/environ is not probed"
        );
        sheratan_testkit::Proc::start(std::path::Path::new(bin), &worker_args, &env, true)
    };
    let (_, job) = submit(
        &hub.data_url,
        &token,
        &serde_json::json!({"queue": "env", "kind": "envdump", "payload": {}, "required_capabilities": ["envdump"]}),
    )
    .await;
    let view = wait_finished(&hub.data_url, &token, job["job_id"].as_str().unwrap()).await;
    assert_eq!(view["status"], "completed", "{view}");
    let result = &view["result"];
    assert_eq!(result["token"], "", "{result}");
    assert_eq!(result["key"], "", "{result}");
    assert_eq!(result["mine"], "yes", "{result}");
    if unprivileged {
        assert_eq!(
            result["parent"], 0,
            "the worker's environment was readable: {result}"
        );
    }
    assert!(!result["path"].as_str().unwrap().is_empty());
    // PATH, HOME (and LANG, TZ where set), MINE, and what sh itself adds (PWD, SHLVL, _).
    assert!(result["count"].as_u64().unwrap() <= 9, "{result}");

    // A token from a file: the worker gets in, and the token is not on its command line.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let from_file = sheratan_testkit::Proc::start(
        std::path::Path::new(bin),
        &[
            "worker",
            "--node-id",
            "w-file",
            "--token-file",
            token_file.to_str().unwrap(),
            "--control-url",
            &hub.control_url,
            "--data-url",
            &hub.data_url,
        ],
        &[],
        true,
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", from_file.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(&token));
    let registered = sheratan_testkit::wait_for(Duration::from_secs(10), || {
        let (_, nodes) = futures_block(get(
            &format!("{}/v1/nodes/w-file", hub.control_url),
            Auth::Bearer(&token),
        ));
        (nodes["status"] == "ONLINE").then_some(())
    });
    assert!(
        registered.is_some(),
        "the worker with a token file heartbeats"
    );

    // --help says why --token is discouraged.
    let help = std::process::Command::new(bin)
        .args(["worker", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--token-file"), "{help}");
    assert!(help.contains("/proc/PID/cmdline"), "{help}");
}

/// Waits until the job is completed or failed; its view.
async fn wait_finished(data: &str, token: &str, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, view) = get(&format!("{data}/v1/jobs/{id}"), Auth::Bearer(token)).await;
        if view["status"] == "completed" || view["status"] == "failed" {
            return view;
        }
        assert!(Instant::now() < deadline, "the job did not finish: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a future to completion from synchronous code inside a multi-threaded test.
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// A password in the OpenAI backend's URL is never shown: not by the relay's public /health,
/// its banner, Core's overview (which the dashboard's Relay view shows) or a job's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_passwords_are_not_shown() {
    let password = "openai-url-password";
    let base_url = format!("http://relayuser:{password}@127.0.0.1:9/v1");
    let hub = hub()
        .up()
        .env("SHERATAN_OPENAI_BASE_URL", &base_url)
        .env("SHERATAN_OPENAI_MODEL", "m")
        .start();
    let token = hub.token();
    let (_, health) = get(&format!("{}/health", hub.urls["relay"]), Auth::None).await;
    assert_eq!(
        health["backends"]["openai"]["base_url"], "http://***@127.0.0.1:9/v1",
        "{health}"
    );
    let (_, overview) = get(
        &format!("{}/api/overview", hub.urls["core"]),
        Auth::Bearer(&token),
    )
    .await;
    assert!(
        overview.to_string().contains("***@127.0.0.1:9"),
        "{overview}"
    );
    // A job that fails against the server names it without the password.
    let (_, job) = submit(
        &hub.data_url,
        &token,
        &serde_json::json!({"queue": "llm", "kind": "llm", "payload": {"prompt": "hi", "backend": "openai"}, "max_attempts": 1}),
    )
    .await;
    let view = wait_finished(&hub.data_url, &token, job["job_id"].as_str().unwrap()).await;
    assert_eq!(view["status"], "failed", "{view}");
    let shown = [
        health.to_string(),
        overview.to_string(),
        view.to_string(),
        hub.stdout(),
    ];
    for text in &shown {
        assert!(!text.contains(password), "the password leaked: {text}");
    }
    // The stand-alone relay's banner and /health, with a DevTools URL that carries one too.
    let cdp_password = "cdp-url-password";
    let relay = sheratan_testkit::Proc::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_sheratan")),
        &[
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--control-url",
            &hub.control_url,
            "--data-url",
            &hub.data_url,
        ],
        &[
            ("SHERATAN_HUB_TOKEN", &token),
            ("SHERATAN_OPENAI_BASE_URL", &base_url),
            ("SHERATAN_OPENAI_MODEL", "m"),
            (
                "SHERATAN_CDP_URL",
                &format!("http://cdpuser:{cdp_password}@127.0.0.1:9"),
            ),
        ],
        true,
    );
    let banner = relay.stdout();
    assert!(
        banner.contains("openai: http://***@127.0.0.1:9/v1"),
        "{banner}"
    );
    assert!(
        banner.contains("Chrome at http://***@127.0.0.1:9"),
        "{banner}"
    );
    let (_, health) = get(&format!("{}/health", relay.urls["relay"]), Auth::None).await;
    for text in [banner, health.to_string()] {
        assert!(
            !text.contains(password) && !text.contains(cdp_password),
            "{text}"
        );
    }

    // A node address with a password is refused, so no registry view can show one.
    let (status, body) = post(
        &format!("{}/v1/heartbeat", hub.control_url),
        Auth::Bearer(&token),
        r#"{"node_id":"h-cred","role":"host","addr":"http://hostuser:host-pass@127.0.0.1:9"}"#,
    )
    .await;
    let (message, _) = assert_error(status, &body, 400, "INVALID_REQUEST");
    assert!(message.starts_with("addr:"), "{message}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sheratan"))
        .args([
            "host",
            "--listen",
            "127.0.0.1:0",
            "--advertise",
            "http://hostuser:host-pass@127.0.0.1:9",
        ])
        .env("SHERATAN_HUB_TOKEN", &token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("host-pass"));
}
