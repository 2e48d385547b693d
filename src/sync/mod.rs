//! Full and incremental sync of the account into the records store.
//!
//! A sync reads the owner, the account's shared links (once, paged), then pages of
//! `list_folder` (no stored cursor) or `list_folder/continue` (a stored cursor). Each page is
//! planned (`planner`) and written in batches of the configured size; the page's cursor goes
//! into the same transaction as the page's last batch, so a crash repeats at most one page and
//! a replayed page changes nothing. Removals are two-phase (see the store's contract): they are
//! purged, with their events, when the change feed reaches `has_more: false`.
//!
//! A `reset` from Dropbox (or a change of filters) starts a full re-listing that first marks
//! every record pending removal: what the listing sees again is restored, the rest is deleted
//! at the end. Nothing is lost, nothing is duplicated.

pub mod filters;
pub mod mapping;
pub mod planner;

use serde::{Deserialize, Serialize};

use crate::api::types::{
    CreateSharedLinkArg, FullAccount, ListFolderArg, ListFolderContinueArg, ListFolderResult,
    ListSharedLinksArg, ListSharedLinksResult, SharedLinkMetadata, SharedLinkSettings,
};
use crate::client::{CallError, DropboxClient};
use crate::config::{self, SyncConfig};
use crate::model::{
    ApplySummary, Change, ChangeKind, ConnectorError, GroupKind, Permission, Record, RecordGroup,
    Role, SyncKind, SyncPoint, SyncSummary, User,
};
use crate::ports::{HostEnv, Level, Store, StoreError};
use planner::{SharedLinks, plan_page};

pub const CURSOR_KEY: &str = "dropbox.cursor";
/// Entries per listing page (the maximum Dropbox accepts).
pub const PAGE_LIMIT: u32 = 2000;
/// More shared links than this are not held in memory; shared state is then left as stored.
const MAX_SHARED_LINKS: usize = 200_000;

/// What is stored under `CURSOR_KEY`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    pub cursor: String,
    /// The filters the cursor's records were selected with.
    pub filters: String,
    /// A full listing is in progress (its pages so far are committed).
    #[serde(default)]
    pub listing: bool,
    /// The change feed has more pages: removals marked so far wait for the sequence's end to be
    /// purged (a move may still restore them).
    #[serde(default)]
    pub unfinished: bool,
}

impl SyncState {
    /// Records marked for removal may still be restored by the rest of the sequence.
    pub fn removals_pending(&self) -> bool {
        self.listing || self.unfinished
    }
}

impl From<StoreError> for ConnectorError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Storage(m) => ConnectorError::Transient(format!("records store: {m}")),
            other => ConnectorError::Internal(format!("records store: {other}")),
        }
    }
}

pub fn load_state(
    store: &mut dyn Store,
    host: &mut dyn HostEnv,
) -> Result<Option<SyncState>, ConnectorError> {
    let Some(raw) = store.get_sync_point(CURSOR_KEY)? else {
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

/// Write changes in batches of `batch_size`; the last batch carries the sync point.
fn write_batches(
    store: &mut dyn Store,
    changes: Vec<Change>,
    batch_size: usize,
    sync_point: Option<SyncPoint>,
    totals: &mut ApplySummary,
) -> Result<(), ConnectorError> {
    let batch_size = batch_size.max(1);
    let mut changes = changes;
    loop {
        let rest = if changes.len() > batch_size {
            changes.split_off(batch_size)
        } else {
            Vec::new()
        };
        let last = rest.is_empty();
        let summary = store.apply(changes, if last { sync_point.clone() } else { None })?;
        totals.add(summary);
        if last {
            return Ok(());
        }
        changes = rest;
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
fn list_shared_links(
    client: &mut DropboxClient<'_>,
) -> Result<Option<SharedLinks>, ConnectorError> {
    let mut links = SharedLinks::default();
    let mut cursor: Option<String> = None;
    loop {
        let arg = ListSharedLinksArg {
            path: None,
            cursor: cursor.clone(),
            direct_only: None,
        };
        let page: LenientLinksPage = match client.rpc("sharing/list_shared_links", Some(&arg)) {
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
            (true, Some(next)) => cursor = Some(next),
            _ => return Ok(Some(links)),
        }
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

/// Bring the stored shared state in line with the links, touching only records whose state
/// differs (an incremental sync does not walk every record).
fn reconcile_shared(
    store: &mut dyn Store,
    links: &SharedLinks,
    batch_size: usize,
    totals: &mut ApplySummary,
) -> Result<(), ConnectorError> {
    let mut changes = Vec::new();
    let shared_now = store.list_shared()?;
    let mut seen = std::collections::HashSet::new();
    for record in shared_now {
        seen.insert(record.external_id.clone());
        let url = links
            .url_for(&record.external_id, &record.path_lower)
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
            updated.shared_url = links.by_path.get(&record.path_lower).cloned();
            changes.push(Change::Upsert {
                record: updated,
                event: ChangeKind::Metadata,
            });
        }
    }
    if !changes.is_empty() {
        write_batches(store, changes, batch_size, None, totals)?;
    }
    Ok(())
}

/// Opt-in preview links: a link for each new file that has none, with the most private
/// audience the account allows; an existing link is reused.
fn create_preview_links(
    client: &mut DropboxClient<'_>,
    store: &mut dyn Store,
    ids: &[String],
    batch_size: usize,
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
        write_batches(store, changes, batch_size, None, totals)?;
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
                    &format!("no preview link for {}: {e}", record.path_lower),
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

    let account: FullAccount = client.rpc::<(), _>("users/get_current_account", None)?;
    let (owner, group, permissions) = owner_and_group(&account);
    store.put_owner(owner, group, permissions)?;

    let fingerprint = cfg.filters.fingerprint();
    let stored = load_state(store, client.host())?;
    let (mut kind, mut cursor, mut fresh_listing) = match stored {
        None => (SyncKind::Full, None, true),
        Some(state) if state.filters != fingerprint => {
            client.host().log(
                Level::Info,
                "the filters changed: re-listing the account to apply them",
            );
            (SyncKind::Resync, None, true)
        }
        Some(state) if state.listing => (SyncKind::Full, Some(state.cursor), true),
        Some(state) => (SyncKind::Incremental, Some(state.cursor), false),
    };
    // A listing starts by marking everything pending; only the first page of it does that.
    let mut mark_all = cursor.is_none();

    let links = list_shared_links(client)?;

    let mut totals = ApplySummary::default();
    let mut pages: u32 = 0;
    let mut entries: u64 = 0;
    let mut interrupted = false;
    let mut created_unshared: Vec<String> = Vec::new();
    let mut plan_time = std::time::Duration::ZERO;
    loop {
        let page: ListFolderResult = match &cursor {
            None => {
                let arg = ListFolderArg {
                    path: String::new(),
                    recursive: true,
                    include_deleted: false,
                    include_mounted_folders: true,
                    include_non_downloadable_files: true,
                    limit: Some(PAGE_LIMIT),
                };
                client.rpc("files/list_folder", Some(&arg))?
            }
            Some(c) => {
                let arg = ListFolderContinueArg { cursor: c.clone() };
                match client.rpc("files/list_folder/continue", Some(&arg)) {
                    Ok(page) => page,
                    Err(e)
                        if e.route_error()
                            .is_some_and(|r| r.is_reset() || r.is_not_found()) =>
                    {
                        client.host().log(
                            Level::Warn,
                            "Dropbox reset the change cursor: re-listing the whole account; records not seen again will be removed",
                        );
                        kind = SyncKind::Resync;
                        cursor = None;
                        fresh_listing = true;
                        mark_all = true;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let plan_started = std::time::Instant::now();
        let mut plan = plan_page(store, &page.entries, &cfg.filters, links.as_ref())?;
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
        if mark_all {
            changes.push(Change::MarkAllPending);
            mark_all = false;
        }
        changes.append(&mut plan.changes);
        if !page.has_more {
            changes.push(Change::Purge);
        }
        let state = SyncState {
            cursor: page.cursor.clone(),
            filters: fingerprint.clone(),
            listing: fresh_listing && page.has_more,
            unfinished: page.has_more,
        };
        let value =
            serde_json::to_string(&state).map_err(|e| ConnectorError::Internal(e.to_string()))?;
        write_batches(
            store,
            changes,
            cfg.batch_size,
            Some(SyncPoint {
                key: CURSOR_KEY.into(),
                value,
            }),
            &mut totals,
        )?;
        pages += 1;
        entries += page.entries.len() as u64;
        client.host().progress(
            if fresh_listing { "listing" } else { "changes" },
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
        cursor = Some(page.cursor);
    }

    if !interrupted {
        if let Some(links) = &links {
            reconcile_shared(store, links, cfg.batch_size, &mut totals)?;
        }
        if cfg.create_preview_links && !created_unshared.is_empty() {
            create_preview_links(
                client,
                store,
                &created_unshared,
                cfg.batch_size,
                &mut totals,
            )?;
        }
    }
    // Measured in the guest, for benchmarks (`host-test bench` reads this line).
    let decode_us = client.decode_time().as_micros();
    client.host().log(
        Level::Debug,
        &format!(
            "timings: decode_us={decode_us} plan_us={}",
            plan_time.as_micros()
        ),
    );
    Ok(SyncSummary {
        kind,
        pages,
        entries,
        applied: totals,
        api_calls: client.calls(),
        interrupted,
    })
}
