//! A SQLite VFS that writes the write-ahead log in large sequential writes instead of two small
//! ones per page.
//!
//! SQLite appends each page of a transaction to the WAL as two `pwrite` calls, a 24-byte frame
//! header and then the page. A full sync writes about one frame per record (the id index takes
//! its inserts at random places, so nearly every record dirties a page of it), so a
//! 1,000,000-file sync made 2.8 million `pwrite` calls, and the kernel's share of its time was a
//! quarter (BENCHMARKS.md, third round). This VFS is the default one with the WAL file's
//! writes gathered in a buffer and handed to the default VFS in one write when the buffer is
//! full, when the next write is not adjacent, and at every commit.
//!
//! What must not change is what another connection or a crash can observe, so the buffer is
//! written out before anything could depend on its content:
//! - **At every commit, before SQLite publishes it.** SQLite writes a transaction's frames, the
//!   last one marked as a commit (its header's second word, the database size, is not zero),
//!   and only then updates the shared WAL index that tells readers the frames exist. A commit
//!   header empties the buffer, with itself in it, and the commit page that follows it is
//!   written directly. So the moment a reader in any process can see a transaction, its frames
//!   are in the file, as with the default VFS; a process that dies before that loses only
//!   frames of an uncommitted transaction, which SQLite ignores anyway.
//! - **Before every other operation on the WAL file**: a read (SQLite reads pages back from the
//!   WAL, and rewrites checksums after reading frames), a sync (before a checkpoint copies the
//!   WAL into the database), a truncation, a size query, a file control, a lock and a close.
//!
//! Writes keep their order: the buffer only ever holds one run of adjacent bytes, in the order
//! SQLite wrote them, and it is written out before any write elsewhere. Files other than WALs
//! are the default VFS's own files, untouched. A failed write is reported to SQLite by the call
//! that wrote the buffer out, as the default VFS would have reported it.

use std::ffi::{CStr, c_int, c_void};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name connections open the store with.
pub const NAME: &str = "host-test-wal";
const NAME_C: &CStr = c"host-test-wal";

/// Bytes gathered at most: the largest write the default (unix) VFS makes in one call
/// (it masks a write's length with 0x1ffff), about 31 frames of 4 KiB pages, 15 of 8 KiB.
const BUFFER_BYTES: usize = 0x1ffff;
/// SQLite's WAL format: a 32-byte file header, then frames of a 24-byte header and a page.
const WAL_HEADER_BYTES: i64 = 32;
const FRAME_HEADER_BYTES: usize = 24;

/// Register the VFS (once per process) and return its name, or the reason it cannot be had.
pub fn register() -> Result<&'static str, String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // SAFETY: `sqlite3_vfs_find(NULL)` returns the default VFS, which lives as long as
            // the process; the VFS built from it is leaked, so it outlives every connection.
            unsafe {
                let base = ffi::sqlite3_vfs_find(std::ptr::null());
                if base.is_null() {
                    return Err("SQLite has no default VFS".into());
                }
                let mut vfs: ffi::sqlite3_vfs = *base;
                vfs.zName = NAME_C.as_ptr();
                vfs.pNext = std::ptr::null_mut();
                vfs.pAppData = base.cast();
                vfs.szOsFile = (*base).szOsFile + wrapper_offset();
                vfs.xOpen = Some(open);
                let vfs = Box::leak(Box::new(vfs));
                match ffi::sqlite3_vfs_register(vfs, 0) {
                    ffi::SQLITE_OK => Ok(()),
                    rc => Err(format!("registering the WAL VFS failed with code {rc}")),
                }
            }
        })
        .clone()
        .map(|()| NAME)
}

/// A WAL file: this header, then the default VFS's file right after it.
#[repr(C)]
struct WalFile {
    /// SQLite's view: the methods below.
    base: ffi::sqlite3_file,
    /// The default VFS's file, in the same allocation (see `wrapper_offset`).
    inner: *mut ffi::sqlite3_file,
    buffer: Vec<u8>,
    /// Where `buffer[0]` goes in the file.
    buffer_at: i64,
    /// The commit frame whose header was just written: its page is written directly.
    commit_page_at: Option<i64>,
}

/// Where the default VFS's file starts inside ours (8-byte aligned).
fn wrapper_offset() -> c_int {
    let size = std::mem::size_of::<WalFile>();
    ((size + 7) & !7) as c_int
}

fn base_vfs(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: set by `register` to the default VFS.
    unsafe { (*vfs).pAppData.cast() }
}

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let base = base_vfs(vfs);
    // SAFETY: `file` has room for `szOsFile` bytes: ours plus the default VFS's. A file that
    // is not a WAL is the default VFS's file itself, at the start of the allocation.
    unsafe {
        let Some(base_open) = (*base).xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            return base_open(base, name, file, flags, out_flags);
        }
        let inner = file
            .cast::<u8>()
            .add(wrapper_offset() as usize)
            .cast::<ffi::sqlite3_file>();
        let rc = base_open(base, name, inner, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            // SQLite does not close a file whose open failed; methods stay unset.
            (*file).pMethods = std::ptr::null();
            return rc;
        }
        file.cast::<WalFile>().write(WalFile {
            base: ffi::sqlite3_file {
                pMethods: &WAL_METHODS,
            },
            inner,
            buffer: Vec::new(),
            buffer_at: 0,
            commit_page_at: None,
        });
        ffi::SQLITE_OK
    }
}

/// # Safety
/// `file` was opened by `open` as a WAL.
unsafe fn wal<'a>(file: *mut ffi::sqlite3_file) -> &'a mut WalFile {
    unsafe { &mut *file.cast::<WalFile>() }
}

impl WalFile {
    fn methods(&self) -> &ffi::sqlite3_io_methods {
        // SAFETY: the default VFS set its methods when it opened the file.
        unsafe { &*(*self.inner).pMethods }
    }

    fn write_through(&self, data: *const c_void, len: c_int, at: i64) -> c_int {
        #[cfg(test)]
        tests::count_write(len);
        match self.methods().xWrite {
            // SAFETY: forwarding SQLite's own arguments to the file that was opened for them.
            Some(write) => unsafe { write(self.inner, data, len, at) },
            None => ffi::SQLITE_IOERR_WRITE,
        }
    }

    /// Write the buffer out; it is empty afterwards whatever happens (a failed write is
    /// SQLite's to handle, as with the default VFS, and is not retried behind its back).
    fn flush(&mut self) -> c_int {
        if self.buffer.is_empty() {
            return ffi::SQLITE_OK;
        }
        let rc = match c_int::try_from(self.buffer.len()) {
            Ok(len) => self.write_through(self.buffer.as_ptr().cast(), len, self.buffer_at),
            Err(_) => ffi::SQLITE_IOERR_WRITE,
        };
        // The allocation stays, for the next run.
        self.buffer.clear();
        rc
    }

    fn write(&mut self, data: &[u8], at: i64) -> c_int {
        // The page of a commit frame (its header just emptied the buffer), or a write larger
        // than the buffer, goes straight to the file.
        let direct = self.commit_page_at.take() == Some(at) || data.len() > BUFFER_BYTES;
        if !self.buffer.is_empty()
            && (direct
                || at != self.buffer_at + self.buffer.len() as i64
                || self.buffer.len() + data.len() > BUFFER_BYTES)
        {
            let rc = self.flush();
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        if direct {
            return self.write_through(data.as_ptr().cast(), data.len() as c_int, at);
        }
        if self.buffer.is_empty() {
            self.buffer_at = at;
            if self.buffer.capacity() == 0 {
                self.buffer.reserve_exact(BUFFER_BYTES);
            }
        }
        self.buffer.extend_from_slice(data);
        if is_commit_header(data, at) {
            self.commit_page_at = Some(at + FRAME_HEADER_BYTES as i64);
            return self.flush();
        }
        ffi::SQLITE_OK
    }
}

/// A frame header of a commit: 24 bytes past the file header, whose second big-endian word
/// (the database's size in pages after the commit) is not zero.
fn is_commit_header(data: &[u8], at: i64) -> bool {
    at >= WAL_HEADER_BYTES && data.len() == FRAME_HEADER_BYTES && data[4..8] != [0, 0, 0, 0]
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: a WAL file opened by `open`; after this SQLite never uses it again.
    unsafe {
        let w = wal(file);
        let flushed = w.flush();
        let closed = match w.methods().xClose {
            Some(close) => close(w.inner),
            None => ffi::SQLITE_OK,
        };
        std::ptr::drop_in_place(file.cast::<WalFile>());
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

/// Methods of a WAL file that write the buffer out first, then call the default VFS's method
/// (or answer the given code if it has none).
macro_rules! flush_then_forward {
    ($(fn $name:ident($($arg:ident: $ty:ty),*) => $method:ident or $missing:expr;)*) => {$(
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file, $($arg: $ty),*) -> c_int {
            // SAFETY: SQLite calls these methods only on the WAL files `open` made, with its
            // own arguments for the file that was opened for them.
            let w = unsafe { wal(file) };
            let rc = w.flush();
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            match w.methods().$method {
                Some(method) => unsafe { method(w.inner, $($arg),*) },
                None => $missing,
            }
        }
    )*};
}

flush_then_forward! {
    fn read(data: *mut c_void, len: c_int, at: ffi::sqlite3_int64) => xRead or ffi::SQLITE_IOERR_READ;
    fn truncate(size: ffi::sqlite3_int64) => xTruncate or ffi::SQLITE_IOERR_TRUNCATE;
    fn file_size(size: *mut ffi::sqlite3_int64) => xFileSize or ffi::SQLITE_IOERR_FSTAT;
    fn lock(level: c_int) => xLock or ffi::SQLITE_OK;
    fn unlock(level: c_int) => xUnlock or ffi::SQLITE_OK;
    fn check_reserved_lock(out: *mut c_int) => xCheckReservedLock or ffi::SQLITE_OK;
    fn file_control(op: c_int, arg: *mut c_void) => xFileControl or ffi::SQLITE_NOTFOUND;
}

/// A sync of the WAL: at every commit with `synchronous=FULL`, before a checkpoint copies it.
/// The buffer is written out first, so the sync covers every frame SQLite has written.
unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    #[cfg(test)]
    tests::count_sync();
    // SAFETY: as for `read`.
    let w = unsafe { wal(file) };
    let rc = w.flush();
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    match w.methods().xSync {
        Some(method) => unsafe { method(w.inner, flags) },
        None => ffi::SQLITE_IOERR_FSYNC,
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    len: c_int,
    at: ffi::sqlite3_int64,
) -> c_int {
    if data.is_null() || len < 0 {
        return ffi::SQLITE_IOERR_WRITE;
    }
    // SAFETY: SQLite passes `len` readable bytes at `data`, on a file `open` made.
    unsafe {
        let data = std::slice::from_raw_parts(data.cast::<u8>(), len as usize);
        wal(file).write(data, at)
    }
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as for `read`.
    let w = unsafe { wal(file) };
    match w.methods().xSectorSize {
        Some(size) => unsafe { size(w.inner) },
        None => 4096,
    }
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as for `read`.
    let w = unsafe { wal(file) };
    match w.methods().xDeviceCharacteristics {
        Some(characteristics) => unsafe { characteristics(w.inner) },
        None => 0,
    }
}

/// Version 1: a WAL file is neither memory-mapped nor a holder of the shared WAL index (the
/// database file holds that), so SQLite asks it for nothing of versions 2 and 3.
static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
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
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use rusqlite::{Connection, OpenFlags, params};

    static WRITES: AtomicU64 = AtomicU64::new(0);
    static BYTES: AtomicU64 = AtomicU64::new(0);

    thread_local! {
        static SYNCS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    pub(super) fn count_sync() {
        SYNCS.with(|n| n.set(n.get() + 1));
    }

    /// Syncs of a WAL made by this thread (a store's commits run on the caller's thread; the
    /// checkpoint thread's syncs are its own).
    pub(crate) fn syncs_on_this_thread() -> u64 {
        SYNCS.with(|n| n.get())
    }

    pub(super) fn count_write(len: super::c_int) {
        WRITES.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(len.max(0) as u64, Ordering::Relaxed);
    }

    fn open(path: &std::path::Path) -> Connection {
        let vfs = super::register().unwrap();
        let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn
    }

    /// Every commit is in the file when the transaction ends: a connection of the default
    /// VFS (another process would be the same) sees each one at once, and a writer that then
    /// vanishes without closing (as a killed process does) loses none of them.
    #[test]
    fn every_commit_is_visible_to_other_connections_and_survives_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let writer = open(&path);
        writer
            .execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
            .unwrap();
        let reader = Connection::open(&path).unwrap();
        let body = "x".repeat(700);
        let mut rows = 0i64;
        // Commits of one row, of a few pages, and of more than the buffer holds.
        for batch in [1, 7, 40, 1, 600, 3] {
            writer.execute_batch("BEGIN").unwrap();
            for _ in 0..batch {
                writer
                    .execute("INSERT INTO t(body) VALUES (?1)", params![body])
                    .unwrap();
            }
            writer.execute_batch("COMMIT").unwrap();
            rows += batch;
            let seen: i64 = reader
                .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
                .unwrap();
            assert_eq!(seen, rows, "after a commit of {batch}");
        }
        // A transaction that never commits is not seen, before or after the writer goes.
        writer.execute_batch("BEGIN").unwrap();
        writer
            .execute("INSERT INTO t(body) VALUES (?1)", params![body])
            .unwrap();
        std::mem::forget(writer);
        drop(reader);
        // A fresh connection recovers the WAL from the file alone.
        let recovered = Connection::open(&path).unwrap();
        let seen: i64 = recovered
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(seen, rows);
        let check: String = recovered
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }

    /// The point of it: the WAL is written in runs of many frames, not two calls per page.
    #[test]
    fn the_wal_is_written_in_large_runs() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("r.db"));
        conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
            .unwrap();
        let (writes, bytes) = (
            WRITES.load(Ordering::Relaxed),
            BYTES.load(Ordering::Relaxed),
        );
        conn.execute_batch("BEGIN").unwrap();
        for _ in 0..2000 {
            conn.execute("INSERT INTO t(body) VALUES (?1)", params!["y".repeat(600)])
                .unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
        let writes = WRITES.load(Ordering::Relaxed) - writes;
        let bytes = BYTES.load(Ordering::Relaxed) - bytes;
        // About 300 pages of 4 KiB: 600 calls without the buffer. Other tests may write at
        // the same time, which only adds runs.
        assert!(bytes > 1_000_000, "{bytes} bytes");
        assert!(
            bytes / writes > 32 * 1024,
            "{writes} writes for {bytes} bytes"
        );
    }
}
