//! Room chat in Redis, shared by every node: one stream per room, trimmed
//! to the room's limit as each message is added, expiring with the room's
//! TTL when the room goes quiet. Reads drop messages past the TTL.
//!
//! Adding a message is one Lua script: it takes the next id, makes
//! `created_at` strictly increase within the room, appends, trims, and
//! publishes the message on the events channel. Being atomic, the publish
//! order is the id order, so every node delivers a room's messages in the
//! same order (see `chat::redis_hub`).

use async_trait::async_trait;
use redis::{Script, aio::ConnectionManager, streams::StreamRangeReply};

use super::{
    StoreError, StoreResult,
    accounts::UserRef,
    rooms::{Retention, RoomMessage, RoomMessageStore, RoomMessages},
};

/// KEYS: room stream, id counter. ARGV: now (µs), user id, username,
/// message, max messages, TTL (ms), events channel, room id.
const ADD_MESSAGE: &str = r#"
local id = redis.call('INCR', KEYS[2])
local created = tonumber(ARGV[1])
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then
  local fields = last[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'c' then
      local prev = tonumber(fields[i + 1])
      if prev >= created then created = prev + 1 end
    end
  end
end
local c = string.format('%d', created)
local sid = string.format('%d', id)
redis.call('XADD', KEYS[1], 'MAXLEN', '=', ARGV[5], sid .. '-0',
  'i', sid, 'u', ARGV[2], 'n', ARGV[3], 'm', ARGV[4], 'c', c)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PUBLISH', ARGV[7], cjson.encode({k = 'msg', r = tonumber(ARGV[8]), i = sid, n = ARGV[3], m = ARGV[4], c = c}))
return {sid, c}
"#;

/// KEYS: room stream. ARGV: user id. Deletes the user's entries.
const ERASE_AUTHOR: &str = r#"
local erased = 0
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'u' and fields[i + 1] == ARGV[1] then
      erased = erased + redis.call('XDEL', KEYS[1], entry[1])
    end
  end
end
return erased
"#;

pub struct RedisRoomMessages {
    conn: ConnectionManager,
    prefix: String,
    add: Script,
    erase_author: Script,
}

impl RedisRoomMessages {
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        RedisRoomMessages {
            conn,
            prefix: prefix.to_owned(),
            add: Script::new(ADD_MESSAGE),
            erase_author: Script::new(ERASE_AUTHOR),
        }
    }

    fn room_key(&self, room_id: i64) -> String {
        format!("{}:room:{room_id}:messages", self.prefix)
    }
}

/// The channel every node subscribes to for real-time events.
pub fn events_channel(prefix: &str) -> String {
    format!("{prefix}:events")
}

/// Times travel as whole microseconds so that no float is ever formatted
/// in Lua (which would round); every node converts them the same way.
pub fn micros_to_secs(micros: i64) -> f64 {
    micros as f64 / 1e6
}

fn secs_to_micros(secs: f64) -> i64 {
    (secs * 1e6).round() as i64
}

fn redis_error(err: redis::RedisError) -> StoreError {
    StoreError::Other(format!("redis: {err}"))
}

fn parse_number(text: &str, what: &str) -> StoreResult<i64> {
    text.parse()
        .map_err(|_| StoreError::Other(format!("redis: bad {what} {text:?}")))
}

#[async_trait]
impl RoomMessageStore for RedisRoomMessages {
    async fn add_room_message(
        &self,
        room_id: i64,
        author: UserRef,
        message: String,
        now: f64,
        retention: Retention,
    ) -> StoreResult<RoomMessage> {
        let mut conn = self.conn.clone();
        let ttl_ms = (retention.ttl_secs * 1000.0).ceil().max(1.0) as i64;
        let (id, created): (String, String) = self
            .add
            .key(self.room_key(room_id))
            .key(format!("{}:room-message-id", self.prefix))
            .arg(secs_to_micros(now))
            .arg(author.id)
            .arg(&author.username)
            .arg(&message)
            .arg(retention.max_messages)
            .arg(ttl_ms)
            .arg(events_channel(&self.prefix))
            .arg(room_id)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(RoomMessage {
            id: parse_number(&id, "id")?,
            room_id,
            username: author.username,
            message,
            created_at: micros_to_secs(parse_number(&created, "created_at")?),
        })
    }

    async fn room_messages(
        &self,
        room_id: i64,
        since: Option<f64>,
        now: f64,
        retention: Retention,
    ) -> StoreResult<RoomMessages> {
        let mut conn = self.conn.clone();
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.room_key(room_id))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let oldest = (now - retention.ttl_secs).max(since.unwrap_or(f64::MIN));
        let mut messages = Vec::with_capacity(reply.ids.len());
        for entry in reply.ids {
            let field = |name: &str| -> StoreResult<String> {
                entry
                    .get::<String>(name)
                    .ok_or_else(|| StoreError::Other(format!("redis: entry without {name}")))
            };
            let created_at = micros_to_secs(parse_number(&field("c")?, "created_at")?);
            if created_at <= oldest {
                continue;
            }
            messages.push(RoomMessage {
                id: parse_number(&field("i")?, "id")?,
                room_id,
                username: field("n")?,
                message: field("m")?,
                created_at,
            });
        }
        Ok(RoomMessages::owned(messages))
    }

    /// Streams are trimmed on every add and expire with the room's TTL, and
    /// reads skip expired entries: nothing to reclaim here.
    async fn purge_expired_messages(&self, _now: f64, _retention: Retention) -> StoreResult<u64> {
        Ok(0)
    }

    /// Every room stream is visited (the user may have left rooms they
    /// wrote in); a deleted room's stream goes whole, since SQLite may give
    /// its id to a new room.
    async fn erase_messages_of(&self, user_id: i64, deleted_rooms: &[i64]) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        for room_id in deleted_rooms {
            redis::cmd("DEL")
                .arg(self.room_key(*room_id))
                .query_async::<()>(&mut conn)
                .await
                .map_err(redis_error)?;
        }
        let pattern = format!("{}:room:*:messages", self.prefix);
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        for key in keys {
            self.erase_author
                .key(key)
                .arg(user_id)
                .invoke_async::<i64>(&mut conn)
                .await
                .map_err(redis_error)?;
        }
        Ok(())
    }
}
