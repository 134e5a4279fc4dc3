//! Hosts, broker auctions and the Core API (issue 6), through real processes: every host,
//! broker and core here is a `sheratan` process serving real HTTP on loopback.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sheratan_testkit::{HubProcess, Proc};

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

fn hub_env<'a>(hub: &'a HubProcess, token: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("SHERATAN_CONTROL_URL", hub.control_url.as_str()),
        ("SHERATAN_DATA_URL", hub.data_url.as_str()),
        ("SHERATAN_HUB_TOKEN", token),
    ]
}

/// A host process; `extra` are more flags (price, capacity, handlers).
fn host(hub: &HubProcess, token: &str, node: &str, extra: &[&str]) -> Proc {
    let listen = free_addr();
    let mut args = vec!["host", "--node-id", node, "--listen", &listen];
    args.extend_from_slice(extra);
    Proc::start(bin(), &args, &hub_env(hub, token), true)
}

fn broker(hub: &HubProcess, token: &str) -> Proc {
    let listen = free_addr();
    let home = hub.home.to_string_lossy().into_owned();
    Proc::start(
        bin(),
        &[
            "broker",
            "--node-id",
            "broker-t",
            "--listen",
            &listen,
            "--home",
            &home,
        ],
        &hub_env(hub, token),
        true,
    )
}

/// A hub whose retries come back fast, so retry paths take seconds, not minutes.
fn quick_hub() -> HubProcess {
    hub().env("SHERATAN_RETRY_BASE_MS", "300").start()
}

async fn submit_auction(hub: &HubProcess, token: &str, body: Value) -> String {
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
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let (_, job) = get(
            &format!("{}/v1/jobs/{job_id}", hub.data_url),
            Auth::Bearer(token),
        )
        .await;
        if done(&job) {
            return job;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job never got there: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn completed(job: &Value) -> bool {
    job["status"] == "completed"
}

async fn auction_of(broker: &Proc, token: &str, job_id: &str) -> Value {
    let (status, record) = get(
        &format!("{}/v1/auctions/{job_id}", broker.urls["broker"]),
        Auth::Bearer(token),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{record}");
    record
}

/// Waits until the hub lists `n` ONLINE hosts (the broker learns hosts from the registry).
async fn wait_hosts(hub: &HubProcess, token: &str, n: usize) {
    for _ in 0..100 {
        let (_, nodes) = get(
            &format!("{}/v1/nodes?role=host&status=ONLINE", hub.control_url),
            Auth::Bearer(token),
        )
        .await;
        if nodes["nodes"].as_array().map_or(0, Vec::len) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{n} hosts never came ONLINE");
}

/// Waits until the host at `url` runs a job.
async fn wait_busy(url: &str) {
    for _ in 0..200 {
        let (_, health) = get(&format!("{url}/health"), Auth::None).await;
        if health["inflight"] == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the host at {url} never took the job");
}

fn handlers_file(dir: &Path) -> String {
    let path = dir.join("handlers.toml");
    std::fs::write(
        &path,
        "[handlers.greet]\ncommand = [\"/bin/echo\", \"{\\\"hello\\\": 1}\"]\n",
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

/// A component's `/metrics` text.
async fn metrics_of(base: &str, token: &str) -> String {
    let response = http()
        .get(format!("{base}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cheapest_accepting_host_wins() {
    let hub = quick_hub();
    let token = hub.token();
    let handlers = handlers_file(&hub.home);
    // host-c is the cheapest but has no `greet` handler: the job's kind is one of its
    // requirements, so the broker does not even ask it.
    let _a = host(
        &hub,
        &token,
        "host-a",
        &["--base-price", "2.0", "--handlers", &handlers],
    );
    let b = host(
        &hub,
        &token,
        "host-b",
        &["--base-price", "1.0", "--handlers", &handlers],
    );
    let _c = host(&hub, &token, "host-c", &["--base-price", "0.1"]);
    wait_hosts(&hub, &token, 3).await;
    let broker = broker(&hub, &token);
    let job_id = submit_auction(
        &hub,
        &token,
        json!({"queue": "auction", "kind": "greet", "payload": {}}),
    )
    .await;
    let job = wait_job(&hub, &token, &job_id, Duration::from_secs(20), |j| {
        j["status"]
            .as_str()
            .is_some_and(|s| s != "accepted" && s != "in_progress")
    })
    .await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["result"], json!({"hello": 1}), "{job}");

    let record = auction_of(&broker, &token, &job_id).await;
    assert_eq!(record["winner"], "host-b", "{record}");
    let round = &record["rounds"][0];
    assert_eq!(round["outcome"], "completed");
    let bids = round["bids"].as_array().unwrap();
    assert_eq!(bids.len(), 2, "{record}");
    let bid = |id: &str| bids.iter().find(|b| b["node_id"] == id).unwrap().clone();
    assert_eq!(bid("host-a")["accept"], true);
    assert_eq!(bid("host-a")["price"], 2.0);
    assert_eq!(bid("host-b")["price"], 1.0);
    assert!(bids.iter().all(|b| b["node_id"] != "host-c"), "{record}");
    assert!(round["elapsed_ms"].is_u64() && round["started_at"].is_string());

    // The metrics count it.
    let metrics = metrics_of(&broker.urls["broker"], &token).await;
    for line in [
        "# TYPE sheratan_broker_bid_round_seconds histogram\n",
        "sheratan_broker_bid_round_seconds_bucket{le=\"+Inf\"} 1\n",
        "sheratan_broker_bid_round_seconds_count 1\n",
        "sheratan_broker_auctions_total{outcome=\"completed\"} 1\n",
        "sheratan_broker_wins_total{node_id=\"host-b\"} 1\n",
        "sheratan_broker_bids_total{answer=\"accept\"} 2\n",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }

    // The record survives a broker restart (it lives in the auction store).
    drop(broker);
    let broker = self::broker(&hub, &token);
    assert_eq!(
        auction_of(&broker, &token, &job_id).await["winner"],
        "host-b"
    );
    let (status, list) = get(
        &format!("{}/v1/auctions?limit=5", broker.urls["broker"]),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["auctions"][0]["job_id"], job_id.as_str());

    let metrics = metrics_of(&b.urls["host-b"], &token).await;
    for line in [
        "sheratan_host_bids_total{answer=\"accept\"} 1\n",
        "sheratan_host_executions_total{outcome=\"success\"} 1\n",
        "sheratan_host_inflight 0\n",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_at_capacity_declines() {
    let hub = quick_hub();
    let token = hub.token();
    let a = host(
        &hub,
        &token,
        "host-a",
        &["--base-price", "1.0", "--capacity", "1"],
    );
    let _b = host(
        &hub,
        &token,
        "host-b",
        &["--base-price", "5.0", "--capacity", "1"],
    );
    wait_hosts(&hub, &token, 2).await;
    let broker = broker(&hub, &token);
    let first = submit_auction(
        &hub,
        &token,
        json!({"queue": "auction", "kind": "sleep", "payload": {"ms": 3000}}),
    )
    .await;
    // host-a takes the first job and is then full.
    wait_busy(&a.urls["host-a"]).await;
    let (status, bid) = post(
        &format!("{}/v1/bid", a.urls["host-a"]),
        Auth::Bearer(&token),
        &json!({"job_id": "x", "kind": "sleep", "required_capabilities": [], "payload_bytes": 10})
            .to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bid["accept"], false, "{bid}");
    assert!(
        bid["reason"].as_str().unwrap().contains("at capacity"),
        "{bid}"
    );

    let second = submit_auction(
        &hub,
        &token,
        json!({"queue": "auction", "kind": "echo", "payload": {"n": 2}}),
    )
    .await;
    wait_job(&hub, &token, &second, Duration::from_secs(20), completed).await;
    let record = auction_of(&broker, &token, &second).await;
    assert_eq!(record["winner"], "host-b", "{record}");
    let declined = record["rounds"][0]["bids"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["node_id"] == "host-a")
        .unwrap()
        .clone();
    assert_eq!(declined["accept"], false, "{record}");
    wait_job(&hub, &token, &first, Duration::from_secs(20), completed).await;
    assert_eq!(
        auction_of(&broker, &token, &first).await["winner"],
        "host-a"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_mid_execution_is_replaced_by_the_next_auction_round() {
    let hub = quick_hub();
    let token = hub.token();
    let mut a = host(&hub, &token, "host-a", &["--base-price", "1.0"]);
    let _b = host(&hub, &token, "host-b", &["--base-price", "2.0"]);
    wait_hosts(&hub, &token, 2).await;
    let broker = broker(&hub, &token);
    let job_id = submit_auction(
        &hub,
        &token,
        json!({"queue": "auction", "kind": "sleep", "payload": {"ms": 1500}}),
    )
    .await;
    wait_busy(&a.urls["host-a"]).await;
    a.kill9();
    let job = wait_job(&hub, &token, &job_id, Duration::from_secs(30), completed).await;
    // The same attempt: the broker re-auctioned, the hub did not have to retry.
    assert_eq!(job["attempt"], 1, "{job}");
    let record = auction_of(&broker, &token, &job_id).await;
    let rounds = record["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "{record}");
    assert_eq!(rounds[0]["winner"], "host-a");
    assert_eq!(rounds[0]["outcome"], "host_failed");
    assert_eq!(rounds[1]["winner"], "host-b");
    assert_eq!(rounds[1]["outcome"], "completed");
    assert!(
        rounds[1]["bids"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["node_id"] != "host-a"),
        "the failed host is excluded: {record}"
    );
    assert_eq!(record["winner"], "host-b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auction_job_waits_for_a_host_that_offers_its_kind() {
    let hub = quick_hub();
    let token = hub.token();
    let broker = broker(&hub, &token);
    let (status, answer) = post(
        &format!("{}/v1/jobs", hub.data_url),
        Auth::Bearer(&token),
        &json!({"queue": "auction", "kind": "echo", "payload": {"v": 1}, "max_attempts": 10})
            .to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert!(
        answer["warning"]
            .as_str()
            .is_some_and(|w| w.contains("no ONLINE node offers kind \"echo\"")),
        "the submit says why the job will wait: {answer}"
    );
    let job_id = answer["job_id"].as_str().unwrap().to_owned();
    // No host offers echo: the broker (which offers what its hosts offer) does not take it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, job) = get(
        &format!("{}/v1/jobs/{job_id}", hub.data_url),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(
        (job["status"].as_str(), job["attempt"].as_u64()),
        (Some("accepted"), Some(0)),
        "{job}"
    );

    // Once a host offers it, the broker takes the job within a second or two: it does not
    // sit out a 10 s long poll it began while offering nothing.
    let _a = host(&hub, &token, "host-a", &[]);
    let job = wait_job(&hub, &token, &job_id, Duration::from_secs(5), completed).await;
    assert_eq!(job["result"], json!({"v": 1}));
    assert_eq!(job["attempt"], 1, "{job}");
    let record = auction_of(&broker, &token, &job_id).await;
    let rounds = record["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 1, "{record}");
    assert_eq!(rounds[0]["outcome"], "completed", "{record}");
    assert_eq!(record["winner"], "host-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_and_broker_refuse_bad_input() {
    let hub = quick_hub();
    let token = hub.token();
    let a = host(&hub, &token, "host-a", &[]);
    let broker = broker(&hub, &token);
    let host_url = &a.urls["host-a"];
    let broker_url = &broker.urls["broker"];
    let bid = json!({"job_id": "j", "kind": "echo"}).to_string();
    let (s, b) = post(&format!("{host_url}/v1/bid"), Auth::None, &bid).await;
    assert_error(s, &b, 403, "AUTH_FAIL");
    let (s, b) = post(&format!("{host_url}/v1/bid"), Auth::Bearer("wrong"), &bid).await;
    assert_error(s, &b, 403, "AUTH_FAIL");
    for bad in [
        "",
        "[]",
        "{",
        "{\"job_id\": 5}",
        "{\"job_id\":\"j\",\"kind\":\"echo\",\"evil\":1}",
    ] {
        let (s, b) = post(&format!("{host_url}/v1/bid"), Auth::Bearer(&token), bad).await;
        assert_error(s, &b, 400, "INVALID_REQUEST");
        let (s, b) = post(&format!("{host_url}/v1/execute"), Auth::Bearer(&token), bad).await;
        assert_error(s, &b, 400, "INVALID_REQUEST");
    }
    let huge = format!(
        "{{\"job_id\":\"j\",\"kind\":\"echo\",\"deadline_ms\":1000,\"payload\":\"{}\"}}",
        "x".repeat(3 << 20)
    );
    let (s, _) = post(
        &format!("{host_url}/v1/execute"),
        Auth::Bearer(&token),
        &huge,
    )
    .await;
    assert_eq!(s.as_u16(), 413);
    // An execution with a kind the host lacks is a job failure, not a host failure.
    let (s, b) = post(
        &format!("{host_url}/v1/execute"),
        Auth::Bearer(&token),
        &json!({"job_id": "j", "kind": "nope", "payload": {}, "deadline_ms": 1000}).to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["outcome"], "failure");
    let (s, b) = get(&format!("{host_url}/health"), Auth::None).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let (s, b) = get(&format!("{broker_url}/v1/auctions"), Auth::None).await;
    assert_error(s, &b, 403, "AUTH_FAIL");
    let (s, b) = get(
        &format!("{broker_url}/v1/auctions/not-a-uuid"),
        Auth::Bearer(&token),
    )
    .await;
    assert_error(s, &b, 400, "INVALID_REQUEST");
    let (s, b) = get(
        &format!("{broker_url}/v1/auctions/01a21c71-3151-764c-a3dc-06004a350420"),
        Auth::Bearer(&token),
    )
    .await;
    assert_error(s, &b, 404, "NOT_FOUND");
    let (s, b) = get(
        &format!("{broker_url}/v1/auctions?limit=0"),
        Auth::Bearer(&token),
    )
    .await;
    assert_error(s, &b, 400, "INVALID_REQUEST");
    let (s, b) = get(&format!("{broker_url}/v1/nothing"), Auth::Bearer(&token)).await;
    assert_error(s, &b, 404, "NOT_FOUND");
}

fn core(hub: &HubProcess, token: &str, broker_url: &str) -> Proc {
    let listen = free_addr();
    let home = hub.home.to_string_lossy().into_owned();
    Proc::start(
        bin(),
        &[
            "core",
            "--listen",
            &listen,
            "--home",
            &home,
            "--broker-url",
            broker_url,
            "--relay-url",
            "http://127.0.0.1:9",
        ],
        &hub_env(hub, token),
        true,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_routes_each_dispatch_to_its_queue() {
    let hub = quick_hub();
    let token = hub.token();
    let core = core(&hub, &token, "http://127.0.0.1:9");
    let api = format!("{}/api", core.urls["core"]);
    for (body, queue) in [
        (json!({"kind": "echo", "payload": {}}), "default"),
        (
            json!({"kind": "echo", "dispatch": "queue", "queue": "reports"}),
            "reports",
        ),
        (json!({"kind": "echo", "dispatch": "auction"}), "auction"),
        (
            json!({"kind": "chat", "dispatch": "llm", "payload": {"prompt": "hi"}}),
            "llm",
        ),
    ] {
        let (s, b) = post(
            &format!("{api}/jobs"),
            Auth::Bearer(&token),
            &body.to_string(),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        assert_eq!(b["queue"], queue, "{b}");
        assert_eq!(b["status"], "accepted");
        let id = b["job_id"].as_str().unwrap();
        let (_, job) = get(
            &format!("{}/v1/jobs/{id}", hub.data_url),
            Auth::Bearer(&token),
        )
        .await;
        assert_eq!(
            job["queue"], queue,
            "the hub stored it in the right queue: {job}"
        );
        let (s, via_core) = get(&format!("{api}/jobs/{id}"), Auth::Bearer(&token)).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(via_core["job_id"], id);
    }
    let (s, list) = get(&format!("{api}/jobs?queue=llm"), Auth::Bearer(&token)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1, "{list}");

    // Idempotent repeats answer 200 with the same job.
    let keyed = json!({"kind": "echo", "idempotency_key": "k-1", "payload": {"a": 1}}).to_string();
    let (s1, b1) = post(&format!("{api}/jobs"), Auth::Bearer(&token), &keyed).await;
    let (s2, b2) = post(&format!("{api}/jobs"), Auth::Bearer(&token), &keyed).await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::OK));
    assert_eq!(b1["job_id"], b2["job_id"]);
    // The hub's errors come through with their code.
    let clash = json!({"kind": "echo", "idempotency_key": "k-1", "payload": {"a": 2}}).to_string();
    let (s, b) = post(&format!("{api}/jobs"), Auth::Bearer(&token), &clash).await;
    assert_error(s, &b, 409, "IDEMPOTENCY_KEY_COLLISION");

    // Contradictions and garbage are the caller's error.
    let (s, b) = post(
        &format!("{api}/jobs"),
        Auth::Bearer(&token),
        &json!({"kind": "echo", "dispatch": "auction", "queue": "default"}).to_string(),
    )
    .await;
    assert_error(s, &b, 400, "INVALID_REQUEST");
    for bad in [
        "",
        "null",
        "{",
        "{\"kind\": 1}",
        "{\"kind\":\"echo\",\"dispatch\":\"teleport\"}",
        "{\"kind\":\"echo\",\"x\":1}",
    ] {
        let (s, b) = post(&format!("{api}/jobs"), Auth::Bearer(&token), bad).await;
        assert_error(s, &b, 400, "INVALID_REQUEST");
    }
    let (s, b) = post(
        &format!("{api}/jobs"),
        Auth::Bearer(&token),
        &json!({"kind": "", "payload": {}}).to_string(),
    )
    .await;
    assert_error(s, &b, 400, "INVALID_REQUEST");
    let (s, b) = get(&format!("{api}/jobs/nope"), Auth::Bearer(&token)).await;
    assert_error(s, &b, 400, "INVALID_REQUEST");
    let (s, b) = get(&format!("{api}/jobs?status=bogus"), Auth::Bearer(&token)).await;
    assert_error(s, &b, 400, "INVALID_REQUEST");

    // Token everywhere under /api; /health is public.
    let (s, b) = get(&format!("{api}/jobs"), Auth::None).await;
    assert_error(s, &b, 403, "AUTH_FAIL");
    let (s, b) = post(&format!("{api}/jobs"), Auth::Bearer("wrong"), "{}").await;
    assert_error(s, &b, 403, "AUTH_FAIL");
    let (s, _) = get(&format!("{}/health", core.urls["core"]), Auth::None).await;
    assert_eq!(s, StatusCode::OK);

    // CORS: the dashboard's origin only.
    let preflight = |origin: &str| {
        http()
            .request(reqwest::Method::OPTIONS, format!("{api}/jobs"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type",
            )
            .send()
    };
    let ok = preflight("http://127.0.0.1:3001").await.unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "http://127.0.0.1:3001"
    );
    let evil = preflight("http://evil.example").await.unwrap();
    assert_eq!(evil.status().as_u16(), 403);
    assert!(evil.headers().get("access-control-allow-origin").is_none());
    let plain = http()
        .get(format!("{api}/jobs"))
        .bearer_auth(&token)
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert!(plain.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_shows_a_down_broker_as_down() {
    let hub = quick_hub();
    let token = hub.token();
    let core = core(&hub, &token, &format!("http://{}", free_addr()));
    let api = format!("{}/api", core.urls["core"]);
    let (s, overview) = get(&format!("{api}/overview"), Auth::Bearer(&token)).await;
    assert_eq!(s, StatusCode::OK, "{overview}");
    let c = &overview["components"];
    assert_eq!(c["broker"]["status"], "down", "{overview}");
    assert!(
        c["broker"]["error"].as_str().unwrap().contains("broker"),
        "{overview}"
    );
    assert_eq!(c["relay"]["status"], "down");
    assert_eq!(c["control"]["status"], "up", "{overview}");
    assert_eq!(c["data"]["status"], "up", "{overview}");
    assert_eq!(c["core"]["status"], "up");
    let (s, b) = get(&format!("{api}/auctions"), Auth::Bearer(&token)).await;
    assert_error(s, &b, 503, "UNAVAILABLE");

    // The hub down too: still an answer.
    drop(hub);
    let (s, overview) = get(&format!("{api}/overview"), Auth::Bearer(&token)).await;
    assert_eq!(s, StatusCode::OK, "{overview}");
    assert_eq!(
        overview["components"]["control"]["status"], "down",
        "{overview}"
    );
    assert_eq!(
        overview["components"]["data"]["status"], "down",
        "{overview}"
    );
    let (s, b) = get(&format!("{api}/nodes"), Auth::Bearer(&token)).await;
    assert_error(s, &b, 503, "UNAVAILABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_the_mesh_and_events_deliver_a_completion() {
    let hub = hub().up().start();
    let token = hub.token();
    for name in ["core", "broker", "host-a", "host-b"] {
        assert!(
            hub.urls.contains_key(name),
            "{name} missing from the banner:\n{}",
            hub.stdout()
        );
    }
    let api = format!("{}/api", hub.urls["core"]);
    let mut events = http()
        .get(format!("{api}/events"))
        .bearer_auth(&token)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    assert!(
        events.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );

    wait_hosts(&hub, &token, 2).await;
    let (s, b) = post(
        &format!("{api}/jobs"),
        Auth::Bearer(&token),
        &json!({"kind": "echo", "dispatch": "auction", "payload": {"via": "core"}}).to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let job_id = b["job_id"].as_str().unwrap().to_owned();

    // Read the stream until this job's completion arrives.
    let mut text = String::new();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = events.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            for block in text.split("\n\n") {
                let data = block
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap_or("");
                if block.contains("event: job")
                    && let Ok(v) = serde_json::from_str::<Value>(data)
                    && v["job_id"] == job_id.as_str()
                    && v["status"] == "completed"
                {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(
        found,
        Ok(true),
        "no completion event; stream so far:\n{text}"
    );
    assert!(text.starts_with("event: ready"), "{text}");

    let (s, record) = get(&format!("{api}/auctions/{job_id}"), Auth::Bearer(&token)).await;
    assert_eq!(s, StatusCode::OK, "{record}");
    assert!(
        ["host-a", "host-b"].contains(&record["winner"].as_str().unwrap()),
        "{record}"
    );
    let (s, overview) = get(&format!("{api}/overview"), Auth::Bearer(&token)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        overview["components"]["broker"]["status"], "up",
        "{overview}"
    );
    assert_eq!(overview["nodes"]["by_role"]["host"], 2, "{overview}");
    let (s, nodes) = get(&format!("{api}/nodes"), Auth::Bearer(&token)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(nodes["nodes"].as_array().unwrap().len() >= 5, "{nodes}");
    let (s, audit) = get(&format!("{api}/audit?limit=5"), Auth::Bearer(&token)).await;
    assert_eq!(s, StatusCode::OK, "{audit}");
    assert!(audit["entries"].is_array());
    let (s, alerts) = get(&format!("{api}/alerts"), Auth::Bearer(&token)).await;
    assert_eq!(s, StatusCode::OK, "{alerts}");
}

/// A stand-in host: records the Authorization header of every request it gets and declines
/// every bid.
async fn spy_host(
    node_id: &'static str,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let auth = head
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                    .map_or(String::new(), |l| {
                        l["authorization:".len()..].trim().to_owned()
                    });
                record.lock().unwrap().push(auth);
                let body = json!({"node_id": node_id, "accept": false, "price": 0.0, "eta_ms": 0, "reason": "a spy"}).to_string();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    (url, seen)
}

/// Hosts and the broker on node credentials: a host's address is registered by its own
/// credential only, and the broker sends each host a per-job grant, never a secret. The spy
/// host sees grants only; its grant opens nothing on another host; the mesh token cannot move
/// a credentialed host's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_get_per_job_grants_from_a_broker_on_a_node_credential_never_a_secret() {
    use crate::credentials::{create, create_limited};
    let hub = quick_hub();
    let mesh = hub.token();
    // Hosts and the broker name the auctioned queue: only such hosts get grants.
    let host_secret = create_limited(&hub, "node", "h-real", "auction");
    let spy_secret = create_limited(&hub, "node", "h-spy", "auction");
    let broker_secret = create_limited(&hub, "node", "broker-t", "auction");
    let worker_secret = create_limited(&hub, "node", "w-other", "qx");
    let submitter = create(&hub, "submit", "ci");
    let real = host(&hub, &host_secret, "h-real", &[]);
    let (spy_url, seen) = spy_host("h-spy").await;
    let spy_beat =
        json!({"node_id": "h-spy", "role": "host", "addr": spy_url, "capabilities": ["echo"]});
    let (status, body) = post(
        &format!("{}/v1/heartbeat", hub.control_url),
        Auth::Bearer(&spy_secret),
        &spy_beat.to_string(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a node credential registers its own address: {body}"
    );
    wait_hosts(&hub, &mesh, 2).await;

    // The mesh token (or another node's credential) cannot move a credentialed host.
    let hijack =
        json!({"node_id": "h-real", "role": "host", "addr": spy_url, "capabilities": ["echo"]});
    for stranger in [&mesh, &spy_secret] {
        let (status, body) = post(
            &format!("{}/v1/heartbeat", hub.control_url),
            Auth::Bearer(stranger),
            &hijack.to_string(),
        )
        .await;
        assert_error(status, &body, 403, "FORBIDDEN");
    }

    let _broker = broker(&hub, &broker_secret);
    let job_id = submit_auction(
        &hub,
        &submitter,
        json!({"queue": "auction", "kind": "echo", "payload": {"x": 1}}),
    )
    .await;
    let job = wait_job(&hub, &mesh, &job_id, Duration::from_secs(20), completed).await;
    assert_eq!(job["node_id"], "broker-t", "{job}");
    assert_eq!(job["result"], json!({"x": 1}), "{job}");

    // The spy saw a grant for this job, and nothing else.
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the spy was asked for a bid");
    for auth in &seen {
        let grant = auth.strip_prefix("Bearer ").unwrap_or(auth);
        assert!(
            grant.starts_with(&format!("shtg1.{job_id}.")),
            "a grant for this job only: {auth}"
        );
        for secret in [&mesh, &broker_secret, &host_secret, &spy_secret] {
            assert!(!auth.contains(secret.as_str()), "a secret reached a host");
        }
    }
    // The spy's grant opens nothing on the real host (it is made with the spy's key).
    let grant = seen[0].strip_prefix("Bearer ").unwrap().to_owned();
    let execute = json!({"job_id": job_id, "kind": "echo", "payload": {}, "deadline_ms": 1000});
    let (status, body) = post(
        &format!("{}/v1/execute", real.urls["h-real"]),
        Auth::Bearer(&grant),
        &execute.to_string(),
    )
    .await;
    let (message, _) = assert_error(status, &body, 403, "AUTH_FAIL");
    assert!(message.contains("not signed for this host"), "{message}");
    // A grant the real host's key made opens only its job, and only until it expires.
    let key = sheratan_sign::grant_key(&sheratan_sign::signing_key(&host_secret));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let other_job = sheratan_sign::mint_grant(&key, "h-real", "another-job", now + 60);
    let (status, body) = post(
        &format!("{}/v1/execute", real.urls["h-real"]),
        Auth::Bearer(&other_job),
        &execute.to_string(),
    )
    .await;
    let (message, _) = assert_error(status, &body, 403, "FORBIDDEN");
    assert!(message.contains("is for job another-job"), "{message}");
    let expired = sheratan_sign::mint_grant(&key, "h-real", &job_id, now - 1);
    let (status, body) = post(
        &format!("{}/v1/execute", real.urls["h-real"]),
        Auth::Bearer(&expired),
        &execute.to_string(),
    )
    .await;
    let (message, _) = assert_error(status, &body, 403, "AUTH_FAIL");
    assert!(message.contains("expired"), "{message}");
    // A node that holds a lease of another queue gets no grants: no host names that queue (a
    // node credential without queues is no host at all).
    let (status, body) = post(
        &format!("{}/v1/jobs", hub.data_url),
        Auth::Bearer(&submitter),
        &json!({"queue": "qx", "kind": "echo", "payload": {}}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let lease =
        json!({"node_id": "w-other", "queues": ["qx"], "capabilities": ["echo"], "wait_ms": 2000});
    let (status, grant) = post(
        &format!("{}/v1/leases", hub.data_url),
        Auth::Bearer(&worker_secret),
        &lease.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    let held = &grant["jobs"][0];
    let ask = json!({"job_id": held["job_id"], "lease_id": held["lease_id"], "hosts": ["h-real", "h-spy"]});
    let (status, grants) = post(
        &format!("{}/v1/grants", hub.data_url),
        Auth::Bearer(&worker_secret),
        &ask.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{grants}");
    assert_eq!(
        grants["grants"],
        json!({}),
        "no grants for another queue's job"
    );
    // A node credential limited to queues leases from those only.
    let (status, body) = post(
        &format!("{}/v1/leases", hub.data_url),
        Auth::Bearer(&worker_secret),
        &json!({"node_id": "w-other", "queues": ["auction"], "capabilities": ["echo"]}).to_string(),
    )
    .await;
    let (message, _) = assert_error(status, &body, 403, "FORBIDDEN");
    assert!(
        message.contains("lease from queue \"auction\""),
        "{message}"
    );
    // Nor does the broker's own credential (a host knows only its own secret and grants).
    let (status, body) = post(
        &format!("{}/v1/execute", real.urls["h-real"]),
        Auth::Bearer(&broker_secret),
        &execute.to_string(),
    )
    .await;
    assert_error(status, &body, 403, "AUTH_FAIL");
}

/// A cancel reaches an auctioned job on its host (issue 19, item 1): the broker's watch sees
/// it, drops the forwarded execute request, and the host, losing its caller, kills the
/// command's process group before the command's side effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_auction_job_stops_on_its_host() {
    let hub = quick_hub();
    let token = hub.token();
    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("host_done");
    let handlers = dir.path().join("handlers.toml");
    std::fs::write(
        &handlers,
        format!(
            "[handlers.slowhost]\ncommand = [\"/bin/sh\", \"-c\", \"sleep 4.375; date > {}\"]\ntimeout_s = 60\n",
            done.display()
        ),
    )
    .unwrap();
    let handlers = handlers.display().to_string();
    let h = host(&hub, &token, "host-slow", &["--handlers", &handlers]);
    wait_hosts(&hub, &token, 1).await;
    let _broker = broker(&hub, &token);
    let job_id = submit_auction(
        &hub,
        &token,
        json!({"queue": "auction", "kind": "slowhost", "payload": {}, "timeout_s": 300}),
    )
    .await;
    wait_busy(&h.urls["host-slow"]).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let cancelled_at = std::time::Instant::now();
    let (status, view) = post(
        &format!("{}/v1/jobs/{job_id}/cancel", hub.data_url),
        Auth::Bearer(&token),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    // The host's slot frees when its execution stops.
    loop {
        let (_, health) = get(&format!("{}/health", h.urls["host-slow"]), Auth::None).await;
        if health["inflight"] == 0 {
            break;
        }
        assert!(
            cancelled_at.elapsed() < Duration::from_secs(3),
            "the host still runs the cancelled job: {health}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stray = std::process::Command::new("pgrep")
        .args(["-f", "sleep 4.375"])
        .output()
        .unwrap();
    assert!(stray.stdout.is_empty(), "the host's command lives on");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!done.exists(), "the cancelled command ran to its end");
    let (_, view) = get(
        &format!("{}/v1/jobs/{job_id}", hub.data_url),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(view["status"], "cancelled", "{view}");
}

/// The broker leases over the worker stream, offering what its ONLINE hosts offer: when a host
/// with a new kind comes, it stops that stream (the stop handshake) and opens one that offers
/// the kind, and a job of it is auctioned; nothing goes by lease request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_reopens_its_stream_when_its_hosts_offer_a_new_kind() {
    let hub = quick_hub();
    let token = hub.token();
    let _a = host(&hub, &token, "host-a", &[]);
    wait_hosts(&hub, &token, 1).await;
    let _broker = broker(&hub, &token);
    let first = submit_auction(
        &hub,
        &token,
        json!({"queue": "auction", "kind": "echo", "payload": {"v": 1}}),
    )
    .await;
    wait_job(&hub, &token, &first, Duration::from_secs(20), completed).await;

    // greet: no host offers it yet, so the broker's open stream does not take it …
    let greet = submit_auction(
        &hub,
        &token,
        json!({"queue": "auction", "kind": "greet", "payload": {}}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, job) = get(
        &format!("{}/v1/jobs/{greet}", hub.data_url),
        Auth::Bearer(&token),
    )
    .await;
    assert_eq!(job["status"], "accepted", "{job}");
    // … until one does: the broker looks at its offer every 5 s and opens a new stream.
    let handlers = handlers_file(&hub.home);
    let _b = host(&hub, &token, "host-b", &["--handlers", &handlers]);
    let job = wait_job(&hub, &token, &greet, Duration::from_secs(30), completed).await;
    assert_eq!(job["result"], json!({"hello": 1}), "{job}");
    let metrics = metrics_of(&hub.data_url, &token).await;
    let leases = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "sheratan_http_request_duration_seconds_count{route=\"POST /v1/leases\"} ",
            )
        })
        .unwrap_or("0");
    assert_eq!(leases, "0", "the broker leased by request");
    assert!(
        metrics.contains("sheratan_worker_streams 1"),
        "one stream, the new one: {metrics}"
    );
}
