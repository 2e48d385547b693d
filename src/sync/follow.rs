//! Descendants follow their folder.
//!
//! Dropbox reports a move with an entry for every descendant, but three changes can leave
//! records that no entry names:
//! - a case-only rename of a folder, which the service may report as the folder's entry alone:
//!   every descendant's display path (and web URL) must take the new name;
//! - a folder that takes the place of another folder: the children it inherits must name it as
//!   their parent;
//! - a folder listed after children that an earlier page listed (a listing may come in any
//!   order): those children must name it as their parent.
//!
//! The planner names such folders (`FollowUp`); this module walks each folder's descendants in
//! the store, in path order and in chunks, and upserts those that differ, one event each. The
//! work still owed is part of the stored sync state, committed with each chunk, so a crash
//! resumes it where it stopped, and memory stays bounded however large the subtree.

use std::collections::HashMap;

use crate::model::{
    ApplySummary, Change, ChangeKind, ConnectorError, DropboxPath, Record, RecordKind,
};
use crate::ports::Store;
use crate::sync::mapping::{parent_path, web_url};
use crate::sync::planner::{FollowUp, classify, is_under};

/// Descendants read and written per chunk.
const CHUNK: u32 = 500;

fn depth(path_lower: &str) -> usize {
    path_lower.matches('/').count()
}

/// `record` brought in line with the deepest of `folders` above it (by their paths).
fn followed(record: &Record, follow: &[FollowUp], folders: &HashMap<String, Record>) -> Record {
    let deepest = follow
        .iter()
        .filter(|f| is_under(record.path_lower_str(), &f.path_lower))
        .filter_map(|f| folders.get(&f.folder_id).map(|folder| (f, folder)))
        .max_by_key(|(f, _)| f.path_lower.len());
    let Some((f, folder)) = deepest else {
        return record.clone();
    };
    // The components below the folder, as the record shows them (names keep their casing); a
    // display path that does not have them all falls back to the lower-cased ones.
    let below = depth(record.path_lower_str()) - depth(&f.path_lower);
    let shown: Vec<&str> = record.path_display_str().split('/').skip(1).collect();
    let lowered: Vec<&str> = record.path_lower_str().split('/').skip(1).collect();
    let source = if shown.len() == lowered.len() {
        &shown
    } else {
        &lowered
    };
    let mut rest: Vec<&str> = source[source.len().saturating_sub(below)..].to_vec();
    if let Some(last) = rest.last_mut() {
        *last = &record.name;
    }
    let mut updated = record.clone();
    updated.set_path_display(format!("{}/{}", folder.path_display_str(), rest.join("/")));
    updated.web_url = Some(web_url(updated.kind, updated.path_display_str()));
    if parent_path(record.path_lower_str()) == Some(f.path_lower.as_str()) {
        updated.parent_external_id = Some(folder.external_id.clone());
    }
    updated
}

/// Bring the descendants of every folder in `follow` in line, committing each chunk together
/// with `point(remaining)`, the sync point that records the work still owed. Returns when
/// nothing is owed any more.
pub fn run(
    store: &mut dyn Store,
    follow: &mut Vec<FollowUp>,
    point: &mut dyn FnMut(&[FollowUp]) -> Result<crate::model::SyncPoint, ConnectorError>,
    totals: &mut ApplySummary,
) -> Result<(), ConnectorError> {
    // Outer folders first: their walk already covers what nested ones would change.
    follow.sort_by(|a, b| a.path_lower.cmp(&b.path_lower));
    while !follow.is_empty() {
        // Each folder as the store holds it now; a folder that is gone, or has moved since,
        // owes nothing (a move re-lists its descendants, a deletion removes them).
        let ids: Vec<String> = follow.iter().map(|f| f.folder_id.clone()).collect();
        let folders: HashMap<String, Record> = store
            .get_records(ids)?
            .into_iter()
            .filter(|s| !s.pending_removal && s.record.kind == RecordKind::Folder)
            .map(|s| (s.record.external_id.clone(), s.record))
            .filter(|(id, r)| {
                follow
                    .iter()
                    .any(|f| &f.folder_id == id && f.path_lower == r.path_lower_str())
            })
            .collect();
        let current = follow[0].clone();
        let mut changes = Vec::new();
        let finished = if folders.contains_key(&current.folder_id) {
            let chunk = store.list_subtree(&current.path_lower, current.after.as_deref(), CHUNK)?;
            for record in &chunk {
                let updated = followed(record, follow, &folders);
                let event = classify(Some(record), &updated);
                if event != ChangeKind::Unchanged {
                    changes.push(Change::Upsert {
                        record: updated,
                        event,
                    });
                }
            }
            match chunk.last() {
                Some(last) if chunk.len() == CHUNK as usize => {
                    follow[0].after = Some(last.path_lower_str().to_string());
                    false
                }
                _ => true,
            }
        } else {
            true
        };
        if finished {
            follow.remove(0);
        }
        let sync_point = point(follow)?;
        totals.add(store.apply(changes, Some(sync_point))?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RecordKind, record_path};

    fn rec(id: &str, display: &str, parent: Option<&str>, kind: RecordKind) -> Record {
        Record {
            external_id: id.into(),
            revision: None,
            name: display.rsplit('/').next().unwrap_or_default().into(),
            path: record_path(&display.to_lowercase(), display.into()),
            parent_external_id: parent.map(String::from),
            kind,
            mime_type: "x".into(),
            size: 0,
            content_hash: None,
            client_modified: None,
            server_modified: None,
            is_downloadable: true,
            export_format: None,
            web_url: Some(web_url(kind, display)),
            is_shared: false,
            shared_url: None,
        }
    }

    #[test]
    fn descendants_take_the_deepest_folder_name_and_direct_children_its_id() {
        let follow = vec![
            FollowUp {
                path_lower: "/a".into(),
                folder_id: "id:A2".into(),
                after: None,
            },
            FollowUp {
                path_lower: "/a/b".into(),
                folder_id: "id:B".into(),
                after: None,
            },
        ];
        let folders: HashMap<String, Record> = [
            rec("id:A2", "/ALPHA", None, RecordKind::Folder),
            rec("id:B", "/ALPHA/Beta", Some("id:A2"), RecordKind::Folder),
        ]
        .into_iter()
        .map(|mut r| {
            // Case-only: the folders keep their lower-cased paths.
            let lower = if r.external_id == "id:B" {
                "/a/b"
            } else {
                "/a"
            };
            r.path = record_path(lower, r.path_display_str().to_string());
            r
        })
        .map(|r| (r.external_id.clone(), r))
        .collect();
        let mut child = rec("id:c", "/a/c.txt", Some("id:A1"), RecordKind::File);
        child.path = record_path("/a/c.txt", child.path_display_str().to_string());
        let out = followed(&child, &follow, &folders);
        assert_eq!(out.path_display_str(), "/ALPHA/c.txt");
        assert_eq!(out.parent_external_id.as_deref(), Some("id:A2"));
        assert_eq!(
            out.web_url.as_deref(),
            Some("https://www.dropbox.com/home/ALPHA?preview=c.txt")
        );
        let mut deep = rec("id:d", "/a/b/x/Deep.txt", Some("id:x"), RecordKind::File);
        deep.path = record_path("/a/b/x/deep.txt", deep.path_display_str().to_string());
        let out = followed(&deep, &follow, &folders);
        assert_eq!(out.path_display_str(), "/ALPHA/Beta/x/Deep.txt");
        assert_eq!(out.parent_external_id.as_deref(), Some("id:x"));
    }
}
