//! Integration tests: the real server on port 0, spoken to over HTTP.

mod accounts;
mod backend;
mod delete_account;
mod edge;
mod files;
mod helpers;
mod inbox;
mod logs;
mod metrics;
mod openapi;
mod posts;
mod profiles;
mod quickstart;
mod rate_limits;
mod rooms;
mod security;
mod security_access;
mod status_codes;
mod ws;
