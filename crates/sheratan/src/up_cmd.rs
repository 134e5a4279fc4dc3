//! What `sheratan up` runs beside the hub: workers, two hosts, the broker, the relay, Core and
//! the dashboard, each bound (so the banner shows real addresses, and a taken port fails the
//! start naming the variable to change) and talking to the hub over HTTP like its stand-alone
//! subcommand.

use std::net::SocketAddr;
use std::path::Path;

use clap::Args;
use sheratan_client::MeshToken;
use sheratan_hub::Hub;
use sheratan_proto::credentials::CredentialRole;
use sheratan_runtime::serve::{ServeLimits, local_url_tls};

use crate::hub_args::HubArgs;
use crate::mesh_cmd::{
    BrokerOptions, CoreOptions, HostOptions, auth_banner, bind_error, broker_config, core_config,
    host_config,
};
use crate::worker_cmd::{WorkerOptions, worker_config};
use crate::{BUILD_ID, Failure, usage};

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
    /// Run the members on credentials of their own (workers, hosts, broker and relay on node
    /// credentials, core on an admin one; made on the first start, kept in
    /// $SHERATAN_HOME/credentials/); `off` runs them on the mesh token, as before credentials
    /// existed (logged as a warning).
    #[arg(
        long,
        env = "SHERATAN_UP_CREDENTIALS",
        value_enum,
        default_value = "on"
    )]
    pub member_credentials: OnOff,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

impl UpArgs {
    /// The members `up` runs on credentials of their own, named after their node ids: a node
    /// credential each, limited to the queues the member serves (hosts and the broker the
    /// auctioned one, the relay its own), an admin one for Core (it acts for its callers, with
    /// their tokens).
    pub fn credentialed_members(&self) -> Vec<crate::up_credentials::Member> {
        use crate::up_credentials::Member;
        let node = |name: String, queues: &[String]| Member {
            name,
            role: CredentialRole::Node,
            queues: queues.to_vec(),
        };
        let auction = [sheratan_core::AUCTION_QUEUE.to_owned()];
        let mut members: Vec<Member> = (1..=self.workers)
            .map(|i| node(format!("worker-{i}"), &self.worker.queues))
            .collect();
        for name in ["host-a", "host-b", "broker"] {
            members.push(node(name.into(), &auction));
        }
        members.push(node("relay".into(), &[sheratan_core::LLM_QUEUE.to_owned()]));
        members.push(Member {
            name: "core".into(),
            role: CredentialRole::Admin,
            queues: Vec::new(),
        });
        members
    }

    /// The audit watcher `up` runs on the hub's logs.
    pub fn watch_config(&self) -> sheratan_ops::watch::WatchConfig {
        let mut watch =
            sheratan_ops::watch::WatchConfig::new(self.hub.home.home.join("logs"), &self.alerts);
        watch.webhook = self.alert_webhook.clone();
        watch
    }
}

/// Everything bound beside the hub, and its banner lines.
#[derive(Default)]
pub struct Members {
    pub workers: Vec<sheratan_worker::WorkerConfig>,
    pub hosts: Vec<sheratan_auction::host::Host>,
    pub broker: Option<sheratan_auction::broker::Broker>,
    pub relay: Option<sheratan_relay::Relay>,
    pub core: Option<sheratan_core::Core>,
    pub dashboard: Option<sheratan_dashboard::Dashboard>,
    pub banner: Vec<String>,
}

/// What every member is given: where the hub is, the shared token, the edge's limits.
struct Context<'a> {
    control_url: String,
    data_url: String,
    token: &'a MeshToken,
    /// The secrets of the members that run on credentials of their own, by node id.
    own: &'a std::collections::HashMap<String, String>,
    home: &'a Path,
    serve: ServeLimits,
    max_body_bytes: usize,
    tls: &'a crate::tls_setup::TlsArgs,
}

impl Context<'_> {
    /// The token node `node_id` runs on: its own credential, else the shared mesh token.
    fn token_for(&self, node_id: &str) -> MeshToken {
        match self.own.get(node_id) {
            Some(secret) => MeshToken::new(Some(secret.clone())),
            None => self.token.clone(),
        }
    }

    /// The TLS of the member `what` listening on `addr` (`up` owns the mesh CA).
    fn tls(
        &self,
        what: &str,
        addr: SocketAddr,
    ) -> Result<Option<sheratan_runtime::tls::TlsServer>, Failure> {
        self.tls
            .listener(what, addr, self.home, crate::tls_setup::Issuer::MakeCa)
            .map_err(usage)
    }
}

/// Binds everything `up` runs beside `hub`.
pub async fn bind(
    args: &UpArgs,
    hub: &Hub,
    token: &MeshToken,
    own: &std::collections::HashMap<String, String>,
    home: &Path,
) -> Result<Members, Failure> {
    let (Some(control_url), Some(data_url)) = (hub.control_url(), hub.data_url()) else {
        return Ok(Members::default());
    };
    let cx = Context {
        control_url,
        data_url,
        token,
        own,
        home,
        serve: crate::mesh_cmd::limits(&args.hub.edge)?,
        max_body_bytes: args.hub.edge.max_body_bytes,
        tls: &args.hub.edge.tls,
    };
    let mut members = Members {
        workers: workers(args, &cx)?,
        ..Default::default()
    };
    bind_hosts(args, &cx, &mut members).await?;
    let broker_url = bind_broker(args, &cx, &mut members).await?;
    let relay_url = bind_relay(args, &cx, &mut members).await?;
    bind_core_and_dashboard(args, &cx, &mut members, broker_url, relay_url).await?;
    if !own.is_empty() {
        members.banner.push(format!(
            "least privilege: workers, hosts, broker and relay run on node credentials of their own, core on an admin one (secrets in {}; `sheratan token list`)",
            crate::up_credentials::dir(home).display()
        ));
    }
    Ok(members)
}

/// Workers beside the hub talk to it over HTTP, like any other worker.
fn workers(args: &UpArgs, cx: &Context<'_>) -> Result<Vec<sheratan_worker::WorkerConfig>, Failure> {
    (1..=args.workers)
        .map(|i| {
            worker_config(
                &cx.control_url,
                &cx.data_url,
                cx.token_for(&format!("worker-{i}")),
                &format!("worker-{i}"),
                &args.worker,
                BUILD_ID,
            )
            .map_err(usage)
        })
        .collect()
}

async fn bind_hosts(args: &UpArgs, cx: &Context<'_>, m: &mut Members) -> Result<(), Failure> {
    let handlers = match &args.worker.handlers {
        Some(path) => sheratan_exec::Handlers::from_file(path).map_err(|e| usage(e.to_string()))?,
        None => sheratan_exec::Handlers::builtin(),
    };
    for (node_id, addr, variable) in [
        ("host-a", args.host_a_addr, "SHERATAN_HOST_A_ADDR"),
        ("host-b", args.host_b_addr, "SHERATAN_HOST_B_ADDR"),
    ] {
        let mut config = host_config(
            node_id,
            addr,
            &cx.control_url,
            cx.token_for(node_id),
            &args.host,
            handlers.clone(),
        )?;
        config.serve = cx.serve;
        config.max_body_bytes = cx.max_body_bytes;
        config.tls = cx.tls(node_id, addr)?;
        let host = sheratan_auction::host::Host::bind(config)
            .await
            .map_err(|e| bind_error(node_id, addr, variable, e))?;
        m.banner.push(format!(
            "host: {node_id} {}  (capacity {}, price {})",
            host.url(),
            args.host.capacity,
            args.host.base_price
        ));
        m.hosts.push(host);
    }
    Ok(())
}

/// Binds the broker; its URL, for Core.
async fn bind_broker(args: &UpArgs, cx: &Context<'_>, m: &mut Members) -> Result<String, Failure> {
    let store_url =
        crate::hub_args::StoreUrl::parse(args.hub.store.as_deref(), cx.home).map_err(usage)?;
    let auctions = crate::mesh_cmd::auction_store(Some(&store_url), &args.broker, cx.home).await?;
    let mut config = broker_config(
        "broker",
        args.broker_addr,
        &cx.control_url,
        &cx.data_url,
        cx.token_for("broker"),
        &args.broker,
        auctions,
    )?;
    config.serve = cx.serve;
    config.tls = cx.tls("the broker", args.broker_addr)?;
    let tls = config.tls.is_some();
    let broker = sheratan_auction::broker::Broker::bind(config)
        .await
        .map_err(|e| bind_error("broker", args.broker_addr, "SHERATAN_BROKER_ADDR", e))?;
    let url = local_url_tls(broker.local_addr().map_err(io_failure)?, tls);
    m.banner.push(format!(
        "broker: {url}  (auctions the \"auction\" queue among the hosts)"
    ));
    m.broker = Some(broker);
    Ok(url)
}

/// Binds the relay (launching Chromium when one is on the PATH); its URL, for Core.
async fn bind_relay(args: &UpArgs, cx: &Context<'_>, m: &mut Members) -> Result<String, Failure> {
    let mut config = crate::relay_cmd::relay_config(
        crate::relay_cmd::RelaySetup {
            node_id: "relay",
            listen: args.relay_addr,
            control_url: &cx.control_url,
            data_url: &cx.data_url,
            home: cx.home,
            auto_launch: true,
        },
        cx.token_for("relay"),
        &args.relay,
    )?;
    config.serve = cx.serve;
    config.max_body_bytes = cx.max_body_bytes;
    config.tls = cx.tls("the relay", args.relay_addr)?;
    let tls = config.tls.is_some();
    let cdp = crate::relay_cmd::describe_cdp(&config);
    let relay = sheratan_relay::Relay::bind(config)
        .await
        .map_err(|e| bind_error("relay", args.relay_addr, "SHERATAN_RELAY_ADDR", e))?;
    let url = local_url_tls(relay.local_addr().map_err(io_failure)?, tls);
    m.banner
        .push(format!("relay: {url}  (the \"llm\" queue; {cdp})"));
    m.relay = Some(relay);
    Ok(url)
}

/// Binds Core and the dashboard; Core allows the dashboard's real origin (its port may have
/// been moved).
async fn bind_core_and_dashboard(
    args: &UpArgs,
    cx: &Context<'_>,
    m: &mut Members,
    broker_url: String,
    relay_url: String,
) -> Result<(), Failure> {
    let mut config = core_config(
        args.core_addr,
        &cx.control_url,
        &cx.data_url,
        cx.token_for("core"),
        cx.home,
        &args.core,
    );
    config.broker_url = Some(broker_url);
    config.relay_url = Some(relay_url);
    config.serve = cx.serve;
    config.max_body_bytes = cx.max_body_bytes;
    config.tls = cx.tls("core", args.core_addr)?;
    let core_tls = config.tls.is_some();
    let mut core = sheratan_core::Core::bind(config)
        .await
        .map_err(|e| bind_error("core", args.core_addr, "SHERATAN_CORE_ADDR", e))?;
    let core_url = local_url_tls(core.local_addr().map_err(io_failure)?, core_tls);
    let auth = auth_banner(&cx.token.send());
    m.banner.push(format!("core: {core_url}  (/api/*, {auth})"));
    let dashboard_tls = cx.tls("the dashboard", args.dashboard_addr)?;
    let dashboard = sheratan_dashboard::Dashboard::bind(sheratan_dashboard::DashboardConfig {
        listen: args.dashboard_addr,
        core_url,
        version: BUILD_ID.into(),
        serve: cx.serve,
        tls: dashboard_tls.clone(),
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
    let dashboard_addr = dashboard.local_addr().map_err(io_failure)?;
    let dashboard_url = local_url_tls(dashboard_addr, dashboard_tls.is_some());
    core.allow_origin(dashboard_url.clone());
    let scheme = if dashboard_tls.is_some() {
        "https"
    } else {
        "http"
    };
    core.allow_origin(format!("{scheme}://localhost:{}", dashboard_addr.port()));
    m.banner.push(format!(
        "dashboard: {dashboard_url}  (sign in with the token)"
    ));
    m.core = Some(core);
    m.dashboard = Some(dashboard);
    Ok(())
}

fn io_failure(e: std::io::Error) -> Failure {
    Failure::from(anyhow::Error::new(e))
}
