//! A connection of its own on the job store's file, for the small tables beside the jobs
//! (auction records, credentials): opened and migrated like the store, used off the runtime.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use sheratan_store::StoreError;

use crate::schema::{self, SyncMode};
use crate::writer::classify;

pub(crate) struct Side {
    conn: Arc<Mutex<Connection>>,
}

impl Side {
    /// Opens (creating and migrating) the database at `path`.
    pub(crate) fn open(path: &Path, sync: SyncMode) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        }
        let mut conn = Connection::open(path).map_err(classify)?;
        schema::configure(&conn, sync).map_err(classify)?;
        schema::migrate(&mut conn).map_err(classify)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection, on a blocking thread.
    pub(crate) async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            f(&conn.lock().expect("side connection")).map_err(classify)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }
}
