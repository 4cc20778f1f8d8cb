//! The scenarios (what each request is) and the closed loop that runs them.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::json;

use crate::{
    client::{self, Conn, Req},
    dataset::{Dataset, PASSWORD, pick_tags, sentence},
};

/// Any request slower than this counts as an error (status 0) and the
/// connection is reopened: every loop is bounded in time.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Error bodies kept per measurement, to show what went wrong.
const ERROR_SAMPLES: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    Ping,
    Profile,
    GetPosts,
    GetPostById,
    GetReplies,
    Fyp,
    GetRoomMessages,
    Inbox,
    CreatePost,
    VotePost,
    ReplyToPost,
    FollowUnfollow,
    SendRoomMessage,
    SendInboxMessage,
    Login,
    Mixed,
    // Reads outside issue 5's list, run only when named (`--scenarios`).
    GetFollowers,
    GetFollowing,
    CheckFollow,
    RoomMembers,
    Rooms,
    UserRooms,
    InboxCount,
    UserCount,
}

impl Scenario {
    pub const ALL: [Scenario; 16] = [
        Scenario::Ping,
        Scenario::Profile,
        Scenario::GetPosts,
        Scenario::GetPostById,
        Scenario::GetReplies,
        Scenario::Fyp,
        Scenario::GetRoomMessages,
        Scenario::Inbox,
        Scenario::CreatePost,
        Scenario::VotePost,
        Scenario::ReplyToPost,
        Scenario::FollowUnfollow,
        Scenario::SendRoomMessage,
        Scenario::SendInboxMessage,
        Scenario::Login,
        Scenario::Mixed,
    ];
    /// Reads outside issue 5's list: run only when named.
    pub const OPTIONAL: [Scenario; 8] = [
        Scenario::GetFollowers,
        Scenario::GetFollowing,
        Scenario::CheckFollow,
        Scenario::RoomMembers,
        Scenario::Rooms,
        Scenario::UserRooms,
        Scenario::InboxCount,
        Scenario::UserCount,
    ];
    const READS: [Scenario; 7] = [
        Scenario::Profile,
        Scenario::GetPosts,
        Scenario::GetPostById,
        Scenario::GetReplies,
        Scenario::Fyp,
        Scenario::GetRoomMessages,
        Scenario::Inbox,
    ];
    const WRITES: [Scenario; 5] = [
        Scenario::CreatePost,
        Scenario::VotePost,
        Scenario::ReplyToPost,
        Scenario::SendRoomMessage,
        Scenario::SendInboxMessage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Ping => "ping",
            Scenario::Profile => "profile",
            Scenario::GetPosts => "get_posts",
            Scenario::GetPostById => "get_post_by_id",
            Scenario::GetReplies => "get_replies",
            Scenario::Fyp => "fyp",
            Scenario::GetRoomMessages => "get_room_messages",
            Scenario::Inbox => "inbox",
            Scenario::CreatePost => "create_post",
            Scenario::VotePost => "vote_post",
            Scenario::ReplyToPost => "reply_to_post",
            Scenario::FollowUnfollow => "follow_unfollow",
            Scenario::SendRoomMessage => "send_room_message",
            Scenario::SendInboxMessage => "send_inbox_message",
            Scenario::Login => "login",
            Scenario::Mixed => "mixed",
            Scenario::GetFollowers => "get_followers",
            Scenario::GetFollowing => "get_following",
            Scenario::CheckFollow => "check_follow",
            Scenario::RoomMembers => "room_members",
            Scenario::Rooms => "rooms",
            Scenario::UserRooms => "user_rooms",
            Scenario::InboxCount => "inbox_count",
            Scenario::UserCount => "usercount",
        }
    }

    pub fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL
            .into_iter()
            .chain(Scenario::OPTIONAL)
            .find(|s| s.name() == name)
    }

    /// The target class: "read" (≥ 50% of ping), "write" (≥ 25%), or none.
    pub fn class(self) -> &'static str {
        // The optional reads are held to the reads' target too.
        if Scenario::READS.contains(&self) || Scenario::OPTIONAL.contains(&self) {
            "read"
        } else if Scenario::WRITES.contains(&self) || self == Scenario::FollowUnfollow {
            "write"
        } else {
            ""
        }
    }
}

/// State shared by every connection of every measurement.
pub struct Shared {
    pub ds: Arc<Dataset>,
    pub addr: SocketAddr,
    /// Numbers the vote requests so no (user, post) pair is ever voted twice.
    vote_seq: AtomicU64,
}

impl Shared {
    pub fn new(ds: Arc<Dataset>, addr: SocketAddr) -> Shared {
        Shared {
            ds,
            addr,
            vote_seq: AtomicU64::new(0),
        }
    }

    /// The next never-voted (session user, post) pair: user `n % S` walks
    /// the posts from its own offset, skipping its own posts.
    fn next_vote(&self) -> (usize, i64, bool) {
        let sessions = self.ds.sessions.len() as u64;
        let posts = self.ds.posts() as u64;
        loop {
            let n = self.vote_seq.fetch_add(1, Ordering::Relaxed);
            let slot = (n % sessions) as usize;
            let post = ((n / sessions + slot as u64 * 7_919) % posts) as usize;
            let voter_index = (self.ds.sessions[slot].id - 1) as usize;
            if self.ds.authors[post] as usize != voter_index {
                return (slot, post as i64 + 1, !n.is_multiple_of(5));
            }
        }
    }
}

/// One connection's request generator.
pub struct Worker {
    scenario: Scenario,
    /// This connection's own session user for follow/unfollow.
    slot: usize,
    rng: StdRng,
    /// The unfollow that completes the last follow: (token, target).
    pending_unfollow: Option<(String, String)>,
}

impl Worker {
    /// The generator of connection `slot`, seeded per connection and scenario.
    pub fn new(scenario: Scenario, slot: usize, seed: u64) -> Worker {
        Worker {
            scenario,
            slot,
            rng: StdRng::seed_from_u64(seed ^ ((slot as u64) << 32) ^ scenario as u64),
            pending_unfollow: None,
        }
    }

    fn session<'a>(&mut self, ds: &'a Dataset) -> &'a crate::dataset::SessionUser {
        &ds.sessions[self.rng.random_range(0..ds.sessions.len())]
    }

    /// The next request and the status that means success.
    pub fn next(&mut self, shared: &Shared) -> (Req, u16) {
        let ds = &*shared.ds;
        let scenario = match self.scenario {
            Scenario::Mixed if self.rng.random_bool(0.9) => {
                Scenario::READS[self.rng.random_range(0..Scenario::READS.len())]
            }
            Scenario::Mixed => Scenario::WRITES[self.rng.random_range(0..Scenario::WRITES.len())],
            other => other,
        };
        match scenario {
            Scenario::Ping | Scenario::Mixed => (Req::get("/api/ping"), 200),
            Scenario::Profile => {
                let name = &ds.usernames[self.rng.random_range(0..ds.usernames.len())];
                (Req::get(format!("/api/user/{name}")), 200)
            }
            Scenario::GetPosts => {
                let name = &ds.usernames[ds.poster_weights.sample(&mut self.rng)];
                (Req::get(format!("/api/get_posts/{name}")), 200)
            }
            Scenario::GetPostById => {
                let id = self.rng.random_range(1..=ds.posts());
                (Req::get(format!("/api/get_post_by_id/{id}")), 200)
            }
            Scenario::GetReplies => {
                let id =
                    ds.posts_with_replies[self.rng.random_range(0..ds.posts_with_replies.len())];
                (Req::get(format!("/api/get_replies/{id}")), 200)
            }
            Scenario::Fyp => {
                let user = self.session(ds);
                (Req::get("/api/fyp").auth(&user.token), 200)
            }
            Scenario::GetRoomMessages => {
                let (room, slot) =
                    ds.public_memberships[self.rng.random_range(0..ds.public_memberships.len())];
                let req = Req::get(format!("/api/get_room_messages?room_id={room}"))
                    .auth(&ds.sessions[slot].token);
                (req, 200)
            }
            Scenario::Inbox => {
                let user = self.session(ds);
                (Req::get("/api/inbox").auth(&user.token), 200)
            }
            Scenario::CreatePost => {
                let user = self.session(ds);
                let tags = pick_tags(&ds.tags, &ds.tag_weights, &mut self.rng);
                let content = sentence(&mut self.rng, 40, 260, &tags);
                let req = Req::post_json("/api/create_post", json!({ "content": content }))
                    .auth(&user.token);
                (req, 201)
            }
            Scenario::VotePost => {
                let (slot, post_id, up) = shared.next_vote();
                let body =
                    json!({ "post_id": post_id, "vote_type": if up { "up" } else { "down" } });
                let req = Req::post_json("/api/vote_post", body).auth(&ds.sessions[slot].token);
                (req, 200)
            }
            Scenario::ReplyToPost => {
                let user = self.session(ds);
                let post_id = self.rng.random_range(1..=ds.posts());
                let content = sentence(&mut self.rng, 10, 200, &[]);
                let body = json!({ "post_id": post_id, "content": content });
                (
                    Req::post_json("/api/reply_to_post", body).auth(&user.token),
                    201,
                )
            }
            Scenario::FollowUnfollow => {
                if let Some((token, target)) = self.pending_unfollow.take() {
                    let req = Req::post_json("/api/unfollow", json!({ "username": target }));
                    return (req.auth(&token), 200);
                }
                let user = &ds.sessions[self.slot % ds.sessions.len()];
                let target = loop {
                    let i = self.rng.random_range(0..ds.usernames.len());
                    let id = i as i64 + 1;
                    if id != user.id && !user.follows.contains(&id) {
                        break ds.usernames[i].clone();
                    }
                };
                let req =
                    Req::post_json("/api/follow", json!({ "username": target })).auth(&user.token);
                self.pending_unfollow = Some((user.token.clone(), target));
                (req, 200)
            }
            Scenario::SendRoomMessage => {
                let (room, slot) =
                    ds.public_memberships[self.rng.random_range(0..ds.public_memberships.len())];
                let message = sentence(&mut self.rng, 5, 160, &[]);
                let body = json!({ "room_id": room, "message": message });
                let req =
                    Req::post_json("/api/send_room_message", body).auth(&ds.sessions[slot].token);
                (req, 200)
            }
            Scenario::SendInboxMessage => {
                let user = self.session(ds);
                let recipient = &ds.usernames[self.rng.random_range(0..ds.usernames.len())];
                let message = sentence(&mut self.rng, 10, 300, &[]);
                let body = json!({ "recipient": recipient, "message": message });
                (
                    Req::post_json("/api/send_inbox_message", body).auth(&user.token),
                    200,
                )
            }
            Scenario::Login => {
                let name = &ds.usernames[self.rng.random_range(0..ds.usernames.len())];
                let body = json!({ "username": name, "password": PASSWORD });
                (Req::post_json("/api/login", body), 200)
            }
            Scenario::GetFollowers => {
                let name = &ds.usernames[ds.popularity.sample(&mut self.rng)];
                (Req::get(format!("/api/get_followers/{name}")), 200)
            }
            Scenario::GetFollowing => {
                let name = &ds.usernames[self.rng.random_range(0..ds.usernames.len())];
                (Req::get(format!("/api/get_following/{name}")), 200)
            }
            Scenario::CheckFollow => {
                let user = self.session(ds);
                let name = &ds.usernames[ds.popularity.sample(&mut self.rng)];
                let req = Req::get(format!("/api/check_follow?username={name}")).auth(&user.token);
                (req, 200)
            }
            Scenario::RoomMembers => {
                let (room, slot) =
                    ds.public_memberships[self.rng.random_range(0..ds.public_memberships.len())];
                let req =
                    Req::get(format!("/api/room_members/{room}")).auth(&ds.sessions[slot].token);
                (req, 200)
            }
            Scenario::Rooms => {
                let user = self.session(ds);
                (Req::get("/api/rooms").auth(&user.token), 200)
            }
            Scenario::UserRooms => {
                let user = self.session(ds);
                (Req::get("/api/user_rooms").auth(&user.token), 200)
            }
            Scenario::InboxCount => {
                let user = self.session(ds);
                (Req::get("/api/inbox_count").auth(&user.token), 200)
            }
            Scenario::UserCount => (Req::get("/api/usercount"), 200),
        }
    }
}

/// What one closed loop measured.
pub struct Outcome {
    pub latency_us: Histogram<u64>,
    pub errors: BTreeMap<u16, u64>,
    pub error_samples: Vec<String>,
    pub secs: f64,
}

impl Outcome {
    pub fn ok(&self) -> u64 {
        self.latency_us.len()
    }
    pub fn rps(&self) -> f64 {
        (self.ok() + self.errors.values().sum::<u64>()) as f64 / self.secs
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// Runs `scenario` on `connections` connections in a closed loop (each
/// sends its next request when the previous answered): `warmup` first,
/// then `duration` measured. Only requests that complete inside the
/// measured window count.
pub async fn closed_loop(
    shared: Arc<Shared>,
    scenario: Scenario,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    seed: u64,
) -> Result<Outcome> {
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(Conn::open(shared.addr).await?);
    }
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let shared = shared.clone();
        let mut worker = Worker::new(scenario, i, seed);
        tasks.spawn(async move {
            let mut conn = Some(conn);
            let mut outcome = Outcome {
                latency_us: histogram(),
                errors: BTreeMap::new(),
                error_samples: Vec::new(),
                secs: 0.0,
            };
            loop {
                let now = Instant::now();
                if now >= end && worker.pending_unfollow.is_none() {
                    break;
                }
                // The closing unfollow after the window keeps the follow graph
                // as loaded; it is not measured.
                let closing = now >= end;
                if closing && now >= end + REQUEST_TIMEOUT {
                    break;
                }
                let (req, expected) = worker.next(&shared);
                let sent = Instant::now();
                let result = match conn.as_mut() {
                    Some(c) => tokio::time::timeout(REQUEST_TIMEOUT, c.send(&req))
                        .await
                        .ok(),
                    None => None,
                };
                let done = Instant::now();
                let answer = client::Outcome::of(result);
                let status = answer.status();
                if status != expected && scenario == Scenario::FollowUnfollow {
                    // A failed follow leaves nothing to undo.
                    if req.path == "/api/follow" {
                        worker.pending_unfollow = None;
                    }
                }
                if status == 0 {
                    conn = tokio::time::timeout(REQUEST_TIMEOUT, Conn::open(shared.addr))
                        .await
                        .ok()
                        .and_then(Result::ok);
                }
                if closing || done < measure_from || done > end {
                    continue;
                }
                if status == expected {
                    let us = done.duration_since(sent).as_micros().max(1) as u64;
                    outcome.latency_us.saturating_record(us);
                } else {
                    *outcome.errors.entry(status).or_default() += 1;
                    if outcome.error_samples.len() < ERROR_SAMPLES {
                        let text = answer.sample();
                        outcome
                            .error_samples
                            .push(format!("{} {} -> {status}: {text}", req.method, req.path));
                    }
                }
            }
            outcome
        });
    }
    let mut total = Outcome {
        latency_us: histogram(),
        errors: BTreeMap::new(),
        error_samples: Vec::new(),
        secs: duration.as_secs_f64(),
    };
    while let Some(joined) = tasks.join_next().await {
        let Ok(part) = joined else {
            bail!("a load task panicked");
        };
        total.latency_us.add(&part.latency_us)?;
        for (status, n) in part.errors {
            *total.errors.entry(status).or_default() += n;
        }
        for sample in part.error_samples {
            if total.error_samples.len() < ERROR_SAMPLES {
                total.error_samples.push(sample);
            }
        }
    }
    Ok(total)
}
