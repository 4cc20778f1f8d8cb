//! The HTTP edge: security headers, request ids, size limits and slow-client timeouts.

use std::time::{Duration, Instant};

use reqwest::{Response, StatusCode};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{TestApp, assert_error, body, spawn_app, spawn_app_with};

fn assert_security_headers(resp: &Response, what: &str) {
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .unwrap_or_else(|| panic!("{what}: no {name}"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header("x-frame-options"), "DENY", "{what}");
    assert_eq!(header("referrer-policy"), "no-referrer", "{what}");
    assert!(
        header("content-security-policy").contains("default-src 'none'"),
        "{what}"
    );
    assert!(
        header("content-security-policy").contains("sandbox"),
        "{what}"
    );
    assert!(header("cross-origin-resource-policy").len() > 1, "{what}");
    assert_eq!(
        header("access-control-allow-origin"),
        "*",
        "{what}: CORS kept"
    );
    assert!(!header("x-request-id").is_empty(), "{what}");
}

#[tokio::test]
async fn every_kind_of_response_carries_the_security_headers() {
    let app = spawn_app().await;
    let with_origin = |req: reqwest::RequestBuilder| req.header("Origin", "https://front.example");

    let ok = with_origin(app.client.get(app.url("/api/ping")))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_security_headers(&ok, "JSON 200");
    assert_eq!(ok.headers()["cross-origin-resource-policy"], "same-origin");

    let unauthorized = with_origin(app.client.post(app.url("/api/create_post")))
        .json(&json!({"content": "x"}))
        .send()
        .await
        .unwrap();
    assert_security_headers(&unauthorized, "401");
    assert_error(unauthorized, StatusCode::UNAUTHORIZED).await;

    let missing = with_origin(app.client.get(app.url("/api/no_such_thing")))
        .send()
        .await
        .unwrap();
    assert_security_headers(&missing, "404 fallback");
    assert_error(missing, StatusCode::NOT_FOUND).await;

    let preflight = with_origin(
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/create_post")),
    )
    .header("Access-Control-Request-Method", "POST")
    .header(
        "Access-Control-Request-Headers",
        "authorization, content-type",
    )
    .send()
    .await
    .unwrap();
    assert!(preflight.status().is_success());
    assert_security_headers(&preflight, "preflight");

    let (_, token) = app.new_user("headers").await;
    let room = app
        .create_room(&token, &crate::helpers::unique_name("headers"), None)
        .await;
    for (name, disposition) in [("note.txt", "inline"), ("page.html", "attachment")] {
        let url = app
            .upload(&token, room, name, b"<script>alert(1)</script>")
            .await;
        let file = with_origin(app.client.get(&url)).send().await.unwrap();
        assert_eq!(file.status(), StatusCode::OK);
        assert_security_headers(&file, name);
        // Other origins may show files in <img>/<video>, never run them.
        assert_eq!(
            file.headers()["cross-origin-resource-policy"],
            "cross-origin"
        );
        let served = file.headers()["content-disposition"].to_str().unwrap();
        assert!(served.starts_with(disposition), "{name}: {served}");
    }
}

#[tokio::test]
async fn request_ids_are_generated_or_echoed_when_short_and_printable() {
    let app = spawn_app().await;
    let id_of = |resp: &Response| resp.headers()["x-request-id"].to_str().unwrap().to_owned();

    let first = id_of(&app.get("/api/ping", None).await);
    let second = id_of(&app.get("/api/no_such_thing", None).await);
    assert!(uuid_like(&first), "{first}");
    assert_ne!(first, second);

    let sent = |id: &'static str| {
        app.client
            .get(app.url("/api/ping"))
            .header("x-request-id", id)
            .send()
    };
    assert_eq!(
        id_of(&sent("trace-42.abc:7").await.unwrap()),
        "trace-42.abc:7"
    );
    let too_long = Box::leak("a".repeat(65).into_boxed_str());
    for unusable in [&*too_long, "has space", "tab\there"] {
        let echoed = id_of(&sent(unusable).await.unwrap());
        assert!(uuid_like(&echoed), "{unusable:?} -> {echoed}");
    }
}

fn uuid_like(text: &str) -> bool {
    text.len() == 36 && text.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

fn address(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Writes `request` and reads until the server closes (at most 10 s).
async fn exchange(app: &TestApp, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address(app)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A request of exactly `head_bytes` bytes of head (request line, headers,
/// blank line), padded with one header.
fn request_with_head_of(head_bytes: usize) -> String {
    let start = "GET /api/ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Padding: ";
    let end = "\r\n\r\n";
    let padding = head_bytes - start.len() - end.len();
    format!("{start}{}{end}", "a".repeat(padding))
}

#[tokio::test]
async fn an_oversized_request_head_is_431_and_the_server_keeps_serving() {
    let app = spawn_app_with(|config| config.max_header_bytes = 8192).await;
    // Up to the limit, counted as sent, a head is fine.
    let answer = exchange(&app, request_with_head_of(8192).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.80}");

    // One byte over: the API's JSON error, with its headers, and the
    // connection closes (`exchange` reads until it does).
    let answer = exchange(&app, request_with_head_of(8193).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("connection: close"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(body).unwrap(),
        json!({"error": "the request line and headers are over 8192 bytes"})
    );

    // Past four times the limit hyper answers 431 itself (no body, before
    // any routing), so that a connection never buffers more.
    let answer = exchange(&app, request_with_head_of(4 * 8192 + 1).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");
    assert!(!answer.contains("\"error\""), "{answer:.200}");

    // More header fields than `--max-headers`: hyper's 431 as well.
    let many: String = (0..150).map(|n| format!("X-H{n}: v\r\n")).collect();
    let request = format!("GET /api/ping HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    let answer = exchange(&app, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");

    assert_eq!(app.get("/api/ping", None).await.status(), StatusCode::OK);
}

/// Sends `bytes` one at a time, 100 ms apart, until the server hangs up;
/// returns how long that took (fails after 10 s).
async fn trickle_until_closed(stream: &mut TcpStream, bytes: &[u8]) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    for byte in bytes.iter().cycle() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still connected after 10 s"
        );
        if stream.write_all(&[*byte]).await.is_err() {
            return start.elapsed();
        }
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return start.elapsed(),
            Ok(Ok(n)) => panic!("unexpected answer {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(_) => {}
        }
    }
    unreachable!("cycle never ends")
}

#[tokio::test]
async fn a_client_sending_its_headers_byte_by_byte_is_disconnected_at_the_timeout() {
    let app = spawn_app_with(|config| config.header_read_timeout_secs = 1).await;
    let mut stream = TcpStream::connect(address(&app)).await.unwrap();
    stream
        .write_all(b"GET /api/ping HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let took = trickle_until_closed(&mut stream, b"X-Slow: aaaaaaaaaaaaaaaaaaaa\r\n").await;
    assert!(took >= Duration::from_millis(800), "closed early: {took:?}");
    assert!(took < Duration::from_secs(4), "closed late: {took:?}");
    assert_eq!(app.get("/api/ping", None).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_header_timeout() {
    let app = spawn_app_with(|config| config.header_read_timeout_secs = 1).await;
    let mut stream = TcpStream::connect(address(&app)).await.unwrap();
    stream
        .write_all(b"GET /api/ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the idle connection stayed open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.80}");
    assert!(
        start.elapsed() >= Duration::from_millis(800),
        "closed before the timeout"
    );
}

async fn post_count(app: &TestApp, username: &str) -> usize {
    let resp = app.get(&format!("/api/get_posts/{username}"), None).await;
    body(resp).await["posts"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_stalled_request_body_is_408_and_stores_nothing() {
    let app = spawn_app_with(|config| config.body_read_timeout_secs = 1).await;
    let (name, token) = app.new_user("stall").await;
    let mut stream = TcpStream::connect(address(&app)).await.unwrap();
    let head = format!(
        "POST /api/create_post HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 40\r\n\r\n{{\"content\": \"hel"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let start = Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:.200}");
    assert!(answer.contains(r#""error""#), "{answer}");
    assert!(start.elapsed() >= Duration::from_millis(800));
    assert_eq!(post_count(&app, &name).await, 0);
}

#[tokio::test]
async fn an_oversized_json_body_is_413_json_and_stores_nothing() {
    let app = spawn_app().await;
    let (name, token) = app.new_user("big").await;
    let content = "a".repeat(70_000);
    let declared = app
        .post_json(
            "/api/create_post",
            Some(&token),
            json!({"content": content}),
        )
        .await;
    assert_error(declared, StatusCode::PAYLOAD_TOO_LARGE).await;

    // Chunked, so no Content-Length warns the server in advance.
    let chunks = (0..70).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024]));
    let streamed = app
        .client
        .post(app.url("/api/create_post"))
        .header("Authorization", &token)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_error(streamed, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(post_count(&app, &name).await, 0);
}

#[tokio::test]
async fn a_stalled_upload_is_408_and_leaves_no_file() {
    let app = spawn_app_with(|config| config.body_read_timeout_secs = 1).await;
    let (_, token) = app.new_user("stallup").await;
    let room = app
        .create_room(&token, &crate::helpers::unique_name("stallup"), None)
        .await;
    let mut stream = TcpStream::connect(address(&app)).await.unwrap();
    let head = format!(
        "POST /api/upload_file HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n\
         Content-Type: multipart/form-data; boundary=XYZ\r\nContent-Length: 100000\r\n\r\n\
         --XYZ\r\nContent-Disposition: form-data; name=\"room_id\"\r\n\r\n{room}\r\n\
         --XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nsome bytes"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:.200}");
    let files_dir = app.data_dir.path().join("files");
    let stored = std::fs::read_dir(&files_dir).unwrap().count();
    let temporary = std::fs::read_dir(files_dir.join("tmp")).unwrap().count();
    assert_eq!(
        (stored, temporary),
        (1, 0),
        "only the empty tmp directory remains"
    );
}
