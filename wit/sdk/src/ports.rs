//! The connector's view of its host: one small trait per imported interface. The wasm adapter
//! implements them over the WIT imports; tests implement them with in-memory fakes, which is
//! why the optional parts (`Http::start`/`wait`) have defaults.

use std::time::Duration;

use crate::model::{
    ApplySummary, Change, HostLimits, Permission, Record, RecordGroup, StoredRecord, SyncPoint,
    User,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The host attaches the tenant's bearer token.
    pub authenticated: bool,
    /// None: the host's default (`HostLimits::default_timeout_ms`).
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("destination not allowed: {0}")]
    DestinationNotAllowed(String),
    #[error("timeout: {0}")]
    Timeout(String),
    #[error("connection failed: {0}")]
    Connection(String),
    #[error("response body larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("no credentials: {0}")]
    NoCredentials(String),
}

/// A request begun with [`Http::start`]; give it back to [`Http::wait`] for its response.
#[derive(Debug)]
#[must_use = "a started request is only useful once waited for"]
pub struct PendingRequest(Pending);

#[derive(Debug)]
enum Pending {
    /// Running in the host under this id.
    Started(u64),
    /// Already answered (a port without background requests sends at `start`).
    Done(Box<Result<HttpResponse, HttpError>>),
}

impl PendingRequest {
    /// A request the host runs under `id`.
    pub fn started(id: u64) -> Self {
        PendingRequest(Pending::Started(id))
    }

    /// A request whose outcome is already known.
    pub fn done(outcome: Result<HttpResponse, HttpError>) -> Self {
        PendingRequest(Pending::Done(Box::new(outcome)))
    }

    /// The host's id, for a request it runs; `Err` gives back the outcome already known.
    pub fn into_id(self) -> Result<u64, Result<HttpResponse, HttpError>> {
        match self.0 {
            Pending::Started(id) => Ok(id),
            Pending::Done(outcome) => Err(*outcome),
        }
    }
}

/// Outbound HTTP through the host (the `http` interface).
pub trait Http {
    /// Send one request and read the whole response.
    fn send(&mut self, request: HttpRequest) -> Result<HttpResponse, HttpError>;

    /// Begin a request; collect it with [`Http::wait`]. The default sends it at once, which is
    /// correct (the contract allows a host to do the work only at `wait`), just not concurrent.
    fn start(&mut self, request: HttpRequest) -> Result<PendingRequest, HttpError> {
        Ok(PendingRequest::done(self.send(request)))
    }

    /// The response of a request begun with [`Http::start`].
    fn wait(&mut self, pending: PendingRequest) -> Result<HttpResponse, HttpError> {
        match pending.into_id() {
            Err(outcome) => outcome,
            Ok(id) => Err(HttpError::InvalidRequest(format!(
                "request {id} was started by another port"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    #[error("re-authentication required: {0}")]
    ReauthenticationRequired(String),
    #[error("refresh failed: {0}")]
    Transient(String),
}

/// The `credentials` interface: the connector can only ask for a fresh token.
pub trait Credentials {
    fn refresh_access_token(&mut self) -> Result<(), RefreshError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("store conflict: {0}")]
    Conflict(String),
    #[error("store failure: {0}")]
    Storage(String),
    #[error("invalid store batch: {0}")]
    Invalid(String),
}

/// A failed store call as the operation's error: a database failure may pass (transient); a
/// conflict or a malformed batch is a bug (internal).
impl From<StoreError> for crate::model::ConnectorError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Storage(m) => Self::Transient(format!("records store: {m}")),
            other => Self::Internal(format!("records store: {other}")),
        }
    }
}

/// The `records` interface: the tenant's records store, for every source.
pub trait Records {
    /// Apply the changes in order, with the sync point, in one transaction.
    fn apply(
        &mut self,
        changes: Vec<Change>,
        sync_point: Option<SyncPoint>,
    ) -> Result<ApplySummary, StoreError>;
    /// The stored position (the last applied sync point's `position`).
    fn get_sync_point(&mut self) -> Result<Option<String>, StoreError>;
    fn get_records(&mut self, ids: Vec<String>) -> Result<Vec<StoredRecord>, StoreError>;
    /// Live records whose id comes after `after` (byte order), in that order, at most `limit`.
    fn list_records(&mut self, after: Option<&str>, limit: u32) -> Result<Vec<Record>, StoreError>;
    fn list_shared(&mut self) -> Result<Vec<Record>, StoreError>;
    fn put_owner(
        &mut self,
        owner: User,
        group: RecordGroup,
        permissions: Vec<Permission>,
    ) -> Result<(), StoreError>;
    fn clear(&mut self) -> Result<(), StoreError>;
}

/// The `paths` interface: path lookups for hierarchical sources.
pub trait Paths {
    /// For each path, the live record at it (same order as the input).
    fn find_by_paths(&mut self, paths: Vec<String>) -> Result<Vec<Option<Record>>, StoreError>;
    /// Live records below `path_lower/`, in path order, after `after`, at most `limit`.
    fn list_subtree(
        &mut self,
        path_lower: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Record>, StoreError>;
}

/// The whole store as one object: what [`crate::Ports::store`] holds. Implemented for every
/// type that implements both interfaces.
pub trait Store: Records + Paths {}

impl<T: Records + Paths + ?Sized> Store for T {}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    #[error("the reader went away: {0}")]
    Closed(String),
    #[error("the host could not store the content: {0}")]
    Storage(String),
}

/// The `content-sink` interface. A chunk is at most `HostLimits::max_response_body` bytes.
pub trait Sink {
    fn write(&mut self, chunk: &[u8]) -> Result<(), SinkError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// The `host` interface, plus the clock and randomness a guest takes from WASI.
pub trait HostEnv {
    fn log(&mut self, level: Level, message: &str);
    fn progress(&mut self, phase: &str, pages: u32, entries: u64, total: Option<u64>);
    fn config(&mut self) -> Vec<(String, String)>;
    fn should_stop(&mut self) -> bool;
    fn sleep(&mut self, duration: Duration);
    /// What the host allows; read it once per operation.
    fn limits(&mut self) -> HostLimits;
    /// Unix seconds.
    fn now(&mut self) -> i64;
    fn random(&mut self) -> u64;
}
