//! Turns one page of `list_folder` entries into store changes, by Dropbox's rules, in the order
//! Dropbox sent them:
//! - a file at a path replaces whatever was there, subtree included;
//! - a folder at a path replaces a file there but keeps existing children;
//! - a deleted entry removes the path and its subtree, and is ignored when nothing is there.
//!
//! Records are identified by the Dropbox `id`, so a move keeps its record (a metadata update),
//! and events are classified against what the store holds: replaying a page emits nothing.
//!
//! Descendants follow their folder: when a folder takes another folder's path, when a folder's
//! display name changes without a move (a case-only rename, which Dropbox may report as the
//! folder's entry alone), or when a folder arrives after children that an earlier page listed,
//! the plan names the folder in `follow_ups`; `sync::follow` then updates the descendants the
//! page did not list, one upsert (and one event) each.
//!
//! One page costs two store lookups (records by id, live records by path), whatever its size.

use std::collections::BTreeSet;
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::api::types::Metadata;
use crate::config::Filters;
use crate::model::{Change, ChangeKind, DropboxPath, Record, RecordKind};
use crate::ports::{Store, StoreError};
use crate::sync::hashing::{PageMap, PageSet, map_with_capacity};
use crate::sync::mapping::{WebUrls, child_display, file_record, folder_record, parent_path};

/// Shared links of the account, listed once per sync.
#[derive(Debug, Default, Clone)]
pub struct SharedLinks {
    pub by_id: PageMap<String, String>,
    pub by_path: PageMap<String, String>,
}

impl SharedLinks {
    pub fn url_for(&self, id: &str, path_lower: &str) -> Option<&String> {
        self.by_id.get(id).or_else(|| self.by_path.get(path_lower))
    }
}

/// A folder whose descendants in the store must be brought in line with it: parent id for
/// its direct children, display path (and web URL) for all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUp {
    pub path_lower: String,
    pub folder_id: String,
    /// The last descendant already brought in line (descendants are walked in path order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

#[derive(Debug, Default)]
pub struct PagePlan {
    pub changes: Vec<Change>,
    /// Entries the connector could not use (unknown tags, unmounted items).
    pub skipped: Vec<String>,
    /// Ids of files this page created that have no shared link (for opt-in preview links).
    pub created_unshared_files: Vec<String>,
    /// Folders whose descendants must follow them, each with the index in `changes` of the
    /// upsert that makes it necessary: a follow-up is owed once that change is committed.
    pub follow_ups: Vec<(usize, FollowUp)>,
    /// Parent paths that children of this page point at but that hold no live folder yet (a
    /// listing may name a child before its parent), with the index of the child's upsert.
    pub orphans_added: Vec<(usize, String)>,
    /// Parent paths, of earlier pages' orphans, that this page's folders now occupy, with the
    /// index of the folder's upsert.
    pub orphans_resolved: Vec<(usize, String)>,
}

/// Compare a record with what the store held and say what the change means downstream.
pub fn classify(before: Option<&Record>, after: &Record) -> ChangeKind {
    let Some(b) = before else {
        return ChangeKind::Created;
    };
    // Dropbox may give a moved file a new `rev`; the content hash says whether the bytes
    // changed. Without a hash on either side (exports, folders), a new revision is new content.
    let hashes_known = b.content_hash.is_some() && after.content_hash.is_some();
    let new_revision = b.revision != after.revision;
    let content = (new_revision && !hashes_known)
        || b.content_hash != after.content_hash
        || b.size != after.size
        || b.kind != after.kind;
    let metadata = (new_revision && !content)
        || b.name != after.name
        || b.path != after.path
        || b.parent_external_id != after.parent_external_id
        || b.mime_type != after.mime_type
        || b.is_shared != after.is_shared
        || b.shared_url != after.shared_url
        || b.is_downloadable != after.is_downloadable
        || b.export_format != after.export_format
        || b.web_url != after.web_url
        || (!content
            && (b.client_modified != after.client_modified
                || b.server_modified != after.server_modified));
    match (content, metadata) {
        (true, true) => ChangeKind::ContentAndMetadata,
        (true, false) => ChangeKind::Content,
        (false, true) => ChangeKind::Metadata,
        (false, false) => ChangeKind::Unchanged,
    }
}

pub(crate) fn is_under(path: &str, folder: &str) -> bool {
    path.len() > folder.len() && path.starts_with(folder) && path.as_bytes()[folder.len()] == b'/'
}

/// What the planner knows while it walks a page: the store's state, overlaid with the page's
/// own changes so far. Both maps share one copy of each record (a profile of the guest found
/// a tenth of planning in copying and freeing records).
struct Overlay {
    /// Records by id (live or pending removal), as they will be after the changes so far.
    by_id: PageMap<String, Rc<Record>>,
    /// The live record at each path looked at (None: nothing there). A hash map: comparing
    /// paths, which share long prefixes, for ordered lookups and sorting took about a sixth of
    /// the guest's samples.
    at_path: PageMap<Rc<str>, Option<Rc<Record>>>,
    /// The keys of `at_path` in byte order, for subtree ranges: sorted when a page first
    /// removes a subtree (most pages remove none: sorting every page's paths was a
    /// twentieth of the guest's time), kept in order after that.
    sorted: Option<Vec<Rc<str>>>,
}

impl Overlay {
    fn new(
        by_id: PageMap<String, Rc<Record>>,
        paths: Vec<String>,
        found: Vec<Option<Rc<Record>>>,
    ) -> Self {
        let at_path = paths.into_iter().map(Rc::from).zip(found).collect();
        Overlay {
            by_id,
            at_path,
            sorted: None,
        }
    }

    fn set(&mut self, path: &str, record: Option<Rc<Record>>) {
        match self.at_path.get_mut(path) {
            Some(slot) => *slot = record,
            None => {
                let key: Rc<str> = Rc::from(path);
                // Rare: the paths a page adds are the old paths of items it moves.
                if let Some(sorted) = &mut self.sorted {
                    let at = sorted.partition_point(|p| **p < *key);
                    sorted.insert(at, Rc::clone(&key));
                }
                self.at_path.insert(key, record);
            }
        }
    }

    fn clear_subtree(&mut self, path: &str) {
        // The path and its descendants sort within [path, path + '0') ('0' follows '/'); the
        // range also holds siblings such as "path-x", which `is_under` tells apart. A range
        // keeps a page with many deletions linear instead of quadratic.
        let at_path = &mut self.at_path;
        let sorted = self.sorted.get_or_insert_with(|| {
            let mut keys: Vec<Rc<str>> = at_path.keys().cloned().collect();
            keys.sort_unstable();
            keys
        });
        let end = format!("{path}0");
        let from = sorted.partition_point(|p| **p < *path);
        let to = sorted.partition_point(|p| **p < *end);
        for p in &sorted[from..to] {
            if (&**p == path || is_under(p, path))
                && let Some(slot) = at_path.get_mut(p)
            {
                *slot = None;
            }
        }
    }

    fn occupant(&self, path: &str) -> Option<&Record> {
        self.at_path.get(path).and_then(|r| r.as_deref())
    }

    /// A record of the page was corrected after it was placed (its parent or display path):
    /// what later lookups of its path see follows, if it still holds the path.
    fn corrected(&mut self, record: &Rc<Record>) {
        if let Some(slot) = self.at_path.get_mut(record.path_lower_str())
            && slot
                .as_ref()
                .is_some_and(|r| r.external_id == record.external_id)
        {
            *slot = Some(Rc::clone(record));
        }
    }
}

/// What a page is planned in the light of, besides the store.
#[derive(Debug, Clone, Copy)]
pub struct PageContext<'a> {
    /// Parent paths that earlier pages' children wait for.
    pub orphans: &'a BTreeSet<String>,
    /// The page's changes follow a `mark-all-pending` (the first page of a listing): no
    /// record will be live when they apply, whatever the store holds now.
    pub after_mark_all: bool,
}

/// Plan one page. The entries are consumed: their strings move into the planned records.
pub fn plan_page(
    store: &mut dyn Store,
    entries: Vec<Metadata>,
    filters: &Filters,
    links: Option<&SharedLinks>,
    context: PageContext<'_>,
) -> Result<PagePlan, StoreError> {
    let orphans = context.orphans;
    let ids: Vec<String> = entries
        .iter()
        .filter_map(|e| e.id().map(String::from))
        .collect();
    // Each path, and its parent, once (in no particular order: see `Overlay::sorted`).
    let mut seen: PageSet<&str> =
        PageSet::with_capacity_and_hasher(entries.len() * 2, Default::default());
    let mut paths: Vec<String> = Vec::with_capacity(entries.len() * 2);
    for e in &entries {
        if let Some(p) = e.path_lower() {
            for path in std::iter::once(p).chain(parent_path(p)) {
                if seen.insert(path) {
                    paths.push(path.to_string());
                }
            }
        }
    }
    drop(seen);
    let known = if ids.is_empty() {
        Vec::new()
    } else {
        store.get_records(ids)?
    };
    let mut by_id = map_with_capacity(known.len());
    let mut live = Vec::with_capacity(known.len());
    for stored in known {
        let record = Rc::new(stored.record);
        if !stored.pending_removal {
            live.push(Rc::clone(&record));
        }
        by_id.insert(record.external_id.clone(), record);
    }
    let found = if context.after_mark_all {
        vec![None; paths.len()]
    } else {
        occupants(store, &paths, &live)?
    };
    let mut overlay = Overlay::new(by_id, paths, found);

    let mut plan = PagePlan::default();
    let mut urls = WebUrls::default();
    // The page's changes; an upsert's record stays shared with the overlay until the plan is
    // done, so that it is not copied.
    let mut planned: Vec<Planned> = Vec::with_capacity(entries.len());
    // Index in `planned` of each upsert with a parent path, to check its parent against the
    // page's end state, with what the record was classified against (the store's record, or
    // the page's earlier entry for it).
    let mut unresolved: Vec<(usize, Option<Rc<Record>>)> = Vec::new();
    // Folder upserts: index, what the folder was classified against, and whether it took the
    // place of another folder (whose children it inherits).
    let mut folders: Vec<(usize, Option<Rc<Record>>, bool)> = Vec::new();

    for mut entry in entries {
        let Some(path) = entry.take_path_lower() else {
            plan.skipped.push(format!(
                "{} (not mounted: no path)",
                entry.name().unwrap_or("?")
            ));
            continue;
        };
        match entry {
            Metadata::Unknown { tag } => {
                plan.skipped
                    .push(format!("{path} (unknown entry type '{tag}')"));
            }
            Metadata::Deleted(_) => {
                planned.push(Planned::other(Change::RemoveSubtree(path.clone())));
                overlay.clear_subtree(&path);
            }
            Metadata::File(_) | Metadata::Folder(_) => {
                let Some(id) = entry.id().map(String::from) else {
                    plan.skipped.push(format!("{path} (no id)"));
                    continue;
                };
                let is_folder = matches!(entry, Metadata::Folder(_));
                let mut inherits_children = false;
                // Whatever else holds this path goes (a folder keeps its children).
                if overlay.occupant(&path).is_some_and(|r| r.external_id != id) {
                    inherits_children = is_folder
                        && overlay
                            .occupant(&path)
                            .is_some_and(|r| r.kind == RecordKind::Folder);
                    planned.push(Planned::other(Change::Replace {
                        path_lower: path.clone(),
                        new_external_id: id.clone(),
                        keep_children: is_folder,
                    }));
                    if is_folder {
                        overlay.set(&path, None);
                    } else {
                        overlay.clear_subtree(&path);
                    }
                }
                let previous = overlay.by_id.get(&id).cloned();
                // Whether the store still holds the item where it was (before the move below
                // frees that path in the overlay).
                let held_where_it_was = previous.as_ref().is_some_and(|prev| {
                    overlay
                        .occupant(prev.path_lower_str())
                        .is_some_and(|r| r.external_id == id)
                });
                // The item moved away from where the store had it.
                if let Some(prev) = &previous
                    && prev.path_lower_str() != path
                    && overlay
                        .occupant(prev.path_lower_str())
                        .is_some_and(|r| r.external_id == id)
                {
                    overlay.set(prev.path_lower_str(), None);
                }

                if !filters.matches(&entry, &path) {
                    // Not kept: a record the store has for it must go, also when it moved
                    // out of the kept set (its old path is free in the overlay by now, but
                    // not in the store). The record stays known by id: it is only pending
                    // removal, still live downstream, so a later entry that brings it back
                    // is an update of it, not a creation.
                    if let Some(prev) = previous
                        && (held_where_it_was || prev.path_lower_str() == path)
                    {
                        planned.push(Planned::other(Change::RemoveSubtree(
                            prev.path_lower_str().to_string(),
                        )));
                        overlay.clear_subtree(prev.path_lower_str());
                    }
                    continue;
                }

                let parent_path_lower = parent_path(&path);
                let has_parent = parent_path_lower.is_some();
                let parent = parent_path_lower.and_then(|pp| overlay.occupant(pp));
                let parent_id = parent.map(|p| p.external_id.clone());
                let display = child_display(
                    parent.map(|p| p.path_display_str()),
                    entry.name().unwrap_or_default(),
                    entry.path_display(),
                );
                let mut record = match entry {
                    Metadata::File(f) => file_record(f, path, display, parent_id, &mut urls),
                    Metadata::Folder(f) => folder_record(f, path, display, parent_id, &mut urls),
                    _ => continue,
                };
                match links {
                    Some(links) => {
                        if let Some(url) = links.url_for(&id, record.path_lower_str()) {
                            record.is_shared = true;
                            record.shared_url = Some(url.clone());
                        }
                    }
                    // Shared state unknown this time: keep what the store knew.
                    None => {
                        if let Some(prev) = &previous {
                            record.is_shared = prev.is_shared;
                            record.shared_url = prev.shared_url.clone();
                        }
                    }
                }
                let event = classify(previous.as_deref(), &record);
                if event == ChangeKind::Created
                    && record.kind == RecordKind::File
                    && !record.is_shared
                {
                    plan.created_unshared_files.push(id.clone());
                }
                // Also when known: a later entry of the page may replace the parent folder.
                if has_parent {
                    unresolved.push((planned.len(), previous.clone()));
                }
                if is_folder {
                    folders.push((planned.len(), previous.clone(), inherits_children));
                }
                let shared = Rc::new(record);
                overlay.set(shared.path_lower_str(), Some(Rc::clone(&shared)));
                overlay.by_id.insert(id, Rc::clone(&shared));
                planned.push(Planned::Upsert {
                    record: shared,
                    event,
                });
            }
        }
    }

    // A child may come before its parent in a page, or before the folder that replaces its
    // parent: resolve its parent from the page's end state, parents before children so that a
    // corrected display path carries down.
    unresolved.sort_by_cached_key(|(index, _)| match planned.get(*index) {
        Some(Planned::Upsert { record, .. }) => record.path_lower_str().matches('/').count(),
        _ => 0,
    });
    for (index, prior) in unresolved {
        let Some(Planned::Upsert { record, event }) = planned.get_mut(index) else {
            continue;
        };
        let Some(pp) = parent_path(record.path_lower_str()).map(String::from) else {
            continue;
        };
        let Some(parent) = overlay.occupant(&pp) else {
            // No live folder holds the parent path (yet): a listing may name children before
            // their folder, and in a re-listing the folder may still be pending until it is
            // seen again. Keep what the store knew of the child's parent if it did not move,
            // and remember the path, so the folder re-parents it when it comes.
            if let Some(prior) = &prior
                && parent_path(prior.path_lower_str()) == Some(pp.as_str())
            {
                let display = prior
                    .path_display_str()
                    .rfind('/')
                    .map(|i| format!("{}/{}", &prior.path_display_str()[..i], record.name));
                let placed = place(record, prior.parent_external_id.clone(), display, &mut urls);
                *event = classify(Some(prior), placed);
                // Deeper entries of the page take their display path from this one.
                overlay.corrected(record);
            }
            if !orphans.contains(&pp) {
                plan.orphans_added.push((index, pp));
            }
            continue;
        };
        let display = child_display(Some(parent.path_display_str()), &record.name, None);
        if record.parent_external_id.as_deref() == Some(parent.external_id.as_str())
            && record.path_display_str() == display
        {
            continue;
        }
        let placed = place(
            record,
            Some(parent.external_id.clone()),
            Some(display),
            &mut urls,
        );
        *event = classify(prior.as_deref(), placed);
        overlay.corrected(record);
    }

    // Folders whose descendants must follow them (see the module's doc).
    for (index, prior, inherits_children) in folders {
        let Some(Planned::Upsert { record, .. }) = planned.get(index) else {
            continue;
        };
        // Only the folder's last entry of the page counts: it is what the store ends with.
        if overlay
            .occupant(record.path_lower_str())
            .is_none_or(|r| r.external_id != record.external_id)
        {
            continue;
        }
        let renamed_in_place = prior.as_ref().is_some_and(|p| {
            p.path_lower_str() == record.path_lower_str()
                && p.path_display_str() != record.path_display_str()
        });
        let awaited = orphans.contains(record.path_lower_str());
        if awaited {
            plan.orphans_resolved
                .push((index, record.path_lower_str().to_string()));
        }
        if inherits_children || renamed_in_place || awaited {
            plan.follow_ups.push((
                index,
                FollowUp {
                    path_lower: record.path_lower_str().to_string(),
                    folder_id: record.external_id.clone(),
                    after: None,
                },
            ));
        }
    }
    drop(overlay);
    plan.changes = planned
        .into_iter()
        .map(|change| match change {
            Planned::Upsert { record, event } => Change::Upsert {
                // The overlay is gone: the record is no longer shared, unless the page named
                // its item twice.
                record: Rc::try_unwrap(record).unwrap_or_else(|shared| Record::clone(&shared)),
                event,
            },
            Planned::Other(change) => *change,
        })
        .collect();
    Ok(plan)
}

/// The live record at each of `paths` (same order). A live record the page's lookup by id
/// found holds its own path, since the store keeps at most one live record per path (the
/// contract's invariant): only the other paths are asked of the store. When a page updates
/// items the store has, this halves the records the store returns.
fn occupants(
    store: &mut dyn Store,
    paths: &[String],
    live: &[Rc<Record>],
) -> Result<Vec<Option<Rc<Record>>>, StoreError> {
    let held: PageMap<&str, &Rc<Record>> = live
        .iter()
        .filter_map(|r| r.path_lower().map(|p| (p, r)))
        .collect();
    let unknown: Vec<String> = paths
        .iter()
        .filter(|p| !held.contains_key(p.as_str()))
        .cloned()
        .collect();
    let mut looked_up = if unknown.is_empty() {
        Vec::new()
    } else {
        store.find_by_paths(unknown)?
    }
    .into_iter();
    Ok(paths
        .iter()
        .map(|p| match held.get(p.as_str()) {
            Some(record) => Some(Rc::clone(record)),
            None => looked_up.next().flatten().map(Rc::new),
        })
        .collect())
}

/// Give a planned record its parent and, when known, its display path with the web URL that
/// follows from it (the record is copied only if the overlay still shares it).
fn place<'r>(
    record: &'r mut Rc<Record>,
    parent_id: Option<String>,
    display: Option<String>,
    urls: &mut WebUrls,
) -> &'r Record {
    let placed = Rc::make_mut(record);
    placed.parent_external_id = parent_id;
    if let Some(display) = display {
        placed.set_path_display(display);
        placed.web_url = Some(urls.url(placed.kind, placed.path_display_str()));
    }
    placed
}

/// A change as the planner holds it while it walks the page (the other kinds are rare in a
/// page, and boxed so that the many upserts stay small).
enum Planned {
    Upsert {
        record: Rc<Record>,
        event: ChangeKind,
    },
    Other(Box<Change>),
}

impl Planned {
    fn other(change: Change) -> Self {
        Planned::Other(Box::new(change))
    }
}

#[cfg(test)]
#[path = "planner_fuzz.rs"]
pub(crate) mod planner_fuzz;
