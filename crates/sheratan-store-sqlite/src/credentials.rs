//! Credentials on SQLite: one small table beside the jobs, through its own connection (read
//! whole by the hub every second; written when an operator creates or revokes one).

use std::path::Path;

use async_trait::async_trait;
use rusqlite::{Connection, params};
use sheratan_store::{CredentialRecord, CredentialStore, StoreError};
use time::OffsetDateTime;

use crate::db::{from_ms, ms};
use crate::schema::SyncMode;
use crate::side::Side;

pub struct SqliteCredentialStore {
    side: Side,
}

impl SqliteCredentialStore {
    /// Opens (creating and migrating) the database at `path`: the hub's own.
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

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CredentialRecord> {
    let role: String = r.get(1)?;
    let queues: String = r.get(2)?;
    let bad = |what: String| {
        rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, what.into())
    };
    Ok(CredentialRecord {
        name: r.get(0)?,
        role: role.parse().map_err(bad)?,
        queues: serde_json::from_str(&queues).map_err(|e| bad(e.to_string()))?,
        secret_sha256: r.get(3)?,
        signing_key: r.get(4)?,
        created_at: from_ms(r.get(5)?),
        expires_at: r.get::<_, Option<i64>>(6)?.map(from_ms),
        revoked_at: r.get::<_, Option<i64>>(7)?.map(from_ms),
        last_used_at: r.get::<_, Option<i64>>(8)?.map(from_ms),
    })
}

#[async_trait]
impl CredentialStore for SqliteCredentialStore {
    async fn credentials(&self) -> Result<Vec<CredentialRecord>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT name, role, queues, secret_sha256, signing_key, created_at, expires_at, revoked_at, last_used_at \
                 FROM credentials ORDER BY name",
            )?;
            let rows = stmt.query_map([], row)?;
            rows.collect()
        })
        .await
    }

    async fn create_credential(&self, record: CredentialRecord) -> Result<bool, StoreError> {
        let queues = serde_json::to_string(&record.queues)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        self.with(move |c| {
            let inserted = c
                .prepare_cached(
                    "INSERT OR IGNORE INTO credentials \
                     (name, role, queues, secret_sha256, signing_key, created_at, expires_at, revoked_at, last_used_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    record.name,
                    record.role.as_str(),
                    queues,
                    record.secret_sha256,
                    record.signing_key,
                    ms(record.created_at),
                    record.expires_at.map(ms),
                    record.revoked_at.map(ms),
                    record.last_used_at.map(ms),
                ])?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn put_credential(&self, record: CredentialRecord) -> Result<(), StoreError> {
        let queues = serde_json::to_string(&record.queues)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        self.with(move |c| {
            c.prepare_cached(
                "INSERT INTO credentials \
                 (name, role, queues, secret_sha256, signing_key, created_at, expires_at, revoked_at, last_used_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, NULL) \
                 ON CONFLICT (name) DO UPDATE SET role = excluded.role, queues = excluded.queues, \
                 secret_sha256 = excluded.secret_sha256, signing_key = excluded.signing_key, \
                 created_at = excluded.created_at, expires_at = excluded.expires_at, \
                 revoked_at = NULL, last_used_at = NULL",
            )?
            .execute(params![
                record.name,
                record.role.as_str(),
                queues,
                record.secret_sha256,
                record.signing_key,
                ms(record.created_at),
                record.expires_at.map(ms),
            ])?;
            Ok(())
        })
        .await
    }

    async fn revoke_credential(&self, name: &str, at: OffsetDateTime) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.with(move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE credentials SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
                )?
                .execute(params![name, ms(at)])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn touch_credentials(
        &self,
        used: Vec<(String, OffsetDateTime)>,
    ) -> Result<(), StoreError> {
        self.with(move |c| {
            let tx = c.unchecked_transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE credentials SET last_used_at = ?2 \
                     WHERE name = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
                )?;
                for (name, at) in used {
                    stmt.execute(params![name, ms(at)])?;
                }
            }
            tx.commit()
        })
        .await
    }
}
