//! Posts, votes, replies, feed candidates and trending on SQLite.

use async_trait::async_trait;

use super::SqliteStore;
use crate::store::{
    Page, PageRequest, StoreResult, UnixSeconds,
    posts::{FeedCandidates, FeedQuery, Post, PostStore, Reply, VoteCounts, VoteKind},
};

#[async_trait]
impl PostStore for SqliteStore {
    async fn create_post(
        &self,
        _author: i64,
        _content: String,
        _hashtags: Vec<String>,
        _now: UnixSeconds,
    ) -> StoreResult<i64> {
        todo!()
    }
    async fn post(&self, _post_id: i64) -> StoreResult<Option<Post>> {
        todo!()
    }
    async fn posts_by(&self, _username: &str, _page: PageRequest) -> StoreResult<Page<Post>> {
        todo!()
    }
    async fn vote(&self, _voter: i64, _post_id: i64, _kind: VoteKind) -> StoreResult<VoteCounts> {
        todo!()
    }
    async fn create_reply(
        &self,
        _author: i64,
        _post_id: i64,
        _parent_id: Option<i64>,
        _content: String,
        _now: UnixSeconds,
    ) -> StoreResult<i64> {
        todo!()
    }
    async fn replies(&self, _post_id: i64, _page: PageRequest) -> StoreResult<Page<Reply>> {
        todo!()
    }
    async fn feed_candidates(&self, _query: FeedQuery) -> StoreResult<FeedCandidates> {
        todo!()
    }
    async fn trending(&self, _since: UnixSeconds, _limit: usize) -> StoreResult<Vec<String>> {
        todo!()
    }
}
