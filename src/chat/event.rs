//! Real-time events: what a WebSocket client receives, and who receives it.

use serde::{Deserialize, Serialize};

use crate::{
    domain::time::format_utc,
    store::{inbox::InboxMessage, rooms::RoomMessage},
};

/// A server → client event. Serialized as a JSON object whose `type` names
/// the variant; the other fields are those of the matching HTTP object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The object `get_room_messages` returns.
    RoomMessage {
        id: i64,
        room_id: i64,
        username: String,
        message: String,
        created_at: f64,
    },
    /// The object `inbox` returns.
    InboxMessage {
        id: i64,
        sender: String,
        recipient: String,
        message: String,
        created_at: String,
        avatar_url: String,
    },
    MemberJoined {
        room_id: i64,
        room_name: String,
        username: String,
    },
    MemberLeft {
        room_id: i64,
        room_name: String,
        username: String,
    },
    /// The stream's session ended (logout, or a password change elsewhere);
    /// the server closes the stream after this event.
    SessionEnded { reason: String },
}

impl From<RoomMessage> for Event {
    fn from(m: RoomMessage) -> Self {
        Event::RoomMessage {
            id: m.id,
            room_id: m.room_id,
            username: m.username,
            message: m.message,
            created_at: m.created_at,
        }
    }
}

impl From<InboxMessage> for Event {
    fn from(m: InboxMessage) -> Self {
        Event::InboxMessage {
            id: m.id,
            sender: m.sender,
            recipient: m.recipient,
            message: m.message,
            created_at: format_utc(m.created_at),
            avatar_url: m.avatar_url,
        }
    }
}

/// Who receives an event. Membership changes travel with the event that
/// announces them, so every node applies them in the same order as the
/// room's messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Route {
    /// The room's members at the time of the event.
    Room(i64),
    /// The user joined: their connections enter the room's audience, then
    /// the room (joiner included) receives the event.
    Join { room_id: i64, user_id: i64 },
    /// The user left: the room (leaver included) receives the event, then
    /// the user's connections leave the room's audience.
    Leave { room_id: i64, user_id: i64 },
    /// These users' connections (both sides of a direct message).
    Users(Vec<i64>),
    /// Streams of these sessions of the user; they close after the event.
    Sessions { user_id: i64, sessions: Sessions },
}

/// A set of one user's sessions, by token hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Sessions {
    One([u8; 32]),
    AllBut([u8; 32]),
    /// Every session (the account was deleted).
    All,
}

impl Sessions {
    pub fn contains(&self, token_hash: &[u8; 32]) -> bool {
        match self {
            Sessions::One(hash) => hash == token_hash,
            Sessions::AllBut(hash) => hash != token_hash,
            Sessions::All => true,
        }
    }
}

/// An event with its route, as published to the hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publication {
    pub route: Route,
    pub event: Event,
}
