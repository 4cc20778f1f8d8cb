//! This node's WebSocket connections and the delivery of events to them.
//!
//! Each connection has a bounded queue. Delivery never waits: when a
//! connection's queue is full its reader is too slow, and the connection is
//! told to close, so one stalled client neither grows memory nor delays
//! anybody else.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::event::{Event, Publication, Route};

pub type ConnId = u64;

/// One event, serialized once and shared by every connection it goes to.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `(room_id, message id)` of a room message, so a resuming connection
    /// can skip what its backfill already sent.
    pub room_message: Option<(i64, i64)>,
    pub frame: Utf8Bytes,
    /// The stream closes once this frame is written (its session ended).
    pub close_after: bool,
}

/// A registered connection's end of the fan-out; dropping it unregisters.
pub struct Subscription {
    pub id: ConnId,
    pub deliveries: mpsc::Receiver<Delivery>,
    /// Cancelled when the queue overflowed: the client does not keep up.
    pub overflowed: CancellationToken,
    fanout: Arc<Fanout>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.fanout.disconnect(self.id);
    }
}

struct Conn {
    user_id: i64,
    session: [u8; 32],
    queue: mpsc::Sender<Delivery>,
    overflowed: CancellationToken,
    /// `None` until the connection's rooms are loaded; membership changes
    /// seen before then wait in `pending` and are applied on top.
    rooms: Option<HashSet<i64>>,
    pending: Vec<(i64, bool)>,
}

impl Conn {
    fn push(&self, delivery: &Delivery) {
        match self.queue.try_send(delivery.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.overflowed.cancel(),
            // The connection is closing; it unregisters itself.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

#[derive(Default)]
struct Registry {
    conns: HashMap<ConnId, Conn>,
    by_user: HashMap<i64, Vec<ConnId>>,
    by_room: HashMap<i64, Vec<ConnId>>,
}

impl Registry {
    fn enter_room(&mut self, id: ConnId, room_id: i64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match &mut conn.rooms {
            Some(rooms) => {
                if rooms.insert(room_id) {
                    self.by_room.entry(room_id).or_default().push(id);
                }
            }
            None => conn.pending.push((room_id, true)),
        }
    }

    fn leave_room(&mut self, id: ConnId, room_id: i64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match &mut conn.rooms {
            Some(rooms) => {
                if rooms.remove(&room_id) {
                    remove_id(&mut self.by_room, room_id, id);
                }
            }
            None => conn.pending.push((room_id, false)),
        }
    }

    fn user_conns(&self, user_id: i64) -> Vec<ConnId> {
        self.by_user.get(&user_id).cloned().unwrap_or_default()
    }

    fn push_room(&self, room_id: i64, delivery: &Delivery) {
        for id in self.by_room.get(&room_id).into_iter().flatten() {
            if let Some(conn) = self.conns.get(id) {
                conn.push(delivery);
            }
        }
    }
}

fn remove_id(map: &mut HashMap<i64, Vec<ConnId>>, key: i64, id: ConnId) {
    if let Some(ids) = map.get_mut(&key) {
        ids.retain(|&other| other != id);
        if ids.is_empty() {
            map.remove(&key);
        }
    }
}

pub struct Fanout {
    registry: RwLock<Registry>,
    queue_len: usize,
    next_id: AtomicU64,
}

impl Fanout {
    /// `queue_len`: how many undelivered events a connection may hold
    /// before it counts as too slow.
    pub fn new(queue_len: usize) -> Self {
        Fanout {
            registry: RwLock::default(),
            queue_len: queue_len.max(1),
            next_id: AtomicU64::new(1),
        }
    }

    /// Registers a connection of `user_id`. It receives the user's direct
    /// messages at once, and room events once `set_rooms` has run.
    pub fn connect(self: &Arc<Self>, user_id: i64, session: [u8; 32]) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (queue, deliveries) = mpsc::channel(self.queue_len);
        let overflowed = CancellationToken::new();
        let mut registry = self.registry.write().expect("fan-out lock");
        registry.conns.insert(
            id,
            Conn {
                user_id,
                session,
                queue,
                overflowed: overflowed.clone(),
                rooms: None,
                pending: Vec::new(),
            },
        );
        registry.by_user.entry(user_id).or_default().push(id);
        Subscription {
            id,
            deliveries,
            overflowed,
            fanout: Arc::clone(self),
        }
    }

    /// Sets the rooms of a connection from a membership snapshot read after
    /// `connect`; joins and leaves seen since `connect` are applied on top,
    /// in order, so no change is lost to the race between the two.
    pub fn set_rooms(&self, id: ConnId, snapshot: impl IntoIterator<Item = i64>) {
        let mut registry = self.registry.write().expect("fan-out lock");
        let Some(conn) = registry.conns.get_mut(&id) else {
            return;
        };
        let mut rooms: HashSet<i64> = snapshot.into_iter().collect();
        for (room_id, joined) in conn.pending.drain(..) {
            if joined {
                rooms.insert(room_id);
            } else {
                rooms.remove(&room_id);
            }
        }
        let entered: Vec<i64> = rooms.iter().copied().collect();
        conn.rooms = Some(rooms);
        for room_id in entered {
            registry.by_room.entry(room_id).or_default().push(id);
        }
    }

    fn disconnect(&self, id: ConnId) {
        let mut registry = self.registry.write().expect("fan-out lock");
        let Some(conn) = registry.conns.remove(&id) else {
            return;
        };
        remove_id(&mut registry.by_user, conn.user_id, id);
        for room_id in conn.rooms.into_iter().flatten() {
            remove_id(&mut registry.by_room, room_id, id);
        }
    }

    /// Open connections on this node.
    pub fn connection_count(&self) -> usize {
        self.registry.read().expect("fan-out lock").conns.len()
    }

    /// Delivers a publication to this node's connections it concerns.
    pub fn deliver(&self, publication: &Publication) {
        let delivery = match serialize(&publication.event) {
            Ok(delivery) => delivery,
            Err(err) => {
                tracing::error!(%err, "serializing an event failed");
                return;
            }
        };
        match &publication.route {
            Route::Room(room_id) => {
                let registry = self.registry.read().expect("fan-out lock");
                registry.push_room(*room_id, &delivery);
            }
            Route::Join { room_id, user_id } => {
                let mut registry = self.registry.write().expect("fan-out lock");
                for id in registry.user_conns(*user_id) {
                    registry.enter_room(id, *room_id);
                }
                registry.push_room(*room_id, &delivery);
            }
            Route::Leave { room_id, user_id } => {
                let mut registry = self.registry.write().expect("fan-out lock");
                registry.push_room(*room_id, &delivery);
                for id in registry.user_conns(*user_id) {
                    registry.leave_room(id, *room_id);
                }
            }
            Route::Sessions { user_id, sessions } => {
                let registry = self.registry.read().expect("fan-out lock");
                for id in registry.by_user.get(user_id).into_iter().flatten() {
                    if let Some(conn) = registry.conns.get(id)
                        && sessions.contains(&conn.session)
                    {
                        conn.push(&delivery);
                    }
                }
            }
            Route::Users(user_ids) => {
                let registry = self.registry.read().expect("fan-out lock");
                let mut seen = HashSet::new();
                for user_id in user_ids.iter().filter(|u| seen.insert(**u)) {
                    for id in registry.by_user.get(user_id).into_iter().flatten() {
                        if let Some(conn) = registry.conns.get(id) {
                            conn.push(&delivery);
                        }
                    }
                }
            }
        }
    }
}

fn serialize(event: &Event) -> serde_json::Result<Delivery> {
    let room_message = match event {
        Event::RoomMessage { id, room_id, .. } => Some((*room_id, *id)),
        _ => None,
    };
    Ok(Delivery {
        room_message,
        frame: serde_json::to_string(event)?.into(),
        close_after: matches!(event, Event::SessionEnded { .. }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(room_id: i64, id: i64) -> Publication {
        Publication {
            route: Route::Room(room_id),
            event: Event::RoomMessage {
                id,
                room_id,
                username: "ann".into(),
                message: format!("m{id}"),
                created_at: 1.5,
            },
        }
    }

    fn membership(room_id: i64, user_id: i64, joined: bool) -> Publication {
        let event = Event::MemberJoined {
            room_id,
            room_name: "r".into(),
            username: "u".into(),
        };
        let route = if joined {
            Route::Join { room_id, user_id }
        } else {
            Route::Leave { room_id, user_id }
        };
        Publication { route, event }
    }

    fn drain(sub: &mut Subscription) -> Vec<Option<(i64, i64)>> {
        std::iter::from_fn(|| sub.deliveries.try_recv().ok())
            .map(|d| d.room_message)
            .collect()
    }

    #[test]
    fn room_events_reach_members_only() {
        let fanout = Arc::new(Fanout::new(8));
        let mut member = fanout.connect(1, [1; 32]);
        let mut outsider = fanout.connect(2, [2; 32]);
        fanout.set_rooms(member.id, [10]);
        fanout.set_rooms(outsider.id, [11]);
        fanout.deliver(&message(10, 1));
        assert_eq!(drain(&mut member), vec![Some((10, 1))]);
        assert!(drain(&mut outsider).is_empty());
    }

    #[test]
    fn changes_before_the_snapshot_is_set_are_applied_on_top() {
        let fanout = Arc::new(Fanout::new(8));
        let mut sub = fanout.connect(1, [1; 32]);
        // Joined 11 and left 10 while the snapshot (still showing 10) was read.
        fanout.deliver(&membership(11, 1, true));
        fanout.deliver(&membership(10, 1, false));
        fanout.set_rooms(sub.id, [10]);
        fanout.deliver(&message(10, 1));
        fanout.deliver(&message(11, 2));
        assert_eq!(drain(&mut sub), vec![Some((11, 2))]);
    }

    #[test]
    fn a_full_queue_marks_the_connection_and_spares_the_others() {
        let fanout = Arc::new(Fanout::new(2));
        let slow = fanout.connect(1, [1; 32]);
        let mut fast = fanout.connect(2, [2; 32]);
        fanout.set_rooms(slow.id, [10]);
        fanout.set_rooms(fast.id, [10]);
        for id in 1..=3 {
            fanout.deliver(&message(10, id));
            drain(&mut fast);
        }
        assert!(slow.overflowed.is_cancelled());
        assert!(!fast.overflowed.is_cancelled());
        drop(slow);
        assert_eq!(fanout.connection_count(), 1);
    }
}
