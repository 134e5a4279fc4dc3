//! Hub Data plane (8788) wire types: jobs, leases, results, and the admin path's answers.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ErrorDetail;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Accepted,
    InProgress,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Accepted,
        JobStatus::InProgress,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Accepted => "accepted",
            JobStatus::InProgress => "in_progress",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Finished for good: completed, failed (the dead set) or cancelled.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

impl std::str::FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown status {s:?}; expected accepted, in_progress, completed, failed or cancelled"
                )
            })
    }
}

/// `POST /v1/jobs` (and each item of a batch). Only `kind` is required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    #[serde(default = "default_queue")]
    pub queue: String,
    pub kind: String,
    #[serde(default)]
    pub payload: serde_json::Value,
    /// Higher first, then first in, first out.
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub required_capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Lease length in seconds; the hub's `SHERATAN_LEASE_TIMEOUT` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u32>,
    /// Not before this time.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub run_at: Option<OffsetDateTime>,
    /// Whether the submitter follows the result through `GET /v1/results?pending=1` (and
    /// acknowledges it). `false`: the result is kept with the job but never pending, so
    /// `results_pending` counts only results somebody will collect. Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_result: Option<bool>,
    /// Jobs sharing a key obey the queue's `key_concurrency` and `key_rate` together (one
    /// account, one site, one API key). 1 to 256 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// This job's retry backoff; fields left out take the queue's settings, then the hub's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<crate::queues::RetryPolicy>,
}

pub fn default_queue() -> String {
    "default".to_owned()
}

/// The answer to a submit: 202 for a new job, 200 for an idempotent repeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubmitResponse {
    pub job_id: String,
    pub status: JobStatus,
    /// The cached result of a completed job, on an idempotent repeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why the job may wait: no ONLINE node offers its kind and capabilities, or no node has
    /// leased from its queue lately. The job is accepted all the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// One queue in `GET /v1/queues`: its depth, and whether a node serves it (asked it for
/// jobs within the last 60 s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueView {
    pub queue: String,
    /// Accepted jobs waiting to be leased.
    pub depth: u64,
    pub served: bool,
    /// Seconds since a node last asked the queue for jobs; absent if none has since the hub
    /// started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_asked_s: Option<u64>,
    /// Jobs of the queue in progress.
    #[serde(default)]
    pub running: u64,
    /// The queue's settings, when it has any (`/admin/queues/{queue}/settings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<crate::queues::QueueSettings>,
}

/// `GET /v1/queues`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueList {
    pub queues: Vec<QueueView>,
}

/// `POST /v1/jobs/batch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBatch {
    pub jobs: Vec<SubmitJob>,
}

/// One item's outcome in a batch, in the order of the request. `code` is the HTTP status the
/// item would have had alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchOutcome {
    pub code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// The refusal, when `code` is not 2xx: as the error body's `error` would be alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchResponse {
    pub jobs: Vec<BatchOutcome>,
}

/// Why a job failed, as its executor reported it (or the hub, for a reaped lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobError {
    pub message: String,
    #[serde(default)]
    pub retryable: bool,
}

/// Who holds a job's lease, and until when. Never the lease id: that is a capability only the
/// node that took the lease sees (in its lease answer), so no reader of job views can extend
/// or complete another node's lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaseView {
    pub node_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobView {
    pub job_id: String,
    pub queue: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub priority: i32,
    pub required_capabilities: Vec<String>,
    pub idempotency_key: Option<String>,
    pub max_attempts: u32,
    pub timeout_s: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub run_at: OffsetDateTime,
    pub status: JobStatus,
    pub attempt: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub result: Option<serde_json::Value>,
    pub error: Option<JobError>,
    pub lease: Option<LeaseView>,
    /// The node that holds the job's lease, or held its last one (the node that ran it);
    /// `None` for a job never leased.
    #[serde(default)]
    pub node_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// The latest progress its node reported (docs/API.md, "Progress"); kept after it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<crate::progress::JobProgress>,
    /// Whether the submitter has acknowledged the finished job's result.
    pub result_acked: bool,
}

/// `GET /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    pub next_cursor: Option<String>,
}

/// `POST /v1/leases`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    pub node_id: String,
    #[serde(default = "default_queues")]
    pub queues: Vec<String>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default = "one")]
    pub max_jobs: u32,
    /// Long poll: wait up to this long for a job when none is ready (at most 30 000).
    #[serde(default)]
    pub wait_ms: u64,
}

fn default_queues() -> Vec<String> {
    vec![default_queue()]
}

fn one() -> u32 {
    1
}

/// One leased job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeasedJob {
    pub job_id: String,
    pub lease_id: String,
    pub queue: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub attempt: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub lease_expires_at: OffsetDateTime,
    /// The longest the job may run: a worker kills its handler then and reports a retryable
    /// `TIMEOUT` failure (absent from hubs before 2026-12-05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u32>,
    /// The W3C trace context to run the job in (docs/API.md, "Traces"): a handler's span is
    /// its child, and the result is sent with it as the `traceparent` header. Absent when the
    /// job has no trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// The answer to a lease. With no jobs, `defer_ms` > 0 says how long to wait before asking
/// again (the hub is saturated, or nothing is ready).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaseResponse {
    pub jobs: Vec<LeasedJob>,
    pub defer_ms: u64,
    /// Why an empty answer may stay empty (a lease offering no capabilities: every job
    /// requires its kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// `POST /v1/leases/watch`: a node's running leases, answered as soon as one of them is no
/// longer its to run (the job was cancelled, or the lease lost), or empty after `wait_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WatchRequest {
    /// At most [`MAX_WATCHED`].
    pub leases: Vec<WatchedLease>,
    #[serde(default)]
    pub wait_ms: u64,
}

/// One running lease, as its node knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WatchedLease {
    pub job_id: String,
    pub lease_id: String,
}

/// The most leases one watch names.
pub const MAX_WATCHED: usize = 256;

/// The leases of a watch that ended: stop their handlers and report nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WatchResponse {
    pub ended: Vec<String>,
}

/// `POST /v1/leases/{lease_id}/extend`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extend_s: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExtendResponse {
    pub lease_id: String,
    pub job_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub lease_expires_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
}

/// `POST /v1/results`, signed (see `headers::CONTENT_SHA256` and `headers::SIGNATURE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultRequest {
    pub job_id: String,
    pub lease_id: String,
    pub outcome: Outcome,
    #[serde(default)]
    pub result: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResultResponse {
    pub job_id: String,
    /// The job's status after the result: completed, failed, or accepted (a retry).
    pub status: JobStatus,
    /// True when this exact result had been recorded before (counted once).
    pub duplicate: bool,
}

/// `POST /v1/results/ack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    pub job_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AckResponse {
    pub acked: u64,
}

/// One finished job waiting for its submitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PendingResult {
    pub job_id: String,
    pub queue: String,
    pub kind: String,
    pub status: JobStatus,
    pub result: Option<serde_json::Value>,
    pub error: Option<JobError>,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
}

/// `GET /v1/results?pending=1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PendingResults {
    pub results: Vec<PendingResult>,
}

/// `POST /admin/queues/{q}/pause|resume|purge`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueAdminResponse {
    pub queue: String,
    pub paused: bool,
    /// Jobs removed by a purge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged: Option<u64>,
}

/// A duration as people write it on the command line and in query parameters: `90s`, `30m`,
/// `12h`, `7d`, in seconds; `None` for anything else, zero included.
pub fn duration_s(text: &str) -> Option<u64> {
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .and_then(|n| n.checked_mul(scale))
}

/// Seconds as [`duration_s`] reads them: `7d`, `12h`, `90s` (the largest unit that divides).
pub fn fmt_duration_s(seconds: u64) -> String {
    for (unit, scale) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if seconds >= scale && seconds.is_multiple_of(scale) {
            return format!("{}{unit}", seconds / scale);
        }
    }
    format!("{seconds}s")
}

/// Queue names: `[A-Za-z0-9._-]{1,64}`, like node ids.
pub fn validate_queue(name: &str) -> Result<(), String> {
    crate::ids::validate_name("queue", name, 64)
}

/// `?queue=&status=&limit=&cursor=` of `GET /v1/jobs` (and Core's `GET /api/jobs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default)]
    pub cursor: Option<String>,
    /// Only jobs of this kind.
    #[serde(default)]
    pub kind: Option<String>,
    /// Only jobs whose error message contains this text (any case).
    #[serde(default)]
    pub error: Option<String>,
    /// Only jobs that last changed at or after this time: RFC 3339, or a duration back from
    /// now (`90s`, `30m`, `1h`, `7d`).
    #[serde(default)]
    pub since: Option<String>,
}

/// `POST /admin/jobs/requeue` and `POST /admin/jobs/delete`: the finished jobs matching every
/// given filter, newest first, at most `limit`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkSelection {
    /// `failed` (the default) or `cancelled` (and, for a delete, `completed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339, or a duration back from now (`1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// At most this many (1–10,000, default 1,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only these jobs (whole ids, at most 1,000: a selection in the dashboard), of those that
    /// also match the status and the other filters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_ids: Option<Vec<String>>,
}

/// What a bulk requeue or delete did: how many jobs, and which.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BulkOutcome {
    pub count: u64,
    pub job_ids: Vec<String>,
}

/// `?pending=1&wait_ms=&limit=` of `GET /v1/results`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PendingQuery {
    #[serde(default)]
    pub pending: Option<String>,
    #[serde(default)]
    pub wait_ms: Option<u64>,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `POST /admin/token-rotation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotationRequest {
    pub next_token: String,
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
}

/// The answer of `POST /admin/token-rotation`: what an operator sees of a rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RotationStatus {
    pub active: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finalized_at: Option<OffsetDateTime>,
}
