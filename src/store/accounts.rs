//! Accounts, sessions, profiles and the follow graph.

use std::sync::Arc;

use async_trait::async_trait;

use super::{PageRequest, SharedPage, StoreResult, UnixSeconds};

/// A registered user as the rest of the system refers to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef {
    pub id: i64,
    /// The spelling given at registration.
    pub username: String,
}

/// What registration stores. Fields are already validated; the password is hashed.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub email: String,
    pub password_hash: String,
    pub avatar_url: String,
    pub description: String,
}

/// What login needs to check a password.
#[derive(Debug, Clone)]
pub struct LoginRecord {
    pub user: UserRef,
    pub password_hash: String,
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub username: String,
    pub avatar_url: String,
    pub description: String,
    pub custom_css: String,
    pub background_image: String,
    pub created_at: UnixSeconds,
    pub followers: i64,
    pub following: i64,
    pub posts: i64,
    pub upvotes: i64,
    pub downvotes: i64,
}

/// A settings change: only `Some` fields change. Fields are validated and
/// the password is already hashed.
#[derive(Debug, Clone, Default)]
pub struct SettingsChange {
    pub email: Option<String>,
    pub avatar_url: Option<String>,
    pub description: Option<String>,
    pub password_hash: Option<String>,
    pub custom_css: Option<String>,
    pub background_image: Option<String>,
}

impl SettingsChange {
    /// The `users` columns a change sets as given (the email also sets its
    /// lookup key, so the backends write it apart), with the new values.
    /// Column names come from this fixed list, never from input.
    pub fn plain_columns(&self) -> [(&'static str, Option<&str>); 5] {
        [
            ("avatar_url", self.avatar_url.as_deref()),
            ("description", self.description.as_deref()),
            ("custom_css", self.custom_css.as_deref()),
            ("background_image", self.background_image.as_deref()),
            ("password_hash", self.password_hash.as_deref()),
        ]
    }
}

/// An entry in a follower or following list.
#[derive(Debug, Clone)]
pub struct UserSummary {
    pub username: String,
    pub avatar_url: String,
}

/// What deleting an account removed that lives outside the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeletedAccount {
    /// Uploads whose rows are gone: the caller removes their bytes from the
    /// `FileStore` (the user's own uploads, and every upload in a deleted room).
    pub file_ids: Vec<String>,
    /// Rooms deleted with the account: those it created that no one else
    /// belonged to. Rooms with other members pass to the longest-standing one.
    pub deleted_rooms: Vec<i64>,
    /// The rooms that remain which the user was a member of (id, name):
    /// their other members are told the user left.
    pub left_rooms: Vec<(i64, String)>,
}

#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Conflict "username already taken" / "email already taken" (ignoring case).
    async fn create_user(&self, user: NewUser) -> StoreResult<UserRef>;
    /// Looks a user up by name, ignoring case.
    async fn find_user(&self, username: &str) -> StoreResult<Option<UserRef>>;
    async fn login_record(&self, username: &str) -> StoreResult<Option<LoginRecord>>;
    async fn user_count(&self) -> StoreResult<i64>;

    /// Sessions are keyed by a hash of their token; the token itself is never stored.
    async fn create_session(&self, user_id: i64, token_hash: [u8; 32]) -> StoreResult<()>;
    async fn session_user(&self, token_hash: [u8; 32]) -> StoreResult<Option<UserRef>>;
    /// Ends one session; returns its user's id, or `None` if there was none.
    async fn end_session(&self, token_hash: [u8; 32]) -> StoreResult<Option<i64>>;

    async fn profile(&self, username: &str) -> StoreResult<Option<Profile>>;
    /// Applies the change; when it sets a password, every session of the user
    /// other than `keep_session` ends in the same transaction.
    /// Conflict "email already taken".
    async fn update_settings(
        &self,
        user_id: i64,
        change: SettingsChange,
        keep_session: [u8; 32],
    ) -> StoreResult<()>;

    /// NotFound for an unknown user; Conflict when already following or
    /// following yourself. Returns the followee as registered.
    async fn follow(&self, follower: i64, followee: &str) -> StoreResult<UserRef>;
    /// NotFound for an unknown user; Conflict when not following.
    async fn unfollow(&self, follower: i64, followee: &str) -> StoreResult<UserRef>;
    /// NotFound for an unknown user.
    async fn is_following(&self, follower: i64, followee: &str) -> StoreResult<bool>;
    /// Most recent first; NotFound for an unknown user. The cursor is a follow id.
    /// A page of the user's followers, most recent first (the SQLite store
    /// hands every reader the same newest page until it changes).
    async fn followers(
        &self,
        username: &str,
        page: PageRequest,
    ) -> StoreResult<Arc<SharedPage<UserSummary>>>;
    /// A page of whom the user follows, most recent first.
    async fn following(
        &self,
        username: &str,
        page: PageRequest,
    ) -> StoreResult<Arc<SharedPage<UserSummary>>>;

    /// Erases a user in one transaction: sessions, posts (with their votes,
    /// replies and hashtags), votes and replies on others' posts (replies
    /// to those replies too), follows both ways, memberships, room
    /// messages, direct messages sent and received, and file rows; rooms
    /// the user created pass to their longest-standing other member or, with
    /// none, are deleted. Every counter of other users and posts that
    /// counted the erased rows is recomputed in the same transaction.
    /// NotFound when the user no longer exists.
    async fn delete_account(&self, user_id: i64) -> StoreResult<DeletedAccount>;
}
