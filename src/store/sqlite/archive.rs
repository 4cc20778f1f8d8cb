//! The feed's archive share, drawn from a sample of old posts kept in memory.
//!
//! An archive post is a random post older than the global window. Each
//! draw used to be a random seek into the posts table, and at a million
//! posts every one of them landed on a page outside SQLite's cache: six or
//! seven such seeks were 30% of the feed's CPU. Instead the store keeps a
//! sample of up to [`SAMPLE_SIZE`] old posts; each feed draws its share
//! from the sample, and every [`SEEK_EVERY`]th feed replaces one entry with
//! a fresh random seek, so the sample keeps turning over with the traffic
//! (the whole of it every `SAMPLE_SIZE * SEEK_EVERY` feeds), but not more
//! often than every [`SEEK_GAP`], so under heavy traffic the sample turns
//! over in time rather than in feeds (every half second or so). Until the
//! sample is full, a feed makes as many seeks as it draws posts, as before.

use std::{
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use rand::Rng;
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    exact_cache::{BeforeRead, ExactCache},
    posts::{PostRow, post_row_columns},
};
use crate::store::StoreResult;

/// Old posts kept in the sample.
pub(super) const SAMPLE_SIZE: usize = 512;

/// Once the sample is full, one feed in this many makes a seek. The one
/// seek per feed was still a sixth of the feed's CPU (a cold page, read
/// and parsed); one in eight turns the sample over every 4,096 feeds, a
/// tenth of a second at the bench's feed rate.
pub(super) const SEEK_EVERY: usize = 8;

/// Once the sample is full, seeks are at least this far apart: at the
/// bench's 40,000-50,000 feeds a second one in eight was still 5,000 seeks
/// a second and a tenth of the feed's CPU (pairs at 64 connections: one
/// seek in 40 feeds gave 1.05 / 1.09 / 1.09 / 0.95 and 1.01 / 1.05 / 1.05
/// times the feeds, at 0.94 of the CPU; this gap 1.04 / 1.03 / 1.04 / 1.07
/// and 1.04 / 1.05 / 1.05, at 0.91-0.96).
pub(super) const SEEK_GAP: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    id: i64,
    author: i64,
}

pub(super) struct ArchiveSample {
    entries: Mutex<Vec<Entry>>,
    /// Draws from the full sample so far, to seek on every `SEEK_EVERY`th.
    full_draws: AtomicUsize,
    /// When the last seek into a full sample was, in microseconds since `started`.
    last_seek_micros: AtomicU64,
    started: Instant,
    seek_gap: Duration,
}

impl Default for ArchiveSample {
    fn default() -> Self {
        Self::with_seek_gap(SEEK_GAP)
    }
}

/// Who the archive posts are for and what they must not repeat.
pub(super) struct Draw<'a> {
    pub viewer: i64,
    /// Archive posts have ids below this (the oldest post in the window).
    pub below: i64,
    /// Posts already on the page.
    pub exclude: &'a [i64],
    pub wanted: usize,
}

impl ArchiveSample {
    fn with_seek_gap(seek_gap: Duration) -> Self {
        ArchiveSample {
            entries: Mutex::default(),
            full_draws: AtomicUsize::new(0),
            last_seek_micros: AtomicU64::new(0),
            started: Instant::now(),
            seek_gap,
        }
    }

    /// Up to `draw.wanted` distinct archive posts, none by the viewer nor
    /// in `draw.exclude`. The rows the seeks read go into `rows`, where
    /// the feed then finds them.
    pub fn draw(
        &self,
        conn: &Connection,
        draw: &Draw,
        rows: &ExactCache<PostRow>,
        before: BeforeRead,
    ) -> StoreResult<Vec<i64>> {
        if draw.below <= 1 || draw.wanted == 0 {
            return Ok(Vec::new());
        }
        let seeks = if self.lock().len() < SAMPLE_SIZE {
            draw.wanted * 3
        } else {
            usize::from(self.seek_due())
        };
        if seeks == 0 {
            return Ok(pick(&self.lock(), draw));
        }
        let mut found = Vec::with_capacity(seeks);
        let mut seek = conn.prepare_cached(concat!(
            "SELECT ",
            post_row_columns!(),
            " WHERE p.id >= ?1 AND p.id < ?2 ORDER BY p.id LIMIT 1"
        ))?;
        for _ in 0..seeks {
            let start = rand::random_range(1..draw.below);
            let row = seek
                .query_row(params![start, draw.below], PostRow::read)
                .optional()?;
            found.extend(row);
        }
        let entries: Vec<Entry> = found
            .iter()
            .map(|row| Entry {
                id: row.post.id,
                author: row.author,
            })
            .collect();
        rows.fill(found.into_iter().map(|row| (row.post.id, row)), before);
        let (picked, replaced) = {
            let mut sample = self.lock();
            let replaced: Vec<Entry> = entries
                .into_iter()
                .filter_map(|entry| add(&mut sample, entry))
                .collect();
            (pick(&sample, draw), replaced)
        };
        // A post that left the sample is seldom read again: its row would
        // only take the place of the feed's hot posts in the cache.
        for entry in replaced {
            if !picked.contains(&entry.id) {
                rows.forget(entry.id);
            }
        }
        Ok(picked)
    }

    /// On every `SEEK_EVERY`th draw from the full sample, unless the last
    /// seek was less than `seek_gap` ago; a due seek is claimed by one draw.
    fn seek_due(&self) -> bool {
        let draw = self.full_draws.fetch_add(1, Ordering::Relaxed);
        if !draw.is_multiple_of(SEEK_EVERY) {
            return false;
        }
        let now = self.started.elapsed().as_micros() as u64;
        let last = self.last_seek_micros.load(Ordering::Relaxed);
        now.saturating_sub(last) >= self.seek_gap.as_micros() as u64
            && self
                .last_seek_micros
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// After posts were deleted: the sample starts over.
    pub fn forget_all(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Adds `entry` unless present; once the sample is full, in the place of
/// a random entry, which it returns.
fn add(sample: &mut Vec<Entry>, entry: Entry) -> Option<Entry> {
    if sample.contains(&entry) {
        return None;
    }
    if sample.len() < SAMPLE_SIZE {
        sample.push(entry);
        None
    } else {
        let slot = rand::random_range(0..sample.len());
        Some(std::mem::replace(&mut sample[slot], entry))
    }
}

/// `draw.wanted` distinct eligible ids from the sample, at random.
fn pick(sample: &[Entry], draw: &Draw) -> Vec<i64> {
    let eligible =
        |e: &Entry| e.id < draw.below && e.author != draw.viewer && !draw.exclude.contains(&e.id);
    let mut picked: Vec<i64> = Vec::with_capacity(draw.wanted);
    let mut rng = rand::rng();
    // Random tries first: with a full sample nearly every entry qualifies.
    for _ in 0..draw.wanted * 4 {
        if picked.len() >= draw.wanted || sample.is_empty() {
            return picked;
        }
        let entry = sample[rng.random_range(0..sample.len())];
        if eligible(&entry) && !picked.contains(&entry.id) {
            picked.push(entry.id);
        }
    }
    // Few qualify: take them in a random order.
    let mut rest: Vec<i64> = sample
        .iter()
        .filter(|e| eligible(e) && !picked.contains(&e.id))
        .map(|e| e.id)
        .collect();
    while picked.len() < draw.wanted && !rest.is_empty() {
        picked.push(rest.swap_remove(rng.random_range(0..rest.len())));
    }
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` posts: odd ids by author 2, even ids by author 1.
    fn db(n: i64) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER, content TEXT,
                 created_at INTEGER);
             CREATE TABLE post_counts (user_id INTEGER, post_id INTEGER, upvotes INTEGER,
                 downvotes INTEGER, replies INTEGER, PRIMARY KEY (user_id, post_id));",
        )
        .unwrap();
        for id in 1..=n {
            conn.execute(
                "INSERT INTO posts VALUES (?1, ?2, 'x', 0)",
                params![id, 1 + id % 2],
            )
            .unwrap();
        }
        conn
    }

    fn draw_for(sample: &ArchiveSample, conn: &Connection, d: &Draw) -> Vec<i64> {
        let rows: ExactCache<PostRow> = ExactCache::new(1 << 24, 1_000);
        let before = rows.before_read();
        sample.draw(conn, d, &rows, before).unwrap()
    }

    #[test]
    fn draws_distinct_old_posts_not_by_the_viewer_nor_on_the_page() {
        let conn = db(2_000);
        let sample = ArchiveSample::with_seek_gap(Duration::ZERO);
        let d = Draw {
            viewer: 2,
            below: 1_500,
            exclude: &[2, 4, 6],
            wanted: 6,
        };
        // Until the sample is full, a draw may find fewer than it wants
        // (half the seeks find the viewer's own posts).
        while sample.lock().len() < SAMPLE_SIZE {
            draw_for(&sample, &conn, &d);
        }
        for _ in 0..200 {
            let ids = draw_for(&sample, &conn, &d);
            assert_eq!(ids.len(), 6, "{ids:?}");
            let mut distinct = ids.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), 6, "{ids:?}");
            for id in ids {
                assert!(
                    id < 1_500 && id % 2 == 0 && ![2, 4, 6].contains(&id),
                    "{id}"
                );
            }
        }
    }

    /// Six posts below 18,000 for a viewer who wrote none.
    const ANYONE_BELOW_18000: Draw<'static> = Draw {
        viewer: 0,
        below: 18_000,
        exclude: &[],
        wanted: 6,
    };

    /// A sample filled by drawing `d` until full.
    fn full_sample(conn: &Connection, d: &Draw) -> ArchiveSample {
        let sample = ArchiveSample::with_seek_gap(Duration::ZERO);
        while sample.lock().len() < SAMPLE_SIZE {
            draw_for(&sample, conn, d);
        }
        sample
    }

    #[test]
    fn a_full_sample_keeps_turning_over() {
        let (conn, d) = (db(20_000), ANYONE_BELOW_18000);
        let sample = full_sample(&conn, &d);
        let first: Vec<Entry> = sample.lock().clone();
        for _ in 0..SAMPLE_SIZE * SEEK_EVERY * 4 {
            draw_for(&sample, &conn, &d);
        }
        let kept = sample.lock().iter().filter(|e| first.contains(e)).count();
        // Each entry survives 2,048 random replacements with p = e^-4.
        assert!(
            kept < SAMPLE_SIZE / 10,
            "{kept} of {SAMPLE_SIZE} never replaced"
        );
    }

    #[test]
    fn a_full_sample_seeks_on_one_draw_in_seek_every() {
        let (conn, d) = (db(20_000), ANYONE_BELOW_18000);
        let sample = full_sample(&conn, &d);
        let first: Vec<Entry> = sample.lock().clone();
        let draws: usize = 80;
        for _ in 0..draws {
            assert_eq!(draw_for(&sample, &conn, &d).len(), 6);
        }
        let seeks = draws.div_ceil(SEEK_EVERY);
        // Each seek replaces at most one entry (none if it found one already there).
        let replaced = sample.lock().iter().filter(|e| !first.contains(e)).count();
        assert!(
            (1..=seeks).contains(&replaced),
            "{replaced} entries replaced in {seeks} seeks"
        );
    }

    #[test]
    fn a_full_sample_seeks_at_most_once_per_gap() {
        let (conn, d) = (db(20_000), ANYONE_BELOW_18000);
        let mut sample = full_sample(&conn, &d);
        sample.seek_gap = Duration::from_secs(3600);
        sample.last_seek_micros = AtomicU64::new(sample.started.elapsed().as_micros() as u64);
        let first: Vec<Entry> = sample.lock().clone();
        for _ in 0..SEEK_EVERY * 10 {
            assert_eq!(draw_for(&sample, &conn, &d).len(), 6);
        }
        assert_eq!(*sample.lock(), first, "a seek within the gap");
        sample.seek_gap = Duration::ZERO;
        for _ in 0..SEEK_EVERY * 10 {
            draw_for(&sample, &conn, &d);
        }
        assert_ne!(*sample.lock(), first, "no seek once the gap was over");
    }

    #[test]
    fn a_small_archive_gives_what_it_has() {
        let conn = db(5);
        let sample = ArchiveSample::with_seek_gap(Duration::ZERO);
        let d = Draw {
            viewer: 2,
            below: 5,
            exclude: &[],
            wanted: 6,
        };
        // Each draw seeks 18 times until the sample is full: after ten,
        // every one of the four old posts has been found.
        let mut ids = Vec::new();
        for _ in 0..10 {
            ids = draw_for(&sample, &conn, &d);
        }
        ids.sort_unstable();
        // Ids 1..4, of which the viewer (author 2) wrote 1 and 3.
        assert_eq!(ids, vec![2, 4]);
        assert!(draw_for(&sample, &conn, &Draw { below: 1, ..d }).is_empty());
    }

    #[test]
    fn a_post_that_leaves_the_sample_leaves_the_post_rows() {
        let conn = db(20_000);
        let sample = ArchiveSample::with_seek_gap(Duration::ZERO);
        let rows: ExactCache<PostRow> = ExactCache::new(1 << 30, 100_000);
        let d = ANYONE_BELOW_18000;
        for _ in 0..SAMPLE_SIZE * SEEK_EVERY * 4 {
            let before = rows.before_read();
            sample.draw(&conn, &d, &rows, before).unwrap();
        }
        let in_sample = sample.lock().len();
        let cached = (1..18_000).filter(|&id| rows.get(id).is_some()).count();
        // The sample's rows, and at most the last draw's picks beside them.
        assert!(
            cached <= in_sample + 6,
            "{cached} rows cached for {in_sample} in the sample"
        );
        assert!(sample.lock().iter().all(|e| rows.get(e.id).is_some()));
    }

    #[test]
    fn the_seeks_fill_the_post_rows() {
        let conn = db(50);
        let sample = ArchiveSample::with_seek_gap(Duration::ZERO);
        let rows: ExactCache<PostRow> = ExactCache::new(1 << 24, 1_000);
        let before = rows.before_read();
        let d = Draw {
            viewer: 0,
            below: 40,
            exclude: &[],
            wanted: 6,
        };
        let ids = sample.draw(&conn, &d, &rows, before).unwrap();
        assert!(ids.iter().all(|&id| rows.get(id).is_some()));
    }
}
