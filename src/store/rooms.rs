//! Rooms, membership, room chat with retention, and uploaded files.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;

use super::{SharedPage, StoreResult, UnixSeconds, accounts::UserRef};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub id: i64,
    pub name: String,
    pub is_private: bool,
    /// Argon2id hash; `Some` exactly for private rooms.
    pub password_hash: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewRoom {
    pub name: String,
    pub is_private: bool,
    pub password_hash: Option<String>,
    pub creator: i64,
}

/// A public room as `GET /api/rooms` lists it for one caller.
#[derive(Debug, Clone)]
pub struct PublicRoom {
    pub id: i64,
    pub name: String,
    pub joined: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoomMessage {
    pub id: i64,
    pub room_id: i64,
    pub username: String,
    pub message: String,
    /// Unix seconds with fractions.
    pub created_at: f64,
}

/// A room's retained messages as one store read them, oldest first. The
/// SQLite store shares one snapshot per room among its readers until a
/// message comes or goes, and keeps the rendering of the page every member
/// polls with it (see `RoomMessages::rendered`).
#[derive(Debug, Default)]
pub struct RoomSnapshot {
    messages: Vec<Arc<RoomMessage>>,
    /// The page of `messages[from..]` as rendered, with its `from`.
    rendered: Mutex<Option<(usize, Bytes)>>,
}

impl RoomSnapshot {
    pub fn new(messages: Vec<Arc<RoomMessage>>) -> Self {
        RoomSnapshot {
            messages,
            rendered: Mutex::default(),
        }
    }

    pub fn messages(&self) -> &[Arc<RoomMessage>] {
        &self.messages
    }

    /// For a change: the rendering goes, since it showed the old messages.
    pub fn messages_mut(&mut self) -> &mut Vec<Arc<RoomMessage>> {
        *self
            .rendered
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = None;
        &mut self.messages
    }
}

/// A copy holds the same messages and no rendering (it is about to change).
impl Clone for RoomSnapshot {
    fn clone(&self) -> Self {
        RoomSnapshot::new(self.messages.clone())
    }
}

/// The messages a reader asked for: the tail of a snapshot, oldest first.
#[derive(Debug)]
pub struct RoomMessages {
    snapshot: Arc<RoomSnapshot>,
    from: usize,
    /// Whether the rendering is kept in the snapshot for the next reader:
    /// only for the page without `since`, which every member polls, so
    /// that other pages do not push it out.
    keep_rendering: bool,
}

impl RoomMessages {
    /// Messages read for this reader alone.
    pub fn owned(messages: Vec<RoomMessage>) -> Self {
        let messages = messages.into_iter().map(Arc::new).collect();
        RoomMessages {
            snapshot: Arc::new(RoomSnapshot::new(messages)),
            from: 0,
            keep_rendering: false,
        }
    }

    /// `snapshot.messages()[from..]`, shared with other readers.
    pub fn shared(snapshot: Arc<RoomSnapshot>, from: usize, keep_rendering: bool) -> Self {
        RoomMessages {
            snapshot,
            from,
            keep_rendering,
        }
    }

    pub fn as_slice(&self) -> &[Arc<RoomMessage>] {
        &self.snapshot.messages[self.from..]
    }

    /// The page as `render` makes it from the messages. A kept rendering
    /// is for the same messages exactly: the snapshot does not change
    /// without dropping it, and it is kept with the `from` it started at.
    pub fn rendered<E>(
        &self,
        render: impl FnOnce(&[Arc<RoomMessage>]) -> Result<Bytes, E>,
    ) -> Result<Bytes, E> {
        if !self.keep_rendering {
            return render(self.as_slice());
        }
        let kept = self.lock_rendered().clone();
        if let Some((from, rendered)) = kept
            && from == self.from
        {
            return Ok(rendered);
        }
        let rendered = render(self.as_slice())?;
        *self.lock_rendered() = Some((self.from, rendered.clone()));
        Ok(rendered)
    }

    fn lock_rendered(&self) -> std::sync::MutexGuard<'_, Option<(usize, Bytes)>> {
        self.snapshot
            .rendered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A room message not yet stored (see `RoomMessageStore::add_room_messages`).
#[derive(Debug, Clone)]
pub struct NewRoomMessage {
    pub author: UserRef,
    pub message: String,
    /// When it was sent (Unix seconds with fractions).
    pub now: f64,
}

/// Per-room retention: a message lives `ttl_secs` and a room keeps its newest `max_messages`.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub ttl_secs: f64,
    pub max_messages: u32,
}

/// Metadata of an uploaded file; the bytes live in the data directory.
#[derive(Debug, Clone)]
pub struct StoredFile {
    /// Random, unguessable id used in the file's URL.
    pub id: String,
    pub room_id: i64,
    pub uploader: i64,
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    pub created_at: UnixSeconds,
}

#[async_trait]
pub trait RoomStore: Send + Sync {
    /// Creates the room with the creator as a member. Conflict "room name
    /// already taken" (ignoring case) or the public-room limit message when
    /// `max_public_rooms` public rooms exist.
    async fn create_room(&self, room: NewRoom, max_public_rooms: u32) -> StoreResult<Room>;
    async fn room_by_id(&self, room_id: i64) -> StoreResult<Option<Room>>;
    /// Ignoring case.
    async fn room_by_name(&self, name: &str) -> StoreResult<Option<Room>>;
    /// Idempotent; returns whether the user was not a member before.
    async fn add_member(&self, room_id: i64, user_id: i64) -> StoreResult<bool>;
    /// Returns whether the user was a member.
    async fn remove_member(&self, room_id: i64, user_id: i64) -> StoreResult<bool>;
    async fn is_member(&self, room_id: i64, user_id: i64) -> StoreResult<bool>;
    /// The room and whether the user belongs to it, in one read where the
    /// backend can (every room message read and send asks both).
    async fn room_with_membership(
        &self,
        room_id: i64,
        user_id: i64,
    ) -> StoreResult<Option<(Room, bool)>> {
        let Some(room) = self.room_by_id(room_id).await? else {
            return Ok(None);
        };
        let member = self.is_member(room.id, user_id).await?;
        Ok(Some((room, member)))
    }
    /// Usernames of the room's members, in joining order, as one page with
    /// no next (the SQLite store hands every reader the same page until the
    /// membership changes).
    async fn member_names(&self, room_id: i64) -> StoreResult<Arc<SharedPage<String>>>;
    async fn public_rooms(&self, viewer: i64) -> StoreResult<Vec<PublicRoom>>;
    async fn rooms_of(&self, user_id: i64) -> StoreResult<Vec<Room>>;

    /// Records an uploaded file. `AccountGone` when the uploader was
    /// deleted meanwhile, not found when the room was: the record must not
    /// outlive the deletion that would have removed it.
    async fn save_file(&self, file: StoredFile) -> StoreResult<()>;
    async fn file(&self, file_id: &str) -> StoreResult<Option<StoredFile>>;
}

/// Room chat under retention. Its own trait so that it can live apart
/// from the database (in Redis, shared by every node).
#[async_trait]
pub trait RoomMessageStore: Send + Sync {
    /// Stores a message and applies the room's count limit in the same
    /// transaction (other rooms are untouched). Returns the stored message.
    /// `created_at` is `now`, raised when needed so that it strictly
    /// increases within the room.
    async fn add_room_message(
        &self,
        room_id: i64,
        author: UserRef,
        message: String,
        now: f64,
        retention: Retention,
    ) -> StoreResult<RoomMessage>;
    /// Stores messages of one room in the given order, each as
    /// `add_room_message` would and with its own outcome. A store that can
    /// commits them together (this default stores them one by one).
    async fn add_room_messages(
        &self,
        room_id: i64,
        messages: Vec<NewRoomMessage>,
        retention: Retention,
    ) -> Vec<StoreResult<RoomMessage>> {
        let mut stored = Vec::with_capacity(messages.len());
        for new in messages {
            stored.push(
                self.add_room_message(room_id, new.author, new.message, new.now, retention)
                    .await,
            );
        }
        stored
    }
    /// The room's retained messages newer than `since` (and not expired at
    /// `now`), oldest first.
    async fn room_messages(
        &self,
        room_id: i64,
        since: Option<f64>,
        now: f64,
        retention: Retention,
    ) -> StoreResult<RoomMessages>;
    /// Deletes messages expired at `now` in every room; returns how many.
    async fn purge_expired_messages(&self, now: f64, retention: Retention) -> StoreResult<u64>;
    /// Removes every retained message the user sent, in any room, and
    /// every message of `deleted_rooms` (account deletion). A store in the
    /// database has done so already in `delete_account`'s transaction.
    async fn erase_messages_of(&self, user_id: i64, deleted_rooms: &[i64]) -> StoreResult<()>;
}
