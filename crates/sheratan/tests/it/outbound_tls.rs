//! Outbound HTTPS for jobs: the `http` handler and the relay's OpenAI backend reach `https://`
//! servers verified against the system's roots plus the mesh CA (`SHERATAN_CA_FILE`). The
//! "hosted API" is a small TLS server in the test whose certificate comes from a test CA.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sheratan_runtime::ca::MeshCa;
use sheratan_runtime::tls::TlsServer;
use sheratan_testkit::Proc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::common::*;

/// A test CA in `dir/tls` and a server certificate from it for `ip`.
pub fn test_ca(dir: &Path, ip: &str) -> (PathBuf, TlsServer) {
    let ca = MeshCa::open_or_create(&dir.join("tls")).unwrap();
    let (files, _) = ca.server_cert("api", &[ip.to_owned()]).unwrap();
    (ca.cert_path(), TlsServer::load(files).unwrap())
}

/// An HTTPS server on `ip` answering every request with `answer(head, body)` (the request
/// line and headers, and the body), as JSON when the answer parses as JSON.
pub async fn https_server(
    ip: &str,
    tls: TlsServer,
    answer: impl Fn(&str, &str) -> String + Send + Sync + 'static,
) -> SocketAddr {
    let answer = std::sync::Arc::new(answer);
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = tls.acceptor().clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                let Ok(mut stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Head, then as much body as Content-Length says.
                let (head, want) = loop {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (end + 4, len);
                    }
                };
                while buf.len() < head + want {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&buf[..head]).into_owned();
                let body = String::from_utf8_lossy(&buf[head..head + want]).into_owned();
                let reply = answer(&text, &body);
                let kind = match serde_json::from_str::<Value>(&reply) {
                    Ok(_) => "application/json",
                    Err(_) => "text/plain",
                };
                let out = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                    reply.len()
                );
                let _ = stream.write_all(out.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// The path of a request's head.
fn path_of(head: &str) -> &str {
    head.split_whitespace().nth(1).unwrap_or("/")
}

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sheratan"))
}

/// A worker for `queue` with the `http` handler on (127.0.0.2 allowed), trusting `ca` if given.
fn http_worker(
    hub: &sheratan_testkit::HubProcess,
    dir: &Path,
    queue: &str,
    ca: Option<&Path>,
) -> Proc {
    let handlers = dir.join(format!("{queue}.toml"));
    std::fs::write(
        &handlers,
        "[http]\nenabled = true\nallow_hosts = [\"127.0.0.2\"]\n",
    )
    .unwrap();
    let handlers = handlers.display().to_string();
    let token = hub.token();
    let ca = ca.map(|p| p.display().to_string()).unwrap_or_default();
    Proc::start(
        bin(),
        &[
            "worker",
            "--node-id",
            &format!("w-{queue}"),
            "--queues",
            queue,
            "--control-url",
            &hub.control_url,
            "--data-url",
            &hub.data_url,
            "--handlers",
            &handlers,
        ],
        &[("SHERATAN_HUB_TOKEN", &token), ("SHERATAN_CA_FILE", &ca)],
        true,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_job_fetches_an_https_url_verified_against_the_mesh_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, tls) = test_ca(dir.path(), "127.0.0.2");
    let api = https_server("127.0.0.2", tls, |head, _| {
        json!({"path": path_of(head)}).to_string()
    })
    .await;
    let hub = hub().start();
    let token = hub.token();
    let url = format!("https://{api}/hello");

    let _trusting = http_worker(&hub, dir.path(), "trusting", Some(&ca));
    let view = crate::ssrf::run_job(
        &hub.data_url,
        &token,
        "trusting",
        json!({"url": url}),
        false,
    )
    .await;
    assert_eq!(view["status"], "completed", "{view}");
    assert_eq!(view["result"]["status"], 200, "{view}");
    assert!(
        view["result"]["body"]
            .as_str()
            .unwrap()
            .contains("\"/hello\""),
        "{view}"
    );

    // The same server to a worker without the CA: the certificate is refused, nothing fetched.
    let _other = http_worker(&hub, dir.path(), "untrusting", None);
    let view = crate::ssrf::run_job(
        &hub.data_url,
        &token,
        "untrusting",
        json!({"url": url}),
        false,
    )
    .await;
    assert_eq!(view["status"], "failed", "{view}");
    let message = view["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("is not trusted (invalid peer certificate: UnknownIssuer)"),
        "{message}"
    );
    assert_eq!(view["error"]["retryable"], false, "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_job_completes_through_an_openai_compatible_server_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, tls) = test_ca(dir.path(), "127.0.0.1");
    let api = https_server("127.0.0.1", tls, |head, body| {
        let path = path_of(head);
        let asked: Value = serde_json::from_str(body).unwrap_or_default();
        let prompt = asked["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_uppercase();
        json!({"choices": [{"message": {"role": "assistant", "content": format!("{path} {prompt}")}}]})
            .to_string()
    })
    .await;
    let hub = hub().start();
    let token = hub.token();
    let home = hub.home.display().to_string();
    let base = format!("https://{api}/v1");
    let ca = ca.display().to_string();
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let _relay = Proc::start(
        bin(),
        &["relay", "--listen", &listen, "--home", &home],
        &[
            ("SHERATAN_CONTROL_URL", hub.control_url.as_str()),
            ("SHERATAN_DATA_URL", hub.data_url.as_str()),
            ("SHERATAN_HUB_TOKEN", &token),
            ("SHERATAN_OPENAI_BASE_URL", &base),
            ("SHERATAN_OPENAI_MODEL", "m"),
            ("SHERATAN_RELAY_BACKEND", "openai"),
            ("SHERATAN_CA_FILE", &ca),
        ],
        true,
    );
    let (status, job) = submit(
        &hub.data_url,
        &token,
        &json!({"queue": "llm", "kind": "chat", "payload": {"prompt": "ping"}, "max_attempts": 1}),
    )
    .await;
    assert!(status.is_success(), "{job}");
    let id = job["job_id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let view = loop {
        let (_, view) = get(
            &format!("{}/v1/jobs/{id}", hub.data_url),
            Auth::Bearer(&token),
        )
        .await;
        if matches!(view["status"].as_str(), Some("completed" | "failed")) {
            break view;
        }
        assert!(Instant::now() < deadline, "the job did not finish: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(view["status"], "completed", "{view}");
    assert_eq!(
        view["result"]["text"], "/v1/chat/completions PING",
        "{view}"
    );
    assert_eq!(view["result"]["backend"], "openai", "{view}");
}
