//! SQL of the job store: one function per statement, all through the connection's prepared
//! statement cache. Times are Unix milliseconds; ids are 16-byte UUID blobs.

use rusqlite::{Connection, OptionalExtension, Row, params};
use sheratan_proto::data::{JobError, JobStatus};
use sheratan_proto::queues::QueueSettings;
use sheratan_store::jobs::{Ending, Reaccept};
use sheratan_store::{JobRecord, JobSpec, Lease};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::state::RowId;

pub fn ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

pub fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub fn status_code(status: JobStatus) -> i64 {
    match status {
        JobStatus::Accepted => 0,
        JobStatus::InProgress => 1,
        JobStatus::Completed => 2,
        JobStatus::Failed => 3,
        JobStatus::Cancelled => 4,
    }
}

pub fn status_of(code: i64) -> JobStatus {
    match code {
        0 => JobStatus::Accepted,
        1 => JobStatus::InProgress,
        2 => JobStatus::Completed,
        3 => JobStatus::Failed,
        _ => JobStatus::Cancelled,
    }
}

fn uuid_of(bytes: Vec<u8>) -> rusqlite::Result<Uuid> {
    Uuid::from_slice(&bytes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

pub fn insert_job(conn: &Connection, spec: &JobSpec, now: i64) -> rusqlite::Result<RowId> {
    let caps = serde_json::to_string(&spec.required_capabilities).expect("strings serialize");
    conn.prepare_cached(
        "INSERT INTO jobs (job_id, queue, kind, payload, priority, required_capabilities, \
         idempotency_key, max_attempts, timeout_s, run_at, status, attempt, created_at, updated_at, \
         follow, concurrency_key, retry_base_ms, retry_max_ms, traceparent) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, 0, ?11, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?
    .execute(params![
        spec.job_id.as_bytes(),
        spec.queue,
        spec.kind,
        spec.payload,
        spec.priority,
        caps,
        spec.idempotency_key,
        spec.max_attempts,
        spec.timeout_s,
        ms(spec.run_at),
        now,
        spec.follow,
        spec.concurrency_key,
        spec.retry_base_ms.map(|v| v as i64),
        spec.retry_max_ms.map(|v| v as i64),
        spec.traceparent,
    ])?;
    Ok(conn.last_insert_rowid())
}

pub fn idempotency_lookup(
    conn: &Connection,
    key: &str,
) -> rusqlite::Result<Option<(Uuid, Vec<u8>)>> {
    conn.prepare_cached("SELECT job_id, request_hash FROM idempotency WHERE key = ?1")?
        .query_row([key], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .optional()?
        .map(|(id, hash)| Ok((uuid_of(id)?, hash)))
        .transpose()
}

pub fn idempotency_insert(
    conn: &Connection,
    key: &str,
    job_id: Uuid,
    hash: &[u8],
    now: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO idempotency (key, job_id, request_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![key, job_id.as_bytes(), hash, now])?;
    Ok(())
}

pub fn expire_idempotency(conn: &Connection, before: i64) -> rusqlite::Result<u64> {
    Ok(conn
        .prepare_cached("DELETE FROM idempotency WHERE created_at < ?1")?
        .execute([before])? as u64)
}

/// A job's row id, status, last lease and acknowledgement, by its public id.
pub struct Brief {
    pub row: RowId,
    pub status: JobStatus,
    /// The lease whose result was recorded last, to recognise a repeated result.
    pub result_lease_id: Option<Uuid>,
    pub result: Option<String>,
    pub acked: bool,
}

pub fn brief(conn: &Connection, job_id: Uuid) -> rusqlite::Result<Option<Brief>> {
    conn.prepare_cached(
        "SELECT id, status, result_lease_id, result, acked FROM jobs WHERE job_id = ?1",
    )?
    .query_row([job_id.as_bytes()], |r| {
        Ok(Brief {
            row: r.get(0)?,
            status: status_of(r.get(1)?),
            result_lease_id: r.get::<_, Option<Vec<u8>>>(2)?.map(uuid_of).transpose()?,
            result: r.get(3)?,
            acked: r.get::<_, i64>(4)? != 0,
        })
    })
    .optional()
}

pub fn idempotency_delete(conn: &Connection, key: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM idempotency WHERE key = ?1")?
        .execute([key])?;
    Ok(())
}

pub fn set_leased(
    conn: &Connection,
    row: RowId,
    attempt: u32,
    lease_id: Uuid,
    node: &str,
    expires: i64,
    now: i64,
) -> rusqlite::Result<(String, i64, Option<String>)> {
    // Also its run_at: when it was due (submitted, delayed, retried), for the queue-wait metric,
    // and the trace context it carries.
    conn.prepare_cached(
        "UPDATE jobs SET status = 1, attempt = ?2, lease_id = ?3, lease_node = ?4, \
         lease_expires_at = ?5, updated_at = ?6, lease_started_at = ?6, progress = NULL \
         WHERE id = ?1 RETURNING payload, run_at, traceparent",
    )?
    .query_row(
        params![row, attempt, lease_id.as_bytes(), node, expires, now],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
}

pub fn set_lease_expiry(
    conn: &Connection,
    row: RowId,
    expires: i64,
    now: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE jobs SET lease_expires_at = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![row, expires, now])?;
    Ok(())
}

/// Ends a job: completed, failed or cancelled.
pub fn finish(conn: &Connection, row: RowId, end: &Ending<'_>, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE jobs SET status = ?2, result = ?3, error_message = ?4, error_retryable = ?5, \
         finished_at = ?6, updated_at = ?6, acked = ?7, \
         result_lease_id = COALESCE(?8, result_lease_id) WHERE id = ?1",
    )?
    .execute(params![
        row,
        status_code(end.status),
        end.result,
        end.error.map(|e| e.message.as_str()),
        end.error.map(|e| e.retryable),
        now,
        end.acked,
        end.result_lease.map(|l| l.as_bytes().to_vec()),
    ])?;
    Ok(())
}

/// What the index keeps of a job beyond its record: whether its submitter follows its result
/// (`follow_result`), its own retry backoff.
pub struct Extras {
    pub follow: bool,
    pub retry_base_ms: Option<u64>,
    pub retry_max_ms: Option<u64>,
}

pub fn extras(conn: &Connection, row: RowId) -> rusqlite::Result<Extras> {
    conn.prepare_cached("SELECT follow, retry_base_ms, retry_max_ms FROM jobs WHERE id = ?1")?
        .query_row([row], |r| {
            Ok(Extras {
                follow: r.get(0)?,
                retry_base_ms: r.get::<_, Option<i64>>(1)?.map(|v| v as u64),
                retry_max_ms: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
            })
        })
}

/// Puts a job back to accepted, to run at `run_at`.
pub fn reaccept(
    conn: &Connection,
    row: RowId,
    back: &Reaccept<'_>,
    now: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE jobs SET status = 0, run_at = ?2, error_message = ?3, error_retryable = ?4, \
         attempt = CASE WHEN ?5 THEN 0 ELSE attempt END, finished_at = NULL, \
         result = CASE WHEN ?5 THEN NULL ELSE result END, acked = 0, updated_at = ?6, \
         result_lease_id = COALESCE(?7, result_lease_id) WHERE id = ?1",
    )?
    .execute(params![
        row,
        back.run_at,
        back.error.map(|e| e.message.as_str()),
        back.error.map(|e| e.retryable),
        back.reset_attempts,
        now,
        back.result_lease.map(|l| l.as_bytes().to_vec()),
    ])?;
    Ok(())
}

/// Marks unacknowledged finished jobs acknowledged; true if it was pending.
pub fn ack(conn: &Connection, job_id: Uuid) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE jobs SET acked = 1 WHERE job_id = ?1 AND status >= 2 AND acked = 0",
        )?
        .execute([job_id.as_bytes()])?
        > 0)
}

/// Deletes a finished job; `Some(acked)` when it was there to delete.
pub fn delete_finished(conn: &Connection, job_id: Uuid) -> rusqlite::Result<Option<bool>> {
    conn.prepare_cached("DELETE FROM jobs WHERE job_id = ?1 AND status >= 2 RETURNING acked")?
        .query_row([job_id.as_bytes()], |r| r.get::<_, i64>(0).map(|a| a != 0))
        .optional()
}

/// One retention delete: at most `limit` jobs of `pass`, oldest finished first; their ids and
/// whether each was acknowledged.
pub fn expire(
    conn: &Connection,
    pass: &sheratan_store::retention::Pass<'_>,
    limit: u64,
) -> rusqlite::Result<Vec<(Uuid, bool)>> {
    use sheratan_store::retention::Scope;
    // Status codes are the store's own constants, never input.
    let statuses: Vec<String> = pass.statuses.iter().map(|s| s.to_string()).collect();
    let mut args: Vec<rusqlite::types::Value> = vec![pass.before_ms.into(), (limit as i64).into()];
    let scope = match &pass.scope {
        Scope::Queue(queue) => {
            args.push(queue.to_string().into());
            "AND queue = ?3".to_owned()
        }
        Scope::Others(queues) if queues.is_empty() => String::new(),
        Scope::Others(queues) => {
            let marks: Vec<String> = (0..queues.len()).map(|i| format!("?{}", i + 3)).collect();
            args.extend(queues.iter().map(|q| q.to_string().into()));
            format!("AND queue NOT IN ({})", marks.join(", "))
        }
    };
    // `status >= 2` lets SQLite use the partial index jobs_finished.
    let sql = format!(
        "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE status >= 2 AND status IN ({}) \
         AND finished_at < ?1 {scope} ORDER BY finished_at LIMIT ?2) RETURNING job_id, acked",
        statuses.join(", ")
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
        Ok((uuid_of(r.get(0)?)?, r.get::<_, i64>(1)? != 0))
    })?;
    rows.collect()
}

/// Keeps the newest id retention deleted (never moving back).
pub fn note_purged(conn: &Connection, newest: Uuid) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO retention_mark (id, newest) VALUES (1, ?1) \
         ON CONFLICT (id) DO UPDATE SET newest = max(newest, excluded.newest)",
    )?
    .execute([newest.as_bytes()])?;
    Ok(())
}

/// The newest id retention deleted.
pub fn purged_through(conn: &Connection) -> rusqlite::Result<Option<Uuid>> {
    conn.prepare_cached("SELECT newest FROM retention_mark WHERE id = 1")?
        .query_row([], |r| uuid_of(r.get(0)?))
        .optional()
}

/// Records a running job's progress (JSON).
pub fn set_progress(conn: &Connection, row: RowId, json: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE jobs SET progress = ?2 WHERE id = ?1")?
        .execute(params![row, json])?;
    Ok(())
}

/// Writes a queue's settings: `paused` in its column, the rest as JSON.
pub fn put_queue_settings(
    conn: &Connection,
    queue: &str,
    settings: &QueueSettings,
) -> rusqlite::Result<()> {
    let json = serde_json::to_string(settings).expect("settings serialize");
    conn.prepare_cached(
        "INSERT OR REPLACE INTO queues (name, paused, settings) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![queue, settings.paused, json])?;
    Ok(())
}

/// Every queue with a row: its settings (a row from before settings existed has `paused` only).
pub fn queue_settings(conn: &Connection) -> rusqlite::Result<Vec<(String, QueueSettings)>> {
    let mut stmt =
        conn.prepare_cached("SELECT name, paused, settings FROM queues ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        let json: Option<String> = r.get(2)?;
        let mut settings: QueueSettings = json
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default();
        settings.paused = r.get(1)?;
        Ok((r.get(0)?, settings))
    })?;
    rows.collect()
}

pub fn count_unacked(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT COUNT(*) FROM jobs WHERE acked = 0 AND status >= 2",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as u64)
}

/// One live job as stored, for rebuilding the in-memory index.
pub struct LiveRow {
    pub row: RowId,
    pub job_id: Uuid,
    pub queue: String,
    pub kind: String,
    pub priority: i32,
    pub caps: Vec<String>,
    pub attempt: u32,
    pub max_attempts: u32,
    pub timeout_s: u32,
    pub run_at: i64,
    pub status: JobStatus,
    /// Lease id, holder, expiry, start.
    pub lease: Option<(Uuid, String, i64, i64)>,
    pub follow: bool,
    pub key: Option<String>,
    pub retry_base_ms: Option<u64>,
    pub retry_max_ms: Option<u64>,
}

pub fn live_jobs(conn: &Connection) -> rusqlite::Result<Vec<LiveRow>> {
    let mut stmt = conn.prepare(
        "SELECT id, job_id, queue, kind, priority, required_capabilities, attempt, max_attempts, \
         timeout_s, run_at, status, lease_id, lease_node, lease_expires_at, follow, \
         lease_started_at, concurrency_key, retry_base_ms, retry_max_ms \
         FROM jobs WHERE status IN (0, 1) ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        let caps: String = r.get(5)?;
        let lease_id: Option<Vec<u8>> = r.get(11)?;
        let lease = match lease_id {
            Some(id) if r.get::<_, i64>(10)? == 1 => Some((
                uuid_of(id)?,
                r.get::<_, Option<String>>(12)?.unwrap_or_default(),
                r.get::<_, Option<i64>>(13)?.unwrap_or(0),
                // A lease taken before starts were recorded has no run-time cap.
                r.get::<_, Option<i64>>(15)?.unwrap_or(i64::MAX / 4),
            )),
            _ => None,
        };
        Ok(LiveRow {
            row: r.get(0)?,
            job_id: uuid_of(r.get(1)?)?,
            queue: r.get(2)?,
            kind: r.get(3)?,
            priority: r.get(4)?,
            caps: serde_json::from_str(&caps).unwrap_or_default(),
            attempt: r.get(6)?,
            max_attempts: r.get(7)?,
            timeout_s: r.get(8)?,
            run_at: r.get(9)?,
            status: status_of(r.get(10)?),
            lease,
            follow: r.get(14)?,
            key: r.get(16)?,
            retry_base_ms: r.get::<_, Option<i64>>(17)?.map(|v| v as u64),
            retry_max_ms: r.get::<_, Option<i64>>(18)?.map(|v| v as u64),
        })
    })?;
    rows.collect()
}

/// The columns [`record`] reads, in order.
pub const RECORD_COLUMNS: &str = "job_id, queue, kind, payload, priority, required_capabilities, \
    idempotency_key, max_attempts, timeout_s, run_at, status, attempt, created_at, updated_at, \
    finished_at, result, error_message, error_retryable, lease_id, lease_node, lease_expires_at, acked, concurrency_key, progress";

pub fn record(r: &Row<'_>) -> rusqlite::Result<JobRecord> {
    let caps: String = r.get(5)?;
    let lease_id: Option<Vec<u8>> = r.get(18)?;
    let lease = match lease_id {
        Some(id) => Some(Lease {
            lease_id: uuid_of(id)?,
            node_id: r.get::<_, Option<String>>(19)?.unwrap_or_default(),
            expires_at: from_ms(r.get::<_, Option<i64>>(20)?.unwrap_or(0)),
        }),
        None => None,
    };
    let error_message: Option<String> = r.get(16)?;
    Ok(JobRecord {
        job_id: uuid_of(r.get(0)?)?,
        queue: r.get(1)?,
        kind: r.get(2)?,
        payload: r.get(3)?,
        priority: r.get(4)?,
        required_capabilities: serde_json::from_str(&caps).unwrap_or_default(),
        idempotency_key: r.get(6)?,
        max_attempts: r.get(7)?,
        timeout_s: r.get(8)?,
        run_at: from_ms(r.get(9)?),
        status: status_of(r.get(10)?),
        attempt: r.get(11)?,
        created_at: from_ms(r.get(12)?),
        updated_at: from_ms(r.get(13)?),
        finished_at: r.get::<_, Option<i64>>(14)?.map(from_ms),
        result: r.get(15)?,
        error: error_message.map(|message| JobError {
            message,
            retryable: r.get::<_, Option<bool>>(17).ok().flatten().unwrap_or(false),
        }),
        lease,
        result_acked: r.get::<_, i64>(21)? != 0,
        concurrency_key: r.get(22)?,
        progress: r.get(23)?,
    })
}

pub fn load_by_id(conn: &Connection, job_id: Uuid) -> rusqlite::Result<Option<JobRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {RECORD_COLUMNS} FROM jobs WHERE job_id = ?1"
    ))?
    .query_row([job_id.as_bytes()], record)
    .optional()
}

/// Ids whose hex form starts or ends with `hex` (uppercase, no hyphens), newest first.
/// A scan of the jobs table: operators' short ids only.
pub fn find_ids(conn: &Connection, hex: &str, limit: u32) -> rusqlite::Result<Vec<Uuid>> {
    let mut stmt = conn.prepare_cached(
        "SELECT job_id FROM jobs WHERE hex(job_id) LIKE ?1 || '%' OR hex(job_id) LIKE '%' || ?1 \
         ORDER BY job_id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![hex, limit], |row| uuid_of(row.get(0)?))?;
    rows.collect()
}

pub fn list(
    conn: &Connection,
    filter: &sheratan_store::ListFilter,
    limit: u32,
) -> rusqlite::Result<Vec<JobRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RECORD_COLUMNS} FROM jobs \
         WHERE (?1 IS NULL OR queue = ?1) AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR job_id < ?3) \
           AND (?5 IS NULL OR kind = ?5) AND (?6 IS NULL OR instr(lower(error_message), lower(?6)) > 0) \
           AND (?7 IS NULL OR updated_at >= ?7) \
         ORDER BY job_id DESC LIMIT ?4"
    ))?;
    let rows = stmt.query_map(
        params![
            filter.queue,
            filter.status.map(status_code),
            filter.before.map(|b| b.as_bytes().to_vec()),
            limit,
            filter.kind,
            filter.error,
            filter.since.map(ms),
        ],
        record,
    )?;
    rows.collect()
}

pub fn pending(conn: &Connection, limit: u32) -> rusqlite::Result<Vec<JobRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RECORD_COLUMNS} FROM jobs WHERE acked = 0 AND status >= 2 \
         ORDER BY finished_at, id LIMIT ?1"
    ))?;
    let rows = stmt.query_map([limit], record)?;
    rows.collect()
}

/// Issue 22 asked for results applied in set-based statements per group, as on PostgreSQL.
/// On SQLite a statement is a function call into the same process, not a round trip, so
/// what a set saves is only the statement's setup. This measures that against the
/// per-row statement the writer runs (docs/PERFORMANCE.md has the figures; not built: no
/// gain), and checks that both leave the same rows:
/// `cargo test --release -p sheratan-store-sqlite -- --ignored --nocapture set_based`
#[cfg(test)]
mod set_based {
    use super::*;
    use std::time::{Duration, Instant};

    const JOBS: usize = 40_000;

    fn leased_jobs(dir: &std::path::Path, name: &str) -> Connection {
        let mut conn = Connection::open(dir.join(name)).unwrap();
        crate::schema::configure(&conn, crate::SyncMode::Normal).unwrap();
        crate::schema::migrate(&mut conn).unwrap();
        conn.execute_batch("BEGIN").unwrap();
        for i in 0..JOBS {
            let wire =
                serde_json::from_value(serde_json::json!({"kind": "echo", "payload": {"i": i}}));
            let defaults = sheratan_store::JobDefaults::default();
            let spec = JobSpec::from_wire(wire.unwrap(), defaults, from_ms(0)).unwrap();
            let row = insert_job(&conn, &spec, 1).unwrap();
            set_leased(&conn, row, 1, lease_of(row), "n", 30_000, 2).unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
        conn
    }

    fn lease_of(row: RowId) -> Uuid {
        Uuid::from_u128(row as u128)
    }

    /// Finishes every job in groups of `group`, one transaction each, with `finish_group`.
    fn run(conn: &Connection, group: usize, finish_group: fn(&Connection, &[RowId])) -> Duration {
        let rows: Vec<RowId> = (1..=JOBS as RowId).collect();
        let begun = Instant::now();
        for chunk in rows.chunks(group) {
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            finish_group(conn, chunk);
            conn.execute_batch("COMMIT").unwrap();
        }
        begun.elapsed()
    }

    fn per_row(conn: &Connection, rows: &[RowId]) {
        for &row in rows {
            let lease = lease_of(row);
            let end = Ending {
                status: JobStatus::Completed,
                result: Some("{\"ok\":true}"),
                error: None,
                acked: false,
                result_lease: Some(lease),
            };
            finish(conn, row, &end, 3).unwrap();
        }
    }

    fn one_statement(conn: &Connection, rows: &[RowId]) {
        let values = vec!["(?, ?, ?)"; rows.len()].join(", ");
        let sql = format!(
            "WITH v(id, result, lease) AS (VALUES {values}) \
             UPDATE jobs SET status = 2, result = v.result, error_message = NULL, \
             error_retryable = NULL, finished_at = 3, updated_at = 3, acked = 0, \
             result_lease_id = COALESCE(v.lease, result_lease_id) FROM v WHERE jobs.id = v.id"
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::with_capacity(rows.len() * 3);
        for &row in rows {
            args.push(row.into());
            args.push("{\"ok\":true}".to_owned().into());
            args.push(lease_of(row).as_bytes().to_vec().into());
        }
        let mut statement = conn.prepare_cached(&sql).unwrap();
        let changed = statement.execute(rusqlite::params_from_iter(args)).unwrap();
        assert_eq!(changed, rows.len());
    }

    fn ended_rows(conn: &Connection) -> Vec<(i64, String, Vec<u8>, i64)> {
        let mut statement = conn
            .prepare("SELECT status, result, result_lease_id, acked FROM jobs ORDER BY id")
            .unwrap();
        statement
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    #[ignore = "a measurement: run it in release, by name"]
    fn set_based_finishes_against_one_statement_per_row() {
        let dir = tempfile::tempdir().unwrap();
        for group in [4, 8, 32, 128] {
            // Each way twice, in turns, each on a database of its own.
            let mut took = [Duration::ZERO; 2];
            let mut ended = Vec::new();
            for turn in 0..4 {
                let way = (turn + group) % 2;
                let conn = leased_jobs(dir.path(), &format!("{group}-{turn}.db"));
                took[way] += run(&conn, group, [per_row, one_statement][way]);
                ended.push(ended_rows(&conn));
            }
            assert!(
                ended.windows(2).all(|w| w[0] == w[1]),
                "both ways end the same rows"
            );
            let per_job = |d: Duration| d.as_secs_f64() * 1e6 / (2 * JOBS) as f64;
            println!(
                "groups of {group:>3}: one UPDATE per result {:.2} µs/job, one per group {:.2} µs/job",
                per_job(took[0]),
                per_job(took[1])
            );
        }
    }
}
