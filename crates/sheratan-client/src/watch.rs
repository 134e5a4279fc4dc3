//! Cancels reach running handlers at once: the worker keeps one long poll
//! (`POST /v1/leases/watch`) over the leases of the jobs it has been running for a while, and
//! stops a handler (killing an `exec` command's process group) the moment the hub says its
//! lease ended. Jobs shorter than [`WATCH_AFTER`] are never watched, so a fast queue costs no
//! extra request; a job cancelled before that is stopped when it becomes watched.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{ClientError, DataClient};
use sheratan_proto::data::{WatchRequest, WatchedLease};
use tokio_util::sync::CancellationToken;

/// How long a job runs before its lease is watched.
pub const WATCH_AFTER: Duration = Duration::from_millis(500);

/// How often the set of watched leases is looked at (a new long-running job joins the poll).
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// How long one long poll waits.
const POLL_MS: u64 = 25_000;

/// The jobs running now: lease id → (job id, when it started, what stops it).
#[derive(Default)]
pub struct Running(Mutex<HashMap<String, (String, Instant, CancellationToken)>>);

impl Running {
    /// Registers a started job; the token is cancelled when the hub says its lease ended.
    pub fn start(&self, job_id: &str, lease_id: &str) -> CancellationToken {
        let stop = CancellationToken::new();
        self.0.lock().expect("running jobs").insert(
            lease_id.to_owned(),
            (job_id.to_owned(), Instant::now(), stop.clone()),
        );
        stop
    }

    pub fn finish(&self, lease_id: &str) {
        self.0.lock().expect("running jobs").remove(lease_id);
    }

    /// The leases old enough to watch, sorted (so an unchanged set compares equal).
    fn watchable(&self) -> Vec<WatchedLease> {
        let map = self.0.lock().expect("running jobs");
        let mut leases: Vec<WatchedLease> = map
            .iter()
            .filter(|(_, (_, started, stop))| {
                started.elapsed() >= WATCH_AFTER && !stop.is_cancelled()
            })
            .map(|(lease, (job, _, _))| WatchedLease {
                job_id: job.clone(),
                lease_id: lease.clone(),
            })
            .collect();
        leases.sort_by(|a, b| a.lease_id.cmp(&b.lease_id));
        leases
    }

    /// Every running lease (the worker stream resumes them after a reconnect).
    pub fn leases(&self) -> Vec<WatchedLease> {
        let map = self.0.lock().expect("running jobs");
        map.iter()
            .map(|(lease, (job, _, _))| WatchedLease {
                job_id: job.clone(),
                lease_id: lease.clone(),
            })
            .collect()
    }

    /// Stops the handler of `lease_id`: the hub said its lease ended.
    pub fn stop(&self, lease_id: &str) {
        if let Some((job, _, stop)) = self.0.lock().expect("running jobs").get(lease_id) {
            tracing::warn!(job_id = %job, "the hub ended this job's lease (cancelled, or taken back): stopping its handler");
            stop.cancel();
        }
    }
}

/// Watches the running jobs' leases until `shutdown`. A hub without the route (older) ends
/// the watch: cancels then reach handlers at their next lease extension, as before.
pub async fn watch_loop(data: DataClient, running: &Running, shutdown: CancellationToken) {
    loop {
        // Until some job has run long enough to be watched.
        let watched = loop {
            let now = running.watchable();
            if !now.is_empty() {
                break now;
            }
            tokio::select! {
                () = tokio::time::sleep(LOOK_EVERY) => {}
                () = shutdown.cancelled() => return,
            }
        };
        let req = WatchRequest {
            leases: watched.clone(),
            wait_ms: POLL_MS,
        };
        let changed = async {
            loop {
                tokio::time::sleep(LOOK_EVERY).await;
                if running.watchable() != watched {
                    return;
                }
            }
        };
        tokio::select! {
            answer = data.watch(&req) => match answer {
                Ok(answer) => answer.ended.iter().for_each(|l| running.stop(l)),
                Err(err) if matches!(err.status(), Some(404 | 405)) => {
                    tracing::info!("this hub cannot tell running jobs of cancels ({err}); they stop at their next lease extension");
                    return;
                }
                Err(err) => {
                    if !matches!(err, ClientError::Transport { .. }) {
                        tracing::warn!("watching the running jobs' leases: {err}");
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            // Asked again with whatever runs now.
            () = changed => {}
            () = shutdown.cancelled() => return,
        }
    }
}
