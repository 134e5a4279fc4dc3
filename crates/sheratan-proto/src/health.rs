//! `GET /health` of every component beside the hub (the hub's planes answer
//! [`crate::control::HealthResponse`]). Public on every component: nothing secret in them.

use serde::{Deserialize, Serialize};

/// Whether a component checks the mesh token (`disabled` only with the operator's explicit
/// `SHERATAN_HUB_TOKEN_REQUIRED=0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    Required,
    Disabled,
}

/// A host's `/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostHealth {
    pub status: String,
    pub role: String,
    pub node_id: String,
    pub inflight: u32,
    pub capacity: u32,
    pub auth: AuthMode,
}

/// The broker's `/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BrokerHealth {
    pub status: String,
    pub role: String,
    pub node_id: String,
    pub queue: String,
    pub inflight: u32,
    pub concurrency: u32,
    pub auth: AuthMode,
}

/// Core's `/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CoreHealth {
    pub status: String,
    pub role: String,
    pub version: String,
    pub auth: AuthMode,
}

/// The dashboard's `/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DashboardHealth {
    pub status: String,
    pub role: String,
}

/// The relay's `/health`: its backends and tabs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RelayHealth {
    pub status: String,
    pub role: String,
    pub node_id: String,
    pub default_backend: crate::relay::Backend,
    pub backends: RelayBackends,
    pub profiles: Vec<String>,
    pub tabs: TabCount,
    pub inflight: u32,
    pub auth: AuthMode,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RelayBackends {
    pub cdp: CdpHealth,
    pub openai: OpenAiHealth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TabCount {
    pub open: usize,
    pub limit: u32,
}

/// The CDP backend: `unavailable` (with `detail`), `idle` (connects on the next job) or
/// `connected` (with the browser's `version` and, for a launched one, its `pid`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CdpHealth {
    pub state: CdpState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<CdpSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launches: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CdpState {
    Unavailable,
    Idle,
    Connected,
}

/// Where the browser comes from: a running Chrome's `url` (without its user-info), or the
/// Chromium binary the relay `launch`es (over `transport` "pipe", with or without `sandbox`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CdpSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SandboxState {
    pub on: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// The OpenAI-compatible backend: `not_configured` (with `detail`) or `configured` (its
/// `base_url` without user-info, and `model`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OpenAiHealth {
    pub state: OpenAiState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpenAiState {
    NotConfigured,
    Configured,
}
