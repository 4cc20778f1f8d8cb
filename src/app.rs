//! Builds the state and router on a given listener; serves until shutdown.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use redis::aio::ConnectionManager;
use tokio::net::TcpListener;

use crate::{
    auth::Passwords,
    chat::{
        Chat,
        hub::{Hub, InProcessHub},
        redis_hub::RedisHub,
    },
    config::Config,
    domain::{
        time::{now_f64, now_secs},
        trending::{self, Trending},
    },
    http,
    metrics::Metrics,
    rate_limit::RateLimits,
    store::{
        Store, StoreError,
        postgres::PostgresStore,
        redis::RedisRoomMessages,
        rooms::{Retention, RoomMessageStore},
        sqlite::SqliteStore,
    },
};

/// Shared by every request; no globals. Handlers and layers clone it for
/// every request, so it is one reference count (measured: cloning and
/// dropping a dozen separate `Arc`s was 6% of a `ping`'s CPU).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub store: Arc<dyn Store>,
    /// Room chat under retention: the database, or Redis when configured.
    pub messages: Arc<dyn RoomMessageStore>,
    pub config: Arc<Config>,
    /// The bytes of uploaded files: a local directory or an S3 bucket.
    pub files: Arc<dyn crate::store::FileStore>,
    pub passwords: Passwords,
    /// Real-time fan-out and the ordering of room events.
    pub chat: Chat,
    /// Hashtag counts over the last day, for the feed's trending topics.
    pub trending: Arc<Trending>,
    /// Per-address and per-user abuse limits (empty when turned off).
    pub rate_limits: Arc<RateLimits>,
    /// Request counts, latencies and open connections, for `GET /metrics`.
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// Rebuilds the trending counts from the stored hashtags (after posts
    /// were deleted, which the incremental counts cannot see).
    pub async fn recount_trending(&self) -> Result<(), StoreError> {
        recount(&self.trending, self.store.as_ref()).await
    }

    pub fn retention(&self) -> Retention {
        Retention {
            ttl_secs: self.config.room_message_ttl_secs as f64,
            max_messages: self.config.room_message_limit,
        }
    }
}

/// A server bound to its port, ready to serve.
pub struct App {
    listener: TcpListener,
    router: Router,
    state: AppState,
}

impl App {
    /// Opens the data directory and database, and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        std::fs::create_dir_all(config.data_dir.join("files"))?;
        let (store, database_messages) = open_store(&config).await?;
        let (hub, messages, redis) = open_realtime(&config, database_messages).await?;
        let mut rate_limits = RateLimits::new(&config.rate_limits);
        if let Some(conn) = redis {
            rate_limits = rate_limits.shared_in(conn, &config.redis_prefix);
        }
        let hashing_threads = config
            .hashing_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let trending = Arc::new(Trending::new(trending::WINDOW_SECS));
        recount(&trending, store.as_ref()).await?;
        let state = AppState(Arc::new(Shared {
            store,
            messages,
            files: crate::store::blobs::open_file_store(&config)?,
            passwords: Passwords::new(hashing_threads),
            chat: Chat::new(hub),
            trending,
            rate_limits: Arc::new(rate_limits),
            metrics: Arc::new(Metrics::new()?),
            config: Arc::new(config),
        }));
        let listener = TcpListener::bind(state.config.listen).await?;
        let router = http::router(state.clone());
        Ok(App {
            listener,
            router,
            state,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let purger = tokio::spawn(purge_expired_messages(self.state.clone()));
        // A shared database also holds other nodes' posts.
        let recounter = self
            .state
            .config
            .database
            .is_some()
            .then(|| tokio::spawn(recount_trending(self.state.clone())));
        let evictor = self
            .state
            .rate_limits
            .enabled()
            .then(|| tokio::spawn(evict_idle_rate_limits(self.state.clone())));
        let result =
            http::server::serve(self.listener, self.router, &self.state.config, shutdown).await;
        purger.abort();
        if let Some(evictor) = evictor {
            evictor.abort();
        }
        if let Some(recounter) = recounter {
            recounter.abort();
        }
        result
    }
}

/// The database the configuration names (embedded SQLite by default, or
/// PostgreSQL shared by several nodes), and where room messages live (the
/// same database for now).
async fn open_store(
    config: &Config,
) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn RoomMessageStore>)> {
    match config.database.as_deref() {
        None => {
            let store = Arc::new(SqliteStore::open_with(
                &config.data_dir.join("mirage.db"),
                config.sqlite_durability,
            )?);
            Ok((store.clone(), store))
        }
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let store = Arc::new(PostgresStore::connect(url, config.database_pool_size).await?);
            Ok((store.clone(), store))
        }
        Some(other) => anyhow::bail!("unsupported --database URL {other:?}: expected postgres://"),
    }
}

/// The real-time hub and the home of room messages: in this process and
/// the database by default; both in Redis when `--redis` is set, so that
/// every node shares them (and then the Redis connection, for the shared
/// rate limits).
async fn open_realtime(
    config: &Config,
    database_messages: Arc<dyn RoomMessageStore>,
) -> anyhow::Result<(
    Arc<dyn Hub>,
    Arc<dyn RoomMessageStore>,
    Option<ConnectionManager>,
)> {
    let Some(url) = config.redis.as_deref() else {
        let hub = Arc::new(InProcessHub::new(config.ws_queue_len));
        return Ok((hub, database_messages, None));
    };
    let client = redis_client(url, config.redis_ca_cert.as_deref())?;
    let conn = redis_connection(&client).await?;
    let hub = RedisHub::start(
        client,
        conn.clone(),
        &config.redis_prefix,
        config.ws_queue_len,
    )
    .await?;
    let messages = RedisRoomMessages::new(conn.clone(), &config.redis_prefix);
    Ok((Arc::new(hub), Arc::new(messages), Some(conn)))
}

/// A client for `url`; with `ca_cert`, a `rediss://` server's certificate
/// must chain to the CAs in that file rather than to the system's roots.
fn redis_client(url: &str, ca_cert: Option<&Path>) -> anyhow::Result<redis::Client> {
    let Some(ca_cert) = ca_cert else {
        return Ok(redis::Client::open(url)?);
    };
    anyhow::ensure!(
        url.starts_with("rediss://"),
        "--redis-ca-cert is for TLS: the --redis URL must start with rediss://"
    );
    let root_cert = std::fs::read(ca_cert)
        .with_context(|| format!("reading --redis-ca-cert {}", ca_cert.display()))?;
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(root_cert),
    };
    Ok(redis::Client::build_with_tls(url, certificates)?)
}

/// The connection every node's Redis work shares. The connection manager
/// tries about 10 s before it gives up; that is for a Redis not up yet, so
/// one attempt first lets any other failure (a certificate or a password
/// refused, a name that does not resolve) stop the server at once.
async fn redis_connection(client: &redis::Client) -> anyhow::Result<ConnectionManager> {
    if let Err(err) = client.get_multiplexed_async_connection().await
        && !(err.is_connection_refusal() || err.is_timeout() || err.is_connection_dropped())
    {
        return Err(anyhow::Error::new(err).context("connecting to --redis"));
    }
    client
        .get_connection_manager()
        .await
        .context("connecting to --redis")
}

/// Rebuilds the trending counts from the shared database, so that posts made
/// on other nodes count too (this node's own count at once).
async fn recount_trending(state: AppState) {
    let mut tick = tokio::time::interval(TRENDING_RECOUNT);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(err) = recount(&state.trending, state.store.as_ref()).await {
            tracing::warn!(%err, "recounting trending hashtags failed");
        }
    }
}

/// Replaces the trending counts with the hashtags stored in the window.
async fn recount(trending: &Trending, store: &dyn Store) -> Result<(), StoreError> {
    trending.reset(
        store
            .tag_uses_since(now_secs() - trending::WINDOW_SECS)
            .await?,
    );
    Ok(())
}

/// How stale other nodes' posts may be in this node's trending topics.
const TRENDING_RECOUNT: Duration = Duration::from_secs(10);

/// Keeps the rate limiters' memory to the clients seen recently.
async fn evict_idle_rate_limits(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        state.rate_limits.evict_idle();
    }
}

/// Reads already hide expired room messages; this only reclaims their rows.
async fn purge_expired_messages(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        if let Err(err) = state
            .messages
            .purge_expired_messages(now_f64(), state.retention())
            .await
        {
            tracing::warn!(%err, "purging expired room messages failed");
        }
    }
}
