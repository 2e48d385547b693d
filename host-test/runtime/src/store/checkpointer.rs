//! WAL checkpoints on a thread of their own, so that a sync does not stop to copy the
//! write-ahead log into the database file.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the WAL past its threshold:
//! the writer copies every page the WAL holds into the database file, with two `fsync`s, before
//! its `apply` returns. A 1,000,000-file sync crosses that threshold again and again, and the
//! last connection's close copies what is left (5 to 6% of a 20,000-file sync's samples was
//! that close; BENCHMARKS.md, fourth round). A checkpoint does not need the writer: SQLite lets
//! another connection copy committed frames while the writer appends new ones (a `PASSIVE`
//! checkpoint takes no lock the writer needs and never waits). So the store's connection gets
//! a WAL hook (SQLite calls it after every commit with the WAL's length in frames) that wakes
//! this thread once the WAL holds `background_at` frames, and the thread checkpoints through
//! its own connection, on the other core.
//!
//! What a crash or another process can observe does not change: a checkpoint only ever copies
//! committed frames, and SQLite publishes how far it got only after the database file is synced,
//! whichever connection runs it.
//!
//! The WAL can only start over from its beginning once a checkpoint has copied all of it and a
//! new transaction begins; a background checkpoint races the writer, so it may stay a few
//! commits behind. As a bound, the writer itself checkpoints, as SQLite's automatic checkpoint
//! would, once the WAL holds `inline_at` frames (while the writer copies, nothing is appended,
//! so that checkpoint catches up and the WAL starts over at the next transaction).

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;

/// When checkpoints run, in WAL frames (one frame holds one page, 4 KiB by default).
#[derive(Debug, Clone, Copy)]
pub struct CheckpointPolicy {
    /// Wake the background thread once the WAL holds this many frames.
    pub background_at: i32,
    /// The writer checkpoints itself once the WAL holds this many (the background thread
    /// fell behind).
    pub inline_at: i32,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            // 128 MB of WAL: the thread copies it while the writer goes on. A checkpoint copies
            // each page once however many commits changed it since the last one, and the id
            // index's pages change in nearly every commit of a large sync (about 1,850 of its
            // 12,000 pages per commit at 1,000,000 records): over the ~15 commits this holds,
            // most of them change several times. At 16 MB (4,096 frames, two commits) a
            // 1,000,000-file sync spent 8.3 to 10.2 s of system time, mostly this thread's
            // copying, on the core the emulator and the request threads also need; at 128 MB
            // 6.7 to 8.1 s, and the sync took 1.2 s less at the median of six rounds
            // (BENCHMARKS.md, issue 16's sixth round). Larger still, and the last connection's
            // close, which copies what is left, took longer at 100,000 files (at 256 MB the
            // process ended 0.24 s after the sync's own time, against 0.03 to 0.06 s).
            background_at: 32_768,
            // What SQLite's automatic checkpoint used before (see `SqliteStore::init`).
            inline_at: 100_000,
        }
    }
}

#[derive(Default)]
struct Signal {
    /// A commit found the WAL past `background_at` since the thread last looked.
    wanted: bool,
    stop: bool,
}

/// The background thread, stopped and joined when dropped (before the store's own connection
/// closes, so that connection stays the last one and its close removes the WAL).
pub struct Checkpointer {
    signal: Arc<(Mutex<Signal>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Start the thread for the database at `path` (opened through `vfs`) and hook `writer`
    /// (the store's connection) so that its commits wake it. `None` when the thread cannot be
    /// had: the writer then checkpoints inline only, as SQLite's automatic checkpoint does.
    pub fn start(
        writer: &mut Connection,
        path: &Path,
        vfs: Option<&'static str>,
        policy: CheckpointPolicy,
    ) -> rusqlite::Result<Option<Checkpointer>> {
        let signal: Arc<(Mutex<Signal>, Condvar)> = Arc::default();
        let thread = {
            let signal = Arc::clone(&signal);
            let path = path.to_path_buf();
            std::thread::Builder::new()
                .name("sqlite-checkpoint".into())
                .spawn(move || run(&path, vfs, &signal))
        };
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(why) => {
                tracing::warn!(%why, "SQLite store: no background checkpoint thread");
                None
            }
        };
        let hooked = thread.is_some().then(|| Arc::clone(&signal));
        writer.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, frames| {
            if frames >= policy.inline_at {
                // Busy (the background thread is checkpointing) is no failure: the commit
                // stands, and the next one tries again.
                let _ = wal.checkpoint();
            } else if frames >= policy.background_at
                && let Some(signal) = &hooked
            {
                let (lock, wake) = &**signal;
                lock.lock().unwrap_or_else(|p| p.into_inner()).wanted = true;
                wake.notify_one();
            }
            Ok(())
        }))?;
        Ok(thread.map(|thread| Checkpointer {
            signal,
            thread: Some(thread),
        }))
    }
}

fn run(path: &Path, vfs: Option<&'static str>, signal: &(Mutex<Signal>, Condvar)) {
    let conn = match super::sqlite::open_connection(path, vfs) {
        Ok(conn) => conn,
        Err(why) => {
            tracing::warn!(%why, "SQLite store: the checkpoint thread could not open the database; the writer checkpoints alone");
            return;
        }
    };
    // A checkpoint reads frames straight from the WAL; it needs no page cache of its own.
    let _ = conn.pragma_update(None, "cache_size", 16);
    let (lock, wake) = signal;
    loop {
        {
            let mut state = lock.lock().unwrap_or_else(|p| p.into_inner());
            while !state.wanted && !state.stop {
                state = wake.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            if state.stop {
                return;
            }
            state.wanted = false;
        }
        if let Err(why) =
            conn.wal_checkpoint_v2(None::<&str>, rusqlite::wal::CheckpointMode::PASSIVE)
        {
            // Not fatal: the frames stay in the WAL, readers find them there, and a later
            // checkpoint (or the writer's own) copies them.
            tracing::warn!(%why, "SQLite store: a background checkpoint failed");
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, wake) = &*self.signal;
        lock.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
