//! What the server writes to its logs.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use crate::{helpers::spawn_app, ws::connect_query};

/// Log lines captured in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_token_in_a_query_string_never_reaches_the_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // This test's runtime runs the server on this thread too, so a
    // thread-local subscriber sees every request of this test only.
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = spawn_app().await;
    let (_, token) = app.new_user("logged").await;
    let socket = connect_query(&app, "", &format!("?token={token}")).await;
    drop(socket);
    let resp = app
        .get(&format!("/api/inbox?token={token}"), Some(&token))
        .await;
    assert!(resp.status().is_success());
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("/api/ws"), "requests are logged: {logs}");
    assert!(!logs.contains(&token), "a token was logged: {logs}");
}
