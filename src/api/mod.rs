//! Dropbox HTTP API v2: wire types, header-safe JSON, timestamps, and error classification.
//!
//! Everything that knows what Dropbox puts on the wire lives here, so the rest of the connector
//! works with typed values:
//!
//! - [`types`]: serde types of the requests and results we use, decoded leniently (unknown
//!   fields ignored, unknown `.tag`s kept as `Unknown`, absent and `null` optional fields alike),
//!   because Dropbox adds fields and tags without notice. [`decode`] is the one JSON entry point
//!   and reports *what* was wrong without dumping the body into logs.
//! - [`header_json`]: the `Dropbox-API-Arg` / `Dropbox-API-Result` header encoding.
//! - [`time`]: `DropboxTimestamp` and `Date` without a date-time dependency.
//! - [`error`]: the single place where a non-2xx response is turned into an [`ApiError`],
//!   dispatching on the HTTP status and the JSON `.tag`, never on `error_summary` text.

pub mod error;
pub mod header_json;
mod text;
pub mod time;
pub mod types;

pub use error::{ApiError, AuthError, RouteError, classify};
pub use header_json::{decode_api_result, to_header_safe_json};
pub use types::{DecodeError, decode};

#[cfg(test)]
mod fuzz_tests;
