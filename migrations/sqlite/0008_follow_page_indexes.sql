-- Follower and followee pages (GET /api/get_followers, get_following) from
-- one index each. Through follows_by_follower(follower_id, id) every entry
-- of a page was a seek to its table row for the other side's id, since one
-- user's follows are spread over the whole table. With that id in the
-- index, a page is a run of adjacent entries (names and avatars come from
-- the users' cards in memory). Each index is a superset of the one it
-- replaces.
CREATE INDEX follows_by_follower_with_followee ON follows(follower_id, id, followee_id);
DROP INDEX follows_by_follower;
CREATE INDEX follows_by_followee_with_follower ON follows(followee_id, id, follower_id);
DROP INDEX follows_by_followee;
