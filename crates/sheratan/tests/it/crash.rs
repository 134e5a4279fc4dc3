//! Crash safety (the chaos test): `kill -9` the hub at random moments during a mixed load of
//! submits, batches, leases, results and heartbeats — consumers on the request routes and on
//! the worker stream, one of which "crashes" now and then (drops its stream and the jobs it
//! holds, unreported, and comes back) — restart it on the same home each time; afterwards every
//! job that got a 2xx is there and ended completed exactly once, and the registry has every
//! node that heartbeated.
//!
//! `SHERATAN_CHAOS_KILLS` (default 3) sets how many kills, `SHERATAN_CHAOS_SEED` replays the
//! kill moments of a run (each run prints its seed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A consumer on the worker stream, one job at a time, counting first-time completions; with
/// `crash_every`, every so many jobs it drops its stream and the job in hand (as a `kill -9`
/// of a worker would) and opens a new one. Returns once the producer stopped and nothing came
/// for 10 s (jobs a crash dropped come back when their 2 s lease expires).
async fn stream_consumer(
    node: String,
    d: String,
    token: String,
    stop: Arc<AtomicBool>,
    recorded: Arc<Mutex<HashMap<String, u32>>>,
    crash_every: Option<u32>,
) {
    use sheratan_client::stream::{StreamEvent, StreamSpec};
    let mut handled = 0u32;
    loop {
        let data = sheratan_client::DataClient::new(&d, Some(token.clone())).unwrap();
        let spec = StreamSpec {
            node_id: node.clone(),
            queues: vec!["default".into()],
            capabilities: TEST_KINDS.iter().map(|k| k.to_string()).collect(),
            max_jobs: 1,
        };
        let Ok((stream, mut events)) = data.open_stream(spec, Arc::new(Vec::new)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        stream.want(1);
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
            let job = match event {
                Err(_) if stop.load(Ordering::Relaxed) => {
                    stream.close();
                    return;
                }
                Err(_) | Ok(Some(StreamEvent::Lost(_) | StreamEvent::Ended(_))) => continue,
                Ok(Some(StreamEvent::Reconnected)) => {
                    stream.want(1);
                    continue;
                }
                Ok(Some(StreamEvent::Job(job))) => job,
                Ok(Some(StreamEvent::Stopped) | None) => break,
            };
            handled += 1;
            if crash_every.is_some_and(|every| handled.is_multiple_of(every)) {
                stream.close(); // the job in hand is never reported
                break;
            }
            let report = sheratan_proto::data::ResultRequest {
                job_id: job.job_id.clone(),
                lease_id: job.lease_id.clone(),
                outcome: sheratan_proto::data::Outcome::Success,
                result: json!({"n": job.payload["n"]}),
                error: None,
            };
            if let Ok(answer) = stream.report(&report, None).await
                && !answer.duplicate
            {
                *recorded
                    .lock()
                    .unwrap()
                    .entry(job.job_id.clone())
                    .or_default() += 1;
            }
            stream.want(1);
        }
    }
}

/// Sends until an HTTP answer arrives (the hub may be down for a moment).
async fn persist_post(
    url: &str,
    token: &str,
    body: &str,
    signed: bool,
) -> Option<(StatusCode, Value)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let mut req = http().post(url).bearer_auth(token).body(body.to_owned());
        if signed {
            let (hash, signature) = sheratan_client::sign_result(body.as_bytes(), token);
            req = req
                .header("x-sheratan-content-sha256", hash)
                .header("x-sheratan-signature", signature);
        }
        match req.send().await {
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                return Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_during_a_mixed_load_loses_no_acknowledged_job() {
    use rand::{Rng, SeedableRng};
    let kills: u32 = std::env::var("SHERATAN_CHAOS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("SHERATAN_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("chaos: {kills} kills, SHERATAN_CHAOS_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (cport, dport) = (free_port(), free_port());
    let mut hub = hub()
        .control_addr(format!("127.0.0.1:{cport}"))
        .data_addr(format!("127.0.0.1:{dport}"))
        .env("SHERATAN_MAX_QUEUE_DEPTH", "100000")
        .env("SHERATAN_MAX_INFLIGHT", "10000")
        .start();
    let token = hub.token();
    let d = format!("http://127.0.0.1:{dport}");
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    // Per job: how many first-time (not duplicate) completions any worker saw.
    let recorded: Arc<Mutex<HashMap<String, u32>>> = Arc::default();

    let producer = {
        let (d, token, stop, acknowledged) =
            (d.clone(), token.clone(), stop.clone(), acknowledged.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Alternate single submits and batches of 10.
                if n.is_multiple_of(20) {
                    let jobs: Vec<Value> = (n..n + 10)
                        .map(|i| json!({"kind": "echo", "payload": {"n": i}, "timeout_s": 2}))
                        .collect();
                    let body = json!({"jobs": jobs}).to_string();
                    if let Ok(r) = http()
                        .post(format!("{d}/v1/jobs/batch"))
                        .bearer_auth(&token)
                        .body(body)
                        .send()
                        .await
                        && r.status() == StatusCode::OK
                    {
                        let answer: Value = r.json().await.unwrap_or(Value::Null);
                        for (i, item) in answer["jobs"].as_array().into_iter().flatten().enumerate()
                        {
                            if item["code"] == 202 {
                                acknowledged.lock().unwrap().push((
                                    item["job_id"].as_str().unwrap().to_owned(),
                                    n + i as u64,
                                ));
                            }
                        }
                    }
                    n += 10;
                } else {
                    let body =
                        json!({"kind": "echo", "payload": {"n": n}, "timeout_s": 2}).to_string();
                    if let Ok(r) = http()
                        .post(format!("{d}/v1/jobs"))
                        .bearer_auth(&token)
                        .body(body)
                        .send()
                        .await
                        && r.status() == StatusCode::ACCEPTED
                    {
                        let answer: Value = r.json().await.unwrap_or(Value::Null);
                        acknowledged
                            .lock()
                            .unwrap()
                            .push((answer["job_id"].as_str().unwrap().to_owned(), n));
                    }
                    n += 1;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    // Nodes heartbeat through it all (to the control plane, which dies with the hub).
    let c = format!("http://127.0.0.1:{cport}");
    let nodes: Vec<String> = (0..5).map(|i| format!("chaos-{i}")).collect();
    let beats = {
        let (c, token, stop, nodes) = (c.clone(), token.clone(), stop.clone(), nodes.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for node in &nodes {
                    let _ = http()
                        .post(format!("{c}/v1/heartbeat"))
                        .bearer_auth(&token)
                        .body(heartbeat_body(node))
                        .send()
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let mut workers = Vec::new();
    for w in 0..4 {
        let (d, token, stop, recorded) = (d.clone(), token.clone(), stop.clone(), recorded.clone());
        workers.push(tokio::spawn(async move {
            let mut idle_since: Option<Instant> = None;
            loop {
                let body = json!({"node_id": format!("w{w}"), "capabilities": TEST_KINDS, "max_jobs": 10, "wait_ms": 200}).to_string();
                let Ok(r) = http().post(format!("{d}/v1/leases")).bearer_auth(&token).body(body).send().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let answer: Value = r.json().await.unwrap_or(Value::Null);
                let jobs = answer["jobs"].as_array().cloned().unwrap_or_default();
                if jobs.is_empty() {
                    // Done once the producer stopped and nothing has come for a while.
                    if stop.load(Ordering::Relaxed) && idle_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(4) {
                        return;
                    }
                    continue;
                }
                idle_since = None;
                for job in jobs {
                    let body = json!({"job_id": job["job_id"], "lease_id": job["lease_id"], "outcome": "success", "result": {"n": job["payload"]["n"]}}).to_string();
                    if let Some((StatusCode::OK, answer)) = persist_post(&format!("{d}/v1/results"), &token, &body, true).await
                        && answer["duplicate"] == false {
                            *recorded.lock().unwrap().entry(job["job_id"].as_str().unwrap().to_owned()).or_default() += 1;
                        }
                }
            }
        }));
    }

    // Two consumers on the worker stream (the client reconnects, resumes and replays by
    // itself); s1 crashes every 40 jobs, leaving the job in hand to be reaped and run again.
    for (w, crash_every) in [(0, None), (1, Some(40))] {
        let (d, token, stop, recorded) = (d.clone(), token.clone(), stop.clone(), recorded.clone());
        workers.push(tokio::spawn(stream_consumer(
            format!("s{w}"),
            d,
            token,
            stop,
            recorded,
            crash_every,
        )));
    }

    // One node heartbeats once, before the first kill: only the registry snapshot can carry
    // it across the restarts.
    post(
        &format!("{c}/v1/heartbeat"),
        Auth::Bearer(&token),
        &heartbeat_body("chaos-once"),
    )
    .await;
    let snapshot = hub.home.join("nodes_registry.json");
    sheratan_testkit::wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&snapshot)
            .ok()
            .filter(|t| t.contains("chaos-once"))
            .map(|_| ())
    })
    .expect("the snapshot holds chaos-once");
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..2500))).await;
        hub.kill9();
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..500))).await;
        hub.restart();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    producer.await.unwrap();
    beats.await.unwrap();
    for w in workers {
        w.await.unwrap();
    }

    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 100,
        "the load was real: {} jobs",
        acknowledged.len()
    );
    let recorded = recorded.lock().unwrap().clone();
    for (job_id, n) in &acknowledged {
        let (status, view) = get(&format!("{d}/v1/jobs/{job_id}"), Auth::Bearer(&token)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "job {job_id} answered 2xx but is missing: {view}"
        );
        assert_eq!(view["status"], "completed", "{view}");
        assert_eq!(
            view["result"],
            json!({"n": n}),
            "the result belongs to this job"
        );
        assert!(
            recorded.get(job_id).copied().unwrap_or(0) <= 1,
            "job {job_id} completed twice"
        );
    }
    let (_, health) = get(&format!("{d}/health"), Auth::None).await;
    assert_eq!(health["inflight"], 0);
    // The registry came back: every node is known (from the snapshot or a later heartbeat).
    let (status, listed) = get(&format!("{c}/v1/nodes"), Auth::Bearer(&token)).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    for node in nodes.iter().chain(Some(&"chaos-once".to_owned())) {
        assert!(
            listed["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["node_id"] == node.as_str()),
            "{node} is missing after the restarts: {listed}"
        );
    }
    eprintln!(
        "chaos: {} acknowledged jobs, all completed once, across {kills} kill -9 restarts (seed {seed})",
        acknowledged.len()
    );
}
