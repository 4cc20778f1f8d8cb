-- Mirage schema, version 1. Times are Unix seconds (room messages: with fractions).
-- Counters on users and posts are kept in the same transaction as the rows they count.

CREATE TABLE users (
    id               INTEGER PRIMARY KEY,
    username         TEXT    NOT NULL,
    username_key     TEXT    NOT NULL UNIQUE,   -- lower-case, for case-insensitive uniqueness
    email            TEXT    NOT NULL,
    email_key        TEXT    NOT NULL UNIQUE,
    password_hash    TEXT    NOT NULL,
    avatar_url       TEXT    NOT NULL DEFAULT '',
    description      TEXT    NOT NULL DEFAULT '',
    custom_css       TEXT    NOT NULL DEFAULT '',
    background_image TEXT    NOT NULL DEFAULT '',
    created_at       INTEGER NOT NULL,
    followers        INTEGER NOT NULL DEFAULT 0,
    following        INTEGER NOT NULL DEFAULT 0,
    posts            INTEGER NOT NULL DEFAULT 0,
    upvotes          INTEGER NOT NULL DEFAULT 0,   -- received on the user's posts
    downvotes        INTEGER NOT NULL DEFAULT 0,
    last_post_id     INTEGER NOT NULL DEFAULT 0    -- lets the feed find recently active followees
);

CREATE TABLE sessions (
    token_hash BLOB    PRIMARY KEY,               -- SHA-256 of the token; the token is never stored
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_by_user ON sessions(user_id);

CREATE TABLE follows (
    id          INTEGER PRIMARY KEY,
    follower_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    followee_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    UNIQUE (follower_id, followee_id)
);
CREATE INDEX follows_by_follower ON follows(follower_id, id);
CREATE INDEX follows_by_followee ON follows(followee_id, id);

CREATE TABLE posts (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    content    TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    upvotes    INTEGER NOT NULL DEFAULT 0,
    downvotes  INTEGER NOT NULL DEFAULT 0,
    replies    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX posts_by_user ON posts(user_id, id);
CREATE INDEX posts_by_time ON posts(created_at);

-- Hashtags as extracted at post time (lower-case, without '#').
CREATE TABLE post_tags (
    post_id    INTEGER NOT NULL REFERENCES posts(id) ON DELETE CASCADE,
    tag        TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (post_id, tag)
) WITHOUT ROWID;
CREATE INDEX post_tags_by_time ON post_tags(created_at, tag);

CREATE TABLE votes (
    post_id INTEGER NOT NULL REFERENCES posts(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind    INTEGER NOT NULL CHECK (kind IN (1, -1)),   -- 1 up, -1 down
    PRIMARY KEY (post_id, user_id)
) WITHOUT ROWID;

CREATE TABLE replies (
    id         INTEGER PRIMARY KEY,
    post_id    INTEGER NOT NULL REFERENCES posts(id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    parent_id  INTEGER REFERENCES replies(id) ON DELETE CASCADE,
    content    TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX replies_by_post ON replies(post_id, id);

CREATE TABLE rooms (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL,
    name_key      TEXT    NOT NULL UNIQUE,
    is_private    INTEGER NOT NULL CHECK (is_private IN (0, 1)),
    password_hash TEXT,
    created_by    INTEGER NOT NULL REFERENCES users(id),
    created_at    INTEGER NOT NULL
);
CREATE INDEX rooms_by_privacy ON rooms(is_private, id);

CREATE TABLE room_members (
    room_id   INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id   INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    joined_at INTEGER NOT NULL,
    seq       INTEGER NOT NULL,                 -- joining order
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;
CREATE INDEX room_members_by_user ON room_members(user_id, room_id);

-- AUTOINCREMENT: ids never repeat even after the newest messages expire,
-- so clients can use them as a resume cursor.
CREATE TABLE room_messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id    INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    message    TEXT    NOT NULL,
    created_at REAL    NOT NULL
);
CREATE INDEX room_messages_by_room ON room_messages(room_id, id);
CREATE INDEX room_messages_by_time ON room_messages(created_at);

CREATE TABLE files (
    id           TEXT    PRIMARY KEY,
    room_id      INTEGER NOT NULL,
    user_id      INTEGER NOT NULL,
    filename     TEXT    NOT NULL,
    content_type TEXT    NOT NULL,
    size         INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE inbox_messages (
    id                INTEGER PRIMARY KEY,
    sender_id         INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    recipient_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    message           TEXT    NOT NULL,
    created_at        INTEGER NOT NULL,
    sender_deleted    INTEGER NOT NULL DEFAULT 0,
    recipient_deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX inbox_by_recipient ON inbox_messages(recipient_id, id);
CREATE INDEX inbox_by_sender ON inbox_messages(sender_id, id);
