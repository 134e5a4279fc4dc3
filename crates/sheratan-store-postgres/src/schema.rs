//! Versioned migrations, embedded, applied at start under an advisory lock (several hubs may
//! start at once), each in its own transaction and recorded in `sheratan_migrations`: a
//! migration runs once, whichever hub gets there first.

use tokio_postgres::Client;

/// Times are Unix milliseconds (BIGINT) so the store's clock, not the database's, decides
/// what is due; statuses are 0 accepted, 1 in progress, 2 completed, 3 failed, 4 cancelled.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE jobs (
        id                    BIGSERIAL PRIMARY KEY,      -- insertion order: FIFO within a priority
        job_id                UUID NOT NULL UNIQUE,
        queue                 TEXT NOT NULL,
        kind                  TEXT NOT NULL,
        payload               TEXT NOT NULL,              -- JSON, kept byte for byte
        priority              INTEGER NOT NULL,
        required_capabilities TEXT[] NOT NULL,            -- sorted
        idempotency_key       TEXT,
        max_attempts          INTEGER NOT NULL,
        timeout_s             INTEGER NOT NULL,
        run_at                BIGINT NOT NULL,
        status                SMALLINT NOT NULL,
        attempt               INTEGER NOT NULL,
        lease_id              UUID,                       -- the live lease, or the last one
        lease_node            TEXT,
        lease_expires_at      BIGINT,
        created_at            BIGINT NOT NULL,
        updated_at            BIGINT NOT NULL,
        finished_at           BIGINT,
        result                TEXT,
        error_message         TEXT,
        error_retryable       BOOLEAN,
        result_lease_id       UUID,                       -- the lease whose result was recorded
        acked                 BOOLEAN NOT NULL DEFAULT FALSE
    );
    -- Leasing: ready jobs by priority, then age.
    CREATE INDEX jobs_ready ON jobs (priority DESC, id) WHERE status = 0;
    -- The reaper, extensions and results find live leases.
    CREATE INDEX jobs_leased ON jobs (lease_expires_at) WHERE status = 1;
    CREATE INDEX jobs_lease_id ON jobs (lease_id) WHERE status = 1;
    CREATE INDEX jobs_unacked ON jobs (finished_at, id) WHERE NOT acked AND status >= 2;
    CREATE INDEX jobs_queue_listing ON jobs (queue, job_id DESC);
    CREATE TABLE idempotency (
        key          TEXT PRIMARY KEY,
        job_id       UUID NOT NULL,
        request_hash BYTEA NOT NULL,
        created_at   BIGINT NOT NULL
    );
    CREATE INDEX idempotency_age ON idempotency (created_at);
    CREATE TABLE queues (
        name   TEXT PRIMARY KEY,
        paused BOOLEAN NOT NULL
    );
    CREATE TABLE auctions (
        job_id     TEXT PRIMARY KEY,
        record     TEXT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX auctions_recent ON auctions (updated_at);
    "#,
    // What several hubs share beyond jobs: the node registry (each hub's heartbeats, merged),
    // settings such as the token rotation, and bundles.
    r#"
    CREATE TABLE nodes (
        node_id    TEXT PRIMARY KEY,
        record     TEXT NOT NULL,                         -- JSON of the registry entry
        last_seen  BIGINT NOT NULL,
        hub        TEXT NOT NULL,                         -- the hub that wrote it last
        updated_at BIGINT NOT NULL,
        seq        BIGSERIAL
    );
    CREATE INDEX nodes_seq ON nodes (seq);
    CREATE TABLE settings (
        name       TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE TABLE bundles (
        name       TEXT PRIMARY KEY,
        sha256     TEXT NOT NULL,
        size       BIGINT NOT NULL,
        bytes      BYTEA NOT NULL,
        updated_at BIGINT NOT NULL
    );
    "#,
    // The tick counts delayed jobs that came due; without this it scanned every ready job.
    r#"
    CREATE INDEX jobs_delayed ON jobs (run_at) WHERE status = 0 AND run_at > created_at;
    "#,
    // Whether the submitter follows the result: an unfollowed job is stored acknowledged
    // when it finishes, so it never counts as a pending result.
    r#"
    ALTER TABLE jobs ADD COLUMN follow BOOLEAN NOT NULL DEFAULT TRUE;
    "#,
    // Credentials with a role and a name; the secret only as its SHA-256.
    r#"
    CREATE TABLE credentials (
        name          TEXT PRIMARY KEY,
        role          TEXT NOT NULL,
        queues        TEXT NOT NULL,                      -- JSON array
        secret_sha256 TEXT NOT NULL,
        signing_key   TEXT NOT NULL,                      -- hex HKDF of the secret
        created_at    BIGINT NOT NULL,                    -- Unix ms
        expires_at    BIGINT,
        revoked_at    BIGINT,
        last_used_at  BIGINT
    );
    "#,
    // Running jobs: when a lease started (the run-time cap), the key per-key limits group
    // jobs by, a job's own retry backoff; queue settings as JSON; rate-limit token buckets
    // (key '' is the queue's own), updated under the queue's advisory lock.
    r#"
    ALTER TABLE jobs ADD COLUMN lease_started_at BIGINT;
    ALTER TABLE jobs ADD COLUMN concurrency_key TEXT;
    ALTER TABLE jobs ADD COLUMN retry_base_ms BIGINT;
    ALTER TABLE jobs ADD COLUMN retry_max_ms BIGINT;
    ALTER TABLE queues ADD COLUMN settings TEXT;
    CREATE INDEX jobs_running_key ON jobs (queue, concurrency_key) WHERE status = 1;
    CREATE TABLE rate_buckets (
        queue  TEXT NOT NULL,
        key    TEXT NOT NULL,
        tokens DOUBLE PRECISION NOT NULL,
        at_ms  BIGINT NOT NULL,
        PRIMARY KEY (queue, key)
    );
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
        done_until BIGINT NOT NULL,
        last_run   TEXT,
        last_job   TEXT,
        runs       BIGINT NOT NULL DEFAULT 0,
        skipped    BIGINT NOT NULL DEFAULT 0,
        missed     BIGINT NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    "#,
    // Retention: finished jobs by when they finished (a purge takes the oldest first), and the
    // newest id a purge deleted (what a 404 says was purged).
    r#"
    CREATE INDEX jobs_finished ON jobs (finished_at) WHERE status >= 2;
    CREATE TABLE retention_mark (
        id     INTEGER PRIMARY KEY,
        newest UUID NOT NULL
    );
    "#,
    // Traces: the W3C traceparent a job carries from its submitter to the node that runs it.
    r#"
    ALTER TABLE jobs ADD COLUMN traceparent TEXT;
    "#,
];

/// The lock every hub takes while migrating.
const MIGRATION_LOCK: i64 = 0x5348_4552_4154_414E; // "SHERATAN"

pub async fn migrate(client: &mut Client) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS sheratan_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = apply(client).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result?;
    unlock?;
    Ok(())
}

async fn apply(client: &mut Client) -> Result<(), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM sheratan_migrations",
            &[],
        )
        .await?;
    let version: i32 = row.get(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO sheratan_migrations (version) VALUES ($1)",
            &[&((i + 1) as i32)],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version = i + 1, "postgres store: migration applied");
    }
    Ok(())
}

/// How many migrations this binary knows.
pub fn latest() -> usize {
    MIGRATIONS.len()
}
