//! Security and operations events (docs/API.md, "Events and logs") and the audit-log line that records them.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The audit log's file name under `$SHERATAN_HOME/logs` (rotated files get `.1`, `.2`, …).
pub const AUDIT_LOG_FILE: &str = "hub_security_audit.jsonl";
/// The alert watcher's output under `$SHERATAN_HOME/logs`.
pub const ALERTS_FILE: &str = "alerts.jsonl";

/// Every event the hub can emit. The wire name is the SCREAMING_SNAKE_CASE of the variant.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    AuthFail,
    PortMismatch,
    LocalhostOnly,
    TokenAcceptedNext,
    TokenRetired,
    TokenRotationFinalized,
    WeakToken,
    AttestationFirstSeen,
    AttestationDrift,
    AttestationSpoofSuspect,
    NodeStale,
    NodeDead,
    NodeRecovered,
    RegistryCorrupt,
    BackpressureDrop,
    InflightSaturated,
    LeaseReap,
    IdempotencyKeyCollision,
    ResultIntegrityFail,
    /// A result or lease extension named a lease that is not the job's current one: a late
    /// worker, or someone guessing at another node's lease.
    LeaseMismatch,
    /// An operator removed a node from the registry (`DELETE /admin/nodes/{node_id}`).
    NodeRemoved,
    /// A connection's client certificate (mutual TLS) names another node than the request.
    ClientCertMismatch,
    /// An operator created a credential (`POST /admin/tokens`).
    CredentialCreated,
    /// An operator revoked a credential (`DELETE /admin/tokens/{name}`).
    CredentialRevoked,
    /// A node credential acted as another node (heartbeat, lease) or reported for a lease
    /// another node holds.
    IdentityMismatch,
    /// An operator requeued failed or cancelled jobs in bulk (`POST /admin/jobs/requeue`):
    /// one line per action, with its count.
    JobsRequeued,
    /// An operator deleted finished jobs in bulk (`POST /admin/jobs/delete`): one line per
    /// action, with its count.
    JobsDeleted,
    /// A schedule was created, changed, deleted or run now (`/v1/schedules`).
    ScheduleChanged,
    /// A schedule's tick submitted no job: the queue was full (429), the job was refused, or
    /// the tick passed while no hub ran the schedule. One line per scheduler pass.
    ScheduleMissed,
    /// Retention deleted finished jobs: one line per batch, with the count.
    JobsPurged,
}

impl EventKind {
    /// All events, in declaration order; metrics list a counter for each, zero included.
    pub const ALL: [EventKind; 30] = [
        EventKind::AuthFail,
        EventKind::PortMismatch,
        EventKind::LocalhostOnly,
        EventKind::TokenAcceptedNext,
        EventKind::TokenRetired,
        EventKind::TokenRotationFinalized,
        EventKind::WeakToken,
        EventKind::AttestationFirstSeen,
        EventKind::AttestationDrift,
        EventKind::AttestationSpoofSuspect,
        EventKind::NodeStale,
        EventKind::NodeDead,
        EventKind::NodeRecovered,
        EventKind::RegistryCorrupt,
        EventKind::BackpressureDrop,
        EventKind::InflightSaturated,
        EventKind::LeaseReap,
        EventKind::IdempotencyKeyCollision,
        EventKind::ResultIntegrityFail,
        EventKind::LeaseMismatch,
        EventKind::NodeRemoved,
        EventKind::ClientCertMismatch,
        EventKind::CredentialCreated,
        EventKind::CredentialRevoked,
        EventKind::IdentityMismatch,
        EventKind::JobsRequeued,
        EventKind::JobsDeleted,
        EventKind::ScheduleChanged,
        EventKind::ScheduleMissed,
        EventKind::JobsPurged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::AuthFail => "AUTH_FAIL",
            EventKind::PortMismatch => "PORT_MISMATCH",
            EventKind::LocalhostOnly => "LOCALHOST_ONLY",
            EventKind::TokenAcceptedNext => "TOKEN_ACCEPTED_NEXT",
            EventKind::TokenRetired => "TOKEN_RETIRED",
            EventKind::TokenRotationFinalized => "TOKEN_ROTATION_FINALIZED",
            EventKind::WeakToken => "WEAK_TOKEN",
            EventKind::AttestationFirstSeen => "ATTESTATION_FIRST_SEEN",
            EventKind::AttestationDrift => "ATTESTATION_DRIFT",
            EventKind::AttestationSpoofSuspect => "ATTESTATION_SPOOF_SUSPECT",
            EventKind::NodeStale => "NODE_STALE",
            EventKind::NodeDead => "NODE_DEAD",
            EventKind::NodeRecovered => "NODE_RECOVERED",
            EventKind::RegistryCorrupt => "REGISTRY_CORRUPT",
            EventKind::BackpressureDrop => "BACKPRESSURE_DROP",
            EventKind::InflightSaturated => "INFLIGHT_SATURATED",
            EventKind::LeaseReap => "LEASE_REAP",
            EventKind::IdempotencyKeyCollision => "IDEMPOTENCY_KEY_COLLISION",
            EventKind::ResultIntegrityFail => "RESULT_INTEGRITY_FAIL",
            EventKind::LeaseMismatch => "LEASE_MISMATCH",
            EventKind::NodeRemoved => "NODE_REMOVED",
            EventKind::ClientCertMismatch => "CLIENT_CERT_MISMATCH",
            EventKind::CredentialCreated => "CREDENTIAL_CREATED",
            EventKind::CredentialRevoked => "CREDENTIAL_REVOKED",
            EventKind::IdentityMismatch => "IDENTITY_MISMATCH",
            EventKind::JobsRequeued => "JOBS_REQUEUED",
            EventKind::JobsDeleted => "JOBS_DELETED",
            EventKind::ScheduleChanged => "SCHEDULE_CHANGED",
            EventKind::ScheduleMissed => "SCHEDULE_MISSED",
            EventKind::JobsPurged => "JOBS_PURGED",
        }
    }

    /// How much an operator should care about one occurrence.
    pub fn severity(self) -> Severity {
        use EventKind::*;
        match self {
            AttestationFirstSeen
            | NodeRecovered
            | TokenAcceptedNext
            | TokenRetired
            | TokenRotationFinalized
            | LeaseReap
            | NodeRemoved
            | CredentialCreated
            | CredentialRevoked
            | JobsRequeued
            | JobsDeleted
            | ScheduleChanged
            | JobsPurged => Severity::Info,
            AuthFail
            | PortMismatch
            | LocalhostOnly
            | WeakToken
            | AttestationDrift
            | NodeStale
            | BackpressureDrop
            | InflightSaturated
            | IdempotencyKeyCollision
            | LeaseMismatch
            | ScheduleMissed => Severity::Warning,
            AttestationSpoofSuspect
            | NodeDead
            | RegistryCorrupt
            | ResultIntegrityFail
            | ClientCertMismatch
            | IdentityMismatch => Severity::Critical,
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// Which listener an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Plane {
    Control,
    Data,
}

impl Plane {
    pub fn as_str(self) -> &'static str {
        match self {
            Plane::Control => "control",
            Plane::Data => "data",
        }
    }
}

/// One line of `logs/hub_security_audit.jsonl`.
///
/// `count` is how many occurrences the line stands for: 1 for a first occurrence, more for a
/// line that folds identical repeats (then `first_ts` is the first folded repeat and `ts` the
/// last). Summing `count` over lines gives the exact number of occurrences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    #[serde(with = "time::serde::rfc3339")]
    pub ts: OffsetDateTime,
    pub event: EventKind,
    pub severity: Severity,
    pub plane: Plane,
    pub remote_addr: Option<String>,
    pub node_id: Option<String>,
    pub detail: serde_json::Value,
    pub count: u64,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub first_ts: Option<OffsetDateTime>,
    /// Set when a verified `sheratan smoke` probe provoked the event: the run's nonce. The
    /// audit watcher's rules skip these lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    /// The credential the request that caused the event presented, as `"w-gpu-1 (node)"` or
    /// `"the mesh token"`; absent when none was checked (an unauthenticated request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// One line of `logs/alerts.jsonl` (and the body of an alert webhook call, and an entry of
/// Core's `/api/alerts`): a rule of the audit watcher fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertRecord {
    #[serde(with = "time::serde::rfc3339")]
    pub ts: OffsetDateTime,
    pub rule: String,
    pub event: EventKind,
    pub severity: Severity,
    /// The peer address or node the alert is about; `*` for hub-wide rules.
    pub source: String,
    /// Occurrences within the window when the alert fired.
    pub count: u64,
    pub window_s: u64,
    pub message: String,
    /// The last record's detail, for context.
    pub detail: serde_json::Value,
    /// The credential the last record names (`AuditRecord::credential`), when it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_match_serde() {
        for kind in EventKind::ALL {
            assert_eq!(
                serde_json::to_string(&kind).unwrap(),
                format!("\"{}\"", kind.as_str())
            );
        }
    }
}
