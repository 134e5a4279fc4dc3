//! Hub Data plane job routes (docs/API.md, "Data plane"): submit, batch, get, list, cancel,
//! lease, extend, results, acknowledgements, and the job side of the admin path. Each handler
//! extracts its input, calls one `job_service` function and converts the answer.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sheratan_proto::data::{
    AckRequest, AckResponse, BatchResponse, ExtendRequest, ExtendResponse, JobList, JobView,
    JobsQuery, LeaseRequest, LeaseResponse, PendingQuery, PendingResults, QueueAdminResponse,
    QueueList, ResultRequest, ResultResponse, SubmitBatch, SubmitJob,
};

use super::extract::{
    Admin, Caller, JsonBody, PathParams, PeerCert, QueryParams, RawBody, parse_json,
};
use super::plane::PlaneState;
use crate::job_service::{self as svc, JobsError, ResultHeaders, Submitted};
use sheratan_proto::progress::{ProgressAck, ProgressReport};
use sheratan_proto::queues::{QueueSettings, QueueSettingsPatch};
use sheratan_runtime::edge::ApiError;

pub(super) fn routes() -> Router<PlaneState> {
    Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/batch", post(submit_batch))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/queues", get(queues))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/leases", post(lease))
        .route("/v1/leases/{lease_id}/extend", post(extend))
        .route("/v1/leases/{lease_id}/progress", post(progress))
        .route("/v1/leases/watch", post(watch))
        .route("/v1/stream", get(super::stream::open))
        .route("/v1/results", post(result).get(pending))
        .route("/v1/results/ack", post(ack))
        .route("/v1/grants", post(grants))
        .route("/admin/jobs/{id}/requeue", post(requeue))
        .route("/admin/jobs/{action}", post(bulk))
        .route(
            "/admin/queues/{queue}/settings",
            get(queue_settings).put(put_queue_settings),
        )
        .route("/admin/queues/{queue}/{action}", post(queue_admin))
}

impl From<JobsError> for ApiError {
    fn from(e: JobsError) -> ApiError {
        ApiError {
            retry_after_s: e.retry_after_s(),
            internal: e.internal(),
            ..ApiError::new(e.code(), e.message(), e.hint())
        }
    }
}

async fn submit(
    State(state): State<PlaneState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(job): JsonBody<SubmitJob>,
) -> Result<Response, ApiError> {
    queue_allowed(&caller, &job.queue, "submit to")?;
    let from = svc::Origin {
        plane: state.plane,
        ip: caller.peer.ip(),
        traceparent: traceparent(&headers),
    };
    let mut answers = svc::submit(&state.hub, vec![Ok(job)], from).await?;
    Ok(match answers.remove(0) {
        Submitted::Created(r) => (StatusCode::ACCEPTED, Json(r)).into_response(),
        Submitted::Existing(r) => (StatusCode::OK, Json(r)).into_response(),
        Submitted::Refused(e) => ApiError::from(e).into_response(),
    })
}

/// `SubmitBatch` with items left undecoded, so each one is decoded (and refused) on its own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    jobs: Vec<serde_json::Value>,
}

// The typed batch body is part of the contract (sheratan-proto); keep the two in step.
const _: fn(SubmitBatch) = |_| {};

async fn submit_batch(
    State(state): State<PlaneState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(batch): JsonBody<RawBatch>,
) -> Result<Json<BatchResponse>, ApiError> {
    let items = svc::decode_batch(batch.jobs)?;
    for job in items.iter().flatten() {
        queue_allowed(&caller, &job.queue, "submit to")?;
    }
    let from = svc::Origin {
        plane: state.plane,
        ip: caller.peer.ip(),
        traceparent: traceparent(&headers),
    };
    let answers = svc::submit(&state.hub, items, from).await?;
    Ok(Json(BatchResponse {
        jobs: answers.into_iter().map(Submitted::into_outcome).collect(),
    }))
}

/// The W3C `traceparent` header, if one was sent (parsed, and refused if bad, by the tracer).
fn traceparent(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(sheratan_proto::headers::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
}

/// A submit credential with queues submits to, reads and cancels jobs of those queues only (the
/// whole batch is refused when one item names another).
pub(super) fn queue_allowed(caller: &Caller, queue: &str, action: &str) -> Result<(), ApiError> {
    match caller.credential.named() {
        Some(r) if !r.queues.is_empty() && !r.queues.iter().any(|q| q == queue) => {
            Err(super::roles::forbidden(
                r,
                &format!(
                    "{action} queue {queue:?} (it may use {})",
                    r.queues.join(", ")
                ),
            ))
        }
        _ => Ok(()),
    }
}

async fn get_job(
    State(state): State<PlaneState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<JobView>, ApiError> {
    whole_id(&caller, &id)?;
    let view = svc::get(&state.hub, &id).await?;
    // A node credential reads the jobs it holds (a broker reads its job's requirements).
    if let Some(name) = caller.credential.node_name()
        && view.node_id.as_deref() != Some(name)
    {
        let record = caller.credential.named().expect("a node credential");
        state.hub.role_refusals.count(record.role);
        return Err(super::roles::forbidden(
            record,
            "read a job it does not hold",
        ));
    }
    queue_allowed(&caller, &view.queue, "read a job of")?;
    Ok(Json(view))
}

async fn grants(
    State(state): State<PlaneState>,
    caller: Caller,
    JsonBody(req): JsonBody<sheratan_proto::auction::GrantRequest>,
) -> Result<Json<sheratan_proto::auction::GrantResponse>, ApiError> {
    let who = (&caller.credential, caller.peer.ip());
    Ok(Json(svc::grants(&state.hub, req, who).await?))
}

async fn list(
    State(state): State<PlaneState>,
    caller: Caller,
    QueryParams(q): QueryParams<JobsQuery>,
) -> Result<Json<JobList>, ApiError> {
    // A credential limited to queues lists one of them at a time (`?queue=`).
    let scoped = caller
        .credential
        .named()
        .is_some_and(|r| !r.queues.is_empty());
    if scoped {
        let queue = q.queue.as_deref().filter(|q| !q.is_empty()).unwrap_or("*");
        queue_allowed(&caller, queue, "list jobs of")?;
    }
    Ok(Json(svc::list(&state.hub, q).await?))
}

/// Every queue with jobs or a recent consumer: its depth and whether a node serves it.
async fn queues(State(state): State<PlaneState>, _: Caller) -> Json<QueueList> {
    Json(QueueList {
        queues: svc::queues(&state.hub),
    })
}

async fn cancel(
    State(state): State<PlaneState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<JobView>, ApiError> {
    if scoped(&caller).is_some() {
        whole_id(&caller, &id)?;
        let job = svc::get(&state.hub, &id).await?;
        queue_allowed(&caller, &job.queue, "cancel a job of")?;
    }
    Ok(Json(svc::cancel(&state.hub, &id).await?))
}

/// A credential that may see only some jobs (a node's, a queue-limited one) names jobs by
/// their whole id: a piece's lookup would list other jobs' ids in its "which one?" answer.
fn whole_id(caller: &Caller, id: &str) -> Result<(), ApiError> {
    let limited = caller.credential.node_name().is_some() || scoped(caller).is_some();
    if limited && id.parse::<uuid::Uuid>().is_err() {
        return Err(ApiError::invalid(
            "job id: this credential names jobs by their whole id (36 characters)",
        ));
    }
    Ok(())
}

/// A submit credential limited to queues, if the caller is one.
fn scoped(caller: &Caller) -> Option<&sheratan_store::CredentialRecord> {
    caller.credential.named().filter(|r| !r.queues.is_empty())
}

/// Results are not yet filtered by queue: a credential limited to queues neither lists nor
/// acknowledges them (it follows its jobs with `GET /v1/jobs/{id}`).
fn results_unscoped(caller: &Caller) -> Result<(), ApiError> {
    match scoped(caller) {
        Some(r) => Err(super::roles::forbidden(
            r,
            "list or acknowledge results (a credential limited to queues follows its jobs with GET /v1/jobs/{id})",
        )),
        None => Ok(()),
    }
}

async fn lease(
    State(state): State<PlaneState>,
    caller: Caller,
    cert: PeerCert,
    JsonBody(req): JsonBody<LeaseRequest>,
) -> Result<Json<LeaseResponse>, ApiError> {
    cert.require_node(&req.node_id, caller.peer, &state)?;
    super::extract::require_identity(&caller, &req.node_id, &state)?;
    // A node credential limited to queues leases from those only.
    for queue in &req.queues {
        queue_allowed(&caller, queue, "lease from")?;
    }
    let order = svc::lease_order(&req)?;
    let ip = caller.peer.ip();
    let answer = svc::lease(&state.hub, order, req.wait_ms, ip, &state.hub.stopping).await?;
    Ok(Json(answer))
}

/// A node's long poll over its running leases (a cancel stops the handler at once).
async fn watch(
    State(state): State<PlaneState>,
    _: Caller,
    JsonBody(req): JsonBody<sheratan_proto::data::WatchRequest>,
) -> Result<Json<sheratan_proto::data::WatchResponse>, ApiError> {
    Ok(Json(
        svc::watch(&state.hub, req, &state.hub.stopping).await?,
    ))
}

async fn extend(
    State(state): State<PlaneState>,
    caller: Caller,
    PathParams(lease_id): PathParams<String>,
    RawBody(body): RawBody,
) -> Result<Json<ExtendResponse>, ApiError> {
    // An empty body means the default extension, as `{}` does.
    let req: ExtendRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ExtendRequest::default()
    } else {
        parse_json(&body)?
    };
    let who = (&caller.credential, caller.peer.ip());
    Ok(Json(svc::extend(&state.hub, &lease_id, req, who).await?))
}

async fn result(
    State(state): State<PlaneState>,
    caller: Caller,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<ResultResponse>, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let integrity = ResultHeaders {
        content_sha256: header(sheratan_proto::headers::CONTENT_SHA256),
        signature: header(sheratan_proto::headers::SIGNATURE),
    };
    let ip = caller.peer.ip();
    svc::verify(&state.hub, &caller.credential, integrity, &body, ip)?;
    let req: ResultRequest = parse_json(&body)?;
    let who = (&caller.credential, ip);
    Ok(Json(
        svc::finish(&state.hub, req, who, traceparent(&headers)).await?,
    ))
}

/// Signed like a result: the integrity check comes before anything reads the body.
async fn progress(
    State(state): State<PlaneState>,
    caller: Caller,
    PathParams(lease_id): PathParams<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<ProgressAck>, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let integrity = ResultHeaders {
        content_sha256: header(sheratan_proto::headers::CONTENT_SHA256),
        signature: header(sheratan_proto::headers::SIGNATURE),
    };
    let ip = caller.peer.ip();
    svc::verify(&state.hub, &caller.credential, integrity, &body, ip)?;
    let report: ProgressReport = parse_json(&body)?;
    let who = (&caller.credential, ip);
    Ok(Json(
        svc::report_progress(&state.hub, &lease_id, report, who).await?,
    ))
}

async fn pending(
    State(state): State<PlaneState>,
    caller: Caller,
    QueryParams(q): QueryParams<PendingQuery>,
) -> Result<Json<PendingResults>, ApiError> {
    results_unscoped(&caller)?;
    Ok(Json(
        svc::pending(&state.hub, q, &state.hub.stopping).await?,
    ))
}

async fn ack(
    State(state): State<PlaneState>,
    caller: Caller,
    JsonBody(req): JsonBody<AckRequest>,
) -> Result<Json<AckResponse>, ApiError> {
    results_unscoped(&caller)?;
    Ok(Json(svc::ack(&state.hub, req).await?))
}

async fn requeue(
    State(state): State<PlaneState>,
    _: Admin,
    PathParams(id): PathParams<String>,
) -> Result<Json<JobView>, ApiError> {
    Ok(Json(svc::requeue(&state.hub, &id).await?))
}

/// `POST /admin/jobs/requeue` and `POST /admin/jobs/delete`.
async fn bulk(
    State(state): State<PlaneState>,
    admin: Admin,
    PathParams(action): PathParams<String>,
    JsonBody(req): JsonBody<sheratan_proto::data::BulkSelection>,
) -> Result<Json<sheratan_proto::data::BulkOutcome>, ApiError> {
    let action = action.parse::<svc::BulkAction>()?;
    Ok(Json(
        svc::bulk(&state.hub, req, action, admin.peer.ip()).await?,
    ))
}

async fn queue_settings(
    State(state): State<PlaneState>,
    _: Admin,
    PathParams(queue): PathParams<String>,
) -> Result<Json<QueueSettings>, ApiError> {
    Ok(Json(svc::get_settings(&state.hub, &queue).await?))
}

async fn put_queue_settings(
    State(state): State<PlaneState>,
    _: Admin,
    PathParams(queue): PathParams<String>,
    JsonBody(patch): JsonBody<QueueSettingsPatch>,
) -> Result<Json<QueueSettings>, ApiError> {
    Ok(Json(svc::put_settings(&state.hub, &queue, patch).await?))
}

async fn queue_admin(
    State(state): State<PlaneState>,
    _: Admin,
    PathParams((queue, action)): PathParams<(String, String)>,
) -> Result<Json<QueueAdminResponse>, ApiError> {
    let action = action.parse::<svc::QueueAction>()?;
    Ok(Json(svc::queue_admin(&state.hub, queue, action).await?))
}
