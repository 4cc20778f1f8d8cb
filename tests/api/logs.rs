//! What the server writes to its logs: the real binary, every log level on.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde_json::json;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::{Child, Command},
};

use crate::helpers::body;

/// Generous: only reached when something is wrong.
const WAIT: Duration = Duration::from_secs(30);

/// Starts `mirage` with `--log trace`; returns it, its base URL and the
/// log lines read so far.
async fn start_logging_server(data_dir: &std::path::Path) -> (Child, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mirage"))
        .args(["--listen", "127.0.0.1:0", "--log", "trace", "--data-dir"])
        .arg(data_dir)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mirage starts");
    let mut lines = BufReader::new(child.stdout.as_mut().expect("stdout")).lines();
    let mut logs = String::new();
    let deadline = Instant::now() + WAIT;
    let addr = loop {
        let line = tokio::time::timeout(deadline - Instant::now(), lines.next_line())
            .await
            .expect("mirage says where it listens in time")
            .expect("stdout readable")
            .expect("mirage still running");
        logs.push_str(&line);
        logs.push('\n');
        if line.contains("mirage listening") {
            let addr = line.split("addr=").nth(1).expect("addr field");
            break addr.split_whitespace().next().unwrap().to_owned();
        }
    };
    (child, format!("http://{addr}"), logs)
}

#[tokio::test]
async fn tokens_and_passwords_never_reach_the_logs_even_at_trace_level() {
    let data_dir = tempfile::tempdir().unwrap();
    let (mut child, base, logs) = start_logging_server(data_dir.path()).await;
    let mut stdout = child.stdout.take().unwrap();
    // Keep draining the log while the test runs, so the server never blocks on it.
    let reader = tokio::spawn(async move {
        let mut rest = String::new();
        let _ = stdout.read_to_string(&mut rest).await;
        (stdout, rest)
    });
    let client = reqwest::Client::new();
    let password = "correct-horse-battery-staple";
    let register = client
        .post(format!("{base}/api/register"))
        .json(&json!({"username": "logged_user", "email": "logged@example.com", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), StatusCode::CREATED);
    let login = client
        .post(format!("{base}/api/login"))
        .json(&json!({"username": "logged_user", "password": password}))
        .send()
        .await
        .unwrap();
    let token = body(login).await["token"].as_str().unwrap().to_owned();
    // Browsers' WebSockets can only send the token in the query string.
    let ws_url = format!(
        "{}/api/ws?token={token}",
        base.replacen("http://", "ws://", 1)
    );
    let (socket, response) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    assert_eq!(response.status(), 101);
    drop(socket);
    let inbox = client
        .get(format!("{base}/api/inbox?token={token}"))
        .header("Authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(inbox.status(), StatusCode::OK);

    child.start_kill().expect("stop signal");
    let (_, rest) = tokio::time::timeout(WAIT, reader)
        .await
        .expect("the log ends")
        .unwrap();
    let _ = child.wait().await;
    let logs = logs + &rest;
    assert!(logs.contains("/api/ws"), "requests are logged: {logs}");
    for secret in [token.as_str(), password, "logged@example.com"] {
        assert!(!logs.contains(secret), "{secret:?} was logged: {logs}");
    }
}
