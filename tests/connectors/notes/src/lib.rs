//! A connector for a small notes service: a *flat* source, whose items are addressed only by
//! id (no paths, no folders). It exists to show that the host runs any component of the
//! world: it is written against the guest SDK only, and goes through the same runtime and the
//! same command line as the Dropbox connector.
//!
//! The service (`https://notes.example.test/v1`, bearer token, no OAuth):
//! - `GET /me`: the account;
//! - `GET /notes?limit=n[&after=id]`: the full listing, the live notes in id order from after
//!   `after`; `next` is the service's change sequence (where to follow changes from);
//! - `GET /notes?since=seq&limit=n`: the change feed, every note changed after `seq` (deleted
//!   ones too, `deleted: true`) in change order; `next` is the `since` of the next request;
//!   410 when `seq` is older than the history the service keeps;
//! - `GET /notes/<id>/content`: the bytes, by `Range`.
//!
//! A full listing remembers the sequence its first page reported and then follows the feed
//! from there: whatever changed while it ran comes again as a change. The position stored with
//! each batch says which sequence is running (see [`Position`]), so an interrupted sync
//! continues where it stopped, and the store's removal marks exist only while a re-listing
//! that may still restore them is unfinished.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use connector_sdk::model::*;
use connector_sdk::ports::{Level, Sink, StoreError};
use connector_sdk::{Connector, ConnectorError, Ports};

mod api;
mod position;

use api::{API, Calls, Note, Page, Query, account, content_range, escape, get, list, status_error};
pub use position::{Position, Resume};

pub const HOST: &str = "notes.example.test";
pub const PAGE_SIZE: &str = "page_size";
const DEFAULT_PAGE_SIZE: u32 = 100;

pub struct Notes;

connector_sdk::export_connector!(Notes);

impl Connector for Notes {
    fn manifest() -> Manifest {
        Manifest {
            name: "notes".into(),
            display_name: "Notes".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            app_group: "Notes".into(),
            description: "Notes from a notes service, as items without paths".into(),
            oauth: None,
            allowed_hosts: vec![HOST.into()],
            config_fields: vec![ConfigField {
                key: PAGE_SIZE.into(),
                label: "Page size".into(),
                description: "Notes asked for per listing request".into(),
                field_type: FieldType::Integer { min: 1, max: 1000 },
                default_value: Some(DEFAULT_PAGE_SIZE.to_string()),
            }],
            schedule: Schedule {
                strategies: vec![SyncStrategy::Manual, SyncStrategy::Scheduled],
                default_strategy: SyncStrategy::Scheduled,
                default_interval_minutes: 30,
                min_interval_minutes: 1,
                max_interval_minutes: 24 * 60,
            },
        }
    }

    fn test_connection(ports: &mut Ports<'_>) -> Result<User, ConnectorError> {
        account(ports, &mut Calls::default())
    }

    fn sync(ports: &mut Ports<'_>) -> Result<SyncSummary, ConnectorError> {
        let page_size = page_size(ports)?;
        let stored = ports.store.get_sync_point().map_err(store_error)?;
        let mut position = Position::parse(stored.as_deref());
        let mut calls = Calls::default();
        let mut summary = SyncSummary {
            kind: position.kind(),
            pages: 0,
            entries: 0,
            applied: ApplySummary::default(),
            api_calls: 0,
            retries: 0,
            interrupted: false,
            phases: Vec::new(),
        };
        let mut planning = Duration::ZERO;
        if let Position::Listing { resume: None, .. } = position {
            put_owner(ports, &mut calls)?;
        }
        loop {
            if ports.host.should_stop() {
                summary.interrupted = true;
                break;
            }
            let (page, next) = match &position {
                Position::Current { since } => {
                    let Some(page) = list(ports, &mut calls, Query::Since(*since), page_size)?
                    else {
                        // The service no longer has the changes since our position: list
                        // everything again, sweeping what is not seen.
                        ports.host.log(
                            Level::Warn,
                            "the service forgot the position; listing again",
                        );
                        position = Position::Listing {
                            marked: true,
                            resume: None,
                        };
                        summary.kind = SyncKind::Resync;
                        continue;
                    };
                    let next = Position::Current { since: page.next };
                    (page, next)
                }
                Position::Listing { marked, resume } => {
                    let after = resume.as_ref().map(|r| r.after.as_str());
                    let Some(page) = list(ports, &mut calls, Query::After(after), page_size)?
                    else {
                        return Err(ConnectorError::Internal("410 for a full listing".into()));
                    };
                    let since = resume.as_ref().map_or(page.next, |r| r.since);
                    let next = match page.notes.last() {
                        Some(last) if page.has_more => Position::Listing {
                            marked: *marked,
                            resume: Some(Resume {
                                since,
                                after: last.id.clone(),
                            }),
                        },
                        // A page that says more but lists nothing would never end.
                        _ if page.has_more => {
                            return Err(ConnectorError::Internal("an empty page with more".into()));
                        }
                        _ => Position::Current { since },
                    };
                    (page, next)
                }
            };
            let started = Instant::now();
            let changes = plan(ports, &position, &page)?;
            planning += started.elapsed();
            summary.pages += 1;
            summary.entries += page.notes.len() as u64;
            let applied = ports
                .store
                .apply(changes, Some(next.sync_point(summary.pages)))
                .map_err(store_error)?;
            summary.applied.add(applied);
            position = next;
            ports
                .host
                .progress("listing", summary.pages, summary.entries, None);
            if !page.has_more {
                break;
            }
        }
        summary.api_calls = calls.made;
        summary.retries = calls.retries;
        summary.phases.push(PhaseTime {
            name: "plan".into(),
            microseconds: planning.as_micros() as u64,
        });
        Ok(summary)
    }

    fn stream_record(
        ports: &mut Ports<'_>,
        sink: &mut dyn Sink,
        external_id: &str,
    ) -> Result<StreamSummary, ConnectorError> {
        // One chunk per response, and no response beyond what the host delivers.
        let chunk = ports.host.limits().max_response_body.max(1);
        let url = format!("{API}/notes/{}/content", escape(external_id));
        let mut calls = Calls::default();
        let mut written: u64 = 0;
        loop {
            let range = format!("bytes={written}-{}", written + chunk - 1);
            let response = get(ports, &mut calls, &url, vec![("Range".into(), range)])?;
            let total = match response.status {
                206 => match content_range(&response)? {
                    (Some(first), total) if first == written => total,
                    _ => {
                        return Err(ConnectorError::Internal(format!(
                            "{external_id}: the service answered another range than bytes {written}-"
                        )));
                    }
                },
                // The whole content: only acceptable as the first answer.
                200 if written == 0 => response.body.len() as u64,
                // Past the end: the content is exactly what was written (empty notes).
                416 if content_range(&response)?.1 == written => break,
                _ => return Err(status_error(&response, external_id)),
            };
            for piece in response.body.chunks(chunk as usize) {
                sink.write(piece)
                    .map_err(|e| ConnectorError::Transient(e.to_string()))?;
            }
            written += response.body.len() as u64;
            if response.body.is_empty() && written < total {
                return Err(ConnectorError::Internal(
                    "an empty range before the end".into(),
                ));
            }
            if written >= total {
                break;
            }
        }
        Ok(StreamSummary {
            size: written,
            content_hash: None,
            verified: false,
            mime_type: "text/plain".into(),
        })
    }
}

/// The changes one page makes: each note compared with what is stored.
fn plan(
    ports: &mut Ports<'_>,
    position: &Position,
    page: &Page,
) -> Result<Vec<Change>, ConnectorError> {
    let ids = page.notes.iter().map(|n| n.id.clone()).collect();
    let stored: HashMap<String, Record> = ports
        .store
        .get_records(ids)
        .map_err(store_error)?
        .into_iter()
        .map(|s| (s.record.external_id.clone(), s.record))
        .collect();
    let relisting = matches!(position, Position::Listing { marked: true, .. });
    let mut changes = Vec::with_capacity(page.notes.len() + 2);
    if let Position::Listing {
        marked: true,
        resume: None,
    } = position
    {
        changes.push(Change::MarkAllPending);
    }
    let mut removed = false;
    for note in &page.notes {
        let known = stored.get(&note.id);
        if note.deleted {
            // A note the store never had needs nothing.
            if known.is_some() {
                changes.push(Change::Remove(note.id.clone()));
                removed = true;
            }
            continue;
        }
        let record = record_of(note);
        let event = change_kind(known, &record);
        changes.push(Change::Upsert { record, event });
    }
    // A re-listing purges once, at its end; otherwise the removals of this page are final.
    if (relisting && !page.has_more) || (!relisting && removed) {
        changes.push(Change::Purge);
    }
    Ok(changes)
}

fn record_of(note: &Note) -> Record {
    Record {
        external_id: note.id.clone(),
        revision: Some(note.etag.clone()),
        name: note.title.clone(),
        path: None,
        parent_external_id: None,
        kind: RecordKind::Item,
        mime_type: "text/plain".into(),
        size: note.size,
        content_hash: None,
        client_modified: None,
        server_modified: None,
        is_downloadable: true,
        export_format: None,
        web_url: Some(format!("https://{HOST}/n/{}", note.id)),
        is_shared: false,
        shared_url: None,
    }
}

/// What storing `new` over `old` means downstream. A stored record pending removal counts as
/// known: restoring it is an update (or nothing), never a creation.
pub fn change_kind(old: Option<&Record>, new: &Record) -> ChangeKind {
    let Some(old) = old else {
        return ChangeKind::Created;
    };
    let content = old.revision != new.revision
        || old.size != new.size
        || old.content_hash != new.content_hash;
    // The metadata compared on equal content fields.
    let mut same_content = new.clone();
    same_content.revision.clone_from(&old.revision);
    same_content.size = old.size;
    same_content.content_hash.clone_from(&old.content_hash);
    let metadata = same_content != *old;
    match (content, metadata) {
        (true, true) => ChangeKind::ContentAndMetadata,
        (true, false) => ChangeKind::Content,
        (false, true) => ChangeKind::Metadata,
        (false, false) => ChangeKind::Unchanged,
    }
}

fn page_size(ports: &mut Ports<'_>) -> Result<u32, ConnectorError> {
    match ports
        .host
        .config()
        .into_iter()
        .find(|(k, _)| k == PAGE_SIZE)
    {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some((_, v)) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                ConnectorError::InvalidConfig(format!("{PAGE_SIZE}: {v:?} is not 1..=1000"))
            }),
    }
}

/// The account owns everything: one group, the owner its only member.
fn put_owner(ports: &mut Ports<'_>, calls: &mut Calls) -> Result<(), ConnectorError> {
    let owner = account(ports, calls)?;
    let group = RecordGroup {
        external_id: format!("notes:{}", owner.external_id),
        name: "Notes".into(),
        kind: GroupKind::Other,
    };
    let permission = Permission {
        principal_external_id: owner.external_id.clone(),
        role: Role::Owner,
    };
    ports
        .store
        .put_owner(owner, group, vec![permission])
        .map_err(store_error)
}

fn store_error(e: StoreError) -> ConnectorError {
    match e {
        StoreError::Storage(m) => ConnectorError::Transient(format!("the records store: {m}")),
        other => ConnectorError::Internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests;
