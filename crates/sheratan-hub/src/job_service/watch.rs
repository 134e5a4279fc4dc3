//! `POST /v1/leases/watch`: a node's long poll over its running leases, so a cancel reaches
//! the handler within a moment instead of at the lease's next extension. Costs nothing while
//! nothing is cancelled: one parked request per node, woken by a cancel on this hub. A cancel
//! on another hub of the same database arrives as the store's "a job finished" signal: the
//! watched leases are then looked at again, at most every [`RECHECK`].

use std::collections::HashMap;
use std::time::Duration;

use sheratan_proto::data::{JobStatus, MAX_WATCHED, WatchRequest, WatchResponse};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{JobsError, MAX_WAIT_MS, parse_id};
use crate::HubState;

pub async fn watch(
    hub: &HubState,
    req: WatchRequest,
    stopping: &CancellationToken,
) -> Result<WatchResponse, JobsError> {
    if req.leases.len() > MAX_WATCHED {
        return Err(JobsError::invalid(format!("leases: at most {MAX_WATCHED}")));
    }
    if req.wait_ms > MAX_WAIT_MS {
        return Err(JobsError::invalid(format!(
            "wait_ms: at most {MAX_WAIT_MS}"
        )));
    }
    let mut watched: HashMap<Uuid, (Uuid, String)> = HashMap::new();
    for (i, l) in req.leases.iter().enumerate() {
        let job = parse_id(&format!("leases[{i}].job_id"), &l.job_id)?;
        let lease = parse_id(&format!("leases[{i}].lease_id"), &l.lease_id)?;
        watched.insert(lease, (job, l.lease_id.clone()));
    }
    // Subscribed before looking, so a cancel between the look and the wait is not missed.
    let mut cancels = hub.cancelled_leases.subscribe();
    let mut finished = hub.store.finished_signal();
    finished.borrow_and_update();
    let ended = not_live(hub, &watched).await?;
    if !ended.is_empty() || watched.is_empty() {
        return Ok(WatchResponse { ended });
    }
    let deadline = tokio::time::sleep(Duration::from_millis(req.wait_ms));
    tokio::pin!(deadline);
    let mut looked = tokio::time::Instant::now();
    loop {
        tokio::select! {
            cancelled = cancels.recv() => match cancelled {
                Ok(lease) => {
                    if let Some((_, text)) = watched.get(&lease) {
                        return Ok(WatchResponse { ended: vec![text.clone()] });
                    }
                }
                // Missed some: the node asks again at once and this hub looks at every lease.
                Err(_) => return Ok(WatchResponse::default()),
            },
            // A job ended somewhere (another hub's cancel among them): look again, not more
            // often than every RECHECK however busy the mesh is.
            changed = finished.changed() => {
                if changed.is_err() {
                    return Ok(WatchResponse::default());
                }
                tokio::select! {
                    () = tokio::time::sleep_until(looked + RECHECK) => {}
                    () = &mut deadline => return Ok(WatchResponse::default()),
                }
                finished.borrow_and_update();
                looked = tokio::time::Instant::now();
                let ended = not_live(hub, &watched).await?;
                if !ended.is_empty() {
                    return Ok(WatchResponse { ended });
                }
            },
            () = &mut deadline => return Ok(WatchResponse::default()),
            () = stopping.cancelled() => return Ok(WatchResponse::default()),
        }
    }
}

/// How often, at most, a watch looks at its leases again when jobs end elsewhere.
const RECHECK: Duration = Duration::from_millis(500);

/// The watched leases that are no longer their job's live lease.
async fn not_live(
    hub: &HubState,
    watched: &HashMap<Uuid, (Uuid, String)>,
) -> Result<Vec<String>, JobsError> {
    let mut ended = Vec::new();
    for (lease, (job, text)) in watched {
        let live = hub.store.get(*job).await?.is_some_and(|j| {
            j.status == JobStatus::InProgress && j.lease.is_some_and(|l| l.lease_id == *lease)
        });
        if !live {
            ended.push(text.clone());
        }
    }
    Ok(ended)
}
