//! A wasmtime runtime for connector components of the `pipeshub:connector` world. It names no
//! connector: it loads any component of the world (from bytes or a file), and everything a
//! connector says about itself comes from its manifest.
//!
//! Layers, one job each:
//! - `bindings`: the generated bindings of the WIT world (the only `bindgen!`);
//! - `runtime`: engine, limits, instantiation, the contract's version check: the sandbox's
//!   guarantees in one place;
//! - `compile_cache`: the compiled component kept on disk between processes;
//! - `imports`: the host side of each imported interface, and the conversions between the
//!   WIT types and the store's own types;
//! - `policy`: which destinations a guest may reach;
//! - `http`: the transport (rustls, timeouts, body cap);
//! - `credentials`: tokens held by the host, refresh;
//! - `oauth`: connecting an account (authorization URL, PKCE, loopback callback, code exchange);
//! - `store`: the records store behind the [`store::RecordStore`] trait, its SQLite and
//!   PostgreSQL implementations and the event stream;
//! - `secrets`: credentials sealed at rest, the host's keys and their rotation;
//! - `tenant`: what an invocation runs on behalf of;
//! - `app`: the operations for a tenant, over one runtime and one store;
//! - `watch`: keeping tenants current (schedules, long-polls, many tenants at once);
//! - `telemetry`: logging (`tracing`: spans per tenant and operation, filter, text or JSON);
//! - `metrics`: the Prometheus metrics, `/healthz` and `/readyz` of `watch`.

pub mod app;
pub mod bindings;
pub mod compile_cache;
pub mod credentials;
pub mod http;
mod imports;
pub mod metrics;
pub mod oauth;
pub mod policy;
pub mod runtime;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod tenant;
pub mod watch;
