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

fn start_server() -> Option<String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = tempfile::tempdir().expect("temp dir").keep();
    let (tx, rx) = std::sync::mpsc::channel();
    // The server dies with the thread that started it (PDEATHSIG), so that
    // thread lives as long as the test process.
    std::thread::spawn(move || {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
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
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
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
