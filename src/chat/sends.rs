//! Room sends, grouped per room. A room stores and publishes its messages
//! in one order, so one write at a time per room; the messages that arrive
//! while a room's write is under way wait here and go together in its next
//! write. One write per message, under the room's lock, had capped a busy
//! room at one message per commit, an fsync (measured: 3.8k messages/s over
//! 5 rooms, against 9.2k without the lock).

use std::{
    collections::{HashMap, hash_map::Entry},
    sync::Mutex,
};

use tokio::sync::oneshot;

use crate::store::{
    StoreResult,
    rooms::{NewRoomMessage, RoomMessage},
};

/// Most messages of one room stored in one write; bounds that write.
const MAX_GROUP: usize = 256;

/// A message waiting for its room, and who waits for its outcome.
pub struct Waiting {
    pub new: NewRoomMessage,
    pub answer: oneshot::Sender<StoreResult<RoomMessage>>,
}

/// The rooms that are writing, with the messages waiting for each. A room
/// is in the map exactly while one task drains it.
#[derive(Default)]
pub struct RoomSends(Mutex<HashMap<i64, Vec<Waiting>>>);

impl RoomSends {
    /// Queues a message; true when the room was idle, and the caller must
    /// start the task that drains it (see `next_group`).
    pub fn queue(&self, room_id: i64, waiting: Waiting) -> bool {
        let mut rooms = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match rooms.entry(room_id) {
            Entry::Occupied(mut draining) => {
                draining.get_mut().push(waiting);
                false
            }
            Entry::Vacant(idle) => {
                idle.insert(vec![waiting]);
                true
            }
        }
    }

    /// The drain's next group, oldest first; `None` (and the room is idle
    /// again) when nothing waits.
    pub fn next_group(&self, room_id: i64) -> Option<Vec<Waiting>> {
        let mut rooms = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let waiting = rooms.get_mut(&room_id)?;
        if waiting.is_empty() {
            rooms.remove(&room_id);
            return None;
        }
        let take = waiting.len().min(MAX_GROUP);
        Some(waiting.drain(..take).collect())
    }

    /// Ends a drain that stopped early (a panic): the room is idle again,
    /// and its waiting senders get an error instead of waiting forever.
    pub fn abandon(&self, room_id: i64) {
        let mut rooms = self.0.lock().unwrap_or_else(|e| e.into_inner());
        rooms.remove(&room_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::accounts::UserRef;

    fn waiting(text: &str) -> (Waiting, oneshot::Receiver<StoreResult<RoomMessage>>) {
        let (answer, answered) = oneshot::channel();
        let new = NewRoomMessage {
            author: UserRef {
                id: 1,
                username: "ann".into(),
            },
            message: text.into(),
            now: 0.0,
        };
        (Waiting { new, answer }, answered)
    }

    fn texts(group: &[Waiting]) -> Vec<&str> {
        group.iter().map(|w| w.new.message.as_str()).collect()
    }

    #[test]
    fn the_first_sender_of_an_idle_room_starts_its_drain() {
        let sends = RoomSends::default();
        assert!(sends.queue(1, waiting("a").0));
        assert!(!sends.queue(1, waiting("b").0), "room 1 is draining");
        assert!(sends.queue(2, waiting("c").0), "room 2 is another room");
        assert_eq!(texts(&sends.next_group(1).unwrap()), ["a", "b"]);
        assert!(!sends.queue(1, waiting("d").0), "still draining");
        assert_eq!(texts(&sends.next_group(1).unwrap()), ["d"]);
        assert!(sends.next_group(1).is_none());
        assert!(sends.queue(1, waiting("e").0), "idle again");
    }

    #[test]
    fn groups_are_bounded_and_keep_arrival_order() {
        let sends = RoomSends::default();
        for n in 0..MAX_GROUP + 3 {
            sends.queue(7, waiting(&n.to_string()).0);
        }
        let first = sends.next_group(7).unwrap();
        assert_eq!(first.len(), MAX_GROUP);
        assert_eq!(first[0].new.message, "0");
        let rest = sends.next_group(7).unwrap();
        assert_eq!(texts(&rest), ["256", "257", "258"]);
    }

    #[test]
    fn an_abandoned_drain_answers_its_waiting_senders() {
        let sends = RoomSends::default();
        let (first, _) = waiting("a");
        let (second, answered) = waiting("b");
        sends.queue(3, first);
        sends.queue(3, second);
        sends.abandon(3);
        assert!(answered.blocking_recv().is_err(), "the sender was dropped");
        assert!(sends.queue(3, waiting("c").0), "idle again");
    }
}
