//! The broker's auction records on SQLite: one small table beside the jobs, written through
//! its own connection (a broker process does not need the job store's writer or index).

use std::path::Path;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use sheratan_proto::auction::AuctionRecord;
use sheratan_store::{AuctionStore, StoreError};

use crate::schema::SyncMode;
use crate::side::Side;

pub struct SqliteAuctionStore {
    side: Side,
}

impl SqliteAuctionStore {
    /// Opens (creating and migrating) the database at `path`; it may be the hub's own.
    pub fn open(path: &Path, sync: SyncMode) -> Result<Self, StoreError> {
        Ok(Self {
            side: Side::open(path, sync)?,
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.side.with(f).await
    }
}

#[async_trait]
impl AuctionStore for SqliteAuctionStore {
    async fn save_auction(&self, record: &AuctionRecord) -> Result<(), StoreError> {
        let json =
            serde_json::to_string(record).map_err(|e| StoreError::Internal(e.to_string()))?;
        let job_id = record.job_id.clone();
        let now = crate::db::ms(time::OffsetDateTime::now_utc());
        self.with(move |c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO auctions (job_id, record, updated_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![job_id, json, now])
            .map(|_| ())
        })
        .await
    }

    async fn auction(&self, job_id: &str) -> Result<Option<AuctionRecord>, StoreError> {
        let job_id = job_id.to_owned();
        let text: Option<String> = self
            .with(move |c| {
                c.prepare_cached("SELECT record FROM auctions WHERE job_id = ?1")?
                    .query_row([job_id], |r| r.get(0))
                    .optional()
            })
            .await?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    async fn auctions(&self, limit: u32) -> Result<Vec<AuctionRecord>, StoreError> {
        let texts: Vec<String> = self
            .with(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT record FROM auctions ORDER BY updated_at DESC LIMIT ?1",
                )?;
                let rows = stmt.query_map([limit.clamp(1, 1000)], |r| r.get(0))?;
                rows.collect()
            })
            .await?;
        Ok(texts
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect())
    }
}
