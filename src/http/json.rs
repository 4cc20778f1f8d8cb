//! JSON responses serialised into a buffer sized up front.
//!
//! axum's `Json` starts from 128 bytes and doubles: a 10 KB list is copied
//! seven times on its way out. The list handlers know roughly how large
//! their answer is and say so.

use axum::{
    body::Bytes,
    http::{HeaderValue, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::error::ApiError;

/// Bytes per item on top of its strings: keys, numbers and a timestamp.
pub const ITEM_OVERHEAD: usize = 128;

pub struct SizedJson<T> {
    pub body: T,
    /// The expected size; a wrong guess costs only the copies it was meant to save.
    pub capacity: usize,
}

/// `body` as JSON, in a buffer of `capacity` bytes to start with.
pub fn to_vec(body: &impl Serialize, capacity: usize) -> Result<Vec<u8>, ApiError> {
    let mut json = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut json, body).map_err(ApiError::internal)?;
    Ok(json)
}

/// `body` as JSON to be kept (a cached page's rendering, kept as long as
/// the page is): sized up front, then without spare capacity.
pub fn to_kept_bytes(body: &impl Serialize, capacity: usize) -> Result<Bytes, ApiError> {
    let mut json = to_vec(body, capacity)?;
    json.shrink_to_fit();
    Ok(Bytes::from(json))
}

/// A response whose body is `json`.
pub fn response(json: Bytes) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        json,
    )
        .into_response()
}

impl<T: Serialize> IntoResponse for SizedJson<T> {
    fn into_response(self) -> Response {
        match to_vec(&self.body, self.capacity) {
            Ok(json) => response(json.into()),
            Err(e) => e.into_response(),
        }
    }
}
