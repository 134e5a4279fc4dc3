//! `sheratan`: one binary for every component of the job mesh. This crate only parses the
//! command line, composes configuration and hands over to the component crates; nothing
//! depends on it.
//!
//! Exit codes: 0 success, 1 a runtime failure, 2 a usage or configuration error; `submit
//! --wait` adds 3 (the job failed), 4 (cancelled) and 5 (waiting timed out).

mod banner;
mod client_args;
mod client_cmds;
mod hub_args;
mod hub_cmd;
mod join;
mod mesh_cmd;
mod ops_cmds;
mod queue_cmd;
mod relay_cmd;
mod schedule_cmd;
mod store_open;
mod supervisor;
mod tls_cmd;
mod tls_setup;
mod up_cmd;
mod up_credentials;
mod worker_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::hub_args::HubArgs;

/// mimalloc instead of glibc's allocator: the hub allocates small, short-lived buffers on
/// every request from several threads, where glibc's arenas cost about a tenth of the CPU
/// (measured with perf under `sheratan bench jobs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SHERATAN_GIT_REV"),
    ")"
);

/// What nodes report as `build_id`: version and git revision.
pub const BUILD_ID: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("SHERATAN_GIT_REV"));

#[derive(Debug, Parser)]
#[command(name = "sheratan", version = VERSION, about = "Sheratan: a hardened job mesh", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Hub: Control plane (8787) and Data plane (8788).
    Hub(HubArgs),
    /// Run the whole system on this machine, on the embedded store.
    Up(Box<up_cmd::UpArgs>),
    /// Run a worker: lease jobs from the hub and run them with its handlers.
    Worker(worker_cmd::WorkerArgs),
    /// Run a host: bid for auctioned jobs and execute the ones it wins.
    Host(mesh_cmd::HostArgs),
    /// Run the broker: auction the `auction` queue's jobs among the hosts.
    Broker(mesh_cmd::BrokerArgs),
    /// Run the Core API (the front door for clients and the dashboard).
    Core(mesh_cmd::CoreArgs),
    /// Run the WebRelay: LLM jobs through a chat page in Chromium or an OpenAI-compatible server.
    Relay(Box<relay_cmd::RelayArgs>),
    /// Run the Dashboard: the operator's web UI over the Core API.
    Dashboard(mesh_cmd::DashboardArgs),
    /// Submit a job (and, with --wait, print its result).
    Submit(client_cmds::SubmitArgs),
    /// List, show, cancel or requeue jobs.
    #[command(subcommand)]
    Jobs(client_cmds::JobsCommand),
    /// Show and change queue settings: pause, limits, rates, retry defaults.
    #[command(subcommand)]
    Queue(queue_cmd::QueueCommand),
    /// Schedules: jobs submitted on a cron expression, exactly once per tick.
    #[command(subcommand)]
    Schedule(schedule_cmd::ScheduleCommand),
    /// The node registry.
    Nodes(client_cmds::NodesArgs),
    /// Publish, list or fetch bundles.
    #[command(subcommand)]
    Bundle(client_cmds::BundleCommand),
    /// Rotate the mesh token without a restart; create, list and revoke credentials.
    #[command(subcommand)]
    Token(client_cmds::TokenCommand),
    /// Follow the security audit log and raise alerts on bursts (logs/alerts.jsonl). One
    /// watcher per home: `up` runs one; a second says which process holds the log and exits 2.
    AuditWatch(ops_cmds::WatchArgs),
    /// Write a diagnostics bundle (zip) with logs, metrics, registry and redacted settings.
    Diagnose(ops_cmds::DiagnoseArgs),
    /// Run the port-isolation and security checklist against a running hub.
    Smoke(ops_cmds::SmokeArgs),
    /// Measure the hub (see docs/PERFORMANCE.md).
    #[command(subcommand)]
    Bench(sheratan_ops::bench::BenchCommand),
    /// The mesh CA and the certificates it issues.
    #[command(subcommand)]
    Tls(tls_cmd::TlsCommand),
    /// Print the string nodes on other machines join this hub with (--join / SHERATAN_JOIN):
    /// its address, the SHA-256 of its CA, and the token.
    JoinString(join::JoinStringArgs),
}

impl Command {
    /// Where a command that talks to the hub finds it (and `--join` applies).
    fn client_mut(&mut self) -> Option<&mut client_args::ClientArgs> {
        Some(match self {
            Command::Worker(a) => &mut a.client,
            Command::Host(a) => &mut a.client,
            Command::Broker(a) => &mut a.client,
            Command::Core(a) => &mut a.client,
            Command::Relay(a) => &mut a.client,
            Command::Submit(a) => &mut a.client,
            Command::Jobs(c) => c.client_mut(),
            Command::Queue(c) => c.client_mut(),
            Command::Schedule(c) => c.client_mut(),
            Command::Nodes(a) => a.client_mut(),
            Command::Bundle(c) => c.client_mut(),
            Command::Token(c) => c.client_mut(),
            Command::Diagnose(a) => &mut a.client,
            Command::Smoke(a) => &mut a.client,
            Command::Hub(_)
            | Command::Up(_)
            | Command::Dashboard(_)
            | Command::AuditWatch(_)
            | Command::Bench(_)
            | Command::Tls(_)
            | Command::JoinString(_) => return None,
        })
    }

    /// Long-running members of the mesh, which hold the token (and the relay its API keys)
    /// while running other users' jobs beside them.
    fn holds_secrets(&self) -> bool {
        matches!(
            self,
            Command::Hub(_)
                | Command::Up(_)
                | Command::Worker(_)
                | Command::Host(_)
                | Command::Broker(_)
                | Command::Core(_)
                | Command::Relay(_)
        )
    }
}

/// An error and the exit code it maps to.
pub struct Failure {
    code: u8,
    error: Option<anyhow::Error>,
}

impl Failure {
    /// An exit code whose reason was already printed.
    pub fn quiet(code: u8) -> Self {
        Failure { code, error: None }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure {
            code: 1,
            error: Some(error),
        }
    }
}

pub fn usage(message: String) -> Failure {
    Failure {
        code: 2,
        error: Some(anyhow::anyhow!(message)),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    sheratan_runtime::init_tracing();
    if cli.command.holds_secrets() {
        sheratan_runtime::guard_process_secrets();
    }
    // A worker (and a command-line client) mostly waits on the network and on its handlers'
    // child processes: one thread does it without cross-thread wake-ups, which cost a worker
    // about a fifth of its CPU on the multi-threaded runtime.
    let mut builder = match cli.command {
        Command::Worker(_)
        | Command::Submit(_)
        | Command::Jobs(_)
        | Command::Queue(_)
        | Command::Schedule(_)
        | Command::Nodes(_)
        | Command::Bundle(_)
        | Command::Token(_)
        | Command::Diagnose(_)
        | Command::Smoke(_)
        | Command::AuditWatch(_)
        | Command::Tls(_)
        | Command::JoinString(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => {
            if let Some(error) = error {
                eprintln!("error: {error:#}");
            }
            ExitCode::from(code)
        }
    }
}

async fn run(mut cli: Cli) -> Result<(), Failure> {
    if let Some(client) = cli.command.client_mut() {
        join::prepare(client).await?;
    }
    match cli.command {
        Command::Hub(args) => hub_cmd::run_hub(args).await,
        Command::Up(args) => hub_cmd::run_up(*args).await,
        Command::Worker(args) => run_worker(args).await,
        Command::Host(args) => mesh_cmd::run_host(args).await,
        Command::Broker(args) => mesh_cmd::run_broker(args).await,
        Command::Core(args) => mesh_cmd::run_core(args).await,
        Command::Relay(args) => relay_cmd::run_relay(*args).await,
        Command::Dashboard(args) => mesh_cmd::run_dashboard(args).await,
        Command::Submit(args) => client_cmds::submit(args).await,
        Command::Jobs(cmd) => client_cmds::jobs(cmd).await,
        Command::Queue(cmd) => queue_cmd::run(cmd).await,
        Command::Schedule(cmd) => schedule_cmd::run(cmd).await,
        Command::Nodes(args) => client_cmds::nodes(args).await,
        Command::Bundle(cmd) => client_cmds::bundle(cmd).await,
        Command::Token(cmd) => client_cmds::token(cmd).await,
        Command::AuditWatch(args) => ops_cmds::audit_watch(args).await,
        Command::Diagnose(args) => ops_cmds::diagnose(args).await,
        Command::Smoke(args) => ops_cmds::smoke(args).await,
        Command::Bench(cmd) => sheratan_ops::bench::run(cmd).await.map_err(Failure::from),
        Command::Tls(cmd) => tls_cmd::run(cmd),
        Command::JoinString(args) => join::join_string(args).await,
    }
}

async fn run_worker(args: worker_cmd::WorkerArgs) -> Result<(), Failure> {
    let node_id = args
        .node_id
        .clone()
        .unwrap_or_else(worker_cmd::default_node_id);
    let token = args.client.member_token(&args.auth, "worker")?;
    let config = worker_cmd::worker_config(
        &args.client.control_url,
        &args.client.data_url,
        token,
        &node_id,
        &args.options,
        BUILD_ID,
    )
    .map_err(usage)?;
    println!(
        "sheratan worker {VERSION}: {node_id}, {} slots, queues {}, handlers {}",
        config.concurrency,
        config.queues.join(","),
        config.handlers.names().join(",")
    );
    args.client.print_hub();
    mesh_cmd::until_signal("the worker after running jobs finish", |stop| {
        sheratan_worker::run(config, stop)
    })
    .await
}
