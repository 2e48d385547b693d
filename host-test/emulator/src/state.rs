//! The account as Dropbox would hold it: the file tree, the append-only change journal, snapshots
//! of in-progress listings, shared and temporary links, and the cursor format.
//!
//! Why a persistent map: an initial `list_folder` must be a consistent snapshot even while tests
//! mutate the account between pages. `imbl::OrdMap` clones in O(1) and shares structure, so every
//! paged listing simply keeps its own clone (in a bounded table). Keys are `path_lower`; plain
//! string order puts every parent before its children (a prefix sorts first), which is exactly
//! the order Dropbox promises, and makes a folder's subtree one contiguous key range. The
//! `children_before_parents` option pages the same map in post-order instead (`scan_post`).

use crate::blob::Blob;
use crate::content_hash::to_hex;
use crate::error::EmulatorError;
use crate::model::EntryInfo;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

pub(crate) type Map<V> = imbl::OrdMap<Arc<str>, V>;

/// Identity of the emulated account (derived from the seed, so it is stable across runs).
pub(crate) struct Account {
    pub account_id: String,
    pub uid: String,
    pub namespace_id: String,
    id_salt: [u8; 8],
    /// Random per server instance: a cursor from another instance is stale (409 reset).
    pub instance: u64,
}

impl Account {
    pub fn new(seed: u64) -> Account {
        let digest = Sha256::digest(format!("dropbox-emulator account {seed}").as_bytes());
        let b64 = URL_SAFE_NO_PAD.encode(digest);
        let account_id = format!("dbid:AA{}", &b64[..33]);
        let mut id_salt = [0u8; 8];
        id_salt.copy_from_slice(&digest[..8]);
        let n = u32::from_le_bytes([digest[8], digest[9], digest[10], digest[11]]);
        Account {
            account_id,
            uid: format!("{}", 10_000_000 + n % 90_000_000),
            namespace_id: format!("{}", 1_000_000_000 + n % 1_000_000_000),
            id_salt,
            instance: rand::random(),
        }
    }

    /// `id:` + 22 base64url characters, like real ids; case-sensitive and reversible.
    pub fn format_id(&self, n: u64) -> String {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&self.id_salt);
        raw[8..].copy_from_slice(&n.to_be_bytes());
        format!("id:{}", URL_SAFE_NO_PAD.encode(raw))
    }

    pub fn parse_id(&self, s: &str) -> Option<u64> {
        let raw = URL_SAFE_NO_PAD.decode(s.strip_prefix("id:")?).ok()?;
        if raw.len() != 16 || raw[..8] != self.id_salt {
            return None;
        }
        Some(u64::from_be_bytes(raw[8..].try_into().ok()?))
    }

    pub fn entry_info(&self, node: &Node) -> EntryInfo {
        EntryInfo {
            id: self.format_id(node.id),
            path_lower: node.path_lower.to_string(),
            path_display: node.path_display.to_string(),
            rev: node.file.as_ref().map(|f| format_rev(f.rev)),
            content_hash: node.file.as_ref().and_then(|f| f.hash).map(|h| to_hex(&h)),
        }
    }
}

/// Revs are lowercase hex, 12 digits (the spec asks for at least 9).
pub(crate) fn format_rev(n: u64) -> String {
    format!("{n:012x}")
}

pub(crate) fn parse_rev(s: &str) -> Option<u64> {
    if s.len() < 9
        || s.len() > 16
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

const FIRST_REV: u64 = 0x015a_1c00_0001;

/// Export information of a non-downloadable file (a Paper doc).
#[derive(Debug)]
pub(crate) struct Export {
    pub export_as: String,
}

#[derive(Clone, Debug)]
pub(crate) struct FileInfo {
    pub rev: u64,
    pub blob: Blob,
    /// Absent only for non-downloadable files.
    pub hash: Option<[u8; 32]>,
    pub client_modified: i64,
    pub server_modified: i64,
    /// Some = not downloadable, must be exported.
    pub export: Option<Arc<Export>>,
}

/// A live file or folder. Immutable once shared (the tree, the journal and the rev index hold the
/// same `Arc`); a change makes a new node.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub id: u64,
    pub path_lower: Arc<str>,
    pub path_display: Arc<str>,
    /// None for folders.
    pub file: Option<FileInfo>,
}

impl Node {
    pub fn name(&self) -> &str {
        self.path_display.rsplit('/').next().unwrap_or("")
    }
    pub fn is_folder(&self) -> bool {
        self.file.is_none()
    }
    pub fn is_downloadable(&self) -> bool {
        self.file.as_ref().is_none_or(|f| f.export.is_none())
    }
    pub fn size(&self) -> u64 {
        self.file.as_ref().map_or(0, |f| f.blob.len())
    }
}

/// The tree: live items and tombstones of deleted ones (for `include_deleted`), both keyed by path_lower.
#[derive(Clone, Default)]
pub(crate) struct Tree {
    pub live: Map<Arc<Node>>,
    pub tombs: Map<Arc<str>>,
}

/// One entry of the change journal, as `list_folder/continue` reports it.
#[derive(Clone, Debug)]
pub(crate) enum JEntry {
    Live(Arc<Node>),
    Deleted {
        path_lower: Arc<str>,
        path_display: Arc<str>,
    },
}

impl JEntry {
    pub fn key(&self) -> &str {
        match self {
            JEntry::Live(n) => &n.path_lower,
            JEntry::Deleted { path_lower, .. } => path_lower,
        }
    }
}

pub(crate) struct Link {
    pub url: String,
    pub node_id: u64,
}

pub(crate) struct TempLink {
    pub node: Arc<Node>,
    pub created: i64,
}

struct SnapEntry {
    tree: Tree,
    jpos: u64,
    last_used: u64,
}

/// How `State::move_path` reports a move and what it does to revs (from `EmulatorConfig`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MoveOptions {
    /// Journal case-only renames (the item and, for a folder, every descendant).
    pub emit_case_only: bool,
    /// Journal a case-only rename of a folder as the folder's entry alone (implies it is journaled).
    pub case_only_folder_entry_only: bool,
    /// Every file whose move the change feed reports gets a fresh rev (content unchanged).
    pub new_rev: bool,
}

/// What a path argument resolved to.
pub(crate) enum Lookup {
    Root,
    Found(Arc<Node>),
    NotFound,
    Malformed,
}

pub(crate) struct State {
    pub tree: Tree,
    /// id → current path_lower of live items.
    ids: HashMap<u64, Arc<str>>,
    /// Every file version ever created, for `rev:` paths and temporary links.
    revs: HashMap<u64, Arc<Node>>,
    pub journal: Vec<JEntry>,
    snapshots: HashMap<u64, SnapEntry>,
    snap_seq: u64,
    snap_capacity: usize,
    /// Bumped by `invalidate_cursors`; cursors carry the epoch they were made in.
    pub cursor_epoch: u64,
    /// Shared links by creation order, and the link of each node.
    pub links: BTreeMap<u64, Link>,
    link_of_node: HashMap<u64, u64>,
    link_seq: u64,
    pub temp_links: HashMap<String, TempLink>,
    next_id: u64,
    next_rev: u64,
}

/// Validate an API display path ("/a/b") and split it into components.
pub(crate) fn split_path(path: &str) -> Result<Vec<&str>, EmulatorError> {
    let bad = || EmulatorError::InvalidPath(path.to_string());
    let rest = path.strip_prefix('/').ok_or_else(bad)?;
    if rest.is_empty() {
        return Err(bad());
    }
    let comps: Vec<&str> = rest.split('/').collect();
    if comps
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == ".." || c.ends_with(char::is_whitespace))
    {
        return Err(bad());
    }
    Ok(comps)
}

pub(crate) fn lower(s: &str) -> String {
    s.to_lowercase()
}

/// The key right after every key that starts with `prefix + "/"`: ('0' is '/' + 1).
fn subtree_end(key: &str) -> String {
    format!("{key}0")
}

impl State {
    pub fn new(snap_capacity: usize) -> State {
        State {
            tree: Tree::default(),
            ids: HashMap::new(),
            revs: HashMap::new(),
            journal: Vec::new(),
            snapshots: HashMap::new(),
            snap_seq: 0,
            snap_capacity: snap_capacity.max(1),
            cursor_epoch: 0,
            links: BTreeMap::new(),
            link_of_node: HashMap::new(),
            link_seq: 0,
            temp_links: HashMap::new(),
            next_id: 1,
            next_rev: FIRST_REV,
        }
    }

    pub fn get(&self, path_lower: &str) -> Option<&Arc<Node>> {
        self.tree.live.get(path_lower)
    }

    pub fn node_by_id(&self, id: u64) -> Option<&Arc<Node>> {
        self.ids
            .get(&id)
            .and_then(|p| self.tree.live.get(p.as_ref()))
    }

    pub fn node_by_rev(&self, rev: u64) -> Option<&Arc<Node>> {
        self.revs.get(&rev)
    }

    pub fn journal_len(&self) -> u64 {
        self.journal.len() as u64
    }

    /// Resolve an API path argument: "" (root), "/a/b", "id:..", "id:../rel", "rev:..", "ns:N/..".
    pub fn resolve(&self, account: &Account, path: &str) -> Lookup {
        if path.is_empty() {
            return Lookup::Root;
        }
        if let Some(rest) = path.strip_prefix("ns:") {
            let (ns, rel) = rest.split_once('/').map_or((rest, ""), |(a, b)| (a, b));
            if ns != account.namespace_id {
                return Lookup::NotFound;
            }
            return if rel.is_empty() {
                Lookup::Root
            } else {
                self.resolve(account, &format!("/{rel}"))
            };
        }
        if let Some(rev) = path.strip_prefix("rev:") {
            return match parse_rev(rev).and_then(|r| self.revs.get(&r)) {
                Some(n) => Lookup::Found(n.clone()),
                None => Lookup::NotFound,
            };
        }
        if path.starts_with("id:") {
            let (id, rel) = path
                .split_once('/')
                .map_or((path, None), |(a, b)| (a, Some(b)));
            let Some(base) = account.parse_id(id).and_then(|n| self.ids.get(&n)) else {
                return Lookup::NotFound;
            };
            return match rel {
                None => self
                    .get(base)
                    .cloned()
                    .map_or(Lookup::NotFound, Lookup::Found),
                Some(rel) => self.resolve(
                    account,
                    &format!("{}/{rel}", self.get(base).map_or("", |n| &n.path_display)),
                ),
            };
        }
        if path.ends_with('/') || path.ends_with(char::is_whitespace) || path.contains("//") {
            return Lookup::Malformed;
        }
        match self.get(&lower(path)) {
            Some(n) => Lookup::Found(n.clone()),
            None => Lookup::NotFound,
        }
    }

    fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn alloc_rev(&mut self) -> u64 {
        let r = self.next_rev;
        self.next_rev += 1;
        r
    }

    /// Insert a brand-new node (no journal entry: the caller decides how it is reported).
    fn insert_node(&mut self, node: Arc<Node>) {
        let key = node.path_lower.clone();
        self.tree.tombs.remove(key.as_ref());
        self.ids.insert(node.id, key.clone());
        if let Some(f) = &node.file {
            self.revs.insert(f.rev, node.clone());
        }
        self.tree.live.insert(key, node);
    }

    /// Make sure every folder above the new item exists (creating missing ones, each journaled),
    /// and return the parent's display path as Dropbox has it (existing folders keep their case).
    fn ensure_parents(&mut self, comps: &[&str]) -> Result<String, EmulatorError> {
        let mut display = String::new();
        for c in comps {
            let cand = format!("{display}/{c}");
            let key = lower(&cand);
            match self.tree.live.get(key.as_str()) {
                Some(n) if n.is_folder() => display = n.path_display.to_string(),
                Some(_) => return Err(EmulatorError::NotAFolder(cand)),
                None => {
                    let node = Arc::new(Node {
                        id: self.alloc_id(),
                        path_lower: key.into(),
                        path_display: cand.as_str().into(),
                        file: None,
                    });
                    self.insert_node(node.clone());
                    self.journal.push(JEntry::Live(node));
                    display = cand;
                }
            }
        }
        Ok(display)
    }

    pub fn create_folder(&mut self, path: &str, _now: i64) -> Result<Arc<Node>, EmulatorError> {
        let comps = split_path(path)?;
        let (last, parents) = comps
            .split_last()
            .ok_or_else(|| EmulatorError::InvalidPath(path.into()))?;
        let parent = self.ensure_parents(parents)?;
        let display = format!("{parent}/{last}");
        let key = lower(&display);
        if self.tree.live.contains_key(key.as_str()) {
            return Err(EmulatorError::AlreadyExists(display));
        }
        let node = Arc::new(Node {
            id: self.alloc_id(),
            path_lower: key.into(),
            path_display: display.into(),
            file: None,
        });
        self.insert_node(node.clone());
        self.journal.push(JEntry::Live(node.clone()));
        Ok(node)
    }

    pub fn create_file(
        &mut self,
        path: &str,
        blob: Blob,
        hash: Option<[u8; 32]>,
        export: Option<Arc<Export>>,
        now: i64,
    ) -> Result<Arc<Node>, EmulatorError> {
        let comps = split_path(path)?;
        let (last, parents) = comps
            .split_last()
            .ok_or_else(|| EmulatorError::InvalidPath(path.into()))?;
        // Check the destination before creating parents, so a failed call changes nothing.
        if self.tree.live.contains_key(lower(path).as_str()) {
            return Err(EmulatorError::AlreadyExists(path.into()));
        }
        let parent = self.ensure_parents(parents)?;
        let display = format!("{parent}/{last}");
        let key = lower(&display);
        if self.tree.live.contains_key(key.as_str()) {
            return Err(EmulatorError::AlreadyExists(display));
        }
        let file = FileInfo {
            rev: self.alloc_rev(),
            blob,
            hash,
            client_modified: now,
            server_modified: now,
            export,
        };
        let node = Arc::new(Node {
            id: self.alloc_id(),
            path_lower: key.into(),
            path_display: display.into(),
            file: Some(file),
        });
        self.insert_node(node.clone());
        self.journal.push(JEntry::Live(node.clone()));
        Ok(node)
    }

    /// Bulk insert for `populate`: nodes come in parent-before-child order with ids and revs
    /// already allocated through `reserve_ids`; the whole batch is journaled in that order.
    pub fn insert_batch(&mut self, nodes: Vec<Arc<Node>>) {
        self.journal.reserve(nodes.len());
        self.ids.reserve(nodes.len());
        self.revs.reserve(nodes.len());
        for n in nodes {
            // A path created concurrently wins; the batch item is skipped.
            if self.tree.live.contains_key(n.path_lower.as_ref()) {
                continue;
            }
            self.insert_node(n.clone());
            self.journal.push(JEntry::Live(n));
        }
    }

    /// Reserve `n` consecutive ids and revs (returns the first of each).
    pub fn reserve_ids(&mut self, n: u64) -> (u64, u64) {
        let (id, rev) = (self.next_id, self.next_rev);
        self.next_id += n;
        self.next_rev += n;
        (id, rev)
    }

    pub fn modify_file(
        &mut self,
        path: &str,
        blob: Blob,
        hash: [u8; 32],
        now: i64,
    ) -> Result<Arc<Node>, EmulatorError> {
        split_path(path)?;
        let key = lower(path);
        let old = self
            .tree
            .live
            .get(key.as_str())
            .cloned()
            .ok_or_else(|| EmulatorError::NotFound(path.into()))?;
        let Some(f) = &old.file else {
            return Err(EmulatorError::NotAFile(path.into()));
        };
        let file = FileInfo {
            rev: self.alloc_rev(),
            blob,
            hash: Some(hash),
            client_modified: now,
            server_modified: now.max(f.server_modified),
            export: None,
        };
        let node = Arc::new(Node {
            id: old.id,
            path_lower: old.path_lower.clone(),
            path_display: old.path_display.clone(),
            file: Some(file),
        });
        self.insert_node(node.clone());
        self.journal.push(JEntry::Live(node.clone()));
        Ok(node)
    }

    /// Every live node at `key` and below it, in key order (the node itself first).
    fn subtree(&self, key: &str) -> Vec<Arc<Node>> {
        let mut out: Vec<Arc<Node>> = self.tree.live.get(key).cloned().into_iter().collect();
        let start = format!("{key}/");
        let end = subtree_end(key);
        out.extend(
            self.tree
                .live
                .range::<_, str>((
                    Bound::Included(start.as_str()),
                    Bound::Excluded(end.as_str()),
                ))
                .map(|(_, v)| v.clone()),
        );
        out
    }

    /// Rename, move or case-only rename `from` (and its subtree) to `to`; ids are kept. How the
    /// change is journaled and whether moved files get new revs follow `opts`.
    pub fn move_path(
        &mut self,
        from: &str,
        to: &str,
        opts: MoveOptions,
    ) -> Result<Arc<Node>, EmulatorError> {
        split_path(from)?;
        let to_comps = split_path(to)?;
        let from_key = lower(from);
        let src = self
            .tree
            .live
            .get(from_key.as_str())
            .cloned()
            .ok_or_else(|| EmulatorError::NotFound(from.into()))?;
        let (last, to_parents) = to_comps
            .split_last()
            .ok_or_else(|| EmulatorError::InvalidPath(to.into()))?;
        let case_only = lower(to) == *src.path_lower;
        let new_display = if case_only {
            let parent = &src.path_display[..src.path_display.len() - src.name().len() - 1];
            format!("{parent}/{last}")
        } else {
            let to_key = lower(to);
            if to_key.starts_with(&format!("{}/", src.path_lower)) {
                return Err(EmulatorError::InvalidPath(format!(
                    "cannot move {from} into itself"
                )));
            }
            if self.tree.live.contains_key(to_key.as_str()) {
                return Err(EmulatorError::AlreadyExists(to.into()));
            }
            let parent = self.ensure_parents(to_parents)?;
            format!("{parent}/{last}")
        };
        if new_display == *src.path_display {
            return Ok(src);
        }
        let new_key = lower(&new_display);
        if !case_only && self.tree.live.contains_key(new_key.as_str()) {
            return Err(EmulatorError::AlreadyExists(new_display));
        }
        let moved = self.subtree(&src.path_lower);
        for n in &moved {
            self.tree.live.remove(n.path_lower.as_ref());
            if !case_only {
                self.tree
                    .tombs
                    .insert(n.path_lower.clone(), n.path_display.clone());
            }
        }
        // Which of the moved items the change feed will name: only those can carry a new rev
        // that a client could learn (the journal below reports exactly these).
        let journaled = |n: &Node| {
            if !case_only {
                true
            } else if src.is_folder() && opts.case_only_folder_entry_only {
                n.id == src.id
            } else {
                opts.emit_case_only
            }
        };
        let mut fresh = Vec::with_capacity(moved.len());
        for n in &moved {
            let suffix = n
                .path_display
                .strip_prefix(src.path_display.as_ref())
                .unwrap_or("");
            let display = format!("{new_display}{suffix}");
            // Same content, and a new rev if asked: the old rev stays in `revs`, still mapped to
            // the version as it was before the move (like the old revs of a content change).
            let file = match &n.file {
                Some(f) if opts.new_rev && journaled(n) => Some(FileInfo {
                    rev: self.alloc_rev(),
                    ..f.clone()
                }),
                other => other.clone(),
            };
            let node = Arc::new(Node {
                id: n.id,
                path_lower: lower(&display).into(),
                path_display: display.into(),
                file,
            });
            self.insert_node(node.clone());
            fresh.push(node);
        }
        fresh.sort_by(|a, b| a.path_lower.cmp(&b.path_lower));
        let top = fresh
            .iter()
            .find(|n| n.id == src.id)
            .cloned()
            .unwrap_or_else(|| fresh[0].clone());
        if !case_only {
            self.journal.push(JEntry::Deleted {
                path_lower: src.path_lower.clone(),
                path_display: src.path_display.clone(),
            });
            self.journal.extend(fresh.into_iter().map(JEntry::Live));
        } else if src.is_folder() && opts.case_only_folder_entry_only {
            // The folder's own entry only; its descendants changed casing all the same.
            self.journal.push(JEntry::Live(top.clone()));
        } else if opts.emit_case_only {
            self.journal.extend(fresh.into_iter().map(JEntry::Live));
        }
        Ok(top)
    }

    /// Delete an item and its subtree: ONE deleted entry in the journal, tombstones for all.
    pub fn delete(&mut self, path: &str) -> Result<Arc<Node>, EmulatorError> {
        split_path(path)?;
        let key = lower(path);
        let src = self
            .tree
            .live
            .get(key.as_str())
            .cloned()
            .ok_or_else(|| EmulatorError::NotFound(path.into()))?;
        for n in self.subtree(&src.path_lower) {
            self.tree.live.remove(n.path_lower.as_ref());
            self.tree
                .tombs
                .insert(n.path_lower.clone(), n.path_display.clone());
            self.ids.remove(&n.id);
            if let Some(seq) = self.link_of_node.remove(&n.id) {
                self.links.remove(&seq);
            }
        }
        self.journal.push(JEntry::Deleted {
            path_lower: src.path_lower.clone(),
            path_display: src.path_display.clone(),
        });
        Ok(src)
    }

    pub fn link_of(&self, node_id: u64) -> Option<&Link> {
        self.link_of_node
            .get(&node_id)
            .and_then(|s| self.links.get(s))
    }

    /// Create the node's shared link, or return the existing one (`false` = it already existed).
    pub fn share_node(&mut self, node: &Node, base_url: &str) -> (&Link, bool) {
        if let Some(seq) = self.link_of_node.get(&node.id).copied()
            && self.links.contains_key(&seq)
        {
            return (&self.links[&seq], false);
        }
        self.link_seq += 1;
        let seq = self.link_seq;
        let h = Sha256::digest(format!("link {} {} {}", node.id, seq, base_url).as_bytes());
        let token: String = URL_SAFE_NO_PAD
            .encode(&h[..12])
            .chars()
            .map(|c| {
                if c == '-' || c == '_' {
                    'x'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        let rlkey: String = URL_SAFE_NO_PAD
            .encode(&h[12..30])
            .chars()
            .map(|c| {
                if c == '-' || c == '_' {
                    'k'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        let url = format!(
            "{base_url}/scl/fi/{token}/{}?rlkey={rlkey}&dl=0",
            percent_encode(node.name())
        );
        self.links.insert(
            seq,
            Link {
                url,
                node_id: node.id,
            },
        );
        self.link_of_node.insert(node.id, seq);
        (&self.links[&seq], true)
    }

    pub fn share(
        &mut self,
        path: &str,
        base_url: &str,
        _visibility: Option<&str>,
    ) -> Result<&Link, EmulatorError> {
        split_path(path)?;
        let node = self
            .get(&lower(path))
            .cloned()
            .ok_or_else(|| EmulatorError::NotFound(path.into()))?;
        Ok(self.share_node(&node, base_url).0)
    }

    pub fn unshare(&mut self, path: &str) -> Result<(), EmulatorError> {
        split_path(path)?;
        let node = self
            .get(&lower(path))
            .cloned()
            .ok_or_else(|| EmulatorError::NotFound(path.into()))?;
        let seq = self
            .link_of_node
            .remove(&node.id)
            .ok_or_else(|| EmulatorError::NotFound(format!("no shared link for {path}")))?;
        self.links.remove(&seq);
        Ok(())
    }

    pub fn invalidate_cursors(&mut self) {
        self.cursor_epoch += 1;
        self.snapshots.clear();
    }

    /// Keep a listing snapshot for the next pages; the least recently used one is evicted.
    pub fn register_snapshot(&mut self, tree: Tree, jpos: u64) -> u64 {
        if self.snapshots.len() >= self.snap_capacity
            && let Some((&old, _)) = self.snapshots.iter().min_by_key(|(_, s)| s.last_used)
        {
            self.snapshots.remove(&old);
        }
        self.snap_seq += 1;
        let id = self.snap_seq;
        self.snapshots.insert(
            id,
            SnapEntry {
                tree,
                jpos,
                last_used: id,
            },
        );
        id
    }

    pub fn snapshot(&mut self, id: u64) -> Option<(Tree, u64)> {
        self.snap_seq += 1;
        let tick = self.snap_seq;
        let s = self.snapshots.get_mut(&id)?;
        s.last_used = tick;
        Some((s.tree.clone(), s.jpos))
    }

    pub fn drop_snapshot(&mut self, id: u64) {
        self.snapshots.remove(&id);
    }

    /// Is the id still live at this path (a cursor's folder)?
    pub fn id_at(&self, id: u64, path_lower: &str) -> bool {
        self.ids.get(&id).is_some_and(|p| p.as_ref() == path_lower)
    }

    /// What `truth` needs, taken under the lock in O(links): the tree is an O(1) clone.
    pub fn truth_snapshot(&self) -> (Tree, HashMap<u64, String>) {
        let links = self
            .link_of_node
            .iter()
            .filter_map(|(id, seq)| self.links.get(seq).map(|l| (*id, l.url.clone())))
            .collect();
        (self.tree.clone(), links)
    }
}

/// Percent-encode a path segment (RFC 3986 unreserved characters stay as they are).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Listings and cursors

/// The parameters a cursor carries from `list_folder` to every later `continue`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Cursor {
    /// Server instance (a cursor from another run is stale).
    pub a: u64,
    /// Cursor epoch (see `invalidate_cursors`).
    pub e: u64,
    /// Listed folder's path_lower ("" = root) and id.
    pub p: String,
    pub i: Option<u64>,
    pub r: bool,
    /// include_deleted, include_non_downloadable_files, include_has_explicit_shared_members.
    pub d: bool,
    pub n: bool,
    pub h: bool,
    /// Page size.
    pub l: u32,
    /// Snapshot id and last key emitted, while the initial enumeration is being paged.
    pub s: Option<u64>,
    pub k: Option<String>,
    /// Journal position: what the listing has seen.
    pub j: u64,
}

impl Cursor {
    pub fn encode(&self) -> String {
        // Serialising a plain struct cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("AAE{}", URL_SAFE_NO_PAD.encode(json))
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let raw = URL_SAFE_NO_PAD.decode(s.strip_prefix("AAE")?).ok()?;
        serde_json::from_slice(&raw).ok()
    }

    fn includes_self(&self, cfg_self: bool) -> bool {
        cfg_self && self.r && !self.p.is_empty()
    }

    /// Is this path reported under the cursor's folder?
    pub fn in_scope(&self, key: &str, cfg_self: bool) -> bool {
        if self.p.is_empty() {
            return key.starts_with('/') && (self.r || !key[1..].contains('/'));
        }
        if key == self.p {
            return self.includes_self(cfg_self);
        }
        match key
            .strip_prefix(self.p.as_str())
            .and_then(|r| r.strip_prefix('/'))
        {
            Some(rest) => self.r || !rest.contains('/'),
            None => false,
        }
    }

    pub fn wants(&self, e: &JEntry, cfg_self: bool) -> bool {
        self.in_scope(e.key(), cfg_self)
            && match e {
                JEntry::Live(n) => self.n || n.is_downloadable(),
                JEntry::Deleted { .. } => true,
            }
    }
}

/// Up to `want` entries of `map` under `prefix` after `after` (all descendants, or only direct
/// children), in key order. Non-recursive scans jump over each child's subtree with a new range.
fn scan<V: Clone>(
    map: &Map<V>,
    prefix: &str,
    recursive: bool,
    after: Option<&str>,
    want: usize,
    mut accept: impl FnMut(&V) -> bool,
) -> Vec<(Arc<str>, V)> {
    let mut out = Vec::new();
    if want == 0 {
        return out;
    }
    let mut start: Bound<String> = match after {
        Some(a) if a >= prefix => Bound::Excluded(a.to_string()),
        _ => Bound::Included(prefix.to_string()),
    };
    'restart: loop {
        let range = map.range::<_, str>((start.as_ref().map(|s| s.as_str()), Bound::Unbounded));
        for (k, v) in range {
            let Some(rest) = k.strip_prefix(prefix) else {
                break 'restart;
            };
            if !recursive && let Some(i) = rest.find('/') {
                start = Bound::Included(subtree_end(&k[..prefix.len() + i]));
                continue 'restart;
            }
            if accept(v) {
                out.push((k.clone(), v.clone()));
                if out.len() >= want {
                    break 'restart;
                }
            }
        }
        break;
    }
    out
}

/// The post-order of keys (`children_before_parents`): byte order, except that a key sorts
/// AFTER every key it is a prefix of (as if each key ended with a byte above all others). So a
/// folder follows its whole subtree; two keys that are not prefixes of one another keep their
/// usual order.
fn post_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len().min(b.len());
    a[..n].cmp(&b[..n]).then_with(|| b.len().cmp(&a.len()))
}

/// The smallest string above every string that starts with `key` (None: there is none).
fn prefix_successor(key: &str) -> Option<String> {
    let mut s = key.to_string();
    while let Some(c) = s.pop() {
        let next = match c as u32 + 1 {
            0xD800 => Some('\u{E000}'),
            n => char::from_u32(n),
        };
        if let Some(n) = next {
            s.push(n);
            return Some(s);
        }
    }
    None
}

/// `scan` in post-order (see `post_cmp`), always recursive: up to `want` entries of `map` whose
/// key starts with `prefix`, plus the entry at `self_key` if given (it sorts after all of them),
/// strictly after the key `after`.
///
/// The map is walked in its own order with a stack of pending keys, each a prefix of the next:
/// a key is emitted when the walk reaches a key it is not a prefix of (its subtree is done).
/// Resuming after `after`: the keys still due are the stored proper prefixes of `after` (its
/// pending ancestors, rebuilt as the stack) and the keys above every key that starts with
/// `after` (whose subtree was emitted before it). Each page costs O(entries walked, filtered ones
/// included, + key length * log n).
fn scan_post<V: Clone>(
    map: &Map<V>,
    prefix: &str,
    self_key: Option<&str>,
    after: Option<&str>,
    want: usize,
    mut accept: impl FnMut(&V) -> bool,
) -> Vec<(Arc<str>, V)> {
    let mut out = Vec::new();
    if want == 0 || (after.is_some() && after == self_key) {
        return out;
    }
    let in_scope = |k: &str| k.starts_with(prefix) || Some(k) == self_key;
    let entry = |k: &str| map.get_key_value(k).map(|(k, v)| (k.clone(), v.clone()));
    let mut stack: Vec<(Arc<str>, V)> = Vec::new();
    let start = match after {
        None => {
            stack.extend(self_key.and_then(entry));
            Some(prefix.to_string())
        }
        Some(a) => {
            // Proper prefixes of `after` in scope, shortest first (the listed folder included).
            stack.extend(
                a.char_indices()
                    .map(|(i, _)| &a[..i])
                    .filter(|p| in_scope(p))
                    .filter_map(entry),
            );
            prefix_successor(a).map(|s| s.max(prefix.to_string()))
        }
    };
    let mut emit = |out: &mut Vec<(Arc<str>, V)>, (k, v): (Arc<str>, V)| {
        if accept(&v) {
            out.push((k, v));
        }
        out.len() >= want
    };
    if let Some(start) = start {
        let range = map.range::<_, str>((Bound::Included(start.as_str()), Bound::Unbounded));
        for (k, v) in range {
            if !k.starts_with(prefix) {
                break;
            }
            while stack
                .last()
                .is_some_and(|(top, _)| !k.starts_with(top.as_ref()))
            {
                if let Some(done) = stack.pop()
                    && emit(&mut out, done)
                {
                    return out;
                }
            }
            stack.push((k.clone(), v.clone()));
        }
    }
    while let Some(done) = stack.pop() {
        if emit(&mut out, done) {
            break;
        }
    }
    out
}

/// One page of an initial enumeration from a snapshot: (entries, last key, has_more).
/// `post_order` (`children_before_parents`, recursive listings only) puts every folder after
/// its descendants, the listed folder itself (if included) last.
pub(crate) fn snapshot_page(
    tree: &Tree,
    c: &Cursor,
    cfg_self: bool,
    post_order: bool,
) -> (Vec<JEntry>, Option<String>, bool) {
    let limit = c.l.max(1) as usize;
    let post = post_order && c.r;
    let mut items = Vec::new();
    let mut last = c.k.clone();
    if !post && c.k.is_none() && c.includes_self(cfg_self) {
        if let Some(n) = tree.live.get(c.p.as_str()) {
            items.push(JEntry::Live(n.clone()));
        }
        last = Some(c.p.clone());
    }
    let remaining = limit.saturating_sub(items.len());
    let prefix = format!("{}/", c.p);
    let after = last.as_deref();
    let accept_live = |n: &Arc<Node>| c.n || n.is_downloadable();
    let live = if post {
        let self_key = c.includes_self(cfg_self).then_some(c.p.as_str());
        scan_post(
            &tree.live,
            &prefix,
            self_key,
            after,
            remaining + 1,
            accept_live,
        )
    } else {
        scan(&tree.live, &prefix, c.r, after, remaining + 1, accept_live)
    };
    let tombs = match (c.d, post) {
        (false, _) => Vec::new(),
        (true, false) => scan(&tree.tombs, &prefix, c.r, after, remaining + 1, |_| true),
        (true, true) => scan_post(&tree.tombs, &prefix, None, after, remaining + 1, |_| true),
    };
    let mut merged: Vec<JEntry> = Vec::with_capacity(remaining + 1);
    let (mut li, mut ti) = (live.into_iter().peekable(), tombs.into_iter().peekable());
    while merged.len() <= remaining {
        let take_live = match (li.peek(), ti.peek()) {
            (Some(l), Some(t)) if post => post_cmp(&l.0, &t.0).is_le(),
            (Some(l), Some(t)) => l.0 <= t.0,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if take_live {
            if let Some((_, n)) = li.next() {
                merged.push(JEntry::Live(n));
            }
        } else if let Some((k, d)) = ti.next() {
            merged.push(JEntry::Deleted {
                path_lower: k,
                path_display: d,
            });
        }
    }
    let has_more = merged.len() > remaining;
    merged.truncate(remaining);
    if let Some(e) = merged.last() {
        last = Some(e.key().to_string());
    }
    items.extend(merged);
    (items, last, has_more)
}

/// One page of changes after the cursor's journal position: (entries, new position, has_more).
pub(crate) fn journal_page(
    journal: &[JEntry],
    c: &Cursor,
    cfg_self: bool,
) -> (Vec<JEntry>, u64, bool) {
    let limit = c.l.max(1) as usize;
    let mut out = Vec::new();
    let mut pos = (c.j as usize).min(journal.len());
    while pos < journal.len() {
        let e = &journal[pos];
        if c.wants(e, cfg_self) {
            if out.len() == limit {
                // There is at least one more: the next page starts here.
                return (out, pos as u64, true);
            }
            out.push(e.clone());
        }
        pos += 1;
    }
    (out, pos as u64, false)
}

/// Is there any change for this cursor at or after journal position `from`?
pub(crate) fn has_change(journal: &[JEntry], c: &Cursor, from: u64, cfg_self: bool) -> bool {
    journal
        .get(from as usize..)
        .is_some_and(|tail| tail.iter().any(|e| c.wants(e, cfg_self)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn folder(id: u64, key: &str) -> Arc<Node> {
        Arc::new(Node {
            id,
            path_lower: key.into(),
            path_display: key.into(),
            file: None,
        })
    }

    fn cursor(p: &str, d: bool, limit: u32) -> Cursor {
        Cursor {
            a: 0,
            e: 0,
            p: p.to_string(),
            i: None,
            r: true,
            d,
            n: true,
            h: false,
            l: limit,
            s: None,
            k: None,
            j: 0,
        }
    }

    /// Every page of a listing, concatenated (keys only).
    fn all_pages(tree: &Tree, mut c: Cursor, cfg_self: bool) -> Vec<String> {
        let mut keys = Vec::new();
        loop {
            let (entries, last, has_more) = snapshot_page(tree, &c, cfg_self, true);
            assert!(entries.len() <= c.l as usize);
            keys.extend(entries.iter().map(|e| e.key().to_string()));
            if !has_more {
                return keys;
            }
            assert!(!entries.is_empty(), "a page with has_more is never empty");
            c.k = last;
        }
    }

    #[test]
    fn post_order_pages_are_exact_and_children_come_first() {
        // Components chosen to sit around '/' in byte order and at the ends of the code space.
        let comps = [
            "a",
            "a b",
            "a-b",
            "a0",
            "ab",
            "b",
            "é",
            "z\u{10FFFF}",
            "\u{10FFFF}",
        ];
        for seed in 0..40u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut tree = Tree::default();
            let mut id = 0;
            for _ in 0..rng.random_range(1..40) {
                let depth = rng.random_range(1..5);
                let mut key = String::new();
                for _ in 0..depth {
                    key.push('/');
                    key.push_str(comps[rng.random_range(0..comps.len())]);
                    if !tree.live.contains_key(key.as_str()) {
                        id += 1;
                        tree.live.insert(key.as_str().into(), folder(id, &key));
                    }
                }
            }
            for _ in 0..rng.random_range(0..8) {
                let key = format!(
                    "/{}/{}",
                    comps[rng.random_range(0..comps.len())],
                    comps[rng.random_range(0..comps.len())]
                );
                if !tree.live.contains_key(key.as_str()) {
                    tree.tombs.insert(key.as_str().into(), key.as_str().into());
                }
            }
            let listed: Vec<String> = std::iter::once(String::new())
                .chain(tree.live.keys().take(5).map(|k| k.to_string()))
                .collect();
            for p in &listed {
                for (cfg_self, d) in [(true, false), (false, true), (true, true)] {
                    let prefix = format!("{p}/");
                    let mut want: Vec<String> = tree
                        .live
                        .keys()
                        .filter(|k| {
                            k.starts_with(&prefix)
                                || (cfg_self && !p.is_empty() && k.as_ref() == p.as_str())
                        })
                        .chain(tree.tombs.keys().filter(|k| d && k.starts_with(&prefix)))
                        .map(|k| k.to_string())
                        .collect();
                    want.sort_by(|a, b| post_cmp(a, b));
                    for limit in [1, 2, 3, 7, 1000] {
                        let got = all_pages(&tree, cursor(p, d, limit), cfg_self);
                        assert_eq!(got, want, "seed {seed} listing {p:?} limit {limit}");
                        for (i, k) in got.iter().enumerate() {
                            let sub = format!("{k}/");
                            assert!(
                                got[i..].iter().all(|later| !later.starts_with(&sub)),
                                "{k} comes before one of its descendants"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn prefix_successor_bounds_a_subtree() {
        assert_eq!(prefix_successor("/a").as_deref(), Some("/b"));
        assert_eq!(
            prefix_successor("/a\u{D7FF}").as_deref(),
            Some("/a\u{E000}")
        );
        assert_eq!(prefix_successor("/a\u{10FFFF}").as_deref(), Some("/b"));
        assert_eq!(prefix_successor("\u{10FFFF}"), None);
        assert!(post_cmp("/a/x", "/a").is_lt());
        assert!(post_cmp("/ab", "/a").is_lt());
        assert!(post_cmp("/a b", "/a/x").is_lt());
    }
}
