//! What the hub says about other callers' tokens, for servers that take the hub's credentials
//! (Core, the broker, the relay): asked once per token (`GET /v1/whoami`) and remembered
//! [`VOUCH_TTL`], so a revocation reaches them within it and a busy caller costs the hub one
//! question per token per [`VOUCH_TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sheratan_proto::credentials::Whoami;

use crate::{ClientError, DataClient, MeshToken};

/// How long the hub's answer about a token is believed.
pub const VOUCH_TTL: Duration = Duration::from_secs(2);

/// The most tokens remembered at once; past it the memory starts over.
const MAX_REMEMBERED: usize = 10_000;

/// When the hub was asked about a token, and its answer (`None`: refused).
type Vouch = (Instant, Option<Arc<Whoami>>);

/// The memory of the hub's answers.
#[derive(Default)]
pub struct Vouches(Mutex<HashMap<String, Vouch>>);

impl Vouches {
    /// Whether a token presented to a server on `own` is worth asking the hub about: one that
    /// can be a credential, or anything when the server itself runs on a credential (then the
    /// mesh token is someone else's). Junk never turns into hub calls.
    pub fn worth_asking(own: &MeshToken, presented: &str) -> bool {
        let on_credential = own
            .send()
            .is_some_and(|t| t.starts_with(crate::CREDENTIAL_PREFIX));
        on_credential || presented.starts_with(crate::CREDENTIAL_PREFIX)
    }

    /// The hub's word on `token` (`None`: it refuses it), asked through `data` (whose own
    /// token is replaced by `token` for the question).
    pub async fn check(
        &self,
        data: &DataClient,
        token: &str,
    ) -> Result<Option<Arc<Whoami>>, ClientError> {
        if let Some(known) = self.remembered(token) {
            return Ok(known);
        }
        let who = match data.with_token(token.to_owned()).whoami().await {
            Ok(who) => Some(Arc::new(who)),
            Err(ClientError::Api { status: 403, .. }) => None,
            Err(other) => return Err(other),
        };
        self.remember(token, who.clone());
        Ok(who)
    }

    fn remembered(&self, token: &str) -> Option<Option<Arc<Whoami>>> {
        let map = self.0.lock().expect("vouches");
        map.get(token)
            .filter(|(at, _)| at.elapsed() < VOUCH_TTL)
            .map(|(_, who)| who.clone())
    }

    fn remember(&self, token: &str, who: Option<Arc<Whoami>>) {
        let mut map = self.0.lock().expect("vouches");
        if map.len() >= MAX_REMEMBERED {
            map.clear();
        }
        map.insert(token.to_owned(), (Instant::now(), who));
    }
}
