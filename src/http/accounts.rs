//! Registration, login and logout.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{MessageBody, extract::JsonBody};
use crate::{
    app::AppState,
    auth::{AuthUser, hash_token, header_token, new_token},
    chat::{self, event::Sessions},
    domain::{account, validate::required},
    error::{ApiError, ApiResult, ErrorBody},
    rate_limit::{AddressRateLimited, limit},
    store::{StoreError, accounts::NewUser},
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(delete_account))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    username: Option<String>,
    email: Option<String>,
    password: Option<String>,
    avatar_url: Option<String>,
    description: Option<String>,
}

/// POST /api/register
#[utoipa::path(post, path = "/api/register", tag = "accounts", request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created", body = MessageBody),
        (status = 400, description = "Missing or invalid field, or username/email taken", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody), (status = 429, description = "Over the rate limit; see Retry-After", body = ErrorBody)))]
async fn register(
    State(state): State<AppState>,
    _: AddressRateLimited<limit::Registrations>,
    JsonBody(body): JsonBody<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<MessageBody>)> {
    let username = required(&body.username, "username")?.trim();
    let email = required(&body.email, "email")?.trim();
    let password = required(&body.password, "password")?;
    let avatar_url = body.avatar_url.unwrap_or_default();
    let description = body.description.unwrap_or_default();
    account::username(username)?;
    account::email(email)?;
    account::password(password)?;
    account::url(&avatar_url, "avatar_url")?;
    account::description(&description)?;

    let password_hash = state.passwords.hash(password).await?;
    state
        .store
        .create_user(NewUser {
            username: username.to_owned(),
            email: email.to_owned(),
            password_hash,
            avatar_url,
            description,
        })
        .await?;
    Ok((StatusCode::CREATED, MessageBody::new("Welcome to MIRAGE")))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    username: Option<String>,
    password: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// A new session token (UUID v4); send it as the `Authorization` header.
    token: String,
    /// The username as registered.
    username: String,
}

/// POST /api/login
#[utoipa::path(post, path = "/api/login", tag = "accounts", request_body = LoginRequest,
    responses(
        (status = 200, description = "A new session", body = LoginResponse),
        (status = 400, description = "Missing field", body = ErrorBody),
        (status = 401, description = "Wrong password", body = ErrorBody),
        (status = 404, description = "Unknown user", body = ErrorBody), (status = 429, description = "Over the rate limit; see Retry-After", body = ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    from: AddressRateLimited<limit::Logins>,
    JsonBody(body): JsonBody<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let username = required(&body.username, "username")?.trim();
    let password = required(&body.password, "password")?;
    let record = state
        .store
        .login_record(username)
        .await?
        .ok_or_else(|| ApiError::not_found("user not found"))?;
    // Per account too, before the password is checked: the address limit
    // alone lets many addresses guess at one account.
    state
        .rate_limits
        .check_account_login(record.user.id, from.address)
        .await?;
    if !state
        .passwords
        .verify(password, &record.password_hash)
        .await?
    {
        return Err(ApiError::unauthorized("wrong password"));
    }
    state
        .rate_limits
        .remember_login(record.user.id, from.address)
        .await;
    let token = new_token();
    state
        .store
        .create_session(record.user.id, hash_token(&token))
        .await?;
    Ok(Json(LoginResponse {
        token,
        username: record.user.username,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LogoutRequest {
    /// Used when no `Authorization` header is sent (web clients).
    token: Option<String>,
}

/// POST /api/logout
#[utoipa::path(post, path = "/api/logout", tag = "accounts", request_body = LogoutRequest,
    responses(
        (status = 200, description = "Session ended", body = MessageBody),
        (status = 400, description = "No token given", body = ErrorBody),
        (status = 401, description = "Unknown token", body = ErrorBody)))]
async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<LogoutRequest>,
) -> ApiResult<Json<MessageBody>> {
    let body_token = body
        .token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let token = header_token(&headers)
        .or(body_token)
        .ok_or_else(|| ApiError::bad_request("token is required"))?;
    let token_hash = hash_token(token);
    let user_id = state
        .store
        .end_session(token_hash)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid or expired token"))?;
    chat::end_sessions(&state, user_id, Sessions::One(token_hash), "logged out").await;
    Ok(MessageBody::new("logged out successfully"))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DeleteAccountRequest {
    /// The account's current password, asked again so that a stolen token
    /// alone cannot erase the account.
    password: Option<String>,
}

/// POST /api/delete_account
///
/// Erases the caller's account and everything of theirs: sessions, posts
/// with their votes and replies, their votes and replies elsewhere (and
/// replies to those), follows, memberships, room messages, direct messages
/// sent and received, and uploads. Rooms they created pass to the
/// longest-standing other member, or are deleted with their messages and
/// files when no one else is in them. Counters of other users and posts
/// are corrected in the same transaction; the username becomes free.
#[utoipa::path(post, path = "/api/delete_account", tag = "accounts", request_body = DeleteAccountRequest,
    responses(
        (status = 200, description = "Account erased", body = MessageBody),
        (status = 400, description = "Missing password or malformed body", body = ErrorBody),
        (status = 401, description = "Unknown token or wrong password", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Over the login rate limit (it checks a password); see Retry-After", body = ErrorBody)))]
async fn delete_account(
    State(state): State<AppState>,
    user: AuthUser,
    // A stolen token must not buy unlimited password guesses.
    from: AddressRateLimited<limit::Logins>,
    JsonBody(body): JsonBody<DeleteAccountRequest>,
) -> ApiResult<Json<MessageBody>> {
    let password = required(&body.password, "password")?;
    let record = state
        .store
        .login_record(&user.username)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid or expired token"))?;
    state
        .rate_limits
        .check_account_login(user.id, from.address)
        .await?;
    if !state
        .passwords
        .verify(password, &record.password_hash)
        .await?
    {
        return Err(ApiError::unauthorized("wrong password"));
    }
    let deleted = state
        .store
        .delete_account(user.id)
        .await
        .map_err(|err| match err {
            // Deleted by a concurrent request: this token died with it.
            StoreError::NotFound(_) => ApiError::unauthorized("invalid or expired token"),
            other => other.into(),
        })?;
    chat::end_sessions(&state, user.id, Sessions::All, "account deleted").await;
    chat::announce_deleted_member(&state, &deleted.left_rooms, &user).await;
    // Outside the database: failures are logged, the account is gone anyway
    // (what is left are bytes no row points at, and Redis messages that
    // expire with the room's TTL).
    if let Err(err) = state
        .messages
        .erase_messages_of(user.id, &deleted.deleted_rooms)
        .await
    {
        tracing::error!(%err, user_id = user.id, "erasing room messages of a deleted account failed");
    }
    for file_id in &deleted.file_ids {
        if let Err(err) = state.files.delete(file_id).await {
            tracing::error!(%err, file_id, "deleting an erased upload failed");
        }
    }
    if let Err(err) = state.recount_trending().await {
        tracing::warn!(%err, "recounting trending hashtags failed");
    }
    Ok(MessageBody::new("account deleted"))
}
