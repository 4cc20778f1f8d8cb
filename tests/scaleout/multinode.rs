//! Two nodes of one deployment (same database, Redis and file storage):
//! whatever is done through one is seen through the other.

use futures_util::future::join_all;
use mirage::config::Switch;
use reqwest::{Response, StatusCode};
use serde_json::json;

use crate::{
    helpers::{TestApp, body, spawn_app, spawn_app_with},
    rate_limits::{assert_limited, three_account_logins_an_hour},
    ws::{
        assert_nothing_pending, connect, join, next_of_type, room_messages, send_frame, send_http,
        without_type,
    },
};

#[tokio::test]
async fn two_nodes_behave_as_one() {
    let a = spawn_app().await;
    if a.config.redis.is_none() {
        crate::backend::skipped("the two-node test", "Redis is not configured");
        return;
    }
    let b = a.second_node().await;

    // Accounts, sessions and posts made on A are visible on B.
    let (alice, alice_token) = a.new_user("mnalice").await;
    let (bob, bob_token) = b.new_user("mnbob").await;
    let resp = a
        .post_json(
            "/api/create_post",
            Some(&alice_token),
            json!({"content": "from A #multi"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let post_id = body(resp).await["id"].as_i64().unwrap();
    let posts = body(b.get(&format!("/api/get_posts/{alice}"), None).await).await;
    assert_eq!(posts["posts"][0]["id"], post_id);
    let resp = b
        .post_json("/api/follow", Some(&bob_token), json!({"username": alice}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let profile = body(a.get(&format!("/api/user/{alice}"), None).await).await;
    assert_eq!(profile["stats"]["followers"], 1);

    // Rooms and room chat: a message sent through either node is stored
    // once and delivered to sockets on both nodes, in the same order.
    let room = a
        .create_room(&alice_token, &crate::helpers::unique_name("mnroom"), None)
        .await;
    join(&b, &bob_token, room).await;
    let mut alice_on_a = connect(&a, &alice_token).await;
    let mut bob_on_b = connect(&b, &bob_token).await;
    send_http(&a, &alice_token, room, "hello from A").await;
    send_frame(
        &mut bob_on_b,
        json!({"type": "send_room_message", "room_id": room, "message": "hello from B"}),
    )
    .await;
    // Bob's events that arrive before his ack count as delivered.
    let mut bob_seen = Vec::new();
    loop {
        let frame = crate::ws::next_json(&mut bob_on_b).await;
        match frame["type"].as_str() {
            Some("ack") => break,
            Some("room_message") => bob_seen.push(without_type(frame)),
            _ => {}
        }
    }
    let stored = room_messages(&b, &bob_token, room).await;
    assert_eq!(stored, room_messages(&a, &alice_token, room).await);
    assert_eq!(stored.len(), 2);
    for (socket, mut seen) in [(&mut alice_on_a, Vec::new()), (&mut bob_on_b, bob_seen)] {
        while seen.len() < 2 {
            let event = crate::ws::next_json(socket).await;
            if event["type"] == "room_message" {
                seen.push(without_type(event));
            }
        }
        assert_eq!(
            seen, stored,
            "every node delivers once, in the stored order"
        );
        assert_nothing_pending(socket).await;
    }

    // Direct messages reach the recipient's socket on the other node.
    let resp = a
        .post_json(
            "/api/send_inbox_message",
            Some(&alice_token),
            json!({"recipient": bob, "message": "psst"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let event = next_of_type(&mut bob_on_b, "inbox_message").await;
    assert_eq!(event["message"], "psst");
    let inbox = body(b.get("/api/inbox", Some(&bob_token)).await).await;
    assert_eq!(inbox["messages"][0]["message"], "psst");

    // An upload through A is served by B.
    let file_url = a.upload(&alice_token, room, "n.txt", b"shared bytes").await;
    let path = file_url.splitn(4, '/').nth(3).unwrap();
    let served = b.get(&format!("/{path}"), None).await;
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(&served.bytes().await.unwrap()[..], b"shared bytes");
    assert_eq!(
        next_of_type(&mut bob_on_b, "room_message").await["message"],
        file_url.as_str()
    );

    // Concurrent votes spread over both nodes keep every counter exact.
    let mut voters = Vec::new();
    for i in 0..16 {
        let node = if i % 2 == 0 { &a } else { &b };
        voters.push(node.new_user("mnvoter").await.1);
    }
    let votes = voters.iter().enumerate().map(|(i, token)| {
        let node = if i % 2 == 0 { &a } else { &b };
        let vote_type = if i % 4 < 3 { "up" } else { "down" };
        node.post_json(
            "/api/vote_post",
            Some(token),
            json!({"post_id": post_id, "vote_type": vote_type}),
        )
    });
    for resp in join_all(votes).await {
        assert_eq!(resp.status(), StatusCode::OK);
    }
    for node in [&a, &b] {
        let post = body(
            node.get(&format!("/api/get_post_by_id/{post_id}"), None)
                .await,
        )
        .await;
        assert_eq!(
            (post["upvotes"].as_i64(), post["downvotes"].as_i64()),
            (Some(12), Some(4))
        );
        let profile = body(node.get(&format!("/api/user/{alice}"), None).await).await;
        assert_eq!(profile["stats"]["upvotes"], 12);
        assert_eq!(profile["stats"]["downvotes"], 4);
    }
}

async fn login_as(node: &TestApp, username: &str, password: &str) -> Response {
    node.post_json(
        "/api/login",
        None,
        json!({"username": username, "password": password}),
    )
    .await
}

/// With Redis, the nodes count against one quota: a client cannot multiply
/// its logins or posts by spreading them over the nodes. Each node alone
/// sees fewer requests than the quota here, so a per-node limit would let
/// every request through.
#[tokio::test]
async fn two_nodes_share_one_rate_limit() {
    let a = spawn_app_with(|config| {
        let limits = &mut config.rate_limits;
        limits.mode = Switch::On;
        limits.register = "1000/1h".parse().unwrap();
        limits.login = "4/1h".parse().unwrap();
        limits.posts = "2/1h".parse().unwrap();
    })
    .await;
    if a.config.redis.is_none() {
        crate::backend::skipped("the shared rate-limit test", "Redis is not configured");
        return;
    }
    let b = a.second_node().await;

    // One login on A to sign up, then three wrong passwords over A and B.
    let (alice, alice_token) = a.new_user("rlalice").await;
    for node in [&b, &a, &b] {
        let resp = login_as(node, &alice, "wrong-password").await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    // The fifth attempt, right password included, is over on either node.
    assert_limited(login_as(&a, &alice, "password123").await).await;
    assert_limited(login_as(&b, &alice, "password123").await).await;

    // Two posts, one through each node; the third is refused and not stored.
    for node in [&a, &b] {
        node.create_post(&alice_token, "shared quota").await;
    }
    let resp = a
        .post_json(
            "/api/create_post",
            Some(&alice_token),
            json!({"content": "one too many"}),
        )
        .await;
    assert_limited(resp).await;
    let posts = body(b.get(&format!("/api/get_posts/{alice}"), None).await).await;
    assert_eq!(posts["posts"].as_array().map(Vec::len), Some(2));
}

/// The addresses an account logged in from are shared too: guesses through
/// one node do not lock the owner out of another where they logged in from
/// home before.
#[tokio::test]
async fn two_nodes_share_the_addresses_an_account_logged_in_from() {
    let a = spawn_app_with(three_account_logins_an_hour).await;
    if a.config.redis.is_none() {
        crate::backend::skipped("the shared known-login test", "Redis is not configured");
        return;
    }
    let b = a.second_node().await;
    // new_user's login on A, then one from home on A: two of three.
    let (owner, _) = a.new_user("mnowner").await;
    let send = |node, password, address| login_from(node, &owner, password, address);
    let home = "203.0.113.5";
    assert_eq!(send(&a, "password123", home).await.status(), StatusCode::OK);
    let guess = send(&b, "wrong guess", "198.51.100.1").await;
    assert_eq!(guess.status(), StatusCode::UNAUTHORIZED);
    assert_limited(send(&b, "password123", "198.51.100.2").await).await;
    // B never saw the owner at home, but Redis did.
    assert_eq!(send(&b, "password123", home).await.status(), StatusCode::OK);
    assert_limited(send(&a, "password123", "198.51.100.3").await).await;
}

async fn login_from(node: &TestApp, username: &str, password: &str, address: &str) -> Response {
    node.client
        .post(node.url("/api/login"))
        .header("X-Forwarded-For", address)
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("request sent")
}
