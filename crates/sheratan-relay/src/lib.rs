//! The WebRelay (docs/API.md, "Hosts, broker, relay, Core"): runs LLM jobs of the `llm` queue by driving a chat web page in
//! Chromium over the DevTools Protocol (one tab per job), or through an OpenAI-compatible
//! server. Job payload `{prompt, system?, backend?, profile?}` → result `{text, backend,
//! elapsed_ms}`. `POST /v1/complete` does the same synchronously.

pub mod cdp;
pub mod openai;
pub mod page;
pub mod profiles;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;
use sheratan_client::pull::{JobRunner, PullConfig};
use sheratan_client::stream::Link;
use sheratan_client::{ControlClient, DataClient, Identity, MeshToken};
use sheratan_proto::ErrorCode;
use sheratan_proto::control::Role;
use sheratan_proto::data::{JobError, LeasedJob, Outcome, ResultRequest};
use sheratan_proto::health::{
    CdpHealth, CdpSource, CdpState, OpenAiHealth, OpenAiState, RelayBackends, RelayHealth,
    SandboxState, TabCount,
};
use sheratan_runtime::edge::{self, ApiError, JsonBody};
use sheratan_runtime::metrics::{Family, Kind, prometheus_response};
use sheratan_runtime::serve::{ServeLimits, local_url_tls};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::cdp::{Browser, BrowserSource};
use crate::openai::{OpenAi, OpenAiConfig};
use crate::page::Tab;
use crate::profiles::Profiles;

/// The queue the relay serves.
pub const LLM_QUEUE: &str = "llm";
/// Longest prompt accepted, in bytes.
pub const MAX_PROMPT_BYTES: usize = 256 * 1024;

pub use sheratan_proto::relay::{Backend, RelayRequest, RelayResult};
use sheratan_proto::relay::{SessionList, SessionView};

/// Why a completion failed, and whether trying again later may help.
#[derive(Debug, Clone)]
pub struct RelayFailure {
    pub code: ErrorCode,
    pub message: String,
    pub retryable: bool,
}

impl RelayFailure {
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::InvalidRequest,
            message: message.into(),
            retryable: false,
        }
    }

    fn unavailable(message: impl Into<String>, retryable: bool) -> Self {
        Self {
            code: ErrorCode::Unavailable,
            message: message.into(),
            retryable,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub node_id: String,
    pub listen: SocketAddr,
    pub control_url: String,
    pub data_url: String,
    /// Sent to the hub, required from callers; follows a rotation under `sheratan up`.
    pub token: MeshToken,
    /// Failure screenshots go to `$home/relay/`.
    pub home: PathBuf,
    pub profiles: Profiles,
    pub default_backend: Backend,
    /// `None`: the CDP backend is unavailable, for the reason in `cdp_unavailable`.
    pub browser: Option<BrowserSource>,
    pub cdp_unavailable: String,
    pub openai: Option<OpenAiConfig>,
    /// Tabs (CDP jobs) at once.
    pub tabs: u32,
    /// Jobs leased at once (both backends).
    pub concurrency: u32,
    pub queue: String,
    /// The job kinds the relay runs (every prompt the same way, whatever the kind): offered
    /// as capabilities, since a job is leased only to a node that offers its kind.
    pub kinds: Vec<String>,
    pub lease_wait: Duration,
    pub grace: Duration,
    pub build_id: String,
    /// The listener's connection caps and deadlines.
    pub serve: ServeLimits,
    /// The listener's TLS (`SHERATAN_TLS`); plain HTTP without.
    pub tls: Option<sheratan_runtime::tls::TlsServer>,
    /// The largest `/v1/complete` body read.
    pub max_body_bytes: usize,
    /// A span per job (`SHERATAN_OTLP_ENDPOINT`; off by default).
    pub tracer: sheratan_trace::Tracer,
}

/// The kinds a relay runs unless `SHERATAN_RELAY_KINDS` says otherwise.
pub const DEFAULT_KINDS: [&str; 2] = ["chat", "llm"];

impl RelayConfig {
    pub fn new(
        listen: SocketAddr,
        control_url: &str,
        data_url: &str,
        token: impl Into<MeshToken>,
        home: PathBuf,
    ) -> Self {
        Self {
            node_id: "relay".into(),
            listen,
            control_url: control_url.into(),
            data_url: data_url.into(),
            token: token.into(),
            home,
            profiles: Profiles::builtin(None),
            default_backend: Backend::Cdp,
            browser: None,
            cdp_unavailable: "no browser configured".into(),
            openai: None,
            tabs: 4,
            concurrency: 8,
            queue: LLM_QUEUE.into(),
            kinds: DEFAULT_KINDS.map(String::from).into(),
            lease_wait: Duration::from_secs(10),
            grace: Duration::from_secs(30),
            build_id: env!("CARGO_PKG_VERSION").into(),
            serve: ServeLimits::default(),
            tls: None,
            max_body_bytes: edge::DEFAULT_MAX_BODY_BYTES,
            tracer: sheratan_trace::Tracer::disabled(),
        }
    }
}

#[derive(Default)]
struct RelayMetrics {
    /// (backend, outcome) → count.
    jobs: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    elapsed_ms_sum: AtomicU64,
    screenshots: AtomicU64,
}

pub(crate) struct RelayState {
    config: RelayConfig,
    browser: Option<Browser>,
    openai: Option<OpenAi>,
    tabs: Semaphore,
    sessions: Mutex<BTreeMap<String, SessionView>>,
    control: ControlClient,
    data: DataClient,
    inflight: Arc<AtomicU32>,
    metrics: RelayMetrics,
    /// What the hub said about callers' tokens lately.
    vouches: sheratan_client::Vouches,
}

/// A relay whose listener is bound.
pub struct Relay {
    listener: TcpListener,
    state: Arc<RelayState>,
}

impl Relay {
    pub async fn bind(config: RelayConfig) -> std::io::Result<Relay> {
        if config.tabs == 0 || config.concurrency == 0 {
            return Err(std::io::Error::other(
                "relay tabs and concurrency must be at least 1",
            ));
        }
        let (control, data) =
            sheratan_client::member_clients(&config.control_url, &config.data_url, &config.token)?;
        let listener = TcpListener::bind(config.listen).await?;
        let mut config = config;
        let demo = format!(
            "{}{}",
            local_url_tls(listener.local_addr()?, config.tls.is_some()),
            profiles::DEMO_PATH
        );
        config.profiles.resolve_demo_page(&demo);
        if config.profiles.generic_is_demo() && config.default_backend == Backend::Cdp {
            tracing::warn!(
                "relay: LLM jobs without a profile are answered by the demo page {demo}, which has no model behind it (their results say \"demo\": true); point SHERATAN_RELAY_GENERIC_URL or SHERATAN_RELAY_PROFILES at a real chat site, or use SHERATAN_OPENAI_BASE_URL"
            );
        }
        Ok(Relay {
            listener,
            state: Arc::new(RelayState {
                browser: config.browser.clone().map(Browser::new),
                openai: config
                    .openai
                    .clone()
                    .map(OpenAi::new)
                    .transpose()
                    .map_err(std::io::Error::other)?,
                tabs: Semaphore::new(config.tabs as usize),
                sessions: Mutex::default(),
                control,
                data,
                inflight: Arc::default(),
                metrics: RelayMetrics::default(),
                vouches: sheratan_client::Vouches::default(),
                config,
            }),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves the HTTP API, heartbeats, and runs `llm` jobs until `shutdown`; then stops a
    /// Chromium it launched.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let state = self.state.clone();
        let member = sheratan_client::Member {
            control: state.control.clone(),
            identity: Identity {
                node_id: state.config.node_id.clone(),
                role: Role::Relay,
                addr: Some(local_url_tls(
                    self.local_addr()?,
                    self.state.config.tls.is_some(),
                )),
                capabilities: capabilities(&state),
                build_id: state.config.build_id.clone(),
            },
            inflight: state.inflight.clone(),
            capacity: state.config.concurrency,
        };
        let pull = sheratan_client::Pull {
            data: state.data.clone(),
            config: PullConfig {
                node_id: state.config.node_id.clone(),
                queues: vec![state.config.queue.clone()],
                concurrency: state.config.concurrency,
                lease_wait: state.config.lease_wait,
                grace: state.config.grace,
                stream: true,
            },
            runner: Arc::new(Runner(state.clone())),
        };
        let serve = sheratan_runtime::serve::serve_with(
            self.listener,
            router(state.clone()),
            state.config.serve,
            Default::default(),
            shutdown.clone(),
            state.config.tls.clone(),
        );
        let served = member.serve_and_pull(serve, pull, shutdown).await;
        if let Some(browser) = &state.browser {
            browser.shutdown().await;
        }
        served
    }
}

/// `llm`, plus each backend this relay can use.
fn capabilities(s: &RelayState) -> Vec<String> {
    let mut caps = vec!["llm".to_owned()];
    caps.extend(s.config.kinds.iter().cloned());
    if s.browser.is_some() {
        caps.push("cdp".into());
    }
    if s.openai.is_some() {
        caps.push("openai".into());
    }
    caps.sort();
    caps.dedup();
    caps
}

/// The relay as the pull loop sees it.
struct Runner(Arc<RelayState>);

impl JobRunner for Runner {
    async fn capabilities(&self) -> Vec<String> {
        capabilities(&self.0)
    }

    async fn run(&self, job: LeasedJob, link: Link) {
        run_job(&self.0, job, link).await;
    }
}

async fn run_job(s: &RelayState, job: LeasedJob, link: Link) {
    let timeout_s = (job.lease_expires_at - OffsetDateTime::now_utc())
        .whole_seconds()
        .clamp(3, 86_400) as u32;
    // The answer streams out as it grows (docs/API.md, "Progress"), the rest of it before
    // the result.
    let sink = sheratan_client::ProgressSink::new();
    let sent = tokio_util::sync::CancellationToken::new();
    let sender =
        sheratan_client::progress::send_loop(&link, &job.job_id, &job.lease_id, &sink, &sent);
    let mut span = s.config.tracer.start_from(
        "sheratan.relay",
        sheratan_trace::Kind::Consumer,
        job.traceparent.as_deref(),
    );
    span.attr("sheratan.job_id", &job.job_id);
    let work = async {
        let request: RelayRequest = serde_json::from_value(job.payload.clone()).map_err(|e| {
            RelayFailure::invalid(format!(
                "the payload must be {{prompt, system?, backend?, profile?}}: {e}"
            ))
        })?;
        complete(s, &request, Some(&job.job_id), &sink).await
    };
    let work = async {
        let outcome = work.await;
        sent.cancel();
        outcome
    };
    let (outcome, ()) = tokio::select! {
        both = futures_util::future::join(work, sender) => both,
        () = sheratan_client::pull::keep_lease(&link, &job.lease_id, timeout_s) => {
            tracing::warn!(job_id = %job.job_id, "relay: lease lost; the job is abandoned here");
            span.fail("the lease was lost: nothing reported");
            return;
        }
    };
    match &outcome {
        Ok(result) => span.attr("sheratan.backend", result.backend.as_str()),
        Err(failure) => span.fail(&failure.message),
    }
    let traceparent = span.traceparent();
    drop(span);
    let report = match outcome {
        Ok(result) => ResultRequest {
            job_id: job.job_id.clone(),
            lease_id: job.lease_id.clone(),
            outcome: Outcome::Success,
            result: serde_json::to_value(&result).unwrap_or(Value::Null),
            error: None,
        },
        Err(failure) => ResultRequest {
            job_id: job.job_id.clone(),
            lease_id: job.lease_id.clone(),
            outcome: Outcome::Failure,
            result: Value::Null,
            error: Some(JobError {
                message: failure.message,
                retryable: failure.retryable,
            }),
        },
    };
    let traceparent = traceparent.as_deref();
    if let Err(err) = sheratan_client::pull::report_with_retries(&link, &report, traceparent).await
    {
        tracing::warn!(job_id = %job.job_id, "relay: result not reported: {err}");
    }
}

/// Runs one completion on the request's backend (or the default).
async fn complete(
    s: &RelayState,
    req: &RelayRequest,
    job_id: Option<&str>,
    progress: &sheratan_client::ProgressSink,
) -> Result<RelayResult, RelayFailure> {
    if req.prompt.trim().is_empty() {
        return Err(RelayFailure::invalid("prompt must not be empty"));
    }
    if req.prompt.len() > MAX_PROMPT_BYTES {
        return Err(RelayFailure::invalid(format!(
            "prompt is over {MAX_PROMPT_BYTES} bytes"
        )));
    }
    let backend = req.backend.unwrap_or(s.config.default_backend);
    let demo = backend == Backend::Cdp
        && s.config
            .profiles
            .get(req.profile.as_deref().unwrap_or("generic"))
            .is_some_and(|p| p.demo);
    let started = Instant::now();
    let answer = match backend {
        Backend::Cdp => complete_cdp(s, req, job_id, progress).await,
        Backend::Openai => complete_openai(s, req, progress).await,
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let outcome = if answer.is_ok() { "success" } else { "failure" };
    *s.metrics
        .jobs
        .lock()
        .expect("metrics lock")
        .entry((backend.as_str(), outcome))
        .or_default() += 1;
    s.metrics
        .elapsed_ms_sum
        .fetch_add(elapsed_ms, Ordering::Relaxed);
    answer.map(|text| RelayResult {
        text,
        backend,
        elapsed_ms,
        demo,
    })
}

async fn complete_openai(
    s: &RelayState,
    req: &RelayRequest,
    progress: &sheratan_client::ProgressSink,
) -> Result<String, RelayFailure> {
    let Some(openai) = &s.openai else {
        return Err(RelayFailure::unavailable(
            openai::OpenAiError::NotConfigured.to_string(),
            false,
        ));
    };
    openai
        .complete(&req.prompt, req.system.as_deref(), progress)
        .await
        .map_err(|e| RelayFailure::unavailable(e.to_string(), e.retryable()))
}

async fn complete_cdp(
    s: &RelayState,
    req: &RelayRequest,
    job_id: Option<&str>,
    progress: &sheratan_client::ProgressSink,
) -> Result<String, RelayFailure> {
    let name = req.profile.as_deref().unwrap_or("generic");
    let Some(profile) = s.config.profiles.get(name) else {
        return Err(RelayFailure::invalid(format!(
            "no profile {name:?}; profiles: {}",
            s.config.profiles.names().join(", ")
        )));
    };
    let Some(browser) = &s.browser else {
        return Err(RelayFailure::unavailable(
            format!(
                "the CDP backend is unavailable: {}",
                s.config.cdp_unavailable
            ),
            true,
        ));
    };
    let _tab_slot = s
        .tabs
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let connection = browser
        .connection()
        .await
        .map_err(|e| RelayFailure::unavailable(format!("CDP: {e}"), true))?;
    let tab = Tab::open(connection)
        .await
        .map_err(|e| RelayFailure::unavailable(format!("CDP: cannot open a tab: {e}"), true))?;
    s.sessions.lock().expect("sessions lock").insert(
        tab.target_id.clone(),
        SessionView {
            target_id: tab.target_id.clone(),
            job_id: job_id.map(str::to_owned),
            profile: name.to_owned(),
            url: profile.url.clone(),
            started_at: OffsetDateTime::now_utc(),
        },
    );
    // Listed until this run ends, however it ends (a cancelled job's run is dropped: the tab
    // closes itself in the background, and leaves the list here).
    let _listed = Listed(&s.sessions, tab.target_id.clone());
    // The system message, if any, goes first in the same prompt: a chat page has one box.
    let prompt = match &req.system {
        Some(system) => format!("{system}\n\n{}", req.prompt),
        None => req.prompt.clone(),
    };
    let answer = page::ask(&tab, profile, &prompt, progress).await;
    if let Err(err) = &answer {
        keep_evidence(s, &tab, job_id, err).await;
    }
    tab.close().await;
    answer.map_err(|e| RelayFailure::unavailable(format!("CDP ({name}): {e}"), e.retryable()))
}

/// An open tab's entry in `/v1/sessions`, removed when dropped.
struct Listed<'a>(&'a Mutex<BTreeMap<String, SessionView>>, String);

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        self.0.lock().expect("sessions lock").remove(&self.1);
    }
}

/// A screenshot and the HTML of a failed tab under `$SHERATAN_HOME/relay/`.
async fn keep_evidence(s: &RelayState, tab: &Tab, job_id: Option<&str>, err: &page::PageError) {
    if matches!(err, page::PageError::Cdp(_)) {
        // The browser is gone: there is nothing to capture.
        return;
    }
    let dir = s.config.home.join("relay");
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let stamp = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    let base = format!("{}-{stamp}", job_id.unwrap_or("complete"));
    if let Some(png) = tab.screenshot().await {
        let _ = std::fs::write(dir.join(format!("{base}.png")), png);
        s.metrics.screenshots.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(html) = tab.html().await {
        let _ = std::fs::write(dir.join(format!("{base}.html")), html);
    }
    tracing::warn!(evidence = %dir.join(&base).display(), "relay: tab failed: {err}");
}

impl edge::Edge for RelayState {
    type Credential = ();

    fn authenticate(&self, headers: &HeaderMap, _: SocketAddr) -> Result<(), ApiError> {
        edge::check_mesh_token(headers, self.config.token.load().accepted().as_deref())
    }

    fn body_limit(&self) -> usize {
        self.config.max_body_bytes
    }

    /// A relay on a credential, or a caller with one, is checked with the hub: a submit or
    /// admin credential (or the mesh token) may ask for completions, a read credential reads.
    fn vouch(
        &self,
        token: &str,
        request: &axum::http::request::Parts,
    ) -> impl std::future::Future<Output = Result<Option<()>, ApiError>> + Send {
        let (method, path) = (request.method.clone(), request.uri.path().to_owned());
        async move {
            let ask = |peer| {
                self.vouches
                    .ask(&self.config.token, &self.data, token, peer)
            };
            let Some(who) = edge::vouched(request, ask).await? else {
                return Ok(None);
            };
            // A submit credential limited to queues needs the relay's (`llm`) among them.
            let submit = who.role == Some(sheratan_proto::credentials::CredentialRole::Submit)
                && (who.queues.is_empty() || who.queues.iter().any(|q| q == "llm"))
                && method == axum::http::Method::POST
                && path == "/v1/complete";
            // The API description is every credential's, as its own identity is at the hub.
            let description = (method == axum::http::Method::GET
                || method == axum::http::Method::HEAD)
                && path == "/openapi.json";
            if !(submit || description || edge::read_role_permits(who.role, &method)) {
                return Err(edge::forbidden_here(&who.credential, &method, &path));
            }
            Ok(Some(()))
        }
    }
}

type Caller = edge::Caller<Arc<RelayState>>;

const DEMO_HTML: &str = include_str!("../assets/demo-chat.html");
const DEMO_JS: &str = include_str!("../assets/demo-chat.js");
const DEMO_CSS: &str = include_str!("../assets/demo-chat.css");

/// A file of the demo chat page (public: it holds no data; its answers are made in the page).
/// The page may run its own script and style only, and may not be framed.
async fn demo_asset(body: &'static str, content_type: &'static str) -> Response {
    use axum::http::{HeaderValue, header};
    use axum::response::IntoResponse;
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'self'; style-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
                ),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        body,
    )
        .into_response()
}

fn router(state: Arc<RelayState>) -> Router {
    let routes = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/complete", post(complete_route))
        .route("/v1/sessions", get(sessions))
        .route("/openapi.json", get(openapi))
        .route(
            profiles::DEMO_PATH,
            get(|| demo_asset(DEMO_HTML, "text/html; charset=utf-8")),
        )
        .route(
            "/demo/chat.js",
            get(|| demo_asset(DEMO_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/demo/chat.css",
            get(|| demo_asset(DEMO_CSS, "text/css; charset=utf-8")),
        );
    edge::with_fallbacks(
        routes,
        "the relay",
        "/health, /metrics, /openapi.json, /v1/complete, /v1/sessions and the demo chat page \
         /demo/chat",
    )
    .with_state(state)
}

async fn health(State(s): State<Arc<RelayState>>) -> Json<RelayHealth> {
    let openai = match &s.openai {
        None => OpenAiHealth {
            state: OpenAiState::NotConfigured,
            detail: Some("set SHERATAN_OPENAI_BASE_URL and SHERATAN_OPENAI_MODEL".into()),
            base_url: None,
            model: None,
        },
        Some(o) => OpenAiHealth {
            state: OpenAiState::Configured,
            detail: None,
            base_url: Some(sheratan_proto::redact::url(&o.config().base_url)),
            model: Some(o.config().model.clone()),
        },
    };
    Json(RelayHealth {
        status: "ok".into(),
        role: "relay".into(),
        node_id: s.config.node_id.clone(),
        default_backend: s.config.default_backend,
        backends: RelayBackends {
            cdp: cdp_health(&s),
            openai,
        },
        profiles: s.config.profiles.names(),
        tabs: TabCount {
            open: s.sessions.lock().expect("sessions lock").len(),
            limit: s.config.tabs,
        },
        inflight: s.inflight.load(Ordering::Relaxed),
        auth: s.config.token.auth_mode(),
    })
}

/// The CDP backend's state: unavailable, idle (it connects at the next job) or connected.
fn cdp_health(s: &RelayState) -> CdpHealth {
    let Some(browser) = &s.browser else {
        return CdpHealth {
            state: CdpState::Unavailable,
            detail: Some(s.config.cdp_unavailable.clone()),
            version: None,
            source: None,
            launches: None,
            pid: None,
        };
    };
    let source = match &browser.source {
        BrowserSource::Url(url) => CdpSource {
            url: Some(sheratan_proto::redact::url(url)),
            launch: None,
            transport: None,
            sandbox: None,
        },
        BrowserSource::Launch { chromium, .. } => CdpSource {
            url: None,
            launch: Some(chromium.display().to_string()),
            transport: Some("pipe".into()),
            sandbox: Some(match browser.sandbox() {
                cdp::Sandbox::On => SandboxState {
                    on: true,
                    why: None,
                },
                cdp::Sandbox::Off(why) => SandboxState {
                    on: false,
                    why: Some(why.clone()),
                },
            }),
        },
    };
    let connected = browser.connected();
    CdpHealth {
        state: if connected.is_some() {
            CdpState::Connected
        } else {
            CdpState::Idle
        },
        detail: None,
        version: connected.map(|c| c.version.clone()),
        source: Some(source),
        launches: Some(browser.launches()),
        pid: browser.child_pid(),
    }
}

async fn complete_route(
    State(s): State<Arc<RelayState>>,
    _: Caller,
    JsonBody(req): JsonBody<RelayRequest>,
) -> Result<Json<RelayResult>, ApiError> {
    complete(&s, &req, None, &sheratan_client::ProgressSink::disabled())
        .await
        .map(Json)
        .map_err(|failure| {
            ApiError::new(
                failure.code,
                failure.message,
                if failure.retryable {
                    "try again later"
                } else {
                    ""
                },
            )
        })
}

async fn sessions(State(s): State<Arc<RelayState>>, _: Caller) -> Json<SessionList> {
    let sessions: Vec<SessionView> = s
        .sessions
        .lock()
        .expect("sessions lock")
        .values()
        .cloned()
        .collect();
    Json(SessionList { sessions })
}

async fn openapi(_: Caller) -> Response {
    edge::static_json(sheratan_openapi::served("relay").expect("the relay's document exists"))
}

async fn metrics(State(s): State<Arc<RelayState>>, _: Caller) -> Response {
    let jobs = s.metrics.jobs.lock().expect("metrics lock").iter().fold(
        Family::new(
            "sheratan_relay_jobs_total",
            "Completions, by backend and outcome.",
            Kind::Counter,
        ),
        |f, ((backend, outcome), n)| {
            let labels = vec![
                ("backend", backend.to_string()),
                ("outcome", outcome.to_string()),
            ];
            f.value(labels, *n as f64)
        },
    );
    let one =
        |name, help, kind, value: u64| Family::new(name, help, kind).value(vec![], value as f64);
    let tabs = s.sessions.lock().expect("sessions lock").len() as u64;
    let browser = s.browser.as_ref();
    let spans = s.config.tracer.counts();
    let families = [
        jobs,
        Family::trace_spans(spans.exported(), spans.dropped()),
        one(
            "sheratan_relay_tabs_open",
            "Tabs open now.",
            Kind::Gauge,
            tabs,
        ),
        one(
            "sheratan_relay_inflight",
            "Jobs running now.",
            Kind::Gauge,
            u64::from(s.inflight.load(Ordering::Relaxed)),
        ),
        one(
            "sheratan_relay_elapsed_ms_total",
            "Milliseconds spent in completions.",
            Kind::Counter,
            s.metrics.elapsed_ms_sum.load(Ordering::Relaxed),
        ),
        one(
            "sheratan_relay_screenshots_total",
            "Failure screenshots kept.",
            Kind::Counter,
            s.metrics.screenshots.load(Ordering::Relaxed),
        ),
        one(
            "sheratan_relay_browser_launches_total",
            "Chromium launches by this relay.",
            Kind::Counter,
            browser.map_or(0, Browser::launches),
        ),
        one(
            "sheratan_relay_browser_connected",
            "1 while connected to the browser.",
            Kind::Gauge,
            u64::from(browser.is_some_and(|b| b.connected().is_some())),
        ),
    ];
    prometheus_response(&families)
}
