//! Heartbeats for push-style nodes (hosts, broker, relay, core): the loop that tells Hub
//! Control who the node is and how loaded it is.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sheratan_proto::control::{HeartbeatRequest, Load, Role};

use crate::ControlClient;

/// What a node says about itself in heartbeats.
#[derive(Debug, Clone)]
pub struct Identity {
    pub node_id: String,
    pub role: Role,
    pub addr: Option<String>,
    pub capabilities: Vec<String>,
    pub build_id: String,
}

/// Heartbeats every 10–15 s (the hub's interval ±15 %) with the node's current load, until
/// `shutdown`. Failures are logged and retried with backoff.
pub async fn heartbeat_loop(
    control: ControlClient,
    me: Identity,
    inflight: &AtomicU32,
    capacity: u32,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut failures = 0u32;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let mut runtime = serde_json::Map::new();
        runtime.insert("os".into(), std::env::consts::OS.into());
        runtime.insert("arch".into(), std::env::consts::ARCH.into());
        runtime.insert("version".into(), env!("CARGO_PKG_VERSION").into());
        let req = HeartbeatRequest {
            node_id: me.node_id.clone(),
            role: me.role,
            addr: me.addr.clone(),
            capabilities: me.capabilities.clone(),
            build_id: me.build_id.clone(),
            capability_hash: capability_hash(&me.capabilities),
            runtime,
            load: Load {
                inflight: inflight.load(Ordering::Relaxed),
                capacity,
            },
        };
        let wait = match control.heartbeat(&req).await {
            Ok(answer) => {
                failures = 0;
                Duration::from_secs(u64::from(answer.heartbeat_interval_s.clamp(1, 300)))
                    .mul_f64(0.85 + 0.3 * rand::random::<f64>())
            }
            Err(err) => {
                tracing::warn!(node_id = %me.node_id, "heartbeat: {err}");
                failures += 1;
                Duration::from_millis(500)
                    .saturating_mul(1 << failures.min(6))
                    .min(Duration::from_secs(30))
            }
        };
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// SHA-256 over the sorted capabilities, hex.
pub fn capability_hash(caps: &[String]) -> String {
    use sha2::{Digest, Sha256};
    let mut caps = caps.to_vec();
    caps.sort();
    hex::encode(Sha256::digest(caps.join("\n").as_bytes()))
}
