//! Rate limits: the request over the quota is 429 with `Retry-After`, changes nothing, and the quota refills.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use mirage::config::{RateLimitConfig, Switch};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::{
    delete_account::delete_account,
    helpers::{TestApp, assert_error, body, spawn_app_with, unique_name},
    ws::{connect, join, room_messages, send_frame},
};

/// A server with limits on; sign-up and login are roomy unless `adjust`
/// tightens them, since every test registers its users from 127.0.0.1.
async fn spawn_limited(adjust: impl FnOnce(&mut RateLimitConfig)) -> TestApp {
    spawn_app_with(|config| {
        let limits = &mut config.rate_limits;
        limits.mode = Switch::On;
        limits.register = "1000/1h".parse().unwrap();
        limits.login = "1000/1h".parse().unwrap();
        adjust(limits);
    })
    .await
}

/// Asserts a 429 with a whole-seconds `Retry-After` of at least 1 and a
/// JSON error; returns the seconds.
pub(crate) async fn assert_limited(resp: Response) -> u64 {
    let retry_after: u64 = resp
        .headers()
        .get("retry-after")
        .expect("Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .expect("whole seconds");
    assert!(retry_after >= 1, "Retry-After {retry_after}");
    let error = assert_error(resp, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(error.starts_with("too many"), "{error}");
    retry_after
}

/// Repeats `attempt` until it is no longer 429; fails after 10 s.
async fn after_the_wait<F, Fut>(attempt: F) -> Response
where
    F: Fn() -> Fut,
    Fut: Future<Output = Response>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = attempt().await;
        if resp.status() != StatusCode::TOO_MANY_REQUESTS {
            return resp;
        }
        assert!(Instant::now() < deadline, "still limited after 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn login_status(
    app: &TestApp,
    username: &str,
    password: &str,
    forwarded: Option<&str>,
) -> Response {
    let mut request = app
        .client
        .post(app.url("/api/login"))
        .json(&json!({"username": username, "password": password}));
    if let Some(address) = forwarded {
        request = request.header("X-Forwarded-For", address);
    }
    request.send().await.expect("request sent")
}

#[tokio::test]
async fn logins_over_the_limit_are_refused_even_with_the_right_password_until_the_quota_refills() {
    let app = spawn_limited(|limits| limits.login = "3/6s".parse().unwrap()).await;
    let name = unique_name("brute");
    assert_eq!(app.register(&name).await.status(), StatusCode::CREATED);

    // Unknown names answer at once (no password hashing), so the burst
    // fits well inside one refill interval even on a busy machine.
    for _ in 0..3 {
        let resp = login_status(&app, "no_such_user", "guess", None).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    let retry_after = assert_limited(login_status(&app, &name, "password123", None).await).await;
    assert!(retry_after <= 2, "Retry-After {retry_after}");

    let resp = after_the_wait(|| login_status(&app, &name, "password123", None)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(body(resp).await["token"].is_string());
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_address_has_its_own_quota() {
    let app = spawn_app_with(|config| {
        config.rate_limits.mode = Switch::On;
        config.rate_limits.login = "2/1h".parse().unwrap();
        config.rate_limits.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let attacker = Some("198.51.100.7");
    for _ in 0..2 {
        let resp = login_status(&app, "nobody_here", "password123", attacker).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    assert_limited(login_status(&app, "nobody_here", "password123", attacker).await).await;

    // Another client behind the same proxy, and the proxy's own address.
    let other = login_status(&app, "nobody_here", "password123", Some("198.51.100.8")).await;
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    // What the client itself wrote sits left of what the proxy appended.
    let spoofed = Some("junk, 203.0.113.1, 198.51.100.7");
    assert_limited(login_status(&app, "nobody_here", "password123", spoofed).await).await;
    let direct = login_status(&app, "nobody_here", "password123", None).await;
    assert_eq!(direct.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn forwarded_addresses_are_ignored_without_a_trusted_proxy() {
    let app = spawn_limited(|limits| limits.login = "2/1h".parse().unwrap()).await;
    for address in ["198.51.100.1", "198.51.100.2"] {
        let resp = login_status(&app, "nobody_here", "password123", Some(address)).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    let spoofed = login_status(&app, "nobody_here", "password123", Some("198.51.100.3")).await;
    assert_limited(spoofed).await;
}

#[tokio::test]
async fn sign_ups_over_the_limit_create_no_account_until_the_quota_refills() {
    let app = spawn_limited(|limits| limits.register = "2/4s".parse().unwrap()).await;
    for _ in 0..2 {
        let name = unique_name("signup");
        assert_eq!(app.register(&name).await.status(), StatusCode::CREATED);
    }
    let users_before = app.get("/api/usercount", None).await.text().await.unwrap();
    let refused = unique_name("signup");
    assert_limited(app.register(&refused).await).await;
    let resp = app.get(&format!("/api/user/{refused}"), None).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let users_after = app.get("/api/usercount", None).await.text().await.unwrap();
    assert_eq!(users_before, users_after);

    let resp = after_the_wait(|| app.register(&refused)).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
}

async fn post(app: &TestApp, token: &str, content: &str) -> Response {
    app.post_json("/api/create_post", Some(token), json!({"content": content}))
        .await
}

async fn post_count(app: &TestApp, username: &str) -> usize {
    let resp = app.get(&format!("/api/get_posts/{username}"), None).await;
    body(resp).await["posts"].as_array().unwrap().len()
}

#[tokio::test]
async fn posts_over_the_limit_are_not_created_and_other_users_still_post() {
    let app = spawn_limited(|limits| limits.posts = "2/4s".parse().unwrap()).await;
    let (alice, alice_token) = app.new_user("poster").await;
    let (_, bob_token) = app.new_user("poster").await;
    for n in 0..2 {
        let resp = post(&app, &alice_token, &format!("post {n}")).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    assert_limited(post(&app, &alice_token, "one too many").await).await;
    assert_eq!(post_count(&app, &alice).await, 2);
    // Checked before the body: an invalid post is refused as limited too.
    assert_limited(post(&app, &alice_token, "").await).await;

    let resp = post(&app, &bob_token, "bob is not limited").await;
    assert_eq!(resp.status(), StatusCode::CREATED);

    let resp = after_the_wait(|| post(&app, &alice_token, "after the wait")).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(post_count(&app, &alice).await, 3);
}

#[tokio::test]
async fn an_unauthenticated_request_is_401_not_429() {
    let app = spawn_limited(|limits| limits.posts = "1/1h".parse().unwrap()).await;
    let resp = post(&app, "not-a-token", "hello").await;
    assert_error(resp, StatusCode::UNAUTHORIZED).await;
}

async fn reply(app: &TestApp, token: &str, post_id: i64) -> Response {
    app.post_json(
        "/api/reply_to_post",
        Some(token),
        json!({"post_id": post_id, "content": "a reply"}),
    )
    .await
}

async fn reply_count(app: &TestApp, post_id: i64) -> usize {
    let resp = app.get(&format!("/api/get_replies/{post_id}"), None).await;
    body(resp).await["replies"].as_array().unwrap().len()
}

async fn new_post(app: &TestApp, token: &str) -> i64 {
    let resp = post(app, token, "something to react to").await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    body(resp).await["id"].as_i64().unwrap()
}

#[tokio::test]
async fn replies_over_the_limit_are_not_created() {
    let app = spawn_limited(|limits| limits.replies = "1/2s".parse().unwrap()).await;
    let (_, alice_token) = app.new_user("replier").await;
    let (_, bob_token) = app.new_user("replier").await;
    let post_id = new_post(&app, &alice_token).await;

    assert_eq!(
        reply(&app, &bob_token, post_id).await.status(),
        StatusCode::CREATED
    );
    assert_limited(reply(&app, &bob_token, post_id).await).await;
    assert_eq!(reply_count(&app, post_id).await, 1);
    assert_eq!(
        reply(&app, &alice_token, post_id).await.status(),
        StatusCode::CREATED
    );

    let resp = after_the_wait(|| reply(&app, &bob_token, post_id)).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(reply_count(&app, post_id).await, 3);
}

async fn vote(app: &TestApp, token: &str, post_id: i64) -> Response {
    app.post_json(
        "/api/vote_post",
        Some(token),
        json!({"post_id": post_id, "vote_type": "up"}),
    )
    .await
}

async fn upvotes(app: &TestApp, post_id: i64) -> i64 {
    let resp = app
        .get(&format!("/api/get_post_by_id/{post_id}"), None)
        .await;
    body(resp).await["upvotes"].as_i64().unwrap()
}

#[tokio::test]
async fn votes_over_the_limit_are_not_counted() {
    let app = spawn_limited(|limits| limits.votes = "1/2s".parse().unwrap()).await;
    let (author, author_token) = app.new_user("voted").await;
    let (_, voter_token) = app.new_user("voter").await;
    let (_, other_token) = app.new_user("voter").await;
    let first = new_post(&app, &author_token).await;
    let second = new_post(&app, &author_token).await;

    assert_eq!(
        vote(&app, &voter_token, first).await.status(),
        StatusCode::OK
    );
    assert_limited(vote(&app, &voter_token, second).await).await;
    assert_eq!(upvotes(&app, second).await, 0);
    let profile = body(app.get(&format!("/api/user/{author}"), None).await).await;
    assert_eq!(profile["stats"]["upvotes"], 1);
    assert_eq!(
        vote(&app, &other_token, second).await.status(),
        StatusCode::OK
    );

    let resp = after_the_wait(|| vote(&app, &voter_token, second)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(upvotes(&app, second).await, 2);
}

async fn follow(app: &TestApp, token: &str, path: &str, username: &str) -> Response {
    app.post_json(path, Some(token), json!({"username": username}))
        .await
}

async fn is_following(app: &TestApp, token: &str, username: &str) -> bool {
    let resp = app
        .get(
            &format!("/api/check_follow?username={username}"),
            Some(token),
        )
        .await;
    body(resp).await["is_following"].as_bool().unwrap()
}

#[tokio::test]
async fn follows_and_unfollows_share_one_limit() {
    let app = spawn_limited(|limits| limits.follows = "2/4s".parse().unwrap()).await;
    let (_, token) = app.new_user("follower").await;
    let (_, other_token) = app.new_user("follower").await;
    let (x, _) = app.new_user("followed").await;
    let (y, _) = app.new_user("followed").await;

    assert_eq!(
        follow(&app, &token, "/api/follow", &x).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        follow(&app, &token, "/api/unfollow", &x).await.status(),
        StatusCode::OK
    );
    assert_limited(follow(&app, &token, "/api/follow", &y).await).await;
    assert!(!is_following(&app, &token, &y).await);
    let followers = body(app.get(&format!("/api/user/{y}"), None).await).await;
    assert_eq!(followers["stats"]["followers"], 0);
    let resp = follow(&app, &other_token, "/api/follow", &y).await;
    assert_eq!(resp.status(), StatusCode::OK);

    let resp = after_the_wait(|| follow(&app, &token, "/api/follow", &y)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(is_following(&app, &token, &y).await);
}

async fn room_message(app: &TestApp, token: &str, room_id: i64, text: &str) -> Response {
    app.post_json(
        "/api/send_room_message",
        Some(token),
        json!({"room_id": room_id, "message": text}),
    )
    .await
}

/// The WebSocket's answer to a frame: the HTTP status and body in one frame.
async fn ws_answer(socket: &mut crate::ws::Socket, frame: Value) -> Value {
    send_frame(socket, frame).await;
    loop {
        let answer = crate::ws::next_json(socket).await;
        if answer["type"] == "ack" || answer["type"] == "error" {
            return answer;
        }
    }
}

#[tokio::test]
async fn room_messages_over_http_and_websocket_share_one_limit() {
    let app = spawn_limited(|limits| limits.room_messages = "2/4s".parse().unwrap()).await;
    let (_, alice_token) = app.new_user("chatty").await;
    let (_, bob_token) = app.new_user("chatty").await;
    let room = app
        .create_room(&alice_token, &unique_name("chatroom"), None)
        .await;
    join(&app, &bob_token, room).await;
    let mut socket = connect(&app, &alice_token).await;

    let resp = room_message(&app, &alice_token, room, "over http").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let frame =
        json!({"type": "send_room_message", "room_id": room, "message": "over ws", "ref": 1});
    assert_eq!(ws_answer(&mut socket, frame).await["type"], "ack");
    assert_limited(room_message(&app, &alice_token, room, "too many").await).await;
    let frame =
        json!({"type": "send_room_message", "room_id": room, "message": "too many", "ref": 2});
    let refused = ws_answer(&mut socket, frame).await;
    assert_eq!(refused["status"], 429, "{refused}");
    assert!(refused["retry_after"].as_u64().unwrap() >= 1, "{refused}");
    let stored = room_messages(&app, &alice_token, room).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    let resp = room_message(&app, &bob_token, room, "bob still talks").await;
    assert_eq!(resp.status(), StatusCode::OK);

    let resp = after_the_wait(|| room_message(&app, &alice_token, room, "later")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(room_messages(&app, &alice_token, room).await.len(), 4);
}

async fn direct_message(app: &TestApp, token: &str, recipient: &str) -> Response {
    app.post_json(
        "/api/send_inbox_message",
        Some(token),
        json!({"recipient": recipient, "message": "hello"}),
    )
    .await
}

async fn inbox_count(app: &TestApp, token: &str) -> i64 {
    let resp = app.get("/api/inbox_count", Some(token)).await;
    body(resp).await["inbox_count"].as_i64().unwrap()
}

#[tokio::test]
async fn direct_messages_over_http_and_websocket_share_one_limit() {
    let app = spawn_limited(|limits| limits.inbox_messages = "1/2s".parse().unwrap()).await;
    let (_, alice_token) = app.new_user("dm").await;
    let (bob, bob_token) = app.new_user("dm").await;
    let (carol, carol_token) = app.new_user("dm").await;
    let mut socket = connect(&app, &alice_token).await;

    assert_eq!(
        direct_message(&app, &alice_token, &bob).await.status(),
        StatusCode::OK
    );
    assert_limited(direct_message(&app, &alice_token, &bob).await).await;
    let frame = json!({"type": "send_inbox_message", "recipient": bob, "message": "hi", "ref": 1});
    let refused = ws_answer(&mut socket, frame).await;
    assert_eq!(refused["status"], 429, "{refused}");
    assert_eq!(inbox_count(&app, &bob_token).await, 1);
    let resp = direct_message(&app, &carol_token, &bob).await;
    assert_eq!(resp.status(), StatusCode::OK);

    let resp = after_the_wait(|| direct_message(&app, &alice_token, &carol)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(inbox_count(&app, &carol_token).await, 2);
}

async fn upload(app: &TestApp, token: &str, room_id: i64) -> Response {
    let form = reqwest::multipart::Form::new()
        .text("room_id", room_id.to_string())
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"hello".to_vec()).file_name("note.txt"),
        );
    app.client
        .post(app.url("/api/upload_file"))
        .header("Authorization", token)
        .multipart(form)
        .send()
        .await
        .expect("request sent")
}

#[tokio::test]
async fn uploads_over_the_limit_store_nothing() {
    let app = spawn_limited(|limits| limits.uploads = "1/2s".parse().unwrap()).await;
    let (_, alice_token) = app.new_user("uploader").await;
    let (_, bob_token) = app.new_user("uploader").await;
    let room = app
        .create_room(&alice_token, &unique_name("files"), None)
        .await;
    join(&app, &bob_token, room).await;

    assert_eq!(
        upload(&app, &alice_token, room).await.status(),
        StatusCode::OK
    );
    assert_limited(upload(&app, &alice_token, room).await).await;
    assert_eq!(room_messages(&app, &alice_token, room).await.len(), 1);
    // Local storage can be counted here; on S3 (the scale-out suite) the
    // room's messages above say the same.
    if app.config.files.is_none() {
        let files = std::fs::read_dir(app.data_dir.path().join("files"))
            .unwrap()
            .filter(|entry| entry.as_ref().unwrap().path().is_file())
            .count();
        assert_eq!(files, 1, "only the accepted upload is stored");
    }
    assert_eq!(
        upload(&app, &bob_token, room).await.status(),
        StatusCode::OK
    );

    let resp = after_the_wait(|| upload(&app, &alice_token, room)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(room_messages(&app, &alice_token, room).await.len(), 3);
}

#[tokio::test]
async fn guesses_at_one_account_from_many_addresses_share_its_own_limit() {
    // Each guess comes from another address (behind a trusted proxy), so
    // only the account's quota can stop them.
    let app = spawn_app_with(|config| {
        let limits = &mut config.rate_limits;
        limits.mode = Switch::On;
        limits.register = "1000/1h".parse().unwrap();
        limits.login = "1000/1h".parse().unwrap();
        limits.account_logins = "4/1h".parse().unwrap();
        limits.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let (target, token) = app.new_user("target").await;
    for n in 1..=2 {
        let address = format!("198.51.100.{n}");
        let resp = login_status(&app, &target, "wrong guess", Some(&address)).await;
        assert_error(resp, StatusCode::UNAUTHORIZED).await;
    }
    // A guess through account deletion (a stolen token) counts against the
    // same quota: with the first login (new_user's), four.
    let resp = delete_account_from(&app, &token, "wrong guess", "198.51.100.3").await;
    assert_error(resp, StatusCode::UNAUTHORIZED).await;
    // Over it: refused before the password is looked at, even the right one.
    let right = login_status(&app, &target, "password123", Some("198.51.100.9")).await;
    assert_limited(right).await;
    let resp = delete_account_from(&app, &token, "password123", "198.51.100.9").await;
    assert_limited(resp).await;
    assert_eq!(
        app.get(&format!("/api/user/{target}"), None).await.status(),
        StatusCode::OK
    );
    // Other accounts, and unknown names, are not held back.
    let (other, _) = app.new_user("bystander").await;
    let resp = login_status(&app, &other, "password123", Some("198.51.100.9")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = login_status(&app, "no_such_user", "guess", Some("198.51.100.9")).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

/// `POST /api/delete_account` as if from `address` (behind a trusted proxy).
async fn delete_account_from(
    app: &TestApp,
    token: &str,
    password: &str,
    address: &str,
) -> Response {
    app.client
        .post(app.url("/api/delete_account"))
        .header("Authorization", token)
        .header("X-Forwarded-For", address)
        .json(&json!({ "password": password }))
        .send()
        .await
        .expect("request sent")
}

/// Limits on with three password checks an hour per account, behind a
/// trusted proxy at 127.0.0.1 (so `X-Forwarded-For` picks the address).
pub(crate) fn three_account_logins_an_hour(config: &mut mirage::Config) {
    let limits = &mut config.rate_limits;
    limits.mode = Switch::On;
    limits.register = "1000/1h".parse().unwrap();
    limits.login = "1000/1h".parse().unwrap();
    limits.account_logins = "3/1h".parse().unwrap();
    limits.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
}

#[tokio::test]
async fn guesses_from_elsewhere_do_not_lock_an_owner_out_where_they_logged_in_before() {
    let app = spawn_app_with(three_account_logins_an_hour).await;
    // new_user logs in from 127.0.0.1: one attempt counted.
    let (owner, token) = app.new_user("owner").await;
    let home = "203.0.113.5";
    let resp = login_status(&app, &owner, "password123", Some(home)).await;
    assert_eq!(resp.status(), StatusCode::OK, "the second of three");
    let resp = login_status(&app, &owner, "wrong guess", Some("198.51.100.1")).await;
    assert_error(resp, StatusCode::UNAUTHORIZED).await;
    let resp = login_status(&app, &owner, "password123", Some("198.51.100.2")).await;
    assert_limited(resp).await;

    // From home the owner still logs in, and a typo there is a 401, not a
    // 429; nor do these count, so strangers stay refused.
    let resp = login_status(&app, &owner, "typo", Some(home)).await;
    assert_error(resp, StatusCode::UNAUTHORIZED).await;
    for _ in 0..3 {
        let resp = login_status(&app, &owner, "password123", Some(home)).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = login_status(&app, &owner, "password123", None).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "new_user's address is known too"
    );
    let resp = login_status(&app, &owner, "password123", Some("198.51.100.3")).await;
    assert_limited(resp).await;
    // A failed attempt makes no address known.
    let resp = login_status(&app, &owner, "wrong guess", Some("198.51.100.1")).await;
    assert_limited(resp).await;

    // Account deletion asks for the password too: from home it goes ahead.
    let resp = delete_account_from(&app, &token, "password123", "198.51.100.4").await;
    assert_limited(resp).await;
    let resp = delete_account_from(&app, &token, "password123", home).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = login_status(&app, &owner, "password123", Some(home)).await;
    assert_error(resp, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn password_guesses_through_delete_account_share_the_login_limit() {
    // new_user logs in once: that and two guesses use up the quota.
    let app = spawn_limited(|limits| limits.login = "3/1h".parse().unwrap()).await;
    let (name, token) = app.new_user("del").await;
    for _ in 0..2 {
        let resp = delete_account(&app, &token, "wrong guess").await;
        assert_error(resp, StatusCode::UNAUTHORIZED).await;
    }
    let resp = delete_account(&app, &token, "password123").await;
    assert_limited(resp).await;
    // Nothing was erased: the account and its session still work.
    let resp = app.get(&format!("/api/user/{name}"), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        app.get("/api/inbox", Some(&token)).await.status(),
        StatusCode::OK
    );
}
