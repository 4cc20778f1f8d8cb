//! The one thread that writes to SQLite, with group commit.
//!
//! SQLite takes one writer at a time, and a durable commit waits for the
//! disk (an fsync of the WAL: about 5 ms on the VM the benchmarks run on).
//! Requests that arrive while a commit is under way queue up; the thread then
//! runs all of them in one transaction, each inside its own savepoint (a
//! failing request rolls back only its own changes), and commits once.
//!
//! The fsync is pipelined: the commit writes the WAL frames (in one write:
//! see `wal_vfs`; the sync SQLite asks for at commit writes them and no
//! more), and a second thread, the syncer, fsyncs the WAL
//! file and only then answers the batch's requests, while the writer
//! already runs the next batch. Nothing is acknowledged before the commit
//! that holds it is on disk; under load, one fsync covers many requests.
//! Since the WAL is appended in commit order and read back only up to its
//! first torn frame, a later commit is never durable without the earlier
//! ones. Readers may see a commit during its fsync, before it is
//! acknowledged (as on PostgreSQL with group commit).
//!
//! Checkpoints (copying the WAL back into the database file, with an fsync
//! of its own) run on a third thread, so that a commit never waits for one.
//! Under writes that never pause, that thread cannot copy the last frames
//! before more arrive, and SQLite only starts the WAL over once it is all
//! copied: when the WAL passes `WalLimits::start_over_at`, the writer
//! waits between two batches while that thread copies the rest.

use std::{
    fs::File,
    io,
    os::unix::fs::MetadataExt,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use super::{read_lock::ReadLock, wal_vfs};
use crate::store::{StoreError, StoreResult};

/// Most requests committed together; bounds the wait of the first one.
const MAX_BATCH: usize = 256;

/// Hands the commit's outcome to the waiting request.
type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;

/// One request's work. Runs in the batch's transaction (`None` when the
/// transaction could not start); returns its completion and whether the
/// transaction is still sound.
type Job = Box<dyn FnOnce(Option<&Transaction>) -> (Completion, bool) + Send>;

/// How often the WAL is checkpointed.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

const MIB: u64 = 1024 * 1024;

/// When the writer waits, between two batches, for the checkpointer to
/// copy the rest of the WAL, so that the next commit starts it over (see
/// `checkpoint`).
#[derive(Debug, Clone, Copy)]
pub(super) struct WalLimits {
    /// WAL size (its frames since it last started over) past which the
    /// writer is asked to wait; asked again each time the WAL has grown as
    /// much once more.
    pub start_over_at: u64,
    /// ... while the WAL grew by at most this many bytes a second since the
    /// last checkpoint: under heavier writes the database's fsync in the
    /// copy is slow, and each wait (and the fsync of the new WAL's header
    /// that follows) shows in the writes' latency.
    pub growing_at_most: u64,
    /// Longest the writer waits: a copy that takes longer leaves the WAL to
    /// grow, and writes wait no more.
    pub max_hold: Duration,
    /// Past this size the writer waits however long the copy takes, so that
    /// the WAL (and the disk it takes) stays bounded under any load.
    pub start_over_anyway_at: u64,
    /// A WAL file larger than `start_over_at` is cut back to nothing once it
    /// is all copied and no commit came for this long: the file keeps the
    /// largest size a burst gave it otherwise.
    pub shrink_when_idle_for: Duration,
}

impl Default for WalLimits {
    /// Measured before these existed: at about 1,100 posts a second on the
    /// benchmark's dataset the WAL grew 8 MB a second and never started
    /// over. With a try at every 64 MiB whatever the load, it stayed at
    /// 138-275 MiB under posts at full speed, but in the benchmark's
    /// writes (votes and messages dirty scattered pages) the p99 at 64
    /// connections rose 2-3x; 16 MiB a second is about 2,300 posts
    /// (docs/PERFORMANCE.md, "A WAL that starts over under load").
    fn default() -> Self {
        WalLimits {
            start_over_at: 64 * MIB,
            growing_at_most: 16 * MIB,
            max_hold: Duration::from_millis(10),
            start_over_anyway_at: 4096 * MIB,
            shrink_when_idle_for: Duration::from_secs(10),
        }
    }
}

/// Makes what was committed so far durable (an fsync of the WAL file).
pub(super) type SyncWal = Box<dyn FnMut() -> io::Result<()> + Send>;

/// What the writer thread takes from its queue.
enum Request {
    Write(Job),
    /// From the checkpointer: after the batch under way, say so on `held`
    /// and wait until `released` answers or is dropped, for `max` at most
    /// (`None`: however long that takes).
    Hold {
        held: mpsc::Sender<()>,
        released: mpsc::Receiver<()>,
        max: Option<Duration>,
    },
}

/// A committed batch, waiting for its WAL frames to reach the disk.
struct Committed {
    completions: Vec<Completion>,
    commit: Result<(), String>,
}

pub(super) struct Writer {
    jobs: mpsc::Sender<Request>,
    /// Jobs sent and not yet taken into a batch (for monitoring).
    queued: Arc<AtomicUsize>,
    /// Dropped with the writer, which stops the checkpointer.
    _checkpoints: mpsc::Sender<()>,
}

/// Opens the writer's connection to the database at `path`, on the VFS
/// that writes each commit's WAL frames at once (`wal_vfs`).
pub(super) fn open_connection(path: &Path) -> io::Result<Connection> {
    wal_vfs::register().map_err(io::Error::other)?;
    Connection::open_with_flags_and_vfs(path, OpenFlags::default(), wal_vfs::NAME)
        .map_err(io::Error::other)
}

impl Writer {
    /// Starts the writer, syncer and checkpointer threads; they stop when
    /// the `Writer` is dropped. `conn` must be in WAL mode; with `sync_wal`
    /// each batch is answered once `sync_wal` has made it durable (and the
    /// commits themselves skip the fsync), without it once committed.
    /// `read_lock` is the store's held read lock, let go while the WAL is
    /// copied to start it over (`limits`).
    pub(super) fn start(
        conn: Connection,
        checkpointer: Connection,
        read_lock: Arc<ReadLock>,
        sync_wal: Option<SyncWal>,
        limits: WalLimits,
    ) -> io::Result<Writer> {
        // Commits must not run checkpoints themselves. FULL makes SQLite
        // sync the WAL at each commit, before it publishes the commit: on
        // the gathering VFS (`open_connection`) that is when the commit's
        // frames are written, and the fsync is left to the syncer.
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA synchronous = FULL")
            .map_err(io::Error::other)?;
        let (jobs, queue) = mpsc::channel();
        let (committed, to_sync) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let taken = queued.clone();
        thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || serve(conn, queue, &taken, committed))?;
        thread::Builder::new()
            .name("sqlite-syncer".into())
            .spawn(move || answer_when_durable(to_sync, sync_wal))?;
        let (checkpoints, stop) = mpsc::channel();
        let writer = jobs.clone();
        thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint(checkpointer, stop, writer, &read_lock, limits))?;
        Ok(Writer {
            jobs,
            queued,
            _checkpoints: checkpoints,
        })
    }

    /// Runs `work` in a write transaction; answers once it is committed.
    /// An error from `work` rolls back what `work` did and nothing else.
    pub(super) async fn run<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction) -> StoreResult<T> + Send + 'static,
    {
        self.run_then(work, |_| {}).await
    }

    /// Like `run`, and calls `then` with the outcome before any write
    /// committed after this one is answered (the syncer answers in commit
    /// order): for caches that must forget what the commit removed before
    /// anyone can act on a later write's outcome.
    pub(super) async fn run_then<T, F, G>(&self, work: F, then: G) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction) -> StoreResult<T> + Send + 'static,
        G: FnOnce(&StoreResult<T>) + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |tx| {
            let (outcome, sound) = match tx {
                Some(tx) => in_savepoint(tx, work),
                None => (Err(StoreError::Other("no write transaction".into())), true),
            };
            let completion: Completion = Box::new(move |commit| {
                let result = match commit {
                    Ok(()) => outcome,
                    Err(err) => outcome.and(Err(StoreError::Other(err))),
                };
                then(&result);
                let _ = answer.send(result);
            });
            (completion, sound)
        });
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.jobs.send(Request::Write(job)).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(stopped());
        }
        answered.await.map_err(|_| stopped())?
    }

    /// How many writes wait for the writer thread now.
    pub(super) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

fn stopped() -> StoreError {
    StoreError::Other("the database writer is not running".into())
}

/// Runs `work` inside a savepoint: released if it succeeds, rolled back if
/// it fails or panics. The flag is false if the rollback itself failed.
pub(super) fn in_savepoint<T>(
    tx: &Transaction,
    work: impl FnOnce(&Transaction) -> StoreResult<T>,
) -> (StoreResult<T>, bool) {
    // Cached statements: parsing these three on every write was a sixth of
    // the writer thread's time.
    if let Err(err) = run_cached(tx, "SAVEPOINT request") {
        return (Err(err.into()), true);
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| work(tx)))
        .unwrap_or_else(|_| Err(StoreError::Other("a database write panicked".into())));
    let end = if outcome.is_ok() {
        run_cached(tx, "RELEASE request")
    } else {
        run_cached(tx, "ROLLBACK TO request").and_then(|()| run_cached(tx, "RELEASE request"))
    };
    match end {
        Ok(()) => (outcome, true),
        Err(err) => (outcome.and(Err(err.into())), false),
    }
}

fn run_cached(tx: &Transaction, sql: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(sql)?.execute([]).map(drop)
}

/// PASSIVE: copies what it can without blocking the writer or readers.
///
/// Under writes that never pause, the last frames are always overtaken by
/// new ones, and SQLite starts the WAL over only at a write that finds it
/// all copied, so it would grow without bound (measured: 1.2 GB after 10 s
/// of votes at full speed, 8 MB a second at 1,100 posts a second). Past
/// `limits.start_over_at` this thread copies up to the last commit, then
/// has the writer wait between two batches while it copies what arrived
/// meanwhile (`start_over`), and the writer's next commit starts the WAL
/// over. The wait is a checkpoint's fsync of the database's scattered
/// pages, which is what earlier attempts paid for (docs/PERFORMANCE.md: a
/// RESTART checkpoint between batches stalled writes for up to 1.25 s; run
/// by the writer past 256 MiB, 207-246 ms), so this is tried only while
/// the WAL grows slower than `limits.growing_at_most`, the writer waits at
/// most `limits.max_hold`, and a copy that takes longer leaves the WAL to
/// grow until the next try; past `limits.start_over_anyway_at` the writer
/// waits however long it takes. With
/// `journal_size_limit` SQLite cuts the file back when the WAL starts
/// over, in the first write after the load, which then waited 0.67 s for a
/// 686 MB file; instead this thread cuts it back once no commit came for
/// `limits.shrink_when_idle_for` (`shrink`), where only a write that comes
/// during the cut waits for it.
fn checkpoint(
    conn: Connection,
    stop: mpsc::Receiver<()>,
    writer: mpsc::Sender<Request>,
    read_lock: &ReadLock,
    limits: WalLimits,
) {
    let mut copied = CopiedFrames::new(&conn);
    let frame_bytes = frame_bytes(&conn).unwrap_or(4096 + FRAME_HEADER);
    let mut next_try_at = limits.start_over_at;
    let (mut last_frames, mut last_checkpoint) = (0, Instant::now());
    let mut last_commit_seen = Instant::now();
    let wal_path = wal_path(&conn);
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        let (frames, done) = match passive_checkpoint(&conn) {
            Ok(outcome) => outcome,
            Err(err) => {
                tracing::warn!(%err, "checkpointing the WAL failed");
                continue;
            }
        };
        if let Some(copied) = &mut copied {
            copied.release(done);
        }
        let wal_bytes = u64::try_from(frames).unwrap_or(0) * frame_bytes;
        // Frames since the last checkpoint (all of them if the WAL started
        // over since), per second.
        let started_over = frames < last_frames;
        if frames != last_frames {
            last_commit_seen = Instant::now();
        }
        let grown = frames - if started_over { 0 } else { last_frames };
        let per_second = (u64::try_from(grown).unwrap_or(0) * frame_bytes) as f64
            / last_checkpoint.elapsed().as_secs_f64();
        (last_frames, last_checkpoint) = (frames, Instant::now());
        if started_over || wal_bytes < limits.start_over_at {
            next_try_at = limits.start_over_at;
        }
        if done == frames && last_commit_seen.elapsed() >= limits.shrink_when_idle_for {
            let file_bytes = wal_path
                .as_ref()
                .and_then(|wal| std::fs::metadata(wal).ok())
                .map_or(0, |meta| meta.len());
            if file_bytes > limits.start_over_at && !shrink(&conn, &writer, read_lock, file_bytes) {
                return;
            }
            continue;
        }
        let anyway = wal_bytes >= limits.start_over_anyway_at;
        if !anyway && (wal_bytes < next_try_at || per_second > limits.growing_at_most as f64) {
            continue;
        }
        next_try_at = wal_bytes + limits.start_over_at;
        let max = (!anyway).then_some(limits.max_hold);
        match start_over(&conn, &writer, read_lock, max) {
            // The writer waits for the second copy, for `max` at most.
            Ok(Some(copies)) => tracing::debug!(
                wal_mib = wal_bytes / MIB,
                first_copy_ms = copies.first.as_secs_f64() * 1e3,
                second_copy_ms = copies.second.as_secs_f64() * 1e3,
                "copied the WAL to start it over"
            ),
            Ok(None) => return,
            Err(err) => tracing::warn!(%err, "checkpointing the WAL failed"),
        }
    }
}

/// Cuts the WAL file back to nothing (a TRUNCATE checkpoint), with the
/// held read lock let go, while the writer waits between two batches. Only
/// for a WAL that is all copied and idle: the cut takes as long as the file
/// system needs to free the file's blocks (about 0.7 ms per MiB here), and
/// a write that comes meanwhile waits in the writer's queue rather than on
/// SQLite's lock, whose busy timeout would fail it. Returns false if the
/// writer has stopped.
fn shrink(
    conn: &Connection,
    writer: &mpsc::Sender<Request>,
    read_lock: &ReadLock,
    file_bytes: u64,
) -> bool {
    let Some(release) = hold_writer(writer, None) else {
        return false;
    };
    let started = Instant::now();
    let outcome = read_lock.released(|| {
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        })
    });
    drop(release);
    match outcome {
        Ok(0) => tracing::debug!(
            wal_mib = file_bytes / MIB,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "cut the idle WAL back"
        ),
        // A reader was still in the WAL; the next idle check tries again.
        Ok(_) => {}
        Err(err) => tracing::warn!(%err, "cutting the idle WAL back failed"),
    }
    true
}

/// A PASSIVE checkpoint: (frames in the WAL, frames copied into the
/// database). Copies nothing when another checkpoint is under way.
fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    let (busy, frames, copied) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    Ok(if busy != 0 {
        (frames, 0)
    } else {
        (frames, copied)
    })
}

/// Copies the WAL up to the last commit, then again while the writer
/// waits between two batches (for `max` at most, if any), both with the
/// store's held read lock let go (its snapshot is up to its `HOLD` old): if
/// the second copy reaches the end before the writer moves on, the
/// writer's next commit finds the WAL all copied, with no reader in it,
/// and starts it over at its front. Returns how long each copy took, or
/// `None` if the writer has stopped.
fn start_over(
    conn: &Connection,
    writer: &mpsc::Sender<Request>,
    read_lock: &ReadLock,
    max: Option<Duration>,
) -> rusqlite::Result<Option<Copies>> {
    let started = Instant::now();
    read_lock.released(|| passive_checkpoint(conn))?;
    let first = started.elapsed();
    let Some(release) = hold_writer(writer, max) else {
        return Ok(None);
    };
    let started = Instant::now();
    let copied = read_lock.released(|| passive_checkpoint(conn));
    drop(release);
    copied.map(|_| {
        Some(Copies {
            first,
            second: started.elapsed(),
        })
    })
}

/// Has the writer wait after the batch under way, until the returned
/// handle is dropped (for `max` at most, if any); `None` if the writer has
/// stopped.
fn hold_writer(writer: &mpsc::Sender<Request>, max: Option<Duration>) -> Option<mpsc::Sender<()>> {
    let (held, writer_waits) = mpsc::channel();
    let (release, released) = mpsc::channel();
    let hold = Request::Hold {
        held,
        released,
        max,
    };
    if writer.send(hold).is_err() || writer_waits.recv().is_err() {
        return None;
    }
    Some(release)
}

/// How long `start_over`'s two copies took (for the log).
struct Copies {
    first: Duration,
    second: Duration,
}

/// Gives the kernel back the page cache of the WAL's frames that are
/// copied into the database.
///
/// Under writes that never pause the WAL is never started over, so every
/// frame goes into page-cache pages the kernel has to find fresh: gigabytes
/// in the benchmark. On a VM whose free memory the host has taken back,
/// touching such memory again costs several times a warm page (here 4.2 s
/// of system time for the first 3,000 MB of a file against 0.8 s for the
/// next). A frame copied into the database is never read from the WAL again
/// by a transaction that starts later, so once checkpointed (and one cycle
/// older, for reads that began before) its pages are dropped from the cache
/// (`POSIX_FADV_DONTNEED`: clean pages only, so nothing unsynced is lost),
/// and the WAL's growth reuses the memory they free. Once the WAL starts
/// over, commits write over dropped pages: each commit's write ends on a
/// page boundary (`wal_vfs`), so that the kernel need not read them back.
struct CopiedFrames {
    wal: File,
    frame_bytes: u64,
    /// The WAL header's first salt, which changes when the WAL starts over.
    generation: u32,
    /// Frames copied as of the previous checkpoint.
    previous: u64,
    /// Bytes of the WAL whose pages were already dropped.
    released: u64,
}

/// Bytes of a WAL file's header, and of each frame's.
const WAL_HEADER: u64 = 32;
const FRAME_HEADER: u64 = 24;

/// The WAL file of `conn`'s database, if it is a file.
fn wal_path(conn: &Connection) -> Option<String> {
    let path = conn.path().filter(|p| !p.is_empty())?;
    Some(format!("{path}-wal"))
}

/// Bytes of one frame of the WAL of `conn`'s database.
fn frame_bytes(conn: &Connection) -> Option<u64> {
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).ok()?;
    Some(u64::try_from(page_size).ok()? + FRAME_HEADER)
}

impl CopiedFrames {
    fn new(conn: &Connection) -> Option<Self> {
        let wal = File::open(wal_path(conn)?).ok()?;
        Some(CopiedFrames {
            wal,
            frame_bytes: frame_bytes(conn)?,
            generation: 0,
            previous: 0,
            released: 0,
        })
    }

    /// After a checkpoint that has copied `frames` frames of the WAL.
    fn release(&mut self, frames: i64) {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::FileExt;
        let mut header = [0u8; 20];
        let generation = match self.wal.read_exact_at(&mut header, 0) {
            Ok(()) => u32::from_be_bytes([header[16], header[17], header[18], header[19]]),
            // Empty: nothing written since the WAL was last reset.
            Err(_) => return,
        };
        if generation != self.generation {
            self.generation = generation;
            self.previous = 0;
            self.released = 0;
        }
        let frames = u64::try_from(frames).unwrap_or(0);
        // Only what the previous checkpoint had copied: a read that began
        // before this one may still look up the frames it just copied.
        let end = WAL_HEADER + self.previous.min(frames) * self.frame_bytes;
        self.previous = frames;
        if end > self.released {
            // SAFETY: an advisory call on an open descriptor; it changes no
            // data.
            unsafe {
                libc::posix_fadvise(
                    self.wal.as_raw_fd(),
                    self.released as libc::off_t,
                    (end - self.released) as libc::off_t,
                    libc::POSIX_FADV_DONTNEED,
                );
            }
            self.released = end;
        }
    }
}

/// An fsync of the database's WAL file at `path`. It reopens the file if it
/// was replaced (SQLite deletes it when the last connection closes, which
/// the writer's own connection prevents while it runs; checked anyway, since
/// an fsync of a stale file would acknowledge nothing).
pub(super) fn sync_wal_file(path: PathBuf) -> SyncWal {
    let mut open: Option<File> = None;
    Box::new(move || {
        let current = std::fs::metadata(&path)?;
        let stale = match &open {
            Some(file) => {
                let held = file.metadata()?;
                (held.dev(), held.ino()) != (current.dev(), current.ino())
            }
            None => true,
        };
        if stale {
            open = Some(File::open(&path)?);
        }
        open.as_ref().map_or(Ok(()), File::sync_data)
    })
}

/// The syncer: takes every batch committed since its last fsync, fsyncs
/// once, then answers them all.
fn answer_when_durable(to_sync: mpsc::Receiver<Committed>, mut sync_wal: Option<SyncWal>) {
    while let Ok(first) = to_sync.recv() {
        let mut batches = vec![first];
        batches.extend(to_sync.try_iter());
        let synced = match &mut sync_wal {
            Some(sync) if batches.iter().any(|b| b.commit.is_ok()) => {
                sync().map_err(|err| format!("syncing the WAL: {err}"))
            }
            _ => Ok(()),
        };
        if let Err(err) = &synced {
            tracing::error!(%err, "making committed writes durable failed");
        }
        for batch in batches {
            let outcome = batch.commit.and(synced.clone());
            for completion in batch.completions {
                completion(outcome.clone());
            }
        }
    }
}

fn serve(
    mut conn: Connection,
    queue: mpsc::Receiver<Request>,
    queued: &AtomicUsize,
    committed: mpsc::Sender<Committed>,
) {
    while let Ok(first) = queue.recv() {
        let mut batch = Vec::new();
        let mut hold_after = None;
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Write(job) => batch.push(job),
                // Ends the batch: the writes queued after it wait for it.
                Request::Hold {
                    held,
                    released,
                    max,
                } => {
                    hold_after = Some((held, released, max));
                    break;
                }
            }
            if batch.len() < MAX_BATCH {
                next = queue.try_recv().ok();
            }
        }
        if !batch.is_empty() && !commit_batch(&mut conn, batch, queued, &committed) {
            return;
        }
        if let Some((held, released, max)) = hold_after {
            let _ = held.send(());
            match max {
                Some(max) => drop(released.recv_timeout(max)),
                None => drop(released.recv()),
            }
        }
    }
}

/// Runs `batch` in one transaction and hands the commit to the syncer;
/// false once the syncer has stopped.
fn commit_batch(
    conn: &mut Connection,
    batch: Vec<Job>,
    queued: &AtomicUsize,
    committed: &mpsc::Sender<Committed>,
) -> bool {
    queued.fetch_sub(batch.len(), Ordering::Relaxed);
    let (completions, commit) = match conn.transaction_with_behavior(TransactionBehavior::Immediate)
    {
        Ok(tx) => {
            let mut sound = true;
            let completions: Vec<Completion> = batch
                .into_iter()
                .map(|job| {
                    let (completion, ok) = job(Some(&tx));
                    sound &= ok;
                    completion
                })
                .collect();
            let commit = if sound {
                wal_vfs::deferring_wal_sync(|| tx.commit()).map_err(|e| e.to_string())
            } else {
                // A savepoint could not be rolled back: keep nothing.
                let _ = tx.rollback();
                Err("a failed request could not be rolled back".to_owned())
            };
            (completions, commit)
        }
        Err(err) => {
            let completions = batch.into_iter().map(|job| job(None).0).collect();
            (completions, Err(err.to_string()))
        }
    };
    if let Err(err) = &commit {
        tracing::error!(%err, "committing a batch of writes failed");
    }
    committed
        .send(Committed {
            completions,
            commit,
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::params;
    use std::ptr;

    /// A writer on a fresh database; `sync_wal` gets the WAL file's path.
    fn writer_with(
        sync_wal: impl FnOnce(PathBuf) -> Option<SyncWal>,
        limits: WalLimits,
    ) -> (tempfile::TempDir, Writer, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("w.db");
        let conn = open_connection(&path).expect("open");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE t (n INTEGER PRIMARY KEY);
             CREATE TABLE blobs (b BLOB);",
        )
        .expect("schema");
        let checkpointer = Connection::open(&path).expect("open");
        let sync_wal = sync_wal(dir.path().join("w.db-wal"));
        let read_lock = Arc::new(ReadLock::start(&path).expect("read lock"));
        let writer = Writer::start(conn, checkpointer, read_lock, sync_wal, limits);
        (dir, writer.expect("writer"), path)
    }

    fn writer() -> (tempfile::TempDir, Writer, PathBuf) {
        writer_with(|wal| Some(sync_wal_file(wal)), WalLimits::default())
    }

    /// Pages of `file` in the page cache, over its first `bytes`.
    fn resident_pages(file: &File, bytes: usize) -> usize {
        use std::os::fd::AsRawFd;
        let page = 4096;
        let pages = bytes.div_ceil(page);
        let mut resident = vec![0u8; pages];
        // SAFETY: a read-only shared mapping of an open file, unmapped
        // before returning; `resident` has a byte per page.
        unsafe {
            let map = libc::mmap(
                ptr::null_mut(),
                bytes,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(map, libc::MAP_FAILED, "mapping the WAL");
            assert_eq!(libc::mincore(map, bytes, resident.as_mut_ptr()), 0);
            libc::munmap(map, bytes);
        }
        resident.iter().filter(|&&r| r & 1 == 1).count()
    }

    /// Writes blobs from eight tasks at once, with no pause, for at least
    /// 3 s and until the WAL has started over six times (30 s at most),
    /// and checks that its file stayed smaller than what was written.
    ///
    /// How large the WAL gets between two starts depends on how fast the
    /// disk syncs the checkpoints: a bound of half what was written failed
    /// on a busy CI machine (25.7 MB of WAL, 45.8 MB of blobs, in 3 s). The
    /// file stays below what was written only if it was reused from its
    /// front: without the starts it holds every frame, and each frame is
    /// larger than the blob bytes it holds.
    async fn assert_the_wal_starts_over_under_writes_that_never_pause(limits: WalLimits) {
        let (_dir, writer, path) = writer_with(|wal| Some(sync_wal_file(wal)), limits);
        const BLOB: u64 = 16 * 1024;
        const RESTARTS: usize = 6;
        let writer = Arc::new(writer);
        let written = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (writer, written, done) = (writer.clone(), written.clone(), done.clone());
                tokio::spawn(async move {
                    while !done.load(Ordering::Relaxed) {
                        writer
                            .run(|tx| {
                                let sql = "INSERT INTO blobs (b) VALUES (zeroblob(?1))";
                                Ok(tx.execute(sql, [BLOB as i64])?)
                            })
                            .await
                            .expect("write");
                        written.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let wal = File::open(format!("{}-wal", path.display())).expect("the WAL");
        let wal_size = || wal.metadata().expect("WAL size").len();
        let (mut largest, mut salt, mut restarts) = (0, None, 0);
        let started = tokio::time::Instant::now();
        while started.elapsed() < Duration::from_secs(30)
            && (restarts < RESTARTS || started.elapsed() < Duration::from_secs(3))
        {
            largest = largest.max(wal_size());
            let mut header = [0u8; 20];
            if std::os::unix::fs::FileExt::read_exact_at(&wal, &mut header, 0).is_ok() {
                let now = Some(u32::from_be_bytes([
                    header[16], header[17], header[18], header[19],
                ]));
                if salt.is_some() && now != salt {
                    restarts += 1;
                }
                salt = now;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        done.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.expect("writer task");
        }
        let largest = largest.max(wal_size());
        let written = u64::try_from(written.load(Ordering::Relaxed)).unwrap() * BLOB;
        assert!(
            restarts >= RESTARTS && largest < written,
            "{written} bytes written in {:?}, the WAL started over {restarts} times and reached {largest}",
            started.elapsed()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_under_writes_that_never_pause() {
        assert_the_wal_starts_over_under_writes_that_never_pause(WalLimits {
            start_over_at: MIB,
            growing_at_most: u64::MAX,
            max_hold: Duration::from_secs(5),
            start_over_anyway_at: u64::MAX,
            shrink_when_idle_for: Duration::MAX,
        })
        .await;
    }

    /// A burst grows the WAL file; once the writes stop and it is all
    /// copied, the file is cut back, and nothing committed is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_wal_is_cut_back_after_a_burst() {
        let limits = WalLimits {
            start_over_at: MIB,
            growing_at_most: 0,
            max_hold: Duration::from_secs(5),
            start_over_anyway_at: u64::MAX,
            shrink_when_idle_for: Duration::from_millis(300),
        };
        let (_dir, writer, path) = writer_with(|wal| Some(sync_wal_file(wal)), limits);
        const BLOB: i64 = 16 * 1024;
        const ROWS: i64 = 400;
        // One transaction: its frames all land in the WAL whatever the
        // checkpointer does meanwhile.
        writer
            .run(|tx| {
                let mut insert = tx.prepare("INSERT INTO blobs (b) VALUES (zeroblob(?1))")?;
                for _ in 0..ROWS {
                    insert.execute([BLOB])?;
                }
                Ok(())
            })
            .await
            .expect("the burst");
        let wal_path = format!("{}-wal", path.display());
        let wal_size = || std::fs::metadata(&wal_path).expect("WAL size").len();
        let after_burst = wal_size();
        assert!(
            after_burst > 2 * MIB,
            "the burst left a WAL of {after_burst} bytes"
        );
        let started = tokio::time::Instant::now();
        while wal_size() > 0 && started.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            wal_size(),
            0,
            "the WAL of {after_burst} bytes was still there after {:?} of idle",
            started.elapsed()
        );
        let count = |path: &Path| -> i64 {
            Connection::open(path)
                .expect("open")
                .query_row("SELECT count(*) FROM blobs", [], |r| r.get(0))
                .expect("count")
        };
        assert_eq!(count(&path), ROWS);
        writer
            .run(|tx| Ok(tx.execute("INSERT INTO t (n) VALUES (1)", [])?))
            .await
            .expect("a write after the WAL was cut back");
        assert!(wal_size() > 0, "the next write goes into a new WAL");
        assert_eq!(count(&path), ROWS);
        let t: i64 = Connection::open(&path)
            .expect("open")
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(t, 1);
    }

    /// Writes too heavy to try earlier: the WAL starts over at
    /// `start_over_anyway_at` all the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_its_hard_limit_the_wal_starts_over_even_under_heavy_writes() {
        assert_the_wal_starts_over_under_writes_that_never_pause(WalLimits {
            start_over_at: MIB,
            growing_at_most: 0,
            max_hold: Duration::from_secs(5),
            start_over_anyway_at: 2 * MIB,
            shrink_when_idle_for: Duration::MAX,
        })
        .await;
    }

    #[test]
    fn checkpointed_frames_leave_the_page_cache_one_checkpoint_later() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("c.db");
        let writer = Connection::open(&path).expect("open");
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
                 CREATE TABLE t (n INTEGER PRIMARY KEY, text TEXT);",
            )
            .expect("schema");
        let fill = |from: i64| {
            for n in from..from + 2_000 {
                writer
                    .execute("INSERT INTO t VALUES (?1, ?2)", params![n, "x".repeat(500)])
                    .expect("insert");
            }
        };
        let checkpointer = Connection::open(&path).expect("open");
        let checkpoint = || -> i64 {
            checkpointer
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(2))
                .expect("checkpoint")
        };
        let mut copied = CopiedFrames::new(&checkpointer).expect("the WAL is open");
        let wal = File::open(dir.path().join("c.db-wal")).expect("wal");

        // A reader in the WAL keeps SQLite from starting it over, as
        // non-stop writes do in the server.
        let reader = Connection::open(&path).expect("open");
        fill(0);
        reader
            .execute_batch("BEGIN; SELECT COUNT(*) FROM t;")
            .expect("read");
        let first = checkpoint();
        let first_bytes = (WAL_HEADER + first as u64 * copied.frame_bytes) as usize;
        assert!(first > 100, "{first} frames");
        copied.release(first);
        let before = resident_pages(&wal, first_bytes);
        assert!(before > 0, "the frames written are cached");

        // The next checkpoint drops what the first one had copied.
        fill(10_000);
        let second = checkpoint();
        copied.release(second);
        assert_eq!(copied.released, first_bytes as u64);
        // Kept: the first page (its header is read at each release) and
        // the last one, which the next frames share.
        let after = resident_pages(&wal, first_bytes);
        assert!(after <= 2, "{after} of {before} pages still cached");

        reader.execute_batch("COMMIT").expect("end the read");

        // Dropped pages read back from the file, unchanged.
        let rows: i64 = writer
            .query_row("SELECT COUNT(*) FROM t WHERE length(text) = 500", [], |r| {
                r.get(0)
            })
            .expect("count");
        assert_eq!(rows, 4_000);

        // Started over (the next write after a complete checkpoint with no
        // reader in the WAL): counting starts again from the front.
        fill(20_000);
        checkpoint();
        writer
            .execute("INSERT INTO t VALUES (1000000, 'restart')", [])
            .expect("write after the checkpoint");
        let restarted = checkpoint();
        copied.release(restarted);
        assert!(
            copied.released <= WAL_HEADER + copied.frame_bytes * 2,
            "{} bytes counted as released after the restart",
            copied.released
        );
    }

    #[tokio::test]
    async fn answers_only_after_the_wal_is_synced() {
        let (release, held) = mpsc::channel::<()>();
        let syncs = Arc::new(AtomicUsize::new(0));
        let counted = syncs.clone();
        let sync: SyncWal = Box::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            held.recv().map_err(io::Error::other)
        });
        let (_dir, writer, path) = writer_with(|_| Some(sync), WalLimits::default());
        let writer = Arc::new(writer);
        let write = tokio::spawn({
            let writer = writer.clone();
            async move {
                writer
                    .run(|tx| Ok(tx.execute("INSERT INTO t (n) VALUES (1)", [])?))
                    .await
            }
        });
        // Committed (another connection sees the row), but not answered
        // while the sync is held.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while syncs.load(Ordering::SeqCst) == 0 {
            assert!(std::time::Instant::now() < deadline, "never synced");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let conn = Connection::open(&path).expect("open");
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!write.is_finished(), "answered before the WAL was synced");
        release.send(()).expect("released");
        write.await.unwrap().expect("write");
    }

    #[tokio::test]
    async fn a_failed_sync_fails_the_writes_it_covered() {
        let sync: SyncWal = Box::new(|| Err(io::Error::other("disk gone")));
        let (_dir, writer, _path) = writer_with(|_| Some(sync), WalLimits::default());
        let result = writer
            .run(|tx| Ok(tx.execute("INSERT INTO t (n) VALUES (1)", [])?))
            .await;
        assert!(
            matches!(&result, Err(StoreError::Other(e)) if e.contains("disk gone")),
            "{result:?}"
        );
    }

    #[test]
    fn the_wal_sync_follows_a_replaced_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let wal = dir.path().join("x-wal");
        std::fs::write(&wal, b"one").expect("write");
        let mut sync = sync_wal_file(wal.clone());
        sync().expect("first sync");
        std::fs::remove_file(&wal).expect("remove");
        assert!(
            sync().is_err(),
            "a missing WAL file must not count as synced"
        );
        std::fs::write(&wal, b"two").expect("write");
        sync().expect("sync of the new file");
    }

    #[tokio::test]
    async fn a_failing_request_rolls_back_only_its_own_changes() {
        let (_dir, writer, path) = writer();
        // Many requests at once, so they share transactions; every odd one
        // writes a row and then fails (or panics).
        let results = futures_util::future::join_all((0..200i64).map(|n| {
            writer.run(move |tx| {
                tx.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
                match n % 4 {
                    1 => Err(StoreError::conflict("refused")),
                    3 => panic!("boom"),
                    _ => Ok(n),
                }
            })
        }))
        .await;
        for (n, result) in (0..200i64).zip(&results) {
            assert_eq!(result.is_ok(), n % 2 == 0, "request {n}: {result:?}");
        }
        let conn = Connection::open(&path).expect("open");
        let stored: Vec<i64> = conn
            .prepare("SELECT n FROM t ORDER BY n")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(stored, (0..200).step_by(2).collect::<Vec<i64>>());
    }

    #[tokio::test]
    async fn counts_the_writes_waiting_for_the_writer() {
        let (_dir, writer, _path) = writer();
        let writer = std::sync::Arc::new(writer);
        // The first write holds the writer thread until released.
        let (release, hold) = mpsc::channel::<()>();
        let (started, has_started) = oneshot::channel();
        let first = tokio::spawn({
            let writer = writer.clone();
            async move {
                writer
                    .run(move |_| {
                        let _ = started.send(());
                        hold.recv()
                            .map_err(|_| StoreError::Other("released".into()))
                    })
                    .await
            }
        });
        has_started.await.expect("first write started");
        assert_eq!(writer.queued(), 0);
        let second = tokio::spawn({
            let writer = writer.clone();
            async move { writer.run(|_| Ok(())).await }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while writer.queued() != 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the second write never queued"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        release.send(()).expect("released");
        first.await.unwrap().expect("first write");
        second.await.unwrap().expect("second write");
        assert_eq!(writer.queued(), 0);
    }

    #[tokio::test]
    async fn answers_only_after_the_commit() {
        let (_dir, writer, path) = writer();
        writer
            .run(|tx| Ok(tx.execute("INSERT INTO t (n) VALUES (7)", [])?))
            .await
            .expect("write");
        // A separate connection sees the row as soon as the answer arrives.
        let conn = Connection::open(&path).expect("open");
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 1);
    }

    #[tokio::test]
    async fn a_write_s_hook_runs_before_any_later_write_is_answered() {
        let (_dir, writer, _path) = writer();
        let hooked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = hooked.clone();
        // Polled in order, so the first write is queued before the second.
        let (first, second_saw_hook) = tokio::join!(
            writer.run_then(
                |tx| Ok(tx.execute("INSERT INTO t (n) VALUES (1)", [])?),
                move |_| {
                    // Slow, so that a second answer not held back would win.
                    std::thread::sleep(Duration::from_millis(50));
                    seen.store(true, Ordering::SeqCst);
                },
            ),
            async {
                writer
                    .run(|tx| Ok(tx.execute("INSERT INTO t (n) VALUES (2)", [])?))
                    .await
                    .expect("second write");
                hooked.load(Ordering::SeqCst)
            },
        );
        first.expect("first write");
        assert!(
            second_saw_hook,
            "the second write was answered before the first's hook ran"
        );
    }
}
