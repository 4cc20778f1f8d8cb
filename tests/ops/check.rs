//! `mirage check` beside a running server: a clean database passes; drift
//! written behind the server's back is reported, then repaired.

use rusqlite::Connection;
use serde_json::json;

use crate::process::*;

#[tokio::test]
async fn check_reports_drift_and_repair_fixes_it_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let ann = server.new_user("ann").await;
    let bob = server.new_user("bob").await;
    server
        .ok("/api/follow", &bob, json!({"username": "ann"}))
        .await;
    let post = server
        .ok("/api/create_post", &ann, json!({"content": "hello #check"}))
        .await["id"]
        .as_i64()
        .unwrap();
    server
        .ok(
            "/api/vote_post",
            &bob,
            json!({"post_id": post, "vote_type": "up"}),
        )
        .await;
    server
        .ok(
            "/api/reply_to_post",
            &bob,
            json!({"post_id": post, "content": "hi"}),
        )
        .await;

    let clean = mirage(dir.path(), &["check"]);
    assert_eq!(clean.status.code(), Some(0), "{}", stdout(&clean));
    assert!(stdout(&clean).contains("ok: every counter and reference is right"));

    // Drift an outside writer could cause: with foreign keys off, orphans
    // get in.
    let db = Connection::open(database(dir.path())).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    db.execute_batch(&format!(
        "PRAGMA foreign_keys = OFF;
         UPDATE post_counts SET upvotes = 5 WHERE post_id = {post};
         INSERT INTO post_counts (user_id, post_id, upvotes) VALUES (1, 777777, 3);
         UPDATE users SET followers = 0 WHERE username = 'ann';
         INSERT INTO votes (post_id, user_id, kind) VALUES (999999, 1, 1);
         INSERT INTO follows (follower_id, followee_id, created_at) VALUES (888888, 1, 0);
         INSERT INTO files (id, room_id, user_id, filename, content_type, size, created_at)
             VALUES ('nobytes', 1, 1, 'a.txt', 'text/plain', 3, 0);"
    ))
    .unwrap();

    let drift = mirage(dir.path(), &["check"]);
    let report = stdout(&drift);
    assert_eq!(drift.status.code(), Some(1), "{report}");
    for expected in [
        "a post's upvotes differ from its up votes",
        "post counters of no post by that author",
        "users.followers differs from their followers",
        "votes on a missing post or by a missing user",
        "follows with a missing side",
        "files in a missing room or by a missing user",
        "files whose bytes are missing",
    ] {
        assert!(report.contains(expected), "no {expected:?} in:\n{report}");
    }
    // Reporting changed nothing.
    let r = server
        .get(&format!("/api/get_post_by_id/{post}"), None)
        .await;
    assert_eq!(r["upvotes"], 5);

    // The settings may follow the command name too.
    let repair = std::process::Command::new(BINARY)
        .args(["check", "--repair", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(repair.status.code(), Some(0), "{}", stdout(&repair));
    assert!(stdout(&repair).contains("repaired"), "{}", stdout(&repair));
    let again = mirage(dir.path(), &["check"]);
    assert_eq!(again.status.code(), Some(0), "{}", stdout(&again));

    // The running server serves the repaired values.
    let r = server
        .get(&format!("/api/get_post_by_id/{post}"), None)
        .await;
    assert_eq!(
        (r["upvotes"].as_i64(), r["replies"].as_i64()),
        (Some(1), Some(1))
    );
    let stats = server.get("/api/user/ann", None).await["stats"].clone();
    assert_eq!(
        stats,
        json!({"followers": 1, "following": 0, "posts": 1, "upvotes": 1, "downvotes": 0})
    );
    let orphans: i64 = db
        .query_row(
            "SELECT (SELECT COUNT(*) FROM votes WHERE post_id = 999999)
                  + (SELECT COUNT(*) FROM follows WHERE follower_id = 888888)
                  + (SELECT COUNT(*) FROM files WHERE id = 'nobytes')
                  + (SELECT COUNT(*) FROM post_counts WHERE post_id = 777777)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0);
}

#[test]
fn check_refuses_a_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = mirage(&dir.path().join("nothing-here"), &["check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no database at"));
    assert!(!dir.path().join("nothing-here").exists());
}

/// Bytes in the file store that no file row refers to (a process that
/// died between a row and its bytes leaves them) are reported, and removed
/// by `--repair`; bytes with a row, bytes stored within the hour (an
/// upload stores its bytes just before its row) and names that are not
/// file ids are left alone.
#[tokio::test]
async fn check_reports_and_repair_removes_stored_files_no_row_refers_to() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let ann = server.new_user("ann").await;
    let room = server
        .ok("/api/create_room", &ann, json!({"room_name": "shared"}))
        .await["room_id"]
        .as_i64()
        .unwrap();
    let files = dir.path().join("files");
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    let store = |name: &str, old: bool| {
        let file = std::fs::File::create(files.join(name)).unwrap();
        std::io::Write::write_all(&mut &file, b"bytes").unwrap();
        if old {
            file.set_modified(two_hours_ago).unwrap();
        }
    };
    let (kept, stray, young) = (
        "0123456789abcdef0123456789abcdef",
        "fedcba9876543210fedcba9876543210",
        "00000000000000000000000000000001",
    );
    store(kept, true);
    store(stray, true);
    store(young, false);
    store("notes.txt", true);
    let db = Connection::open(database(dir.path())).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    db.execute(
        "INSERT INTO files (id, room_id, user_id, filename, content_type, size, created_at)
         VALUES (?1, ?2, 1, 'a.txt', 'text/plain', 5, 0)",
        rusqlite::params![kept, room],
    )
    .unwrap();

    let found = mirage(dir.path(), &["check"]);
    let report = stdout(&found);
    assert_eq!(found.status.code(), Some(1), "{report}");
    assert!(
        report.contains("       1 stored files no file row refers to (older than an hour)\n"),
        "{report}"
    );
    assert!(files.join(stray).exists(), "reporting removed nothing");

    let repaired = mirage(dir.path(), &["check", "--repair"]);
    let report = stdout(&repaired);
    assert_eq!(repaired.status.code(), Some(0), "{report}");
    assert!(report.contains("1 leftover files removed"), "{report}");
    assert!(!files.join(stray).exists());
    for left in [kept, young, "notes.txt"] {
        assert!(files.join(left).exists(), "{left} was removed");
    }
    let again = mirage(dir.path(), &["check"]);
    assert_eq!(again.status.code(), Some(0), "{}", stdout(&again));
}
