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
pub trait Store: AccountStore + PostStore + RoomStore + InboxStore + Send + Sync + 'static {}

impl<T: AccountStore + PostStore + RoomStore + InboxStore + Send + Sync + 'static> Store for T {}

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
