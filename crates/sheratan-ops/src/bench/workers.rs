//! `sheratan bench workers`: end to end through real `sheratan worker` processes (echo
//! handler). N jobs are queued first; then W worker processes start and the clock runs until
//! the hub has completed all of them. Compare with `sheratan bench jobs` (drain), the same
//! work done by the benchmark's own lean consumers: the difference is the worker loop's cost.
//! Then, with the same workers running, a paced phase submits single jobs at `--rate` and
//! reports their latency from acceptance to finish as the hub recorded it (its timestamps have
//! millisecond resolution), and the hub's RSS.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use sheratan_proto::data::SubmitJob;

use super::Percentiles;
use super::target::Target;

#[derive(Debug, Clone, Args)]
pub struct WorkersArgs {
    /// Jobs to run.
    #[arg(long, default_value_t = 20_000)]
    pub n: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Slots per worker.
    #[arg(long, default_value_t = 8)]
    pub concurrency: u32,
    /// Measure this running hub (both planes) instead of starting one.
    #[arg(long, requires = "data_url")]
    pub control_url: Option<String>,
    #[arg(long, requires = "control_url")]
    pub data_url: Option<String>,
    /// Token of the hub given by --control-url and --data-url.
    #[arg(long, env = "SHERATAN_HUB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PID of the hub given by --control-url and --data-url, for RSS readings.
    #[arg(long)]
    pub hub_pid: Option<u32>,
    /// Run Python workers instead (the SDK in clients/python, `python -m sheratan.worker
    /// sheratan.builtin:handlers`) with this interpreter, which must have the `sheratan`
    /// package installed (`pip install ./clients/python`).
    #[arg(long, value_name = "PYTHON")]
    pub python: Option<String>,
    /// Seconds of the paced phase (0 skips it).
    #[arg(long, default_value_t = 5.0)]
    pub paced_s: f64,
    /// Jobs per second in the paced phase, submitted one at a time.
    #[arg(long, default_value_t = 100)]
    pub rate: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    /// `rust` (`sheratan worker`) or `python` (the Python SDK's worker).
    worker: &'static str,
    n: u64,
    workers: u32,
    concurrency: u32,
    jobs_per_s: f64,
    seconds: f64,
    /// Jobs of the paced phase, the rate they were submitted at, and their latency from
    /// acceptance to finish.
    paced_jobs: u64,
    paced_achieved_jps: f64,
    paced_latency: Percentiles,
    /// The hub's resident set at the end (`None`: a running hub without --hub-pid).
    hub_rss_bytes: Option<u64>,
}

/// The worker processes, killed when dropped.
struct Workers(Vec<Child>);

impl Workers {
    fn start(args: &WorkersArgs, target: &Target) -> anyhow::Result<Workers> {
        let exe = std::env::current_exe().context("find the sheratan binary")?;
        let mut workers = Workers(Vec::new());
        for w in 0..args.workers {
            let mut command = match &args.python {
                Some(python) => {
                    let mut c = Command::new(python);
                    c.args(["-m", "sheratan.worker", "sheratan.builtin:handlers"]);
                    c
                }
                None => {
                    let mut c = Command::new(&exe);
                    c.arg("worker");
                    c
                }
            };
            let child = command
                .args(["--node-id", &format!("bench-w{w}")])
                .args(["--concurrency", &args.concurrency.to_string()])
                .args(["--control-url", &target.control_url])
                .args(["--data-url", &target.data_url])
                .env("SHERATAN_HUB_TOKEN", &target.token)
                .env("SHERATAN_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| match &args.python {
                    Some(python) => format!("start a Python worker with {python}"),
                    None => "start a worker".into(),
                })?;
            workers.0.push(child);
        }
        Ok(workers)
    }
}

impl Workers {
    /// An error naming a worker process that has exited: no use waiting for its jobs.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        for (w, child) in self.0.iter_mut().enumerate() {
            if let Some(status) = child.try_wait()? {
                bail!("worker bench-w{w} exited ({status}); its error is above");
            }
        }
        Ok(())
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub async fn run(args: WorkersArgs) -> anyhow::Result<()> {
    if args.n == 0 || args.workers == 0 {
        bail!("--n and --workers must be at least 1");
    }
    let target = target(&args)?;
    let data = sheratan_client::DataClient::new(&target.data_url, Some(target.token.clone()))?;
    let metrics =
        sheratan_client::ControlClient::new(&target.data_url, Some(target.token.clone()))?;
    // A running hub has completed jobs before: count from here.
    let completed_before = completed(&metrics).await?;
    eprintln!("queueing {} echo jobs ...", args.n);
    let mut queued = 0;
    while queued < args.n {
        let batch: Vec<SubmitJob> = (queued..(queued + 1000).min(args.n))
            .map(|i| echo_job(serde_json::json!({"i": i, "user": format!("u_{i:08}")})))
            .collect();
        queued += batch.len() as u64;
        data.submit_batch(batch).await?;
    }
    eprintln!(
        "starting {} worker process(es) with {} slots each ...",
        args.workers, args.concurrency
    );
    let started = Instant::now();
    let mut workers = Workers::start(&args, &target)?;
    wait_completed(
        &metrics,
        completed_before + args.n,
        &args,
        started,
        &mut workers,
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let (mut latencies, paced_achieved_jps) = paced(&data, &args).await?;
    let hub_rss_bytes = target.rss_bytes();
    drop(workers);
    let report = Report {
        bench: "workers",
        worker: if args.python.is_some() {
            "python"
        } else {
            "rust"
        },
        n: args.n,
        workers: args.workers,
        concurrency: args.concurrency,
        jobs_per_s: args.n as f64 / seconds,
        seconds,
        paced_jobs: latencies.len() as u64,
        paced_achieved_jps,
        paced_latency: Percentiles::from_micros(&mut latencies),
        hub_rss_bytes,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        print_table(&mut out, &report)?;
    }
    Ok(())
}

/// The hub to measure: the running one of `--control-url` and `--data-url`, or one started
/// here.
fn target(args: &WorkersArgs) -> anyhow::Result<Target> {
    if let (Some(control), Some(data)) = (&args.control_url, &args.data_url) {
        let token = args
            .token
            .clone()
            .context("--token (or SHERATAN_HUB_TOKEN) is required with a running hub")?;
        return Ok(Target::external(
            control.clone(),
            data.clone(),
            token,
            args.hub_pid,
        ));
    }
    eprintln!("starting a hub in a temp dir ...");
    Target::spawn(&[
        "--max-queue-depth".into(),
        "100000000".into(),
        "--max-inflight".into(),
        "1000000".into(),
    ])
}

async fn completed(metrics: &sheratan_client::ControlClient) -> anyhow::Result<u64> {
    Ok(metrics.metrics_json().await?["jobs.completed"]
        .as_u64()
        .unwrap_or(0))
}

/// Until the hub has completed `goal` jobs in all (ten minutes at most), with progress.
async fn wait_completed(
    metrics: &sheratan_client::ControlClient,
    goal: u64,
    args: &WorkersArgs,
    started: Instant,
    workers: &mut Workers,
) -> anyhow::Result<()> {
    let mut last_progress = Instant::now();
    loop {
        workers.check_alive()?;
        let left = goal.saturating_sub(completed(metrics).await?);
        let done = args.n.saturating_sub(left);
        if left == 0 {
            return Ok(());
        }
        if !args.json && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!("  {done} / {} jobs completed", args.n);
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("only {done} of {} jobs completed in 10 minutes", args.n);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn print_table(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    writeln!(
        out,
        "{} jobs through {} {} worker process(es) × {} slots: {:.0} jobs/s ({:.2} s, including worker start-up)",
        r.n, r.worker, r.workers, r.concurrency, r.jobs_per_s, r.seconds
    )?;
    let l = &r.paced_latency;
    writeln!(
        out,
        "paced {} jobs at {:.0}/s: accepted to finished p50 {:.0} ms  p90 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
        r.paced_jobs, r.paced_achieved_jps, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
    )?;
    if let Some(rss) = r.hub_rss_bytes {
        writeln!(out, "hub RSS {:.1} MiB", rss as f64 / 1048576.0)?;
    }
    Ok(())
}

/// An echo job for the workers' `echo` handler.
fn echo_job(payload: serde_json::Value) -> SubmitJob {
    SubmitJob {
        queue: "default".into(),
        kind: "echo".into(),
        payload,
        priority: 0,
        required_capabilities: vec!["echo".into()],
        idempotency_key: None,
        max_attempts: None,
        timeout_s: None,
        run_at: None,
        follow_result: None,
        concurrency_key: None,
        retry: None,
    }
}

/// The paced phase: single jobs at `--rate` for `--paced-s` through the running workers, then
/// each job's latency (µs) from the hub's `created_at` to its `finished_at`, and the rate
/// reached. A submit that falls behind the schedule moves it on instead of bursting to catch up.
async fn paced(
    data: &sheratan_client::DataClient,
    args: &WorkersArgs,
) -> anyhow::Result<(Vec<u32>, f64)> {
    if args.paced_s <= 0.0 {
        return Ok((Vec::new(), 0.0));
    }
    eprintln!(
        "paced: {} jobs/s for {} s through the same workers ...",
        args.rate, args.paced_s
    );
    let period = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let begun = tokio::time::Instant::now();
    let end = begun + Duration::from_secs_f64(args.paced_s);
    let mut next = begun;
    let mut ids = Vec::new();
    while next < end {
        tokio::time::sleep_until(next).await;
        next = (next + period).max(tokio::time::Instant::now());
        let job = echo_job(serde_json::json!({"paced": ids.len()}));
        ids.push(data.submit(&job).await?.response().job_id.clone());
    }
    let achieved = ids.len() as f64 / begun.elapsed().as_secs_f64().max(1e-9);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut latencies = Vec::with_capacity(ids.len());
    for id in &ids {
        let job = loop {
            let job = data.job(id).await?;
            if job.finished_at.is_some() {
                break job;
            }
            if Instant::now() > deadline {
                bail!("paced job {id} did not finish within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let finished = job.finished_at.unwrap_or(job.updated_at);
        let micros = (finished - job.created_at).whole_microseconds();
        latencies.push(micros.clamp(0, i128::from(u32::MAX)) as u32);
    }
    Ok((latencies, achieved))
}
