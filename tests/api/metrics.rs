//! `GET /metrics`: Prometheus text behind a bearer token, counting the real
//! requests this test sends.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::{
    helpers::{TestApp, assert_error, body, spawn_app, spawn_app_with},
    ws::connect,
};

const METRICS_TOKEN: &str = "scrape-secret-for-tests";

async fn spawn_with_metrics() -> TestApp {
    spawn_app_with(|config| config.metrics_token = Some(METRICS_TOKEN.to_owned())).await
}

/// The metrics text, read with the right token.
async fn scrape(app: &TestApp) -> String {
    let resp = app
        .get("/metrics", Some(&format!("Bearer {METRICS_TOKEN}")))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    resp.text().await.expect("metrics text")
}

/// The value of the series written exactly `series` (name and labels, in
/// the label order the exposition uses: alphabetical).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.parse().ok()
    })
}

/// Scrapes until `series` has `wanted`, or fails after a bounded wait.
async fn wait_for(app: &TestApp, series: &str, wanted: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = value(&scrape(app).await, series);
        if seen == Some(wanted) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} stayed {seen:?}, wanted {wanted}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_are_off_unless_a_token_is_configured() {
    let app = spawn_app().await;
    let resp = app.get("/metrics", Some("Bearer anything")).await;
    assert_error(resp, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn metrics_need_the_configured_bearer_token() {
    let app = spawn_with_metrics().await;
    assert_error(app.get("/metrics", None).await, StatusCode::UNAUTHORIZED).await;
    assert_error(
        app.get("/metrics", Some("Bearer not-the-token")).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // A user's session token is no metrics token either.
    let (_, token) = app.new_user("scraper").await;
    assert_error(
        app.get("/metrics", Some(&token)).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;

    let resp = app
        .get("/metrics", Some(&format!("Bearer {METRICS_TOKEN}")))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("# TYPE mirage_http_requests_total counter")
    );
}

#[tokio::test]
async fn requests_are_counted_by_route_template_method_and_status() {
    let app = spawn_with_metrics().await;
    let (_, token) = app.new_user("counted").await;
    let resp = app
        .post_json(
            "/api/create_post",
            Some(&token),
            json!({"content": "hello"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let id = body(resp).await["id"].as_i64().unwrap();
    for _ in 0..2 {
        let resp = app.get(&format!("/api/get_post_by_id/{id}"), None).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let missing = app.get("/api/get_post_by_id/987654321", None).await;
    assert_error(missing, StatusCode::NOT_FOUND).await;
    assert_error(
        app.get("/no/such/path/31337", None).await,
        StatusCode::NOT_FOUND,
    )
    .await;

    let text = scrape(&app).await;
    let route = r#"route="/api/get_post_by_id/{id}""#;
    assert_eq!(
        value(
            &text,
            &format!(r#"mirage_http_requests_total{{method="GET",{route},status="200"}}"#)
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"mirage_http_requests_total{{method="GET",{route},status="404"}}"#)
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"mirage_http_requests_total{method="POST",route="/api/create_post",status="201"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"mirage_http_errors_total{{class="4xx",{route}}}"#)
        ),
        Some(1.0)
    );
    // Unknown paths share one label; raw URIs never become labels.
    assert_eq!(
        value(
            &text,
            r#"mirage_http_requests_total{method="GET",route="unmatched",status="404"}"#
        ),
        Some(1.0)
    );
    assert!(!text.contains("31337") && !text.contains("987654321"));
    // A latency histogram per route: three timed requests, all within the
    // last bucket.
    assert_eq!(
        value(
            &text,
            &format!(r#"mirage_http_request_duration_seconds_count{{method="GET",{route}}}"#)
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &text,
            &format!(
                r#"mirage_http_request_duration_seconds_bucket{{method="GET",{route},le="+Inf"}}"#
            )
        ),
        Some(3.0)
    );
    assert!(text.contains("# TYPE mirage_http_request_duration_seconds histogram"));
}

#[tokio::test]
async fn the_websocket_gauge_follows_open_connections() {
    let app = spawn_with_metrics().await;
    let (_, token) = app.new_user("gauged").await;
    let gauge = "mirage_websocket_connections";
    wait_for(&app, gauge, 0.0).await;
    let mut first = connect(&app, &token).await;
    let second = connect(&app, &token).await;
    wait_for(&app, gauge, 2.0).await;
    first.close(None).await.expect("close sent");
    wait_for(&app, gauge, 1.0).await;
    drop(second);
    wait_for(&app, gauge, 0.0).await;
}

#[tokio::test]
async fn database_pool_and_process_figures_are_present() {
    let app = spawn_with_metrics().await;
    // A read, so that a pool has opened a connection.
    assert_eq!(
        app.get("/api/usercount", None).await.status(),
        StatusCode::OK
    );
    let text = scrape(&app).await;
    let pool = if app.config.database.is_some() {
        "postgres"
    } else {
        "sqlite_readers"
    };
    let max = value(
        &text,
        &format!(r#"mirage_db_pool_max_connections{{pool="{pool}"}}"#),
    )
    .expect("pool max");
    let open = value(
        &text,
        &format!(r#"mirage_db_pool_connections{{pool="{pool}"}}"#),
    )
    .expect("open connections");
    let idle = value(
        &text,
        &format!(r#"mirage_db_pool_idle_connections{{pool="{pool}"}}"#),
    )
    .expect("idle connections");
    assert!(open >= 1.0 && open <= max, "open {open} of {max}");
    assert!(idle <= open, "idle {idle} of {open}");
    if app.config.database.is_some() {
        assert_eq!(max, f64::from(app.config.database_pool_size));
    } else {
        // Background writes (the retention purge) may be queued at any
        // moment; with nothing sent, the queue drains to empty.
        wait_for(
            &app,
            r#"mirage_db_writer_queue_depth{database="sqlite"}"#,
            0.0,
        )
        .await;
    }
    let resident = value(&text, "process_resident_memory_bytes").expect("process memory");
    assert!(resident > 1e6, "resident {resident}");
    assert!(value(&text, "process_open_fds").expect("open files") > 0.0);
}
