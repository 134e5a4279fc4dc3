//! Hub Control plane handlers (docs/API.md, "Control plane").

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sheratan_proto::Plane;
use sheratan_proto::control::NodesQuery;
use sheratan_proto::control::{
    BundleList, HealthResponse, HeartbeatRequest, HeartbeatResponse, NodeList, NodeStatus,
    NodeView, Role, validate_bundle_name,
};

use super::extract::{Caller, JsonBody, PathParams, PeerCert, QueryParams};
use super::plane::PlaneState;
use crate::bundles::if_none_match_hits;
use sheratan_runtime::edge::ApiError;

pub(super) fn routes() -> Router<PlaneState> {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(super::metrics::metrics))
        .route("/openapi.json", get(super::openapi))
        .route("/v1/heartbeat", post(heartbeat))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/nodes/{id}", get(get_node))
        .route("/v1/bundles", get(list_bundles))
        .route("/v1/bundles/{name}", get(get_bundle))
        .route("/v1/tls/ca", get(tls_ca))
}

/// The mesh CA's certificate. Public, like /health: a joining node fetches it before it
/// trusts the hub, and trusts it only if its SHA-256 is the one its join string pins.
async fn tls_ca(State(state): State<PlaneState>) -> Result<Response, ApiError> {
    let path = state.hub.config.home.join("tls/ca.pem");
    match tokio::fs::read(&path).await {
        Ok(pem) => Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response()),
        Err(_) => Err(ApiError::not_found(
            "this hub has no mesh CA (its certificate comes from elsewhere): nodes trust it through SHERATAN_CA_FILE, not a join string".to_string(),
        )),
    }
}

async fn health() -> Json<HealthResponse> {
    super::plane::health_of(Plane::Control)
}

async fn heartbeat(
    State(state): State<PlaneState>,
    caller: Caller,
    cert: PeerCert,
    JsonBody(req): JsonBody<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    cert.require_node(&req.node_id, caller.peer, &state)?;
    super::extract::require_identity(&caller, &req.node_id, &state)?;
    credentialed_names_are_their_own(&caller, &req, &state)?;
    state
        .hub
        .registry
        .heartbeat(
            &req,
            caller.peer.ip(),
            state.hub.config.heartbeat_interval_s,
        )
        .map(Json)
        .map_err(|err| ApiError::invalid(err.0))
}

async fn list_nodes(
    State(state): State<PlaneState>,
    _caller: Caller,
    QueryParams(q): QueryParams<NodesQuery>,
) -> Result<Json<NodeList>, ApiError> {
    let role = q
        .role
        .filter(|r| !r.is_empty())
        .map(|r| r.parse::<Role>())
        .transpose()
        .map_err(|e| ApiError::invalid(format!("query parameter role: {e}")))?;
    let status = q
        .status
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<NodeStatus>())
        .transpose()
        .map_err(|e| ApiError::invalid(format!("query parameter status: {e}")))?;
    Ok(Json(NodeList {
        nodes: state.hub.registry.list(role, status),
    }))
}

async fn get_node(
    State(state): State<PlaneState>,
    _caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<NodeView>, ApiError> {
    sheratan_proto::ids::validate_node_id(&id).map_err(ApiError::invalid)?;
    state
        .hub
        .registry
        .get(&id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no node {id:?} in the registry")))
}

async fn list_bundles(State(state): State<PlaneState>, _caller: Caller) -> Json<BundleList> {
    Json(BundleList {
        bundles: state.hub.bundles.list(),
    })
}

async fn get_bundle(
    State(state): State<PlaneState>,
    _caller: Caller,
    PathParams(name): PathParams<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    validate_bundle_name(&name).map_err(ApiError::invalid)?;
    let (info, path) = state
        .hub
        .bundles
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("no bundle {name:?}")))?;
    let etag =
        HeaderValue::from_str(&format!("\"{}\"", info.sha256)).map_err(ApiError::internal)?;
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| if_none_match_hits(v, &info.sha256))
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::internal(format!("open bundle object {}: {e}", path.display())))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        StatusCode::OK,
        [
            (header::ETAG, etag),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from(info.size)),
        ],
        body,
    )
        .into_response())
}

/// A node with a credential of its own is registered by that credential only: another
/// credential or the mesh token heartbeating as it (to move its address, where the broker sends
/// jobs) is refused as an `IDENTITY_MISMATCH`. Its own credential may register any role and
/// address; the broker sends such a host per-job grants, never a secret.
fn credentialed_names_are_their_own(
    caller: &Caller,
    req: &HeartbeatRequest,
    state: &PlaneState,
) -> Result<(), ApiError> {
    if caller.credential.node_name() == Some(req.node_id.as_str())
        || !state.hub.credentials.is_node(&req.node_id)
    {
        return Ok(());
    }
    state.hub.audit.emit(
        crate::audit::Event::new(sheratan_proto::EventKind::IdentityMismatch, state.plane)
            .remote(caller.peer.ip())
            .node(&req.node_id)
            .by(&caller.credential),
    );
    if let Some(record) = caller.credential.named() {
        state.hub.role_refusals.count(record.role);
    }
    Err(ApiError::new(
        sheratan_proto::ErrorCode::Forbidden,
        format!(
            "node {:?} has a node credential: only that credential may heartbeat as it ({} may not)",
            req.node_id,
            caller.credential.label()
        ),
        "run the node with its own credential (SHERATAN_HUB_TOKEN = its secret), or pick another node_id",
    ))
}
