//! The two listeners' routers. Handlers are thin: extract typed input, call one service
//! method, convert the result. Transport concerns that must come before routing — the body
//! limit (413) and routes of the other plane (421, before auth: it is a configuration error
//! and route names are public) — live in [`plane_guard`].

mod control;
mod credential_routes;
mod data;
pub mod extract;
mod job_routes;
mod metrics;
mod plane;
pub(crate) mod roles;
mod schedule_routes;
mod stream;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sheratan_proto::{ErrorCode, EventKind, Plane};

pub use plane::PlaneState;
pub use sheratan_runtime::edge::ApiError;

use crate::HubState;
use crate::audit::Event;

/// The control plane router (8787).
pub fn control_router(hub: Arc<HubState>) -> Router {
    plane_router(control::routes(), hub, Plane::Control)
}

/// The data plane router (8788).
pub fn data_router(hub: Arc<HubState>) -> Router {
    plane_router(
        data::routes()
            .merge(job_routes::routes())
            .merge(schedule_routes::routes()),
        hub,
        Plane::Data,
    )
}

fn plane_router(routes: Router<PlaneState>, hub: Arc<HubState>, plane: Plane) -> Router {
    let state = PlaneState { hub, plane };
    routes
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            roles::check_role,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            plane_guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            pace_refusals,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.hub.jobs.http.0.clone(),
            sheratan_runtime::edge::time_request,
        ))
        .with_state(state)
}

/// Outermost: a refusal's answer waits for its turn at the refusal pacer (see
/// [`crate::pacing`]); every other answer goes out at once. Shutdown cuts the wait short.
async fn pace_refusals(State(state): State<PlaneState>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let status = response.status();
    if !crate::pacing::is_refusal(status.as_u16()) {
        return response;
    }
    let pacer = &state.hub.refusals;
    if !pacer.is_on() {
        // Pacing off: a refused token at least costs its sender a new connection for the next
        // guess (RELIABILITY.md measures both).
        if status == axum::http::StatusCode::FORBIDDEN {
            response.headers_mut().insert(
                header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        return response;
    }
    let wait = pacer.delay();
    if !wait.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = state.hub.stopping.cancelled() => {}
        }
    }
    response
}

/// Path prefixes that belong to each plane. `/health` and `/metrics` exist on both.
const CONTROL_ROUTES: &[&str] = &["/v1/heartbeat", "/v1/nodes", "/v1/bundles"];
const DATA_ROUTES: &[&str] = &[
    "/v1/jobs",
    "/v1/leases",
    "/v1/results",
    "/v1/stream",
    "/v1/grants",
    "/v1/schedules",
    "/v1/whoami",
    "/admin",
];

/// The route prefix of `path` if it belongs to the plane other than `plane`.
fn other_plane_route(plane: Plane, path: &str) -> Option<&'static str> {
    let others = match plane {
        Plane::Control => DATA_ROUTES,
        Plane::Data => CONTROL_ROUTES,
    };
    others.iter().copied().find(|prefix| {
        path == *prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

async fn plane_guard(State(state): State<PlaneState>, req: Request, next: Next) -> Response {
    let limit = body_limit(&state, &req);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return ApiError::too_large(limit).into_response();
    }
    if let Some(route) = other_plane_route(state.plane, req.uri().path()) {
        let (right, port, var) = match state.plane {
            Plane::Control => ("data", state.hub.ports.data, "SHERATAN_DATA_URL"),
            Plane::Data => ("control", state.hub.ports.control, "SHERATAN_CONTROL_URL"),
        };
        if let Some(peer) = extract::peer_of_request(&req) {
            state.hub.audit.emit(
                Event::new(EventKind::PortMismatch, state.plane)
                    .remote(peer.ip())
                    .detail(serde_json::json!({ "route": route, "right_plane": right, "right_port": port }))
                    .probe(extract::probe(&state, req.headers())),
            );
        }
        return ApiError::new(
            ErrorCode::PortMismatch,
            format!(
                "{route} is a Hub {} route; this is the {} plane",
                capitalize(right),
                state.plane.as_str()
            ),
            format!("send it to the {right} plane on port {port} ({var})"),
        )
        .into_response();
    }
    // The admin path is refused to remote peers before routing, so they learn nothing about
    // which admin routes exist (an unknown one would otherwise answer 404 or 405).
    if state.plane == Plane::Data && is_admin_path(req.uri().path()) {
        let (parts, body) = req.into_parts();
        let checked = extract::peer_of(&parts).and_then(|peer| {
            let caller = extract::authenticate(&parts.headers, peer, &state)?;
            // An admin credential may use the admin path from anywhere; other credentials
            // never; the mesh token from loopback only.
            match caller.credential.named() {
                Some(r) if r.role == sheratan_proto::credentials::CredentialRole::Admin => Ok(()),
                Some(r) => {
                    state.hub.role_refusals.count(r.role);
                    Err(roles::forbidden(r, "use the admin path"))
                }
                None => extract::require_loopback(peer, &parts.headers, &state, "/admin"),
            }
        });
        if let Err(err) = checked {
            return err.into_response();
        }
        return next.run(Request::from_parts(parts, body)).await;
    }
    next.run(req).await
}

fn is_admin_path(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/")
}

/// The body limit of a request: bundle uploads on the admin path get their own, larger one.
pub(crate) fn body_limit(state: &PlaneState, req: &Request) -> usize {
    if state.plane == Plane::Data
        && req.method() == axum::http::Method::PUT
        && req.uri().path().starts_with("/admin/bundles/")
    {
        state.hub.config.max_bundle_bytes
    } else {
        state.hub.config.max_body_bytes
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// `GET /openapi.json`: this plane's document (docs/openapi/), for any valid token.
async fn openapi(State(state): State<PlaneState>, _: extract::Caller) -> Response {
    let name = match state.plane {
        Plane::Control => "hub-control",
        Plane::Data => "hub-data",
    };
    sheratan_runtime::edge::static_json(
        sheratan_openapi::served(name).expect("both planes' documents exist"),
    )
}

/// Unknown routes: authenticate first (route names beyond the public ones are not revealed
/// to callers without the token), then 404.
async fn unknown_route(
    State(state): State<PlaneState>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, _) = req.into_parts();
    extract::authenticate(&parts.headers, extract::peer_of(&parts)?, &state)?;
    Err(ApiError::not_found(format!(
        "no route {} {} on the {} plane",
        parts.method,
        parts.uri.path(),
        state.plane.as_str()
    )))
}

async fn wrong_method(State(state): State<PlaneState>, req: Request) -> Result<Response, ApiError> {
    let (parts, _) = req.into_parts();
    if !(state.plane == Plane::Control && parts.uri.path() == "/health") {
        extract::authenticate(&parts.headers, extract::peer_of(&parts)?, &state)?;
    }
    Err(ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} is not allowed on {}", parts.method, parts.uri.path()),
        "docs/API.md lists each route's method",
    ))
}
