//! Keeps a WAL read lock taken in this process, so that reads need no
//! system call to take their own.
//!
//! A read transaction takes a shared lock on one of the WAL index's read
//! marks. SQLite's unix VFS counts those locks per process and calls
//! `fcntl` only when a mark's count goes from zero to one and back: when
//! reads do not overlap, that is two system calls per request, measured at
//! 6% of the CPU of `get_post_by_id`. A connection that stays inside a read
//! transaction keeps the count of the mark current readers share above
//! zero, so that a read-only load locks in memory only (same-time pairs:
//! `get_post_by_id` 1.04-1.10x as fast, `profile` 1.10-1.12x, `get_replies`
//! 1.06-1.08x).
//!
//! The transaction starts over every `HOLD`: the checkpointer may not copy
//! frames past the oldest reader's snapshot, so it never falls more than
//! that behind, and once the WAL is fully copied the new transaction uses
//! read mark 0, which does not keep the writer from starting the WAL over.

use std::{io, path::Path, sync::mpsc, thread, time::Duration};

use rusqlite::{Connection, OpenFlags};

/// How long one read transaction is held.
const HOLD: Duration = Duration::from_millis(20);

/// Holds the lock until dropped.
pub(super) struct ReadLock {
    _stop: mpsc::Sender<()>,
}

impl ReadLock {
    pub(super) fn start(path: &Path) -> io::Result<ReadLock> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(io::Error::other)?;
        let (stop, stopped) = mpsc::channel();
        thread::Builder::new()
            .name("sqlite-read-lock".into())
            .spawn(move || hold(&conn, &stopped))?;
        Ok(ReadLock { _stop: stop })
    }
}

fn hold(conn: &Connection, stopped: &mpsc::Receiver<()>) {
    loop {
        // BEGIN alone takes no lock: the first read does.
        let began = conn
            .execute_batch("BEGIN")
            .and_then(|()| conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(())));
        if let Err(err) = &began {
            tracing::debug!(%err, "holding a read lock failed");
        }
        let stop = !matches!(
            stopped.recv_timeout(HOLD),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
        // Still in autocommit mode when BEGIN failed: nothing to end.
        if !conn.is_autocommit()
            && let Err(err) = conn.execute_batch("COMMIT")
        {
            tracing::warn!(%err, "ending a held read transaction failed");
        }
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While the lock is held, the writer still commits, checkpoints copy
    /// the whole WAL once the holder's snapshot moves on, and a write after
    /// that starts the WAL over: all within a few `HOLD`s.
    #[test]
    fn holding_the_lock_keeps_neither_checkpoints_nor_a_new_wal_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
                 CREATE TABLE t (n INTEGER PRIMARY KEY, s TEXT);",
            )
            .unwrap();
        let _lock = ReadLock::start(&path).unwrap();
        for n in 0..200 {
            writer
                .execute("INSERT INTO t (s) VALUES (?1)", [format!("row {n}")])
                .unwrap();
        }
        // (frames in the WAL, frames copied into the database)
        let checkpoint = || -> (i64, i64) {
            writer
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get(1)?, r.get(2)?))
                })
                .unwrap()
        };
        assert!(checkpoint().0 > 10);
        // Without new writes, a checkpoint copies everything once the
        // holder's snapshot is the newest; the holder's next transaction
        // then uses read mark 0 (50 ms: a few `HOLD`s), and the next write
        // starts the WAL over. A holder that kept its snapshot much longer
        // would fail this within the two seconds.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let (frames, copied) = checkpoint();
            if frames == copied {
                thread::sleep(Duration::from_millis(50));
                writer
                    .execute("INSERT INTO t (s) VALUES ('again')", [])
                    .unwrap();
                if checkpoint().0 <= 2 {
                    break;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the WAL was never started over"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}
