//! `POST /v1/leases/watch`: a node's long poll over its running leases, so a cancel reaches
//! the handler within a moment instead of at the lease's next extension. Costs nothing while
//! nothing is cancelled: one parked request per node, woken by a cancel on this hub (and
//! re-armed every `wait_ms`, when its leases are looked at again).

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
    let mut ended = Vec::new();
    for (lease, (job, text)) in &watched {
        let live = hub.store.get(*job).await?.is_some_and(|j| {
            j.status == JobStatus::InProgress && j.lease.is_some_and(|l| l.lease_id == *lease)
        });
        if !live {
            ended.push(text.clone());
        }
    }
    if !ended.is_empty() || watched.is_empty() {
        return Ok(WatchResponse { ended });
    }
    let deadline = tokio::time::sleep(Duration::from_millis(req.wait_ms));
    tokio::pin!(deadline);
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
            () = &mut deadline => return Ok(WatchResponse::default()),
            () = stopping.cancelled() => return Ok(WatchResponse::default()),
        }
    }
}
