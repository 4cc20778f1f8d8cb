//! The backend of this suite: the embedded default (SQLite, in-process hub,
//! files in the data directory). Nothing to configure.

use mirage::Config;

/// Adjusts a fresh test configuration to this suite's backend.
pub async fn configure(_config: &mut Config) {}
