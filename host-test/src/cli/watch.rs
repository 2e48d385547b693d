//! `host-test watch`: keep tenants current until Ctrl-C, over [`crate::watch::Watcher`]. This
//! file only gathers the tenants (the database, `--tenant`, a `--tenants-file`), turns the flags
//! into options, prints one line per sync (standard output), logs the rest (standard error,
//! through `tracing`), serves metrics and health checks when asked (`--metrics-listen`), and
//! stops cleanly on Ctrl-C.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::app::{ConnectorHost, RunToken, validate_setting};
use crate::metrics::{Metrics, MetricsServer};
use crate::store::StoredCredentials;
use crate::watch::{
    SYNC_INTERVAL_MINUTES, SYNC_STRATEGY, WatchEvent, WatchOptions, WatchTenant, Watcher, human,
};

#[derive(clap::Args)]
pub struct WatchArgs {
    /// The database: a SQLite file (created if missing; one watch process), or a PostgreSQL
    /// URL (postgres://...; any number of watch processes share its tenants).
    #[arg(
        long,
        default_value = "host-test.db",
        value_name = "FILE | postgres://..."
    )]
    db: String,
    /// A tenant to watch (repeatable). Default: the tenants of --tenants-file, or else every
    /// tenant in the database that has credentials.
    #[arg(long = "tenant")]
    tenants: Vec<String>,
    /// Minutes between scheduled syncs for every tenant, for this run (default: each tenant's
    /// sync_interval_minutes setting, else the manifest's schedule's default).
    #[arg(long)]
    interval: Option<u64>,
    /// Only the schedule: no long-polling for changes between scheduled syncs, even for
    /// tenants whose sync_strategy is change-notifications.
    #[arg(long)]
    no_longpoll: bool,
    /// Syncs that may run at once across all tenants.
    #[arg(long, default_value_t = 4)]
    max_concurrent: usize,
    /// Tenants to configure and watch, in TOML: [[tenant]] name = "...", api_url = "..."
    /// (optional), access_token = "..." (optional), interval_minutes = N (optional),
    /// sync_strategy = "change-notifications" (optional; long-polls between syncs).
    ///
    /// An access_token never overwrites stored credentials. It is stored only for a tenant
    /// with no stored credentials at all. If the tenant has stored credentials with a refresh
    /// token (from `auth`), those win and the file's token is ignored, with a one-line notice
    /// on stderr. If only an access token is stored (from `connect`), the file's token is used
    /// instead for this watch run and is never written.
    #[arg(long)]
    tenants_file: Option<PathBuf>,
    /// Send the requests of tenants without an API URL of their own to this base URL.
    #[arg(long)]
    api_url: Option<String>,
    /// Seconds each long-poll asks the source to wait (30..=480; the connector may clamp it).
    #[arg(long, default_value_t = 30)]
    longpoll_timeout: u32,
    /// Serve Prometheus metrics on http://ADDR/metrics, with /healthz (the process is alive)
    /// and /readyz (the tenants are loaded and the workers run), e.g. 127.0.0.1:9898 (port 0:
    /// any free port, logged at start). Off unless given.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// PostgreSQL only: how long a worker's claim on a tenant lasts unless renewed (it renews
    /// every third of it while the sync runs). A worker that dies has its tenants taken over
    /// by the others within this time. Seconds, fractions allowed.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    lease_ttl: f64,
    /// PostgreSQL only: the most long-polls this worker holds at once (one thread each); the
    /// other workers take the rest.
    #[arg(long, default_value_t = 64)]
    max_polls: u32,
    /// PostgreSQL only: this worker's name in the leases and their history (default:
    /// host:pid). Must differ between live workers.
    #[arg(long)]
    worker_id: Option<String>,
    /// One JSON object per finished sync on stdout (tenant, trigger, result, kind, counts,
    /// duration; error and retry time for a failure) instead of a line for people.
    #[arg(long)]
    json: bool,
}

/// One `[[tenant]]` of a tenants file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantEntry {
    name: String,
    api_url: Option<String>,
    /// Never overwrites stored credentials: stored for a tenant with none; for a tenant with
    /// stored credentials with a refresh token (from `auth`), ignored with a notice (those
    /// win); for a tenant with only a stored access token, attached instead of it for this
    /// run, in memory only ([`ConnectorHost::use_token_for_this_run`]).
    access_token: Option<String>,
    interval_minutes: Option<u64>,
    /// The tenant's `sync_strategy` (manual, scheduled, change-notifications: the ones the
    /// manifest's schedule offers), stored as its setting.
    sync_strategy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantsFile {
    #[serde(default)]
    tenant: Vec<TenantEntry>,
}

/// The first Ctrl-C arrives on the returned channel (stop cleanly); a second one exits at once.
fn on_ctrl_c() -> Result<std::sync::mpsc::Receiver<()>> {
    let (ctrl_c_tx, ctrl_c_rx) = std::sync::mpsc::channel::<()>();
    let presses = AtomicU64::new(0);
    ctrlc::set_handler(move || {
        if presses.fetch_add(1, Ordering::SeqCst) > 0 {
            tracing::warn!("stopping now");
            std::process::exit(130);
        }
        let _ = ctrl_c_tx.send(());
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(ctrl_c_rx)
}

/// `--interval`, checked against the manifest's bounds, and the tenants named by `--tenants`
/// and `--tenants-file` (the file's tenants configured as it says), for either store.
fn interval_and_tenants(
    host: &ConnectorHost,
    args: &WatchArgs,
) -> Result<(Option<Duration>, Vec<String>)> {
    let interval = match args.interval {
        Some(minutes) => {
            // The same bounds as the stored setting, with the same message.
            validate_setting(host.manifest(), SYNC_INTERVAL_MINUTES, &minutes.to_string())
                .map_err(|e| anyhow::anyhow!("--interval: {e}"))?;
            Some(Duration::from_secs(minutes * 60))
        }
        None => None,
    };
    let mut names = args.tenants.clone();
    if let Some(file) = &args.tenants_file {
        for name in configure_from_file(host, file)? {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Ok((interval, names))
}

pub fn run(args: WatchArgs) -> Result<()> {
    if !(30..=480).contains(&args.longpoll_timeout) {
        bail!(
            "--longpoll-timeout {}: give 30 to 480 seconds",
            args.longpoll_timeout
        );
    }
    if crate::store::pg::is_postgres_url(&args.db) {
        return run_cluster_worker(args);
    }
    let host = Arc::new(ConnectorHost::new(
        Arc::new(super::load_component()?),
        super::open_store(&args.db)?,
        args.api_url.as_deref(),
        Default::default(),
    )?);
    let (interval, mut names) = interval_and_tenants(&host, &args)?;
    if names.is_empty() {
        for name in host.store().tenants()? {
            if host.store().credentials(&name)?.is_some() {
                names.push(name);
            }
        }
    }
    if names.is_empty() {
        bail!(
            "no tenants to watch: connect one (host-test connect / auth), or give --tenant or --tenants-file"
        );
    }

    let options = WatchOptions {
        interval,
        longpoll: !args.no_longpoll,
        longpoll_timeout_secs: args.longpoll_timeout,
        max_concurrent: args.max_concurrent,
        ..WatchOptions::default()
    };
    if options.max_concurrent == 0 {
        bail!("--max-concurrent must be at least 1");
    }

    // Ctrl-C: the first one stops cleanly (syncs finish their current page and commit), a
    // second one quits at once (SQLite rolls back an unfinished transaction, so even that
    // leaves whole pages only).
    let ctrl_c_rx = on_ctrl_c()?;

    // The endpoint first: /healthz answers while the tenants load, /readyz once they run.
    let metrics = args
        .metrics_listen
        .as_ref()
        .map(|_| Arc::new(Metrics::new()));
    let mut server = match (&args.metrics_listen, &metrics) {
        (Some(listen), Some(m)) => {
            let server = MetricsServer::start(listen, m.clone())
                .with_context(|| format!("--metrics-listen {listen}: cannot listen"))?;
            let addr = server.local_addr();
            tracing::info!(
                %addr,
                "metrics on http://{addr}/metrics, health on /healthz and /readyz"
            );
            Some(server)
        }
        _ => None,
    };

    let started = Instant::now();
    let syncs = Arc::new(AtomicU64::new(0));
    let counter = syncs.clone();
    let tenants: Vec<WatchTenant> = names.iter().map(|n| WatchTenant::new(n)).collect();
    let json = args.json;
    let mut watcher =
        Watcher::start_with_metrics(host.clone(), &tenants, options, metrics, move |event| {
            print_event(&event, started, &counter, json)
        })?;
    tracing::info!(
        tenants = watcher.tenants().len(),
        "watching {} tenant(s); Ctrl-C to stop",
        watcher.tenants().len()
    );

    // Nothing else to do until Ctrl-C; a closed channel (impossible while the handler lives)
    // stops too.
    let _ = ctrl_c_rx.recv();
    tracing::info!(
        "stopping: syncs in progress finish their current page and commit (Ctrl-C again to quit at once)"
    );
    watcher.stop();
    if let Some(s) = server.as_mut() {
        s.stop();
    }
    if args.json {
        // stdout stays one JSON object per sync; the summary goes with the logs.
        tracing::info!(
            "stopped after {} syncs in {:.1}s",
            syncs.load(Ordering::SeqCst),
            started.elapsed().as_secs_f64()
        );
    } else {
        println!(
            "stopped after {} syncs in {:.1}s",
            syncs.load(Ordering::SeqCst),
            started.elapsed().as_secs_f64()
        );
    }
    std::io::stdout().flush()?;
    Ok(())
}

/// `watch` on PostgreSQL: this process is one worker among any number sharing the database's
/// tenants (see `watch_pg`).
fn run_cluster_worker(args: WatchArgs) -> Result<()> {
    if !(args.lease_ttl.is_finite() && args.lease_ttl >= 0.3) {
        bail!("--lease-ttl {}: give at least 0.3 seconds", args.lease_ttl);
    }
    if args.max_concurrent == 0 {
        bail!("--max-concurrent must be at least 1");
    }
    if args.max_polls == 0 {
        bail!("--max-polls must be at least 1 (--no-longpoll turns long-polls off)");
    }
    if args.metrics_listen.is_some() {
        bail!("--metrics-listen is not offered with a PostgreSQL database yet");
    }
    let pg = Arc::new(crate::store::PgStore::connect(
        &args.db,
        super::host_keyring(&args.db)?,
    )?);
    let host = Arc::new(ConnectorHost::new(
        Arc::new(super::load_component()?),
        pg.clone(),
        args.api_url.as_deref(),
        Default::default(),
    )?);
    let (interval, only) = interval_and_tenants(&host, &args)?;
    let ctrl_c_rx = on_ctrl_c()?;
    super::watch_pg::run(
        host,
        pg,
        super::watch_pg::ClusterOptions {
            worker: args
                .worker_id
                .clone()
                .unwrap_or_else(super::watch_pg::default_worker_id),
            ttl: Duration::from_secs_f64(args.lease_ttl),
            max_concurrent: args.max_concurrent,
            max_polls: args.max_polls,
            only,
            retention: Default::default(),
            watch: WatchOptions {
                interval,
                longpoll: !args.no_longpoll,
                longpoll_timeout_secs: args.longpoll_timeout,
                max_concurrent: args.max_concurrent,
                ..WatchOptions::default()
            },
            json: args.json,
        },
        ctrl_c_rx,
    )?;
    std::io::stdout().flush()?;
    Ok(())
}

/// Apply a tenants file to the database (API URL, token, interval: validated like `config set`)
/// and return its tenant names. A token never overwrites stored credentials (see
/// [`TenantEntry::access_token`]).
fn configure_from_file(host: &ConnectorHost, path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: TenantsFile = toml::from_str(&text).map_err(|e| {
        super::classified(
            super::ExitClass::InvalidConfig,
            tenants_file_error(path, &text, &e),
        )
    })?;
    let mut names = Vec::new();
    for entry in file.tenant {
        let name = entry.name.trim().to_string();
        if name.is_empty() {
            bail!("{}: a [[tenant]] has an empty name", path.display());
        }
        let context = || format!("{}: tenant {name}", path.display());
        if let Some(url) = &entry.api_url {
            host.store()
                .set_tenant_api_url(&name, Some(url))
                .with_context(context)?;
        }
        if let Some(token) = entry.access_token.filter(|t| !t.trim().is_empty()) {
            let stored = host.store().credentials(&name).with_context(context)?;
            if stored.is_none() {
                // Nothing to overwrite: the file configures the tenant, as `connect` would.
                host.connect(
                    &name,
                    StoredCredentials {
                        access_token: token,
                        ..Default::default()
                    },
                )
                .with_context(context)?;
            } else if host
                .use_token_for_this_run(&name, token)
                .with_context(context)?
                == RunToken::Ignored
            {
                tracing::warn!(
                    tenant = %name,
                    "{}: tenant {name}: access_token ignored: the tenant has stored credentials with a refresh token (from `auth`), and those win; `host-test connect` replaces them",
                    path.display()
                );
            }
        }
        if let Some(strategy) = &entry.sync_strategy {
            host.set_setting(&name, SYNC_STRATEGY, strategy)
                .with_context(context)?;
        }
        if let Some(minutes) = entry.interval_minutes {
            host.set_setting(&name, SYNC_INTERVAL_MINUTES, &minutes.to_string())
                .with_context(context)?;
        }
        names.push(name);
    }
    Ok(names)
}

/// What is wrong with a tenants file, for people: its line and column and the parser's message,
/// never the text found there. The file holds access tokens, and the parser's own rendering
/// quotes the offending line (a misspelt `acces_token = "sl.…"` would put the token on the
/// screen); values it quotes in its message are withheld too.
fn tenants_file_error(path: &Path, text: &str, e: &toml::de::Error) -> String {
    let at = match e.span() {
        Some(span) => {
            let (line, column) = line_and_column(text, span.start);
            format!("line {line}, column {column}: ")
        }
        None => String::new(),
    };
    format!(
        "{} is not a valid tenants file: {at}{}",
        path.display(),
        withhold_values(e.message())
    )
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// A parser message with the values it quotes withheld: any "double-quoted" text, and any
/// `backquoted` text that is not a plain key name (field names such as `acces_token` stay, so
/// the message still says which key is wrong).
fn withhold_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = rest[open..].chars().next().unwrap_or('"');
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find(quote) else {
            // An unpaired quote: withhold everything after it.
            out.push('…');
            return out;
        };
        let quoted = &after[..close];
        // A key name, or the punctuation the parser expected (`"`, `=`, `]]`).
        let plain_key = quote == '`'
            && ((quoted.len() <= 40
                && quoted
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                || (quoted.len() <= 3 && quoted.chars().all(|c| c.is_ascii_punctuation())));
        out.push_str(if plain_key { quoted } else { "…" });
        out.push(quote);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

fn print_event(event: &WatchEvent, started: Instant, syncs: &AtomicU64, json: bool) {
    let at = started.elapsed().as_secs_f64();
    match event {
        WatchEvent::Watching {
            tenant,
            interval,
            longpoll,
            first_sync_in,
        } => {
            let schedule = match interval {
                Some(i) => format!(
                    "every {}{}",
                    human(*i),
                    if *longpoll {
                        ", plus changes by long-poll"
                    } else {
                        ""
                    }
                ),
                None => "manual: syncs only when asked".to_string(),
            };
            let first = first_sync_in.map(|d| {
                if d.is_zero() {
                    ", first sync now".to_string()
                } else {
                    format!(", first sync in {}", human(d))
                }
            });
            let _span = crate::telemetry::tenant_span(tenant).entered();
            tracing::info!("{tenant}: {schedule}{}", first.unwrap_or_default());
        }
        WatchEvent::Skipped { tenant, reason } => {
            let _span = crate::telemetry::tenant_span(tenant).entered();
            tracing::warn!("{tenant}: not watched: {reason}");
        }
        WatchEvent::SyncStarted { .. } => {}
        WatchEvent::SyncFinished(report) => {
            syncs.fetch_add(1, Ordering::SeqCst);
            // One line per sync, whole, so concurrent tenants never interleave within a line.
            let mut out = std::io::stdout().lock();
            let _ = if json {
                writeln!(out, "{}", report.to_json())
            } else {
                writeln!(out, "[{at:8.1}s] {}", report.line())
            };
            let _ = out.flush();
        }
        // Logged by the watcher, in the tenant's span.
        WatchEvent::Longpoll { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_counted_in_lines_and_characters() {
        let text = "a\nbé = 1\n";
        assert_eq!(line_and_column(text, 0), (1, 1));
        assert_eq!(line_and_column(text, 2), (2, 1));
        assert_eq!(line_and_column(text, "a\nbé".len()), (2, 3));
        assert_eq!(line_and_column(text, 999), (3, 1));
        // Inside `é`: counted from the start of that character.
        assert_eq!(line_and_column(text, 4), (2, 2));
    }

    #[test]
    fn quoted_values_are_withheld_and_key_names_kept() {
        assert_eq!(
            withhold_values("unknown field `acces_token`, expected one of `name`, `api_url`"),
            "unknown field `acces_token`, expected one of `name`, `api_url`"
        );
        assert_eq!(
            withhold_values("invalid type: string \"sl.secret\", expected u64"),
            "invalid type: string \"…\", expected u64"
        );
        assert_eq!(
            withhold_values("unknown field `sl.Secret.Token+x`"),
            "unknown field `…`"
        );
        assert_eq!(withhold_values("open \"sl.secret"), "open \"…");
        assert_eq!(
            withhold_values("invalid basic string, expected `\"`"),
            "invalid basic string, expected `\"`"
        );
    }
}
