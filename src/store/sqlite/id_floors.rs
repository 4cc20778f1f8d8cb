//! Ids that are never given twice.
//!
//! SQLite gives a new row its table's highest id plus one, so when an
//! account deletion removes a table's newest rows their ids would be given
//! again (PostgreSQL's sequences never repeat one). Before a deletion the
//! store records each table's highest id (`id_floors`, migration 0009), and
//! from then on inserts into that table take an id above both that floor
//! and the table's highest row. Until a deletion has happened, inserts
//! leave the id to SQLite as before (the floor is 0, and the statement's
//! `CASE` skips the lookup).

use std::sync::atomic::{AtomicI64, Ordering};

use rusqlite::{Connection, OptionalExtension};

/// The tables whose ids the API shows, or that caches key by.
#[derive(Debug, Clone, Copy)]
pub(super) enum Table {
    Users,
    Posts,
    Replies,
    Rooms,
    InboxMessages,
}

const TABLES: [Table; 5] = [
    Table::Users,
    Table::Posts,
    Table::Replies,
    Table::Rooms,
    Table::InboxMessages,
];

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Users => "users",
            Table::Posts => "posts",
            Table::Replies => "replies",
            Table::Rooms => "rooms",
            Table::InboxMessages => "inbox_messages",
        }
    }
}

/// The value an insert's id takes, as SQL text for `concat!`: SQLite's
/// choice while the floor (the statement's parameter `?N`) is 0, else above
/// the floor and every row.
macro_rules! next_id {
    ($table:literal, $floor_parameter:literal) => {
        concat!(
            "CASE WHEN ?",
            $floor_parameter,
            " = 0 THEN NULL ELSE max(?",
            $floor_parameter,
            ", coalesce((SELECT MAX(id) FROM ",
            $table,
            "), 0)) + 1 END"
        )
    };
}
pub(super) use next_id;

/// Each table's floor in this process: 0 while its highest row is above
/// every id it has given. Read and written by the writer thread only (the
/// atomics make the store `Sync`).
pub(super) struct IdFloors {
    floors: [AtomicI64; 5],
}

impl IdFloors {
    /// The floors recorded by earlier deletions that still lie above their
    /// table's highest row.
    pub(super) fn load(conn: &Connection) -> rusqlite::Result<Self> {
        let floors = TABLES.map(|_| AtomicI64::new(0));
        for table in TABLES {
            let recorded: Option<i64> = conn
                .query_row(
                    "SELECT last_id FROM id_floors WHERE name = ?1",
                    [table.name()],
                    |r| r.get(0),
                )
                .optional()?;
            let highest = highest_id(conn, table)?;
            if let Some(recorded) = recorded.filter(|&floor| floor > highest) {
                floors[table as usize].store(recorded, Ordering::Relaxed);
            }
        }
        Ok(IdFloors { floors })
    }

    /// The floor to pass to an insert into `table` (see `next_id!`).
    pub(super) fn get(&self, table: Table) -> i64 {
        self.floors[table as usize].load(Ordering::Relaxed)
    }

    /// Records every table's highest id, in the transaction of a deletion
    /// that may remove it. A floor kept in memory for a deletion that then
    /// rolls back is the table's highest id anyway: harmless.
    pub(super) fn record(&self, conn: &Connection) -> rusqlite::Result<()> {
        for table in TABLES {
            let highest = highest_id(conn, table)?;
            conn.prepare_cached(
                "INSERT INTO id_floors (name, last_id) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET last_id = max(last_id, excluded.last_id)",
            )?
            .execute(rusqlite::params![table.name(), highest])?;
            self.floors[table as usize].fetch_max(highest, Ordering::Relaxed);
        }
        Ok(())
    }
}

fn highest_id(conn: &Connection, table: Table) -> rusqlite::Result<i64> {
    // Its own statement: SQLite finds MAX of a rowid at the table's end.
    conn.prepare_cached(&format!("SELECT MAX(id) FROM {}", table.name()))?
        .query_row([], |r| r.get::<_, Option<i64>>(0))
        .map(|id| id.unwrap_or(0))
}
