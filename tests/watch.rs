//! Staying current: the watcher (`host_test::watch`) and `host-test watch` against real
//! emulators. Scheduled and manual tenants, changes by long-poll within seconds, single-flight
//! syncs with one coalesced follow-up, the source's back-off, the schedule as the fallback of a
//! failing long-poll, many tenants on one host with failures kept to their tenant, a clean stop
//! mid-sync, and settings refused out of bounds.
//!
//! Tests use `EmulatorConfig.longpoll_max_wait` so that a long-poll with nothing to report
//! returns in well under a second, while the connector still asks for the 30 s Dropbox
//! requires at least.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dropbox_emulator::{Content, Emulator, EmulatorConfig, Fault, FaultKind};
use e2e_tests::{Harness, diff_with_truth, dropbox_runtime};
use host_test::app::ConnectorHost;
use host_test::bindings::connector::ChangeHint;
use host_test::store::{RecordStore, SqliteStore, StoredCredentials};
use host_test::watch::{SyncReport, Trigger, WatchEvent, WatchOptions, WatchTenant, Watcher};

const CLI: &str = env!("CARGO_BIN_EXE_host-test-cli");

fn bytes(s: &str) -> Content {
    Content::Bytes(s.as_bytes().to_vec())
}

/// An emulator whose long-polls with nothing to report return after `max_wait`.
fn emulator(files: usize, seed: u64) -> Emulator {
    Emulator::start(EmulatorConfig {
        files,
        seed,
        longpoll_max_wait: Some(Duration::from_millis(500)),
        ..Default::default()
    })
    .expect("the emulator starts")
}

/// Options for tests: a long schedule (so only what a test is about triggers a sync), the
/// minimum long-poll timeout Dropbox accepts, and short retry delays.
fn options() -> WatchOptions {
    WatchOptions {
        interval: Some(Duration::from_secs(3600)),
        longpoll: true,
        longpoll_timeout_secs: 30,
        longpoll_min_spacing: Duration::from_millis(500),
        max_concurrent: 4,
        longpoll_retry_base: Duration::from_millis(200),
        longpoll_retry_max: Duration::from_secs(1),
        sync_retry_base: Duration::from_millis(500),
        sync_retry_max: Duration::from_secs(5),
        stop_grace: Duration::from_secs(3),
    }
}

/// One host and one store for many tenants, each tenant on an emulator of its own.
struct Fleet {
    dir: tempfile::TempDir,
    host: Arc<ConnectorHost>,
    emulators: HashMap<String, Emulator>,
}

impl Fleet {
    fn new() -> Fleet {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store =
            Arc::new(SqliteStore::open(&dir.path().join("store.db")).expect("the store opens"));
        // No host-wide API URL: every tenant names its own emulator.
        let host = Arc::new(
            ConnectorHost::new(dropbox_runtime(), store, None, Default::default())
                .expect("the host starts"),
        );
        Fleet {
            dir,
            host,
            emulators: HashMap::new(),
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("store.db")
    }

    fn add(&mut self, tenant: &str, emulator: Emulator) -> Emulator {
        self.host
            .store()
            .set_tenant_api_url(tenant, Some(&emulator.base_url()))
            .expect("api url stored");
        self.host
            .connect(
                tenant,
                StoredCredentials {
                    access_token: emulator.access_token(),
                    ..Default::default()
                },
            )
            .expect("credentials stored");
        // Long-polling is the strategy `change-notifications` (the host's setting, validated
        // against the manifest's schedule): every tenant of these tests asks for it.
        self.host
            .set_setting(tenant, "sync_strategy", "change-notifications")
            .expect("the connector offers change notifications");
        self.emulators.insert(tenant.to_string(), emulator.clone());
        emulator
    }

    fn records(&self, tenant: &str) -> Vec<host_test::store::Record> {
        self.host.store().records(tenant).expect("records")
    }

    fn has_path(&self, tenant: &str, path_lower: &str) -> bool {
        self.host
            .store()
            .find_by_paths(tenant, &[path_lower.to_string()])
            .expect("lookup")
            .into_iter()
            .flatten()
            .next()
            .is_some()
    }

    fn diff(&self, tenant: &str) -> Vec<String> {
        diff_with_truth(
            &self.emulators[tenant].truth(),
            &self.records(tenant),
            |_| true,
        )
    }

    /// The e2e harness over the same database, for its checks (truth and event replay).
    fn harness(&self, tenant: &str) -> Harness {
        let emulator = self.emulators[tenant].clone();
        let store = Arc::new(SqliteStore::open(&self.db()).expect("the store opens"));
        let host = ConnectorHost::new(
            dropbox_runtime(),
            store,
            Some(&emulator.base_url()),
            Default::default(),
        )
        .expect("host");
        Harness {
            emulator,
            host,
            tenant: tenant.to_string(),
            dir: tempfile::tempdir().expect("a temp dir"),
            database: None,
        }
    }
}

/// Everything a watcher reported, in order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<WatchEvent>>>);

impl Log {
    fn sink(&self) -> impl Fn(WatchEvent) + Send + Sync + 'static {
        let events = self.0.clone();
        move |e| events.lock().unwrap_or_else(|p| p.into_inner()).push(e)
    }

    fn events(&self) -> Vec<WatchEvent> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn reports(&self, tenant: &str) -> Vec<SyncReport> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                WatchEvent::SyncFinished(r) if r.tenant == tenant => Some(r),
                _ => None,
            })
            .collect()
    }

    fn ok_syncs(&self, tenant: &str) -> usize {
        self.reports(tenant)
            .iter()
            .filter(|r| r.outcome.is_ok())
            .count()
    }

    fn longpolls(&self, tenant: &str) -> Vec<(Instant, Instant, Result<ChangeHint, String>)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                WatchEvent::Longpoll {
                    tenant: t,
                    started,
                    finished,
                    result,
                    ..
                } if t == tenant => Some((started, finished, result)),
                _ => None,
            })
            .collect()
    }
}

/// Poll `done` every 10 ms until it holds; panic with `what` after `timeout`.
fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}

fn start(fleet: &Fleet, tenants: &[&str], options: WatchOptions, log: &Log) -> Watcher {
    let tenants: Vec<WatchTenant> = tenants.iter().map(|t| WatchTenant::new(t)).collect();
    Watcher::start(fleet.host.clone(), &tenants, options, log.sink()).expect("the watcher starts")
}

/// The sync that applied a change made at `changed`: the first successful one that finished
/// after it and applied something (its report may come a moment after the store shows it).
fn report_that_applied(log: &Log, tenant: &str, changed: Instant) -> SyncReport {
    let find = || {
        log.reports(tenant)
            .into_iter()
            .find(|r| r.outcome.is_ok() && r.finished() >= changed && r.changes_applied() > 0)
    };
    wait_until(
        Duration::from_secs(10),
        "the report of the sync that applied the change",
        || find().is_some(),
    );
    find().expect("found above")
}

#[test]
fn a_change_reaches_the_store_within_three_seconds() {
    let mut fleet = Fleet::new();
    let emu = fleet.add("t1", emulator(30, 3));
    let log = Log::default();
    // The schedule is an hour: only the long-poll can bring the change in time.
    let mut watcher = start(&fleet, &["t1"], options(), &log);
    wait_until(Duration::from_secs(20), "the first sync", || {
        log.ok_syncs("t1") == 1
    });
    // Let the long-poll start on the new cursor (it would see the change anyway).
    std::thread::sleep(Duration::from_millis(200));

    let changed = Instant::now();
    emu.create_file("/Inbox/arrived.txt", bytes("hello"))
        .unwrap();
    wait_until(Duration::from_secs(10), "the change in the store", || {
        fleet.has_path("t1", "/inbox/arrived.txt")
    });
    let latency = changed.elapsed();
    assert!(
        latency <= Duration::from_secs(3),
        "the change took {latency:?} to reach the store"
    );
    let report = report_that_applied(&log, "t1", changed);
    assert_eq!(report.trigger, Trigger::Change, "{report:?}");
    assert!(report.changes_applied() >= 1);
    watcher.stop();
    assert!(fleet.diff("t1").is_empty(), "{:#?}", fleet.diff("t1"));
    // The long-poll carried no Authorization header: the emulator answers 400 to one.
    assert!(
        log.longpolls("t1")
            .iter()
            .any(|(_, _, r)| matches!(r, Ok(h) if h.changes)),
        "{:?}",
        log.longpolls("t1")
    );
}

#[test]
fn a_burst_of_changes_during_a_sync_gives_exactly_one_follow_up() {
    let mut fleet = Fleet::new();
    let emu = fleet.add("t1", emulator(200, 4));
    // Every request takes 300 ms: the first sync lasts over a second.
    emu.set_latency(Duration::from_millis(300));
    let log = Log::default();
    let mut watcher = start(&fleet, &["t1"], options(), &log);
    wait_until(Duration::from_secs(10), "the first sync to start", || {
        watcher.tenant_state("t1").is_some_and(|s| s.running)
    });

    // 100 changes while it runs, each followed by a signal (as a webhook or a long-poll would
    // send), all while the first sync is still running.
    for i in 0..100 {
        emu.create_file(&format!("/Burst/f{i:03}.txt"), bytes("x"))
            .unwrap();
        assert!(watcher.request_sync("t1"));
    }
    let state = watcher.tenant_state("t1").unwrap();
    assert!(
        state.running && state.finished_syncs == 0,
        "the burst must land during the first sync: {state:?}"
    );
    assert!(state.follow_up_pending);

    wait_until(Duration::from_secs(30), "the follow-up", || {
        log.ok_syncs("t1") >= 2 && watcher.is_quiet()
    });
    // Give a wrongly queued third sync the time to show up.
    std::thread::sleep(Duration::from_millis(1500));
    watcher.stop();

    let reports = log.reports("t1");
    let triggers: Vec<Trigger> = reports.iter().map(|r| r.trigger).collect();
    assert_eq!(
        triggers,
        vec![Trigger::Scheduled, Trigger::FollowUp],
        "{reports:#?}"
    );
    assert!(reports.iter().all(|r| r.outcome.is_ok()));
    // Never two syncs of one tenant at once: every start follows the previous finish.
    let mut running = false;
    for e in log.events() {
        match e {
            WatchEvent::SyncStarted { .. } => {
                assert!(!running, "two syncs of one tenant overlapped");
                running = true;
            }
            WatchEvent::SyncFinished(_) => running = false,
            _ => {}
        }
    }
    emu.set_latency(Duration::ZERO);
    fleet.harness("t1").assert_matches_truth();
}

#[test]
fn the_longpoll_backoff_is_honoured() {
    let mut fleet = Fleet::new();
    let emu = fleet.add(
        "t1",
        Emulator::start(EmulatorConfig {
            files: 10,
            seed: 5,
            longpoll_backoff: Some(2),
            longpoll_max_wait: Some(Duration::from_millis(100)),
            ..Default::default()
        })
        .unwrap(),
    );
    let log = Log::default();
    let mut watcher = start(&fleet, &["t1"], options(), &log);
    wait_until(Duration::from_secs(20), "the first sync", || {
        log.ok_syncs("t1") == 1
    });
    emu.reset_counts();
    let window = Duration::from_secs(7);
    std::thread::sleep(window);
    let served = emu
        .request_counts()
        .get("files/list_folder/longpoll")
        .copied()
        .unwrap_or(0);
    watcher.stop();

    // Without the back-off a long-poll would return every 100 ms: about 70 in the window.
    // With it, at most one per 2 s (plus the one in flight at the start).
    assert!(
        (2..=5).contains(&served),
        "{served} long-polls in {window:?} with a 2 s back-off"
    );
    let polls = log.longpolls("t1");
    assert!(polls.len() >= 3, "{polls:?}");
    for pair in polls.windows(2) {
        let gap = pair[1].0.duration_since(pair[0].1);
        assert!(
            gap >= Duration::from_secs(2),
            "a long-poll started {gap:?} after the previous one returned with backoff 2"
        );
    }
}

#[test]
fn a_failing_longpoll_falls_back_to_the_schedule_and_is_retried() {
    let mut fleet = Fleet::new();
    let emu = fleet.add("t1", emulator(10, 6));
    // Every long-poll fails (503, so the connector's own retries run out too).
    emu.inject(Fault {
        route: Some("files/list_folder/longpoll".into()),
        skip: 0,
        count: 1_000_000,
        kind: FaultKind::Status(503),
    });
    let log = Log::default();
    let opts = WatchOptions {
        interval: Some(Duration::from_secs(3)),
        ..options()
    };
    let mut watcher = start(&fleet, &["t1"], opts, &log);
    wait_until(Duration::from_secs(20), "the first sync", || {
        log.ok_syncs("t1") == 1
    });

    let changed = Instant::now();
    emu.create_file("/Later/by-schedule.txt", bytes("x"))
        .unwrap();
    wait_until(
        Duration::from_secs(15),
        "the change by the schedule",
        || fleet.has_path("t1", "/later/by-schedule.txt"),
    );
    let report = report_that_applied(&log, "t1", changed);
    assert_eq!(report.trigger, Trigger::Scheduled, "{report:?}");
    let failed = log
        .longpolls("t1")
        .iter()
        .filter(|(_, _, r)| r.is_err())
        .count();
    assert!(
        failed >= 1,
        "the long-poll must have failed: {:?}",
        log.longpolls("t1")
    );

    // The long-poll is retried: once the fault is gone it works again.
    emu.clear_faults();
    let cleared = Instant::now();
    wait_until(
        Duration::from_secs(15),
        "a long-poll that works again",
        || {
            log.longpolls("t1")
                .iter()
                .any(|(started, _, r)| *started >= cleared && r.is_ok())
        },
    );
    watcher.stop();
    assert!(fleet.diff("t1").is_empty(), "{:#?}", fleet.diff("t1"));
}

#[test]
fn manual_tenants_sync_only_when_asked_and_settings_drive_the_schedule() {
    let mut fleet = Fleet::new();
    let emu = emulator(20, 7);
    fleet.add("manual", emu.clone());
    fleet.add("sched", emu);
    fleet
        .host
        .set_setting("manual", "sync_strategy", "manual")
        .unwrap();
    fleet
        .host
        .set_setting("sched", "sync_interval_minutes", "5")
        .unwrap();
    let log = Log::default();
    // No interval in the options: each tenant's settings decide.
    let mut watcher = start(
        &fleet,
        &["manual", "sched"],
        WatchOptions {
            interval: None,
            ..options()
        },
        &log,
    );
    wait_until(
        Duration::from_secs(20),
        "the scheduled tenant's sync",
        || log.ok_syncs("sched") == 1,
    );
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        log.reports("manual").is_empty(),
        "a manual tenant syncs only when asked"
    );

    let watching: HashMap<String, (Option<Duration>, bool)> = log
        .events()
        .into_iter()
        .filter_map(|e| match e {
            WatchEvent::Watching {
                tenant,
                interval,
                longpoll,
                ..
            } => Some((tenant, (interval, longpoll))),
            _ => None,
        })
        .collect();
    assert_eq!(watching["manual"], (None, false));
    assert_eq!(watching["sched"], (Some(Duration::from_secs(300)), true));
    let next = watcher
        .tenant_state("sched")
        .unwrap()
        .next_scheduled_in
        .unwrap();
    assert!(
        next > Duration::from_secs(290) && next <= Duration::from_secs(300),
        "{next:?}"
    );

    assert!(watcher.request_sync("manual"));
    assert!(!watcher.request_sync("nobody"));
    wait_until(Duration::from_secs(20), "the requested sync", || {
        log.ok_syncs("manual") == 1
    });
    assert_eq!(log.reports("manual")[0].trigger, Trigger::Requested);
    watcher.stop();
    assert!(fleet.diff("manual").is_empty());

    // A restarted watcher keeps the schedule: the last sync was moments ago, so the next is
    // about one interval away, not now.
    let log2 = Log::default();
    let mut again = start(
        &fleet,
        &["sched"],
        WatchOptions {
            interval: None,
            longpoll: false,
            ..options()
        },
        &log2,
    );
    let next = again
        .tenant_state("sched")
        .unwrap()
        .next_scheduled_in
        .unwrap();
    assert!(next > Duration::from_secs(280), "{next:?}");
    std::thread::sleep(Duration::from_millis(300));
    again.stop();
    assert!(log2.reports("sched").is_empty());
}

#[test]
fn twenty_tenants_on_twenty_accounts_each_hold_exactly_their_own_records() {
    let mut fleet = Fleet::new();
    let names: Vec<String> = (0..20).map(|i| format!("tenant-{i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        // Distinct seeds: distinct account ids, ids and trees, so a mix-up cannot hide.
        fleet.add(name, emulator(150, 100 + i as u64));
    }
    let log = Log::default();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut watcher = start(
        &fleet,
        &refs,
        WatchOptions {
            max_concurrent: 8,
            ..options()
        },
        &log,
    );
    let took = wait_until(
        Duration::from_secs(120),
        "every tenant's first sync",
        || names.iter().all(|n| log.ok_syncs(n) >= 1),
    );
    eprintln!("20 first syncs (150 files each, 8 at a time): {took:?}");

    // A change in every account at once: twenty long-polls, twenty syncs.
    for (i, name) in names.iter().enumerate() {
        fleet.emulators[name]
            .create_file(&format!("/Only for {i}.txt"), bytes(name))
            .unwrap();
    }
    let took = wait_until(Duration::from_secs(30), "every change", || {
        names
            .iter()
            .enumerate()
            .all(|(i, n)| fleet.has_path(n, &format!("/only for {i}.txt")))
    });
    eprintln!("20 changes, one per tenant, all stored after {took:?}");
    watcher.stop();

    for name in &names {
        let diffs = fleet.diff(name);
        assert!(
            diffs.is_empty(),
            "{name} differs from its own account:\n{}",
            diffs.join("\n")
        );
        let owner = fleet.host.store().owner(name).unwrap().expect("owner");
        assert_eq!(owner.external_id, fleet.emulators[name].account_id());
    }
}

#[test]
fn a_revoked_and_a_rate_limited_tenant_do_not_slow_the_others() {
    // The bound: each healthy tenant's first sync completes within twice the time it took
    // without the troubled tenants, plus one second. The rate-limited tenant spends about 8 s
    // in Dropbox's retry_after waits in each attempt, far beyond that bound, so a watcher that
    // let it hold up the others would fail.
    let mut fleet = Fleet::new();
    let healthy: Vec<Emulator> = (0..4).map(|i| emulator(800, 200 + i)).collect();
    let opts = WatchOptions {
        max_concurrent: 8,
        ..options()
    };

    let solo_names: Vec<String> = (0..4).map(|i| format!("solo-{i}")).collect();
    for (name, emu) in solo_names.iter().zip(&healthy) {
        fleet.add(name, emu.clone());
    }
    let log = Log::default();
    let refs: Vec<&str> = solo_names.iter().map(String::as_str).collect();
    let started = Instant::now();
    let mut watcher = start(&fleet, &refs, opts.clone(), &log);
    wait_until(Duration::from_secs(60), "the solo syncs", || {
        solo_names.iter().all(|n| log.ok_syncs(n) == 1)
    });
    watcher.stop();
    let solo: Vec<Duration> = solo_names
        .iter()
        .map(|n| log.reports(n)[0].finished().duration_since(started))
        .collect();

    let revoked = emulator(50, 300);
    let limited = emulator(50, 301);
    fleet.add("revoked", revoked.clone());
    fleet.add("limited", limited.clone());
    revoked.revoke_all();
    limited.inject(Fault {
        route: None,
        skip: 0,
        count: 1_000_000,
        kind: FaultKind::RateLimitJson {
            retry_after: 2,
            reason: "too_many_requests".into(),
            include_field: true,
        },
    });
    let names: Vec<String> = (0..4).map(|i| format!("mixed-{i}")).collect();
    for (name, emu) in names.iter().zip(&healthy) {
        fleet.add(name, emu.clone());
    }
    let log = Log::default();
    // The troubled tenants first: a watcher serving tenants in order would reach them first.
    let mut refs = vec!["revoked", "limited"];
    refs.extend(names.iter().map(String::as_str));
    let started = Instant::now();
    let mut watcher = start(&fleet, &refs, opts, &log);
    wait_until(Duration::from_secs(60), "the healthy syncs", || {
        names.iter().all(|n| log.ok_syncs(n) == 1)
    });
    let mixed: Vec<Duration> = names
        .iter()
        .map(|n| log.reports(n)[0].finished().duration_since(started))
        .collect();
    wait_until(
        Duration::from_secs(30),
        "the rate-limited tenant's first attempt",
        || !log.reports("limited").is_empty(),
    );
    std::thread::sleep(Duration::from_secs(1));
    watcher.stop();
    eprintln!(
        "healthy first syncs completed after: alone {solo:?}, beside the troubled tenants {mixed:?}"
    );

    for (i, name) in names.iter().enumerate() {
        let bound = solo[i] * 2 + Duration::from_secs(1);
        assert!(
            mixed[i] <= bound,
            "{name} took {:?} beside the troubled tenants, {:?} alone (bound {bound:?})",
            mixed[i],
            solo[i]
        );
        assert!(
            fleet.diff(name).is_empty(),
            "{name}: {:#?}",
            fleet.diff(name)
        );
    }
    let revoked_reports = log.reports("revoked");
    assert!(!revoked_reports.is_empty());
    assert!(
        revoked_reports.iter().all(|r| r
            .outcome
            .as_ref()
            .is_err_and(|e| e.contains("authorization required"))),
        "{revoked_reports:#?}"
    );
    // Nothing a retry can fix: it waits for its next scheduled time, it does not spin.
    assert_eq!(revoked_reports.len(), 1, "{revoked_reports:#?}");
    assert!(revoked_reports[0].retry_in.is_none());
    let limited_reports = log.reports("limited");
    assert!(
        limited_reports.iter().all(|r| r
            .outcome
            .as_ref()
            .is_err_and(|e| e.contains("rate limited"))),
        "{limited_reports:#?}"
    );
    // It is retried no sooner than Dropbox asked.
    assert!(
        limited_reports[0]
            .retry_in
            .is_some_and(|d| d >= Duration::from_secs(2)),
        "{limited_reports:#?}"
    );
    assert!(fleet.records("revoked").is_empty() && fleet.records("limited").is_empty());
}

#[test]
fn stopping_mid_sync_commits_whole_pages_and_the_next_sync_completes() {
    let mut fleet = Fleet::new();
    // Three pages of 2000 entries, each request 400 ms.
    let emu = fleet.add("t1", emulator(5000, 8));
    emu.set_latency(Duration::from_millis(400));
    let log = Log::default();
    let mut watcher = start(&fleet, &["t1"], options(), &log);
    wait_until(Duration::from_secs(30), "the first page", || {
        fleet.host.store().record_count("t1").unwrap() > 0
    });
    watcher.stop();

    let reports = log.reports("t1");
    assert_eq!(reports.len(), 1, "{reports:#?}");
    let summary = reports[0]
        .outcome
        .as_ref()
        .expect("the stopped sync returns what it committed");
    assert!(summary.interrupted, "{summary:?}");
    let h = fleet.harness("t1");
    let truth = emu.truth();
    let stored = h.records();
    assert!(
        stored.len() < truth.len(),
        "the sync stopped before the end"
    );
    // Whole pages only: as many records as entries the committed pages held, each one exactly
    // as in the account.
    assert_eq!(stored.len() as u64, summary.entries);
    let ids: std::collections::HashSet<String> =
        stored.iter().map(|r| r.external_id.clone()).collect();
    let diffs = diff_with_truth(&truth, &stored, |t| ids.contains(&t.id));
    assert!(diffs.is_empty(), "{diffs:#?}");
    h.assert_events_replay_to_store();

    emu.set_latency(Duration::ZERO);
    let next = h.sync();
    assert!(!next.interrupted);
    h.assert_matches_truth();
}

// ---- the command line ----

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(CLI).args(args).output().expect("the CLI runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn ctrl_c_stops_watch_cleanly_and_the_next_sync_completes() {
    let emu = emulator(5000, 9);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("watch.db");
    let file = dir.path().join("tenants.toml");
    std::fs::write(
        &file,
        format!(
            "# tenants of this host\n[[tenant]]\nname = \"alice\"\napi_url = \"{}\"\naccess_token = \"{}\"\ninterval_minutes = 15\nsync_strategy = \"change-notifications\"\n",
            emu.base_url(),
            emu.access_token()
        ),
    )
    .unwrap();
    emu.set_latency(Duration::from_millis(400));
    // Created (and migrated) before the child starts, so the test can read it meanwhile.
    let store = SqliteStore::open(&db).expect("the store opens");
    let mut child = Command::new(CLI)
        .args([
            "watch",
            "--db",
            path_str(&db),
            "--tenants-file",
            path_str(&file),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("watch starts");

    // Wait until it is mid-sync: some pages committed, not all.
    wait_until(
        Duration::from_secs(60),
        "the first page in the store",
        || store.record_count("alice").unwrap_or(0) > 0,
    );
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "watch did not stop after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(exit.success(), "exit {exit:?}\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("alice scheduled full sync:")
            && stdout.contains("(interrupted; the next sync resumes)"),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("stopped after 1 syncs"), "{stdout}");
    assert!(
        stderr.contains("alice: every 15m, plus changes by long-poll"),
        "{stderr}"
    );

    // The file configured the tenant in the database.
    assert_eq!(store.tenant_api_url("alice").unwrap(), Some(emu.base_url()));
    assert!(
        store
            .settings("alice")
            .unwrap()
            .contains(&("sync_interval_minutes".into(), "15".into()))
    );

    let stored = store.records("alice").unwrap();
    assert!(stored.len() < emu.truth().len());
    let ids: std::collections::HashSet<String> =
        stored.iter().map(|r| r.external_id.clone()).collect();
    assert!(diff_with_truth(&emu.truth(), &stored, |t| ids.contains(&t.id)).is_empty());

    emu.set_latency(Duration::ZERO);
    let host = ConnectorHost::new(
        dropbox_runtime(),
        Arc::new(SqliteStore::open(&db).unwrap()),
        None,
        Default::default(),
    )
    .unwrap();
    let h = Harness {
        emulator: emu,
        host,
        tenant: "alice".into(),
        dir,
        database: None,
    };
    let next = h.sync();
    assert!(!next.interrupted);
    h.assert_matches_truth();
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

#[test]
fn settings_out_of_bounds_are_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("config.db");
    let db = path_str(&db);
    let refused = [
        (
            "batch_size",
            "0",
            "batch_size: 0 is out of bounds [1, 10000]",
        ),
        (
            "batch_size",
            "10001",
            "batch_size: 10001 is out of bounds [1, 10000]",
        ),
        (
            "sync_interval_minutes",
            "0",
            "sync_interval_minutes: 0 is out of bounds [1, 10080]",
        ),
        (
            "sync_interval_minutes",
            "hourly",
            "sync_interval_minutes: 'hourly' is not a whole number",
        ),
        (
            "sync_strategy",
            "hourly",
            "sync_strategy: 'hourly' is not one of manual, scheduled, change-notifications",
        ),
        (
            "modified_after",
            "2024-13-01",
            "modified_after: '2024-13-01' is not a date (YYYY-MM-DD)",
        ),
        ("colour", "blue", "unknown setting 'colour'"),
    ];
    for (key, value, message) in refused {
        let out = cli(&["config", "--db", db, "--tenant", "t", "set", key, value]);
        assert!(!out.status.success(), "{key}={value} was accepted");
        assert!(
            text(&out.stderr).contains(message),
            "{key}={value}: {}",
            text(&out.stderr)
        );
    }
    // Nothing refused was stored: the defaults (the manifest's) still show.
    let out = cli(&["config", "--db", db, "--tenant", "t", "get", "batch_size"]);
    assert_eq!(text(&out.stdout).trim(), "100");
    let ok = cli(&[
        "config",
        "--db",
        db,
        "--tenant",
        "t",
        "set",
        "sync_interval_minutes",
        "10080",
    ]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let list = text(&cli(&["config", "--db", db, "--tenant", "t", "list"]).stdout);
    assert!(
        list.contains("sync_interval_minutes = 10080\n")
            && list.contains("batch_size = 100 (default)"),
        "{list}"
    );

    // The watch command applies the same bounds to its flag and to a tenants file.
    let out = cli(&["watch", "--db", db, "--tenant", "t", "--interval", "0"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr)
            .contains("--interval: sync_interval_minutes: 0 is out of bounds [1, 10080]"),
        "{}",
        text(&out.stderr)
    );
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[[tenant]]\nname = \"bob\"\ninterval_minutes = 20000\n",
    )
    .unwrap();
    let out = cli(&["watch", "--db", db, "--tenants-file", path_str(&file)]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("sync_interval_minutes: 20000 is out of bounds [1, 10080]"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(&file, "[[tenant]]\nname = \"bob\"\nintervall = 5\n").unwrap();
    let out = cli(&["watch", "--db", db, "--tenants-file", path_str(&file)]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unknown field `intervall`"),
        "{}",
        text(&out.stderr)
    );
}

// ---- measurements (run with --ignored --nocapture) ----

/// Change-to-store latency over 20 changes, one at a time, with the long-poll.
#[test]
#[ignore]
fn measure_change_to_store_latency() {
    let mut fleet = Fleet::new();
    let emu = fleet.add(
        "t1",
        Emulator::start(EmulatorConfig {
            files: 1000,
            seed: 10,
            ..Default::default()
        })
        .unwrap(),
    );
    let log = Log::default();
    let mut watcher = start(&fleet, &["t1"], options(), &log);
    wait_until(Duration::from_secs(60), "the first sync", || {
        log.ok_syncs("t1") == 1
    });
    let mut latencies = Vec::new();
    for i in 0..20 {
        std::thread::sleep(Duration::from_millis(300));
        let path = format!("/Latency/change {i:02}.txt");
        let changed = Instant::now();
        emu.create_file(&path, bytes("x")).unwrap();
        // Polled every millisecond: the figures are a few milliseconds.
        while !fleet.has_path("t1", &path.to_lowercase()) {
            assert!(
                changed.elapsed() < Duration::from_secs(30),
                "the change never arrived"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(changed.elapsed());
    }
    watcher.stop();
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "change-to-store latency over {} changes (1000-file account, long-poll): median {:.1} ms, worst {:.1} ms, best {:.1} ms",
        latencies.len(),
        ms(latencies[latencies.len() / 2]),
        ms(latencies[latencies.len() - 1]),
        ms(latencies[0])
    );
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Host memory with 100 idle tenants (each synced, then long-polling) and with 20 tenants
/// syncing at once. The emulators run in child processes so that only the host is measured.
#[test]
#[ignore]
fn measure_host_memory() {
    let (mut small, small_url, small_token) = child_emulator(11, 20);
    let (mut large, large_url, large_token) = child_emulator(12, 2000);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("m.db")).unwrap());
    let host =
        Arc::new(ConnectorHost::new(dropbox_runtime(), store, None, Default::default()).unwrap());
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "host RSS before any tenant: {:.1} MiB, {} threads",
        mib(vm_rss_kib()),
        threads()
    );

    // 100 idle tenants: each synced once (20 files), then only long-polling. The child
    // emulators honour the 30 s long-poll timeout, so every long-poll stays in flight.
    let idle: Vec<String> = (0..100).map(|i| format!("idle-{i:03}")).collect();
    for t in &idle {
        host.store()
            .set_tenant_api_url(t, Some(&small_url))
            .unwrap();
        host.connect(
            t,
            StoredCredentials {
                access_token: small_token.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    }
    let log = Log::default();
    let tenants: Vec<WatchTenant> = idle.iter().map(|t| WatchTenant::new(t)).collect();
    let opts = WatchOptions {
        max_concurrent: 8,
        stop_grace: Duration::from_millis(100),
        ..options()
    };
    let mut watcher = Watcher::start(host.clone(), &tenants, opts, log.sink()).unwrap();
    wait_until(Duration::from_secs(300), "100 first syncs", || {
        idle.iter().all(|t| log.ok_syncs(t) == 1)
    });
    std::thread::sleep(Duration::from_secs(3));
    let idle_rss = (0..10)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            vm_rss_kib()
        })
        .max()
        .unwrap_or(0);
    let returned = idle.iter().map(|t| log.longpolls(t).len()).sum::<usize>();
    println!(
        "host RSS with 100 idle tenants, each with a long-poll in flight ({returned} returned so far): {:.1} MiB, {} threads",
        mib(idle_rss),
        threads()
    );
    watcher.stop();

    // 20 tenants syncing 2000 files each, all at once.
    let before = vm_rss_kib();
    let syncing: Vec<String> = (0..20).map(|i| format!("busy-{i:02}")).collect();
    for t in &syncing {
        host.store()
            .set_tenant_api_url(t, Some(&large_url))
            .unwrap();
        host.connect(
            t,
            StoredCredentials {
                access_token: large_token.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    }
    let log = Log::default();
    let tenants: Vec<WatchTenant> = syncing.iter().map(|t| WatchTenant::new(t)).collect();
    let opts = WatchOptions {
        max_concurrent: 20,
        longpoll: false,
        ..options()
    };
    let started = Instant::now();
    let mut watcher = Watcher::start(host.clone(), &tenants, opts, log.sink()).unwrap();
    let mut peak = 0;
    while !syncing.iter().all(|t| log.ok_syncs(t) == 1) {
        peak = peak.max(vm_rss_kib());
        assert!(started.elapsed() < Duration::from_secs(300));
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = started.elapsed();
    watcher.stop();
    println!(
        "host RSS peak with 20 tenants syncing 2000 files each at once: {:.1} MiB ({:.1} MiB before; all done in {:.1}s)",
        mib(peak),
        mib(before),
        took.as_secs_f64()
    );
    for child in [&mut small, &mut large] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `host-test emulator` as a child process: (process, base URL, token).
fn child_emulator(seed: u64, files: usize) -> (std::process::Child, String, String) {
    let mut child = Command::new(CLI)
        .args([
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--seed",
            &seed.to_string(),
            "--files",
            &files.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the emulator starts");
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().expect("piped")));
    let url = lines.next().and_then(Result::ok).expect("the base URL");
    let token = lines.next().and_then(Result::ok).expect("the token");
    (child, url, token)
}

fn threads() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Issue 30, goal 4 on the single-process watcher: a long-poll answered with a rate limit
/// backs the tenant off for the source's window: no long-poll inside it (without the back-off
/// a failed long-poll is retried after 200 ms, doubling to 1 s), and no sync either, "sync now"
/// included.
#[test]
fn a_rate_limited_long_poll_holds_the_tenants_long_polls_and_syncs_for_the_window() {
    let mut fleet = Fleet::new();
    let limited = fleet.add("limited", emulator(10, 41));
    limited.inject(Fault {
        route: Some("files/list_folder/longpoll".into()),
        skip: 0,
        count: 1_000_000,
        kind: FaultKind::RateLimitJson {
            retry_after: 300,
            reason: "too_many_requests".into(),
            include_field: true,
        },
    });
    let log = Log::default();
    let mut watcher = start(&fleet, &["limited"], options(), &log);
    wait_until(Duration::from_secs(30), "the first sync", || {
        log.ok_syncs("limited") == 1
    });
    let longpolls = || {
        limited
            .request_counts()
            .get("files/list_folder/longpoll")
            .copied()
            .unwrap_or(0)
    };
    wait_until(
        Duration::from_secs(10),
        "the rate-limited long-poll",
        || longpolls() >= 1,
    );
    std::thread::sleep(Duration::from_millis(2500));
    let polls = longpolls();
    let syncs_before = limited.request_counts()["files/list_folder"];
    // "Sync now" inside the window: it waits.
    assert!(watcher.request_sync("limited"));
    std::thread::sleep(Duration::from_secs(2));
    let counts = limited.request_counts();
    watcher.stop();
    eprintln!("limited: {counts:?}");
    assert_eq!(polls, 1, "no long-poll inside the window: {counts:?}");
    assert_eq!(counts["files/list_folder/longpoll"], 1, "{counts:?}");
    assert_eq!(
        counts["files/list_folder"], syncs_before,
        "no sync inside the window: {counts:?}"
    );
    assert!(
        !counts.contains_key("files/list_folder/continue"),
        "{counts:?}"
    );
    assert_eq!(log.reports("limited").len(), 1, "the request waits");
}
