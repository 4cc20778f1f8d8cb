//! One test per endpoint group for every status code API.md documents that
//! the other test files do not already exercise, including the check order
//! (401 before 400 before 404 before 403) and that refused requests change
//! nothing.

use reqwest::{Method, StatusCode, multipart};
use serde_json::{Value, json};

use crate::helpers::*;

async fn profile(app: &TestApp, name: &str) -> Value {
    let resp = app.get(&format!("/api/user/{name}"), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    body(resp).await
}

async fn room_texts(app: &TestApp, token: &str, room: i64) -> Vec<String> {
    let resp = app
        .get(
            &format!("/api/get_room_messages?room_id={room}"),
            Some(token),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    body(resp).await["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["message"].as_str().expect("text").to_owned())
        .collect()
}

async fn user_count(app: &TestApp) -> String {
    app.get("/api/usercount", None).await.text().await.unwrap()
}

// ---------------------------------------------------------------- accounts

#[tokio::test]
async fn register_rejects_each_documented_invalid_field_with_400() {
    let app = spawn_app().await;
    assert_eq!(
        app.register("taken_name").await.status(),
        StatusCode::CREATED
    );
    let ok = |over: Value| {
        let mut base = json!({
            "username": unique_name("reg"),
            "email": format!("{}@example.com", unique_name("mail")),
            "password": "password123",
        });
        for (k, v) in over.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        base
    };
    let cases = [
        ("missing username", ok(json!({"username": null}))),
        ("missing email", ok(json!({"email": null}))),
        ("missing password", ok(json!({"password": null}))),
        ("blank username", ok(json!({"username": "   "}))),
        ("blank password", ok(json!({"password": "        "}))),
        ("username too short", ok(json!({"username": "ab"}))),
        ("username too long", ok(json!({"username": "u".repeat(33)}))),
        ("username bad char", ok(json!({"username": "bad name"}))),
        ("username non-ascii", ok(json!({"username": "émile"}))),
        ("email no @", ok(json!({"email": "nobody.example.com"}))),
        ("email two @", ok(json!({"email": "a@b@example.com"}))),
        ("email empty local", ok(json!({"email": "@example.com"}))),
        ("email empty domain", ok(json!({"email": "someone@"}))),
        (
            "email over 254",
            ok(json!({"email": format!("{}@example.com", "a".repeat(243))})),
        ),
        ("password 7 chars", ok(json!({"password": "1234567"}))),
        (
            "password 129 chars",
            ok(json!({"password": "p".repeat(129)})),
        ),
        (
            "description 501 words",
            ok(json!({"description": "word ".repeat(501)})),
        ),
        (
            "description 5001 chars",
            ok(json!({"description": "é".repeat(5001)})),
        ),
        (
            "avatar_url 2049 chars",
            ok(json!({"avatar_url": "h".repeat(2049)})),
        ),
        ("username taken", ok(json!({"username": "TAKEN_NAME"}))),
        (
            "email taken ignoring case",
            ok(json!({"email": "Taken_Name@EXAMPLE.com"})),
        ),
    ];
    for (why, req) in cases {
        let resp = app.post_json("/api/register", None, req).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{why}");
        let err = assert_error(resp, StatusCode::BAD_REQUEST).await;
        assert!(!err.is_empty(), "{why}");
    }
    assert_eq!(
        user_count(&app).await,
        "1",
        "a refused registration adds no user"
    );

    // The limits themselves are fine, counted in characters.
    let edge = json!({
        "username": "u".repeat(32),
        "email": format!("{}@example.com", "a".repeat(242)),
        "password": "é".repeat(8),
        "description": "word ".repeat(500),
        "avatar_url": "h".repeat(2048),
    });
    let resp = app.post_json("/api/register", None, edge).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(body(resp).await, json!({"message": "Welcome to MIRAGE"}));
}

#[tokio::test]
async fn login_400_for_each_missing_field() {
    let app = spawn_app().await;
    let (name, _) = app.new_user("lg").await;
    for req in [
        json!({"username": name}),
        json!({"password": "password123"}),
        json!({"username": "", "password": "password123"}),
    ] {
        let resp = app.post_json("/api/login", None, req).await;
        assert_error(resp, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn logout_400_without_any_token_and_401_for_unknown_tokens() {
    let app = spawn_app().await;
    let (_, token) = app.new_user("lo").await;
    for req in [json!({}), json!({"token": ""}), json!({"token": "   "})] {
        let resp = app.post_json("/api/logout", None, req).await;
        let err = assert_error(resp, StatusCode::BAD_REQUEST).await;
        assert!(err.contains("token"), "{err}");
    }
    let bogus = "550e8400-e29b-41d4-a716-446655440000";
    let resp = app
        .post_json("/api/logout", None, json!({"token": bogus}))
        .await;
    assert_error(resp, StatusCode::UNAUTHORIZED).await;
    let resp = app.post_json("/api/logout", Some(bogus), json!({})).await;
    assert_error(resp, StatusCode::UNAUTHORIZED).await;
    // The header wins over the body: a bogus header is 401 and the real
    // token in the body is not ended.
    let resp = app
        .post_json("/api/logout", Some(bogus), json!({"token": token}))
        .await;
    assert_error(resp, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        app.get("/api/inbox_count", Some(&token)).await.status(),
        StatusCode::OK
    );
    let resp = app
        .post_json(
            "/api/logout",
            Some(&format!("Bearer {token}")),
            json!({"token": bogus}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        body(resp).await,
        json!({"message": "logged out successfully"})
    );
    assert_error(
        app.get("/api/inbox_count", Some(&token)).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

// ---------------------------------------------------------------- settings

#[tokio::test]
async fn settings_400s_change_nothing() {
    let app = spawn_app().await;
    let (name, token) = app.new_user("st").await;
    let (other, _) = app.new_user("so").await;
    let before = profile(&app, &name).await;

    let cases = [
        ("empty body", json!({})),
        ("only unknown fields", json!({"nickname": "x"})),
        ("invalid email", json!({"email": "not-an-email"})),
        ("email with two @", json!({"email": "a@b@c"})),
        (
            "email taken by another user ignoring case",
            json!({"email": format!("{}@EXAMPLE.COM", other.to_uppercase())}),
        ),
        (
            "custom_css over 10000",
            json!({"custom_css": "c".repeat(10_001)}),
        ),
        (
            "background_image over 2048",
            json!({"background_image": "b".repeat(2_049)}),
        ),
        (
            "avatar_url over 2048",
            json!({"avatar_url": "a".repeat(2_049)}),
        ),
        (
            "description over 500 words",
            json!({"description": "w ".repeat(501)}),
        ),
        ("password too short", json!({"password": "short"})),
        (
            "one valid field and one invalid",
            json!({"description": "changed", "custom_css": "c".repeat(10_001)}),
        ),
    ];
    for (why, req) in cases {
        let resp = app.post_json("/api/user/settings", Some(&token), req).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{why}");
        assert_error(resp, StatusCode::BAD_REQUEST).await;
    }
    assert_eq!(
        profile(&app, &name).await,
        before,
        "a refused update changed the profile"
    );
    // The old password still works, so the refused password change did nothing.
    app.login(&name).await;
}

#[tokio::test]
async fn settings_200_at_the_limits_and_for_ones_own_email_in_another_case() {
    let app = spawn_app().await;
    let (name, token) = app.new_user("sl").await;
    let css = "é".repeat(10_000);
    let bg = "b".repeat(2_048);
    let resp = app
        .post_json(
            "/api/user/settings",
            Some(&token),
            json!({"custom_css": css, "background_image": bg,
                   "email": format!("{}@Example.com", name.to_uppercase())}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        body(resp).await,
        json!({"message": "settings updated successfully"})
    );
    let v = profile(&app, &name).await;
    assert_eq!(v["custom_css"], css.as_str());
    assert_eq!(v["background_image"], bg.as_str());
    assert!(v.get("email").is_none());
}

#[tokio::test]
async fn settings_401_without_or_with_a_bad_token() {
    let app = spawn_app().await;
    let (name, _) = app.new_user("su").await;
    for token in [None, Some("bogus-token")] {
        let resp = app
            .post_json(
                "/api/user/settings",
                token,
                json!({"description": "hacked"}),
            )
            .await;
        assert_error(resp, StatusCode::UNAUTHORIZED).await;
    }
    assert_eq!(profile(&app, &name).await["description"], "");
}

// ---------------------------------------------------------------- follow graph

#[tokio::test]
async fn follow_unfollow_and_check_follow_statuses() {
    let app = spawn_app().await;
    let (a, ta) = app.new_user("ga").await;
    let (b, _) = app.new_user("gb").await;

    for req in [
        json!({}),
        json!({"username": ""}),
        json!({"username": "  "}),
    ] {
        let resp = app.post_json("/api/follow", Some(&ta), req.clone()).await;
        assert_error(resp, StatusCode::BAD_REQUEST).await;
        let resp = app.post_json("/api/unfollow", Some(&ta), req).await;
        assert_error(resp, StatusCode::BAD_REQUEST).await;
    }
    let resp = app
        .post_json(
            "/api/unfollow",
            Some(&ta),
            json!({"username": "ghost_user"}),
        )
        .await;
    assert_error(resp, StatusCode::NOT_FOUND).await;
    // Not following yet: 400, and counters stay at zero.
    let resp = app
        .post_json("/api/unfollow", Some(&ta), json!({"username": b}))
        .await;
    assert_error(resp, StatusCode::BAD_REQUEST).await;
    assert_eq!(profile(&app, &b).await["stats"]["followers"], 0);
    assert_eq!(profile(&app, &a).await["stats"]["following"], 0);

    // check_follow: 400 missing/blank, 404 unknown, 200 false then true.
    for q in [
        "/api/check_follow",
        "/api/check_follow?username=",
        "/api/check_follow?username=%20",
    ] {
        assert_error(app.get(q, Some(&ta)).await, StatusCode::BAD_REQUEST).await;
    }
    assert_error(
        app.get("/api/check_follow?username=ghost_user", Some(&ta))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let resp = app
        .get(&format!("/api/check_follow?username={b}"), Some(&ta))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body(resp).await, json!({"is_following": false}));
    let resp = app
        .post_json(
            "/api/follow",
            Some(&ta),
            json!({"username": b.to_uppercase()}),
        )
        .await;
    assert_eq!(
        body(resp).await,
        json!({"message": format!("now following {b}")})
    );
    let resp = app
        .get(
            &format!("/api/check_follow?username={}", b.to_uppercase()),
            Some(&ta),
        )
        .await;
    assert_eq!(body(resp).await, json!({"is_following": true}));
    // The relation is one-way.
    let tb = app.login(&b).await;
    let resp = app
        .get(&format!("/api/check_follow?username={a}"), Some(&tb))
        .await;
    assert_eq!(body(resp).await, json!({"is_following": false}));
}

#[tokio::test]
async fn follower_lists_404_for_unknown_users_and_list_both_sides() {
    let app = spawn_app().await;
    let (a, ta) = app.new_user("la").await;
    let (b, _) = app.new_user("lb").await;
    for path in [
        "/api/get_followers/ghost_user",
        "/api/get_following/ghost_user",
    ] {
        assert_error(app.get(path, None).await, StatusCode::NOT_FOUND).await;
    }
    app.post_json("/api/follow", Some(&ta), json!({"username": b}))
        .await;
    let resp = app.get(&format!("/api/get_following/{a}"), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v = body(resp).await;
    assert_eq!(v["following"], json!([{"username": b, "avatar_url": ""}]));
    assert!(v["next"].is_null());
    let v = body(app.get(&format!("/api/get_followers/{a}"), None).await).await;
    assert_eq!(v["followers"], json!([]));
    let v = body(
        app.get(&format!("/api/get_followers/{}", b.to_uppercase()), None)
            .await,
    )
    .await;
    assert_eq!(v["followers"], json!([{"username": a, "avatar_url": ""}]));
}

// ---------------------------------------------------------------- posts

#[tokio::test]
async fn create_post_400_for_missing_blank_or_long_content() {
    let app = spawn_app().await;
    let (name, token) = app.new_user("cp").await;
    for req in [
        json!({}),
        json!({"content": ""}),
        json!({"content": " \n\t "}),
        json!({"content": "x".repeat(513)}),
        json!({"content": 42}),
    ] {
        let resp = app.post_json("/api/create_post", Some(&token), req).await;
        assert_error(resp, StatusCode::BAD_REQUEST).await;
    }
    assert_eq!(profile(&app, &name).await["stats"]["posts"], 0);
    let v = body(app.get(&format!("/api/get_posts/{name}"), None).await).await;
    assert_eq!(v["posts"], json!([]));
    // Exactly 512 characters is fine.
    app.create_post(&token, &"é".repeat(512)).await;
    assert_eq!(profile(&app, &name).await["stats"]["posts"], 1);
}

#[tokio::test]
async fn post_reads_404_for_unknown_users_and_posts() {
    let app = spawn_app().await;
    let (_, token) = app.new_user("pr").await;
    let id = app.create_post(&token, "exists").await;
    assert_error(
        app.get("/api/get_posts/ghost_user", None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    for path in [
        format!("/api/get_post_by_id/{}", id + 1000),
        "/api/get_post_by_id/0".to_owned(),
        "/api/get_post_by_id/-1".to_owned(),
        "/api/get_post_by_id/abc".to_owned(),
        "/api/get_post_by_id/1.5".to_owned(),
        format!("/api/get_replies/{}", id + 1000),
        "/api/get_replies/abc".to_owned(),
    ] {
        let resp = app.get(&path, None).await;
        assert_error(resp, StatusCode::NOT_FOUND).await;
    }
    let v = body(app.get(&format!("/api/get_replies/{id}"), None).await).await;
    assert_eq!(v["replies"], json!([]));
    assert!(v["next"].is_null());
}

#[tokio::test]
async fn vote_post_rejections_leave_counters_unchanged() {
    let app = spawn_app().await;
    let (author, ta) = app.new_user("vo").await;
    let (_, tv) = app.new_user("vv").await;
    let id = app.create_post(&ta, "vote on me").await;
    let resp = app
        .post_json(
            "/api/vote_post",
            Some(&tv),
            json!({"post_id": id, "vote_type": "up"}),
        )
        .await;
    assert_eq!(
        body(resp).await,
        json!({"message": "vote counted", "upvotes": 1, "downvotes": 0})
    );

    let bad = [
        (json!({"vote_type": "up"}), StatusCode::BAD_REQUEST),
        (json!({"post_id": id}), StatusCode::BAD_REQUEST),
        (
            json!({"post_id": id, "vote_type": ""}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"post_id": id, "vote_type": "UP!"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"post_id": id, "vote_type": 1}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"post_id": "abc", "vote_type": "up"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"post_id": 1.5, "vote_type": "up"}),
            StatusCode::BAD_REQUEST,
        ),
        // Field validation comes before existence.
        (
            json!({"post_id": id + 1000, "vote_type": "sideways"}),
            StatusCode::BAD_REQUEST,
        ),
        // Already voted this way.
        (
            json!({"post_id": id, "vote_type": "up"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"post_id": id.to_string(), "vote_type": "up"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"post_id": id + 1000, "vote_type": "down"}),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (req, status) in bad {
        let resp = app
            .post_json("/api/vote_post", Some(&tv), req.clone())
            .await;
        assert_eq!(resp.status(), status, "{req}");
        assert_error(resp, status).await;
    }
    // Voting on your own post is 403, whichever way.
    for kind in ["up", "down"] {
        let resp = app
            .post_json(
                "/api/vote_post",
                Some(&ta),
                json!({"post_id": id, "vote_type": kind}),
            )
            .await;
        assert_error(resp, StatusCode::FORBIDDEN).await;
    }
    let post = body(app.get(&format!("/api/get_post_by_id/{id}"), None).await).await;
    assert_eq!(
        (post["upvotes"].as_i64(), post["downvotes"].as_i64()),
        (Some(1), Some(0))
    );
    let stats = &profile(&app, &author).await["stats"];
    assert_eq!(
        (stats["upvotes"].as_i64(), stats["downvotes"].as_i64()),
        (Some(1), Some(0))
    );
}

#[tokio::test]
async fn reply_to_post_400_and_404_cases_create_nothing() {
    let app = spawn_app().await;
    let (_, ta) = app.new_user("ra").await;
    let (_, tb) = app.new_user("rb").await;
    let post = app.create_post(&ta, "first").await;
    let other_post = app.create_post(&ta, "second").await;
    let resp = app
        .post_json(
            "/api/reply_to_post",
            Some(&tb),
            json!({"post_id": other_post, "content": "on the other post"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let foreign_reply = body(resp).await["id"].as_i64().unwrap();

    let cases = [
        (json!({"content": "no post"}), StatusCode::BAD_REQUEST),
        (json!({"post_id": post}), StatusCode::BAD_REQUEST),
        (
            json!({"post_id": post, "content": "   "}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"post_id": post, "content": "x".repeat(513)}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"post_id": "x1", "content": "bad id"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"post_id": post, "content": "bad parent id", "parent_id": "nope"}),
            StatusCode::BAD_REQUEST,
        ),
        // Validation before existence: blank content on a missing post is 400.
        (
            json!({"post_id": 999_999, "content": ""}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"post_id": post, "content": "parent elsewhere", "parent_id": foreign_reply}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"post_id": 999_999, "content": "no such post"}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"post_id": post, "content": "no such parent", "parent_id": 999_999}),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (req, status) in cases {
        let resp = app
            .post_json("/api/reply_to_post", Some(&tb), req.clone())
            .await;
        assert_eq!(resp.status(), status, "{req}");
        assert_error(resp, status).await;
    }
    let v = body(app.get(&format!("/api/get_replies/{post}"), None).await).await;
    assert_eq!(v["replies"], json!([]), "a refused reply was stored");
    let v = body(
        app.get(&format!("/api/get_replies/{other_post}"), None)
            .await,
    )
    .await;
    assert_eq!(v["replies"].as_array().unwrap().len(), 1);
    // A 512-character reply with a parent on the same post is fine.
    let resp = app
        .post_json(
            "/api/reply_to_post",
            Some(&ta),
            json!({"post_id": other_post.to_string(), "content": "é".repeat(512),
                   "parent_id": foreign_reply.to_string()}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(body(resp).await["message"], "reply created");
}

// ---------------------------------------------------------------- rooms

#[tokio::test]
async fn create_room_400_for_invalid_fields() {
    let app = spawn_app().await;
    let (_, t) = app.new_user("cr").await;
    for req in [
        json!({}),
        json!({"room_name": "  "}),
        json!({"room_name": "r".repeat(65)}),
        json!({"room_name": "p1", "is_private": 2}),
        json!({"room_name": "p2", "is_private": "yes"}),
        json!({"room_name": "p3", "is_private": 1}),
        json!({"room_name": "p4", "is_private": true, "password": "  "}),
    ] {
        let resp = app
            .post_json("/api/create_room", Some(&t), req.clone())
            .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{req}");
        assert_error(resp, StatusCode::BAD_REQUEST).await;
    }
    let v = body(app.get("/api/user_rooms", Some(&t)).await).await;
    assert_eq!(v["rooms"], json!([]), "a refused room was created");
    let resp = app
        .post_json(
            "/api/create_room",
            Some(&t),
            json!({"room_name": "é".repeat(64), "is_private": false}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn join_room_400_404_403() {
    let app = spawn_app().await;
    let (owner, to) = app.new_user("jo").await;
    let (joiner, tj) = app.new_user("jj").await;
    let public = app.create_room(&to, "Open Room", None).await;
    let vip = app.create_room(&to, "VIP Lounge", Some("secret123")).await;

    for req in [
        json!({}),
        json!({"name": "", "password": ""}),
        json!({"name": "   "}),
    ] {
        let resp = app.post_json("/api/join_room", Some(&tj), req).await;
        assert_error(resp, StatusCode::BAD_REQUEST).await;
    }
    let resp = app
        .post_json("/api/join_room", Some(&tj), json!({"room_id": "one"}))
        .await;
    assert_error(resp, StatusCode::BAD_REQUEST).await;
    for req in [
        json!({"name": "No Such Room", "password": ""}),
        json!({"room_id": 999_999}),
        json!({"room_id": "999999", "password": "secret123"}),
    ] {
        let resp = app.post_json("/api/join_room", Some(&tj), req).await;
        assert_error(resp, StatusCode::NOT_FOUND).await;
    }
    for req in [
        json!({"name": "VIP Lounge"}),
        json!({"name": "vip lounge", "password": ""}),
        json!({"name": "VIP Lounge", "password": "Secret123"}),
        json!({"room_id": vip, "password": "wrong"}),
    ] {
        let resp = app
            .post_json("/api/join_room", Some(&tj), req.clone())
            .await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{req}");
        assert_error(resp, StatusCode::FORBIDDEN).await;
    }
    // Still not a member after the refusals.
    assert_error(
        app.get(&format!("/api/room_members/{vip}"), Some(&tj))
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(
        body(app.get("/api/user_rooms", Some(&tj)).await).await["rooms"],
        json!([])
    );

    // Success by id and by name; joining again is fine.
    for _ in 0..2 {
        let resp = app
            .post_json(
                "/api/join_room",
                Some(&tj),
                json!({"room_id": vip.to_string(), "password": "secret123"}),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            body(resp).await,
            json!({"message": format!("{joiner} joined room \"VIP Lounge\""),
                   "room_id": vip, "room_name": "VIP Lounge"})
        );
    }
    let resp = app
        .post_json(
            "/api/join_room",
            Some(&tj),
            json!({"name": "open room", "password": ""}),
        )
        .await;
    assert_eq!(
        body(resp).await,
        json!({"message": format!("{joiner} joined room \"Open Room\""),
               "room_id": public, "room_name": "Open Room"})
    );
    let members = body(
        app.get(&format!("/api/room_members/{vip}"), Some(&tj))
            .await,
    )
    .await;
    assert_eq!(members["members"], json!([owner, joiner]));
}

#[tokio::test]
async fn leave_room_and_room_members_statuses() {
    let app = spawn_app().await;
    let (owner, to) = app.new_user("lo").await;
    let (_, tx) = app.new_user("lx").await;
    let public = app.create_room(&to, "Lobby", None).await;
    let private = app.create_room(&to, "Back Office", Some("pw")).await;

    for req in [json!({}), json!({"room_id": "lobby"})] {
        let resp = app.post_json("/api/leave_room", Some(&tx), req).await;
        assert_error(resp, StatusCode::BAD_REQUEST).await;
    }
    let resp = app
        .post_json("/api/leave_room", Some(&tx), json!({"room_id": 999_999}))
        .await;
    assert_error(resp, StatusCode::NOT_FOUND).await;
    for room in [public, private] {
        let resp = app
            .post_json("/api/leave_room", Some(&tx), json!({"room_id": room}))
            .await;
        let err = assert_error(resp, StatusCode::BAD_REQUEST).await;
        assert!(err.contains("member"), "{err}");
    }

    for path in ["/api/room_members/999999", "/api/room_members/abc"] {
        assert_error(app.get(path, Some(&tx)).await, StatusCode::NOT_FOUND).await;
    }
    assert_error(
        app.get(&format!("/api/room_members/{private}"), Some(&tx))
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    // A public room's members are visible to any logged-in user.
    let resp = app
        .get(&format!("/api/room_members/{public}"), Some(&tx))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body(resp).await, json!({"members": [owner]}));

    let resp = app
        .post_json(
            "/api/leave_room",
            Some(&to),
            json!({"room_id": private.to_string()}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        body(resp).await,
        json!({"message": "left room \"Back Office\""})
    );
}

#[tokio::test]
async fn send_room_message_400_404_403_store_nothing() {
    let app = spawn_app().await;
    let (_, to) = app.new_user("so").await;
    let (_, tx) = app.new_user("sx").await;
    let room = app.create_room(&to, "Chatter", None).await;

    let cases = [
        (
            Some(&to),
            json!({"message": "no room"}),
            StatusCode::BAD_REQUEST,
        ),
        (Some(&to), json!({"room_id": room}), StatusCode::BAD_REQUEST),
        (
            Some(&to),
            json!({"room_id": room, "message": ""}),
            StatusCode::BAD_REQUEST,
        ),
        (
            Some(&to),
            json!({"room_id": room, "message": " \n "}),
            StatusCode::BAD_REQUEST,
        ),
        (
            Some(&to),
            json!({"room_id": room, "message": "m".repeat(2_001)}),
            StatusCode::BAD_REQUEST,
        ),
        (
            Some(&to),
            json!({"room_id": "r1", "message": "x"}),
            StatusCode::BAD_REQUEST,
        ),
        // Validation before existence, existence before permission.
        (
            Some(&tx),
            json!({"room_id": 999_999, "message": "  "}),
            StatusCode::BAD_REQUEST,
        ),
        (
            Some(&tx),
            json!({"room_id": 999_999, "message": "hi"}),
            StatusCode::NOT_FOUND,
        ),
        (
            Some(&tx),
            json!({"room_id": room, "message": "hi"}),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (token, req, status) in cases {
        let resp = app
            .post_json(
                "/api/send_room_message",
                token.map(String::as_str),
                req.clone(),
            )
            .await;
        assert_eq!(resp.status(), status, "{req}");
        assert_error(resp, status).await;
    }
    assert!(room_texts(&app, &to, room).await.is_empty());
    // 2,000 characters after trimming is fine, and stored trimmed.
    let text = "é".repeat(2_000);
    let resp = app
        .post_json(
            "/api/send_room_message",
            Some(&to),
            json!({"room_id": room, "message": format!("  {text}\n")}),
        )
        .await;
    assert_eq!(body(resp).await, json!({"message": "sent"}));
    assert_eq!(room_texts(&app, &to, room).await, [text]);
}

#[tokio::test]
async fn get_room_messages_400_404_403() {
    let app = spawn_app().await;
    let (_, to) = app.new_user("go").await;
    let (_, tx) = app.new_user("gx").await;
    let public = app.create_room(&to, "Readers", None).await;
    let private = app.create_room(&to, "Secret Readers", Some("pw")).await;
    for q in ["", "?room_id=", "?room_id=abc", "?room_id=1.5"] {
        let resp = app
            .get(&format!("/api/get_room_messages{q}"), Some(&to))
            .await;
        assert_error(resp, StatusCode::BAD_REQUEST).await;
    }
    let resp = app
        .get(
            &format!("/api/get_room_messages?room_id={public}&since=yesterday"),
            Some(&to),
        )
        .await;
    assert_error(resp, StatusCode::BAD_REQUEST).await;
    assert_error(
        app.get("/api/get_room_messages?room_id=999999", Some(&tx))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    for room in [public, private] {
        let resp = app
            .get(&format!("/api/get_room_messages?room_id={room}"), Some(&tx))
            .await;
        assert_error(resp, StatusCode::FORBIDDEN).await;
    }
    let resp = app
        .get(
            &format!("/api/get_room_messages?room_id={public}"),
            Some(&to),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body(resp).await["messages"], json!([]));
}

// ---------------------------------------------------------------- files

#[tokio::test]
async fn upload_400_for_an_empty_filename_and_parts_may_come_in_any_order() {
    let app = spawn_app().await;
    let (_, t) = app.new_user("uf").await;
    let room = app.create_room(&t, "Uploads", None).await;
    let send = |form: multipart::Form| {
        app.client
            .post(app.url("/api/upload_file"))
            .header("Authorization", &t)
            .multipart(form)
            .send()
    };
    let empty_name = multipart::Form::new()
        .text("room_id", room.to_string())
        .part("file", multipart::Part::bytes(b"x".to_vec()).file_name(""));
    assert_error(send(empty_name).await.unwrap(), StatusCode::BAD_REQUEST).await;
    // Not multipart at all: 400 for a logged-in caller (401 without a token,
    // see the table below).
    let resp = app
        .post_json("/api/upload_file", Some(&t), json!({"room_id": room}))
        .await;
    assert_error(resp, StatusCode::BAD_REQUEST).await;
    let bad_room = multipart::Form::new().text("room_id", "lobby").part(
        "file",
        multipart::Part::bytes(b"x".to_vec()).file_name("a.txt"),
    );
    assert_error(send(bad_room).await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert!(room_texts(&app, &t, room).await.is_empty());

    // room_id before file is fine.
    let ordered = multipart::Form::new()
        .text("room_id", room.to_string())
        .part(
            "file",
            multipart::Part::bytes(b"hello".to_vec()).file_name("note.txt"),
        );
    let resp = send(ordered).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v = body(resp).await;
    assert_eq!(v["message"], "File uploaded successfully");
    let url = v["file_url"].as_str().unwrap();
    assert!(url.starts_with("http://"), "{url}");
    assert_eq!(room_texts(&app, &t, room).await, [url]);
}

// ---------------------------------------------------------------- inbox

#[tokio::test]
async fn inbox_send_and_delete_statuses() {
    let app = spawn_app().await;
    let (a, ta) = app.new_user("xa").await;
    let (b, tb) = app.new_user("xb").await;
    let (_, tc) = app.new_user("xc").await;

    for req in [
        json!({"message": "no recipient"}),
        json!({"recipient": b}),
        json!({"recipient": b, "message": ""}),
        json!({"recipient": "  ", "message": "hi"}),
        json!({"recipient": b, "message": "m".repeat(5_001)}),
        // Validation before existence.
        json!({"recipient": "ghost_user", "message": ""}),
    ] {
        let resp = app
            .post_json("/api/send_inbox_message", Some(&ta), req.clone())
            .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{req}");
        assert_error(resp, StatusCode::BAD_REQUEST).await;
    }
    assert_eq!(
        body(app.get("/api/inbox_count", Some(&tb)).await).await,
        json!({"inbox_count": 0})
    );
    let resp = app
        .post_json(
            "/api/send_inbox_message",
            Some(&ta),
            json!({"recipient": b.to_uppercase(), "message": "é".repeat(5_000)}),
        )
        .await;
    assert_eq!(body(resp).await, json!({"message": "sent"}));
    let v = body(app.get("/api/inbox", Some(&tb)).await).await;
    let id = v["messages"][0]["id"].as_i64().unwrap();
    assert_eq!(v["messages"][0]["sender"], a.as_str());

    for req in [
        json!({}),
        json!({"message_id": "abc"}),
        json!({"message_id": -1.5}),
    ] {
        let resp = app
            .post_json("/api/delete_inbox_message", Some(&tb), req)
            .await;
        assert_error(resp, StatusCode::BAD_REQUEST).await;
    }
    // Someone else's message, and one that never existed: 404.
    for req in [json!({"message_id": id}), json!({"message_id": id + 1000})] {
        let resp = app
            .post_json("/api/delete_inbox_message", Some(&tc), req)
            .await;
        assert_error(resp, StatusCode::NOT_FOUND).await;
    }
    for token in [&ta, &tb] {
        assert_eq!(
            body(app.get("/api/inbox_count", Some(token)).await).await,
            json!({"inbox_count": 1}),
            "a refused delete removed the message"
        );
    }
}

// ---------------------------------------------------------------- 401 everywhere

#[tokio::test]
async fn every_authenticated_endpoint_is_401_without_a_valid_token() {
    let app = spawn_app().await;
    let (victim, tv) = app.new_user("vi").await;
    let post = app.create_post(&tv, "target #tag").await;
    let room = app.create_room(&tv, "Target Room", None).await;
    app.post_json(
        "/api/send_inbox_message",
        Some(&tv),
        json!({"recipient": victim, "message": "note to self"}),
    )
    .await;
    let inbox_id = body(app.get("/api/inbox", Some(&tv)).await).await["messages"][0]["id"]
        .as_i64()
        .unwrap();

    // (method, path, a valid body): each is also sent with an invalid `{}`
    // body, since authentication is checked before the request's shape.
    let endpoints: Vec<(Method, String, Value)> = vec![
        (
            Method::POST,
            "/api/user/settings".into(),
            json!({"description": "pwned"}),
        ),
        (
            Method::POST,
            "/api/follow".into(),
            json!({"username": victim}),
        ),
        (
            Method::POST,
            "/api/unfollow".into(),
            json!({"username": victim}),
        ),
        (
            Method::GET,
            format!("/api/check_follow?username={victim}"),
            Value::Null,
        ),
        (
            Method::POST,
            "/api/create_post".into(),
            json!({"content": "intruder"}),
        ),
        (
            Method::POST,
            "/api/vote_post".into(),
            json!({"post_id": post, "vote_type": "up"}),
        ),
        (
            Method::POST,
            "/api/reply_to_post".into(),
            json!({"post_id": post, "content": "intruder"}),
        ),
        (Method::GET, "/api/fyp".into(), Value::Null),
        (
            Method::POST,
            "/api/create_room".into(),
            json!({"room_name": "intruders"}),
        ),
        (
            Method::POST,
            "/api/join_room".into(),
            json!({"room_id": room}),
        ),
        (
            Method::POST,
            "/api/leave_room".into(),
            json!({"room_id": room}),
        ),
        (Method::GET, "/api/rooms".into(), Value::Null),
        (Method::GET, "/api/user_rooms".into(), Value::Null),
        (
            Method::GET,
            format!("/api/room_members/{room}"),
            Value::Null,
        ),
        (
            Method::POST,
            "/api/send_room_message".into(),
            json!({"room_id": room, "message": "intruder"}),
        ),
        (
            Method::GET,
            format!("/api/get_room_messages?room_id={room}"),
            Value::Null,
        ),
        (Method::POST, "/api/upload_file".into(), Value::Null),
        (
            Method::POST,
            "/api/send_inbox_message".into(),
            json!({"recipient": victim, "message": "intruder"}),
        ),
        (Method::GET, "/api/inbox".into(), Value::Null),
        (
            Method::POST,
            "/api/delete_inbox_message".into(),
            json!({"message_id": inbox_id}),
        ),
        (Method::GET, "/api/inbox_count".into(), Value::Null),
        (
            Method::POST,
            "/api/delete_account".into(),
            json!({"password": "password123"}),
        ),
    ];
    let bad_tokens: [Option<&str>; 6] = [
        None,
        Some(""),
        Some("Bearer "),
        Some("not-a-token"),
        Some("Bearer not-a-token"),
        Some("550e8400-e29b-41d4-a716-446655440000"),
    ];
    for (method, path, valid) in &endpoints {
        let bodies: Vec<Option<Value>> = if *method == Method::GET {
            vec![None]
        } else {
            vec![Some(valid.clone()), Some(json!({})), None]
        };
        for token in bad_tokens {
            for req_body in &bodies {
                let mut req = app.client.request(method.clone(), app.url(path));
                if path == "/api/upload_file" && req_body.as_ref().is_some_and(|b| b.is_null()) {
                    let form = multipart::Form::new()
                        .text("room_id", room.to_string())
                        .part(
                            "file",
                            multipart::Part::bytes(b"x".to_vec()).file_name("a.txt"),
                        );
                    req = req.multipart(form);
                } else if let Some(b) = req_body {
                    req = req.json(b);
                }
                if let Some(t) = token {
                    req = req.header("Authorization", t);
                }
                let resp = req.send().await.unwrap();
                let what = format!("{method} {path} token={token:?} body={req_body:?}");
                assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
                assert!(
                    resp.headers()["content-type"]
                        .to_str()
                        .unwrap()
                        .starts_with("application/json"),
                    "{what}"
                );
                let v = body(resp).await;
                assert!(v.get("message").is_none(), "{what}: {v}");
                assert!(
                    v["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{what}: {v}"
                );
            }
        }
    }

    // Nothing any of those requests asked for happened.
    let p = profile(&app, &victim).await;
    assert_eq!(p["description"], "");
    assert_eq!(
        p["stats"],
        json!({"followers": 0, "following": 0, "posts": 1, "upvotes": 0, "downvotes": 0})
    );
    let v = body(app.get(&format!("/api/get_replies/{post}"), None).await).await;
    assert_eq!(v["replies"], json!([]));
    assert!(room_texts(&app, &tv, room).await.is_empty());
    assert_eq!(
        body(
            app.get(&format!("/api/room_members/{room}"), Some(&tv))
                .await
        )
        .await,
        json!({"members": [victim]})
    );
    let v = body(app.get("/api/rooms", Some(&tv)).await).await;
    assert_eq!(v["rooms"].as_array().unwrap().len(), 1);
    assert_eq!(
        body(app.get("/api/inbox_count", Some(&tv)).await).await,
        json!({"inbox_count": 1})
    );
    assert_eq!(user_count(&app).await, "1");
}

// ---------------------------------------------------------------- 404 / 405

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405_with_json_errors() {
    let app = spawn_app().await;
    let (_, t) = app.new_user("nm").await;
    for path in [
        "/api/nope",
        "/nope",
        "/api/",
        "/api/user",
        "/api/get_posts",
        "/api/ping/extra",
    ] {
        let resp = app.get(path, Some(&t)).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        let err = assert_error(resp, StatusCode::NOT_FOUND).await;
        assert!(!err.is_empty());
    }
    let resp = app.post_json("/api/nope", Some(&t), json!({})).await;
    assert_error(resp, StatusCode::NOT_FOUND).await;

    let wrong: [(Method, &str); 10] = [
        (Method::GET, "/api/register"),
        (Method::GET, "/api/login"),
        (Method::GET, "/api/create_post"),
        (Method::GET, "/api/upload_file"),
        (Method::POST, "/api/ping"),
        (Method::POST, "/api/fyp"),
        (Method::POST, "/api/usercount"),
        (Method::PUT, "/api/user/settings"),
        (Method::DELETE, "/api/delete_inbox_message"),
        (Method::PATCH, "/api/get_post_by_id/1"),
    ];
    for (method, path) in wrong {
        let resp = app
            .client
            .request(method.clone(), app.url(path))
            .header("Authorization", &t)
            .send()
            .await
            .unwrap();
        let what = format!("{method} {path}");
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{what}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{what}"
        );
        assert_error(resp, StatusCode::METHOD_NOT_ALLOWED).await;
    }
}

// ---------------------------------------------------------------- list cursors

#[tokio::test]
async fn a_before_cursor_that_is_not_an_id_is_400_on_every_list() {
    let app = spawn_app().await;
    let (name, token) = app.new_user("cur").await;
    let post = app.create_post(&token, "listed").await;
    let lists = [
        format!("/api/get_posts/{name}"),
        format!("/api/get_replies/{post}"),
        format!("/api/get_followers/{name}"),
        format!("/api/get_following/{name}"),
        "/api/inbox".to_owned(),
    ];
    for path in &lists {
        for bad in ["abc", "-1", "1.5", "1e3"] {
            let resp = app.get(&format!("{path}?before={bad}"), Some(&token)).await;
            let err = assert_error(resp, StatusCode::BAD_REQUEST).await;
            assert!(err.contains("before"), "{path}?before={bad}: {err}");
        }
        let resp = app
            .get(&format!("{path}?before={}", post + 1), Some(&token))
            .await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
}
