//! Command-line and environment configuration.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use clap::Parser;

use crate::{rate_limit::Rate, store::sqlite::Durability};

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

    /// Redis URL (`redis://host:port/db`, or `rediss://` for TLS). Set:
    /// room-message retention and real-time fan-out live in Redis, shared
    /// by every node.
    #[arg(long, env = "MIRAGE_REDIS")]
    pub redis: Option<String>,

    /// CA certificates (PEM) that a `rediss://` server's certificate must
    /// chain to, instead of the system's trusted roots.
    #[arg(long, env = "MIRAGE_REDIS_CA_CERT")]
    pub redis_ca_cert: Option<PathBuf>,

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

    /// How many of its newest messages each room keeps (at least one: a
    /// room that kept none would drop each message as it is sent).
    #[arg(long, env = "MIRAGE_ROOM_MESSAGE_LIMIT", default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub room_message_limit: u32,

    /// Largest accepted upload, in bytes (24 MiB).
    #[arg(long, env = "MIRAGE_MAX_UPLOAD_BYTES", default_value_t = 25_165_824)]
    pub max_upload_bytes: u64,

    /// Largest accepted JSON request body, in bytes (64 KiB).
    #[arg(long, env = "MIRAGE_MAX_JSON_BYTES", default_value_t = 65_536)]
    pub max_json_bytes: usize,

    /// Threads that hash passwords (Argon2id, 7 MiB each), at low CPU
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

    /// Largest request head (request line plus headers), in bytes; a larger
    /// one is answered 431 and the connection closed.
    #[arg(long, env = "MIRAGE_MAX_HEADER_BYTES", default_value_t = 16_384)]
    pub max_header_bytes: usize,

    /// Most header fields in one request; more are answered 431.
    #[arg(long, env = "MIRAGE_MAX_HEADERS", default_value_t = 100)]
    pub max_headers: usize,

    /// Seconds a client has to send a whole request head, counted from the
    /// moment the server waits for it: a slow sender is disconnected, and so
    /// is a keep-alive connection idle for this long.
    #[arg(long, env = "MIRAGE_HEADER_READ_TIMEOUT_SECS", default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_secs: u64,

    /// Seconds a request body may go without sending any data; a stalled
    /// body is answered 408.
    #[arg(long, env = "MIRAGE_BODY_READ_TIMEOUT_SECS", default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub body_read_timeout_secs: u64,

    #[command(flatten)]
    pub rate_limits: RateLimitConfig,

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
        // Tests register, log in and write far faster than any person;
        // the rate-limit tests turn limits on with small quotas.
        config.rate_limits.mode = Switch::Off;
        config
    }
}

/// Abuse limits. Each quota is `COUNT/PERIOD`: a burst of COUNT requests,
/// then one more every PERIOD/COUNT (GCRA), so at most COUNT per PERIOD in
/// the long run. Register and login are limited per client address, the
/// rest per user; see docs/SECURITY.md.
#[derive(Debug, Clone, clap::Args)]
pub struct RateLimitConfig {
    /// `off` turns every rate limit off (for load benchmarks).
    #[arg(long = "rate-limits", env = "MIRAGE_RATE_LIMITS", value_enum, default_value_t = Switch::On)]
    pub mode: Switch,

    /// Reverse proxies (comma-separated IP addresses) whose
    /// `X-Forwarded-For` names the client. Unset: the TCP peer is the
    /// client and `X-Forwarded-For` is ignored.
    #[arg(
        long = "trusted-proxy",
        env = "MIRAGE_TRUSTED_PROXY",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<IpAddr>,

    /// Sign-ups (`POST /api/register`) per client address.
    #[arg(
        long = "rate-limit-register",
        env = "MIRAGE_RATE_LIMIT_REGISTER",
        default_value = "5/30m"
    )]
    pub register: Rate,

    /// Login attempts per client address.
    #[arg(
        long = "rate-limit-login",
        env = "MIRAGE_RATE_LIMIT_LOGIN",
        default_value = "25/5m"
    )]
    pub login: Rate,

    /// Login attempts per account, from any address (Mastodon's
    /// `throttle_login_attempts/email`): a botnet spread over many
    /// addresses gets no more guesses at one password.
    #[arg(
        long = "rate-limit-account-logins",
        env = "MIRAGE_RATE_LIMIT_ACCOUNT_LOGINS",
        default_value = "25/1h"
    )]
    pub account_logins: Rate,

    /// Posts per user.
    #[arg(
        long = "rate-limit-posts",
        env = "MIRAGE_RATE_LIMIT_POSTS",
        default_value = "300/3h"
    )]
    pub posts: Rate,

    /// Replies per user.
    #[arg(
        long = "rate-limit-replies",
        env = "MIRAGE_RATE_LIMIT_REPLIES",
        default_value = "300/3h"
    )]
    pub replies: Rate,

    /// Votes per user.
    #[arg(
        long = "rate-limit-votes",
        env = "MIRAGE_RATE_LIMIT_VOTES",
        default_value = "300/1h"
    )]
    pub votes: Rate,

    /// Follows and unfollows together, per user.
    #[arg(
        long = "rate-limit-follows",
        env = "MIRAGE_RATE_LIMIT_FOLLOWS",
        default_value = "400/1d"
    )]
    pub follows: Rate,

    /// Room messages per user (HTTP and WebSocket together).
    #[arg(
        long = "rate-limit-room-messages",
        env = "MIRAGE_RATE_LIMIT_ROOM_MESSAGES",
        default_value = "10/10s"
    )]
    pub room_messages: Rate,

    /// Direct messages per user (HTTP and WebSocket together).
    #[arg(
        long = "rate-limit-inbox-messages",
        env = "MIRAGE_RATE_LIMIT_INBOX_MESSAGES",
        default_value = "60/10m"
    )]
    pub inbox_messages: Rate,

    /// File uploads per user.
    #[arg(
        long = "rate-limit-uploads",
        env = "MIRAGE_RATE_LIMIT_UPLOADS",
        default_value = "30/30m"
    )]
    pub uploads: Rate,
}

/// On or off, for switches that take a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

// The command line: the server's settings, and optionally a maintenance
// command. With no command, `mirage` serves. (The doc comment below is the
// `--help` text.)
/// Mirage: a social network and chat server speaking a JSON HTTP API.
#[derive(Debug, Clone, Parser)]
#[command(name = "mirage", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// Parses the process's arguments (exits with usage on an error). The
    /// server settings are global, so `mirage check --data-dir X` works as
    /// well as `mirage --data-dir X check`.
    pub fn parse_args() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command()
            .mut_args(|arg| arg.global(true))
            .get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit())
    }
}

/// Maintenance commands; they use the same settings (`--data-dir`,
/// `--database`, `--files`), before or after the command name.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Verifies every counter and reference in the database and reports
    /// drift (exit status 1); with `--repair`, fixes it (exit status 0).
    /// Exit status 2: corrupt, or the check could not run. Safe while the
    /// server runs.
    Check {
        /// Fix what drifted, in one transaction.
        #[arg(long)]
        repair: bool,
    },
    /// Writes a consistent copy of the database to FILE while the server runs.
    Backup {
        /// Where the backup goes; it appears only once complete.
        file: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    #[test]
    fn a_room_must_keep_at_least_one_message() {
        let limit = |value: &str| {
            Cli::try_parse_from(["mirage", "--room-message-limit", value])
                .map(|cli| cli.config.room_message_limit)
        };
        assert!(limit("0").is_err());
        assert_eq!(limit("1").unwrap(), 1);
    }
}
