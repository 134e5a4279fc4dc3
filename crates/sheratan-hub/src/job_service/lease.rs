//! Leases (validated orders, long polls woken by the store's ready signal) and extensions.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sheratan_proto::data::{ExtendRequest, ExtendResponse, LeaseRequest, LeaseResponse, LeasedJob};
use sheratan_proto::{EventKind, Plane};
use sheratan_store::jobs::parse_json;
use sheratan_store::{ExtendOutcome, LeaseOrder};
use tokio_util::sync::CancellationToken;

use super::{DEFER_MS, JobsError, MAX_JOBS_PER_LEASE, MAX_WAIT_MS, parse_id};
use crate::HubState;
use crate::audit::Event;
use crate::auth::Credential;

/// Validates a lease request into an order.
pub fn lease_order(req: &LeaseRequest) -> Result<LeaseOrder, JobsError> {
    sheratan_proto::ids::validate_node_id(&req.node_id).map_err(JobsError::Invalid)?;
    if req.queues.is_empty() || req.queues.len() > 64 {
        return Err(JobsError::invalid("queues: 1 to 64 queue names"));
    }
    for (i, q) in req.queues.iter().enumerate() {
        sheratan_proto::data::validate_queue(q)
            .map_err(|e| JobsError::invalid(format!("queues[{i}]: {e}")))?;
    }
    if req.capabilities.len() > 256 {
        return Err(JobsError::invalid("capabilities: at most 256 entries"));
    }
    if !(1..=MAX_JOBS_PER_LEASE).contains(&req.max_jobs) {
        return Err(JobsError::invalid(format!(
            "max_jobs: must be between 1 and {MAX_JOBS_PER_LEASE}"
        )));
    }
    if req.wait_ms > MAX_WAIT_MS {
        return Err(JobsError::invalid(format!(
            "wait_ms: at most {MAX_WAIT_MS}"
        )));
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

/// A job as a lease answer carries it, with a `sheratan.lease` span (a child of the job's
/// submit) whose context the node runs the job in.
fn leased(hub: &HubState, node_id: &str, j: sheratan_store::LeasedJob) -> LeasedJob {
    let tracer = &hub.config.tracer;
    if !tracer.enabled() {
        // Export off: the stored context (checked when it was submitted) goes on as it is.
        return wire_job(j.traceparent.clone(), j);
    }
    let mut span = tracer.start_from(
        "sheratan.lease",
        sheratan_trace::Kind::Server,
        j.traceparent.as_deref(),
    );
    span.attr("sheratan.job_id", j.job_id);
    span.attr("sheratan.queue", &j.queue);
    span.attr("sheratan.node_id", node_id);
    span.attr("sheratan.attempt", j.attempt);
    wire_job(span.traceparent(), j)
}

fn wire_job(traceparent: Option<String>, j: sheratan_store::LeasedJob) -> LeasedJob {
    LeasedJob {
        job_id: j.job_id.to_string(),
        lease_id: j.lease_id.to_string(),
        queue: j.queue,
        kind: j.kind,
        payload: parse_json(&j.payload),
        attempt: j.attempt,
        lease_expires_at: j.lease_expires_at,
        timeout_s: Some(j.timeout_s),
        traceparent,
    }
}

/// Said to a lease that offers nothing: since every job requires its kind, it gets no job.
pub(super) const NO_CAPABILITIES: &str = "this lease offers no capabilities, and every job requires its kind: list the kinds this node runs (and any other capabilities) in \"capabilities\"";

/// Leases jobs, waiting up to `wait_ms` for one to become ready. Woken by submissions,
/// retries, reaps and resumed queues, never by polling.
pub async fn lease(
    hub: &HubState,
    order: LeaseOrder,
    wait_ms: u64,
    caller_ip: IpAddr,
    stopping: &CancellationToken,
) -> Result<LeaseResponse, JobsError> {
    hub.jobs.served.asked(&order.queues, &order.capabilities);
    let asked = tokio::time::Instant::now();
    let waited = |outcome: &str| {
        hub.jobs
            .lease_wait
            .0
            .observe(outcome, asked.elapsed().as_secs_f64())
    };
    let deadline = asked + Duration::from_millis(wait_ms);
    let mut ready = hub.store.ready_signal();
    loop {
        ready.borrow_and_update();
        let grant = hub.store.lease(order.clone()).await?;
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
                warning: None,
            });
        }
        if !grant.jobs.is_empty() {
            waited("jobs");
            hub.jobs
                .leased
                .fetch_add(grant.jobs.len() as u64, Ordering::Relaxed);
            let jobs = grant
                .jobs
                .into_iter()
                .map(|j| leased(hub, &order.node_id, j))
                .collect();
            return Ok(LeaseResponse {
                jobs,
                defer_ms: 0,
                warning: None,
            });
        }
        let idle = LeaseResponse {
            jobs: Vec::new(),
            // A caller that did not wait is asked not to ask again at once.
            defer_ms: if wait_ms == 0 { DEFER_MS } else { 0 },
            warning: order
                .capabilities
                .is_empty()
                .then(|| NO_CAPABILITIES.to_owned()),
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = stopping.cancelled() => {}
            changed = ready.changed() => {
                if changed.is_ok() {
                    continue;
                }
            }
        }
        waited("empty");
        return Ok(idle);
    }
}

/// Extends a held lease by `extend_s` (or the job's `timeout_s`).
pub async fn extend(
    hub: &HubState,
    lease_id: &str,
    req: ExtendRequest,
    caller: (&Credential, IpAddr),
) -> Result<ExtendResponse, JobsError> {
    let credential = caller.0;
    let lease_id = parse_id("lease id", lease_id)?;
    if req
        .extend_s
        .is_some_and(|s| s == 0 || s > sheratan_store::jobs::MAX_TIMEOUT_S)
    {
        return Err(JobsError::invalid(format!(
            "extend_s: must be between 1 and {}",
            sheratan_store::jobs::MAX_TIMEOUT_S
        )));
    }
    let rule = hub.credentials.holder_rule(credential);
    match hub.store.extend(lease_id, req.extend_s, rule).await? {
        ExtendOutcome::Extended { job_id, expires_at } => Ok(ExtendResponse {
            lease_id: lease_id.to_string(),
            job_id: job_id.to_string(),
            lease_expires_at: expires_at,
        }),
        ExtendOutcome::NotHeld => {
            lease_mismatch(hub, caller, "extend");
            Err(JobsError::LeaseNotHeld(
                "the lease is no longer held".into(),
            ))
        }
        ExtendOutcome::WrongHolder { holder } => {
            Err(wrong_holder(hub, caller, &holder, "extend its lease"))
        }
    }
}

/// A request on a lease held by a node with a credential of its own, from another credential:
/// audited as `IDENTITY_MISMATCH` naming both, counted per role, refused with `FORBIDDEN`.
pub(super) fn wrong_holder(
    hub: &HubState,
    (credential, caller_ip): (&Credential, IpAddr),
    holder: &str,
    action: &str,
) -> JobsError {
    hub.audit.emit(
        Event::new(EventKind::IdentityMismatch, Plane::Data)
            .remote(caller_ip)
            .node(holder)
            .by(credential)
            .detail(serde_json::json!({ "action": action })),
    );
    if let Some(record) = credential.named() {
        hub.role_refusals.count(record.role);
    }
    JobsError::WrongHolder(format!(
        "the lease is held by node {holder:?}, which has a node credential: only that credential may {action} ({} may not)",
        credential.label()
    ))
}

/// A result or extension named a lease that is not the job's current one. One from a worker
/// whose lease was reaped is normal; many from one source are someone trying lease ids, which
/// the audit log shows (folded, like every event) and the watcher alerts on.
pub(super) fn lease_mismatch(
    hub: &HubState,
    (credential, caller_ip): (&Credential, IpAddr),
    route: &'static str,
) {
    hub.audit.emit(
        Event::new(EventKind::LeaseMismatch, Plane::Data)
            .remote(caller_ip)
            .by(credential)
            .detail(serde_json::json!({ "route": route })),
    );
}
