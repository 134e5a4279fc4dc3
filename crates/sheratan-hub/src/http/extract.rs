//! The hub's side of the shared edge (`sheratan_runtime::edge`): how a caller authenticates
//! against the hub's token authority (with its rotation and AUTH_FAIL events), and the
//! loopback rule of the admin path (with its event). Bodies, queries and peers are the
//! edge's extractors, re-exported here.

use std::net::SocketAddr;

use axum::http::HeaderMap;
use sheratan_proto::EventKind;
use sheratan_runtime::edge::{self, Presented};

pub use sheratan_runtime::edge::{
    JsonBody, PathParams, Peer, QueryParams, RawBody, is_loopback, parse_json, peer_of,
    peer_of_request, read_body,
};

use super::plane::PlaneState;
use crate::audit::Event;
use crate::auth::{AuthFailure, Credential};
use crate::credentials::Lookup;
use sheratan_runtime::edge::ApiError;

/// An authenticated request to the hub: which token matched (or auth disabled) and the peer.
pub type Caller = edge::Caller<PlaneState>;

impl edge::Edge for PlaneState {
    type Credential = Credential;

    fn authenticate(&self, headers: &HeaderMap, peer: SocketAddr) -> Result<Credential, ApiError> {
        authenticate(headers, peer, self).map(|caller| caller.credential)
    }

    fn body_limit(&self) -> usize {
        self.hub.config.max_body_bytes
    }
}

/// Checks the request's token. On failure emits AUTH_FAIL and answers 403 with a message
/// that tells the operator which token to use.
pub fn authenticate(
    headers: &HeaderMap,
    peer: SocketAddr,
    state: &PlaneState,
) -> Result<Caller, ApiError> {
    let presented = edge::presented_token(headers);
    let checked = match &presented {
        Presented::None => state.hub.tokens.check(None, peer.ip(), state.plane),
        Presented::One(token) => match named(token, state) {
            Some(result) => result,
            None => state.hub.tokens.check(Some(token), peer.ip(), state.plane),
        },
        Presented::Conflicting => Err(state.hub.tokens.refuse_conflicting()),
    };
    match checked {
        Ok(credential) => Ok(Caller { credential, peer }),
        Err(failure) => {
            state.hub.audit.emit(
                Event::new(EventKind::AuthFail, state.plane)
                    .remote(peer.ip())
                    .detail(serde_json::json!({ "reason": failure.reason() }))
                    .probe(probe(state, headers)),
            );
            Err(match failure {
                AuthFailure::OldToken => ApiError::new(
                    sheratan_proto::ErrorCode::AuthFail,
                    "the token was retired by a token rotation",
                    "use the new token (the rotation's SHERATAN_HUB_TOKEN_NEXT)",
                ),
                _ => edge::auth_fail(&presented),
            })
        }
    }
}

/// A credential's secret (`shtc_…`) found in memory: valid, or refused with why; `None` when
/// it is no credential (then it may still be the mesh token).
fn named(token: &str, state: &PlaneState) -> Option<Result<Credential, AuthFailure>> {
    if !token.starts_with(crate::credentials::SECRET_PREFIX) || !state.hub.tokens.required() {
        return None;
    }
    match state.hub.credentials.lookup(token, state.hub.clock.now()) {
        Lookup::Unknown => None,
        Lookup::Valid(record) => Some(Ok(Credential::Named(record))),
        Lookup::Refused(why) => Some(Err(state.hub.tokens.refuse(match why {
            "revoked" => AuthFailure::Revoked,
            "expired" => AuthFailure::Expired,
            _ => AuthFailure::Stale,
        }))),
    }
}

/// The nonce of a verified `sheratan smoke` probe header on the request, for the audit line
/// of what it provoked.
pub fn probe(state: &PlaneState, headers: &HeaderMap) -> Option<String> {
    let value = headers.get(sheratan_proto::headers::PROBE)?.to_str().ok()?;
    state.hub.tokens.verify_probe(value)
}

/// Requires a loopback peer; otherwise LOCALHOST_ONLY (and its event).
pub fn require_loopback(
    peer: SocketAddr,
    headers: &HeaderMap,
    state: &PlaneState,
    route: &str,
) -> Result<(), ApiError> {
    if is_loopback(peer.ip()) {
        return Ok(());
    }
    state.hub.audit.emit(
        Event::new(EventKind::LocalhostOnly, state.plane)
            .remote(peer.ip())
            .detail(serde_json::json!({ "route": route }))
            .probe(probe(state, headers)),
    );
    Err(ApiError::localhost_only(
        route,
        "run the request on the hub's machine (127.0.0.1), e.g. over ssh",
    ))
}

/// The admin path's caller: token first, then loopback (docs/API.md, "Wire rules",
/// precedence).
/// A caller on the admin path: authenticated, from a loopback peer.
pub struct Admin {
    pub peer: std::net::SocketAddr,
    pub credential: crate::auth::Credential,
}

impl axum::extract::FromRequestParts<PlaneState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &PlaneState,
    ) -> Result<Self, ApiError> {
        let caller = <Caller as axum::extract::FromRequestParts<PlaneState>>::from_request_parts(
            parts, state,
        )
        .await?;
        // An admin credential may use the admin path from any address; the loopback rule
        // stays for the mesh token. Other roles never reach here (the role check refuses).
        match caller.credential.named() {
            Some(record) if record.role == sheratan_proto::credentials::CredentialRole::Admin => {}
            Some(record) => {
                return Err(crate::http::roles::forbidden(record, "use the admin path"));
            }
            None => require_loopback(caller.peer, &parts.headers, state, "/admin")?,
        }
        Ok(Admin {
            peer: caller.peer,
            credential: caller.credential,
        })
    }
}

/// The name of the client certificate the caller's connection presented (mutual TLS,
/// `SHERATAN_TLS_CLIENT_CA`); `None` without one.
pub struct PeerCert(pub Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PeerCert {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let cert = parts
            .extensions
            .get::<sheratan_runtime::tls::ClientCert>()
            .map(|c| c.0.clone());
        Ok(PeerCert(cert))
    }
}

impl PeerCert {
    /// A node heartbeats and leases only as the node its certificate names: anyone else is
    /// audited (CLIENT_CERT_MISMATCH) and refused with 403 FORBIDDEN.
    pub fn require_node(
        &self,
        node_id: &str,
        peer: SocketAddr,
        state: &PlaneState,
    ) -> Result<(), ApiError> {
        let Some(name) = &self.0 else {
            return Ok(());
        };
        if name == node_id {
            return Ok(());
        }
        state.hub.audit.emit(
            Event::new(EventKind::ClientCertMismatch, state.plane)
                .remote(peer.ip())
                .node(node_id)
                .detail(serde_json::json!({ "certificate": name })),
        );
        Err(ApiError::new(
            sheratan_proto::ErrorCode::Forbidden,
            if name.is_empty() {
                format!("the client certificate names no node (no common name), not {node_id:?}")
            } else {
                format!("the client certificate names node {name:?}, not {node_id:?}")
            },
            "a node acts only as the node id its certificate names (sheratan tls cert --client --name NODE_ID)",
        ))
    }
}

/// A node credential acts only as the node it is named after: another node id is audited
/// (IDENTITY_MISMATCH) and refused 403 FORBIDDEN. Other credentials pass (their role decided
/// whether they got here).
pub fn require_identity(
    caller: &Caller,
    node_id: &str,
    state: &PlaneState,
) -> Result<(), ApiError> {
    let Some(record) = caller.credential.named() else {
        return Ok(());
    };
    if record.role != sheratan_proto::credentials::CredentialRole::Node || record.name == node_id {
        return Ok(());
    }
    state.hub.audit.emit(
        Event::new(EventKind::IdentityMismatch, state.plane)
            .remote(caller.peer.ip())
            .node(node_id)
            .by(&caller.credential),
    );
    state.hub.role_refusals.count(record.role);
    Err(crate::http::roles::forbidden(
        record,
        &format!("act as node {node_id:?} (a node credential is its own node only)"),
    ))
}
