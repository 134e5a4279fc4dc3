//! The broker: leases jobs of the `auction` queue and auctions each among the ONLINE hosts.
//!
//! One auction round: every ONLINE host that has the job's capabilities is asked for a bid in
//! parallel under `bid_deadline`; the lowest price wins (ties: lower eta, then node id); the
//! job is forwarded to the winner while the lease is extended in the background. A winner that
//! fails (connection lost, error status, timeout, malformed answer) is excluded and the job
//! re-auctioned, up to `max_rounds`. No accepting bid → the job is reported as a retryable
//! failure, so the hub retries it later with backoff. Every round is saved as an
//! [`AuctionRecord`] in the auction store, so the history survives a broker restart.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use sheratan_client::pull::{JobRunner, PullConfig};
use sheratan_client::{ControlClient, DataClient, MeshToken, RetryPolicy};
use sheratan_proto::ErrorCode;
use sheratan_proto::auction::{
    AuctionList, AuctionRecord, BidRecord, BidRequest, BidResponse, ExecuteRequest,
    ExecuteResponse, RoundRecord,
};
use sheratan_proto::control::{NodeStatus, NodeView, Role};
use sheratan_proto::data::{JobError, LeasedJob, Outcome, ResultRequest};
use sheratan_runtime::edge::{self, ApiError, QueryParams};
use sheratan_runtime::serve::{ServeLimits, local_url};
use sheratan_store::AuctionStore;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Identity;

/// The queue the broker serves unless told otherwise.
pub const AUCTION_QUEUE: &str = "auction";

#[derive(Clone)]
pub struct BrokerConfig {
    pub node_id: String,
    pub listen: SocketAddr,
    pub control_url: String,
    pub data_url: String,
    /// Sent to the hub and the hosts, required from callers; follows a rotation under `up`.
    pub token: MeshToken,
    pub queue: String,
    /// Auctions (and executions) at once.
    pub concurrency: u32,
    /// How long hosts have to answer a bid request.
    pub bid_deadline: Duration,
    pub max_rounds: u32,
    /// How long the list of ONLINE hosts is reused before asking the hub again.
    pub host_cache_ttl: Duration,
    /// How long a lease call waits for a job.
    pub lease_wait: Duration,
    /// At shutdown, how long running auctions may take to finish.
    pub grace: Duration,
    pub build_id: String,
    pub store: Arc<dyn AuctionStore>,
    /// The listener's connection caps and deadlines.
    pub serve: ServeLimits,
}

impl BrokerConfig {
    pub fn new(
        node_id: &str,
        listen: SocketAddr,
        control_url: &str,
        data_url: &str,
        token: impl Into<MeshToken>,
        store: Arc<dyn AuctionStore>,
    ) -> Self {
        Self {
            node_id: node_id.into(),
            listen,
            control_url: control_url.into(),
            data_url: data_url.into(),
            token: token.into(),
            queue: AUCTION_QUEUE.into(),
            concurrency: 16,
            bid_deadline: Duration::from_millis(300),
            max_rounds: 3,
            host_cache_ttl: Duration::from_secs(1),
            lease_wait: Duration::from_secs(10),
            grace: Duration::from_secs(30),
            build_id: env!("CARGO_PKG_VERSION").into(),
            store,
            serve: ServeLimits::default(),
        }
    }
}

/// A host that can be asked for a bid.
#[derive(Debug, Clone, PartialEq)]
pub struct Bidder {
    pub node_id: String,
    /// Base URL, e.g. `http://127.0.0.1:8081`.
    pub url: String,
    pub capabilities: Vec<String>,
}

impl Bidder {
    fn from_node(node: &NodeView) -> Option<Bidder> {
        let url = node.addr.as_deref()?.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return None;
        }
        Some(Bidder {
            node_id: node.node_id.clone(),
            url: url.to_owned(),
            capabilities: node.capabilities.clone(),
        })
    }

    fn can_run(&self, required: &[String]) -> bool {
        required.iter().all(|c| self.capabilities.contains(c))
    }
}

/// Why a forwarded job did not come back from its host.
#[derive(Debug, thiserror::Error)]
pub enum HostFailure {
    #[error("host unreachable or connection lost: {0}")]
    Transport(String),
    #[error("host answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("host answered nonsense: {0}")]
    Malformed(String),
    #[error("no answer within the job's deadline")]
    Timeout,
}

/// The auction mechanics, without the hub: asking for bids, awarding, forwarding.
#[derive(Clone)]
pub struct Auctioneer {
    http: reqwest::Client,
    token: MeshToken,
    bid_deadline: Duration,
}

impl Auctioneer {
    pub fn new(token: impl Into<MeshToken>, bid_deadline: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .expect("a plain HTTP client always builds");
        Self {
            http,
            token: token.into(),
            bid_deadline,
        }
    }

    fn post(&self, url: String) -> reqwest::RequestBuilder {
        let r = self.http.post(url);
        match self.token.send() {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Asks every host for a bid at once; a host that does not answer within the deadline,
    /// or answers badly, is recorded as declining with the reason. In `hosts` order.
    pub async fn collect_bids(&self, hosts: &[Bidder], req: &BidRequest) -> Vec<BidRecord> {
        // One body for all hosts; the asks run concurrently within this task (no task per
        // host: with tens of hosts, spawning costs more than the asks themselves).
        let body = bytes::Bytes::from(serde_json::to_vec(req).unwrap_or_default());
        let deadline = self.bid_deadline;
        let asks = hosts.iter().map(|host| {
            let call = self
                .post(format!("{}/v1/bid", host.url))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send();
            async move {
                let answer = tokio::time::timeout(deadline, async {
                    let response = call.await.map_err(|e| format!("bid failed: {e}"))?;
                    if !response.status().is_success() {
                        return Err(format!("bid refused with {}", response.status().as_u16()));
                    }
                    response
                        .json::<BidResponse>()
                        .await
                        .map_err(|e| format!("malformed bid: {e}"))
                })
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {} ms", deadline.as_millis())));
                let node_id = host.node_id.clone();
                match answer {
                    Ok(bid) if bid.accept && !(bid.price.is_finite() && bid.price >= 0.0) => {
                        declined(node_id, format!("invalid price {}", bid.price))
                    }
                    Ok(bid) => BidRecord {
                        // The registry's node id, not the one the answer claims.
                        node_id,
                        accept: bid.accept,
                        price: if bid.accept { bid.price } else { 0.0 },
                        eta_ms: bid.eta_ms,
                        reason: truncate(bid.reason, 200),
                    },
                    Err(reason) => declined(node_id, reason),
                }
            }
        });
        futures_util::future::join_all(asks).await
    }

    /// The winning bid: the lowest price; ties go to the lower eta, then the lower node id.
    pub fn award(bids: &[BidRecord]) -> Option<&BidRecord> {
        bids.iter().filter(|b| b.accept).min_by(|a, b| {
            a.price
                .total_cmp(&b.price)
                .then(a.eta_ms.cmp(&b.eta_ms))
                .then_with(|| a.node_id.cmp(&b.node_id))
        })
    }

    /// Forwards the job to a host and waits for its outcome (up to the job's deadline plus a
    /// little for the answer to travel).
    pub async fn execute(
        &self,
        host: &Bidder,
        req: &ExecuteRequest,
    ) -> Result<ExecuteResponse, HostFailure> {
        let limit = Duration::from_millis(req.deadline_ms) + Duration::from_secs(5);
        let call = async {
            let response = self
                .post(format!("{}/v1/execute", host.url))
                .json(req)
                .send()
                .await
                .map_err(|e| HostFailure::Transport(e.to_string()))?;
            let status = response.status();
            let body = response
                .bytes()
                .await
                .map_err(|e| HostFailure::Transport(e.to_string()))?;
            if !status.is_success() {
                return Err(HostFailure::Status {
                    status: status.as_u16(),
                    body: truncate(String::from_utf8_lossy(&body).into_owned(), 300),
                });
            }
            let answer: ExecuteResponse =
                serde_json::from_slice(&body).map_err(|e| HostFailure::Malformed(e.to_string()))?;
            if answer.job_id != req.job_id {
                return Err(HostFailure::Malformed(format!(
                    "answer is for job {}, not {}",
                    answer.job_id, req.job_id
                )));
            }
            Ok(answer)
        };
        tokio::time::timeout(limit, call)
            .await
            .unwrap_or(Err(HostFailure::Timeout))
    }
}

fn declined(node_id: String, reason: String) -> BidRecord {
    BidRecord {
        node_id,
        accept: false,
        price: 0.0,
        eta_ms: 0,
        reason,
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Upper bounds (ms) of the bid-latency histogram.
const LATENCY_BUCKETS_MS: [f64; 12] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
];

#[derive(Default)]
struct BrokerMetrics {
    /// By final outcome of a job's auction on one attempt.
    auctions: Mutex<BTreeMap<&'static str, u64>>,
    rounds: AtomicU64,
    /// By answer: accept, decline, no_answer.
    bids: Mutex<BTreeMap<&'static str, u64>>,
    wins: Mutex<BTreeMap<String, u64>>,
    bid_latency_buckets: Mutex<[u64; LATENCY_BUCKETS_MS.len()]>,
    bid_latency_sum_ms: Mutex<f64>,
    bid_latency_count: AtomicU64,
}

impl BrokerMetrics {
    fn auction(&self, outcome: &'static str) {
        *self
            .auctions
            .lock()
            .expect("metrics lock")
            .entry(outcome)
            .or_default() += 1;
    }

    fn round(&self, bids: &[BidRecord], winner: Option<&str>, bid_ms: f64) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        {
            let mut counts = self.bids.lock().expect("metrics lock");
            for b in bids {
                let answer = if b.accept {
                    "accept"
                } else if b.reason.starts_with("no answer") || b.reason.starts_with("bid failed") {
                    "no_answer"
                } else {
                    "decline"
                };
                *counts.entry(answer).or_default() += 1;
            }
        }
        if let Some(w) = winner {
            *self
                .wins
                .lock()
                .expect("metrics lock")
                .entry(w.to_owned())
                .or_default() += 1;
        }
        let mut buckets = self.bid_latency_buckets.lock().expect("metrics lock");
        for (i, le) in LATENCY_BUCKETS_MS.iter().enumerate() {
            if bid_ms <= *le {
                buckets[i] += 1;
            }
        }
        *self.bid_latency_sum_ms.lock().expect("metrics lock") += bid_ms;
        self.bid_latency_count.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) struct BrokerState {
    config: BrokerConfig,
    auctioneer: Auctioneer,
    control: ControlClient,
    data: DataClient,
    hosts: Mutex<(Option<Instant>, Arc<Vec<Bidder>>)>,
    inflight: Arc<AtomicU32>,
    metrics: BrokerMetrics,
}

/// A broker whose listener is bound.
pub struct Broker {
    listener: TcpListener,
    state: Arc<BrokerState>,
}

impl Broker {
    pub async fn bind(config: BrokerConfig) -> std::io::Result<Broker> {
        if config.concurrency == 0 || config.max_rounds == 0 {
            return Err(std::io::Error::other(
                "broker concurrency and max rounds must be at least 1",
            ));
        }
        let control = ControlClient::new(&config.control_url, config.token.clone())
            .map_err(std::io::Error::other)?;
        let data = DataClient::new(&config.data_url, config.token.clone())
            .map_err(std::io::Error::other)?
            .with_retry(RetryPolicy::none());
        let listener = TcpListener::bind(config.listen).await?;
        Ok(Broker {
            listener,
            state: Arc::new(BrokerState {
                auctioneer: Auctioneer::new(config.token.clone(), config.bid_deadline),
                config,
                control,
                data,
                hosts: Mutex::new((None, Arc::new(Vec::new()))),
                inflight: Arc::new(AtomicU32::new(0)),
                metrics: BrokerMetrics::default(),
            }),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `/v1/auctions`, heartbeats, and auctions leased jobs until `shutdown`; then
    /// stops leasing and lets running auctions finish within the grace period.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let state = self.state.clone();
        let member = sheratan_client::Member {
            control: state.control.clone(),
            identity: Identity {
                node_id: state.config.node_id.clone(),
                role: Role::Broker,
                addr: Some(local_url(self.local_addr()?)),
                capabilities: Vec::new(),
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
            },
            runner: Arc::new(Runner(state.clone())),
        };
        let limits = state.config.serve;
        let serve = sheratan_runtime::serve::serve(
            self.listener,
            router(state),
            limits,
            Default::default(),
            shutdown.clone(),
        );
        member.serve_and_pull(serve, pull, shutdown).await
    }
}

/// ONLINE hosts with a push address, from the hub's registry; reused for `host_cache_ttl`.
/// When the hub cannot be asked, the last list is used.
async fn online_hosts(s: &BrokerState) -> Arc<Vec<Bidder>> {
    {
        let cached = s.hosts.lock().expect("host cache lock");
        if let Some(at) = cached.0
            && at.elapsed() < s.config.host_cache_ttl
        {
            return cached.1.clone();
        }
    }
    let fresh = match s
        .control
        .nodes(Some(Role::Host), Some(NodeStatus::Online))
        .await
    {
        Ok(nodes) => {
            let mut hosts: Vec<Bidder> = nodes.iter().filter_map(Bidder::from_node).collect();
            hosts.sort_by(|a, b| a.node_id.cmp(&b.node_id));
            Some(Arc::new(hosts))
        }
        Err(err) => {
            tracing::warn!("broker: cannot list hosts: {err}");
            None
        }
    };
    let mut cached = s.hosts.lock().expect("host cache lock");
    cached.0 = Some(Instant::now());
    if let Some(hosts) = fresh {
        cached.1 = hosts;
    }
    cached.1.clone()
}

/// The broker as the pull loop sees it.
struct Runner(Arc<BrokerState>);

impl JobRunner for Runner {
    /// The union of the ONLINE hosts' capabilities: the broker never takes a job no host could
    /// run.
    async fn capabilities(&self) -> Vec<String> {
        let hosts = online_hosts(&self.0).await;
        let all: BTreeSet<String> = hosts
            .iter()
            .flat_map(|h| h.capabilities.iter().cloned())
            .collect();
        all.into_iter().collect()
    }

    async fn run(&self, job: LeasedJob) {
        run_job(&self.0, job).await;
    }
}

/// How one job's auction ended on this attempt.
enum Ending {
    Done(ExecuteResponse),
    NoBids(String),
    HostsFailed(String),
    LeaseLost,
}

async fn run_job(s: &BrokerState, job: LeasedJob) {
    // The lease does not carry the job's requirements; the job view does.
    let (required, timeout_s) = match s.data.job(&job.job_id).await {
        Ok(view) => (view.required_capabilities, view.timeout_s),
        Err(err) => {
            tracing::warn!(job_id = %job.job_id, "broker: cannot read the job ({err}); auctioning it without requirements");
            let left = (job.lease_expires_at - OffsetDateTime::now_utc()).whole_seconds();
            (Vec::new(), left.clamp(1, 86_400) as u32)
        }
    };
    let mut record = match job.attempt {
        1 => None,
        _ => s.config.store.auction(&job.job_id).await.ok().flatten(),
    }
    .unwrap_or_else(|| AuctionRecord {
        job_id: job.job_id.clone(),
        winner: None,
        rounds: Vec::new(),
    });

    // The keeper tells the auction when the lease is lost, so the round is recorded as such.
    let lost = CancellationToken::new();
    let keeper = async {
        sheratan_client::pull::keep_lease(&s.data, &job.lease_id, timeout_s).await;
        lost.cancel();
        std::future::pending::<()>().await
    };
    let ending = tokio::select! {
        ending = auction_rounds(s, &job, &required, timeout_s, &mut record, &lost) => ending,
        () = keeper => unreachable!("the keeper never ends"),
    };

    let report = match ending {
        Ending::Done(answer) => {
            s.metrics.auction(match answer.outcome {
                Outcome::Success => "completed",
                Outcome::Failure => "failed",
            });
            Some(ResultRequest {
                job_id: job.job_id.clone(),
                lease_id: job.lease_id.clone(),
                outcome: answer.outcome,
                result: answer.result,
                error: answer.error,
            })
        }
        Ending::NoBids(message) | Ending::HostsFailed(message) => {
            s.metrics.auction(if message.starts_with("no host") {
                "no_bids"
            } else {
                "hosts_failed"
            });
            Some(ResultRequest {
                job_id: job.job_id.clone(),
                lease_id: job.lease_id.clone(),
                outcome: Outcome::Failure,
                result: serde_json::Value::Null,
                error: Some(JobError {
                    message,
                    retryable: true,
                }),
            })
        }
        Ending::LeaseLost => {
            s.metrics.auction("lease_lost");
            None
        }
    };
    if let Some(report) = report
        && let Err(err) = sheratan_client::pull::report_with_retries(&s.data, &report).await
    {
        tracing::warn!(job_id = %job.job_id, "broker: result not reported: {err}");
    }
}

async fn auction_rounds(
    s: &BrokerState,
    job: &LeasedJob,
    required: &[String],
    timeout_s: u32,
    record: &mut AuctionRecord,
    lost: &CancellationToken,
) -> Ending {
    let mut excluded: BTreeSet<String> = BTreeSet::new();
    let mut failures: Vec<String> = Vec::new();
    let payload_bytes = serde_json::to_vec(&job.payload)
        .map(|v| v.len() as u64)
        .unwrap_or(0);
    let first_round = record.rounds.last().map_or(1, |r| r.round + 1);
    for round in first_round..first_round + s.config.max_rounds {
        let started_at = OffsetDateTime::now_utc();
        let started = Instant::now();
        let hosts: Vec<Bidder> = online_hosts(s)
            .await
            .iter()
            .filter(|h| !excluded.contains(&h.node_id) && h.can_run(required))
            .cloned()
            .collect();
        let ask = BidRequest {
            job_id: job.job_id.clone(),
            kind: job.kind.clone(),
            required_capabilities: required.to_vec(),
            payload_bytes,
        };
        let bids = s.auctioneer.collect_bids(&hosts, &ask).await;
        let bid_ms = started.elapsed().as_secs_f64() * 1000.0;
        let winner = Auctioneer::award(&bids).map(|b| b.node_id.clone());
        s.metrics.round(&bids, winner.as_deref(), bid_ms);
        let mut entry = RoundRecord {
            round,
            bids,
            winner: winner.clone(),
            outcome: String::new(),
            started_at,
            elapsed_ms: 0,
            bid_ms,
        };
        let Some(winner) = winner else {
            entry.outcome = "no_bids".into();
            entry.elapsed_ms = started.elapsed().as_millis() as u64;
            let message = if hosts.is_empty() {
                format!(
                    "no host bid: no ONLINE host with capabilities {required:?} (round {round})"
                )
            } else {
                let reasons: Vec<String> = entry
                    .bids
                    .iter()
                    .map(|b| format!("{}: {}", b.node_id, b.reason))
                    .collect();
                format!("no host bid (round {round}): {}", reasons.join("; "))
            };
            record.rounds.push(entry);
            save(s, record).await;
            return if failures.is_empty() {
                Ending::NoBids(message)
            } else {
                Ending::HostsFailed(format!("{}; then {message}", failures.join("; ")))
            };
        };
        record.winner = Some(winner.clone());
        save(s, record).await;
        let host = hosts
            .iter()
            .find(|h| h.node_id == winner)
            .expect("the winner is one of the hosts asked");
        let forward = ExecuteRequest {
            job_id: job.job_id.clone(),
            kind: job.kind.clone(),
            payload: job.payload.clone(),
            deadline_ms: u64::from(timeout_s) * 1000,
        };
        let executed = tokio::select! {
            r = s.auctioneer.execute(host, &forward) => Some(r),
            () = lost.cancelled() => None,
        };
        entry.elapsed_ms = started.elapsed().as_millis() as u64;
        match executed {
            None => {
                entry.outcome = "lease_lost".into();
                record.rounds.push(entry);
                save(s, record).await;
                return Ending::LeaseLost;
            }
            Some(Ok(answer)) => {
                entry.outcome = match answer.outcome {
                    Outcome::Success => "completed".into(),
                    Outcome::Failure => "failed".into(),
                };
                record.rounds.push(entry);
                save(s, record).await;
                return Ending::Done(answer);
            }
            Some(Err(failure)) => {
                tracing::warn!(job_id = %job.job_id, host = %winner, "broker: host failed, re-auctioning: {failure}");
                entry.outcome = "host_failed".into();
                record.rounds.push(entry);
                record.winner = None;
                save(s, record).await;
                failures.push(format!("{winner}: {failure}"));
                excluded.insert(winner);
            }
        }
    }
    Ending::HostsFailed(format!(
        "hosts failed in {} rounds: {}",
        s.config.max_rounds,
        failures.join("; ")
    ))
}

async fn save(s: &BrokerState, record: &AuctionRecord) {
    if let Err(err) = s.config.store.save_auction(record).await {
        tracing::warn!(job_id = %record.job_id, "broker: auction record not saved: {err}");
    }
}

impl edge::Edge for BrokerState {
    type Credential = ();

    fn authenticate(&self, headers: &HeaderMap, _: SocketAddr) -> Result<(), ApiError> {
        edge::check_mesh_token(headers, self.config.token.load().accepted().as_deref())
    }

    /// The broker reads no bodies.
    fn body_limit(&self) -> usize {
        0
    }
}

type Caller = edge::Caller<Arc<BrokerState>>;

fn router(state: Arc<BrokerState>) -> Router {
    let routes = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/auctions", get(list_auctions))
        .route("/v1/auctions/{job_id}", get(one_auction));
    edge::with_fallbacks(
        routes,
        "the broker",
        "/health, /metrics, /v1/auctions and /v1/auctions/{job_id}",
    )
    .with_state(state)
}

async fn health(State(s): State<Arc<BrokerState>>) -> Json<sheratan_proto::health::BrokerHealth> {
    Json(sheratan_proto::health::BrokerHealth {
        status: "ok".into(),
        role: "broker".into(),
        node_id: s.config.node_id.clone(),
        queue: s.config.queue.clone(),
        inflight: s.inflight.load(Ordering::Relaxed),
        concurrency: s.config.concurrency,
        auth: s.config.token.auth_mode(),
    })
}

fn store_failed(err: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        format!("the auction store failed: {err}"),
        "check the broker's log",
    )
}

async fn list_auctions(
    State(s): State<Arc<BrokerState>>,
    _: Caller,
    QueryParams(q): QueryParams<sheratan_proto::core_api::LimitQuery>,
) -> Result<Json<AuctionList>, ApiError> {
    let limit = match q.limit {
        None => 50,
        Some(n) if (1..=1000).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::invalid("limit must be a number from 1 to 1000"));
        }
    };
    let auctions = s.config.store.auctions(limit).await.map_err(store_failed)?;
    Ok(Json(AuctionList { auctions }))
}

async fn one_auction(
    State(s): State<Arc<BrokerState>>,
    _: Caller,
    Path(job_id): Path<String>,
) -> Result<Json<AuctionRecord>, ApiError> {
    sheratan_proto::ids::parse_uuid("job_id", &job_id).map_err(ApiError::invalid)?;
    match s
        .config
        .store
        .auction(&job_id)
        .await
        .map_err(store_failed)?
    {
        Some(record) => Ok(Json(record)),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no auction for job {job_id}"),
            "only jobs of the auction queue that this broker leased have one",
        )),
    }
}

async fn metrics(State(s): State<Arc<BrokerState>>, _: Caller) -> Response {
    let m = &s.metrics;
    let counted = |map: &Mutex<BTreeMap<&'static str, u64>>, label: &str| -> Vec<(String, f64)> {
        map.lock()
            .expect("metrics lock")
            .iter()
            .map(|(k, v)| (format!("{label}=\"{k}\""), *v as f64))
            .collect()
    };
    let wins: Vec<(String, f64)> = m
        .wins
        .lock()
        .expect("metrics lock")
        .iter()
        .map(|(k, v)| {
            (
                format!("node_id=\"{}\"", k.replace(['\\', '"', '\n'], "_")),
                *v as f64,
            )
        })
        .collect();
    let count = m.bid_latency_count.load(Ordering::Relaxed) as f64;
    let mut latency: Vec<(String, f64)> = {
        let buckets = m.bid_latency_buckets.lock().expect("metrics lock");
        LATENCY_BUCKETS_MS
            .iter()
            .zip(buckets.iter())
            .map(|(le, n)| (format!("le=\"{}\"", le / 1000.0), *n as f64))
            .collect()
    };
    latency.push(("le=\"+Inf\"".into(), count));
    let sum_s = *m.bid_latency_sum_ms.lock().expect("metrics lock") / 1000.0;
    let mut text = crate::metrics::render(&[
        (
            "sheratan_broker_auctions_total",
            "Auctions (one per job attempt), by outcome.",
            "counter",
            counted(&m.auctions, "outcome"),
        ),
        (
            "sheratan_broker_rounds_total",
            "Auction rounds.",
            "counter",
            vec![(String::new(), m.rounds.load(Ordering::Relaxed) as f64)],
        ),
        (
            "sheratan_broker_bids_total",
            "Bids asked for, by answer.",
            "counter",
            counted(&m.bids, "answer"),
        ),
        (
            "sheratan_broker_wins_total",
            "Auctions won, by host.",
            "counter",
            wins,
        ),
        (
            "sheratan_broker_inflight",
            "Auctions running now.",
            "gauge",
            vec![(String::new(), f64::from(s.inflight.load(Ordering::Relaxed)))],
        ),
    ]);
    text.push_str(&crate::metrics::histogram(
        "sheratan_broker_bid_round_seconds",
        "Time from the first bid request to the award: the latency an auction adds.",
        &latency,
        sum_s,
        count,
    ));
    text.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bid(node: &str, accept: bool, price: f64, eta_ms: u64) -> BidRecord {
        BidRecord {
            node_id: node.into(),
            accept,
            price,
            eta_ms,
            reason: String::new(),
        }
    }

    #[test]
    fn award_takes_the_lowest_price_then_eta_then_node_id() {
        let winner = |bids: &[BidRecord]| Auctioneer::award(bids).map(|b| b.node_id.clone());
        assert_eq!(winner(&[]), None);
        assert_eq!(
            winner(&[bid("a", false, 0.1, 1)]),
            None,
            "a declined bid never wins"
        );
        assert_eq!(
            winner(&[
                bid("a", true, 2.0, 1),
                bid("b", true, 1.0, 900),
                bid("c", false, 0.0, 0)
            ]),
            Some("b".into())
        );
        assert_eq!(
            winner(&[bid("a", true, 1.0, 300), bid("b", true, 1.0, 100)]),
            Some("b".into()),
            "equal price: the lower eta"
        );
        assert_eq!(
            winner(&[bid("z", true, 1.0, 100), bid("m", true, 1.0, 100)]),
            Some("m".into()),
            "equal price and eta: the lower node id"
        );
    }

    #[test]
    fn a_host_needs_every_required_capability() {
        let host = Bidder {
            node_id: "h".into(),
            url: "http://127.0.0.1:1".into(),
            capabilities: vec!["echo".into(), "gpu".into()],
        };
        assert!(host.can_run(&[]));
        assert!(host.can_run(&["gpu".into()]));
        assert!(!host.can_run(&["gpu".into(), "tpu".into()]));
    }
}
