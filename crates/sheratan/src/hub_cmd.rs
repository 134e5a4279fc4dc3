//! `sheratan hub` and `sheratan up`: open the store, build and run the hub, and (for `up`)
//! the components that run beside it.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use clap::Args;
use sheratan_hub::Hub;
use tokio_util::sync::CancellationToken;

use crate::hub_args::HubArgs;
use crate::mesh_cmd::{
    BrokerOptions, CoreOptions, HostOptions, bind_error, broker_config, core_config, host_config,
};
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
    /// Core API listen address.
    #[arg(long, env = "SHERATAN_CORE_ADDR", default_value = "127.0.0.1:8001")]
    pub core_addr: SocketAddr,
    /// Broker listen address.
    #[arg(long, env = "SHERATAN_BROKER_ADDR", default_value = "127.0.0.1:9000")]
    pub broker_addr: SocketAddr,
    /// Host-A listen address.
    #[arg(long, env = "SHERATAN_HOST_A_ADDR", default_value = "127.0.0.1:8081")]
    pub host_a_addr: SocketAddr,
    /// Host-B listen address.
    #[arg(long, env = "SHERATAN_HOST_B_ADDR", default_value = "127.0.0.1:8082")]
    pub host_b_addr: SocketAddr,
    #[command(flatten)]
    pub host: HostOptions,
    #[command(flatten)]
    pub broker: BrokerOptions,
    #[command(flatten)]
    pub core: CoreOptions,
    /// Relay listen address.
    #[arg(long, env = "SHERATAN_RELAY_ADDR", default_value = "127.0.0.1:3000")]
    pub relay_addr: SocketAddr,
    #[command(flatten)]
    pub relay: crate::relay_cmd::RelayOptions,
    /// Dashboard listen address.
    #[arg(
        long,
        env = "SHERATAN_DASHBOARD_ADDR",
        default_value = "127.0.0.1:3001"
    )]
    pub dashboard_addr: SocketAddr,
}

/// The workers `up` starts.
pub struct WorkerPlan {
    pub count: u32,
    pub options: WorkerOptions,
    pub watch: sheratan_ops::watch::WatchConfig,
    pub mesh: UpArgs,
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
            mesh: self.clone(),
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
    // A home this command creates is its owner's alone (token, job store, logs); one that
    // exists keeps the mode its operator gave it.
    if !home.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&home)
            .map_err(|e| {
                Failure::from(anyhow::anyhow!(
                    "cannot create SHERATAN_HOME {}: {e}",
                    home.display()
                ))
            })?;
    }
    let store: Arc<dyn sheratan_store::Store> = match store_config {
        crate::hub_args::StoreChoice::Sqlite(config) => {
            // Opening recovers every live job into memory: blocking work, off the runtime.
            let store = tokio::task::spawn_blocking(move || {
                sheratan_store_sqlite::SqliteStore::open(config)
            })
            .await
            .map_err(|e| Failure::from(anyhow::anyhow!("opening the job store failed: {e}")))?
            .map_err(|e| Failure::from(anyhow::Error::new(e)))?;
            Arc::new(store)
        }
        crate::hub_args::StoreChoice::Postgres(config) => {
            let store = sheratan_store_postgres::PgStore::open(config).await.map_err(|e| {
                Failure::from(anyhow::anyhow!(
                    "opening the PostgreSQL store at {} failed: {e} (is the database running, and does SHERATAN_STORE name it?)",
                    store_url.display()
                ))
            })?;
            Arc::new(store)
        }
    };
    let mut hub = Hub::build_with_clock(config, store, clock)
        .await
        .map_err(|e| match e {
            sheratan_hub::HubError::Config(msg) => usage(msg),
            sheratan_hub::HubError::Token(sheratan_hub::auth::TokenError::Invalid(msg)) => {
                usage(msg)
            }
            other => Failure::from(anyhow::Error::new(other)),
        })?;
    // Hubs on one PostgreSQL database share the registry, token rotation and bundles.
    if let crate::hub_args::StoreUrl::Postgres { url, schema } = &store_url {
        let shared = sheratan_store_postgres::PgShared::open(url, schema.clone())
            .await
            .map_err(|e| Failure::from(anyhow::anyhow!("opening the shared hub state: {e}")))?;
        let hub_id = format!(
            "{}-{}-{}",
            crate::client_args::hostname(),
            hub.control_addr().map_or(0, |a| a.port()),
            std::process::id()
        );
        hub.share_state(Arc::new(shared), hub_id);
    }

    // Everything `up` runs beside the hub shares one token that follows the hub's rotations.
    let tokens_in_use = tokens_to_use(&hub.state().tokens);
    let mesh_token = sheratan_client::MeshToken::default();
    mesh_token.set(tokens_in_use.0.clone(), tokens_in_use.1.clone());

    // Workers beside the hub talk to it over HTTP, like any other worker.
    let mut workers = Vec::new();
    if let Some(plan) = &up
        && let (Some(c), Some(d)) = (hub.control_addr(), hub.data_addr())
    {
        let token = mesh_token.clone();
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

    // Hosts, broker and core beside the hub, bound now so the banner shows their addresses.
    let mut mesh = Mesh::default();
    if let Some(plan) = &up
        && let (Some(c), Some(d)) = (hub.control_addr(), hub.data_addr())
    {
        mesh = bind_mesh(
            &plan.mesh,
            &plan.options,
            &local_url(c),
            &local_url(d),
            &mesh_token,
            &home,
        )
        .await?;
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
    for line in &mesh.banner {
        let _ = writeln!(out, "  {line}");
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
    let signals = sheratan_runtime::shutdown_on_signals();
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
    // Workers stop first (finishing their jobs and reporting results); the hub after them.
    let hub_stop = CancellationToken::new();
    if up.is_some() {
        // Until the hub itself stops: it serves through the drain, and so must the switch.
        tokio::spawn(follow_rotations(
            hub.state().clone(),
            mesh_token,
            tokens_in_use,
            hub_stop.clone(),
        ));
    }
    let mut hub_task = tokio::spawn(hub.run(hub_stop.clone()));
    let mut worker_tasks = tokio::task::JoinSet::new();
    for config in workers {
        worker_tasks.spawn(sheratan_worker::run(config, signals.clone()));
    }
    let mut mesh_tasks = tokio::task::JoinSet::new();
    for host in mesh.hosts {
        mesh_tasks.spawn(host.run(signals.clone()));
    }
    if let Some(broker) = mesh.broker {
        mesh_tasks.spawn(broker.run(signals.clone()));
    }
    if let Some(relay) = mesh.relay {
        mesh_tasks.spawn(relay.run(signals.clone()));
    }
    if let Some(dashboard) = mesh.dashboard {
        mesh_tasks.spawn(dashboard.run(signals.clone()));
    }
    if let Some(core) = mesh.core {
        mesh_tasks.spawn(core.run(signals.clone()));
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
    while let Some(done) = mesh_tasks.join_next().await {
        if let Ok(Err(err)) = done {
            tracing::error!(%err, "a host, the broker or core failed");
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

/// The token the hub's own neighbours send, and the other one they accept: during a rotation
/// they send the next token (the hub accepts both) and accept both; otherwise the current one.
fn tokens_to_use(tokens: &sheratan_hub::auth::Tokens) -> (Option<String>, Option<String>) {
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
    token: sheratan_client::MeshToken,
    mut in_use: (Option<String>, Option<String>),
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
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

/// What `up` runs beside the hub and workers.
#[derive(Default)]
struct Mesh {
    hosts: Vec<sheratan_auction::host::Host>,
    broker: Option<sheratan_auction::broker::Broker>,
    relay: Option<sheratan_relay::Relay>,
    core: Option<sheratan_core::Core>,
    dashboard: Option<sheratan_dashboard::Dashboard>,
    banner: Vec<String>,
}

async fn bind_mesh(
    args: &UpArgs,
    worker: &WorkerOptions,
    control_url: &str,
    data_url: &str,
    token: &sheratan_client::MeshToken,
    home: &std::path::Path,
) -> Result<Mesh, Failure> {
    let handlers = match &worker.handlers {
        Some(path) => sheratan_exec::Handlers::from_file(path).map_err(|e| usage(e.to_string()))?,
        None => sheratan_exec::Handlers::builtin(),
    };
    let serve = crate::mesh_cmd::limits(&args.hub.edge)?;
    let max_body_bytes = args.hub.edge.max_body_bytes;
    let auth = crate::mesh_cmd::auth_banner(&token.send());
    let mut mesh = Mesh::default();
    for (node_id, addr, variable) in [
        ("host-a", args.host_a_addr, "SHERATAN_HOST_A_ADDR"),
        ("host-b", args.host_b_addr, "SHERATAN_HOST_B_ADDR"),
    ] {
        let mut config = host_config(
            node_id,
            addr,
            control_url,
            token.clone(),
            &args.host,
            handlers.clone(),
        )?;
        config.serve = serve;
        config.max_body_bytes = max_body_bytes;
        let host = sheratan_auction::host::Host::bind(config)
            .await
            .map_err(|e| bind_error(node_id, addr, variable, e))?;
        mesh.banner.push(format!(
            "host: {node_id} {}  (capacity {}, price {})",
            host.url(),
            args.host.capacity,
            args.host.base_price
        ));
        mesh.hosts.push(host);
    }
    let store_url =
        crate::hub_args::StoreUrl::parse(args.hub.store.as_deref(), home).map_err(usage)?;
    let auctions = crate::mesh_cmd::auction_store(Some(&store_url), &args.broker, home).await?;
    let mut config = broker_config(
        "broker",
        args.broker_addr,
        control_url,
        data_url,
        token.clone(),
        &args.broker,
        auctions,
    )?;
    config.serve = serve;
    let broker = sheratan_auction::broker::Broker::bind(config)
        .await
        .map_err(|e| bind_error("broker", args.broker_addr, "SHERATAN_BROKER_ADDR", e))?;
    let broker_url = local_url(
        broker
            .local_addr()
            .map_err(|e| Failure::from(anyhow::Error::new(e)))?,
    );
    mesh.banner.push(format!(
        "broker: {broker_url}  (auctions the \"auction\" queue among the hosts)"
    ));
    let mut config = crate::relay_cmd::relay_config(
        "relay",
        args.relay_addr,
        control_url,
        data_url,
        token.clone(),
        home,
        &args.relay,
        true,
    )?;
    config.serve = serve;
    config.max_body_bytes = max_body_bytes;
    let cdp = crate::relay_cmd::describe_cdp(&config);
    let relay = sheratan_relay::Relay::bind(config)
        .await
        .map_err(|e| bind_error("relay", args.relay_addr, "SHERATAN_RELAY_ADDR", e))?;
    let relay_url = local_url(
        relay
            .local_addr()
            .map_err(|e| Failure::from(anyhow::Error::new(e)))?,
    );
    mesh.banner
        .push(format!("relay: {relay_url}  (the \"llm\" queue; {cdp})"));
    mesh.relay = Some(relay);
    let mut config = core_config(
        args.core_addr,
        control_url,
        data_url,
        token.clone(),
        home,
        &args.core,
    );
    config.broker_url = Some(broker_url);
    config.relay_url = Some(relay_url);
    config.serve = serve;
    config.max_body_bytes = max_body_bytes;
    let mut core = sheratan_core::Core::bind(config)
        .await
        .map_err(|e| bind_error("core", args.core_addr, "SHERATAN_CORE_ADDR", e))?;
    let core_url = local_url(
        core.local_addr()
            .map_err(|e| Failure::from(anyhow::Error::new(e)))?,
    );
    mesh.banner
        .push(format!("core: {core_url}  (/api/*, {auth})"));
    let dashboard = sheratan_dashboard::Dashboard::bind(sheratan_dashboard::DashboardConfig {
        listen: args.dashboard_addr,
        core_url: core_url.clone(),
        version: BUILD_ID.into(),
        serve,
    })
    .await
    .map_err(|e| {
        bind_error(
            "dashboard",
            args.dashboard_addr,
            "SHERATAN_DASHBOARD_ADDR",
            e,
        )
    })?;
    let dashboard_addr = dashboard
        .local_addr()
        .map_err(|e| Failure::from(anyhow::Error::new(e)))?;
    let dashboard_url = local_url(dashboard_addr);
    // The dashboard where it really listens, under both local names.
    core.allow_origin(dashboard_url.clone());
    core.allow_origin(format!("http://localhost:{}", dashboard_addr.port()));
    mesh.banner.push(format!(
        "dashboard: {dashboard_url}  (sign in with the token)"
    ));
    mesh.dashboard = Some(dashboard);
    mesh.broker = Some(broker);
    mesh.core = Some(core);
    Ok(mesh)
}
