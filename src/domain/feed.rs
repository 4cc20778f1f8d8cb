//! The For You mix: 12 followed, 12 global, 6 archive; shortfalls filled by the others.

use crate::store::{
    UnixSeconds,
    posts::{FeedCandidates, FeedQuery},
};

pub const PAGE: usize = 30;
pub const FOLLOWED_SHARE: usize = 12;
pub const GLOBAL_SHARE: usize = 12;
pub const ARCHIVE_SHARE: usize = 6;

/// The global list draws from at most this many newest posts...
pub const WINDOW_POSTS: usize = 1_000;
/// ...none older than this.
pub const WINDOW_SECS: i64 = 7 * 24 * 3600;

/// What the For You page of `viewer` reads at `now`: a full page of
/// followed and global posts, so that short shares can be filled (a store
/// may read only the shares when the page needs no more); archive draws
/// (random seeks) only as many as needed.
pub fn query(viewer: i64, now: UnixSeconds) -> FeedQuery {
    FeedQuery {
        viewer,
        followed: PAGE,
        followed_share: FOLLOWED_SHARE,
        global: PAGE,
        global_share: GLOBAL_SHARE,
        archive: ARCHIVE_SHARE,
        page: PAGE,
        window_posts: WINDOW_POSTS as i64,
        window_start: now - WINDOW_SECS,
    }
}

/// Picks up to 30 distinct post ids, each share first, then fills from what
/// is left of every list; returns them newest first. Only the chosen posts
/// are then read, so candidates are ids.
pub fn mix(candidates: FeedCandidates) -> Vec<i64> {
    let lists = [
        (candidates.followed, FOLLOWED_SHARE),
        (candidates.global, GLOBAL_SHARE),
        (candidates.archive, ARCHIVE_SHARE),
    ];
    let mut chosen: Vec<i64> = Vec::with_capacity(PAGE);
    let mut leftovers: Vec<i64> = Vec::new();
    for (list, share) in lists {
        let mut taken = 0;
        for id in list {
            if chosen.contains(&id) {
                continue;
            }
            if taken < share {
                chosen.push(id);
                taken += 1;
            } else {
                leftovers.push(id);
            }
        }
    }
    for id in leftovers {
        if chosen.len() >= PAGE {
            break;
        }
        if !chosen.contains(&id) {
            chosen.push(id);
        }
    }
    chosen.truncate(PAGE);
    chosen.sort_unstable_by(|a, b| b.cmp(a));
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(range: std::ops::Range<i64>) -> Vec<i64> {
        range.collect()
    }

    #[test]
    fn shares_are_40_40_20_when_all_lists_are_long() {
        let feed = mix(FeedCandidates {
            followed: ids(100..130),
            global: ids(200..230),
            archive: ids(1..31),
        });
        assert_eq!(feed.len(), 30);
        assert_eq!(
            feed.iter().filter(|&&id| (100..200).contains(&id)).count(),
            12
        );
        assert_eq!(feed.iter().filter(|&&id| id < 100).count(), 6);
        assert!(feed.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn short_shares_are_filled_by_the_others() {
        let feed = mix(FeedCandidates {
            followed: vec![],
            global: ids(200..240),
            archive: vec![],
        });
        assert_eq!(feed.len(), 30);
    }

    #[test]
    fn a_post_in_two_lists_is_chosen_once() {
        let feed = mix(FeedCandidates {
            followed: vec![5, 4],
            global: vec![5, 3],
            archive: vec![4],
        });
        assert_eq!(feed, vec![5, 4, 3]);
    }
}
