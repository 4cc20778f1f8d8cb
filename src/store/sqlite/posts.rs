//! Posts, votes, replies, feed candidates and trending on SQLite.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::{
    SqliteStore,
    archive::{ArchiveSample, Draw},
    exact_cache::{self, ExactCache, Weigh, page_weight},
    id_floors::{Table, next_id},
    into_page, is_foreign_key_violation,
    recent::{KEPT_PER_USER, RecentPost, RecentPosts},
    user_cards::{BeforeRead, UserCards},
};
use crate::store::{
    Page, PageRequest, StoreError, StoreResult, UnixSeconds,
    posts::{
        FeedCandidates, FeedQuery, Post, PostRendering, PostStore, PostText, PostsPage, Reply,
        TagUse, VoteCounts, VoteKind,
    },
};

/// Read straight from the column's bytes, escaped on the way.
impl rusqlite::types::FromSql for PostText {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        value.as_str().map(PostText::new)
    }
}

/// Where rows read from SQLite go.
#[derive(Clone, Copy)]
enum Keep {
    /// Into the post-row cache (the feed's posts: read by many viewers).
    Cached,
    /// Nowhere (a post by id: at random over all posts under load, where
    /// filling the cache cost more than its hits saved).
    Not,
}

/// Posts by id with their authors' ids (the names are filled in by
/// `with_authors`), in the order of `ids`, missing ones left out: from the
/// post-row cache, or else read from `conn` (inside the read that began
/// after `before`).
fn post_rows(
    conn: &rusqlite::Connection,
    cache: &ExactCache<PostRow>,
    before: exact_cache::BeforeRead,
    ids: &[i64],
    keep: Keep,
) -> StoreResult<Vec<(i64, Post)>> {
    let mut found = cache.get_many(ids);
    let mut read = Vec::new();
    for (slot, &id) in found.iter_mut().zip(ids) {
        if slot.is_none() {
            *slot = read_post_row(conn, id)?;
            if let Keep::Cached = keep {
                read.extend(slot.iter().map(|row| (id, row.clone())));
            }
        }
    }
    if !read.is_empty() {
        cache.fill(read, before);
    }
    Ok(found
        .into_iter()
        .flatten()
        .map(|row| (row.author, row.post))
        .collect())
}

fn read_post_row(conn: &rusqlite::Connection, post_id: i64) -> StoreResult<Option<PostRow>> {
    Ok(conn
        .prepare_cached(concat!("SELECT ", post_row_columns!(), " WHERE p.id = ?1"))?
        .query_row([post_id], PostRow::read)
        .optional()?)
}

/// What `PostRow::read` takes, from `posts` (aliased `p`) and the post's
/// counters, which are zero when it has no `post_counts` row (migration
/// 0007); a statement adds its `WHERE` on `p`. A literal, so that the
/// statements built on it are too (no `format!` on every read).
macro_rules! post_row_columns {
    () => {
        "p.id, p.user_id, p.content, p.created_at,
            COALESCE(c.upvotes, 0), COALESCE(c.downvotes, 0), COALESCE(c.replies, 0)
        FROM posts p LEFT JOIN post_counts c ON c.user_id = p.user_id AND c.post_id = p.id"
    };
}
pub(super) use post_row_columns;

/// A post's row without its author's name (that comes from the user cards).
#[derive(Debug, Clone)]
pub(super) struct PostRow {
    pub author: i64,
    pub post: Post,
}

impl PostRow {
    /// From a row of `id, user_id, content, created_at, upvotes,
    /// downvotes, replies`.
    pub(super) fn read(r: &rusqlite::Row) -> rusqlite::Result<Self> {
        Ok(PostRow {
            author: r.get(1)?,
            post: Post {
                id: r.get(0)?,
                username: String::new(),
                content: r.get(2)?,
                created_at: r.get(3)?,
                upvotes: r.get(4)?,
                downvotes: r.get(5)?,
                replies: r.get(6)?,
                // Rows are what the post cache keeps.
                rendering: PostRendering::kept(),
            },
        })
    }
}

/// The row's text is shared with the posts made from it; then the
/// rendering a response keeps with it (the text again, the other fields and
/// keys: about 150 bytes), the struct and the cache's own entry.
impl Weigh for PostRow {
    fn weigh(&self) -> u64 {
        let text = self.post.content.json().len();
        (2 * text + 150 + std::mem::size_of::<PostRow>() + 96) as u64
    }
}

/// A post in a page: about its rendering's bytes.
impl Weigh for Post {
    fn weigh(&self) -> u64 {
        (self.content.json().len() + self.username.len() + 128) as u64
    }
}

/// Fills in the counters of `posts`, one author's, newest first, from that
/// author's rows of `post_counts` in the same id range: one range read
/// instead of a lookup per post.
fn add_counts(conn: &rusqlite::Connection, author: i64, posts: &mut [Post]) -> StoreResult<()> {
    let (Some(newest), Some(oldest)) = (posts.first(), posts.last()) else {
        return Ok(());
    };
    let mut statement = conn.prepare_cached(
        "SELECT post_id, upvotes, downvotes, replies FROM post_counts
         WHERE user_id = ?1 AND post_id BETWEEN ?2 AND ?3",
    )?;
    let counts = statement.query_map(params![author, oldest.id, newest.id], |r| {
        Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    for count in counts {
        let (id, upvotes, downvotes, replies) = count?;
        if let Ok(at) = posts.binary_search_by(|p| id.cmp(&p.id)) {
            let post = &mut posts[at];
            (post.upvotes, post.downvotes, post.replies) = (upvotes, downvotes, replies);
        }
    }
    Ok(())
}

/// Names the authors of `rows` from the user cards (read in the
/// transaction that began after `before`). Authors exist (foreign key); a
/// post whose author is missing is left out, as a join would.
fn with_authors(
    conn: &rusqlite::Connection,
    users: &UserCards,
    before: BeforeRead,
    rows: Vec<(i64, Post)>,
) -> StoreResult<Vec<Post>> {
    let authors: Vec<i64> = rows.iter().map(|&(author, _)| author).collect();
    let cards = users.cards(conn, &authors, before)?;
    Ok(rows
        .into_iter()
        .filter_map(|(author, mut post)| {
            post.username.clone_from(&cards.get(author)?.username);
            Some(post)
        })
        .collect())
}

fn post_exists(conn: &rusqlite::Connection, post_id: i64) -> StoreResult<bool> {
    Ok(conn
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM posts WHERE id = ?1)")?
        .query_row([post_id], |r| r.get(0))?)
}

/// The post's author; NotFound for no such post.
fn post_author(conn: &rusqlite::Connection, post_id: i64) -> StoreResult<i64> {
    conn.prepare_cached("SELECT user_id FROM posts WHERE id = ?1")?
        .query_row([post_id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::not_found("post not found"))
}

// The row writers below are shared by the store methods and the bulk
// importer (bulk.rs), so both keep the counters the same way.

/// Stores a post and its hashtags and bumps the author's `posts` and `last_post_id`.
pub(super) fn insert_post(
    conn: &rusqlite::Connection,
    author: i64,
    content: &str,
    hashtags: &[String],
    now: UnixSeconds,
    id_floor: i64,
) -> StoreResult<i64> {
    conn.prepare_cached(concat!(
        "INSERT INTO posts (id, user_id, content, created_at) VALUES (",
        next_id!("posts", 4),
        ", ?1, ?2, ?3)"
    ))?
    .execute(params![author, content, now, id_floor])
    .map_err(|err| {
        // The author is the post's one reference: deleted while the
        // request ran (the session is gone too).
        if is_foreign_key_violation(&err) {
            StoreError::AccountGone
        } else {
            err.into()
        }
    })?;
    let id = conn.last_insert_rowid();
    conn.prepare_cached("UPDATE users SET posts = posts + 1, last_post_id = ?2 WHERE id = ?1")?
        .execute(params![author, id])?;
    let mut insert_tag = conn.prepare_cached(
        "INSERT OR IGNORE INTO post_tags (post_id, tag, created_at) VALUES (?1, ?2, ?3)",
    )?;
    for tag in hashtags {
        insert_tag.execute(params![id, tag, now])?;
    }
    Ok(id)
}

/// Records (or moves) a vote and updates the post's and the author's counts.
/// Returns the post's author with the new counts.
pub(super) fn apply_vote(
    conn: &rusqlite::Connection,
    voter: i64,
    post_id: i64,
    kind: VoteKind,
) -> StoreResult<(i64, VoteCounts)> {
    let author = post_author(conn, post_id)?;
    if author == voter {
        return Err(StoreError::forbidden("you cannot vote on your own post"));
    }
    let value: i64 = match kind {
        VoteKind::Up => 1,
        VoteKind::Down => -1,
    };
    let previous: Option<i64> = conn
        .prepare_cached("SELECT kind FROM votes WHERE post_id = ?1 AND user_id = ?2")?
        .query_row(params![post_id, voter], |r| r.get(0))
        .optional()?;
    if previous == Some(value) {
        return Err(StoreError::conflict("you already voted this way"));
    }
    conn.prepare_cached(
        "INSERT INTO votes (post_id, user_id, kind) VALUES (?1, ?2, ?3)
         ON CONFLICT (post_id, user_id) DO UPDATE SET kind = excluded.kind",
    )?
    .execute(params![post_id, voter, value])?;
    // (up, down) deltas: a new vote adds one; a moved vote also takes one away.
    let (up, down) = match (value, previous.is_some()) {
        (1, false) => (1, 0),
        (1, true) => (1, -1),
        (_, false) => (0, 1),
        (_, true) => (-1, 1),
    };
    let counts = conn
        .prepare_cached(
            "INSERT INTO post_counts (user_id, post_id, upvotes, downvotes) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (user_id, post_id) DO UPDATE SET
                 upvotes = upvotes + excluded.upvotes, downvotes = downvotes + excluded.downvotes
             RETURNING upvotes, downvotes",
        )?
        .query_row(params![author, post_id, up, down], |r| {
            Ok(VoteCounts {
                upvotes: r.get(0)?,
                downvotes: r.get(1)?,
            })
        })?;
    conn.prepare_cached(
        "UPDATE users SET upvotes = upvotes + ?2, downvotes = downvotes + ?3 WHERE id = ?1",
    )?
    .execute(params![author, up, down])?;
    Ok((author, counts))
}

/// Stores a reply (checking the post and the parent) and bumps the post's
/// `replies`. Returns the reply's id and the post's author.
pub(super) fn insert_reply(
    conn: &rusqlite::Connection,
    author: i64,
    post_id: i64,
    parent_id: Option<i64>,
    content: &str,
    now: UnixSeconds,
    id_floor: i64,
) -> StoreResult<(i64, i64)> {
    let post_author = post_author(conn, post_id)?;
    if let Some(parent) = parent_id {
        let parent_post: i64 = conn
            .prepare_cached("SELECT post_id FROM replies WHERE id = ?1")?
            .query_row([parent], |r| r.get(0))
            .optional()?
            .ok_or_else(|| StoreError::not_found("parent reply not found"))?;
        if parent_post != post_id {
            return Err(StoreError::conflict("parent reply belongs to another post"));
        }
    }
    conn.prepare_cached(concat!(
        "INSERT INTO replies (id, post_id, user_id, parent_id, content, created_at)
         VALUES (",
        next_id!("replies", 6),
        ", ?1, ?2, ?3, ?4, ?5)"
    ))?
    .execute(params![post_id, author, parent_id, content, now, id_floor])?;
    let id = conn.last_insert_rowid();
    conn.prepare_cached(
        "INSERT INTO post_counts (user_id, post_id, replies) VALUES (?1, ?2, 1)
         ON CONFLICT (user_id, post_id) DO UPDATE SET replies = replies + 1",
    )?
    .execute(params![post_author, post_id])?;
    Ok((id, post_author))
}

/// Whom `viewer` follows, sorted (for binary searches): from `follows`, or
/// read on `conn` and kept there if no follow of theirs changed since
/// `before`.
pub(super) fn followee_ids(
    conn: &rusqlite::Connection,
    follows: &ExactCache<Arc<[i64]>>,
    before: exact_cache::BeforeRead,
    viewer: i64,
) -> StoreResult<Arc<[i64]>> {
    if let Some(followees) = follows.get(viewer) {
        return Ok(followees);
    }
    let mut ids: Vec<i64> = conn
        .prepare_cached("SELECT followee_id FROM follows WHERE follower_id = ?1")?
        .query_map([viewer], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    ids.sort_unstable();
    let ids: Arc<[i64]> = ids.into();
    follows.fill([(viewer, ids.clone())], before);
    Ok(ids)
}

/// What the feed's reads need from the store, taken before their read
/// transaction begins (see `BeforeRead`).
struct FeedRead {
    recent: Arc<RecentPosts>,
    archive: Arc<ArchiveSample>,
    rows: Arc<ExactCache<PostRow>>,
    rows_before: exact_cache::BeforeRead,
    follows: Arc<ExactCache<Arc<[i64]>>>,
    follows_before: exact_cache::BeforeRead,
    users: Arc<UserCards>,
    users_before: BeforeRead,
}

impl SqliteStore {
    fn feed_read(&self) -> FeedRead {
        FeedRead {
            recent: self.recent.clone(),
            archive: self.archive.clone(),
            rows: self.post_rows.clone(),
            rows_before: self.post_rows.before_read(),
            follows: self.follows.clone(),
            follows_before: self.follows.before_read(),
            users: self.users.clone(),
            users_before: self.users.before_read(),
        }
    }
}

impl FeedRead {
    /// The posts with these ids, in their order, unknown ones skipped.
    fn posts(&self, conn: &rusqlite::Connection, ids: &[i64]) -> StoreResult<Vec<Post>> {
        let found = post_rows(conn, &self.rows, self.rows_before, ids, Keep::Cached)?;
        with_authors(conn, &self.users, self.users_before, found)
    }

    /// As `posts`, but a post whose JSON is kept comes without its
    /// author's name (the JSON has it), for the feed: most of its posts
    /// are kept ones, and looking up and copying 30 names was a seventh of
    /// its CPU. A kept post's author exists: an account deletion drops
    /// every kept row.
    fn feed_page(&self, conn: &rusqlite::Connection, ids: &[i64]) -> StoreResult<Vec<Post>> {
        let found = post_rows(conn, &self.rows, self.rows_before, ids, Keep::Cached)?;
        let unrendered: Vec<i64> = found
            .iter()
            .filter(|(_, post)| post.rendering.get().is_none())
            .map(|&(author, _)| author)
            .collect();
        let cards = match unrendered.is_empty() {
            true => None,
            false => Some(self.users.cards(conn, &unrendered, self.users_before)?),
        };
        Ok(found
            .into_iter()
            .filter_map(|(author, mut post)| {
                if post.rendering.get().is_none() {
                    // As a join would, a post whose author is missing is skipped.
                    post.username
                        .clone_from(&cards.as_ref()?.get(author)?.username);
                }
                Some(post)
            })
            .collect())
    }

    fn candidates(&self, conn: &rusqlite::Connection, q: FeedQuery) -> StoreResult<FeedCandidates> {
        let followees = self.followees(conn, q.viewer)?;
        let (global, window_floor) = self.recent.read(|kept| {
            // The global window: the newest posts, none older than its
            // start. Ids and creation times rise together (up to a
            // commit's wait in the writer's queue), so its first post
            // is found by halving rather than by walking the window.
            let newest = kept.newest();
            let first_by_count = newest.len().saturating_sub(q.window_posts.max(0) as usize);
            let first_by_age = newest.partition_point(|p| p.created_at < q.window_start);
            let start = first_by_count.max(first_by_age);
            let window_floor = newest
                .get(start)
                .map_or(newest.back().map_or(0, |p| p.id) + 1, |p| p.id);
            let global: Vec<i64> = newest
                .range(start..)
                .rev()
                .filter(|p| p.author != q.viewer && followees.binary_search(&p.author).is_err())
                .take(q.global)
                .map(|p| p.id)
                .collect();
            (global, window_floor)
        });
        // Followed posts past their share only fill a page the other lists
        // leave short: with the global share full, only the share is read
        // (the fewer posts, the fewer followees whose older posts must be
        // looked up in the index), and the rest only if the archive falls
        // short too. The archive drawn stays: it would want no more with
        // them, and the mix skips a post it shares with them.
        let share_only = global.len() >= q.global_share && q.followed_share < q.followed;
        let limit = if share_only {
            q.followed_share
        } else {
            q.followed
        };
        let mut followed = self.newest_followed(conn, &followees, limit)?;
        let archive = self.archive.draw(
            conn,
            &Draw {
                viewer: q.viewer,
                below: window_floor,
                exclude: &followed,
                wanted: q.archive_wanted(followed.len() + global.len()),
            },
            &self.rows,
            self.rows_before,
        )?;
        if share_only && followed.len() == limit && archive.len() < q.archive {
            followed = self.newest_followed(conn, &followees, q.followed)?;
        }
        Ok(FeedCandidates {
            followed,
            global,
            archive,
        })
    }

    /// Whom `viewer` follows, sorted (for binary searches).
    fn followees(&self, conn: &rusqlite::Connection, viewer: i64) -> StoreResult<Arc<[i64]>> {
        followee_ids(conn, &self.follows, self.follows_before, viewer)
    }

    /// The `limit` newest posts of `followees`, newest first.
    fn newest_followed(
        &self,
        conn: &rusqlite::Connection,
        followees: &[i64],
        limit: usize,
    ) -> StoreResult<Vec<i64>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // The newest followed posts come from the followees who posted
        // most recently, so only that many followees are looked at.
        // When there are that many, each of them has a post at or above
        // the last one's newest, so nothing older can make the list.
        let (mut followed, unknown) = self.recent.read(|kept| {
            let last_posts = |user| kept.last_posts(user);
            let mut active: Vec<(i64, i64)> = followees
                .iter()
                .map(|&user| (kept.latest(user), user))
                .filter(|&(last, _)| last > 0)
                .collect();
            let mut floor = if active.len() >= limit {
                active.select_nth_unstable_by(limit - 1, |a, b| b.cmp(a));
                active.truncate(limit);
                active.iter().map(|&(last, _)| last).min().unwrap_or(0)
            } else {
                0
            };
            // Their newest posts are in memory...
            let mut followed: Vec<i64> = active
                .iter()
                .flat_map(|&(_, user)| last_posts(user))
                .filter(|&id| id > 0 && id >= floor)
                .collect();
            if followed.len() >= limit {
                followed.select_nth_unstable_by(limit - 1, |a, b| b.cmp(a));
                followed.truncate(limit);
                floor = floor.max(followed.iter().copied().min().unwrap_or(0));
            }
            // ...except for a followee whose every kept id is above the
            // floor: older posts of theirs may be too (id range to read).
            let unknown: Vec<(i64, i64, i64)> = active
                .iter()
                .filter_map(|&(_, user)| {
                    let oldest_kept = last_posts(user)[KEPT_PER_USER - 1];
                    (oldest_kept > floor).then_some((user, floor, oldest_kept))
                })
                .collect();
            (followed, unknown)
        });
        if !unknown.is_empty() {
            let mut older_of = conn.prepare_cached(
                "SELECT id FROM posts WHERE user_id = ?1 AND id >= ?2 AND id < ?3
                 ORDER BY id DESC LIMIT ?4 + 0",
            )?;
            for (user, floor, below) in unknown {
                let ids =
                    older_of.query_map(params![user, floor, below, limit as i64], |r| r.get(0))?;
                for id in ids {
                    followed.push(id?);
                }
            }
        }
        followed.sort_unstable_by(|a, b| b.cmp(a));
        followed.truncate(limit);
        Ok(followed)
    }
}

#[async_trait]
impl PostStore for SqliteStore {
    async fn create_post(
        &self,
        author: i64,
        content: String,
        hashtags: Vec<String>,
        now: UnixSeconds,
    ) -> StoreResult<i64> {
        let id_floors = self.id_floors.clone();
        let id = self
            .write(move |tx| {
                let id_floor = id_floors.get(Table::Posts);
                insert_post(tx, author, &content, &hashtags, now, id_floor)
            })
            .await;
        // Dropped whatever the outcome: the commit may have happened even
        // if its fsync failed.
        self.newest_pages.changed(author);
        self.profiles.changed(author);
        let id = id?;
        self.recent.record(RecentPost {
            id,
            author,
            created_at: now,
        });
        Ok(id)
    }

    async fn post(&self, post_id: i64) -> StoreResult<Option<Post>> {
        let (users, rows) = (self.users.clone(), self.post_rows.clone());
        let (before, rows_before) = (users.before_read(), rows.before_read());
        self.read(move |conn| {
            let row = post_rows(conn, &rows, rows_before, &[post_id], Keep::Not)?;
            Ok(with_authors(conn, &users, before, row)?.pop())
        })
        .await
    }

    async fn posts_by(&self, username: &str, page: PageRequest) -> StoreResult<Arc<PostsPage>> {
        let newest = page.before.is_none();
        // A cached newest page needs no reader connection at all.
        if newest
            && let Some(author) = self.users.cached_id(username)
            && let Some(cached) = self.newest_pages.newest(author, page)
        {
            return Ok(cached);
        }
        let username = username.to_owned();
        let (users, pages) = (self.users.clone(), self.newest_pages.clone());
        let (before, pages_before) = (users.before_read(), pages.before_read());
        self.read(move |conn| {
            let user = users
                .by_name(conn, &username, before)?
                .ok_or_else(|| StoreError::not_found("user not found"))?;
            // Every column is in posts_by_user_with_text (migration 0007):
            // the page is read from the index alone, and its counters from
            // the author's run of `post_counts`.
            let mut rows = conn
                .prepare_cached(
                    "SELECT id, content, created_at FROM posts
                     WHERE user_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3 + 0",
                )?
                .query_map(
                    params![user.id, page.before.unwrap_or(i64::MAX), page.limit + 1],
                    |r| {
                        Ok(Post {
                            id: r.get(0)?,
                            username: user.username.clone(),
                            content: r.get(1)?,
                            created_at: r.get(2)?,
                            upvotes: 0,
                            downvotes: 0,
                            replies: 0,
                            rendering: Default::default(),
                        })
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            add_counts(conn, user.id, &mut rows)?;
            let weight = page_weight(&rows);
            let read = PostsPage::new(into_page(rows, page.limit, |p| p.id));
            pages.keep_newest(user.id, page, read.clone(), weight, pages_before);
            Ok(read)
        })
        .await
    }

    async fn vote(&self, voter: i64, post_id: i64, kind: VoteKind) -> StoreResult<VoteCounts> {
        // The author is known once the vote is applied; the commit may
        // still fail after that (and may have happened all the same).
        let author = Arc::new(OnceLock::new());
        let voted_on = author.clone();
        let outcome = self
            .write(move |tx| {
                let (author, counts) = apply_vote(tx, voter, post_id, kind)?;
                let _ = voted_on.set(author);
                Ok(counts)
            })
            .await;
        self.post_rows.changed(post_id);
        if let Some(&author) = author.get() {
            self.newest_pages.changed(author);
            // The author's vote totals.
            self.profiles.changed(author);
        }
        outcome
    }

    async fn create_reply(
        &self,
        author: i64,
        post_id: i64,
        parent_id: Option<i64>,
        content: String,
        now: UnixSeconds,
    ) -> StoreResult<i64> {
        let post_author = Arc::new(OnceLock::new());
        let replied_to = post_author.clone();
        let id_floors = self.id_floors.clone();
        let outcome = self
            .write(move |tx| {
                let (id, post_author) = insert_reply(
                    tx,
                    author,
                    post_id,
                    parent_id,
                    &content,
                    now,
                    id_floors.get(Table::Replies),
                )?;
                let _ = replied_to.set(post_author);
                Ok(id)
            })
            .await;
        self.post_rows.changed(post_id);
        if let Some(&post_author) = post_author.get() {
            self.newest_pages.changed(post_author);
        }
        outcome
    }

    async fn replies(&self, post_id: i64, page: PageRequest) -> StoreResult<Page<Reply>> {
        let users = self.users.clone();
        let before = users.before_read();
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT id, user_id, content, parent_id, created_at FROM replies
                     WHERE post_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3 + 0",
                )?
                .query_map(
                    params![post_id, page.before.unwrap_or(i64::MAX), page.limit + 1],
                    |r| {
                        let reply = Reply {
                            id: r.get(0)?,
                            post_id,
                            username: String::new(),
                            avatar_url: String::new(),
                            content: r.get(2)?,
                            parent_id: r.get(3)?,
                            created_at: r.get(4)?,
                        };
                        Ok((r.get::<_, i64>(1)?, reply))
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            // A reply means its post exists (foreign key): only an empty
            // page needs the post looked up, to tell "none" from "no post".
            if rows.is_empty() && !post_exists(conn, post_id)? {
                return Err(StoreError::not_found("post not found"));
            }
            let authors: Vec<i64> = rows.iter().map(|&(author, _)| author).collect();
            let cards = users.cards(conn, &authors, before)?;
            let mut replies = Vec::with_capacity(rows.len());
            // As a join would, a reply whose author is missing is skipped.
            for (author, mut reply) in rows {
                if let Some(card) = cards.get(author) {
                    reply.username.clone_from(&card.username);
                    reply.avatar_url.clone_from(&card.avatar_url);
                    replies.push(reply);
                }
            }
            Ok(into_page(replies, page.limit, |r| r.id))
        })
        .await
    }

    async fn posts_by_ids(&self, ids: Vec<i64>) -> StoreResult<Vec<Post>> {
        let feed = self.feed_read();
        self.read(move |conn| feed.posts(conn, &ids)).await
    }

    async fn feed_candidates(&self, query: FeedQuery) -> StoreResult<FeedCandidates> {
        let feed = self.feed_read();
        self.read(move |conn| feed.candidates(conn, query)).await
    }

    /// Candidates and posts from one snapshot (one read transaction).
    async fn feed_posts(
        &self,
        query: FeedQuery,
        choose: fn(FeedCandidates) -> Vec<i64>,
    ) -> StoreResult<Vec<Post>> {
        let feed = self.feed_read();
        self.read(move |conn| {
            let candidates = feed.candidates(conn, query)?;
            feed.feed_page(conn, &choose(candidates))
        })
        .await
    }

    async fn tag_uses_since(&self, since: UnixSeconds) -> StoreResult<Vec<TagUse>> {
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT post_id, created_at, tag FROM post_tags WHERE created_at >= ?1",
                )?
                .query_map([since], |r| {
                    Ok(TagUse {
                        post_id: r.get(0)?,
                        created_at: r.get(1)?,
                        tag: r.get(2)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::accounts::NewUser;

    /// Posts 1..=10 created at 100..=109, posts 11..=15 at 1000..=1004.
    async fn store_with_old_and_new_posts() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("mirage.db")).unwrap();
        let author = {
            let mut import = store.bulk_import(1).unwrap();
            let user = NewUser {
                username: "ann".into(),
                email: "ann@example.com".into(),
                password_hash: "x".into(),
                avatar_url: String::new(),
                description: String::new(),
            };
            let id = import.user(&user, 1).unwrap();
            import.finish().unwrap();
            id
        };
        for at in (100..110).chain(1000..1005) {
            store
                .create_post(author, format!("at {at}"), Vec::new(), at)
                .await
                .unwrap();
        }
        (dir, store)
    }

    fn query(window_posts: i64, window_start: UnixSeconds) -> FeedQuery {
        FeedQuery {
            viewer: 0,
            followed: 0,
            followed_share: 0,
            global: 30,
            global_share: 12,
            archive: 0,
            page: 30,
            window_posts,
            window_start,
        }
    }

    /// A viewer following one author of 40 posts at 1000..; another
    /// author's 20 posts at 1000.. and, with `old_posts`, 20 at 100 first.
    async fn store_with_a_prolific_followee(
        old_posts: bool,
    ) -> (tempfile::TempDir, SqliteStore, i64, i64) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("mirage.db")).unwrap();
        let mut import = store.bulk_import(1).unwrap();
        let mut ids = Vec::new();
        for name in ["viewer", "followee", "other"] {
            let user = NewUser {
                username: name.into(),
                email: format!("{name}@example.com"),
                password_hash: "x".into(),
                avatar_url: String::new(),
                description: String::new(),
            };
            ids.push(import.user(&user, 1).unwrap());
        }
        let (viewer, followee, other) = (ids[0], ids[1], ids[2]);
        import.follow(viewer, followee, 1).unwrap();
        import.finish().unwrap();
        let old = if old_posts { 20 } else { 0 };
        for (author, n, at) in [(other, old, 100), (followee, 40, 1000), (other, 20, 1000)] {
            for i in 0..n {
                store
                    .create_post(author, format!("post {i}"), Vec::new(), at + i)
                    .await
                    .unwrap();
            }
        }
        (dir, store, viewer, followee)
    }

    /// The feed's own query, with the global window starting at 500.
    fn feed_query(viewer: i64) -> FeedQuery {
        crate::domain::feed::query(viewer, 500 + crate::domain::feed::WINDOW_SECS)
    }

    #[tokio::test]
    async fn only_the_followed_share_is_read_when_the_other_lists_fill_the_page() {
        let (_dir, store, viewer, _) = store_with_a_prolific_followee(true).await;
        let candidates = store.feed_candidates(feed_query(viewer)).await.unwrap();
        assert_eq!(candidates.followed, (49..=60).rev().collect::<Vec<i64>>());
        assert_eq!(candidates.global.len(), 20);
        assert_eq!(candidates.archive.len(), 6);
        assert_eq!(crate::domain::feed::mix(candidates).len(), 30);
    }

    #[tokio::test]
    async fn followed_posts_past_their_share_fill_a_page_the_archive_leaves_short() {
        // No old posts: no archive, so the page takes 18 followed posts,
        // as it did when every feed read 30 of them.
        let (_dir, store, viewer, followee) = store_with_a_prolific_followee(false).await;
        let candidates = store.feed_candidates(feed_query(viewer)).await.unwrap();
        assert!(candidates.archive.is_empty());
        assert_eq!(candidates.followed.len(), 30);
        let page = store
            .posts_by_ids(crate::domain::feed::mix(candidates))
            .await
            .unwrap();
        assert_eq!(page.len(), 30);
        let followee_name = "followee";
        let followed = page.iter().filter(|p| p.username == followee_name).count();
        assert_eq!(followed, 18, "{followee}");
    }

    #[tokio::test]
    async fn the_global_window_ends_at_its_start_or_its_size_and_the_archive_below_it() {
        let (_dir, store) = store_with_old_and_new_posts().await;
        // By age: the five posts from 1000 on.
        let by_age = store.feed_candidates(query(1_000, 500)).await.unwrap();
        assert_eq!(by_age.global, [15, 14, 13, 12, 11]);
        assert!(!by_age.archive.is_empty());
        assert!(by_age.archive.iter().all(|&id| id < 11), "{by_age:?}");
        // By size: the newest three.
        let by_size = store.feed_candidates(query(3, 500)).await.unwrap();
        assert_eq!(by_size.global, [15, 14, 13]);
        assert!(by_size.archive.iter().all(|&id| id < 13), "{by_size:?}");
        // A start after every post: an empty window, everything archive.
        let empty = store.feed_candidates(query(1_000, 5_000)).await.unwrap();
        assert!(empty.global.is_empty());
        assert!(empty.archive.iter().any(|&id| id > 10), "{empty:?}");
    }
}
