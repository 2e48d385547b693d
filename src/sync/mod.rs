//! Full and incremental sync of the account into the records store.
//!
//! A sync reads the owner, the account's shared links (once, paged), then pages of
//! `list_folder` (no stored cursor) or `list_folder/continue` (a stored cursor). The first of
//! each goes out together (`Opening`), so a sync waits one round trip before its first page,
//! not three; their answers are read, and written, in that order. Each page is
//! planned (`planner`) and written in batches of the configured size; the page's cursor goes
//! into the same transaction as the page's last batch, so a crash repeats at most one page and
//! a replayed page changes nothing. The next page is requested (`http.start`) before the current
//! one is planned and written, so the host fetches while the guest works; it is read only once
//! the current page is committed, so the stored cursor is always the committed page's, and at
//! most one page waits in memory. A page holds at most `page_limit` entries, so that its body
//! fits the host's response-body cap (`host.limits`).
//!
//! The store keeps one opaque sync point: its `position` is the JSON of `SyncState` (the
//! cursor, the filters it was taken with, and what is still owed), its `status` says
//! `listing` while a full listing is unfinished and `current` otherwise, with a line for people
//! that never shows the cursor. Removals are two-phase (see the store's contract): they are
//! purged, with their events, when the change feed reaches `has_more: false`.
//!
//! A `reset` from Dropbox (or a change of filters) starts a full re-listing that first marks
//! every record pending removal: what the listing sees again is restored, the rest is deleted
//! at the end. Nothing is lost, nothing is duplicated.
//!
//! The invariant that makes this safe across crashes, failed writes and changed settings:
//! **at every commit, the stored sync state says exactly what the store's pending-removal marks
//! mean.** Every batch carries a sync state, not only a page's last one. A batch that is not
//! its page's last stores the position the page was fetched from (none for a listing's first
//! page) and says that a sequence is unfinished (and whether it is a listing): the marks it
//! leaves are then owned by a sequence that the next run resumes from that position, replaying
//! the page (a replay changes nothing that was applied) and purging only when that sequence
//! reaches its end. A purge is only ever sent in the batch that ends a sequence. A run that
//! does not resume the sequence (the filters changed, Dropbox reset the cursor) starts a
//! re-listing, whose first batch marks everything: every earlier mark is then one the
//! re-listing itself made, and it restores whatever it sees again. So no run can purge a mark
//! that it did not make or that its own sequence cannot justify.

pub mod filters;
pub mod follow;
pub mod hashing;
pub mod mapping;
pub mod planner;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::api::types::{
    CreateSharedLinkArg, FullAccount, ListFolderArg, ListFolderContinueArg, ListFolderResult,
    ListSharedLinksArg, ListSharedLinksResult, SharedLinkMetadata, SharedLinkSettings,
};
use crate::client::{CallError, DropboxClient, PendingCall};
use crate::config::{self, SyncConfig};
use crate::model::{
    ApplySummary, Change, ChangeKind, ConnectorError, DropboxPath, GroupKind, Permission,
    PhaseTime, Record, RecordGroup, Role, SyncKind, SyncPhase, SyncPoint, SyncStatus, SyncSummary,
    User,
};
use crate::ports::{HostEnv, HttpError, Level, Store};
use planner::{FollowUp, PagePlan, SharedLinks, plan_page};

/// Resets in one run beyond which the run gives up (a service that resets every fresh cursor
/// would otherwise keep the connector re-listing forever).
const MAX_RESETS_PER_RUN: u32 = 3;
/// Consecutive pages with `has_more` and nothing in them (folder entries, or shared links)
/// beyond which the run gives up.
pub(crate) const MAX_EMPTY_PAGES: u32 = 50;
/// Times the same cursor may come back with `has_more` before the run gives up.
const MAX_REPEATED_CURSOR: u32 = 3;
/// Entries per listing page (the maximum Dropbox accepts).
pub const PAGE_LIMIT: u32 = 2000;
/// Bytes of JSON a listing entry is assumed to take, generously (a file entry with long names,
/// a hash and sharing info is under 1 KiB; Dropbox may also send "slightly more" entries than
/// the limit, host-test/emulator/DROPBOX-API.md §3.1), so that a page fits the host's body cap.
const ENTRY_BYTES_ESTIMATE: u64 = 2048;

/// The `limit` of a listing whose pages must fit `max_response_body` bytes: 2000 entries from a
/// 4 MiB cap up, proportionally fewer below.
pub fn page_limit(max_response_body: u64) -> u32 {
    u32::try_from((max_response_body / ENTRY_BYTES_ESTIMATE).clamp(1, u64::from(PAGE_LIMIT)))
        .unwrap_or(PAGE_LIMIT)
}
/// More shared links than this are not held in memory; shared state is then left as stored.
const MAX_SHARED_LINKS: usize = 200_000;

/// The sync point's opaque `position`, as JSON (see the module's doc for what it guarantees).
/// Only this connector reads it; the host sees the `status` that `sync_point` derives from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// Where the next run resumes. `None`: a listing has started (its marks are committed) but
    /// none of its pages is complete; the next run lists from the start again.
    pub cursor: Option<String>,
    /// The filters the cursor's records were selected with.
    pub filters: String,
    /// A full listing is in progress (its pages so far are committed).
    #[serde(default)]
    pub listing: bool,
    /// The change feed has more pages, or the page at `cursor` is partly applied: removals
    /// marked so far wait for the sequence's end to be purged (a move may still restore them).
    #[serde(default)]
    pub unfinished: bool,
    /// Folders whose descendants still have to follow them (see `follow`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub follow: Vec<FollowUp>,
    /// Parent paths that listed children wait for (see `planner::PagePlan::orphans_added`).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub orphans: BTreeSet<String>,
    /// Pages of the unfinished listing committed so far (for the status line only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub listed_pages: u32,
    /// The unfinished listing replaces a complete one (a reset, or changed filters), so a run
    /// that resumes it reports `resync`, not `full` (for the summary only).
    #[serde(default, skip_serializing_if = "is_false")]
    pub resync: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl SyncState {
    /// Records marked for removal may still be restored by the rest of the sequence.
    pub fn removals_pending(&self) -> bool {
        self.listing || self.unfinished
    }

    /// Something is owed before the account can be called current.
    pub fn work_pending(&self) -> bool {
        self.cursor.is_none() || self.removals_pending() || !self.follow.is_empty()
    }

    pub fn sync_point(&self) -> Result<SyncPoint, ConnectorError> {
        Ok(SyncPoint {
            position: serde_json::to_string(self)
                .map_err(|e| ConnectorError::Internal(e.to_string()))?,
            status: self.status(),
        })
    }

    /// What the host may show: the phase, and a line that never contains the cursor.
    pub fn status(&self) -> SyncStatus {
        let mut detail = if self.listing || self.cursor.is_none() {
            match self.listed_pages {
                0 => "listing, starting".to_string(),
                1 => "listing, 1 page in".to_string(),
                n => format!("listing, {n} pages in"),
            }
        } else if self.unfinished {
            "current; reading the rest of the changes".to_string()
        } else {
            "current".to_string()
        };
        if !self.follow.is_empty() {
            detail.push_str(&format!(
                "; {} folder(s) owe their contents an update",
                self.follow.len()
            ));
        }
        if self.filters != crate::config::Filters::default().fingerprint() {
            detail.push_str("; filtered");
        }
        SyncStatus {
            phase: if self.listing || self.cursor.is_none() {
                SyncPhase::Listing
            } else {
                SyncPhase::Current
            },
            detail,
        }
    }
}

pub fn load_state(
    store: &mut dyn Store,
    host: &mut dyn HostEnv,
) -> Result<Option<SyncState>, ConnectorError> {
    let Some(raw) = store.get_sync_point()? else {
        return Ok(None);
    };
    match serde_json::from_str::<SyncState>(&raw) {
        Ok(state) => Ok(Some(state)),
        Err(e) => {
            host.log(
                Level::Warn,
                &format!("the stored sync point is unreadable ({e}); starting a full re-listing"),
            );
            Ok(None)
        }
    }
}

/// Bring descendants in line with the folders `state` names, committing the remaining work
/// with each chunk.
pub fn finish_follow_ups(
    store: &mut dyn Store,
    state: &mut SyncState,
    totals: &mut ApplySummary,
) -> Result<(), ConnectorError> {
    let mut follow = std::mem::take(&mut state.follow);
    let template = state.clone();
    follow::run(
        store,
        &mut follow,
        &mut |remaining| {
            SyncState {
                follow: remaining.to_vec(),
                ..template.clone()
            }
            .sync_point()
        },
        totals,
    )?;
    state.follow = follow;
    Ok(())
}

/// The account owner, the record group, and the owner's permission on it.
pub fn owner_and_group(account: &FullAccount) -> (User, RecordGroup, Vec<Permission>) {
    let owner = User {
        external_id: account.account_id.clone(),
        email: account.email.clone(),
        display_name: account.name.display_name.clone(),
    };
    let group = RecordGroup {
        external_id: account.account_id.clone(),
        name: format!("Dropbox - {}", account.email),
        kind: GroupKind::Drive,
    };
    let permissions = vec![Permission {
        principal_external_id: account.account_id.clone(),
        role: Role::Owner,
    }];
    (owner, group, permissions)
}

/// How much one `apply` carries: at most `changes` changes (the tenant's `batch_size`) and
/// about `bytes` bytes of them, since a host may cap how many bytes one call copies
/// (`host.limits.max-response-body`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimit {
    pub changes: usize,
    pub bytes: u64,
}

impl BatchLimit {
    /// Half the host's cap: the rest is room for the sync point and the encoding's overhead.
    pub fn new(batch_size: usize, max_response_body: u64) -> Self {
        BatchLimit {
            changes: batch_size.max(1),
            bytes: (max_response_body / 2).max(1),
        }
    }
}

/// About how many bytes a change takes on the way to the host (its text, plus a margin for the
/// fixed-size fields and the encoding).
fn approx_bytes(change: &Change) -> u64 {
    const OVERHEAD: usize = 128;
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let size = match change {
        Change::Upsert { record: r, .. } => {
            r.external_id.len()
                + text(&r.revision)
                + r.name.len()
                + r.path
                    .as_ref()
                    .map_or(0, |p| p.display.len() + p.lower.len())
                + text(&r.parent_external_id)
                + r.mime_type.len()
                + text(&r.content_hash)
                + text(&r.client_modified)
                + text(&r.server_modified)
                + text(&r.export_format)
                + text(&r.web_url)
                + text(&r.shared_url)
        }
        Change::Remove(s) | Change::RemoveSubtree(s) => s.len(),
        Change::Replace {
            path_lower,
            new_external_id,
            ..
        } => path_lower.len() + new_external_id.len(),
        Change::MarkAllPending | Change::Purge => 0,
    };
    u64::try_from(size + OVERHEAD).unwrap_or(u64::MAX)
}

/// Write changes in batches within `limit`. Each batch carries `point(end, last)`: the sync
/// point for the store as it is once the changes before index `end` are applied (`last`: the
/// batch is the last). A `replace` is never the last change of a batch: the upsert that takes
/// its place commits with it, so no commit leaves a path emptied by a replacement whose
/// newcomer a replay could no longer recognise as one.
fn write_batches(
    store: &mut dyn Store,
    changes: Vec<Change>,
    limit: BatchLimit,
    point: &mut dyn FnMut(usize, bool) -> Result<Option<SyncPoint>, ConnectorError>,
    totals: &mut ApplySummary,
) -> Result<(), ConnectorError> {
    let batch_size = limit.changes.max(1);
    let mut changes = changes.into_iter().peekable();
    let mut end = 0usize;
    loop {
        let mut batch = Vec::with_capacity(batch_size.min(4096) + 1);
        let mut bytes = 0u64;
        for change in changes.by_ref() {
            let is_replace = matches!(change, Change::Replace { .. });
            bytes = bytes.saturating_add(approx_bytes(&change));
            batch.push(change);
            if (batch.len() >= batch_size || bytes >= limit.bytes) && !is_replace {
                break;
            }
        }
        end += batch.len();
        let last = changes.peek().is_none();
        let sync_point = point(end, last)?;
        totals.add(store.apply(batch, sync_point)?);
        if last {
            return Ok(());
        }
    }
}

/// Write changes that leave no marks and owe no sync state (shared state, preview links).
fn write_plain(
    store: &mut dyn Store,
    changes: Vec<Change>,
    limit: BatchLimit,
    totals: &mut ApplySummary,
) -> Result<(), ConnectorError> {
    write_batches(store, changes, limit, &mut |_, _| Ok(None), totals)
}

/// The sync state of each batch of a page (see the module's doc).
struct PageCommit<'a> {
    /// The state before the page: where the page was fetched from, what was owed.
    before: &'a SyncState,
    /// The position after the page, and whether the sequence goes on.
    next_cursor: &'a str,
    has_more: bool,
    /// Offset of the plan's changes in the written list (a leading mark-all).
    offset: usize,
    plan: &'a PagePlan,
}

impl PageCommit<'_> {
    fn state(&self, end: usize, last: bool) -> SyncState {
        let committed = |index: &usize| index + self.offset < end;
        let mut follow = self.before.follow.clone();
        follow.extend(
            self.plan
                .follow_ups
                .iter()
                .filter(|(i, _)| committed(i))
                .map(|(_, f)| f.clone()),
        );
        let mut orphans = self.before.orphans.clone();
        for (i, path) in &self.plan.orphans_added {
            if committed(i) {
                orphans.insert(path.clone());
            }
        }
        for (i, path) in &self.plan.orphans_resolved {
            if committed(i) {
                orphans.remove(path);
            }
        }
        if last && !self.has_more {
            // The sequence is complete: a parent never listed will not come any more.
            orphans.clear();
        }
        if last {
            let listing = self.before.listing && self.has_more;
            SyncState {
                cursor: Some(self.next_cursor.to_string()),
                filters: self.before.filters.clone(),
                listing,
                unfinished: self.has_more,
                follow,
                orphans,
                listed_pages: if listing {
                    self.before.listed_pages.saturating_add(1)
                } else {
                    0
                },
                resync: listing && self.before.resync,
            }
        } else {
            // Part of the page is committed: its marks belong to a sequence that resumes at
            // the page's own position.
            SyncState {
                cursor: self.before.cursor.clone(),
                filters: self.before.filters.clone(),
                listing: self.before.listing,
                unfinished: true,
                follow,
                orphans,
                listed_pages: self.before.listed_pages,
                resync: self.before.resync,
            }
        }
    }
}

/// The token lacks the sharing scope, or the account may not use sharing: the sync carries on
/// with sharing state as stored. An invalid token, or one that cannot be refreshed, is not
/// this: it fails the sync like any other call would.
fn is_permission_problem(e: &CallError) -> bool {
    use crate::api::{ApiError, AuthError};
    matches!(
        e,
        CallError::Api {
            error: ApiError::Auth(AuthError::MissingScope(_)) | ApiError::AccessDenied(_),
            ..
        }
    )
}

/// A page of `sharing/list_shared_links` whose links are decoded one by one, so that a link of
/// a shape this connector cannot read (a future subtype) costs that link, not the sync.
#[derive(Deserialize)]
struct LenientLinksPage {
    links: Vec<serde_json::Value>,
    has_more: bool,
    #[serde(default)]
    cursor: Option<String>,
}

/// Every shared link of the account (files and folders), listed once.
/// `first`: the first page's request, if the opening started it.
fn list_shared_links(
    client: &mut DropboxClient<'_>,
    mut first: Option<PendingCall>,
) -> Result<Option<SharedLinks>, ConnectorError> {
    let mut links = SharedLinks::default();
    let mut cursor: Option<String> = None;
    let mut repeated = 0u32;
    let mut empty_pages = 0u32;
    loop {
        let result = client.rpc_or_finish(
            first.take(),
            "sharing/list_shared_links",
            Some(&links_page_arg(cursor.clone())),
        );
        let page: LenientLinksPage = match result {
            Ok(page) => page,
            Err(e) if is_permission_problem(&e) => {
                client.host().log(
                    Level::Warn,
                    &format!(
                        "shared links are not readable ({e}); sharing state is left as stored"
                    ),
                );
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        // A service that keeps answering `has_more` with empty pages and fresh cursors would
        // hold the sync here forever; the folder listing has the same bound.
        if page.has_more && page.links.is_empty() {
            empty_pages += 1;
            if empty_pages > MAX_EMPTY_PAGES {
                return Err(ConnectorError::Internal(format!(
                    "sharing/list_shared_links returned {empty_pages} pages in a row with has_more and no links; the shared links cannot be listed completely"
                )));
            }
        } else {
            empty_pages = 0;
        }
        let mut unreadable = 0usize;
        for value in page.links {
            match SharedLinkMetadata::deserialize(value) {
                Ok(link) => add_link(&mut links, &link),
                Err(_) => unreadable += 1,
            }
        }
        if unreadable > 0 {
            client.host().log(
                Level::Warn,
                &format!("skipped {unreadable} shared link(s) of an unknown shape"),
            );
        }
        if links.by_id.len() + links.by_path.len() > MAX_SHARED_LINKS {
            client.host().log(Level::Warn, "more shared links than this connector keeps in memory; sharing state is left as stored");
            return Ok(None);
        }
        match (page.has_more, page.cursor) {
            (false, _) => return Ok(Some(links)),
            (true, Some(next)) if cursor.as_deref() == Some(next.as_str()) => {
                repeated += 1;
                if repeated >= MAX_REPEATED_CURSOR {
                    return Err(ConnectorError::Internal(format!(
                        "sharing/list_shared_links returned the same cursor {repeated} times with has_more; the shared links cannot be listed completely"
                    )));
                }
            }
            (true, Some(next)) => {
                repeated = 0;
                cursor = Some(next);
            }
            // An incomplete list would unshare every record whose link is on a page it did
            // not get.
            (true, None) => {
                return Err(ConnectorError::Internal(
                    "sharing/list_shared_links said has_more without a cursor; the shared links cannot be listed completely".into(),
                ));
            }
        }
    }
}

/// The argument of a page of every shared link of the account: the first (no cursor) or the
/// one after `cursor`.
fn links_page_arg(cursor: Option<String>) -> ListSharedLinksArg {
    ListSharedLinksArg {
        path: None,
        cursor,
        direct_only: None,
    }
}

/// The first listing page's argument: the whole account, recursively, `limit` entries a page.
fn list_folder_arg(limit: u32) -> ListFolderArg {
    ListFolderArg {
        path: String::new(),
        recursive: true,
        include_deleted: false,
        include_mounted_folders: true,
        include_non_downloadable_files: true,
        limit: Some(limit),
    }
}

/// The argument of the page of changes after `cursor`.
fn continue_arg(cursor: &str) -> ListFolderContinueArg {
    ListFolderContinueArg {
        cursor: cursor.to_string(),
    }
}

/// The requests a sync makes before its first page: the owner, the first page of shared links,
/// the first page of the listing or of the changes. None needs another's answer, so they are
/// started together and the sync waits one round trip for them instead of three (at 300 ms a
/// round trip, a small incremental sync takes a third of the time). As many are started as the
/// host lets be pending at once (`limits.max-pending-requests`), in the order they are needed;
/// the others are sent when they are needed, one by one, as before. Nothing is written before
/// the answers are read, in the same order as before: the owner, the shared links, the page.
/// A sync that fails early leaves the others unread; a host drops them with the instance.
struct Opening {
    account: Option<PendingCall>,
    links: Option<PendingCall>,
    listing: Option<PendingCall>,
}

impl Opening {
    /// `cursor`: the stored cursor the changes continue from; none for a listing from the start.
    fn start(
        client: &mut DropboxClient<'_>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Opening, ConnectorError> {
        let mut opening = Opening {
            account: None,
            links: None,
            listing: None,
        };
        let allowed = client.limits().max_pending_requests;
        // One pending request is what every host allows and what the listing's own prefetch
        // uses: with no more than that, nothing is started ahead.
        if allowed < 2 {
            return Ok(opening);
        }
        opening.account = Some(client.start_rpc::<()>("users/get_current_account", None)?);
        opening.links =
            Some(client.start_rpc("sharing/list_shared_links", Some(&links_page_arg(None)))?);
        if allowed >= 3 {
            opening.listing = Some(match cursor {
                None => client.start_rpc("files/list_folder", Some(&list_folder_arg(limit)))?,
                Some(cursor) => {
                    client.start_rpc("files/list_folder/continue", Some(&continue_arg(cursor)))?
                }
            });
        }
        Ok(opening)
    }
}

fn add_link(links: &mut SharedLinks, link: &SharedLinkMetadata) {
    // A link with an expiry is still the item's link; Dropbox refuses it once expired.
    if let Some(id) = &link.id {
        links
            .by_id
            .entry(id.clone())
            .or_insert_with(|| link.url.clone());
    } else if let Some(path) = &link.path_lower {
        links
            .by_path
            .entry(path.clone())
            .or_insert_with(|| link.url.clone());
    }
}

/// Records per page when the shared records are found by paging through every record.
const SHARED_SCAN_PAGE: u32 = 1000;

/// Every live record marked shared. One `list-shared` answers at most the host's list cap
/// (10,000) and refuses a tenant with more (`invalid`, never a part of them); such a tenant's
/// records are paged through instead (`list-records`), which reads every record, but only for
/// an account with that many shared items.
fn shared_records(store: &mut dyn Store) -> Result<Vec<Record>, ConnectorError> {
    match store.list_shared() {
        Ok(records) => Ok(records),
        Err(crate::ports::StoreError::Invalid(_)) => {
            let mut shared = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = store.list_records(after.as_deref(), SHARED_SCAN_PAGE)?;
                let full = page.len() == SHARED_SCAN_PAGE as usize;
                after = page.last().map(|r| r.external_id.clone());
                shared.extend(page.into_iter().filter(|r| r.is_shared));
                if !full {
                    return Ok(shared);
                }
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Bring the stored shared state in line with the links, touching only records whose state
/// differs (an incremental sync does not walk every record).
fn reconcile_shared(
    store: &mut dyn Store,
    links: &SharedLinks,
    batch: BatchLimit,
    totals: &mut ApplySummary,
) -> Result<(), ConnectorError> {
    let mut changes = Vec::new();
    let shared_now = shared_records(store)?;
    let mut seen = hashing::PageSet::default();
    for record in shared_now {
        seen.insert(record.external_id.clone());
        let url = links
            .url_for(&record.external_id, record.path_lower_str())
            .cloned();
        if url != record.shared_url || url.is_none() {
            let mut updated = record.clone();
            updated.is_shared = url.is_some();
            updated.shared_url = url;
            if updated != record {
                changes.push(Change::Upsert {
                    record: updated,
                    event: ChangeKind::Metadata,
                });
            }
        }
    }
    let missing: Vec<String> = links
        .by_id
        .keys()
        .filter(|id| !seen.contains(*id))
        .cloned()
        .collect();
    for chunk in missing.chunks(1000) {
        for stored in store.get_records(chunk.to_vec())? {
            if stored.pending_removal || stored.record.is_shared {
                continue;
            }
            let mut updated = stored.record.clone();
            updated.is_shared = true;
            updated.shared_url = links.by_id.get(&updated.external_id).cloned();
            changes.push(Change::Upsert {
                record: updated,
                event: ChangeKind::Metadata,
            });
        }
    }
    let by_path: Vec<String> = links.by_path.keys().cloned().collect();
    for chunk in by_path.chunks(1000) {
        for record in store.find_by_paths(chunk.to_vec())?.into_iter().flatten() {
            if record.is_shared || seen.contains(&record.external_id) {
                continue;
            }
            let mut updated = record.clone();
            updated.is_shared = true;
            updated.shared_url = links.by_path.get(record.path_lower_str()).cloned();
            changes.push(Change::Upsert {
                record: updated,
                event: ChangeKind::Metadata,
            });
        }
    }
    if !changes.is_empty() {
        write_plain(store, changes, batch, totals)?;
    }
    Ok(())
}

/// Opt-in preview links: a link for each new file that has none, with the most private
/// audience the account allows; an existing link is reused.
fn create_preview_links(
    client: &mut DropboxClient<'_>,
    store: &mut dyn Store,
    ids: &[String],
    batch: BatchLimit,
    totals: &mut ApplySummary,
) -> Result<(), ConnectorError> {
    let mut changes = Vec::new();
    for chunk in ids.chunks(500) {
        for stored in store.get_records(chunk.to_vec())? {
            if stored.pending_removal || stored.record.is_shared {
                continue;
            }
            let Some(url) = create_link(client, &stored.record)? else {
                continue;
            };
            let mut updated: Record = stored.record.clone();
            updated.is_shared = true;
            updated.shared_url = Some(url);
            changes.push(Change::Upsert {
                record: updated,
                event: ChangeKind::Metadata,
            });
        }
    }
    if !changes.is_empty() {
        write_plain(store, changes, batch, totals)?;
    }
    Ok(())
}

fn create_link(
    client: &mut DropboxClient<'_>,
    record: &Record,
) -> Result<Option<String>, ConnectorError> {
    // Most private first; a basic account may only create public links (settings_error).
    let audiences = [Some("no_one"), Some("team"), None];
    for audience in audiences {
        let arg = CreateSharedLinkArg {
            path: record.external_id.clone(),
            settings: audience.map(|a| SharedLinkSettings {
                audience: Some(a.into()),
                ..Default::default()
            }),
        };
        match client
            .rpc::<_, SharedLinkMetadata>("sharing/create_shared_link_with_settings", Some(&arg))
        {
            Ok(link) => return Ok(Some(link.url)),
            Err(e) => {
                let Some(route) = e.route_error() else {
                    return Err(e.into());
                };
                if let Some(existing) = route.shared_link_already_exists() {
                    if let Some(url) = existing {
                        return Ok(Some(url));
                    }
                    let arg = ListSharedLinksArg {
                        path: Some(record.external_id.clone()),
                        cursor: None,
                        direct_only: Some(true),
                    };
                    let found: ListSharedLinksResult =
                        client.rpc("sharing/list_shared_links", Some(&arg))?;
                    return Ok(found.links.into_iter().next().map(|l| l.url));
                }
                if route.tag == "settings_error" {
                    continue;
                }
                client.host().log(
                    Level::Warn,
                    &format!("no preview link for {}: {e}", record.path_lower_str()),
                );
                return Ok(None);
            }
        }
    }
    Ok(None)
}

/// Run one sync: full when no cursor is stored, incremental otherwise.
pub fn run_sync(
    client: &mut DropboxClient<'_>,
    store: &mut dyn Store,
) -> Result<SyncSummary, ConnectorError> {
    let settings = client.host().config();
    let cfg: SyncConfig = config::parse(&settings)?;

    let fingerprint = cfg.filters.fingerprint();
    let mut totals = ApplySummary::default();
    let mut stored = load_state(store, client.host())?;
    // Work an earlier run committed but did not finish comes first: it is consistent with the
    // store as it is now.
    if let Some(state) = stored.as_mut()
        && !state.follow.is_empty()
    {
        finish_follow_ups(store, state, &mut totals)?;
    }
    // A listing from the start: its first batch marks every record pending removal.
    let fresh = || SyncState {
        cursor: None,
        filters: fingerprint.clone(),
        listing: true,
        unfinished: true,
        follow: Vec::new(),
        orphans: BTreeSet::new(),
        listed_pages: 0,
        resync: false,
    };
    let (mut kind, mut state) = match stored {
        None => (SyncKind::Full, fresh()),
        Some(state) if state.filters != fingerprint => {
            client.host().log(
                Level::Info,
                "the filters changed: re-listing the account to apply them",
            );
            (
                SyncKind::Resync,
                SyncState {
                    resync: true,
                    ..fresh()
                },
            )
        }
        // The contract's kinds: resuming a listing is `full` or `resync` as the listing was.
        Some(state) if state.listing || state.cursor.is_none() => (
            if state.resync {
                SyncKind::Resync
            } else {
                SyncKind::Full
            },
            SyncState {
                listing: true,
                ..state
            },
        ),
        Some(state) => (SyncKind::Incremental, state),
    };
    // Entries per listing page: as many as Dropbox gives, unless the host's body cap is small.
    let mut limit = page_limit(client.limits().max_response_body);
    let opening = Opening::start(client, state.cursor.as_deref(), limit)?;
    let mut next_page = opening.listing;

    let account: FullAccount =
        client.rpc_or_finish::<(), _>(opening.account, "users/get_current_account", None)?;
    let (owner, group, permissions) = owner_and_group(&account);
    store.put_owner(owner, group, permissions)?;
    // A listing starts by marking everything pending; only the first page of it does that.
    let mut mark_all = state.cursor.is_none();
    if mark_all {
        // A new listing: what earlier pages waited for is the new listing's to find again.
        state.orphans.clear();
    }

    let links = list_shared_links(client, opening.links)?;

    let mut pages: u32 = 0;
    let mut entries: u64 = 0;
    let mut interrupted = false;
    let mut created_unshared: Vec<String> = Vec::new();
    let mut plan_time = std::time::Duration::ZERO;
    let mut resets = 0u32;
    let mut empty_pages = 0u32;
    let mut repeated_cursor = 0u32;
    let batch = BatchLimit::new(cfg.batch_size, client.limits().max_response_body);
    loop {
        // The request of this page, if it was started ahead: by the opening, or while the
        // previous page was planned and written (see below).
        let prefetched = next_page.take();
        let mut page: ListFolderResult = match (&state.cursor, prefetched) {
            (None, prefetched) => {
                let result = client.rpc_or_finish(
                    prefetched,
                    "files/list_folder",
                    Some(&list_folder_arg(limit)),
                );
                match result {
                    Ok(page) => page,
                    // The page did not fit the host's body cap: ask for fewer entries. The
                    // limit stays in the cursor, so the listing's later pages are smaller too.
                    Err(CallError::Transport {
                        error: HttpError::BodyTooLarge(cap),
                        ..
                    }) if limit > 1 => {
                        limit /= 2;
                        client.host().log(
                            Level::Warn,
                            &format!(
                                "a listing page exceeded the host's {cap}-byte body cap; asking for {limit} entries per page"
                            ),
                        );
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            (Some(c), prefetched) => {
                // A prefetched request was started with the cursor the previous page
                // committed (the one in `state` now), or by the opening with the stored one.
                let result = client.rpc_or_finish(
                    prefetched,
                    "files/list_folder/continue",
                    Some(&continue_arg(c)),
                );
                match result {
                    Ok(page) => page,
                    Err(e)
                        if e.route_error()
                            .is_some_and(|r| r.is_reset() || r.is_not_found()) =>
                    {
                        resets += 1;
                        if resets > MAX_RESETS_PER_RUN {
                            return Err(ConnectorError::Transient(format!(
                                "Dropbox reset the change cursor {resets} times in one sync; the re-listing resumes on the next run"
                            )));
                        }
                        client.host().log(
                            Level::Warn,
                            "Dropbox reset the change cursor: re-listing the whole account; records not seen again will be removed",
                        );
                        kind = SyncKind::Resync;
                        state = SyncState {
                            follow: std::mem::take(&mut state.follow),
                            resync: true,
                            ..fresh()
                        };
                        mark_all = true;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if page.has_more {
            if page.entries.is_empty() {
                empty_pages += 1;
                if empty_pages > MAX_EMPTY_PAGES {
                    return Err(ConnectorError::Internal(format!(
                        "Dropbox returned {empty_pages} pages in a row with has_more and no entries; stopping, nothing was removed"
                    )));
                }
            } else {
                empty_pages = 0;
            }
            if state.cursor.as_deref() == Some(page.cursor.as_str()) {
                repeated_cursor += 1;
                if repeated_cursor >= MAX_REPEATED_CURSOR {
                    return Err(ConnectorError::Internal(format!(
                        "Dropbox returned the same cursor {repeated_cursor} times with has_more; stopping, nothing was removed"
                    )));
                }
            } else {
                repeated_cursor = 0;
            }
        }
        // Fetch the next page while this one is planned and written: its request carries this
        // page's cursor, which this page's last batch commits. Nothing of it is stored before
        // this page is, so a crash still repeats at most one page, and one page at most waits
        // in memory. Not when the host wants to stop: that request would be wasted.
        if page.has_more && !client.host().should_stop() {
            next_page = Some(client.start_rpc(
                "files/list_folder/continue",
                Some(&continue_arg(&page.cursor)),
            )?);
        }
        let page_entries = page.entries.len() as u64;
        let plan_started = std::time::Instant::now();
        let mut plan = plan_page(
            store,
            std::mem::take(&mut page.entries),
            &cfg.filters,
            links.as_ref(),
            planner::PageContext {
                orphans: &state.orphans,
                after_mark_all: mark_all,
            },
        )?;
        plan_time += plan_started.elapsed();
        for skipped in &plan.skipped {
            client
                .host()
                .log(Level::Warn, &format!("skipped entry {skipped}"));
        }
        // Only kept when preview links are wanted: on a large account it grows with the account.
        if cfg.create_preview_links {
            created_unshared.append(&mut plan.created_unshared_files);
        }
        let mut changes = Vec::with_capacity(plan.changes.len() + 2);
        let offset = usize::from(mark_all);
        if mark_all {
            changes.push(Change::MarkAllPending);
            mark_all = false;
        }
        changes.append(&mut plan.changes);
        if !page.has_more {
            changes.push(Change::Purge);
        }
        let next = {
            let commit = PageCommit {
                before: &state,
                next_cursor: &page.cursor,
                has_more: page.has_more,
                offset,
                plan: &plan,
            };
            let mut last_state = None;
            write_batches(
                store,
                changes,
                batch,
                &mut |end, last| {
                    let batch_state = commit.state(end, last);
                    let point = batch_state.sync_point()?;
                    if last {
                        last_state = Some(batch_state);
                    }
                    Ok(Some(point))
                },
                &mut totals,
            )?;
            last_state.unwrap_or_else(|| commit.state(usize::MAX, true))
        };
        state = next;
        if !state.follow.is_empty() {
            finish_follow_ups(store, &mut state, &mut totals)?;
        }
        pages += 1;
        entries += page_entries;
        client.host().progress(
            if kind == SyncKind::Incremental {
                "changes"
            } else {
                "listing"
            },
            pages,
            entries,
            None,
        );
        if !page.has_more {
            break;
        }
        if client.host().should_stop() {
            client.host().log(
                Level::Info,
                "stopping at a page boundary as asked; the next sync resumes from here",
            );
            interrupted = true;
            break;
        }
    }

    if !interrupted {
        if let Some(links) = &links {
            reconcile_shared(store, links, batch, &mut totals)?;
        }
        if cfg.create_preview_links && !created_unshared.is_empty() {
            create_preview_links(client, store, &created_unshared, batch, &mut totals)?;
        }
    }
    // Measured in the guest, for the host's measurements (`sync-summary.phases`); the log line
    // is for people reading a debug log.
    let micros = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let decode_us = micros(client.decode_time());
    let plan_us = micros(plan_time);
    client.host().log(
        Level::Debug,
        &format!("timings: decode_us={decode_us} plan_us={plan_us}"),
    );
    Ok(SyncSummary {
        kind,
        pages,
        entries,
        applied: totals,
        api_calls: client.calls(),
        retries: client.retries(),
        interrupted,
        phases: vec![
            PhaseTime {
                name: "decode".into(),
                microseconds: decode_us,
            },
            PhaseTime {
                name: "plan".into(),
                microseconds: plan_us,
            },
        ],
    })
}

#[cfg(test)]
mod batch_tests {
    use super::*;

    #[test]
    fn batches_close_at_the_byte_budget_as_well_as_the_count() {
        let upsert = |i: usize| Change::Upsert {
            record: Record {
                external_id: format!("id:{i}"),
                revision: None,
                name: "x".repeat(1000),
                path: crate::model::record_path(&format!("/f{i}"), format!("/f{i}")),
                parent_external_id: None,
                kind: crate::model::RecordKind::File,
                mime_type: String::new(),
                size: 0,
                content_hash: None,
                client_modified: None,
                server_modified: None,
                is_downloadable: true,
                export_format: None,
                web_url: None,
                is_shared: false,
                shared_url: None,
            },
            event: ChangeKind::Created,
        };
        let mut store = crate::sync::planner::planner_fuzz::FakeStore::default();
        let mut ends = Vec::new();
        let changes: Vec<Change> = (0..10).map(upsert).collect();
        // About 1.1 KB a change against a 3000-byte budget: three a batch, though 100 may go.
        write_batches(
            &mut store,
            changes,
            BatchLimit {
                changes: 100,
                bytes: 3000,
            },
            &mut |end, _| {
                ends.push(end);
                Ok(None)
            },
            &mut ApplySummary::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ends, [3, 6, 9, 10]);
        // And the count still bounds a batch of small changes.
        let mut ends = Vec::new();
        let small: Vec<Change> = (0..5).map(|i| Change::Remove(format!("id:{i}"))).collect();
        write_batches(
            &mut store,
            small,
            BatchLimit::new(2, 1 << 20),
            &mut |end, _| {
                ends.push(end);
                Ok(None)
            },
            &mut ApplySummary::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ends, [2, 4, 5]);
    }
}
