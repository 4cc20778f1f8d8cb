//! Points each test server at the throwaway scale-out services: a fresh
//! PostgreSQL database, a fresh Redis key prefix, a fresh S3 bucket.

use mirage::Config;

/// Adjusts a fresh test configuration to the scale-out backends that are
/// available on this machine.
pub async fn configure(config: &mut Config) {
    // Filled in as each backend lands (PostgreSQL, Redis, S3).
    crate::s3::configure(config).await;
}
