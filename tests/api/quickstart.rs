//! The quick-start (`seed/mirage-quickstart.txt`) replayed step by step on a
//! fresh server: the same paths, bodies and headers (`Authorization: <token>`,
//! no `Bearer`), checking the responses it shows.
//!
//! The quick-start assumes a world that already exists (a user
//! `friend_username` with post 42, the rooms "General Chat", "Tech Talk" and
//! "VIP Lounge", a message from the friend); those setup steps are marked
//! `setup:` and arranged so that the ids the quick-start uses are the real ones.
//!
//! One deliberate deviation: the quick-start's e-mail is the page's
//! obfuscation placeholder `[email protected]` (with a no-break space), which is
//! not an address; a real one is used instead.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

const TOKEN_PLACEHOLDER: &str = "550e8400-e29b-41d4-a716-446655440000";

/// `YYYY-MM-DDTHH:MM:SS`, as in `2026-03-03T12:05:00`.
fn is_utc_timestamp(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    let b = s.as_bytes();
    b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}

/// A post as the quick-start shows it (extra fields such as `replies` allowed).
fn assert_post(post: &Value, id: i64, username: &str, content: &str, up: i64, down: i64) {
    assert_eq!(post["id"], id, "{post}");
    assert_eq!(post["username"], username, "{post}");
    assert_eq!(post["content"], content, "{post}");
    assert!(is_utc_timestamp(&post["created_at"]), "{post}");
    assert_eq!(post["upvotes"], up, "{post}");
    assert_eq!(post["downvotes"], down, "{post}");
}

#[tokio::test]
async fn the_quickstart_walkthrough_works_as_written() {
    let app = spawn_app().await;

    // setup: the friend the quick-start follows, votes for and messages.
    let resp = app
        .post_json(
            "/api/register",
            None,
            json!({
                "username": "friend_username",
                "email": "friend@example.com",
                "password": "friend_password",
                "avatar_url": "https://example.com/friend-avatar.png",
            }),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let friend = body(
        app.post_json(
            "/api/login",
            None,
            json!({"username": "friend_username", "password": "friend_password"}),
        )
        .await,
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // setup: the rooms the quick-start lists (ids 1 and 2) and joins.
    for (name, extra, id) in [
        ("General Chat", json!({}), 1),
        ("Tech Talk", json!({}), 2),
        (
            "VIP Lounge",
            json!({"is_private": 1, "password": "secret123"}),
            3,
        ),
    ] {
        let mut req = json!({"room_name": name});
        for (k, v) in extra.as_object().unwrap() {
            req[k] = v.clone();
        }
        let resp = app.post_json("/api/create_room", Some(&friend), req).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(
            body(resp).await,
            json!({"message": format!("room \"{name}\" created"), "room_id": id})
        );
    }

    // Create Your Account 1: register.
    let resp = app
        .post_json(
            "/api/register",
            None,
            json!({
                "username": "yourname",
                "email": "yourname@example.com",
                "password": "secure_password",
                "avatar_url": "https://example.com/avatar.png",
                "description": "Your bio here"
            }),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(body(resp).await, json!({"message": "Welcome to MIRAGE"}));

    // 2: login.
    let resp = app
        .post_json(
            "/api/login",
            None,
            json!({"username": "yourname", "password": "secure_password"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v = body(resp).await;
    assert_eq!(v["username"], "yourname");
    let token = v["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), TOKEN_PLACEHOLDER.len());
    let parsed = uuid::Uuid::parse_str(&token).expect("token is a UUID");
    assert_eq!(parsed.get_version_num(), 4);

    // 3: view your profile.
    let resp = app.get("/api/user/yourname", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v = body(resp).await;
    assert_eq!(v["username"], "yourname");
    assert_eq!(v["avatar_url"], "https://example.com/avatar.png");
    assert_eq!(v["description"], "Your bio here");
    assert!(is_utc_timestamp(&v["created_at"]), "{v}");
    assert_eq!(
        v["stats"],
        json!({"followers": 0, "following": 0, "posts": 0, "upvotes": 0, "downvotes": 0})
    );
    assert!(v.get("email").is_none() && v.get("password").is_none());

    // Post Your First Message 1: create a post.
    let content = "Hello Mirage! Excited to join this community. #newbie";
    let resp = app
        .post_json(
            "/api/create_post",
            Some(&token),
            json!({"content": content}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let v = body(resp).await;
    assert_eq!(v["message"], "post created");
    assert_eq!(v["id"], 1);

    // 2: view posts from a user.
    let resp = app.get("/api/get_posts/yourname", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v = body(resp).await;
    let posts = v["posts"].as_array().unwrap();
    assert_eq!(posts.len(), 1);
    assert_post(&posts[0], 1, "yourname", content, 0, 0);

    // setup: the friend's posts 2..=42; post 15 is the one the feed shows.
    let feature = "Just discovered an amazing feature! #mirage #tips";
    for id in 2..=42 {
        let text = if id == 15 {
            feature.to_owned()
        } else {
            format!("friend post number {id}")
        };
        let resp = app
            .post_json("/api/create_post", Some(&friend), json!({"content": text}))
            .await;
        assert_eq!(body(resp).await["id"], id);
    }

    // Connect with Others 1: follow.
    let resp = app
        .post_json(
            "/api/follow",
            Some(&token),
            json!({"username": "friend_username"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        body(resp).await,
        json!({"message": "now following friend_username"})
    );

    // 2: vote on post 42 (the friend's).
    let resp = app
        .post_json(
            "/api/vote_post",
            Some(&token),
            json!({"post_id": 42, "vote_type": "up"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        body(resp).await,
        json!({"message": "vote counted", "upvotes": 1, "downvotes": 0})
    );
    // "you can't vote on your own"
    let resp = app
        .post_json(
            "/api/vote_post",
            Some(&token),
            json!({"post_id": 1, "vote_type": "up"}),
        )
        .await;
    assert_error(resp, StatusCode::FORBIDDEN).await;

    // 3: reply to post 42.
    let reply = "Great point! I totally agree with this perspective.";
    let resp = app
        .post_json(
            "/api/reply_to_post",
            Some(&token),
            json!({"post_id": 42, "content": reply}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(body(resp).await["message"], "reply created");
    let v = body(app.get("/api/get_replies/42", None).await).await;
    assert_eq!(v["replies"][0]["username"], "yourname");
    assert_eq!(v["replies"][0]["content"], reply);
    assert_eq!(
        v["replies"][0]["avatar_url"],
        "https://example.com/avatar.png"
    );
    assert!(v["replies"][0]["parent_id"].is_null());

    // setup: yourname is already in "Tech Talk" when browsing rooms.
    let resp = app
        .post_json("/api/join_room", Some(&token), json!({"name": "Tech Talk"}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);

    // Join a Chat Room 1: browse rooms (private rooms are not listed).
    let resp = app.get("/api/rooms", Some(&token)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        body(resp).await,
        json!({"rooms": [
            {"room_id": 1, "name": "General Chat", "joined": false},
            {"room_id": 2, "name": "Tech Talk", "joined": true}
        ]})
    );

    // 2: join a public room, then a private room with its password.
    let resp = app
        .post_json(
            "/api/join_room",
            Some(&token),
            json!({"name": "General Chat"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        body(resp).await,
        json!({
            "message": "yourname joined room \"General Chat\"",
            "room_id": 1,
            "room_name": "General Chat"
        })
    );
    let resp = app
        .post_json(
            "/api/join_room",
            Some(&token),
            json!({"name": "VIP Lounge", "password": "secret123"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        body(resp).await,
        json!({
            "message": "yourname joined room \"VIP Lounge\"",
            "room_id": 3,
            "room_name": "VIP Lounge"
        })
    );

    // 3: send a message.
    let resp = app
        .post_json(
            "/api/send_room_message",
            Some(&token),
            json!({"room_id": 1, "message": "Hey everyone! Happy to be here."}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body(resp).await, json!({"message": "sent"}));

    // 4: read room messages.
    let resp = app
        .get("/api/get_room_messages?room_id=1", Some(&token))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v = body(resp).await;
    let messages = v["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{v}");
    let m = &messages[0];
    assert_eq!(m["username"], "yourname");
    assert_eq!(m["message"], "Hey everyone! Happy to be here.");
    assert_eq!(m["room_id"], 1);
    assert!(m["room_id"].is_i64());
    let sent_at = m["created_at"].as_f64().expect("created_at is a number");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - sent_at).abs() < 60.0, "{sent_at} vs {now}");

    // setup: post 15 gets the 12 upvotes and 1 downvote the feed shows.
    for i in 0..13 {
        let (_, voter) = app.new_user("qsvoter").await;
        let kind = if i < 12 { "up" } else { "down" };
        let resp = app
            .post_json(
                "/api/vote_post",
                Some(&voter),
                json!({"post_id": 15, "vote_type": kind}),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
    }

    // Explore Your Feed 1: the For You Page.
    let resp = app.get("/api/fyp", Some(&token)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v = body(resp).await;
    let posts = v["posts"].as_array().unwrap();
    // 41 eligible posts (the friend's), so a full page; never the caller's own.
    assert_eq!(posts.len(), 30);
    assert!(posts.iter().all(|p| p["username"] == "friend_username"));
    let ids: Vec<i64> = posts.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    let post15 = posts
        .iter()
        .find(|p| p["id"] == 15)
        .expect("post 15 in the feed");
    assert_post(post15, 15, "friend_username", feature, 12, 1);
    // #mirage and #tips tie (same post, the most recent); #newbie follows.
    let topics = v["trending_topics"].as_array().unwrap();
    assert_eq!(topics.len(), 3, "{topics:?}");
    let mut first_two: Vec<&str> = topics[..2].iter().map(|t| t.as_str().unwrap()).collect();
    first_two.sort_unstable();
    assert_eq!(first_two, ["#mirage", "#tips"]);
    assert_eq!(topics[2], "#newbie");

    // Send a Direct Message 1: send.
    let resp = app
        .post_json(
            "/api/send_inbox_message",
            Some(&token),
            json!({
                "recipient": "friend_username",
                "message": "Hey! Want to collaborate on a project?"
            }),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body(resp).await, json!({"message": "sent"}));

    // setup: the friend writes back.
    let resp = app
        .post_json(
            "/api/send_inbox_message",
            Some(&friend),
            json!({"recipient": "yourname", "message": "Thanks for following! Let's connect."}),
        )
        .await;
    assert_eq!(body(resp).await, json!({"message": "sent"}));

    // 2: check your inbox (newest first; messages you sent are listed too).
    let resp = app.get("/api/inbox", Some(&token)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v = body(resp).await;
    let messages = v["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{v}");
    let m = &messages[0];
    assert!(m["id"].as_i64().unwrap() > messages[1]["id"].as_i64().unwrap());
    assert_eq!(m["sender"], "friend_username");
    assert_eq!(m["recipient"], "yourname");
    assert_eq!(m["message"], "Thanks for following! Let's connect.");
    assert!(is_utc_timestamp(&m["created_at"]), "{m}");
    assert_eq!(m["avatar_url"], "https://example.com/friend-avatar.png");
    assert_eq!(messages[1]["sender"], "yourname");
    assert_eq!(messages[1]["recipient"], "friend_username");
    assert_eq!(
        messages[1]["message"],
        "Hey! Want to collaborate on a project?"
    );
    assert_eq!(messages[1]["avatar_url"], "https://example.com/avatar.png");

    // The profile reflects the walk-through: one post, following one user.
    let v = body(app.get("/api/user/yourname", None).await).await;
    assert_eq!(
        v["stats"],
        json!({"followers": 0, "following": 1, "posts": 1, "upvotes": 0, "downvotes": 0})
    );
    let v = body(app.get("/api/user/friend_username", None).await).await;
    assert_eq!(
        v["stats"],
        json!({"followers": 1, "following": 0, "posts": 41, "upvotes": 13, "downvotes": 1})
    );
}
