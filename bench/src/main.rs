//! mirage-bench: issue 5's HTTP load benchmark.
//!
//! Loads a synthetic dataset straight into a fresh SQLite database through
//! mirage's bulk importer, starts the release server on it, and runs closed
//! loops per scenario and concurrency. See docs/PERFORMANCE.md.
//!
//! ```text
//! cargo build --release && cargo run --release -p mirage-bench -- [flags]
//! ```

mod client;
mod dataset;
mod report;
mod scenarios;
mod server;
mod soak;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::Bytes;
use clap::Parser;
use serde_json::{Value, json};

use crate::{
    client::{Conn, Req},
    dataset::Sizes,
    report::{Row, mib},
    scenarios::{Scenario, Shared, closed_loop},
    server::{RssSampler, Server, proc_status_kib},
};

/// HTTP load benchmark for the Mirage server (needs `cargo build --release` first).
#[derive(Debug, Clone, Parser, serde::Serialize)]
#[command(name = "mirage-bench")]
struct Args {
    /// Users in the dataset.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// Posts in the dataset.
    #[arg(long, default_value_t = 1_000_000)]
    posts: usize,
    /// Votes per post on average (never by the author).
    #[arg(long, default_value_t = 2.0)]
    votes_per_post: f64,
    /// Replies per post on average (about a third nested).
    #[arg(long, default_value_t = 0.3)]
    replies_per_post: f64,
    /// Users with a session the load phase acts as.
    #[arg(long, default_value_t = 2_000)]
    sessions: usize,
    /// Private rooms (there are always 5 public ones).
    #[arg(long, default_value_t = 50)]
    private_rooms: usize,
    /// Direct messages in the dataset.
    #[arg(long, default_value_t = 100_000)]
    inbox_messages: usize,
    /// Seed of the dataset and of the request mix.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Concurrency levels (connections, each a closed loop).
    #[arg(long, value_delimiter = ',', default_values_t = vec![16, 64, 256])]
    connections: Vec<usize>,
    /// Measured seconds per scenario and concurrency.
    #[arg(long, default_value_t = 5)]
    duration_secs: u64,
    /// Unmeasured seconds before each measurement.
    #[arg(long, default_value_t = 1)]
    warmup_secs: u64,
    /// Repetitions of the whole load phase; figures are medians over them.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Scenarios to run (default: all of issue 5's), comma-separated;
    /// `login_interference` and `upload_memory` are extra scenarios, and the
    /// reads get_followers, get_following, check_follow, room_members,
    /// rooms, user_rooms, inbox_count and usercount run only when named.
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Instead of the load phase: fyp, get_posts, profile and
    /// get_room_messages at 64 connections on 10,000 posts and on --posts,
    /// each loaded from scratch, and the throughput ratio.
    #[arg(long)]
    growth: bool,
    /// Instead of the load phase: the soak, the mixed load at a steady rate
    /// for --soak-secs, sampling the server's memory, open files and
    /// connections; exits non-zero on any error or on growth over the
    /// second half. Give it a smaller dataset (docs/PERFORMANCE.md, "Soak").
    #[arg(long)]
    soak: bool,
    /// Soak length in seconds.
    #[arg(long, default_value_t = 600)]
    soak_secs: u64,
    /// Soak connections (keep-alive, each paced to its share of the rate).
    #[arg(long, default_value_t = 32)]
    soak_connections: usize,
    /// Soak requests per second over all connections (0: as fast as answered).
    #[arg(long, default_value_t = 400.0)]
    soak_rate: f64,
    /// Seconds between the soak's samples of the server.
    #[arg(long, default_value_t = 5)]
    soak_sample_secs: u64,
    /// Most the server's RSS may grow over the soak's second half, in percent.
    #[arg(long, default_value_t = 10.0)]
    soak_max_rss_growth_percent: f64,
    /// Most the server's open files may grow over the soak's second half.
    #[arg(long, default_value_t = 2)]
    soak_max_fd_growth: i64,
    /// Most the server's established TCP connections may grow over the soak's second half.
    #[arg(long, default_value_t = 2)]
    soak_max_connection_growth: i64,
    /// JSON results file (the SVG plot goes next to it).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep the data directory (its path is printed).
    #[arg(long)]
    keep_data: bool,
    /// The server binary (default: found like examples/ws_bench does).
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

const EXTRA_SCENARIOS: [&str; 2] = ["login_interference", "upload_memory"];
const GROWTH_SCENARIOS: [Scenario; 4] = [
    Scenario::Fyp,
    Scenario::GetPosts,
    Scenario::Profile,
    Scenario::GetRoomMessages,
];
const UPLOAD_BYTES: usize = 24 * 1024 * 1024;
const UPLOADS: usize = 3;
const MULTIPART_BOUNDARY: &str = "mirage-bench-boundary-7MA4YWxkTrZu0gW";
const MULTIPART_CONTENT_TYPE: &str =
    "multipart/form-data; boundary=mirage-bench-boundary-7MA4YWxkTrZu0gW";

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    for name in &args.scenarios {
        ensure!(
            Scenario::parse(name).is_some() || EXTRA_SCENARIOS.contains(&name.as_str()),
            "unknown scenario {name:?}; known: {}, {}, {}",
            Scenario::ALL.map(Scenario::name).join(", "),
            Scenario::OPTIONAL.map(Scenario::name).join(", "),
            EXTRA_SCENARIOS.join(", ")
        );
    }
    ensure!(
        args.runs >= 1 && !args.connections.is_empty(),
        "nothing to run"
    );
    let bin = server::find_server_bin(args.server_bin.clone())?;
    let started = chrono::Utc::now();
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "bench-results/{}.json",
            started.format("%Y%m%dT%H%M%SZ")
        ))
    });
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    println!("mirage-bench: server {}", bin.display());
    let password_hash = mirage::auth::Passwords::new(1)
        .hash(dataset::PASSWORD)
        .await
        .map_err(|e| anyhow!("hashing the password: {e:?}"))?;

    let mut doc = json!({
        "started_at": started.to_rfc3339(),
        "machine": server::machine(),
        "commit": server::commit(),
        "flags": args,
        "server_bin": bin.display().to_string(),
    });
    if args.soak {
        let passed = run_soak(&args, &bin, &password_hash, &out, doc).await?;
        if !passed {
            std::process::exit(1);
        }
        return Ok(());
    }
    let title;
    let summaries = if args.growth {
        let mut sets = Vec::new();
        let mut rows = Vec::new();
        for posts in [10_000, args.posts] {
            let (set, mut set_rows) =
                load_and_measure(&args, &bin, &password_hash, posts, true).await?;
            for row in &mut set_rows {
                row.scenario = format!("{}@{}posts", row.scenario, posts);
            }
            sets.push(set);
            rows.extend(set_rows);
        }
        let summaries = report::summarize(&rows);
        let ratios: Vec<Value> = GROWTH_SCENARIOS
            .iter()
            .map(|s| {
                let rps = |posts: usize| {
                    summaries
                        .iter()
                        .find(|x| x.scenario == format!("{}@{}posts", s.name(), posts))
                        .map_or(f64::NAN, |x| x.rps)
                };
                let (small, large) = (rps(10_000), rps(args.posts));
                json!({ "scenario": s.name(), "rps_10k": small, "rps_large": large,
                        "slowdown": small / large })
            })
            .collect();
        println!("\ngrowth (64 connections, median rps; target: slowdown ≤ 1.5):");
        for r in &ratios {
            println!(
                "  {:<18} 10k posts {:>8.0}  {} posts {:>8.0}  slowdown {:.2}x",
                r["scenario"].as_str().unwrap_or(""),
                r["rps_10k"].as_f64().unwrap_or(f64::NAN),
                args.posts,
                r["rps_large"].as_f64().unwrap_or(f64::NAN),
                r["slowdown"].as_f64().unwrap_or(f64::NAN)
            );
        }
        doc["growth"] = json!({ "datasets": sets, "ratios": ratios, "rows": rows });
        title = "mirage-bench --growth".to_owned();
        summaries
    } else {
        let (set, rows) = load_and_measure(&args, &bin, &password_hash, args.posts, false).await?;
        let summaries = report::summarize(&rows);
        doc["dataset"] = set;
        doc["rows"] = serde_json::to_value(&rows)?;
        title = format!("mirage-bench: {} users, {} posts", args.users, args.posts);
        summaries
    };
    println!();
    report::print_table(&summaries);
    doc["summary"] = serde_json::to_value(&summaries)?;
    doc["finished_at"] = json!(chrono::Utc::now().to_rfc3339());
    std::fs::write(&out, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", out.display()))?;
    let svg = out.with_extension("svg");
    report::plot(&summaries, &svg, &title)?;
    println!("\nresults: {}\nplot:    {}", out.display(), svg.display());
    let failed: u64 = summaries.iter().map(|s| s.errors).sum();
    if failed > 0 {
        println!("WARNING: {failed} requests failed (see error samples above and in the JSON)");
    }
    Ok(())
}

/// Loads the dataset into a fresh data dir, starts the server on it and
/// soaks it; writes the JSON report to `out`; returns whether it passed.
async fn run_soak(
    args: &Args,
    bin: &Path,
    password_hash: &str,
    out: &Path,
    mut doc: Value,
) -> Result<bool> {
    let (data_dir, ds, set) = load_dataset(args, password_hash, args.posts).await?;
    let server = Server::start(bin, data_dir.path()).await?;
    let pid = server.pid();
    println!("server pid {pid} on {}", server.addr);
    let plan = soak::SoakPlan {
        duration: Duration::from_secs(args.soak_secs),
        connections: args.soak_connections.max(1),
        rate: args.soak_rate,
        sample_every: Duration::from_secs(args.soak_sample_secs.max(1)),
        seed: args.seed,
        limits: soak::GrowthLimits {
            rss_percent: args.soak_max_rss_growth_percent,
            fds: args.soak_max_fd_growth,
            tcp_connections: args.soak_max_connection_growth,
        },
    };
    println!(
        "soak: {} s, {} connections, {} req/s, a sample every {} s",
        plan.duration.as_secs(),
        plan.connections,
        plan.rate,
        plan.sample_every.as_secs()
    );
    let shared = Arc::new(Shared::new(Arc::new(ds), server.addr));
    let (report, passed) = soak::soak(shared, pid, &plan).await?;
    drop(server);
    doc["dataset"] = set;
    doc["soak"] = report;
    doc["finished_at"] = json!(chrono::Utc::now().to_rfc3339());
    std::fs::write(out, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("results: {}", out.display());
    Ok(passed)
}

/// Loads a dataset of `posts` posts into a fresh data dir (removed when
/// the returned guard drops); returns it, the dataset, and its description.
async fn load_dataset(
    args: &Args,
    password_hash: &str,
    posts: usize,
) -> Result<(tempfile::TempDir, dataset::Dataset, Value)> {
    let data_dir = tempfile::Builder::new()
        .prefix("mirage-bench-")
        .tempdir()
        .context("creating the data directory")?;
    let sizes = Sizes {
        users: args.users,
        posts,
        votes_per_post: args.votes_per_post,
        replies_per_post: args.replies_per_post,
        sessions: args.sessions.min(args.users / 2),
        private_rooms: args.private_rooms,
        inbox_messages: args.inbox_messages,
        seed: args.seed,
    };
    println!(
        "loading {} users, {} posts into {} ...",
        sizes.users,
        sizes.posts,
        data_dir.path().display()
    );
    warn_if_disk_is_short(data_dir.path());
    let dir = data_dir.path().to_owned();
    let hash = password_hash.to_owned();
    let load_sizes = sizes.clone();
    let (store, mut ds) =
        tokio::task::spawn_blocking(move || dataset::load(&dir, &load_sizes, &hash)).await??;
    let recount_started = Instant::now();
    ds.loaded.counters_corrected = store
        .recount_counters()
        .await
        .map_err(|e| anyhow!("recounting: {e}"))?;
    ds.loaded.recount_secs = recount_started.elapsed().as_secs_f64();
    drop(store);
    let l = &ds.loaded;
    println!(
        "loaded {} rows in {:.1} s ({:.0} rows/s): {} follows, {} posts, {} tags, {} votes, \
         {} replies, {} room messages, {} inbox messages; recount {:.1} s corrected {} rows",
        l.rows,
        l.load_secs,
        l.rows_per_sec,
        l.follows,
        l.posts,
        l.post_tags,
        l.votes,
        l.replies,
        l.room_messages,
        l.inbox_messages,
        l.recount_secs,
        l.counters_corrected
    );
    ensure!(
        l.counters_corrected == 0,
        "the loader left {} rows with wrong counters",
        l.counters_corrected
    );
    let set = json!({ "sizes": sizes, "loaded": ds.loaded.clone() });
    Ok((data_dir, ds, set))
}

/// Loads a dataset of `posts` posts into a fresh data dir, starts the
/// server on it and runs the load phase (or the growth subset); returns
/// the dataset description (with extra results) and the measured rows.
async fn load_and_measure(
    args: &Args,
    bin: &Path,
    password_hash: &str,
    posts: usize,
    growth: bool,
) -> Result<(Value, Vec<Row>)> {
    let (data_dir, ds, mut set) = load_dataset(args, password_hash, posts).await?;
    let server = Server::start(bin, data_dir.path()).await?;
    let pid = server.pid();
    println!("server pid {pid} on {}", server.addr);
    let sampler = RssSampler::start(pid, Duration::from_millis(100));
    let shared = Arc::new(Shared::new(Arc::new(ds), server.addr));
    let wanted = |name: &str| args.scenarios.is_empty() || args.scenarios.iter().any(|s| s == name);
    let warmup = Duration::from_secs(args.warmup_secs);
    let duration = Duration::from_secs(args.duration_secs);
    let mut rows = Vec::new();
    let mut interference = Vec::new();
    let mut uploads = Vec::new();
    for run in 1..=args.runs {
        println!("run {run}/{}", args.runs);
        let plan: Vec<(Scenario, Vec<usize>)> = if growth {
            GROWTH_SCENARIOS.iter().map(|s| (*s, vec![64])).collect()
        } else {
            let named = |s: &&Scenario| args.scenarios.iter().any(|n| n == s.name());
            Scenario::ALL
                .iter()
                .filter(|s| wanted(s.name()))
                .chain(Scenario::OPTIONAL.iter().filter(named))
                .map(|s| (*s, args.connections.clone()))
                .collect()
        };
        for (scenario, levels) in plan {
            for connections in levels {
                sampler.take_window(pid);
                let seed = args.seed ^ (run as u64) << 48 ^ (connections as u64) << 16;
                let o = closed_loop(
                    shared.clone(),
                    scenario,
                    connections,
                    warmup,
                    duration,
                    seed,
                )
                .await?;
                let row = Row::new(
                    scenario,
                    scenario.name(),
                    connections,
                    run,
                    &o,
                    sampler.take_window(pid),
                );
                print_row(&row);
                rows.push(row);
            }
        }
        if !growth && wanted("login_interference") {
            interference
                .push(login_interference(&shared, &sampler, pid, run, args, &mut rows).await?);
        }
        if !growth && wanted("upload_memory") {
            uploads.push(upload_memory(&shared, pid, run).await?);
        }
    }
    report::relate_to_ping(&mut rows);
    let hwm = proc_status_kib(pid, "VmHWM").unwrap_or(0);
    let overall = sampler
        .overall_peak_kib
        .load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "server memory: peak VmRSS {:.1} MiB (100 ms sampling), VmHWM {:.1} MiB",
        mib(overall),
        mib(hwm)
    );
    if !interference.is_empty() {
        let ratios: Vec<f64> = interference
            .iter()
            .filter_map(|v| v["ratio"].as_f64())
            .collect();
        let mut sorted = ratios.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let median = sorted[sorted.len() / 2];
        println!(
            "login_interference: get_post_by_id@64 with 8 login connections keeps {:.0}% of its \
             throughput (median of runs; target ≥ 80%)",
            median * 100.0
        );
        set["login_interference"] = json!({ "runs": interference, "median_ratio": median });
    }
    if !uploads.is_empty() {
        set["upload_memory"] = json!(uploads);
    }
    set["server_memory"] = json!({ "peak_rss_mib": mib(overall), "vm_hwm_mib": mib(hwm) });
    drop(sampler);
    drop(server);
    if args.keep_data {
        let kept = data_dir.keep();
        println!("data kept in {}", kept.display());
    }
    Ok((set, rows))
}

fn print_row(r: &Row) {
    println!(
        "  {:<20} {:>4} conns {:>8.0} rps  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  \
         errors {}  peak RSS {:.1} MiB",
        r.scenario, r.connections, r.rps, r.p50_ms, r.p99_ms, r.p999_ms, r.errors, r.peak_rss_mib
    );
    for (status, n) in &r.errors_by_status {
        println!("      status {status}: {n}");
    }
    for sample in &r.error_samples {
        println!("      e.g. {sample}");
    }
}

/// get_post_by_id at 64 connections alone, then again beside 8 connections
/// doing logins (Argon2id): how much throughput the logins take away.
async fn login_interference(
    shared: &Arc<Shared>,
    sampler: &RssSampler,
    pid: u32,
    run: usize,
    args: &Args,
    rows: &mut Vec<Row>,
) -> Result<Value> {
    let warmup = Duration::from_secs(args.warmup_secs);
    let duration = Duration::from_secs(args.duration_secs);
    let seed = args.seed ^ 0x1091 ^ (run as u64) << 40;
    sampler.take_window(pid);
    let alone = closed_loop(
        shared.clone(),
        Scenario::GetPostById,
        64,
        warmup,
        duration,
        seed,
    )
    .await?;
    let alone_row = Row::new(
        Scenario::GetPostById,
        "interference:reads_alone",
        64,
        run,
        &alone,
        sampler.take_window(pid),
    );
    let (reads, logins) = tokio::join!(
        closed_loop(
            shared.clone(),
            Scenario::GetPostById,
            64,
            warmup,
            duration,
            seed + 1
        ),
        closed_loop(
            shared.clone(),
            Scenario::Login,
            8,
            warmup,
            duration,
            seed + 2
        ),
    );
    let (reads, logins) = (reads?, logins?);
    let peak = sampler.take_window(pid);
    let reads_row = Row::new(
        Scenario::GetPostById,
        "interference:reads_with_logins",
        64,
        run,
        &reads,
        peak,
    );
    let logins_row = Row::new(
        Scenario::Login,
        "interference:logins",
        8,
        run,
        &logins,
        peak,
    );
    for row in [&alone_row, &reads_row, &logins_row] {
        print_row(row);
    }
    let ratio = reads.rps() / alone.rps();
    println!(
        "  login_interference: reads keep {:.0}% of their throughput",
        ratio * 100.0
    );
    let value = json!({
        "run": run,
        "reads_alone_rps": alone.rps(),
        "reads_with_logins_rps": reads.rps(),
        "logins_rps": logins.rps(),
        "ratio": ratio,
    });
    rows.extend([alone_row, reads_row, logins_row]);
    Ok(value)
}

/// A room member uploads a 24 MiB file a few times; the server's RSS is
/// sampled every 10 ms meanwhile.
async fn upload_memory(shared: &Arc<Shared>, pid: u32, run: usize) -> Result<Value> {
    let (room, slot) = *shared
        .ds
        .public_memberships
        .first()
        .ok_or_else(|| anyhow!("no public room member with a session"))?;
    let token = shared.ds.sessions[slot].token.clone();
    let mut body = Vec::with_capacity(UPLOAD_BYTES + 512);
    body.extend_from_slice(
        format!(
            "--{MULTIPART_BOUNDARY}\r\nContent-Disposition: form-data; name=\"room_id\"\r\n\r\n{room}\r\n\
             --{MULTIPART_BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"bench.bin\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend((0..UPLOAD_BYTES).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    body.extend_from_slice(format!("\r\n--{MULTIPART_BOUNDARY}--\r\n").as_bytes());
    let req = Req {
        method: hyper::Method::POST,
        path: "/api/upload_file".into(),
        token: Some(token),
        content_type: MULTIPART_CONTENT_TYPE,
        body: Bytes::from(body),
    };
    let before = proc_status_kib(pid, "VmRSS").unwrap_or(0);
    let sampler = RssSampler::start(pid, Duration::from_millis(10));
    let mut conn = Conn::open(shared.addr).await?;
    let mut times = Vec::new();
    for _ in 0..UPLOADS {
        let started = Instant::now();
        let (status, body) = tokio::time::timeout(Duration::from_secs(60), conn.send(&req))
            .await
            .map_err(|_| anyhow!("upload timed out"))??;
        if status != 200 {
            bail!(
                "upload_file answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let peak = sampler
        .overall_peak_kib
        .load(std::sync::atomic::Ordering::Relaxed);
    let after = proc_status_kib(pid, "VmRSS").unwrap_or(0);
    println!(
        "  upload_memory: {UPLOADS} × 24 MiB, RSS before {:.1} MiB, peak {:.1} MiB (+{:.1}, target ≤ +8), \
         after {:.1} MiB; upload times {:?} ms",
        mib(before),
        mib(peak),
        mib(peak.saturating_sub(before)),
        mib(after),
        times.iter().map(|t| t.round()).collect::<Vec<_>>()
    );
    Ok(json!({
        "run": run,
        "uploads": UPLOADS,
        "bytes": UPLOAD_BYTES,
        "rss_before_mib": mib(before),
        "rss_peak_mib": mib(peak),
        "rss_growth_mib": mib(peak.saturating_sub(before)),
        "rss_after_mib": mib(after),
        "upload_ms": times,
    }))
}

/// Free space a full run may need: the database (0.76 GB once the 1M
/// posts are loaded) and, under writes that never pause, a WAL of up to
/// about 4 GiB (4,107 MiB in a full run; 19.6 GB before the server
/// bounded it, docs/PERFORMANCE.md). A full disk turns writes into errors.
const DISK_WANTED: u64 = 8 << 30;

/// Warns when the file system holding `dir` has less than `DISK_WANTED` free.
fn warn_if_disk_is_short(dir: &std::path::Path) {
    let Some(free) = free_bytes(dir) else { return };
    if free < DISK_WANTED {
        println!(
            "warning: {:.1} GiB free under {}; a full run's write phases can grow the WAL \
             to about 4 GiB (README, \"Known gaps\")",
            free as f64 / (1u64 << 30) as f64,
            dir.display()
        );
    }
}

/// Bytes available to this user on the file system holding `dir`.
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stats` is written by
    // statvfs before it is read, which only happens when the call succeeded.
    let stats = unsafe {
        if libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) != 0 {
            return None;
        }
        stats.assume_init()
    };
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}
