//! Rows to domain values.

use sheratan_proto::data::{JobError, JobStatus};
use sheratan_store::{JobRecord, Lease};
use time::OffsetDateTime;
use tokio_postgres::Row;

pub const RECORD_COLUMNS: &str = "job_id, queue, kind, payload, priority, required_capabilities, \
    idempotency_key, max_attempts, timeout_s, run_at, status, attempt, created_at, updated_at, \
    finished_at, result, error_message, error_retryable, lease_id, lease_node, lease_expires_at, acked, concurrency_key, progress";

pub fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub fn status_code(s: JobStatus) -> i16 {
    match s {
        JobStatus::Accepted => 0,
        JobStatus::InProgress => 1,
        JobStatus::Completed => 2,
        JobStatus::Failed => 3,
        JobStatus::Cancelled => 4,
    }
}

pub fn status_of(code: i16) -> JobStatus {
    match code {
        0 => JobStatus::Accepted,
        1 => JobStatus::InProgress,
        2 => JobStatus::Completed,
        3 => JobStatus::Failed,
        _ => JobStatus::Cancelled,
    }
}

/// A row of `SELECT {RECORD_COLUMNS}`.
pub fn record(r: &Row) -> JobRecord {
    let lease = r.get::<_, Option<uuid::Uuid>>(18).map(|lease_id| Lease {
        lease_id,
        node_id: r.get::<_, Option<String>>(19).unwrap_or_default(),
        expires_at: from_ms(r.get::<_, Option<i64>>(20).unwrap_or(0)),
    });
    JobRecord {
        job_id: r.get(0),
        queue: r.get(1),
        kind: r.get(2),
        payload: r.get(3),
        priority: r.get(4),
        required_capabilities: r.get(5),
        idempotency_key: r.get(6),
        max_attempts: r.get::<_, i32>(7) as u32,
        timeout_s: r.get::<_, i32>(8) as u32,
        run_at: from_ms(r.get(9)),
        status: status_of(r.get(10)),
        attempt: r.get::<_, i32>(11) as u32,
        created_at: from_ms(r.get(12)),
        updated_at: from_ms(r.get(13)),
        finished_at: r.get::<_, Option<i64>>(14).map(from_ms),
        result: r.get(15),
        error: r.get::<_, Option<String>>(16).map(|message| JobError {
            message,
            retryable: r.get::<_, Option<bool>>(17).unwrap_or(false),
        }),
        lease,
        result_acked: r.get(21),
        concurrency_key: r.get(22),
        progress: r.get(23),
    }
}
