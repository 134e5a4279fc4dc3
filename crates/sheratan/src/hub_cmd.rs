//! `sheratan hub` and `sheratan up`: open the store, build and run the hub, and (for `up`)
//! the components that run beside it.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use clap::Args;
use sheratan_hub::Hub;
use tokio_util::sync::CancellationToken;

use crate::hub_args::HubArgs;
use crate::worker_cmd::{WorkerOptions, worker_config};
use crate::{BUILD_ID, Failure, VERSION, usage};

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub hub: HubArgs,
    /// Workers to run beside the hub (0 for none).
    #[arg(long, env = "SHERATAN_UP_WORKERS", default_value_t = 1)]
    pub workers: u32,
    #[command(flatten)]
    pub worker: WorkerOptions,
    #[command(flatten)]
    pub alerts: sheratan_ops::watch::RuleArgs,
    /// POST each alert as JSON to this URL too.
    #[arg(long, env = "SHERATAN_ALERT_WEBHOOK")]
    pub alert_webhook: Option<String>,
}

/// The workers `up` starts.
pub struct WorkerPlan {
    pub count: u32,
    pub options: WorkerOptions,
    pub watch: sheratan_ops::watch::WatchConfig,
}

impl UpArgs {
    pub fn worker_plan(&self) -> WorkerPlan {
        let mut watch =
            sheratan_ops::watch::WatchConfig::new(self.hub.home.home.join("logs"), &self.alerts);
        watch.webhook = self.alert_webhook.clone();
        WorkerPlan {
            count: self.workers,
            options: self.worker.clone(),
            watch,
        }
    }
}

/// The loopback URL of a listener for processes on this machine.
fn local_url(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

pub async fn run_hub(args: HubArgs, up: Option<WorkerPlan>) -> Result<(), Failure> {
    let config = args.to_config().map_err(usage)?;
    let home = config.home.clone();
    let token_from_env = config.tokens.token.is_some();
    let auth_required = config.tokens.required;
    let clock: Arc<dyn sheratan_store::Clock> = Arc::new(sheratan_store::SystemClock);
    let (store_url, store_config) = args.store_config(clock.clone()).map_err(usage)?;
    // Opening recovers every live job into memory: blocking work, off the runtime.
    let store =
        tokio::task::spawn_blocking(move || sheratan_store_sqlite::SqliteStore::open(store_config))
            .await
            .map_err(|e| Failure::from(anyhow::anyhow!("opening the job store failed: {e}")))?
            .map_err(|e| Failure::from(anyhow::Error::new(e)))?;
    let store: Arc<dyn sheratan_store::Store> = Arc::new(store);
    let hub = Hub::build_with_clock(config, store, clock)
        .await
        .map_err(|e| match e {
            sheratan_hub::HubError::Config(msg) => usage(msg),
            other => Failure::from(anyhow::Error::new(other)),
        })?;

    // Workers beside the hub talk to it over HTTP, like any other worker.
    let mut workers = Vec::new();
    if let Some(plan) = &up
        && let (Some(c), Some(d)) = (hub.control_addr(), hub.data_addr())
    {
        let token = hub
            .state()
            .tokens
            .required()
            .then(|| hub.state().tokens.current().expose().to_owned());
        for i in 1..=plan.count {
            let node_id = format!("worker-{i}");
            let config = worker_config(
                &local_url(c),
                &local_url(d),
                token.clone(),
                &node_id,
                &plan.options,
                BUILD_ID,
            )
            .map_err(usage)?;
            workers.push(config);
        }
    }

    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "sheratan {VERSION}");
    if let Some(addr) = hub.control_addr() {
        let _ = writeln!(
            out,
            "  control plane: http://{addr}  (public /health; everything else needs the token)"
        );
    }
    if let Some(addr) = hub.data_addr() {
        let _ = writeln!(
            out,
            "  data plane: http://{addr}  (jobs, leases, results; /health and /admin from loopback only)"
        );
    }
    for w in &workers {
        let _ = writeln!(
            out,
            "  worker: {} ({} slots; queues {}; handlers {})",
            w.node_id,
            w.concurrency,
            w.queues.join(","),
            w.handlers.names().join(",")
        );
    }
    let home_display = std::fs::canonicalize(&home).unwrap_or(home.clone());
    if up.is_some() {
        let _ = writeln!(
            out,
            "  alerts: {} (audit watcher)",
            home_display
                .join("logs")
                .join(sheratan_proto::event::ALERTS_FILE)
                .display()
        );
    }
    if !auth_required {
        let _ = writeln!(
            out,
            "  token: NONE - SHERATAN_HUB_TOKEN_REQUIRED=0, anyone who reaches the hub controls it"
        );
    } else if token_from_env {
        let _ = writeln!(out, "  token: from SHERATAN_HUB_TOKEN");
    } else if let Some(path) = hub.state().tokens.token_file() {
        let path = std::fs::canonicalize(path).unwrap_or(path.to_owned());
        let _ = writeln!(out, "  token: {}", path.display());
    }
    let _ = writeln!(out, "  state: {}", home_display.display());
    let _ = writeln!(out, "  store: {}", store_url.display());
    if up.is_some() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Try (in another terminal, in this directory):");
        let env = match (hub.control_addr(), hub.data_addr()) {
            (Some(c), Some(d)) if c.port() != 8787 || d.port() != 8788 => format!(
                "SHERATAN_CONTROL_URL={} SHERATAN_DATA_URL={} ",
                local_url(c),
                local_url(d)
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {env}sheratan submit --kind echo --payload '{{\"hello\":\"world\"}}' --wait"
        );
        let _ = writeln!(out, "  {env}sheratan nodes");
    }
    // The last line of the banner; scripts and the testkit wait for it.
    let _ = writeln!(
        out,
        "ready: Ctrl-C (or SIGTERM) stops {}",
        if up.is_some() {
            "everything"
        } else {
            "the hub"
        }
    );
    let _ = out.flush();
    drop(out);

    let signals = sheratan_runtime::shutdown_on_signals();
    // Workers stop first (finishing their jobs and reporting results); the hub after them.
    let hub_stop = CancellationToken::new();
    let mut hub_task = tokio::spawn(hub.run(hub_stop.clone()));
    let mut worker_tasks = tokio::task::JoinSet::new();
    for config in workers {
        worker_tasks.spawn(sheratan_worker::run(config, signals.clone()));
    }
    let watcher = up.as_ref().map(|plan| {
        tokio::spawn(sheratan_ops::watch::run(
            plan.watch.clone(),
            signals.clone(),
        ))
    });
    tokio::select! {
        () = signals.cancelled() => {}
        // The hub stopped on its own (a listener failed): stop everything with its error.
        ended = &mut hub_task => {
            signals.cancel();
            while worker_tasks.join_next().await.is_some() {}
            return ended
                .map_err(|e| Failure::from(anyhow::anyhow!("the hub task failed: {e}")))?
                .map_err(|e| Failure::from(anyhow::Error::new(e)));
        }
    }
    while let Some(done) = worker_tasks.join_next().await {
        if let Ok(Err(err)) = done {
            tracing::error!(%err, "a worker failed");
        }
    }
    if let Some(watcher) = watcher
        && let Ok(Err(err)) = watcher.await
    {
        tracing::error!(%err, "the audit watcher failed");
    }
    hub_stop.cancel();
    hub_task
        .await
        .map_err(|e| Failure::from(anyhow::anyhow!("the hub task failed: {e}")))?
        .map_err(|e| Failure::from(anyhow::Error::new(e)))
}
