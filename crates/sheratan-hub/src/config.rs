//! The hub's configuration: plain, validated data. Building it binds nothing; `Hub::build`
//! does, and reports the real addresses (so tests can ask for port 0).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sheratan_runtime::serve::ServeLimits;
use sheratan_store::JobDefaults;

use crate::audit::AuditConfig;
use crate::auth::TokenConfig;

/// Which listeners this hub process runs.
/// What the mesh token may do once the mesh has credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MeshTokenScope {
    /// Everything, as before credentials existed.
    #[default]
    Full,
    /// Create, list and revoke credentials (the admin path's `/admin/tokens`) only.
    Bootstrap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Planes {
    #[default]
    Both,
    Control,
    Data,
}

impl Planes {
    pub fn control(self) -> bool {
        matches!(self, Planes::Both | Planes::Control)
    }
    pub fn data(self) -> bool {
        matches!(self, Planes::Both | Planes::Data)
    }
}

#[derive(Debug, Clone)]
pub struct HubConfig {
    /// `SHERATAN_HOME`: token file, registry snapshot, bundles, logs.
    pub home: PathBuf,
    pub planes: Planes,
    pub control_addr: SocketAddr,
    pub data_addr: SocketAddr,
    pub tokens: TokenConfig,
    pub node_ttl: Duration,
    pub node_dead: Duration,
    pub spoof_threshold: u32,
    pub spoof_window: Duration,
    /// Request bodies above this get 413.
    pub max_body_bytes: usize,
    /// Bundle uploads on the admin path may be this large.
    pub max_bundle_bytes: usize,
    /// How often the registry snapshot is written at most.
    pub registry_flush_interval: Duration,
    /// What the heartbeat answer asks nodes to use.
    pub heartbeat_interval_s: u32,
    /// What the mesh token may do (`SHERATAN_MESH_TOKEN_SCOPE`).
    pub mesh_token_scope: MeshTokenScope,
    pub audit_max_bytes: u64,
    pub audit_keep: usize,
    pub audit_fold_window: Duration,
    /// Each listener's transport limits: connection caps (per listener, per source) and the
    /// request-head deadlines. `max_connections: None` derives the cap from the open-files
    /// limit, shared by the listeners this process runs.
    pub serve: ServeLimits,
    /// Each plane's TLS, [control, data] (`SHERATAN_TLS`, `SHERATAN_TLS_CERT`/`_KEY`, or a
    /// certificate from the mesh CA); plain HTTP where `None`.
    pub tls: [Option<sheratan_runtime::tls::TlsServer>; 2],
    /// `max_attempts` and `timeout_s` (`SHERATAN_LEASE_TIMEOUT`) of jobs that leave them out.
    pub job_defaults: JobDefaults,
    /// Idempotency keys are forgotten this long after their job was submitted.
    pub idempotency_ttl: Duration,
    /// Finished jobs are deleted this long after they finished (`SHERATAN_RETENTION`, a
    /// queue's settings over it); `None` keeps them.
    pub retention: Option<Duration>,
    /// How often expired leases are reaped and delayed jobs promoted.
    pub reap_interval: Duration,
    /// The `Retry-After` a 429 carries, in seconds.
    pub backpressure_retry_after_s: u64,
    /// Refusals (400, 403, 405, 413, 421) answered per second before they wait; 0 = no limit.
    pub refusals_per_sec: u32,
    /// Serve the worker stream (`GET /v1/stream`); off, it answers 404 and nodes use the
    /// request routes.
    pub worker_stream: bool,
    /// Spans of submits, leases and results (`SHERATAN_OTLP_ENDPOINT`; off by default).
    pub tracer: sheratan_trace::Tracer,
}

impl HubConfig {
    /// Defaults of docs/API.md, "Settings" with `home` as the state directory.
    pub fn new(home: PathBuf, tokens: TokenConfig) -> Self {
        Self {
            home,
            planes: Planes::Both,
            control_addr: SocketAddr::from(([0, 0, 0, 0], 8787)),
            data_addr: SocketAddr::from(([127, 0, 0, 1], 8788)),
            tokens,
            node_ttl: Duration::from_secs(120),
            node_dead: Duration::from_secs(600),
            spoof_threshold: 3,
            spoof_window: Duration::from_secs(600),
            max_body_bytes: 1024 * 1024,
            max_bundle_bytes: 64 * 1024 * 1024,
            registry_flush_interval: Duration::from_secs(1),
            heartbeat_interval_s: 12,
            mesh_token_scope: MeshTokenScope::Full,
            audit_max_bytes: 10 * 1024 * 1024,
            audit_keep: 5,
            audit_fold_window: Duration::from_secs(10),
            serve: ServeLimits::default(),
            tls: [None, None],
            job_defaults: JobDefaults::default(),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            reap_interval: Duration::from_millis(250),
            backpressure_retry_after_s: 1,
            refusals_per_sec: 5000,
            worker_stream: true,
            tracer: sheratan_trace::Tracer::disabled(),
        }
    }

    /// Checks the settings against each other; the message says which setting to fix.
    pub fn validate(&self) -> Result<(), String> {
        // Checked here too (the token authority checks it at load), so a bad pair is refused
        // before the hub touches its home: no token file, store or logs for a hub that cannot
        // start.
        if self.tokens.next.is_some() != self.tokens.rotation_until.is_some() {
            return Err(
                "SHERATAN_HUB_TOKEN_NEXT and SHERATAN_HUB_TOKEN_ROTATION_UNTIL must be set together"
                    .into(),
            );
        }
        // Weak tokens are refused here too, before anything is created.
        for (what, token) in [
            ("SHERATAN_HUB_TOKEN", &self.tokens.token),
            ("SHERATAN_HUB_TOKEN_NEXT", &self.tokens.next),
        ] {
            if let Some(token) = token {
                crate::auth::check_strength(what, token.expose(), self.tokens.allow_weak)
                    .map_err(|e| e.to_string())?;
            }
        }
        if self.node_ttl.is_zero() {
            return Err("SHERATAN_NODE_TTL_SEC must be at least 1".into());
        }
        if self.node_dead <= self.node_ttl {
            return Err(format!(
                "SHERATAN_NODE_DEAD_SEC ({}) must be greater than SHERATAN_NODE_TTL_SEC ({})",
                self.node_dead.as_secs_f64(),
                self.node_ttl.as_secs_f64()
            ));
        }
        if self.spoof_threshold == 0 {
            return Err("SHERATAN_ATTESTATION_SPOOF_THRESHOLD must be at least 1".into());
        }
        if self.max_body_bytes < 1024 {
            return Err("the body limit must be at least 1024 bytes".into());
        }
        self.serve.validate()?;
        if self.planes == Planes::Both
            && self.control_addr == self.data_addr
            && self.control_addr.port() != 0
        {
            return Err(format!(
                "the control and data planes cannot share one address ({}); set SHERATAN_CONTROL_ADDR and SHERATAN_DATA_ADDR apart",
                self.control_addr
            ));
        }
        Ok(())
    }

    pub fn audit_config(&self) -> AuditConfig {
        let mut audit = AuditConfig::new(self.home.join("logs"));
        audit.max_bytes = self.audit_max_bytes;
        audit.keep = self.audit_keep;
        audit.fold_window = self.audit_fold_window;
        audit
    }
}
