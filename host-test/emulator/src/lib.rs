//! A faithful Dropbox API v2 emulator on a real loopback HTTP/1.1 server.
//!
//! It is the ground truth for every test of the project: tests start it in-process, mutate the
//! account while it serves (`create_file`, `move_path`, ...), inject faults on the wire, and compare
//! what a connector synced with [`Emulator::truth`]. The behaviour follows `DROPBOX-API.md` (next
//! to this crate's `Cargo.toml`); where that file says a behaviour is not documented by Dropbox
//! (its section 10) the choice is a field of [`EmulatorConfig`] with the recommended default.
//!
//! Layout: `server` (HTTP transport, routing, auth checks, fault application), `state` (account
//! tree, change journal, cursors), `routes/*` (one file per API area), `wire` (Stone JSON shapes,
//! header-safe JSON, error bodies, request validation), `content_hash`, `blob` (stored or generated
//! content), `auth` (tokens, scopes), `faults`, `populate`, `control` (HTTP control interface for
//! the standalone CLI).

mod auth;
mod blob;
pub mod content_hash;
mod control;
mod faults;
mod populate;
mod routes;
mod server;
mod state;
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

pub use content_hash::{ContentHasher, content_hash};
pub use faults::{Fault, FaultKind};

/// Emulator settings. `Default` gives the behaviour DROPBOX-API.md §10 recommends.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Where to listen; `None` = 127.0.0.1 on an ephemeral port.
    pub listen: Option<SocketAddr>,
    /// Seed for account identity and for the tree generated at start.
    pub seed: u64,
    /// Number of files to generate at start (0 = empty account).
    pub files: usize,
    /// `expires_in` of issued access tokens, seconds.
    pub token_expires_in: u64,
    /// `/oauth2/authorize` redirects at once with a code (otherwise it shows an approve/deny page).
    pub auto_approve: bool,
    /// Report case-only renames from `list_folder/continue` (the spec says they are not reported).
    pub emit_case_only_renames: bool,
    /// A recursive listing of a non-root folder includes the folder itself (observed behaviour).
    pub recursive_listing_includes_self: bool,
    /// Shuffle the entries within each listing page (parents may then follow children).
    pub shuffle_within_page: bool,
    /// Report a case-only rename of a FOLDER from `list_folder/continue` as the folder's own
    /// entry alone: one `FolderMetadata` with the new `name` / `path_display`, the same
    /// `path_lower` and the same `id`, and no entry for anything under it.
    ///
    /// Real Dropbox: the spec says casing-only changes are not returned by `continue`, yet
    /// clients see a remote case-only folder rename propagate (DROPBOX-API.md §4.4), and nothing
    /// promises entries for the folder's descendants when it does: the minimal report is the
    /// folder's own entry, and `path_display` may show stale casing in ancestor components
    /// anyway. A connector has to carry the folder's new casing down to what it holds under it.
    /// With [`emit_case_only_renames`](Self::emit_case_only_renames) alone the emulator journals
    /// the folder AND every descendant with its new casing; this option exists to test the terse
    /// form. It implies the folder's rename IS reported (it works without
    /// `emit_case_only_renames`, and wins over it for folders). Case-only renames of FILES are
    /// unaffected (still governed by `emit_case_only_renames`). Only the journal is terse: the
    /// account itself changes fully, so `get_metadata`, downloads and [`Emulator::truth`] show
    /// every descendant's new `path_display`.
    pub case_only_rename_folder_entry_only: bool,
    /// Give every file that is moved or renamed a fresh `rev` (allocated like the rev of a
    /// content change), while its bytes, `size` and `content_hash` stay as they were. This covers
    /// a moved or renamed file, every file under a moved or renamed folder, and case-only renames
    /// (of the file itself or of a folder above it): any file whose `path_display` changes.
    ///
    /// Real Dropbox: `rev` is a version identifier that may change when a file is moved;
    /// whether the content changed is told by `content_hash`, not by `rev`. By default the
    /// emulator keeps the rev across moves; this option exists so a connector is tested to cope
    /// with a new rev on a move whose `content_hash` is unchanged. The old rev stays resolvable
    /// like every earlier version (`rev:` paths, `files/download` with `rev`) and serves the same
    /// bytes, with the metadata the file had before the move; the new rev resolves to the file
    /// at its new path. `server_modified` and `client_modified` are kept. Only a file whose move
    /// the change feed reports gets a new rev (a case-only rename that is not reported, or the
    /// descendants of a folder under `case_only_rename_folder_entry_only`, keep theirs): a rev
    /// no client could ever learn would make the account unknowable.
    pub new_rev_on_move: bool,
    /// Return the initial enumeration of a RECURSIVE listing (`files/list_folder` and the
    /// `continue` pages read from its snapshot) in post-order: every folder's entry comes after
    /// the entries of all its descendants, so with small pages a child is on an earlier page
    /// than its parent. With `recursive_listing_includes_self` the listed folder's own entry is
    /// therefore the very last one. Siblings are ordered by `path_lower` bytes, except that a
    /// key sorts after every key it is a prefix of. Paging stays exact: the cursor carries the
    /// last key emitted and every live entry is returned exactly once; deleted entries
    /// (`include_deleted`) are merged into the same order.
    ///
    /// Real Dropbox promises no order of entries within a listing: its documented sync rules
    /// ("if the required parent folders don't exist yet, create them") imply a child may come
    /// before its parent (DROPBOX-API.md §3.3), so a connector must cope with that, even pages
    /// apart. The default (parents first, pre-order) is what DROPBOX-API.md §3.3 recommends for the
    /// emulator; this option exists to test the other extreme, deterministically and across page
    /// boundaries (`shuffle_within_page` only reorders within one page). Non-recursive listings
    /// ignore it (they hold no folder together with its descendants, so there is nothing to
    /// reorder), and so do the change pages of `list_folder/continue` after the enumeration
    /// (journal order).
    pub children_before_parents: bool,
    /// Add 0..90 s of random jitter to longpoll waits, as the real service may.
    pub longpoll_jitter: bool,
    /// `backoff` to return with every longpoll result, if any.
    pub longpoll_backoff: Option<u64>,
    /// Cap on how long a longpoll really blocks (tests use it to avoid 30 s waits); `None` = honour `timeout`.
    pub longpoll_max_wait: Option<Duration>,
    /// Page size of list_folder when the request has no `limit`.
    pub default_page_size: usize,
    /// Listing pages hold at most this many entries, whatever `limit` the request asks for.
    /// Dropbox documents `limit` as a maximum, not a promise; tests use a small value to put
    /// page boundaries into small accounts.
    pub max_page_size: Option<usize>,
    /// Page size of `sharing/list_shared_links` without a path.
    pub shared_links_page_size: usize,
    /// How many in-progress initial listings keep their snapshot; the oldest beyond that is
    /// evicted and its cursor answers 409 reset.
    pub snapshot_capacity: usize,
    pub client_id: String,
    pub client_secret: String,
    /// Refuse a token request whose client sends its secret in the form instead of with HTTP
    /// Basic. Dropbox accepts both; tests use this to see which one a host sends.
    pub token_requires_basic: bool,
    pub email: String,
    pub display_name: String,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            listen: None,
            seed: 1,
            files: 0,
            token_expires_in: 14_400,
            auto_approve: true,
            emit_case_only_renames: false,
            recursive_listing_includes_self: true,
            shuffle_within_page: false,
            case_only_rename_folder_entry_only: false,
            new_rev_on_move: false,
            children_before_parents: false,
            longpoll_jitter: false,
            longpoll_backoff: None,
            longpoll_max_wait: None,
            default_page_size: 500,
            max_page_size: None,
            shared_links_page_size: 200,
            snapshot_capacity: 256,
            client_id: "emu-app-key".into(),
            client_secret: "emu-app-secret".into(),
            token_requires_basic: false,
            email: "franz@example.com".into(),
            display_name: "Franz Ferdinand (Personal)".into(),
        }
    }
}

/// Content of a file created through the Rust API.
#[derive(Clone, Debug)]
pub enum Content {
    Bytes(Vec<u8>),
    /// Deterministic pseudo-random bytes generated on the fly (never held in memory).
    Pattern {
        seed: u64,
        len: u64,
    },
}

impl Content {
    /// The bytes this content stands for (materialises a pattern: for tests on small files).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_blob().to_vec()
    }
    /// The Dropbox content hash of this content.
    pub fn content_hash(&self) -> String {
        content_hash::to_hex(&self.to_blob().hash())
    }
    pub fn len(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::Pattern { len, .. } => *len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub(crate) fn to_blob(&self) -> blob::Blob {
        match self {
            Content::Bytes(b) => blob::Blob::Bytes(Arc::from(b.as_slice())),
            Content::Pattern { seed, len } => blob::Blob::Pattern {
                seed: *seed,
                len: *len,
            },
        }
    }
}

/// What a mutation returns: the identity and location of the item as Dropbox now reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EntryInfo {
    pub id: String,
    pub path_lower: String,
    pub path_display: String,
    pub rev: Option<String>,
    pub content_hash: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Kind {
    File,
    Folder,
}

/// One live item of the account, as the ground truth a connector is compared with.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TruthEntry {
    pub id: String,
    pub kind: Kind,
    pub name: String,
    pub path_lower: String,
    pub path_display: String,
    pub rev: Option<String>,
    pub size: u64,
    pub content_hash: Option<String>,
    pub client_modified: Option<String>,
    pub server_modified: Option<String>,
    pub is_downloadable: bool,
    pub shared_url: Option<String>,
}

/// Tokens as the token endpoint would return them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("not a folder: {0}")]
    NotAFolder(String),
    #[error("not a file: {0}")]
    NotAFile(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Everything the server threads and the handle share.
pub(crate) struct Shared {
    pub cfg: EmulatorConfig,
    pub base_url: String,
    pub addr: SocketAddr,
    pub account: state::Account,
    pub state: Mutex<state::State>,
    /// Signalled after every journal append (longpoll waits on it) and on stop.
    pub changed: Condvar,
    pub tokens: Mutex<auth::Tokens>,
    pub faults: faults::Faults,
    pub counts: Mutex<BTreeMap<String, u64>>,
    pub latency_us: AtomicU64,
    /// Total time spent in route handlers, in nanoseconds (benchmarks subtract it from the
    /// client's HTTP time to see the transport's share).
    pub handler_ns: AtomicU64,
    /// Seconds added to the wall clock (`advance_clock`): token, code and link expiry, timestamps.
    pub clock_offset: AtomicI64,
    pub stopping: AtomicBool,
    pub stopped: (Mutex<bool>, Condvar),
    pub conns: Mutex<std::collections::HashMap<u64, std::net::TcpStream>>,
    pub seq: AtomicU64,
}

impl Shared {
    /// "Now" in Unix seconds, as the emulator sees it.
    pub fn now(&self) -> i64 {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        wall + self.clock_offset.load(Ordering::Relaxed)
    }

    /// Lock the account state; a poisoned lock (a panicking handler) must not take the emulator down.
    pub fn state(&self) -> MutexGuard<'_, state::State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn tokens(&self) -> MutexGuard<'_, auth::Tokens> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }
}

/// The account operations, shared by the Rust API ([`Emulator`]) and the HTTP control interface.
impl Shared {
    fn mutate(
        &self,
        f: impl FnOnce(&mut state::State, i64) -> Result<Arc<state::Node>, EmulatorError>,
    ) -> Result<EntryInfo, EmulatorError> {
        let now = self.now();
        let node = f(&mut self.state(), now)?;
        // Wake longpolls only after the lock is released.
        self.changed.notify_all();
        Ok(self.account.entry_info(&node))
    }

    pub(crate) fn create_file(
        &self,
        path: &str,
        content: Content,
    ) -> Result<EntryInfo, EmulatorError> {
        let blob = content.to_blob();
        // Hash outside the lock: a 2 GiB pattern takes seconds.
        let hash = blob.hash();
        self.mutate(|st, now| st.create_file(path, blob, Some(hash), None, now))
    }

    pub(crate) fn create_folder(&self, path: &str) -> Result<EntryInfo, EmulatorError> {
        self.mutate(|st, now| st.create_folder(path, now))
    }

    pub(crate) fn modify_file(
        &self,
        path: &str,
        content: Content,
    ) -> Result<EntryInfo, EmulatorError> {
        let blob = content.to_blob();
        let hash = blob.hash();
        self.mutate(|st, now| st.modify_file(path, blob, hash, now))
    }

    pub(crate) fn move_path(&self, from: &str, to: &str) -> Result<EntryInfo, EmulatorError> {
        let opts = state::MoveOptions {
            emit_case_only: self.cfg.emit_case_only_renames,
            case_only_folder_entry_only: self.cfg.case_only_rename_folder_entry_only,
            new_rev: self.cfg.new_rev_on_move,
        };
        self.mutate(|st, _| st.move_path(from, to, opts))
    }

    pub(crate) fn delete(&self, path: &str) -> Result<(), EmulatorError> {
        self.mutate(|st, _| st.delete(path)).map(|_| ())
    }

    pub(crate) fn create_non_downloadable(
        &self,
        path: &str,
        export_as: &str,
        exported: Vec<u8>,
    ) -> Result<EntryInfo, EmulatorError> {
        if export_as.is_empty() {
            return Err(EmulatorError::InvalidArgument(
                "export_as must not be empty".into(),
            ));
        }
        let export = Arc::new(state::Export {
            export_as: export_as.to_string(),
        });
        let blob = blob::Blob::Bytes(Arc::from(exported.as_slice()));
        self.mutate(|st, now| st.create_file(path, blob, None, Some(export), now))
    }

    pub(crate) fn share(&self, path: &str) -> Result<String, EmulatorError> {
        self.state()
            .share(path, &self.base_url, None)
            .map(|l| l.url.clone())
    }

    pub(crate) fn unshare(&self, path: &str) -> Result<(), EmulatorError> {
        self.state().unshare(path)
    }

    pub(crate) fn invalidate_cursors(&self) {
        self.state().invalidate_cursors();
        self.changed.notify_all();
    }

    pub(crate) fn expire_access_tokens(&self) {
        let now = self.now();
        self.tokens().expire_all(now);
    }

    pub(crate) fn revoke_all(&self) {
        self.tokens().revoke_all();
    }

    pub(crate) fn set_latency(&self, per_request: Duration) {
        self.latency_us
            .store(per_request.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn advance_clock(&self, by: Duration) {
        self.clock_offset
            .fetch_add(by.as_secs() as i64, Ordering::Relaxed);
    }

    pub(crate) fn request_counts(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn reset_counts(&self) {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.handler_ns.store(0, Ordering::Relaxed);
    }

    pub(crate) fn truth(&self) -> Vec<TruthEntry> {
        let (tree, links) = self.state().truth_snapshot();
        state::truth(&self.account, &tree, &links)
    }
}

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
