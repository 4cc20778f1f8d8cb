//! `mirage check` on PostgreSQL: the checks of `store::integrity` on a
//! connection of its own, beside serving nodes.
//!
//! A check alone reads one snapshot (REPEATABLE READ, read only). A repair
//! first locks every table against writes (SHARE ROW EXCLUSIVE: reads go
//! on, writes wait), so nothing changes between what it counts and what
//! it fixes; it commits only when a second look inside the transaction
//! finds nothing left.

use std::collections::HashSet;

use sqlx_core::{
    connection::Connection, query::query, query_scalar::query_scalar, transaction::Transaction,
};
use sqlx_postgres::{PgConnection, Postgres};

use crate::store::{
    FileStore, StoreError, StoreResult,
    integrity::{
        CheckReport, Drift, MISSING_BLOBS, ORPHAN_OWNED_ROOMS, ORPHAN_OWNED_ROOMS_WHERE, ORPHANS,
        POST_COUNTERS, RECOUNT_POSTS, USER_COUNTERS, adopt_orphan_rooms_sql, recount_users_sql,
    },
};

const EVERY_TABLE: &str = "users, sessions, follows, posts, post_tags, votes, replies, rooms, \
                           room_members, room_messages, files, inbox_messages";

/// Which of `ids` have a file row in the database at `url`.
pub async fn file_rows_among(url: &str, ids: &[String]) -> StoreResult<HashSet<String>> {
    let mut conn = PgConnection::connect(url)
        .await
        .map_err(|e| StoreError::Other(format!("connecting to PostgreSQL: {e}")))?;
    let found: Vec<String> = query_scalar("SELECT id FROM files WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(&mut conn)
        .await?;
    Ok(found.into_iter().collect())
}

/// Checks the database at `url`; with `repair`, fixes what drifted. Also
/// returns the ids of file rows the repair deleted whose bytes the caller
/// should delete from the file store.
pub async fn check_database(
    url: &str,
    repair: bool,
    files: &dyn FileStore,
) -> StoreResult<(CheckReport, Vec<String>)> {
    let mut conn = PgConnection::connect(url)
        .await
        .map_err(|e| StoreError::Other(format!("connecting to PostgreSQL: {e}")))?;
    let mut tx = conn.begin().await?;
    if repair {
        query(&format!(
            "LOCK TABLE {EVERY_TABLE} IN SHARE ROW EXCLUSIVE MODE"
        ))
        .execute(&mut *tx)
        .await?;
    } else {
        query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
    }
    let mut report = CheckReport::default();
    let (drift, missing_blobs) = find_drift(&mut tx, files).await?;
    report.drift = drift;
    let mut unreferenced_blobs = Vec::new();
    if repair && !report.drift.is_empty() {
        unreferenced_blobs = apply_repairs(&mut tx, &missing_blobs).await?;
        let (left, _) = find_drift(&mut tx, files).await?;
        if !left.is_empty() {
            return Err(StoreError::Other(format!(
                "drift left after repair: {left:?}"
            )));
        }
        tx.commit().await?;
        report.repaired = true;
    }
    Ok((report, unreferenced_blobs))
}

async fn count(tx: &mut Transaction<'_, Postgres>, sql: &str) -> StoreResult<i64> {
    Ok(query_scalar(sql).fetch_one(&mut **tx).await?)
}

async fn find_drift(
    tx: &mut Transaction<'_, Postgres>,
    files: &dyn FileStore,
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
        note(orphan.what, count(tx, &orphan.count_sql()).await?);
    }
    let owned = format!("SELECT COUNT(*) FROM rooms WHERE {ORPHAN_OWNED_ROOMS_WHERE}");
    note(ORPHAN_OWNED_ROOMS, count(tx, &owned).await?);
    for counter in POST_COUNTERS.iter().chain(USER_COUNTERS) {
        note(counter.what, count(tx, counter.count_sql).await?);
    }
    let file_ids: Vec<String> = query_scalar("SELECT id FROM files")
        .fetch_all(&mut **tx)
        .await?;
    let mut missing = Vec::new();
    for id in file_ids {
        let stored = files
            .open(&id)
            .await
            .map_err(|e| StoreError::Other(format!("file store: {e}")))?;
        if stored.is_none() {
            missing.push(id);
        }
    }
    note(MISSING_BLOBS, missing.len() as i64);
    Ok((drift, missing))
}

async fn apply_repairs(
    tx: &mut Transaction<'_, Postgres>,
    missing_blobs: &[String],
) -> StoreResult<Vec<String>> {
    query(&adopt_orphan_rooms_sql()).execute(&mut **tx).await?;
    let mut orphan_files = Vec::new();
    for orphan in ORPHANS {
        let delete = orphan.delete_sql();
        if orphan.table == "files" {
            orphan_files = query_scalar(&format!("{delete} RETURNING id"))
                .fetch_all(&mut **tx)
                .await?;
        } else {
            query(&delete).execute(&mut **tx).await?;
        }
    }
    query("DELETE FROM files WHERE id = ANY($1)")
        .bind(missing_blobs)
        .execute(&mut **tx)
        .await?;
    query(RECOUNT_POSTS).execute(&mut **tx).await?;
    query(&recount_users_sql("posts"))
        .execute(&mut **tx)
        .await?;
    Ok(orphan_files)
}
