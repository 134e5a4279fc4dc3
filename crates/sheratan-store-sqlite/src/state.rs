//! The writer's in-memory index of live jobs: ready jobs by queue and required capabilities in
//! priority-then-FIFO order, delayed jobs by due time, leases by expiry. The database is the
//! truth; this index is rebuilt from it at start (and after a failed commit), so leasing never
//! scans a table: picking the next job is a B-tree lookup however deep the queue.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use uuid::Uuid;

/// The `jobs` table's integer primary key: insertion order.
pub type RowId = i64;

/// A set of required capabilities, sorted; shared by every job that requires the same set.
pub type CapSet = Arc<[String]>;

/// Ordering key of a ready job: higher priority first, then lower row id (first in).
type Slot = (Reverse<i32>, RowId);

#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Ready,
    Delayed {
        run_at_ms: i64,
    },
    Leased {
        lease_id: Uuid,
        node_id: Arc<str>,
        expires_ms: i64,
    },
}

/// What the index keeps of a live (accepted or in-progress) job.
#[derive(Debug, Clone)]
pub struct LiveJob {
    pub job_id: Uuid,
    pub queue: Arc<str>,
    pub kind: Arc<str>,
    pub priority: i32,
    pub caps: CapSet,
    pub attempt: u32,
    pub max_attempts: u32,
    pub timeout_s: u32,
    /// The submitter follows the result: it is pending until acknowledged.
    pub follow: bool,
    pub phase: Phase,
}

impl LiveJob {
    /// The holder of this job's lease when `rule` does not let the caller act on it.
    pub fn refused_holder(&self, rule: Option<&sheratan_store::HolderRule>) -> Option<String> {
        match (&self.phase, rule) {
            (Phase::Leased { node_id, .. }, Some(rule)) if !rule.permits(node_id) => {
                Some(node_id.to_string())
            }
            _ => None,
        }
    }
}

#[derive(Default)]
struct QueueIndex {
    paused: bool,
    /// Ready jobs, one ordered set per distinct required-capability set.
    parts: Vec<(CapSet, BTreeSet<Slot>)>,
    /// Accepted jobs of this queue, delayed ones included.
    depth: u64,
}

#[derive(Default)]
pub struct State {
    jobs: HashMap<RowId, LiveJob>,
    leases: HashMap<Uuid, RowId>,
    queues: HashMap<Arc<str>, QueueIndex>,
    delayed: BTreeSet<(i64, RowId)>,
    expiries: BTreeSet<(i64, RowId)>,
    names: HashSet<Arc<str>>,
    capsets: HashSet<CapSet>,
    /// Accepted jobs, all queues.
    pub depth: u64,
    /// In-progress jobs.
    pub inflight: u64,
    /// Finished jobs not yet acknowledged.
    pub results_pending: u64,
}

impl State {
    /// Shares one allocation per distinct queue name or kind.
    pub fn name(&mut self, s: &str) -> Arc<str> {
        if let Some(found) = self.names.get(s) {
            return found.clone();
        }
        let arc: Arc<str> = Arc::from(s);
        self.names.insert(arc.clone());
        arc
    }

    /// Shares one allocation per distinct capability set (expects it sorted).
    pub fn capset(&mut self, caps: &[String]) -> CapSet {
        if let Some(found) = self.capsets.get(caps) {
            return found.clone();
        }
        let arc: CapSet = caps.into();
        self.capsets.insert(arc.clone());
        arc
    }

    pub fn get(&self, row: RowId) -> Option<&LiveJob> {
        self.jobs.get(&row)
    }

    pub fn row_of_lease(&self, lease_id: &Uuid) -> Option<RowId> {
        self.leases.get(lease_id).copied()
    }

    pub fn is_paused(&self, queue: &str) -> bool {
        self.queues.get(queue).is_some_and(|q| q.paused)
    }

    /// Adds a live job in its phase.
    pub fn insert(&mut self, row: RowId, job: LiveJob) {
        match &job.phase {
            Phase::Ready => {
                self.count_accepted(&job.queue, 1);
                self.push_ready(row, &job);
            }
            Phase::Delayed { run_at_ms } => {
                self.count_accepted(&job.queue, 1);
                self.delayed.insert((*run_at_ms, row));
            }
            Phase::Leased {
                lease_id,
                expires_ms,
                ..
            } => {
                self.inflight += 1;
                self.leases.insert(*lease_id, row);
                self.expiries.insert((*expires_ms, row));
            }
        }
        self.jobs.insert(row, job);
    }

    fn count_accepted(&mut self, queue: &Arc<str>, delta: i64) {
        let q = self.queues.entry(queue.clone()).or_default();
        q.depth = q.depth.saturating_add_signed(delta);
        self.depth = self.depth.saturating_add_signed(delta);
    }

    fn push_ready(&mut self, row: RowId, job: &LiveJob) {
        let q = self.queues.entry(job.queue.clone()).or_default();
        let slot = (Reverse(job.priority), row);
        match q
            .parts
            .iter_mut()
            .find(|(caps, _)| Arc::ptr_eq(caps, &job.caps) || **caps == *job.caps)
        {
            Some((_, set)) => {
                set.insert(slot);
            }
            None => q.parts.push((job.caps.clone(), BTreeSet::from([slot]))),
        }
    }

    fn pull_ready(&mut self, row: RowId, job: &LiveJob) {
        if let Some(q) = self.queues.get_mut(&job.queue) {
            let slot = (Reverse(job.priority), row);
            for (_, set) in q.parts.iter_mut() {
                if set.remove(&slot) {
                    break;
                }
            }
        }
    }

    /// Takes up to `max` ready jobs of `queues` whose required capabilities are all in `caps`
    /// (sorted): highest priority first, then first in. Paused queues are skipped. The jobs
    /// leave the ready sets; the caller leases them with [`State::lease`].
    pub fn pick(&mut self, queues: &[String], caps: &[String], max: usize) -> Vec<RowId> {
        // Candidate (queue, part) pairs, decided once per call.
        let mut candidates: Vec<(Arc<str>, usize)> = Vec::new();
        for name in queues {
            let Some((key, q)) = self.queues.get_key_value(name.as_str()) else {
                continue;
            };
            if q.paused || candidates.iter().any(|(k, _)| **k == **key) {
                continue;
            }
            for (i, (required, set)) in q.parts.iter().enumerate() {
                if !set.is_empty() && is_subset(required, caps) {
                    candidates.push((key.clone(), i));
                }
            }
        }
        let mut picked = Vec::new();
        while picked.len() < max {
            let mut best: Option<(Slot, usize)> = None;
            for (c, (queue, part)) in candidates.iter().enumerate() {
                let first = self.queues[queue].parts[*part].1.first().copied();
                if let Some(slot) = first
                    && best.is_none_or(|(b, _)| slot < b)
                {
                    best = Some((slot, c));
                }
            }
            let Some((slot, c)) = best else { break };
            let (queue, part) = &candidates[c];
            if let Some(q) = self.queues.get_mut(queue) {
                q.parts[*part].1.remove(&slot);
            }
            picked.push(slot.1);
        }
        picked
    }

    /// Marks a picked job leased.
    pub fn lease(
        &mut self,
        row: RowId,
        lease_id: Uuid,
        node_id: Arc<str>,
        expires_ms: i64,
    ) -> Option<&LiveJob> {
        let job = self.jobs.get_mut(&row)?;
        job.attempt += 1;
        job.phase = Phase::Leased {
            lease_id,
            node_id,
            expires_ms,
        };
        let queue = job.queue.clone();
        self.count_accepted(&queue, -1);
        self.inflight += 1;
        self.leases.insert(lease_id, row);
        self.expiries.insert((expires_ms, row));
        self.jobs.get(&row)
    }

    /// Moves a leased job's expiry.
    pub fn extend(&mut self, row: RowId, new_expires_ms: i64) {
        if let Some(job) = self.jobs.get_mut(&row)
            && let Phase::Leased { expires_ms, .. } = &mut job.phase
        {
            self.expiries.remove(&(*expires_ms, row));
            *expires_ms = new_expires_ms;
            self.expiries.insert((new_expires_ms, row));
        }
    }

    /// Removes a job from every index (it finished, was cancelled or purged).
    pub fn remove(&mut self, row: RowId) -> Option<LiveJob> {
        let job = self.jobs.remove(&row)?;
        self.unindex(row, &job);
        Some(job)
    }

    fn unindex(&mut self, row: RowId, job: &LiveJob) {
        match &job.phase {
            Phase::Ready => {
                self.pull_ready(row, job);
                self.count_accepted(&job.queue, -1);
            }
            Phase::Delayed { run_at_ms } => {
                self.delayed.remove(&(*run_at_ms, row));
                self.count_accepted(&job.queue, -1);
            }
            Phase::Leased {
                lease_id,
                expires_ms,
                ..
            } => {
                self.leases.remove(lease_id);
                self.expiries.remove(&(*expires_ms, row));
                self.inflight = self.inflight.saturating_sub(1);
            }
        }
    }

    /// Puts a job back to accepted: ready now, or delayed until `run_at_ms`.
    pub fn requeue(&mut self, row: RowId, run_at_ms: Option<i64>, reset_attempts: bool) {
        let Some(mut job) = self.jobs.remove(&row) else {
            return;
        };
        self.unindex(row, &job);
        if reset_attempts {
            job.attempt = 0;
        }
        job.phase = match run_at_ms {
            Some(run_at_ms) => Phase::Delayed { run_at_ms },
            None => Phase::Ready,
        };
        self.insert(row, job);
    }

    /// Promotes delayed jobs due at `now_ms` to ready; returns them.
    pub fn promote_due(&mut self, now_ms: i64) -> Vec<RowId> {
        let mut due = Vec::new();
        while let Some(&(at, row)) = self.delayed.first() {
            if at > now_ms {
                break;
            }
            self.delayed.remove(&(at, row));
            if let Some(job) = self.jobs.get_mut(&row) {
                job.phase = Phase::Ready;
                let job = job.clone();
                self.push_ready(row, &job);
                due.push(row);
            }
        }
        due
    }

    /// Leases whose expiry is at or before `now_ms`.
    pub fn expired(&self, now_ms: i64) -> Vec<RowId> {
        self.expiries
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .map(|(_, row)| *row)
            .collect()
    }

    /// Accepted jobs of a queue (ready and delayed), for a purge.
    pub fn accepted_of(&self, queue: &str) -> Vec<RowId> {
        self.jobs
            .iter()
            .filter(|(_, j)| &*j.queue == queue && !matches!(j.phase, Phase::Leased { .. }))
            .map(|(row, _)| *row)
            .collect()
    }

    pub fn set_paused(&mut self, queue: &str, paused: bool) {
        let key = self.name(queue);
        self.queues.entry(key).or_default().paused = paused;
    }

    /// Accepted jobs per queue, sorted by name; queues without jobs are left out.
    pub fn depth_by_queue(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .queues
            .iter()
            .filter(|(_, q)| q.depth > 0)
            .map(|(name, q)| (name.to_string(), q.depth))
            .collect();
        out.sort();
        out
    }
}

/// Whether every element of `required` is in `have`; both sorted.
fn is_subset(required: &[String], have: &[String]) -> bool {
    let mut have = have.iter();
    required.iter().all(|r| have.by_ref().any(|h| h == r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: &mut State, queue: &str, priority: i32, caps: &[&str]) -> LiveJob {
        let caps: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
        LiveJob {
            job_id: Uuid::now_v7(),
            queue: state.name(queue),
            kind: state.name("echo"),
            priority,
            caps: state.capset(&caps),
            attempt: 0,
            max_attempts: 3,
            timeout_s: 30,
            follow: true,
            phase: Phase::Ready,
        }
    }

    #[test]
    fn picks_by_priority_then_fifo_and_respects_capabilities() {
        let mut s = State::default();
        for (row, prio, caps) in [
            (1, 0, vec![]),
            (2, 5, vec!["gpu"]),
            (3, 5, vec![]),
            (4, 0, vec![]),
        ] {
            let j = job(&mut s, "q", prio, &caps);
            s.insert(row, j);
        }
        assert_eq!(s.depth, 4);
        // A node without "gpu" skips row 2.
        assert_eq!(s.pick(&["q".into()], &[], 10), vec![3, 1, 4]);
        let mut s2 = State::default();
        for (row, prio, caps) in [(1, 0, vec![]), (2, 5, vec!["gpu"]), (3, 5, vec![])] {
            let j = job(&mut s2, "q", prio, &caps);
            s2.insert(row, j);
        }
        assert_eq!(
            s2.pick(&["q".into()], &["cpu".into(), "gpu".into()], 2),
            vec![2, 3]
        );
    }

    #[test]
    fn subset_check() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(is_subset(&s(&[]), &s(&["a"])));
        assert!(is_subset(&s(&["a", "c"]), &s(&["a", "b", "c"])));
        assert!(!is_subset(&s(&["a", "d"]), &s(&["a", "b", "c"])));
        assert!(!is_subset(&s(&["a"]), &s(&[])));
    }

    #[test]
    fn paused_queues_are_skipped_and_counts_follow_phases() {
        let mut s = State::default();
        let j = job(&mut s, "q", 0, &[]);
        s.insert(1, j);
        s.set_paused("q", true);
        assert!(s.pick(&["q".into()], &[], 1).is_empty());
        s.set_paused("q", false);
        let picked = s.pick(&["q".into()], &[], 1);
        assert_eq!(picked, vec![1]);
        let lease = Uuid::now_v7();
        s.lease(1, lease, "n".into(), 1000);
        assert_eq!((s.depth, s.inflight), (0, 1));
        assert_eq!(s.expired(999), Vec::<RowId>::new());
        assert_eq!(s.expired(1000), vec![1]);
        s.requeue(1, Some(5000), false);
        assert_eq!((s.depth, s.inflight), (1, 0));
        assert!(s.promote_due(4999).is_empty());
        assert_eq!(s.promote_due(5000), vec![1]);
        assert_eq!(s.get(1).unwrap().attempt, 1);
        s.remove(1);
        assert_eq!((s.depth, s.inflight), (0, 0));
    }
}
