//! The lease side: the pull loop hands each leased job of the auction queue to [`Runner`],
//! which auctions it round by round while the lease is kept alive, and reports the outcome.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use sheratan_client::pull::JobRunner;
use sheratan_client::stream::Link;
use sheratan_proto::auction::{
    AuctionRecord, BidRequest, ExecuteRequest, ExecuteResponse, GrantRequest, RoundRecord,
};
use sheratan_proto::control::{NodeStatus, Role};
use sheratan_proto::data::{JobError, LeasedJob, Outcome, ResultRequest};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::BrokerState;
use super::auctioneer::{Auctioneer, Bidder, HostFailure};

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
pub(super) struct Runner(pub(super) Arc<BrokerState>);

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

    async fn run(&self, job: LeasedJob, link: Link) {
        run_job(&self.0, job, link).await;
    }
}

/// How one job's auction ended on this attempt.
enum Ending {
    Done(ExecuteResponse),
    NoBids(String),
    HostsFailed(String),
    LeaseLost,
}

async fn run_job(s: &BrokerState, job: LeasedJob, link: Link) {
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
        sheratan_client::pull::keep_lease(&link, &job.lease_id, timeout_s).await;
        lost.cancel();
        std::future::pending::<()>().await
    };
    let mut span = s.config.tracer.start_from(
        "sheratan.auction",
        sheratan_trace::Kind::Consumer,
        job.traceparent.as_deref(),
    );
    span.attr("sheratan.job_id", &job.job_id);
    let auction = Auction {
        s,
        trace: span.context(),
        job: &job,
        required: &required,
        timeout_s,
        payload_bytes: serde_json::to_vec(&job.payload).map_or(0, |v| v.len() as u64),
        lost: &lost,
    };
    let ending = tokio::select! {
        ending = auction.rounds(&mut record) => ending,
        () = keeper => unreachable!("the keeper never ends"),
    };
    if let Some(winner) = &record.winner {
        span.attr("sheratan.winner", winner);
    }
    let traceparent = span.traceparent();
    drop(span);
    if let Some(report) = report_of(s, &job, ending)
        && let Err(err) =
            sheratan_client::pull::report_with_retries(&link, &report, traceparent.as_deref()).await
    {
        tracing::warn!(job_id = %job.job_id, "broker: result not reported: {err}");
    }
}

/// The result to report for an ending (none when the lease is lost: the job is no longer
/// this broker's), counted in the metrics.
fn report_of(s: &BrokerState, job: &LeasedJob, ending: Ending) -> Option<ResultRequest> {
    let report = |outcome, result, error| ResultRequest {
        job_id: job.job_id.clone(),
        lease_id: job.lease_id.clone(),
        outcome,
        result,
        error,
    };
    match ending {
        Ending::Done(answer) => {
            s.metrics.auction(match answer.outcome {
                Outcome::Success => "completed",
                Outcome::Failure => "failed",
            });
            Some(report(answer.outcome, answer.result, answer.error))
        }
        Ending::NoBids(message) | Ending::HostsFailed(message) => {
            s.metrics.auction(if message.starts_with("no host") {
                "no_bids"
            } else {
                "hosts_failed"
            });
            let error = JobError {
                message,
                retryable: true,
            };
            Some(report(
                Outcome::Failure,
                serde_json::Value::Null,
                Some(error),
            ))
        }
        Ending::LeaseLost => {
            s.metrics.auction("lease_lost");
            None
        }
    }
}

/// One job's auction on one attempt.
struct Auction<'a> {
    s: &'a BrokerState,
    /// The auction's span: each round's is its child.
    trace: Option<sheratan_trace::TraceContext>,
    job: &'a LeasedJob,
    required: &'a [String],
    timeout_s: u32,
    payload_bytes: u64,
    /// Cancelled when the lease is lost.
    lost: &'a CancellationToken,
}

impl Auction<'_> {
    /// Rounds until a host runs the job, no host bids, the rounds run out, or the lease is
    /// lost. Every round is saved in `record` as it ends.
    async fn rounds(&self, record: &mut AuctionRecord) -> Ending {
        let s = self.s;
        let mut excluded: BTreeSet<String> = BTreeSet::new();
        let mut failures: Vec<String> = Vec::new();
        let first_round = record.rounds.last().map_or(1, |r| r.round + 1);
        for round in first_round..first_round + s.config.max_rounds {
            let started = Instant::now();
            let mut span = s.config.tracer.start(
                "sheratan.auction.round",
                sheratan_trace::Kind::Internal,
                self.trace,
            );
            span.attr("sheratan.round", round);
            let (hosts, mut entry) = self.bid(round, &excluded).await;
            span.attr("sheratan.bids", entry.bids.len());
            let Some(winner) = entry.winner.clone() else {
                let message = self.no_bids_message(&hosts, &entry);
                entry.outcome = "no_bids".into();
                span.attr("sheratan.outcome", "no_bids");
                entry.elapsed_ms = started.elapsed().as_millis() as u64;
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
            let executed = self.execute(host).await;
            entry.elapsed_ms = started.elapsed().as_millis() as u64;
            entry.outcome = match &executed {
                None => "lease_lost",
                Some(Ok(answer)) if answer.outcome == Outcome::Success => "completed",
                Some(Ok(_)) => "failed",
                Some(Err(_)) => "host_failed",
            }
            .into();
            span.attr("sheratan.winner", &winner);
            span.attr("sheratan.outcome", &entry.outcome);
            record.rounds.push(entry);
            // A failed host is left out of the next round; anything else ends the auction.
            let ending = match executed {
                None => Some(Ending::LeaseLost),
                Some(Ok(answer)) => Some(Ending::Done(answer)),
                Some(Err(failure)) => {
                    tracing::warn!(job_id = %self.job.job_id, host = %winner, "broker: host failed, re-auctioning: {failure}");
                    record.winner = None;
                    failures.push(format!("{winner}: {failure}"));
                    excluded.insert(winner);
                    None
                }
            };
            save(s, record).await;
            if let Some(ending) = ending {
                return ending;
            }
        }
        Ending::HostsFailed(format!(
            "hosts failed in {} rounds: {}",
            s.config.max_rounds,
            failures.join("; ")
        ))
    }

    /// Asks the ONLINE hosts that can run the job (and have not failed it) for bids; the
    /// round's entry carries the bids and the winner, if any.
    async fn bid(&self, round: u32, excluded: &BTreeSet<String>) -> (Vec<Bidder>, RoundRecord) {
        let started_at = OffsetDateTime::now_utc();
        let started = Instant::now();
        let mut hosts: Vec<Bidder> = online_hosts(self.s)
            .await
            .iter()
            .filter(|h| !excluded.contains(&h.node_id) && h.can_run(self.required))
            .cloned()
            .collect();
        self.grant(&mut hosts).await;
        let ask = BidRequest {
            job_id: self.job.job_id.clone(),
            kind: self.job.kind.clone(),
            required_capabilities: self.required.to_vec(),
            payload_bytes: self.payload_bytes,
        };
        let bids = self.s.auctioneer.collect_bids(&hosts, &ask).await;
        let bid_ms = started.elapsed().as_secs_f64() * 1000.0;
        let winner = Auctioneer::award(&bids).map(|b| b.node_id.clone());
        self.s.metrics.round(&bids, winner.as_deref(), bid_ms);
        let entry = RoundRecord {
            round,
            bids,
            winner,
            outcome: String::new(),
            started_at,
            elapsed_ms: 0,
            bid_ms,
        };
        (hosts, entry)
    }

    /// Gives each host of the round its execute grant for this job (hosts with a node
    /// credential get one from the hub; the others none). A hub that cannot answer leaves
    /// every host without, and the round goes on (a broker on the mesh token still reaches
    /// hosts that predate grants).
    async fn grant(&self, hosts: &mut [Bidder]) {
        if hosts.is_empty() {
            return;
        }
        let req = GrantRequest {
            job_id: self.job.job_id.clone(),
            lease_id: self.job.lease_id.clone(),
            hosts: hosts.iter().map(|h| h.node_id.clone()).collect(),
        };
        match self.s.data.grants(&req).await {
            Ok(mut answer) => {
                for host in hosts {
                    host.grant = answer.grants.remove(&host.node_id);
                }
            }
            Err(err) => {
                tracing::warn!(job_id = %self.job.job_id, "broker: no execute grants from the hub: {err}")
            }
        }
    }

    /// Forwards the job to the winner; `None` when the lease is lost meanwhile.
    async fn execute(&self, host: &Bidder) -> Option<Result<ExecuteResponse, HostFailure>> {
        let forward = ExecuteRequest {
            job_id: self.job.job_id.clone(),
            kind: self.job.kind.clone(),
            payload: self.job.payload.clone(),
            deadline_ms: u64::from(self.timeout_s) * 1000,
        };
        tokio::select! {
            r = self.s.auctioneer.execute(host, &forward) => Some(r),
            () = self.lost.cancelled() => None,
        }
    }

    fn no_bids_message(&self, hosts: &[Bidder], entry: &RoundRecord) -> String {
        let round = entry.round;
        if hosts.is_empty() {
            return format!(
                "no host bid: no ONLINE host with capabilities {:?} (round {round})",
                self.required
            );
        }
        let reasons: Vec<String> = entry
            .bids
            .iter()
            .map(|b| format!("{}: {}", b.node_id, b.reason))
            .collect();
        format!("no host bid (round {round}): {}", reasons.join("; "))
    }
}

async fn save(s: &BrokerState, record: &AuctionRecord) {
    if let Err(err) = s.config.store.save_auction(record).await {
        tracing::warn!(job_id = %record.job_id, "broker: auction record not saved: {err}");
    }
}
