//! Progress and streamed output of running jobs (docs/API.md, "Progress").
//!
//! A report is checked against its lease (live, held by the caller) and folded into this
//! hub's board in memory; a flusher writes the board's changed entries to the store in one
//! operation every [`FLUSH`], so a handler reporting a hundred times a second costs the store
//! four writes a second, not a hundred. A lease once found live is trusted for [`TRUST`]
//! before the store is asked again, so a chatty handler costs few reads too. The job view
//! shows the board's entry when it is newer than the stored one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sheratan_proto::data::{JobStatus, JobView};
use sheratan_proto::progress::{JobProgress, ProgressAck, ProgressReport};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{JobsError, parse_id};
use crate::HubState;
use crate::auth::Credential;

/// How often the board's changes reach the store.
pub const FLUSH: Duration = Duration::from_millis(250);
/// How long a lease found live is trusted without asking the store again.
const TRUST: Duration = Duration::from_secs(1);
/// Entries not reported to for this long are forgotten (the store keeps the last one).
const FORGET: Duration = Duration::from_secs(60);

struct Entry {
    job_id: Uuid,
    /// The node holding the lease: the trusted path checks the caller against it too.
    holder: String,
    progress: JobProgress,
    dirty: bool,
    checked: Instant,
    touched: Instant,
}

/// This hub's latest progress per lease.
#[derive(Default)]
pub struct ProgressBoard {
    entries: Mutex<HashMap<Uuid, Entry>>,
}

impl ProgressBoard {
    /// Shows this hub's newer progress of the job's live lease (`lease`, from its record) in
    /// its view; an ended lease's reports never show.
    pub fn overlay(&self, view: &mut JobView, lease: Option<Uuid>) {
        let Some(lease) = lease.filter(|_| view.status == JobStatus::InProgress) else {
            return;
        };
        let entries = self.entries.lock().expect("progress board");
        let Some(e) = entries.get(&lease) else {
            return;
        };
        if view
            .progress
            .as_ref()
            .is_none_or(|s| e.progress.updated_at > s.updated_at)
        {
            view.progress = Some(e.progress.clone());
        }
    }

    /// Stops trusting the leases of a job this hub saw taken back (reaped).
    pub fn forget_job(&self, job_id: Uuid) {
        let mut entries = self.entries.lock().expect("progress board");
        for e in entries.values_mut().filter(|e| e.job_id == job_id) {
            e.checked = Instant::now().checked_sub(TRUST).unwrap_or(e.checked);
        }
    }

    /// Stops trusting a lease this hub saw end (a result, a cancel): its next report asks
    /// the store, which says it is not held. What it reported is still flushed.
    pub fn forget(&self, lease: Uuid) {
        if let Some(e) = self.entries.lock().expect("progress board").get_mut(&lease) {
            e.checked = Instant::now().checked_sub(TRUST).unwrap_or(e.checked);
        }
    }

    /// A lease's progress not yet written, taken (its result is about to end the lease: the
    /// stored progress must be complete when the job is).
    pub fn take_unwritten(&self, lease: Uuid) -> Option<(Uuid, String)> {
        let mut entries = self.entries.lock().expect("progress board");
        let e = entries.get_mut(&lease).filter(|e| e.dirty)?;
        e.dirty = false;
        let json = serde_json::to_string(&e.progress).expect("progress serializes");
        Some((lease, json))
    }

    fn take_dirty(&self) -> Vec<(Uuid, String)> {
        let mut entries = self.entries.lock().expect("progress board");
        entries.retain(|_, e| e.dirty || e.touched.elapsed() < FORGET);
        entries
            .iter_mut()
            .filter(|(_, e)| e.dirty)
            .map(|(lease, e)| {
                e.dirty = false;
                let json = serde_json::to_string(&e.progress).expect("progress serializes");
                (*lease, json)
            })
            .collect()
    }
}

/// Takes one report for `lease_id` from `caller`.
pub async fn report(
    hub: &HubState,
    lease_id: &str,
    report: ProgressReport,
    caller: (&Credential, IpAddr),
) -> Result<ProgressAck, JobsError> {
    let lease = parse_id("lease_id", lease_id)?;
    let job_id = parse_id("job_id", &report.job_id)?;
    report.check().map_err(|(too_large, message)| {
        if too_large {
            JobsError::TooLarge(message)
        } else {
            JobsError::Invalid(message)
        }
    })?;
    let now = hub.clock.now();
    let rule = hub.credentials.holder_rule(caller.0);
    if let Some(ack) = apply_trusted(hub, lease, job_id, &report, now, rule.as_ref())? {
        return Ok(ack);
    }
    // Not trusted (yet, or any more): ask the store whether the caller holds the lease.
    let record = hub
        .store
        .get(job_id)
        .await?
        .ok_or_else(|| JobsError::NotFound(format!("no job {job_id}")))?;
    let held = record.status == JobStatus::InProgress
        && record.lease.as_ref().is_some_and(|l| l.lease_id == lease);
    if !held {
        return Err(JobsError::LeaseNotHeld(format!(
            "lease {lease} of job {job_id} is not held (the job is {}): stop reporting its progress",
            record.status.as_str()
        )));
    }
    let holder = record
        .lease
        .as_ref()
        .map(|l| l.node_id.as_str())
        .unwrap_or("");
    check_holder(rule.as_ref(), holder, lease)?;
    let stored = record.view().progress.unwrap_or(JobProgress {
        updated_at: now,
        ..Default::default()
    });
    let mut entries = hub.progress.entries.lock().expect("progress board");
    let entry = entries.entry(lease).or_insert(Entry {
        job_id,
        holder: holder.to_owned(),
        progress: stored,
        dirty: false,
        checked: Instant::now(),
        touched: Instant::now(),
    });
    entry.checked = Instant::now();
    Ok(fold(entry, &report, now))
}

/// Folds a report into a lease's entry if the lease was found live lately (and the caller
/// may report for its holder).
fn apply_trusted(
    hub: &HubState,
    lease: Uuid,
    job_id: Uuid,
    report: &ProgressReport,
    now: time::OffsetDateTime,
    rule: Option<&sheratan_store::HolderRule>,
) -> Result<Option<ProgressAck>, JobsError> {
    let mut entries = hub.progress.entries.lock().expect("progress board");
    let Some(entry) = entries
        .get_mut(&lease)
        .filter(|e| e.job_id == job_id && e.checked.elapsed() < TRUST)
    else {
        return Ok(None);
    };
    check_holder(rule, &entry.holder, lease)?;
    Ok(Some(fold(entry, report, now)))
}

/// A node credential reports for its own leases only (as for results).
fn check_holder(
    rule: Option<&sheratan_store::HolderRule>,
    holder: &str,
    lease: Uuid,
) -> Result<(), JobsError> {
    match rule {
        Some(rule) if !rule.permits(holder) => Err(JobsError::WrongHolder(format!(
            "lease {lease} is held by {holder}, whose own credential alone may report its progress"
        ))),
        _ => Ok(()),
    }
}

fn fold(entry: &mut Entry, report: &ProgressReport, now: time::OffsetDateTime) -> ProgressAck {
    entry.progress.apply(report, now);
    entry.dirty = true;
    entry.touched = Instant::now();
    ProgressAck {
        job_id: entry.job_id.to_string(),
        output_bytes: entry.progress.output_bytes,
    }
}

/// Writes the board's changes to the store every [`FLUSH`] until shutdown (and once more
/// then).
pub async fn run_flusher(hub: std::sync::Arc<HubState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            () = shutdown.cancelled() => true,
            _ = tick.tick() => false,
        };
        let dirty = hub.progress.take_dirty();
        if !dirty.is_empty()
            && let Err(err) = hub.store.record_progress(dirty).await
        {
            tracing::warn!(%err, "cannot record job progress; the next reports will carry it");
        }
        if stopping {
            return;
        }
    }
}
