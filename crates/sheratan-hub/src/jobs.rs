//! The data plane's service logic over the `Store` trait: submit outcomes to answers and
//! events, long-poll leasing, result integrity (content hash and HMAC signature), the reaper
//! loop, and the job counters behind `/metrics`. HTTP handlers stay thin over these.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sheratan_proto::data::{
    BatchOutcome, JobStatus, LeaseRequest, LeaseResponse, LeasedJob, SubmitJob, SubmitResponse,
};
use sheratan_proto::{ErrorBody, ErrorCode, EventKind, Plane};
use sheratan_store::jobs::parse_json;
use sheratan_store::{JobSpec, LeaseOrder, StoreError, SubmitOutcome};
use tokio_util::sync::CancellationToken;

use crate::HubState;
use crate::audit::Event;
use crate::auth::{Credential, Secret};
use crate::http::ApiError;
use crate::metrics::{Family, Kind};

/// Longest long poll a lease or a results follow may ask for.
pub const MAX_WAIT_MS: u64 = 30_000;
/// Most jobs one lease call may take.
pub const MAX_JOBS_PER_LEASE: u32 = 100;
/// Most items in one batch submit.
pub const MAX_BATCH: usize = 1000;
/// How long a saturated or idle caller is asked to wait before asking again.
const DEFER_MS: u64 = 1000;

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

/// A store failure as the client sees it: 503 for what an operator can fix, 500 otherwise.
pub fn store_error(err: StoreError) -> ApiError {
    match err {
        StoreError::Unavailable(detail) => {
            let mut e = ApiError::unavailable(
                "the job store cannot take writes right now (disk full or read-only, or the database down); nothing committed was lost",
                detail,
            );
            e.hint = "retry with backoff; operators: check the store (SQLite: the disk's space, permissions, read-only mount; PostgreSQL: that the database is up and reachable, see the hub's log); the hub recovers on its own".into();
            e.retry_after_s = Some(1);
            e
        }
        StoreError::Internal(detail) => ApiError::internal(detail),
    }
}

/// The answer to one submitted job: its HTTP status and body, or an error.
pub enum Submitted {
    Created(SubmitResponse),
    Existing(SubmitResponse),
    Refused(ApiError),
}

impl Submitted {
    /// As one item of a batch answer.
    pub fn into_outcome(self) -> BatchOutcome {
        let (code, r) = match self {
            Submitted::Created(r) => (202, r),
            Submitted::Existing(r) => (200, r),
            Submitted::Refused(e) => return refused(e),
        };
        BatchOutcome {
            code,
            job_id: Some(r.job_id),
            status: Some(r.status),
            result: r.result,
            error: None,
        }
    }
}

/// An item of a batch that could not be submitted.
pub fn refused(e: ApiError) -> BatchOutcome {
    BatchOutcome {
        code: e.code.http_status(),
        job_id: None,
        status: None,
        result: None,
        error: Some(ErrorBody {
            error: sheratan_proto::ErrorDetail {
                code: e.code,
                message: e.message,
                hint: e.hint,
            },
        }),
    }
}

/// Validates and submits jobs; answers in order. Validation failures do not stop the others.
pub async fn submit(
    hub: &HubState,
    jobs: Vec<Result<SubmitJob, ApiError>>,
    plane: Plane,
    caller_ip: std::net::IpAddr,
) -> Result<Vec<Submitted>, ApiError> {
    let now = hub.clock.now();
    let mut answers: Vec<Option<Submitted>> = Vec::with_capacity(jobs.len());
    let mut specs = Vec::new();
    let mut slots = Vec::new();
    for (i, job) in jobs.into_iter().enumerate() {
        match job.and_then(|j| {
            JobSpec::from_wire(j, hub.config.job_defaults, now).map_err(ApiError::invalid)
        }) {
            Ok(spec) => {
                slots.push((i, spec.queue.clone()));
                specs.push(spec);
                answers.push(None);
            }
            Err(e) => answers.push(Some(Submitted::Refused(e))),
        }
    }
    if !specs.is_empty() {
        let outcomes = hub.store.submit(specs).await.map_err(store_error)?;
        for ((i, queue), outcome) in slots.into_iter().zip(outcomes) {
            answers[i] = Some(answer_submit(hub, outcome, &queue, plane, caller_ip));
        }
    }
    Ok(answers
        .into_iter()
        .map(|a| a.expect("every slot is answered"))
        .collect())
}

fn answer_submit(
    hub: &HubState,
    outcome: SubmitOutcome,
    queue: &str,
    plane: Plane,
    caller_ip: std::net::IpAddr,
) -> Submitted {
    match outcome {
        SubmitOutcome::Created { job_id } => {
            hub.jobs.submitted.fetch_add(1, Ordering::Relaxed);
            Submitted::Created(SubmitResponse {
                job_id: job_id.to_string(),
                status: JobStatus::Accepted,
                result: None,
            })
        }
        SubmitOutcome::Existing {
            job_id,
            status,
            result,
        } => Submitted::Existing(SubmitResponse {
            job_id: job_id.to_string(),
            status,
            result: result.as_deref().map(parse_json),
        }),
        SubmitOutcome::Collision { job_id } => {
            hub.audit.emit(
                Event::new(EventKind::IdempotencyKeyCollision, plane)
                    .remote(caller_ip)
                    .detail(serde_json::json!({ "queue": queue })),
            );
            Submitted::Refused(ApiError::new(
                ErrorCode::IdempotencyKeyCollision,
                format!(
                    "the idempotency key was used for job {job_id} with a different queue, kind or payload"
                ),
                "use a new key for a different request, or send exactly the same request to get the existing job",
            ))
        }
        SubmitOutcome::QueueFull { depth } => {
            hub.audit.emit(
                Event::new(EventKind::BackpressureDrop, plane)
                    .remote(caller_ip)
                    .detail(serde_json::json!({ "queue": queue })),
            );
            let mut e = ApiError::new(
                ErrorCode::BackpressureDrop,
                format!(
                    "the hub holds {depth} queued jobs, its limit (SHERATAN_MAX_QUEUE_DEPTH); the job was not accepted"
                ),
                "retry after the Retry-After delay; add workers or raise SHERATAN_MAX_QUEUE_DEPTH",
            );
            e.retry_after_s = Some(hub.config.backpressure_retry_after_s);
            Submitted::Refused(e)
        }
    }
}

/// Validates a lease request into an order.
pub fn lease_order(req: &LeaseRequest) -> Result<LeaseOrder, ApiError> {
    sheratan_proto::ids::validate_node_id(&req.node_id).map_err(ApiError::invalid)?;
    if req.queues.is_empty() || req.queues.len() > 64 {
        return Err(ApiError::invalid("queues: 1 to 64 queue names"));
    }
    for (i, q) in req.queues.iter().enumerate() {
        sheratan_proto::data::validate_queue(q)
            .map_err(|e| ApiError::invalid(format!("queues[{i}]: {e}")))?;
    }
    if req.capabilities.len() > 256 {
        return Err(ApiError::invalid("capabilities: at most 256 entries"));
    }
    if !(1..=MAX_JOBS_PER_LEASE).contains(&req.max_jobs) {
        return Err(ApiError::invalid(format!(
            "max_jobs: must be between 1 and {MAX_JOBS_PER_LEASE}"
        )));
    }
    if req.wait_ms > MAX_WAIT_MS {
        return Err(ApiError::invalid(format!("wait_ms: at most {MAX_WAIT_MS}")));
    }
    let mut caps = req.capabilities.clone();
    caps.sort();
    caps.dedup();
    Ok(LeaseOrder {
        node_id: req.node_id.clone(),
        queues: req.queues.clone(),
        capabilities: caps,
        max_jobs: req.max_jobs,
    })
}

/// Leases jobs, waiting up to `wait_ms` for one to become ready. Woken by submissions,
/// retries, reaps and resumed queues, never by polling.
pub async fn lease(
    hub: &HubState,
    order: LeaseOrder,
    wait_ms: u64,
    caller_ip: std::net::IpAddr,
    stopping: &CancellationToken,
) -> Result<LeaseResponse, ApiError> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    let mut ready = hub.store.ready_signal();
    loop {
        ready.borrow_and_update();
        let grant = hub.store.lease(order.clone()).await.map_err(store_error)?;
        if grant.saturated {
            hub.audit.emit(
                Event::new(EventKind::InflightSaturated, Plane::Data)
                    .remote(caller_ip)
                    .node(&order.node_id)
                    .detail(serde_json::json!({ "limit": "SHERATAN_MAX_INFLIGHT" })),
            );
            return Ok(LeaseResponse {
                jobs: Vec::new(),
                defer_ms: DEFER_MS,
            });
        }
        if !grant.jobs.is_empty() {
            hub.jobs
                .leased
                .fetch_add(grant.jobs.len() as u64, Ordering::Relaxed);
            return Ok(LeaseResponse {
                jobs: grant
                    .jobs
                    .into_iter()
                    .map(|j| LeasedJob {
                        job_id: j.job_id.to_string(),
                        lease_id: j.lease_id.to_string(),
                        queue: j.queue,
                        kind: j.kind,
                        payload: parse_json(&j.payload),
                        attempt: j.attempt,
                        lease_expires_at: j.lease_expires_at,
                    })
                    .collect(),
                defer_ms: 0,
            });
        }
        let idle = LeaseResponse {
            jobs: Vec::new(),
            // A caller that did not wait is asked not to ask again at once.
            defer_ms: if wait_ms == 0 { DEFER_MS } else { 0 },
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return Ok(idle),
            () = stopping.cancelled() => return Ok(idle),
            changed = ready.changed() => {
                if changed.is_err() {
                    return Ok(idle);
                }
            }
        }
    }
}

/// Why a result's integrity check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityFailure {
    MissingHash,
    HashMismatch,
    MissingSignature,
    BadSignature,
}

impl IntegrityFailure {
    pub fn reason(self) -> &'static str {
        match self {
            IntegrityFailure::MissingHash => "missing X-Sheratan-Content-Sha256",
            IntegrityFailure::HashMismatch => "X-Sheratan-Content-Sha256 does not match the body",
            IntegrityFailure::MissingSignature => "missing X-Sheratan-Signature",
            IntegrityFailure::BadSignature => {
                "X-Sheratan-Signature does not match the body and token"
            }
        }
    }
}

/// Checks a result body against its content hash and its HMAC-SHA256 signature made with the
/// token that authenticated the request. With authentication disabled there is no shared
/// secret to check, so only the content hash is required.
pub fn verify_result(
    content_sha256: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    key: Option<&Secret>,
) -> Result<(), IntegrityFailure> {
    let claimed = content_sha256.ok_or(IntegrityFailure::MissingHash)?;
    let actual = hex::encode(Sha256::digest(body));
    if !claimed.trim().eq_ignore_ascii_case(&actual) {
        return Err(IntegrityFailure::HashMismatch);
    }
    let Some(key) = key else {
        return Ok(());
    };
    let signature = signature.ok_or(IntegrityFailure::MissingSignature)?;
    let hex_sig = signature
        .trim()
        .strip_prefix("sha256=")
        .ok_or(IntegrityFailure::BadSignature)?;
    let bytes = hex::decode(hex_sig).map_err(|_| IntegrityFailure::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&bytes)
        .map_err(|_| IntegrityFailure::BadSignature)
}

/// The key a caller's result must be signed with: the token it authenticated with.
pub fn signing_key(hub: &HubState, credential: Credential) -> Option<Secret> {
    match credential {
        Credential::Unchecked => None,
        other => Some(hub.tokens.secret_for(other)),
    }
}

/// Reaps expired leases and promotes delayed jobs every `interval`; forgets idempotency keys
/// older than the TTL once a minute. Runs in the process that serves the data plane.
pub async fn run_reaper(hub: Arc<HubState>, interval: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_expiry = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match hub.store.tick().await {
            Ok(report) => report_reaped(&hub, report.reaped),
            Err(err) => tracing::warn!(%err, "the lease reaper could not run; will retry"),
        }
        if last_expiry.elapsed() >= Duration::from_secs(60) {
            last_expiry = tokio::time::Instant::now();
            let ttl =
                time::Duration::try_from(hub.config.idempotency_ttl).unwrap_or(time::Duration::DAY);
            match hub
                .store
                .expire_idempotency_keys(hub.clock.now() - ttl)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::debug!(keys = n, "forgot expired idempotency keys"),
                Err(err) => tracing::warn!(%err, "cannot expire idempotency keys"),
            }
        }
    }
}

/// One LEASE_REAP event per node and tick, so a worker that dies holding 100 leases makes one
/// audit line, not 100.
fn report_reaped(hub: &HubState, reaped: Vec<sheratan_store::Reaped>) {
    if reaped.is_empty() {
        return;
    }
    hub.jobs
        .reaped
        .fetch_add(reaped.len() as u64, Ordering::Relaxed);
    let mut by_node: std::collections::BTreeMap<String, Vec<&sheratan_store::Reaped>> =
        Default::default();
    for r in &reaped {
        by_node.entry(r.node_id.clone()).or_default().push(r);
    }
    for (node, jobs) in by_node {
        let failed = jobs
            .iter()
            .filter(|r| r.status == JobStatus::Failed)
            .count();
        hub.jobs.failed.fetch_add(failed as u64, Ordering::Relaxed);
        let sample: Vec<String> = jobs.iter().take(10).map(|r| r.job_id.to_string()).collect();
        hub.audit.emit(
            Event::new(EventKind::LeaseReap, Plane::Data)
                .node(node.clone())
                .detail(serde_json::json!({
                    "jobs": jobs.len(),
                    "requeued": jobs.len() - failed,
                    "failed": failed,
                    "job_ids": sample,
                })),
        );
        tracing::warn!(node_id = %node, jobs = jobs.len(), failed, "LEASE_REAP: leases expired without a result");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_round_trip_and_detect_tampering() {
        use sheratan_client::sign_result as sign;
        let body = br#"{"job_id":"x","lease_id":"y","outcome":"success","result":1}"#;
        let (hash, sig) = sign(body, "tok-0123456789abcdef");
        let key = Secret::new("tok-0123456789abcdef");
        assert_eq!(
            verify_result(Some(&hash), Some(&sig), body, Some(&key)),
            Ok(())
        );
        assert_eq!(
            verify_result(Some(&hash.to_uppercase()), Some(&sig), body, Some(&key)),
            Ok(())
        );
        assert_eq!(
            verify_result(None, Some(&sig), body, Some(&key)),
            Err(IntegrityFailure::MissingHash)
        );
        assert_eq!(
            verify_result(Some(&hash), None, body, Some(&key)),
            Err(IntegrityFailure::MissingSignature)
        );
        assert_eq!(
            verify_result(Some(&hash), Some(&sig), b"tampered", Some(&key)),
            Err(IntegrityFailure::HashMismatch)
        );
        let other = Secret::new("another-token-0123456789");
        assert_eq!(
            verify_result(Some(&hash), Some(&sig), body, Some(&other)),
            Err(IntegrityFailure::BadSignature)
        );
        assert_eq!(
            verify_result(Some(&hash), Some("sha256=zz"), body, Some(&key)),
            Err(IntegrityFailure::BadSignature)
        );
        assert_eq!(
            verify_result(Some(&hash), Some(&sig[7..]), body, Some(&key)),
            Err(IntegrityFailure::BadSignature)
        );
        // Without auth only the hash is checked.
        assert_eq!(verify_result(Some(&hash), None, body, None), Ok(()));
    }
}
