//! The records store: every tenant's records, sync point and status, owner, credentials,
//! settings, and the ordered event stream a downstream indexer consumes.
//!
//! The store is a trait, [`RecordStore`], over the runtime's own types (below), not the
//! WIT-generated ones: a backend knows nothing of the component model, and the conversions live
//! with the imports (`crate::imports`). [`SqliteStore`] is the embedded implementation; another
//! backend implements the same trait and the rest of the runtime does not change
//! (`Arc<dyn RecordStore>` everywhere).
//!
//! What every backend guarantees (the contract's `records` and `paths` interfaces say it for the
//! guest):
//! - every method takes the tenant explicitly; the sandbox passes the tenant it was created for,
//!   never a name the guest supplies;
//! - `apply` runs a whole batch and its sync point in one transaction: all of it or nothing;
//! - removal is two-phase: `remove`, `remove-subtree`, `replace` and `mark-all-pending` only
//!   flag records as pending removal; an upsert of the same id clears the flag (a move keeps its
//!   identity even when the source reports the deletion and the new location apart); `purge`
//!   deletes what is still flagged, with one `deleted` event per record;
//! - at most one live record of a tenant has a given `path.lower`; records without a path
//!   (flat sources) never conflict;
//! - paths are compared byte for byte: the source folds case, the store never does.

mod checkpointer;
#[cfg(test)]
pub(crate) mod contract;
pub mod pg;
mod recent_ids;
mod sqlite;
mod wal_vfs;
pub mod writer_lock;

pub use pg::PgStore;
pub use sqlite::SqliteStore;

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::secrets::{Keyring, SecretError};
pub use writer_lock::{WriterLockError, WriterRight};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid batch: {0}")]
    Invalid(String),
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("cannot open the database {path}: {message}")]
    Open { path: String, message: String },
    #[error(
        "the database has schema version {found}; this host uses version {wanted} \
         (records of contract 0.1 components cannot be read by a 0.2 host): start from a new database file"
    )]
    SchemaVersion { found: i64, wanted: i64 },
    #[error("injected failure after {0} changes")]
    Injected(usize),
    /// The driver's own text is only the kind ("db error"); `describe` adds the server's
    /// message.
    #[error("database error: {}", pg::describe(.0))]
    Postgres(#[from] postgres::Error),
    /// Sealing or opening a stored secret failed (no key, the wrong key, a tampered value).
    #[error("{0}")]
    Secret(#[from] SecretError),
    /// A fenced write (PostgreSQL, several workers) whose lease is no longer the tenant's
    /// current one: another worker holds the tenant now, nothing of the write was committed.
    #[error("{0}")]
    LeaseLost(#[from] pg::LeaseLost),
}

/// The store `--db` names: a `postgres://` or `postgresql://` URL selects PostgreSQL, anything
/// else is the path of a SQLite file. Credentials are sealed with `keyring` in both.
pub fn open(db: &str, keyring: Keyring) -> Result<Arc<dyn RecordStore>, StoreError> {
    if pg::is_postgres_url(db) {
        Ok(Arc::new(PgStore::connect(db, keyring)?))
    } else {
        Ok(Arc::new(
            SqliteStore::open(Path::new(db))?.with_keyring(keyring),
        ))
    }
}

/// What a record is (the contract's `record-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    File,
    Folder,
    Item,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::File => "file",
            RecordKind::Folder => "folder",
            RecordKind::Item => "item",
        }
    }

    pub fn parse(s: &str) -> Option<RecordKind> {
        match s {
            "file" => Some(RecordKind::File),
            "folder" => Some(RecordKind::Folder),
            "item" => Some(RecordKind::Item),
            _ => None,
        }
    }
}

/// Where a record of a hierarchical source sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordPath {
    pub display: String,
    /// The source's case-folded path: the identity of a location, compared byte for byte.
    pub lower: String,
}

/// An item of the source, as stored (the contract's `record`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub external_id: String,
    pub revision: Option<String>,
    pub name: String,
    /// None for a flat source's records.
    pub path: Option<RecordPath>,
    pub parent_external_id: Option<String>,
    pub kind: RecordKind,
    pub mime_type: String,
    pub size: u64,
    pub content_hash: Option<String>,
    pub client_modified: Option<String>,
    pub server_modified: Option<String>,
    pub is_downloadable: bool,
    pub export_format: Option<String>,
    pub web_url: Option<String>,
    pub is_shared: bool,
    pub shared_url: Option<String>,
}

impl Record {
    pub fn path_lower(&self) -> Option<&str> {
        self.path.as_ref().map(|p| p.lower.as_str())
    }

    pub fn path_display(&self) -> Option<&str> {
        self.path.as_ref().map(|p| p.display.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub record: Record,
    pub pending_removal: bool,
}

/// How an upsert changed the record, and so which event it emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    Content,
    Metadata,
    ContentAndMetadata,
    Unchanged,
}

/// One change of a batch (the contract's `change`).
// Upserts are nearly every change of a batch: boxing the record would add an allocation to
// each to save space only in the rare path changes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Upsert {
        record: Record,
        event: ChangeKind,
    },
    /// Mark one record pending removal (no descendants).
    Remove(String),
    Replace {
        path_lower: String,
        new_external_id: String,
        keep_children: bool,
    },
    RemoveSubtree(String),
    MarkAllPending,
    Purge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPhase {
    Listing,
    Current,
}

impl SyncPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncPhase::Listing => "listing",
            SyncPhase::Current => "current",
        }
    }

    pub fn parse(s: &str) -> Option<SyncPhase> {
        match s {
            "listing" => Some(SyncPhase::Listing),
            "current" => Some(SyncPhase::Current),
            _ => None,
        }
    }
}

/// Where the connector's sync stands, for people: stored beside the opaque position, in columns
/// the host owns and reads (the position itself is the connector's alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStatus {
    pub phase: SyncPhase,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPoint {
    /// Opaque: only the connector reads it.
    pub position: String,
    pub status: SyncStatus,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplySummary {
    pub created: u64,
    pub content_updates: u64,
    pub metadata_updates: u64,
    pub deletions: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub external_id: String,
    pub email: String,
    pub display_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    Drive,
    Folder,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordGroup {
    pub external_id: String,
    pub name: String,
    pub kind: GroupKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Owner,
    Writer,
    Commenter,
    Reader,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub principal_external_id: String,
    pub role: Role,
}

/// How the host's last sync of a tenant ended: typed, so the scheduler never reads the note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The connector returned and was not interrupted: the store is current.
    Ok,
    /// The connector returned early because the host asked it to stop.
    Interrupted,
    /// The invocation failed (a connector error or a host error).
    Failed,
}

impl SyncOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncOutcome::Ok => "ok",
            SyncOutcome::Interrupted => "interrupted",
            SyncOutcome::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<SyncOutcome> {
        match s {
            "ok" => Some(SyncOutcome::Ok),
            "interrupted" => Some(SyncOutcome::Interrupted),
            "failed" => Some(SyncOutcome::Failed),
            _ => None,
        }
    }
}

/// One entry of the ordered event stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub seq: i64,
    pub tenant: String,
    pub batch: i64,
    pub kind: String,
    pub external_id: String,
    /// None for records without a path (flat sources).
    pub path_lower: Option<String>,
    pub record: Value,
}

/// What `host-test status` shows of a tenant.
#[derive(Debug, Clone, Default)]
pub struct TenantStatus {
    pub tenant: String,
    pub needs_reauth: bool,
    pub last_sync_at: Option<i64>,
    pub last_sync_outcome: Option<SyncOutcome>,
    /// The host's one-line note of the last sync, for people only.
    pub last_sync_note: Option<String>,
    pub records: u64,
    /// The status the connector stored with its last sync point; None before the first.
    pub sync_status: Option<SyncStatus>,
    pub owner: Option<User>,
}

/// Stored OAuth credentials of a tenant. Never leaves the host.
#[derive(Clone, Default, PartialEq)]
pub struct StoredCredentials {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_at: Option<i64>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub account_id: Option<String>,
}

impl std::fmt::Debug for StoredCredentials {
    // Secrets are never printed, even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredentials")
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_at", &self.expires_at)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("account_id", &self.account_id)
            .finish()
    }
}

/// The records store. Object-safe: the runtime holds an `Arc<dyn RecordStore>`.
pub trait RecordStore: Send + Sync {
    // ---- tenants ----

    fn ensure_tenant(&self, tenant: &str) -> Result<(), StoreError>;
    /// Where this tenant's requests go instead of the declared hosts (an emulator, a test
    /// server); `None` for the real service.
    fn set_tenant_api_url(&self, tenant: &str, api_url: Option<&str>) -> Result<(), StoreError>;
    fn tenant_api_url(&self, tenant: &str) -> Result<Option<String>, StoreError>;
    fn tenants(&self) -> Result<Vec<String>, StoreError>;
    /// The tenant's writer right across processes, held as long as the value lives, or who
    /// holds it (`holder` says who this process is). `None`: this backend's writers agree
    /// otherwise (PostgreSQL's workers: the lease), or no other process can open it.
    fn writer_right(
        &self,
        _tenant: &str,
        _holder: &str,
    ) -> Result<Option<WriterRight>, WriterLockError> {
        Ok(None)
    }

    // ---- the connector's records (the `records` and `paths` interfaces) ----

    /// Apply a batch of changes and the sync point in one transaction. A batch without a sync
    /// point keeps the stored one.
    fn apply(
        &self,
        tenant: &str,
        changes: &[Change],
        sync_point: Option<&SyncPoint>,
    ) -> Result<ApplySummary, StoreError>;
    /// The stored position (opaque); None before the first sync point and after `clear`.
    fn get_sync_point(&self, tenant: &str) -> Result<Option<String>, StoreError>;
    /// Records by id (live or pending), ids not stored absent.
    fn get_records(&self, tenant: &str, ids: &[String]) -> Result<Vec<StoredRecord>, StoreError>;
    /// Live records with an external id after `after` (byte order), in that order.
    fn list_records(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Record>, StoreError>;
    /// For each path, the live record at it (same order as the input).
    fn find_by_paths(
        &self,
        tenant: &str,
        paths: &[String],
    ) -> Result<Vec<Option<Record>>, StoreError>;
    /// Live descendants of `path` (below `path/`), in byte order of `path.lower`, after `after`.
    fn list_subtree(
        &self,
        tenant: &str,
        path: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Record>, StoreError>;
    /// Live records marked shared, at most `limit` of them (the host asks for one more than
    /// it may return, to tell "exactly the cap" from "more").
    fn list_shared(&self, tenant: &str, limit: u32) -> Result<Vec<Record>, StoreError>;
    fn put_owner(
        &self,
        tenant: &str,
        owner: &User,
        group: &RecordGroup,
        permissions: &[Permission],
    ) -> Result<(), StoreError>;
    /// Remove everything the tenant's connector stored (records, the sync point and its status,
    /// users, groups); the event stream keeps its history.
    fn clear(&self, tenant: &str) -> Result<(), StoreError>;
    /// Forget the tenant's sync point (and its status), keeping the records: the next sync
    /// finds no position and lists the source again (an operator's "re-list").
    fn delete_sync_point(&self, tenant: &str) -> Result<(), StoreError>;

    // ---- what the host reads of them ----

    /// The tenant's live records, in path order (records without a path first, by id).
    fn records(&self, tenant: &str) -> Result<Vec<Record>, StoreError>;
    fn record_count(&self, tenant: &str) -> Result<u64, StoreError>;
    /// Records marked for removal and not yet purged (zero whenever a sync completed).
    fn pending_count(&self, tenant: &str) -> Result<u64, StoreError>;
    fn owner(&self, tenant: &str) -> Result<Option<User>, StoreError>;
    fn record_groups(
        &self,
        tenant: &str,
    ) -> Result<Vec<(RecordGroup, Vec<Permission>)>, StoreError>;
    /// The sync status the connector stored with its last sync point.
    fn sync_status(&self, tenant: &str) -> Result<Option<SyncStatus>, StoreError>;
    /// Events after `since`, of one tenant or all, in order.
    fn events(&self, tenant: Option<&str>, since: i64) -> Result<Vec<Event>, StoreError>;
    fn last_event_seq(&self) -> Result<i64, StoreError>;

    // ---- credentials (host only; never exposed to a guest) ----

    fn put_credentials(&self, tenant: &str, creds: &StoredCredentials) -> Result<(), StoreError>;
    fn credentials(&self, tenant: &str) -> Result<Option<StoredCredentials>, StoreError>;
    fn delete_credentials(&self, tenant: &str) -> Result<(), StoreError>;
    fn set_needs_reauth(&self, tenant: &str, needs: bool) -> Result<(), StoreError>;

    // ---- the host's own notes and settings ----

    /// Record how the host's sync of the tenant ended (typed) and a note for people.
    fn record_sync_result(
        &self,
        tenant: &str,
        outcome: SyncOutcome,
        note: &str,
    ) -> Result<(), StoreError>;
    fn status(&self, tenant: &str) -> Result<TenantStatus, StoreError>;
    fn settings(&self, tenant: &str) -> Result<Vec<(String, String)>, StoreError>;
    fn set_setting(&self, tenant: &str, key: &str, value: &str) -> Result<(), StoreError>;

    /// Fault injection, to prove `apply` is atomic: let `calls` more `apply` calls through,
    /// then fail every later one at its change number `at_change` (None: never fail). A
    /// backend that cannot inject faults ignores it (its atomicity tests then cannot run).
    fn inject_apply_failure(&self, plan: Option<(usize, usize)>);
}

/// The record as the CLI and the event stream show it.
pub fn record_json(r: &Record) -> Value {
    json!({
        "id": r.external_id,
        "path_lower": r.path_lower(),
        "path_display": r.path_display(),
        "name": r.name,
        "kind": r.kind.as_str(),
        "rev": r.revision,
        "size": r.size,
        "content_hash": r.content_hash,
        "parent_id": r.parent_external_id,
        "server_modified": r.server_modified,
        "client_modified": r.client_modified,
        "mime_type": r.mime_type,
        "web_url": r.web_url,
        "is_shared": r.is_shared,
        "shared_url": r.shared_url,
        "is_downloadable": r.is_downloadable,
        "export_format": r.export_format,
    })
}

pub fn kind_str(kind: RecordKind) -> &'static str {
    kind.as_str()
}

pub fn role_str(role: Role) -> &'static str {
    match role {
        Role::Owner => "owner",
        Role::Writer => "writer",
        Role::Commenter => "commenter",
        Role::Reader => "reader",
    }
}
