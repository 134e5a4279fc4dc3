//! What each credential role may do (docs/SECURITY.md, "Roles"). One table, checked before
//! any handler runs; a request with a credential whose role does not list the route is
//! refused 403 `FORBIDDEN`, naming the role and the action. Deny by default: a route not named
//! here is the admin role's only. The mesh token is not a role: it keeps doing everything it
//! did (with the loopback rule of the admin path).

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sheratan_proto::credentials::CredentialRole;
use sheratan_runtime::edge::{self, ApiError, Presented};
use sheratan_store::CredentialRecord;

use super::plane::PlaneState;
use crate::config::MeshTokenScope;
use crate::credentials::{Lookup, SECRET_PREFIX};

/// Whether `role` may call `method path`.
pub fn permits(role: CredentialRole, method: &Method, path: &str) -> bool {
    let get = method == Method::GET || method == Method::HEAD;
    // Public routes, answered to anyone (the handlers ask for no credential), and every
    // credential's own identity and the API description.
    if get
        && matches!(
            path,
            "/health" | "/v1/tls/ca" | "/v1/whoami" | "/openapi.json"
        )
    {
        return true;
    }
    let post = method == Method::POST;
    match role {
        CredentialRole::Admin => true,
        // The worker stream leases jobs: a node's, though it is a GET.
        CredentialRole::Read => get && !path.starts_with("/admin") && path != "/v1/stream",
        CredentialRole::Submit => {
            (post && matches!(path, "/v1/jobs" | "/v1/jobs/batch" | "/v1/results/ack"))
                // Its stream only submits (the handler refuses it leasing).
                || (get && path == "/v1/stream")
                || (post && path.starts_with("/v1/jobs/") && path.ends_with("/cancel"))
                || (get
                    && (path == "/v1/jobs"
                        || path.starts_with("/v1/jobs/")
                        || path == "/v1/results"
                        || path == "/v1/queues"
                        || path == "/v1/schedules"
                        || path.starts_with("/v1/schedules/")
                        || path == "/health"))
        }
        // A node also reads the registry (a broker finds its hosts) and the jobs it holds
        // (checked in the handler), and asks grants for them (a broker's hosts).
        CredentialRole::Node => {
            (post
                && (matches!(
                    path,
                    "/v1/heartbeat"
                        | "/v1/leases"
                        | "/v1/leases/watch"
                        | "/v1/results"
                        | "/v1/grants"
                ) || (path.starts_with("/v1/leases/")
                    && (path.ends_with("/extend") || path.ends_with("/progress")))))
                || (get
                    && (path.starts_with("/v1/bundles")
                        || path == "/v1/stream"
                        || path == "/v1/nodes"
                        || (path.starts_with("/v1/jobs/") && path.matches('/').count() == 3)
                        || path == "/health"))
        }
    }
}

/// 403 `FORBIDDEN`: what the credential is, and what it tried.
pub fn forbidden(record: &CredentialRecord, action: &str) -> ApiError {
    ApiError::new(
        sheratan_proto::ErrorCode::Forbidden,
        format!(
            "the {} credential {:?} may not {action}",
            record.role, record.name
        ),
        "docs/SECURITY.md lists what each role may do; an admin creates a credential with the role needed (sheratan token create)",
    )
}

/// The role check, before the handler: only requests that present a valid credential are
/// looked at (anything else is the handlers' to authenticate).
pub(super) async fn check_role(
    State(state): State<PlaneState>,
    req: Request,
    next: Next,
) -> Response {
    let Presented::One(token) = edge::presented_token(req.headers()) else {
        return next.run(req).await;
    };
    let action = || format!("{} {}", req.method(), req.uri().path());
    if token.starts_with(SECRET_PREFIX)
        && let Lookup::Valid(record) = state.hub.credentials.lookup(&token, state.hub.clock.now())
        && !permits(record.role, req.method(), req.uri().path())
    {
        state.hub.role_refusals.count(record.role);
        return forbidden(&record, &action()).into_response();
    }
    if state.hub.config.mesh_token_scope == MeshTokenScope::Bootstrap
        && !bootstrap_permits(req.method(), req.uri().path())
        && state.hub.tokens.is_mesh_token(&token)
    {
        return ApiError::new(
            sheratan_proto::ErrorCode::Forbidden,
            format!("the mesh token may not {}: it only creates, lists and revokes credentials (SHERATAN_MESH_TOKEN_SCOPE=bootstrap)", action()),
            "use a credential (sheratan token create --role …), or SHERATAN_MESH_TOKEN_SCOPE=full",
        )
        .into_response();
    }
    next.run(req).await
}

/// What a mesh token reduced to `bootstrap` may still do.
fn bootstrap_permits(method: &Method, path: &str) -> bool {
    path == "/health"
        || path == "/admin/tokens"
        || (method == Method::DELETE && path.starts_with("/admin/tokens/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_may_do_its_part_and_nothing_else() {
        let may = |role, m: &str, p: &str| permits(role, &m.parse().unwrap(), p);
        use CredentialRole::*;
        assert!(may(Admin, "POST", "/admin/tokens"));
        // The API description is every credential's to read, and only to read.
        for role in [Admin, Node, Submit, Read] {
            assert!(may(role, "GET", "/openapi.json"), "{role:?}");
        }
        assert!(!may(Node, "POST", "/openapi.json") && !may(Submit, "PUT", "/openapi.json"));
        assert!(may(Read, "GET", "/v1/jobs") && may(Read, "GET", "/v1/nodes"));
        assert!(!may(Read, "POST", "/v1/jobs/x/cancel"));
        assert!(!may(Read, "GET", "/admin/registry"));
        assert!(may(Submit, "POST", "/v1/jobs") && may(Submit, "POST", "/v1/jobs/x/cancel"));
        assert!(!may(Submit, "POST", "/v1/leases"));
        assert!(!may(Submit, "POST", "/v1/heartbeat"));
        assert!(may(Node, "POST", "/v1/leases") && may(Node, "POST", "/v1/leases/l/extend"));
        assert!(may(Node, "POST", "/v1/results") && may(Node, "GET", "/v1/bundles/x"));
        assert!(!may(Node, "POST", "/v1/jobs"));
        assert!(!may(Node, "GET", "/v1/jobs"));
        assert!(may(Node, "GET", "/v1/jobs/j") && may(Node, "POST", "/v1/grants"));
        assert!(!may(Node, "GET", "/v1/jobs/j/x") && !may(Node, "POST", "/v1/jobs/j/cancel"));
        assert!(!may(Submit, "POST", "/v1/grants") && !may(Read, "POST", "/v1/grants"));
        assert!(may(Node, "POST", "/v1/leases/watch"));
        assert!(!may(Submit, "POST", "/v1/leases/watch") && !may(Read, "POST", "/v1/leases/watch"));
        for role in [Read, Submit, Node] {
            assert!(!may(role, "POST", "/admin/tokens"), "{role}");
            assert!(!may(role, "DELETE", "/admin/tokens/x"), "{role}");
            assert!(!may(role, "PUT", "/admin/bundles/x"), "{role}");
        }
    }
}
