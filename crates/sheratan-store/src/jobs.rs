//! The job domain: a validated job specification, the stored job, idempotency's request
//! fingerprint, and the retry backoff. Backends store these; the hub converts them to wire
//! types.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sheratan_proto::data::{JobError, JobStatus, JobView, LeaseView, SubmitJob};
use time::OffsetDateTime;
use uuid::Uuid;

/// Limits on what a job may carry.
pub const MAX_KIND_LEN: usize = 128;
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;
pub const MAX_CAPABILITIES: usize = 64;
pub const MAX_ATTEMPTS: u32 = 100;
pub const MAX_TIMEOUT_S: u32 = 7 * 24 * 3600;
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1_000_000..=1_000_000;

/// How long after a job's `timeout_s` has run out the hub ends its lease, whatever
/// extensions ask for. The node kills the handler at `timeout_s` and reports `TIMEOUT`
/// itself; the grace lets that report arrive first. Extensions prove the node alive, they
/// never lengthen the run.
pub const RUN_GRACE_MS: i64 = 5_000;

/// The latest a lease started at `started_ms` may be extended to.
pub fn run_deadline_ms(started_ms: i64, timeout_s: u32) -> i64 {
    started_ms
        .saturating_add(i64::from(timeout_s) * 1000)
        .saturating_add(RUN_GRACE_MS)
}

/// Whether a lease taken back at `expires_ms` had run into its run-time cap (its node kept
/// it alive until the cap ended it), rather than its node going quiet.
fn hit_cap(started_ms: i64, timeout_s: u32, expires_ms: i64) -> bool {
    expires_ms >= run_deadline_ms(started_ms, timeout_s)
}

/// Why a lease was taken back: it ran into its run-time cap, or its node went quiet; `last`
/// (attempt, max) when that was the job's last attempt and it fails.
pub fn reaped_message(
    node_id: &str,
    started_ms: i64,
    timeout_s: u32,
    expires_ms: i64,
    last: Option<(u32, u32)>,
) -> String {
    let timed_out = hit_cap(started_ms, timeout_s, expires_ms);
    match (timed_out, last) {
        (true, None) => format!(
            "TIMEOUT: the job ran longer than its timeout_s of {timeout_s} s on {node_id}; the hub ended its lease"
        ),
        (true, Some((attempt, max))) => format!(
            "TIMEOUT: the job ran longer than its timeout_s of {timeout_s} s on {node_id}; the hub ended its lease on attempt {attempt} of {max}; no attempts left"
        ),
        (false, None) => {
            format!("the lease held by {node_id} expired without a result or an extension")
        }
        (false, Some((attempt, max))) => {
            format!("the lease expired on attempt {attempt} of {max}; no attempts left")
        }
    }
}

/// Defaults the hub applies to fields a submitter leaves out.
#[derive(Debug, Clone, Copy)]
pub struct JobDefaults {
    pub max_attempts: u32,
    pub timeout_s: u32,
    /// The queue's retry backoff settings, if it has them.
    pub retry: sheratan_proto::queues::RetryPolicy,
}

impl Default for JobDefaults {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            timeout_s: 300,
            retry: Default::default(),
        }
    }
}

/// A job as submitted, validated, with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub job_id: Uuid,
    pub queue: String,
    pub kind: String,
    /// The payload as compact JSON text.
    pub payload: String,
    pub priority: i32,
    /// Sorted and without duplicates, so equal sets compare equal.
    pub required_capabilities: Vec<String>,
    pub idempotency_key: Option<String>,
    pub max_attempts: u32,
    pub timeout_s: u32,
    pub run_at: OffsetDateTime,
    /// SHA-256 of the canonical JSON of (queue, kind, payload), for idempotency.
    pub request_hash: [u8; 32],
    /// The submitter follows the result (`follow_result`, default true); otherwise the
    /// finished job is stored acknowledged, never among the pending results.
    pub follow: bool,
    /// Jobs of one key share the queue's per-key limits.
    pub concurrency_key: Option<String>,
    /// This job's retry backoff (its own, else its queue's); `None`: the hub's.
    pub retry_base_ms: Option<u64>,
    pub retry_max_ms: Option<u64>,
    /// The W3C `traceparent` the job carries to the node that runs it (validated by the hub).
    pub traceparent: Option<String>,
}

impl JobSpec {
    /// Validates a submitted job; the error names the field.
    pub fn from_wire(
        job: SubmitJob,
        defaults: JobDefaults,
        now: OffsetDateTime,
    ) -> Result<JobSpec, String> {
        sheratan_proto::data::validate_queue(&job.queue)?;
        if job.kind.is_empty()
            || job.kind.len() > MAX_KIND_LEN
            || job.kind.chars().any(char::is_control)
        {
            return Err(format!(
                "kind: must be 1 to {MAX_KIND_LEN} bytes without control characters"
            ));
        }
        if !PRIORITY_RANGE.contains(&job.priority) {
            return Err("priority: must be between -1000000 and 1000000".into());
        }
        if job.required_capabilities.len() > MAX_CAPABILITIES {
            return Err(format!(
                "required_capabilities: at most {MAX_CAPABILITIES} entries"
            ));
        }
        for (i, cap) in job.required_capabilities.iter().enumerate() {
            if cap.is_empty() || cap.len() > 128 || cap.chars().any(char::is_control) {
                return Err(format!(
                    "required_capabilities[{i}]: must be 1 to 128 bytes without control characters"
                ));
            }
        }
        if let Some(key) = &job.idempotency_key
            && (key.is_empty()
                || key.len() > MAX_IDEMPOTENCY_KEY_LEN
                || key.chars().any(char::is_control))
        {
            return Err(format!(
                "idempotency_key: must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes without control characters"
            ));
        }
        let max_attempts = job.max_attempts.unwrap_or(defaults.max_attempts);
        if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
            return Err(format!(
                "max_attempts: must be between 1 and {MAX_ATTEMPTS}"
            ));
        }
        let timeout_s = job.timeout_s.unwrap_or(defaults.timeout_s);
        if !(1..=MAX_TIMEOUT_S).contains(&timeout_s) {
            return Err(format!("timeout_s: must be between 1 and {MAX_TIMEOUT_S}"));
        }
        if let Some(key) = &job.concurrency_key {
            sheratan_proto::queues::validate_concurrency_key(key)?;
        }
        let own = job.retry.unwrap_or_default();
        own.validate("retry.")?;
        let retry = sheratan_proto::queues::RetryPolicy {
            base_ms: own.base_ms.or(defaults.retry.base_ms),
            max_ms: own.max_ms.or(defaults.retry.max_ms),
        };
        retry.validate("retry.")?;
        let mut caps = job.required_capabilities;
        caps.sort();
        caps.dedup();
        let request_hash = request_hash(&job.queue, &job.kind, &job.payload);
        Ok(JobSpec {
            job_id: Uuid::now_v7(),
            queue: job.queue,
            kind: job.kind,
            payload: job.payload.to_string(),
            priority: job.priority,
            required_capabilities: caps,
            idempotency_key: job.idempotency_key,
            max_attempts,
            timeout_s,
            run_at: job.run_at.unwrap_or(now).max(now),
            request_hash,
            follow: job.follow_result.unwrap_or(true),
            concurrency_key: job.concurrency_key,
            retry_base_ms: retry.base_ms,
            retry_max_ms: retry.max_ms,
            traceparent: None,
        })
    }
}

/// SHA-256 of the canonical JSON of `{"kind", "payload", "queue"}`: object keys sorted at
/// every level (serde_json's map is ordered), no insignificant whitespace. Two submits are
/// "the same" for idempotency exactly when these hashes are equal.
pub fn request_hash(queue: &str, kind: &str, payload: &serde_json::Value) -> [u8; 32] {
    let canonical =
        serde_json::json!({"queue": queue, "kind": kind, "payload": payload}).to_string();
    Sha256::digest(canonical.as_bytes()).into()
}

/// The lease a job is held by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub lease_id: Uuid,
    pub node_id: String,
    pub expires_at: OffsetDateTime,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub job_id: Uuid,
    pub queue: String,
    pub kind: String,
    pub payload: String,
    pub priority: i32,
    pub required_capabilities: Vec<String>,
    pub idempotency_key: Option<String>,
    pub max_attempts: u32,
    pub timeout_s: u32,
    pub run_at: OffsetDateTime,
    pub status: JobStatus,
    pub attempt: u32,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
    /// JSON text.
    pub result: Option<String>,
    pub error: Option<JobError>,
    /// The live lease while in progress; the last lease after a result (so a repeated result
    /// is recognised).
    pub lease: Option<Lease>,
    pub result_acked: bool,
    pub concurrency_key: Option<String>,
    /// JSON of the latest `JobProgress` its node reported.
    pub progress: Option<String>,
}

impl JobRecord {
    pub fn view(&self) -> JobView {
        JobView {
            job_id: self.job_id.to_string(),
            queue: self.queue.clone(),
            kind: self.kind.clone(),
            payload: parse_json(&self.payload),
            priority: self.priority,
            required_capabilities: self.required_capabilities.clone(),
            idempotency_key: self.idempotency_key.clone(),
            max_attempts: self.max_attempts,
            timeout_s: self.timeout_s,
            run_at: self.run_at,
            status: self.status,
            attempt: self.attempt,
            created_at: self.created_at,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
            result: self.result.as_deref().map(parse_json),
            error: self.error.clone(),
            lease: self
                .lease
                .as_ref()
                .filter(|_| self.status == JobStatus::InProgress)
                .map(|l| LeaseView {
                    node_id: l.node_id.clone(),
                    expires_at: l.expires_at,
                }),
            node_id: self.lease.as_ref().map(|l| l.node_id.clone()),
            concurrency_key: self.concurrency_key.clone(),
            progress: self
                .progress
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok()),
            result_acked: self.result_acked,
        }
    }
}

/// Stored JSON text back to a value. The text was produced by serializing a value, so it
/// parses; `null` covers a store that was edited by hand.
pub fn parse_json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

/// The cap of the retry backoff when neither the job nor its queue sets one.
pub const RETRY_CAP: Duration = Duration::from_secs(600);

/// The wait before retry number `attempt` (1-based: the wait after the first failure is
/// `base`): base × 2^(attempt−1), with `jitter` ∈ [−1, 1] scaling ±20 %, capped at `cap`.
pub fn retry_delay(base: Duration, cap: Duration, attempt: u32, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let raw = base.saturating_mul(1u32 << exp).min(cap);
    let factor = 1.0 + 0.2 * jitter.clamp(-1.0, 1.0);
    raw.mul_f64(factor).min(cap)
}

/// The backoff of a job: its own (or its queue's, fixed at submit) base and cap, else the
/// hub's base and [`RETRY_CAP`].
pub fn job_retry_delay(
    hub_base: Duration,
    base_ms: Option<u64>,
    max_ms: Option<u64>,
    attempt: u32,
    jitter: f64,
) -> Duration {
    let base = base_ms.map_or(hub_base, Duration::from_millis);
    let cap = max_ms.map_or(RETRY_CAP.max(base), Duration::from_millis);
    retry_delay(base, cap, attempt, jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(payload: serde_json::Value) -> SubmitJob {
        SubmitJob {
            queue: "default".into(),
            kind: "echo".into(),
            payload,
            priority: 0,
            required_capabilities: vec!["b".into(), "a".into(), "b".into()],
            idempotency_key: None,
            max_attempts: None,
            timeout_s: None,
            run_at: None,
            follow_result: None,
            concurrency_key: None,
            retry: None,
        }
    }

    #[test]
    fn canonical_hash_ignores_key_order_and_whitespace() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"x":1,"y":{"b":2,"a":[1,2]}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{ "y" : {"a":[1,2],"b":2}, "x":1 }"#).unwrap();
        assert_eq!(request_hash("q", "k", &a), request_hash("q", "k", &b));
        assert_ne!(request_hash("q", "k", &a), request_hash("q2", "k", &a));
        assert_ne!(request_hash("q", "k", &a), request_hash("q", "k2", &a));
        let c: serde_json::Value =
            serde_json::from_str(r#"{"x":2,"y":{"b":2,"a":[1,2]}}"#).unwrap();
        assert_ne!(request_hash("q", "k", &a), request_hash("q", "k", &c));
    }

    #[test]
    fn from_wire_applies_defaults_and_normalizes() {
        let now = OffsetDateTime::now_utc();
        let spec = JobSpec::from_wire(
            submit(serde_json::json!({"a": 1})),
            JobDefaults::default(),
            now,
        )
        .unwrap();
        assert_eq!(spec.required_capabilities, vec!["a", "b"]);
        assert_eq!(spec.max_attempts, 3);
        assert_eq!(spec.timeout_s, 300);
        assert_eq!(spec.run_at, now);
        assert_eq!(spec.job_id.get_version_num(), 7);
        let mut bad = submit(serde_json::Value::Null);
        bad.kind = String::new();
        assert!(
            JobSpec::from_wire(bad, JobDefaults::default(), now)
                .unwrap_err()
                .starts_with("kind")
        );
        let mut bad = submit(serde_json::Value::Null);
        bad.max_attempts = Some(0);
        assert!(
            JobSpec::from_wire(bad, JobDefaults::default(), now)
                .unwrap_err()
                .starts_with("max_attempts")
        );
        let mut bad = submit(serde_json::Value::Null);
        bad.queue = "a b".into();
        assert!(
            JobSpec::from_wire(bad, JobDefaults::default(), now)
                .unwrap_err()
                .starts_with("queue")
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        let base = Duration::from_millis(1000);
        let cap = RETRY_CAP;
        assert_eq!(retry_delay(base, cap, 1, 0.0), Duration::from_millis(1000));
        assert_eq!(retry_delay(base, cap, 2, 0.0), Duration::from_millis(2000));
        assert_eq!(retry_delay(base, cap, 3, 0.0), Duration::from_millis(4000));
        assert_eq!(retry_delay(base, cap, 3, 1.0), Duration::from_millis(4800));
        assert_eq!(retry_delay(base, cap, 3, -1.0), Duration::from_millis(3200));
        assert_eq!(retry_delay(base, cap, 40, 1.0), Duration::from_secs(600));
        // A job's own settings replace the hub's base and the cap.
        let own = job_retry_delay(base, Some(50), Some(120), 3, 0.0);
        assert_eq!(own, Duration::from_millis(120));
        assert_eq!(
            job_retry_delay(base, Some(50), None, 2, 0.0),
            Duration::from_millis(100)
        );
    }
}

/// How a job ends (completed, failed or cancelled), as a backend writes it.
#[derive(Debug, Clone, Copy)]
pub struct Ending<'a> {
    pub status: JobStatus,
    pub result: Option<&'a str>,
    pub error: Option<&'a JobError>,
    /// Acknowledged at once (a purge), or pending until its submitter acknowledges it.
    pub acked: bool,
    /// The lease whose result this is, so a repeat of it is recognised.
    pub result_lease: Option<Uuid>,
}

/// How a job goes back to `accepted` (a retry, a reaped lease, a requeue).
#[derive(Debug, Clone, Copy)]
pub struct Reaccept<'a> {
    pub run_at: i64,
    pub error: Option<&'a JobError>,
    /// A requeue starts over: attempts and the old result are cleared.
    pub reset_attempts: bool,
    pub result_lease: Option<Uuid>,
}
