//! Posts, votes, replies, feed candidates and trending on SQLite.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};

use super::{SqliteStore, accounts::user_by_name, into_page};
use crate::store::{
    Page, PageRequest, StoreError, StoreResult, UnixSeconds,
    posts::{FeedCandidates, FeedQuery, Post, PostStore, Reply, TagUse, VoteCounts, VoteKind},
};

const POST_COLUMNS: &str =
    "p.id, u.username, p.content, p.created_at, p.upvotes, p.downvotes, p.replies";

fn post_from_row(r: &Row) -> rusqlite::Result<Post> {
    Ok(Post {
        id: r.get(0)?,
        username: r.get(1)?,
        content: r.get(2)?,
        created_at: r.get(3)?,
        upvotes: r.get(4)?,
        downvotes: r.get(5)?,
        replies: r.get(6)?,
    })
}

fn post_exists(conn: &rusqlite::Connection, post_id: i64) -> StoreResult<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM posts WHERE id = ?1)",
        [post_id],
        |r| r.get(0),
    )?)
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
) -> StoreResult<i64> {
    conn.prepare_cached("INSERT INTO posts (user_id, content, created_at) VALUES (?1, ?2, ?3)")?
        .execute(params![author, content, now])?;
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
pub(super) fn apply_vote(
    conn: &rusqlite::Connection,
    voter: i64,
    post_id: i64,
    kind: VoteKind,
) -> StoreResult<VoteCounts> {
    let author: i64 = conn
        .prepare_cached("SELECT user_id FROM posts WHERE id = ?1")?
        .query_row([post_id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::not_found("post not found"))?;
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
    conn.prepare_cached(
        "UPDATE posts SET upvotes = upvotes + ?2, downvotes = downvotes + ?3 WHERE id = ?1",
    )?
    .execute(params![post_id, up, down])?;
    conn.prepare_cached(
        "UPDATE users SET upvotes = upvotes + ?2, downvotes = downvotes + ?3 WHERE id = ?1",
    )?
    .execute(params![author, up, down])?;
    Ok(conn
        .prepare_cached("SELECT upvotes, downvotes FROM posts WHERE id = ?1")?
        .query_row([post_id], |r| {
            Ok(VoteCounts {
                upvotes: r.get(0)?,
                downvotes: r.get(1)?,
            })
        })?)
}

/// Stores a reply (checking the post and the parent) and bumps the post's `replies`.
pub(super) fn insert_reply(
    conn: &rusqlite::Connection,
    author: i64,
    post_id: i64,
    parent_id: Option<i64>,
    content: &str,
    now: UnixSeconds,
) -> StoreResult<i64> {
    if !post_exists(conn, post_id)? {
        return Err(StoreError::not_found("post not found"));
    }
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
    conn.prepare_cached(
        "INSERT INTO replies (post_id, user_id, parent_id, content, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![post_id, author, parent_id, content, now])?;
    let id = conn.last_insert_rowid();
    conn.prepare_cached("UPDATE posts SET replies = replies + 1 WHERE id = ?1")?
        .execute([post_id])?;
    Ok(id)
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
        self.write(move |tx| insert_post(tx, author, &content, &hashtags, now))
            .await
    }

    async fn post(&self, post_id: i64) -> StoreResult<Option<Post>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {POST_COLUMNS} FROM posts p JOIN users u ON u.id = p.user_id WHERE p.id = ?1"
                ))?
                .query_row([post_id], post_from_row)
                .optional()?)
        })
        .await
    }

    async fn posts_by(&self, username: &str, page: PageRequest) -> StoreResult<Page<Post>> {
        let username = username.to_owned();
        self.read(move |conn| {
            let user = user_by_name(conn, &username)?
                .ok_or_else(|| StoreError::not_found("user not found"))?;
            let rows = conn
                .prepare_cached(&format!(
                    "SELECT {POST_COLUMNS} FROM posts p JOIN users u ON u.id = p.user_id
                     WHERE p.user_id = ?1 AND p.id < ?2 ORDER BY p.id DESC LIMIT ?3 + 0"
                ))?
                .query_map(
                    params![user.id, page.before.unwrap_or(i64::MAX), page.limit + 1],
                    post_from_row,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(into_page(rows, page.limit, |p| p.id))
        })
        .await
    }

    async fn vote(&self, voter: i64, post_id: i64, kind: VoteKind) -> StoreResult<VoteCounts> {
        self.write(move |tx| apply_vote(tx, voter, post_id, kind))
            .await
    }

    async fn create_reply(
        &self,
        author: i64,
        post_id: i64,
        parent_id: Option<i64>,
        content: String,
        now: UnixSeconds,
    ) -> StoreResult<i64> {
        self.write(move |tx| insert_reply(tx, author, post_id, parent_id, &content, now))
            .await
    }

    async fn replies(&self, post_id: i64, page: PageRequest) -> StoreResult<Page<Reply>> {
        self.read(move |conn| {
            if !post_exists(conn, post_id)? {
                return Err(StoreError::not_found("post not found"));
            }
            let rows = conn
                .prepare_cached(
                    "SELECT r.id, r.post_id, u.username, u.avatar_url, r.content, r.parent_id, r.created_at
                     FROM replies r JOIN users u ON u.id = r.user_id
                     WHERE r.post_id = ?1 AND r.id < ?2 ORDER BY r.id DESC LIMIT ?3 + 0",
                )?
                .query_map(
                    params![post_id, page.before.unwrap_or(i64::MAX), page.limit + 1],
                    |r| {
                        Ok(Reply {
                            id: r.get(0)?,
                            post_id: r.get(1)?,
                            username: r.get(2)?,
                            avatar_url: r.get(3)?,
                            content: r.get(4)?,
                            parent_id: r.get(5)?,
                            created_at: r.get(6)?,
                        })
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(into_page(rows, page.limit, |r| r.id))
        })
        .await
    }

    async fn feed_candidates(&self, query: FeedQuery) -> StoreResult<FeedCandidates> {
        self.read(move |conn| {
            let q = query;
            // The newest followed posts come from the followees who posted most
            // recently, so only that many followees' indexes are read. When
            // there are that many, each of them has a post at or above the
            // last one's newest, so nothing older can make the list: the
            // index reads start there. Rows are joined only for the winners.
            let followed = conn
                .prepare_cached(&format!(
                    "WITH active AS (
                         SELECT u.id AS uid, u.last_post_id AS last
                         FROM follows f JOIN users u ON u.id = f.followee_id
                         WHERE f.follower_id = ?1 AND u.last_post_id > 0
                         ORDER BY u.last_post_id DESC LIMIT ?2 + 0),
                     floor AS (SELECT CASE WHEN COUNT(*) >= ?2 THEN MIN(last) ELSE 0 END AS id
                               FROM active),
                     ids AS (SELECT p.id FROM active, floor
                             JOIN posts p ON p.id IN (
                                 SELECT id FROM posts WHERE user_id = active.uid AND id >= floor.id
                                 ORDER BY id DESC LIMIT ?2 + 0)
                             ORDER BY p.id DESC LIMIT ?2 + 0)
                     SELECT {POST_COLUMNS} FROM ids
                     JOIN posts p ON p.id = ids.id JOIN users u ON u.id = p.user_id
                     ORDER BY p.id DESC"
                ))?
                .query_map(params![q.viewer, q.followed as i64], post_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            let max_id: i64 =
                conn.query_row("SELECT COALESCE(MAX(id), 0) FROM posts", [], |r| r.get(0))?;
            // One index seek: ids follow creation time (to the second).
            let first_recent: i64 = conn
                .query_row(
                    "SELECT id FROM posts WHERE created_at >= ?1 ORDER BY created_at LIMIT 1",
                    [q.window_start],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(max_id + 1);
            let window_floor = first_recent.max(max_id - q.window_posts + 1);
            // Scans at most the window (newest posts), skipping the viewer and followees.
            let global = conn
                .prepare_cached(&format!(
                    "SELECT {POST_COLUMNS} FROM posts p JOIN users u ON u.id = p.user_id
                     WHERE p.id >= ?2 AND p.user_id != ?1
                       AND NOT EXISTS (SELECT 1 FROM follows f
                                       WHERE f.follower_id = ?1 AND f.followee_id = p.user_id)
                     ORDER BY p.id DESC LIMIT ?3 + 0"
                ))?
                .query_map(
                    params![q.viewer, window_floor, q.global as i64],
                    post_from_row,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            // Archive: random probes into the ids below the window, each an index seek.
            let archive_wanted = q.archive_wanted(&followed, global.len(), window_floor);
            let mut archive = Vec::new();
            if window_floor > 1 {
                let mut probe = conn.prepare_cached(&format!(
                    "SELECT {POST_COLUMNS} FROM posts p JOIN users u ON u.id = p.user_id
                     WHERE p.id >= ?1 AND p.id < ?2 AND p.user_id != ?3 ORDER BY p.id LIMIT 1"
                ))?;
                for _ in 0..archive_wanted * 3 {
                    if archive.len() >= archive_wanted {
                        break;
                    }
                    let start = rand::random_range(1..window_floor);
                    if let Some(post) = probe
                        .query_row(params![start, window_floor, q.viewer], post_from_row)
                        .optional()?
                        && !archive.iter().any(|p: &Post| p.id == post.id)
                    {
                        archive.push(post);
                    }
                }
            }
            Ok(FeedCandidates {
                followed,
                global,
                archive,
            })
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
