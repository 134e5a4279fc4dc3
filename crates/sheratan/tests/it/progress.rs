//! Progress and streamed output (issue "Running jobs", item 3): handlers report, the hub keeps
//! the latest in the job view, Core sends `progress` events, and `sheratan submit --wait`
//! prints the output as it arrives. Plus the route's refusals.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sheratan_testkit::HubProcess;

use crate::common::*;

/// What `sheratan submit … --wait --json` wrote: the final job view (stdout), and its
/// standard error as it arrived, piece by piece with the time each came.
pub struct Streamed {
    pub view: Value,
    pub pieces: Vec<(Instant, String)>,
    pub exited: Instant,
}

impl Streamed {
    pub fn stderr(&self) -> String {
        self.pieces.iter().map(|(_, p)| p.as_str()).collect()
    }

    /// When `text` had fully appeared on standard error.
    pub fn seen_at(&self, text: &str) -> Option<Instant> {
        let mut so_far = String::new();
        for (at, piece) in &self.pieces {
            so_far.push_str(piece);
            if so_far.contains(text) {
                return Some(*at);
            }
        }
        None
    }
}

/// Where a CLI finds a hub: control URL, data URL, token.
pub type HubAddr = (String, String, String);

pub fn addr(hub: &HubProcess) -> HubAddr {
    (hub.control_url.clone(), hub.data_url.clone(), hub.token())
}

/// Runs `sheratan submit <args> --wait --json` against a hub, timing its standard error.
/// Blocking: call it from `spawn_blocking`.
pub fn submit_streaming(hub: &HubAddr, args: &[&str]) -> Streamed {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sheratan"))
        .arg("submit")
        .args(args)
        .args(["--wait", "--json"])
        .env("SHERATAN_CONTROL_URL", &hub.0)
        .env("SHERATAN_DATA_URL", &hub.1)
        .env("SHERATAN_HUB_TOKEN", &hub.2)
        .env("SHERATAN_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sheratan submit");
    let mut stderr = child.stderr.take().unwrap();
    let pieces = Arc::new(Mutex::new(Vec::new()));
    let log = pieces.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            log.lock().unwrap().push((Instant::now(), text));
        }
    });
    let out = child.wait_with_output().expect("submit ends");
    let exited = Instant::now();
    reader.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let pieces = std::mem::take(&mut *pieces.lock().unwrap());
    let streamed = Streamed {
        view: serde_json::from_str(&stdout).unwrap_or(Value::String(stdout)),
        pieces,
        exited,
    };
    assert!(
        out.status.success(),
        "submit failed: {} / {}",
        streamed.view,
        streamed.stderr()
    );
    streamed
}

/// An `exec` command that writes six lines of output over ~2 s through the stderr protocol:
/// `submit --wait` prints each as it comes, the job view keeps them, Core sends `progress`
/// events, and the result comes after all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_jobs_output_streams_to_submit_wait_the_job_view_and_core() {
    let dir = tempfile::tempdir().unwrap();
    let handlers = dir.path().join("handlers.toml");
    std::fs::write(
        &handlers,
        r#"[handlers.story]
command = ["/bin/sh", "-c", "for i in 1 2 3 4 5 6; do echo \"sheratan:output line $i\" >&2; echo \"sheratan:progress 0.$i step $i\" >&2; sleep 0.35; done; echo '{\"lines\": 6}'"]
timeout_s = 30
"#,
    )
    .unwrap();
    let hub = hub()
        .up()
        .env("SHERATAN_HANDLERS", handlers.display().to_string())
        .start();
    // Core's event stream, read while the job runs.
    let mut events = http()
        .get(format!("{}/api/events", hub.urls["core"]))
        .bearer_auth(hub.token())
        .send()
        .await
        .unwrap();
    assert_eq!(events.status().as_u16(), 200);
    let seen_events = Arc::new(Mutex::new(String::new()));
    let log = seen_events.clone();
    let follow = tokio::spawn(async move {
        while let Ok(Some(chunk)) = events.chunk().await {
            log.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk));
        }
    });
    let at = addr(&hub);
    let streamed = tokio::task::spawn_blocking(move || submit_streaming(&at, &["--kind", "story"]))
        .await
        .unwrap();
    assert_eq!(
        streamed.view["result"],
        json!({"lines": 6}),
        "{}",
        streamed.view
    );
    let all: String = (1..=6).map(|i| format!("line {i}\n")).collect();
    assert!(streamed.stderr().contains(&all), "{:?}", streamed.stderr());
    // Streamed: the first line was printed well before the job ended, not with the result.
    let first = streamed.seen_at("line 1\n").expect("line 1 printed");
    assert!(
        streamed.exited.duration_since(first) >= Duration::from_millis(800),
        "line 1 came only {:?} before the end",
        streamed.exited.duration_since(first)
    );
    // The job view keeps the output and the last fraction and message.
    let progress = &streamed.view["progress"];
    assert_eq!(progress["output_tail"], all.as_str(), "{progress}");
    assert_eq!(progress["output_bytes"], all.len(), "{progress}");
    assert_eq!(progress["value"], 0.6, "{progress}");
    assert_eq!(progress["message"], "step 6", "{progress}");
    // Core announced it as `progress` events of this job.
    let job_id = streamed.view["job_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = seen_events.lock().unwrap().clone();
        if text.contains("event: progress") && text.contains(&job_id) {
            break;
        }
        assert!(Instant::now() < deadline, "no progress event: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    follow.abort();
}

/// The route refuses what the contract says: unsigned 422, a lease not held 409, too much
/// 413, out of range 400, another node's credential 403; a sleep job reports tenths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reports_are_checked_like_results() {
    let hub = hub().start();
    let token = hub.token();
    let data = hub.data_url.clone();
    let (status, body) = post(
        &format!("{data}/v1/jobs"),
        Auth::Bearer(&token),
        &json!({"kind": "echo"}).to_string(),
    )
    .await;
    assert_eq!(status.as_u16(), 202, "{body}");
    let job_id = body["job_id"].as_str().unwrap().to_owned();
    let (jobs, _) = lease(&data, &token, "n-1", &["default"], 1, 0).await;
    let lease_id = jobs[0]["lease_id"].as_str().unwrap().to_owned();
    let url = format!("{data}/v1/leases/{lease_id}/progress");
    let body = |extra: Value| {
        let mut b = json!({"job_id": job_id});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b.to_string()
    };

    // Unsigned: refused before it is read.
    let (status, answer) = post(&url, Auth::Bearer(&token), &body(json!({"output": "x"}))).await;
    assert_error(status, &answer, 422, "RESULT_INTEGRITY_FAIL");
    // Signed: taken, output counted.
    let (status, answer) = send_signed(
        &url,
        &token,
        &body(json!({"progress": 0.25, "message": "reading", "output": "Hello, "})),
    )
    .await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    assert_eq!(answer["output_bytes"], 7);
    let (status, answer) = send_signed(&url, &token, &body(json!({"output": "world"}))).await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    assert_eq!(answer["output_bytes"], 12);
    // The job view has it (written to the store within a flush).
    let view = wait_for_view(&hub, &job_id, |v| v["progress"]["output_bytes"] == 12).await;
    assert_eq!(view["progress"]["output_tail"], "Hello, world");
    assert_eq!(view["progress"]["value"], 0.25);
    assert_eq!(view["progress"]["message"], "reading");

    for (extra, want, code, field) in [
        (json!({"progress": 1.5}), 400, "INVALID_REQUEST", "progress"),
        (
            json!({"output": "x".repeat(64 * 1024 + 1)}),
            413,
            "PAYLOAD_TOO_LARGE",
            "output",
        ),
        (
            json!({"message": "m".repeat(2000)}),
            413,
            "PAYLOAD_TOO_LARGE",
            "message",
        ),
        (json!({"outptu": "typo"}), 400, "INVALID_REQUEST", "outptu"),
    ] {
        let (status, answer) = send_signed(&url, &token, &body(extra)).await;
        let (message, _) = assert_error(status, &answer, want, code);
        assert!(message.contains(field), "{message}");
    }
    // Another lease of the job, or a made-up one: not held.
    let other = format!("{data}/v1/leases/{}/progress", uuid::Uuid::now_v7());
    let (status, answer) = send_signed(&other, &token, &body(json!({"output": "x"}))).await;
    assert_error(status, &answer, 409, "LEASE_EXPIRED");

    // A node credential reports for its own leases only.
    let (code, out, err) = cli(
        &hub,
        &["token", "create", "--role", "node", "--name", "n-2"],
    );
    assert_eq!(code, 0, "{err}");
    let n2 = out.lines().nth(1).unwrap().trim().to_owned();
    let (code, out, err) = cli(
        &hub,
        &["token", "create", "--role", "node", "--name", "n-3"],
    );
    assert_eq!(code, 0, "{err}");
    let n3 = out.lines().nth(1).unwrap().trim().to_owned();
    let (status, body2) = post(
        &format!("{data}/v1/jobs"),
        Auth::Bearer(&token),
        &json!({"kind": "echo"}).to_string(),
    )
    .await;
    assert_eq!(status.as_u16(), 202, "{body2}");
    let job2 = body2["job_id"].as_str().unwrap().to_owned();
    let (jobs, _) = lease(&data, &n2, "n-2", &["default"], 1, 0).await;
    let lease2 = jobs[0]["lease_id"].as_str().unwrap().to_owned();
    let url2 = format!("{data}/v1/leases/{lease2}/progress");
    let report2 = json!({"job_id": job2, "output": "mine"}).to_string();
    let (status, answer) = send_signed(&url2, &n2, &report2).await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    // Right after the holder's report (while the hub trusts the lease), another node is
    // still refused.
    let (status, answer) = send_signed(&url2, &n3, &report2).await;
    assert_error(status, &answer, 403, "FORBIDDEN");

    // A requeued job's old lease takes no more progress, and its next attempt starts with
    // none of the old one's.
    let (status, answer) = call(
        reqwest::Method::POST,
        &format!("{data}/admin/jobs/{job2}/requeue"),
        Auth::Bearer(&token),
        None,
    )
    .await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    let (status, answer) = send_signed(&url2, &n2, &report2).await;
    assert_error(status, &answer, 409, "LEASE_EXPIRED");
    let (jobs, _) = lease(&data, &n2, "n-2", &["default"], 1, 0).await;
    assert_eq!(jobs[0]["job_id"], job2.as_str());
    let (_, view) = get(&format!("{data}/v1/jobs/{job2}"), Auth::Bearer(&token)).await;
    assert_eq!(view["status"], "in_progress", "{view}");
    assert!(
        view.get("progress").is_none(),
        "the old attempt's progress shows: {view}"
    );

    // Once the job has its result, its lease takes no more progress.
    let (status, answer) = complete(
        &data,
        &token,
        &jobs_for(&job_id, &lease_id),
        json!({"ok": true}),
    )
    .await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    let (status, answer) = send_signed(&url, &token, &body(json!({"output": "late"}))).await;
    assert_error(status, &answer, 409, "LEASE_EXPIRED");
}

fn jobs_for(job_id: &str, lease_id: &str) -> Value {
    json!({"job_id": job_id, "lease_id": lease_id})
}

async fn wait_for_view(hub: &HubProcess, job_id: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, view) = get(
            &format!("{}/v1/jobs/{job_id}", hub.data_url),
            Auth::Bearer(&hub.token()),
        )
        .await;
        assert_eq!(status.as_u16(), 200, "{view}");
        if ok(&view) {
            return view;
        }
        assert!(Instant::now() < deadline, "{view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
