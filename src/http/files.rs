//! File uploads into rooms, streamed to a local temporary file and then
//! moved into the `FileStore` (a directory or S3), and serving them back.

use axum::{
    Json,
    body::Body,
    extract::{FromRequest, Multipart, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{edge::API_CONTENT_SECURITY_POLICY, extract::body_read_error};
use crate::{
    app::AppState,
    auth::{AuthUser, authenticate, header_token},
    chat::{member_room, post_to_room},
    domain::time::now_secs,
    error::{ApiError, ApiResult, ErrorBody},
    rate_limit::UserAction,
    store::rooms::StoredFile,
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
async fn upload_file(
    State(state): State<AppState>,
    request: Request,
) -> ApiResult<Json<UploadedBody>> {
    let headers = request.headers().clone();
    let token = header_token(&headers).map(str::to_owned);
    // A caller over the upload limit is refused before a byte is stored;
    // anyone else gets the usual order (413, 401, 400) below.
    if let Some(token) = token.as_deref()
        && let Ok(user) = authenticate(&state, token).await
    {
        state.rate_limits.check_user(UserAction::Upload, user.id)?;
    }
    let mut multipart = match Multipart::from_request(request, &state).await {
        Ok(multipart) => multipart,
        Err(_) => {
            // Authentication is checked before the request's shape.
            caller(&state, token.as_deref()).await?;
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
                        let mut out = tokio::fs::File::create(&temp_path)
                            .await
                            .map_err(ApiError::internal)?;
                        let mut size = 0u64;
                        received = Some(Received {
                            temp_path,
                            filename,
                            size,
                        });
                        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                            size += chunk.len() as u64;
                            if size > state.config.max_upload_bytes {
                                return Err(ApiError::PayloadTooLarge(format!(
                                    "file exceeds {} bytes",
                                    state.config.max_upload_bytes
                                )));
                            }
                            out.write_all(&chunk).await.map_err(ApiError::internal)?;
                        }
                        out.flush().await.map_err(ApiError::internal)?;
                        if let Some(r) = received.as_mut() {
                            r.size = size;
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
        let user = caller(&state, token.as_deref()).await?;
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
        let room = member_room(&state, room_id, &user).await?;

        let id = uuid::Uuid::new_v4().simple().to_string();
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
            base_url(&state, &headers),
            urlencode(&filename)
        );
        post_to_room(&state, room.id, &user, file_url.clone()).await?;
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

/// The last path component, without control characters.
fn safe_filename(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base.chars().filter(|c| !c.is_control()).collect();
    if cleaned.trim().is_empty() {
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
    responses((status = 200, description = "The file's bytes"), (status = 404, body = ErrorBody)))]
async fn get_file(
    State(state): State<AppState>,
    axum::extract::Path((id, _name)): axum::extract::Path<(String, String)>,
) -> ApiResult<Response> {
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
