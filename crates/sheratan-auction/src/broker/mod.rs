//! The broker: leases jobs of the `auction` queue and auctions each among the ONLINE hosts.
//!
//! One auction round: every ONLINE host that has the job's capabilities is asked for a bid in
//! parallel under `bid_deadline`; the lowest price wins (ties: lower eta, then node id); the
//! job is forwarded to the winner while the lease is extended in the background. A winner that
//! fails (connection lost, error status, timeout, malformed answer) is excluded and the job
//! re-auctioned, up to `max_rounds`. No accepting bid → the job is reported as a retryable
//! failure, so the hub retries it later with backoff. Every round is saved as an
//! [`AuctionRecord`] in the auction store, so the history survives a broker restart.

mod auctioneer;
mod http;
mod metrics;
mod rounds;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sheratan_client::pull::PullConfig;
use sheratan_client::{ControlClient, DataClient, MeshToken};
use sheratan_proto::control::Role;
use sheratan_runtime::serve::{ServeLimits, local_url_tls};
use sheratan_store::AuctionStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auctioneer::{Auctioneer, Bidder, HostFailure};

use crate::Identity;
use metrics::BrokerMetrics;

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
    /// The listener's TLS (`SHERATAN_TLS`); plain HTTP without.
    pub tls: Option<sheratan_runtime::tls::TlsServer>,
    /// A span per auction and per round (`SHERATAN_OTLP_ENDPOINT`; off by default).
    pub tracer: sheratan_trace::Tracer,
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
            tls: None,
            tracer: sheratan_trace::Tracer::disabled(),
        }
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
    /// What the hub said about callers' tokens lately.
    vouches: sheratan_client::Vouches,
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
        let (control, data) =
            sheratan_client::member_clients(&config.control_url, &config.data_url, &config.token)?;
        let listener = TcpListener::bind(config.listen).await?;
        Ok(Broker {
            listener,
            state: Arc::new(BrokerState {
                auctioneer: Auctioneer::new(config.token.clone(), config.bid_deadline)
                    .map_err(std::io::Error::other)?,
                config,
                control,
                data,
                hosts: Mutex::new((None, Arc::new(Vec::new()))),
                inflight: Arc::new(AtomicU32::new(0)),
                metrics: BrokerMetrics::default(),
                vouches: sheratan_client::Vouches::default(),
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
                addr: Some(local_url_tls(
                    self.local_addr()?,
                    self.state.config.tls.is_some(),
                )),
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
                stream: true,
            },
            runner: Arc::new(rounds::Runner(state.clone())),
        };
        let limits = state.config.serve;
        let tls = state.config.tls.clone();
        let serve = sheratan_runtime::serve::serve_with(
            self.listener,
            http::router(state),
            limits,
            Default::default(),
            shutdown.clone(),
            tls,
        );
        member.serve_and_pull(serve, pull, shutdown).await
    }
}
