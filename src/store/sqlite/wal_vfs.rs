//! A VFS over SQLite's default one that writes each commit's WAL frames
//! with one `pwrite` instead of two per frame.
//!
//! SQLite appends a commit to the WAL frame by frame, a 24-byte header and
//! then the page, each its own `pwrite` (`walWriteOneFrame`): a vote, which
//! changes about five pages, made about eleven write calls, and under votes the
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
//! A commit's frames are written out padded with zeros to the end of their
//! last page (`WalFile::pad_to_page`): once the WAL has started over, a
//! write that ended inside a page the checkpointer had dropped from the page
//! cache made the kernel read that page from the disk, in the commit.
//!
//! Inside [`deferring_wal_sync`] a WAL sync only writes the gathered frames:
//! the writer's syncer thread fsyncs the WAL before it answers, as it did
//! with `synchronous = NORMAL`. Every other sync is a real one: a
//! checkpoint's, and any sync that covers a new WAL header (when the WAL
//! starts over, SQLite syncs its header before the frames that follow).
//! Only the writer's connection uses this VFS (`writer::open_connection`).
//!
//! It also keeps the WAL index (the `-shm` file SQLite maps into memory) from
//! holding the process's memory: under writes that never pause the WAL is
//! never started over, its index grows by 8 bytes a frame, and every page of
//! it the writer touched stayed resident (75 MiB at the end of a benchmark
//! run). The index is a shared mapping of a file, so dropping pages of it
//! from the process (`MADV_DONTNEED`) loses nothing: a later access maps
//! them again from the page cache. At the writer's memory barriers (a few
//! per commit) the 32 KiB regions of the index whose frames are all copied
//! into the database (checkpointed, so no reader that starts later looks
//! them up) are dropped.
//!
//! Only the database file and its WAL go through this code; every other
//! file is the default VFS's own.

use std::{
    cell::Cell,
    ffi::{CStr, c_char, c_int, c_void},
    mem, ptr,
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
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
                // the file size and `xOpen` (the unix VFS's other methods
                // do not read it).
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

/// What every file of this VFS starts with: SQLite's part, then the default
/// VFS's file (placed after the whole struct in the memory SQLite gives
/// `xOpen`).
#[repr(C)]
struct Wrapped {
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
}

impl Wrapped {
    fn methods(&self) -> &ffi::sqlite3_io_methods {
        // SAFETY: the default VFS's open succeeded, so its methods are set
        // until its close.
        unsafe { &*(*self.inner).pMethods }
    }
}

/// A WAL file and the frames gathered for it.
#[repr(C)]
struct WalFile {
    file: Wrapped,
    gathered: Vec<u8>,
    /// File offset of `gathered[0]`.
    gathered_at: i64,
    /// The WAL header (offset 0) was written since the last real sync.
    header_written: bool,
    /// End of the furthest write since the header was last written: where
    /// the newest frames end.
    frames_end: i64,
}

/// A database file and where its WAL index is mapped.
#[repr(C)]
struct DbFile {
    file: Wrapped,
    /// Each mapped region of the WAL index, by number.
    regions: Vec<*mut c_void>,
    /// Size of each region, in bytes.
    region_size: usize,
    /// Regions 1 to this one are dropped from memory.
    dropped_through: usize,
}

const INNER_OFFSET: usize = {
    let wal = mem::size_of::<WalFile>();
    let db = mem::size_of::<DbFile>();
    (if wal > db { wal } else { db }).next_multiple_of(16)
};

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let default = DEFAULT_VFS.get().expect("registered before use").0;
    // SAFETY: SQLite hands `file` with `szOsFile` bytes, room for a
    // `WalFile` or `DbFile` followed by the default VFS's file (or that
    // file alone).
    unsafe {
        let default_open = (*default).xOpen.expect("every VFS opens files");
        let methods: &'static ffi::sqlite3_io_methods = if flags & ffi::SQLITE_OPEN_WAL != 0 {
            &WAL_METHODS
        } else if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
            &DB_METHODS
        } else {
            return default_open(default, name, file, flags, out_flags);
        };
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
        let wrapped = Wrapped {
            base: ffi::sqlite3_file { pMethods: methods },
            inner,
        };
        if ptr::eq(methods, &WAL_METHODS) {
            file.cast::<WalFile>().write(WalFile {
                file: wrapped,
                gathered: Vec::new(),
                gathered_at: 0,
                header_written: false,
                frames_end: 0,
            });
        } else {
            file.cast::<DbFile>().write(DbFile {
                file: wrapped,
                regions: Vec::new(),
                region_size: 0,
                dropped_through: 0,
            });
        }
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

static DB_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(db_close),
    xRead: Some(db_read),
    xWrite: Some(db_write),
    xTruncate: Some(db_truncate),
    xSync: Some(db_sync),
    xFileSize: Some(db_file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(db_file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(db_shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(db_shm_barrier),
    xShmUnmap: Some(db_shm_unmap),
    xFetch: Some(db_fetch),
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

/// The file header of any file this VFS wraps.
///
/// # Safety
/// `file` must have been opened by `open` as a WAL or a database, and not
/// closed.
unsafe fn wrapped<'a>(file: *mut ffi::sqlite3_file) -> &'a Wrapped {
    // SAFETY: per the contract; both kinds start with a `Wrapped`.
    unsafe { &*file.cast::<Wrapped>() }
}

impl WalFile {
    /// Writes what was gathered to the file.
    fn write_gathered(&mut self) -> c_int {
        if self.gathered.is_empty() {
            return ffi::SQLITE_OK;
        }
        let write = self.file.methods().xWrite.expect("every file writes");
        // SAFETY: the inner file is open; the buffer outlives the call.
        let code = unsafe {
            write(
                self.file.inner,
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

    /// Pads the gathered frames with zeros to the end of their last page in
    /// the file, when they are the newest frames.
    ///
    /// Once the WAL has started over, each commit overwrites the frames of
    /// an earlier generation, whose pages the checkpointer dropped from the
    /// page cache (`writer::CopiedFrames`): a write that ends inside such a
    /// page made the kernel read it from the disk first, in the commit. A
    /// server that posted at 8,000 a second after the WAL started over read
    /// 70 MB from the disk in 8 s. Past the newest frame nothing is read
    /// (SQLite stops at the first frame whose salts are not the header's,
    /// as it does at an earlier generation's frames), and the next commits
    /// write over the zeros (with the server's 2 KiB pages a frame is
    /// shorter than some paddings: zeros past the newest frame are ignored
    /// like the earlier generation's frames there).
    /// Frames rewritten in place (a page changed again within one
    /// transaction) end before `frames_end` and are not padded.
    fn pad_to_page(&mut self) {
        let end = self.gathered_at + self.gathered.len() as i64;
        if self.gathered.is_empty() || end != self.frames_end {
            return;
        }
        let padding = ((FILE_PAGE - end % FILE_PAGE) % FILE_PAGE) as usize;
        if self.gathered.len() + padding < 2 * GATHER_AT_MOST {
            self.gathered.resize(self.gathered.len() + padding, 0);
        }
    }
}

/// The page size of the page cache and of the file system's blocks.
const FILE_PAGE: i64 = 4096;

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
    let end = offset + i64::from(amount);
    if offset == 0 {
        wal.header_written = true;
        wal.frames_end = end;
    } else {
        wal.frames_end = wal.frames_end.max(end);
    }
    if wal.gathered.len() >= GATHER_AT_MOST {
        return wal.write_gathered();
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: SQLite passes an open WAL file.
    let wal = unsafe { wal(file) };
    wal.pad_to_page();
    let code = wal.write_gathered();
    if code != ffi::SQLITE_OK {
        return code;
    }
    if DEFERRING.get() && !wal.header_written {
        return ffi::SQLITE_OK;
    }
    let sync = wal.file.methods().xSync.expect("every file syncs");
    #[cfg(test)]
    REAL_SYNCS.set(REAL_SYNCS.get() + 1);
    // SAFETY: the inner file is open.
    let code = unsafe { sync(wal.file.inner, flags) };
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
        let close = wal.file.methods().xClose.expect("every file closes");
        let closed = close(wal.file.inner);
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
            let method = wal.file.methods().$method.expect("the default VFS has it");
            // SAFETY: the inner file is open; the arguments are SQLite's.
            unsafe { method(wal.file.inner, $($arg),*) }
        }
    };
}

after_writing_gathered!(read, xRead, (data: *mut c_void, amount: c_int, offset: i64));
after_writing_gathered!(truncate, xTruncate, (size: i64));
after_writing_gathered!(file_size, xFileSize, (size: *mut i64));
after_writing_gathered!(file_control, xFileControl, (op: c_int, arg: *mut c_void));
after_writing_gathered!(fetch, xFetch, (offset: i64, amount: c_int, out: *mut *mut c_void));

/// Methods passed on as they are (for a WAL: they do not touch its
/// contents).
macro_rules! passed_on {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file, $($arg: $ty),*) -> $ret {
            // SAFETY: SQLite passes an open file of this VFS.
            let file = unsafe { wrapped(file) };
            let method = file.methods().$method.expect("the default VFS has it");
            // SAFETY: the inner file is open; the arguments are SQLite's.
            unsafe { method(file.inner, $($arg),*) }
        }
    };
}

passed_on!(lock, xLock, (level: c_int) -> c_int);
passed_on!(unlock, xUnlock, (level: c_int) -> c_int);
passed_on!(check_reserved_lock, xCheckReservedLock, (out: *mut c_int) -> c_int);
passed_on!(sector_size, xSectorSize, () -> c_int);
passed_on!(device_characteristics, xDeviceCharacteristics, () -> c_int);
passed_on!(shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int) -> c_int);
passed_on!(shm_barrier, xShmBarrier, () -> ());
passed_on!(unfetch, xUnfetch, (offset: i64, page: *mut c_void) -> c_int);
// The WAL has no index of its own; SQLite never maps one through it.
passed_on!(shm_map, xShmMap, (region: c_int, size: c_int, extend: c_int, out: *mut *mut c_void) -> c_int);
passed_on!(shm_unmap, xShmUnmap, (delete: c_int) -> c_int);

passed_on!(db_read, xRead, (data: *mut c_void, amount: c_int, offset: i64) -> c_int);
passed_on!(db_write, xWrite, (data: *const c_void, amount: c_int, offset: i64) -> c_int);
passed_on!(db_truncate, xTruncate, (size: i64) -> c_int);
passed_on!(db_sync, xSync, (flags: c_int) -> c_int);
passed_on!(db_file_size, xFileSize, (size: *mut i64) -> c_int);
passed_on!(db_file_control, xFileControl, (op: c_int, arg: *mut c_void) -> c_int);
passed_on!(db_fetch, xFetch, (offset: i64, amount: c_int, out: *mut *mut c_void) -> c_int);

/// Frames the first region of the WAL index covers (the rest of it holds
/// the index's header): SQLite's `HASHTABLE_NPAGE_ONE`.
const FIRST_REGION_FRAMES: u32 = 4096 - 34;
/// Frames each later region covers: `HASHTABLE_NPAGE`.
const REGION_FRAMES: u32 = 4096;
/// Offset in the first region of `nBackfill`, the frames copied into the
/// database so far: after the two copies of the 48-byte header.
const BACKFILLED_AT: usize = 96;

#[cfg(test)]
thread_local! {
    /// WAL index regions this thread dropped from memory.
    static DROPPED_REGIONS: Cell<usize> = const { Cell::new(0) };
}

/// The `DbFile` behind a file SQLite hands to a method of `DB_METHODS`.
///
/// # Safety
/// `file` must have been opened by `open` as a database and not closed.
unsafe fn db<'a>(file: *mut ffi::sqlite3_file) -> &'a mut DbFile {
    // SAFETY: per the contract; SQLite uses a file from one thread at a time.
    unsafe { &mut *file.cast::<DbFile>() }
}

impl DbFile {
    /// Drops from memory the regions of the WAL index whose frames are all
    /// checkpointed. Readers look frames up only from the checkpoint on,
    /// so they rarely map them again; when the WAL starts over they are
    /// used again and dropped again as the checkpoints pass them.
    fn drop_checkpointed_regions(&mut self) {
        let Some(&first) = self.regions.first().filter(|first| !first.is_null()) else {
            return;
        };
        // SAFETY: the first region is mapped while `regions` has it, and
        // holds the index header; other connections change the counter,
        // so it is read atomically. A stale value only drops less.
        let backfilled = unsafe {
            (*first.cast::<u8>().add(BACKFILLED_AT).cast::<AtomicU32>()).load(Ordering::Relaxed)
        };
        let through = match backfilled.checked_sub(FIRST_REGION_FRAMES) {
            Some(later) => (later / REGION_FRAMES) as usize,
            None => 0,
        };
        if through < self.dropped_through {
            // The WAL started over: its regions are being used again.
            self.dropped_through = 0;
        }
        let through = through.min(self.regions.len().saturating_sub(1));
        for &region in self
            .regions
            .iter()
            .take(through + 1)
            .skip(self.dropped_through + 1)
        {
            if region.is_null() {
                continue;
            }
            // SAFETY: a shared mapping of the index file, of `region_size`
            // bytes: dropping its pages keeps their contents in the file.
            unsafe { libc::madvise(region, self.region_size, libc::MADV_DONTNEED) };
            #[cfg(test)]
            DROPPED_REGIONS.set(DROPPED_REGIONS.get() + 1);
        }
        self.dropped_through = self.dropped_through.max(through);
    }
}

unsafe extern "C" fn db_shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: SQLite passes an open database file and a place for the
    // region's address.
    unsafe {
        let db = db(file);
        let map = db.file.methods().xShmMap.expect("the default VFS has it");
        let code = map(db.file.inner, region, size, extend, out);
        if code == ffi::SQLITE_OK && !(*out).is_null() {
            let (region, address) = (region as usize, *out);
            if db.regions.len() <= region {
                db.regions.resize(region + 1, ptr::null_mut());
            }
            db.regions[region] = address;
            db.region_size = size as usize;
        }
        code
    }
}

unsafe extern "C" fn db_shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: SQLite passes an open database file.
    unsafe {
        let db = db(file);
        let barrier = db
            .file
            .methods()
            .xShmBarrier
            .expect("the default VFS has it");
        barrier(db.file.inner);
        db.drop_checkpointed_regions();
    }
}

unsafe extern "C" fn db_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    // SAFETY: SQLite passes an open database file.
    unsafe {
        let db = db(file);
        db.regions.clear();
        db.dropped_through = 0;
        let unmap = db.file.methods().xShmUnmap.expect("the default VFS has it");
        unmap(db.file.inner, delete)
    }
}

unsafe extern "C" fn db_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite passes an open database file and never uses it after
    // this.
    unsafe {
        let db = db(file);
        let close = db.file.methods().xClose.expect("every file closes");
        let closed = close(db.file.inner);
        ptr::drop_in_place(file.cast::<DbFile>());
        closed
    }
}

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

    /// A fresh database with a table `t`, after `setup`, and a connection
    /// to it on this VFS.
    fn database(setup: &str) -> (tempfile::TempDir, std::path::PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = open(&path);
        conn.execute_batch(&format!(
            "{setup} CREATE TABLE t (n INTEGER PRIMARY KEY, s BLOB)"
        ))
        .unwrap();
        (dir, path, conn)
    }

    /// Like `database`, on a file created with pages of `page_size` bytes
    /// (which WAL mode fixes, so before this VFS opens it).
    fn database_with_pages(
        page_size: i64,
        setup: &str,
    ) -> (tempfile::TempDir, std::path::PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(&format!(
                "PRAGMA page_size = {page_size}; PRAGMA journal_mode = WAL;
                 CREATE TABLE t (n INTEGER PRIMARY KEY, s BLOB)"
            ))
            .unwrap();
        let conn = open(&path);
        conn.execute_batch(setup).unwrap();
        let actual: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(actual, page_size);
        (dir, path, conn)
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
        let (_dir, path, conn) = database("");
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
        let (_dir, path, conn) = database("PRAGMA cache_size = 10;");
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

    /// The zeros after each commit's newest frame (`pad_to_page`) hide no
    /// commit from the recovery after a crash: not after the WAL started
    /// over, nor after a transaction that rewrote frames in place (and
    /// then their checksums, which ends on a frame header).
    #[test]
    fn a_crash_loses_no_commit_of_a_padded_wal() {
        // The server's pages (`PAGE_SIZE`) and SQLite's default.
        for page_size in [2048, 4096] {
            a_crash_loses_no_commit_with_pages_of(page_size);
        }
    }

    fn a_crash_loses_no_commit_with_pages_of(page_size: i64) {
        let (dir, path, conn) = database_with_pages(
            page_size,
            "PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = 10;",
        );
        for _ in 0..20 {
            deferring_wal_sync(|| insert(&conn, 3));
        }
        conn.execute_batch("BEGIN").unwrap();
        insert(&conn, 300);
        conn.execute("UPDATE t SET s = randomblob(500) WHERE n % 7 = 0", [])
            .unwrap();
        conn.execute_batch("COMMIT").unwrap();
        // All copied: the next commits start the WAL over at its front.
        conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)")
            .unwrap();
        for _ in 0..5 {
            insert(&conn, 2);
        }
        // The files as a crash leaves them, without the WAL index.
        let crashed = dir.path().join("crashed");
        std::fs::create_dir(&crashed).unwrap();
        std::fs::copy(&path, crashed.join("t.db")).unwrap();
        std::fs::copy(dir.path().join("t.db-wal"), crashed.join("t.db-wal")).unwrap();
        assert_eq!(count(&crashed.join("t.db")), 20 * 3 + 300 + 5 * 2);
    }

    /// Bytes this thread had read from the disk (not the page cache).
    fn disk_reads_of_this_thread() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").expect("I/O accounting");
        io.lines()
            .find_map(|line| line.strip_prefix("read_bytes: "))
            .and_then(|bytes| bytes.parse().ok())
            .expect("read_bytes")
    }

    /// Once the WAL has started over, commits write over an earlier
    /// generation's frames, whose pages the checkpointer dropped from the
    /// page cache: they must not read them back from the disk first.
    #[test]
    fn commits_over_a_started_over_wal_read_nothing_from_the_disk() {
        for page_size in [2048, 4096] {
            commits_over_a_started_over_wal_with_pages_of(page_size);
        }
    }

    fn commits_over_a_started_over_wal_with_pages_of(page_size: i64) {
        use std::os::fd::AsRawFd;
        let (dir, path, conn) = database_with_pages(page_size, "PRAGMA wal_autocheckpoint = 0;");
        insert(&conn, 4_000);
        let frames: i64 = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(2))
            .unwrap();
        // As `writer::CopiedFrames` does with the copied frames, once they
        // are on the disk.
        let wal = std::fs::File::open(dir.path().join("t.db-wal")).unwrap();
        wal.sync_all().unwrap();
        let frames_end = 32 + frames * (page_size + 24);
        // SAFETY: an advisory call on an open descriptor; it changes no data.
        let advised = unsafe {
            libc::posix_fadvise(
                wal.as_raw_fd(),
                32,
                frames_end - 32,
                libc::POSIX_FADV_DONTNEED,
            )
        };
        assert_eq!(advised, 0);
        let before = disk_reads_of_this_thread();
        for _ in 0..50 {
            deferring_wal_sync(|| insert(&conn, 1));
        }
        let read = disk_reads_of_this_thread() - before;
        assert_eq!(
            read, 0,
            "50 commits read {read} bytes from the disk ({page_size}-byte pages)"
        );
        assert_eq!(count(&path), 4_050);
    }

    #[test]
    fn only_a_deferred_commit_skips_the_fsync() {
        let (_dir, path, conn) = database("");
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

    #[test]
    fn checkpointed_regions_of_the_wal_index_are_dropped_and_read_again() {
        // As the writer: checkpoints only from another connection.
        let (_dir, path, conn) = database("PRAGMA wal_autocheckpoint = 0;");
        conn.execute("INSERT INTO t (s) VALUES (0)", []).unwrap();
        let checkpointer = Connection::open(&path).unwrap();
        let reader = Connection::open(&path).unwrap();
        let value = |conn: &Connection| -> i64 {
            conn.query_row("SELECT s FROM t", [], |r| r.get(0)).unwrap()
        };
        // One frame a commit: 12,000 frames span three regions of the index
        // (4,062 frames, then 4,096 each), checkpointed as they come. A
        // reader busy across each checkpoint keeps the WAL from starting
        // over, as under a steady load.
        let mut next = 0;
        let mut commits = |n: i64| {
            let update = |next: &mut i64| {
                *next += 1;
                deferring_wal_sync(|| conn.execute("UPDATE t SET s = ?1", [*next]).unwrap());
            };
            for _ in 0..n {
                update(&mut next);
                if next % 1_000 == 0 {
                    reader.execute_batch("BEGIN").unwrap();
                    value(&reader);
                    checkpointer
                        .execute_batch("PRAGMA wal_checkpoint(PASSIVE)")
                        .unwrap();
                    update(&mut next);
                    reader.execute_batch("COMMIT").unwrap();
                }
            }
            next
        };
        let last = commits(12_000);
        assert!(DROPPED_REGIONS.get() >= 1, "no region was dropped");
        assert_eq!(value(&reader), last);
        assert_eq!(value(&conn), last);
        // The WAL starts over: its regions are used, and dropped, again.
        checkpointer
            .execute_batch("PRAGMA wal_checkpoint(RESTART)")
            .unwrap();
        let dropped = DROPPED_REGIONS.get();
        let last = commits(12_000);
        assert!(
            DROPPED_REGIONS.get() > dropped,
            "no region was dropped after the restart"
        );
        assert_eq!(value(&reader), last);
        assert_eq!(count(&path), 1);
    }
}
