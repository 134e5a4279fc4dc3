//! `sheratan bench retention`: what deleting finished jobs costs the hot path (issue 20). A hub
//! of its own is filled with `--finished` finished jobs (submitted in batches, then cancelled
//! by queue purges: the cheapest way to finish a million jobs), then a paced loop — submit one
//! job, lease it, report its result — runs twice: idle, and while retention deletes them all
//! (the queue's `retention` set to 1 s). The report compares the loop's latencies and says how
//! fast the purge went.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use sheratan_proto::data::{LeaseRequest, Outcome, ResultRequest, SubmitJob};
use sheratan_proto::queues::QueueSettingsPatch;

use super::Percentiles;
use super::target::Target;

#[derive(Debug, Clone, Args)]
pub struct RetentionArgs {
    /// Finished jobs to purge.
    #[arg(long, default_value_t = 1_000_000)]
    pub finished: u64,
    /// Paced loop rounds (submit, lease, result) per second.
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// How long the idle measurement runs, in seconds.
    #[arg(long, default_value_t = 15)]
    pub idle_s: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Phase {
    rounds: usize,
    submit: Percentiles,
    lease: Percentiles,
    result: Percentiles,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    finished: u64,
    fill_s: f64,
    purge_s: f64,
    purged_per_s: f64,
    idle: Phase,
    during_purge: Phase,
    /// Lease p99 while purging over idle (goal: at most 2).
    lease_p99_ratio: f64,
    /// `sheratan.db` alone (its WAL keeps its size after a checkpoint).
    db_bytes_before: u64,
    db_bytes_after: u64,
}

pub async fn run(args: RetentionArgs) -> anyhow::Result<()> {
    if args.finished == 0 || args.rate == 0 {
        bail!("--finished and --rate must be at least 1");
    }
    let target = Target::spawn(&[
        "--retention".into(),
        "0".into(),
        "--max-queue-depth".into(),
        "200000".into(),
    ])?;
    let data = sheratan_client::DataClient::new(&target.data_url, Some(target.token.clone()))?;
    let started = Instant::now();
    fill(&data, args.finished).await?;
    let fill_s = started.elapsed().as_secs_f64();
    let before = db_bytes(&target);
    eprintln!(
        "filled {} finished jobs in {fill_s:.0} s; measuring idle",
        args.finished
    );
    let idle = paced(&data, args.rate, || {
        let done = started.elapsed() > Duration::from_secs_f64(fill_s + args.idle_s as f64);
        async move { Ok(done) }
    })
    .await?;
    eprintln!("purging");
    let patch = QueueSettingsPatch {
        retention: Some(Some("1s".into())),
        ..QueueSettingsPatch::default()
    };
    data.put_queue_settings("fill", &patch).await?;
    let purge_started = Instant::now();
    let during = paced(&data, args.rate, || {
        let data = data.clone();
        let n = args.finished;
        async move { Ok(purged(&data).await? >= n) }
    })
    .await?;
    let purge_s = purge_started.elapsed().as_secs_f64();
    // Freed pages go back a batch at a time; give the last ones a moment.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let report = Report {
        bench: "retention",
        finished: args.finished,
        fill_s,
        purge_s,
        purged_per_s: args.finished as f64 / purge_s,
        lease_p99_ratio: during.lease.p99_ms / idle.lease.p99_ms.max(0.001),
        idle,
        during_purge: during,
        db_bytes_before: before,
        db_bytes_after: db_bytes(&target),
    };
    print(&report, args.json)
}

fn print(r: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    println!(
        "retention: {} finished jobs purged in {:.1} s ({:.0}/s); sheratan.db {} → {} MB",
        r.finished,
        r.purge_s,
        r.purged_per_s,
        r.db_bytes_before >> 20,
        r.db_bytes_after >> 20
    );
    for (name, p) in [("idle", &r.idle), ("during purge", &r.during_purge)] {
        println!(
            "  {name:<13} {} rounds: submit p50 {:.2} p99 {:.2} ms, lease p50 {:.2} p99 {:.2} ms, result p50 {:.2} p99 {:.2} ms",
            p.rounds,
            p.submit.p50_ms,
            p.submit.p99_ms,
            p.lease.p50_ms,
            p.lease.p99_ms,
            p.result.p50_ms,
            p.result.p99_ms
        );
    }
    println!("  lease p99 during purge / idle: {:.2}", r.lease_p99_ratio);
    Ok(())
}

/// `n` finished jobs in queue `fill`: submitted 100,000 at a time (in batches of 1,000),
/// each lot cancelled by a queue purge.
async fn fill(data: &sheratan_client::DataClient, n: u64) -> anyhow::Result<()> {
    let mut made = 0;
    while made < n {
        let lot = (n - made).min(100_000);
        let mut sent = 0;
        while sent < lot {
            let size = (lot - sent).min(1000);
            let jobs = (0..size)
                .map(|i| {
                    job(
                        "fill",
                        serde_json::json!({"i": made + sent + i, "pad": "x".repeat(200)}),
                    )
                })
                .collect();
            data.submit_batch(jobs).await?;
            sent += size;
        }
        data.queue_action("fill", "purge").await?;
        made += lot;
        eprint!("\r{made}/{n} finished");
    }
    eprintln!();
    Ok(())
}

fn job(queue: &str, payload: serde_json::Value) -> SubmitJob {
    SubmitJob {
        queue: queue.into(),
        kind: "bench".into(),
        payload,
        priority: 0,
        required_capabilities: Vec::new(),
        idempotency_key: None,
        max_attempts: Some(1),
        timeout_s: Some(60),
        run_at: None,
        follow_result: Some(false),
        concurrency_key: None,
        retry: None,
    }
}

async fn purged(data: &sheratan_client::DataClient) -> anyhow::Result<u64> {
    let text = data.metrics_text().await?;
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("sheratan_jobs_purged_total "))
        .context("the hub's metrics have no sheratan_jobs_purged_total")?;
    Ok(value.trim().parse::<f64>()? as u64)
}

/// Rounds of submit → lease → result at `rate` per second until `done` says so.
async fn paced<F, Fut>(
    data: &sheratan_client::DataClient,
    rate: u64,
    done: F,
) -> anyhow::Result<Phase>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let (mut submit, mut lease, mut result) = (Vec::new(), Vec::new(), Vec::new());
    let mut next = tokio::time::Instant::now();
    let mut checked = Instant::now();
    loop {
        // Ask whether to stop a few times a second, not every round.
        if checked.elapsed() > Duration::from_millis(250) {
            checked = Instant::now();
            if done().await? {
                break;
            }
        }
        tokio::time::sleep_until(next).await;
        next += period;
        let t = Instant::now();
        data.submit(&job("live", serde_json::json!({"n": submit.len()})))
            .await?;
        submit.push(micros(t));
        let t = Instant::now();
        let grant = data
            .lease(&LeaseRequest {
                node_id: "bench-retention".into(),
                queues: vec!["live".into()],
                capabilities: vec!["bench".into()],
                max_jobs: 1,
                wait_ms: 1000,
            })
            .await?;
        lease.push(micros(t));
        let Some(leased) = grant.jobs.into_iter().next() else {
            bail!("the lease after a submit came back empty");
        };
        let t = Instant::now();
        data.report(&ResultRequest {
            job_id: leased.job_id,
            lease_id: leased.lease_id,
            outcome: Outcome::Success,
            result: serde_json::json!({"ok": true}),
            error: None,
        })
        .await?;
        result.push(micros(t));
    }
    Ok(Phase {
        rounds: submit.len(),
        submit: Percentiles::from_micros(&mut submit),
        lease: Percentiles::from_micros(&mut lease),
        result: Percentiles::from_micros(&mut result),
    })
}

fn micros(t: Instant) -> u32 {
    t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32
}

fn db_bytes(target: &Target) -> u64 {
    target
        .home()
        .and_then(|home| std::fs::metadata(home.join("sheratan.db")).ok())
        .map_or(0, |m| m.len())
}
