//! Sessions already looked up, kept in memory.
//!
//! Every authenticated request resolves its token, and on SQLite that was
//! a read transaction of its own (a shared lock on the WAL index and two
//! B-tree descents): 8–10% of the CPU of `GET /api/inbox` or
//! `POST /api/create_post`. Only this process writes the database, so the
//! store drops entries after each commit that ends sessions, and the copy
//! never answers for a session that is gone.

use std::{collections::HashMap, sync::Mutex};

use crate::store::accounts::UserRef;

/// Beyond this many cached sessions the cache starts over, so memory stays
/// bounded whatever the number of sessions (about 100 bytes each).
const MAX_ENTRIES: usize = 100_000;

pub(super) type TokenHash = [u8; 32];

#[derive(Default)]
pub(super) struct SessionCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    users: HashMap<TokenHash, UserRef>,
    /// Counts the commits that ended sessions. A lookup caches what it
    /// read only if none happened meanwhile: its snapshot may predate one.
    endings: u64,
    /// Users whose account deletion is being committed: none of their
    /// sessions is cached until the deletion is answered (`forget_user`).
    /// Readers see a commit before it is durable, so without this a read
    /// that saw the deletion (a room membership gone) could still find the
    /// session here, and answer 403 instead of 401.
    ending_users: Vec<i64>,
}

/// Where a lookup stands when the cache did not know the session.
#[derive(Debug)]
pub(super) struct Miss(u64);

impl SessionCache {
    pub fn get(&self, token: &TokenHash) -> Result<UserRef, Miss> {
        let inner = self.lock();
        inner.users.get(token).cloned().ok_or(Miss(inner.endings))
    }

    /// Caches what the database said about a session after `miss`.
    pub fn fill(&self, token: TokenHash, user: UserRef, miss: Miss) {
        let mut inner = self.lock();
        if inner.endings != miss.0 || inner.ending_users.contains(&user.id) {
            return;
        }
        if inner.users.len() >= MAX_ENTRIES {
            inner.users.clear();
        }
        inner.users.insert(token, user);
    }

    /// After a commit that ended the sessions for which `ended` is true.
    pub fn forget(&self, ended: impl Fn(&TokenHash, &UserRef) -> bool) {
        let mut inner = self.lock();
        inner.endings += 1;
        inner.users.retain(|token, user| !ended(token, user));
    }

    /// Before a commit that deletes `user_id`'s account: their sessions
    /// leave the cache and stay out of it until `forget_user`.
    pub fn ending_user(&self, user_id: i64) {
        let mut inner = self.lock();
        inner.ending_users.push(user_id);
        inner.users.retain(|_, user| user.id != user_id);
    }

    /// After the commit that deleted `user_id`'s account is answered
    /// (whatever its outcome).
    pub fn forget_user(&self, user_id: i64) {
        let mut inner = self.lock();
        inner.endings += 1;
        inner.users.retain(|_, user| user.id != user_id);
        if let Some(at) = inner.ending_users.iter().position(|&id| id == user_id) {
            inner.ending_users.swap_remove(at);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64) -> UserRef {
        UserRef {
            id,
            username: format!("u{id}"),
        }
    }

    #[test]
    fn a_lookup_that_overlapped_an_ending_is_not_cached() {
        let cache = SessionCache::default();
        let miss = cache.get(&[1; 32]).unwrap_err();
        // The session ends while the lookup reads an older snapshot.
        cache.forget(|token, _| token == &[1; 32]);
        cache.fill([1; 32], user(1), miss);
        assert!(cache.get(&[1; 32]).is_err());
    }

    #[test]
    fn ended_sessions_are_forgotten_and_others_kept() {
        let cache = SessionCache::default();
        for (token, id) in [(1, 1), (2, 1), (3, 2)] {
            let miss = cache.get(&[token; 32]).unwrap_err();
            cache.fill([token; 32], user(id), miss);
        }
        cache.forget(|token, user| user.id == 1 && token != &[2; 32]);
        assert!(cache.get(&[1; 32]).is_err());
        assert_eq!(cache.get(&[2; 32]).unwrap(), user(1));
        assert_eq!(cache.get(&[3; 32]).unwrap(), user(2));
    }

    #[test]
    fn a_user_being_deleted_has_no_session_cached_until_the_deletion_is_answered() {
        let cache = SessionCache::default();
        for (token, id) in [(1, 1), (2, 2)] {
            let miss = cache.get(&[token; 32]).unwrap_err();
            cache.fill([token; 32], user(id), miss);
        }
        cache.ending_user(1);
        assert!(cache.get(&[1; 32]).is_err());
        assert_eq!(cache.get(&[2; 32]).unwrap(), user(2));
        // A lookup during the commit reads the database each time: what it
        // read (maybe from before the commit) is not kept.
        let miss = cache.get(&[1; 32]).unwrap_err();
        cache.fill([1; 32], user(1), miss);
        assert!(cache.get(&[1; 32]).is_err());

        cache.forget_user(1);
        // After the answer what a lookup reads has the deletion: cached again.
        let miss = cache.get(&[3; 32]).unwrap_err();
        cache.fill([3; 32], user(1), miss);
        assert_eq!(cache.get(&[3; 32]).unwrap(), user(1));
        assert_eq!(cache.get(&[2; 32]).unwrap(), user(2));
    }
}
