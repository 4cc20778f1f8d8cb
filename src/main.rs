use mirage::{
    App,
    config::{Cli, Command},
    ops,
};
use tracing_subscriber::EnvFilter;

/// mimalloc rather than glibc's malloc for Rust's allocations: per-thread
/// free lists without glibc's arena locks, and freed blocks reused rather
/// than unmapped and faulted in again (measured on the 1M-post bench data,
/// server CPU per request at 64 connections: fyp 42 -> 33 us, inbox
/// 43/36 -> 33/26 us, logins 91 -> 159 per second; docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    return_large_blocks_to_the_os();
    let open_files = raise_open_file_limit();
    mirage::store::sqlite::configure_process();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(open_files))
}

/// Raises this process's soft limit on open files to its hard limit, and
/// returns the limit now in force. Every connection is a descriptor, and
/// the usual soft default (1,024, which systemd and most shells keep for
/// compatibility with `select`) would leave connections past it waiting in
/// the listen queue, unanswered; the hard limit (524,288 or more on current
/// distributions) is what an operator allows. Servers such as nginx
/// (`worker_rlimit_nofile`) and Go programs (since Go 1.19) do the same.
fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write `limit`.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return None;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit = raised;
                }
            }
        }
        #[allow(clippy::useless_conversion)] // rlim_t is u64 on Linux, not everywhere
        Some(u64::from(limit.rlim_cur))
    }
    #[cfg(not(unix))]
    None
}

/// glibc's malloc still serves SQLite (its page caches, one per
/// connection). It raises its mmap threshold after a large block is freed
/// and from then on keeps such blocks in per-thread arenas; a fixed
/// threshold (set before any thread starts) keeps them mmapped, so freeing
/// one gives it back to the OS at once. (It was set for Argon2id's 19 MiB
/// blocks, which mimalloc now serves.)
fn return_large_blocks_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; it is called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
    }
}

async fn run(open_files: Option<u64>) -> anyhow::Result<()> {
    let Cli { config, command } = Cli::parse_args();
    let logs = tracing_subscriber::fmt().with_env_filter(EnvFilter::try_new(&config.log)?);
    match command {
        None => logs.init(),
        // Stdout carries the command's report.
        Some(_) => logs.with_writer(std::io::stderr).init(),
    }
    match command {
        None => {}
        Some(Command::Check { repair }) => {
            // 1 means drift: a check that could not run is 2.
            let code = match ops::check(&config, repair).await {
                Ok(outcome) => outcome.exit_code(),
                Err(err) => {
                    eprintln!("mirage check: {err:#}");
                    2
                }
            };
            std::process::exit(code);
        }
        Some(Command::Backup { file, force }) => return ops::backup(&config, &file, force).await,
    }

    let app = App::build(config.clone()).await?;
    tracing::info!(
        addr = %app.local_addr()?,
        data_dir = %config.data_dir.display(),
        open_files,
        "mirage listening"
    );
    app.serve(shutdown_signal()).await?;
    tracing::info!("mirage stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
