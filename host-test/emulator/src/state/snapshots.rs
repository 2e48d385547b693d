//! The snapshots of in-progress initial listings: each paged listing keeps the O(1) clone of
//! the tree it started from (and the journal position it was taken at), in a bounded table
//! whose least recently used entry is evicted (its cursor then answers 409 reset).

use super::tree::Tree;
use std::collections::HashMap;

struct SnapEntry {
    tree: Tree,
    jpos: u64,
    last_used: u64,
}

pub(crate) struct Snapshots {
    entries: HashMap<u64, SnapEntry>,
    /// Allocates snapshot ids and counts uses (for the least-recently-used order).
    seq: u64,
    capacity: usize,
}

impl Snapshots {
    pub fn new(capacity: usize) -> Snapshots {
        Snapshots {
            entries: HashMap::new(),
            seq: 0,
            capacity: capacity.max(1),
        }
    }

    /// Keep a listing snapshot for the next pages; the least recently used one is evicted.
    pub fn register(&mut self, tree: Tree, jpos: u64) -> u64 {
        if self.entries.len() >= self.capacity
            && let Some((&old, _)) = self.entries.iter().min_by_key(|(_, s)| s.last_used)
        {
            self.entries.remove(&old);
        }
        self.seq += 1;
        let id = self.seq;
        self.entries.insert(
            id,
            SnapEntry {
                tree,
                jpos,
                last_used: id,
            },
        );
        id
    }

    /// The snapshot's tree and journal position (a use: it becomes the most recently used).
    pub fn get(&mut self, id: u64) -> Option<(Tree, u64)> {
        self.seq += 1;
        let tick = self.seq;
        let s = self.entries.get_mut(&id)?;
        s.last_used = tick;
        Some((s.tree.clone(), s.jpos))
    }

    pub fn remove(&mut self, id: u64) {
        self.entries.remove(&id);
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}
