//! The connector's own types for what crosses the WIT boundary. They mirror the contract's
//! types one for one, so the logic can run natively; `wasm` converts at the edge.

/// An error a caller can act on (the contract's `connector-error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    #[error("authorization required: {0}")]
    AuthRequired(String),
    #[error("rate limited ({reason}); retry after {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64, reason: String },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("temporary failure: {0}")]
    Transient(String),
    #[error("integrity check failed: {0}")]
    Integrity(String),
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    File,
    Folder,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub external_id: String,
    pub revision: Option<String>,
    pub name: String,
    pub path_display: String,
    pub path_lower: String,
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

/// What a change means downstream (the contract's `change-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    Content,
    Metadata,
    ContentAndMetadata,
    Unchanged,
}

/// One change to the store (the contract's `change`). Upserts dominate every batch, so the
/// record is kept inline rather than boxed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Change {
    Upsert {
        record: Record,
        event: ChangeKind,
    },
    Replace {
        path_lower: String,
        new_external_id: String,
        keep_children: bool,
    },
    RemoveSubtree(String),
    MarkAllPending,
    Purge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub record: Record,
    pub pending_removal: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplySummary {
    pub created: u64,
    pub content_updates: u64,
    pub metadata_updates: u64,
    pub deletions: u64,
}

impl ApplySummary {
    pub fn add(&mut self, other: ApplySummary) {
        self.created += other.created;
        self.content_updates += other.content_updates;
        self.metadata_updates += other.metadata_updates;
        self.deletions += other.deletions;
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPoint {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    Full,
    Incremental,
    Resync,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSummary {
    pub kind: SyncKind,
    pub pages: u32,
    pub entries: u64,
    pub applied: ApplySummary,
    pub api_calls: u32,
    pub interrupted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedUrl {
    pub url: String,
    pub expires_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    pub size: u64,
    pub content_hash: Option<String>,
    pub verified: bool,
    pub mime_type: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReindexSummary {
    pub checked: u64,
    pub content_updates: u64,
    pub metadata_updates: u64,
    pub deletions: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeHint {
    pub changes: bool,
    pub backoff_seconds: Option<u32>,
}
