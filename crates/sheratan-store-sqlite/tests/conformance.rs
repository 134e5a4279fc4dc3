//! The shared storage conformance suite, run against SQLite.

use std::sync::Arc;

use sheratan_store::conformance::Backend;
use sheratan_store::{ManualClock, Store, StoreLimits};
use sheratan_store_sqlite::{SqliteConfig, SqliteStore};

struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }
}

impl Backend for Sqlite {
    fn open(&self, clock: Arc<ManualClock>, limits: StoreLimits) -> Arc<dyn Store> {
        let mut config = SqliteConfig::new(self.dir.path().join("sheratan.db"), clock);
        config.limits = limits;
        Arc::new(SqliteStore::open(config).expect("open the store"))
    }
}

sheratan_store::conformance_tests!(Sqlite::new());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auction_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sheratan.db");
    let store = sheratan_store_sqlite::SqliteAuctionStore::open(
        &path,
        sheratan_store_sqlite::SyncMode::Normal,
    )
    .unwrap();
    let reopen = || -> Box<dyn sheratan_store::AuctionStore> {
        Box::new(
            sheratan_store_sqlite::SqliteAuctionStore::open(
                &path,
                sheratan_store_sqlite::SyncMode::Normal,
            )
            .unwrap(),
        )
    };
    sheratan_store::conformance::auction_records_round_trip(&store, &reopen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sheratan.db");
    let open = || {
        sheratan_store_sqlite::SqliteCredentialStore::open(
            &path,
            sheratan_store_sqlite::SyncMode::Normal,
        )
        .unwrap()
    };
    let store = open();
    let reopen = || -> Box<dyn sheratan_store::CredentialStore> { Box::new(open()) };
    sheratan_store::conformance::credentials_round_trip(&store, &reopen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sheratan.db");
    let open = || {
        sheratan_store_sqlite::SqliteScheduleStore::open(
            &path,
            sheratan_store_sqlite::SyncMode::Normal,
        )
        .unwrap()
    };
    let store = open();
    let reopen = || -> Box<dyn sheratan_store::ScheduleStore> { Box::new(open()) };
    sheratan_store::conformance::schedules_round_trip(&store, &reopen).await;
}

sheratan_store::model_tests!(Sqlite::new(), 64);
