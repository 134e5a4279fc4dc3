//! Schedules (docs/API.md, "Schedules") through real hubs: ticks make jobs, bad input gets
//! the contract's error, roles hold, a full queue records missed ticks without a retry storm.
//! Two hubs on PostgreSQL with a kill in between are in `multihub.rs`.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use sheratan_proto::EventKind;
use sheratan_testkit::count_events;

use crate::common::*;

async fn jobs_of(hub: &sheratan_testkit::HubProcess, queue: &str) -> Vec<Value> {
    let (status, list) = get(
        &format!("{}/v1/jobs?queue={queue}&limit=1000", hub.data_url),
        Auth::Bearer(&hub.token()),
    )
    .await;
    assert_eq!(status.as_u16(), 200, "{list}");
    list["jobs"].as_array().unwrap().clone()
}

async fn schedule(hub: &sheratan_testkit::HubProcess, name: &str) -> Value {
    let (status, view) = get(
        &format!("{}/v1/schedules/{name}", hub.data_url),
        Auth::Bearer(&hub.token()),
    )
    .await;
    assert_eq!(status.as_u16(), 200, "{view}");
    view
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused_naming_the_field_and_roles_hold() {
    let hub = hub().start();
    let token = hub.token();
    let url = format!("{}/v1/schedules", hub.data_url);
    let job = json!({"kind": "report", "queue": "sched"});
    for (body, status, code, names) in [
        (
            json!({"name": "x", "cron": "61 * * * *", "job": job}),
            400,
            "INVALID_REQUEST",
            "cron:",
        ),
        (
            json!({"name": "x", "cron": "every day", "job": job}),
            400,
            "INVALID_REQUEST",
            "cron:",
        ),
        (
            json!({"name": "x", "cron": "@every 0s", "job": job}),
            400,
            "INVALID_REQUEST",
            "cron:",
        ),
        // Past 100 years: its ticks would overflow (a review found one that froze the
        // scheduler).
        (
            json!({"name": "x", "cron": "@every 3000000d", "job": job}),
            400,
            "INVALID_REQUEST",
            "cron:",
        ),
        (
            json!({"name": "x", "cron": "0 3 * * *", "timezone": "Mars/Olympus", "job": job}),
            400,
            "INVALID_REQUEST",
            "timezone:",
        ),
        (
            json!({"name": "x y", "cron": "0 3 * * *", "job": job}),
            400,
            "INVALID_REQUEST",
            "name",
        ),
        (
            json!({"name": "x", "cron": "0 3 * * *", "job": {"kind": "r", "queue": "a b"}}),
            400,
            "INVALID_REQUEST",
            "job.queue",
        ),
        (
            json!({"name": "x", "cron": "0 3 * * *", "job": {"kind": ""}}),
            400,
            "INVALID_REQUEST",
            "job.kind",
        ),
        (
            json!({"name": "x", "cron": "0 3 * * *", "job": {"kind": "r", "idempotency_key": "k"}}),
            400,
            "INVALID_REQUEST",
            "job.idempotency_key",
        ),
        (
            json!({"name": "x", "cron": "0 3 * * *", "job": job, "jitter_s": 99999}),
            400,
            "INVALID_REQUEST",
            "jitter_s",
        ),
        (
            json!({"name": "x", "cron": "0 3 * * *", "job": job, "overlap": "sometimes"}),
            400,
            "INVALID_REQUEST",
            "overlap",
        ),
        (
            json!({"name": "x", "cron": "0 3 * * *", "job": job, "surprise": 1}),
            400,
            "INVALID_REQUEST",
            "surprise",
        ),
        (
            json!({"name": "x", "job": job}),
            400,
            "INVALID_REQUEST",
            "cron",
        ),
    ] {
        let (got, answer) = post(&url, Auth::Bearer(&token), &body.to_string()).await;
        assert_error(got, &answer, status, code);
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(names), "{body} → {answer}");
    }
    // A payload over the body limit is refused before anything else.
    let big = json!({"name": "x", "cron": "0 3 * * *", "job": {"kind": "r", "payload": "x".repeat(1024 * 1024)}});
    let (got, answer) = post(&url, Auth::Bearer(&token), &big.to_string()).await;
    assert_error(got, &answer, 413, "PAYLOAD_TOO_LARGE");

    let good =
        json!({"name": "nightly", "cron": "30 2 * * *", "timezone": "Europe/Berlin", "job": job});
    let (got, view) = post(&url, Auth::Bearer(&token), &good.to_string()).await;
    assert_eq!(got.as_u16(), 201, "{view}");
    assert_eq!(view["next_runs"].as_array().unwrap().len(), 5, "{view}");
    let (got, answer) = post(&url, Auth::Bearer(&token), &good.to_string()).await;
    assert_error(got, &answer, 409, "CONFLICT");
    let (got, answer) = get(&format!("{url}/nobody"), Auth::Bearer(&token)).await;
    assert_error(got, &answer, 404, "NOT_FOUND");

    // Roles: a read credential reads but does not change; a submit credential does not create.
    for role in ["read", "submit"] {
        let (status, created) = post(
            &format!("{}/admin/tokens", hub.data_url),
            Auth::Bearer(&token),
            &json!({"name": format!("{role}-1"), "role": role}).to_string(),
        )
        .await;
        assert_eq!(status.as_u16(), 201, "{created}");
        let secret = created["secret"].as_str().unwrap().to_owned();
        let (got, list) = get(&url, Auth::Bearer(&secret)).await;
        assert_eq!(got.as_u16(), 200, "{list}");
        assert_eq!(list["schedules"][0]["name"], "nightly");
        let other = json!({"name": format!("by-{role}"), "cron": "@every 1s", "job": job});
        let (got, answer) = post(&url, Auth::Bearer(&secret), &other.to_string()).await;
        assert_error(got, &answer, 403, "FORBIDDEN");
        for (method, path) in [
            (Method::PATCH, "/nightly"),
            (Method::DELETE, "/nightly"),
            (Method::POST, "/nightly/run"),
        ] {
            let (got, answer) = call(
                method,
                &format!("{url}{path}"),
                Auth::Bearer(&secret),
                Some(r#"{"paused": true}"#),
            )
            .await;
            assert_error(got, &answer, 403, "FORBIDDEN");
        }
    }
    assert_eq!(schedule(&hub, "nightly").await["paused"], false);
    // Run-now takes no body: anything but nothing or {} is refused, and nothing runs.
    for body in ["garbage", r#"{"x": 1}"#, "[]"] {
        let (got, answer) = post(&format!("{url}/nightly/run"), Auth::Bearer(&token), body).await;
        assert_error(got, &answer, 400, "INVALID_REQUEST");
    }
    assert!(
        jobs_of(&hub, "sched").await.is_empty(),
        "no run-now got through"
    );
    // The control plane names the right port.
    let (got, answer) = get(
        &format!("{}/v1/schedules", hub.control_url),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(got.as_u16(), 421, "{answer}");
    assert!(!hub.stderr().contains("panicked"), "{}", hub.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_every_second_schedule_submits_one_job_a_tick_pauses_resumes_and_runs_now() {
    let hub = hub().start();
    let (code, out, err) = cli(
        &hub,
        &[
            "schedule",
            "add",
            "tick",
            "--cron",
            "@every 1s",
            "--kind",
            "echo",
            "--queue",
            "sched",
            "--payload",
            r#"{"hello": 1}"#,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("schedule tick: @every 1s (UTC), active"),
        "{out}"
    );
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let jobs = jobs_of(&hub, "sched").await;
    assert!(
        (2..=5).contains(&jobs.len()),
        "{} jobs after 3.5 s",
        jobs.len()
    );
    // Each job carries its tick: one job per whole second, none twice.
    let mut ticks: Vec<i64> = jobs
        .iter()
        .map(|j| {
            let key = j["idempotency_key"].as_str().unwrap();
            key.strip_prefix("schedule:tick:").unwrap().parse().unwrap()
        })
        .collect();
    ticks.sort();
    ticks.dedup();
    assert_eq!(ticks.len(), jobs.len(), "a tick made two jobs");
    assert!(ticks.iter().all(|t| t % 1000 == 0), "{ticks:?}");
    assert_eq!(jobs[0]["payload"], json!({"hello": 1}));
    let view = schedule(&hub, "tick").await;
    assert_eq!(view["last_run"]["outcome"], "submitted", "{view}");
    assert!(
        view["runs"].as_u64().unwrap() >= jobs.len() as u64,
        "{view}"
    );

    let (code, out, err) = cli(&hub, &["schedule", "pause", "tick"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("paused"), "{out}");
    let before = jobs_of(&hub, "sched").await.len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        jobs_of(&hub, "sched").await.len(),
        before,
        "a paused schedule submitted"
    );
    let (code, out, _) = cli(&hub, &["schedule", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("tick") && out.contains("paused"), "{out}");

    let (code, job_id, err) = cli(&hub, &["schedule", "run-now", "tick"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        jobs_of(&hub, "sched").await.len(),
        before + 1,
        "run-now submits while paused"
    );
    let (status, job) = get(
        &format!("{}/v1/jobs/{}", hub.data_url, job_id.trim()),
        Auth::Bearer(&hub.token()),
    )
    .await;
    assert_eq!(status.as_u16(), 200, "{job}");

    let (code, out, err) = cli(&hub, &["schedule", "resume", "tick"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("resumed; next run"), "{out}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = jobs_of(&hub, "sched").await.len();
    // Resumed from the next tick: the ticks passed while paused are not caught up.
    assert!(
        (before + 2..=before + 4).contains(&after),
        "{before} → {after}"
    );

    let (code, out, _) = cli(&hub, &["schedule", "show", "tick"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("next runs: ") && out.contains("last run: "),
        "{out}"
    );
    let (status, metrics) = call(
        Method::GET,
        &format!("{}/metrics", hub.data_url),
        Auth::Bearer(&hub.token()),
        None,
    )
    .await;
    assert_eq!(status.as_u16(), 200);
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.lines().any(|l| l
            .starts_with("sheratan_schedule_runs_total{outcome=\"submitted\"}")
            && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(
        metrics.contains("sheratan_schedule_lateness_seconds_count"),
        "{metrics}"
    );

    let (code, _, err) = cli(&hub, &["schedule", "rm", "tick"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&hub, &["schedule", "show", "tick"]);
    assert_eq!(code, 1);
    assert!(err.contains("NOT_FOUND"), "{err}");
    let records = hub.wait_audit(Duration::from_secs(5), |r| {
        count_events(r, EventKind::ScheduleChanged) >= 5
    });
    let actions: Vec<String> = records
        .iter()
        .filter(|r| r.event == EventKind::ScheduleChanged)
        .map(|r| format!("{:?}", r))
        .collect();
    for action in ["created", "paused", "run_now", "resumed", "deleted"] {
        assert!(
            actions.iter().any(|a| a.contains(action)),
            "{action}: {actions:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_records_missed_ticks_without_a_retry_storm() {
    let hub = hub().env("SHERATAN_MAX_QUEUE_DEPTH", "1").start();
    let token = hub.token();
    let (status, _) = submit(
        &hub.data_url,
        &token,
        &json!({"kind": "filler", "queue": "sched"}),
    )
    .await;
    assert_eq!(status.as_u16(), 202);
    let (code, _, err) = cli(
        &hub,
        &[
            "schedule",
            "add",
            "full",
            "--cron",
            "@every 1s",
            "--kind",
            "echo",
            "--queue",
            "sched",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let view = schedule(&hub, "full").await;
    let elapsed = started.elapsed().as_secs_f64();
    let missed = view["missed"].as_u64().unwrap();
    assert_eq!(view["runs"], 0, "{view}");
    assert!(missed >= 2, "{view}");
    // One try per tick, no retries: at most a tick a second.
    assert!(
        (missed as f64) <= elapsed + 1.0,
        "{missed} misses in {elapsed:.1} s"
    );
    assert_eq!(view["last_run"]["outcome"], "missed", "{view}");
    let reason = view["last_run"]["reason"].as_str().unwrap();
    assert!(reason.contains("SHERATAN_MAX_QUEUE_DEPTH"), "{reason}");
    // Repeats of one event are folded into a count the audit log writes later.
    let records = hub.wait_audit(Duration::from_secs(5), |r| {
        count_events(r, EventKind::ScheduleMissed) >= 1
    });
    let drops = count_events(&records, EventKind::BackpressureDrop);
    assert!(
        drops <= missed + 1,
        "{drops} refused submits for {missed} missed ticks"
    );
    assert_eq!(jobs_of(&hub, "sched").await.len(), 1, "only the filler");
}
