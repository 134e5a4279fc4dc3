//! The Core API (docs/API.md, "Hosts, broker, relay, Core"): the front door for clients and the dashboard. It owns no state:
//! jobs go to Hub Data (the queue picked by `dispatch`), nodes come from Hub Control, auctions
//! from the broker, alerts and the audit tail from the hub's log files. Every component it
//! aggregates may be down; `/api/overview` then shows it as down instead of failing.
//!
//! Live views: `GET /api/events` is a server-sent event stream of job and node changes, fed by
//! one poller shared by all subscribers (see [`events`]).

mod access;
mod events;
mod history;
mod overview;
mod peer;
mod tail;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use axum::{Json, Router};
use sheratan_client::{
    ClientError, ControlClient, DataClient, Identity, JobFilter, MeshToken, Submitted,
};
use sheratan_proto::AuditRecord;
use sheratan_proto::ErrorCode;
use sheratan_proto::auction::{AuctionList, AuctionRecord};
use sheratan_proto::control::{NodeList, Role};
use sheratan_proto::core_api::{
    CoreSubmit, CoreSubmitted, Dispatch, History, LimitQuery, LogTail, Overview,
};
use sheratan_proto::data::{JobStatus, JobsQuery, SubmitJob};
use sheratan_proto::event::AlertRecord;
use sheratan_proto::health::CoreHealth;
use sheratan_proto::relay::SessionList;
use sheratan_runtime::edge::{self, ApiError, JsonBody, QueryParams};
use sheratan_runtime::serve::{ServeLimits, local_url_tls};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The queue of `dispatch: auction` jobs (the broker's).
pub const AUCTION_QUEUE: &str = "auction";
/// The queue of `dispatch: llm` jobs (the relay's).
pub const LLM_QUEUE: &str = "llm";

#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub node_id: String,
    pub listen: SocketAddr,
    pub control_url: String,
    pub data_url: String,
    pub broker_url: Option<String>,
    pub relay_url: Option<String>,
    /// Sent to the hub, the broker and the relay, required from callers; follows a rotation
    /// under `sheratan up`.
    pub token: MeshToken,
    /// The hub's state dir, for `logs/alerts.jsonl` and `logs/hub_security_audit.jsonl`.
    pub home: PathBuf,
    /// Browser origins allowed to call the API (the dashboard's).
    pub allowed_origins: Vec<String>,
    /// How often the event poller looks at the hub while someone listens.
    pub poll_interval: Duration,
    /// How often the hub's gauges are sampled for `/api/history` (360 points are kept).
    pub history_interval: Duration,
    pub build_id: String,
    /// The listener's connection caps and deadlines.
    pub serve: ServeLimits,
    /// The listener's TLS (`SHERATAN_TLS`); plain HTTP without.
    pub tls: Option<sheratan_runtime::tls::TlsServer>,
    /// The largest request body read (a submit's payload goes on to the hub).
    pub max_body_bytes: usize,
}

impl CoreConfig {
    pub fn new(
        listen: SocketAddr,
        control_url: &str,
        data_url: &str,
        token: impl Into<MeshToken>,
        home: PathBuf,
    ) -> Self {
        Self {
            node_id: "core".into(),
            listen,
            control_url: control_url.into(),
            data_url: data_url.into(),
            broker_url: None,
            relay_url: None,
            token: token.into(),
            home,
            allowed_origins: vec![
                "http://127.0.0.1:3001".into(),
                "http://localhost:3001".into(),
            ],
            poll_interval: Duration::from_millis(500),
            history_interval: Duration::from_secs(10),
            build_id: env!("CARGO_PKG_VERSION").into(),
            serve: ServeLimits::default(),
            tls: None,
            max_body_bytes: edge::DEFAULT_MAX_BODY_BYTES,
        }
    }
}

pub(crate) struct CoreState {
    config: CoreConfig,
    control: ControlClient,
    data: DataClient,
    /// For the broker and relay (plain HTTP with the mesh token).
    http: reqwest::Client,
    events: events::Hub,
    history: history::History,
    /// What the hub said about callers' tokens lately.
    vouches: sheratan_client::Vouches,
}

/// A Core API whose listener is bound.
pub struct Core {
    listener: TcpListener,
    state: Arc<CoreState>,
}

impl Core {
    pub async fn bind(config: CoreConfig) -> std::io::Result<Core> {
        let (control, data) =
            sheratan_client::member_clients(&config.control_url, &config.data_url, &config.token)?;
        // Core sends the token to the broker and the relay: never in clear text across a
        // network, never through a proxy.
        if config.token.send().is_some() {
            for url in [&config.broker_url, &config.relay_url]
                .into_iter()
                .flatten()
            {
                if let Some(why) = reqwest::Url::parse(url)
                    .ok()
                    .and_then(|u| sheratan_client::clear_text_refusal(&u))
                {
                    return Err(std::io::Error::other(why));
                }
            }
        }
        let http = sheratan_client::http_client_builder()
            .map_err(std::io::Error::other)?
            .no_proxy()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(std::io::Error::other)?;
        let listener = TcpListener::bind(config.listen).await?;
        let events = events::Hub::new(config.poll_interval);
        let history = history::History::new(config.history_interval);
        Ok(Core {
            listener,
            state: Arc::new(CoreState {
                config,
                control,
                data,
                http,
                events,
                history,
                vouches: sheratan_client::Vouches::default(),
            }),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Allows one more browser origin (a dashboard bound after Core, on a port only known
    /// then). Before `run` only.
    pub fn allow_origin(&mut self, origin: String) {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            state.config.allowed_origins.push(origin);
        }
    }

    /// Serves until `shutdown`, heartbeating (role `core`) meanwhile.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let state = self.state.clone();
        let member = sheratan_client::Member {
            control: state.control.clone(),
            identity: Identity {
                node_id: state.config.node_id.clone(),
                role: Role::Core,
                addr: Some(local_url_tls(
                    self.local_addr()?,
                    self.state.config.tls.is_some(),
                )),
                capabilities: Vec::new(),
                build_id: state.config.build_id.clone(),
            },
            inflight: Arc::default(),
            capacity: 0,
        };
        let poller = tokio::spawn(events::poll(state.clone(), shutdown.clone()));
        let sampled = state.clone();
        let sampler_stop = shutdown.clone();
        let sampler = tokio::spawn(async move {
            history::sample(&sampled.history, sampled.data.clone(), sampler_stop).await;
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
        let result = member.serve(serve, shutdown).await;
        poller.abort();
        sampler.abort();
        result
    }
}

impl edge::Edge for CoreState {
    type Credential = access::Access;

    fn authenticate(&self, headers: &HeaderMap, _: SocketAddr) -> Result<access::Access, ApiError> {
        edge::check_mesh_token(headers, self.config.token.load().accepted().as_deref())
            .map(|()| access::Access::Own)
    }

    fn vouch(
        &self,
        token: &str,
        request: &axum::http::request::Parts,
    ) -> impl std::future::Future<Output = Result<Option<access::Access>, ApiError>> + Send {
        access::vouch(self, token, request)
    }

    fn body_limit(&self) -> usize {
        self.config.max_body_bytes
    }
}

pub(crate) use access::{Caller, CallerExt};

fn router(state: Arc<CoreState>) -> Router {
    let routes = Router::new()
        .route("/health", get(health))
        .route("/api/jobs", post(submit).get(list_jobs))
        .route("/api/jobs/{job_id}", get(one_job))
        .route("/api/jobs/{job_id}/cancel", post(cancel_job))
        .route("/api/jobs/{job_id}/requeue", post(requeue_job))
        .route("/api/jobs/bulk/{action}", post(bulk_jobs))
        .route("/api/schedules", get(schedules))
        .route("/api/schedules/{name}", patch(patch_schedule))
        .route("/api/schedules/{name}/run", post(run_schedule))
        .route(
            "/api/nodes/{node_id}/attestation/accept",
            post(accept_attestation),
        )
        .route("/api/history", get(history_route))
        .route("/api/relay/sessions", get(relay_sessions))
        .route("/api/overview", get(overview_route))
        .route("/api/nodes", get(nodes))
        .route("/api/queues", get(queues))
        .route("/api/queues/{queue}/settings", put(put_queue_settings))
        .route("/api/nodes/{node_id}", delete(remove_node))
        .route("/api/auctions", get(auctions))
        .route("/api/auctions/{job_id}", get(one_auction))
        .route("/api/alerts", get(alerts))
        .route("/api/audit", get(audit))
        .route("/api/events", get(events::stream))
        .route("/api/whoami", get(whoami))
        .route("/openapi.json", get(openapi))
        .route("/api/tokens", get(list_tokens).post(create_token))
        .route("/api/tokens/{name}", delete(revoke_token));
    edge::with_fallbacks(routes, "Core", "/health, /openapi.json and /api/*")
        .layer(axum::middleware::from_fn_with_state(state.clone(), cors))
        .with_state(state)
}

/// CORS for the dashboard's origins only: they get the allow headers (and preflights a 204);
/// any other origin gets no CORS headers, so browsers keep its pages out. Requests without
/// an `Origin` (CLI, SDK, curl) are not affected.
async fn cors(State(s): State<Arc<CoreState>>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let allowed = origin
        .as_ref()
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| s.config.allowed_origins.iter().any(|a| a == o));
    if request.method() == Method::OPTIONS
        && let Some(origin) = origin
    {
        if !allowed {
            return ApiError::new(
                ErrorCode::AuthFail,
                "this origin may not call the Core API",
                "set SHERATAN_DASHBOARD_ORIGIN to the dashboard's origin",
            )
            .into_response();
        }
        let mut response = StatusCode::NO_CONTENT.into_response();
        add_cors(response.headers_mut(), origin);
        return response;
    }
    let mut response = next.run(request).await;
    if allowed && let Some(origin) = origin {
        add_cors(response.headers_mut(), origin);
    }
    response
}

fn add_cors(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, x-sheratan-token"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
}

async fn health(State(s): State<Arc<CoreState>>) -> Json<CoreHealth> {
    Json(CoreHealth {
        status: "ok".into(),
        role: "core".into(),
        version: s.config.build_id.clone(),
        auth: s.config.token.auth_mode(),
    })
}

/// A hub error passed through with its code, status and message; a hub that cannot be
/// reached becomes 503 naming it.
fn upstream(what: &str, err: ClientError) -> ApiError {
    match err {
        ClientError::Api {
            code,
            message,
            hint,
            retry_after_s,
            ..
        } => ApiError {
            retry_after_s,
            ..ApiError::new(code, message, hint)
        },
        other => ApiError::new(
            ErrorCode::Unavailable,
            format!("{what} did not answer: {other}"),
            "check that the hub is running (sheratan up, or sheratan hub)",
        ),
    }
}

fn hub_data(err: ClientError) -> ApiError {
    upstream("Hub Data", err)
}

/// The queue a submit goes to, or why the request is contradictory.
pub fn queue_for(dispatch: Dispatch, queue: Option<&str>) -> Result<String, String> {
    let fixed = match dispatch {
        Dispatch::Queue => return Ok(queue.unwrap_or("default").to_owned()),
        Dispatch::Auction => AUCTION_QUEUE,
        Dispatch::Llm => LLM_QUEUE,
    };
    match queue {
        None => Ok(fixed.into()),
        Some(q) if q == fixed => Ok(fixed.into()),
        Some(q) => Err(format!(
            "dispatch {dispatch:?} always uses the queue {fixed:?}, not {q:?}: drop the queue field or use dispatch \"queue\""
        )
        .to_lowercase()),
    }
}

async fn submit(
    State(s): State<Arc<CoreState>>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(req): JsonBody<CoreSubmit>,
) -> Result<Response, ApiError> {
    let queue = queue_for(req.dispatch, req.queue.as_deref()).map_err(ApiError::invalid)?;
    let job = SubmitJob {
        queue: queue.clone(),
        kind: req.kind,
        payload: req.payload,
        priority: req.priority,
        required_capabilities: req.required_capabilities,
        idempotency_key: req.idempotency_key,
        max_attempts: req.max_attempts,
        timeout_s: req.timeout_s,
        run_at: None,
        // Core's callers (the dashboard, scripts) follow jobs through /api/jobs and the event
        // stream, never through the data plane's pending results: those would pile up.
        follow_result: Some(false),
        concurrency_key: None,
        retry: None,
    };
    // The caller's trace, if it sent one, goes on to the hub with the job.
    let traceparent = headers
        .get(sheratan_proto::headers::TRACEPARENT)
        .and_then(|v| v.to_str().ok());
    let submitted = caller
        .data(&s)
        .submit_traced(&job, traceparent)
        .await
        .map_err(hub_data)?;
    let status = match submitted {
        Submitted::Created(_) => StatusCode::ACCEPTED,
        Submitted::Existing(_) => StatusCode::OK,
    };
    let r = submitted.response();
    Ok((
        status,
        Json(CoreSubmitted {
            job_id: r.job_id.clone(),
            status: r.status,
            queue,
            warning: r.warning.clone(),
        }),
    )
        .into_response())
}

async fn list_jobs(
    State(s): State<Arc<CoreState>>,
    caller: Caller,
    QueryParams(q): QueryParams<JobsQuery>,
) -> Result<Json<sheratan_proto::data::JobList>, ApiError> {
    let status = q
        .status
        .filter(|st| !st.is_empty())
        .map(|st| serde_json::from_value::<JobStatus>(serde_json::Value::String(st)))
        .transpose()
        .map_err(|_| {
            ApiError::invalid(
                "query parameter status: one of accepted, in_progress, completed, failed, cancelled",
            )
        })?;
    let filter = JobFilter {
        queue: q.queue,
        status,
        limit: q.limit,
        cursor: q.cursor,
        kind: q.kind,
        error: q.error,
        since: q.since,
    };
    caller
        .data(&s)
        .jobs(&filter)
        .await
        .map(Json)
        .map_err(hub_data)
}

/// A whole job id or a piece of one (the hub looks pieces up and says when one is ambiguous);
/// checked here too so nothing but an id reaches the hub's path.
fn job_id(job_id: &str) -> Result<(), ApiError> {
    sheratan_proto::ids::parse_job_ref("job_id", job_id)
        .map(|_| ())
        .map_err(ApiError::invalid)
}

async fn one_job(
    State(s): State<Arc<CoreState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<sheratan_proto::data::JobView>, ApiError> {
    job_id(&id)?;
    caller.data(&s).job(&id).await.map(Json).map_err(hub_data)
}

async fn cancel_job(
    State(s): State<Arc<CoreState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<sheratan_proto::data::JobView>, ApiError> {
    job_id(&id)?;
    caller
        .data(&s)
        .cancel(&id)
        .await
        .map(Json)
        .map_err(hub_data)
}

/// Through the hub's admin path, which answers loopback callers only: Core makes that call
/// only for a caller who is on loopback itself, or a remote caller would act with the rights
/// of Core's own loopback address.
async fn requeue_job(
    State(s): State<Arc<CoreState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<sheratan_proto::data::JobView>, ApiError> {
    require_local(&caller, "/api/jobs/{job_id}/requeue")?;
    job_id(&id)?;
    caller
        .data(&s)
        .requeue(&id)
        .await
        .map(Json)
        .map_err(hub_data)
}

/// Finished jobs requeued or deleted in bulk (a selection in the dashboard, or a filter):
/// through the hub's admin path as the caller, one audit line for the lot.
async fn bulk_jobs(
    State(s): State<Arc<CoreState>>,
    caller: Caller,
    Path(action): Path<String>,
    JsonBody(selection): JsonBody<sheratan_proto::data::BulkSelection>,
) -> Result<Json<sheratan_proto::data::BulkOutcome>, ApiError> {
    require_local(&caller, "/api/jobs/bulk/{action}")?;
    let data = caller.data(&s);
    let done = match action.as_str() {
        "requeue" => data.requeue_many(&selection).await,
        "delete" => data.delete_many(&selection).await,
        other => {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no bulk action {other:?}"),
                "use /api/jobs/bulk/requeue or /api/jobs/bulk/delete",
            ));
        }
    };
    done.map(Json).map_err(hub_data)
}

/// The hub's schedules, with next runs and last jobs.
async fn schedules(
    State(s): State<Arc<CoreState>>,
    _: Caller,
) -> Result<Json<sheratan_proto::schedules::ScheduleList>, ApiError> {
    s.data.schedules().await.map(Json).map_err(hub_data)
}

/// A schedule changed (paused, resumed) as the caller: the hub decides whether its role may.
async fn patch_schedule(
    State(s): State<Arc<CoreState>>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(patch): JsonBody<sheratan_proto::schedules::SchedulePatch>,
) -> Result<Json<sheratan_proto::schedules::ScheduleView>, ApiError> {
    sheratan_proto::schedules::validate_name(&name).map_err(ApiError::invalid)?;
    caller
        .data(&s)
        .patch_schedule(&name, &patch)
        .await
        .map(Json)
        .map_err(hub_data)
}

/// A schedule's job submitted now, as the caller.
async fn run_schedule(
    State(s): State<Arc<CoreState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    sheratan_proto::schedules::validate_name(&name).map_err(ApiError::invalid)?;
    let ran = caller
        .data(&s)
        .run_schedule(&name)
        .await
        .map_err(hub_data)?;
    // 202, as the hub answers it: the job is submitted, not run.
    Ok((StatusCode::ACCEPTED, Json(ran)).into_response())
}

/// Through the hub's admin path, like requeue.
async fn accept_attestation(
    State(s): State<Arc<CoreState>>,
    caller: Caller,
    Path(node_id): Path<String>,
) -> Result<Json<sheratan_proto::control::NodeView>, ApiError> {
    require_local(&caller, "/api/nodes/{node_id}/attestation/accept")?;
    sheratan_proto::ids::validate_node_id(&node_id).map_err(ApiError::invalid)?;
    caller
        .data(&s)
        .accept_attestation(&node_id)
        .await
        .map(Json)
        .map_err(hub_data)
}

/// Through the hub's admin path, like requeue: the node comes back if it heartbeats again.
async fn remove_node(
    State(s): State<Arc<CoreState>>,
    caller: Caller,
    Path(node_id): Path<String>,
) -> Result<Json<sheratan_proto::control::NodeView>, ApiError> {
    require_local(&caller, "/api/nodes/{node_id}")?;
    sheratan_proto::ids::validate_node_id(&node_id).map_err(ApiError::invalid)?;
    caller
        .data(&s)
        .remove_node(&node_id)
        .await
        .map(Json)
        .map_err(hub_data)
}

/// `GET /openapi.json`: Core's document (docs/openapi/core.json), for any valid token.
async fn openapi(_: Caller) -> Response {
    edge::static_json(sheratan_openapi::served("core").expect("Core's document exists"))
}

/// Who the caller is to Core, and what it may do (the dashboard shows only what it allows).
async fn whoami(
    State(s): State<Arc<CoreState>>,
    caller: Caller,
) -> Json<sheratan_proto::credentials::Whoami> {
    Json(caller.whoami(&s))
}

/// Credentials, through the hub's admin path (like requeue).
async fn list_tokens(
    State(s): State<Arc<CoreState>>,
    caller: Caller,
) -> Result<Json<sheratan_proto::credentials::CredentialList>, ApiError> {
    require_local(&caller, "/api/tokens")?;
    caller
        .data(&s)
        .credentials()
        .await
        .map(Json)
        .map_err(hub_data)
}

async fn create_token(
    State(s): State<Arc<CoreState>>,
    caller: Caller,
    JsonBody(req): JsonBody<sheratan_proto::credentials::CreateCredential>,
) -> Result<Response, ApiError> {
    require_local(&caller, "/api/tokens")?;
    let created = caller
        .data(&s)
        .create_credential(&req)
        .await
        .map_err(hub_data)?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn revoke_token(
    State(s): State<Arc<CoreState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<sheratan_proto::credentials::CredentialView>, ApiError> {
    require_local(&caller, "/api/tokens/{name}")?;
    sheratan_proto::credentials::validate_credential_name(&name).map_err(ApiError::invalid)?;
    caller
        .data(&s)
        .revoke_credential(&name)
        .await
        .map(Json)
        .map_err(hub_data)
}

/// The loopback rule of the hub's admin path, kept at Core for the routes that reach it (an
/// admin credential, which the hub takes from anywhere, passes).
fn require_local(caller: &Caller, route: &str) -> Result<(), ApiError> {
    if caller.is_admin_credential() {
        return Ok(());
    }
    edge::require_loopback(caller.peer, route).map_err(|err| {
        tracing::warn!(peer = %caller.peer, route, "LOCALHOST_ONLY: an admin action from a remote caller was refused");
        ApiError {
            hint: "admin actions (requeue, accepting an attestation, removing a node) are taken only for callers on the machine Core and the hub run on: run the request there (e.g. over ssh), or use `sheratan jobs requeue` on the hub's machine".into(),
            ..err
        }
    })
}

async fn history_route(State(s): State<Arc<CoreState>>, _: Caller) -> Json<History> {
    Json(History {
        interval_s: s.history.interval.as_secs_f64(),
        points: s.history.points(),
    })
}

async fn relay_sessions(
    State(s): State<Arc<CoreState>>,
    _: Caller,
) -> Result<Json<SessionList>, ApiError> {
    let relay = peer::Peer::relay(&s);
    relay.get("/v1/sessions").await.map(Json)
}

async fn nodes(State(s): State<Arc<CoreState>>, _: Caller) -> Result<Json<NodeList>, ApiError> {
    let nodes = s
        .control
        .nodes(None, None)
        .await
        .map_err(|err| upstream("Hub Control", err))?;
    Ok(Json(NodeList { nodes }))
}

/// The data plane's queues: depth, and whether a node serves each.
async fn queues(
    State(s): State<Arc<CoreState>>,
    _: Caller,
) -> Result<Json<sheratan_proto::data::QueueList>, ApiError> {
    s.data.queues().await.map(Json).map_err(hub_data)
}

/// An admin's change of a queue's settings, passed to the hub's admin path as the caller.
async fn put_queue_settings(
    State(s): State<Arc<CoreState>>,
    caller: Caller,
    Path(queue): Path<String>,
    JsonBody(patch): JsonBody<sheratan_proto::queues::QueueSettingsPatch>,
) -> Result<Json<sheratan_proto::queues::QueueSettings>, ApiError> {
    require_local(&caller, "/api/queues/{queue}/settings")?;
    sheratan_proto::data::validate_queue(&queue).map_err(ApiError::invalid)?;
    caller
        .data(&s)
        .put_queue_settings(&queue, &patch)
        .await
        .map(Json)
        .map_err(hub_data)
}

fn limit(q: &LimitQuery, default: u32, max: u32) -> Result<u32, ApiError> {
    match q.limit {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid(format!(
            "limit must be a number from 1 to {max}"
        ))),
    }
}

async fn auctions(
    State(s): State<Arc<CoreState>>,
    _: Caller,
    QueryParams(q): QueryParams<LimitQuery>,
) -> Result<Json<AuctionList>, ApiError> {
    let limit = limit(&q, 50, 1000)?;
    let broker = peer::Peer::broker(&s);
    broker
        .get(&format!("/v1/auctions?limit={limit}"))
        .await
        .map(Json)
}

async fn one_auction(
    State(s): State<Arc<CoreState>>,
    _: Caller,
    Path(id): Path<String>,
) -> Result<Json<AuctionRecord>, ApiError> {
    // The broker names auctions by whole job ids only.
    sheratan_proto::ids::parse_uuid("job_id", &id).map_err(ApiError::invalid)?;
    let broker = peer::Peer::broker(&s);
    broker.get(&format!("/v1/auctions/{id}")).await.map(Json)
}

async fn alerts(
    State(s): State<Arc<CoreState>>,
    _: Caller,
    QueryParams(q): QueryParams<LimitQuery>,
) -> Result<Json<LogTail<AlertRecord>>, ApiError> {
    log_tail(&s, sheratan_proto::event::ALERTS_FILE, &q).await
}

async fn audit(
    State(s): State<Arc<CoreState>>,
    _: Caller,
    QueryParams(q): QueryParams<LimitQuery>,
) -> Result<Json<LogTail<AuditRecord>>, ApiError> {
    log_tail(&s, sheratan_proto::event::AUDIT_LOG_FILE, &q).await
}

/// The newest lines of one of the hub's logs (lines that are not records are skipped).
async fn log_tail<T: serde::de::DeserializeOwned + Send + 'static>(
    s: &CoreState,
    file: &str,
    q: &LimitQuery,
) -> Result<Json<LogTail<T>>, ApiError> {
    let limit = limit(q, 100, 1000)?;
    let path = s.config.home.join("logs").join(file);
    match tokio::task::spawn_blocking(move || tail::jsonl(&path, limit as usize)).await {
        Ok(Ok(entries)) => Ok(Json(LogTail { entries })),
        Ok(Err(e)) => Err(ApiError::internal(format!("cannot read {file}: {e}"))),
        Err(e) => Err(ApiError::internal(e)),
    }
}

async fn overview_route(State(s): State<Arc<CoreState>>, _: Caller) -> Json<Overview> {
    Json(overview::overview(&s).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_picks_the_queue() {
        assert_eq!(queue_for(Dispatch::Queue, None).unwrap(), "default");
        assert_eq!(
            queue_for(Dispatch::Queue, Some("reports")).unwrap(),
            "reports"
        );
        assert_eq!(queue_for(Dispatch::Auction, None).unwrap(), "auction");
        assert_eq!(
            queue_for(Dispatch::Auction, Some("auction")).unwrap(),
            "auction"
        );
        assert_eq!(queue_for(Dispatch::Llm, None).unwrap(), "llm");
        assert!(queue_for(Dispatch::Llm, Some("default")).is_err());
    }
}
