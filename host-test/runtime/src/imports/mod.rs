//! The host side of each imported interface, one file per interface, each a `Host` impl over
//! `TenantState`; `convert` turns WIT types into the store's own and back.

mod content_sink;
pub(crate) mod convert;
mod credentials;
mod host;
pub(crate) mod http;
mod records;
pub(crate) mod wasi_waits;

use crate::bindings::{manifest_types, types};
use crate::runtime::TenantState;

// Interfaces that hold only types still need an (empty) impl.
impl types::Host for TenantState {}
impl manifest_types::Host for TenantState {}
