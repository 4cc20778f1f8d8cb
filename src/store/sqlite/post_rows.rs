//! Posts' rows by id, kept in memory and exact.
//!
//! The feed reads 30 posts by id, and at a million posts most of them lie
//! on pages outside SQLite's cache (a `pread` from the OS cache each: 15%
//! of the feed's CPU). A post's content and author never change; its
//! counters change with every vote and reply, so the store drops the
//! post's entry after each such commit, and all entries after an account
//! is deleted (its posts go, and counters of posts it voted on or replied
//! to change). As with the user cards, a read that may have begun before
//! such a commit does not fill the cache: each post id maps to a stripe
//! that remembers the last change in it.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

use crate::store::posts::Post;

/// Beyond this many cached posts the cache starts over (about 250 bytes
/// each with their content: at most ~25 MB).
const MAX_ENTRIES: usize = 100_000;

/// Change stripes; a change to one post stops fills of the others in its
/// stripe too, so more stripes mean fewer fills turned away under votes.
const STRIPES: usize = 4096;

/// A post's row without its author's name (that comes from the user cards).
#[derive(Debug, Clone)]
pub(super) struct PostRow {
    pub author: i64,
    pub post: Post,
}

pub(super) struct PostRows {
    inner: Mutex<Inner>,
}

struct Inner {
    rows: HashMap<i64, PostRow>,
    /// Counts changes (of one post, or of all).
    changes: u64,
    /// For each stripe, the value of `changes` at its last change.
    changed_at: Box<[u64; STRIPES]>,
}

/// Where the cache stood before a read began; taken outside the read's
/// transaction, since its snapshot is fixed at its first statement.
#[derive(Debug, Clone, Copy)]
pub(super) struct BeforeRead(u64);

impl Default for PostRows {
    fn default() -> Self {
        PostRows {
            inner: Mutex::new(Inner {
                rows: HashMap::new(),
                changes: 0,
                changed_at: Box::new([0; STRIPES]),
            }),
        }
    }
}

fn stripe(post_id: i64) -> usize {
    post_id.rem_euclid(STRIPES as i64) as usize
}

impl PostRows {
    pub fn before_read(&self) -> BeforeRead {
        BeforeRead(self.lock().changes)
    }

    /// The cached rows of `ids`, in their order; `None` where not cached.
    pub fn get_many(&self, ids: &[i64]) -> Vec<Option<PostRow>> {
        let inner = self.lock();
        ids.iter().map(|id| inner.rows.get(id).cloned()).collect()
    }

    /// Keeps rows read in a transaction that began after `before`, unless
    /// their post changed since.
    pub fn fill(&self, rows: impl IntoIterator<Item = PostRow>, before: BeforeRead) {
        let mut inner = self.lock();
        if inner.changes == before.0 {
            // Nothing changed at all: the common case, no stripe to check.
            for row in rows {
                inner.insert(row);
            }
            return;
        }
        for row in rows {
            if inner.changed_at[stripe(row.post.id)] <= before.0 {
                inner.insert(row);
            }
        }
    }

    /// After a commit that changed (or may have changed) the post.
    pub fn changed(&self, post_id: i64) {
        let mut inner = self.lock();
        inner.changes += 1;
        let now = inner.changes;
        inner.changed_at[stripe(post_id)] = now;
        inner.rows.remove(&post_id);
    }

    /// After a commit that may have changed any post.
    pub fn all_changed(&self) {
        let mut inner = self.lock();
        inner.changes += 1;
        let now = inner.changes;
        inner.changed_at.fill(now);
        inner.rows.clear();
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn insert(&mut self, row: PostRow) {
        if self.rows.len() >= MAX_ENTRIES {
            self.rows.clear();
        }
        self.rows.insert(row.post.id, row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, upvotes: i64) -> PostRow {
        PostRow {
            author: 7,
            post: Post {
                id,
                username: String::new(),
                content: format!("post {id}"),
                created_at: 0,
                upvotes,
                downvotes: 0,
                replies: 0,
            },
        }
    }

    fn upvotes(rows: &PostRows, id: i64) -> Option<i64> {
        rows.get_many(&[id])[0].as_ref().map(|r| r.post.upvotes)
    }

    #[test]
    fn a_filled_row_is_served_until_its_post_changes() {
        let rows = PostRows::default();
        let before = rows.before_read();
        rows.fill([row(1, 0), row(2, 0)], before);
        assert_eq!(upvotes(&rows, 1), Some(0));
        rows.changed(1);
        assert_eq!(upvotes(&rows, 1), None);
        assert_eq!(upvotes(&rows, 2), Some(0), "another post's row stays");
    }

    #[test]
    fn a_read_that_began_before_a_change_does_not_fill_that_post() {
        let rows = PostRows::default();
        let before = rows.before_read();
        // A vote on post 1 commits while the read is under way.
        rows.changed(1);
        rows.fill([row(1, 0), row(2, 0)], before);
        assert_eq!(upvotes(&rows, 1), None, "the read may predate the vote");
        assert_eq!(upvotes(&rows, 2), Some(0), "post 2 did not change");
        // A read that began after the change fills it.
        let after = rows.before_read();
        rows.fill([row(1, 1)], after);
        assert_eq!(upvotes(&rows, 1), Some(1));
    }

    #[test]
    fn a_change_to_all_posts_empties_the_cache_and_refuses_older_reads() {
        let rows = PostRows::default();
        let before = rows.before_read();
        rows.fill([row(1, 0)], before);
        rows.all_changed();
        assert_eq!(upvotes(&rows, 1), None);
        rows.fill([row(2, 0)], before);
        assert_eq!(upvotes(&rows, 2), None);
    }

    #[test]
    fn the_cache_starts_over_when_full() {
        let rows = PostRows::default();
        let before = rows.before_read();
        rows.fill((1..=MAX_ENTRIES as i64).map(|id| row(id, 0)), before);
        assert_eq!(rows.lock().rows.len(), MAX_ENTRIES);
        rows.fill([row(0, 0)], before);
        assert_eq!(rows.lock().rows.len(), 1);
        assert_eq!(upvotes(&rows, 0), Some(0));
    }
}
