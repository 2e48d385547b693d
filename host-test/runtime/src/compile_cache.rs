//! The compiled component, kept on disk between processes.
//!
//! Compiling the connector costs a few hundred milliseconds; loading wasmtime's serialized
//! artifact costs about one. Every CLI command would otherwise pay the compile, so the artifact
//! is kept in a host-owned directory, one file per (component, engine) pair:
//! - the key is the SHA-256 of the component's bytes, plus wasmtime's own compatibility hash
//!   of the engine (its version and every setting that changes the generated code), so a
//!   different component, configuration or wasmtime never picks up a foreign artifact;
//! - the file holds a magic tag and the SHA-256 of the artifact before the artifact itself:
//!   loading checks both before handing the bytes to wasmtime, so a truncated or corrupted
//!   file is detected and rebuilt instead of being trusted (deserializing is only sound for
//!   bytes that wasmtime itself produced);
//! - files are written to a temporary name and renamed, so a concurrent reader never sees half
//!   an artifact;
//! - each new artifact evicts all but the most recently written few (`KEEP`), so a machine that
//!   sees many builds does not fill its disk.
//!
//! # Who can hand this process native code
//!
//! An artifact is native code that runs as this user, so the cache is only used when nobody
//! else can have written it (on Unix; elsewhere the cache is off):
//! - the directory is opened once, walking from `/` one component at a time with
//!   `openat(O_NOFOLLOW | O_DIRECTORY)`, and every directory on the way is checked on the open
//!   handle (`fstat`) with OpenSSH's rule for the paths to a key: owned by root or by this
//!   user, and not writable by group or others unless sticky (as `/tmp` is). Whoever could
//!   write an ancestor could otherwise rename the cache away and put their own in its place;
//! - symbolic links among the ancestors are resolved first (the resolved path is the one
//!   walked and checked); the cache directory itself must not be a link, and must be owned by
//!   this user and closed to others (0700);
//! - artifacts are opened relative to that handle (`openat(O_NOFOLLOW)`), never by path again,
//!   so a directory renamed or replaced after the check is not the one read; the opened file
//!   must be a regular file owned by this user (or root) that nobody else may write (`fstat`);
//! - anything else is refused with its reason: an unsafe directory bypasses the cache (the
//!   component is compiled, nothing stored), an unsafe artifact is compiled again and replaced.
//!
//! The checksum is unkeyed on purpose: it detects damage, not forgery. A key to authenticate
//! artifacts would have to live somewhere this user can write and others cannot, which is the
//! very property the checks above establish for the cache itself; it would add a second secret
//! to protect without narrowing who can plant code.
//!
//! `HOST_TEST_CACHE_DIR` chooses the directory (`off` disables the cache); the default is
//! `$XDG_CACHE_HOME/host-test/components`, or `~/.cache/host-test/components`.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 8] = b"HTCWASM1";
/// Artifacts kept in the directory (the newest); older ones are deleted when one is stored.
const KEEP: usize = 8;
const ENV_DIR: &str = "HOST_TEST_CACHE_DIR";

/// What loading through the cache did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// The artifact was on disk and intact.
    Hit,
    /// No artifact yet: compiled and stored.
    Stored,
    /// An artifact was there but unusable (the reason): compiled and stored again.
    Rebuilt(String),
    /// The cache could not be used (the reason): compiled, nothing stored.
    Bypassed(String),
}

impl std::fmt::Display for CacheOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheOutcome::Hit => write!(f, "loaded from the cache"),
            CacheOutcome::Stored => write!(f, "compiled and stored"),
            CacheOutcome::Rebuilt(why) => write!(f, "compiled again ({why})"),
            CacheOutcome::Bypassed(why) => write!(f, "compiled, cache not used ({why})"),
        }
    }
}

pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// The cache the environment asks for, if any.
    pub fn from_env() -> Option<CompileCache> {
        match std::env::var_os(ENV_DIR) {
            Some(v) if v == "off" || v.is_empty() => None,
            Some(v) => Some(CompileCache::at(PathBuf::from(v))),
            None => {
                let base = std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .filter(|p| p.is_absolute())
                    .or_else(|| {
                        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"))
                    })?;
                Some(CompileCache::at(base.join("host-test").join("components")))
            }
        }
    }

    pub fn at(dir: PathBuf) -> CompileCache {
        CompileCache { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file name of the artifact of `component` for `engine`.
    fn artifact_name(engine: &Engine, component: &[u8]) -> String {
        let digest = Sha256::digest(component);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        format!("{}-{:016x}.cwasm", hex(&digest[..16]), hasher.finish())
    }

    /// Where the artifact of `component` for `engine` lives.
    pub fn artifact_path(&self, engine: &Engine, component: &[u8]) -> PathBuf {
        self.dir
            .join(CompileCache::artifact_name(engine, component))
    }

    /// The compiled component: from disk when an intact artifact is there, compiled (and
    /// stored) otherwise.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        component: &[u8],
    ) -> anyhow::Result<(Component, CacheOutcome)> {
        let dir = match self.open_dir() {
            Ok(dir) => dir,
            Err(why) => {
                let compiled = Component::new(engine, component)?;
                return Ok((compiled, CacheOutcome::Bypassed(why)));
            }
        };
        let name = CompileCache::artifact_name(engine, component);
        let mut rebuilt = None;
        match dir.read_artifact(&name) {
            Ok(Some(file)) => match verified_payload(&file) {
                Ok(payload) => {
                    // SAFETY: the payload is byte for byte what `Component::serialize` wrote
                    // (its SHA-256 matches the one stored beside it), read through a handle on
                    // a regular file that only this user (or root) can write, in a directory
                    // whose every ancestor only this user or root can change (module docs);
                    // wasmtime checks its header against this engine.
                    match unsafe { Component::deserialize(engine, payload) } {
                        Ok(loaded) => return Ok((loaded, CacheOutcome::Hit)),
                        Err(e) => rebuilt = Some(format!("wasmtime refused it: {e}")),
                    }
                }
                Err(why) => rebuilt = Some(why),
            },
            Ok(None) => {}
            Err(why) => rebuilt = Some(why),
        }
        let compiled = Component::new(engine, component)?;
        let outcome = match dir.store(&name, &compiled.serialize()?) {
            Ok(()) => {
                dir.evict(&self.dir, &name);
                match rebuilt {
                    Some(why) => CacheOutcome::Rebuilt(why),
                    None => CacheOutcome::Stored,
                }
            }
            Err(e) => CacheOutcome::Bypassed(format!(
                "cannot write {}: {e}",
                self.dir.join(&name).display()
            )),
        };
        Ok((compiled, outcome))
    }

    /// Create the directory closed to others if it is missing, then open it and check it and
    /// every ancestor (module docs). The reason when it may not be used.
    #[cfg(unix)]
    fn open_dir(&self) -> Result<secure::CacheDir, String> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        secure::CacheDir::open(&self.dir)
    }

    #[cfg(not(unix))]
    fn open_dir(&self) -> Result<secure::CacheDir, String> {
        Err("the cache's ownership checks need Unix file handles".into())
    }
}

/// The cache directory, opened and checked once; everything in it is reached through the
/// handle.
#[cfg(unix)]
mod secure {
    use std::ffi::{CString, OsStr};
    use std::fs::File;
    use std::io::{Read as _, Write as _};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    use std::path::{Component as PathPart, Path, PathBuf};

    use sha2::{Digest, Sha256};

    use super::{KEEP, MAGIC};

    /// A directory handle that names no file to read and follows no link: on Linux `O_PATH`
    /// (so an ancestor this user may traverse but not list still opens).
    #[cfg(target_os = "linux")]
    const DIR_FLAGS: libc::c_int =
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    #[cfg(not(target_os = "linux"))]
    const DIR_FLAGS: libc::c_int =
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

    const S_ISVTX: u32 = 0o1000;

    pub(super) struct CacheDir {
        fd: OwnedFd,
    }

    fn euid() -> u32 {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }

    fn c_name(name: &OsStr) -> std::io::Result<CString> {
        CString::new(name.as_bytes())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in a name"))
    }

    /// `openat(dir, name, flags, mode)`; `dir` None opens an absolute `name`.
    fn open_at(
        dir: Option<&OwnedFd>,
        name: &OsStr,
        flags: libc::c_int,
        mode: libc::c_uint,
    ) -> std::io::Result<OwnedFd> {
        let name = c_name(name)?;
        let dir = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
        // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is an open descriptor
        // (or AT_FDCWD).
        let fd = unsafe { libc::openat(dir, name.as_ptr(), flags, mode) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by openat and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The metadata of an open descriptor (`fstat`), without consuming it.
    fn metadata(fd: &OwnedFd) -> std::io::Result<std::fs::Metadata> {
        File::from(fd.try_clone()?).metadata()
    }

    fn is_link_error(e: &std::io::Error) -> bool {
        // O_NOFOLLOW on a link: ELOOP; with O_DIRECTORY some systems say ENOTDIR.
        matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR))
    }

    /// OpenSSH's rule for a directory on the way to the cache: owned by root or by this user,
    /// and not writable by group or others unless sticky.
    fn check_ancestor(fd: &OwnedFd, shown: &Path) -> Result<(), String> {
        let meta = metadata(fd).map_err(|e| format!("cannot inspect {}: {e}", shown.display()))?;
        if meta.uid() != 0 && meta.uid() != euid() {
            return Err(format!(
                "{} belongs to another user (uid {}), who could replace the cache",
                shown.display(),
                meta.uid()
            ));
        }
        let mode = meta.mode();
        if mode & 0o022 != 0 && mode & S_ISVTX == 0 {
            return Err(format!(
                "{} may be written by other users (mode {:o}), who could replace the cache",
                shown.display(),
                mode & 0o7777
            ));
        }
        Ok(())
    }

    impl CacheDir {
        /// Open `dir` (which exists) through a walk from `/` that follows no link, checking
        /// every directory on the way on its handle.
        pub(super) fn open(dir: &Path) -> Result<CacheDir, String> {
            let absolute = std::path::absolute(dir)
                .map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
            let (Some(parent), Some(leaf)) = (absolute.parent(), absolute.file_name()) else {
                return Err(format!("{} cannot be a cache directory", dir.display()));
            };
            // Links among the ancestors are resolved here; the walk below then follows none, so
            // a link swapped in after this point is refused rather than followed.
            let parent = std::fs::canonicalize(parent)
                .map_err(|e| format!("cannot resolve {}: {e}", parent.display()))?;
            let mut shown = PathBuf::from("/");
            let mut fd = open_at(None, OsStr::new("/"), DIR_FLAGS, 0)
                .map_err(|e| format!("cannot open /: {e}"))?;
            check_ancestor(&fd, &shown)?;
            for part in parent.components() {
                let PathPart::Normal(name) = part else {
                    continue;
                };
                shown.push(name);
                fd = open_at(Some(&fd), name, DIR_FLAGS, 0).map_err(|e| {
                    if is_link_error(&e) {
                        format!(
                            "{} changed into a link while it was checked",
                            shown.display()
                        )
                    } else {
                        format!("cannot open {}: {e}", shown.display())
                    }
                })?;
                check_ancestor(&fd, &shown)?;
            }
            let fd = open_at(Some(&fd), leaf, DIR_FLAGS, 0).map_err(|e| {
                if is_link_error(&e) {
                    format!(
                        "{} is a symbolic link (or not a directory); give the directory itself",
                        dir.display()
                    )
                } else {
                    format!("cannot open {}: {e}", dir.display())
                }
            })?;
            let meta =
                metadata(&fd).map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?;
            if meta.uid() != euid() {
                return Err(format!("{} belongs to another user", dir.display()));
            }
            if meta.mode() & 0o077 != 0 {
                return Err(format!(
                    "{} is open to other users (mode {:o}); it must be 0700",
                    dir.display(),
                    meta.mode() & 0o777
                ));
            }
            Ok(CacheDir { fd })
        }

        /// The bytes of the artifact `name`; `None` when there is none. Refused (the reason)
        /// unless it is a regular file, reached without following a link, that only this user
        /// or root can write.
        pub(super) fn read_artifact(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
            // O_NONBLOCK: a FIFO put there must not hang the open (it is refused below).
            let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
            let fd = match open_at(Some(&self.fd), OsStr::new(name), flags, 0) {
                Ok(fd) => fd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    return Err("it is a symbolic link".into());
                }
                Err(e) => return Err(format!("unreadable: {e}")),
            };
            let mut file = File::from(fd);
            let meta = file.metadata().map_err(|e| format!("unreadable: {e}"))?;
            if !meta.file_type().is_file() {
                return Err("it is not a regular file".into());
            }
            if meta.uid() != 0 && meta.uid() != euid() {
                return Err(format!("it belongs to another user (uid {})", meta.uid()));
            }
            if meta.mode() & 0o022 != 0 {
                return Err(format!(
                    "other users may write it (mode {:o})",
                    meta.mode() & 0o777
                ));
            }
            let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
            file.read_to_end(&mut bytes)
                .map_err(|e| format!("unreadable: {e}"))?;
            Ok(Some(bytes))
        }

        /// Write the artifact under a temporary name, then rename it to `name`, both within
        /// the directory's handle.
        pub(super) fn store(&self, name: &str, artifact: &[u8]) -> std::io::Result<()> {
            let tmp = format!("{name}.tmp-{}", std::process::id());
            let tmp = OsStr::new(&tmp);
            let _ = self.unlink(tmp);
            let flags =
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            let mut file = File::from(open_at(Some(&self.fd), tmp, flags, 0o600)?);
            let written = (|| {
                file.write_all(MAGIC)?;
                file.write_all(&Sha256::digest(artifact))?;
                file.write_all(artifact)?;
                file.sync_all()?;
                self.rename(tmp, OsStr::new(name))
            })();
            if written.is_err() {
                let _ = self.unlink(tmp);
            }
            written
        }

        fn rename(&self, from: &OsStr, to: &OsStr) -> std::io::Result<()> {
            let (from, to) = (c_name(from)?, c_name(to)?);
            let dir = self.fd.as_raw_fd();
            // SAFETY: both names are NUL-terminated and outlive the call; `dir` is open.
            if unsafe { libc::renameat(dir, from.as_ptr(), dir, to.as_ptr()) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        }

        fn unlink(&self, name: &OsStr) -> std::io::Result<()> {
            let name = c_name(name)?;
            // SAFETY: `name` is NUL-terminated and outlives the call; the descriptor is open.
            if unsafe { libc::unlinkat(self.fd.as_raw_fd(), name.as_ptr(), 0) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        }

        /// When `name` was last written, without following a link.
        fn modified(&self, name: &OsStr) -> Option<(i64, i64)> {
            let c = c_name(name).ok()?;
            let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
            // SAFETY: `c` is NUL-terminated, `st` is writable memory of the right type, and
            // the descriptor is open.
            let rc = unsafe {
                libc::fstatat(
                    self.fd.as_raw_fd(),
                    c.as_ptr(),
                    st.as_mut_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            if rc != 0 {
                return None;
            }
            // SAFETY: fstatat succeeded, so it filled `st`.
            let st = unsafe { st.assume_init() };
            #[allow(clippy::unnecessary_cast)]
            Some((st.st_mtime as i64, st.st_mtime_nsec as i64))
        }

        /// Delete all but the `KEEP` most recently written artifacts (never `keep`). The names
        /// are listed at `path` (the directory's path); the files are examined and deleted
        /// through the handle. Best effort: a file another process deletes first is skipped.
        pub(super) fn evict(&self, path: &Path, keep: &str) {
            let Ok(entries) = std::fs::read_dir(path) else {
                return;
            };
            let mut artifacts: Vec<((i64, i64), std::ffi::OsString)> = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name())
                .filter(|n| {
                    Path::new(n).extension().is_some_and(|x| x == "cwasm") && n.as_os_str() != keep
                })
                .filter_map(|n| Some((self.modified(&n)?, n)))
                .collect();
            artifacts.sort_by_key(|a| std::cmp::Reverse(a.0));
            for (_, old) in artifacts.into_iter().skip(KEEP.saturating_sub(1)) {
                let _ = self.unlink(&old);
            }
        }
    }
}

/// Without Unix handles the cache is never opened.
#[cfg(not(unix))]
mod secure {
    pub(super) struct CacheDir;

    impl CacheDir {
        pub(super) fn read_artifact(&self, _: &str) -> Result<Option<Vec<u8>>, String> {
            Ok(None)
        }
        pub(super) fn store(&self, _: &str, _: &[u8]) -> std::io::Result<()> {
            Err(std::io::ErrorKind::Unsupported.into())
        }
        pub(super) fn evict(&self, _: &std::path::Path, _: &str) {}
    }
}

/// The artifact inside a cache file, if the file is whole and unaltered.
fn verified_payload(file: &[u8]) -> Result<&[u8], String> {
    let header = MAGIC.len() + 32;
    if file.len() < header || &file[..MAGIC.len()] != MAGIC {
        return Err("not an artifact of this cache".into());
    }
    let (digest, payload) = file[MAGIC.len()..].split_at(32);
    if Sha256::digest(payload).as_slice() != digest {
        return Err("its checksum does not match (truncated or corrupted)".into());
    }
    Ok(payload)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        Engine::default()
    }

    /// The smallest component: compiles in a blink.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn stores_then_hits_then_rebuilds_a_corrupt_or_foreign_artifact() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::at(dir.path().join("c"));
        let engine = engine();
        let (_, first) = cache.load_or_compile(&engine, EMPTY_COMPONENT).unwrap();
        assert_eq!(first, CacheOutcome::Stored);
        let (_, second) = cache.load_or_compile(&engine, EMPTY_COMPONENT).unwrap();
        assert_eq!(second, CacheOutcome::Hit);

        let path = cache.artifact_path(&engine, EMPTY_COMPONENT);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        std::fs::write(&path, &bytes).unwrap();
        let (_, corrupt) = cache.load_or_compile(&engine, EMPTY_COMPONENT).unwrap();
        assert!(
            matches!(corrupt, CacheOutcome::Rebuilt(ref why) if why.contains("checksum")),
            "{corrupt:?}"
        );
        let (_, healed) = cache.load_or_compile(&engine, EMPTY_COMPONENT).unwrap();
        assert_eq!(healed, CacheOutcome::Hit);

        // Something else under the artifact's name (another tool's file, a half write).
        std::fs::write(&path, b"not a wasmtime artifact at all").unwrap();
        let (_, foreign) = cache.load_or_compile(&engine, EMPTY_COMPONENT).unwrap();
        assert!(matches!(foreign, CacheOutcome::Rebuilt(_)), "{foreign:?}");

        // A well-formed file of this cache whose payload wasmtime does not accept.
        let junk = b"serialized by something else";
        let mut framed = MAGIC.to_vec();
        framed.extend_from_slice(&Sha256::digest(junk));
        framed.extend_from_slice(junk);
        std::fs::write(&path, framed).unwrap();
        let (_, refused) = cache.load_or_compile(&engine, EMPTY_COMPONENT).unwrap();
        assert!(
            matches!(refused, CacheOutcome::Rebuilt(ref why) if why.contains("wasmtime")),
            "{refused:?}"
        );
    }

    #[test]
    fn storing_an_artifact_keeps_only_the_newest_few() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::at(dir.path().join("c"));
        cache.open_dir().map(|_| ()).unwrap();
        let base = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for i in 0..12u64 {
            let old = cache.dir().join(format!("old-{i:02}.cwasm"));
            std::fs::write(&old, b"stale").unwrap();
            let file = std::fs::File::options().write(true).open(&old).unwrap();
            file.set_modified(base + std::time::Duration::from_secs(i))
                .unwrap();
        }
        std::fs::write(cache.dir().join("notes.txt"), b"not an artifact").unwrap();
        let (_, outcome) = cache.load_or_compile(&engine(), EMPTY_COMPONENT).unwrap();
        assert_eq!(outcome, CacheOutcome::Stored);
        let mut left: Vec<String> = std::fs::read_dir(cache.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let newest = cache.artifact_path(&engine(), EMPTY_COMPONENT);
        assert!(newest.exists(), "the new artifact stays");
        assert_eq!(
            left.iter().filter(|n| n.ends_with(".cwasm")).count(),
            KEEP,
            "{left:?}"
        );
        // The newest old ones stay, the oldest go; other files are not the cache's to delete.
        assert!(left.contains(&"old-11.cwasm".to_string()), "{left:?}");
        assert!(!left.contains(&"old-00.cwasm".to_string()), "{left:?}");
        assert!(left.contains(&"notes.txt".to_string()), "{left:?}");
    }

    #[test]
    fn another_engine_configuration_gets_its_own_artifact() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::at(dir.path().to_path_buf());
        let plain = engine();
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let other = Engine::new(&config).unwrap();
        assert_ne!(
            cache.artifact_path(&plain, EMPTY_COMPONENT),
            cache.artifact_path(&other, EMPTY_COMPONENT)
        );
        assert_ne!(
            cache.artifact_path(&plain, EMPTY_COMPONENT),
            cache.artifact_path(&plain, b"\0asm\x0d\0\x01\0 ")
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_open_to_others_is_never_used() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let cache = CompileCache::at(open.clone());
        let (_, outcome) = cache.load_or_compile(&engine(), EMPTY_COMPONENT).unwrap();
        assert!(matches!(outcome, CacheOutcome::Bypassed(_)), "{outcome:?}");
        assert_eq!(
            std::fs::read_dir(&open).unwrap().count(),
            0,
            "nothing written"
        );

        let made = dir.path().join("made");
        let (_, outcome) = CompileCache::at(made.clone())
            .load_or_compile(&engine(), EMPTY_COMPONENT)
            .unwrap();
        assert_eq!(outcome, CacheOutcome::Stored);
        let mode = std::fs::metadata(&made).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
    #[cfg(unix)]
    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn an_ancestor_other_users_may_write_makes_the_cache_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        chmod(&shared, 0o755);
        let cache = CompileCache::at(shared.join("deep").join("c"));
        let (_, first) = cache.load_or_compile(&engine(), EMPTY_COMPONENT).unwrap();
        assert_eq!(first, CacheOutcome::Stored);

        // Anyone may now rename `deep` away and put a cache of their own in its place: the
        // artifact, although intact, is not loaded.
        for mode in [0o777, 0o775, 0o757] {
            chmod(&shared, mode);
            let (_, outcome) = cache.load_or_compile(&engine(), EMPTY_COMPONENT).unwrap();
            assert!(
                matches!(&outcome, CacheOutcome::Bypassed(why)
                    if why.contains("may be written by other users")
                        && why.contains(&shared.display().to_string())),
                "mode {mode:o}: {outcome:?}"
            );
        }
        // Sticky, as /tmp: others may create entries but not rename or delete ours.
        chmod(&shared, 0o1777);
        let (_, outcome) = cache.load_or_compile(&engine(), EMPTY_COMPONENT).unwrap();
        assert_eq!(outcome, CacheOutcome::Hit);
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_artifact_or_cache_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        let cache = CompileCache::at(real.clone());
        let (_, first) = cache.load_or_compile(&engine(), EMPTY_COMPONENT).unwrap();
        assert_eq!(first, CacheOutcome::Stored);
        let artifact = cache.artifact_path(&engine(), EMPTY_COMPONENT);

        // The artifact's name is a link to an intact copy elsewhere.
        let elsewhere = dir.path().join("elsewhere.cwasm");
        std::fs::copy(&artifact, &elsewhere).unwrap();
        std::fs::remove_file(&artifact).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &artifact).unwrap();
        let (_, linked) = cache.load_or_compile(&engine(), EMPTY_COMPONENT).unwrap();
        assert!(
            matches!(&linked, CacheOutcome::Rebuilt(why) if why.contains("symbolic link")),
            "{linked:?}"
        );
        let meta = std::fs::symlink_metadata(&artifact).unwrap();
        assert!(
            meta.file_type().is_file(),
            "the link was replaced by a file"
        );
        let (_, healed) = cache.load_or_compile(&engine(), EMPTY_COMPONENT).unwrap();
        assert_eq!(healed, CacheOutcome::Hit);

        // The cache directory itself is a link to a good cache.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let (_, outcome) = CompileCache::at(link)
            .load_or_compile(&engine(), EMPTY_COMPONENT)
            .unwrap();
        assert!(
            matches!(&outcome, CacheOutcome::Bypassed(why) if why.contains("symbolic link")),
            "{outcome:?}"
        );

        // A link among the ancestors is resolved, and the real path checked.
        let parent_link = dir.path().join("parent-link");
        std::os::unix::fs::symlink(dir.path(), &parent_link).unwrap();
        let (_, through) = CompileCache::at(parent_link.join("real"))
            .load_or_compile(&engine(), EMPTY_COMPONENT)
            .unwrap();
        assert_eq!(through, CacheOutcome::Hit);
        chmod(dir.path(), 0o777);
        let (_, open) = CompileCache::at(parent_link.join("real"))
            .load_or_compile(&engine(), EMPTY_COMPONENT)
            .unwrap();
        assert!(matches!(open, CacheOutcome::Bypassed(_)), "{open:?}");
        chmod(dir.path(), 0o700);
    }

    #[cfg(unix)]
    #[test]
    fn an_artifact_someone_else_could_have_written_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::at(dir.path().join("c"));
        let (_, first) = cache.load_or_compile(&engine(), EMPTY_COMPONENT).unwrap();
        assert_eq!(first, CacheOutcome::Stored);
        let artifact = cache.artifact_path(&engine(), EMPTY_COMPONENT);

        // Intact, but writable by others: its checksum proves nothing.
        chmod(&artifact, 0o666);
        let (_, open) = cache.load_or_compile(&engine(), EMPTY_COMPONENT).unwrap();
        assert!(
            matches!(&open, CacheOutcome::Rebuilt(why) if why.contains("other users may write it")),
            "{open:?}"
        );
        let (_, healed) = cache.load_or_compile(&engine(), EMPTY_COMPONENT).unwrap();
        assert_eq!(healed, CacheOutcome::Hit);

        // Intact, but another user's file (only root can give a file away).
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(&artifact, Some(4242), Some(4242)).unwrap();
            let (_, foreign) = cache.load_or_compile(&engine(), EMPTY_COMPONENT).unwrap();
            assert!(
                matches!(&foreign, CacheOutcome::Rebuilt(why) if why.contains("another user")),
                "{foreign:?}"
            );
        }

        // Not a file at all.
        std::fs::remove_file(&artifact).unwrap();
        std::fs::create_dir(&artifact).unwrap();
        let (_, not_file) = cache.load_or_compile(&engine(), EMPTY_COMPONENT).unwrap();
        assert!(
            matches!(
                &not_file,
                CacheOutcome::Bypassed(_) | CacheOutcome::Rebuilt(_)
            ),
            "{not_file:?}"
        );
    }
}
