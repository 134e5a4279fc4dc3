//! The owner of every task `sheratan hub` and `up` start, and of their stop order: at the
//! first signal, workers, hosts, broker, relay, Core, dashboard and the audit watcher stop
//! (running jobs finish and report), then the hub drains and stops; the token follower lives
//! exactly as long as the hub. If the hub stops on its own (a listener failed), everything
//! else is stopped and its error returned.

use std::sync::Arc;
use std::time::Duration;

use sheratan_client::MeshToken;
use sheratan_hub::Hub;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::Failure;
use crate::up_cmd::Members;

/// The token the hub's neighbours send and the other one they accept.
pub type TokensInUse = (Option<String>, Option<String>);

pub struct Supervisor {
    /// Cancelled by the first SIGINT/SIGTERM: everything but the hub stops.
    signals: CancellationToken,
    /// Cancelled last: the hub drains and stops.
    hub_stop: CancellationToken,
    workers: JoinSet<Result<(), sheratan_worker::WorkerError>>,
    members: JoinSet<std::io::Result<()>>,
    watcher: Option<JoinHandle<anyhow::Result<()>>>,
    follower: Option<JoinHandle<()>>,
}

impl Supervisor {
    pub fn new(signals: CancellationToken) -> Self {
        Self {
            signals,
            hub_stop: CancellationToken::new(),
            workers: JoinSet::new(),
            members: JoinSet::new(),
            watcher: None,
            follower: None,
        }
    }

    /// Runs the hub and everything beside it until a signal (or the hub's failure).
    pub async fn run(
        mut self,
        hub: Hub,
        members: Members,
        watcher: Option<sheratan_ops::watch::Watcher>,
        follow: Option<(MeshToken, TokensInUse)>,
    ) -> Result<(), Failure> {
        if let Some((token, in_use)) = follow {
            // Until the hub itself stops: it serves through the drain, and so must the switch.
            self.follower = Some(tokio::spawn(follow_rotations(
                hub.state().clone(),
                token,
                in_use,
                self.hub_stop.clone(),
            )));
        }
        let mut hub_task = tokio::spawn(hub.run(self.hub_stop.clone()));
        self.spawn_members(members, watcher);
        tokio::select! {
            () = self.signals.cancelled() => {}
            ended = &mut hub_task => {
                // The hub stopped on its own (a listener failed): stop everything with its error.
                // Workers finish what they run; the others would only wait out their grace
                // against a hub that is gone, so they are cut off.
                self.signals.cancel();
                self.hub_stop.cancel();
                self.members.abort_all();
                if let Some(watcher) = self.watcher.take() {
                    watcher.abort();
                }
                self.wait_members().await;
                return hub_result(ended);
            }
        }
        self.wait_members().await;
        self.hub_stop.cancel();
        let ended = hub_task.await;
        if let Some(follower) = self.follower.take() {
            let _ = follower.await;
        }
        hub_result(ended)
    }

    fn spawn_members(&mut self, members: Members, watcher: Option<sheratan_ops::watch::Watcher>) {
        let stop = &self.signals;
        for config in members.workers {
            self.workers
                .spawn(sheratan_worker::run(config, stop.clone()));
        }
        for host in members.hosts {
            self.members.spawn(host.run(stop.clone()));
        }
        if let Some(broker) = members.broker {
            self.members.spawn(broker.run(stop.clone()));
        }
        if let Some(relay) = members.relay {
            self.members.spawn(relay.run(stop.clone()));
        }
        if let Some(dashboard) = members.dashboard {
            self.members.spawn(dashboard.run(stop.clone()));
        }
        if let Some(core) = members.core {
            self.members.spawn(core.run(stop.clone()));
        }
        self.watcher = watcher.map(|w| tokio::spawn(sheratan_ops::watch::follow(w, stop.clone())));
    }

    /// Workers first (they finish their jobs and report), then the other members and the
    /// audit watcher.
    async fn wait_members(&mut self) {
        while let Some(done) = self.workers.join_next().await {
            if let Ok(Err(err)) = done {
                tracing::error!(%err, "a worker failed");
            }
        }
        while let Some(done) = self.members.join_next().await {
            if let Ok(Err(err)) = done {
                tracing::error!(%err, "a host, the broker, the relay, core or the dashboard failed");
            }
        }
        if let Some(watcher) = self.watcher.take()
            && let Ok(Err(err)) = watcher.await
        {
            tracing::error!(%err, "the audit watcher failed");
        }
    }
}

fn hub_result(
    ended: Result<Result<(), sheratan_hub::HubError>, tokio::task::JoinError>,
) -> Result<(), Failure> {
    ended
        .map_err(|e| Failure::from(anyhow::anyhow!("the hub task failed: {e}")))?
        .map_err(|e| Failure::from(anyhow::Error::new(e)))
}

/// The token the hub's own neighbours send, and the other one they accept: during a rotation
/// they send the next token (the hub accepts both) and accept both; otherwise the current one.
pub fn tokens_to_use(tokens: &sheratan_hub::auth::Tokens) -> TokensInUse {
    if !tokens.required() {
        return (None, None);
    }
    let (current, next) = tokens.current_and_next();
    let current = current.expose().to_owned();
    match next {
        Some(next) => (Some(next.expose().to_owned()), Some(current)),
        None => (Some(current), None),
    }
}

/// Keeps `token` in step with the hub's rotations (started or finalized by the admin path,
/// the deadline timer, or another hub on the same database) until `stop`.
async fn follow_rotations(
    hub: Arc<sheratan_hub::HubState>,
    token: MeshToken,
    mut in_use: TokensInUse,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let now = tokens_to_use(&hub.tokens);
        if now != in_use {
            tracing::info!(
                rotation = now.1.is_some(),
                "the workers, hosts, broker, relay and core beside the hub switch tokens with it"
            );
            token.set(now.0.clone(), now.1.clone());
            in_use = now;
        }
    }
}
