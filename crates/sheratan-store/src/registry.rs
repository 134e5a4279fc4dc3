//! The node registry's domain: what one node's entry holds, how a heartbeat changes it, and
//! how status (ONLINE/STALE/DEAD), health and attestation (OK/DRIFT/SPOOF_SUSPECT) follow.
//!
//! Memory matters here: a hub may hold 100,000 entries. Strings that many nodes share (build
//! ids, capability names, runtimes) go through an [`Interner`], and a heartbeat that repeats
//! what the entry already holds allocates nothing.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sheratan_proto::control::{Attestation, FirstSeen, Health, Load, NodeStatus, NodeView, Role};
use time::OffsetDateTime;

/// Thresholds of the registry (docs/API.md, "Settings").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryPolicy {
    /// A node whose last heartbeat is older than this is STALE.
    pub ttl: Duration,
    /// A node whose last heartbeat is older than this is DEAD.
    pub dead_after: Duration,
    /// Capability-hash changes within `spoof_window` that make a node SPOOF_SUSPECT.
    pub spoof_threshold: u32,
    pub spoof_window: Duration,
}

impl RegistryPolicy {
    pub fn status_for_age(&self, age: Duration) -> NodeStatus {
        if age < self.ttl {
            NodeStatus::Online
        } else if age < self.dead_after {
            NodeStatus::Stale
        } else {
            NodeStatus::Dead
        }
    }
}

/// GREEN when all is well; YELLOW when STALE or attestation is not OK; RED when DEAD.
pub fn health(status: NodeStatus, attestation: Attestation) -> Health {
    match (status, attestation) {
        (NodeStatus::Dead, _) => Health::Red,
        (NodeStatus::Stale, _) => Health::Yellow,
        (NodeStatus::Online, Attestation::Ok) => Health::Green,
        (NodeStatus::Online, _) => Health::Yellow,
    }
}

/// Deduplicates strings many nodes share, so 100,000 workers of one build hold one copy of
/// its build id. Bounded: past `cap` distinct strings it stops remembering new ones (a hostile
/// node sending random values then costs only its own entry).
#[derive(Debug)]
pub struct Interner {
    set: Mutex<HashSet<Arc<str>>>,
    cap: usize,
}

impl Default for Interner {
    fn default() -> Self {
        Self::with_capacity_limit(50_000)
    }
}

impl Interner {
    pub fn with_capacity_limit(cap: usize) -> Self {
        Self {
            set: Mutex::new(HashSet::new()),
            cap,
        }
    }

    pub fn intern(&self, s: &str) -> Arc<str> {
        let mut set = self.set.lock().expect("interner lock is never poisoned");
        if let Some(found) = set.get(s) {
            return found.clone();
        }
        let arc: Arc<str> = Arc::from(s);
        if set.len() < self.cap {
            set.insert(arc.clone());
        }
        arc
    }
}

/// The part of a heartbeat that attestation watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub build_id: Arc<str>,
    pub capability_hash: Arc<str>,
    /// The runtime object as canonical JSON (keys sorted).
    pub runtime: Arc<str>,
}

impl Fingerprint {
    fn matches(&self, obs: &Observation<'_>) -> bool {
        &*self.build_id == obs.build_id
            && &*self.capability_hash == obs.capability_hash
            && &*self.runtime == obs.runtime_json
    }

    fn changed_fields(&self, other: &Fingerprint) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.build_id != other.build_id {
            changed.push("build_id");
        }
        if self.capability_hash != other.capability_hash {
            changed.push("capability_hash");
        }
        if self.runtime != other.runtime {
            changed.push("runtime");
        }
        changed
    }

    /// For event details: runtime as a JSON value rather than a string of JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "build_id": &*self.build_id,
            "capability_hash": &*self.capability_hash,
            "runtime": runtime_value(&self.runtime),
        })
    }
}

fn runtime_value(canonical: &str) -> serde_json::Value {
    // The string was produced by serializing a JSON object, so it always parses back.
    serde_json::from_str(canonical).unwrap_or(serde_json::Value::Null)
}

/// A validated heartbeat, borrowed from the request.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    pub role: Role,
    pub addr: Option<&'a str>,
    pub capabilities: &'a [String],
    pub build_id: &'a str,
    pub capability_hash: &'a str,
    /// The runtime object as canonical JSON.
    pub runtime_json: &'a str,
    pub load: Load,
}

/// Something a heartbeat revealed that the hub reports as an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// The first heartbeat of this node: the attestation baseline is recorded.
    FirstSeen(Fingerprint),
    /// The fingerprint changed and now differs from the baseline.
    Drift {
        changed: Vec<&'static str>,
        from: Fingerprint,
        to: Fingerprint,
    },
    /// The capability hash changed `changes` times within the window.
    SpoofSuspect { changes: usize, window: Duration },
    /// The node was STALE or DEAD and is heard from again.
    Recovered { from: NodeStatus },
}

/// What a heartbeat did to an entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub signals: Vec<Signal>,
    /// Something beyond liveness (last seen, load) changed: role, address, capabilities,
    /// fingerprint or status. Persisting such changes is more urgent than liveness.
    pub changed: bool,
}

/// One node's registry entry. (Its file form is the hub's snapshot format.)
#[derive(Debug, Clone)]
pub struct NodeRecord {
    pub node_id: Arc<str>,
    pub role: Role,
    pub addr: Option<Arc<str>>,
    pub capabilities: Arc<[Arc<str>]>,
    /// What the last heartbeat said.
    pub current: Fingerprint,
    /// What the first heartbeat said, or what an operator last accepted; `None` while it is
    /// the same as `current` (the usual case: no second copy in memory or in the snapshot).
    pub baseline: Option<Fingerprint>,
    pub first_seen_at: OffsetDateTime,
    pub last_seen: OffsetDateTime,
    pub load: Load,
    pub spoof_suspect: bool,
    /// Unix milliseconds of recent capability-hash changes, oldest first, pruned to the window.
    pub hash_changes: VecDeque<i64>,
    /// The status last reported by an event, so the sweeper reports each transition once.
    pub reported_status: NodeStatus,
    /// The instant age is measured from. Equals `last_seen` except for entries loaded from a
    /// snapshot and not heard from since, whose hub downtime must not count (see [`restore`]).
    ///
    /// [`restore`]: NodeRecord::restore
    pub age_anchor: Option<OffsetDateTime>,
}

impl NodeRecord {
    /// The entry a node's first heartbeat creates.
    pub fn first(
        node_id: Arc<str>,
        obs: &Observation<'_>,
        now: OffsetDateTime,
        interner: &Interner,
    ) -> (NodeRecord, Signal) {
        let fingerprint = Fingerprint {
            build_id: interner.intern(obs.build_id),
            capability_hash: interner.intern(obs.capability_hash),
            runtime: interner.intern(obs.runtime_json),
        };
        let record = NodeRecord {
            node_id,
            role: obs.role,
            addr: obs.addr.map(|a| interner.intern(a)),
            capabilities: intern_list(obs.capabilities, interner),
            current: fingerprint.clone(),
            baseline: None,
            first_seen_at: now,
            last_seen: now,
            load: obs.load,
            spoof_suspect: false,
            hash_changes: VecDeque::new(),
            reported_status: NodeStatus::Online,
            age_anchor: None,
        };
        (record, Signal::FirstSeen(fingerprint))
    }

    /// Applies a later heartbeat and returns what it revealed.
    pub fn observe(
        &mut self,
        obs: &Observation<'_>,
        now: OffsetDateTime,
        policy: &RegistryPolicy,
        interner: &Interner,
    ) -> Observed {
        let mut signals = Vec::new();
        let mut changed = false;
        let before = self.status_at(now, policy);
        if before != NodeStatus::Online || self.reported_status != NodeStatus::Online {
            signals.push(Signal::Recovered {
                from: if before == NodeStatus::Online {
                    self.reported_status
                } else {
                    before
                },
            });
        }
        self.reported_status = NodeStatus::Online;
        self.last_seen = now;
        self.age_anchor = None;
        self.load = obs.load;
        if self.role != obs.role {
            self.role = obs.role;
            changed = true;
        }
        if self.addr.as_deref() != obs.addr {
            self.addr = obs.addr.map(|a| interner.intern(a));
            changed = true;
        }
        if !self
            .capabilities
            .iter()
            .map(|c| &**c)
            .eq(obs.capabilities.iter().map(String::as_str))
        {
            self.capabilities = intern_list(obs.capabilities, interner);
            changed = true;
        }

        if !self.current.matches(obs) {
            changed = true;
            let next = Fingerprint {
                build_id: interner.intern(obs.build_id),
                capability_hash: interner.intern(obs.capability_hash),
                runtime: interner.intern(obs.runtime_json),
            };
            let hash_changed = next.capability_hash != self.current.capability_hash;
            let previous = std::mem::replace(&mut self.current, next);
            let baseline = self.baseline.get_or_insert_with(|| previous.clone());
            if *baseline == self.current {
                self.baseline = None;
            } else {
                signals.push(Signal::Drift {
                    changed: baseline.changed_fields(&self.current),
                    from: previous,
                    to: self.current.clone(),
                });
            }
            if hash_changed {
                let now_ms = unix_ms(now);
                let window_ms = i64::try_from(policy.spoof_window.as_millis()).unwrap_or(i64::MAX);
                self.hash_changes.push_back(now_ms);
                while self
                    .hash_changes
                    .front()
                    .is_some_and(|&t| now_ms.saturating_sub(t) > window_ms)
                {
                    self.hash_changes.pop_front();
                }
                // Only the threshold matters; a node flipping its hash a million times must
                // not grow its entry.
                let keep = usize::try_from(policy.spoof_threshold.max(1)).unwrap_or(usize::MAX);
                while self.hash_changes.len() > keep {
                    self.hash_changes.pop_front();
                }
                let threshold =
                    usize::try_from(policy.spoof_threshold.max(1)).unwrap_or(usize::MAX);
                if !self.spoof_suspect && self.hash_changes.len() >= threshold {
                    self.spoof_suspect = true;
                    signals.push(Signal::SpoofSuspect {
                        changes: self.hash_changes.len(),
                        window: policy.spoof_window,
                    });
                }
            }
        }
        changed |= !signals.is_empty();
        Observed { signals, changed }
    }

    /// Makes the current fingerprint the new baseline and clears the spoof signal: an operator
    /// has checked the node and vouches for what it reports now.
    pub fn accept_attestation(&mut self) {
        self.baseline = None;
        self.spoof_suspect = false;
        self.hash_changes.clear();
    }

    /// Prepares an entry loaded from a snapshot written at `written_at` by a hub that is now
    /// restarted at `started_at`. The downtime in between does not count against the node,
    /// and no entry turns STALE or DEAD within one TTL of the start: an entry that was ONLINE
    /// when the snapshot was written gets one full TTL before it can turn STALE; a STALE one
    /// keeps its age, but at most `dead_after - ttl`, so it needs one more TTL to turn DEAD; a
    /// DEAD one stays DEAD.
    pub fn restore(
        &mut self,
        written_at: OffsetDateTime,
        started_at: OffsetDateTime,
        policy: &RegistryPolicy,
    ) {
        let age_at_snapshot = duration_between(self.last_seen, written_at);
        let carried = if age_at_snapshot < policy.ttl {
            Duration::ZERO
        } else if age_at_snapshot < policy.dead_after {
            age_at_snapshot.min(policy.dead_after.saturating_sub(policy.ttl))
        } else {
            age_at_snapshot
        };
        // A nonsensical timestamp in a hand-edited snapshot must not panic the hub; such an
        // entry is as old as can be.
        let oldest = started_at
            .checked_sub(
                time::Duration::try_from(policy.dead_after).unwrap_or(time::Duration::ZERO),
            )
            .unwrap_or(started_at);
        self.age_anchor = Some(
            time::Duration::try_from(carried)
                .ok()
                .and_then(|c| started_at.checked_sub(c))
                .unwrap_or(oldest),
        );
    }

    pub fn age_at(&self, now: OffsetDateTime) -> Duration {
        duration_between(self.age_anchor.unwrap_or(self.last_seen), now)
    }

    pub fn status_at(&self, now: OffsetDateTime, policy: &RegistryPolicy) -> NodeStatus {
        policy.status_for_age(self.age_at(now))
    }

    pub fn attestation(&self) -> Attestation {
        if self.spoof_suspect {
            Attestation::SpoofSuspect
        } else if self.baseline.is_some() {
            Attestation::Drift
        } else {
            Attestation::Ok
        }
    }

    /// The wire view at `now`.
    pub fn view(&self, now: OffsetDateTime, policy: &RegistryPolicy) -> NodeView {
        let status = self.status_at(now, policy);
        let attestation = self.attestation();
        let baseline = self.baseline.as_ref().unwrap_or(&self.current);
        NodeView {
            node_id: self.node_id.to_string(),
            role: self.role,
            addr: self.addr.as_deref().map(str::to_owned),
            status,
            health: health(status, attestation),
            attestation,
            first_seen: FirstSeen {
                at: self.first_seen_at,
                build_id: baseline.build_id.to_string(),
                capability_hash: baseline.capability_hash.to_string(),
                runtime: runtime_value(&baseline.runtime),
            },
            last_seen: self.last_seen,
            capabilities: self.capabilities.iter().map(|c| c.to_string()).collect(),
            build_id: self.current.build_id.to_string(),
            capability_hash: self.current.capability_hash.to_string(),
            runtime: runtime_value(&self.current.runtime),
            load: self.load,
        }
    }
}

fn intern_list(items: &[String], interner: &Interner) -> Arc<[Arc<str>]> {
    items.iter().map(|c| interner.intern(c)).collect()
}

fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// `to - from`, or zero when `to` is earlier (a clock step backwards must not panic).
fn duration_between(from: OffsetDateTime, to: OffsetDateTime) -> Duration {
    Duration::try_from(to - from).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RegistryPolicy {
        RegistryPolicy {
            ttl: Duration::from_secs(120),
            dead_after: Duration::from_secs(600),
            spoof_threshold: 3,
            spoof_window: Duration::from_secs(600),
        }
    }

    fn obs<'a>(caps: &'a [String], build: &'a str, hash: &'a str) -> Observation<'a> {
        Observation {
            role: Role::Worker,
            addr: None,
            capabilities: caps,
            build_id: build,
            capability_hash: hash,
            runtime_json: r#"{"os":"linux"}"#,
            load: Load::default(),
        }
    }

    fn t0() -> OffsetDateTime {
        time::macros::datetime!(2026-11-27 08:00 UTC)
    }

    #[test]
    fn status_follows_age_and_health_follows_status() {
        let interner = Interner::default();
        let caps = vec!["echo".to_owned()];
        let (rec, signal) =
            NodeRecord::first("n1".into(), &obs(&caps, "b1", "h1"), t0(), &interner);
        assert!(matches!(signal, Signal::FirstSeen(_)));
        let p = policy();
        let at = |s: i64| t0() + time::Duration::seconds(s);
        assert_eq!(rec.status_at(at(119), &p), NodeStatus::Online);
        assert_eq!(rec.status_at(at(120), &p), NodeStatus::Stale);
        assert_eq!(rec.status_at(at(599), &p), NodeStatus::Stale);
        assert_eq!(rec.status_at(at(600), &p), NodeStatus::Dead);
        assert_eq!(rec.view(at(0), &p).health, Health::Green);
        assert_eq!(rec.view(at(200), &p).health, Health::Yellow);
        assert_eq!(rec.view(at(700), &p).health, Health::Red);
        // A clock that steps backwards reads as age zero, not a panic.
        assert_eq!(rec.status_at(at(-50), &p), NodeStatus::Online);
    }

    #[test]
    fn drift_is_signalled_once_per_change_and_clears_when_back_at_baseline() {
        let interner = Interner::default();
        let caps = vec![];
        let p = policy();
        let (mut rec, _) = NodeRecord::first("n1".into(), &obs(&caps, "b1", "h1"), t0(), &interner);
        assert!(
            rec.observe(&obs(&caps, "b1", "h1"), t0(), &p, &interner)
                .signals
                .is_empty()
        );
        let signals = rec
            .observe(&obs(&caps, "b2", "h1"), t0(), &p, &interner)
            .signals;
        assert!(
            matches!(&signals[..], [Signal::Drift { changed, .. }] if changed == &["build_id"])
        );
        assert_eq!(rec.attestation(), Attestation::Drift);
        // The same drifted values again: no new signal.
        assert!(
            rec.observe(&obs(&caps, "b2", "h1"), t0(), &p, &interner)
                .signals
                .is_empty()
        );
        // Back at the baseline: attestation is OK again, nothing to report.
        assert!(
            rec.observe(&obs(&caps, "b1", "h1"), t0(), &p, &interner)
                .signals
                .is_empty()
        );
        assert_eq!(rec.attestation(), Attestation::Ok);
    }

    #[test]
    fn capability_hash_flip_flop_raises_spoof_suspect_within_the_window_only() {
        let interner = Interner::default();
        let caps = vec![];
        let p = policy();
        let (mut rec, _) = NodeRecord::first("n1".into(), &obs(&caps, "b", "h1"), t0(), &interner);
        let minute = |m: i64| t0() + time::Duration::minutes(m);
        // Two changes, then a long pause: the window forgets them.
        rec.observe(&obs(&caps, "b", "h2"), minute(1), &p, &interner);
        rec.observe(&obs(&caps, "b", "h1"), minute(2), &p, &interner);
        let s = rec
            .observe(&obs(&caps, "b", "h2"), minute(30), &p, &interner)
            .signals;
        assert!(!s.iter().any(|s| matches!(s, Signal::SpoofSuspect { .. })));
        assert_eq!(rec.attestation(), Attestation::Drift);
        // Three changes inside ten minutes.
        rec.observe(&obs(&caps, "b", "h1"), minute(31), &p, &interner);
        let s = rec
            .observe(&obs(&caps, "b", "h2"), minute(32), &p, &interner)
            .signals;
        assert!(
            s.iter()
                .any(|s| matches!(s, Signal::SpoofSuspect { changes: 3, .. }))
        );
        assert_eq!(rec.attestation(), Attestation::SpoofSuspect);
        // It is raised once, and it sticks until an operator accepts.
        let s = rec
            .observe(&obs(&caps, "b", "h3"), minute(33), &p, &interner)
            .signals;
        assert!(!s.iter().any(|s| matches!(s, Signal::SpoofSuspect { .. })));
        rec.accept_attestation();
        assert_eq!(rec.attestation(), Attestation::Ok);
        assert_eq!(rec.baseline, None);
        assert_eq!(rec.view(minute(33), &p).first_seen.capability_hash, "h3");
    }

    #[test]
    fn recovery_is_signalled_after_stale() {
        let interner = Interner::default();
        let caps = vec![];
        let p = policy();
        let (mut rec, _) = NodeRecord::first("n1".into(), &obs(&caps, "b", "h"), t0(), &interner);
        let later = t0() + time::Duration::seconds(300);
        let s = rec
            .observe(&obs(&caps, "b", "h"), later, &p, &interner)
            .signals;
        assert_eq!(
            s,
            vec![Signal::Recovered {
                from: NodeStatus::Stale
            }]
        );
        let repeat = rec.observe(&obs(&caps, "b", "h"), later, &p, &interner);
        assert!(repeat.signals.is_empty());
        assert!(!repeat.changed, "a repeat only refreshes liveness");
    }

    #[test]
    fn restore_does_not_count_downtime() {
        let interner = Interner::default();
        let caps = vec![];
        let p = policy();
        let (mut online, _) =
            NodeRecord::first("n1".into(), &obs(&caps, "b", "h"), t0(), &interner);
        let mut stale = online.clone();
        stale.last_seen = t0() - time::Duration::seconds(200);
        // The snapshot was written at t0; the hub comes back a day later.
        let start = t0() + time::Duration::days(1);
        online.restore(t0(), start, &p);
        stale.restore(t0(), start, &p);
        let after = |s: i64| start + time::Duration::seconds(s);
        assert_eq!(online.status_at(after(119), &p), NodeStatus::Online);
        assert_eq!(online.status_at(after(120), &p), NodeStatus::Stale);
        assert_eq!(stale.status_at(after(0), &p), NodeStatus::Stale);
        assert_eq!(stale.status_at(after(399), &p), NodeStatus::Stale);
        assert_eq!(stale.status_at(after(400), &p), NodeStatus::Dead);

        // A node about to turn DEAD when the hub went down still gets one TTL after the start.
        let mut nearly_dead = online.clone();
        nearly_dead.last_seen = t0() - time::Duration::seconds(590);
        nearly_dead.restore(t0(), start, &p);
        assert_eq!(nearly_dead.status_at(after(119), &p), NodeStatus::Stale);
        assert_eq!(nearly_dead.status_at(after(120), &p), NodeStatus::Dead);
        // A dead one stays dead.
        let mut dead = online.clone();
        dead.last_seen = t0() - time::Duration::seconds(700);
        dead.restore(t0(), start, &p);
        assert_eq!(dead.status_at(after(0), &p), NodeStatus::Dead);
        // Absurd timestamps do not panic.
        let mut absurd = online.clone();
        absurd.last_seen = OffsetDateTime::new_utc(time::Date::MIN, time::Time::MIDNIGHT);
        absurd.restore(t0(), start, &p);
        assert_eq!(absurd.status_at(after(0), &p), NodeStatus::Dead);
    }

    #[test]
    fn unchanged_heartbeats_share_interned_strings() {
        let interner = Interner::default();
        let caps = vec!["echo".to_owned(), "sleep".to_owned()];
        let (a, _) = NodeRecord::first("a".into(), &obs(&caps, "b", "h"), t0(), &interner);
        let (b, _) = NodeRecord::first("b".into(), &obs(&caps, "b", "h"), t0(), &interner);
        assert!(Arc::ptr_eq(&a.current.build_id, &b.current.build_id));
        assert!(Arc::ptr_eq(&a.capabilities[0], &b.capabilities[0]));
    }
}

/// A registry entry as hubs on one database exchange it: everything a hub needs to answer for
/// a node another hub heard from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeExport {
    pub node_id: String,
    pub role: Role,
    pub addr: Option<String>,
    pub capabilities: Vec<String>,
    pub current: FingerprintExport,
    pub baseline: Option<FingerprintExport>,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    pub load: Load,
    pub spoof_suspect: bool,
    pub hash_changes: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FingerprintExport {
    pub build_id: String,
    pub capability_hash: String,
    pub runtime: String,
}

impl Fingerprint {
    fn export(&self) -> FingerprintExport {
        FingerprintExport {
            build_id: self.build_id.to_string(),
            capability_hash: self.capability_hash.to_string(),
            runtime: self.runtime.to_string(),
        }
    }

    fn import(e: &FingerprintExport, interner: &Interner) -> Fingerprint {
        Fingerprint {
            build_id: interner.intern(&e.build_id),
            capability_hash: interner.intern(&e.capability_hash),
            runtime: interner.intern(&e.runtime),
        }
    }
}

impl NodeRecord {
    pub fn export(&self) -> NodeExport {
        NodeExport {
            node_id: self.node_id.to_string(),
            role: self.role,
            addr: self.addr.as_ref().map(|a| a.to_string()),
            capabilities: self.capabilities.iter().map(|c| c.to_string()).collect(),
            current: self.current.export(),
            baseline: self.baseline.as_ref().map(Fingerprint::export),
            first_seen_at: self.first_seen_at,
            last_seen: self.last_seen,
            load: self.load,
            spoof_suspect: self.spoof_suspect,
            hash_changes: self.hash_changes.iter().copied().collect(),
        }
    }

    /// An entry from another hub's export. Its status starts as ONLINE-or-worse computed
    /// fresh, so this hub's sweeper reports transitions it sees from now on.
    pub fn import(
        e: &NodeExport,
        interner: &Interner,
        now: OffsetDateTime,
        policy: &RegistryPolicy,
    ) -> NodeRecord {
        let mut record = NodeRecord {
            node_id: interner.intern(&e.node_id),
            role: e.role,
            addr: e.addr.as_deref().map(|a| interner.intern(a)),
            capabilities: e.capabilities.iter().map(|c| interner.intern(c)).collect(),
            current: Fingerprint::import(&e.current, interner),
            baseline: e
                .baseline
                .as_ref()
                .map(|b| Fingerprint::import(b, interner)),
            first_seen_at: e.first_seen_at,
            last_seen: e.last_seen,
            load: e.load,
            spoof_suspect: e.spoof_suspect,
            hash_changes: e.hash_changes.iter().copied().collect(),
            reported_status: NodeStatus::Online,
            age_anchor: None,
        };
        record.reported_status = record.status_at(now, policy);
        record
    }
}
