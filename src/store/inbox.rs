//! Direct messages. Deleting hides a message for the one who deletes only.

use std::sync::Arc;

use async_trait::async_trait;

use super::{PageRequest, SharedPage, StoreResult, UnixSeconds};

/// A page of an inbox, shared (see `SharedPage`).
pub type InboxPage = SharedPage<InboxMessage>;

#[derive(Debug, Clone, PartialEq)]
pub struct InboxMessage {
    pub id: i64,
    pub sender: String,
    pub recipient: String,
    pub message: String,
    pub created_at: UnixSeconds,
    /// The sender's avatar.
    pub avatar_url: String,
}

#[async_trait]
pub trait InboxStore: Send + Sync {
    /// NotFound "recipient not found" for an unknown recipient (ignoring case).
    async fn send_inbox_message(
        &self,
        sender: i64,
        recipient: &str,
        message: String,
        now: UnixSeconds,
    ) -> StoreResult<InboxMessage>;
    /// Messages the user received or sent and has not deleted, newest first.
    async fn inbox(&self, user_id: i64, page: PageRequest) -> StoreResult<Arc<InboxPage>>;
    /// The number of messages `inbox` would list.
    async fn inbox_count(&self, user_id: i64) -> StoreResult<i64>;
    /// Hides the message for this user only. NotFound when it is not in
    /// their inbox (unknown, someone else's, or already deleted).
    async fn delete_inbox_message(&self, user_id: i64, message_id: i64) -> StoreResult<()>;
}
