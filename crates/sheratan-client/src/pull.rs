//! The pull loop shared by executors that lease from Hub Data and report each job themselves
//! (the broker, the relay): lease as many jobs as there are free slots, long-polling; run each
//! on its own task; back off on errors; at shutdown stop leasing and give running jobs a grace
//! period. Plus the two pieces every such executor needs per job: keeping the lease alive and
//! reporting the result until the hub has it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sheratan_proto::ErrorCode;
use sheratan_proto::data::{LeaseRequest, LeasedJob, ResultRequest};
use tokio::sync::Semaphore;

use crate::{ClientError, DataClient};

/// What a pull loop leases.
#[derive(Debug, Clone)]
pub struct PullConfig {
    pub node_id: String,
    pub queues: Vec<String>,
    /// Jobs run at once.
    pub concurrency: u32,
    /// How long one lease call waits for a job.
    pub lease_wait: Duration,
    /// At shutdown, how long running jobs may take to finish.
    pub grace: Duration,
}

/// Runs leased jobs; it reports their results itself.
pub trait JobRunner: Send + Sync + 'static {
    /// The capabilities to lease with, asked before every lease call (they may change).
    fn capabilities(&self) -> impl Future<Output = Vec<String>> + Send;
    /// Runs one job to its end, result reported (or deliberately not).
    fn run(&self, job: LeasedJob) -> impl Future<Output = ()> + Send;
}

/// Leases and runs jobs until `shutdown`; `inflight` counts the jobs running.
pub async fn pull_loop<R: JobRunner>(
    data: DataClient,
    config: PullConfig,
    runner: Arc<R>,
    inflight: Arc<AtomicU32>,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(config.concurrency.max(1) as usize));
    // Cancels stop running jobs at once (their run is dropped: a broker's forwarded execute
    // request with it, so the host stops too).
    let running = Arc::new(crate::watch::Running::default());
    let watching = tokio_util::sync::CancellationToken::new();
    let watcher = {
        let (data, running, stop) = (data.clone(), running.clone(), watching.clone());
        tokio::spawn(async move { crate::watch::watch_loop(data, &running, stop).await })
    };
    let mut failures = 0u32;
    loop {
        let first = tokio::select! {
            () = &mut shutdown => break,
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let mut permits = vec![first];
        while permits.len() < 100
            && let Ok(p) = slots.clone().try_acquire_owned()
        {
            permits.push(p);
        }
        let capabilities = runner.capabilities().await;
        // Every job requires its kind, so a lease offering nothing gets nothing: rather than
        // long-poll with it, ask again after the hub's short pause, when what this node
        // offers may have changed (a broker whose hosts are not ONLINE yet).
        let wait = if capabilities.is_empty() {
            Duration::ZERO
        } else {
            config.lease_wait
        };
        let req = LeaseRequest {
            node_id: config.node_id.clone(),
            queues: config.queues.clone(),
            capabilities,
            max_jobs: permits.len() as u32,
            wait_ms: wait.as_millis() as u64,
        };
        let leased = tokio::select! {
            () = &mut shutdown => break,
            r = data.lease(&req) => r,
        };
        let wait = match leased {
            Ok(answer) => {
                failures = 0;
                for job in answer.jobs {
                    let Some(permit) = permits.pop() else { break };
                    let (runner, inflight) = (runner.clone(), inflight.clone());
                    let running = running.clone();
                    inflight.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        let lease_id = job.lease_id.clone();
                        let ended = running.start(&job.job_id, &lease_id);
                        tokio::select! {
                            () = runner.run(job) => {}
                            () = ended.cancelled() => {}
                        }
                        running.finish(&lease_id);
                        inflight.fetch_sub(1, Ordering::Relaxed);
                        drop(permit);
                    });
                }
                Duration::from_millis(answer.defer_ms.min(5_000))
            }
            Err(err) => {
                failures += 1;
                let wait = Duration::from_millis(250)
                    .saturating_mul(1 << failures.min(7))
                    .min(Duration::from_secs(30));
                if err.code() == Some(ErrorCode::AuthFail) {
                    tracing::error!(node_id = %config.node_id, "{err}");
                } else {
                    tracing::warn!(node_id = %config.node_id, "lease failed: {err}; retrying in {wait:?}");
                }
                wait
            }
        };
        if !wait.is_zero() {
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
    let all = config.concurrency.max(1);
    let _ = tokio::time::timeout(config.grace, slots.acquire_many(all)).await;
    watching.cancel();
    let _ = watcher.await;
}

/// Extends a lease every third of `timeout_s` until the returned future is dropped; returns
/// only if the hub says the lease is gone (the job was reaped, cancelled or finished
/// elsewhere). Transient failures are logged and retried at the next tick.
pub async fn keep_lease(data: &DataClient, lease_id: &str, timeout_s: u32) {
    let every = Duration::from_secs(u64::from(timeout_s.max(3) / 3));
    loop {
        tokio::time::sleep(every).await;
        match data.extend(lease_id, None).await {
            Ok(_) => {}
            Err(err) if err.code() == Some(ErrorCode::LeaseExpired) => {
                tracing::warn!(lease_id, "lease lost: {err}");
                return;
            }
            Err(err) => tracing::warn!(lease_id, "lease extension failed (will retry): {err}"),
        }
    }
}

/// Reports a result, retrying transport failures a few times (the hub counts a repeated
/// result once).
pub async fn report_with_retries(
    data: &DataClient,
    report: &ResultRequest,
    traceparent: Option<&str>,
) -> Result<(), ClientError> {
    let mut attempt = 0u32;
    loop {
        match data.report_traced(report, traceparent).await {
            Ok(_) => return Ok(()),
            Err(err) if attempt < 5 && err.code().is_none() => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200) * attempt).await;
            }
            Err(err) => return Err(err),
        }
    }
}
