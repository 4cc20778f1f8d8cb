//! The newest posts and each user's newest post ids, kept in memory for the feed.
//!
//! Every feed request asks which posts are the newest and which posts of
//! the viewer's followees are the newest. Answered from SQLite, that took
//! dozens of B-tree descents per request (one index read per followee, and
//! a scan of the newest posts checking each author against the follows);
//! here it is a walk over short arrays. Only this process writes the
//! database, so once loaded at open and updated after each commit, the copy
//! stays exact.

use std::{collections::VecDeque, sync::RwLock};

use rusqlite::Connection;

/// How many of each user's newest post ids are kept. A followee who posted
/// more than this since the feed's cut-off is read from the index. On the
/// benchmark's data a feed needed that read for 3.2 followees on average
/// with 4 kept, 0.5 with 8 and 0.1 with 12; 8 cost 64 bytes a user (64 MB
/// at a million users).
pub(super) const KEPT_PER_USER: usize = 8;

/// A user's newest post ids, newest first; 0 fills the unused places.
pub(super) type LastPosts = [i64; KEPT_PER_USER];

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
pub(super) struct Inner {
    /// At most `capacity` posts, oldest first, ids ascending.
    newest: VecDeque<RecentPost>,
    /// Indexed by user id.
    last_posts: Vec<LastPosts>,
    /// Each user's newest post id (0 for none), indexed by user id: the
    /// feed looks at every followee's, and this array is an eighth of
    /// `last_posts`, so it stays in the CPU's cache.
    latest: Vec<i64>,
}

impl RecentPosts {
    /// Reads the newest `capacity` posts and every user's newest post ids.
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
        // One index seek per user who has posted.
        let mut posters = conn.prepare("SELECT id FROM users WHERE last_post_id > 0")?;
        let posters = posters
            .query_map([], |r| r.get::<_, i64>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut newest_of =
            conn.prepare("SELECT id FROM posts WHERE user_id = ?1 ORDER BY id DESC LIMIT ?2 + 0")?;
        for user in posters {
            let ids = newest_of.query_map([user, KEPT_PER_USER as i64], |r| r.get(0))?;
            for id in ids {
                inner.add_post(user, id?);
            }
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
        inner.add_post(post.author, post.id);
    }

    /// Forgets a deleted user's posts.
    pub fn forget_author(&self, author: i64) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.newest.retain(|p| p.author != author);
        if let Some(kept) = inner.slot(author) {
            *kept = [0; KEPT_PER_USER];
        }
        if let Some(latest) = usize::try_from(author)
            .ok()
            .and_then(|i| inner.latest.get_mut(i))
        {
            *latest = 0;
        }
    }

    /// Runs `read` with what is kept: the newest posts and each user's
    /// newest post ids.
    pub fn read<T>(&self, read: impl FnOnce(&Inner) -> T) -> T {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        read(&inner)
    }
}

impl Inner {
    /// The newest posts, oldest first.
    pub fn newest(&self) -> &VecDeque<RecentPost> {
        &self.newest
    }

    /// The user's newest post ids, newest first.
    pub fn last_posts(&self, user: i64) -> LastPosts {
        usize::try_from(user)
            .ok()
            .and_then(|i| self.last_posts.get(i).copied())
            .unwrap_or_default()
    }

    /// The user's newest post id; 0 if they have none.
    pub fn latest(&self, user: i64) -> i64 {
        usize::try_from(user)
            .ok()
            .and_then(|i| self.latest.get(i).copied())
            .unwrap_or(0)
    }

    /// The user's slot, grown into if needed; `None` for an id no array can index.
    fn slot(&mut self, user: i64) -> Option<&mut LastPosts> {
        let i = usize::try_from(user).ok()?;
        if i >= self.last_posts.len() {
            self.last_posts.resize(i + 1, [0; KEPT_PER_USER]);
            self.latest.resize(i + 1, 0);
        }
        self.last_posts.get_mut(i)
    }

    /// Puts `post` among the user's newest ids if it is one of them.
    fn add_post(&mut self, user: i64, post: i64) {
        let Some(kept) = self.slot(user) else { return };
        if kept.contains(&post) {
            return;
        }
        if let Some(at) = kept.iter().position(|&id| id < post) {
            kept.copy_within(at..KEPT_PER_USER - 1, at + 1);
            kept[at] = post;
            let latest = kept[0];
            if let Some(slot) = usize::try_from(user)
                .ok()
                .and_then(|i| self.latest.get_mut(i))
            {
                *slot = latest;
            }
        }
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
        recent.read(|kept| kept.newest().iter().map(|p| p.id).collect())
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
    fn tracks_each_users_newest_post_ids() {
        let recent = empty(2);
        // Ids 1..=KEPT_PER_USER + 3 of user 3, out of order: evens down, odds up.
        let top = KEPT_PER_USER as i64 + 3;
        let evens = (1..=top).rev().filter(|id| id % 2 == 0);
        for id in evens.chain((1..=top).filter(|id| id % 2 == 1)) {
            recent.record(post(id, 3));
        }
        recent.record(post(100, 4));
        let newest_of_3: LastPosts = std::array::from_fn(|i| top - i as i64);
        let mut only_of_4 = [0; KEPT_PER_USER];
        only_of_4[0] = 100;
        recent.read(|kept| {
            assert_eq!(kept.last_posts(3), newest_of_3);
            assert_eq!(kept.last_posts(4), only_of_4);
            assert_eq!(kept.last_posts(5), [0; KEPT_PER_USER]);
            assert_eq!(kept.last_posts(1_000_000), [0; KEPT_PER_USER]);
            assert_eq!((kept.latest(3), kept.latest(4)), (top, 100));
            assert_eq!((kept.latest(5), kept.latest(1_000_000)), (0, 0));
        });
        recent.forget_author(3);
        assert_eq!(ids(&recent), vec![100]);
        recent.read(|kept| {
            assert_eq!(kept.last_posts(3), [0; KEPT_PER_USER]);
            assert_eq!(kept.latest(3), 0);
        });
    }
}
