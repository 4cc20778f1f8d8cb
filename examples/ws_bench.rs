//! WebSocket fan-out benchmark: N subscribers in one room, one sender at a
//! steady rate, delivery latency percentiles and the server's memory.
//!
//! It starts the release server binary as a child process on loopback, so
//! build it first:
//!
//! ```text
//! cargo build --release
//! cargo run --release --example ws_bench -- --subscribers 1000 --rate 20
//! ```
//!
//! Everything runs in this one process against one monotonic clock: the
//! sender stamps each message's sequence number just before the send call,
//! and each subscriber computes `receive instant - send instant` as soon as
//! the frame is read. See docs/PERFORMANCE.md for figures and caveats.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt, TryStreamExt, stream::SplitSink};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{net::TcpStream, sync::watch, task::JoinSet, time::MissedTickBehavior};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async_with_config,
    tungstenite::{Message, client::IntoClientRequest},
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const PASSWORD: &str = "bench-password-1";
/// Most warm-up rounds sent while waiting for every subscriber to be live.
const WARMUP_ROUNDS: usize = 40;
const WARMUP_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SenderKind {
    /// `send_room_message` frames on the owner's own WebSocket.
    Ws,
    /// `POST /api/send_room_message`, one request per message.
    Http,
}

/// WebSocket fan-out benchmark for the Mirage server (needs
/// `cargo build --release` first).
#[derive(Debug, Parser)]
#[command(name = "ws_bench")]
struct Args {
    /// WebSocket subscribers in the room (each its own user).
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Messages per second sent to the room.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// How long to send for, in seconds.
    #[arg(long, default_value_t = 15)]
    duration_secs: u64,
    /// How the messages are sent.
    #[arg(long, value_enum, default_value_t = SenderKind::Ws)]
    sender: SenderKind,
    /// The server binary. Default: `mirage` in the same target profile
    /// directory as this example, else `$CARGO_TARGET_DIR/release/mirage`,
    /// else `./target/release/mirage`.
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Registrations/logins in flight at once (each is an Argon2id hash).
    #[arg(long, default_value_t = 8)]
    setup_concurrency: usize,
    /// WebSocket handshakes in flight at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// After the last send, wait at most this long for missing deliveries.
    #[arg(long, default_value_t = 5)]
    tail_secs: u64,
    /// Passed to the server as `--ws-queue-len` (server default when unset).
    #[arg(long)]
    ws_queue_len: Option<usize>,
}

/// The child server; killed (and its data directory removed) on drop, on
/// every path out of `main`, errors included.
struct Server {
    child: Child,
    base: String,
    ws_url: String,
    _data_dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn start(bin: &Path, ws_queue_len: Option<usize>) -> Result<Server> {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.local_addr()?.port()
        };
        let data_dir = tempfile::tempdir().context("creating the data directory")?;
        let mut command = Command::new(bin);
        command
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--log", "warn"])
            // Load generators send far faster than any person.
            .args(["--rate-limits", "off"])
            .stdin(Stdio::null());
        if let Some(len) = ws_queue_len {
            command.arg("--ws-queue-len").arg(len.to_string());
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            ws_url: format!("ws://127.0.0.1:{port}/api/ws"),
            _data_dir: data_dir,
        };
        let client = http_client()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("the server exited during start-up: {status}");
            }
            let ping = client.get(format!("{}/api/ping", server.base)).send();
            if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(1), ping).await
                && response.status() == 200
            {
                return Ok(server);
            }
            ensure!(
                Instant::now() < deadline,
                "the server did not answer /api/ping within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn http_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?)
}

fn find_server_bin(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        ensure!(
            path.is_file(),
            "--server-bin {} does not exist; build it with `cargo build --release`",
            path.display()
        );
        return Ok(path);
    }
    let mut candidates = Vec::new();
    // This example is <target>/<profile>/examples/ws_bench.
    if let Ok(exe) = std::env::current_exe()
        && let Some(profile_dir) = exe.parent().and_then(Path::parent)
    {
        candidates.push(profile_dir.join("mirage"));
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
                "the server binary was not found (looked at {}).\n\
                 Build it first with `cargo build --release` (same CARGO_TARGET_DIR), \
                 or pass --server-bin PATH",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// A field of /proc/<pid>/status in KiB (`VmRSS`, `VmHWM`).
fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// (utime, stime) of a process, in clock ticks (USER_HZ, 100 on Linux).
fn proc_cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime, stime are 14, 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

/// The machine's CPU time from /proc/stat: (total, idle + iowait, steal).
fn system_cpu_ticks() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let values: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let at = |i: usize| values.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest is in user).
    Some(((0..8).map(at).sum(), at(3) + at(4), at(7)))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// CPU use over the measured phase, in percent of one core (process) or of
/// the whole machine (system).
struct CpuMark {
    at: Instant,
    server: (u64, u64),
    bench: (u64, u64),
    system: (u64, u64, u64),
}

impl CpuMark {
    fn now(server_pid: u32) -> Self {
        CpuMark {
            at: Instant::now(),
            server: proc_cpu_ticks(server_pid).unwrap_or_default(),
            bench: proc_cpu_ticks(std::process::id()).unwrap_or_default(),
            system: system_cpu_ticks().unwrap_or((0, 0, 0)),
        }
    }

    fn since(&self, start: &CpuMark) -> Value {
        const TICKS_PER_S: f64 = 100.0;
        let secs = self.at.duration_since(start.at).as_secs_f64().max(1e-9);
        let pct = |ticks: u64| 100.0 * ticks as f64 / TICKS_PER_S / secs;
        let total = self.system.0.saturating_sub(start.system.0).max(1) as f64;
        let idle = self.system.1.saturating_sub(start.system.1) as f64;
        let steal = self.system.2.saturating_sub(start.system.2) as f64;
        let user = self.server.0.saturating_sub(start.server.0);
        let sys = self.server.1.saturating_sub(start.server.1);
        let bench = (self.bench.0 + self.bench.1).saturating_sub(start.bench.0 + start.bench.1);
        json!({
            "server_pct_of_core": pct(user + sys),
            "server_user_pct_of_core": pct(user),
            "server_kernel_pct_of_core": pct(sys),
            "bench_pct_of_core": pct(bench),
            "machine_busy_pct": 100.0 * (total - idle) / total,
            "machine_steal_pct": 100.0 * steal / total,
        })
    }
}

/// The soft limit on open files of this process (the server inherits it).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// State shared by the sender and every subscriber.
struct Shared {
    epoch: Instant,
    /// Per sequence number: nanoseconds since `epoch` of the send, plus one
    /// (zero: not sent).
    sent_at: Vec<AtomicU64>,
    /// Per sequence number: the slowest subscriber's latency in ns, i.e. when
    /// the whole fan-out of that message had arrived.
    fanout_ns: Vec<AtomicU64>,
    /// Per sequence number: the fastest subscriber's latency in ns (u64::MAX:
    /// none yet), about when the server had stored and published it.
    first_ns: Vec<AtomicU64>,
    /// Per sequence number: send → ack (WebSocket) or → HTTP response, ns.
    ack_ns: Vec<AtomicU64>,
    delivered: AtomicU64,
    warm: AtomicUsize,
    send_errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn new(messages: usize) -> Self {
        let zeros = || (0..messages).map(|_| AtomicU64::new(0)).collect();
        Shared {
            epoch: Instant::now(),
            sent_at: zeros(),
            fanout_ns: zeros(),
            first_ns: (0..messages).map(|_| AtomicU64::new(u64::MAX)).collect(),
            ack_ns: zeros(),
            delivered: AtomicU64::new(0),
            warm: AtomicUsize::new(0),
            send_errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }
    }

    fn ns_since_epoch(&self, at: Instant) -> u64 {
        at.duration_since(self.epoch).as_nanos() as u64
    }

    /// Latency of `seq` received at `at`, if it was sent.
    fn latency_ns(&self, seq: usize, at: Instant) -> Option<u64> {
        let sent = self.sent_at.get(seq)?.load(Ordering::Acquire);
        (sent != 0).then(|| self.ns_since_epoch(at).saturating_sub(sent - 1))
    }

    fn send_error(&self, error: String) {
        self.send_errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().expect("error lock");
        first.get_or_insert(error);
    }
}

#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "ref")]
    reference: Option<Value>,
    #[serde(default)]
    error: Option<String>,
}

enum Payload {
    Measured(usize),
    Warmup,
    Other,
}

fn payload(message: &str) -> Payload {
    if let Some(seq) = message.strip_prefix("bench ") {
        seq.parse().map_or(Payload::Other, Payload::Measured)
    } else if message.starts_with("warmup ") {
        Payload::Warmup
    } else {
        Payload::Other
    }
}

#[derive(Default)]
struct SubscriberReport {
    latencies_ns: Vec<u64>,
    duplicates: u64,
    /// Why the server side ended the connection before the bench did.
    dropped: Option<String>,
}

/// Reads one subscriber's socket until `stop` (or `hard_deadline`).
async fn subscriber(
    mut ws: Ws,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    hard_deadline: tokio::time::Instant,
) -> SubscriberReport {
    let messages = shared.sent_at.len();
    let mut report = SubscriberReport {
        latencies_ns: Vec::with_capacity(messages),
        ..Default::default()
    };
    let mut seen = vec![false; messages];
    let mut warm = false;
    loop {
        let frame = tokio::select! {
            _ = stop.changed() => break,
            () = tokio::time::sleep_until(hard_deadline) => break,
            frame = ws.next() => frame,
        };
        let now = Instant::now();
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(close))) => {
                report.dropped = Some(format!("closed by the server: {close:?}"));
                break;
            }
            None => {
                report.dropped = Some("stream ended".into());
                break;
            }
            Some(Err(err)) => {
                report.dropped = Some(format!("read error: {err}"));
                break;
            }
            Some(Ok(_)) => continue,
        };
        let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else {
            continue;
        };
        if frame.kind != "room_message" {
            continue;
        }
        match payload(frame.message.as_deref().unwrap_or("")) {
            Payload::Measured(seq) => {
                let Some(latency) = shared.latency_ns(seq, now) else {
                    continue;
                };
                if std::mem::replace(&mut seen[seq], true) {
                    report.duplicates += 1;
                    continue;
                }
                report.latencies_ns.push(latency);
                shared.fanout_ns[seq].fetch_max(latency, Ordering::Relaxed);
                shared.first_ns[seq].fetch_min(latency, Ordering::Relaxed);
                shared.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Payload::Warmup if !warm => {
                warm = true;
                shared.warm.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    report
}

async fn connect_ws(url: &str, token: &str) -> Result<Ws> {
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("Authorization", token.parse()?);
    // disable_nagle: small frames must not wait for the peer's ACK.
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(20),
        connect_async_with_config(request, None, true),
    )
    .await
    .context("WebSocket handshake timed out")??;
    Ok(ws)
}

/// Registers and logs in one user; returns the session token.
async fn make_user(client: &reqwest::Client, base: &str, username: String) -> Result<String> {
    let response = client
        .post(format!("{base}/api/register"))
        .json(&json!({
            "username": username,
            "email": format!("{username}@bench.invalid"),
            "password": PASSWORD,
        }))
        .send()
        .await?;
    let status = response.status();
    ensure!(
        status == 201,
        "register {username}: {status} {}",
        response.text().await.unwrap_or_default()
    );
    let response = client
        .post(format!("{base}/api/login"))
        .json(&json!({ "username": username, "password": PASSWORD }))
        .send()
        .await?;
    let status = response.status();
    ensure!(status == 200, "login {username}: {status}");
    let body: Value = response.json().await?;
    body["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("login {username}: no token in {body}"))
}

async fn post_ok(
    client: &reqwest::Client,
    url: String,
    token: &str,
    body: Value,
    want: u16,
) -> Result<Value> {
    let response = client
        .post(&url)
        .header("Authorization", token)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    ensure!(status == want, "{url}: {status} {text}");
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The sending side: the owner's WebSocket, or HTTP requests.
enum Sender {
    Ws {
        sink: SplitSink<Ws, Message>,
        acks: tokio::task::JoinHandle<()>,
    },
    Http {
        client: reqwest::Client,
        url: String,
        token: String,
        in_flight: JoinSet<()>,
    },
}

impl Sender {
    async fn open(
        kind: SenderKind,
        server: &Server,
        token: &str,
        shared: Arc<Shared>,
        stop: watch::Receiver<bool>,
        hard_deadline: tokio::time::Instant,
    ) -> Result<Sender> {
        Ok(match kind {
            SenderKind::Ws => {
                let (sink, stream) = connect_ws(&server.ws_url, token).await?.split();
                let acks = tokio::spawn(read_acks(stream, shared, stop, hard_deadline));
                Sender::Ws { sink, acks }
            }
            SenderKind::Http => Sender::Http {
                client: http_client()?,
                url: format!("{}/api/send_room_message", server.base),
                token: token.to_owned(),
                in_flight: JoinSet::new(),
            },
        })
    }

    /// Sends `message`; `seq` is stamped just before the send call.
    async fn send(
        &mut self,
        shared: &Arc<Shared>,
        room_id: i64,
        seq: Option<usize>,
        message: String,
    ) -> Result<()> {
        match self {
            Sender::Ws { sink, .. } => {
                let frame = json!({
                    "type": "send_room_message",
                    "room_id": room_id,
                    "message": message,
                    "ref": seq.map_or(Value::Null, |s| json!(s)),
                })
                .to_string();
                if let Some(seq) = seq {
                    let at = shared.ns_since_epoch(Instant::now());
                    shared.sent_at[seq].store(at + 1, Ordering::Release);
                }
                sink.send(Message::text(frame))
                    .await
                    .context("sending on the owner's WebSocket")?;
            }
            Sender::Http {
                client,
                url,
                token,
                in_flight,
            } => {
                let request = client
                    .post(url.as_str())
                    .header("Authorization", token.as_str())
                    .json(&json!({ "room_id": room_id, "message": message }));
                let shared = shared.clone();
                let started = Instant::now();
                if let Some(seq) = seq {
                    let at = shared.ns_since_epoch(started);
                    shared.sent_at[seq].store(at + 1, Ordering::Release);
                }
                // One task per request, so a slow response does not hold
                // back the next tick; at most one per message.
                in_flight.spawn(async move {
                    match request.send().await {
                        Ok(response) if response.status() == 200 => {
                            if let Some(seq) = seq {
                                let took = started.elapsed().as_nanos() as u64;
                                shared.ack_ns[seq].store(took, Ordering::Relaxed);
                            }
                        }
                        Ok(response) => shared.send_error(format!(
                            "HTTP {}: {}",
                            response.status(),
                            response.text().await.unwrap_or_default()
                        )),
                        Err(err) => shared.send_error(err.to_string()),
                    }
                });
            }
        }
        Ok(())
    }

    /// Waits (bounded) for outstanding HTTP responses.
    async fn finish(self) {
        match self {
            Sender::Ws { mut sink, acks } => {
                // The ack reader stops with the subscribers.
                let _ = tokio::time::timeout(Duration::from_secs(10), acks).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
            }
            Sender::Http { mut in_flight, .. } => {
                let _ = tokio::time::timeout(Duration::from_secs(10), async {
                    while in_flight.join_next().await.is_some() {}
                })
                .await;
                in_flight.abort_all();
            }
        }
    }
}

/// Reads the sender's acks: send → ack time per sequence number.
async fn read_acks(
    mut stream: futures_util::stream::SplitStream<Ws>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    hard_deadline: tokio::time::Instant,
) {
    loop {
        let frame = tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep_until(hard_deadline) => return,
            frame = stream.next() => frame,
        };
        let now = Instant::now();
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => return,
        };
        let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else {
            continue;
        };
        let seq = frame
            .reference
            .as_ref()
            .and_then(Value::as_u64)
            .map(|s| s as usize);
        match frame.kind.as_str() {
            "ack" => {
                if let Some(seq) = seq
                    && let Some(took) = shared.latency_ns(seq, now)
                {
                    shared.ack_ns[seq].store(took, Ordering::Relaxed);
                }
            }
            "error" => shared.send_error(format!(
                "error frame (ref {seq:?}): {}",
                frame.error.unwrap_or_default()
            )),
            _ => {}
        }
    }
}

/// Samples the server's VmRSS every 200 ms: (latest, peak) in KiB.
fn spawn_rss_sampler(pid: u32) -> (Arc<(AtomicU64, AtomicU64)>, tokio::task::JoinHandle<()>) {
    let rss = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let sampled = rss.clone();
    let handle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        // Aborted at the end of the run; bounded by the run itself.
        loop {
            tick.tick().await;
            let Some(kib) = proc_status_kib(pid, "VmRSS") else {
                return;
            };
            sampled.0.store(kib, Ordering::Relaxed);
            sampled.1.fetch_max(kib, Ordering::Relaxed);
        }
    });
    (rss, handle)
}

/// Nearest-rank percentile of sorted values, in milliseconds.
fn percentile_ms(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted_ns.len() as f64).ceil() as usize;
    sorted_ns[rank.clamp(1, sorted_ns.len()) - 1] as f64 / 1e6
}

fn summary(mut ns: Vec<u64>) -> Value {
    ns.sort_unstable();
    json!({
        "count": ns.len(),
        "p50_ms": percentile_ms(&ns, 50.0),
        "p90_ms": percentile_ms(&ns, 90.0),
        "p99_ms": percentile_ms(&ns, 99.0),
        "max_ms": percentile_ms(&ns, 100.0),
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.subscribers >= 1, "--subscribers must be at least 1");
    ensure!(
        args.rate > 0.0 && args.rate <= 10_000.0,
        "--rate must be in (0, 10000]"
    );
    ensure!(
        (1..=3600).contains(&args.duration_secs),
        "--duration-secs must be 1..=3600"
    );
    let messages = (args.rate * args.duration_secs as f64).round().max(1.0) as usize;
    if let Some(limit) = open_files_limit() {
        let needed = args.subscribers as u64 + 200;
        ensure!(
            limit >= needed,
            "the open-files limit is {limit}, need about {needed} (raise it with `ulimit -n`)"
        );
    }
    let bin = find_server_bin(args.server_bin.clone())?;
    println!("server binary: {}", bin.display());
    let server = Server::start(&bin, args.ws_queue_len).await?;
    let pid = server.pid();
    println!("server pid {pid} at {}", server.base);
    let (rss, sampler) = spawn_rss_sampler(pid);
    let result = run(&args, &server, messages, &rss).await;
    sampler.abort();
    let hwm = proc_status_kib(pid, "VmHWM").unwrap_or(0);
    drop(server);
    let mut report = result?;
    report["server"]["vm_hwm_mib"] = json!(mib(hwm));
    print_report(&report);
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        println!("JSON written to {}", path.display());
    }
    Ok(())
}

async fn run(
    args: &Args,
    server: &Server,
    messages: usize,
    rss: &(AtomicU64, AtomicU64),
) -> Result<Value> {
    let client = http_client()?;
    let base = server.base.as_str();
    let started = Instant::now();

    // Users: the owner (sender) and one per subscriber.
    let tokens: Vec<String> = tokio::time::timeout(
        Duration::from_secs(600),
        futures_util::stream::iter(0..=args.subscribers)
            .map(|i| make_user(&client, base, format!("bench_{i:05}")))
            .buffered(args.setup_concurrency.max(1))
            .try_collect(),
    )
    .await
    .context("creating users took over 600 s")??;
    let (owner, subscriber_tokens) = tokens.split_first().expect("at least two users");
    println!(
        "{} users registered and logged in in {:.1} s",
        tokens.len(),
        started.elapsed().as_secs_f64()
    );

    let created = post_ok(
        &client,
        format!("{base}/api/create_room"),
        owner,
        json!({ "room_name": "bench", "is_private": 0 }),
        201,
    )
    .await?;
    let room_id = created["room_id"]
        .as_i64()
        .ok_or_else(|| anyhow!("no room_id in {created}"))?;
    tokio::time::timeout(
        Duration::from_secs(300),
        futures_util::stream::iter(subscriber_tokens)
            .map(|token| {
                post_ok(
                    &client,
                    format!("{base}/api/join_room"),
                    token,
                    json!({ "room_id": room_id, "password": "" }),
                    200,
                )
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>(),
    )
    .await
    .context("joining took over 300 s")??;
    println!("{} subscribers joined room {room_id}", args.subscribers);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = proc_status_kib(server.pid(), "VmRSS").unwrap_or(0);

    // Subscribers' sockets.
    let shared = Arc::new(Shared::new(messages));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Nothing runs past this, whatever happens.
    let hard_deadline = tokio::time::Instant::now()
        + Duration::from_secs(300 + args.duration_secs + args.tail_secs);
    let connect_started = Instant::now();
    let sockets: Vec<Ws> = tokio::time::timeout(
        Duration::from_secs(300),
        futures_util::stream::iter(subscriber_tokens)
            .map(|token| connect_ws(&server.ws_url, token))
            .buffer_unordered(args.connect_concurrency.max(1))
            .try_collect(),
    )
    .await
    .context("connecting the subscribers took over 300 s")??;
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let mut readers = JoinSet::new();
    for ws in sockets {
        readers.spawn(subscriber(
            ws,
            shared.clone(),
            stop_rx.clone(),
            hard_deadline,
        ));
    }
    println!(
        "{} WebSockets connected in {connect_secs:.1} s",
        args.subscribers
    );

    let mut sender = Sender::open(
        args.sender,
        server,
        owner,
        shared.clone(),
        stop_rx.clone(),
        hard_deadline,
    )
    .await?;

    // Warm-up: the server registers a socket's rooms just after the
    // handshake; wait until a message has reached every subscriber.
    let mut warmups = 0;
    while shared.warm.load(Ordering::Relaxed) < args.subscribers && warmups < WARMUP_ROUNDS {
        sender
            .send(&shared, room_id, None, format!("warmup {warmups}"))
            .await?;
        warmups += 1;
        tokio::time::sleep(WARMUP_EVERY).await;
    }
    let warm = shared.warm.load(Ordering::Relaxed);
    ensure!(
        warm == args.subscribers,
        "only {warm} of {} subscribers got a warm-up message after {warmups} rounds",
        args.subscribers
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_connected = proc_status_kib(server.pid(), "VmRSS").unwrap_or(0);
    println!(
        "all subscribers live after {warmups} warm-up message(s); sending {messages} messages at {}/s via {:?}",
        args.rate, args.sender
    );

    // The measured phase.
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let load_before = load_average();
    let cpu_start = CpuMark::now(server.pid());
    let send_started = Instant::now();
    for seq in 0..messages {
        tick.tick().await;
        sender
            .send(&shared, room_id, Some(seq), format!("bench {seq}"))
            .await?;
    }
    let send_secs = send_started.elapsed().as_secs_f64();
    let cpu = CpuMark::now(server.pid()).since(&cpu_start);

    // The tail: wait (bounded) for the deliveries still under way.
    let expected = (messages * args.subscribers) as u64;
    let tail_deadline = Instant::now() + Duration::from_secs(args.tail_secs);
    while shared.delivered.load(Ordering::Relaxed) < expected && Instant::now() < tail_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss_end = proc_status_kib(server.pid(), "VmRSS").unwrap_or(0);
    let _ = stop_tx.send(true);

    let mut latencies = Vec::with_capacity(expected as usize);
    let mut duplicates = 0;
    let mut dropped = Vec::new();
    let collect = async {
        while let Some(joined) = readers.join_next().await {
            if let Ok(report) = joined {
                latencies.extend(report.latencies_ns);
                duplicates += report.duplicates;
                dropped.extend(report.dropped);
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), collect)
        .await
        .is_err()
    {
        readers.abort_all();
        bail!("subscriber tasks did not stop within 30 s");
    }
    sender.finish().await;

    let received = latencies.len() as u64;
    let fanout: Vec<u64> = (0..messages)
        .filter(|&s| shared.sent_at[s].load(Ordering::Relaxed) != 0)
        .map(|s| shared.fanout_ns[s].load(Ordering::Relaxed))
        .filter(|&ns| ns != 0)
        .collect();
    let firsts: Vec<u64> = shared
        .first_ns
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .filter(|&ns| ns != u64::MAX)
        .collect();
    let ms = |ns: u64| (ns as f64 / 1e4).round() / 100.0;
    let per_message = |values: &[AtomicU64], none: u64| -> Vec<Value> {
        values
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .map(|ns| {
                if ns == none {
                    Value::Null
                } else {
                    json!(ms(ns))
                }
            })
            .collect()
    };
    let acks: Vec<u64> = shared
        .ack_ns
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .filter(|&ns| ns != 0)
        .collect();
    let first_error = shared.first_error.lock().expect("error lock").clone();
    Ok(json!({
        "config": {
            "subscribers": args.subscribers,
            "rate_per_s": args.rate,
            "duration_s": args.duration_secs,
            "sender": format!("{:?}", args.sender).to_lowercase(),
            "ws_queue_len": args.ws_queue_len,
        },
        "setup": {
            "users_and_room_s": connect_started.duration_since(started).as_secs_f64(),
            "connect_s": connect_secs,
            "warmup_messages": warmups,
        },
        "sent": {
            "messages": messages,
            "seconds": send_secs,
            "achieved_rate_per_s": messages as f64 / send_secs,
            "errors": shared.send_errors.load(Ordering::Relaxed),
            "first_error": first_error,
        },
        "deliveries": {
            "expected": expected,
            "received": received,
            "missing": expected.saturating_sub(received),
            "duplicates": duplicates,
            "subscribers_dropped": dropped.len(),
            "first_drop": dropped.first(),
        },
        "latency": summary(latencies),
        "fanout_first": summary(firsts),
        "fanout_complete": summary(fanout),
        "sender_ack": summary(acks),
        "cpu_during_send": cpu,
        "load_average": { "before_send": load_before, "after_send": load_average() },
        "per_message_ms": {
            "ack": per_message(&shared.ack_ns, 0),
            "first_delivery": per_message(&shared.first_ns, u64::MAX),
            "last_delivery": per_message(&shared.fanout_ns, 0),
        },
        "server": {
            "pid": server.pid(),
            "rss_before_subscribers_mib": mib(rss_before),
            "rss_connected_mib": mib(rss_connected),
            "rss_end_mib": mib(rss_end),
            "rss_peak_sampled_mib": mib(rss.1.load(Ordering::Relaxed)),
            "per_connection_kib": (rss_connected as f64 - rss_before as f64) / args.subscribers as f64,
        },
    }))
}

fn print_report(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let c = &r["config"];
    let d = &r["deliveries"];
    let s = &r["server"];
    let sent = &r["sent"];
    println!();
    println!(
        "== ws_bench: {} subscribers, {} msg/s for {} s, sender {} ==",
        c["subscribers"], c["rate_per_s"], c["duration_s"], c["sender"]
    );
    println!(
        "sent             {} messages in {:.2} s ({:.1}/s), {} send errors{}",
        sent["messages"],
        f(&sent["seconds"]),
        f(&sent["achieved_rate_per_s"]),
        sent["errors"],
        sent["first_error"]
            .as_str()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    println!(
        "deliveries       expected {}, received {}, missing {}, duplicates {}, subscribers dropped {}",
        d["expected"], d["received"], d["missing"], d["duplicates"], d["subscribers_dropped"]
    );
    if let Some(drop) = d["first_drop"].as_str() {
        println!("first drop       {drop}");
    }
    println!(
        "{:<16} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "ms", "count", "p50", "p90", "p99", "max"
    );
    for (name, key) in [
        ("delivery", "latency"),
        ("first receiver", "fanout_first"),
        ("last receiver", "fanout_complete"),
        ("sender ack", "sender_ack"),
    ] {
        let l = &r[key];
        println!(
            "{:<16} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            name,
            l["count"],
            f(&l["p50_ms"]),
            f(&l["p90_ms"]),
            f(&l["p99_ms"]),
            f(&l["max_ms"])
        );
    }
    println!(
        "server RSS MiB   before subscribers {:.1}, all connected {:.1}, end {:.1}, peak sampled {:.1}, VmHWM {:.1}; {:.1} KiB per connection",
        f(&s["rss_before_subscribers_mib"]),
        f(&s["rss_connected_mib"]),
        f(&s["rss_end_mib"]),
        f(&s["rss_peak_sampled_mib"]),
        f(&s["vm_hwm_mib"]),
        f(&s["per_connection_kib"])
    );
    let cpu = &r["cpu_during_send"];
    println!(
        "CPU while sending server {:.0}% of a core (user {:.0}%, kernel {:.0}%), bench {:.0}%, machine busy {:.0}% (steal {:.1}%); load average {} -> {}",
        f(&cpu["server_pct_of_core"]),
        f(&cpu["server_user_pct_of_core"]),
        f(&cpu["server_kernel_pct_of_core"]),
        f(&cpu["bench_pct_of_core"]),
        f(&cpu["machine_busy_pct"]),
        f(&cpu["machine_steal_pct"]),
        r["load_average"]["before_send"].as_str().unwrap_or("?"),
        r["load_average"]["after_send"].as_str().unwrap_or("?"),
    );
    let l = &r["latency"];
    println!(
        "RESULT subscribers={} sender={} rate={} sent={} received={}/{} dup={} dropped={} p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms first_p99={:.2}ms last_p99={:.2}ms ack_p99={:.2}ms server_cpu={:.0}% bench_cpu={:.0}% rss_before={:.1}MiB rss_connected={:.1}MiB rss_peak={:.1}MiB hwm={:.1}MiB per_conn={:.1}KiB",
        c["subscribers"],
        c["sender"].as_str().unwrap_or("?"),
        c["rate_per_s"],
        sent["messages"],
        d["received"],
        d["expected"],
        d["duplicates"],
        d["subscribers_dropped"],
        f(&l["p50_ms"]),
        f(&l["p90_ms"]),
        f(&l["p99_ms"]),
        f(&l["max_ms"]),
        f(&r["fanout_first"]["p99_ms"]),
        f(&r["fanout_complete"]["p99_ms"]),
        f(&r["sender_ack"]["p99_ms"]),
        f(&cpu["server_pct_of_core"]),
        f(&cpu["bench_pct_of_core"]),
        f(&s["rss_before_subscribers_mib"]),
        f(&s["rss_connected_mib"]),
        f(&s["rss_peak_sampled_mib"]),
        f(&s["vm_hwm_mib"]),
        f(&s["per_connection_kib"])
    );
}
