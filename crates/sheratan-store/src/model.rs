//! Model-based testing of a backend: random sequences of submit, lease, extend, result, time
//! passing with the reaper, cancel and requeue, applied both to the store and to a plain
//! in-memory model of the contract; after every step each job's status and attempt, the
//! live counts and every answer must agree.
//!
//! A backend runs it with `sheratan_store::model_tests!(MyBackend::new(), cases)`; the
//! generated sequences come from proptest, which shrinks a failing one to a short reproducer.

use std::time::Duration;

use proptest::prelude::*;
use sheratan_proto::data::{JobError, JobStatus, Outcome};
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
        let now = w.clock.now();
        match *step {
            Step::Submit { priority } => {
                let mut j = job("q", serde_json::json!({"n": n}));
                j.priority = priority;
                j.max_attempts = Some(MAX_ATTEMPTS);
                j.timeout_s = Some(TIMEOUT_S as u32);
                let id = w.submit(j).await;
                m.jobs.push(ModelJob {
                    id,
                    seq: m.jobs.len(),
                    priority,
                    status: JobStatus::Accepted,
                    attempt: 0,
                    run_at: now,
                    lease: None,
                    result_lease: None,
                });
            }
            Step::Lease { max } => {
                let got = w.lease("node", &["q"], &[], max).await;
                let want: Vec<usize> = m.ready(now).into_iter().take(max as usize).collect();
                let got_ids: Vec<Uuid> = got.iter().map(|l| l.job_id).collect();
                let want_ids: Vec<Uuid> = want.iter().map(|&i| m.jobs[i].id).collect();
                assert_eq!(got_ids, want_ids, "leased jobs at {at}");
                for (leased, i) in got.iter().zip(want) {
                    let j = &mut m.jobs[i];
                    j.status = JobStatus::InProgress;
                    j.attempt += 1;
                    assert_eq!(leased.attempt, j.attempt, "attempt at {at}");
                    let expires = now + time::Duration::seconds(TIMEOUT_S);
                    assert_eq!(leased.lease_expires_at, expires, "expiry at {at}");
                    j.lease = Some((leased.lease_id, expires));
                    m.leases.push((leased.lease_id, i));
                }
            }
            Step::Extend { lease } => {
                let Some(&(lease_id, i)) = pick(&m.leases, lease) else {
                    continue;
                };
                let got = w.store.extend(lease_id, None).await.expect("extend");
                let j = &mut m.jobs[i];
                match j.lease {
                    Some((l, _)) if l == lease_id && j.status == JobStatus::InProgress => {
                        let expires = now + time::Duration::seconds(TIMEOUT_S);
                        j.lease = Some((l, expires));
                        assert_eq!(
                            got,
                            ExtendOutcome::Extended {
                                job_id: j.id,
                                expires_at: expires
                            },
                            "extend at {at}"
                        );
                    }
                    _ => assert_eq!(got, ExtendOutcome::NotHeld, "extend at {at}"),
                }
            }
            Step::Succeed { lease } | Step::Fail { lease, .. } => {
                let Some(&(lease_id, i)) = pick(&m.leases, lease) else {
                    continue;
                };
                let (outcome, error) = match *step {
                    Step::Fail { retryable, .. } => (
                        Outcome::Failure,
                        Some(JobError {
                            message: "model failure".into(),
                            retryable,
                        }),
                    ),
                    _ => (Outcome::Success, None),
                };
                let got = w
                    .store
                    .finish(ResultReport {
                        job_id: m.jobs[i].id,
                        lease_id,
                        outcome,
                        result: if error.is_some() {
                            "null"
                        } else {
                            "{\"ok\":true}"
                        }
                        .into(),
                        error: error.clone(),
                    })
                    .await
                    .expect("finish");
                if let Some(want) = m.finish_answer(i, lease_id) {
                    assert_eq!(got, want, "result at {at}");
                } else {
                    let j = &mut m.jobs[i];
                    j.lease = None;
                    j.result_lease = Some(lease_id);
                    j.status = match &error {
                        None => JobStatus::Completed,
                        Some(e) if e.retryable && j.attempt < MAX_ATTEMPTS => JobStatus::Accepted,
                        Some(_) => JobStatus::Failed,
                    };
                    assert_eq!(
                        got,
                        FinishOutcome::Recorded { status: j.status },
                        "result at {at}"
                    );
                    if j.status == JobStatus::Accepted {
                        // The backoff's jitter is the store's: read it, check its bounds.
                        let record = w.store.get(j.id).await.expect("get").expect("the job");
                        let nominal = RETRY_BASE.as_secs_f64() * f64::from(1u32 << (j.attempt - 1));
                        let delay = (record.run_at - now).as_seconds_f64();
                        assert!(
                            delay >= nominal * 0.8 - 0.002 && delay <= nominal * 1.2 + 0.002,
                            "backoff {delay} s for nominal {nominal} s at {at}"
                        );
                        j.run_at = record.run_at;
                    }
                }
            }
            Step::Wait { long } => {
                w.advance(Duration::from_secs(if long { 40 } else { 5 }));
                let report = w.store.tick().await.expect("tick");
                let now = w.clock.now();
                let mut reaped: Vec<Uuid> = report.reaped.iter().map(|r| r.job_id).collect();
                reaped.sort();
                let mut want = Vec::new();
                for j in m.jobs.iter_mut() {
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
                assert_eq!(reaped, want, "reaped at {at}");
            }
            Step::Cancel { job } => {
                let Some(i) = index(m.jobs.len(), job) else {
                    continue;
                };
                let record = w.store.cancel(m.jobs[i].id).await.expect("cancel");
                let j = &mut m.jobs[i];
                if !j.status.is_terminal() {
                    j.status = JobStatus::Cancelled;
                    j.lease = None;
                }
                assert_eq!(record.map(|r| r.status), Some(j.status), "cancel at {at}");
            }
            Step::Burst { submits, leases } => {
                let mut tasks = Vec::new();
                for k in 0..submits {
                    let mut j = job("q", serde_json::json!({"n": n, "k": k}));
                    j.priority = 100 + m.burst_priority;
                    m.burst_priority += 1;
                    j.max_attempts = Some(MAX_ATTEMPTS);
                    j.timeout_s = Some(TIMEOUT_S as u32);
                    let priority = j.priority;
                    let (store, spec) = (w.store.clone(), w.spec(j));
                    tasks.push(tokio::spawn(async move {
                        (priority, store.submit(vec![spec]).await)
                    }));
                }
                for t in tasks {
                    let (priority, answer) = t.await.expect("a submit task");
                    let id = match answer.expect("submit").remove(0) {
                        crate::SubmitOutcome::Created { job_id } => job_id,
                        other => panic!("expected a new job at {at}, got {other:?}"),
                    };
                    m.jobs.push(ModelJob {
                        id,
                        seq: m.jobs.len(),
                        priority,
                        status: JobStatus::Accepted,
                        attempt: 0,
                        run_at: now,
                        lease: None,
                        result_lease: None,
                    });
                }
                let mut tasks = Vec::new();
                for k in 0..leases {
                    let store = w.store.clone();
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
                let want: Vec<usize> = m
                    .ready(now)
                    .into_iter()
                    .take(2 * usize::from(leases))
                    .collect();
                let mut got_ids: Vec<Uuid> = got.iter().map(|l| l.job_id).collect();
                let mut want_ids: Vec<Uuid> = want.iter().map(|&i| m.jobs[i].id).collect();
                got_ids.sort();
                want_ids.sort();
                assert_eq!(got_ids, want_ids, "jobs leased by a burst at {at}");
                for leased in got {
                    let i = m
                        .jobs
                        .iter()
                        .position(|j| j.id == leased.job_id)
                        .expect("known");
                    let j = &mut m.jobs[i];
                    j.status = JobStatus::InProgress;
                    j.attempt += 1;
                    assert_eq!(leased.attempt, j.attempt, "attempt at {at}");
                    let expires = now + time::Duration::seconds(TIMEOUT_S);
                    assert_eq!(leased.lease_expires_at, expires, "expiry at {at}");
                    j.lease = Some((leased.lease_id, expires));
                    m.leases.push((leased.lease_id, i));
                }
            }
            Step::SucceedAll => {
                let mut tasks = Vec::new();
                for (i, j) in m.jobs.iter().enumerate() {
                    if let (JobStatus::InProgress, Some((lease_id, _))) = (j.status, j.lease) {
                        let (store, job_id) = (w.store.clone(), j.id);
                        tasks.push((
                            i,
                            lease_id,
                            tokio::spawn(async move {
                                store
                                    .finish(ResultReport {
                                        job_id,
                                        lease_id,
                                        outcome: Outcome::Success,
                                        result: "{\"ok\":true}".into(),
                                        error: None,
                                    })
                                    .await
                            }),
                        ));
                    }
                }
                for (i, lease_id, t) in tasks {
                    let got = t.await.expect("a result task").expect("finish");
                    assert_eq!(
                        got,
                        FinishOutcome::Recorded {
                            status: JobStatus::Completed
                        },
                        "result at {at}"
                    );
                    let j = &mut m.jobs[i];
                    j.status = JobStatus::Completed;
                    j.lease = None;
                    j.result_lease = Some(lease_id);
                }
            }
            Step::Requeue { job } => {
                let Some(i) = index(m.jobs.len(), job) else {
                    continue;
                };
                let record = w.store.requeue(m.jobs[i].id).await.expect("requeue");
                let j = &mut m.jobs[i];
                j.status = JobStatus::Accepted;
                j.attempt = 0;
                j.lease = None;
                j.run_at = now;
                assert_eq!(
                    record.map(|r| (r.status, r.attempt)),
                    Some((JobStatus::Accepted, 0)),
                    "requeue at {at}"
                );
            }
        }
        compare(&w, &m, &at).await;
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
