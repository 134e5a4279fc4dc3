//! The scheduler on a real SQLite store with a manual clock: passes at chosen times, across a
//! daylight-saving change, with each catch-up and overlap rule.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use serde_json::json;
use sheratan_proto::data::JobStatus;
use sheratan_proto::schedules::{RunOutcome, ScheduleSpec};
use sheratan_store::{Clock, LeaseOrder, ListFilter, ManualClock, ScheduleRecord};
use sheratan_store_sqlite::{SqliteConfig, SqliteScheduleStore, SqliteStore, SyncMode};
use time::OffsetDateTime;
use time::macros::datetime;

use crate::auth::{Secret, TokenConfig};
use crate::{Hub, HubConfig, HubState};

struct TestHub {
    state: Arc<HubState>,
    clock: Arc<ManualClock>,
    _hub: Hub,
    _dir: tempfile::TempDir,
}

async fn hub(start: OffsetDateTime) -> TestHub {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let tokens = TokenConfig {
        token: Some(Secret::new("schedule-test-token-0123456789")),
        required: true,
        next: None,
        rotation_until: None,
        allow_weak: false,
    };
    let mut config = HubConfig::new(dir.path().join("home"), tokens);
    config.control_addr = "127.0.0.1:0".parse().unwrap();
    config.data_addr = "127.0.0.1:0".parse().unwrap();
    let path = dir.path().join("jobs.db");
    let store_config = SqliteConfig::new(path.clone(), clock.clone());
    let store = tokio::task::block_in_place(|| SqliteStore::open(store_config)).unwrap();
    let schedules = SqliteScheduleStore::open(&path, SyncMode::Normal).unwrap();
    let hub = Hub::build_with_clock(config, Arc::new(store), clock.clone())
        .await
        .unwrap();
    hub.state().schedules.attach(Arc::new(schedules));
    TestHub {
        state: hub.state().clone(),
        clock,
        _hub: hub,
        _dir: dir,
    }
}

fn me() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

fn spec(name: &str, cron: &str, extra: serde_json::Value) -> ScheduleSpec {
    let mut body = json!({"name": name, "cron": cron, "job": {"kind": "echo", "queue": name}});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    serde_json::from_value(body).unwrap()
}

impl TestHub {
    async fn record(&self, name: &str) -> ScheduleRecord {
        let store = self.state.schedules.store().unwrap();
        let all = store.schedules().await.unwrap();
        all.into_iter().find(|r| r.spec.name == name).unwrap()
    }

    /// The ticks of the jobs in `queue`, oldest first.
    async fn ticks(&self, queue: &str) -> Vec<OffsetDateTime> {
        let filter = ListFilter {
            queue: Some(queue.into()),
            limit: 1000,
            ..ListFilter::default()
        };
        let (jobs, _) = self.state.store.list(filter).await.unwrap();
        let mut ticks: Vec<OffsetDateTime> = jobs
            .iter()
            .map(|j| {
                let key = j.idempotency_key.as_deref().unwrap();
                let ms: i64 = key.rsplit(':').next().unwrap().parse().unwrap();
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap()
            })
            .collect();
        ticks.sort();
        ticks
    }

    /// Passes every `step` until `until`.
    async fn run_until(&self, until: OffsetDateTime, step: time::Duration) {
        while self.clock.now() < until {
            self.clock.advance(step);
            super::pass(&self.state).await.unwrap();
        }
    }
}

/// Berlin's spring-forward night: "30 2 * * *" runs at 02:30 CET, then right after the gap
/// (03:00 CEST, since 02:30 does not exist), then at 02:30 CEST: one job each, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_schedule_across_the_spring_change_runs_once_a_day() {
    let t = hub(datetime!(2027-03-26 12:00 UTC)).await;
    // Passes every 7 minutes: `last` runs a tick however late the pass (`none` would call a
    // tick 7 minutes late missed).
    let nightly = spec(
        "nightly",
        "30 2 * * *",
        json!({"timezone": "Europe/Berlin", "catch_up": "last"}),
    );
    super::create(&t.state, nightly, me()).await.unwrap();
    t.run_until(datetime!(2027-03-29 12:00 UTC), time::Duration::minutes(7))
        .await;
    assert_eq!(
        t.ticks("nightly").await,
        [
            datetime!(2027-03-27 01:30 UTC),
            datetime!(2027-03-28 01:00 UTC),
            datetime!(2027-03-29 00:30 UTC),
        ]
    );
    let record = t.record("nightly").await;
    assert_eq!((record.runs, record.missed, record.skipped), (3, 0, 0));
}

/// Berlin's fall-back night: a half-hourly schedule ticks through the doubled hour once per
/// wall-clock time (croner's rule; plan.rs), and no tick makes two jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_hourly_schedule_across_the_autumn_change() {
    let t = hub(datetime!(2027-10-30 23:10 UTC)).await;
    let half = spec(
        "half",
        "*/30 * * * *",
        json!({"timezone": "Europe/Berlin", "catch_up": "last"}),
    );
    super::create(&t.state, half, me()).await.unwrap();
    t.run_until(datetime!(2027-10-31 02:40 UTC), time::Duration::minutes(4))
        .await;
    assert_eq!(
        t.ticks("half").await,
        [
            datetime!(2027-10-30 23:30 UTC),
            datetime!(2027-10-31 00:00 UTC),
            datetime!(2027-10-31 00:30 UTC),
            datetime!(2027-10-31 02:00 UTC),
            datetime!(2027-10-31 02:30 UTC),
        ]
    );
}

/// A hub away for ten minutes: `none` runs no old tick, `last` the latest, `all` every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_none_last_and_all() {
    let t = hub(datetime!(2026-12-05 12:00:30 UTC)).await;
    for (name, catch_up) in [("none", "none"), ("last", "last"), ("all", "all")] {
        let s = spec(name, "@every 5m", json!({"catch_up": catch_up}));
        super::create(&t.state, s, me()).await.unwrap();
    }
    // Twelve ticks pass (12:05 … 13:00) with no pass; the clock is 2.5 minutes past the last.
    t.clock.advance(time::Duration::seconds(62 * 60));
    super::pass(&t.state).await.unwrap();
    assert!(t.ticks("none").await.is_empty());
    assert_eq!(t.ticks("last").await, [datetime!(2026-12-05 13:00 UTC)]);
    let all = t.ticks("all").await;
    assert_eq!(all.len(), 12, "{all:?}");
    assert_eq!(all[0], datetime!(2026-12-05 12:05 UTC));
    for (name, runs, missed) in [("none", 0, 12), ("last", 1, 11), ("all", 12, 0)] {
        let r = t.record(name).await;
        assert_eq!((r.runs, r.missed), (runs, missed), "{name}");
        assert_eq!(r.done_until, datetime!(2026-12-05 13:00 UTC), "{name}");
    }
    assert_eq!(
        t.record("none").await.last_run.unwrap().outcome,
        RunOutcome::Missed
    );
    // A tick less than a minute late still runs under `none`.
    t.clock.advance(time::Duration::seconds(170));
    super::pass(&t.state).await.unwrap();
    assert_eq!(t.ticks("none").await, [datetime!(2026-12-05 13:05 UTC)]);
}

/// `skip` holds a tick back while the previous job has not finished; `queue_one` lets one
/// wait behind a running job, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_skip_and_queue_one() {
    let t = hub(datetime!(2026-12-05 12:00:30 UTC)).await;
    for (name, overlap) in [("skip", "skip"), ("one", "queue_one")] {
        let s = spec(name, "@every 1m", json!({"overlap": overlap}));
        super::create(&t.state, s, me()).await.unwrap();
    }
    let minute = time::Duration::minutes(1);
    t.clock.advance(minute);
    super::pass(&t.state).await.unwrap();
    assert_eq!(t.ticks("skip").await.len(), 1);
    assert_eq!(t.ticks("one").await.len(), 1);
    // Both first jobs start running.
    let leased = t
        .state
        .store
        .lease(LeaseOrder {
            node_id: "w-1".into(),
            queues: vec!["skip".into(), "one".into()],
            capabilities: vec!["echo".into()],
            max_jobs: 2,
        })
        .await
        .unwrap();
    assert_eq!(leased.jobs.len(), 2);
    t.clock.advance(minute);
    super::pass(&t.state).await.unwrap();
    assert_eq!(t.ticks("skip").await.len(), 1, "skipped while running");
    assert_eq!(
        t.ticks("one").await.len(),
        2,
        "one may wait behind the running job"
    );
    t.clock.advance(minute);
    super::pass(&t.state).await.unwrap();
    assert_eq!(t.ticks("one").await.len(), 2, "but not two");
    let skip = t.record("skip").await;
    assert_eq!((skip.runs, skip.skipped), (1, 2));
    let last = skip.last_run.unwrap();
    assert_eq!(last.outcome, RunOutcome::Skipped);
    assert!(last.reason.unwrap().contains("has not finished"));
    let one = t.record("one").await;
    assert_eq!((one.runs, one.skipped), (2, 1));
    // The view shows the last run and reads the last job's status now.
    let view = super::get(&t.state, "one").await.unwrap();
    assert_eq!(view.last_run.unwrap().outcome, RunOutcome::Skipped);
    assert_eq!(view.last_job.unwrap().status, Some(JobStatus::Accepted));
    let view = super::get(&t.state, "skip").await.unwrap();
    assert!(view.next_runs.len() == 5 && view.next_runs[0] > t.clock.now());
    let first = t.state.store.list(ListFilter {
        queue: Some("skip".into()),
        limit: 10,
        ..ListFilter::default()
    });
    assert_eq!(first.await.unwrap().0[0].status, JobStatus::InProgress);
}

/// A paused schedule submits nothing; resumed, it starts from the next tick (what passed while
/// paused is not caught up, whatever `catch_up` says).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_schedule_starts_from_now() {
    let t = hub(datetime!(2026-12-05 12:00:30 UTC)).await;
    let s = spec("p", "@every 1m", json!({"catch_up": "all", "paused": true}));
    super::create(&t.state, s, me()).await.unwrap();
    t.run_until(
        datetime!(2026-12-05 12:10:30 UTC),
        time::Duration::seconds(20),
    )
    .await;
    assert!(t.ticks("p").await.is_empty());
    let resume = sheratan_proto::schedules::SchedulePatch {
        paused: Some(false),
        ..Default::default()
    };
    let view = super::patch(&t.state, "p", resume, me()).await.unwrap();
    assert_eq!(view.next_runs[0], datetime!(2026-12-05 12:11 UTC));
    t.run_until(
        datetime!(2026-12-05 12:12:30 UTC),
        time::Duration::seconds(20),
    )
    .await;
    assert_eq!(
        t.ticks("p").await,
        [
            datetime!(2026-12-05 12:11 UTC),
            datetime!(2026-12-05 12:12 UTC)
        ]
    );
}
