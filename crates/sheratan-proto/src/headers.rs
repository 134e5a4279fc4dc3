//! Header names of the wire contract, lower-case as HTTP/1.1 and HTTP/2 carry them.

/// Alternative to `Authorization: Bearer <token>`.
pub const TOKEN: &str = "x-sheratan-token";
/// Hex SHA-256 of a result's raw body.
pub const CONTENT_SHA256: &str = "x-sheratan-content-sha256";
/// `sha256=<hex HMAC-SHA256(token, raw body)>` over a result's raw body.
pub const SIGNATURE: &str = "x-sheratan-signature";
