//! The mesh's own certificate authority, for a first mesh with no PKI of its own (rcgen, no
//! hand-written ASN.1). It lives in `$SHERATAN_HOME/tls/` (mode 0700): `ca.pem` (anyone may
//! have it: nodes pin its SHA-256) and `ca.key` (0600, never leaves the hub's machine). It
//! issues server certificates for the hub's names and addresses, and more on demand
//! (`sheratan tls cert`) for hosts, the relay, a Core elsewhere, or nodes' client certificates.

use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use sha2::Digest;
use time::{Duration, OffsetDateTime};

use crate::tls::TlsFiles;

/// How long the CA is valid.
const CA_VALIDITY: Duration = Duration::days(3650);
/// How long an issued certificate is valid.
pub const CERT_VALIDITY: Duration = Duration::days(365);
/// A certificate this close to its end is renewed (from the same CA) at the next start.
pub const RENEW_BEFORE: Duration = Duration::days(30);

/// The CA in a directory: its certificate (PEM) and the issuer made from it and its key.
pub struct MeshCa {
    dir: PathBuf,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    /// A node's client certificate (mutual TLS): its name is the node id.
    Client,
}

impl MeshCa {
    /// Opens the CA in `dir`, creating the directory (0700) and a new CA when there is none.
    pub fn open_or_create(dir: &Path) -> Result<Self, String> {
        let at = |what: String| format!("{}: {what}", dir.display());
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| at(format!("cannot create it: {e}")))?;
        make_private(dir)?;
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        refuse_shared(&key_path)?;
        if cert_path.exists() != key_path.exists() {
            let (there, missing) = if cert_path.exists() {
                (&cert_path, &key_path)
            } else {
                (&key_path, &cert_path)
            };
            return Err(format!(
                "{} is there but {} is not: restore it, or remove both to make a new CA (every certificate it issued must then be issued again)",
                there.display(),
                missing.display()
            ));
        }
        if !cert_path.exists() {
            let key = KeyPair::generate().map_err(|e| at(format!("CA key: {e}")))?;
            let cert = ca_params(&key)
                .self_signed(&key)
                .map_err(|e| at(format!("CA certificate: {e}")))?;
            write_file(&key_path, &key.serialize_pem(), 0o600)?;
            write_file(&cert_path, &cert.pem(), 0o644)?;
            tracing::info!(dir = %dir.display(), "created the mesh CA");
        }
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
        };
        let pem = read(&cert_path)?;
        let key = KeyPair::from_pem(&read(&key_path)?)
            .map_err(|e| format!("{}: not a private key: {e}", key_path.display()))?;
        if !key_matches(&pem, &key) {
            return Err(format!(
                "{} and {} do not belong together (is one of them from another CA?)",
                cert_path.display(),
                key_path.display()
            ));
        }
        let issuer = Issuer::from_ca_cert_pem(&pem, key)
            .map_err(|e| format!("{}: not a CA certificate: {e}", cert_path.display()))?;
        Ok(Self {
            dir: dir.to_owned(),
            pem,
            issuer,
        })
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// SHA-256 of the CA certificate's DER, lowercase hex: what a join string pins.
    pub fn sha256(&self) -> String {
        fingerprint(&self.pem).unwrap_or_default()
    }

    /// Issues a certificate for `name` with `sans` (DNS names or IP addresses), written as
    /// `<dir>/<file>.pem` and `<file>.key` (0600).
    pub fn issue(
        &self,
        name: &str,
        sans: &[String],
        usage: Usage,
        dir: &Path,
        file: &str,
    ) -> Result<TlsFiles, String> {
        self.issue_for(name, sans, usage, (dir, file), CERT_VALIDITY)
    }

    fn issue_for(
        &self,
        name: &str,
        sans: &[String],
        usage: Usage,
        (dir, file): (&Path, &str),
        validity: Duration,
    ) -> Result<TlsFiles, String> {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| format!("certificate for {name}: {e}"))?;
        params.subject_alt_names = sans.iter().map(|s| san(s)).collect::<Result<_, _>>()?;
        params.distinguished_name.push(DnType::CommonName, name);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + validity;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        let key = KeyPair::generate().map_err(|e| format!("key for {name}: {e}"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| format!("certificate for {name}: {e}"))?;
        let files = TlsFiles {
            cert: dir.join(format!("{file}.pem")),
            key: dir.join(format!("{file}.key")),
        };
        // Key first: a reloading listener that sees the new certificate finds its key.
        write_file(&files.key, &key.serialize_pem(), 0o600)?;
        write_file(&files.cert, &cert.pem(), 0o644)?;
        Ok(files)
    }

    /// The hub's own server certificate in the CA's directory (`server.pem`, `server.key`):
    /// issued when missing, when it ends within [`RENEW_BEFORE`], or when it lacks one of
    /// `sans`. The answer says whether it was (re)issued.
    pub fn server_cert(&self, name: &str, sans: &[String]) -> Result<(TlsFiles, bool), String> {
        let files = TlsFiles {
            cert: self.dir.join("server.pem"),
            key: self.dir.join("server.key"),
        };
        // Most starts find it current, and take no lock (a read-only directory works).
        if current_enough(&files, sans) {
            return Ok((files, false));
        }
        // One renewal at a time, across the processes sharing this home: two interleaved
        // renewals could leave one's key beside the other's certificate.
        let _lock = lock_dir(&self.dir)?;
        if current_enough(&files, sans) {
            return Ok((files, false));
        }
        let files = self.issue(name, sans, Usage::Server, &self.dir, "server")?;
        Ok((files, true))
    }
}

/// Whether an issued certificate is there, not near its end, and names every one of `sans`.
fn current_enough(files: &TlsFiles, sans: &[String]) -> bool {
    let Ok(pem) = std::fs::read(&files.cert) else {
        return false;
    };
    let key = std::fs::read_to_string(&files.key)
        .ok()
        .and_then(|k| KeyPair::from_pem(&k).ok());
    // A key that is not the certificate's (a crash between the two writes) is re-issued.
    if !key.is_some_and(|key| key_matches(&String::from_utf8_lossy(&pem), &key)) {
        return false;
    }
    let Some((not_after, names)) = validity_and_names(&pem) else {
        return false;
    };
    let fresh = not_after - OffsetDateTime::now_utc() > RENEW_BEFORE;
    fresh && sans.iter().all(|s| names.contains(&normal(s)))
}

/// A certificate's end of validity and the names and addresses it is for.
pub fn validity_and_names(pem: &[u8]) -> Option<(OffsetDateTime, Vec<String>)> {
    use x509_parser::extensions::GeneralName;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    let not_after =
        OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp()).ok()?;
    let mut names = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push(dns.to_ascii_lowercase()),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => names.push(IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?).to_string()),
                    16 => names.push(IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?).to_string()),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Some((not_after, names))
}

/// Whether `key` is the key of the certificate in `pem`.
fn key_matches(pem: &str, key: &KeyPair) -> bool {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(pem.as_bytes()) else {
        return false;
    };
    pem.parse_x509().is_ok_and(|cert| {
        cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw()
    })
}

/// The CA's key must be this user's and closed to everyone else.
fn refuse_shared(key: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(key) else {
        return Ok(());
    };
    if meta.uid() != rustix::process::geteuid().as_raw() || !meta.is_file() {
        return Err(format!(
            "{}: the CA's private key is not a file of this user's (owner uid {}); whoever owns it holds the CA",
            key.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{}: the CA's private key is open to other users (mode {:o}); chmod 600 it, and issue new certificates if someone may have copied it",
            key.display(),
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

/// The CA's directory must be this user's; wider rights than 0700 are narrowed (who may write
/// there may replace the CA). Left alone when it is private already (read-only mounts work).
fn make_private(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if meta.uid() != rustix::process::geteuid().as_raw() || !meta.is_dir() {
        return Err(format!(
            "{}: not a directory of this user's (owner uid {}); whoever owns it can replace the CA",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("{}: cannot make it private (chmod 700): {e}", dir.display()))?;
    }
    Ok(())
}

/// An exclusive lock on `<dir>/.server.lock`, waited for at most 10 s: no symlink followed, no
/// FIFO waited on.
fn lock_dir(dir: &Path) -> Result<std::fs::File, String> {
    use rustix::fs::OFlags;
    let path = dir.join(".server.lock");
    let at = |e: std::io::Error| format!("{}: {e}", path.display());
    let flags = (OFlags::NOFOLLOW | OFlags::NONBLOCK).bits();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(flags as i32)
        .open(&path)
        .map_err(at)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(lock),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "{}: another process has held it for 10 s",
                    path.display()
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(at(e)),
        }
    }
}

/// A name or address as a certificate lists it.
fn normal(text: &str) -> String {
    text.parse::<IpAddr>()
        .map_or_else(|_| text.to_ascii_lowercase(), |ip| ip.to_string())
}

fn ca_params(key: &KeyPair) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    // A name of its own per mesh (from its key): two meshes' CAs are never confused by name.
    let id: String = sha2::Sha256::digest(key.public_key_raw())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Sheratan mesh CA {id}"));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + CA_VALIDITY;
    params
}

fn san(text: &str) -> Result<SanType, String> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let refused = || format!("{text:?} is neither an IP address nor a DNS name");
    let wildcard = text.strip_prefix("*.");
    let name = wildcard.unwrap_or(text);
    // `*.com` would let the mesh CA speak for a whole top-level domain.
    let dns = !name.is_empty()
        && (wildcard.is_none() || name.split('.').count() >= 2)
        && text.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !dns {
        return Err(refused());
    }
    text.to_owned()
        .try_into()
        .map(SanType::DnsName)
        .map_err(|_| refused())
}

/// Keeps a mesh CA certificate a node trusts (no key) as `<dir>/ca.pem`, making `dir` (0700).
pub fn store_trusted(dir: &Path, pem: &str) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("{}: cannot create it: {e}", dir.display()))?;
    make_private(dir)?;
    write_file(&dir.join("ca.pem"), pem, 0o644)
}

/// The one certificate a CA answer may hold: its SHA-256 (what a join string pins) and that
/// certificate alone, re-encoded, so nothing else the server sent is ever kept or trusted (a
/// second certificate after the pinned one would otherwise become a trust anchor too).
pub fn one_certificate(pem: &str) -> Result<(String, String), String> {
    use base64::Engine;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    let [cert] = certs.as_slice() else {
        return Err(format!(
            "{} certificates where exactly one CA certificate belongs",
            certs.len()
        ));
    };
    let sha = sha2::Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).unwrap_or_default())
        .collect();
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    );
    Ok((sha, pem))
}

/// `<dir>/ca.pem` when it may be trusted without being named: `dir` belongs to this user and
/// no one else may write to it or to the file (a CA planted in a shared directory is not).
pub fn private_ca_file(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::getuid().as_raw();
    let private =
        |path: &Path| std::fs::metadata(path).is_ok_and(|m| m.uid() == me && m.mode() & 0o022 == 0);
    let file = dir.join("ca.pem");
    (private(dir) && private(&file)).then_some(file)
}

/// SHA-256 of the first certificate in `pem`, lowercase hex.
pub fn fingerprint(pem: &str) -> Option<String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    Some(
        sha2::Sha256::digest(der.as_ref())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// Writes a file whole with `mode`, replacing it atomically.
fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    use std::io::Write;
    let at = |e: std::io::Error| format!("{}: {e}", path.display());
    // Unique per writer: two processes making files here at once never share a temp file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let tmp = path.with_file_name(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(at)?;
    file.write_all(text.as_bytes()).map_err(at)?;
    file.sync_all().map_err(at)?;
    std::fs::rename(&tmp, path).map_err(at)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_ca_answer_is_one_certificate_and_only_that_is_kept() {
        let home = tempfile::tempdir().unwrap();
        let ca = MeshCa::open_or_create(&home.path().join("a")).unwrap();
        let other = MeshCa::open_or_create(&home.path().join("b")).unwrap();
        let (sha, pem) = one_certificate(ca.pem()).unwrap();
        assert_eq!(sha, ca.sha256());
        assert_eq!(
            fingerprint(&pem),
            Some(sha),
            "re-encoded, the same certificate"
        );
        // The pinned CA with another one after it: refused, not "the first one matches".
        let two = format!("{}{}", ca.pem(), other.pem());
        let err = one_certificate(&two).unwrap_err();
        assert!(err.contains("2 certificates"), "{err}");
        assert!(one_certificate("not pem").is_err());
    }

    #[test]
    fn an_open_ca_directory_is_narrowed_and_an_open_ca_key_refused() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("tls");
        MeshCa::open_or_create(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        MeshCa::open_or_create(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert!(private_ca_file(&dir).is_some());
        let key = dir.join("ca.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = MeshCa::open_or_create(&dir).err().unwrap();
        assert!(err.contains("open to other users"), "{err}");
        // A CA file others may write is not trusted without being named.
        std::fs::set_permissions(dir.join("ca.pem"), std::fs::Permissions::from_mode(0o666))
            .unwrap();
        assert!(private_ca_file(&dir).is_none());
    }

    #[test]
    fn a_server_certificate_whose_key_is_not_its_own_is_issued_again() {
        let home = tempfile::tempdir().unwrap();
        let ca = MeshCa::open_or_create(home.path()).unwrap();
        let sans = ["127.0.0.1".to_owned()];
        let (files, fresh) = ca.server_cert("hub", &sans).unwrap();
        assert!(fresh);
        assert!(!ca.server_cert("hub", &sans).unwrap().1, "current: kept");
        // A crash between the two writes of a renewal: the key of another pair.
        let stray = ca
            .issue("x", &sans, Usage::Server, home.path(), "stray")
            .unwrap();
        std::fs::copy(&stray.key, &files.key).unwrap();
        assert!(
            ca.server_cert("hub", &sans).unwrap().1,
            "mismatched: issued again"
        );
        assert!(crate::tls::TlsServer::load(files).is_ok());
    }

    #[test]
    fn a_ca_is_made_once_with_private_files_and_keeps_its_fingerprint() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("tls");
        let ca = MeshCa::open_or_create(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("ca.key")), 0o600);
        let sha = ca.sha256();
        assert_eq!(sha.len(), 64);
        let again = MeshCa::open_or_create(&dir).unwrap();
        assert_eq!(again.sha256(), sha, "the same CA, not a new one");
        assert_eq!(
            fingerprint(&std::fs::read_to_string(dir.join("ca.pem")).unwrap()),
            Some(sha)
        );
        // Another mesh's CA differs, name included.
        let other = MeshCa::open_or_create(&home.path().join("other")).unwrap();
        assert_ne!(other.sha256(), ca.sha256());
        assert_ne!(other.pem(), ca.pem());
    }

    #[test]
    fn the_server_certificate_is_reissued_when_missing_near_its_end_or_short_of_a_name() {
        let home = tempfile::tempdir().unwrap();
        let ca = MeshCa::open_or_create(&home.path().join("tls")).unwrap();
        let sans = vec!["hub.example".to_owned(), "127.0.0.1".to_owned()];
        let (files, made) = ca.server_cert("hub", &sans).unwrap();
        assert!(made);
        assert_eq!(mode(&files.key), 0o600);
        let (end, names) = validity_and_names(&std::fs::read(&files.cert).unwrap()).unwrap();
        assert!(
            names.contains(&"hub.example".to_owned()) && names.contains(&"127.0.0.1".to_owned()),
            "{names:?}"
        );
        let days = (end - OffsetDateTime::now_utc()).whole_days();
        assert!((364..=365).contains(&days), "{days}");
        assert!(!ca.server_cert("hub", &sans).unwrap().1, "current: kept");
        let more = vec!["hub.example".to_owned(), "10.1.2.3".to_owned()];
        assert!(
            ca.server_cert("hub", &more).unwrap().1,
            "a new address: reissued"
        );
        // Near its end: renewed from the same CA.
        ca.issue_for(
            "hub",
            &more,
            Usage::Server,
            (home.path().join("tls").as_path(), "server"),
            Duration::days(10),
        )
        .unwrap();
        assert!(
            ca.server_cert("hub", &more).unwrap().1,
            "ending within 30 days: renewed"
        );
    }

    #[test]
    fn names_that_are_neither_dns_nor_ip_are_refused() {
        let home = tempfile::tempdir().unwrap();
        let ca = MeshCa::open_or_create(&home.path().join("tls")).unwrap();
        let err = ca
            .issue(
                "x",
                &["not a name!".to_owned()],
                Usage::Server,
                home.path(),
                "x",
            )
            .unwrap_err();
        assert!(
            err.contains("neither an IP address nor a DNS name"),
            "{err}"
        );
        for bad in [
            "",
            "-a.example",
            "a..example",
            "a_b.example",
            "*.",
            "*.com",
            "a b",
        ] {
            assert!(san(bad).is_err(), "{bad:?}");
        }
        for good in ["hub", "hub.example", "*.mesh.example", "10.0.0.1", "::1"] {
            assert!(san(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn a_half_or_mismatched_ca_is_refused_not_replaced() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("tls");
        MeshCa::open_or_create(&dir).unwrap();
        let other = home.path().join("other");
        MeshCa::open_or_create(&other).unwrap();
        // A key from another CA.
        std::fs::copy(other.join("ca.key"), dir.join("ca.key")).unwrap();
        let err = MeshCa::open_or_create(&dir).err().unwrap();
        assert!(err.contains("do not belong together"), "{err}");
        // Half a CA (a crash between the two files): refused, never silently remade.
        std::fs::remove_file(dir.join("ca.key")).unwrap();
        let err = MeshCa::open_or_create(&dir).err().unwrap();
        assert!(err.contains("remove both to make a new CA"), "{err}");
        assert!(!dir.join("ca.key").exists());
    }
}
