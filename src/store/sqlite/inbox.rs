//! Direct messages on SQLite.

use async_trait::async_trait;

use super::SqliteStore;
use crate::store::{
    Page, PageRequest, StoreResult, UnixSeconds,
    inbox::{InboxMessage, InboxStore},
};

#[async_trait]
impl InboxStore for SqliteStore {
    async fn send_inbox_message(
        &self,
        _sender: i64,
        _recipient: &str,
        _message: String,
        _now: UnixSeconds,
    ) -> StoreResult<InboxMessage> {
        todo!()
    }
    async fn inbox(&self, _user_id: i64, _page: PageRequest) -> StoreResult<Page<InboxMessage>> {
        todo!()
    }
    async fn inbox_count(&self, _user_id: i64) -> StoreResult<i64> {
        todo!()
    }
    async fn delete_inbox_message(&self, _user_id: i64, _message_id: i64) -> StoreResult<()> {
        todo!()
    }
}
