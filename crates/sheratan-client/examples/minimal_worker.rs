//! A minimal worker written against the SDK: lease jobs of kind `upper`, upper-case the
//! payload's `text`, report signed results. Run a hub (`sheratan up`), then:
//!
//! ```sh
//! SHERATAN_HUB_TOKEN=$(cat .sheratan/hub_token) cargo run -p sheratan-client --example minimal_worker
//! sheratan submit --kind upper --payload '{"text":"hello"}' --wait
//! ```

use sheratan_client::{ControlClient, DataClient};
use sheratan_proto::control::{HeartbeatRequest, Role};
use sheratan_proto::data::{JobError, LeaseRequest, Outcome, ResultRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let token = std::env::var("SHERATAN_HUB_TOKEN").ok();
    let control = ControlClient::new("http://127.0.0.1:8787", token.clone())?;
    let data = DataClient::new("http://127.0.0.1:8788", token)?;
    let heartbeat = HeartbeatRequest {
        node_id: "example-upper".into(),
        role: Role::Worker,
        addr: None,
        capabilities: vec!["upper".into()],
        build_id: "example".into(),
        capability_hash: String::new(),
        runtime: Default::default(),
        load: Default::default(),
    };
    control.heartbeat(&heartbeat).await?;
    loop {
        let grant = data
            .lease(&LeaseRequest {
                node_id: "example-upper".into(),
                queues: vec!["default".into()],
                capabilities: vec!["upper".into()],
                max_jobs: 10,
                wait_ms: 10_000,
            })
            .await?;
        for job in grant.jobs {
            let report = match job.payload["text"].as_str() {
                Some(text) => ResultRequest {
                    job_id: job.job_id,
                    lease_id: job.lease_id,
                    outcome: Outcome::Success,
                    result: serde_json::json!({ "text": text.to_uppercase() }),
                    error: None,
                },
                None => ResultRequest {
                    job_id: job.job_id,
                    lease_id: job.lease_id,
                    outcome: Outcome::Failure,
                    result: serde_json::Value::Null,
                    error: Some(JobError {
                        message: "payload needs a text field".into(),
                        retryable: false,
                    }),
                },
            };
            // Signed with the client's token; safe to repeat.
            data.report(&report).await?;
        }
        if grant.defer_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(grant.defer_ms)).await;
        }
        // A real worker heartbeats every 10–15 s; see `sheratan-worker` for the full loop.
        control.heartbeat(&heartbeat).await?;
    }
}
