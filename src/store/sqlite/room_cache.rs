//! Each room's retained messages, kept in memory once read.
//!
//! A room keeps at most its newest `max_messages` (100 by default), and a
//! busy room is read far more often than written: every member polls it.
//! Read from SQLite, a page of 100 messages was 100 index steps, row reads
//! and author joins, about 40% of the request's CPU. Only this process
//! writes the database, so the store updates a cached room after each
//! commit that changes its messages, and the copy stays exact.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use crate::store::rooms::{RoomMessage, RoomMessages, RoomSnapshot};

/// Beyond this many cached rooms the cache starts over, so memory stays
/// bounded (at most `max_messages` messages per room).
const MAX_ROOMS: usize = 1024;

/// Shared with readers; the messages themselves behind `Arc`s too, so that
/// a send while a reader holds the list copies pointers, not messages.
type Messages = Arc<RoomSnapshot>;

#[derive(Default)]
pub(super) struct RoomMessageCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Per room: its newest messages as stored, ids ascending, expired
    /// ones included until a purge deletes them.
    rooms: HashMap<i64, Messages>,
    /// Counts the commits that changed room messages. A read fills the
    /// cache only if none happened meanwhile: its snapshot may predate one.
    changes: u64,
}

/// Where a read stands when the cache did not have the room.
#[derive(Debug)]
pub(super) struct Miss(u64);

impl RoomMessageCache {
    pub fn get(&self, room_id: i64) -> Result<Messages, Miss> {
        let inner = self.lock();
        inner
            .rooms
            .get(&room_id)
            .cloned()
            .ok_or(Miss(inner.changes))
    }

    /// Caches what the database held for the room (ids ascending) at `miss`.
    pub fn fill(&self, room_id: i64, messages: Vec<RoomMessage>, miss: Miss) {
        let messages = Arc::new(RoomSnapshot::new(
            messages.into_iter().map(Arc::new).collect(),
        ));
        let mut inner = self.lock();
        if inner.changes != miss.0 {
            return;
        }
        if inner.rooms.len() >= MAX_ROOMS {
            inner.rooms.clear();
        }
        inner.rooms.insert(room_id, messages);
    }

    /// After the commit of `message`, with the room's count limit applied
    /// as the database applied it.
    pub fn added(&self, message: &RoomMessage, max_messages: usize) {
        let mut inner = self.lock();
        inner.changes += 1;
        let Some(messages) = inner.rooms.get_mut(&message.room_id) else {
            return;
        };
        let at = messages.messages().partition_point(|m| m.id < message.id);
        if messages
            .messages()
            .get(at)
            .is_some_and(|m| m.id == message.id)
        {
            return;
        }
        let messages = Arc::make_mut(messages).messages_mut();
        messages.insert(at, Arc::new(message.clone()));
        let excess = messages.len().saturating_sub(max_messages);
        messages.drain(..excess);
    }

    /// After the commit of a purge of the messages created at or before `cutoff`.
    pub fn purged(&self, cutoff: f64) {
        let mut inner = self.lock();
        inner.changes += 1;
        for messages in inner.rooms.values_mut() {
            if messages
                .messages()
                .first()
                .is_some_and(|m| m.created_at <= cutoff)
            {
                Arc::make_mut(messages)
                    .messages_mut()
                    .retain(|m| m.created_at > cutoff);
            }
        }
    }

    /// After a commit that removed messages in ways not tracked here
    /// (an account deletion).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.changes += 1;
        inner.rooms.clear();
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The messages of a cached room a reader asked for: newer than `oldest`,
/// at most the newest `limit`, oldest first. `polled` says it is the page
/// without `since`, whose rendering is kept.
pub(super) fn select(snapshot: Messages, oldest: f64, limit: usize, polled: bool) -> RoomMessages {
    let messages = snapshot.messages();
    let newer = messages.partition_point(|m| m.created_at <= oldest);
    let from = newer.max(messages.len().saturating_sub(limit));
    RoomMessages::shared(snapshot, from, polled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(room_id: i64, id: i64, created_at: f64) -> RoomMessage {
        RoomMessage {
            id,
            room_id,
            username: "u".into(),
            message: format!("m{id}"),
            created_at,
        }
    }

    fn ids(messages: &RoomMessages) -> Vec<i64> {
        messages.as_slice().iter().map(|m| m.id).collect()
    }

    fn cached_ids(cache: &RoomMessageCache, room_id: i64) -> Vec<i64> {
        let snapshot = cache.get(room_id).unwrap();
        snapshot.messages().iter().map(|m| m.id).collect()
    }

    #[test]
    fn a_read_that_overlapped_a_change_is_not_cached() {
        let cache = RoomMessageCache::default();
        let miss = cache.get(1).unwrap_err();
        cache.added(&message(1, 5, 5.0), 100);
        cache.fill(1, vec![message(1, 4, 4.0)], miss);
        assert!(cache.get(1).is_err());
    }

    #[test]
    fn additions_keep_id_order_and_the_count_limit() {
        let cache = RoomMessageCache::default();
        let miss = cache.get(1).unwrap_err();
        cache.fill(1, vec![message(1, 1, 1.0), message(1, 2, 2.0)], miss);
        cache.added(&message(1, 4, 4.0), 3);
        cache.added(&message(1, 3, 3.0), 3);
        cache.added(&message(1, 3, 3.0), 3);
        cache.added(&message(2, 9, 9.0), 3);
        assert_eq!(cached_ids(&cache, 1), vec![2, 3, 4]);
        assert!(cache.get(2).is_err());
    }

    #[test]
    fn purges_drop_expired_messages_and_reads_select_by_time_and_count() {
        let cache = RoomMessageCache::default();
        let miss = cache.get(1).unwrap_err();
        let all = (1..=5).map(|i| message(1, i, i as f64)).collect();
        cache.fill(1, all, miss);
        let held = cache.get(1).unwrap();
        assert_eq!(ids(&select(held.clone(), 2.0, 100, false)), vec![3, 4, 5]);
        assert_eq!(ids(&select(held, 0.0, 2, false)), vec![4, 5]);
        cache.purged(3.0);
        assert_eq!(cached_ids(&cache, 1), vec![4, 5]);
        cache.clear();
        assert!(cache.get(1).is_err());
    }
}
