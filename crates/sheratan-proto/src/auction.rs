//! Host, broker and core wire types (docs/API.md, "Hosts, broker, relay, Core").

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// `POST /v1/bid` on a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BidRequest {
    pub job_id: String,
    pub kind: String,
    #[serde(default)]
    pub required_capabilities: Vec<String>,
    #[serde(default)]
    pub payload_bytes: u64,
}

/// A host's answer to a bid request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BidResponse {
    pub node_id: String,
    pub accept: bool,
    /// Lower wins. Rises with the host's load.
    pub price: f64,
    pub eta_ms: u64,
    /// Why the host declined (or "ok").
    pub reason: String,
}

/// `POST /v1/execute` on a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    pub job_id: String,
    pub kind: String,
    #[serde(default)]
    pub payload: serde_json::Value,
    /// The job must finish within this.
    pub deadline_ms: u64,
}

/// What a host's execution produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecuteResponse {
    pub job_id: String,
    pub node_id: String,
    pub outcome: crate::data::Outcome,
    #[serde(default)]
    pub result: serde_json::Value,
    #[serde(default)]
    pub error: Option<crate::data::JobError>,
    pub elapsed_ms: u64,
}

/// One bid as recorded in an auction round (a host that did not answer in time is recorded
/// with `accept: false` and the reason).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BidRecord {
    pub node_id: String,
    pub accept: bool,
    pub price: f64,
    pub eta_ms: u64,
    pub reason: String,
}

/// One round of an auction: bids, the winner, what happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RoundRecord {
    pub round: u32,
    pub bids: Vec<BidRecord>,
    pub winner: Option<String>,
    /// `completed`, `failed` (the job failed on the host), `host_failed` (the host did not
    /// deliver: re-auctioned), or `no_bids`.
    pub outcome: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// The whole round: bidding and execution.
    pub elapsed_ms: u64,
    /// Bidding alone: the latency the auction adds.
    #[serde(default)]
    pub bid_ms: f64,
}

/// `GET /v1/auctions/{job_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuctionRecord {
    pub job_id: String,
    pub winner: Option<String>,
    pub rounds: Vec<RoundRecord>,
}

/// `GET /v1/auctions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuctionList {
    pub auctions: Vec<AuctionRecord>,
}

/// `POST /v1/grants` on the hub's data plane: execute grants for the hosts a broker is about
/// to ask for bids, for a job whose lease the caller holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    pub job_id: String,
    pub lease_id: String,
    /// Host node ids, at most [`MAX_GRANT_HOSTS`].
    pub hosts: Vec<String>,
}

/// The most hosts one grant request may name.
pub const MAX_GRANT_HOSTS: usize = 256;

/// The answer: a grant for each named host that has a valid node credential (hosts without
/// one are left out); each is the bearer token of that host's `/v1/bid` and `/v1/execute`
/// for this job until `expires_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GrantResponse {
    pub job_id: String,
    pub grants: std::collections::BTreeMap<String, String>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}
