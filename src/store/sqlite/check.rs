//! `mirage check` on the embedded database: the checks of
//! `store::integrity`, verified (and with `repair`, fixed) in one
//! transaction on a connection of its own, so it runs beside a serving
//! server.

use std::{path::Path, time::Duration};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::{bulk::recount_all, other};
use crate::store::{
    StoreResult,
    integrity::{
        COUNTERS, CheckReport, Drift, MISSING_BLOBS, ORPHAN_OWNED_ROOMS, ORPHAN_OWNED_ROOMS_WHERE,
        ORPHANS, adopt_orphan_rooms_sql,
    },
};

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
