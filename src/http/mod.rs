//! The HTTP layer: one module per resource, thin handlers, JSON everywhere.

pub mod accounts;
pub mod extract;
pub mod feed;
pub mod files;
pub mod inbox;
pub mod posts;
pub mod profiles;
pub mod rooms;
pub mod service;
pub mod ws;

use std::{sync::LazyLock, time::Duration};

use axum::{
    Router,
    http::{HeaderName, Method, header},
    middleware,
};
use serde::Serialize;
use tower_http::{
    cors::{Any, CorsLayer},
    trace::TraceLayer,
};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::{app::AppState, error::ApiError};

/// `{"message": "..."}`, the body of most successful writes.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageBody {
    pub message: String,
}

impl MessageBody {
    pub fn new(message: impl Into<String>) -> axum::Json<Self> {
        axum::Json(MessageBody {
            message: message.into(),
        })
    }
}

#[derive(OpenApi)]
#[openapi(info(
    title = "Mirage",
    description = "Social network and chat server. The contract is API.md; this document is generated from the code."
))]
struct ApiDoc;

/// Routes whose bodies are small JSON objects (all but uploads).
fn json_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(accounts::routes())
        .merge(profiles::routes())
        .merge(posts::routes())
        .merge(feed::routes())
        .merge(rooms::routes())
        .merge(inbox::routes())
        .merge(service::routes())
        .merge(ws::routes())
}

/// Routes that stream large bodies and enforce their own limits.
fn streaming_routes() -> OpenApiRouter<AppState> {
    files::routes()
}

/// The OpenAPI document of every route the router serves.
pub fn openapi() -> &'static utoipa::openapi::OpenApi {
    static SPEC: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(|| {
        let mut spec = OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi())
            .merge(json_routes())
            .merge(streaming_routes())
            .split_for_parts()
            .1;
        document_body_limits(&mut spec);
        spec
    });
    &SPEC
}

/// Every route that takes a body refuses an oversized one with 413 (the
/// JSON limit is a middleware, so the handlers' annotations cannot say it).
fn document_body_limits(spec: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let too_large = ResponseBuilder::new()
        .description("Request body too large")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    for item in spec.paths.paths.values_mut() {
        let Some(operation) = item.post.as_mut() else {
            continue;
        };
        if operation.request_body.is_some() {
            operation
                .responses
                .responses
                .entry("413".into())
                .or_insert_with(|| RefOr::T(too_large.clone()));
        }
    }
}

pub fn router(state: AppState) -> Router {
    let (json_api, _) = json_routes().split_for_parts();
    let json_api = json_api.layer(middleware::from_fn_with_state(
        state.clone(),
        extract::limit_json_body,
    ));
    let (streaming_api, _) = streaming_routes().split_for_parts();
    // Uploads enforce their size while streaming; allow the multipart framing on top.
    let streaming_api = streaming_api.layer(axum::extract::DefaultBodyLimit::max(
        state.config.max_upload_bytes as usize + 1024 * 1024,
    ));

    // Browsers need `authorization` named explicitly: `*` does not cover it.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("x-requested-with"),
        ])
        .max_age(Duration::from_secs(600));

    Router::new()
        .merge(json_api)
        .merge(streaming_api)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(TraceLayer::new_for_http())
        .layer(cors)
        .with_state(state)
}
