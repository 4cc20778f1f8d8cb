//! `spawn_app()` and small typed client helpers shared by every test file.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use mirage::{App, Config};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub data_dir: tempfile::TempDir,
    /// The configuration the server runs with (restarts reuse it).
    pub config: Config,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// Starts a server on a free port with a fresh data directory.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like `spawn_app`, after letting the test adjust the configuration.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::for_tests(data_dir.path().to_path_buf());
    crate::backend::configure(&mut config).await;
    adjust(&mut config);
    let (base, shutdown, server) = start(config.clone()).await;
    TestApp {
        base,
        client: Client::new(),
        data_dir,
        config,
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

async fn start(
    config: Config,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let app = App::build(config).await.expect("app builds");
    let addr = app.local_addr().expect("bound");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.serve(async {
            let _ = rx.await;
        })
        .await
        .expect("server runs");
    });
    (format!("http://{addr}"), tx, server)
}

/// A unique username for this test process.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{prefix}{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Stops the server and starts a new one on the same data directory.
    pub async fn restart(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        let (base, shutdown, server) = start(self.config.clone()).await;
        self.base = base;
        self.shutdown = Some(shutdown);
        self.server = Some(server);
    }

    /// A second server on the same configuration (same database, Redis
    /// prefix and file storage): another node of the same deployment.
    pub async fn second_node(&self) -> TestApp {
        let (base, shutdown, server) = start(self.config.clone()).await;
        TestApp {
            base,
            client: Client::new(),
            data_dir: tempfile::tempdir().expect("temp dir"),
            config: self.config.clone(),
            shutdown: Some(shutdown),
            server: Some(server),
        }
    }

    /// Uploads `bytes` as `name` into a room; returns the file URL.
    pub async fn upload(&self, token: &str, room_id: i64, name: &str, bytes: &[u8]) -> String {
        let resp = self.send_upload(token, room_id, name, bytes).await;
        assert_eq!(resp.status(), StatusCode::OK);
        body(resp).await["file_url"]
            .as_str()
            .expect("file_url")
            .to_owned()
    }

    /// Sends an upload of `bytes` as `name` into a room; the response.
    pub async fn send_upload(
        &self,
        token: &str,
        room_id: i64,
        name: &str,
        bytes: &[u8],
    ) -> Response {
        let form = reqwest::multipart::Form::new()
            .text("room_id", room_id.to_string())
            .part(
                "file",
                reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(name.to_owned()),
            );
        self.client
            .post(self.url("/api/upload_file"))
            .header("Authorization", token)
            .multipart(form)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        let mut req = self.client.post(self.url(path)).json(&body);
        if let Some(token) = token {
            req = req.header("Authorization", token);
        }
        req.send().await.expect("request sent")
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut req = self.client.get(self.url(path));
        if let Some(token) = token {
            req = req.header("Authorization", token);
        }
        req.send().await.expect("request sent")
    }

    pub async fn register(&self, username: &str) -> Response {
        self.post_json(
            "/api/register",
            None,
            json!({"username": username, "email": format!("{username}@example.com"), "password": "password123"}),
        )
        .await
    }

    pub async fn login(&self, username: &str) -> String {
        let resp = self
            .post_json(
                "/api/login",
                None,
                json!({"username": username, "password": "password123"}),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        body(resp).await["token"]
            .as_str()
            .expect("token")
            .to_owned()
    }

    /// Registers a fresh user and logs in: (username, token).
    pub async fn new_user(&self, prefix: &str) -> (String, String) {
        let name = unique_name(prefix);
        assert_eq!(self.register(&name).await.status(), StatusCode::CREATED);
        let token = self.login(&name).await;
        (name, token)
    }

    /// Posts `content` as the holder of `token`; the new post's id.
    pub async fn create_post(&self, token: &str, content: &str) -> i64 {
        let resp = self
            .post_json(
                "/api/create_post",
                Some(token),
                json!({ "content": content }),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        body(resp).await["id"].as_i64().expect("post id")
    }

    /// Creates a room as the holder of `token`, private when a password is
    /// given; the new room's id.
    pub async fn create_room(&self, token: &str, name: &str, password: Option<&str>) -> i64 {
        let req = match password {
            Some(pw) => json!({ "room_name": name, "is_private": 1, "password": pw }),
            None => json!({ "room_name": name }),
        };
        let resp = self.post_json("/api/create_room", Some(token), req).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        body(resp).await["room_id"].as_i64().expect("room id")
    }
}

/// The JSON body of a response.
pub async fn body(resp: Response) -> Value {
    resp.json().await.expect("JSON body")
}

/// Asserts the status and that the body is a JSON error (has `error`, no `message`).
pub async fn assert_error(resp: Response, status: StatusCode) -> String {
    assert_eq!(resp.status(), status, "unexpected status");
    let value = body(resp).await;
    assert!(
        value.get("message").is_none(),
        "error with message: {value}"
    );
    value["error"].as_str().expect("error field").to_owned()
}

/// A post's (upvotes, downvotes, replies) as `get_post_by_id` shows them.
pub async fn post_counts(app: &TestApp, post_id: i64) -> (i64, i64, i64) {
    let r = app
        .get(&format!("/api/get_post_by_id/{post_id}"), None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v = body(r).await;
    (
        v["upvotes"].as_i64().unwrap(),
        v["downvotes"].as_i64().unwrap(),
        v["replies"].as_i64().unwrap(),
    )
}
