//! The whole integration suite again, against the scale-out services:
//! PostgreSQL, Redis and S3-compatible storage, started as throwaway servers
//! by `backend.rs`. When a service's binaries are missing its part is
//! skipped with a loud message (and with `MIRAGE_REQUIRE_SCALEOUT=1`, as in
//! CI, the run fails instead).

mod backend;
mod check;
#[path = "../api/helpers.rs"]
mod helpers;
mod multinode;
mod postgres;
mod redis;
mod tls;

#[path = "../api/accounts.rs"]
mod accounts;
#[path = "../api/delete_account.rs"]
mod delete_account;
#[path = "../api/files.rs"]
mod files;
#[path = "../api/inbox.rs"]
mod inbox;
#[path = "../api/metrics.rs"]
mod metrics;
#[path = "../api/posts.rs"]
mod posts;
#[path = "../api/profiles.rs"]
mod profiles;
#[path = "../api/quickstart.rs"]
mod quickstart;
#[path = "../api/rate_limits.rs"]
mod rate_limits;
#[path = "../api/rooms.rs"]
mod rooms;
#[path = "../api/security.rs"]
mod security;
#[path = "../api/security_access.rs"]
mod security_access;
#[path = "../api/status_codes.rs"]
mod status_codes;
#[path = "../api/ws.rs"]
mod ws;

mod s3;
