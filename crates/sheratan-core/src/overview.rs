//! `GET /api/overview`: every component probed at once, each with a short deadline, so one
//! slow or dead component shows as down and never holds up the page.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use sheratan_proto::ErrorCode;
use sheratan_proto::control::{NodeStatus, NodeView};
use sheratan_proto::core_api::{ComponentState, Components, NodeCounts, Overview, UpDown};

use crate::CoreState;
use crate::peer::Peer;

const DEADLINE: Duration = Duration::from_millis(1500);

pub(crate) async fn overview(s: &CoreState) -> Overview {
    let control = probe("Hub Control", async {
        s.control
            .health()
            .await
            .map(|h| serde_json::to_value(h).unwrap_or_default())
            .map_err(|e| e.to_string())
    });
    let data = probe("Hub Data", async {
        match s.data.health().await {
            Ok(h) => Ok(serde_json::to_value(h).unwrap_or_default()),
            // Core on another machine than the hub: the data plane answered, it is up.
            Err(e) if e.code() == Some(ErrorCode::LocalhostOnly) => {
                Ok(serde_json::json!({"note": "health is loopback-only"}))
            }
            Err(e) => Err(e.to_string()),
        }
    });

    let nodes = async {
        match tokio::time::timeout(DEADLINE, s.control.nodes(None, None)).await {
            Ok(Ok(nodes)) => Some(count(&nodes)),
            _ => None,
        }
    };
    let (control, data, broker, relay, nodes) = tokio::join!(
        control,
        data,
        peer_health(Peer::broker(s)),
        peer_health(Peer::relay(s)),
        nodes
    );
    Overview {
        components: Components {
            core: ComponentState {
                status: UpDown::Up,
                latency_ms: None,
                detail: Some(serde_json::json!({"version": s.config.build_id})),
                error: None,
            },
            control,
            data,
            broker,
            relay,
        },
        nodes,
        jobs: s.history.latest(),
        events_subscribers: s.events.subscribers() as u64,
    }
}

/// A peer's `/health`, as a component's state.
async fn peer_health(peer: Peer<'_>) -> ComponentState {
    probe(peer.name(), async {
        peer.get::<serde_json::Value>("/health")
            .await
            .map_err(|e| e.message)
    })
    .await
}

/// One component's state: its health body when it answered in time, else why not.
async fn probe(
    what: &str,
    answer: impl Future<Output = Result<serde_json::Value, String>>,
) -> ComponentState {
    let started = Instant::now();
    let answer = tokio::time::timeout(DEADLINE, answer)
        .await
        .unwrap_or_else(|_| Err(format!("{what} did not answer within 1.5 s")));
    let latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
    match answer {
        Ok(detail) => ComponentState {
            status: UpDown::Up,
            latency_ms,
            detail: Some(detail),
            error: None,
        },
        Err(error) => ComponentState {
            status: UpDown::Down,
            latency_ms,
            detail: None,
            error: Some(error),
        },
    }
}

fn count(nodes: &[NodeView]) -> NodeCounts {
    let mut by_status = BTreeMap::new();
    for status in [NodeStatus::Online, NodeStatus::Stale, NodeStatus::Dead] {
        let n = nodes.iter().filter(|n| n.status == status).count() as u64;
        by_status.insert(status.as_str().to_owned(), n);
    }
    let mut by_role = BTreeMap::new();
    for n in nodes {
        *by_role.entry(n.role.as_str().to_owned()).or_insert(0) += 1;
    }
    NodeCounts {
        total: nodes.len() as u64,
        by_status,
        by_role,
    }
}
