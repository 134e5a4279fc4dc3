//! The writer thread: the only connection that writes. It takes operations from a channel,
//! applies every operation waiting at that moment inside one transaction, commits once (group
//! commit), and only then answers each caller. A 2xx built on an answer is therefore durable.
//!
//! The in-memory index ([`State`]) is changed as operations are applied; if the transaction
//! fails, every caller in the group gets the error and the index is rebuilt from the database,
//! so memory and disk never disagree.

use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use sheratan_proto::data::{JobError, JobStatus, Outcome};
use sheratan_proto::queues::{QueueSettings, QueueSettingsPatch};
use sheratan_store::jobs::{Ending, Reaccept};
use sheratan_store::jobs::{MAX_TIMEOUT_S, job_retry_delay, reaped_message, run_deadline_ms};
use sheratan_store::{
    Clock, Counts, ExtendOutcome, FinishOutcome, HolderRule, JobRecord, JobSpec, LeaseGrant,
    LeaseOrder, LeasedJob, QueueState, Reaped, ResultReport, StoreError, StoreLimits,
    SubmitOutcome, TickReport,
};

use uuid::Uuid;

use crate::db::{self, from_ms, ms};
use crate::state::{LiveJob, Phase, RowId, State};

/// Operations waiting longer than this many are left for the next group.
const MAX_GROUP: usize = 2048;

use sheratan_store::group::{Held, hold, unanswered};
pub use sheratan_store::group::{Op, Reply};

/// What the writer shares with the async side.
pub struct Shared {
    pub counts: Mutex<Counts>,
    pub timings: sheratan_store::timings::StoreTimings,
    pub ready: tokio::sync::watch::Sender<u64>,
    pub finished: tokio::sync::watch::Sender<u64>,
    /// Lets the checkpointer finish a checkpoint with nothing appended meanwhile (see
    /// `start_checkpointer`).
    pub wal_gate: WalGate,
}

/// Between the writer's transactions and the checkpointer: the checkpointer asks for a pause,
/// waits for the transaction under way, and the writer waits before its next one until the
/// checkpoint is done. (A plain mutex was not enough: the writer, with its next group always
/// ready, took it back before the checkpointer woke.)
#[derive(Default)]
pub struct WalGate {
    state: Mutex<GateState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct GateState {
    writing: bool,
    paused: bool,
}

impl WalGate {
    /// The writer's turn for one transaction (after a pause under way).
    pub fn write(&self) -> Writing<'_> {
        let mut state = self.lock();
        while state.paused {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.writing = true;
        Writing(self)
    }

    /// Pauses the writer (after its transaction under way) until the guard is dropped.
    pub fn pause(&self) -> Paused<'_> {
        let mut state = self.lock();
        state.paused = true;
        while state.writing {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        Paused(self)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Writing<'a>(&'a WalGate);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.writing = false;
        if state.paused {
            self.0.changed.notify_all();
        }
    }
}

pub struct Paused<'a>(&'a WalGate);

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        self.0.lock().paused = false;
        self.0.changed.notify_all();
    }
}

/// Side effects of a group, announced after the commit.
#[derive(Default)]
struct Effects {
    ready: bool,
    finished: bool,
}

pub struct Writer {
    conn: Connection,
    state: State,
    clock: Arc<dyn Clock>,
    limits: StoreLimits,
    shared: Arc<Shared>,
}

impl Writer {
    pub fn open(
        conn: Connection,
        clock: Arc<dyn Clock>,
        limits: StoreLimits,
        shared: Arc<Shared>,
    ) -> rusqlite::Result<Writer> {
        let mut writer = Writer {
            conn,
            state: State::default(),
            clock,
            limits,
            shared,
        };
        writer.reload()?;
        Ok(writer)
    }

    /// Rebuilds the in-memory index from the database.
    fn reload(&mut self) -> rusqlite::Result<()> {
        let mut state = State::default();
        let now = ms(self.clock.now());
        for (name, settings) in db::queue_settings(&self.conn)? {
            state.set_settings(&name, &settings, now);
        }
        for row in db::live_jobs(&self.conn)? {
            let queue = state.name(&row.queue);
            let kind = state.name(&row.kind);
            let mut caps = row.caps;
            caps.sort();
            let caps = state.capset(&caps);
            let key = row.key.as_deref().map(|k| state.name(k));
            let phase = match (row.status, row.lease) {
                (JobStatus::InProgress, Some((lease_id, node, expires_ms, started_ms))) => {
                    Phase::Leased {
                        lease_id,
                        node_id: state.name(&node),
                        expires_ms,
                        started_ms,
                    }
                }
                // An in-progress row without a lease cannot be resumed: run it again.
                (JobStatus::InProgress, None) => Phase::Ready,
                _ if row.run_at > now => Phase::Delayed {
                    run_at_ms: row.run_at,
                },
                _ => Phase::Ready,
            };
            state.insert(
                row.row,
                LiveJob {
                    job_id: row.job_id,
                    queue,
                    kind,
                    priority: row.priority,
                    caps,
                    attempt: row.attempt,
                    max_attempts: row.max_attempts,
                    timeout_s: row.timeout_s,
                    follow: row.follow,
                    phase,
                    key,
                    retry_base_ms: row.retry_base_ms,
                    retry_max_ms: row.retry_max_ms,
                },
            );
        }
        state.results_pending = db::count_unacked(&self.conn)?;
        self.state = state;
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        let counts = Counts {
            queue_depth: self.state.depth_by_queue(),
            inflight: self.state.inflight,
            results_pending: self.state.results_pending,
            queue_running: self.state.running_by_queue(),
        };
        *self.shared.counts.lock().expect("counts lock") = counts;
    }

    /// Serves operations until every sender is gone.
    pub fn run(mut self, ops: Receiver<Op>) {
        // Group commit: whatever waits when the writer comes round is one transaction. Waiting
        // longer for bigger groups was measured and lost: per-operation work dominates, not
        // per-commit work (WAL writes, locks).
        while let Ok(first) = ops.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match ops.try_recv() {
                    Ok(op) => group.push(op),
                    Err(_) => break,
                }
            }
            self.apply_group(group);
        }
    }

    fn apply_group(&mut self, group: Vec<Op>) {
        let mut held: Vec<Box<dyn Held>> = Vec::with_capacity(group.len());
        let mut fx = Effects::default();
        let (begun, ops) = (std::time::Instant::now(), group.len());
        // Held through a rollback too, until the group is answered.
        let shared = self.shared.clone();
        let _writing = shared.wal_gate.write();
        let outcome = self.transaction(group, &mut held, &mut fx);
        let timings = &self.shared.timings;
        timings.group_ops.observe(ops as f64);
        timings.group_commit.observe_duration(begun.elapsed());
        match outcome {
            Ok(()) => {
                self.publish();
                if fx.ready {
                    self.shared.ready.send_modify(|g| *g += 1);
                }
                if fx.finished {
                    self.shared.finished.send_modify(|g| *g += 1);
                }
                for h in held {
                    h.send(Ok(()));
                }
            }
            Err(err) => {
                let err = classify(err);
                tracing::error!(error = %err, "a group of store operations failed; none of it is committed");
                let _ = self.conn.execute_batch("ROLLBACK");
                if let Err(reload) = self.reload() {
                    tracing::error!(error = %reload, "cannot rebuild the job index from the database");
                }
                for h in held {
                    h.send(Err(&err));
                }
            }
        }
    }

    /// Applies a group inside one transaction. Operations after a failing one are not applied
    /// and get the failure as their answer.
    fn transaction(
        &mut self,
        group: Vec<Op>,
        held: &mut Vec<Box<dyn Held>>,
        fx: &mut Effects,
    ) -> rusqlite::Result<()> {
        let mut ops = group.into_iter();
        let begun = self.conn.execute_batch("BEGIN IMMEDIATE");
        let mut failure = begun.err();
        let now = ms(self.clock.now());
        for op in ops.by_ref() {
            if failure.is_some() {
                held.push(unanswered(op));
                continue;
            }
            if let Err(err) = self.apply(op, now, held, fx) {
                failure = Some(err);
            }
        }
        if let Some(err) = failure {
            return Err(err);
        }
        self.conn.execute_batch("COMMIT")
    }

    fn apply(
        &mut self,
        op: Op,
        now: i64,
        held: &mut Vec<Box<dyn Held>>,
        fx: &mut Effects,
    ) -> rusqlite::Result<()> {
        // Holds the answer until the commit; a failing operation fails the group.
        macro_rules! answer {
            ($reply:expr, $work:expr) => {
                hold(held, $reply, $work)
            };
        }
        let applied = match op {
            Op::Submit(specs, reply) => answer!(reply, self.submit(specs, now, fx)),
            Op::Lease(order, reply) => answer!(reply, self.lease(order, now)),
            Op::Extend(lease, secs, holder, reply) => {
                answer!(reply, self.extend(lease, secs, holder, now))
            }
            Op::Finish(report, reply) => answer!(reply, self.finish(report, now, fx)),
            Op::Cancel(job_id, reply) => answer!(reply, self.cancel(job_id, now, fx)),
            Op::Requeue(job_id, reply) => answer!(reply, self.requeue(job_id, now, fx)),
            Op::Tick(reply) => answer!(reply, self.tick(now, fx)),
            Op::Ack(ids, reply) => answer!(reply, self.ack(ids)),
            Op::Settings(queue, patch, reply) => {
                answer!(reply, self.update_settings(queue, patch, now))
            }
            Op::Purge(queue, reply) => answer!(reply, self.purge(queue, now)),
            Op::Progress(updates, reply) => answer!(reply, self.progress(updates)),
            Op::DeleteFinished(ids, reply) => answer!(reply, self.delete_finished(ids)),
            Op::ExpireKeys(before, reply) => {
                answer!(reply, db::expire_idempotency(&self.conn, ms(before)))
            }
            Op::Expire(rules, limit, reply) => answer!(reply, self.expire(rules, limit)),
        };
        // Room appeared in a limited queue (a job ended, a setting changed): lessees waiting
        // for it look again.
        if self.state.take_wake() {
            fx.ready = true;
        }
        applied
    }

    fn submit(
        &mut self,
        specs: Vec<JobSpec>,
        now: i64,
        fx: &mut Effects,
    ) -> rusqlite::Result<Vec<SubmitOutcome>> {
        let mut outcomes = Vec::with_capacity(specs.len());
        for spec in specs {
            if let Some(key) = &spec.idempotency_key
                && let Some((job_id, hash)) = db::idempotency_lookup(&self.conn, key)?
            {
                match db::brief(&self.conn, job_id)? {
                    Some(b) if hash == spec.request_hash => {
                        outcomes.push(SubmitOutcome::Existing {
                            job_id,
                            status: b.status,
                            result: (b.status == JobStatus::Completed)
                                .then_some(b.result)
                                .flatten(),
                        });
                        continue;
                    }
                    Some(_) => {
                        outcomes.push(SubmitOutcome::Collision { job_id });
                        continue;
                    }
                    // The key outlived its job (an edited database): forget it.
                    None => db::idempotency_delete(&self.conn, key)?,
                }
            }
            if self.state.depth >= self.limits.max_queue_depth {
                outcomes.push(SubmitOutcome::QueueFull {
                    depth: self.state.depth,
                });
                continue;
            }
            let row = db::insert_job(&self.conn, &spec, now)?;
            if let Some(key) = &spec.idempotency_key {
                db::idempotency_insert(&self.conn, key, spec.job_id, &spec.request_hash, now)?;
            }
            let run_at = ms(spec.run_at);
            let phase = if run_at > now {
                Phase::Delayed { run_at_ms: run_at }
            } else {
                fx.ready = true;
                Phase::Ready
            };
            let job = LiveJob {
                job_id: spec.job_id,
                queue: self.state.name(&spec.queue),
                kind: self.state.name(&spec.kind),
                priority: spec.priority,
                caps: self.state.capset(&spec.required_capabilities),
                attempt: 0,
                max_attempts: spec.max_attempts,
                timeout_s: spec.timeout_s,
                follow: spec.follow,
                phase,
                key: spec.concurrency_key.as_deref().map(|k| self.state.name(k)),
                retry_base_ms: spec.retry_base_ms,
                retry_max_ms: spec.retry_max_ms,
            };
            self.state.insert(row, job);
            outcomes.push(SubmitOutcome::Created {
                job_id: spec.job_id,
            });
        }
        Ok(outcomes)
    }

    fn lease(&mut self, order: LeaseOrder, now: i64) -> rusqlite::Result<LeaseGrant> {
        let limit = self.limits.max_inflight;
        if self.state.inflight >= limit {
            return Ok(LeaseGrant {
                jobs: Vec::new(),
                saturated: true,
            });
        }
        let budget = u64::from(order.max_jobs).min(limit - self.state.inflight) as usize;
        let rows = self
            .state
            .pick(&order.queues, &order.capabilities, budget, now);
        let node = self.state.name(&order.node_id);
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            let lease_id = Uuid::now_v7();
            let timeout_s = self.state.get(row).map_or(30, |j| j.timeout_s);
            let expires = now + i64::from(timeout_s) * 1000;
            let Some(job) = self.state.lease(row, lease_id, node.clone(), expires, now) else {
                continue;
            };
            let (job_id, queue, kind, attempt) = (
                job.job_id,
                job.queue.to_string(),
                job.kind.to_string(),
                job.attempt,
            );
            let (payload, due, traceparent) = db::set_leased(
                &self.conn,
                row,
                attempt,
                lease_id,
                &order.node_id,
                expires,
                now,
            )?;
            self.shared.timings.leased(&queue, due, now);
            jobs.push(LeasedJob {
                job_id,
                lease_id,
                queue,
                kind,
                payload,
                attempt,
                lease_expires_at: from_ms(expires),
                timeout_s,
                traceparent,
            });
        }
        Ok(LeaseGrant {
            jobs,
            saturated: false,
        })
    }

    fn extend(
        &mut self,
        lease_id: Uuid,
        secs: Option<u32>,
        holder: Option<Box<HolderRule>>,
        now: i64,
    ) -> rusqlite::Result<ExtendOutcome> {
        let Some(row) = self.state.row_of_lease(&lease_id) else {
            return Ok(ExtendOutcome::NotHeld);
        };
        let Some(job) = self.state.get(row) else {
            return Ok(ExtendOutcome::NotHeld);
        };
        if let Some(holder) = job.refused_holder(holder.as_deref()) {
            return Ok(ExtendOutcome::WrongHolder { holder });
        }
        let job_id = job.job_id;
        let secs = secs.unwrap_or(job.timeout_s).clamp(1, MAX_TIMEOUT_S);
        // Extensions prove the node alive; they never run the job past its timeout_s.
        let deadline = match job.phase {
            Phase::Leased { started_ms, .. } => run_deadline_ms(started_ms, job.timeout_s),
            _ => i64::MAX,
        };
        let expires = (now + i64::from(secs) * 1000).min(deadline);
        self.state.extend(row, expires);
        db::set_lease_expiry(&self.conn, row, expires, now)?;
        Ok(ExtendOutcome::Extended {
            job_id,
            expires_at: from_ms(expires),
        })
    }

    fn finish(
        &mut self,
        report: ResultReport,
        now: i64,
        fx: &mut Effects,
    ) -> rusqlite::Result<FinishOutcome> {
        let live = self
            .state
            .row_of_lease(&report.lease_id)
            .and_then(|row| self.state.get(row).map(|job| (row, job.clone())))
            .filter(|(_, job)| job.job_id == report.job_id);
        let Some((row, job)) = live else {
            // Not a live lease of this job: a repeat of a recorded result, or too late.
            return Ok(match db::brief(&self.conn, report.job_id)? {
                None => FinishOutcome::UnknownJob,
                Some(b) if b.result_lease_id == Some(report.lease_id) => {
                    FinishOutcome::Duplicate { status: b.status }
                }
                Some(b) => FinishOutcome::LeaseNotHeld { status: b.status },
            });
        };
        if let Some(holder) = job.refused_holder(report.holder.as_deref()) {
            return Ok(FinishOutcome::WrongHolder { holder });
        }
        let started = match job.phase {
            Phase::Leased { started_ms, .. } => started_ms,
            _ => now,
        };
        let status = match report.outcome {
            Outcome::Success => {
                self.end_live(
                    row,
                    Ending {
                        status: JobStatus::Completed,
                        result: Some(&report.result),
                        error: None,
                        acked: false,
                        result_lease: Some(report.lease_id),
                    },
                    now,
                )?;
                fx.finished = true;
                JobStatus::Completed
            }
            Outcome::Failure => {
                let error = report.error.clone().unwrap_or(JobError {
                    message: "the executor reported a failure without a message".into(),
                    retryable: false,
                });
                if error.retryable && job.attempt < job.max_attempts {
                    let jitter = rand::random::<f64>() * 2.0 - 1.0;
                    let delay = job_retry_delay(
                        self.limits.retry_base,
                        job.retry_base_ms,
                        job.retry_max_ms,
                        job.attempt,
                        jitter,
                    );
                    let run_at = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
                    db::reaccept(
                        &self.conn,
                        row,
                        &Reaccept {
                            run_at,
                            error: Some(&error),
                            reset_attempts: false,
                            result_lease: Some(report.lease_id),
                        },
                        now,
                    )?;
                    self.state.requeue(row, Some(run_at), false, now);
                    JobStatus::Accepted
                } else {
                    let result = (report.result != "null").then_some(report.result.as_str());
                    self.end_live(
                        row,
                        Ending {
                            status: JobStatus::Failed,
                            result,
                            error: Some(&error),
                            acked: false,
                            result_lease: Some(report.lease_id),
                        },
                        now,
                    )?;
                    fx.finished = true;
                    JobStatus::Failed
                }
            }
        };
        let finished = status != JobStatus::Accepted;
        (self.shared.timings).ended(&job.queue, job.job_id, started, now, finished);
        Ok(FinishOutcome::Recorded { status })
    }

    fn cancel(
        &mut self,
        job_id: Uuid,
        now: i64,
        fx: &mut Effects,
    ) -> rusqlite::Result<Option<JobRecord>> {
        let Some(b) = db::brief(&self.conn, job_id)? else {
            return Ok(None);
        };
        if !b.status.is_terminal() {
            self.end_live(
                b.row,
                Ending {
                    status: JobStatus::Cancelled,
                    result: None,
                    error: None,
                    acked: false,
                    result_lease: None,
                },
                now,
            )?;
            fx.finished = true;
        }
        db::load_by_id(&self.conn, job_id)
    }

    fn requeue(
        &mut self,
        job_id: Uuid,
        now: i64,
        fx: &mut Effects,
    ) -> rusqlite::Result<Option<JobRecord>> {
        let Some(b) = db::brief(&self.conn, job_id)? else {
            return Ok(None);
        };
        if b.status.is_terminal() && !b.acked {
            self.state.results_pending = self.state.results_pending.saturating_sub(1);
        }
        db::reaccept(
            &self.conn,
            b.row,
            &Reaccept {
                run_at: now,
                error: None,
                reset_attempts: true,
                result_lease: None,
            },
            now,
        )?;
        if self.state.get(b.row).is_some() {
            self.state.requeue(b.row, None, true, now);
        } else if let Some(record) = db::load_by_id(&self.conn, job_id)? {
            let mut caps = record.required_capabilities.clone();
            caps.sort();
            let extras = db::extras(&self.conn, b.row)?;
            let job = LiveJob {
                job_id,
                queue: self.state.name(&record.queue),
                kind: self.state.name(&record.kind),
                priority: record.priority,
                caps: self.state.capset(&caps),
                attempt: 0,
                max_attempts: record.max_attempts,
                timeout_s: record.timeout_s,
                follow: extras.follow,
                phase: Phase::Ready,
                key: record
                    .concurrency_key
                    .as_deref()
                    .map(|k| self.state.name(k)),
                retry_base_ms: extras.retry_base_ms,
                retry_max_ms: extras.retry_max_ms,
            };
            self.state.insert(b.row, job);
        }
        fx.ready = true;
        db::load_by_id(&self.conn, job_id)
    }

    fn tick(&mut self, now: i64, fx: &mut Effects) -> rusqlite::Result<TickReport> {
        let promoted = self.state.promote_due(now).len();
        if promoted > 0 {
            fx.ready = true;
        }
        // Rate limits: keys whose token came due, queues waiting for one.
        self.state.release_due(now);
        if self
            .state
            .next_queue_token_ms(now)
            .is_some_and(|due| due <= now + TICK_MS)
        {
            fx.ready = true;
        }
        let mut reaped = Vec::new();
        for row in self.state.expired(now) {
            let Some(job) = self.state.get(row).cloned() else {
                continue;
            };
            let (node_id, started_ms, expires_ms) = match &job.phase {
                Phase::Leased {
                    node_id,
                    started_ms,
                    expires_ms,
                    ..
                } => (node_id.to_string(), *started_ms, *expires_ms),
                _ => (String::new(), i64::MAX, 0),
            };
            let status = if job.attempt < job.max_attempts {
                let error = JobError {
                    message: reaped_message(&node_id, started_ms, job.timeout_s, expires_ms, None),
                    retryable: true,
                };
                db::reaccept(
                    &self.conn,
                    row,
                    &Reaccept {
                        run_at: now,
                        error: Some(&error),
                        reset_attempts: false,
                        result_lease: None,
                    },
                    now,
                )?;
                self.state.requeue(row, None, false, now);
                fx.ready = true;
                JobStatus::Accepted
            } else {
                let error = JobError {
                    message: reaped_message(
                        &node_id,
                        started_ms,
                        job.timeout_s,
                        expires_ms,
                        Some((job.attempt, job.max_attempts)),
                    ),
                    retryable: false,
                };
                self.end_live(
                    row,
                    Ending {
                        status: JobStatus::Failed,
                        result: None,
                        error: Some(&error),
                        acked: false,
                        result_lease: None,
                    },
                    now,
                )?;
                fx.finished = true;
                self.shared.timings.gave_up(&job.queue, job.job_id, now);
                JobStatus::Failed
            };
            reaped.push(Reaped {
                job_id: job.job_id,
                queue: job.queue.to_string(),
                node_id,
                attempt: job.attempt,
                status,
            });
        }
        Ok(TickReport { reaped, promoted })
    }

    fn ack(&mut self, ids: Vec<Uuid>) -> rusqlite::Result<u64> {
        let mut acked = 0;
        for id in ids {
            if db::ack(&self.conn, id)? {
                acked += 1;
            }
        }
        self.state.results_pending = self.state.results_pending.saturating_sub(acked);
        Ok(acked)
    }

    fn delete_finished(&mut self, ids: Vec<Uuid>) -> rusqlite::Result<u64> {
        let mut deleted = 0;
        for id in ids {
            if let Some(acked) = db::delete_finished(&self.conn, id)? {
                deleted += 1;
                if !acked {
                    self.state.results_pending = self.state.results_pending.saturating_sub(1);
                }
            }
        }
        Ok(deleted)
    }

    /// Retention: one small batch of finished jobs past their cutoffs, then the pages they
    /// freed given back to the file system (a bounded number per batch).
    fn expire(
        &mut self,
        rules: sheratan_store::retention::RetentionRules,
        limit: u32,
    ) -> rusqlite::Result<sheratan_store::retention::PurgeReport> {
        let mut report = sheratan_store::retention::PurgeReport::default();
        for pass in rules.passes() {
            let room = u64::from(limit).saturating_sub(report.deleted);
            if room == 0 {
                break;
            }
            for (id, acked) in db::expire(&self.conn, &pass, room)? {
                report.deleted += 1;
                report.newest = report.newest.max(Some(id));
                if !acked {
                    self.state.results_pending = self.state.results_pending.saturating_sub(1);
                }
            }
        }
        if let Some(newest) = report.newest {
            db::note_purged(&self.conn, newest)?;
        }
        // Give freed pages back a bounded number at a time, about what a batch frees (each
        // moved page is written to the WAL: more would make the batch long); deletes of other
        // kinds free pages too, and a purge with nothing due still returns what is left.
        let free: i64 = self
            .conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        if free > 0 {
            // Each step of this pragma frees one page: it must be stepped to the end.
            let mut vacuum = self.conn.prepare_cached("PRAGMA incremental_vacuum(32)")?;
            let mut steps = vacuum.raw_query();
            while steps.next()?.is_some() {}
            report.free_pages = (free - 32).max(0) as u64;
        }
        Ok(report)
    }

    fn progress(&mut self, updates: Vec<(Uuid, String)>) -> rusqlite::Result<u64> {
        let mut recorded = 0;
        for (lease_id, json) in updates {
            if let Some(row) = self.state.row_of_lease(&lease_id) {
                db::set_progress(&self.conn, row, &json)?;
                recorded += 1;
            }
        }
        Ok(recorded)
    }

    fn update_settings(
        &mut self,
        queue: String,
        patch: Box<QueueSettingsPatch>,
        now: i64,
    ) -> rusqlite::Result<Result<QueueSettings, String>> {
        let old = db::queue_settings(&self.conn)?
            .into_iter()
            .find(|(name, _)| *name == queue)
            .map(|(_, s)| s)
            .unwrap_or_default();
        let new = old.patched(&patch);
        if let Err(e) = new.validate() {
            return Ok(Err(e));
        }
        db::put_queue_settings(&self.conn, &queue, &new)?;
        self.state.set_settings(&queue, &new, now);
        Ok(Ok(new))
    }

    /// Ends a live job in the table and the index. Its result is pending unless `end` says
    /// it is acknowledged or its submitter does not follow results (`follow_result: false`).
    fn end_live(&mut self, row: RowId, mut end: Ending<'_>, now: i64) -> rusqlite::Result<()> {
        end.acked |= self.state.get(row).is_some_and(|j| !j.follow);
        db::finish(&self.conn, row, &end, now)?;
        self.state.remove(row, now);
        if !end.acked {
            self.state.results_pending += 1;
        }
        Ok(())
    }

    fn purge(&mut self, queue: String, now: i64) -> rusqlite::Result<(u64, QueueState)> {
        let error = JobError {
            message: format!("purged from queue {queue} by an operator"),
            retryable: false,
        };
        let rows: Vec<RowId> = self.state.accepted_of(&queue);
        for &row in &rows {
            // Purged jobs are acknowledged at once: nobody waits for their results.
            self.end_live(
                row,
                Ending {
                    status: JobStatus::Cancelled,
                    result: None,
                    error: Some(&error),
                    acked: true,
                    result_lease: None,
                },
                now,
            )?;
        }
        let paused = self.state.is_paused(&queue);
        Ok((rows.len() as u64, QueueState { queue, paused }))
    }
}

/// How often the hub ticks the store (its reaper runs every 250 ms): a queue whose next rate
/// token comes due before the next tick wakes its lessees now.
const TICK_MS: i64 = 250;

/// Storage conditions an operator can fix (disk full, read-only, permissions) are
/// `Unavailable`; anything else is `Internal`.
pub fn classify(err: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    match &err {
        rusqlite::Error::SqliteFailure(e, _)
            if matches!(
                e.code,
                DiskFull
                    | ReadOnly
                    | CannotOpen
                    | SystemIoFailure
                    | DatabaseBusy
                    | DatabaseLocked
                    | PermissionDenied
                    | OutOfMemory
                    | FileLockingProtocolFailed
            ) =>
        {
            StoreError::Unavailable(err.to_string())
        }
        _ => StoreError::Internal(err.to_string()),
    }
}
