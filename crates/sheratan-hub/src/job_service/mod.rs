//! The data plane's service over the `Store` trait: submits and their outcomes, long-poll
//! leasing and extensions, results (integrity, recording, the pending follow), reads and the
//! job side of the admin path, the reaper loop, why a job may wait (`waiting`), and the job
//! counters behind `/metrics`. It
//! knows the contract's error codes (`sheratan-proto`) but not HTTP: its [`JobsError`] becomes
//! the HTTP answer in `http/job_routes.rs`.

mod admin;
mod grants;
mod lease;
mod progress;
mod queue_settings;
mod reaper;
mod results;
mod retention;
pub mod stream;
mod submit;
mod waiting;
mod watch;

use std::sync::atomic::{AtomicU64, Ordering};

use sheratan_proto::data::BatchOutcome;
use sheratan_proto::{ErrorCode, ErrorDetail};
use sheratan_store::StoreError;

pub use admin::{BulkAction, QueueAction, bulk, cancel, get, list, queue_admin, requeue};
pub use grants::grants;
pub use lease::{extend, lease, lease_order};
pub use progress::{ProgressBoard, report as report_progress, run_flusher as run_progress_flusher};
pub use queue_settings::{SettingsCache, get_settings, put_settings};
#[cfg(test)]
pub(crate) use reaper::reap_once;
pub use reaper::run_reaper;
#[cfg(feature = "fuzzing")]
pub use results::verify_result;
pub use results::{IntegrityFailure, ResultHeaders, ack, finish, pending, verify};
pub use retention::{RetentionState, run_retention};
pub use submit::{Origin, Submitted, decode_batch, submit};
pub use waiting::queues;
pub use watch::watch;

use sheratan_runtime::metrics::{Family, Kind};

/// Longest long poll a lease or a results follow may ask for.
pub const MAX_WAIT_MS: u64 = 30_000;
/// Most jobs one lease call may take.
pub const MAX_JOBS_PER_LEASE: u32 = 100;
/// Most items in one batch submit.
pub const MAX_BATCH: usize = 1000;
/// How long a saturated or idle caller is asked to wait before asking again.
const DEFER_MS: u64 = 1000;

/// Why the service refused or failed a request. Each maps to one code of the contract.
#[derive(Debug)]
pub enum JobsError {
    /// A field or parameter is wrong; the message names it.
    Invalid(String),
    /// A field is larger than its limit; the message names it.
    TooLarge(String),
    NotFound(String),
    /// A name that is taken (a schedule's); the message names it.
    Taken(String),
    /// A piece of a job id that names more than one job; the message lists them.
    Ambiguous(String),
    /// The idempotency key belongs to another request.
    Collision {
        job_id: String,
    },
    /// The hub holds as many queued jobs as it may.
    QueueFull {
        depth: u64,
        retry_after_s: u64,
    },
    /// The named lease is not the job's current one.
    LeaseNotHeld(String),
    /// The lease is held by a node with a credential of its own; the message names it.
    WrongHolder(String),
    /// The caller's credential may not do this (a worker stream's); the message says what.
    Forbidden(String),
    Integrity(IntegrityFailure),
    Store(StoreError),
}

impl From<StoreError> for JobsError {
    fn from(err: StoreError) -> Self {
        JobsError::Store(err)
    }
}

impl JobsError {
    pub fn invalid(message: impl Into<String>) -> Self {
        JobsError::Invalid(message.into())
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            JobsError::Invalid(_) | JobsError::Ambiguous(_) => ErrorCode::InvalidRequest,
            JobsError::TooLarge(_) => ErrorCode::PayloadTooLarge,
            JobsError::NotFound(_) => ErrorCode::NotFound,
            JobsError::Taken(_) => ErrorCode::Conflict,
            JobsError::Collision { .. } => ErrorCode::IdempotencyKeyCollision,
            JobsError::QueueFull { .. } => ErrorCode::BackpressureDrop,
            JobsError::LeaseNotHeld(_) => ErrorCode::LeaseExpired,
            JobsError::WrongHolder(_) | JobsError::Forbidden(_) => ErrorCode::Forbidden,
            JobsError::Integrity(_) => ErrorCode::ResultIntegrityFail,
            JobsError::Store(StoreError::Unavailable(_)) => ErrorCode::Unavailable,
            JobsError::Store(StoreError::Internal(_)) => ErrorCode::Internal,
        }
    }

    /// What the client is told (never a store's internal detail).
    pub fn message(&self) -> String {
        match self {
            JobsError::Invalid(m)
            | JobsError::TooLarge(m)
            | JobsError::NotFound(m)
            | JobsError::Taken(m)
            | JobsError::Ambiguous(m)
            | JobsError::LeaseNotHeld(m)
            | JobsError::WrongHolder(m)
            | JobsError::Forbidden(m) => {
                m.clone()
            }
            JobsError::Collision { job_id } => format!(
                "the idempotency key was used for job {job_id} with a different queue, kind or payload"
            ),
            JobsError::QueueFull { depth, .. } => format!(
                "the hub holds {depth} queued jobs, its limit (SHERATAN_MAX_QUEUE_DEPTH); the job was not accepted"
            ),
            JobsError::Integrity(failure) => {
                format!("the result was refused: {}", failure.reason())
            }
            JobsError::Store(StoreError::Unavailable(_)) => "the job store cannot take writes right now (disk full or read-only, or the database down); nothing committed was lost".into(),
            JobsError::Store(StoreError::Internal(_)) => "internal error".into(),
        }
    }

    /// What the client should do.
    pub fn hint(&self) -> &'static str {
        match self {
            JobsError::Invalid(_) => {
                "fix the request as the message says; docs/API.md lists the routes and the wire rules"
            }
            JobsError::NotFound(_) => "",
            JobsError::Taken(_) => {
                "choose another name, or change the existing one with PATCH (sheratan schedule pause|resume, or delete it first)"
            }
            JobsError::TooLarge(_) => "send less at a time, as the message says",
            JobsError::Ambiguous(_) => {
                "give more characters of the id (its end is random, its start is the time it was made), or the whole id"
            }
            JobsError::Collision { .. } => {
                "use a new key for a different request, or send exactly the same request to get the existing job"
            }
            JobsError::QueueFull { .. } => {
                "retry after the Retry-After delay; add workers or raise SHERATAN_MAX_QUEUE_DEPTH"
            }
            JobsError::LeaseNotHeld(_) => {
                "stop working on this job: its lease expired (it may run elsewhere) or it was cancelled; lease again"
            }
            JobsError::Forbidden(_) => {
                "docs/SECURITY.md lists what each role may do; an admin creates a credential with the role needed (sheratan token create)"
            }
            JobsError::WrongHolder(_) => {
                "a node reports for and extends its own leases only, with its own credential (SHERATAN_HUB_TOKEN = its secret)"
            }
            JobsError::Integrity(_) => {
                "send X-Sheratan-Content-Sha256: <hex sha256 of the raw body> and X-Sheratan-Signature: sha256=<hex HMAC-SHA256(token, raw body)>, signed with the token this request authenticates with"
            }
            JobsError::Store(StoreError::Unavailable(_)) => {
                "retry with backoff; operators: check the store (SQLite: the disk's space, permissions, read-only mount; PostgreSQL: that the database is up and reachable, see the hub's log); the hub recovers on its own"
            }
            JobsError::Store(StoreError::Internal(_)) => "the hub logged the cause; see its log",
        }
    }

    /// Seconds a client should wait before trying again, where that is the answer.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            JobsError::QueueFull { retry_after_s, .. } => Some(*retry_after_s),
            JobsError::Store(StoreError::Unavailable(_)) => Some(1),
            _ => None,
        }
    }

    /// What only the logs may see.
    pub fn internal(&self) -> Option<String> {
        match self {
            JobsError::Store(StoreError::Unavailable(d) | StoreError::Internal(d)) => {
                Some(d.clone())
            }
            _ => None,
        }
    }

    /// As one item of a batch answer.
    pub fn into_outcome(self) -> BatchOutcome {
        if let Some(internal) = self.internal() {
            tracing::error!(code = %self.code(), error = %internal, "a batch item failed");
        }
        BatchOutcome {
            code: self.code().http_status(),
            job_id: None,
            status: None,
            result: None,
            warning: None,
            error: Some(ErrorDetail {
                code: self.code(),
                message: self.message(),
                hint: self.hint().into(),
            }),
        }
    }
}

/// Counters of what the data plane did, for `/metrics`.
#[derive(Debug, Default)]
pub struct JobCounters {
    pub submitted: AtomicU64,
    pub leased: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub retried: AtomicU64,
    pub reaped: AtomicU64,
    pub duplicates: AtomicU64,
    /// Worker streams open now.
    pub streams: AtomicU64,
    /// Stream frames answered with an error frame for being wrong in themselves.
    pub stream_refusals: AtomicU64,
    /// Worker stream frames from arrival to answer, by frame type.
    pub stream_frames: StreamFrames,
    /// Which queues nodes ask for jobs, and when they last did.
    pub served: waiting::ServedQueues,
    /// How long lease calls waited for a job, by whether they got one (`jobs`, `empty`).
    pub lease_wait: LeaseWait,
    /// Every request's duration on this hub's two planes, by route (`METHOD /path/{param}`).
    pub http: HttpTimes,
}

/// [`JobCounters::http`]: room for every route of both planes (about 45 with their HEADs).
#[derive(Debug)]
pub struct HttpTimes(pub std::sync::Arc<sheratan_histogram::ByLabel>);

impl Default for HttpTimes {
    fn default() -> Self {
        Self(std::sync::Arc::new(sheratan_histogram::ByLabel::new(
            sheratan_histogram::LATENCY_SECONDS,
            128,
        )))
    }
}

/// [`JobCounters::stream_frames`]: one series per frame type that is answered.
#[derive(Debug)]
pub struct StreamFrames(pub sheratan_histogram::ByLabel);

impl Default for StreamFrames {
    fn default() -> Self {
        Self(sheratan_histogram::ByLabel::new(
            sheratan_histogram::LATENCY_SECONDS,
            4,
        ))
    }
}

/// [`JobCounters::lease_wait`]: two series, no more.
#[derive(Debug)]
pub struct LeaseWait(pub sheratan_histogram::ByLabel);

impl Default for LeaseWait {
    fn default() -> Self {
        Self(sheratan_histogram::ByLabel::new(
            sheratan_histogram::LATENCY_SECONDS,
            2,
        ))
    }
}

impl JobCounters {
    pub fn families(&self) -> Family {
        let mut f = Family::new(
            "sheratan_jobs_total",
            "Job lifecycle events on this hub, by event.",
            Kind::Counter,
        );
        for (name, value) in [
            ("submitted", &self.submitted),
            ("leased", &self.leased),
            ("completed", &self.completed),
            ("failed", &self.failed),
            ("retried", &self.retried),
            ("reaped", &self.reaped),
            ("duplicate_result", &self.duplicates),
        ] {
            f = f.sample(
                vec![("event", name.to_owned())],
                value.load(Ordering::Relaxed) as f64,
                format!("jobs.{name}"),
            );
        }
        f
    }
}

/// A job id (or lease id) from a request, or the 400 naming the field.
pub fn parse_id(field: &str, text: &str) -> Result<uuid::Uuid, JobsError> {
    sheratan_proto::ids::parse_uuid(field, text).map_err(JobsError::Invalid)
}
