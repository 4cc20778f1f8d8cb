//! `mirage check` on the scale-out backends: the binary, pointed at the
//! test server's PostgreSQL database and file store, finds drift written
//! behind the server's back and repairs it while the server runs.

use std::process::{Command, Output};

use reqwest::StatusCode;
use serde_json::json;
use sqlx_core::{connection::Connection, query::query};
use sqlx_postgres::PgConnection;

use crate::helpers::*;

fn mirage_check(app: &TestApp, repair: bool) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mirage"));
    command.arg("--data-dir").arg(app.data_dir.path());
    if let Some(database) = &app.config.database {
        command.args(["--database", database]);
    }
    if let Some(files) = &app.config.files {
        command.args(["--files", files]);
    }
    command.arg("check");
    if repair {
        command.arg("--repair");
    }
    command.env("NO_COLOR", "1").output().expect("mirage runs")
}

fn report(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn check_finds_and_repairs_drift_on_the_configured_backend() {
    let app = spawn_app().await;
    let (ann, at) = app.new_user("chk").await;
    let (_, bt) = app.new_user("chk").await;
    assert_eq!(
        app.post_json("/api/follow", Some(&bt), json!({"username": ann}))
            .await
            .status(),
        StatusCode::OK
    );
    let r = app
        .post_json("/api/create_post", Some(&at), json!({"content": "checked"}))
        .await;
    let post = body(r).await["id"].as_i64().unwrap();
    let r = app
        .post_json(
            "/api/vote_post",
            Some(&bt),
            json!({"post_id": post, "vote_type": "up"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let room = body(
        app.post_json(
            "/api/create_room",
            Some(&at),
            json!({"room_name": "checked"}),
        )
        .await,
    )
    .await["room_id"]
        .as_i64()
        .unwrap();
    let url = app.upload(&at, room, "kept.txt", b"kept").await;

    let clean = mirage_check(&app, false);
    assert_eq!(clean.status.code(), Some(0), "{}", report(&clean));

    let corrupt = format!(
        "UPDATE posts SET upvotes = 5 WHERE id = {post};
         UPDATE users SET followers = 0 WHERE username = '{ann}';
         INSERT INTO files (id, room_id, user_id, filename, content_type, size, created_at)
             VALUES ('nobytes', {room}, 1, 'gone.txt', 'text/plain', 3, 0);"
    );
    match &app.config.database {
        Some(url) => {
            let mut conn = PgConnection::connect(url).await.unwrap();
            for statement in corrupt.split(';').filter(|s| !s.trim().is_empty()) {
                query(statement).execute(&mut conn).await.unwrap();
            }
            conn.close().await.unwrap();
        }
        None => {
            let db = rusqlite::Connection::open(app.data_dir.path().join("mirage.db")).unwrap();
            db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
            db.execute_batch(&corrupt).unwrap();
        }
    }

    let drift = mirage_check(&app, false);
    let text = report(&drift);
    assert_eq!(drift.status.code(), Some(1), "{text}");
    for expected in [
        "posts.upvotes differs from its up votes",
        "users.followers differs from their followers",
        "files whose bytes are missing",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    if let Some(database) = &app.config.database {
        // The report names the database, never its password.
        let password = database.split('@').next().unwrap().split(':').nth(2);
        if let Some(password) = password.filter(|p| !p.is_empty()) {
            assert!(!text.contains(password));
        }
    }

    let repair = mirage_check(&app, true);
    assert_eq!(repair.status.code(), Some(0), "{}", report(&repair));
    let again = mirage_check(&app, false);
    assert_eq!(again.status.code(), Some(0), "{}", report(&again));

    let v = body(app.get(&format!("/api/get_post_by_id/{post}"), None).await).await;
    assert_eq!(v["upvotes"], 1);
    let v = body(app.get(&format!("/api/user/{ann}"), None).await).await;
    assert_eq!(v["stats"]["followers"], 1);
    let kept = app.client.get(&url).send().await.unwrap();
    assert_eq!(kept.status(), StatusCode::OK);
    assert_eq!(kept.bytes().await.unwrap().as_ref(), b"kept");
}

/// What `mirage check` asks of the configured backends to find stored
/// files that no row refers to: the file store lists its files by age
/// (file ids only, and on S3 only those directly under the prefix), and
/// the database says which of them have rows. The ages are moved rather
/// than waited for: a stray file counts only once it is an hour old.
#[tokio::test]
async fn stored_files_are_listed_by_age_and_matched_with_their_rows() {
    use std::time::{Duration, SystemTime};

    let app = spawn_app().await;
    let (_, token) = app.new_user("listed").await;
    let room = app.create_room(&token, "listed", None).await;
    let url = app.upload(&token, room, "a.txt", b"kept").await;
    let uploaded = url.split('/').rev().nth(1).unwrap().to_owned();
    let files = mirage::store::blobs::open_file_store(&app.config).unwrap();
    let put = |id: &'static str| {
        let (files, dir) = (files.clone(), app.data_dir.path().to_owned());
        async move {
            let temp = dir.join("upload.part");
            std::fs::write(&temp, b"stray").unwrap();
            files.put_file(id, &temp).await.unwrap();
        }
    };
    let stray = "fedcba9876543210fedcba9876543210";
    put(stray).await;
    put("notes.txt").await;
    if app.config.files.is_some() {
        // On S3, below the files' own level: not one of them.
        put("deeper/0123456789abcdef0123456789abcdef").await;
    }

    let soon = SystemTime::now() + Duration::from_secs(60);
    let mut listed = files.stored_before(soon).await.unwrap();
    listed.sort();
    let mut expected = vec![uploaded.clone(), stray.to_owned()];
    expected.sort();
    assert_eq!(listed, expected);
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    assert!(files.stored_before(an_hour_ago).await.unwrap().is_empty());

    if let Some(database) = &app.config.database {
        let with_rows = mirage::store::postgres::file_rows_among(database, &listed)
            .await
            .unwrap();
        assert_eq!(with_rows, [uploaded].into());
    }
}
