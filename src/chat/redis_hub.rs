//! A hub spanning several nodes through Redis pub/sub. Every node
//! subscribes to one events channel and hands what arrives to its local
//! fan-out, including its own publications, so all nodes deliver in the
//! order Redis received them.
//!
//! Room messages are published by the room-message store's script, in the
//! same atomic step that gives them their id (`store::redis`); this hub
//! publishes everything else. It is used only together with that store.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::{AsyncCommands, aio::ConnectionManager};
use serde::{Deserialize, Serialize};

use super::{
    event::{Event, Publication, Route},
    fanout::Fanout,
    hub::Hub,
};
use crate::store::redis::{events_channel, micros_to_secs};

/// What travels on the events channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k")]
enum Wire {
    /// A room message, as the store's Lua script publishes it. Ids and
    /// times are strings so that Lua never formats a large number.
    #[serde(rename = "msg")]
    RoomMessage {
        r: i64,
        i: String,
        n: String,
        m: String,
        c: String,
    },
    /// Any other publication, from `RedisHub::publish`.
    #[serde(rename = "pub")]
    Publication { p: Publication },
}

impl Wire {
    fn into_publication(self) -> Option<Publication> {
        match self {
            Wire::Publication { p } => Some(p),
            Wire::RoomMessage { r, i, n, m, c } => Some(Publication {
                route: Route::Room(r),
                event: Event::RoomMessage {
                    id: i.parse().ok()?,
                    room_id: r,
                    username: n,
                    message: m,
                    created_at: micros_to_secs(c.parse().ok()?),
                },
            }),
        }
    }
}

pub struct RedisHub {
    conn: ConnectionManager,
    channel: String,
    fanout: Arc<Fanout>,
}

impl RedisHub {
    /// Subscribes to the events channel before returning, so nothing
    /// published afterwards is missed, and keeps the subscription alive.
    pub async fn start(
        client: redis::Client,
        conn: ConnectionManager,
        prefix: &str,
        queue_len: usize,
    ) -> anyhow::Result<Self> {
        let channel = events_channel(prefix);
        let fanout = Arc::new(Fanout::new(queue_len));
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&channel).await?;
        tokio::spawn(listen(client, pubsub, channel.clone(), fanout.clone()));
        Ok(RedisHub {
            conn,
            channel,
            fanout,
        })
    }
}

/// Delivers what arrives on the channel; resubscribes after a lost
/// connection. Events published while disconnected are not replayed:
/// clients catch up with `since`.
async fn listen(
    client: redis::Client,
    mut pubsub: redis::aio::PubSub,
    channel: String,
    fanout: Arc<Fanout>,
) {
    loop {
        {
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let wire = serde_json::from_slice::<Wire>(message.get_payload_bytes());
                match wire.ok().and_then(Wire::into_publication) {
                    Some(publication) => fanout.deliver(&publication),
                    None => tracing::warn!("ignoring a malformed event from Redis"),
                }
            }
        }
        tracing::warn!("Redis events subscription lost; reconnecting");
        pubsub = loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Ok(mut fresh) = client.get_async_pubsub().await
                && fresh.subscribe(&channel).await.is_ok()
            {
                break fresh;
            }
        };
    }
}

#[async_trait]
impl Hub for RedisHub {
    async fn publish(&self, publication: Publication) -> anyhow::Result<()> {
        if matches!(publication.event, Event::RoomMessage { .. }) {
            // Already published by the script that stored it.
            return Ok(());
        }
        let payload = serde_json::to_string(&Wire::Publication { p: publication })?;
        let mut conn = self.conn.clone();
        let _: i64 = conn.publish(&self.channel, payload).await?;
        Ok(())
    }

    fn local(&self) -> &Arc<Fanout> {
        &self.fanout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_payload_becomes_a_room_message() {
        // As cjson encodes it: numbers for the room, strings elsewhere, `/` escaped.
        let payload = r#"{"k":"msg","r":3,"i":"42","n":"ann","m":"a\/b","c":"1764121234123456"}"#;
        let wire: Wire = serde_json::from_str(payload).unwrap();
        let publication = wire.into_publication().unwrap();
        assert_eq!(publication.route, Route::Room(3));
        assert_eq!(
            publication.event,
            Event::RoomMessage {
                id: 42,
                room_id: 3,
                username: "ann".into(),
                message: "a/b".into(),
                created_at: 1_764_121_234.123_456,
            }
        );
    }
}
