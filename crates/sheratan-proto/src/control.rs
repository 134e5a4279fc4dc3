//! Hub Control plane (8787) wire types: health, heartbeat, node registry, bundles.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// `GET /health` on either plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthResponse {
    pub status: String,
    pub plane: crate::Plane,
    pub version: String,
    /// Data plane only: jobs waiting to be leased, hub-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<u64>,
    /// Data plane only: jobs leased and not yet finished, hub-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inflight: Option<u64>,
}

/// What a node does in the mesh. Decoded through `FromStr`, so an unknown role is reported
/// with the list of valid ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Role {
    Worker,
    Host,
    Broker,
    Relay,
    Core,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Worker,
        Role::Host,
        Role::Broker,
        Role::Relay,
        Role::Core,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Host => "host",
            Role::Broker => "broker",
            Role::Relay => "relay",
            Role::Core => "core",
        }
    }
}

impl TryFrom<String> for Role {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role {s:?}; expected one of worker, host, broker, relay, core")
            })
    }
}

/// A node's self-reported load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Load {
    #[serde(default)]
    pub inflight: u32,
    #[serde(default)]
    pub capacity: u32,
}

/// `POST /v1/heartbeat`. Only `node_id` and `role` are required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatRequest {
    pub node_id: String,
    pub role: Role,
    /// Push URL (hosts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub build_id: String,
    #[serde(default)]
    pub capability_hash: String,
    /// Free-form facts about the node's runtime (os, arch, version, …). Must be an object.
    #[serde(default)]
    pub runtime: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub load: Load,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeStatus {
    Online,
    Stale,
    Dead,
}

impl NodeStatus {
    pub const ALL: [NodeStatus; 3] = [NodeStatus::Online, NodeStatus::Stale, NodeStatus::Dead];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Online => "ONLINE",
            NodeStatus::Stale => "STALE",
            NodeStatus::Dead => "DEAD",
        }
    }
}

impl std::str::FromStr for NodeStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeStatus::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown status {s:?}; expected ONLINE, STALE or DEAD"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Health {
    Green,
    Yellow,
    Red,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Attestation {
    Ok,
    Drift,
    SpoofSuspect,
}

impl Attestation {
    pub fn as_str(self) -> &'static str {
        match self {
            Attestation::Ok => "OK",
            Attestation::Drift => "DRIFT",
            Attestation::SpoofSuspect => "SPOOF_SUSPECT",
        }
    }
}

/// Answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatResponse {
    pub node_id: String,
    pub status: NodeStatus,
    pub health: Health,
    pub attestation: Attestation,
    /// How often the hub wants to hear from the node.
    pub heartbeat_interval_s: u32,
}

/// What a node looked like at its first heartbeat: the attestation baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FirstSeen {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub build_id: String,
    pub capability_hash: String,
    pub runtime: serde_json::Value,
}

/// One registry entry, as `GET /v1/nodes` and `GET /v1/nodes/{id}` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeView {
    pub node_id: String,
    pub role: Role,
    pub addr: Option<String>,
    pub status: NodeStatus,
    pub health: Health,
    pub attestation: Attestation,
    pub first_seen: FirstSeen,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    pub capabilities: Vec<String>,
    pub build_id: String,
    pub capability_hash: String,
    pub runtime: serde_json::Value,
    pub load: Load,
}

/// `GET /v1/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeList {
    pub nodes: Vec<NodeView>,
}

/// One published bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BundleInfo {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

/// `GET /v1/bundles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BundleList {
    pub bundles: Vec<BundleInfo>,
}

/// Bundle names are path segments and file names: letters, digits, '.', '_', '-', at most 128
/// bytes, and not starting with a dot (no `..`, no hidden files).
pub fn validate_bundle_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err("bundle name must be 1 to 128 bytes long".to_owned());
    }
    if name.starts_with('.') {
        return Err("bundle name must not start with '.'".to_owned());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("bundle name may only contain letters, digits, '.', '_' and '-'".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_needs_only_node_id_and_role() {
        let hb: HeartbeatRequest =
            serde_json::from_str(r#"{"node_id":"w1","role":"worker"}"#).unwrap();
        assert_eq!(hb.role, Role::Worker);
        assert!(hb.capabilities.is_empty());
        assert_eq!(hb.load, Load::default());
    }

    #[test]
    fn runtime_must_be_an_object() {
        let err = serde_json::from_str::<HeartbeatRequest>(
            r#"{"node_id":"w1","role":"worker","runtime":[1]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("map"), "{err}");
    }

    #[test]
    fn bundle_names() {
        assert!(validate_bundle_name("tools-1.2.tar.gz").is_ok());
        assert!(validate_bundle_name("..").is_err());
        assert!(validate_bundle_name("a/b").is_err());
        assert!(validate_bundle_name("").is_err());
    }
}

/// `?role=&status=` of `GET /v1/nodes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodesQuery {
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
}

/// `?format=` of `GET /metrics` on either plane: Prometheus text (default, `prometheus`,
/// `text`) or `json` (dotted names).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsQuery {
    #[serde(default)]
    pub format: Option<String>,
}
