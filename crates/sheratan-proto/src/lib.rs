//! Wire types of every Sheratan API: requests, responses, error codes, event names and header
//! names. Everything that crosses a socket is defined here once, so servers and clients cannot
//! drift apart. This crate knows serde and nothing else: no tokio, no axum, no SQL.

pub mod auction;
pub mod control;
pub mod core_api;
pub mod credentials;
pub mod data;
pub mod error;
pub mod event;
pub mod headers;
pub mod health;
pub mod ids;
pub mod json;
pub mod progress;
pub mod queues;
pub mod redact;
pub mod relay;
pub mod schedules;
pub mod stream;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use event::{AuditRecord, EventKind, Plane, Severity};

/// The version every component reports in `/health` and heartbeats.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// RFC 3339 (de)serialization for `time::OffsetDateTime`, re-exported so dependants need not
/// name the `time` feature themselves.
pub use time::serde::rfc3339;
