//! Retention (docs/API.md, "Retention"): finished jobs and their results deleted once older
//! than `SHERATAN_RETENTION` (default 7 days) or their queue's `retention` /
//! `failed_retention`. Off the hot path: one small batch per store operation, paced so the
//! writer stays free for submits and leases between batches; audited once per batch.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sheratan_proto::queues::parse_retention;
use sheratan_proto::{EventKind, Plane};
use sheratan_store::retention::{Cutoffs, RetentionRules};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::HubState;
use crate::audit::Event;

/// Jobs one purge deletes at most: small, so a batch holds the SQLite writer well under a
/// millisecond (measured: docs/PERFORMANCE.md, "What retention costs").
pub const BATCH: u32 = 32;
/// After a batch, the purger waits this many times as long as the batch took (at least
/// [`MIN_PAUSE`]): deleting takes at most a twentieth of the writer, so a request meets a batch
/// rarely and waits for a short one when it does.
const PAUSE_FACTOR: u32 = 20;
const MIN_PAUSE: Duration = Duration::from_millis(2);
/// How long the purger waits when nothing (more) is due.
const IDLE: Duration = Duration::from_secs(5);

/// What retention did on this hub, and the newest job id it knows was deleted.
#[derive(Default)]
pub struct RetentionState {
    pub purged: AtomicU64,
    through: Mutex<Option<Uuid>>,
}

impl RetentionState {
    /// Whether a job with this id, not found, was most likely deleted by retention (ids are
    /// UUIDv7: one made no later than the newest purged job's).
    pub fn covers(&self, id: Uuid) -> bool {
        // Job ids are UUIDv7; any other id was never a job here.
        id.get_version_num() == 7
            && self
                .through
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|newest| id <= newest)
    }

    fn note(&self, newest: Option<Uuid>) {
        let mut through = self.through.lock().unwrap_or_else(|e| e.into_inner());
        if newest > *through {
            *through = newest;
        }
    }
}

/// The cutoffs now: the hub's retention for every queue, a queue's own settings over it.
pub fn rules(hub: &HubState, now: OffsetDateTime) -> RetentionRules {
    // A cutoff before what a time can hold keeps everything (values are capped at 100 years
    // when set; this is the belt to that).
    let cutoff = |seconds: u64| -> Option<OffsetDateTime> {
        let seconds = i64::try_from(seconds).ok().filter(|s| *s > 0)?;
        now.checked_sub(time::Duration::seconds(seconds))
    };
    let default_s = hub.config.retention.map_or(0, |d| d.as_secs());
    let default = Cutoffs {
        done: cutoff(default_s),
        failed: cutoff(default_s),
    };
    let mut queues = Vec::new();
    for (queue, settings) in hub.queue_settings.all().iter() {
        if settings.retention.is_none() && settings.failed_retention.is_none() {
            continue;
        }
        // Checked when they were set; a value that no longer parses keeps the jobs.
        let parse = |v: &Option<String>| v.as_deref().map(|t| parse_retention("", t).unwrap_or(0));
        let done_s = parse(&settings.retention).unwrap_or(default_s);
        let failed_s = parse(&settings.failed_retention).unwrap_or(done_s);
        queues.push((
            queue.clone(),
            Cutoffs {
                done: cutoff(done_s),
                failed: cutoff(failed_s),
            },
        ));
    }
    queues.sort_by(|a, b| a.0.cmp(&b.0));
    RetentionRules { default, queues }
}

/// Purges until `stop`: a batch, then a pause [`PAUSE_FACTOR`] times as long as the batch
/// took, or [`IDLE`] once nothing more is due.
pub async fn run_retention(hub: std::sync::Arc<HubState>, stop: CancellationToken) {
    if let Ok(Some(newest)) = hub.store.purged_through().await {
        hub.retention.note(Some(newest));
    }
    let mut failing = false;
    loop {
        let wait = match purge_once(&hub).await {
            Ok((more, took)) => {
                failing = false;
                if more {
                    (took * PAUSE_FACTOR).max(MIN_PAUSE)
                } else {
                    IDLE
                }
            }
            Err(err) => {
                if !failing {
                    tracing::warn!("retention cannot delete finished jobs (it retries): {err}");
                }
                failing = true;
                IDLE
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One batch: whether more is due (a full batch, or space still to give back) and how long
/// it took.
async fn purge_once(hub: &HubState) -> Result<(bool, Duration), sheratan_store::StoreError> {
    let rules = rules(hub, hub.clock.now());
    if rules.is_empty() {
        return Ok((false, Duration::ZERO));
    }
    let started = Instant::now();
    let report = hub.store.expire_finished(rules, BATCH).await?;
    let took = started.elapsed();
    if report.deleted > 0 {
        hub.retention
            .purged
            .fetch_add(report.deleted, Ordering::Relaxed);
        hub.retention.note(report.newest);
        hub.audit.emit(
            Event::new(EventKind::JobsPurged, Plane::Data)
                .detail(serde_json::json!({"count": report.deleted})),
        );
    }
    Ok((
        report.deleted == u64::from(BATCH) || report.free_pages > 0,
        took,
    ))
}
