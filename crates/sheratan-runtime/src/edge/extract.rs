//! Typed request inputs every server shares: the peer address, the authenticated [`Caller`],
//! JSON bodies and raw bodies read up to the server's limit, and query strings. Every error
//! is the contract's: 400 `INVALID_REQUEST` naming the field (never axum's plain-text 422 or
//! 400), 413 `PAYLOAD_TOO_LARGE` past the limit.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiError;

/// What a server tells the edge: how callers authenticate and how large a body may be. A
/// handler that takes a [`Caller`] cannot run for an unauthenticated request, and one that
/// takes a [`JsonBody`] or [`RawBody`] cannot read past the limit.
pub trait Edge: Send + Sync {
    /// What a successful authentication yields (the hub: which of its tokens matched).
    type Credential: Send + 'static;

    /// Checks the request's credentials; the error is the answer (403 `AUTH_FAIL`).
    fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
    ) -> Result<Self::Credential, ApiError>;

    /// The largest request body this server reads, in bytes.
    fn body_limit(&self) -> usize;

    /// A second chance for the one token a request presented that [`Edge::authenticate`]
    /// refused: a server that takes the hub's credentials asks the hub who it is and whether
    /// it may make this request (`Ok(None)`: no, and the first refusal is the answer).
    /// Servers that know their callers' tokens keep the default, which asks nobody.
    fn vouch(
        &self,
        _token: &str,
        _request: &Parts,
    ) -> impl std::future::Future<Output = Result<Option<Self::Credential>, ApiError>> + Send {
        async { Ok(None) }
    }
}

impl<T: Edge + ?Sized> Edge for std::sync::Arc<T> {
    type Credential = T::Credential;

    fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
    ) -> Result<Self::Credential, ApiError> {
        (**self).authenticate(headers, peer)
    }

    fn body_limit(&self) -> usize {
        (**self).body_limit()
    }

    fn vouch(
        &self,
        token: &str,
        request: &Parts,
    ) -> impl std::future::Future<Output = Result<Option<Self::Credential>, ApiError>> + Send {
        (**self).vouch(token, request)
    }
}

/// The peer's socket address.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        peer_of(parts).map(Peer)
    }
}

/// The peer address [`crate::serve::serve`] attached to the request.
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

/// An authenticated request: its credential and its peer.
pub struct Caller<S: Edge> {
    pub credential: S::Credential,
    pub peer: SocketAddr,
}

impl<S: Edge> FromRequestParts<S> for Caller<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let peer = peer_of(parts)?;
        let refused = match state.authenticate(&parts.headers, peer) {
            Ok(credential) => return Ok(Caller { credential, peer }),
            Err(refused) => refused,
        };
        let super::Presented::One(token) = super::presented_token(&parts.headers) else {
            return Err(refused);
        };
        match state.vouch(&token, parts).await? {
            Some(credential) => Ok(Caller { credential, peer }),
            None => Err(refused),
        }
    }
}

/// A JSON object body of type `T`, read up to the server's limit.
pub struct JsonBody<T>(pub T);

impl<S: Edge, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, state.body_limit()).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// The raw body, read up to the server's limit (a signed result is checked over its bytes).
pub struct RawBody(pub bytes::Bytes);

impl<S: Edge> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        read_body(req, state.body_limit()).await.map(RawBody)
    }
}

/// The raw body, at most `limit` bytes: a declared length over it is refused before a byte
/// is read, a chunked body as soon as it outgrows it.
pub async fn read_body(req: Request, limit: usize) -> Result<bytes::Bytes, ApiError> {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
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
    // Before decoding: serde_json would act on the reserved key while decoding (see
    // `sheratan_proto::json`).
    if sheratan_proto::json::has_reserved_key(bytes) {
        return Err(ApiError::invalid(format!(
            "the key {:?} is reserved and cannot appear in a request body",
            sheratan_proto::json::RESERVED_KEY
        )));
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

/// Path parameters of type `T` (a `String`, or a tuple of them); one that does not decode is
/// the contract's 400, not axum's plain-text rejection.
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| PathParams(value))
            .map_err(|e| ApiError::invalid(format!("bad path: {e}")))
    }
}

/// A query string of type `T`; unknown or malformed parameters are 400 naming them.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
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
