//! Crash safety: concurrent writers (posts, votes, follows, room and inbox
//! messages, uploads) against the server binary, SIGKILL mid-load, restart
//! on the same data directory, and check that every acknowledged write is
//! there, no upload is served half-written, and every counter is right
//! (`mirage check` finds no drift). Several rounds per run.

use std::{
    collections::HashSet,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::{Client, StatusCode, multipart};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde_json::{Value, json};

use crate::process::*;

const ROUNDS: usize = 4;
const USERS: usize = 6;
/// Each writer stops after this many requests per round if the kill has
/// not come yet (it comes well before).
const MAX_REQUESTS_PER_ROUND: usize = 400;

/// Flags of every server in this test: the durable default, spelled out,
/// and retention that keeps every room message of the test.
const FLAGS: &[&str] = &[
    "--sqlite-durability",
    "full",
    "--room-message-limit",
    "1000000",
    "--room-message-ttl-secs",
    "86400",
];

/// Writes that got a success response, over every round.
#[derive(Default)]
struct Acked {
    posts: Vec<(i64, String)>,
    /// (voter, post, "up" | "down")
    votes: Vec<(usize, i64, &'static str)>,
    follows: Vec<(usize, usize)>,
    room_messages: Vec<String>,
    /// (sender, recipient, text)
    inbox: Vec<(usize, usize, String)>,
    /// (URL path, bytes)
    uploads: Vec<(String, Vec<u8>)>,
    /// Non-success answers: none is expected.
    failures: Vec<String>,
}

/// What each writer has tried, acknowledged or not: never tried twice, so
/// a write that landed without its answer cannot turn into a 400.
#[derive(Default)]
struct Attempted {
    votes: HashSet<(usize, i64)>,
    follows: HashSet<(usize, usize)>,
}

struct Load {
    base: String,
    client: Client,
    tokens: Vec<String>,
    room: i64,
    round: usize,
    acked: Arc<Mutex<Acked>>,
    attempted: Arc<Mutex<Attempted>>,
}

fn name(user: usize) -> String {
    format!("crash{user}")
}

fn random_below(n: usize) -> usize {
    rand::random_range(0..n)
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill_and_counters_stay_right() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), FLAGS);
    let mut tokens = Vec::new();
    for user in 0..USERS {
        tokens.push(server.new_user(&name(user)).await);
    }
    let room = server
        .ok(
            "/api/create_room",
            &tokens[0],
            json!({"room_name": "crash room"}),
        )
        .await["room_id"]
        .as_i64()
        .unwrap();
    for token in &tokens[1..] {
        server
            .ok(
                "/api/join_room",
                token,
                json!({"room_id": room, "password": ""}),
            )
            .await;
    }

    let acked = Arc::new(Mutex::new(Acked::default()));
    let attempted = Arc::new(Mutex::new(Attempted::default()));
    let client = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for round in 0..ROUNDS {
        let load = Arc::new(Load {
            base: server.base.clone(),
            client: client.clone(),
            tokens: tokens.clone(),
            room,
            round,
            acked: acked.clone(),
            attempted: attempted.clone(),
        });
        let writers: Vec<_> = (0..USERS)
            .map(|user| tokio::spawn(write_until_killed(load.clone(), user)))
            .collect();
        // Kill mid-load, at a different moment each round.
        tokio::time::sleep(Duration::from_millis(300 + random_below(600) as u64)).await;
        server.kill();
        for writer in writers {
            writer.await.unwrap();
        }
        server = Server::start(dir.path(), FLAGS);
        // The writers are done: the record is taken out to check it.
        let so_far = std::mem::take(&mut *acked.lock().unwrap());
        verify(&server, dir.path(), &tokens, room, &so_far).await;
        *acked.lock().unwrap() = so_far;
    }
    let acked = acked.lock().unwrap();
    assert!(
        acked.failures.is_empty(),
        "unexpected answers: {:?}",
        acked.failures
    );
    // The load must really have run: every kind of write was acknowledged.
    assert!(
        !acked.posts.is_empty()
            && !acked.votes.is_empty()
            && !acked.follows.is_empty()
            && !acked.room_messages.is_empty()
            && !acked.inbox.is_empty()
            && !acked.uploads.is_empty(),
        "posts {} votes {} follows {} room messages {} inbox {} uploads {}",
        acked.posts.len(),
        acked.votes.len(),
        acked.follows.len(),
        acked.room_messages.len(),
        acked.inbox.len(),
        acked.uploads.len()
    );
    eprintln!(
        "crash rounds: {ROUNDS} in {:.1} s; acknowledged posts {}, votes {}, follows {}, room messages {}, inbox {}, uploads {}",
        started.elapsed().as_secs_f64(),
        acked.posts.len(),
        acked.votes.len(),
        acked.follows.len(),
        acked.room_messages.len(),
        acked.inbox.len(),
        acked.uploads.len()
    );
}

/// One user's writes, each kind in turn, until a request fails (the kill).
async fn write_until_killed(load: Arc<Load>, user: usize) {
    let token = &load.tokens[user];
    for n in 0..MAX_REQUESTS_PER_ROUND {
        let tag = format!("r{} u{user} n{n}", load.round);
        let sent = match n % 6 {
            0 => {
                let content = format!("{tag} #crash");
                post(
                    &load,
                    token,
                    "/api/create_post",
                    json!({"content": content}),
                )
                .await
                .map(|v| {
                    v.map(|v| {
                        let id = v["id"].as_i64().unwrap();
                        load.acked.lock().unwrap().posts.push((id, content));
                    })
                })
            }
            1 => {
                let target = {
                    let acked = load.acked.lock().unwrap();
                    let mut attempted = load.attempted.lock().unwrap();
                    let own = format!(" u{user} ");
                    let candidate = acked
                        .posts
                        .iter()
                        .rev()
                        .map(|(id, content)| (*id, content))
                        .find(|(id, content)| {
                            !content.contains(&own) && !attempted.votes.contains(&(user, *id))
                        })
                        .map(|(id, _)| id);
                    if let Some(id) = candidate {
                        attempted.votes.insert((user, id));
                    }
                    candidate
                };
                let Some(post_id) = target else { continue };
                let kind = if random_below(3) == 0 { "down" } else { "up" };
                post(
                    &load,
                    token,
                    "/api/vote_post",
                    json!({"post_id": post_id, "vote_type": kind}),
                )
                .await
                .map(|v| {
                    v.map(|_| {
                        load.acked.lock().unwrap().votes.push((user, post_id, kind));
                    })
                })
            }
            2 => {
                let target = {
                    let mut attempted = load.attempted.lock().unwrap();
                    let candidate = (0..USERS).find(|other| {
                        *other != user && !attempted.follows.contains(&(user, *other))
                    });
                    if let Some(other) = candidate {
                        attempted.follows.insert((user, other));
                    }
                    candidate
                };
                let Some(followee) = target else { continue };
                post(
                    &load,
                    token,
                    "/api/follow",
                    json!({"username": name(followee)}),
                )
                .await
                .map(|v| v.map(|_| load.acked.lock().unwrap().follows.push((user, followee))))
            }
            3 => {
                let message = format!("{tag} in the room");
                post(
                    &load,
                    token,
                    "/api/send_room_message",
                    json!({"room_id": load.room, "message": message}),
                )
                .await
                .map(|v| v.map(|_| load.acked.lock().unwrap().room_messages.push(message)))
            }
            4 => {
                let recipient = (user + 1 + random_below(USERS - 1)) % USERS;
                let message = format!("{tag} to {recipient}");
                post(
                    &load,
                    token,
                    "/api/send_inbox_message",
                    json!({"recipient": name(recipient), "message": message}),
                )
                .await
                .map(|v| {
                    v.map(|_| {
                        load.acked
                            .lock()
                            .unwrap()
                            .inbox
                            .push((user, recipient, message))
                    })
                })
            }
            _ => upload(&load, token, &tag).await,
        };
        match sent {
            Err(()) => return,
            Ok(Some(())) => {}
            Ok(None) => {}
        }
    }
}

/// `Err` when the server is gone (the request failed); `Ok(None)` for an
/// error status (recorded as a failure); `Ok(Some(body))` when acknowledged.
async fn post(load: &Load, token: &str, path: &str, body: Value) -> Result<Option<Value>, ()> {
    let sent = load
        .client
        .post(format!("{}{path}", load.base))
        .header("Authorization", token)
        .json(&body)
        .send()
        .await;
    answer(load, path, sent).await
}

async fn answer(
    load: &Load,
    path: &str,
    sent: reqwest::Result<reqwest::Response>,
) -> Result<Option<Value>, ()> {
    let resp = sent.map_err(|_| ())?;
    let status = resp.status();
    // A body cut off by the kill is no acknowledgement.
    let text = resp.text().await.map_err(|_| ())?;
    if !status.is_success() {
        load.acked
            .lock()
            .unwrap()
            .failures
            .push(format!("{path}: {status} {text}"));
        return Ok(None);
    }
    Ok(Some(
        serde_json::from_str(&text).expect("a JSON success body"),
    ))
}

async fn upload(load: &Load, token: &str, tag: &str) -> Result<Option<()>, ()> {
    // Up to 1 MiB, so that some uploads are still streaming at the kill.
    let size = 1 + random_below(1 << 20);
    let bytes: Vec<u8> = (0..size).map(|_| rand::random::<u8>()).collect();
    let form = multipart::Form::new()
        .text("room_id", load.room.to_string())
        .part(
            "file",
            multipart::Part::bytes(bytes.clone())
                .file_name(format!("{}.bin", tag.replace(' ', "-"))),
        );
    let sent = load
        .client
        .post(format!("{}/api/upload_file", load.base))
        .header("Authorization", token)
        .multipart(form)
        .send()
        .await;
    let Some(v) = answer(load, "/api/upload_file", sent).await? else {
        return Ok(None);
    };
    let url = v["file_url"].as_str().unwrap();
    let path = url[url.find("/api/files/").unwrap()..].to_owned();
    load.acked.lock().unwrap().uploads.push((path, bytes));
    Ok(Some(()))
}

/// Everything acknowledged so far is there, every stored upload is whole,
/// and `mirage check` finds no drift.
async fn verify(server: &Server, data_dir: &Path, tokens: &[String], room: i64, acked: &Acked) {
    for (id, content) in &acked.posts {
        let post = server.get(&format!("/api/get_post_by_id/{id}"), None).await;
        assert_eq!(post["content"], content.as_str(), "post {id}");
    }
    for (follower, followee) in &acked.follows {
        let v = server
            .get(
                &format!("/api/check_follow?username={}", name(*followee)),
                Some(&tokens[*follower]),
            )
            .await;
        assert_eq!(v["is_following"], true, "{follower} follows {followee}");
    }
    let messages = server
        .get(
            &format!("/api/get_room_messages?room_id={room}"),
            Some(&tokens[0]),
        )
        .await;
    let stored: HashSet<&str> = messages["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    for message in &acked.room_messages {
        assert!(
            stored.contains(message.as_str()),
            "room message {message:?} lost"
        );
    }
    for (path, bytes) in &acked.uploads {
        let resp = server.client.get(server.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert!(resp.bytes().await.unwrap() == bytes[..], "{path} differs");
    }

    let db = Connection::open_with_flags(
        database(data_dir),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap();
    for (voter, post, kind) in &acked.votes {
        let stored: Option<i64> = db
            .query_row(
                "SELECT v.kind FROM votes v JOIN users u ON u.id = v.user_id
                 WHERE u.username = ?1 AND v.post_id = ?2",
                rusqlite::params![name(*voter), post],
                |r| r.get(0),
            )
            .optional()
            .unwrap();
        let expected = if *kind == "up" { 1 } else { -1 };
        assert_eq!(stored, Some(expected), "vote of {voter} on {post}");
    }
    for (sender, recipient, message) in &acked.inbox {
        let count: i64 = db
            .query_row(
                "SELECT COUNT(*) FROM inbox_messages i
                 JOIN users s ON s.id = i.sender_id JOIN users r ON r.id = i.recipient_id
                 WHERE s.username = ?1 AND r.username = ?2 AND i.message = ?3",
                rusqlite::params![name(*sender), name(*recipient), message],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(count, 1, "inbox message {message:?}");
    }
    // Every upload the database knows of, acknowledged or cut off by the
    // kill, is served whole.
    let files: Vec<(String, String, i64)> = db
        .prepare("SELECT id, filename, size FROM files")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (id, filename, size) in files {
        let resp = server
            .client
            .get(server.url(&format!("/api/files/{id}/{filename}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "file {id}");
        assert_eq!(resp.bytes().await.unwrap().len() as i64, size, "file {id}");
    }
    drop(db);

    let check = mirage(data_dir, &["check"]);
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
}
