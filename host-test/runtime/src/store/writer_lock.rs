//! A tenant's writer right across processes, for a store kept in a file (SQLite): an advisory
//! lock (`flock`) on a file of the tenant's own, in a folder beside the database.
//!
//! Why this shape:
//! - the operating system releases the lock when its process dies, however it dies, so a killed
//!   `sync` never leaves a tenant locked;
//! - it is not a lock on the database file itself: SQLite's own POSIX locks on that file are
//!   dropped whenever any descriptor of it in the process is closed;
//! - one file per tenant (named by a hash of the tenant's name, so any name makes a file name):
//!   writers of different tenants never wait for each other.
//!
//! The holder writes who it is into its file, so that a refused writer can say who holds the
//! tenant. Within one process the host's own per-tenant mutex orders writers first; this lock is
//! taken under it, so a process never contends with itself.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Why the writer right could not be had.
#[derive(Debug, thiserror::Error)]
pub enum WriterLockError {
    #[error(
        "tenant {tenant} is being written by another process ({holder}); try again when it ends"
    )]
    Held { tenant: String, holder: String },
    #[error("cannot take the writer lock of tenant {tenant} ({path}): {message}")]
    Io {
        tenant: String,
        path: String,
        message: String,
    },
}

/// The lock files of one database: `<db>.writers/`.
#[derive(Debug, Clone)]
pub struct WriterLocks {
    dir: PathBuf,
}

/// The writer right of one tenant, held until dropped (closing the file releases the lock).
#[derive(Debug)]
pub struct WriterRight {
    _file: File,
}

impl WriterLocks {
    /// The lock folder of the database at `db`.
    pub fn beside(db: &Path) -> WriterLocks {
        let mut name = db.as_os_str().to_owned();
        name.push(".writers");
        WriterLocks {
            dir: PathBuf::from(name),
        }
    }

    /// The tenant's lock file.
    fn path(&self, tenant: &str) -> PathBuf {
        let digest = Sha256::digest(tenant.as_bytes());
        let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.lock"))
    }

    /// What the last holder of the tenant's lock noted about itself (empty if none did). It
    /// may have let go since, or died: only [`Self::try_acquire`] tells whether it is held.
    pub fn noted_holder(&self, tenant: &str) -> String {
        std::fs::read_to_string(self.path(tenant))
            .map(|t| t.trim().to_string())
            .unwrap_or_default()
    }

    /// Take the tenant's writer right now, or say who holds it. `holder` describes this
    /// process for a writer that is refused (no secret: it is shown to other users).
    pub fn try_acquire(&self, tenant: &str, holder: &str) -> Result<WriterRight, WriterLockError> {
        let path = self.path(tenant);
        let io = |e: std::io::Error| WriterLockError::Io {
            tenant: tenant.to_string(),
            path: path.display().to_string(),
            message: e.to_string(),
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                // The holder may be writing its line right now: an empty answer is possible.
                let _ = file.read_to_string(&mut text);
                let holder = text.trim();
                return Err(WriterLockError::Held {
                    tenant: tenant.to_string(),
                    holder: if holder.is_empty() {
                        "a process that has not said who it is".to_string()
                    } else {
                        holder.chars().take(200).collect()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // Who holds it, for a refused writer; a failure here costs only that message.
        let said = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{holder}"));
        if let Err(e) = said {
            tracing::warn!(tenant, error = %e, "could not note the writer lock's holder");
        }
        Ok(WriterRight { _file: file })
    }
}

/// This process, as a refused writer is told: its id, its command and when it started writing.
pub fn this_process(command: &str) -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "pid {} ({command}), writing since unix time {since}",
        std::process::id()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_told_who_holds_the_tenant_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.db");
        let locks = WriterLocks::beside(&db);
        let first = locks.try_acquire("alice", "pid 1 (sync)").unwrap();
        // A second open of the file is another holder, as a second process would be.
        let refused = WriterLocks::beside(&db)
            .try_acquire("alice", "pid 2 (watch)")
            .unwrap_err();
        match &refused {
            WriterLockError::Held { tenant, holder } => {
                assert_eq!(tenant, "alice");
                assert_eq!(holder, "pid 1 (sync)");
            }
            other => panic!("expected Held, got {other:?}"),
        }
        // Another tenant is not held.
        let _bob = locks.try_acquire("bob", "pid 2 (watch)").unwrap();
        drop(first);
        let again = locks.try_acquire("alice", "pid 2 (watch)").unwrap();
        drop(again);
        // Any name makes a file name, and the folder is private.
        locks.try_acquire("../../etc/passwd\0/..", "x").unwrap();
        let mode = std::fs::metadata(dir.path().join("store.db.writers"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
    }
}
