//! Request extractors whose failures are the API's own JSON errors.

use std::collections::HashMap;

use axum::{
    body::{Body, Bytes},
    extract::{FromRequest, FromRequestParts, Request},
    http::{header, request::Parts},
    middleware::Next,
    response::Response,
};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::{Deserialize, Deserializer, de::DeserializeOwned};

use crate::{
    app::AppState,
    auth::unauthorized_if_session_ended,
    error::{ApiError, ApiResult},
    store::PageRequest,
};

/// A JSON object body. Any content type is accepted (curl's `-d` sends a
/// form type by default); an empty body reads as `{}` so that optional
/// bodies (logout) work. Wrong JSON is a 400 that names the problem.
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> ApiResult<Self> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::bad_request("could not read the request body"))?;
        parse_json_object(&bytes).map(JsonBody)
    }
}

/// Parses a JSON object into `T`, naming the offending field on failure.
pub fn parse_json_object<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let value: serde_json::Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))?
    };
    if !value.is_object() {
        return Err(ApiError::bad_request("request body must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ApiError::bad_request(format!("invalid field `{path}`: {}", e.into_inner()))
    })
}

/// Query-string parameters as plain strings; handlers parse what they need
/// so that a bad value is a 400 naming the parameter.
pub struct QueryParams(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> ApiResult<Self> {
        let query = parts.uri.query().unwrap_or("");
        let params = serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .map_err(|_| ApiError::bad_request("malformed query string"))?;
        Ok(QueryParams(params.into_iter().collect()))
    }
}

impl QueryParams {
    /// A present, non-blank parameter.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// An optional id parameter: digits only, else 400.
    pub fn id(&self, name: &str) -> ApiResult<Option<i64>> {
        self.text(name)
            .map(|v| parse_id_text(v).ok_or_else(|| invalid_id(name)))
            .transpose()
    }

    /// An optional float parameter (e.g. Unix seconds), else 400.
    pub fn float(&self, name: &str) -> ApiResult<Option<f64>> {
        self.text(name)
            .map(|v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| ApiError::bad_request(format!("`{name}` must be a number")))
            })
            .transpose()
    }

    /// The `limit` and `before` parameters of a list endpoint.
    pub fn page(&self) -> ApiResult<PageRequest> {
        let limit = match self.text("limit") {
            None => DEFAULT_PAGE_LIMIT,
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| ApiError::bad_request("`limit` must be a positive integer"))?
                .min(MAX_PAGE_LIMIT),
        };
        Ok(PageRequest {
            limit,
            before: self.id("before")?,
        })
    }
}

/// The `limit` and `before` query parameters of list endpoints, for the
/// OpenAPI document (the handlers read them through [`QueryParams::page`]).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageParams {
    /// Page size: default 50, larger values are capped at 200; not a positive integer is 400.
    #[param(minimum = 1)]
    limit: Option<u32>,
    /// Cursor: only items older than this id (the previous page's `next`); not an integer is 400.
    #[param(minimum = 0)]
    before: Option<i64>,
}

pub const DEFAULT_PAGE_LIMIT: u32 = 50;
pub const MAX_PAGE_LIMIT: u32 = 200;

/// A path segment as text (ids are parsed by the handler, so a
/// non-numeric id reads as "not found" rather than a framework error).
/// A segment that does not decode (bad UTF-8) names nothing either: 404.
pub struct PathText(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathText {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        let axum::extract::Path(value) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::not_found("not found: the path does not decode as UTF-8"))?;
        Ok(PathText(value))
    }
}

/// An id from the path; one that is not a number names nothing, so it is a 404.
pub fn path_id(text: &str, what: &str) -> ApiResult<i64> {
    text.parse::<i64>()
        .map_err(|_| ApiError::not_found(format!("{what} not found")))
}

fn parse_id_text(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn invalid_id(name: &str) -> ApiError {
    ApiError::bad_request(format!("`{name}` must be an integer id"))
}

/// Deserializes an optional id given as a JSON integer or a string of digits.
pub fn optional_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum RawId {
        Int(i64),
        Text(String),
    }
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => match RawId::deserialize(value) {
            Ok(RawId::Int(n)) => Ok(Some(n)),
            Ok(RawId::Text(s)) => parse_id_text(s.trim())
                .map(Some)
                .ok_or_else(|| D::Error::custom("expected an integer id or a string of digits")),
            Err(_) => Err(D::Error::custom(
                "expected an integer id or a string of digits",
            )),
        },
    }
}

/// Rejects JSON bodies over the configured limit before anything else runs,
/// so an oversized body is a 413 even without a valid token. Also answers
/// 401 for a request whose session ended while it ran (see
/// `unauthorized_if_session_ended`; here, since this layer already wraps
/// every JSON route: a layer of its own cost ping 2-4 µs of CPU).
pub async fn limit_json_body(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> ApiResult<Response> {
    let limit = state.config.max_json_bytes;
    let too_large = || ApiError::PayloadTooLarge(format!("request body exceeds {limit} bytes"));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<LengthLimitError>() => return Err(too_large()),
        Err(err) => return Err(body_read_error(err.as_ref())),
    };
    let authorization = parts.headers.get(header::AUTHORIZATION).cloned();
    let serve = next.run(Request::from_parts(parts, Body::from(bytes)));
    Ok(unauthorized_if_session_ended(&state, authorization, serve).await)
}

/// A body that failed while being read: stalled past the body timeout
/// (408), or cut off by the client (400).
pub fn body_read_error(err: &(dyn std::error::Error + 'static)) -> ApiError {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::RequestTimeout("the request body arrived too slowly".into());
        }
        cause = err.source();
    }
    ApiError::bad_request("could not read the request body")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct WithId {
        #[serde(default, deserialize_with = "optional_id")]
        post_id: Option<i64>,
    }

    #[test]
    fn ids_accept_integers_and_digit_strings() {
        let a: WithId = parse_json_object(br#"{"post_id": 7}"#).unwrap();
        let b: WithId = parse_json_object(br#"{"post_id": "7"}"#).unwrap();
        let c: WithId = parse_json_object(br#"{}"#).unwrap();
        assert_eq!((a.post_id, b.post_id, c.post_id), (Some(7), Some(7), None));
    }

    #[test]
    fn ids_reject_anything_else() {
        for body in [
            r#"{"post_id": "x7"}"#,
            r#"{"post_id": 1.5}"#,
            r#"{"post_id": true}"#,
            r#"{"post_id": [1]}"#,
        ] {
            let err = parse_json_object::<WithId>(body.as_bytes()).unwrap_err();
            assert!(err.to_string().contains("post_id"), "{body}: {err}");
        }
    }

    #[test]
    fn non_objects_and_garbage_are_rejected() {
        assert!(parse_json_object::<WithId>(b"[1,2]").is_err());
        assert!(parse_json_object::<WithId>(b"{not json").is_err());
        assert!(parse_json_object::<WithId>(b"").is_ok());
    }
}
