//! A faithful Dropbox API v2 emulator on a real loopback HTTP/1.1 server.
//!
//! It is the ground truth for every test of the project: tests start it in-process, mutate the
//! account while it serves (`create_file`, `move_path`, ...), inject faults on the wire, and compare
//! what a connector synced with [`Emulator::truth`]. The behaviour follows `DROPBOX-API.md` (next
//! to this crate's `Cargo.toml`); where that file says a behaviour is not documented by Dropbox
//! (its section 10) the choice is a field of [`EmulatorConfig`] with the recommended default.
//!
//! # Module map
//!
//! Dependencies point down this list, never up (no module uses one listed above it, except the
//! crate root, which only holds the handle and re-exports):
//!
//! | module | its one job |
//! |---|---|
//! | `lib` (this file) | the public handle [`Emulator`] and the re-exports of the public types |
//! | `server` | the HTTP/1.1 transport: listener, connection threads, reading requests, writing responses |
//! | `router` | what every request goes through: counting, latency, faults, the API route table, call-style and auth checks |
//! | `control` | the HTTP control interface `/__emulator/...` for the standalone CLI |
//! | `routes/*` | the API route handlers, one file per area, and the context (`Ctx`) and error (`ApiError`) they share |
//! | `populate` | the seeded random tree of `populate` |
//! | `auth` | the bearer check of user routes, the scopes, minting the default and requested tokens |
//! | `shared` | `Shared`, the state all threads share, and the account operations of the Rust API |
//! | `faults` | fault injection: what to inject, and how each fault changes a response |
//! | `wire` | the Stone JSON shapes, timestamps, header-safe JSON, error bodies, argument validation |
//! | `state` | the account: tree, change journal, cursors, snapshots, links, ids and revs |
//! | `tokens` | the token store: access and refresh tokens, authorization codes |
//! | `http` | `Request`, `Response` and `Body`, the values the transport and the handlers exchange |
//! | `model` | the public value types: [`Content`], [`EntryInfo`], [`TruthEntry`], [`Kind`], [`TokenPair`] |
//! | `config`, `error` | [`EmulatorConfig`] and [`EmulatorError`] |
//! | `blob`, `content_hash` | stored or generated file content, and the Dropbox content hash |

mod auth;
mod blob;
mod config;
pub mod content_hash;
mod control;
mod error;
mod faults;
mod http;
mod model;
mod populate;
mod router;
mod routes;
mod server;
mod shared;
mod state;
mod tokens;
mod wire;

pub use config::EmulatorConfig;
pub use content_hash::{ContentHasher, content_hash};
pub use error::EmulatorError;
pub use faults::{Fault, FaultKind};
pub use model::{Content, EntryInfo, Kind, TokenPair, TruthEntry};

use shared::Shared;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Stops the server when the last handle is dropped.
struct StopGuard(Arc<Shared>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        server::stop(&self.0);
    }
}

/// A running emulator. Cheap to clone; the server stops when `stop` is called or the last clone
/// is dropped.
#[derive(Clone)]
pub struct Emulator {
    shared: Arc<Shared>,
    _guard: Arc<StopGuard>,
}

impl Emulator {
    /// Bind, populate `cfg.files` files, and start serving on background threads.
    pub fn start(cfg: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        let shared = server::start(cfg)?;
        let (files, seed) = (shared.cfg.files, shared.cfg.seed);
        let emu = Emulator {
            _guard: Arc::new(StopGuard(shared.clone())),
            shared,
        };
        if files > 0 {
            emu.populate(files, seed)?;
        }
        Ok(emu)
    }

    /// `http://127.0.0.1:PORT`: api, content, notify, OAuth and temporary-link routes all hang off it.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.shared.addr
    }

    pub fn config(&self) -> &EmulatorConfig {
        &self.shared.cfg
    }

    /// A valid short-lived access token with all five scopes (a fresh one if the last expired or was revoked).
    pub fn access_token(&self) -> String {
        auth::default_access_token(&self.shared)
    }

    /// Mint an access token with the given scopes and lifetime, plus its refresh token.
    pub fn issue_tokens(&self, scopes: &[&str], expires_in: u64) -> TokenPair {
        auth::issue_pair(&self.shared, scopes, expires_in)
    }

    pub fn account_id(&self) -> String {
        self.shared.account.account_id.clone()
    }

    pub fn email(&self) -> String {
        self.shared.cfg.email.clone()
    }

    /// Create a file; missing parent folders are created (each reported as a folder entry).
    pub fn create_file(&self, path: &str, content: Content) -> Result<EntryInfo, EmulatorError> {
        self.shared.create_file(path, content)
    }

    pub fn create_folder(&self, path: &str) -> Result<EntryInfo, EmulatorError> {
        self.shared.create_folder(path)
    }

    /// New content: new rev, content hash and server_modified.
    pub fn modify_file(&self, path: &str, content: Content) -> Result<EntryInfo, EmulatorError> {
        self.shared.modify_file(path, content)
    }

    /// Rename, move, or case-only rename; ids are kept.
    pub fn move_path(&self, from: &str, to: &str) -> Result<EntryInfo, EmulatorError> {
        self.shared.move_path(from, to)
    }

    /// Delete a file or a folder with everything under it (one deleted entry in the journal).
    pub fn delete(&self, path: &str) -> Result<(), EmulatorError> {
        self.shared.delete(path)
    }

    /// A file that cannot be downloaded, only exported (a Paper doc): `export_as` is "markdown" or "html".
    pub fn create_non_downloadable(
        &self,
        path: &str,
        export_as: &str,
        exported: Vec<u8>,
    ) -> Result<EntryInfo, EmulatorError> {
        self.shared
            .create_non_downloadable(path, export_as, exported)
    }

    /// Create (or return the existing) public shared link of a path.
    pub fn share(&self, path: &str) -> Result<String, EmulatorError> {
        self.shared.share(path)
    }

    pub fn unshare(&self, path: &str) -> Result<(), EmulatorError> {
        self.shared.unshare(path)
    }

    /// Add a seeded random tree of `files` files (realistic names, nesting, links, Paper docs).
    pub fn populate(&self, files: usize, seed: u64) -> Result<(), EmulatorError> {
        populate::populate(&self.shared, files, seed)
    }

    /// Applies to the next `count` matching requests (after `skip` of them).
    pub fn inject(&self, fault: Fault) {
        self.shared.faults.inject(fault);
    }

    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// Sleep this long before answering every request (round-trip-bound benchmarks).
    pub fn set_latency(&self, per_request: Duration) {
        self.shared.set_latency(per_request);
    }

    /// Every existing cursor now answers 409 reset (continue and longpoll).
    pub fn invalidate_cursors(&self) {
        self.shared.invalidate_cursors();
    }

    /// Every access token issued so far now answers 401 expired_access_token.
    pub fn expire_access_tokens(&self) {
        self.shared.expire_access_tokens();
    }

    /// Every access and refresh token is dead (401 invalid_access_token / 400 invalid_grant).
    pub fn revoke_all(&self) {
        self.shared.revoke_all();
    }

    /// Move the emulator's clock forward (token, code and temporary-link expiry, timestamps).
    pub fn advance_clock(&self, by: Duration) {
        self.shared.advance_clock(by);
    }

    /// Requests served per route ("files/list_folder/continue", "oauth2/token", ...).
    /// Total time the emulator spent inside route handlers since start or `reset_counts`.
    pub fn handler_time(&self) -> Duration {
        Duration::from_nanos(self.shared.handler_ns.load(Ordering::Relaxed))
    }

    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.shared.request_counts()
    }

    pub fn reset_counts(&self) {
        self.shared.reset_counts();
    }

    /// Every live file and folder, sorted by path_lower.
    pub fn truth(&self) -> Vec<TruthEntry> {
        self.shared.truth()
    }

    /// Block until the server is stopped (by `stop`, the last handle dropping, or `POST /__emulator/stop`).
    pub fn run_until_stopped(&self) {
        let (lock, cv) = &self.shared.stopped;
        let mut done = lock.lock().unwrap_or_else(|e| e.into_inner());
        while !*done {
            done = cv.wait(done).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }

    /// Stop serving now (for every clone of this handle).
    pub fn stop(self) {
        server::stop(&self.shared);
    }
}
