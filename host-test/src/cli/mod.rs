//! The `host-test` command line: the demo, syncing a tenant, reading records and events,
//! reading content, running the emulator, and inspecting the component and its sandbox.
//! Larger commands live in their own files.

mod auth;
mod bench;
mod demo;
mod emulator;
mod watch;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::app::{ConnectorHost, RunToken};
use crate::bindings::manifest_types::{ConnectorManifest, FieldType};
use crate::runtime::{Runtime, SandboxConfig};
use crate::store::{RecordStore, StoredCredentials, record_json};
use crate::tenant::{GuestSignal, Observer};

#[derive(Parser)]
#[command(
    name = "host-test",
    version,
    about = "Runs the Dropbox connector component in a sandboxed wasmtime host"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Target {
    /// The SQLite database (created if missing, readable by its owner only).
    #[arg(long, default_value = "host-test.db")]
    db: PathBuf,
    /// The tenant to act for.
    #[arg(long, default_value = "default")]
    tenant: String,
    /// Send every Dropbox request to this base URL instead (an emulator or another test server).
    #[arg(long)]
    api_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// The offline demo: emulator, full sync, changes, incremental sync, report.
    Demo {
        /// Number of sample files.
        #[arg(long, default_value_t = 300)]
        files: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Where to write the database (default: a new file under the system's temp dir).
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Measure full and incremental syncs, cold start and streaming against the emulator.
    Bench {
        /// Account sizes for full syncs (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "10000")]
        files: Vec<usize>,
        /// Also run each full sync with this much latency per request.
        #[arg(long, default_value_t = 50)]
        latency_ms: u64,
        /// Account size for the incremental runs (0: skip them).
        #[arg(long, default_value_t = 100000)]
        incremental_base: usize,
        /// Numbers of changes before each incremental sync.
        #[arg(long, value_delimiter = ',', default_value = "1,100,10000")]
        changes: Vec<usize>,
        /// Size of the streamed file in MiB (0: skip).
        #[arg(long, default_value_t = 256)]
        stream_mib: u64,
        /// Runs per figure (the median is reported).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        #[arg(long)]
        json: bool,
    },
    /// Print the component's manifest as JSON.
    Manifest,
    /// Show the component's imports and exports and the sandbox limits in force.
    Inspect,
    /// Run the Dropbox API emulator until stopped (first line: base URL; second: access token).
    Emulator {
        #[arg(long, default_value = "127.0.0.1:8765")]
        listen: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 1000)]
        files: usize,
    },
    /// Connect an account with OAuth 2 (PKCE, offline access): print the authorization URL,
    /// receive the redirect on loopback (or a pasted URL), store the tokens, run the first sync.
    Auth(auth::AuthArgs),
    /// Revoke the tenant's token at Dropbox and delete its stored credentials.
    Disconnect {
        #[command(flatten)]
        target: Target,
    },
    /// Keep tenants current until Ctrl-C: scheduled syncs plus near-real-time changes by
    /// long-poll, many tenants at once; one line per sync.
    Watch(watch::WatchArgs),
    /// Store an access token for a tenant (a token from the Dropbox App Console).
    ///
    /// This is the command that writes a token to the database: it replaces whatever
    /// credentials the tenant has stored, including a refresh token, client id and client
    /// secret from `auth`. (`sync` never stores DROPBOX_ACCESS_TOKEN; see `sync --help`.)
    Connect {
        #[command(flatten)]
        target: Target,
        /// The access token to store; DROPBOX_ACCESS_TOKEN when absent.
        #[arg(long)]
        access_token: Option<String>,
    },
    /// One sync of the tenant: full when no cursor is stored, incremental otherwise.
    ///
    /// DROPBOX_ACCESS_TOKEN, when set, is a token for this run only and is never written to
    /// the database. If the tenant has stored credentials with a refresh token (from `auth`),
    /// the stored credentials win: the variable is ignored, with a one-line notice on stderr.
    /// Otherwise (no stored credentials, or only an access token stored by `connect`) this run
    /// uses the variable's token, and what is stored stays exactly as it was. To store a token,
    /// use `connect`.
    Sync {
        #[command(flatten)]
        target: Target,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// The tenant's current records, one JSON object per line.
    Records {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
    },
    /// The ordered event stream (all tenants unless --tenant is given).
    Events {
        #[arg(long, default_value = "host-test.db")]
        db: PathBuf,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, default_value_t = 0)]
        since: i64,
        #[arg(long)]
        json: bool,
    },
    /// Connected account, last sync, cursor, re-authentication state.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Read or change the tenant's settings (validated against the manifest).
    Config {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Write a record's content to standard output or a file, verified against its hash.
    Cat {
        #[command(flatten)]
        target: Target,
        /// A Dropbox id (id:...) or a path.
        record: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print a temporary (4-hour) URL for a record's content.
    Url {
        #[command(flatten)]
        target: Target,
        record: String,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    Set { key: String, value: String },
    Get { key: String },
    List,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo { files, seed, db } => demo::demo(files, seed, db),
        Command::Bench {
            files,
            latency_ms,
            incremental_base,
            changes,
            stream_mib,
            repeats,
            json,
        } => bench::bench(
            crate::bench::BenchOptions {
                files,
                latency_ms,
                incremental_base,
                incremental_changes: changes,
                stream_mib,
                repeats,
            },
            json,
        ),
        Command::Manifest => {
            let host = bare_host()?;
            println!(
                "{}",
                serde_json::to_string_pretty(&manifest_json(host.manifest()))?
            );
            Ok(())
        }
        Command::Inspect => inspect(),
        Command::Emulator {
            listen,
            seed,
            files,
        } => emulator::run_emulator(&listen, seed, files),
        Command::Auth(args) => auth::auth(args),
        Command::Disconnect { target } => auth::disconnect(target),
        Command::Watch(args) => watch::run(args),
        Command::Connect {
            target,
            access_token,
        } => {
            let token = access_token
                .or_else(env_access_token)
                .context("give --access-token or set DROPBOX_ACCESS_TOKEN")?;
            let host = open(&target)?;
            host.connect(
                &target.tenant,
                StoredCredentials {
                    access_token: token,
                    ..Default::default()
                },
            )?;
            let account = host.test_connection(&target.tenant)?.value;
            println!(
                "connected tenant {} to {} ({})",
                target.tenant, account.email, account.external_id
            );
            Ok(())
        }
        Command::Sync { target, quiet } => {
            let host = open(&target)?;
            // For this run only (never stored); see `sync --help` for which token wins.
            if let Some(token) = env_access_token()
                && host.use_token_for_this_run(&target.tenant, token)? == RunToken::Ignored
            {
                eprintln!(
                    "DROPBOX_ACCESS_TOKEN ignored: tenant {} has stored credentials with a refresh token (from `auth`), and those win; `host-test connect` replaces them",
                    target.tenant
                );
            }
            let outcome = host.sync(
                &target.tenant,
                if quiet { None } else { Some(progress_bar()) },
                None,
            );
            if !quiet {
                eprintln!();
            }
            let outcome =
                outcome.with_context(|| format!("sync of tenant {} failed", target.tenant))?;
            let s = &outcome.value;
            println!(
                "{:?} sync of {}: {} pages, {} entries, {} created, {} content updates, {} metadata updates, {} deleted, {} API calls, {:.2}s{}",
                s.kind,
                target.tenant,
                s.pages,
                s.entries,
                s.created,
                s.content_updates,
                s.metadata_updates,
                s.deletions,
                s.api_calls,
                outcome.elapsed.as_secs_f64(),
                if s.interrupted {
                    " (interrupted; the next sync resumes)"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Command::Records { target, json: _ } => {
            let store = RecordStore::open(&target.db)?;
            // Every record of the account inherits the record group's permissions (the owner
            // is OWNER of everything).
            let permissions: Vec<serde_json::Value> = store
                .record_groups(&target.tenant)?
                .into_iter()
                .flat_map(|(group, perms)| {
                    perms.into_iter().map(move |p| {
                        json!({"principal": p.principal_external_id, "role": crate::store::role_str(p.role), "via_group": group.external_id})
                    })
                })
                .collect();
            let mut out = std::io::stdout().lock();
            for r in store.records(&target.tenant)? {
                let mut value = record_json(&r);
                value["permissions"] = json!(permissions);
                writeln!(out, "{value}")?;
            }
            Ok(())
        }
        Command::Events {
            db,
            tenant,
            since,
            json: _,
        } => {
            let store = RecordStore::open(&db)?;
            let mut out = std::io::stdout().lock();
            for e in store.events(tenant.as_deref(), since)? {
                writeln!(
                    out,
                    "{}",
                    json!({"seq": e.seq, "tenant": e.tenant, "batch": e.batch, "kind": e.kind, "id": e.external_id, "path_lower": e.path_lower, "record": e.record})
                )?;
            }
            Ok(())
        }
        Command::Status { target } => {
            let store = RecordStore::open(&target.db)?;
            let status = store.status(&target.tenant)?;
            let creds = store.credentials(&target.tenant)?;
            let cursor = status
                .sync_points
                .iter()
                .any(|(k, _)| k == "dropbox.cursor");
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "tenant": status.tenant,
                    "account": status.owner.as_ref().map(|o| json!({"email": o.email, "account_id": o.external_id, "name": o.display_name})),
                    "connected": creds.is_some(),
                    "token_expires_at": creds.as_ref().and_then(|c| c.expires_at),
                    "needs_reauthentication": status.needs_reauth,
                    "last_sync_at": status.last_sync_at,
                    "last_sync_result": status.last_sync_result,
                    "records": status.records,
                    "cursor_present": cursor,
                }))?
            );
            Ok(())
        }
        Command::Config { target, action } => {
            let host = open(&target)?;
            match action {
                ConfigAction::Set { key, value } => {
                    host.set_setting(&target.tenant, &key, &value)?;
                    println!("{key} = {value}");
                }
                ConfigAction::Get { key } => {
                    let settings = host.store().settings(&target.tenant)?;
                    let field = host.manifest().config_fields.iter().find(|f| f.key == key);
                    let Some(field) = field else {
                        bail!("unknown setting '{key}'")
                    };
                    let value = settings
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map(|(_, v)| v.clone());
                    println!(
                        "{}",
                        value.or(field.default_value.clone()).unwrap_or_default()
                    );
                }
                ConfigAction::List => {
                    let settings = host.store().settings(&target.tenant)?;
                    for field in &host.manifest().config_fields {
                        let value = settings
                            .iter()
                            .find(|(k, _)| *k == field.key)
                            .map(|(_, v)| v.clone());
                        let shown = value
                            .clone()
                            .or(field.default_value.clone())
                            .unwrap_or_default();
                        println!(
                            "{} = {}{}",
                            field.key,
                            shown,
                            if value.is_none() { " (default)" } else { "" }
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Cat {
            target,
            record,
            out,
        } => {
            let host = open(&target)?;
            let id = host.resolve_record(&target.tenant, &record)?;
            let sink: Box<dyn Write + Send> = match &out {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(std::io::stdout()),
            };
            let outcome = host.stream(&target.tenant, &id, sink);
            let outcome = match outcome {
                Ok(o) => o,
                Err(e) => {
                    if let Some(path) = &out {
                        let _ = std::fs::remove_file(path);
                    }
                    return Err(e.into());
                }
            };
            let s = &outcome.value;
            eprintln!(
                "{} bytes, content hash {}, {}",
                s.size,
                s.content_hash.as_deref().unwrap_or("-"),
                if s.verified {
                    "verified"
                } else {
                    "not verified (no published hash)"
                }
            );
            Ok(())
        }
        Command::Url { target, record } => {
            let host = open(&target)?;
            let id = host.resolve_record(&target.tenant, &record)?;
            println!("{}", host.signed_url(&target.tenant, &id)?.value.url);
            Ok(())
        }
    }
}

/// DROPBOX_ACCESS_TOKEN, unless unset or empty.
fn env_access_token() -> Option<String> {
    std::env::var("DROPBOX_ACCESS_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
}

fn open(target: &Target) -> Result<ConnectorHost> {
    Ok(ConnectorHost::open(
        &target.db,
        target.api_url.as_deref(),
        SandboxConfig::default(),
    )?)
}

/// A host over an in-memory store: for commands that only ask the component about itself.
fn bare_host() -> Result<ConnectorHost> {
    let runtime = Arc::new(Runtime::dropbox(SandboxConfig::default())?);
    let store = Arc::new(RecordStore::open_in_memory()?);
    Ok(ConnectorHost::new(
        runtime,
        store,
        None,
        Default::default(),
    )?)
}

pub fn manifest_json(m: &ConnectorManifest) -> serde_json::Value {
    json!({
        "name": m.name,
        "display_name": m.display_name,
        "version": m.version,
        "app_group": m.app_group,
        "description": m.description,
        "oauth": {
            "authorize_url": m.oauth.authorize_url,
            "token_url": m.oauth.token_url,
            "revoke_url": m.oauth.revoke_url,
            "scopes": m.oauth.scopes,
            "extra_authorize_params": m.oauth.extra_authorize_params.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
            "pkce_required": m.oauth.pkce_required,
            "redirect_path": m.oauth.redirect_path,
        },
        "allowed_hosts": m.allowed_hosts,
        "config_fields": m.config_fields.iter().map(|f| {
            let (ty, extra) = match &f.field_type {
                FieldType::Integer(b) => ("integer", json!({"min": b.min, "max": b.max})),
                FieldType::Boolean => ("boolean", json!({})),
                FieldType::Text => ("text", json!({})),
                FieldType::Choice(c) => ("choice", json!({"choices": c})),
                FieldType::TextList => ("text_list", json!({})),
                FieldType::Date => ("date", json!({})),
            };
            json!({"key": f.key, "label": f.label, "description": f.description, "type": ty, "bounds": extra, "default": f.default_value})
        }).collect::<Vec<_>>(),
    })
}

fn inspect() -> Result<()> {
    let config = SandboxConfig::default();
    let runtime = Runtime::dropbox(config.clone())?;
    let (imports, exports) = runtime.component_interfaces();
    let host = bare_host()?;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "component": {"path": env!("DROPBOX_CONNECTOR_WASM_PATH"), "bytes": runtime.component_size()},
            "imports": imports,
            "exports": exports,
            "sandbox": {
                "memory_limit_bytes": config.memory_limit,
                "max_compute_between_host_calls_ms": config.max_compute_between_calls.as_millis() as u64,
                "pooling_allocator": config.pooling,
                "wasi": "no preopened directories, no environment, no arguments, no sockets, no stdio",
                "http": {
                    "allowed_hosts": host.manifest().allowed_hosts,
                    "redirects_followed": false,
                    "max_response_body_bytes": crate::http::HttpSettings::default().max_body_bytes,
                    "connect_timeout_secs": crate::http::HttpSettings::default().connect_timeout.as_secs(),
                    "read_timeout_secs": crate::http::HttpSettings::default().read_timeout.as_secs(),
                },
                "tenant_isolation": "the tenant is fixed by the host for each instance; the guest cannot name one",
            }
        }))?
    );
    Ok(())
}

/// A one-line progress display on standard error.
pub(crate) fn progress_bar() -> Observer {
    let started = Instant::now();
    Box::new(move |signal| match signal {
        GuestSignal::Progress {
            phase,
            pages,
            entries,
            total,
        } => {
            let rate = *entries as f64 / started.elapsed().as_secs_f64().max(1e-3);
            let total = total.map(|t| format!("/{t}")).unwrap_or_default();
            eprint!("\r{phase}: {pages} pages, {entries}{total} entries, {rate:.0} entries/s   ");
        }
        GuestSignal::Log { level, message } if level == "warn" || level == "error" => {
            eprintln!("\r{level}: {message}");
        }
        GuestSignal::Log { .. } => {}
    })
}
