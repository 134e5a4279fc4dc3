//! What hubs and the broker share on the database beyond jobs: auction records.

use std::sync::Arc;

use async_trait::async_trait;
use sheratan_proto::auction::AuctionRecord;
use sheratan_store::{AuctionStore, StoreError};

use crate::conn::{Pool, Target, classify};
use crate::rows::ms;

/// The broker's auction records on PostgreSQL.
pub struct PgAuctionStore {
    pool: Pool,
}

impl PgAuctionStore {
    /// Connects and migrates (the same schema as the job store).
    pub async fn open(url: &str, schema: Option<String>) -> Result<Self, StoreError> {
        let target = Arc::new(Target {
            url: url.into(),
            schema,
        });
        let mut client = target.connect().await?;
        crate::schema::migrate(&mut client)
            .await
            .map_err(classify)?;
        Ok(Self {
            pool: Pool::new(target, 2),
        })
    }
}

#[async_trait]
impl AuctionStore for PgAuctionStore {
    async fn save_auction(&self, record: &AuctionRecord) -> Result<(), StoreError> {
        let json =
            serde_json::to_string(record).map_err(|e| StoreError::Internal(e.to_string()))?;
        let now = ms(time::OffsetDateTime::now_utc());
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO auctions (job_id, record, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (job_id) DO UPDATE SET record = EXCLUDED.record, updated_at = EXCLUDED.updated_at",
                &[&record.job_id, &json, &now],
            )
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn auction(&self, job_id: &str) -> Result<Option<AuctionRecord>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt("SELECT record FROM auctions WHERE job_id = $1", &[&job_id])
            .await
            .map_err(classify)?;
        Ok(row.and_then(|r| serde_json::from_str(r.get::<_, &str>(0)).ok()))
    }

    async fn auctions(&self, limit: u32) -> Result<Vec<AuctionRecord>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT record FROM auctions ORDER BY updated_at DESC, job_id DESC LIMIT $1",
                &[&i64::from(limit.clamp(1, 1000))],
            )
            .await
            .map_err(classify)?;
        Ok(rows
            .iter()
            .filter_map(|r| serde_json::from_str(r.get::<_, &str>(0)).ok())
            .collect())
    }
}
