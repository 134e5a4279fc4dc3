//! Credentials with a role and a name (docs/API.md, "Credentials"): what `POST/GET
//! /admin/tokens` and `DELETE /admin/tokens/{name}` carry.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The longest credential name.
pub const CREDENTIAL_NAME_MAX_LEN: usize = 64;

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CredentialRole {
    /// Everything, the admin path from any address included.
    Admin,
    /// One node: heartbeats as the node named like the credential, its own leases, bundles.
    Node,
    /// Submits, reads and cancels jobs in its queues, and reads their results.
    Submit,
    /// Every read, no change.
    Read,
}

impl CredentialRole {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialRole::Admin => "admin",
            CredentialRole::Node => "node",
            CredentialRole::Submit => "submit",
            CredentialRole::Read => "read",
        }
    }
}

impl std::fmt::Display for CredentialRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CredentialRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(CredentialRole::Admin),
            "node" => Ok(CredentialRole::Node),
            "submit" => Ok(CredentialRole::Submit),
            "read" => Ok(CredentialRole::Read),
            other => Err(format!(
                "{other:?} is not a role: admin, node, submit or read"
            )),
        }
    }
}

/// `POST /admin/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCredential {
    pub name: String,
    pub role: CredentialRole,
    /// `submit` only: the queues it may submit to and read (empty: every queue).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<String>,
    /// Seconds until it stops working; none: until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<u64>,
}

/// A credential as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CredentialView {
    pub name: String,
    pub role: CredentialRole,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

/// The answer to a create: the secret, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedCredential {
    pub credential: CredentialView,
    pub secret: String,
}

/// `GET /admin/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CredentialList {
    pub credentials: Vec<CredentialView>,
}

/// Checks a credential's name: `[A-Za-z0-9._-]{1,64}`.
pub fn validate_credential_name(name: &str) -> Result<(), String> {
    crate::ids::validate_name("name", name, CREDENTIAL_NAME_MAX_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_read_and_print_as_the_contract_spells_them() {
        for role in [
            CredentialRole::Admin,
            CredentialRole::Node,
            CredentialRole::Submit,
            CredentialRole::Read,
        ] {
            assert_eq!(role.as_str().parse::<CredentialRole>(), Ok(role));
            assert_eq!(serde_json::to_string(&role).unwrap(), format!("\"{role}\""));
        }
        assert!("root".parse::<CredentialRole>().is_err());
        assert!(validate_credential_name("w-gpu-1").is_ok());
        assert!(validate_credential_name("a b").is_err());
        assert!(validate_credential_name(&"x".repeat(65)).is_err());
    }
}

/// `GET /v1/whoami` (hub data plane) and `GET /api/whoami` (Core): what the presented token is
/// and may do, for a service that signs people in with any credential (Core, the dashboard).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Whoami {
    /// How audit lines name it: `"ops (admin)"`, `"the mesh token"`.
    pub credential: String,
    /// `None` for the mesh token (everything, the admin path from loopback only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<CredentialRole>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A submit credential's queues (empty: every queue).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<String>,
}
