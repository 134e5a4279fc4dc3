//! `sheratan bench`: sizing workloads against a hub, with figures an operator can compare to
//! the peers in `docs/PERFORMANCE.md`.

mod auction;
mod cancel;
mod flood;
mod heartbeat;
mod idle;
mod jobs;
mod load;
mod relay;
mod retention;
mod target;
mod workers;

use clap::Subcommand;

pub use heartbeat::HeartbeatArgs;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Heartbeat ingest from N simulated nodes over HTTP.
    Heartbeat(HeartbeatArgs),
    /// Jobs over HTTP: enqueue, drain, concurrent, paced (the peer benchmarks' workload).
    Jobs(jobs::JobsArgs),
    /// End to end through real `sheratan worker` processes.
    Workers(workers::WorkersArgs),
    /// What an auction adds: bid rounds among 2, 10, 50 real hosts.
    Auction(auction::AuctionArgs),
    /// The WebRelay in real Chromium against a local chat page: overhead and jobs/minute.
    Relay(relay::RelayArgs),
    /// Bad tokens and malformed bodies against a hub under load: valid latency, memory,
    /// audit log size, alerts. With --idle N: one address holding N idle connections.
    Flood(flood::FloodArgs),
    /// How long a cancel takes to stop a running job's handler (cancel → process gone).
    Cancel(cancel::CancelArgs),
    /// What retention costs: submit/lease/result latency idle and while a million finished
    /// jobs are deleted.
    Retention(retention::RetentionArgs),
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Heartbeat(args) => heartbeat::run(args).await,
        BenchCommand::Jobs(args) => jobs::run(args).await,
        BenchCommand::Workers(args) => workers::run(args).await,
        BenchCommand::Cancel(args) => cancel::run(args).await,
        BenchCommand::Auction(args) => auction::run(args).await,
        BenchCommand::Relay(args) => relay::run(args).await,
        BenchCommand::Flood(args) => flood::run(args).await,
        BenchCommand::Retention(args) => retention::run(args).await,
    }
}

/// Latency percentiles in milliseconds from samples in microseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn from_micros(samples: &mut [u32]) -> Percentiles {
        if samples.is_empty() {
            return Percentiles {
                p50_ms: 0.0,
                p90_ms: 0.0,
                p99_ms: 0.0,
                max_ms: 0.0,
            };
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            f64::from(samples[i]) / 1000.0
        };
        Percentiles {
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// Runs `work` on its own thread and runtime: the valid traffic's latency must be the hub's,
/// not this process's flooders keeping the bench's worker threads busy.
pub(crate) fn on_own_thread<F, Fut, T>(work: F) -> tokio::sync::oneshot::Receiver<anyhow::Result<T>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let outcome = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(work()));
        let _ = tx.send(outcome);
    });
    rx
}
