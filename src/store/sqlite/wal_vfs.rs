//! A VFS over SQLite's default one that writes each commit's WAL frames
//! with one `pwrite` instead of two per frame.
//!
//! SQLite appends a commit to the WAL frame by frame, a 24-byte header and
//! then the page, each its own `pwrite` (`walWriteOneFrame`): a vote, which
//! changes about five pages, made ten write calls, and under votes the
//! writer thread spent a third of its time in them. This VFS gathers a
//! WAL's contiguous writes in memory and hands them to the file at once,
//! when anything needs them in the file: a sync, a read, a size, a write
//! elsewhere in the file, closing, or 64 KiB gathered.
//!
//! Readers must not see a commit before its frames are in the file. SQLite
//! publishes a commit (the wal-index header) after writing its frames and,
//! with `synchronous = FULL`, after syncing the WAL, so a connection on this
//! VFS must use FULL: the sync is when the frames go to the file, and a
//! failed write fails the commit before anyone sees it.
//!
//! Inside [`deferring_wal_sync`] a WAL sync only writes the gathered frames:
//! the writer's syncer thread fsyncs the WAL before it answers, as it did
//! with `synchronous = NORMAL`. Every other sync is a real one: a
//! checkpoint's, and the one after a commit that started the WAL over
//! (SQLite syncs the new WAL header before frames that follow it).
//! Only the WAL goes through this code; every other file is the default
//! VFS's own.

use std::{
    cell::Cell,
    ffi::{CStr, c_char, c_int, c_void},
    mem, ptr,
    sync::OnceLock,
};

use rusqlite::ffi;

/// The name to open a connection with.
pub(super) const NAME: &str = "mirage-gathered-wal";
const NAME_C: &CStr = c"mirage-gathered-wal";

/// Gathered bytes that are written out without waiting for a sync. The
/// default VFS cannot take a write of 128 KiB or more (`seekAndWriteFd`
/// masks the length to 17 bits, and a write of a multiple of 128 KiB then
/// fails as "disk full"): gathering stops below 64 KiB plus one write of
/// at most a page (64 KiB), so no write reaches 128 KiB.
const GATHER_AT_MOST: usize = 64 * 1024;

thread_local! {
    /// Set while this thread commits inside `deferring_wal_sync`.
    static DEFERRING: Cell<bool> = const { Cell::new(false) };
}

#[cfg(test)]
thread_local! {
    /// WAL syncs this thread passed on to the default VFS.
    static REAL_SYNCS: Cell<usize> = const { Cell::new(0) };
}

/// Runs `commit` with the WAL's syncs reduced to writing the gathered
/// frames: the caller makes the WAL durable itself before it relies on
/// the commit.
pub(super) fn deferring_wal_sync<T>(commit: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            DEFERRING.set(false);
        }
    }
    DEFERRING.set(true);
    let _reset = Reset;
    commit()
}

/// Registers the VFS (once per process; later calls return the first
/// outcome). It is not the default: only connections opened with [`NAME`]
/// use it.
pub(super) fn register() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // SAFETY: sqlite3_vfs_find and sqlite3_vfs_register are safe to
            // call at any time; the registered struct is leaked, so it lives
            // as long as the process, as SQLite requires.
            unsafe {
                let default = ffi::sqlite3_vfs_find(ptr::null());
                if default.is_null() {
                    return Err("SQLite has no default VFS".to_owned());
                }
                DEFAULT_VFS
                    .set(DefaultVfs(default))
                    .map_err(|_| "the WAL VFS was registered twice".to_owned())?;
                // The default VFS's methods, which get this struct instead
                // of their own: its fields are the same but for the name,
                // the file size and `xOpen`.
                let mut vfs = *default;
                vfs.zName = NAME_C.as_ptr();
                vfs.pNext = ptr::null_mut();
                vfs.szOsFile = (INNER_OFFSET + (*default).szOsFile as usize) as c_int;
                vfs.xOpen = Some(open);
                let code = ffi::sqlite3_vfs_register(Box::into_raw(Box::new(vfs)), 0);
                if code == ffi::SQLITE_OK {
                    Ok(())
                } else {
                    Err(format!("registering the WAL VFS failed with code {code}"))
                }
            }
        })
        .clone()
}

struct DefaultVfs(*mut ffi::sqlite3_vfs);
// SAFETY: a registered VFS is immutable and shared by all of SQLite's
// threads; this is only its address.
unsafe impl Send for DefaultVfs {}
unsafe impl Sync for DefaultVfs {}
static DEFAULT_VFS: OnceLock<DefaultVfs> = OnceLock::new();

/// A WAL file: the default VFS's file (placed after this struct in the
/// memory SQLite gives `xOpen`) and the frames gathered for it.
#[repr(C)]
struct WalFile {
    /// SQLite's part; must come first.
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    gathered: Vec<u8>,
    /// File offset of `gathered[0]`.
    gathered_at: i64,
    /// The WAL header (offset 0) was written since the last real sync.
    header_written: bool,
}

const INNER_OFFSET: usize = mem::size_of::<WalFile>().next_multiple_of(16);

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let default = DEFAULT_VFS.get().expect("registered before use").0;
    // SAFETY: SQLite hands `file` with `szOsFile` bytes, room for a
    // `WalFile` followed by the default VFS's file (or that file alone).
    unsafe {
        let default_open = (*default).xOpen.expect("every VFS opens files");
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            return default_open(default, name, file, flags, out_flags);
        }
        let inner = file
            .cast::<u8>()
            .add(INNER_OFFSET)
            .cast::<ffi::sqlite3_file>();
        let code = default_open(default, name, inner, flags, out_flags);
        if code != ffi::SQLITE_OK {
            // SQLite calls no method of a file whose open failed.
            (*file).pMethods = ptr::null();
            return code;
        }
        file.cast::<WalFile>().write(WalFile {
            base: ffi::sqlite3_file {
                pMethods: &WAL_METHODS,
            },
            inner,
            gathered: Vec::new(),
            gathered_at: 0,
            header_written: false,
        });
        ffi::SQLITE_OK
    }
}

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

/// The `WalFile` behind a file SQLite hands to a method of `WAL_METHODS`.
///
/// # Safety
/// `file` must have been opened by `open` as a WAL and not closed.
unsafe fn wal<'a>(file: *mut ffi::sqlite3_file) -> &'a mut WalFile {
    // SAFETY: per the contract; SQLite uses a file from one thread at a time.
    unsafe { &mut *file.cast::<WalFile>() }
}

impl WalFile {
    fn methods(&self) -> &ffi::sqlite3_io_methods {
        // SAFETY: the default VFS's open succeeded, so its methods are set
        // until its close.
        unsafe { &*(*self.inner).pMethods }
    }

    /// Writes what was gathered to the file.
    fn write_gathered(&mut self) -> c_int {
        if self.gathered.is_empty() {
            return ffi::SQLITE_OK;
        }
        let write = self.methods().xWrite.expect("every file writes");
        // SAFETY: the inner file is open; the buffer outlives the call.
        let code = unsafe {
            write(
                self.inner,
                self.gathered.as_ptr().cast(),
                self.gathered.len() as c_int,
                self.gathered_at,
            )
        };
        // Dropped even if the write failed: the commit that needed it fails,
        // and SQLite writes its frames again, at the same offsets, if the
        // transaction is retried.
        self.gathered.clear();
        code
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite passes an open WAL file and `amount` readable bytes.
    let (wal, data) = unsafe {
        (
            wal(file),
            std::slice::from_raw_parts(data.cast::<u8>(), amount as usize),
        )
    };
    let follows = offset == wal.gathered_at + wal.gathered.len() as i64;
    if !follows {
        let code = wal.write_gathered();
        if code != ffi::SQLITE_OK {
            return code;
        }
    }
    if wal.gathered.is_empty() {
        wal.gathered_at = offset;
    }
    wal.gathered.extend_from_slice(data);
    if offset == 0 {
        wal.header_written = true;
    }
    if wal.gathered.len() >= GATHER_AT_MOST {
        return wal.write_gathered();
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: SQLite passes an open WAL file.
    let wal = unsafe { wal(file) };
    let code = wal.write_gathered();
    if code != ffi::SQLITE_OK {
        return code;
    }
    if DEFERRING.get() && !wal.header_written {
        return ffi::SQLITE_OK;
    }
    let sync = wal.methods().xSync.expect("every file syncs");
    #[cfg(test)]
    REAL_SYNCS.set(REAL_SYNCS.get() + 1);
    // SAFETY: the inner file is open.
    let code = unsafe { sync(wal.inner, flags) };
    if code == ffi::SQLITE_OK {
        wal.header_written = false;
    }
    code
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite passes an open WAL file and never uses it after this.
    unsafe {
        let wal = wal(file);
        let written = wal.write_gathered();
        let close = wal.methods().xClose.expect("every file closes");
        let closed = close(wal.inner);
        ptr::drop_in_place(file.cast::<WalFile>());
        if written != ffi::SQLITE_OK {
            written
        } else {
            closed
        }
    }
}

/// Methods that need the gathered frames in the file first: they read it,
/// size it or change it other than by appending.
macro_rules! after_writing_gathered {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file, $($arg: $ty),*) -> c_int {
            // SAFETY: SQLite passes an open WAL file.
            let wal = unsafe { wal(file) };
            let code = wal.write_gathered();
            if code != ffi::SQLITE_OK {
                return code;
            }
            let method = wal.methods().$method.expect("the default VFS has it");
            // SAFETY: the inner file is open; the arguments are SQLite's.
            unsafe { method(wal.inner, $($arg),*) }
        }
    };
}

after_writing_gathered!(read, xRead, (data: *mut c_void, amount: c_int, offset: i64));
after_writing_gathered!(truncate, xTruncate, (size: i64));
after_writing_gathered!(file_size, xFileSize, (size: *mut i64));
after_writing_gathered!(file_control, xFileControl, (op: c_int, arg: *mut c_void));
after_writing_gathered!(fetch, xFetch, (offset: i64, amount: c_int, out: *mut *mut c_void));

/// Methods that do not touch the file's contents.
macro_rules! passed_on {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file, $($arg: $ty),*) -> $ret {
            // SAFETY: SQLite passes an open WAL file.
            let wal = unsafe { wal(file) };
            let method = wal.methods().$method.expect("the default VFS has it");
            // SAFETY: the inner file is open; the arguments are SQLite's.
            unsafe { method(wal.inner, $($arg),*) }
        }
    };
}

passed_on!(lock, xLock, (level: c_int) -> c_int);
passed_on!(unlock, xUnlock, (level: c_int) -> c_int);
passed_on!(check_reserved_lock, xCheckReservedLock, (out: *mut c_int) -> c_int);
passed_on!(sector_size, xSectorSize, () -> c_int);
passed_on!(device_characteristics, xDeviceCharacteristics, () -> c_int);
passed_on!(shm_map, xShmMap, (page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void) -> c_int);
passed_on!(shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int) -> c_int);
passed_on!(shm_barrier, xShmBarrier, () -> ());
passed_on!(shm_unmap, xShmUnmap, (delete: c_int) -> c_int);
passed_on!(unfetch, xUnfetch, (offset: i64, page: *mut c_void) -> c_int);

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, OpenFlags};

    use super::*;

    /// A connection on this VFS, as the writer uses it.
    fn open(path: &std::path::Path) -> Connection {
        register().expect("registered");
        let conn =
            Connection::open_with_flags_and_vfs(path, OpenFlags::default(), NAME).expect("open");
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL")
            .expect("WAL");
        conn
    }

    fn count(path: &std::path::Path) -> i64 {
        let reader = Connection::open(path).expect("open");
        assert_eq!(
            reader
                .query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
                .expect("check"),
            "ok"
        );
        reader
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .expect("count")
    }

    /// Inserts `rows` rows of 500 bytes in one transaction.
    fn insert(conn: &Connection, rows: i64) {
        conn.execute(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?1)
             INSERT INTO t (s) SELECT randomblob(500) FROM c",
            [rows],
        )
        .expect("insert");
    }

    #[test]
    fn a_commit_is_in_the_file_when_other_connections_see_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = open(&path);
        conn.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY, s BLOB)")
            .unwrap();
        // Small commits, and one of about 1 MB of frames: more than one
        // gathering, and past the default VFS's 128 KiB limit per write.
        for rows in [1, 10, 2_000, 3] {
            deferring_wal_sync(|| {
                conn.execute_batch("BEGIN").unwrap();
                insert(&conn, rows);
                conn.execute_batch("COMMIT").unwrap();
            });
        }
        assert_eq!(count(&path), 2_014);
    }

    #[test]
    fn a_transaction_larger_than_the_cache_reads_back_its_spilled_frames() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = open(&path);
        conn.execute_batch(
            "PRAGMA cache_size = 10; CREATE TABLE t (n INTEGER PRIMARY KEY, s BLOB)",
        )
        .unwrap();
        deferring_wal_sync(|| {
            conn.execute_batch("BEGIN").unwrap();
            insert(&conn, 5_000);
            // Reads pages the transaction spilled to the WAL.
            let n: i64 = conn
                .query_row("SELECT COUNT(*) FROM t WHERE length(s) = 500", [], |r| {
                    r.get(0)
                })
                .unwrap();
            assert_eq!(n, 5_000);
            conn.execute_batch("COMMIT").unwrap();
        });
        assert_eq!(count(&path), 5_000);
    }

    #[test]
    fn only_a_deferred_commit_skips_the_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = open(&path);
        conn.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY, s BLOB)")
            .unwrap();
        let syncs = || REAL_SYNCS.get();
        // A commit that starts the WAL over syncs its header for real.
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        let before = syncs();
        deferring_wal_sync(|| insert(&conn, 1));
        assert_eq!(syncs(), before + 1, "the new WAL header was not synced");
        deferring_wal_sync(|| insert(&conn, 1));
        assert_eq!(syncs(), before + 1, "a deferred commit synced");
        insert(&conn, 1);
        assert_eq!(
            syncs(),
            before + 2,
            "a commit outside deferring did not sync"
        );
        assert_eq!(count(&path), 3);
    }
}
