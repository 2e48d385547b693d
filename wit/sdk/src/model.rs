//! The contract's types as plain Rust. They mirror `wit/connector.wit` one for one (the WIT
//! comments are the reference), so a connector's logic runs natively and in tests; the wasm
//! adapter converts at the edge.

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
    /// The connector does not offer the operation; the host should not ask again.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// Content in a hierarchy.
    File,
    /// A container in a hierarchy.
    Folder,
    /// An entry of a flat source.
    Item,
}

/// Where a record sits in a hierarchical source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordPath {
    /// Built from the ancestors' names, for display.
    pub display: String,
    /// The source's case-folded path: the identity of a location, compared byte for byte.
    pub lower: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub external_id: String,
    pub revision: Option<String>,
    pub name: String,
    /// Present for a hierarchical source's records, absent for a flat source's.
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
    /// The record's `path.lower`, if it has a path.
    pub fn path_lower(&self) -> Option<&str> {
        self.path.as_ref().map(|p| p.lower.as_str())
    }

    /// The record's `path.display`, if it has a path.
    pub fn path_display(&self) -> Option<&str> {
        self.path.as_ref().map(|p| p.display.as_str())
    }
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
    /// Mark one record (by external id) pending removal; its descendants are not touched.
    Remove(String),
    /// Hierarchical sources: another item took the place of whatever lives at `path_lower`.
    Replace {
        path_lower: String,
        new_external_id: String,
        keep_children: bool,
    },
    /// Hierarchical sources: mark the record at this `path.lower` and its descendants.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPhase {
    /// A full listing is under way (or was interrupted).
    Listing,
    /// The store reflects the source as of the position.
    Current,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStatus {
    pub phase: SyncPhase,
    /// One line for people; never a secret (nor a raw cursor).
    pub detail: String,
}

/// The connector's opaque position in the source, and its status for the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPoint {
    pub position: String,
    pub status: SyncStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    Full,
    Incremental,
    Resync,
}

/// Time a connector spent in one named part of its work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseTime {
    pub name: String,
    pub microseconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSummary {
    pub kind: SyncKind,
    pub pages: u32,
    pub entries: u64,
    /// What the store did (created, content updates, metadata updates, deletions).
    pub applied: ApplySummary,
    pub api_calls: u32,
    /// Requests repeated after a transient failure or a rate limit.
    pub retries: u32,
    pub interrupted: bool,
    pub phases: Vec<PhaseTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedUrl {
    pub url: String,
    /// Unix seconds.
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

/// What the host allows (the contract's `host.host-limits`); read once per operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    /// The largest response body, and the largest list one host call copies (a sink chunk).
    pub max_response_body: u64,
    pub default_timeout_ms: u64,
    pub max_timeout_ms: u64,
    pub max_pending_requests: u32,
}

impl HostLimits {
    /// The smallest body cap a host may state (1 MiB).
    pub const MIN_RESPONSE_BODY: u64 = 1 << 20;
}

impl Default for HostLimits {
    /// What the contract guarantees of every host: the floor, not any host's actual values.
    fn default() -> Self {
        HostLimits {
            max_response_body: Self::MIN_RESPONSE_BODY,
            default_timeout_ms: 30_000,
            max_timeout_ms: 30_000,
            max_pending_requests: 1,
        }
    }
}

// ---- the manifest (the contract's `manifest-types`) ----

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthConfig {
    pub authorize_url: String,
    pub token_url: String,
    pub revoke_url: Option<String>,
    pub scopes: Vec<String>,
    pub extra_authorize_params: Vec<(String, String)>,
    pub pkce_required: bool,
    pub redirect_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    Integer { min: i64, max: i64 },
    Boolean,
    Text,
    Choice(Vec<String>),
    TextList,
    Date,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigField {
    pub key: String,
    pub label: String,
    pub description: String,
    pub field_type: FieldType,
    pub default_value: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStrategy {
    Manual,
    Scheduled,
    ChangeNotifications,
}

/// The schedules a connector supports and suggests; the host owns each tenant's choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub strategies: Vec<SyncStrategy>,
    pub default_strategy: SyncStrategy,
    pub default_interval_minutes: u32,
    pub min_interval_minutes: u32,
    pub max_interval_minutes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    pub display_name: String,
    pub version: String,
    pub app_group: String,
    pub description: String,
    pub oauth: Option<OAuthConfig>,
    pub allowed_hosts: Vec<String>,
    pub config_fields: Vec<ConfigField>,
    pub schedule: Schedule,
}
