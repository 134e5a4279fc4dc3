//! Who may use Core, and with whose rights Core then asks the hub (docs/API.md, "Core API").
//!
//! Core's own token (the mesh token under `sheratan up`) opens everything, as before. Any other
//! token the hub knows (a credential with a role, or the mesh token when Core runs on a
//! credential) is asked of the hub once (`GET /v1/whoami`, remembered [`VOUCH_TTL`]): Core then
//! lets it do what its role allows here, and sends it, not Core's own token, on every hub call
//! it makes for the request, so the hub applies the same role to the same request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::Method;
use axum::http::request::Parts;
use sheratan_client::{ClientError, DataClient};
use sheratan_proto::ErrorCode;
use sheratan_proto::credentials::{CredentialRole, Whoami};
use sheratan_runtime::edge::{self, ApiError, Presented};

use crate::CoreState;

/// How long the hub's answer about a token is believed (a revocation reaches Core within it).
pub const VOUCH_TTL: Duration = Duration::from_secs(2);

/// The most tokens remembered at once; past it the memory starts over.
const MAX_REMEMBERED: usize = 10_000;

/// What a request to Core presented.
#[derive(Debug, Clone)]
pub enum Access {
    /// Core's own token (or authentication is off): everything.
    Own,
    /// A token the hub vouched for, with what it is.
    Vouched { token: String, who: Arc<Whoami> },
}

/// Every `/api/*` handler takes one: no route can forget authentication.
pub struct Caller {
    pub access: Access,
    pub peer: SocketAddr,
}

impl Caller {
    /// The data-plane client to act with for this caller: its own token when the hub vouched
    /// for it, so the hub applies its role.
    pub fn data(&self, s: &CoreState) -> DataClient {
        match &self.access {
            Access::Own => s.data.clone(),
            Access::Vouched { token, .. } => s.data.with_token(token.clone()),
        }
    }

    /// An admin credential takes admin actions from anywhere (as on the hub); Core's own token
    /// and the mesh token only from Core's machine.
    pub fn is_admin_credential(&self) -> bool {
        matches!(&self.access, Access::Vouched { who, .. } if who.role == Some(CredentialRole::Admin))
    }

    /// What `/api/whoami` answers.
    pub fn whoami(&self, s: &CoreState) -> Whoami {
        match &self.access {
            Access::Vouched { who, .. } => (**who).clone(),
            Access::Own => Whoami {
                credential: match s.config.token.send() {
                    Some(_) => "Core's own token".into(),
                    None => "none (authentication is off)".into(),
                },
                role: None,
                name: None,
                queues: Vec::new(),
            },
        }
    }
}

/// When the hub was asked about a token, and its answer (`None`: refused).
type Vouch = (Instant, Option<Arc<Whoami>>);

/// What the hub said about tokens lately.
#[derive(Default)]
pub struct Vouches(Mutex<HashMap<String, Vouch>>);

impl Vouches {
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

impl FromRequestParts<Arc<CoreState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<CoreState>) -> Result<Self, ApiError> {
        let peer = edge::peer_of(parts)?;
        let refused = match edge::Edge::authenticate(s.as_ref(), &parts.headers, peer) {
            Ok(()) => {
                return Ok(Caller {
                    access: Access::Own,
                    peer,
                });
            }
            Err(refused) => refused,
        };
        let Presented::One(token) = edge::presented_token(&parts.headers) else {
            return Err(refused);
        };
        // Only what can be a credential is asked of the hub (or anything, when Core itself runs
        // on a credential and the mesh token is someone else's): junk never turns into hub calls.
        let core_on_credential = s
            .config
            .token
            .send()
            .is_some_and(|t| t.starts_with(sheratan_client::CREDENTIAL_PREFIX));
        if !token.starts_with(sheratan_client::CREDENTIAL_PREFIX) && !core_on_credential {
            return Err(refused);
        }
        let who = vouch(s, &token).await?.ok_or(refused)?;
        if !permits(who.role, &parts.method, parts.uri.path()) {
            return Err(forbidden(&who, &parts.method, parts.uri.path()));
        }
        Ok(Caller {
            access: Access::Vouched { token, who },
            peer,
        })
    }
}

/// The hub's word on `token` (`None`: it refuses it), remembered for [`VOUCH_TTL`].
async fn vouch(s: &CoreState, token: &str) -> Result<Option<Arc<Whoami>>, ApiError> {
    if let Some(known) = s.vouches.remembered(token) {
        return Ok(known);
    }
    let who = match s.data.with_token(token.to_owned()).whoami().await {
        Ok(who) => Some(Arc::new(who)),
        Err(ClientError::Api { status: 403, .. }) => None,
        Err(other) => {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("Core cannot check the token with the hub: {other}"),
                "check that the hub is running; Core's own token still works",
            ));
        }
    };
    s.vouches.remember(token, who.clone());
    Ok(who)
}

/// What a role may do at Core: the same split as the hub's (docs/SECURITY.md, "Roles").
/// `None` is the mesh token: everything.
pub fn permits(role: Option<CredentialRole>, method: &Method, path: &str) -> bool {
    let get = method == Method::GET || method == Method::HEAD;
    if get && path == "/api/whoami" {
        return true;
    }
    match role {
        None | Some(CredentialRole::Admin) => true,
        Some(CredentialRole::Read) => get && !path.starts_with("/api/tokens"),
        Some(CredentialRole::Submit) => {
            (method == Method::POST
                && (path == "/api/jobs"
                    || (path.starts_with("/api/jobs/") && path.ends_with("/cancel"))))
                || (get
                    && (path == "/api/jobs"
                        || path.starts_with("/api/jobs/")
                        || path == "/api/queues"))
        }
        Some(CredentialRole::Node) => false,
    }
}

fn forbidden(who: &Whoami, method: &Method, path: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        format!("{} may not {method} {path} at Core", who.credential),
        "docs/SECURITY.md lists what each role may do; an admin creates a credential with the role needed (sheratan token create)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_at_core_follow_the_hubs() {
        let may = |role, m: &str, p: &str| permits(role, &m.parse().unwrap(), p);
        use CredentialRole::*;
        assert!(may(None, "POST", "/api/tokens") && may(Some(Admin), "DELETE", "/api/tokens/x"));
        assert!(may(Some(Read), "GET", "/api/overview") && may(Some(Read), "GET", "/api/events"));
        assert!(!may(Some(Read), "POST", "/api/jobs") && !may(Some(Read), "GET", "/api/tokens"));
        assert!(
            may(Some(Submit), "POST", "/api/jobs")
                && may(Some(Submit), "POST", "/api/jobs/j/cancel")
        );
        assert!(!may(Some(Submit), "POST", "/api/jobs/j/requeue"));
        assert!(
            !may(Some(Submit), "GET", "/api/audit") && !may(Some(Submit), "GET", "/api/events")
        );
        assert!(!may(Some(Node), "GET", "/api/overview") && may(Some(Node), "GET", "/api/whoami"));
    }
}
