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
//! this thread, and the thread checkpoints through its own connection, on the other core, once
//! `background_at` frames wait to be copied (`pass_due`).
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
    /// The background thread checkpoints once this many frames wait to be copied.
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
            // Counted in frames not yet copied (seventh round): counted in the WAL's length,
            // which stays past it until the WAL starts over, every later commit started a
            // checkpoint of its own pages, two `fsync`s each (734 on the thread in a
            // 1,000,000-file sync; 206 now, with the copies near `inline_at`, see `pass_due`).
            background_at: 32_768,
            // What SQLite's automatic checkpoint used before (see `SqliteStore::init`).
            inline_at: 100_000,
        }
    }
}

#[derive(Default)]
struct Signal {
    /// The WAL's length in frames at the last commit that found it past `background_at`
    /// (None: none since the thread last looked).
    wanted: Option<i32>,
    stop: bool,
}

/// What the writer's hook and the thread share.
#[derive(Default)]
struct Shared {
    signal: Mutex<Signal>,
    wake: Condvar,
}

/// The background thread, stopped and joined when dropped (before the store's own connection
/// closes, so that connection stays the last one and its close removes the WAL).
pub struct Checkpointer {
    shared: Arc<Shared>,
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
        let shared: Arc<Shared> = Arc::default();
        let thread = {
            let shared = Arc::clone(&shared);
            let path = path.to_path_buf();
            std::thread::Builder::new()
                .name("sqlite-checkpoint".into())
                .spawn(move || run(&path, vfs, policy, &shared))
        };
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(why) => {
                tracing::warn!(%why, "SQLite store: no background checkpoint thread");
                None
            }
        };
        let hooked = thread.is_some().then(|| Arc::clone(&shared));
        writer.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, frames| {
            if frames >= policy.inline_at {
                // Busy (the background thread is checkpointing) is no failure: the commit
                // stands, and the next one tries again.
                let _ = wal.checkpoint();
            } else if frames >= policy.background_at
                && let Some(shared) = &hooked
            {
                lock(&shared.signal).wanted = Some(frames);
                shared.wake.notify_one();
            }
            Ok(())
        }))?;
        Ok(thread.map(|thread| Checkpointer {
            shared,
            thread: Some(thread),
        }))
    }
}

fn lock(signal: &Mutex<Signal>) -> std::sync::MutexGuard<'_, Signal> {
    signal.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether a WAL of `frames` frames is worth a checkpoint, given how far the last one got
/// (`last`: the WAL's length then and the frames it had copied).
///
/// Once `background_at` frames wait to be copied. The WAL does not start over while the writer
/// keeps committing (see the module's doc), so it stays past that length; a checkpoint at each
/// commit would copy that commit's pages alone, where one for many commits copies a page they
/// all changed once (the id index's pages change in nearly every commit).
///
/// And at every commit once the WAL is within half of `background_at` of `inline_at`: the
/// writer's own checkpoint, there, then has at most a commit or two left to copy and to sync
/// (it runs on the thread the sync waits for).
///
/// A WAL shorter than at the last checkpoint has started over: all of it waits. (One that
/// started over and already grew past that length is taken for the old one: its checkpoint
/// comes later than it should, and the writer's bound still holds.)
fn pass_due(frames: i32, last: Option<(i32, i32)>, policy: CheckpointPolicy) -> bool {
    let copied = match last {
        Some((log, copied)) if frames >= log => copied,
        _ => 0,
    };
    let waiting = frames - copied;
    waiting >= policy.background_at
        || (waiting > 0 && frames >= policy.inline_at.saturating_sub(policy.background_at / 2))
}

fn run(path: &Path, vfs: Option<&'static str>, policy: CheckpointPolicy, shared: &Shared) {
    let conn = match super::sqlite::open_connection(path, vfs) {
        Ok(conn) => conn,
        Err(why) => {
            tracing::warn!(%why, "SQLite store: the checkpoint thread could not open the database; the writer checkpoints alone");
            return;
        }
    };
    // A checkpoint reads frames straight from the WAL; it needs no page cache of its own.
    let _ = conn.pragma_update(None, "cache_size", 16);
    let mut last: Option<(i32, i32)> = None;
    loop {
        let frames = {
            let mut state = lock(&shared.signal);
            loop {
                if state.stop {
                    return;
                }
                if let Some(frames) = state.wanted.take() {
                    break frames;
                }
                state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        };
        if !pass_due(frames, last, policy) {
            continue;
        }
        match conn.wal_checkpoint_v2(None::<&str>, rusqlite::wal::CheckpointMode::PASSIVE) {
            Ok(progress) => last = Some(progress),
            // Not fatal: the frames stay in the WAL, readers find them there, and a later
            // checkpoint (or the writer's own) copies them.
            Err(why) => tracing::warn!(%why, "SQLite store: a background checkpoint failed"),
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        lock(&self.shared.signal).stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{CheckpointPolicy, pass_due};

    #[test]
    fn a_checkpoint_is_due_once_enough_frames_wait_to_be_copied() {
        let policy = CheckpointPolicy {
            background_at: 100,
            inline_at: 1_000,
        };
        // No checkpoint yet: the whole WAL waits.
        assert!(!pass_due(99, None, policy));
        assert!(pass_due(100, None, policy));
        // The last one copied 150 of 160 frames: 100 more must come first, not one commit.
        assert!(!pass_due(161, Some((160, 150)), policy));
        assert!(!pass_due(249, Some((160, 150)), policy));
        assert!(pass_due(250, Some((160, 150)), policy));
        // A WAL shorter than at the last checkpoint started over: count from its start.
        assert!(pass_due(120, Some((400, 400)), policy));
        assert!(!pass_due(90, Some((400, 400)), policy));
    }

    #[test]
    fn near_the_writers_own_bound_every_commit_is_copied() {
        let policy = CheckpointPolicy {
            background_at: 100,
            inline_at: 1_000,
        };
        assert!(!pass_due(949, Some((900, 900)), policy));
        assert!(pass_due(951, Some((950, 950)), policy));
        // Nothing new: nothing to do.
        assert!(!pass_due(960, Some((960, 960)), policy));
    }
}
