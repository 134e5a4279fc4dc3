//! `sheratan host`, `sheratan broker` and `sheratan core`, and the settings `up` shares with
//! them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use sheratan_auction::broker::{Broker, BrokerConfig};
use sheratan_auction::host::{Host, HostConfig};
use sheratan_core::{Core, CoreConfig};
use sheratan_exec::Handlers;

use crate::client_args::{ClientArgs, MemberAuthArgs, hostname};
use crate::hub_args::EdgeArgs;
use crate::{BUILD_ID, Failure, VERSION, usage};

/// How a host prices and sizes itself.
#[derive(Debug, Clone, Args)]
pub struct HostOptions {
    /// Jobs a host runs at once; at capacity it declines bids.
    #[arg(long, env = "SHERATAN_HOST_CAPACITY", default_value_t = 4)]
    pub capacity: u32,
    /// A host's price when idle.
    #[arg(long, env = "SHERATAN_HOST_PRICE", default_value_t = 1.0)]
    pub base_price: f64,
    /// How steeply the price rises with load: price = base × (1 + factor × inflight/capacity).
    #[arg(long, env = "SHERATAN_HOST_LOAD_FACTOR", default_value_t = 1.0)]
    pub load_factor: f64,
}

impl HostOptions {
    pub fn check(&self) -> Result<(), String> {
        if self.capacity == 0 || self.capacity > 10_000 {
            return Err("--capacity must be between 1 and 10000".into());
        }
        if !(self.base_price.is_finite() && self.base_price >= 0.0) {
            return Err("--base-price must be a number ≥ 0".into());
        }
        if !(self.load_factor.is_finite() && self.load_factor >= 0.0) {
            return Err("--load-factor must be a number ≥ 0".into());
        }
        Ok(())
    }
}

/// How the broker auctions.
#[derive(Debug, Clone, Args)]
pub struct BrokerOptions {
    /// Auctions (and forwarded jobs) at once.
    #[arg(long, env = "SHERATAN_BROKER_CONCURRENCY", default_value_t = 16)]
    pub broker_concurrency: u32,
    /// Milliseconds hosts have to answer a bid request.
    #[arg(long, env = "SHERATAN_BID_DEADLINE_MS", default_value_t = 300)]
    pub bid_deadline_ms: u64,
    /// Auction rounds per job attempt (a failed winner is excluded and the job re-auctioned).
    #[arg(long, env = "SHERATAN_AUCTION_ROUNDS", default_value_t = 3)]
    pub auction_rounds: u32,
    /// SQLite file of the auction records (default: $SHERATAN_HOME/auctions.db).
    #[arg(long, env = "SHERATAN_AUCTION_DB")]
    pub auction_db: Option<PathBuf>,
}

/// Where Core finds the broker and relay, and who may call it from a browser.
#[derive(Debug, Clone, Args)]
pub struct CoreOptions {
    /// Browser origins allowed to call Core (the dashboard's), comma-separated.
    #[arg(
        long,
        env = "SHERATAN_DASHBOARD_ORIGIN",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:3001,http://localhost:3001"
    )]
    pub dashboard_origin: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct HostArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub auth: MemberAuthArgs,
    #[command(flatten)]
    pub edge: EdgeArgs,
    /// This host's node id (default: host-<hostname>).
    #[arg(long, env = "SHERATAN_NODE_ID")]
    pub node_id: Option<String>,
    /// Listen address. To take jobs from a broker on another machine, listen on a reachable
    /// address and set --advertise.
    #[arg(long, env = "SHERATAN_HOST_ADDR", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// The URL the broker reaches this host at (default: from the listen address).
    #[arg(long, env = "SHERATAN_HOST_URL")]
    pub advertise: Option<String>,
    #[command(flatten)]
    pub options: HostOptions,
    /// TOML file declaring `exec` handlers ([handlers.NAME] command = [...]) and the built-in
    /// `http` handler's settings ([http] enabled = true, allow_hosts = ["10.8.0.0/16"],
    /// methods, max_response_bytes, max_redirects); `http` is off without it.
    #[arg(long, env = "SHERATAN_HANDLERS")]
    pub handlers: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub auth: MemberAuthArgs,
    #[command(flatten)]
    pub edge: EdgeArgs,
    /// The broker's node id (default: broker-<hostname>).
    #[arg(long, env = "SHERATAN_NODE_ID")]
    pub node_id: Option<String>,
    #[arg(long, env = "SHERATAN_BROKER_ADDR", default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// The hubs' store, when it is PostgreSQL: auction records then live there too.
    #[arg(long, env = "SHERATAN_STORE", hide_env_values = true)]
    pub store: Option<String>,
    #[command(flatten)]
    pub options: BrokerOptions,
}

#[derive(Debug, Clone, Args)]
pub struct CoreArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub auth: MemberAuthArgs,
    #[command(flatten)]
    pub edge: EdgeArgs,
    #[arg(long, env = "SHERATAN_CORE_ADDR", default_value = "127.0.0.1:8001")]
    pub listen: SocketAddr,
    /// The broker, for /api/auctions and the overview.
    #[arg(
        long,
        env = "SHERATAN_BROKER_URL",
        default_value = "http://127.0.0.1:9000"
    )]
    pub broker_url: String,
    /// The relay, for the overview.
    #[arg(
        long,
        env = "SHERATAN_RELAY_URL",
        default_value = "http://127.0.0.1:3000"
    )]
    pub relay_url: String,
    #[command(flatten)]
    pub options: CoreOptions,
}

fn load_handlers(path: Option<&Path>) -> Result<Handlers, Failure> {
    match path {
        Some(path) => Handlers::from_file(path).map_err(|e| usage(e.to_string())),
        None => Ok(Handlers::builtin()),
    }
}

fn default_id(prefix: &str) -> String {
    format!("{prefix}-{}", hostname())
        .chars()
        .take(64)
        .collect()
}

/// The last step of every member's start-up: the ready line, then `run` until SIGINT or
/// SIGTERM cancels the token it gets.
pub async fn until_signal<F, Fut, E>(stops: &str, run: F) -> Result<(), Failure>
where
    F: FnOnce(tokio_util::sync::CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let shutdown = sheratan_runtime::shutdown_on_signals();
    println!("ready: Ctrl-C (or SIGTERM) stops {stops}");
    run(shutdown)
        .await
        .map_err(|e| Failure::from(anyhow::Error::new(e)))
}

/// A bind failure that names the setting to change.
pub fn bind_error(what: &str, addr: SocketAddr, variable: &str, err: std::io::Error) -> Failure {
    Failure::from(anyhow::anyhow!(
        "{what}: cannot listen on {addr}: {err} (set {variable} to another address)"
    ))
}

pub fn host_config(
    node_id: &str,
    listen: SocketAddr,
    control_url: &str,
    token: impl Into<sheratan_client::MeshToken>,
    options: &HostOptions,
    handlers: Handlers,
) -> Result<HostConfig, Failure> {
    sheratan_proto::ids::validate_node_id(node_id).map_err(|e| usage(format!("--node-id: {e}")))?;
    options.check().map_err(usage)?;
    let mut config = HostConfig::new(node_id, listen, control_url, token);
    config.capacity = options.capacity;
    config.base_price = options.base_price;
    config.load_factor = options.load_factor;
    config.handlers = handlers;
    config.build_id = BUILD_ID.into();
    Ok(config)
}

/// Where the broker keeps auction records: the hubs' PostgreSQL database when there is one
/// (every hub's Core and broker see the same records), else `$SHERATAN_HOME/auctions.db`.
pub async fn auction_store(
    store: Option<&crate::hub_args::StoreUrl>,
    options: &BrokerOptions,
    home: &Path,
) -> Result<Arc<dyn sheratan_store::AuctionStore>, Failure> {
    if let Some(crate::hub_args::StoreUrl::Postgres { url, schema }) = store {
        let pg = sheratan_store_postgres::PgAuctionStore::open(url, schema.clone())
            .await
            .map_err(|e| {
                Failure::from(anyhow::anyhow!(
                    "opening the auction records on PostgreSQL: {e}"
                ))
            })?;
        return Ok(Arc::new(pg));
    }
    let db = options
        .auction_db
        .clone()
        .unwrap_or_else(|| home.join("auctions.db"));
    let sqlite = sheratan_store_sqlite::SqliteAuctionStore::open(
        &db,
        sheratan_store_sqlite::SyncMode::Normal,
    )
    .map_err(|e| {
        Failure::from(anyhow::anyhow!(
            "opening the auction records at {}: {e}",
            db.display()
        ))
    })?;
    Ok(Arc::new(sqlite))
}

pub fn broker_config(
    node_id: &str,
    listen: SocketAddr,
    control_url: &str,
    data_url: &str,
    token: impl Into<sheratan_client::MeshToken>,
    options: &BrokerOptions,
    store: Arc<dyn sheratan_store::AuctionStore>,
) -> Result<BrokerConfig, Failure> {
    sheratan_proto::ids::validate_node_id(node_id).map_err(|e| usage(format!("--node-id: {e}")))?;
    if options.broker_concurrency == 0 || options.broker_concurrency > 1000 {
        return Err(usage(
            "--broker-concurrency must be between 1 and 1000".into(),
        ));
    }
    if !(10..=60_000).contains(&options.bid_deadline_ms) {
        return Err(usage(
            "--bid-deadline-ms must be between 10 and 60000".into(),
        ));
    }
    if !(1..=10).contains(&options.auction_rounds) {
        return Err(usage("--auction-rounds must be between 1 and 10".into()));
    }
    let mut config = BrokerConfig::new(node_id, listen, control_url, data_url, token, store);
    config.concurrency = options.broker_concurrency;
    config.bid_deadline = Duration::from_millis(options.bid_deadline_ms);
    config.max_rounds = options.auction_rounds;
    config.build_id = BUILD_ID.into();
    config.tracer = sheratan_trace::Tracer::from_env("sheratan-broker").map_err(usage)?;
    Ok(config)
}

pub fn core_config(
    listen: SocketAddr,
    control_url: &str,
    data_url: &str,
    token: impl Into<sheratan_client::MeshToken>,
    home: &Path,
    options: &CoreOptions,
) -> CoreConfig {
    let mut config = CoreConfig::new(listen, control_url, data_url, token, home.to_owned());
    config.allowed_origins = options
        .dashboard_origin
        .iter()
        .map(|o| o.trim().trim_end_matches('/').to_owned())
        .filter(|o| !o.is_empty())
        .collect();
    config.build_id = BUILD_ID.into();
    config
}

/// The checked edge limits of a component's listener.
pub fn limits(edge: &EdgeArgs) -> Result<sheratan_runtime::serve::ServeLimits, Failure> {
    edge.limits().map_err(usage)
}

/// The TLS of a component's listener (`SHERATAN_TLS`): its configured certificate, or one
/// from the mesh CA when this home holds the CA's key (the hub's machine).
pub fn member_tls(
    edge: &EdgeArgs,
    what: &str,
    addr: SocketAddr,
    home: &Path,
) -> Result<Option<sheratan_runtime::tls::TlsServer>, Failure> {
    edge.tls
        .listener(what, addr, home, crate::tls_setup::Issuer::LocalCa)
        .map_err(usage)
}

/// How a component's banner names its authentication.
pub fn auth_banner(token: &Option<String>) -> &'static str {
    if token.is_some() {
        "token required"
    } else {
        "AUTHENTICATION DISABLED (SHERATAN_HUB_TOKEN_REQUIRED=0)"
    }
}

pub async fn run_host(args: HostArgs) -> Result<(), Failure> {
    let token = args.client.member_token(&args.auth, "host")?;
    let auth = auth_banner(&token);
    let node_id = args.node_id.clone().unwrap_or_else(|| default_id("host"));
    let handlers = load_handlers(args.handlers.as_deref())?;
    let mut config = host_config(
        &node_id,
        args.listen,
        &args.client.control_url,
        token,
        &args.options,
        handlers,
    )?;
    if let Some(url) = &args.advertise
        && sheratan_proto::redact::url(url) != *url
    {
        return Err(usage(
            "--advertise must not carry a user name or password (user:password@): the hub refuses such an address, and the broker authenticates with the mesh token".into(),
        ));
    }
    config.advertise = args.advertise.clone();
    config.serve = limits(&args.edge)?;
    config.max_body_bytes = args.edge.max_body_bytes;
    config.tls = member_tls(&args.edge, "the host", args.listen, &args.client.home)?;
    let host = Host::bind(config)
        .await
        .map_err(|e| bind_error("host", args.listen, "SHERATAN_HOST_ADDR", e))?;
    println!(
        "sheratan host {VERSION}: {node_id}, capacity {}, price {} (+{}× load)",
        args.options.capacity, args.options.base_price, args.options.load_factor
    );
    println!("  host: {} {}  ({auth})", node_id, host.url());
    println!("  hub: {} (control)", args.client.control_url);
    until_signal("the host after running jobs finish", |stop| host.run(stop)).await
}

pub async fn run_broker(args: BrokerArgs) -> Result<(), Failure> {
    let token = args.client.member_token(&args.auth, "broker")?;
    let auth = auth_banner(&token);
    let node_id = args.node_id.clone().unwrap_or_else(|| default_id("broker"));
    let store_url = args
        .store
        .as_deref()
        .map(|s| crate::hub_args::StoreUrl::parse(Some(s), &args.client.home))
        .transpose()
        .map_err(usage)?;
    let store = auction_store(store_url.as_ref(), &args.options, &args.client.home).await?;
    let mut config = broker_config(
        &node_id,
        args.listen,
        &args.client.control_url,
        &args.client.data_url,
        token,
        &args.options,
        store,
    )?;
    config.serve = limits(&args.edge)?;
    config.tls = member_tls(&args.edge, "the broker", args.listen, &args.client.home)?;
    let tls = config.tls.is_some();
    let broker = Broker::bind(config)
        .await
        .map_err(|e| bind_error("broker", args.listen, "SHERATAN_BROKER_ADDR", e))?;
    let addr = broker
        .local_addr()
        .map_err(|e| Failure::from(anyhow::Error::new(e)))?;
    println!(
        "sheratan broker {VERSION}: {node_id}, queue auction, {} at once, bids within {} ms, up to {} rounds",
        args.options.broker_concurrency, args.options.bid_deadline_ms, args.options.auction_rounds
    );
    println!(
        "  broker: {}  ({auth})",
        sheratan_runtime::serve::local_url_tls(addr, tls)
    );
    args.client.print_hub();
    until_signal("the broker after running auctions finish", |stop| {
        broker.run(stop)
    })
    .await
}

pub async fn run_core(args: CoreArgs) -> Result<(), Failure> {
    let token = args.client.member_token(&args.auth, "core")?;
    let auth = auth_banner(&token);
    let mut config = core_config(
        args.listen,
        &args.client.control_url,
        &args.client.data_url,
        token,
        &args.client.home,
        &args.options,
    );
    config.broker_url = Some(args.broker_url.clone());
    config.relay_url = Some(args.relay_url.clone());
    config.serve = limits(&args.edge)?;
    config.max_body_bytes = args.edge.max_body_bytes;
    config.tls = member_tls(&args.edge, "core", args.listen, &args.client.home)?;
    let tls = config.tls.is_some();
    let core = Core::bind(config)
        .await
        .map_err(|e| bind_error("core", args.listen, "SHERATAN_CORE_ADDR", e))?;
    let addr = core
        .local_addr()
        .map_err(|e| Failure::from(anyhow::Error::new(e)))?;
    println!("sheratan core {VERSION}");
    println!(
        "  core: {}  (/api/*, {auth})",
        sheratan_runtime::serve::local_url_tls(addr, tls)
    );
    args.client.print_hub();
    until_signal("core", |stop| core.run(stop)).await
}

#[derive(Debug, Clone, Args)]
pub struct DashboardArgs {
    #[arg(
        long,
        env = "SHERATAN_DASHBOARD_ADDR",
        default_value = "127.0.0.1:3001"
    )]
    pub listen: SocketAddr,
    /// The Core API as the operator's browser reaches it.
    #[arg(
        long,
        env = "SHERATAN_CORE_URL",
        default_value = "http://127.0.0.1:8001"
    )]
    pub core_url: String,
    #[command(flatten)]
    pub edge: EdgeArgs,
    #[command(flatten)]
    pub home: crate::hub_args::HomeArgs,
}

pub async fn run_dashboard(args: DashboardArgs) -> Result<(), Failure> {
    let tls = member_tls(&args.edge, "the dashboard", args.listen, &args.home.home)?;
    let https = tls.is_some();
    let dashboard = sheratan_dashboard::Dashboard::bind(sheratan_dashboard::DashboardConfig {
        listen: args.listen,
        core_url: args.core_url.clone(),
        version: BUILD_ID.into(),
        serve: limits(&args.edge)?,
        tls,
    })
    .await
    .map_err(|e| bind_error("dashboard", args.listen, "SHERATAN_DASHBOARD_ADDR", e))?;
    let addr = dashboard
        .local_addr()
        .map_err(|e| Failure::from(anyhow::Error::new(e)))?;
    let url = sheratan_runtime::serve::local_url_tls(addr, https);
    println!("sheratan dashboard {VERSION}");
    println!("  dashboard: {url}  (sign in with the mesh token)");
    println!(
        "  core: {}  (Core must allow this origin: SHERATAN_DASHBOARD_ORIGIN={url})",
        args.core_url
    );
    until_signal("the dashboard", |stop| dashboard.run(stop)).await
}
