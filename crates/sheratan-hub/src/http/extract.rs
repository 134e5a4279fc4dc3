//! Typed request inputs: who is calling (the authenticated [`Caller`]), the peer address, and
//! JSON bodies and query strings whose every error is 400 `INVALID_REQUEST` naming the field
//! (never axum's default 422), and 413 when the body is over the limit.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;
use sheratan_proto::{ErrorCode, EventKind};

use crate::audit::Event;
use crate::auth::{AuthFailure, Credential};
use crate::http::{ApiError, PlaneState};

/// The peer's socket address.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        peer_of(parts).map(Peer)
    }
}

pub fn peer_of(parts: &Parts) -> Result<SocketAddr, ApiError> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
        .ok_or_else(|| ApiError::internal("the server was started without peer addresses"))
}

/// The peer of a whole request, for middleware that runs before extractors.
pub fn peer_of_request(req: &Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
}

/// True for 127.0.0.0/8, ::1 and IPv4-mapped loopback.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// An authenticated request: the token checked (or auth disabled) and the peer known.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub credential: Credential,
    pub peer: SocketAddr,
}

impl FromRequestParts<PlaneState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &PlaneState) -> Result<Self, ApiError> {
        authenticate(&parts.headers, peer_of(parts)?, state)
    }
}

/// Checks the request's token. On failure emits AUTH_FAIL and answers 403 with a message
/// that tells the operator which token to use.
pub fn authenticate(
    headers: &HeaderMap,
    peer: SocketAddr,
    state: &PlaneState,
) -> Result<Caller, ApiError> {
    let presented = presented_tokens(headers);
    let refs: Vec<&str> = presented.iter().map(String::as_str).collect();
    match state.hub.tokens.check(&refs, peer.ip(), state.plane) {
        Ok(credential) => Ok(Caller { credential, peer }),
        Err(failure) => {
            state.hub.audit.emit(
                Event::new(EventKind::AuthFail, state.plane)
                    .remote(peer.ip())
                    .detail(serde_json::json!({ "reason": failure.reason() })),
            );
            Err(auth_error(failure))
        }
    }
}

fn auth_error(failure: AuthFailure) -> ApiError {
    let (message, hint) = match failure {
        AuthFailure::Missing => (
            "no token: send Authorization: Bearer <token> or X-Sheratan-Token: <token>",
            "the token is the hub's SHERATAN_HUB_TOKEN, or the file $SHERATAN_HOME/hub_token on the hub's machine",
        ),
        AuthFailure::Invalid => (
            "the token does not match the hub's SHERATAN_HUB_TOKEN",
            "use the hub's SHERATAN_HUB_TOKEN (or the contents of $SHERATAN_HOME/hub_token on the hub's machine)",
        ),
        AuthFailure::OldToken => (
            "the token was retired by a token rotation",
            "use the new token (the rotation's SHERATAN_HUB_TOKEN_NEXT)",
        ),
    };
    ApiError::new(ErrorCode::AuthFail, message, hint)
}

/// Tokens from `Authorization: Bearer …` and `X-Sheratan-Token`. A value that is not valid
/// UTF-8 is kept as an (invalid) token so the failure reads "invalid", not "missing".
fn presented_tokens(headers: &HeaderMap) -> Vec<String> {
    let mut out = Vec::with_capacity(1);
    for value in headers.get_all(header::AUTHORIZATION) {
        let text = String::from_utf8_lossy(value.as_bytes());
        let text = text.trim();
        let token = match text.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => text,
        };
        out.push(token.to_owned());
    }
    for value in headers.get_all(sheratan_proto::headers::TOKEN) {
        out.push(String::from_utf8_lossy(value.as_bytes()).trim().to_owned());
    }
    out
}

/// Requires a loopback peer; otherwise LOCALHOST_ONLY (and its event).
pub fn require_loopback(peer: SocketAddr, state: &PlaneState, route: &str) -> Result<(), ApiError> {
    if is_loopback(peer.ip()) {
        return Ok(());
    }
    state.hub.audit.emit(
        Event::new(EventKind::LocalhostOnly, state.plane)
            .remote(peer.ip())
            .detail(serde_json::json!({ "route": route })),
    );
    Err(ApiError::new(
        ErrorCode::LocalhostOnly,
        format!("{route} answers loopback peers only"),
        "run the request on the hub's machine (127.0.0.1), e.g. over ssh",
    ))
}

/// A JSON body of type `T`. Reads at most the configured limit.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<PlaneState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &PlaneState) -> Result<Self, ApiError> {
        let limit = state.hub.config.max_body_bytes;
        let bytes = read_body(req, limit).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// The raw body, at most `limit` bytes.
pub async fn read_body(req: Request, limit: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|err| {
            let boxed = err.into_inner();
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(boxed.as_ref());
            while let Some(e) = source {
                if e.is::<http_body_util::LengthLimitError>() {
                    return ApiError::too_large(limit);
                }
                source = e.source();
            }
            ApiError::invalid(format!("cannot read the request body: {boxed}"))
        })
}

/// Parses a JSON object; the error names the field (`capabilities[2]: invalid type …`).
/// Every request body of the contract is an object; serde would also build a struct from an
/// array, which must not slip through.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(ApiError::invalid(
                "the request body is empty; expected a JSON object",
            ));
        }
        Some(b'{') => {}
        Some(_) => {
            return Err(ApiError::invalid(
                "the request body must be a JSON object ({ … })",
            ));
        }
    }
    // Before decoding: serde_json would act on the reserved key while decoding.
    if sheratan_proto::json::has_reserved_key(bytes) {
        return Err(reserved_key());
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path == "." || path.is_empty() {
            ApiError::invalid(format!("malformed JSON body: {inner}"))
        } else {
            ApiError::invalid(format!("{path}: {inner}"))
        }
    })?;
    de.end()
        .map_err(|err| ApiError::invalid(format!("malformed JSON body: {err}")))?;
    Ok(value)
}

fn reserved_key() -> ApiError {
    ApiError::invalid(format!(
        "the key {:?} is reserved and cannot appear in a request body",
        sheratan_proto::json::RESERVED_KEY
    ))
}

/// A query string of type `T`; unknown or malformed parameters are 400 naming them.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(query));
        serde_path_to_error::deserialize(de)
            .map(QueryParams)
            .map_err(|err| {
                let path = err.path().to_string();
                let inner = err.into_inner();
                if path == "." || path.is_empty() {
                    ApiError::invalid(format!("query string: {inner}"))
                } else {
                    ApiError::invalid(format!("query parameter {path}: {inner}"))
                }
            })
    }
}

fn form_urlencoded_parse(query: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(query.as_bytes())
}
