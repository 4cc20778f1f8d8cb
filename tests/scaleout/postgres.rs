//! A throwaway PostgreSQL server for this test process, and a fresh
//! database in it for every test server.
//!
//! The server starts once, on first use: `initdb` into a temporary
//! directory, then `pg_ctl start` on a free loopback port with its socket in
//! that directory, durability off (fsync, synchronous commit) for speed.
//! PostgreSQL refuses to run as root, so as root it runs as the `postgres`
//! user (created when missing). It stops when the process exits (an `atexit`
//! hook), and a small watchdog process stops it and removes its directory
//! should the process die without exiting (a kill, an abort).
//!
//! The server also accepts TLS, with a certificate for 127.0.0.1 signed by
//! a throwaway CA (`tls.rs`): the suite connects in plain text
//! (`sslmode=disable`), and one test over verified TLS.
//!
//! Without the PostgreSQL binaries the tests stay on SQLite, with a loud
//! message; with `MIRAGE_REQUIRE_SCALEOUT=1` they fail instead.

use std::{
    io::Write,
    net::TcpListener,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use mirage::Config;
use sqlx_core::{connection::Connection, query::query};
use sqlx_postgres::PgConnection;

/// The user PostgreSQL runs as when the tests run as root.
const PG_USER: &str = "postgres";

struct Server {
    port: u16,
    /// The CA that signed the server's certificate (PEM).
    ca_cert: PathBuf,
}

/// Points `config` at a fresh database of the shared test server (or leaves
/// it on SQLite when PostgreSQL is not installed).
pub async fn configure(config: &mut Config) {
    let Some(server) = tokio::task::spawn_blocking(server)
        .await
        .expect("starting PostgreSQL")
    else {
        return;
    };
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let name = format!("t_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let mut conn = admin_connection(server).await;
    query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("creating a test database");
    conn.close().await.expect("closing the admin connection");
    config.database = Some(format!(
        "postgres://postgres@127.0.0.1:{}/{name}?sslmode=disable",
        server.port
    ));
    config.database_pool_size = 8;
}

async fn admin_connection(server: &Server) -> PgConnection {
    let admin = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
        server.port
    );
    PgConnection::connect(&admin)
        .await
        .expect("connecting to the test PostgreSQL")
}

/// The server of this process: started on first call, `None` when the
/// binaries are missing.
fn server() -> Option<&'static Server> {
    static SERVER: OnceLock<Option<Server>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let Some(bin) = find_bin_dir() else {
                if std::env::var("MIRAGE_REQUIRE_SCALEOUT").as_deref() == Ok("1") {
                    panic!(
                        "MIRAGE_REQUIRE_SCALEOUT=1 but PostgreSQL is not installed \
                         (no initdb on PATH or under /usr/lib/postgresql/*/bin)"
                    );
                }
                // Straight to the process's stderr: the test harness captures
                // `eprintln!`, and this must be seen even when tests pass.
                let _ = std::io::stderr().write_all(
                    b"\n!!! SKIPPING PostgreSQL: initdb not found on PATH or under \
                      /usr/lib/postgresql/*/bin; the scale-out suite runs on SQLite.\n\
                      !!! Install PostgreSQL (apt-get install postgresql) to test it.\n\n",
                );
                return None;
            };
            Some(start(&bin))
        })
        .as_ref()
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
fn find_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("initdb"))
        .find(|initdb| initdb.is_file())
        .and_then(|initdb| initdb.canonicalize().ok());
    let installed = || {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
            .filter(|bin| bin.join("initdb").is_file())
            .collect();
        // The newest version: directories are named by major version.
        dirs.sort_by_key(|bin| {
            bin.parent()
                .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
                .unwrap_or(0)
        });
        dirs.pop().map(|bin| bin.join("initdb"))
    };
    let initdb = on_path.or_else(installed)?;
    let bin = initdb.parent()?.to_path_buf();
    bin.join("pg_ctl").is_file().then_some(bin)
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A command for a PostgreSQL binary, run as `PG_USER` when we are root.
fn pg_command(program: &Path) -> Command {
    let mut command = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", PG_USER, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command.stdin(Stdio::null());
    command
}

fn run(mut command: Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn ensure_user() {
    let exists = Command::new("id")
        .arg("-u")
        .arg(PG_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        let mut useradd = Command::new("useradd");
        useradd.args([
            "--system",
            "--no-create-home",
            "--shell",
            "/bin/false",
            PG_USER,
        ]);
        run(useradd, "creating the postgres user");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Data directory of the running server, for the exit hook.
static DATA_DIR: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();

extern "C" fn stop_at_exit() {
    if let Some((pg_ctl, data)) = DATA_DIR.get() {
        let _ = pg_command(pg_ctl)
            .arg("stop")
            .arg("-D")
            .arg(data)
            .args(["-m", "immediate", "-w"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

unsafe extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
}

fn start(bin: &Path) -> Server {
    let root = running_as_root();
    if root {
        ensure_user();
    }
    // Unique per process; the watchdog removes it.
    let dir = tempfile::Builder::new()
        .prefix("mirage-pg-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let data = dir.join("data");
    let log = dir.join("postgres.log");
    let tls = dir.join("tls");
    let ca_cert = crate::tls::make_certificates(&tls);
    if root {
        let mut chown = Command::new("chown");
        chown.arg("-R").arg(format!("{PG_USER}:")).arg(&dir);
        run(chown, "handing the temp dir to the postgres user");
    }
    let mut initdb = pg_command(&bin.join("initdb"));
    initdb.arg("-D").arg(&data).args([
        "-U",
        "postgres",
        "--auth=trust",
        "-E",
        "UTF8",
        "--no-locale",
        "-N",
    ]);
    run(initdb, "initdb");

    let pg_ctl = bin.join("pg_ctl");
    let mut last_error = String::new();
    for _ in 0..5 {
        let port = free_port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=400 \
             -F -c synchronous_commit=off -c full_page_writes=off \
             -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            dir.display(),
            tls.join("server.crt").display(),
            tls.join("server.key").display(),
        );
        let output = pg_command(&pg_ctl)
            .arg("start")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o"])
            .arg(&options)
            .output()
            .expect("running pg_ctl");
        if output.status.success() {
            DATA_DIR
                .set((pg_ctl.clone(), data.clone()))
                .expect("one server per process");
            // SAFETY: registers a plain function with no captured state.
            unsafe {
                atexit(stop_at_exit);
            }
            spawn_watchdog(&pg_ctl, &data, &dir);
            return Server { port, ca_cert };
        }
        last_error = format!(
            "{}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("PostgreSQL did not start:\n{last_error}");
}

/// With `sslmode=verify-full` in `--database`, Mirage's pool talks to
/// PostgreSQL over TLS and checks the server's certificate against the CA in
/// `sslrootcert`: every connection of its database is encrypted, and a
/// server whose certificate that CA did not sign is refused at start.
#[tokio::test]
async fn the_database_connection_can_be_encrypted_and_verified() {
    let Some(server) = tokio::task::spawn_blocking(server)
        .await
        .expect("starting PostgreSQL")
    else {
        crate::backend::skipped("the PostgreSQL TLS test", "PostgreSQL is not installed");
        return;
    };
    let verified = |database: &mut Option<String>, ca: &Path| {
        let url = database.take().expect("a PostgreSQL URL");
        let url = url.replace(
            "sslmode=disable",
            &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
        );
        *database = Some(url);
    };
    let app = crate::helpers::spawn_app_with(|config| {
        verified(&mut config.database, &server.ca_cert);
    })
    .await;
    let (_, token) = app.new_user("pgtls").await;
    app.create_post(&token, "over TLS").await;
    let database = app.config.database.as_deref().expect("a PostgreSQL URL");
    let (without_query, _) = database.split_once('?').expect("TLS parameters");
    let (_, name) = without_query.rsplit_once('/').expect("a database name");
    let mut admin = admin_connection(server).await;
    let (connections, encrypted): (i64, i64) = sqlx_core::query_as::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl)
         FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid
         WHERE a.datname = $1",
    )
    .bind(name)
    .fetch_one(&mut admin)
    .await
    .expect("reading pg_stat_ssl");
    assert!(connections > 0, "the app holds connections to {name}");
    assert_eq!(encrypted, connections, "every connection is encrypted");

    // A CA that did not sign the server's certificate: no start.
    let other = tempfile::tempdir().expect("temp dir");
    let other_ca = crate::tls::make_ca(other.path(), "another-ca");
    let mut config = app.config.clone();
    config.database = Some(database.replace(
        &server.ca_cert.display().to_string(),
        &other_ca.display().to_string(),
    ));
    crate::tls::assert_refused_for_its_certificate(config).await;
}

/// A detached shell that outlives this process: once the process is gone
/// (however it ended), it stops the server and removes its directory.
// Never waited for on purpose: it only ends after this process has.
#[allow(clippy::zombie_processes)]
fn spawn_watchdog(pg_ctl: &Path, data: &Path, dir: &Path) {
    let stop = if running_as_root() {
        format!("runuser -u {PG_USER} -- '{}'", pg_ctl.display())
    } else {
        format!("'{}'", pg_ctl.display())
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         {stop} stop -D '{data}' -m immediate -w >/dev/null 2>&1; \
         rm -rf '{dir}'",
        pid = std::process::id(),
        data = data.display(),
        dir = dir.display(),
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the PostgreSQL watchdog");
}

/// A write whose request is dropped while its `BEGIN` waits for
/// PostgreSQL's answer (its client gone, or its timeout passed) leaves no
/// transaction open on its pooled connection. SQLx 0.8 left one there,
/// and the statements that connection's next users sent alone ran inside
/// it, uncommitted: here a login's session, made next on the pool's only
/// connection, would not be seen from another pool.
#[tokio::test]
async fn writes_dropped_as_they_begin_leave_no_transaction_open() {
    use mirage::store::{accounts::AccountStore, postgres::PostgresStore};
    let Some(url) = fresh_database_url("the dropped BEGIN test").await else {
        return;
    };
    // One connection, so that every call reuses the one a drop left behind.
    let store = PostgresStore::connect(&url, 1).await.expect("connecting");
    let other = PostgresStore::connect(&url, 1).await.expect("connecting");
    let user = new_user(&store, "dropper").await;
    for round in 0..40u8 {
        // A follow begins a transaction first; it is dropped after one to
        // four polls, inside its `BEGIN` on one round or another.
        {
            let follow = store.follow(user.id, "nobody-here");
            tokio::pin!(follow);
            for _ in 0..=round % 4 {
                if futures_util::poll!(follow.as_mut()).is_ready() {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        let token_hash = [round; 32];
        store
            .create_session(user.id, token_hash)
            .await
            .expect("making a session");
        assert!(
            other
                .session_user(token_hash)
                .await
                .expect("reading a session")
                .is_some(),
            "round {round}: the session made after a dropped BEGIN is not committed"
        );
    }
}

/// A room's messages in the database itself, not only as a page shows
/// them (a page never lists more than the limit, so rows kept beyond it
/// would not show): the newest `max_messages` stay and the rest are gone,
/// and messages sent at one instant, or with the clock stepped back, are
/// stored in strictly increasing order.
#[tokio::test]
async fn a_room_keeps_exactly_its_newest_messages_in_strictly_increasing_order() {
    use mirage::store::{
        postgres::PostgresStore,
        rooms::{NewRoom, Retention, RoomMessageStore, RoomStore},
    };
    let Some(url) = fresh_database_url("the room retention test").await else {
        return;
    };
    let store = PostgresStore::connect(&url, 2).await.expect("connecting");
    let author = new_user(&store, "chatty").await;
    let room = store
        .create_room(
            NewRoom {
                name: "retained".into(),
                is_private: false,
                password_hash: None,
                creator: author.id,
            },
            5,
        )
        .await
        .expect("creating a room");
    let retention = Retention {
        ttl_secs: 1e9,
        max_messages: 5,
    };
    let mut sent = Vec::new();
    for i in 0..8 {
        // The same instant twice, then the clock a second back.
        let now = [2_000_000_000.0, 2_000_000_000.0, 1_999_999_999.0][i % 3];
        let message = store
            .add_room_message(room.id, author.clone(), format!("m{i}"), now, retention)
            .await
            .expect("sending");
        sent.push(message.created_at);
    }
    assert!(
        sent.windows(2).all(|pair| pair[0] < pair[1]),
        "not strictly increasing: {sent:?}"
    );
    let mut conn = PgConnection::connect(&url).await.expect("connecting");
    let kept: Vec<(String, f64)> = sqlx_core::query_as::query_as(
        "SELECT message, created_at FROM room_messages WHERE room_id = $1 ORDER BY created_at",
    )
    .bind(room.id)
    .fetch_all(&mut conn)
    .await
    .expect("reading the room's rows");
    let expected: Vec<(String, f64)> = (3..8).map(|i| (format!("m{i}"), sent[i])).collect();
    assert_eq!(kept, expected);
}

/// A pooled connection whose server process went away while it sat idle
/// (a database restarted during a quiet spell) is checked as it is handed
/// out, and replaced, so the next call does not fail on it. Connections
/// idle for under a second are handed out unchecked (SQLx pinged them as
/// they went back to the pool): that check was a round trip on every call.
#[tokio::test]
async fn a_connection_dropped_by_the_database_while_idle_is_replaced() {
    use mirage::store::{accounts::AccountStore, postgres::PostgresStore};
    let (Some(url), Some(server)) = (
        fresh_database_url("the idle connection test").await,
        server(),
    ) else {
        return;
    };
    let (_, name) = url
        .split_once('?')
        .and_then(|(without_query, _)| without_query.rsplit_once('/'))
        .expect("a database name");
    // One connection, so that the call after the termination gets it.
    let store = PostgresStore::connect(&url, 1).await.expect("connecting");
    assert_eq!(store.user_count().await.expect("counting users"), 0);

    let mut admin = admin_connection(server).await;
    let ended: Vec<bool> = sqlx_core::query_scalar::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .fetch_all(&mut admin)
    .await
    .expect("ending the pool's connection");
    assert_eq!(ended, [true], "the pool's one connection was ended");

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        store
            .user_count()
            .await
            .expect("counting users after the drop"),
        0
    );
}

/// The URL of a fresh database of the test server, for a test that talks to
/// the store itself; `None` (said once, or fatal in CI) without PostgreSQL.
async fn fresh_database_url(test: &str) -> Option<String> {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::for_tests(data_dir.path().to_path_buf());
    configure(&mut config).await;
    if config.database.is_none() {
        crate::backend::skipped(test, "PostgreSQL is not installed");
    }
    config.database
}

async fn new_user(
    store: &mirage::store::postgres::PostgresStore,
    name: &str,
) -> mirage::store::accounts::UserRef {
    use mirage::store::accounts::{AccountStore, NewUser};
    store
        .create_user(NewUser {
            username: name.into(),
            email: format!("{name}@example.com"),
            password_hash: "not a real hash".into(),
            avatar_url: String::new(),
            description: String::new(),
        })
        .await
        .expect("creating a user")
}
