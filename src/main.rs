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
    mirage::store::sqlite::configure_process();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
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

async fn run() -> anyhow::Result<()> {
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
