//! The shared storage conformance suite, run against PostgreSQL: each test in its own schema
//! of the database at `SHERATAN_TEST_POSTGRES_URL` (`./scripts/test.sh` starts a throwaway
//! cluster and sets it).

use std::sync::Arc;

use sheratan_store::conformance::Backend;
use sheratan_store::{ManualClock, Store, StoreLimits};
use sheratan_store_postgres::{PgAuctionStore, PgConfig, PgStore};

fn url() -> String {
    std::env::var("SHERATAN_TEST_POSTGRES_URL").expect(
        "SHERATAN_TEST_POSTGRES_URL is not set: run ./scripts/test.sh, or start a cluster with \
         scripts/pg-cluster.sh start and export the URL it prints",
    )
}

fn fresh_schema() -> String {
    format!("conformance_{}", uuid::Uuid::now_v7().simple())
}

struct Postgres {
    schema: String,
}

impl Postgres {
    fn new() -> Self {
        Self {
            schema: fresh_schema(),
        }
    }
}

impl Backend for Postgres {
    fn open(&self, clock: Arc<ManualClock>, limits: StoreLimits) -> Arc<dyn Store> {
        let mut config = PgConfig::new(&url(), clock);
        config.schema = Some(self.schema.clone());
        config.limits = limits;
        let store = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(PgStore::open(config))
        })
        .expect("open the PostgreSQL store");
        Arc::new(store)
    }
}

sheratan_store::conformance_tests!(Postgres::new());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auction_records() {
    let schema = fresh_schema();
    let store = PgAuctionStore::open(&url(), Some(schema.clone()))
        .await
        .unwrap();
    let reopen = || -> Box<dyn sheratan_store::AuctionStore> {
        let s = schema.clone();
        Box::new(
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(PgAuctionStore::open(&url(), Some(s)))
            })
            .unwrap(),
        )
    };
    sheratan_store::conformance::auction_records_round_trip(&store, &reopen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials() {
    let schema = fresh_schema();
    let store = sheratan_store_postgres::PgCredentialStore::open(&url(), Some(schema.clone()))
        .await
        .unwrap();
    let reopen = || -> Box<dyn sheratan_store::CredentialStore> {
        let s = schema.clone();
        Box::new(
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(
                    sheratan_store_postgres::PgCredentialStore::open(&url(), Some(s)),
                )
            })
            .unwrap(),
        )
    };
    sheratan_store::conformance::credentials_round_trip(&store, &reopen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules() {
    let schema = fresh_schema();
    let store = sheratan_store_postgres::PgScheduleStore::open(&url(), Some(schema.clone()))
        .await
        .unwrap();
    let reopen = || -> Box<dyn sheratan_store::ScheduleStore> {
        let s = schema.clone();
        Box::new(
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(
                    sheratan_store_postgres::PgScheduleStore::open(&url(), Some(s)),
                )
            })
            .unwrap(),
        )
    };
    sheratan_store::conformance::schedules_round_trip(&store, &reopen).await;
}

/// Two stores on one schema are two hubs on one database: a submit through one wakes the
/// other's waiters (through NOTIFY on the schema's own channel).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_on_one_hub_wakes_the_other() {
    use sheratan_store::conformance::{World, job};
    use std::time::Duration;

    let backend = Postgres::new();
    let a = World::new(&backend, StoreLimits::default());
    let b = backend.open(a.clock.clone(), StoreLimits::default());
    // The listener signals once when it has subscribed.
    let mut ready = b.ready_signal();
    tokio::time::timeout(Duration::from_secs(10), ready.changed())
        .await
        .expect("b's listener subscribes")
        .unwrap();
    for round in 0..3 {
        ready.borrow_and_update();
        let id = a
            .submit(job("default", serde_json::json!({"round": round})))
            .await;
        tokio::time::timeout(Duration::from_secs(5), ready.changed())
            .await
            .expect("the other hub is woken within 5 s")
            .unwrap();
        let leased = b
            .lease(sheratan_store::LeaseOrder {
                node_id: "w".into(),
                queues: vec!["default".into()],
                capabilities: Vec::new(),
                max_jobs: 1,
            })
            .await
            .unwrap()
            .jobs;
        assert_eq!(leased.len(), 1);
        assert_eq!(leased[0].job_id, id);
    }
}

/// Capabilities travel through the batched INSERT as array literals: odd characters survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_with_quotes_and_commas_survive_the_batched_insert() {
    use sheratan_store::conformance::{World, job};

    let backend = Postgres::new();
    let w = World::new(&backend, StoreLimits::default());
    let caps = ["a,b", r#"q"u\o"#, "{x}"];
    let mut j = job("default", serde_json::json!({}));
    j.required_capabilities = caps.iter().map(|c| c.to_string()).collect();
    let id = w.submit(j).await;
    assert!(w.lease("w", &["default"], &["a,b"], 1).await.is_empty());
    let leased = w.lease("w", &["default"], &caps, 1).await;
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].job_id, id);
    let record = w.store.get(id).await.unwrap().unwrap();
    let mut want: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
    want.sort();
    assert_eq!(record.required_capabilities, want);
}

sheratan_store::model_tests!(Postgres::new(), 24);
