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

/// Tokens the hub refused that one caller address may have asked about per minute; past it,
/// new tokens from that address are refused without asking the hub (junk must not turn into a
/// stream of hub calls, whose AUTH_FAIL lines would name this server, not the caller).
pub const MAX_UNKNOWN_PER_MINUTE: u32 = 20;

/// When the hub was asked about a token, and its answer (`None`: refused).
type Vouch = (Instant, Option<Arc<Whoami>>);

/// How long a token the hub vouched for stays exempt from the hold-off of its address: a
/// flood of junk from a shared address (a NAT, everything on loopback) must not lock out the
/// people already signed in there.
const KNOWN_FOR: Duration = Duration::from_secs(600);

/// The memory of the hub's answers, and of who keeps presenting tokens the hub refuses.
#[derive(Default)]
pub struct Vouches {
    answers: Mutex<HashMap<String, Vouch>>,
    /// Tokens the hub vouched for lately (exempt from the hold-off; never trusted from here).
    known: Mutex<HashMap<String, Instant>>,
    unknown: Mutex<HashMap<std::net::IpAddr, (Instant, u32)>>,
}

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

    /// The hub's word on a token presented to a server running on `own`: `None` when it is
    /// not worth asking ([`Vouches::worth_asking`]) or the hub refuses it.
    pub async fn ask(
        &self,
        own: &MeshToken,
        data: &DataClient,
        token: &str,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Option<Arc<Whoami>>, ClientError> {
        if !Self::worth_asking(own, token) {
            return Ok(None);
        }
        self.check(data, token, peer).await
    }

    /// The hub's word on `token` (`None`: it refuses it), asked through `data` (whose own
    /// token is replaced by `token` for the question); `peer` is who presented it, held to
    /// [`MAX_UNKNOWN_PER_MINUTE`].
    pub async fn check(
        &self,
        data: &DataClient,
        token: &str,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Option<Arc<Whoami>>, ClientError> {
        if let Some(known) = self.remembered(token) {
            return Ok(known);
        }
        if !self.known_lately(token) && peer.is_some_and(|ip| self.too_many_unknown(ip, false)) {
            return Ok(None);
        }
        let who = match data.with_token(token.to_owned()).whoami().await {
            Ok(who) => Some(Arc::new(who)),
            Err(ClientError::Api { status: 403, .. }) => None,
            Err(other) => return Err(other),
        };
        match (&who, peer) {
            (None, Some(ip)) => {
                self.too_many_unknown(ip, true);
            }
            (Some(_), _) => self.know(token),
            (None, None) => {}
        }
        self.remember(token, who.clone());
        Ok(who)
    }

    fn known_lately(&self, token: &str) -> bool {
        let map = self.known.lock().expect("vouches");
        map.get(token).is_some_and(|at| at.elapsed() < KNOWN_FOR)
    }

    fn know(&self, token: &str) {
        let mut map = self.known.lock().expect("vouches");
        if map.len() >= MAX_REMEMBERED {
            map.retain(|_, at| at.elapsed() < KNOWN_FOR);
        }
        if map.len() < MAX_REMEMBERED {
            map.insert(token.to_owned(), Instant::now());
        }
    }

    /// Whether `ip` (an IPv6 address counts as its /64, as the connection limits do) used up
    /// its unknown tokens this minute; `count` adds one.
    fn too_many_unknown(&self, ip: std::net::IpAddr, count: bool) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                std::net::IpAddr::V6(bits.into())
            }
            v4 => v4,
        };
        let mut map = self.unknown.lock().expect("vouches");
        if map.len() >= MAX_REMEMBERED {
            // Forget finished minutes first: clearing all would forgive the flooders.
            map.retain(|_, (start, _)| start.elapsed() < Duration::from_secs(60));
        }
        if map.len() >= MAX_REMEMBERED && !map.contains_key(&ip) {
            return true;
        }
        let entry = map.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= Duration::from_secs(60) {
            *entry = (Instant::now(), 0);
        }
        if count {
            entry.1 += 1;
        }
        entry.1 >= MAX_UNKNOWN_PER_MINUTE
    }

    fn remembered(&self, token: &str) -> Option<Option<Arc<Whoami>>> {
        let map = self.answers.lock().expect("vouches");
        map.get(token)
            .filter(|(at, _)| at.elapsed() < VOUCH_TTL)
            .map(|(_, who)| who.clone())
    }

    fn remember(&self, token: &str, who: Option<Arc<Whoami>>) {
        let mut map = self.answers.lock().expect("vouches");
        if map.len() >= MAX_REMEMBERED {
            map.clear();
        }
        map.insert(token.to_owned(), (Instant::now(), who));
    }
}
