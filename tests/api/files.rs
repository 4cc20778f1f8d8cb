use reqwest::{StatusCode, multipart};
use serde_json::json;

use crate::helpers::*;

async fn room_for(app: &TestApp, token: &str) -> i64 {
    let r = app
        .post_json(
            "/api/create_room",
            Some(token),
            json!({"room_name": unique_name("files")}),
        )
        .await;
    body(r).await["room_id"].as_i64().unwrap()
}

fn form(room: i64, name: &str, bytes: Vec<u8>) -> multipart::Form {
    multipart::Form::new()
        .part(
            "file",
            multipart::Part::bytes(bytes).file_name(name.to_owned()),
        )
        .text("room_id", room.to_string())
}

#[tokio::test]
async fn an_upload_round_trips_and_is_announced_in_the_room() {
    let app = spawn_app().await;
    let (_, t) = app.new_user("up").await;
    let room = room_for(&app, &t).await;
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let resp = app
        .client
        .post(app.url("/api/upload_file"))
        .header("Authorization", &t)
        .multipart(form(room, "page.html", bytes.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v = body(resp).await;
    assert_eq!(v["message"], "File uploaded successfully");
    let url = v["file_url"].as_str().unwrap().to_owned();
    let got = app.client.get(&url).send().await.unwrap();
    assert_eq!(got.headers()["content-type"], "text/html");
    assert_eq!(got.headers()["x-content-type-options"], "nosniff");
    assert!(
        got.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    assert_eq!(got.bytes().await.unwrap().to_vec(), bytes);
    let msgs = body(
        app.get(&format!("/api/get_room_messages?room_id={room}"), Some(&t))
            .await,
    )
    .await;
    assert_eq!(msgs["messages"][0]["message"], url.as_str());
}

#[tokio::test]
async fn an_upload_one_byte_over_24_mib_is_refused() {
    let app = spawn_app().await;
    let (_, t) = app.new_user("big").await;
    let room = room_for(&app, &t).await;
    let resp = app
        .client
        .post(app.url("/api/upload_file"))
        .header("Authorization", &t)
        .multipart(form(room, "big.bin", vec![0u8; 25_165_825]))
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::PAYLOAD_TOO_LARGE).await;
    let leftovers = std::fs::read_dir(app.data_dir.path().join("files/tmp"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0);
}

#[tokio::test]
async fn upload_errors() {
    let app = spawn_app().await;
    let (_, t) = app.new_user("ue").await;
    let (_, other) = app.new_user("uo").await;
    let room = room_for(&app, &t).await;
    let send = |token: Option<String>, form: multipart::Form| {
        let mut req = app.client.post(app.url("/api/upload_file")).multipart(form);
        if let Some(token) = token {
            req = req.header("Authorization", token);
        }
        req.send()
    };
    assert_error(
        send(None, form(room, "a.txt", b"x".to_vec()))
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_error(
        send(Some(other.clone()), form(room, "a.txt", b"x".to_vec()))
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_error(
        send(Some(t.clone()), form(987654, "a.txt", b"x".to_vec()))
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    let no_room = multipart::Form::new().part(
        "file",
        multipart::Part::bytes(b"x".to_vec()).file_name("a.txt"),
    );
    assert_error(
        send(Some(t.clone()), no_room).await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let no_file = multipart::Form::new().text("room_id", room.to_string());
    assert_error(
        send(Some(t.clone()), no_file).await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn a_24_mib_upload_round_trips_byte_for_byte() {
    let app = spawn_app().await;
    let (_, t) = app.new_user("huge").await;
    let room = room_for(&app, &t).await;
    let size = 25_165_824usize;
    let bytes: Vec<u8> = (0..size)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect();
    let resp = app
        .client
        .post(app.url("/api/upload_file"))
        .header("Authorization", &t)
        .multipart(form(room, "huge.bin", bytes.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let url = body(resp).await["file_url"].as_str().unwrap().to_owned();
    let leftovers = std::fs::read_dir(app.data_dir.path().join("files/tmp"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0);
    let got = app.client.get(&url).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.headers()["content-type"], "application/octet-stream");
    assert_eq!(got.headers()["content-length"], size.to_string().as_str());
    let got = got.bytes().await.unwrap();
    assert_eq!(got.len(), size);
    assert!(got.as_ref() == bytes.as_slice(), "the bytes differ");
}

#[tokio::test]
async fn a_file_is_still_served_after_a_restart() {
    let mut app = spawn_app().await;
    let (_, t) = app.new_user("keep").await;
    let room = room_for(&app, &t).await;
    let resp = app
        .client
        .post(app.url("/api/upload_file"))
        .header("Authorization", &t)
        .multipart(form(room, "notes.txt", b"kept across restarts".to_vec()))
        .send()
        .await
        .unwrap();
    let url = body(resp).await["file_url"].as_str().unwrap().to_owned();
    let path = url.split_once("/api/").unwrap().1.to_owned();
    app.restart().await;
    let got = app.get(&format!("/api/{path}"), None).await;
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.headers()["content-type"], "text/plain");
    assert!(
        got.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("inline")
    );
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"kept across restarts");
}

#[tokio::test]
async fn an_unknown_file_is_404() {
    let app = spawn_app().await;
    let got = app
        .get("/api/files/0123456789abcdef0123456789abcdef/x.txt", None)
        .await;
    assert_error(got, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn a_file_id_or_name_that_does_not_decode_is_a_json_404() {
    let app = spawn_app().await;
    for path in [
        "/api/files/%FF/x.txt",
        "/api/files/0123456789abcdef0123456789abcdef/%FF%FE",
    ] {
        let got = app.get(path, None).await;
        assert_error(got, StatusCode::NOT_FOUND).await;
    }
}

#[tokio::test]
async fn a_file_named_only_dots_gets_a_url_that_clients_keep() {
    let app = spawn_app().await;
    let (_, t) = app.new_user("dots").await;
    let room = room_for(&app, &t).await;
    for name in ["..", ".", "..."] {
        let url = app.upload(&t, room, name, b"dotted").await;
        assert!(url.ends_with("/file"), "{name:?} gave {url}");
        let got = app.client.get(&url).send().await.unwrap();
        assert_eq!(got.status(), StatusCode::OK, "{url}");
        assert_eq!(got.bytes().await.unwrap().as_ref(), b"dotted");
    }
}
