//! The generated bindings of the WIT world, in one place. Everything else in the runtime
//! imports the generated types from here.
//!
//! The world's WASI imports are mapped to wasmtime-wasi's own implementations (the synchronous
//! ones: the host calls the guest synchronously), so the types are shared with
//! `wasmtime_wasi::p2::add_to_linker_sync` and nothing of WASI is generated twice.

wasmtime::component::bindgen!({
    world: "source-connector",
    path: "../../wit",
    additional_derives: [PartialEq],
    with: {
        "wasi": wasmtime_wasi::p2::bindings::sync,
    },
    require_store_data_send: true,
    // `host.sleep` may end the operation: a guest that only waits (no progress) past the
    // sandbox's bound is stopped there (`crate::runtime::InvokeError::NoProgress`).
    imports: {
        "pipeshub:connector/host.sleep": trappable,
    },
});

pub use exports::pipeshub::connector::connector;
pub use pipeshub::connector::{
    content_sink, credentials, host, http, manifest_types, paths, records, types,
};

/// The package and version of the contract this host implements; a component must export
/// `pipeshub:connector/connector` at a compatible version ([`crate::runtime`] checks).
pub const CONTRACT_PACKAGE: &str = "pipeshub:connector";
pub const CONTRACT_VERSION: &str = "0.2.0";
