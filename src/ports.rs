//! The connector's view of its host: small traits for HTTP, credentials, the records store,
//! the content sink and the host's services. `wasm` implements them over the WIT imports; unit
//! tests implement them with in-memory fakes.

use std::time::Duration;

use crate::model::{
    ApplySummary, Change, Permission, Record, RecordGroup, StoredRecord, SyncPoint, User,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The host attaches the tenant's bearer token.
    pub authenticated: bool,
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

pub trait Http {
    fn send(&mut self, request: HttpRequest) -> Result<HttpResponse, HttpError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    #[error("re-authentication required: {0}")]
    ReauthenticationRequired(String),
    #[error("refresh failed: {0}")]
    Transient(String),
}

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

pub trait Store {
    fn apply(
        &mut self,
        changes: Vec<Change>,
        sync_point: Option<SyncPoint>,
    ) -> Result<ApplySummary, StoreError>;
    fn get_sync_point(&mut self, key: &str) -> Result<Option<String>, StoreError>;
    fn get_records(&mut self, ids: Vec<String>) -> Result<Vec<StoredRecord>, StoreError>;
    fn find_by_paths(&mut self, paths: Vec<String>) -> Result<Vec<Option<Record>>, StoreError>;
    fn list_shared(&mut self) -> Result<Vec<Record>, StoreError>;
    /// Live records below `path_lower/`, in path order, after `after`, at most `limit`.
    fn list_subtree(
        &mut self,
        path_lower: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Record>, StoreError>;
    fn put_owner(
        &mut self,
        owner: User,
        group: RecordGroup,
        permissions: Vec<Permission>,
    ) -> Result<(), StoreError>;
    fn clear(&mut self) -> Result<(), StoreError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    #[error("the reader went away: {0}")]
    Closed(String),
    #[error("the host could not store the content: {0}")]
    Storage(String),
}

pub trait Sink {
    fn write(&mut self, chunk: &[u8]) -> Result<(), SinkError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// The host's services that are not I/O the connector reasons about.
pub trait HostEnv {
    fn log(&mut self, level: Level, message: &str);
    fn progress(&mut self, phase: &str, pages: u32, entries: u64, total: Option<u64>);
    fn config(&mut self) -> Vec<(String, String)>;
    fn should_stop(&mut self) -> bool;
    fn sleep(&mut self, duration: Duration);
    /// Unix seconds.
    fn now(&mut self) -> i64;
    fn random(&mut self) -> u64;
}
