//! `sheratan hub` settings: every one a flag and the same-named environment variable, with the
//! seed's names and defaults (docs/API.md, "Settings").

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use sheratan_hub::auth::{Secret, TokenConfig};
use sheratan_hub::{HubConfig, Planes};
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PlaneArg {
    Both,
    Control,
    Data,
}

#[derive(Debug, Clone, Args)]
pub struct HomeArgs {
    /// State directory: token, registry snapshot, bundles, logs, database.
    #[arg(long, env = "SHERATAN_HOME", default_value = "./.sheratan")]
    pub home: PathBuf,
}

/// The HTTP edge of every server (hub planes, hosts, broker, relay, Core, dashboard): how
/// long a connection may take to send a request, how many one source may hold open, how
/// large a body may be.
#[derive(Debug, Clone, Args)]
pub struct EdgeArgs {
    /// A new connection's first request head must arrive within this many milliseconds, or
    /// the connection is closed.
    #[arg(long, env = "SHERATAN_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// An idle keep-alive connection is closed when no new request head arrives within this
    /// many milliseconds of its last response.
    #[arg(long, env = "SHERATAN_KEEPALIVE_TIMEOUT_MS", default_value_t = 60_000)]
    pub keepalive_timeout_ms: u64,
    /// Open connections per listener from one source address (an IPv6 /64 counts as one);
    /// more are closed at once, so one address cannot starve the others.
    #[arg(long, env = "SHERATAN_MAX_CONN_PER_IP", default_value_t = sheratan_runtime::serve::DEFAULT_MAX_PER_SOURCE)]
    pub max_conn_per_ip: usize,
    /// Request bodies above this many bytes get 413 PAYLOAD_TOO_LARGE.
    #[arg(long, env = "SHERATAN_MAX_BODY_BYTES", default_value_t = sheratan_runtime::edge::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    #[command(flatten)]
    pub tls: crate::tls_setup::TlsArgs,
}

impl EdgeArgs {
    /// The listeners' limits, checked.
    pub fn limits(&self) -> Result<sheratan_runtime::serve::ServeLimits, String> {
        let limits = sheratan_runtime::serve::ServeLimits {
            max_per_source: self.max_conn_per_ip,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            keepalive_timeout: Duration::from_millis(self.keepalive_timeout_ms),
            ..Default::default()
        };
        limits.validate()?;
        if self.max_body_bytes < 1024 {
            return Err("SHERATAN_MAX_BODY_BYTES must be at least 1024".into());
        }
        Ok(limits)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MeshTokenScopeArg {
    Full,
    Bootstrap,
}

#[derive(Debug, Clone, Args)]
pub struct HubArgs {
    #[command(flatten)]
    pub home: HomeArgs,

    /// Which planes this process serves; several hubs share state through PostgreSQL.
    #[arg(long, env = "SHERATAN_HUB_PLANE", value_enum, default_value = "both")]
    pub plane: PlaneArg,

    /// Control plane listen address (heartbeats, registry, bundles; public /health).
    #[arg(long, env = "SHERATAN_CONTROL_ADDR", default_value = "0.0.0.0:8787")]
    pub control_addr: SocketAddr,

    /// Data plane listen address (jobs, leases, results, admin). Keep it on loopback unless
    /// executors on other machines need it.
    #[arg(long, env = "SHERATAN_DATA_ADDR", default_value = "127.0.0.1:8788")]
    pub data_addr: SocketAddr,

    /// The mesh secret. Unset: read $SHERATAN_HOME/hub_token, generating it at first start.
    /// Prefer the environment or that file to the flag: a flag is visible to every user of
    /// this machine in `ps` and /proc/PID/cmdline.
    #[arg(long, env = "SHERATAN_HUB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// 0 disables authentication (for throwaway experiments only).
    #[arg(long, env = "SHERATAN_HUB_TOKEN_REQUIRED", default_value = "1", value_parser = parse_flag, action = clap::ArgAction::Set)]
    pub token_required: bool,

    /// 1 runs with a weak token (shorter than 16 characters, or `shared-secret`) and allows
    /// rotating to one, logging WEAK_TOKEN; by default the hub refuses to start with one.
    #[arg(long, env = "SHERATAN_ALLOW_WEAK_TOKEN", default_value = "0", value_parser = parse_flag, action = clap::ArgAction::Set)]
    pub allow_weak_token: bool,

    /// The token to rotate to; both are accepted until SHERATAN_HUB_TOKEN_ROTATION_UNTIL.
    #[arg(long, env = "SHERATAN_HUB_TOKEN_NEXT", hide_env_values = true)]
    pub token_next: Option<String>,

    /// When the rotation finalizes: RFC 3339 (2026-12-01T00:00:00Z) or Unix seconds.
    #[arg(long, env = "SHERATAN_HUB_TOKEN_ROTATION_UNTIL", value_parser = parse_time)]
    pub token_rotation_until: Option<OffsetDateTime>,

    /// Seconds without a heartbeat before a node is STALE.
    #[arg(long, env = "SHERATAN_NODE_TTL_SEC", default_value_t = 120.0)]
    pub node_ttl_sec: f64,

    /// Seconds without a heartbeat before a node is DEAD.
    #[arg(long, env = "SHERATAN_NODE_DEAD_SEC", default_value_t = 600.0)]
    pub node_dead_sec: f64,

    /// Capability-hash changes within the window that raise SPOOF_SUSPECT.
    #[arg(
        long,
        env = "SHERATAN_ATTESTATION_SPOOF_THRESHOLD",
        default_value_t = 3
    )]
    pub attestation_spoof_threshold: u32,

    /// The SPOOF_SUSPECT window in seconds.
    #[arg(
        long,
        env = "SHERATAN_ATTESTATION_SPOOF_WINDOW_SEC",
        default_value_t = 600.0
    )]
    pub attestation_spoof_window_sec: f64,

    #[command(flatten)]
    pub edge: EdgeArgs,

    /// The registry snapshot is written at most this often (milliseconds).
    #[arg(long, env = "SHERATAN_REGISTRY_FLUSH_MS", default_value_t = 1000)]
    pub registry_flush_ms: u64,

    /// The heartbeat interval the hub asks nodes to keep (seconds).
    #[arg(long, env = "SHERATAN_HEARTBEAT_INTERVAL_SEC", default_value_t = 12)]
    pub heartbeat_interval_sec: u32,

    /// The audit log rotates when it would grow past this many bytes.
    #[arg(long, env = "SHERATAN_AUDIT_MAX_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub audit_max_bytes: u64,

    /// Identical audit events within this many seconds fold into one line with a count.
    #[arg(long, env = "SHERATAN_AUDIT_FOLD_WINDOW_SEC", default_value_t = 10.0)]
    pub audit_fold_window_sec: f64,

    /// Refused requests (bad token, malformed or oversized body, wrong method or plane)
    /// answered per second, with a burst of as many; more wait for their answer (at most 1 s),
    /// which slows a flood down. 0 turns the limit off.
    #[arg(long, env = "SHERATAN_REFUSALS_PER_SEC", default_value_t = 5000,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(sheratan_hub::MAX_REFUSALS_PER_SEC)))]
    pub refusals_per_sec: u32,

    /// Do not serve the worker stream (GET /v1/stream answers 404): workers, brokers and relays
    /// use the request routes. For a proxy in front of the hub that cannot carry WebSockets.
    #[arg(long, env = "SHERATAN_NO_WORKER_STREAM",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub no_worker_stream: bool,

    /// full: the mesh token does everything; bootstrap: it only creates, lists and revokes
    /// credentials (once every node and user has one).
    #[arg(
        long,
        env = "SHERATAN_MESH_TOKEN_SCOPE",
        value_enum,
        default_value = "full"
    )]
    pub mesh_token_scope: MeshTokenScopeArg,

    /// Require client certificates issued by this CA (PEM) on both planes' TLS connections
    /// (mutual TLS): a node's certificate name must be the node id it heartbeats and leases as.
    #[arg(long, env = "SHERATAN_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,

    /// Job store: sqlite://PATH (default: sqlite://$SHERATAN_HOME/sheratan.db), or
    /// postgres://USER:PASSWORD@HOST:PORT/DB[?schema=NAME] for hubs that share one database.
    #[arg(long, env = "SHERATAN_STORE", hide_env_values = true)]
    pub store: Option<String>,

    /// normal: commits survive a hub crash; full: they survive power loss too (fsync).
    #[arg(long, env = "SHERATAN_SYNC", value_enum, default_value = "normal")]
    pub sync: SyncArg,

    /// PostgreSQL store only: writer connections, each committing groups of operations.
    #[arg(long, env = "SHERATAN_PG_WRITERS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub pg_writers: u16,

    /// Queued (not yet leased) jobs, all queues, before submits answer 429.
    #[arg(long, env = "SHERATAN_MAX_QUEUE_DEPTH", default_value_t = 1000)]
    pub max_queue_depth: u64,

    /// Leased jobs before leases hand out nothing and answer defer_ms.
    #[arg(long, env = "SHERATAN_MAX_INFLIGHT", default_value_t = 100)]
    pub max_inflight: u64,

    /// Seconds a lease lives unless extended (the default timeout_s of a job).
    #[arg(long, env = "SHERATAN_LEASE_TIMEOUT", default_value_t = 300)]
    pub lease_timeout: u32,

    /// Attempts of a job that does not say (max_attempts).
    #[arg(long, env = "SHERATAN_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,

    /// Base of the retry backoff in milliseconds: base × 2^(attempt−1) ± 20 %, at most 10 min.
    #[arg(long, env = "SHERATAN_RETRY_BASE_MS", default_value_t = 1000)]
    pub retry_base_ms: u64,

    /// Idempotency keys are forgotten this many seconds after their job was submitted.
    #[arg(long, env = "SHERATAN_IDEMPOTENCY_TTL_SEC", default_value_t = 86_400)]
    pub idempotency_ttl_sec: u64,

    /// Finished jobs (completed, failed, cancelled) and their results are deleted this long
    /// after they finished: 30s, 12h, 7d; `0` keeps everything. A queue's `retention` and
    /// `failed_retention` settings override it.
    #[arg(long, env = "SHERATAN_RETENTION", default_value = "7d")]
    pub retention: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SyncArg {
    Normal,
    Full,
}

/// Where jobs are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    /// `postgres://…`, with an optional `schema=NAME` query parameter taken out of it.
    Postgres {
        url: String,
        schema: Option<String>,
    },
}

/// A store's settings, ready to open.
pub enum StoreChoice {
    Sqlite(sheratan_store_sqlite::SqliteConfig),
    Postgres(sheratan_store_postgres::PgConfig),
}

/// Splits `schema=NAME` out of a PostgreSQL URL's query (the driver would reject it).
fn split_schema(url: &str) -> Result<(String, Option<String>), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let mut schema = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("schema", name)) => {
                // 54, not PostgreSQL's 63: the hubs' NOTIFY channel is `sheratan_<schema>`,
                // and a longer channel name would be cut on LISTEN but refused on NOTIFY.
                if name.is_empty()
                    || name.len() > 54
                    || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(
                        "SHERATAN_STORE: schema= must be 1 to 54 letters, digits or _".into(),
                    );
                }
                schema = Some(name.to_owned());
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, schema))
}

impl StoreUrl {
    pub fn parse(url: Option<&str>, home: &std::path::Path) -> Result<StoreUrl, String> {
        match url {
            None => Ok(StoreUrl::Sqlite(home.join("sheratan.db"))),
            Some(url) => {
                if let Some(path) = url.strip_prefix("sqlite://") {
                    if path.is_empty() {
                        return Err("SHERATAN_STORE=sqlite:// needs a path, e.g. sqlite:///var/lib/sheratan/sheratan.db".into());
                    }
                    Ok(StoreUrl::Sqlite(PathBuf::from(path)))
                } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                    let (url, schema) = split_schema(url)?;
                    Ok(StoreUrl::Postgres { url, schema })
                } else {
                    Err("SHERATAN_STORE must be sqlite://PATH, postgres://USER@HOST:PORT/DB (or unset for $SHERATAN_HOME/sheratan.db)".into())
                }
            }
        }
    }

    /// For banners and logs: never prints credentials.
    pub fn display(&self) -> String {
        match self {
            StoreUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            StoreUrl::Postgres { url, schema } => {
                // postgres://user:secret@host → postgres://user:***@host
                let shown = match (url.find("://"), url.rfind('@')) {
                    (Some(s), Some(at)) if url[s + 3..at].contains(':') => {
                        let colon = s + 3 + url[s + 3..at].find(':').expect("checked");
                        format!("{}:***{}", &url[..colon], &url[at..])
                    }
                    _ => url.clone(),
                };
                match schema {
                    Some(schema) => format!("{shown} (schema {schema})"),
                    None => shown,
                }
            }
        }
    }
}

pub fn parse_flag(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(format!("expected 1 or 0, got {other:?}")),
    }
}

pub fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<i64>() {
        return OffsetDateTime::from_unix_timestamp(secs).map_err(|e| e.to_string());
    }
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("expected RFC 3339 (2026-12-01T00:00:00Z) or Unix seconds: {e}"))
}

fn secs(name: &str, v: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| format!("{name} must be a non-negative number of seconds"))
}

impl HubArgs {
    /// The job store's settings.
    pub fn store_config(
        &self,
        clock: std::sync::Arc<dyn sheratan_store::Clock>,
    ) -> Result<(StoreUrl, StoreChoice), String> {
        let url = StoreUrl::parse(self.store.as_deref(), &self.home.home)?;
        let limits = sheratan_store::StoreLimits {
            max_queue_depth: self.max_queue_depth,
            max_inflight: self.max_inflight,
            retry_base: Duration::from_millis(self.retry_base_ms.max(1)),
        };
        let choice = match &url {
            StoreUrl::Sqlite(path) => {
                let mut config = sheratan_store_sqlite::SqliteConfig::new(path.clone(), clock);
                config.sync = match self.sync {
                    SyncArg::Normal => sheratan_store_sqlite::SyncMode::Normal,
                    SyncArg::Full => sheratan_store_sqlite::SyncMode::Full,
                };
                config.limits = limits;
                StoreChoice::Sqlite(config)
            }
            StoreUrl::Postgres { url, schema } => {
                let mut config = sheratan_store_postgres::PgConfig::new(url, clock);
                config.schema = schema.clone();
                config.limits = limits;
                config.writers = usize::from(self.pg_writers);
                StoreChoice::Postgres(config)
            }
        };
        Ok((url, choice))
    }

    /// Plain, validated configuration; binds nothing.
    /// Each plane's TLS ([control, data]); both planes share one certificate.
    fn plane_tls(
        &self,
        planes: &Planes,
    ) -> Result<[Option<sheratan_runtime::tls::TlsServer>; 2], String> {
        use crate::tls_setup::Issuer;
        let tls = &self.edge.tls;
        let home = &self.home.home;
        let client_ca = self.tls_client_ca.as_deref();
        let plane = |serves: bool, what: &str, addr: SocketAddr| match serves {
            true => tls.listener_with(what, addr, home, Issuer::MakeCa, client_ca),
            false => Ok(None),
        };
        let control = plane(
            planes.control(),
            "the hub's control plane",
            self.control_addr,
        )?;
        let data = plane(planes.data(), "the hub's data plane", self.data_addr)?;
        Ok([control, data])
    }

    pub fn to_config(&self) -> Result<HubConfig, String> {
        let tokens = TokenConfig {
            token: self.token.clone().map(Secret::new),
            required: self.token_required,
            next: self.token_next.clone().map(Secret::new),
            rotation_until: self.token_rotation_until,
            allow_weak: self.allow_weak_token,
        };
        let mut config = HubConfig::new(self.home.home.clone(), tokens);
        config.planes = match self.plane {
            PlaneArg::Both => Planes::Both,
            PlaneArg::Control => Planes::Control,
            PlaneArg::Data => Planes::Data,
        };
        config.control_addr = self.control_addr;
        config.data_addr = self.data_addr;
        config.node_ttl = secs("SHERATAN_NODE_TTL_SEC", self.node_ttl_sec)?;
        config.node_dead = secs("SHERATAN_NODE_DEAD_SEC", self.node_dead_sec)?;
        config.spoof_threshold = self.attestation_spoof_threshold;
        config.spoof_window = secs(
            "SHERATAN_ATTESTATION_SPOOF_WINDOW_SEC",
            self.attestation_spoof_window_sec,
        )?;
        config.max_body_bytes = self.edge.max_body_bytes;
        config.serve = self.edge.limits()?;
        config.mesh_token_scope = match self.mesh_token_scope {
            MeshTokenScopeArg::Full => sheratan_hub::MeshTokenScope::Full,
            MeshTokenScopeArg::Bootstrap => sheratan_hub::MeshTokenScope::Bootstrap,
        };
        config.registry_flush_interval = Duration::from_millis(self.registry_flush_ms.max(10));
        config.heartbeat_interval_s = self.heartbeat_interval_sec.max(1);
        config.audit_max_bytes = self.audit_max_bytes;
        config.audit_fold_window =
            secs("SHERATAN_AUDIT_FOLD_WINDOW_SEC", self.audit_fold_window_sec)?;
        config.refusals_per_sec = self.refusals_per_sec;
        config.worker_stream = !self.no_worker_stream;
        if !(1..=sheratan_store::jobs::MAX_TIMEOUT_S).contains(&self.lease_timeout) {
            return Err(format!(
                "SHERATAN_LEASE_TIMEOUT must be between 1 and {} seconds",
                sheratan_store::jobs::MAX_TIMEOUT_S
            ));
        }
        if !(1..=sheratan_store::jobs::MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(format!(
                "SHERATAN_MAX_ATTEMPTS must be between 1 and {}",
                sheratan_store::jobs::MAX_ATTEMPTS
            ));
        }
        if self.max_queue_depth == 0 || self.max_inflight == 0 {
            return Err(
                "SHERATAN_MAX_QUEUE_DEPTH and SHERATAN_MAX_INFLIGHT must be at least 1".into(),
            );
        }
        config.job_defaults = sheratan_store::JobDefaults {
            max_attempts: self.max_attempts,
            timeout_s: self.lease_timeout,
            retry: Default::default(),
        };
        config.idempotency_ttl = Duration::from_secs(self.idempotency_ttl_sec.max(60));
        let retention =
            sheratan_proto::queues::parse_retention("SHERATAN_RETENTION", &self.retention)?;
        config.retention = (retention > 0).then(|| Duration::from_secs(retention));
        config.validate()?;
        // Last: it may make the mesh CA and certificates, which a usage error must not leave behind.
        config.tls = self.plane_tls(&config.planes)?;
        Ok(config)
    }
}
