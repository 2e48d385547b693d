//! The `host-test` command and what only it needs, over the connector runtime
//! (`connector-runtime`, re-exported here so `host_test::store::...` and friends keep working):
//! - `cli`: the `host-test` command (and `--component` to run any component of the world);
//! - `bench`: `host-test bench`, measurements against the emulator;
//! - `components`: the components embedded at build time (the Dropbox connector is the
//!   default one; the hostile test guest);
//! - `emulator`: the Dropbox API emulator (its own crate, re-exported).

pub use connector_runtime::{
    app, bindings, compile_cache, credentials, http, metrics, oauth, policy, runtime, secrets,
    store, telemetry, tenant, watch,
};

pub mod bench;
pub mod bench_cluster;
pub mod cli;
pub mod components;

pub use dropbox_emulator as emulator;
