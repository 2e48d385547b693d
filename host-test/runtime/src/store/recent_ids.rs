//! The ids of the SQLite store's newest rows, kept in memory until they are merged into the id
//! index (`record_ids`) many commits at a time.
//!
//! Why: Dropbox ids are opaque and, for a sync, random. A B-tree keyed by them takes each
//! commit's 2,000 new ids at 2,000 random places, so once it outgrows a commit every commit
//! rewrote about one page of it per record (4 KiB written to the WAL, synced, and copied into
//! the database file, for a 40-byte key). The rows themselves are appended, so the newest rows
//! (`row > record_ids_merged.through`) are a log the database already keeps; this map finds
//! them by id, and a merge inserts their ids into the index in key order, touching each of its
//! pages at most once for thousands of records.
//!
//! The map only ever holds hints: a 64-bit hash of (tenant, id) and the row numbers of rows
//! that had it. Every use reads the row and compares tenant and id, so an entry whose row was
//! deleted, or written by a transaction that rolled back, is passed over. What must hold is
//! the other way: every row past the merged mark is in the map. Rows are numbered by
//! AUTOINCREMENT (never reused, only ever larger), so `catch_up` finds every row written since
//! it last looked (by this connection or another process) by reading the rows past the
//! largest it has seen; after a transaction of this store's failed, the map is loaded afresh
//! (`invalidate`), since its row numbers may be given again.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::BuildHasher;

use rusqlite::{Connection, params};

pub(super) struct RecentIds {
    /// The merged mark the map was loaded under; None: load it afresh.
    through: Option<i64>,
    /// The largest row number the map has seen (rows up to it are in the map).
    seen_to: i64,
    /// The first row noted under each hash of (tenant, id): 16 bytes an entry.
    rows: HashMap<u64, i64, foldhash::fast::RandomState>,
    /// Rows noted under a hash that had one already, oldest first: two ids of one hash, or
    /// one id with a row gone and a new one.
    more: HashMap<u64, Vec<i64>, foldhash::fast::RandomState>,
    /// Rows in the map (an upper bound of the unmerged rows: entries may be stale).
    len: usize,
    /// Keyed per store: the ids come from a connector, which cannot know the seed.
    hasher: foldhash::fast::RandomState,
    /// Which ids the index may hold, as of `through` (see `IndexedIds`); None: not known.
    indexed: Option<IndexedIds>,
}

/// Bits per id of `IndexedIds`; with `PROBES` probes, about 1 id in 120 that is not there
/// is taken for one that may be.
const BITS_PER_ID: usize = 10;
const PROBES: u64 = 7;
/// The fewest ids `IndexedIds` has room for, beyond those it is made with (1.25 MiB).
const MIN_CAPACITY: usize = 1 << 20;

/// A Bloom filter of the ids in the id index: "not there" is certain, so a lookup of a new id
/// (every id of a first listing) reads nothing of the index, whose pages, once it outgrows
/// the page cache, were read from the file for nearly every record. It holds every id the
/// index held when it was made, and every id merged by this store since; a merge by another
/// store moves the mark, and the filter is then dropped (`catch_up`). Ids leaving the index
/// stay in it, which costs a lookup, never a wrong answer.
struct IndexedIds {
    bits: Vec<u64>,
    ids: usize,
    capacity: usize,
}

impl IndexedIds {
    fn with_capacity(capacity: usize) -> IndexedIds {
        IndexedIds {
            bits: vec![0; (capacity * BITS_PER_ID).div_ceil(64).max(1)],
            ids: 0,
            capacity,
        }
    }

    /// The bits of `key`: double hashing (the key, and its halves swapped, odd, as the step),
    /// each 64-bit value mapped onto the bits by multiplication (no rounding of the size to a
    /// power of two, which could double it).
    fn probes(&self, key: u64) -> impl Iterator<Item = usize> + use<> {
        let bits = (self.bits.len() * 64) as u128;
        let step = key.rotate_left(32) | 1;
        (0..PROBES).map(move |i| {
            let h = key.wrapping_add(i.wrapping_mul(step));
            ((u128::from(h) * bits) >> 64) as usize
        })
    }

    fn add(&mut self, key: u64) {
        for bit in self.probes(key) {
            self.bits[bit / 64] |= 1 << (bit % 64);
        }
        self.ids += 1;
    }

    fn may_hold(&self, key: u64) -> bool {
        self.probes(key)
            .all(|bit| self.bits[bit / 64] & (1 << (bit % 64)) != 0)
    }
}

impl RecentIds {
    pub(super) fn new() -> RecentIds {
        RecentIds {
            through: None,
            seen_to: 0,
            rows: HashMap::default(),
            more: HashMap::default(),
            len: 0,
            hasher: foldhash::fast::RandomState::default(),
            indexed: None,
        }
    }

    /// The key of (tenant, id) in the map and the filter.
    pub(super) fn key(&self, tenant: &str, id: &str) -> u64 {
        self.hasher.hash_one((tenant, id))
    }

    /// How many rows the map holds.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The merged mark the map stands on (after `catch_up`).
    pub(super) fn through(&self) -> i64 {
        self.through.unwrap_or(0)
    }

    /// Forget everything: the next `catch_up` loads the unmerged rows from the database.
    pub(super) fn invalidate(&mut self) {
        self.through = None;
        self.clear_rows();
        self.indexed = None;
    }

    /// An empty map, in new tables: the memory of a large merge's worth goes back.
    fn clear_rows(&mut self) {
        self.rows = HashMap::default();
        self.more = HashMap::default();
        self.len = 0;
    }

    /// Bring the map up to the database as `conn` sees it (inside the caller's transaction):
    /// the merged mark, and every row past what the map has seen.
    pub(super) fn catch_up(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let through: i64 = conn
            .prepare_cached("SELECT through FROM record_ids_merged")?
            .query_row([], |r| r.get(0))?;
        if self.through != Some(through) {
            self.invalidate();
            self.through = Some(through);
            self.seen_to = through;
        }
        let mut stmt = conn.prepare_cached(
            "SELECT row, tenant, external_id FROM records WHERE row > ?1 ORDER BY row",
        )?;
        let mut found = stmt.query(params![self.seen_to])?;
        while let Some(r) = found.next()? {
            let (tenant, id) = (r.get_ref(1)?.as_str()?, r.get_ref(2)?.as_str()?);
            self.note(tenant, id, r.get(0)?);
        }
        Ok(())
    }

    /// A row this store just wrote.
    pub(super) fn note(&mut self, tenant: &str, id: &str, row: i64) {
        let key = self.key(tenant, id);
        match self.rows.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert(row);
            }
            Entry::Occupied(_) => self.more.entry(key).or_default().push(row),
        }
        self.len += 1;
        self.seen_to = self.seen_to.max(row);
    }

    /// The rows that may be (tenant, id)'s, newest first; the caller reads each to be sure.
    pub(super) fn candidates(&self, tenant: &str, id: &str) -> Vec<i64> {
        self.candidates_of(self.key(tenant, id))
    }

    /// `candidates` by key.
    pub(super) fn candidates_of(&self, key: u64) -> Vec<i64> {
        let Some(&first) = self.rows.get(&key) else {
            return Vec::new();
        };
        let mut found: Vec<i64> = self
            .more
            .get(&key)
            .map(|more| more.iter().rev().copied().collect())
            .unwrap_or_default();
        found.push(first);
        found
    }

    /// Whether the id index may hold the id of `key` (false: it does not); true when the
    /// filter is not made.
    pub(super) fn may_be_indexed(&self, key: u64) -> bool {
        self.indexed.as_ref().is_none_or(|f| f.may_hold(key))
    }

    /// Make the filter of the index's ids (after `catch_up`, in the caller's transaction)
    /// unless there is one with room: read every id of the index once.
    pub(super) fn filter_index(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        if self.indexed.as_ref().is_some_and(|f| f.ids <= f.capacity) {
            return Ok(());
        }
        let count: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM record_ids")?
            .query_row([], |r| r.get(0))?;
        let count = usize::try_from(count).unwrap_or(0);
        // Room for half as many again (a listing's merges add to it), at least `MIN_CAPACITY`.
        let mut filter = IndexedIds::with_capacity(count + (count / 2).max(MIN_CAPACITY));
        let mut stmt = conn.prepare_cached("SELECT tenant, external_id FROM record_ids")?;
        let mut ids = stmt.query([])?;
        while let Some(r) = ids.next()? {
            let (tenant, id): (&str, &str) = (r.get_ref(0)?.as_str()?, r.get_ref(1)?.as_str()?);
            filter.add(self.key(tenant, id));
        }
        self.indexed = Some(filter);
        Ok(())
    }

    /// After a merge up to `through` (in the caller's transaction): the map is empty, and its
    /// ids are in the filter.
    pub(super) fn merged(&mut self, through: i64) {
        if let Some(filter) = self.indexed.as_mut() {
            for &key in self.rows.keys() {
                filter.add(key);
            }
        }
        self.clear_rows();
        self.through = Some(through);
        self.seen_to = self.seen_to.max(through);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_never_misses_an_id_it_was_given_and_rarely_claims_another() {
        let hasher = foldhash::fast::RandomState::default();
        let key = |i: usize| hasher.hash_one(("t", format!("id:{i}")));
        let mut filter = IndexedIds::with_capacity(100_000);
        for i in 0..100_000 {
            filter.add(key(i));
        }
        assert!((0..100_000).all(|i| filter.may_hold(key(i))));
        let claimed = (100_000..200_000)
            .filter(|&i| filter.may_hold(key(i)))
            .count();
        // 10 bits per id and 7 probes: about 0.8%.
        assert!(claimed < 2_000, "{claimed} of 100,000 absent ids claimed");
    }

    #[test]
    fn a_hash_shared_by_two_ids_keeps_both_rows() {
        let mut recent = RecentIds::new();
        recent.through = Some(0);
        recent.note("t", "id:a", 1);
        // A second row under the same key (as a colliding id's would be).
        let key = recent.key("t", "id:a");
        recent.more.entry(key).or_default().push(7);
        recent.note("t", "id:a", 9);
        assert_eq!(recent.candidates("t", "id:a"), vec![9, 7, 1]);
        assert!(recent.candidates("t", "id:b").is_empty());
        assert!(recent.candidates("u", "id:a").is_empty());
    }
}
