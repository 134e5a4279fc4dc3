//! A lean HTTP/1.1 load generator: one keep-alive connection per lane, one request in flight
//! per connection, latency recorded for every request. It uses hyper directly because on a
//! 2-core machine the generator's own CPU comes straight out of the hub's budget.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// The lanes' TLS: the system's roots are not needed against a hub the bench started, the
/// mesh CA (`SHERATAN_CA_FILE` and the files the client library trusts) is.
fn tls_config() -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    static CONFIG: std::sync::OnceLock<std::sync::Arc<rustls::ClientConfig>> =
        std::sync::OnceLock::new();
    if let Some(config) = CONFIG.get() {
        return Ok(config.clone());
    }
    let mut roots = rustls::RootCertStore::empty();
    for path in sheratan_client::mesh_ca_files() {
        for cert in CertificateDer::pem_file_iter(&path)
            .with_context(|| format!("read {}", path.display()))?
        {
            roots.add(cert.with_context(|| format!("parse {}", path.display()))?)?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(CONFIG.get_or_init(|| std::sync::Arc::new(config)).clone())
}

pub struct Lane {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    token: String,
}

impl Lane {
    pub async fn connect(url: &str, token: &str) -> anyhow::Result<Lane> {
        Self::connect_from(url, token, None).await
    }

    /// Like [`Lane::connect`], from the local address `source` (another loopback address is
    /// another source to the hub's per-address connection cap).
    pub async fn connect_from(
        url: &str,
        token: &str,
        source: Option<std::net::IpAddr>,
    ) -> anyhow::Result<Lane> {
        let (tls, host) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(host), _) => (true, host),
            (None, Some(host)) => (false, host),
            (None, None) => anyhow::bail!("{url} is not an http:// or https:// URL"),
        };
        let host = host.trim_end_matches('/').to_owned();
        if !tls
            && !token.is_empty()
            && let Some(why) = reqwest::Url::parse(url)
                .ok()
                .and_then(|u| sheratan_client::clear_text_refusal(&u))
        {
            anyhow::bail!(why);
        }
        let addr: SocketAddr = tokio::net::lookup_host(&host)
            .await?
            .next()
            .context("resolve the hub address")?;
        let stream = connect_from(source, addr).await?;
        stream.set_nodelay(true)?;
        let sender = if tls {
            let name = rustls_pki_types::ServerName::try_from(addr.ip().to_string())?;
            let stream = tokio_rustls::TlsConnector::from(tls_config()?)
                .connect(name, stream)
                .await
                .context("TLS handshake with the hub")?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            sender
        } else {
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            sender
        };
        Ok(Lane {
            sender,
            host,
            token: token.to_owned(),
        })
    }

    /// GETs `path`; returns the status and the latency in microseconds.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<(u16, u32)> {
        let req = Request::get(path)
            .header(hyper::header::HOST, &self.host)
            .body(Full::new(Bytes::new()))?;
        let started = Instant::now();
        self.sender.ready().await?;
        let response = self.sender.send_request(req).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        Ok((status, micros))
    }

    /// POSTs `body` to `path`; returns the status and the latency in microseconds.
    pub async fn post(&mut self, path: &str, body: Bytes) -> anyhow::Result<(u16, u32)> {
        let (status, _, micros) = self.exchange(path, body, &[]).await?;
        Ok((status, micros))
    }

    /// POSTs `body` with `headers`; returns the status, the answer's body and the latency in
    /// microseconds.
    pub async fn exchange(
        &mut self,
        path: &str,
        body: Bytes,
        headers: &[(&'static str, String)],
    ) -> anyhow::Result<(u16, Bytes, u32)> {
        let mut req = Request::post(path)
            .header(hyper::header::HOST, &self.host)
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(hyper::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let req = req.body(Full::new(body))?;
        let started = Instant::now();
        self.sender.ready().await?;
        let response = self.sender.send_request(req).await?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        Ok((status, bytes, micros))
    }

    /// Reports a success for a leased job, signed as executors sign results (with this lane's
    /// token): status, answer and microseconds, as [`Lane::exchange`].
    pub async fn report_success(
        &mut self,
        job_id: &str,
        lease_id: &str,
    ) -> anyhow::Result<(u16, Bytes, u32)> {
        let body = format!(
            r#"{{"job_id":"{job_id}","lease_id":"{lease_id}","outcome":"success","result":null}}"#
        );
        let (hash, signature) = sheratan_client::sign_result(body.as_bytes(), &self.token);
        self.exchange(
            "/v1/results",
            Bytes::from(body),
            &[
                ("x-sheratan-content-sha256", hash),
                ("x-sheratan-signature", signature),
            ],
        )
        .await
    }
}

/// A TCP connection to `addr`, from `source` when given.
pub async fn connect_from(
    source: Option<std::net::IpAddr>,
    addr: SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let Some(source) = source else {
        return tokio::net::TcpStream::connect(addr).await;
    };
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}
