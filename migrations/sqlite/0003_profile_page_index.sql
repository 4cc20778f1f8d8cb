-- A user's newest posts (GET /api/get_posts) straight from one index.
-- Through posts_by_user(user_id, id) every row of a page was a seek to its
-- own table page, since a user's posts are spread over the whole table: 50
-- random page reads per request at a million posts. With every column a
-- page shows in the index, a user's posts sit together on a few leaf pages.
-- The index is a superset of posts_by_user, which it replaces.
CREATE INDEX posts_by_user_with_columns
    ON posts(user_id, id, created_at, upvotes, downvotes, replies, content);
DROP INDEX posts_by_user;
