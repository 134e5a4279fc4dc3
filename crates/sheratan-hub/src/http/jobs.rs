//! Hub Data plane job routes (docs/API.md, "Data plane"): submit, batch, get, list, cancel, lease, extend,
//! results, acknowledgements, and the job side of the admin path.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sheratan_proto::data::{
    AckRequest, AckResponse, BatchResponse, ExtendRequest, ExtendResponse, JobList, JobStatus,
    JobView, JobsQuery, LeaseRequest, LeaseResponse, PendingQuery, PendingResult, PendingResults,
    QueueAdminResponse, ResultRequest, ResultResponse, SubmitBatch, SubmitJob,
};
use sheratan_proto::{ErrorCode, EventKind};
use sheratan_store::jobs::parse_json;
use sheratan_store::{ExtendOutcome, FinishOutcome, ListFilter, ResultReport};
use uuid::Uuid;

use super::control::segment;
use super::data::Admin;
use super::extract::{Caller, JsonBody, QueryParams, parse_json as parse_body, read_body};
use super::{ApiError, PlaneState};
use crate::audit::Event;
use crate::jobs::{self as svc, Submitted, store_error};
use sheratan_runtime::edge::RawBody;

pub(super) fn routes() -> Router<PlaneState> {
    Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/batch", post(submit_batch))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/leases", post(lease))
        .route("/v1/leases/{lease_id}/extend", post(extend))
        .route("/v1/results", post(result).get(pending))
        .route("/v1/results/ack", post(ack))
        .route("/admin/jobs/{id}/requeue", post(requeue))
        .route("/admin/queues/{queue}/{action}", post(queue_admin))
}

fn job_id(path: Result<Path<String>, PathRejection>, field: &str) -> Result<Uuid, ApiError> {
    let text = segment(path)?;
    sheratan_proto::ids::parse_uuid(field, &text).map_err(ApiError::invalid)
}

async fn submit(
    State(state): State<PlaneState>,
    caller: Caller,
    JsonBody(job): JsonBody<SubmitJob>,
) -> Result<Response, ApiError> {
    let mut answers = svc::submit(&state.hub, vec![Ok(job)], state.plane, caller.peer.ip()).await?;
    Ok(match answers.remove(0) {
        Submitted::Created(r) => (StatusCode::ACCEPTED, Json(r)).into_response(),
        Submitted::Existing(r) => (StatusCode::OK, Json(r)).into_response(),
        Submitted::Refused(e) => e.into_response(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    jobs: Vec<serde_json::Value>,
}

async fn submit_batch(
    State(state): State<PlaneState>,
    caller: Caller,
    JsonBody(batch): JsonBody<RawBatch>,
) -> Result<Json<BatchResponse>, ApiError> {
    if batch.jobs.is_empty() || batch.jobs.len() > svc::MAX_BATCH {
        return Err(ApiError::invalid(format!(
            "jobs: 1 to {} jobs per batch",
            svc::MAX_BATCH
        )));
    }
    // Each item is decoded on its own, so one malformed item gets its own 400 and the others
    // go through.
    let items = batch
        .jobs
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            serde_path_to_error::deserialize::<_, SubmitJob>(value).map_err(|err| {
                let path = err.path().to_string();
                let inner = err.into_inner();
                if path == "." {
                    ApiError::invalid(format!("jobs[{i}]: {inner}"))
                } else {
                    ApiError::invalid(format!("jobs[{i}].{path}: {inner}"))
                }
            })
        })
        .collect();
    let answers = svc::submit(&state.hub, items, state.plane, caller.peer.ip()).await?;
    Ok(Json(BatchResponse {
        jobs: answers.into_iter().map(Submitted::into_outcome).collect(),
    }))
}

// The typed batch body is part of the contract (sheratan-proto); keep the two in step.
const _: fn(SubmitBatch) = |_| {};

async fn get_job(
    State(state): State<PlaneState>,
    _caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<JobView>, ApiError> {
    let id = job_id(id, "job id")?;
    state
        .hub
        .store
        .get(id)
        .await
        .map_err(store_error)?
        .map(|r| Json(r.view()))
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

async fn list(
    State(state): State<PlaneState>,
    _caller: Caller,
    QueryParams(q): QueryParams<JobsQuery>,
) -> Result<Json<JobList>, ApiError> {
    let queue = q.queue.filter(|s| !s.is_empty());
    if let Some(queue) = &queue {
        sheratan_proto::data::validate_queue(queue)
            .map_err(|e| ApiError::invalid(format!("query parameter {e}")))?;
    }
    let status = q
        .status
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<JobStatus>())
        .transpose()
        .map_err(|e| ApiError::invalid(format!("query parameter status: {e}")))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("query parameter limit: 1 to 1000"));
    }
    let before = q
        .cursor
        .filter(|s| !s.is_empty())
        .map(|c| sheratan_proto::ids::parse_uuid("cursor", &c))
        .transpose()
        .map_err(ApiError::invalid)?;
    let (jobs, next) = state
        .hub
        .store
        .list(ListFilter {
            queue,
            status,
            limit,
            before,
        })
        .await
        .map_err(store_error)?;
    Ok(Json(JobList {
        jobs: jobs.iter().map(|j| j.view()).collect(),
        next_cursor: next.map(|n| n.to_string()),
    }))
}

async fn cancel(
    State(state): State<PlaneState>,
    _caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<JobView>, ApiError> {
    let id = job_id(id, "job id")?;
    state
        .hub
        .store
        .cancel(id)
        .await
        .map_err(store_error)?
        .map(|r| Json(r.view()))
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

async fn lease(
    State(state): State<PlaneState>,
    caller: Caller,
    JsonBody(req): JsonBody<LeaseRequest>,
) -> Result<Json<LeaseResponse>, ApiError> {
    let order = svc::lease_order(&req)?;
    svc::lease(
        &state.hub,
        order,
        req.wait_ms,
        caller.peer.ip(),
        &state.hub.stopping,
    )
    .await
    .map(Json)
}

async fn extend(
    State(state): State<PlaneState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Json<ExtendResponse>, ApiError> {
    let lease_id = job_id(id, "lease id")?;
    let body = read_body(req, state.hub.config.max_body_bytes).await?;
    // An empty body means the default extension, as `{}` does.
    let req: ExtendRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ExtendRequest::default()
    } else {
        parse_body(&body)?
    };
    if req
        .extend_s
        .is_some_and(|s| s == 0 || s > sheratan_store::jobs::MAX_TIMEOUT_S)
    {
        return Err(ApiError::invalid(format!(
            "extend_s: must be between 1 and {}",
            sheratan_store::jobs::MAX_TIMEOUT_S
        )));
    }
    match state
        .hub
        .store
        .extend(lease_id, req.extend_s)
        .await
        .map_err(store_error)?
    {
        ExtendOutcome::Extended { job_id, expires_at } => Ok(Json(ExtendResponse {
            lease_id: lease_id.to_string(),
            job_id: job_id.to_string(),
            lease_expires_at: expires_at,
        })),
        ExtendOutcome::NotHeld => {
            lease_mismatch(&state, &caller, "extend");
            Err(lease_expired("the lease is no longer held"))
        }
    }
}

/// A result or extension named a lease that is not the job's current one. One from a worker
/// whose lease was reaped is normal; many from one source are someone trying lease ids, which
/// the audit log shows (folded, like every event) and the watcher alerts on.
fn lease_mismatch(state: &PlaneState, caller: &Caller, route: &'static str) {
    state.hub.audit.emit(
        Event::new(EventKind::LeaseMismatch, state.plane)
            .remote(caller.peer.ip())
            .detail(serde_json::json!({ "route": route })),
    );
}

fn lease_expired(message: impl Into<String>) -> ApiError {
    ApiError::new(
        ErrorCode::LeaseExpired,
        message,
        "stop working on this job: its lease expired (it may run elsewhere) or it was cancelled; lease again",
    )
}

async fn result(
    State(state): State<PlaneState>,
    caller: Caller,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<ResultResponse>, ApiError> {
    // Integrity first: a tampered body is not worth parsing.
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let key = svc::signing_key(&state.hub, caller.credential);
    if let Err(failure) = svc::verify_result(
        header(sheratan_proto::headers::CONTENT_SHA256),
        header(sheratan_proto::headers::SIGNATURE),
        &body,
        key.as_ref(),
    ) {
        state.hub.audit.emit(
            Event::new(EventKind::ResultIntegrityFail, state.plane)
                .remote(caller.peer.ip())
                .detail(serde_json::json!({ "reason": failure.reason() })),
        );
        tracing::warn!(peer = %caller.peer, reason = failure.reason(), "RESULT_INTEGRITY_FAIL");
        return Err(ApiError::new(
            ErrorCode::ResultIntegrityFail,
            format!("the result was refused: {}", failure.reason()),
            "send X-Sheratan-Content-Sha256: <hex sha256 of the raw body> and X-Sheratan-Signature: sha256=<hex HMAC-SHA256(token, raw body)>, signed with the token this request authenticates with",
        ));
    }
    let req: ResultRequest = parse_body(&body)?;
    let job_id =
        sheratan_proto::ids::parse_uuid("job_id", &req.job_id).map_err(ApiError::invalid)?;
    let lease_id =
        sheratan_proto::ids::parse_uuid("lease_id", &req.lease_id).map_err(ApiError::invalid)?;
    if let Some(error) = &req.error
        && error.message.len() > 64 * 1024
    {
        return Err(ApiError::invalid("error.message: at most 64 KiB"));
    }
    let outcome = req.outcome;
    let report = ResultReport {
        job_id,
        lease_id,
        outcome,
        result: req.result.to_string(),
        error: req.error,
    };
    let (status, duplicate) = match state.hub.store.finish(report).await.map_err(store_error)? {
        FinishOutcome::Recorded { status } => {
            let counter = match status {
                JobStatus::Completed => &state.hub.jobs.completed,
                JobStatus::Failed => &state.hub.jobs.failed,
                _ => &state.hub.jobs.retried,
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (status, false)
        }
        FinishOutcome::Duplicate { status } => {
            state
                .hub
                .jobs
                .duplicates
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (status, true)
        }
        FinishOutcome::LeaseNotHeld { status } => {
            lease_mismatch(&state, &caller, "results");
            return Err(lease_expired(format!(
                "the lease is no longer held; the job is {}",
                status.as_str()
            )));
        }
        FinishOutcome::UnknownJob => return Err(ApiError::not_found(format!("no job {job_id}"))),
    };
    Ok(Json(ResultResponse {
        job_id: job_id.to_string(),
        status,
        duplicate,
    }))
}

async fn pending(
    State(state): State<PlaneState>,
    _caller: Caller,
    QueryParams(q): QueryParams<PendingQuery>,
) -> Result<Json<PendingResults>, ApiError> {
    match q.pending.as_deref() {
        None | Some("1") | Some("true") => {}
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "query parameter pending: {other:?}; only pending=1 is supported (finished, unacknowledged results)"
            )));
        }
    }
    let wait_ms = q.wait_ms.unwrap_or(0);
    if wait_ms > svc::MAX_WAIT_MS {
        return Err(ApiError::invalid(format!(
            "query parameter wait_ms: at most {}",
            svc::MAX_WAIT_MS
        )));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("query parameter limit: 1 to 1000"));
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(wait_ms);
    let mut finished = state.hub.store.finished_signal();
    loop {
        finished.borrow_and_update();
        let records = state
            .hub
            .store
            .pending_results(limit)
            .await
            .map_err(store_error)?;
        if !records.is_empty() || wait_ms == 0 {
            return Ok(Json(PendingResults {
                results: records
                    .into_iter()
                    .map(|r| PendingResult {
                        job_id: r.job_id.to_string(),
                        queue: r.queue,
                        kind: r.kind,
                        status: r.status,
                        result: r.result.as_deref().map(parse_json),
                        error: r.error,
                        finished_at: r.finished_at.unwrap_or(r.updated_at),
                    })
                    .collect(),
            }));
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return Ok(Json(PendingResults { results: Vec::new() })),
            () = state.hub.stopping.cancelled() => return Ok(Json(PendingResults { results: Vec::new() })),
            changed = finished.changed() => {
                if changed.is_err() {
                    return Ok(Json(PendingResults { results: Vec::new() }));
                }
            }
        }
    }
}

async fn ack(
    State(state): State<PlaneState>,
    _caller: Caller,
    JsonBody(req): JsonBody<AckRequest>,
) -> Result<Json<AckResponse>, ApiError> {
    if req.job_ids.len() > 1000 {
        return Err(ApiError::invalid("job_ids: at most 1000 per call"));
    }
    let ids = req
        .job_ids
        .iter()
        .enumerate()
        .map(|(i, id)| sheratan_proto::ids::parse_uuid(&format!("job_ids[{i}]"), id))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::invalid)?;
    let acked = state
        .hub
        .store
        .ack_results(ids)
        .await
        .map_err(store_error)?;
    Ok(Json(AckResponse { acked }))
}

async fn requeue(
    State(state): State<PlaneState>,
    _admin: Admin,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<JobView>, ApiError> {
    let id = job_id(id, "job id")?;
    let record = state
        .hub
        .store
        .requeue(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    tracing::info!(job_id = %id, "job requeued by an operator");
    Ok(Json(record.view()))
}

async fn queue_admin(
    State(state): State<PlaneState>,
    _admin: Admin,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<QueueAdminResponse>, ApiError> {
    let Path((queue, action)) = path.map_err(|e| ApiError::invalid(format!("bad path: {e}")))?;
    sheratan_proto::data::validate_queue(&queue).map_err(ApiError::invalid)?;
    let store = &state.hub.store;
    let answer = match action.as_str() {
        "pause" | "resume" => {
            let s = store
                .set_paused(queue.clone(), action == "pause")
                .await
                .map_err(store_error)?;
            QueueAdminResponse {
                queue: s.queue,
                paused: s.paused,
                purged: None,
            }
        }
        "purge" => {
            let (purged, s) = store.purge(queue).await.map_err(store_error)?;
            QueueAdminResponse {
                queue: s.queue,
                paused: s.paused,
                purged: Some(purged),
            }
        }
        other => {
            return Err(ApiError::not_found(format!(
                "no queue action {other:?}; use pause, resume or purge"
            )));
        }
    };
    tracing::info!(queue = %answer.queue, action, "queue changed by an operator");
    Ok(Json(answer))
}
