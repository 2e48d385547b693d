//! The emulator's core, [`Shared`]: the state every server thread and every handle shares (the
//! account, tokens, faults, counters, the clock offset, the open connections), and the account
//! operations the Rust API ([`crate::Emulator`]) and the HTTP control interface both call.

use crate::blob::Blob;
use crate::config::EmulatorConfig;
use crate::content_hash::to_hex;
use crate::error::EmulatorError;
use crate::faults::Faults;
use crate::model::{Content, EntryInfo, Kind, TruthEntry};
use crate::state::{self, Account, Node, Tree, format_rev};
use crate::tokens::Tokens;
use crate::wire::fmt_time;
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Everything the server threads and the handle share.
pub(crate) struct Shared {
    pub cfg: EmulatorConfig,
    pub base_url: String,
    pub addr: SocketAddr,
    pub account: state::Account,
    pub state: Mutex<state::State>,
    /// Signalled after every journal append (longpoll waits on it) and on stop.
    pub changed: Condvar,
    pub tokens: Mutex<Tokens>,
    pub faults: Faults,
    pub counts: Mutex<BTreeMap<String, u64>>,
    pub latency_us: AtomicU64,
    /// Total time spent in route handlers, in nanoseconds (benchmarks subtract it from the
    /// client's HTTP time to see the transport's share).
    pub handler_ns: AtomicU64,
    /// Seconds added to the wall clock (`advance_clock`): token, code and link expiry, timestamps.
    pub clock_offset: AtomicI64,
    pub stopping: AtomicBool,
    pub stopped: (Mutex<bool>, Condvar),
    pub conns: Mutex<HashMap<u64, TcpStream>>,
    pub seq: AtomicU64,
}

impl Shared {
    /// The state of a fresh emulator serving at `addr` (nothing listens yet).
    pub fn new(cfg: EmulatorConfig, addr: SocketAddr) -> Shared {
        let account = state::Account::new(cfg.seed);
        let snap_cap = cfg.snapshot_capacity;
        Shared {
            base_url: format!("http://{addr}"),
            addr,
            account,
            state: Mutex::new(state::State::new(snap_cap)),
            changed: Condvar::new(),
            tokens: Mutex::new(Tokens::default()),
            faults: Faults::default(),
            counts: Mutex::new(Default::default()),
            latency_us: AtomicU64::new(0),
            handler_ns: AtomicU64::new(0),
            clock_offset: AtomicI64::new(0),
            stopping: AtomicBool::new(false),
            stopped: (Mutex::new(false), Condvar::new()),
            conns: Mutex::new(Default::default()),
            seq: AtomicU64::new(1),
            cfg,
        }
    }

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

    pub fn tokens(&self) -> MutexGuard<'_, Tokens> {
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
        let blob = Blob::Bytes(Arc::from(exported.as_slice()));
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
        truth(&self.account, &tree, &links)
    }
}

/// Every live item as a TruthEntry, sorted by path_lower (built outside the state lock, on all
/// cores: a million entries are a million small formatting jobs).
fn truth(account: &Account, tree: &Tree, links: &HashMap<u64, String>) -> Vec<TruthEntry> {
    let nodes: Vec<&Arc<Node>> = tree.live.values().collect();
    let entry = |n: &Arc<Node>| TruthEntry {
        id: account.format_id(n.id),
        kind: if n.is_folder() {
            Kind::Folder
        } else {
            Kind::File
        },
        name: n.name().to_string(),
        path_lower: n.path_lower.to_string(),
        path_display: n.path_display.to_string(),
        rev: n.file.as_ref().map(|f| format_rev(f.rev)),
        size: n.size(),
        content_hash: n.file.as_ref().and_then(|f| f.hash).map(|h| to_hex(&h)),
        client_modified: n.file.as_ref().map(|f| fmt_time(f.client_modified)),
        server_modified: n.file.as_ref().map(|f| fmt_time(f.server_modified)),
        is_downloadable: n.is_downloadable(),
        shared_url: links.get(&n.id).cloned(),
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || nodes.len() < 10_000 {
        return nodes.into_iter().map(entry).collect();
    }
    let chunk = nodes.len().div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = nodes
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|n| entry(n)).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}
