//! `mirage check`: every denormalised counter and every reference of the
//! embedded database, verified (and with `repair`, fixed) in one transaction
//! on a connection of its own, so it runs beside a serving server.
//!
//! Each check counts from the rows themselves, never from another counter
//! (a user's vote totals are counted from `votes`, not summed from the
//! posts' counters), so one drifted counter cannot hide another.

use std::{path::Path, time::Duration};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::{bulk::recount_all, other};
use crate::store::StoreResult;

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
struct CounterCheck {
    what: &'static str,
    /// Counts the rows whose stored value differs from the computed one.
    count_sql: &'static str,
}

const COUNTERS: &[CounterCheck] = &[
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
struct OrphanCheck {
    what: &'static str,
    /// The rows' condition, on the table aliased `t`.
    table: &'static str,
    condition: &'static str,
}

const ORPHANS: &[OrphanCheck] = &[
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
const ORPHAN_OWNED_ROOMS: &str = "rooms created by a missing user, with members";
const ORPHAN_OWNED_ROOMS_WHERE: &str = "created_by NOT IN (SELECT id FROM users)
    AND EXISTS (SELECT 1 FROM room_members m JOIN users u ON u.id = m.user_id
                WHERE m.room_id = rooms.id)";

const MISSING_BLOBS: &str = "files whose bytes are missing from the file store";

/// Checks the database at `path`; with `repair`, fixes what drifted in the
/// same transaction and verifies the result. `blob_exists` tells whether
/// the file store holds the bytes of a file id (a missing blob's row is
/// deleted by repair: its URL could only ever answer 404). Also returns
/// the ids of file rows the repair deleted whose bytes the caller should
/// delete from the file store.
pub fn check_database(
    path: &Path,
    repair: bool,
    blob_exists: impl Fn(&str) -> StoreResult<bool>,
) -> StoreResult<(CheckReport, Vec<String>)> {
    // Not created: a mistyped path must not pass as an empty, clean database.
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| other(format!("opening {}: {e}", path.display())))?;
    conn.busy_timeout(Duration::from_secs(30)).map_err(other)?;
    conn.execute_batch("PRAGMA foreign_keys = ON;")
        .map_err(other)?;

    let mut report = CheckReport {
        corruption: quick_check(&conn)?,
        ..CheckReport::default()
    };
    // A read transaction sees one snapshot; a repair takes the write lock
    // first, so nothing changes between what it counts and what it fixes.
    let behavior = if repair {
        TransactionBehavior::Immediate
    } else {
        TransactionBehavior::Deferred
    };
    let tx = conn.transaction_with_behavior(behavior)?;
    let (drift, missing_blobs) = find_drift(&tx, &blob_exists)?;
    report.drift = drift;
    let mut unreferenced_blobs = Vec::new();
    if repair && !report.drift.is_empty() {
        unreferenced_blobs = apply_repairs(&tx, &missing_blobs)?;
        let (left, _) = find_drift(&tx, &blob_exists)?;
        if !left.is_empty() {
            return Err(other(format!("drift left after repair: {left:?}")));
        }
        tx.commit()?;
        report.repaired = true;
    }
    Ok((report, unreferenced_blobs))
}

fn quick_check(conn: &Connection) -> StoreResult<Vec<String>> {
    let problems = conn
        .prepare("PRAGMA quick_check")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(problems.into_iter().filter(|p| p != "ok").collect())
}

/// Every kind of drift with its row count, and the ids of files rows
/// whose blob is missing.
fn find_drift(
    conn: &Connection,
    blob_exists: &impl Fn(&str) -> StoreResult<bool>,
) -> StoreResult<(Vec<Drift>, Vec<String>)> {
    let mut drift = Vec::new();
    let mut note = |what: &'static str, rows: i64| {
        if rows > 0 {
            drift.push(Drift {
                what,
                rows: rows as u64,
            });
        }
    };
    for orphan in ORPHANS {
        let sql = format!(
            "SELECT COUNT(*) FROM {} t WHERE {}",
            orphan.table, orphan.condition
        );
        note(orphan.what, conn.query_row(&sql, [], |r| r.get(0))?);
    }
    let owned = format!("SELECT COUNT(*) FROM rooms WHERE {ORPHAN_OWNED_ROOMS_WHERE}");
    note(
        ORPHAN_OWNED_ROOMS,
        conn.query_row(&owned, [], |r| r.get(0))?,
    );
    for counter in COUNTERS {
        note(
            counter.what,
            conn.query_row(counter.count_sql, [], |r| r.get(0))?,
        );
    }
    let file_ids = conn
        .prepare("SELECT id FROM files")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut missing = Vec::new();
    for id in file_ids {
        if !blob_exists(&id)? {
            missing.push(id);
        }
    }
    note(MISSING_BLOBS, missing.len() as i64);
    Ok((drift, missing))
}

/// Fixes everything `find_drift` reports; returns the ids of file rows it
/// deleted whose bytes may still be stored (the caller deletes those).
fn apply_repairs(conn: &Connection, missing_blobs: &[String]) -> StoreResult<Vec<String>> {
    conn.execute(
        &format!(
            "UPDATE rooms SET created_by = (
                 SELECT m.user_id FROM room_members m JOIN users u ON u.id = m.user_id
                 WHERE m.room_id = rooms.id ORDER BY m.seq LIMIT 1)
             WHERE {ORPHAN_OWNED_ROOMS_WHERE}"
        ),
        [],
    )?;
    let mut orphan_files = Vec::new();
    for orphan in ORPHANS {
        let delete = format!(
            "DELETE FROM {} AS t WHERE {}",
            orphan.table, orphan.condition
        );
        if orphan.table == "files" {
            orphan_files = conn
                .prepare(&format!("{delete} RETURNING id"))?
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
        } else {
            conn.execute(&delete, [])?;
        }
    }
    let mut delete_file = conn.prepare("DELETE FROM files WHERE id = ?1")?;
    for id in missing_blobs {
        delete_file.execute([id])?;
    }
    recount_all(conn)?;
    Ok(orphan_files)
}
