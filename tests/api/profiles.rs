use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn a_new_profile_has_empty_text_and_zero_stats() {
    let app = spawn_app().await;
    let (name, _) = app.new_user("prof").await;
    let resp = app
        .get(&format!("/api/user/{}", name.to_uppercase()), None)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v = body(resp).await;
    assert_eq!(v["username"], name.as_str());
    assert_eq!(v["description"], "");
    assert_eq!(v["custom_css"], "");
    assert_eq!(v["stats"]["followers"], 0);
    assert!(v.get("email").is_none());
    assert_error(
        app.get("/api/user/nobody_here", None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn following_updates_both_counters_and_can_be_undone() {
    let app = spawn_app().await;
    let (a, ta) = app.new_user("fa").await;
    let (b, _) = app.new_user("fb").await;
    let resp = app
        .post_json("/api/follow", Some(&ta), json!({"username": b}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body(resp).await["message"], format!("now following {b}"));
    let again = app
        .post_json("/api/follow", Some(&ta), json!({"username": b}))
        .await;
    assert_error(again, StatusCode::BAD_REQUEST).await;
    let me = app
        .post_json("/api/follow", Some(&ta), json!({"username": a}))
        .await;
    assert_error(me, StatusCode::BAD_REQUEST).await;
    let ghost = app
        .post_json("/api/follow", Some(&ta), json!({"username": "ghost_x"}))
        .await;
    assert_error(ghost, StatusCode::NOT_FOUND).await;
    let anon = app
        .post_json("/api/follow", None, json!({"username": b}))
        .await;
    assert_error(anon, StatusCode::UNAUTHORIZED).await;

    let v = body(app.get(&format!("/api/user/{b}"), None).await).await;
    assert_eq!(v["stats"]["followers"], 1);
    let v = body(app.get(&format!("/api/get_followers/{b}"), None).await).await;
    assert_eq!(v["followers"][0]["username"], a.as_str());
    let v = body(
        app.get(&format!("/api/check_follow?username={b}"), Some(&ta))
            .await,
    )
    .await;
    assert_eq!(v["is_following"], true);

    let resp = app
        .post_json("/api/unfollow", Some(&ta), json!({"username": b}))
        .await;
    assert_eq!(body(resp).await["message"], format!("unfollowed {b}"));
    let resp = app
        .post_json("/api/unfollow", Some(&ta), json!({"username": b}))
        .await;
    assert_error(resp, StatusCode::BAD_REQUEST).await;
    let v = body(app.get(&format!("/api/user/{a}"), None).await).await;
    assert_eq!(v["stats"]["following"], 0);
}

#[tokio::test]
async fn a_password_change_ends_the_other_sessions_only() {
    let app = spawn_app().await;
    let (name, keep) = app.new_user("pw").await;
    let other = app.login(&name).await;
    // Used once before, so the server has resolved (and may cache) it.
    let r = app.get("/api/inbox_count", Some(&other)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let resp = app
        .post_json(
            "/api/user/settings",
            Some(&keep),
            json!({"password": "newpassword1", "description": "hi"}),
        )
        .await;
    assert_eq!(body(resp).await["message"], "settings updated successfully");
    let nothing = app
        .post_json("/api/user/settings", Some(&keep), json!({}))
        .await;
    assert_error(nothing, StatusCode::BAD_REQUEST).await;
    let gone = app
        .post_json("/api/follow", Some(&other), json!({"username": "x"}))
        .await;
    assert_error(gone, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn malformed_bodies_are_json_400s_and_big_ones_413() {
    let app = spawn_app().await;
    let resp = app
        .client
        .post(app.url("/api/register"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::BAD_REQUEST).await;
    let resp = app
        .post_json("/api/register", None, json!({"username": 5}))
        .await;
    assert!(
        assert_error(resp, StatusCode::BAD_REQUEST)
            .await
            .contains("username")
    );
    let big = "x".repeat(70_000);
    let resp = app
        .post_json("/api/follow", None, json!({"username": big}))
        .await;
    assert_error(resp, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_error(app.get("/api/nope", None).await, StatusCode::NOT_FOUND).await;
    assert_error(
        app.get("/api/follow", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
}

#[tokio::test]
async fn concurrent_follows_keep_counters_in_agreement() {
    let app = spawn_app().await;
    let (star, _) = app.new_user("star").await;
    let mut fans = Vec::new();
    for _ in 0..24 {
        fans.push(app.new_user("fan").await.1);
    }
    let follows = fans
        .iter()
        .map(|t| app.post_json("/api/follow", Some(t), json!({"username": star})));
    for resp in futures_util::future::join_all(follows).await {
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let unfollows = fans[..10]
        .iter()
        .map(|t| app.post_json("/api/unfollow", Some(t), json!({"username": star})));
    for resp in futures_util::future::join_all(unfollows).await {
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let v = body(app.get(&format!("/api/user/{star}"), None).await).await;
    assert_eq!(v["stats"]["followers"], 14);
    let list = body(
        app.get(&format!("/api/get_followers/{star}?limit=10"), None)
            .await,
    )
    .await;
    assert_eq!(list["followers"].as_array().unwrap().len(), 10);
    let next = list["next"].as_i64().unwrap();
    let rest = body(
        app.get(&format!("/api/get_followers/{star}?before={next}"), None)
            .await,
    )
    .await;
    assert_eq!(rest["followers"].as_array().unwrap().len(), 4);
    assert!(rest["next"].is_null());
}

#[tokio::test]
async fn a_new_avatar_shows_at_once_where_the_old_one_was_listed() {
    let app = spawn_app().await;
    let (a, ta) = app.new_user("av").await;
    let (b, tb) = app.new_user("aw").await;
    let resp = app
        .post_json("/api/follow", Some(&ta), json!({"username": b}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let post_id = body(
        app.post_json("/api/create_post", Some(&tb), json!({"content": "hi"}))
            .await,
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let resp = app
        .post_json(
            "/api/reply_to_post",
            Some(&ta),
            json!({"post_id": post_id, "content": "yo"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = app
        .post_json(
            "/api/send_inbox_message",
            Some(&ta),
            json!({"recipient": a, "message": "note to self"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let replies = format!("/api/get_replies/{post_id}");
    let listed = |v: &Value, list: &str| v[list][0]["avatar_url"].clone();
    // Listed (and so remembered) with the old avatar first.
    let v = body(app.get(&replies, None).await).await;
    assert_eq!(listed(&v, "replies"), "");
    let v = body(app.get("/api/inbox", Some(&ta)).await).await;
    assert_eq!(listed(&v, "messages"), "");
    let followers = format!("/api/get_followers/{b}");
    let v = body(app.get(&followers, None).await).await;
    assert_eq!(listed(&v, "followers"), "");

    let resp = app
        .post_json(
            "/api/user/settings",
            Some(&ta),
            json!({"avatar_url": "https://example.org/new.png"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v = body(app.get(&replies, None).await).await;
    assert_eq!(listed(&v, "replies"), "https://example.org/new.png");
    let v = body(app.get("/api/inbox", Some(&ta)).await).await;
    assert_eq!(listed(&v, "messages"), "https://example.org/new.png");
    assert_eq!(v["messages"].as_array().unwrap().len(), 1);
    let v = body(app.get(&followers, None).await).await;
    assert_eq!(listed(&v, "followers"), "https://example.org/new.png");
}

#[tokio::test]
async fn follow_lists_follow_every_follow_and_unfollow() {
    let app = spawn_app().await;
    let (a, _) = app.new_user("la").await;
    let (b, tb) = app.new_user("lb").await;
    let (c, tc) = app.new_user("lc").await;
    let names = |list: &'static str, path: String| {
        let app = &app;
        async move {
            body(app.get(&path, None).await).await[list]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["username"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let followers_of_a = || names("followers", format!("/api/get_followers/{a}"));
    let followed_by_b = || names("following", format!("/api/get_following/{b}"));
    let follow = |token: &String, name: &String, path: &'static str| {
        let app = &app;
        let (token, name) = (token.clone(), name.clone());
        async move {
            let r = app
                .post_json(path, Some(&token), json!({ "username": name }))
                .await;
            assert_eq!(r.status(), StatusCode::OK, "{path} {name}");
        }
    };
    // Every read below follows a change to a list read just before it (the
    // SQLite store keeps each newest page in memory), most recent first.
    assert!(followers_of_a().await.is_empty());
    assert!(followed_by_b().await.is_empty());
    follow(&tb, &a, "/api/follow").await;
    assert_eq!(followers_of_a().await, [b.as_str()]);
    assert_eq!(followed_by_b().await, [a.as_str()]);
    follow(&tc, &a, "/api/follow").await;
    follow(&tb, &c, "/api/follow").await;
    assert_eq!(followers_of_a().await, [c.as_str(), b.as_str()]);
    assert_eq!(followed_by_b().await, [c.as_str(), a.as_str()]);
    // A page of another size is its own.
    let one = names("followers", format!("/api/get_followers/{a}?limit=1")).await;
    assert_eq!(one, [c.as_str()]);
    follow(&tb, &a, "/api/unfollow").await;
    assert_eq!(followers_of_a().await, [c.as_str()]);
    assert_eq!(followed_by_b().await, [c.as_str()]);
    // A refused follow changes nothing.
    let r = app
        .post_json("/api/follow", Some(&tc), json!({ "username": a }))
        .await;
    assert_error(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(followers_of_a().await, [c.as_str()]);
    follow(&tb, &a, "/api/follow").await;
    assert_eq!(followers_of_a().await, [b.as_str(), c.as_str()]);
}

/// The SQLite store keeps each newest page of followers and followees both
/// rendered and as ids; an avatar change drops every rendering but keeps
/// the ids, so the reads after it build their pages from the ids and the
/// users' cards. Those pages must be the ones the database gives.
#[tokio::test]
async fn follow_pages_rebuilt_from_their_ids_are_whole_and_current() {
    let app = spawn_app().await;
    let (a, ta) = app.new_user("ia").await;
    let (b, tb) = app.new_user("ib").await;
    let (c, tc) = app.new_user("ic").await;
    let (_, te) = app.new_user("ie").await;
    for (token, name) in [(&tb, &a), (&tc, &a), (&tb, &c), (&ta, &c)] {
        let r = app
            .post_json("/api/follow", Some(token), json!({ "username": name }))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    let set_avatar = |token: &String, url: &'static str| {
        let (app, token) = (&app, token.clone());
        async move {
            let r = app
                .post_json(
                    "/api/user/settings",
                    Some(&token),
                    json!({ "avatar_url": url }),
                )
                .await;
            assert_eq!(r.status(), StatusCode::OK);
        }
    };
    set_avatar(&tc, "https://example.org/c.png").await;
    // One page per list: a user's pages of two sizes share one entry.
    let pages = [
        format!("/api/get_followers/{a}"),
        format!("/api/get_following/{b}?limit=1"),
        format!("/api/get_followers/{c}"),
    ];
    let read_all = || {
        let (app, pages) = (&app, pages.clone());
        async move {
            let mut read = Vec::new();
            for path in &pages {
                read.push(body(app.get(path, None).await).await);
            }
            read
        }
    };
    let first = read_all().await;
    assert_eq!(
        first[0]["followers"],
        json!([
            {"username": c, "avatar_url": "https://example.org/c.png"},
            {"username": b, "avatar_url": ""},
        ])
    );
    assert!(first[0]["next"].is_null());
    assert_eq!(
        first[1]["following"],
        json!([{"username": c, "avatar_url": "https://example.org/c.png"}])
    );
    assert!(first[1]["next"].is_i64());
    assert_eq!(first[2]["followers"][1]["username"], json!(b));

    // Someone listed nowhere changes their avatar: the same pages again,
    // twice (the first read renders them, the second reads the rendering).
    set_avatar(&te, "https://example.org/e.png").await;
    assert_eq!(read_all().await, first);
    assert_eq!(read_all().await, first);

    // A listed user's new avatar shows, the rest stays.
    set_avatar(&tb, "https://example.org/b.png").await;
    let read = read_all().await;
    assert_eq!(
        read[0]["followers"][1]["avatar_url"],
        "https://example.org/b.png"
    );
    assert_eq!(read[1], first[1]);
    assert_eq!(
        read[2]["followers"][1]["avatar_url"],
        "https://example.org/b.png"
    );
    set_avatar(&te, "https://example.org/e2.png").await;
    assert_eq!(read_all().await, read);

    // An unfollow shows on both of its lists.
    let r = app
        .post_json("/api/unfollow", Some(&tc), json!({ "username": a }))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    set_avatar(&te, "https://example.org/e3.png").await;
    let after = read_all().await;
    assert_eq!(after[0]["followers"].as_array().unwrap().len(), 1);
    assert_eq!(after[0]["followers"][0]["username"], json!(b));
    assert_eq!(after[1..], read[1..]);
}

/// The SQLite store keeps each profile in memory once read: every change
/// of its texts or counts must show, each read twice (the first read may
/// fill the cache, the second reads it).
#[tokio::test]
async fn profiles_follow_every_change_of_their_texts_and_counts() {
    let app = spawn_app().await;
    let (a, ta) = app.new_user("pa").await;
    let (b, tb) = app.new_user("pb").await;
    let profile_twice = |name: &String| {
        let (app, path) = (&app, format!("/api/user/{name}"));
        async move {
            let first = body(app.get(&path, None).await).await;
            assert_eq!(body(app.get(&path, None).await).await, first);
            first
        }
    };
    let stats = |followers: i64, following: i64, posts: i64, up: i64, down: i64| {
        json!({"followers": followers, "following": following, "posts": posts,
               "upvotes": up, "downvotes": down})
    };
    assert_eq!(profile_twice(&a).await["stats"], stats(0, 0, 0, 0, 0));
    assert_eq!(profile_twice(&b).await["stats"], stats(0, 0, 0, 0, 0));

    let r = app
        .post_json("/api/create_post", Some(&ta), json!({"content": "mine"}))
        .await;
    let post = body(r).await["id"].as_i64().unwrap();
    assert_eq!(profile_twice(&a).await["stats"], stats(0, 0, 1, 0, 0));
    for (vote, up, down) in [("up", 1, 0), ("down", 0, 1)] {
        let r = app
            .post_json(
                "/api/vote_post",
                Some(&tb),
                json!({"post_id": post, "vote_type": vote}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(profile_twice(&a).await["stats"], stats(0, 0, 1, up, down));
    }
    for (path, count) in [("/api/follow", 1), ("/api/unfollow", 0)] {
        let r = app.post_json(path, Some(&tb), json!({"username": a})).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(profile_twice(&a).await["stats"], stats(count, 0, 1, 0, 1));
        assert_eq!(profile_twice(&b).await["stats"], stats(0, count, 0, 0, 0));
    }
    let r = app
        .post_json(
            "/api/user/settings",
            Some(&ta),
            json!({"description": "new words", "avatar_url": "https://example.org/a.png"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    // Another read finds the user's card first.
    let r = app.get(&format!("/api/get_posts/{a}"), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v = profile_twice(&a).await;
    assert_eq!(
        (&v["description"], &v["avatar_url"]),
        (&json!("new words"), &json!("https://example.org/a.png"))
    );

    // A deleted account's follow and vote leave the counts of others.
    let r = app
        .post_json("/api/follow", Some(&tb), json!({"username": a}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(profile_twice(&a).await["stats"], stats(1, 0, 1, 0, 1));
    let r = crate::delete_account::delete_account(&app, &tb, "password123").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(profile_twice(&a).await["stats"], stats(0, 0, 1, 0, 0));

    // Gone with the account, and a new account under the name starts over.
    let r = crate::delete_account::delete_account(&app, &ta, "password123").await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app.get(&format!("/api/user/{a}"), None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.register(&a).await.status(), StatusCode::CREATED);
    let v = profile_twice(&a).await;
    assert_eq!(
        (&v["stats"], &v["description"]),
        (&stats(0, 0, 0, 0, 0), &json!(""))
    );
}

/// `GET /api/check_follow?username={name}` as the holder of `token`: the
/// status and `is_following`.
async fn check_follow(app: &TestApp, token: &str, name: &str) -> (StatusCode, Value) {
    let resp = app
        .get(&format!("/api/check_follow?username={name}"), Some(token))
        .await;
    let status = resp.status();
    (status, body(resp).await["is_following"].clone())
}

/// `check_follow` answers from memory once the follower's list and the
/// followee's card are cached: every change of the relation, and the
/// followee's deletion and a new account under the same name, must show.
#[tokio::test]
async fn check_follow_follows_every_change_of_the_relation() {
    let app = spawn_app().await;
    let (_, ta) = app.new_user("cfa").await;
    let (b, tb) = app.new_user("cfb").await;
    let following = |v: bool| (StatusCode::OK, json!(v));
    assert_eq!(check_follow(&app, &ta, &b).await, following(false));
    for (path, expected) in [
        ("/api/follow", true),
        ("/api/unfollow", false),
        ("/api/follow", true),
    ] {
        let resp = app.post_json(path, Some(&ta), json!({"username": b})).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        // Twice: the first answer may fill the caches, the second reads them.
        assert_eq!(check_follow(&app, &ta, &b).await, following(expected));
        assert_eq!(check_follow(&app, &ta, &b).await, following(expected));
    }
    let resp = crate::delete_account::delete_account(&app, &tb, "password123").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(check_follow(&app, &ta, &b).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.register(&b).await.status(), StatusCode::CREATED);
    assert_eq!(check_follow(&app, &ta, &b).await, following(false));
    assert_eq!(check_follow(&app, &ta, &b).await, following(false));
}
