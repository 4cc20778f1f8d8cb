//! Posts, hashtags, votes, replies, and the raw material of the feed.

use std::{
    borrow::Cow,
    sync::{Arc, OnceLock},
};

use async_trait::async_trait;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use super::{Page, PageRequest, SharedPage, StoreResult, UnixSeconds};

#[derive(Debug, Clone, PartialEq)]
pub struct Post {
    pub id: i64,
    pub username: String,
    pub content: PostText,
    pub created_at: UnixSeconds,
    pub upvotes: i64,
    pub downvotes: i64,
    pub replies: i64,
    /// Its JSON, once a response made it.
    pub rendering: PostRendering,
}

/// A post's JSON as responses show it, made by the first response that
/// needs it. The SQLite store keeps it with the post's cached row, which
/// goes when the post changes (a vote, a reply), so a post in many feeds is
/// serialised once. Every copy of a `Post` shares it; the default keeps
/// nothing (a post not cached: each response renders it).
#[derive(Debug, Clone, Default)]
pub struct PostRendering(Option<Arc<OnceLock<Box<RawValue>>>>);

impl PostRendering {
    /// A rendering kept for whoever shares this post.
    pub fn kept() -> Self {
        PostRendering(Some(Arc::default()))
    }

    pub fn get(&self) -> Option<&RawValue> {
        self.0.as_ref()?.get().map(|json| &**json)
    }

    /// Keeps `json` (unless another response kept the post's JSON first)
    /// and returns the post's JSON.
    pub fn keep(&self, json: Box<RawValue>) -> Cow<'_, RawValue> {
        match &self.0 {
            Some(cell) => Cow::Borrowed(&**cell.get_or_init(|| json)),
            None => Cow::Owned(json),
        }
    }
}

/// The rendering follows from the post's fields: not part of its value.
impl PartialEq for PostRendering {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

/// A post's text, kept as the JSON string that shows it (quoted and
/// escaped). A cached post is read by many feeds: its text is escaped once,
/// when it is read from the database, and shared by every response that
/// shows it instead of being copied and escaped for each.
#[derive(Clone)]
pub struct PostText(Arc<RawValue>);

impl PostText {
    pub fn new(text: &str) -> Self {
        // Writing a string into a `String` cannot fail.
        let json = serde_json::value::to_raw_value(text).expect("a string serialises");
        PostText(Arc::from(json))
    }

    /// The JSON string, quotes included.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// The text itself.
    pub fn to_text(&self) -> String {
        serde_json::from_str(self.0.get()).expect("made from a string")
    }
}

impl From<&str> for PostText {
    fn from(text: &str) -> Self {
        PostText::new(text)
    }
}

impl std::fmt::Debug for PostText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.json())
    }
}

impl PartialEq for PostText {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json()
    }
}

/// Written as it is kept (serde_json writes a raw value verbatim).
impl Serialize for PostText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// A page of one user's posts, shared (see `SharedPage`).
pub type PostsPage = SharedPage<Post>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteKind {
    Up,
    Down,
}

/// A post's vote counts after a vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoteCounts {
    pub upvotes: i64,
    pub downvotes: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub id: i64,
    pub post_id: i64,
    pub username: String,
    pub avatar_url: String,
    pub content: String,
    pub parent_id: Option<i64>,
    pub created_at: UnixSeconds,
}

/// One use of a hashtag by a post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagUse {
    pub post_id: i64,
    pub created_at: UnixSeconds,
    pub tag: String,
}

/// Candidate post ids for one viewer's feed, each list newest first and
/// none by the viewer. The domain's feed mix picks from these, and only the
/// chosen posts are read.
#[derive(Debug, Clone, Default)]
pub struct FeedCandidates {
    /// Newest posts of users the viewer follows.
    pub followed: Vec<i64>,
    /// Newest posts inside the global window by users the viewer does not follow.
    pub global: Vec<i64>,
    /// Random posts older than the global window.
    pub archive: Vec<i64>,
}

/// How many candidates of each kind to fetch, and the global window.
#[derive(Debug, Clone, Copy)]
pub struct FeedQuery {
    pub viewer: i64,
    /// Followed posts wanted at most...
    pub followed: usize,
    /// ...of which the page takes this many first; a store may read only
    /// these when the global list holds `global_share` and the archive
    /// gives `archive`, since the page then takes no more.
    pub followed_share: usize,
    pub global: usize,
    pub global_share: usize,
    /// Archive posts wanted at least; more when the other two lists
    /// together fall short of `page` (see `archive_wanted`).
    pub archive: usize,
    pub page: usize,
    /// The global window holds at most this many newest posts...
    pub window_posts: i64,
    /// ...and none older than this.
    pub window_start: UnixSeconds,
}

impl FeedQuery {
    /// How many archive posts to draw once the followed and global lists
    /// are known (`found` together): the page is filled from the archive
    /// only when they fall short. Draws that hit a followed post are
    /// skipped, so each one drawn is new to the page.
    pub fn archive_wanted(&self, found: usize) -> usize {
        self.archive.max(self.page.saturating_sub(found))
    }
}

#[async_trait]
pub trait PostStore: Send + Sync {
    /// Stores the post and its (already extracted, lower-case, distinct)
    /// hashtags, bumping the author's post count, in one transaction.
    async fn create_post(
        &self,
        author: i64,
        content: String,
        hashtags: Vec<String>,
        now: UnixSeconds,
    ) -> StoreResult<i64>;
    async fn post(&self, post_id: i64) -> StoreResult<Option<Post>>;
    /// The posts with these ids, in the order given; unknown ids are skipped.
    async fn posts_by_ids(&self, ids: Vec<i64>) -> StoreResult<Vec<Post>>;
    /// NotFound for an unknown user.
    async fn posts_by(&self, username: &str, page: PageRequest) -> StoreResult<Arc<PostsPage>>;

    /// NotFound for no such post, Forbidden for your own post, Conflict
    /// "already voted" for a repeat; voting the other way moves the vote.
    /// Post and author counters change in the same transaction.
    async fn vote(&self, voter: i64, post_id: i64, kind: VoteKind) -> StoreResult<VoteCounts>;

    /// NotFound for no such post or parent; Conflict when the parent is a
    /// reply to another post.
    async fn create_reply(
        &self,
        author: i64,
        post_id: i64,
        parent_id: Option<i64>,
        content: String,
        now: UnixSeconds,
    ) -> StoreResult<i64>;
    /// NotFound for no such post.
    async fn replies(&self, post_id: i64, page: PageRequest) -> StoreResult<Page<Reply>>;

    /// Reads what the feed mixes from; cost bounded by the counts asked
    /// for and the window, never by the total number of posts or users.
    async fn feed_candidates(&self, query: FeedQuery) -> StoreResult<FeedCandidates>;
    /// The feed's posts: the candidates for `query`, of which `choose`
    /// picks the ids, read in its order. By default two reads; a store
    /// may answer from one snapshot. A post that comes with its JSON kept
    /// (`PostRendering`) may come without its author's name, which that
    /// JSON holds: the feed shows its posts through `post_json`.
    async fn feed_posts(
        &self,
        query: FeedQuery,
        choose: fn(FeedCandidates) -> Vec<i64>,
    ) -> StoreResult<Vec<Post>> {
        let candidates = self.feed_candidates(query).await?;
        self.posts_by_ids(choose(candidates)).await
    }
    /// Every hashtag use by posts created since `since` (lower-case,
    /// without `#`), to seed the trending counts.
    async fn tag_uses_since(&self, since: UnixSeconds) -> StoreResult<Vec<TagUse>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kept escaped, a text is written exactly as serde_json writes the
    /// plain string, and reads back unchanged.
    #[test]
    fn a_post_text_is_written_as_its_plain_string_would_be() {
        for text in [
            "plain",
            "quote \" and \\ back",
            "line\nbreak\ttab\u{1}",
            "héllo 👋 #tag",
            "",
        ] {
            let kept = PostText::new(text);
            assert_eq!(kept.to_text(), text);
            assert_eq!(
                serde_json::to_string(&serde_json::json!({ "content": text })).unwrap(),
                serde_json::to_string(&std::collections::BTreeMap::from([("content", kept)]))
                    .unwrap(),
            );
        }
    }

    fn json(text: &str) -> Box<RawValue> {
        serde_json::value::to_raw_value(text).unwrap()
    }

    #[test]
    fn a_kept_rendering_is_shared_by_copies_and_the_first_one_stays() {
        let kept = PostRendering::kept();
        let copy = kept.clone();
        assert!(copy.get().is_none());
        assert_eq!(kept.keep(json("first")).get(), "\"first\"");
        assert_eq!(copy.get().map(RawValue::get), Some("\"first\""));
        assert_eq!(copy.keep(json("second")).get(), "\"first\"");
        // A post nobody keeps: each rendering is the caller's own.
        let none = PostRendering::default();
        assert_eq!(none.keep(json("mine")).get(), "\"mine\"");
        assert!(none.get().is_none());
    }

    /// The feed's own query for viewer 1, its window starting at 0.
    fn query() -> FeedQuery {
        crate::domain::feed::query(1, crate::domain::feed::WINDOW_SECS)
    }

    #[test]
    fn the_archive_share_when_the_other_lists_fill_the_page() {
        assert_eq!(query().archive_wanted(60), 6);
        assert_eq!(query().archive_wanted(30), 6);
    }

    #[test]
    fn the_archive_fills_what_the_other_lists_lack() {
        assert_eq!(query().archive_wanted(0), 30);
        assert_eq!(query().archive_wanted(12), 18);
    }
}
