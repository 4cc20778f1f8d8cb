//! The OpenAPI document says what the server really does (Schemathesis
//! fuzzes against it in CI: scripts/fuzz-api), and bad path segments.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

async fn spec(app: &TestApp) -> Value {
    body(app.get("/api/openapi.json", None).await).await
}

fn parameter_names(operation: &Value, location: &str) -> Vec<String> {
    operation["parameters"]
        .as_array()
        .map(|params| {
            params
                .iter()
                .filter(|p| p["in"] == location)
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn every_path_parameter_is_documented() {
    let app = spawn_app().await;
    let spec = spec(&app).await;
    let mut templated = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        let wanted: Vec<&str> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for (method, operation) in item.as_object().unwrap() {
            let mut documented = parameter_names(operation, "path");
            documented.sort();
            let mut expected: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
            expected.sort();
            assert_eq!(documented, expected, "{method} {path}");
        }
        templated += usize::from(!wanted.is_empty());
    }
    assert_eq!(templated, 8, "routes with path parameters");
}

#[tokio::test]
async fn list_endpoints_document_their_page_parameters_and_the_400() {
    let app = spawn_app().await;
    let spec = spec(&app).await;
    for path in [
        "/api/get_posts/{username}",
        "/api/get_followers/{username}",
        "/api/get_following/{username}",
        "/api/get_replies/{post_id}",
        "/api/inbox",
    ] {
        let operation = &spec["paths"][path]["get"];
        let query = parameter_names(operation, "query");
        assert!(
            query.contains(&"limit".into()) && query.contains(&"before".into()),
            "{path}: {query:?}"
        );
        assert!(operation["responses"]["400"].is_object(), "{path}");
    }
}

#[tokio::test]
async fn every_operation_with_a_body_documents_the_413() {
    let app = spawn_app().await;
    let spec = spec(&app).await;
    let (mut with_body, mut posts) = (0, 0);
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            posts += usize::from(method == "post");
            if operation["requestBody"].is_object() {
                with_body += 1;
                assert!(
                    operation["responses"]["413"]["content"]["application/json"].is_object(),
                    "{method} {path}"
                );
            }
        }
    }
    assert_eq!(with_body, posts, "every POST takes a body");
    assert!(posts >= 16);
}

#[tokio::test]
async fn an_oversized_body_is_413_on_a_route_that_now_documents_it() {
    let app = spawn_app().await;
    let (_, t) = app.new_user("big").await;
    let content = "x".repeat(70 * 1024);
    let r = app
        .post_json(
            "/api/create_post",
            Some(&t),
            serde_json::json!({ "content": content }),
        )
        .await;
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE).await;
}

#[tokio::test]
async fn a_path_segment_that_does_not_decode_names_nothing() {
    let app = spawn_app().await;
    let (_, t) = app.new_user("utf").await;
    for path in [
        "/api/user/%FF",
        "/api/get_posts/%FF",
        "/api/get_followers/%C3",
        "/api/get_following/%FF%FE",
        "/api/get_post_by_id/%FF",
        "/api/get_replies/%FF",
        "/api/room_members/%FF",
    ] {
        let r = app.get(path, Some(&t)).await;
        assert_error(r, StatusCode::NOT_FOUND).await;
    }
}
