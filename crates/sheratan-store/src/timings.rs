//! The latencies a store measures where the times are at hand: a job's wait in its queue (due
//! → leased), its run (lease start → result), its whole life (accepted → finished), and the
//! writer's group commits (operations per group, begin to commit). The hub shows them as
//! Prometheus histograms (docs/API.md, "Metrics"). Recording is a couple of atomic adds; the
//! job latencies are by queue, capped at 64 queues (the rest as `_other`).

use sheratan_histogram::{ByLabel, Histogram, LATENCY_SECONDS, SIZES};
use uuid::Uuid;

#[derive(Debug)]
pub struct StoreTimings {
    /// From when a job was due (submitted, or its `run_at`, or its retry's) to its lease.
    pub queue_wait: ByLabel,
    /// From a lease's start to its result being recorded.
    pub run: ByLabel,
    /// From acceptance to the end (completed, or failed for good), by its last attempt.
    pub end_to_end: ByLabel,
    /// Operations applied in one group commit.
    pub group_ops: Histogram,
    /// A group commit, from its first operation to its commit.
    pub group_commit: Histogram,
    /// The writer paused for a checkpoint that lets the WAL start again (SQLite).
    pub wal_pause: Histogram,
}

impl Default for StoreTimings {
    fn default() -> Self {
        Self {
            queue_wait: ByLabel::default(),
            run: ByLabel::default(),
            end_to_end: ByLabel::default(),
            group_ops: Histogram::new(SIZES),
            group_commit: Histogram::new(LATENCY_SECONDS),
            wal_pause: Histogram::new(LATENCY_SECONDS),
        }
    }
}

impl StoreTimings {
    /// A job's end: its run since `lease_started_ms` and, when `finished` for good, its life
    /// since its id was made (job ids are UUIDv7: the id carries its acceptance time).
    pub fn ended(
        &self,
        queue: &str,
        job_id: Uuid,
        lease_started_ms: i64,
        now_ms: i64,
        finished: bool,
    ) {
        self.run
            .observe(queue, (now_ms - lease_started_ms) as f64 / 1000.0);
        if finished && let Some(accepted_ms) = accepted_ms(job_id) {
            self.end_to_end
                .observe(queue, (now_ms - accepted_ms) as f64 / 1000.0);
        }
    }

    /// A job the reaper failed for good (its last attempt's lease ran out): its life ends here,
    /// with no run to count (no result came).
    pub fn gave_up(&self, queue: &str, job_id: Uuid, now_ms: i64) {
        if let Some(accepted_ms) = accepted_ms(job_id) {
            self.end_to_end
                .observe(queue, (now_ms - accepted_ms) as f64 / 1000.0);
        }
    }

    /// A job leased at `now_ms` that was due at `due_ms`.
    pub fn leased(&self, queue: &str, due_ms: i64, now_ms: i64) {
        self.queue_wait
            .observe(queue, (now_ms - due_ms) as f64 / 1000.0);
    }
}

/// When a job was accepted, from its UUIDv7 id (Unix ms); `None` for another kind of id.
pub fn accepted_ms(job_id: Uuid) -> Option<i64> {
    let (secs, nanos) = job_id.get_timestamp()?.to_unix();
    Some(secs as i64 * 1000 + i64::from(nanos / 1_000_000))
}
