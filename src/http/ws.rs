//! `GET /api/ws`: the real-time stream of room messages, membership changes
//! and direct messages, and a way to send them. The protocol is described
//! in docs/REALTIME.md.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use axum::{
    extract::{
        State,
        ws::{
            Message, Utf8Bytes, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
        },
    },
    http::HeaderMap,
    response::Response,
};
use futures_util::{SinkExt, StreamExt, stream::SplitSink};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{QueryParams, optional_id};
use crate::{
    app::AppState,
    auth::{AuthUser, authenticate, header_token},
    chat::{self, fanout::Subscription},
    domain::time::now_f64,
    error::{ApiError, ApiResult, ErrorBody},
    rate_limit::UserAction,
    store::rooms::Room,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ws))
}

/// GET /api/ws — upgrade to the real-time WebSocket.
#[utoipa::path(get, path = "/api/ws", tag = "realtime",
    params(
        ("token" = Option<String>, Query, description = "Session token, for clients that cannot set the Authorization header"),
        ("since" = Option<f64>, Query, description = "Unix seconds: first replay the retained room messages newer than this"),
    ),
    responses((status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn ws(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: QueryParams,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    // The header wins; browsers cannot set it on a WebSocket, so `?token=` too.
    let token = header_token(&headers)
        .or_else(|| query.text("token"))
        .ok_or_else(|| ApiError::unauthorized("missing Authorization token"))?;
    let user = authenticate(&state, token).await?;
    let since = query.float("since")?;
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::bad_request(format!(
            "this endpoint needs a WebSocket upgrade: {rejection}"
        ))
    })?;
    let max_frame = state.config.max_json_bytes;
    let (connection, subscription, backfill) = Connection::open(state, user, since).await?;
    Ok(upgrade
        .max_message_size(max_frame)
        .max_frame_size(max_frame)
        // Small buffers keep an idle stream cheap (the defaults are
        // 128 KiB each); every frame is flushed as it is sent anyway.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| connection.run(socket, subscription, backfill)))
}

/// A client → server frame.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    SendRoomMessage {
        #[serde(default, deserialize_with = "optional_id")]
        room_id: Option<i64>,
        message: Option<String>,
    },
    SendInboxMessage {
        recipient: Option<String>,
        message: Option<String>,
    },
    /// An application-level keep-alive for clients that cannot send
    /// WebSocket pings (browsers).
    Ping,
}

/// A reply to one client frame. `ref` echoes the client's `ref`, if any.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Reply {
    /// The request succeeded; `id` is the stored message's id.
    Ack {
        message: &'static str,
        id: i64,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<Value>,
    },
    Pong {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<Value>,
    },
    /// The JSON error the HTTP endpoint would answer, with its status.
    Error {
        error: String,
        status: u16,
        /// Seconds to wait, on a 429 (the HTTP `Retry-After`).
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<Value>,
    },
}

impl Reply {
    fn error(err: ApiError, reference: Option<Value>) -> Self {
        if let ApiError::Internal(detail) = &err {
            tracing::error!(%detail, "internal error on a WebSocket request");
        }
        Reply::Error {
            status: err.status().as_u16(),
            retry_after: match &err {
                ApiError::TooManyRequests {
                    retry_after_secs, ..
                } => Some(*retry_after_secs),
                _ => None,
            },
            error: err.to_string(),
            reference,
        }
    }
}

/// Why a connection ended (for the logs).
#[derive(Debug)]
enum Closed {
    ByClient,
    TooSlow,
    Idle,
    WriteFailed,
    SessionEnded,
}

struct Connection {
    state: AppState,
    user: AuthUser,
    idle_timeout: Duration,
    /// Per room, the id of the last message replayed by the backfill: live
    /// copies of it and anything older are skipped.
    replayed: HashMap<i64, i64>,
}

impl Connection {
    /// Subscribes, then loads the rooms and the backlog, all before the
    /// upgrade is answered: every event published after the client sees
    /// the 101 reaches it, and whatever happens meanwhile is queued, so
    /// nothing falls in a gap.
    async fn open(
        state: AppState,
        user: AuthUser,
        since: Option<f64>,
    ) -> ApiResult<(Connection, Subscription, Vec<Message>)> {
        let subscription = state.chat.hub.local().connect(user.id, user.token_hash);
        // A logout between authenticating and subscribing would otherwise
        // leave this stream open on an ended session.
        if state.store.session_user(user.token_hash).await?.is_none() {
            return Err(ApiError::unauthorized("invalid or expired token"));
        }
        let rooms = state.store.rooms_of(user.id).await?;
        state
            .chat
            .hub
            .local()
            .set_rooms(subscription.id, rooms.iter().map(|r| r.id));
        let idle_timeout = Duration::from_secs(state.config.ws_idle_timeout_secs.max(1));
        let mut connection = Connection {
            state,
            user,
            idle_timeout,
            replayed: HashMap::new(),
        };
        let backfill = match since {
            Some(since) => connection.load_backfill(&rooms, since).await?,
            None => Vec::new(),
        };
        Ok((connection, subscription, backfill))
    }

    /// The retained messages of the rooms newer than `since`, oldest first.
    async fn load_backfill(&mut self, rooms: &[Room], since: f64) -> ApiResult<Vec<Message>> {
        let mut missed = Vec::new();
        for room in rooms {
            let messages = self
                .state
                .messages
                .room_messages(room.id, Some(since), now_f64(), self.state.retention())
                .await?;
            if let Some(last) = messages.as_slice().last() {
                self.replayed.insert(room.id, last.id);
            }
            missed.extend(messages.as_slice().iter().map(|m| (**m).clone()));
        }
        // Ids grow in sending order, across rooms too.
        missed.sort_by_key(|m| m.id);
        missed
            .into_iter()
            .map(|m| event_frame(&chat::event::Event::from(m)))
            .collect()
    }

    async fn run(
        mut self,
        socket: WebSocket,
        mut subscription: Subscription,
        backfill: Vec<Message>,
    ) {
        let _open = self.state.metrics.websocket_opened();
        let (mut sink, stream) = socket.split();
        let closed = self
            .serve(&mut subscription, &mut sink, stream, backfill)
            .await;
        tracing::debug!(user = %self.user.username, ?closed, "WebSocket closed");
    }

    async fn serve(
        &mut self,
        subscription: &mut Subscription,
        sink: &mut SplitSink<WebSocket, Message>,
        mut stream: futures_util::stream::SplitStream<WebSocket>,
        backfill: Vec<Message>,
    ) -> Closed {
        for frame in backfill {
            if let Err(closed) = self.send(sink, subscription, frame).await {
                return closed;
            }
        }
        let ping_every = Duration::from_secs(self.state.config.ws_ping_interval_secs.max(1));
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        let mut last_heard = Instant::now();
        loop {
            // Biased: events waiting for this client go out before its next
            // request is read, so a client that sends a burst is not cut off
            // by the echoes of its own messages.
            let outgoing = tokio::select! {
                biased;
                () = subscription.overflowed.cancelled() => return Closed::TooSlow,
                delivery = subscription.deliveries.recv() => {
                    let Some(delivery) = delivery else { return Closed::TooSlow };
                    if delivery.close_after {
                        let _ = self.send(sink, subscription, Message::Text(delivery.frame)).await;
                        let _ = self.send(sink, subscription, Message::Close(None)).await;
                        return Closed::SessionEnded;
                    }
                    match delivery.room_message {
                        Some((room_id, id)) if self.replayed.get(&room_id).is_some_and(|&last| id <= last) => None,
                        _ => Some(Message::Text(delivery.frame)),
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() >= self.idle_timeout {
                        return Closed::Idle;
                    }
                    Some(Message::Ping(Default::default()))
                }
                incoming = stream.next() => {
                    last_heard = Instant::now();
                    match incoming {
                        Some(Ok(Message::Text(text))) => Some(reply_frame(&self.handle(&text).await)),
                        Some(Ok(Message::Binary(_))) => Some(reply_frame(&Reply::error(
                            ApiError::bad_request("binary frames are not supported; send JSON text"),
                            None,
                        ))),
                        // Pongs only prove liveness; pings are answered by the library.
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Closed::ByClient,
                    }
                }
            };
            if let Some(frame) = outgoing
                && let Err(closed) = self.send(sink, subscription, frame).await
            {
                return closed;
            }
        }
    }

    /// Writes one frame, giving up when the client stops reading.
    async fn send(
        &self,
        sink: &mut SplitSink<WebSocket, Message>,
        subscription: &Subscription,
        frame: Message,
    ) -> Result<(), Closed> {
        tokio::select! {
            () = subscription.overflowed.cancelled() => Err(Closed::TooSlow),
            written = tokio::time::timeout(self.idle_timeout, sink.send(frame)) => match written {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(Closed::WriteFailed),
                Err(_) => Err(Closed::TooSlow),
            },
        }
    }

    /// Runs one client request, answering as the HTTP endpoint would.
    async fn handle(&self, text: &str) -> Reply {
        let value: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(err) => {
                return Reply::error(ApiError::bad_request(format!("invalid JSON: {err}")), None);
            }
        };
        let reference = value.get("ref").cloned();
        if !value.is_object() {
            return Reply::error(
                ApiError::bad_request("a frame must be a JSON object with a `type`"),
                reference,
            );
        }
        let frame: ClientFrame = match serde_json::from_value(value) {
            Ok(frame) => frame,
            Err(err) => return Reply::error(ApiError::bad_request(err.to_string()), reference),
        };
        let state = &self.state;
        let user = &self.user;
        let stored = match frame {
            ClientFrame::Ping => return Reply::Pong { reference },
            // The same limits as the HTTP endpoints, shared with them.
            ClientFrame::SendRoomMessage { room_id, message } => {
                async {
                    state
                        .rate_limits
                        .check_user(UserAction::RoomMessage, user.id)
                        .await?;
                    let sent = chat::send_room_message(state, user, room_id, &message).await?;
                    Ok(sent.id)
                }
                .await
            }
            ClientFrame::SendInboxMessage { recipient, message } => {
                async {
                    state
                        .rate_limits
                        .check_user(UserAction::InboxMessage, user.id)
                        .await?;
                    let sent = chat::send_inbox_message(state, user, &recipient, &message).await?;
                    Ok(sent.id)
                }
                .await
            }
        };
        match stored {
            Ok(id) => Reply::Ack {
                message: "sent",
                id,
                reference,
            },
            Err(err) => Reply::error(err, reference),
        }
    }
}

fn event_frame(event: &chat::event::Event) -> ApiResult<Message> {
    let text = serde_json::to_string(event).map_err(ApiError::internal)?;
    Ok(Message::Text(Utf8Bytes::from(text)))
}

fn reply_frame(reply: &Reply) -> Message {
    let text = serde_json::to_string(reply).unwrap_or_else(|_| {
        r#"{"type":"error","error":"internal server error","status":500}"#.to_owned()
    });
    Message::Text(Utf8Bytes::from(text))
}
