//! Connections: opened with the store's settings (schema, statement timeout), driven on their
//! own tasks, reopened when they break (the database restarted), and a tiny pool for reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sheratan_store::StoreError;
use tokio_postgres::{Client, NoTls};

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    /// The schema the tables live in (created if missing); `None` for the default.
    pub schema: Option<String>,
}

impl Target {
    pub async fn connect(&self) -> Result<Client, StoreError> {
        let (client, connection) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_postgres::connect(&self.url, NoTls),
        )
        .await
        .map_err(|_| StoreError::Unavailable("PostgreSQL did not answer within 10 s".into()))?
        .map_err(unavailable)?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!("postgres connection ended: {err}");
            }
        });
        // A statement that hangs (a lock held by a dead peer, a stalled server) must not hang
        // a request forever.
        let mut setup = String::from(
            "SET client_min_messages = warning; SET statement_timeout = '30s'; SET lock_timeout = '10s';",
        );
        if let Some(schema) = &self.schema {
            let quoted = quote_ident(schema);
            setup.push_str(&format!(
                "CREATE SCHEMA IF NOT EXISTS {quoted}; SET search_path TO {quoted};"
            ));
        }
        client.batch_execute(&setup).await.map_err(classify)?;
        Ok(client)
    }
}

/// `"name"` with inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A connection that reopens itself: `get` hands out a live client.
pub struct Slot {
    target: Arc<Target>,
    client: tokio::sync::Mutex<Option<Client>>,
}

impl Slot {
    pub fn new(target: Arc<Target>) -> Self {
        Self {
            target,
            client: tokio::sync::Mutex::new(None),
        }
    }

    /// Forgets the connection; the next `lock` opens a new one.
    pub async fn reset(&self) {
        *self.client.lock().await = None;
    }

    pub async fn lock(&self) -> Result<tokio::sync::MappedMutexGuard<'_, Client>, StoreError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(self.target.connect().await?);
        }
        Ok(tokio::sync::MutexGuard::map(guard, |c| {
            c.as_mut().expect("just connected")
        }))
    }
}

/// Round-robin over a few slots for reads.
pub struct Pool {
    slots: Vec<Slot>,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(target: Arc<Target>, size: usize) -> Self {
        Self {
            slots: (0..size.max(1))
                .map(|_| Slot::new(target.clone()))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    pub async fn get(&self) -> Result<tokio::sync::MappedMutexGuard<'_, Client>, StoreError> {
        // Prefer a free slot; otherwise queue on the next one.
        for slot in &self.slots {
            if let Ok(mut guard) = slot.client.try_lock() {
                if guard.as_ref().is_none_or(Client::is_closed) {
                    *guard = Some(slot.target.connect().await?);
                }
                return Ok(tokio::sync::MutexGuard::map(guard, |c| {
                    c.as_mut().expect("connected")
                }));
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        self.slots[i].lock().await
    }
}

pub fn unavailable(err: tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(describe(&err))
}

fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            let mut message = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(s) = source {
                message = format!("{message}: {s}");
                source = s.source();
            }
            message
        }
    }
}

/// Conditions an operator fixes (database down or restarting, connections exhausted, disk
/// full, read-only, timeouts) are `Unavailable`; anything else is `Internal`.
pub fn classify(err: tokio_postgres::Error) -> StoreError {
    let message = describe(&err);
    match err.code() {
        None => StoreError::Unavailable(message),
        Some(code) => {
            let c = code.code();
            // 08 connection, 53 resources, 57 operator intervention (shutdown), 40 rollbacks,
            // 55P03 lock timeout, 57014 statement timeout, 25006 read-only.
            if c.starts_with("08")
                || c.starts_with("53")
                || c.starts_with("57")
                || c.starts_with("40")
                || c == "55P03"
                || c == "25006"
            {
                StoreError::Unavailable(message)
            } else {
                StoreError::Internal(message)
            }
        }
    }
}
