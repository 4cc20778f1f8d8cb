//! The For You feed and trending topics.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    json::{ITEM_OVERHEAD, SizedJson},
    posts::PostBody,
};
use crate::{
    app::AppState,
    auth::AuthUser,
    domain::{feed, time::now_secs},
    error::{ApiResult, ErrorBody},
    store::posts::FeedQuery,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(fyp))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FeedBody {
    posts: Vec<PostBody<'static>>,
    trending_topics: Vec<String>,
}

/// GET /api/fyp
#[utoipa::path(get, path = "/api/fyp", tag = "feed",
    responses((status = 200, body = FeedBody), (status = 401, body = ErrorBody)))]
async fn fyp(State(state): State<AppState>, user: AuthUser) -> ApiResult<SizedJson<FeedBody>> {
    let now = now_secs();
    // A full page of followed and global posts, so that short shares can
    // be filled; archive draws (random seeks) only as many as needed.
    let posts = state
        .store
        .feed_posts(
            FeedQuery {
                viewer: user.id,
                followed: feed::PAGE,
                global: feed::PAGE,
                archive: feed::ARCHIVE_SHARE,
                page: feed::PAGE,
                window_posts: feed::WINDOW_POSTS as i64,
                window_start: now - feed::WINDOW_SECS,
            },
            feed::mix,
        )
        .await?;
    let trending = state.trending.top(now, 3);
    let capacity = posts
        .iter()
        .map(|p| p.content.json().len() + p.username.len() + ITEM_OVERHEAD)
        .sum::<usize>()
        + ITEM_OVERHEAD;
    Ok(SizedJson {
        body: FeedBody {
            posts: posts.into_iter().map(PostBody::from).collect(),
            trending_topics: trending.into_iter().map(|t| format!("#{t}")).collect(),
        },
        capacity,
    })
}
