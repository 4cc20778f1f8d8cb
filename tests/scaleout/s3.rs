//! A throwaway S3-compatible server for this test process: moto (from PyPI,
//! `pip install 'moto[server]'`) on a free loopback port, and a fresh
//! bucket for every test server.
//!
//! moto runs inside a small Python wrapper that exits as soon as its
//! standard input closes. The pipe's other end is held by this process
//! (in a static, never dropped), so the kernel closes it when the test
//! process ends however it ends, and the server goes with it. moto keeps
//! everything in memory: nothing is left on disk or on a port.

use std::{
    io::{BufRead, Write},
    process::{Child, Command, Stdio},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use mirage::Config;

/// Starts moto on port 0, prints the port it got, then waits for EOF on
/// stdin. Request logging is off so the inherited stderr only shows errors.
const WRAPPER: &str = r#"
import logging, os, sys
logging.getLogger("werkzeug").setLevel(logging.ERROR)
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
os._exit(0)
"#;

struct Server {
    endpoint: String,
    /// Holds the wrapper's stdin open for as long as this process lives.
    _child: Mutex<Child>,
}

static SERVER: OnceLock<Option<Server>> = OnceLock::new();

/// Stores this test server's uploads in a fresh bucket of the shared moto
/// server; without moto, leaves the local files directory in place.
pub async fn configure(config: &mut Config) {
    let Some(endpoint) = SERVER.get_or_init(start).as_ref().map(|s| &s.endpoint) else {
        return;
    };
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let bucket = format!(
        "mirage-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let created = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .expect("the S3 test server answers");
    assert!(
        created.status().is_success(),
        "creating bucket {bucket} failed: {}",
        created.status()
    );
    // moto accepts any credentials; they go in the URL so that nothing
    // depends on (or changes) this process's environment.
    config.files = Some(format!(
        "s3://{bucket}?endpoint={endpoint}&region=us-east-1\
         &access_key_id=test&secret_access_key=test"
    ));
}

fn start() -> Option<Server> {
    match spawn() {
        Ok(server) => Some(server),
        Err(why) if std::env::var("MIRAGE_REQUIRE_SCALEOUT").is_ok_and(|v| v == "1") => {
            panic!("MIRAGE_REQUIRE_SCALEOUT=1 but the S3 test server did not start: {why}")
        }
        Err(why) => {
            // Straight to stderr: the test harness would capture `eprintln!`.
            let _ = writeln!(
                std::io::stderr(),
                "!!! SKIPPING S3: {why}. Uploads in this run use local files; \
                 `pip install 'moto[server]'` to test S3."
            );
            None
        }
    }
}

fn spawn() -> Result<Server, String> {
    let python = std::env::var("MIRAGE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = Command::new(&python)
        .args(["-c", WRAPPER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|err| format!("cannot run {python}: {err}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let port = rx
        .recv_timeout(Duration::from_secs(60))
        .ok()
        .and_then(|line| line.trim().parse::<u16>().ok());
    let Some(port) = port else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!(
            "moto did not start under {python} (is `moto[server]` installed?)"
        ));
    };
    Ok(Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        _child: Mutex::new(child),
    })
}
