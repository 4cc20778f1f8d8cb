//! The HTTP layer: one module per resource, thin handlers, JSON everywhere.

pub mod accounts;
pub mod edge;
pub mod extract;
pub mod feed;
pub mod files;
pub mod inbox;
pub mod json;
pub mod metrics;
pub mod posts;
pub mod profiles;
pub mod rooms;
pub mod server;
pub mod service;
pub mod ws;

use std::{sync::LazyLock, time::Duration};

use axum::{
    Router,
    http::{HeaderName, Method, header},
    middleware,
    routing::get,
};
use serde::Serialize;
use tower::ServiceBuilder;
use tower_http::{
    cors::{Any, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::RequestBodyTimeoutLayer,
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
        // Scripts may read these only when they are exposed.
        .expose_headers([header::RETRY_AFTER, edge::X_REQUEST_ID.clone()])
        .max_age(Duration::from_secs(600));
    let body_read_timeout = Duration::from_secs(state.config.body_read_timeout_secs);
    let max_header_bytes = state.config.max_header_bytes;

    let routes = Router::new()
        .merge(json_api)
        .merge(streaming_api)
        // Not in the OpenAPI document: its body is Prometheus text, not JSON.
        .route("/metrics", get(metrics::metrics))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Labels requests with their route template, which only routing
        // knows, so this is the one layer applied to every route.
        .layer(metrics::RecordLayer::new(state.metrics.clone()))
        .with_state(state);

    // The rest wraps the router once. A layer given to `Router::layer` is
    // copied onto every route, and costs a clone of the route and a boxed
    // future per request and layer (moving eight layers out took `GET
    // /api/ping` from about 37 to 34 µs of CPU). Outermost first.
    let edge = ServiceBuilder::new()
        .map_response(edge::security_headers)
        // Before any layer adds a header (the request id): the head as sent.
        .layer(middleware::from_fn_with_state(
            max_header_bytes,
            edge::limit_request_head,
        ))
        .map_request(edge::drop_unusable_request_id)
        .layer(SetRequestIdLayer::new(
            edge::X_REQUEST_ID.clone(),
            MakeRequestUuid,
        ))
        .layer(PropagateRequestIdLayer::new(edge::X_REQUEST_ID.clone()))
        .layer(cors)
        // CORS answers preflights itself, so it needs a body type it can create.
        .map_response(|response: axum::http::Response<_>| response.map(axum::body::Body::new))
        // A body that stalls this long between chunks fails to read (408).
        .layer(RequestBodyTimeoutLayer::new(body_read_timeout))
        .layer(TraceLayer::new_for_http().make_span_with(edge::request_span))
        .service(routes);
    Router::new().fallback_service(edge)
}
