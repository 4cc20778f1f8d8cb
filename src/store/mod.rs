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

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::Bytes;

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
    /// The account acting was deleted while the request ran (401, as its
    /// session is gone too).
    #[error("the account is gone")]
    AccountGone,
    /// The database aborted the transaction to break a deadlock or a
    /// serialization conflict with another one: nothing of it was kept, so
    /// the store runs it again. A 500 if it still fails after a few tries.
    #[error("{0}")]
    Contention(String),
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

/// A page many readers are handed: a store may give the same page to every
/// reader until it changes (the SQLite store does, for each user's newest
/// page of posts and of the inbox, and each room's members), so it is
/// rendered once and then kept only as its rendering (about half the
/// memory of the items it was made from).
#[derive(Debug)]
pub struct SharedPage<T> {
    /// The items, until the page is rendered.
    items: Mutex<Option<Page<T>>>,
    rendered: OnceLock<Bytes>,
}

impl<T> SharedPage<T> {
    pub fn new(page: Page<T>) -> Arc<Self> {
        Arc::new(SharedPage {
            items: Mutex::new(Some(page)),
            rendered: OnceLock::new(),
        })
    }

    /// The page as `render` makes it from the items: made by the first
    /// reader, after which every reader gets the same bytes and the items
    /// are dropped.
    pub fn rendered<E>(
        &self,
        render: impl FnOnce(&Page<T>) -> Result<Bytes, E>,
    ) -> Result<Bytes, E> {
        if let Some(rendered) = self.rendered.get() {
            return Ok(rendered.clone());
        }
        let mut items = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        // Another reader may have rendered it while this one waited.
        let Some(page) = items.as_ref() else {
            return Ok(self.rendered.get().cloned().unwrap_or_default());
        };
        let rendered = render(page)?;
        let rendered = self.rendered.get_or_init(|| rendered).clone();
        *items = None;
        Ok(rendered)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    fn page(items: &[&str]) -> Arc<SharedPage<String>> {
        SharedPage::new(Page {
            items: items.iter().map(|s| s.to_string()).collect(),
            next: None,
        })
    }

    /// A page is rendered by its first reader only; later readers get the
    /// same bytes, and the items are gone once rendered.
    #[test]
    fn a_shared_page_is_rendered_once_and_then_kept_only_as_bytes() {
        let page = page(&["b", "a"]);
        let first = page
            .rendered(|p| Ok::<_, Infallible>(Bytes::from(format!("{} items", p.items.len()))))
            .unwrap();
        assert_eq!(first, "2 items");
        let again = page
            .rendered(|_| -> Result<Bytes, Infallible> { panic!("rendered twice") })
            .unwrap();
        assert_eq!(again, first);
        assert!(page.items.lock().unwrap().is_none());
    }

    /// A failed rendering keeps the items, so that the next reader can try.
    #[test]
    fn a_failed_rendering_keeps_the_items() {
        let page = page(&["a"]);
        assert!(page.rendered(|_| Err("no")).is_err());
        let bytes = page
            .rendered(|p| Ok::<_, Infallible>(Bytes::from(p.items[0].clone())))
            .unwrap();
        assert_eq!(bytes, "a");
    }
}
