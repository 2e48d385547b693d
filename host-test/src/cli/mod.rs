//! The `host-test` command line: the demo, syncing a tenant, reading records and events,
//! reading content, running the emulator, and inspecting the component and its sandbox.
//! Larger commands live in their own files.

mod auth;
mod bench;
mod demo;
mod emulator;
mod watch;
mod watch_pg;
mod writer_right;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::app::{ConnectorHost, HostError, RunToken};
use crate::app::{SYNC_INTERVAL_MINUTES, SYNC_STRATEGY, strategy_str};
use crate::bindings::connector::SyncKind;
use crate::bindings::manifest_types::{ConnectorManifest, FieldType};
use crate::bindings::types::ConnectorError;
use crate::runtime::{Runtime, SandboxConfig};
use crate::secrets::{Keyring, SecretError};
use crate::store::{
    RecordKind, RecordStore, SqliteStore, StoreError, StoredCredentials, record_json,
};
use crate::tenant::{GuestSignal, Observer};

#[derive(Parser)]
#[command(
    name = "host-test",
    version,
    about = "Runs a connector component (by default the embedded Dropbox connector) in a sandboxed wasmtime host",
    after_help = exit_codes_help()
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr: text, or json (one object per line) for log collectors. Default:
    /// $HOST_TEST_LOG_FORMAT, else text. RUST_LOG filters them (default: info).
    #[arg(long, global = true, value_enum)]
    log_format: Option<crate::telemetry::LogFormat>,
    /// The connector component to run (a .wasm of the pipeshub:connector@0.2 world). Default:
    /// the Dropbox connector built into this binary.
    #[arg(long, global = true, value_name = "PATH.wasm")]
    component: Option<PathBuf>,
    /// The keys that seal stored credentials (base64 32-byte keys, one per line, the current
    /// first; readable by its owner only). Default: $HOST_TEST_SECRET_KEY, else, for a SQLite
    /// database, the key file beside it (`<db>.key`, created on first use). A PostgreSQL
    /// database needs one of the first two.
    #[arg(long, global = true, value_name = "FILE")]
    secret_key_file: Option<PathBuf>,
}

/// The key file `--secret-key-file` named for this process.
static SECRET_KEY_FILE: RwLock<Option<PathBuf>> = RwLock::new(None);

/// The store `--db` names (a SQLite file, or a `postgres://` URL), with the host's keys.
pub(crate) fn open_store(db: &str) -> Result<Arc<dyn RecordStore>> {
    let keyring = host_keyring(db)?;
    if crate::store::pg::is_postgres_url(db) {
        return Ok(crate::store::open(db, keyring)?);
    }
    let store = SqliteStore::open(std::path::Path::new(db))?;
    // No key given: the store keeps its default, the key file beside the database.
    Ok(Arc::new(if keyring.is_empty() {
        store
    } else {
        store.with_keyring(keyring)
    }))
}

/// The keys given to this process (`--secret-key-file`, else HOST_TEST_SECRET_KEY; empty
/// when neither). A PostgreSQL database refuses to run without one: a database shared by
/// many hosts must not depend on a file on one machine.
pub(crate) fn host_keyring(db: &str) -> Result<Keyring> {
    // Every command that opens --db comes through here first.
    check_db(db)?;
    let file = SECRET_KEY_FILE
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let keyring = Keyring::load(file.as_deref())
        .map_err(|e| classified(ExitClass::InvalidConfig, format!("secret keys: {e}")))?;
    if keyring.is_empty() && crate::store::pg::is_postgres_url(db) {
        return Err(classified(
            ExitClass::InvalidConfig,
            "a PostgreSQL database needs the secret key that seals credentials, the same on \
             every host: pass --secret-key-file FILE or set HOST_TEST_SECRET_KEY (a key: \
             `host-test secrets generate-key`, or `head -c 32 /dev/urandom | base64`)",
        ));
    }
    Ok(keyring)
}

/// A `--db` that looks like a URL of another scheme (a misspelt `postgress://user:pass@...`)
/// would otherwise be taken for a SQLite file name and echoed, password and all, in the error
/// about that file. It is refused naming its scheme only. (A PostgreSQL URL is only ever shown
/// through [`crate::store::pg::redact`].)
fn check_db(db: &str) -> Result<()> {
    if let Some((scheme, _)) = db.split_once("://")
        && !crate::store::pg::is_postgres_url(db)
        && !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return Err(usage(format!(
            "--db {scheme}://...: not a database this host opens; give a SQLite file or a \
             postgres:// (postgresql://) URL"
        )));
    }
    Ok(())
}

/// The component `--component` named for this process (None: the embedded default).
static COMPONENT: RwLock<Option<PathBuf>> = RwLock::new(None);

/// The component this command runs, loaded and checked (its contract version) once.
pub(crate) fn load_component() -> Result<Runtime> {
    let path = COMPONENT.read().unwrap_or_else(|p| p.into_inner()).clone();
    crate::components::load(path.as_deref(), SandboxConfig::default())
        .context("loading the component")
}

/// The path of the component this command runs.
fn component_path() -> PathBuf {
    COMPONENT
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_else(crate::components::default_component_path)
}

#[derive(clap::Args, Clone)]
struct Target {
    /// The database: a SQLite file (created if missing, readable by its owner only), or a
    /// PostgreSQL URL (postgres://user@host/db).
    #[arg(
        long,
        default_value = "host-test.db",
        value_name = "FILE | postgres://..."
    )]
    db: String,
    /// The tenant to act for.
    #[arg(long, default_value = "default")]
    tenant: String,
    /// Send every request to the manifest's hosts to this base URL instead (an emulator or
    /// another test server).
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
        /// One JSON object at the end (both syncs, the changes, whether the store matches)
        /// instead of the walkthrough for people.
        #[arg(long)]
        json: bool,
    },
    /// Measure full and incremental syncs, cold start and streaming against the emulator.
    Bench {
        /// Account sizes for full syncs (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "10000")]
        files: Vec<usize>,
        /// Also run each full sync with this much latency per request (comma-separated; 0:
        /// none). Each runs twice: with the next page fetched while the current one is written
        /// (the host runs `http.start` in the background), and without (the request runs only
        /// when the guest waits for it).
        #[arg(long, value_delimiter = ',', default_value = "50")]
        latency_ms: Vec<u64>,
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
    /// Measure the PostgreSQL store against SQLite (one large full sync each) and watch workers
    /// sharing tenants on PostgreSQL (1, 2, 3 worker processes; one killed mid-sync in the
    /// last run). Each run uses a fresh database on the server, dropped afterwards.
    BenchCluster {
        /// The PostgreSQL server (a user allowed to create databases).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        server: String,
        /// Files of the full-sync account (0: skip the full syncs).
        #[arg(long, default_value_t = 100_000)]
        files: usize,
        #[arg(long, default_value_t = 300)]
        tenants: usize,
        /// Files of each tenant's account.
        #[arg(long, default_value_t = 100)]
        tenant_files: usize,
        /// Emulators serving the tenants' accounts (tenant i uses emulator i mod this).
        #[arg(long, default_value_t = 30)]
        emulators: usize,
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        workers: Vec<usize>,
        #[arg(long, default_value_t = 3.0)]
        lease_ttl: f64,
        /// Latency the emulators add to every request, in ms.
        #[arg(long, default_value_t = 20)]
        latency_ms: u64,
        /// Syncs each worker runs at once.
        #[arg(long, default_value_t = 4)]
        max_concurrent: usize,
        #[arg(long)]
        json: bool,
    },
    /// Print the component's manifest (always JSON; --json is accepted for uniformity).
    Manifest {
        /// JSON output (the only format of this command).
        #[arg(long)]
        json: bool,
    },
    /// Show the component's imports and exports and the sandbox limits in force (always JSON;
    /// --json is accepted for uniformity).
    Inspect {
        /// JSON output (the only format of this command).
        #[arg(long)]
        json: bool,
    },
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
    /// Revoke the tenant's token at the source and delete its stored credentials.
    Disconnect {
        #[command(flatten)]
        target: Target,
        /// Print {tenant, had_credentials, revoked} as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Keep tenants current until Ctrl-C: scheduled syncs plus near-real-time changes by
    /// long-poll, many tenants at once; one line per sync.
    Watch(watch::WatchArgs),
    /// Store an access token for a tenant (e.g. a token from the Dropbox App Console, or the
    /// token of a connector whose manifest declares no OAuth).
    ///
    /// This is the command that writes a token to the database: it replaces whatever
    /// credentials the tenant has stored, including a refresh token, client id and client
    /// secret from `auth`. (`sync` never stores DROPBOX_ACCESS_TOKEN; see `sync --help`.)
    /// The token is tested first (the connector's connection test): one the source refuses is
    /// not stored, and nothing else of the tenant is written either (exit code 3 when refused).
    Connect {
        #[command(flatten)]
        target: Target,
        /// The access token to store; HOST_TEST_ACCESS_TOKEN (or DROPBOX_ACCESS_TOKEN) when
        /// absent.
        #[arg(long)]
        access_token: Option<String>,
        /// Print the connected account as one JSON object instead of a sentence.
        #[arg(long)]
        json: bool,
    },
    /// One sync of the tenant (the connector's `sync`: a full listing when it has no position
    /// stored, the changes since it otherwise).
    ///
    /// HOST_TEST_ACCESS_TOKEN (or DROPBOX_ACCESS_TOKEN), when set, is a token for this run only
    /// and is never written to
    /// the database. If the tenant has stored credentials with a refresh token (from `auth`),
    /// the stored credentials win: the variable is ignored, with a one-line notice on stderr.
    /// Otherwise (no stored credentials, or only an access token stored by `connect`) this run
    /// uses the variable's token, and what is stored stays exactly as it was. To store a token,
    /// use `connect`.
    Sync {
        #[command(flatten)]
        target: Target,
        /// No progress bar (there is none anyway when standard error is not a terminal).
        #[arg(long)]
        quiet: bool,
        /// Print the summary as one JSON object (tenant, kind, pages, entries, created,
        /// content_updates, metadata_updates, deletions, api_calls, elapsed_secs, interrupted)
        /// instead of a sentence.
        #[arg(long)]
        json: bool,
    },
    /// The tenant's current records: one line per record (kind, size, path, id), or with
    /// --json one JSON object per line.
    Records {
        #[command(flatten)]
        target: Target,
        /// One JSON object per line (JSON Lines), with every field and the permissions.
        #[arg(long)]
        json: bool,
    },
    /// The ordered event stream (all tenants unless --tenant is given): one line per event
    /// (sequence, tenant, kind, path, id), or with --json one JSON object per line.
    Events {
        #[arg(
            long,
            default_value = "host-test.db",
            value_name = "FILE | postgres://..."
        )]
        db: String,
        #[arg(long)]
        tenant: Option<String>,
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        since: i64,
        /// Read as this consumer (PostgreSQL): each tenant's events after the consumer's
        /// durable position, in the tenant's order (`tenant_seq` 1, 2, 3, ...), whichever
        /// worker wrote them. --since is not used with it.
        #[arg(long, value_name = "NAME", conflicts_with = "since")]
        consumer: Option<String>,
        /// With --consumer: at most this many events per tenant.
        #[arg(long, default_value_t = 1000, requires = "consumer")]
        limit: u32,
        /// With --consumer: after printing, move the consumer's position past what was
        /// printed (the next read starts after it). Without it, reading changes nothing.
        #[arg(long, requires = "consumer")]
        ack: bool,
        /// One JSON object per line (JSON Lines), with the record as stored.
        #[arg(long)]
        json: bool,
    },
    /// Connected account, last sync, the connector's sync status, re-authentication state.
    Status {
        #[command(flatten)]
        target: Target,
        /// JSON output (the format of this command).
        #[arg(long)]
        json: bool,
    },
    /// Read or change the tenant's settings: the connector's (validated against the manifest's
    /// fields) and the host's schedule settings sync_strategy and sync_interval_minutes
    /// (validated against the manifest's schedule).
    Config {
        #[command(flatten)]
        target: Target,
        /// JSON output: `get` prints {key, value, default}, `list` an array of those, `set`
        /// {key, value}.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Secrets at rest: re-seal stored credentials under the current key, or make a key.
    Secrets {
        #[command(subcommand)]
        action: SecretsAction,
    },
    /// Write a record's content to standard output or a file, verified against its hash.
    Cat {
        #[command(flatten)]
        target: Target,
        /// A record's external id, or its path (exact, else compared case-insensitively).
        record: String,
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the summary ({id, size, content_hash, verified, mime_type}) as one JSON object
        /// on standard error (standard output carries the content unless --out is given).
        #[arg(long)]
        json: bool,
    },
    /// Print a temporary (4-hour) URL for a record's content.
    Url {
        #[command(flatten)]
        target: Target,
        record: String,
        /// Print {url, expires_at} as one JSON object instead of the bare URL.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SecretsAction {
    /// Re-seal every stored secret that is not under the current key (the first of the key
    /// list), in one transaction; prints how many were re-sealed and the key ids still in use.
    ///
    /// To rotate: put a new key first in the key file (or HOST_TEST_SECRET_KEY), the old one
    /// below it; restart every host with that list; run this once; when it reports only the
    /// current key id in use, remove the old key and restart again.
    Rotate {
        #[arg(
            long,
            default_value = "host-test.db",
            value_name = "FILE | postgres://..."
        )]
        db: String,
        /// Print {resealed, unchanged, key_ids_in_use} as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print a new random key (base64, 32 bytes) for a key file or HOST_TEST_SECRET_KEY.
    GenerateKey,
}

#[derive(Subcommand)]
enum ConfigAction {
    Set { key: String, value: String },
    Get { key: String },
    List,
}

pub fn run(cli: Cli) -> Result<()> {
    crate::telemetry::init(cli.log_format);
    *COMPONENT.write().unwrap_or_else(|p| p.into_inner()) = cli.component.clone();
    *SECRET_KEY_FILE.write().unwrap_or_else(|p| p.into_inner()) = cli.secret_key_file.clone();
    match cli.command {
        Command::Demo {
            files,
            seed,
            db,
            json,
        } => demo::demo(files, seed, db, json),
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
        Command::BenchCluster {
            server,
            files,
            tenants,
            tenant_files,
            emulators,
            workers,
            lease_ttl,
            latency_ms,
            max_concurrent,
            json,
        } => {
            let report = crate::bench_cluster::run(&crate::bench_cluster::ClusterBenchOptions {
                server,
                files,
                tenants,
                tenant_files,
                emulators,
                workers,
                lease_ttl_secs: lease_ttl,
                latency_ms,
                max_concurrent,
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", crate::bench_cluster::table(&report));
            }
            Ok(())
        }
        Command::Manifest { json: _ } => {
            let host = bare_host()?;
            println!(
                "{}",
                serde_json::to_string_pretty(&manifest_json(host.manifest()))?
            );
            Ok(())
        }
        Command::Inspect { json: _ } => inspect(),
        Command::Emulator {
            listen,
            seed,
            files,
        } => emulator::run_emulator(&listen, seed, files),
        Command::Auth(args) => auth::auth(args),
        Command::Disconnect { target, json } => auth::disconnect(target, json),
        Command::Watch(args) => watch::run(args),
        Command::Connect {
            target,
            access_token,
            json,
        } => {
            let token = access_token.or_else(env_access_token).ok_or_else(|| {
                usage("give --access-token or set HOST_TEST_ACCESS_TOKEN (or DROPBOX_ACCESS_TOKEN)")
            })?;
            let host = open(&target)?;
            // Stored only once the source accepted it: a refused token leaves nothing behind.
            let account = host
                .connect_checked(
                    &target.tenant,
                    StoredCredentials {
                        access_token: token,
                        ..Default::default()
                    },
                )
                .with_context(|| {
                    format!(
                        "the connection test of tenant {} failed; nothing was stored",
                        target.tenant
                    )
                })?
                .value;
            if json {
                println!(
                    "{}",
                    json!({"tenant": target.tenant, "email": account.email, "account_id": account.external_id, "name": account.display_name})
                );
            } else {
                println!(
                    "connected tenant {} to {} ({})",
                    target.tenant, account.email, account.external_id
                );
            }
            Ok(())
        }
        Command::Sync {
            target,
            quiet,
            json,
        } => {
            let host = open(&target)?;
            // For this run only (never stored); see `sync --help` for which token wins.
            if let Some((variable, token)) = env_access_token_named()
                && host.use_token_for_this_run(&target.tenant, token)? == RunToken::Ignored
            {
                eprintln!(
                    "{variable} ignored: tenant {} has stored credentials with a refresh token (from `auth`), and those win; `host-test connect` replaces them",
                    target.tenant
                );
            }
            let observer = if quiet {
                None
            } else {
                let stored = host.store().status(&target.tenant)?.records;
                Some(progress_bar_expecting(Some(stored)))
            };
            // The tenant's writer right for the whole run: on SQLite the runtime takes the
            // store's lock; on PostgreSQL a lease of this command's, as a worker's.
            let outcome = if crate::store::pg::is_postgres_url(&target.db) {
                writer_right::on_postgres(&host, &target.db, &target.tenant, "sync", |h, stop| {
                    Ok(h.sync(&target.tenant, observer, Some(stop))?)
                })
            } else {
                Ok(host.sync(&target.tenant, observer, None)?)
            };
            let outcome =
                outcome.with_context(|| format!("sync of tenant {} failed", target.tenant))?;
            let s = &outcome.value;
            if json {
                println!(
                    "{}",
                    json!({
                        "tenant": target.tenant,
                        "kind": sync_kind_word(s.kind),
                        "pages": s.pages,
                        "entries": s.entries,
                        "created": s.created,
                        "content_updates": s.content_updates,
                        "metadata_updates": s.metadata_updates,
                        "deletions": s.deletions,
                        "api_calls": s.api_calls,
                        "elapsed_secs": outcome.elapsed.as_secs_f64(),
                        "interrupted": s.interrupted,
                    })
                );
                return Ok(());
            }
            println!(
                "{} of {}: {} pages, {} entries, {} created, {} content updates, {} metadata updates, {} deleted, {} API calls, {:.2}s{}",
                capitalized(sync_phrase(s.kind)),
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
        Command::Records { target, json } => {
            let store = open_store(&target.db)?;
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
                if !json {
                    writeln!(out, "{}", record_line(&r))?;
                    continue;
                }
                let mut value = record_json(&r);
                value["permissions"] = json!(permissions);
                writeln!(out, "{value}")?;
            }
            Ok(())
        }
        Command::Events {
            db,
            tenant,
            consumer: Some(consumer),
            limit,
            ack,
            json,
            ..
        } => consumer_events(&db, tenant, &consumer, limit, ack, json),
        Command::Events {
            db,
            tenant,
            since,
            json,
            ..
        } => {
            let store = open_store(&db)?;
            let mut out = std::io::stdout().lock();
            for e in store.events(tenant.as_deref(), since)? {
                if !json {
                    writeln!(
                        out,
                        "#{} {} {} {} ({})",
                        e.seq,
                        e.tenant,
                        e.kind,
                        e.path_lower.as_deref().unwrap_or("-"),
                        e.external_id
                    )?;
                    continue;
                }
                writeln!(
                    out,
                    "{}",
                    json!({"seq": e.seq, "tenant": e.tenant, "batch": e.batch, "kind": e.kind, "id": e.external_id, "path_lower": e.path_lower, "record": e.record})
                )?;
            }
            Ok(())
        }
        Command::Status { target, json } => {
            let store = open_store(&target.db)?;
            let status = store.status(&target.tenant)?;
            let creds = store.credentials(&target.tenant)?;
            // What the connector said of its sync with its last sync point; its position is
            // its own and never shown.
            let sync_status = status
                .sync_status
                .as_ref()
                .map(|s| json!({"phase": s.phase.as_str(), "detail": s.detail}));
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "tenant": status.tenant,
                        "account": status.owner.as_ref().map(|o| json!({"email": o.email, "account_id": o.external_id, "name": o.display_name})),
                        "connected": creds.is_some(),
                        "token_expires_at": creds.as_ref().and_then(|c| c.expires_at),
                        "needs_reauthentication": status.needs_reauth,
                        "last_sync_at": status.last_sync_at,
                        "last_sync_outcome": status.last_sync_outcome.map(|o| o.as_str()),
                        "last_sync_result": status.last_sync_note,
                        "records": status.records,
                        "sync_status": sync_status,
                    }))?
                );
                return Ok(());
            }
            println!("tenant:      {}", status.tenant);
            match &status.owner {
                Some(o) => println!(
                    "account:     {} ({}, {})",
                    o.email, o.display_name, o.external_id
                ),
                None => println!("account:     not synced yet"),
            }
            let connection = match (&creds, status.needs_reauth) {
                (_, true) => "re-authentication needed (run host-test auth)".to_string(),
                (None, false) => "not connected".to_string(),
                (Some(c), false) => match c.expires_at {
                    Some(at) => format!("connected; access token expires at {at} (unix seconds)"),
                    None => "connected".to_string(),
                },
            };
            println!("connection:  {connection}");
            println!("records:     {}", status.records);
            match (status.last_sync_at, &status.last_sync_note) {
                (Some(at), Some(result)) => {
                    println!("last sync:   {result} (at {at}, unix seconds)")
                }
                _ => println!("last sync:   never"),
            }
            match &status.sync_status {
                Some(s) => println!("sync status: {} ({})", s.phase.as_str(), s.detail),
                None => println!("sync status: none (the next sync lists everything)"),
            }
            Ok(())
        }
        Command::Config {
            target,
            json,
            action,
        } => {
            let host = open(&target)?;
            match action {
                ConfigAction::Set { key, value } => {
                    host.set_setting(&target.tenant, &key, &value)?;
                    if json {
                        println!("{}", json!({"key": key, "value": value.trim()}));
                    } else {
                        println!("{key} = {value}");
                    }
                }
                ConfigAction::Get { key } => {
                    let settings = host.store().settings(&target.tenant)?;
                    let defaults = setting_defaults(host.manifest());
                    let Some((_, default)) = defaults.iter().find(|(k, _)| *k == key) else {
                        return Err(classified(
                            ExitClass::InvalidConfig,
                            format!("unknown setting '{key}'"),
                        ));
                    };
                    let value = settings
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map(|(_, v)| v.clone());
                    let is_default = value.is_none();
                    let shown = value.or(default.clone()).unwrap_or_default();
                    if json {
                        println!(
                            "{}",
                            json!({"key": key, "value": shown, "default": is_default})
                        );
                    } else {
                        println!("{shown}");
                    }
                }
                ConfigAction::List => {
                    let settings = host.store().settings(&target.tenant)?;
                    let defaults = setting_defaults(host.manifest());
                    let rows: Vec<(String, String, bool)> = defaults
                        .into_iter()
                        .map(|(key, default)| {
                            let value = settings
                                .iter()
                                .find(|(k, _)| *k == key)
                                .map(|(_, v)| v.clone());
                            let is_default = value.is_none();
                            (key, value.or(default).unwrap_or_default(), is_default)
                        })
                        .collect();
                    if json {
                        let list: Vec<serde_json::Value> = rows
                            .iter()
                            .map(|(key, value, is_default)| {
                                json!({"key": key, "value": value, "default": is_default})
                            })
                            .collect();
                        println!("{}", serde_json::to_string_pretty(&list)?);
                        return Ok(());
                    }
                    for (key, value, is_default) in rows {
                        println!(
                            "{key} = {value}{}",
                            if is_default { " (default)" } else { "" }
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Secrets { action } => secrets(action),
        Command::Cat {
            target,
            record,
            out,
            json,
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
            if json {
                eprintln!(
                    "{}",
                    json!({"id": id, "size": s.size, "content_hash": s.content_hash, "verified": s.verified, "mime_type": s.mime_type})
                );
                return Ok(());
            }
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
        Command::Url {
            target,
            record,
            json,
        } => {
            let host = open(&target)?;
            let id = host.resolve_record(&target.tenant, &record)?;
            let link = host.signed_url(&target.tenant, &id)?.value;
            if json {
                println!(
                    "{}",
                    json!({"id": id, "url": link.url, "expires_at": link.expires_at})
                );
            } else {
                println!("{}", link.url);
            }
            Ok(())
        }
    }
}

/// The variables that give an access token for one run, first found wins:
/// HOST_TEST_ACCESS_TOKEN (any component), then DROPBOX_ACCESS_TOKEN (the name the default
/// connector's users know).
const TOKEN_VARIABLES: [&str; 2] = ["HOST_TEST_ACCESS_TOKEN", "DROPBOX_ACCESS_TOKEN"];

/// The first of [`TOKEN_VARIABLES`] that is set and not empty.
fn env_access_token() -> Option<String> {
    env_access_token_named().map(|(_, token)| token)
}

/// [`env_access_token`], with the name of the variable it came from.
fn env_access_token_named() -> Option<(&'static str, String)> {
    TOKEN_VARIABLES.iter().find_map(|name| {
        std::env::var(name)
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map(|t| (*name, t))
    })
}

fn open(target: &Target) -> Result<ConnectorHost> {
    let store = open_store(&target.db)?;
    // Stored credentials that the keys given cannot open fail here, with the class of a
    // configuration error, rather than as retried connection failures inside the connector.
    if let Err(StoreError::Secret(e)) = store.credentials(&target.tenant) {
        return Err(anyhow::Error::new(StoreError::Secret(e)).context(format!(
            "the stored credentials of tenant {}",
            target.tenant
        )));
    }
    Ok(ConnectorHost::new(
        Arc::new(load_component()?),
        store,
        target.api_url.as_deref(),
        Default::default(),
    )?)
}

/// `events --consumer`: the outbox of a PostgreSQL store, read after the consumer's position
/// per tenant, acknowledged when asked.
fn consumer_events(
    db: &str,
    tenant: Option<String>,
    consumer: &str,
    limit: u32,
    ack: bool,
    json: bool,
) -> Result<()> {
    if !crate::store::pg::is_postgres_url(db) {
        return Err(usage(
            "--consumer needs a PostgreSQL database (--db postgres://...): consumers' \
             positions live there",
        ));
    }
    let store = crate::store::PgStore::connect(db, host_keyring(db)?)?;
    let tenants = match tenant {
        Some(t) => vec![t],
        None => store.tenants()?,
    };
    let mut out = std::io::stdout().lock();
    for tenant in tenants {
        let events = store.read_outbox(consumer, &tenant, limit)?;
        for o in &events {
            let e = &o.event;
            if json {
                writeln!(
                    out,
                    "{}",
                    json!({"tenant_seq": o.tenant_seq, "seq": e.seq, "tenant": e.tenant, "batch": e.batch, "kind": e.kind, "id": e.external_id, "path_lower": e.path_lower, "record": e.record})
                )?;
            } else {
                writeln!(
                    out,
                    "{}#{} {} {} ({})",
                    e.tenant,
                    o.tenant_seq,
                    e.kind,
                    e.path_lower.as_deref().unwrap_or("-"),
                    e.external_id
                )?;
            }
        }
        // Acknowledged only after the events were written out: a consumer killed in between
        // reads them again (at least once), never loses them.
        out.flush()?;
        if ack && let Some(last) = events.last() {
            store.ack(consumer, &tenant, last.tenant_seq)?;
        }
    }
    Ok(())
}

fn secrets(action: SecretsAction) -> Result<()> {
    let (db, json) = match action {
        SecretsAction::GenerateKey => {
            println!("{}", Keyring::generate_key());
            return Ok(());
        }
        SecretsAction::Rotate { db, json } => (db, json),
    };
    let keyring = host_keyring(&db)?;
    let report = if crate::store::pg::is_postgres_url(&db) {
        crate::store::PgStore::connect(&db, keyring)?.rotate_secrets()?
    } else {
        let store = SqliteStore::open(std::path::Path::new(&db))?;
        if keyring.is_empty() {
            store
        } else {
            store.with_keyring(keyring)
        }
        .rotate_secrets()?
    };
    let in_use: Vec<serde_json::Value> = report
        .key_ids_in_use
        .iter()
        .map(|(id, n)| json!({"key_id": id, "values": n}))
        .collect();
    if json {
        println!(
            "{}",
            json!({"resealed": report.resealed, "unchanged": report.unchanged, "key_ids_in_use": in_use})
        );
        return Ok(());
    }
    let ids: Vec<String> = report
        .key_ids_in_use
        .iter()
        .map(|(id, n)| format!("{id} ({n} values)"))
        .collect();
    println!(
        "re-sealed {} secrets under the current key, {} already were; key ids in use: {}",
        report.resealed,
        report.unchanged,
        if ids.is_empty() {
            "none".to_string()
        } else {
            ids.join(", ")
        }
    );
    Ok(())
}

/// A host over an in-memory store: for commands that only ask the component about itself.
fn bare_host() -> Result<ConnectorHost> {
    let runtime = Arc::new(load_component()?);
    let store = Arc::new(SqliteStore::open_in_memory()?);
    Ok(ConnectorHost::new(
        runtime,
        store,
        None,
        Default::default(),
    )?)
}

/// Every setting a tenant has, with its default: the host's schedule settings first, then the
/// connector's fields.
fn setting_defaults(m: &ConnectorManifest) -> Vec<(String, Option<String>)> {
    let mut out = vec![
        (
            SYNC_STRATEGY.to_string(),
            Some(strategy_str(m.schedule.default_strategy).to_string()),
        ),
        (
            SYNC_INTERVAL_MINUTES.to_string(),
            Some(m.schedule.default_interval_minutes.to_string()),
        ),
    ];
    out.extend(
        m.config_fields
            .iter()
            .map(|f| (f.key.clone(), f.default_value.clone())),
    );
    out
}

pub fn manifest_json(m: &ConnectorManifest) -> serde_json::Value {
    json!({
        "name": m.name,
        "display_name": m.display_name,
        "version": m.version,
        "app_group": m.app_group,
        "description": m.description,
        "oauth": m.oauth.as_ref().map(|o| json!({
            "authorize_url": o.authorize_url,
            "token_url": o.token_url,
            "revoke_url": o.revoke_url,
            "scopes": o.scopes,
            "extra_authorize_params": o.extra_authorize_params.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
            "pkce_required": o.pkce_required,
            "redirect_path": o.redirect_path,
        })),
        "schedule": {
            "strategies": m.schedule.strategies.iter().map(|s| strategy_str(*s)).collect::<Vec<_>>(),
            "default_strategy": strategy_str(m.schedule.default_strategy),
            "default_interval_minutes": m.schedule.default_interval_minutes,
            "min_interval_minutes": m.schedule.min_interval_minutes,
            "max_interval_minutes": m.schedule.max_interval_minutes,
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
    let runtime = load_component()?;
    let (imports, exports) = runtime.component_interfaces();
    let host = bare_host()?;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "component": {
                "path": component_path().display().to_string(),
                "bytes": runtime.component_size(),
                "compile_cache": runtime.cache_outcome().map(|o| o.to_string()),
            },
            "imports": imports,
            "exports": exports,
            "sandbox": {
                "memory_limit_bytes": config.memory_limit,
                "max_core_instances": crate::runtime::MAX_INSTANCES,
                "max_memories": crate::runtime::MAX_MEMORIES,
                "max_tables": crate::runtime::MAX_TABLES,
                "max_handles": crate::runtime::MAX_HANDLES,
                "max_random_bytes": crate::runtime::MAX_RANDOM_BYTES,
                "max_list_items": crate::runtime::MAX_LIST_ITEMS,
                "max_compute_between_host_calls_ms": config.max_compute_between_calls.as_millis() as u64,
                "max_wait_without_progress_ms": config.max_wait_without_progress.as_millis() as u64,
                "max_sleep_ms": config.max_sleep.as_millis() as u64,
                "pooling_allocator": config.pooling,
                "wasi": "no preopened directories, no environment, no arguments, no sockets, no stdio",
                "http": {
                    "allowed_hosts": host.manifest().allowed_hosts,
                    "redirects_followed": false,
                    "max_response_body_bytes": crate::http::HttpSettings::default().max_body_bytes,
                    "connect_timeout_secs": crate::http::HttpSettings::default().connect_timeout.as_secs(),
                    "read_timeout_secs": crate::http::HttpSettings::default().read_timeout.as_secs(),
                    "max_read_timeout_secs": crate::http::HttpSettings::default().max_read_timeout.as_secs(),
                    "max_pending_requests": crate::http::HttpSettings::default().max_pending_requests,
                },
                "tenant_isolation": "the tenant is fixed by the host for each instance; the guest cannot name one",
            }
        }))?
    );
    Ok(())
}

/// Progress for people on standard error: a bar with the rate and the time left when the
/// guest reports a total, a spinner with the count and the rate otherwise; cleared when the
/// operation ends. Nothing at all is drawn when standard error is not a terminal (a pipe, a
/// file, a service's journal). The guest's warnings and errors are printed either way, as
/// whole lines.
pub(crate) fn progress_bar() -> Observer {
    progress_bar_expecting(None)
}

/// [`progress_bar`], with the number of entries a listing is expected to reach when the guest
/// gives no total (Dropbox never does): the records already stored, for a re-listing. With
/// it, the listing shows a bar and the time left.
pub(crate) fn progress_bar_expecting(expected: Option<u64>) -> Observer {
    use std::io::IsTerminal;
    let mut display = ProgressDisplay {
        terminal: std::io::stderr().is_terminal(),
        expected: expected.filter(|n| *n > 0),
        bar: None,
        with_total: false,
    };
    Box::new(move |signal| display.show(signal))
}

struct ProgressDisplay {
    terminal: bool,
    /// Entries a listing is expected to reach, when the guest gives no total.
    expected: Option<u64>,
    bar: Option<indicatif::ProgressBar>,
    /// Whether the bar's current style is the one with a length (bar, ETA).
    with_total: bool,
}

impl ProgressDisplay {
    fn show(&mut self, signal: &GuestSignal) {
        match signal {
            GuestSignal::Progress {
                phase,
                pages,
                entries,
                total,
            } => {
                if !self.terminal {
                    return;
                }
                let fresh = self.bar.is_none();
                let bar = self.bar.get_or_insert_with(|| {
                    let bar = indicatif::ProgressBar::with_draw_target(
                        None,
                        indicatif::ProgressDrawTarget::hidden(),
                    );
                    bar.set_style(spinner_style());
                    bar
                });
                let total = total.or(self.expected.filter(|_| phase == "listing"));
                match total {
                    Some(t) => {
                        if !self.with_total {
                            bar.set_style(bar_style());
                            self.with_total = true;
                        }
                        bar.set_length(t.max(*entries));
                    }
                    None => {
                        if self.with_total {
                            bar.set_style(spinner_style());
                            bar.unset_length();
                            self.with_total = false;
                        }
                    }
                }
                let unit = if *pages == 1 { "page" } else { "pages" };
                bar.set_message(format!("{phase}: {pages} {unit}"));
                bar.set_position(*entries);
                if fresh {
                    // Drawn from the first report on, message and all.
                    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                    bar.enable_steady_tick(std::time::Duration::from_millis(120));
                }
            }
            // The connector's log lines reach stderr through the host's logging (`telemetry`),
            // at their level; printing them here too would show each twice.
            GuestSignal::Log { .. } => {}
        }
    }
}

impl Drop for ProgressDisplay {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

fn spinner_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(
        "{spinner} {msg}, {human_pos} entries, {per_sec} ({elapsed})",
    )
    .expect("a valid template")
    .with_key("per_sec", per_sec)
}

fn bar_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(
        "{spinner} {msg} [{wide_bar}] {human_pos}/{human_len} entries, {per_sec}, {eta} left",
    )
    .expect("a valid template")
    .with_key("per_sec", per_sec)
    .progress_chars("=> ")
}

/// The rate as people read it: "1,234 entries/s".
fn per_sec(state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = write!(
        w,
        "{} entries/s",
        indicatif::HumanCount(state.per_sec() as u64)
    );
}

/// A sync's kind in a sentence: "full sync", "incremental sync", "resync".
pub(crate) fn sync_phrase(kind: SyncKind) -> &'static str {
    match kind {
        SyncKind::Full => "full sync",
        SyncKind::Incremental => "incremental sync",
        SyncKind::Resync => "resync",
    }
}

/// A sync's kind as a word ("full", "incremental", "resync"), never the bindings' Debug name.
pub(crate) fn sync_kind_word(kind: SyncKind) -> &'static str {
    match kind {
        SyncKind::Full => "full",
        SyncKind::Incremental => "incremental",
        SyncKind::Resync => "resync",
    }
}

/// The first letter in upper case: the word starts a sentence.
fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// One record as a line for people: kind, size, path (a flat source's records: the name), id.
fn record_line(r: &crate::store::Record) -> String {
    let size = match r.kind {
        RecordKind::Folder => "-".to_string(),
        RecordKind::File | RecordKind::Item => r.size.to_string(),
    };
    format!(
        "{:<6} {:>12}  {}  ({})",
        r.kind.as_str(),
        size,
        r.path_display().unwrap_or(&r.name),
        r.external_id
    )
}

/// How a failure ends the process: the exit code of each class of error, in one place. The
/// README's "Exit codes" table and `host-test --help` list the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum ExitClass {
    /// Any other failure (an I/O error, a file that cannot be written, ...).
    Failure = 1,
    /// The command line is wrong: an unknown flag, a missing argument (clap's own code).
    Usage = 2,
    /// The tenant must be authorized (again): no credentials, a revoked or refused token, a
    /// refresh token the token endpoint refused, an authorization that was denied.
    AuthRequired = 3,
    /// Dropbox asked to wait longer than the host waits by itself (60 s).
    RateLimited = 4,
    /// A temporary failure that outlived the retries (5xx, dropped connections); try again.
    Transient = 5,
    /// A setting outside the manifest's bounds (given or stored), an unknown setting, a bad
    /// --api-url or database path.
    InvalidConfig = 6,
    /// The record or path does not exist.
    NotFound = 7,
    /// Content did not match its published content hash.
    Integrity = 8,
    /// A bug or an unexpected answer: the guest trapped or ran away, a malformed response, a
    /// database error.
    Internal = 9,
    /// The connector does not offer the operation (a source without signed URLs, say); asking
    /// again will not help.
    Unsupported = 10,
    /// Another process is writing the tenant (a `watch` worker, another `sync`); the message
    /// says which. Try again when it ends.
    Busy = 11,
}

impl ExitClass {
    pub const ALL: [ExitClass; 11] = [
        ExitClass::Failure,
        ExitClass::Usage,
        ExitClass::AuthRequired,
        ExitClass::RateLimited,
        ExitClass::Transient,
        ExitClass::InvalidConfig,
        ExitClass::NotFound,
        ExitClass::Integrity,
        ExitClass::Internal,
        ExitClass::Unsupported,
        ExitClass::Busy,
    ];

    /// The process exit code.
    pub const fn code(self) -> i32 {
        self as i32
    }

    pub const fn name(self) -> &'static str {
        match self {
            ExitClass::Failure => "other failure",
            ExitClass::Usage => "usage",
            ExitClass::AuthRequired => "auth required",
            ExitClass::RateLimited => "rate-limited",
            ExitClass::Transient => "transient",
            ExitClass::InvalidConfig => "invalid configuration",
            ExitClass::NotFound => "not found",
            ExitClass::Integrity => "integrity",
            ExitClass::Internal => "internal",
            ExitClass::Unsupported => "unsupported",
            ExitClass::Busy => "tenant busy (another process writes it)",
        }
    }

    /// The class of a failure: the first error in its chain (outermost first) that has one;
    /// [`ExitClass::Failure`] when none has.
    pub fn of(error: &anyhow::Error) -> ExitClass {
        error
            .chain()
            .find_map(classify)
            .unwrap_or(ExitClass::Failure)
    }

    pub fn of_connector(e: &ConnectorError) -> ExitClass {
        match e {
            ConnectorError::AuthRequired(_) => ExitClass::AuthRequired,
            ConnectorError::RateLimited(_) => ExitClass::RateLimited,
            ConnectorError::NotFound(_) => ExitClass::NotFound,
            ConnectorError::InvalidConfig(_) => ExitClass::InvalidConfig,
            ConnectorError::Transient(_) => ExitClass::Transient,
            ConnectorError::Integrity(_) => ExitClass::Integrity,
            ConnectorError::Internal(_) => ExitClass::Internal,
            // The connector does not offer what was asked: no class of its own.
            ConnectorError::Unsupported(_) => ExitClass::Unsupported,
        }
    }

    pub fn of_host(e: &HostError) -> ExitClass {
        match e {
            HostError::Connector(c) => ExitClass::of_connector(c),
            HostError::Invoke(_) => ExitClass::Internal,
            HostError::Store(s) => ExitClass::of_store(s),
            // Setting up a host fails on what it was given (an --api-url that is no URL).
            HostError::Setup(_) => ExitClass::InvalidConfig,
            HostError::Busy(crate::store::WriterLockError::Held { .. }) => ExitClass::Busy,
            HostError::Busy(crate::store::WriterLockError::Io { .. }) => ExitClass::Failure,
        }
    }

    pub fn of_store(e: &StoreError) -> ExitClass {
        match e {
            StoreError::Open { .. } | StoreError::SchemaVersion { .. } => ExitClass::InvalidConfig,
            StoreError::Conflict(_)
            | StoreError::Invalid(_)
            | StoreError::Database(_)
            | StoreError::Injected(_) => ExitClass::Internal,
            // Another worker holds the tenant now: a later sync (by whichever holds it) goes on.
            StoreError::LeaseLost(_) => ExitClass::Transient,
            StoreError::Postgres(e) => {
                // A connection that failed or broke may work again; a query the server refused
                // will not.
                if e.is_closed() || e.as_db_error().is_none() {
                    ExitClass::Transient
                } else {
                    ExitClass::Internal
                }
            }
            StoreError::Secret(e) => match e {
                SecretError::MissingKey
                | SecretError::WrongKey { .. }
                | SecretError::InvalidKey { .. }
                | SecretError::KeyFile { .. }
                | SecretError::KeyFileExposed { .. }
                | SecretError::EmptyKeyFile { .. } => ExitClass::InvalidConfig,
                SecretError::Tampered { .. } | SecretError::Malformed(_) => ExitClass::Integrity,
                SecretError::SealFailed => ExitClass::Internal,
            },
        }
    }
}

/// The class of one error of a chain, if it has one.
fn classify(e: &(dyn std::error::Error + 'static)) -> Option<ExitClass> {
    use crate::credentials::CredentialError;
    use crate::oauth::OAuthError;
    use crate::policy::PolicyError;
    use crate::runtime::InvokeError;
    if let Some(c) = e.downcast_ref::<Classified>() {
        return Some(c.class);
    }
    if let Some(h) = e.downcast_ref::<HostError>() {
        return Some(ExitClass::of_host(h));
    }
    if let Some(s) = e.downcast_ref::<StoreError>() {
        return Some(ExitClass::of_store(s));
    }
    if e.downcast_ref::<InvokeError>().is_some() {
        return Some(ExitClass::Internal);
    }
    if e.downcast_ref::<crate::runtime::LoadError>().is_some() {
        // A component that cannot be read or is of another contract: what was given is wrong.
        return Some(ExitClass::InvalidConfig);
    }
    if let Some(c) = e.downcast_ref::<CredentialError>() {
        return Some(match c {
            CredentialError::Missing(_) | CredentialError::ReauthRequired(_) => {
                ExitClass::AuthRequired
            }
            CredentialError::Transient(_) => ExitClass::Transient,
            CredentialError::Storage(_) => ExitClass::Internal,
        });
    }
    if let Some(o) = e.downcast_ref::<OAuthError>() {
        return Some(match o {
            OAuthError::Denied { .. }
            | OAuthError::Refused { .. }
            | OAuthError::StateMismatch
            | OAuthError::MissingCode
            | OAuthError::NothingPasted
            | OAuthError::TimedOut(_) => ExitClass::AuthRequired,
            OAuthError::Transport(_) | OAuthError::Endpoint { .. } => ExitClass::Transient,
            OAuthError::InvalidRedirectBase { .. }
            | OAuthError::InvalidAuthorizeUrl { .. }
            | OAuthError::Listen { .. } => ExitClass::InvalidConfig,
            OAuthError::MalformedResponse(_) => ExitClass::Internal,
            OAuthError::Io(_) => ExitClass::Failure,
        });
    }
    if let Some(p) = e.downcast_ref::<PolicyError>() {
        return Some(match p {
            PolicyError::InvalidUrl { .. } => ExitClass::InvalidConfig,
            PolicyError::NotAllowed(_) => ExitClass::Internal,
        });
    }
    None
}

/// An error the command line raises itself, with its class.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Classified {
    pub class: ExitClass,
    pub message: String,
}

fn classified(class: ExitClass, message: impl Into<String>) -> anyhow::Error {
    Classified {
        class,
        message: message.into(),
    }
    .into()
}

/// A command line that cannot work as given (exit code 2, as clap's own usage errors).
fn usage(message: impl Into<String>) -> anyhow::Error {
    classified(ExitClass::Usage, message)
}

/// The exit codes, for `host-test --help`.
fn exit_codes_help() -> String {
    let mut help = String::from("Exit codes:\n  0  success\n");
    for class in ExitClass::ALL {
        help.push_str(&format!("  {}  {}\n", class.code(), class.name()));
    }
    help
}

#[cfg(test)]
mod exit_class_tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_usage_is_clap_s() {
        let mut codes: Vec<i32> = ExitClass::ALL.iter().map(|c| c.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), ExitClass::ALL.len());
        assert!(!codes.contains(&0));
        assert_eq!(ExitClass::Usage.code(), 2);
    }

    #[test]
    fn the_class_is_found_through_context() {
        let e = anyhow::Error::from(HostError::Connector(ConnectorError::NotFound("x".into())))
            .context("reading the record")
            .context("cat failed");
        assert_eq!(ExitClass::of(&e), ExitClass::NotFound);
        let e = anyhow::anyhow!("plain");
        assert_eq!(ExitClass::of(&e), ExitClass::Failure);
    }
}
