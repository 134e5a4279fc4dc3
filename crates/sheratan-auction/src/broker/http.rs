//! The broker's HTTP side: `/health`, `/metrics` and the auction history.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use sheratan_proto::ErrorCode;
use sheratan_proto::auction::{AuctionList, AuctionRecord};
use sheratan_runtime::edge::{self, ApiError, QueryParams};

use super::BrokerState;

impl edge::Edge for BrokerState {
    type Credential = ();

    fn authenticate(&self, headers: &HeaderMap, _: SocketAddr) -> Result<(), ApiError> {
        edge::check_mesh_token(headers, self.config.token.load().accepted().as_deref())
    }

    /// The broker reads no bodies.
    fn body_limit(&self) -> usize {
        0
    }

    /// A broker on a credential, or a caller with one, is checked with the hub: an admin or
    /// read credential (or the mesh token) reads the auctions and metrics.
    fn vouch(
        &self,
        token: &str,
        request: &axum::http::request::Parts,
    ) -> impl std::future::Future<Output = Result<Option<()>, ApiError>> + Send {
        let (method, path) = (request.method.clone(), request.uri.path().to_owned());
        async move {
            let ask = |peer| {
                self.vouches
                    .ask(&self.config.token, &self.data, token, peer)
            };
            let Some(who) = edge::vouched(request, ask).await? else {
                return Ok(None);
            };
            if !edge::read_role_permits(who.role, &method) {
                return Err(edge::forbidden_here(&who.credential, &method, &path));
            }
            Ok(Some(()))
        }
    }
}

type Caller = edge::Caller<Arc<BrokerState>>;

pub(super) fn router(state: Arc<BrokerState>) -> Router {
    let routes = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/auctions", get(list_auctions))
        .route("/v1/auctions/{job_id}", get(one_auction));
    edge::with_fallbacks(
        routes,
        "the broker",
        "/health, /metrics, /v1/auctions and /v1/auctions/{job_id}",
    )
    .with_state(state)
}

async fn health(State(s): State<Arc<BrokerState>>) -> Json<sheratan_proto::health::BrokerHealth> {
    Json(sheratan_proto::health::BrokerHealth {
        status: "ok".into(),
        role: "broker".into(),
        node_id: s.config.node_id.clone(),
        queue: s.config.queue.clone(),
        inflight: s.inflight.load(Ordering::Relaxed),
        concurrency: s.config.concurrency,
        auth: s.config.token.auth_mode(),
    })
}

fn store_failed(err: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        format!("the auction store failed: {err}"),
        "check the broker's log",
    )
}

async fn list_auctions(
    State(s): State<Arc<BrokerState>>,
    _: Caller,
    QueryParams(q): QueryParams<sheratan_proto::core_api::LimitQuery>,
) -> Result<Json<AuctionList>, ApiError> {
    let limit = match q.limit {
        None => 50,
        Some(n) if (1..=1000).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::invalid("limit must be a number from 1 to 1000"));
        }
    };
    let auctions = s.config.store.auctions(limit).await.map_err(store_failed)?;
    Ok(Json(AuctionList { auctions }))
}

async fn one_auction(
    State(s): State<Arc<BrokerState>>,
    _: Caller,
    Path(job_id): Path<String>,
) -> Result<Json<AuctionRecord>, ApiError> {
    sheratan_proto::ids::parse_uuid("job_id", &job_id).map_err(ApiError::invalid)?;
    match s
        .config
        .store
        .auction(&job_id)
        .await
        .map_err(store_failed)?
    {
        Some(record) => Ok(Json(record)),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no auction for job {job_id}"),
            "only jobs of the auction queue that this broker leased have one",
        )),
    }
}

async fn metrics(State(s): State<Arc<BrokerState>>, _: Caller) -> Response {
    let inflight = s.inflight.load(Ordering::Relaxed);
    sheratan_runtime::metrics::prometheus_response(&s.metrics.families(inflight))
}
