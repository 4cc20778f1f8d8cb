//! Points each test server at the throwaway scale-out services: a fresh
//! PostgreSQL database, a fresh Redis key prefix, a fresh S3 bucket.
//! A thin combiner: each service lives in its own module.

use mirage::Config;

/// Adjusts a fresh test configuration to the scale-out backends that are
/// available on this machine.
pub async fn configure(config: &mut Config) {
    crate::postgres::configure(config).await;
}
