//! The hub's job store: its home created (0700) if missing, SQLite or PostgreSQL opened, and
//! for PostgreSQL the state hubs share.

use std::path::Path;
use std::sync::Arc;

use sheratan_hub::Hub;

use crate::hub_args::{HubArgs, StoreChoice, StoreUrl};
use crate::{Failure, usage};

/// The job store and, in its database, the credentials and the schedules.
pub struct Opened {
    pub url: StoreUrl,
    pub store: Arc<dyn sheratan_store::Store>,
    pub credentials: Arc<dyn sheratan_store::CredentialStore>,
    pub schedules: Arc<dyn sheratan_store::ScheduleStore>,
}

/// Opens the store `args` name, creating `home` first.
pub async fn open(
    args: &HubArgs,
    home: &Path,
    clock: Arc<dyn sheratan_store::Clock>,
) -> Result<Opened, Failure> {
    let (store_url, choice) = args.store_config(clock).map_err(usage)?;
    create_home(home)?;
    let credentials = open_credentials(&choice).await?;
    let schedules = open_schedules(&choice).await?;
    let store: Arc<dyn sheratan_store::Store> = match choice {
        StoreChoice::Sqlite(config) => {
            // Opening recovers every live job into memory: blocking work, off the runtime.
            let store = tokio::task::spawn_blocking(move || {
                sheratan_store_sqlite::SqliteStore::open(config)
            })
            .await
            .map_err(|e| Failure::from(anyhow::anyhow!("opening the job store failed: {e}")))?
            .map_err(|e| Failure::from(anyhow::Error::new(e)))?;
            Arc::new(store)
        }
        StoreChoice::Postgres(config) => {
            let store = sheratan_store_postgres::PgStore::open(config).await.map_err(|e| {
                Failure::from(anyhow::anyhow!(
                    "opening the PostgreSQL store at {} failed: {e} (is the database running, and does SHERATAN_STORE name it?)",
                    store_url.display()
                ))
            })?;
            Arc::new(store)
        }
    };
    Ok(Opened {
        url: store_url,
        store,
        credentials,
        schedules,
    })
}

/// The schedules' table, in the job store's database.
async fn open_schedules(
    choice: &StoreChoice,
) -> Result<Arc<dyn sheratan_store::ScheduleStore>, Failure> {
    let failed = |e: sheratan_store::StoreError| {
        Failure::from(anyhow::anyhow!(
            "opening the schedules in the job store failed: {e}"
        ))
    };
    Ok(match choice {
        StoreChoice::Sqlite(config) => {
            let (path, sync) = (config.path.clone(), config.sync);
            Arc::new(
                tokio::task::spawn_blocking(move || {
                    sheratan_store_sqlite::SqliteScheduleStore::open(&path, sync)
                })
                .await
                .map_err(|e| Failure::from(anyhow::anyhow!("{e}")))?
                .map_err(failed)?,
            )
        }
        StoreChoice::Postgres(config) => Arc::new(
            sheratan_store_postgres::PgScheduleStore::open(&config.url, config.schema.clone())
                .await
                .map_err(failed)?,
        ),
    })
}

/// The credentials' table, in the job store's database.
async fn open_credentials(
    choice: &StoreChoice,
) -> Result<Arc<dyn sheratan_store::CredentialStore>, Failure> {
    let failed = |e: sheratan_store::StoreError| {
        Failure::from(anyhow::anyhow!(
            "opening the credentials in the job store failed: {e}"
        ))
    };
    Ok(match choice {
        StoreChoice::Sqlite(config) => {
            let (path, sync) = (config.path.clone(), config.sync);
            Arc::new(
                tokio::task::spawn_blocking(move || {
                    sheratan_store_sqlite::SqliteCredentialStore::open(&path, sync)
                })
                .await
                .map_err(|e| Failure::from(anyhow::anyhow!("{e}")))?
                .map_err(failed)?,
            )
        }
        StoreChoice::Postgres(config) => Arc::new(
            sheratan_store_postgres::PgCredentialStore::open(&config.url, config.schema.clone())
                .await
                .map_err(failed)?,
        ),
    })
}

/// A home this command creates is its owner's alone (token, job store, logs); one that
/// exists keeps the mode its operator gave it.
fn create_home(home: &Path) -> Result<(), Failure> {
    if home.exists() {
        return Ok(());
    }
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(home)
        .map_err(|e| {
            Failure::from(anyhow::anyhow!(
                "cannot create SHERATAN_HOME {}: {e}",
                home.display()
            ))
        })
}

/// Hubs on one PostgreSQL database share the registry, token rotation and bundles.
pub async fn share_state(hub: &mut Hub, url: &str, schema: Option<String>) -> Result<(), Failure> {
    let shared = sheratan_store_postgres::PgShared::open(url, schema)
        .await
        .map_err(|e| Failure::from(anyhow::anyhow!("opening the shared hub state: {e}")))?;
    let hub_id = format!(
        "{}-{}-{}",
        crate::client_args::hostname(),
        hub.control_addr().map_or(0, |a| a.port()),
        std::process::id()
    );
    hub.share_state(Arc::new(shared), hub_id);
    Ok(())
}
