//! Schedules on SQLite: one small table beside the jobs, through its own connection.

use std::path::Path;

use async_trait::async_trait;
use rusqlite::{Connection, params};
use sheratan_store::schedules::{from_json, to_json};
use sheratan_store::{ScheduleAdvance, ScheduleRecord, ScheduleStore, StoreError};
use time::OffsetDateTime;

use crate::db::{from_ms, ms};
use crate::schema::SyncMode;
use crate::side::Side;

pub struct SqliteScheduleStore {
    side: Side,
}

impl SqliteScheduleStore {
    /// Opens (creating and migrating) the database at `path`: the hub's own.
    pub fn open(path: &Path, sync: SyncMode) -> Result<Self, StoreError> {
        Ok(Self {
            side: Side::open(path, sync)?,
        })
    }
}

/// A row as read: (name, spec, done_until, last_run, runs, skipped, missed, created, updated,
/// last_job).
type Row = (
    String,
    String,
    i64,
    Option<String>,
    i64,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
);

fn record(row: Row) -> Result<ScheduleRecord, StoreError> {
    let (name, spec, done_until, last_run, runs, skipped, missed, created, updated, last_job) = row;
    Ok(ScheduleRecord {
        spec: from_json(&name, &spec)?,
        done_until: from_ms(done_until),
        last_run: last_run.map(|r| from_json(&name, &r)).transpose()?,
        last_job_id: last_job,
        runs: runs as u64,
        skipped: skipped as u64,
        missed: missed as u64,
        created_at: from_ms(created),
        updated_at: from_ms(updated),
    })
}

#[async_trait]
impl ScheduleStore for SqliteScheduleStore {
    async fn schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        let rows = self
            .side
            .with(|c: &Connection| {
                let mut stmt = c.prepare_cached(
                    "SELECT name, spec, done_until, last_run, runs, skipped, missed, created_at, updated_at, last_job \
                     FROM schedules ORDER BY name",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                        r.get(9)?,
                    ))
                })?;
                rows.collect::<rusqlite::Result<Vec<Row>>>()
            })
            .await?;
        rows.into_iter().map(record).collect()
    }

    async fn create_schedule(&self, r: ScheduleRecord) -> Result<bool, StoreError> {
        let spec = to_json(&r.spec)?;
        let last_run = r.last_run.as_ref().map(to_json).transpose()?;
        self.side
            .with(move |c| {
                let inserted = c
                    .prepare_cached(
                        "INSERT OR IGNORE INTO schedules \
                         (name, spec, done_until, last_run, runs, skipped, missed, created_at, updated_at, last_job) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    )?
                    .execute(params![
                        r.spec.name,
                        spec,
                        ms(r.done_until),
                        last_run,
                        r.runs as i64,
                        r.skipped as i64,
                        r.missed as i64,
                        ms(r.created_at),
                        ms(r.updated_at),
                        r.last_job_id,
                    ])?;
                Ok(inserted == 1)
            })
            .await
    }

    async fn update_schedule(
        &self,
        spec: sheratan_proto::schedules::ScheduleSpec,
        done_until: Option<OffsetDateTime>,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let name = spec.name.clone();
        let spec = to_json(&spec)?;
        self.side
            .with(move |c| {
                let changed = c
                    .prepare_cached(
                        "UPDATE schedules SET spec = ?2, done_until = COALESCE(?3, done_until), \
                         updated_at = ?4 WHERE name = ?1",
                    )?
                    .execute(params![name, spec, done_until.map(ms), ms(at)])?;
                Ok(changed == 1)
            })
            .await
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.side
            .with(move |c| {
                let deleted = c
                    .prepare_cached("DELETE FROM schedules WHERE name = ?1")?
                    .execute([name])?;
                Ok(deleted == 1)
            })
            .await
    }

    async fn advance_schedule(&self, a: ScheduleAdvance) -> Result<bool, StoreError> {
        let last_run = a.last_run.as_ref().map(to_json).transpose()?;
        self.side
            .with(move |c| {
                let changed = c
                    .prepare_cached(
                        "UPDATE schedules SET done_until = MAX(done_until, ?3), \
                         last_run = COALESCE(?4, last_run), runs = runs + ?5, \
                         skipped = skipped + ?6, missed = missed + ?7, \
                         last_job = COALESCE(?8, last_job) \
                         WHERE name = ?1 AND (?2 IS NULL OR done_until = ?2)",
                    )?
                    .execute(params![
                        a.name,
                        a.expect.map(ms),
                        ms(a.done_until),
                        last_run,
                        a.runs as i64,
                        a.skipped as i64,
                        a.missed as i64,
                        a.last_job_id,
                    ])?;
                Ok(changed == 1)
            })
            .await
    }
}
