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
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub(crate) mod http;
pub(crate) mod job_service;
pub(crate) mod metrics;
pub(crate) mod mirror;
pub(crate) mod pacing;
pub(crate) mod persist;
pub(crate) mod registry;
pub(crate) mod snapshot;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use sheratan_proto::{EventKind, Plane};
use sheratan_store::registry::RegistryPolicy;
use sheratan_store::{Clock, Store, SystemClock};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{HubConfig, Planes};
pub use pacing::MAX_RATE as MAX_REFUSALS_PER_SEC;

use crate::audit::{AuditLog, AuditWriter};
use crate::auth::{TokenError, Tokens};
use crate::bundles::Bundles;
use crate::registry::Registry;
use sheratan_runtime::metrics::{Family, Kind};
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
    /// Durable job storage.
    pub store: Arc<dyn Store>,
    pub jobs: job_service::JobCounters,
    /// Cancelled when shutdown begins, so long polls answer at once instead of holding the
    /// drain up.
    pub stopping: CancellationToken,
    /// Slows refusals down under a flood (`SHERATAN_REFUSALS_PER_SEC`).
    pub refusals: pacing::RefusalPacer,
}

impl HubState {
    /// Connections the listeners closed without serving them, by plane and reason.
    fn connection_family(&self) -> Family {
        let mut family = Family::new(
            "sheratan_connections_closed_total",
            "Connections closed without a request: at the listener's cap, at a source's cap (SHERATAN_MAX_CONN_PER_IP), or at the request-head deadline.",
            Kind::Counter,
        );
        for (plane, stats) in [
            ("control", &self.serve_stats[0]),
            ("data", &self.serve_stats[1]),
        ] {
            for (reason, counter) in [
                ("listener_cap", &stats.refused),
                ("source_cap", &stats.refused_per_source),
                ("deadline", &stats.timed_out),
            ] {
                family = family.sample(
                    vec![("plane", plane.to_owned()), ("reason", reason.to_owned())],
                    counter.load(std::sync::atomic::Ordering::Relaxed) as f64,
                    format!("connections.{plane}.{reason}"),
                );
            }
        }
        family
    }

    /// All metrics of the hub, gathered now.
    pub fn metric_families(&self, plane: Plane) -> Vec<Family> {
        let [online, stale, dead] = self.registry.counts();
        let (old_token, invalid) = self.tokens.failures_last_minute();
        let snapshot = self.registry.snapshot_stats();
        let mut events = Family::new(
            "sheratan_security_events_total",
            "Security and operations events emitted, by event.",
            Kind::Counter,
        );
        for kind in EventKind::ALL {
            events = events.sample(
                vec![("event", kind.as_str().to_owned())],
                self.audit.count(kind) as f64,
                format!("events.{}", kind.as_str().to_ascii_lowercase()),
            );
        }
        let mut families = vec![
            Family::new("sheratan_nodes", "Registered nodes by status.", Kind::Gauge)
                .sample(
                    vec![("status", "online".into())],
                    online as f64,
                    "nodes.online",
                )
                .sample(
                    vec![("status", "stale".into())],
                    stale as f64,
                    "nodes.stale",
                )
                .sample(vec![("status", "dead".into())], dead as f64, "nodes.dead"),
            Family::new(
                "sheratan_auth_failures_1m",
                "Failed authentications in the last 60 seconds, by reason.",
                Kind::Gauge,
            )
            .sample(
                vec![("reason", "old_token".into())],
                old_token as f64,
                "auth_failure.old_token_1m",
            )
            .sample(
                vec![("reason", "invalid".into())],
                invalid as f64,
                "auth_failure.invalid_1m",
            ),
            events,
            self.connection_family(),
            Family::single(
                "sheratan_audit_events_dropped_total",
                "Events that did not reach the audit log because its queue was full.",
                Kind::Counter,
                "audit.dropped",
                self.audit.dropped() as f64,
            ),
            Family::single(
                "sheratan_refusals_paced_total",
                "Refused requests (400, 403, 405, 413, 421) whose answer waited for the refusal pacer.",
                Kind::Counter,
                "refusals.paced",
                self.refusals.paced() as f64,
            ),
            Family::single(
                "sheratan_heartbeats_total",
                "Heartbeats accepted.",
                Kind::Counter,
                "heartbeats.total",
                self.registry.heartbeats() as f64,
            ),
            Family::single(
                "sheratan_registry_snapshots_total",
                "Registry snapshots written.",
                Kind::Counter,
                "registry.snapshots",
                snapshot.writes as f64,
            ),
            Family::single(
                "sheratan_registry_snapshot_failures_total",
                "Registry snapshot writes that failed.",
                Kind::Counter,
                "registry.snapshot_failures",
                snapshot.failures as f64,
            ),
            Family::single(
                "sheratan_registry_snapshot_seconds",
                "Duration of the last registry snapshot write.",
                Kind::Gauge,
                "registry.snapshot_seconds",
                snapshot.last_duration.as_secs_f64(),
            ),
            Family::single(
                "sheratan_registry_snapshot_last_start_timestamp_seconds",
                "When the last registry snapshot write started (Unix seconds).",
                Kind::Gauge,
                "registry.snapshot_last_start_unix_s",
                snapshot.last_started_unix_s,
            ),
            Family::single(
                "sheratan_registry_snapshot_bytes",
                "Size of the last registry snapshot.",
                Kind::Gauge,
                "registry.snapshot_bytes",
                snapshot.last_bytes as f64,
            ),
            Family::single(
                "sheratan_token_rotation_active",
                "1 while a token rotation accepts two tokens.",
                Kind::Gauge,
                "token.rotation_active",
                if self.tokens.rotation_status().active {
                    1.0
                } else {
                    0.0
                },
            ),
            Family::single(
                "sheratan_auth_required",
                "0 when authentication is disabled (SHERATAN_HUB_TOKEN_REQUIRED=0).",
                Kind::Gauge,
                "auth.required",
                if self.tokens.required() { 1.0 } else { 0.0 },
            ),
        ];
        if plane == Plane::Data {
            families.extend(self.data_families());
        }
        families
    }

    /// The data plane's gauges and counters.
    fn data_families(&self) -> Vec<Family> {
        let counts = self.store.counts();
        let mut depth = Family::new(
            "sheratan_queue_depth",
            "Accepted (not yet leased) jobs, by queue.",
            Kind::Gauge,
        );
        for (queue, n) in &counts.queue_depth {
            depth = depth.sample(
                vec![("queue", queue.clone())],
                *n as f64,
                format!("queue_depth.{queue}"),
            );
        }
        vec![
            depth,
            Family::single(
                "sheratan_queue_depth_total",
                "Accepted jobs, all queues (the backpressure limit applies to this).",
                Kind::Gauge,
                "queue_depth_total",
                counts.total_depth() as f64,
            ),
            Family::single(
                "sheratan_inflight",
                "Leased jobs not yet finished.",
                Kind::Gauge,
                "inflight",
                counts.inflight as f64,
            ),
            Family::single(
                "sheratan_results_pending",
                "Finished jobs whose submitter has not acknowledged them.",
                Kind::Gauge,
                "results_pending",
                counts.results_pending as f64,
            ),
            self.jobs.families(),
        ]
    }
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
            store,
            jobs: Default::default(),
            stopping: CancellationToken::new(),
            refusals: pacing::RefusalPacer::new(refusals_per_sec),
        });
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
        let mut servers = tokio::task::JoinSet::new();
        let listeners = usize::from(control.is_some()) + usize::from(data.is_some());
        let limits = serve::ServeLimits {
            max_connections: Some(
                state
                    .config
                    .serve
                    .max_connections
                    .unwrap_or_else(|| serve::default_max_connections(listeners)),
            ),
            ..state.config.serve
        };
        if let Some(listener) = control {
            let router = http::control_router(state.clone());
            let stats = state.serve_stats[0].clone();
            servers.spawn(serve::serve(
                listener,
                router,
                limits,
                stats,
                shutdown.clone(),
            ));
        }
        if let Some(listener) = data {
            let router = http::data_router(state.clone());
            let stats = state.serve_stats[1].clone();
            servers.spawn(serve::serve(
                listener,
                router,
                limits,
                stats,
                shutdown.clone(),
            ));
        }
        // Background work stops only after the listeners have drained, so the final snapshot
        // holds every heartbeat that was answered.
        let background = CancellationToken::new();
        // The registry belongs to the process that serves the control plane.
        let registry_task = state.config.planes.control().then(|| {
            tokio::spawn(
                state
                    .registry
                    .clone()
                    .run_background(state.config.registry_flush_interval, background.clone()),
            )
        });
        let rotation_task =
            tokio::spawn(state.tokens.clone().run_rotation_timer(background.clone()));
        // Jobs belong to the process that serves the data plane.
        let reaper_task = state.config.planes.data().then(|| {
            tokio::spawn(job_service::run_reaper(
                state.clone(),
                state.config.reap_interval,
                background.clone(),
            ))
        });
        let mirror_task = shared.map(|(shared, hub_id)| {
            tokio::spawn(mirror::run(
                state.clone(),
                shared,
                hub_id,
                background.clone(),
            ))
        });
        let stopping = state.stopping.clone();
        let shutdown_watch = shutdown.clone();
        tokio::spawn(async move {
            shutdown_watch.cancelled().await;
            stopping.cancel();
        });

        let mut result = Ok(());
        while let Some(joined) = servers.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    // One listener failed: stop the whole hub rather than run half of it.
                    tracing::error!(%err, "a listener failed; shutting the hub down");
                    shutdown.cancel();
                    result = Err(HubError::Serve(err));
                }
                Err(err) => {
                    tracing::error!(%err, "a listener task panicked; shutting the hub down");
                    shutdown.cancel();
                    result = Err(HubError::Serve(std::io::Error::other(err.to_string())));
                }
            }
        }
        background.cancel();
        if let Some(task) = registry_task {
            let _ = task.await;
        }
        let _ = rotation_task.await;
        if let Some(task) = mirror_task {
            let _ = task.await;
        }
        if let Some(task) = reaper_task {
            let _ = task.await;
        }
        audit_writer.shutdown();
        tracing::info!("hub stopped");
        result
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
