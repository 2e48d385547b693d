//! Logging: every diagnostic line of the host, and every `host.log` line of the connector, is a
//! `tracing` event, written to standard error (standard output is left to the results a
//! command prints for a person).
//!
//! - Spans: an operation for a tenant runs inside a span `tenant` (field `tenant`) and, within
//!   it, a span `op` (field `op`: `sync`, `wait-for-changes`, `stream`, ...), so each line says
//!   whose it is and what it was part of. They are created at ERROR level on purpose: a span
//!   below the filter's level is not recorded, and then a warning would lose its tenant; at
//!   ERROR they stay on with any filter that lets a line through.
//! - The connector's lines carry the target `connector`, at the level the connector gave them.
//! - Filter: `RUST_LOG` in the usual syntax (`debug`, `connector=debug,host_test=info`, ...);
//!   without it [`DEFAULT_FILTER`]: info for the host and the connector, warn for noisy deps.
//! - Format: human-readable text, or one JSON object per line for log collectors, chosen by
//!   `--log-format json` or `HOST_TEST_LOG_FORMAT=json` (the flag wins). A JSON line holds
//!   `timestamp`, `level`, `target`, `fields.message` and the other fields, `span` (the
//!   innermost) and `spans` (all, outermost first, each with its fields).
//!
//! No secret is ever a field or part of a message: tokens live in the credential manager and
//! the store and are never formatted; the guest never sees one, so its lines cannot hold one.
//! The HTTP and TLS crates are the exception to guard against: at trace level `ureq` dumps the
//! raw bytes of each request (the `Authorization` header, a token request's form with the
//! refresh token and client secret) in hex, so their lines above INFO are dropped whatever
//! `RUST_LOG` asks ([`may_carry_secrets`]).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// The environment variable that selects the log format (`text` or `json`).
pub const LOG_FORMAT_ENV: &str = "HOST_TEST_LOG_FORMAT";

/// The filter used when `RUST_LOG` is unset: the host and the connector at info, the runtime,
/// compiler and transport crates only from warn.
pub const DEFAULT_FILTER: &str = "info,wasmtime=warn,wasmtime_wasi=warn,wasmtime_cranelift=warn,\
wasmtime_environ=warn,cranelift_codegen=warn,cranelift_frontend=warn,cranelift_wasm=warn,\
regalloc2=warn,ureq=warn,ureq_proto=warn,rustls=warn,rusqlite=warn";

/// The target of the connector's own lines (`RUST_LOG=connector=debug` shows its debug lines).
pub const CONNECTOR_TARGET: &str = "connector";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event, with its spans.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Install the process's logger: `format` if given, else `HOST_TEST_LOG_FORMAT`, else text.
/// Later calls (and a logger installed by someone else first) change nothing.
pub fn init(format: Option<LogFormat>) {
    let from_env = std::env::var(LOG_FORMAT_ENV).ok();
    let (format, unknown) = match (format, from_env.as_deref().map(str::trim)) {
        (Some(f), _) => (f, None),
        (None, None | Some("")) => (LogFormat::Text, None),
        (None, Some(v)) if v.eq_ignore_ascii_case("json") => (LogFormat::Json, None),
        (None, Some(v)) if v.eq_ignore_ascii_case("text") => (LogFormat::Text, None),
        (None, Some(v)) => (LogFormat::Text, Some(v.to_string())),
    };
    let (filter, bad_filter) = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(v) if !v.trim().is_empty() => match EnvFilter::try_new(&v) {
            Ok(f) => (f, None),
            Err(e) => (EnvFilter::new(DEFAULT_FILTER), Some(e.to_string())),
        },
        _ => (EnvFilter::new(DEFAULT_FILTER), None),
    };
    let guard = tracing_subscriber::filter::filter_fn(|meta| !may_carry_secrets(meta));
    let installed = match format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(guard)
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(guard)
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_current_span(true)
                    .with_span_list(true),
            )
            .try_init(),
    };
    if installed.is_err() {
        return;
    }
    if let Some(v) = unknown {
        tracing::warn!("{LOG_FORMAT_ENV}={v:?} is neither text nor json; logging as text");
    }
    if let Some(e) = bad_filter {
        tracing::warn!("RUST_LOG is not a valid filter ({e}); using the default filter");
    }
}

/// Lines of the transport crates more verbose than INFO: their debug and trace output shows
/// request and response bytes, where tokens and client secrets travel.
pub fn may_carry_secrets(meta: &tracing::Metadata<'_>) -> bool {
    let target = meta.target();
    let transport = ["ureq", "ureq_proto", "rustls", "webpki", "http"]
        .iter()
        .any(|t| target == *t || target.starts_with(&format!("{t}::")));
    transport && *meta.level() > tracing::Level::INFO
}

/// The spans of one operation for a tenant: `tenant` (unless the caller is already inside a
/// `tenant` span, as the watcher's threads are) and `op` within it. Keep the guard for the
/// operation's length.
pub fn op_span(tenant: &str, op: &'static str) -> OpGuard {
    let tenant = if in_tenant_span() {
        None
    } else {
        Some(tenant_span(tenant).entered())
    };
    let op = tracing::error_span!("op", op).entered();
    OpGuard {
        _op: op,
        _tenant: tenant,
    }
}

/// The span of everything done for one tenant.
pub fn tenant_span(tenant: &str) -> tracing::Span {
    tracing::error_span!("tenant", tenant)
}

fn in_tenant_span() -> bool {
    tracing::Span::current()
        .metadata()
        .is_some_and(|m| m.name() == "tenant")
}

/// Entered spans of [`op_span`]; dropping it leaves them (the op first).
pub struct OpGuard {
    // Field order is drop order: the inner span is left first.
    _op: tracing::span::EnteredSpan,
    _tenant: Option<tracing::span::EnteredSpan>,
}
