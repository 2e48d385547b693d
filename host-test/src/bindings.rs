//! The generated bindings of the WIT world, in one place. Everything else in the host imports
//! the generated types from here.

wasmtime::component::bindgen!({
    world: "source-connector",
    path: "../wit",
    additional_derives: [PartialEq],
});

pub use exports::pipeshub::connector::connector;
pub use pipeshub::connector::{
    content_sink, credentials, host, http, manifest_types, records, types,
};
