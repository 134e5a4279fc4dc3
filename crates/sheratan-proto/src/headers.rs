//! Header names of the wire contract, lower-case as HTTP/1.1 and HTTP/2 carry them.

/// Alternative to `Authorization: Bearer <token>`.
pub const TOKEN: &str = "x-sheratan-token";
/// Hex SHA-256 of a result's raw body.
pub const CONTENT_SHA256: &str = "x-sheratan-content-sha256";
/// `sha256=<hex HMAC-SHA256(token, raw body)>` over a result's raw body.
pub const SIGNATURE: &str = "x-sheratan-signature";
/// W3C Trace Context: on a submit, the trace the job joins; on a result, the handler's span.
pub const TRACEPARENT: &str = "traceparent";
/// Marks a request as a probe of `sheratan smoke`: `smoke.<nonce>.<unix seconds>.<hex
/// HMAC-SHA256(token, "smoke.<nonce>.<unix seconds>")>`. The hub records the nonce in the
/// audit line of what the probe provoked, and the audit watcher's rules skip it; a header
/// that does not verify with the hub's token (or is over five minutes off) is ignored.
pub const PROBE: &str = "x-sheratan-probe";
