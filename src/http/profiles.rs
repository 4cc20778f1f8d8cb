//! Profiles, settings and the follow graph.

use axum::{Json, body::Bytes, extract::State, response::Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    MessageBody,
    extract::{JsonBody, PageParams, PathText, QueryParams},
    json,
};
use crate::{
    app::AppState,
    auth::AuthUser,
    chat::{self, event::Sessions},
    domain::{account, time::UtcTimestamp, validate::required},
    error::{ApiError, ApiResult, ErrorBody},
    rate_limit::{RateLimited, limit},
    store::{
        SharedPage,
        accounts::{SettingsChange, UserSummary},
    },
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(profile))
        .routes(routes!(settings))
        .routes(routes!(follow))
        .routes(routes!(unfollow))
        .routes(routes!(check_follow))
        .routes(routes!(followers))
        .routes(routes!(following))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    followers: i64,
    following: i64,
    posts: i64,
    upvotes: i64,
    downvotes: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileBody {
    username: String,
    avatar_url: String,
    description: String,
    #[schema(value_type = String)]
    created_at: UtcTimestamp,
    custom_css: String,
    background_image: String,
    stats: Stats,
}

/// GET /api/user/{username}
#[utoipa::path(get, path = "/api/user/{username}", tag = "profiles",
    params(("username" = String, Path)),
    responses((status = 200, body = ProfileBody), (status = 404, body = ErrorBody)))]
async fn profile(
    State(state): State<AppState>,
    PathText(username): PathText,
) -> ApiResult<Json<ProfileBody>> {
    let p = state
        .store
        .profile(&username)
        .await?
        .ok_or_else(|| ApiError::not_found("user not found"))?;
    Ok(Json(ProfileBody {
        username: p.username,
        avatar_url: p.avatar_url,
        description: p.description,
        created_at: UtcTimestamp(p.created_at),
        custom_css: p.custom_css,
        background_image: p.background_image,
        stats: Stats {
            followers: p.followers,
            following: p.following,
            posts: p.posts,
            upvotes: p.upvotes,
            downvotes: p.downvotes,
        },
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SettingsRequest {
    email: Option<String>,
    avatar_url: Option<String>,
    description: Option<String>,
    password: Option<String>,
    custom_css: Option<String>,
    background_image: Option<String>,
}

/// POST /api/user/settings
#[utoipa::path(post, path = "/api/user/settings", tag = "profiles", request_body = SettingsRequest,
    responses((status = 200, body = MessageBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn settings(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<SettingsRequest>,
) -> ApiResult<Json<MessageBody>> {
    let mut change = SettingsChange::default();
    if let Some(email) = body.email {
        let email = email.trim().to_owned();
        account::email(&email)?;
        change.email = Some(email);
    }
    if let Some(url) = body.avatar_url {
        account::url(&url, "avatar_url")?;
        change.avatar_url = Some(url);
    }
    if let Some(url) = body.background_image {
        account::url(&url, "background_image")?;
        change.background_image = Some(url);
    }
    if let Some(text) = body.description {
        account::description(&text)?;
        change.description = Some(text);
    }
    if let Some(css) = body.custom_css {
        account::custom_css(&css)?;
        change.custom_css = Some(css);
    }
    if let Some(password) = body.password {
        account::password(&password)?;
        change.password_hash = Some(state.passwords.hash(&password).await?);
    }
    let nothing = change.email.is_none()
        && change.avatar_url.is_none()
        && change.background_image.is_none()
        && change.description.is_none()
        && change.custom_css.is_none()
        && change.password_hash.is_none();
    if nothing {
        return Err(ApiError::bad_request("nothing to update"));
    }
    let password_changed = change.password_hash.is_some();
    state
        .store
        .update_settings(user.id, change, user.token_hash)
        .await?;
    if password_changed {
        let others = Sessions::AllBut(user.token_hash);
        chat::end_sessions(&state, user.id, others, "password changed").await;
    }
    Ok(MessageBody::new("settings updated successfully"))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct FollowRequest {
    username: Option<String>,
}

/// POST /api/follow
#[utoipa::path(post, path = "/api/follow", tag = "profiles", request_body = FollowRequest,
    responses((status = 200, body = MessageBody), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, description = "Over the rate limit; see Retry-After", body = ErrorBody)))]
async fn follow(
    State(state): State<AppState>,
    RateLimited(user, ..): RateLimited<limit::Follows>,
    JsonBody(body): JsonBody<FollowRequest>,
) -> ApiResult<Json<MessageBody>> {
    let name = required(&body.username, "username")?.trim();
    let target = state.store.follow(user.id, name).await?;
    Ok(MessageBody::new(format!(
        "now following {}",
        target.username
    )))
}

/// POST /api/unfollow
#[utoipa::path(post, path = "/api/unfollow", tag = "profiles", request_body = FollowRequest,
    responses((status = 200, body = MessageBody), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, description = "Over the rate limit; see Retry-After", body = ErrorBody)))]
async fn unfollow(
    State(state): State<AppState>,
    RateLimited(user, ..): RateLimited<limit::Follows>,
    JsonBody(body): JsonBody<FollowRequest>,
) -> ApiResult<Json<MessageBody>> {
    let name = required(&body.username, "username")?.trim();
    let target = state.store.unfollow(user.id, name).await?;
    Ok(MessageBody::new(format!("unfollowed {}", target.username)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IsFollowing {
    is_following: bool,
}

/// GET /api/check_follow?username=…
#[utoipa::path(get, path = "/api/check_follow", tag = "profiles",
    params(("username" = String, Query)),
    responses((status = 200, body = IsFollowing), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn check_follow(
    State(state): State<AppState>,
    user: AuthUser,
    query: QueryParams,
) -> ApiResult<Json<IsFollowing>> {
    let name = query
        .text("username")
        .ok_or_else(|| ApiError::bad_request("username is required"))?;
    let is_following = state.store.is_following(user.id, name).await?;
    Ok(Json(IsFollowing { is_following }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserListEntry<'a> {
    username: &'a str,
    avatar_url: &'a str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FollowersBody<'a> {
    followers: Vec<UserListEntry<'a>>,
    next: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FollowingBody<'a> {
    following: Vec<UserListEntry<'a>>,
    next: Option<i64>,
}

/// A page of followers or followees as JSON, `key` naming the list. The
/// SQLite store hands every reader the same newest page until it changes:
/// rendered once, and kept as long as the page is.
fn render_follow_page(shared: &SharedPage<UserSummary>, key: FollowKey) -> Result<Bytes, ApiError> {
    shared.rendered(|page| {
        let entries = page
            .items
            .iter()
            .map(|u| UserListEntry {
                username: &u.username,
                avatar_url: &u.avatar_url,
            })
            .collect();
        let size = page
            .items
            .iter()
            .map(|u| u.username.len() + u.avatar_url.len() + 32)
            .sum::<usize>()
            + 32;
        match key {
            FollowKey::Followers => json::to_kept_bytes(
                &FollowersBody {
                    followers: entries,
                    next: page.next,
                },
                size,
            ),
            FollowKey::Following => json::to_kept_bytes(
                &FollowingBody {
                    following: entries,
                    next: page.next,
                },
                size,
            ),
        }
    })
}

#[derive(Clone, Copy)]
enum FollowKey {
    Followers,
    Following,
}

/// GET /api/get_followers/{username}
#[utoipa::path(get, path = "/api/get_followers/{username}", tag = "profiles",
    params(("username" = String, Path), PageParams),
    responses((status = 200, body = FollowersBody), (status = 400, description = "Bad `limit` or `before`", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn followers(
    State(state): State<AppState>,
    PathText(username): PathText,
    query: QueryParams,
) -> ApiResult<Response> {
    let page = state.store.followers(&username, query.page()?).await?;
    Ok(json::response(render_follow_page(
        &page,
        FollowKey::Followers,
    )?))
}

/// GET /api/get_following/{username}
#[utoipa::path(get, path = "/api/get_following/{username}", tag = "profiles",
    params(("username" = String, Path), PageParams),
    responses((status = 200, body = FollowingBody), (status = 400, description = "Bad `limit` or `before`", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn following(
    State(state): State<AppState>,
    PathText(username): PathText,
    query: QueryParams,
) -> ApiResult<Response> {
    let page = state.store.following(&username, query.page()?).await?;
    Ok(json::response(render_follow_page(
        &page,
        FollowKey::Following,
    )?))
}
