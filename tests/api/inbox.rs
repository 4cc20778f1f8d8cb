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
