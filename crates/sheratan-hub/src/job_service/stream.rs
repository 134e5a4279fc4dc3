//! The worker stream's service (docs/API.md, "The worker stream"): what one stream holds (its
//! leases and credits), the lease pump that pushes jobs as the node asks for them, the watch
//! that pushes the end of held leases (cancels), and the handling of each node frame. It knows
//! frames, not WebSockets: `http/stream.rs` carries them.
//!
//! Results, extensions and progress go through the same service functions as their request
//! routes (integrity check first, then the store), so a frame is acknowledged exactly when the
//! request would have been answered: after its commit. Commits of one stream run concurrently
//! (up to [`IN_FLIGHT`]), so a stream's results share the store's group commits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sheratan_proto::data::{
    ExtendRequest, JobStatus, LeaseRequest, MAX_WATCHED, ResultRequest, SubmitJob, WatchedLease,
};
use sheratan_proto::progress::ProgressReport;
use sheratan_proto::stream::{HubFrame, NodeFrame, StreamQuery, split_frame};
use sheratan_store::LeaseOrder;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{JobsError, MAX_JOBS_PER_LEASE, MAX_WAIT_MS, ResultHeaders, parse_id};
use crate::HubState;
use crate::auth::Credential;

/// Commits one stream may have running at once; beyond it the stream stops reading frames
/// (TCP pushes back on the node).
pub const IN_FLIGHT: usize = 256;

/// Frames queued for the node; beyond it commits wait to answer.
const OUT_QUEUE: usize = 1024;

/// How often, at most, held leases are looked at again when jobs end elsewhere (a cancel on
/// another hub of the same database), as the watch route does.
const RECHECK: Duration = Duration::from_millis(500);

/// Validates the upgrade's query into a lease order, or none for a stream that only submits
/// (the node and credential checks are the HTTP layer's, as for `POST /v1/leases`).
pub fn stream_order(q: &StreamQuery) -> Result<Option<LeaseOrder>, JobsError> {
    if q.max_jobs == 0 {
        if q.node_id.is_some() || q.queues.is_some() || !q.capabilities.is_empty() {
            return Err(JobsError::invalid(
                "max_jobs: 1 to 1000 for a stream that leases (node_id, queues, capabilities); a stream that only submits names none of them",
            ));
        }
        return Ok(None);
    }
    let list = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect()
    };
    if !(1..=MAX_STREAM_JOBS).contains(&q.max_jobs) {
        return Err(JobsError::invalid(format!(
            "max_jobs: must be between 1 and {MAX_STREAM_JOBS}"
        )));
    }
    let mut order = super::lease_order(&LeaseRequest {
        node_id: q.node_id.clone().unwrap_or_default(),
        queues: list(q.queues.as_deref().unwrap_or_default()),
        capabilities: list(&q.capabilities),
        max_jobs: q.max_jobs.min(MAX_JOBS_PER_LEASE),
        wait_ms: 0,
    })?;
    order.max_jobs = q.max_jobs;
    Ok(Some(order))
}

/// Who a stream is: what it may do, for whom.
pub struct StreamCaller {
    pub credential: Credential,
    pub ip: IpAddr,
    /// Its credential's role lets it submit (the queues it may submit to are checked per job).
    pub may_submit: bool,
    /// A queue-limited credential's queues (empty: any).
    pub queues: Vec<String>,
}

/// Most leases one stream may hold (a worker's `--concurrency` goes to 1,000).
pub const MAX_STREAM_JOBS: u32 = 1000;

/// One open stream.
pub struct Stream {
    hub: Arc<HubState>,
    /// What it leases; `None` for a stream that only submits.
    order: Option<LeaseOrder>,
    credential: Credential,
    ip: IpAddr,
    may_submit: bool,
    queues: Vec<String>,
    held: Mutex<Held>,
    credits_added: Notify,
    /// Cancelled when the stream ends (or the hub stops).
    closed: CancellationToken,
    /// Cancelled by `stop` (or with `closed`): the pump takes no more jobs.
    pump_stop: CancellationToken,
    /// Set when the pump has ended.
    pump_done: tokio::sync::watch::Sender<bool>,
    commits: Arc<Semaphore>,
    out: mpsc::Sender<HubFrame>,
}

#[derive(Default)]
struct Held {
    /// Lease → (job, when it was pushed or resumed).
    leases: HashMap<Uuid, (Uuid, Instant)>,
    /// Jobs the node asked for and has not been pushed yet.
    credits: u32,
}

impl Stream {
    /// A stream for `order` (its `max_jobs` is the stream's cap), and the frames to send.
    pub fn open(
        hub: Arc<HubState>,
        order: Option<LeaseOrder>,
        caller: StreamCaller,
    ) -> (Arc<Stream>, mpsc::Receiver<HubFrame>) {
        let (out, frames) = mpsc::channel(OUT_QUEUE);
        let closed = hub.stopping.child_token();
        let pump_stop = closed.child_token();
        let stream = Arc::new(Stream {
            pump_stop,
            pump_done: tokio::sync::watch::channel(false).0,
            hub,
            order,
            credential: caller.credential,
            ip: caller.ip,
            may_submit: caller.may_submit,
            queues: caller.queues,
            held: Mutex::new(Held::default()),
            credits_added: Notify::new(),
            closed,
            commits: Arc::new(Semaphore::new(IN_FLIGHT)),
            out,
        });
        (stream, frames)
    }

    /// The first frame.
    pub fn welcome(&self, idle_timeout: Duration, max_frame_bytes: usize) -> HubFrame {
        HubFrame::Welcome {
            max_jobs: self.max_jobs(),
            idle_timeout_ms: idle_timeout.as_millis() as u64,
            max_frame_bytes: max_frame_bytes as u64,
            warning: self
                .order
                .as_ref()
                .is_some_and(|o| o.capabilities.is_empty())
                .then(|| super::lease::NO_CAPABILITIES.to_owned()),
        }
    }

    fn max_jobs(&self) -> u32 {
        self.order.as_ref().map_or(0, |o| o.max_jobs)
    }

    pub fn closed(&self) -> &CancellationToken {
        &self.closed
    }

    /// Ends the stream's pump and watch. Leases it holds stay with the node (a reconnect
    /// resumes them) until they expire.
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Pushes jobs while the node has credits, long-polling the store like a lease call.
    pub async fn pump(self: Arc<Self>) {
        self.push_jobs().await;
        self.pump_done.send_replace(true);
    }

    async fn push_jobs(&self) {
        let Some(base) = &self.order else { return };
        loop {
            let wanted = {
                let notified = self.credits_added.notified();
                let credits = self.held.lock().expect("stream lock").credits;
                if credits == 0 {
                    tokio::select! {
                        () = notified => continue,
                        () = self.pump_stop.cancelled() => return,
                    }
                }
                credits
            };
            let mut order = base.clone();
            order.max_jobs = wanted.min(MAX_JOBS_PER_LEASE);
            let stop = &self.pump_stop;
            let granted = super::lease(&self.hub, order, MAX_WAIT_MS, self.ip, stop).await;
            let pause = match granted {
                Ok(grant) => {
                    for job in grant.jobs {
                        self.hold_pushed(&job.job_id, &job.lease_id);
                        if self.out.send(HubFrame::Job { job }).await.is_err() {
                            // The node is gone: the leases it was pushed are reaped when
                            // they expire, as a dropped lease answer's are.
                            return;
                        }
                    }
                    Duration::from_millis(grant.defer_ms)
                }
                Err(err) => {
                    tracing::warn!(node_id = %base.node_id, "stream lease: {}", err.message());
                    Duration::from_secs(1)
                }
            };
            if !pause.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = self.pump_stop.cancelled() => return,
                }
            }
            if self.pump_stop.is_cancelled() {
                return;
            }
        }
    }

    fn hold_pushed(&self, job_id: &str, lease_id: &str) {
        let (Ok(job), Ok(lease)) = (job_id.parse(), lease_id.parse()) else {
            return;
        };
        let mut held = self.held.lock().expect("stream lock");
        held.credits = held.credits.saturating_sub(1);
        held.leases.insert(lease, (job, Instant::now()));
    }

    /// Pushes `ended` for held leases that stop being live: cancels on this hub at once,
    /// anything else (another hub's cancel, a reap) when jobs end, at most every [`RECHECK`].
    pub async fn watch(self: Arc<Self>) {
        let mut cancels = self.hub.cancelled_leases.subscribe();
        let mut finished = self.hub.store.finished_signal();
        let mut looked = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = self.closed.cancelled() => return,
                cancelled = cancels.recv() => match cancelled {
                    Ok(lease) => {
                        if self.release(lease) && !self.send_ended(lease).await {
                            return;
                        }
                    }
                    // Missed some: look at every held lease.
                    Err(_) => self.recheck(Duration::ZERO).await,
                },
                changed = finished.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tokio::select! {
                        () = tokio::time::sleep_until(looked + RECHECK) => {}
                        () = self.closed.cancelled() => return,
                    }
                    finished.borrow_and_update();
                    looked = tokio::time::Instant::now();
                    self.recheck(RECHECK).await;
                }
            }
        }
    }

    /// Looks at held leases older than `older_than` in the store; ends those not live.
    async fn recheck(&self, older_than: Duration) {
        let old: Vec<(Uuid, Uuid)> = {
            let held = self.held.lock().expect("stream lock");
            held.leases
                .iter()
                .filter(|(_, (_, at))| at.elapsed() >= older_than)
                .map(|(l, (j, _))| (*l, *j))
                .collect()
        };
        for (lease, job) in old {
            if !self.live(job, lease).await && self.release(lease) {
                self.send_ended(lease).await;
            }
        }
    }

    /// Whether `lease` is `job`'s live lease, held by this stream's node (a store error
    /// counts as live: the node learns at its next extension).
    async fn live(&self, job: Uuid, lease: Uuid) -> bool {
        match self.hub.store.get(job).await {
            Ok(found) => found.is_some_and(|j| {
                j.status == JobStatus::InProgress
                    && j.lease
                        .is_some_and(|l| l.lease_id == lease && Some(&l.node_id) == self.node_id())
            }),
            Err(_) => true,
        }
    }

    /// Takes `lease` off the held set (it was reported, ended or lost); whether it was held.
    fn release(&self, lease: Uuid) -> bool {
        self.held
            .lock()
            .expect("stream lock")
            .leases
            .remove(&lease)
            .is_some()
    }

    /// Releases `lease` if the stream holds it for `job`.
    fn release_reported(&self, lease: Uuid, job: Uuid) {
        let mut held = self.held.lock().expect("stream lock");
        if held.leases.get(&lease).is_some_and(|(j, _)| *j == job) {
            held.leases.remove(&lease);
        }
    }

    fn holds(&self, lease: Uuid) -> bool {
        self.held
            .lock()
            .expect("stream lock")
            .leases
            .contains_key(&lease)
    }

    async fn send_ended(&self, lease: Uuid) -> bool {
        let frame = HubFrame::Ended {
            lease_id: lease.to_string(),
        };
        self.out.send(frame).await.is_ok()
    }

    /// Handles one node frame. Frames that change what the stream holds (`want`, `resume`)
    /// are done before the next frame is read; commits run on their own tasks.
    pub async fn handle(self: &Arc<Self>, text: &str) {
        let (line, body) = split_frame(text);
        let frame: NodeFrame = match serde_json::from_str(line) {
            Ok(frame) => frame,
            Err(e) => {
                let id = frame_id(line);
                return self
                    .refuse(id, JobsError::invalid(format!("frame: {e}")))
                    .await;
            }
        };
        let reports = !matches!(frame, NodeFrame::Submit { .. } | NodeFrame::Stop);
        if reports && self.order.is_none() {
            let e = JobsError::Forbidden(
                "this stream only submits: a stream that leases (node_id, queues, max_jobs) takes jobs, results, extensions and progress".into(),
            );
            return self.refuse(frame_id(line), e).await;
        }
        match frame {
            NodeFrame::Want { n } => self.want(n).await,
            NodeFrame::Stop => self.stop().await,
            NodeFrame::Submit { id, traceparent } => self.submit(id, body, traceparent).await,
            NodeFrame::Resume { leases } => self.resume(leases).await,
            NodeFrame::Result {
                id,
                content_sha256,
                signature,
                traceparent,
            } => {
                let headers = signed(&content_sha256, &signature);
                self.result(id, headers, body, traceparent).await
            }
            NodeFrame::Extend {
                id,
                lease_id,
                extend_s,
            } => self.extend(id, lease_id, extend_s).await,
            NodeFrame::Progress {
                id,
                lease_id,
                content_sha256,
                signature,
            } => {
                self.progress(id, lease_id, signed(&content_sha256, &signature), body)
                    .await
            }
        }
    }

    /// Ends the pump, then says so: every job it pushed is queued before `stopped`.
    async fn stop(&self) {
        self.pump_stop.cancel();
        let mut done = self.pump_done.subscribe();
        let _ = done.wait_for(|done| *done).await;
        let _ = self.out.send(HubFrame::Stopped).await;
    }

    /// Credits up to `max_jobs` less the leases held and the credits already given; asking
    /// for more is refused (what fits is kept).
    async fn want(&self, n: u32) {
        let (room, taken) = {
            let mut held = self.held.lock().expect("stream lock");
            let (leases, credits) = (held.leases.len() as u32, held.credits);
            let room = self.max_jobs().saturating_sub(leases + credits);
            held.credits += n.min(room);
            (room, (leases, credits))
        };
        self.credits_added.notify_one();
        if n > room {
            let message = format!(
                "want: {n} more jobs, but the stream holds {} leases and is owed {} of its max_jobs {}: ask for a job when a slot frees up (after its result)",
                taken.0,
                taken.1,
                self.max_jobs()
            );
            self.refuse(None, JobsError::invalid(message)).await;
        }
    }

    async fn resume(&self, leases: Vec<WatchedLease>) {
        if leases.len() > MAX_WATCHED {
            let message = format!("resume: at most {MAX_WATCHED} leases");
            return self.refuse(None, JobsError::invalid(message)).await;
        }
        for (i, l) in leases.iter().enumerate() {
            let ids = parse_id(&format!("leases[{i}].job_id"), &l.job_id).and_then(|job| {
                Ok((
                    job,
                    parse_id(&format!("leases[{i}].lease_id"), &l.lease_id)?,
                ))
            });
            let (job, lease) = match ids {
                Ok(ids) => ids,
                Err(e) => return self.refuse(None, e).await,
            };
            // A live lease is held even past max_jobs (a node may still run jobs whose
            // results wait to be sent again): no new credit fits until it is reported.
            if self.live(job, lease).await {
                let mut held = self.held.lock().expect("stream lock");
                held.leases.insert(lease, (job, Instant::now()));
            } else if !self.send_ended(lease).await {
                return;
            }
        }
    }

    fn node_id(&self) -> Option<&String> {
        self.order.as_ref().map(|o| &o.node_id)
    }

    /// A job, submitted as `POST /v1/jobs` would submit it.
    async fn submit(self: &Arc<Self>, id: u64, body: &str, traceparent: Option<String>) {
        if !self.may_submit {
            let e = JobsError::Forbidden(
                "this stream's credential may not submit jobs (a node credential leases and reports; submit with a submit credential)".into(),
            );
            return self.refuse(Some(id), e).await;
        }
        let job: SubmitJob = match parse_body(body) {
            Ok(job) => job,
            Err(e) => return self.refuse(Some(id), e).await,
        };
        if !self.queues.is_empty() && !self.queues.contains(&job.queue) {
            let e = JobsError::Forbidden(format!(
                "this stream's credential may not submit to queue {:?}",
                job.queue
            ));
            return self.refuse(Some(id), e).await;
        }
        self.commit((id, "submit"), move |s| async move {
            let from = super::Origin {
                plane: sheratan_proto::Plane::Data,
                ip: s.ip,
                traceparent: traceparent.as_deref(),
            };
            let mut answers = super::submit(&s.hub, vec![Ok(job)], from).await?;
            match answers.remove(0) {
                super::Submitted::Created(answer) => Ok(HubFrame::SubmitAck {
                    id,
                    created: true,
                    answer,
                }),
                super::Submitted::Existing(answer) => Ok(HubFrame::SubmitAck {
                    id,
                    created: false,
                    answer,
                }),
                super::Submitted::Refused(e) => Err(e),
            }
        })
        .await
    }

    async fn result(
        self: &Arc<Self>,
        id: u64,
        headers: ResultHeaders<'_>,
        body: &str,
        traceparent: Option<String>,
    ) {
        let hub = &self.hub;
        if let Err(e) = super::verify(hub, &self.credential, headers, body.as_bytes(), self.ip) {
            return self.refuse(Some(id), e).await;
        }
        let req: ResultRequest = match parse_body(body) {
            Ok(req) => req,
            Err(e) => return self.refuse(Some(id), e).await,
        };
        // Reported: the node's slot is free whatever the store answers (a body naming another
        // job frees nothing).
        if let (Ok(lease), Ok(job)) = (req.lease_id.parse(), req.job_id.parse()) {
            self.release_reported(lease, job);
        }
        // A malformed context is dropped by the tracer, as the request route's header is.
        self.commit((id, "result"), move |s| async move {
            let who = (&s.credential, s.ip);
            super::finish(&s.hub, req, who, traceparent.as_deref())
                .await
                .map(|answer| HubFrame::ResultAck { id, answer })
        })
        .await
    }

    async fn extend(self: &Arc<Self>, id: u64, lease_id: String, extend_s: Option<u32>) {
        if let Err(e) = self.held_lease(&lease_id) {
            return self.refuse(Some(id), e).await;
        }
        self.commit((id, "extend"), move |s| async move {
            let who = (&s.credential, s.ip);
            let answer = super::extend(&s.hub, &lease_id, ExtendRequest { extend_s }, who).await;
            if let (Err(JobsError::LeaseNotHeld(_)), Ok(lease)) = (&answer, lease_id.parse()) {
                s.release(lease);
            }
            answer.map(|answer| HubFrame::ExtendAck { id, answer })
        })
        .await
    }

    async fn progress(
        self: &Arc<Self>,
        id: u64,
        lease_id: String,
        headers: ResultHeaders<'_>,
        body: &str,
    ) {
        if let Err(e) = self.held_lease(&lease_id) {
            return self.refuse(Some(id), e).await;
        }
        let hub = &self.hub;
        if let Err(e) = super::verify(hub, &self.credential, headers, body.as_bytes(), self.ip) {
            return self.refuse(Some(id), e).await;
        }
        let report: ProgressReport = match parse_body(body) {
            Ok(report) => report,
            Err(e) => return self.refuse(Some(id), e).await,
        };
        self.commit((id, "progress"), move |s| async move {
            let who = (&s.credential, s.ip);
            super::report_progress(&s.hub, &lease_id, report, who)
                .await
                .map(|answer| HubFrame::ProgressAck { id, answer })
        })
        .await
    }

    /// `LEASE_EXPIRED` unless the stream holds `lease_id`.
    fn held_lease(&self, lease_id: &str) -> Result<(), JobsError> {
        let lease = parse_id("lease_id", lease_id)?;
        if self.holds(lease) {
            return Ok(());
        }
        Err(JobsError::LeaseNotHeld(format!(
            "this stream does not hold lease {lease_id} (it ended, or it was never pushed or resumed here)"
        )))
    }

    /// Runs `work` on its own task (a commit slot taken first, so a flood waits here) and
    /// sends its answer, or its error as an error frame.
    async fn commit<F, Fut>(self: &Arc<Self>, (id, kind): (u64, &'static str), work: F)
    where
        F: FnOnce(Arc<Stream>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<HubFrame, JobsError>> + Send,
    {
        let arrived = Instant::now();
        let Ok(slot) = self.commits.clone().acquire_owned().await else {
            return;
        };
        let stream = self.clone();
        tokio::spawn(async move {
            let answer = work(stream.clone()).await;
            let took = arrived.elapsed().as_secs_f64();
            stream.hub.jobs.stream_frames.0.observe(kind, took);
            let frame = match answer {
                Ok(frame) => frame,
                Err(e) => {
                    // Refused in itself (a bad job, another node's lease): paced, as the
                    // request would be.
                    if crate::pacing::is_refusal(e.code().http_status()) {
                        stream
                            .hub
                            .jobs
                            .stream_refusals
                            .fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(stream.hub.refusals.delay()).await;
                    }
                    error_frame(Some(id), &e)
                }
            };
            let _ = stream.out.send(frame).await;
            drop(slot);
        });
    }

    /// Answers a frame wrong in itself (unreadable, too large, a lease the stream does not
    /// hold, a bad signature, too many jobs) with an error frame, after its turn under the
    /// hub's refusal pacing: the stream reads nothing meanwhile, so a flood of bad frames is
    /// slowed like one of bad requests. (What the store refuses after a frame's checks is
    /// answered at once, as on the request routes.)
    pub async fn refuse(&self, id: Option<u64>, err: JobsError) {
        self.hub
            .jobs
            .stream_refusals
            .fetch_add(1, Ordering::Relaxed);
        let wait = self.hub.refusals.delay();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let _ = self.out.send(error_frame(id, &err)).await;
    }
}

/// A signed frame's hash and signature, as the request route's two headers.
fn signed<'a>(content_sha256: &'a str, signature: &'a Option<String>) -> ResultHeaders<'a> {
    ResultHeaders {
        content_sha256: Some(content_sha256),
        signature: signature.as_deref(),
    }
}

/// A frame's body, read as the request route reads its body (the same wire rules).
fn parse_body<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, JobsError> {
    sheratan_runtime::edge::parse_json(body.as_bytes())
        .map_err(|e| JobsError::invalid(format!("the frame's body: {}", e.message)))
}

/// The frame's `id`, read from a line that did not parse as a whole (so the node can tell
/// which frame was refused).
fn frame_id(line: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: Option<u64>,
    }
    serde_json::from_str::<Id>(line).ok().and_then(|x| x.id)
}

pub fn error_frame(id: Option<u64>, err: &JobsError) -> HubFrame {
    HubFrame::Error {
        id,
        error: sheratan_proto::ErrorDetail {
            code: err.code(),
            message: err.message(),
            hint: err.hint().to_owned(),
        },
    }
}
