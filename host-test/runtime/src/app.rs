//! The host as an application: one runtime, one store, the services, and the operations the
//! CLI, the demo and the tests run for a tenant. Each operation gets a fresh instance.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bindings::connector::{ReindexSummary, SignedUrl, StreamSummary, SyncSummary};
use crate::bindings::manifest_types::{ConnectorManifest, FieldType, SyncStrategy};
use crate::bindings::types::{ConnectorError, User};
use crate::credentials::RunTokens;
use crate::http::HttpSettings;
use crate::policy::NetPolicy;
use crate::runtime::{InvokeError, Runtime};
use crate::store::{RecordStore, SqliteStore, StoreError, StoredCredentials, SyncOutcome};
use crate::tenant::{InvocationStats, Observer, Services, TenantContext};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    #[error("{}", describe(.0))]
    Connector(ConnectorError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Setup(String),
    /// Another process holds the tenant's writer right.
    #[error(transparent)]
    Busy(#[from] crate::store::WriterLockError),
}

pub fn describe(e: &ConnectorError) -> String {
    match e {
        ConnectorError::AuthRequired(m) => format!("authorization required: {m}"),
        ConnectorError::RateLimited(r) => format!(
            "rate limited ({}); retry after {} ms",
            r.reason, r.retry_after_ms
        ),
        ConnectorError::NotFound(m) => format!("not found: {m}"),
        ConnectorError::InvalidConfig(m) => format!("invalid configuration: {m}"),
        ConnectorError::Transient(m) => format!("temporary failure: {m}"),
        ConnectorError::Integrity(m) => format!("integrity check failed: {m}"),
        ConnectorError::Internal(m) => format!("internal error: {m}"),
        ConnectorError::Unsupported(m) => format!("not supported by this connector: {m}"),
    }
}

/// What became of an access token given for one run ([`ConnectorHost::use_token_for_this_run`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunToken {
    /// The tenant has no stored credentials: the token is attached for this run.
    Used,
    /// The tenant has only an access token stored (no refresh token): the given token is
    /// attached instead for this run; the stored one is kept as it is.
    InsteadOfStored,
    /// The tenant has stored credentials with a refresh token: those win, and the given token
    /// is not used.
    Ignored,
}

/// What an operation returned, and what the host measured of it.
#[derive(Debug)]
pub struct Outcome<T> {
    pub value: T,
    pub stats: InvocationStats,
    pub peak_memory: usize,
    pub elapsed: Duration,
}

pub struct ConnectorHost {
    runtime: Arc<Runtime>,
    services: Arc<Services>,
    manifest: ConnectorManifest,
    http: HttpSettings,
    /// Services for tenants whose requests go to another base URL, by that URL.
    redirected: Mutex<HashMap<String, Arc<Services>>>,
    /// Access tokens given for one run, shared by every set of services; never stored.
    run_tokens: Arc<RunTokens>,
    /// Where each invocation's measurements go ([`ConnectorHost::set_metrics`]).
    metrics: std::sync::RwLock<Option<Arc<crate::metrics::Metrics>>>,
    /// One writer per tenant: operations that write records and the sync position (`sync`,
    /// `reindex-records`) of one tenant run one at a time, so neither purges marks the other
    /// is still making, nor overwrites the position the other just committed. Within this
    /// process by these mutexes; across processes by the store's writer right (`writing`).
    writers: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl ConnectorHost {
    /// A host for the component loaded in `runtime` over the SQLite database at `db`;
    /// `api_url` points every host the manifest declares at another server (an emulator)
    /// instead of the real service.
    pub fn open(
        runtime: Runtime,
        db: &Path,
        api_url: Option<&str>,
    ) -> Result<ConnectorHost, HostError> {
        let store = SqliteStore::open(db)?;
        ConnectorHost::new(
            Arc::new(runtime),
            Arc::new(store),
            api_url,
            HttpSettings::default(),
        )
    }

    pub fn new(
        runtime: Arc<Runtime>,
        store: Arc<dyn RecordStore>,
        api_url: Option<&str>,
        http: HttpSettings,
    ) -> Result<ConnectorHost, HostError> {
        // The manifest comes from the component itself, in a sandbox with no network.
        let bootstrap_policy = NetPolicy::new(Vec::<String>::new(), None)
            .map_err(|e| HostError::Setup(e.to_string()))?;
        let bootstrap = Services::new(store.clone(), bootstrap_policy, http.clone(), "");
        let manifest = runtime
            .instantiate(TenantContext::new("-", bootstrap))?
            .manifest()?;
        let policy = NetPolicy::new(manifest.allowed_hosts.clone(), api_url)
            .map_err(|e| HostError::Setup(e.to_string()))?;
        let run_tokens = Arc::new(RunTokens::default());
        let services = Services::with_run_tokens(
            store,
            policy,
            http.clone(),
            token_url(&manifest),
            run_tokens.clone(),
        );
        Ok(ConnectorHost {
            runtime,
            services,
            manifest,
            http,
            redirected: Mutex::new(HashMap::new()),
            run_tokens,
            metrics: std::sync::RwLock::new(None),
            writers: Mutex::new(HashMap::new()),
        })
    }

    /// The tenant's writer lock (see `writers`).
    fn writer(&self, tenant: &str) -> Arc<Mutex<()>> {
        self.writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tenant.to_string())
            .or_default()
            .clone()
    }

    /// The tenant's writer right across processes, taken under its in-process mutex: a second
    /// process that writes the tenant is refused with who holds it (`HostError::Busy`).
    fn writing(
        &self,
        tenant: &str,
        operation: &str,
    ) -> Result<Option<crate::store::WriterRight>, HostError> {
        let holder = crate::store::writer_lock::this_process(operation);
        Ok(self.services.store.writer_right(tenant, &holder)?)
    }

    /// The same host (component, manifest, network policy, run tokens, metrics) over another
    /// store: how a worker runs one tenant's sync through the fenced store of its lease, whose
    /// writes fail once the lease is lost. Costs no instantiation.
    pub fn over_store(&self, store: Arc<dyn RecordStore>) -> ConnectorHost {
        self.over_store_with(store, self.run_tokens.clone())
    }

    fn over_store_with(
        &self,
        store: Arc<dyn RecordStore>,
        run_tokens: Arc<RunTokens>,
    ) -> ConnectorHost {
        let services = Services::with_run_tokens(
            store,
            self.services.policy.clone(),
            self.http.clone(),
            token_url(&self.manifest),
            run_tokens.clone(),
        );
        ConnectorHost {
            runtime: self.runtime.clone(),
            services,
            manifest: self.manifest.clone(),
            http: self.http.clone(),
            redirected: Mutex::new(HashMap::new()),
            run_tokens,
            metrics: std::sync::RwLock::new(self.metrics()),
            writers: Mutex::new(HashMap::new()),
        }
    }

    pub fn manifest(&self) -> &ConnectorManifest {
        &self.manifest
    }

    pub fn store(&self) -> &Arc<dyn RecordStore> {
        &self.services.store
    }

    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Count what every later invocation does (API calls, retries, waits) in `metrics`; `None`
    /// stops counting.
    pub fn set_metrics(&self, metrics: Option<Arc<crate::metrics::Metrics>>) {
        *self.metrics.write().unwrap_or_else(|p| p.into_inner()) = metrics;
    }

    pub fn metrics(&self) -> Option<Arc<crate::metrics::Metrics>> {
        self.metrics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Store an access token (and optionally a refresh token) for the tenant, replacing what
    /// was stored, without testing them ([`ConnectorHost::connect_checked`] tests first). It
    /// also ends any token given for one run to that tenant, so the stored credentials are the
    /// ones used.
    pub fn connect(&self, tenant: &str, creds: StoredCredentials) -> Result<(), HostError> {
        self.services.store.put_credentials(tenant, &creds)?;
        self.run_tokens.remove(tenant);
        Ok(())
    }

    /// Connect the tenant: test `creds` against the service (the component's
    /// `test-connection`), and store them only if it accepted them. Nothing of the tenant is
    /// written before that: the test runs over a store of its own in memory, holding only the
    /// given credentials and a copy of the tenant's settings and base URL, so a refused token
    /// leaves no tenant row, no credentials, no flag and no setting behind (a tenant connected
    /// before keeps what it had). A token refreshed during the test is stored as refreshed.
    pub fn connect_checked(
        &self,
        tenant: &str,
        creds: StoredCredentials,
    ) -> Result<Outcome<User>, HostError> {
        let store = &self.services.store;
        let trial = SqliteStore::open_in_memory()?;
        for (key, value) in store.settings(tenant)? {
            trial.set_setting(tenant, &key, &value)?;
        }
        if let Some(url) = store.tenant_api_url(tenant)? {
            trial.set_tenant_api_url(tenant, Some(&url))?;
        }
        trial.put_credentials(tenant, &creds)?;
        let trial: Arc<dyn RecordStore> = Arc::new(trial);
        // No token given for one run applies to the test: it is of the credentials given.
        let account = self
            .over_store_with(trial.clone(), Arc::default())
            .test_connection(tenant)?;
        let tested = trial.credentials(tenant)?.unwrap_or(creds);
        self.connect(tenant, tested)?;
        Ok(account)
    }

    /// Use `token` for the tenant's requests while this host lives, without writing it
    /// anywhere: the stored credentials (refresh token, client id and secret, expiry) are never
    /// touched. Stored credentials with a refresh token win and the token is not used
    /// ([`RunToken::Ignored`]); otherwise it is attached instead of any stored access token and
    /// never refreshed. A refusal of it ends the operation with `auth-required` but does not
    /// flag the tenant as needing re-authentication (its stored credentials were not tried).
    pub fn use_token_for_this_run(
        &self,
        tenant: &str,
        token: String,
    ) -> Result<RunToken, HostError> {
        let outcome = match self.services.store.credentials(tenant)? {
            Some(c) if c.refresh_token.is_some() => return Ok(RunToken::Ignored),
            Some(_) => RunToken::InsteadOfStored,
            None => RunToken::Used,
        };
        self.run_tokens.set(tenant, token);
        Ok(outcome)
    }

    /// The services a tenant's instance uses: the host's, or a set whose network policy sends
    /// the declared hosts to the tenant's own base URL.
    pub fn services_for(&self, tenant: &str) -> Result<Arc<Services>, HostError> {
        let Some(url) = self.services.store.tenant_api_url(tenant)? else {
            return Ok(self.services.clone());
        };
        let mut redirected = self.redirected.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(services) = redirected.get(&url) {
            return Ok(services.clone());
        }
        let policy = NetPolicy::new(self.manifest.allowed_hosts.clone(), Some(&url))
            .map_err(|e| HostError::Setup(e.to_string()))?;
        let services = Services::with_run_tokens(
            self.services.store.clone(),
            policy,
            self.http.clone(),
            token_url(&self.manifest),
            self.run_tokens.clone(),
        );
        redirected.insert(url, services.clone());
        Ok(services)
    }

    /// The tenant's context: its validated settings, and nothing else of any other tenant.
    /// The connector gets its own settings only; the schedule's (`sync_strategy`,
    /// `sync_interval_minutes`) are the host's.
    pub fn context(&self, tenant: &str) -> Result<TenantContext, HostError> {
        self.services.store.ensure_tenant(tenant)?;
        let settings = self.services.store.settings(tenant)?;
        for (key, value) in &settings {
            validate_setting(&self.manifest, key, value).map_err(invalid_setting)?;
        }
        let connector_settings = settings
            .into_iter()
            .filter(|(key, _)| !is_host_setting(key))
            .collect();
        Ok(
            TenantContext::new(tenant, self.services_for(tenant)?)
                .with_settings(connector_settings),
        )
    }

    /// Set a tenant's setting after checking it against the manifest's field.
    pub fn set_setting(&self, tenant: &str, key: &str, value: &str) -> Result<(), HostError> {
        validate_setting(&self.manifest, key, value).map_err(invalid_setting)?;
        self.services.store.set_setting(tenant, key, value)?;
        Ok(())
    }

    fn invoke<T>(
        &self,
        op: &'static str,
        ctx: TenantContext,
        call: impl FnOnce(
            &mut crate::runtime::Instance,
        ) -> Result<Result<T, ConnectorError>, InvokeError>,
    ) -> Result<Outcome<T>, HostError> {
        let started = Instant::now();
        let mut instance = self.runtime.instantiate(ctx)?;
        let result = call(&mut instance);
        let (ctx, stats, peak_memory) = instance.into_parts();
        if let Some(metrics) = self.metrics() {
            metrics.record_invocation(op, &stats);
        }
        tracing::debug!(
            requests = stats.total_requests(),
            http_ms = stats.http_time.as_millis() as u64,
            store_ms = stats.store_time.as_millis() as u64,
            waited_ms = stats.sleep_time.as_millis() as u64,
            peak_memory,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "invocation finished"
        );
        let value = result?;
        if let Err(ConnectorError::AuthRequired(_)) = &value
            && !ctx.services.credentials.run_token_in_force(&ctx.tenant)?
        {
            // Only the user can fix this (a refused refresh, a revoked or unlinked token, a
            // missing scope): flag the tenant so `status` says so and later runs do not go back
            // to the token endpoint with a refresh token it already refused. Not when the token
            // refused was one given for this run: the stored credentials were not tried.
            self.services.store.set_needs_reauth(&ctx.tenant, true)?;
        }
        let value = value.map_err(HostError::Connector)?;
        Ok(Outcome {
            value,
            stats,
            peak_memory,
            elapsed: started.elapsed(),
        })
    }

    /// One sync (full or incremental). The result is also recorded for `status`.
    pub fn sync(
        &self,
        tenant: &str,
        observer: Option<Observer>,
        stop: Option<Arc<AtomicBool>>,
    ) -> Result<Outcome<SyncSummary>, HostError> {
        let _span = crate::telemetry::op_span(tenant, "sync");
        let writer = self.writer(tenant);
        let _writing = writer.lock().unwrap_or_else(|p| p.into_inner());
        let _right = self.writing(tenant, "sync")?;
        let mut ctx = self.context(tenant)?;
        if let Some(o) = observer {
            ctx = ctx.with_observer(o);
        }
        if let Some(s) = stop {
            ctx = ctx.with_stop(s);
        }
        let outcome = self.invoke("sync", ctx, |i| i.sync());
        let typed = match &outcome {
            Ok(o) if o.value.interrupted => SyncOutcome::Interrupted,
            Ok(_) => SyncOutcome::Ok,
            Err(_) => SyncOutcome::Failed,
        };
        // The note is for people (`status`); the scheduler reads only the typed outcome.
        let note = match &outcome {
            Ok(o) => format!(
                "ok: {} pages, {} entries, {} created, {} content, {} metadata, {} deleted{}",
                o.value.pages,
                o.value.entries,
                o.value.created,
                o.value.content_updates,
                o.value.metadata_updates,
                o.value.deletions,
                if o.value.interrupted {
                    " (interrupted)"
                } else {
                    ""
                }
            ),
            Err(e) => format!("failed: {e}"),
        };
        self.services
            .store
            .record_sync_result(tenant, typed, &note)?;
        outcome
    }

    pub fn test_connection(&self, tenant: &str) -> Result<Outcome<User>, HostError> {
        let _span = crate::telemetry::op_span(tenant, "test-connection");
        self.invoke("test-connection", self.context(tenant)?, |i| {
            i.test_connection()
        })
    }

    pub fn signed_url(&self, tenant: &str, id: &str) -> Result<Outcome<SignedUrl>, HostError> {
        let _span = crate::telemetry::op_span(tenant, "get-signed-url");
        self.invoke("get-signed-url", self.context(tenant)?, |i| {
            i.get_signed_url(id)
        })
    }

    pub fn stream(
        &self,
        tenant: &str,
        id: &str,
        sink: Box<dyn Write + Send>,
    ) -> Result<Outcome<StreamSummary>, HostError> {
        let _span = crate::telemetry::op_span(tenant, "stream-record");
        self.invoke(
            "stream-record",
            self.context(tenant)?.with_sink(sink),
            |i| i.stream_record(id),
        )
    }

    pub fn reindex(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> Result<Outcome<ReindexSummary>, HostError> {
        let _span = crate::telemetry::op_span(tenant, "reindex-records");
        let writer = self.writer(tenant);
        let _writing = writer.lock().unwrap_or_else(|p| p.into_inner());
        let _right = self.writing(tenant, "reindex-records")?;
        self.invoke("reindex-records", self.context(tenant)?, |i| {
            i.reindex_records(ids)
        })
    }

    /// The component's `wait-for-changes`: it waits (e.g. a long poll on the stored position)
    /// up to about `timeout_secs` for a change after the tenant's stored position, and says how
    /// long to back off. It reads that position and writes nothing, so it may run beside a sync
    /// of the same tenant; `stop` cuts the guest's retry waits short.
    pub fn wait_for_changes(
        &self,
        tenant: &str,
        timeout_secs: u32,
        stop: Option<Arc<AtomicBool>>,
    ) -> Result<Outcome<crate::bindings::connector::ChangeHint>, HostError> {
        let _span = crate::telemetry::op_span(tenant, "wait-for-changes");
        let mut ctx = self.context(tenant)?;
        if let Some(s) = stop {
            ctx = ctx.with_stop(s);
        }
        self.invoke("wait-for-changes", ctx, |i| {
            i.wait_for_changes(timeout_secs)
        })
    }

    /// The component's `cleanup`: release what the connection holds at the service (e.g.
    /// revoke the token). Stored credentials are the caller's to delete.
    pub fn cleanup(&self, tenant: &str) -> Result<Outcome<()>, HostError> {
        let _span = crate::telemetry::op_span(tenant, "cleanup");
        self.invoke("cleanup", self.context(tenant)?, |i| i.cleanup())
    }

    /// Resolve a record given by a person: by exact external id, else by exact `path.lower`,
    /// else by a case-insensitive comparison of `path.lower` (Unicode `to_lowercase` of both
    /// sides). That last step is a convenience, not the source's rule: how a source folds
    /// case (it may differ from `to_lowercase` in corners: final sigma, dotted I) is the
    /// source's business, and
    /// a path the generic comparison does not meet must be given as stored, or by id.
    pub fn resolve_record(&self, tenant: &str, id_or_path: &str) -> Result<String, HostError> {
        let store = &self.services.store;
        if let Some(found) = store
            .get_records(tenant, &[id_or_path.to_string()])?
            .into_iter()
            .find(|s| !s.pending_removal)
        {
            return Ok(found.record.external_id);
        }
        if let Some(found) = store
            .find_by_paths(tenant, &[id_or_path.to_string()])?
            .into_iter()
            .flatten()
            .next()
        {
            return Ok(found.external_id);
        }
        let wanted = id_or_path.to_lowercase();
        let found = store.records(tenant)?.into_iter().find(|r| {
            r.path_lower()
                .is_some_and(|lower| lower.to_lowercase() == wanted)
        });
        match found {
            Some(r) => Ok(r.external_id),
            None => Err(HostError::Connector(ConnectorError::NotFound(format!(
                "no record with the id or path {id_or_path}"
            )))),
        }
    }
}

/// The token endpoint of the manifest's OAuth configuration; empty for a connector without
/// OAuth (its token is given directly, and cannot be refreshed).
fn token_url(manifest: &ConnectorManifest) -> &str {
    manifest.oauth.as_ref().map_or("", |o| o.token_url.as_str())
}

/// The tenant settings the host owns (the schedule), checked against the manifest's
/// `schedule` rather than its config fields, and never handed to the connector.
pub const SYNC_STRATEGY: &str = "sync_strategy";
pub const SYNC_INTERVAL_MINUTES: &str = "sync_interval_minutes";

pub fn is_host_setting(key: &str) -> bool {
    key == SYNC_STRATEGY || key == SYNC_INTERVAL_MINUTES
}

pub fn strategy_str(strategy: SyncStrategy) -> &'static str {
    match strategy {
        SyncStrategy::Manual => "manual",
        SyncStrategy::Scheduled => "scheduled",
        SyncStrategy::ChangeNotifications => "change-notifications",
    }
}

pub fn parse_strategy(s: &str) -> Option<SyncStrategy> {
    match s {
        "manual" => Some(SyncStrategy::Manual),
        "scheduled" => Some(SyncStrategy::Scheduled),
        "change-notifications" => Some(SyncStrategy::ChangeNotifications),
        _ => None,
    }
}

/// A setting the manifest refuses (given, or found stored): the connector's own class of
/// error for it, so callers (the CLI's exit codes, `watch`'s retry policy) treat it as such.
fn invalid_setting(message: String) -> HostError {
    HostError::Connector(ConnectorError::InvalidConfig(message))
}

/// Check a setting against the manifest's field of that key.
pub fn validate_setting(
    manifest: &ConnectorManifest,
    key: &str,
    value: &str,
) -> Result<(), String> {
    let schedule = &manifest.schedule;
    if key == SYNC_STRATEGY {
        let offered: Vec<&str> = schedule
            .strategies
            .iter()
            .map(|s| strategy_str(*s))
            .collect();
        return match parse_strategy(value.trim()) {
            Some(s) if schedule.strategies.contains(&s) => Ok(()),
            _ => Err(format!(
                "{key}: '{value}' is not one of {}",
                offered.join(", ")
            )),
        };
    }
    if key == SYNC_INTERVAL_MINUTES {
        let n: u32 = value
            .trim()
            .parse()
            .map_err(|_| format!("{key}: '{value}' is not a whole number"))?;
        if n < schedule.min_interval_minutes || n > schedule.max_interval_minutes {
            return Err(format!(
                "{key}: {n} is out of bounds [{}, {}]",
                schedule.min_interval_minutes, schedule.max_interval_minutes
            ));
        }
        return Ok(());
    }
    let Some(field) = manifest.config_fields.iter().find(|f| f.key == key) else {
        let known: Vec<&str> = [SYNC_STRATEGY, SYNC_INTERVAL_MINUTES]
            .into_iter()
            .chain(manifest.config_fields.iter().map(|f| f.key.as_str()))
            .collect();
        return Err(format!(
            "unknown setting '{key}'; known settings: {}",
            known.join(", ")
        ));
    };
    let value = value.trim();
    match &field.field_type {
        FieldType::Integer(bounds) => {
            let n: i64 = value
                .parse()
                .map_err(|_| format!("{key}: '{value}' is not a whole number"))?;
            if n < bounds.min || n > bounds.max {
                return Err(format!(
                    "{key}: {n} is out of bounds [{}, {}]",
                    bounds.min, bounds.max
                ));
            }
        }
        FieldType::Boolean => {
            if value != "true" && value != "false" {
                return Err(format!("{key}: '{value}' is not true or false"));
            }
        }
        FieldType::Choice(choices) => {
            if !choices.iter().any(|c| c == value) {
                return Err(format!(
                    "{key}: '{value}' is not one of {}",
                    choices.join(", ")
                ));
            }
        }
        FieldType::Date => {
            if !value.is_empty() && !is_date(value) {
                return Err(format!("{key}: '{value}' is not a date (YYYY-MM-DD)"));
            }
        }
        FieldType::Text | FieldType::TextList => {}
    }
    Ok(())
}

fn is_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() != 3 || parts[0].len() != 4 || parts[1].len() != 2 || parts[2].len() != 2 {
        return false;
    }
    let (Ok(_y), Ok(m), Ok(d)) = (
        parts[0].parse::<u32>(),
        parts[1].parse::<u32>(),
        parts[2].parse::<u32>(),
    ) else {
        return false;
    };
    (1..=12).contains(&m) && (1..=31).contains(&d)
}
