//! What every mesh member beside the hub runs while its listener serves: heartbeats to the
//! control plane and, for members that lease their own jobs (the broker, the relay), the pull
//! loop. Hosts, the broker, the relay and Core share this one start-up and stop order.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use tokio_util::sync::CancellationToken;

use crate::pull::{JobRunner, PullConfig, pull_loop};
use crate::{ControlClient, DataClient, Identity, MeshToken, RetryPolicy, heartbeat_loop};

/// The clients of a member that talks to both planes (the broker, the relay, Core): the
/// control plane's for heartbeats, and the data plane's without the client's own retries (the
/// pull loop retries on its own schedule, and Core hands a refusal back to its caller at once).
/// An error is a malformed URL, as the operator gave it.
pub fn member_clients(
    control_url: &str,
    data_url: &str,
    token: &MeshToken,
) -> std::io::Result<(ControlClient, DataClient)> {
    let control = ControlClient::new(control_url, token.clone()).map_err(std::io::Error::other)?;
    let data = DataClient::new(data_url, token.clone())
        .map_err(std::io::Error::other)?
        .with_retry(RetryPolicy::none());
    Ok((control, data))
}

/// A member's identity and the load it reports.
pub struct Member {
    pub control: ControlClient,
    pub identity: Identity,
    /// Jobs running now (the pull loop counts them; a host counts its executions).
    pub inflight: Arc<AtomicU32>,
    pub capacity: u32,
}

/// The jobs a member leases itself.
pub struct Pull<R: JobRunner> {
    pub data: DataClient,
    pub config: PullConfig,
    pub runner: Arc<R>,
}

impl Member {
    /// Heartbeats while `serve` runs (it ends at `shutdown`).
    pub async fn serve(
        self,
        serve: impl Future<Output = std::io::Result<()>>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let heartbeats = tokio::spawn(self.heartbeats(shutdown));
        let served = serve.await;
        heartbeats.abort();
        served
    }

    /// Heartbeats and leases jobs while `serve` runs; at `shutdown` leasing stops, running
    /// jobs get the pull loop's grace, then heartbeats stop.
    pub async fn serve_and_pull<R: JobRunner>(
        self,
        serve: impl Future<Output = std::io::Result<()>>,
        pull: Pull<R>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let leasing = tokio::spawn(pull_loop(
            pull.data,
            pull.config,
            pull.runner,
            self.inflight.clone(),
            shutdown.clone().cancelled_owned(),
        ));
        let heartbeats = tokio::spawn(self.heartbeats(shutdown));
        let served = serve.await;
        let _ = leasing.await;
        heartbeats.abort();
        served
    }

    async fn heartbeats(self, shutdown: CancellationToken) {
        heartbeat_loop(
            self.control,
            self.identity,
            &self.inflight,
            self.capacity,
            shutdown.cancelled_owned(),
        )
        .await;
    }
}
