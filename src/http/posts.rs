//! Posts, votes and threaded replies.

use std::borrow::Cow;

use axum::{Json, body::Bytes, extract::State, http::StatusCode, response::Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    extract::{JsonBody, PageParams, PathText, QueryParams, optional_id, path_id},
    json::{self, ITEM_OVERHEAD, SizedJson},
};
use crate::{
    app::AppState,
    domain::{
        hashtags,
        time::{UtcTimestamp, now_secs},
        validate::{max_chars, required},
    },
    error::{ApiError, ApiResult, ErrorBody},
    rate_limit::{RateLimited, limit},
    store::posts::{Post, PostText, Reply, VoteKind},
};

pub const MAX_POST_CHARS: usize = 512;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_post))
        .routes(routes!(get_posts))
        .routes(routes!(get_post_by_id))
        .routes(routes!(vote_post))
        .routes(routes!(reply_to_post))
        .routes(routes!(get_replies))
}

/// A post as every endpoint shows it, borrowed from the post.
#[derive(Debug, Serialize, ToSchema)]
pub struct PostBody<'a> {
    id: i64,
    username: &'a str,
    #[schema(value_type = String)]
    content: PostText,
    #[schema(value_type = String)]
    created_at: UtcTimestamp,
    upvotes: i64,
    downvotes: i64,
    replies: i64,
}

impl<'a> From<&'a Post> for PostBody<'a> {
    fn from(p: &'a Post) -> Self {
        PostBody {
            id: p.id,
            username: &p.username,
            content: p.content.clone(),
            created_at: UtcTimestamp(p.created_at),
            upvotes: p.upvotes,
            downvotes: p.downvotes,
            replies: p.replies,
        }
    }
}

/// The post's JSON: kept with the post when its store keeps renderings
/// (see `PostRendering`), so a cached post is serialised once, not once per
/// feed that shows it.
pub fn post_json(post: &Post) -> ApiResult<Cow<'_, RawValue>> {
    if let Some(json) = post.rendering.get() {
        return Ok(Cow::Borrowed(json));
    }
    let json =
        serde_json::value::to_raw_value(&PostBody::from(post)).map_err(ApiError::internal)?;
    Ok(post.rendering.keep(json))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedBody {
    message: String,
    id: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreatePostRequest {
    content: Option<String>,
}

/// POST /api/create_post
#[utoipa::path(post, path = "/api/create_post", tag = "posts", request_body = CreatePostRequest,
    responses((status = 201, body = CreatedBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, description = "Over the rate limit; see Retry-After", body = ErrorBody)))]
async fn create_post(
    State(state): State<AppState>,
    RateLimited(user, ..): RateLimited<limit::Posts>,
    JsonBody(body): JsonBody<CreatePostRequest>,
) -> ApiResult<(StatusCode, Json<CreatedBody>)> {
    let content = required(&body.content, "content")?;
    max_chars(content, MAX_POST_CHARS, "content")?;
    let tags = hashtags::extract(content);
    let now = now_secs();
    let id = state
        .store
        .create_post(user.id, content.to_owned(), tags.clone(), now)
        .await?;
    state.trending.record(id, now, &tags);
    let message = "post created".to_owned();
    Ok((StatusCode::CREATED, Json(CreatedBody { message, id })))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PostsBody<'a> {
    posts: Vec<PostBody<'a>>,
    next: Option<i64>,
}

/// GET /api/get_posts/{username}
///
/// The store may hand the same page to many readers (a user's newest page
/// is cached until it changes), so the page is serialised once and its
/// bytes kept with it.
#[utoipa::path(get, path = "/api/get_posts/{username}", tag = "posts",
    params(("username" = String, Path), PageParams),
    responses((status = 200, body = PostsBody), (status = 400, description = "Bad `limit` or `before`", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn get_posts(
    State(state): State<AppState>,
    PathText(username): PathText,
    query: QueryParams,
) -> ApiResult<Response> {
    let shared = state.store.posts_by(&username, query.page()?).await?;
    let rendered = shared.rendered(|page| {
        let body = PostsBody {
            posts: page.items.iter().map(PostBody::from).collect(),
            next: page.next,
        };
        // Sized up front: the bytes stay in the cache as long as the page,
        // and a buffer grown by doubling would keep up to twice what it holds.
        let size = page
            .items
            .iter()
            .map(|p| p.content.json().len() + p.username.len() + ITEM_OVERHEAD)
            .sum();
        json::to_kept_bytes(&body, size)
    })?;
    Ok(json::response(rendered))
}

/// GET /api/get_post_by_id/{id}
#[utoipa::path(get, path = "/api/get_post_by_id/{id}", tag = "posts",
    params(("id" = i64, Path, description = "Post id; anything but a number names no post (404)")),
    responses((status = 200, body = PostBody), (status = 404, body = ErrorBody)))]
async fn get_post_by_id(
    State(state): State<AppState>,
    PathText(id): PathText,
) -> ApiResult<Response> {
    let post = state
        .store
        .post(path_id(&id, "post")?)
        .await?
        .ok_or_else(|| ApiError::not_found("post not found"))?;
    let json = Bytes::copy_from_slice(post_json(&post)?.get().as_bytes());
    Ok(json::response(json))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct VoteRequest {
    #[serde(default, deserialize_with = "optional_id")]
    #[schema(value_type = Option<i64>)]
    post_id: Option<i64>,
    vote_type: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VoteBody {
    message: String,
    upvotes: i64,
    downvotes: i64,
}

/// POST /api/vote_post
#[utoipa::path(post, path = "/api/vote_post", tag = "posts", request_body = VoteRequest,
    responses((status = 200, body = VoteBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, description = "Over the rate limit; see Retry-After", body = ErrorBody)))]
async fn vote_post(
    State(state): State<AppState>,
    RateLimited(user, ..): RateLimited<limit::Votes>,
    JsonBody(body): JsonBody<VoteRequest>,
) -> ApiResult<Json<VoteBody>> {
    let post_id = body
        .post_id
        .ok_or_else(|| ApiError::bad_request("post_id is required"))?;
    let kind = match required(&body.vote_type, "vote_type")?.trim() {
        "up" => VoteKind::Up,
        "down" => VoteKind::Down,
        _ => {
            return Err(ApiError::bad_request(
                "vote_type must be \"up\" or \"down\"",
            ));
        }
    };
    let counts = state.store.vote(user.id, post_id, kind).await?;
    Ok(Json(VoteBody {
        message: "vote counted".into(),
        upvotes: counts.upvotes,
        downvotes: counts.downvotes,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ReplyRequest {
    #[serde(default, deserialize_with = "optional_id")]
    #[schema(value_type = Option<i64>)]
    post_id: Option<i64>,
    content: Option<String>,
    #[serde(default, deserialize_with = "optional_id")]
    #[schema(value_type = Option<i64>)]
    parent_id: Option<i64>,
}

/// POST /api/reply_to_post
#[utoipa::path(post, path = "/api/reply_to_post", tag = "posts", request_body = ReplyRequest,
    responses((status = 201, body = CreatedBody), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, description = "Over the rate limit; see Retry-After", body = ErrorBody)))]
async fn reply_to_post(
    State(state): State<AppState>,
    RateLimited(user, ..): RateLimited<limit::Replies>,
    JsonBody(body): JsonBody<ReplyRequest>,
) -> ApiResult<(StatusCode, Json<CreatedBody>)> {
    let post_id = body
        .post_id
        .ok_or_else(|| ApiError::bad_request("post_id is required"))?;
    let content = required(&body.content, "content")?;
    max_chars(content, MAX_POST_CHARS, "content")?;
    let id = state
        .store
        .create_reply(
            user.id,
            post_id,
            body.parent_id,
            content.to_owned(),
            now_secs(),
        )
        .await?;
    let message = "reply created".to_owned();
    Ok((StatusCode::CREATED, Json(CreatedBody { message, id })))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplyBody {
    id: i64,
    username: String,
    content: String,
    #[schema(value_type = String)]
    created_at: UtcTimestamp,
    avatar_url: String,
    parent_id: Option<i64>,
}

impl From<Reply> for ReplyBody {
    fn from(r: Reply) -> Self {
        ReplyBody {
            id: r.id,
            username: r.username,
            content: r.content,
            created_at: UtcTimestamp(r.created_at),
            avatar_url: r.avatar_url,
            parent_id: r.parent_id,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RepliesBody {
    replies: Vec<ReplyBody>,
    next: Option<i64>,
}

/// GET /api/get_replies/{post_id}
#[utoipa::path(get, path = "/api/get_replies/{post_id}", tag = "posts",
    params(("post_id" = i64, Path, description = "Post id; anything but a number names no post (404)"), PageParams),
    responses((status = 200, body = RepliesBody), (status = 400, description = "Bad `limit` or `before`", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn get_replies(
    State(state): State<AppState>,
    PathText(post_id): PathText,
    query: QueryParams,
) -> ApiResult<SizedJson<RepliesBody>> {
    let page = state
        .store
        .replies(path_id(&post_id, "post")?, query.page()?)
        .await?;
    let capacity = page
        .items
        .iter()
        .map(|r| r.content.len() + r.username.len() + r.avatar_url.len())
        .sum::<usize>()
        + ITEM_OVERHEAD * (page.items.len() + 1);
    Ok(SizedJson {
        body: RepliesBody {
            replies: page.items.into_iter().map(ReplyBody::from).collect(),
            next: page.next,
        },
        capacity,
    })
}
