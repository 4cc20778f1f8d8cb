//! Accounts, sessions, profiles and follows on SQLite.

use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::{
    SqliteStore,
    exact_cache::{BeforeRead, NewestPages, PageIds, Weigh, page_weight},
    id_floors::{Table, next_id},
    into_page, is_unique_violation,
    posts::followee_ids,
    user_cards::CardSet,
};
use crate::store::{
    Page, PageRequest, SharedPage, StoreError, StoreResult, UnixSeconds,
    accounts::{
        AccountStore, DeletedAccount, LoginRecord, NewUser, Profile, SettingsChange, UserRef,
        UserSummary,
    },
};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A follower or followee as rendered in a list: the keys, quotes and
/// commas take about 32 bytes.
impl Weigh for UserSummary {
    fn weigh(&self) -> u64 {
        (self.username.len() + self.avatar_url.len() + 32) as u64
    }
}

/// A profile: its texts and about 150 bytes of numbers and overhead.
impl Weigh for Arc<Profile> {
    fn weigh(&self) -> u64 {
        (self.username.len()
            + self.avatar_url.len()
            + self.description.len()
            + self.custom_css.len()
            + self.background_image.len()
            + 150) as u64
    }
}

/// The number of users, kept once counted. `COUNT(*)` reads the whole
/// users index, so `GET /api/usercount` (public) cost more as the
/// community grew. Registrations and deletions keep it current; as with
/// the other caches, a count whose read may predate one is not kept.
#[derive(Default)]
pub(super) struct UserCount {
    inner: Mutex<Counted>,
}

#[derive(Default)]
struct Counted {
    users: Option<i64>,
    /// Counts the commits that added or removed users.
    changes: u64,
}

/// Where the count stood when a read found none.
pub(super) struct CountMiss(u64);

impl UserCount {
    fn get(&self) -> Result<i64, CountMiss> {
        let counted = self.lock();
        counted.users.ok_or(CountMiss(counted.changes))
    }

    /// Keeps `users`, counted in a transaction that began after `miss`.
    fn fill(&self, users: i64, miss: CountMiss) {
        let mut counted = self.lock();
        if counted.changes == miss.0 {
            counted.users = Some(users);
        }
    }

    /// After a commit that changed the count by `delta`; `None` when it
    /// is unknown whether (or how) it did.
    fn changed(&self, delta: Option<i64>) {
        let mut counted = self.lock();
        counted.changes += 1;
        counted.users = counted.users.zip(delta).map(|(users, d)| users + d);
    }

    fn lock(&self) -> MutexGuard<'_, Counted> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Finds a user by name (ignoring case) inside a connection or transaction.
pub(super) fn user_by_name(
    conn: &rusqlite::Connection,
    username: &str,
) -> StoreResult<Option<UserRef>> {
    Ok(conn
        .prepare_cached("SELECT id, username FROM users WHERE username_key = ?1")?
        .query_row([username.to_lowercase()], |r| {
            Ok(UserRef {
                id: r.get(0)?,
                username: r.get(1)?,
            })
        })
        .optional()?)
}

fn require_user(conn: &rusqlite::Connection, username: &str) -> StoreResult<UserRef> {
    user_by_name(conn, username)?.ok_or_else(|| StoreError::not_found("user not found"))
}

// The row writers below are shared by the store methods and the bulk
// importer (bulk.rs), so both keep the counters the same way.

/// Inserts a user whose name and email were checked free (a race still ends
/// in the UNIQUE constraint, reported as a conflict).
pub(super) fn insert_user(
    conn: &rusqlite::Connection,
    user: &NewUser,
    created_at: UnixSeconds,
    id_floor: i64,
) -> StoreResult<i64> {
    conn.prepare_cached(concat!(
        "INSERT INTO users (id, username, username_key, email, email_key, password_hash,
                            avatar_url, description, created_at)
         VALUES (",
        next_id!("users", 9),
        ", ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
    ))?
    .execute(params![
        user.username,
        user.username.to_lowercase(),
        user.email,
        user.email.to_lowercase(),
        user.password_hash,
        user.avatar_url,
        user.description,
        created_at,
        id_floor
    ])
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::conflict("username or email already taken")
        } else {
            e.into()
        }
    })?;
    Ok(conn.last_insert_rowid())
}

pub(super) fn insert_session(
    conn: &rusqlite::Connection,
    user_id: i64,
    token_hash: [u8; 32],
    created_at: UnixSeconds,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO sessions (token_hash, user_id, created_at) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![&token_hash[..], user_id, created_at])?;
    Ok(())
}

/// Records that `follower` follows `followee` and bumps both users'
/// counters; false (and nothing changed) when already following.
pub(super) fn insert_follow(
    conn: &rusqlite::Connection,
    follower: i64,
    followee: i64,
    created_at: UnixSeconds,
) -> StoreResult<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO follows (follower_id, followee_id, created_at)
             VALUES (?1, ?2, ?3)",
        )?
        .execute(params![follower, followee, created_at])?;
    if inserted == 0 {
        return Ok(false);
    }
    conn.prepare_cached("UPDATE users SET following = following + 1 WHERE id = ?1")?
        .execute([follower])?;
    conn.prepare_cached("UPDATE users SET followers = followers + 1 WHERE id = ?1")?
        .execute([followee])?;
    Ok(true)
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_user(&self, user: NewUser) -> StoreResult<UserRef> {
        let id_floors = self.id_floors.clone();
        let created = self
            .write(move |tx| {
                let taken: Option<(String, String)> = tx
                    .query_row(
                        "SELECT username_key, email_key FROM users
                     WHERE username_key = ?1 OR email_key = ?2 LIMIT 1",
                        params![user.username.to_lowercase(), user.email.to_lowercase()],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if let Some((name_key, _)) = taken {
                    return Err(StoreError::conflict(
                        if name_key == user.username.to_lowercase() {
                            "username already taken"
                        } else {
                            "email already taken"
                        },
                    ));
                }
                let id = insert_user(tx, &user, now(), id_floors.get(Table::Users))?;
                Ok(UserRef {
                    id,
                    username: user.username,
                })
            })
            .await;
        // A refused registration (a name taken) changed nothing; any other
        // error may have come after the commit (a failed fsync).
        self.user_count.changed(match &created {
            Ok(_) => Some(1),
            Err(StoreError::Conflict(_)) => Some(0),
            Err(_) => None,
        });
        created
    }

    async fn find_user(&self, username: &str) -> StoreResult<Option<UserRef>> {
        // From the users' cards when there: looking the name up in SQLite
        // was a fifth of the workers' time under direct messages, since a
        // reader's page cache starts over after every commit.
        if let Some(user) = self.users.cached_user(username) {
            return Ok(Some(user));
        }
        let username = username.to_owned();
        let users = self.users.clone();
        let before = users.before_read();
        self.read(move |conn| users.by_name(conn, &username, before))
            .await
    }

    async fn login_record(&self, username: &str) -> StoreResult<Option<LoginRecord>> {
        let key = username.to_lowercase();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT id, username, password_hash FROM users WHERE username_key = ?1",
                )?
                .query_row([key], |r| {
                    Ok(LoginRecord {
                        user: UserRef {
                            id: r.get(0)?,
                            username: r.get(1)?,
                        },
                        password_hash: r.get(2)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn user_count(&self) -> StoreResult<i64> {
        let miss = match self.user_count.get() {
            Ok(users) => return Ok(users),
            Err(miss) => miss,
        };
        let users = self
            .read(|conn| {
                Ok(conn
                    .prepare_cached("SELECT COUNT(*) FROM users")?
                    .query_row([], |r| r.get(0))?)
            })
            .await?;
        self.user_count.fill(users, miss);
        Ok(users)
    }

    async fn create_session(&self, user_id: i64, token_hash: [u8; 32]) -> StoreResult<()> {
        self.write(move |tx| insert_session(tx, user_id, token_hash, now()))
            .await
    }

    async fn session_user(&self, token_hash: [u8; 32]) -> StoreResult<Option<UserRef>> {
        let miss = match self.sessions.get(&token_hash) {
            Ok(user) => return Ok(Some(user)),
            Err(miss) => miss,
        };
        let user = self
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT u.id, u.username FROM sessions s JOIN users u ON u.id = s.user_id
                         WHERE s.token_hash = ?1",
                    )?
                    .query_row([&token_hash[..]], |r| {
                        Ok(UserRef {
                            id: r.get(0)?,
                            username: r.get(1)?,
                        })
                    })
                    .optional()?)
            })
            .await?;
        if let Some(user) = &user {
            self.sessions.fill(token_hash, user.clone(), miss);
        }
        Ok(user)
    }

    async fn end_session(&self, token_hash: [u8; 32]) -> StoreResult<Option<i64>> {
        let ended = self
            .write(move |tx| {
                Ok(tx
                    .query_row(
                        "DELETE FROM sessions WHERE token_hash = ?1 RETURNING user_id",
                        [&token_hash[..]],
                        |r| r.get(0),
                    )
                    .optional()?)
            })
            .await?;
        self.sessions.forget(|token, _| token == &token_hash);
        Ok(ended)
    }

    async fn profile(&self, username: &str) -> StoreResult<Option<Profile>> {
        // Kept exact in memory (see `profiles` in the store).
        if let Some(user) = self.users.cached_id(username)
            && let Some(profile) = self.profiles.get(user)
        {
            return Ok(Some(Profile::clone(&profile)));
        }
        let username = username.to_owned();
        let (users, profiles) = (self.users.clone(), self.profiles.clone());
        let (before, profiles_before) = (users.before_read(), profiles.before_read());
        self.read(move |conn| {
            // Through the cards, so that the next request finds the id there.
            let Some(user) = users.by_name(conn, &username, before)? else {
                return Ok(None);
            };
            let profile = conn
                .prepare_cached(
                    "SELECT username, avatar_url, description, custom_css, background_image,
                            created_at, followers, following, posts, upvotes, downvotes
                     FROM users WHERE id = ?1",
                )?
                .query_row([user.id], |r| {
                    Ok(Profile {
                        username: r.get(0)?,
                        avatar_url: r.get(1)?,
                        description: r.get(2)?,
                        custom_css: r.get(3)?,
                        background_image: r.get(4)?,
                        created_at: r.get(5)?,
                        followers: r.get(6)?,
                        following: r.get(7)?,
                        posts: r.get(8)?,
                        upvotes: r.get(9)?,
                        downvotes: r.get(10)?,
                    })
                })
                .optional()?;
            if let Some(profile) = &profile {
                profiles.fill([(user.id, Arc::new(profile.clone()))], profiles_before);
            }
            Ok(profile)
        })
        .await
    }

    async fn update_settings(
        &self,
        user_id: i64,
        change: SettingsChange,
        keep_session: [u8; 32],
    ) -> StoreResult<()> {
        // Every inbox page shows its senders' avatars.
        let avatar_changes = change.avatar_url.is_some();
        let sessions_ended = self
            .write(move |tx| {
                if let Some(email) = &change.email {
                    let taken: bool = tx
                        .prepare_cached(
                            "SELECT EXISTS(SELECT 1 FROM users WHERE email_key = ?1 AND id != ?2)",
                        )?
                        .query_row(params![email.to_lowercase(), user_id], |r| r.get(0))?;
                    if taken {
                        return Err(StoreError::conflict("email already taken"));
                    }
                    tx.execute(
                        "UPDATE users SET email = ?1, email_key = ?2 WHERE id = ?3",
                        params![email, email.to_lowercase(), user_id],
                    )?;
                }
                for (column, value) in change.plain_columns() {
                    if let Some(value) = value {
                        tx.execute(
                            &format!("UPDATE users SET {column} = ?1 WHERE id = ?2"),
                            params![value, user_id],
                        )?;
                    }
                }
                if change.password_hash.is_some() {
                    tx.execute(
                        "DELETE FROM sessions WHERE user_id = ?1 AND token_hash != ?2",
                        params![user_id, &keep_session[..]],
                    )?;
                }
                Ok(change.password_hash.is_some())
            })
            .await;
        // The card first: a page rendered from the old card after the pages
        // below were dropped would otherwise be kept.
        self.users.changed(user_id);
        self.profiles.changed(user_id);
        if avatar_changes {
            // So does every list of followers and followees.
            self.inbox_pages.all_changed();
            self.follower_pages.all_changed();
            self.following_pages.all_changed();
        }
        let sessions_ended = sessions_ended?;
        if sessions_ended {
            self.sessions
                .forget(|token, user| user.id == user_id && token != &keep_session);
        }
        Ok(())
    }

    async fn follow(&self, follower: i64, followee: &str) -> StoreResult<UserRef> {
        let followee = followee.to_owned();
        let outcome = self
            .write(move |tx| {
                let target = require_user(tx, &followee)?;
                if target.id == follower {
                    return Err(StoreError::conflict("you cannot follow yourself"));
                }
                if !insert_follow(tx, follower, target.id, now())? {
                    return Err(StoreError::conflict(format!(
                        "already following {}",
                        target.username
                    )));
                }
                Ok(target)
            })
            .await;
        self.follows.changed(follower);
        self.follow_lists_changed(follower, &outcome);
        outcome
    }

    async fn unfollow(&self, follower: i64, followee: &str) -> StoreResult<UserRef> {
        let followee = followee.to_owned();
        let outcome = self
            .write(move |tx| {
                let target = require_user(tx, &followee)?;
                let removed = tx.execute(
                    "DELETE FROM follows WHERE follower_id = ?1 AND followee_id = ?2",
                    params![follower, target.id],
                )?;
                if removed == 0 {
                    return Err(StoreError::conflict(format!(
                        "you are not following {}",
                        target.username
                    )));
                }
                tx.execute(
                    "UPDATE users SET following = following - 1 WHERE id = ?1",
                    [follower],
                )?;
                tx.execute(
                    "UPDATE users SET followers = followers - 1 WHERE id = ?1",
                    [target.id],
                )?;
                Ok(target)
            })
            .await;
        self.follows.changed(follower);
        self.follow_lists_changed(follower, &outcome);
        outcome
    }

    async fn is_following(&self, follower: i64, followee: &str) -> StoreResult<bool> {
        // The follower's followee ids are the feed's, kept exact in memory;
        // with the followee's card cached too, no reader is needed.
        if let Some(target) = self.users.cached_id(followee)
            && let Some(followees) = self.follows.get(follower)
        {
            return Ok(followees.binary_search(&target).is_ok());
        }
        let followee = followee.to_owned();
        let (users, follows) = (self.users.clone(), self.follows.clone());
        let (users_before, follows_before) = (users.before_read(), follows.before_read());
        self.read(move |conn| {
            // Through the cards, so that the next check finds the id there.
            let target = users
                .by_name(conn, &followee, users_before)?
                .ok_or_else(|| StoreError::not_found("user not found"))?;
            let followees = followee_ids(conn, &follows, follows_before, follower)?;
            Ok(followees.binary_search(&target.id).is_ok())
        })
        .await
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

    async fn delete_account(&self, user_id: i64) -> StoreResult<DeletedAccount> {
        // The user's sessions leave the cache before any write committed
        // after the deletion is answered: a write of theirs that was still
        // in flight fails on the missing user row, and the HTTP layer must
        // then find the session gone (401, not 500). Forgotten whatever the
        // outcome, as the caches below.
        let id_floors = self.id_floors.clone();
        let sessions = self.sessions.clone();
        let ending = self.sessions.clone();
        let deleted = self
            .writer
            .run_then(
                move |tx| {
                    // Before the commit, which readers may see before it is
                    // answered (see `SessionCache::ending_user`).
                    ending.ending_user(user_id);
                    // Before any row goes: the ids the deletion frees are
                    // never given again.
                    id_floors.record(tx)?;
                    erase_user(tx, user_id)
                },
                move |_| sessions.forget_user(user_id),
            )
            .await;
        // These caches are dropped whatever the outcome: the commit may
        // have happened even if its fsync failed.
        self.post_rows.all_changed();
        self.follows.all_changed();
        self.member_lists.all_changed();
        self.room_lists.all_changed();
        self.public_rooms.all_changed();
        self.profiles.all_changed();
        self.follower_ids.all_changed();
        self.following_ids.all_changed();
        self.follower_pages.all_changed();
        self.following_pages.all_changed();
        self.user_count
            .changed(if deleted.is_ok() { Some(-1) } else { None });
        self.newest_pages.all_changed();
        self.inbox_pages.all_changed();
        self.inbox_counts.all_changed();
        self.archive.forget_all();
        let deleted = deleted?;
        self.recent.forget_author(user_id);
        self.users.changed(user_id);
        self.room_messages.clear();
        Ok(deleted)
    }
}

/// The ids a one-parameter query returns.
fn ids<T: rusqlite::types::FromSql>(
    conn: &rusqlite::Connection,
    sql: &str,
    user_id: i64,
) -> StoreResult<Vec<T>> {
    Ok(conn
        .prepare_cached(sql)?
        .query_map([user_id], |r| r.get(0))?
        .collect::<Result<Vec<_>, _>>()?)
}

/// Deletes the user and everything that is theirs, then recomputes the
/// counters of the other users and posts that counted any of it. The
/// schema's `ON DELETE CASCADE`s remove the rows; recomputing (rather than
/// decrementing) also covers rows the cascades reach indirectly, such as
/// other people's replies to the user's replies.
fn erase_user(conn: &rusqlite::Connection, user_id: i64) -> StoreResult<DeletedAccount> {
    let touched_posts: Vec<i64> = ids(
        conn,
        "SELECT post_id FROM votes WHERE user_id = ?1
         UNION SELECT post_id FROM replies WHERE user_id = ?1
         EXCEPT SELECT id FROM posts WHERE user_id = ?1",
        user_id,
    )?;
    // Authors' vote totals, and follow counts on the other side.
    let touched_users: Vec<i64> = ids(
        conn,
        "SELECT p.user_id FROM votes v JOIN posts p ON p.id = v.post_id
         WHERE v.user_id = ?1 AND p.user_id != ?1
         UNION SELECT followee_id FROM follows WHERE follower_id = ?1
         UNION SELECT follower_id FROM follows WHERE followee_id = ?1",
        user_id,
    )?;
    conn.prepare_cached(
        "UPDATE rooms SET created_by = (
             SELECT m.user_id FROM room_members m
             WHERE m.room_id = rooms.id AND m.user_id != ?1 ORDER BY m.seq LIMIT 1)
         WHERE created_by = ?1
           AND EXISTS (SELECT 1 FROM room_members m
                       WHERE m.room_id = rooms.id AND m.user_id != ?1)",
    )?
    .execute([user_id])?;
    let file_ids: Vec<String> = ids(
        conn,
        "DELETE FROM files
         WHERE user_id = ?1 OR room_id IN (SELECT id FROM rooms WHERE created_by = ?1)
         RETURNING id",
        user_id,
    )?;
    let deleted_rooms: Vec<i64> = ids(
        conn,
        "DELETE FROM rooms WHERE created_by = ?1 RETURNING id",
        user_id,
    )?;
    let left_rooms = conn
        .prepare_cached(
            "SELECT r.id, r.name FROM room_members m JOIN rooms r ON r.id = m.room_id
             WHERE m.user_id = ?1 ORDER BY r.id",
        )?
        .query_map([user_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    if conn
        .prepare_cached("DELETE FROM users WHERE id = ?1")?
        .execute([user_id])?
        == 0
    {
        return Err(StoreError::not_found("user not found"));
    }
    let mut recount_post = conn.prepare_cached(
        "INSERT INTO post_counts (user_id, post_id, upvotes, downvotes, replies)
         SELECT p.user_id, p.id,
             (SELECT COUNT(*) FROM votes v WHERE v.post_id = p.id AND v.kind = 1),
             (SELECT COUNT(*) FROM votes v WHERE v.post_id = p.id AND v.kind = -1),
             (SELECT COUNT(*) FROM replies r WHERE r.post_id = p.id)
         FROM posts p WHERE p.id = ?1
         ON CONFLICT (user_id, post_id) DO UPDATE SET upvotes = excluded.upvotes,
             downvotes = excluded.downvotes, replies = excluded.replies",
    )?;
    for post_id in touched_posts {
        recount_post.execute([post_id])?;
    }
    let mut recount_user = conn.prepare_cached(
        "UPDATE users SET
             followers = (SELECT COUNT(*) FROM follows f WHERE f.followee_id = users.id),
             following = (SELECT COUNT(*) FROM follows f WHERE f.follower_id = users.id),
             upvotes = (SELECT COALESCE(SUM(c.upvotes), 0) FROM post_counts c
                        WHERE c.user_id = users.id),
             downvotes = (SELECT COALESCE(SUM(c.downvotes), 0) FROM post_counts c
                          WHERE c.user_id = users.id)
         WHERE id = ?1",
    )?;
    for other in touched_users {
        recount_user.execute([other])?;
    }
    Ok(DeletedAccount {
        file_ids,
        deleted_rooms,
        left_rooms,
    })
}

enum FollowSide {
    Followers,
    Following,
}

impl SqliteStore {
    /// After a follow or unfollow by `follower`: drops the newest pages it
    /// may have changed (all followers' pages when the followee is unknown:
    /// an error may have come after the commit).
    ///
    /// The ids go before the renderings: a rendering made from ids read
    /// before their drop is then made after the rendering's own drop
    /// began, and is not kept (see `follow_list`).
    fn follow_lists_changed(&self, follower: i64, outcome: &StoreResult<UserRef>) {
        self.following_ids.changed(follower);
        self.following_pages.changed(follower);
        // Both sides' counts.
        self.profiles.changed(follower);
        match outcome {
            Ok(followee) => {
                self.follower_ids.changed(followee.id);
                self.follower_pages.changed(followee.id);
                self.profiles.changed(followee.id);
            }
            Err(StoreError::Conflict(_) | StoreError::NotFound(_)) => {}
            Err(_) => {
                self.follower_ids.all_changed();
                self.follower_pages.all_changed();
                self.profiles.all_changed();
            }
        }
    }

    async fn follow_list(
        &self,
        username: &str,
        page: PageRequest,
        side: FollowSide,
    ) -> StoreResult<Arc<SharedPage<UserSummary>>> {
        let (pages, id_pages) = match side {
            FollowSide::Followers => (self.follower_pages.clone(), self.follower_ids.clone()),
            FollowSide::Following => (self.following_pages.clone(), self.following_ids.clone()),
        };
        // A cached newest page needs no reader connection at all, and nor
        // do its ids with their users' cards.
        if page.before.is_none()
            && let Some(user) = self.users.cached_id(username)
        {
            if let Some(cached) = pages.newest(user, page) {
                return Ok(cached);
            }
            let pages_before = pages.before_read();
            if let Some(cached) = id_pages.newest(user, page)
                && let Some(cards) = self.users.cached_cards(&cached.ids)
            {
                let read = summaries(&cached.ids, &cards, cached.next);
                return Ok(keep_rendering(&pages, user, page, read, pages_before));
            }
        }
        let username = username.to_owned();
        let users = self.users.clone();
        let (before, pages_before) = (users.before_read(), pages.before_read());
        let ids_before = id_pages.before_read();
        self.read(move |conn| {
            let user = users
                .by_name(conn, &username, before)?
                .ok_or_else(|| StoreError::not_found("user not found"))?;
            // The other side's id is in each index (migration 0008), so a
            // page is one run of entries; names and avatars from the cards.
            let sql = match side {
                FollowSide::Followers => {
                    "SELECT id, follower_id FROM follows INDEXED BY follows_by_followee_with_follower
                     WHERE followee_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3 + 0"
                }
                FollowSide::Following => {
                    "SELECT id, followee_id FROM follows INDEXED BY follows_by_follower_with_followee
                     WHERE follower_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3 + 0"
                }
            };
            let rows = conn
                .prepare_cached(sql)?
                .query_map(
                    params![user.id, page.before.unwrap_or(i64::MAX), page.limit + 1],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )?
                .collect::<Result<Vec<_>, _>>()?;
            let read = into_page(rows, page.limit, |(id, _)| *id);
            let ids: Vec<i64> = read.items.iter().map(|(_, other)| *other).collect();
            let kept = PageIds {
                ids: ids.as_slice().into(),
                next: read.next,
            };
            let weight = kept.weight();
            id_pages.keep_newest(user.id, page, kept, weight, ids_before);
            let cards = users.cards(conn, &ids, before)?;
            let read = summaries(&ids, &cards, read.next);
            Ok(keep_rendering(&pages, user.id, page, read, pages_before))
        })
        .await
    }
}

/// A page of users from their ids and cards. Every id is a user's
/// (foreign keys); a missing one is skipped as a join would.
fn summaries(ids: &[i64], cards: &CardSet, next: Option<i64>) -> Page<UserSummary> {
    Page {
        items: ids
            .iter()
            .filter_map(|&other| cards.get(other))
            .map(|card| UserSummary {
                username: card.username.clone(),
                avatar_url: card.avatar_url.clone(),
            })
            .collect(),
        next,
    }
}

/// Shares `read`, keeping it (to be rendered once) if it answers
/// `request` for `user`'s newest page and nothing changed since `before`.
fn keep_rendering(
    pages: &NewestPages<UserSummary>,
    user: i64,
    request: PageRequest,
    read: Page<UserSummary>,
    before: BeforeRead,
) -> Arc<SharedPage<UserSummary>> {
    let weight = page_weight(&read.items);
    let read = SharedPage::new(read);
    pages.keep_newest(user, request, read.clone(), weight, before);
    read
}
