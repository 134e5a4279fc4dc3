//! `ApiError`: the one error type of every server. It maps to a status and a stable code
//! (docs/API.md, "Errors") and carries a client message apart from the internal one, which is
//! logged and never sent: a 500 tells the client only "internal error".

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sheratan_proto::{ErrorBody, ErrorCode, ErrorDetail};

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub hint: String,
    pub retry_after_s: Option<u64>,
    /// Logged where the response is made; never sent.
    pub internal: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            hint: hint.into(),
            retry_after_s: None,
            internal: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            ErrorCode::InvalidRequest,
            message,
            "fix the request as the message says; docs/API.md lists the routes and the wire rules",
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message, "")
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body is larger than the limit of {limit} bytes"),
            "send a smaller body; batch large work into several requests",
        )
    }

    pub fn internal(internal: impl std::fmt::Display) -> Self {
        Self {
            internal: Some(internal.to_string()),
            ..Self::new(
                ErrorCode::Internal,
                "internal error",
                "the server logged the cause; see its log",
            )
        }
    }

    pub fn localhost_only(route: &str, hint: impl Into<String>) -> Self {
        Self::new(
            ErrorCode::LocalhostOnly,
            format!("{route} answers loopback peers only"),
            hint,
        )
    }

    pub fn unavailable(message: impl Into<String>, internal: impl std::fmt::Display) -> Self {
        Self {
            internal: Some(internal.to_string()),
            ..Self::new(ErrorCode::Unavailable, message, "retry later")
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(internal) = &self.internal {
            tracing::error!(code = %self.code, error = %internal, "request failed");
        }
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                hint: self.hint,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
