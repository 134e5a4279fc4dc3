//! Model-based testing of a backend: random sequences of submit, lease, extend, result, time
//! passing with the reaper, cancel and requeue, applied both to the store and to a plain
//! in-memory model of the contract; after every step each job's status and attempt, the
//! live counts and every answer must agree.
//!
//! A backend runs it with `sheratan_store::model_tests!(MyBackend::new(), cases)`; the
//! generated sequences come from proptest, which shrinks a failing one to a short reproducer.

use std::time::Duration;

use proptest::prelude::*;
use sheratan_proto::data::{JobError, JobStatus, Outcome, SubmitJob};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::conformance::{Backend, World, job};
use crate::{Clock, ExtendOutcome, FinishOutcome, ResultReport, StoreLimits};

/// One step of a sequence. Indices pick among the jobs or leases seen so far (modulo).
#[derive(Debug, Clone)]
pub enum Step {
    Submit {
        priority: i32,
    },
    Lease {
        max: u32,
    },
    Extend {
        lease: usize,
    },
    Succeed {
        lease: usize,
    },
    Fail {
        lease: usize,
        retryable: bool,
    },
    /// Time passes (5 s, or 40 s: past a lease's 30 s timeout), then the reaper runs.
    Wait {
        long: bool,
    },
    Cancel {
        job: usize,
    },
    Requeue {
        job: usize,
    },
    /// Concurrent submits, then concurrent leases (up to 2 jobs each): operations that meet
    /// in one group, batched and pipelined. Burst jobs get unique priorities above the
    /// others, so which jobs a burst of leases must hand out is known even though the order
    /// of concurrent submits is not.
    Burst {
        submits: u8,
        leases: u8,
    },
    /// Every live lease's success, reported concurrently.
    SucceedAll,
}

pub fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..3i32).prop_map(|priority| Step::Submit { priority }),
        3 => (1..4u32).prop_map(|max| Step::Lease { max }),
        1 => any::<usize>().prop_map(|lease| Step::Extend { lease }),
        3 => any::<usize>().prop_map(|lease| Step::Succeed { lease }),
        2 => (any::<usize>(), any::<bool>())
            .prop_map(|(lease, retryable)| Step::Fail { lease, retryable }),
        2 => any::<bool>().prop_map(|long| Step::Wait { long }),
        1 => any::<usize>().prop_map(|job| Step::Cancel { job }),
        1 => any::<usize>().prop_map(|job| Step::Requeue { job }),
        2 => (1..6u8, 0..4u8).prop_map(|(submits, leases)| Step::Burst { submits, leases }),
        1 => Just(Step::SucceedAll),
    ]
}

pub fn steps(max: usize) -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(step(), 1..max)
}

const TIMEOUT_S: i64 = 30;
const MAX_ATTEMPTS: u32 = 3;
/// Long enough that a retry's backoff (0.8–1.2 × 10 s, × 2 on the second attempt) is known
/// from the record, never guessed.
const RETRY_BASE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
struct ModelJob {
    id: Uuid,
    /// Submission order: FIFO within a priority, kept across retries and requeues.
    seq: usize,
    priority: i32,
    status: JobStatus,
    attempt: u32,
    run_at: OffsetDateTime,
    /// The live lease and its expiry while in progress.
    lease: Option<(Uuid, OffsetDateTime)>,
    /// The lease whose result was recorded last (a repeat of it is a duplicate).
    result_lease: Option<Uuid>,
    /// When the live lease began: extensions never reach past its run-time cap.
    started: OffsetDateTime,
}

#[derive(Default)]
struct Model {
    jobs: Vec<ModelJob>,
    /// Every lease handed out, live or not, with its job's index.
    leases: Vec<(Uuid, usize)>,
    /// The next burst job's priority (unique, above every single submit's).
    burst_priority: i32,
}

impl Model {
    fn ready(&self, now: OffsetDateTime) -> Vec<usize> {
        let mut ready: Vec<usize> = (0..self.jobs.len())
            .filter(|&i| self.jobs[i].status == JobStatus::Accepted && self.jobs[i].run_at <= now)
            .collect();
        ready.sort_by_key(|&i| (std::cmp::Reverse(self.jobs[i].priority), self.jobs[i].seq));
        ready
    }

    fn finish_answer(&self, i: usize, lease: Uuid) -> Option<FinishOutcome> {
        let j = &self.jobs[i];
        if j.status == JobStatus::InProgress && j.lease.map(|(l, _)| l) == Some(lease) {
            return None;
        }
        Some(if j.result_lease == Some(lease) {
            FinishOutcome::Duplicate { status: j.status }
        } else {
            FinishOutcome::LeaseNotHeld { status: j.status }
        })
    }
}

/// Runs `steps` against a fresh store of `backend` and the model; panics at the first
/// disagreement, naming the step.
pub async fn run(backend: &dyn Backend, steps: &[Step]) {
    let limits = StoreLimits {
        retry_base: RETRY_BASE,
        ..StoreLimits::default()
    };
    let w = World::new(backend, limits);
    let mut m = Model::default();
    for (n, step) in steps.iter().enumerate() {
        let at = format!("step {n} ({step:?}) of {steps:?}");
        let mut s = Apply {
            w: &w,
            m: &mut m,
            n,
            now: w.clock.now(),
            at: &at,
        };
        match *step {
            Step::Submit { priority } => s.submit(priority).await,
            Step::Lease { max } => s.lease(max).await,
            Step::Extend { lease } => s.extend(lease).await,
            Step::Succeed { lease } => s.finish(lease, None).await,
            Step::Fail { lease, retryable } => s.finish(lease, Some(retryable)).await,
            Step::Wait { long } => s.wait(long).await,
            Step::Cancel { job } => s.cancel(job).await,
            Step::Requeue { job } => s.requeue(job).await,
            Step::Burst { submits, leases } => {
                s.burst_submits(submits).await;
                s.burst_leases(leases).await;
            }
            Step::SucceedAll => s.succeed_all().await,
        }
        compare(&w, &m, &at).await;
    }
}

/// One step applied to the store and to the model, checking the store's answers.
struct Apply<'a, 'w> {
    w: &'a World<'w>,
    m: &'a mut Model,
    /// The step's number, in every job's payload.
    n: usize,
    now: OffsetDateTime,
    /// The step, for assertion messages.
    at: &'a str,
}

impl Apply<'_, '_> {
    fn spec(&self, priority: i32, payload: serde_json::Value) -> SubmitJob {
        let mut j = job("q", payload);
        j.priority = priority;
        j.max_attempts = Some(MAX_ATTEMPTS);
        j.timeout_s = Some(TIMEOUT_S as u32);
        j
    }

    fn accepted(&mut self, id: Uuid, priority: i32) {
        self.m.jobs.push(ModelJob {
            id,
            seq: self.m.jobs.len(),
            priority,
            status: JobStatus::Accepted,
            attempt: 0,
            run_at: self.now,
            lease: None,
            result_lease: None,
            started: self.now,
        });
    }

    /// The model's side of a lease the store handed out for job `i`.
    fn leased(&mut self, leased: &crate::LeasedJob, i: usize) {
        let at = self.at;
        let j = &mut self.m.jobs[i];
        j.status = JobStatus::InProgress;
        j.attempt += 1;
        assert_eq!(leased.attempt, j.attempt, "attempt at {at}");
        let expires = self.now + time::Duration::seconds(TIMEOUT_S);
        assert_eq!(leased.lease_expires_at, expires, "expiry at {at}");
        j.lease = Some((leased.lease_id, expires));
        j.started = self.now;
        self.m.leases.push((leased.lease_id, i));
    }

    async fn submit(&mut self, priority: i32) {
        let spec = self.spec(priority, serde_json::json!({"n": self.n}));
        let id = self.w.submit(spec).await;
        self.accepted(id, priority);
    }

    async fn lease(&mut self, max: u32) {
        let got = self.w.lease("node", &["q"], &[], max).await;
        let want: Vec<usize> = self
            .m
            .ready(self.now)
            .into_iter()
            .take(max as usize)
            .collect();
        let got_ids: Vec<Uuid> = got.iter().map(|l| l.job_id).collect();
        let want_ids: Vec<Uuid> = want.iter().map(|&i| self.m.jobs[i].id).collect();
        assert_eq!(got_ids, want_ids, "leased jobs at {}", self.at);
        for (leased, i) in got.iter().zip(want) {
            self.leased(leased, i);
        }
    }

    async fn extend(&mut self, lease: usize) {
        let Some(&(lease_id, i)) = pick(&self.m.leases, lease) else {
            return;
        };
        let got = self
            .w
            .store
            .extend(lease_id, None, None)
            .await
            .expect("extend");
        let j = &mut self.m.jobs[i];
        match j.lease {
            Some((l, _)) if l == lease_id && j.status == JobStatus::InProgress => {
                let cap = j.started
                    + time::Duration::seconds(TIMEOUT_S)
                    + time::Duration::milliseconds(crate::jobs::RUN_GRACE_MS);
                let expires = (self.now + time::Duration::seconds(TIMEOUT_S)).min(cap);
                j.lease = Some((l, expires));
                let want = ExtendOutcome::Extended {
                    job_id: j.id,
                    expires_at: expires,
                };
                assert_eq!(got, want, "extend at {}", self.at);
            }
            _ => assert_eq!(got, ExtendOutcome::NotHeld, "extend at {}", self.at),
        }
    }

    /// A result for a lease: success, or a failure (retryable or not) when `failure` is set.
    async fn finish(&mut self, lease: usize, failure: Option<bool>) {
        let Some(&(lease_id, i)) = pick(&self.m.leases, lease) else {
            return;
        };
        let error = failure.map(|retryable| JobError {
            message: "model failure".into(),
            retryable,
        });
        let report = ResultReport {
            holder: None,
            job_id: self.m.jobs[i].id,
            lease_id,
            outcome: if error.is_some() {
                Outcome::Failure
            } else {
                Outcome::Success
            },
            result: if error.is_some() {
                "null"
            } else {
                "{\"ok\":true}"
            }
            .into(),
            error: error.clone(),
        };
        let got = self.w.store.finish(report).await.expect("finish");
        if let Some(want) = self.m.finish_answer(i, lease_id) {
            assert_eq!(got, want, "result at {}", self.at);
            return;
        }
        let j = &mut self.m.jobs[i];
        j.lease = None;
        j.result_lease = Some(lease_id);
        j.status = match &error {
            None => JobStatus::Completed,
            Some(e) if e.retryable && j.attempt < MAX_ATTEMPTS => JobStatus::Accepted,
            Some(_) => JobStatus::Failed,
        };
        let want = FinishOutcome::Recorded { status: j.status };
        assert_eq!(got, want, "result at {}", self.at);
        if j.status == JobStatus::Accepted {
            self.check_backoff(i).await;
        }
    }

    /// The backoff's jitter is the store's: read it, check its bounds, take it into the model.
    async fn check_backoff(&mut self, i: usize) {
        let j = &mut self.m.jobs[i];
        let record = self.w.store.get(j.id).await.expect("get").expect("the job");
        let nominal = RETRY_BASE.as_secs_f64() * f64::from(1u32 << (j.attempt - 1));
        let delay = (record.run_at - self.now).as_seconds_f64();
        assert!(
            delay >= nominal * 0.8 - 0.002 && delay <= nominal * 1.2 + 0.002,
            "backoff {delay} s for nominal {nominal} s at {}",
            self.at
        );
        j.run_at = record.run_at;
    }

    async fn wait(&mut self, long: bool) {
        self.w
            .advance(Duration::from_secs(if long { 40 } else { 5 }));
        let report = self.w.store.tick().await.expect("tick");
        let now = self.w.clock.now();
        let mut reaped: Vec<Uuid> = report.reaped.iter().map(|r| r.job_id).collect();
        reaped.sort();
        let mut want = Vec::new();
        for j in self.m.jobs.iter_mut() {
            if j.status == JobStatus::InProgress
                && j.lease.is_some_and(|(_, expires)| expires <= now)
            {
                want.push(j.id);
                j.lease = None;
                if j.attempt < MAX_ATTEMPTS {
                    j.status = JobStatus::Accepted;
                    j.run_at = now;
                } else {
                    j.status = JobStatus::Failed;
                }
            }
        }
        want.sort();
        assert_eq!(reaped, want, "reaped at {}", self.at);
    }

    async fn cancel(&mut self, job: usize) {
        let Some(i) = index(self.m.jobs.len(), job) else {
            return;
        };
        let record = self
            .w
            .store
            .cancel(self.m.jobs[i].id)
            .await
            .expect("cancel");
        let j = &mut self.m.jobs[i];
        if !j.status.is_terminal() {
            j.status = JobStatus::Cancelled;
            j.lease = None;
        }
        assert_eq!(
            record.map(|r| r.status),
            Some(j.status),
            "cancel at {}",
            self.at
        );
    }

    async fn requeue(&mut self, job: usize) {
        let Some(i) = index(self.m.jobs.len(), job) else {
            return;
        };
        let record = self
            .w
            .store
            .requeue(self.m.jobs[i].id)
            .await
            .expect("requeue");
        let j = &mut self.m.jobs[i];
        j.status = JobStatus::Accepted;
        j.attempt = 0;
        j.lease = None;
        j.run_at = self.now;
        assert_eq!(
            record.map(|r| (r.status, r.attempt)),
            Some((JobStatus::Accepted, 0)),
            "requeue at {}",
            self.at
        );
    }

    /// Concurrent submits, each of a job with its own priority above every single submit's.
    async fn burst_submits(&mut self, submits: u8) {
        let mut tasks = Vec::new();
        for k in 0..submits {
            let priority = 100 + self.m.burst_priority;
            self.m.burst_priority += 1;
            let spec = self.spec(priority, serde_json::json!({"n": self.n, "k": k}));
            let (store, spec) = (self.w.store.clone(), self.w.spec(spec));
            tasks.push(tokio::spawn(async move {
                (priority, store.submit(vec![spec]).await)
            }));
        }
        for t in tasks {
            let (priority, answer) = t.await.expect("a submit task");
            let id = match answer.expect("submit").remove(0) {
                crate::SubmitOutcome::Created { job_id } => job_id,
                other => panic!("expected a new job at {}, got {other:?}", self.at),
            };
            self.accepted(id, priority);
        }
    }

    /// Concurrent leases of up to 2 jobs each: together they hand out the ready jobs of the
    /// highest priorities, in some order.
    async fn burst_leases(&mut self, leases: u8) {
        let mut tasks = Vec::new();
        for k in 0..leases {
            let store = self.w.store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .lease(crate::LeaseOrder {
                        node_id: format!("burst-{k}"),
                        queues: vec!["q".into()],
                        capabilities: Vec::new(),
                        max_jobs: 2,
                    })
                    .await
            }));
        }
        let mut got = Vec::new();
        for t in tasks {
            got.extend(t.await.expect("a lease task").expect("lease").jobs);
        }
        let want = self
            .m
            .ready(self.now)
            .into_iter()
            .take(2 * usize::from(leases));
        let mut got_ids: Vec<Uuid> = got.iter().map(|l| l.job_id).collect();
        let mut want_ids: Vec<Uuid> = want.map(|i| self.m.jobs[i].id).collect();
        got_ids.sort();
        want_ids.sort();
        assert_eq!(got_ids, want_ids, "jobs leased by a burst at {}", self.at);
        for leased in got {
            let i = self.m.jobs.iter().position(|j| j.id == leased.job_id);
            self.leased(&leased, i.expect("known"));
        }
    }

    /// Every live lease's success, reported concurrently.
    async fn succeed_all(&mut self) {
        let mut tasks = Vec::new();
        for (i, j) in self.m.jobs.iter().enumerate() {
            if let (JobStatus::InProgress, Some((lease_id, _))) = (j.status, j.lease) {
                let store = self.w.store.clone();
                let report = ResultReport {
                    holder: None,
                    job_id: j.id,
                    lease_id,
                    outcome: Outcome::Success,
                    result: "{\"ok\":true}".into(),
                    error: None,
                };
                tasks.push((
                    i,
                    lease_id,
                    tokio::spawn(async move { store.finish(report).await }),
                ));
            }
        }
        for (i, lease_id, t) in tasks {
            let got = t.await.expect("a result task").expect("finish");
            let want = FinishOutcome::Recorded {
                status: JobStatus::Completed,
            };
            assert_eq!(got, want, "result at {}", self.at);
            let j = &mut self.m.jobs[i];
            j.status = JobStatus::Completed;
            j.lease = None;
            j.result_lease = Some(lease_id);
        }
    }
}

/// Every job's status and attempt, and the live counts.
async fn compare(w: &World<'_>, m: &Model, at: &str) {
    for j in &m.jobs {
        let r = w
            .store
            .get(j.id)
            .await
            .expect("get")
            .expect("every job exists");
        assert_eq!(
            (r.status, r.attempt),
            (j.status, j.attempt),
            "job {} after {at}",
            j.seq
        );
    }
    let counts = w.store.counts();
    let count = |s: JobStatus| m.jobs.iter().filter(|j| j.status == s).count() as u64;
    assert_eq!(
        counts.total_depth(),
        count(JobStatus::Accepted),
        "depth after {at}"
    );
    assert_eq!(
        counts.inflight,
        count(JobStatus::InProgress),
        "inflight after {at}"
    );
    // Nothing is acknowledged here: every finished job's result is pending.
    let pending = m.jobs.iter().filter(|j| j.status.is_terminal()).count() as u64;
    assert_eq!(
        counts.results_pending, pending,
        "results pending after {at}"
    );
}

fn pick<T>(items: &[T], n: usize) -> Option<&T> {
    index(items.len(), n).map(|i| &items[i])
}

fn index(len: usize, n: usize) -> Option<usize> {
    (len > 0).then(|| n % len)
}

/// Runs a backend through `cases` random sequences of up to 60 steps (proptest), each on a
/// fresh store made by `$make`. `SHERATAN_MODEL_CASES=N` runs N instead (the long run).
/// Failing sequences are shrunk and printed; none are persisted.
#[macro_export]
macro_rules! model_tests {
    ($make:expr, $cases:expr) => {
        #[test]
        fn the_store_agrees_with_a_model_of_the_contract() {
            use $crate::model::proptest::prelude::*;
            let runtime = ::tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            let config = ProptestConfig {
                cases: ::std::env::var("SHERATAN_MODEL_CASES")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or($cases),
                failure_persistence: None,
                ..ProptestConfig::default()
            };
            proptest!(config, |(steps in $crate::model::steps(60))| {
                let backend = $make;
                runtime.block_on($crate::model::run(&backend, &steps));
            });
        }
    };
}

pub use proptest;
