//! Points each test server at the throwaway scale-out services: a fresh
//! PostgreSQL database, a fresh Redis key prefix, a fresh S3 bucket.
//! A thin combiner: each service lives in its own module.

use std::{collections::HashSet, sync::Mutex};

use mirage::Config;

/// Adjusts a fresh test configuration to the scale-out backends that are
/// available on this machine.
pub async fn configure(config: &mut Config) {
    crate::postgres::configure(config).await;
    crate::redis::configure(config);
    crate::s3::configure(config).await;
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
        eprintln!(
            "\n!!! SKIPPING {backend} in the scale-out suite: {why}; the embedded default is used instead\n"
        );
    }
}
