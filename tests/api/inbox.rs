use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_message_reaches_both_inboxes_and_deleting_hides_it_for_one() {
    let app = spawn_app().await;
    let (a, ta) = app.new_user("ia").await;
    let (b, tb) = app.new_user("ib").await;
    let resp = app
        .post_json(
            "/api/send_inbox_message",
            Some(&ta),
            json!({"recipient": b, "message": "hi"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body(resp).await, json!({"message": "sent"}));

    let v = body(app.get("/api/inbox", Some(&tb)).await).await;
    let msg = &v["messages"][0];
    assert_eq!(
        (msg["sender"].as_str(), msg["recipient"].as_str()),
        (Some(a.as_str()), Some(b.as_str()))
    );
    assert_eq!(msg["avatar_url"], "");
    assert!(v["next"].is_null());
    let id = msg["id"].as_i64().unwrap();

    let resp = app
        .post_json(
            "/api/delete_inbox_message",
            Some(&tb),
            json!({"message_id": id.to_string()}),
        )
        .await;
    assert_eq!(body(resp).await["message"], "message deleted successfully");
    let again = app
        .post_json(
            "/api/delete_inbox_message",
            Some(&tb),
            json!({"message_id": id}),
        )
        .await;
    assert_error(again, StatusCode::NOT_FOUND).await;
    assert_eq!(
        body(app.get("/api/inbox_count", Some(&tb)).await).await["inbox_count"],
        0
    );
    assert_eq!(
        body(app.get("/api/inbox_count", Some(&ta)).await).await["inbox_count"],
        1
    );
}

#[tokio::test]
async fn inbox_errors() {
    let app = spawn_app().await;
    let (_, t) = app.new_user("ie").await;
    let r = app
        .post_json(
            "/api/send_inbox_message",
            Some(&t),
            json!({"recipient": "nobody_zz", "message": "x"}),
        )
        .await;
    assert_error(r, StatusCode::NOT_FOUND).await;
    let r = app
        .post_json(
            "/api/send_inbox_message",
            Some(&t),
            json!({"recipient": "nobody_zz", "message": "  "}),
        )
        .await;
    assert_error(r, StatusCode::BAD_REQUEST).await;
    let r = app
        .post_json("/api/delete_inbox_message", Some(&t), json!({}))
        .await;
    assert_error(r, StatusCode::BAD_REQUEST).await;
    assert_error(app.get("/api/inbox", None).await, StatusCode::UNAUTHORIZED).await;
}

/// (sender, message, avatar) of each message on the caller's inbox page.
async fn inbox_of(app: &TestApp, token: &str, query: &str) -> Vec<(String, String, String)> {
    let v = body(app.get(&format!("/api/inbox{query}"), Some(token)).await).await;
    v["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            let field = |k: &str| m[k].as_str().expect(k).to_owned();
            (field("sender"), field("message"), field("avatar_url"))
        })
        .collect()
}

async fn send_as(app: &TestApp, token: &str, recipient: &str, message: &str) {
    let r = app
        .post_json(
            "/api/send_inbox_message",
            Some(token),
            json!({"recipient": recipient, "message": message}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "sending {message:?}");
}

/// The newest inbox page may be served from memory: every change that
/// shows on it must show at once, on each side it shows on.
#[tokio::test]
async fn an_inbox_page_shows_each_change_at_once() {
    let app = spawn_app().await;
    let (a, ta) = app.new_user("pa").await;
    let (b, tb) = app.new_user("pb").await;
    let (c, tc) = app.new_user("pc").await;
    let entry = |from: &str, text: &str, avatar: &str| {
        (from.to_owned(), text.to_owned(), avatar.to_owned())
    };

    send_as(&app, &ta, &b, "one").await;
    assert_eq!(inbox_of(&app, &tb, "").await, [entry(&a, "one", "")]);
    assert_eq!(inbox_of(&app, &ta, "").await, [entry(&a, "one", "")]);

    // A new message, on both sides (each side's page was read before it).
    send_as(&app, &tb, &a, "two").await;
    let both = [entry(&b, "two", ""), entry(&a, "one", "")];
    assert_eq!(inbox_of(&app, &tb, "").await, both);
    assert_eq!(inbox_of(&app, &ta, "").await, both);
    // Another limit is another page; the newest page is still right after it.
    assert_eq!(
        inbox_of(&app, &tb, "?limit=1").await,
        [entry(&b, "two", "")]
    );
    assert_eq!(inbox_of(&app, &tb, "").await, both);

    // The sender's new avatar shows on every message they sent.
    let r = app
        .post_json(
            "/api/user/settings",
            Some(&ta),
            json!({"avatar_url": "a.png"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let with_avatar = [entry(&b, "two", ""), entry(&a, "one", "a.png")];
    assert_eq!(inbox_of(&app, &tb, "").await, with_avatar);

    // Deleting hides a message for the one who deletes only.
    let v = body(app.get("/api/inbox", Some(&tb)).await).await;
    let two = v["messages"][0]["id"].as_i64().unwrap();
    let r = app
        .post_json(
            "/api/delete_inbox_message",
            Some(&tb),
            json!({"message_id": two}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(inbox_of(&app, &tb, "").await, [entry(&a, "one", "a.png")]);
    assert_eq!(inbox_of(&app, &ta, "").await, with_avatar);

    // A deleted account takes its messages out of the other inboxes.
    send_as(&app, &tc, &b, "three").await;
    assert_eq!(inbox_of(&app, &tb, "").await[0], entry(&c, "three", ""));
    let r = app
        .post_json(
            "/api/delete_account",
            Some(&tc),
            json!({"password": "password123"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "deleting {c}");
    assert_eq!(inbox_of(&app, &tb, "").await, [entry(&a, "one", "a.png")]);
}

/// The count may be served from memory too: each send and deletion shows
/// at once, on each side.
#[tokio::test]
async fn the_inbox_count_shows_each_change_at_once() {
    let app = spawn_app().await;
    let (a, ta) = app.new_user("ca").await;
    let (b, tb) = app.new_user("cb").await;
    let count = |token: &str| {
        let app = &app;
        let token = token.to_owned();
        async move {
            body(app.get("/api/inbox_count", Some(&token)).await).await["inbox_count"]
                .as_i64()
                .unwrap()
        }
    };
    assert_eq!((count(&ta).await, count(&tb).await), (0, 0));
    send_as(&app, &ta, &b, "one").await;
    assert_eq!((count(&ta).await, count(&tb).await), (1, 1));
    send_as(&app, &tb, &a, "two").await;
    assert_eq!((count(&ta).await, count(&tb).await), (2, 2));
    // A note to oneself is one message.
    send_as(&app, &ta, &a, "three").await;
    assert_eq!((count(&ta).await, count(&tb).await), (3, 2));
    let newest = body(app.get("/api/inbox", Some(&tb)).await).await["messages"][0]["id"]
        .as_i64()
        .unwrap();
    let r = app
        .post_json(
            "/api/delete_inbox_message",
            Some(&tb),
            json!({"message_id": newest}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!((count(&ta).await, count(&tb).await), (3, 1));
}
