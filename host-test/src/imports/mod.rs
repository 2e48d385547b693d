//! The host side of each imported interface, one file per interface, each a `Host` impl over
//! `TenantState`.

mod content_sink;
mod credentials;
mod host;
mod http;
mod records;

use crate::bindings::{manifest_types, types};
use crate::runtime::TenantState;

// Interfaces that hold only types still need an (empty) impl.
impl types::Host for TenantState {}
impl manifest_types::Host for TenantState {}
