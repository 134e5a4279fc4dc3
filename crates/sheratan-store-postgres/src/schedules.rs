//! Schedules on PostgreSQL: every hub on the database reads the same table, and a tick's
//! advance is a compare-and-set, so of two hubs passing one tick only one counts it.

use async_trait::async_trait;
use sheratan_proto::schedules::ScheduleSpec;
use sheratan_store::schedules::{from_json, to_json};
use sheratan_store::{ScheduleAdvance, ScheduleRecord, ScheduleStore, StoreError};
use time::OffsetDateTime;

use crate::conn::{Pool, classify};
use crate::rows::{from_ms, ms};

pub struct PgScheduleStore {
    pool: Pool,
}

impl PgScheduleStore {
    /// Connects and migrates (the same schema as the job store).
    pub async fn open(url: &str, schema: Option<String>) -> Result<Self, StoreError> {
        Ok(Self {
            pool: crate::shared::side_pool(url, schema, 2).await?,
        })
    }
}

fn record(r: &tokio_postgres::Row) -> Result<ScheduleRecord, StoreError> {
    let name: &str = r.get(0);
    Ok(ScheduleRecord {
        spec: from_json(name, r.get(1))?,
        done_until: from_ms(r.get(2)),
        last_run: r
            .get::<_, Option<&str>>(3)
            .map(|t| from_json(name, t))
            .transpose()?,
        last_job_id: r.get(9),
        runs: r.get::<_, i64>(4) as u64,
        skipped: r.get::<_, i64>(5) as u64,
        missed: r.get::<_, i64>(6) as u64,
        created_at: from_ms(r.get(7)),
        updated_at: from_ms(r.get(8)),
    })
}

#[async_trait]
impl ScheduleStore for PgScheduleStore {
    async fn schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT name, spec, done_until, last_run, runs, skipped, missed, created_at, updated_at, last_job \
                 FROM schedules ORDER BY name",
                &[],
            )
            .await
            .map_err(classify)?;
        rows.iter().map(record).collect()
    }

    async fn create_schedule(&self, r: ScheduleRecord) -> Result<bool, StoreError> {
        let spec = to_json(&r.spec)?;
        let last_run = r.last_run.as_ref().map(to_json).transpose()?;
        let client = self.pool.get().await?;
        let inserted = client
            .execute(
                "INSERT INTO schedules \
                 (name, spec, done_until, last_run, runs, skipped, missed, created_at, updated_at, last_job) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (name) DO NOTHING",
                &[
                    &r.spec.name,
                    &spec,
                    &ms(r.done_until),
                    &last_run,
                    &(r.runs as i64),
                    &(r.skipped as i64),
                    &(r.missed as i64),
                    &ms(r.created_at),
                    &ms(r.updated_at),
                    &r.last_job_id,
                ],
            )
            .await
            .map_err(classify)?;
        Ok(inserted == 1)
    }

    async fn update_schedule(
        &self,
        spec: ScheduleSpec,
        done_until: Option<OffsetDateTime>,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let json = to_json(&spec)?;
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                "UPDATE schedules SET spec = $2, done_until = COALESCE($3, done_until), \
                 updated_at = $4 WHERE name = $1",
                &[&spec.name, &json, &done_until.map(ms), &ms(at)],
            )
            .await
            .map_err(classify)?;
        Ok(changed == 1)
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let deleted = client
            .execute("DELETE FROM schedules WHERE name = $1", &[&name])
            .await
            .map_err(classify)?;
        Ok(deleted == 1)
    }

    async fn advance_schedule(&self, a: ScheduleAdvance) -> Result<bool, StoreError> {
        let last_run = a.last_run.as_ref().map(to_json).transpose()?;
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                "UPDATE schedules SET done_until = GREATEST(done_until, $3), \
                 last_run = COALESCE($4, last_run), runs = runs + $5, \
                 skipped = skipped + $6, missed = missed + $7, \
                 last_job = COALESCE($8, last_job) \
                 WHERE name = $1 AND ($2::BIGINT IS NULL OR done_until = $2)",
                &[
                    &a.name,
                    &a.expect.map(ms),
                    &ms(a.done_until),
                    &last_run,
                    &(a.runs as i64),
                    &(a.skipped as i64),
                    &(a.missed as i64),
                    &a.last_job_id,
                ],
            )
            .await
            .map_err(classify)?;
        Ok(changed == 1)
    }
}
