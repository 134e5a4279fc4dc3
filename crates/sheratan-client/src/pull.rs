//! The pull loop shared by executors that lease from Hub Data and report each job themselves
//! (the broker, the relay): take jobs over the worker stream (a credit per free slot; opened
//! again when what the node offers changes), or where the hub does not serve it lease them
//! with long polls; run each on its own task; back off on errors; at shutdown stop taking jobs
//! and give running jobs a grace period. Plus the two pieces every such executor needs per
//! job: keeping the lease alive and reporting the result until the hub has it, over the job's
//! [`Link`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sheratan_proto::ErrorCode;
use sheratan_proto::data::{LeaseRequest, LeasedJob, ResultRequest};
use tokio::sync::Semaphore;

use crate::stream::{Link, StreamEvent, StreamSpec, WorkerStream};
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
    /// Take jobs over the worker stream (falling back to lease requests when the hub does not
    /// serve it).
    pub stream: bool,
}

/// Runs leased jobs; it reports their results itself.
pub trait JobRunner: Send + Sync + 'static {
    /// The capabilities to lease with, asked before every lease call (they may change).
    fn capabilities(&self) -> impl Future<Output = Vec<String>> + Send;
    /// Runs one job to its end, result reported over `link` (or deliberately not).
    fn run(&self, job: LeasedJob, link: Link) -> impl Future<Output = ()> + Send;
}

/// Takes and runs jobs until `shutdown`; `inflight` counts the jobs running.
pub async fn pull_loop<R: JobRunner>(
    data: DataClient,
    config: PullConfig,
    runner: Arc<R>,
    inflight: Arc<AtomicU32>,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let pull = Pull {
        slots: Arc::new(Semaphore::new(config.concurrency.max(1) as usize)),
        // Cancels stop running jobs at once (their run is dropped: a broker's forwarded
        // execute request with it, so the host stops too).
        running: Arc::new(crate::watch::Running::default()),
        data,
        config,
        runner,
        inflight,
    };
    let watching = tokio_util::sync::CancellationToken::new();
    let mut watcher = None;
    let stopped = pull.config.stream && pull.streams(&mut shutdown).await;
    if !stopped {
        // The request routes: the watch route carries cancels.
        let (data, running, stop) = (pull.data.clone(), pull.running.clone(), watching.clone());
        watcher = Some(tokio::spawn(async move {
            crate::watch::watch_loop(data, &running, stop).await
        }));
        pull.requests(&mut shutdown).await;
    }
    let all = pull.config.concurrency.max(1);
    let _ = tokio::time::timeout(pull.config.grace, pull.slots.acquire_many(all)).await;
    watching.cancel();
    if let Some(watcher) = watcher {
        let _ = watcher.await;
    }
}

/// What a pull loop's two ways of taking jobs share.
struct Pull<R> {
    data: DataClient,
    config: PullConfig,
    runner: Arc<R>,
    inflight: Arc<AtomicU32>,
    slots: Arc<Semaphore>,
    running: Arc<crate::watch::Running>,
}

/// Why a stream stopped taking jobs.
enum StreamEnd {
    Shutdown,
    /// What the node offers changed: open a stream that offers it.
    Offer,
}

impl<R: JobRunner> Pull<R> {
    /// Runs `job` on its own task with `permit`, its lease watched for its end.
    fn spawn(&self, job: LeasedJob, link: Link, permit: Option<tokio::sync::OwnedSemaphorePermit>) {
        let (runner, inflight) = (self.runner.clone(), self.inflight.clone());
        let running = self.running.clone();
        inflight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let lease_id = job.lease_id.clone();
            let ended = running.start(&job.job_id, &lease_id);
            tokio::select! {
                () = runner.run(job, link) => {}
                () = ended.cancelled() => {}
            }
            running.finish(&lease_id);
            inflight.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }

    /// Takes jobs over worker streams until shutdown (`true`), or `false` when the hub does
    /// not serve the stream.
    async fn streams(&self, shutdown: &mut (impl Future<Output = ()> + Unpin)) -> bool {
        let mut failures = 0u32;
        loop {
            let capabilities = self.runner.capabilities().await;
            if capabilities.is_empty() {
                // Nothing to offer yet (a broker whose hosts are not ONLINE): look again soon.
                tokio::select! {
                    () = &mut *shutdown => return true,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
            let spec = StreamSpec {
                node_id: self.config.node_id.clone(),
                queues: self.config.queues.clone(),
                capabilities: capabilities.clone(),
                max_jobs: self.config.concurrency.max(1),
            };
            let running: crate::stream::RunningLeases = {
                let running = self.running.clone();
                Arc::new(move || running.leases())
            };
            let opened = tokio::select! {
                () = &mut *shutdown => return true,
                opened = self.data.open_stream(spec, running) => opened,
            };
            match opened {
                Ok((stream, events)) => {
                    failures = 0;
                    let end = self.stream(&stream, events, &capabilities, shutdown).await;
                    stream.close();
                    if let StreamEnd::Shutdown = end {
                        return true;
                    }
                }
                Err(err) if crate::stream::falls_back(&err) => {
                    tracing::warn!(node_id = %self.config.node_id, "the hub does not serve the worker stream ({err}); using lease requests");
                    return false;
                }
                Err(err) => {
                    failures += 1;
                    let wait = backoff(failures);
                    tracing::warn!(node_id = %self.config.node_id, "worker stream: {err}; retrying in {wait:?}");
                    tokio::select! {
                        () = &mut *shutdown => return true,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// One stream: a credit per free slot, a job per credit, until shutdown or until what the
    /// node offers changes (looked at every 5 s).
    async fn stream(
        &self,
        stream: &WorkerStream,
        mut events: tokio::sync::mpsc::Receiver<StreamEvent>,
        offered: &[String],
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> StreamEnd {
        let mut reserved = Vec::new();
        let mut look = tokio::time::interval(Duration::from_secs(5));
        look.tick().await;
        loop {
            tokio::select! {
                () = &mut *shutdown => {
                    self.stop(stream, &mut events).await;
                    return StreamEnd::Shutdown;
                }
                permit = self.slots.clone().acquire_owned() => {
                    let before = reserved.len();
                    reserved.push(permit.expect("the semaphore is never closed"));
                    while let Ok(p) = self.slots.clone().try_acquire_owned() {
                        reserved.push(p);
                    }
                    stream.want((reserved.len() - before) as u32);
                }
                event = events.recv() => match event {
                    Some(StreamEvent::Job(job)) => {
                        self.spawn(*job, Link::Stream(stream.clone()), reserved.pop());
                    }
                    Some(StreamEvent::Ended(lease_id)) => self.running.stop(&lease_id),
                    Some(StreamEvent::Lost(_) | StreamEvent::Stopped) => {}
                    Some(StreamEvent::Reconnected) => stream.want(reserved.len() as u32),
                    None => return StreamEnd::Offer,
                },
                _ = look.tick() => {
                    if self.runner.capabilities().await != offered {
                        // Jobs already pushed still run before the stream is opened again.
                        self.stop(stream, &mut events).await;
                        return StreamEnd::Offer;
                    }
                }
            }
        }
    }

    /// Asks the hub for no more jobs and runs those it pushed before it heard (at most 5 s).
    async fn stop(
        &self,
        stream: &WorkerStream,
        events: &mut tokio::sync::mpsc::Receiver<StreamEvent>,
    ) {
        stream.stop();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(event) = events.recv().await {
                match event {
                    StreamEvent::Job(job) => self.spawn(*job, Link::Stream(stream.clone()), None),
                    StreamEvent::Ended(lease_id) => self.running.stop(&lease_id),
                    StreamEvent::Stopped => return,
                    _ => {}
                }
            }
        })
        .await;
    }

    /// Leases with long polls until shutdown.
    async fn requests(&self, shutdown: &mut (impl Future<Output = ()> + Unpin)) {
        let config = &self.config;
        let mut failures = 0u32;
        loop {
            let first = tokio::select! {
                () = &mut *shutdown => break,
                p = self.slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            };
            let mut permits = vec![first];
            while permits.len() < 100
                && let Ok(p) = self.slots.clone().try_acquire_owned()
            {
                permits.push(p);
            }
            let capabilities = self.runner.capabilities().await;
            // Every job requires its kind, so a lease offering nothing gets nothing: rather
            // than long-poll with it, ask again after the hub's short pause, when what this
            // node offers may have changed (a broker whose hosts are not ONLINE yet).
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
                () = &mut *shutdown => break,
                r = self.data.lease(&req) => r,
            };
            let wait = match leased {
                Ok(answer) => {
                    failures = 0;
                    for job in answer.jobs {
                        let Some(permit) = permits.pop() else { break };
                        self.spawn(job, Link::Requests(self.data.clone()), Some(permit));
                    }
                    Duration::from_millis(answer.defer_ms.min(5_000))
                }
                Err(err) => {
                    failures += 1;
                    let wait = backoff(failures);
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
                    () = &mut *shutdown => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// 250 ms doubling to 30 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(250)
        .saturating_mul(1 << failures.min(7))
        .min(Duration::from_secs(30))
}

/// Extends a lease every third of `timeout_s` until the returned future is dropped; returns
/// only if the hub says the lease is gone (the job was reaped, cancelled or finished
/// elsewhere). Transient failures are logged and retried at the next tick.
pub async fn keep_lease(link: &Link, lease_id: &str, timeout_s: u32) {
    let every = Duration::from_secs(u64::from(timeout_s.max(3) / 3));
    loop {
        tokio::time::sleep(every).await;
        match link.extend(lease_id).await {
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
    link: &Link,
    report: &ResultRequest,
    traceparent: Option<&str>,
) -> Result<(), ClientError> {
    let mut attempt = 0u32;
    loop {
        match link.report(report, traceparent, || {}).await {
            Ok(_) => return Ok(()),
            Err(err) if attempt < 5 && err.code().is_none() => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200) * attempt).await;
            }
            Err(err) => return Err(err),
        }
    }
}
