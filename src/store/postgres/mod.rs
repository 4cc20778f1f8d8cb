//! The scale-out backend: PostgreSQL (or a PostgreSQL-compatible database)
//! shared by any number of server processes.
//!
//! A connection pool; every store call that writes is one transaction.
//! Nothing is locked in-process: counters change with `n = n + 1` on rows
//! locked by the transaction (`SELECT ... FOR NO KEY UPDATE`), and rules that
//! span rows (the public-room limit, a room's message order) lock one row
//! that stands for them, so they hold across every node.
//!
//! Built on the driver crates of SQLx (`sqlx-core`, `sqlx-postgres`) rather
//! than the `sqlx` facade: the facade's optional SQLite driver pins a
//! `libsqlite3-sys` that cannot share a lockfile with `rusqlite`'s.

mod accounts;
mod check;
mod inbox;
mod posts;
mod rooms;

use std::{borrow::Cow, str::FromStr, time::Duration};

use sqlx_core::{
    connection::Connection,
    error::Error as SqlxError,
    migrate::{Migration, MigrationType, Migrator},
    pool::PoolOptions,
    query_scalar::query_scalar,
    transaction::Transaction,
};
use sqlx_postgres::{PgConnectOptions, PgPool, Postgres};

use super::{Page, PoolFigures, PoolStats, StoreError, StoreResult};

pub use check::{check_database, file_rows_among};

/// The embedded migrations, in order (what `sqlx::migrate!` would embed).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "account deletion",
        include_str!("../../../migrations/postgres/0002_account_deletion.sql"),
    ),
];

fn migrator() -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                Cow::Borrowed(sql),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

/// How long a start waits for PostgreSQL. SQLx tries again while the
/// connection is refused (a database still starting) and fails at once on
/// anything else (a password or certificate refused, an unknown host).
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// How long a pooled connection may sit idle before it is checked (one
/// round trip) as it is handed out.
///
/// SQLx's own check (`test_before_acquire`, on by default) pings every
/// connection taken from the pool, which doubled the round trips of every
/// one-statement call; and SQLx already pings each connection as it goes
/// back to the pool (to flush what a dropped call left). So a connection
/// idle for less than this was answering a moment ago, and one idle
/// longer (a database restarted during a quiet spell) is checked, and
/// replaced if dead, before a request uses it.
const CHECK_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// What a failed start says. A connection still refused after
/// `CONNECT_WAIT` comes back from SQLx as "pool timed out while waiting for
/// an open connection", which does not say where it tried or why.
fn connect_error(url: &str, err: SqlxError) -> StoreError {
    let SqlxError::PoolTimedOut = err else {
        return StoreError::Other(format!("connecting to PostgreSQL: {err}"));
    };
    // The host and port only: the URL may hold a password.
    let target = PgConnectOptions::from_str(url).map_or_else(
        |_| "the --database URL".to_owned(),
        |options| format!("{}:{}", options.get_host(), options.get_port()),
    );
    StoreError::Other(format!(
        "connecting to PostgreSQL: no connection to {target} within {} s \
         (refused or unanswered: is PostgreSQL running and listening there?)",
        CONNECT_WAIT.as_secs()
    ))
}

#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects a pool of up to `pool_size` connections to `url`
    /// (`postgres://user:pass@host:port/db`) and applies pending migrations.
    pub async fn connect(url: &str, pool_size: u32) -> StoreResult<Self> {
        let pool = PoolOptions::<Postgres>::new()
            .max_connections(pool_size.max(1))
            .acquire_timeout(CONNECT_WAIT)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= CHECK_IF_IDLE_FOR {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect(url)
            .await
            .map_err(|e| connect_error(url, e))?;
        // SQLx's migrator serialises concurrent starts with an advisory lock
        // (pg_advisory_lock), which CockroachDB does not implement: there the
        // lock is skipped, so start one node first when a migration is new.
        let version: String = query_scalar("SELECT version()")
            .fetch_one(&pool)
            .await
            .map_err(other)?;
        let mut migrator = migrator();
        migrator.set_locking(!version.contains("CockroachDB"));
        migrator
            .run(&pool)
            .await
            .map_err(|e| StoreError::Other(format!("migrating the database: {e}")))?;
        Ok(PostgresStore { pool })
    }
}

impl super::Store for PostgresStore {
    fn pool_stats(&self) -> PoolStats {
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        PoolStats {
            pools: vec![PoolFigures {
                name: "postgres",
                open: self.pool.size(),
                idle,
                max: self.pool.options().get_max_connections(),
            }],
            queued_writes: None,
        }
    }
}

/// Wraps a driver error as an internal store error.
fn other(err: impl std::fmt::Display) -> StoreError {
    StoreError::Other(err.to_string())
}

impl From<SqlxError> for StoreError {
    fn from(err: SqlxError) -> Self {
        match &err {
            SqlxError::Database(db) if is_contention(db.code().as_deref()) => {
                StoreError::Contention(err.to_string())
            }
            _ => StoreError::Other(err.to_string()),
        }
    }
}

/// SQLSTATEs of a transaction the database aborted because of another one:
/// `40P01` a deadlock (PostgreSQL breaks it by aborting one side), `40001`
/// a serialization failure (what CockroachDB reports for any conflict).
fn is_contention(code: Option<&str>) -> bool {
    matches!(code, Some("40P01" | "40001"))
}

/// How many times a transaction is tried before its conflict is a 500.
const ATTEMPTS: u32 = 5;

/// Runs `attempt` (one whole transaction) again when the database aborted
/// it for a conflict with another transaction. An aborted transaction kept
/// nothing, so running it again is safe; the pause before each new try is
/// random, so that two transactions that collided do not collide again.
async fn retrying<T, F, Fut>(mut attempt: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(StoreError::Contention(detail)) if tries < ATTEMPTS => {
                tracing::debug!(%detail, tries, "a transaction lost a conflict; running it again");
                let pause = Duration::from_millis(rand::random_range(1..=5) << tries);
                tokio::time::sleep(pause).await;
                tries += 1;
            }
            outcome => return outcome,
        }
    }
}

/// Starts a transaction on a pooled connection, in a task of its own.
///
/// SQLx 0.8 leaks a transaction whose `BEGIN` future is dropped while it
/// waits for the server's answer (a request whose client went away, or
/// whose timeout passed): it counts the transaction only once answered, so
/// the rollback it queues on the drop is skipped, and the connection goes
/// back to the pool inside a transaction that no one ends. The statements
/// its next users send then run in it, uncommitted, and a later error rolls
/// them all back: acknowledged writes lost (seen under load, as deadlocks
/// between such leftovers and then every statement on the connection
/// failing). In a task of its own the `BEGIN` is always answered, and a
/// transaction no one awaits any more is dropped there, with its rollback.
async fn begin(pool: &PgPool) -> StoreResult<Transaction<'static, Postgres>> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin().await })
        .await
        .map_err(|e| StoreError::Other(format!("starting a transaction: {e}")))?
        .map_err(StoreError::from)
}

/// The unique index (or constraint) that `err` violates, if it is a unique violation.
fn unique_violation(err: &SqlxError) -> Option<String> {
    match err {
        SqlxError::Database(db) if db.code().as_deref() == Some("23505") => {
            Some(db.constraint().unwrap_or_default().to_owned())
        }
        _ => None,
    }
}

/// Turns `limit + 1` fetched rows into a page: the extra row only tells
/// that another page exists, so `next` is null exactly at the end.
fn into_page<T>(mut rows: Vec<T>, limit: u32, key: impl Fn(&T) -> i64) -> Page<T> {
    let next = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(key)
    } else {
        None
    };
    Page { items: rows, next }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[tokio::test]
    async fn a_transaction_that_lost_a_conflict_runs_again_a_bounded_number_of_times() {
        let tries = Cell::new(0);
        let outcome = retrying(|| async {
            tries.set(tries.get() + 1);
            if tries.get() < 3 {
                Err(StoreError::Contention("deadlock detected".into()))
            } else {
                Ok(tries.get())
            }
        })
        .await;
        assert_eq!(outcome.unwrap(), 3);

        tries.set(0);
        let outcome: StoreResult<()> = retrying(|| async {
            tries.set(tries.get() + 1);
            Err(StoreError::Contention("deadlock detected".into()))
        })
        .await;
        assert!(matches!(outcome, Err(StoreError::Contention(_))));
        assert_eq!(tries.get(), ATTEMPTS);

        // Any other error is the transaction's answer: not run again.
        tries.set(0);
        let outcome: StoreResult<()> = retrying(|| async {
            tries.set(tries.get() + 1);
            Err(StoreError::conflict("already voted"))
        })
        .await;
        assert!(matches!(outcome, Err(StoreError::Conflict(_))));
        assert_eq!(tries.get(), 1);
    }

    /// A database that never answers: the error names where it was looked
    /// for (never the password) after the wait for one still starting.
    #[tokio::test]
    async fn a_refused_database_is_named_by_host_and_port_after_the_wait() {
        // A port nothing listens on: bound, then let go.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://mirage:secret-password@127.0.0.1:{port}/mirage");
        let started = std::time::Instant::now();
        let Err(StoreError::Other(message)) = PostgresStore::connect(&url, 2).await else {
            panic!("connected to a port nothing listens on");
        };
        assert!(
            started.elapsed() >= CONNECT_WAIT,
            "gave up after {:?}",
            started.elapsed()
        );
        assert!(
            message.contains(&format!("no connection to 127.0.0.1:{port} within 10 s")),
            "{message}"
        );
        assert!(!message.contains("secret-password"), "{message}");
    }

    #[test]
    fn deadlocks_and_serialization_failures_are_contention() {
        assert!(is_contention(Some("40P01")));
        assert!(is_contention(Some("40001")));
        assert!(!is_contention(Some("23505")));
        assert!(!is_contention(None));
    }
}
