//! Reading content: signed URLs, streamed and verified downloads, exports of non-downloadable
//! documents, and re-checking records against Dropbox.
//!
//! A download is a series of 4 MiB range requests pinned to one revision (`rev:`), each written
//! to the host's sink as it arrives and fed to the content hasher: guest memory holds one block
//! whatever the file's size, an interrupted request is retried from the last good offset, and
//! the result is checked against the content hash Dropbox published for that revision.

use crate::api::types::{ExportArg, FileMetadata, Metadata, PathArg, TemporaryLinkResult};
use crate::client::{CallError, DropboxClient};
use crate::config;
use crate::content_hash::{BLOCK_SIZE, ContentHasher};
use crate::model::{Change, ConnectorError, Record, RecordKind, ReindexSummary, SignedUrl, StreamSummary};
use crate::ports::{Level, Sink, SinkError, Store};
use crate::sync::planner::plan_page;

/// Temporary links live four hours.
const TEMPORARY_LINK_SECS: u64 = 4 * 3600;
const CHUNK: u64 = BLOCK_SIZE as u64;

fn live_record(store: &mut dyn Store, id: &str) -> Result<Record, ConnectorError> {
    store
        .get_records(vec![id.to_string()])?
        .into_iter()
        .find(|s| !s.pending_removal && s.record.external_id == id)
        .map(|s| s.record)
        .ok_or_else(|| ConnectorError::NotFound(format!("no record {id}")))
}

fn not_found_or(e: CallError, id: &str) -> ConnectorError {
    if e.route_error().is_some_and(|r| r.is_not_found()) {
        ConnectorError::NotFound(format!("{id} no longer exists in Dropbox"))
    } else {
        e.into()
    }
}

fn sink_error(e: SinkError) -> ConnectorError {
    ConnectorError::Transient(format!("content sink: {e}"))
}

pub fn get_signed_url(client: &mut DropboxClient<'_>, store: &mut dyn Store, id: &str) -> Result<SignedUrl, ConnectorError> {
    let record = live_record(store, id)?;
    if record.kind == RecordKind::Folder {
        return Err(ConnectorError::NotFound(format!("{id} is a folder; folders have no content")));
    }
    let result: TemporaryLinkResult = client
        .rpc("files/get_temporary_link", Some(&PathArg { path: id.to_string() }))
        .map_err(|e| not_found_or(e, id))?;
    let now = client.host().now().max(0) as u64;
    Ok(SignedUrl { url: result.link, expires_at: now + TEMPORARY_LINK_SECS })
}

pub fn stream_record(
    client: &mut DropboxClient<'_>,
    store: &mut dyn Store,
    sink: &mut dyn Sink,
    id: &str,
) -> Result<StreamSummary, ConnectorError> {
    let record = live_record(store, id)?;
    if record.kind == RecordKind::Folder {
        return Err(ConnectorError::NotFound(format!("{id} is a folder; folders have no content")));
    }
    if !record.is_downloadable {
        return export(client, sink, &record);
    }
    let mut hasher = ContentHasher::new();
    let mut offset: u64 = 0;
    // The first response fixes the revision; later ranges ask for exactly that revision.
    let mut pinned: Option<FileMetadata> = None;
    loop {
        let path = match &pinned {
            Some(meta) => format!("rev:{}", meta.rev),
            None => id.to_string(),
        };
        let size_known = pinned.as_ref().map(|m| m.size).unwrap_or(record.size);
        let range = if size_known == 0 && pinned.is_none() { None } else { Some((offset, Some(offset + CHUNK - 1))) };
        let download = match client.download::<_, FileMetadata>("files/download", &PathArg { path }, range) {
            Ok(d) => d,
            Err(e) => return Err(not_found_or(e, id)),
        };
        if let Some(meta) = &pinned {
            if download.result.rev != meta.rev {
                return Err(ConnectorError::Integrity(format!(
                    "{id}: Dropbox served revision {} in the middle of revision {}",
                    download.result.rev, meta.rev
                )));
            }
        } else {
            if record.revision.as_deref() != Some(download.result.rev.as_str()) {
                client.host().log(Level::Info, &format!("{id} changed since the last sync; reading its current revision"));
            }
            pinned = Some(download.result.clone());
        }
        let meta = pinned.as_ref().map(|m| m.size).unwrap_or(0);
        // A server that ignores Range sends the whole file from 0 with a 200.
        if download.status == 200 && offset > 0 {
            return Err(ConnectorError::Internal(format!("{id}: the server ignored the range request at offset {offset}")));
        }
        let body = download.body;
        if body.is_empty() && offset < meta {
            return Err(ConnectorError::Transient(format!("{id}: empty response at offset {offset} of {meta}")));
        }
        hasher.update(&body);
        sink.write(&body).map_err(sink_error)?;
        offset += body.len() as u64;
        if offset >= meta {
            if offset > meta {
                return Err(ConnectorError::Integrity(format!("{id}: received {offset} bytes of a {meta}-byte file")));
            }
            break;
        }
    }
    let meta = pinned.unwrap_or_default_meta();
    let computed = hasher.finalize();
    match &meta.content_hash {
        Some(expected) if *expected != computed => Err(ConnectorError::Integrity(format!(
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

trait DefaultMeta {
    fn unwrap_or_default_meta(self) -> FileMetadata;
}

impl DefaultMeta for Option<FileMetadata> {
    fn unwrap_or_default_meta(self) -> FileMetadata {
        self.unwrap_or(FileMetadata {
            name: String::new(),
            id: String::new(),
            path_lower: None,
            path_display: None,
            client_modified: String::new(),
            server_modified: String::new(),
            rev: String::new(),
            size: 0,
            content_hash: None,
            is_downloadable: true,
            export_info: None,
            sharing_info: None,
        })
    }
}

fn export(client: &mut DropboxClient<'_>, sink: &mut dyn Sink, record: &Record) -> Result<StreamSummary, ConnectorError> {
    let arg = ExportArg { path: record.external_id.clone(), export_format: record.export_format.clone() };
    let download = client
        .download::<_, serde_json::Value>("files/export", &arg, None)
        .map_err(|e| not_found_or(e, &record.external_id))?;
    sink.write(&download.body).map_err(sink_error)?;
    Ok(StreamSummary {
        size: download.body.len() as u64,
        // Exports have no published content hash to verify against.
        content_hash: None,
        verified: false,
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
    let mut summary = ReindexSummary::default();
    let mut changes: Vec<Change> = Vec::new();
    let mut removed = false;
    for id in ids {
        let Ok(record) = live_record(store, id) else {
            client.host().log(Level::Warn, &format!("reindex: no record {id}; skipped"));
            continue;
        };
        summary.checked += 1;
        match client.rpc::<_, Metadata>("files/get_metadata", Some(&PathArg { path: id.clone() })) {
            Ok(meta) => {
                let plan = plan_page(store, &[meta], &cfg.filters, None)?;
                changes.extend(plan.changes);
            }
            Err(e) if e.route_error().is_some_and(|r| r.is_not_found()) => {
                changes.push(Change::RemoveSubtree(record.path_lower.clone()));
                removed = true;
            }
            Err(e) => return Err(e.into()),
        }
        // Each record is applied on its own so later lookups see earlier results.
        if !changes.is_empty() {
            let mut batch = std::mem::take(&mut changes);
            if removed {
                batch.push(Change::Purge);
                removed = false;
            }
            let applied = store.apply(batch, None)?;
            summary.content_updates += applied.content_updates;
            summary.metadata_updates += applied.metadata_updates;
            summary.deletions += applied.deletions;
        }
    }
    Ok(summary)
}
