//! `mirage check` on the embedded database: the checks of
//! `store::integrity`, verified (and with `repair`, fixed) in one
//! transaction on a connection of its own, so it runs beside a serving
//! server.

use std::{collections::HashSet, path::Path, time::Duration};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::{bulk::recount_all, other};
use crate::store::{
    StoreResult,
    integrity::{
        CheckReport, CounterCheck, Drift, MISSING_BLOBS, ORPHAN_OWNED_ROOMS,
        ORPHAN_OWNED_ROOMS_WHERE, ORPHANS, USER_COUNTERS, adopt_orphan_rooms_sql,
    },
};

/// The posts' counters, in `post_counts` (migration 0007): a post without
/// a row there counts zero of everything.
const POST_COUNTERS: &[CounterCheck] = &[
    CounterCheck {
        what: "a post's upvotes differ from its up votes",
        count_sql: "SELECT COUNT(*) FROM posts p
                    LEFT JOIN post_counts c ON c.user_id = p.user_id AND c.post_id = p.id
                    WHERE COALESCE(c.upvotes, 0) !=
                    (SELECT COUNT(*) FROM votes v WHERE v.post_id = p.id AND v.kind = 1)",
    },
    CounterCheck {
        what: "a post's downvotes differ from its down votes",
        count_sql: "SELECT COUNT(*) FROM posts p
                    LEFT JOIN post_counts c ON c.user_id = p.user_id AND c.post_id = p.id
                    WHERE COALESCE(c.downvotes, 0) !=
                    (SELECT COUNT(*) FROM votes v WHERE v.post_id = p.id AND v.kind = -1)",
    },
    CounterCheck {
        what: "a post's replies count differs from its replies",
        count_sql: "SELECT COUNT(*) FROM posts p
                    LEFT JOIN post_counts c ON c.user_id = p.user_id AND c.post_id = p.id
                    WHERE COALESCE(c.replies, 0) !=
                    (SELECT COUNT(*) FROM replies r WHERE r.post_id = p.id)",
    },
    CounterCheck {
        what: "post counters of no post by that author",
        count_sql: "SELECT COUNT(*) FROM post_counts c WHERE NOT EXISTS
                    (SELECT 1 FROM posts p WHERE p.id = c.post_id AND p.user_id = c.user_id)",
    },
];

/// Recomputes the posts' counters from the rows (`recount_all` runs these
/// in order, then the users' recount).
pub(super) const RECOUNT_POSTS: [&str; 2] = [
    "DELETE FROM post_counts WHERE NOT EXISTS
         (SELECT 1 FROM posts p WHERE p.id = post_counts.post_id
                                  AND p.user_id = post_counts.user_id)",
    "INSERT INTO post_counts (user_id, post_id, upvotes, downvotes, replies)
     SELECT c.user_id, c.id, c.up, c.down, c.replies
     FROM (SELECT p.user_id, p.id,
                  (SELECT COUNT(*) FROM votes v WHERE v.post_id = p.id AND v.kind = 1) AS up,
                  (SELECT COUNT(*) FROM votes v WHERE v.post_id = p.id AND v.kind = -1) AS down,
                  (SELECT COUNT(*) FROM replies r WHERE r.post_id = p.id) AS replies
           FROM posts p) AS c
     LEFT JOIN post_counts k ON k.user_id = c.user_id AND k.post_id = c.id
     WHERE COALESCE(k.upvotes, 0) != c.up OR COALESCE(k.downvotes, 0) != c.down
        OR COALESCE(k.replies, 0) != c.replies
     ON CONFLICT (user_id, post_id) DO UPDATE SET upvotes = excluded.upvotes,
         downvotes = excluded.downvotes, replies = excluded.replies",
];

/// Which of `ids` have a file row in the database at `path`.
pub fn file_rows_among(path: &Path, ids: &[String]) -> StoreResult<HashSet<String>> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| other(format!("opening {}: {e}", path.display())))?;
    conn.busy_timeout(Duration::from_secs(30)).map_err(other)?;
    let mut row = conn.prepare("SELECT 1 FROM files WHERE id = ?1")?;
    let mut found = HashSet::new();
    for id in ids {
        if row.exists([id])? {
            found.insert(id.clone());
        }
    }
    Ok(found)
}

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
        note(
            orphan.what,
            conn.query_row(&orphan.count_sql(), [], |r| r.get(0))?,
        );
    }
    let owned = format!("SELECT COUNT(*) FROM rooms WHERE {ORPHAN_OWNED_ROOMS_WHERE}");
    note(
        ORPHAN_OWNED_ROOMS,
        conn.query_row(&owned, [], |r| r.get(0))?,
    );
    for counter in POST_COUNTERS.iter().chain(USER_COUNTERS) {
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
    conn.execute(&adopt_orphan_rooms_sql(), [])?;
    let mut orphan_files = Vec::new();
    for orphan in ORPHANS {
        let delete = orphan.delete_sql();
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
