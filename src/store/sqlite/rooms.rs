//! Rooms, membership, room messages with retention, and file metadata on SQLite.

use async_trait::async_trait;

use super::SqliteStore;
use crate::store::{
    StoreResult,
    rooms::{NewRoom, PublicRoom, Retention, Room, RoomMessage, RoomStore, StoredFile},
};

#[async_trait]
impl RoomStore for SqliteStore {
    async fn create_room(&self, _room: NewRoom, _max_public_rooms: u32) -> StoreResult<Room> {
        todo!()
    }
    async fn room_by_id(&self, _room_id: i64) -> StoreResult<Option<Room>> {
        todo!()
    }
    async fn room_by_name(&self, _name: &str) -> StoreResult<Option<Room>> {
        todo!()
    }
    async fn add_member(&self, _room_id: i64, _user_id: i64) -> StoreResult<()> {
        todo!()
    }
    async fn remove_member(&self, _room_id: i64, _user_id: i64) -> StoreResult<bool> {
        todo!()
    }
    async fn is_member(&self, _room_id: i64, _user_id: i64) -> StoreResult<bool> {
        todo!()
    }
    async fn member_names(&self, _room_id: i64) -> StoreResult<Vec<String>> {
        todo!()
    }
    async fn member_ids(&self, _room_id: i64) -> StoreResult<Vec<i64>> {
        todo!()
    }
    async fn public_rooms(&self, _viewer: i64) -> StoreResult<Vec<PublicRoom>> {
        todo!()
    }
    async fn rooms_of(&self, _user_id: i64) -> StoreResult<Vec<Room>> {
        todo!()
    }
    async fn add_room_message(
        &self,
        _room_id: i64,
        _author: i64,
        _message: String,
        _now: f64,
        _retention: Retention,
    ) -> StoreResult<RoomMessage> {
        todo!()
    }
    async fn room_messages(
        &self,
        _room_id: i64,
        _since: Option<f64>,
        _now: f64,
        _retention: Retention,
    ) -> StoreResult<Vec<RoomMessage>> {
        todo!()
    }
    async fn purge_expired_messages(&self, _now: f64, _retention: Retention) -> StoreResult<u64> {
        todo!()
    }
    async fn save_file(&self, _file: StoredFile) -> StoreResult<()> {
        todo!()
    }
    async fn file(&self, _file_id: &str) -> StoreResult<Option<StoredFile>> {
        todo!()
    }
}
