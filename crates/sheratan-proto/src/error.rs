//! The error body every endpoint answers with, and the contract's error codes with their
//! HTTP statuses (docs/API.md, "Wire rules").

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code. The HTTP status is a function of the code, so a
/// code can never be sent with the wrong status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    AuthFail,
    /// Authenticated, but this identity may not do this (a client certificate naming another
    /// node).
    Forbidden,
    LocalhostOnly,
    PortMismatch,
    InvalidRequest,
    PayloadTooLarge,
    NotFound,
    /// A known route with the wrong method (docs/DECISIONS.md, "HTTP").
    MethodNotAllowed,
    IdempotencyKeyCollision,
    LeaseExpired,
    /// Something by that name exists already (a credential's name).
    Conflict,
    BackpressureDrop,
    ResultIntegrityFail,
    Internal,
    Unavailable,
    /// A code this client version does not know (a newer server). Never sent by a server.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code a server sends (not `Unknown`), in the contract's order.
    pub const SENT: [ErrorCode; 15] = [
        ErrorCode::AuthFail,
        ErrorCode::Forbidden,
        ErrorCode::LocalhostOnly,
        ErrorCode::PortMismatch,
        ErrorCode::InvalidRequest,
        ErrorCode::PayloadTooLarge,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::IdempotencyKeyCollision,
        ErrorCode::LeaseExpired,
        ErrorCode::Conflict,
        ErrorCode::BackpressureDrop,
        ErrorCode::ResultIntegrityFail,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
    ];

    /// The HTTP status this code is always sent with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::AuthFail | ErrorCode::Forbidden | ErrorCode::LocalhostOnly => 403,
            ErrorCode::PortMismatch => 421,
            ErrorCode::InvalidRequest => 400,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::IdempotencyKeyCollision | ErrorCode::LeaseExpired | ErrorCode::Conflict => {
                409
            }
            ErrorCode::BackpressureDrop => 429,
            ErrorCode::ResultIntegrityFail => 422,
            ErrorCode::Internal | ErrorCode::Unknown => 500,
            ErrorCode::Unavailable => 503,
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::AuthFail => "AUTH_FAIL",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::LocalhostOnly => "LOCALHOST_ONLY",
            ErrorCode::PortMismatch => "PORT_MISMATCH",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::IdempotencyKeyCollision => "IDEMPOTENCY_KEY_COLLISION",
            ErrorCode::LeaseExpired => "LEASE_EXPIRED",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::BackpressureDrop => "BACKPRESSURE_DROP",
            ErrorCode::ResultIntegrityFail => "RESULT_INTEGRITY_FAIL",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }
}

/// The schema lists the codes a server sends; `Unknown` is this crate's name for a code from a
/// newer server, never on the wire.
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(ErrorCode::SENT.iter().map(|c| c.as_str())))
            .description(Some(
                "A stable, machine-readable error code; the HTTP status is a function of the \
                 code. A client should treat a code it does not know (a newer server's) as \
                 INTERNAL.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for ErrorCode {}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"error": {"code": …, "message": …, "hint": …}}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
    /// What to do about it, for a person. Empty when there is nothing useful to say.
    #[serde(default)]
    pub hint: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_as_screaming_snake_case() {
        for code in [
            ErrorCode::AuthFail,
            ErrorCode::PortMismatch,
            ErrorCode::IdempotencyKeyCollision,
            ErrorCode::ResultIntegrityFail,
        ] {
            let text = serde_json::to_string(&code).unwrap();
            assert_eq!(text, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&text).unwrap(), code);
        }
    }

    /// `SENT` names every code but `Unknown`: a new code without a place in it fails here.
    #[test]
    fn sent_lists_every_code_a_server_sends() {
        for code in ErrorCode::SENT {
            match code {
                ErrorCode::AuthFail
                | ErrorCode::Forbidden
                | ErrorCode::LocalhostOnly
                | ErrorCode::PortMismatch
                | ErrorCode::InvalidRequest
                | ErrorCode::PayloadTooLarge
                | ErrorCode::NotFound
                | ErrorCode::MethodNotAllowed
                | ErrorCode::IdempotencyKeyCollision
                | ErrorCode::LeaseExpired
                | ErrorCode::Conflict
                | ErrorCode::BackpressureDrop
                | ErrorCode::ResultIntegrityFail
                | ErrorCode::Internal
                | ErrorCode::Unavailable => {}
                ErrorCode::Unknown => panic!("Unknown is never sent"),
            }
        }
        let distinct: std::collections::HashSet<_> = ErrorCode::SENT.iter().collect();
        // One fewer than the variants: every one but `Unknown` (the match above is exhaustive).
        assert_eq!(distinct.len(), 15);
    }

    #[test]
    fn unknown_codes_from_newer_servers_do_not_fail_decoding() {
        let body: ErrorBody =
            serde_json::from_str(r#"{"error":{"code":"SOMETHING_NEW","message":"m"}}"#).unwrap();
        assert_eq!(body.error.code, ErrorCode::Unknown);
        assert_eq!(body.error.hint, "");
    }
}
