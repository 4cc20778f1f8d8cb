//! Accounts, sessions, profiles and follows on PostgreSQL.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx_core::{query::query, query_as::query_as, query_scalar::query_scalar};
use sqlx_postgres::PgConnection;

use super::{PostgresStore, begin, into_page, retrying, unique_violation};
use crate::store::{
    Page, PageRequest, SharedPage, StoreError, StoreResult,
    accounts::{
        AccountStore, DeletedAccount, LoginRecord, NewUser, Profile, SettingsChange, UserRef,
        UserSummary,
    },
};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

type ProfileRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
);

/// Finds a user by name (ignoring case) on a connection or in a transaction.
pub(super) async fn user_by_name(
    conn: &mut PgConnection,
    username: &str,
) -> StoreResult<Option<UserRef>> {
    let row: Option<(i64, String)> =
        query_as("SELECT id, username FROM users WHERE username_key = $1")
            .bind(username.to_lowercase())
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(id, username)| UserRef { id, username }))
}

async fn require_user(conn: &mut PgConnection, username: &str) -> StoreResult<UserRef> {
    user_by_name(conn, username)
        .await?
        .ok_or_else(|| StoreError::not_found("user not found"))
}

/// Locks the rows of the given users, in id order so that two transactions
/// locking the same pair cannot deadlock. `NO KEY UPDATE` is what an
/// `UPDATE` of a counter takes anyway, and it does not block foreign-key checks.
/// Returns how many of them still exist (a user deleted meanwhile is skipped).
pub(super) async fn lock_users(conn: &mut PgConnection, ids: &[i64]) -> StoreResult<usize> {
    let locked: Vec<i64> =
        query_scalar("SELECT id FROM users WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
            .bind(ids)
            .fetch_all(conn)
            .await?;
    Ok(locked.len())
}

#[async_trait]
impl AccountStore for PostgresStore {
    async fn create_user(&self, user: NewUser) -> StoreResult<UserRef> {
        let user = &user;
        retrying(move || async move {
            let mut tx = begin(&self.pool).await?;
            let name_key = user.username.to_lowercase();
            let email_key = user.email.to_lowercase();
            let (name_taken, email_taken): (bool, bool) = query_as(
                "SELECT EXISTS(SELECT 1 FROM users WHERE username_key = $1),
                        EXISTS(SELECT 1 FROM users WHERE email_key = $2)",
            )
            .bind(&name_key)
            .bind(&email_key)
            .fetch_one(&mut *tx)
            .await?;
            if name_taken {
                return Err(StoreError::conflict("username already taken"));
            }
            if email_taken {
                return Err(StoreError::conflict("email already taken"));
            }
            // A concurrent registration can still win the race: the unique
            // indexes decide, and their names tell which field clashed.
            let id: i64 = query_scalar(
                "INSERT INTO users (username, username_key, email, email_key, password_hash,
                                    avatar_url, description, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            )
            .bind(&user.username)
            .bind(&name_key)
            .bind(&user.email)
            .bind(&email_key)
            .bind(&user.password_hash)
            .bind(&user.avatar_url)
            .bind(&user.description)
            .bind(now())
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| match unique_violation(&e).as_deref() {
                Some("users_username_key") => StoreError::conflict("username already taken"),
                Some("users_email_key") => StoreError::conflict("email already taken"),
                Some(_) => StoreError::conflict("username or email already taken"),
                None => e.into(),
            })?;
            tx.commit().await?;
            Ok(UserRef {
                id,
                username: user.username.clone(),
            })
        })
        .await
    }

    async fn find_user(&self, username: &str) -> StoreResult<Option<UserRef>> {
        let mut conn = self.pool.acquire().await?;
        user_by_name(&mut conn, username).await
    }

    async fn login_record(&self, username: &str) -> StoreResult<Option<LoginRecord>> {
        let row: Option<(i64, String, String)> =
            query_as("SELECT id, username, password_hash FROM users WHERE username_key = $1")
                .bind(username.to_lowercase())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(id, username, password_hash)| LoginRecord {
            user: UserRef { id, username },
            password_hash,
        }))
    }

    async fn user_count(&self) -> StoreResult<i64> {
        Ok(query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn create_session(&self, user_id: i64, token_hash: [u8; 32]) -> StoreResult<()> {
        query("INSERT INTO sessions (token_hash, user_id, created_at) VALUES ($1, $2, $3)")
            .bind(&token_hash[..])
            .bind(user_id)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn session_user(&self, token_hash: [u8; 32]) -> StoreResult<Option<UserRef>> {
        let row: Option<(i64, String)> = query_as(
            "SELECT u.id, u.username FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = $1",
        )
        .bind(&token_hash[..])
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(id, username)| UserRef { id, username }))
    }

    async fn end_session(&self, token_hash: [u8; 32]) -> StoreResult<Option<i64>> {
        Ok(
            query_scalar("DELETE FROM sessions WHERE token_hash = $1 RETURNING user_id")
                .bind(&token_hash[..])
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn profile(&self, username: &str) -> StoreResult<Option<Profile>> {
        let row: Option<ProfileRow> = query_as(
            "SELECT username, avatar_url, description, custom_css, background_image,
                    created_at, followers, following, posts, upvotes, downvotes
             FROM users WHERE username_key = $1",
        )
        .bind(username.to_lowercase())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(
            |(
                username,
                avatar_url,
                description,
                custom_css,
                background_image,
                created_at,
                followers,
                following,
                posts,
                upvotes,
                downvotes,
            )| Profile {
                username,
                avatar_url,
                description,
                custom_css,
                background_image,
                created_at,
                followers,
                following,
                posts,
                upvotes,
                downvotes,
            },
        ))
    }

    async fn update_settings(
        &self,
        user_id: i64,
        change: SettingsChange,
        keep_session: [u8; 32],
    ) -> StoreResult<()> {
        let change = &change;
        retrying(move || async move {
            let mut tx = begin(&self.pool).await?;
            if let Some(email) = &change.email {
                let taken: bool = query_scalar(
                    "SELECT EXISTS(SELECT 1 FROM users WHERE email_key = $1 AND id != $2)",
                )
                .bind(email.to_lowercase())
                .bind(user_id)
                .fetch_one(&mut *tx)
                .await?;
                if taken {
                    return Err(StoreError::conflict("email already taken"));
                }
                query("UPDATE users SET email = $1, email_key = $2 WHERE id = $3")
                    .bind(email)
                    .bind(email.to_lowercase())
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| match unique_violation(&e) {
                        Some(_) => StoreError::conflict("email already taken"),
                        None => e.into(),
                    })?;
            }
            for (column, value) in change.plain_columns() {
                if let Some(value) = value {
                    query(&format!("UPDATE users SET {column} = $1 WHERE id = $2"))
                        .bind(value)
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            if change.password_hash.is_some() {
                query("DELETE FROM sessions WHERE user_id = $1 AND token_hash != $2")
                    .bind(user_id)
                    .bind(&keep_session[..])
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn follow(&self, follower: i64, followee: &str) -> StoreResult<UserRef> {
        retrying(move || async move {
            let mut tx = begin(&self.pool).await?;
            let target = lock_follow_pair(&mut tx, follower, followee).await?;
            let added: i64 = query_scalar(
                "WITH added AS (
                     INSERT INTO follows (follower_id, followee_id, created_at) VALUES ($1, $2, $3)
                     ON CONFLICT (follower_id, followee_id) DO NOTHING
                     RETURNING 1),
                 counted AS (
                     UPDATE users
                     SET following = following + CASE WHEN id = $1 THEN 1 ELSE 0 END,
                         followers = followers + CASE WHEN id = $2 THEN 1 ELSE 0 END
                     WHERE id IN ($1, $2) AND EXISTS (SELECT 1 FROM added))
                 SELECT count(*) FROM added",
            )
            .bind(follower)
            .bind(target.id)
            .bind(now())
            .fetch_one(&mut *tx)
            .await?;
            if added == 0 {
                return Err(StoreError::conflict(format!(
                    "already following {}",
                    target.username
                )));
            }
            tx.commit().await?;
            Ok(target)
        })
        .await
    }

    async fn unfollow(&self, follower: i64, followee: &str) -> StoreResult<UserRef> {
        retrying(move || async move {
            let mut tx = begin(&self.pool).await?;
            let target = lock_follow_pair(&mut tx, follower, followee).await?;
            let removed: i64 = query_scalar(
                "WITH removed AS (
                     DELETE FROM follows WHERE follower_id = $1 AND followee_id = $2
                     RETURNING 1),
                 counted AS (
                     UPDATE users
                     SET following = following - CASE WHEN id = $1 THEN 1 ELSE 0 END,
                         followers = followers - CASE WHEN id = $2 THEN 1 ELSE 0 END
                     WHERE id IN ($1, $2) AND EXISTS (SELECT 1 FROM removed))
                 SELECT count(*) FROM removed",
            )
            .bind(follower)
            .bind(target.id)
            .fetch_one(&mut *tx)
            .await?;
            if removed == 0 {
                return Err(StoreError::conflict(format!(
                    "you are not following {}",
                    target.username
                )));
            }
            tx.commit().await?;
            Ok(target)
        })
        .await
    }

    async fn is_following(&self, follower: i64, followee: &str) -> StoreResult<bool> {
        // No row: no such user.
        let following: Option<bool> = query_scalar(
            "SELECT EXISTS(SELECT 1 FROM follows WHERE follower_id = $1 AND followee_id = u.id)
             FROM users u WHERE u.username_key = $2",
        )
        .bind(follower)
        .bind(followee.to_lowercase())
        .fetch_optional(&self.pool)
        .await?;
        following.ok_or_else(|| StoreError::not_found("user not found"))
    }

    async fn followers(
        &self,
        username: &str,
        page: PageRequest,
    ) -> StoreResult<Arc<SharedPage<UserSummary>>> {
        self.follow_list(username, page, FollowSide::Followers)
            .await
    }

    async fn following(
        &self,
        username: &str,
        page: PageRequest,
    ) -> StoreResult<Arc<SharedPage<UserSummary>>> {
        self.follow_list(username, page, FollowSide::Following)
            .await
    }

    /// Locks what it recounts, posts before users (the order votes take
    /// them), so no concurrent vote or follow on those rows commits between
    /// a recount and this commit; a vote on another post of the same author
    /// adds to the recomputed total after it (`n = n + 1`), which is right.
    async fn delete_account(&self, user_id: i64) -> StoreResult<DeletedAccount> {
        retrying(move || async move {
            let mut tx = begin(&self.pool).await?;
            // First the user's posts, then the user (the order a vote on one of
            // them takes its post and its author): votes on them finish or wait.
            // Holding the user's row, no follow of them commits before the
            // deletion (`follow` locks both users), so the lists below are whole.
            query("SELECT id FROM posts WHERE user_id = $1 ORDER BY id FOR NO KEY UPDATE")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            if lock_users(&mut tx, &[user_id]).await? == 0 {
                return Err(StoreError::not_found("user not found"));
            }
            let touched_posts: Vec<i64> = query_scalar(
                "SELECT post_id FROM votes WHERE user_id = $1
                 UNION SELECT post_id FROM replies WHERE user_id = $1
                 EXCEPT SELECT id FROM posts WHERE user_id = $1",
            )
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?;
            query("SELECT id FROM posts WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
                .bind(&touched_posts)
                .execute(&mut *tx)
                .await?;
            // Authors' vote totals, and follow counts on the other side.
            let touched_users: Vec<i64> = query_scalar(
                "SELECT p.user_id FROM votes v JOIN posts p ON p.id = v.post_id
                 WHERE v.user_id = $1 AND p.user_id != $1
                 UNION SELECT followee_id FROM follows WHERE follower_id = $1
                 UNION SELECT follower_id FROM follows WHERE followee_id = $1",
            )
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?;
            lock_users(&mut tx, &touched_users).await?;
            query(
                "UPDATE rooms SET created_by = (
                     SELECT m.user_id FROM room_members m
                     WHERE m.room_id = rooms.id AND m.user_id != $1 ORDER BY m.seq LIMIT 1)
                 WHERE created_by = $1
                   AND EXISTS (SELECT 1 FROM room_members m
                               WHERE m.room_id = rooms.id AND m.user_id != $1)",
            )
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
            let file_ids: Vec<String> = query_scalar(
                "DELETE FROM files
                 WHERE user_id = $1 OR room_id IN (SELECT id FROM rooms WHERE created_by = $1)
                 RETURNING id",
            )
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?;
            let deleted_rooms: Vec<i64> =
                query_scalar("DELETE FROM rooms WHERE created_by = $1 RETURNING id")
                    .bind(user_id)
                    .fetch_all(&mut *tx)
                    .await?;
            let left_rooms: Vec<(i64, String)> = query_as(
                "SELECT r.id, r.name FROM room_members m JOIN rooms r ON r.id = m.room_id
                 WHERE m.user_id = $1 ORDER BY r.id",
            )
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?;
            let deleted = query("DELETE FROM users WHERE id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Err(StoreError::not_found("user not found"));
            }
            query(
                "UPDATE posts SET
                     upvotes = (SELECT COUNT(*) FROM votes v WHERE v.post_id = posts.id AND v.kind = 1),
                     downvotes = (SELECT COUNT(*) FROM votes v WHERE v.post_id = posts.id AND v.kind = -1),
                     replies = (SELECT COUNT(*) FROM replies r WHERE r.post_id = posts.id)
                 WHERE id = ANY($1)",
            )
            .bind(&touched_posts)
            .execute(&mut *tx)
            .await?;
            query(
                "UPDATE users SET
                     followers = (SELECT COUNT(*) FROM follows f WHERE f.followee_id = users.id),
                     following = (SELECT COUNT(*) FROM follows f WHERE f.follower_id = users.id),
                     upvotes = (SELECT COALESCE(SUM(p.upvotes), 0) FROM posts p WHERE p.user_id = users.id),
                     downvotes = (SELECT COALESCE(SUM(p.downvotes), 0) FROM posts p WHERE p.user_id = users.id)
                 WHERE id = ANY($1)",
            )
            .bind(&touched_users)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(DeletedAccount {
                file_ids,
                deleted_rooms,
                left_rooms,
            })
        })
        .await
    }
}

enum FollowSide {
    Followers,
    Following,
}

impl PostgresStore {
    async fn follow_list(
        &self,
        username: &str,
        page: PageRequest,
        side: FollowSide,
    ) -> StoreResult<Arc<SharedPage<UserSummary>>> {
        let mut conn = self.pool.acquire().await?;
        let user = require_user(&mut conn, username).await?;
        let sql = match side {
            FollowSide::Followers => {
                "SELECT f.id, u.username, u.avatar_url FROM follows f
                 JOIN users u ON u.id = f.follower_id
                 WHERE f.followee_id = $1 AND f.id < $2 ORDER BY f.id DESC LIMIT $3"
            }
            FollowSide::Following => {
                "SELECT f.id, u.username, u.avatar_url FROM follows f
                 JOIN users u ON u.id = f.followee_id
                 WHERE f.follower_id = $1 AND f.id < $2 ORDER BY f.id DESC LIMIT $3"
            }
        };
        let rows: Vec<(i64, String, String)> = query_as(sql)
            .bind(user.id)
            .bind(page.before.unwrap_or(i64::MAX))
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&mut *conn)
            .await?;
        let page = into_page(rows, page.limit, |(id, _, _)| *id);
        Ok(SharedPage::new(Page {
            items: page
                .items
                .into_iter()
                .map(|(_, username, avatar_url)| UserSummary {
                    username,
                    avatar_url,
                })
                .collect(),
            next: page.next,
        }))
    }
}

/// Finds the followee by name and locks both users' rows in one statement,
/// in id order (as `lock_users` does). A follow of oneself is a conflict;
/// a followee unknown, or either user deleted while this waited for the
/// lock, is "user not found". The follow's own statement comes after this
/// one, so its snapshot holds both users as locked.
async fn lock_follow_pair(
    conn: &mut PgConnection,
    follower: i64,
    followee: &str,
) -> StoreResult<UserRef> {
    let rows: Vec<(i64, String, bool)> = query_as(
        "SELECT id, username, username_key = $2 FROM users
         WHERE id = $1 OR username_key = $2
         ORDER BY id FOR NO KEY UPDATE",
    )
    .bind(follower)
    .bind(followee.to_lowercase())
    .fetch_all(conn)
    .await?;
    let target = rows
        .iter()
        .find(|(_, _, is_followee)| *is_followee)
        .map(|(id, username, _)| UserRef {
            id: *id,
            username: username.clone(),
        })
        .ok_or_else(|| StoreError::not_found("user not found"))?;
    if target.id == follower {
        return Err(StoreError::conflict("you cannot follow yourself"));
    }
    if rows.len() < 2 {
        // The follower was deleted while this waited for the lock.
        return Err(StoreError::not_found("user not found"));
    }
    Ok(target)
}
