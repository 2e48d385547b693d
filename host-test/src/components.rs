//! The components embedded at build time (`build.rs`): the CLI's default connector and the
//! hostile test guest. The runtime itself names no connector; this is where the command line
//! decides which one it runs when `--component` is not given.

use std::path::{Path, PathBuf};

use crate::compile_cache::CompileCache;
use crate::runtime::{Runtime, SandboxConfig};

/// The Dropbox connector built by `build.rs`: the component the CLI runs when none is named.
pub const DROPBOX: &str = env!("DROPBOX_CONNECTOR_WASM_PATH");
/// The notes test connector (a flat source) built by `build.rs`, for `--component` tests.
pub const NOTES: &str = env!("NOTES_CONNECTOR_WASM_PATH");
/// The hostile test guest built by `build.rs` (for the sandbox's own tests and the bench).
pub const HOSTILE: &str = env!("HOSTILE_GUEST_WASM_PATH");

/// The component the CLI runs when none is named ([`DROPBOX`]).
pub fn default_component_path() -> PathBuf {
    PathBuf::from(DROPBOX)
}

pub fn hostile_component_path() -> PathBuf {
    PathBuf::from(HOSTILE)
}

/// The component at `path`, or the default one, compiled once per machine through the compile
/// cache the environment names.
pub fn load(path: Option<&Path>, config: SandboxConfig) -> anyhow::Result<Runtime> {
    let path = path.map_or_else(default_component_path, Path::to_path_buf);
    Runtime::from_file_cached(&path, config, CompileCache::from_env().as_ref())
}

/// The default connector (the embedded Dropbox component), through the compile cache.
pub fn default_runtime(config: SandboxConfig) -> anyhow::Result<Runtime> {
    load(None, config)
}

/// The hostile test guest (no cache: it is small and only tests use it).
pub fn hostile_runtime(config: SandboxConfig) -> anyhow::Result<Runtime> {
    Runtime::from_file(&hostile_component_path(), config)
}
