-- Indexes that deleting an account needs: without them every cascade from
-- users (and from a deleted reply to its children) scans a whole table.
CREATE INDEX votes_by_user ON votes(user_id);
CREATE INDEX replies_by_user ON replies(user_id);
CREATE INDEX replies_by_parent ON replies(parent_id);
CREATE INDEX room_messages_by_user ON room_messages(user_id);
CREATE INDEX rooms_by_creator ON rooms(created_by);
CREATE INDEX files_by_user ON files(user_id);
CREATE INDEX files_by_room ON files(room_id);
