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
