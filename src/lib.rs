//! Mirage: a social network and chat server with a JSON HTTP API.

pub mod app;
pub mod auth;
pub mod chat;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod metrics;
pub mod ops;
pub mod rate_limit;
pub mod store;

pub use app::{App, AppState};
pub use config::Config;
