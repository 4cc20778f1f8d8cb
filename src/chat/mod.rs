//! Chat: room messages, membership and direct messages, stored and then
//! published to real-time subscribers. The HTTP handlers and the WebSocket
//! both go through here, so a message is the same message whichever way it
//! was sent.

pub mod event;
pub mod fanout;
pub mod hub;
pub mod redis_hub;
mod sends;

use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard, oneshot};

use crate::{
    app::AppState,
    auth::AuthUser,
    domain::{
        time::{now_f64, now_secs},
        validate::{char_len, max_chars, required},
    },
    error::{ApiError, ApiResult},
    store::{
        StoreError,
        accounts::UserRef,
        inbox::InboxMessage,
        rooms::{NewRoomMessage, Room, RoomMessage},
    },
};
use event::{Event, Publication, Route, Sessions};
use hub::Hub;
use sends::{RoomSends, Waiting};

pub const MAX_ROOM_MESSAGE_CHARS: usize = 2_000;
pub const MAX_INBOX_MESSAGE_CHARS: usize = 5_000;

/// The hub plus the locks that keep each room's store order and publish
/// order the same.
#[derive(Clone)]
pub struct Chat {
    pub hub: Arc<dyn Hub>,
    rooms: Arc<Stripes>,
    inboxes: Arc<Stripes>,
    /// Room messages waiting for their room's next write.
    room_sends: Arc<RoomSends>,
}

impl Chat {
    pub fn new(hub: Arc<dyn Hub>) -> Self {
        Chat {
            hub,
            rooms: Arc::new(Stripes::new(ROOM_STRIPES)),
            inboxes: Arc::new(Stripes::new(INBOX_STRIPES)),
            room_sends: Arc::default(),
        }
    }

    /// Publishing happens after the write is committed, so a hub failure
    /// loses no data: it is logged, and clients catch up with `since`.
    async fn publish(&self, route: Route, event: Event) {
        if let Err(err) = self.hub.publish(Publication { route, event }).await {
            tracing::warn!(%err, "publishing a real-time event failed");
        }
    }
}

const ROOM_STRIPES: usize = 64;
/// A direct message holds two stripes for a whole commit (an fsync): with
/// 64, 256 concurrent senders formed chains of waits (p99 1.1 s in the load
/// benchmark); with 4,096 two random pairs rarely share one.
const INBOX_STRIPES: usize = 4096;

/// A fixed set of async locks, picked by key: bounded memory whatever the
/// number of rooms, and two keys rarely wait for each other.
struct Stripes(Vec<Mutex<()>>);

impl Stripes {
    fn new(n: usize) -> Self {
        Stripes((0..n).map(|_| Mutex::new(())).collect())
    }

    fn index(&self, key: i64) -> usize {
        key.rem_euclid(self.0.len() as i64) as usize
    }

    async fn lock(&self, key: i64) -> MutexGuard<'_, ()> {
        self.0[self.index(key)].lock().await
    }

    /// Locks the stripes of two keys, always in index order so that two
    /// callers locking the same pair cannot deadlock.
    async fn lock_pair(&self, a: i64, b: i64) -> (MutexGuard<'_, ()>, Option<MutexGuard<'_, ()>>) {
        let (first, second) = {
            let (x, y) = (self.index(a), self.index(b));
            (x.min(y), x.max(y))
        };
        let first_guard = self.0[first].lock().await;
        let second_guard = if second == first {
            None
        } else {
            Some(self.0[second].lock().await)
        };
        (first_guard, second_guard)
    }
}

/// Loads a room the caller must belong to: 404 unknown, 403 not a member.
pub async fn member_room(state: &AppState, room_id: i64, user: &AuthUser) -> ApiResult<Room> {
    let (room, member) = state
        .store
        .room_with_membership(room_id, user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("room not found"))?;
    if !member {
        return Err(ApiError::forbidden("you are not a member of this room"));
    }
    Ok(room)
}

/// `send_room_message`: validates, stores under the room's retention, and
/// publishes to the room's members.
pub async fn send_room_message(
    state: &AppState,
    user: &AuthUser,
    room_id: Option<i64>,
    message: &Option<String>,
) -> ApiResult<RoomMessage> {
    let room_id = room_id.ok_or_else(|| ApiError::bad_request("room_id is required"))?;
    let message = required(message, "message")?.trim();
    if char_len(message) > MAX_ROOM_MESSAGE_CHARS {
        return Err(ApiError::bad_request(format!(
            "message must be at most {MAX_ROOM_MESSAGE_CHARS} characters"
        )));
    }
    let room = member_room(state, room_id, user).await?;
    post_to_room(state, room.id, user, message.to_owned()).await
}

/// Stores a message in a room the user belongs to and publishes it. The
/// message joins the room's next write (see `sends`).
pub async fn post_to_room(
    state: &AppState,
    room_id: i64,
    user: &AuthUser,
    message: String,
) -> ApiResult<RoomMessage> {
    let new = NewRoomMessage {
        author: UserRef {
            id: user.id,
            username: user.username.clone(),
        },
        message,
        now: now_f64(),
    };
    let (answer, answered) = oneshot::channel();
    if state
        .chat
        .room_sends
        .queue(room_id, Waiting { new, answer })
    {
        tokio::spawn(drain_room(state.clone(), room_id));
    }
    let stored = answered
        .await
        .map_err(|_| StoreError::Other("the room's sending task stopped".into()))??;
    Ok(stored)
}

/// Stores the room's waiting messages, a group per write, and publishes
/// each stored one in order, under the room's lock; ends when none wait.
async fn drain_room(state: AppState, room_id: i64) {
    /// Frees the room if the drain ends without emptying it (a panic).
    struct Draining<'a> {
        sends: &'a RoomSends,
        room_id: i64,
        emptied: bool,
    }
    impl Drop for Draining<'_> {
        fn drop(&mut self) {
            if !self.emptied {
                self.sends.abandon(self.room_id);
            }
        }
    }
    let mut draining = Draining {
        sends: &state.chat.room_sends,
        room_id,
        emptied: false,
    };
    while let Some(group) = state.chat.room_sends.next_group(room_id) {
        let _order = state.chat.rooms.lock(room_id).await;
        let (messages, answers): (Vec<_>, Vec<_>) =
            group.into_iter().map(|w| (w.new, w.answer)).unzip();
        let stored = state
            .messages
            .add_room_messages(room_id, messages, state.retention())
            .await;
        for (outcome, answer) in stored.into_iter().zip(answers) {
            if let Ok(message) = &outcome {
                state
                    .chat
                    .publish(Route::Room(room_id), message.clone().into())
                    .await;
            }
            let _ = answer.send(outcome);
        }
    }
    draining.emptied = true;
}

/// Makes the user a member; announces it when they were not one already.
pub async fn join_room(state: &AppState, room: &Room, user: &AuthUser) -> ApiResult<()> {
    let _order = state.chat.rooms.lock(room.id).await;
    if state.store.add_member(room.id, user.id).await? {
        publish_membership(state, room.id, &room.name, user, true).await;
    }
    Ok(())
}

/// Ends the user's membership; false when they were not a member.
pub async fn leave_room(state: &AppState, room: &Room, user: &AuthUser) -> ApiResult<bool> {
    let _order = state.chat.rooms.lock(room.id).await;
    let left = state.store.remove_member(room.id, user.id).await?;
    if left {
        publish_membership(state, room.id, &room.name, user, false).await;
    }
    Ok(left)
}

/// Announces a new room's creator as its first member, so their open
/// streams receive the room at once.
pub async fn announce_creator(state: &AppState, room: &Room, user: &AuthUser) {
    let _order = state.chat.rooms.lock(room.id).await;
    publish_membership(state, room.id, &room.name, user, true).await;
}

/// Tells the other members of each room (id, name) that the user, whose
/// account was just deleted, left it.
pub async fn announce_deleted_member(state: &AppState, rooms: &[(i64, String)], user: &AuthUser) {
    for (room_id, room_name) in rooms {
        let _order = state.chat.rooms.lock(*room_id).await;
        publish_membership(state, *room_id, room_name, user, false).await;
    }
}

/// `member_joined` / `member_left`, routed so that the user's streams
/// enter or leave the room's audience in order with its messages.
async fn publish_membership(
    state: &AppState,
    room_id: i64,
    room_name: &str,
    user: &AuthUser,
    joined: bool,
) {
    let (room_name, username) = (room_name.to_owned(), user.username.clone());
    let (route, event) = if joined {
        let route = Route::Join {
            room_id,
            user_id: user.id,
        };
        let event = Event::MemberJoined {
            room_id,
            room_name,
            username,
        };
        (route, event)
    } else {
        let route = Route::Leave {
            room_id,
            user_id: user.id,
        };
        let event = Event::MemberLeft {
            room_id,
            room_name,
            username,
        };
        (route, event)
    };
    state.chat.publish(route, event).await;
}

/// `send_inbox_message`: validates, stores, and publishes to both sides.
pub async fn send_inbox_message(
    state: &AppState,
    user: &AuthUser,
    recipient: &Option<String>,
    message: &Option<String>,
) -> ApiResult<InboxMessage> {
    let recipient = required(recipient, "recipient")?.trim();
    let message = required(message, "message")?;
    max_chars(message, MAX_INBOX_MESSAGE_CHARS, "message")?;
    let recipient_id = state
        .store
        .find_user(recipient)
        .await?
        .ok_or_else(|| ApiError::not_found("recipient not found"))?
        .id;
    // Both sides' streams see their inbox events in the order stored.
    let _order = state.chat.inboxes.lock_pair(user.id, recipient_id).await;
    let stored = state
        .store
        .send_inbox_message(user.id, recipient, message.to_owned(), now_secs())
        .await?;
    state
        .chat
        .publish(
            Route::Users(vec![recipient_id, user.id]),
            stored.clone().into(),
        )
        .await;
    Ok(stored)
}

/// Closes the open streams of sessions that just ended, so a logged-out
/// or replaced session stops receiving at once.
pub async fn end_sessions(state: &AppState, user_id: i64, sessions: Sessions, reason: &str) {
    let event = Event::SessionEnded {
        reason: reason.to_owned(),
    };
    state
        .chat
        .publish(Route::Sessions { user_id, sessions }, event)
        .await;
}
