//! The server under test: the release `mirage` binary as a child process on
//! loopback, and its memory from /proc (as examples/ws_bench.rs does).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::client::{Conn, Req};

/// The child server, killed on drop (every way out of the bench).
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn start(bin: &Path, data_dir: &Path) -> Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let child = Command::new(bin)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--log", "warn"])
            // TODO(rate limits): once the rate-limit flag lands (issue 6,
            // another branch), pass it here to turn limits off: the bench and
            // the soak send far more per user and per address than a person.
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut server = Server { child, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("the server exited during start-up: {status}");
            }
            let ping = async {
                let mut conn = Conn::open(addr).await?;
                conn.send(&Req::get("/api/ping")).await
            };
            if let Ok(Ok((200, _))) = tokio::time::timeout(Duration::from_secs(1), ping).await {
                return Ok(server);
            }
            ensure!(
                Instant::now() < deadline,
                "the server did not answer /api/ping within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The server binary: `--server-bin`, else `mirage` next to this binary
/// (same target profile), else `$CARGO_TARGET_DIR/release/mirage`, else
/// `./target/release/mirage`.
pub fn find_server_bin(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        ensure!(
            path.is_file(),
            "--server-bin {} does not exist; build it with `cargo build --release`",
            path.display()
        );
        return Ok(path);
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join("mirage"));
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("release/mirage"));
    }
    candidates.push(PathBuf::from("target/release/mirage"));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            anyhow!(
                "the server binary was not found (looked at {}); build it first with \
                 `cargo build --release` (same CARGO_TARGET_DIR) or pass --server-bin PATH",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// A field of /proc/<pid>/status in KiB (`VmRSS`, `VmHWM`).
pub fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples the server's VmRSS every `every`: a peak that each scenario
/// resets and reads, and the peak of the whole run.
pub struct RssSampler {
    pub window_peak_kib: Arc<AtomicU64>,
    pub overall_peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    pub fn start(pid: u32, every: Duration) -> RssSampler {
        let sampler = RssSampler {
            window_peak_kib: Arc::new(AtomicU64::new(0)),
            overall_peak_kib: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (window, overall, stop) = (
            sampler.window_peak_kib.clone(),
            sampler.overall_peak_kib.clone(),
            sampler.stop.clone(),
        );
        // A plain thread: the sampling must go on when the runtime is saturated.
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(kib) = proc_status_kib(pid, "VmRSS") {
                    window.fetch_max(kib, Ordering::Relaxed);
                    overall.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(every);
            }
        });
        sampler
    }

    /// The peak since the last call, starting a new window at the current RSS.
    pub fn take_window(&self, pid: u32) -> u64 {
        let now = proc_status_kib(pid, "VmRSS").unwrap_or(0);
        self.window_peak_kib.swap(now, Ordering::Relaxed).max(now)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// nproc, CPU model and RAM of this machine, from /proc.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    serde_json::json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "ram_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
    })
}

/// `git rev-parse --short HEAD`, when git and a repository are there.
pub fn commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
