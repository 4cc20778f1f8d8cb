//! The maintenance commands, `mirage check` and `mirage backup`: they open
//! the storage the server settings name, beside a running server.

use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use crate::{
    config::Config,
    store::{FileStore, StoreError, blobs::open_file_store, postgres, sqlite},
};

/// Temporary upload files older than this are left by a crash (an upload
/// in progress is never this old: it is bounded by the upload size).
const STALE_UPLOAD: Duration = Duration::from_secs(3600);

/// What `mirage check` concluded, as its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Nothing drifted.
    Clean,
    /// Drift was found and repaired.
    Repaired,
    /// Drift was found and left (run with `--repair`).
    Drift,
    /// The database file is corrupt; nothing here can repair that.
    Corrupt,
}

impl CheckOutcome {
    pub fn exit_code(self) -> i32 {
        match self {
            CheckOutcome::Clean | CheckOutcome::Repaired => 0,
            CheckOutcome::Drift => 1,
            CheckOutcome::Corrupt => 2,
        }
    }
}

/// Checks (and with `repair`, fixes) the embedded database and the file
/// store; prints a report on stdout.
pub async fn check(config: &Config, repair: bool) -> anyhow::Result<CheckOutcome> {
    let sqlite_path = config.data_dir.join("mirage.db");
    // Before the file store, which would create the directory.
    anyhow::ensure!(
        config.database.is_some() || sqlite_path.exists(),
        "no database at {} (is --data-dir right?)",
        sqlite_path.display()
    );
    let files = open_file_store(config)?;
    let (database, (report, unreferenced)) = match config.database.as_deref() {
        Some(url) => (
            redact(url),
            postgres::check_database(url, repair, files.as_ref()).await?,
        ),
        None => {
            let database = sqlite_path;
            let runtime = tokio::runtime::Handle::current();
            let blobs = files.clone();
            let db = database.clone();
            // SQLite blocks; the file store is async: the check runs on a
            // blocking thread and asks the store through the runtime.
            let checked = tokio::task::spawn_blocking(move || {
                sqlite::check_database(&db, repair, |id| {
                    runtime
                        .block_on(blobs.open(id))
                        .map(|opened| opened.is_some())
                        .map_err(|e| StoreError::Other(format!("file store: {e}")))
                })
            })
            .await??;
            (database.display().to_string(), checked)
        }
    };
    for id in &unreferenced {
        files.delete(id).await?;
    }
    let stale_uploads = stale_temporary_uploads(config, repair)?;
    let stray_bytes = stray_stored_files(config, files.as_ref()).await?;
    if repair {
        for id in &stray_bytes {
            files.delete(id).await?;
        }
    }

    println!("mirage check: {database}");
    for problem in &report.corruption {
        println!("  corruption: {problem}");
    }
    for drift in &report.drift {
        println!("  {:>8} {}", drift.rows, drift.what);
    }
    if stale_uploads > 0 {
        println!(
            "  {stale_uploads:>8} unfinished uploads left in files/tmp (older than an hour){}",
            if repair { ", removed" } else { "" }
        );
    }
    if !stray_bytes.is_empty() {
        println!(
            "  {:>8} stored files no file row refers to (older than an hour){}",
            stray_bytes.len(),
            if repair { ", removed" } else { "" }
        );
    }
    let drifted = report.drifted_rows();
    let leftover_files = stale_uploads + stray_bytes.len() as u64;
    let outcome = if !report.corruption.is_empty() {
        println!("the database file is corrupt: restore a backup");
        CheckOutcome::Corrupt
    } else if drifted == 0 && leftover_files == 0 {
        println!("ok: every counter and reference is right");
        CheckOutcome::Clean
    } else if repair {
        println!("repaired: {drifted} rows, {leftover_files} leftover files removed");
        CheckOutcome::Repaired
    } else {
        println!(
            "drift in {drifted} rows, {leftover_files} leftover files: \
             run `mirage check --repair` to fix it"
        );
        CheckOutcome::Drift
    };
    Ok(outcome)
}

/// Counts (and with `remove`, deletes) temporary upload files a crash left
/// behind. They are never served; this only reclaims their space.
fn stale_temporary_uploads(config: &Config, remove: bool) -> anyhow::Result<u64> {
    let dir = config.data_dir.join("files").join("tmp");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err.into()),
    };
    let mut stale = 0;
    for entry in entries {
        let entry = entry?;
        let age = entry
            .metadata()?
            .modified()
            .ok()
            .and_then(|at| SystemTime::now().duration_since(at).ok())
            .unwrap_or_default();
        if age > STALE_UPLOAD {
            stale += 1;
            if remove {
                std::fs::remove_file(entry.path())?;
            }
        }
    }
    Ok(stale)
}

/// The ids of stored files that no file row refers to: left when a process
/// died between deleting a row and its bytes, or between storing an
/// upload's bytes and its row. Never served (a URL needs the row); this
/// only reclaims their space. Files younger than `STALE_UPLOAD` are left
/// out: an upload stores its bytes just before its row.
async fn stray_stored_files(config: &Config, files: &dyn FileStore) -> anyhow::Result<Vec<String>> {
    let stored = files
        .stored_before(SystemTime::now() - STALE_UPLOAD)
        .await?;
    // Rows are looked up after the listing, so a row committed meanwhile
    // counts.
    let with_rows = match config.database.as_deref() {
        Some(url) => postgres::file_rows_among(url, &stored).await?,
        None => {
            let database = config.data_dir.join("mirage.db");
            let ids = stored.clone();
            tokio::task::spawn_blocking(move || sqlite::file_rows_among(&database, &ids)).await??
        }
    };
    Ok(stored
        .into_iter()
        .filter(|id| !with_rows.contains(id))
        .collect())
}

/// Writes a consistent copy of the embedded database to `target`.
pub async fn backup(config: &Config, target: &Path, force: bool) -> anyhow::Result<()> {
    refuse_postgres(config)?;
    let database = config.data_dir.join("mirage.db");
    let to = target.to_owned();
    let size = tokio::task::spawn_blocking(move || sqlite::backup_database(&database, &to, force))
        .await??;
    println!("mirage backup: {} ({size} bytes)", target.display());
    Ok(())
}

fn refuse_postgres(config: &Config) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.database.is_none(),
        "`mirage backup` copies the embedded SQLite database; back PostgreSQL up \
         with `pg_dump --format=custom` (see \"Operations\" in the README)"
    );
    Ok(())
}

/// A database URL without its password, for the report.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}
