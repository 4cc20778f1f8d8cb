-- A post's replies (GET /api/get_replies) straight from one index. Through
-- replies_by_post(post_id, id) every reply was a seek to its own table
-- page, since replies to one post are spread over the whole table. With
-- every column a page shows in the index, a post's replies sit together.
-- The index is a superset of replies_by_post, which it replaces.
CREATE INDEX replies_by_post_with_columns
    ON replies(post_id, id, user_id, parent_id, created_at, content);
DROP INDEX replies_by_post;
