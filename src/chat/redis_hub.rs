//! A hub spanning several nodes through Redis pub/sub. Every node
//! subscribes to one events channel and hands what arrives to its local
//! fan-out, including its own publications, so all nodes deliver in the
//! order Redis received them.
//!
//! Room messages are published by the room-message store's script, in the
//! same atomic step that gives them their id (`store::redis`); this hub
//! publishes everything else. It is used only together with that store.
//!
//! A publication returns once its echo has been delivered on this node,
//! so that the request that caused an event is answered after the event
//! reached the node's streams: a stream the same client opens next does
//! not receive it as news (a join's `member_joined`, say).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::{AsyncCommands, aio::ConnectionManager};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

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
    /// Any other publication, from `RedisHub::publish`, with the mark its
    /// node waits for (absent from older nodes).
    #[serde(rename = "pub")]
    Publication {
        p: Publication,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        e: Option<String>,
    },
}

impl Wire {
    /// The publication, and the mark its publisher waits for.
    fn into_parts(self) -> Option<(Publication, Option<String>)> {
        match self {
            Wire::Publication { p, e } => Some((p, e)),
            Wire::RoomMessage { r, i, n, m, c } => Some((
                Publication {
                    route: Route::Room(r),
                    event: Event::RoomMessage {
                        id: i.parse().ok()?,
                        room_id: r,
                        username: n,
                        message: m,
                        created_at: micros_to_secs(c.parse().ok()?),
                    },
                },
                None,
            )),
        }
    }
}

/// Longest `publish` waits for its echo (Redis answers in well under a
/// millisecond; a lost subscription is retried every second).
const ECHO_WAIT: Duration = Duration::from_secs(2);

/// This node's publications waiting for their echo, by mark.
struct Echoes {
    /// Tells this node's marks from other nodes'.
    node: String,
    next: AtomicU64,
    waiting: Mutex<HashMap<String, oneshot::Sender<()>>>,
}

impl Echoes {
    fn new() -> Self {
        Echoes {
            node: format!("{:016x}", rand::random::<u64>()),
            next: AtomicU64::new(0),
            waiting: Mutex::default(),
        }
    }

    /// A new mark, and what completes when its echo is delivered.
    fn expect(&self) -> (String, oneshot::Receiver<()>) {
        let mark = format!(
            "{}:{}",
            self.node,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let (arrived, echoed) = oneshot::channel();
        self.lock().insert(mark.clone(), arrived);
        (mark, echoed)
    }

    fn arrived(&self, mark: &str) {
        if let Some(waiter) = self.lock().remove(mark) {
            let _ = waiter.send(());
        }
    }

    fn forget(&self, mark: &str) {
        self.lock().remove(mark);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<()>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct RedisHub {
    conn: ConnectionManager,
    channel: String,
    fanout: Arc<Fanout>,
    echoes: Arc<Echoes>,
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
        let echoes = Arc::new(Echoes::new());
        tokio::spawn(listen(
            client,
            pubsub,
            channel.clone(),
            fanout.clone(),
            echoes.clone(),
        ));
        Ok(RedisHub {
            conn,
            channel,
            fanout,
            echoes,
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
    echoes: Arc<Echoes>,
) {
    loop {
        {
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let wire = serde_json::from_slice::<Wire>(message.get_payload_bytes());
                match wire.ok().and_then(Wire::into_parts) {
                    Some((publication, mark)) => {
                        fanout.deliver(&publication);
                        if let Some(mark) = mark {
                            echoes.arrived(&mark);
                        }
                    }
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
        let (mark, echoed) = self.echoes.expect();
        let payload = serde_json::to_string(&Wire::Publication {
            p: publication,
            e: Some(mark.clone()),
        })?;
        let mut conn = self.conn.clone();
        let published: redis::RedisResult<i64> = conn.publish(&self.channel, payload).await;
        if let Err(err) = published {
            self.echoes.forget(&mark);
            return Err(err.into());
        }
        if tokio::time::timeout(ECHO_WAIT, echoed).await.is_err() {
            self.echoes.forget(&mark);
            tracing::warn!("a real-time event did not come back from Redis in time");
        }
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
        let (publication, mark) = wire.into_parts().unwrap();
        assert_eq!(mark, None);
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
