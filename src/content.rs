//! Reading content: signed URLs, streamed and verified downloads, exports of non-downloadable
//! documents, and re-checking records against Dropbox.
//!
//! A download is a series of range requests pinned to one revision (`rev:`), each written to the
//! host's sink as it arrives and fed to the content hasher: guest memory holds one range
//! whatever the file's size, an interrupted request is sent again for the same range (the
//! client's retry loop), so a read resumes from the last range it completed, and the result is
//! checked against the content hash Dropbox published for that revision.
//!
//! A range is one hash block (4 MiB, host-test/emulator/DROPBOX-API.md §9) or the host's
//! response-body cap (`host.limits`), whichever is smaller, and no sink chunk is larger than
//! the cap either. The hash does not depend on the range size: the hasher cuts its 4 MiB blocks
//! itself, whatever the chunks it is fed (`content_hash`).
//!
//! Dropbox is the authority on whether a record still exists: a record the store has (even one
//! marked for removal by an unfinished sync) is looked up by id, and a `not_found` from Dropbox is
//! reported as such rather than as a link or a read that fails later.

use crate::api::ApiError;
use crate::api::types::{
    ExportArg, ExportResult, FileMetadata, Metadata, PathArg, TemporaryLinkResult,
};
use crate::client::{CallError, Download, DropboxClient};
use crate::config;
use crate::content_hash::{BLOCK_SIZE, ContentHasher};
use crate::model::{
    Change, ConnectorError, DropboxPath, Record, RecordKind, ReindexSummary, SignedUrl,
    StreamSummary,
};
use crate::ports::{Level, Sink, SinkError, Store};
use crate::sync::planner::{PageContext, plan_page};
use crate::sync::{finish_follow_ups, load_state};

/// Temporary links live four hours.
const TEMPORARY_LINK_SECS: u64 = 4 * 3600;
/// The size of a range request: one hash block, so a retried request repeats at most one block,
/// unless the host's body cap is smaller (then a block takes several ranges).
pub fn range_size(max_response_body: u64) -> u64 {
    (BLOCK_SIZE as u64).min(max_response_body).max(1)
}

/// Write `bytes` to the sink in chunks of at most `max_chunk` bytes (the host's cap on what one
/// call copies).
fn write_chunked(sink: &mut dyn Sink, bytes: &[u8], max_chunk: u64) -> Result<(), ConnectorError> {
    let max_chunk = usize::try_from(max_chunk).unwrap_or(usize::MAX).max(1);
    for chunk in bytes.chunks(max_chunk) {
        sink.write(chunk).map_err(sink_error)?;
    }
    Ok(())
}

/// The stored record with this id, live or marked for removal by a sync that has not finished
/// (a re-listing marks every record until it sees it again; Dropbox decides whether it exists).
fn stored_record(store: &mut dyn Store, id: &str) -> Result<(Record, bool), ConnectorError> {
    store
        .get_records(vec![id.to_string()])?
        .into_iter()
        .find(|s| s.record.external_id == id)
        .map(|s| (s.record, s.pending_removal))
        .ok_or_else(|| ConnectorError::NotFound(format!("no record {id}")))
}

fn file_record(store: &mut dyn Store, id: &str) -> Result<Record, ConnectorError> {
    let (record, _) = stored_record(store, id)?;
    if record.kind == RecordKind::Folder {
        return Err(ConnectorError::NotFound(format!(
            "{id} is a folder; folders have no content"
        )));
    }
    Ok(record)
}

fn not_found_or(e: CallError, id: &str) -> ConnectorError {
    if e.route_error().is_some_and(|r| r.is_not_found()) {
        ConnectorError::NotFound(format!("{id} no longer exists in Dropbox"))
    } else {
        e.into()
    }
}

fn is_unsupported_file(e: &CallError) -> bool {
    e.route_error().is_some_and(|r| r.is_unsupported_file())
}

/// 416: the range starts at or past the end, which at offset 0 means the file is empty.
fn is_unsatisfiable_range(e: &CallError) -> bool {
    matches!(
        e,
        CallError::Api {
            error: ApiError::Unexpected { status: 416, .. },
            ..
        }
    )
}

fn sink_error(e: SinkError) -> ConnectorError {
    ConnectorError::Transient(format!("content sink: {e}"))
}

pub fn get_signed_url(
    client: &mut DropboxClient<'_>,
    store: &mut dyn Store,
    id: &str,
) -> Result<SignedUrl, ConnectorError> {
    let record = file_record(store, id)?;
    if !record.is_downloadable {
        // Dropbox has no link for these (`unsupported_file`); the contract has no closer error.
        return Err(ConnectorError::Internal(format!(
            "{id} is a document Dropbox can only export ({}); read it with stream-record",
            record
                .export_format
                .as_deref()
                .unwrap_or("no format offered")
        )));
    }
    let result: TemporaryLinkResult = client
        .rpc(
            "files/get_temporary_link",
            Some(&PathArg {
                path: id.to_string(),
            }),
        )
        .map_err(|e| not_found_or(e, id))?;
    let now = client.host().now().max(0) as u64;
    Ok(SignedUrl {
        url: result.link,
        expires_at: now + TEMPORARY_LINK_SECS,
    })
}

pub fn stream_record(
    client: &mut DropboxClient<'_>,
    store: &mut dyn Store,
    sink: &mut dyn Sink,
    id: &str,
) -> Result<StreamSummary, ConnectorError> {
    let record = file_record(store, id)?;
    if !record.is_downloadable {
        return export(client, sink, &record);
    }
    let cap = client.limits().max_response_body;
    let range_len = range_size(cap);
    let mut hasher = ContentHasher::new();
    let mut offset: u64 = 0;
    // The first response fixes the revision; later ranges ask for exactly that revision, so a
    // file edited during the read is still read whole at one revision.
    let mut pinned: Option<FileMetadata> = None;
    // Always ranged, even when the stored size is 0: the stored size may be stale, and an
    // unranged request for a file that has grown would bring it whole into guest memory.
    let mut ranged = true;
    loop {
        let path = match &pinned {
            Some(meta) => format!("rev:{}", meta.rev),
            None => id.to_string(),
        };
        let range = ranged.then_some((offset, Some(offset + range_len - 1)));
        let download: Download<FileMetadata> =
            match client.download("files/download", &PathArg { path }, range) {
                Ok(d) => d,
                Err(e) if pinned.is_none() && ranged && is_unsatisfiable_range(&e) => {
                    // An empty file has no byte 0 to range over; ask for it whole (it is empty, or
                    // the host's body cap bounds it if it grew in between).
                    ranged = false;
                    continue;
                }
                // The stored record said downloadable, Dropbox says export only: it changed kind.
                Err(e) if pinned.is_none() && is_unsupported_file(&e) => {
                    return export(client, sink, &record);
                }
                Err(e) => return Err(not_found_or(e, id)),
            };
        match &pinned {
            Some(meta) if download.result.rev != meta.rev => {
                return Err(ConnectorError::Integrity(format!(
                    "{id}: Dropbox served revision {} in the middle of revision {}",
                    download.result.rev, meta.rev
                )));
            }
            Some(_) => {}
            None if record.revision.as_deref() != Some(download.result.rev.as_str()) => {
                client.host().log(
                    Level::Info,
                    &format!("{id} changed since the last sync; reading its current revision"),
                );
            }
            None => {}
        }
        let meta = pinned.get_or_insert(download.result);
        let size = meta.size;
        check_position(
            id,
            download.status,
            download.content_range.as_deref(),
            offset,
        )?;
        let body = download.body;
        if body.is_empty() && offset < size {
            return Err(ConnectorError::Transient(format!(
                "{id}: empty response at offset {offset} of {size}"
            )));
        }
        if offset + body.len() as u64 > size {
            return Err(ConnectorError::Integrity(format!(
                "{id}: received {} bytes of a {size}-byte file",
                offset + body.len() as u64
            )));
        }
        hasher.update(&body);
        write_chunked(sink, &body, cap)?;
        offset += body.len() as u64;
        if offset == size {
            break;
        }
    }
    let expected = pinned.and_then(|m| m.content_hash);
    let computed = hasher.finalize();
    match expected {
        Some(expected) if expected != computed => Err(ConnectorError::Integrity(format!(
            "{id}: content hash {computed} does not match the {expected} Dropbox published"
        ))),
        expected => Ok(StreamSummary {
            size: offset,
            content_hash: Some(computed),
            verified: expected.is_some(),
            mime_type: record.mime_type.clone(),
        }),
    }
}

/// The bytes of a response must start where the previous ones ended.
fn check_position(
    id: &str,
    status: u16,
    content_range: Option<&str>,
    offset: u64,
) -> Result<(), ConnectorError> {
    // A server that ignores Range sends the whole file from 0 with a 200: fine for the first
    // request (the host caps the body), wrong for any later one.
    if status == 200 {
        return if offset == 0 {
            Ok(())
        } else {
            Err(ConnectorError::Internal(format!(
                "{id}: the server ignored the range request at offset {offset}"
            )))
        };
    }
    // `Content-Range: bytes <first>-<last>/<total>`; a 206 without one is taken at its word.
    let first = content_range
        .and_then(|v| v.trim().strip_prefix("bytes "))
        .and_then(|v| v.split('-').next())
        .map(|v| v.trim().parse::<u64>());
    match first {
        Some(Ok(first)) if first == offset => Ok(()),
        Some(Ok(first)) => Err(ConnectorError::Internal(format!(
            "{id}: asked for bytes from {offset}, the server sent bytes from {first}"
        ))),
        Some(Err(_)) => Err(ConnectorError::Internal(format!(
            "{id}: unreadable Content-Range {:?}",
            content_range.unwrap_or_default()
        ))),
        None => Ok(()),
    }
}

/// A document Dropbox can only export (Paper, cloud documents), in the format the record names
/// (its MIME type says what that is). Exports are small documents and come in one response,
/// which the host's body cap bounds; when Dropbox publishes an `export_hash` (the content-hash
/// algorithm over the exported bytes) it is checked before anything reaches the sink.
fn export(
    client: &mut DropboxClient<'_>,
    sink: &mut dyn Sink,
    record: &Record,
) -> Result<StreamSummary, ConnectorError> {
    let id = &record.external_id;
    let arg = ExportArg {
        path: id.clone(),
        export_format: record.export_format.clone(),
    };
    let download: Download<ExportResult> = client
        .download("files/export", &arg, None)
        .map_err(|e| not_found_or(e, id))?;
    let mut hasher = ContentHasher::new();
    hasher.update(&download.body);
    let computed = hasher.finalize();
    let expected = download.result.export_metadata.export_hash;
    if let Some(expected) = &expected
        && *expected != computed
    {
        return Err(ConnectorError::Integrity(format!(
            "{id}: export hash {computed} does not match the {expected} Dropbox published"
        )));
    }
    write_chunked(sink, &download.body, client.limits().max_response_body)?;
    Ok(StreamSummary {
        size: download.body.len() as u64,
        content_hash: Some(computed),
        verified: expected.is_some(),
        mime_type: record.mime_type.clone(),
    })
}

/// Fetch the records' metadata again; record only what changed, and remove what is gone.
pub fn reindex_records(
    client: &mut DropboxClient<'_>,
    store: &mut dyn Store,
    ids: &[String],
) -> Result<ReindexSummary, ConnectorError> {
    let settings = client.host().config();
    let cfg = config::parse(&settings)?;
    // A removal is two-phase: marked, then purged with every other marked record. While a
    // re-listing or a change feed is unfinished, records it has not seen again (or whose move
    // it has not reached yet) are marked too, so purging now would delete live records or turn
    // a move into a deletion and a creation; the sync purges what is gone when it completes.
    let mut state = load_state(store, client.host())?;
    let listing_unfinished = state.as_ref().is_some_and(|s| s.removals_pending());
    let no_orphans = std::collections::BTreeSet::new();
    let mut totals = crate::model::ApplySummary::default();
    let mut summary = ReindexSummary::default();
    // The contract: each id is checked once however often it is given, and an id the store
    // does not hold is skipped, not counted.
    let mut seen = std::collections::HashSet::new();
    for id in ids.iter().filter(|id| seen.insert(id.as_str())) {
        let (record, pending) = match stored_record(store, id) {
            Ok(found) => found,
            Err(ConnectorError::NotFound(_)) => {
                client
                    .host()
                    .log(Level::Warn, &format!("reindex: no record {id}; skipped"));
                continue;
            }
            // A store that cannot answer is not a record that is missing.
            Err(e) => return Err(e),
        };
        summary.checked += 1;
        let mut follow_ups = Vec::new();
        let mut changes = match client
            .rpc::<_, Metadata>("files/get_metadata", Some(&PathArg { path: id.clone() }))
        {
            // The planner compares with the stored record: an unchanged record gives no event.
            Ok(meta) => {
                let context = PageContext {
                    orphans: &no_orphans,
                    after_mark_all: false,
                };
                let plan = plan_page(store, vec![meta], &cfg.filters, None, context)?;
                follow_ups.extend(plan.follow_ups.into_iter().map(|(_, f)| f));
                plan.changes
            }
            // Already marked by a sync that will purge it: nothing to add.
            Err(e) if e.route_error().is_some_and(|r| r.is_not_found()) && pending => continue,
            Err(e) if e.route_error().is_some_and(|r| r.is_not_found()) => {
                vec![Change::RemoveSubtree(record.path_lower_str().to_string())]
            }
            Err(e) => return Err(e.into()),
        };
        // Whatever the plan marked (this record, or one it displaced) is removed now.
        let marks = changes
            .iter()
            .any(|c| matches!(c, Change::RemoveSubtree(_) | Change::Replace { .. }));
        if marks {
            if listing_unfinished {
                client.host().log(
                    Level::Info,
                    &format!(
                        "reindex: {id} is gone; its removal completes with the unfinished listing"
                    ),
                );
            } else {
                changes.push(Change::Purge);
            }
        }
        if changes.is_empty() {
            continue;
        }
        // A folder renamed in place owes its descendants their new display path: that work is
        // recorded in the sync state with the change that makes it necessary, so a crash
        // cannot leave it undone (see `sync::follow`).
        let sync_point = match state.as_mut() {
            Some(state) if !follow_ups.is_empty() => {
                state.follow.append(&mut follow_ups);
                Some(state.sync_point()?)
            }
            _ => None,
        };
        // Each record is applied on its own so later lookups see earlier results.
        totals.add(store.apply(changes, sync_point)?);
        if let Some(state) = state.as_mut()
            && !state.follow.is_empty()
        {
            finish_follow_ups(store, state, &mut totals)?;
        }
    }
    summary.content_updates = totals.content_updates;
    summary.metadata_updates = totals.metadata_updates;
    summary.deletions = totals.deletions;
    Ok(summary)
}
