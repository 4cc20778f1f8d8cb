//! Posts, votes, replies, feed candidates and trending on PostgreSQL.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx_core::{query_as::query_as, query_scalar::query_scalar};

use super::{PostgresStore, accounts::user_by_name, begin, into_page, retrying};
use crate::store::{
    Page, PageRequest, StoreError, StoreResult, UnixSeconds,
    posts::{
        FeedCandidates, FeedQuery, Post, PostStore, PostText, PostsPage, Reply, TagUse, VoteCounts,
        VoteKind,
    },
};

const POST_COLUMNS: &str =
    "p.id, u.username, p.content, p.created_at, p.upvotes, p.downvotes, p.replies";

type PostRow = (i64, String, String, i64, i64, i64, i64);

fn post_from_row(
    (id, username, content, created_at, upvotes, downvotes, replies): PostRow,
) -> Post {
    Post {
        id,
        username,
        content: PostText::new(&content),
        created_at,
        upvotes,
        downvotes,
        replies,
        rendering: Default::default(),
    }
}

type ReplyRow = (i64, i64, String, String, String, Option<i64>, i64);

#[async_trait]
impl PostStore for PostgresStore {
    async fn create_post(
        &self,
        author: i64,
        content: String,
        hashtags: Vec<String>,
        now: UnixSeconds,
    ) -> StoreResult<i64> {
        let content = &content;
        let hashtags = &hashtags;
        retrying(move || async move {
            // One statement in a transaction of its own: three round trips
            // (each statement was one: seven a post). Not an implicit
            // transaction: should a connection ever be left inside someone's
            // transaction (see `begin`), this BEGIN and COMMIT still end it
            // with the post committed, where a lone statement would stay
            // uncommitted inside it.
            let mut tx = begin(&self.pool).await?;
            // The author's row is locked before the post refers to it, in the
            // order an account deletion takes them: inserting first would hold
            // the row's key lock (the foreign key) while waiting for the
            // deletion to let go of the row, which waits for that key lock (a
            // deadlock, seen as 500s for both). After a deletion, no row.
            // GREATEST: a concurrent post by the same author may commit first
            // with a higher id.
            let id: Option<i64> = query_scalar(
                "WITH author AS (SELECT id FROM users WHERE id = $1 FOR NO KEY UPDATE),
                 post AS (INSERT INTO posts (user_id, content, created_at)
                          SELECT id, $2, $3 FROM author RETURNING id),
                 tags AS (INSERT INTO post_tags (post_id, tag, created_at)
                          SELECT post.id, tag, $3 FROM post, unnest($4::text[]) AS tag
                          ON CONFLICT (post_id, tag) DO NOTHING),
                 counted AS (UPDATE users
                             SET posts = posts + 1, last_post_id = GREATEST(last_post_id, post.id)
                             FROM post WHERE users.id = $1)
                 SELECT id FROM post",
            )
            .bind(author)
            .bind(content)
            .bind(now)
            .bind(hashtags)
            .fetch_optional(&mut *tx)
            .await?;
            let id = id.ok_or(StoreError::AccountGone)?;
            tx.commit().await?;
            Ok(id)
        })
        .await
    }

    async fn post(&self, post_id: i64) -> StoreResult<Option<Post>> {
        let row: Option<PostRow> = query_as(&format!(
            "SELECT {POST_COLUMNS} FROM posts p JOIN users u ON u.id = p.user_id WHERE p.id = $1"
        ))
        .bind(post_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(post_from_row))
    }

    async fn posts_by(&self, username: &str, page: PageRequest) -> StoreResult<Arc<PostsPage>> {
        let mut conn = self.pool.acquire().await?;
        let user = user_by_name(&mut conn, username)
            .await?
            .ok_or_else(|| StoreError::not_found("user not found"))?;
        let rows: Vec<PostRow> = query_as(&format!(
            "SELECT {POST_COLUMNS} FROM posts p JOIN users u ON u.id = p.user_id
             WHERE p.user_id = $1 AND p.id < $2 ORDER BY p.id DESC LIMIT $3"
        ))
        .bind(user.id)
        .bind(page.before.unwrap_or(i64::MAX))
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&mut *conn)
        .await?;
        let rows = rows.into_iter().map(post_from_row).collect();
        Ok(PostsPage::new(into_page(rows, page.limit, |p| p.id)))
    }

    async fn vote(&self, voter: i64, post_id: i64, kind: VoteKind) -> StoreResult<VoteCounts> {
        let value: i16 = match kind {
            VoteKind::Up => 1,
            VoteKind::Down => -1,
        };
        retrying(move || async move {
            let mut tx = begin(&self.pool).await?;
            // The post's row lock serialises every vote on it, on every node.
            // The author's row next, before the vote row refers to the
            // voter's (a key lock on it): posts, then users, as an account
            // deletion locks them. Taken later (by the counter's update), a
            // first vote held that key lock while waiting for an author the
            // voter's own deletion had locked, which then waited for the
            // key lock to delete the voter (a deadlock). Both in one round
            // trip: the author's lock is taken for the post's row once it
            // is locked (none on one's own post, which is refused).
            let author: i64 = query_scalar(
                "WITH post AS (SELECT user_id FROM posts WHERE id = $1 FOR NO KEY UPDATE)
                 SELECT post.user_id, (SELECT id FROM users
                                       WHERE id = post.user_id AND post.user_id != $2
                                       FOR NO KEY UPDATE)
                 FROM post",
            )
            .bind(post_id)
            .bind(voter)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::not_found("post not found"))?;
            if author == voter {
                return Err(StoreError::forbidden("you cannot vote on your own post"));
            }
            // The rest in one statement, whose snapshot is taken now that
            // the post is locked, so it sees every earlier vote on it. No
            // row when the voter already voted this way. (up, down) deltas:
            // a new vote adds one; a moved vote also takes one away.
            let counts: Option<(i64, i64)> = query_as(
                "WITH previous AS (SELECT (SELECT kind FROM votes
                                           WHERE post_id = $1 AND user_id = $2) AS kind),
                 delta AS (
                     SELECT CASE WHEN $3 = 1 THEN 1 WHEN kind IS NULL THEN 0 ELSE -1 END AS up,
                            CASE WHEN $3 = -1 THEN 1 WHEN kind IS NULL THEN 0 ELSE -1 END AS down
                     FROM previous WHERE kind IS DISTINCT FROM $3),
                 cast_vote AS (INSERT INTO votes (post_id, user_id, kind)
                               SELECT $1, $2, $3 FROM delta
                               ON CONFLICT (post_id, user_id) DO UPDATE SET kind = excluded.kind),
                 author AS (UPDATE users SET upvotes = upvotes + delta.up,
                                             downvotes = downvotes + delta.down
                            FROM delta WHERE users.id = $4),
                 counted AS (UPDATE posts SET upvotes = upvotes + delta.up,
                                              downvotes = downvotes + delta.down
                             FROM delta WHERE posts.id = $1
                             RETURNING posts.upvotes, posts.downvotes)
                 SELECT upvotes, downvotes FROM counted",
            )
            .bind(post_id)
            .bind(voter)
            .bind(value)
            .bind(author)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((upvotes, downvotes)) = counts else {
                return Err(StoreError::conflict("you already voted this way"));
            };
            tx.commit().await?;
            Ok(VoteCounts { upvotes, downvotes })
        })
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
        let content = &content;
        retrying(move || async move {
            // One statement in a transaction (three round trips, was five
            // or six; why not an implicit one: `create_post`). The post is
            // locked before the reply refers to the replier's row: inserting
            // first held that row's key lock while waiting for an account
            // deletion holding the post, which then waited for the key lock
            // (a deadlock). Nothing is written unless the post exists and
            // the parent, if any, is one of its replies.
            let mut tx = begin(&self.pool).await?;
            let (post, parent_post, id): (Option<i64>, Option<i64>, Option<i64>) = query_as(
                "WITH post AS (SELECT id FROM posts WHERE id = $1 FOR NO KEY UPDATE),
                 parent AS (SELECT (SELECT post_id FROM replies WHERE id = $3) AS post_id),
                 checked AS (SELECT post.id FROM post, parent
                             WHERE $3::int8 IS NULL OR parent.post_id = post.id),
                 reply AS (INSERT INTO replies (post_id, user_id, parent_id, content, created_at)
                           SELECT id, $2, $3, $4, $5 FROM checked RETURNING id),
                 counted AS (UPDATE posts SET replies = replies + 1
                             FROM reply WHERE posts.id = $1)
                 SELECT (SELECT id FROM post), (SELECT post_id FROM parent),
                        (SELECT id FROM reply)",
            )
            .bind(post_id)
            .bind(author)
            .bind(parent_id)
            .bind(content)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let id = match (post, parent_post, id) {
                (None, _, _) => Err(StoreError::not_found("post not found")),
                (_, None, _) if parent_id.is_some() => {
                    Err(StoreError::not_found("parent reply not found"))
                }
                (_, Some(parent_post), _) if parent_post != post_id => {
                    Err(StoreError::conflict("parent reply belongs to another post"))
                }
                (_, _, Some(id)) => Ok(id),
                _ => Err(StoreError::Other("the reply was not stored".into())),
            }?;
            tx.commit().await?;
            Ok(id)
        })
        .await
    }

    async fn replies(&self, post_id: i64, page: PageRequest) -> StoreResult<Page<Reply>> {
        let mut conn = self.pool.acquire().await?;
        let exists: Option<i64> = query_scalar("SELECT id FROM posts WHERE id = $1")
            .bind(post_id)
            .fetch_optional(&mut *conn)
            .await?;
        if exists.is_none() {
            return Err(StoreError::not_found("post not found"));
        }
        let rows: Vec<ReplyRow> = query_as(
            "SELECT r.id, r.post_id, u.username, u.avatar_url, r.content, r.parent_id, r.created_at
             FROM replies r JOIN users u ON u.id = r.user_id
             WHERE r.post_id = $1 AND r.id < $2 ORDER BY r.id DESC LIMIT $3",
        )
        .bind(post_id)
        .bind(page.before.unwrap_or(i64::MAX))
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&mut *conn)
        .await?;
        let rows = rows
            .into_iter()
            .map(
                |(id, post_id, username, avatar_url, content, parent_id, created_at)| Reply {
                    id,
                    post_id,
                    username,
                    avatar_url,
                    content,
                    parent_id,
                    created_at,
                },
            )
            .collect();
        Ok(into_page(rows, page.limit, |r| r.id))
    }

    async fn posts_by_ids(&self, ids: Vec<i64>) -> StoreResult<Vec<Post>> {
        let rows: Vec<PostRow> = query_as(&format!(
            "SELECT {POST_COLUMNS} FROM posts p JOIN users u ON u.id = p.user_id
             WHERE p.id = ANY($1)"
        ))
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        let mut by_id: std::collections::HashMap<i64, Post> = rows
            .into_iter()
            .map(|row| {
                let post = post_from_row(row);
                (post.id, post)
            })
            .collect();
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    async fn feed_candidates(&self, query: FeedQuery) -> StoreResult<FeedCandidates> {
        let q = query;
        let mut conn = self.pool.acquire().await?;
        // The newest followed posts come from the followees who posted most
        // recently, so only that many followees' indexes are read, each from
        // the 30th active followee's newest post up (see the SQLite store).
        let followed: Vec<i64> = query_scalar(
            "WITH active AS (
                 SELECT u.id AS uid, u.last_post_id AS last
                 FROM follows f JOIN users u ON u.id = f.followee_id
                 WHERE f.follower_id = $1 AND u.last_post_id > 0
                 ORDER BY u.last_post_id DESC LIMIT $2),
             floor AS (SELECT CASE WHEN COUNT(*) >= $2 THEN MIN(last) ELSE 0 END AS id
                       FROM active)
             SELECT c.id FROM active CROSS JOIN floor
             CROSS JOIN LATERAL (SELECT id FROM posts
                                 WHERE user_id = active.uid AND id >= floor.id
                                 ORDER BY id DESC LIMIT $2) AS c
             ORDER BY c.id DESC LIMIT $2",
        )
        .bind(q.viewer)
        .bind(q.followed as i64)
        .fetch_all(&mut *conn)
        .await?;
        // The newest id and the first in the time window, in one round trip:
        // one index seek each (ids follow creation time, to the second).
        let (max_id, first_recent): (i64, Option<i64>) = query_as(
            "SELECT COALESCE((SELECT MAX(id) FROM posts), 0),
                    (SELECT id FROM posts WHERE created_at >= $1 ORDER BY created_at LIMIT 1)",
        )
        .bind(q.window_start)
        .fetch_one(&mut *conn)
        .await?;
        let window_floor = first_recent
            .unwrap_or(max_id + 1)
            .max(max_id - q.window_posts + 1);
        // Scans at most the window (newest posts), skipping the viewer and followees.
        let global: Vec<i64> = query_scalar(
            "SELECT p.id FROM posts p
             WHERE p.id >= $2 AND p.user_id != $1
               AND NOT EXISTS (SELECT 1 FROM follows f
                               WHERE f.follower_id = $1 AND f.followee_id = p.user_id)
             ORDER BY p.id DESC LIMIT $3",
        )
        .bind(q.viewer)
        .bind(window_floor)
        .bind(q.global as i64)
        .fetch_all(&mut *conn)
        .await?;
        // Archive: random probes into the ids below the window, each an
        // index seek, all in one round trip (a statement a probe made the
        // feed a dozen round trips, each costing both processes more CPU
        // than the seek). Three probes a post wanted, kept in their order
        // until enough distinct posts new to the page are found.
        let archive_wanted = q.archive_wanted(followed.len() + global.len());
        let mut archive: Vec<i64> = Vec::new();
        if window_floor > 1 && archive_wanted > 0 {
            let starts: Vec<i64> = (0..archive_wanted * 3)
                .map(|_| rand::random_range(1..window_floor))
                .collect();
            let probed: Vec<i64> = query_scalar(
                "SELECT found.id FROM unnest($1::int8[]) WITH ORDINALITY AS probe(start, n)
                 CROSS JOIN LATERAL (SELECT id FROM posts
                                     WHERE id >= probe.start AND id < $2 AND user_id != $3
                                     ORDER BY id LIMIT 1) AS found
                 ORDER BY probe.n",
            )
            .bind(&starts)
            .bind(window_floor)
            .bind(q.viewer)
            .fetch_all(&mut *conn)
            .await?;
            for id in probed {
                if archive.len() >= archive_wanted {
                    break;
                }
                if !archive.contains(&id) && !followed.contains(&id) {
                    archive.push(id);
                }
            }
        }
        Ok(FeedCandidates {
            followed,
            global,
            archive,
        })
    }

    async fn tag_uses_since(&self, since: UnixSeconds) -> StoreResult<Vec<TagUse>> {
        let rows: Vec<(i64, i64, String)> =
            query_as("SELECT post_id, created_at, tag FROM post_tags WHERE created_at >= $1")
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(post_id, created_at, tag)| TagUse {
                post_id,
                created_at,
                tag,
            })
            .collect())
    }
}
