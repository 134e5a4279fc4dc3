//! The start-up banner of `sheratan hub` and `up`: where everything listens, where the token
//! and state are, what to try next. Its last line starts with `ready:`; scripts and the
//! testkit wait for it, so it is printed only once every listener is bound and the signal
//! handlers are installed.

use std::io::Write;
use std::path::{Path, PathBuf};

use sheratan_hub::{Hub, HubConfig};

use crate::VERSION;
use crate::hub_args::StoreUrl;
use crate::up_cmd::Members;

pub struct Banner {
    lines: Vec<String>,
    auth_required: bool,
    token_from_env: bool,
    try_next: Vec<String>,
}

impl Banner {
    /// What the hub's configuration already says (the config is consumed by the hub).
    pub fn hub(config: &HubConfig) -> Banner {
        Banner {
            lines: Vec::new(),
            auth_required: config.tokens.required,
            token_from_env: config.tokens.token.is_some(),
            try_next: Vec::new(),
        }
    }

    /// The hub's planes, and what `up` runs beside it.
    pub fn listeners(&mut self, hub: &Hub, members: &Members) {
        let scheme = |plane: usize| match hub.state().tls[plane] {
            Some(_) => "https",
            None => "http",
        };
        if let Some(addr) = hub.control_addr() {
            self.lines.push(control_line(scheme(0), addr));
        }
        if let Some(addr) = hub.data_addr() {
            let scheme = scheme(1);
            self.lines.push(format!(
                "data plane: {scheme}://{addr}  (jobs, leases, results; /health and /admin from loopback only)"
            ));
        }
        for w in &members.workers {
            self.lines.push(format!(
                "worker: {} ({} slots; queues {}; handlers {})",
                w.node_id,
                w.concurrency,
                w.queues.join(","),
                w.handlers.names().join(",")
            ));
        }
        self.lines.extend(members.banner.iter().cloned());
    }

    /// Alerts, token, state and store; for `up`, what to try next.
    pub fn state(&mut self, hub: &Hub, home: &Path, store: &StoreUrl, up: bool) {
        let home = canonical(home);
        if up {
            let alerts = home.join("logs").join(sheratan_proto::event::ALERTS_FILE);
            self.lines
                .push(format!("alerts: {} (audit watcher)", alerts.display()));
        }
        if !self.auth_required {
            self.lines.push(
                "token: NONE - SHERATAN_HUB_TOKEN_REQUIRED=0, anyone who reaches the hub controls it"
                    .into(),
            );
        } else if self.token_from_env {
            self.lines.push("token: from SHERATAN_HUB_TOKEN".into());
        } else if let Some(path) = hub.state().tokens.token_file() {
            self.lines
                .push(format!("token: {}", canonical(path).display()));
        }
        let ca = home.join("tls").join("ca.pem");
        if hub.state().tls.iter().any(Option::is_some)
            && let Some(sha) = std::fs::read_to_string(&ca)
                .ok()
                .and_then(|pem| sheratan_runtime::ca::fingerprint(&pem))
        {
            self.lines.push(format!(
                "tls: mesh CA {} (sha256 {}…); nodes elsewhere join with `sheratan join-string`",
                ca.display(),
                &sha[..16]
            ));
        }
        self.lines.push(format!("state: {}", home.display()));
        self.lines.push(format!("store: {}", store.display()));
        if up {
            self.try_next = try_next(hub);
        }
    }

    /// Prints the banner, `ready:` last.
    pub fn print(&self, up: bool) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "sheratan {VERSION}");
        for line in &self.lines {
            let _ = writeln!(out, "  {line}");
        }
        if !self.try_next.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "Try (in another terminal, in this directory):");
            for line in &self.try_next {
                let _ = writeln!(out, "  {line}");
            }
        }
        let what = if up { "everything" } else { "the hub" };
        let _ = writeln!(out, "ready: Ctrl-C (or SIGTERM) stops {what}");
        let _ = out.flush();
    }
}

/// The commands to try once `up` runs, with the hub's URLs when they are not the defaults.
fn try_next(hub: &Hub) -> Vec<String> {
    // The commands' defaults are http://127.0.0.1:8787 and :8788, which a TLS plane still
    // answers from loopback unless it speaks TLS only (SHERATAN_TLS=on).
    let tls_only = hub
        .state()
        .tls
        .iter()
        .flatten()
        .any(|t| !t.plain_from_loopback());
    let env = match (hub.control_url(), hub.data_url()) {
        (Some(c), Some(d)) if !c.ends_with(":8787") || !d.ends_with(":8788") || tls_only => {
            format!("SHERATAN_CONTROL_URL={c} SHERATAN_DATA_URL={d} ")
        }
        _ => String::new(),
    };
    vec![
        format!("{env}sheratan submit --kind echo --payload '{{\"hello\":\"world\"}}' --wait"),
        format!("{env}sheratan nodes"),
    ]
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

/// The control plane's line. On every address (the default, so nodes on other machines can
/// heartbeat) the line says so first, with the setting that keeps it on this machine.
fn control_line(scheme: &str, addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        let how = if scheme == "https" {
            "over TLS, "
        } else {
            "PLAIN HTTP, "
        };
        format!(
            "control plane: {scheme}://{addr}  (ON EVERY ADDRESS of this machine, {how}for nodes elsewhere; SHERATAN_CONTROL_ADDR=127.0.0.1:{} keeps it local; public /health, everything else needs the token)",
            addr.port()
        )
    } else {
        format!(
            "control plane: {scheme}://{addr}  (public /health; everything else needs the token)"
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_control_line_says_when_it_listens_everywhere() {
        let everywhere = super::control_line("http", "0.0.0.0:8787".parse().unwrap());
        assert!(everywhere.contains("ON EVERY ADDRESS"), "{everywhere}");
        assert!(
            everywhere.contains("SHERATAN_CONTROL_ADDR=127.0.0.1:8787"),
            "{everywhere}"
        );
        let local = super::control_line("http", "127.0.0.1:8787".parse().unwrap());
        assert!(!local.contains("EVERY"), "{local}");
    }
}
