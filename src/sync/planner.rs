//! Turns one page of `list_folder` entries into store changes, by Dropbox's rules, in the order
//! Dropbox sent them:
//! - a file at a path replaces whatever was there, subtree included;
//! - a folder at a path replaces a file there but keeps existing children;
//! - a deleted entry removes the path and its subtree, and is ignored when nothing is there.
//!
//! Records are identified by the Dropbox `id`, so a move keeps its record (a metadata update),
//! and events are classified against what the store holds: replaying a page emits nothing.
//!
//! One page costs two store lookups (records by id, live records by path), whatever its size.

use std::collections::HashMap;

use crate::api::types::Metadata;
use crate::config::Filters;
use crate::model::{Change, ChangeKind, Record, RecordKind};
use crate::ports::{Store, StoreError};
use crate::sync::mapping::{child_display, file_record, folder_record, parent_path, web_url};

/// Shared links of the account, listed once per sync.
#[derive(Debug, Default, Clone)]
pub struct SharedLinks {
    pub by_id: HashMap<String, String>,
    pub by_path: HashMap<String, String>,
}

impl SharedLinks {
    pub fn url_for(&self, id: &str, path_lower: &str) -> Option<&String> {
        self.by_id.get(id).or_else(|| self.by_path.get(path_lower))
    }
}

#[derive(Debug, Default)]
pub struct PagePlan {
    pub changes: Vec<Change>,
    /// Entries the connector could not use (unknown tags, unmounted items).
    pub skipped: Vec<String>,
    /// Ids of files this page created that have no shared link (for opt-in preview links).
    pub created_unshared_files: Vec<String>,
}

/// Compare a record with what the store held and say what the change means downstream.
pub fn classify(before: Option<&Record>, after: &Record) -> ChangeKind {
    let Some(b) = before else {
        return ChangeKind::Created;
    };
    let content = b.revision != after.revision
        || b.content_hash != after.content_hash
        || b.size != after.size
        || b.kind != after.kind;
    let metadata = b.name != after.name
        || b.path_lower != after.path_lower
        || b.path_display != after.path_display
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

fn is_under(path: &str, folder: &str) -> bool {
    path.len() > folder.len() && path.starts_with(folder) && path.as_bytes()[folder.len()] == b'/'
}

/// What the planner knows while it walks a page: the store's state, overlaid with the page's
/// own changes so far.
struct Overlay {
    /// Records by id (live or pending removal), as they will be after the changes so far.
    by_id: HashMap<String, Record>,
    /// The live record at each path looked at (None: nothing there).
    at_path: HashMap<String, Option<Record>>,
}

impl Overlay {
    fn clear_subtree(&mut self, path: &str) {
        for (p, slot) in self.at_path.iter_mut() {
            if p == path || is_under(p, path) {
                *slot = None;
            }
        }
    }

    fn occupant(&self, path: &str) -> Option<&Record> {
        self.at_path.get(path).and_then(|r| r.as_ref())
    }
}

pub fn plan_page(
    store: &mut dyn Store,
    entries: &[Metadata],
    filters: &Filters,
    links: Option<&SharedLinks>,
) -> Result<PagePlan, StoreError> {
    let ids: Vec<String> = entries
        .iter()
        .filter_map(|e| e.id().map(String::from))
        .collect();
    let mut paths: Vec<String> = Vec::new();
    for e in entries {
        if let Some(p) = e.path_lower() {
            paths.push(p.to_string());
            if let Some(parent) = parent_path(p) {
                paths.push(parent.to_string());
            }
        }
    }
    paths.sort();
    paths.dedup();
    let known = if ids.is_empty() {
        Vec::new()
    } else {
        store.get_records(ids)?
    };
    let found = if paths.is_empty() {
        Vec::new()
    } else {
        store.find_by_paths(paths.clone())?
    };
    let mut overlay = Overlay {
        by_id: known
            .into_iter()
            .map(|s| (s.record.external_id.clone(), s.record))
            .collect(),
        at_path: paths.into_iter().zip(found).collect(),
    };

    let mut plan = PagePlan::default();
    // Index in plan.changes of each upsert with a parent path, to check its parent against the
    // page's end state, with what the record was classified against (the store's record, or
    // the page's earlier entry for it).
    let mut unresolved: Vec<(usize, Option<Record>)> = Vec::new();

    for entry in entries {
        let Some(path) = entry.path_lower().map(String::from) else {
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
                plan.changes.push(Change::RemoveSubtree(path.clone()));
                overlay.clear_subtree(&path);
            }
            Metadata::File(_) | Metadata::Folder(_) => {
                let Some(id) = entry.id().map(String::from) else {
                    plan.skipped.push(format!("{path} (no id)"));
                    continue;
                };
                let is_folder = matches!(entry, Metadata::Folder(_));
                // Whatever else holds this path goes (a folder keeps its children).
                if overlay.occupant(&path).is_some_and(|r| r.external_id != id) {
                    plan.changes.push(Change::Replace {
                        path_lower: path.clone(),
                        new_external_id: id.clone(),
                        keep_children: is_folder,
                    });
                    if is_folder {
                        overlay.at_path.insert(path.clone(), None);
                    } else {
                        overlay.clear_subtree(&path);
                    }
                }
                let previous = overlay.by_id.get(&id).cloned();
                // Whether the store still holds the item where it was (before the move below
                // frees that path in the overlay).
                let held_where_it_was = previous.as_ref().is_some_and(|prev| {
                    overlay
                        .occupant(&prev.path_lower)
                        .is_some_and(|r| r.external_id == id)
                });
                // The item moved away from where the store had it.
                if let Some(prev) = &previous
                    && prev.path_lower != path
                    && overlay
                        .occupant(&prev.path_lower)
                        .is_some_and(|r| r.external_id == id)
                {
                    overlay.at_path.insert(prev.path_lower.clone(), None);
                }

                if !filters.matches(entry, &path) {
                    // Not kept: a record the store has for it must go, also when it moved
                    // out of the kept set (its old path is free in the overlay by now, but
                    // not in the store).
                    if let Some(prev) = previous {
                        if held_where_it_was || prev.path_lower == path {
                            plan.changes
                                .push(Change::RemoveSubtree(prev.path_lower.clone()));
                            overlay.clear_subtree(&prev.path_lower);
                        }
                        overlay.by_id.remove(&id);
                    }
                    continue;
                }

                let parent_path_lower = parent_path(&path);
                let parent = parent_path_lower.and_then(|pp| overlay.occupant(pp));
                let parent_id = parent.map(|p| p.external_id.clone());
                let parent_display = parent.map(|p| p.path_display.clone());
                let display = child_display(
                    parent_display.as_deref(),
                    entry.name().unwrap_or_default(),
                    entry.path_display(),
                );
                let mut record = match entry {
                    Metadata::File(f) => file_record(f, &path, display, parent_id.clone()),
                    Metadata::Folder(f) => folder_record(f, &path, display, parent_id.clone()),
                    _ => continue,
                };
                match links {
                    Some(links) => {
                        if let Some(url) = links.url_for(&id, &path) {
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
                let event = classify(previous.as_ref(), &record);
                if event == ChangeKind::Created
                    && record.kind == RecordKind::File
                    && !record.is_shared
                {
                    plan.created_unshared_files.push(id.clone());
                }
                // Also when known: a later entry of the page may replace the parent folder.
                if parent_path_lower.is_some() {
                    unresolved.push((plan.changes.len(), previous.clone()));
                }
                overlay.by_id.insert(id.clone(), record.clone());
                overlay.at_path.insert(path.clone(), Some(record.clone()));
                plan.changes.push(Change::Upsert { record, event });
            }
        }
    }

    // A child may come before its parent in a page, or before the folder that replaces its
    // parent: resolve its parent from the page's end state, parents before children so that a
    // corrected display path carries down.
    unresolved.sort_by_key(|(index, _)| match plan.changes.get(*index) {
        Some(Change::Upsert { record, .. }) => record.path_lower.matches('/').count(),
        _ => 0,
    });
    for (index, prior) in unresolved {
        let Some(Change::Upsert { record, event }) = plan.changes.get_mut(index) else {
            continue;
        };
        let Some(parent) = parent_path(&record.path_lower).and_then(|pp| overlay.occupant(pp))
        else {
            continue;
        };
        if record.parent_external_id.as_deref() == Some(parent.external_id.as_str())
            && record.path_display == child_display(Some(&parent.path_display), &record.name, None)
        {
            continue;
        }
        record.parent_external_id = Some(parent.external_id.clone());
        record.path_display = child_display(Some(&parent.path_display), &record.name, None);
        record.web_url = Some(web_url(record.kind, &record.path_display));
        *event = classify(prior.as_ref(), record);
        if let Some(slot) = overlay.at_path.get_mut(&record.path_lower)
            && slot
                .as_ref()
                .is_some_and(|r| r.external_id == record.external_id)
        {
            *slot = Some(record.clone());
        }
    }
    Ok(plan)
}

#[cfg(test)]
#[path = "planner_fuzz.rs"]
mod planner_fuzz;
