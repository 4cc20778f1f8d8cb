//! Rooms, membership and room chat.

use axum::{Json, extract::State, http::StatusCode, response::Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    MessageBody,
    extract::{JsonBody, PathText, QueryParams, optional_id, path_id},
    json::{self, ITEM_OVERHEAD},
};
use crate::{
    app::AppState,
    auth::AuthUser,
    chat,
    domain::{
        time::now_f64,
        validate::{max_chars, required},
    },
    error::{ApiError, ApiResult, ErrorBody},
    rate_limit::{RateLimited, limit},
    store::rooms::NewRoom,
};

pub const MAX_ROOM_NAME_CHARS: usize = 64;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_room))
        .routes(routes!(join_room))
        .routes(routes!(leave_room))
        .routes(routes!(rooms))
        .routes(routes!(user_rooms))
        .routes(routes!(room_members))
        .routes(routes!(send_room_message))
        .routes(routes!(get_room_messages))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateRoomRequest {
    room_name: Option<String>,
    /// 0/1 or false/true.
    #[schema(value_type = Option<bool>)]
    is_private: Option<serde_json::Value>,
    password: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedRoomBody {
    message: String,
    room_id: i64,
}

fn parse_private(value: Option<serde_json::Value>) -> ApiResult<bool> {
    use serde_json::Value;
    match value {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(Value::Number(n)) if n.as_i64() == Some(0) => Ok(false),
        Some(Value::Number(n)) if n.as_i64() == Some(1) => Ok(true),
        _ => Err(ApiError::bad_request(
            "is_private must be 0, 1, false or true",
        )),
    }
}

/// POST /api/create_room
#[utoipa::path(post, path = "/api/create_room", tag = "rooms", request_body = CreateRoomRequest,
    responses((status = 201, body = CreatedRoomBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_room(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<CreateRoomRequest>,
) -> ApiResult<(StatusCode, Json<CreatedRoomBody>)> {
    let name = required(&body.room_name, "room_name")?.trim().to_owned();
    max_chars(&name, MAX_ROOM_NAME_CHARS, "room_name")?;
    let is_private = parse_private(body.is_private)?;
    let password_hash = if is_private {
        let password = required(&body.password, "password")?;
        Some(state.passwords.hash(password).await?)
    } else {
        None
    };
    let room = state
        .store
        .create_room(
            NewRoom {
                name,
                is_private,
                password_hash,
                creator: user.id,
            },
            state.config.max_public_rooms,
        )
        .await?;
    chat::announce_creator(&state, &room, &user).await;
    let message = format!("room \"{}\" created", room.name);
    Ok((
        StatusCode::CREATED,
        Json(CreatedRoomBody {
            message,
            room_id: room.id,
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct JoinRequest {
    name: Option<String>,
    #[serde(default, deserialize_with = "optional_id")]
    #[schema(value_type = Option<i64>)]
    room_id: Option<i64>,
    password: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JoinedBody {
    message: String,
    room_id: i64,
    room_name: String,
}

/// POST /api/join_room
#[utoipa::path(post, path = "/api/join_room", tag = "rooms", request_body = JoinRequest,
    responses((status = 200, body = JoinedBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn join_room(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<JoinRequest>,
) -> ApiResult<Json<JoinedBody>> {
    let name = body
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let room = match (name, body.room_id) {
        (Some(name), _) => state.store.room_by_name(name).await?,
        (None, Some(id)) => state.store.room_by_id(id).await?,
        (None, None) => return Err(ApiError::bad_request("name is required")),
    }
    .ok_or_else(|| ApiError::not_found("room not found"))?;
    if let Some(hash) = &room.password_hash {
        let password = body.password.as_deref().unwrap_or("");
        if password.is_empty() || !state.passwords.verify(password, hash).await? {
            return Err(ApiError::forbidden("wrong or missing room password"));
        }
    }
    chat::join_room(&state, &room, &user).await?;
    Ok(Json(JoinedBody {
        message: format!("{} joined room \"{}\"", user.username, room.name),
        room_id: room.id,
        room_name: room.name,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LeaveRequest {
    #[serde(default, deserialize_with = "optional_id")]
    #[schema(value_type = Option<i64>)]
    room_id: Option<i64>,
}

/// POST /api/leave_room
#[utoipa::path(post, path = "/api/leave_room", tag = "rooms", request_body = LeaveRequest,
    responses((status = 200, body = MessageBody), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn leave_room(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<LeaveRequest>,
) -> ApiResult<Json<MessageBody>> {
    let id = body
        .room_id
        .ok_or_else(|| ApiError::bad_request("room_id is required"))?;
    let room = state
        .store
        .room_by_id(id)
        .await?
        .ok_or_else(|| ApiError::not_found("room not found"))?;
    if !chat::leave_room(&state, &room, &user).await? {
        return Err(ApiError::bad_request("you are not a member of this room"));
    }
    Ok(MessageBody::new(format!("left room \"{}\"", room.name)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PublicRoomEntry {
    room_id: i64,
    name: String,
    joined: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoomsBody {
    rooms: Vec<PublicRoomEntry>,
}

/// GET /api/rooms
#[utoipa::path(get, path = "/api/rooms", tag = "rooms",
    responses((status = 200, body = RoomsBody), (status = 401, body = ErrorBody)))]
async fn rooms(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<RoomsBody>> {
    let rooms = state.store.public_rooms(user.id).await?;
    Ok(Json(RoomsBody {
        rooms: rooms
            .into_iter()
            .map(|r| PublicRoomEntry {
                room_id: r.id,
                name: r.name,
                joined: r.joined,
            })
            .collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserRoomEntry {
    room_id: i64,
    name: String,
    is_private: u8,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserRoomsBody {
    rooms: Vec<UserRoomEntry>,
}

/// GET /api/user_rooms
#[utoipa::path(get, path = "/api/user_rooms", tag = "rooms",
    responses((status = 200, body = UserRoomsBody), (status = 401, body = ErrorBody)))]
async fn user_rooms(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<UserRoomsBody>> {
    let rooms = state.store.rooms_of(user.id).await?;
    Ok(Json(UserRoomsBody {
        rooms: rooms
            .into_iter()
            .map(|r| UserRoomEntry {
                room_id: r.id,
                name: r.name,
                is_private: u8::from(r.is_private),
            })
            .collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MembersBody<'a> {
    members: &'a [String],
}

/// GET /api/room_members/{room_id}
#[utoipa::path(get, path = "/api/room_members/{room_id}", tag = "rooms",
    params(("room_id" = i64, Path, description = "Room id; anything but a number names no room (404)")),
    responses((status = 200, body = MembersBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn room_members(
    State(state): State<AppState>,
    user: AuthUser,
    PathText(room_id): PathText,
) -> ApiResult<Response> {
    let id = path_id(&room_id, "room")?;
    let room = state
        .store
        .room_by_id(id)
        .await?
        .ok_or_else(|| ApiError::not_found("room not found"))?;
    if room.is_private && !state.store.is_member(room.id, user.id).await? {
        return Err(ApiError::forbidden("you are not a member of this room"));
    }
    let members = state.store.member_names(room.id).await?;
    // The SQLite store hands every reader the same page until the
    // membership changes: rendered once.
    let rendered = members.rendered(|page| {
        let size = page.items.iter().map(|n| n.len() + 3).sum::<usize>() + ITEM_OVERHEAD;
        json::to_kept_bytes(
            &MembersBody {
                members: &page.items,
            },
            size,
        )
    })?;
    Ok(json::response(rendered))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SendRequest {
    #[serde(default, deserialize_with = "optional_id")]
    #[schema(value_type = Option<i64>)]
    room_id: Option<i64>,
    message: Option<String>,
}

/// POST /api/send_room_message
#[utoipa::path(post, path = "/api/send_room_message", tag = "rooms", request_body = SendRequest,
    responses((status = 200, body = MessageBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, description = "Over the rate limit; see Retry-After", body = ErrorBody)))]
async fn send_room_message(
    State(state): State<AppState>,
    RateLimited(user, ..): RateLimited<limit::RoomMessages>,
    JsonBody(body): JsonBody<SendRequest>,
) -> ApiResult<Json<MessageBody>> {
    chat::send_room_message(&state, &user, body.room_id, &body.message).await?;
    Ok(MessageBody::new("sent"))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoomMessageBody<'a> {
    id: i64,
    username: &'a str,
    message: &'a str,
    created_at: f64,
    room_id: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessagesBody<'a> {
    messages: Vec<RoomMessageBody<'a>>,
}

/// GET /api/get_room_messages?room_id=N
///
/// Every member of a room polls the same page: the SQLite store keeps its
/// rendering until a message comes or expires (see `RoomMessages`).
#[utoipa::path(get, path = "/api/get_room_messages", tag = "rooms",
    params(("room_id" = i64, Query), ("since" = Option<f64>, Query)),
    responses((status = 200, body = MessagesBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_room_messages(
    State(state): State<AppState>,
    user: AuthUser,
    query: QueryParams,
) -> ApiResult<Response> {
    let room_id = query
        .id("room_id")?
        .ok_or_else(|| ApiError::bad_request("room_id is required"))?;
    let since = query.float("since")?;
    let room = chat::member_room(&state, room_id, &user).await?;
    let messages = state
        .messages
        .room_messages(room.id, since, now_f64(), state.retention())
        .await?;
    let rendered = messages.rendered(|messages| {
        let size = messages
            .iter()
            .map(|m| m.message.len() + m.username.len() + ITEM_OVERHEAD)
            .sum::<usize>()
            + ITEM_OVERHEAD;
        let body = MessagesBody {
            messages: messages
                .iter()
                .map(|m| RoomMessageBody {
                    id: m.id,
                    username: &m.username,
                    message: &m.message,
                    created_at: m.created_at,
                    room_id: m.room_id,
                })
                .collect(),
        };
        // Kept as long as the room's messages do not change.
        json::to_kept_bytes(&body, size)
    })?;
    Ok(json::response(rendered))
}
