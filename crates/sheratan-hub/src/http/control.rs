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
    node_credentials_register_no_address(&caller, &req)?;
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

/// A node credential heartbeats as a worker without an address: an address in the registry is
/// where the broker sends jobs and, for now, the mesh token (hosts), so registering one stays
/// with the mesh token until hosts get per-job grants instead.
fn node_credentials_register_no_address(
    caller: &Caller,
    req: &HeartbeatRequest,
) -> Result<(), ApiError> {
    match caller.credential.named() {
        Some(record)
            if record.role == sheratan_proto::credentials::CredentialRole::Node
                && (req.addr.is_some() || req.role != Role::Worker) =>
        {
            Err(super::roles::forbidden(
                record,
                &format!(
                    "register as a {} or with an address (a node credential heartbeats as a worker; hosts, brokers and relays use the mesh token for now)",
                    req.role.as_str()
                ),
            ))
        }
        _ => Ok(()),
    }
}
