//! The newest posts and each user's latest post id, kept in memory for the feed.
//!
//! Every feed request asks which posts are the newest and which of the
//! viewer's followees posted last. Answered from SQLite, that took hundreds
//! of B-tree descents per request (a join of the viewer's follows with
//! `users`, and a scan of the newest posts checking each author against the
//! follows); here it is a walk over a short array. Only this process writes
//! the database, so once loaded at open and updated after each commit, the
//! copy stays exact.

use std::{collections::VecDeque, sync::RwLock};

use rusqlite::Connection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RecentPost {
    pub id: i64,
    pub author: i64,
    pub created_at: i64,
}

pub(super) struct RecentPosts {
    capacity: usize,
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    /// At most `capacity` posts, oldest first, ids ascending.
    newest: VecDeque<RecentPost>,
    /// Indexed by user id: the id of the user's newest post, 0 for none.
    last_post: Vec<i64>,
}

impl RecentPosts {
    /// Reads the newest `capacity` posts and every user's last post id.
    pub fn load(conn: &Connection, capacity: usize) -> rusqlite::Result<Self> {
        let mut inner = Inner::default();
        let mut newest = conn
            .prepare("SELECT id, user_id, created_at FROM posts ORDER BY id DESC LIMIT ?1 + 0")?;
        let rows = newest.query_map([capacity as i64], |r| {
            Ok(RecentPost {
                id: r.get(0)?,
                author: r.get(1)?,
                created_at: r.get(2)?,
            })
        })?;
        for post in rows {
            inner.newest.push_front(post?);
        }
        let mut last = conn.prepare("SELECT id, last_post_id FROM users WHERE last_post_id > 0")?;
        let rows = last.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (user, post) = row?;
            inner.set_last_post(user, post);
        }
        Ok(RecentPosts {
            capacity,
            inner: RwLock::new(inner),
        })
    }

    /// Records a committed post. Commits of one batch may be recorded out
    /// of order, so the post is inserted at its place.
    pub fn record(&self, post: RecentPost) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let at = inner
            .newest
            .iter()
            .rposition(|p| p.id < post.id)
            .map_or(0, |i| i + 1);
        inner.newest.insert(at, post);
        if inner.newest.len() > self.capacity {
            inner.newest.pop_front();
        }
        let last = inner.last_post(post.author).max(post.id);
        inner.set_last_post(post.author, last);
    }

    /// Forgets a deleted user's posts.
    pub fn forget_author(&self, author: i64) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.newest.retain(|p| p.author != author);
        inner.set_last_post(author, 0);
    }

    /// Runs `read` with the newest posts (oldest first) and a lookup of
    /// each user's last post id.
    pub fn read<T>(&self, read: impl FnOnce(&VecDeque<RecentPost>, &dyn Fn(i64) -> i64) -> T) -> T {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        read(&inner.newest, &|user| inner.last_post(user))
    }
}

impl Inner {
    fn last_post(&self, user: i64) -> i64 {
        usize::try_from(user)
            .ok()
            .and_then(|i| self.last_post.get(i).copied())
            .unwrap_or(0)
    }

    fn set_last_post(&mut self, user: i64, post: i64) {
        let Ok(i) = usize::try_from(user) else { return };
        if i >= self.last_post.len() {
            if post == 0 {
                return;
            }
            self.last_post.resize(i + 1, 0);
        }
        self.last_post[i] = post;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(id: i64, author: i64) -> RecentPost {
        RecentPost {
            id,
            author,
            created_at: id,
        }
    }

    fn empty(capacity: usize) -> RecentPosts {
        RecentPosts {
            capacity,
            inner: RwLock::new(Inner::default()),
        }
    }

    fn ids(recent: &RecentPosts) -> Vec<i64> {
        recent.read(|newest, _| newest.iter().map(|p| p.id).collect())
    }

    #[test]
    fn keeps_the_newest_in_id_order_whatever_the_recording_order() {
        let recent = empty(3);
        for id in [2, 1, 5, 3, 4] {
            recent.record(post(id, 7));
        }
        assert_eq!(ids(&recent), vec![3, 4, 5]);
    }

    #[test]
    fn tracks_each_users_last_post() {
        let recent = empty(2);
        recent.record(post(10, 3));
        recent.record(post(8, 3));
        recent.record(post(11, 4));
        recent.read(|_, last| {
            assert_eq!(last(3), 10);
            assert_eq!(last(4), 11);
            assert_eq!(last(5), 0);
            assert_eq!(last(1_000_000), 0);
        });
        recent.forget_author(3);
        assert_eq!(ids(&recent), vec![11]);
        recent.read(|_, last| assert_eq!(last(3), 0));
    }
}
