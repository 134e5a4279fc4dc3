//! The storage trait every backend implements, with the requests and outcomes it speaks.
//!
//! The trait is narrow and object-safe (`Arc<dyn Store>`); the hub talks to storage through it
//! only. Time comes from the backend's `Clock`, so the conformance suite can move time by hand.

use std::time::Duration;

use async_trait::async_trait;
use sheratan_proto::data::{JobError, JobStatus, Outcome};
use sheratan_proto::queues::{QueueSettings, QueueSettingsPatch};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::jobs::{JobRecord, JobSpec};

/// Hub-wide limits and timings a backend enforces.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// `accepted` jobs (all queues) at which submits are refused.
    pub max_queue_depth: u64,
    /// `in_progress` jobs (all queues) at which leases hand out nothing.
    pub max_inflight: u64,
    /// The retry backoff's base (`SHERATAN_RETRY_BASE_MS`).
    pub retry_base: Duration,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_queue_depth: 1000,
            max_inflight: 100,
            retry_base: Duration::from_millis(1000),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SubmitOutcome {
    /// A new job, committed.
    Created { job_id: Uuid },
    /// The idempotency key was seen with the same request: the existing job.
    Existing {
        job_id: Uuid,
        status: JobStatus,
        /// JSON text of the result, for a completed job.
        result: Option<String>,
    },
    /// The idempotency key was seen with a different request.
    Collision { job_id: Uuid },
    /// The hub-wide queue depth is at its limit.
    QueueFull { depth: u64 },
}

/// A lease request, validated.
#[derive(Debug, Clone)]
pub struct LeaseOrder {
    pub node_id: String,
    pub queues: Vec<String>,
    /// Sorted, without duplicates.
    pub capabilities: Vec<String>,
    pub max_jobs: u32,
}

/// A job handed to a node.
#[derive(Debug, Clone, PartialEq)]
pub struct LeasedJob {
    pub job_id: Uuid,
    pub lease_id: Uuid,
    pub queue: String,
    pub kind: String,
    /// JSON text.
    pub payload: String,
    pub attempt: u32,
    pub lease_expires_at: OffsetDateTime,
    /// The longest the job may run.
    pub timeout_s: u32,
    /// The trace context the job was submitted with.
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct LeaseGrant {
    pub jobs: Vec<LeasedJob>,
    /// True when the inflight limit kept jobs back.
    pub saturated: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExtendOutcome {
    Extended {
        job_id: Uuid,
        expires_at: OffsetDateTime,
    },
    /// The lease is no longer held (expired and reaped, finished, cancelled, or never issued).
    NotHeld,
    /// The lease is held by `holder`, whose own credential alone may act on it.
    WrongHolder { holder: String },
}

/// Who may report a result for, or extend, a lease: the node holding it, when that node has a
/// credential of its own; anybody with access otherwise. The store checks it where it already
/// has the lease in hand, so the rule costs no extra read.
#[derive(Debug, Clone, PartialEq)]
pub struct HolderRule {
    /// The node credential making the request (`None`: the mesh token or another role).
    pub reporter: Option<String>,
    /// The nodes that have node credentials.
    pub bound: std::sync::Arc<std::collections::HashSet<String>>,
}

impl HolderRule {
    /// Whether the rule lets its reporter act on a lease held by `holder`.
    pub fn permits(&self, holder: &str) -> bool {
        self.reporter.as_deref() == Some(holder) || !self.bound.contains(holder)
    }
}

/// A result reported by the holder of a lease.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultReport {
    pub job_id: Uuid,
    pub lease_id: Uuid,
    pub outcome: Outcome,
    /// JSON text.
    pub result: String,
    pub error: Option<JobError>,
    /// Checked against the lease's holder; `None` checks nothing.
    pub holder: Option<Box<HolderRule>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FinishOutcome {
    /// Recorded; the job is now `status` (completed, failed, or accepted for a retry).
    Recorded { status: JobStatus },
    /// The same lease's result was recorded before; counted once.
    Duplicate { status: JobStatus },
    /// The lease is not held any more; the result is refused.
    LeaseNotHeld { status: JobStatus },
    /// No such job.
    UnknownJob,
    /// The lease is live but held by `holder`, whose own credential alone may report for it.
    WrongHolder { holder: String },
}

/// A lease the reaper took back.
#[derive(Debug, Clone, PartialEq)]
pub struct Reaped {
    pub job_id: Uuid,
    pub queue: String,
    pub node_id: String,
    pub attempt: u32,
    /// `accepted` (it will run again) or `failed` (attempts used up).
    pub status: JobStatus,
}

/// What one `tick` did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TickReport {
    pub reaped: Vec<Reaped>,
    /// Delayed jobs (`run_at`, retry backoff) that became ready.
    pub promoted: usize,
}

/// Filters of `GET /v1/jobs`. Newest first; `before` is the cursor (the last job id seen).
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub queue: Option<String>,
    pub status: Option<JobStatus>,
    pub limit: u32,
    pub before: Option<Uuid>,
    pub kind: Option<String>,
    /// Text the error message contains, any case (ASCII case folding).
    pub error: Option<String>,
    /// Jobs last changed (`updated_at`) at or after this time.
    pub since: Option<OffsetDateTime>,
}

/// Live counters, cheap to read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// `accepted` jobs per queue (delayed ones included), sorted by queue.
    pub queue_depth: Vec<(String, u64)>,
    /// `in_progress` jobs.
    pub inflight: u64,
    /// Finished jobs whose submitter has not acknowledged them.
    pub results_pending: u64,
    /// `in_progress` jobs per queue, sorted by queue (on PostgreSQL as of the last exact
    /// count, at most a second old).
    pub queue_running: Vec<(String, u64)>,
}

impl Counts {
    pub fn total_depth(&self) -> u64 {
        self.queue_depth.iter().map(|(_, n)| n).sum()
    }
}

/// What `purge` and `pause` report about a queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueState {
    pub queue: String,
    pub paused: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Storage cannot take writes (disk full, read-only, database down): the caller answers
    /// 503 and nothing committed is lost.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A bug or corruption.
    #[error("storage failure: {0}")]
    Internal(String),
}

/// Durable job storage. Every method that answers `Ok` for a change has committed it.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Submits jobs in order; each gets its own outcome. Concurrent submits of one idempotency
    /// key create exactly one job.
    async fn submit(&self, jobs: Vec<JobSpec>) -> Result<Vec<SubmitOutcome>, StoreError>;

    /// Leases up to `max_jobs` ready jobs of the given queues whose required capabilities the
    /// node has: priority first, then first in, first out. Never more than the inflight limit.
    async fn lease(&self, order: LeaseOrder) -> Result<LeaseGrant, StoreError>;

    /// Extends a live lease by `extend_s` (the job's `timeout_s` if `None`) from now, if
    /// `holder` (when given) lets the caller act on it.
    async fn extend(
        &self,
        lease_id: Uuid,
        extend_s: Option<u32>,
        holder: Option<HolderRule>,
    ) -> Result<ExtendOutcome, StoreError>;

    /// Records a result for a live lease.
    async fn finish(&self, report: ResultReport) -> Result<FinishOutcome, StoreError>;

    async fn get(&self, job_id: Uuid) -> Result<Option<JobRecord>, StoreError>;

    /// Ids of jobs whose text form (`0190…-…`, lowercase) starts or ends with `fragment`,
    /// newest first, at most `limit`. The caller checks that `fragment` is 8+ characters of
    /// lowercase hex and hyphens. Operators type short ids; this scans the jobs table once,
    /// so it is for people, never for a hot path.
    async fn find_ids(&self, fragment: &str, limit: u32) -> Result<Vec<Uuid>, StoreError>;

    /// Jobs matching the filter, newest first, and the cursor of the next page.
    async fn list(&self, filter: ListFilter) -> Result<(Vec<JobRecord>, Option<Uuid>), StoreError>;

    /// Cancels an accepted or in-progress job (its lease ends). A finished job is returned
    /// unchanged. `None` if unknown.
    async fn cancel(&self, job_id: Uuid) -> Result<Option<JobRecord>, StoreError>;

    /// Puts a job back to `accepted` with its attempts reset (admin). `None` if unknown.
    async fn requeue(&self, job_id: Uuid) -> Result<Option<JobRecord>, StoreError>;

    /// Deletes the finished jobs (completed, failed, cancelled) among `job_ids`, results and
    /// all; live ones are left alone. Returns how many were deleted.
    async fn delete_finished(&self, job_ids: Vec<Uuid>) -> Result<u64, StoreError>;

    /// Reaps expired leases and promotes delayed jobs that are due. Call it often (the hub
    /// does, every 250 ms).
    async fn tick(&self) -> Result<TickReport, StoreError>;

    /// Finished, unacknowledged jobs, oldest first.
    async fn pending_results(&self, limit: u32) -> Result<Vec<JobRecord>, StoreError>;

    /// Acknowledges finished jobs' results; returns how many were pending.
    async fn ack_results(&self, job_ids: Vec<Uuid>) -> Result<u64, StoreError>;

    async fn set_paused(&self, queue: String, paused: bool) -> Result<QueueState, StoreError> {
        let patch = QueueSettingsPatch {
            paused: Some(paused),
            ..Default::default()
        };
        let settings = self
            .update_queue_settings(queue.clone(), patch)
            .await?
            .map_err(StoreError::Internal)?;
        Ok(QueueState {
            queue,
            paused: settings.paused,
        })
    }

    /// Records running jobs' latest progress (JSON of `JobProgress`) where the lease named is
    /// still live; returns how many were recorded. The hub calls it coalesced (a few times a
    /// second at most), never once per report.
    async fn record_progress(&self, updates: Vec<(Uuid, String)>) -> Result<u64, StoreError>;

    /// Every queue with settings (paused, or any field set), by name.
    async fn queue_settings(&self) -> Result<Vec<(String, QueueSettings)>, StoreError>;

    /// Applies `patch` to a queue's settings in one step and returns the new settings, or
    /// the validation error (naming the field) of what the patch would make. Takes effect
    /// for the next lease; running jobs are left alone.
    async fn update_queue_settings(
        &self,
        queue: String,
        patch: QueueSettingsPatch,
    ) -> Result<Result<QueueSettings, String>, StoreError>;

    /// Cancels every accepted job of the queue; returns how many, and the queue's state.
    async fn purge(&self, queue: String) -> Result<(u64, QueueState), StoreError>;

    /// Forgets idempotency keys created before `before`; returns how many.
    async fn expire_idempotency_keys(&self, before: OffsetDateTime) -> Result<u64, StoreError>;

    /// Deletes at most `limit` finished jobs (with their results and progress) that `rules`
    /// say are old enough, oldest first; running and waiting jobs are never touched.
    async fn expire_finished(
        &self,
        rules: crate::retention::RetentionRules,
        limit: u32,
    ) -> Result<crate::retention::PurgeReport, StoreError>;

    /// The newest job id retention has deleted, kept across restarts (`None`: none yet).
    async fn purged_through(&self) -> Result<Option<Uuid>, StoreError>;

    /// Live counters.
    fn counts(&self) -> Counts;

    /// The latencies this store measures (queue wait, run, end to end, group commits).
    fn timings(&self) -> &crate::timings::StoreTimings;

    /// A receiver that changes whenever jobs become ready (submit, retry, reap, requeue,
    /// resume), for long-polling leases.
    fn ready_signal(&self) -> tokio::sync::watch::Receiver<u64>;

    /// A receiver that changes whenever a job finishes, for following pending results.
    fn finished_signal(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// Where the broker keeps its auction records (bids, winners, rounds, timings), so they
/// survive restarts and, on a shared database, every hub sees them.
#[async_trait]
pub trait AuctionStore: Send + Sync + 'static {
    /// Inserts or replaces the record of `record.job_id`.
    async fn save_auction(
        &self,
        record: &sheratan_proto::auction::AuctionRecord,
    ) -> Result<(), StoreError>;

    async fn auction(
        &self,
        job_id: &str,
    ) -> Result<Option<sheratan_proto::auction::AuctionRecord>, StoreError>;

    /// The most recently saved records, newest first.
    async fn auctions(
        &self,
        limit: u32,
    ) -> Result<Vec<sheratan_proto::auction::AuctionRecord>, StoreError>;
}

/// A credential as stored: its secret only as a SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRecord {
    pub name: String,
    pub role: sheratan_proto::credentials::CredentialRole,
    /// `submit` credentials: the queues they may use (empty: all).
    pub queues: Vec<String>,
    /// SHA-256 of the secret, lowercase hex.
    pub secret_sha256: String,
    /// The key its results are signed with (docs/API.md, "Result signing"): derived from the
    /// secret, never the secret.
    pub signing_key: String,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
}

/// Where credentials live: in the job store's database, so every hub on one PostgreSQL shares
/// them. Small and read whole: hubs keep them in memory and re-read them every second.
#[async_trait]
pub trait CredentialStore: Send + Sync + 'static {
    /// Every credential, revoked ones included, by name.
    async fn credentials(&self) -> Result<Vec<CredentialRecord>, StoreError>;

    /// Adds `record`; `false` when its name is taken (a revoked name stays taken).
    async fn create_credential(&self, record: CredentialRecord) -> Result<bool, StoreError>;

    /// Revokes `name` at `at`; `false` when there is no such live credential.
    async fn revoke_credential(&self, name: &str, at: OffsetDateTime) -> Result<bool, StoreError>;

    /// Creates `record`, or replaces the credential of its name (a new secret, a revocation
    /// lifted). Only for the process that owns the name (`sheratan up` healing its members'
    /// credentials); no route reaches it.
    async fn put_credential(&self, record: CredentialRecord) -> Result<(), StoreError>;

    /// Notes when credentials were last used (kept if later than what is stored).
    async fn touch_credentials(
        &self,
        used: Vec<(String, OffsetDateTime)>,
    ) -> Result<(), StoreError>;
}

/// What several hubs on one database share besides jobs: the node registry (merged from
/// every hub's heartbeats), settings such as the token rotation, and bundles.
#[async_trait]
pub trait SharedState: Send + Sync + 'static {
    /// Upserts registry entries (JSON of [`crate::registry::NodeExport`]) this hub heard from.
    async fn publish_nodes(
        &self,
        hub: &str,
        nodes: Vec<(String, String, i64)>,
    ) -> Result<(), StoreError>;

    /// Entries other hubs wrote after `cursor`, and the cursor to ask from next.
    async fn nodes_since(&self, hub: &str, cursor: i64) -> Result<(Vec<String>, i64), StoreError>;

    async fn setting(&self, name: &str) -> Result<Option<String>, StoreError>;

    async fn put_setting(&self, name: &str, value: &str) -> Result<(), StoreError>;

    /// Every bundle: (name, sha256, published at, Unix ms).
    async fn bundle_index(&self) -> Result<Vec<(String, String, i64)>, StoreError>;

    async fn bundle_bytes(&self, name: &str) -> Result<Option<(String, Vec<u8>)>, StoreError>;

    async fn put_bundle(
        &self,
        name: &str,
        sha256: &str,
        bytes: &[u8],
        published_at: i64,
    ) -> Result<(), StoreError>;
}
