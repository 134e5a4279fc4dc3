//! Sheratan's job store on PostgreSQL (`SHERATAN_STORE=postgres://…`): several hubs on one
//! database.
//!
//! - Writes go through a few writer tasks per hub, each committing every operation waiting
//!   at that moment in one transaction (group commit); answers are sent after the commit.
//! - Leases pick with `FOR UPDATE SKIP LOCKED`: hubs never hand out a job twice and never
//!   wait on each other's picks.
//! - `LISTEN/NOTIFY` wakes long polls on every hub when jobs become ready or finish anywhere.
//! - Migrations are embedded and applied at start under an advisory lock.
//! - When the database is unreachable, operations fail with `Unavailable` (the hub answers
//!   503) and connections are reopened on the next operation: nothing committed is lost.

mod conn;
mod credentials;
mod limits;
mod notify;
mod rows;
mod schedules;
mod schema;
mod shared;
mod writer;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sheratan_proto::queues::{QueueSettings, QueueSettingsPatch};
use sheratan_store::{
    Clock, Counts, ExtendOutcome, FinishOutcome, HolderRule, JobRecord, JobSpec, LeaseGrant,
    LeaseOrder, ListFilter, QueueState, ResultReport, Store, StoreError, StoreLimits,
    SubmitOutcome, TickReport,
};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

pub use conn::quote_ident;
pub use credentials::PgCredentialStore;
pub use schedules::PgScheduleStore;
pub use shared::{PgAuctionStore, PgShared};

use crate::conn::{Pool, Slot, Target, classify};
use crate::rows::{RECORD_COLUMNS, ms, record, status_code};
use crate::writer::{Op, Shared};

/// Settings of the PostgreSQL store.
#[derive(Clone)]
pub struct PgConfig {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// The schema the tables live in (created if missing); `None`: the default (`public`).
    pub schema: Option<String>,
    pub limits: StoreLimits,
    pub clock: Arc<dyn Clock>,
    /// Writer tasks (each one connection, each one transaction at a time).
    pub writers: usize,
    /// Connections for reads.
    pub readers: usize,
}

impl PgConfig {
    pub fn new(url: &str, clock: Arc<dyn Clock>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            limits: StoreLimits::default(),
            clock,
            writers: 4,
            readers: 2,
        }
    }

    /// The channel NOTIFY uses: one per schema, so stores in different schemas of one
    /// database do not wake each other.
    fn channel(&self) -> String {
        match &self.schema {
            Some(s) => format!("sheratan_{s}"),
            None => "sheratan".into(),
        }
    }
}

pub struct PgStore {
    ops: mpsc::UnboundedSender<Op>,
    readers: Pool,
    shared: Arc<Shared>,
    /// Background tasks (counts refresher, listener); aborted when the store is dropped.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl PgStore {
    /// Connects, migrates, and starts the writers.
    pub async fn open(config: PgConfig) -> Result<PgStore, StoreError> {
        if config.channel().len() > 63 {
            return Err(StoreError::Internal(
                "the schema name is too long for the hubs' NOTIFY channel (54 bytes at most)"
                    .into(),
            ));
        }
        let target = Arc::new(Target {
            url: config.url.clone(),
            schema: config.schema.clone(),
        });
        let mut setup = target.connect().await?;
        schema::migrate(&mut setup).await.map_err(classify)?;
        let version: i32 = setup
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM sheratan_migrations",
                &[],
            )
            .await
            .map_err(classify)?
            .get(0);
        if version as usize > schema::latest() {
            return Err(StoreError::Internal(format!(
                "the database schema is version {version}, newer than this binary knows ({}); use a newer sheratan",
                schema::latest()
            )));
        }
        let tally = writer::exact_tally(&setup).await.map_err(classify)?;
        let settings = setup.query(limits::SETTINGS, &[]).await.map_err(classify)?;
        let limited = limits::limited_of(limits::settings_of(&settings));
        let (ready, _) = tokio::sync::watch::channel(0);
        let (finished, _) = tokio::sync::watch::channel(0);
        let notifier = Arc::new(notify::Notifier::new());
        let shared = Arc::new(Shared {
            tally: Mutex::new(tally),
            since_refresh: Mutex::new(writer::Tally::default()),
            commit_gate: tokio::sync::RwLock::new(()),
            ready,
            finished,
            clock: config.clock.clone(),
            limits: config.limits,
            last_tick: Mutex::new(None),
            notifier: notifier.clone(),
            limited: std::sync::RwLock::new(limited),
            limited_waiting: Default::default(),
            timings: Default::default(),
        });
        let (ops, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let mut tasks = Vec::new();
        for _ in 0..config.writers.max(1) {
            tasks.push(tokio::spawn(writer::run(
                Slot::writer(target.clone()),
                rx.clone(),
                shared.clone(),
            )));
        }
        tasks.push(tokio::spawn(refresh_counts(
            setup,
            target.clone(),
            shared.clone(),
        )));
        tasks.push(tokio::spawn(notify::listen(
            target.clone(),
            config.channel(),
            notifier.instance.clone(),
            shared.ready.clone(),
            shared.finished.clone(),
        )));
        tasks.push(tokio::spawn(notify::send(
            target.clone(),
            config.channel(),
            notifier,
        )));
        Ok(PgStore {
            ops,
            readers: Pool::new(target, config.readers),
            shared,
            tasks,
        })
    }

    async fn call<T>(&self, op: impl FnOnce(writer::Reply<T>) -> Op) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(op(tx))
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        rx.await
            .map_err(|_| StoreError::Internal("the store's writer went away".into()))?
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Every second, exact counts replace the ones kept from this hub's own changes, bringing in
/// what other hubs did.
async fn refresh_counts(client: tokio_postgres::Client, target: Arc<Target>, shared: Arc<Shared>) {
    let mut client = Some(client);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if client
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
        {
            client = target.connect().await.ok();
        }
        let Some(c) = client.as_mut() else { continue };
        match refresh_once(c, &shared).await {
            Ok(tally) => *shared.tally.lock().expect("tally lock") = tally,
            Err(err) => tracing::debug!("postgres store: cannot refresh counts: {err}"),
        }
    }
}

/// Exact counts as of a snapshot, plus this hub's changes committed after it.
async fn refresh_once(
    client: &mut tokio_postgres::Client,
    shared: &Shared,
) -> Result<writer::Tally, tokio_postgres::Error> {
    let tx = {
        let _gate = shared.commit_gate.write().await;
        *shared.since_refresh.lock().expect("tally lock") = writer::Tally::default();
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        // The snapshot is taken by the first statement.
        tx.execute("SELECT 1", &[]).await?;
        tx
    };
    let mut tally = writer::exact_tally(&tx).await?;
    tx.commit().await?;
    tally.apply(&shared.since_refresh.lock().expect("tally lock"));
    Ok(tally)
}

/// Listens for other hubs' (and our own) NOTIFYs and wakes long polls; reconnects when the
/// connection drops, and wakes everyone then (something may have been missed).
#[async_trait]
impl Store for PgStore {
    async fn submit(&self, jobs: Vec<JobSpec>) -> Result<Vec<SubmitOutcome>, StoreError> {
        self.call(|r| Op::Submit(jobs, r)).await
    }

    async fn lease(&self, order: LeaseOrder) -> Result<LeaseGrant, StoreError> {
        self.call(|r| Op::Lease(order, r)).await
    }

    async fn extend(
        &self,
        lease_id: Uuid,
        extend_s: Option<u32>,
        holder: Option<HolderRule>,
    ) -> Result<ExtendOutcome, StoreError> {
        self.call(|r| Op::Extend(lease_id, extend_s, holder.map(Box::new), r))
            .await
    }

    async fn finish(&self, report: ResultReport) -> Result<FinishOutcome, StoreError> {
        self.call(|r| Op::Finish(report, r)).await
    }

    async fn get(&self, job_id: Uuid) -> Result<Option<JobRecord>, StoreError> {
        let client = self.readers.get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {RECORD_COLUMNS} FROM jobs WHERE job_id = $1"),
                &[&job_id],
            )
            .await
            .map_err(classify)?;
        Ok(row.map(|r| record(&r)))
    }

    async fn find_ids(&self, fragment: &str, limit: u32) -> Result<Vec<Uuid>, StoreError> {
        let client = self.readers.get().await?;
        // The fragment is hex and hyphens only (checked by the caller): no LIKE wildcards.
        let rows = client
            .query(
                "SELECT job_id FROM jobs \
                 WHERE job_id::TEXT LIKE $1 || '%' OR job_id::TEXT LIKE '%' || $1 \
                 ORDER BY job_id DESC LIMIT $2",
                &[&fragment, &i64::from(limit)],
            )
            .await
            .map_err(classify)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn list(&self, filter: ListFilter) -> Result<(Vec<JobRecord>, Option<Uuid>), StoreError> {
        let limit = i64::from(filter.limit.clamp(1, 1000));
        let client = self.readers.get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM jobs \
                     WHERE ($1::TEXT IS NULL OR queue = $1) AND ($2::SMALLINT IS NULL OR status = $2) \
                       AND ($3::UUID IS NULL OR job_id < $3) AND ($5::TEXT IS NULL OR kind = $5) \
                       AND ($6::TEXT IS NULL OR strpos(lower(error_message), lower($6)) > 0) \
                       AND ($7::BIGINT IS NULL OR updated_at >= $7) \
                     ORDER BY job_id DESC LIMIT $4"
                ),
                &[
                    &filter.queue,
                    &filter.status.map(status_code),
                    &filter.before,
                    &limit,
                    &filter.kind,
                    &filter.error,
                    &filter.since.map(ms),
                ],
            )
            .await
            .map_err(classify)?;
        let jobs: Vec<JobRecord> = rows.iter().map(record).collect();
        let next = (jobs.len() as i64 == limit)
            .then(|| jobs.last().map(|j| j.job_id))
            .flatten();
        Ok((jobs, next))
    }

    async fn cancel(&self, job_id: Uuid) -> Result<Option<JobRecord>, StoreError> {
        self.call(|r| Op::Cancel(job_id, r)).await
    }

    async fn requeue(&self, job_id: Uuid) -> Result<Option<JobRecord>, StoreError> {
        self.call(|r| Op::Requeue(job_id, r)).await
    }

    async fn tick(&self) -> Result<TickReport, StoreError> {
        self.call(Op::Tick).await
    }

    async fn pending_results(&self, limit: u32) -> Result<Vec<JobRecord>, StoreError> {
        let client = self.readers.get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM jobs WHERE NOT acked AND status >= 2 ORDER BY finished_at, id LIMIT $1"
                ),
                &[&i64::from(limit.clamp(1, 1000))],
            )
            .await
            .map_err(classify)?;
        Ok(rows.iter().map(record).collect())
    }

    async fn ack_results(&self, job_ids: Vec<Uuid>) -> Result<u64, StoreError> {
        self.call(|r| Op::Ack(job_ids, r)).await
    }

    async fn delete_finished(&self, job_ids: Vec<Uuid>) -> Result<u64, StoreError> {
        self.call(|r| Op::DeleteFinished(job_ids, r)).await
    }

    async fn expire_finished(
        &self,
        rules: sheratan_store::retention::RetentionRules,
        limit: u32,
    ) -> Result<sheratan_store::retention::PurgeReport, StoreError> {
        self.call(|r| Op::Expire(rules, limit, r)).await
    }

    async fn purged_through(&self) -> Result<Option<Uuid>, StoreError> {
        let client = self.readers.get().await?;
        let row = client
            .query_opt("SELECT newest FROM retention_mark WHERE id = 1", &[])
            .await
            .map_err(conn::classify)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn record_progress(&self, updates: Vec<(Uuid, String)>) -> Result<u64, StoreError> {
        self.call(|r| Op::Progress(updates, r)).await
    }

    async fn queue_settings(&self) -> Result<Vec<(String, QueueSettings)>, StoreError> {
        let client = self.readers.get().await?;
        let rows = client
            .query(limits::SETTINGS, &[])
            .await
            .map_err(classify)?;
        Ok(limits::settings_of(&rows))
    }

    async fn update_queue_settings(
        &self,
        queue: String,
        patch: QueueSettingsPatch,
    ) -> Result<Result<QueueSettings, String>, StoreError> {
        self.call(|r| Op::Settings(queue, Box::new(patch), r)).await
    }

    async fn purge(&self, queue: String) -> Result<(u64, QueueState), StoreError> {
        self.call(|r| Op::Purge(queue, r)).await
    }

    async fn expire_idempotency_keys(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        self.call(|r| Op::ExpireKeys(before, r)).await
    }

    fn counts(&self) -> Counts {
        self.shared.tally.lock().expect("tally lock").counts()
    }

    fn timings(&self) -> &sheratan_store::timings::StoreTimings {
        &self.shared.timings
    }

    fn ready_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.ready.subscribe()
    }

    fn finished_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.finished.subscribe()
    }
}
