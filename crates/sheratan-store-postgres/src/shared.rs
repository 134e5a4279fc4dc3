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
        Ok(Self {
            pool: side_pool(url, schema, 2).await?,
        })
    }
}

/// `size` connections of their own to the job store's database, migrated, for what lives
/// beside the jobs (shared hub state, auction records, credentials).
pub(crate) async fn side_pool(
    url: &str,
    schema: Option<String>,
    size: usize,
) -> Result<Pool, StoreError> {
    let target = Arc::new(Target {
        url: url.into(),
        schema,
    });
    let mut client = target.connect().await?;
    crate::schema::migrate(&mut client)
        .await
        .map_err(classify)?;
    Ok(Pool::new(target, size))
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

/// The state several hubs share, on PostgreSQL.
pub struct PgShared {
    pool: Pool,
}

impl PgShared {
    pub async fn open(url: &str, schema: Option<String>) -> Result<Self, StoreError> {
        Ok(Self {
            pool: side_pool(url, schema, 1).await?,
        })
    }
}

#[async_trait]
impl sheratan_store::SharedState for PgShared {
    async fn publish_nodes(
        &self,
        hub: &str,
        nodes: Vec<(String, String, i64)>,
    ) -> Result<(), StoreError> {
        if nodes.is_empty() {
            return Ok(());
        }
        let now = ms(time::OffsetDateTime::now_utc());
        let (ids, rest): (Vec<String>, Vec<(String, i64)>) = nodes
            .into_iter()
            .map(|(id, json, seen)| (id, (json, seen)))
            .unzip();
        let (records, seen): (Vec<String>, Vec<i64>) = rest.into_iter().unzip();
        let client = self.pool.get().await?;
        // One statement for the whole batch; an entry another hub heard from more recently
        // is left alone.
        client
            .execute(
                "INSERT INTO nodes (node_id, record, last_seen, hub, updated_at) \
                 SELECT id, rec, seen, $4, $5 FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[]) AS u(id, rec, seen) \
                 ON CONFLICT (node_id) DO UPDATE SET record = EXCLUDED.record, last_seen = EXCLUDED.last_seen, \
                   hub = EXCLUDED.hub, updated_at = EXCLUDED.updated_at, seq = nextval(pg_get_serial_sequence('nodes', 'seq')) \
                 WHERE nodes.last_seen < EXCLUDED.last_seen",
                &[&ids, &records, &seen, &hub, &now],
            )
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn nodes_since(&self, hub: &str, cursor: i64) -> Result<(Vec<String>, i64), StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT record, seq FROM nodes WHERE seq > $1 AND hub <> $2 ORDER BY seq LIMIT 10000",
                &[&cursor, &hub],
            )
            .await
            .map_err(classify)?;
        let next = rows.last().map_or(cursor, |r| r.get::<_, i64>(1));
        Ok((rows.iter().map(|r| r.get::<_, String>(0)).collect(), next))
    }

    async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt("SELECT value FROM settings WHERE name = $1", &[&name])
            .await
            .map_err(classify)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn put_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let now = ms(time::OffsetDateTime::now_utc());
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO settings (name, value, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
                &[&name, &value, &now],
            )
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn bundle_index(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT name, sha256, updated_at FROM bundles ORDER BY name",
                &[],
            )
            .await
            .map_err(classify)?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    async fn bundle_bytes(&self, name: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT sha256, bytes FROM bundles WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(classify)?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    async fn put_bundle(
        &self,
        name: &str,
        sha256: &str,
        bytes: &[u8],
        published_at: i64,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO bundles (name, sha256, size, bytes, updated_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (name) DO UPDATE SET sha256 = EXCLUDED.sha256, size = EXCLUDED.size, bytes = EXCLUDED.bytes, \
                   updated_at = EXCLUDED.updated_at WHERE bundles.updated_at < EXCLUDED.updated_at",
                &[&name, &sha256, &(bytes.len() as i64), &bytes, &published_at],
            )
            .await
            .map_err(classify)?;
        Ok(())
    }
}
