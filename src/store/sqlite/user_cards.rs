//! Each user's name and avatar by id, kept in memory.
//!
//! Lists show the name (and often the avatar) of whoever wrote each row: a
//! page of the inbox looked up 100 user rows, a feed 30, a page of replies
//! up to 50, each a B-tree descent in SQLite (a quarter of the inbox's
//! CPU). Names never change and avatars change only through settings, so
//! the store drops a user's entry after each commit that changes or
//! deletes them, and the copy never answers for what is gone.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use rusqlite::{Connection, OptionalExtension};

use crate::store::StoreResult;

/// Beyond this many cached users the cache starts over, so memory stays
/// bounded whatever the number of users (about 150 bytes each).
const MAX_ENTRIES: usize = 200_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct UserCard {
    pub username: String,
    pub avatar_url: String,
}

#[derive(Default)]
pub(super) struct UserCards {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    cards: HashMap<i64, Arc<UserCard>>,
    /// Counts the commits that changed or deleted users. A lookup caches
    /// what it read only if none happened since its read began: its
    /// snapshot may predate one.
    changes: u64,
}

/// Where the cache stood before a read began; taken outside the read's
/// transaction, since its snapshot is fixed at its first statement.
#[derive(Debug, Clone, Copy)]
pub(super) struct BeforeRead(u64);

impl UserCards {
    pub fn before_read(&self) -> BeforeRead {
        BeforeRead(self.lock().changes)
    }

    /// The user's card, from memory or else from `conn` (inside the read
    /// that began after `before`); `None` if there is no such user.
    pub fn card(
        &self,
        conn: &Connection,
        user_id: i64,
        before: BeforeRead,
    ) -> StoreResult<Option<Arc<UserCard>>> {
        if let Some(card) = self.lock().cards.get(&user_id) {
            return Ok(Some(card.clone()));
        }
        let card = conn
            .prepare_cached("SELECT username, avatar_url FROM users WHERE id = ?1")?
            .query_row([user_id], |r| {
                Ok(Arc::new(UserCard {
                    username: r.get(0)?,
                    avatar_url: r.get(1)?,
                }))
            })
            .optional()?;
        if let Some(card) = &card {
            self.fill(user_id, card.clone(), before);
        }
        Ok(card)
    }

    fn fill(&self, user_id: i64, card: Arc<UserCard>, before: BeforeRead) {
        let mut inner = self.lock();
        if inner.changes != before.0 {
            return;
        }
        if inner.cards.len() >= MAX_ENTRIES {
            inner.cards.clear();
        }
        inner.cards.insert(user_id, card);
    }

    /// After a commit that changed or deleted the user.
    pub fn changed(&self, user_id: i64) {
        let mut inner = self.lock();
        inner.changes += 1;
        inner.cards.remove(&user_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT, avatar_url TEXT);
             INSERT INTO users VALUES (1, 'ann', 'a.png'), (2, 'bob', 'b.png');",
        )
        .unwrap();
        conn
    }

    fn avatar(cards: &UserCards, conn: &Connection, id: i64) -> Option<String> {
        let before = cards.before_read();
        cards
            .card(conn, id, before)
            .unwrap()
            .map(|c| c.avatar_url.clone())
    }

    #[test]
    fn a_card_is_read_once_then_served_from_memory() {
        let (conn, cards) = (db(), UserCards::default());
        assert_eq!(avatar(&cards, &conn, 1).as_deref(), Some("a.png"));
        // Changed behind the cache's back: the copy still answers.
        conn.execute("UPDATE users SET avatar_url = 'x.png' WHERE id = 1", [])
            .unwrap();
        assert_eq!(avatar(&cards, &conn, 1).as_deref(), Some("a.png"));
        // Once told, it reads again.
        cards.changed(1);
        assert_eq!(avatar(&cards, &conn, 1).as_deref(), Some("x.png"));
        assert_eq!(avatar(&cards, &conn, 3), None);
    }

    #[test]
    fn a_read_that_overlapped_a_change_is_not_cached() {
        let (conn, cards) = (db(), UserCards::default());
        let before = cards.before_read();
        // The read's snapshot predates a change committed meanwhile...
        cards.changed(2);
        let read = cards.card(&conn, 2, before).unwrap().unwrap();
        assert_eq!(read.avatar_url, "b.png");
        // ...so the next read goes to the database, not to that copy.
        conn.execute("UPDATE users SET avatar_url = 'y.png' WHERE id = 2", [])
            .unwrap();
        assert_eq!(avatar(&cards, &conn, 2).as_deref(), Some("y.png"));
    }

    #[test]
    fn a_deleted_user_is_forgotten() {
        let (conn, cards) = (db(), UserCards::default());
        assert!(avatar(&cards, &conn, 2).is_some());
        conn.execute("DELETE FROM users WHERE id = 2", []).unwrap();
        cards.changed(2);
        assert_eq!(avatar(&cards, &conn, 2), None);
    }
}
