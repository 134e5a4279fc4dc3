//! `GET /metrics`, which both planes answer.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use sheratan_proto::control::MetricsQuery;
use sheratan_runtime::edge::ApiError;
use sheratan_runtime::metrics::{prometheus_response, render_json};

use super::extract::{Caller, QueryParams};
use super::plane::PlaneState;

/// `GET /metrics`: Prometheus text, or `?format=json` with dotted names.
pub(super) async fn metrics(
    State(state): State<PlaneState>,
    _caller: Caller,
    QueryParams(q): QueryParams<MetricsQuery>,
) -> Result<Response, ApiError> {
    let families = state.hub.metric_families(state.plane);
    match q.format.as_deref() {
        None | Some("") | Some("prometheus") | Some("text") => Ok(prometheus_response(&families)),
        Some("json") => Ok(Json(render_json(&families)).into_response()),
        Some(other) => Err(ApiError::invalid(format!(
            "query parameter format: unknown format {other:?}; use json or leave it out"
        ))),
    }
}
