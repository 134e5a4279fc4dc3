//! A host: answers bids and executes awarded jobs through the shared handlers.
//!
//! Pricing: `price = base_price × (1 + load_factor × inflight / capacity)` and
//! `eta_ms = base_eta_ms × (1 + inflight)`; a host declines a job whose kind or required
//! capabilities it lacks, and any job while it is at capacity.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use sheratan_client::MeshToken;
use sheratan_exec::{Handlers, Outcome};
use sheratan_proto::ErrorCode;
use sheratan_proto::auction::{BidRequest, BidResponse, ExecuteRequest, ExecuteResponse};
use sheratan_proto::control::Role;
use sheratan_proto::data::JobError;
use sheratan_runtime::edge::{self, ApiError, JsonBody};
use sheratan_runtime::metrics::{Family, Kind, prometheus_response};
use sheratan_runtime::serve::{ServeLimits, local_url_tls};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Identity;

#[derive(Debug, Clone)]
pub struct HostConfig {
    pub node_id: String,
    pub listen: SocketAddr,
    /// The URL the broker reaches this host at; by default from the bound address.
    pub advertise: Option<String>,
    pub control_url: String,
    /// Sent to the hub and required from the broker; follows a rotation under `sheratan up`.
    pub token: MeshToken,
    pub handlers: Handlers,
    /// Jobs at once.
    pub capacity: u32,
    pub base_price: f64,
    pub load_factor: f64,
    pub base_eta_ms: u64,
    pub build_id: String,
    /// The listener's connection caps and deadlines.
    pub serve: ServeLimits,
    /// The listener's TLS (`SHERATAN_TLS`); plain HTTP without.
    pub tls: Option<sheratan_runtime::tls::TlsServer>,
    /// The largest job payload accepted (`SHERATAN_MAX_BODY_BYTES`); an execute request may
    /// be [`ENVELOPE_BYTES`] larger.
    pub max_body_bytes: usize,
}

/// Room for an execute request's fields around its payload.
pub const ENVELOPE_BYTES: usize = 64 * 1024;

impl HostConfig {
    pub fn new(
        node_id: &str,
        listen: SocketAddr,
        control_url: &str,
        token: impl Into<MeshToken>,
    ) -> Self {
        Self {
            node_id: node_id.into(),
            listen,
            advertise: None,
            control_url: control_url.into(),
            token: token.into(),
            handlers: Handlers::builtin(),
            capacity: 4,
            base_price: 1.0,
            load_factor: 1.0,
            base_eta_ms: 100,
            build_id: env!("CARGO_PKG_VERSION").into(),
            serve: ServeLimits::default(),
            tls: None,
            max_body_bytes: edge::DEFAULT_MAX_BODY_BYTES,
        }
    }
}

pub(crate) struct HostState {
    config: HostConfig,
    inflight: Arc<AtomicU32>,
    bids_accepted: AtomicU64,
    bids_declined: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    stopping: CancellationToken,
}

/// A host whose listener is bound.
pub struct Host {
    listener: TcpListener,
    state: Arc<HostState>,
}

impl Host {
    pub async fn bind(config: HostConfig) -> std::io::Result<Host> {
        if config.capacity == 0 {
            return Err(std::io::Error::other("host capacity must be at least 1"));
        }
        let listener = TcpListener::bind(config.listen).await?;
        Ok(Host {
            listener,
            state: Arc::new(HostState {
                config,
                inflight: Arc::default(),
                bids_accepted: AtomicU64::new(0),
                bids_declined: AtomicU64::new(0),
                succeeded: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                stopping: CancellationToken::new(),
            }),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The URL the broker reaches this host at.
    pub fn url(&self) -> String {
        self.state.config.advertise.clone().unwrap_or_else(|| {
            local_url_tls(
                self.local_addr().unwrap_or(self.state.config.listen),
                self.state.config.tls.is_some(),
            )
        })
    }

    /// The host's router, for tests and benchmarks that serve it themselves.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serves until `shutdown` without heartbeating: for benchmarks that hand the broker's
    /// auctioneer the host list themselves.
    pub async fn serve(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let limits = self.state.config.serve;
        let tls = self.state.config.tls.clone();
        sheratan_runtime::serve::serve_with(
            self.listener,
            router(self.state),
            limits,
            Default::default(),
            shutdown,
            tls,
        )
        .await
    }

    /// Serves until `shutdown`, heartbeating to the hub meanwhile.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let state = self.state.clone();
        let member = sheratan_client::Member {
            control: sheratan_client::ControlClient::new(
                &state.config.control_url,
                state.config.token.clone(),
            )
            .map_err(std::io::Error::other)?,
            identity: Identity {
                node_id: state.config.node_id.clone(),
                role: Role::Host,
                addr: Some(self.url()),
                capabilities: state.config.handlers.names(),
                build_id: state.config.build_id.clone(),
            },
            inflight: state.inflight.clone(),
            capacity: state.config.capacity,
        };
        // Running executions see the shutdown too (they stop within their deadline).
        let stopping = state.stopping.clone();
        let watch = shutdown.clone();
        tokio::spawn(async move {
            watch.cancelled().await;
            stopping.cancel();
        });
        let limits = state.config.serve;
        let tls = state.config.tls.clone();
        let serve = sheratan_runtime::serve::serve_with(
            self.listener,
            router(state),
            limits,
            Default::default(),
            shutdown.clone(),
            tls,
        );
        member.serve(serve, shutdown).await
    }
}

/// What a request to a host presented.
#[derive(Debug, Clone, PartialEq)]
pub enum Access {
    /// The host's own token (or authentication is off).
    Token,
    /// An execute grant from the hub (docs/API.md, "Execute grants"): this one job only.
    Grant { job_id: String },
}

impl edge::Edge for HostState {
    type Credential = Access;

    fn authenticate(
        &self,
        headers: &HeaderMap,
        _: std::net::SocketAddr,
    ) -> Result<Access, ApiError> {
        let token = self.config.token.load();
        // A host on a node credential also takes the grants the hub made with its key; a
        // broker on a credential never sends a host anything else.
        if let Some(own) = token
            .send()
            .filter(|t| t.starts_with(sheratan_sign::CREDENTIAL_PREFIX))
            && let edge::Presented::One(presented) = edge::presented_token(headers)
            && presented.starts_with(sheratan_sign::GRANT_PREFIX)
        {
            let key = sheratan_sign::grant_key(&sheratan_sign::signing_key(own));
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            return sheratan_sign::verify_grant(&key, &self.config.node_id, &presented, now)
                .map(|job_id| Access::Grant { job_id })
                .map_err(|refusal| {
                    ApiError::new(
                        ErrorCode::AuthFail,
                        refusal.reason(),
                        "the broker asks the hub for a fresh grant (POST /v1/grants) each round",
                    )
                });
        }
        edge::check_mesh_token(headers, token.accepted().as_deref()).map(|()| Access::Token)
    }

    fn body_limit(&self) -> usize {
        self.config.max_body_bytes + ENVELOPE_BYTES
    }
}

type Caller = edge::Caller<Arc<HostState>>;

fn router(state: Arc<HostState>) -> Router {
    let routes = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/bid", post(bid))
        .route("/v1/execute", post(execute));
    edge::with_fallbacks(
        routes,
        "a host",
        "/health, /metrics, /v1/bid and /v1/execute",
    )
    .with_state(state)
}

async fn health(State(s): State<Arc<HostState>>) -> Json<sheratan_proto::health::HostHealth> {
    Json(sheratan_proto::health::HostHealth {
        status: "ok".into(),
        role: "host".into(),
        node_id: s.config.node_id.clone(),
        inflight: s.inflight.load(Ordering::Relaxed),
        capacity: s.config.capacity,
        auth: s.config.token.auth_mode(),
    })
}

/// A grant opens `/v1/bid` and `/v1/execute` for its own job only.
fn for_job(caller: &Caller, job_id: &str) -> Result<(), ApiError> {
    match &caller.credential {
        Access::Grant { job_id: granted } if granted != job_id => Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("the execute grant is for job {granted}, not {job_id}"),
            "a grant opens one job on one host; ask the hub for this job's",
        )),
        _ => Ok(()),
    }
}

async fn metrics(State(s): State<Arc<HostState>>, caller: Caller) -> Result<Response, ApiError> {
    if caller.credential != Access::Token {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "an execute grant opens /v1/bid and /v1/execute only",
            "read metrics with the host's own token",
        ));
    }
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    let label = |k: &'static str, v: &str| vec![(k, v.to_owned())];
    let families = [
        Family::new(
            "sheratan_host_bids_total",
            "Bids answered, by answer.",
            Kind::Counter,
        )
        .value(label("answer", "accept"), n(&s.bids_accepted))
        .value(label("answer", "decline"), n(&s.bids_declined)),
        Family::new(
            "sheratan_host_executions_total",
            "Awarded jobs, by outcome.",
            Kind::Counter,
        )
        .value(label("outcome", "success"), n(&s.succeeded))
        .value(label("outcome", "failure"), n(&s.failed))
        .value(label("outcome", "refused_at_capacity"), n(&s.refused)),
        Family::new("sheratan_host_inflight", "Jobs running now.", Kind::Gauge)
            .value(vec![], f64::from(s.inflight.load(Ordering::Relaxed))),
        Family::new(
            "sheratan_host_capacity",
            "Jobs this host runs at once.",
            Kind::Gauge,
        )
        .value(vec![], f64::from(s.config.capacity)),
    ];
    Ok(prometheus_response(&families))
}

/// The host's answer to a bid request.
fn quote(s: &HostState, req: &BidRequest) -> BidResponse {
    let inflight = s.inflight.load(Ordering::Relaxed);
    let decline = |reason: String| BidResponse {
        node_id: s.config.node_id.clone(),
        accept: false,
        price: 0.0,
        eta_ms: 0,
        reason,
    };
    if !s.config.handlers.has(&req.kind) {
        return decline(format!("no handler for kind {:?}", req.kind));
    }
    let names = s.config.handlers.names();
    if let Some(missing) = req
        .required_capabilities
        .iter()
        .find(|c| !names.contains(c))
    {
        return decline(format!("missing capability {missing:?}"));
    }
    if inflight >= s.config.capacity {
        return decline(format!("at capacity ({inflight}/{})", s.config.capacity));
    }
    let load = f64::from(inflight) / f64::from(s.config.capacity);
    BidResponse {
        node_id: s.config.node_id.clone(),
        accept: true,
        price: s.config.base_price * (1.0 + s.config.load_factor * load),
        eta_ms: s.config.base_eta_ms * (1 + u64::from(inflight)),
        reason: "ok".into(),
    }
}

async fn bid(
    State(s): State<Arc<HostState>>,
    caller: Caller,
    JsonBody(req): JsonBody<BidRequest>,
) -> Result<Json<BidResponse>, ApiError> {
    for_job(&caller, &req.job_id)?;
    let answer = quote(&s, &req);
    if answer.accept {
        s.bids_accepted.fetch_add(1, Ordering::Relaxed);
    } else {
        s.bids_declined.fetch_add(1, Ordering::Relaxed);
    }
    Ok(Json(answer))
}

/// Releases an execution slot when the execution ends, however it ends.
struct Slot<'a>(&'a AtomicU32);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn execute(
    State(s): State<Arc<HostState>>,
    caller: Caller,
    JsonBody(req): JsonBody<ExecuteRequest>,
) -> Result<Json<ExecuteResponse>, ApiError> {
    for_job(&caller, &req.job_id)?;
    // Take a slot, or refuse: a bid is a quote, not a reservation.
    let taken = s
        .inflight
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < s.config.capacity).then_some(n + 1)
        });
    if taken.is_err() {
        s.refused.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "this host is at capacity",
            "auction the job again",
        ));
    }
    let _slot = Slot(&s.inflight);
    let started = Instant::now();
    let deadline = Duration::from_millis(req.deadline_ms.max(1));
    let outcome = s
        .config
        .handlers
        // The broker holds the lease, not this host: an auctioned job reports no progress yet.
        .run(
            &req.kind,
            &req.payload,
            deadline,
            &s.stopping,
            &sheratan_client::ProgressSink::disabled(),
        )
        .await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let (outcome, result, err) = match outcome {
        Outcome::Success(v) => {
            s.succeeded.fetch_add(1, Ordering::Relaxed);
            (sheratan_proto::data::Outcome::Success, v, None)
        }
        Outcome::Failure { message, retryable } => {
            s.failed.fetch_add(1, Ordering::Relaxed);
            (
                sheratan_proto::data::Outcome::Failure,
                serde_json::Value::Null,
                Some(JobError { message, retryable }),
            )
        }
    };
    Ok(Json(ExecuteResponse {
        job_id: req.job_id,
        node_id: s.config.node_id.clone(),
        outcome,
        result,
        error: err,
        elapsed_ms,
    }))
}
