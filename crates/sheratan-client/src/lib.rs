//! The typed HTTP client SDK for Sheratan's APIs: [`ControlClient`] (heartbeats, registry,
//! bundles) and [`DataClient`] (jobs, leases, signed results, the admin path). Calls retry on
//! their own when repeating is harmless (429 and 503 with `Retry-After`, connection failures
//! for idempotent calls); errors carry the contract's code and read as instructions
//! (`AUTH_FAIL: the token does not match the hub's SHERATAN_HUB_TOKEN (hint: …)`).
//!
//! A worker in a dozen lines (the whole program is `examples/minimal_worker.rs`):
//!
//! ```no_run
//! # async fn demo() -> Result<(), sheratan_client::ClientError> {
//! use sheratan_client::DataClient;
//! use sheratan_proto::data::{LeaseRequest, Outcome, ResultRequest};
//!
//! let data = DataClient::new("http://127.0.0.1:8788", std::env::var("SHERATAN_HUB_TOKEN").ok())?;
//! loop {
//!     let grant = data
//!         .lease(&LeaseRequest {
//!             node_id: "my-worker".into(),
//!             queues: vec!["default".into()],
//!             capabilities: vec!["echo".into()],
//!             max_jobs: 10,
//!             wait_ms: 10_000,
//!         })
//!         .await?;
//!     for job in grant.jobs {
//!         data.report(&ResultRequest {
//!             job_id: job.job_id,
//!             lease_id: job.lease_id,
//!             outcome: Outcome::Success,
//!             result: job.payload,
//!             error: None,
//!         })
//!         .await?;
//!     }
//! }
//! # }
//! ```
//!
//! `https://` hubs are verified against the system's roots and the mesh CA (`SHERATAN_CA_FILE`,
//! [`trust_ca_file`]).

mod beat;
mod control;
mod data;
mod error;
pub mod member;
pub mod progress;
pub mod pull;
mod sign;
pub mod stream;
mod tls_diag;
mod token;
mod vouch;
pub mod watch;

pub use beat::{Identity, capability_hash, heartbeat_loop};
pub use control::{BundleFetch, ControlClient};
pub use data::{DataClient, JobFilter, Submitted};
pub use error::ClientError;
pub use member::{Member, Pull, member_clients};
pub use progress::ProgressSink;
pub use sign::{CREDENTIAL_PREFIX, probe_header, sign_result, sign_with_key, signing_key};
pub use token::{MeshToken, TokenState};
pub use vouch::{MAX_UNKNOWN_PER_MINUTE, VOUCH_TTL, Vouches};

use std::time::Duration;

use reqwest::{RequestBuilder, Response};
use sheratan_proto::ErrorBody;

/// How hard a call retries on its own.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// First wait; doubles each retry (with ±20 % jitter), at most `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// No retries: the first answer (or failure) is final.
    pub fn none() -> Self {
        Self {
            attempts: 1,
            ..Self::default()
        }
    }

    fn delay(&self, retry: u32, retry_after_s: Option<u64>) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << retry.min(16))
            .min(self.max_delay);
        let jitter = 0.8 + 0.4 * rand::random::<f64>();
        let own = exp.mul_f64(jitter);
        match retry_after_s {
            Some(s) => own.max(Duration::from_secs(s)),
            None => own,
        }
    }
}

/// Which failures a call may retry without risking a second effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Repeating the call is harmless (reads, results, extensions, acknowledgements, keyed
    /// submits): retry on 429, 503 and connection failures.
    Safe,
    /// Only retry when the hub said it did nothing (429, 503); a connection failure may have
    /// come after the effect.
    Refused,
}

/// CA files this process trusts beside `SHERATAN_CA_FILE`: `sheratan up` adds the mesh CA it
/// made, a join adds the CA it pinned.
static TRUSTED_CA_FILES: std::sync::Mutex<Vec<std::path::PathBuf>> =
    std::sync::Mutex::new(Vec::new());

/// Makes every HTTP client this process builds from now on trust the CA certificates in
/// `path` (PEM), beside `SHERATAN_CA_FILE` and the system's roots.
pub fn trust_ca_file(path: impl Into<std::path::PathBuf>) {
    let path = path.into();
    let mut files = TRUSTED_CA_FILES.lock().expect("trusted CA list");
    if !files.contains(&path) {
        files.push(path);
    }
}

/// The files [`mesh_ca`] reads: `SHERATAN_CA_FILE`, then those given to [`trust_ca_file`].
pub fn mesh_ca_files() -> Vec<std::path::PathBuf> {
    let mut paths: Vec<std::path::PathBuf> = std::env::var_os("SHERATAN_CA_FILE")
        .filter(|p| !p.is_empty())
        .map(Into::into)
        .into_iter()
        .collect();
    paths.extend(
        TRUSTED_CA_FILES
            .lock()
            .expect("trusted CA list")
            .iter()
            .cloned(),
    );
    paths
}

/// The mesh CA's certificates (`SHERATAN_CA_FILE`, PEM, and any file given to
/// [`trust_ca_file`]), trusted beside the system's roots for `https://`; none when neither is set.
pub fn mesh_ca() -> Result<Vec<reqwest::Certificate>, ClientError> {
    let mut certs = Vec::new();
    for path in mesh_ca_files() {
        let at = |what: String| ClientError::Config(format!("CA file {}: {what}", path.display()));
        let pem = std::fs::read(&path).map_err(|e| at(e.to_string()))?;
        let found = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| at(e.to_string()))?;
        if found.is_empty() {
            return Err(at(
                "holds no certificate (expected -----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        certs.extend(found);
    }
    Ok(certs)
}

/// An HTTP client builder that verifies `https://` servers against the system's roots and the
/// mesh CA ([`mesh_ca`]): what every component's outbound client starts from.
pub fn http_client_builder() -> Result<reqwest::ClientBuilder, ClientError> {
    Ok(reqwest::Client::builder().tls_certs_merge(mesh_ca()?))
}

/// [`http_client_builder`] for talking to the hub: it also presents this node's client
/// certificate (`SHERATAN_TLS_CLIENT_CERT`, `SHERATAN_TLS_CLIENT_KEY`) when one is set, for
/// hubs that require mutual TLS. Other servers never see it.
pub fn hub_client_builder() -> Result<reqwest::ClientBuilder, ClientError> {
    // No proxy from the environment: the token goes where the URL says, checked above, and
    // not in clear text to a proxy.
    let builder = http_client_builder()?.no_proxy();
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    match (
        var("SHERATAN_TLS_CLIENT_CERT"),
        var("SHERATAN_TLS_CLIENT_KEY"),
    ) {
        (None, None) => Ok(builder),
        (Some(cert), Some(key)) => {
            let read = |path: &std::ffi::OsStr| {
                std::fs::read(path).map_err(|e| {
                    ClientError::Config(format!(
                        "{}: {e}",
                        std::path::Path::new(path).display()
                    ))
                })
            };
            let pem = [read(&key)?, b"\n".to_vec(), read(&cert)?].concat();
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                ClientError::Config(format!(
                    "SHERATAN_TLS_CLIENT_CERT/SHERATAN_TLS_CLIENT_KEY: not a certificate and its key: {e}"
                ))
            })?;
            Ok(builder.identity(identity))
        }
        _ => Err(ClientError::Config(
            "SHERATAN_TLS_CLIENT_CERT and SHERATAN_TLS_CLIENT_KEY go together: give both or neither"
                .into(),
        )),
    }
}

/// The mesh token never crosses a network in clear text: `http://` is for this machine
/// (loopback, `localhost`). `SHERATAN_ALLOW_PLAIN_HTTP=1` is the named opt-out, for a hub an
/// operator runs with `SHERATAN_TLS=off` on a network they trust; it is logged.
fn refuse_token_in_clear(url: &reqwest::Url, token: &MeshToken) -> Result<(), ClientError> {
    if token.send().is_none() {
        return Ok(());
    }
    match clear_text_refusal(url) {
        Some(why) => Err(ClientError::Config(why)),
        None => Ok(()),
    }
}

/// This machine's own addresses a process knows it serves on (`sheratan up` with a hub on a
/// specific address): plain HTTP to them never leaves the machine.
static OWN_ADDRESSES: std::sync::Mutex<Vec<std::net::IpAddr>> = std::sync::Mutex::new(Vec::new());

/// Declares `ip` one of this machine's addresses (see [`clear_text_refusal`]).
pub fn own_address(ip: std::net::IpAddr) {
    let mut own = OWN_ADDRESSES.lock().expect("own addresses");
    if !own.contains(&ip) {
        own.push(ip);
    }
}

/// Why the token may not be sent to `url`, if it may not: plain `http://` to an address
/// other than this machine's, without `SHERATAN_ALLOW_PLAIN_HTTP=1`.
pub fn clear_text_refusal(url: &reqwest::Url) -> Option<String> {
    if url.scheme() != "http" {
        return None;
    }
    let host = url.host_str().unwrap_or_default();
    let local = match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    {
        Ok(ip) => {
            let ip = ip.to_canonical();
            ip.is_loopback()
                || ip.is_unspecified()
                || OWN_ADDRESSES.lock().expect("own addresses").contains(&ip)
        }
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    if local {
        return None;
    }
    if std::env::var("SHERATAN_ALLOW_PLAIN_HTTP").is_ok_and(|v| v == "1") {
        // Said once per address, not per request.
        static WARNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        let origin = url.origin().ascii_serialization();
        let mut warned = WARNED.lock().expect("warned list");
        if !warned.contains(&origin) {
            tracing::warn!(
                "SHERATAN_ALLOW_PLAIN_HTTP=1: sending the mesh token to {origin} in clear text"
            );
            warned.push(origin);
        }
        return None;
    }
    Some(format!(
        "refusing to send the mesh token over plain HTTP to {url}: it would cross the network in clear text. Hubs serve TLS on addresses other machines reach: use https:// (with the mesh CA: SHERATAN_CA_FILE, or join with SHERATAN_JOIN), or set SHERATAN_ALLOW_PLAIN_HTTP=1 for a hub run with SHERATAN_TLS=off"
    ))
}

/// Shared plumbing of every API client: base URL, token, retries and error decoding.
#[derive(Clone)]
struct Base {
    http: reqwest::Client,
    url: String,
    /// `url` parsed once: each request only swaps the path (parsing a URL, host name rules
    /// included, cost a worker more than signing its result).
    parsed: reqwest::Url,
    /// Read per request: a rotation followed by `sheratan up` changes it while this runs.
    token: MeshToken,
    retry: RetryPolicy,
}

impl Base {
    fn new(url: &str, token: MeshToken) -> Result<Self, ClientError> {
        let url = url.trim_end_matches('/').to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ClientError::Config(format!(
                "{url:?} is not an http:// or https:// URL"
            )));
        }
        let http = hub_client_builder()?
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5))
            // Below the servers' keep-alive timeout (60 s): a pooled connection is never
            // reused just as the server closes it.
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let parsed =
            reqwest::Url::parse(&url).map_err(|e| ClientError::Config(format!("{url:?}: {e}")))?;
        refuse_token_in_clear(&parsed, &token)?;
        if !token.is_sendable() {
            return Err(ClientError::Config(
                "the token contains characters a header cannot carry".into(),
            ));
        }
        Ok(Self {
            http,
            url,
            parsed,
            token,
            retry: RetryPolicy::default(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.request_as(&self.token.load(), method, path)
    }

    /// A request authenticated by one reading of the token (a signed result sends the token
    /// it was signed with).
    fn request_as(
        &self,
        token: &TokenState,
        method: reqwest::Method,
        path: &str,
    ) -> RequestBuilder {
        let mut url = self.parsed.clone();
        url.set_path(path);
        let mut req = self.http.request(method, url);
        if let Some(value) = token.authorization() {
            req = req.header(reqwest::header::AUTHORIZATION, value.clone());
        }
        req
    }

    /// Sends once and turns any non-2xx answer into [`ClientError::Api`].
    async fn send(&self, req: RequestBuilder) -> Result<Response, ClientError> {
        let response = match req.send().await {
            Ok(response) => response,
            Err(e) => return Err(self.explained(ClientError::transport(&self.url, e)).await),
        };
        check(response).await
    }

    /// An untrusted certificate's error, with what the server presents (subject, issuer,
    /// validity, names): the operator sees which certificate it is and why it is refused.
    async fn explained(&self, err: ClientError) -> ClientError {
        match err {
            ClientError::Untrusted { url, message } => {
                let message = match tls_diag::describe_peer(&self.parsed).await {
                    Some(presented) => format!("{message}; {presented}"),
                    None => message,
                };
                ClientError::Untrusted { url, message }
            }
            other => other,
        }
    }

    /// Sends `build()` until it succeeds, fails for good, or the retries run out.
    async fn send_retrying(
        &self,
        retry: Retry,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, ClientError> {
        let mut attempt = 0;
        loop {
            let outcome = self.send(build()).await;
            let again = match &outcome {
                Ok(_) => false,
                Err(e) => match e {
                    ClientError::Api { status, .. } => *status == 429 || *status == 503,
                    ClientError::Transport { .. } => retry == Retry::Safe,
                    _ => false,
                },
            };
            attempt += 1;
            if !again || attempt >= self.retry.attempts {
                return outcome;
            }
            let retry_after = match &outcome {
                Err(ClientError::Api { retry_after_s, .. }) => *retry_after_s,
                _ => None,
            };
            tokio::time::sleep(self.retry.delay(attempt - 1, retry_after)).await;
        }
    }
}

async fn check(response: Response) -> Result<Response, ClientError> {
    let status = response.status();
    if status.is_success() || status == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let bytes = response.bytes().await.unwrap_or_default();
    Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) => ClientError::Api {
            status: status.as_u16(),
            code: body.error.code,
            message: body.error.message,
            hint: body.error.hint,
            retry_after_s: retry_after,
        },
        Err(_) => ClientError::UnexpectedStatus {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned(),
        },
    })
}

async fn json<T: serde::de::DeserializeOwned>(response: Response) -> Result<T, ClientError> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| ClientError::Decode(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
}
