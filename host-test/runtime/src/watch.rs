//! Keeping tenants current: scheduled syncs, near-real-time changes by long-polling, and many
//! tenants on one host.
//!
//! The host only runs the loop; the connector decides the source's specifics (its
//! `wait-for-changes` export waits on the stored position, e.g. a long poll, and says how long
//! to back off). Each tenant's schedule comes from the manifest's typed `schedule` and the
//! tenant's host-owned settings `sync_strategy` (manual, scheduled, change-notifications) and
//! `sync_interval_minutes`, validated against it: `manual` is never scheduled, `scheduled`
//! runs every interval, `change-notifications` also long-polls with `wait-for-changes`. A
//! connector that answers `unsupported` there is simply run on its schedule. The shape:
//!
//! - one [`Slot`] per tenant, all under one mutex: when its next scheduled sync is due, whether a
//!   sync was asked for, whether one is running, whether a follow-up is pending, its failure
//!   back-off. Every decision is taken under that lock, so the rules below hold by construction;
//! - `max_concurrent` worker threads. Each takes the tenant whose sync is the most overdue and is
//!   not running, runs the sync (a fresh sandbox instance, as every call), and puts the outcome
//!   back. A running tenant is never taken again: at most one sync per tenant (single flight).
//!   A request during a sync only sets the follow-up flag, so any number of change signals
//!   during one sync give exactly one follow-up sync, never two syncs on one cursor;
//! - one long-poll thread per tenant on `change-notifications`. It waits while a sync of its tenant is running or
//!   due (that sync sees the changes anyway, and the cursor it leaves is the one worth polling),
//!   then calls the component's `wait_for_changes`, and on `changes` requests a sync. It holds
//!   no slot: a long-poll and a sync of one tenant may overlap, only syncs are single-flight.
//!   The `backoff` the source asks for is slept before the next long-poll; a failed long-poll is
//!   retried with a doubling delay while the schedule keeps the tenant current. A tenant backing
//!   off from a failed sync does not long-poll until its back-off ends (a long-poll is a request
//!   too), and a long-poll answered with a rate limit backs the tenant's syncs off as well;
//! - failures stay with their tenant: a failed sync backs that tenant off (a rate limit for as
//!   long as the source asked, a revoked token until the next scheduled attempt) and nothing
//!   else. Tenants share only the store (whose writes are short transactions), the host's HTTP
//!   client and the worker pool, which always serves the most overdue tenant first. A tenant
//!   that is slow or waiting out a rate limit inside a sync does hold one worker meanwhile:
//!   size `max_concurrent` above the number of tenants expected to be in trouble at once.
//!
//! [`Watcher::stop`] sets the stop flag every sync was given (`host.should-stop`): a sync in
//! progress finishes and commits its current page, then returns; the workers are joined.
//! Long-polls write nothing, so one still blocked in the network after a grace period is left
//! to finish on its own.
//!
//! Everything a worker or a long-poll thread does for a tenant runs in that tenant's `tenant`
//! span (see [`crate::telemetry`]): each sync and long-poll is logged, failures at warn. Given
//! [`Metrics`] ([`Watcher::start_with_metrics`]), the watcher counts syncs, long-polls and what
//! each invocation did there, and is ready (`/readyz`) from the moment its threads run until
//! [`Watcher::stop`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::app::{ConnectorHost, HostError, parse_strategy, validate_setting};
use crate::bindings::connector::{ChangeHint, SyncKind, SyncSummary};
use crate::bindings::manifest_types::SyncStrategy;
use crate::bindings::types::ConnectorError;
use crate::metrics::Metrics;
use crate::store::SyncOutcome;

/// The host-owned tenant settings the scheduler reads.
pub use crate::app::{SYNC_INTERVAL_MINUTES, SYNC_STRATEGY};

/// How the watcher runs. `Default` is what `host-test watch` uses without flags.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Interval for every tenant that has none of its own; `None`: each tenant's
    /// `sync_interval_minutes` setting (or the manifest's default). Sub-minute values are
    /// accepted here (tests); the command line takes whole minutes.
    pub interval: Option<Duration>,
    /// Long-poll for changes between scheduled syncs, for tenants whose strategy is
    /// `change-notifications` (false: no tenant long-polls).
    pub longpoll: bool,
    /// Seconds each long-poll asks the source to wait (the connector clamps it to what its
    /// source accepts).
    pub longpoll_timeout_secs: u32,
    /// Syncs that may run at once, across all tenants (worker threads).
    pub max_concurrent: usize,
    /// Long-polls of one tenant start at least this far apart, whatever the source answers (a
    /// source that returns at once must not turn the loop into a busy one).
    pub longpoll_min_spacing: Duration,
    /// Wait after a failed long-poll, doubled per consecutive failure up to `longpoll_retry_max`.
    pub longpoll_retry_base: Duration,
    pub longpoll_retry_max: Duration,
    /// Wait after a failed sync (temporary failures), doubled per consecutive failure up to
    /// `sync_retry_max` and never beyond the tenant's interval.
    pub sync_retry_base: Duration,
    pub sync_retry_max: Duration,
    /// How long `stop` waits for long-polls still in the network before leaving them behind.
    pub stop_grace: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            interval: None,
            longpoll: true,
            longpoll_timeout_secs: 30,
            max_concurrent: 4,
            longpoll_min_spacing: Duration::from_secs(1),
            longpoll_retry_base: Duration::from_secs(5),
            longpoll_retry_max: Duration::from_secs(300),
            sync_retry_base: Duration::from_secs(10),
            sync_retry_max: Duration::from_secs(900),
            stop_grace: Duration::from_secs(2),
        }
    }
}

/// A tenant to watch, with an optional interval of its own (overrides the options' and the
/// tenant's setting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchTenant {
    pub name: String,
    pub interval: Option<Duration>,
}

impl WatchTenant {
    pub fn new(name: &str) -> WatchTenant {
        WatchTenant {
            name: name.to_string(),
            interval: None,
        }
    }

    pub fn every(name: &str, interval: Duration) -> WatchTenant {
        WatchTenant {
            name: name.to_string(),
            interval: Some(interval),
        }
    }
}

/// Why a sync ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// The tenant's schedule came due (also the first sync of a tenant never synced, or whose
    /// last sync is older than its interval).
    Scheduled,
    /// The long-poll reported changes.
    Change,
    /// Requests arrived while a sync was running: one sync after it, for all of them.
    FollowUp,
    /// The previous sync failed; this is the retry after the back-off.
    Retry,
    /// Asked for through [`Watcher::request_sync`].
    Requested,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Scheduled => "scheduled",
            Trigger::Change => "change",
            Trigger::FollowUp => "follow-up",
            Trigger::Retry => "retry",
            Trigger::Requested => "requested",
        }
    }
}

/// One finished sync.
#[derive(Debug, Clone)]
pub struct SyncReport {
    pub tenant: String,
    pub trigger: Trigger,
    pub started: Instant,
    pub duration: Duration,
    /// The connector's summary, or the error as the host describes it.
    pub outcome: Result<SyncSummary, String>,
    /// For a failure: when the tenant will be tried again (`None`: at its next scheduled time,
    /// or only when asked for a manual tenant).
    pub retry_in: Option<Duration>,
}

impl SyncReport {
    /// Record changes the sync applied (created + content + metadata + deleted).
    pub fn changes_applied(&self) -> u64 {
        match &self.outcome {
            Ok(s) => s.created + s.content_updates + s.metadata_updates + s.deletions,
            Err(_) => 0,
        }
    }

    pub fn finished(&self) -> Instant {
        self.started + self.duration
    }

    /// The report as `host-test watch --json` prints it: one object per sync.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "tenant": self.tenant,
            "trigger": self.trigger.as_str(),
            "duration_secs": self.duration.as_secs_f64(),
        });
        match &self.outcome {
            Ok(s) => {
                v["result"] = "ok".into();
                v["kind"] = kind_str(s.kind).into();
                v["pages"] = s.pages.into();
                v["entries"] = s.entries.into();
                v["created"] = s.created.into();
                v["content_updates"] = s.content_updates.into();
                v["metadata_updates"] = s.metadata_updates.into();
                v["deletions"] = s.deletions.into();
                v["api_calls"] = s.api_calls.into();
                v["interrupted"] = s.interrupted.into();
            }
            Err(e) => {
                v["result"] = "failed".into();
                v["error"] = e.as_str().into();
                v["retry_in_secs"] = self.retry_in.map(|d| d.as_secs_f64()).into();
            }
        }
        v
    }

    /// The line `host-test watch` prints.
    pub fn line(&self) -> String {
        match &self.outcome {
            Ok(s) => format!(
                "{} {} {} sync: {} changes applied ({} created, {} content, {} metadata, {} deleted), {} pages, {:.2}s{}",
                self.tenant,
                self.trigger.as_str(),
                kind_str(s.kind),
                self.changes_applied(),
                s.created,
                s.content_updates,
                s.metadata_updates,
                s.deletions,
                s.pages,
                self.duration.as_secs_f64(),
                if s.interrupted {
                    " (interrupted; the next sync resumes)"
                } else {
                    ""
                }
            ),
            Err(e) => format!(
                "{} {} sync failed after {:.2}s: {e}; {}",
                self.tenant,
                self.trigger.as_str(),
                self.duration.as_secs_f64(),
                match self.retry_in {
                    Some(d) => format!("retrying in {}", human(d)),
                    None => "next attempt at the next scheduled time".to_string(),
                }
            ),
        }
    }
}

/// What the watcher tells its observer, in the order it happens per tenant.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// A tenant is watched: its schedule (`None`: manual, syncs only when asked) and whether it
    /// long-polls.
    Watching {
        tenant: String,
        interval: Option<Duration>,
        longpoll: bool,
        first_sync_in: Option<Duration>,
    },
    /// A tenant could not be watched (its stored settings are invalid); the others are.
    Skipped {
        tenant: String,
        reason: String,
    },
    SyncStarted {
        tenant: String,
        trigger: Trigger,
        at: Instant,
    },
    SyncFinished(SyncReport),
    /// One long-poll returned: its hint, or the error (then the schedule carries the tenant and
    /// the long-poll is tried again after `retry_in`).
    Longpoll {
        tenant: String,
        started: Instant,
        finished: Instant,
        result: Result<ChangeHint, String>,
        retry_in: Option<Duration>,
    },
}

pub type EventSink = Arc<dyn Fn(WatchEvent) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("no tenants to watch")]
    NoTenants,
    #[error("max_concurrent must be at least 1")]
    NoWorkers,
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("cannot start a thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// A tenant's scheduling state. Only touched under `Shared::state`.
struct Slot {
    name: String,
    /// `None`: manual (no schedule, no long-poll).
    interval: Option<Duration>,
    /// Strategy `change-notifications` (and long-polls enabled): a long-poll thread runs.
    longpolls: bool,
    next_scheduled: Option<Instant>,
    /// A sync asked for and not started yet, and since when.
    requested: Option<(Trigger, Instant)>,
    running: bool,
    /// Asked for while running: one sync after this one.
    follow_up: bool,
    /// Failure back-off: no sync of this tenant starts before this.
    backoff_until: Option<Instant>,
    failures: u32,
    finished_syncs: u64,
}

impl Slot {
    /// When this tenant's next sync should start and why; `None` while running or when
    /// nothing is due ever (a manual tenant nobody asked for).
    fn due(&self) -> Option<(Instant, Trigger)> {
        if self.running {
            return None;
        }
        let due = match (self.requested, self.next_scheduled) {
            (Some((_, at)), Some(s)) if s < at => Some((s, Trigger::Scheduled)),
            (Some((t, at)), _) => Some((at, t)),
            (None, Some(s)) => Some((s, Trigger::Scheduled)),
            (None, None) => None,
        };
        due.map(|(at, t)| (self.backoff_until.map_or(at, |b| b.max(at)), t))
    }

    /// Nothing running, asked for, or overdue on the schedule: the stored position is the one
    /// to watch. (A schedule in the future, or a back-off, leaves the tenant idle: a change
    /// signal then waits for the back-off as a request.)
    fn idle(&self, now: Instant) -> bool {
        !self.running && self.requested.is_none() && self.next_scheduled.is_none_or(|s| s > now)
    }
}

/// A snapshot of one tenant's scheduling state, for status displays and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantState {
    pub running: bool,
    pub follow_up_pending: bool,
    pub requested: Option<Trigger>,
    pub failures: u32,
    pub finished_syncs: u64,
    /// Time until the next scheduled sync (zero when overdue), `None` for a manual tenant.
    pub next_scheduled_in: Option<Duration>,
}

struct State {
    slots: Vec<Slot>,
}

struct Shared {
    host: Arc<ConnectorHost>,
    options: WatchOptions,
    state: Mutex<State>,
    /// Workers wait here for a tenant to come due.
    work: Condvar,
    /// Long-poll threads wait here for their tenant to become idle, and sleep out back-offs.
    idle: Condvar,
    /// Given to every sync and long-poll: `host.should-stop`.
    stop: Arc<AtomicBool>,
    sink: EventSink,
    metrics: Option<Arc<Metrics>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing under this lock can be left half-updated by a panic that matters more than
        // stopping the whole watcher would.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn emit(&self, event: WatchEvent) {
        (self.sink)(event);
    }

    /// Ask for a sync of slot `index`: started at once when idle and a worker is free,
    /// coalesced into one follow-up when a sync is running, or merged with a request already
    /// waiting.
    fn request(&self, index: usize, trigger: Trigger) {
        let mut st = self.lock();
        let Some(slot) = st.slots.get_mut(index) else {
            return;
        };
        if slot.running {
            slot.follow_up = true;
        } else if slot.requested.is_none() {
            slot.requested = Some((trigger, Instant::now()));
            self.work.notify_all();
        }
    }

    /// The source asked to wait `d` before the tenant's next request (a long-poll was rate
    /// limited): no sync of it starts before then either, asked for or not.
    fn hold_off(&self, index: usize, d: Duration) {
        let mut st = self.lock();
        let Some(slot) = st.slots.get_mut(index) else {
            return;
        };
        if let Some(until) = Instant::now().checked_add(d) {
            slot.backoff_until = Some(slot.backoff_until.map_or(until, |b| b.max(until)));
        }
    }

    /// Sleep up to `d`, waking early when stopping.
    fn pause(&self, d: Duration) {
        let Some(deadline) = Instant::now().checked_add(d) else {
            return self.wait_for_stop();
        };
        let mut st = self.lock();
        while !self.stopping() {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            st = self
                .idle
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn wait_for_stop(&self) {
        let mut st = self.lock();
        while !self.stopping() {
            st = self.idle.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Runs tenants' schedules and long-polls until stopped. See the module documentation.
pub struct Watcher {
    shared: Arc<Shared>,
    index: HashMap<String, usize>,
    workers: Vec<JoinHandle<()>>,
    longpolls: Vec<JoinHandle<()>>,
}

impl Watcher {
    /// Start watching `tenants` (duplicates are watched once). Events go to `sink`, from the
    /// watcher's threads.
    pub fn start(
        host: Arc<ConnectorHost>,
        tenants: &[WatchTenant],
        options: WatchOptions,
        sink: impl Fn(WatchEvent) + Send + Sync + 'static,
    ) -> Result<Watcher, WatchError> {
        Watcher::start_with_metrics(host, tenants, options, None, sink)
    }

    /// [`Watcher::start`], counting in `metrics` (also given to `host` for what each
    /// invocation does), which says ready once every thread runs.
    pub fn start_with_metrics(
        host: Arc<ConnectorHost>,
        tenants: &[WatchTenant],
        options: WatchOptions,
        metrics: Option<Arc<Metrics>>,
        sink: impl Fn(WatchEvent) + Send + Sync + 'static,
    ) -> Result<Watcher, WatchError> {
        if tenants.is_empty() {
            return Err(WatchError::NoTenants);
        }
        if options.max_concurrent == 0 {
            return Err(WatchError::NoWorkers);
        }
        let sink: EventSink = Arc::new(sink);
        let now = Instant::now();
        let mut slots = Vec::new();
        let mut index = HashMap::new();
        let mut watching = Vec::new();
        for tenant in tenants {
            if index.contains_key(&tenant.name) {
                continue;
            }
            let (interval, longpolls) = match schedule_of(&host, tenant, &options) {
                Ok(i) => i,
                Err(reason) => {
                    sink(WatchEvent::Skipped {
                        tenant: tenant.name.clone(),
                        reason,
                    });
                    continue;
                }
            };
            let first = match interval {
                Some(i) => Some(first_due(&host, &tenant.name, i, now)?),
                None => None,
            };
            index.insert(tenant.name.clone(), slots.len());
            watching.push(WatchEvent::Watching {
                tenant: tenant.name.clone(),
                interval,
                longpoll: longpolls,
                first_sync_in: first.map(|f| f.saturating_duration_since(now)),
            });
            slots.push(Slot {
                name: tenant.name.clone(),
                interval,
                longpolls,
                next_scheduled: first,
                requested: None,
                running: false,
                follow_up: false,
                backoff_until: None,
                failures: 0,
                finished_syncs: 0,
            });
        }
        if slots.is_empty() {
            return Err(WatchError::NoTenants);
        }
        if let Some(m) = &metrics {
            host.set_metrics(Some(m.clone()));
            m.set_tenants(slots.len());
            // A restarted watcher still knows when each tenant last synced completely.
            for slot in &slots {
                if let Some(at) = last_success(&host, &slot.name)? {
                    m.set_last_success(&slot.name, at);
                }
            }
        }
        for event in watching {
            sink(event);
        }
        let longpolled: Vec<(usize, String)> = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.longpolls)
            .map(|(i, s)| (i, s.name.clone()))
            .collect();
        let workers_wanted = options.max_concurrent;
        let shared = Arc::new(Shared {
            host,
            options,
            state: Mutex::new(State { slots }),
            work: Condvar::new(),
            idle: Condvar::new(),
            stop: Arc::new(AtomicBool::new(false)),
            sink,
            metrics,
        });
        let mut watcher = Watcher {
            shared: shared.clone(),
            index,
            workers: Vec::new(),
            longpolls: Vec::new(),
        };
        for n in 0..workers_wanted {
            let s = shared.clone();
            match std::thread::Builder::new()
                .name(format!("watch-worker-{n}"))
                .spawn(move || worker(&s))
            {
                Ok(h) => watcher.workers.push(h),
                Err(e) => {
                    watcher.stop();
                    return Err(e.into());
                }
            }
        }
        for (i, name) in longpolled {
            let s = shared.clone();
            match std::thread::Builder::new()
                .name(format!("longpoll-{name}"))
                .spawn(move || longpoll_loop(&s, i, &name))
            {
                Ok(h) => watcher.longpolls.push(h),
                Err(e) => {
                    watcher.stop();
                    return Err(e.into());
                }
            }
        }
        if let Some(m) = &watcher.shared.metrics {
            m.set_ready(true);
        }
        tracing::info!(
            tenants = watcher.index.len(),
            workers = watcher.workers.len(),
            longpolls = watcher.longpolls.len(),
            "watcher started"
        );
        Ok(watcher)
    }

    /// The tenants being watched.
    pub fn tenants(&self) -> Vec<String> {
        self.shared
            .lock()
            .slots
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }

    /// Ask for a sync of `tenant` now (coalesced with one running or waiting). False when the
    /// tenant is not watched.
    pub fn request_sync(&self, tenant: &str) -> bool {
        match self.index.get(tenant) {
            Some(&i) => {
                self.shared.request(i, Trigger::Requested);
                true
            }
            None => false,
        }
    }

    pub fn tenant_state(&self, tenant: &str) -> Option<TenantState> {
        let &i = self.index.get(tenant)?;
        let st = self.shared.lock();
        let slot = st.slots.get(i)?;
        let now = Instant::now();
        Some(TenantState {
            running: slot.running,
            follow_up_pending: slot.follow_up,
            requested: slot.requested.map(|(t, _)| t),
            failures: slot.failures,
            finished_syncs: slot.finished_syncs,
            next_scheduled_in: slot
                .next_scheduled
                .map(|n| n.saturating_duration_since(now)),
        })
    }

    /// True when no sync is running or waiting to run for any tenant (scheduled syncs in the
    /// future do not count).
    pub fn is_quiet(&self) -> bool {
        let now = Instant::now();
        self.shared
            .lock()
            .slots
            .iter()
            .all(|s| !s.running && s.due().is_none_or(|(at, _)| at > now))
    }

    /// The stop flag every sync of this watcher checks (for a Ctrl-C handler).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.shared.stop.clone()
    }

    /// Stop: syncs in progress finish and commit their current page, workers are joined, and
    /// long-polls get `stop_grace` to return. Idempotent.
    pub fn stop(&mut self) {
        if let Some(m) = &self.shared.metrics {
            m.set_ready(false);
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            // Notify under the lock: a thread between its check of the flag and its wait
            // holds the lock, so it cannot miss this.
            let _st = self.shared.lock();
            self.shared.work.notify_all();
            self.shared.idle.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let deadline = Instant::now() + self.shared.options.stop_grace;
        while self.longpolls.iter().any(|h| !h.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for h in self.longpolls.drain(..) {
            if h.is_finished() {
                let _ = h.join();
            }
            // Otherwise it is blocked in a long-poll, which writes nothing: it ends on its own
            // when the source answers, and only holds its own references.
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The tenant's schedule: its interval (`None` for manual) and whether it long-polls, from the
/// manifest's `schedule` and the tenant's settings (validated against it).
pub fn schedule_of(
    host: &ConnectorHost,
    tenant: &WatchTenant,
    options: &WatchOptions,
) -> Result<(Option<Duration>, bool), String> {
    let settings = host
        .store()
        .settings(&tenant.name)
        .map_err(|e| e.to_string())?;
    let schedule = &host.manifest().schedule;
    let stored = |key: &str| -> Result<Option<String>, String> {
        let value = settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim().to_string());
        if let Some(v) = &value {
            validate_setting(host.manifest(), key, v)?;
        }
        Ok(value)
    };
    let strategy = match stored(SYNC_STRATEGY)? {
        // Validated above: one of the schedule's strategies.
        Some(v) => parse_strategy(&v).unwrap_or(schedule.default_strategy),
        None => schedule.default_strategy,
    };
    if strategy == SyncStrategy::Manual {
        return Ok((None, false));
    }
    let longpolls = options.longpoll && strategy == SyncStrategy::ChangeNotifications;
    if let Some(i) = tenant.interval.or(options.interval) {
        if i.is_zero() {
            return Err("the interval must be longer than zero".into());
        }
        return Ok((Some(i), longpolls));
    }
    let minutes = match stored(SYNC_INTERVAL_MINUTES)? {
        Some(v) => v
            .parse::<u32>()
            .map_err(|_| format!("{SYNC_INTERVAL_MINUTES}: '{v}' is not a whole number"))?,
        None => schedule.default_interval_minutes,
    };
    Ok((
        Some(Duration::from_secs(u64::from(minutes.max(1)) * 60)),
        longpolls,
    ))
}

/// When a scheduled tenant's first sync is due: at once unless its last sync completed less
/// than one interval ago (a restarted watcher keeps the schedule; the long-poll, which sees any
/// change since the stored position at once, covers the gap).
fn first_due(
    host: &ConnectorHost,
    tenant: &str,
    interval: Duration,
    now: Instant,
) -> Result<Instant, HostError> {
    let Some(at) = last_success(host, tenant)? else {
        return Ok(now);
    };
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let age = Duration::from_secs(unix_now.saturating_sub(at).max(0) as u64);
    Ok(interval
        .checked_sub(age)
        .and_then(|left| now.checked_add(left))
        .unwrap_or(now))
}

/// What to do after a failed sync.
enum AfterFailure {
    Retry(Duration),
    /// Nothing a retry can fix (revoked token, invalid settings): the next scheduled time.
    WaitForSchedule,
}

/// The back-off policy of failed syncs, shared by this scheduler and the PostgreSQL workers
/// (which count the consecutive failures in the database, across workers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureBackoff {
    /// The wait after one failure, doubled per consecutive failure up to `cap`.
    pub base: Duration,
    pub cap: Duration,
    /// What the source asked for (a rate limit): never earlier than that, whatever the cap.
    pub retry_after: Option<Duration>,
    /// Nothing a retry can fix (revoked token, invalid settings): wait for the next scheduled
    /// time (and, for a token, re-authentication) instead of retrying.
    pub wait_for_schedule: bool,
}

impl FailureBackoff {
    /// The wait after the `failures`-th consecutive failure.
    pub fn wait(&self, failures: u32) -> Duration {
        let exp = doubling(self.base, failures, self.cap);
        self.retry_after.map_or(exp, |r| exp.max(r))
    }
}

/// How a sync that failed with `error` backs its tenant off (`interval`: the tenant's, None
/// for manual).
pub fn failure_backoff(
    error: &HostError,
    interval: Option<Duration>,
    options: &WatchOptions,
) -> FailureBackoff {
    let cap = interval.map_or(options.sync_retry_max, |i| i.min(options.sync_retry_max));
    let mut backoff = FailureBackoff {
        base: options.sync_retry_base,
        cap,
        retry_after: None,
        wait_for_schedule: false,
    };
    match error {
        HostError::Connector(
            ConnectorError::AuthRequired(_) | ConnectorError::InvalidConfig(_),
        )
        | HostError::Setup(_) => backoff.wait_for_schedule = true,
        HostError::Connector(ConnectorError::RateLimited(r)) => {
            backoff.retry_after = Some(Duration::from_millis(r.retry_after_ms));
        }
        _ => {}
    }
    backoff
}

fn after_failure(
    error: &HostError,
    failures: u32,
    interval: Option<Duration>,
    options: &WatchOptions,
) -> AfterFailure {
    let backoff = failure_backoff(error, interval, options);
    if backoff.wait_for_schedule {
        AfterFailure::WaitForSchedule
    } else {
        AfterFailure::Retry(backoff.wait(failures))
    }
}

/// `base * 2^(n-1)`, capped: the back-off of repeated failures (syncs and long-polls alike,
/// here and in the PostgreSQL workers).
pub fn doubling(base: Duration, n: u32, cap: Duration) -> Duration {
    let factor = 1u32
        .checked_shl(n.saturating_sub(1).min(20))
        .unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(cap)
}

fn worker(shared: &Shared) {
    loop {
        let (index, name, trigger) = {
            let mut st = shared.lock();
            loop {
                if shared.stopping() {
                    return;
                }
                let now = Instant::now();
                // The most overdue tenant first: a slow or failing tenant cannot hold the pool
                // ahead of the others.
                let next = st
                    .slots
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| s.due().map(|(at, t)| (i, at, t)))
                    .min_by_key(|(_, at, _)| *at);
                match next {
                    Some((i, at, trigger)) if at <= now => {
                        let slot = &mut st.slots[i];
                        slot.running = true;
                        slot.requested = None;
                        slot.follow_up = false;
                        break (i, slot.name.clone(), trigger);
                    }
                    Some((_, at, _)) => {
                        st = shared
                            .work
                            .wait_timeout(st, at - now)
                            .map(|(g, _)| g)
                            .unwrap_or_else(|p| p.into_inner().0);
                    }
                    None => st = shared.work.wait(st).unwrap_or_else(|p| p.into_inner()),
                }
            }
        };
        let span = crate::telemetry::tenant_span(&name);
        let _entered = span.enter();
        let started = Instant::now();
        shared.emit(WatchEvent::SyncStarted {
            tenant: name.clone(),
            trigger,
            at: started,
        });
        tracing::debug!(trigger = trigger.as_str(), "sync started");
        let running = shared.metrics.as_ref().map(|m| m.sync_running());
        let result = shared.host.sync(&name, None, Some(shared.stop.clone()));
        drop(running);
        let finished = Instant::now();
        // Two steps, so that a tenant's events come in order: decide what follows while the
        // slot is still marked running (nothing can start this tenant meanwhile), report,
        // then free the slot.
        let retry_in = {
            let mut st = shared.lock();
            let options = &shared.options;
            let slot = &mut st.slots[index];
            slot.next_scheduled = slot.interval.and_then(|i| finished.checked_add(i));
            match &result {
                Ok(_) => {
                    slot.failures = 0;
                    slot.backoff_until = None;
                    None
                }
                Err(e) => {
                    slot.failures = slot.failures.saturating_add(1);
                    match after_failure(e, slot.failures, slot.interval, options) {
                        AfterFailure::Retry(d) => {
                            slot.requested = Some((Trigger::Retry, finished));
                            slot.backoff_until = finished.checked_add(d);
                            Some(d)
                        }
                        AfterFailure::WaitForSchedule => {
                            // Requests (long-poll hints) wait too: they cannot fix this.
                            slot.backoff_until = slot.next_scheduled;
                            None
                        }
                    }
                }
            }
        };
        log_sync(&result, trigger, finished - started, retry_in);
        if let Some(m) = &shared.metrics {
            m.sync_finished(result.as_ref().map(|o| &o.value), finished - started);
            if result.as_ref().is_ok_and(|o| !o.value.interrupted) {
                match last_success(&shared.host, &name) {
                    Ok(Some(at)) => m.set_last_success(&name, at),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot read the last sync time"),
                }
            }
        }
        shared.emit(WatchEvent::SyncFinished(SyncReport {
            tenant: name,
            trigger,
            started,
            duration: finished - started,
            outcome: result.map(|o| o.value).map_err(|e| e.to_string()),
            retry_in,
        }));
        let mut st = shared.lock();
        let slot = &mut st.slots[index];
        slot.running = false;
        slot.finished_syncs += 1;
        if slot.follow_up {
            slot.follow_up = false;
            if slot.requested.is_none() {
                slot.requested = Some((Trigger::FollowUp, Instant::now()));
            }
        }
        shared.work.notify_all();
        shared.idle.notify_all();
    }
}

fn longpoll_loop(shared: &Shared, index: usize, name: &str) {
    let span = crate::telemetry::tenant_span(name);
    let _entered = span.enter();
    let options = &shared.options;
    let mut failures: u32 = 0;
    loop {
        {
            let mut st = shared.lock();
            loop {
                if shared.stopping() {
                    return;
                }
                let now = Instant::now();
                let Some(slot) = st.slots.get(index) else {
                    break;
                };
                if !slot.idle(now) {
                    st = shared.idle.wait(st).unwrap_or_else(|p| p.into_inner());
                    continue;
                }
                // A failed sync's back-off (a rate limit's window, a refused token's wait for
                // the next scheduled time) holds the long-poll too: it is a request as well.
                match slot.backoff_until.filter(|b| *b > now) {
                    Some(until) => {
                        st = shared
                            .idle
                            .wait_timeout(st, until - now)
                            .map(|(g, _)| g)
                            .unwrap_or_else(|p| p.into_inner().0);
                    }
                    None => break,
                }
            }
        }
        let started = Instant::now();
        let waiting = shared.metrics.as_ref().map(|m| m.longpoll_running());
        let result = shared.host.wait_for_changes(
            name,
            options.longpoll_timeout_secs,
            Some(shared.stop.clone()),
        );
        drop(waiting);
        let finished = Instant::now();
        if shared.stopping() {
            return;
        }
        if let Some(m) = &shared.metrics {
            m.longpoll_finished(result.as_ref().map(|o| o.value.changes));
        }
        let (result, pause) = match result {
            Ok(outcome) => {
                failures = 0;
                let hint = outcome.value;
                if hint.changes {
                    shared.request(index, Trigger::Change);
                }
                let backoff = hint
                    .backoff_seconds
                    .map(|s| Duration::from_secs(u64::from(s)));
                (Ok(hint), backoff)
            }
            Err(HostError::Connector(ConnectorError::Unsupported(why))) => {
                // The connector has no change notifications: the schedule alone keeps the
                // tenant current, and asking again would get the same answer.
                tracing::info!(
                    reason = %why,
                    "the connector does not support wait-for-changes; syncing on the schedule only"
                );
                return;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if let HostError::Connector(ConnectorError::RateLimited(r)) = &e {
                    // The tenant's syncs wait for the source's window too.
                    shared.hold_off(index, Duration::from_millis(r.retry_after_ms));
                }
                (
                    Err(e.to_string()),
                    Some(doubling(
                        options.longpoll_retry_base,
                        failures,
                        options.longpoll_retry_max,
                    )),
                )
            }
        };
        let retry_in = if result.is_err() { pause } else { None };
        match &result {
            Ok(hint) => tracing::debug!(
                changes = hint.changes,
                backoff_secs = hint.backoff_seconds,
                elapsed_ms = (finished - started).as_millis() as u64,
                "long-poll returned"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                retry_in_ms = retry_in.map(|d| d.as_millis() as u64),
                "long-poll failed; the schedule keeps the tenant current, long-poll again in {}",
                retry_in.map(human).unwrap_or_else(|| "a moment".into())
            ),
        }
        shared.emit(WatchEvent::Longpoll {
            tenant: name.to_string(),
            started,
            finished,
            result,
            retry_in,
        });
        let spacing = options
            .longpoll_min_spacing
            .saturating_sub(finished - started);
        shared.pause(pause.unwrap_or_default().max(spacing));
    }
}

/// When the tenant's last complete sync finished, from the host's typed record of it (unix
/// seconds).
fn last_success(host: &ConnectorHost, tenant: &str) -> Result<Option<i64>, HostError> {
    let status = host.store().status(tenant)?;
    let completed = status.last_sync_outcome == Some(SyncOutcome::Ok);
    Ok(status.last_sync_at.filter(|_| completed))
}

/// One event per finished sync: info when it returned, warn when it failed.
fn log_sync(
    result: &Result<crate::app::Outcome<SyncSummary>, HostError>,
    trigger: Trigger,
    duration: Duration,
    retry_in: Option<Duration>,
) {
    let duration_ms = duration.as_millis() as u64;
    match result {
        Ok(o) => {
            let s = &o.value;
            tracing::info!(
                trigger = trigger.as_str(),
                kind = kind_str(s.kind),
                pages = s.pages,
                entries = s.entries,
                created = s.created,
                content = s.content_updates,
                metadata = s.metadata_updates,
                deleted = s.deletions,
                interrupted = s.interrupted,
                api_calls = o.stats.total_requests(),
                duration_ms,
                "sync finished"
            );
        }
        Err(e) => tracing::warn!(
            trigger = trigger.as_str(),
            error_kind = crate::metrics::error_kind(e),
            error = %e,
            retry_in_ms = retry_in.map(|d| d.as_millis() as u64),
            duration_ms,
            "sync failed; {}",
            match retry_in {
                Some(d) => format!("retrying in {}", human(d)),
                None => "next attempt at the next scheduled time".to_string(),
            }
        ),
    }
}

pub fn kind_str(kind: SyncKind) -> &'static str {
    match kind {
        SyncKind::Full => "full",
        SyncKind::Incremental => "incremental",
        SyncKind::Resync => "resync",
    }
}

/// "90s", "15m", "2h".
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else if s >= 10 {
        format!("{s}s")
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> Slot {
        Slot {
            name: "t".into(),
            interval: Some(Duration::from_secs(60)),
            longpolls: false,
            next_scheduled: None,
            requested: None,
            running: false,
            follow_up: false,
            backoff_until: None,
            failures: 0,
            finished_syncs: 0,
        }
    }

    #[test]
    fn due_takes_the_earlier_of_request_and_schedule_and_respects_backoff() {
        let now = Instant::now();
        let mut s = slot();
        assert!(s.due().is_none());
        s.next_scheduled = Some(now + Duration::from_secs(10));
        assert_eq!(
            s.due(),
            Some((now + Duration::from_secs(10), Trigger::Scheduled))
        );
        s.requested = Some((Trigger::Change, now));
        assert_eq!(s.due(), Some((now, Trigger::Change)));
        s.backoff_until = Some(now + Duration::from_secs(5));
        assert_eq!(
            s.due(),
            Some((now + Duration::from_secs(5), Trigger::Change))
        );
        s.running = true;
        assert!(
            s.due().is_none(),
            "a running tenant is never due: single flight"
        );
    }

    #[test]
    fn doubling_is_capped() {
        let base = Duration::from_secs(1);
        assert_eq!(
            doubling(base, 1, Duration::from_secs(60)),
            Duration::from_secs(1)
        );
        assert_eq!(
            doubling(base, 3, Duration::from_secs(60)),
            Duration::from_secs(4)
        );
        assert_eq!(
            doubling(base, 40, Duration::from_secs(60)),
            Duration::from_secs(60)
        );
    }
}
