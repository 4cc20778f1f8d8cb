//! A throwaway Redis server for this test process, and a fresh key prefix
//! for every test server.

use std::{
    net::TcpListener,
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// `redis://127.0.0.1:<port>` of the throwaway server, started on first
/// use; `None` when `redis-server` is not installed.
fn server_url() -> Option<&'static str> {
    static URL: OnceLock<Option<String>> = OnceLock::new();
    URL.get_or_init(start_server).as_deref()
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `redis-server` on `port`, without persistence, its files in `dir`.
fn server_command(port: u16, dir: &std::path::Path) -> Command {
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Waits until the server on `port` accepts connections (at most 10 s).
fn wait_until_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_server() -> Option<String> {
    let port = free_port();
    let dir = tempfile::tempdir().expect("temp dir").keep();
    let (tx, rx) = std::sync::mpsc::channel();
    // The server dies with the thread that started it (PDEATHSIG), so that
    // thread lives as long as the test process.
    std::thread::spawn(move || {
        let mut command = server_command(port, &dir);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to
        // kill the child when this thread ends.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn();
        let started = child.is_ok();
        tx.send(started).expect("report start");
        if let Ok(mut child) = child {
            let _ = child.wait();
        }
        loop {
            std::thread::park();
        }
    });
    if !rx.recv().expect("start report") {
        return None;
    }
    wait_until_listening(port);
    Some(format!("redis://127.0.0.1:{port}"))
}

/// Points the configuration at the throwaway Redis under a fresh prefix,
/// or says loudly that Redis is skipped.
pub fn configure(config: &mut mirage::Config) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    match server_url() {
        Some(url) => {
            config.redis = Some(url.to_owned());
            config.redis_prefix = format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed));
        }
        None => crate::backend::skipped("Redis", "redis-server is not installed"),
    }
}

/// Shared rate limits fall back to each node's own limiter while Redis is
/// away, answering at once instead of waiting for it (on a Redis server of
/// the test's own, since it is stopped halfway).
#[tokio::test]
async fn shared_rate_limits_fall_back_to_the_node_when_redis_is_away() {
    use mirage::{
        config::Switch,
        error::ApiError,
        rate_limit::{RateLimits, UserAction},
    };

    let port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let Ok(mut server) = server_command(port, dir.path()).spawn() else {
        crate::backend::skipped("the Redis fallback test", "redis-server is not installed");
        return;
    };
    wait_until_listening(port);
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let conn = client.get_connection_manager().await.expect("connected");
    let mut config = mirage::Config::for_tests(dir.path().to_path_buf()).rate_limits;
    config.mode = Switch::On;
    config.votes = "2/1h".parse().unwrap();
    config.account_logins = "1/1h".parse().unwrap();
    let limits = RateLimits::new(&config).shared_in(conn, "fallback");
    let owner: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    limits.remember_login(7, owner).await;

    let is_limited = |outcome: Result<(), ApiError>| match outcome {
        Ok(()) => false,
        Err(ApiError::TooManyRequests { .. }) => true,
        Err(other) => panic!("expected 429, got {other:?}"),
    };
    for _ in 0..2 {
        assert!(!is_limited(limits.check_user(UserAction::Vote, 1).await));
    }
    assert!(is_limited(limits.check_user(UserAction::Vote, 1).await));

    server.kill().expect("redis-server stopped");
    server.wait().expect("redis-server reaped");
    // This node's own quota for user 2 is untouched, so it allows two and
    // refuses the third; none of the checks waits long for Redis.
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        outcomes.push(is_limited(limits.check_user(UserAction::Vote, 2).await));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a check waited {:?} for the missing Redis",
            started.elapsed()
        );
    }
    assert_eq!(outcomes, [false, false, true]);
    // A login remembered while Redis was up is remembered by this node too.
    for _ in 0..3 {
        assert!(!is_limited(limits.check_account_login(7, owner).await));
    }
    assert!(!is_limited(limits.check_account_login(8, owner).await));
    assert!(is_limited(limits.check_account_login(8, owner).await));
}

/// With a `rediss://` URL a node talks to Redis over TLS, checking its
/// certificate against `--redis-ca-cert`: room chat goes through it (the
/// server has no plain port), and a server whose certificate that CA did
/// not sign is refused at start, at once (the connection manager's
/// retries are for a Redis not up yet, and took about 10 s).
#[tokio::test]
async fn redis_can_be_reached_over_verified_tls() {
    use crate::{
        helpers::spawn_app_with,
        ws::{room_messages, send_http},
    };

    let port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let tls = dir.path().join("tls");
    let ca_cert = crate::tls::make_certificates(&tls);
    // Port 0: no plain-text listener at all.
    let mut command = server_command(0, dir.path());
    command
        .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
        .arg("--tls-cert-file")
        .arg(tls.join("server.crt"))
        .arg("--tls-key-file")
        .arg(tls.join("server.key"))
        .arg("--tls-ca-cert-file")
        .arg(&ca_cert);
    let Ok(mut server) = command.spawn() else {
        crate::backend::skipped("the Redis TLS test", "redis-server is not installed");
        return;
    };
    wait_until_listening(port);
    let url = format!("rediss://127.0.0.1:{port}");
    let app = spawn_app_with(|config| {
        config.redis = Some(url.clone());
        config.redis_ca_cert = Some(ca_cert.clone());
    })
    .await;
    let (_, token) = app.new_user("redistls").await;
    let room = app.create_room(&token, "over tls", None).await;
    send_http(&app, &token, room, "sealed").await;
    let messages = room_messages(&app, &token, room).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["message"], "sealed");

    let other = tempfile::tempdir().expect("temp dir");
    let mut config = app.config.clone();
    config.redis_ca_cert = Some(crate::tls::make_ca(other.path(), "another-ca"));
    let started = Instant::now();
    crate::tls::assert_refused_for_its_certificate(config).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "refused after {took:?}");
    server.kill().expect("redis-server stopped");
    server.wait().expect("redis-server reaped");
}
