//! Traces (issue 21, item 5): a job's W3C trace context runs from the submitter through the
//! hub's store to the node that runs it; each component exports its spans to an OTLP/HTTP
//! collector — here a small real one in the test that keeps what it is sent.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sheratan_testkit::HubProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// An OTLP/HTTP collector: keeps every span of every JSON export request it gets, each with
/// its resource's `service.name` added as `service`.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Value>>>,
}

async fn collector() -> Collector {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(export_request(conn, kept.clone()));
        }
    });
    Collector { url, spans }
}

async fn export_request(mut conn: tokio::net::TcpStream, kept: Arc<Mutex<Vec<Value>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let ok =
        head.starts_with("post /v1/traces ") && head.contains("content-type: application/json");
    if let (true, Ok(body)) = (ok, serde_json::from_slice::<Value>(&buf[head_end..])) {
        let mut kept = kept.lock().unwrap();
        for resource in body["resourceSpans"].as_array().into_iter().flatten() {
            let service = resource["resource"]["attributes"][0]["value"]["stringValue"].clone();
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    let mut span = span.clone();
                    span["service"] = service.clone();
                    kept.push(span);
                }
            }
        }
    }
    let status = if ok { "200 OK" } else { "400 Bad Request" };
    let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}");
    let _ = conn.write_all(answer.as_bytes()).await;
}

impl Collector {
    /// Runs `job` in the application's trace `trace` to completion; the trace's spans once
    /// those named `names` arrived.
    async fn completed_in_trace(
        &self,
        hub: &HubProcess,
        token: &str,
        job: Value,
        trace: &str,
        names: &[&str],
    ) -> (Value, Vec<Value>) {
        let job = run_traced(hub, token, job, &app_span(trace, APP)).await;
        assert_eq!(job["status"], "completed", "{job}");
        (job, self.trace(trace, names).await)
    }

    /// The span named `name` whose `sheratan.job_id` is `job_id`, once it arrived.
    async fn span_of_job(&self, name: &str, job_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .find(|s| {
                    s["name"] == name
                        && s["attributes"].as_array().is_some_and(|a| {
                            a.iter().any(|a| {
                                a["key"] == "sheratan.job_id" && a["value"]["stringValue"] == job_id
                            })
                        })
                })
                .cloned();
            if let Some(span) = found {
                return span;
            }
            assert!(Instant::now() < deadline, "no {name} span for job {job_id}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The spans of `trace_id` once those named `names` have all arrived.
    async fn trace(&self, trace_id: &str, names: &[&str]) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans: Vec<Value> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s["traceId"] == trace_id)
                .cloned()
                .collect();
            if names.iter().all(|n| spans.iter().any(|s| s["name"] == *n)) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "trace {trace_id}: waiting for {names:?}, have {spans:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The one span named `name` in `spans`.
fn named<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    let found: Vec<&Value> = spans.iter().filter(|s| s["name"] == name).collect();
    assert_eq!(found.len(), 1, "one {name} span: {spans:#?}");
    found[0]
}

/// `child`'s parent is `parent` (a span, or a span id).
fn assert_child(child: &Value, parent: &Value) {
    let parent_id = parent.get("spanId").unwrap_or(parent);
    assert_eq!(
        &child["parentSpanId"], parent_id,
        "{} should be a child of {parent}",
        child["name"]
    );
    let (start, end) = (
        nanos(&child["startTimeUnixNano"]),
        nanos(&child["endTimeUnixNano"]),
    );
    assert!(start > 0 && end >= start, "{child}");
}

fn nanos(v: &Value) -> u128 {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Submits `job` with `traceparent` on the data plane and waits for it to finish.
async fn run_traced(hub: &HubProcess, token: &str, job: Value, traceparent: &str) -> Value {
    let resp = http()
        .post(format!("{}/v1/jobs", hub.data_url))
        .bearer_auth(token)
        .header("traceparent", traceparent)
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let id = resp.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_finished(hub, token, &id).await
}

async fn wait_finished(hub: &HubProcess, token: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, job) = get(
            &format!("{}/v1/jobs/{id}", hub.data_url),
            Auth::Bearer(token),
        )
        .await;
        if job["status"] == "completed" || job["status"] == "failed" {
            return job;
        }
        assert!(Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The application span the tests' jobs are submitted in.
const APP: &str = "00f067aa0ba902b7";

/// An application's span, as its `traceparent` would name it.
fn app_span(trace: &str, span: &str) -> String {
    format!("00-{trace}-{span}-01")
}

/// `sheratan up` with export on: a job submitted inside an application's trace continues it
/// through the hub (submit, lease, result) and the node that runs it — the worker's handler,
/// the broker's auction and its rounds, the relay's tab on the demo page in Chromium — each
/// span the child of the one before, every service named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitters_trace_runs_through_the_hub_worker_broker_and_relay() {
    let otlp = collector().await;
    let hub = hub().up().env("SHERATAN_OTLP_ENDPOINT", &otlp.url).start();
    let token = hub.token();

    // A worker's job: submit → lease → handler → result.
    let (job, spans) = otlp
        .completed_in_trace(
            &hub,
            &token,
            json!({"kind": "echo", "payload": {"a": 1}}),
            "4bf92f3577b34da6a3ce929d0e0e4736",
            &[
                "sheratan.submit",
                "sheratan.lease",
                "sheratan.handler",
                "sheratan.result",
            ],
        )
        .await;
    let (submitted, lease) = (
        named(&spans, "sheratan.submit"),
        named(&spans, "sheratan.lease"),
    );
    let (handler, result) = (
        named(&spans, "sheratan.handler"),
        named(&spans, "sheratan.result"),
    );
    assert_child(submitted, &json!(APP));
    assert_child(lease, submitted);
    assert_child(handler, lease);
    assert_child(result, handler);
    for (span, service) in [
        (submitted, "sheratan-hub"),
        (lease, "sheratan-hub"),
        (handler, "sheratan-worker"),
        (result, "sheratan-hub"),
    ] {
        assert_eq!(span["service"], service, "{span}");
        assert_eq!(span["status"]["code"], 1, "{span}");
    }
    let attr = |s: &Value, k: &str| {
        s["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == k)
            .map(|a| a["value"]["stringValue"].clone())
    };
    assert_eq!(attr(lease, "sheratan.job_id"), Some(job["job_id"].clone()));
    assert_eq!(attr(result, "sheratan.status"), Some(json!("completed")));

    // An auction: lease → auction → round(s); the result is the auction's child.
    let (_, spans) = otlp
        .completed_in_trace(
            &hub,
            &token,
            json!({"queue": "auction", "kind": "echo", "payload": {}}),
            "5bf92f3577b34da6a3ce929d0e0e4737",
            &[
                "sheratan.lease",
                "sheratan.auction",
                "sheratan.auction.round",
                "sheratan.result",
            ],
        )
        .await;
    let auction = named(&spans, "sheratan.auction");
    assert_eq!(auction["service"], "sheratan-broker");
    assert_child(auction, named(&spans, "sheratan.lease"));
    assert_child(named(&spans, "sheratan.auction.round"), auction);
    assert_child(named(&spans, "sheratan.result"), auction);

    // An LLM job on the relay's demo page: lease → relay → result.
    let (_, spans) = otlp
        .completed_in_trace(
            &hub,
            &token,
            json!({"queue": "llm", "kind": "chat", "payload": {"prompt": "hello"}}),
            "6bf92f3577b34da6a3ce929d0e0e4738",
            &["sheratan.lease", "sheratan.relay", "sheratan.result"],
        )
        .await;
    let relay = named(&spans, "sheratan.relay");
    assert_eq!(relay["service"], "sheratan-relay");
    assert_eq!(attr(relay, "sheratan.backend"), Some(json!("cdp")));
    assert_child(relay, named(&spans, "sheratan.lease"));
    assert_child(named(&spans, "sheratan.result"), relay);

    // Core passes the caller's trace on with the job it submits.
    let trace = "9bf92f3577b34da6a3ce929d0e0e473a";
    let resp = http()
        .post(format!("{}/api/jobs", hub.urls["core"]))
        .bearer_auth(&token)
        .header("traceparent", app_span(trace, APP))
        .json(&json!({"kind": "echo", "payload": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let spans = otlp
        .trace(trace, &["sheratan.submit", "sheratan.handler"])
        .await;
    assert_child(named(&spans, "sheratan.submit"), &json!(APP));

    // A job submitted without a trace starts one at the hub.
    let (status, body) = submit(
        &hub.data_url,
        &token,
        &json!({"kind": "echo", "payload": {}}),
    )
    .await;
    assert_eq!(status.as_u16(), 202);
    let id = body["job_id"].as_str().unwrap();
    wait_finished(&hub, &token, id).await;
    let lease = otlp.span_of_job("sheratan.lease", id).await;
    let trace = lease["traceId"].as_str().unwrap();
    let spans = otlp
        .trace(trace, &["sheratan.submit", "sheratan.handler"])
        .await;
    let root = named(&spans, "sheratan.submit");
    assert!(root.get("parentSpanId").is_none(), "a new trace: {root}");
    assert_child(&lease, root);

    // A trace the application did not sample is carried, not exported.
    let unsampled = "abf92f3577b34da6a3ce929d0e0e473b";
    let job = run_traced(
        &hub,
        &token,
        json!({"kind": "echo", "payload": {}}),
        &format!("00-{unsampled}-{APP}-00"),
    )
    .await;
    assert_eq!(job["status"], "completed");
    // Spans of later jobs arrive, none of this one's.
    otlp.completed_in_trace(
        &hub,
        &token,
        json!({"kind": "echo", "payload": {}}),
        "bbf92f3577b34da6a3ce929d0e0e473c",
        &["sheratan.result"],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leaked = otlp
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s["traceId"] == unsampled)
        .count();
    assert_eq!(leaked, 0, "spans of an unsampled trace were exported");

    let metrics = metrics_text(&hub.data_url, &token).await;
    let count = |outcome: &str| {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "sheratan_trace_spans_total{{outcome=\"{outcome}\"}} "
                ))
            })
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert!(count("exported").is_some_and(|n| n >= 10.0), "{metrics}");
    assert_eq!(count("dropped"), Some(0.0), "{metrics}");
}

/// A collector that is down costs spans, never jobs: they are dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_for_a_collector_that_is_down_are_dropped_and_counted_and_jobs_run() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let hub = hub().up().env("SHERATAN_OTLP_ENDPOINT", &down).start();
    let token = hub.token();
    for i in 0..5 {
        let trace = format!("7bf92f3577b34da6a3ce929d0e0e473{i}");
        let job = run_traced(
            &hub,
            &token,
            json!({"kind": "echo", "payload": {"i": i}}),
            &app_span(&trace, APP),
        )
        .await;
        assert_eq!(job["status"], "completed", "{job}");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = metrics_text(&hub.data_url, &token).await;
        let dropped = metrics
            .lines()
            .find_map(|l| l.strip_prefix("sheratan_trace_spans_total{outcome=\"dropped\"} "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        // The hub's own spans: a submit, a lease and a result per job.
        if dropped >= 15.0 {
            assert!(
                metrics.contains("sheratan_trace_spans_total{outcome=\"exported\"} 0\n"),
                "{metrics}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        hub.stderr().contains("trace spans dropped"),
        "{}",
        hub.stderr()
    );
    // The relay shows its own count (no LLM job ran: nothing dropped there).
    let relay = metrics_text(&hub.urls["relay"], &token).await;
    assert!(
        relay.contains("sheratan_trace_spans_total{outcome=\"dropped\"} 0\n"),
        "{relay}"
    );
}

/// With export off the hub still carries the submitter's context, unchanged, to the node (on
/// SQLite and PostgreSQL), to its retry as well; a malformed one is not stored or passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_export_the_context_is_carried_unchanged_and_bad_ones_are_dropped() {
    let base = std::env::var("SHERATAN_TEST_POSTGRES_URL")
        .expect("SHERATAN_TEST_POSTGRES_URL is not set: run ./scripts/test.sh");
    let pg = format!("{base}?schema=trace_{}", uuid::Uuid::now_v7().simple());
    for hub in [hub().start(), hub().env("SHERATAN_STORE", &pg).start()] {
        let token = hub.token();
        let good = app_span("8bf92f3577b34da6a3ce929d0e0e4739", "00f067aa0ba902b7");
        let bad = [
            good.to_uppercase(),
            format!("{good}-x"),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_string(),
            "x".repeat(4000),
        ];
        for tp in std::iter::once(&good).chain(bad.iter()) {
            let resp = http()
                .post(format!("{}/v1/jobs", hub.data_url))
                .bearer_auth(&token)
                .header("traceparent", tp)
                .json(&json!({"kind": "echo", "payload": {}, "retry": {"base_ms": 1, "max_ms": 1}}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 202, "{tp}");
        }
        let (jobs, _) = lease(&hub.data_url, &token, "n1", &["default"], 10, 0).await;
        assert_eq!(jobs.len(), 5);
        assert_eq!(jobs[0]["traceparent"], good.as_str(), "{}", jobs[0]);
        for job in &jobs[1..] {
            assert!(job.get("traceparent").is_none(), "{job}");
        }
        // A retry runs in the same trace.
        let failure = json!({
            "job_id": jobs[0]["job_id"], "lease_id": jobs[0]["lease_id"], "outcome": "failure",
            "error": {"message": "again", "retryable": true}
        });
        let (status, body) = send_result(&hub.data_url, &token, &failure).await;
        assert_eq!(status.as_u16(), 200, "{body}");
        let (again, _) = lease(&hub.data_url, &token, "n1", &["default"], 10, 5000).await;
        assert_eq!(again.len(), 1);
        assert_eq!(
            (&again[0]["job_id"], &again[0]["attempt"]),
            (&jobs[0]["job_id"], &json!(2))
        );
        assert_eq!(again[0]["traceparent"], good.as_str(), "{}", again[0]);
    }
}

/// A collector address that cannot work stops the hub at start with a message naming it.
#[test]
fn an_unusable_collector_address_is_refused_at_start() {
    for bad in [
        "ftp://127.0.0.1:4318",
        "127.0.0.1:4318",
        "http://user:secret@127.0.0.1:4318",
    ] {
        let home = tempfile::tempdir().unwrap();
        let out = hub_command(home.path())
            .env("SHERATAN_OTLP_ENDPOINT", bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("SHERATAN_OTLP_ENDPOINT"), "{bad}: {stderr}");
        assert!(!stderr.contains("secret"), "{stderr}");
    }
}
