//! `host-test watch --db postgres://...`: one of any number of worker processes sharing the
//! tenants of one PostgreSQL database.
//!
//! The database holds everything the workers share: each tenant's schedule (due time, last
//! outcome), and its lease (worker, epoch, expiry) with the lease history (see
//! `connector_runtime::store::pg`). A worker loops: it keeps the schedules in step with the
//! tenants and their settings (a tenant added or removed in the database is picked up without
//! restart), claims due tenants up to its free slots with a lease of `--lease-ttl`, and runs
//! each sync through the lease's fenced store, renewing the lease every third of its TTL. A
//! worker that loses its lease (it stalled past the expiry, and another took the tenant) stops
//! that sync, and its writes are refused from then on (fencing). A worker killed outright
//! simply stops renewing: its leases expire and the others claim the tenants.
//!
//! Long-polls (strategy change-notifications) are held by the worker that owns the tenant
//! between syncs. Ownership: the worker that last completed the tenant's sync takes its poll
//! (`PgStore::take_poll`, a "poll lease" on the tenant's schedule row: a worker and an
//! expiry); the holder renews it every third of `--lease-ttl` at most a second apart
//! (`PgStore::hold_polls`) and calls the connector's `wait-for-changes` in a loop. A change
//! hint calls `PgStore::request_sync`: the tenant is due at once, for any worker to claim. The
//! poll is held by one worker at a time: a newer completer takes it over (the old holder stops
//! at its next renewal), and a killed worker's polls, no longer renewed, are taken over by
//! another after the TTL. A long-poll writes nothing to the records store. A worker holds at
//! most `--max-polls` long-polls (one thread each): a worker at its cap offers a poll it would
//! take to the others, and takes over expired ones only up to its cap, so after a restart of
//! the cluster the polls spread over the workers.
//!
//! Failures back off across the cluster: a failed sync's back-off (doubling per consecutive
//! failure, counted in the database) and a rate limit's Retry-After are stored with the
//! tenant's schedule, so no worker claims the tenant before they end, whatever asks for a
//! sync; a long-poll asks the schedule before each request (`PgStore::poll_gate`) and stores a
//! rate limit it meets. A tenant whose token is refused needs re-authentication (the host
//! flags it) and is neither claimed nor polled until then. A tenant without credentials
//! (disconnected) or removed has no schedule. `--tenant` limits what the worker claims and
//! polls, not only what it schedules. The lease and poll histories are pruned periodically.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use crate::app::{ConnectorHost, HostError};
use crate::bindings::types::ConnectorError;
use crate::store::pg::{Backoff, Lease, PollGate, PollTaken, Retention, Strategy};
use crate::store::{PgStore, RecordStore, StoreError, SyncOutcome};
use crate::watch::{WatchOptions, WatchTenant, failure_backoff, schedule_of};

/// How often a worker brings the schedules in step with the tenants and their settings.
const RECONCILE_EVERY: Duration = Duration::from_secs(3);
/// How long an idle worker waits before asking for due tenants again.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// How often a worker applies the histories' retention.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// The longest a long-poll sleeps before asking its tenant's schedule again while it may not
/// poll (a re-authentication or a configuration change can open it early).
const MAX_GATE_SLEEP: Duration = Duration::from_secs(5);
/// The longest time between two renewals of a worker's long-polls: a poll another worker
/// took over is stopped here within this time.
const MAX_POLL_RENEWAL: Duration = Duration::from_secs(1);

pub(super) struct ClusterOptions {
    pub worker: String,
    pub ttl: Duration,
    pub max_concurrent: usize,
    /// The most long-polls this worker holds at once (one thread each).
    pub max_polls: u32,
    /// Only these tenants (empty: every tenant of the database with credentials): the ones
    /// this worker schedules, claims and polls.
    pub only: Vec<String>,
    /// How much of the lease and poll histories to keep.
    pub retention: Retention,
    pub watch: WatchOptions,
    pub json: bool,
}

/// The worker's id when none is given: `host:pid`, unique among live processes.
pub(super) fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    format!("{host}:{}", std::process::id())
}

/// Run until `stop` receives (Ctrl-C): claim, sync, renew, complete.
pub(super) fn run(
    host: Arc<ConnectorHost>,
    pg: Arc<PgStore>,
    options: ClusterOptions,
    stop: Receiver<()>,
) -> Result<()> {
    let options = Arc::new(options);
    let stopping = Arc::new(AtomicBool::new(false));
    let running = Arc::new(AtomicUsize::new(0));
    let syncs = Arc::new(AtomicUsize::new(0));
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut last_reconcile: Option<Instant> = None;
    let mut last_prune: Option<Instant> = None;
    let started = Instant::now();
    let mut polls = Polls::default();
    tracing::info!(
        worker = %options.worker,
        ttl_ms = options.ttl.as_millis() as u64,
        "worker {} sharing the database's tenants (lease {:.1}s); Ctrl-C to stop",
        options.worker,
        options.ttl.as_secs_f64()
    );
    loop {
        if last_reconcile.is_none_or(|at| at.elapsed() >= RECONCILE_EVERY) {
            if let Err(e) = reconcile(&host, &pg, &options) {
                tracing::warn!("cannot update the schedules: {e:#}");
            }
            last_reconcile = Some(Instant::now());
        }
        if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            match pg.prune_history(options.retention) {
                Ok(p) if p.leases + p.polls > 0 => tracing::debug!(
                    leases = p.leases,
                    polls = p.polls,
                    "pruned the lease and poll histories"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("cannot prune the histories: {e}"),
            }
            last_prune = Some(Instant::now());
        }
        threads.retain(|t| !t.is_finished());
        if options.watch.longpoll {
            polls.tick(&host, &pg, &options);
        }
        let free = options
            .max_concurrent
            .saturating_sub(running.load(Ordering::SeqCst));
        let mut claimed = 0;
        if free > 0 {
            match pg.claim_due_among(&options.worker, free as u32, options.ttl, options.only()) {
                Ok(leases) => {
                    claimed = leases.len();
                    for lease in leases {
                        running.fetch_add(1, Ordering::SeqCst);
                        let job = LeaseJob {
                            host: host.clone(),
                            pg: pg.clone(),
                            options: options.clone(),
                            stopping: stopping.clone(),
                        };
                        let running = running.clone();
                        let syncs = syncs.clone();
                        threads.push(std::thread::spawn(move || {
                            job.run(lease);
                            syncs.fetch_add(1, Ordering::SeqCst);
                            running.fetch_sub(1, Ordering::SeqCst);
                        }));
                    }
                }
                Err(e) => tracing::warn!("cannot claim due tenants: {e}"),
            }
        }
        // Claimed something: look again at once (more may be due); else wait a little.
        let wait = if claimed > 0 {
            Duration::from_millis(10)
        } else {
            IDLE_POLL
        };
        match stop.recv_timeout(wait) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
    tracing::info!(
        "stopping: syncs in progress finish their current page, commit and hand their tenants back"
    );
    stopping.store(true, Ordering::SeqCst);
    polls.stop_all();
    for t in threads {
        let _ = t.join();
    }
    if options.watch.longpoll
        && let Err(e) = pg.release_polls(&options.worker)
    {
        tracing::warn!("cannot hand the long-polls back: {e}");
    }
    let line = format!(
        "worker {} stopped after {} syncs in {:.1}s",
        options.worker,
        syncs.load(Ordering::SeqCst),
        started.elapsed().as_secs_f64()
    );
    if options.json {
        tracing::info!("{line}");
    } else {
        println!("{line}");
    }
    Ok(())
}

impl ClusterOptions {
    /// The tenants this worker is limited to, if any.
    fn only(&self) -> Option<&[String]> {
        (!self.only.is_empty()).then_some(self.only.as_slice())
    }
}

/// Bring the database's schedules in step with its tenants: a schedule for each tenant with
/// credentials (strategy and interval from its settings), none for a tenant without (a
/// disconnected one: deleting its credentials also unschedules it at once, see migration 4).
fn reconcile(host: &ConnectorHost, pg: &PgStore, options: &ClusterOptions) -> Result<()> {
    let existing: HashMap<String, (Strategy, Duration)> = pg
        .schedules()?
        .into_iter()
        .map(|s| (s.tenant, (s.strategy, s.interval)))
        .collect();
    let names = if options.only.is_empty() {
        pg.tenants()?
    } else {
        options.only.clone()
    };
    for name in &names {
        // Only a tenant with credentials is synced.
        match pg.credentials(name) {
            Ok(Some(_)) => {}
            Ok(None) => {
                if existing.contains_key(name) && pg.remove_schedule(name)? {
                    tracing::info!(tenant = %name, "no credentials (disconnected): unscheduled");
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(tenant = %name, "not scheduled: {e}");
                continue;
            }
        }
        let wanted = match schedule_of(host, &WatchTenant::new(name), &options.watch) {
            // A manual tenant keeps a schedule row (never due unless asked), with any interval.
            Ok((None, _)) => (Strategy::Manual, Duration::from_secs(3600)),
            Ok((Some(interval), true)) => (Strategy::ChangeNotifications, interval),
            Ok((Some(interval), false)) => (Strategy::Scheduled, interval),
            Err(e) => {
                tracing::warn!(tenant = %name, "not scheduled: {e}");
                continue;
            }
        };
        if existing.get(name) != Some(&wanted) {
            pg.set_schedule(name, wanted.0, wanted.1)?;
            tracing::debug!(tenant = %name, strategy = wanted.0.as_str(), "scheduled");
        }
    }
    if options.only.is_empty() {
        // Tenants removed from the database lose their schedule with them (a foreign key);
        // this catches any schedule left for a name no longer listed.
        for name in existing.keys().filter(|n| !names.contains(n)) {
            pg.remove_schedule(name)?;
        }
    }
    Ok(())
}

/// One claimed tenant: its sync under the lease, the lease renewed meanwhile, then completed.
struct LeaseJob {
    host: Arc<ConnectorHost>,
    pg: Arc<PgStore>,
    options: Arc<ClusterOptions>,
    stopping: Arc<AtomicBool>,
}

impl LeaseJob {
    fn run(self, lease: Lease) {
        let tenant = lease.tenant.clone();
        let epoch = lease.epoch;
        let _span = crate::telemetry::tenant_span(&tenant).entered();
        let (interval, longpolls) =
            match schedule_of(&self.host, &WatchTenant::new(&tenant), &self.options.watch) {
                Ok((interval, longpolls)) => (interval, longpolls),
                Err(_) => (None, false),
            };
        let fenced: Arc<dyn RecordStore> = Arc::new(self.pg.fenced(&lease));
        let renewal = Renewal::start(
            self.pg.clone(),
            lease,
            self.options.ttl,
            self.stopping.clone(),
        );
        let started_at = now_ms();
        let started = Instant::now();
        let result =
            self.host
                .over_store(fenced)
                .sync(&tenant, None, Some(renewal.sync_stop.clone()));
        let (lease, lost) = renewal.finish();
        let outcome = match &result {
            Ok(o) if o.value.interrupted => SyncOutcome::Interrupted,
            Ok(_) => SyncOutcome::Ok,
            Err(_) => SyncOutcome::Failed,
        };
        let stopped_by_worker = self.stopping.load(Ordering::SeqCst);
        // A failure backs the tenant off for every worker (the database counts the
        // consecutive failures): a retry once the back-off ends, or, when a retry cannot help
        // (a refused token, invalid settings), the next scheduled time.
        let backoff = match &result {
            Err(e) => {
                let policy = failure_backoff(e, interval, &self.options.watch);
                Some((
                    Backoff {
                        base: policy.base,
                        cap: policy.cap,
                        retry_after: policy.retry_after,
                    },
                    policy.wait_for_schedule,
                ))
            }
            Ok(_) => None,
        };
        let next_due_in = if stopped_by_worker && backoff.is_none() {
            // This worker is stopping: the tenant is due again at once, for another.
            Some(Duration::ZERO)
        } else {
            match (outcome, &backoff) {
                (SyncOutcome::Failed, Some((_, true))) => interval,
                (SyncOutcome::Failed, _) => Some(Duration::ZERO),
                (SyncOutcome::Interrupted, _) => Some(Duration::ZERO),
                (_, _) => interval,
            }
        };
        let mut result_word = match outcome {
            SyncOutcome::Ok => "ok",
            SyncOutcome::Interrupted => "interrupted",
            SyncOutcome::Failed => "failed",
        };
        if lost {
            result_word = "lease-lost";
        } else {
            let completed = match &backoff {
                Some((b, _)) => self.pg.complete_failed(&lease, next_due_in, b),
                None => self.pg.complete(&lease, outcome, next_due_in),
            };
            match completed {
                // The worker that completed the sync owns the tenant's long-poll from now
                // (unless at its cap: then another takes it).
                Ok(()) if longpolls && !stopped_by_worker => {
                    match self.pg.take_poll_capped(
                        &tenant,
                        &self.options.worker,
                        self.options.ttl,
                        self.options.max_polls,
                    ) {
                        Ok(PollTaken::Offered) => tracing::debug!(
                            "at the cap of long-polls: the tenant's is left to another worker"
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!("cannot take the tenant's long-poll: {e}"),
                    }
                }
                Ok(()) => {}
                Err(StoreError::LeaseLost(e)) => {
                    tracing::warn!("sync finished after the lease was lost: {e}");
                    result_word = "lease-lost";
                }
                Err(e) => tracing::warn!("cannot complete the lease: {e}"),
            }
        }
        let elapsed = started.elapsed();
        let (kind, entries, created, error) = match &result {
            Ok(o) => (
                crate::watch::kind_str(o.value.kind),
                o.value.entries,
                o.value.created,
                None,
            ),
            Err(e) => ("-", 0, 0, Some(e.to_string())),
        };
        let mut out = std::io::stdout().lock();
        let _ = if self.options.json {
            writeln!(
                out,
                "{}",
                json!({
                    "worker": self.options.worker,
                    "tenant": tenant,
                    "epoch": epoch,
                    "result": result_word,
                    "kind": kind,
                    "entries": entries,
                    "created": created,
                    "started_at_ms": started_at,
                    "finished_at_ms": now_ms(),
                    "elapsed_secs": elapsed.as_secs_f64(),
                    "error": error,
                })
            )
        } else {
            writeln!(
                out,
                "{tenant}: {result_word} ({kind}, {entries} entries, {created} created, {:.2}s, lease epoch {epoch}){}",
                elapsed.as_secs_f64(),
                error.map(|e| format!(": {e}")).unwrap_or_default()
            )
        };
        let _ = out.flush();
    }
}

/// Renew the lease every third of its TTL until the sync is done; on a lost lease, stop the
/// sync (its writes would be refused anyway); on the worker stopping, stop the sync cleanly.
/// A lease renewed on a thread of its own while its holder writes the tenant
/// ([`renew_until_done`]): how a worker's sync and a CLI command's hold the writer right.
pub(super) struct Renewal {
    lease: Arc<Mutex<Lease>>,
    /// Set when the lease is lost or the worker stops: the sync stops at a page boundary.
    pub(super) sync_stop: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Renewal {
    /// Renew `lease` every third of `ttl` until [`Renewal::finish`]; `stopping` (the worker's
    /// Ctrl-C) stops the sync too.
    pub(super) fn start(
        pg: Arc<PgStore>,
        lease: Lease,
        ttl: Duration,
        stopping: Arc<AtomicBool>,
    ) -> Renewal {
        let lease = Arc::new(Mutex::new(lease));
        let sync_stop = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let (lease, sync_stop, lost, done) =
                (lease.clone(), sync_stop.clone(), lost.clone(), done.clone());
            std::thread::spawn(move || {
                renew_until_done(&pg, &lease, ttl, &sync_stop, &lost, &done, &stopping)
            })
        };
        Renewal {
            lease,
            sync_stop,
            lost,
            done,
            thread,
        }
    }

    /// Stop renewing: the lease as last renewed, and whether it was lost meanwhile.
    pub(super) fn finish(self) -> (Lease, bool) {
        self.done.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
        let lease = self.lease.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (lease, self.lost.load(Ordering::SeqCst))
    }
}

fn renew_until_done(
    pg: &PgStore,
    lease: &Mutex<Lease>,
    ttl: Duration,
    sync_stop: &AtomicBool,
    lost: &AtomicBool,
    done: &AtomicBool,
    stopping: &AtomicBool,
) {
    let period = ttl / 3;
    let mut last = Instant::now();
    while !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50).min(period));
        if stopping.load(Ordering::SeqCst) {
            sync_stop.store(true, Ordering::SeqCst);
        }
        if last.elapsed() < period {
            continue;
        }
        last = Instant::now();
        let mut held = lease.lock().unwrap_or_else(|p| p.into_inner());
        match pg.renew(&mut held, ttl) {
            Ok(()) => {}
            Err(StoreError::LeaseLost(e)) => {
                tracing::warn!("{e}: stopping the sync");
                lost.store(true, Ordering::SeqCst);
                sync_stop.store(true, Ordering::SeqCst);
                return;
            }
            // The database may come back before the lease runs out; if not, the fence refuses
            // the writes and the next renewal reports the loss.
            Err(e) => tracing::warn!("cannot renew the lease: {e}"),
        }
    }
}

/// The long-polls this worker holds: one thread per tenant, started when the database says the
/// poll is this worker's, stopped when it no longer does.
#[derive(Default)]
struct Polls {
    running: HashMap<String, PollThread>,
    /// Tenants whose connector answered `unsupported`: asking again gets the same answer. The
    /// worker keeps holding their polls (nobody else asks either).
    unsupported: HashSet<String>,
    last_renewal: Option<Instant>,
}

struct PollThread {
    stop: Arc<AtomicBool>,
    /// Returns true when the connector does not support wait-for-changes.
    handle: JoinHandle<bool>,
}

impl Polls {
    fn tick(
        &mut self,
        host: &Arc<ConnectorHost>,
        pg: &Arc<PgStore>,
        options: &Arc<ClusterOptions>,
    ) {
        let period = (options.ttl / 3).min(MAX_POLL_RENEWAL);
        if self.last_renewal.is_some_and(|at| at.elapsed() < period) {
            return;
        }
        self.last_renewal = Some(Instant::now());
        let held = pg.hold_polls_capped(
            &options.worker,
            options.ttl,
            options.max_polls,
            options.only(),
        );
        let held: HashSet<String> = match held {
            Ok(held) => held.into_iter().collect(),
            Err(e) => {
                // The polls keep running: hints still reach the database if it comes back;
                // if it does not before the TTL, another worker may take them over.
                tracing::warn!("cannot renew the long-polls: {e}");
                return;
            }
        };
        let finished: Vec<String> = self
            .running
            .iter()
            .filter(|(t, p)| !held.contains(*t) || p.handle.is_finished())
            .map(|(t, _)| t.clone())
            .collect();
        for tenant in finished {
            if let Some(p) = self.running.remove(&tenant) {
                p.stop.store(true, Ordering::SeqCst);
                if p.handle.is_finished() && p.handle.join().unwrap_or(false) {
                    self.unsupported.insert(tenant.clone());
                }
                tracing::debug!(tenant = %tenant, "long-poll no longer held here");
            }
        }
        for tenant in held {
            if self.running.contains_key(&tenant) || self.unsupported.contains(&tenant) {
                continue;
            }
            let stop = Arc::new(AtomicBool::new(false));
            let (host, pg, options, flag) =
                (host.clone(), pg.clone(), options.clone(), stop.clone());
            let name = tenant.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("longpoll-{tenant}"))
                .spawn(move || longpoll_loop(&host, &pg, &options, &name, &flag));
            match spawned {
                Ok(handle) => {
                    tracing::debug!(tenant = %tenant, "holding the long-poll");
                    self.running.insert(tenant, PollThread { stop, handle });
                }
                Err(e) => tracing::warn!(tenant = %tenant, "cannot start a long-poll: {e}"),
            }
        }
    }

    fn stop_all(&mut self) {
        for p in self.running.values() {
            p.stop.store(true, Ordering::SeqCst);
        }
        for (_, p) in self.running.drain() {
            let _ = p.handle.join();
        }
    }
}

/// Hold one tenant's long-poll until `stop`: `wait-for-changes` in a loop, a change hint
/// making the tenant due at once. Before each request it asks the tenant's schedule
/// ([`PgStore::poll_gate`]): no request while the tenant backs off from a failed sync, is inside
/// a rate-limit window or needs re-authentication. A rate limit met here is stored there, for
/// every worker. Respects the source's backoff, and spaces failed attempts out. Returns true
/// when the connector does not support change notifications.
fn longpoll_loop(
    host: &ConnectorHost,
    pg: &PgStore,
    options: &ClusterOptions,
    tenant: &str,
    stop: &Arc<AtomicBool>,
) -> bool {
    let _span = crate::telemetry::tenant_span(tenant).entered();
    let watch = &options.watch;
    let mut failures: u32 = 0;
    while !stop.load(Ordering::SeqCst) {
        let gate = match pg.poll_gate(tenant) {
            Ok(gate) => gate,
            Err(e) => {
                // Without the schedule, no request: the database decides when the tenant may
                // be asked.
                tracing::warn!("cannot read the tenant's schedule: {e}");
                PollGate::Wait { for_ms: 1000 }
            }
        };
        let hold = match gate {
            PollGate::Open => None,
            PollGate::Wait { for_ms } => Some(Duration::from_millis(for_ms.max(0) as u64)),
            PollGate::NeedsReauth => Some(MAX_GATE_SLEEP),
            // Disconnected, removed or no longer on change-notifications: the next renewal
            // of the polls drops it; nothing to ask meanwhile.
            PollGate::Unscheduled => return false,
        };
        if let Some(hold) = hold {
            tracing::debug!(?gate, "long-poll held back by the tenant's schedule");
            sleep_unless(stop, hold.min(MAX_GATE_SLEEP));
            continue;
        }
        let started = Instant::now();
        let result = host.wait_for_changes(tenant, watch.longpoll_timeout_secs, Some(stop.clone()));
        let pause = match result {
            Ok(outcome) => {
                failures = 0;
                let hint = outcome.value;
                if hint.changes {
                    match pg.request_sync(tenant) {
                        Ok(_) => tracing::debug!("change hint: sync requested"),
                        Err(e) => tracing::warn!("cannot request a sync on a change hint: {e}"),
                    }
                }
                hint.backoff_seconds
                    .map(|s| Duration::from_secs(u64::from(s)))
                    .unwrap_or_default()
            }
            Err(HostError::Connector(ConnectorError::Unsupported(why))) => {
                tracing::info!(
                    reason = %why,
                    "the connector does not support wait-for-changes; syncing on the schedule only"
                );
                return true;
            }
            Err(_) if stop.load(Ordering::SeqCst) => return false,
            Err(e) => {
                failures = failures.saturating_add(1);
                let retry_in = crate::watch::doubling(
                    watch.longpoll_retry_base,
                    failures,
                    watch.longpoll_retry_max,
                );
                if let HostError::Connector(ConnectorError::RateLimited(r)) = &e {
                    // The server's window holds for the tenant's syncs too, on every worker.
                    let window = Duration::from_millis(r.retry_after_ms);
                    if let Err(e) = pg.note_rate_limit(tenant, window) {
                        tracing::warn!("cannot store the rate limit's window: {e}");
                    }
                }
                tracing::warn!(
                    error = %e,
                    retry_in_ms = retry_in.as_millis() as u64,
                    "long-poll failed; the schedule keeps the tenant current"
                );
                retry_in
            }
        };
        let pause = pause.max(watch.longpoll_min_spacing.saturating_sub(started.elapsed()));
        sleep_unless(stop, pause);
    }
    false
}

/// Sleep `d`, or less when `stop` is set meanwhile.
fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(
            Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())),
        );
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
