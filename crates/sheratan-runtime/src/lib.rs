//! Process plumbing shared by every `sheratan` subcommand: logging set-up, the shutdown token
//! that SIGINT and SIGTERM cancel, and the one HTTP edge every server shares: the accept loop
//! ([`serve`]: timeouts, per-source caps, drain) and the request side ([`edge`]: the
//! contract's error type, authentication, bodies within the limit); and the one metrics
//! exposition every component's `/metrics` uses ([`metrics`]).

pub mod ca;
pub mod edge;
pub mod metrics;
pub mod serve;
pub mod tls;

use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Makes this process non-dumpable: other processes running as the same user (a job's
/// command among them) can no longer read its environment (`/proc/PID/environ`, where the
/// mesh token and API keys may be), its memory, or attach a debugger to it; core dumps are off.
/// Children are not affected (an `execve` resets the flag). Failure is logged, not fatal.
pub fn guard_process_secrets() {
    #[cfg(target_os = "linux")]
    if let Err(err) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        tracing::warn!(%err, "cannot make this process non-dumpable; processes of the same user can read its environment");
    }
}

/// Logs to stderr. `RUST_LOG` (or `SHERATAN_LOG`) filters, default `info`;
/// `SHERATAN_LOG_FORMAT=json` switches to one JSON object per line.
pub fn init_tracing() {
    let filter = std::env::var("SHERATAN_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_owned());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("SHERATAN_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// A token cancelled by the first SIGINT (Ctrl-C) or SIGTERM. A second signal exits at once,
/// for the operator whose graceful shutdown is stuck.
///
/// The handlers are installed before this returns, so call it before announcing readiness:
/// a SIGTERM that arrives right after the "ready" line must shut down cleanly, not kill the
/// process with the default action.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    let mut signals = Signals::install();
    tokio::spawn(async move {
        signals.next().await;
        tracing::info!("shutting down (send the signal again to exit at once)");
        cancel.cancel();
        signals.next().await;
        tracing::warn!("second signal: exiting without a clean shutdown");
        std::process::exit(130);
    });
    token
}

/// SIGTERM and SIGINT streams, registered when created.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let register = |kind| {
                signal(kind)
                    .map_err(|err| tracing::warn!(%err, "cannot install a signal handler"))
                    .ok()
            };
            Signals {
                term: register(SignalKind::terminate()),
                int: register(SignalKind::interrupt()),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = recv(&mut self.term) => {}
                () = recv(&mut self.int) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
