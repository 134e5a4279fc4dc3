//! Hub Data plane handlers (docs/API.md, "Data plane"): the loopback-only `/health`, metrics, and the admin
//! path. Job routes arrive with the data plane issue.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use sheratan_proto::Plane;
use sheratan_proto::control::MetricsQuery;
use sheratan_proto::control::{BundleInfo, HealthResponse, NodeList, NodeView};
use sheratan_proto::data::RotationRequest;

use super::control::segment;
use super::extract::{Caller, JsonBody, Peer, QueryParams, read_body, require_loopback};
use super::{ApiError, PlaneState};
use crate::auth::{RotationStatus, Secret, TokenError};
use crate::bundles::BundleError;

pub(super) fn routes() -> Router<PlaneState> {
    super::jobs::routes()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/admin/registry", get(admin_registry))
        .route("/admin/token-rotation", post(admin_token_rotation))
        .route("/admin/bundles/{name}", put(admin_publish_bundle))
        .route(
            "/admin/nodes/{id}/attestation/accept",
            post(admin_accept_attestation),
        )
}

async fn health(
    State(state): State<PlaneState>,
    Peer(peer): Peer,
) -> Result<Json<HealthResponse>, ApiError> {
    require_loopback(peer, &state, "/health")?;
    let counts = state.hub.store.counts();
    let mut health = super::health_of(Plane::Data);
    health.queue_depth = Some(counts.total_depth());
    health.inflight = Some(counts.inflight);
    Ok(health)
}

/// `GET /metrics`: Prometheus text, or `?format=json` with dotted names.
pub(super) async fn metrics(
    State(state): State<PlaneState>,
    _caller: Caller,
    QueryParams(q): QueryParams<MetricsQuery>,
) -> Result<Response, ApiError> {
    let families = state.hub.metric_families(state.plane);
    match q.format.as_deref() {
        None | Some("") | Some("prometheus") | Some("text") => Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            crate::metrics::render_prometheus(&families),
        )
            .into_response()),
        Some("json") => Ok(Json(crate::metrics::render_json(&families)).into_response()),
        Some(other) => Err(ApiError::invalid(format!(
            "query parameter format: unknown format {other:?}; use json or leave it out"
        ))),
    }
}

/// The admin path's caller: token first, then loopback (docs/API.md, "Wire rules" precedence).
pub(super) struct Admin;

impl axum::extract::FromRequestParts<PlaneState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &PlaneState,
    ) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        require_loopback(caller.peer, state, "/admin")?;
        Ok(Admin)
    }
}

async fn admin_registry(
    State(state): State<PlaneState>,
    _admin: Admin,
) -> Result<Json<NodeList>, ApiError> {
    registry_here(&state)?;
    Ok(Json(NodeList {
        nodes: state.hub.registry.list(None, None),
    }))
}

/// The registry lives in the process that serves the control plane; a data-only process
/// must not answer from (or change) a stale copy.
fn registry_here(state: &PlaneState) -> Result<(), ApiError> {
    if state.hub.config.planes.control() {
        return Ok(());
    }
    Err(ApiError::new(
        sheratan_proto::ErrorCode::Unavailable,
        "this hub process serves the data plane only; the node registry lives in the process that serves the control plane",
        "send the request to the data plane of the hub process that runs the control plane (--plane both)",
    ))
}

async fn admin_token_rotation(
    State(state): State<PlaneState>,
    _admin: Admin,
    JsonBody(req): JsonBody<RotationRequest>,
) -> Result<Json<RotationStatus>, ApiError> {
    state
        .hub
        .tokens
        .start_rotation(Secret::new(req.next_token), req.until)
        .map_err(|e| match e {
            TokenError::Invalid(msg) => ApiError::invalid(msg),
            other => ApiError::internal(other),
        })?;
    Ok(Json(state.hub.tokens.rotation_status()))
}

async fn admin_publish_bundle(
    State(state): State<PlaneState>,
    _admin: Admin,
    name: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<(StatusCode, Json<BundleInfo>), ApiError> {
    let name = segment(name)?;
    sheratan_proto::control::validate_bundle_name(&name).map_err(ApiError::invalid)?;
    let body = read_body(req, state.hub.config.max_bundle_bytes).await?;
    let bundles = state.hub.bundles.clone();
    let now = state.hub.clock.now();
    let info = tokio::task::spawn_blocking(move || bundles.publish(&name, &body, now))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e {
            BundleError::InvalidName(msg) => ApiError::invalid(msg),
            BundleError::Io(err) => ApiError::unavailable("cannot store the bundle", err),
        })?;
    tracing::info!(name = %info.name, sha256 = %info.sha256, size = info.size, "bundle published");
    Ok((StatusCode::CREATED, Json(info)))
}

async fn admin_accept_attestation(
    State(state): State<PlaneState>,
    _admin: Admin,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<NodeView>, ApiError> {
    let id = segment(id)?;
    sheratan_proto::ids::validate_node_id(&id).map_err(ApiError::invalid)?;
    registry_here(&state)?;
    state
        .hub
        .registry
        .accept_attestation(&id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no node {id:?} in the registry")))
}
