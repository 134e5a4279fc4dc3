//! Reading jobs (one, a page, cancel) and the job side of the admin path (requeue, queue
//! pause, resume and purge).

use sheratan_proto::data::{
    BulkOutcome, BulkSelection, JobList, JobStatus, JobView, JobsQuery, QueueAdminResponse,
};
use sheratan_proto::ids::{JobRef, parse_job_ref};
use sheratan_proto::{EventKind, Plane};
use sheratan_store::ListFilter;

use super::{JobsError, parse_id};
use crate::HubState;
use crate::audit::Event;

/// How many matches an ambiguous piece of an id lists.
const AMBIGUOUS_SHOWN: u32 = 10;

/// The job a route's `{job_id}` names: a whole id as it is, a piece of one looked up.
pub async fn resolve_job_id(hub: &HubState, text: &str) -> Result<uuid::Uuid, JobsError> {
    let fragment = match parse_job_ref("job id", text).map_err(JobsError::Invalid)? {
        JobRef::Id(id) => return Ok(id),
        JobRef::Fragment(f) => f,
    };
    let found = hub.store.find_ids(&fragment, AMBIGUOUS_SHOWN + 1).await?;
    match found.as_slice() {
        [] => Err(JobsError::NotFound(format!(
            "no job id starts or ends with {fragment:?}"
        ))),
        [one] => Ok(*one),
        many => {
            let shown: Vec<String> = many
                .iter()
                .take(AMBIGUOUS_SHOWN as usize)
                .map(|id| id.to_string())
                .collect();
            let more = if many.len() > AMBIGUOUS_SHOWN as usize {
                " and more".to_string()
            } else {
                String::new()
            };
            Err(JobsError::Ambiguous(format!(
                "{fragment:?} names more than one job: {}{more}",
                shown.join(", ")
            )))
        }
    }
}

pub async fn get(hub: &HubState, id: &str) -> Result<JobView, JobsError> {
    let id = resolve_job_id(hub, id).await?;
    let record = hub.store.get(id).await?.ok_or_else(|| missing(hub, id))?;
    Ok(view_of(hub, &record))
}

/// The 404 for a whole id the store does not have: one no later than the newest job retention
/// deleted says it was most likely deleted by retention (ids are UUIDv7, made in time order).
fn missing(hub: &HubState, id: uuid::Uuid) -> JobsError {
    if hub.retention.covers(id) {
        let kept = hub.config.retention.map_or_else(
            || "kept".to_owned(),
            |d| format!("kept {}", sheratan_proto::data::fmt_duration_s(d.as_secs())),
        );
        return JobsError::NotFound(format!(
            "no job {id}: it is older than the newest finished job deleted by retention, so it was most likely deleted after it finished (finished jobs are {kept}: SHERATAN_RETENTION, or its queue's retention setting)"
        ));
    }
    JobsError::NotFound(format!("no job {id}"))
}

/// A job's view, with this hub's newer progress of its live lease.
fn view_of(hub: &HubState, record: &sheratan_store::JobRecord) -> JobView {
    let mut view = record.view();
    hub.progress
        .overlay(&mut view, record.lease.as_ref().map(|l| l.lease_id));
    view
}

pub async fn cancel(hub: &HubState, id: &str) -> Result<JobView, JobsError> {
    let id = resolve_job_id(hub, id).await?;
    let record = hub.store.cancel(id).await?;
    // The node running it (watching its lease) stops the handler now, not at its next
    // extension. Nobody listening is fine.
    if let Some(lease) = record.as_ref().and_then(|r| r.lease.as_ref()) {
        let _ = hub.cancelled_leases.send(lease.lease_id);
        hub.progress.forget(lease.lease_id);
    }
    record.map(|r| r.view()).ok_or_else(|| missing(hub, id))
}

/// A page of jobs, newest first; `next_cursor` is the last id of a full page.
pub async fn list(hub: &HubState, q: JobsQuery) -> Result<JobList, JobsError> {
    let filter = filter_of(hub, q)?;
    let (jobs, next) = hub.store.list(filter).await?;
    Ok(JobList {
        jobs: jobs.iter().map(|j| view_of(hub, j)).collect(),
        next_cursor: next.map(|n| n.to_string()),
    })
}

/// The store's filter for a listing's query parameters; each bad one is named.
fn filter_of(hub: &HubState, q: JobsQuery) -> Result<ListFilter, JobsError> {
    let queue = q.queue.filter(|s| !s.is_empty());
    if let Some(queue) = &queue {
        sheratan_proto::data::validate_queue(queue)
            .map_err(|e| JobsError::invalid(format!("query parameter {e}")))?;
    }
    let status = q
        .status
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<JobStatus>())
        .transpose()
        .map_err(|e| JobsError::invalid(format!("query parameter status: {e}")))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(JobsError::invalid("query parameter limit: 1 to 1000"));
    }
    let before = q
        .cursor
        .filter(|s| !s.is_empty())
        .map(|c| parse_id("cursor", &c))
        .transpose()?;
    let kind = q.kind.filter(|s| !s.is_empty());
    if let Some(kind) = &kind
        && (kind.len() > sheratan_store::jobs::MAX_KIND_LEN || kind.chars().any(char::is_control))
    {
        return Err(JobsError::invalid(
            "query parameter kind: at most 128 bytes without control characters",
        ));
    }
    let error = q.error.filter(|s| !s.is_empty());
    if error.as_ref().is_some_and(|e| e.len() > 256) {
        return Err(JobsError::invalid(
            "query parameter error: at most 256 bytes",
        ));
    }
    let since = q
        .since
        .filter(|s| !s.is_empty())
        .map(|s| parse_since(&s, hub.clock.now()))
        .transpose()?;
    Ok(ListFilter {
        queue,
        status,
        limit,
        before,
        kind,
        error,
        since,
    })
}

/// The most jobs one bulk requeue moves.
const MAX_BULK: u32 = 10_000;

/// What an operator does to finished jobs in bulk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAction {
    /// Back to `accepted` with fresh attempts.
    Requeue,
    /// Gone, results and all.
    Delete,
}

impl std::str::FromStr for BulkAction {
    type Err = JobsError;

    fn from_str(s: &str) -> Result<Self, JobsError> {
        match s {
            "requeue" => Ok(BulkAction::Requeue),
            "delete" => Ok(BulkAction::Delete),
            other => Err(JobsError::NotFound(format!(
                "no bulk action {other:?}; use requeue or delete"
            ))),
        }
    }
}

/// Applies `action` to the finished jobs matching the request, newest first, page by page;
/// audited once with the count.
pub async fn bulk(
    hub: &HubState,
    req: BulkSelection,
    action: BulkAction,
    peer: std::net::IpAddr,
) -> Result<BulkOutcome, JobsError> {
    // An empty filter would match everything: a form's unset field must not delete it all.
    for (field, value) in [
        ("queue", &req.queue),
        ("kind", &req.kind),
        ("error", &req.error),
        ("since", &req.since),
    ] {
        if value.as_deref() == Some("") {
            return Err(JobsError::invalid(format!(
                "{field}: empty; leave it out to match every {field}"
            )));
        }
    }
    let status = req.status.clone().unwrap_or_else(|| "failed".into());
    let allowed: &[&str] = match action {
        BulkAction::Requeue => &["failed", "cancelled"],
        BulkAction::Delete => &["failed", "cancelled", "completed"],
    };
    if !allowed.contains(&status.as_str()) {
        return Err(JobsError::invalid(format!(
            "status: one of {} (running and waiting jobs are not changed in bulk)",
            allowed.join(", ")
        )));
    }
    let limit = req.limit.unwrap_or(1000);
    if !(1..=MAX_BULK).contains(&limit) {
        return Err(JobsError::invalid(format!("limit: 1 to {MAX_BULK}")));
    }
    let mut filter = filter_of(
        hub,
        JobsQuery {
            queue: req.queue.clone(),
            status: Some(status),
            limit: Some(limit.min(1000)),
            cursor: None,
            kind: req.kind.clone(),
            error: req.error.clone(),
            since: req.since.clone(),
        },
    )?;
    let mut job_ids = Vec::new();
    if let Some(ids) = &req.job_ids {
        let chosen = selected(hub, ids, &filter).await?;
        apply(hub, action, &chosen, &mut job_ids).await?;
    } else {
        loop {
            let (page, next) = hub.store.list(filter.clone()).await?;
            let room = (limit as usize).saturating_sub(job_ids.len());
            let chosen: Vec<uuid::Uuid> = page.iter().take(room).map(|j| j.job_id).collect();
            apply(hub, action, &chosen, &mut job_ids).await?;
            match next {
                Some(cursor) if job_ids.len() < limit as usize => filter.before = Some(cursor),
                _ => break,
            }
        }
    }
    let (kind, verb) = match action {
        BulkAction::Requeue => (EventKind::JobsRequeued, "requeued"),
        BulkAction::Delete => (EventKind::JobsDeleted, "deleted"),
    };
    hub.audit.emit(
        Event::new(kind, Plane::Data)
            .remote(peer)
            .detail(serde_json::json!({"count": job_ids.len(), "filter": req})),
    );
    tracing::info!(count = job_ids.len(), "jobs {verb} in bulk by an operator");
    Ok(BulkOutcome {
        count: job_ids.len() as u64,
        job_ids,
    })
}

/// Requeues or deletes `chosen`; what it changed goes into `done`.
async fn apply(
    hub: &HubState,
    action: BulkAction,
    chosen: &[uuid::Uuid],
    done: &mut Vec<String>,
) -> Result<(), JobsError> {
    match action {
        BulkAction::Requeue => {
            for id in chosen {
                if hub.store.requeue(*id).await?.is_some() {
                    done.push(id.to_string());
                }
            }
        }
        BulkAction::Delete => {
            hub.store.delete_finished(chosen.to_vec()).await?;
            done.extend(chosen.iter().map(|id| id.to_string()));
        }
    }
    Ok(())
}

/// The jobs of an explicit selection that also match `filter` (the others are left alone).
async fn selected(
    hub: &HubState,
    ids: &[String],
    filter: &ListFilter,
) -> Result<Vec<uuid::Uuid>, JobsError> {
    if ids.len() > 1000 {
        return Err(JobsError::invalid("job_ids: at most 1000 ids"));
    }
    let mut chosen = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let uuid = sheratan_proto::ids::parse_uuid(&format!("job_ids[{i}]"), id)
            .map_err(JobsError::Invalid)?;
        if let Some(job) = hub.store.get(uuid).await?
            && matches(filter, &job)
            && !chosen.contains(&uuid)
        {
            chosen.push(uuid);
        }
    }
    Ok(chosen)
}

/// Whether `job` is one `filter` would list.
fn matches(filter: &ListFilter, job: &sheratan_store::JobRecord) -> bool {
    let error = job.error.as_ref().map(|e| e.message.to_ascii_lowercase());
    filter.status.is_none_or(|s| s == job.status)
        && filter.queue.as_ref().is_none_or(|q| *q == job.queue)
        && filter.kind.as_ref().is_none_or(|k| *k == job.kind)
        && filter.since.is_none_or(|t| job.updated_at >= t)
        && filter.error.as_ref().is_none_or(|needle| {
            error
                .as_deref()
                .is_some_and(|e| e.contains(&needle.to_ascii_lowercase()))
        })
}

/// `since`: RFC 3339, or a duration back from `now` (`90s`, `30m`, `1h`, `7d`).
fn parse_since(text: &str, now: time::OffsetDateTime) -> Result<time::OffsetDateTime, JobsError> {
    if let Ok(t) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
    {
        return Ok(t);
    }
    sheratan_proto::data::duration_s(text)
        .and_then(|s| i64::try_from(s).ok())
        .and_then(|s| now.checked_sub(time::Duration::seconds(s)))
        .ok_or_else(|| {
            JobsError::invalid(format!(
                "query parameter since: {text:?} is neither an RFC 3339 time nor a duration such as 30m, 1h or 7d"
            ))
        })
}

/// A finished or stuck job back to `accepted` (an operator's action).
pub async fn requeue(hub: &HubState, id: &str) -> Result<JobView, JobsError> {
    let id = resolve_job_id(hub, id).await?;
    let record = hub
        .store
        .requeue(id)
        .await?
        .ok_or_else(|| JobsError::NotFound(format!("no job {id}")))?;
    // Its last lease (now ended) takes no more progress.
    if let Some(lease) = &record.lease {
        hub.progress.forget(lease.lease_id);
    }
    tracing::info!(job_id = %id, "job requeued by an operator");
    Ok(record.view())
}

/// What an operator may do to a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueAction {
    Pause,
    Resume,
    Purge,
}

impl std::str::FromStr for QueueAction {
    type Err = JobsError;

    fn from_str(s: &str) -> Result<Self, JobsError> {
        match s {
            "pause" => Ok(QueueAction::Pause),
            "resume" => Ok(QueueAction::Resume),
            "purge" => Ok(QueueAction::Purge),
            other => Err(JobsError::NotFound(format!(
                "no queue action {other:?}; use pause, resume or purge"
            ))),
        }
    }
}

pub async fn queue_admin(
    hub: &HubState,
    queue: String,
    action: QueueAction,
) -> Result<QueueAdminResponse, JobsError> {
    sheratan_proto::data::validate_queue(&queue).map_err(JobsError::Invalid)?;
    let answer = match action {
        QueueAction::Pause | QueueAction::Resume => {
            let s = hub
                .store
                .set_paused(queue, action == QueueAction::Pause)
                .await?;
            QueueAdminResponse {
                queue: s.queue,
                paused: s.paused,
                purged: None,
            }
        }
        QueueAction::Purge => {
            let (purged, s) = hub.store.purge(queue).await?;
            QueueAdminResponse {
                queue: s.queue,
                paused: s.paused,
                purged: Some(purged),
            }
        }
    };
    tracing::info!(queue = %answer.queue, ?action, "queue changed by an operator");
    Ok(answer)
}
