//! `mirage backup` while the server serves and keeps writing; a second
//! server started on the backup serves the data.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::process::*;

#[tokio::test]
async fn an_online_backup_serves_the_data_written_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let ann = server.new_user("ann").await;
    let bob = server.new_user("bob").await;
    server
        .ok("/api/follow", &bob, json!({"username": "ann"}))
        .await;
    let mut posts = Vec::new();
    for i in 0..20 {
        let v = server
            .ok(
                "/api/create_post",
                &ann,
                json!({"content": format!("post {i} #backup")}),
            )
            .await;
        posts.push(v["id"].as_i64().unwrap());
    }
    server
        .ok(
            "/api/vote_post",
            &bob,
            json!({"post_id": posts[0], "vote_type": "up"}),
        )
        .await;
    server
        .ok(
            "/api/send_inbox_message",
            &bob,
            json!({"recipient": "ann", "message": "kept"}),
        )
        .await;

    // Writes keep coming while the backup runs (bounded: at most 5 s).
    let writer = {
        let client = server.client.clone();
        let url = server.url("/api/create_post");
        let token = bob.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut written = 0;
            while started.elapsed() < Duration::from_secs(5) && written < 2000 {
                let r = client
                    .post(&url)
                    .header("Authorization", &token)
                    .json(&json!({"content": "during the backup"}))
                    .send()
                    .await;
                if r.is_err() {
                    break;
                }
                written += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let target_dir = tempfile::tempdir().unwrap();
    let target = target_dir.path().join("mirage.db");
    let target_arg = target.to_str().unwrap();
    let out = mirage(dir.path(), &["backup", target_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("mirage backup:"));
    writer.abort();

    // No partial file is left, and an existing backup is not overwritten
    // unless asked.
    let names: Vec<String> = std::fs::read_dir(target_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["mirage.db"]);
    let size = std::fs::metadata(&target).unwrap().len();
    let refused = mirage(dir.path(), &["backup", target_arg]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    assert_eq!(std::fs::metadata(&target).unwrap().len(), size);
    let forced = mirage(dir.path(), &["backup", "--force", target_arg]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );

    // The backup is a database on its own: check it, then serve it.
    let check = mirage(target_dir.path(), &["check"]);
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
    drop(server);
    let restored = Server::start(target_dir.path(), &[]);
    for (i, id) in posts.iter().enumerate() {
        let post = restored
            .get(&format!("/api/get_post_by_id/{id}"), None)
            .await;
        assert_eq!(post["content"], format!("post {i} #backup"));
    }
    let stats = restored.get("/api/user/ann", None).await["stats"].clone();
    assert_eq!(
        stats,
        json!({"followers": 1, "following": 0, "posts": 20, "upvotes": 1, "downvotes": 0})
    );
    let token = restored.login("ann").await;
    let inbox = restored.get("/api/inbox", Some(&token)).await;
    assert_eq!(inbox["messages"][0]["message"], "kept");
}
