//! `POST /api/delete_account`: the account and everything of it goes, and
//! every counter of the people and posts it touched stays right.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

async fn ok(app: &TestApp, path: &str, token: &str, request: Value) -> Value {
    let r = app.post_json(path, Some(token), request.clone()).await;
    let status = r.status();
    let value = body(r).await;
    assert!(status.is_success(), "{path} {request}: {status} {value}");
    value
}

async fn stats(app: &TestApp, name: &str) -> Value {
    let r = app.get(&format!("/api/user/{name}"), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    body(r).await["stats"].clone()
}

/// `POST /api/delete_account` with `password`.
pub(crate) async fn delete_account(
    app: &TestApp,
    token: &str,
    password: &str,
) -> reqwest::Response {
    app.post_json(
        "/api/delete_account",
        Some(token),
        json!({ "password": password }),
    )
    .await
}

#[tokio::test]
async fn deleting_an_account_erases_its_data_and_keeps_every_counter_right() {
    let app = spawn_app().await;
    let (victim, vt) = app.new_user("gone").await;
    let second_session = app.login(&victim).await;
    let (ann, at) = app.new_user("ann").await;
    let (bob, bt) = app.new_user("bob").await;

    // Follows both ways.
    ok(&app, "/api/follow", &vt, json!({ "username": ann })).await;
    ok(&app, "/api/follow", &bt, json!({ "username": victim })).await;
    ok(&app, "/api/follow", &bt, json!({ "username": ann })).await;

    // Votes and replies on someone else's post, including a reply to the
    // victim's reply (it goes with it).
    let ann_post = app.create_post(&at, "ann's post #annstag").await;
    ok(
        &app,
        "/api/vote_post",
        &vt,
        json!({"post_id": ann_post, "vote_type": "up"}),
    )
    .await;
    ok(
        &app,
        "/api/vote_post",
        &bt,
        json!({"post_id": ann_post, "vote_type": "down"}),
    )
    .await;
    let victim_reply = ok(
        &app,
        "/api/reply_to_post",
        &vt,
        json!({"post_id": ann_post, "content": "victim's reply"}),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    ok(
        &app,
        "/api/reply_to_post",
        &bt,
        json!({"post_id": ann_post, "content": "answering the victim", "parent_id": victim_reply}),
    )
    .await;
    ok(
        &app,
        "/api/reply_to_post",
        &at,
        json!({"post_id": ann_post, "content": "ann's own reply"}),
    )
    .await;
    assert_eq!(post_counts(&app, ann_post).await, (1, 1, 3));

    // The victim's own posts, voted and replied on by others, with a tag
    // that trends.
    let victim_posts = [
        app.create_post(&vt, "first #victimtag").await,
        app.create_post(&vt, "second #victimtag").await,
    ];
    ok(
        &app,
        "/api/vote_post",
        &at,
        json!({"post_id": victim_posts[0], "vote_type": "up"}),
    )
    .await;
    ok(
        &app,
        "/api/reply_to_post",
        &at,
        json!({"post_id": victim_posts[0], "content": "ann replies to the victim"}),
    )
    .await;
    let trending = body(app.get("/api/fyp", Some(&at)).await).await["trending_topics"].clone();
    assert_eq!(trending, json!(["#victimtag", "#annstag"]));

    // Direct messages both ways.
    ok(
        &app,
        "/api/send_inbox_message",
        &vt,
        json!({"recipient": ann, "message": "from victim"}),
    )
    .await;
    ok(
        &app,
        "/api/send_inbox_message",
        &at,
        json!({"recipient": victim, "message": "to victim"}),
    )
    .await;
    ok(
        &app,
        "/api/send_inbox_message",
        &bt,
        json!({"recipient": ann, "message": "from bob"}),
    )
    .await;
    // Counted once before the deletion, so that a count kept in memory
    // would show if it outlived the victim's messages.
    assert_eq!(
        body(app.get("/api/inbox_count", Some(&at)).await).await["inbox_count"],
        3
    );

    // A room shared with ann (it stays, hers now), a room of the victim's
    // own (it goes), messages and uploads.
    let shared = ok(
        &app,
        "/api/create_room",
        &vt,
        json!({"room_name": "Shared"}),
    )
    .await["room_id"]
        .as_i64()
        .unwrap();
    let solo = ok(
        &app,
        "/api/create_room",
        &vt,
        json!({"room_name": "Solo", "is_private": 1, "password": "secret"}),
    )
    .await["room_id"]
        .as_i64()
        .unwrap();
    ok(
        &app,
        "/api/join_room",
        &at,
        json!({"room_id": shared, "password": ""}),
    )
    .await;
    // Read once before the deletion, so that a list kept in memory would
    // show if it outlived the account.
    let members = body(
        app.get(&format!("/api/room_members/{shared}"), Some(&at))
            .await,
    )
    .await;
    assert_eq!(members["members"], json!([victim, ann]));
    ok(
        &app,
        "/api/send_room_message",
        &vt,
        json!({"room_id": shared, "message": "victim says hi"}),
    )
    .await;
    ok(
        &app,
        "/api/send_room_message",
        &at,
        json!({"room_id": shared, "message": "ann says hi"}),
    )
    .await;
    let victim_file = app
        .upload(&vt, shared, "victim.txt", b"victim's bytes")
        .await;
    let solo_file = app.upload(&vt, solo, "solo.txt", b"solo bytes").await;
    let ann_file = app.upload(&at, shared, "ann.txt", b"ann's bytes").await;
    for url in [&victim_file, &solo_file, &ann_file] {
        assert_eq!(
            app.client.get(url).send().await.unwrap().status(),
            StatusCode::OK
        );
    }

    let users_before: i64 = app
        .get("/api/usercount", None)
        .await
        .text()
        .await
        .unwrap()
        .parse()
        .unwrap();
    let r = delete_account(&app, &vt, "password123").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await, json!({"message": "account deleted"}));

    // Every session is dead at once.
    for token in [&vt, &second_session] {
        let r = app.get("/api/fyp", Some(token)).await;
        assert_error(r, StatusCode::UNAUTHORIZED).await;
    }
    let users_after: i64 = app
        .get("/api/usercount", None)
        .await
        .text()
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(users_after, users_before - 1);
    assert_error(
        app.get(&format!("/api/user/{victim}"), None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let login = app
        .post_json(
            "/api/login",
            None,
            json!({"username": victim, "password": "password123"}),
        )
        .await;
    assert_error(login, StatusCode::NOT_FOUND).await;

    // Counters of the others.
    assert_eq!(
        stats(&app, &ann).await,
        json!({"followers": 1, "following": 0, "posts": 1, "upvotes": 0, "downvotes": 1})
    );
    assert_eq!(
        stats(&app, &bob).await,
        json!({"followers": 0, "following": 1, "posts": 0, "upvotes": 0, "downvotes": 0})
    );
    assert_eq!(post_counts(&app, ann_post).await, (0, 1, 1));
    let replies = body(app.get(&format!("/api/get_replies/{ann_post}"), None).await).await;
    let replies = replies["replies"].as_array().unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0]["content"], "ann's own reply");
    let followers = body(app.get(&format!("/api/get_followers/{ann}"), None).await).await;
    assert_eq!(
        followers["followers"],
        json!([{"username": bob, "avatar_url": ""}])
    );

    // The victim's posts, trending tag, messages and files are gone.
    for post in victim_posts {
        let r = app.get(&format!("/api/get_post_by_id/{post}"), None).await;
        assert_error(r, StatusCode::NOT_FOUND).await;
        let r = app.get(&format!("/api/get_replies/{post}"), None).await;
        assert_error(r, StatusCode::NOT_FOUND).await;
    }
    let feed = body(app.get("/api/fyp", Some(&at)).await).await;
    assert_eq!(feed["trending_topics"], json!(["#annstag"]));
    assert!(
        feed["posts"].as_array().unwrap().is_empty(),
        "only ann's own post is left: {feed}"
    );
    // The victim's name, looked up (and kept in memory) when ann wrote to
    // them, leads nowhere now.
    let r = app
        .post_json(
            "/api/send_inbox_message",
            Some(&at),
            json!({"recipient": victim, "message": "anyone there?"}),
        )
        .await;
    assert_eq!(
        assert_error(r, StatusCode::NOT_FOUND).await,
        "recipient not found"
    );
    let inbox = body(app.get("/api/inbox", Some(&at)).await).await;
    let inbox = inbox["messages"].as_array().unwrap();
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert_eq!(inbox[0]["sender"], bob.as_str());
    assert_eq!(
        body(app.get("/api/inbox_count", Some(&at)).await).await["inbox_count"],
        1
    );

    let members = body(
        app.get(&format!("/api/room_members/{shared}"), Some(&at))
            .await,
    )
    .await;
    assert_eq!(members["members"], json!([ann]));
    let messages = body(
        app.get(
            &format!("/api/get_room_messages?room_id={shared}"),
            Some(&at),
        )
        .await,
    )
    .await;
    let senders: Vec<&str> = messages["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["username"].as_str().unwrap())
        .collect();
    assert_eq!(senders, [ann.as_str(), ann.as_str()], "{messages}");
    let r = app
        .post_json(
            "/api/join_room",
            Some(&bt),
            json!({"room_id": solo, "password": "secret"}),
        )
        .await;
    assert_error(r, StatusCode::NOT_FOUND).await;
    for url in [&victim_file, &solo_file] {
        let r = app.client.get(url).send().await.unwrap();
        assert_error(r, StatusCode::NOT_FOUND).await;
    }
    let r = app.client.get(&ann_file).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"ann's bytes");

    // The name is free again, for a new account with nothing of the old one.
    assert_eq!(app.register(&victim).await.status(), StatusCode::CREATED);
    let newcomer = app.login(&victim).await;
    assert_eq!(
        stats(&app, &victim).await,
        json!({"followers": 0, "following": 0, "posts": 0, "upvotes": 0, "downvotes": 0})
    );
    let posts = body(app.get(&format!("/api/get_posts/{victim}"), None).await).await;
    assert_eq!(posts["posts"], json!([]));
    let inbox = body(app.get("/api/inbox", Some(&newcomer)).await).await;
    assert_eq!(inbox["messages"], json!([]));
    let rooms = body(app.get("/api/user_rooms", Some(&newcomer)).await).await;
    assert_eq!(rooms["rooms"], json!([]));
    let check = body(
        app.get(
            &format!("/api/check_follow?username={ann}"),
            Some(&newcomer),
        )
        .await,
    )
    .await;
    assert_eq!(check["is_following"], false);
}

#[tokio::test]
async fn delete_account_status_codes() {
    let app = spawn_app().await;
    let (name, token) = app.new_user("del").await;

    let r = delete_account(&app, "not-a-token", "password123").await;
    assert_error(r, StatusCode::UNAUTHORIZED).await;
    let r = app
        .post_json(
            "/api/delete_account",
            None,
            json!({"password": "password123"}),
        )
        .await;
    assert_error(r, StatusCode::UNAUTHORIZED).await;

    let r = app
        .post_json("/api/delete_account", Some(&token), json!({}))
        .await;
    assert_eq!(
        assert_error(r, StatusCode::BAD_REQUEST).await,
        "password is required"
    );
    let r = app
        .post_json(
            "/api/delete_account",
            Some(&token),
            json!({"password": 12345678}),
        )
        .await;
    assert_error(r, StatusCode::BAD_REQUEST).await;
    let r = app
        .client
        .post(app.url("/api/delete_account"))
        .header("Authorization", &token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST).await;

    let r = delete_account(&app, &token, "wrong password").await;
    assert_eq!(
        assert_error(r, StatusCode::UNAUTHORIZED).await,
        "wrong password"
    );
    // Nothing happened: the account and the token still work.
    assert_eq!(
        app.get(&format!("/api/user/{name}"), None).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get("/api/fyp", Some(&token)).await.status(),
        StatusCode::OK
    );

    let r = delete_account(&app, &token, "password123").await;
    assert_eq!(r.status(), StatusCode::OK);
    // The token died with the account.
    let r = delete_account(&app, &token, "password123").await;
    assert_error(r, StatusCode::UNAUTHORIZED).await;
}

/// Votes and follows by others on the posts and people the deleted user
/// touched, racing the deletion: every acknowledged one is counted, the
/// deleted user's are not.
#[tokio::test]
async fn counters_stay_right_when_others_write_during_the_deletion() {
    const OTHERS: usize = 8;
    let app = spawn_app().await;
    let (ann, at) = app.new_user("annrace").await;
    let (victim, vt) = app.new_user("gonerace").await;
    let ann_posts = [
        app.create_post(&at, "one").await,
        app.create_post(&at, "two").await,
    ];
    for post in ann_posts {
        ok(
            &app,
            "/api/vote_post",
            &vt,
            json!({"post_id": post, "vote_type": "up"}),
        )
        .await;
        ok(
            &app,
            "/api/reply_to_post",
            &vt,
            json!({"post_id": post, "content": "mine"}),
        )
        .await;
    }
    ok(&app, "/api/follow", &vt, json!({ "username": ann })).await;
    let victim_post = app.create_post(&vt, "victim's post").await;
    let mut others = Vec::new();
    for _ in 0..OTHERS {
        others.push(app.new_user("racer").await.1);
    }

    let writes = others.iter().enumerate().map(|(i, token)| {
        let app = &app;
        let victim = victim.clone();
        let ann = ann.clone();
        async move {
            let vote = app
                .post_json(
                    "/api/vote_post",
                    Some(token),
                    json!({"post_id": ann_posts[i % 2], "vote_type": "up"}),
                )
                .await
                .status();
            let reply = app
                .post_json(
                    "/api/reply_to_post",
                    Some(token),
                    json!({"post_id": ann_posts[i % 2], "content": "racing"}),
                )
                .await
                .status();
            let follow_ann = app
                .post_json("/api/follow", Some(token), json!({ "username": ann }))
                .await
                .status();
            // These race the deletion: before it they succeed, after it
            // the post or the user is not found.
            let follow_victim = app
                .post_json("/api/follow", Some(token), json!({ "username": victim }))
                .await
                .status();
            let vote_victim = app
                .post_json(
                    "/api/vote_post",
                    Some(token),
                    json!({"post_id": victim_post, "vote_type": "down"}),
                )
                .await
                .status();
            (vote, reply, follow_ann, follow_victim, vote_victim)
        }
    });
    let deletion = async {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        delete_account(&app, &vt, "password123").await.status()
    };
    let (statuses, deleted) = tokio::join!(futures_util::future::join_all(writes), deletion);
    assert_eq!(deleted, StatusCode::OK);
    for (vote, reply, follow_ann, follow_victim, vote_victim) in statuses {
        assert_eq!(vote, StatusCode::OK);
        assert_eq!(reply, StatusCode::CREATED);
        assert_eq!(follow_ann, StatusCode::OK);
        assert!(
            [StatusCode::OK, StatusCode::NOT_FOUND].contains(&follow_victim),
            "follow of the deleted user: {follow_victim}"
        );
        assert!(
            [StatusCode::OK, StatusCode::NOT_FOUND].contains(&vote_victim),
            "vote on the deleted user's post: {vote_victim}"
        );
    }

    // Every racer's vote and reply counts; the victim's do not.
    let per_post = (OTHERS / 2) as i64;
    for post in ann_posts {
        assert_eq!(post_counts(&app, post).await, (per_post, 0, per_post));
    }
    assert_eq!(
        stats(&app, &ann).await,
        json!({"followers": OTHERS, "following": 0, "posts": 2, "upvotes": OTHERS, "downvotes": 0})
    );
    let racer_names: Vec<String> = {
        let v = body(app.get(&format!("/api/get_followers/{ann}"), None).await).await;
        v["followers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["username"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(racer_names.len(), OTHERS);
    for name in racer_names {
        // Following ann only: a follow of the deleted user went with it.
        assert_eq!(
            stats(&app, &name).await,
            json!({"followers": 0, "following": 1, "posts": 0, "upvotes": 0, "downvotes": 0})
        );
    }
}

/// Writes still in flight when their account is deleted end as if their
/// session had ended first (401), never as a server error. Several clients
/// post back to back while the account goes, so some writes are
/// authenticated just before the deletion and stored just after it.
#[tokio::test]
async fn writes_racing_an_account_deletion_get_401_not_500() {
    let app = spawn_app().await;
    let (_, token) = app.new_user("racer").await;
    let (bystander, bystander_token) = app.new_user("bystander").await;
    let mut targets = Vec::new();
    for n in 0..16 {
        targets.push(
            app.create_post(&bystander_token, &format!("race {n}"))
                .await,
        );
    }
    let room = app.create_room(&bystander_token, "raceroom", None).await;
    ok(&app, "/api/join_room", &token, json!({ "room_id": room })).await;
    // The clients post, send direct messages, reply to the bystander's
    // posts and upload into the bystander's room. On PostgreSQL posts and
    // replies lock rows in the deletion's order (before, both deadlocked
    // with it); a write whose user row or room membership is gone is a 401
    // from the store or from the HTTP layer that finds the session gone.
    let writer = |n: usize| {
        let (app, token, bystander, targets) = (&app, &token, &bystander, &targets);
        async move {
            let mut statuses = Vec::new();
            // Bounded in count; ends at the first answer that is not a success.
            for i in 0..2_000 {
                let content = format!("racing {n} {i}");
                let post = |path, request| app.post_json(path, Some(token), request);
                let response = match n % 4 {
                    0 => post("/api/create_post", json!({ "content": content })).await,
                    1 => {
                        let request = json!({ "recipient": bystander, "message": content });
                        post("/api/send_inbox_message", request).await
                    }
                    2 => {
                        let request = json!({ "post_id": targets[n], "content": content });
                        post("/api/reply_to_post", request).await
                    }
                    _ => {
                        app.send_upload(token, room, "race.txt", content.as_bytes())
                            .await
                    }
                };
                let status = response.status();
                statuses.push(status);
                if !status.is_success() {
                    break;
                }
            }
            statuses
        }
    };
    let clients = futures_util::future::join_all((0..16).map(writer));
    assert_success_or_401_while_deleted(&app, &token, 50, clients).await;
}

/// Runs `clients` (each a list of answers) while `token`'s account is
/// deleted `delay_ms` after they start, and checks that the deletion
/// succeeded and that every answer was a success or 401, with a 401 among
/// them.
async fn assert_success_or_401_while_deleted(
    app: &TestApp,
    token: &str,
    delay_ms: u64,
    clients: impl std::future::Future<Output = Vec<Vec<StatusCode>>>,
) {
    let deletion = async {
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        delete_account(app, token, "password123").await.status()
    };
    let (statuses, deleted) = tokio::join!(clients, deletion);
    assert_eq!(deleted, StatusCode::OK);
    let statuses: Vec<StatusCode> = statuses.into_iter().flatten().collect();
    let errors: Vec<&StatusCode> = statuses
        .iter()
        .filter(|&&s| !s.is_success() && s != StatusCode::UNAUTHORIZED)
        .collect();
    assert!(
        errors.is_empty(),
        "{errors:?} among {} requests",
        statuses.len()
    );
    assert!(statuses.contains(&StatusCode::UNAUTHORIZED));
}

/// Votes sent while their voter's account is deleted: each is counted or
/// answered 401, and the deletion succeeds. On PostgreSQL a voter's first
/// vote on a post by someone the deletion has already locked (here: people
/// the voter follows) deadlocked with it, and one side failed with a 500;
/// the store now runs such a transaction again.
#[tokio::test]
async fn votes_racing_their_voter_s_deletion_get_401_not_500() {
    const CLIENTS: usize = 16;
    let app = spawn_app().await;
    let (_, token) = app.new_user("voteracer").await;
    let authors = futures_util::future::join_all((0..8).map(|a| {
        let app = &app;
        async move {
            let (name, author_token) = app.new_user("followed").await;
            let mut posts = Vec::new();
            for n in 0..100 {
                posts.push(app.create_post(&author_token, &format!("{a} {n}")).await);
            }
            (name, posts)
        }
    }))
    .await;
    for (name, _) in &authors {
        ok(&app, "/api/follow", &token, json!({ "username": name })).await;
    }
    let posts: Vec<i64> = authors.into_iter().flat_map(|(_, posts)| posts).collect();
    // Each client first votes once on each of its posts (first votes: a
    // vote on a post the voter has voted on waits for the deletion
    // instead), then keeps moving those votes until the deletion answers
    // its votes 401: had every client finished its first votes before the
    // deletion, no request would have raced it (this test once failed so).
    // Bounded in count; ends at the first answer that is not a success.
    let voter = |n: usize| {
        let (app, token, posts) = (&app, &token, &posts);
        async move {
            let mine: Vec<i64> = posts.iter().skip(n).step_by(CLIENTS).copied().collect();
            let mut statuses = Vec::new();
            for (i, post) in mine.iter().cycle().take(mine.len() * 40).enumerate() {
                let (pass, at) = (i / mine.len(), i % mine.len());
                let kind = if (pass + at) % 2 == 0 { "up" } else { "down" };
                let request = json!({ "post_id": post, "vote_type": kind });
                let status = app
                    .post_json("/api/vote_post", Some(token), request)
                    .await
                    .status();
                statuses.push(status);
                if !status.is_success() {
                    break;
                }
            }
            statuses
        }
    };
    let clients = futures_util::future::join_all((0..CLIENTS).map(voter));
    assert_success_or_401_while_deleted(&app, &token, 30, clients).await;
}

/// Creates a post, a reply to it, a room and a direct message to
/// `recipient` as the holder of `token`: their ids.
async fn new_ids(app: &TestApp, token: &str, recipient: &str) -> [i64; 4] {
    let post = app.create_post(token, "newest").await;
    let reply = ok(
        app,
        "/api/reply_to_post",
        token,
        json!({ "post_id": post, "content": "newest reply" }),
    )
    .await["id"]
        .as_i64()
        .expect("reply id");
    let room = app.create_room(token, &unique_name("idroom"), None).await;
    ok(
        app,
        "/api/send_inbox_message",
        token,
        json!({ "recipient": recipient, "message": "newest message" }),
    )
    .await;
    let inbox = body(app.get("/api/inbox", Some(token)).await).await;
    let message = inbox["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["id"].as_i64())
        .max()
        .expect("a message");
    [post, reply, room, message]
}

/// The ids of rows an account deletion removed are not given to new rows,
/// also after a restart: SQLite gives a new row its table's highest id plus
/// one, so the deleted user's newest post, reply, room and message ids
/// would otherwise come back, and a client holding one would find someone
/// else's post or room there.
#[tokio::test]
async fn ids_freed_by_an_account_deletion_are_not_given_again() {
    let mut app = spawn_app().await;
    let (keeper, keeper_token) = app.new_user("keeper").await;
    for restart in [false, true] {
        let (_, leaver_token) = app.new_user("leaver").await;
        let freed = new_ids(&app, &leaver_token, &keeper).await;
        let deleted = delete_account(&app, &leaver_token, "password123").await;
        assert_eq!(deleted.status(), StatusCode::OK);
        if restart {
            app.restart().await;
        }
        let given = new_ids(&app, &keeper_token, &keeper).await;
        for (kind, (freed, given)) in ["post", "reply", "room", "message"]
            .iter()
            .zip(freed.iter().zip(given))
        {
            assert!(
                given > *freed,
                "a new {kind} got id {given}, at or below the deleted {freed} (restart: {restart})"
            );
        }
    }
}

/// Only a request that passed authentication can have had its session end
/// while it ran: a public answer stays what it is for a client that sends a
/// stale token along (as web clients do with every request).
#[tokio::test]
async fn a_stale_token_does_not_turn_public_answers_into_401() {
    let app = spawn_app().await;
    let (_, token) = app.new_user("stale").await;
    let deleted = delete_account(&app, &token, "password123").await;
    assert_eq!(deleted.status(), StatusCode::OK);
    let missing_post = app.get("/api/get_post_by_id/999999", Some(&token)).await;
    assert_error(missing_post, StatusCode::NOT_FOUND).await;
    let missing_user = app.get("/api/user/nobody_here", Some(&token)).await;
    assert_error(missing_user, StatusCode::NOT_FOUND).await;
    let login = app
        .post_json(
            "/api/login",
            Some(&token),
            json!({ "username": "nobody_here", "password": "password123" }),
        )
        .await;
    assert_error(login, StatusCode::NOT_FOUND).await;
}
