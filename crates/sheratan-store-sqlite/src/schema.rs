//! The database schema and its embedded, versioned migrations (`PRAGMA user_version`).
//!
//! Durable: every job (spec, status, attempt, lease, result, error, acknowledgement), every
//! idempotency key, and which queues are paused. Hot statements (one per submit, lease and
//! result) touch `jobs` by its integer primary key. Besides the job-id index, one partial
//! index covers unacknowledged results; live jobs are found at start by a scan (recovery
//! reads them all anyway), so no index moves with every status change.

use rusqlite::Connection;

/// Each entry moves the schema from version `i` to `i + 1`. Never edit a shipped entry; add one.
const MIGRATIONS: &[&str] = &[
    // 1: jobs, idempotency keys, paused queues.
    r#"
    CREATE TABLE jobs (
        id                    INTEGER PRIMARY KEY,   -- insertion order: FIFO within a priority
        job_id                BLOB NOT NULL UNIQUE,  -- UUIDv7, 16 bytes: sorts by creation time
        queue                 TEXT NOT NULL,
        kind                  TEXT NOT NULL,
        payload               TEXT NOT NULL,         -- JSON
        priority              INTEGER NOT NULL,
        required_capabilities TEXT NOT NULL,         -- JSON array, sorted
        idempotency_key       TEXT,
        max_attempts          INTEGER NOT NULL,
        timeout_s             INTEGER NOT NULL,
        run_at                INTEGER NOT NULL,      -- Unix ms
        status                INTEGER NOT NULL,      -- 0 accepted 1 in_progress 2 completed 3 failed 4 cancelled
        attempt               INTEGER NOT NULL,
        lease_id              BLOB,                  -- the live lease, or the last one
        lease_node            TEXT,
        lease_expires_at      INTEGER,
        created_at            INTEGER NOT NULL,
        updated_at            INTEGER NOT NULL,
        finished_at           INTEGER,
        result                TEXT,                  -- JSON
        error_message         TEXT,
        error_retryable       INTEGER,
        result_lease_id       BLOB,                  -- the lease whose result was recorded
        acked                 INTEGER NOT NULL DEFAULT 0
    );

    CREATE INDEX jobs_unacked ON jobs(finished_at, id) WHERE acked = 0 AND status >= 2;
    CREATE TABLE idempotency (
        key          TEXT PRIMARY KEY,
        job_id       BLOB NOT NULL,
        request_hash BLOB NOT NULL,
        created_at   INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX idempotency_age ON idempotency(created_at);
    CREATE TABLE queues (
        name   TEXT PRIMARY KEY,
        paused INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 2: the broker's auction records.
    r#"
    CREATE TABLE auctions (
        job_id     TEXT PRIMARY KEY,
        record     TEXT NOT NULL,                    -- JSON AuctionRecord
        updated_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX auctions_recent ON auctions(updated_at);
    "#,
    // Whether the submitter follows the result: an unfollowed job is stored acknowledged
    // when it finishes, so it never counts as a pending result.
    r#"
    ALTER TABLE jobs ADD COLUMN follow INTEGER NOT NULL DEFAULT 1;
    "#,
    // Credentials with a role and a name; the secret only as its SHA-256.
    r#"
    CREATE TABLE credentials (
        name          TEXT PRIMARY KEY,
        role          TEXT NOT NULL,                 -- admin, node, submit, read
        queues        TEXT NOT NULL,                 -- JSON array
        secret_sha256 TEXT NOT NULL,
        signing_key   TEXT NOT NULL,                 -- hex HKDF of the secret: checks results
        created_at    INTEGER NOT NULL,              -- Unix ms
        expires_at    INTEGER,
        revoked_at    INTEGER,
        last_used_at  INTEGER
    ) WITHOUT ROWID;
    "#,
    // Running jobs (issue "Running jobs"): when a lease started (the run-time cap), the key
    // per-key limits group jobs by, a job's own retry backoff; a queue's settings as JSON.
    r#"
    ALTER TABLE jobs ADD COLUMN lease_started_at INTEGER;
    ALTER TABLE jobs ADD COLUMN concurrency_key TEXT;
    ALTER TABLE jobs ADD COLUMN retry_base_ms INTEGER;
    ALTER TABLE jobs ADD COLUMN retry_max_ms INTEGER;
    ALTER TABLE queues ADD COLUMN settings TEXT;
    "#,
    // A running job's latest progress (JSON of JobProgress), written coalesced by the hub.
    r#"
    ALTER TABLE jobs ADD COLUMN progress TEXT;
    "#,
    // Schedules: the spec as JSON, every tick up to done_until handled, the last run as JSON.
    r#"
    CREATE TABLE schedules (
        name       TEXT PRIMARY KEY,
        spec       TEXT NOT NULL,
        done_until INTEGER NOT NULL,                 -- Unix ms
        last_run   TEXT,
        last_job   TEXT,
        runs       INTEGER NOT NULL DEFAULT 0,
        skipped    INTEGER NOT NULL DEFAULT 0,
        missed     INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // Retention: finished jobs by when they finished (a purge takes the oldest first), and the
    // newest id a purge deleted (what a 404 says was purged).
    r#"
    CREATE INDEX jobs_finished ON jobs(finished_at) WHERE status >= 2;
    CREATE TABLE retention_mark (
        id     INTEGER PRIMARY KEY CHECK (id = 1),
        newest BLOB NOT NULL
    );
    "#,
    // Traces: the W3C traceparent a job carries from its submitter to the node that runs it.
    r#"
    ALTER TABLE jobs ADD COLUMN traceparent TEXT;
    "#,
];

/// Databases up to this size are converted to incremental vacuum when opened (one `VACUUM`);
/// larger ones are left as they are, with a warning saying how.
const CONVERT_UP_TO_BYTES: i64 = 256 << 20;

/// Pages freed by deletes (retention) go back to the file system: a new database is made
/// with `auto_vacuum = INCREMENTAL` (it must be set before the first table), and an older one
/// converted when small enough. The writer then gives freed pages back after each purge.
fn incremental_vacuum(conn: &Connection, version: usize) -> rusqlite::Result<()> {
    let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    if mode == 2 {
        return Ok(());
    }
    if version == 0 {
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if tables == 0 {
            return conn.pragma_update(None, "auto_vacuum", "INCREMENTAL");
        }
    }
    let bytes: i64 = conn.query_row(
        "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size",
        [],
        |r| r.get(0),
    )?;
    if bytes > CONVERT_UP_TO_BYTES {
        tracing::warn!(
            bytes,
            "this job store was made before retention gave disk space back: deleted jobs' space is reused but the file does not shrink; to convert it, stop the hub and run: sqlite3 sheratan.db 'PRAGMA auto_vacuum=INCREMENTAL; VACUUM;'"
        );
        return Ok(());
    }
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    if let Err(err) = conn.execute_batch("VACUUM") {
        // Another connection busy on the file: the next open tries again.
        tracing::warn!(%err, "could not convert the job store to incremental vacuum this time");
    }
    Ok(())
}

/// Brings the database to the current schema, each migration in its own transaction.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: usize =
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if version > MIGRATIONS.len() {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the database schema is version {version}, newer than this binary knows ({}); use a newer sheratan",
            MIGRATIONS.len()
        )));
    }
    incremental_vacuum(conn, version)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// How hard a commit tries to reach the disk (`SHERATAN_SYNC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// WAL, `synchronous=NORMAL`: a commit is in the OS's hands when the call returns. It
    /// survives the hub process crashing (`kill -9`), not the machine losing power.
    #[default]
    Normal,
    /// WAL, `synchronous=FULL`: the WAL is fsynced at every commit (one fsync per group of
    /// operations). It survives power loss too.
    Full,
}

/// Connection settings shared by the writer and the readers.
pub fn configure(conn: &Connection, sync: SyncMode) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match sync {
            SyncMode::Normal => "NORMAL",
            SyncMode::Full => "FULL",
        },
    )?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // SQLite's default page cache (about 2 MiB). A larger one looks tempting but costs more
    // than it saves here: at every commit SQLite walks the whole page-cache hash table
    // (pcache1TruncateUnsafe), which took 16 % of the hub's CPU with 64 MiB. The hot pages
    // are few: the rightmost leaves of the tables, since rows and UUIDv7 keys only append.
    conn.pragma_update(None, "cache_size", -2000)?;
    // A WAL that grew past this (a long burst) is cut back to it when it starts again.
    conn.pragma_update(None, "journal_size_limit", 64 << 20)?;
    Ok(())
}
