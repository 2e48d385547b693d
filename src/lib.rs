//! The Dropbox Personal source connector.
//!
//! Everything here except `wasm` is plain Rust that compiles and is unit-tested natively: the
//! Dropbox API types and error classification (`api`), the retry policy (`retry`), the content
//! hash (`content_hash`), the API client (`client`), the sync planner (`sync`), reading content
//! (`content`), the manifest and configuration (`manifest`, `config`), and the operations the
//! contract exports (`operations`). They reach the outside world only through the small traits
//! of `ports`; `wasm` implements those traits over the WIT imports and exports the operations.

pub mod api;
pub mod client;
pub mod config;
pub mod content;
pub mod content_hash;
pub mod manifest;
pub mod model;
pub mod operations;
pub mod ports;
pub mod retry;
pub mod sync;

#[cfg(test)]
mod test_support;
#[cfg(target_arch = "wasm32")]
mod wasm;
