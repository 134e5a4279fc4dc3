//! Who may use Core, and with whose rights Core then asks the hub (docs/API.md, "Core API").
//!
//! Core's own token opens everything, as before. Any other token the hub knows (a credential
//! with a role, or the mesh token when Core runs on a credential) is asked of the hub once
//! (`sheratan_client::Vouches`): Core lets it do what its role allows here, and sends it, not
//! Core's own token, on every hub call it makes for the request, so the hub applies the same
//! role to the same request.

use std::sync::Arc;

use axum::http::Method;
use axum::http::request::Parts;
use sheratan_client::DataClient;
use sheratan_proto::credentials::{CredentialRole, Whoami};
use sheratan_runtime::edge::{self, ApiError};

use crate::CoreState;

/// What a request to Core presented.
#[derive(Debug, Clone)]
pub enum Access {
    /// Core's own token (or authentication is off): everything.
    Own,
    /// A token the hub vouched for, with what it is.
    Vouched { token: String, who: Arc<Whoami> },
}

/// Every `/api/*` handler takes one: no route can forget authentication.
pub(crate) type Caller = sheratan_runtime::edge::Caller<Arc<CoreState>>;

/// What handlers ask of a caller.
pub(crate) trait CallerExt {
    fn data(&self, s: &CoreState) -> DataClient;
    fn is_admin_credential(&self) -> bool;
    fn whoami(&self, s: &CoreState) -> Whoami;
}

impl CallerExt for Caller {
    /// The data-plane client to act with for this caller: its own token when the hub vouched
    /// for it, so the hub applies its role.
    fn data(&self, s: &CoreState) -> DataClient {
        match &self.credential {
            Access::Own => s.data.clone(),
            Access::Vouched { token, .. } => s.data.with_token(token.clone()),
        }
    }

    /// An admin credential takes admin actions from anywhere (as on the hub); Core's own token
    /// and the mesh token only from Core's machine.
    fn is_admin_credential(&self) -> bool {
        matches!(&self.credential, Access::Vouched { who, .. } if who.role == Some(CredentialRole::Admin))
    }

    /// What `/api/whoami` answers.
    fn whoami(&self, s: &CoreState) -> Whoami {
        match &self.credential {
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

/// Core's second chance for a token that is not its own (`Edge::vouch`).
pub(crate) async fn vouch(
    s: &CoreState,
    token: &str,
    request: &Parts,
) -> Result<Option<Access>, ApiError> {
    let ask = |peer| s.vouches.ask(&s.config.token, &s.data, token, peer);
    let Some(who) = edge::vouched(request, ask).await? else {
        return Ok(None);
    };
    let (method, path) = (&request.method, request.uri.path());
    if !permits(who.role, method, path) {
        return Err(edge::forbidden_here(&who.credential, method, path));
    }
    Ok(Some(Access::Vouched {
        token: token.to_owned(),
        who,
    }))
}

/// What a role may do at Core: the same split as the hub's (docs/SECURITY.md, "Roles").
/// `None` is the mesh token: everything.
pub fn permits(role: Option<CredentialRole>, method: &Method, path: &str) -> bool {
    let get = method == Method::GET || method == Method::HEAD;
    // Every credential's own identity, and the API description.
    if get && (path == "/api/whoami" || path == "/openapi.json") {
        return true;
    }
    match role {
        None | Some(CredentialRole::Admin) => true,
        Some(CredentialRole::Read) => get && !path.starts_with("/api/tokens"),
        Some(CredentialRole::Submit) => {
            (method == Method::POST
                && (path == "/api/jobs"
                    || (path.starts_with("/api/jobs/")
                        && !path.starts_with("/api/jobs/bulk/")
                        && path.ends_with("/cancel"))))
                || (get
                    && (path == "/api/jobs"
                        || path.starts_with("/api/jobs/")
                        || path == "/api/queues"
                        || path == "/api/schedules"))
        }
        Some(CredentialRole::Node) => false,
    }
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
        assert!(may(Some(Submit), "POST", "/api/jobs"));
        assert!(may(Some(Submit), "POST", "/api/jobs/j/cancel"));
        assert!(!may(Some(Submit), "POST", "/api/jobs/j/requeue"));
        assert!(!may(Some(Submit), "POST", "/api/jobs/bulk/cancel"));
        assert!(!may(Some(Submit), "POST", "/api/jobs/bulk/requeue"));
        assert!(
            may(Some(Submit), "GET", "/api/schedules") && may(Some(Read), "GET", "/api/schedules")
        );
        assert!(!may(Some(Read), "PATCH", "/api/schedules/x"));
        assert!(!may(Some(Submit), "POST", "/api/schedules/x/run"));
        assert!(
            !may(Some(Submit), "GET", "/api/audit") && !may(Some(Submit), "GET", "/api/events")
        );
        assert!(!may(Some(Node), "GET", "/api/overview") && may(Some(Node), "GET", "/api/whoami"));
        assert!(
            may(Some(Node), "GET", "/openapi.json") && !may(Some(Node), "POST", "/openapi.json")
        );
    }
}
