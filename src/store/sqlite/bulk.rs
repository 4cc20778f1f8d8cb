//! Bulk loading (for benchmarks and imports) and a counter check.
//!
//! The importer writes through the same row writers as the store methods,
//! so a loaded database is indistinguishable from one filled over HTTP;
//! it only batches many rows per transaction to load millions of them fast.

use std::sync::Arc;

use rusqlite::Connection;

use super::{
    Durability, SqliteStore, accounts,
    check::RECOUNT_POSTS,
    configure,
    id_floors::{IdFloors, Table},
    inbox, other, posts, rooms,
};
use crate::store::{
    StoreResult, UnixSeconds,
    accounts::NewUser,
    integrity::recount_users_sql,
    posts::VoteKind,
    rooms::{NewRoom, Retention},
};

/// A write session on its own connection for the whole load: rows go into
/// IMMEDIATE transactions of `batch_rows` rows each, committed without an
/// fsync each (the checkpoints make them durable). Call
/// [`BulkImport::finish`] to commit the last batch; dropping it instead
/// rolls the open batch back.
pub struct BulkImport {
    conn: Connection,
    /// The store's, so that imported rows take no id a deletion freed.
    id_floors: Arc<IdFloors>,
    batch_rows: usize,
    pending: usize,
    /// False once committed by `finish`.
    open: bool,
}

impl SqliteStore {
    /// Starts a bulk import. It blocks (call it off the async workers), and
    /// other writes wait for each of its batches: meant for a database no
    /// server is using yet.
    pub fn bulk_import(&self, batch_rows: usize) -> StoreResult<BulkImport> {
        let conn = Connection::open(&self.path).map_err(other)?;
        configure(&conn, Durability::Normal).map_err(other)?;
        conn.execute_batch("BEGIN IMMEDIATE").map_err(other)?;
        Ok(BulkImport {
            conn,
            id_floors: self.id_floors.clone(),
            batch_rows: batch_rows.max(1),
            pending: 0,
            open: true,
        })
    }

    /// Recomputes every denormalized counter from the rows it counts and
    /// returns how many rows (users and posts) held a wrong value. Zero
    /// means every writer kept them right.
    pub async fn recount_counters(&self) -> StoreResult<u64> {
        let changed = self.write(|tx| Ok(recount_all(tx)?)).await;
        // What shows counters in memory, whatever the outcome.
        self.profiles.all_changed();
        self.post_rows.all_changed();
        self.newest_pages.all_changed();
        changed
    }
}

/// Sets every denormalized counter to what the rows say; returns how many
/// rows (users and posts) held a wrong value. Used by `recount_counters`
/// and by `mirage check --repair`.
pub(super) fn recount_all(tx: &Connection) -> rusqlite::Result<u64> {
    let mut changed = 0;
    for sql in RECOUNT_POSTS {
        changed += tx.execute(sql, [])?;
    }
    changed += tx.execute(&recount_users_sql("post_counts"), [])?;
    Ok(changed as u64)
}

impl BulkImport {
    fn floor(&self, table: Table) -> i64 {
        self.id_floors.get(table)
    }

    /// Counts one written row and starts a new transaction when the batch is full.
    fn row(&mut self) -> StoreResult<()> {
        self.pending += 1;
        if self.pending >= self.batch_rows {
            self.conn
                .execute_batch("COMMIT; BEGIN IMMEDIATE")
                .map_err(other)?;
            self.pending = 0;
        }
        Ok(())
    }

    pub fn user(&mut self, user: &NewUser, created_at: UnixSeconds) -> StoreResult<i64> {
        let id = accounts::insert_user(&self.conn, user, created_at, self.floor(Table::Users))?;
        self.row()?;
        Ok(id)
    }

    /// A session for `token_hash` (see `auth::hash_token`).
    pub fn session(
        &mut self,
        user_id: i64,
        token_hash: [u8; 32],
        created_at: UnixSeconds,
    ) -> StoreResult<()> {
        accounts::insert_session(&self.conn, user_id, token_hash, created_at)?;
        self.row()
    }

    /// False when `follower` already followed `followee`.
    pub fn follow(
        &mut self,
        follower: i64,
        followee: i64,
        created_at: UnixSeconds,
    ) -> StoreResult<bool> {
        let added = accounts::insert_follow(&self.conn, follower, followee, created_at)?;
        self.row()?;
        Ok(added)
    }

    /// `hashtags` as the server stores them: lower-case, without `#`, distinct.
    pub fn post(
        &mut self,
        author: i64,
        content: &str,
        hashtags: &[String],
        created_at: UnixSeconds,
    ) -> StoreResult<i64> {
        let id = posts::insert_post(
            &self.conn,
            author,
            content,
            hashtags,
            created_at,
            self.floor(Table::Posts),
        )?;
        self.row()?;
        Ok(id)
    }

    /// The same rules as `vote_post`: errors on one's own post or a repeated vote.
    pub fn vote(&mut self, voter: i64, post_id: i64, kind: VoteKind) -> StoreResult<()> {
        posts::apply_vote(&self.conn, voter, post_id, kind)?;
        self.row()
    }

    pub fn reply(
        &mut self,
        author: i64,
        post_id: i64,
        parent_id: Option<i64>,
        content: &str,
        created_at: UnixSeconds,
    ) -> StoreResult<i64> {
        let (id, _) = posts::insert_reply(
            &self.conn,
            author,
            post_id,
            parent_id,
            content,
            created_at,
            self.floor(Table::Replies),
        )?;
        self.row()?;
        Ok(id)
    }

    /// A room with its creator as first member (no public-room limit check).
    pub fn room(&mut self, room: &NewRoom, created_at: UnixSeconds) -> StoreResult<i64> {
        let id = rooms::insert_room(&self.conn, room, created_at, self.floor(Table::Rooms))?;
        self.row()?;
        Ok(id)
    }

    pub fn member(
        &mut self,
        room_id: i64,
        user_id: i64,
        joined_at: UnixSeconds,
    ) -> StoreResult<bool> {
        let added = rooms::insert_member(&self.conn, room_id, user_id, joined_at)?;
        self.row()?;
        Ok(added)
    }

    /// A room message at Unix time `at` (with fractions), under `retention`'s limit.
    pub fn room_message(
        &mut self,
        room_id: i64,
        author: i64,
        message: &str,
        at: f64,
        retention: Retention,
    ) -> StoreResult<i64> {
        let (id, _) =
            rooms::insert_room_message(&self.conn, room_id, author, message, at, retention)?;
        self.row()?;
        Ok(id)
    }

    pub fn inbox_message(
        &mut self,
        sender: i64,
        recipient: i64,
        message: &str,
        created_at: UnixSeconds,
    ) -> StoreResult<i64> {
        let id = inbox::insert_inbox_message(
            &self.conn,
            sender,
            recipient,
            message,
            created_at,
            self.floor(Table::InboxMessages),
        )?;
        self.row()?;
        Ok(id)
    }

    /// Commits the last batch.
    pub fn finish(mut self) -> StoreResult<()> {
        self.conn.execute_batch("COMMIT").map_err(other)?;
        self.open = false;
        Ok(())
    }
}

impl Drop for BulkImport {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AccountStore, PostStore, sqlite::user_for_tests};

    #[tokio::test]
    async fn bulk_rows_keep_counters_and_recount_repairs_a_corrupted_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("mirage.db")).unwrap();
        let (ann, post) = {
            let mut import = store.bulk_import(2).unwrap();
            let ann = import.user(&user_for_tests("ann"), 1).unwrap();
            let bob = import.user(&user_for_tests("bob"), 1).unwrap();
            assert!(import.follow(bob, ann, 2).unwrap());
            assert!(!import.follow(bob, ann, 2).unwrap());
            let post = import.post(ann, "hi #rust", &["rust".into()], 3).unwrap();
            import.vote(bob, post, VoteKind::Up).unwrap();
            assert!(import.vote(ann, post, VoteKind::Up).is_err());
            import.reply(bob, post, None, "hello", 4).unwrap();
            import.finish().unwrap();
            (ann, post)
        };
        assert_eq!(store.recount_counters().await.unwrap(), 0);
        let profile = store.profile("ann").await.unwrap().unwrap();
        assert_eq!(
            (profile.followers, profile.posts, profile.upvotes),
            (1, 1, 1)
        );
        let counted = store.post(post).await.unwrap().unwrap();
        assert_eq!((counted.upvotes, counted.replies), (1, 1));

        // Corrupt one counter of each table; both rows are found and repaired.
        store
            .write(move |tx| {
                tx.execute("UPDATE users SET followers = 7 WHERE id = ?1", [ann])?;
                tx.execute(
                    "UPDATE post_counts SET replies = 0 WHERE post_id = ?1",
                    [post],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(store.recount_counters().await.unwrap(), 2);
        assert_eq!(store.profile("ann").await.unwrap().unwrap().followers, 1);
        assert_eq!(store.post(post).await.unwrap().unwrap().replies, 1);
        assert_eq!(store.recount_counters().await.unwrap(), 0);
    }
}
