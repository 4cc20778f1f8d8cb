-- A post's counters in a narrow table of their own, keyed like the
-- author's page of posts. They were columns of `posts`, and so also of
-- the covering index `posts_by_user_with_columns`, whose entries hold the
-- post's text: SQLite keeps whole entries in an index's interior pages
-- too, so that index is about seven levels deep, and a vote deleted and
-- reinserted its entry there besides updating the row. Now a vote or a
-- reply changes one small row (whose pages also serve the author's page of
-- posts, since they sit together by author). A post without a row here
-- has no votes and no replies: posting writes no row.
CREATE TABLE post_counts (
    user_id   INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    post_id   INTEGER NOT NULL,
    upvotes   INTEGER NOT NULL DEFAULT 0,
    downvotes INTEGER NOT NULL DEFAULT 0,
    replies   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, post_id)
) WITHOUT ROWID;
INSERT INTO post_counts (user_id, post_id, upvotes, downvotes, replies)
    SELECT user_id, id, upvotes, downvotes, replies FROM posts
    WHERE upvotes != 0 OR downvotes != 0 OR replies != 0
    ORDER BY user_id, id;
DROP INDEX posts_by_user_with_columns;
ALTER TABLE posts DROP COLUMN upvotes;
ALTER TABLE posts DROP COLUMN downvotes;
ALTER TABLE posts DROP COLUMN replies;
CREATE INDEX posts_by_user_with_text ON posts(user_id, id, created_at, content);
