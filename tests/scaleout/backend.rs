//! Points each test server at the throwaway scale-out services: a fresh
//! PostgreSQL database, a fresh Redis key prefix, a fresh S3 bucket.
//! A thin combiner: each service lives in its own module.

use std::{
    collections::HashSet,
    io::Write,
    sync::{Mutex, Once},
};

use mirage::Config;

/// Adjusts a fresh test configuration to the scale-out backends that are
/// available on this machine.
pub async fn configure(config: &mut Config) {
    crate::postgres::configure(config).await;
    crate::redis::configure(config);
    crate::s3::configure(config).await;
    announce(config);
}

/// Says once, past the test harness's output capture, which services this
/// run really exercises (so a CI log shows them).
fn announce(config: &Config) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let on = |set: bool, name: &str| {
            if set {
                format!("{name}: yes")
            } else {
                format!("{name}: SKIPPED")
            }
        };
        let line = format!(
            "\n=== scale-out suite backends: {}, {}, {}\n",
            on(config.database.is_some(), "PostgreSQL"),
            on(config.redis.is_some(), "Redis"),
            on(config.files.is_some(), "S3"),
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    });
}

/// A backend whose server is missing: loud once, or fatal when CI requires
/// every backend (`MIRAGE_REQUIRE_SCALEOUT=1`).
pub fn skipped(backend: &str, why: &str) {
    if std::env::var("MIRAGE_REQUIRE_SCALEOUT").is_ok_and(|v| v == "1") {
        panic!("{backend} is required (MIRAGE_REQUIRE_SCALEOUT=1) but {why}");
    }
    static WARNED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut warned = WARNED.lock().unwrap();
    if warned.get_or_insert_default().insert(backend.to_owned()) {
        let line = format!(
            "\n!!! SKIPPING {backend} in the scale-out suite: {why}; the embedded default is used instead\n"
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}
