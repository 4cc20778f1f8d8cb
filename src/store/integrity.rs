//! What `mirage check` verifies, as SQL that both backends run: every
//! denormalised counter and every reference. The posts' counters are the
//! exception: PostgreSQL keeps them in `posts` (`POST_COUNTERS` here),
//! SQLite in a table of their own (its `check` module).
//!
//! Each check counts from the rows themselves, never from another counter
//! (a user's vote totals are counted from `votes`, not summed from the
//! posts' counters), so one drifted counter cannot hide another.

/// One kind of drift and how many rows show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub what: &'static str,
    pub rows: u64,
}

/// What a check found (before any repair) and whether it repaired it.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Kinds of drift with at least one row.
    pub drift: Vec<Drift>,
    /// `PRAGMA quick_check` problems (corruption: not repairable here).
    pub corruption: Vec<String>,
    pub repaired: bool,
}

impl CheckReport {
    pub fn drifted_rows(&self) -> u64 {
        self.drift.iter().map(|d| d.rows).sum()
    }
}

/// A counter column and the rows it must equal.
pub struct CounterCheck {
    pub what: &'static str,
    /// Counts the rows whose stored value differs from the computed one.
    pub count_sql: &'static str,
}

/// The posts' counters as columns of `posts` (PostgreSQL).
pub const POST_COUNTERS: &[CounterCheck] = &[
    CounterCheck {
        what: "posts.upvotes differs from its up votes",
        count_sql: "SELECT COUNT(*) FROM posts p WHERE p.upvotes !=
                    (SELECT COUNT(*) FROM votes v WHERE v.post_id = p.id AND v.kind = 1)",
    },
    CounterCheck {
        what: "posts.downvotes differs from its down votes",
        count_sql: "SELECT COUNT(*) FROM posts p WHERE p.downvotes !=
                    (SELECT COUNT(*) FROM votes v WHERE v.post_id = p.id AND v.kind = -1)",
    },
    CounterCheck {
        what: "posts.replies differs from its replies",
        count_sql: "SELECT COUNT(*) FROM posts p WHERE p.replies !=
                    (SELECT COUNT(*) FROM replies r WHERE r.post_id = p.id)",
    },
];

/// The users' counters (both backends).
pub const USER_COUNTERS: &[CounterCheck] = &[
    CounterCheck {
        what: "users.followers differs from their followers",
        count_sql: "SELECT COUNT(*) FROM users u WHERE u.followers !=
                    (SELECT COUNT(*) FROM follows f WHERE f.followee_id = u.id)",
    },
    CounterCheck {
        what: "users.following differs from whom they follow",
        count_sql: "SELECT COUNT(*) FROM users u WHERE u.following !=
                    (SELECT COUNT(*) FROM follows f WHERE f.follower_id = u.id)",
    },
    CounterCheck {
        what: "users.posts differs from their posts",
        count_sql: "SELECT COUNT(*) FROM users u WHERE u.posts !=
                    (SELECT COUNT(*) FROM posts p WHERE p.user_id = u.id)",
    },
    CounterCheck {
        what: "users.upvotes differs from the up votes on their posts",
        count_sql: "SELECT COUNT(*) FROM users u WHERE u.upvotes !=
                    (SELECT COUNT(*) FROM votes v JOIN posts p ON p.id = v.post_id
                     WHERE p.user_id = u.id AND v.kind = 1)",
    },
    CounterCheck {
        what: "users.downvotes differs from the down votes on their posts",
        count_sql: "SELECT COUNT(*) FROM users u WHERE u.downvotes !=
                    (SELECT COUNT(*) FROM votes v JOIN posts p ON p.id = v.post_id
                     WHERE p.user_id = u.id AND v.kind = -1)",
    },
    CounterCheck {
        what: "users.last_post_id differs from their newest post",
        count_sql: "SELECT COUNT(*) FROM users u WHERE u.last_post_id !=
                    (SELECT COALESCE(MAX(p.id), 0) FROM posts p WHERE p.user_id = u.id)",
    },
];

/// Rows that point at rows that do not exist (possible only when foreign
/// keys were off, e.g. an outside tool wrote to the file). Repair deletes
/// them, parents before children, so the cascades take what hung on them.
pub struct OrphanCheck {
    pub what: &'static str,
    /// The rows' condition, on the table aliased `t`.
    pub table: &'static str,
    pub condition: &'static str,
}

pub const ORPHANS: &[OrphanCheck] = &[
    OrphanCheck {
        what: "sessions of a missing user",
        table: "sessions",
        condition: "t.user_id NOT IN (SELECT id FROM users)",
    },
    OrphanCheck {
        what: "posts by a missing user",
        table: "posts",
        condition: "t.user_id NOT IN (SELECT id FROM users)",
    },
    OrphanCheck {
        what: "follows with a missing side",
        table: "follows",
        condition: "t.follower_id NOT IN (SELECT id FROM users)
                    OR t.followee_id NOT IN (SELECT id FROM users)",
    },
    OrphanCheck {
        what: "hashtags of a missing post",
        table: "post_tags",
        condition: "t.post_id NOT IN (SELECT id FROM posts)",
    },
    OrphanCheck {
        what: "votes on a missing post or by a missing user",
        table: "votes",
        condition: "t.post_id NOT IN (SELECT id FROM posts)
                    OR t.user_id NOT IN (SELECT id FROM users)",
    },
    OrphanCheck {
        what: "replies to a missing post or by a missing user",
        table: "replies",
        condition: "t.post_id NOT IN (SELECT id FROM posts)
                    OR t.user_id NOT IN (SELECT id FROM users)",
    },
    OrphanCheck {
        what: "replies whose parent is missing or on another post",
        table: "replies",
        condition: "t.parent_id IS NOT NULL AND NOT EXISTS
                    (SELECT 1 FROM replies p WHERE p.id = t.parent_id AND p.post_id = t.post_id)",
    },
    OrphanCheck {
        what: "rooms created by a missing user, with no members",
        table: "rooms",
        condition: "t.created_by NOT IN (SELECT id FROM users)
                    AND NOT EXISTS (SELECT 1 FROM room_members m JOIN users u ON u.id = m.user_id
                                    WHERE m.room_id = t.id)",
    },
    OrphanCheck {
        what: "room memberships of a missing room or user",
        table: "room_members",
        condition: "t.room_id NOT IN (SELECT id FROM rooms)
                    OR t.user_id NOT IN (SELECT id FROM users)",
    },
    OrphanCheck {
        what: "room messages in a missing room or by a missing user",
        table: "room_messages",
        condition: "t.room_id NOT IN (SELECT id FROM rooms)
                    OR t.user_id NOT IN (SELECT id FROM users)",
    },
    OrphanCheck {
        what: "direct messages with a missing sender or recipient",
        table: "inbox_messages",
        condition: "t.sender_id NOT IN (SELECT id FROM users)
                    OR t.recipient_id NOT IN (SELECT id FROM users)",
    },
    OrphanCheck {
        what: "files in a missing room or by a missing user",
        table: "files",
        condition: "t.room_id NOT IN (SELECT id FROM rooms)
                    OR t.user_id NOT IN (SELECT id FROM users)",
    },
];

/// Rooms whose creator is gone but which still have members: repair hands
/// them to the longest-standing member, as account deletion does.
pub const ORPHAN_OWNED_ROOMS: &str = "rooms created by a missing user, with members";
pub const ORPHAN_OWNED_ROOMS_WHERE: &str = "created_by NOT IN (SELECT id FROM users)
    AND EXISTS (SELECT 1 FROM room_members m JOIN users u ON u.id = m.user_id
                WHERE m.room_id = rooms.id)";

pub const MISSING_BLOBS: &str = "files whose bytes are missing from the file store";

/// Hands rooms whose creator is missing to their longest-standing member.
pub fn adopt_orphan_rooms_sql() -> String {
    format!(
        "UPDATE rooms SET created_by = (
             SELECT m.user_id FROM room_members m JOIN users u ON u.id = m.user_id
             WHERE m.room_id = rooms.id ORDER BY m.seq LIMIT 1)
         WHERE {ORPHAN_OWNED_ROOMS_WHERE}"
    )
}

impl OrphanCheck {
    pub fn count_sql(&self) -> String {
        format!(
            "SELECT COUNT(*) FROM {} t WHERE {}",
            self.table, self.condition
        )
    }
    pub fn delete_sql(&self) -> String {
        format!("DELETE FROM {} AS t WHERE {}", self.table, self.condition)
    }
}

/// Recomputes every counter from the rows (posts first: the users' vote
/// totals are summed from them), with the posts' counters in `posts`
/// (PostgreSQL).
pub const RECOUNT_POSTS: &str =
    "UPDATE posts SET upvotes = c.up, downvotes = c.down, replies = c.replies
 FROM (SELECT p.id,
              (SELECT COUNT(*) FROM votes v WHERE v.post_id = p.id AND v.kind = 1) AS up,
              (SELECT COUNT(*) FROM votes v WHERE v.post_id = p.id AND v.kind = -1) AS down,
              (SELECT COUNT(*) FROM replies r WHERE r.post_id = p.id) AS replies
       FROM posts p) AS c
 WHERE c.id = posts.id
   AND (posts.upvotes != c.up OR posts.downvotes != c.down
        OR posts.replies != c.replies)";

/// Recomputes the users' counters from the rows, after the posts' ones:
/// their vote totals are summed from `counts_table`, which holds the
/// posts' `upvotes` and `downvotes` by `user_id` (`posts` on PostgreSQL,
/// `post_counts` on SQLite).
pub fn recount_users_sql(counts_table: &str) -> String {
    format!(
        "UPDATE users SET followers = c.followers, following = c.following,
                  posts = c.posts, upvotes = c.up, downvotes = c.down,
                  last_post_id = c.last_post_id
 FROM (SELECT u.id,
              (SELECT COUNT(*) FROM follows f WHERE f.followee_id = u.id) AS followers,
              (SELECT COUNT(*) FROM follows f WHERE f.follower_id = u.id) AS following,
              COALESCE(p.posts, 0) AS posts, COALESCE(k.up, 0) AS up,
              COALESCE(k.down, 0) AS down, COALESCE(p.last_post_id, 0) AS last_post_id
       FROM users u
       LEFT JOIN (SELECT user_id, COUNT(*) AS posts, MAX(id) AS last_post_id
                  FROM posts GROUP BY user_id) AS p ON p.user_id = u.id
       LEFT JOIN (SELECT user_id, SUM(upvotes) AS up, SUM(downvotes) AS down
                  FROM {counts_table} GROUP BY user_id) AS k ON k.user_id = u.id) AS c
 WHERE c.id = users.id
   AND (users.followers != c.followers OR users.following != c.following
        OR users.posts != c.posts OR users.upvotes != c.up
        OR users.downvotes != c.down OR users.last_post_id != c.last_post_id)"
    )
}
