//! Security review, part two: who may read what. Another user's direct
//! messages, private rooms (messages, members, files, the WebSocket), and
//! uploaded files reachable only through their unguessable URLs.

use reqwest::{StatusCode, multipart};
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, assert_error, body, spawn_app, unique_name},
    ws::{assert_nothing_pending, connect, connect_query, next_json, send_frame},
};

const ROOM_PASSWORD: &str = "members-only-pw";

async fn private_room(app: &TestApp, token: &str) -> i64 {
    let resp = app
        .post_json(
            "/api/create_room",
            Some(token),
            json!({"room_name": unique_name("private"), "is_private": 1, "password": ROOM_PASSWORD}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    body(resp).await["room_id"].as_i64().unwrap()
}

#[tokio::test]
async fn nobody_reads_or_deletes_another_users_direct_messages() {
    let app = spawn_app().await;
    let (a, ta) = app.new_user("dm_a").await;
    let (b, tb) = app.new_user("dm_b").await;
    let (_, tc) = app.new_user("dm_c").await;
    let mut c_socket = connect(&app, &tc).await;
    for (token, to, text) in [(&ta, &b, "for b only"), (&tb, &a, "for a only")] {
        let resp = app
            .post_json(
                "/api/send_inbox_message",
                Some(token),
                json!({"recipient": to, "message": text}),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let c_inbox = body(app.get("/api/inbox", Some(&tc)).await).await;
    assert_eq!(c_inbox["messages"], json!([]));
    let c_count = body(app.get("/api/inbox_count", Some(&tc)).await).await;
    assert_eq!(c_count["inbox_count"], 0);
    assert_nothing_pending(&mut c_socket).await;

    // Without a session there is no inbox at all.
    assert_error(app.get("/api/inbox", None).await, StatusCode::UNAUTHORIZED).await;
    assert_error(
        app.get("/api/inbox_count", Some("not-a-token")).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;

    // C cannot delete A's messages, even knowing their ids.
    let a_inbox = body(app.get("/api/inbox", Some(&ta)).await).await;
    let ids: Vec<i64> = a_inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    for id in &ids {
        let resp = app
            .post_json(
                "/api/delete_inbox_message",
                Some(&tc),
                json!({"message_id": id}),
            )
            .await;
        assert_error(resp, StatusCode::NOT_FOUND).await;
    }
    for token in [&ta, &tb] {
        let count = body(app.get("/api/inbox_count", Some(token)).await).await;
        assert_eq!(count["inbox_count"], 2);
    }
}

#[tokio::test]
async fn a_private_rooms_messages_members_and_files_stay_with_its_members() {
    let app = spawn_app().await;
    let (owner, to) = app.new_user("pr_owner").await;
    let (_, tx) = app.new_user("pr_outsider").await;
    let room = private_room(&app, &to).await;
    let send = app
        .post_json(
            "/api/send_room_message",
            Some(&to),
            json!({"room_id": room, "message": "members only"}),
        )
        .await;
    assert_eq!(send.status(), StatusCode::OK);
    app.upload(&to, room, "secret.txt", b"secret bytes").await;
    // The outsider's stream, replaying everything retained.
    let mut outsider_socket = connect_query(&app, &tx, "?since=0").await;

    let x = Some(tx.as_str());
    assert_error(
        app.get(&format!("/api/room_members/{room}"), x).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_error(
        app.get(&format!("/api/get_room_messages?room_id={room}"), x)
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_error(
        app.get(&format!("/api/get_room_messages?room_id={room}&since=0"), x)
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let post = app
        .post_json(
            "/api/send_room_message",
            x,
            json!({"room_id": room, "message": "let me in"}),
        )
        .await;
    assert_error(post, StatusCode::FORBIDDEN).await;
    let form = multipart::Form::new()
        .text("room_id", room.to_string())
        .part(
            "file",
            multipart::Part::bytes(b"x".to_vec()).file_name("x.txt"),
        );
    let upload = app
        .client
        .post(app.url("/api/upload_file"))
        .header("Authorization", &tx)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_error(upload, StatusCode::FORBIDDEN).await;
    for password in [None, Some(""), Some("guess"), Some("members-only-PW")] {
        let join = app
            .post_json(
                "/api/join_room",
                x,
                json!({"room_id": room, "password": password}),
            )
            .await;
        assert_error(join, StatusCode::FORBIDDEN).await;
    }
    // Private rooms are listed to nobody, and only to members as theirs.
    for token in [&to, &tx] {
        let rooms = body(app.get("/api/rooms", Some(token)).await).await;
        assert!(rooms["rooms"].as_array().unwrap().is_empty(), "{rooms}");
    }
    let mine = body(app.get("/api/user_rooms", x).await).await;
    assert_eq!(mine["rooms"], json!([]));

    // Over the WebSocket: nothing replayed, nothing live, no sending.
    let live = app
        .post_json(
            "/api/send_room_message",
            Some(&to),
            json!({"room_id": room, "message": "still private"}),
        )
        .await;
    assert_eq!(live.status(), StatusCode::OK);
    send_frame(
        &mut outsider_socket,
        json!({"type": "send_room_message", "room_id": room, "message": "hi", "ref": 1}),
    )
    .await;
    let reply = next_json(&mut outsider_socket).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["status"], 403);
    assert_nothing_pending(&mut outsider_socket).await;

    // The members themselves do see it all.
    let members = body(
        app.get(&format!("/api/room_members/{room}"), Some(&to))
            .await,
    )
    .await;
    assert_eq!(members["members"], json!([owner]));
    let messages = body(
        app.get(&format!("/api/get_room_messages?room_id={room}"), Some(&to))
            .await,
    )
    .await;
    assert_eq!(messages["messages"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_member_who_leaves_a_private_room_loses_access() {
    let app = spawn_app().await;
    let (_, to) = app.new_user("lv_owner").await;
    let (_, tm) = app.new_user("lv_member").await;
    let room = private_room(&app, &to).await;
    let join = app
        .post_json(
            "/api/join_room",
            Some(&tm),
            json!({"room_id": room, "password": ROOM_PASSWORD}),
        )
        .await;
    assert_eq!(join.status(), StatusCode::OK);
    let mut socket = connect(&app, &tm).await;
    let path = format!("/api/get_room_messages?room_id={room}");
    assert_eq!(app.get(&path, Some(&tm)).await.status(), StatusCode::OK);
    let leave = app
        .post_json("/api/leave_room", Some(&tm), json!({"room_id": room}))
        .await;
    assert_eq!(leave.status(), StatusCode::OK);
    let left = next_json(&mut socket).await;
    assert_eq!(left["type"], "member_left", "{left}");

    assert_error(app.get(&path, Some(&tm)).await, StatusCode::FORBIDDEN).await;
    assert_error(
        app.get(&format!("/api/room_members/{room}"), Some(&tm))
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let after = app
        .post_json(
            "/api/send_room_message",
            Some(&to),
            json!({"room_id": room, "message": "after you left"}),
        )
        .await;
    assert_eq!(after.status(), StatusCode::OK);
    assert_nothing_pending(&mut socket).await;
}

/// The id part of a file URL (`…/api/files/{id}/{name}`).
fn file_id(url: &str) -> String {
    let path = url.split("/api/files/").nth(1).unwrap();
    path.split('/').next().unwrap().to_owned()
}

#[tokio::test]
async fn files_are_reachable_only_through_their_unguessable_urls() {
    let app = spawn_app().await;
    let (_, t) = app.new_user("files_sec").await;
    let room = private_room(&app, &t).await;
    let mut urls = Vec::new();
    for n in 0..3 {
        urls.push(
            app.upload(&t, room, "same.txt", format!("body {n}").as_bytes())
                .await,
        );
    }
    let ids: Vec<String> = urls.iter().map(|u| file_id(u)).collect();
    for id in &ids {
        // 122 random bits: a UUID v4, never a counter.
        let uuid = uuid::Uuid::parse_str(id).expect("the id is a UUID");
        assert_eq!(uuid.get_version_num(), 4, "{id}");
        assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122, "{id}");
    }
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    // Anyone holding the URL gets the bytes (the URL is the capability).
    let got = app.client.get(&urls[1]).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"body 1");

    let mut flipped = ids[0].clone();
    let last = if flipped.ends_with('0') { "1" } else { "0" };
    flipped.replace_range(flipped.len() - 1.., last);
    let guesses = [
        "/api/files".to_owned(),
        "/api/files/".to_owned(),
        format!("/api/files/{}", ids[0]),
        format!("/api/files/{flipped}/same.txt"),
        "/api/files/1/same.txt".to_owned(),
        "/api/files/2/same.txt".to_owned(),
        "/api/files/00000000000000000000000000000001/same.txt".to_owned(),
        "/api/files/same.txt/same.txt".to_owned(),
        "/api/files/..%2Fmirage.db/x".to_owned(),
        "/api/files/%2E%2E/mirage.db".to_owned(),
        "/api/files/tmp/x".to_owned(),
    ];
    for path in guesses {
        let resp = app.get(&path, Some(&t)).await;
        assert_error(resp, StatusCode::NOT_FOUND).await;
    }
    // No endpoint lists files: the room's messages are the only index,
    // and they are for members only (see the private-room test).
    let spec: Value = body(app.get("/api/openapi.json", None).await).await;
    let file_paths: Vec<&String> = spec["paths"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|p| p.contains("file"))
        .collect();
    assert_eq!(
        file_paths,
        ["/api/files/{id}/{name}", "/api/upload_file"],
        "a new file endpoint needs a security review"
    );
}

#[tokio::test]
async fn uploads_a_browser_could_run_are_served_as_downloads() {
    let app = spawn_app().await;
    let (_, t) = app.new_user("runnable").await;
    let room = private_room(&app, &t).await;
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#;
    for (name, bytes) in [
        ("a.svg", &svg[..]),
        ("a.html", b"<script>alert(1)</script>"),
        ("a.js", b"alert(1)"),
        ("a.xhtml", b"<html/>"),
        ("no_extension", b"<script>alert(1)</script>"),
    ] {
        let url = app.upload(&t, room, name, bytes).await;
        let got = app.client.get(&url).send().await.unwrap();
        assert_eq!(got.status(), StatusCode::OK);
        assert_eq!(got.headers()["x-content-type-options"], "nosniff", "{name}");
        let disposition = got.headers()["content-disposition"].to_str().unwrap();
        assert!(
            disposition.starts_with("attachment"),
            "{name}: {disposition}"
        );
    }
}
