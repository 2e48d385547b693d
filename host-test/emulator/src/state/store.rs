//! [`State`]: everything the server holds about the account under its lock (the tree, the
//! journal, the id and rev indexes, snapshots, links, the cursor epoch), and the lookups on it,
//! path resolution among them. Changes to the tree are in `changes`.

use super::ids::{Account, FIRST_REV, parse_rev};
use super::journal::JEntry;
use super::links::{Link, SharedLinks, TempLink};
use super::snapshots::Snapshots;
use super::tree::{Lookup, Node, Tree, lower, split_path};
use crate::error::EmulatorError;
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) struct State {
    pub tree: Tree,
    /// id → current path_lower of live items.
    pub(super) ids: HashMap<u64, Arc<str>>,
    /// Every file version ever created, for `rev:` paths and temporary links.
    pub(super) revs: HashMap<u64, Arc<Node>>,
    pub journal: Vec<JEntry>,
    snapshots: Snapshots,
    /// Bumped by `invalidate_cursors`; cursors carry the epoch they were made in.
    pub cursor_epoch: u64,
    /// Shared links by creation order, and the link of each node.
    pub links: SharedLinks,
    pub temp_links: HashMap<String, TempLink>,
    pub(super) next_id: u64,
    pub(super) next_rev: u64,
}

impl State {
    pub fn new(snap_capacity: usize) -> State {
        State {
            tree: Tree::default(),
            ids: HashMap::new(),
            revs: HashMap::new(),
            journal: Vec::new(),
            snapshots: Snapshots::new(snap_capacity),
            cursor_epoch: 0,
            links: SharedLinks::default(),
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

    pub fn link_of(&self, node_id: u64) -> Option<&Link> {
        self.links.of(node_id)
    }

    /// Create the node's shared link, or return the existing one (`false` = it already existed).
    pub fn share_node(&mut self, node: &Node, base_url: &str) -> (&Link, bool) {
        self.links.share(node, base_url)
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
        self.links
            .remove_of_node(node.id)
            .ok_or_else(|| EmulatorError::NotFound(format!("no shared link for {path}")))?;
        Ok(())
    }

    pub fn invalidate_cursors(&mut self) {
        self.cursor_epoch += 1;
        self.snapshots.clear();
    }

    /// Keep a listing snapshot for the next pages; the least recently used one is evicted.
    pub fn register_snapshot(&mut self, tree: Tree, jpos: u64) -> u64 {
        self.snapshots.register(tree, jpos)
    }

    pub fn snapshot(&mut self, id: u64) -> Option<(Tree, u64)> {
        self.snapshots.get(id)
    }

    pub fn drop_snapshot(&mut self, id: u64) {
        self.snapshots.remove(id);
    }

    /// Is the id still live at this path (a cursor's folder)?
    pub fn id_at(&self, id: u64, path_lower: &str) -> bool {
        self.ids.get(&id).is_some_and(|p| p.as_ref() == path_lower)
    }

    /// What `truth` needs, taken under the lock in O(links): the tree is an O(1) clone.
    pub fn truth_snapshot(&self) -> (Tree, HashMap<u64, String>) {
        (self.tree.clone(), self.links.urls_by_node())
    }
}
