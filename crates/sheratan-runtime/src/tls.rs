//! Server TLS for the listeners: rustls on the aws-lc-rs provider, TLS 1.2 and 1.3 with rustls'
//! defaults, HTTP/1.1 over it (ALPN `http/1.1`).
//!
//! The certificate and key are PEM files, reloaded when they change on disk: the resolver
//! looks at the files' modification times at most once a second, at a handshake, and swaps in
//! the new pair once it parses and matches; a pair that does not parse keeps the old one
//! serving (and says why in the log), so a half-written renewal never takes a listener down.
//! A key file that every user of the machine may read is refused.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often a handshake may look at the files for a renewal.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Where a listener's certificate chain and private key are (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A listener's TLS: the server configuration over a certificate that follows its files.
#[derive(Clone)]
pub struct TlsServer {
    acceptor: tokio_rustls::TlsAcceptor,
    resolver: Arc<Reloading>,
    plain_from_loopback: bool,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("files", &self.resolver.files)
            .finish()
    }
}

/// The workspace's one crypto provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The name (common name) of the client certificate a connection presented, put into each
/// of its requests' extensions by the accept loop (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert(pub String);

impl TlsServer {
    /// Loads the pair; the error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Self, String> {
        Self::load_with(files, None)
    }

    /// [`TlsServer::load`], requiring every TLS client to present a certificate issued by a CA
    /// in `client_ca` (PEM) when given: mutual TLS.
    pub fn load_with(files: TlsFiles, client_ca: Option<&Path>) -> Result<Self, String> {
        let provider = provider();
        let key = load_pair(&files, &provider)?;
        let resolver = Arc::new(Reloading {
            state: Mutex::new(Current {
                key,
                stamp: stamp(&files),
                checked: Instant::now(),
                failed: None,
            }),
            files,
            provider: provider.clone(),
        });
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS configuration: {e}"))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            resolver,
            plain_from_loopback: false,
        })
    }

    pub fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }

    /// Also answers plain HTTP from this machine's loopback addresses (`SHERATAN_TLS=auto`:
    /// such traffic never crosses a network, like a loopback-only listener's). Other sources
    /// speaking plain HTTP still get the 400.
    pub fn with_plain_from_loopback(mut self, allow: bool) -> Self {
        self.plain_from_loopback = allow;
        self
    }

    pub fn plain_from_loopback(&self) -> bool {
        self.plain_from_loopback
    }
}

/// The pair being served, and what its files looked like when it was read.
struct Current {
    key: Arc<CertifiedKey>,
    stamp: Option<Stamp>,
    checked: Instant,
    /// The files' stamp when a reload last failed: said once, retried quietly.
    failed: Option<Stamp>,
}

/// Modification time, length and inode of both files: a change to either is a renewal (a
/// file replaced by a rename changes its inode even within one clock tick).
type Stamp = [(SystemTime, u64, u64); 2];

fn stamp(files: &TlsFiles) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let one = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len(), m.ino())))
    };
    Some([one(&files.cert)?, one(&files.key)?])
}

struct Reloading {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    state: Mutex<Current>,
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("files", &self.files)
            .finish()
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.state.lock().expect("tls state lock");
        if current.checked.elapsed() >= RELOAD_CHECK {
            current.checked = Instant::now();
            let now = stamp(&self.files);
            if now.is_some() && now != current.stamp {
                match load_pair(&self.files, &self.provider) {
                    Ok(key) => {
                        current.key = key;
                        current.stamp = now;
                        tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                    }
                    // Maybe half written: keep serving the old pair, try again in a second.
                    Err(err) => {
                        if current.failed != now {
                            current.failed = now;
                            tracing::warn!(
                                "TLS certificate not reloaded, the current one stays: {err}"
                            );
                        }
                    }
                }
            }
        }
        Some(current.key.clone())
    }
}

/// Client certificates must chain to a CA in `path`.
fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let at = |what: String| format!("{} (SHERATAN_TLS_CLIENT_CA): {what}", path.display());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path)
        .map_err(|e| at(format!("cannot read a PEM certificate: {e}")))?
    {
        let cert = cert.map_err(|e| at(format!("not a PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| at(format!("not a CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(at("holds no certificate".into()));
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| at(e.to_string()))
}

/// The common name of a DER certificate (a client certificate's is its node id).
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some(name.to_owned())
}

/// Reads, checks and pairs a certificate chain and its key.
fn load_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, String> {
    refuse_shared_key(&files.key)?;
    let at = |path: &Path, what: String| format!("{}: {what}", path.display());
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| at(&files.cert, format!("cannot read a PEM certificate: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| at(&files.cert, format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(at(
            &files.cert,
            "holds no certificate (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| at(&files.key, format!("not a PEM private key: {e}")))?;
    let key = CertifiedKey::from_der(certs, key, provider).map_err(|e| {
        format!(
            "{} and {}: {e} (is the key the certificate's?)",
            files.cert.display(),
            files.key.display()
        )
    })?;
    Ok(Arc::new(key))
}

/// A private key every user of the machine may read is no secret: refuse it.
fn refuse_shared_key(path: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("{}: cannot read it: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o004 != 0 {
        return Err(format!(
            "{}: the private key is readable by every user of this machine (mode {mode:o}); chmod 600 it",
            path.display()
        ));
    }
    Ok(())
}

/// Which listeners serve TLS (`SHERATAN_TLS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Listeners bound to a non-loopback address (0.0.0.0 included) serve TLS; loopback-only
    /// ones stay plain HTTP (only this machine reaches them).
    #[default]
    Auto,
    /// Every listener serves TLS.
    On,
    /// No listener does: an explicit opt-out, warned about at start for non-loopback ones.
    Off,
}

impl TlsMode {
    /// Whether a listener bound to `addr` serves TLS.
    pub fn serves_tls(self, addr: std::net::SocketAddr) -> bool {
        match self {
            TlsMode::On => true,
            TlsMode::Off => false,
            TlsMode::Auto => !addr.ip().is_loopback(),
        }
    }
}

/// The addresses this machine answers on, from the kernel's tables (`/proc/net/fib_trie` for
/// IPv4, `/proc/net/if_inet6` for IPv6; link-local ones left out): what a certificate for
/// "this machine" names. Loopback included; empty where `/proc` is not Linux's.
pub fn local_addresses() -> Vec<std::net::IpAddr> {
    let mut found: Vec<std::net::IpAddr> = Vec::new();
    // fib_trie prints each local address on the line before its "/32 host LOCAL".
    if let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") {
        let mut previous = "";
        for line in trie.lines() {
            if line.trim() == "/32 host LOCAL"
                && let Some(ip) = previous.trim().strip_prefix("|-- ")
                && let Ok(ip) = ip.parse::<std::net::Ipv4Addr>()
            {
                found.push(ip.into());
            }
            previous = line;
        }
    }
    if let Ok(v6) = std::fs::read_to_string("/proc/net/if_inet6") {
        for hex in v6.lines().filter_map(|l| l.split_whitespace().next()) {
            if let Ok(bits) = u128::from_str_radix(hex, 16) {
                let ip = std::net::Ipv6Addr::from(bits);
                if !ip.is_unicast_link_local() {
                    found.push(ip.into());
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// What the first bytes of a connection to a TLS port say: a TLS record starts with 0x16
/// (handshake); an HTTP/1 request starts with its method's letters.
pub fn looks_like_plain_http(first: &[u8]) -> bool {
    first.first().is_some_and(|b| b.is_ascii_uppercase())
}

/// The answer to a plain-HTTP request on a TLS port: a clear error, then the connection closes.
pub const PLAIN_HTTP_ON_TLS_PORT: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: 68\r\n\r\n\
this port speaks TLS: use https:// (and the mesh CA, if it has one)\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_serves_tls_where_other_machines_can_reach() {
        let at = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert!(!TlsMode::Auto.serves_tls(at("127.0.0.1:1")));
        assert!(!TlsMode::Auto.serves_tls(at("[::1]:1")));
        assert!(TlsMode::Auto.serves_tls(at("0.0.0.0:1")));
        assert!(TlsMode::Auto.serves_tls(at("10.1.2.3:1")));
        assert!(TlsMode::On.serves_tls(at("127.0.0.1:1")));
        assert!(!TlsMode::Off.serves_tls(at("0.0.0.0:1")));
    }

    #[test]
    fn this_machines_addresses_include_loopback() {
        let found = local_addresses();
        assert!(
            found.contains(&std::net::IpAddr::from([127, 0, 0, 1])),
            "{found:?}"
        );
    }

    #[test]
    fn the_plain_http_answer_has_the_length_it_says() {
        let text = std::str::from_utf8(PLAIN_HTTP_ON_TLS_PORT).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(looks_like_plain_http(b"GET / HTTP/1.1"));
        assert!(!looks_like_plain_http(&[0x16, 0x03, 0x01]));
    }
}
