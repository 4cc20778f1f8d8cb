//! The embedded default backend: SQLite in WAL mode, bundled into the binary.
//!
//! One writer connection behind a mutex (SQLite allows one writer at a time,
//! and serialising here avoids busy retries), a pool of readers, and every
//! call run on the blocking pool so async workers never wait on disk.

mod accounts;
mod bulk;
mod inbox;
mod posts;
mod rooms;

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use rusqlite_migration::{M, Migrations};

pub use bulk::BulkImport;

use super::{Page, StoreError, StoreResult};

const MIGRATIONS: &[M<'static>] = &[M::up(include_str!(
    "../../../migrations/sqlite/0001_initial.sql"
))];

#[derive(Clone)]
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    readers: r2d2::Pool<SqliteConnectionManager>,
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;",
    )
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let mut writer = Connection::open(path).map_err(other)?;
        configure(&writer).map_err(other)?;
        Migrations::from_slice(MIGRATIONS)
            .to_latest(&mut writer)
            .map_err(|e| StoreError::Other(format!("migrating the database: {e}")))?;
        let manager = SqliteConnectionManager::file(path)
            .with_flags(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_init(|c| {
                c.busy_timeout(Duration::from_secs(5))?;
                c.execute_batch("PRAGMA foreign_keys = ON;")
            });
        let readers = r2d2::Pool::builder()
            .max_size(8)
            .build(manager)
            .map_err(other)?;
        Ok(SqliteStore {
            writer: Arc::new(Mutex::new(writer)),
            readers,
        })
    }

    /// Runs `work` in one write transaction on the blocking pool; it commits
    /// only if `work` succeeds.
    async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction) -> StoreResult<T> + Send + 'static,
    {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = writer
                .lock()
                .map_err(|_| StoreError::Other("writer lock poisoned".into()))?;
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(other)?;
            let value = work(&tx)?;
            tx.commit().map_err(other)?;
            Ok(value)
        })
        .await
        .map_err(other)?
    }

    /// Runs `work` on a reader connection on the blocking pool.
    async fn read<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.get().map_err(other)?;
            work(&conn)
        })
        .await
        .map_err(other)?
    }
}

/// Wraps a driver error as an internal store error.
fn other(err: impl std::fmt::Display) -> StoreError {
    StoreError::Other(err.to_string())
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::Other(err.to_string())
    }
}

/// True when `err` is a UNIQUE constraint failure.
fn is_unique_violation(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// Turns `limit + 1` fetched rows into a page: the extra row only tells
/// that another page exists, so `next` is null exactly at the end.
fn into_page<T>(mut rows: Vec<T>, limit: u32, key: impl Fn(&T) -> i64) -> Page<T> {
    let next = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(key)
    } else {
        None
    };
    Page { items: rows, next }
}
