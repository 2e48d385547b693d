//! Conformance of the emulator against DROPBOX-API.md, over real HTTP (ureq, or raw TCP where the
//! exact bytes matter). Every test starts its own emulator, so they run in parallel.
//!
//! One test binary, one module per area of the API; `helpers` holds what they share.

mod helpers;

mod account_transport_auth;
mod content_hash;
mod control;
mod faults;
mod listing;
mod longpoll;
mod metadata_content;
mod oauth;
mod sharing;
