//! Credentials on PostgreSQL: every hub on the database reads the same table (re-read whole
//! every second), so a revocation reaches all of them.

use async_trait::async_trait;
use sheratan_store::{CredentialRecord, CredentialStore, StoreError};
use time::OffsetDateTime;

use crate::conn::{Pool, classify};
use crate::rows::{from_ms, ms};

pub struct PgCredentialStore {
    pool: Pool,
}

impl PgCredentialStore {
    /// Connects and migrates (the same schema as the job store).
    pub async fn open(url: &str, schema: Option<String>) -> Result<Self, StoreError> {
        Ok(Self {
            pool: crate::shared::side_pool(url, schema, 2).await?,
        })
    }
}

fn record(r: &tokio_postgres::Row) -> Result<CredentialRecord, StoreError> {
    let bad = |what: String| StoreError::Internal(format!("credentials table: {what}"));
    Ok(CredentialRecord {
        name: r.get(0),
        role: r.get::<_, &str>(1).parse().map_err(bad)?,
        queues: serde_json::from_str(r.get::<_, &str>(2)).map_err(|e| bad(e.to_string()))?,
        secret_sha256: r.get(3),
        signing_key: r.get(4),
        created_at: from_ms(r.get(5)),
        expires_at: r.get::<_, Option<i64>>(6).map(from_ms),
        revoked_at: r.get::<_, Option<i64>>(7).map(from_ms),
        last_used_at: r.get::<_, Option<i64>>(8).map(from_ms),
    })
}

#[async_trait]
impl CredentialStore for PgCredentialStore {
    async fn credentials(&self) -> Result<Vec<CredentialRecord>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT name, role, queues, secret_sha256, signing_key, created_at, expires_at, revoked_at, last_used_at \
                 FROM credentials ORDER BY name",
                &[],
            )
            .await
            .map_err(classify)?;
        rows.iter().map(record).collect()
    }

    async fn create_credential(&self, record: CredentialRecord) -> Result<bool, StoreError> {
        let queues = serde_json::to_string(&record.queues)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let client = self.pool.get().await?;
        let inserted = client
            .execute(
                "INSERT INTO credentials \
                 (name, role, queues, secret_sha256, signing_key, created_at, expires_at, revoked_at, last_used_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (name) DO NOTHING",
                &[
                    &record.name,
                    &record.role.as_str(),
                    &queues,
                    &record.secret_sha256,
                    &record.signing_key,
                    &ms(record.created_at),
                    &record.expires_at.map(ms),
                    &record.revoked_at.map(ms),
                    &record.last_used_at.map(ms),
                ],
            )
            .await
            .map_err(classify)?;
        Ok(inserted == 1)
    }

    async fn put_credential(&self, record: CredentialRecord) -> Result<(), StoreError> {
        let queues = serde_json::to_string(&record.queues)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO credentials \
                 (name, role, queues, secret_sha256, signing_key, created_at, expires_at, revoked_at, last_used_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL) \
                 ON CONFLICT (name) DO UPDATE SET role = excluded.role, queues = excluded.queues, \
                 secret_sha256 = excluded.secret_sha256, signing_key = excluded.signing_key, \
                 created_at = excluded.created_at, expires_at = excluded.expires_at, \
                 revoked_at = NULL, last_used_at = NULL",
                &[
                    &record.name,
                    &record.role.as_str(),
                    &queues,
                    &record.secret_sha256,
                    &record.signing_key,
                    &ms(record.created_at),
                    &record.expires_at.map(ms),
                ],
            )
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn revoke_credential(&self, name: &str, at: OffsetDateTime) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                "UPDATE credentials SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
                &[&name, &ms(at)],
            )
            .await
            .map_err(classify)?;
        Ok(changed == 1)
    }

    async fn touch_credentials(
        &self,
        used: Vec<(String, OffsetDateTime)>,
    ) -> Result<(), StoreError> {
        let (names, times): (Vec<String>, Vec<i64>) =
            used.into_iter().map(|(n, t)| (n, ms(t))).unzip();
        let client = self.pool.get().await?;
        // One statement for the whole batch.
        client
            .execute(
                "UPDATE credentials c SET last_used_at = u.at \
                 FROM unnest($1::text[], $2::bigint[]) AS u(name, at) \
                 WHERE c.name = u.name AND (c.last_used_at IS NULL OR c.last_used_at < u.at)",
                &[&names, &times],
            )
            .await
            .map_err(classify)?;
        Ok(())
    }
}
