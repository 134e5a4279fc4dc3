//! The first whole system (issue 4): `sheratan up`, workers, handlers, and the CLI, through
//! real processes.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sheratan_proto::EventKind;
use sheratan_testkit::{HubProcess, Proc, count_events};

use crate::common::*;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sheratan"))
}

fn worker(hub: &HubProcess, node: &str, token: &str, extra: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut args = vec![
        "worker",
        "--node-id",
        node,
        "--control-url",
        &hub.control_url,
        "--data-url",
        &hub.data_url,
    ];
    args.extend_from_slice(extra);
    let mut env = env.to_vec();
    env.push(("SHERATAN_HUB_TOKEN", token));
    Proc::start(bin(), &args, &env, true)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_a_worker_and_submit_wait_prints_the_result() {
    let hub = hub().up().start();
    assert!(
        hub.stdout().contains("worker: worker-1"),
        "{}",
        hub.stdout()
    );
    assert!(
        hub.stdout().contains("sheratan submit --kind echo"),
        "{}",
        hub.stdout()
    );
    let (code, out, err) = cli(
        &hub,
        &[
            "submit",
            "--kind",
            "echo",
            "--payload",
            r#"{"hello":"world"}"#,
            "--wait",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"hello": "world"})
    );

    let (code, out, err) = cli(
        &hub,
        &[
            "submit",
            "--kind",
            "sleep",
            "--payload",
            r#"{"ms":50}"#,
            "--wait",
            "--json",
        ],
    );
    assert_eq!(code, 0);
    let view: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(view["status"], "completed");
    assert_eq!(view["result"], json!({"slept_ms": 50}));
    assert_eq!(view["required_capabilities"], json!(["sleep"]));
    assert!(
        !err.contains("note:"),
        "a job some node can run needs no note: {err}"
    );
    // `submit --wait` acknowledged both results: none is left pending.
    let (_, metrics) = get(
        &format!("{}/metrics?format=json", hub.data_url),
        Auth::Bearer(&hub.token()),
    )
    .await;
    assert_eq!(metrics["results_pending"], 0, "{metrics}");

    // A kind no node offers is accepted, and the command says why it will wait.
    let (code, _, err) = cli(&hub, &["submit", "--kind", "ech", "--payload", "{}"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("no ONLINE node offers kind \"ech\""), "{err}");
    assert!(
        err.contains("echo"),
        "the note lists what is offered: {err}"
    );
    let (code, _, err) = cli(
        &hub,
        &[
            "submit",
            "--kind",
            "ech",
            "--payload",
            "{}",
            "--wait",
            "--wait-timeout-s",
            "1",
        ],
    );
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("stays queued"), "not 'keeps running': {err}");

    // The worker reports itself: role, capabilities, build and a capability hash.
    let (_, nodes, _) = cli(&hub, &["nodes", "--json"]);
    let nodes: Value = serde_json::from_str(&nodes).unwrap();
    // `up` runs hosts, the broker and core too; they heartbeat as well.
    let w = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == "worker-1")
        .expect("worker-1 is registered");
    assert_eq!(w["role"], "worker");
    // `http` is off unless an operator turns it on (ssrf.rs).
    assert_eq!(w["capabilities"], json!(["echo", "sleep"]));
    assert_eq!(w["capability_hash"].as_str().unwrap().len(), 64);
    assert!(
        w["build_id"]
            .as_str()
            .unwrap()
            .starts_with(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(w["runtime"]["os"], std::env::consts::OS);
    assert_eq!(w["load"]["capacity"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_handler_runs_a_real_script_and_failures_retry_then_fail() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("total.sh");
    std::fs::write(&script, "#!/bin/sh\n# Sums the numbers of the payload with awk.\ntr -d '[]' | awk -F, '{s=0; for(i=1;i<=NF;i++) s+=$i; printf \"{\\\"sum\\\": %d}\", s}'\n").unwrap();
    let handlers = dir.path().join("handlers.toml");
    std::fs::write(
        &handlers,
        format!(
            "[handlers.total]\ncommand = [\"/bin/sh\", \"{}\"]\ntimeout_s = 10\n\n[handlers.broken]\ncommand = [\"/bin/sh\", \"-c\", \"echo 'disk on fire' >&2; exit 7\"]\n",
            script.display()
        ),
    )
    .unwrap();
    let hub = hub()
        .up()
        .env("SHERATAN_HANDLERS", handlers.display().to_string())
        .env("SHERATAN_RETRY_BASE_MS", "100")
        .start();
    let (code, out, err) = cli(
        &hub,
        &[
            "submit",
            "--kind",
            "total",
            "--payload",
            "[1,2,3,4]",
            "--wait",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"sum": 10})
    );

    let (code, out, _) = cli(
        &hub,
        &[
            "submit",
            "--kind",
            "broken",
            "--max-attempts",
            "2",
            "--wait",
        ],
    );
    assert_eq!(code, 3, "a failed job exits 3: {out}");
    assert!(
        out.contains("failed after 2 attempt(s)") && out.contains("disk on fire"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_is_reaped_and_another_worker_completes_the_job() {
    let hub = hub().env("SHERATAN_AUDIT_FOLD_WINDOW_SEC", "1").start();
    let token = hub.token();
    let mut first = worker(&hub, "doomed", &token, &["--concurrency", "1"], &[]);
    // timeout_s is both the lease's length and (since issue 19) the longest the job may run.
    let (_, body) = submit(&hub.data_url, &token, &json!({"kind": "sleep", "payload": {"ms": 3000}, "timeout_s": 4, "required_capabilities": ["sleep"]})).await;
    let job_id = body["job_id"].as_str().unwrap().to_owned();
    // Running on the first worker.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, view) = get(
            &format!("{}/v1/jobs/{job_id}", hub.data_url),
            Auth::Bearer(&token),
        )
        .await;
        if view["lease"]["node_id"] == "doomed" {
            break;
        }
        assert!(Instant::now() < deadline, "never leased: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, view) = get(
        &format!("{}/v1/jobs/{job_id}", hub.data_url),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(
        view["lease"]["node_id"], "doomed",
        "an extension kept the lease: {view}"
    );
    first.kill9();
    let _second = worker(&hub, "rescuer", &token, &["--concurrency", "1"], &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let view = loop {
        let (_, view) = get(
            &format!("{}/v1/jobs/{job_id}", hub.data_url),
            Auth::Bearer(&token),
        )
        .await;
        if view["status"] == "completed" {
            break view;
        }
        assert!(Instant::now() < deadline, "never completed: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(view["attempt"], 2);
    let records = hub.wait_audit(Duration::from_secs(5), |r| {
        count_events(r, EventKind::LeaseReap) >= 1
    });
    assert!(
        records
            .iter()
            .any(|r| r.event == EventKind::LeaseReap && r.node_id.as_deref() == Some("doomed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_ride_out_a_hub_restart() {
    let (c, d) = (free_port(), free_port());
    let mut hub = hub()
        .control_addr(format!("127.0.0.1:{c}"))
        .data_addr(format!("127.0.0.1:{d}"))
        .start();
    let token = hub.token();
    let _w1 = worker(&hub, "w1", &token, &["--concurrency", "4"], &[]);
    let _w2 = worker(&hub, "w2", &token, &["--concurrency", "4"], &[]);
    let jobs: Vec<Value> = (0..40).map(|i| json!({"kind": "sleep", "payload": {"ms": 100 + i}, "required_capabilities": ["sleep"]})).collect();
    let (status, batch) = post(
        &format!("{}/v1/jobs/batch", hub.data_url),
        Auth::Bearer(&token),
        &json!({"jobs": jobs}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<String> = batch["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_owned())
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    hub.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let (_, view) = get(
                &format!("{}/v1/jobs/{id}", hub.data_url),
                Auth::Bearer(&token),
            )
            .await;
            if view["status"] == "completed" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never completed after the restart: {view}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Both workers reported again to the restarted hub.
    let (_, nodes) = get(
        &format!("{}/v1/nodes?status=ONLINE", hub.control_url),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_reported_with_the_hint_and_the_request_rate_stays_bounded() {
    let hub = hub().env("SHERATAN_AUDIT_FOLD_WINDOW_SEC", "1").start();
    let mut w = worker(&hub, "lost", "not-the-token-0123456789", &[], &[]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stderr = w.stderr();
    assert!(
        stderr.contains("AUTH_FAIL") && stderr.contains("SHERATAN_HUB_TOKEN"),
        "{stderr}"
    );
    let records = hub.wait_audit(Duration::from_secs(5), |r| {
        count_events(r, EventKind::AuthFail) >= 2
    });
    let attempts = count_events(&records, EventKind::AuthFail);
    // Heartbeats and leases each back off exponentially: a handful in five seconds, not a flood.
    assert!(attempts <= 20, "{attempts} failed requests in 5 s");
    assert_eq!(w.signal("TERM").code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_shows_cancels_requeues_and_handles_bundles() {
    let hub = hub().start();
    let (code, out, err) = cli(
        &hub,
        &[
            "submit",
            "--kind",
            "echo",
            "--payload",
            "{\"n\":1}",
            "--queue",
            "q1",
        ],
    );
    assert_eq!(code, 0);
    // No node serves q1 or offers echo here: the CLI passes the hub's warning on.
    assert!(
        err.contains("note: no ONLINE node offers kind \"echo\""),
        "{err}"
    );
    let job_id = out.split_whitespace().next().unwrap().to_owned();
    assert!(out.contains("submitted"));
    let (_, list, _) = cli(&hub, &["jobs", "list"]);
    assert!(
        list.starts_with("JOB") && list.contains(&job_id) && list.contains("accepted"),
        "{list}"
    );
    let (_, list, _) = cli(&hub, &["jobs", "list", "--json", "--queue", "q1"]);
    assert_eq!(
        serde_json::from_str::<Value>(&list).unwrap()["jobs"][0]["job_id"],
        job_id.as_str()
    );
    let (code, show, _) = cli(&hub, &["jobs", "show", &job_id]);
    assert_eq!(code, 0);
    assert!(show.contains("payload   {\"n\":1}"), "{show}");
    // The last 8 characters (the random end of a UUIDv7) name the job as well.
    let tail = &job_id[job_id.len() - 8..];
    let (code, show, _) = cli(&hub, &["jobs", "show", tail]);
    assert_eq!(code, 0);
    assert!(show.contains(&job_id), "{show}");
    let (_, cancelled, _) = cli(&hub, &["jobs", "cancel", tail, "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&cancelled).unwrap()["status"],
        "cancelled"
    );
    let (_, requeued, _) = cli(&hub, &["jobs", "requeue", &job_id, "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&requeued).unwrap()["status"],
        "accepted"
    );

    // Errors carry the hub's code and hint, with exit code 1; usage errors exit 2.
    let (code, _, err) = cli(
        &hub,
        &["jobs", "show", "01a21c3e-5aa9-764e-872c-8ebc57110b2d"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("NOT_FOUND"), "{err}");
    // Jobs made in the same minute share their first 8 characters: the CLI lists them.
    let (a, b) = loop {
        let submit = ["submit", "--kind", "echo", "--queue", "q1"];
        let a = cli(&hub, &submit)
            .1
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        let b = cli(&hub, &submit)
            .1
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        if a[..8] == b[..8] {
            break (a, b);
        }
    };
    let (code, _, err) = cli(&hub, &["jobs", "show", &a[..8]]);
    assert_eq!(code, 1);
    assert!(
        err.contains("names more than one job") && err.contains(&a) && err.contains(&b),
        "{err}"
    );
    assert!(err.contains("more characters"), "{err}");
    let (code, _, err) = cli(
        &hub,
        &["submit", "--kind", "echo", "--payload", "{not json"],
    );
    assert_eq!(code, 2, "{err}");
    let out = Command::new(bin())
        .args(["jobs", "list", "--data-url", &hub.data_url])
        .env("SHERATAN_HUB_TOKEN", "wrong-token-0123456789")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("AUTH_FAIL: the token does not match the hub's SHERATAN_HUB_TOKEN"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tool.sh");
    std::fs::write(&file, "echo hi\n").unwrap();
    let (code, out, err) = cli(
        &hub,
        &["bundle", "publish", "tool.sh", file.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("published tool.sh (8 bytes"), "{out}");
    let (_, list, _) = cli(&hub, &["bundle", "list"]);
    assert!(list.contains("tool.sh"), "{list}");
    let target = dir.path().join("copy.sh");
    let (code, out, _) = cli(
        &hub,
        &[
            "bundle",
            "fetch",
            "tool.sh",
            "--out",
            target.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0);
    assert!(out.starts_with("fetched"), "{out}");
    assert_eq!(std::fs::read(&target).unwrap(), b"echo hi\n");
    let (_, out, _) = cli(
        &hub,
        &[
            "bundle",
            "fetch",
            "tool.sh",
            "--out",
            target.to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("up to date"),
        "the second fetch is a 304: {out}"
    );

    // A weak next token is refused before anything is sent.
    let (code, _, err) = cli(
        &hub,
        &[
            "token",
            "rotate",
            "--next",
            "short",
            "--until",
            "4070908800",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--allow-weak"), "{err}");
    // The deadline may be Unix seconds (2099-01-01).
    let (code, out, err) = cli(
        &hub,
        &[
            "token",
            "rotate",
            "--next",
            "next-token-0123456789abc",
            "--until",
            "4070908800",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rotation started"), "{out}");
    assert!(out.contains("2099-01-01"), "{out}");
    // A second rotation does not silently replace the first.
    let (code, _, err) = cli(
        &hub,
        &[
            "token",
            "rotate",
            "--next",
            "other-token-0123456789abc",
            "--until",
            "2099-01-01T00:00:00Z",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--replace"), "{err}");
    let (status, _) = get(
        &format!("{}/v1/nodes", hub.control_url),
        Auth::Bearer("next-token-0123456789abc"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_jobs_finish_and_report() {
    let hub = hub().start();
    let token = hub.token();
    let mut w = worker(&hub, "graceful", &token, &["--concurrency", "2"], &[]);
    let (_, body) = submit(
        &hub.data_url,
        &token,
        &json!({"kind": "sleep", "payload": {"ms": 1500}, "required_capabilities": ["sleep"]}),
    )
    .await;
    let job_id = body["job_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, view) = get(
            &format!("{}/v1/jobs/{job_id}", hub.data_url),
            Auth::Bearer(&token),
        )
        .await;
        if view["status"] == "in_progress" {
            break;
        }
        assert!(Instant::now() < deadline, "never started: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stop the worker while the job runs: it finishes the job, reports it, then exits.
    assert_eq!(w.signal("TERM").code(), Some(0), "{}", w.stderr());
    let (_, view) = get(
        &format!("{}/v1/jobs/{job_id}", hub.data_url),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(view["status"], "completed", "{view}");
    assert_eq!(view["result"], json!({"slept_ms": 1500}));
    // And it took no new job after the signal.
    let (_, other) = submit(
        &hub.data_url,
        &token,
        &json!({"kind": "echo", "required_capabilities": ["echo"]}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, view) = get(
        &format!(
            "{}/v1/jobs/{}",
            hub.data_url,
            other["job_id"].as_str().unwrap()
        ),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(view["status"], "accepted");
}

/// "Results pending" counts only results somebody will collect: jobs submitted through Core
/// (the dashboard) or by the CLI without --wait are finished without ever being pending; a
/// data-plane submit (which follows its result by default) is pending until acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_followed_results_count_as_pending() {
    let hub = hub().up().start();
    let token = hub.token();
    let core = &hub.urls["core"];
    let pending = || async {
        let (_, m) = get(
            &format!("{}/metrics?format=json", hub.data_url),
            Auth::Bearer(&token),
        )
        .await;
        m["results_pending"].as_u64().unwrap()
    };
    let done = |id: String| {
        let (data, token) = (hub.data_url.clone(), token.clone());
        async move {
            for _ in 0..200 {
                let (_, job) = get(&format!("{data}/v1/jobs/{id}"), Auth::Bearer(&token)).await;
                if job["status"] == "completed" {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("job {id} did not complete");
        }
    };
    let (status, body) = post(
        &format!("{core}/api/jobs"),
        Auth::Bearer(&token),
        &json!({"kind": "echo", "payload": {"via": "core"}}).to_string(),
    )
    .await;
    assert_eq!(status.as_u16(), 202, "{body}");
    done(body["job_id"].as_str().unwrap().to_owned()).await;
    let (code, out, err) = cli(&hub, &["submit", "--kind", "echo", "--payload", "{}"]);
    assert_eq!(code, 0, "{err}");
    done(out.split_whitespace().next().unwrap().to_owned()).await;
    assert_eq!(pending().await, 0, "nobody collects these");
    let (status, body) = post(
        &format!("{}/v1/jobs", hub.data_url),
        Auth::Bearer(&token),
        &json!({"kind": "echo", "payload": {"via": "data"}}).to_string(),
    )
    .await;
    assert_eq!(status.as_u16(), 202, "{body}");
    done(body["job_id"].as_str().unwrap().to_owned()).await;
    assert_eq!(pending().await, 1, "a data-plane submit follows its result");
}

/// Waits until the job is `in_progress`.
async fn wait_running(hub: &HubProcess, token: &str, job_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, view) = get(
            &format!("{}/v1/jobs/{job_id}", hub.data_url),
            Auth::Bearer(token),
        )
        .await;
        if view["status"] == "in_progress" {
            return;
        }
        assert!(Instant::now() < deadline, "never started: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A cancel reaches the running handler at once (issue 19, first part): an `exec` command
/// cancelled mid-run is killed with its process group before it writes its file, a `sleep`
/// stops, and neither reports a result. Without the watch, the worker learned of the cancel
/// at its next lease extension (a third of the job's timeout) and the command ran to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_the_running_handler_within_a_second() {
    let hub = hub().start();
    let token = hub.token();
    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("exec_done");
    let handlers = dir.path().join("handlers.toml");
    std::fs::write(
        &handlers,
        format!(
            "[handlers.slow]\ncommand = [\"/bin/sh\", \"-c\", \"sleep 4.125; date > {}\"]\ntimeout_s = 60\n",
            done.display()
        ),
    )
    .unwrap();
    let handlers = handlers.display().to_string();
    let w = worker(
        &hub,
        "canceller",
        &token,
        &["--concurrency", "2", "--handlers", &handlers],
        &[],
    );
    for (kind, payload) in [("slow", json!({})), ("sleep", json!({"ms": 30000}))] {
        let (_, body) = submit(
            &hub.data_url,
            &token,
            &json!({"kind": kind, "payload": payload, "timeout_s": 300}),
        )
        .await;
        let job_id = body["job_id"].as_str().unwrap().to_owned();
        wait_running(&hub, &token, &job_id).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        let cancelled_at = Instant::now();
        let (status, view) = post(
            &format!("{}/v1/jobs/{job_id}/cancel", hub.data_url),
            Auth::Bearer(&token),
            "",
        )
        .await;
        assert_eq!(status.as_u16(), 200, "{view}");
        // The worker says it stopped the handler; its slot is free again.
        let stopped = loop {
            if w.stderr().matches("stopping its handler").count() > usize::from(kind == "sleep") {
                break cancelled_at.elapsed();
            }
            assert!(
                cancelled_at.elapsed() < Duration::from_secs(5),
                "the {kind} handler was not stopped: {}",
                w.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            stopped < Duration::from_secs(1),
            "{kind} stopped after {stopped:?}"
        );
        let (_, view) = get(
            &format!("{}/v1/jobs/{job_id}", hub.data_url),
            Auth::Bearer(&token),
        )
        .await;
        assert_eq!(
            view["status"], "cancelled",
            "no result overwrote the cancel: {view}"
        );
        // Its whole process group went, the command's own children included.
        let stray = std::process::Command::new("pgrep")
            .args(["-f", "sleep 4.125"])
            .output()
            .unwrap();
        assert!(
            stray.stdout.is_empty(),
            "a cancelled command's child lives on"
        );
    }
    // The command was killed: past its 4 s it wrote nothing.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!done.exists(), "the cancelled command ran to its end");
}

/// `timeout_s` is the longest a job runs (issue 19, item 2, worker side): past it the handler
/// is stopped — an `exec` command with its whole process group, grandchildren included — and
/// the job fails retryably with `TIMEOUT` (here with one attempt: failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_timeout_is_killed_and_fails_with_timeout() {
    let hub = hub().start();
    let token = hub.token();
    let dir = tempfile::tempdir().unwrap();
    let handlers = dir.path().join("handlers.toml");
    // A grandchild with a recognisable command line: it must not outlive the timeout.
    std::fs::write(
        &handlers,
        "[handlers.stuck]\ncommand = [\"/bin/sh\", \"-c\", \"sleep 37.25; echo late\"]\ntimeout_s = 600\n",
    )
    .unwrap();
    let handlers = handlers.display().to_string();
    let _w = worker(
        &hub,
        "timer",
        &token,
        &["--concurrency", "2", "--handlers", &handlers],
        &[],
    );
    let mut ids = Vec::new();
    for (kind, payload) in [("stuck", json!({})), ("sleep", json!({"ms": 60000}))] {
        let (_, body) = submit(
            &hub.data_url,
            &token,
            &json!({"kind": kind, "payload": payload, "timeout_s": 2, "max_attempts": 1}),
        )
        .await;
        ids.push(body["job_id"].as_str().unwrap().to_owned());
    }
    let started = Instant::now();
    for id in &ids {
        let view = loop {
            let (_, view) = get(
                &format!("{}/v1/jobs/{id}", hub.data_url),
                Auth::Bearer(&token),
            )
            .await;
            if view["status"] == "failed" {
                break view;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "not stopped at its timeout: {view}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let message = view["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("TIMEOUT"), "{view}");
        assert_eq!(view["error"]["retryable"], true, "{view}");
    }
    let stray = std::process::Command::new("pgrep")
        .args(["-f", "sleep 37.25"])
        .output()
        .unwrap();
    assert!(
        stray.stdout.is_empty(),
        "the command's grandchild outlived its timeout: {}",
        String::from_utf8_lossy(&stray.stdout)
    );
}
