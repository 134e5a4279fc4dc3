//! Hub Data plane handlers (docs/API.md, "Data plane"): the loopback-only `/health`, metrics,
//! and the admin path's routes that are not about jobs (those are in `job_routes`).

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use sheratan_proto::control::{BundleInfo, HealthResponse, NodeList, NodeView};
use sheratan_proto::data::RotationRequest;
use sheratan_proto::{EventKind, Plane};

use super::extract::{Admin, JsonBody, PathParams, Peer, read_body, require_loopback};
use super::plane::PlaneState;
use crate::audit::Event;
use crate::auth::{RotationStatus, Secret, TokenError};
use crate::bundles::BundleError;
use sheratan_runtime::edge::ApiError;

pub(super) fn routes() -> Router<PlaneState> {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(super::metrics::metrics))
        .route("/openapi.json", get(super::openapi))
        .route("/admin/registry", get(admin_registry))
        .route("/admin/token-rotation", post(admin_token_rotation))
        .route("/admin/bundles/{name}", put(admin_publish_bundle))
        .route(
            "/admin/nodes/{id}/attestation/accept",
            post(admin_accept_attestation),
        )
        .route("/admin/nodes/{id}", delete(admin_remove_node))
        .merge(super::credential_routes::routes())
}

async fn health(
    State(state): State<PlaneState>,
    Peer(peer): Peer,
    headers: axum::http::HeaderMap,
) -> Result<Json<HealthResponse>, ApiError> {
    require_loopback(peer, &headers, &state, "/health")?;
    let counts = state.hub.store.counts();
    let mut health = super::plane::health_of(Plane::Data);
    health.queue_depth = Some(counts.total_depth());
    health.inflight = Some(counts.inflight);
    Ok(health)
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
    PathParams(name): PathParams<String>,
    req: Request,
) -> Result<(StatusCode, Json<BundleInfo>), ApiError> {
    sheratan_proto::control::validate_bundle_name(&name).map_err(ApiError::invalid)?;
    let body = read_body(req, state.hub.config.max_bundle_bytes).await?;
    let bundles = state.hub.bundles.clone();
    let now = state.hub.clock.now();
    let info = tokio::task::spawn_blocking(move || bundles.publish(&name, &body, now))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e {
            BundleError::InvalidName(msg) => ApiError::invalid(msg),
            BundleError::Empty => ApiError::new(
                sheratan_proto::ErrorCode::InvalidRequest,
                "the bundle is empty",
                "send the file's bytes (curl --data-binary @FILE sends nothing when FILE does not exist, and -s hides its warning)",
            ),
            BundleError::Io(err) => ApiError::unavailable("cannot store the bundle", err),
        })?;
    tracing::info!(name = %info.name, sha256 = %info.sha256, size = info.size, "bundle published");
    Ok((StatusCode::CREATED, Json(info)))
}

/// Removes a node from the registry (audited as NODE_REMOVED); it comes back if it
/// heartbeats again.
async fn admin_remove_node(
    State(state): State<PlaneState>,
    admin: Admin,
    PathParams(id): PathParams<String>,
) -> Result<Json<NodeView>, ApiError> {
    sheratan_proto::ids::validate_node_id(&id).map_err(ApiError::invalid)?;
    registry_here(&state)?;
    let removed = state
        .hub
        .registry
        .remove(&id)
        .ok_or_else(|| ApiError::not_found(format!("no node {id:?} in the registry")))?;
    state.hub.audit.emit(
        Event::new(EventKind::NodeRemoved, state.plane)
            .node(&id)
            .remote(admin.peer.ip()),
    );
    Ok(Json(removed))
}

async fn admin_accept_attestation(
    State(state): State<PlaneState>,
    _admin: Admin,
    PathParams(id): PathParams<String>,
) -> Result<Json<NodeView>, ApiError> {
    sheratan_proto::ids::validate_node_id(&id).map_err(ApiError::invalid)?;
    registry_here(&state)?;
    state
        .hub
        .registry
        .accept_attestation(&id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no node {id:?} in the registry")))
}
