//! The typed HTTP client SDK for Sheratan's APIs. Errors carry the contract's error code and
//! a message that tells the operator what to do.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sheratan_client::ClientError> {
//! use sheratan_client::ControlClient;
//! use sheratan_proto::control::{HeartbeatRequest, Role};
//!
//! let hub = ControlClient::new("http://127.0.0.1:8787", Some("my-token".into()))?;
//! let answer = hub
//!     .heartbeat(&HeartbeatRequest {
//!         node_id: "worker-1".into(),
//!         role: Role::Worker,
//!         addr: None,
//!         capabilities: vec!["echo".into()],
//!         build_id: "0.1.0".into(),
//!         capability_hash: String::new(),
//!         runtime: Default::default(),
//!         load: Default::default(),
//!     })
//!     .await?;
//! println!("{:?} {:?}", answer.status, answer.health);
//! # Ok(()) }
//! ```

mod control;
mod error;
mod sign;

pub use control::{BundleFetch, ControlClient};
pub use error::ClientError;
pub use sign::sign_result;

use reqwest::{RequestBuilder, Response};
use sheratan_proto::ErrorBody;

/// Shared plumbing of every API client: base URL, token, and error decoding.
#[derive(Clone)]
struct Base {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl Base {
    fn new(url: &str, token: Option<String>) -> Result<Self, ClientError> {
        let url = url.trim_end_matches('/').to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ClientError::Config(format!(
                "{url:?} is not an http:// or https:// URL"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(Self { http, url, token })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req
    }

    /// Sends and turns any non-2xx answer into [`ClientError::Api`].
    async fn send(&self, req: RequestBuilder) -> Result<Response, ClientError> {
        let response = req
            .send()
            .await
            .map_err(|e| ClientError::transport(&self.url, e))?;
        check(response).await
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
