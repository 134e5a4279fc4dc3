//! Which listeners serve TLS, and with what certificate: `SHERATAN_TLS` decides per listener
//! (auto: those other machines can reach), `SHERATAN_TLS_CERT`/`_KEY` name a certificate,
//! and without one the mesh CA under `$SHERATAN_HOME/tls` issues it (the hub makes the CA on
//! first start; other components use it when they run on the hub's machine).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use sheratan_runtime::ca::MeshCa;
use sheratan_runtime::tls::{TlsFiles, TlsMode, TlsServer};

/// How often a running process checks whether its issued certificate needs renewing (the CA
/// renews it 30 days before its end; the listener picks the new files up on its own).
const RENEW_CHECK: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsModeArg {
    Auto,
    On,
    Off,
}

/// Every server's TLS settings (flattened into the edge's).
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// auto: TLS on listeners bound to a non-loopback address (0.0.0.0 included), plain HTTP
    /// on loopback ones; on: TLS everywhere; off: never (a non-loopback listener warns).
    #[arg(long = "tls", env = "SHERATAN_TLS", value_enum, default_value = "auto")]
    pub tls_mode: TlsModeArg,

    /// Serve TLS with this certificate chain (PEM), reloaded when the file changes; without
    /// it, a certificate from the mesh CA in $SHERATAN_HOME/tls. Needs --tls-key.
    #[arg(long, env = "SHERATAN_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// The certificate's private key (PEM; refused if every user of the machine may read it).
    #[arg(long, env = "SHERATAN_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// More names and addresses for the certificate the mesh CA issues (comma-separated),
    /// beside this machine's hostname and addresses.
    #[arg(long, env = "SHERATAN_TLS_SANS", value_delimiter = ',')]
    pub tls_sans: Vec<String>,
}

/// Where a listener's certificate comes from when none is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issuer {
    /// The hub (and `up`): makes the mesh CA on first start.
    MakeCa,
    /// Other components: the mesh CA if its key is in this home (the hub's machine), else
    /// the operator must give a certificate.
    LocalCa,
}

impl TlsArgs {
    pub fn mode(&self) -> TlsMode {
        match self.tls_mode {
            TlsModeArg::Auto => TlsMode::Auto,
            TlsModeArg::On => TlsMode::On,
            TlsModeArg::Off => TlsMode::Off,
        }
    }

    /// The configured certificate, if any: both files or neither.
    pub fn files(&self) -> Result<Option<TlsFiles>, String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (None, None) => Ok(None),
            _ => Err(
                "SHERATAN_TLS_CERT and SHERATAN_TLS_KEY go together: give both or neither".into(),
            ),
        }
    }

    /// The TLS of the listener `what` (as the operator knows it: "the hub's control plane")
    /// bound to `addr`; `None` where it serves plain HTTP.
    pub fn listener(
        &self,
        what: &str,
        addr: SocketAddr,
        home: &Path,
        issuer: Issuer,
    ) -> Result<Option<TlsServer>, String> {
        self.listener_with(what, addr, home, issuer, None)
    }

    /// [`TlsArgs::listener`], requiring client certificates from `client_ca` (mutual TLS).
    pub fn listener_with(
        &self,
        what: &str,
        addr: SocketAddr,
        home: &Path,
        issuer: Issuer,
        client_ca: Option<&Path>,
    ) -> Result<Option<TlsServer>, String> {
        let files = self.files()?;
        // Under auto, a certificate the operator gave means TLS even on loopback.
        let given = self.mode() == TlsMode::Auto && files.is_some();
        if !self.mode().serves_tls(addr) && !given {
            if client_ca.is_some() {
                return Err(format!(
                    "SHERATAN_TLS_CLIENT_CA asks for client certificates, but {what} on {addr} serves plain HTTP (SHERATAN_TLS={}): use SHERATAN_TLS=on",
                    self.mode_name()
                ));
            }
            if !addr.ip().is_loopback() {
                tracing::warn!(
                    "{what} on {addr} serves plain HTTP to the network (SHERATAN_TLS=off): the token, payloads and results cross it in clear text; remove SHERATAN_TLS=off to serve TLS"
                );
            }
            return Ok(None);
        }
        let files = match files {
            Some(files) => files,
            None => self.issue(what, addr, home, issuer)?,
        };
        // Auto lets this machine's own connections stay plain on a listener that serves TLS
        // to others (as on a loopback-only one); a loopback listener with a given
        // certificate, and `on`, speak TLS only.
        // Mutual TLS holds for every connection: no plain ones, loopback or not.
        let plain_from_loopback =
            self.mode() == TlsMode::Auto && !addr.ip().is_loopback() && client_ca.is_none();
        Ok(Some(
            TlsServer::load_with(files, client_ca)?.with_plain_from_loopback(plain_from_loopback),
        ))
    }

    /// A certificate from the mesh CA for this machine's names and addresses.
    fn issue(
        &self,
        what: &str,
        addr: SocketAddr,
        home: &Path,
        issuer: Issuer,
    ) -> Result<TlsFiles, String> {
        let dir = home.join("tls");
        if issuer == Issuer::LocalCa && !dir.join("ca.key").exists() {
            return Err(format!(
                "{what} listens on {addr}, so it serves TLS (SHERATAN_TLS={}), and no certificate is configured: give SHERATAN_TLS_CERT and SHERATAN_TLS_KEY (issue them on the hub's machine with `sheratan tls cert --name NAME --san THIS_MACHINES_ADDRESS`), bind it to 127.0.0.1, or set SHERATAN_TLS=off",
                self.mode_name()
            ));
        }
        let ca = MeshCa::open_or_create(&dir)?;
        let sans = machine_sans(addr, &self.tls_sans);
        let (files, fresh) = ca.server_cert(&crate::client_args::hostname(), &sans)?;
        if fresh {
            tracing::info!(
                "issued a TLS certificate from the mesh CA ({}) for {}",
                ca.cert_path().display(),
                sans.join(", ")
            );
        }
        renew_in_background(dir, sans);
        Ok(files)
    }

    fn mode_name(&self) -> &'static str {
        match self.tls_mode {
            TlsModeArg::Auto => "auto",
            TlsModeArg::On => "on",
            TlsModeArg::Off => "off",
        }
    }
}

/// What a certificate for this machine names: its hostname, `localhost`, every local address,
/// the listener's own address when it is a specific one, and the operator's extra names.
fn machine_sans(addr: SocketAddr, extra: &[String]) -> Vec<String> {
    let host = crate::client_args::hostname();
    // A hostname a certificate cannot carry (an underscore, say) is left out, not fatal.
    let dns_safe = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    let mut sans: Vec<String> = dns_safe.then_some(host).into_iter().collect();
    sans.push("localhost".to_owned());
    sans.extend(
        sheratan_runtime::tls::local_addresses()
            .iter()
            .map(|ip| ip.to_string()),
    );
    if !addr.ip().is_unspecified() {
        sans.push(addr.ip().to_string());
    }
    sans.extend(
        extra
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()),
    );
    let mut seen = std::collections::HashSet::new();
    sans.retain(|s| seen.insert(s.clone()));
    sans
}

/// Re-checks the issued certificate twice a day, so a process that runs for a year still
/// serves a valid one (the listener reloads the renewed files by itself).
fn renew_in_background(dir: PathBuf, sans: Vec<String>) {
    // One task per directory however many listeners use its certificate.
    static RENEWING: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    {
        let mut renewing = RENEWING.lock().expect("renewal list");
        if renewing.contains(&dir) {
            return;
        }
        renewing.push(dir.clone());
    }
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(RENEW_CHECK).await;
            let (dir, sans) = (dir.clone(), sans.clone());
            let renewed = tokio::task::spawn_blocking(move || {
                MeshCa::open_or_create(&dir)?.server_cert(&crate::client_args::hostname(), &sans)
            })
            .await;
            match renewed {
                Ok(Ok((_, true))) => tracing::info!("renewed the TLS certificate from the mesh CA"),
                Ok(Ok(_)) => {}
                Ok(Err(err)) => tracing::warn!("cannot renew the TLS certificate: {err}"),
                Err(err) => tracing::warn!("cannot renew the TLS certificate: {err}"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_certificate_names_loopback_the_listener_and_the_extras() {
        let sans = machine_sans(
            "10.9.8.7:8787".parse().unwrap(),
            &["hub.example".into(), " ".into(), "localhost".into()],
        );
        for name in ["localhost", "127.0.0.1", "10.9.8.7", "hub.example"] {
            assert!(sans.iter().any(|s| s == name), "{name} in {sans:?}");
        }
        assert_eq!(sans.iter().filter(|s| *s == "localhost").count(), 1);
        assert!(!sans.iter().any(|s| s.trim().is_empty()), "{sans:?}");
    }
}
