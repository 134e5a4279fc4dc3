//! The HTTP edge every Sheratan server shares (hub planes, hosts, broker, relay, Core,
//! dashboard): the contract's error type, the extractors that authenticate callers and read
//! bodies within the limit, and the fallbacks that answer unknown routes and methods in the
//! contract's shape. The accept loop with its timeouts and per-source caps is
//! [`crate::serve`]. A handler's signature carries what it needs (`Caller<S>` for an
//! authenticated caller, `JsonBody<T>` for a body within the limit), so none can forget it.

mod auth;
mod error;
mod extract;
#[cfg(test)]
mod tests;

pub use auth::{Presented, auth_fail, check_mesh_token, presented_token};
pub use error::ApiError;
pub use extract::{
    Caller, Edge, JsonBody, PathParams, Peer, QueryParams, RawBody, is_loopback, parse_json,
    peer_of, peer_of_request, read_body,
};

/// `SHERATAN_MAX_BODY_BYTES`'s default: the largest request body a server reads.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

use axum::Router;
use axum::extract::Request;
use sheratan_proto::ErrorCode;

/// Unknown routes answer 404 and known routes with the wrong method 405
/// (`METHOD_NOT_ALLOWED`), both in the contract's JSON shape; `routes` names what the
/// server does serve.
pub fn with_fallbacks<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    server: &'static str,
    routes: &'static str,
) -> Router<S> {
    router
        .fallback(move |req: Request| async move {
            ApiError::new(
                ErrorCode::NotFound,
                format!("no route {} {} on {server}", req.method(), req.uri().path()),
                format!("{server} serves {routes}"),
            )
        })
        .method_not_allowed_fallback(|req: Request| async move {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                format!("{} is not allowed on {}", req.method(), req.uri().path()),
                "docs/API.md lists each route's method",
            )
        })
}

/// Times every request into `times` by route: `METHOD /path/{param}` as the router matched it
/// and served it (bounded by the routes a server has), `unmatched` for the rest — unknown
/// paths, methods outside the six the servers use, and known paths with a method they do not
/// take (405) — else a method would be a label anyone can mint, token or not. Layered on a router, it runs
/// after routing, so the matched route is known.
pub async fn time_request(
    axum::extract::State(times): axum::extract::State<std::sync::Arc<sheratan_histogram::ByLabel>>,
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::Method;
    let standard = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
    ]
    .contains(req.method())
        || req.method() == Method::DELETE;
    let matched = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .filter(|_| standard)
        .map(|path| (req.method().clone(), path.clone()));
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    let elapsed = started.elapsed().as_secs_f64();
    match matched {
        Some((method, path)) if response.status() != axum::http::StatusCode::METHOD_NOT_ALLOWED => {
            times.observe(&format!("{method} {}", path.as_str()), elapsed)
        }
        _ => times.observe("unmatched", elapsed),
    }
    response
}

/// Requires a loopback peer, for routes that act with the hub's admin rights: a remote caller
/// gets 403 `LOCALHOST_ONLY`. (Without this, a server on the hub's machine would turn a
/// remote request into a loopback call to the hub's admin path.)
pub fn require_loopback(peer: std::net::SocketAddr, route: &str) -> Result<(), ApiError> {
    if is_loopback(peer.ip()) {
        return Ok(());
    }
    Err(ApiError::localhost_only(
        route,
        "run the request on this server's machine (127.0.0.1), e.g. over ssh",
    ))
}

/// 403 `FORBIDDEN` for a credential the hub vouched for (named as audit lines name it) that may
/// not make this request here.
pub fn forbidden_here(credential: &str, method: &axum::http::Method, path: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        format!("{credential} may not {method} {path} here"),
        "docs/SECURITY.md lists what each role may do; an admin creates a credential with the role needed (sheratan token create)",
    )
}

/// 503 `UNAVAILABLE`: the hub could not be asked about a caller's token.
pub fn cannot_vouch(err: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        format!("cannot check the token with the hub: {err}"),
        "check that the hub is running; this server's own token still works",
    )
}

/// A JSON document built once (an OpenAPI description) as a 200 answer.
pub fn static_json(text: &'static str) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response()
}

/// Whether a read-only role (or the mesh token, `None`, or an admin) may make a request to a
/// server that only shows things (the broker's auctions, metrics): every `GET`/`HEAD`.
pub fn read_role_permits(
    role: Option<sheratan_proto::credentials::CredentialRole>,
    method: &axum::http::Method,
) -> bool {
    use sheratan_proto::credentials::CredentialRole::{Admin, Read};
    let get = method == axum::http::Method::GET || method == axum::http::Method::HEAD;
    match role {
        None | Some(Admin) => true,
        Some(Read) => get,
        Some(_) => false,
    }
}

/// The hub's word on a token a server does not know (`Edge::vouch`): `ask` puts the question
/// for the caller's address; an error is 503 `UNAVAILABLE`; a refusal is said in this server's
/// log with the caller's address (the hub's own `AUTH_FAIL` line names this server, which asked).
pub async fn vouched<W, E, Fut>(
    request: &axum::http::request::Parts,
    ask: impl FnOnce(Option<std::net::IpAddr>) -> Fut,
) -> Result<Option<W>, ApiError>
where
    E: std::fmt::Display,
    Fut: std::future::Future<Output = Result<Option<W>, E>>,
{
    let peer = peer_of(request).ok();
    match ask(peer.map(|p| p.ip())).await.map_err(cannot_vouch)? {
        Some(who) => Ok(Some(who)),
        None => {
            let peer = peer.map(|p| p.to_string()).unwrap_or_default();
            tracing::warn!(
                peer,
                path = request.uri.path(),
                "AUTH_FAIL: a token neither this server's own nor vouched for by the hub"
            );
            Ok(None)
        }
    }
}
