//! The admin path's credentials (docs/API.md, "Credentials"): `POST/GET /admin/tokens`,
//! `DELETE /admin/tokens/{name}`. Thin: the rules are in `crate::credentials`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use sheratan_proto::EventKind;
use sheratan_proto::credentials::{
    CreateCredential, CreatedCredential, CredentialList, CredentialView,
};
use sheratan_runtime::edge::ApiError;

use super::extract::{Admin, JsonBody, PathParams};
use super::plane::PlaneState;
use crate::audit::Event;
use crate::credentials::CredentialError;

pub(super) fn routes() -> Router<PlaneState> {
    Router::new()
        .route("/admin/tokens", post(create).get(list))
        .route("/admin/tokens/{name}", delete(revoke))
        .route("/v1/whoami", axum::routing::get(whoami))
}

/// Any caller's own identity: Core signs people in with it.
async fn whoami(caller: super::extract::Caller) -> Json<sheratan_proto::credentials::Whoami> {
    let record = caller.credential.named();
    Json(sheratan_proto::credentials::Whoami {
        credential: caller.credential.label(),
        role: record.map(|r| r.role),
        name: record.map(|r| r.name.clone()),
        queues: record.map(|r| r.queues.clone()).unwrap_or_default(),
    })
}

async fn create(
    State(state): State<PlaneState>,
    admin: Admin,
    JsonBody(req): JsonBody<CreateCredential>,
) -> Result<(StatusCode, Json<CreatedCredential>), ApiError> {
    let created = state
        .hub
        .credentials
        .create(req, state.hub.clock.now())
        .await
        .map_err(api_error)?;
    let c = &created.credential;
    state.hub.audit.emit(
        Event::new(EventKind::CredentialCreated, state.plane)
            .remote(admin.peer.ip())
            .by(&admin.credential)
            .detail(serde_json::json!({"credential": format!("{} ({})", c.name, c.role)})),
    );
    Ok((StatusCode::CREATED, Json(created)))
}

async fn list(
    State(state): State<PlaneState>,
    _admin: Admin,
) -> Result<Json<CredentialList>, ApiError> {
    state
        .hub
        .credentials
        .list()
        .await
        .map(Json)
        .map_err(api_error)
}

async fn revoke(
    State(state): State<PlaneState>,
    admin: Admin,
    PathParams(name): PathParams<String>,
) -> Result<Json<CredentialView>, ApiError> {
    let revoked = state
        .hub
        .credentials
        .revoke(&name, state.hub.clock.now())
        .await
        .map_err(api_error)?;
    state.hub.audit.emit(
        Event::new(EventKind::CredentialRevoked, state.plane)
            .remote(admin.peer.ip())
            .by(&admin.credential)
            .detail(
                serde_json::json!({"credential": format!("{} ({})", revoked.name, revoked.role)}),
            ),
    );
    Ok(Json(revoked))
}

fn api_error(err: CredentialError) -> ApiError {
    use sheratan_proto::ErrorCode;
    match err {
        CredentialError::Invalid(why) => ApiError::invalid(why),
        CredentialError::Exists(_) => ApiError::new(
            ErrorCode::Conflict,
            err.to_string(),
            "choose another name; `sheratan token list` shows the taken ones",
        ),
        CredentialError::NotFound(_) => ApiError::not_found(err.to_string()),
        CredentialError::NotConfigured => ApiError::new(
            ErrorCode::Unavailable,
            err.to_string(),
            "run the hub through `sheratan hub` or `sheratan up`, which keep credentials in the job store",
        ),
        CredentialError::Store(e) => ApiError::unavailable("the credential store", e),
    }
}
