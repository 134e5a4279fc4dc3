//! [`MeshToken`]: the token a mesh member sends, and the tokens it accepts from others, shared
//! by every client and server of one process and replaceable while they run.
//!
//! A token rotation (docs/API.md, "Settings") finalizes without a restart on the hub; the components that
//! `sheratan up` runs beside the hub follow it through one `MeshToken`: when a rotation starts
//! they send the next token (the hub accepts both) and accept both; when it finalizes, only the
//! new one. A component given a plain token keeps it (`From<Option<String>>`).

use std::sync::{Arc, RwLock};

use reqwest::header::HeaderValue;

/// A cheap, cloneable handle; clones see every [`MeshToken::set`].
#[derive(Clone, Default)]
pub struct MeshToken(Arc<RwLock<Arc<TokenState>>>);

/// One consistent reading of a [`MeshToken`].
#[derive(Default)]
pub struct TokenState {
    /// Sent with requests and used to sign results; `None` when authentication is off.
    send: Option<String>,
    /// Accepted from others besides `send` (the other token of a rotation).
    also_accept: Option<String>,
    /// `Bearer <send>`, built once per change.
    authorization: Option<HeaderValue>,
}

impl TokenState {
    /// The token to send (and to sign results with).
    pub fn send(&self) -> Option<&str> {
        self.send.as_deref()
    }

    /// The tokens a server of this process accepts; `None` when authentication is off.
    pub fn accepted(&self) -> Option<Vec<&str>> {
        let send = self.send.as_deref()?;
        Some(
            std::iter::once(send)
                .chain(self.also_accept.as_deref())
                .collect(),
        )
    }

    pub(crate) fn authorization(&self) -> Option<&HeaderValue> {
        self.authorization.as_ref()
    }
}

impl MeshToken {
    /// A token that will not change unless [`MeshToken::set`] is called.
    pub fn new(token: Option<String>) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(state(token, None)))))
    }

    /// Sends `send` from now on and accepts `also_accept` as well.
    pub fn set(&self, send: Option<String>, also_accept: Option<String>) {
        let next = Arc::new(state(send, also_accept));
        if next.send.is_some() && next.authorization.is_none() {
            // The hub validates tokens, so this should not happen; if it does, requests go out
            // without one and the hub's AUTH_FAIL follows: say why here.
            tracing::error!("the new mesh token contains characters a header cannot carry");
        }
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = next;
    }

    /// The state now; a caller that sends and signs uses one reading for both.
    pub fn load(&self) -> Arc<TokenState> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The token sent now.
    pub fn send(&self) -> Option<String> {
        self.load().send.clone()
    }

    /// `required`, or `disabled` when this component runs without authentication (the
    /// operator's explicit `SHERATAN_HUB_TOKEN_REQUIRED=0`), as `/health` shows it.
    pub fn auth_mode(&self) -> sheratan_proto::health::AuthMode {
        if self.load().send.is_some() {
            sheratan_proto::health::AuthMode::Required
        } else {
            sheratan_proto::health::AuthMode::Disabled
        }
    }

    /// Whether the token sent now fits in a header (a token with control characters does not).
    pub(crate) fn is_sendable(&self) -> bool {
        let state = self.load();
        state.send.is_none() || state.authorization.is_some()
    }
}

impl From<Option<String>> for MeshToken {
    fn from(token: Option<String>) -> Self {
        MeshToken::new(token)
    }
}

impl std::fmt::Debug for MeshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.load();
        f.debug_struct("MeshToken")
            .field("send", &state.send.as_ref().map(|_| "<redacted>"))
            .field(
                "also_accept",
                &state.also_accept.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

fn state(send: Option<String>, also_accept: Option<String>) -> TokenState {
    let authorization = send.as_ref().and_then(|t| {
        let mut value = HeaderValue::from_str(&format!("Bearer {t}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    });
    TokenState {
        send,
        also_accept,
        authorization,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_follow_a_rotation() {
        let token = MeshToken::new(Some("old".into()));
        let clone = token.clone();
        assert_eq!(clone.load().accepted(), Some(vec!["old"]));
        token.set(Some("new".into()), Some("old".into()));
        assert_eq!(clone.send().as_deref(), Some("new"));
        assert_eq!(clone.load().accepted(), Some(vec!["new", "old"]));
        token.set(Some("new".into()), None);
        assert_eq!(clone.load().accepted(), Some(vec!["new"]));
    }

    #[test]
    fn no_token_means_authentication_is_off() {
        let token = MeshToken::new(None);
        assert_eq!(token.load().accepted(), None);
        assert!(token.load().authorization().is_none());
        assert!(token.is_sendable());
    }

    #[test]
    fn a_token_a_header_cannot_carry_is_reported() {
        assert!(!MeshToken::new(Some("bad\ntoken".into())).is_sendable());
    }

    #[test]
    fn debug_output_hides_the_token() {
        let shown = format!("{:?}", MeshToken::new(Some("s3cret".into())));
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
