//! The real-time WebSocket: a real client (tokio-tungstenite) against the real server.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

use crate::helpers::{TestApp, assert_error, body, spawn_app, spawn_app_with};

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Generous: only reached when something is wrong.
const WAIT: Duration = Duration::from_secs(10);

pub(crate) fn ws_url(app: &TestApp, query: &str) -> String {
    format!("{}/api/ws{query}", app.base.replacen("http://", "ws://", 1))
}

/// Connects with the token in the `Authorization` header.
pub(crate) async fn connect(app: &TestApp, token: &str) -> Socket {
    connect_query(app, token, "").await
}

pub(crate) async fn connect_query(app: &TestApp, token: &str, query: &str) -> Socket {
    let mut request = ws_url(app, query).into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Authorization", HeaderValue::from_str(token).unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket connects");
    assert_eq!(response.status(), 101);
    socket
}

/// The next JSON text frame (pings and pongs are skipped).
pub(crate) async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a frame within the wait")
            .expect("stream open")
            .expect("frame ok");
        match frame {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON frame"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

pub(crate) async fn next_of_type(socket: &mut Socket, kind: &str) -> Value {
    let event = next_json(socket).await;
    assert_eq!(event["type"], kind, "unexpected event {event}");
    event
}

pub(crate) async fn send_frame(socket: &mut Socket, frame: Value) {
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .expect("frame sent");
}

/// Proves a socket received nothing else: an app-level ping is answered
/// after everything queued before it, so the next frame must be the pong.
pub(crate) async fn assert_nothing_pending(socket: &mut Socket) {
    send_frame(socket, json!({"type": "ping", "ref": "probe"})).await;
    let frame = next_json(socket).await;
    assert_eq!(
        frame,
        json!({"type": "pong", "ref": "probe"}),
        "unexpected frame"
    );
}

pub(crate) async fn join(app: &TestApp, token: &str, room_id: i64) {
    let resp = app
        .post_json(
            "/api/join_room",
            Some(token),
            json!({"room_id": room_id, "password": ""}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

pub(crate) async fn send_http(app: &TestApp, token: &str, room_id: i64, message: &str) {
    let resp = app
        .post_json(
            "/api/send_room_message",
            Some(token),
            json!({"room_id": room_id, "message": message}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

pub(crate) async fn room_messages(app: &TestApp, token: &str, room_id: i64) -> Vec<Value> {
    let resp = app
        .get(
            &format!("/api/get_room_messages?room_id={room_id}"),
            Some(token),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    body(resp).await["messages"].as_array().unwrap().clone()
}

/// The event without its `type`: the object the HTTP API returns.
pub(crate) fn without_type(mut event: Value) -> Value {
    event.as_object_mut().unwrap().remove("type");
    event
}

#[tokio::test]
async fn bad_or_missing_tokens_are_refused_before_the_upgrade() {
    let app = spawn_app().await;
    for query in ["", "?token=not-a-session"] {
        let request = ws_url(&app, query).into_client_request().unwrap();
        match tokio_tungstenite::connect_async(request).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401);
                let body: Value = serde_json::from_slice(response.body().as_deref().unwrap())
                    .expect("JSON error body");
                assert!(body["error"].is_string(), "{body}");
                assert!(body.get("message").is_none());
            }
            other => panic!("expected a 401, got {other:?}"),
        }
    }
    // A valid token without the upgrade is a JSON 400; a bad one stays 401.
    let (_, token) = app.new_user("wsplain").await;
    assert_error(
        app.get("/api/ws", Some(&token)).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        app.get("/api/ws", Some("nope")).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // `?token=` works for browsers.
    let request = ws_url(&app, &format!("?token={token}"))
        .into_client_request()
        .unwrap();
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_nothing_pending(&mut socket).await;
}

#[tokio::test]
async fn room_events_reach_members_only_with_the_http_shapes() {
    let app = spawn_app().await;
    let (alice, alice_token) = app.new_user("wsalice").await;
    let (bob, bob_token) = app.new_user("wsbob").await;
    let (_, carol_token) = app.new_user("wscarol").await;
    let room = app
        .create_room(&alice_token, &crate::helpers::unique_name("wsroom"), None)
        .await;
    let mut alice_ws = connect(&app, &alice_token).await;
    let mut bob_ws = connect(&app, &bob_token).await;
    let mut carol_ws = connect(&app, &carol_token).await;

    join(&app, &bob_token, room).await;
    for socket in [&mut alice_ws, &mut bob_ws] {
        let joined = next_of_type(socket, "member_joined").await;
        assert_eq!(joined["room_id"], room);
        assert_eq!(joined["username"], bob.as_str());
    }

    send_http(&app, &alice_token, room, "  hello room  ").await;
    let stored = room_messages(&app, &alice_token, room).await;
    assert_eq!(stored.len(), 1, "joining posts no message");
    for socket in [&mut alice_ws, &mut bob_ws] {
        let event = next_of_type(socket, "room_message").await;
        assert_eq!(
            without_type(event.clone()),
            stored[0],
            "same object as get_room_messages"
        );
        assert_eq!(event["message"], "hello room");
        assert_eq!(event["username"], alice.as_str());
    }
    assert_nothing_pending(&mut carol_ws).await;
    assert_nothing_pending(&mut alice_ws).await;
    assert_nothing_pending(&mut bob_ws).await;
}

#[tokio::test]
async fn joining_and_leaving_take_effect_on_open_streams() {
    let app = spawn_app().await;
    let (_, alice_token) = app.new_user("wsjl").await;
    let (carol, carol_token) = app.new_user("wsjl").await;
    let room = app
        .create_room(&alice_token, &crate::helpers::unique_name("wsjlroom"), None)
        .await;
    let mut carol_ws = connect(&app, &carol_token).await;
    let mut alice_ws = connect(&app, &alice_token).await;

    send_http(&app, &alice_token, room, "before carol").await;
    next_of_type(&mut alice_ws, "room_message").await;
    assert_nothing_pending(&mut carol_ws).await;

    join(&app, &carol_token, room).await;
    let joined = next_of_type(&mut carol_ws, "member_joined").await;
    assert_eq!(joined["username"], carol.as_str());
    next_of_type(&mut alice_ws, "member_joined").await;
    send_http(&app, &alice_token, room, "while carol is in").await;
    assert_eq!(
        next_of_type(&mut carol_ws, "room_message").await["message"],
        "while carol is in"
    );
    next_of_type(&mut alice_ws, "room_message").await;

    let resp = app
        .post_json(
            "/api/leave_room",
            Some(&carol_token),
            json!({"room_id": room}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        next_of_type(&mut carol_ws, "member_left").await["room_id"],
        room
    );
    assert_eq!(
        next_of_type(&mut alice_ws, "member_left").await["username"],
        carol.as_str()
    );
    send_http(&app, &alice_token, room, "after carol").await;
    next_of_type(&mut alice_ws, "room_message").await;
    assert_nothing_pending(&mut carol_ws).await;

    // Creating a room subscribes the creator's open streams at once.
    let new_room = app
        .create_room(&carol_token, &crate::helpers::unique_name("wsnew"), None)
        .await;
    assert_eq!(
        next_of_type(&mut carol_ws, "member_joined").await["room_id"],
        new_room
    );
    send_http(&app, &carol_token, new_room, "in my own room").await;
    assert_eq!(
        next_of_type(&mut carol_ws, "room_message").await["message"],
        "in my own room"
    );
}

/// An event is news only to the streams open when it happens: a stream
/// opened once a join was answered does not receive that join. (With
/// Redis the event goes out through Redis and comes back to every node,
/// this one included; the join is answered after it came back.)
#[tokio::test]
async fn a_stream_opened_after_a_join_was_answered_does_not_receive_it() {
    let app = spawn_app().await;
    let (_, owner) = app.new_user("wsnews").await;
    let room = app
        .create_room(&owner, &crate::helpers::unique_name("wsnews"), None)
        .await;
    for round in 0..30 {
        let (_, joiner) = app.new_user("wsnewsj").await;
        join(&app, &joiner, room).await;
        let mut stream = connect(&app, &owner).await;
        let message = format!("after join {round}");
        send_http(&app, &owner, room, &message).await;
        let event = next_of_type(&mut stream, "room_message").await;
        assert_eq!(event["message"], message.as_str());
    }
}

#[tokio::test]
async fn http_and_socket_messages_are_delivered_once_in_order() {
    let app = spawn_app().await;
    let (_, alice_token) = app.new_user("wsorder").await;
    let (_, bob_token) = app.new_user("wsorder").await;
    let room = app
        .create_room(&alice_token, &crate::helpers::unique_name("wsord"), None)
        .await;
    join(&app, &bob_token, room).await;
    let mut bob_ws = connect(&app, &bob_token).await;
    let mut alice_ws = connect(&app, &alice_token).await;

    const EACH: usize = 25;
    let http_sender = {
        let (base, token) = (app.base.clone(), alice_token.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..EACH {
                let resp = client
                    .post(format!("{base}/api/send_room_message"))
                    .header("Authorization", &token)
                    .json(&json!({"room_id": room, "message": format!("http {i}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
            }
        })
    };
    let mut socket_sender = connect(&app, &bob_token).await;
    for i in 0..EACH {
        send_frame(
            &mut socket_sender,
            json!({"type": "send_room_message", "room_id": room.to_string(), "message": format!("ws {i}"), "ref": i}),
        )
        .await;
    }
    http_sender.await.unwrap();

    // The socket sender gets an ack per frame, in order, among the events.
    let mut acks = Vec::new();
    while acks.len() < EACH {
        let frame = next_json(&mut socket_sender).await;
        if frame["type"] == "ack" {
            assert_eq!(frame["message"], "sent");
            acks.push(frame["ref"].as_u64().unwrap() as usize);
        }
    }
    assert_eq!(acks, (0..EACH).collect::<Vec<_>>());

    let stored = room_messages(&app, &alice_token, room).await;
    assert_eq!(stored.len(), 2 * EACH);
    // `created_at` strictly increases within a room, so `since` is an exact cursor.
    let times: Vec<f64> = stored
        .iter()
        .map(|m| m["created_at"].as_f64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    for socket in [&mut bob_ws, &mut alice_ws] {
        let mut received = Vec::new();
        while received.len() < 2 * EACH {
            let event = next_of_type(socket, "room_message").await;
            received.push(without_type(event));
        }
        assert_eq!(received, stored, "every message once, in stored order");
        assert_nothing_pending(socket).await;
    }
    // Each sender's own messages keep their sending order.
    let texts: Vec<&str> = stored
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    for prefix in ["http ", "ws "] {
        let own: Vec<usize> = texts
            .iter()
            .filter_map(|t| t.strip_prefix(prefix))
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(own, (0..EACH).collect::<Vec<_>>());
    }
}

// Several worker threads, as in the server: sends can then finish in any
// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_senders_are_published_in_stored_order() {
    // Sends that arrive together share a write; their events must still
    // follow the stored order, or a client resuming with `since` skips some.
    let app = spawn_app().await;
    let (_, alice_token) = app.new_user("wsmany").await;
    let (_, bob_token) = app.new_user("wsmany").await;
    let room = app
        .create_room(&alice_token, &crate::helpers::unique_name("wsmany"), None)
        .await;
    join(&app, &bob_token, room).await;
    let mut bob_ws = connect(&app, &bob_token).await;

    const SENDS: usize = 60;
    let (app_ref, alice, bob) = (&app, &alice_token, &bob_token);
    let sends = (0..SENDS).map(|i| {
        let token = if i % 2 == 0 { alice } else { bob };
        let message = format!("concurrent {i}");
        async move { send_http(app_ref, token, room, &message).await }
    });
    futures_util::future::join_all(sends).await;

    let stored = room_messages(&app, &alice_token, room).await;
    assert_eq!(stored.len(), SENDS);
    let ids: Vec<i64> = stored.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let mut received = Vec::new();
    while received.len() < SENDS {
        received.push(without_type(
            next_of_type(&mut bob_ws, "room_message").await,
        ));
    }
    assert_eq!(received, stored, "every message once, in stored order");
    assert_nothing_pending(&mut bob_ws).await;
}

#[tokio::test]
async fn resuming_with_since_replays_the_gap_without_duplicates() {
    let app = spawn_app().await;
    let (_, alice_token) = app.new_user("wsresume").await;
    let (_, bob_token) = app.new_user("wsresume").await;
    let room = app
        .create_room(&alice_token, &crate::helpers::unique_name("wsres"), None)
        .await;
    join(&app, &bob_token, room).await;

    let mut bob_ws = connect(&app, &bob_token).await;
    let mut seen = Vec::new();
    for i in 0..3 {
        send_http(&app, &alice_token, room, &format!("first {i}")).await;
        seen.push(without_type(
            next_of_type(&mut bob_ws, "room_message").await,
        ));
    }
    let since = seen.last().unwrap()["created_at"].as_f64().unwrap();
    drop(bob_ws);

    for i in 0..3 {
        send_http(&app, &alice_token, room, &format!("missed {i}")).await;
    }
    // Messages keep arriving while Bob reconnects.
    let live_sender = {
        let (base, token) = (app.base.clone(), alice_token.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..20 {
                client
                    .post(format!("{base}/api/send_room_message"))
                    .header("Authorization", &token)
                    .json(&json!({"room_id": room, "message": format!("live {i}")}))
                    .send()
                    .await
                    .unwrap();
            }
        })
    };
    let mut bob_ws = connect_query(&app, &bob_token, &format!("?since={since}")).await;
    live_sender.await.unwrap();
    while seen.len() < 26 {
        seen.push(without_type(
            next_of_type(&mut bob_ws, "room_message").await,
        ));
    }
    assert_nothing_pending(&mut bob_ws).await;
    assert_eq!(
        seen,
        room_messages(&app, &alice_token, room).await,
        "no gap, no duplicate"
    );

    // A malformed `since` is a 400 before the upgrade.
    let resp = app.get("/api/ws?since=yesterday", Some(&bob_token)).await;
    assert_error(resp, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn inbox_messages_reach_both_sides_as_the_inbox_shows_them() {
    let app = spawn_app().await;
    let (alice, alice_token) = app.new_user("wsdm").await;
    let (bob, bob_token) = app.new_user("wsdm").await;
    let (_, carol_token) = app.new_user("wsdm").await;
    let mut alice_ws = connect(&app, &alice_token).await;
    let mut bob_ws = connect(&app, &bob_token).await;
    let mut carol_ws = connect(&app, &carol_token).await;

    send_frame(
        &mut alice_ws,
        json!({"type": "send_inbox_message", "recipient": bob.to_uppercase(), "message": "hi bob"}),
    )
    .await;
    // Events that arrive before the ack count as delivered.
    let mut alice_frames = Vec::new();
    loop {
        let frame = next_json(&mut alice_ws).await;
        match frame["type"].as_str() {
            Some("ack") => break,
            Some("inbox_message") => alice_frames.push(without_type(frame)),
            _ => panic!("unexpected frame {frame}"),
        }
    }
    let resp = app
        .post_json(
            "/api/send_inbox_message",
            Some(&bob_token),
            json!({"recipient": alice, "message": "hi alice"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);

    let mut inbox = body(app.get("/api/inbox", Some(&bob_token)).await).await["messages"]
        .as_array()
        .unwrap()
        .clone();
    inbox.reverse(); // oldest first, as delivered
    assert_eq!(inbox.len(), 2);
    while alice_frames.len() < 2 {
        alice_frames.push(without_type(
            next_of_type(&mut alice_ws, "inbox_message").await,
        ));
    }
    assert_eq!(alice_frames, inbox);
    for expected in &inbox {
        let event = next_of_type(&mut bob_ws, "inbox_message").await;
        assert_eq!(&without_type(event), expected);
    }
    assert_nothing_pending(&mut carol_ws).await;
    assert_nothing_pending(&mut bob_ws).await;
}

#[tokio::test]
async fn invalid_frames_get_the_http_errors_as_error_frames() {
    let app = spawn_app().await;
    let (_, alice_token) = app.new_user("wserr").await;
    let (_, bob_token) = app.new_user("wserr").await;
    let room = app
        .create_room(&alice_token, &crate::helpers::unique_name("wserr"), None)
        .await;
    let mut bob_ws = connect(&app, &bob_token).await;

    let cases = [
        ("not json", 400),
        ("[1, 2]", 400),
        (r#"{"message": "no type"}"#, 400),
        (r#"{"type": "shout"}"#, 400),
        (r#"{"type": "send_room_message", "message": "hi"}"#, 400),
        (
            r#"{"type": "send_room_message", "room_id": true, "message": "hi"}"#,
            400,
        ),
        (
            r#"{"type": "send_room_message", "room_id": 1, "message": "   "}"#,
            400,
        ),
        (
            r#"{"type": "send_room_message", "room_id": 999999, "message": "hi"}"#,
            404,
        ),
        (
            r#"{"type": "send_inbox_message", "recipient": "nobody_here", "message": "hi"}"#,
            404,
        ),
        (r#"{"type": "send_inbox_message", "recipient": "x"}"#, 400),
    ];
    for (frame, status) in cases {
        bob_ws.send(Message::Text(frame.into())).await.unwrap();
        let reply = next_of_type(&mut bob_ws, "error").await;
        assert_eq!(reply["status"], status, "{frame} -> {reply}");
        assert!(reply["error"].as_str().is_some_and(|e| !e.is_empty()));
        assert!(reply.get("message").is_none());
    }
    let too_long = "x".repeat(2001);
    send_frame(
        &mut bob_ws,
        json!({"type": "send_room_message", "room_id": room, "message": too_long, "ref": "long"}),
    )
    .await;
    let reply = next_of_type(&mut bob_ws, "error").await;
    assert_eq!(
        (reply["status"].as_u64(), reply["ref"].as_str()),
        (Some(400), Some("long"))
    );

    send_frame(
        &mut bob_ws,
        json!({"type": "send_room_message", "room_id": room, "message": "let me in", "ref": 7}),
    )
    .await;
    let reply = next_of_type(&mut bob_ws, "error").await;
    assert_eq!(reply["status"], 403);
    assert_eq!(reply["ref"], 7);
    assert_eq!(reply["error"], "you are not a member of this room");

    bob_ws
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(next_of_type(&mut bob_ws, "error").await["status"], 400);

    // Nothing was stored, and the connection is still usable.
    assert!(room_messages(&app, &alice_token, room).await.is_empty());
    assert_nothing_pending(&mut bob_ws).await;
}

#[tokio::test]
async fn a_slow_reader_is_disconnected_while_a_fast_reader_keeps_receiving() {
    let app = spawn_app_with(|c| c.ws_queue_len = 16).await;
    let (_, alice_token) = app.new_user("wsslow").await;
    let (_, slow_token) = app.new_user("wsslow").await;
    let room = app
        .create_room(&alice_token, &crate::helpers::unique_name("wsslow"), None)
        .await;
    join(&app, &slow_token, room).await;

    // The slow client never reads; a small receive buffer makes the
    // server's writes back up quickly.
    let addr = app.base.trim_start_matches("http://").parse().unwrap();
    let tcp = TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let tcp = tcp.connect(addr).await.unwrap();
    let mut request = ws_url(&app, "").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Authorization", HeaderValue::from_str(&slow_token).unwrap());
    let (mut slow_ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp))
        .await
        .unwrap();

    let fast_ws = connect(&app, &alice_token).await;
    let (mut fast_sink, mut fast_stream) = fast_ws.split();
    // More bytes than the kernel buffers (up to 4 MiB a side) can absorb.
    const SENT: usize = 3000;
    // The fast client reads while it sends, as a real client does.
    let sender = tokio::spawn(async move {
        let text = "y".repeat(1990);
        for i in 0..SENT {
            let frame = json!({"type": "send_room_message", "room_id": room, "message": format!("{i} {text}")});
            fast_sink
                .send(Message::Text(frame.to_string().into()))
                .await
                .expect("frame sent");
        }
    });
    // The fast reader receives every message, in order.
    let mut received = 0;
    while received < SENT {
        let frame = tokio::time::timeout(WAIT, fast_stream.next())
            .await
            .expect("the fast reader keeps receiving")
            .expect("stream open")
            .expect("frame ok");
        let Message::Text(text) = frame else { continue };
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["type"] == "room_message" {
            assert!(
                frame["message"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{received} "))
            );
            received += 1;
        }
    }
    sender.await.unwrap();
    // The slow reader was cut off: its stream ends before all messages.
    let mut slow_received = 0;
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(frame) = slow_ws.next().await {
            match frame {
                Ok(Message::Text(_)) => slow_received += 1,
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the slow reader's connection was not closed");
    assert!(
        slow_received < SENT,
        "the slow reader got all {slow_received} messages"
    );
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_idle_timeout() {
    let app = spawn_app_with(|c| {
        c.ws_ping_interval_secs = 1;
        c.ws_idle_timeout_secs = 2;
    })
    .await;
    let (_, token) = app.new_user("wsidle").await;
    let mut socket = connect(&app, &token).await;
    // Not polling the socket means not answering pings.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "an idle connection stayed open");

    // A client that answers pings stays connected past the timeout.
    let mut socket = connect(&app, &token).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while let Ok(frame) = tokio::time::timeout_at(deadline, socket.next()).await {
        assert!(matches!(frame, Some(Ok(Message::Ping(_)))), "{frame:?}");
    }
    assert_nothing_pending(&mut socket).await;
}

/// Reads until the stream ends; returns the `session_ended` reason seen on the way.
async fn read_until_closed(socket: &mut Socket) -> Option<String> {
    let mut reason = None;
    let closed = tokio::time::timeout(WAIT, async {
        while let Some(Ok(frame)) = socket.next().await {
            match frame {
                Message::Text(text) => {
                    let event: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(event["type"], "session_ended", "{event}");
                    reason = event["reason"].as_str().map(str::to_owned);
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the stream stayed open");
    reason
}

#[tokio::test]
async fn ending_a_session_closes_its_streams_and_only_those() {
    let app = spawn_app().await;
    let (name, first) = app.new_user("wssess").await;
    let second = app.login(&name).await;
    let third = app.login(&name).await;
    let mut first_ws = connect(&app, &first).await;
    let mut second_ws = connect(&app, &second).await;
    let mut third_ws = connect(&app, &third).await;

    // Logout ends that session's stream; the others stay.
    let resp = app.post_json("/api/logout", Some(&first), json!({})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        read_until_closed(&mut first_ws).await.as_deref(),
        Some("logged out")
    );
    assert_nothing_pending(&mut second_ws).await;

    // A password change ends every other session's stream, not the caller's.
    let resp = app
        .post_json(
            "/api/user/settings",
            Some(&third),
            json!({"password": "a new password"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        read_until_closed(&mut second_ws).await.as_deref(),
        Some("password changed")
    );
    assert_nothing_pending(&mut third_ws).await;

    // Ended sessions cannot reconnect.
    for token in [&first, &second] {
        let request = ws_url(&app, &format!("?token={token}"))
            .into_client_request()
            .unwrap();
        match tokio_tungstenite::connect_async(request).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401)
            }
            other => panic!("expected a 401, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn deleting_the_account_closes_every_stream() {
    let app = spawn_app().await;
    let (name, first) = app.new_user("wsgone").await;
    let second = app.login(&name).await;
    let (_, other) = app.new_user("wsstay").await;
    let room = app
        .create_room(&other, &crate::helpers::unique_name("wsgoneroom"), None)
        .await;
    join(&app, &first, room).await;
    let mut first_ws = connect(&app, &first).await;
    let mut second_ws = connect(&app, &second).await;
    let mut other_ws = connect(&app, &other).await;

    let resp = app
        .post_json(
            "/api/delete_account",
            Some(&first),
            json!({"password": "password123"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    for socket in [&mut first_ws, &mut second_ws] {
        assert_eq!(
            read_until_closed(socket).await.as_deref(),
            Some("account deleted")
        );
    }
    // The other members see the deleted user leave the room.
    let left = next_of_type(&mut other_ws, "member_left").await;
    assert_eq!(
        (&left["room_id"], &left["username"]),
        (&json!(room), &json!(name))
    );
    assert_nothing_pending(&mut other_ws).await;
}

#[tokio::test]
async fn an_upload_reaches_the_room_as_a_message_with_its_url() {
    let app = spawn_app().await;
    let (alice, alice_token) = app.new_user("wsup").await;
    let (_, bob_token) = app.new_user("wsup").await;
    let room = app
        .create_room(&alice_token, &crate::helpers::unique_name("wsup"), None)
        .await;
    join(&app, &bob_token, room).await;
    let mut bob_ws = connect(&app, &bob_token).await;

    let file_url = app
        .upload(&alice_token, room, "note.txt", b"hello file")
        .await;

    let event = next_of_type(&mut bob_ws, "room_message").await;
    assert_eq!(event["message"], file_url.as_str());
    assert_eq!(event["username"], alice.as_str());
    let bytes = app
        .client
        .get(&file_url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], b"hello file");
}
