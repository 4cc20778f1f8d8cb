//! Each user's name and avatar by id (and id by name), kept in memory.
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

use super::IdMap;
use crate::store::{StoreResult, accounts::UserRef};

/// Beyond this many cached users the cache starts over, so memory stays
/// bounded whatever the number of users (about 150 bytes each).
const MAX_ENTRIES: usize = 200_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct UserCard {
    pub username: String,
    pub avatar_url: String,
}

/// The cards a list needs, one per user. Handing out a card per row
/// instead cost the inbox a tenth of its CPU: every clone of a shared
/// card is an atomic increment on a cache line the other core writes too
/// (the viewer's own card is in every message of their inbox).
pub(super) struct CardSet {
    /// Sorted, no duplicates.
    ids: Vec<i64>,
    cards: Vec<Option<Arc<UserCard>>>,
}

impl CardSet {
    /// The user's card; `None` for a user not asked for or not found.
    pub fn get(&self, user_id: i64) -> Option<&UserCard> {
        let at = self.ids.binary_search(&user_id).ok()?;
        self.cards[at].as_deref()
    }
}

#[derive(Default)]
pub(super) struct UserCards {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    cards: IdMap<Arc<UserCard>>,
    /// Lower-cased names of the users in `cards`, to their ids.
    ids_by_name: HashMap<String, i64>,
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

    /// The cards of `ids`, as `card` finds them, each user looked up once
    /// under one lock (a page of the inbox names 100 users, mostly the
    /// same few).
    pub fn cards(
        &self,
        conn: &Connection,
        ids: &[i64],
        before: BeforeRead,
    ) -> StoreResult<CardSet> {
        let mut set = self.cached_set(ids);
        for (card, &id) in set.cards.iter_mut().zip(&set.ids) {
            if card.is_none() {
                *card = self.card(conn, id, before)?;
            }
        }
        Ok(set)
    }

    /// The cards of `ids` if all are in memory; `None` says nothing about
    /// whether the users exist.
    pub fn cached_cards(&self, ids: &[i64]) -> Option<CardSet> {
        let set = self.cached_set(ids);
        set.cards.iter().all(Option::is_some).then_some(set)
    }

    /// The cards of `ids` that are in memory, each user once.
    fn cached_set(&self, ids: &[i64]) -> CardSet {
        let mut unique = ids.to_vec();
        unique.sort_unstable();
        unique.dedup();
        let inner = self.lock();
        let cards = unique
            .iter()
            .map(|id| inner.cards.get(id).cloned())
            .collect();
        CardSet { ids: unique, cards }
    }

    /// The user named `username` (ignoring case), as `card` finds users by id.
    pub fn by_name(
        &self,
        conn: &Connection,
        username: &str,
        before: BeforeRead,
    ) -> StoreResult<Option<UserRef>> {
        if let Some(user) = self.cached_user(username) {
            return Ok(Some(user));
        }
        let key = username.to_lowercase();
        let found = conn
            .prepare_cached("SELECT id, username, avatar_url FROM users WHERE username_key = ?1")?
            .query_row([&key], |r| {
                let card = UserCard {
                    username: r.get(1)?,
                    avatar_url: r.get(2)?,
                };
                Ok((r.get::<_, i64>(0)?, Arc::new(card)))
            })
            .optional()?;
        Ok(found.map(|(id, card)| {
            let username = card.username.clone();
            self.fill(id, card, before);
            UserRef { id, username }
        }))
    }

    /// The id of the user named `username` (ignoring case) if their card
    /// is in memory; `None` says nothing about whether the user exists.
    pub fn cached_id(&self, username: &str) -> Option<i64> {
        let key = username.to_lowercase();
        let inner = self.lock();
        let id = *inner.ids_by_name.get(&key)?;
        inner.cards.contains_key(&id).then_some(id)
    }

    /// The user's card if it is in memory; `None` says nothing about
    /// whether the user exists.
    pub fn cached_card(&self, user_id: i64) -> Option<Arc<UserCard>> {
        self.lock().cards.get(&user_id).cloned()
    }

    /// The user named `username` (ignoring case) if their card is in
    /// memory; `None` says nothing about whether the user exists.
    pub fn cached_user(&self, username: &str) -> Option<UserRef> {
        let key = username.to_lowercase();
        let inner = self.lock();
        let id = *inner.ids_by_name.get(&key)?;
        let card = inner.cards.get(&id)?;
        Some(UserRef {
            id,
            username: card.username.clone(),
        })
    }

    fn fill(&self, user_id: i64, card: Arc<UserCard>, before: BeforeRead) {
        let mut inner = self.lock();
        if inner.changes != before.0 {
            return;
        }
        if inner.cards.len() >= MAX_ENTRIES {
            inner.cards.clear();
            inner.ids_by_name.clear();
        }
        let key = card.username.to_lowercase();
        inner.cards.insert(user_id, card);
        inner.ids_by_name.insert(key, user_id);
    }

    /// After a commit that changed or deleted the user.
    pub fn changed(&self, user_id: i64) {
        let mut inner = self.lock();
        inner.changes += 1;
        if let Some(card) = inner.cards.remove(&user_id) {
            inner.ids_by_name.remove(&card.username.to_lowercase());
        }
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
            "CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT, avatar_url TEXT,
                                 username_key TEXT);
             INSERT INTO users VALUES (1, 'ann', 'a.png', 'ann'), (2, 'bob', 'b.png', 'bob');",
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
    fn a_card_set_finds_each_user_asked_for_and_none_for_others() {
        let (conn, cards) = (db(), UserCards::default());
        assert!(avatar(&cards, &conn, 2).is_some());
        let before = cards.before_read();
        let set = cards.cards(&conn, &[2, 3, 1, 2], before).unwrap();
        let names: Vec<Option<&str>> = [2, 3, 1, 4]
            .iter()
            .map(|&id| set.get(id).map(|c| c.username.as_str()))
            .collect();
        assert_eq!(names, [Some("bob"), None, Some("ann"), None]);
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

    fn id_of(cards: &UserCards, conn: &Connection, name: &str) -> Option<i64> {
        let before = cards.before_read();
        cards.by_name(conn, name, before).unwrap().map(|u| u.id)
    }

    #[test]
    fn a_deleted_user_is_forgotten_by_id_and_by_name() {
        let (conn, cards) = (db(), UserCards::default());
        assert!(avatar(&cards, &conn, 2).is_some());
        assert_eq!(id_of(&cards, &conn, "BOB"), Some(2));
        conn.execute("DELETE FROM users WHERE id = 2", []).unwrap();
        cards.changed(2);
        assert_eq!(avatar(&cards, &conn, 2), None);
        assert_eq!(id_of(&cards, &conn, "bob"), None);
        assert_eq!(cards.cached_user("bob"), None);
        // The id is reused by a new user (SQLite reuses the highest id).
        conn.execute("INSERT INTO users VALUES (2, 'cy', 'c.png', 'cy')", [])
            .unwrap();
        assert_eq!(id_of(&cards, &conn, "cy"), Some(2));
        assert_eq!(avatar(&cards, &conn, 2).as_deref(), Some("c.png"));
    }

    #[test]
    fn a_name_is_found_ignoring_case_with_its_stored_spelling() {
        let (conn, cards) = (db(), UserCards::default());
        for _ in 0..2 {
            let before = cards.before_read();
            let ann = cards.by_name(&conn, "ANN", before).unwrap().unwrap();
            assert_eq!((ann.id, ann.username.as_str()), (1, "ann"));
        }
        assert_eq!(id_of(&cards, &conn, "nobody"), None);
        // Found once, known without the database.
        let ann = cards.cached_user("Ann").unwrap();
        assert_eq!((ann.id, ann.username.as_str()), (1, "ann"));
        assert_eq!(cards.cached_user("bob"), None, "never looked up");
    }
}
