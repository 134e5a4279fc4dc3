//! The worker loop: a pull-style executor. It heartbeats to Hub Control, long-polls Hub Data
//! for jobs its handlers can run, runs up to `concurrency` at once, extends leases of long
//! jobs, and reports signed results. It rides out hub restarts and network blips on its own,
//! and on a wrong token says why and backs off instead of hammering the hub.
//!
//! Everything goes through `sheratan-client`: a worker never touches storage.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use sheratan_client::{ClientError, ControlClient, DataClient, MeshToken, RetryPolicy};
use sheratan_exec::{Handlers, Outcome};
use sheratan_proto::ErrorCode;
use sheratan_proto::control::{HeartbeatRequest, Load, Role};
use sheratan_proto::data::{JobError, LeaseRequest, LeasedJob, ResultRequest};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use sheratan_client::stream::{Link, StreamEvent, StreamSpec, WorkerStream};
use sheratan_client::watch;

/// Settings of one worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub control_url: String,
    pub data_url: String,
    /// Follows a rotation when `sheratan up` runs the worker beside the hub.
    pub token: MeshToken,
    pub node_id: String,
    pub queues: Vec<String>,
    /// Jobs run at once.
    pub concurrency: u32,
    pub handlers: Handlers,
    /// Version and git revision, reported as `build_id`.
    pub build_id: String,
    /// How long a lease call waits for a job.
    pub lease_wait: Duration,
    /// At shutdown, how long running jobs may take to finish.
    pub grace: Duration,
    /// A span per handler run, in the job's trace (`SHERATAN_OTLP_ENDPOINT`; off by default).
    pub tracer: sheratan_trace::Tracer,
    /// Take jobs over the worker stream (the default); the request routes when the hub does
    /// not serve it, or when this is off (`--no-stream`).
    pub stream: bool,
}

impl WorkerConfig {
    pub fn new(
        control_url: &str,
        data_url: &str,
        token: impl Into<MeshToken>,
        node_id: &str,
    ) -> Self {
        Self {
            control_url: control_url.into(),
            data_url: data_url.into(),
            token: token.into(),
            node_id: node_id.into(),
            queues: vec!["default".into()],
            concurrency: 4,
            handlers: Handlers::builtin(),
            build_id: env!("CARGO_PKG_VERSION").into(),
            lease_wait: Duration::from_secs(10),
            grace: Duration::from_secs(30),
            tracer: sheratan_trace::Tracer::disabled(),
            stream: true,
        }
    }

    /// sha256 over the sorted capabilities (the handler names), as hex: changes exactly when
    /// what the node can run changes.
    pub fn capability_hash(&self) -> String {
        let names = self.handlers.names();
        hex::encode(Sha256::digest(names.join("\n").as_bytes()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid worker settings: {0}")]
    Config(String),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Backoff for a failing loop: doubles from `base` to `max`, with ±20 % jitter.
struct Backoff {
    failures: u32,
    base: Duration,
    max: Duration,
}

impl Backoff {
    fn new(base: Duration, max: Duration) -> Self {
        Self {
            failures: 0,
            base,
            max,
        }
    }

    fn next(&mut self) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << self.failures.min(16))
            .min(self.max);
        self.failures += 1;
        exp.mul_f64(0.8 + 0.4 * rand::random::<f64>())
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// What the loops share.
struct Shared {
    config: WorkerConfig,
    control: ControlClient,
    data: DataClient,
    inflight: AtomicU32,
    /// The jobs running now, watched for cancels.
    running: watch::Running,
}

/// Runs the worker until `shutdown`; then stops leasing and lets running jobs finish within
/// the grace period.
pub async fn run(config: WorkerConfig, shutdown: CancellationToken) -> Result<(), WorkerError> {
    if config.concurrency == 0 {
        return Err(WorkerError::Config("concurrency must be at least 1".into()));
    }
    sheratan_proto::ids::validate_node_id(&config.node_id).map_err(WorkerError::Config)?;
    let control = ControlClient::new(&config.control_url, config.token.clone())?;
    // The loops below retry on their own schedule; the client should not also wait.
    let data =
        DataClient::new(&config.data_url, config.token.clone())?.with_retry(RetryPolicy::none());
    let shared = Arc::new(Shared {
        config,
        control,
        data,
        inflight: AtomicU32::new(0),
        running: watch::Running::default(),
    });
    tracing::info!(
        node_id = %shared.config.node_id,
        queues = ?shared.config.queues,
        concurrency = shared.config.concurrency,
        handlers = ?shared.config.handlers.names(),
        "worker started"
    );
    let heartbeat = tokio::spawn(heartbeat_loop(shared.clone(), shutdown.clone()));
    match open_stream(&shared, &shutdown).await {
        Some((stream, events)) => stream_loop(shared.clone(), stream, events, shutdown).await,
        None if shutdown.is_cancelled() => {}
        None => {
            // The request routes, with the watch route carrying cancels.
            let watcher = {
                let (shared, stop) = (shared.clone(), shutdown.clone());
                tokio::spawn(async move {
                    watch::watch_loop(shared.data.clone(), &shared.running, stop).await
                })
            };
            lease_loop(shared.clone(), shutdown.clone()).await;
            watcher.abort();
            let _ = watcher.await;
        }
    }
    heartbeat.abort();
    let _ = heartbeat.await;
    tracing::info!(node_id = %shared.config.node_id, "worker stopped");
    Ok(())
}

fn heartbeat_request(shared: &Shared) -> HeartbeatRequest {
    let mut runtime = serde_json::Map::new();
    runtime.insert("os".into(), std::env::consts::OS.into());
    runtime.insert("arch".into(), std::env::consts::ARCH.into());
    runtime.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    HeartbeatRequest {
        node_id: shared.config.node_id.clone(),
        role: Role::Worker,
        addr: None,
        capabilities: shared.config.handlers.names(),
        build_id: shared.config.build_id.clone(),
        capability_hash: shared.config.capability_hash(),
        runtime,
        load: Load {
            inflight: shared.inflight.load(Ordering::Relaxed),
            capacity: shared.config.concurrency,
        },
    }
}

/// Heartbeats every 10–15 s (the hub's advice, with jitter so a fleet does not beat in step).
async fn heartbeat_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let wait = match shared.control.heartbeat(&heartbeat_request(&shared)).await {
            Ok(answer) => {
                backoff.reset();
                // The hub's advice (10–15 s by default), ±15 % so a fleet does not beat in step.
                let advised =
                    Duration::from_secs(u64::from(answer.heartbeat_interval_s.clamp(1, 300)));
                advised.mul_f64(0.85 + 0.3 * rand::random::<f64>())
            }
            Err(err) => {
                report_error("heartbeat", &err);
                backoff.next()
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Logs a failure the way an operator can act on it: the contract's message and hint.
fn report_error(what: &str, err: &ClientError) {
    match err.code() {
        Some(ErrorCode::AuthFail) => tracing::error!(
            "{what}: {err}; set SHERATAN_HUB_TOKEN (or --token) to the hub's token; retrying with backoff"
        ),
        Some(ErrorCode::PortMismatch) => tracing::error!("{what}: {err}"),
        _ => tracing::warn!("{what}: {err}"),
    }
}

/// Opens the worker stream, retrying while the hub is down or refuses the token; `None` when
/// the stream is off, the hub does not serve it (then the request routes), or at shutdown.
async fn open_stream(
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
) -> Option<(WorkerStream, tokio::sync::mpsc::Receiver<StreamEvent>)> {
    if !shared.config.stream {
        return None;
    }
    let spec = StreamSpec {
        node_id: shared.config.node_id.clone(),
        queues: shared.config.queues.clone(),
        capabilities: shared.config.handlers.names(),
        max_jobs: shared.config.concurrency,
    };
    let running: sheratan_client::stream::RunningLeases = {
        let shared = shared.clone();
        Arc::new(move || shared.running.leases())
    };
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut auth_backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
    loop {
        let opened = tokio::select! {
            () = shutdown.cancelled() => return None,
            opened = shared.data.open_stream(spec.clone(), running.clone()) => opened,
        };
        let err = match opened {
            Ok(open) => return Some(open),
            Err(err) if sheratan_client::stream::falls_back(&err) => {
                tracing::warn!(
                    "the hub does not serve the worker stream ({err}); using the request routes"
                );
                return None;
            }
            Err(err) => err,
        };
        report_error("worker stream", &err);
        let pause = pause_after(&err, &mut backoff, &mut auth_backoff);
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Runs jobs the stream pushes, asking for one more each time a slot frees up; the stream
/// carries cancels, extensions, progress and results.
async fn stream_loop(
    shared: Arc<Shared>,
    stream: WorkerStream,
    mut events: tokio::sync::mpsc::Receiver<StreamEvent>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(shared.config.concurrency as usize));
    // Slots asked for and not yet filled: each is one credit at the hub.
    let mut reserved = Vec::new();
    let jobs_cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let link = Link::Stream(stream.clone());
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => {
                let before = reserved.len();
                reserved.push(permit.expect("the semaphore is never closed"));
                while let Ok(p) = slots.clone().try_acquire_owned() {
                    reserved.push(p);
                }
                stream.want((reserved.len() - before) as u32);
            }
            event = events.recv() => match event {
                None => break,
                Some(StreamEvent::Job(job)) => {
                    let permit = reserved.pop();
                    spawn_job(&shared, &link, &mut tasks, *job, permit, &jobs_cancel);
                }
                Some(StreamEvent::Ended(lease_id)) => shared.running.stop(&lease_id),
                Some(StreamEvent::Lost(_) | StreamEvent::Stopped) => {}
                // Credits do not outlive a connection: ask again for every reserved slot.
                Some(StreamEvent::Reconnected) => stream.want(reserved.len() as u32),
            },
        }
        while tasks.try_join_next().is_some() {}
    }
    drop(reserved);
    // Shutdown: no more jobs; those the hub pushed before it heard that still run (they are
    // leased to this node), and running jobs get the grace period.
    stream.stop();
    let grace = tokio::time::sleep(shared.config.grace);
    tokio::pin!(grace);
    let mut open = true;
    while open || !tasks.is_empty() {
        tokio::select! {
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            event = events.recv(), if open => match event {
                Some(StreamEvent::Job(job)) => {
                    spawn_job(&shared, &link, &mut tasks, *job, None, &jobs_cancel)
                }
                Some(StreamEvent::Ended(lease_id)) => shared.running.stop(&lease_id),
                Some(StreamEvent::Stopped) | None => open = false,
                Some(_) => {}
            },
            () = &mut grace => {
                stop_running(&shared, &mut tasks, &jobs_cancel).await;
                break;
            }
        }
    }
    stream.close();
}

/// Runs a job on its own task; `slot` is released as soon as its result is on its way.
fn spawn_job(
    shared: &Arc<Shared>,
    link: &Link,
    tasks: &mut tokio::task::JoinSet<()>,
    job: LeasedJob,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    cancel: &CancellationToken,
) {
    let (shared, link, cancel) = (shared.clone(), link.clone(), cancel.clone());
    shared.inflight.fetch_add(1, Ordering::Relaxed);
    tasks.spawn(async move {
        run_job(&shared, &link, job, &cancel, slot).await;
        shared.inflight.fetch_sub(1, Ordering::Relaxed);
    });
}

/// After the grace period: stops the jobs still running (their leases will be reaped).
async fn stop_running(
    shared: &Shared,
    tasks: &mut tokio::task::JoinSet<()>,
    cancel: &CancellationToken,
) {
    tracing::warn!(
        grace = ?shared.config.grace,
        "jobs still running after the grace period; stopping them (their leases will be reaped)"
    );
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

/// Leases jobs while there is room and runs each on its own task.
async fn lease_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(shared.config.concurrency as usize));
    let jobs_cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut auth_backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
    let link = Link::Requests(shared.data.clone());
    'outer: loop {
        // Wait for at least one free slot, then ask for as many jobs as there are slots.
        let first = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let mut permits = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        let req = LeaseRequest {
            node_id: shared.config.node_id.clone(),
            queues: shared.config.queues.clone(),
            capabilities: shared.config.handlers.names(),
            max_jobs: (permits.len() as u32).min(100),
            wait_ms: shared.config.lease_wait.as_millis() as u64,
        };
        let grant = tokio::select! {
            () = shutdown.cancelled() => break,
            grant = shared.data.lease(&req) => grant,
        };
        let pause = match grant {
            Ok(grant) => {
                backoff.reset();
                auth_backoff.reset();
                for job in grant.jobs {
                    let Some(permit) = permits.pop() else { break };
                    spawn_job(&shared, &link, &mut tasks, job, Some(permit), &jobs_cancel);
                }
                Duration::from_millis(grant.defer_ms)
            }
            Err(err) => {
                report_error("lease", &err);
                pause_after(&err, &mut backoff, &mut auth_backoff)
            }
        };
        drop(permits);
        // Reap finished job tasks so the set does not grow.
        while tasks.try_join_next().is_some() {}
        if !pause.is_zero() {
            tokio::select! {
                () = shutdown.cancelled() => break 'outer,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
    // Shutdown: no new leases; running jobs get the grace period.
    if !tasks.is_empty() {
        tracing::info!(running = tasks.len(), grace = ?shared.config.grace, "waiting for running jobs");
        let all_done = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(shared.config.grace, all_done)
            .await
            .is_err()
        {
            stop_running(&shared, &mut tasks, &jobs_cancel).await;
        }
    }
}

/// How long to wait after a failed lease call: a refused token or a wrong port waits on the
/// slow `auth` backoff (nothing changes until an operator acts, and hammering the hub fills
/// its audit log); a hub that says when to come back (429, 503 with Retry-After) is
/// believed, never undercut by the backoff; anything else backs off from 200 ms.
fn pause_after(err: &ClientError, backoff: &mut Backoff, auth: &mut Backoff) -> Duration {
    match err.code() {
        Some(ErrorCode::AuthFail) | Some(ErrorCode::PortMismatch) => auth.next(),
        _ => match err {
            ClientError::Api {
                retry_after_s: Some(s),
                ..
            } => Duration::from_secs(*s).max(backoff.next()),
            _ => backoff.next(),
        },
    }
}

/// The signed-result request for a handler's outcome (a failure carries no result value).
fn report_for(job: &LeasedJob, outcome: Outcome) -> ResultRequest {
    let (outcome, result, error) = match outcome {
        Outcome::Success(value) => (sheratan_proto::data::Outcome::Success, value, None),
        Outcome::Failure { message, retryable } => (
            sheratan_proto::data::Outcome::Failure,
            serde_json::Value::Null,
            Some(JobError { message, retryable }),
        ),
    };
    ResultRequest {
        job_id: job.job_id.clone(),
        lease_id: job.lease_id.clone(),
        outcome,
        result,
        error,
    }
}

/// How often a running job's lease is extended: three times per lease, and never more often
/// than every third of a second (a lease about to end, or already past, is not a busy loop).
fn extend_every(lease_expires_at: time::OffsetDateTime, now: time::OffsetDateTime) -> Duration {
    let left: Duration = (lease_expires_at - now)
        .try_into()
        .unwrap_or(Duration::from_secs(1));
    Duration::max(left, Duration::from_secs(1)) / 3
}

/// Takes a job off the watched list when its run ends, however it ends.
struct Registered<'a>(&'a watch::Running, &'a str);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.finish(self.1);
    }
}

/// Runs one leased job: keeps its lease alive while the handler works, then reports.
/// Everything happens in this one task: a job shorter than a third of its lease costs no
/// timers, no extra tasks and no extension requests.
async fn run_job(
    shared: &Shared,
    link: &Link,
    job: LeasedJob,
    cancel: &CancellationToken,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let every = extend_every(job.lease_expires_at, time::OffsetDateTime::now_utc());
    // The job's timeout_s is the longest it may run (a hub before 2026-12-05 does not say:
    // then a day, the longest a job may ask for).
    let deadline = Duration::from_secs(u64::from(job.timeout_s.unwrap_or(24 * 3600)));
    let stop = cancel.child_token();
    let mut span = shared.config.tracer.start_from(
        "sheratan.handler",
        sheratan_trace::Kind::Consumer,
        job.traceparent.as_deref(),
    );
    span.attr("sheratan.job_id", &job.job_id);
    span.attr("sheratan.kind", &job.kind);
    span.attr("sheratan.attempt", job.attempt);
    // Progress the handler reports goes out at most every 250 ms, the rest of it right after
    // the handler ends: the output is complete before the result.
    let sink = sheratan_client::ProgressSink::new();
    let handler = shared
        .config
        .handlers
        .run(&job.kind, &job.payload, deadline, &stop, &sink);
    tokio::pin!(handler);
    let sent = CancellationToken::new();
    let sender =
        sheratan_client::progress::send_loop(link, &job.job_id, &job.lease_id, &sink, &sent);
    tokio::pin!(sender);
    let mut sending = true;
    let ended = shared.running.start(&job.job_id, &job.lease_id);
    let _registered = Registered(&shared.running, &job.lease_id);
    let mut next_extend = tokio::time::Instant::now() + every;
    let outcome = loop {
        tokio::select! {
            outcome = &mut handler => break outcome,
            // Returns early only when the hub says the lease is gone.
            () = &mut sender, if sending => sending = false,
            // Cancelled (or taken back): stop now (dropping the handler kills an exec
            // handler's process group) and report nothing; the job is no longer ours.
            () = ended.cancelled() => {
                span.fail("cancelled or taken back: nothing reported");
                return;
            }
            () = tokio::time::sleep_until(next_extend) => {
                next_extend += every;
                match link.extend(&job.lease_id).await {
                    Ok(_) => {}
                    Err(err) if err.code() == Some(ErrorCode::LeaseExpired) => {
                        // Someone else may be running it now: stop (dropping the handler
                        // kills an exec handler's process group) and report nothing.
                        tracing::warn!(job_id = %job.job_id, "the lease was lost; stopping the job");
                        span.fail("the lease was lost: nothing reported");
                        return;
                    }
                    Err(err) => tracing::warn!(job_id = %job.job_id, "extending the lease failed: {err}"),
                }
            }
        }
    };
    sent.cancel();
    if sending {
        sender.await;
    }
    if let Outcome::Failure { message, .. } = &outcome {
        span.fail(message);
    }
    // The handler's span ends here; the hub's result span is its child.
    let traceparent = span.traceparent();
    drop(span);
    let report = report_for(&job, outcome);
    // Results are safe to repeat: keep trying through hub restarts until the hub answers.
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut slot = slot;
    for _ in 0..60 {
        // The slot frees once the result is on its way (on the stream: queued before the
        // next `want`, so the hub counts the lease as reported first).
        let queued = || drop(slot.take());
        match link.report(&report, traceparent.as_deref(), queued).await {
            Ok(answer) => {
                tracing::debug!(job_id = %job.job_id, status = answer.status.as_str(), "result reported");
                return;
            }
            Err(err)
                if matches!(err, ClientError::Transport { .. })
                    || err.status().is_some_and(|s| s == 429 || s == 503) =>
            {
                report_error("result", &err);
                tokio::time::sleep(backoff.next()).await;
            }
            Err(err) => {
                report_error("result", &err);
                return;
            }
        }
    }
    tracing::error!(job_id = %job.job_id, "giving up on reporting the result; the lease will be reaped and the job run again");
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn api_error(code: ErrorCode, retry_after_s: Option<u64>) -> ClientError {
        ClientError::Api {
            status: code.http_status(),
            code,
            message: "refused".into(),
            hint: String::new(),
            retry_after_s,
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let within = |d: Duration, nominal_ms: f64| {
            let ms = d.as_secs_f64() * 1000.0;
            assert!(
                ms >= nominal_ms * 0.8 - 0.001 && ms <= nominal_ms * 1.2 + 0.001,
                "{ms} ms for nominal {nominal_ms} ms"
            );
        };
        for nominal in [100.0, 200.0, 400.0, 800.0, 1000.0, 1000.0] {
            within(b.next(), nominal);
        }
        for _ in 0..100 {
            within(b.next(), 1000.0);
        }
        b.reset();
        within(b.next(), 100.0);
    }

    #[test]
    fn a_refused_token_waits_on_the_slow_backoff() {
        let mut fast = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut auth = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
        let wait = pause_after(&api_error(ErrorCode::AuthFail, None), &mut fast, &mut auth);
        assert!(wait >= Duration::from_millis(1600), "{wait:?}");
        let wait = pause_after(
            &api_error(ErrorCode::PortMismatch, None),
            &mut fast,
            &mut auth,
        );
        assert!(wait >= Duration::from_millis(3200), "doubles: {wait:?}");
        assert_eq!(fast.failures, 0, "the fast backoff is untouched");
    }

    #[test]
    fn retry_after_is_believed_and_never_undercut() {
        let mut fast = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut auth = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
        let busy = api_error(ErrorCode::BackpressureDrop, Some(7));
        assert!(pause_after(&busy, &mut fast, &mut auth) >= Duration::from_secs(7));
        let other = api_error(ErrorCode::Internal, None);
        let wait = pause_after(&other, &mut fast, &mut auth);
        assert!(wait < Duration::from_secs(1), "{wait:?}");
        assert_eq!(auth.failures, 0);
    }

    #[test]
    fn outcomes_become_result_requests() {
        let job = LeasedJob {
            job_id: "j".into(),
            lease_id: "l".into(),
            queue: "default".into(),
            kind: "echo".into(),
            payload: serde_json::json!({}),
            attempt: 1,
            lease_expires_at: datetime!(2026-12-05 10:00 UTC),
            timeout_s: Some(30),
            traceparent: None,
        };
        let ok = report_for(&job, Outcome::Success(serde_json::json!({"a": 1})));
        assert_eq!((ok.job_id.as_str(), ok.lease_id.as_str()), ("j", "l"));
        assert_eq!(ok.outcome, sheratan_proto::data::Outcome::Success);
        assert_eq!(ok.result, serde_json::json!({"a": 1}));
        assert!(ok.error.is_none());
        let failed = Outcome::Failure {
            message: "boom".into(),
            retryable: true,
        };
        let failed = report_for(&job, failed);
        assert_eq!(failed.outcome, sheratan_proto::data::Outcome::Failure);
        assert_eq!(failed.result, serde_json::Value::Null);
        let error = failed.error.expect("the failure");
        assert_eq!((error.message.as_str(), error.retryable), ("boom", true));
    }

    #[test]
    fn leases_are_extended_three_times_per_lease() {
        let now = datetime!(2026-12-05 10:00 UTC);
        let every = |left_s: i64| extend_every(now + time::Duration::seconds(left_s), now);
        assert_eq!(every(30), Duration::from_secs(10));
        assert_eq!(every(300), Duration::from_secs(100));
        // A lease about to end (or past): extended soon, never in a busy loop.
        assert_eq!(every(0), Duration::from_secs(1) / 3);
        assert_eq!(every(-5), Duration::from_secs(1) / 3);
    }

    #[test]
    fn the_capability_hash_follows_the_handlers() {
        let a = WorkerConfig::new("http://c", "http://d", None::<String>, "w");
        let mut b = a.clone();
        assert_eq!(a.capability_hash(), b.capability_hash());
        assert_eq!(a.capability_hash().len(), 64);
        b.handlers = Handlers::from_toml("[handlers.greet]\ncommand = [\"true\"]\n").unwrap();
        assert_ne!(a.capability_hash(), b.capability_hash());
    }

    #[tokio::test]
    async fn a_worker_refuses_settings_it_cannot_run_with() {
        let mut config = WorkerConfig::new(
            "http://127.0.0.1:1",
            "http://127.0.0.1:1",
            None::<String>,
            "w",
        );
        config.concurrency = 0;
        let err = run(config, CancellationToken::new()).await.unwrap_err();
        assert!(err.to_string().contains("concurrency"), "{err}");
        let config = WorkerConfig::new(
            "http://127.0.0.1:1",
            "http://127.0.0.1:1",
            None::<String>,
            "bad id!",
        );
        assert!(matches!(
            run(config, CancellationToken::new()).await,
            Err(WorkerError::Config(_))
        ));
    }
}
