//! The For You feed and trending topics.

use std::borrow::Cow;

use axum::{extract::State, response::Response};
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    json::{self, ITEM_OVERHEAD},
    posts::{PostBody, post_json},
};
use crate::{
    app::AppState,
    auth::AuthUser,
    domain::{feed, time::now_secs},
    error::{ApiResult, ErrorBody},
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(fyp))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FeedBody<'a> {
    /// Each post's JSON as kept with it (see `post_json`).
    #[schema(value_type = Vec<PostBody>)]
    posts: Vec<Cow<'a, RawValue>>,
    trending_topics: Vec<String>,
}

/// GET /api/fyp
#[utoipa::path(get, path = "/api/fyp", tag = "feed",
    responses((status = 200, body = FeedBody), (status = 401, body = ErrorBody)))]
async fn fyp(State(state): State<AppState>, user: AuthUser) -> ApiResult<Response> {
    let now = now_secs();
    let posts = state
        .store
        .feed_posts(feed::query(user.id, now), feed::mix)
        .await?;
    let trending = state.trending.top(now, 3);
    let body = FeedBody {
        posts: posts.iter().map(post_json).collect::<ApiResult<_>>()?,
        trending_topics: trending.into_iter().map(|t| format!("#{t}")).collect(),
    };
    let capacity = body.posts.iter().map(|p| p.get().len() + 1).sum::<usize>() + ITEM_OVERHEAD;
    Ok(json::response(json::to_vec(&body, capacity)?.into()))
}
