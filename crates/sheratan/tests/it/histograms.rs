//! Latency histograms (docs/API.md, "Metrics"): queue wait, run time and end to end by queue,
//! lease waits, HTTP by route, the store's group commits. They follow real jobs through a real
//! worker, their labels stay bounded whatever clients invent, a scrape does not grow with the
//! jobs a hub holds, and the Grafana dashboard in packaging/grafana/ asks only for what exists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sheratan_testkit::{HubProcess, Proc};

use crate::common::*;

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

async fn scrape(hub: &HubProcess) -> (String, Vec<Sample>) {
    let text = metrics_text(&hub.data_url, &hub.token()).await;
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap();
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().unwrap(),
            }
        })
        .collect();
    (text, samples)
}

/// The `_count` (or `_sum`) of a histogram's series with `label` = `value`.
fn stat(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k).map(String::as_str) == Some(v)))
        .map(|s| s.value)
        .sum()
}

/// Every histogram series: buckets never decrease and `+Inf` equals `_count`.
fn assert_well_formed(samples: &[Sample]) {
    // (family, labels but `le`) → (le, cumulative count) per bucket.
    type Series = (String, Vec<(String, String)>);
    let mut series: BTreeMap<Series, Vec<(f64, f64)>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name.ends_with("_bucket")) {
        let mut labels = s.labels.clone();
        let le = labels.remove("le").unwrap();
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap()
        };
        let key = (
            s.name.trim_end_matches("_bucket").to_owned(),
            labels.into_iter().collect(),
        );
        series.entry(key).or_default().push((le, s.value));
    }
    assert!(!series.is_empty());
    for ((name, labels), buckets) in series {
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{name} {labels:?}: {buckets:?}"
        );
        let count = samples
            .iter()
            .find(|s| {
                s.name == format!("{name}_count")
                    && s.labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect::<Vec<_>>()
                        == labels
            })
            .unwrap_or_else(|| panic!("{name} {labels:?} has no _count"));
        assert_eq!(
            buckets.last().unwrap(),
            &(f64::INFINITY, count.value),
            "{name} {labels:?}"
        );
    }
}

/// A worker on the request routes (`--no-stream`): these tests read the HTTP routes' histograms
/// too (a worker on the stream sends its results as frames, not requests).
fn worker(hub: &HubProcess, node: &str, queues: &str) -> Proc {
    Proc::start(
        Path::new(env!("CARGO_BIN_EXE_sheratan")),
        &[
            "worker",
            "--no-stream",
            "--node-id",
            node,
            "--queues",
            queues,
            "--concurrency",
            "8",
            "--control-url",
            &hub.control_url,
            "--data-url",
            &hub.data_url,
        ],
        &[("SHERATAN_HUB_TOKEN", hub.token().as_str())],
        true,
    )
}

/// Scrapes until `n` jobs have ended (completed or failed) on the hub; the last scrape.
async fn wait_ended(hub: &HubProcess, n: f64) -> Vec<Sample> {
    let started = Instant::now();
    loop {
        let (_, samples) = scrape(hub).await;
        let ended = stat(
            &samples,
            "sheratan_jobs_total",
            Some(("event", "completed")),
        ) + stat(&samples, "sheratan_jobs_total", Some(("event", "failed")));
        if ended >= n {
            return samples;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{ended} of {n} jobs ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The three job histograms each counted `n` jobs of `queue`.
fn assert_job_counts(samples: &[Sample], queue: &str, n: f64) {
    for family in [
        "sheratan_job_queue_wait_seconds",
        "sheratan_job_run_seconds",
        "sheratan_job_end_to_end_seconds",
    ] {
        let count = stat(samples, &format!("{family}_count"), Some(("queue", queue)));
        assert_eq!(count, n, "{family} {queue}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_histograms_follow_jobs_and_the_grafana_dashboard_uses_only_them() {
    let hub = hub().start();
    let token = hub.token();
    let _worker = worker(&hub, "hist-w", "default,slow");
    for _ in 0..5 {
        let (status, _) = submit(
            &hub.data_url,
            &token,
            &json!({"kind": "sleep", "queue": "slow", "payload": {"ms": 300}}),
        )
        .await;
        assert_eq!(status.as_u16(), 202);
    }
    for i in 0..10 {
        submit(
            &hub.data_url,
            &token,
            &json!({"kind": "echo", "payload": {"i": i}}),
        )
        .await;
    }
    wait_ended(&hub, 15.0).await;
    let (text, samples) = scrape(&hub).await;
    assert_well_formed(&samples);
    assert_job_counts(&samples, "slow", 5.0);
    assert_job_counts(&samples, "default", 10.0);
    let slow = Some(("queue", "slow"));
    let default = Some(("queue", "default"));
    // The sleeps ran 300 ms each; the echoes far less; a job's life holds its run.
    let run_slow = stat(&samples, "sheratan_job_run_seconds_sum", slow);
    assert!((1.5..10.0).contains(&run_slow), "{run_slow}");
    assert!(stat(&samples, "sheratan_job_run_seconds_sum", default) < 1.0);
    assert!(stat(&samples, "sheratan_job_end_to_end_seconds_sum", slow) >= run_slow);
    assert!(
        stat(
            &samples,
            "sheratan_lease_wait_seconds_count",
            Some(("outcome", "jobs"))
        ) >= 1.0
    );
    assert_eq!(
        stat(
            &samples,
            "sheratan_http_request_duration_seconds_count",
            Some(("route", "POST /v1/jobs"))
        ),
        15.0
    );
    assert!(
        stat(
            &samples,
            "sheratan_http_request_duration_seconds_count",
            Some(("route", "POST /v1/results"))
        ) >= 15.0
    );
    assert!(
        stat(&samples, "sheratan_store_group_ops_sum", None) >= 31.0,
        "15 submits, 15 results, leases"
    );
    assert!(stat(&samples, "sheratan_store_group_commit_seconds_count", None) >= 1.0);

    // The dashboard asks only for families this hub has.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/grafana/sheratan-hub.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let families: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let mut asked = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("sheratan_") {
                    let family = ["_bucket", "_sum", "_count"]
                        .iter()
                        .fold(word, |w, s| w.strip_suffix(s).unwrap_or(w));
                    let family = if families.contains(word) {
                        word
                    } else {
                        family
                    };
                    asked.insert(family.to_owned());
                }
            }
        }
    }
    let missing: Vec<&String> = asked
        .iter()
        .filter(|f| !families.contains(f.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard asks for {missing:?}, which the hub does not have"
    );
    assert!(asked.len() >= 9, "{asked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_stay_bounded_whatever_clients_invent() {
    let hub = hub().env("SHERATAN_MAX_QUEUE_DEPTH", "1000000").start();
    let token = hub.token();
    // 80 queues served (by two workers: a lease names at most 64): the per-queue series stop
    // at 64, the rest share `_other`.
    let queues: Vec<String> = (0..80).map(|i| format!("q{i:02}")).collect();
    let _workers = [
        worker(&hub, "w1", &queues[..40].join(",")),
        worker(&hub, "w2", &queues[40..].join(",")),
    ];
    let batch: Vec<Value> = queues
        .iter()
        .map(|q| json!({"kind": "echo", "queue": q}))
        .collect();
    let (status, _) = post(
        &format!("{}/v1/jobs/batch", hub.data_url),
        Auth::Bearer(&token),
        &json!({"jobs": batch}).to_string(),
    )
    .await;
    assert_eq!(status.as_u16(), 200);
    wait_ended(&hub, 80.0).await;
    // Invented routes, and invented methods on real routes (before any token), are one series.
    for i in 0..200 {
        get(
            &format!("{}/v1/nonsense/{i}", hub.data_url),
            Auth::Bearer(&token),
        )
        .await;
        let method = reqwest::Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
        http()
            .request(method, format!("{}/v1/jobs", hub.data_url))
            .send()
            .await
            .unwrap();
    }
    let (_, samples) = scrape(&hub).await;
    let values = |name: &str, label: &str| -> BTreeSet<String> {
        samples
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.labels.get(label).cloned())
            .collect()
    };
    let waited = values("sheratan_job_queue_wait_seconds_count", "queue");
    assert_eq!(waited.len(), 65, "{waited:?}");
    assert!(waited.contains("_other"));
    assert_eq!(
        stat(&samples, "sheratan_job_queue_wait_seconds_count", None),
        80.0,
        "every lease counted somewhere"
    );
    let routes = values("sheratan_http_request_duration_seconds_count", "route");
    assert!(
        routes.contains("unmatched") && routes.len() < 20,
        "{routes:?}"
    );
}

/// A hub holding 1,000 jobs and then 100,000 shows the same series: only values change. (A hub
/// of its own, without workers: nothing else happens between the two scrapes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_does_not_grow_with_the_jobs_held() {
    let hub = hub().env("SHERATAN_MAX_QUEUE_DEPTH", "1000000").start();
    let token = hub.token();

    // 1,000 jobs held, then 100,000: the same series, so the same scrape but for values.
    let fill = |n: usize| {
        let (url, token) = (format!("{}/v1/jobs/batch", hub.data_url), token.clone());
        async move {
            for _ in 0..n / 1000 {
                let jobs: Vec<Value> = (0..1000)
                    .map(|i| json!({"kind": "echo", "queue": "held", "payload": {"i": i}}))
                    .collect();
                let (status, _) = post(
                    &url,
                    Auth::Bearer(&token),
                    &json!({"jobs": jobs}).to_string(),
                )
                .await;
                assert_eq!(status.as_u16(), 200);
            }
        }
    };
    fill(1000).await;
    let series = |samples: &[Sample]| -> Vec<String> {
        samples
            .iter()
            .map(|s| format!("{}{:?}", s.name, s.labels))
            .collect()
    };
    scrape(&hub).await; // so that `GET /metrics` has its series before the first look
    let (_, before) = scrape(&hub).await;
    fill(99_000).await;
    let (_, after) = scrape(&hub).await;
    assert_eq!(
        stat(&after, "sheratan_queue_depth", Some(("queue", "held"))),
        100_000.0
    );
    let (before, after) = (series(&before), series(&after));
    let only_before: Vec<&String> = before.iter().filter(|s| !after.contains(s)).collect();
    let only_after: Vec<&String> = after.iter().filter(|s| !before.contains(s)).collect();
    assert!(
        only_before.is_empty() && only_after.is_empty(),
        "a scrape's series do not depend on the jobs held: gone {only_before:?}, new {only_after:?}"
    );
}

/// On PostgreSQL the same: the set-based result path, the careful one (failures) and leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_the_store_times_leases_results_and_failures_too() {
    let base = std::env::var("SHERATAN_TEST_POSTGRES_URL")
        .expect("SHERATAN_TEST_POSTGRES_URL is not set: run ./scripts/test.sh");
    let store = format!("{base}?schema=hist_{}", uuid::Uuid::now_v7().simple());
    let hub = hub().env("SHERATAN_STORE", &store).start();
    let token = hub.token();
    let _worker = worker(&hub, "pg-w", "default");
    let mut jobs: Vec<Value> = (0..6)
        .map(|i| json!({"kind": "echo", "payload": {"i": i}}))
        .collect();
    jobs.push(json!({"kind": "sleep", "payload": {"ms": 200}}));
    // A sleep without its duration fails for good: the careful result path.
    jobs.extend((0..2).map(|_| json!({"kind": "sleep", "payload": {}})));
    for job in &jobs {
        let (status, _) = submit(&hub.data_url, &token, job).await;
        assert_eq!(status.as_u16(), 202);
    }
    // And one the reaper fails for good (leased by a node that never answers).
    ghost_job(&hub).await;
    let samples = wait_ended(&hub, 10.0).await;
    assert_well_formed(&samples);
    assert_job_counts(&samples, "default", 9.0);
    assert_ghosted(&samples);
    let default = Some(("queue", "default"));
    assert!(stat(&samples, "sheratan_job_run_seconds_sum", default) >= 0.2);
    assert!(stat(&samples, "sheratan_store_group_commit_seconds_count", None) >= 1.0);
}

/// A job whose last attempt's lease runs out ends in `end_to_end` by the reaper, with no run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_reaper_fails_for_good_ends_its_life_without_a_run() {
    let hub = hub().start();
    ghost_job(&hub).await;
    let samples = wait_ended(&hub, 1.0).await;
    assert_eq!(
        stat(&samples, "sheratan_jobs_total", Some(("event", "failed"))),
        1.0
    );
    assert_ghosted(&samples);
}

/// A job of queue `ghosted` (1 s, one attempt) leased by a node that never answers.
async fn ghost_job(hub: &HubProcess) {
    let token = hub.token();
    let job = json!({"kind": "echo", "queue": "ghosted", "timeout_s": 1, "max_attempts": 1});
    let (status, _) = submit(&hub.data_url, &token, &job).await;
    assert_eq!(status.as_u16(), 202);
    let (status, grant) = post(
        &format!("{}/v1/leases", hub.data_url),
        Auth::Bearer(&token),
        &json!({"node_id": "ghost", "queues": ["ghosted"], "capabilities": ["echo"]}).to_string(),
    )
    .await;
    assert_eq!(status.as_u16(), 200, "{grant}");
    assert_eq!(grant["jobs"].as_array().unwrap().len(), 1);
}

/// The ghosted job's life ended (by the reaper, over a second after it began) without a run.
fn assert_ghosted(samples: &[Sample]) {
    let ghosted = Some(("queue", "ghosted"));
    let count = |family: &str| stat(samples, &format!("{family}_count"), ghosted);
    assert_eq!(count("sheratan_job_end_to_end_seconds"), 1.0);
    assert!(stat(samples, "sheratan_job_end_to_end_seconds_sum", ghosted) >= 1.0);
    assert_eq!(count("sheratan_job_run_seconds"), 0.0);
    assert_eq!(count("sheratan_job_queue_wait_seconds"), 1.0);
}
