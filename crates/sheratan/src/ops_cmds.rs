//! Operations commands: audit-watch, diagnose, smoke.

use std::path::PathBuf;

use clap::Args;
use sheratan_ops::watch::{RuleArgs, WatchConfig};

use crate::client_args::ClientArgs;
use crate::{Failure, VERSION};

/// Follows the security audit log and raises alerts. One watcher per home: a second one
/// (`sheratan up` runs one) says which process holds the log and exits 2.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// State directory of the hub whose audit log to follow.
    #[arg(long, env = "SHERATAN_HOME", default_value = "./.sheratan")]
    pub home: PathBuf,
    #[command(flatten)]
    pub rules: RuleArgs,
    /// POST each alert as JSON to this URL too.
    #[arg(long, env = "SHERATAN_ALERT_WEBHOOK")]
    pub webhook: Option<String>,
}

impl WatchArgs {
    pub fn config(&self) -> WatchConfig {
        let mut config = WatchConfig::new(self.home.join("logs"), &self.rules);
        config.webhook = self.webhook.clone();
        config
    }
}

pub async fn audit_watch(args: WatchArgs) -> Result<(), Failure> {
    let config = args.config();
    println!(
        "sheratan audit-watch {VERSION}: following {}, alerts to {}",
        config
            .log_dir
            .join(sheratan_proto::event::AUDIT_LOG_FILE)
            .display(),
        config
            .log_dir
            .join(sheratan_proto::event::ALERTS_FILE)
            .display()
    );
    let shutdown = sheratan_runtime::shutdown_on_signals();
    // The lock first: a second watcher of this home says so instead of claiming to be ready.
    let watcher = tokio::task::spawn_blocking(move || sheratan_ops::watch::Watcher::open(config))
        .await
        .map_err(anyhow::Error::new)?
        .map_err(watch_failure)?;
    println!("ready: Ctrl-C (or SIGTERM) stops the watcher");
    sheratan_ops::watch::follow(watcher, shutdown)
        .await
        .map_err(watch_failure)
}

fn watch_failure(err: anyhow::Error) -> Failure {
    match err.downcast_ref::<sheratan_ops::watch::AlreadyWatched>() {
        // Not a failure of this watcher: a setting to change (exit 2).
        Some(already) => crate::usage(already.to_string()),
        None => Failure::from(err),
    }
}

#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Where to write diag_bundle_<UTC timestamp>.zip [default: $SHERATAN_HOME/diagnostics].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub async fn diagnose(args: DiagnoseArgs) -> Result<(), Failure> {
    let input = sheratan_ops::diagnose::DiagnoseInput {
        control_url: args.client.control_url.clone(),
        data_url: args.client.data_url.clone(),
        token: args.client.token(),
        home: args.client.home.clone(),
        out_dir: args
            .out
            .unwrap_or_else(|| args.client.home.join("diagnostics")),
        version: VERSION.into(),
    };
    let path = sheratan_ops::diagnose::run(input)
        .await
        .map_err(Failure::from)?;
    println!("wrote {} (secrets redacted; mode 0600)", path.display());
    Ok(())
}

#[derive(Debug, Args)]
pub struct SmokeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(long)]
    pub json: bool,
}

pub async fn smoke(args: SmokeArgs) -> Result<(), Failure> {
    let input = sheratan_ops::smoke::SmokeInput {
        control_url: args.client.control_url.clone(),
        data_url: args.client.data_url.clone(),
        token: args.client.token(),
    };
    let checks = sheratan_ops::smoke::run(&input)
        .await
        .map_err(Failure::from)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "checks": checks, "passed": checks.iter().all(|c| c.ok) })
        );
    } else {
        print!("{}", sheratan_ops::smoke::render(&checks));
    }
    if checks.iter().all(|c| c.ok) {
        Ok(())
    } else {
        Err(Failure::quiet(1))
    }
}
