//! `sheratan bench heartbeat`: heartbeat ingest from N simulated nodes over HTTP on loopback.
//! Reports registration rate, sustained heartbeats/s with latency percentiles, hub RSS per
//! registered node, and the registry snapshot writes that happened meanwhile.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use serde::Serialize;
use sheratan_client::ControlClient;

use super::Percentiles;
use super::load::Lane;
use super::target::Target;

#[derive(Debug, Clone, Args)]
pub struct HeartbeatArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 10_000)]
    pub nodes: usize,
    /// Length of the sustained phase in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    /// Concurrent connections (one request in flight each).
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Measure this hub instead of starting one.
    #[arg(long)]
    pub control_url: Option<String>,
    /// Token of the hub given by --control-url.
    #[arg(long, env = "SHERATAN_HUB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Target heartbeats per second over all connections; 0 sends as fast as the hub answers.
    /// A fixed rate measures latency at a given load, without saturating the machine.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// PID of the hub given by --control-url, for RSS readings.
    #[arg(long)]
    pub hub_pid: Option<u32>,
    /// Registry snapshot interval of the hub the bench starts (ms). A large value turns
    /// snapshots off, to compare latency with and without them.
    #[arg(long, default_value_t = 1000)]
    pub registry_flush_ms: u64,
    /// Extra arguments for the hub the bench starts, e.g. "--node-ttl-sec 8" (the liveness
    /// snapshot interval is a quarter of the TTL).
    #[arg(long, allow_hyphen_values = true)]
    pub hub_args: Option<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct HeartbeatReport {
    pub bench: &'static str,
    pub nodes: usize,
    pub connections: usize,
    pub target_rate: Option<f64>,
    pub registry_flush_ms: Option<u64>,
    pub register_per_s: f64,
    pub heartbeats: u64,
    pub errors: u64,
    pub heartbeats_per_s: f64,
    pub latency: Percentiles,
    /// Requests that overlapped a registry snapshot write, and their latency.
    pub during_snapshot: usize,
    pub latency_during_snapshot: Percentiles,
    pub latency_outside_snapshot: Percentiles,
    pub rss_baseline_bytes: Option<u64>,
    pub rss_registered_bytes: Option<u64>,
    pub rss_end_bytes: Option<u64>,
    pub rss_per_node_bytes: Option<f64>,
    pub snapshots_during_run: Option<u64>,
    pub snapshot_seconds: Option<f64>,
    pub snapshot_bytes: Option<u64>,
}

fn body(node: usize) -> Bytes {
    Bytes::from(format!(
        concat!(
            r#"{{"node_id":"bench-{:06}","role":"worker","capabilities":["echo","sleep","http"],"#,
            r#""build_id":"0.1.0+bench","capability_hash":"5f2b9c7e4d1a8b3c6e0f9a2d7c4b1e8f5a3d6c9b2e7f4a1d8c5b2e9f6a3d0c7b","#,
            r#""runtime":{{"os":"linux","arch":"x86_64","version":"0.1.0"}},"load":{{"inflight":0,"capacity":4}}}}"#
        ),
        node
    ))
}

pub async fn run(args: HeartbeatArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.connections == 0 {
        bail!("--nodes and --connections must be at least 1");
    }
    let target = target(&args)?;
    let client = ControlClient::new(&target.control_url, Some(target.token.clone()))?;
    client.health().await.context("the hub's /health")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_baseline = target.rss_bytes();

    let started = Instant::now();
    let lanes = register_all(&args, &target).await?;
    let register_per_s = args.nodes as f64 / started.elapsed().as_secs_f64();
    // Let the first snapshot of the full registry happen before reading memory.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss_registered = target.rss_bytes();
    let before = client.metrics_json().await.ok();

    let run = sustain(&args, lanes, &client).await?;
    let after = client.metrics_json().await.ok();
    let (mut during, mut outside) = run.split_by_snapshots();
    let mut samples: Vec<u32> = run.samples.iter().map(|&(_, micros)| micros).collect();
    let heartbeats = samples.len() as u64;
    let metric =
        |m: &Option<serde_json::Value>, name: &str| m.as_ref().and_then(|v| v[name].as_f64());
    let snapshots = |m| metric(m, "registry.snapshots");
    let report = HeartbeatReport {
        bench: "heartbeat",
        nodes: args.nodes,
        connections: args.connections,
        target_rate: (args.rate > 0.0).then_some(args.rate),
        registry_flush_ms: args.control_url.is_none().then_some(args.registry_flush_ms),
        register_per_s,
        heartbeats,
        errors: run.errors,
        heartbeats_per_s: heartbeats as f64 / run.elapsed_s,
        latency: Percentiles::from_micros(&mut samples),
        during_snapshot: during.len(),
        latency_during_snapshot: Percentiles::from_micros(&mut during),
        latency_outside_snapshot: Percentiles::from_micros(&mut outside),
        rss_baseline_bytes: rss_baseline,
        rss_registered_bytes: rss_registered,
        rss_end_bytes: target.rss_bytes(),
        rss_per_node_bytes: rss_baseline
            .zip(rss_registered)
            .map(|(a, b)| b.saturating_sub(a) as f64 / args.nodes as f64),
        snapshots_during_run: snapshots(&before)
            .zip(snapshots(&after))
            .map(|(a, b)| (b - a) as u64),
        snapshot_seconds: metric(&after, "registry.snapshot_seconds"),
        snapshot_bytes: metric(&after, "registry.snapshot_bytes").map(|v| v as u64),
    };
    print_report(&report, args.json)?;
    Ok(())
}

/// The hub to measure: the running one of `--control-url`, or one started here.
fn target(args: &HeartbeatArgs) -> anyhow::Result<Target> {
    if let Some(url) = &args.control_url {
        let token = args
            .token
            .clone()
            .context("--token (or SHERATAN_HUB_TOKEN) is required with --control-url")?;
        return Ok(Target::external(
            url.clone(),
            String::new(),
            token,
            args.hub_pid,
        ));
    }
    eprintln!("starting a hub in a temp dir ...");
    let mut extra = vec![
        "--registry-flush-ms".to_owned(),
        args.registry_flush_ms.to_string(),
    ];
    extra.extend(
        args.hub_args
            .iter()
            .flat_map(|a| a.split_whitespace().map(str::to_owned)),
    );
    Target::spawn(&extra)
}

/// Phase 1: every node registers once, over `--connections` lanes (returned for phase 2).
async fn register_all(args: &HeartbeatArgs, target: &Target) -> anyhow::Result<Vec<Lane>> {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let progress = progress_ticker("registering", args.nodes as u64, done.clone());
    let mut lanes = Vec::new();
    for _ in 0..args.connections {
        let mut lane = Lane::connect(&target.control_url, &target.token).await?;
        let (next, done, nodes) = (next.clone(), done.clone(), args.nodes);
        lanes.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= nodes {
                    return Ok::<_, anyhow::Error>(lane);
                }
                let (status, _) = lane.post("/v1/heartbeat", body(i)).await?;
                if status != 200 {
                    bail!("heartbeat answered HTTP {status}");
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut ready = Vec::new();
    for lane in lanes {
        ready.push(lane.await??);
    }
    progress.abort();
    Ok(ready)
}

/// What the sustained phase saw.
struct Sustained {
    /// (sent, in ms after the start; latency in µs) of every answered heartbeat.
    samples: Vec<(u32, u32)>,
    errors: u64,
    elapsed_s: f64,
    /// The start in Unix seconds, to place samples against the snapshot windows.
    base_unix_s: f64,
    /// Registry snapshot writes during the phase, (start, end) in Unix seconds.
    windows: Vec<(f64, f64)>,
}

impl Sustained {
    /// Latencies of the requests that overlapped a snapshot write, and of the others.
    fn split_by_snapshots(&self) -> (Vec<u32>, Vec<u32>) {
        let (mut during, mut outside) = (Vec::new(), Vec::new());
        for &(sent_ms, micros) in &self.samples {
            let from = self.base_unix_s + f64::from(sent_ms) / 1000.0;
            let to = from + f64::from(micros) / 1e6;
            if self.windows.iter().any(|&(ws, we)| from < we && to > ws) {
                during.push(micros);
            } else {
                outside.push(micros);
            }
        }
        (during, outside)
    }
}

/// Phase 2: sustained heartbeats for `--duration-s`, round robin over the nodes.
async fn sustain(
    args: &HeartbeatArgs,
    lanes: Vec<Lane>,
    client: &ControlClient,
) -> anyhow::Result<Sustained> {
    let done = Arc::new(AtomicU64::new(0));
    let progress = progress_ticker("sustained", 0, done.clone());
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration_s);
    let started = Instant::now();
    let base_unix_s = unix_now_s();
    let windows = watch_snapshots(client.clone(), deadline);
    // With --rate, each lane sends on a fixed schedule (rate / connections per second);
    // without, as fast as the hub answers.
    let period =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.connections as f64 / args.rate));
    let tasks: Vec<_> = lanes
        .into_iter()
        .enumerate()
        .map(|(lane_no, lane)| {
            let schedule = Schedule {
                first_node: lane_no,
                step: args.connections,
                nodes: args.nodes,
                period,
                started,
                deadline,
            };
            tokio::spawn(schedule.run(lane, done.clone()))
        })
        .collect();
    let (mut samples, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (s, e) = task.await?;
        samples.extend(s);
        errors += e;
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    progress.abort();
    Ok(Sustained {
        samples,
        errors,
        elapsed_s,
        base_unix_s,
        windows: windows.await.unwrap_or_default(),
    })
}

/// One lane's sends in the sustained phase.
struct Schedule {
    first_node: usize,
    /// Lanes, so that together they go round robin over the nodes.
    step: usize,
    nodes: usize,
    period: Option<Duration>,
    started: Instant,
    deadline: Instant,
}

impl Schedule {
    async fn run(self, mut lane: Lane, done: Arc<AtomicU64>) -> (Vec<(u32, u32)>, u64) {
        let mut samples: Vec<(u32, u32)> = Vec::with_capacity(200_000);
        let mut errors = 0u64;
        let mut i = self.first_node;
        // Spread the lanes' first sends over one period.
        let offset = self.period.map_or(Duration::ZERO, |p| {
            p * self.first_node as u32 / self.step as u32
        });
        let mut next_send = tokio::time::Instant::now() + offset;
        while Instant::now() < self.deadline {
            if let Some(period) = self.period {
                tokio::time::sleep_until(next_send).await;
                next_send += period;
            }
            let sent_ms = u32::try_from(self.started.elapsed().as_millis()).unwrap_or(u32::MAX);
            match lane.post("/v1/heartbeat", body(i % self.nodes)).await {
                Ok((200, micros)) => samples.push((sent_ms, micros)),
                Ok(_) | Err(_) => errors += 1,
            }
            done.fetch_add(1, Ordering::Relaxed);
            i += self.step;
        }
        (samples, errors)
    }
}

fn unix_now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Polls the hub's metrics until `deadline` and returns the wall-clock windows (Unix seconds)
/// of the registry snapshot writes that happened meanwhile.
fn watch_snapshots(
    client: ControlClient,
    deadline: Instant,
) -> tokio::task::JoinHandle<Vec<(f64, f64)>> {
    tokio::spawn(async move {
        let mut windows: Vec<(f64, f64)> = Vec::new();
        let mut seen = None;
        loop {
            if let Ok(m) = client.metrics_json().await {
                let writes = m["registry.snapshots"].as_u64();
                let start = m["registry.snapshot_last_start_unix_s"].as_f64();
                let took = m["registry.snapshot_seconds"].as_f64();
                if let (Some(writes), Some(start), Some(took)) = (writes, start, took) {
                    if seen.is_some_and(|s| s != writes) {
                        windows.push((start, start + took));
                    }
                    seen = Some(writes);
                }
            }
            if Instant::now() >= deadline {
                return windows;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

fn progress_ticker(
    phase: &'static str,
    total: u64,
    done: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let n = done.load(Ordering::Relaxed);
            let rate = n as f64 / started.elapsed().as_secs_f64();
            if total > 0 {
                eprintln!("  {phase}: {n}/{total} ({rate:.0}/s)");
            } else {
                eprintln!("  {phase}: {n} requests ({rate:.0}/s)");
            }
        }
    })
}

fn print_report(r: &HeartbeatReport, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(r)?)?;
        return Ok(());
    }
    let mib = |b: Option<u64>| {
        b.map_or("n/a".to_owned(), |b| {
            format!("{:.1} MiB", b as f64 / 1048576.0)
        })
    };
    writeln!(
        out,
        "heartbeat ingest: {} nodes, {} connections, {}",
        r.nodes,
        r.connections,
        r.target_rate
            .map_or("as fast as possible".to_owned(), |t| format!(
                "paced at {t:.0}/s"
            ))
    )?;
    writeln!(
        out,
        "  register          {:>10.0} nodes/s",
        r.register_per_s
    )?;
    writeln!(
        out,
        "  sustained         {:>10.0} heartbeats/s ({} ok, {} errors)",
        r.heartbeats_per_s, r.heartbeats, r.errors
    )?;
    writeln!(
        out,
        "  latency ms        p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}",
        r.latency.p50_ms, r.latency.p90_ms, r.latency.p99_ms, r.latency.max_ms
    )?;
    writeln!(
        out,
        "  hub RSS           {} at start, {} registered, {} at end",
        mib(r.rss_baseline_bytes),
        mib(r.rss_registered_bytes),
        mib(r.rss_end_bytes)
    )?;
    if r.during_snapshot > 0 {
        writeln!(
            out,
            "  during snapshots  p50 {:.3}  p99 {:.3}  ({} requests overlapped a write)",
            r.latency_during_snapshot.p50_ms, r.latency_during_snapshot.p99_ms, r.during_snapshot
        )?;
        writeln!(
            out,
            "  outside snapshots p50 {:.3}  p99 {:.3}",
            r.latency_outside_snapshot.p50_ms, r.latency_outside_snapshot.p99_ms
        )?;
    }
    if let Some(per) = r.rss_per_node_bytes {
        writeln!(out, "  RSS per node      {per:.0} bytes")?;
    }
    if let (Some(n), Some(s), Some(b)) =
        (r.snapshots_during_run, r.snapshot_seconds, r.snapshot_bytes)
    {
        writeln!(
            out,
            "  registry snapshot {n} writes during the run; last took {:.1} ms for {:.1} MiB",
            s * 1000.0,
            b as f64 / 1048576.0
        )?;
    }
    Ok(())
}
