//! `sheratan`: one binary for every component of the job mesh. This file only parses the
//! command line and hands over to the component crates; nothing depends on it.
//!
//! Exit codes: 0 success, 1 a runtime failure, 2 a usage or configuration error.

mod hub_args;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sheratan_hub::Hub;

use crate::hub_args::HubArgs;

/// mimalloc instead of glibc's allocator: the hub allocates small, short-lived buffers on
/// every request from several threads, where glibc's arenas cost about a tenth of the CPU
/// (measured with perf under `sheratan bench jobs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SHERATAN_GIT_REV"),
    ")"
);

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
    Up(HubArgs),
    /// Measure the hub (see docs/PERFORMANCE.md).
    #[command(subcommand)]
    Bench(sheratan_ops::bench::BenchCommand),
}

/// An error and the exit code it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure { code: 1, error }
    }
}

fn usage(message: String) -> Failure {
    Failure {
        code: 2,
        error: anyhow::anyhow!(message),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    sheratan_runtime::init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => {
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Hub(args) => run_hub(args, false).await,
        Command::Up(args) => run_hub(args, true).await,
        Command::Bench(cmd) => sheratan_ops::bench::run(cmd).await.map_err(Failure::from),
    }
}

async fn run_hub(args: HubArgs, up: bool) -> Result<(), Failure> {
    let config = args.to_config().map_err(usage)?;
    let home = config.home.clone();
    let token_from_env = config.tokens.token.is_some();
    let auth_required = config.tokens.required;
    let clock: std::sync::Arc<dyn sheratan_store::Clock> =
        std::sync::Arc::new(sheratan_store::SystemClock);
    let (store_url, store_config) = args.store_config(clock.clone()).map_err(usage)?;
    // Opening recovers every live job into memory: blocking work, off the runtime.
    let store =
        tokio::task::spawn_blocking(move || sheratan_store_sqlite::SqliteStore::open(store_config))
            .await
            .map_err(|e| Failure::from(anyhow::anyhow!("opening the job store failed: {e}")))?
            .map_err(|e| Failure::from(anyhow::Error::new(e)))?;
    let store: std::sync::Arc<dyn sheratan_store::Store> = std::sync::Arc::new(store);
    let hub = Hub::build_with_clock(config, store, clock)
        .await
        .map_err(|e| match e {
            sheratan_hub::HubError::Config(msg) => usage(msg),
            other => Failure::from(anyhow::Error::new(other)),
        })?;

    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "sheratan {VERSION}");
    if let Some(addr) = hub.control_addr() {
        let _ = writeln!(
            out,
            "  control plane: http://{addr}  (public /health; everything else needs the token)"
        );
    }
    if let Some(addr) = hub.data_addr() {
        let _ = writeln!(
            out,
            "  data plane: http://{addr}  (jobs, leases, results; /health and /admin from loopback only)"
        );
    }
    let home_display = std::fs::canonicalize(&home).unwrap_or(home.clone());
    if !auth_required {
        let _ = writeln!(
            out,
            "  token: NONE - SHERATAN_HUB_TOKEN_REQUIRED=0, anyone who reaches the hub controls it"
        );
    } else if token_from_env {
        let _ = writeln!(out, "  token: from SHERATAN_HUB_TOKEN");
    } else if let Some(path) = hub.state().tokens.token_file() {
        let path = std::fs::canonicalize(path).unwrap_or(path.to_owned());
        let _ = writeln!(out, "  token: {}", path.display());
    }
    let _ = writeln!(out, "  state: {}", home_display.display());
    let _ = writeln!(out, "  store: {}", store_url.display());
    if up && let Some(addr) = hub.control_addr() {
        let port = addr.port();
        let _ = writeln!(out);
        let _ = writeln!(out, "Try:");
        let _ = writeln!(out, "  curl -s http://127.0.0.1:{port}/health");
        let _ = writeln!(
            out,
            "  curl -s -H \"Authorization: Bearer $(cat {}/hub_token)\" http://127.0.0.1:{port}/v1/nodes",
            home_display.display()
        );
    }
    // The last line of the banner; scripts and the testkit wait for it.
    let _ = writeln!(
        out,
        "ready: Ctrl-C (or SIGTERM) stops {}",
        if up { "everything" } else { "the hub" }
    );
    let _ = out.flush();
    drop(out);

    let shutdown = sheratan_runtime::shutdown_on_signals();
    hub.run(shutdown)
        .await
        .map_err(|e| Failure::from(anyhow::Error::new(e)))
}
