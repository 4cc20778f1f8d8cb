//! Service endpoints: ping, user count, the OpenAPI document.

use axum::{Json, extract::State, response::IntoResponse};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::MessageBody;
use crate::{app::AppState, error::ApiResult};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ping))
        .routes(routes!(usercount))
        .routes(routes!(openapi_json))
}

/// GET /api/ping
#[utoipa::path(get, path = "/api/ping", tag = "service",
    responses((status = 200, description = "Alive", body = MessageBody)))]
async fn ping() -> Json<MessageBody> {
    MessageBody::new("pong")
}

/// GET /api/usercount
#[utoipa::path(get, path = "/api/usercount", tag = "service",
    responses((status = 200, description = "Number of users, as plain text", body = String, content_type = "text/plain")))]
async fn usercount(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let count = state.store.user_count().await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        count.to_string(),
    ))
}

/// GET /api/openapi.json
#[utoipa::path(get, path = "/api/openapi.json", tag = "service",
    responses((status = 200, description = "This OpenAPI document")))]
async fn openapi_json() -> impl IntoResponse {
    Json(super::openapi())
}
