//! Security review, part one: what responses, events and the database may
//! never contain, and how stored text is served back. One test per point of
//! docs/SECURITY.md ("Security review"); access to inboxes, private rooms
//! and files is in `security_access.rs`.

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    helpers::{TestApp, assert_error, body, spawn_app, unique_name},
    ws::{Socket, connect_query, next_json, send_frame},
};

const PASSWORD: &str = "hunter2-is-my-secret";
const ROOM_PASSWORD: &str = "the-room-secret-99";

/// A user whose every secret is known to the test.
struct Secrets {
    name: String,
    email: String,
    token: String,
}

async fn register_with_secrets(app: &TestApp, prefix: &str) -> Secrets {
    let name = unique_name(prefix);
    let email = format!("{name}.private-mail@leak-check.example");
    let resp = app
        .post_json(
            "/api/register",
            None,
            json!({"username": name, "email": email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let token = login(app, &name).await;
    Secrets { name, email, token }
}

async fn login(app: &TestApp, name: &str) -> String {
    let resp = app
        .post_json(
            "/api/login",
            None,
            json!({"username": name, "password": PASSWORD}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    body(resp).await["token"].as_str().unwrap().to_owned()
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Strings that must appear in no response body and no WebSocket frame.
struct Forbidden(Vec<String>);

impl Forbidden {
    fn assert_absent(&self, what: &str, text: &str) {
        for secret in &self.0 {
            assert!(
                !text.to_lowercase().contains(&secret.to_lowercase()),
                "{what} reveals {secret:?}: {text}"
            );
        }
    }

    /// Reads a JSON response, checks its type and that it reveals nothing.
    async fn check(&self, what: &str, resp: Response) -> Value {
        let status = resp.status();
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{what}: {status} {text}");
        assert!(
            content_type.starts_with("application/json"),
            "{what}: {content_type}"
        );
        self.assert_absent(what, &text);
        serde_json::from_str(&text).unwrap()
    }
}

/// Every frame the socket has received so far, as text: a ping is
/// answered after everything queued before it.
async fn drain(socket: &mut Socket) -> String {
    send_frame(socket, json!({"type": "ping", "ref": "drain"})).await;
    let mut frames = String::new();
    loop {
        let frame = next_json(socket).await;
        if frame == json!({"type": "pong", "ref": "drain"}) {
            return frames;
        }
        frames.push_str(&frame.to_string());
        frames.push('\n');
    }
}

#[tokio::test]
async fn no_response_or_event_reveals_an_email_a_password_hash_or_another_users_token() {
    let app = spawn_app().await;
    let a = register_with_secrets(&app, "leak_a").await;
    let b = register_with_secrets(&app, "leak_b").await;
    let c = register_with_secrets(&app, "leak_c").await;
    let a_second_token = login(&app, &a.name).await;
    let changed_email = format!("{}.changed@leak-check.example", a.name);
    let mut forbidden = Forbidden(vec![
        a.email.clone(),
        b.email.clone(),
        c.email.clone(),
        changed_email.clone(),
        "leak-check.example".into(),
        "$argon2".into(),
        PASSWORD.into(),
        ROOM_PASSWORD.into(),
    ]);
    for token in [&a.token, &a_second_token, &b.token, &c.token] {
        forbidden.0.push(token.clone());
        forbidden.0.push(sha256_hex(token));
    }
    // B and C watch everything the streams deliver, with a full replay.
    let mut b_socket = connect_query(&app, &b.token, "?since=0").await;
    let mut c_socket = connect_query(&app, &c.token, "?since=0").await;

    let (ta, tb) = (Some(a.token.as_str()), Some(b.token.as_str()));
    let writes: Vec<(&str, Option<&str>, Value)> = vec![
        ("/api/follow", ta, json!({"username": b.name})),
        ("/api/follow", tb, json!({"username": a.name})),
        (
            "/api/user/settings",
            ta,
            json!({"email": changed_email, "description": "hi", "custom_css": "body{}",
                   "avatar_url": "https://example.org/a.png"}),
        ),
        (
            "/api/create_post",
            ta,
            json!({"content": "#leakcheck first"}),
        ),
    ];
    for (path, token, request) in writes {
        forbidden
            .check(path, app.post_json(path, token, request).await)
            .await;
    }
    let posts = forbidden
        .check(
            "get_posts",
            app.get(&format!("/api/get_posts/{}", a.name), None).await,
        )
        .await;
    let post_id = posts["posts"][0]["id"].as_i64().unwrap();
    let room = forbidden
        .check(
            "create_room",
            app.post_json(
                "/api/create_room",
                ta,
                json!({"room_name": unique_name("leakroom"), "is_private": 1, "password": ROOM_PASSWORD}),
            )
            .await,
        )
        .await;
    let room_id = room["room_id"].as_i64().unwrap();
    let more_writes: Vec<(&str, Option<&str>, Value)> = vec![
        (
            "/api/vote_post",
            tb,
            json!({"post_id": post_id, "vote_type": "up"}),
        ),
        (
            "/api/reply_to_post",
            tb,
            json!({"post_id": post_id, "content": "a reply"}),
        ),
        (
            "/api/join_room",
            tb,
            json!({"room_id": room_id, "password": ROOM_PASSWORD}),
        ),
        (
            "/api/send_room_message",
            ta,
            json!({"room_id": room_id, "message": "in the room"}),
        ),
        (
            "/api/send_inbox_message",
            ta,
            json!({"recipient": b.name, "message": "psst"}),
        ),
        (
            "/api/send_inbox_message",
            tb,
            json!({"recipient": a.name, "message": "hi back"}),
        ),
    ];
    for (path, token, request) in more_writes {
        forbidden
            .check(path, app.post_json(path, token, request).await)
            .await;
    }
    let file_url = app
        .upload(&a.token, room_id, "notes.txt", b"file body")
        .await;
    forbidden.assert_absent("upload_file", &file_url);

    let reads = [
        format!("/api/user/{}", a.name),
        format!("/api/get_followers/{}", a.name),
        format!("/api/get_following/{}", a.name),
        format!("/api/get_posts/{}", a.name),
        format!("/api/get_post_by_id/{post_id}"),
        format!("/api/get_replies/{post_id}"),
        format!("/api/check_follow?username={}", b.name),
        "/api/fyp".into(),
        "/api/rooms".into(),
        "/api/user_rooms".into(),
        format!("/api/room_members/{room_id}"),
        format!("/api/get_room_messages?room_id={room_id}"),
        "/api/inbox".into(),
        "/api/inbox_count".into(),
        "/api/ping".into(),
        "/api/openapi.json".into(),
    ];
    for path in &reads {
        // As each member, and anonymously where the endpoint is public.
        for token in [ta, tb] {
            forbidden.check(path, app.get(path, token).await).await;
        }
    }
    let usercount = app.get("/api/usercount", None).await.text().await.unwrap();
    forbidden.assert_absent("usercount", &usercount);
    let inbox = forbidden
        .check("inbox", app.get("/api/inbox", tb).await)
        .await;
    assert_eq!(inbox["messages"].as_array().unwrap().len(), 2);

    let b_events = drain(&mut b_socket).await;
    // The stream did carry B's events (so the search below means something).
    assert!(
        b_events.contains("psst") && b_events.contains("in the room"),
        "{b_events}"
    );
    forbidden.assert_absent("B's WebSocket events", &b_events);
    forbidden.assert_absent("C's WebSocket events", &drain(&mut c_socket).await);
    // Logging out reveals nothing either.
    let logout = app
        .post_json("/api/logout", Some(&a_second_token), json!({}))
        .await;
    forbidden.check("logout", logout).await;
}

#[tokio::test]
async fn login_answers_only_the_callers_own_new_token() {
    let app = spawn_app().await;
    let a = register_with_secrets(&app, "own_token").await;
    let resp = app
        .post_json(
            "/api/login",
            None,
            json!({"username": a.name, "password": PASSWORD}),
        )
        .await;
    let text = resp.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let fresh = v["token"].as_str().unwrap();
    assert_ne!(fresh, a.token, "every login opens a new session");
    for secret in [&a.token, &a.email, &sha256_hex(fresh)] {
        assert!(!text.contains(secret.as_str()), "login reveals {secret}");
    }
    assert!(!text.contains("$argon2"));
}

#[tokio::test]
async fn sessions_are_stored_as_hashes_never_as_tokens() {
    let app = spawn_app().await;
    let a = register_with_secrets(&app, "at_rest").await;
    let stored = stored_text(&app).await;
    assert!(
        stored.contains(&sha256_hex(&a.token)),
        "the session is found by the SHA-256 of its token"
    );
    assert!(!stored.contains(&a.token), "a raw token is stored");
    assert!(!stored.contains(PASSWORD), "a raw password is stored");
    assert!(
        stored.contains("$argon2id$"),
        "passwords are Argon2id hashes"
    );
    if app.config.database.is_none() {
        // Nor anywhere in the files, free pages and WAL included.
        for entry in std::fs::read_dir(app.data_dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                let found = bytes
                    .windows(a.token.len())
                    .any(|w| w == a.token.as_bytes());
                assert!(!found, "{} holds a raw token", path.display());
            }
        }
    }
}

/// Every row of every table, as lower-case text (binary columns as hex).
async fn stored_text(app: &TestApp) -> String {
    match app.config.database.as_deref() {
        None => sqlite_rows(&app.data_dir.path().join("mirage.db")),
        Some(url) => postgres_rows(url).await,
    }
}

fn sqlite_rows(path: &std::path::Path) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut text = String::new();
    for table in tables {
        let mut statement = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = statement.column_count();
        let mut rows = statement.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for column in 0..columns {
                use rusqlite::types::ValueRef;
                match row.get_ref(column).unwrap() {
                    ValueRef::Text(t) => text.push_str(&String::from_utf8_lossy(t)),
                    ValueRef::Blob(b) => {
                        b.iter()
                            .for_each(|byte| text.push_str(&format!("{byte:02x}")));
                    }
                    ValueRef::Integer(n) => text.push_str(&n.to_string()),
                    ValueRef::Real(x) => text.push_str(&x.to_string()),
                    ValueRef::Null => {}
                }
                text.push('|');
            }
            text.push('\n');
        }
    }
    text
}

async fn postgres_rows(url: &str) -> String {
    use sqlx_core::query_scalar::query_scalar;
    let pool = sqlx_postgres::PgPool::connect(url).await.unwrap();
    let tables: Vec<String> = query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut text = String::new();
    for table in tables {
        // A row cast to text shows bytea as `\x<hex>`.
        let rows: Option<String> = query_scalar(&format!(
            "SELECT string_agg(t::text, E'\\n') FROM \"{table}\" t"
        ))
        .fetch_one(&pool)
        .await
        .unwrap();
        text.push_str(&rows.unwrap_or_default());
        text.push('\n');
    }
    pool.close().await;
    text
}

#[tokio::test]
async fn stored_text_comes_back_as_json_never_as_html() {
    let app = spawn_app().await;
    let (name, token) = app.new_user("markup").await;
    let (other, _) = app.new_user("markup_to").await;
    let script = "<script>alert(document.cookie)</script><img src=x onerror=alert(1)>";
    let css = "</style><script>alert(1)</script>";
    let t = Some(token.as_str());
    let post = app
        .post_json("/api/create_post", t, json!({"content": script}))
        .await;
    let post_id = body(post).await["id"].as_i64().unwrap();
    let settings = json!({"description": script, "custom_css": css, "avatar_url": script});
    assert_eq!(
        app.post_json("/api/user/settings", t, settings)
            .await
            .status(),
        StatusCode::OK
    );
    app.post_json(
        "/api/reply_to_post",
        t,
        json!({"post_id": post_id, "content": script}),
    )
    .await;
    app.post_json(
        "/api/send_inbox_message",
        t,
        json!({"recipient": other, "message": script}),
    )
    .await;
    let room = app
        .post_json(
            "/api/create_room",
            t,
            json!({"room_name": unique_name("markup")}),
        )
        .await;
    let room_id = body(room).await["room_id"].as_i64().unwrap();
    app.post_json(
        "/api/send_room_message",
        t,
        json!({"room_id": room_id, "message": script}),
    )
    .await;

    let cases = [
        (format!("/api/get_post_by_id/{post_id}"), "/content"),
        (format!("/api/user/{name}"), "/description"),
        (format!("/api/user/{name}"), "/custom_css"),
        (format!("/api/get_replies/{post_id}"), "/replies/0/content"),
        ("/api/inbox".to_owned(), "/messages/0/message"),
        (
            format!("/api/get_room_messages?room_id={room_id}"),
            "/messages/0/message",
        ),
    ];
    for (path, pointer) in cases {
        let resp = app.get(&path, t).await;
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(content_type, "application/json", "{path}");
        let value = body(resp).await;
        let stored = value.pointer(pointer).and_then(Value::as_str).unwrap();
        // Returned exactly as stored, as a JSON string: the client decides.
        assert!(
            stored == script || stored == css,
            "{path}{pointer}: {stored}"
        );
    }
    // Errors and unknown paths are JSON too, never an HTML page.
    for path in ["/api/get_post_by_id/<script>", "/<script>alert(1)</script>"] {
        let resp = app.get(path, None).await;
        assert_eq!(resp.headers()["content-type"], "application/json", "{path}");
        assert_error(resp, StatusCode::NOT_FOUND).await;
    }
}

#[tokio::test]
async fn custom_css_is_limited_to_10000_characters() {
    let app = spawn_app().await;
    let (name, token) = app.new_user("css").await;
    // Characters, not bytes: 10,000 two-byte characters fit.
    let longest = "é".repeat(10_000);
    let resp = app
        .post_json(
            "/api/user/settings",
            Some(&token),
            json!({"custom_css": longest}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let over = "a".repeat(10_001);
    let resp = app
        .post_json(
            "/api/user/settings",
            Some(&token),
            json!({"custom_css": over}),
        )
        .await;
    let error = assert_error(resp, StatusCode::BAD_REQUEST).await;
    assert!(error.contains("custom_css"), "{error}");
    let profile = body(app.get(&format!("/api/user/{name}"), None).await).await;
    assert_eq!(
        profile["custom_css"],
        longest.as_str(),
        "the rejected value was not kept"
    );
}
