//! The soak: the mixed load (90% reads, 10% writes) at a steady rate for a
//! long time, sampling the server's memory, open files, TCP connections and
//! threads, and failing when there are errors or when any of them still
//! grows in the second half of the run. See "Soak" in docs/PERFORMANCE.md.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::MissedTickBehavior;

use crate::{
    client::{self, Conn},
    report::mib,
    scenarios::{REQUEST_TIMEOUT, Scenario, Shared, Worker},
    server::proc_status_kib,
};

/// How the soak runs and what it tolerates.
#[derive(Debug, Clone, Serialize)]
pub struct SoakPlan {
    pub duration: Duration,
    pub connections: usize,
    /// Requests per second over all connections; 0 runs closed loops.
    pub rate: f64,
    pub sample_every: Duration,
    pub seed: u64,
    pub limits: GrowthLimits,
}

/// The most each figure may grow over the second half of the run.
#[derive(Debug, Clone, Serialize)]
pub struct GrowthLimits {
    pub rss_percent: f64,
    pub fds: i64,
    pub tcp_connections: i64,
}

/// One sample of the server process.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub secs: f64,
    pub rss_kib: u64,
    pub fds: usize,
    /// Established TCP connections owned by the server process.
    pub tcp_connections: usize,
    pub threads: u64,
    /// Requests answered as expected / not, since the previous sample.
    pub ok: u64,
    pub errors: u64,
}

/// Counters the load tasks bump and the sampler reads.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    errors: AtomicU64,
}

/// What each load task saw that went wrong.
#[derive(Default)]
struct TaskErrors {
    by_status: BTreeMap<u16, u64>,
    samples: Vec<String>,
}

/// Runs the soak against the server `pid` serves at `shared.addr`; returns
/// the JSON report and whether it passed.
pub async fn soak(shared: Arc<Shared>, pid: u32, plan: &SoakPlan) -> Result<(Value, bool)> {
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let end = start + plan.duration;
    // The load outlasts the last sample, so no sample sees connections closing.
    let load_end = end + plan.sample_every;
    let per_conn_interval =
        (plan.rate > 0.0).then(|| Duration::from_secs_f64(plan.connections as f64 / plan.rate));
    let connections = plan.connections;
    let mut tasks = tokio::task::JoinSet::new();
    for slot in 0..connections {
        let (shared, tally) = (shared.clone(), tally.clone());
        let mut worker = Worker::new(Scenario::Mixed, slot, plan.seed);
        let mut conn = Some(Conn::open(shared.addr).await?);
        tasks.spawn(async move {
            let mut errors = TaskErrors::default();
            let mut pace = per_conn_interval.map(|every| {
                // Connections start spread over one interval, not in lockstep.
                let offset = every.mul_f64(slot as f64 / connections as f64);
                let mut ticks = tokio::time::interval_at((Instant::now() + offset).into(), every);
                ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
                ticks
            });
            while Instant::now() < load_end {
                if let Some(ticks) = pace.as_mut() {
                    ticks.tick().await;
                    if Instant::now() >= load_end {
                        break;
                    }
                }
                let (req, expected) = worker.next(&shared);
                let result = match conn.as_mut() {
                    Some(c) => tokio::time::timeout(REQUEST_TIMEOUT, c.send(&req))
                        .await
                        .ok(),
                    None => None,
                };
                let answer = client::Outcome::of(result);
                let status = answer.status();
                if status == expected {
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                tally.errors.fetch_add(1, Ordering::Relaxed);
                *errors.by_status.entry(status).or_default() += 1;
                if errors.samples.len() < 3 {
                    let text = answer.sample();
                    errors
                        .samples
                        .push(format!("{} {} -> {status}: {text}", req.method, req.path));
                }
                if status == 0 {
                    conn = tokio::time::timeout(REQUEST_TIMEOUT, Conn::open(shared.addr))
                        .await
                        .ok()
                        .and_then(Result::ok);
                }
            }
            errors
        });
    }

    println!(
        "{:>7} {:>9} {:>5} {:>5} {:>7} {:>8} {:>7}",
        "secs", "RSS MiB", "fds", "tcp", "threads", "req/s", "errors"
    );
    let mut samples = Vec::new();
    let mut last = Instant::now();
    let mut ticks = tokio::time::interval(plan.sample_every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = Instant::now();
        let sample = Sample {
            secs: now.duration_since(start).as_secs_f64(),
            rss_kib: proc_status_kib(pid, "VmRSS").unwrap_or(0),
            fds: open_fds(pid),
            tcp_connections: established_tcp(pid),
            threads: proc_status_kib(pid, "Threads").unwrap_or(0),
            ok: tally.ok.swap(0, Ordering::Relaxed),
            errors: tally.errors.swap(0, Ordering::Relaxed),
        };
        // The first tick is at once: no window to divide by yet.
        let window = now.duration_since(last).as_secs_f64();
        let rps = if window < 0.5 {
            0.0
        } else {
            (sample.ok + sample.errors) as f64 / window
        };
        last = now;
        println!(
            "{:>7.0} {:>9.1} {:>5} {:>5} {:>7} {:>8.0} {:>7}",
            sample.secs,
            mib(sample.rss_kib),
            sample.fds,
            sample.tcp_connections,
            sample.threads,
            rps,
            sample.errors
        );
        samples.push(sample);
        if now >= end {
            break;
        }
    }

    let mut by_status: BTreeMap<u16, u64> = BTreeMap::new();
    let mut error_samples = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let Ok(part) = joined else {
            bail!("a load task panicked");
        };
        for (status, n) in part.by_status {
            *by_status.entry(status).or_default() += n;
        }
        error_samples.extend(part.samples);
    }
    error_samples.truncate(10);
    // Requests answered after the last sample still count.
    let late_ok = tally.ok.load(Ordering::Relaxed);
    let late_errors = tally.errors.load(Ordering::Relaxed);
    let ok: u64 = samples.iter().map(|s| s.ok).sum::<u64>() + late_ok;
    let errors: u64 = samples.iter().map(|s| s.errors).sum::<u64>() + late_errors;

    let growth = second_half_growth(&samples);
    let mut failures = Vec::new();
    if errors > 0 {
        failures.push(format!("{errors} requests failed: {by_status:?}"));
    }
    if growth.rss_percent > plan.limits.rss_percent {
        failures.push(format!(
            "RSS grew {:.1}% over the second half (limit {}%)",
            growth.rss_percent, plan.limits.rss_percent
        ));
    }
    if growth.fds > plan.limits.fds {
        failures.push(format!(
            "open files grew by {} over the second half (limit {})",
            growth.fds, plan.limits.fds
        ));
    }
    if growth.tcp_connections > plan.limits.tcp_connections {
        failures.push(format!(
            "TCP connections grew by {} over the second half (limit {})",
            growth.tcp_connections, plan.limits.tcp_connections
        ));
    }
    if samples.len() < 4 {
        failures.push("too few samples to judge growth (run longer)".into());
    }

    let secs = start.elapsed().as_secs_f64();
    println!(
        "\nsoak: {ok} requests ok, {errors} failed, {:.0} req/s over {secs:.0} s on {} connections",
        (ok + errors) as f64 / secs,
        plan.connections
    );
    for (status, n) in &by_status {
        println!("  status {status}: {n}");
    }
    for sample in &error_samples {
        println!("  e.g. {sample}");
    }
    println!(
        "second half: RSS {:+.1}% ({:.1} -> {:.1} MiB), open files {:+}, TCP connections {:+}, threads {:+}",
        growth.rss_percent,
        mib(growth.rss_from_kib),
        mib(growth.rss_to_kib),
        growth.fds,
        growth.tcp_connections,
        growth.threads
    );
    let passed = failures.is_empty();
    if passed {
        println!("soak passed: no errors, memory, files and connections flat");
    } else {
        for failure in &failures {
            println!("SOAK FAILED: {failure}");
        }
    }
    let report = json!({
        "plan": plan,
        "load_secs": secs,
        "requests_ok": ok,
        "requests_failed": errors,
        "errors_by_status": by_status,
        "error_samples": error_samples,
        "second_half_growth": growth,
        "samples": samples,
        "passed": passed,
        "failures": failures,
    });
    Ok((report, passed))
}

/// Growth from the start of the second half to the end, each end the
/// median of up to three samples so one noisy sample does not decide.
#[derive(Debug, Clone, Serialize)]
pub struct Growth {
    pub rss_from_kib: u64,
    pub rss_to_kib: u64,
    pub rss_percent: f64,
    pub fds: i64,
    pub tcp_connections: i64,
    pub threads: i64,
}

fn second_half_growth(samples: &[Sample]) -> Growth {
    let half = &samples[samples.len() / 2..];
    let n = half.len().min(3);
    let median = |part: &[Sample], f: &dyn Fn(&Sample) -> u64| -> u64 {
        let mut v: Vec<u64> = part.iter().map(f).collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    let (head, tail) = (&half[..n], &half[half.len() - n..]);
    let delta = |f: &dyn Fn(&Sample) -> u64| median(tail, f) as i64 - median(head, f) as i64;
    let rss_from_kib = median(head, &|s| s.rss_kib);
    let rss_to_kib = median(tail, &|s| s.rss_kib);
    Growth {
        rss_from_kib,
        rss_to_kib,
        rss_percent: if rss_from_kib == 0 {
            0.0
        } else {
            (rss_to_kib as f64 - rss_from_kib as f64) * 100.0 / rss_from_kib as f64
        },
        fds: delta(&|s| s.fds as u64),
        tcp_connections: delta(&|s| s.tcp_connections as u64),
        threads: delta(&|s| s.threads),
    }
}

/// Entries of /proc/<pid>/fd.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// Established TCP connections whose socket the process holds: the socket
/// inodes among its fds, looked up in its network namespace's TCP tables.
fn established_tcp(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let inodes: HashSet<String> = dir
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok())
        .map(|text| {
            text.lines()
                .skip(1)
                .filter(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    // Field 3 is the state (01 = ESTABLISHED), field 9 the inode.
                    fields.get(3) == Some(&"01")
                        && fields.get(9).is_some_and(|i| inodes.contains(*i))
                })
                .count()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rss_kib: u64, fds: usize, tcp_connections: usize) -> Sample {
        Sample {
            secs: 0.0,
            rss_kib,
            fds,
            tcp_connections,
            threads: 10,
            ok: 0,
            errors: 0,
        }
    }

    #[test]
    fn growth_is_measured_over_the_second_half_between_medians() {
        // Start-up growth in the first half does not count; one spike does not either.
        let samples: Vec<Sample> = [1000, 2000, 2000, 2000, 9000, 2000, 2000, 2000]
            .iter()
            .map(|&rss| sample(rss, 40, 16))
            .collect();
        let flat = second_half_growth(&samples);
        assert_eq!((flat.rss_from_kib, flat.rss_to_kib), (2000, 2000));
        assert_eq!((flat.fds, flat.tcp_connections), (0, 0));

        let leaking: Vec<Sample> = (0..8)
            .map(|i| sample(2000 + i * 100, 40 + i as usize, 16 + i as usize / 2))
            .collect();
        let growth = second_half_growth(&leaking);
        assert_eq!((growth.rss_from_kib, growth.rss_to_kib), (2500, 2600));
        assert!((growth.rss_percent - 4.0).abs() < 1e-9);
        assert_eq!((growth.fds, growth.tcp_connections), (1, 1));
    }

    #[test]
    fn this_process_has_open_files_and_its_tcp_connections_are_counted() {
        let pid = std::process::id();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let before = established_tcp(pid);
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        // Both ends live in this process.
        assert_eq!(established_tcp(pid), before + 2);
        assert!(open_fds(pid) >= 3);
        drop((client, server_side));
    }
}
