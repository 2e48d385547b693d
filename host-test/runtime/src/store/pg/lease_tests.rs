//! Leases, fencing and the schedule against a real server, with workers on separate
//! connections (each a `PgStore` of its own, as separate processes would be).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use super::testing::TestDatabase;
use super::*;
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
fn a_stale_lease_commits_nothing() {
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
    // Expired, not yet taken: refused all the same.
    assert!(matches!(
        lost(fenced_a.apply("t", &page("a2", 3), Some(&point("a2")))),
        LeaseLostReason::Expired { .. }
    ));
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

    // Nothing of the refused writes is visible: records, sync point, events.
    assert_eq!(b.record_count("t").unwrap(), 3);
    assert_eq!(b.get_sync_point("t").unwrap().as_deref(), Some("a1"));
    assert_eq!(b.events(Some("t"), 0).unwrap().len(), 3);
    assert_eq!(b.last_tenant_seq("t").unwrap(), 3);
    assert_eq!(b.owner("t").unwrap(), None);

    fenced_b
        .apply("t", &page("b1", 2), Some(&point("b1")))
        .unwrap();
    assert_eq!(b.record_count("t").unwrap(), 5);
    assert_eq!(b.last_tenant_seq("t").unwrap(), 5);
    let history = b.lease_history(Some("t")).unwrap();
    assert_eq!(
        history.iter().map(|h| h.commits).collect::<Vec<_>>(),
        [1, 1]
    );
    assert_no_overlap(&history);
}

#[test]
fn a_write_whose_lease_runs_out_before_its_commit_is_rolled_back_and_the_taker_waits_for_it() {
    let db = TestDatabase::create();
    let (a, b) = (worker_store(&db), worker_store(&db));
    a.ensure_tenant("t").unwrap();
    let ttl = Duration::from_millis(500);
    let lease_a = a.try_acquire("t", "a", ttl).unwrap().unwrap();
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
                // The page takes longer than the lease has left.
                thread::sleep(ttl + Duration::from_millis(300));
                Ok(())
            })
        })
    };
    writing.wait();
    // The lease has expired by the database's clock long before the slow write ends, but the
    // take-over waits for the tenant's lock: it cannot overlap the write.
    let started = Instant::now();
    let lease_b = loop {
        if let Some(l) = b.try_acquire("t", "b", LONG).unwrap() {
            break l;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let result = slow.join().expect("no panic");
    assert!(
        matches!(lost(result), LeaseLostReason::Expired { .. }),
        "the slow write is refused at its commit"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(lease_b.epoch, 2);
    assert!(b.get_records("t", &["late".into()]).unwrap().is_empty());
    assert_eq!(b.last_tenant_seq("t").unwrap(), 0);
    assert_eq!(b.lease_history(Some("t")).unwrap()[0].commits, 0);
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
