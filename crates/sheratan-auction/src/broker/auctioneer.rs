//! The auction mechanics, without the hub: asking hosts for bids, awarding, forwarding.

use std::time::Duration;

use sheratan_client::MeshToken;
use sheratan_proto::auction::{
    BidRecord, BidRequest, BidResponse, ExecuteRequest, ExecuteResponse,
};
use sheratan_proto::control::NodeView;

/// A host that can be asked for a bid.
#[derive(Debug, Clone, PartialEq)]
pub struct Bidder {
    pub node_id: String,
    /// Base URL, e.g. `http://127.0.0.1:8081`.
    pub url: String,
    pub capabilities: Vec<String>,
    /// This round's execute grant from the hub, when the host has a node credential.
    pub grant: Option<String>,
}

impl Bidder {
    pub(super) fn from_node(node: &NodeView) -> Option<Bidder> {
        let url = node.addr.as_deref()?.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return None;
        }
        Some(Bidder {
            node_id: node.node_id.clone(),
            url: url.to_owned(),
            capabilities: node.capabilities.clone(),
            grant: None,
        })
    }

    pub(super) fn can_run(&self, required: &[String]) -> bool {
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
    /// Fails only on an unreadable mesh CA (`SHERATAN_CA_FILE`): hosts may serve `https://`.
    pub fn new(
        token: impl Into<MeshToken>,
        bid_deadline: Duration,
    ) -> Result<Self, sheratan_client::ClientError> {
        let http = sheratan_client::http_client_builder()?
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| sheratan_client::ClientError::Config(e.to_string()))?;
        Ok(Self {
            http,
            token: token.into(),
            bid_deadline,
        })
    }

    /// What the broker presents to `host`: its execute grant for the job; without one, the
    /// broker's own token only when that is the mesh token (a host that predates grants);
    /// `None` when authentication is off. A broker on a node credential never sends it.
    fn credential_for(&self, host: &Bidder) -> Result<Option<String>, String> {
        if let Some(grant) = &host.grant {
            return Ok(Some(grant.clone()));
        }
        match self.token.send() {
            Some(t) if t.starts_with(sheratan_sign::CREDENTIAL_PREFIX) => Err(
                "not contacted: no execute grant (the host has no valid node credential; a broker on a node credential sends hosts grants only)".into(),
            ),
            other => Ok(other),
        }
    }

    /// A request to `host` with its credential, or why the host may not be contacted at all:
    /// it has no credential the broker may send, or it advertises `http://` on another
    /// machine, so a credential and the job's payload would cross the network in clear text.
    fn post(&self, host: &Bidder, path: &str) -> Result<reqwest::RequestBuilder, String> {
        let credential = self.credential_for(host)?;
        if credential.is_some()
            && let Ok(url) = reqwest::Url::parse(&host.url)
            && let Some(why) = sheratan_client::clear_text_refusal(&url)
        {
            return Err(format!(
                "not contacted: {why} (the host must serve TLS: https://)"
            ));
        }
        let r = self.http.post(format!("{}{path}", host.url));
        Ok(match credential {
            Some(t) => r.bearer_auth(t),
            None => r,
        })
    }

    /// Asks every host for a bid at once; a host that does not answer within the deadline,
    /// or answers badly, is recorded as declining with the reason. In `hosts` order.
    pub async fn collect_bids(&self, hosts: &[Bidder], req: &BidRequest) -> Vec<BidRecord> {
        // One body for all hosts; the asks run concurrently within this task (no task per
        // host: with tens of hosts, spawning costs more than the asks themselves).
        let body = bytes::Bytes::from(serde_json::to_vec(req).unwrap_or_default());
        let deadline = self.bid_deadline;
        let asks = hosts.iter().map(|host| {
            let call = self.post(host, "/v1/bid").map(|r| {
                r.header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
                    .send()
            });
            async move {
                let call = match call {
                    Ok(call) => call,
                    Err(why) => return declined(host.node_id.clone(), why),
                };
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
        let request = self
            .post(host, "/v1/execute")
            .map_err(HostFailure::Transport)?;
        let call = async {
            let response = request
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

    /// A host on another machine that advertises plain `http://` is never contacted: the
    /// token and the job's payload would cross the network in clear text.
    #[tokio::test]
    async fn a_host_advertising_plain_http_elsewhere_is_not_contacted() {
        let auctioneer =
            Auctioneer::new(Some("a-token".to_owned()), Duration::from_secs(2)).unwrap();
        // 203.0.113.7 (TEST-NET-3): were it contacted, the bid would time out, not say this.
        let host = Bidder {
            node_id: "far".into(),
            url: "http://203.0.113.7:8081".into(),
            capabilities: vec![],
            grant: None,
        };
        let ask = BidRequest {
            job_id: "j".into(),
            kind: "echo".into(),
            required_capabilities: vec![],
            payload_bytes: 0,
        };
        let bids = auctioneer.collect_bids(&[host], &ask).await;
        assert!(!bids[0].accept);
        assert!(
            bids[0].reason.contains("not contacted"),
            "{}",
            bids[0].reason
        );
    }

    /// A broker on a node credential sends a host its grant or nothing: never its own secret
    /// (a host without a grant is declined before any connection).
    #[tokio::test]
    async fn a_broker_on_a_credential_never_sends_its_secret_to_a_host() {
        let secret = format!("{}{}", sheratan_sign::CREDENTIAL_PREFIX, "ab".repeat(32));
        let auctioneer = Auctioneer::new(Some(secret.clone()), Duration::from_secs(2)).unwrap();
        let mut host = Bidder {
            node_id: "h".into(),
            url: "http://127.0.0.1:9".into(),
            capabilities: vec![],
            grant: None,
        };
        let refused = auctioneer.credential_for(&host).unwrap_err();
        assert!(refused.contains("no execute grant"), "{refused}");
        host.grant = Some("shtg1.j.1.00".into());
        assert_eq!(
            auctioneer.credential_for(&host).unwrap().as_deref(),
            Some("shtg1.j.1.00")
        );
        // A broker on the mesh token still reaches hosts that predate grants.
        let legacy = Auctioneer::new(Some("mesh".to_owned()), Duration::from_secs(2)).unwrap();
        host.grant = None;
        assert_eq!(
            legacy.credential_for(&host).unwrap().as_deref(),
            Some("mesh")
        );
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
            grant: None,
        };
        assert!(host.can_run(&[]));
        assert!(host.can_run(&["gpu".into()]));
        assert!(!host.can_run(&["gpu".into(), "tpu".into()]));
    }
}
