//! Client of the Hub Control plane (8787).

use reqwest::Method;
use sheratan_proto::control::{
    BundleInfo, BundleList, HealthResponse, HeartbeatRequest, HeartbeatResponse, NodeList,
    NodeStatus, NodeView, Role,
};

use crate::{Base, ClientError, json};

#[derive(Clone)]
pub struct ControlClient {
    base: Base,
}

/// The outcome of a conditional bundle download.
#[derive(Debug)]
pub enum BundleFetch {
    /// The bundle matches the given ETag; nothing was downloaded.
    NotModified,
    Body {
        sha256: String,
        bytes: bytes::Bytes,
    },
}

impl ControlClient {
    /// `token`: an `Option<String>`, or a [`crate::MeshToken`] that may change while this runs.
    pub fn new(url: &str, token: impl Into<crate::MeshToken>) -> Result<Self, ClientError> {
        Ok(Self {
            base: Base::new(url, token.into())?,
        })
    }

    pub fn url(&self) -> &str {
        &self.base.url
    }

    pub async fn health(&self) -> Result<HealthResponse, ClientError> {
        json(
            self.base
                .send(self.base.request(Method::GET, "/health"))
                .await?,
        )
        .await
    }

    pub async fn heartbeat(
        &self,
        req: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, ClientError> {
        let r = self.base.request(Method::POST, "/v1/heartbeat").json(req);
        json(self.base.send(r).await?).await
    }

    pub async fn nodes(
        &self,
        role: Option<Role>,
        status: Option<NodeStatus>,
    ) -> Result<Vec<NodeView>, ClientError> {
        let mut query = Vec::new();
        if let Some(role) = role {
            query.push(("role", role.as_str()));
        }
        if let Some(status) = status {
            query.push(("status", status.as_str()));
        }
        let r = self.base.request(Method::GET, "/v1/nodes").query(&query);
        let list: NodeList = json(self.base.send(r).await?).await?;
        Ok(list.nodes)
    }

    pub async fn node(&self, node_id: &str) -> Result<NodeView, ClientError> {
        let r = self
            .base
            .request(Method::GET, &format!("/v1/nodes/{node_id}"));
        json(self.base.send(r).await?).await
    }

    pub async fn bundles(&self) -> Result<Vec<BundleInfo>, ClientError> {
        let list: BundleList = json(
            self.base
                .send(self.base.request(Method::GET, "/v1/bundles"))
                .await?,
        )
        .await?;
        Ok(list.bundles)
    }

    /// Downloads a bundle, or learns it is unchanged when `if_none_match` is its sha256.
    pub async fn bundle(
        &self,
        name: &str,
        if_none_match: Option<&str>,
    ) -> Result<BundleFetch, ClientError> {
        let mut r = self
            .base
            .request(Method::GET, &format!("/v1/bundles/{name}"));
        if let Some(tag) = if_none_match {
            r = r.header(reqwest::header::IF_NONE_MATCH, format!("\"{tag}\""));
        }
        let response = self.base.send(r).await?;
        if response.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(BundleFetch::NotModified);
        }
        let sha256 = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_default();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok(BundleFetch::Body { sha256, bytes })
    }

    /// `/metrics` in Prometheus text format.
    pub async fn metrics_text(&self) -> Result<String, ClientError> {
        let response = self
            .base
            .send(self.base.request(Method::GET, "/metrics"))
            .await?;
        response
            .text()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `/metrics?format=json`: the seed's dotted names.
    pub async fn metrics_json(&self) -> Result<serde_json::Value, ClientError> {
        let r = self
            .base
            .request(Method::GET, "/metrics")
            .query(&[("format", "json")]);
        json(self.base.send(r).await?).await
    }
}
