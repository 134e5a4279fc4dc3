//! `sheratan bench flood`: hostile traffic against a hub under normal load. Valid traffic
//! (submit, lease, signed result, paced) runs alone first, then again while flooders send
//! requests with bad tokens and oversized or malformed bodies. Reports valid latency in both
//! phases, the hub's memory, the security audit log's size and the alerts the audit watcher
//! raised (the watcher runs in this process on the hub's log directory, as `up` runs it).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Percentiles;
use super::load::Lane;
use super::target::Target;
use crate::watch::{RuleArgs, WatchConfig};

#[derive(Debug, clap::Args)]
pub struct FloodArgs {
    /// Requests with a wrong token (half to the control plane, half to the data plane).
    #[arg(long, default_value_t = 50_000)]
    pub bad_tokens: u64,
    /// Requests with a good token and a bad body: malformed JSON, wrong types, and (one in 100)
    /// a body over the hub's size limit.
    #[arg(long, default_value_t = 50_000)]
    pub malformed: u64,
    /// Valid jobs per second (each one submit, one lease and one signed result).
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Seconds of valid traffic alone, before the flood.
    #[arg(long, default_value_t = 5)]
    pub baseline_s: u64,
    /// Flooding connections.
    #[arg(long, default_value_t = 8)]
    pub flooders: usize,
    /// Instead of the flood: one source holds this many idle connections (the hub is started
    /// with this per-address cap) while another asks /health; reports /health's latency.
    #[arg(long, default_value_t = 0)]
    pub idle: usize,
    /// Seconds the idle connections are held (past the 10 s header deadline, so the hub's
    /// closing and the holder's reopening are part of it).
    #[arg(long, default_value_t = 15)]
    pub idle_s: u64,
    #[command(flatten)]
    pub rules: RuleArgs,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Default, Serialize)]
struct Statuses {
    s400: u64,
    s403: u64,
    s413: u64,
    other: u64,
    /// Requests the hub refused by closing the connection without an answer the client could
    /// read (an oversized body: the hub answers 413 and closes before reading it, and the
    /// client may still be writing), twice in a row.
    closed: u64,
    /// Connections the hub closed; the flooder reconnected.
    reconnects: u64,
}

impl Statuses {
    fn add(&mut self, other: &Statuses) {
        self.s400 += other.s400;
        self.s403 += other.s403;
        self.s413 += other.s413;
        self.other += other.other;
        self.closed += other.closed;
        self.reconnects += other.reconnects;
    }
}

#[derive(Debug, Serialize)]
struct Report {
    valid_unloaded: Percentiles,
    valid_during_flood: Percentiles,
    /// p99 during the flood over p99 alone.
    p99_ratio: f64,
    valid_requests: u64,
    valid_failures: u64,
    flood_requests: u64,
    flood_seconds: f64,
    bad_token: Statuses,
    malformed: Statuses,
    /// Refusals whose answer the hub's refusal pacer held back (SHERATAN_REFUSALS_PER_SEC).
    refusals_paced: u64,
    rss_before_bytes: u64,
    rss_max_bytes: u64,
    rss_after_bytes: u64,
    audit_log_bytes: u64,
    audit_log_lines: u64,
    alerts: std::collections::BTreeMap<String, u64>,
    /// Seconds from the flood's start to the first alert.
    first_alert_s: Option<f64>,
}

pub async fn run(args: FloodArgs) -> anyhow::Result<()> {
    if args.idle > 0 {
        return super::idle::run(super::idle::IdleArgs {
            connections: args.idle,
            baseline_s: args.baseline_s,
            hold_s: args.idle_s,
            rate: args.rate,
            json: args.json,
        })
        .await;
    }
    eprintln!("starting a hub in a temp dir ...");
    let target = Target::spawn(&[])?;
    let home = target.home().context("the bench's own hub has a home")?;
    let log_dir = home.join("logs");
    let shutdown = CancellationToken::new();
    let watcher = tokio::spawn(crate::watch::run(
        WatchConfig::new(log_dir.clone(), &args.rules),
        shutdown.clone(),
    ));
    let rss_before = target.rss_bytes().unwrap_or(0);
    eprintln!(
        "valid traffic alone: {} jobs/s for {} s ...",
        args.rate, args.baseline_s
    );
    let baseline = ValidTraffic::start(&target, args.rate);
    tokio::time::sleep(Duration::from_secs(args.baseline_s)).await;
    let (mut unloaded, failures_before) = baseline.stop().await?;

    eprintln!(
        "flood: {} bad-token and {} malformed requests over {} connections, valid traffic on ...",
        args.bad_tokens, args.malformed, args.flooders
    );
    let during = ValidTraffic::start(&target, args.rate);
    let mut flood = Flood::start(&target, &args);
    let watched = flood.watch(&target, &log_dir, args.json).await;
    let (bad, mal) = flood.statuses().await?;
    let (mut loaded, failures_during) = during.stop().await?;
    let first_alert_s = match watched.first_alert_s {
        Some(s) => Some(s),
        None => wait_for_alert(&log_dir, flood.started).await,
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    shutdown.cancel();
    let _ = watcher.await;
    let rss_after = target.rss_bytes().unwrap_or(0);
    let refusals_paced =
        sheratan_client::ControlClient::new(&target.control_url, Some(target.token.clone()))?
            .metrics_json()
            .await?["refusals.paced"]
            .as_f64()
            .unwrap_or(0.0) as u64;
    let audit = std::fs::read_to_string(log_dir.join(sheratan_proto::event::AUDIT_LOG_FILE))
        .unwrap_or_default();
    let valid_unloaded = Percentiles::from_micros(&mut unloaded);
    let valid_during_flood = Percentiles::from_micros(&mut loaded);
    let report = Report {
        p99_ratio: valid_during_flood.p99_ms / valid_unloaded.p99_ms.max(0.001),
        valid_requests: (unloaded.len() + loaded.len()) as u64,
        valid_failures: failures_before + failures_during,
        flood_requests: flood.total,
        flood_seconds: watched.seconds,
        valid_unloaded,
        valid_during_flood,
        bad_token: bad,
        malformed: mal,
        refusals_paced,
        rss_before_bytes: rss_before,
        rss_max_bytes: watched.rss_max.max(rss_after),
        rss_after_bytes: rss_after,
        audit_log_bytes: audit.len() as u64,
        audit_log_lines: audit.lines().count() as u64,
        alerts: alert_counts(&log_dir),
        first_alert_s,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// Valid jobs at a steady rate on a thread of their own, until stopped.
struct ValidTraffic {
    stop: Arc<AtomicBool>,
    done: tokio::sync::oneshot::Receiver<anyhow::Result<(Vec<u32>, u64)>>,
}

impl ValidTraffic {
    fn start(target: &Target, rate: u64) -> ValidTraffic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (url, token) = (target.data_url.clone(), target.token.clone());
        let done =
            super::on_own_thread(
                move || async move { valid_traffic(&url, &token, rate, &flag).await },
            );
        ValidTraffic { stop, done }
    }

    /// The latencies (µs) and the number of failed jobs.
    async fn stop(self) -> anyhow::Result<(Vec<u32>, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.done.await?
    }
}

/// The flooders: half send bad tokens, half malformed bodies.
struct Flood {
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<(bool, Statuses)>>>,
    sent: Arc<AtomicU64>,
    total: u64,
    started: Instant,
}

/// What watching the flood saw.
struct Watched {
    rss_max: u64,
    first_alert_s: Option<f64>,
    seconds: f64,
}

impl Flood {
    fn start(target: &Target, args: &FloodArgs) -> Flood {
        let sent = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        let per_kind = args.flooders.div_ceil(2).max(1) as u64;
        for i in 0..per_kind {
            let share = |total: u64| total / per_kind + u64::from(i < total % per_kind);
            let (control, data, counter) = (
                target.control_url.clone(),
                target.data_url.clone(),
                sent.clone(),
            );
            let n = share(args.bad_tokens);
            tasks.push(tokio::spawn(async move {
                let statuses = bad_tokens(&control, &data, n, &counter).await;
                statuses.map(|s| (true, s))
            }));
            let (data, token, counter) =
                (target.data_url.clone(), target.token.clone(), sent.clone());
            let n = share(args.malformed);
            tasks.push(tokio::spawn(async move {
                let statuses = malformed(&data, &token, n, &counter).await;
                statuses.map(|s| (false, s))
            }));
        }
        Flood {
            tasks,
            sent,
            total: args.bad_tokens + args.malformed,
            started: Instant::now(),
        }
    }

    /// Until every flooder is done: the hub's peak memory, the first alert, progress lines.
    async fn watch(&self, target: &Target, log_dir: &Path, quiet: bool) -> Watched {
        let mut last = Instant::now();
        let (mut rss_max, mut first_alert_s) = (0u64, None);
        while !self.tasks.iter().all(|f| f.is_finished()) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            rss_max = rss_max.max(target.rss_bytes().unwrap_or(0));
            if first_alert_s.is_none() && !crate::watch::read_alerts(log_dir).is_empty() {
                first_alert_s = Some(self.started.elapsed().as_secs_f64());
            }
            if last.elapsed() >= Duration::from_secs(1) && !quiet {
                last = Instant::now();
                eprintln!(
                    "  {} / {} hostile requests sent, hub RSS {:.1} MiB",
                    self.sent.load(Ordering::Relaxed),
                    self.total,
                    rss_max as f64 / 1048576.0
                );
            }
        }
        Watched {
            rss_max,
            first_alert_s,
            seconds: self.started.elapsed().as_secs_f64(),
        }
    }

    /// The answers the bad-token flooders and the malformed-body flooders got.
    async fn statuses(&mut self) -> anyhow::Result<(Statuses, Statuses)> {
        let (mut bad, mut mal) = (Statuses::default(), Statuses::default());
        for f in self.tasks.drain(..) {
            let (is_bad, s) = f.await??;
            if is_bad { &mut bad } else { &mut mal }.add(&s);
        }
        Ok((bad, mal))
    }
}

/// Repeats of one event are folded into a line written when the hub's fold window closes
/// (SHERATAN_AUDIT_FOLD_WINDOW_SEC, 10 s by default); the watcher alerts once it reads it.
/// Seconds from `started` to the first alert, waiting up to 20 s.
async fn wait_for_alert(log_dir: &Path, started: Instant) -> Option<f64> {
    let wait_until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < wait_until {
        if !crate::watch::read_alerts(log_dir).is_empty() {
            return Some(started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

fn alert_counts(log_dir: &Path) -> std::collections::BTreeMap<String, u64> {
    let mut alerts = std::collections::BTreeMap::new();
    for alert in crate::watch::read_alerts(log_dir) {
        *alerts.entry(alert.rule).or_insert(0) += 1;
    }
    alerts
}

fn print_table(r: &Report) {
    let mib = |b: u64| b as f64 / 1048576.0;
    println!("flood against a hub under load");
    println!(
        "  valid traffic alone          p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        r.valid_unloaded.p50_ms,
        r.valid_unloaded.p90_ms,
        r.valid_unloaded.p99_ms,
        r.valid_unloaded.max_ms
    );
    println!(
        "  valid traffic during flood   p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (p99 × {:.2})",
        r.valid_during_flood.p50_ms,
        r.valid_during_flood.p90_ms,
        r.valid_during_flood.p99_ms,
        r.valid_during_flood.max_ms,
        r.p99_ratio
    );
    println!(
        "  valid requests {}, failed {}",
        r.valid_requests, r.valid_failures
    );
    println!(
        "  hostile requests {} in {:.1} s ({:.0}/s): bad token 403 ×{} (other {}), malformed 400 ×{} 413 ×{} closed ×{} (other {}, reconnects {})",
        r.flood_requests,
        r.flood_seconds,
        r.flood_requests as f64 / r.flood_seconds.max(0.001),
        r.bad_token.s403,
        r.bad_token.other + r.bad_token.s400 + r.bad_token.s413,
        r.malformed.s400,
        r.malformed.s413,
        r.malformed.closed,
        r.malformed.other + r.malformed.s403,
        r.malformed.reconnects
    );
    println!(
        "  refusals held back by the hub's pacer {}",
        r.refusals_paced
    );
    println!(
        "  hub RSS {:.1} MiB before, {:.1} MiB at most, {:.1} MiB after",
        mib(r.rss_before_bytes),
        mib(r.rss_max_bytes),
        mib(r.rss_after_bytes)
    );
    println!(
        "  audit log {} lines, {:.1} KiB",
        r.audit_log_lines,
        r.audit_log_bytes as f64 / 1024.0
    );
    println!(
        "  alerts {:?}, the first {}",
        r.alerts,
        r.first_alert_s
            .map(|s| format!("{s:.1} s after the flood began"))
            .unwrap_or_else(|| "never".into())
    );
}

/// Paced valid jobs until `stop`: latencies of every request (µs) and the failures.
async fn valid_traffic(
    url: &str,
    token: &str,
    rate: u64,
    stop: &AtomicBool,
) -> anyhow::Result<(Vec<u32>, u64)> {
    // From an address of its own, as a legitimate client on another machine: the flooders'
    // connections count against 127.0.0.1's per-address cap, not against it.
    let source = Some(std::net::IpAddr::from([127, 0, 0, 2]));
    let mut lane = Lane::connect_from(url, token, source).await?;
    let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut next = tokio::time::Instant::now();
    let mut latencies = Vec::new();
    let mut failures = 0u64;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until(next).await;
        next += period;
        n += 1;
        let job = Bytes::from(format!(r#"{{"kind":"echo","payload":{{"n":{n}}}}}"#));
        let (status, _, us) = lane.exchange("/v1/jobs", job, &[]).await?;
        latencies.push(us);
        if status != 202 {
            failures += 1;
            continue;
        }
        let lease = Bytes::from_static(
            br#"{"node_id":"flood-valid","capabilities":["echo"],"max_jobs":1,"wait_ms":0}"#,
        );
        let (status, answer, us) = lane.exchange("/v1/leases", lease, &[]).await?;
        latencies.push(us);
        if status != 200 {
            failures += 1;
            continue;
        }
        let grant: serde_json::Value = serde_json::from_slice(&answer)?;
        for job in grant["jobs"].as_array().into_iter().flatten() {
            let (status, _, us) = lane
                .report_success(
                    job["job_id"].as_str().unwrap_or_default(),
                    job["lease_id"].as_str().unwrap_or_default(),
                )
                .await?;
            latencies.push(us);
            if status != 200 {
                failures += 1;
            }
        }
    }
    Ok((latencies, failures))
}

/// Sends `n` requests through `lane`, reconnecting whenever the hub closed the connection.
async fn hostile(
    url: &str,
    token: &str,
    n: u64,
    sent: &AtomicU64,
    request: impl Fn(u64) -> (&'static str, Bytes),
) -> anyhow::Result<Statuses> {
    let mut s = Statuses::default();
    let mut lane = Lane::connect(url, token).await?;
    for i in 0..n {
        let (path, body) = request(i);
        let status = match lane.exchange(path, body.clone(), &[]).await {
            Ok((status, _, _)) => status,
            Err(_) => {
                // The hub closes a connection after refusing a body it did not read: the
                // request was not answered; send it again on a new connection.
                s.reconnects += 1;
                lane = Lane::connect(url, token).await?;
                match lane.exchange(path, body, &[]).await {
                    Ok((status, _, _)) => status,
                    Err(_) => {
                        lane = Lane::connect(url, token).await?;
                        sent.fetch_add(1, Ordering::Relaxed);
                        s.closed += 1;
                        continue;
                    }
                }
            }
        };
        sent.fetch_add(1, Ordering::Relaxed);
        match status {
            400 => s.s400 += 1,
            403 => s.s403 += 1,
            413 => s.s413 += 1,
            _ => s.other += 1,
        }
    }
    Ok(s)
}

async fn bad_tokens(
    control: &str,
    data: &str,
    n: u64,
    sent: &AtomicU64,
) -> anyhow::Result<Statuses> {
    let token = "not-the-token";
    let beat = Bytes::from_static(br#"{"node_id":"intruder","role":"worker"}"#);
    let job = Bytes::from_static(br#"{"kind":"echo","payload":{}}"#);
    let mut a = hostile(control, token, n / 2, sent, |_| {
        ("/v1/heartbeat", beat.clone())
    })
    .await?;
    let b = hostile(data, token, n - n / 2, sent, |_| ("/v1/jobs", job.clone())).await?;
    a.add(&b);
    if a.other > 0 {
        bail!("{} bad-token requests were not refused with 403", a.other);
    }
    Ok(a)
}

async fn malformed(data: &str, token: &str, n: u64, sent: &AtomicU64) -> anyhow::Result<Statuses> {
    // Over the default 1 MiB limit.
    let oversized = Bytes::from(vec![b'x'; 1024 * 1024 + 1]);
    let shapes: [Bytes; 4] = [
        Bytes::from_static(b"{"),
        Bytes::from_static(br#"{"kind":5,"payload":[]}"#),
        Bytes::from_static(br#"{"kind":"echo","payload":{},"priority":"high"}"#),
        Bytes::from_static(b"\xff\xfe not json"),
    ];
    hostile(data, token, n, sent, |i| {
        if i % 100 == 99 {
            ("/v1/jobs", oversized.clone())
        } else {
            ("/v1/jobs", shapes[(i % 4) as usize].clone())
        }
    })
    .await
}
