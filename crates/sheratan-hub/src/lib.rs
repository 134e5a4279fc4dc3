//! The Hub: Control plane (8787: heartbeats, node registry, attestation, bundles, public
//! `/health`) and Data plane (8788) on separate listeners, with the token authority, the
//! security audit log, the registry sweeper and snapshot writer, and metrics.
//!
//! Start-up is two-phase: [`HubConfig`] is plain data; [`Hub::build`] opens the state
//! directory and binds the listeners (so tests can use port 0 and read the real addresses);
//! [`Hub::run`] serves until the shutdown token fires, then drains, writes the registry
//! snapshot and flushes the audit log.
//!
//! Architecture invariant: this crate never names a SQL driver; it reaches storage through
//! `sheratan-store`'s trait only.

pub(crate) mod audit;
pub mod auth;
pub(crate) mod bundles;
pub(crate) mod config;
pub mod credentials;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub(crate) mod http;
pub(crate) mod job_service;
pub(crate) mod metrics;
pub(crate) mod mirror;
pub(crate) mod pacing;
pub(crate) mod persist;
pub(crate) mod registry;
pub mod schedules;
pub(crate) mod snapshot;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use sheratan_store::registry::RegistryPolicy;
use sheratan_store::{Clock, Store, SystemClock};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{HubConfig, MeshTokenScope, Planes};
pub use pacing::MAX_RATE as MAX_REFUSALS_PER_SEC;

use crate::audit::{AuditLog, AuditWriter};
use crate::auth::{TokenError, Tokens};
use crate::bundles::Bundles;
use crate::registry::Registry;
use sheratan_runtime::serve;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("invalid configuration: {0}")]
    Config(String),
    // The OS error is part of the message and deliberately not a `#[source]`: printed as a
    // chain it would appear twice, after the advice instead of before it.
    #[error("cannot use the state directory {path}: {cause}")]
    Home {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "cannot listen on {addr} ({plane} plane): {cause}; is another hub running? set {var} to move it"
    )]
    Bind {
        addr: SocketAddr,
        plane: &'static str,
        var: &'static str,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("cannot open the bundle store: {0}")]
    Bundles(#[source] std::io::Error),
    #[error("a listener failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// The ports of both planes, for PORT_MISMATCH hints. When this process runs one plane only,
/// the other's port is the configured one.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub control: u16,
    pub data: u16,
}

/// Everything handlers and background tasks share.
pub struct HubState {
    pub config: HubConfig,
    pub clock: Arc<dyn Clock>,
    pub audit: AuditLog,
    pub tokens: Arc<Tokens>,
    pub registry: Arc<Registry>,
    pub bundles: Arc<Bundles>,
    pub ports: Ports,
    pub started_at: OffsetDateTime,
    /// What each listener refused or cut: [control, data].
    pub serve_stats: [Arc<serve::ServeStats>; 2],
    /// Each plane's TLS, [control, data] (from `config.tls`).
    pub tls: [Option<sheratan_runtime::tls::TlsServer>; 2],
    /// Durable job storage.
    pub store: Arc<dyn Store>,
    pub jobs: job_service::JobCounters,
    /// Cancelled when shutdown begins, so long polls answer at once instead of holding the
    /// drain up.
    pub stopping: CancellationToken,
    /// Slows refusals down under a flood (`SHERATAN_REFUSALS_PER_SEC`).
    pub refusals: pacing::RefusalPacer,
    /// Credentials with a role and a name (`/admin/tokens`).
    pub credentials: credentials::Credentials,
    /// Requests a credential's role did not allow, by role.
    pub role_refusals: credentials::RoleRefusals,
    /// The leases of jobs cancelled on this hub, for the nodes watching them
    /// (`POST /v1/leases/watch`): a cancel reaches the running handler at once.
    pub cancelled_leases: tokio::sync::broadcast::Sender<uuid::Uuid>,
    /// Queue settings, re-read every second: submits take their queue's defaults from it.
    pub queue_settings: job_service::SettingsCache,
    /// Schedules: their store (attached once open) and what the scheduler counted.
    pub schedules: schedules::Schedules,
    /// What retention deleted, and the newest id it knows was deleted (for 404s).
    pub retention: job_service::RetentionState,
    /// Running jobs' latest progress, written to the store coalesced.
    pub progress: job_service::ProgressBoard,
}

/// A hub whose listeners are bound; [`Hub::run`] serves them.
pub struct Hub {
    state: Arc<HubState>,
    control: Option<TcpListener>,
    data: Option<TcpListener>,
    audit_writer: AuditWriter,
    /// Hubs on one database: the shared state and this hub's id in it.
    shared: Option<(Arc<dyn sheratan_store::SharedState>, String)>,
}

impl Hub {
    /// Opens the state directory, loads tokens, registry and bundles, and binds the
    /// listeners of the configured planes.
    pub async fn build(config: HubConfig, store: Arc<dyn Store>) -> Result<Hub, HubError> {
        Self::build_with_clock(config, store, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(
        config: HubConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Hub, HubError> {
        config.validate().map_err(HubError::Config)?;
        let tls = config.tls.clone();
        let home_err = |cause| HubError::Home {
            path: config.home.clone(),
            cause,
        };
        persist::ensure_dir(&config.home).map_err(home_err)?;
        let (audit, audit_writer) =
            AuditLog::start(config.audit_config(), clock.clone()).map_err(home_err)?;
        let tokens = Arc::new(Tokens::load(
            config.tokens.clone(),
            &config.home,
            clock.clone(),
            audit.clone(),
        )?);
        let policy = RegistryPolicy {
            ttl: config.node_ttl,
            dead_after: config.node_dead,
            spoof_threshold: config.spoof_threshold,
            spoof_window: config.spoof_window,
        };
        let registry = Arc::new(Registry::open(
            &config.home,
            policy,
            clock.clone(),
            audit.clone(),
        ));
        let bundles = Arc::new(Bundles::open(&config.home).map_err(HubError::Bundles)?);

        let control = match config.planes.control() {
            true => Some(bind(config.control_addr, "control", "SHERATAN_CONTROL_ADDR").await?),
            false => None,
        };
        let data = match config.planes.data() {
            true => Some(bind(config.data_addr, "data", "SHERATAN_DATA_ADDR").await?),
            false => None,
        };
        let port = |l: &Option<TcpListener>, fallback: SocketAddr| {
            l.as_ref()
                .and_then(|l| l.local_addr().ok())
                .map_or(fallback.port(), |a| a.port())
        };
        let ports = Ports {
            control: port(&control, config.control_addr),
            data: port(&data, config.data_addr),
        };
        let started_at = clock.now();
        let refusals_per_sec = config.refusals_per_sec;
        let state = Arc::new(HubState {
            config,
            clock,
            audit,
            tokens,
            registry,
            bundles,
            ports,
            started_at,
            serve_stats: Default::default(),
            tls,
            store,
            jobs: Default::default(),
            stopping: CancellationToken::new(),
            refusals: pacing::RefusalPacer::new(refusals_per_sec),
            credentials: credentials::Credentials::default(),
            role_refusals: credentials::RoleRefusals::default(),
            queue_settings: job_service::SettingsCache::default(),
            schedules: schedules::Schedules::default(),
            retention: job_service::RetentionState::default(),
            progress: job_service::ProgressBoard::default(),
            cancelled_leases: tokio::sync::broadcast::channel(1024).0,
        });
        // Submits take their queue's defaults from the first request on.
        if let Err(err) = state.queue_settings.refresh(state.store.as_ref()).await {
            tracing::warn!(%err, "cannot read queue settings yet; the reaper will retry");
        }
        Ok(Hub {
            state,
            control,
            data,
            audit_writer,
            shared: None,
        })
    }

    /// Shares the registry, token rotation and bundles with other hubs on the same database
    /// (see [`mirror`]). `hub_id` names this hub there.
    pub fn share_state(&mut self, shared: Arc<dyn sheratan_store::SharedState>, hub_id: String) {
        self.shared = Some((shared, hub_id));
    }

    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn data_addr(&self) -> Option<SocketAddr> {
        self.data.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The control plane's URL as processes on this machine reach it (`https://` with TLS).
    pub fn control_url(&self) -> Option<String> {
        let tls = self.state.tls[0].is_some();
        self.control_addr().map(|a| serve::local_url_tls(a, tls))
    }

    /// The data plane's URL as processes on this machine reach it (`https://` with TLS).
    pub fn data_url(&self) -> Option<String> {
        let tls = self.state.tls[1].is_some();
        self.data_addr().map(|a| serve::local_url_tls(a, tls))
    }

    pub fn state(&self) -> &Arc<HubState> {
        &self.state
    }

    /// Serves until `shutdown` fires; then stops accepting, lets in-flight requests finish,
    /// writes the registry snapshot and flushes the audit log.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), HubError> {
        let Hub {
            state,
            control,
            data,
            audit_writer,
            shared,
        } = self;
        let servers = serve_planes(&state, control, data, &shutdown);
        let background = Background::start(&state, shared);
        let stopping = state.stopping.clone();
        let shutdown_watch = shutdown.clone();
        tokio::spawn(async move {
            shutdown_watch.cancelled().await;
            stopping.cancel();
        });
        let result = wait_for_listeners(servers, &shutdown).await;
        // Background work stops only after the listeners have drained, so the final snapshot
        // holds every heartbeat that was answered.
        background.stop().await;
        audit_writer.shutdown();
        tracing::info!("hub stopped");
        result
    }
}

/// One server task per bound plane, sharing the connection limits.
fn serve_planes(
    state: &Arc<HubState>,
    control: Option<TcpListener>,
    data: Option<TcpListener>,
    shutdown: &CancellationToken,
) -> tokio::task::JoinSet<std::io::Result<()>> {
    let listeners = usize::from(control.is_some()) + usize::from(data.is_some());
    let serve_config = state.config.serve;
    let limits = serve::ServeLimits {
        max_connections: Some(
            serve_config
                .max_connections
                .unwrap_or_else(|| serve::default_max_connections(listeners)),
        ),
        ..serve_config
    };
    let mut servers = tokio::task::JoinSet::new();
    let planes = [
        (control, http::control_router(state.clone()), 0),
        (data, http::data_router(state.clone()), 1),
    ];
    for (listener, router, plane) in planes {
        if let Some(listener) = listener {
            let stats = state.serve_stats[plane].clone();
            servers.spawn(serve::serve_with(
                listener,
                router,
                limits,
                stats,
                shutdown.clone(),
                state.tls[plane].clone(),
            ));
        }
    }
    servers
}

/// Waits for every listener to drain. One that fails stops the whole hub rather than run
/// half of it.
async fn wait_for_listeners(
    mut servers: tokio::task::JoinSet<std::io::Result<()>>,
    shutdown: &CancellationToken,
) -> Result<(), HubError> {
    let mut result = Ok(());
    while let Some(joined) = servers.join_next().await {
        let err = match joined {
            Ok(Ok(())) => continue,
            Ok(Err(err)) => {
                tracing::error!(%err, "a listener failed; shutting the hub down");
                err
            }
            Err(err) => {
                tracing::error!(%err, "a listener task panicked; shutting the hub down");
                std::io::Error::other(err.to_string())
            }
        };
        shutdown.cancel();
        result = Err(HubError::Serve(err));
    }
    result
}

/// The hub's background tasks: the registry's sweeper and snapshots (the control plane's
/// process owns the registry), the rotation timer, the reaper (the data plane's process owns
/// the jobs), and the mirror of state shared with other hubs.
struct Background {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Background {
    fn start(
        state: &Arc<HubState>,
        shared: Option<(Arc<dyn sheratan_store::SharedState>, String)>,
    ) -> Background {
        let stop = CancellationToken::new();
        let config = &state.config;
        let mut tasks = vec![tokio::spawn(
            state.tokens.clone().run_rotation_timer(stop.clone()),
        )];
        if config.planes.control() {
            let registry = state.registry.clone();
            let flush = config.registry_flush_interval;
            tasks.push(tokio::spawn(registry.run_background(flush, stop.clone())));
        }
        if config.planes.data() {
            let reaper = job_service::run_reaper(state.clone(), config.reap_interval, stop.clone());
            tasks.push(tokio::spawn(reaper));
            let flusher = job_service::run_progress_flusher(state.clone(), stop.clone());
            tasks.push(tokio::spawn(flusher));
            let scheduler = schedules::run_scheduler(state.clone(), stop.clone());
            tasks.push(tokio::spawn(scheduler));
            let retention = job_service::run_retention(state.clone(), stop.clone());
            tasks.push(tokio::spawn(retention));
        }
        if let Some((shared, hub_id)) = shared {
            let mirror = mirror::run(state.clone(), shared, hub_id, stop.clone());
            tasks.push(tokio::spawn(mirror));
        }
        Background { stop, tasks }
    }

    /// Stops every task and waits for each (the registry writes its final snapshot).
    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn bind(
    addr: SocketAddr,
    plane: &'static str,
    var: &'static str,
) -> Result<TcpListener, HubError> {
    TcpListener::bind(addr)
        .await
        .map_err(|cause| HubError::Bind {
            addr,
            plane,
            var,
            cause,
        })
}
