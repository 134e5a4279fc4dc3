//! Sheratan's embedded job store on SQLite (the default: `$SHERATAN_HOME/sheratan.db`).
//!
//! One writer thread owns the only writing connection and commits groups of operations in one
//! transaction each (group commit): throughput does not collapse to one commit per request,
//! and every answer is sent after its group is committed. The writer also keeps an in-memory
//! index of live jobs, so a lease is a B-tree lookup, not a table scan, however deep the queue.
//! Reads (`get`, `list`, pending results) use a small pool of read-only connections, which WAL
//! lets run beside the writer.
//!
//! Durability: WAL with `synchronous=NORMAL` (default) survives a crash of the hub process;
//! `SyncMode::Full` fsyncs each commit and survives power loss too.
//!
//! Hot statements: one INSERT per submitted job, one UPDATE … RETURNING payload per leased
//! job, one UPDATE per result, all by integer primary key.

mod auctions;
mod credentials;
mod db;
mod schedules;
mod schema;
mod side;
mod state;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use sheratan_proto::queues::{QueueSettings, QueueSettingsPatch};
use sheratan_store::{
    Clock, Counts, ExtendOutcome, FinishOutcome, HolderRule, JobRecord, JobSpec, LeaseGrant,
    LeaseOrder, ListFilter, QueueState, ResultReport, Store, StoreError, StoreLimits,
    SubmitOutcome, TickReport,
};
use time::OffsetDateTime;
use tokio::sync::oneshot;
use uuid::Uuid;

pub use auctions::SqliteAuctionStore;
pub use credentials::SqliteCredentialStore;
pub use schedules::SqliteScheduleStore;
pub use schema::SyncMode;

use crate::writer::{Op, Shared, WalGate, Writer, classify};

/// Settings of the SQLite store.
#[derive(Clone)]
pub struct SqliteConfig {
    pub path: PathBuf,
    pub sync: SyncMode,
    pub limits: StoreLimits,
    pub clock: Arc<dyn Clock>,
    /// Read-only connections for `get`, `list` and pending results.
    pub readers: usize,
    /// Frames (pages) the WAL may hold before the checkpointer makes the writer start it
    /// again (see `start_checkpointer`).
    pub wal_restart_frames: i64,
}

impl SqliteConfig {
    pub fn new(path: impl Into<PathBuf>, clock: Arc<dyn Clock>) -> Self {
        Self {
            path: path.into(),
            sync: SyncMode::Normal,
            limits: StoreLimits::default(),
            clock,
            readers: 2,
            wal_restart_frames: WAL_RESTART_FRAMES,
        }
    }
}

pub struct SqliteStore {
    ops: Mutex<Option<mpsc::Sender<Op>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
    shared: Arc<Shared>,
    readers: Arc<ReadPool>,
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open the job store {path}: {message}")]
pub struct OpenError {
    pub path: PathBuf,
    pub message: String,
}

/// Job payloads and results can be as secret as the token: the database and its WAL and
/// shared-memory files are readable by their owner only (SQLite gives the WAL and shm files the
/// database's mode when it creates them). A file this process does not own keeps its mode.
fn make_private(db: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let path = with_suffix(db, suffix);
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
}

impl SqliteStore {
    /// Opens (creating and migrating) the database and starts the writer thread. Blocking:
    /// recovery reads every live job into memory.
    pub fn open(config: SqliteConfig) -> Result<SqliteStore, OpenError> {
        let fail = |message: String| OpenError {
            path: config.path.clone(),
            message,
        };
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        }
        let mut conn = Connection::open(&config.path).map_err(|e| fail(e.to_string()))?;
        make_private(&config.path);
        schema::configure(&conn, config.sync).map_err(|e| fail(e.to_string()))?;
        schema::migrate(&mut conn).map_err(|e| fail(e.to_string()))?;
        // Checkpoints move to their own thread: the writer only appends to the WAL.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|e| fail(e.to_string()))?;
        let (ready, _) = tokio::sync::watch::channel(0u64);
        let (finished, _) = tokio::sync::watch::channel(0u64);
        let shared = Arc::new(Shared {
            counts: Mutex::new(Counts::default()),
            timings: Default::default(),
            ready,
            finished,
            wal_gate: WalGate::default(),
        });
        let checkpointer =
            start_checkpointer(&config, shared.clone()).map_err(|e| fail(e.to_string()))?;
        let writer = Writer::open(conn, config.clock.clone(), config.limits, shared.clone())
            .map_err(|e| fail(format!("recovering live jobs: {e}")))?;
        let mut readers = Vec::new();
        for _ in 0..config.readers.max(1) {
            let conn = Connection::open_with_flags(
                &config.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| fail(e.to_string()))?;
            conn.pragma_update(None, "busy_timeout", 5000)
                .map_err(|e| fail(e.to_string()))?;
            readers.push(conn);
        }
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| fail(e.to_string()))?;
        Ok(SqliteStore {
            ops: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            checkpointer: Mutex::new(Some(checkpointer)),
            shared,
            readers: Arc::new(ReadPool {
                idle: Mutex::new(readers),
                path: config.path.clone(),
            }),
            path: config.path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops taking operations, lets the writer finish what it has, and waits for it.
    pub fn close(&self) {
        self.ops.lock().expect("ops lock").take();
        if let Some(handle) = self.writer.lock().expect("writer lock").take() {
            let _ = handle.join();
        }
        if let Some((stop, handle)) = self.checkpointer.lock().expect("checkpointer lock").take() {
            drop(stop);
            let _ = handle.join();
        }
    }

    async fn call<T>(&self, op: impl FnOnce(writer::Reply<T>) -> Op) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .ops
            .lock()
            .expect("ops lock")
            .as_ref()
            .map(|tx| tx.send(op(reply)));
        match sent {
            Some(Ok(())) => {}
            _ => return Err(StoreError::Unavailable("the job store is closed".into())),
        }
        answer
            .await
            .map_err(|_| StoreError::Internal("the store's writer stopped".into()))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// Copies the WAL back into the database file in the background (SQLite's PASSIVE checkpoint:
/// never blocks the writer or readers), every 100 ms and once more at shutdown. Keeping this
/// off the writer thread keeps commits short: an automatic checkpoint inside a commit makes
/// every request of that group wait for it.
///
/// A checkpoint running beside a writer that keeps appending never catches up with it, and
/// SQLite starts the WAL again from its beginning only when a transaction begins with every
/// frame copied back: under steady load the WAL grew without end (1.7 GB in a 100,000-job
/// benchmark), every commit wrote to newly allocated file blocks, and the disk filled. So
/// once the WAL holds more than `wal_restart_frames` not all copied back, the checkpointer
/// copies what is left while the writer waits between two transactions ([`WalGate`]): the
/// writer waits for that short tail (the frames appended since the checkpoint just before
/// it), and its next transaction starts the WAL again, which is then overwritten in place
/// (`journal_size_limit` trims a WAL that grew past it). A reader that keeps an old snapshot
/// open can stop both the copy and the restart; see [`RestartPolicy`].
fn start_checkpointer(
    config: &SqliteConfig,
    shared: Arc<Shared>,
) -> rusqlite::Result<(mpsc::Sender<()>, std::thread::JoinHandle<()>)> {
    let conn = Connection::open(&config.path)?;
    schema::configure(&conn, config.sync)?;
    let wal = with_suffix(&config.path, "-wal");
    let mut policy = RestartPolicy::new(config.wal_restart_frames);
    let (stop, stopped) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("store-checkpoint".into())
        .spawn(move || {
            loop {
                let finished = matches!(
                    stopped.recv_timeout(std::time::Duration::from_millis(100)),
                    Err(mpsc::RecvTimeoutError::Disconnected)
                );
                if checkpoint(&conn).is_some_and(|wal| policy.due(wal)) {
                    flush(&wal);
                    let writer_waits = shared.wal_gate.pause();
                    let begun = std::time::Instant::now();
                    policy.tried(checkpoint(&conn));
                    drop(writer_waits);
                    let took = begun.elapsed();
                    shared.timings.wal_pause.observe_duration(took);
                    tracing::debug!(?took, "checkpointed the WAL's tail with the writer paused");
                }
                if finished {
                    return;
                }
            }
        })
        .map_err(|e| rusqlite::Error::InvalidParameterName(e.to_string()))?;
    Ok((stop, handle))
}

/// Frames the WAL may hold before the writer is paused to start it again: 32 MiB of 4 KiB
/// pages, half the `journal_size_limit`, so a WAL under steady load is overwritten in place,
/// never trimmed and grown again.
pub const WAL_RESTART_FRAMES: i64 = 8192;

/// What a PASSIVE checkpoint reports: the frames in the WAL and how many are copied back (of
/// those there when it began: beside a busy writer it reports all copied while the writer has
/// already appended more).
#[derive(Debug, Clone, Copy)]
struct WalState {
    frames: i64,
    copied: i64,
}

/// When the checkpointer pauses the writer.
struct RestartPolicy {
    limit: i64,
    /// Frames past which the next pause is due.
    threshold: i64,
    /// The WAL's frames after the last pause.
    paused_at: Option<i64>,
}

impl RestartPolicy {
    fn new(limit: i64) -> Self {
        Self {
            limit,
            threshold: limit,
            paused_at: None,
        }
    }

    /// A large WAL that changed since the last pause. (Unchanged: nothing was written since
    /// it was all copied back, and the writer's next transaction starts it again by itself, so
    /// an idle hub with a large WAL is left alone.)
    fn due(&self, wal: WalState) -> bool {
        wal.frames > self.threshold && self.paused_at != Some(wal.frames)
    }

    /// After a paused checkpoint. One that could not copy everything back (a reader keeps an
    /// old snapshot open) is not tried again before the WAL grew by another `limit`, so a
    /// long read does not make the writer wait every 100 ms for nothing.
    fn tried(&mut self, after: Option<WalState>) {
        self.paused_at = after.map(|wal| wal.frames);
        self.threshold = match after {
            Some(wal) if wal.copied >= wal.frames => self.limit,
            Some(wal) => wal.frames + self.limit,
            None => self.threshold + self.limit,
        };
    }
}

/// Writes the WAL's dirty pages to the disk, so that the fsync SQLite does inside the
/// checkpoint the writer waits for has only the tail left to write. Only the WAL: closing a
/// descriptor of a file drops every POSIX lock the process holds on it, and SQLite holds its
/// locks on the database (and `-shm`) file, never on the WAL.
fn flush(wal: &Path) {
    if let Err(err) = std::fs::File::open(wal).and_then(|f| f.sync_data()) {
        tracing::debug!(%err, "flushing the WAL before a checkpoint");
    }
}

/// The database's own files beside it: `-wal`, `-shm`.
fn with_suffix(db: &Path, suffix: &str) -> PathBuf {
    let mut path = db.as_os_str().to_owned();
    path.push(suffix);
    PathBuf::from(path)
}

/// A PASSIVE checkpoint (`None` if it failed).
fn checkpoint(conn: &Connection) -> Option<WalState> {
    let state = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok(WalState {
            frames: r.get(1)?,
            copied: r.get(2)?,
        })
    });
    match state {
        Ok(state) => Some(state),
        Err(err) => {
            tracing::warn!(%err, "WAL checkpoint failed; will retry");
            None
        }
    }
}

/// Read-only connections, used one at a time from blocking threads.
struct ReadPool {
    idle: Mutex<Vec<Connection>>,
    path: PathBuf,
}

impl ReadPool {
    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().expect("read pool lock").pop() {
            return Ok(conn);
        }
        // All busy: one more for this read; it joins the pool afterwards.
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(classify)?;
        let _ = conn.pragma_update(None, "busy_timeout", 5000);
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().expect("read pool lock");
        if idle.len() < 8 {
            idle.push(conn);
        }
    }

    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.take()?;
            let out = f(&conn).map_err(classify);
            pool.give_back(conn);
            out
        })
        .await
        .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?
    }
}

#[async_trait]
impl Store for SqliteStore {
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
        self.readers.read(move |c| db::load_by_id(c, job_id)).await
    }

    async fn find_ids(&self, fragment: &str, limit: u32) -> Result<Vec<Uuid>, StoreError> {
        let hex = fragment.replace('-', "").to_ascii_uppercase();
        let wanted = fragment.to_owned();
        // Hyphens sit at fixed places, so matching the hex form finds every candidate; the
        // text check drops a fragment whose hyphens are elsewhere.
        let ids = self
            .readers
            .read(move |c| db::find_ids(c, &hex, limit))
            .await?;
        Ok(ids
            .into_iter()
            .filter(|id| {
                let text = id.to_string();
                text.starts_with(&wanted) || text.ends_with(&wanted)
            })
            .collect())
    }

    async fn list(&self, filter: ListFilter) -> Result<(Vec<JobRecord>, Option<Uuid>), StoreError> {
        let limit = filter.limit.clamp(1, 1000);
        let jobs = self
            .readers
            .read(move |c| db::list(c, &filter, limit))
            .await?;
        let next = (jobs.len() == limit as usize)
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
        let limit = limit.clamp(1, 1000);
        self.readers.read(move |c| db::pending(c, limit)).await
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
        self.readers.read(db::purged_through).await
    }

    async fn record_progress(&self, updates: Vec<(Uuid, String)>) -> Result<u64, StoreError> {
        self.call(|r| Op::Progress(updates, r)).await
    }

    async fn queue_settings(&self) -> Result<Vec<(String, QueueSettings)>, StoreError> {
        self.readers.read(db::queue_settings).await
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
        self.shared.counts.lock().expect("counts lock").clone()
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

#[cfg(test)]
mod restart_policy {
    use super::{RestartPolicy, WalState};

    fn wal(frames: i64, copied: i64) -> WalState {
        WalState { frames, copied }
    }

    #[test]
    fn pauses_for_a_large_wal_that_changed_and_backs_off_when_a_reader_holds_it() {
        let mut policy = RestartPolicy::new(100);
        assert!(!policy.due(wal(100, 100)), "not past the limit");
        assert!(policy.due(wal(101, 101)));
        policy.tried(Some(wal(120, 120)));
        assert!(
            !policy.due(wal(120, 120)),
            "idle since: the next write restarts it"
        );
        assert!(
            policy.due(wal(130, 130)),
            "written since, and not restarted"
        );
        assert!(
            policy.due(wal(101, 101)),
            "restarted, and past the limit again"
        );
        // A reader kept the tail: not again before another `limit` frames.
        policy.tried(Some(wal(150, 120)));
        assert!(!policy.due(wal(240, 240)));
        assert!(policy.due(wal(251, 251)));
        // Copied back: due at the limit again.
        policy.tried(Some(wal(260, 260)));
        assert!(policy.due(wal(101, 101)));
    }
}
