//! Direct messages (the inbox).

use axum::{Json, extract::State, response::Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    MessageBody,
    extract::{JsonBody, PageParams, QueryParams, optional_id},
    json::{self, ITEM_OVERHEAD},
};
use crate::{
    app::AppState,
    auth::AuthUser,
    chat,
    domain::time::UtcTimestamp,
    error::{ApiError, ApiResult, ErrorBody},
    rate_limit::{RateLimited, limit},
    store::inbox::InboxMessage,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send_inbox_message))
        .routes(routes!(inbox))
        .routes(routes!(delete_inbox_message))
        .routes(routes!(inbox_count))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SendRequest {
    recipient: Option<String>,
    message: Option<String>,
}

/// POST /api/send_inbox_message
#[utoipa::path(post, path = "/api/send_inbox_message", tag = "inbox", request_body = SendRequest,
    responses((status = 200, body = MessageBody), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, description = "Over the rate limit; see Retry-After", body = ErrorBody)))]
async fn send_inbox_message(
    State(state): State<AppState>,
    RateLimited(user, ..): RateLimited<limit::InboxMessages>,
    JsonBody(body): JsonBody<SendRequest>,
) -> ApiResult<Json<MessageBody>> {
    chat::send_inbox_message(&state, &user, &body.recipient, &body.message).await?;
    Ok(MessageBody::new("sent"))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InboxEntry<'a> {
    id: i64,
    sender: &'a str,
    recipient: &'a str,
    message: &'a str,
    #[schema(value_type = String)]
    created_at: UtcTimestamp,
    avatar_url: &'a str,
}

impl<'a> From<&'a InboxMessage> for InboxEntry<'a> {
    fn from(m: &'a InboxMessage) -> Self {
        InboxEntry {
            id: m.id,
            sender: &m.sender,
            recipient: &m.recipient,
            message: &m.message,
            created_at: UtcTimestamp(m.created_at),
            avatar_url: &m.avatar_url,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InboxBody<'a> {
    messages: Vec<InboxEntry<'a>>,
    next: Option<i64>,
}

/// GET /api/inbox
#[utoipa::path(get, path = "/api/inbox", tag = "inbox",
    params(PageParams),
    responses((status = 200, body = InboxBody), (status = 400, description = "Bad `limit` or `before`", body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn inbox(
    State(state): State<AppState>,
    user: AuthUser,
    query: QueryParams,
) -> ApiResult<Response> {
    let shared = state.store.inbox(user.id, query.page()?).await?;
    // The store may hand the same page to the user's next requests (the
    // newest page is cached until it changes): rendered once, kept as bytes.
    let rendered = shared.rendered(|page| {
        let capacity = page
            .items
            .iter()
            .map(|m| m.message.len() + m.sender.len() + m.recipient.len() + m.avatar_url.len())
            .sum::<usize>()
            + ITEM_OVERHEAD * (page.items.len() + 1);
        let body = InboxBody {
            messages: page.items.iter().map(InboxEntry::from).collect(),
            next: page.next,
        };
        json::to_kept_bytes(&body, capacity)
    })?;
    Ok(json::response(rendered))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DeleteRequest {
    #[serde(default, deserialize_with = "optional_id")]
    #[schema(value_type = Option<i64>)]
    message_id: Option<i64>,
}

/// POST /api/delete_inbox_message
#[utoipa::path(post, path = "/api/delete_inbox_message", tag = "inbox", request_body = DeleteRequest,
    responses((status = 200, body = MessageBody), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_inbox_message(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<DeleteRequest>,
) -> ApiResult<Json<MessageBody>> {
    let id = body
        .message_id
        .ok_or_else(|| ApiError::bad_request("message_id is required"))?;
    state.store.delete_inbox_message(user.id, id).await?;
    Ok(MessageBody::new("message deleted successfully"))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CountBody {
    inbox_count: i64,
}

/// GET /api/inbox_count
#[utoipa::path(get, path = "/api/inbox_count", tag = "inbox",
    responses((status = 200, body = CountBody), (status = 401, body = ErrorBody)))]
async fn inbox_count(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<CountBody>> {
    let inbox_count = state.store.inbox_count(user.id).await?;
    Ok(Json(CountBody { inbox_count }))
}
