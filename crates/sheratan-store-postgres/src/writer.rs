//! Writers: a few tasks, each with its own connection, take every operation waiting at that
//! moment from one channel and apply them in one transaction (group commit), answering only
//! after the commit. Several writers let one hub overlap transactions; several hubs do the
//! same on one database. Leases use `FOR UPDATE SKIP LOCKED`, so concurrent transactions (of
//! this hub or another) never hand out one job twice and never wait on each other's picks.
//!
//! Counts (queue depth, inflight, results pending) are kept in memory from each group's
//! effects and replaced every second by exact counts from the database, which brings in what
//! other hubs did. The limits are enforced from the cached counts while far from them, and
//! under a database-wide advisory lock with exact counts near them, so hubs together never
//! pass a limit.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use sheratan_proto::data::{JobError, JobStatus, Outcome};
use sheratan_store::jobs::{Ending, Reaccept};
use sheratan_store::jobs::{MAX_TIMEOUT_S, RUN_GRACE_MS, job_retry_delay, reaped_message};
use sheratan_store::{
    Clock, Counts, ExtendOutcome, FinishOutcome, HolderRule, JobRecord, JobSpec, LeaseGrant,
    LeaseOrder, LeasedJob, QueueState, Reaped, ResultReport, StoreError, StoreLimits,
    SubmitOutcome, TickReport,
};
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;

use uuid::Uuid;

use crate::conn::{Conn, Db, Slot, classify};
use crate::rows::{RECORD_COLUMNS, from_ms, ms, record, status_code, status_of};

/// Operations waiting longer than this many are left for the next group.
const MAX_GROUP: usize = 1024;
/// Advisory locks taken near a limit.
const DEPTH_LOCK: i64 = 0x5348_0001;
const INFLIGHT_LOCK: i64 = 0x5348_0002;

use sheratan_store::group::{Answer, Held, hold, unanswered};
pub use sheratan_store::group::{Op, Reply};

/// Counts as the writers keep them.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub depth: HashMap<String, i64>,
    pub inflight: i64,
    pub pending: i64,
    /// In-progress jobs per queue, from the exact count only (groups do not track it).
    pub running: HashMap<String, i64>,
}

impl Tally {
    pub fn counts(&self) -> Counts {
        let mut queue_depth: Vec<(String, u64)> = self
            .depth
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(q, n)| (q.clone(), *n as u64))
            .collect();
        queue_depth.sort();
        let mut queue_running: Vec<(String, u64)> = self
            .running
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(q, n)| (q.clone(), *n as u64))
            .collect();
        queue_running.sort();
        Counts {
            queue_depth,
            inflight: self.inflight.max(0) as u64,
            results_pending: self.pending.max(0) as u64,
            queue_running,
        }
    }

    fn total_depth(&self) -> i64 {
        self.depth.values().sum()
    }

    pub fn apply(&mut self, d: &Tally) {
        for (q, n) in &d.depth {
            *self.depth.entry(q.clone()).or_default() += n;
        }
        self.inflight += d.inflight;
        self.pending += d.pending;
    }
}

/// What writers share with the store.
pub struct Shared {
    pub tally: Mutex<Tally>,
    /// This hub's changes since the running count refresh took its snapshot.
    pub since_refresh: Mutex<Tally>,
    /// Held (shared) by writers from their commit until their changes are in `tally`; held
    /// (exclusive) by the refresher while it takes its snapshot. So every group is either in
    /// the snapshot or in `since_refresh`, never both, never neither.
    pub commit_gate: tokio::sync::RwLock<()>,
    pub ready: tokio::sync::watch::Sender<u64>,
    pub finished: tokio::sync::watch::Sender<u64>,
    pub clock: Arc<dyn Clock>,
    pub limits: StoreLimits,
    /// The last `tick`'s time: delayed jobs due since then are reported as promoted.
    pub last_tick: Mutex<Option<i64>>,
    pub notifier: Arc<crate::notify::Notifier>,
    /// Queues with lease-time limits, as of this hub's last tick (or its own change).
    pub limited: std::sync::RwLock<crate::limits::LimitedQueues>,
    /// A limited queue held jobs back: the next tick wakes lessees to look again.
    pub limited_waiting: std::sync::atomic::AtomicBool,
    pub timings: sheratan_store::timings::StoreTimings,
}

impl Shared {
    fn limited(&self) -> crate::limits::LimitedQueues {
        self.limited.read().expect("limited lock").clone()
    }

    /// Whether an order names a limited queue (it cannot take the fast path).
    fn touches_limited(&self, order: &LeaseOrder) -> bool {
        let limited = self.limited.read().expect("limited lock");
        !limited.is_empty() && order.queues.iter().any(|q| limited.contains_key(q))
    }
}

/// Side effects of a group, announced after the commit.
#[derive(Default)]
struct Effects {
    ready: bool,
    finished: bool,
    delta: Tally,
}

/// Serves operations from `ops` until the channel closes.
pub async fn run(
    slot: Slot,
    ops: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Op>>>,
    shared: Arc<Shared>,
) {
    loop {
        let group = {
            let mut rx = ops.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(op) => group.push(op),
                    Err(_) => break,
                }
            }
            group
        };
        apply_group(&slot, &shared, group).await;
    }
}

async fn apply_group(slot: &Slot, shared: &Shared, group: Vec<Op>) {
    // A failure inside the transaction rolls it back and every caller gets it (503: nothing
    // of the group is committed, so repeating is safe). A broken connection is replaced at
    // the next group.
    let conn = match slot.lock().await {
        Ok(c) => c,
        Err(err) => {
            fail_all(group, &err);
            return;
        }
    };
    let mut held: Vec<Box<dyn Held>> = Vec::with_capacity(group.len());
    let mut fx = Effects::default();
    let (begun, ops) = (std::time::Instant::now(), group.len());
    let outcome = transaction(&conn, shared, group, &mut held, &mut fx).await;
    shared.timings.group_ops.observe(ops as f64);
    shared
        .timings
        .group_commit
        .observe_duration(begun.elapsed());
    match outcome {
        Ok(gate) => {
            shared.tally.lock().expect("tally lock").apply(&fx.delta);
            shared
                .since_refresh
                .lock()
                .expect("tally lock")
                .apply(&fx.delta);
            drop(gate);
            if fx.ready {
                shared.ready.send_modify(|g| *g += 1);
            }
            if fx.finished {
                shared.finished.send_modify(|g| *g += 1);
            }
            shared.notifier.poke(fx.ready, fx.finished);
            for h in held {
                h.send(Ok(()));
            }
        }
        Err(err) => {
            let err = classify(err);
            tracing::error!(error = %err, "a group of store operations failed; none of it is committed");
            for h in held {
                h.send(Err(&err));
            }
        }
    }
}

fn fail_all(group: Vec<Op>, err: &StoreError) {
    for op in group {
        unanswered(op).send(Err(err));
    }
}

/// Runs a group in one transaction; every operation's answer is in `held` afterwards.
async fn transaction<'a>(
    conn: &Conn,
    shared: &'a Shared,
    group: Vec<Op>,
    held: &mut Vec<Box<dyn Held>>,
    fx: &mut Effects,
) -> Result<tokio::sync::RwLockReadGuard<'a, ()>, tokio_postgres::Error> {
    let tx = Db::new(conn);
    let now = ms(shared.clock.now());
    // Every operation of a group was pending at once, so any order is a valid one: plain
    // submits, successful results and leases go first, pipelined with the BEGIN (one INSERT
    // for all new jobs, one UPDATE for all results, one statement per lease), then the rest
    // one by one.
    let (batch, others) = Batch::split(group, shared, fx);
    let mut failure = batch.apply(&tx, shared, now, held, fx).await.err();
    let mut ops = others.into_iter();
    if failure.is_none() {
        for op in ops.by_ref() {
            if let Err(err) = apply(&tx, shared, op, now, held, fx).await {
                failure = Some(err);
                break;
            }
        }
    }
    if let Some(err) = failure {
        tx.rollback().await;
        for op in ops {
            held.push(unanswered(op));
        }
        return Err(err);
    }
    // Other hubs are told by the notifier after the commit, not by a NOTIFY in here: a
    // transaction that notifies takes a database-wide lock at commit, which would serialize
    // every writer's commits.
    let gate = shared.commit_gate.read().await;
    tx.commit().await.map(|()| gate)
}

async fn apply(
    tx: &Db<'_>,
    shared: &Shared,
    op: Op,
    now: i64,
    held: &mut Vec<Box<dyn Held>>,
    fx: &mut Effects,
) -> Result<(), tokio_postgres::Error> {
    macro_rules! answer {
        ($reply:expr, $work:expr) => {
            hold(held, $reply, $work)
        };
    }
    match op {
        Op::Submit(specs, reply) => answer!(reply, submit(tx, shared, specs, now, fx).await),
        Op::Lease(order, reply) => answer!(reply, lease(tx, shared, order, now, fx).await),
        Op::Extend(lease_id, secs, holder, reply) => {
            answer!(reply, extend(tx, lease_id, secs, holder, now).await)
        }
        Op::Finish(report, reply) => answer!(reply, finish(tx, shared, report, now, fx).await),
        Op::Cancel(job_id, reply) => answer!(reply, cancel(tx, job_id, now, fx).await),
        Op::Requeue(job_id, reply) => answer!(reply, requeue(tx, job_id, now, fx).await),
        Op::Tick(reply) => answer!(reply, tick(tx, shared, now, fx).await),
        Op::Ack(ids, reply) => answer!(reply, ack(tx, ids, fx).await),
        Op::Settings(queue, patch, reply) => {
            let updated = crate::limits::update(tx, &queue, &patch).await;
            if let Ok(Ok(settings)) = &updated {
                let mut all: HashMap<String, _> = (*shared.limited()).clone();
                all.insert(queue, settings.clone());
                *shared.limited.write().expect("limited lock") =
                    crate::limits::limited_of(all.into_iter().collect());
                fx.ready = true;
            }
            answer!(reply, updated)
        }
        Op::Purge(queue, reply) => answer!(reply, purge(tx, queue, now, fx).await),
        Op::DeleteFinished(ids, reply) => {
            let deleted = tx
                .query(
                    "DELETE FROM jobs WHERE job_id = ANY($1) AND status >= 2 RETURNING acked",
                    &[&ids],
                )
                .await;
            if let Ok(rows) = &deleted {
                fx.delta.pending -= rows.iter().filter(|r| !r.get::<_, bool>(0)).count() as i64;
            }
            answer!(reply, deleted.map(|rows| rows.len() as u64))
        }
        Op::Progress(updates, reply) => {
            let (leases, bodies): (Vec<Uuid>, Vec<String>) = updates.into_iter().unzip();
            answer!(
                reply,
                tx.execute(
                    "UPDATE jobs SET progress = p.body FROM unnest($1::UUID[], $2::TEXT[]) AS p(lease_id, body) \
                     WHERE jobs.lease_id = p.lease_id AND jobs.status = 1",
                    &[&leases, &bodies],
                )
                .await
            )
        }
        Op::ExpireKeys(before, reply) => answer!(
            reply,
            tx.execute(
                "DELETE FROM idempotency WHERE created_at < $1",
                &[&ms(before)]
            )
            .await
        ),
        Op::Expire(rules, limit, reply) => {
            let done = expire(tx, &rules, limit).await;
            if let Ok((_, unacked)) = &done {
                fx.delta.pending -= *unacked as i64;
            }
            answer!(reply, done.map(|(report, _)| report))
        }
    }
}

const EXPIRE_QUEUE: &str = "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs \
     WHERE status >= 2 AND status = ANY($1) AND finished_at < $2 AND queue = ANY($4) \
     ORDER BY finished_at LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING job_id, acked";
const EXPIRE_OTHERS: &str = "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs \
     WHERE status >= 2 AND status = ANY($1) AND finished_at < $2 AND NOT (queue = ANY($4)) \
     ORDER BY finished_at LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING job_id, acked";

/// Retention: at most `limit` finished jobs past their cutoffs, oldest first (rows another
/// hub is deleting are skipped); the report and how many of them were unacknowledged.
async fn expire(
    tx: &Db<'_>,
    rules: &sheratan_store::retention::RetentionRules,
    limit: u32,
) -> Result<(sheratan_store::retention::PurgeReport, u64), tokio_postgres::Error> {
    use sheratan_store::retention::Scope;
    let mut report = sheratan_store::retention::PurgeReport::default();
    let mut unacked = 0;
    for pass in rules.passes() {
        let room = i64::from(limit) - report.deleted as i64;
        if room <= 0 {
            break;
        }
        let statuses: Vec<i16> = pass.statuses.to_vec();
        let (sql, queues): (&'static str, Vec<&str>) = match &pass.scope {
            Scope::Queue(queue) => (EXPIRE_QUEUE, vec![*queue]),
            Scope::Others(queues) => (EXPIRE_OTHERS, queues.clone()),
        };
        let rows = tx
            .query(sql, &[&statuses, &pass.before_ms, &room, &queues])
            .await?;
        for row in rows {
            let id: Uuid = row.get(0);
            report.deleted += 1;
            report.newest = report.newest.max(Some(id));
            if !row.get::<_, bool>(1) {
                unacked += 1;
            }
        }
    }
    if let Some(newest) = report.newest {
        tx.execute(
            "INSERT INTO retention_mark (id, newest) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET newest = GREATEST(retention_mark.newest, EXCLUDED.newest)",
            &[&newest],
        )
        .await?;
    }
    Ok((report, unacked))
}

/// The parts of a group sent pipelined with its BEGIN: one INSERT for all plain submits, one
/// UPDATE for all successful results, one statement per lease.
#[derive(Default)]
struct Batch {
    submits: Vec<(Vec<JobSpec>, Reply<Vec<SubmitOutcome>>)>,
    results: Vec<(ResultReport, Reply<FinishOutcome>)>,
    /// With the number of jobs each may take.
    leases: Vec<(LeaseOrder, i64, Reply<LeaseGrant>)>,
    /// The credentialed nodes the results' holder rules name (one copy for the whole batch).
    bound: Option<Arc<HashSet<String>>>,
}

/// Whether a report's holder rule uses the batch's copy of the credentialed nodes (taking its
/// copy as the batch's when the batch has none yet).
fn same_bound(batch: &mut Option<Arc<HashSet<String>>>, rule: Option<&HolderRule>) -> bool {
    let Some(rule) = rule else { return true };
    match batch {
        Some(set) => Arc::ptr_eq(set, &rule.bound),
        None => {
            *batch = Some(rule.bound.clone());
            true
        }
    }
}

impl Batch {
    /// Takes out submits without idempotency keys and leases (while their limits are far)
    /// and successful results (one per job); everything else is returned, in order.
    fn split(group: Vec<Op>, shared: &Shared, fx: &Effects) -> (Batch, Vec<Op>) {
        let mut batch = Batch::default();
        let mut others = Vec::new();
        let mut new_jobs = 0i64;
        let mut leasing = 0i64;
        let max_inflight = shared.limits.max_inflight.min(i64::MAX as u64) as i64;
        let mut reported = std::collections::HashSet::new();
        // The one set of credentialed nodes the batch's UPDATE checks holders against; a
        // report made under another copy (the hub re-read its credentials) goes the careful way.
        let mut bound: Option<Arc<HashSet<String>>> = None;
        for op in group {
            match op {
                Op::Submit(specs, reply)
                    if specs.iter().all(|s| s.idempotency_key.is_none())
                        && !near(
                            depth_now(shared, fx),
                            new_jobs + specs.len() as i64,
                            shared.limits.max_queue_depth,
                        ) =>
                {
                    new_jobs += specs.len() as i64;
                    batch.submits.push((specs, reply));
                }
                // A second report for one job goes the careful way, after the first.
                Op::Finish(report, reply)
                    if matches!(report.outcome, Outcome::Success)
                        && same_bound(&mut bound, report.holder.as_deref())
                        && reported.insert(report.job_id) =>
                {
                    batch.results.push((report, reply));
                }
                Op::Lease(order, reply)
                    if !shared.touches_limited(&order)
                        && !near(
                            inflight_now(shared, fx) + leasing,
                            i64::from(order.max_jobs),
                            shared.limits.max_inflight,
                        ) =>
                {
                    let budget = i64::from(order.max_jobs)
                        .min(max_inflight - inflight_now(shared, fx) - leasing);
                    leasing += budget;
                    batch.leases.push((order, budget, reply));
                }
                other => others.push(other),
            }
        }
        batch.bound = bound;
        (batch, others)
    }

    async fn apply(
        self,
        tx: &Db<'_>,
        shared: &Shared,
        now: i64,
        held: &mut Vec<Box<dyn Held>>,
        fx: &mut Effects,
    ) -> Result<(), tokio_postgres::Error> {
        if self.submits.is_empty() && self.results.is_empty() && self.leases.is_empty() {
            return Ok(());
        }
        let answers = match self.run(tx, now).await {
            Ok(answers) => answers,
            Err((err, batch)) => {
                batch.unanswered(held);
                return Err(err);
            }
        };
        let BatchAnswers {
            submits,
            results,
            recorded,
            leases,
        } = answers;
        for (specs, reply) in submits {
            let created = specs
                .iter()
                .map(|spec| {
                    *fx.delta.depth.entry(spec.queue.clone()).or_default() += 1;
                    fx.ready |= ms(spec.run_at) <= now;
                    SubmitOutcome::Created {
                        job_id: spec.job_id,
                    }
                })
                .collect();
            held.push(Box::new(Answer {
                reply,
                value: Some(created),
            }));
        }
        for ((_, reply), rows) in leases {
            let grant = granted(rows, fx, &shared.timings, now);
            held.push(Box::new(Answer {
                reply,
                value: Some(grant),
            }));
        }
        let mut results = results.into_iter();
        while let Some((report, reply)) = results.next() {
            if let Some((follow, queue, started)) = recorded.get(&report.job_id) {
                let follow = *follow;
                let started = started.unwrap_or(now);
                (shared.timings).ended(queue, report.job_id, started, now, true);
                fx.delta.inflight -= 1;
                fx.delta.pending += i64::from(follow);
                fx.finished = true;
                held.push(Box::new(Answer {
                    reply,
                    value: Some(FinishOutcome::Recorded {
                        status: JobStatus::Completed,
                    }),
                }));
                continue;
            }
            // Not under a live lease: the careful path says why (duplicate, lost lease,
            // unknown job).
            match finish(tx, shared, report, now, fx).await {
                Ok(value) => held.push(Box::new(Answer {
                    reply,
                    value: Some(value),
                })),
                Err(err) => {
                    held.push(Box::new(Answer::<FinishOutcome> { reply, value: None }));
                    for (_, reply) in results {
                        held.push(Box::new(Answer::<FinishOutcome> { reply, value: None }));
                    }
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    /// Sends the batch's statements in one pipeline and collects their rows; on failure the
    /// batch comes back so that every caller can be answered.
    async fn run(
        self,
        tx: &Db<'_>,
        now: i64,
    ) -> Result<BatchAnswers, (tokio_postgres::Error, Batch)> {
        let prepared = async {
            let mut st = Vec::new();
            for (wanted, sql) in [
                (!self.submits.is_empty(), INSERT_JOBS),
                (!self.results.is_empty(), COMPLETE_JOBS),
                (!self.leases.is_empty(), LEASE_JOBS),
            ] {
                st.push(if wanted {
                    Some(tx.statement(sql).await?)
                } else {
                    None
                });
            }
            Ok::<_, tokio_postgres::Error>(st)
        }
        .await;
        let st = match prepared {
            Ok(st) => st,
            Err(err) => return Err((err, self)),
        };
        let outcome = {
            let cols = InsertColumns::of(self.submits.iter().flat_map(|(s, _)| s));
            let insert_params = cols.params(&now);
            let job_ids: Vec<Uuid> = self.results.iter().map(|(r, _)| r.job_id).collect();
            let lease_ids: Vec<Uuid> = self.results.iter().map(|(r, _)| r.lease_id).collect();
            let bodies: Vec<&str> = self
                .results
                .iter()
                .map(|(r, _)| r.result.as_str())
                .collect();
            let completed = status_code(JobStatus::Completed);
            let checked: Vec<bool> = self
                .results
                .iter()
                .map(|(r, _)| r.holder.is_some())
                .collect();
            let reporters: Vec<Option<&str>> = self
                .results
                .iter()
                .map(|(r, _)| r.holder.as_ref().and_then(|h| h.reporter.as_deref()))
                .collect();
            let bound: Vec<&str> = self
                .bound
                .iter()
                .flat_map(|set| set.iter().map(String::as_str))
                .collect();
            let complete_params: [&(dyn ToSql + Sync); 8] = [
                &job_ids, &lease_ids, &bodies, &completed, &now, &checked, &reporters, &bound,
            ];
            let lease_params: Vec<[&(dyn ToSql + Sync); 5]> = self
                .leases
                .iter()
                .map(|(order, budget, _)| {
                    [
                        &now as &(dyn ToSql + Sync),
                        &order.queues,
                        &order.capabilities,
                        budget,
                        &order.node_id,
                    ]
                })
                .collect();
            let mut pending = Vec::new();
            if let Some(st) = &st[0] {
                pending.push(tx.pending(st, &insert_params));
            }
            if let Some(st) = &st[1] {
                pending.push(tx.pending(st, &complete_params));
            }
            if let Some(st) = &st[2] {
                for params in &lease_params {
                    pending.push(tx.pending(st, params));
                }
            }
            match tx.pipeline(pending).await {
                Ok(rows) => rows.into_iter().collect::<Result<Vec<_>, _>>(),
                Err(err) => Err(err),
            }
        };
        let mut rows = match outcome {
            Ok(rows) => rows.into_iter(),
            Err(err) => return Err((err, self)),
        };
        if !self.submits.is_empty() {
            rows.next();
        }
        // The jobs the batch completed, and whether each one's submitter follows the result.
        let recorded = if self.results.is_empty() {
            std::collections::HashMap::new()
        } else {
            rows.next()
                .unwrap_or_default()
                .iter()
                .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
                .collect()
        };
        let leases = self
            .leases
            .into_iter()
            .map(|(o, _, r)| (o, r))
            .zip(rows)
            .collect();
        Ok(BatchAnswers {
            submits: self.submits,
            results: self.results,
            recorded,
            leases,
        })
    }

    /// Answers every operation of a failed batch (with the group's error, after rollback).
    fn unanswered(self, held: &mut Vec<Box<dyn Held>>) {
        for (_, reply) in self.submits {
            held.push(Box::new(Answer::<Vec<SubmitOutcome>> {
                reply,
                value: None,
            }));
        }
        for (_, reply) in self.results {
            held.push(Box::new(Answer::<FinishOutcome> { reply, value: None }));
        }
        for (_, _, reply) in self.leases {
            held.push(Box::new(Answer::<LeaseGrant> { reply, value: None }));
        }
    }
}

struct BatchAnswers {
    submits: Vec<(Vec<JobSpec>, Reply<Vec<SubmitOutcome>>)>,
    results: Vec<(ResultReport, Reply<FinishOutcome>)>,
    /// The jobs the UPDATE completed (their lease was still live): whether each one's
    /// submitter follows the result, its queue, when its lease started.
    recorded: std::collections::HashMap<Uuid, (bool, String, Option<i64>)>,
    leases: Vec<(LeaseReply, Vec<tokio_postgres::Row>)>,
}

type LeaseReply = (LeaseOrder, Reply<LeaseGrant>);

/// One INSERT for many new jobs.
const INSERT_JOBS: &str = "INSERT INTO jobs (job_id, queue, kind, payload, priority, required_capabilities, \
     max_attempts, timeout_s, run_at, status, attempt, created_at, updated_at, follow, \
     concurrency_key, retry_base_ms, retry_max_ms, traceparent) \
     SELECT j, q, k, p, pr, c::TEXT[], ma, t, r, 0, 0, $10, $10, f, ck, rb, rm, tp \
     FROM unnest($1::UUID[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::INT[], $6::TEXT[], $7::INT[], $8::INT[], $9::BIGINT[], $11::BOOL[], \
                 $12::TEXT[], $13::BIGINT[], $14::BIGINT[], $15::TEXT[]) \
       AS n(j, q, k, p, pr, c, ma, t, r, f, ck, rb, rm, tp)";

/// One UPDATE for many successful results; returns the jobs it completed (those whose lease
/// was still live and whose holder rule, when checked, let the reporter complete it: the
/// reporter is the holder, or the holder has no node credential — `$8`).
const COMPLETE_JOBS: &str = "UPDATE jobs SET status = $4, result = r.body, error_message = NULL, error_retryable = NULL, \
     finished_at = $5, updated_at = $5, acked = NOT jobs.follow, result_lease_id = r.lease_id \
     FROM unnest($1::UUID[], $2::UUID[], $3::TEXT[], $6::BOOL[], $7::TEXT[]) AS r(job_id, lease_id, body, checked, reporter) \
     WHERE jobs.job_id = r.job_id AND jobs.status = 1 AND jobs.lease_id = r.lease_id \
       AND (NOT r.checked OR jobs.lease_node = r.reporter OR NOT (jobs.lease_node = ANY($8::TEXT[]))) \
     RETURNING jobs.job_id, jobs.follow, jobs.queue, jobs.lease_started_at";

/// Picks and leases up to $4 ready jobs, by priority then age.
const LEASE_JOBS: &str = "WITH picked AS ( \
        SELECT id FROM jobs \
        WHERE status = 0 AND run_at <= $1 AND queue = ANY($2) AND required_capabilities <@ $3 \
          AND NOT EXISTS (SELECT 1 FROM queues q WHERE q.name = jobs.queue AND q.paused) \
        ORDER BY priority DESC, id \
        LIMIT $4 \
        FOR UPDATE SKIP LOCKED \
     ) \
     UPDATE jobs j SET status = 1, attempt = j.attempt + 1, lease_id = gen_random_uuid(), lease_node = $5, \
        lease_expires_at = $1 + j.timeout_s::BIGINT * 1000, updated_at = $1, lease_started_at = $1, \
        progress = NULL \
     FROM picked WHERE j.id = picked.id \
     RETURNING j.job_id, j.lease_id, j.queue, j.kind, j.payload, j.attempt, j.lease_expires_at, j.priority, j.id, j.timeout_s, j.run_at, j.traceparent";

/// A lease's rows as handed out, in leasing order; counted in the group's effects.
fn granted(
    mut rows: Vec<tokio_postgres::Row>,
    fx: &mut Effects,
    timings: &sheratan_store::timings::StoreTimings,
    now: i64,
) -> LeaseGrant {
    // RETURNING comes in no particular order: hand jobs out in leasing order.
    rows.sort_by_key(|r| (std::cmp::Reverse(r.get::<_, i32>(7)), r.get::<_, i64>(8)));
    let mut jobs = Vec::with_capacity(rows.len());
    for r in rows {
        let queue: String = r.get(2);
        *fx.delta.depth.entry(queue.clone()).or_default() -= 1;
        fx.delta.inflight += 1;
        timings.leased(&queue, r.get(10), now);
        jobs.push(LeasedJob {
            job_id: r.get(0),
            lease_id: r.get(1),
            queue,
            kind: r.get(3),
            payload: r.get(4),
            attempt: r.get::<_, i32>(5) as u32,
            lease_expires_at: from_ms(r.get(6)),
            timeout_s: r.get::<_, i32>(9) as u32,
            traceparent: r.get(11),
        });
    }
    LeaseGrant {
        jobs,
        saturated: false,
    }
}

/// The columns of many new jobs, for [`INSERT_JOBS`].
struct InsertColumns<'a> {
    job_id: Vec<Uuid>,
    queue: Vec<&'a str>,
    kind: Vec<&'a str>,
    payload: Vec<&'a str>,
    priority: Vec<i32>,
    caps: Vec<String>,
    max_attempts: Vec<i32>,
    timeout_s: Vec<i32>,
    run_at: Vec<i64>,
    follow: Vec<bool>,
    key: Vec<Option<&'a str>>,
    retry_base: Vec<Option<i64>>,
    retry_max: Vec<Option<i64>>,
    traceparent: Vec<Option<&'a str>>,
}

impl<'a> InsertColumns<'a> {
    fn of(specs: impl Iterator<Item = &'a JobSpec>) -> Self {
        let mut c = InsertColumns {
            job_id: Vec::new(),
            queue: Vec::new(),
            kind: Vec::new(),
            payload: Vec::new(),
            priority: Vec::new(),
            caps: Vec::new(),
            max_attempts: Vec::new(),
            timeout_s: Vec::new(),
            run_at: Vec::new(),
            follow: Vec::new(),
            key: Vec::new(),
            retry_base: Vec::new(),
            retry_max: Vec::new(),
            traceparent: Vec::new(),
        };
        for s in specs {
            c.job_id.push(s.job_id);
            c.queue.push(&s.queue);
            c.kind.push(&s.kind);
            c.payload.push(&s.payload);
            c.priority.push(s.priority);
            c.caps.push(array_literal(&s.required_capabilities));
            c.max_attempts.push(s.max_attempts as i32);
            c.timeout_s.push(s.timeout_s as i32);
            c.run_at.push(ms(s.run_at));
            c.follow.push(s.follow);
            c.key.push(s.concurrency_key.as_deref());
            c.retry_base.push(s.retry_base_ms.map(|v| v as i64));
            c.retry_max.push(s.retry_max_ms.map(|v| v as i64));
            c.traceparent.push(s.traceparent.as_deref());
        }
        c
    }

    fn params<'p>(&'p self, now: &'p i64) -> [&'p (dyn ToSql + Sync); 15] {
        [
            &self.job_id,
            &self.queue,
            &self.kind,
            &self.payload,
            &self.priority,
            &self.caps,
            &self.max_attempts,
            &self.timeout_s,
            &self.run_at,
            now,
            &self.follow,
            &self.key,
            &self.retry_base,
            &self.retry_max,
            &self.traceparent,
        ]
    }
}

/// A PostgreSQL array literal (`{"a","b"}`): arrays of arrays cannot be unnested row by row,
/// so each job's capabilities travel as one text and are cast back in the statement.
fn array_literal(items: &[String]) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for ch in item.chars() {
            if ch == '"' || ch == '\\' {
                out.push('\\');
            }
            out.push(ch);
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// The cached total plus this group's changes so far.
fn depth_now(shared: &Shared, fx: &Effects) -> i64 {
    shared.tally.lock().expect("tally lock").total_depth() + fx.delta.total_depth()
}

fn inflight_now(shared: &Shared, fx: &Effects) -> i64 {
    shared.tally.lock().expect("tally lock").inflight + fx.delta.inflight
}

/// Near a limit the cached counts are not trusted: the exact count is taken under a lock
/// every hub takes there.
fn near(count: i64, adding: i64, limit: u64) -> bool {
    let limit = limit.min(i64::MAX as u64) as i64;
    count + adding >= limit - limit / 10 - 1
}

async fn submit(
    tx: &Db<'_>,
    shared: &Shared,
    specs: Vec<JobSpec>,
    now: i64,
    fx: &mut Effects,
) -> Result<Vec<SubmitOutcome>, tokio_postgres::Error> {
    let mut outcomes = Vec::with_capacity(specs.len());
    let mut exact_depth: Option<i64> = None;
    for spec in specs {
        if let Some(key) = &spec.idempotency_key {
            // Claim the key; if another submit (on any hub) holds it, this waits for it to
            // commit and then sees its job.
            let claimed = tx
                .query_opt(
                    "INSERT INTO idempotency (key, job_id, request_hash, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (key) DO NOTHING RETURNING key",
                    &[key, &spec.job_id, &&spec.request_hash[..], &now],
                )
                .await?;
            if claimed.is_none() {
                let row = tx
                    .query_opt(
                        "SELECT i.job_id, i.request_hash, j.status, j.result FROM idempotency i \
                         LEFT JOIN jobs j ON j.job_id = i.job_id WHERE i.key = $1",
                        &[key],
                    )
                    .await?;
                if let Some(row) = row {
                    let job_id: Uuid = row.get(0);
                    let hash: Vec<u8> = row.get(1);
                    match row.get::<_, Option<i16>>(2) {
                        Some(code) if hash == spec.request_hash => {
                            let status = status_of(code);
                            outcomes.push(SubmitOutcome::Existing {
                                job_id,
                                status,
                                result: (status == JobStatus::Completed)
                                    .then(|| row.get(3))
                                    .flatten(),
                            });
                            continue;
                        }
                        Some(_) => {
                            outcomes.push(SubmitOutcome::Collision { job_id });
                            continue;
                        }
                        // The key outlived its job: take it over.
                        None => {
                            tx.execute(
                                "UPDATE idempotency SET job_id = $2, request_hash = $3, created_at = $4 WHERE key = $1",
                                &[key, &spec.job_id, &&spec.request_hash[..], &now],
                            )
                            .await?;
                        }
                    }
                }
            }
        }
        let depth = match exact_depth {
            Some(d) => d,
            None if near(depth_now(shared, fx), 1, shared.limits.max_queue_depth) => {
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DEPTH_LOCK])
                    .await?;
                let n: i64 = tx
                    .query_one("SELECT count(*) FROM jobs WHERE status = 0", &[])
                    .await?
                    .get(0);
                exact_depth = Some(n);
                n
            }
            None => depth_now(shared, fx),
        };
        if depth >= shared.limits.max_queue_depth.min(i64::MAX as u64) as i64 {
            if let Some(key) = &spec.idempotency_key {
                tx.execute(
                    "DELETE FROM idempotency WHERE key = $1 AND job_id = $2",
                    &[key, &spec.job_id],
                )
                .await?;
            }
            outcomes.push(SubmitOutcome::QueueFull {
                depth: depth.max(0) as u64,
            });
            continue;
        }
        let run_at = ms(spec.run_at);
        tx.execute(
            "INSERT INTO jobs (job_id, queue, kind, payload, priority, required_capabilities, idempotency_key, \
             max_attempts, timeout_s, run_at, status, attempt, created_at, updated_at, follow, \
             concurrency_key, retry_base_ms, retry_max_ms, traceparent) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, 0, $11, $11, $12, $13, $14, $15, $16)",
            &[
                &spec.job_id,
                &spec.queue,
                &spec.kind,
                &spec.payload,
                &spec.priority,
                &spec.required_capabilities,
                &spec.idempotency_key,
                &(spec.max_attempts as i32),
                &(spec.timeout_s as i32),
                &run_at,
                &now,
                &spec.follow,
                &spec.concurrency_key,
                &spec.retry_base_ms.map(|v| v as i64),
                &spec.retry_max_ms.map(|v| v as i64),
                &spec.traceparent,
            ],
        )
        .await?;
        if let Some(d) = exact_depth.as_mut() {
            *d += 1;
        }
        *fx.delta.depth.entry(spec.queue.clone()).or_default() += 1;
        if run_at <= now {
            fx.ready = true;
        }
        outcomes.push(SubmitOutcome::Created {
            job_id: spec.job_id,
        });
    }
    Ok(outcomes)
}

async fn lease(
    tx: &Db<'_>,
    shared: &Shared,
    order: LeaseOrder,
    now: i64,
    fx: &mut Effects,
) -> Result<LeaseGrant, tokio_postgres::Error> {
    let limit = shared.limits.max_inflight.min(i64::MAX as u64) as i64;
    let mut inflight = inflight_now(shared, fx);
    if near(
        inflight,
        i64::from(order.max_jobs),
        shared.limits.max_inflight,
    ) {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&INFLIGHT_LOCK])
            .await?;
        inflight = tx
            .query_one("SELECT count(*) FROM jobs WHERE status = 1", &[])
            .await?
            .get(0);
        // This group's own leases are already in the exact count.
    }
    if inflight >= limit {
        return Ok(LeaseGrant {
            jobs: Vec::new(),
            saturated: true,
        });
    }
    let budget = i64::from(order.max_jobs).min(limit - inflight);
    let limited = shared.limited();
    let plain: Vec<&String> = order
        .queues
        .iter()
        .filter(|q| !limited.contains_key(*q))
        .collect();
    let mut rows = if plain.is_empty() {
        Vec::new()
    } else {
        tx.query(
            LEASE_JOBS,
            &[&now, &plain, &order.capabilities, &budget, &order.node_id],
        )
        .await?
    };
    let mut waiting = false;
    for queue in order.queues.iter() {
        let left = budget - rows.len() as i64;
        let Some(settings) = limited.get(queue) else {
            continue;
        };
        if left <= 0 {
            break;
        }
        let got =
            crate::limits::lease_limited(tx, queue, settings, &order, left, now, &mut waiting)
                .await?;
        rows.extend(got);
    }
    if waiting {
        shared
            .limited_waiting
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(granted(rows, fx, &shared.timings, now))
}

/// The holder of a lease when `rule` does not let the caller act on it.
fn refused_holder(rule: Option<&HolderRule>, holder: Option<String>) -> Option<String> {
    holder.filter(|h| rule.is_some_and(|rule| !rule.permits(h)))
}

async fn extend(
    tx: &Db<'_>,
    lease_id: Uuid,
    secs: Option<u32>,
    holder: Option<Box<HolderRule>>,
    now: i64,
) -> Result<ExtendOutcome, tokio_postgres::Error> {
    if holder.is_some() {
        let node = tx
            .query_opt(
                "SELECT lease_node FROM jobs WHERE lease_id = $1 AND status = 1",
                &[&lease_id],
            )
            .await?;
        if let Some(holder) = node.and_then(|r| refused_holder(holder.as_deref(), r.get(0))) {
            return Ok(ExtendOutcome::WrongHolder { holder });
        }
    }
    let secs = secs.map(|s| s.clamp(1, MAX_TIMEOUT_S) as i64);
    let row = tx
        .query_opt(
            // Extensions prove the node alive; they never run the job past its timeout_s
            // (LEAST ignores the NULL start of a lease taken before starts were recorded).
            "UPDATE jobs SET lease_expires_at = LEAST($2 + COALESCE($3, timeout_s::BIGINT) * 1000, \
                lease_started_at + timeout_s::BIGINT * 1000 + $4), updated_at = $2 \
             WHERE lease_id = $1 AND status = 1 RETURNING job_id, lease_expires_at",
            &[&lease_id, &now, &secs, &RUN_GRACE_MS],
        )
        .await?;
    Ok(match row {
        Some(r) => ExtendOutcome::Extended {
            job_id: r.get(0),
            expires_at: from_ms(r.get(1)),
        },
        None => ExtendOutcome::NotHeld,
    })
}

async fn finish(
    tx: &Db<'_>,
    shared: &Shared,
    report: ResultReport,
    now: i64,
    fx: &mut Effects,
) -> Result<FinishOutcome, tokio_postgres::Error> {
    // The common case, a success under a live lease, in one statement; anything else (a
    // failure, a duplicate, a lost lease, a holder to check) takes the path below that reads
    // the job first.
    if matches!(report.outcome, Outcome::Success) && report.holder.is_none() {
        let updated = tx
            .query_opt(
                "UPDATE jobs SET status = $3, result = $4, error_message = NULL, error_retryable = NULL, \
                 finished_at = $5, updated_at = $5, acked = NOT follow, result_lease_id = $2 \
                 WHERE job_id = $1 AND status = 1 AND lease_id = $2 RETURNING follow, queue, lease_started_at",
                &[
                    &report.job_id,
                    &report.lease_id,
                    &status_code(JobStatus::Completed),
                    &report.result,
                    &now,
                ],
            )
            .await?;
        if let Some(row) = updated {
            let started: Option<i64> = row.get(2);
            let queue: String = row.get(1);
            (shared.timings).ended(&queue, report.job_id, started.unwrap_or(now), now, true);
            fx.delta.inflight -= 1;
            fx.delta.pending += i64::from(row.get::<_, bool>(0));
            fx.finished = true;
            return Ok(FinishOutcome::Recorded {
                status: JobStatus::Completed,
            });
        }
    }
    let Some(row) = tx
        .query_opt(
            "SELECT id, status, lease_id, result_lease_id, attempt, max_attempts, queue, lease_node, retry_base_ms, retry_max_ms, lease_started_at \
             FROM jobs WHERE job_id = $1 FOR UPDATE",
            &[&report.job_id],
        )
        .await?
    else {
        return Ok(FinishOutcome::UnknownJob);
    };
    let id: i64 = row.get(0);
    let status = status_of(row.get(1));
    let lease_id: Option<Uuid> = row.get(2);
    if status != JobStatus::InProgress || lease_id != Some(report.lease_id) {
        let result_lease: Option<Uuid> = row.get(3);
        return Ok(if result_lease == Some(report.lease_id) {
            FinishOutcome::Duplicate { status }
        } else {
            FinishOutcome::LeaseNotHeld { status }
        });
    }
    if let Some(holder) = refused_holder(report.holder.as_deref(), row.get(7)) {
        return Ok(FinishOutcome::WrongHolder { holder });
    }
    let attempt = row.get::<_, i32>(4) as u32;
    let max_attempts = row.get::<_, i32>(5) as u32;
    let queue: String = row.get(6);
    let started = row.get::<_, Option<i64>>(10).unwrap_or(now);
    fx.delta.inflight -= 1;
    let (new_status, pending) = match report.outcome {
        Outcome::Success => {
            let pending = end(
                tx,
                id,
                &Ending {
                    status: JobStatus::Completed,
                    result: Some(&report.result),
                    error: None,
                    acked: false,
                    result_lease: Some(report.lease_id),
                },
                now,
            )
            .await?;
            (JobStatus::Completed, pending)
        }
        Outcome::Failure => {
            let error = report.error.clone().unwrap_or(JobError {
                message: "the executor reported a failure without a message".into(),
                retryable: false,
            });
            if error.retryable && attempt < max_attempts {
                let jitter = rand::random::<f64>() * 2.0 - 1.0;
                let delay = job_retry_delay(
                    shared.limits.retry_base,
                    row.get::<_, Option<i64>>(8).map(|v| v as u64),
                    row.get::<_, Option<i64>>(9).map(|v| v as u64),
                    attempt,
                    jitter,
                );
                let run_at = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
                reaccept(
                    tx,
                    id,
                    &Reaccept {
                        run_at,
                        error: Some(&error),
                        reset_attempts: false,
                        result_lease: Some(report.lease_id),
                    },
                    now,
                )
                .await?;
                (shared.timings).ended(&queue, report.job_id, started, now, false);
                *fx.delta.depth.entry(queue).or_default() += 1;
                return Ok(FinishOutcome::Recorded {
                    status: JobStatus::Accepted,
                });
            }
            let result = (report.result != "null").then_some(report.result.as_str());
            let pending = end(
                tx,
                id,
                &Ending {
                    status: JobStatus::Failed,
                    result,
                    error: Some(&error),
                    acked: false,
                    result_lease: Some(report.lease_id),
                },
                now,
            )
            .await?;
            (JobStatus::Failed, pending)
        }
    };
    fx.delta.pending += i64::from(pending);
    fx.finished = true;
    (shared.timings).ended(&queue, report.job_id, started, now, true);
    Ok(FinishOutcome::Recorded { status: new_status })
}

/// Ends a job: completed, failed or cancelled. True when its result is now pending (not
/// acknowledged: `end.acked` is false and the submitter follows the result).
async fn end(
    tx: &Db<'_>,
    id: i64,
    end: &Ending<'_>,
    now: i64,
) -> Result<bool, tokio_postgres::Error> {
    let row = tx.query_one(
        "UPDATE jobs SET status = $2, result = $3, error_message = $4, error_retryable = $5, finished_at = $6, \
         updated_at = $6, acked = ($7 OR NOT follow), result_lease_id = COALESCE($8, result_lease_id) \
         WHERE id = $1 RETURNING NOT acked",
        &[
            &id,
            &status_code(end.status),
            &end.result,
            &end.error.map(|e| e.message.as_str()),
            &end.error.map(|e| e.retryable),
            &now,
            &end.acked,
            &end.result_lease,
        ],
    )
    .await?;
    Ok(row.get(0))
}

/// Back to accepted, to run at `run_at` (a retry, a reaped lease, a requeue).
async fn reaccept(
    tx: &Db<'_>,
    id: i64,
    back: &Reaccept<'_>,
    now: i64,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "UPDATE jobs SET status = 0, run_at = $2, error_message = $3, error_retryable = $4, \
         attempt = CASE WHEN $5 THEN 0 ELSE attempt END, finished_at = NULL, \
         result = CASE WHEN $5 THEN NULL ELSE result END, acked = FALSE, updated_at = $6, \
         result_lease_id = COALESCE($7, result_lease_id) WHERE id = $1",
        &[
            &id,
            &back.run_at,
            &back.error.map(|e| e.message.as_str()),
            &back.error.map(|e| e.retryable),
            &back.reset_attempts,
            &now,
            &back.result_lease,
        ],
    )
    .await?;
    Ok(())
}

/// `SELECT` of a whole record, built once so it can be prepared once per connection.
static LOAD_BY_JOB_ID: std::sync::LazyLock<&'static str> = std::sync::LazyLock::new(|| {
    format!("SELECT {RECORD_COLUMNS} FROM jobs WHERE job_id = $1").leak()
});

async fn load(tx: &Db<'_>, job_id: Uuid) -> Result<Option<JobRecord>, tokio_postgres::Error> {
    Ok(tx
        .query_opt(&LOAD_BY_JOB_ID, &[&job_id])
        .await?
        .map(|r| record(&r)))
}

async fn cancel(
    tx: &Db<'_>,
    job_id: Uuid,
    now: i64,
    fx: &mut Effects,
) -> Result<Option<JobRecord>, tokio_postgres::Error> {
    let Some(row) = tx
        .query_opt(
            "SELECT id, status, queue FROM jobs WHERE job_id = $1 FOR UPDATE",
            &[&job_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let status = status_of(row.get(1));
    if !status.is_terminal() {
        let pending = end(
            tx,
            row.get(0),
            &Ending {
                status: JobStatus::Cancelled,
                result: None,
                error: None,
                acked: false,
                result_lease: None,
            },
            now,
        )
        .await?;
        match status {
            JobStatus::Accepted => *fx.delta.depth.entry(row.get(2)).or_default() -= 1,
            _ => fx.delta.inflight -= 1,
        }
        fx.delta.pending += i64::from(pending);
        fx.finished = true;
    }
    load(tx, job_id).await
}

async fn requeue(
    tx: &Db<'_>,
    job_id: Uuid,
    now: i64,
    fx: &mut Effects,
) -> Result<Option<JobRecord>, tokio_postgres::Error> {
    let Some(row) = tx
        .query_opt(
            "SELECT id, status, queue, acked FROM jobs WHERE job_id = $1 FOR UPDATE",
            &[&job_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let status = status_of(row.get(1));
    let queue: String = row.get(2);
    let acked: bool = row.get(3);
    match status {
        JobStatus::Accepted => {}
        JobStatus::InProgress => {
            fx.delta.inflight -= 1;
            *fx.delta.depth.entry(queue).or_default() += 1;
        }
        _ => {
            if !acked {
                fx.delta.pending -= 1;
            }
            *fx.delta.depth.entry(queue).or_default() += 1;
        }
    }
    reaccept(
        tx,
        row.get(0),
        &Reaccept {
            run_at: now,
            error: None,
            reset_attempts: true,
            result_lease: None,
        },
        now,
    )
    .await?;
    fx.ready = true;
    load(tx, job_id).await
}

async fn tick(
    tx: &Db<'_>,
    shared: &Shared,
    now: i64,
    fx: &mut Effects,
) -> Result<TickReport, tokio_postgres::Error> {
    // Delayed jobs that became due since the last tick (of this hub).
    let since = shared
        .last_tick
        .lock()
        .expect("tick lock")
        .unwrap_or(i64::MIN);
    let promoted: i64 = tx
        .query_one("SELECT count(*) FROM jobs WHERE status = 0 AND run_at > $1 AND run_at <= $2 AND run_at > created_at", &[&since, &now])
        .await?
        .get(0);
    *shared.last_tick.lock().expect("tick lock") = Some(now);
    if promoted > 0 {
        fx.ready = true;
    }
    // Settings other hubs changed; lessees of limited queues look again when jobs were held
    // back (a rate token, a running job ending, another hub's turn).
    *shared.limited.write().expect("limited lock") = crate::limits::limited_of(
        crate::limits::settings_of(&tx.query(crate::limits::SETTINGS, &[]).await?),
    );
    if shared
        .limited_waiting
        .swap(false, std::sync::atomic::Ordering::Relaxed)
    {
        fx.ready = true;
    }
    // Expired leases; SKIP LOCKED leaves those another hub is reaping (or a result is
    // finishing) alone.
    let expired = tx
        .query(
            "SELECT id, job_id, queue, lease_node, attempt, max_attempts, lease_started_at, timeout_s, lease_expires_at FROM jobs \
             WHERE status = 1 AND lease_expires_at <= $1 ORDER BY lease_expires_at LIMIT 1000 FOR UPDATE SKIP LOCKED",
            &[&now],
        )
        .await?;
    let mut reaped = Vec::with_capacity(expired.len());
    for r in expired {
        let id: i64 = r.get(0);
        let queue: String = r.get(2);
        let node_id: String = r.get::<_, Option<String>>(3).unwrap_or_default();
        let attempt = r.get::<_, i32>(4) as u32;
        let max_attempts = r.get::<_, i32>(5) as u32;
        let started_ms = r.get::<_, Option<i64>>(6).unwrap_or(i64::MAX);
        let expires_ms = r.get::<_, Option<i64>>(8).unwrap_or(0);
        fx.delta.inflight -= 1;
        let status = if attempt < max_attempts {
            let error = JobError {
                message: reaped_message(
                    &node_id,
                    started_ms,
                    r.get::<_, i32>(7) as u32,
                    expires_ms,
                    None,
                ),
                retryable: true,
            };
            reaccept(
                tx,
                id,
                &Reaccept {
                    run_at: now,
                    error: Some(&error),
                    reset_attempts: false,
                    result_lease: None,
                },
                now,
            )
            .await?;
            *fx.delta.depth.entry(queue.clone()).or_default() += 1;
            fx.ready = true;
            JobStatus::Accepted
        } else {
            let error = JobError {
                message: reaped_message(
                    &node_id,
                    started_ms,
                    r.get::<_, i32>(7) as u32,
                    expires_ms,
                    Some((attempt, max_attempts)),
                ),
                retryable: false,
            };
            let pending = end(
                tx,
                id,
                &Ending {
                    status: JobStatus::Failed,
                    result: None,
                    error: Some(&error),
                    acked: false,
                    result_lease: None,
                },
                now,
            )
            .await?;
            fx.delta.pending += i64::from(pending);
            fx.finished = true;
            shared.timings.gave_up(&queue, r.get(1), now);
            JobStatus::Failed
        };
        reaped.push(Reaped {
            job_id: r.get(1),
            queue,
            node_id,
            attempt,
            status,
        });
    }
    Ok(TickReport {
        reaped,
        promoted: promoted as usize,
    })
}

async fn ack(tx: &Db<'_>, ids: Vec<Uuid>, fx: &mut Effects) -> Result<u64, tokio_postgres::Error> {
    let n = tx
        .execute(
            "UPDATE jobs SET acked = TRUE WHERE job_id = ANY($1) AND status >= 2 AND NOT acked",
            &[&ids],
        )
        .await?;
    fx.delta.pending -= n as i64;
    Ok(n)
}

async fn purge(
    tx: &Db<'_>,
    queue: String,
    now: i64,
    fx: &mut Effects,
) -> Result<(u64, QueueState), tokio_postgres::Error> {
    let message = format!("purged from queue {queue} by an operator");
    // Purged jobs are acknowledged at once: nobody waits for their results.
    let n = tx
        .execute(
            "UPDATE jobs SET status = 4, error_message = $2, error_retryable = FALSE, finished_at = $3, updated_at = $3, acked = TRUE \
             WHERE queue = $1 AND status = 0",
            &[&queue, &message, &now],
        )
        .await?;
    *fx.delta.depth.entry(queue.clone()).or_default() -= n as i64;
    let paused = tx
        .query_opt("SELECT paused FROM queues WHERE name = $1", &[&queue])
        .await?
        .is_some_and(|r| r.get::<_, bool>(0));
    Ok((n, QueueState { queue, paused }))
}

/// Exact counts from the database.
pub async fn exact_tally(
    client: &impl tokio_postgres::GenericClient,
) -> Result<Tally, tokio_postgres::Error> {
    let mut tally = Tally::default();
    for r in client
        .query(
            "SELECT queue, count(*) FROM jobs WHERE status = 0 GROUP BY queue",
            &[],
        )
        .await?
    {
        tally.depth.insert(r.get(0), r.get(1));
    }
    for r in client
        .query(
            "SELECT queue, count(*) FROM jobs WHERE status = 1 GROUP BY queue",
            &[],
        )
        .await?
    {
        tally.running.insert(r.get(0), r.get(1));
    }
    tally.inflight = tally.running.values().sum();
    tally.pending = client
        .query_one(
            "SELECT count(*) FROM jobs WHERE NOT acked AND status >= 2",
            &[],
        )
        .await?
        .get(0);
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_literals_quote_every_element() {
        assert_eq!(array_literal(&[]), "{}");
        assert_eq!(
            array_literal(&["gpu".into(), "a,b".into(), r#"q"u\o"#.into()]),
            r#"{"gpu","a,b","q\"u\\o"}"#
        );
    }
}
