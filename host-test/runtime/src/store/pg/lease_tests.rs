//! Leases, fencing and the schedule against a real server, with workers on separate
//! connections (each a `PgStore` of its own, as separate processes would be).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use super::testing::TestDatabase;
use super::*;
use crate::secrets::Keyring;
use crate::store::contract::{flat, point, up};

const LONG: Duration = Duration::from_secs(60);

fn worker_store(db: &TestDatabase) -> Arc<PgStore> {
    Arc::new(db.store(Keyring::empty()))
}

fn page(prefix: &str, n: usize) -> Vec<Change> {
    (0..n)
        .map(|i| up(flat(&format!("{prefix}-{i:03}")), ChangeKind::Created))
        .collect()
}

fn lost(result: Result<impl std::fmt::Debug, StoreError>) -> LeaseLostReason {
    match result {
        Err(StoreError::LeaseLost(l)) => l.reason,
        other => panic!("expected LeaseLost, got {other:?}"),
    }
}

/// For every tenant, its leases one after the other: each ended (released, completed or
/// expired) before the next was granted, and each fenced commit happened inside its lease.
fn assert_no_overlap(history: &[LeaseRecord]) {
    let mut by_tenant: BTreeMap<&str, Vec<&LeaseRecord>> = BTreeMap::new();
    for h in history {
        by_tenant.entry(&h.tenant).or_default().push(h);
    }
    for (tenant, leases) in by_tenant {
        for l in &leases {
            if let Some(at) = l.last_commit_at {
                assert!(
                    l.acquired_at <= at && at < l.expires_at,
                    "{tenant}: a commit of epoch {} at {at} outside its lease {l:?}",
                    l.epoch
                );
            }
        }
        for pair in leases.windows(2) {
            let (before, after) = (pair[0], pair[1]);
            assert_eq!(
                after.epoch,
                before.epoch + 1,
                "{tenant}: epochs are consecutive"
            );
            assert!(
                before.end() <= after.acquired_at,
                "{tenant}: epoch {} ({before:?}) overlaps epoch {} ({after:?})",
                before.epoch,
                after.epoch
            );
            if let Some(at) = before.last_commit_at {
                assert!(
                    at < after.acquired_at,
                    "{tenant}: epoch {} committed at {at}, after epoch {} was granted",
                    before.epoch,
                    after.epoch
                );
            }
            assert!(
                before.ended.is_some(),
                "{tenant}: epoch {} was followed but never ended",
                before.epoch
            );
        }
    }
}

#[test]
fn a_lease_is_exclusive_until_it_expires_and_every_acquisition_raises_the_epoch() {
    let db = TestDatabase::create();
    let (a, b) = (worker_store(&db), worker_store(&db));
    a.ensure_tenant("t").unwrap();
    let ttl = Duration::from_millis(400);

    let mut first = a.try_acquire("t", "a", ttl).unwrap().expect("free");
    assert_eq!(first.epoch, 1);
    assert!(
        b.try_acquire("t", "b", LONG).unwrap().is_none(),
        "held by a"
    );
    a.renew(&mut first, ttl).unwrap();
    assert_eq!(
        a.lease_holder("t").unwrap().map(|l| l.worker),
        Some("a".into())
    );

    thread::sleep(ttl + Duration::from_millis(100));
    assert_eq!(a.lease_holder("t").unwrap(), None, "expired");
    let second = b
        .try_acquire("t", "b", LONG)
        .unwrap()
        .expect("expired, so free");
    assert_eq!(second.epoch, 2);
    assert!(second.acquired_at >= first.expires_at);
    assert_eq!(
        lost(a.renew(&mut first, ttl)),
        LeaseLostReason::Superseded {
            epoch: 2,
            worker: Some("b".into())
        }
    );
    assert!(!a.release(&first).unwrap(), "not a's to release");

    assert!(b.release(&second).unwrap());
    assert_eq!(
        lost(b.renew(&mut second.clone(), ttl)),
        LeaseLostReason::Released
    );
    let third = a
        .try_acquire("t", "a", LONG)
        .unwrap()
        .expect("released, so free");
    assert_eq!(
        third.epoch, 3,
        "a release keeps the epoch: tokens are never reused"
    );

    // A lease never creates a tenant.
    assert!(a.try_acquire("nobody", "a", LONG).unwrap().is_none());
    assert!(!a.tenants().unwrap().contains(&"nobody".to_string()));

    let history = a.lease_history(Some("t")).unwrap();
    let ends: Vec<_> = history
        .iter()
        .map(|h| (h.epoch, h.worker.as_str(), h.ended))
        .collect();
    assert_eq!(
        ends,
        [
            (1, "a", Some(LeaseEnd::Expired)),
            (2, "b", Some(LeaseEnd::Released)),
            (3, "a", None)
        ]
    );
    assert_no_overlap(&history);
}

#[test]
fn a_superseded_lease_commits_nothing_but_one_only_run_out_still_writes() {
    let db = TestDatabase::create();
    let (a, b) = (worker_store(&db), worker_store(&db));
    a.ensure_tenant("t").unwrap();
    let ttl = Duration::from_millis(400);
    let lease_a = a.try_acquire("t", "a", ttl).unwrap().unwrap();
    let fenced_a = a.fenced(&lease_a);
    fenced_a
        .apply("t", &page("a1", 3), Some(&point("a1")))
        .unwrap();

    // Only its own tenant.
    assert!(matches!(
        fenced_a.apply("other", &page("x", 1), None),
        Err(StoreError::Invalid(_))
    ));

    thread::sleep(ttl + Duration::from_millis(100));
    // Run out by the clock but never taken over: fencing is by epoch, so the write commits,
    // and its commit extends the lease (nobody can take the tenant for a ttl).
    assert_eq!(a.lease_holder("t").unwrap(), None, "run out by the clock");
    fenced_a
        .apply("t", &page("a2", 3), Some(&point("a2")))
        .unwrap();
    let extended = a
        .lease_holder("t")
        .unwrap()
        .expect("extended by the commit");
    assert_eq!((extended.epoch, extended.worker.as_str()), (1, "a"));
    assert!(
        b.try_acquire("t", "b", LONG).unwrap().is_none(),
        "a's again"
    );
    thread::sleep(ttl + Duration::from_millis(100));
    let lease_b = b.try_acquire("t", "b", LONG).unwrap().unwrap();
    let fenced_b = b.fenced(&lease_b);
    for refused in [
        fenced_a
            .apply("t", &page("a3", 3), Some(&point("a3")))
            .map(|_| ()),
        fenced_a.clear("t"),
        fenced_a.delete_sync_point("t"),
        fenced_a.put_owner(
            "t",
            &User {
                external_id: "dbid:a".into(),
                email: "a@example.com".into(),
                display_name: "A".into(),
            },
            &RecordGroup {
                external_id: "g".into(),
                name: "g".into(),
                kind: GroupKind::Drive,
            },
            &[],
        ),
    ] {
        assert_eq!(
            lost(refused),
            LeaseLostReason::Superseded {
                epoch: 2,
                worker: Some("b".into())
            }
        );
    }
    assert!(matches!(
        a.complete(&lease_a, SyncOutcome::Ok, Some(LONG)),
        Err(StoreError::LeaseLost(_))
    ));

    assert_eq!(
        lost(a.renew(&mut lease_a.clone(), ttl)),
        LeaseLostReason::Superseded {
            epoch: 2,
            worker: Some("b".into())
        }
    );

    // Nothing of the refused writes is visible: records, sync point, events.
    assert_eq!(b.record_count("t").unwrap(), 6);
    assert_eq!(b.get_sync_point("t").unwrap().as_deref(), Some("a2"));
    assert_eq!(b.events(Some("t"), 0).unwrap().len(), 6);
    assert_eq!(b.last_tenant_seq("t").unwrap(), 6);
    assert_eq!(b.owner("t").unwrap(), None);

    fenced_b
        .apply("t", &page("b1", 2), Some(&point("b1")))
        .unwrap();
    assert_eq!(b.record_count("t").unwrap(), 8);
    assert_eq!(b.last_tenant_seq("t").unwrap(), 8);
    let history = b.lease_history(Some("t")).unwrap();
    assert_eq!(
        history.iter().map(|h| h.commits).collect::<Vec<_>>(),
        [2, 1]
    );
    assert_no_overlap(&history);
}

#[test]
fn a_write_that_outlives_its_lease_commits_first_time_extends_it_and_the_taker_waits() {
    let db = TestDatabase::create();
    let (a, b) = (worker_store(&db), worker_store(&db));
    a.ensure_tenant("t").unwrap();
    let ttl = Duration::from_millis(500);
    let mut lease_a = a.try_acquire("t", "a", ttl).unwrap().unwrap();
    let writing = Arc::new(Barrier::new(2));
    let slow = {
        let (a, lease_a, writing) = (a.clone(), lease_a.clone(), writing.clone());
        thread::spawn(move || {
            a.in_tenant_tx("t", Some(&lease_a), |tx, st, seq| {
                let mut summary = ApplySummary::default();
                apply_change(
                    tx,
                    st,
                    "t",
                    0,
                    seq,
                    &up(flat("late"), ChangeKind::Created),
                    &mut summary,
                )?;
                writing.wait();
                // The page takes three times the lease's ttl: no renewal can run meanwhile
                // (it needs the row lock this write holds).
                thread::sleep(ttl * 3);
                Ok(())
            })
        })
    };
    writing.wait();
    // The worker's renewal waits for the write, then finds the lease still its own.
    let renewer = {
        let (a, mut lease) = (a.clone(), lease_a.clone());
        thread::spawn(move || a.renew(&mut lease, ttl).map(|()| lease))
    };
    // The lease runs out by the database's clock long before the slow write ends, but the
    // take-over waits for the tenant's lock: it cannot overlap the write, and after it the
    // lease is live again (extended by the commit).
    thread::sleep(ttl + Duration::from_millis(100));
    assert_eq!(a.lease_holder("t").unwrap(), None, "run out by the clock");
    let started = Instant::now();
    assert!(b.try_acquire("t", "b", LONG).unwrap().is_none());
    assert!(started.elapsed() >= ttl, "waited for the write's lock");
    slow.join()
        .expect("no panic")
        .expect("committed on its first attempt");
    lease_a = renewer
        .join()
        .expect("no panic")
        .expect("renewed after the write");
    assert_eq!(b.get_records("t", &["late".into()]).unwrap().len(), 1);
    assert_eq!(b.last_tenant_seq("t").unwrap(), 1);
    let history = b.lease_history(Some("t")).unwrap();
    assert_eq!(history.len(), 1, "one lease, never lost");
    assert_eq!(history[0].commits, 1);
    assert_no_overlap(&history);
    // Once it runs out and somebody takes the tenant over, the old holder is refused.
    thread::sleep(ttl + Duration::from_millis(100));
    let lease_b = b
        .try_acquire("t", "b", LONG)
        .unwrap()
        .expect("ran out, so free");
    assert_eq!(lease_b.epoch, 2);
    assert_eq!(
        lost(a.fenced(&lease_a).apply("t", &page("stale", 1), None)),
        LeaseLostReason::Superseded {
            epoch: 2,
            worker: Some("b".into())
        }
    );
    assert!(matches!(
        lost(a.complete(&lease_a, SyncOutcome::Ok, Some(LONG))),
        LeaseLostReason::Superseded { .. }
    ));
    assert_no_overlap(&b.lease_history(Some("t")).unwrap());
}

#[test]
fn competing_workers_claim_each_due_tenant_exactly_once() {
    let db = TestDatabase::create();
    let admin = worker_store(&db);
    const TENANTS: usize = 12;
    for t in 0..TENANTS {
        admin
            .set_schedule(
                &format!("t{t:02}"),
                Strategy::Scheduled,
                Duration::from_secs(3600),
            )
            .unwrap();
    }
    let start = Arc::new(Barrier::new(3));
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let (store, start) = (worker_store(&db), start.clone());
            thread::spawn(move || {
                let name = format!("w{w}");
                let mut synced = Vec::new();
                start.wait();
                loop {
                    let leases = store.claim_due(&name, 2, LONG).unwrap();
                    if leases.is_empty() {
                        break;
                    }
                    for lease in leases {
                        let fenced = store.fenced(&lease);
                        for p in 0..3 {
                            fenced
                                .apply(
                                    &lease.tenant,
                                    &page(&format!("{name}-p{p}"), 4),
                                    Some(&point(&name)),
                                )
                                .unwrap();
                        }
                        store
                            .complete(&lease, SyncOutcome::Ok, Some(Duration::from_secs(3600)))
                            .unwrap();
                        synced.push(lease.tenant);
                    }
                }
                synced
            })
        })
        .collect();
    let mut claimed: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("no panic"))
        .collect();
    claimed.sort();
    let expected: Vec<String> = (0..TENANTS).map(|t| format!("t{t:02}")).collect();
    assert_eq!(claimed, expected, "every tenant once, none twice");
    let history = admin.lease_history(None).unwrap();
    assert_eq!(history.len(), TENANTS);
    assert!(
        history
            .iter()
            .all(|h| h.ended == Some(LeaseEnd::Completed) && h.commits == 3)
    );
    for t in &expected {
        // One worker wrote all of the tenant's pages.
        let writers: BTreeSet<String> = admin
            .records(t)
            .unwrap()
            .iter()
            .map(|r| {
                r.external_id
                    .split('-')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert_eq!(writers.len(), 1, "{t}: written by {writers:?}");
    }
    let schedules = admin.schedules().unwrap();
    assert!(
        schedules
            .iter()
            .all(|s| s.last_outcome == Some(SyncOutcome::Ok))
    );
    assert!(
        admin.claim_due("late", 10, LONG).unwrap().is_empty(),
        "nothing due for an hour"
    );
}

#[test]
fn workers_syncing_round_after_round_never_overlap_and_a_killed_one_is_taken_over() {
    let db = TestDatabase::create();
    let admin = worker_store(&db);
    const TENANTS: usize = 6;
    let interval = Duration::from_millis(150);
    // Long for the live workers (a loaded machine must not make them lose a lease), short
    // for the one that dies, so that its tenants are taken over during the run.
    let ttl = Duration::from_secs(5);
    let dead_ttl = Duration::from_millis(400);
    for t in 0..TENANTS {
        admin
            .set_schedule(&format!("t{t}"), Strategy::Scheduled, interval)
            .unwrap();
    }
    let run_for = Duration::from_millis(2500);
    let start = Arc::new(Barrier::new(4));
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let (store, start) = (worker_store(&db), start.clone());
            thread::spawn(move || {
                let name = format!("w{w}");
                start.wait();
                let began = Instant::now();
                let mut round = 0;
                while began.elapsed() < run_for {
                    let leases = store.claim_due(&name, 1, ttl).unwrap();
                    if leases.is_empty() {
                        thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    for mut lease in leases {
                        let fenced = store.fenced(&lease);
                        for p in 0..3 {
                            round += 1;
                            fenced
                                .apply(
                                    &lease.tenant,
                                    &page(&format!("{name}-r{round:05}"), 2),
                                    Some(&point(&format!("{name}-{round}"))),
                                )
                                .unwrap();
                            if p == 1 {
                                store.renew(&mut lease, ttl).unwrap();
                            }
                            thread::sleep(Duration::from_millis(5));
                        }
                        store
                            .complete(&lease, SyncOutcome::Ok, Some(interval))
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    // The killed worker: claims what it can, writes one page, and stops dead (no renewal, no
    // completion), as after SIGKILL.
    let killed = {
        let (store, start) = (worker_store(&db), start.clone());
        thread::spawn(move || {
            start.wait();
            thread::sleep(Duration::from_millis(300));
            let leases = loop {
                let l = store.claim_due("killed", 2, dead_ttl).unwrap();
                if !l.is_empty() {
                    break l;
                }
                thread::sleep(Duration::from_millis(5));
            };
            for lease in &leases {
                store
                    .fenced(lease)
                    .apply(&lease.tenant, &page("killed", 1), None)
                    .unwrap();
            }
            leases
        })
    };
    let dead_leases = killed.join().expect("no panic");
    for w in workers {
        w.join().expect("no panic");
    }
    let history = admin.lease_history(None).unwrap();
    assert_no_overlap(&history);
    for dead in &dead_leases {
        let of_tenant: Vec<_> = history.iter().filter(|h| h.tenant == dead.tenant).collect();
        let own = of_tenant.iter().find(|h| h.epoch == dead.epoch).unwrap();
        assert_eq!(own.ended, Some(LeaseEnd::Expired), "{own:?}");
        let next = of_tenant
            .iter()
            .find(|h| h.epoch == dead.epoch + 1)
            .expect("another worker took the tenant over");
        assert!(next.acquired_at >= own.expires_at);
        assert!(next.commits > 0, "and synced it");
    }
    // Every tenant was synced many times, by more than one worker over the run.
    for t in 0..TENANTS {
        let tenant = format!("t{t}");
        let leases: Vec<_> = history.iter().filter(|h| h.tenant == tenant).collect();
        assert!(leases.len() >= 3, "{tenant}: {} leases", leases.len());
    }
    let workers_seen: BTreeSet<&str> = history.iter().map(|h| h.worker.as_str()).collect();
    assert!(workers_seen.len() >= 3, "{workers_seen:?}");
}

#[test]
fn a_worker_that_stops_renewing_loses_its_tenant_after_the_ttl() {
    let db = TestDatabase::create();
    let admin = worker_store(&db);
    admin.set_schedule("t", Strategy::Scheduled, LONG).unwrap();
    let ttl = Duration::from_millis(500);
    let dead = {
        let a = worker_store(&db);
        let mut leases = a.claim_due("a", 5, ttl).unwrap();
        assert_eq!(leases.len(), 1);
        let lease = leases.remove(0);
        a.fenced(&lease)
            .apply("t", &page("a", 2), Some(&point("a")))
            .unwrap();
        lease
        // `a` is dropped here: its connections close, nothing is released.
    };
    let b = worker_store(&db);
    assert!(b.claim_due("b", 5, LONG).unwrap().is_empty(), "still a's");
    let waited = Instant::now();
    let lease_b = loop {
        let mut l = b.claim_due("b", 5, LONG).unwrap();
        if let Some(l) = l.pop() {
            break l;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(5),
            "never taken over"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        (lease_b.tenant.as_str(), lease_b.epoch),
        ("t", dead.epoch + 1)
    );
    assert!(lease_b.acquired_at >= dead.expires_at);
    // b continues from where a's last commit left the tenant.
    assert_eq!(b.get_sync_point("t").unwrap().as_deref(), Some("a"));
    b.fenced(&lease_b)
        .apply("t", &page("b", 1), Some(&point("b")))
        .unwrap();
    b.complete(&lease_b, SyncOutcome::Ok, Some(LONG)).unwrap();
    assert_eq!(b.record_count("t").unwrap(), 3);
    assert_no_overlap(&b.lease_history(Some("t")).unwrap());
}

#[test]
fn tenants_added_or_removed_in_the_database_are_seen_by_the_next_claim() {
    let db = TestDatabase::create();
    let worker = worker_store(&db);
    let operator = worker_store(&db);
    assert!(worker.claim_due("w", 10, LONG).unwrap().is_empty());

    operator
        .set_schedule("added", Strategy::Scheduled, LONG)
        .unwrap();
    // Another operator writes the table directly.
    db.client()
        .batch_execute(
            "INSERT INTO tenants (name, created_at) VALUES ('by-sql', 0);
             INSERT INTO schedules (tenant, strategy, interval_ms, next_due_at)
             VALUES ('by-sql', 'scheduled', 60000, 0);
             INSERT INTO tenants (name, created_at) VALUES ('gone', 0);
             INSERT INTO schedules (tenant, strategy, interval_ms, next_due_at)
             VALUES ('gone', 'scheduled', 60000, 0);
             INSERT INTO tenants (name, created_at) VALUES ('unscheduled', 0);
             INSERT INTO tenants (name, created_at) VALUES ('paused', 0);",
        )
        .unwrap();
    operator
        .set_schedule("paused", Strategy::Scheduled, LONG)
        .unwrap();
    assert!(operator.remove_schedule("paused").unwrap());
    db.client()
        .execute("DELETE FROM tenants WHERE name = 'gone'", &[])
        .unwrap();

    let claimed: Vec<String> = worker
        .claim_due("w", 10, LONG)
        .unwrap()
        .into_iter()
        .map(|l| l.tenant)
        .collect();
    assert_eq!(claimed, ["added", "by-sql"]);
}

#[test]
fn a_sync_requested_during_a_sync_gives_one_follow_up_and_manual_waits_for_a_request() {
    let db = TestDatabase::create();
    let worker = worker_store(&db);
    let signals = worker_store(&db);
    worker
        .set_schedule("t", Strategy::ChangeNotifications, LONG)
        .unwrap();
    worker.set_schedule("m", Strategy::Manual, LONG).unwrap();

    let lease = worker
        .claim_due("w", 10, LONG)
        .unwrap()
        .pop()
        .expect("t is due");
    assert_eq!(lease.tenant, "t", "manual is never due by itself");
    assert!(signals.request_sync("t").unwrap());
    assert!(signals.request_sync("t").unwrap(), "any number of signals");
    worker
        .complete(&lease, SyncOutcome::Ok, Some(LONG))
        .unwrap();

    let follow_up = worker.claim_due("w", 10, LONG).unwrap();
    assert_eq!(follow_up.len(), 1, "one follow-up");
    worker
        .complete(&follow_up[0], SyncOutcome::Failed, Some(LONG))
        .unwrap();
    assert!(
        worker.claim_due("w", 10, LONG).unwrap().is_empty(),
        "then the interval"
    );
    let t = worker
        .schedules()
        .unwrap()
        .into_iter()
        .find(|s| s.tenant == "t")
        .unwrap();
    assert_eq!(t.last_outcome, Some(SyncOutcome::Failed));
    assert!(t.next_due_at.unwrap() >= t.last_completed_at.unwrap() + 59_000);

    assert!(signals.request_sync("m").unwrap());
    let manual = worker.claim_due("w", 10, LONG).unwrap();
    assert_eq!(
        manual.iter().map(|l| l.tenant.as_str()).collect::<Vec<_>>(),
        ["m"]
    );
    worker.complete(&manual[0], SyncOutcome::Ok, None).unwrap();
    assert!(worker.claim_due("w", 10, LONG).unwrap().is_empty());
    assert!(!signals.request_sync("unknown").unwrap());
    assert!(matches!(
        worker.set_schedule("z", Strategy::Scheduled, Duration::ZERO),
        Err(StoreError::Invalid(_))
    ));
}

fn schedule_of(store: &PgStore, tenant: &str) -> Option<Schedule> {
    store
        .schedules()
        .unwrap()
        .into_iter()
        .find(|s| s.tenant == tenant)
}

fn connected(store: &PgStore, tenant: &str, strategy: Strategy) {
    store
        .put_credentials(
            tenant,
            &StoredCredentials {
                access_token: format!("{tenant}-token"),
                ..Default::default()
            },
        )
        .unwrap();
    store.set_schedule(tenant, strategy, LONG).unwrap();
}

fn claimed(store: &PgStore, worker: &str) -> Vec<String> {
    store
        .claim_due(worker, 10, LONG)
        .unwrap()
        .into_iter()
        .map(|l| l.tenant)
        .collect()
}

fn new_keyring() -> Keyring {
    Keyring::parse(&Keyring::generate_key(), "test").expect("a generated key parses")
}

const BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(300),
    cap: Duration::from_millis(1000),
    retry_after: None,
};

#[test]
fn a_failed_sync_backs_its_tenant_off_for_every_worker_doubling_up_to_the_cap() {
    let db = TestDatabase::create();
    let (a, b) = (
        Arc::new(db.store(new_keyring())),
        Arc::new(db.store(new_keyring())),
    );
    connected(&a, "t", Strategy::Scheduled);
    let mut waits = Vec::new();
    for n in 1..=4 {
        let lease = a.claim_due("a", 1, LONG).unwrap().pop().expect("due");
        a.complete_failed(&lease, Some(Duration::ZERO), &BACKOFF)
            .unwrap();
        let s = schedule_of(&b, "t").unwrap();
        assert_eq!(s.failures, n);
        let wait = s.backoff_until.unwrap() - s.last_completed_at.unwrap();
        waits.push(wait);
        // Due by its time, and asked for: neither worker claims it during the back-off.
        assert!(b.request_sync("t").unwrap());
        assert!(claimed(&b, "b").is_empty(), "backing off after failure {n}");
        let left = s.backoff_until.unwrap()
            - db.client()
                .query_one("SELECT conn_rt_now_ms()", &[])
                .unwrap()
                .get::<_, i64>(0);
        thread::sleep(Duration::from_millis(left.max(0) as u64 + 30));
    }
    assert_eq!(waits, [300, 600, 1000, 1000], "doubling, capped");
    // Then b claims it, and a success clears the back-off.
    let lease = b.claim_due("b", 1, LONG).unwrap().pop().expect("due again");
    b.complete(&lease, SyncOutcome::Ok, Some(LONG)).unwrap();
    let s = schedule_of(&a, "t").unwrap();
    assert_eq!((s.failures, s.backoff_until), (0, None));
}

#[test]
fn a_rate_limit_window_holds_claims_requests_and_polls_and_survives_reauthentication() {
    let db = TestDatabase::create();
    let store = db.store(new_keyring());
    connected(&store, "t", Strategy::ChangeNotifications);
    assert_eq!(store.poll_gate("t").unwrap(), PollGate::Open);
    let lease = store.claim_due("w", 1, LONG).unwrap().pop().expect("due");
    store
        .complete_failed(
            &lease,
            Some(Duration::ZERO),
            &Backoff {
                retry_after: Some(Duration::from_secs(300)),
                ..BACKOFF
            },
        )
        .unwrap();
    let s = schedule_of(&store, "t").unwrap();
    let window = s.rate_limited_until.unwrap() - s.last_completed_at.unwrap();
    assert_eq!(window, 300_000);
    assert_eq!(s.backoff_until, s.rate_limited_until, "never shorter");
    // "Sync now" waits for the window; so does the long-poll.
    assert!(store.request_sync("t").unwrap());
    assert!(claimed(&store, "w").is_empty());
    assert!(matches!(
        store.poll_gate("t").unwrap(),
        PollGate::Wait { for_ms } if (299_000..=300_000).contains(&for_ms)
    ));
    // A new token resets the failure back-off but not the server's window.
    store
        .put_credentials(
            "t",
            &StoredCredentials {
                access_token: "new".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let s = schedule_of(&store, "t").unwrap();
    assert_eq!((s.failures, s.backoff_until), (0, None));
    assert!(s.rate_limited_until.is_some());
    assert!(claimed(&store, "w").is_empty(), "still inside the window");
    // A long-poll's own rate limit is stored the same way, and a shorter one changes nothing.
    connected(&store, "u", Strategy::ChangeNotifications);
    assert!(
        store
            .note_rate_limit("u", Duration::from_secs(120))
            .unwrap()
    );
    assert!(store.note_rate_limit("u", Duration::from_secs(1)).unwrap());
    assert!(matches!(
        store.poll_gate("u").unwrap(),
        PollGate::Wait { for_ms } if for_ms > 100_000
    ));
    assert!(claimed(&store, "w").is_empty());
    assert!(
        !store
            .note_rate_limit("nobody", Duration::from_secs(1))
            .unwrap()
    );
}

#[test]
fn an_authentication_failure_stops_the_tenant_until_reauthentication_and_a_setting_resets_it() {
    let db = TestDatabase::create();
    let store = db.store(new_keyring());
    connected(&store, "t", Strategy::ChangeNotifications);
    let lease = store.claim_due("w", 1, LONG).unwrap().pop().expect("due");
    // What the host does when the source refuses the token.
    store.set_needs_reauth("t", true).unwrap();
    store
        .complete_failed(&lease, Some(Duration::ZERO), &BACKOFF)
        .unwrap();
    thread::sleep(BACKOFF.base + Duration::from_millis(50));
    assert!(store.request_sync("t").unwrap());
    assert!(claimed(&store, "w").is_empty(), "stopped");
    assert_eq!(store.poll_gate("t").unwrap(), PollGate::NeedsReauth);
    assert!(store.status("t").unwrap().needs_reauth, "status says so");
    // Re-authenticated: due at once, back-off gone.
    store
        .put_credentials(
            "t",
            &StoredCredentials {
                access_token: "again".into(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(store.poll_gate("t").unwrap(), PollGate::Open);
    let lease = store
        .claim_due("w", 1, LONG)
        .unwrap()
        .pop()
        .expect("due again");
    store
        .complete_failed(
            &lease,
            Some(Duration::ZERO),
            &Backoff {
                base: LONG,
                cap: LONG,
                retry_after: None,
            },
        )
        .unwrap();
    assert!(claimed(&store, "w").is_empty(), "backing off for a minute");
    // A change of configuration is a fresh start too; the same value again is no change.
    store.set_setting("t", "recursive", "false").unwrap();
    let lease = store.claim_due("w", 1, LONG).unwrap().pop().expect("reset");
    store
        .complete_failed(
            &lease,
            Some(Duration::ZERO),
            &Backoff {
                base: LONG,
                cap: LONG,
                retry_after: None,
            },
        )
        .unwrap();
    store.set_setting("t", "recursive", "false").unwrap();
    assert!(
        claimed(&store, "w").is_empty(),
        "the same value changes nothing"
    );
    // A refresh of the access token alone is not a re-authentication.
    let refreshable = |access: &str| StoredCredentials {
        access_token: access.into(),
        refresh_token: Some("refresh".into()),
        ..Default::default()
    };
    store.set_needs_reauth("t", true).unwrap();
    store.put_credentials("t", &refreshable("a1")).unwrap();
    assert!(!store.status("t").unwrap().needs_reauth);
    let lease = store
        .claim_due("w", 1, LONG)
        .unwrap()
        .pop()
        .expect("re-authenticated");
    store
        .complete_failed(
            &lease,
            Some(Duration::ZERO),
            &Backoff {
                base: LONG,
                cap: LONG,
                retry_after: None,
            },
        )
        .unwrap();
    store.put_credentials("t", &refreshable("a2")).unwrap();
    assert_eq!(schedule_of(&store, "t").unwrap().failures, 1);
    assert!(claimed(&store, "w").is_empty());
}

#[test]
fn a_disconnected_or_removed_tenant_is_unscheduled() {
    let db = TestDatabase::create();
    let store = db.store(new_keyring());
    for t in ["stays", "leaves", "removed"] {
        connected(&store, t, Strategy::ChangeNotifications);
    }
    store.delete_credentials("leaves").unwrap();
    db.client()
        .execute("DELETE FROM tenants WHERE name = 'removed'", &[])
        .unwrap();
    let names: Vec<String> = store
        .schedules()
        .unwrap()
        .into_iter()
        .map(|s| s.tenant)
        .collect();
    assert_eq!(names, ["stays"]);
    assert!(!store.request_sync("leaves").unwrap());
    assert_eq!(claimed(&store, "w"), ["stays"]);
    assert_eq!(store.poll_gate("leaves").unwrap(), PollGate::Unscheduled);
}

#[test]
fn polls_are_capped_per_worker_and_limited_to_its_tenants() {
    let db = TestDatabase::create();
    let (a, b) = (worker_store(&db), worker_store(&db));
    let ttl = Duration::from_millis(400);
    let names: Vec<String> = (0..5).map(|i| format!("t{i}")).collect();
    for t in &names {
        a.set_schedule(t, Strategy::ChangeNotifications, LONG)
            .unwrap();
    }
    // a completes every sync but holds two polls; it offers the rest.
    let mut taken = Vec::new();
    for t in &names {
        taken.push(a.take_poll_capped(t, "a", ttl, 2).unwrap());
    }
    assert_eq!(
        taken,
        [
            PollTaken::Held,
            PollTaken::Held,
            PollTaken::Offered,
            PollTaken::Offered,
            PollTaken::Offered
        ]
    );
    let mut held_a = a.hold_polls_capped("a", ttl, 2, None).unwrap();
    held_a.sort();
    assert_eq!(held_a, ["t0", "t1"]);
    // b, limited to t3 and t4, takes only those of the offered ones.
    let only = ["t3".to_string(), "t4".to_string(), "t0".to_string()];
    let mut held_b = b.hold_polls_capped("b", ttl, 10, Some(&only)).unwrap();
    held_b.sort();
    assert_eq!(held_b, ["t3", "t4"], "t0 is a's, t2 is not b's to poll");
    // Nobody renews: after the ttl a worker with room for one takes exactly one.
    thread::sleep(ttl + Duration::from_millis(100));
    let c = worker_store(&db);
    assert_eq!(c.hold_polls_capped("c", ttl, 1, None).unwrap().len(), 1);
    // The unchanged API takes without a cap (kept for callers that want it).
    let all = c.hold_polls("c", ttl).unwrap();
    assert!(all.len() >= 2, "{all:?}");
    assert!(!a.take_poll("unscheduled", "a", ttl).unwrap());
}

#[test]
fn claims_are_limited_to_the_workers_tenants() {
    let db = TestDatabase::create();
    let store = worker_store(&db);
    for t in ["x", "y", "z"] {
        store.set_schedule(t, Strategy::Scheduled, LONG).unwrap();
    }
    let only = ["y".to_string()];
    let got: Vec<String> = store
        .claim_due_among("w", 10, LONG, Some(&only))
        .unwrap()
        .into_iter()
        .map(|l| l.tenant)
        .collect();
    assert_eq!(got, ["y"]);
    assert_eq!(claimed(&store, "v"), ["x", "z"]);
}

#[test]
fn the_histories_keep_a_bounded_number_of_rows_and_never_the_live_lease() {
    let db = TestDatabase::create();
    let store = worker_store(&db);
    store
        .set_schedule("t", Strategy::ChangeNotifications, LONG)
        .unwrap();
    for _ in 0..6 {
        let lease = store.claim_due("w", 1, LONG).unwrap().pop().expect("due");
        store
            .complete(&lease, SyncOutcome::Ok, Some(Duration::ZERO))
            .unwrap();
        store
            .take_poll("t", &format!("p{}", lease.epoch), LONG)
            .unwrap();
    }
    let live = store.claim_due("w", 1, LONG).unwrap().pop().expect("due");
    assert_eq!(store.lease_history(Some("t")).unwrap().len(), 7);
    assert_eq!(store.poll_history(Some("t")).unwrap().len(), 6);
    let pruned = store
        .prune_history(Retention {
            max_age: LONG,
            max_rows_per_tenant: 3,
        })
        .unwrap();
    assert_eq!(
        pruned,
        Pruned {
            leases: 4,
            polls: 3
        }
    );
    let epochs: Vec<i64> = store
        .lease_history(Some("t"))
        .unwrap()
        .iter()
        .map(|h| h.epoch)
        .collect();
    assert_eq!(epochs, [5, 6, 7]);
    // By age: everything ended goes, the live lease and the live poll stay.
    thread::sleep(Duration::from_millis(50));
    let pruned = store
        .prune_history(Retention {
            max_age: Duration::from_millis(10),
            max_rows_per_tenant: 1000,
        })
        .unwrap();
    assert_eq!(
        pruned,
        Pruned {
            leases: 2,
            polls: 2
        }
    );
    let left = store.lease_history(Some("t")).unwrap();
    assert_eq!(
        left.iter().map(|h| h.epoch).collect::<Vec<_>>(),
        [live.epoch]
    );
    assert_eq!(store.lease_holder("t").unwrap().unwrap().epoch, live.epoch);
    assert_eq!(store.poll_history(Some("t")).unwrap().len(), 1);
}
