//! A wasmtime host for connector components, for tests, the demo and the command line.
//!
//! Layers, one job each:
//! - `bindings`: the generated bindings of the WIT world (the only `bindgen!`);
//! - `runtime`: engine, limits, instantiation: the sandbox's guarantees in one place;
//! - `compile_cache`: the compiled component kept on disk between processes;
//! - `imports`: the host side of each imported interface;
//! - `policy`: which destinations a guest may reach;
//! - `http`: the transport (rustls, timeouts, body cap);
//! - `credentials`: tokens held by the host, refresh;
//! - `oauth`: connecting an account (authorization URL, PKCE, loopback callback, code exchange);
//! - `store`: the SQLite records store and event stream;
//! - `tenant`: what an invocation runs on behalf of;
//! - `app`: the operations for a tenant, over one runtime and one store;
//! - `bench`: `host-test bench`, measurements against the emulator;
//! - `watch`: keeping tenants current (schedules, long-polls, many tenants at once);
//! - `telemetry`: logging (`tracing`: spans per tenant and operation, filter, text or JSON);
//! - `metrics`: the Prometheus metrics, `/healthz` and `/readyz` of `watch`;
//! - `cli`: the `host-test` command;
//! - `emulator`: the Dropbox API emulator (its own crate, re-exported).

pub mod app;
pub mod bench;
pub mod bindings;
pub mod cli;
pub mod compile_cache;
pub mod credentials;
pub mod http;
mod imports;
pub mod metrics;
pub mod oauth;
pub mod policy;
pub mod runtime;
pub mod store;
pub mod telemetry;
pub mod tenant;
pub mod watch;

pub use dropbox_emulator as emulator;
