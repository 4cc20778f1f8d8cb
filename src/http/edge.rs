//! What every response carries: security headers and a request id that every log line of the request shows.

use axum::{
    extract::{Request, State},
    http::{HeaderName, HeaderValue, Response, header},
    middleware::Next,
    response::IntoResponse,
};

use crate::error::ApiError;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// API answers are JSON that nothing should render, frame or embed: the
/// strictest policy. File downloads set their own (see `files.rs`).
pub const API_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; frame-ancestors 'none'; sandbox";

/// Sets the security headers on every response, errors and CORS
/// preflights included. One function rather than a layer per header.
pub fn security_headers<B>(mut response: Response<B>) -> Response<B> {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    // File downloads set their own (see `files.rs`).
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(API_CONTENT_SECURITY_POLICY));
    // Checked by browsers only for no-cors loads (`<script src>`, `<img>`):
    // CORS calls to the API are unaffected.
    headers
        .entry(HeaderName::from_static("cross-origin-resource-policy"))
        .or_insert(HeaderValue::from_static("same-origin"));
    response
}

/// The size of a request's head as sent: the request line, each header as
/// a `name: value` line, and the blank line that ends it (optional white
/// space a client adds around a value is not counted).
fn head_bytes<B>(request: &Request<B>) -> usize {
    let target = request
        .uri()
        .path_and_query()
        .map_or(1, |target| target.as_str().len());
    let request_line = request.method().as_str().len() + 1 + target + " HTTP/1.1\r\n".len();
    let fields: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + ": ".len() + value.len() + "\r\n".len())
        .sum();
    request_line + fields + "\r\n".len()
}

/// Answers a request whose head is over `max_bytes` with a JSON 431, and
/// closes its connection. hyper itself refuses heads only past a hard cap
/// a few times larger (`server.rs`), with a bare 431 and no body: this
/// check gives the heads in between the API's error body and headers.
pub async fn limit_request_head(
    State(max_bytes): State<usize>,
    request: Request,
    next: Next,
) -> axum::response::Response {
    if head_bytes(&request) <= max_bytes {
        return next.run(request).await;
    }
    let mut response = ApiError::HeadTooLarge(format!(
        "the request line and headers are over {max_bytes} bytes"
    ))
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Longest client-supplied request id that is kept.
const MAX_CLIENT_REQUEST_ID: usize = 64;

/// Drops a client's `x-request-id` unless it is short and printable ASCII,
/// so that what reaches the logs is safe to print; a fresh one replaces it.
pub fn drop_unusable_request_id<B>(mut request: Request<B>) -> Request<B> {
    let usable = |value: &HeaderValue| {
        let bytes = value.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_CLIENT_REQUEST_ID
            && bytes.iter().all(u8::is_ascii_graphic)
    };
    let ids = request.headers().get_all(&X_REQUEST_ID);
    let keep = ids.iter().count() == 1 && ids.iter().all(usable);
    if !keep {
        request.headers_mut().remove(&X_REQUEST_ID);
    }
    request
}

/// The span of one request: its id, method and path. The query is left out
/// on purpose: `GET /api/ws?token=` carries a session token.
pub fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        request_id,
        method = %request.method(),
        path = request.uri().path(),
    )
}
