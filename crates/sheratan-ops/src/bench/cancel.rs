//! `sheratan bench cancel`: how long a cancel takes to stop a running job (issue 19). A hub
//! and one real `sheratan worker` process with an `exec` handler whose command records its
//! process id and sleeps; each round submits a job, cancels it after a random 0–1.5 s of
//! running (so early cancels, before the worker watches the lease, are in the mix), and times
//! cancel → the command's process gone (polled every 2 ms in /proc).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use sheratan_proto::data::{JobStatus, SubmitJob};

use super::Percentiles;
use super::target::Target;

#[derive(Debug, Clone, Args)]
pub struct CancelArgs {
    /// Jobs to cancel.
    #[arg(long, default_value_t = 50)]
    pub n: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    n: u32,
    /// Cancel request sent → the handler's process gone.
    cancel_to_stop: Percentiles,
}

/// The worker process, killed when dropped.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn run(args: CancelArgs) -> anyhow::Result<()> {
    if args.n == 0 {
        bail!("--n must be at least 1");
    }
    let target = Target::spawn(&[])?;
    let dir = tempfile::tempdir()?;
    let pids = dir.path().join("pids");
    let handlers = dir.path().join("handlers.toml");
    std::fs::write(
        &handlers,
        format!(
            "[handlers.hold]\ncommand = [\"/bin/sh\", \"-c\", \"echo $$ >> {}; exec sleep 120\"]\ntimeout_s = 300\n",
            pids.display()
        ),
    )?;
    let exe = std::env::current_exe().context("find the sheratan binary")?;
    let _worker = Worker(
        Command::new(exe)
            .args(["worker", "--node-id", "bench-cancel", "--concurrency", "1"])
            .args(["--control-url", &target.control_url])
            .args(["--data-url", &target.data_url])
            .arg("--handlers")
            .arg(&handlers)
            .env("SHERATAN_HUB_TOKEN", &target.token)
            .env("SHERATAN_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start a worker")?,
    );
    let data = sheratan_client::DataClient::new(&target.data_url, Some(target.token.clone()))?;
    let mut samples = Vec::with_capacity(args.n as usize);
    for round in 0..args.n {
        samples.push(one(&data, &pids, round as usize).await?);
        eprint!("\r{}/{} cancelled", round + 1, args.n);
    }
    eprintln!();
    let report = Report {
        bench: "cancel",
        n: args.n,
        cancel_to_stop: Percentiles::from_micros(&mut samples),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let p = &report.cancel_to_stop;
        println!(
            "cancel → handler stopped, {} jobs: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            args.n, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
        );
    }
    Ok(())
}

/// One job: submitted, running, cancelled; microseconds from the cancel to its process gone.
async fn one(
    data: &sheratan_client::DataClient,
    pids: &std::path::Path,
    round: usize,
) -> anyhow::Result<u32> {
    let job = SubmitJob {
        queue: "default".into(),
        kind: "hold".into(),
        payload: serde_json::json!({"round": round}),
        priority: 0,
        required_capabilities: Vec::new(),
        idempotency_key: None,
        max_attempts: Some(1),
        timeout_s: Some(300),
        run_at: None,
        follow_result: Some(false),
        concurrency_key: None,
        retry: None,
    };
    let id = data.submit(&job).await?.response().job_id.clone();
    // Running: its process id is the round's line.
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid = loop {
        let text = std::fs::read_to_string(pids).unwrap_or_default();
        if let Some(pid) = text.lines().nth(round) {
            break pid.trim().to_owned();
        }
        if Instant::now() > deadline {
            bail!("job {id} never started its command");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let delay = Duration::from_millis(rand::random::<u64>() % 1500);
    tokio::time::sleep(delay).await;
    let cancelled = Instant::now();
    let view = data.cancel(&id).await?;
    if view.status != JobStatus::Cancelled {
        bail!("job {id} is {:?} after its cancel", view.status);
    }
    // Gone, or a zombie (killed, not yet reaped by the worker).
    let stat = std::path::PathBuf::from(format!("/proc/{pid}/stat"));
    let running = || {
        std::fs::read_to_string(&stat)
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()
                    .map(|rest| rest.trim_start().to_owned())
            })
            .is_some_and(|rest| !rest.starts_with('Z'))
    };
    while running() {
        if cancelled.elapsed() > Duration::from_secs(60) {
            bail!("job {id}'s command never stopped");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(u32::try_from(cancelled.elapsed().as_micros()).unwrap_or(u32::MAX))
}
