//! The conformance suite every storage backend passes (garage's pattern: one shared suite,
//! run against each backend). A backend crate runs it with
//! `sheratan_store::conformance_tests!(|| MyBackend::new());` in an integration test.
//!
//! Time is a [`ManualClock`], so lease expiry, backoff and delays are tested without sleeping.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sheratan_proto::data::{JobError, JobStatus, Outcome, SubmitJob};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    Clock, ExtendOutcome, FinishOutcome, HolderRule, JobDefaults, JobSpec, LeaseOrder, LeasedJob,
    ListFilter, ManualClock, ResultReport, Store, StoreLimits, SubmitOutcome,
};

/// A backend under test.
pub trait Backend: Send + Sync {
    /// Opens the store: empty the first time, the same data on later calls (after the
    /// previous store was dropped).
    fn open(&self, clock: Arc<ManualClock>, limits: StoreLimits) -> Arc<dyn Store>;
}

/// One test's world: a backend, its clock, and the open store.
pub struct World<'a> {
    pub backend: &'a dyn Backend,
    pub clock: Arc<ManualClock>,
    pub limits: StoreLimits,
    pub store: Arc<dyn Store>,
}

impl<'a> World<'a> {
    pub fn new(backend: &'a dyn Backend, limits: StoreLimits) -> Self {
        let clock = Arc::new(ManualClock::new(
            time::macros::datetime!(2026-11-27 08:00 UTC),
        ));
        let store = backend.open(clock.clone(), limits);
        Self {
            backend,
            clock,
            limits,
            store,
        }
    }

    /// Closes and opens the store again on the same data.
    pub fn reopen(&mut self) {
        let fresh = Arc::new(ManualClock::new(self.clock.now()));
        // Drop the old store first: a backend may hold the database exclusively.
        drop(std::mem::replace(&mut self.store, Arc::new(Placeholder)));
        self.store = self.backend.open(fresh.clone(), self.limits);
        self.clock = fresh;
    }

    pub fn advance(&self, d: Duration) {
        self.clock
            .advance(time::Duration::try_from(d).expect("small durations"));
    }

    pub fn spec(&self, job: SubmitJob) -> JobSpec {
        JobSpec::from_wire(job, JobDefaults::default(), self.clock.now()).expect("valid job")
    }

    pub async fn submit(&self, job: SubmitJob) -> Uuid {
        match self
            .store
            .submit(vec![self.spec(job)])
            .await
            .expect("submit")
            .remove(0)
        {
            SubmitOutcome::Created { job_id } => job_id,
            other => panic!("expected a new job, got {other:?}"),
        }
    }

    pub async fn lease(
        &self,
        node: &str,
        queues: &[&str],
        caps: &[&str],
        max: u32,
    ) -> Vec<LeasedJob> {
        let mut caps: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
        caps.sort();
        self.store
            .lease(LeaseOrder {
                node_id: node.into(),
                queues: queues.iter().map(|q| q.to_string()).collect(),
                capabilities: caps,
                max_jobs: max,
            })
            .await
            .expect("lease")
            .jobs
    }

    pub async fn succeed(&self, job: &LeasedJob, result: &str) -> FinishOutcome {
        self.store
            .finish(ResultReport {
                holder: None,
                job_id: job.job_id,
                lease_id: job.lease_id,
                outcome: Outcome::Success,
                result: result.into(),
                error: None,
            })
            .await
            .expect("finish")
    }

    pub async fn fail(&self, job: &LeasedJob, retryable: bool) -> FinishOutcome {
        self.store
            .finish(ResultReport {
                holder: None,
                job_id: job.job_id,
                lease_id: job.lease_id,
                outcome: Outcome::Failure,
                result: "null".into(),
                error: Some(JobError {
                    message: "boom".into(),
                    retryable,
                }),
            })
            .await
            .expect("finish")
    }

    pub async fn status(&self, job_id: Uuid) -> JobStatus {
        self.store
            .get(job_id)
            .await
            .expect("get")
            .expect("job exists")
            .status
    }
}

/// Stands in while a store is being reopened.
struct Placeholder;

#[async_trait::async_trait]
impl Store for Placeholder {
    async fn submit(&self, _: Vec<JobSpec>) -> Result<Vec<SubmitOutcome>, crate::StoreError> {
        unreachable!("placeholder")
    }
    async fn lease(&self, _: LeaseOrder) -> Result<crate::LeaseGrant, crate::StoreError> {
        unreachable!("placeholder")
    }
    async fn extend(
        &self,
        _: Uuid,
        _: Option<u32>,
        _: Option<HolderRule>,
    ) -> Result<ExtendOutcome, crate::StoreError> {
        unreachable!("placeholder")
    }
    async fn finish(&self, _: ResultReport) -> Result<FinishOutcome, crate::StoreError> {
        unreachable!("placeholder")
    }
    async fn get(&self, _: Uuid) -> Result<Option<crate::JobRecord>, crate::StoreError> {
        unreachable!("placeholder")
    }
    async fn find_ids(&self, _: &str, _: u32) -> Result<Vec<Uuid>, crate::StoreError> {
        unreachable!("placeholder")
    }
    async fn list(
        &self,
        _: ListFilter,
    ) -> Result<(Vec<crate::JobRecord>, Option<Uuid>), crate::StoreError> {
        unreachable!("placeholder")
    }
    async fn cancel(&self, _: Uuid) -> Result<Option<crate::JobRecord>, crate::StoreError> {
        unreachable!("placeholder")
    }
    async fn requeue(&self, _: Uuid) -> Result<Option<crate::JobRecord>, crate::StoreError> {
        unreachable!("placeholder")
    }
    async fn tick(&self) -> Result<crate::TickReport, crate::StoreError> {
        unreachable!("placeholder")
    }
    async fn pending_results(&self, _: u32) -> Result<Vec<crate::JobRecord>, crate::StoreError> {
        unreachable!("placeholder")
    }
    async fn ack_results(&self, _: Vec<Uuid>) -> Result<u64, crate::StoreError> {
        unreachable!("placeholder")
    }
    async fn queue_settings(
        &self,
    ) -> Result<Vec<(String, sheratan_proto::queues::QueueSettings)>, crate::StoreError> {
        unreachable!("placeholder")
    }
    async fn record_progress(&self, _: Vec<(Uuid, String)>) -> Result<u64, crate::StoreError> {
        unreachable!("placeholder")
    }
    async fn delete_finished(&self, _: Vec<Uuid>) -> Result<u64, crate::StoreError> {
        unreachable!("placeholder")
    }
    async fn update_queue_settings(
        &self,
        _: String,
        _: sheratan_proto::queues::QueueSettingsPatch,
    ) -> Result<Result<sheratan_proto::queues::QueueSettings, String>, crate::StoreError> {
        unreachable!("placeholder")
    }
    async fn purge(&self, _: String) -> Result<(u64, crate::QueueState), crate::StoreError> {
        unreachable!("placeholder")
    }
    async fn expire_idempotency_keys(&self, _: OffsetDateTime) -> Result<u64, crate::StoreError> {
        unreachable!("placeholder")
    }
    async fn expire_finished(
        &self,
        _: crate::retention::RetentionRules,
        _: u32,
    ) -> Result<crate::retention::PurgeReport, crate::StoreError> {
        unreachable!("placeholder")
    }
    async fn purged_through(&self) -> Result<Option<Uuid>, crate::StoreError> {
        unreachable!("placeholder")
    }
    fn counts(&self) -> crate::Counts {
        unreachable!("placeholder")
    }
    fn timings(&self) -> &crate::timings::StoreTimings {
        unreachable!("placeholder")
    }
    fn ready_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        unreachable!("placeholder")
    }
    fn finished_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        unreachable!("placeholder")
    }
}

/// A job of `kind` "echo" on `queue` with `payload`.
pub fn job(queue: &str, payload: serde_json::Value) -> SubmitJob {
    SubmitJob {
        queue: queue.into(),
        kind: "echo".into(),
        payload,
        priority: 0,
        required_capabilities: Vec::new(),
        idempotency_key: None,
        max_attempts: None,
        timeout_s: Some(30),
        run_at: None,
        follow_result: None,
        concurrency_key: None,
        retry: None,
    }
}

/// A job of `queue` with a `concurrency_key`.
pub fn keyed(queue: &str, key: &str, n: i64) -> SubmitJob {
    SubmitJob {
        concurrency_key: Some(key.into()),
        ..job(queue, serde_json::json!({ "n": n }))
    }
}

fn limits(depth: u64, inflight: u64) -> StoreLimits {
    StoreLimits {
        max_queue_depth: depth,
        max_inflight: inflight,
        retry_base: Duration::from_millis(1000),
    }
}

pub async fn submit_and_get(b: &dyn Backend) {
    let w = World::new(b, limits(100, 100));
    let mut j = job("q1", serde_json::json!({"n": 1, "s": "x"}));
    j.priority = 7;
    j.required_capabilities = vec!["b".into(), "a".into()];
    let id = w.submit(j).await;
    let rec = w.store.get(id).await.unwrap().unwrap();
    assert_eq!(rec.job_id, id);
    assert_eq!(rec.queue, "q1");
    assert_eq!(rec.kind, "echo");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&rec.payload).unwrap(),
        serde_json::json!({"n": 1, "s": "x"})
    );
    assert_eq!(rec.priority, 7);
    assert_eq!(rec.required_capabilities, vec!["a", "b"]);
    assert_eq!(rec.status, JobStatus::Accepted);
    assert_eq!(rec.attempt, 0);
    assert_eq!(rec.max_attempts, 3);
    assert_eq!(rec.created_at, w.clock.now());
    assert!(w.store.get(Uuid::now_v7()).await.unwrap().is_none());
    assert_eq!(w.store.counts().total_depth(), 1);
}

pub async fn priority_then_fifo_across_queues(b: &dyn Backend) {
    let w = World::new(b, limits(100, 100));
    let mut ids = Vec::new();
    for (queue, prio) in [("a", 0), ("b", 5), ("a", 5), ("b", 0), ("a", -1)] {
        let mut j = job(queue, serde_json::Value::Null);
        j.priority = prio;
        ids.push(w.submit(j).await);
    }
    let leased: Vec<Uuid> = w
        .lease("n", &["a", "b"], &[], 10)
        .await
        .iter()
        .map(|l| l.job_id)
        .collect();
    assert_eq!(leased, vec![ids[1], ids[2], ids[0], ids[3], ids[4]]);
}

pub async fn capabilities_are_matched(b: &dyn Backend) {
    let w = World::new(b, limits(100, 100));
    let mut gpu = job("q", serde_json::Value::Null);
    gpu.required_capabilities = vec!["gpu".into(), "cuda".into()];
    let gpu = w.submit(gpu).await;
    let plain = w.submit(job("q", serde_json::Value::Null)).await;
    let got: Vec<Uuid> = w
        .lease("cpu-node", &["q"], &["cpu"], 10)
        .await
        .iter()
        .map(|l| l.job_id)
        .collect();
    assert_eq!(got, vec![plain]);
    assert!(w.lease("half", &["q"], &["gpu"], 10).await.is_empty());
    let got: Vec<Uuid> = w
        .lease("gpu-node", &["q"], &["cuda", "gpu", "x"], 10)
        .await
        .iter()
        .map(|l| l.job_id)
        .collect();
    assert_eq!(got, vec![gpu]);
}

pub async fn no_job_is_held_by_two_live_leases(b: &dyn Backend) {
    let w = World::new(b, limits(10_000, 10_000));
    let specs: Vec<JobSpec> = (0..400)
        .map(|i| w.spec(job("q", serde_json::json!(i))))
        .collect();
    w.store.submit(specs).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..8 {
        let store = w.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let grant = store
                    .lease(LeaseOrder {
                        node_id: format!("w{n}"),
                        queues: vec!["q".into()],
                        capabilities: vec![],
                        max_jobs: 7,
                    })
                    .await
                    .unwrap();
                if grant.jobs.is_empty() {
                    return mine;
                }
                mine.extend(grant.jobs.into_iter().map(|j| j.job_id));
            }
        }));
    }
    let mut seen = HashSet::new();
    for t in tasks {
        for id in t.await.unwrap() {
            assert!(seen.insert(id), "job {id} leased twice");
        }
    }
    assert_eq!(seen.len(), 400);
    assert_eq!(w.store.counts().inflight, 400);
}

pub async fn expired_leases_are_reaped_then_failed_when_attempts_run_out(b: &dyn Backend) {
    let w = World::new(b, limits(100, 100));
    let mut j = job("q", serde_json::Value::Null);
    j.max_attempts = Some(2);
    j.timeout_s = Some(10);
    let id = w.submit(j).await;
    let first = w.lease("n1", &["q"], &[], 1).await.remove(0);
    assert_eq!(first.attempt, 1);
    w.advance(Duration::from_secs(9));
    assert!(w.store.tick().await.unwrap().reaped.is_empty());
    w.advance(Duration::from_secs(1));
    let report = w.store.tick().await.unwrap();
    assert_eq!(report.reaped.len(), 1);
    assert_eq!(report.reaped[0].job_id, id);
    assert_eq!(report.reaped[0].node_id, "n1");
    assert_eq!(report.reaped[0].status, JobStatus::Accepted);
    assert_eq!(w.status(id).await, JobStatus::Accepted);
    // The late holder is refused.
    assert!(matches!(
        w.succeed(&first, "1").await,
        FinishOutcome::LeaseNotHeld { .. }
    ));
    assert!(matches!(
        w.store.extend(first.lease_id, None, None).await.unwrap(),
        ExtendOutcome::NotHeld
    ));
    let second = w.lease("n2", &["q"], &[], 1).await.remove(0);
    assert_eq!(second.attempt, 2);
    w.advance(Duration::from_secs(10));
    let report = w.store.tick().await.unwrap();
    assert_eq!(report.reaped[0].status, JobStatus::Failed);
    let rec = w.store.get(id).await.unwrap().unwrap();
    assert_eq!(rec.status, JobStatus::Failed);
    assert!(rec.error.unwrap().message.contains("expired"));
    assert_eq!(w.store.counts().inflight, 0);
}

pub async fn a_result_is_counted_once(b: &dyn Backend) {
    let w = World::new(b, limits(100, 100));
    let id = w.submit(job("q", serde_json::Value::Null)).await;
    let l = w.lease("n", &["q"], &[], 1).await.remove(0);
    assert_eq!(
        w.succeed(&l, r#"{"ok":true}"#).await,
        FinishOutcome::Recorded {
            status: JobStatus::Completed
        }
    );
    assert_eq!(
        w.succeed(&l, r#"{"ok":true}"#).await,
        FinishOutcome::Duplicate {
            status: JobStatus::Completed
        }
    );
    let rec = w.store.get(id).await.unwrap().unwrap();
    assert_eq!(rec.status, JobStatus::Completed);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(rec.result.as_deref().unwrap()).unwrap(),
        serde_json::json!({"ok": true})
    );
    assert_eq!(w.store.counts().results_pending, 1);
    // A result naming a job the lease does not hold, or no job at all.
    let other = w.submit(job("q", serde_json::Value::Null)).await;
    let l2 = w.lease("n", &["q"], &[], 1).await.remove(0);
    let mut wrong = l2.clone();
    wrong.job_id = id;
    assert!(matches!(
        w.succeed(&wrong, "1").await,
        FinishOutcome::LeaseNotHeld { .. }
    ));
    let mut ghost = l2.clone();
    ghost.job_id = Uuid::now_v7();
    assert_eq!(w.succeed(&ghost, "1").await, FinishOutcome::UnknownJob);
    assert_eq!(w.status(other).await, JobStatus::InProgress);
}

pub async fn retryable_failures_back_off_then_land_in_failed(b: &dyn Backend) {
    let w = World::new(b, limits(100, 100));
    let id = w.submit(job("q", serde_json::Value::Null)).await;
    let l = w.lease("n", &["q"], &[], 1).await.remove(0);
    assert_eq!(
        w.fail(&l, true).await,
        FinishOutcome::Recorded {
            status: JobStatus::Accepted
        }
    );
    // Backoff of about one second (±20 %): not ready before 0.8 s, ready after 1.2 s.
    w.advance(Duration::from_millis(790));
    w.store.tick().await.unwrap();
    assert!(w.lease("n", &["q"], &[], 1).await.is_empty());
    w.advance(Duration::from_millis(420));
    assert_eq!(w.store.tick().await.unwrap().promoted, 1);
    let l = w.lease("n", &["q"], &[], 1).await.remove(0);
    assert_eq!(l.attempt, 2);
    assert_eq!(
        w.fail(&l, true).await,
        FinishOutcome::Recorded {
            status: JobStatus::Accepted
        }
    );
    // The second wait is about two seconds.
    w.advance(Duration::from_millis(1590));
    w.store.tick().await.unwrap();
    assert!(w.lease("n", &["q"], &[], 1).await.is_empty());
    w.advance(Duration::from_millis(820));
    w.store.tick().await.unwrap();
    let l = w.lease("n", &["q"], &[], 1).await.remove(0);
    assert_eq!(l.attempt, 3);
    // Attempts used up: the dead set.
    assert_eq!(
        w.fail(&l, true).await,
        FinishOutcome::Recorded {
            status: JobStatus::Failed
        }
    );
    let rec = w.store.get(id).await.unwrap().unwrap();
    assert_eq!(rec.status, JobStatus::Failed);
    assert_eq!(rec.error.as_ref().unwrap().message, "boom");
    assert_eq!(rec.attempt, 3);
}

pub async fn non_retryable_failures_fail_at_once(b: &dyn Backend) {
    let w = World::new(b, limits(100, 100));
    let id = w.submit(job("q", serde_json::Value::Null)).await;
    let l = w.lease("n", &["q"], &[], 1).await.remove(0);
    assert_eq!(
        w.fail(&l, false).await,
        FinishOutcome::Recorded {
            status: JobStatus::Failed
        }
    );
    assert_eq!(w.status(id).await, JobStatus::Failed);
    assert_eq!(
        w.fail(&l, false).await,
        FinishOutcome::Duplicate {
            status: JobStatus::Failed
        }
    );
}

pub async fn idempotency_keys_dedupe_and_detect_collisions(b: &dyn Backend) {
    let w = World::new(b, limits(100, 100));
    let keyed = |payload: serde_json::Value| {
        let mut j = job("q", payload);
        j.idempotency_key = Some("order-42".into());
        j
    };
    let id = w.submit(keyed(serde_json::json!({"a": 1, "b": 2}))).await;
    // Same request (keys in another order): the same job.
    let again = w
        .store
        .submit(vec![w.spec(keyed(serde_json::json!({"b": 2, "a": 1})))])
        .await
        .unwrap();
    assert_eq!(
        again,
        vec![SubmitOutcome::Existing {
            job_id: id,
            status: JobStatus::Accepted,
            result: None
        }]
    );
    let other = w
        .store
        .submit(vec![w.spec(keyed(serde_json::json!({"a": 2})))])
        .await
        .unwrap();
    assert_eq!(other, vec![SubmitOutcome::Collision { job_id: id }]);
    // Completed: the cached result comes back.
    let l = w.lease("n", &["q"], &[], 1).await.remove(0);
    w.succeed(&l, r#"{"done":1}"#).await;
    let again = w
        .store
        .submit(vec![w.spec(keyed(serde_json::json!({"a": 1, "b": 2})))])
        .await
        .unwrap();
    assert_eq!(
        again,
        vec![SubmitOutcome::Existing {
            job_id: id,
            status: JobStatus::Completed,
            result: Some(r#"{"done":1}"#.into())
        }]
    );
    // Expired keys are forgotten: the same key makes a new job.
    w.advance(Duration::from_secs(3600));
    assert_eq!(
        w.store
            .expire_idempotency_keys(w.clock.now())
            .await
            .unwrap(),
        1
    );
    let fresh = w
        .store
        .submit(vec![w.spec(keyed(serde_json::json!({"a": 1, "b": 2})))])
        .await
        .unwrap();
    assert!(matches!(fresh[0], SubmitOutcome::Created { job_id } if job_id != id));
}

pub async fn concurrent_submits_of_one_key_make_one_job(b: &dyn Backend) {
    let w = World::new(b, limits(1000, 100));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let store = w.store.clone();
        let mut j = job("q", serde_json::json!({"same": true}));
        j.idempotency_key = Some("race".into());
        let spec = w.spec(j);
        tasks.push(tokio::spawn(async move {
            store.submit(vec![spec]).await.unwrap().remove(0)
        }));
    }
    let mut ids = HashSet::new();
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            SubmitOutcome::Created { job_id } => {
                created += 1;
                ids.insert(job_id);
            }
            SubmitOutcome::Existing { job_id, .. } => {
                ids.insert(job_id);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    assert_eq!(w.store.counts().total_depth(), 1);
}

pub async fn queue_depth_limits_submits(b: &dyn Backend) {
    let w = World::new(b, limits(3, 100));
    let specs: Vec<JobSpec> = (0..5)
        .map(|i| {
            w.spec(job(
                if i % 2 == 0 { "a" } else { "b" },
                serde_json::json!(i),
            ))
        })
        .collect();
    let out = w.store.submit(specs).await.unwrap();
    assert!(matches!(out[2], SubmitOutcome::Created { .. }));
    assert!(matches!(out[3], SubmitOutcome::QueueFull { depth: 3 }));
    assert!(matches!(out[4], SubmitOutcome::QueueFull { .. }));
    // Leasing frees room.
    w.lease("n", &["a"], &[], 1).await;
    let out = w
        .store
        .submit(vec![w.spec(job("a", serde_json::Value::Null))])
        .await
        .unwrap();
    assert!(matches!(out[0], SubmitOutcome::Created { .. }));
}

pub async fn inflight_limit_holds_jobs_back(b: &dyn Backend) {
    let w = World::new(b, limits(100, 3));
    let specs: Vec<JobSpec> = (0..5)
        .map(|i| w.spec(job("q", serde_json::json!(i))))
        .collect();
    w.store.submit(specs).await.unwrap();
    // One call never takes inflight above the limit.
    assert_eq!(w.lease("n", &["q"], &[], 10).await.len(), 3);
    let grant = w
        .store
        .lease(LeaseOrder {
            node_id: "n".into(),
            queues: vec!["q".into()],
            capabilities: vec![],
            max_jobs: 1,
        })
        .await
        .unwrap();
    assert!(grant.jobs.is_empty());
    assert!(grant.saturated);
    assert_eq!(w.store.counts().inflight, 3);
}

pub async fn delayed_jobs_wait_for_run_at(b: &dyn Backend) {
    let w = World::new(b, limits(100, 100));
    let mut j = job("q", serde_json::Value::Null);
    j.run_at = Some(w.clock.now() + time::Duration::seconds(60));
    let id = w.submit(j).await;
    assert!(w.lease("n", &["q"], &[], 1).await.is_empty());
    assert_eq!(w.store.counts().total_depth(), 1);
    w.advance(Duration::from_secs(60));
    assert_eq!(w.store.tick().await.unwrap().promoted, 1);
    assert_eq!(w.lease("n", &["q"], &[], 1).await[0].job_id, id);
}

pub async fn leases_can_be_extended(b: &dyn Backend) {
    let w = World::new(b, limits(100, 100));
    let mut j = job("q", serde_json::Value::Null);
    j.timeout_s = Some(100);
    w.submit(j).await;
    let l = w.lease("n", &["q"], &[], 1).await.remove(0);
    w.advance(Duration::from_secs(8));
    match w.store.extend(l.lease_id, Some(20), None).await.unwrap() {
        ExtendOutcome::Extended { expires_at, .. } => {
            assert_eq!(expires_at, w.clock.now() + time::Duration::seconds(20))
        }
        other => panic!("{other:?}"),
    }
    w.advance(Duration::from_secs(15));
    assert!(w.store.tick().await.unwrap().reaped.is_empty());
    // Without extend_s, the job's own timeout (up to its run-time cap).
    match w.store.extend(l.lease_id, None, None).await.unwrap() {
        ExtendOutcome::Extended { expires_at, .. } => {
            assert_eq!(expires_at, w.clock.now() + time::Duration::seconds(82))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        w.succeed(&l, "1").await,
        FinishOutcome::Recorded {
            status: JobStatus::Completed
        }
    );
    assert_eq!(
        w.store.extend(l.lease_id, None, None).await.unwrap(),
        ExtendOutcome::NotHeld
    );
    assert_eq!(
        w.store.extend(Uuid::now_v7(), None, None).await.unwrap(),
        ExtendOutcome::NotHeld
    );
}

/// A lease held by a node with a credential of its own answers that credential only: another
/// node's or the mesh token's result and extension are refused (and change nothing), several
/// results in one group included; a node without a credential takes anybody's.
pub async fn leases_answer_their_holders_only(b: &dyn Backend) {
    let w = World::new(b, limits(100, 100));
    for _ in 0..4 {
        w.submit(job("q", serde_json::Value::Null)).await;
    }
    let bound: Arc<HashSet<String>> = Arc::new(["a".to_owned(), "b".to_owned()].into());
    let rule = |reporter: Option<&str>| HolderRule {
        reporter: reporter.map(str::to_owned),
        bound: bound.clone(),
    };
    let held = w.lease("a", &["q"], &[], 3).await;
    let free = w.lease("legacy", &["q"], &[], 1).await.remove(0);
    let report = |l: &LeasedJob, rule: Option<HolderRule>| ResultReport {
        job_id: l.job_id,
        lease_id: l.lease_id,
        outcome: Outcome::Success,
        result: "1".into(),
        error: None,
        holder: rule.map(Box::new),
    };
    let wrong = FinishOutcome::WrongHolder { holder: "a".into() };
    // Refused together (one group where the backend batches) and alone, failure included.
    let tasks: Vec<_> = [rule(Some("b")), rule(None)]
        .into_iter()
        .map(|r| {
            let (store, report) = (w.store.clone(), report(&held[0], Some(r)));
            tokio::spawn(async move { store.finish(report).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), wrong);
    }
    let mut failure = report(&held[1], Some(rule(Some("b"))));
    failure.outcome = Outcome::Failure;
    assert_eq!(w.store.finish(failure).await.unwrap(), wrong);
    assert_eq!(
        w.store
            .extend(held[0].lease_id, None, Some(rule(Some("b"))))
            .await
            .unwrap(),
        ExtendOutcome::WrongHolder { holder: "a".into() }
    );
    assert_eq!(
        w.store.get(held[0].job_id).await.unwrap().unwrap().status,
        JobStatus::InProgress
    );
    // The holder itself, and anybody for a node without a credential.
    assert!(matches!(
        w.store
            .extend(held[0].lease_id, None, Some(rule(Some("a"))))
            .await
            .unwrap(),
        ExtendOutcome::Extended { .. }
    ));
    let completed = FinishOutcome::Recorded {
        status: JobStatus::Completed,
    };
    for (l, r) in [(&held[0], rule(Some("a"))), (&free, rule(Some("b")))] {
        assert_eq!(w.store.finish(report(l, Some(r))).await.unwrap(), completed);
    }
    assert_eq!(
        w.store.finish(report(&held[2], None)).await.unwrap(),
        completed
    );
}

pub async fn cancel_and_requeue(b: &dyn Backend) {
    let w = World::new(b, limits(100, 100));
    let queued = w.submit(job("q", serde_json::Value::Null)).await;
    let running = w.submit(job("q", serde_json::Value::Null)).await;
    let cancelled = w.store.cancel(queued).await.unwrap().unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    let l = w.lease("n", &["q"], &[], 10).await;
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].job_id, running);
    assert_eq!(
        w.store.cancel(running).await.unwrap().unwrap().status,
        JobStatus::Cancelled
    );
    // The holder of a cancelled job's lease is refused.
    assert!(matches!(
        w.succeed(&l[0], "1").await,
        FinishOutcome::LeaseNotHeld {
            status: JobStatus::Cancelled
        }
    ));
    assert_eq!(w.store.counts().inflight, 0);
    // Cancelling a finished job changes nothing.
    assert_eq!(
        w.store.cancel(running).await.unwrap().unwrap().status,
        JobStatus::Cancelled
    );
    assert!(w.store.cancel(Uuid::now_v7()).await.unwrap().is_none());
    // Requeue brings it back with fresh attempts.
    let back = w.store.requeue(running).await.unwrap().unwrap();
    assert_eq!(back.status, JobStatus::Accepted);
    assert_eq!(back.attempt, 0);
    let again = w.lease("n", &["q"], &[], 10).await;
    assert_eq!(again[0].job_id, running);
    assert_eq!(again[0].attempt, 1);
    // Requeue of an in-progress job ends its lease.
    w.store.requeue(running).await.unwrap();
    assert!(matches!(
        w.succeed(&again[0], "1").await,
        FinishOutcome::LeaseNotHeld { .. }
    ));
    assert_eq!(w.lease("n", &["q"], &[], 10).await[0].job_id, running);
}

pub async fn queues_pause_resume_and_purge(b: &dyn Backend) {
    let w = World::new(b, limits(100, 100));
    for i in 0..3 {
        w.submit(job("p", serde_json::json!(i))).await;
    }
    w.store.set_paused("p".into(), true).await.unwrap();
    assert!(w.lease("n", &["p"], &[], 10).await.is_empty());
    let mut rx = w.store.ready_signal();
    rx.borrow_and_update();
    w.store.set_paused("p".into(), false).await.unwrap();
    assert!(rx.has_changed().unwrap(), "resuming wakes long polls");
    assert_eq!(w.lease("n", &["p"], &[], 1).await.len(), 1);
    let (purged, state) = w.store.purge("p".into()).await.unwrap();
    assert_eq!(purged, 2);
    assert!(!state.paused);
    assert!(w.lease("n", &["p"], &[], 10).await.is_empty());
    assert_eq!(w.store.counts().total_depth(), 0);
    assert_eq!(w.store.counts().inflight, 1);
}

pub async fn finished_results_stay_pending_until_acknowledged(b: &dyn Backend) {
    let w = World::new(b, limits(100, 100));
    let a = w.submit(job("q", serde_json::Value::Null)).await;
    let bb = w.submit(job("q", serde_json::Value::Null)).await;
    let mut finished = w.store.finished_signal();
    finished.borrow_and_update();
    for l in w.lease("n", &["q"], &[], 2).await {
        w.succeed(&l, "1").await;
    }
    assert!(finished.has_changed().unwrap());
    let pending: Vec<Uuid> = w
        .store
        .pending_results(10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.job_id)
        .collect();
    assert_eq!(pending.len(), 2);
    assert!(pending.contains(&a) && pending.contains(&bb));
    assert_eq!(
        w.store
            .ack_results(vec![a, a, Uuid::now_v7()])
            .await
            .unwrap(),
        1
    );
    let pending: Vec<Uuid> = w
        .store
        .pending_results(10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.job_id)
        .collect();
    assert_eq!(pending, vec![bb]);
    assert_eq!(w.store.counts().results_pending, 1);
    assert!(w.store.get(a).await.unwrap().unwrap().result_acked);
}

/// A job whose submitter does not follow its result (`follow_result: false`) keeps its
/// result but never counts as pending, however it ends (success alone or in a group,
/// failure, cancel, a reaped last attempt, a requeue and a second end), across a reopen.
pub async fn unfollowed_results_are_never_pending(b: &dyn Backend) {
    let mut w = World::new(b, limits(100, 100));
    let unfollowed = |payload: serde_json::Value| {
        let mut j = job("q", payload);
        j.follow_result = Some(false);
        j.max_attempts = Some(1);
        j.timeout_s = Some(30);
        j
    };
    let followed = w.submit(job("q", serde_json::json!("followed"))).await;
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(w.submit(unfollowed(serde_json::json!(n))).await);
    }
    let cancelled = w.submit(unfollowed(serde_json::json!("cancel"))).await;
    let mut leased = w.lease("n", &["q"], &[], 7).await;
    assert_eq!(leased.len(), 7);
    // Several results at once (a backend may record them as one group), then the rest.
    let together: Vec<LeasedJob> = leased.drain(..4).collect();
    let tasks: Vec<_> = together
        .iter()
        .map(|l| {
            let (store, report) = (
                w.store.clone(),
                ResultReport {
                    holder: None,
                    job_id: l.job_id,
                    lease_id: l.lease_id,
                    outcome: Outcome::Success,
                    result: "{\"ok\":1}".into(),
                    error: None,
                },
            );
            tokio::spawn(async move { store.finish(report).await })
        })
        .collect();
    for task in tasks {
        let outcome = task.await.expect("a result task").expect("finish");
        assert!(
            matches!(outcome, FinishOutcome::Recorded { .. }),
            "{outcome:?}"
        );
    }
    let failing = leased.pop().unwrap();
    w.fail(&failing, false).await;
    let reaped = leased.pop().unwrap();
    for l in &leased {
        w.succeed(l, "2").await;
    }
    w.store.cancel(cancelled).await.unwrap();
    w.advance(Duration::from_secs(31));
    let report = w.store.tick().await.unwrap();
    assert_eq!(report.reaped.len(), 1);
    assert_eq!(w.status(reaped.job_id).await, JobStatus::Failed);
    let pending = |w: &World<'_>| {
        let store = w.store.clone();
        async move {
            let ids: Vec<Uuid> = store
                .pending_results(100)
                .await
                .unwrap()
                .iter()
                .map(|r| r.job_id)
                .collect();
            (ids, store.counts().results_pending)
        }
    };
    assert_eq!(
        pending(&w).await,
        (vec![followed], 1),
        "only the followed job is pending"
    );
    // The first job leased is the followed one; the others of the group are not followed.
    assert_eq!(together[0].job_id, followed);
    let kept = w.store.get(together[1].job_id).await.unwrap().unwrap();
    assert_eq!(
        kept.result.as_deref(),
        Some("{\"ok\":1}"),
        "the result is kept"
    );
    assert!(kept.result_acked);
    // Requeued and finished again: still not pending.
    w.store.requeue(together[1].job_id).await.unwrap();
    let again = w.lease("n", &["q"], &[], 1).await;
    assert_eq!(again[0].job_id, together[1].job_id);
    w.succeed(&again[0], "3").await;
    assert_eq!(pending(&w).await.1, 1);
    w.reopen();
    assert_eq!(
        pending(&w).await,
        (vec![followed], 1),
        "counted again from the data"
    );
    assert!(ids.iter().all(|id| *id != followed));
    // A live unfollowed job keeps its flag across a reopen.
    let live = w.submit(unfollowed(serde_json::json!("live"))).await;
    w.reopen();
    let leased = w.lease("n", &["q"], &[], 1).await;
    assert_eq!(leased[0].job_id, live);
    w.succeed(&leased[0], "4").await;
    assert_eq!(pending(&w).await, (vec![followed], 1));
}

pub async fn ids_are_found_by_prefix_or_suffix(b: &dyn Backend) {
    let w = World::new(b, limits(100, 100));
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(w.submit(job("q1", serde_json::json!({ "n": n }))).await);
    }
    let text = ids[1].to_string();
    let find = |frag: String| {
        let store = w.store.clone();
        async move { store.find_ids(&frag, 10).await.unwrap() }
    };
    // The end of an id is its random part: it names one job.
    assert_eq!(
        find(text[text.len() - 12..].to_string()).await,
        vec![ids[1]]
    );
    assert_eq!(find(text.clone()).await, vec![ids[1]]);
    // A prefix with hyphens in it names one job too when it reaches the random part.
    assert_eq!(find(text[..35].to_string()).await, vec![ids[1]]);
    // The start of a UUIDv7 is its timestamp: jobs made in one millisecond share it, and
    // every match comes back, newest first.
    let shared: String = ids[0].to_string()[..8].to_string();
    let same_ms: Vec<Uuid> = ids
        .iter()
        .rev()
        .filter(|id| id.to_string().starts_with(&shared))
        .copied()
        .collect();
    assert_eq!(find(shared).await, same_ms);
    // The limit holds, and a fragment in neither place matches nothing.
    assert!(w.store.find_ids(&text[..8], 1).await.unwrap().len() <= 1);
    assert!(find("ffffffff-ffff".into()).await.is_empty());
    assert!(find(text[4..16].to_string()).await.is_empty());
}

pub async fn list_filters_and_pages_newest_first(b: &dyn Backend) {
    let w = World::new(b, limits(100, 100));
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            w.submit(job(if i < 3 { "x" } else { "y" }, serde_json::json!(i)))
                .await,
        );
    }
    let (page, next) = w
        .store
        .list(ListFilter {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|j| j.job_id).collect::<Vec<_>>(),
        vec![ids[4], ids[3]]
    );
    let (page, _) = w
        .store
        .list(ListFilter {
            limit: 2,
            before: next,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|j| j.job_id).collect::<Vec<_>>(),
        vec![ids[2], ids[1]]
    );
    let (page, next) = w
        .store
        .list(ListFilter {
            queue: Some("x".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 3);
    assert!(next.is_none());
    let l = w.lease("n", &["y"], &[], 1).await;
    let (page, _) = w
        .store
        .list(ListFilter {
            status: Some(JobStatus::InProgress),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].job_id, l[0].job_id);
    assert_eq!(page[0].lease.as_ref().unwrap().node_id, "n");

    // Dead letters by kind, error text (any case) and time.
    w.advance(Duration::from_secs(60));
    let mut mail = job("z", serde_json::Value::Null);
    mail.kind = "mail".into();
    mail.max_attempts = Some(1);
    let mail_id = w.submit(mail).await;
    let other = w.submit(job("z", serde_json::Value::Null)).await;
    for leased in w.lease("n", &["z"], &[], 10).await {
        w.fail(&leased, false).await;
    }
    let failed = |kind: Option<&str>, error: Option<&str>, since: Option<OffsetDateTime>| {
        let store = w.store.clone();
        let (kind, error) = (kind.map(str::to_owned), error.map(str::to_owned));
        async move {
            let (page, _) = store
                .list(ListFilter {
                    status: Some(JobStatus::Failed),
                    kind,
                    error,
                    since,
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap();
            page.iter().map(|j| j.job_id).collect::<Vec<_>>()
        }
    };
    assert_eq!(failed(Some("mail"), None, None).await, vec![mail_id]);
    assert_eq!(failed(None, None, None).await, vec![other, mail_id]);
    let message = w
        .store
        .get(mail_id)
        .await
        .unwrap()
        .unwrap()
        .error
        .unwrap()
        .message;
    let piece = message[2..message.len().min(12)].to_uppercase();
    assert_eq!(failed(None, Some(&piece), None).await, vec![other, mail_id]);
    assert!(failed(None, Some("no such text"), None).await.is_empty());
    let now = w.clock.now();
    assert_eq!(failed(None, None, Some(now)).await, vec![other, mail_id]);
    assert!(
        failed(None, None, Some(now + time::Duration::seconds(1)))
            .await
            .is_empty()
    );
}

pub async fn everything_survives_a_reopen(b: &dyn Backend) {
    let mut w = World::new(b, limits(100, 100));
    let done = w.submit(job("q", serde_json::Value::Null)).await;
    let running = w.submit(job("q", serde_json::Value::Null)).await;
    let mut delayed = job("q", serde_json::Value::Null);
    delayed.run_at = Some(w.clock.now() + time::Duration::seconds(30));
    let delayed = w.submit(delayed).await;
    let waiting = w.submit(job("q", serde_json::Value::Null)).await;
    let mut keyed = job("k", serde_json::json!(1));
    keyed.idempotency_key = Some("kept".into());
    let keyed_id = w.submit(keyed.clone()).await;
    w.store.set_paused("k".into(), true).await.unwrap();
    let leased = w.lease("n", &["q"], &[], 2).await;
    assert_eq!(
        leased.iter().map(|l| l.job_id).collect::<Vec<_>>(),
        vec![done, running]
    );
    w.succeed(&leased[0], r#""ok""#).await;
    // Running jobs per queue are exact at open; between exact counts PostgreSQL does not
    // follow them (docs/API.md, `/v1/queues`), so they are compared after the reopen only.
    let without_running = |mut c: crate::Counts| {
        c.queue_running.clear();
        c
    };
    let before = without_running(w.store.counts());

    w.reopen();
    assert_eq!(without_running(w.store.counts()), before);
    assert_eq!(w.store.counts().queue_running, vec![("q".to_string(), 1)]);
    assert_eq!(w.status(done).await, JobStatus::Completed);
    // The live lease is still live: its holder can finish.
    assert_eq!(
        w.succeed(&leased[1], "1").await,
        FinishOutcome::Recorded {
            status: JobStatus::Completed
        }
    );
    assert_eq!(
        w.lease("n", &["q"], &[], 5)
            .await
            .iter()
            .map(|l| l.job_id)
            .collect::<Vec<_>>(),
        vec![waiting]
    );
    w.advance(Duration::from_secs(30));
    w.store.tick().await.unwrap();
    assert_eq!(w.lease("n", &["q"], &[], 5).await[0].job_id, delayed);
    // Idempotency keys and paused queues too.
    let again = w.store.submit(vec![w.spec(keyed)]).await.unwrap();
    assert!(matches!(again[0], SubmitOutcome::Existing { job_id, .. } if job_id == keyed_id));
    assert!(w.lease("n", &["k"], &[], 5).await.is_empty());
}

pub async fn submits_wake_long_polls(b: &dyn Backend) {
    let w = World::new(b, limits(100, 100));
    let mut rx = w.store.ready_signal();
    rx.borrow_and_update();
    let store = w.store.clone();
    let spec = w.spec(job("q", serde_json::Value::Null));
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        store.submit(vec![spec]).await.unwrap();
    });
    // A waiter may be woken for other reasons too (a PostgreSQL store's listener signals once
    // when it subscribes); like the hub's long poll, it looks again and waits again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::timeout_at(deadline, rx.changed())
            .await
            .expect("woken by the submit")
            .unwrap();
        if w.lease("n", &["q"], &[], 1).await.len() == 1 {
            break;
        }
    }
}

/// Extensions keep a lease alive but never past its job's `timeout_s` (plus the grace for the
/// node's own TIMEOUT report); then the reaper takes it back as a TIMEOUT, retryably. (A lease
/// never extended that simply expires is a quiet node, not a TIMEOUT.)
pub async fn extensions_never_run_a_job_past_its_timeout(b: &dyn Backend) {
    let w = World::new(b, limits(100, 100));
    let mut j = job("q", serde_json::Value::Null);
    j.timeout_s = Some(10);
    let id = w.submit(j).await;
    let l = w.lease("n", &["q"], &[], 1).await.remove(0);
    let started = w.clock.now();
    let cap = started
        + time::Duration::seconds(10)
        + time::Duration::milliseconds(crate::jobs::RUN_GRACE_MS);
    w.advance(Duration::from_secs(8));
    match w.store.extend(l.lease_id, Some(60), None).await.unwrap() {
        ExtendOutcome::Extended { expires_at, .. } => assert_eq!(expires_at, cap),
        other => panic!("{other:?}"),
    }
    w.advance(Duration::from_secs(6));
    assert!(w.store.tick().await.unwrap().reaped.is_empty(), "not yet");
    w.advance(Duration::from_secs(2));
    let reaped = w.store.tick().await.unwrap().reaped;
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].status, JobStatus::Accepted, "retried");
    let record = w.store.get(id).await.unwrap().unwrap();
    let error = record.error.unwrap();
    assert!(error.message.starts_with("TIMEOUT"), "{}", error.message);
    assert!(error.retryable);
    // On its last attempt the job fails, still saying why.
    let mut last = job("q", serde_json::Value::Null);
    last.timeout_s = Some(10);
    last.max_attempts = Some(1);
    let last_id = w.submit(last).await;
    let leased = w.lease("n", &["q"], &[], 10).await;
    let l = leased.iter().find(|l| l.job_id == last_id).unwrap();
    w.advance(Duration::from_secs(8));
    w.store.extend(l.lease_id, Some(60), None).await.unwrap();
    w.advance(Duration::from_secs(8));
    w.store.tick().await.unwrap();
    let record = w.store.get(last_id).await.unwrap().unwrap();
    assert_eq!(record.status, JobStatus::Failed);
    let error = record.error.unwrap();
    assert!(
        error.message.starts_with("TIMEOUT") && error.message.ends_with("no attempts left"),
        "{}",
        error.message
    );
}

/// `key_concurrency` 1: one job per key runs at a time, across leases; the others wait in
/// order and start as running ones end; keyless jobs are never held back.
pub async fn key_concurrency_runs_one_job_per_key(b: &dyn Backend) {
    use sheratan_proto::queues::QueueSettingsPatch;
    let w = World::new(b, limits(100, 100));
    let patch = QueueSettingsPatch {
        key_concurrency: Some(Some(1)),
        ..Default::default()
    };
    let settings = w
        .store
        .update_queue_settings("q".into(), patch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(settings.key_concurrency, Some(1));
    for (n, key) in ["a", "a", "b", "a", "b"].iter().enumerate() {
        w.submit(keyed("q", key, n as i64)).await;
    }
    w.submit(job("q", serde_json::json!({"n": 5}))).await;
    let ns = |jobs: &[LeasedJob]| -> Vec<i64> {
        jobs.iter()
            .map(|j| {
                serde_json::from_str::<serde_json::Value>(&j.payload).unwrap()["n"]
                    .as_i64()
                    .unwrap()
            })
            .collect()
    };
    let first = w.lease("n1", &["q"], &[], 10).await;
    assert_eq!(ns(&first), vec![0, 2, 5], "one per key, keyless too");
    assert!(w.lease("n2", &["q"], &[], 10).await.is_empty());
    // Job 0 (key a) ends: the next a is job 1, not job 3.
    w.succeed(&first[0], "1").await;
    let next = w.lease("n2", &["q"], &[], 10).await;
    assert_eq!(ns(&next), vec![1]);
    // A failure frees its key too.
    w.fail(&first[1], false).await;
    assert_eq!(ns(&w.lease("n2", &["q"], &[], 10).await), vec![4]);
    // Lifting the limit lets the rest go; it never touched what was running.
    w.store
        .update_queue_settings(
            "q".into(),
            QueueSettingsPatch {
                key_concurrency: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ns(&w.lease("n3", &["q"], &[], 10).await), vec![3]);
    assert_eq!(w.store.counts().inflight, 4);
}

/// A queue's `concurrency` caps its running jobs; its `rate` lets a burst start, then one
/// job per token; `key_rate` paces each key on its own.
pub async fn queue_concurrency_and_rates_hold_jobs_back(b: &dyn Backend) {
    use sheratan_proto::queues::{QueueSettingsPatch, Rate};
    let w = World::new(b, limits(100, 100));
    let set = |patch: QueueSettingsPatch| {
        let store = w.store.clone();
        async move {
            store
                .update_queue_settings("q".into(), patch)
                .await
                .unwrap()
                .unwrap()
        }
    };
    set(QueueSettingsPatch {
        concurrency: Some(Some(2)),
        ..Default::default()
    })
    .await;
    for n in 0..6 {
        w.submit(job("q", serde_json::json!({ "n": n }))).await;
    }
    let running = w.lease("n", &["q"], &[], 10).await;
    assert_eq!(running.len(), 2);
    assert!(w.lease("n", &["q"], &[], 10).await.is_empty());
    w.succeed(&running[0], "1").await;
    assert_eq!(w.lease("n", &["q"], &[], 10).await.len(), 1);

    // 2 per second with a burst of 2, no concurrency cap.
    set(QueueSettingsPatch {
        concurrency: Some(None),
        rate: Some(Some(Rate {
            limit: 2,
            period_s: 1,
            burst: Some(2),
        })),
        ..Default::default()
    })
    .await;
    assert_eq!(w.lease("n", &["q"], &[], 10).await.len(), 2, "the burst");
    assert!(w.lease("n", &["q"], &[], 10).await.is_empty());
    w.advance(Duration::from_millis(499));
    assert!(w.lease("n", &["q"], &[], 10).await.is_empty());
    w.advance(Duration::from_millis(1));
    assert_eq!(w.lease("n", &["q"], &[], 10).await.len(), 1);

    // Per key: 1 per 10 s per key (shorter than the jobs' leases, which stay live).
    set(QueueSettingsPatch {
        rate: Some(None),
        key_rate: Some(Some(Rate {
            limit: 1,
            period_s: 10,
            burst: None,
        })),
        ..Default::default()
    })
    .await;
    for (n, key) in ["k1", "k1", "k2"].iter().enumerate() {
        w.submit(keyed("r", key, n as i64)).await;
    }
    // Queue r has no settings: the key limit of q does not apply to it.
    assert_eq!(w.lease("n", &["r"], &[], 10).await.len(), 3);
    for (n, key) in ["k1", "k1", "k2", "k1"].iter().enumerate() {
        w.submit(keyed("q", key, n as i64)).await;
    }
    assert_eq!(
        w.lease("n", &["q"], &[], 10).await.len(),
        2,
        "k1 once, k2 once"
    );
    assert!(w.lease("n", &["q"], &[], 10).await.is_empty());
    // One more of k1 per period, however many wait (none is forgotten).
    for nth in ["second", "third"] {
        w.advance(Duration::from_secs(9));
        w.store.tick().await.unwrap();
        assert!(
            w.lease("n", &["q"], &[], 10).await.is_empty(),
            "k1's {nth} too early"
        );
        w.advance(Duration::from_secs(1));
        w.store.tick().await.unwrap();
        assert_eq!(w.lease("n", &["q"], &[], 10).await.len(), 1, "k1's {nth}");
    }
}

/// Settings: a patch changes only what it names, bad values are refused naming the field and
/// change nothing, and everything survives a reopen.
pub async fn queue_settings_patch_validate_and_persist(b: &dyn Backend) {
    use sheratan_proto::queues::QueueSettingsPatch;
    let mut w = World::new(b, limits(100, 100));
    let patch: QueueSettingsPatch =
        serde_json::from_str(r#"{"concurrency": 3, "max_attempts": 7}"#).unwrap();
    w.store
        .update_queue_settings("q".into(), patch)
        .await
        .unwrap()
        .unwrap();
    let bad: QueueSettingsPatch =
        serde_json::from_str(r#"{"concurrency": 0, "paused": true}"#).unwrap();
    let err = w
        .store
        .update_queue_settings("q".into(), bad)
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.starts_with("concurrency"), "{err}");
    w.store.set_paused("q".into(), true).await.unwrap();
    w.reopen();
    let all = w.store.queue_settings().await.unwrap();
    let q = &all.iter().find(|(n, _)| n == "q").unwrap().1;
    assert_eq!(q.concurrency, Some(3));
    assert_eq!(q.max_attempts, Some(7));
    assert!(q.paused);
    // The limit still holds after the reopen (the cap of 3 is enforced from the store).
    w.store.set_paused("q".into(), false).await.unwrap();
    for n in 0..5 {
        w.submit(job("q", serde_json::json!({ "n": n }))).await;
    }
    assert_eq!(w.lease("n", &["q"], &[], 10).await.len(), 3);
}

/// A job's own retry backoff replaces the hub's.
pub async fn a_jobs_own_retry_backoff_is_used(b: &dyn Backend) {
    let w = World::new(b, limits(100, 100));
    let mut j = job("q", serde_json::Value::Null);
    j.retry = Some(sheratan_proto::queues::RetryPolicy {
        base_ms: Some(60_000),
        max_ms: Some(60_000),
    });
    let id = w.submit(j).await;
    let l = w.lease("n", &["q"], &[], 1).await.remove(0);
    w.fail(&l, true).await;
    let record = w.store.get(id).await.unwrap().unwrap();
    // ±20 % jitter, capped at max_ms: between 48 s and 60 s; the hub's base is 1 s.
    let wait = record.run_at - w.clock.now();
    assert!(
        wait >= time::Duration::seconds(48) && wait <= time::Duration::seconds(60),
        "{wait}"
    );
}

/// Finished jobs are deleted (results and all, pending results no longer counted); live ones
/// named with them are left alone.
pub async fn finished_jobs_are_deleted_live_ones_stay(b: &dyn Backend) {
    let w = World::new(b, limits(100, 100));
    let done = w.submit(job("q", serde_json::json!({"n": 1}))).await;
    let waiting = w.submit(job("q", serde_json::json!({"n": 2}))).await;
    let leased = w.lease("n", &["q"], &[], 1).await.remove(0);
    assert_eq!(leased.job_id, done);
    w.succeed(&leased, "1").await;
    let running_id = w.submit(job("q", serde_json::json!({"n": 3}))).await;
    let running = w.lease("n", &["q"], &[], 2).await;
    assert_eq!(running.len(), 2);
    assert_eq!(w.store.counts().results_pending, 1);
    let deleted = w
        .store
        .delete_finished(vec![done, waiting, running_id, Uuid::now_v7()])
        .await
        .unwrap();
    assert_eq!(deleted, 1, "only the finished job");
    assert!(w.store.get(done).await.unwrap().is_none());
    assert!(w.store.get(running_id).await.unwrap().is_some());
    assert_eq!(w.store.counts().results_pending, 0);
    assert_eq!(w.store.counts().inflight, 2);
}

/// Retention deletes finished jobs past their cutoffs only, oldest first, in batches of the
/// size asked; a queue's own cutoffs and a longer one for failed jobs hold; running, waiting
/// and delayed jobs stay however old; the newest deleted id is kept across a reopen.
pub async fn retention_deletes_only_expired_finished_jobs(b: &dyn Backend) {
    use crate::retention::{Cutoffs, RetentionRules};
    let mut w = World::new(b, limits(1000, 1000));
    let n = |i: i32| serde_json::json!({"n": i});
    // Three finished jobs in queue a (completed, failed, cancelled), one in b, all old.
    let mut done_a = Vec::new();
    for i in 0..3 {
        done_a.push(w.submit(job("a", n(i))).await);
    }
    let leased = w.lease("w", &["a"], &[], 2).await;
    w.succeed(&leased[0], "1").await;
    w.store.cancel(done_a[2]).await.unwrap();
    let mut non_retryable = job("a", n(9));
    non_retryable.max_attempts = Some(1);
    let failed = w.submit(non_retryable).await;
    let f = w.lease("w", &["a"], &[], 1).await;
    w.fail(&f[0], false).await;
    let in_b = w.submit(job("b", n(10))).await;
    let b_leased = w.lease("w", &["b"], &[], 1).await;
    w.succeed(&b_leased[0], "2").await;
    // Live jobs, as old: one running (leased[1]), one waiting, one delayed.
    let waiting = w.submit(job("c", n(11))).await;
    let mut later = job("c", n(12));
    later.run_at = Some(w.clock.now() + time::Duration::days(30));
    let delayed = w.submit(later).await;
    assert_eq!(w.status(failed).await, JobStatus::Failed);
    let pending_before = w.store.counts().results_pending;

    w.advance(Duration::from_secs(3600));
    let now = w.clock.now();
    let ago = |s: i64| Some(now - time::Duration::seconds(s));
    // Nothing is old enough for a 2 h cutoff.
    let two_hours = RetentionRules {
        default: Cutoffs {
            done: ago(7200),
            failed: ago(7200),
        },
        queues: vec![],
    };
    let none = w.store.expire_finished(two_hours, 100).await.unwrap();
    assert_eq!(none.deleted, 0);
    // Queue a keeps failed jobs longer; b keeps everything; the rest go after 30 min.
    let rules = RetentionRules {
        default: Cutoffs {
            done: ago(1800),
            failed: ago(1800),
        },
        queues: vec![
            (
                "a".into(),
                Cutoffs {
                    done: ago(1800),
                    failed: ago(7200),
                },
            ),
            ("b".into(), Cutoffs::default()),
        ],
    };
    let first = w.store.expire_finished(rules.clone(), 1).await.unwrap();
    assert_eq!(first.deleted, 1, "a batch is as small as asked");
    let second = w.store.expire_finished(rules.clone(), 100).await.unwrap();
    assert_eq!(second.deleted, 1);
    let third = w.store.expire_finished(rules.clone(), 100).await.unwrap();
    assert_eq!(third.deleted, 0, "nothing more is due");
    for id in [done_a[0], done_a[2]] {
        assert!(w.store.get(id).await.unwrap().is_none(), "{id} was deleted");
    }
    for id in [failed, in_b, leased[1].job_id, waiting, delayed] {
        assert!(w.store.get(id).await.unwrap().is_some(), "{id} stays");
    }
    let newest = first.newest.max(second.newest);
    assert_eq!(newest, Some(done_a[0].max(done_a[2])));
    assert_eq!(
        w.store.counts().results_pending,
        pending_before - 2,
        "the deleted jobs' unacknowledged results are gone with them"
    );
    assert_eq!(w.store.counts().inflight, 1);
    // Past the failed cutoff too: the dead set goes.
    w.advance(Duration::from_secs(2 * 3600));
    let rules = RetentionRules {
        default: Cutoffs::default(),
        queues: vec![(
            "a".into(),
            Cutoffs {
                done: None,
                failed: Some(w.clock.now() - time::Duration::seconds(7200)),
            },
        )],
    };
    assert_eq!(
        w.store.expire_finished(rules, 100).await.unwrap().deleted,
        1
    );
    assert!(w.store.get(failed).await.unwrap().is_none());
    assert_eq!(
        w.store.purged_through().await.unwrap(),
        Some(failed.max(newest.unwrap()))
    );
    w.reopen();
    assert_eq!(
        w.store.purged_through().await.unwrap(),
        Some(failed.max(newest.unwrap()))
    );
    assert!(w.store.get(waiting).await.unwrap().is_some());
}

/// Expands to one `#[tokio::test]` per conformance case for the backend `make()` returns.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            submit_and_get,
            priority_then_fifo_across_queues,
            capabilities_are_matched,
            no_job_is_held_by_two_live_leases,
            expired_leases_are_reaped_then_failed_when_attempts_run_out,
            a_result_is_counted_once,
            retryable_failures_back_off_then_land_in_failed,
            non_retryable_failures_fail_at_once,
            idempotency_keys_dedupe_and_detect_collisions,
            concurrent_submits_of_one_key_make_one_job,
            queue_depth_limits_submits,
            inflight_limit_holds_jobs_back,
            delayed_jobs_wait_for_run_at,
            leases_can_be_extended,
            leases_answer_their_holders_only,
            cancel_and_requeue,
            queues_pause_resume_and_purge,
            finished_results_stay_pending_until_acknowledged,
            unfollowed_results_are_never_pending,
            list_filters_and_pages_newest_first,
            ids_are_found_by_prefix_or_suffix,
            everything_survives_a_reopen,
            submits_wake_long_polls,
            extensions_never_run_a_job_past_its_timeout,
            key_concurrency_runs_one_job_per_key,
            queue_concurrency_and_rates_hold_jobs_back,
            queue_settings_patch_validate_and_persist,
            a_jobs_own_retry_backoff_is_used,
            finished_jobs_are_deleted_live_ones_stay,
            retention_deletes_only_expired_finished_jobs
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let backend = $make;
                $crate::conformance::$case(&backend).await;
            }
        )*
    };
}

/// Auction records: saved, replaced, listed newest first, kept across a reopen.
pub async fn auction_records_round_trip(
    store: &dyn crate::AuctionStore,
    reopen: &dyn Fn() -> Box<dyn crate::AuctionStore>,
) {
    use sheratan_proto::auction::{AuctionRecord, BidRecord, RoundRecord};
    let record = |job: &str, winner: Option<&str>| AuctionRecord {
        job_id: job.into(),
        winner: winner.map(str::to_owned),
        rounds: vec![RoundRecord {
            round: 1,
            bids: vec![BidRecord {
                node_id: "host-a".into(),
                accept: true,
                price: 1.5,
                eta_ms: 100,
                reason: "ok".into(),
            }],
            winner: winner.map(str::to_owned),
            outcome: "completed".into(),
            started_at: time::macros::datetime!(2026-11-27 08:00 UTC),
            elapsed_ms: 12,
            bid_ms: 1.25,
        }],
    };
    store.save_auction(&record("j1", None)).await.unwrap();
    store
        .save_auction(&record("j1", Some("host-a")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    store
        .save_auction(&record("j2", Some("host-b")))
        .await
        .unwrap();
    assert_eq!(
        store.auction("j1").await.unwrap(),
        Some(record("j1", Some("host-a")))
    );
    assert_eq!(store.auction("nope").await.unwrap(), None);
    let list = store.auctions(10).await.unwrap();
    assert_eq!(
        list.iter().map(|a| a.job_id.as_str()).collect::<Vec<_>>(),
        vec!["j2", "j1"]
    );
    let again = reopen();
    assert_eq!(
        again.auction("j2").await.unwrap(),
        Some(record("j2", Some("host-b")))
    );
}

/// Credentials: created once per name, listed with everything but the secret, revoked once,
/// last use kept, all of it durable.
pub async fn credentials_round_trip(
    store: &dyn crate::CredentialStore,
    reopen: &dyn Fn() -> Box<dyn crate::CredentialStore>,
) {
    use sheratan_proto::credentials::CredentialRole;
    let at = time::macros::datetime!(2026-12-05 12:00 UTC);
    let record = |name: &str, role: CredentialRole| crate::CredentialRecord {
        name: name.into(),
        role,
        queues: if role == CredentialRole::Submit {
            vec!["a".into(), "b".into()]
        } else {
            vec![]
        },
        secret_sha256: format!("{:064x}", name.len()),
        signing_key: format!("{:064x}", name.len() + 100),
        created_at: at,
        expires_at: (role == CredentialRole::Read).then(|| at + time::Duration::days(30)),
        revoked_at: None,
        last_used_at: None,
    };
    assert!(
        store
            .create_credential(record("w-1", CredentialRole::Node))
            .await
            .unwrap()
    );
    assert!(
        store
            .create_credential(record("ci", CredentialRole::Submit))
            .await
            .unwrap()
    );
    assert!(
        store
            .create_credential(record("viewer", CredentialRole::Read))
            .await
            .unwrap()
    );
    assert!(
        !store
            .create_credential(record("w-1", CredentialRole::Admin))
            .await
            .unwrap(),
        "a name is taken once"
    );
    let all = store.credentials().await.unwrap();
    let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["ci", "viewer", "w-1"]);
    assert_eq!(all[0], record("ci", CredentialRole::Submit));
    assert_eq!(all[1], record("viewer", CredentialRole::Read));
    assert_eq!(all[2].role, CredentialRole::Node, "the first create stands");

    let later = at + time::Duration::minutes(5);
    store
        .touch_credentials(vec![("ci".into(), later), ("nobody".into(), later)])
        .await
        .unwrap();
    store
        .touch_credentials(vec![("ci".into(), at)])
        .await
        .unwrap();
    assert!(store.revoke_credential("w-1", later).await.unwrap());
    assert!(
        !store.revoke_credential("w-1", later).await.unwrap(),
        "once"
    );
    assert!(!store.revoke_credential("nobody", later).await.unwrap());
    assert!(
        !store
            .create_credential(record("w-1", CredentialRole::Node))
            .await
            .unwrap(),
        "a revoked name stays taken"
    );

    let reopened = reopen();
    let all = reopened.credentials().await.unwrap();
    let ci = all.iter().find(|c| c.name == "ci").unwrap();
    assert_eq!(ci.last_used_at, Some(later), "the latest use is kept");
    let w1 = all.iter().find(|c| c.name == "w-1").unwrap();
    assert_eq!(w1.revoked_at, Some(later));
    assert_eq!(all.len(), 3);

    // Its owner may put a new secret under a name, lifting a revocation (and make new ones).
    let mut fresh = record("w-1", CredentialRole::Node);
    fresh.secret_sha256 = "f".repeat(64);
    fresh.queues = vec!["auction".into()];
    reopened.put_credential(fresh.clone()).await.unwrap();
    reopened
        .put_credential(record("relay", CredentialRole::Node))
        .await
        .unwrap();
    let all = reopened.credentials().await.unwrap();
    let w1 = all.iter().find(|c| c.name == "w-1").unwrap();
    assert_eq!(*w1, fresh, "replaced whole, revocation lifted");
    assert_eq!(all.len(), 4);
}

/// Schedules: created once per name, updated, advanced by compare-and-set (of two hubs passing
/// one tick, one counts it), `done_until` never moving back, deleted, all of it durable.
pub async fn schedules_round_trip(
    store: &dyn crate::ScheduleStore,
    reopen: &dyn Fn() -> Box<dyn crate::ScheduleStore>,
) {
    use sheratan_proto::schedules::{RunOutcome, ScheduleRun, ScheduleSpec};
    let at = time::macros::datetime!(2026-12-05 12:00 UTC);
    let spec = |name: &str, cron: &str| -> ScheduleSpec {
        serde_json::from_value(serde_json::json!({
            "name": name, "cron": cron, "job": {"kind": "report", "payload": {"n": 1}}
        }))
        .unwrap()
    };
    let record = |name: &str| crate::ScheduleRecord {
        spec: spec(name, "*/5 * * * *"),
        done_until: at,
        last_run: None,
        last_job_id: None,
        runs: 0,
        skipped: 0,
        missed: 0,
        created_at: at,
        updated_at: at,
    };
    assert!(store.create_schedule(record("nightly")).await.unwrap());
    assert!(store.create_schedule(record("hourly")).await.unwrap());
    assert!(
        !store.create_schedule(record("nightly")).await.unwrap(),
        "a name is taken once"
    );
    let all = store.schedules().await.unwrap();
    assert_eq!(all, vec![record("hourly"), record("nightly")]);

    let later = at + time::Duration::minutes(5);
    let changed = spec("nightly", "0 3 * * *");
    assert!(
        store
            .update_schedule(changed.clone(), None, later)
            .await
            .unwrap()
    );
    assert!(
        !store
            .update_schedule(spec("nobody", "0 3 * * *"), None, later)
            .await
            .unwrap()
    );
    let run = ScheduleRun {
        tick: later,
        outcome: RunOutcome::Submitted,
        job_id: Some("0190".into()),
        reason: None,
    };
    let advance = crate::ScheduleAdvance {
        name: "nightly".into(),
        expect: Some(at),
        done_until: later,
        last_run: Some(run.clone()),
        last_job_id: Some("0190".into()),
        runs: 1,
        skipped: 0,
        missed: 2,
    };
    assert!(store.advance_schedule(advance.clone()).await.unwrap());
    assert!(
        !store.advance_schedule(advance.clone()).await.unwrap(),
        "a second hub passing the same tick does not count it again"
    );
    // Without an expectation (a run-now): counted, and done_until does not move back.
    let run_now = crate::ScheduleAdvance {
        expect: None,
        done_until: at,
        last_run: None,
        last_job_id: None,
        runs: 1,
        missed: 0,
        skipped: 1,
        ..advance.clone()
    };
    assert!(store.advance_schedule(run_now).await.unwrap());
    assert!(
        !store
            .advance_schedule(crate::ScheduleAdvance {
                name: "nobody".into(),
                expect: None,
                ..advance.clone()
            })
            .await
            .unwrap()
    );
    let expected = crate::ScheduleRecord {
        spec: changed.clone(),
        done_until: later,
        last_run: Some(run),
        last_job_id: Some("0190".into()),
        runs: 2,
        skipped: 1,
        missed: 2,
        created_at: at,
        updated_at: later,
    };
    let nightly =
        |all: Vec<crate::ScheduleRecord>| all.into_iter().find(|r| r.spec.name == "nightly");
    assert_eq!(
        nightly(store.schedules().await.unwrap()),
        Some(expected.clone())
    );
    // A resume moves done_until to its time.
    let resumed = later + time::Duration::hours(1);
    assert!(
        store
            .update_schedule(changed.clone(), Some(resumed), resumed)
            .await
            .unwrap()
    );
    let expected = crate::ScheduleRecord {
        done_until: resumed,
        updated_at: resumed,
        ..expected
    };
    assert!(store.delete_schedule("hourly").await.unwrap());
    assert!(!store.delete_schedule("hourly").await.unwrap());

    let reopened = reopen();
    assert_eq!(reopened.schedules().await.unwrap(), vec![expected]);
}
