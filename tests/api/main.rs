//! Integration tests: the real server on port 0, spoken to over HTTP.

mod accounts;
mod backend;
mod files;
mod helpers;
mod inbox;
mod openapi;
mod posts;
mod profiles;
mod quickstart;
mod rooms;
mod status_codes;
mod ws;
