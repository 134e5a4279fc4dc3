//! What a token may be: visible ASCII of a sane length, and strong unless the operator
//! allowed otherwise; and the `Secret` that carries one without printing it.

use std::io;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

/// The token that is accepted only when set explicitly, and then with a WEAK_TOKEN warning.
pub const WEAK_DEFAULT_TOKEN: &str = "shared-secret";
/// Tokens shorter than this are reported as weak too.
pub const MIN_STRONG_TOKEN_LEN: usize = 16;

/// A secret string whose `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub(crate) fn digest(&self) -> [u8; 32] {
        digest(&self.0)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Tokens are compared as SHA-256 digests, so neither content nor length shows in the time.
pub(crate) fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Tokens travel in HTTP headers and live in a file read back with whitespace trimmed: only
/// visible ASCII (no spaces, no control characters) survives both unchanged.
pub fn validate_token(what: &str, token: &str) -> Result<(), TokenError> {
    if token.is_empty() {
        return Err(TokenError::Invalid(format!(
            "{what} is empty; unset it to use a generated token, or set a long random value"
        )));
    }
    if token.len() > 512 {
        return Err(TokenError::Invalid(format!(
            "{what} is longer than 512 bytes"
        )));
    }
    if !token.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(TokenError::Invalid(format!(
            "{what} may contain only visible ASCII characters (no spaces or control characters)"
        )));
    }
    if token.starts_with(crate::credentials::SECRET_PREFIX) {
        return Err(TokenError::Invalid(format!(
            "{what} starts with {}, which marks a credential's secret: pick another value",
            crate::credentials::SECRET_PREFIX
        )));
    }
    Ok(())
}

/// A weak token is refused unless the operator allowed it (`SHERATAN_ALLOW_WEAK_TOKEN=1`):
/// a 6-character token falls to a brute force in minutes, however the hub paces refusals.
pub fn check_strength(what: &str, token: &str, allow_weak: bool) -> Result<(), TokenError> {
    if allow_weak || !is_weak(token) {
        return Ok(());
    }
    Err(TokenError::Invalid(format!(
        "{what} is weak ({}): use a random value of at least {MIN_STRONG_TOKEN_LEN} characters (e.g. `openssl rand -hex 32`), or unset SHERATAN_HUB_TOKEN to have one generated; SHERATAN_ALLOW_WEAK_TOKEN=1 accepts it anyway (then WEAK_TOKEN is logged)",
        weak_reason(token)
    )))
}

/// The literal default or shorter than [`MIN_STRONG_TOKEN_LEN`]: reported as `WEAK_TOKEN`.
pub fn is_weak(token: &str) -> bool {
    token == WEAK_DEFAULT_TOKEN || token.len() < MIN_STRONG_TOKEN_LEN
}

pub(crate) fn weak_reason(token: &str) -> &'static str {
    if token == WEAK_DEFAULT_TOKEN {
        "the well-known default token"
    } else {
        "shorter than 16 characters"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_must_survive_headers_and_files() {
        assert!(validate_token("t", "").is_err());
        assert!(validate_token("t", "has space-0123456789").is_err());
        assert!(validate_token("t", "tab\t0123456789abcdef").is_err());
        assert!(validate_token("t", &"x".repeat(513)).is_err());
        assert!(validate_token("t", &"x".repeat(512)).is_ok());
        assert!(validate_token("t", "Visible~ASCII!0123").is_ok());
    }

    #[test]
    fn weak_means_the_default_or_short() {
        assert!(is_weak(WEAK_DEFAULT_TOKEN));
        assert!(is_weak("fifteen-chars-x"));
        assert!(!is_weak("sixteen-chars-xx"));
        let err = check_strength("SHERATAN_HUB_TOKEN", "short", false).unwrap_err();
        assert!(err.to_string().contains("shorter than 16"), "{err}");
        assert!(check_strength("SHERATAN_HUB_TOKEN", "short", true).is_ok());
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "<redacted>");
    }
}
