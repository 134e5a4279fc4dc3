//! `sheratan worker`: the pull-style executor.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use sheratan_exec::Handlers;
use sheratan_worker::WorkerConfig;

use crate::client_args::{ClientArgs, MemberAuthArgs, hostname};

/// Settings of a worker that `up` shares (no hub addresses: `up` knows them).
#[derive(Debug, Clone, Args)]
pub struct WorkerOptions {
    /// Jobs run at once.
    #[arg(long, env = "SHERATAN_CONCURRENCY", default_value_t = 4)]
    pub concurrency: u32,
    /// Queues to take jobs from, comma-separated.
    #[arg(
        long,
        env = "SHERATAN_QUEUES",
        value_delimiter = ',',
        default_value = "default"
    )]
    pub queues: Vec<String>,
    /// TOML file declaring `exec` handlers ([handlers.NAME] command = [...]) and the built-in
    /// `http` handler's settings ([http] enabled = true, allow_hosts = ["10.8.0.0/16"],
    /// methods, max_response_bytes, max_redirects); `http` is off without it.
    #[arg(long, env = "SHERATAN_HANDLERS")]
    pub handlers: Option<PathBuf>,
    /// At shutdown, seconds running jobs may take to finish.
    #[arg(long, env = "SHERATAN_GRACE_SEC", default_value_t = 30)]
    pub grace_sec: u64,
    /// Lease with the request routes instead of the worker stream (which the worker falls back
    /// to on its own when the hub does not serve the stream).
    #[arg(long, env = "SHERATAN_NO_STREAM",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub no_stream: bool,
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub auth: MemberAuthArgs,
    /// This worker's node id (default: worker-<hostname>).
    #[arg(long, env = "SHERATAN_NODE_ID")]
    pub node_id: Option<String>,
    #[command(flatten)]
    pub options: WorkerOptions,
}

/// Builds a worker's settings; the handlers file is read (and checked) here.
pub fn worker_config(
    control_url: &str,
    data_url: &str,
    token: impl Into<sheratan_client::MeshToken>,
    node_id: &str,
    options: &WorkerOptions,
    build_id: &str,
) -> Result<WorkerConfig, String> {
    let handlers = match &options.handlers {
        Some(path) => Handlers::from_file(path).map_err(|e| e.to_string())?,
        None => Handlers::builtin(),
    };
    for q in &options.queues {
        sheratan_proto::data::validate_queue(q).map_err(|e| format!("--queues: {e}"))?;
    }
    sheratan_proto::ids::validate_node_id(node_id).map_err(|e| format!("--node-id: {e}"))?;
    if options.concurrency == 0 || options.concurrency > 1000 {
        return Err("--concurrency must be between 1 and 1000".into());
    }
    let mut config = WorkerConfig::new(control_url, data_url, token, node_id);
    config.queues = options.queues.clone();
    config.concurrency = options.concurrency;
    config.handlers = handlers;
    config.build_id = build_id.into();
    config.grace = Duration::from_secs(options.grace_sec);
    config.stream = !options.no_stream;
    config.tracer = sheratan_trace::Tracer::from_env("sheratan-worker")?;
    Ok(config)
}

pub fn default_node_id() -> String {
    let id = format!("worker-{}", hostname());
    id.chars().take(64).collect()
}
