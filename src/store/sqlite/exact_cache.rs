//! Values by id kept in memory and exact: the store drops an entry after
//! each commit that changed it.
//!
//! Used for posts' rows and follow lists (`post_rows` and `follows` in the
//! SQLite store). A read may have begun before such a commit and so hold
//! what it replaced; as with the user cards, such a read does not fill the
//! cache. Each id maps to a stripe that remembers the last change in it,
//! so that a change to one id turns away only the fills of its stripe.
//!
//! Values live in two generations of at most half the entries each. When
//! the newer one is full it becomes the older one, and the older one is
//! dropped; a value found in the older generation moves back to the newer
//! one. What is read often so survives the turnover, where a cache that
//! started over when full lost its hot values with the cold ones.

use std::sync::{Arc, Mutex, MutexGuard};

use super::IdMap;
use crate::store::{PageRequest, SharedPage};

/// Change stripes; more stripes mean fewer fills turned away under writes.
const STRIPES: usize = 4096;

pub(super) struct ExactCache<V> {
    inner: Mutex<Inner<V>>,
    /// Entries a generation holds at most (half the cache's).
    generation_size: usize,
}

struct Inner<V> {
    values: IdMap<V>,
    /// The generation before `values`.
    older: IdMap<V>,
    /// Counts changes (of one id, or of all).
    changes: u64,
    /// For each stripe, the value of `changes` at its last change.
    changed_at: Box<[u64; STRIPES]>,
}

/// Where the cache stood before a read began; taken outside the read's
/// transaction, since its snapshot is fixed at its first statement.
#[derive(Debug, Clone, Copy)]
pub(super) struct BeforeRead(u64);

fn stripe(id: i64) -> usize {
    id.rem_euclid(STRIPES as i64) as usize
}

impl<V: Clone> ExactCache<V> {
    pub fn new(max_entries: usize) -> Self {
        ExactCache {
            inner: Mutex::new(Inner {
                values: IdMap::default(),
                older: IdMap::default(),
                changes: 0,
                changed_at: Box::new([0; STRIPES]),
            }),
            generation_size: (max_entries / 2).max(1),
        }
    }

    pub fn before_read(&self) -> BeforeRead {
        BeforeRead(self.lock().changes)
    }

    pub fn get(&self, id: i64) -> Option<V> {
        let mut dropped = Vec::new();
        let found = self.lock().lookup(id, self.generation_size, &mut dropped);
        // A generation dropped by a move is freed after the lock is
        // released (freeing a full cache of pages under the lock stalled
        // every other reader for milliseconds).
        drop(dropped);
        found
    }

    /// The cached values of `ids`, in their order; `None` where not cached.
    pub fn get_many(&self, ids: &[i64]) -> Vec<Option<V>> {
        let mut dropped = Vec::new();
        let mut inner = self.lock();
        let found = ids
            .iter()
            .map(|&id| inner.lookup(id, self.generation_size, &mut dropped))
            .collect();
        drop(inner);
        drop(dropped);
        found
    }

    /// Keeps values read in a transaction that began after `before`,
    /// unless their id changed since.
    pub fn fill(&self, values: impl IntoIterator<Item = (i64, V)>, before: BeforeRead) {
        let mut dropped = Vec::new();
        let mut inner = self.lock();
        let unchanged = inner.changes == before.0;
        for (id, value) in values {
            // Nothing changed at all is the common case: no stripe to check.
            if unchanged || inner.changed_at[stripe(id)] <= before.0 {
                inner.older.remove(&id);
                dropped.extend(inner.insert(id, value, self.generation_size));
            }
        }
        drop(inner);
        drop(dropped);
    }

    /// Drops the value of `id` that is no longer wanted (it did not change:
    /// reads that began earlier may still fill it).
    pub fn forget(&self, id: i64) {
        self.lock().remove(id);
    }

    /// After a commit that changed (or may have changed) the value of `id`.
    pub fn changed(&self, id: i64) {
        let mut inner = self.lock();
        inner.changes += 1;
        let now = inner.changes;
        inner.changed_at[stripe(id)] = now;
        inner.remove(id);
    }

    /// After a commit that may have changed any value.
    pub fn all_changed(&self) {
        let mut inner = self.lock();
        inner.changes += 1;
        let now = inner.changes;
        inner.changed_at.fill(now);
        inner.values.clear();
        inner.older.clear();
    }

    fn lock(&self) -> MutexGuard<'_, Inner<V>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<V: Clone> Inner<V> {
    /// The value of `id`, moved back to the newer generation if it was in
    /// the older one; a generation that move drops goes to `dropped`.
    fn lookup(
        &mut self,
        id: i64,
        generation_size: usize,
        dropped: &mut Vec<IdMap<V>>,
    ) -> Option<V> {
        if let Some(value) = self.values.get(&id) {
            return Some(value.clone());
        }
        let value = self.older.remove(&id)?;
        dropped.extend(self.insert(id, value.clone(), generation_size));
        Some(value)
    }
}

impl<V> Inner<V> {
    /// Puts `value` in the newer generation; when that is full it becomes
    /// the older one first, and the older one is returned, to be dropped.
    fn insert(&mut self, id: i64, value: V, generation_size: usize) -> Option<IdMap<V>> {
        let dropped = (self.values.len() >= generation_size && !self.values.contains_key(&id))
            .then(|| std::mem::replace(&mut self.older, std::mem::take(&mut self.values)));
        self.values.insert(id, value);
        dropped
    }

    fn remove(&mut self, id: i64) {
        self.values.remove(&id);
        self.older.remove(&id);
    }
}

/// A user's newest page of a list (no `before`) as cached, with the
/// `limit` it was read with: a request with another limit reads its own.
pub(super) struct NewestPage<T> {
    limit: u32,
    page: Arc<SharedPage<T>>,
}

impl<T> Clone for NewestPage<T> {
    fn clone(&self) -> Self {
        NewestPage {
            limit: self.limit,
            page: self.page.clone(),
        }
    }
}

/// Each user's newest page of one list, by user id.
pub(super) type NewestPages<T> = ExactCache<NewestPage<T>>;

impl<T> ExactCache<NewestPage<T>> {
    /// The cached page of `user` that answers `request`, if any.
    pub fn newest(&self, user: i64, request: PageRequest) -> Option<Arc<SharedPage<T>>> {
        if request.before.is_some() {
            return None;
        }
        let cached = self.get(user)?;
        (cached.limit == request.limit).then_some(cached.page)
    }

    /// Keeps `page`, read for `request` after `before`, if it is the newest.
    pub fn keep_newest(
        &self,
        user: i64,
        request: PageRequest,
        page: &Arc<SharedPage<T>>,
        before: BeforeRead,
    ) {
        if request.before.is_none() {
            let cached = NewestPage {
                limit: request.limit,
                page: page.clone(),
            };
            self.fill([(user, cached)], before);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1_000;

    /// Upvotes by post id, say.
    fn cache() -> ExactCache<i64> {
        ExactCache::new(MAX)
    }

    #[test]
    fn a_filled_value_is_served_until_it_changes() {
        let votes = cache();
        let before = votes.before_read();
        votes.fill([(1, 0), (2, 0)], before);
        assert_eq!(votes.get(1), Some(0));
        votes.changed(1);
        assert_eq!(votes.get(1), None);
        assert_eq!(votes.get(2), Some(0), "another id's value stays");
        assert_eq!(votes.get_many(&[2, 1]), vec![Some(0), None]);
    }

    #[test]
    fn a_read_that_began_before_a_change_does_not_fill_that_id() {
        let votes = cache();
        let before = votes.before_read();
        // A vote on post 1 commits while the read is under way.
        votes.changed(1);
        votes.fill([(1, 0), (2, 0)], before);
        assert_eq!(votes.get(1), None, "the read may predate the vote");
        assert_eq!(votes.get(2), Some(0), "post 2 did not change");
        // A read that began after the change fills it.
        let after = votes.before_read();
        votes.fill([(1, 1)], after);
        assert_eq!(votes.get(1), Some(1));
    }

    #[test]
    fn a_change_to_all_empties_the_cache_and_refuses_older_reads() {
        let votes = cache();
        let before = votes.before_read();
        votes.fill([(1, 0)], before);
        votes.all_changed();
        assert_eq!(votes.get(1), None);
        votes.fill([(2, 0)], before);
        assert_eq!(votes.get(2), None);
    }

    #[test]
    fn a_forgotten_value_goes_without_turning_reads_away() {
        let votes = cache();
        let before = votes.before_read();
        votes.fill([(1, 0)], before);
        votes.forget(1);
        assert_eq!(votes.get(1), None);
        votes.fill([(1, 0)], before);
        assert_eq!(votes.get(1), Some(0));
    }

    #[test]
    fn a_full_generation_turns_over_and_keeps_what_is_read() {
        let votes = cache();
        let before = votes.before_read();
        let half = MAX as i64 / 2;
        votes.fill((1..=half).map(|id| (id, 0)), before);
        // Id 1 is read while the first generation is the newer one...
        assert_eq!(votes.get(1), Some(0));
        // ...and after it became the older one, which moves it back.
        votes.fill([(half + 1, 0)], before);
        assert_eq!(votes.lock().older.len(), half as usize);
        assert_eq!(votes.get(1), Some(0));
        assert_eq!(votes.get(2), Some(0), "the older generation still answers");
        // The next turnover drops what was not read since.
        votes.fill((half + 2..=2 * half + 2).map(|id| (id, 0)), before);
        assert_eq!(votes.get(3), None);
        assert_eq!(votes.get(1), Some(0));
        let inner = votes.lock();
        let held = inner.values.len() + inner.older.len();
        assert!(held <= MAX, "{held} entries held");
    }

    #[test]
    fn a_change_reaches_a_value_in_the_older_generation() {
        let votes = cache();
        let before = votes.before_read();
        votes.fill((1..=MAX as i64 / 2 + 1).map(|id| (id, 0)), before);
        assert!(votes.lock().older.contains_key(&2));
        votes.changed(2);
        assert_eq!(votes.get(2), None);
        votes.forget(3);
        assert_eq!(votes.get(3), None);
        votes.all_changed();
        assert_eq!(votes.get(4), None);
    }
}
