//! The broker and the relay as Core reaches them: GETs with the mesh token whose answers are
//! decoded into their wire types, and whose refusals come back as the peer's own error (code,
//! message, hint); a peer that does not answer is 503 `UNAVAILABLE` naming it.

use serde::de::DeserializeOwned;
use sheratan_proto::{ErrorBody, ErrorCode};
use sheratan_runtime::edge::ApiError;

use crate::CoreState;

pub(crate) struct Peer<'a> {
    s: &'a CoreState,
    base: Option<&'a str>,
    name: &'static str,
    /// What to do when it is down.
    hint: &'static str,
}

impl<'a> Peer<'a> {
    pub(crate) fn broker(s: &'a CoreState) -> Self {
        Peer {
            s,
            base: s.config.broker_url.as_deref(),
            name: "broker",
            hint: "start it with sheratan broker (sheratan up runs one)",
        }
    }

    pub(crate) fn relay(s: &'a CoreState) -> Self {
        Peer {
            s,
            base: s.config.relay_url.as_deref(),
            name: "relay",
            hint: "start it with sheratan relay (sheratan up runs one)",
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// `GET {base}{path}` decoded as `T`.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let name = self.name;
        let Some(base) = self.base else {
            return Err(self.down(format!("no {name} configured")));
        };
        // Errors are shown to callers: the URL without its user-info.
        let shown = sheratan_proto::redact::url(base);
        let mut request = self
            .s
            .http
            .get(format!("{}{path}", base.trim_end_matches('/')));
        if let Some(t) = self.s.config.token.send() {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.map_err(|e| {
            self.down(format!(
                "{name} at {shown} did not answer: {}",
                e.without_url()
            ))
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            self.down(format!(
                "{name} at {shown} did not answer: {}",
                e.without_url()
            ))
        })?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| self.down(format!("{name} at {shown} answered nonsense: {e}")));
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(ApiError::new(
                body.error.code,
                body.error.message,
                body.error.hint,
            )),
            Err(_) => Err(self.down(format!("{name} at {shown} answered {status}"))),
        }
    }

    fn down(&self, message: String) -> ApiError {
        ApiError::new(ErrorCode::Unavailable, message, self.hint)
    }
}
