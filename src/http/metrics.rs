//! `GET /metrics` for Prometheus, and the layer that counts every request.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use tower::{Layer, Service};

use crate::{
    app::AppState,
    auth::{hash_token, header_token},
    error::{ApiError, ApiResult},
    metrics::{self, Metrics, UNMATCHED_ROUTE},
};

/// GET /metrics — every figure in the Prometheus text format. Off (404)
/// unless `--metrics-token` is set; then only that bearer token reads it.
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let Some(expected) = state.config.metrics_token.as_deref() else {
        return Err(ApiError::not_found("no such endpoint"));
    };
    let given = header_token(&headers)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization token"))?;
    // Comparing digests leaks nothing about the token through timing.
    if hash_token(given) != hash_token(expected) {
        return Err(ApiError::unauthorized("invalid metrics token"));
    }
    let text = state.metrics.render(&state.store.pool_stats());
    Ok(([(header::CONTENT_TYPE, metrics::content_type())], text).into_response())
}

/// Counts each request by its route template (axum's `MatchedPath`, never
/// the raw URI), method and status, and times it to its response headers.
#[derive(Clone)]
pub struct RecordLayer {
    metrics: Arc<Metrics>,
}

impl RecordLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        RecordLayer { metrics }
    }
}

impl<S> Layer<S> for RecordLayer {
    type Service = Record<S>;

    fn layer(&self, inner: S) -> Record<S> {
        Record {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Record<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Service<Request> for Record<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Recorded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // Cloning the matched path shares its string; nothing is allocated.
        let route = request.extensions().get::<MatchedPath>().cloned();
        let method = metrics::method_label(request.method());
        Recorded {
            inner: self.inner.call(request),
            started: Instant::now(),
            route,
            method,
            metrics: self.metrics.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's response future, recorded when it completes.
    pub struct Recorded<F> {
        #[pin]
        inner: F,
        started: Instant,
        route: Option<MatchedPath>,
        method: &'static str,
        metrics: Arc<Metrics>,
    }
}

impl<F, E> Future for Recorded<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            let route = this
                .route
                .as_ref()
                .map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
            this.metrics.record_request(
                route,
                this.method,
                response.status(),
                this.started.elapsed(),
            );
        }
        Poll::Ready(result)
    }
}
