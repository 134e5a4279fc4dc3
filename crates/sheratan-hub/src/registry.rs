//! The node registry service: the in-memory table of nodes, the sweeper that reports status
//! transitions, and the coalesced snapshot in `$SHERATAN_HOME/nodes_registry.json`.
//!
//! A heartbeat is the hottest request of the control plane, so it touches one shard's lock
//! for the time of a few comparisons, allocates nothing when the node repeats itself, and
//! never writes to disk: it only marks the table changed. A background task writes the whole
//! table at most about once a second (less often when a write takes long), cloning each shard
//! under its lock (cheap: the strings are shared) and serializing outside of it.

use std::collections::HashMap;
use std::fs;
use std::hash::BuildHasher;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sheratan_proto::control::{HeartbeatRequest, HeartbeatResponse, NodeStatus, NodeView, Role};
use sheratan_proto::{EventKind, Plane};
use sheratan_store::Clock;
use sheratan_store::registry::{Interner, NodeRecord, Observation, RegistryPolicy, Signal, health};
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditLog, Event};
use crate::persist::write_atomic_with;
use crate::snapshot::{self, Row, StringTable};

pub const REGISTRY_FILE: &str = "nodes_registry.json";

const SHARDS: usize = 1024;
/// Shards swept between two yields to the runtime.
const SWEEP_SLICE: usize = 64;

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
    /// Wall-clock start of the last write, Unix seconds (so a benchmark can tell which of its
    /// requests overlapped a write).
    pub last_started_unix_s: f64,
}

/// What the snapshot writer receives: rows a shard at a time, then the tables they index.
enum Batch {
    Rows(Vec<Row>),
    Tables(Box<StringTable>),
}

/// Counts the bytes that pass through, for the snapshot size metric.
struct CountingWriter<W> {
    inner: W,
    count: usize,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Distinct capability sets, each sorted.
pub type CapabilitySets = Arc<Vec<Vec<String>>>;

pub struct Registry {
    shards: Box<[Shard]>,
    hasher: std::collections::hash_map::RandomState,
    policy: RegistryPolicy,
    interner: Interner,
    clock: Arc<dyn Clock>,
    audit: AuditLog,
    path: PathBuf,
    /// Something beyond liveness changed since the last snapshot (a new node, a new
    /// fingerprint, a status transition): written at the next flush.
    changed: AtomicBool,
    /// Only last-seen times and loads changed: written at the slower liveness cadence.
    refreshed: AtomicBool,
    /// How often liveness-only changes are written: TTL/4, between the flush interval and 30 s.
    liveness_interval: Mutex<Duration>,
    last_write: Mutex<Option<Instant>>,
    heartbeats: AtomicU64,
    /// Nodes by reported status: [online, stale, dead].
    status_counts: [AtomicU64; 3],
    stats: Mutex<SnapshotStats>,
    /// Serializes snapshot writers (the timer and a shutdown flush).
    write_lock: Mutex<()>,
    /// Nodes an operator removed, and when: an entry heard from no later than that (another
    /// hub's copy on a shared database) does not bring the node back; a new heartbeat does.
    removed: Mutex<HashMap<String, time::OffsetDateTime>>,
    /// The distinct capability sets of ONLINE nodes, and when they were gathered.
    online_caps: std::sync::RwLock<Option<(Instant, CapabilitySets)>>,
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
            changed: AtomicBool::new(false),
            refreshed: AtomicBool::new(false),
            liveness_interval: Mutex::new(policy.ttl / 4),
            last_write: Mutex::new(None),
            heartbeats: AtomicU64::new(0),
            status_counts: Default::default(),
            stats: Mutex::new(SnapshotStats::default()),
            write_lock: Mutex::new(()),
            removed: Mutex::new(HashMap::new()),
            online_caps: std::sync::RwLock::new(None),
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
        let loaded = match snapshot::decode(&bytes, &self.interner) {
            Ok(loaded) => loaded,
            Err(why) => {
                self.set_aside(&why);
                return;
            }
        };
        let started_at = self.clock.now();
        let count = loaded.records.len();
        for mut record in loaded.records {
            record.restore(loaded.written_at, started_at, &self.policy);
            self.count_transition(None, record.reported_status);
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
        let (signals, changed, status, attestation) = {
            let mut shard = self
                .shard(&req.node_id)
                .lock()
                .expect("registry shard lock");
            let (signals, changed) = match shard.get_mut(req.node_id.as_str()) {
                Some(record) => {
                    let reported = record.reported_status;
                    let observed = record.observe(&obs, now, &self.policy, &self.interner);
                    if reported != NodeStatus::Online {
                        self.count_transition(Some(reported), NodeStatus::Online);
                        self.forget_online_capabilities();
                    } else if observed.changed {
                        self.forget_online_capabilities();
                    }
                    (observed.signals, observed.changed)
                }
                None => {
                    self.forget_online_capabilities();
                    let key = self.interner.intern(&req.node_id);
                    let (record, signal) =
                        NodeRecord::first(key.clone(), &obs, now, &self.interner);
                    shard.insert(key, record);
                    self.count_transition(None, NodeStatus::Online);
                    (vec![signal], true)
                }
            };
            let record = shard
                .get(req.node_id.as_str())
                .expect("the entry was just updated or inserted under this lock");
            (
                signals,
                changed,
                record.status_at(now, &self.policy),
                record.attestation(),
            )
        };
        self.heartbeats.fetch_add(1, Ordering::Relaxed);
        if changed {
            self.changed.store(true, Ordering::Relaxed);
        } else {
            self.refreshed.store(true, Ordering::Relaxed);
        }
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

    /// The distinct capability sets (handler names included) of the ONLINE nodes, each sorted:
    /// what submits compare a job's requirements with. Gathered at most once a second, so a
    /// submit costs a lock and a look at a few sets, whatever the size of the registry.
    pub fn online_capabilities(&self) -> CapabilitySets {
        {
            let cached = self.online_caps.read().expect("registry capabilities lock");
            if let Some((at, sets)) = cached.as_ref()
                && at.elapsed() < Duration::from_secs(1)
            {
                return sets.clone();
            }
        }
        let now = self.clock.now();
        let mut sets: std::collections::BTreeSet<Vec<String>> = Default::default();
        for shard in self.shards.iter() {
            let shard = shard.lock().expect("registry shard lock");
            for record in shard.values() {
                if record.status_at(now, &self.policy) == NodeStatus::Online {
                    let mut caps: Vec<String> =
                        record.capabilities.iter().map(|c| c.to_string()).collect();
                    caps.sort();
                    sets.insert(caps);
                }
            }
        }
        let sets = Arc::new(sets.into_iter().collect::<Vec<_>>());
        *self
            .online_caps
            .write()
            .expect("registry capabilities lock") = Some((Instant::now(), sets.clone()));
        sets
    }

    /// A node came online or changed what it offers: the next submit gathers the sets again.
    fn forget_online_capabilities(&self) {
        *self
            .online_caps
            .write()
            .expect("registry capabilities lock") = None;
    }

    /// Node counts by status: [online, stale, dead].
    ///
    /// Kept up to date by heartbeats (new and recovered nodes) and the sweeper (nodes turning
    /// STALE or DEAD), so a scrape costs nothing however large the registry; a worsening
    /// transition shows here within one sweep interval (at most a second).
    pub fn counts(&self) -> [u64; 3] {
        std::array::from_fn(|i| self.status_counts[i].load(Ordering::Relaxed))
    }

    /// Whether an operator removed the node at or after `seen`.
    fn removed_after(&self, node_id: &str, seen: time::OffsetDateTime) -> bool {
        let removed = self.removed.lock().expect("registry removals lock");
        removed.get(node_id).is_some_and(|at| *at >= seen)
    }

    fn count_transition(&self, from: Option<NodeStatus>, to: NodeStatus) {
        if let Some(from) = from {
            self.status_counts[rank(from) as usize].fetch_sub(1, Ordering::Relaxed);
        }
        self.status_counts[rank(to) as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn heartbeats(&self) -> u64 {
        self.heartbeats.load(Ordering::Relaxed)
    }

    /// Entries heard from after `since` (by this hub, or merged from another), for hubs that
    /// share a database.
    pub fn export_since(
        &self,
        since: time::OffsetDateTime,
    ) -> Vec<sheratan_store::registry::NodeExport> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().expect("registry shard lock");
            out.extend(
                shard
                    .values()
                    .filter(|r| r.last_seen > since)
                    .map(NodeRecord::export),
            );
        }
        out
    }

    /// Takes in entries another hub heard from: an entry newer than this hub's copy replaces
    /// it. No events are emitted: the hub that received the heartbeat reported them.
    pub fn merge(&self, entries: &[sheratan_store::registry::NodeExport]) -> usize {
        let now = self.clock.now();
        let mut merged = 0;
        for entry in entries {
            let mut shard = self
                .shard(&entry.node_id)
                .lock()
                .expect("registry shard lock");
            let previous = shard
                .get(entry.node_id.as_str())
                .map(|r| (r.last_seen, r.reported_status));
            if previous.is_some_and(|(seen, _)| seen >= entry.last_seen)
                || self.removed_after(&entry.node_id, entry.last_seen)
            {
                continue;
            }
            let record = NodeRecord::import(entry, &self.interner, now, &self.policy);
            self.count_transition(previous.map(|(_, status)| status), record.reported_status);
            shard.insert(record.node_id.clone(), record);
            merged += 1;
        }
        if merged > 0 {
            self.changed.store(true, Ordering::Relaxed);
        }
        merged
    }

    /// Removes a node from the registry (an operator's decision: a node gone for good, a test
    /// node). `None` if the node is unknown. A node that heartbeats again simply comes back.
    pub fn remove(&self, node_id: &str) -> Option<NodeView> {
        let now = self.clock.now();
        let mut shard = self.shard(node_id).lock().expect("registry shard lock");
        let record = shard.remove(node_id)?;
        // The removal is recorded before the shard is let go (lock order: shard, then
        // removals, as in `merge`), so no merge can slip the old entry back in between.
        self.removed
            .lock()
            .expect("registry removals lock")
            .insert(node_id.to_owned(), now);
        drop(shard);
        self.status_counts[rank(record.reported_status) as usize].fetch_sub(1, Ordering::Relaxed);
        self.changed.store(true, Ordering::Relaxed);
        tracing::info!(node_id, "node removed from the registry");
        Some(record.view(now, &self.policy))
    }

    /// Removals after `since`: (node id, when), for hubs that share a database.
    pub fn removed_since(
        &self,
        since: time::OffsetDateTime,
    ) -> Vec<(String, time::OffsetDateTime)> {
        let removed = self.removed.lock().expect("registry removals lock");
        removed
            .iter()
            .filter(|(_, at)| **at > since)
            .map(|(id, at)| (id.clone(), *at))
            .collect()
    }

    /// A removal another hub made: the node goes here too unless this hub heard from it
    /// since.
    pub fn merge_removal(&self, node_id: &str, at: time::OffsetDateTime) -> bool {
        let mut shard = self.shard(node_id).lock().expect("registry shard lock");
        let removed = match shard.get(node_id) {
            Some(record) if record.last_seen <= at => shard.remove(node_id),
            _ => None,
        };
        let mut removals = self.removed.lock().expect("registry removals lock");
        if removals.get(node_id).is_none_or(|known| *known < at) {
            removals.insert(node_id.to_owned(), at);
        }
        drop(removals);
        drop(shard);
        let Some(record) = removed else {
            return false;
        };
        self.status_counts[rank(record.reported_status) as usize].fetch_sub(1, Ordering::Relaxed);
        self.changed.store(true, Ordering::Relaxed);
        true
    }

    /// Makes the node's current attestation its new baseline. `None` if the node is unknown.
    pub fn accept_attestation(&self, node_id: &str) -> Option<NodeView> {
        let now = self.clock.now();
        let mut shard = self.shard(node_id).lock().expect("registry shard lock");
        let record = shard.get_mut(node_id)?;
        record.accept_attestation();
        let view = record.view(now, &self.policy);
        drop(shard);
        self.changed.store(true, Ordering::Relaxed);
        tracing::info!(node_id, "attestation accepted as the new baseline");
        Some(view)
    }

    /// Reports each node that turned STALE or DEAD since the last sweep, once.
    ///
    /// Works through the shards in slices and yields between them, so a sweep of 100,000
    /// nodes never holds a runtime worker for more than a few dozen microseconds.
    pub async fn sweep(&self) {
        for first in (0..SHARDS).step_by(SWEEP_SLICE) {
            self.sweep_shards(first..(first + SWEEP_SLICE).min(SHARDS));
            tokio::task::yield_now().await;
        }
    }

    fn sweep_shards(&self, shards: std::ops::Range<usize>) {
        let now = self.clock.now();
        let mut dead = Vec::new();
        let mut any = false;
        for shard in &self.shards[shards] {
            let mut shard = shard.lock().expect("registry shard lock");
            for record in shard.values_mut() {
                let status = record.status_at(now, &self.policy);
                if rank(status) <= rank(record.reported_status) {
                    continue;
                }
                any = true;
                let age = record.age_at(now).as_secs();
                // A node noticed only once it is already DEAD (a sweep that ran late on a
                // starved machine) still went through STALE: report both steps, in order, so
                // every node's history reads the same however late the sweep was.
                if record.reported_status == NodeStatus::Online && status == NodeStatus::Dead {
                    self.count_transition(Some(NodeStatus::Online), NodeStatus::Stale);
                    record.reported_status = NodeStatus::Stale;
                    self.audit.emit(
                        Event::new(EventKind::NodeStale, Plane::Control)
                            .node(&*record.node_id)
                            .detail(serde_json::json!({"silent_for_s": age})),
                    );
                }
                self.count_transition(Some(record.reported_status), status);
                record.reported_status = status;
                let kind = match status {
                    NodeStatus::Stale => EventKind::NodeStale,
                    _ => EventKind::NodeDead,
                };
                // Emitted under the shard lock (emitting never blocks), so a heartbeat that
                // revives the node is reported after this, never before.
                self.audit.emit(
                    Event::new(kind, Plane::Control)
                        .node(&*record.node_id)
                        .detail(serde_json::json!({"silent_for_s": age})),
                );
                if kind == EventKind::NodeDead {
                    dead.push((record.node_id.clone(), age));
                }
            }
        }
        if any {
            self.changed.store(true, Ordering::Relaxed);
        }
        for (node_id, age) in dead.iter().take(10) {
            tracing::warn!(node_id = &**node_id, "NODE_DEAD: no heartbeat for {age}s");
        }
        if dead.len() > 10 {
            tracing::warn!("NODE_DEAD: {} more nodes", dead.len() - 10);
        }
    }

    /// Whether a snapshot is due: something changed since the last write, or only liveness
    /// changed and the liveness interval has passed, or the file went missing. Clears the
    /// flags it consumes; a failed write sets them again.
    ///
    /// Liveness-only changes (a node repeating its heartbeat) are written at a slower cadence
    /// because after a restart every node that was ONLINE gets a full TTL of grace anyway:
    /// last-seen times a few seconds old lose nothing, and a 100k-node registry is not
    /// rewritten every second for timestamps alone.
    fn snapshot_due(&self) -> bool {
        let missing = !self.path.exists();
        let interval = *self.liveness_interval.lock().expect("interval lock");
        let liveness_due = self.refreshed.load(Ordering::Relaxed)
            && self
                .last_write
                .lock()
                .expect("last write lock")
                .is_none_or(|at| at.elapsed() >= interval);
        let changed = self.changed.swap(false, Ordering::AcqRel);
        if !(changed || liveness_due || (missing && !self.is_empty())) {
            return false;
        }
        self.refreshed.store(false, Ordering::Relaxed);
        true
    }

    fn is_empty(&self) -> bool {
        self.shards
            .iter()
            .all(|s| s.lock().expect("registry shard lock").is_empty())
    }

    /// One shard's entries captured for the snapshot, under its lock: plain data is copied
    /// and shared strings become table indices (no reference counts are touched).
    fn capture_shard(&self, shard: usize, table: &mut StringTable) -> Vec<Row> {
        self.shards[shard]
            .lock()
            .expect("registry shard lock")
            .values()
            .map(|record| Row::capture(record, table))
            .collect()
    }

    /// Writes the whole registry now, from the calling thread. Blocking.
    pub fn write_snapshot(&self) -> io::Result<SnapshotStats> {
        let mut table = StringTable::default();
        let mut next = 0;
        let mut done = false;
        self.write_snapshot_from(|| {
            if next < SHARDS {
                next += 1;
                Some(Batch::Rows(self.capture_shard(next - 1, &mut table)))
            } else if !done {
                done = true;
                Some(Batch::Tables(Box::new(std::mem::take(&mut table))))
            } else {
                None
            }
        })
    }

    /// Streams the snapshot file from batches of rows and, last, the string table, so
    /// neither the file nor a copy of the registry ever sits in memory whole.
    fn write_snapshot_from(
        &self,
        mut next_batch: impl FnMut() -> Option<Batch>,
    ) -> io::Result<SnapshotStats> {
        let _writer = self.write_lock.lock().expect("snapshot writer lock");
        let started = Instant::now();
        let written_at = self.clock.now();
        let mut nodes = 0usize;
        let mut bytes = 0usize;
        let result = write_atomic_with(&self.path, 0o644, |out| {
            let mut counting = CountingWriter {
                inner: out,
                count: 0,
            };
            let mut writer = snapshot::Writer::begin(&mut counting, written_at)?;
            let mut tables = StringTable::default();
            while let Some(batch) = next_batch() {
                match batch {
                    Batch::Rows(rows) => writer.rows(&rows)?,
                    Batch::Tables(table) => tables = *table,
                }
            }
            nodes = writer.finish(&tables)?;
            bytes = counting.count;
            Ok(())
        });
        let mut stats = self.stats.lock().expect("snapshot stats lock");
        match result {
            Ok(()) => {
                *self.last_write.lock().expect("last write lock") = Some(started);
                stats.writes += 1;
                stats.last_started_unix_s = unix_now_s() - started.elapsed().as_secs_f64();
                stats.last_duration = started.elapsed();
                stats.last_nodes = nodes;
                stats.last_bytes = bytes;
                Ok(*stats)
            }
            Err(err) => {
                stats.failures += 1;
                // Try again at the next flush.
                self.changed.store(true, Ordering::Relaxed);
                Err(err)
            }
        }
    }

    /// Writes a snapshot through the low-priority writer thread. Rows are captured here, on
    /// the caller's (normal-priority) thread, a shard at a time, and handed over: the writer
    /// never takes a registry lock, so it can never stall a heartbeat while the kernel has it
    /// parked behind busier threads.
    async fn snapshot_via(&self, writer: &SnapshotThread) -> io::Result<SnapshotStats> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let reply = writer.begin(rx)?;
        let mut table = StringTable::default();
        for shard in 0..SHARDS {
            let rows = self.capture_shard(shard, &mut table);
            if tx.send(Batch::Rows(rows)).await.is_err() {
                // The writer gave up; its reply says why.
                break;
            }
            // A shard takes tens of microseconds to capture; let requests run in between.
            tokio::task::yield_now().await;
        }
        let _ = tx.send(Batch::Tables(Box::new(table))).await;
        drop(tx);
        reply
            .await
            .map_err(|_| io::Error::other("the snapshot thread stopped"))?
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
        *self.liveness_interval.lock().expect("interval lock") = (self.policy.ttl / 4)
            .min(Duration::from_secs(30))
            .max(flush_interval);
        // The sweeper runs on its own task: a snapshot that takes long (a big registry written
        // at low priority on a busy machine) must never delay STALE/DEAD detection.
        let sweeper = {
            let registry = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut sweep = tokio::time::interval(sweep_every);
                sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        _ = sweep.tick() => registry.sweep().await,
                    }
                }
            })
        };
        let mut next_flush = tokio::time::Instant::now() + flush_interval;
        let writer = SnapshotThread::start(self.clone());
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep_until(next_flush) => {
                    let mut took = Duration::ZERO;
                    if self.snapshot_due() {
                        match self.snapshot_via(&writer).await {
                            Ok(stats) => took = stats.last_duration,
                            Err(err) => tracing::error!(%err, path = %self.path.display(), "cannot write the registry snapshot; will retry"),
                        }
                    }
                    // Coalesce harder when writes are slow, so snapshots never take more than
                    // about a fifth of the time.
                    next_flush = tokio::time::Instant::now() + flush_interval.max(took * 4);
                }
            }
        }
        let _ = sweeper.await;
        match self.snapshot_via(&writer).await {
            Ok(stats) => tracing::info!(
                nodes = stats.last_nodes,
                "registry snapshot written at shutdown"
            ),
            Err(err) => tracing::error!(%err, "cannot write the registry snapshot at shutdown"),
        }
        writer.stop().await;
    }
}

type SnapshotReply = tokio::sync::oneshot::Sender<io::Result<SnapshotStats>>;
type SnapshotJob = (tokio::sync::mpsc::Receiver<Batch>, SnapshotReply);

/// The one thread that serializes and writes registry snapshots, at the lowest CPU priority
/// (nice 19): on a busy machine the kernel runs heartbeats first and the snapshot in the gaps,
/// so writing a 100k-node registry does not push heartbeat latency up.
struct SnapshotThread {
    tx: Option<std::sync::mpsc::Sender<SnapshotJob>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl SnapshotThread {
    fn start(registry: Arc<Registry>) -> SnapshotThread {
        let (tx, rx) = std::sync::mpsc::channel::<SnapshotJob>();
        let handle = std::thread::Builder::new()
            .name("registry-snapshot".into())
            .spawn(move || {
                if let Err(err) =
                    rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19)
                {
                    tracing::debug!(%err, "cannot lower the snapshot thread's priority");
                }
                while let Ok((mut batches, reply)) = rx.recv() {
                    let outcome = registry.write_snapshot_from(|| batches.blocking_recv());
                    let _ = reply.send(outcome);
                }
            })
            .map_err(|err| tracing::error!(%err, "cannot start the registry snapshot thread"))
            .ok();
        SnapshotThread {
            tx: handle.is_some().then_some(tx),
            handle,
        }
    }

    /// Hands a snapshot job to the thread; the receiver answers when the file is written.
    fn begin(
        &self,
        batches: tokio::sync::mpsc::Receiver<Batch>,
    ) -> io::Result<tokio::sync::oneshot::Receiver<io::Result<SnapshotStats>>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .as_ref()
            .ok_or_else(|| io::Error::other("the snapshot thread is not running"))?
            .send((batches, reply))
            .map_err(|_| io::Error::other("the snapshot thread stopped"))?;
        Ok(answer)
    }

    async fn stop(mut self) {
        self.tx = None;
        if let Some(handle) = self.handle.take() {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

fn unix_now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
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
    // Nodes authenticate with the mesh token; a password in the address would be shown to
    // every reader of the registry (and sent by the broker as Basic credentials).
    if let Some(addr) = &req.addr
        && sheratan_proto::redact::url(addr) != *addr
    {
        return Err(InvalidHeartbeat(
            "addr: must not carry a user name or password (user:password@); nodes authenticate with the mesh token".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sheratan_store::ManualClock;

    use super::*;
    use crate::audit::AuditConfig;

    /// Two hubs' registries on one manual clock, as hubs sharing a database see each other.
    struct Two {
        _dir: tempfile::TempDir,
        clock: Arc<ManualClock>,
        a: Registry,
        b: Registry,
        _writer: crate::audit::AuditWriter,
    }

    fn two() -> Two {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(
            time::macros::datetime!(2026-12-05 08:00 UTC),
        ));
        let (audit, writer) =
            AuditLog::start(AuditConfig::new(dir.path().join("logs")), clock.clone()).unwrap();
        let policy = RegistryPolicy {
            ttl: Duration::from_secs(30),
            dead_after: Duration::from_secs(90),
            spoof_threshold: 3,
            spoof_window: Duration::from_secs(600),
        };
        let open = |name: &str| {
            let home = dir.path().join(name);
            std::fs::create_dir_all(&home).unwrap();
            Registry::open(&home, policy, clock.clone(), audit.clone())
        };
        Two {
            a: open("a"),
            b: open("b"),
            clock,
            _dir: dir,
            _writer: writer,
        }
    }

    fn beat(r: &Registry, node: &str) {
        let req: HeartbeatRequest =
            serde_json::from_value(serde_json::json!({"node_id": node, "role": "worker"})).unwrap();
        r.heartbeat(&req, "10.0.0.1".parse().unwrap(), 10).unwrap();
    }

    #[test]
    fn a_removal_on_one_hub_reaches_the_other_and_a_later_heartbeat_wins() {
        let t = two();
        let epoch = time::OffsetDateTime::UNIX_EPOCH;
        beat(&t.a, "w1");
        assert_eq!(t.b.merge(&t.a.export_since(epoch)), 1);
        t.clock.advance(time::Duration::seconds(1));
        assert!(t.a.remove("w1").is_some());
        let removals = t.a.removed_since(epoch);
        assert_eq!(removals.len(), 1);
        for (node, at) in &removals {
            assert!(t.b.merge_removal(node, *at));
        }
        assert!(t.b.get("w1").is_none());
        assert_eq!(t.b.counts(), [0, 0, 0]);
        // An older copy (from a third hub, or the database's row) does not bring it back.
        let mut stale = t.a.export_since(epoch);
        assert!(stale.is_empty());
        beat(&t.b, "w2");
        stale = t.b.export_since(epoch);
        stale[0].node_id = "w1".into();
        stale[0].last_seen = removals[0].1;
        assert_eq!(t.a.merge(&stale), 0);
        // A heartbeat after the removal does.
        t.clock.advance(time::Duration::seconds(1));
        beat(&t.a, "w1");
        assert_eq!(t.b.merge(&t.a.export_since(removals[0].1)), 1);
        assert!(t.b.get("w1").is_some());
        assert_eq!(t.b.counts(), [2, 0, 0]);
    }

    #[test]
    fn a_removal_does_not_take_a_node_the_other_hub_heard_from_since() {
        let t = two();
        beat(&t.a, "w1");
        let removed_at = t.clock.now();
        t.clock.advance(time::Duration::seconds(1));
        beat(&t.b, "w1");
        assert!(!t.b.merge_removal("w1", removed_at));
        assert!(t.b.get("w1").is_some());
    }
}
