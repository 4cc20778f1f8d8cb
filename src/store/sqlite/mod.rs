//! The embedded default backend: SQLite in WAL mode, bundled into the binary.
//!
//! One writer thread with group commit (SQLite allows one writer at a time;
//! see `writer`), and a pool of readers used in place (see `read`).
//!
//! Every `LIMIT`/`OFFSET` parameter is written `?n + 0`: SQLite plans a bare
//! bound `LIMIT ?n` with its value, so every new bind re-prepares the
//! statement (measured: a fifth of `get_posts`' CPU). With `+ 0` the cached
//! statement is reused.

mod accounts;
mod archive;
mod backup;
mod bulk;
mod check;
mod exact_cache;
mod id_floors;
mod inbox;
mod posts;
mod read_lock;
mod recent;
mod room_cache;
mod rooms;
mod sessions;
mod user_cards;
mod wal_vfs;
mod writer;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags, Transaction};
use rusqlite_migration::{M, Migrations};

pub use backup::backup_database;
pub use bulk::BulkImport;
pub use check::{check_database, file_rows_among};

use self::{
    accounts::UserCount,
    archive::ArchiveSample,
    exact_cache::{ExactCache, NewestIds, NewestPages},
    id_floors::IdFloors,
    inbox::InboxCount,
    posts::PostRow,
    read_lock::ReadLock,
    recent::RecentPosts,
    room_cache::RoomMessageCache,
    rooms::{MemberList, PublicRoomList, RoomList},
    sessions::SessionCache,
    user_cards::UserCards,
    writer::{WalLimits, Writer},
};
use super::{
    Page, PoolFigures, PoolStats, StoreError, StoreResult,
    accounts::{Profile, UserSummary},
    inbox::InboxMessage,
    posts::Post,
};

/// The caches' maps from ids (of posts and users) to values. Ids are
/// given by the database, not chosen by clients, so the default hasher's
/// flooding resistance buys nothing; it was most of a cached lookup.
type IdMap<V> = HashMap<i64, V, foldhash::fast::RandomState>;

const MIGRATIONS: &[M<'static>] = &[
    M::up(include_str!("../../../migrations/sqlite/0001_initial.sql")),
    M::up(include_str!(
        "../../../migrations/sqlite/0002_account_deletion.sql"
    )),
    M::up(include_str!(
        "../../../migrations/sqlite/0003_profile_page_index.sql"
    )),
    M::up(include_str!(
        "../../../migrations/sqlite/0004_inbox_page_indexes.sql"
    )),
    M::up(include_str!(
        "../../../migrations/sqlite/0005_inbox_two_indexes.sql"
    )),
    M::up(include_str!(
        "../../../migrations/sqlite/0006_replies_page_index.sql"
    )),
    M::up(include_str!(
        "../../../migrations/sqlite/0007_post_counts.sql"
    )),
    M::up(include_str!(
        "../../../migrations/sqlite/0008_follow_page_indexes.sql"
    )),
    M::up(include_str!(
        "../../../migrations/sqlite/0009_id_floors.sql"
    )),
];

#[derive(Clone)]
pub struct SqliteStore {
    path: PathBuf,
    /// Lets reads lock in memory (see `read_lock`).
    _read_lock: Arc<ReadLock>,
    writer: Arc<Writer>,
    readers: r2d2::Pool<SqliteConnectionManager>,
    /// What the feed asks of every request, in memory (see `recent`).
    recent: Arc<RecentPosts>,
    /// Sessions already resolved (see `sessions`).
    sessions: Arc<SessionCache>,
    /// The number of users once counted (see `accounts::UserCount`).
    user_count: Arc<UserCount>,
    /// Rooms' retained messages once read (see `room_cache`).
    room_messages: Arc<RoomMessageCache>,
    /// Users' names and avatars once read (see `user_cards`).
    users: Arc<UserCards>,
    /// Posts' rows once read by the feed, by id (see `exact_cache`). The
    /// feed reads 30 posts by id, and at a million posts most of them lie
    /// on pages outside SQLite's cache (a `pread` from the OS cache each).
    post_rows: Arc<ExactCache<PostRow>>,
    /// Whom each user follows (ids, sorted), once read by the feed.
    follows: Arc<ExactCache<Arc<[i64]>>>,
    /// Each user's newest page of followers, and of whom they follow, once
    /// read, by user id.
    follower_pages: Arc<NewestPages<UserSummary>>,
    following_pages: Arc<NewestPages<UserSummary>>,
    /// The same pages as ids, for many more users (see `PageIds`).
    follower_ids: Arc<NewestIds>,
    following_ids: Arc<NewestIds>,
    /// Each user's profile (`GET /api/user/{name}`) once read, by user id:
    /// dropped after every commit that changes its texts or counts.
    profiles: Arc<ExactCache<Arc<Profile>>>,
    /// Each room's member names once read, by room id.
    member_lists: Arc<ExactCache<MemberList>>,
    /// The rooms each user is in, once read, by user id (see `rooms`).
    room_lists: Arc<ExactCache<RoomList>>,
    /// The public rooms' ids and names, once read (one entry).
    public_rooms: Arc<ExactCache<PublicRoomList>>,
    /// Each user's newest page of posts once read, by author id: the page
    /// a profile shows first, and the one `get_posts` is asked for most.
    newest_pages: Arc<NewestPages<Post>>,
    /// Each user's newest inbox page, by user id.
    inbox_pages: Arc<NewestPages<InboxMessage>>,
    /// How many messages each user's inbox lists, once counted.
    inbox_counts: Arc<ExactCache<InboxCount>>,
    /// Old posts the feed's archive share is drawn from (see `archive`).
    archive: Arc<ArchiveSample>,
    /// What keeps ids freed by a deletion from being given again (see
    /// `id_floors`).
    id_floors: Arc<IdFloors>,
}

const MIB: u64 = 1024 * 1024;

/// Posts' rows kept in memory at most, by weight (about their bytes): a
/// row is about 250 bytes with its text, so about 64,000 rows. (100,000
/// rows, with 2,048 inbox pages and 16 MiB reader caches, took a full
/// bench run's peak RSS to 267 MiB: docs/PERFORMANCE.md.)
const POST_ROWS_WEIGHT: u64 = 16 * MIB;

/// Follow lists kept in memory at most, by weight (8 bytes a followee).
const FOLLOW_LISTS_WEIGHT: u64 = 16 * MIB;

/// Newest pages of followers, and of followees, kept in memory at most
/// (each list), by weight: a page of 50 is about 2-4 KB of JSON once
/// rendered, so 1,000-2,000 pages each.
const FOLLOW_PAGES_WEIGHT: u64 = 4 * MIB;

/// The same pages as ids, at most (each list), by weight: a page of 50 is
/// 464 bytes, so about 9,000 pages each, where the bench draws
/// `get_following` from 10,000 users.
const FOLLOW_IDS_WEIGHT: u64 = 4 * MIB;

/// Profiles kept in memory at most, by weight: about 250 bytes each
/// without a custom stylesheet, so about 16,000.
const PROFILES_WEIGHT: u64 = 4 * MIB;

/// Rooms' member lists kept in memory at most, by weight (about their
/// JSON): the bench's five public rooms of about 1,750 members each take
/// 0.1 MiB.
const MEMBER_LISTS_WEIGHT: u64 = 2 * MIB;

/// Users' room lists kept in memory at most, by weight (about 100 bytes a
/// room): the bench's 10,000 users in one or two rooms each take about 2
/// MiB.
const ROOM_LISTS_WEIGHT: u64 = 4 * MIB;

/// The public room list at most, by weight: public rooms are capped
/// (`--max-public-rooms`), so this only bounds a cap raised very high.
const PUBLIC_ROOMS_WEIGHT: u64 = MIB;

/// Users' newest pages kept in memory at most, by weight: a page of 50
/// posts is kept as its JSON once rendered (by the request that read it),
/// about 15 KB, so about 3,000 pages. The bench's `get_posts` asks for
/// authors as often as they post: the 1,000 busiest authors are 67% of
/// its requests, the 2,000 busiest 77%, the 3,000 busiest 83%. 32 MiB
/// instead of 16 served those requests 1.07-1.16x as fast at 16
/// connections (same-time pairs), 48 instead of 32 another 1.07-1.14x at
/// 16 and 64 (CPU 0.85-0.87x). The memory came from the WAL index no
/// longer held (`wal_vfs`); a full bench run then peaked at 230 MiB
/// against 207 with 32 MiB (target 256: docs/PERFORMANCE.md).
const NEWEST_PAGES_WEIGHT: u64 = 48 * MIB;

/// Users' newest inbox pages kept in memory at most, by weight, as JSON
/// once rendered: a full page of 50 direct messages is about 15 KB, so
/// about 2,000 full pages (the bench's inbox readers are 2,000 users, and
/// once they have sent a few dozen messages each their pages are full: 24
/// MiB then held too few, and the inbox made 0.62-0.69x as many requests
/// as with 32; 28 MiB 0.82-0.84x).
const INBOX_PAGES_WEIGHT: u64 = 32 * MIB;

/// Inbox counts kept in memory at most, by weight (16 bytes a user).
const INBOX_COUNTS_WEIGHT: u64 = MIB;

/// Each reader's page cache. What it misses comes from the kernel's page
/// cache for a `pread`: 8 MiB served `get_posts`, `fyp` and the inbox as
/// fast as 16 MiB did (same-time pairs, within 1-2%), and 6 MiB as fast as
/// 8 (`get_post_by_id`, `fyp`, `profile`, `get_replies`: 0.95-1.06x); the
/// 8 MiB the four readers give back went to the inbox pages.
const READER_CACHE_KIB: u32 = 6 * 1024;

/// Reader connections: reads run on the async workers (one per core) and
/// never hold a connection across an await, so one per core, and two for
/// whatever else reads (the blocking pool, a backup). Each connection
/// keeps its own page cache (`READER_CACHE_KIB`): eight of them took a long
/// benchmark run's RSS past 256 MiB, and fewer connections each see more
/// of the traffic, so their caches are warmer.
fn reader_connections() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores + 2).clamp(4, 16) as u32
}

/// Distinct SQL texts a connection keeps prepared; above the number of
/// queries the store runs, so none is ever evicted and re-parsed.
const STATEMENT_CACHE: usize = 64;

/// When a commit counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Durability {
    /// On disk: every write is answered after an fsync of the WAL that
    /// holds it, so an acknowledged write survives a power loss too (the
    /// writer's own fsync, pipelined with the next batch; see `writer`).
    #[default]
    Full,
    /// In the WAL file, fsynced only at checkpoints: an acknowledged write
    /// survives a crash of the process but not of the machine
    /// (`synchronous = NORMAL`).
    Normal,
}

/// Page size of a new database file, in bytes (SQLite's default is 4096).
///
/// Every page a write changes goes to the WAL whole, and under load the
/// WAL grows into page-cache pages the kernel must zero first: a vote,
/// spread over a million posts, changes about five pages. With 2 KiB pages
/// it writes half the bytes: votes ran 1.28-1.39x as fast (same-time
/// pairs), `get_posts` misses cost 5-6% more (the covering index keeps its
/// entries' texts in its interior pages too: 25 MB of them instead of 12)
/// and other reads stayed within 4%; with 1 KiB pages the
/// covering index's post texts spill to overflow pages and `get_posts`
/// lost 15% (docs/PERFORMANCE.md, "Smaller pages"). A file that already
/// exists keeps the page size it was created with.
const PAGE_SIZE: u32 = 2048;

fn configure(conn: &Connection, durability: Durability) -> rusqlite::Result<()> {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.busy_timeout(Duration::from_secs(5))?;
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    // Must come before the switch to WAL, which fixes the page size.
    conn.execute_batch(&format!(
        "PRAGMA page_size = {PAGE_SIZE};
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {synchronous};
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;"
    ))
}

/// Process-wide SQLite settings; call before any database is opened.
///
/// SQLite counts every allocation under one process-wide mutex by default,
/// and readers on different threads then wait for each other on it
/// (measured: the busiest lock of the feed). The statistics are unused.
pub fn configure_process() {
    // SAFETY: sqlite3_config may only run before SQLite initialises, which
    // is what "before any database is opened" ensures; if it has already
    // initialised, the call fails harmlessly with SQLITE_MISUSE.
    let code = unsafe { rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0) };
    if code != rusqlite::ffi::SQLITE_OK {
        tracing::debug!(
            code,
            "SQLite was already initialised; memory statistics stay on"
        );
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies
    /// pending migrations; commits are fully durable.
    pub fn open(path: &Path) -> StoreResult<Self> {
        Self::open_with(path, Durability::Full)
    }

    pub fn open_with(path: &Path, durability: Durability) -> StoreResult<Self> {
        let mut writer = writer::open_connection(path).map_err(other)?;
        configure(&writer, durability).map_err(other)?;
        Migrations::from_slice(MIGRATIONS)
            .to_latest(&mut writer)
            .map_err(|e| StoreError::Other(format!("migrating the database: {e}")))?;
        let recent =
            RecentPosts::load(&writer, crate::domain::feed::WINDOW_POSTS).map_err(other)?;
        let id_floors = IdFloors::load(&writer).map_err(other)?;
        let manager = SqliteConnectionManager::file(path)
            .with_flags(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_init(|c| {
                c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                c.busy_timeout(Duration::from_secs(5))?;
                c.execute_batch(&format!(
                    "PRAGMA foreign_keys = ON; PRAGMA cache_size = -{READER_CACHE_KIB};"
                ))
            });
        let readers = r2d2::Pool::builder()
            .max_size(reader_connections())
            // A checkout would otherwise run a query to test the connection.
            .test_on_check_out(false)
            .build(manager)
            .map_err(other)?;
        let checkpointer = Connection::open(path).map_err(other)?;
        configure(&checkpointer, durability).map_err(other)?;
        let sync_wal = (durability == Durability::Full).then(|| {
            let mut wal = path.as_os_str().to_owned();
            wal.push("-wal");
            writer::sync_wal_file(wal.into())
        });
        let read_lock = Arc::new(ReadLock::start(path).map_err(other)?);
        let writer = Writer::start(
            writer,
            checkpointer,
            read_lock.clone(),
            sync_wal,
            WalLimits::default(),
        );
        Ok(SqliteStore {
            path: path.to_owned(),
            _read_lock: read_lock,
            writer: Arc::new(writer.map_err(other)?),
            readers,
            recent: Arc::new(recent),
            id_floors: Arc::new(id_floors),
            sessions: Arc::default(),
            user_count: Arc::default(),
            room_messages: Arc::default(),
            users: Arc::default(),
            post_rows: Arc::new(ExactCache::new(POST_ROWS_WEIGHT, 64_000)),
            follows: Arc::new(ExactCache::new(FOLLOW_LISTS_WEIGHT, 16_000)),
            profiles: Arc::new(ExactCache::new(PROFILES_WEIGHT, 16_000)),
            member_lists: Arc::new(ExactCache::new(MEMBER_LISTS_WEIGHT, 1_000)),
            room_lists: Arc::new(ExactCache::new(ROOM_LISTS_WEIGHT, 16_000)),
            public_rooms: Arc::new(ExactCache::new(PUBLIC_ROOMS_WEIGHT, 1)),
            follower_pages: Arc::new(ExactCache::new(FOLLOW_PAGES_WEIGHT, 2_000)),
            following_pages: Arc::new(ExactCache::new(FOLLOW_PAGES_WEIGHT, 2_000)),
            follower_ids: Arc::new(ExactCache::new(FOLLOW_IDS_WEIGHT, 9_000)),
            following_ids: Arc::new(ExactCache::new(FOLLOW_IDS_WEIGHT, 9_000)),
            newest_pages: Arc::new(ExactCache::new(NEWEST_PAGES_WEIGHT, 2_000)),
            inbox_pages: Arc::new(ExactCache::new(INBOX_PAGES_WEIGHT, 2_000)),
            inbox_counts: Arc::new(ExactCache::new(INBOX_COUNTS_WEIGHT, 16_000)),
            archive: Arc::default(),
        })
    }

    /// Runs `work` in a write transaction on the writer thread; its changes
    /// are kept only if it succeeds, and it answers once they are committed.
    async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction) -> StoreResult<T> + Send + 'static,
    {
        self.writer.run(work).await
    }

    /// Runs `work` on a reader connection, on the calling worker thread.
    ///
    /// Reads are index lookups in pages the OS has cached (WAL readers never
    /// wait for the writer), so they take microseconds: handing each to the
    /// blocking pool cost more than the query itself (measured: 25-40% of
    /// the CPU of a read request). Writes go to the writer thread, since a
    /// commit waits for the disk.
    async fn read<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let conn = self.readers.get().map_err(other)?;
        // One read transaction for all of the work's statements: outside
        // one, every statement starts its own, and each start locks and
        // stats the database file (measured: a third of the feed's CPU in
        // fcntl and fstat, for its dozens of index reads). It also gives
        // the work one consistent snapshot.
        if !conn.is_autocommit() {
            // Left open by a work that panicked.
            conn.prepare_cached("ROLLBACK")?.execute([])?;
        }
        conn.prepare_cached("BEGIN")?.execute([])?;
        let result = work(&conn);
        conn.prepare_cached("COMMIT")?.execute([])?;
        result
    }
}

impl super::Store for SqliteStore {
    fn pool_stats(&self) -> PoolStats {
        let readers = self.readers.state();
        PoolStats {
            pools: vec![PoolFigures {
                name: "sqlite_readers",
                open: readers.connections,
                idle: readers.idle_connections,
                max: self.readers.max_size(),
            }],
            queued_writes: Some(("sqlite", self.writer.queued() as u64)),
        }
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

/// True when `err` is a FOREIGN KEY constraint failure.
fn is_foreign_key_violation(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
    )
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

/// A user for the store's unit tests: `name`, `<name>@example.com`.
#[cfg(test)]
fn user_for_tests(name: &str) -> crate::store::accounts::NewUser {
    crate::store::accounts::NewUser {
        username: name.into(),
        email: format!("{name}@example.com"),
        password_hash: "x".into(),
        avatar_url: String::new(),
        description: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AccountStore;

    fn page_size(path: &Path) -> u32 {
        Connection::open(path)
            .unwrap()
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn a_new_database_gets_the_small_page_size_and_an_old_one_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new.db");
        drop(SqliteStore::open(&new).unwrap());
        assert_eq!(page_size(&new), PAGE_SIZE);

        // A file made with SQLite's default page size, as before this change.
        let old = dir.path().join("old.db");
        Connection::open(&old)
            .unwrap()
            .execute_batch("PRAGMA page_size = 4096; PRAGMA journal_mode = WAL;")
            .unwrap();
        let store = SqliteStore::open(&old).unwrap();
        assert_eq!(page_size(&old), 4096);
        assert!(store.profile("nobody").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn moving_the_post_counters_out_of_posts_keeps_every_count() {
        use crate::store::{PageRequest, PostStore};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v6.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")
            .unwrap();
        // The schema before migration 0007, with counters in `posts`.
        Migrations::from_slice(&MIGRATIONS[..6])
            .to_latest(&mut conn)
            .unwrap();
        conn.execute_batch(
            "INSERT INTO users (id, username, username_key, email, email_key, password_hash,
                                created_at, posts, upvotes, downvotes)
                 VALUES (1, 'ann', 'ann', 'a@x.io', 'a@x.io', 'h', 0, 3, 7, 2);
             INSERT INTO posts (id, user_id, content, created_at, upvotes, downvotes, replies)
                 VALUES (1, 1, 'one', 0, 5, 2, 1), (2, 1, 'two', 0, 0, 0, 0),
                        (3, 1, 'three', 0, 2, 0, 4);",
        )
        .unwrap();
        drop(conn);

        let store = SqliteStore::open(&path).unwrap();
        let counts = |p: &crate::store::posts::Post| (p.id, p.upvotes, p.downvotes, p.replies);
        let post = store.post(1).await.unwrap().unwrap();
        assert_eq!(counts(&post), (1, 5, 2, 1));
        let page = store
            .posts_by(
                "ann",
                PageRequest {
                    before: None,
                    limit: 10,
                },
            )
            .await
            .unwrap();
        let mut all = Vec::new();
        page.rendered(|p| {
            all = p.items.iter().map(counts).collect();
            Ok::<_, std::convert::Infallible>(bytes::Bytes::new())
        })
        .unwrap();
        assert_eq!(all, [(3, 2, 0, 4), (2, 0, 0, 0), (1, 5, 2, 1)]);
        // Only posts with something to count got a row.
        let rows: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM post_counts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2);
    }
}
