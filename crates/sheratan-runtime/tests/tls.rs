//! The listeners' TLS over real sockets: a verified handshake (TLS 1.3 and 1.2), a certificate
//! renewed on disk served without a restart, a half-written renewal that keeps the old one,
//! a plain-HTTP request that gets a clear answer, and every bad file refused with its name.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use sheratan_runtime::serve::{ServeLimits, ServeStats, serve_with};
use sheratan_runtime::tls::{TlsFiles, TlsServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// A test CA and what it issues.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Self {
        Self::named("sheratan test CA")
    }

    fn named(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            issuer: Issuer::new(params, key),
            cert: cert.der().clone(),
        }
    }

    /// A server certificate for 127.0.0.1 with `name` as its common name, as PEM files in
    /// `dir` (the key 0600).
    fn issue(&self, dir: &Path, name: &str) -> TlsFiles {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = TlsFiles {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        write_private(&files.key, &key.serialize_pem());
        std::fs::write(&files.cert, cert.pem()).unwrap();
        files
    }
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Serves a router answering `ok` on every path over TLS; its address.
async fn server(files: TlsFiles) -> (SocketAddr, CancellationToken) {
    let tls = TlsServer::load(files).expect("the test certificate loads");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().fallback(|| async { "ok" });
    let stop = CancellationToken::new();
    tokio::spawn(serve_with(
        listener,
        router,
        ServeLimits::default(),
        Arc::new(ServeStats::default()),
        stop.clone(),
        Some(tls),
    ));
    (addr, stop)
}

/// One HTTPS request verified against `ca`, with the given protocol versions: the answer's
/// text and the certificate the server showed.
async fn get(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<(String, CertificateDer<'static>), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(sheratan_runtime::tls::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let shown = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    tls.write_all(b"GET /x HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    Ok((answer, shown))
}

const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

#[tokio::test]
async fn https_with_tls_1_3_and_1_2_verified_against_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (addr, _stop) = server(ca.issue(dir.path(), "first")).await;
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let (answer, _) = get(addr, &ca.cert, versions).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok"), "{answer}");
    }
    // A client that does not trust this CA refuses the server.
    let other = Ca::named("another CA");
    let err = get(addr, &other.cert, BOTH).await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    // Nor does one that trusts a CA of the same name but another key.
    let impostor = Ca::new();
    let err = get(addr, &impostor.cert, BOTH).await.unwrap_err();
    assert!(err.contains("BadSignature"), "{err}");
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let files = ca.issue(dir.path(), "first");
    let (addr, _stop) = server(files.clone()).await;
    let (_, first) = get(addr, &ca.cert, BOTH).await.unwrap();

    // Renewed on disk: new connections get the new certificate (the files are looked at
    // at most once a second).
    let renewed = tempfile::tempdir().unwrap();
    let next = ca.issue(renewed.path(), "second");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::copy(&next.key, &files.key).unwrap();
    std::fs::copy(&next.cert, &files.cert).unwrap();
    let new_der = std::fs::read(&next.cert).unwrap();
    let mut shown = first.clone();
    for _ in 0..30 {
        shown = get(addr, &ca.cert, BOTH).await.unwrap().1;
        if shown != first {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(shown, first, "the renewed certificate is served");
    let expected = rustls::pki_types::pem::PemObject::from_pem_slice(&new_der).unwrap();
    let expected: CertificateDer<'_> = expected;
    assert_eq!(shown, expected);

    // Half written (garbage): the current certificate stays, the listener keeps serving.
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (answer, still) = get(addr, &ca.cert, BOTH).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(still, shown);
}

#[tokio::test]
async fn plain_http_on_a_tls_port_gets_a_clear_answer_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (addr, _stop) = server(ca.issue(dir.path(), "first")).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut answer))
        .await
        .expect("an answer, not a hang")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("this port speaks TLS: use https://"),
        "{answer}"
    );
}

#[test]
fn bad_files_are_refused_with_their_name_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let files = ca.issue(dir.path(), "first");
    let err = |files: &TlsFiles| TlsServer::load(files.clone()).unwrap_err();

    // A key every user may read.
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = err(&files);
    assert!(e.contains("server.key") && e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Missing, empty, garbage, and a key that is not the certificate's.
    let missing = TlsFiles {
        cert: dir.path().join("nope.pem"),
        key: files.key.clone(),
    };
    assert!(err(&missing).contains("nope.pem"), "{}", err(&missing));
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let e = err(&TlsFiles {
        cert: empty,
        key: files.key.clone(),
    });
    assert!(
        e.contains("empty.pem") && e.contains("no certificate"),
        "{e}"
    );
    let junk_key = dir.path().join("junk.key");
    write_private(&junk_key, "this is not a key\n");
    let e = err(&TlsFiles {
        cert: files.cert.clone(),
        key: junk_key,
    });
    assert!(e.contains("junk.key") && e.contains("private key"), "{e}");
    let other = tempfile::tempdir().unwrap();
    let foreign = ca.issue(other.path(), "other");
    let e = err(&TlsFiles {
        cert: files.cert.clone(),
        key: foreign.key,
    });
    assert!(
        e.contains("server.pem") && e.contains("the certificate's"),
        "{e}"
    );
}

/// The mesh CA's server certificate serves TLS that a client trusting only `ca.pem` verifies.
#[tokio::test]
async fn the_mesh_ca_issues_a_certificate_its_clients_verify() {
    let home = tempfile::tempdir().unwrap();
    let ca = sheratan_runtime::ca::MeshCa::open_or_create(&home.path().join("tls")).unwrap();
    let (files, _) = ca.server_cert("hub", &["127.0.0.1".to_owned()]).unwrap();
    let (addr, _stop) = server(files).await;
    let ca_der: CertificateDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_slice(ca.pem().as_bytes()).unwrap();
    let (answer, _) = get(addr, &ca_der, BOTH).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
