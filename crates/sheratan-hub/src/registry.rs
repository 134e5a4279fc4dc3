//! The node registry service: the in-memory table of nodes, the sweeper that reports status
//! transitions, and the coalesced snapshot in `$SHERATAN_HOME/nodes_registry.json`.
//!
//! A heartbeat is the hottest request of the control plane, so it touches one shard's lock
//! for the time of a few comparisons, allocates nothing when the node repeats itself, and
//! never writes to disk: it only marks the table dirty. A background task writes the whole
//! table at most about once a second (less often when a write takes long), cloning each shard
//! under its lock (cheap: the strings are shared) and serializing outside of it.

use std::collections::HashMap;
use std::fs;
use std::hash::BuildHasher;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sheratan_proto::control::{HeartbeatRequest, HeartbeatResponse, NodeStatus, NodeView, Role};
use sheratan_proto::{EventKind, Plane};
use sheratan_store::Clock;
use sheratan_store::registry::{Interner, NodeRecord, Observation, RegistryPolicy, Signal, health};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditLog, Event};
use crate::persist::write_atomic;

pub const REGISTRY_FILE: &str = "nodes_registry.json";

const SHARDS: usize = 64;

/// Limits on what a heartbeat may carry, so one node cannot make the registry large.
pub const MAX_CAPABILITIES: usize = 256;
pub const MAX_CAPABILITY_LEN: usize = 128;
pub const MAX_ID_FIELD_LEN: usize = 256;
pub const MAX_ADDR_LEN: usize = 512;
pub const MAX_RUNTIME_BYTES: usize = 4096;

type Shard = Mutex<HashMap<Arc<str>, NodeRecord>>;

/// Statistics of the last snapshot write, for metrics and the benchmark.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotStats {
    pub writes: u64,
    pub failures: u64,
    pub last_duration: Duration,
    pub last_nodes: usize,
    pub last_bytes: usize,
}

#[derive(Serialize)]
struct SnapshotOut<'a> {
    format: u32,
    #[serde(with = "time::serde::rfc3339")]
    written_at: OffsetDateTime,
    nodes: &'a [NodeRecord],
}

#[derive(Deserialize)]
struct SnapshotIn {
    format: u32,
    #[serde(with = "time::serde::rfc3339")]
    written_at: OffsetDateTime,
    nodes: Vec<NodeRecord>,
}

const SNAPSHOT_FORMAT: u32 = 1;

pub struct Registry {
    shards: Box<[Shard]>,
    hasher: std::collections::hash_map::RandomState,
    policy: RegistryPolicy,
    interner: Interner,
    clock: Arc<dyn Clock>,
    audit: AuditLog,
    path: PathBuf,
    dirty: AtomicBool,
    heartbeats: AtomicU64,
    stats: Mutex<SnapshotStats>,
    /// Serializes snapshot writers (the timer and a shutdown flush).
    write_lock: Mutex<()>,
}

/// A heartbeat field that breaks the rules; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidHeartbeat(pub String);

impl Registry {
    /// Loads the snapshot at `home/nodes_registry.json`. A missing file starts an empty
    /// registry; a corrupt one is moved aside, reported as REGISTRY_CORRUPT, and the registry
    /// starts empty: nodes repopulate it with their next heartbeat.
    pub fn open(
        home: &Path,
        policy: RegistryPolicy,
        clock: Arc<dyn Clock>,
        audit: AuditLog,
    ) -> Registry {
        let registry = Registry {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            policy,
            interner: Interner::default(),
            clock,
            audit,
            path: home.join(REGISTRY_FILE),
            dirty: AtomicBool::new(false),
            heartbeats: AtomicU64::new(0),
            stats: Mutex::new(SnapshotStats::default()),
            write_lock: Mutex::new(()),
        };
        registry.load();
        registry
    }

    fn load(&self) {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                tracing::info!(path = %self.path.display(), "no registry snapshot; starting empty, nodes repopulate it on their next heartbeat");
                return;
            }
            Err(err) => {
                self.set_aside(&format!("unreadable: {err}"));
                return;
            }
        };
        let snapshot: SnapshotIn = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(err) => {
                self.set_aside(&format!("not a registry snapshot: {err}"));
                return;
            }
        };
        if snapshot.format != SNAPSHOT_FORMAT {
            self.set_aside(&format!("unknown snapshot format {}", snapshot.format));
            return;
        }
        let started_at = self.clock.now();
        let count = snapshot.nodes.len();
        for mut record in snapshot.nodes {
            if sheratan_proto::ids::validate_node_id(&record.node_id).is_err() {
                continue;
            }
            record.share_strings(&self.interner);
            record.node_id = self.interner.intern(&record.node_id);
            record.restore(snapshot.written_at, started_at, &self.policy);
            let key = record.node_id.clone();
            self.shard(&key)
                .lock()
                .expect("registry shard lock")
                .insert(key, record);
        }
        tracing::info!(nodes = count, path = %self.path.display(), "registry loaded");
    }

    fn set_aside(&self, why: &str) {
        let stamp = self
            .clock
            .now()
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap_or_default();
        let aside = self
            .path
            .with_file_name(format!("{REGISTRY_FILE}.corrupt-{stamp}"));
        let moved = fs::rename(&self.path, &aside);
        tracing::error!(
            path = %self.path.display(),
            moved_to = %aside.display(),
            reason = why,
            "REGISTRY_CORRUPT: the registry snapshot is corrupt; moved it aside and starting empty"
        );
        self.audit.emit(
            Event::new(EventKind::RegistryCorrupt, Plane::Control).detail(serde_json::json!({
                "reason": why,
                "moved_to": moved.is_ok().then(|| aside.display().to_string()),
            })),
        );
    }

    fn shard(&self, node_id: &str) -> &Shard {
        let h = self.hasher.hash_one(node_id);
        &self.shards[(h as usize) % SHARDS]
    }

    pub fn policy(&self) -> &RegistryPolicy {
        &self.policy
    }

    /// Records a heartbeat and returns the node's standing. Emits the events it reveals.
    pub fn heartbeat(
        &self,
        req: &HeartbeatRequest,
        remote: IpAddr,
        interval_s: u32,
    ) -> Result<HeartbeatResponse, InvalidHeartbeat> {
        validate(req)?;
        let runtime_json =
            serde_json::to_string(&req.runtime).expect("a JSON map always serializes");
        if runtime_json.len() > MAX_RUNTIME_BYTES {
            return Err(InvalidHeartbeat(format!(
                "runtime: {} bytes of JSON; at most {MAX_RUNTIME_BYTES} are allowed",
                runtime_json.len()
            )));
        }
        let obs = Observation {
            role: req.role,
            addr: req.addr.as_deref(),
            capabilities: &req.capabilities,
            build_id: &req.build_id,
            capability_hash: &req.capability_hash,
            runtime_json: &runtime_json,
            load: req.load,
        };
        let now = self.clock.now();
        let (signals, status, attestation) = {
            let mut shard = self
                .shard(&req.node_id)
                .lock()
                .expect("registry shard lock");
            let signals = match shard.get_mut(req.node_id.as_str()) {
                Some(record) => record.observe(&obs, now, &self.policy, &self.interner),
                None => {
                    let key = self.interner.intern(&req.node_id);
                    let (record, signal) =
                        NodeRecord::first(key.clone(), &obs, now, &self.interner);
                    shard.insert(key, record);
                    vec![signal]
                }
            };
            let record = shard
                .get(req.node_id.as_str())
                .expect("the entry was just updated or inserted under this lock");
            (
                signals,
                record.status_at(now, &self.policy),
                record.attestation(),
            )
        };
        self.heartbeats.fetch_add(1, Ordering::Relaxed);
        self.dirty.store(true, Ordering::Relaxed);
        for signal in signals {
            self.report(signal, &req.node_id, Some(remote));
        }
        Ok(HeartbeatResponse {
            node_id: req.node_id.clone(),
            status,
            health: health(status, attestation),
            attestation,
            heartbeat_interval_s: interval_s,
        })
    }

    fn report(&self, signal: Signal, node_id: &str, remote: Option<IpAddr>) {
        let (kind, detail) = match signal {
            Signal::FirstSeen(fp) => (EventKind::AttestationFirstSeen, fp.to_json()),
            Signal::Drift { changed, from, to } => (
                EventKind::AttestationDrift,
                serde_json::json!({"changed": changed, "from": from.to_json(), "to": to.to_json()}),
            ),
            Signal::SpoofSuspect { changes, window } => (
                EventKind::AttestationSpoofSuspect,
                serde_json::json!({"capability_hash_changes": changes, "window_s": window.as_secs()}),
            ),
            Signal::Recovered { from } => (
                EventKind::NodeRecovered,
                serde_json::json!({"from": from.as_str()}),
            ),
        };
        if kind == EventKind::AttestationSpoofSuspect {
            tracing::warn!(
                node_id,
                "ATTESTATION_SPOOF_SUSPECT: the node's capability hash keeps changing; check the node, then accept its attestation on the admin path"
            );
        }
        let mut event = Event::new(kind, Plane::Control)
            .node(node_id)
            .detail(detail);
        event.remote = remote;
        self.audit.emit(event);
    }

    pub fn get(&self, node_id: &str) -> Option<NodeView> {
        let now = self.clock.now();
        let shard = self.shard(node_id).lock().expect("registry shard lock");
        shard.get(node_id).map(|r| r.view(now, &self.policy))
    }

    /// All entries matching the filters, sorted by node id.
    pub fn list(&self, role: Option<Role>, status: Option<NodeStatus>) -> Vec<NodeView> {
        let now = self.clock.now();
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().expect("registry shard lock");
            for record in shard.values() {
                if role.is_some_and(|r| r != record.role) {
                    continue;
                }
                if status.is_some_and(|s| s != record.status_at(now, &self.policy)) {
                    continue;
                }
                out.push(record.view(now, &self.policy));
            }
        }
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }

    /// Node counts by status: [online, stale, dead].
    pub fn counts(&self) -> [u64; 3] {
        let now = self.clock.now();
        let mut counts = [0u64; 3];
        for shard in self.shards.iter() {
            let shard = shard.lock().expect("registry shard lock");
            for record in shard.values() {
                let i = match record.status_at(now, &self.policy) {
                    NodeStatus::Online => 0,
                    NodeStatus::Stale => 1,
                    NodeStatus::Dead => 2,
                };
                counts[i] += 1;
            }
        }
        counts
    }

    pub fn heartbeats(&self) -> u64 {
        self.heartbeats.load(Ordering::Relaxed)
    }

    /// Makes the node's current attestation its new baseline. `None` if the node is unknown.
    pub fn accept_attestation(&self, node_id: &str) -> Option<NodeView> {
        let now = self.clock.now();
        let mut shard = self.shard(node_id).lock().expect("registry shard lock");
        let record = shard.get_mut(node_id)?;
        record.accept_attestation();
        let view = record.view(now, &self.policy);
        drop(shard);
        self.dirty.store(true, Ordering::Relaxed);
        tracing::info!(node_id, "attestation accepted as the new baseline");
        Some(view)
    }

    /// Reports each node that turned STALE or DEAD since the last sweep, once.
    pub fn sweep(&self) {
        let now = self.clock.now();
        let mut transitions = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().expect("registry shard lock");
            for record in shard.values_mut() {
                let status = record.status_at(now, &self.policy);
                if rank(status) > rank(record.reported_status) {
                    transitions.push((record.node_id.clone(), status, record.age_at(now)));
                    record.reported_status = status;
                }
            }
        }
        if !transitions.is_empty() {
            self.dirty.store(true, Ordering::Relaxed);
        }
        for (node_id, status, age) in transitions {
            let kind = match status {
                NodeStatus::Stale => EventKind::NodeStale,
                _ => EventKind::NodeDead,
            };
            if kind == EventKind::NodeDead {
                tracing::warn!(
                    node_id = &*node_id,
                    "NODE_DEAD: no heartbeat for {}s",
                    age.as_secs()
                );
            }
            self.audit.emit(
                Event::new(kind, Plane::Control)
                    .node(&*node_id)
                    .detail(serde_json::json!({"silent_for_s": age.as_secs()})),
            );
        }
    }

    /// Writes the snapshot if anything changed since the last write (or the file went
    /// missing). Blocking: call it from a blocking thread.
    pub fn snapshot_if_dirty(&self) -> io::Result<Option<SnapshotStats>> {
        let missing = !self.path.exists();
        if !self.dirty.swap(false, Ordering::AcqRel) && !missing {
            return Ok(None);
        }
        if missing && self.is_empty() {
            return Ok(None);
        }
        self.write_snapshot().map(Some).inspect_err(|_| {
            // Try again next time.
            self.dirty.store(true, Ordering::Relaxed);
        })
    }

    fn is_empty(&self) -> bool {
        self.shards
            .iter()
            .all(|s| s.lock().expect("registry shard lock").is_empty())
    }

    /// Writes the whole registry now. Blocking.
    pub fn write_snapshot(&self) -> io::Result<SnapshotStats> {
        let _writer = self.write_lock.lock().expect("snapshot writer lock");
        let started = Instant::now();
        let mut nodes = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().expect("registry shard lock");
            nodes.extend(shard.values().cloned());
        }
        let bytes = serde_json::to_vec(&SnapshotOut {
            format: SNAPSHOT_FORMAT,
            written_at: self.clock.now(),
            nodes: &nodes,
        })
        .map_err(io::Error::other)?;
        let result = write_atomic(&self.path, &bytes, 0o644);
        let mut stats = self.stats.lock().expect("snapshot stats lock");
        match result {
            Ok(()) => {
                stats.writes += 1;
                stats.last_duration = started.elapsed();
                stats.last_nodes = nodes.len();
                stats.last_bytes = bytes.len();
                Ok(*stats)
            }
            Err(err) => {
                stats.failures += 1;
                Err(err)
            }
        }
    }

    pub fn snapshot_stats(&self) -> SnapshotStats {
        *self.stats.lock().expect("snapshot stats lock")
    }

    /// The sweeper and the snapshot writer, until shutdown; then one last snapshot.
    pub async fn run_background(
        self: Arc<Self>,
        flush_interval: Duration,
        shutdown: CancellationToken,
    ) {
        let sweep_every =
            (self.policy.ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut sweep = tokio::time::interval(sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_flush = tokio::time::Instant::now() + flush_interval;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = sweep.tick() => self.sweep(),
                () = tokio::time::sleep_until(next_flush) => {
                    let me = self.clone();
                    let outcome = tokio::task::spawn_blocking(move || me.snapshot_if_dirty()).await;
                    let took = match outcome {
                        Ok(Ok(Some(stats))) => stats.last_duration,
                        Ok(Ok(None)) => Duration::ZERO,
                        Ok(Err(err)) => {
                            tracing::error!(%err, path = %self.path.display(), "cannot write the registry snapshot; will retry");
                            Duration::ZERO
                        }
                        Err(err) => {
                            tracing::error!(%err, "the registry snapshot task failed");
                            Duration::ZERO
                        }
                    };
                    // Coalesce harder when writes are slow, so snapshots never take more than
                    // about a fifth of the time.
                    next_flush = tokio::time::Instant::now() + flush_interval.max(took * 4);
                }
            }
        }
        let me = self.clone();
        match tokio::task::spawn_blocking(move || me.write_snapshot()).await {
            Ok(Ok(stats)) => tracing::info!(
                nodes = stats.last_nodes,
                "registry snapshot written at shutdown"
            ),
            Ok(Err(err)) => tracing::error!(%err, "cannot write the registry snapshot at shutdown"),
            Err(err) => tracing::error!(%err, "the shutdown snapshot task failed"),
        }
    }
}

fn rank(status: NodeStatus) -> u8 {
    match status {
        NodeStatus::Online => 0,
        NodeStatus::Stale => 1,
        NodeStatus::Dead => 2,
    }
}

fn validate(req: &HeartbeatRequest) -> Result<(), InvalidHeartbeat> {
    sheratan_proto::ids::validate_node_id(&req.node_id).map_err(InvalidHeartbeat)?;
    if req.capabilities.len() > MAX_CAPABILITIES {
        return Err(InvalidHeartbeat(format!(
            "capabilities: {} entries; at most {MAX_CAPABILITIES} are allowed",
            req.capabilities.len()
        )));
    }
    for (i, cap) in req.capabilities.iter().enumerate() {
        if cap.is_empty() || cap.len() > MAX_CAPABILITY_LEN || cap.chars().any(char::is_control) {
            return Err(InvalidHeartbeat(format!(
                "capabilities[{i}]: must be 1 to {MAX_CAPABILITY_LEN} bytes without control characters"
            )));
        }
    }
    for (field, value) in [
        ("build_id", &req.build_id),
        ("capability_hash", &req.capability_hash),
    ] {
        if value.len() > MAX_ID_FIELD_LEN || value.chars().any(char::is_control) {
            return Err(InvalidHeartbeat(format!(
                "{field}: at most {MAX_ID_FIELD_LEN} bytes without control characters"
            )));
        }
    }
    if let Some(addr) = &req.addr
        && (addr.len() > MAX_ADDR_LEN
            || !(addr.starts_with("http://") || addr.starts_with("https://"))
            || addr.chars().any(|c| c.is_control() || c.is_whitespace()))
    {
        return Err(InvalidHeartbeat(format!(
            "addr: must be an http:// or https:// URL of at most {MAX_ADDR_LEN} bytes"
        )));
    }
    Ok(())
}
