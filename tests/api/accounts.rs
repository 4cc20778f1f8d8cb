use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn registering_then_logging_in_gives_a_uuid_token() {
    let app = spawn_app().await;
    let resp = app.register("alice_1").await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(body(resp).await, json!({"message": "Welcome to MIRAGE"}));
    let resp = app
        .post_json(
            "/api/login",
            None,
            json!({"username": "ALICE_1", "password": "password123"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let value = body(resp).await;
    assert_eq!(value["username"], "alice_1");
    assert!(uuid_like(value["token"].as_str().unwrap()));
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn each_login_is_its_own_session_and_logout_ends_one() {
    let app = spawn_app().await;
    let (name, first) = app.new_user("lo").await;
    let second = app.login(&name).await;
    // Used once before, so the server has resolved (and may cache) it.
    let r = app.get("/api/inbox_count", Some(&first)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .post_json("/api/logout", None, json!({"token": first}))
        .await;
    assert_eq!(body(r).await, json!({"message": "logged out successfully"}));
    let r = app.get("/api/inbox_count", Some(&first)).await;
    assert_error(r, StatusCode::UNAUTHORIZED).await;
    let r = app.post_json("/api/logout", Some(&first), json!({})).await;
    assert_error(r, StatusCode::UNAUTHORIZED).await;
    assert_error(
        app.post_json("/api/logout", None, json!({})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let r = app
        .get("/api/inbox_count", Some(&format!("Bearer {second}")))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn registration_and_login_errors() {
    let app = spawn_app().await;
    assert_eq!(
        app.register("dupe_user").await.status(),
        StatusCode::CREATED
    );
    assert_error(app.register("DUPE_user").await, StatusCode::BAD_REQUEST).await;
    let r = app
        .post_json(
            "/api/register",
            None,
            json!({"username": "ok_name", "email": "bad", "password": "password123"}),
        )
        .await;
    assert_error(r, StatusCode::BAD_REQUEST).await;
    let r = app
        .post_json(
            "/api/login",
            None,
            json!({"username": "dupe_user", "password": "wrongpass1"}),
        )
        .await;
    assert_error(r, StatusCode::UNAUTHORIZED).await;
    let r = app
        .post_json(
            "/api/login",
            None,
            json!({"username": "ghost_user", "password": "wrongpass1"}),
        )
        .await;
    assert_error(r, StatusCode::NOT_FOUND).await;
    assert_error(
        app.post_json("/api/login", None, json!({})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let r = app.get("/api/usercount", None).await;
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(r.text().await.unwrap(), "1");
    assert_eq!(
        body(app.get("/api/ping", None).await).await,
        json!({"message": "pong"})
    );
}

#[tokio::test]
async fn cors_preflight_names_authorization_and_errors_carry_the_origin_header() {
    let app = spawn_app().await;
    let r = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/fyp"))
        .header("Origin", "http://example.com")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let allowed = r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    let r = app
        .client
        .get(app.url("/api/fyp"))
        .header("Origin", "http://example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let app = spawn_app().await;
    let spec = body(app.get("/api/openapi.json", None).await).await;
    let routes = [
        ("post", "/api/register"),
        ("post", "/api/login"),
        ("post", "/api/logout"),
        ("post", "/api/delete_account"),
        ("get", "/api/usercount"),
        ("get", "/api/ping"),
        ("get", "/api/openapi.json"),
        ("get", "/api/user/{username}"),
        ("post", "/api/user/settings"),
        ("post", "/api/follow"),
        ("post", "/api/unfollow"),
        ("get", "/api/check_follow"),
        ("get", "/api/get_followers/{username}"),
        ("get", "/api/get_following/{username}"),
        ("post", "/api/create_post"),
        ("get", "/api/get_posts/{username}"),
        ("get", "/api/get_post_by_id/{id}"),
        ("post", "/api/vote_post"),
        ("post", "/api/reply_to_post"),
        ("get", "/api/get_replies/{post_id}"),
        ("get", "/api/fyp"),
        ("post", "/api/create_room"),
        ("post", "/api/join_room"),
        ("post", "/api/leave_room"),
        ("get", "/api/rooms"),
        ("get", "/api/user_rooms"),
        ("get", "/api/room_members/{room_id}"),
        ("post", "/api/send_room_message"),
        ("get", "/api/get_room_messages"),
        ("post", "/api/upload_file"),
        ("get", "/api/files/{id}/{name}"),
        ("post", "/api/send_inbox_message"),
        ("get", "/api/inbox"),
        ("post", "/api/delete_inbox_message"),
        ("get", "/api/inbox_count"),
        ("get", "/api/ws"),
    ];
    for (method, path) in routes {
        assert!(
            spec["paths"][path][method].is_object(),
            "{method} {path} missing from OpenAPI"
        );
    }
    assert_eq!(spec["paths"].as_object().unwrap().len(), routes.len());
}

#[tokio::test]
async fn the_user_count_follows_every_registration_and_deletion() {
    let app = spawn_app().await;
    let count = || async {
        app.get("/api/usercount", None)
            .await
            .text()
            .await
            .unwrap()
            .parse::<i64>()
            .unwrap()
    };
    // Each count below is read right after a change to a count read just
    // before it (the SQLite store keeps the count in memory).
    assert_eq!(count().await, 0);
    let (first, token) = app.new_user("uc").await;
    assert_eq!(count().await, 1);
    app.new_user("uc").await;
    assert_eq!(count().await, 2);
    // A refused registration counts nobody.
    assert_error(app.register(&first).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(count().await, 2);
    let r = app
        .post_json(
            "/api/delete_account",
            Some(&token),
            json!({"password": "password123"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(count().await, 1);
}
