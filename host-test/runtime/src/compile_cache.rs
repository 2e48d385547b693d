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
//! - the directory must be owned by this user and closed to others (0700); a directory that
//!   is not is never read or written (the component is then compiled, as without a cache),
//!   since whoever can write it could hand this process native code;
//! - files are written to a temporary name and renamed, so a concurrent reader never sees half
//!   an artifact;
//! - each new artifact evicts all but the most recently written few (`KEEP`), so a machine that
//!   sees many builds does not fill its disk.
//!
//! `HOST_TEST_CACHE_DIR` chooses the directory (`off` disables the cache); the default is
//! `$XDG_CACHE_HOME/host-test/components`, or `~/.cache/host-test/components`.

use std::hash::{Hash, Hasher};
use std::io::Write;
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

    /// Where the artifact of `component` for `engine` lives.
    pub fn artifact_path(&self, engine: &Engine, component: &[u8]) -> PathBuf {
        let digest = Sha256::digest(component);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let key = format!("{}-{:016x}", hex(&digest[..16]), hasher.finish());
        self.dir.join(format!("{key}.cwasm"))
    }

    /// The compiled component: from disk when an intact artifact is there, compiled (and
    /// stored) otherwise.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        component: &[u8],
    ) -> anyhow::Result<(Component, CacheOutcome)> {
        if let Err(why) = self.ensure_private_dir() {
            let compiled = Component::new(engine, component)?;
            return Ok((compiled, CacheOutcome::Bypassed(why)));
        }
        let path = self.artifact_path(engine, component);
        let mut rebuilt = None;
        match std::fs::read(&path) {
            Ok(file) => match verified_payload(&file) {
                Ok(payload) => {
                    // SAFETY: the payload is byte for byte what `Component::serialize` wrote
                    // (its SHA-256 matches the one stored beside it, in a directory only this
                    // user can write), and wasmtime checks its header against this engine.
                    match unsafe { Component::deserialize(engine, payload) } {
                        Ok(loaded) => return Ok((loaded, CacheOutcome::Hit)),
                        Err(e) => rebuilt = Some(format!("wasmtime refused it: {e}")),
                    }
                }
                Err(why) => rebuilt = Some(why),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => rebuilt = Some(format!("unreadable: {e}")),
        }
        let compiled = Component::new(engine, component)?;
        let outcome = match self.store(&path, &compiled.serialize()?) {
            Ok(()) => match rebuilt {
                Some(why) => CacheOutcome::Rebuilt(why),
                None => CacheOutcome::Stored,
            },
            Err(e) => CacheOutcome::Bypassed(format!("cannot write {}: {e}", path.display())),
        };
        Ok((compiled, outcome))
    }

    fn store(&self, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(MAGIC)?;
        file.write_all(&Sha256::digest(artifact))?;
        file.write_all(artifact)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        self.evict(path);
        Ok(())
    }

    /// Delete all but the `KEEP` most recently written artifacts (never `keep`). Best effort:
    /// a file another process deletes first, or cannot stat, is skipped.
    fn evict(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut artifacts: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "cwasm") && p != keep)
            .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
            .collect();
        artifacts.sort_by_key(|a| std::cmp::Reverse(a.0));
        for (_, old) in artifacts.into_iter().skip(KEEP.saturating_sub(1)) {
            let _ = std::fs::remove_file(old);
        }
    }

    /// Create the directory closed to others, or check that an existing one is.
    fn ensure_private_dir(&self) -> Result<(), String> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::symlink_metadata(&self.dir)
                .map_err(|e| format!("cannot inspect {}: {e}", self.dir.display()))?;
            if !meta.is_dir() {
                return Err(format!("{} is not a directory", self.dir.display()));
            }
            // SAFETY: geteuid has no preconditions and cannot fail.
            let me = unsafe { libc::geteuid() };
            if meta.uid() != me {
                return Err(format!("{} belongs to another user", self.dir.display()));
            }
            if meta.mode() & 0o077 != 0 {
                return Err(format!(
                    "{} is open to other users (mode {:o}); it must be 0700",
                    self.dir.display(),
                    meta.mode() & 0o777
                ));
            }
        }
        Ok(())
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
        cache.ensure_private_dir().unwrap();
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
}
