use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn posting_voting_and_replying() {
    let app = spawn_app().await;
    let (a, ta) = app.new_user("pa").await;
    let (_, tb) = app.new_user("pb").await;
    let resp = app
        .post_json(
            "/api/create_post",
            Some(&ta),
            json!({"content": "Hello #Mirage"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let v = body(resp).await;
    assert_eq!(v["message"], "post created");
    let id = v["id"].as_i64().unwrap();

    let resp = app
        .post_json(
            "/api/vote_post",
            Some(&tb),
            json!({"post_id": id.to_string(), "vote_type": "up"}),
        )
        .await;
    assert_eq!(
        body(resp).await,
        json!({"message": "vote counted", "upvotes": 1, "downvotes": 0})
    );
    let again = app
        .post_json(
            "/api/vote_post",
            Some(&tb),
            json!({"post_id": id, "vote_type": "up"}),
        )
        .await;
    assert_error(again, StatusCode::BAD_REQUEST).await;
    let moved = app
        .post_json(
            "/api/vote_post",
            Some(&tb),
            json!({"post_id": id, "vote_type": "down"}),
        )
        .await;
    assert_eq!(body(moved).await["downvotes"], 1);
    let own = app
        .post_json(
            "/api/vote_post",
            Some(&ta),
            json!({"post_id": id, "vote_type": "up"}),
        )
        .await;
    assert_error(own, StatusCode::FORBIDDEN).await;
    let none = app
        .post_json(
            "/api/vote_post",
            Some(&tb),
            json!({"post_id": 999999, "vote_type": "up"}),
        )
        .await;
    assert_error(none, StatusCode::NOT_FOUND).await;
    let odd = app
        .post_json(
            "/api/vote_post",
            Some(&tb),
            json!({"post_id": id, "vote_type": "sideways"}),
        )
        .await;
    assert_error(odd, StatusCode::BAD_REQUEST).await;

    let v = body(app.get(&format!("/api/user/{a}"), None).await).await;
    assert_eq!(
        (
            v["stats"]["posts"].as_i64(),
            v["stats"]["downvotes"].as_i64()
        ),
        (Some(1), Some(1))
    );

    let r = app
        .post_json(
            "/api/reply_to_post",
            Some(&tb),
            json!({"post_id": id, "content": "nice"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let rid = body(r).await["id"].as_i64().unwrap();
    let nested = app
        .post_json(
            "/api/reply_to_post",
            Some(&ta),
            json!({"post_id": id, "content": "ty", "parent_id": rid}),
        )
        .await;
    assert_eq!(nested.status(), StatusCode::CREATED);
    let v = body(app.get(&format!("/api/get_replies/{id}"), None).await).await;
    assert_eq!(v["replies"][0]["parent_id"], rid);
    assert!(v["replies"][1]["parent_id"].is_null());
    assert_error(
        app.get("/api/get_replies/424242", None).await,
        StatusCode::NOT_FOUND,
    )
    .await;

    let v = body(app.get(&format!("/api/get_post_by_id/{id}"), None).await).await;
    assert_eq!(v["content"], "Hello #Mirage");
    assert_error(
        app.get("/api/get_post_by_id/abc", None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let long = app
        .post_json(
            "/api/create_post",
            Some(&ta),
            json!({"content": "é".repeat(513)}),
        )
        .await;
    assert_error(long, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn concurrent_votes_keep_counters_in_agreement() {
    let app = spawn_app().await;
    let (author, ta) = app.new_user("va").await;
    let id = body(
        app.post_json("/api/create_post", Some(&ta), json!({"content": "vote"}))
            .await,
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let mut voters = Vec::new();
    for _ in 0..24 {
        voters.push(app.new_user("vv").await.1);
    }
    let tasks = voters.iter().enumerate().map(|(i, t)| {
        let kind = if i % 3 == 0 { "down" } else { "up" };
        app.post_json(
            "/api/vote_post",
            Some(t),
            json!({"post_id": id, "vote_type": kind}),
        )
    });
    for resp in futures_util::future::join_all(tasks).await {
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let post = body(app.get(&format!("/api/get_post_by_id/{id}"), None).await).await;
    assert_eq!(
        (post["upvotes"].as_i64(), post["downvotes"].as_i64()),
        (Some(16), Some(8))
    );
    let prof = body(app.get(&format!("/api/user/{author}"), None).await).await;
    assert_eq!(
        (
            prof["stats"]["upvotes"].as_i64(),
            prof["stats"]["downvotes"].as_i64()
        ),
        (Some(16), Some(8))
    );
}

#[tokio::test]
async fn the_feed_mixes_followed_and_global_posts_with_trending_tags() {
    let app = spawn_app().await;
    let (_, viewer) = app.new_user("fv").await;
    let (friend, tf) = app.new_user("ff").await;
    let (stranger, ts) = app.new_user("fs").await;
    app.post_json("/api/follow", Some(&viewer), json!({"username": friend}))
        .await;
    for i in 0..20 {
        app.post_json(
            "/api/create_post",
            Some(&tf),
            json!({"content": format!("f{i} #rust")}),
        )
        .await;
        app.post_json(
            "/api/create_post",
            Some(&ts),
            json!({"content": format!("s{i} #tea #Rust")}),
        )
        .await;
    }
    app.post_json(
        "/api/create_post",
        Some(&viewer),
        json!({"content": "mine #solo"}),
    )
    .await;
    let resp = app.get("/api/fyp", Some(&viewer)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v = body(resp).await;
    let posts = v["posts"].as_array().unwrap();
    assert_eq!(posts.len(), 30);
    let from_friend = posts
        .iter()
        .filter(|p| p["username"] == friend.as_str())
        .count();
    assert!(from_friend >= 12, "{from_friend}");
    assert!(posts.iter().all(|p| p["content"] != "mine #solo"));
    let ids: Vec<i64> = posts.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]));
    assert_eq!(v["trending_topics"], json!(["#rust", "#tea", "#solo"]));
    // Served again, the posts come from the JSON the first feed kept:
    // the same, their authors' names included.
    let again = body(app.get("/api/fyp", Some(&viewer)).await).await;
    for post in again["posts"].as_array().unwrap() {
        let first = posts.iter().find(|p| p["id"] == post["id"]).unwrap();
        assert_eq!(post, first);
        assert!(post["username"] == friend.as_str() || post["username"] == stranger.as_str());
    }
    assert_error(app.get("/api/fyp", None).await, StatusCode::UNAUTHORIZED).await;
}

/// Votes `vote` ("up" or "down") on the post; the vote must be counted.
async fn vote_as(app: &TestApp, token: &str, post_id: i64, vote: &str) {
    let resp = app
        .post_json(
            "/api/vote_post",
            Some(token),
            json!({"post_id": post_id, "vote_type": vote}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "the {vote} vote");
}

/// Replies to the post; the reply must be created.
async fn reply_as(app: &TestApp, token: &str, post_id: i64, content: &str) {
    let resp = app
        .post_json(
            "/api/reply_to_post",
            Some(token),
            json!({"post_id": post_id, "content": content}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
}

async fn trending_for(app: &TestApp, token: &str) -> Value {
    body(app.get("/api/fyp", Some(token)).await).await["trending_topics"].clone()
}

#[tokio::test]
async fn trending_topics_count_new_posts_at_once_and_survive_a_restart() {
    let mut app = spawn_app().await;
    let (_, viewer) = app.new_user("tv").await;
    let (_, poster) = app.new_user("tp").await;
    assert_eq!(trending_for(&app, &viewer).await, json!([]));
    app.create_post(&poster, "#Alpha #beta").await;
    app.create_post(&poster, "#beta again").await;
    assert_eq!(
        trending_for(&app, &viewer).await,
        json!(["#beta", "#alpha"])
    );
    // Each new post moves the ranking on the very next read.
    app.create_post(&poster, "#gamma #alpha #Alpha").await;
    app.create_post(&poster, "#gamma").await;
    app.create_post(&poster, "#gamma").await;
    let expected = json!(["#gamma", "#alpha", "#beta"]);
    assert_eq!(trending_for(&app, &viewer).await, expected);
    app.restart().await;
    assert_eq!(trending_for(&app, &viewer).await, expected);
}

#[tokio::test]
async fn a_viewer_following_many_active_users_gets_their_newest_posts() {
    let app = spawn_app().await;
    let (_, viewer) = app.new_user("mv").await;
    let mut followees = Vec::new();
    for _ in 0..31 {
        let (name, token) = app.new_user("mf").await;
        app.post_json("/api/follow", Some(&viewer), json!({ "username": name }))
            .await;
        followees.push(token);
    }
    // Everyone posts once, the first 15 post again, then one of them six
    // more times (more posts than the server keeps in memory per user):
    // 52 posts, all followed, so the feed is exactly the 30 newest.
    let heavy = vec![followees[0].clone(); 6];
    let mut ids = Vec::new();
    for (round, posters) in [(0, &followees[..]), (1, &followees[..15]), (2, &heavy[..])] {
        for token in posters {
            let resp = app
                .post_json(
                    "/api/create_post",
                    Some(token),
                    json!({ "content": format!("r{round}") }),
                )
                .await;
            ids.push(body(resp).await["id"].as_i64().unwrap());
        }
    }
    ids.sort_unstable_by(|a, b| b.cmp(a));
    let v = body(app.get("/api/fyp", Some(&viewer)).await).await;
    let got: Vec<i64> = v["posts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    assert_eq!(got, ids[..30]);
}

#[tokio::test]
async fn the_feed_finds_followed_and_global_posts_after_a_restart() {
    let mut app = spawn_app().await;
    let (_, viewer) = app.new_user("rv").await;
    let (friend, friend_token) = app.new_user("rf").await;
    let (_, stranger_token) = app.new_user("rs").await;
    app.post_json("/api/follow", Some(&viewer), json!({ "username": friend }))
        .await;
    app.create_post(&friend_token, "followed before restart")
        .await;
    app.create_post(&stranger_token, "global before restart")
        .await;
    app.restart().await;
    app.create_post(&stranger_token, "global after restart")
        .await;
    let v = body(app.get("/api/fyp", Some(&viewer)).await).await;
    let contents: Vec<&str> = v["posts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        [
            "global after restart",
            "global before restart",
            "followed before restart"
        ]
    );
}

/// The votes on `post` as the viewer's feed shows them; `None` if it is not there.
async fn feed_counts(app: &TestApp, viewer: &str, post: i64) -> Option<(i64, i64)> {
    let v = body(app.get("/api/fyp", Some(viewer)).await).await;
    let posts = v["posts"].as_array().unwrap();
    assert_eq!(posts.len(), 30);
    posts.iter().find(|p| p["id"] == post).map(|p| {
        (
            p["upvotes"].as_i64().unwrap(),
            p["downvotes"].as_i64().unwrap(),
        )
    })
}

/// Posts older than the newest 1,000 make the feed's archive share. Here
/// there is one, so every feed shows it; a vote on it must show at once,
/// by id and in the next feed (the SQLite store keeps the rows of posts
/// it read in memory: the feed put this one there).
#[tokio::test]
async fn an_archive_post_in_the_feed_shows_the_votes_it_just_got() {
    let app = spawn_app().await;
    let (_, author) = app.new_user("aa").await;
    let (_, viewer) = app.new_user("av").await;
    let (_, voter) = app.new_user("ao").await;
    let old = app.create_post(&author, "the only archive post").await;
    // 1,000 newer posts fill the global window (50 at a time).
    for round in 0..20 {
        let contents: Vec<String> = (0..50).map(|i| format!("w{round}.{i}")).collect();
        join_all(contents.iter().map(|c| app.create_post(&author, c))).await;
    }
    // Twice: the second feed shows the post as the first one rendered it
    // (its JSON is kept with its cached row), which a vote must replace.
    for _ in 0..2 {
        assert_eq!(feed_counts(&app, &viewer, old).await, Some((0, 0)));
    }
    for (vote, counts) in [("up", (1, 0)), ("down", (0, 1))] {
        vote_as(&app, &voter, old, vote).await;
        let (up, down, _) = post_counts(&app, old).await;
        assert_eq!((up, down), counts, "after the {vote} vote");
        assert_eq!(
            feed_counts(&app, &viewer, old).await,
            Some(counts),
            "after the {vote} vote"
        );
    }
    reply_as(&app, &voter, old, "a reply").await;
    assert_eq!(post_counts(&app, old).await, (0, 1, 1));
}

/// How many posts of `author` the viewer's feed shows.
async fn feed_posts_by(app: &TestApp, viewer: &str, author: &str) -> usize {
    let v = body(app.get("/api/fyp", Some(viewer)).await).await;
    let posts = v["posts"].as_array().unwrap();
    posts.iter().filter(|p| p["username"] == author).count()
}

/// The feed's followed share follows each follow and unfollow at once
/// (the SQLite store keeps follow lists in memory once the feed read them).
#[tokio::test]
async fn the_feed_changes_at_once_when_the_viewer_follows_or_unfollows() {
    let app = spawn_app().await;
    let (_, viewer) = app.new_user("cv").await;
    let (friend, friend_token) = app.new_user("cf").await;
    let (_, stranger) = app.new_user("cs").await;
    for (token, n) in [(&friend_token, 20), (&stranger, 40)] {
        let contents: Vec<String> = (0..n).map(|i| format!("post {i}")).collect();
        for content in &contents {
            app.create_post(token, content).await;
        }
    }
    // The 30 newest posts are the stranger's.
    assert_eq!(feed_posts_by(&app, &viewer, &friend).await, 0);
    let resp = app
        .post_json("/api/follow", Some(&viewer), json!({"username": friend}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    // The followed share, and what the empty archive share leaves to it.
    assert_eq!(feed_posts_by(&app, &viewer, &friend).await, 18);
    let resp = app
        .post_json("/api/unfollow", Some(&viewer), json!({"username": friend}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(feed_posts_by(&app, &viewer, &friend).await, 0);
}

/// The author's posts as `get_posts` shows them, newest first:
/// (id, upvotes, downvotes, replies) each.
async fn page_of(app: &TestApp, author: &str, query: &str) -> Vec<(i64, i64, i64, i64)> {
    let r = app
        .get(&format!("/api/get_posts/{author}{query}"), None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v = body(r).await;
    v["posts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let n = |field: &str| p[field].as_i64().unwrap();
            (n("id"), n("upvotes"), n("downvotes"), n("replies"))
        })
        .collect()
}

/// A user's newest page follows every change at once: a new post, votes,
/// a moved vote, a reply and a voter's account deletion (the SQLite store
/// keeps each user's newest page in memory once read). Each step reads the
/// page first, so that the change has a cached page to make stale.
#[tokio::test]
async fn a_users_newest_page_shows_each_change_at_once() {
    let app = spawn_app().await;
    let (author, author_token) = app.new_user("na").await;
    let (voter, voter_token) = app.new_user("nv").await;
    let first = app.create_post(&author_token, "first").await;
    assert_eq!(page_of(&app, &author, "").await, [(first, 0, 0, 0)]);

    let second = app.create_post(&author_token, "second").await;
    assert_eq!(
        page_of(&app, &author, "").await,
        [(second, 0, 0, 0), (first, 0, 0, 0)]
    );
    // Another limit is another page; the newest page is still right after it.
    assert_eq!(
        page_of(&app, &author, "?limit=1").await,
        [(second, 0, 0, 0)]
    );

    for (vote, up, down) in [("up", 1, 0), ("down", 0, 1)] {
        vote_as(&app, &voter_token, first, vote).await;
        assert_eq!(
            page_of(&app, &author, "").await,
            [(second, 0, 0, 0), (first, up, down, 0)],
            "after the {vote} vote"
        );
    }
    reply_as(&app, &voter_token, second, "a reply").await;
    assert_eq!(
        page_of(&app, &author, "").await,
        [(second, 0, 0, 1), (first, 0, 1, 0)]
    );

    let r = app
        .post_json(
            "/api/delete_account",
            Some(&voter_token),
            json!({"password": "password123"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "deleting {voter}");
    assert_eq!(
        page_of(&app, &author, "").await,
        [(second, 0, 0, 0), (first, 0, 0, 0)]
    );
}

/// An empty page of replies is 200 for a post that exists (none yet, or
/// none before the cursor) and 404 only for a post that does not.
#[tokio::test]
async fn an_empty_page_of_replies_is_found_for_a_real_post() {
    let app = spawn_app().await;
    let (_, token) = app.new_user("er").await;
    let post = app.create_post(&token, "quiet").await;
    let v = body(app.get(&format!("/api/get_replies/{post}"), None).await).await;
    assert_eq!(v["replies"], json!([]));
    reply_as(&app, &token, post, "one").await;
    let v = body(app.get(&format!("/api/get_replies/{post}"), None).await).await;
    let first = v["replies"][0]["id"].as_i64().expect("a reply");
    let r = app
        .get(&format!("/api/get_replies/{post}?before={first}"), None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await["replies"], json!([]));
    assert_error(
        app.get(&format!("/api/get_replies/{}", post + 1_000), None)
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
}
