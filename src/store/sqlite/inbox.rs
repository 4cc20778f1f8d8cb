//! Direct messages on SQLite.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, accounts::user_by_name, into_page};
use crate::store::{
    Page, PageRequest, StoreError, StoreResult, UnixSeconds,
    inbox::{InboxMessage, InboxStore},
};

/// Each side is read through its own index; UNION also folds a message to
/// oneself into one row. Rows are joined only for the page's ids.
/// Both halves are read from their covering indexes (migrations 0004 and
/// 0005); `INDEXED BY` so that the plan never falls back to reading rows
/// from the table, whatever the planner's statistics say.
const INBOX_PAGE: &str = "
    SELECT m.id, s.username, r.username, m.message, m.created_at, s.avatar_url
    FROM (SELECT * FROM (SELECT id, sender_id, recipient_id, message, created_at
                         FROM inbox_messages INDEXED BY inbox_received
                         WHERE recipient_id = ?1 AND recipient_deleted = 0 AND id < ?2
                         ORDER BY id DESC LIMIT ?3 + 0)
          UNION
          SELECT * FROM (SELECT id, sender_id, recipient_id, message, created_at
                         FROM inbox_messages INDEXED BY inbox_sent
                         WHERE sender_id = ?1 AND sender_deleted = 0 AND id < ?2
                         ORDER BY id DESC LIMIT ?3 + 0)
          ORDER BY id DESC LIMIT ?3 + 0) m
    JOIN users s ON s.id = m.sender_id
    JOIN users r ON r.id = m.recipient_id
    ORDER BY m.id DESC";

/// Stores a direct message; shared by the store method and the bulk importer (bulk.rs).
pub(super) fn insert_inbox_message(
    conn: &rusqlite::Connection,
    sender: i64,
    recipient: i64,
    message: &str,
    now: UnixSeconds,
) -> StoreResult<i64> {
    conn.prepare_cached(
        "INSERT INTO inbox_messages (sender_id, recipient_id, message, created_at)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![sender, recipient, message, now])?;
    Ok(conn.last_insert_rowid())
}

#[async_trait]
impl InboxStore for SqliteStore {
    async fn send_inbox_message(
        &self,
        sender: i64,
        recipient: &str,
        message: String,
        now: UnixSeconds,
    ) -> StoreResult<InboxMessage> {
        let recipient = recipient.to_owned();
        self.write(move |tx| {
            let to = user_by_name(tx, &recipient)?
                .ok_or_else(|| StoreError::not_found("recipient not found"))?;
            let id = insert_inbox_message(tx, sender, to.id, &message, now)?;
            let (sender_name, avatar_url): (String, String) = tx
                .prepare_cached("SELECT username, avatar_url FROM users WHERE id = ?1")?
                .query_row([sender], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(InboxMessage {
                id,
                sender: sender_name,
                recipient: to.username,
                message,
                created_at: now,
                avatar_url,
            })
        })
        .await
    }

    async fn inbox(&self, user_id: i64, page: PageRequest) -> StoreResult<Page<InboxMessage>> {
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(INBOX_PAGE)?
                .query_map(
                    params![user_id, page.before.unwrap_or(i64::MAX), page.limit + 1],
                    |r| {
                        Ok(InboxMessage {
                            id: r.get(0)?,
                            sender: r.get(1)?,
                            recipient: r.get(2)?,
                            message: r.get(3)?,
                            created_at: r.get(4)?,
                            avatar_url: r.get(5)?,
                        })
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(into_page(rows, page.limit, |m| m.id))
        })
        .await
    }

    async fn inbox_count(&self, user_id: i64) -> StoreResult<i64> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM inbox_messages
                 WHERE (recipient_id = ?1 AND recipient_deleted = 0)
                    OR (sender_id = ?1 AND sender_deleted = 0)",
                )?
                .query_row([user_id], |r| r.get(0))?)
        })
        .await
    }

    async fn delete_inbox_message(&self, user_id: i64, message_id: i64) -> StoreResult<()> {
        self.write(move |tx| {
            let row: Option<(i64, i64, bool, bool)> = tx
                .query_row(
                    "SELECT sender_id, recipient_id, sender_deleted, recipient_deleted
                     FROM inbox_messages WHERE id = ?1",
                    [message_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let visible =
                row.is_some_and(|(s, r, sd, rd)| (s == user_id && !sd) || (r == user_id && !rd));
            if !visible {
                return Err(StoreError::not_found("message not found"));
            }
            // Hide it on every side the caller is on (both, for a note to oneself).
            tx.execute(
                "UPDATE inbox_messages
                 SET sender_deleted = sender_deleted OR sender_id = ?2,
                     recipient_deleted = recipient_deleted OR recipient_id = ?2
                 WHERE id = ?1",
                params![message_id, user_id],
            )?;
            Ok(())
        })
        .await
    }
}
