//! Property tests of the planner over arbitrary entry sequences, applied to an in-memory store
//! with the same rules as the host's SQLite store (an upsert onto a path another live record
//! holds is a conflict; removals are two-phase; `purge` deletes what is still pending).
//!
//! Whatever the entries, in whatever order and however paged:
//! - planning never panics and never fails on a working store;
//! - applying the plan never hits a conflict, and at most one live record holds each path;
//! - the last entry for a path wins (unless a later entry removes an ancestor or moves that id);
//! - replaying a page that was applied (a crash before its cursor was stored) leaves the store
//!   exactly as it was.
//!
//! Seeded and bounded; `FUZZ_ITERATIONS=N` runs N sequences instead of the default.

use crate::test_support::{XorShift, iterations};
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{FollowUp, PageContext, plan_page};
use crate::api::types::{DeletedMetadata, FileMetadata, FolderMetadata, Metadata};
use crate::config::Filters;
use crate::model::{
    ApplySummary, Change, ChangeKind, DropboxPath, Permission, Record, RecordGroup, StoredRecord,
    SyncPhase, SyncPoint, SyncStatus, User,
};
use crate::ports::{Paths, Records, StoreError};

/// The host store's semantics, in memory. `apply` is all or nothing.
#[derive(Default, Clone, PartialEq, Debug)]
pub(crate) struct FakeStore {
    /// By id: the record and whether it is pending removal.
    pub(crate) records: BTreeMap<String, (Record, bool)>,
    pub(crate) sync_point: Option<String>,
    /// Events of the last `apply`: (kind, id).
    events: Vec<(ChangeKind, String)>,
    /// Events of every `apply` so far, in order.
    log: Vec<(ChangeKind, String)>,
}

fn under(path: &str, folder: &str) -> bool {
    path.len() > folder.len() && path.starts_with(folder) && path.as_bytes()[folder.len()] == b'/'
}

impl FakeStore {
    fn live_at(&self, path: &str) -> Vec<&Record> {
        self.records
            .values()
            .filter(|(r, pending)| !pending && r.path_lower_str() == path)
            .map(|(r, _)| r)
            .collect()
    }

    fn mark_subtree(&mut self, path: &str) {
        for (r, pending) in self.records.values_mut() {
            if r.path_lower_str() == path || under(r.path_lower_str(), path) {
                *pending = true;
            }
        }
    }

    fn apply_one(&mut self, change: Change) -> Result<(), StoreError> {
        match change {
            Change::Upsert { record, event } => {
                if record.external_id.is_empty() || record.path_lower_str().is_empty() {
                    return Err(StoreError::Invalid(
                        "a record needs an external id and a path".into(),
                    ));
                }
                if let Some(other) = self
                    .live_at(record.path_lower_str())
                    .into_iter()
                    .find(|r| r.external_id != record.external_id)
                {
                    return Err(StoreError::Conflict(format!(
                        "{} is held by {}",
                        record.path_lower_str(),
                        other.external_id
                    )));
                }
                if event != ChangeKind::Unchanged {
                    self.events.push((event, record.external_id.clone()));
                }
                self.records
                    .insert(record.external_id.clone(), (record, false));
            }
            Change::Replace {
                path_lower,
                new_external_id,
                keep_children,
            } => {
                let old = self
                    .live_at(&path_lower)
                    .into_iter()
                    .find(|r| r.external_id != new_external_id)
                    .map(|r| r.external_id.clone());
                let Some(old) = old else { return Ok(()) };
                if keep_children {
                    // Only the replaced folder; the connector updates its descendants.
                    if let Some((_, pending)) = self.records.get_mut(&old) {
                        *pending = true;
                    }
                } else {
                    self.mark_subtree(&path_lower);
                }
            }
            Change::Remove(id) => {
                if let Some((_, pending)) = self.records.get_mut(&id) {
                    *pending = true;
                }
            }
            Change::RemoveSubtree(path) => self.mark_subtree(&path),
            Change::MarkAllPending => self
                .records
                .values_mut()
                .for_each(|(_, pending)| *pending = true),
            Change::Purge => self.records.retain(|_, (_, pending)| !*pending),
        }
        Ok(())
    }

    /// Live records, by path (several for a path would be a broken invariant).
    fn live_by_path(&self) -> BTreeMap<String, Vec<String>> {
        let mut by_path: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (r, pending) in self.records.values() {
            if !pending {
                by_path
                    .entry(r.path_lower_str().to_string())
                    .or_default()
                    .push(r.external_id.clone());
            }
        }
        by_path
    }
}

impl Records for FakeStore {
    fn apply(
        &mut self,
        changes: Vec<Change>,
        sync_point: Option<SyncPoint>,
    ) -> Result<ApplySummary, StoreError> {
        let mut next = self.clone();
        next.events.clear();
        for change in changes {
            next.apply_one(change)?;
        }
        let events = next.events.clone();
        next.log.extend(events);
        if let Some(point) = sync_point {
            next.sync_point = Some(point.position);
        }
        *self = next;
        Ok(ApplySummary::default())
    }

    fn get_sync_point(&mut self) -> Result<Option<String>, StoreError> {
        Ok(self.sync_point.clone())
    }

    fn list_records(&mut self, after: Option<&str>, limit: u32) -> Result<Vec<Record>, StoreError> {
        Ok(self
            .records
            .iter()
            .filter(|(id, (_, pending))| !pending && after.is_none_or(|a| id.as_str() > a))
            .take(limit as usize)
            .map(|(_, (r, _))| r.clone())
            .collect())
    }

    fn get_records(&mut self, ids: Vec<String>) -> Result<Vec<StoredRecord>, StoreError> {
        Ok(ids
            .iter()
            .filter_map(|id| self.records.get(id))
            .map(|(record, pending)| StoredRecord {
                record: record.clone(),
                pending_removal: *pending,
            })
            .collect())
    }

    fn list_shared(&mut self) -> Result<Vec<Record>, StoreError> {
        Ok(self
            .records
            .values()
            .filter(|(r, pending)| !pending && r.is_shared)
            .map(|(r, _)| r.clone())
            .collect())
    }

    fn put_owner(&mut self, _: User, _: RecordGroup, _: Vec<Permission>) -> Result<(), StoreError> {
        Ok(())
    }

    fn clear(&mut self) -> Result<(), StoreError> {
        *self = FakeStore::default();
        Ok(())
    }
}

impl Paths for FakeStore {
    fn find_by_paths(&mut self, paths: Vec<String>) -> Result<Vec<Option<Record>>, StoreError> {
        Ok(paths
            .iter()
            .map(|p| self.live_at(p).first().map(|r| (*r).clone()))
            .collect())
    }

    fn list_subtree(
        &mut self,
        path_lower: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Record>, StoreError> {
        let mut out: Vec<Record> = self
            .records
            .values()
            .filter(|(r, pending)| {
                !pending
                    && under(r.path_lower_str(), path_lower)
                    && after.is_none_or(|a| r.path_lower_str() > a)
            })
            .map(|(r, _)| r.clone())
            .collect();
        out.sort_by(|a, b| a.path_lower_str().cmp(b.path_lower_str()));
        out.truncate(limit as usize);
        Ok(out)
    }
}

/// Few names, so that paths collide, nest and change case often.
const SEGMENTS: &[&str] = &["a", "A", "b", "Ünï", "ünï", "c.txt", "C.TXT", "😀", "d d"];
const IDS: usize = 12;

fn random_path(rng: &mut XorShift) -> (String, String) {
    let depth = 1 + rng.below(3);
    let display: String = (0..depth)
        .map(|_| format!("/{}", rng.pick(SEGMENTS)))
        .collect();
    let lower = display.to_lowercase();
    (lower, display)
}

fn name_of(display: &str) -> String {
    display.rsplit('/').next().unwrap_or_default().to_string()
}

fn random_entry(rng: &mut XorShift) -> Metadata {
    let (lower, display) = random_path(rng);
    let id = format!("id:{}", rng.below(IDS));
    let name = name_of(&display);
    // Entries without a path (not mounted) now and then.
    let path = |rng: &mut XorShift, p: String| if rng.below(30) == 0 { None } else { Some(p) };
    match rng.below(10) {
        0..=3 => Metadata::File(FileMetadata {
            name,
            id,
            path_lower: path(rng, lower),
            path_display: Some(display),
            client_modified: "2024-01-02T03:04:05Z".into(),
            server_modified: format!("2024-01-02T03:04:{:02}Z", rng.below(60)),
            rev: format!("{:09x}", rng.below(4)),
            size: rng.below(3) as u64,
            content_hash: Some(format!("{:064x}", rng.below(4))),
            is_downloadable: rng.below(8) != 0,
            export_info: None,
            sharing_info: None,
        }),
        4..=6 => Metadata::Folder(FolderMetadata {
            name,
            id,
            path_lower: path(rng, lower),
            path_display: Some(display),
            sharing_info: None,
        }),
        7 | 8 => Metadata::Deleted(DeletedMetadata {
            name,
            path_lower: Some(lower),
            path_display: Some(display),
        }),
        _ => Metadata::Unknown {
            tag: "future_kind".into(),
        },
    }
}

/// The entries that count for "the last entry at a path": files and folders with a path,
/// and deletions.
fn placed(entry: &Metadata) -> Option<(&str, Option<&str>)> {
    match entry {
        Metadata::File(_) | Metadata::Folder(_) => entry.path_lower().map(|p| (p, entry.id())),
        Metadata::Deleted(d) => d.path_lower.as_deref().map(|p| (p, None)),
        Metadata::Unknown { .. } => None,
    }
}

/// For each path whose last entry is not undone by a later one, what must be live there.
fn expected_at_paths(entries: &[Metadata]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let Some((path, id)) = placed(entry) else {
            continue;
        };
        let later = &entries[i + 1..];
        let superseded = later
            .iter()
            .any(|e| placed(e).is_some_and(|(p, _)| p == path));
        // A later file or deletion at an ancestor clears the subtree; a later entry with the
        // same id moves the item away.
        let undone = later.iter().any(|e| {
            let ancestor_cleared = matches!(e, Metadata::File(_) | Metadata::Deleted(_))
                && e.path_lower().is_some_and(|p| under(path, p));
            let moved = id.is_some() && e.id() == id;
            ancestor_cleared || moved
        });
        if !superseded && !undone {
            out.push((path.to_string(), id.map(String::from)));
        }
    }
    out
}

/// Plans and applies one page on `store` as `run_sync` does, checking every property; the
/// error says which one broke.
/// What `run_sync` carries from page to page: the parent paths listed children wait for.
#[derive(Default, Clone)]
struct Carry {
    orphans: BTreeSet<String>,
}

/// Descendants follow their folders, as `run_sync` does after a page.
fn follow_up(store: &mut FakeStore, plan: &super::PagePlan) -> Result<(), String> {
    let mut follow: Vec<FollowUp> = plan.follow_ups.iter().map(|(_, f)| f.clone()).collect();
    crate::sync::follow::run(
        store,
        &mut follow,
        &mut |_| {
            Ok(SyncPoint {
                position: "follow".into(),
                status: SyncStatus {
                    phase: SyncPhase::Current,
                    detail: String::new(),
                },
            })
        },
        &mut ApplySummary::default(),
    )
    .map_err(|e| format!("following up failed: {e}"))
}

fn check_page(
    store: &mut FakeStore,
    entries: &[Metadata],
    filters: &Filters,
    listing_start: bool,
    exact_replay: bool,
    carry: &mut Carry,
) -> Result<(), String> {
    if listing_start {
        carry.orphans.clear();
    }
    let context = PageContext {
        orphans: &carry.orphans,
        after_mark_all: listing_start,
    };
    let plan = plan_page(store, entries.to_vec(), filters, None, context)
        .map_err(|e| format!("planning failed: {e}"))?;
    let mut changes = Vec::new();
    if listing_start {
        changes.push(Change::MarkAllPending);
    }
    changes.extend(plan.changes.iter().cloned());
    let held_before: std::collections::HashSet<String> = store.records.keys().cloned().collect();
    store
        .apply(changes, None)
        .map_err(|e| format!("the store refused the plan: {e}"))?;
    one_live_per_path(store)?;
    // "Created" only for an item the store did not hold, and once per page even when the page
    // names the item several times, also when filters exclude it in between (an excluded
    // record is only pending removal: still live downstream).
    let mut created = std::collections::HashSet::new();
    for (kind, id) in &store.events {
        if *kind == ChangeKind::Created && (held_before.contains(id) || !created.insert(id.clone()))
        {
            return Err(format!("{id} announced as created again"));
        }
    }
    let orphans_before = carry.orphans.clone();
    for (_, path) in &plan.orphans_added {
        carry.orphans.insert(path.clone());
    }
    for (_, path) in &plan.orphans_resolved {
        carry.orphans.remove(path);
    }
    follow_up(store, &plan)?;
    if filters.is_empty() {
        for (path, id) in expected_at_paths(entries) {
            let live: Vec<String> = store
                .live_at(&path)
                .iter()
                .map(|r| r.external_id.clone())
                .collect();
            let want: Vec<String> = id.into_iter().collect();
            if live != want {
                return Err(format!(
                    "the last entry at {path} must win: {want:?} expected, {live:?} live"
                ));
            }
        }
    }
    // A crash after this page's writes but before its cursor: the page comes again and is
    // planned against what the store now holds. Whatever the page, that works and keeps one
    // live record per path. For a page of a consistent feed (`exact_replay`) it also changes
    // nothing at all and announces nothing. (The listing's mark is not repeated: it went with
    // the page's first batch.)
    let applied = store.clone();
    let emitted = store.log.len();
    let context = PageContext {
        orphans: &orphans_before,
        after_mark_all: false,
    };
    let replan = plan_page(store, entries.to_vec(), filters, None, context)
        .map_err(|e| format!("replanning failed: {e}"))?;
    store
        .apply(replan.changes.clone(), None)
        .map_err(|e| format!("the store refused the replayed plan: {e}"))?;
    follow_up(store, &replan)?;
    one_live_per_path(store).map_err(|e| format!("after a replay: {e}"))?;
    if !exact_replay {
        return Ok(());
    }
    if store.records != applied.records {
        let changed: Vec<String> = store
            .records
            .iter()
            .filter(|(id, now)| applied.records.get(*id) != Some(now))
            .map(|(id, now)| format!("{id}: {:?} -> {:?}", applied.records.get(id), now))
            .collect();
        return Err(format!("a replayed page changed the store: {changed:#?}"));
    }
    if store.log.len() != emitted {
        return Err(format!(
            "a replayed page emitted {:?}",
            &store.log[emitted..]
        ));
    }
    Ok(())
}

fn one_live_per_path(store: &FakeStore) -> Result<(), String> {
    match store
        .live_by_path()
        .into_iter()
        .find(|(_, ids)| ids.len() > 1)
    {
        Some((path, ids)) => Err(format!("{path} is held by {ids:?}")),
        None => Ok(()),
    }
}

/// The smallest page (by dropping entries one at a time) that still breaks a property from
/// the same starting store: what a failure report shows.
fn shrink(
    start: &FakeStore,
    entries: Vec<Metadata>,
    filters: &Filters,
    listing_start: bool,
) -> (Vec<Metadata>, String) {
    let fails = |entries: &[Metadata]| {
        check_page(
            &mut start.clone(),
            entries,
            filters,
            listing_start,
            false,
            &mut Carry::default(),
        )
        .err()
    };
    let mut entries = entries;
    let mut error = fails(&entries).unwrap_or_default();
    let mut i = 0;
    while i < entries.len() {
        let mut fewer = entries.clone();
        fewer.remove(i);
        match fails(&fewer) {
            Some(e) => {
                entries = fewer;
                error = e;
            }
            None => i += 1,
        }
    }
    (entries, error)
}

fn describe(entry: &Metadata) -> String {
    let kind = match entry {
        Metadata::File(_) => "file",
        Metadata::Folder(_) => "folder",
        Metadata::Deleted(_) => "deleted",
        Metadata::Unknown { .. } => "unknown",
    };
    format!(
        "{kind} {} {:?} ({:?})",
        entry.id().unwrap_or("-"),
        entry.path_lower(),
        entry.path_display()
    )
}

/// One sequence: pages of random entries, applied as `run_sync` applies them.
fn run_sequence(seed: u64, filters: &Filters) {
    let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut store = FakeStore::default();
    let pages = 1 + rng.below(5);
    for page_no in 0..pages {
        let entries: Vec<Metadata> = (0..rng.below(25)).map(|_| random_entry(&mut rng)).collect();
        // No listing marks here: a listing is a consistent tree (the consistent-feed test below
        // has listings); an arbitrary page planned against a store about to be marked pending
        // could name a child under a file, which no listing does.
        let listing_start = false;
        let last = page_no + 1 == pages || rng.below(3) == 0;
        let start = store.clone();
        if check_page(
            &mut store,
            &entries,
            filters,
            listing_start,
            false,
            &mut Carry::default(),
        )
        .is_err()
        {
            let (minimal, error) = shrink(&start, entries, filters, listing_start);
            let held: Vec<(String, String, bool)> = start
                .records
                .values()
                .map(|(r, pending)| {
                    (
                        r.external_id.clone(),
                        r.path_lower_str().to_string(),
                        *pending,
                    )
                })
                .collect();
            let minimal: Vec<String> = minimal.iter().map(describe).collect();
            panic!(
                "seed {seed} page {page_no} ({filters:?}): {error}\nstore before: {held:?}\nentries: {minimal:#?}"
            );
        }
        if last {
            store
                .apply(vec![Change::Purge], None)
                .unwrap_or_else(|e| panic!("seed {seed}: purge failed: {e}"));
            assert!(store.records.values().all(|(_, pending)| !pending));
            one_live_per_path(&store).unwrap_or_else(|e| panic!("seed {seed}: after purge: {e}"));
        }
    }
}

#[test]
fn arbitrary_entry_sequences_keep_one_live_record_per_path() {
    for seed in 0..iterations(3_000) as u64 {
        run_sequence(seed, &Filters::default());
    }
}

#[test]
fn arbitrary_entry_sequences_under_filters() {
    let filters = [
        Filters {
            include_extensions: vec!["txt".into()],
            ..Filters::default()
        },
        Filters {
            exclude_paths: vec!["/a".into()],
            ..Filters::default()
        },
        Filters {
            include_paths: vec!["/ünï/b".into()],
            ..Filters::default()
        },
        Filters {
            modified_after: Some(1_704_164_660),
            ..Filters::default()
        },
    ];
    for seed in 0..iterations(1_000) as u64 {
        run_sequence(seed, &filters[seed as usize % filters.len()]);
    }
}

// ---------------------------------------------------------------------------------------------
// Consistent feeds: pages generated from a model account, as Dropbox reports changes

/// A small account: by `path_lower`, the item's id, whether it is a folder, and its display path.
#[derive(Default, Clone)]
struct Model {
    items: BTreeMap<String, (String, bool, String)>,
    revs: HashMap<String, u64>,
    next_id: usize,
}

impl Model {
    fn subtree(&self, lower: &str) -> Vec<String> {
        self.items
            .keys()
            .filter(|p| *p == lower || under(p, lower))
            .cloned()
            .collect()
    }

    /// Create an item and any missing folders above it; false if impossible (taken, or a file
    /// in the way).
    fn create(
        &mut self,
        display: &str,
        folder: bool,
        touched: &mut std::collections::BTreeSet<String>,
    ) -> bool {
        let segments: Vec<&str> = display.split('/').filter(|s| !s.is_empty()).collect();
        if segments.is_empty() || self.items.contains_key(&display.to_lowercase()) {
            return false;
        }
        let mut at = String::new();
        for (i, segment) in segments.iter().enumerate() {
            at.push('/');
            at.push_str(segment);
            let lower = at.to_lowercase();
            let last = i + 1 == segments.len();
            match self.items.get(&lower) {
                Some((_, true, _)) if !last => {
                    // Keep the folder's own casing for what follows.
                    at = self.items[&lower].2.clone();
                }
                Some(_) => return false,
                None => {
                    self.next_id += 1;
                    let id = format!("id:m{}", self.next_id);
                    self.revs.insert(id.clone(), 1);
                    self.items
                        .insert(lower.clone(), (id, folder || !last, at.clone()));
                    touched.insert(lower);
                }
            }
        }
        true
    }

    fn delete(&mut self, lower: &str, touched: &mut std::collections::BTreeSet<String>) {
        for p in self.subtree(lower) {
            self.items.remove(&p);
            touched.insert(p);
        }
    }

    /// Move an item (with its subtree) to a new display path under an existing folder.
    fn move_to(
        &mut self,
        from: &str,
        to_display: &str,
        touched: &mut std::collections::BTreeSet<String>,
    ) -> bool {
        let to = to_display.to_lowercase();
        let Some((_, _, from_display)) = self.items.get(from).cloned() else {
            return false;
        };
        let parent_ok = match to.rfind('/') {
            Some(0) => true,
            Some(i) => self
                .items
                .get(&to[..i])
                .is_some_and(|(_, folder, _)| *folder),
            None => false,
        };
        if !parent_ok || self.items.contains_key(&to) || to == from || under(&to, from) {
            return false;
        }
        let parent_display = match to.rfind('/') {
            Some(i) if i > 0 => self.items[&to[..i]].2.clone(),
            _ => String::new(),
        };
        let new_display = format!("{parent_display}/{}", name_of(to_display));
        for p in self.subtree(from) {
            if let Some((id, folder, display)) = self.items.remove(&p) {
                let moved_display = format!("{new_display}{}", &display[from_display.len()..]);
                let moved = moved_display.to_lowercase();
                touched.insert(p);
                touched.insert(moved.clone());
                self.items.insert(moved, (id, folder, moved_display));
            }
        }
        true
    }

    fn entry(&self, lower: &str) -> Metadata {
        match self.items.get(lower) {
            Some((id, true, display)) => Metadata::Folder(FolderMetadata {
                name: name_of(display),
                id: id.clone(),
                path_lower: Some(lower.to_string()),
                path_display: Some(display.clone()),
                sharing_info: None,
            }),
            Some((id, false, display)) => {
                let rev = self.revs.get(id).copied().unwrap_or(1);
                Metadata::File(FileMetadata {
                    name: name_of(display),
                    id: id.clone(),
                    path_lower: Some(lower.to_string()),
                    path_display: Some(display.clone()),
                    client_modified: "2024-01-02T03:04:05Z".into(),
                    server_modified: "2024-01-02T03:04:05Z".into(),
                    rev: format!("{rev:09x}"),
                    size: rev,
                    content_hash: Some(format!("{rev:064x}")),
                    is_downloadable: true,
                    export_info: None,
                    sharing_info: None,
                })
            }
            None => Metadata::Deleted(DeletedMetadata {
                name: name_of(lower),
                path_lower: Some(lower.to_string()),
                path_display: Some(lower.to_string()),
            }),
        }
    }

    /// The latest state of each touched path, in path order (parents first); a deleted folder
    /// is one entry, as Dropbox reports it.
    fn feed(&self, touched: &std::collections::BTreeSet<String>) -> Vec<Metadata> {
        let gone: Vec<&String> = touched
            .iter()
            .filter(|p| !self.items.contains_key(*p))
            .collect();
        touched
            .iter()
            .filter(|p| self.items.contains_key(*p) || !gone.iter().any(|g| under(p, g)))
            .map(|p| self.entry(p))
            .collect()
    }

    /// Everything, as a full listing reports it: parents first, or (`children_first`) every
    /// folder after its contents, which may put a child pages before its folder.
    fn listing(&self, children_first: bool) -> Vec<Metadata> {
        let mut entries: Vec<Metadata> = self.items.keys().map(|p| self.entry(p)).collect();
        if children_first {
            entries.reverse();
        }
        entries
    }

    /// Differences between the store's live records and the model.
    fn diff(&self, store: &FakeStore) -> Vec<String> {
        let mut diffs = Vec::new();
        let live = store.live_by_path();
        for (lower, (id, folder, display)) in &self.items {
            let Some((record, false)) = store.records.get(id) else {
                diffs.push(format!("{id} {display}: not live"));
                continue;
            };
            let parent = match lower.rfind('/') {
                Some(i) if i > 0 => self.items.get(&lower[..i]).map(|(pid, _, _)| pid.clone()),
                _ => None,
            };
            let kind_ok = (record.kind == crate::model::RecordKind::Folder) == *folder;
            if record.path_lower_str() != *lower
                || record.path_display_str() != *display
                || record.parent_external_id != parent
                || !kind_ok
            {
                diffs.push(format!(
                    "{id}: expected {display} (parent {parent:?}), stored {} (parent {:?}, {:?})",
                    record.path_display_str(),
                    record.parent_external_id,
                    record.kind
                ));
            }
        }
        for (path, ids) in live {
            if !self.items.contains_key(&path) {
                diffs.push(format!("{path}: {ids:?} live, not in the account"));
            }
        }
        diffs
    }
}

fn shuffle<T>(rng: &mut XorShift, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i + 1));
    }
}

/// Cut a feed into 1..=3 pages at random points; pages keep the feed's order, and with
/// `shuffled` the entries within a page are in random order (children before parents).
fn pages_of(rng: &mut XorShift, mut feed: Vec<Metadata>, shuffled: bool) -> Vec<Vec<Metadata>> {
    let mut pages = Vec::new();
    let count = 1 + rng.below(3);
    for i in 0..count {
        let take = if i + 1 == count {
            feed.len()
        } else {
            rng.below(feed.len() + 1)
        };
        let mut page: Vec<Metadata> = feed.drain(..take).collect();
        if shuffled {
            shuffle(rng, &mut page);
        }
        pages.push(page);
    }
    pages
}

fn random_op(
    model: &mut Model,
    rng: &mut XorShift,
    touched: &mut std::collections::BTreeSet<String>,
) {
    let paths: Vec<String> = model.items.keys().cloned().collect();
    let existing = |rng: &mut XorShift| paths.get(rng.below(paths.len())).cloned();
    let (_, display) = random_path(rng);
    match rng.below(7) {
        0 | 1 => {
            model.create(&display, false, touched);
        }
        2 => {
            model.create(&display, true, touched);
        }
        3 => {
            if let Some(p) = existing(rng)
                && let Some((id, false, _)) = model.items.get(&p).cloned()
            {
                *model.revs.entry(id).or_default() += 1;
                touched.insert(p);
            }
        }
        4 => {
            if let Some(p) = existing(rng) {
                model.move_to(&p, &display, touched);
            }
        }
        5 => {
            if let Some(p) = existing(rng) {
                model.delete(&p, touched);
            }
        }
        _ => {
            // Deleted, then something else at the same path (a new id, maybe another kind).
            if let Some(p) = existing(rng) {
                let display = model.items[&p].2.clone();
                model.delete(&p, touched);
                model.create(&display, rng.below(2) == 0, touched);
            }
        }
    }
}

/// Applies a feed's pages as `run_sync` does; after its last page the store must equal the model.
fn apply_feed(
    store: &mut FakeStore,
    pages: Vec<Vec<Metadata>>,
    listing: bool,
    seed: u64,
    model: &Model,
) {
    let count = pages.len();
    let mut carry = Carry::default();
    for (i, page) in pages.into_iter().enumerate() {
        let listing_start = listing && i == 0;
        let start = store.clone();
        if let Err(error) = check_page(
            store,
            &page,
            &Filters::default(),
            listing_start,
            true,
            &mut carry,
        ) {
            let held: Vec<(String, String, bool)> = start
                .records
                .values()
                .map(|(r, pending)| {
                    (
                        r.external_id.clone(),
                        r.path_lower_str().to_string(),
                        *pending,
                    )
                })
                .collect();
            let page: Vec<String> = page.iter().map(describe).collect();
            panic!(
                "seed {seed}, page {i} of {count}: {error}\nstore before: {held:?}\npage: {page:#?}"
            );
        }
    }
    store
        .apply(vec![Change::Purge], None)
        .unwrap_or_else(|e| panic!("seed {seed}: purge failed: {e}"));
    let diffs = model.diff(store);
    assert!(
        diffs.is_empty(),
        "seed {seed}: the store differs from the account:\n{}",
        diffs.join("\n")
    );
}

fn consistent_feeds(shuffled: bool) {
    for seed in 0..iterations(1_500) as u64 {
        let mut rng = XorShift(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1);
        let mut model = Model::default();
        let mut touched = std::collections::BTreeSet::new();
        for _ in 0..8 {
            random_op(&mut model, &mut rng, &mut touched);
        }
        let mut store = FakeStore::default();
        let children_first = rng.below(2) == 0;
        let pages = pages_of(&mut rng, model.listing(children_first), shuffled);
        apply_feed(&mut store, pages, true, seed, &model);
        for _round in 0..4 {
            let mut touched = std::collections::BTreeSet::new();
            for _ in 0..1 + rng.below(6) {
                random_op(&mut model, &mut rng, &mut touched);
            }
            if rng.below(5) == 0 {
                // A reset: the whole account listed again.
                let children_first = rng.below(2) == 0;
                let pages = pages_of(&mut rng, model.listing(children_first), shuffled);
                apply_feed(&mut store, pages, true, seed, &model);
            } else {
                let pages = pages_of(&mut rng, model.feed(&touched), shuffled);
                apply_feed(&mut store, pages, false, seed, &model);
            }
        }
    }
}

#[test]
fn consistent_feeds_end_at_the_account_and_replay_cleanly() {
    consistent_feeds(false);
}

/// The same with entries in random order within each page. This covers a folder created where
/// another one moved away, named before the mover: `replace` (keep children) must re-parent
/// only the children still under the replaced path, not the mover's children at its new place.
#[test]
fn consistent_feeds_in_any_order_within_a_page() {
    consistent_feeds(true);
}

fn folder_entry(id: &str, display: &str) -> Metadata {
    Metadata::Folder(FolderMetadata {
        name: name_of(display),
        id: id.into(),
        path_lower: Some(display.to_lowercase()),
        path_display: Some(display.into()),
        sharing_info: None,
    })
}

fn file_entry(id: &str, display: &str) -> Metadata {
    Metadata::File(FileMetadata {
        name: name_of(display),
        id: id.into(),
        path_lower: Some(display.to_lowercase()),
        path_display: Some(display.into()),
        client_modified: "2024-01-02T03:04:05Z".into(),
        server_modified: "2024-01-02T03:04:05Z".into(),
        rev: "000000001".into(),
        size: 1,
        content_hash: Some(format!("{:064x}", 1)),
        is_downloadable: true,
        export_info: None,
        sharing_info: None,
    })
}

/// A store that holds one listing page (checked like any other page).
fn listed(entries: &[Metadata]) -> (FakeStore, Carry) {
    let mut store = FakeStore::default();
    let mut carry = Carry::default();
    check_page(
        &mut store,
        entries,
        &Filters::default(),
        true,
        true,
        &mut carry,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (store, carry)
}

/// A folder that takes another folder's place (no deletion reported in between, as when a
/// shared folder is re-mounted) inherits its children: each gets the new parent and the new
/// folder's name in its display path with exactly one metadata event, whether the page names
/// it after the folder or not at all.
#[test]
fn a_folder_taking_a_folders_path_reparents_each_child_once() {
    let (mut store, mut carry) = listed(&[
        folder_entry("id:A", "/P"),
        file_entry("id:c1", "/P/c1.txt"),
        file_entry("id:c2", "/P/c2.txt"),
        folder_entry("id:s", "/P/sub"),
        file_entry("id:d", "/P/sub/d.txt"),
    ]);
    let seen = store.log.len();
    let page = vec![folder_entry("id:B", "/p"), file_entry("id:c2", "/p/c2.txt")];
    check_page(
        &mut store,
        &page,
        &Filters::default(),
        false,
        true,
        &mut carry,
    )
    .unwrap();
    store.apply(vec![Change::Purge], None).unwrap();
    let mut per_id: BTreeMap<&str, Vec<ChangeKind>> = BTreeMap::new();
    for (kind, id) in &store.log[seen..] {
        per_id.entry(id).or_default().push(*kind);
    }
    let metadata_once = vec![ChangeKind::Metadata];
    for child in ["id:c1", "id:c2", "id:s", "id:d"] {
        assert_eq!(
            per_id.get(child),
            Some(&metadata_once),
            "{child}: {per_id:?}"
        );
    }
    assert_eq!(per_id.get("id:B"), Some(&vec![ChangeKind::Created]));
    let record = |id: &str| store.records[id].0.clone();
    for child in ["id:c1", "id:c2", "id:s"] {
        assert_eq!(record(child).parent_external_id.as_deref(), Some("id:B"));
    }
    assert_eq!(record("id:d").parent_external_id.as_deref(), Some("id:s"));
    assert_eq!(record("id:d").path_display_str(), "/p/sub/d.txt");
    assert_eq!(record("id:c1").path_display_str(), "/p/c1.txt");
    assert!(
        !store.records.contains_key("id:A"),
        "the replaced folder is purged"
    );
}

/// A deleted folder takes its whole subtree out of what the rest of the page sees: an entry
/// that comes after the deletion at a path inside it finds nothing there (no `replace` of the
/// removed record) and no parent (the deleted folder is not one). The planner sorts its paths
/// only for such removals; with paths on both sides of the subtree in byte order, this fails if
/// the subtree is looked up in the wrong order.
#[test]
fn a_deletion_hides_the_subtree_from_the_rest_of_the_page() {
    let around = [
        "/0", "/1", "/_", "/a-b", "/a0", "/b", "/c", "/d", "/e", "/f",
    ];
    let inside = ["x", "y", "z/w", "m", "n"];
    let mut first = vec![folder_entry("id:A", "/a"), folder_entry("id:Z", "/a/z")];
    for name in inside {
        first.push(file_entry(&format!("id:old-{name}"), &format!("/a/{name}")));
    }
    for path in around {
        first.push(file_entry(&format!("id:{path}"), path));
    }
    let (mut store, _) = listed(&first);
    let deleted = Metadata::Deleted(DeletedMetadata {
        name: "a".into(),
        path_lower: Some("/a".into()),
        path_display: Some("/a".into()),
    });
    let mut page = vec![deleted];
    for name in inside {
        page.push(file_entry(&format!("id:new-{name}"), &format!("/a/{name}")));
    }
    for path in around {
        page.push(file_entry(&format!("id:{path}"), path));
    }
    let orphans = BTreeSet::new();
    let context = PageContext {
        orphans: &orphans,
        after_mark_all: false,
    };
    let plan = plan_page(&mut store, page, &Filters::default(), None, context)
        .unwrap_or_else(|e| panic!("{e}"));
    let replaced: Vec<&Change> = plan
        .changes
        .iter()
        .filter(|c| matches!(c, Change::Replace { .. }))
        .collect();
    assert!(replaced.is_empty(), "{replaced:?}");
    let mut new = 0;
    let mut unchanged = 0;
    for change in &plan.changes {
        if let Change::Upsert { record, event } = change {
            if record.external_id.starts_with("id:new-") {
                new += 1;
                assert_eq!(*event, ChangeKind::Created);
                assert_eq!(
                    record.parent_external_id,
                    None,
                    "{} keeps a deleted parent",
                    record.path_lower_str()
                );
            } else {
                // Paths next to the subtree in byte order, and "/a-b", "/a0" which share its
                // prefix, are not in it.
                unchanged += 1;
                assert_eq!(*event, ChangeKind::Unchanged, "{}", record.path_lower_str());
            }
        }
    }
    assert_eq!((new, unchanged), (inside.len(), around.len()));
}
