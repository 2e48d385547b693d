//! The Dropbox Personal source connector.
//!
//! Written against the guest SDK (`wit/sdk`, crate `connector_sdk`): this crate has no WIT
//! bindings of its own. Everything here is plain Rust that compiles and is unit-tested
//! natively: the Dropbox API types and error classification (`api`), the retry policy
//! (`retry`), the content hash (`content_hash`), the API client (`client`), the sync planner
//! (`sync`), reading content (`content`), the manifest and configuration (`manifest`,
//! `config`), and the operations the contract exports (`operations`, the SDK's `Connector`
//! trait). They reach the outside world only through the SDK's port traits (`ports`); the
//! SDK's adapter implements those over the WIT imports, and the `export_connector!` line below
//! makes `DropboxConnector` the component's exports.

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
mod limits_tests;
#[cfg(test)]
mod test_support;

connector_sdk::export_connector!(operations::DropboxConnector);
