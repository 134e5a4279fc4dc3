//! The reaper: expired leases back to `accepted` (or `failed`), delayed jobs promoted, old
//! idempotency keys forgotten; one `LEASE_REAP` per node and tick.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sheratan_proto::data::JobStatus;
use sheratan_proto::{EventKind, Plane};
use tokio_util::sync::CancellationToken;

use crate::HubState;
use crate::audit::Event;

/// Reaps expired leases and promotes delayed jobs every `interval`; forgets idempotency keys
/// older than the TTL once a minute. Runs in the process that serves the data plane.
pub async fn run_reaper(hub: Arc<HubState>, interval: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_expiry = tokio::time::Instant::now();
    let mut last_settings: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        reap_once(&hub).await;
        if last_settings.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            last_settings = Some(tokio::time::Instant::now());
            if let Err(err) = hub.queue_settings.refresh(hub.store.as_ref()).await {
                tracing::warn!(%err, "cannot re-read queue settings; will retry");
            }
        }
        if last_expiry.elapsed() >= Duration::from_secs(60) {
            last_expiry = tokio::time::Instant::now();
            let ttl =
                time::Duration::try_from(hub.config.idempotency_ttl).unwrap_or(time::Duration::DAY);
            match hub
                .store
                .expire_idempotency_keys(hub.clock.now() - ttl)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::debug!(keys = n, "forgot expired idempotency keys"),
                Err(err) => tracing::warn!(%err, "cannot expire idempotency keys"),
            }
        }
    }
}

/// One pass: expired leases back to `accepted` (or `failed`), delayed jobs promoted.
pub(crate) async fn reap_once(hub: &HubState) {
    match hub.store.tick().await {
        Ok(report) => report_reaped(hub, report.reaped),
        Err(err) => tracing::warn!(%err, "the lease reaper could not run; will retry"),
    }
}

/// One LEASE_REAP event per node and tick, so a worker that dies holding 100 leases makes one
/// audit line, not 100.
fn report_reaped(hub: &HubState, reaped: Vec<sheratan_store::Reaped>) {
    if reaped.is_empty() {
        return;
    }
    hub.jobs
        .reaped
        .fetch_add(reaped.len() as u64, Ordering::Relaxed);
    // A lease taken back takes no more progress.
    for r in &reaped {
        hub.progress.forget_job(r.job_id);
    }
    let mut by_node: std::collections::BTreeMap<String, Vec<&sheratan_store::Reaped>> =
        Default::default();
    for r in &reaped {
        by_node.entry(r.node_id.clone()).or_default().push(r);
    }
    for (node, jobs) in by_node {
        let failed = jobs
            .iter()
            .filter(|r| r.status == JobStatus::Failed)
            .count();
        hub.jobs.failed.fetch_add(failed as u64, Ordering::Relaxed);
        let sample: Vec<String> = jobs.iter().take(10).map(|r| r.job_id.to_string()).collect();
        hub.audit.emit(
            Event::new(EventKind::LeaseReap, Plane::Data)
                .node(node.clone())
                .detail(serde_json::json!({
                    "jobs": jobs.len(),
                    "requeued": jobs.len() - failed,
                    "failed": failed,
                    "job_ids": sample,
                })),
        );
        tracing::warn!(node_id = %node, jobs = jobs.len(), failed, "LEASE_REAP: leases expired without a result");
    }
}
