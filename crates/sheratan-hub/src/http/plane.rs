//! What every handler of both planes shares: the state (the hub and which plane a router
//! serves) and the `/health` body.

use std::sync::Arc;

use axum::Json;
use sheratan_proto::Plane;
use sheratan_proto::control::HealthResponse;

use crate::HubState;

/// What a router's handlers share: the hub and which plane they serve.
#[derive(Clone)]
pub struct PlaneState {
    pub hub: Arc<HubState>,
    pub plane: Plane,
}

/// `GET /health` of either plane.
pub(super) fn health_of(plane: Plane) -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
        plane,
        version: sheratan_proto::VERSION.into(),
        queue_depth: None,
        inflight: None,
    })
}
