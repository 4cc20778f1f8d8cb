//! Direct messages on PostgreSQL.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx_core::{query::query, query_as::query_as, query_scalar::query_scalar};

use super::{PostgresStore, begin, into_page, retrying};
use crate::store::{
    PageRequest, StoreError, StoreResult, UnixSeconds,
    inbox::{InboxMessage, InboxPage, InboxStore},
};

/// Each side is read through its own index; UNION also folds a message to oneself into one row.
const INBOX_PAGE: &str = "
    SELECT m.id, s.username, r.username, m.message, m.created_at, s.avatar_url
    FROM ((SELECT id FROM inbox_messages
           WHERE recipient_id = $1 AND NOT recipient_deleted AND id < $2
           ORDER BY id DESC LIMIT $3)
          UNION
          (SELECT id FROM inbox_messages
           WHERE sender_id = $1 AND NOT sender_deleted AND id < $2
           ORDER BY id DESC LIMIT $3)) AS ids
    JOIN inbox_messages m ON m.id = ids.id
    JOIN users s ON s.id = m.sender_id
    JOIN users r ON r.id = m.recipient_id
    ORDER BY m.id DESC LIMIT $3";

type InboxRow = (i64, String, String, String, i64, String);

#[async_trait]
impl InboxStore for PostgresStore {
    async fn send_inbox_message(
        &self,
        sender: i64,
        recipient: &str,
        message: String,
        now: UnixSeconds,
    ) -> StoreResult<InboxMessage> {
        // One statement, so one round trip and no transaction of its own:
        // the message is written only if the recipient exists, and the
        // names come back with its id. Its foreign-key checks lock both
        // users' rows (KEY SHARE); should that ever lose a deadlock, the
        // statement kept nothing and runs again.
        let key = recipient.to_lowercase();
        let (key, message) = (&key, &message);
        let row: Option<(i64, String, String, String)> = retrying(move || async move {
            Ok(query_as(
                "WITH recipient AS (SELECT id, username FROM users WHERE username_key = $2),
                      sent AS (
                          INSERT INTO inbox_messages (sender_id, recipient_id, message, created_at)
                          SELECT $1, id, $3, $4 FROM recipient
                          RETURNING id)
                 SELECT sent.id, recipient.username, sender.username, sender.avatar_url
                 FROM sent, recipient, users sender WHERE sender.id = $1",
            )
            .bind(sender)
            .bind(key)
            .bind(message)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?)
        })
        .await?;
        let (id, recipient, sender, avatar_url) =
            row.ok_or_else(|| StoreError::not_found("recipient not found"))?;
        Ok(InboxMessage {
            id,
            sender,
            recipient,
            message: message.clone(),
            created_at: now,
            avatar_url,
        })
    }

    async fn inbox(&self, user_id: i64, page: PageRequest) -> StoreResult<Arc<InboxPage>> {
        let rows: Vec<InboxRow> = query_as(INBOX_PAGE)
            .bind(user_id)
            .bind(page.before.unwrap_or(i64::MAX))
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        let rows = rows
            .into_iter()
            .map(
                |(id, sender, recipient, message, created_at, avatar_url)| InboxMessage {
                    id,
                    sender,
                    recipient,
                    message,
                    created_at,
                    avatar_url,
                },
            )
            .collect();
        Ok(InboxPage::new(into_page(rows, page.limit, |m| m.id)))
    }

    async fn inbox_count(&self, user_id: i64) -> StoreResult<i64> {
        Ok(query_scalar(
            "SELECT COUNT(*) FROM inbox_messages
             WHERE (recipient_id = $1 AND NOT recipient_deleted)
                OR (sender_id = $1 AND NOT sender_deleted)",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn delete_inbox_message(&self, user_id: i64, message_id: i64) -> StoreResult<()> {
        retrying(move || async move {
            let mut tx = begin(&self.pool).await?;
            let row: Option<(i64, i64, bool, bool)> = query_as(
                "SELECT sender_id, recipient_id, sender_deleted, recipient_deleted
                 FROM inbox_messages WHERE id = $1 FOR UPDATE",
            )
            .bind(message_id)
            .fetch_optional(&mut *tx)
            .await?;
            let visible =
                row.is_some_and(|(s, r, sd, rd)| (s == user_id && !sd) || (r == user_id && !rd));
            if !visible {
                return Err(StoreError::not_found("message not found"));
            }
            // Hide it on every side the caller is on (both, for a note to oneself).
            query(
                "UPDATE inbox_messages
                 SET sender_deleted = sender_deleted OR sender_id = $2,
                     recipient_deleted = recipient_deleted OR recipient_id = $2
                 WHERE id = $1",
            )
            .bind(message_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }
}
