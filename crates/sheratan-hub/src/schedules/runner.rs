//! The scheduler: every hub with a data plane runs one. A pass reads every schedule (one small
//! query), works out which ticks passed since the schedule's `done_until`, submits a job for
//! each (its idempotency key names the schedule and the tick, so hubs racing on one tick, or a
//! hub that crashed between submitting and recording, make one job), and records the advance
//! with a compare-and-set so the tick is counted once. Nothing here touches the submit or lease
//! paths beyond one ordinary submit per tick.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sheratan_proto::data::{JobStatus, SubmitJob};
use sheratan_proto::schedules::{CatchUp, MAX_CATCH_UP, Overlap, RunOutcome, ScheduleRun};
use sheratan_proto::{EventKind, Plane};
use sheratan_runtime::metrics::{Family, Kind};
use sheratan_store::{ScheduleAdvance, ScheduleRecord, StoreError};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::Plan;
use crate::HubState;
use crate::audit::Event;
use crate::job_service::{JobsError, Submitted};

/// The longest a pass waits for the next: schedules changed on another hub are seen within it.
const MAX_WAIT: Duration = Duration::from_secs(1);
/// With `catch_up: "none"`, a tick this late still runs (a pass that came a little late, a
/// restart); older ones count as missed.
const GRACE: time::Duration = time::Duration::minutes(1);
/// How far back a pass looks for passed ticks: a schedule idle for a year costs what one idle
/// for a week does.
const HORIZON: time::Duration = time::Duration::days(7);
/// Lateness histogram bounds, seconds.
const LATENESS_BUCKETS: [f64; 8] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 60.0];

/// Runs passes until `stop`, each right after the next tick due (or a second, at the longest).
pub async fn run_scheduler(hub: std::sync::Arc<HubState>, stop: CancellationToken) {
    if !hub.schedules.attached() {
        return;
    }
    let mut failing = false;
    loop {
        let wait = match pass(&hub).await {
            Ok(next) => {
                failing = false;
                next.map_or(MAX_WAIT, |at| {
                    let left = at - hub.clock.now();
                    // A few milliseconds past the tick, so the pass finds it due.
                    Duration::try_from(left)
                        .unwrap_or_default()
                        .saturating_add(Duration::from_millis(5))
                        .min(MAX_WAIT)
                })
            }
            Err(err) => {
                if !failing {
                    tracing::warn!(
                        "the scheduler cannot read its schedules (it retries every second): {err}"
                    );
                }
                failing = true;
                MAX_WAIT
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One pass over every schedule at the clock's time; the earliest next tick of them all.
pub async fn pass(hub: &HubState) -> Result<Option<OffsetDateTime>, StoreError> {
    let Ok(store) = hub.schedules.store() else {
        return Ok(None);
    };
    let now = hub.clock.now();
    let mut next: Option<OffsetDateTime> = None;
    for record in store.schedules().await? {
        if record.spec.paused {
            continue;
        }
        // Checked at creation; a time zone a newer binary no longer knows stops only this one.
        let Ok(plan) = Plan::parse(&record.spec.cron, &record.spec.timezone) else {
            continue;
        };
        let keep = match record.spec.catch_up {
            CatchUp::None | CatchUp::Last => 1,
            CatchUp::All => MAX_CATCH_UP,
        };
        let due = plan.due(record.done_until, now, keep, HORIZON);
        if !due.ticks.is_empty() || due.dropped > 0 {
            run_ticks(hub, &record, due, now).await?;
        }
        if let Some(at) = plan.next_after(now) {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    Ok(next)
}

/// What one pass did to one schedule, before it is recorded.
struct Tally {
    advance: ScheduleAdvance,
    lateness: Vec<f64>,
    missed: Vec<String>,
}

async fn run_ticks(
    hub: &HubState,
    record: &ScheduleRecord,
    due: super::Due,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let spec = &record.spec;
    let mut tally = Tally {
        advance: ScheduleAdvance {
            name: spec.name.clone(),
            expect: Some(record.done_until),
            done_until: due.through,
            last_run: None,
            last_job_id: None,
            runs: 0,
            skipped: 0,
            missed: due.dropped,
        },
        lateness: Vec::new(),
        missed: Vec::new(),
    };
    if due.dropped > 0 {
        tally.missed.push(format!(
            "{} tick(s) passed while no hub ran the schedule (catch_up: {:?})",
            due.dropped, spec.catch_up
        ));
    }
    let mut last_job = record.last_job_id.clone();
    for tick in due.ticks {
        let run = |outcome, job_id, reason| ScheduleRun {
            tick,
            outcome,
            job_id,
            reason,
        };
        if spec.catch_up == CatchUp::None && now - tick > GRACE {
            let reason = "the tick passed while no hub ran the schedule (catch_up: none)";
            tally.advance.missed += 1;
            tally.missed.push(reason.into());
            tally.advance.last_run = Some(run(RunOutcome::Missed, None, Some(reason.into())));
            continue;
        }
        if let Some(reason) = overlap_blocks(hub, spec.overlap, last_job.as_deref()).await {
            tally.advance.skipped += 1;
            tally.advance.last_run = Some(run(RunOutcome::Skipped, None, Some(reason)));
            continue;
        }
        match submit(hub, tick_job(spec, tick)).await {
            Ok(job_id) => {
                tally.advance.runs += 1;
                tally.lateness.push((now - tick).as_seconds_f64().max(0.0));
                tally.advance.last_run =
                    Some(run(RunOutcome::Submitted, Some(job_id.clone()), None));
                tally.advance.last_job_id = Some(job_id.clone());
                last_job = Some(job_id);
            }
            Err(err) => {
                let reason = err.message();
                tally.advance.missed += 1;
                tally.missed.push(reason.clone());
                tally.advance.last_run = Some(run(RunOutcome::Missed, None, Some(reason)));
            }
        }
    }
    record_tally(hub, tally).await
}

/// Records what a pass did; counted (metrics, audit) only by the hub whose record won.
async fn record_tally(hub: &HubState, tally: Tally) -> Result<(), StoreError> {
    let store = match hub.schedules.store() {
        Ok(store) => store,
        Err(_) => return Ok(()),
    };
    let advance = tally.advance.clone();
    if !store.advance_schedule(tally.advance).await? {
        return Ok(());
    }
    let metrics = &hub.schedules.metrics;
    metrics.submitted.fetch_add(advance.runs, Ordering::Relaxed);
    metrics
        .skipped
        .fetch_add(advance.skipped, Ordering::Relaxed);
    metrics.missed.fetch_add(advance.missed, Ordering::Relaxed);
    for seconds in tally.lateness {
        metrics.observe_lateness(seconds);
    }
    if advance.missed > 0 {
        tracing::warn!(schedule = %advance.name, missed = advance.missed, "a schedule missed ticks: {}", tally.missed.join("; "));
        hub.audit
            .emit(
                Event::new(EventKind::ScheduleMissed, Plane::Data).detail(serde_json::json!({
                    "name": advance.name,
                    "missed": advance.missed,
                    "reasons": tally.missed,
                })),
            );
    }
    Ok(())
}

/// Whether the overlap rule holds a tick back, and why.
async fn overlap_blocks(
    hub: &HubState,
    overlap: Overlap,
    last_job: Option<&str>,
) -> Option<String> {
    if overlap == Overlap::Allow {
        return None;
    }
    let id = last_job?.parse().ok()?;
    let status = hub.store.get(id).await.ok().flatten()?.status;
    match (overlap, status) {
        (Overlap::Skip, JobStatus::Accepted | JobStatus::InProgress) => Some(format!(
            "overlap skip: the previous job {id} has not finished"
        )),
        (Overlap::QueueOne, JobStatus::Accepted) => Some(format!(
            "overlap queue_one: the previous job {id} has not started"
        )),
        _ => None,
    }
}

/// A tick's job: the schedule's, with the tick in its idempotency key and its run time
/// spread by the jitter (the same on every hub, so racing hubs submit the same request).
fn tick_job(spec: &sheratan_proto::schedules::ScheduleSpec, tick: OffsetDateTime) -> SubmitJob {
    let tick_ms = (tick.unix_timestamp_nanos() / 1_000_000) as i64;
    let mut job = spec.job.clone();
    job.idempotency_key = Some(format!("schedule:{}:{tick_ms}", spec.name));
    if spec.jitter_s > 0 {
        let spread = fnv1a(job.idempotency_key.as_deref().unwrap_or_default())
            % (u64::from(spec.jitter_s) * 1000);
        job.run_at = Some(tick + time::Duration::milliseconds(spread as i64));
    }
    job
}

/// Submits one job as the hub itself; the job's id, or why it was refused.
pub(super) async fn submit(hub: &HubState, job: SubmitJob) -> Result<String, JobsError> {
    let own = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let from = crate::job_service::Origin {
        plane: Plane::Data,
        ip: own,
        traceparent: None,
    };
    let mut answers = crate::job_service::submit(hub, vec![Ok(job)], from).await?;
    match answers.remove(0) {
        Submitted::Created(r) | Submitted::Existing(r) => Ok(r.job_id),
        // The tick's key with another request: the schedule's job changed while another hub
        // submitted the tick. That job stands for the tick.
        Submitted::Refused(JobsError::Collision { job_id }) => Ok(job_id),
        Submitted::Refused(err) => Err(err),
    }
}

/// FNV-1a: a spread every hub computes alike (std's hasher may differ between builds).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What the scheduler counted on this hub (`/metrics`).
#[derive(Default)]
pub struct ScheduleMetrics {
    submitted: AtomicU64,
    skipped: AtomicU64,
    missed: AtomicU64,
    /// Cumulative counts per bucket of [`LATENESS_BUCKETS`], the sum, the count.
    lateness: Mutex<([u64; LATENESS_BUCKETS.len()], f64, u64)>,
}

impl ScheduleMetrics {
    fn observe_lateness(&self, seconds: f64) {
        let mut h = self.lateness.lock().unwrap_or_else(|e| e.into_inner());
        for (bound, n) in LATENESS_BUCKETS.iter().zip(h.0.iter_mut()) {
            if seconds <= *bound {
                *n += 1;
            }
        }
        h.1 += seconds;
        h.2 += 1;
    }

    pub fn families(&self) -> Vec<Family> {
        let mut runs = Family::new(
            "sheratan_schedule_runs_total",
            "Schedule ticks by outcome: submitted a job, skipped by the overlap rule, or missed (queue full, job refused, no hub running).",
            Kind::Counter,
        );
        for (outcome, n) in [
            ("submitted", &self.submitted),
            ("skipped", &self.skipped),
            ("missed", &self.missed),
        ] {
            runs = runs.sample(
                vec![("outcome", outcome.to_owned())],
                n.load(Ordering::Relaxed) as f64,
                format!("schedule_runs.{outcome}"),
            );
        }
        let (buckets, sum, count) = *self.lateness.lock().unwrap_or_else(|e| e.into_inner());
        let buckets: Vec<(f64, u64)> = LATENESS_BUCKETS.iter().copied().zip(buckets).collect();
        vec![
            runs,
            Family::histogram(
                "sheratan_schedule_lateness_seconds",
                "From a tick to its job's submit: how late the scheduler was.",
                &buckets,
                sum,
                count,
            ),
        ]
    }
}
