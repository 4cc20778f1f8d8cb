//! `mirage backup`: a consistent copy of the embedded database, taken
//! while the server runs.
//!
//! `VACUUM INTO` writes the snapshot one read transaction sees (WAL readers
//! never block the writer, nor it them), so the copy holds exactly the
//! writes committed before it started. It goes to a temporary name beside
//! the target, is fsynced and checked, and only then renamed: a crash or a
//! full disk mid-way leaves no file that looks like a complete backup.

use std::{
    fs::File,
    path::{Path, PathBuf},
    time::Duration,
};

use rusqlite::{Connection, OpenFlags};

use super::other;
use crate::store::{StoreError, StoreResult};

/// Copies the database at `database` to `target`; refuses to replace an
/// existing `target` unless `force`. Returns the backup's size in bytes.
pub fn backup_database(database: &Path, target: &Path, force: bool) -> StoreResult<u64> {
    if !force && target.exists() {
        return Err(StoreError::conflict(format!(
            "{} already exists (use --force to replace it)",
            target.display()
        )));
    }
    let partial = partial_name(target)?;
    let _ = std::fs::remove_file(&partial);
    let result = write_copy(database, &partial).and_then(|size| {
        std::fs::rename(&partial, target).map_err(other)?;
        sync_parent(target)?;
        Ok(size)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// `.<name>.partial` in the target's directory (a rename across file
/// systems would not be atomic).
fn partial_name(target: &Path) -> StoreResult<PathBuf> {
    let name = target
        .file_name()
        .ok_or_else(|| StoreError::conflict(format!("{} is not a file name", target.display())))?;
    let mut partial = std::ffi::OsString::from(".");
    partial.push(name);
    partial.push(".partial");
    Ok(target.with_file_name(partial))
}

fn write_copy(database: &Path, partial: &Path) -> StoreResult<u64> {
    let source = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| other(format!("opening {}: {e}", database.display())))?;
    source
        .busy_timeout(Duration::from_secs(30))
        .map_err(other)?;
    let partial_text = partial
        .to_str()
        .ok_or_else(|| StoreError::conflict("the backup path is not valid UTF-8"))?;
    source.execute("VACUUM INTO ?1", [partial_text])?;
    drop(source);

    let file = File::open(partial).map_err(other)?;
    file.sync_all().map_err(other)?;
    let size = file.metadata().map_err(other)?.len();
    let copy = Connection::open_with_flags(partial, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let verdict: String = copy.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if verdict != "ok" {
        return Err(other(format!("the backup failed its check: {verdict}")));
    }
    Ok(size)
}

/// Makes the rename itself durable.
fn sync_parent(target: &Path) -> StoreResult<()> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(other)
}
