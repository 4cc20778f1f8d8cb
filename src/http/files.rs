//! File uploads into rooms, streamed to a local temporary file and then
//! moved into the `FileStore` (a directory or S3), and serving them back.

use std::io::Write;

use axum::{
    Json,
    body::Body,
    extract::{FromRequest, Multipart, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{edge::API_CONTENT_SECURITY_POLICY, extract::body_read_error};
use crate::{
    app::AppState,
    auth::{AuthUser, authenticate, header_token, unauthorized_if_session_ended},
    chat::{member_room, post_to_room},
    domain::time::now_secs,
    error::{ApiError, ApiResult, ErrorBody},
    rate_limit::UserAction,
    store::{blobs::new_file_id, rooms::StoredFile},
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_file))
        .routes(routes!(get_file))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UploadedBody {
    message: String,
    file_url: String,
}

/// The file part as received: where its bytes went and what it was called.
struct Received {
    temp_path: std::path::PathBuf,
    filename: String,
    size: u64,
}

/// POST /api/upload_file
///
/// The file streams into a temporary file while its size is counted, so
/// an oversized upload is refused (413) without ever being held in memory.
#[utoipa::path(post, path = "/api/upload_file", tag = "files",
    request_body(content_type = "multipart/form-data", description = "parts `file` and `room_id`"),
    responses((status = 200, body = UploadedBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, description = "Over the rate limit; see Retry-After", body = ErrorBody)))]
async fn upload_file(State(state): State<AppState>, request: Request) -> Response {
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    // An upload in flight while its account is deleted finds its room
    // membership or user row gone: 401, as on the JSON routes.
    let serve = async { store_upload(&state, request).await.into_response() };
    unauthorized_if_session_ended(&state, authorization, serve).await
}

async fn store_upload(state: &AppState, request: Request) -> ApiResult<Json<UploadedBody>> {
    let headers = request.headers().clone();
    let token = header_token(&headers).map(str::to_owned);
    // A caller over the upload limit is refused before a byte is stored;
    // anyone else gets the usual order (413, 401, 400) below.
    if let Some(token) = token.as_deref()
        && let Ok(user) = authenticate(state, token).await
    {
        state
            .rate_limits
            .check_user(UserAction::Upload, user.id)
            .await?;
    }
    let mut multipart = match Multipart::from_request(request, state).await {
        Ok(multipart) => multipart,
        Err(_) => {
            // Authentication is checked before the request's shape.
            caller(state, token.as_deref()).await?;
            return Err(ApiError::bad_request("expected a multipart/form-data body"));
        }
    };
    let tmp_dir = state.config.data_dir.join("files").join("tmp");
    tokio::fs::create_dir_all(&tmp_dir)
        .await
        .map_err(ApiError::internal)?;

    let mut room_id: Option<String> = None;
    let mut received: Option<Received> = None;
    let result = async {
        let parsed: ApiResult<()> = async {
            while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
                match field.name() {
                    Some("room_id") => room_id = Some(field.text().await.map_err(multipart_error)?),
                    Some("file") if received.is_none() => {
                        let filename = field.file_name().unwrap_or("").to_owned();
                        let temp_path = tmp_dir.join(uuid::Uuid::new_v4().to_string());
                        // Written on this worker, chunk by chunk (at most
                        // 64 KiB each, the connection's read buffer): a write
                        // into the page cache takes microseconds, while
                        // tokio::fs hands each one to the blocking pool with
                        // a copy in a buffer of up to 2 MiB, which left up to
                        // 10 MiB of RSS behind per upload (docs/PERFORMANCE.md).
                        let mut out =
                            std::fs::File::create(&temp_path).map_err(ApiError::internal)?;
                        received = Some(Received {
                            temp_path,
                            filename,
                            size: 0,
                        });
                        let mut budget = UploadBudget::new(state.config.max_upload_bytes);
                        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                            budget.take(chunk.len())?;
                            out.write_all(&chunk).map_err(ApiError::internal)?;
                        }
                        if let Some(r) = received.as_mut() {
                            r.size = budget.received();
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        }
        .await;
        // Check order: too large (413), then authentication (401), then a
        // malformed body (400).
        let parsed = match parsed {
            Err(err) if !matches!(err, ApiError::BadRequest(_)) => return Err(err),
            other => other,
        };
        let user = caller(state, token.as_deref()).await?;
        parsed?;
        let file = received
            .as_ref()
            .ok_or_else(|| ApiError::bad_request("file is required"))?;
        if file.filename.trim().is_empty() {
            return Err(ApiError::bad_request("filename is empty"));
        }
        let room_id = room_id
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::bad_request("room_id is required"))?
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request("`room_id` must be an integer id"))?;
        let room = member_room(state, room_id, &user).await?;

        let id = new_file_id();
        let filename = safe_filename(&file.filename);
        let content_type = mime_guess::from_path(&filename)
            .first_or_octet_stream()
            .to_string();
        // The bytes first, then the metadata that makes them reachable.
        state
            .files
            .put_file(&id, &file.temp_path)
            .await
            .map_err(ApiError::internal)?;
        let saved = state
            .store
            .save_file(StoredFile {
                id: id.clone(),
                room_id: room.id,
                uploader: user.id,
                filename: filename.clone(),
                content_type,
                size: file.size,
                created_at: now_secs(),
            })
            .await;
        if let Err(err) = saved {
            if let Err(cleanup) = state.files.delete(&id).await {
                tracing::warn!(%cleanup, %id, "removing an unrecorded upload failed");
            }
            return Err(err.into());
        }
        let file_url = format!(
            "{}/api/files/{id}/{}",
            base_url(state, &headers),
            urlencode(&filename)
        );
        post_to_room(state, room.id, &user, file_url.clone()).await?;
        Ok(Json(UploadedBody {
            message: "File uploaded successfully".into(),
            file_url,
        }))
    }
    .await;
    if result.is_err()
        && let Some(file) = &received
    {
        let _ = tokio::fs::remove_file(&file.temp_path).await;
    }
    result
}

/// The uploader, from the `Authorization` header, or 401.
async fn caller(state: &AppState, token: Option<&str>) -> ApiResult<AuthUser> {
    let token = token.ok_or_else(|| ApiError::unauthorized("missing Authorization token"))?;
    authenticate(state, token).await
}

fn multipart_error(err: axum::extract::multipart::MultipartError) -> ApiError {
    if err.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge("upload too large".into())
    } else if let timeout @ ApiError::RequestTimeout(_) = body_read_error(&err) {
        timeout
    } else {
        ApiError::bad_request(format!("malformed multipart body: {}", err.body_text()))
    }
}

/// Counts an upload's bytes as they arrive and refuses the chunk that
/// takes it over the limit, before that chunk is written anywhere.
struct UploadBudget {
    max: u64,
    received: u64,
}

impl UploadBudget {
    fn new(max: u64) -> Self {
        UploadBudget { max, received: 0 }
    }

    fn take(&mut self, chunk_len: usize) -> ApiResult<()> {
        let total = self.received.saturating_add(chunk_len as u64);
        if total > self.max {
            return Err(ApiError::PayloadTooLarge(format!(
                "file exceeds {} bytes",
                self.max
            )));
        }
        self.received = total;
        Ok(())
    }

    fn received(&self) -> u64 {
        self.received
    }
}

/// The last path component, without control characters. A name of only
/// dots becomes `file` too: as the last segment of the file URL, `.` or
/// `..` would be resolved away by every client.
fn safe_filename(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base.chars().filter(|c| !c.is_control()).collect();
    if cleaned.trim().is_empty() || cleaned.chars().all(|c| c == '.') {
        "file".into()
    } else {
        cleaned
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| state.config.listen.to_string(), str::to_owned);
    format!("http://{host}")
}

/// Types a browser may render inline; everything else is a download.
fn is_inline_safe(content_type: &str) -> bool {
    let safe_images = ["image/png", "image/jpeg", "image/gif", "image/webp"];
    safe_images.contains(&content_type)
        || content_type.starts_with("audio/")
        || content_type.starts_with("video/")
        || content_type == "text/plain"
        || content_type == "application/pdf"
}

/// A served file may show itself (an image, a video, text) but never run a
/// script or load anything else. PDFs are the exception: browsers refuse
/// to open them in a sandbox, and their viewer runs no page scripts anyway.
fn file_content_security_policy(content_type: &str) -> &'static str {
    if content_type == "application/pdf" {
        "frame-ancestors 'none'"
    } else if is_inline_safe(content_type) {
        "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'; sandbox"
    } else {
        API_CONTENT_SECURITY_POLICY
    }
}

/// GET /api/files/{id}/{name}
#[utoipa::path(get, path = "/api/files/{id}/{name}", tag = "files",
    params(("id" = String, Path, description = "The file's unguessable id"),
        ("name" = String, Path, description = "The file's name (not checked: the id alone names the file)")),
    responses((status = 200, description = "The file's bytes"), (status = 404, body = ErrorBody)))]
async fn get_file(
    State(state): State<AppState>,
    path: Result<axum::extract::Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> ApiResult<Response> {
    // A path that does not decode (bad UTF-8) names no file.
    let axum::extract::Path((id, _name)) =
        path.map_err(|_| ApiError::not_found("file not found"))?;
    let file = state
        .store
        .file(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("file not found"))?;
    let opened = state
        .files
        .open(&file.id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found("file not found"))?;
    if opened.size != file.size {
        return Err(ApiError::internal(format!(
            "file {} has {} bytes stored, {} recorded",
            file.id, opened.size, file.size
        )));
    }
    let body = Body::from_stream(opened.body);
    let disposition = if is_inline_safe(&file.content_type) {
        "inline"
    } else {
        "attachment"
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    let value = |v: &str| HeaderValue::from_str(v).map_err(ApiError::internal);
    headers.insert(header::CONTENT_TYPE, value(&file.content_type)?);
    headers.insert(header::CONTENT_LENGTH, value(&file.size.to_string())?);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(file_content_security_policy(&file.content_type)),
    );
    // Front ends on other origins show images and play media with plain
    // `<img>`/`<video>` tags, which Cross-Origin-Resource-Policy would block.
    headers.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        value(&format!(
            "{disposition}; filename=\"{}\"",
            urlencode(&file.filename)
        ))?,
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn url_decode(text: &str) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut bytes = text.bytes();
        while let Some(b) = bytes.next() {
            if b == b'%' {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            } else {
                out.push(b);
            }
        }
        Some(out)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever name a client sends, the stored name is one usable path
        /// segment: no separators, no control characters, not blank, not a
        /// dot segment.
        #[test]
        fn any_filename_becomes_one_safe_path_segment(
            name in prop_oneof![any::<String>(), "[./\\\\a\\x00-\\x1f ]{0,8}"],
        ) {
            let safe = safe_filename(&name);
            prop_assert!(!safe.trim().is_empty());
            prop_assert!(!safe.contains(['/', '\\']));
            prop_assert!(!safe.chars().any(char::is_control));
            prop_assert!(safe != "." && safe != "..");
            prop_assert_eq!(safe_filename(&safe), safe.clone(), "not idempotent");
        }

        /// A plain name is kept as it is.
        #[test]
        fn a_plain_filename_is_kept(name in "[\\p{L}\\p{N}_ -]{0,10}\\.[a-z]{1,4}") {
            prop_assert_eq!(safe_filename(&name), name.clone());
            prop_assert_eq!(safe_filename(&format!("C:\\\\dir/../{name}")), name);
        }

        /// Names in URLs and headers are plain ASCII that decodes back to
        /// the exact bytes, so they cannot break out of a path segment or
        /// a quoted header parameter.
        #[test]
        fn urlencoded_names_are_header_safe_and_decode_back(name in any::<String>()) {
            let encoded = urlencode(&name);
            prop_assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)));
            let disposition = format!("attachment; filename=\"{encoded}\"");
            prop_assert!(HeaderValue::from_str(&disposition).is_ok());
            prop_assert_eq!(url_decode(&encoded), Some(name.into_bytes()));
        }

        /// The budget lets through exactly the uploads of at most `max`
        /// bytes, and refuses the first chunk that would pass it.
        #[test]
        fn uploads_are_refused_exactly_past_the_size_limit(
            chunks in proptest::collection::vec(0usize..5_000, 0..20),
            max in 0u64..60_000,
        ) {
            let mut budget = UploadBudget::new(max);
            let mut accepted = 0u64;
            let mut refused = false;
            for &chunk in &chunks {
                match budget.take(chunk) {
                    Ok(()) => accepted += chunk as u64,
                    Err(err) => {
                        prop_assert!(matches!(err, ApiError::PayloadTooLarge(_)));
                        prop_assert!(accepted + chunk as u64 > max);
                        refused = true;
                        break;
                    }
                }
            }
            let total: u64 = chunks.iter().map(|&c| c as u64).sum();
            prop_assert_eq!(refused, total > max);
            prop_assert!(accepted <= max);
            prop_assert_eq!(budget.received(), accepted);
        }
    }
}
