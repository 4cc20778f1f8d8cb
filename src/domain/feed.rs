//! The For You mix: 12 followed, 12 global, 6 archive; shortfalls filled by the others.

use crate::store::posts::{FeedCandidates, Post};

pub const PAGE: usize = 30;
pub const FOLLOWED_SHARE: usize = 12;
pub const GLOBAL_SHARE: usize = 12;
pub const ARCHIVE_SHARE: usize = 6;

/// Picks up to 30 distinct posts, each share first, then fills from what is
/// left of every list; returns them newest first.
pub fn mix(candidates: FeedCandidates) -> Vec<Post> {
    let lists = [
        (candidates.followed, FOLLOWED_SHARE),
        (candidates.global, GLOBAL_SHARE),
        (candidates.archive, ARCHIVE_SHARE),
    ];
    let mut chosen: Vec<Post> = Vec::with_capacity(PAGE);
    let mut leftovers: Vec<Post> = Vec::new();
    for (list, share) in lists {
        let mut taken = 0;
        for post in list {
            if chosen.iter().any(|p| p.id == post.id) {
                continue;
            }
            if taken < share {
                chosen.push(post);
                taken += 1;
            } else {
                leftovers.push(post);
            }
        }
    }
    for post in leftovers {
        if chosen.len() >= PAGE {
            break;
        }
        if !chosen.iter().any(|p| p.id == post.id) {
            chosen.push(post);
        }
    }
    chosen.truncate(PAGE);
    chosen.sort_by_key(|p| std::cmp::Reverse(p.id));
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posts(ids: std::ops::Range<i64>) -> Vec<Post> {
        ids.map(|id| Post {
            id,
            username: "u".into(),
            content: String::new(),
            created_at: 0,
            upvotes: 0,
            downvotes: 0,
            replies: 0,
        })
        .collect()
    }

    #[test]
    fn shares_are_40_40_20_when_all_lists_are_long() {
        let feed = mix(FeedCandidates {
            followed: posts(100..130),
            global: posts(200..230),
            archive: posts(1..31),
        });
        assert_eq!(feed.len(), 30);
        assert_eq!(
            feed.iter().filter(|p| p.id >= 100 && p.id < 200).count(),
            12
        );
        assert_eq!(feed.iter().filter(|p| p.id < 100).count(), 6);
        assert!(feed.windows(2).all(|w| w[0].id > w[1].id));
    }

    #[test]
    fn short_shares_are_filled_by_the_others() {
        let feed = mix(FeedCandidates {
            followed: vec![],
            global: posts(200..240),
            archive: vec![],
        });
        assert_eq!(feed.len(), 30);
    }
}
