//! Why a job may wait: no node offers what it requires (its kind is always among its
//! requirements; what ONLINE nodes offer, and what recent lease calls on the queue offered),
//! or no node leases from its queue. Submits say so up front in a `warning`
//! (the job is accepted all the same); `GET /v1/queues` says which queues are served.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use sheratan_store::JobSpec;

use crate::HubState;

/// A queue counts as served while a node has asked it for jobs this recently (workers and
/// the broker long-poll every few seconds).
pub const SERVED_WITHIN: Duration = Duration::from_secs(60);

/// What nodes asked each queue for lately: when, and with which capabilities (a node that
/// leases without heartbeating offers what it leases with).
#[derive(Debug, Default)]
pub struct ServedQueues {
    queues: RwLock<HashMap<String, Asked>>,
}

#[derive(Debug)]
struct Asked {
    last: Instant,
    /// Distinct capability sets of recent lease calls, each with when it was last seen.
    capabilities: Vec<(Vec<String>, Instant)>,
}

/// Distinct capability sets remembered per queue.
const MAX_SETS_PER_QUEUE: usize = 64;

/// Queues remembered at most: lease calls may name any queue, and memory must stay bounded.
const MAX_QUEUES: usize = 10_000;

/// A queue nobody has asked for this long is forgotten (and no longer listed).
const FORGET_AFTER: Duration = Duration::from_secs(600);

impl ServedQueues {
    /// A lease call asked these queues with these (sorted) capabilities. Cheap on the lease
    /// path: a read lock, and a write only when what it would record is over a second old.
    pub fn asked(&self, queues: &[String], capabilities: &[String]) {
        let now = Instant::now();
        let fresh = |t: &Instant| now.duration_since(*t) <= Duration::from_secs(1);
        let stale: Vec<&String> = {
            let seen = self.queues.read().expect("served queues lock");
            queues
                .iter()
                .filter(|q| {
                    seen.get(*q).is_none_or(|a| {
                        !fresh(&a.last)
                            || !a
                                .capabilities
                                .iter()
                                .any(|(c, t)| c == capabilities && fresh(t))
                    })
                })
                .collect()
        };
        if stale.is_empty() {
            return;
        }
        let mut seen = self.queues.write().expect("served queues lock");
        if seen.len() >= MAX_QUEUES {
            seen.retain(|_, a| now.duration_since(a.last) <= FORGET_AFTER);
        }
        for q in stale {
            if seen.len() >= MAX_QUEUES && !seen.contains_key(q) {
                continue;
            }
            let asked = seen.entry(q.clone()).or_insert_with(|| Asked {
                last: now,
                capabilities: Vec::new(),
            });
            asked.last = now;
            asked
                .capabilities
                .retain(|(_, t)| now.duration_since(*t) <= SERVED_WITHIN);
            let known = asked
                .capabilities
                .iter()
                .position(|(c, _)| c == capabilities);
            match known {
                Some(i) => asked.capabilities[i].1 = now,
                None if asked.capabilities.len() < MAX_SETS_PER_QUEUE => {
                    asked.capabilities.push((capabilities.to_vec(), now))
                }
                None => {}
            }
        }
    }

    /// Seconds since a node last asked `queue` for jobs; `None` if none has (since start).
    pub fn last_asked_s(&self, queue: &str) -> Option<u64> {
        let seen = self.queues.read().expect("served queues lock");
        seen.get(queue).map(|a| a.last.elapsed().as_secs())
    }

    pub fn served(&self, queue: &str) -> bool {
        let seen = self.queues.read().expect("served queues lock");
        seen.get(queue)
            .is_some_and(|a| a.last.elapsed() <= SERVED_WITHIN)
    }

    /// Whether a recent lease call on `queue` offered every one of `required`.
    fn offered(&self, queue: &str, required: &[String]) -> bool {
        let seen = self.queues.read().expect("served queues lock");
        seen.get(queue).is_some_and(|a| {
            a.capabilities.iter().any(|(caps, t)| {
                t.elapsed() <= SERVED_WITHIN && required.iter().all(|r| caps.contains(r))
            })
        })
    }

    /// Queues asked for within the last `FORGET_AFTER`.
    fn names(&self) -> Vec<String> {
        let seen = self.queues.read().expect("served queues lock");
        seen.iter()
            .filter(|(_, a)| a.last.elapsed() <= FORGET_AFTER)
            .map(|(q, _)| q.clone())
            .collect()
    }
}

/// Makes the job's kind one of its requirements: a job is leased only to a node that offers
/// its kind, whatever the entry point (the CLI, Core, the dashboard, plain HTTP).
pub fn require_kind(spec: &mut JobSpec) {
    if let Err(at) = spec.required_capabilities.binary_search(&spec.kind) {
        spec.required_capabilities.insert(at, spec.kind.clone());
    }
}

/// Why this job may wait, if it may. Only the process that holds the registry (it serves the
/// control plane) can tell what nodes offer; the served queues are this process's own.
pub fn warning(hub: &HubState, spec: &JobSpec) -> Option<String> {
    let required = &spec.required_capabilities;
    if hub.config.planes.control() && !hub.jobs.served.offered(&spec.queue, required) {
        let offered = hub.registry.online_capabilities();
        let runnable = offered
            .iter()
            .any(|caps| required.iter().all(|c| caps.contains(c)));
        if !runnable {
            return Some(format!(
                "no ONLINE node offers kind {:?} with every required capability ({}); {}: the job waits in queue {:?} until one does",
                spec.kind,
                spec.required_capabilities.join(", "),
                offered_summary(&offered),
                spec.queue
            ));
        }
    }
    if !hub.jobs.served.served(&spec.queue) {
        return Some(format!(
            "no node has asked queue {:?} for jobs in the last {} s: the job waits until one does (e.g. sheratan worker --queues {})",
            spec.queue,
            SERVED_WITHIN.as_secs(),
            spec.queue
        ));
    }
    None
}

/// What ONLINE nodes offer, for a warning: a few names, or that none is online.
fn offered_summary(sets: &[Vec<String>]) -> String {
    let mut all: Vec<&str> = sets.iter().flatten().map(String::as_str).collect();
    all.sort_unstable();
    all.dedup();
    match all.len() {
        0 => "no node is ONLINE".into(),
        n if n <= 12 => format!("ONLINE nodes offer {}", all.join(", ")),
        n => format!(
            "ONLINE nodes offer {}, … ({n} in all)",
            all[..12].join(", ")
        ),
    }
}

/// Every queue with jobs or a recent consumer: depth and whether a node serves it.
pub fn queues(hub: &HubState) -> Vec<sheratan_proto::data::QueueView> {
    let counts = hub.store.counts();
    let mut names: BTreeMap<String, u64> = counts
        .queue_depth
        .iter()
        .map(|(q, n)| (q.clone(), *n))
        .collect();
    for q in hub.jobs.served.names() {
        names.entry(q).or_insert(0);
    }
    for (q, _) in &counts.queue_running {
        names.entry(q.clone()).or_insert(0);
    }
    let running: std::collections::HashMap<&str, u64> = counts
        .queue_running
        .iter()
        .map(|(q, n)| (q.as_str(), *n))
        .collect();
    let settings = hub.queue_settings.all();
    for q in settings.keys() {
        names.entry(q.clone()).or_insert(0);
    }
    names
        .into_iter()
        .map(|(queue, depth)| sheratan_proto::data::QueueView {
            served: hub.jobs.served.served(&queue),
            last_asked_s: hub.jobs.served.last_asked_s(&queue),
            settings: settings.get(&queue).cloned(),
            running: running.get(queue.as_str()).copied().unwrap_or(0),
            queue,
            depth,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lease calls may name any queue: what is remembered stays bounded.
    #[test]
    fn remembered_queues_are_capped() {
        let served = ServedQueues::default();
        let caps = vec!["echo".to_owned()];
        for i in 0..MAX_QUEUES + 50 {
            served.asked(&[format!("q{i}")], &caps);
        }
        assert_eq!(served.names().len(), MAX_QUEUES);
        assert!(served.served("q0"));
        assert!(!served.served(&format!("q{}", MAX_QUEUES + 10)));
    }
}
