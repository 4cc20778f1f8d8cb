//! Values by id kept in memory and exact: the store drops an entry after
//! each commit that changed it.
//!
//! Used for posts' rows and follow lists (`post_rows` and `follows` in the
//! SQLite store). A read may have begun before such a commit and so hold
//! what it replaced; as with the user cards, such a read does not fill the
//! cache. Each id maps to a stripe that remembers the last change in it,
//! so that a change to one id turns away only the fills of its stripe.
//!
//! Values are bounded by their weight (roughly their bytes, see `Weigh`)
//! and evicted one at a time by quick_cache's S3-FIFO policy: what is read
//! often stays, and a burst of values read once does not push it out.
//! Bounding bytes rather than entries keeps memory predictable whatever
//! the values' sizes (a page of 50 posts and a follow list of 3 ids).

use std::sync::{Arc, Mutex, MutexGuard};

use quick_cache::Weighter;

use crate::store::{PageRequest, SharedPage};

/// Change stripes; more stripes mean fewer fills turned away under writes.
const STRIPES: usize = 4096;

/// A value's weight in a cache: about the bytes it keeps alive. It must
/// not change while the value is cached (quick_cache asks again when it
/// evicts), so it follows only from what a cached value never changes.
pub(super) trait Weigh {
    fn weigh(&self) -> u64;
}

/// A follow list: its ids.
impl Weigh for Arc<[i64]> {
    fn weigh(&self) -> u64 {
        (self.len() * 8 + 32) as u64
    }
}

#[derive(Clone)]
struct ByWeight;

impl<V: Weigh> Weighter<i64, V> for ByWeight {
    fn weight(&self, _id: &i64, value: &V) -> u64 {
        value.weigh()
    }
}

/// Ids are given by the database, so the fast hasher is safe (see `IdMap`).
type Values<V> = quick_cache::unsync::Cache<i64, V, ByWeight, foldhash::fast::RandomState>;

pub(super) struct ExactCache<V> {
    inner: Mutex<Inner<V>>,
}

struct Inner<V> {
    values: Values<V>,
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

impl<V: Clone + Weigh> ExactCache<V> {
    /// A cache of at most `max_weight`, expected to hold about
    /// `expected_entries` values.
    pub fn new(max_weight: u64, expected_entries: usize) -> Self {
        ExactCache {
            inner: Mutex::new(Inner {
                values: Values::with(
                    expected_entries,
                    max_weight,
                    ByWeight,
                    Default::default(),
                    Default::default(),
                ),
                changes: 0,
                changed_at: Box::new([0; STRIPES]),
            }),
        }
    }

    pub fn before_read(&self) -> BeforeRead {
        BeforeRead(self.lock().changes)
    }

    pub fn get(&self, id: i64) -> Option<V> {
        self.lock().values.get(&id).cloned()
    }

    /// The cached values of `ids`, in their order; `None` where not cached.
    pub fn get_many(&self, ids: &[i64]) -> Vec<Option<V>> {
        let inner = self.lock();
        ids.iter().map(|id| inner.values.get(id).cloned()).collect()
    }

    /// Keeps values read in a transaction that began after `before`,
    /// unless their id changed since.
    pub fn fill(&self, values: impl IntoIterator<Item = (i64, V)>, before: BeforeRead) {
        let mut inner = self.lock();
        let unchanged = inner.changes == before.0;
        for (id, value) in values {
            // Nothing changed at all is the common case: no stripe to check.
            if unchanged || inner.changed_at[stripe(id)] <= before.0 {
                inner.values.insert(id, value);
            }
        }
    }

    /// Drops the value of `id` that is no longer wanted (it did not change:
    /// reads that began earlier may still fill it).
    pub fn forget(&self, id: i64) {
        self.lock().values.remove(&id);
    }

    /// After a commit that changed (or may have changed) the value of `id`.
    pub fn changed(&self, id: i64) {
        let mut inner = self.lock();
        inner.changes += 1;
        let now = inner.changes;
        inner.changed_at[stripe(id)] = now;
        inner.values.remove(&id);
    }

    /// After a commit that may have changed any value.
    pub fn all_changed(&self) {
        let mut inner = self.lock();
        inner.changes += 1;
        let now = inner.changes;
        inner.changed_at.fill(now);
        inner.values.clear();
    }

    fn lock(&self) -> MutexGuard<'_, Inner<V>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a user's newest page of a list (no `before`) is kept as, with the
/// `limit` it was read with: a request with another limit reads its own.
#[derive(Clone)]
pub(super) struct Newest<V> {
    limit: u32,
    value: V,
    /// About what the value keeps alive (see `Weigh`).
    weight: u64,
}

impl<V> Weigh for Newest<V> {
    fn weigh(&self) -> u64 {
        self.weight
    }
}

/// Each user's newest page of one list, by user id, shared and rendered
/// once.
pub(super) type NewestPages<T> = ExactCache<Newest<Arc<SharedPage<T>>>>;

/// A page of a list of users as ids: a tenth of its JSON's bytes, so that
/// every user's first page fits where only a tenth of their renderings
/// would. The users' cards turn it into a page.
#[derive(Clone)]
pub(super) struct PageIds {
    pub ids: Arc<[i64]>,
    pub next: Option<i64>,
}

impl PageIds {
    pub fn weight(&self) -> u64 {
        (self.ids.len() * 8 + 64) as u64
    }
}

/// Each user's newest page of a list of users, as ids, by user id.
pub(super) type NewestIds = ExactCache<Newest<PageIds>>;

/// The weight of a page of `items` (about the bytes of its rendering).
pub(super) fn page_weight<T: Weigh>(items: &[T]) -> u64 {
    items.iter().map(Weigh::weigh).sum::<u64>() + 64
}

impl<V: Clone> ExactCache<Newest<V>> {
    /// What is cached of the page of `user` that answers `request`, if any.
    pub fn newest(&self, user: i64, request: PageRequest) -> Option<V> {
        if request.before.is_some() {
            return None;
        }
        let cached = self.get(user)?;
        (cached.limit == request.limit).then_some(cached.value)
    }

    /// Keeps `value` (of `weight`), read for `request` after `before`, if
    /// it is the newest page.
    pub fn keep_newest(
        &self,
        user: i64,
        request: PageRequest,
        value: V,
        weight: u64,
        before: BeforeRead,
    ) {
        if request.before.is_none() {
            let cached = Newest {
                limit: request.limit,
                value,
                weight,
            };
            self.fill([(user, cached)], before);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 1_000;

    /// Upvotes by post id, say: each of weight 1.
    impl Weigh for i64 {
        fn weigh(&self) -> u64 {
            1
        }
    }

    fn cache() -> ExactCache<i64> {
        ExactCache::new(MAX, MAX as usize)
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
    fn a_full_cache_keeps_within_its_weight_and_keeps_what_is_read() {
        let votes = cache();
        let before = votes.before_read();
        votes.fill((1..=MAX as i64).map(|id| (id, 0)), before);
        for _ in 0..3 {
            assert_eq!(votes.get(1), Some(0));
        }
        // Twice as many values again, each read once, pass through.
        votes.fill((MAX as i64 + 1..=3 * MAX as i64).map(|id| (id, 0)), before);
        assert_eq!(votes.get(1), Some(0), "the value read often stays");
        let held = (1..=3 * MAX as i64)
            .filter(|&id| votes.get(id).is_some())
            .count();
        assert!(held as u64 <= MAX, "{held} values held");
        assert!(votes.lock().values.weight() <= MAX);
    }

    #[derive(Clone, Debug, PartialEq)]
    struct Bytes(u64);

    impl Weigh for Bytes {
        fn weigh(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn heavier_values_take_more_of_the_bound() {
        let pages: ExactCache<Bytes> = ExactCache::new(10_000, 10);
        let before = pages.before_read();
        pages.fill((1..=20).map(|id| (id, Bytes(1_000))), before);
        let held = (1..=20).filter(|&id| pages.get(id).is_some()).count();
        assert!((1..=10).contains(&held), "{held} pages of 1,000 held");
        pages.fill((21..=40).map(|id| (id, Bytes(100))), before);
        assert!(pages.lock().values.weight() <= 10_000);
    }

    #[test]
    fn a_change_reaches_every_cached_value() {
        let votes = cache();
        let before = votes.before_read();
        votes.fill((1..=10).map(|id| (id, 0)), before);
        votes.changed(2);
        assert_eq!(votes.get(2), None);
        votes.forget(3);
        assert_eq!(votes.get(3), None);
        assert_eq!(votes.get(4), Some(0));
        votes.all_changed();
        assert_eq!(votes.get(4), None);
    }
}
