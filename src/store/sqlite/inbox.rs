//! Direct messages on SQLite.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use rusqlite::{OptionalExtension, fallible_streaming_iterator::FallibleStreamingIterator, params};

use super::{
    SqliteStore,
    accounts::user_by_name,
    exact_cache::{Weigh, page_weight},
    id_floors::{Table, next_id},
    into_page,
};
use crate::store::{
    PageRequest, StoreError, StoreResult, UnixSeconds,
    accounts::UserRef,
    inbox::{InboxMessage, InboxPage, InboxStore},
};

/// A message in a page: about its rendering's bytes.
impl Weigh for InboxMessage {
    fn weigh(&self) -> u64 {
        let text = self.message.len() + self.sender.len() + self.recipient.len();
        (text + self.avatar_url.len() + 128) as u64
    }
}

/// How many messages a user's inbox lists (`GET /api/inbox_count`), kept
/// once counted: counting reads every message of the user's two indexes.
#[derive(Clone, Copy)]
pub(super) struct InboxCount(i64);

impl Weigh for InboxCount {
    fn weigh(&self) -> u64 {
        16
    }
}

/// One side of a user's inbox, newest first, from its covering index
/// (migrations 0004 and 0005); `INDEXED BY` so that the plan never falls
/// back to reading rows from the table, whatever the planner's statistics
/// say. Names and avatars come from the user cards.
const RECEIVED_PAGE: &str = "
    SELECT id, sender_id, recipient_id, message, created_at
    FROM inbox_messages INDEXED BY inbox_received
    WHERE recipient_id = ?1 AND recipient_deleted = 0 AND id < ?2
    ORDER BY id DESC LIMIT ?3 + 0";
const SENT_PAGE: &str = "
    SELECT id, sender_id, recipient_id, message, created_at
    FROM inbox_messages INDEXED BY inbox_sent
    WHERE sender_id = ?1 AND sender_deleted = 0 AND id < ?2
    ORDER BY id DESC LIMIT ?3 + 0";

/// A message as its index holds it: users by id.
struct StoredMessage {
    id: i64,
    sender_id: i64,
    recipient_id: i64,
    message: String,
    created_at: UnixSeconds,
}

/// A newest-first list of messages whose next id can be looked at before
/// the message is read: the merge copies out the text only of the
/// messages it keeps (half of those the two sides hold, for a full page).
trait NewestFirst {
    fn next_id(&mut self) -> StoreResult<Option<i64>>;
    /// Reads the next message and moves past it.
    fn take(&mut self) -> StoreResult<StoredMessage>;
    fn skip(&mut self) -> StoreResult<()>;
}

/// One side of the inbox as its statement steps through it.
struct SideRows<'s>(rusqlite::Rows<'s>);

impl<'s> SideRows<'s> {
    fn start(mut rows: rusqlite::Rows<'s>) -> StoreResult<Self> {
        rows.advance()?;
        Ok(SideRows(rows))
    }
}

impl NewestFirst for SideRows<'_> {
    fn next_id(&mut self) -> StoreResult<Option<i64>> {
        Ok(self.0.get().map(|r| r.get(0)).transpose()?)
    }

    fn take(&mut self) -> StoreResult<StoredMessage> {
        let r = self
            .0
            .get()
            .ok_or_else(|| StoreError::Other("no row to take".into()))?;
        let message = StoredMessage {
            id: r.get(0)?,
            sender_id: r.get(1)?,
            recipient_id: r.get(2)?,
            message: r.get(3)?,
            created_at: r.get(4)?,
        };
        self.0.advance()?;
        Ok(message)
    }

    fn skip(&mut self) -> StoreResult<()> {
        Ok(self.0.advance()?)
    }
}

/// The newest `limit` of two newest-first lists; a message in both (one
/// sent to oneself) once.
fn merge_newest(
    received: &mut impl NewestFirst,
    sent: &mut impl NewestFirst,
    limit: usize,
) -> StoreResult<Vec<StoredMessage>> {
    let mut merged = Vec::with_capacity(limit);
    while merged.len() < limit {
        let next = match (received.next_id()?, sent.next_id()?) {
            (Some(r), Some(s)) if r == s => {
                sent.skip()?;
                received.take()?
            }
            (Some(r), Some(s)) if r < s => sent.take()?,
            (Some(_), _) => received.take()?,
            (None, Some(_)) => sent.take()?,
            (None, None) => break,
        };
        merged.push(next);
    }
    Ok(merged)
}

/// Stores a direct message; shared by the store method and the bulk importer (bulk.rs).
/// Whether `user` still exists under that name: an id can be given again
/// after its user was deleted.
fn still_named(tx: &rusqlite::Connection, user: &UserRef) -> bool {
    tx.prepare_cached("SELECT username FROM users WHERE id = ?1")
        .and_then(|mut name| {
            name.query_row([user.id], |r| r.get::<_, String>(0))
                .optional()
        })
        .is_ok_and(|name| name.as_deref() == Some(user.username.as_str()))
}

pub(super) fn insert_inbox_message(
    conn: &rusqlite::Connection,
    sender: i64,
    recipient: i64,
    message: &str,
    now: UnixSeconds,
    id_floor: i64,
) -> StoreResult<i64> {
    conn.prepare_cached(concat!(
        "INSERT INTO inbox_messages (id, sender_id, recipient_id, message, created_at)
         VALUES (",
        next_id!("inbox_messages", 5),
        ", ?1, ?2, ?3, ?4)"
    ))?
    .execute(params![sender, recipient, message, now, id_floor])?;
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
        // The names as the users' cards know them: the write checks the
        // recipient by id (one lookup instead of two) and reads nothing
        // for the sender (1.01-1.05x the messages in same-time pairs).
        let known_recipient = self.users.cached_user(recipient);
        let known_sender = self.users.cached_card(sender);
        let recipient = recipient.to_owned();
        let recipient_id = Arc::new(OnceLock::new());
        let found = recipient_id.clone();
        let id_floors = self.id_floors.clone();
        let sent = self
            .write(move |tx| {
                let to = match known_recipient.filter(|user| still_named(tx, user)) {
                    Some(user) => user,
                    None => user_by_name(tx, &recipient)?
                        .ok_or_else(|| StoreError::not_found("recipient not found"))?,
                };
                let _ = found.set(to.id);
                let id_floor = id_floors.get(Table::InboxMessages);
                let id = insert_inbox_message(tx, sender, to.id, &message, now, id_floor)?;
                let (sender_name, avatar_url): (String, String) = match known_sender {
                    Some(card) => (card.username.clone(), card.avatar_url.clone()),
                    None => tx
                        .prepare_cached("SELECT username, avatar_url FROM users WHERE id = ?1")?
                        .query_row([sender], |r| Ok((r.get(0)?, r.get(1)?)))?,
                };
                Ok(InboxMessage {
                    id,
                    sender: sender_name,
                    recipient: to.username,
                    message,
                    created_at: now,
                    avatar_url,
                })
            })
            .await;
        // Dropped whatever the outcome: the commit may have happened even
        // if its fsync failed.
        self.inbox_pages.changed(sender);
        self.inbox_counts.changed(sender);
        if let Some(&recipient) = recipient_id.get() {
            self.inbox_pages.changed(recipient);
            self.inbox_counts.changed(recipient);
        }
        sent
    }

    async fn inbox(&self, user_id: i64, page: PageRequest) -> StoreResult<Arc<InboxPage>> {
        // A cached newest page needs no reader connection at all.
        if let Some(cached) = self.inbox_pages.newest(user_id, page) {
            return Ok(cached);
        }
        let (users, pages) = (self.users.clone(), self.inbox_pages.clone());
        let (before_read, pages_before) = (users.before_read(), pages.before_read());
        self.read(move |conn| {
            let (before, wanted) = (page.before.unwrap_or(i64::MAX), i64::from(page.limit) + 1);
            let mut received = conn.prepare_cached(RECEIVED_PAGE)?;
            let mut sent = conn.prepare_cached(SENT_PAGE)?;
            let newest = merge_newest(
                &mut SideRows::start(received.query(params![user_id, before, wanted])?)?,
                &mut SideRows::start(sent.query(params![user_id, before, wanted])?)?,
                wanted as usize,
            )?;
            let ids: Vec<i64> = newest
                .iter()
                .flat_map(|m| [m.sender_id, m.recipient_id])
                .collect();
            let cards = users.cards(conn, &ids, before_read)?;
            let mut messages = Vec::with_capacity(newest.len());
            for m in newest {
                // Both exist (foreign keys); a missing one is skipped as a join would.
                if let (Some(sender), Some(recipient)) =
                    (cards.get(m.sender_id), cards.get(m.recipient_id))
                {
                    messages.push(InboxMessage {
                        id: m.id,
                        sender: sender.username.clone(),
                        recipient: recipient.username.clone(),
                        message: m.message,
                        created_at: m.created_at,
                        avatar_url: sender.avatar_url.clone(),
                    });
                }
            }
            let weight = page_weight(&messages);
            let read = InboxPage::new(into_page(messages, page.limit, |m| m.id));
            pages.keep_newest(user_id, page, read.clone(), weight, pages_before);
            Ok(read)
        })
        .await
    }

    async fn inbox_count(&self, user_id: i64) -> StoreResult<i64> {
        if let Some(InboxCount(count)) = self.inbox_counts.get(user_id) {
            return Ok(count);
        }
        let counts = self.inbox_counts.clone();
        let before = counts.before_read();
        self.read(move |conn| {
            let count = conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM inbox_messages
                 WHERE (recipient_id = ?1 AND recipient_deleted = 0)
                    OR (sender_id = ?1 AND sender_deleted = 0)",
                )?
                .query_row([user_id], |r| r.get(0))?;
            counts.fill([(user_id, InboxCount(count))], before);
            Ok(count)
        })
        .await
    }

    async fn delete_inbox_message(&self, user_id: i64, message_id: i64) -> StoreResult<()> {
        let deleted = self
            .write(move |tx| {
                let row: Option<(i64, i64, bool, bool)> = tx
                    .query_row(
                        "SELECT sender_id, recipient_id, sender_deleted, recipient_deleted
                     FROM inbox_messages WHERE id = ?1",
                        [message_id],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .optional()?;
                let visible = row
                    .is_some_and(|(s, r, sd, rd)| (s == user_id && !sd) || (r == user_id && !rd));
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
            .await;
        // Hidden for the caller only: the other side's page is unchanged.
        self.inbox_pages.changed(user_id);
        self.inbox_counts.changed(user_id);
        deleted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_recipient_counts_only_while_their_id_has_their_name() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT);
             INSERT INTO users VALUES (1, 'Ann');",
        )
        .unwrap();
        let ann = |id, name: &str| UserRef {
            id,
            username: name.to_owned(),
        };
        assert!(still_named(&conn, &ann(1, "Ann")));
        assert!(!still_named(&conn, &ann(2, "Ann")), "no such id");
        // Deleted, and the id given to someone else.
        conn.execute_batch("DELETE FROM users; INSERT INTO users VALUES (1, 'bob');")
            .unwrap();
        assert!(!still_named(&conn, &ann(1, "Ann")));
    }

    fn message(id: i64) -> StoredMessage {
        StoredMessage {
            id,
            sender_id: 1,
            recipient_id: 1,
            message: String::new(),
            created_at: 0,
        }
    }

    fn ids(messages: Vec<StoredMessage>) -> Vec<i64> {
        messages.into_iter().map(|m| m.id).collect()
    }

    /// A list in memory; counts the messages read out of it.
    struct Listed {
        messages: std::iter::Peekable<std::vec::IntoIter<StoredMessage>>,
        taken: usize,
    }

    impl NewestFirst for Listed {
        fn next_id(&mut self) -> StoreResult<Option<i64>> {
            Ok(self.messages.peek().map(|m| m.id))
        }

        fn take(&mut self) -> StoreResult<StoredMessage> {
            self.taken += 1;
            Ok(self.messages.next().expect("a message to take"))
        }

        fn skip(&mut self) -> StoreResult<()> {
            self.messages.next();
            Ok(())
        }
    }

    fn listed(ids: &[i64]) -> Listed {
        let messages: Vec<StoredMessage> = ids.iter().map(|&id| message(id)).collect();
        Listed {
            messages: messages.into_iter().peekable(),
            taken: 0,
        }
    }

    fn merged(received: &[i64], sent: &[i64], limit: usize) -> Vec<i64> {
        let (mut received, mut sent) = (listed(received), listed(sent));
        let merged = merge_newest(&mut received, &mut sent, limit).unwrap();
        assert_eq!(
            received.taken + sent.taken,
            merged.len(),
            "read only what it keeps"
        );
        ids(merged)
    }

    #[test]
    fn both_sides_interleave_newest_first() {
        assert_eq!(merged(&[9, 6, 2], &[8, 7, 1], 10), vec![9, 8, 7, 6, 2, 1]);
        assert_eq!(merged(&[], &[3, 2], 10), vec![3, 2]);
        assert_eq!(merged(&[3, 2], &[], 10), vec![3, 2]);
    }

    #[test]
    fn the_page_stops_at_the_limit() {
        assert_eq!(merged(&[9, 6, 2], &[8, 7, 1], 3), vec![9, 8, 7]);
    }

    #[test]
    fn a_message_to_oneself_appears_once() {
        assert_eq!(merged(&[5, 4, 3], &[5, 3, 1], 10), vec![5, 4, 3, 1]);
    }
}
