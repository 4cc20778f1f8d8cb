//! Rooms, membership, room messages with retention, and file metadata on PostgreSQL.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx_core::{query::query, query_as::query_as, query_scalar::query_scalar};

use super::{PostgresStore, accounts::lock_users, begin, retrying, unique_violation};
use crate::store::{
    Page, SharedPage, StoreError, StoreResult,
    accounts::UserRef,
    rooms::{
        NewRoom, PublicRoom, Retention, Room, RoomMessage, RoomMessageStore, RoomMessages,
        RoomStore, StoredFile,
    },
};

type RoomRow = (i64, String, bool, Option<String>);

fn room_from_row((id, name, is_private, password_hash): RoomRow) -> Room {
    Room {
        id,
        name,
        is_private,
        password_hash,
    }
}

type MessageRow = (i64, i64, String, String, f64);

fn message_from_row((id, room_id, username, message, created_at): MessageRow) -> RoomMessage {
    RoomMessage {
        id,
        room_id,
        username,
        message,
        created_at,
    }
}

type FileRow = (String, i64, i64, String, String, i64, i64);

fn file_from_row(
    (id, room_id, uploader, filename, content_type, size, created_at): FileRow,
) -> StoredFile {
    StoredFile {
        id,
        room_id,
        uploader,
        filename,
        content_type,
        size: size as u64,
        created_at,
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The smallest gap between two messages of a room (representable at
/// today's Unix times, where an f64 resolves ~0.24 µs).
const MIN_STEP_SECS: f64 = 1e-6;

#[async_trait]
impl RoomStore for PostgresStore {
    async fn create_room(&self, room: NewRoom, max_public_rooms: u32) -> StoreResult<Room> {
        let room = &room;
        retrying(move || async move {
            let mut tx = begin(&self.pool).await?;
            let key = room.name.to_lowercase();
            let taken: bool = query_scalar("SELECT EXISTS(SELECT 1 FROM rooms WHERE name_key = $1)")
                .bind(&key)
                .fetch_one(&mut *tx)
                .await?;
            if taken {
                return Err(StoreError::conflict("room name already taken"));
            }
            if !room.is_private {
                // One public room is created at a time, on every node, so the
                // count below cannot be outdated by a concurrent creation.
                query("SELECT name FROM store_locks WHERE name = 'public_rooms' FOR UPDATE")
                    .execute(&mut *tx)
                    .await?;
                let public: i64 = query_scalar("SELECT COUNT(*) FROM rooms WHERE NOT is_private")
                    .fetch_one(&mut *tx)
                    .await?;
                if public >= i64::from(max_public_rooms) {
                    return Err(StoreError::conflict(format!(
                        "maximum number of public rooms reached ({max_public_rooms}). \
                         Please create a private room instead."
                    )));
                }
            }
            let id: i64 = query_scalar(
                "INSERT INTO rooms (name, name_key, is_private, password_hash, created_by, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(&room.name)
            .bind(&key)
            .bind(room.is_private)
            .bind(&room.password_hash)
            .bind(room.creator)
            .bind(now())
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| match unique_violation(&e) {
                Some(_) => StoreError::conflict("room name already taken"),
                None => e.into(),
            })?;
            query("INSERT INTO room_members (room_id, user_id, joined_at) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(room.creator)
                .bind(now())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Room {
                id,
                name: room.name.clone(),
                is_private: room.is_private,
                password_hash: room.password_hash.clone(),
            })
        })
        .await
    }

    async fn room_by_id(&self, room_id: i64) -> StoreResult<Option<Room>> {
        let row: Option<RoomRow> =
            query_as("SELECT id, name, is_private, password_hash FROM rooms WHERE id = $1")
                .bind(room_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(room_from_row))
    }

    async fn room_by_name(&self, name: &str) -> StoreResult<Option<Room>> {
        let row: Option<RoomRow> =
            query_as("SELECT id, name, is_private, password_hash FROM rooms WHERE name_key = $1")
                .bind(name.to_lowercase())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(room_from_row))
    }

    async fn add_member(&self, room_id: i64, user_id: i64) -> StoreResult<bool> {
        let added = query(
            "INSERT INTO room_members (room_id, user_id, joined_at) VALUES ($1, $2, $3)
             ON CONFLICT (room_id, user_id) DO NOTHING",
        )
        .bind(room_id)
        .bind(user_id)
        .bind(now())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(added > 0)
    }

    async fn remove_member(&self, room_id: i64, user_id: i64) -> StoreResult<bool> {
        let removed = query("DELETE FROM room_members WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(removed > 0)
    }

    async fn is_member(&self, room_id: i64, user_id: i64) -> StoreResult<bool> {
        Ok(query_scalar(
            "SELECT EXISTS(SELECT 1 FROM room_members WHERE room_id = $1 AND user_id = $2)",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn room_with_membership(
        &self,
        room_id: i64,
        user_id: i64,
    ) -> StoreResult<Option<(Room, bool)>> {
        let row: Option<(i64, String, bool, Option<String>, bool)> = query_as(
            "SELECT r.id, r.name, r.is_private, r.password_hash,
                    EXISTS(SELECT 1 FROM room_members m WHERE m.room_id = r.id AND m.user_id = $2)
             FROM rooms r WHERE r.id = $1",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(id, name, is_private, password_hash, member)| {
            (room_from_row((id, name, is_private, password_hash)), member)
        }))
    }

    async fn member_names(&self, room_id: i64) -> StoreResult<Arc<SharedPage<String>>> {
        let names = query_scalar(
            "SELECT u.username FROM room_members m JOIN users u ON u.id = m.user_id
             WHERE m.room_id = $1 ORDER BY m.seq",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(SharedPage::new(Page {
            items: names,
            next: None,
        }))
    }

    async fn public_rooms(&self, viewer: i64) -> StoreResult<Vec<PublicRoom>> {
        let rows: Vec<(i64, String, bool)> = query_as(
            "SELECT r.id, r.name,
                    EXISTS(SELECT 1 FROM room_members m WHERE m.room_id = r.id AND m.user_id = $1)
             FROM rooms r WHERE NOT r.is_private ORDER BY r.id",
        )
        .bind(viewer)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, joined)| PublicRoom { id, name, joined })
            .collect())
    }

    async fn rooms_of(&self, user_id: i64) -> StoreResult<Vec<Room>> {
        let rows: Vec<RoomRow> = query_as(
            "SELECT r.id, r.name, r.is_private, r.password_hash
             FROM room_members m JOIN rooms r ON r.id = m.room_id
             WHERE m.user_id = $1 ORDER BY r.id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(room_from_row).collect())
    }

    async fn save_file(&self, file: StoredFile) -> StoreResult<()> {
        let file = &file;
        retrying(move || async move {
            let mut tx = begin(&self.pool).await?;
            // `files` has no foreign keys. The uploader's row is locked as an
            // account deletion first locks it, so a deletion either waits for
            // this record (and then deletes it) or commits first (and this
            // finds no row); the room's key lock holds off its deletion.
            if lock_users(&mut tx, &[file.uploader]).await? == 0 {
                return Err(StoreError::AccountGone);
            }
            let room: Option<i64> =
                query_scalar("SELECT id FROM rooms WHERE id = $1 FOR KEY SHARE")
                    .bind(file.room_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if room.is_none() {
                return Err(StoreError::not_found("room not found"));
            }
            query(
                "INSERT INTO files (id, room_id, user_id, filename, content_type, size, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&file.id)
            .bind(file.room_id)
            .bind(file.uploader)
            .bind(&file.filename)
            .bind(&file.content_type)
            .bind(file.size as i64)
            .bind(file.created_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn file(&self, file_id: &str) -> StoreResult<Option<StoredFile>> {
        let row: Option<FileRow> = query_as(
            "SELECT id, room_id, user_id, filename, content_type, size, created_at
             FROM files WHERE id = $1",
        )
        .bind(file_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(file_from_row))
    }
}

#[async_trait]
impl RoomMessageStore for PostgresStore {
    async fn add_room_message(
        &self,
        room_id: i64,
        author: UserRef,
        message: String,
        now: f64,
        retention: Retention,
    ) -> StoreResult<RoomMessage> {
        let author = &author;
        let message = &message;
        retrying(move || async move {
            let mut tx = begin(&self.pool).await?;
            // The room's row lock orders its messages across every node; the
            // foreign-key checks of the insert below only need a KEY SHARE lock,
            // which this one does not block.
            query("SELECT id FROM rooms WHERE id = $1 FOR NO KEY UPDATE")
                .bind(room_id)
                .execute(&mut *tx)
                .await?;
            // A statement of its own after the lock, so that its snapshot
            // holds every message committed before the lock was granted.
            // Strictly increasing per room, even if the clock steps back, two
            // nodes' clocks differ, or two messages share a microsecond: `since`
            // is then an exact cursor. Only this room's oldest messages beyond
            // its limit go: the snapshot does not hold the new message, which
            // is the newest, so the others keep `max_messages - 1`. GREATEST
            // skips a NULL: a room's first message keeps `now`.
            let (id, created_at): (i64, f64) = query_as(
                "WITH last AS (
                     SELECT (SELECT created_at FROM room_messages WHERE room_id = $1
                             ORDER BY created_at DESC LIMIT 1) AS at),
                 sent AS (
                     INSERT INTO room_messages (room_id, user_id, message, created_at)
                     SELECT $1, $2, $3, GREATEST($4, last.at + $5) FROM last
                     RETURNING id, created_at),
                 trimmed AS (
                     DELETE FROM room_messages WHERE room_id = $1 AND created_at <= (
                         SELECT created_at FROM room_messages WHERE room_id = $1
                         ORDER BY created_at DESC LIMIT 1 OFFSET $6))
                 SELECT id, created_at FROM sent",
            )
            .bind(room_id)
            .bind(author.id)
            .bind(message)
            .bind(now)
            .bind(MIN_STEP_SECS)
            .bind(i64::from(retention.max_messages) - 1)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(RoomMessage {
                id,
                room_id,
                username: author.username.clone(),
                message: message.clone(),
                created_at,
            })
        })
        .await
    }

    async fn room_messages(
        &self,
        room_id: i64,
        since: Option<f64>,
        now: f64,
        retention: Retention,
    ) -> StoreResult<RoomMessages> {
        let oldest = (now - retention.ttl_secs).max(since.unwrap_or(f64::MIN));
        let rows: Vec<MessageRow> = query_as(
            "SELECT m.id, m.room_id, u.username, m.message, m.created_at
             FROM room_messages m JOIN users u ON u.id = m.user_id
             WHERE m.room_id = $1 AND m.created_at > $2
             ORDER BY m.created_at DESC LIMIT $3",
        )
        .bind(room_id)
        .bind(oldest)
        .bind(i64::from(retention.max_messages))
        .fetch_all(&self.pool)
        .await?;
        let mut messages: Vec<RoomMessage> = rows.into_iter().map(message_from_row).collect();
        messages.reverse();
        Ok(RoomMessages::owned(messages))
    }

    async fn purge_expired_messages(&self, now: f64, retention: Retention) -> StoreResult<u64> {
        Ok(query("DELETE FROM room_messages WHERE created_at <= $1")
            .bind(now - retention.ttl_secs)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// The rows went with the user in `delete_account`'s transaction.
    async fn erase_messages_of(&self, _user_id: i64, _deleted_rooms: &[i64]) -> StoreResult<()> {
        Ok(())
    }
}
