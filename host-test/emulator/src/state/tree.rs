//! The items of the account and the tree that holds them: [`Node`] (a live file or folder) with
//! its [`FileInfo`], the [`Tree`] of live items and tombstones keyed by `path_lower`, what a path
//! argument resolves to ([`Lookup`]), and the rules of paths (validation, lower-casing, subtree
//! key ranges).

use crate::blob::Blob;
use crate::error::EmulatorError;
use std::sync::Arc;

pub(crate) type Map<V> = imbl::OrdMap<Arc<str>, V>;

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

/// What a path argument resolved to.
pub(crate) enum Lookup {
    Root,
    Found(Arc<Node>),
    NotFound,
    Malformed,
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
pub(super) fn subtree_end(key: &str) -> String {
    format!("{key}0")
}
