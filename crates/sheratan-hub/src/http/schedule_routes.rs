//! Hub Data plane schedule routes (docs/API.md, "Schedules"): create, list, show, change,
//! delete and run-now. Reading takes any credential that reads; changing takes the admin role
//! or the mesh token (`roles.rs`: a route not granted to a role is the admin's).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sheratan_proto::schedules::{
    RunNowResponse, ScheduleList, SchedulePatch, ScheduleSpec, ScheduleView,
};
use sheratan_runtime::edge::ApiError;

use super::extract::{Caller, JsonBody, PathParams, RawBody};
use super::plane::PlaneState;
use crate::schedules as svc;

pub(super) fn routes() -> Router<PlaneState> {
    Router::new()
        .route("/v1/schedules", post(create).get(list))
        .route(
            "/v1/schedules/{name}",
            get(show).patch(change).delete(remove),
        )
        .route("/v1/schedules/{name}/run", post(run_now))
}

async fn create(
    State(state): State<PlaneState>,
    caller: Caller,
    JsonBody(spec): JsonBody<ScheduleSpec>,
) -> Result<Response, ApiError> {
    let view = svc::create(&state.hub, spec, caller.peer.ip()).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn list(State(state): State<PlaneState>, _: Caller) -> Result<Json<ScheduleList>, ApiError> {
    Ok(Json(svc::list(&state.hub).await?))
}

async fn show(
    State(state): State<PlaneState>,
    _: Caller,
    PathParams(name): PathParams<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    Ok(Json(svc::get(&state.hub, &name).await?))
}

async fn change(
    State(state): State<PlaneState>,
    caller: Caller,
    PathParams(name): PathParams<String>,
    JsonBody(patch): JsonBody<SchedulePatch>,
) -> Result<Json<ScheduleView>, ApiError> {
    Ok(Json(
        svc::patch(&state.hub, &name, patch, caller.peer.ip()).await?,
    ))
}

async fn remove(
    State(state): State<PlaneState>,
    caller: Caller,
    PathParams(name): PathParams<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    Ok(Json(
        svc::delete(&state.hub, &name, caller.peer.ip()).await?,
    ))
}

async fn run_now(
    State(state): State<PlaneState>,
    caller: Caller,
    PathParams(name): PathParams<String>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    // No body, or `{}`: anything else is a request this route does not understand.
    let empty = body.iter().all(u8::is_ascii_whitespace)
        || serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body)
            .is_ok_and(|m| m.is_empty());
    if !empty {
        return Err(ApiError::invalid(
            "body: a run-now takes no body (or {}); the schedule's own job is submitted",
        ));
    }
    let ran: RunNowResponse = svc::run_now(&state.hub, &name, caller.peer.ip()).await?;
    Ok((StatusCode::ACCEPTED, Json(ran)).into_response())
}
