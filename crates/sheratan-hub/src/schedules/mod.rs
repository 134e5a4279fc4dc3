//! Schedules (docs/API.md, "Schedules"): created, changed and removed in the schedule store,
//! checked up front (a schedule whose job would be refused is refused at creation, not at its
//! first tick), and shown with their next runs and the last job's outcome. The ticks are the
//! runner's ([`run_scheduler`]).

mod plan;
mod runner;
#[cfg(test)]
mod tests;

use std::sync::{Arc, OnceLock};

use sheratan_proto::schedules::{
    LastJob, RunNowResponse, RunOutcome, ScheduleList, SchedulePatch, ScheduleRun, ScheduleSpec,
    ScheduleView,
};
use sheratan_proto::{EventKind, Plane};
use sheratan_store::{JobSpec, ScheduleAdvance, ScheduleRecord, ScheduleStore, StoreError};

use crate::HubState;
use crate::audit::Event;
use crate::job_service::JobsError;
pub use plan::{Due, Plan};
pub use runner::{ScheduleMetrics, pass, run_scheduler};

/// The longest `jitter_s`.
const MAX_JITTER_S: u32 = 3600;
/// How many next runs a view shows.
const NEXT_RUNS: usize = 5;

/// The hub's schedules: where they are stored (attached once the store is open) and what the
/// runner counted.
#[derive(Default)]
pub struct Schedules {
    store: OnceLock<Arc<dyn ScheduleStore>>,
    pub metrics: ScheduleMetrics,
}

impl Schedules {
    /// Keeps `store` for the routes and the runner; only the first call counts.
    pub fn attach(&self, store: Arc<dyn ScheduleStore>) {
        let _ = self.store.set(store);
    }

    pub(crate) fn store(&self) -> Result<&Arc<dyn ScheduleStore>, JobsError> {
        self.store.get().ok_or_else(|| {
            JobsError::Store(StoreError::Unavailable(
                "this hub was built without a schedule store".into(),
            ))
        })
    }

    pub(crate) fn attached(&self) -> bool {
        self.store.get().is_some()
    }
}

/// Checks `spec` as a whole: its name, cron and time zone, jitter, and its job exactly as
/// `POST /v1/jobs` would. The error names the field.
pub fn validate(hub: &HubState, spec: &ScheduleSpec) -> Result<Plan, JobsError> {
    sheratan_proto::schedules::validate_name(&spec.name).map_err(JobsError::Invalid)?;
    let plan = Plan::parse(&spec.cron, &spec.timezone).map_err(JobsError::Invalid)?;
    if spec.jitter_s > MAX_JITTER_S {
        return Err(JobsError::invalid(format!(
            "jitter_s: 0 to {MAX_JITTER_S} seconds"
        )));
    }
    if spec.job.idempotency_key.is_some() {
        return Err(JobsError::invalid(
            "job.idempotency_key: a schedule gives each tick's job a key of its own (schedule:NAME:TICK)",
        ));
    }
    if spec.job.run_at.is_some() {
        return Err(JobsError::invalid(
            "job.run_at: a schedule's job runs at its tick (jitter_s spreads it)",
        ));
    }
    let defaults = hub
        .queue_settings
        .defaults_for(hub.config.job_defaults, &spec.job.queue);
    JobSpec::from_wire(spec.job.clone(), defaults, hub.clock.now())
        .map_err(|why| JobsError::Invalid(format!("job.{why}")))?;
    Ok(plan)
}

pub async fn create(
    hub: &HubState,
    spec: ScheduleSpec,
    peer: std::net::IpAddr,
) -> Result<ScheduleView, JobsError> {
    validate(hub, &spec)?;
    let now = hub.clock.now();
    let record = ScheduleRecord {
        spec,
        done_until: now,
        last_run: None,
        last_job_id: None,
        runs: 0,
        skipped: 0,
        missed: 0,
        created_at: now,
        updated_at: now,
    };
    if !hub
        .schedules
        .store()?
        .create_schedule(record.clone())
        .await?
    {
        return Err(JobsError::Taken(format!(
            "a schedule named {:?} exists",
            record.spec.name
        )));
    }
    changed(hub, &record.spec.name, "created", peer);
    Ok(view(hub, record).await)
}

pub async fn list(hub: &HubState) -> Result<ScheduleList, JobsError> {
    let mut schedules = Vec::new();
    for record in hub.schedules.store()?.schedules().await? {
        schedules.push(view(hub, record).await);
    }
    Ok(ScheduleList { schedules })
}

pub async fn get(hub: &HubState, name: &str) -> Result<ScheduleView, JobsError> {
    Ok(view(hub, find(hub, name).await?).await)
}

/// Changes the fields `patch` names. A resume, or a new cron or time zone, starts counting
/// ticks from now: what passed while paused is not caught up.
pub async fn patch(
    hub: &HubState,
    name: &str,
    patch: SchedulePatch,
    peer: std::net::IpAddr,
) -> Result<ScheduleView, JobsError> {
    let current = find(hub, name).await?;
    let mut spec = current.spec.clone();
    let SchedulePatch {
        cron,
        timezone,
        job,
        paused,
        overlap,
        catch_up,
        jitter_s,
    } = patch;
    spec.cron = cron.unwrap_or(spec.cron);
    spec.timezone = timezone.unwrap_or(spec.timezone);
    spec.job = job.unwrap_or(spec.job);
    spec.paused = paused.unwrap_or(spec.paused);
    spec.overlap = overlap.unwrap_or(spec.overlap);
    spec.catch_up = catch_up.unwrap_or(spec.catch_up);
    spec.jitter_s = jitter_s.unwrap_or(spec.jitter_s);
    validate(hub, &spec)?;
    let now = hub.clock.now();
    let restart = (current.spec.paused && !spec.paused)
        || current.spec.cron != spec.cron
        || current.spec.timezone != spec.timezone;
    let store = hub.schedules.store()?;
    if !store
        .update_schedule(spec.clone(), restart.then_some(now), now)
        .await?
    {
        return Err(not_found(name));
    }
    let action = match (current.spec.paused, spec.paused) {
        (false, true) => "paused",
        (true, false) => "resumed",
        _ => "changed",
    };
    changed(hub, name, action, peer);
    get(hub, name).await
}

/// Removes the schedule (its jobs stay); the answer is the schedule as it was.
pub async fn delete(
    hub: &HubState,
    name: &str,
    peer: std::net::IpAddr,
) -> Result<ScheduleView, JobsError> {
    let gone = get(hub, name).await?;
    if !hub.schedules.store()?.delete_schedule(name).await? {
        return Err(not_found(name));
    }
    changed(hub, name, "deleted", peer);
    Ok(gone)
}

/// Submits the schedule's job now, paused or not, outside its ticks (no idempotency key:
/// each run-now is a job of its own).
pub async fn run_now(
    hub: &HubState,
    name: &str,
    peer: std::net::IpAddr,
) -> Result<RunNowResponse, JobsError> {
    let record = find(hub, name).await?;
    let now = hub.clock.now();
    let job_id = runner::submit(hub, record.spec.job.clone()).await?;
    let advance = ScheduleAdvance {
        name: name.to_owned(),
        expect: None,
        done_until: record.done_until,
        last_run: Some(ScheduleRun {
            tick: now,
            outcome: RunOutcome::Submitted,
            job_id: Some(job_id.clone()),
            reason: Some("run now".into()),
        }),
        last_job_id: Some(job_id.clone()),
        runs: 1,
        skipped: 0,
        missed: 0,
    };
    hub.schedules.store()?.advance_schedule(advance).await?;
    changed(hub, name, "run_now", peer);
    Ok(RunNowResponse { job_id })
}

async fn find(hub: &HubState, name: &str) -> Result<ScheduleRecord, JobsError> {
    sheratan_proto::schedules::validate_name(name).map_err(JobsError::Invalid)?;
    hub.schedules
        .store()?
        .schedules()
        .await?
        .into_iter()
        .find(|r| r.spec.name == name)
        .ok_or_else(|| not_found(name))
}

fn not_found(name: &str) -> JobsError {
    JobsError::NotFound(format!(
        "no schedule named {name:?} (sheratan schedule list shows them)"
    ))
}

fn changed(hub: &HubState, name: &str, action: &str, peer: std::net::IpAddr) {
    hub.audit.emit(
        Event::new(EventKind::ScheduleChanged, Plane::Data)
            .remote(peer)
            .detail(serde_json::json!({"name": name, "action": action})),
    );
}

/// The view: the record, its next runs from now, and the last job's status now.
async fn view(hub: &HubState, record: ScheduleRecord) -> ScheduleView {
    let now = hub.clock.now();
    let next_runs = match Plan::parse(&record.spec.cron, &record.spec.timezone) {
        Ok(plan) if !record.spec.paused => plan.next_n(now.max(record.done_until), NEXT_RUNS),
        _ => Vec::new(),
    };
    let last_job = match record.last_job_id {
        Some(job_id) => {
            let status = match job_id.parse() {
                Ok(id) => hub.store.get(id).await.ok().flatten().map(|j| j.status),
                Err(_) => None,
            };
            Some(LastJob { job_id, status })
        }
        None => None,
    };
    let spec = record.spec;
    ScheduleView {
        name: spec.name,
        cron: spec.cron,
        timezone: spec.timezone,
        job: spec.job,
        paused: spec.paused,
        overlap: spec.overlap,
        catch_up: spec.catch_up,
        jitter_s: spec.jitter_s,
        next_runs,
        last_run: record.last_run,
        last_job,
        runs: record.runs,
        skipped: record.skipped,
        missed: record.missed,
        created_at: record.created_at,
        updated_at: record.updated_at,
    }
}
