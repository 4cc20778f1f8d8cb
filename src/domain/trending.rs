//! Trending hashtags: counts kept in memory over a sliding window, so the
//! feed reads the top tags without grouping a day of tag rows per request.
//!
//! The counts are seeded from the store at start, and every post this node
//! creates is recorded as it is acknowledged. Posts made on other nodes are
//! picked up when the counts are rebuilt from the store (see `app`).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use crate::store::{UnixSeconds, posts::TagUse};

/// Trending topics count the posts of the last 24 hours.
pub const WINDOW_SECS: i64 = 24 * 3600;

#[derive(Debug, Clone, Copy, Default)]
struct TagTotal {
    /// Distinct posts in the window that use the tag.
    posts: u64,
    /// The newest post ever seen with the tag: while the tag has any post
    /// in the window, that newest one is in it too.
    last_post_id: i64,
}

/// Uses in one second: each tag once, with its number of posts, so memory
/// is bounded by the distinct tags per second, not by the post rate.
type Bucket = Vec<(Arc<str>, u64)>;

#[derive(Debug, Default)]
struct Counts {
    /// Oldest first; the window drops whole seconds.
    seconds: VecDeque<(UnixSeconds, Bucket)>,
    totals: HashMap<Arc<str>, TagTotal>,
    /// The ranking as of the last change, computed on the first read after it.
    ranking: Option<Vec<String>>,
}

/// The sliding-window counter. One per node, shared by every request.
#[derive(Debug)]
pub struct Trending {
    window_secs: i64,
    counts: Mutex<Counts>,
}

impl Trending {
    pub fn new(window_secs: i64) -> Self {
        Trending {
            window_secs,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Replaces the counts with `uses` (any order), e.g. read from the store.
    pub fn reset(&self, mut uses: Vec<TagUse>) {
        uses.sort_by_key(|u| (u.created_at, u.post_id));
        let mut fresh = Counts::default();
        for u in uses {
            fresh.add(u.post_id, u.created_at, std::slice::from_ref(&u.tag));
        }
        *self.lock() = fresh;
    }

    /// Counts a post's (distinct) tags.
    pub fn record(&self, post_id: i64, created_at: UnixSeconds, tags: &[String]) {
        if !tags.is_empty() {
            self.lock().add(post_id, created_at, tags);
        }
    }

    /// The `limit` tags used by the most distinct posts in the window ending
    /// at `now`; ties go to the tag used most recently.
    pub fn top(&self, now: UnixSeconds, limit: usize) -> Vec<String> {
        let mut guard = self.lock();
        let counts = &mut *guard;
        counts.expire_before(now - self.window_secs);
        let totals = &counts.totals;
        let ranking = counts.ranking.get_or_insert_with(|| {
            let mut ranked: Vec<(&Arc<str>, &TagTotal)> = totals.iter().collect();
            let first = |a: &(&Arc<str>, &TagTotal), b: &(&Arc<str>, &TagTotal)| {
                (b.1.posts, b.1.last_post_id).cmp(&(a.1.posts, a.1.last_post_id))
            };
            // Linear in the distinct tags: only the kept few are sorted.
            if ranked.len() > RANKING_KEPT {
                ranked.select_nth_unstable_by(RANKING_KEPT, first);
                ranked.truncate(RANKING_KEPT);
            }
            ranked.sort_unstable_by(first);
            ranked.into_iter().map(|(tag, _)| tag.to_string()).collect()
        });
        ranking.iter().take(limit).cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent after any panic: every update is a few
        // plain field changes.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How many of the top tags a ranking keeps (the feed shows 3).
const RANKING_KEPT: usize = 10;

impl Counts {
    fn add(&mut self, post_id: i64, created_at: UnixSeconds, tags: &[String]) {
        // Posts are acknowledged in roughly time order; one a second late
        // joins the newest bucket and so leaves the window a second late.
        if !matches!(self.seconds.back(), Some((second, _)) if *second >= created_at) {
            self.seconds.push_back((created_at, Bucket::new()));
        }
        let (_, bucket) = self.seconds.back_mut().expect("just ensured");
        for tag in tags {
            let key = match self.totals.get_key_value(tag.as_str()) {
                Some((key, _)) => key.clone(),
                None => Arc::from(tag.as_str()),
            };
            let total = self.totals.entry(key.clone()).or_default();
            total.posts += 1;
            total.last_post_id = total.last_post_id.max(post_id);
            match bucket.iter_mut().find(|(t, _)| Arc::ptr_eq(t, &key)) {
                Some((_, n)) => *n += 1,
                None => bucket.push((key, 1)),
            }
        }
        self.ranking = None;
    }

    fn expire_before(&mut self, start: UnixSeconds) {
        while let Some((second, _)) = self.seconds.front() {
            if *second >= start {
                break;
            }
            let (_, bucket) = self.seconds.pop_front().expect("front exists");
            for (tag, n) in bucket {
                if let Some(total) = self.totals.get_mut(&tag) {
                    total.posts -= n;
                    if total.posts == 0 {
                        self.totals.remove(&tag);
                    }
                }
            }
            self.ranking = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn ranks_by_distinct_posts_then_most_recent_use() {
        let t = Trending::new(100);
        t.record(1, 10, &tags(&["rust", "tea"]));
        t.record(2, 11, &tags(&["rust"]));
        t.record(3, 12, &tags(&["solo"]));
        t.record(4, 12, &tags(&["tea"]));
        // rust 2 (last 2), tea 2 (last 4), solo 1.
        assert_eq!(t.top(20, 3), tags(&["tea", "rust", "solo"]));
        assert_eq!(t.top(20, 1), tags(&["tea"]));
    }

    #[test]
    fn uses_leave_the_window_after_its_length() {
        let t = Trending::new(100);
        t.record(1, 10, &tags(&["old", "both"]));
        t.record(2, 50, &tags(&["both"]));
        t.record(3, 60, &tags(&["new"]));
        assert_eq!(t.top(110, 3), tags(&["both", "new", "old"]));
        // At 111 the window starts at 11: post 1 is out.
        assert_eq!(t.top(111, 3), tags(&["new", "both"]));
        assert_eq!(t.top(161, 3), Vec::<String>::new());
    }

    #[test]
    fn keeps_the_top_of_many_tags() {
        let t = Trending::new(100);
        // Tag n is used by n posts: the top is the highest n.
        let mut post = 0;
        for n in 1..=40 {
            for _ in 0..n {
                post += 1;
                t.record(post, 10, &tags(&[&format!("t{n}")]));
            }
        }
        assert_eq!(t.top(20, 3), tags(&["t40", "t39", "t38"]));
    }

    #[test]
    fn reset_replaces_the_counts() {
        let t = Trending::new(100);
        t.record(1, 10, &tags(&["gone"]));
        t.reset(vec![
            TagUse {
                post_id: 7,
                created_at: 30,
                tag: "b".into(),
            },
            TagUse {
                post_id: 5,
                created_at: 20,
                tag: "a".into(),
            },
            TagUse {
                post_id: 6,
                created_at: 25,
                tag: "a".into(),
            },
        ]);
        assert_eq!(t.top(40, 3), tags(&["a", "b"]));
    }
}
