//! The `http` handler is not an open proxy: off unless an operator turns it on, and then it
//! refuses internal destinations (checked after DNS and at every redirect), credentials and
//! routing headers, methods outside its list, and answers larger than its cap. The attacks
//! are the adversarial review's, through a real hub and worker; "outside" is a test server
//! on 127.0.0.2 that the handlers file allows, "inside" one on 127.0.0.1 that nothing may
//! reach.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sheratan_testkit::Proc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

/// A small HTTP server: `/hello`, `/redirect?to=URL` (302), `/big` (an endless body), and
/// anything else echoed. Counts the requests it gets.
async fn test_server(ip: &str) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(answer(stream));
        }
    });
    (addr, hits)
}

async fn answer(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    if target == "/hello" {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
            .await;
    } else if let Some(to) = target.strip_prefix("/redirect?to=") {
        let reply = format!(
            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let _ = stream.write_all(reply.as_bytes()).await;
    } else if target == "/big" {
        // 200 MB if anyone reads that far; chunked, so the length is not known up front.
        let _ = stream
            .write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            )
            .await;
        let chunk = vec![b'x'; 64 * 1024];
        let framed = [
            format!("{:x}\r\n", chunk.len()).into_bytes(),
            chunk,
            b"\r\n".to_vec(),
        ]
        .concat();
        for _ in 0..(200 * 16) {
            if stream.write_all(&framed).await.is_err() {
                return;
            }
        }
        let _ = stream.write_all(b"0\r\n\r\n").await;
    } else {
        let body = head.replace("\r\n", "\n");
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(reply.as_bytes()).await;
    }
}

/// Submits an `http` job to `queue` (one attempt) and waits for it to finish.
pub async fn run_job(data: &str, token: &str, queue: &str, payload: Value, require: bool) -> Value {
    let caps: Vec<&str> = if require { vec!["http"] } else { vec![] };
    let (status, job) = submit(
        data,
        token,
        &json!({"queue": queue, "kind": "http", "payload": payload, "max_attempts": 1, "required_capabilities": caps}),
    )
    .await;
    assert!(status.is_success(), "{job}");
    let id = job["job_id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, view) = get(&format!("{data}/v1/jobs/{id}"), Auth::Bearer(token)).await;
        if matches!(view["status"].as_str(), Some("completed" | "failed")) {
            return view;
        }
        assert!(Instant::now() < deadline, "the job did not finish: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[track_caller]
fn assert_refused(view: &Value, why: &str) {
    assert_eq!(view["status"], "failed", "{view}");
    let message = view["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(why), "expected {why:?}: {message}");
    assert_eq!(view["error"]["retryable"], false, "{view}");
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn worker(
    hub: &sheratan_testkit::HubProcess,
    node: &str,
    queue: &str,
    handlers: Option<&Path>,
) -> Proc {
    let mut args = vec![
        "worker".to_owned(),
        "--node-id".into(),
        node.into(),
        "--queues".into(),
        queue.into(),
        "--control-url".into(),
        hub.control_url.clone(),
        "--data-url".into(),
        hub.data_url.clone(),
    ];
    if let Some(path) = handlers {
        args.push("--handlers".into());
        args.push(path.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::start(
        Path::new(env!("CARGO_BIN_EXE_sheratan")),
        &args,
        &[("SHERATAN_HUB_TOKEN", &hub.token())],
        true,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_handler_is_off_by_default() {
    let hub = hub().start();
    let token = hub.token();
    let _plain = worker(&hub, "w-plain", "plain", None);
    let (_, outside_hits) = test_server("127.0.0.2").await;
    // The worker does not offer `http`: the job is never leased to it, and the submit says so.
    let (status, job) = submit(
        &hub.data_url,
        &token,
        &json!({"queue": "plain", "kind": "http", "payload": {"url": "http://127.0.0.2:9/hello"}}),
    )
    .await;
    assert_eq!(status.as_u16(), 202, "{job}");
    assert!(
        job["warning"]
            .as_str()
            .is_some_and(|w| w.contains("kind \"http\"")),
        "{job}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let id = job["job_id"].as_str().unwrap();
    let (_, view) = get(
        &format!("{}/v1/jobs/{id}", hub.data_url),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(
        (view["status"].as_str(), view["attempt"].as_u64()),
        (Some("accepted"), Some(0)),
        "{view}"
    );
    assert_eq!(outside_hits.load(Ordering::Relaxed), 0);
    let (_, nodes) = get(
        &format!("{}/v1/nodes", hub.control_url),
        Auth::Bearer(&token),
    )
    .await;
    let caps = &nodes["nodes"][0]["capabilities"];
    assert_eq!(*caps, json!(["echo", "sleep"]), "{nodes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_handler_refuses_what_would_make_it_a_proxy() {
    let hub = hub().start();
    let token = hub.token();
    let data = hub.data_url.clone();
    let (outside, _) = test_server("127.0.0.2").await;
    let (inside, inside_hits) = test_server("127.0.0.1").await;
    let dir = tempfile::tempdir().unwrap();
    let handlers = dir.path().join("handlers.toml");
    std::fs::write(
        &handlers,
        "[http]\nenabled = true\nallow_hosts = [\"127.0.0.2\"]\nmax_response_bytes = 1048576\n",
    )
    .unwrap();
    let w = worker(&hub, "w-http", "web", Some(&handlers));

    // Allowed: a destination the operator named.
    let view = run_job(
        &data,
        &token,
        "web",
        json!({"url": format!("http://{outside}/hello")}),
        true,
    )
    .await;
    assert_eq!(view["status"], "completed", "{view}");
    assert_eq!(view["result"], json!({"status": 200, "body": "hello"}));

    // The review's attack: publish a bundle through the hub's loopback-only admin path.
    let admin = format!("{data}/admin/bundles/evil.sh");
    let view = run_job(
        &data,
        &token,
        "web",
        json!({"url": admin, "method": "PUT", "headers": {"Authorization": format!("Bearer {token}")}, "body": "#!/bin/sh\nid\n"}),
        true,
    )
    .await;
    assert_eq!(view["status"], "failed", "{view}");
    let (status, _) = get(
        &format!("{}/v1/bundles/evil.sh", hub.control_url),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(status.as_u16(), 404, "no bundle was published");
    // Each part of it is refused on its own.
    let view = run_job(&data, &token, "web", json!({"url": admin}), true).await;
    assert_refused(&view, "internal address");
    let view = run_job(
        &data,
        &token,
        "web",
        json!({"url": format!("http://{outside}/x"), "method": "PUT"}),
        true,
    )
    .await;
    assert_refused(&view, "method PUT is not allowed");
    for header in [
        "Authorization",
        "Cookie",
        "Host",
        "X-Sheratan-Token",
        "x-sheratan-signature",
    ] {
        let view = run_job(
            &data,
            &token,
            "web",
            json!({"url": format!("http://{outside}/x"), "headers": {header: "v"}}),
            true,
        )
        .await;
        assert_refused(&view, "cannot be set by a job");
    }

    // Internal destinations, by address, by name (after DNS) and at a redirect.
    for url in [
        format!("http://{inside}/health"),
        format!("http://localhost:{}/health", inside.port()),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://[::ffff:127.0.0.1]:{}/", inside.port()),
        "http://0.0.0.0:8788/health".to_owned(),
        "http://10.0.0.1/".to_owned(),
    ] {
        let view = run_job(&data, &token, "web", json!({"url": url}), true).await;
        assert_refused(&view, "internal address");
    }
    let view = run_job(
        &data,
        &token,
        "web",
        json!({"url": format!("http://{outside}/redirect?to=http://{inside}/health")}),
        true,
    )
    .await;
    assert_refused(&view, "redirect refused");
    let view = run_job(
        &data,
        &token,
        "web",
        json!({"url": format!("http://{outside}/redirect?to=http://localhost:{}/health", inside.port())}),
        true,
    )
    .await;
    assert_refused(&view, "internal address");
    // Credentials in the URL would become an Authorization header.
    let view = run_job(
        &data,
        &token,
        "web",
        json!({"url": format!("http://Bearer:tok@{outside}/hello")}),
        true,
    )
    .await;
    assert_refused(&view, "user name or password");
    assert_eq!(
        inside_hits.load(Ordering::Relaxed),
        0,
        "nothing reached the inside server"
    );

    // This machine's own (non-loopback) address reaches whatever listens on 0.0.0.0 here.
    let everywhere = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = everywhere.local_addr().unwrap().port();
    let own = sheratan_testkit::non_loopback_ipv4().expect("a non-loopback IPv4 address");
    let view = run_job(
        &data,
        &token,
        "web",
        json!({"url": format!("http://{own}:{port}/")}),
        true,
    )
    .await;
    assert_refused(&view, "internal address");
    drop(everywhere);

    // A 200 MB answer: the job fails at the cap and the worker's memory stays flat.
    let before = rss_kib(w.pid());
    let view = run_job(
        &data,
        &token,
        "web",
        json!({"url": format!("http://{outside}/big")}),
        true,
    )
    .await;
    assert_refused(&view, "larger than http.max_response_bytes");
    let after = rss_kib(w.pid());
    assert!(
        after < before + 32 * 1024,
        "worker RSS grew from {before} KiB to {after} KiB"
    );
}
