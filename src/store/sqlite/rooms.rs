//! Rooms, membership, room messages with retention, and file metadata on SQLite.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};

use super::{
    SqliteStore,
    exact_cache::{BeforeRead, ExactCache, Weigh},
    id_floors::{Table, next_id},
    is_unique_violation, room_cache, writer,
};
use crate::store::{
    Page, SharedPage, StoreError, StoreResult, UnixSeconds,
    accounts::UserRef,
    rooms::{
        NewRoom, NewRoomMessage, PublicRoom, Retention, Room, RoomMessage, RoomMessageStore,
        RoomMessages, RoomStore, StoredFile,
    },
};

/// A room's member names as cached (`member_lists` in the store): every
/// reader gets the same page, rendered once. A public room's list is every
/// member's name (about 1,750 in the bench's rooms, 22 KB of JSON), and
/// read from the database it was one user lookup a member.
#[derive(Clone)]
pub(super) struct MemberList {
    names: Arc<SharedPage<String>>,
    /// About the bytes of the rendering the page keeps.
    weight: u64,
}

impl Weigh for MemberList {
    fn weigh(&self) -> u64 {
        self.weight
    }
}

/// The rooms one user is in, by room id (`room_lists` in the store): what
/// `GET /api/user_rooms` lists, and what marks the rooms `GET /api/rooms`
/// lists as joined. Dropped on the user's join, leave and room creation,
/// and for all on any account deletion (rooms go with their creators).
pub(super) type RoomList = Arc<[Room]>;

impl Weigh for RoomList {
    fn weigh(&self) -> u64 {
        let text: usize = self
            .iter()
            .map(|room| room.name.len() + room.password_hash.as_ref().map_or(0, String::len))
            .sum();
        (text + self.len() * 64 + 32) as u64
    }
}

/// The public rooms (id and name, by id), kept under `PUBLIC_ROOMS` in
/// `public_rooms` in the store: dropped on every room's creation and for all
/// on any account deletion.
pub(super) type PublicRoomList = Arc<[(i64, String)]>;

impl Weigh for PublicRoomList {
    fn weigh(&self) -> u64 {
        let names: usize = self.iter().map(|(_, name)| name.len()).sum();
        (names + self.len() * 40 + 32) as u64
    }
}

/// The one key of the public room list's cache.
const PUBLIC_ROOMS: i64 = 0;

impl SqliteStore {
    /// The rooms `user_id` is in, by id: from memory, or read and kept
    /// unless their rooms changed meanwhile.
    async fn room_list(&self, user_id: i64) -> StoreResult<RoomList> {
        if let Some(rooms) = self.room_lists.get(user_id) {
            return Ok(rooms);
        }
        let lists = self.room_lists.clone();
        let before = lists.before_read();
        self.read(move |conn| {
            let rooms: RoomList = conn
                .prepare_cached(
                    "SELECT r.id, r.name, r.is_private, r.password_hash
                     FROM room_members m JOIN rooms r ON r.id = m.room_id
                     WHERE m.user_id = ?1 ORDER BY r.id",
                )?
                .query_map([user_id], room_from_row)?
                .collect::<Result<Vec<_>, _>>()?
                .into();
            lists.fill([(user_id, rooms.clone())], before);
            Ok(rooms)
        })
        .await
    }
}

/// Makes `names`, read in a transaction that began after `before`, the
/// room's page, and keeps it unless the membership changed meanwhile.
/// Rooms are deleted with their creator's account and a new room may get
/// a deleted one's id, so creating a room drops its id's list too.
fn keep_member_list(
    lists: &ExactCache<MemberList>,
    room_id: i64,
    names: Vec<String>,
    before: BeforeRead,
) -> Arc<SharedPage<String>> {
    // Each name is rendered with two quotes and a comma.
    let weight = names.iter().map(|n| n.len() as u64 + 3).sum::<u64>() + 64;
    let names = SharedPage::new(Page {
        items: names,
        next: None,
    });
    let list = MemberList {
        names: names.clone(),
        weight,
    };
    lists.fill([(room_id, list)], before);
    names
}

fn room_from_row(r: &Row) -> rusqlite::Result<Room> {
    Ok(Room {
        id: r.get(0)?,
        name: r.get(1)?,
        is_private: r.get(2)?,
        password_hash: r.get(3)?,
    })
}

fn message_from_row(r: &Row) -> rusqlite::Result<RoomMessage> {
    Ok(RoomMessage {
        id: r.get(0)?,
        room_id: r.get(1)?,
        username: r.get(2)?,
        message: r.get(3)?,
        created_at: r.get(4)?,
    })
}

fn file_from_row(r: &Row) -> rusqlite::Result<StoredFile> {
    Ok(StoredFile {
        id: r.get(0)?,
        room_id: r.get(1)?,
        uploader: r.get(2)?,
        filename: r.get(3)?,
        content_type: r.get(4)?,
        size: r.get::<_, i64>(5)? as u64,
        created_at: r.get(6)?,
    })
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The smallest gap between two messages of a room (representable at
/// today's Unix times, where an f64 resolves ~0.24 µs).
const MIN_STEP_SECS: f64 = 1e-6;

// The row writers below are shared by the store methods and the bulk
// importer (bulk.rs), so both follow the same rules.

/// Inserts a room whose name was checked free, with its creator as first member.
pub(super) fn insert_room(
    conn: &rusqlite::Connection,
    room: &NewRoom,
    created_at: UnixSeconds,
    id_floor: i64,
) -> StoreResult<i64> {
    conn.prepare_cached(concat!(
        "INSERT INTO rooms (id, name, name_key, is_private, password_hash, created_by, created_at)
         VALUES (",
        next_id!("rooms", 7),
        ", ?1, ?2, ?3, ?4, ?5, ?6)"
    ))?
    .execute(params![
        room.name,
        room.name.to_lowercase(),
        room.is_private,
        room.password_hash,
        room.creator,
        created_at,
        id_floor
    ])
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::conflict("room name already taken")
        } else {
            e.into()
        }
    })?;
    let id = conn.last_insert_rowid();
    conn.prepare_cached(
        "INSERT INTO room_members (room_id, user_id, joined_at, seq) VALUES (?1, ?2, ?3, 1)",
    )?
    .execute(params![id, room.creator, created_at])?;
    Ok(id)
}

/// Adds a member at the end of the joining order; false when already a member.
pub(super) fn insert_member(
    conn: &rusqlite::Connection,
    room_id: i64,
    user_id: i64,
    joined_at: UnixSeconds,
) -> StoreResult<bool> {
    let added = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO room_members (room_id, user_id, joined_at, seq)
             VALUES (?1, ?2, ?3,
                     (SELECT COALESCE(MAX(seq), 0) + 1 FROM room_members WHERE room_id = ?1))",
        )?
        .execute(params![room_id, user_id, joined_at])?;
    Ok(added > 0)
}

/// Stores a room message, drops the room's messages beyond its limit, and
/// returns the id and the time actually stored.
pub(super) fn insert_room_message(
    conn: &rusqlite::Connection,
    room_id: i64,
    author: i64,
    message: &str,
    now: f64,
    retention: Retention,
) -> StoreResult<(i64, f64)> {
    // Strictly increasing per room, even if the clock steps back or
    // two messages share a microsecond: `since` is then an exact cursor.
    let last: Option<f64> = conn
        .prepare_cached(
            "SELECT created_at FROM room_messages WHERE room_id = ?1 ORDER BY id DESC LIMIT 1",
        )?
        .query_row([room_id], |r| r.get(0))
        .optional()?;
    let now = last.map_or(now, |last| now.max(last + MIN_STEP_SECS));
    conn.prepare_cached(
        "INSERT INTO room_messages (room_id, user_id, message, created_at)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![room_id, author, message, now])?;
    let id = conn.last_insert_rowid();
    // Only this room's oldest messages beyond its limit go.
    conn.prepare_cached(
        "DELETE FROM room_messages WHERE room_id = ?1 AND id <= (
             SELECT id FROM room_messages WHERE room_id = ?1
             ORDER BY id DESC LIMIT 1 OFFSET ?2 + 0)",
    )?
    .execute(params![room_id, retention.max_messages])?;
    Ok((id, now))
}

#[async_trait]
impl RoomStore for SqliteStore {
    async fn create_room(&self, room: NewRoom, max_public_rooms: u32) -> StoreResult<Room> {
        let id_floors = self.id_floors.clone();
        let creator = room.creator;
        let created = self
            .write(move |tx| {
                let key = room.name.to_lowercase();
                let taken: bool = tx
                    .prepare_cached("SELECT EXISTS(SELECT 1 FROM rooms WHERE name_key = ?1)")?
                    .query_row([&key], |r| r.get(0))?;
                if taken {
                    return Err(StoreError::conflict("room name already taken"));
                }
                if !room.is_private {
                    let public: i64 =
                        tx.query_row("SELECT COUNT(*) FROM rooms WHERE is_private = 0", [], |r| {
                            r.get(0)
                        })?;
                    if public >= i64::from(max_public_rooms) {
                        return Err(StoreError::conflict(format!(
                            "maximum number of public rooms reached ({max_public_rooms}). \
                         Please create a private room instead."
                        )));
                    }
                }
                let id = insert_room(tx, &room, now(), id_floors.get(Table::Rooms))?;
                Ok(Room {
                    id,
                    name: room.name,
                    is_private: room.is_private,
                    password_hash: room.password_hash,
                })
            })
            .await;
        // A new room's id may be a deleted room's (see `keep_member_list`).
        match &created {
            Ok(room) => self.member_lists.changed(room.id),
            Err(_) => self.member_lists.all_changed(),
        }
        // Whatever the outcome: the commit may have happened even if its
        // fsync failed. The creator is its first member.
        self.room_lists.changed(creator);
        self.public_rooms.changed(PUBLIC_ROOMS);
        created
    }

    async fn room_by_id(&self, room_id: i64) -> StoreResult<Option<Room>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT id, name, is_private, password_hash FROM rooms WHERE id = ?1",
                )?
                .query_row([room_id], room_from_row)
                .optional()?)
        })
        .await
    }

    async fn room_by_name(&self, name: &str) -> StoreResult<Option<Room>> {
        let key = name.to_lowercase();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT id, name, is_private, password_hash FROM rooms WHERE name_key = ?1",
                )?
                .query_row([key], room_from_row)
                .optional()?)
        })
        .await
    }

    async fn add_member(&self, room_id: i64, user_id: i64) -> StoreResult<bool> {
        let added = self
            .write(move |tx| insert_member(tx, room_id, user_id, now()))
            .await;
        // Dropped whatever the outcome: the commit may have happened even
        // if its fsync failed.
        self.member_lists.changed(room_id);
        self.room_lists.changed(user_id);
        added
    }

    async fn remove_member(&self, room_id: i64, user_id: i64) -> StoreResult<bool> {
        let removed = self
            .write(move |tx| {
                Ok(tx.execute(
                    "DELETE FROM room_members WHERE room_id = ?1 AND user_id = ?2",
                    params![room_id, user_id],
                )? > 0)
            })
            .await;
        self.member_lists.changed(room_id);
        self.room_lists.changed(user_id);
        removed
    }

    async fn is_member(&self, room_id: i64, user_id: i64) -> StoreResult<bool> {
        // The user's rooms, kept exact in memory (see `room_list`).
        let rooms = self.room_list(user_id).await?;
        Ok(rooms.binary_search_by_key(&room_id, |r| r.id).is_ok())
    }

    async fn room_with_membership(
        &self,
        room_id: i64,
        user_id: i64,
    ) -> StoreResult<Option<(Room, bool)>> {
        // A member finds the room in their list, kept exact in memory (see
        // `room_list`); only a request from outside reads the room itself,
        // to tell a room it may not see (403) from none (404).
        let rooms = self.room_list(user_id).await?;
        if let Ok(at) = rooms.binary_search_by_key(&room_id, |r| r.id) {
            return Ok(Some((rooms[at].clone(), true)));
        }
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT id, name, is_private, password_hash FROM rooms WHERE id = ?1",
                )?
                .query_row([room_id], room_from_row)
                .optional()?
                .map(|room| (room, false)))
        })
        .await
    }

    async fn member_names(&self, room_id: i64) -> StoreResult<Arc<SharedPage<String>>> {
        if let Some(cached) = self.member_lists.get(room_id) {
            return Ok(cached.names);
        }
        let lists = self.member_lists.clone();
        let before = lists.before_read();
        self.read(move |conn| {
            let names = conn
                .prepare_cached(
                    "SELECT u.username FROM room_members m JOIN users u ON u.id = m.user_id
                     WHERE m.room_id = ?1 ORDER BY m.seq",
                )?
                .query_map([room_id], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(keep_member_list(&lists, room_id, names, before))
        })
        .await
    }

    async fn public_rooms(&self, viewer: i64) -> StoreResult<Vec<PublicRoom>> {
        let mine = self.room_list(viewer).await?;
        let public = match self.public_rooms.get(PUBLIC_ROOMS) {
            Some(public) => public,
            None => {
                let cache = self.public_rooms.clone();
                let before = cache.before_read();
                self.read(move |conn| {
                    let public: PublicRoomList = conn
                        .prepare_cached(
                            "SELECT id, name FROM rooms WHERE is_private = 0 ORDER BY id",
                        )?
                        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<Vec<_>, _>>()?
                        .into();
                    cache.fill([(PUBLIC_ROOMS, public.clone())], before);
                    Ok(public)
                })
                .await?
            }
        };
        Ok(public
            .iter()
            .map(|(id, name)| PublicRoom {
                id: *id,
                name: name.clone(),
                joined: mine.iter().any(|room| room.id == *id),
            })
            .collect())
    }

    async fn rooms_of(&self, user_id: i64) -> StoreResult<Vec<Room>> {
        Ok(self.room_list(user_id).await?.to_vec())
    }

    async fn save_file(&self, file: StoredFile) -> StoreResult<()> {
        self.write(move |tx| {
            // `files` has no foreign keys: checked here, in the writer, so
            // that no deletion commits between the check and the insert.
            let (uploader, room): (bool, bool) = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM users WHERE id = ?1),
                        EXISTS(SELECT 1 FROM rooms WHERE id = ?2)",
                params![file.uploader, file.room_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if !uploader {
                return Err(StoreError::AccountGone);
            }
            if !room {
                return Err(StoreError::not_found("room not found"));
            }
            tx.execute(
                "INSERT INTO files (id, room_id, user_id, filename, content_type, size, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    file.id,
                    file.room_id,
                    file.uploader,
                    file.filename,
                    file.content_type,
                    file.size as i64,
                    file.created_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn file(&self, file_id: &str) -> StoreResult<Option<StoredFile>> {
        let file_id = file_id.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT id, room_id, user_id, filename, content_type, size, created_at
                     FROM files WHERE id = ?1",
                )?
                .query_row([file_id], file_from_row)
                .optional()?)
        })
        .await
    }
}

#[async_trait]
impl RoomMessageStore for SqliteStore {
    async fn add_room_message(
        &self,
        room_id: i64,
        author: UserRef,
        message: String,
        now: f64,
        retention: Retention,
    ) -> StoreResult<RoomMessage> {
        let new = NewRoomMessage {
            author,
            message,
            now,
        };
        self.add_room_messages(room_id, vec![new], retention)
            .await
            .pop()
            .unwrap_or_else(|| Err(StoreError::Other("no outcome for a room message".into())))
    }

    /// One write for the lot: a busy room's sends share a commit.
    async fn add_room_messages(
        &self,
        room_id: i64,
        messages: Vec<NewRoomMessage>,
        retention: Retention,
    ) -> Vec<StoreResult<RoomMessage>> {
        let count = messages.len();
        let written = self
            .write(move |tx| {
                let mut stored = Vec::with_capacity(messages.len());
                for new in messages {
                    // Its own savepoint: one failed message leaves the others.
                    let (outcome, sound) = writer::in_savepoint(tx, |tx| {
                        let (id, created_at) = insert_room_message(
                            tx,
                            room_id,
                            new.author.id,
                            &new.message,
                            new.now,
                            retention,
                        )?;
                        Ok(RoomMessage {
                            id,
                            room_id,
                            username: new.author.username,
                            message: new.message,
                            created_at,
                        })
                    });
                    if !sound {
                        return Err(StoreError::Other(
                            "a failed room message could not be rolled back".into(),
                        ));
                    }
                    stored.push(outcome);
                }
                Ok(stored)
            })
            .await;
        match written {
            Ok(stored) => {
                for message in stored.iter().flatten() {
                    self.room_messages
                        .added(message, retention.max_messages as usize);
                }
                stored
            }
            Err(err) => (0..count)
                .map(|_| Err(StoreError::Other(err.to_string())))
                .collect(),
        }
    }

    async fn room_messages(
        &self,
        room_id: i64,
        since: Option<f64>,
        now: f64,
        retention: Retention,
    ) -> StoreResult<RoomMessages> {
        let oldest = (now - retention.ttl_secs).max(since.unwrap_or(f64::MIN));
        let limit = retention.max_messages as usize;
        let miss = match self.room_messages.get(room_id) {
            Ok(cached) => return Ok(room_cache::select(cached, oldest, limit, since.is_none())),
            Err(miss) => miss,
        };
        // Everything the room holds, expired or not, is what gets cached.
        let mut stored = self
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT m.id, m.room_id, u.username, m.message, m.created_at
                         FROM room_messages m JOIN users u ON u.id = m.user_id
                         WHERE m.room_id = ?1 ORDER BY m.id DESC LIMIT ?2 + 0",
                    )?
                    .query_map(params![room_id, retention.max_messages], message_from_row)?
                    .collect::<Result<Vec<_>, _>>()?)
            })
            .await?;
        stored.reverse();
        let page = stored
            .iter()
            .skip_while(|m| m.created_at <= oldest)
            .cloned()
            .collect();
        self.room_messages.fill(room_id, stored, miss);
        Ok(RoomMessages::owned(page))
    }

    async fn purge_expired_messages(&self, now: f64, retention: Retention) -> StoreResult<u64> {
        let cutoff = now - retention.ttl_secs;
        let purged = self
            .write(move |tx| {
                Ok(
                    tx.execute("DELETE FROM room_messages WHERE created_at <= ?1", [cutoff])?
                        as u64,
                )
            })
            .await?;
        self.room_messages.purged(cutoff);
        Ok(purged)
    }

    /// The rows went with the user in `delete_account`'s transaction.
    async fn erase_messages_of(&self, _user_id: i64, _deleted_rooms: &[i64]) -> StoreResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{
        AccountStore,
        rooms::{NewRoom, StoredFile},
        sqlite::user_for_tests,
    };

    fn file(id: &str, room_id: i64, uploader: i64) -> StoredFile {
        StoredFile {
            id: id.into(),
            room_id,
            uploader,
            filename: "a.txt".into(),
            content_type: "text/plain".into(),
            size: 1,
            created_at: 1,
        }
    }

    /// An upload recorded after its uploader or its room was deleted would
    /// outlive the deletion that removes such records: refused instead.
    #[tokio::test]
    async fn a_file_is_not_recorded_for_a_deleted_uploader_or_room() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("mirage.db")).unwrap();
        let ann = store.create_user(user_for_tests("ann")).await.unwrap();
        let bob = store.create_user(user_for_tests("bob")).await.unwrap();
        let room = |creator| NewRoom {
            name: format!("room{creator}"),
            is_private: false,
            password_hash: None,
            creator,
        };
        let anns = store.create_room(room(ann.id), 10).await.unwrap();
        let bobs = store.create_room(room(bob.id), 10).await.unwrap();
        store
            .save_file(file("kept", anns.id, ann.id))
            .await
            .unwrap();

        store.delete_account(bob.id).await.unwrap();
        let gone_uploader = store.save_file(file("f1", anns.id, bob.id)).await;
        assert!(matches!(gone_uploader, Err(StoreError::AccountGone)));
        let gone_room = store.save_file(file("f2", bobs.id, ann.id)).await;
        assert!(matches!(gone_room, Err(StoreError::NotFound(_))));
        for id in ["f1", "f2"] {
            assert!(store.file(id).await.unwrap().is_none());
        }
        assert!(store.file("kept").await.unwrap().is_some());
    }
}
