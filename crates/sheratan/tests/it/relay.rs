//! The WebRelay (issue 7) in a real headless Chromium (Debian's package) driving chat pages the
//! test serves itself, and the OpenAI backend against a small local server speaking the
//! chat-completions format. The relay is a real `sheratan relay` process.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sheratan_testkit::{HubProcess, Proc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sheratan"))
}

fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

/// A chat page: answers `delay_ms` after the prompt is sent, streaming "You said: <prompt>"
/// word by word (every 100 ms) under a typing indicator; `delay_ms` < 0 never answers.
fn chat_page(delay_ms: i64) -> String {
    format!(
        r#"<!doctype html><html><body>
<div id="log"><div class="msg bot">Hello! I am a greeting, not an answer.</div></div>
<textarea id="q"></textarea><button id="send">Send</button>
<script>
const log = document.getElementById('log'), q = document.getElementById('q');
function send() {{
  const text = q.value; q.value = '';
  const me = document.createElement('div'); me.className = 'msg user'; me.textContent = text; log.appendChild(me);
  const typing = document.createElement('div'); typing.className = 'typing'; typing.textContent = '...'; log.appendChild(typing);
  if ({delay_ms} < 0) return;
  setTimeout(() => {{
    const bot = document.createElement('div'); bot.className = 'msg bot'; log.appendChild(bot);
    const words = ('You said: ' + text).split(' '); let i = 0;
    const t = setInterval(() => {{
      bot.textContent += (i ? ' ' : '') + words[i++];
      if (i >= words.length) {{ clearInterval(t); typing.remove(); }}
    }}, 100);
  }}, {delay_ms});
}}
document.getElementById('send').onclick = send;
q.addEventListener('keydown', e => {{ if (e.key === 'Enter') {{ e.preventDefault(); send(); }} }});
</script></body></html>"#
    )
}

/// A request the stand-in servers saw.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: String,
    body: String,
}

/// A tiny real HTTP/1.1 server: `answer(path, body)` → (status, content type, body).
/// Connection: close, one request per connection.
async fn serve(
    answer: impl Fn(&str, &str) -> (u16, &'static str, String) + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let answer = Arc::new(answer);
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (answer, log) = (answer.clone(), log.clone());
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut buf = [0u8; 8192];
                let (head, body) = loop {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    raw.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&raw).into_owned();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let head = text[..end].to_owned();
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if raw.len() >= end + 4 + length {
                            break (
                                head,
                                String::from_utf8_lossy(&raw[end + 4..end + 4 + length])
                                    .into_owned(),
                            );
                        }
                    }
                };
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                log.lock().unwrap().push(Seen {
                    path: path.clone(),
                    headers: head.clone(),
                    body: body.clone(),
                });
                let (status, kind, text) = answer(&path, &body);
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (url, seen)
}

/// The chat pages: `/chat.html` (answers after 400 ms), `/slow.html` (after 1.5 s),
/// `/crawl.html` (after 6 s), `/silent.html` (never).
async fn chat_site() -> String {
    let (url, _) = serve(|path, _| {
        let delay = match path {
            "/chat.html" => 400,
            "/slow.html" => 1500,
            "/crawl.html" => 6000,
            "/silent.html" => -1,
            _ => return (404, "text/plain", "not found".into()),
        };
        (200, "text/html; charset=utf-8", chat_page(delay))
    })
    .await;
    url
}

fn profiles_file(dir: &Path, site: &str) -> String {
    let path = dir.join("profiles.toml");
    let mut text = String::new();
    for (name, page, timeout, submit) in [
        ("local-chat", "chat.html", 30, "button#send"),
        ("enter-chat", "chat.html", 30, "Enter"),
        ("slow-chat", "slow.html", 30, "button#send"),
        ("crawl-chat", "crawl.html", 30, "button#send"),
        ("silent-chat", "silent.html", 2, "button#send"),
    ] {
        text.push_str(&format!(
            "[profiles.{name}]\nurl = \"{site}/{page}\"\ninput = \"textarea\"\nsubmit = \"{submit}\"\nanswer = \".msg.bot\"\nbusy = \".typing\"\nstable_ms = 300\ntimeout_s = {timeout}\n\n"
        ));
    }
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn relay(hub: &HubProcess, token: &str, extra: &[&str], env: &[(&str, &str)]) -> Proc {
    let listen = free_addr();
    let home = hub.home.to_string_lossy().into_owned();
    let mut args = vec!["relay", "--listen", &listen, "--home", &home];
    args.extend_from_slice(extra);
    let mut all = vec![
        ("SHERATAN_CONTROL_URL", hub.control_url.as_str()),
        ("SHERATAN_DATA_URL", hub.data_url.as_str()),
        ("SHERATAN_HUB_TOKEN", token),
    ];
    all.extend_from_slice(env);
    Proc::start(bin(), &args, &all, true)
}

async fn cdp_relay(hub: &HubProcess, token: &str, site: &str) -> Proc {
    let profiles = profiles_file(&hub.home, site);
    relay(
        hub,
        token,
        &["--launch-chromium", "1", "--relay-profiles", &profiles],
        &[],
    )
}

fn quick_hub() -> HubProcess {
    hub().env("SHERATAN_RETRY_BASE_MS", "300").start()
}

async fn complete(relay: &Proc, token: &str, body: Value) -> (StatusCode, Value) {
    post(
        &format!("{}/v1/complete", relay.urls["relay"]),
        Auth::Bearer(token),
        &body.to_string(),
    )
    .await
}

async fn submit_llm(hub: &HubProcess, token: &str, payload: Value) -> String {
    let body = json!({"queue": "llm", "kind": "chat", "payload": payload});
    let (status, answer) = post(
        &format!("{}/v1/jobs", hub.data_url),
        Auth::Bearer(token),
        &body.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    answer["job_id"].as_str().unwrap().to_owned()
}

async fn wait_job(
    hub: &HubProcess,
    token: &str,
    job_id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..600 {
        let (_, job) = get(
            &format!("{}/v1/jobs/{job_id}", hub.data_url),
            Auth::Bearer(token),
        )
        .await;
        if done(&job) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {job_id} never got there");
}

async fn sessions(relay: &Proc, token: &str) -> Vec<Value> {
    let (status, body) = get(
        &format!("{}/v1/sessions", relay.urls["relay"]),
        Auth::Bearer(token),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["sessions"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdp_returns_the_whole_streamed_answer_sync_and_as_a_job() {
    let hub = quick_hub();
    let token = hub.token();
    let site = chat_site().await;
    let relay = cdp_relay(&hub, &token, &site).await;

    let (status, body) = complete(
        &relay,
        &token,
        json!({"prompt": "hello relay from a test", "profile": "local-chat"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The whole final answer: not the greeting, not a partial stream.
    assert_eq!(body["text"], "You said: hello relay from a test", "{body}");
    assert_eq!(body["backend"], "cdp");
    assert!(body["elapsed_ms"].as_u64().unwrap() >= 400 + 500, "{body}");

    // Enter as the submit key, and a system message in front of the prompt.
    let (status, body) = complete(
        &relay,
        &token,
        json!({"prompt": "two", "system": "one", "profile": "enter-chat"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // (The page renders the newlines between them as a space.)
    assert_eq!(body["text"], "You said: one two", "{body}");

    // The same through the llm queue.
    let job_id = submit_llm(
        &hub,
        &token,
        json!({"prompt": "queued prompt", "profile": "local-chat"}),
    )
    .await;
    let job = wait_job(&hub, &token, &job_id, |j| {
        j["status"] == "completed" || j["status"] == "failed"
    })
    .await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["result"]["text"], "You said: queued prompt");
    assert_eq!(job["result"]["backend"], "cdp");
    assert!(
        sessions(&relay, &token).await.is_empty(),
        "tabs are closed after each job"
    );

    let (_, health) = get(&format!("{}/health", relay.urls["relay"]), Auth::None).await;
    assert_eq!(health["backends"]["cdp"]["state"], "connected", "{health}");
    assert_eq!(health["backends"]["openai"]["state"], "not_configured");
    let metrics = metrics_text(&relay.urls["relay"], &token).await;
    for line in [
        "sheratan_relay_jobs_total{backend=\"cdp\",outcome=\"success\"} 3\n",
        "sheratan_relay_tabs_open 0\n",
        "sheratan_relay_browser_connected 1\n",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    let (_, nodes) = get(
        &format!("{}/v1/nodes?role=relay", hub.control_url),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(nodes["nodes"][0]["node_id"], "relay", "{nodes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_never_answers_times_out_and_its_tab_is_closed() {
    let hub = quick_hub();
    let token = hub.token();
    let site = chat_site().await;
    let relay = cdp_relay(&hub, &token, &site).await;
    let (status, body) = complete(
        &relay,
        &token,
        json!({"prompt": "anyone?", "profile": "silent-chat"}),
    )
    .await;
    let (message, _) = assert_error(status, &body, 503, "UNAVAILABLE");
    assert!(message.contains("timeout"), "{message}");
    assert!(
        sessions(&relay, &token).await.is_empty(),
        "the tab is closed after a timeout"
    );
    // The evidence is kept for diagnosis.
    let kept: Vec<String> = std::fs::read_dir(hub.home.join("relay"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert!(
        kept.iter().any(|f| f.ends_with(".png")),
        "no screenshot: {kept:?}"
    );
    assert!(
        kept.iter().any(|f| f.ends_with(".html")),
        "no page HTML: {kept:?}"
    );

    // As a job: a retryable failure with the reason.
    let job_id = submit_llm(
        &hub,
        &token,
        json!({"prompt": "still there?", "profile": "silent-chat"}),
    )
    .await;
    let job = wait_job(&hub, &token, &job_id, |j| j["error"].is_object()).await;
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timeout"),
        "{job}"
    );
    assert_eq!(job["error"]["retryable"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_killed_mid_job_fails_that_job_retryably_and_the_next_one_succeeds() {
    let hub = quick_hub();
    let token = hub.token();
    let site = chat_site().await;
    let relay = cdp_relay(&hub, &token, &site).await;
    let job_id = submit_llm(
        &hub,
        &token,
        json!({"prompt": "slowly", "profile": "crawl-chat"}),
    )
    .await;
    let mut pid = None;
    for _ in 0..200 {
        let (_, health) = get(&format!("{}/health", relay.urls["relay"]), Auth::None).await;
        if health["tabs"]["open"] == 1 {
            pid = health["backends"]["cdp"]["pid"].as_u64();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = pid.expect("the job never opened a tab");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let job = wait_job(&hub, &token, &job_id, |j| j["error"].is_object()).await;
    assert_eq!(job["error"]["retryable"], true, "{job}");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains("browser went away"),
        "{job}"
    );

    // The next job relaunches Chromium and succeeds.
    let (status, body) = complete(
        &relay,
        &token,
        json!({"prompt": "after the crash", "profile": "local-chat"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["text"], "You said: after the crash");
    let (_, health) = get(&format!("{}/health", relay.urls["relay"]), Auth::None).await;
    assert_eq!(health["backends"]["cdp"]["launches"], 2, "{health}");
    // And the hub's retry of the interrupted job completes on the new browser.
    let job = wait_job(&hub, &token, &job_id, |j| j["status"] == "completed").await;
    assert_eq!(job["attempt"], 2, "{job}");
    assert_eq!(job["result"]["text"], "You said: slowly");
    assert!(sessions(&relay, &token).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_concurrent_jobs_use_four_tabs() {
    let hub = quick_hub();
    let token = hub.token();
    let site = chat_site().await;
    let relay = cdp_relay(&hub, &token, &site).await;
    // Launch the browser first, so the four jobs race for tabs, not for the launch.
    let (status, _) = complete(
        &relay,
        &token,
        json!({"prompt": "warm up", "profile": "local-chat"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            submit_llm(
                &hub,
                &token,
                json!({"prompt": format!("job {i}"), "profile": "slow-chat"}),
            )
            .await,
        );
    }
    let mut most = 0;
    for _ in 0..100 {
        let open = sessions(&relay, &token).await;
        most = most.max(open.len());
        if most == 4 {
            let jobs: std::collections::BTreeSet<String> = open
                .iter()
                .map(|s| s["job_id"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(jobs, ids.iter().cloned().collect(), "one tab per job");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(most, 4, "four jobs never had four tabs open at once");
    for (i, id) in ids.iter().enumerate() {
        let job = wait_job(&hub, &token, id, |j| j["status"] == "completed").await;
        assert_eq!(job["result"]["text"], format!("You said: job {i}"));
    }
    assert!(sessions(&relay, &token).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_backend_speaks_chat_completions_and_retries_429() {
    let calls = Arc::new(Mutex::new(0u32));
    let counter = calls.clone();
    let (base, seen) = serve(move |path, body| {
        if path != "/v1/chat/completions" {
            return (404, "application/json", "{}".into());
        }
        let n = {
            let mut c = counter.lock().unwrap();
            *c += 1;
            *c
        };
        let request: Value = serde_json::from_str(body).unwrap_or_default();
        let user = request["messages"].as_array().and_then(|m| m.last()).map(|m| m["content"].as_str().unwrap_or("").to_owned()).unwrap_or_default();
        match (n, user.as_str()) {
            (1, _) => (429, "application/json", r#"{"error":{"message":"slow down"}}"#.into()),
            (_, "refuse") => (400, "application/json", r#"{"error":{"message":"bad request"}}"#.into()),
            _ => (
                200,
                "application/json",
                json!({"id": "c1", "object": "chat.completion", "model": request["model"], "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": user.to_uppercase()}}]}).to_string(),
            ),
        }
    })
    .await;
    let hub = quick_hub();
    let token = hub.token();
    let base_url = format!("{base}/v1");
    let relay = relay(
        &hub,
        &token,
        &[],
        &[
            ("SHERATAN_OPENAI_BASE_URL", base_url.as_str()),
            ("SHERATAN_OPENAI_MODEL", "test-model"),
            ("SHERATAN_OPENAI_API_KEY", "sk-test"),
            ("SHERATAN_RELAY_BACKEND", "openai"),
        ],
    );
    let (status, body) = complete(
        &relay,
        &token,
        json!({"prompt": "ping", "system": "be brief"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["text"], "PING");
    assert_eq!(body["backend"], "openai");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "one 429, then the retry");
        let last = &seen[1];
        assert_eq!(last.path, "/v1/chat/completions");
        assert!(
            last.headers
                .to_ascii_lowercase()
                .contains("authorization: bearer sk-test"),
            "{}",
            last.headers
        );
        let request: Value = serde_json::from_str(&last.body).unwrap();
        assert_eq!(request["model"], "test-model");
        assert_eq!(
            request["messages"],
            json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "ping"}])
        );
    }
    // A 400 is not retried and says what the server said.
    let (status, body) = complete(&relay, &token, json!({"prompt": "refuse"})).await;
    let (message, _) = assert_error(status, &body, 503, "UNAVAILABLE");
    assert!(message.contains("400"), "{message}");
    assert_eq!(seen.lock().unwrap().len(), 3);

    // Through the queue, by default backend.
    let job_id = submit_llm(&hub, &token, json!({"prompt": "queued"})).await;
    let job = wait_job(&hub, &token, &job_id, |j| j["status"] == "completed").await;
    assert_eq!(job["result"]["text"], "QUEUED");
    assert_eq!(job["result"]["backend"], "openai");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_refuses_bad_input() {
    let hub = quick_hub();
    let token = hub.token();
    let relay = relay(&hub, &token, &["--cdp-url", "http://127.0.0.1:9"], &[]);
    let url = format!("{}/v1/complete", relay.urls["relay"]);
    let (s, b) = post(&url, Auth::None, r#"{"prompt":"x"}"#).await;
    assert_error(s, &b, 403, "AUTH_FAIL");
    let (s, b) = get(
        &format!("{}/v1/sessions", relay.urls["relay"]),
        Auth::Bearer("nope"),
    )
    .await;
    assert_error(s, &b, 403, "AUTH_FAIL");
    for bad in [
        "",
        "[]",
        "{",
        r#"{"prompt": 5}"#,
        r#"{"prompt":"x","evil":1}"#,
        r#"{"prompt":"x","backend":"telepathy"}"#,
        r#"{"prompt":"   "}"#,
        r#"{"prompt":"x","profile":"nope"}"#,
    ] {
        let (s, b) = post(&url, Auth::Bearer(&token), bad).await;
        assert_error(s, &b, 400, "INVALID_REQUEST");
    }
    let huge = json!({"prompt": "x".repeat(300 * 1024)}).to_string();
    let (s, b) = post(&url, Auth::Bearer(&token), &huge).await;
    assert_error(s, &b, 400, "INVALID_REQUEST");
    let too_big = json!({"prompt": "x".repeat(3 << 20)}).to_string();
    let (s, _) = post(&url, Auth::Bearer(&token), &too_big).await;
    assert_eq!(s.as_u16(), 413);
    // No browser at the configured URL: a clear, retryable 503.
    let (s, b) = post(&url, Auth::Bearer(&token), r#"{"prompt":"x"}"#).await;
    let (message, _) = assert_error(s, &b, 503, "UNAVAILABLE");
    assert!(message.contains("127.0.0.1:9"), "{message}");
    // A malformed job payload fails the job for good.
    let job_id = submit_llm(&hub, &token, json!({"text": "not a prompt"})).await;
    let job = wait_job(&hub, &token, &job_id, |j| j["status"] == "failed").await;
    assert_eq!(job["error"]["retryable"], false, "{job}");
}

/// The Chromium the relay launches is driven over a pipe: no process of its group listens on
/// a TCP port, so no other user of the machine can drive it. Its sandbox is on unless the
/// relay runs as root, and /health says which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launched_chromium_listens_on_no_port() {
    let hub = quick_hub();
    let token = hub.token();
    let site = chat_site().await;
    let relay = cdp_relay(&hub, &token, &site).await;
    let (status, body) = complete(
        &relay,
        &token,
        json!({"prompt": "over a pipe", "profile": "local-chat"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, health) = get(&format!("{}/health", relay.urls["relay"]), Auth::None).await;
    let cdp = &health["backends"]["cdp"];
    assert_eq!(cdp["source"]["transport"], "pipe", "{health}");
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if root {
        assert_eq!(cdp["source"]["sandbox"]["on"], false, "{health}");
        assert!(
            cdp["source"]["sandbox"]["why"]
                .as_str()
                .unwrap()
                .contains("root"),
            "{health}"
        );
    } else {
        assert_eq!(cdp["source"]["sandbox"]["on"], true, "{health}");
    }
    let pid = cdp["pid"].as_u64().expect("the browser's pid") as u32;
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
        .replace('\0', " ");
    assert!(cmdline.contains("--remote-debugging-pipe"), "{cmdline}");
    assert!(!cmdline.contains("--remote-debugging-port"), "{cmdline}");

    let group = processes_in_group(pid);
    assert!(
        group.len() > 1,
        "Chromium's helpers share its group: {group:?}"
    );
    let listening = listening_socket_inodes();
    for p in &group {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{p}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy().into_owned();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
            {
                assert!(
                    !listening.contains(inode),
                    "process {p} of Chromium's group listens on TCP (socket {inode})"
                );
            }
        }
    }
}

/// PIDs whose process group is `pgid`.
fn processes_in_group(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp …; comm may hold spaces, so split after its ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        if fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid) {
            out.push(pid);
        }
    }
    out
}

/// Inodes of every listening TCP socket on the machine (IPv4 and IPv6).
fn listening_socket_inodes() -> std::collections::HashSet<String> {
    let mut out = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.get(3) == Some(&"0A")
                && let Some(inode) = cols.get(9)
            {
                out.insert((*inode).to_owned());
            }
        }
    }
    out
}

/// Run by an unprivileged user where the kernel allows it (as on this machine), the relay
/// keeps Chromium's sandbox: no `--no-sandbox`, and /health says the sandbox is on. Needs
/// root to switch to `nobody`; elsewhere it says so and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unprivileged_relay_keeps_the_chromium_sandbox() {
    let setpriv = Path::new("/usr/bin/setpriv");
    let as_nobody = ["--reuid=65534", "--regid=65534", "--clear-groups", "--"];
    let can_switch = setpriv.exists()
        && std::process::Command::new(setpriv)
            .args(as_nobody)
            .arg(bin())
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !can_switch {
        eprintln!("skipped: cannot run the relay as nobody here (needs root and setpriv)");
        return;
    }
    let hub = quick_hub();
    let token = hub.token();
    let site = chat_site().await;
    let home = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(home.path(), Some(65534), Some(65534)).unwrap();
    let profiles = profiles_file(home.path(), &site);
    std::os::unix::fs::chown(&profiles, Some(65534), Some(65534)).unwrap();
    let listen = free_addr();
    let home_arg = home.path().to_string_lossy().into_owned();
    let mut args: Vec<&str> = as_nobody.to_vec();
    let bin_arg = bin().to_string_lossy().into_owned();
    args.extend([
        bin_arg.as_str(),
        "relay",
        "--listen",
        &listen,
        "--home",
        &home_arg,
        "--launch-chromium",
        "1",
        "--relay-profiles",
        &profiles,
    ]);
    let relay = Proc::start(
        setpriv,
        &args,
        &[
            ("SHERATAN_CONTROL_URL", hub.control_url.as_str()),
            ("SHERATAN_DATA_URL", hub.data_url.as_str()),
            ("SHERATAN_HUB_TOKEN", &token),
            ("HOME", &home_arg),
        ],
        true,
    );
    let (status, body) = complete(
        &relay,
        &token,
        json!({"prompt": "sandboxed", "profile": "local-chat"}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{body}; relay stderr: {}",
        relay.stderr()
    );
    let (_, health) = get(&format!("{}/health", relay.urls["relay"]), Auth::None).await;
    let cdp = &health["backends"]["cdp"];
    assert_eq!(cdp["source"]["sandbox"]["on"], true, "{health}");
    let pid = cdp["pid"].as_u64().unwrap();
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
        .replace('\0', " ");
    assert!(!cmdline.contains("--no-sandbox"), "{cmdline}");
}

/// A fresh machine with nothing but Chromium: `sheratan up`, then an LLM job through Core
/// completes end to end through the relay's own demo chat page in headless Chromium (the
/// default profile), and the page itself is there for a person to try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_job_through_core_completes_on_the_relays_demo_page() {
    let hub = hub().up().start();
    let token = hub.token();
    let relay = &hub.urls["relay"];
    let page = reqwest::get(format!("{relay}/demo/chat")).await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(page.text().await.unwrap().contains("id=\"prompt\""));
    let (status, body) = post(
        &format!("{}/api/jobs", hub.urls["core"]),
        Auth::Bearer(&token),
        &json!({"kind": "chat", "dispatch": "llm", "payload": {"prompt": "hello demo page"}})
            .to_string(),
    )
    .await;
    assert_eq!(status.as_u16(), 202, "{body}");
    let job_id = body["job_id"].as_str().unwrap().to_owned();
    let job = wait_job(&hub, &token, &job_id, |j| {
        j["status"] == "completed" || j["status"] == "failed"
    })
    .await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(
        job["result"]["text"],
        "Demo answer (no model behind this page): you wrote 3 words: \"hello demo page\"."
    );
    assert_eq!(job["result"]["backend"], "cdp");
    // No model answered: the result says so, and so did the banner.
    assert_eq!(job["result"]["demo"], true, "{job}");
    let banner = hub.stdout();
    assert!(
        banner.contains("without a profile: the demo chat page, no model"),
        "{banner}"
    );
    let (_, health) = get(&format!("{relay}/health"), Auth::None).await;
    let profiles = health["profiles"].as_array().unwrap();
    assert!(profiles.iter().any(|p| p == "demo"), "{health}");
}

/// A cancel reaches a relay job (issue 19, item 1): the relay's watch sees it, drops the job's
/// run, and its tab is closed at once; the job stays cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_llm_job_closes_its_tab() {
    let hub = quick_hub();
    let token = hub.token();
    let site = chat_site().await;
    let relay = cdp_relay(&hub, &token, &site).await;
    let job_id = submit_llm(
        &hub,
        &token,
        json!({"prompt": "take your time", "profile": "crawl-chat"}),
    )
    .await;
    wait_job(&hub, &token, &job_id, |j| j["status"] == "in_progress").await;
    for _ in 0..100 {
        if !sessions(&relay, &token).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!sessions(&relay, &token).await.is_empty(), "the tab opened");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let cancelled_at = std::time::Instant::now();
    let (status, view) = post(
        &format!("{}/v1/jobs/{job_id}/cancel", hub.data_url),
        Auth::Bearer(&token),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    while !sessions(&relay, &token).await.is_empty() {
        assert!(
            cancelled_at.elapsed() < Duration::from_secs(2),
            "the cancelled job's tab is still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, view) = get(
        &format!("{}/v1/jobs/{job_id}", hub.data_url),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(view["status"], "cancelled", "{view}");
}

/// A stand-in OpenAI-compatible server that streams its answer (`stream: true`, server-sent
/// events): `pieces` one every `gap`, then `[DONE]`. Returns its URL and the request bodies.
async fn streaming_server(pieces: Vec<String>, gap: Duration) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let log = bodies.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (pieces, log) = (pieces.clone(), log.clone());
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut buf = [0u8; 8192];
                let body = loop {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    raw.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&raw).into_owned();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if raw.len() >= end + 4 + length {
                            break String::from_utf8_lossy(&raw[end + 4..end + 4 + length])
                                .into_owned();
                        }
                    }
                };
                log.lock().unwrap().push(body);
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let role = json!({"choices": [{"index": 0, "delta": {"role": "assistant"}}]});
                let _ = socket
                    .write_all(format!("data: {role}\n\n").as_bytes())
                    .await;
                for piece in pieces {
                    tokio::time::sleep(gap).await;
                    let chunk = json!({"choices": [{"index": 0, "delta": {"content": piece}}]});
                    if socket
                        .write_all(format!("data: {chunk}\n\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let _ = socket.write_all(b"data: [DONE]\n\n").await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (url, bodies)
}

/// An LLM job on the OpenAI backend asks with `stream: true`; `sheratan submit --wait` prints
/// the answer piece by piece as the server streams it, and the result has all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_answer_streams_to_submit_wait() {
    let pieces: Vec<String> = (1..=10).map(|i| format!("word{i} ")).collect();
    let answer: String = pieces.concat();
    let (base, bodies) = streaming_server(pieces, Duration::from_millis(200)).await;
    let hub = quick_hub();
    let token = hub.token();
    let base_url = format!("{base}/v1");
    let _relay = relay(
        &hub,
        &token,
        &[],
        &[
            ("SHERATAN_OPENAI_BASE_URL", base_url.as_str()),
            ("SHERATAN_OPENAI_MODEL", "test-model"),
            ("SHERATAN_RELAY_BACKEND", "openai"),
        ],
    );
    let at = crate::progress::addr(&hub);
    let streamed = tokio::task::spawn_blocking(move || {
        crate::progress::submit_streaming(
            &at,
            &[
                "--queue",
                "llm",
                "--kind",
                "chat",
                "--payload",
                r#"{"prompt": "count"}"#,
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(
        streamed.view["result"]["text"],
        answer.as_str(),
        "{}",
        streamed.view
    );
    assert!(
        streamed.stderr().contains(&answer),
        "{:?}",
        streamed.stderr()
    );
    let first = streamed.seen_at("word1 ").expect("word1 printed");
    let last = streamed.seen_at("word10 ").expect("word10 printed");
    assert!(
        last.duration_since(first) >= Duration::from_millis(900),
        "the answer came in one piece ({:?} from first to last word)",
        last.duration_since(first)
    );
    let request: Value = serde_json::from_str(&bodies.lock().unwrap()[0]).unwrap();
    assert_eq!(request["stream"], true, "{request}");
}

/// The same through the browser: the relay's demo chat page writes its answer word by word,
/// and `submit --wait` prints it as it grows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_pages_answer_streams_to_submit_wait() {
    let hub = hub().up().start();
    let prompt = (1..=40)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let payload = json!({ "prompt": prompt }).to_string();
    let at = crate::progress::addr(&hub);
    let streamed = tokio::task::spawn_blocking(move || {
        crate::progress::submit_streaming(
            &at,
            &["--queue", "llm", "--kind", "chat", "--payload", &payload],
        )
    })
    .await
    .unwrap();
    let text = streamed.view["result"]["text"].as_str().unwrap().to_owned();
    assert!(text.starts_with("Demo answer"), "{}", streamed.view);
    assert!(streamed.stderr().contains(&text), "{:?}", streamed.stderr());
    // The page takes ~1.4 s to write its 46 words: the first ones were printed long before
    // the last.
    let first = streamed.seen_at("Demo answer").expect("the start printed");
    let last = streamed.seen_at(&text).expect("all of it printed");
    assert!(
        last.duration_since(first) >= Duration::from_millis(500),
        "the answer came in one piece ({:?} from first to last word)",
        last.duration_since(first)
    );
}
