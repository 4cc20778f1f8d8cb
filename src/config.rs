//! Command-line and environment configuration.

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser;

use crate::store::sqlite::Durability;

/// Mirage: a social network and chat server speaking a JSON HTTP API.
#[derive(Debug, Clone, Parser)]
#[command(name = "mirage", version, about)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "MIRAGE_LISTEN", default_value = "127.0.0.1:5000")]
    pub listen: SocketAddr,

    /// Directory holding the database and uploaded files (created on start).
    #[arg(long, env = "MIRAGE_DATA_DIR", default_value = "./mirage-data")]
    pub data_dir: PathBuf,

    /// Database URL. Unset: the embedded SQLite database in the data
    /// directory. `postgres://user:pass@host/db`: PostgreSQL.
    #[arg(long, env = "MIRAGE_DATABASE")]
    pub database: Option<String>,

    /// When the embedded database acknowledges a write: `full` once it is
    /// fsynced (survives power loss), `normal` once it is in the WAL file
    /// (survives a crash of the process). Concurrent writes share commits.
    #[arg(long, env = "MIRAGE_SQLITE_DURABILITY", value_enum, default_value_t = Durability::Full)]
    pub sqlite_durability: Durability,

    /// Most connections each server process opens to PostgreSQL.
    #[arg(long, env = "MIRAGE_DATABASE_POOL_SIZE", default_value_t = 16)]
    pub database_pool_size: u32,

    /// Redis URL (`redis://host:port/db`). Set: room-message retention and
    /// real-time fan-out live in Redis, shared by every node.
    #[arg(long, env = "MIRAGE_REDIS")]
    pub redis: Option<String>,

    /// Prefix of every Redis key and channel, so several deployments (or
    /// test runs) can share one Redis.
    #[arg(long, env = "MIRAGE_REDIS_PREFIX", default_value = "mirage")]
    pub redis_prefix: String,

    /// Where uploads are stored. Unset: `<data-dir>/files`.
    /// `s3://bucket?endpoint=http://host:port&region=...`: S3-compatible storage.
    #[arg(long, env = "MIRAGE_FILES")]
    pub files: Option<String>,

    /// Public base URL used in file URLs, e.g. `https://mirage.example`.
    /// When unset, the URL is built from the request's `Host` header.
    #[arg(long, env = "MIRAGE_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Seconds a room message is kept before it expires.
    #[arg(long, env = "MIRAGE_ROOM_MESSAGE_TTL_SECS", default_value_t = 1800)]
    pub room_message_ttl_secs: u64,

    /// How many of its newest messages each room keeps.
    #[arg(long, env = "MIRAGE_ROOM_MESSAGE_LIMIT", default_value_t = 100)]
    pub room_message_limit: u32,

    /// Largest accepted upload, in bytes (24 MiB).
    #[arg(long, env = "MIRAGE_MAX_UPLOAD_BYTES", default_value_t = 25_165_824)]
    pub max_upload_bytes: u64,

    /// Largest accepted JSON request body, in bytes (64 KiB).
    #[arg(long, env = "MIRAGE_MAX_JSON_BYTES", default_value_t = 65_536)]
    pub max_json_bytes: usize,

    /// Threads that hash passwords (Argon2id, 19 MiB each), at low CPU
    /// priority. Unset: one per core.
    #[arg(long, env = "MIRAGE_HASHING_THREADS")]
    pub hashing_threads: Option<usize>,

    /// How many public rooms may exist at once.
    #[arg(long, env = "MIRAGE_MAX_PUBLIC_ROOMS", default_value_t = 5)]
    pub max_public_rooms: u32,

    /// Events a WebSocket client may have waiting before it counts as too
    /// slow and is disconnected.
    #[arg(long, env = "MIRAGE_WS_QUEUE_LEN", default_value_t = 256)]
    pub ws_queue_len: usize,

    /// Seconds between the server's WebSocket pings.
    #[arg(long, env = "MIRAGE_WS_PING_INTERVAL_SECS", default_value_t = 20)]
    pub ws_ping_interval_secs: u64,

    /// A WebSocket that sends nothing (not even a pong) for this many
    /// seconds, or cannot take a frame within it, is closed.
    #[arg(long, env = "MIRAGE_WS_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub ws_idle_timeout_secs: u64,

    /// Turns on `GET /metrics` (Prometheus text) for scrapers that send
    /// `Authorization: Bearer <this token>`. Unset: `/metrics` is 404.
    #[arg(long, env = "MIRAGE_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// Log filter in `tracing` syntax, e.g. `info` or `mirage=debug`.
    #[arg(long, env = "MIRAGE_LOG", default_value = "info")]
    pub log: String,
}

impl Config {
    /// A configuration for tests: loopback on a free port, data in `data_dir`.
    pub fn for_tests(data_dir: PathBuf) -> Self {
        let mut config = Config::parse_from(["mirage"]);
        config.listen = "127.0.0.1:0".parse().expect("valid address");
        config.data_dir = data_dir;
        config
    }
}
