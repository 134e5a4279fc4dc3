//! HTTP helpers shared by the executors' and Core's servers: the contract's error body and
//! the mesh-token check (the hub has its own, richer authority with rotation and events).

// The `Err` of these helpers is the finished error response; it is only built on the error
// path, so its size costs nothing on the happy one.
#![allow(clippy::result_large_err)]

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use sheratan_proto::{ErrorBody, ErrorCode, ErrorDetail};
use subtle::ConstantTimeEq;

/// `{"error": {"code", "message", "hint"}}` with the code's status.
pub fn error(code: ErrorCode, message: impl Into<String>, hint: impl Into<String>) -> Response {
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        axum::Json(ErrorBody {
            error: ErrorDetail {
                code,
                message: message.into(),
                hint: hint.into(),
            },
        }),
    )
        .into_response()
}

/// Tokens presented in `Authorization: Bearer …` or `X-Sheratan-Token`.
pub fn presented_tokens(headers: &HeaderMap) -> Vec<String> {
    let mut out = Vec::new();
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

/// Checks the request's token against `expected` in constant time (as SHA-256 digests, so
/// the length does not leak either). `None` expected means authentication is off.
pub fn check_token(headers: &HeaderMap, expected: Option<&str>) -> Result<(), Response> {
    check_tokens(headers, expected.map(|t| vec![t]).as_deref())
}

/// Like [`check_token`] with several accepted tokens (both tokens of a rotation); `None`
/// means authentication is off.
pub fn check_tokens(headers: &HeaderMap, accepted: Option<&[&str]>) -> Result<(), Response> {
    let Some(accepted) = accepted else {
        return Ok(());
    };
    let wanted: Vec<[u8; 32]> = accepted
        .iter()
        .map(|t| Sha256::digest(t.as_bytes()).into())
        .collect();
    let presented = presented_tokens(headers);
    if presented.iter().any(|t| {
        let got: [u8; 32] = Sha256::digest(t.as_bytes()).into();
        // Every accepted token is compared, so which one matched does not show in the time.
        wanted
            .iter()
            .fold(subtle::Choice::from(0), |found, want| {
                found | got.ct_eq(want)
            })
            .into()
    }) {
        return Ok(());
    }
    let message = if presented.is_empty() {
        "no token: send Authorization: Bearer <token> or X-Sheratan-Token: <token>"
    } else {
        "the token does not match the hub's SHERATAN_HUB_TOKEN"
    };
    Err(error(
        ErrorCode::AuthFail,
        message,
        "use the mesh token (SHERATAN_HUB_TOKEN, or $SHERATAN_HOME/hub_token on the hub's machine)",
    ))
}

/// What a refused body should become.
const BODY_HINT: &str = "send one JSON object and fix the field the message names";

/// A JSON body or the contract's 400 naming the field.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Response> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(error(
            ErrorCode::InvalidRequest,
            "the request body must be a JSON object",
            BODY_HINT,
        ));
    }
    // See `sheratan_proto::json`: such a body would not survive being printed and read back,
    // and serde_json acts on the key while decoding, so it is checked first.
    if sheratan_proto::json::has_reserved_key(bytes) {
        return Err(error(
            ErrorCode::InvalidRequest,
            format!(
                "the key {:?} is reserved and cannot appear in a request body",
                sheratan_proto::json::RESERVED_KEY
            ),
            "rename the key",
        ));
    }
    let value = serde_json::from_slice(bytes).map_err(|e| {
        error(
            ErrorCode::InvalidRequest,
            format!("malformed request: {e}"),
            BODY_HINT,
        )
    })?;
    Ok(value)
}
