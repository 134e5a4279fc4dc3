//! Core API (`/api/*`) wire types: submits with their dispatch, the overview, the history of
//! gauges, log tails, the events of `/api/events`, and the dashboard's `/config.json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::control::{Attestation, Health, Load, NodeStatus, Role};
use crate::data::{JobError, JobStatus};

/// How Core routes a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Dispatch {
    /// Workers pull it from its queue (`queue`, default `default`).
    #[default]
    Queue,
    /// The broker auctions it among hosts (queue `auction`).
    Auction,
    /// The relay runs it (queue `llm`).
    Llm,
}

/// `POST /api/jobs` on Core: the job fields and how to dispatch it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CoreSubmit {
    pub kind: String,
    #[serde(default)]
    pub payload: serde_json::Value,
    #[serde(default)]
    pub dispatch: Dispatch,
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub required_capabilities: Vec<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub timeout_s: Option<u32>,
}

/// Core's answer to a submit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CoreSubmitted {
    pub job_id: String,
    pub status: JobStatus,
    pub queue: String,
    /// The hub's note when the job may wait (no ONLINE node offers its kind, or nobody
    /// serves its queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// `?limit=` of Core's lists (`/api/auctions`, `/api/alerts`, `/api/audit`) and the broker's
/// `/v1/auctions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One sample of the hub's gauges (Core takes one every 10 s, keeps an hour).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryPoint {
    /// Unix milliseconds.
    pub t: i64,
    pub queue_depth: f64,
    pub inflight: f64,
    pub results_pending: f64,
    /// Failed authentications in the minute before the sample (invalid and retired tokens).
    pub auth_failures_1m: f64,
}

/// `GET /api/history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct History {
    pub interval_s: f64,
    pub points: Vec<HistoryPoint>,
}

/// `GET /api/alerts` (entries: `AlertRecord`) and `GET /api/audit` (entries: `AuditRecord`):
/// the newest lines of a log, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogTail<T> {
    pub entries: Vec<T>,
}

/// `GET /api/overview`: every component, probed at once with a 1.5 s deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Overview {
    pub components: Components,
    /// `null` when the hub's registry could not be read in time.
    pub nodes: Option<NodeCounts>,
    /// The newest gauge sample, `null` before the first.
    pub jobs: Option<HistoryPoint>,
    pub events_subscribers: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Components {
    pub core: ComponentState,
    pub control: ComponentState,
    pub data: ComponentState,
    pub broker: ComponentState,
    pub relay: ComponentState,
}

/// A component's state: `up` with its `/health` body as `detail`, or `down` with the `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ComponentState {
    pub status: UpDown,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UpDown {
    Up,
    Down,
}

/// Nodes by status (`ONLINE`, `STALE`, `DEAD`) and by role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeCounts {
    pub total: u64,
    pub by_status: BTreeMap<String, u64>,
    pub by_role: BTreeMap<String, u64>,
}

/// `event: ready` of `/api/events`, sent first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReadyEvent {
    pub poll_interval_ms: u64,
}

/// `event: lagged`: this subscriber missed events; reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LaggedEvent {
    pub missed: u64,
}

/// `event: hub`: Hub Data became unreachable or reachable again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HubEvent {
    pub reachable: bool,
}

/// `event: job`: a job appeared or changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobEvent {
    pub job_id: String,
    pub queue: String,
    pub kind: String,
    pub status: JobStatus,
    pub attempt: u32,
    /// Unix milliseconds.
    pub updated_at: i64,
    pub error: Option<JobError>,
    /// The node that holds or last held the job's lease.
    #[serde(default)]
    pub node_id: Option<String>,
    /// When an accepted job may run, if that is still ahead (it is delayed).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub run_at: Option<time::OffsetDateTime>,
}

/// `event: progress`: a running job reported progress or output (docs/API.md, "Progress").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProgressEvent {
    pub job_id: String,
    pub progress: crate::progress::JobProgress,
}

/// `event: node`: a node appeared or changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeEvent {
    pub node_id: String,
    pub role: Role,
    pub status: NodeStatus,
    pub health: Health,
    pub attestation: Attestation,
    pub load: Load,
}

/// The dashboard's `GET /config.json`: where the browser finds Core.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DashboardConfig {
    pub core_url: String,
    pub version: String,
}
