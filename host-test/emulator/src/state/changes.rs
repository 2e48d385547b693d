//! Changes to the tree, each recorded in the change journal the way Dropbox reports it:
//! creating files and folders (missing parents included), new content, moves and renames
//! (case-only ones too), deletes, and the bulk insert of `populate`. A failed change changes
//! nothing.

use super::journal::JEntry;
use super::store::State;
use super::tree::{Export, FileInfo, Node, lower, split_path, subtree_end};
use crate::blob::Blob;
use crate::error::EmulatorError;
use std::ops::Bound;
use std::sync::Arc;

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

impl State {
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
            self.links.remove_of_node(n.id);
        }
        self.journal.push(JEntry::Deleted {
            path_lower: src.path_lower.clone(),
            path_display: src.path_display.clone(),
        });
        Ok(src)
    }
}
