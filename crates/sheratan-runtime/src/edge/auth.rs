//! Tokens as requests present them, and the mesh-token check of the servers that are not the
//! hub (the hub has its own authority, with rotation and audit events, built on
//! [`presented_token`]).

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use sheratan_proto::ErrorCode;
use subtle::ConstantTimeEq;

use super::ApiError;

/// The token a request presents, in `Authorization: Bearer …` and/or `X-Sheratan-Token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    None,
    One(String),
    /// Two different tokens (in the two headers, or a header repeated). Refused outright: a
    /// request that may carry many guesses and succeed if any one matches turns every
    /// request into a batch of a brute force.
    Conflicting,
}

/// Reads the token a request presents. The same token in both headers is one token. A value
/// that is not valid UTF-8 is kept (lossily) so the failure reads "invalid", not "missing".
pub fn presented_token(headers: &HeaderMap) -> Presented {
    let bearer = headers.get_all(header::AUTHORIZATION).iter().map(|value| {
        let text = String::from_utf8_lossy(value.as_bytes());
        let text = text.trim();
        match text.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim().to_owned(),
            _ => text.to_owned(),
        }
    });
    let plain = headers
        .get_all(sheratan_proto::headers::TOKEN)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).trim().to_owned());
    let mut found: Option<String> = None;
    for token in bearer.chain(plain) {
        match &found {
            None => found = Some(token),
            Some(first) if *first == token => {}
            Some(_) => return Presented::Conflicting,
        }
    }
    found.map_or(Presented::None, Presented::One)
}

/// The message and hint of a refused mesh token, shared by every server.
pub fn auth_fail(presented: &Presented) -> ApiError {
    let (message, hint) = match presented {
        Presented::None => (
            "no token: send Authorization: Bearer <token> or X-Sheratan-Token: <token>",
            "the token is the hub's SHERATAN_HUB_TOKEN, or the file $SHERATAN_HOME/hub_token on the hub's machine",
        ),
        Presented::Conflicting => (
            "the request presents two different tokens",
            "send one token, in Authorization: Bearer <token> or in X-Sheratan-Token",
        ),
        Presented::One(_) => (
            "the token does not match the hub's SHERATAN_HUB_TOKEN",
            "use the hub's SHERATAN_HUB_TOKEN (or the contents of $SHERATAN_HOME/hub_token on the hub's machine)",
        ),
    };
    ApiError::new(ErrorCode::AuthFail, message, hint)
}

/// Checks the request's token against the accepted ones (one, or both of a rotation) in
/// constant time, as SHA-256 digests so the length does not leak either. `None` accepted
/// means authentication is off (an explicit, logged opt-out of the operator's).
pub fn check_mesh_token(headers: &HeaderMap, accepted: Option<&[&str]>) -> Result<(), ApiError> {
    let Some(accepted) = accepted else {
        return Ok(());
    };
    let presented = presented_token(headers);
    if let Presented::One(token) = &presented {
        let got: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every accepted token is compared, so which one matched does not show in the time.
        let found = accepted
            .iter()
            .fold(subtle::Choice::from(0), |found, want| {
                let want: [u8; 32] = Sha256::digest(want.as_bytes()).into();
                found | got.ct_eq(&want)
            });
        if bool::from(found) {
            return Ok(());
        }
    }
    Err(auth_fail(&presented))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn one_token_in_either_or_both_headers() {
        assert_eq!(presented_token(&headers(&[])), Presented::None);
        assert_eq!(
            presented_token(&headers(&[("authorization", "Bearer abc")])),
            Presented::One("abc".into())
        );
        assert_eq!(
            presented_token(&headers(&[("x-sheratan-token", " abc ")])),
            Presented::One("abc".into())
        );
        assert_eq!(
            presented_token(&headers(&[
                ("authorization", "bearer abc"),
                ("x-sheratan-token", "abc")
            ])),
            Presented::One("abc".into())
        );
    }

    #[test]
    fn two_different_tokens_are_refused_even_if_one_is_right() {
        let right = "right-token-0123456789";
        let both = headers(&[
            ("authorization", "Bearer wrong-guess"),
            ("x-sheratan-token", right),
        ]);
        assert_eq!(presented_token(&both), Presented::Conflicting);
        assert!(check_mesh_token(&both, Some(&[right])).is_err());
        let mut many = headers(&[]);
        for i in 0..90 {
            many.append(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer guess-{i}")).unwrap(),
            );
        }
        many.append(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {right}")).unwrap(),
        );
        assert!(check_mesh_token(&many, Some(&[right])).is_err());
        assert!(
            check_mesh_token(
                &headers(&[("authorization", &format!("Bearer {right}"))]),
                Some(&["other-token-0123456789", right])
            )
            .is_ok()
        );
    }

    #[test]
    fn no_accepted_tokens_means_authentication_is_off() {
        assert!(check_mesh_token(&headers(&[]), None).is_ok());
        assert!(check_mesh_token(&headers(&[]), Some(&["x"])).is_err());
    }
}
