use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn public_and_private_rooms_with_chat() {
    let app = spawn_app().await;
    let (a, ta) = app.new_user("ra").await;
    let (_, tb) = app.new_user("rb").await;
    let r = app
        .post_json(
            "/api/create_room",
            Some(&ta),
            json!({"room_name": "General Chat"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v = body(r).await;
    assert_eq!(v["message"], "room \"General Chat\" created");
    let room = v["room_id"].as_i64().unwrap();
    let dup = app
        .post_json(
            "/api/create_room",
            Some(&tb),
            json!({"room_name": "general chat"}),
        )
        .await;
    assert_error(dup, StatusCode::BAD_REQUEST).await;

    let r = app
        .post_json(
            "/api/send_room_message",
            Some(&tb),
            json!({"room_id": room, "message": "hi"}),
        )
        .await;
    assert_error(r, StatusCode::FORBIDDEN).await;
    let r = app
        .post_json(
            "/api/join_room",
            Some(&tb),
            json!({"name": "GENERAL CHAT", "password": ""}),
        )
        .await;
    let v = body(r).await;
    assert_eq!(v["room_id"], room);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .ends_with("joined room \"General Chat\"")
    );
    let r = app
        .post_json(
            "/api/send_room_message",
            Some(&tb),
            json!({"room_id": room.to_string(), "message": "  hey  "}),
        )
        .await;
    assert_eq!(body(r).await, json!({"message": "sent"}));
    let v = body(
        app.get(&format!("/api/get_room_messages?room_id={room}"), Some(&ta))
            .await,
    )
    .await;
    assert_eq!(v["messages"][0]["message"], "hey");
    assert!(v["messages"][0]["created_at"].is_f64());

    let r = app
        .post_json(
            "/api/create_room",
            Some(&ta),
            json!({"room_name": "VIP", "is_private": 1, "password": "secret123"}),
        )
        .await;
    let vip = body(r).await["room_id"].as_i64().unwrap();
    let wrong = app
        .post_json(
            "/api/join_room",
            Some(&tb),
            json!({"name": "VIP", "password": "nope"}),
        )
        .await;
    assert_error(wrong, StatusCode::FORBIDDEN).await;
    assert_error(
        app.get(&format!("/api/room_members/{vip}"), Some(&tb))
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let rooms = body(app.get("/api/rooms", Some(&tb)).await).await;
    assert_eq!(rooms["rooms"].as_array().unwrap().len(), 1);
    let members = body(
        app.get(&format!("/api/room_members/{vip}"), Some(&ta))
            .await,
    )
    .await;
    assert_eq!(members["members"], json!([a]));
    let mine = body(app.get("/api/user_rooms", Some(&ta)).await).await;
    assert_eq!(mine["rooms"][1]["is_private"], 1);

    let r = app
        .post_json("/api/leave_room", Some(&tb), json!({"room_id": room}))
        .await;
    assert_eq!(body(r).await["message"], "left room \"General Chat\"");
    let r = app
        .post_json("/api/leave_room", Some(&tb), json!({"room_id": room}))
        .await;
    assert_error(r, StatusCode::BAD_REQUEST).await;
    let r = app
        .post_json("/api/join_room", Some(&tb), json!({"name": "nowhere"}))
        .await;
    assert_error(r, StatusCode::NOT_FOUND).await;
    assert_error(
        app.get("/api/get_room_messages", Some(&ta)).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn the_public_room_limit_applies() {
    let app = spawn_app_with(|c| c.max_public_rooms = 2).await;
    let (_, t) = app.new_user("rl").await;
    for name in ["one", "two"] {
        let r = app
            .post_json("/api/create_room", Some(&t), json!({"room_name": name}))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = app
        .post_json("/api/create_room", Some(&t), json!({"room_name": "three"}))
        .await;
    let err = assert_error(r, StatusCode::BAD_REQUEST).await;
    assert!(err.starts_with("maximum number of public rooms reached (2)"));
}

#[tokio::test]
async fn each_room_keeps_its_own_newest_messages_across_a_restart() {
    let mut app = spawn_app_with(|c| c.room_message_limit = 5).await;
    let (_, t) = app.new_user("rr").await;
    let busy = app.create_room(&t, "busy", None).await;
    let quiet = app.create_room(&t, "quiet", None).await;
    app.post_json(
        "/api/send_room_message",
        Some(&t),
        json!({"room_id": quiet, "message": "still here"}),
    )
    .await;
    for i in 0..8 {
        app.post_json(
            "/api/send_room_message",
            Some(&t),
            json!({"room_id": busy, "message": format!("m{i}")}),
        )
        .await;
        if i == 2 {
            // Read once midway, so that later sends update what was read.
            let texts = room_texts(&app, &t, busy).await;
            assert_eq!(texts, ["m0", "m1", "m2"]);
        }
    }
    assert_eq!(
        room_texts(&app, &t, busy).await,
        ["m3", "m4", "m5", "m6", "m7"]
    );
    app.restart().await;
    assert_eq!(
        room_texts(&app, &t, busy).await,
        ["m3", "m4", "m5", "m6", "m7"]
    );
    let v = body(
        app.get(&format!("/api/get_room_messages?room_id={quiet}"), Some(&t))
            .await,
    )
    .await;
    assert_eq!(v["messages"][0]["message"], "still here");
}

async fn room_texts(app: &TestApp, token: &str, room_id: i64) -> Vec<String> {
    room_texts_at(app, token, &format!("room_id={room_id}")).await
}

async fn room_texts_at(app: &TestApp, token: &str, query: &str) -> Vec<String> {
    let v = body(
        app.get(&format!("/api/get_room_messages?{query}"), Some(token))
            .await,
    )
    .await;
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap().to_owned())
        .collect()
}

/// The page without `since` is rendered once and kept for the room's next
/// readers: a page read with `since` must neither get it nor spoil it.
#[tokio::test]
async fn a_page_read_since_a_message_and_the_full_page_stay_apart() {
    let app = spawn_app().await;
    let (_, t) = app.new_user("rs").await;
    let room = app.create_room(&t, "since", None).await;
    let send = |text: &'static str| {
        app.post_json(
            "/api/send_room_message",
            Some(&t),
            json!({"room_id": room, "message": text}),
        )
    };
    for text in ["one", "two", "three"] {
        assert_eq!(send(text).await.status(), 200);
    }
    let full = body(
        app.get(&format!("/api/get_room_messages?room_id={room}"), Some(&t))
            .await,
    )
    .await;
    let first_at = full["messages"][0]["created_at"].as_f64().unwrap();
    // That read filled the room's cache; this one keeps its rendering.
    assert_eq!(room_texts(&app, &t, room).await, ["one", "two", "three"]);
    let since_first = format!("room_id={room}&since={first_at}");
    assert_eq!(
        room_texts_at(&app, &t, &since_first).await,
        ["two", "three"]
    );
    assert_eq!(room_texts(&app, &t, room).await, ["one", "two", "three"]);
    assert_eq!(send("four").await.status(), 200);
    assert_eq!(
        room_texts_at(&app, &t, &since_first).await,
        ["two", "three", "four"]
    );
    assert_eq!(
        room_texts(&app, &t, room).await,
        ["one", "two", "three", "four"]
    );
}

#[tokio::test]
async fn messages_disappear_when_they_expire_even_from_a_room_just_read() {
    let app = spawn_app_with(|c| c.room_message_ttl_secs = 2).await;
    let (_, t) = app.new_user("rx").await;
    let room = app.create_room(&t, "brief", None).await;
    for text in ["first", "second"] {
        app.post_json(
            "/api/send_room_message",
            Some(&t),
            json!({"room_id": room, "message": text}),
        )
        .await;
    }
    // The first read fills the room's cache; the second is served from it
    // and leaves its rendering there, which expiry must not reuse.
    for _ in 0..2 {
        assert_eq!(room_texts(&app, &t, room).await, ["first", "second"]);
    }
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    assert!(room_texts(&app, &t, room).await.is_empty());
    app.post_json(
        "/api/send_room_message",
        Some(&t),
        json!({"room_id": room, "message": "third"}),
    )
    .await;
    assert_eq!(room_texts(&app, &t, room).await, ["third"]);
}

#[tokio::test]
async fn the_member_list_follows_every_join_and_leave() {
    let app = spawn_app().await;
    let (a, ta) = app.new_user("ma").await;
    let (b, tb) = app.new_user("mb").await;
    let (c, tc) = app.new_user("mc").await;
    let room = body(
        app.post_json(
            "/api/create_room",
            Some(&ta),
            json!({"room_name": "Members"}),
        )
        .await,
    )
    .await["room_id"]
        .as_i64()
        .unwrap();
    let members = |token: String| {
        let app = &app;
        async move {
            body(
                app.get(&format!("/api/room_members/{room}"), Some(&token))
                    .await,
            )
            .await["members"]
                .clone()
        }
    };
    // Each read below follows a change to a list read just before it (the
    // SQLite store keeps the list in memory until its room's membership
    // changes), in joining order.
    assert_eq!(members(ta.clone()).await, json!([a]));
    for (token, expected) in [(&tb, json!([a, b])), (&tc, json!([a, b, c]))] {
        let r = app
            .post_json("/api/join_room", Some(token), json!({"room_id": room}))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(members(ta.clone()).await, expected);
    }
    let r = app
        .post_json("/api/leave_room", Some(&tb), json!({"room_id": room}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(members(tc.clone()).await, json!([a, c]));
    // Joining again puts b at the end.
    let r = app
        .post_json("/api/join_room", Some(&tb), json!({"room_id": room}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(members(tb.clone()).await, json!([a, c, b]));
    // Joining twice changes nothing.
    let r = app
        .post_json("/api/join_room", Some(&tb), json!({"room_id": room}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(members(ta.clone()).await, json!([a, c, b]));
}

/// `GET /api/rooms` and `/api/user_rooms` as the holder of `token`: the
/// listed rooms as (id, joined or is_private).
async fn listed(app: &TestApp, path: &str, token: &str) -> Vec<(i64, Value)> {
    let resp = app.get(path, Some(token)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let flag = if path == "/api/rooms" {
        "joined"
    } else {
        "is_private"
    };
    body(resp).await["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|room| (room["room_id"].as_i64().unwrap(), room[flag].clone()))
        .collect()
}

/// Both lists are kept in memory once read: every join, leave, creation and
/// deletion must show at once (each read twice, the second from memory).
#[tokio::test]
async fn room_lists_follow_every_join_leave_creation_and_deletion() {
    let app = spawn_app().await;
    let (_, ta) = app.new_user("rla").await;
    let (_, tb) = app.new_user("rlb").await;
    let (_, tc) = app.new_user("rlc").await;
    let both = |path: &'static str, token: String| {
        let app = &app;
        async move {
            let first = listed(app, path, &token).await;
            assert_eq!(listed(app, path, &token).await, first, "{path} read twice");
            first
        }
    };
    let (rooms, mine) = ("/api/rooms", "/api/user_rooms");
    assert!(both(rooms, tb.clone()).await.is_empty());
    assert!(both(mine, tb.clone()).await.is_empty());

    let general = app.create_room(&ta, "rl general", None).await;
    assert_eq!(both(mine, ta.clone()).await, [(general, json!(0))]);
    assert_eq!(both(rooms, tb.clone()).await, [(general, json!(false))]);

    let r = app
        .post_json("/api/join_room", Some(&tb), json!({"room_id": general}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(both(rooms, tb.clone()).await, [(general, json!(true))]);
    assert_eq!(both(mine, tb.clone()).await, [(general, json!(0))]);

    let r = app
        .post_json("/api/leave_room", Some(&tb), json!({"room_id": general}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(both(rooms, tb.clone()).await, [(general, json!(false))]);
    assert!(both(mine, tb.clone()).await.is_empty());

    // A private room is the creator's only; a public one is everyone's.
    let secret = app.create_room(&ta, "rl secret", Some("pw123456")).await;
    assert_eq!(
        both(mine, ta.clone()).await,
        [(general, json!(0)), (secret, json!(1))]
    );
    let other = app.create_room(&tc, "rl other", None).await;
    assert_eq!(
        both(rooms, tb.clone()).await,
        [(general, json!(false)), (other, json!(false))]
    );

    // The other room goes with its only member's account.
    let resp = crate::delete_account::delete_account(&app, &tc, "password123").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(both(rooms, tb.clone()).await, [(general, json!(false))]);
    assert_eq!(both(rooms, ta.clone()).await, [(general, json!(true))]);
}
