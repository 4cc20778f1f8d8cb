//! Storage behind traits of domain operations; one implementation per engine.
//!
//! Every method that writes does so in one transaction, so counters always
//! agree with the rows they count. No SQL or driver types cross these traits.

pub mod accounts;
pub mod blobs;
pub mod inbox;
pub mod integrity;
pub mod postgres;
pub mod posts;
pub mod redis;
pub mod rooms;
pub mod sqlite;

pub use accounts::AccountStore;
pub use blobs::FileStore;
pub use inbox::InboxStore;
pub use posts::PostStore;
pub use rooms::RoomStore;

/// Everything Mirage stores. Implemented by every backend.
pub trait Store: AccountStore + PostStore + RoomStore + InboxStore + Send + Sync + 'static {
    /// How busy the backend's connections are now, for `/metrics`.
    fn pool_stats(&self) -> PoolStats;
}

/// The connection pools of a backend, as monitoring sees them.
#[derive(Debug, Clone, Default)]
pub struct PoolStats {
    pub pools: Vec<PoolFigures>,
    /// Writes waiting for a single writer (SQLite): the database's name
    /// and the queue's length. `None` where writes do not queue in-process.
    pub queued_writes: Option<(&'static str, u64)>,
}

/// One connection pool's figures.
#[derive(Debug, Clone)]
pub struct PoolFigures {
    /// Which pool, e.g. `sqlite_readers` (a metric label).
    pub name: &'static str,
    /// Connections open now, busy or idle.
    pub open: u32,
    pub idle: u32,
    /// The most it opens.
    pub max: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing asked about does not exist (404); the text says what.
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The request clashes with what is stored (400), e.g. a taken name.
    #[error("{0}")]
    Conflict(String),
    /// Anything else; logged, never shown to clients.
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    pub fn not_found(what: impl Into<String>) -> Self {
        StoreError::NotFound(what.into())
    }
    pub fn conflict(why: impl Into<String>) -> Self {
        StoreError::Conflict(why.into())
    }
    pub fn forbidden(why: impl Into<String>) -> Self {
        StoreError::Forbidden(why.into())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Which page of a newest-first list to return.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: u32,
    /// Only items with an id (or cursor) below this.
    pub before: Option<i64>,
}

/// One page of a newest-first list: the items and the cursor for the next page.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The `before` value that continues the list, or `None` at its end.
    pub next: Option<i64>,
}

/// Unix time in seconds.
pub type UnixSeconds = i64;
