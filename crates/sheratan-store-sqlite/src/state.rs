//! The writer's in-memory index of live jobs: ready jobs by queue and required capabilities in
//! priority-then-FIFO order, delayed jobs by due time, leases by expiry. The database is the
//! truth; this index is rebuilt from it at start (and after a failed commit), so leasing never
//! scans a table: picking the next job is a B-tree lookup however deep the queue.
//!
//! Queue limits (docs/API.md, "Queue settings") are kept here too. A queue without limits
//! leases exactly as before. In a limited queue, a job whose `concurrency_key` has no room
//! (its running jobs at `key_concurrency`, or no token left of `key_rate`) is *parked* on its
//! key, in order, until the key has room again (one of its jobs ends, a token comes due), so
//! blocked jobs are stepped over once, not scanned at every lease.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use sheratan_proto::queues::QueueSettings;
use sheratan_store::limits::Bucket;
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
        /// When the lease began: the run-time cap counts from here.
        started_ms: i64,
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
    /// Its `concurrency_key`.
    pub key: Option<Arc<str>>,
    pub retry_base_ms: Option<u64>,
    pub retry_max_ms: Option<u64>,
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
    /// In-progress jobs of this queue.
    running: u64,
    /// The limits leasing obeys; `None` (no limit set) is the fast path.
    limits: Option<Limits>,
    /// The queue's rate bucket, when `rate` is set.
    bucket: Option<Bucket>,
    /// Keys with running or parked jobs (or a rate bucket not yet full).
    keys: HashMap<Arc<str>, KeyState>,
}

/// A queue's lease-time limits.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Limits {
    concurrency: Option<u32>,
    key_concurrency: Option<u32>,
    key_rate: Option<sheratan_proto::queues::Rate>,
}

#[derive(Default)]
struct KeyState {
    running: u64,
    /// Ready jobs of this key stepped over because the key had no room, in leasing order.
    parked: BTreeSet<Slot>,
    bucket: Option<Bucket>,
}

impl KeyState {
    /// How many more jobs of this key may start now.
    fn room(&self, limits: &Limits, now_ms: i64) -> u64 {
        let by_count = limits
            .key_concurrency
            .map_or(u64::MAX, |n| u64::from(n).saturating_sub(self.running));
        let by_rate = self.bucket.map_or(u64::MAX, |b| b.whole_at(now_ms));
        by_count.min(by_rate)
    }

    fn is_idle(&self, now_ms: i64) -> bool {
        self.running == 0
            && self.parked.is_empty()
            && self.bucket.is_none_or(|b| b.is_full_at(now_ms))
    }
}

impl QueueIndex {
    /// Whether the queue-wide limits let one more job start now.
    fn has_room(&self, now_ms: i64) -> bool {
        let Some(limits) = &self.limits else {
            return true;
        };
        limits
            .concurrency
            .is_none_or(|n| self.running < u64::from(n))
            && self.bucket.is_none_or(|b| b.whole_at(now_ms) >= 1)
    }
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
    /// Keys waiting for a rate token: (due, queue, key).
    timed: BTreeSet<(i64, Arc<str>, Arc<str>)>,
    /// Room appeared in a limited queue (a job ended, a token came due, a setting changed):
    /// lessees waiting on it should look again.
    wake: bool,
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
                self.count_running(&job.queue, job.key.as_ref());
            }
        }
        self.jobs.insert(row, job);
    }

    /// Counts a job starting to run, in its queue and under its key.
    fn count_running(&mut self, queue: &Arc<str>, key: Option<&Arc<str>>) {
        let q = self.queues.entry(queue.clone()).or_default();
        q.running += 1;
        if let Some(key) = key {
            q.keys.entry(key.clone()).or_default().running += 1;
        }
    }

    /// Counts a job that stopped running; in a limited queue, its room goes to the next job.
    fn uncount_running(&mut self, queue: &Arc<str>, key: Option<&Arc<str>>, now_ms: i64) {
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        q.running = q.running.saturating_sub(1);
        if q.limits.is_some() {
            self.wake = true;
        }
        if let Some(key) = key {
            if let Some(k) = q.keys.get_mut(key) {
                k.running = k.running.saturating_sub(1);
            }
            self.release_key(queue, key, now_ms);
        }
    }

    /// Moves as many parked jobs of `key` back to the ready sets as the key has room for, and
    /// forgets the key when nothing is left to remember.
    fn release_key(&mut self, queue: &Arc<str>, key: &Arc<str>, now_ms: i64) {
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        let Some(k) = q.keys.get_mut(key) else {
            return;
        };
        let room = match &q.limits {
            Some(limits) => k.room(limits, now_ms),
            None => u64::MAX,
        };
        let mut back = Vec::new();
        while (back.len() as u64) < room {
            match k.parked.pop_first() {
                Some(slot) => back.push(slot),
                None => break,
            }
        }
        // Jobs still parked behind the key's rate (not its running count, whose end releases
        // them) come back when the token after those handed back now is due: nothing else
        // would look at them again.
        let count_room = q
            .limits
            .and_then(|l| l.key_concurrency)
            .map_or(u64::MAX, |n| u64::from(n).saturating_sub(k.running));
        if !k.parked.is_empty()
            && count_room > back.len() as u64
            && let Some(b) = k.bucket
        {
            let spent = back.len() as f64;
            let missing = (spent + 1.0 - b.tokens_at(now_ms)).max(0.0);
            let due = now_ms + (missing / b.rate.per_ms()).ceil() as i64;
            self.timed
                .insert((due.max(now_ms + 1), queue.clone(), key.clone()));
        }
        if k.is_idle(now_ms) {
            q.keys.remove(key);
        }
        if !back.is_empty() {
            self.wake = true;
        }
        for slot in back {
            if let Some(job) = self.jobs.get(&slot.1).cloned() {
                self.push_ready(slot.1, &job);
            }
        }
    }

    /// Releases keys whose next rate token has come due.
    pub fn release_due(&mut self, now_ms: i64) {
        while let Some((at, _, _)) = self.timed.first() {
            if *at > now_ms {
                break;
            }
            let Some((_, queue, key)) = self.timed.pop_first() else {
                break;
            };
            self.release_key(&queue, &key, now_ms);
        }
    }

    /// Whether room appeared in a limited queue since the last call.
    pub fn take_wake(&mut self) -> bool {
        std::mem::take(&mut self.wake)
    }

    /// Applies a queue's settings: its pause and its limits. Parked jobs go back to the
    /// ready sets (the new limits decide again); rate buckets start full.
    pub fn set_settings(&mut self, queue: &str, settings: &QueueSettings, now_ms: i64) {
        let key = self.name(queue);
        let q = self.queues.entry(key).or_default();
        q.paused = settings.paused;
        q.limits = settings.limits_leasing().then_some(Limits {
            concurrency: settings.concurrency,
            key_concurrency: settings.key_concurrency,
            key_rate: settings.key_rate,
        });
        if q.bucket.map(|b| b.rate) != settings.rate {
            q.bucket = settings.rate.map(|r| Bucket::full(r, now_ms));
        }
        let mut back = Vec::new();
        for k in q.keys.values_mut() {
            back.extend(std::mem::take(&mut k.parked));
            if k.bucket.map(|b| b.rate) != settings.key_rate {
                k.bucket = None;
            }
        }
        q.keys.retain(|_, k| !k.is_idle(now_ms));
        for slot in back {
            if let Some(job) = self.jobs.get(&slot.1).cloned() {
                self.push_ready(slot.1, &job);
            }
        }
        self.wake = true;
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
                    return;
                }
            }
            if let Some(k) = job.key.as_ref().and_then(|key| q.keys.get_mut(key)) {
                k.parked.remove(&slot);
            }
        }
    }

    /// Takes up to `max` ready jobs of `queues` whose required capabilities are all in `caps`
    /// (sorted): highest priority first, then first in. Paused queues are skipped, and so are
    /// jobs the queue's limits hold back at `now_ms`. The jobs leave the ready sets and count
    /// as running; the caller leases them with [`State::lease`].
    pub fn pick(
        &mut self,
        queues: &[String],
        caps: &[String],
        max: usize,
        now_ms: i64,
    ) -> Vec<RowId> {
        self.release_due(now_ms);
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
                let q = &self.queues[queue];
                let first = q.parts[*part].1.first().copied();
                if let Some(slot) = first
                    && best.is_none_or(|(b, _)| slot < b)
                    && (q.limits.is_none() || q.has_room(now_ms))
                {
                    best = Some((slot, c));
                }
            }
            let Some((slot, c)) = best else { break };
            let (queue, part) = candidates[c].clone();
            if let Some(q) = self.queues.get_mut(&queue) {
                q.parts[part].1.remove(&slot);
            }
            if self.take(&queue, slot, now_ms) {
                picked.push(slot.1);
            }
        }
        picked
    }

    /// Starts a job the pick chose, or parks it on its key when the key has no room.
    fn take(&mut self, queue: &Arc<str>, slot: Slot, now_ms: i64) -> bool {
        let key = self.jobs.get(&slot.1).and_then(|j| j.key.clone());
        let q = self
            .queues
            .get_mut(queue)
            .expect("a candidate queue is indexed");
        if let (Some(limits), Some(key)) = (q.limits, &key) {
            let k = q.keys.entry(key.clone()).or_default();
            if k.bucket.is_none()
                && let Some(rate) = limits.key_rate
            {
                k.bucket = Some(Bucket::full(rate, now_ms));
            }
            if k.room(&limits, now_ms) == 0 {
                k.parked.insert(slot);
                // Waiting for a token (not for a running job to end): come back when it is due.
                if let Some(b) = k.bucket.filter(|b| b.whole_at(now_ms) == 0) {
                    self.timed
                        .insert((b.next_token_ms(now_ms), queue.clone(), key.clone()));
                }
                return false;
            }
            if let Some(b) = k.bucket.as_mut() {
                b.take(now_ms);
            }
        }
        if let Some(b) = q.bucket.as_mut() {
            b.take(now_ms);
        }
        self.count_running(queue, key.as_ref());
        true
    }

    /// When the next token of a rate-limited queue with ready jobs comes due (`now_ms` if
    /// one is there): the writer wakes lessees then, since no other event would.
    pub fn next_queue_token_ms(&self, now_ms: i64) -> Option<i64> {
        self.queues
            .values()
            .filter(|q| !q.paused && q.parts.iter().any(|(_, s)| !s.is_empty()))
            .filter_map(|q| q.bucket)
            .map(|b| b.next_token_ms(now_ms))
            .min()
    }

    /// Marks a picked job leased.
    pub fn lease(
        &mut self,
        row: RowId,
        lease_id: Uuid,
        node_id: Arc<str>,
        expires_ms: i64,
        started_ms: i64,
    ) -> Option<&LiveJob> {
        let job = self.jobs.get_mut(&row)?;
        job.attempt += 1;
        job.phase = Phase::Leased {
            lease_id,
            node_id,
            expires_ms,
            started_ms,
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
    pub fn remove(&mut self, row: RowId, now_ms: i64) -> Option<LiveJob> {
        let job = self.jobs.remove(&row)?;
        self.unindex(row, &job, now_ms);
        Some(job)
    }

    fn unindex(&mut self, row: RowId, job: &LiveJob, now_ms: i64) {
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
                self.uncount_running(&job.queue, job.key.as_ref(), now_ms);
            }
        }
    }

    /// Puts a job back to accepted: ready now, or delayed until `run_at_ms`.
    pub fn requeue(
        &mut self,
        row: RowId,
        run_at_ms: Option<i64>,
        reset_attempts: bool,
        now_ms: i64,
    ) {
        let Some(mut job) = self.jobs.remove(&row) else {
            return;
        };
        self.unindex(row, &job, now_ms);
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

    /// In-progress jobs per queue, sorted by name; queues without any are left out.
    pub fn running_by_queue(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .queues
            .iter()
            .filter(|(_, q)| q.running > 0)
            .map(|(name, q)| (name.to_string(), q.running))
            .collect();
        out.sort();
        out
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
            key: None,
            retry_base_ms: None,
            retry_max_ms: None,
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
        assert_eq!(s.pick(&["q".into()], &[], 10, 0), vec![3, 1, 4]);
        let mut s2 = State::default();
        for (row, prio, caps) in [(1, 0, vec![]), (2, 5, vec!["gpu"]), (3, 5, vec![])] {
            let j = job(&mut s2, "q", prio, &caps);
            s2.insert(row, j);
        }
        assert_eq!(
            s2.pick(&["q".into()], &["cpu".into(), "gpu".into()], 2, 0),
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

    fn paused(p: bool) -> QueueSettings {
        QueueSettings {
            paused: p,
            ..Default::default()
        }
    }

    /// Leases whatever `pick` hands out, as the writer does.
    fn lease_all(s: &mut State, rows: &[RowId], now: i64) {
        for &row in rows {
            s.lease(row, Uuid::now_v7(), "n".into(), now + 30_000, now);
        }
    }

    fn keyed(s: &mut State, row: RowId, key: &str) {
        let mut j = job(s, "q", 0, &[]);
        j.key = Some(s.name(key));
        s.insert(row, j);
    }

    #[test]
    fn a_key_limit_parks_jobs_of_a_busy_key_and_releases_them_in_order() {
        let mut s = State::default();
        let limit = QueueSettings {
            key_concurrency: Some(1),
            ..Default::default()
        };
        s.set_settings("q", &limit, 0);
        for (row, key) in [(1, "a"), (2, "a"), (3, "b"), (4, "a"), (5, "b")] {
            keyed(&mut s, row, key);
        }
        // One of each key, in order; the others wait.
        let first = s.pick(&["q".into()], &[], 10, 0);
        assert_eq!(first, vec![1, 3]);
        lease_all(&mut s, &first, 0);
        assert!(s.pick(&["q".into()], &[], 10, 0).is_empty());
        // Row 1 ends: the next "a" (row 2, not row 4) gets its room.
        s.remove(1, 10);
        assert!(s.take_wake());
        assert_eq!(s.pick(&["q".into()], &[], 10, 10), vec![2]);
        // Lifting the limit lets the rest go.
        s.set_settings("q", &QueueSettings::default(), 20);
        assert_eq!(s.pick(&["q".into()], &[], 10, 20), vec![4, 5]);
    }

    #[test]
    fn rates_hold_jobs_back_until_their_tokens_come_due() {
        let mut s = State::default();
        let rate = |limit, burst| sheratan_proto::queues::Rate {
            limit,
            period_s: 1,
            burst: Some(burst),
        };
        s.set_settings(
            "q",
            &QueueSettings {
                rate: Some(rate(5, 2)),
                ..Default::default()
            },
            0,
        );
        for row in 1..=5 {
            let j = job(&mut s, "q", 0, &[]);
            s.insert(row, j);
        }
        assert_eq!(s.pick(&["q".into()], &[], 10, 0), vec![1, 2]);
        assert!(s.pick(&["q".into()], &[], 10, 100).is_empty());
        assert_eq!(s.next_queue_token_ms(100), Some(200));
        assert_eq!(s.pick(&["q".into()], &[], 10, 200), vec![3]);
        // Per key: one start per second per key, other keys unaffected.
        let mut k = State::default();
        k.set_settings(
            "q",
            &QueueSettings {
                key_rate: Some(rate(1, 1)),
                ..Default::default()
            },
            0,
        );
        for (row, key) in [(1, "a"), (2, "a"), (3, "b")] {
            keyed(&mut k, row, key);
        }
        assert_eq!(k.pick(&["q".into()], &[], 10, 0), vec![1, 3]);
        k.release_due(999);
        assert!(k.pick(&["q".into()], &[], 10, 999).is_empty());
        k.release_due(1000);
        assert_eq!(k.pick(&["q".into()], &[], 10, 1000), vec![2]);
    }

    #[test]
    fn a_queue_concurrency_caps_its_running_jobs() {
        let mut s = State::default();
        s.set_settings(
            "q",
            &QueueSettings {
                concurrency: Some(2),
                ..Default::default()
            },
            0,
        );
        for row in 1..=4 {
            let j = job(&mut s, "q", 0, &[]);
            s.insert(row, j);
        }
        let first = s.pick(&["q".into()], &[], 10, 0);
        assert_eq!(first, vec![1, 2]);
        lease_all(&mut s, &first, 0);
        assert!(s.pick(&["q".into()], &[], 10, 0).is_empty());
        s.remove(2, 5);
        assert_eq!(s.pick(&["q".into()], &[], 10, 5), vec![3]);
    }

    #[test]
    fn paused_queues_are_skipped_and_counts_follow_phases() {
        let mut s = State::default();
        let j = job(&mut s, "q", 0, &[]);
        s.insert(1, j);
        s.set_settings("q", &paused(true), 0);
        assert!(s.pick(&["q".into()], &[], 1, 0).is_empty());
        s.set_settings("q", &paused(false), 0);
        let picked = s.pick(&["q".into()], &[], 1, 0);
        assert_eq!(picked, vec![1]);
        let lease = Uuid::now_v7();
        s.lease(1, lease, "n".into(), 1000, 0);
        assert_eq!((s.depth, s.inflight), (0, 1));
        assert_eq!(s.expired(999), Vec::<RowId>::new());
        assert_eq!(s.expired(1000), vec![1]);
        s.requeue(1, Some(5000), false, 0);
        assert_eq!((s.depth, s.inflight), (1, 0));
        assert!(s.promote_due(4999).is_empty());
        assert_eq!(s.promote_due(5000), vec![1]);
        assert_eq!(s.get(1).unwrap().attempt, 1);
        s.remove(1, 0);
        assert_eq!((s.depth, s.inflight), (0, 0));
    }
}
