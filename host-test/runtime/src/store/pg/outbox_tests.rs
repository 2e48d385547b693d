//! The outbox against a real server: per-tenant numbers without holes, durable positions,
//! concurrent writers and readers, and a failover in the middle.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use super::testing::TestDatabase;
use super::*;
use crate::store::contract::{flat, point, rec, up};

const LONG: Duration = Duration::from_secs(60);

fn page(prefix: &str, n: usize) -> Vec<Change> {
    (0..n)
        .map(|i| up(flat(&format!("{prefix}-{i:03}")), ChangeKind::Created))
        .collect()
}

/// Read the tenant's outbox to its end as `consumer`, acknowledging each page.
fn drain(store: &PgStore, consumer: &str, tenant: &str, into: &mut Vec<OutboxEvent>) {
    loop {
        let got = store.read_outbox(consumer, tenant, 7).unwrap();
        let Some(last) = got.last().map(|e| e.tenant_seq) else {
            return;
        };
        into.extend(got);
        store.ack(consumer, tenant, last).unwrap();
    }
}

/// Numbered 1, 2, ..., n in order, and no stored event delivered twice.
fn assert_gapless(events: &[OutboxEvent]) {
    let numbers: Vec<i64> = events.iter().map(|e| e.tenant_seq).collect();
    let expected: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(numbers, expected, "gaps or duplicates");
    let stored: BTreeSet<i64> = events.iter().map(|e| e.event.seq).collect();
    assert_eq!(stored.len(), events.len(), "an event delivered twice");
}

#[test]
fn tenant_numbers_have_no_holes_where_a_rolled_back_batch_was() {
    let db = TestDatabase::create();
    let store = db.store(Keyring::empty());
    store.apply("t", &page("a", 2), None).unwrap();
    store.apply("u", &page("other", 1), None).unwrap();
    // Its first event is written, then the second record's path conflicts: all rolled back.
    let err = store.apply(
        "t",
        &[
            up(rec("id:x", "/x", RecordKind::File), ChangeKind::Created),
            up(rec("id:y", "/a-000", RecordKind::File), ChangeKind::Created),
            up(rec("id:z", "/x", RecordKind::File), ChangeKind::Created),
        ],
        None,
    );
    assert!(matches!(err, Err(StoreError::Conflict(_))), "{err:?}");
    store
        .apply(
            "t",
            &[
                up(rec("id:b", "/b", RecordKind::File), ChangeKind::Created),
                Change::Remove("a-000".into()),
                Change::Purge,
            ],
            None,
        )
        .unwrap();
    let events = store.read_outbox("indexer", "t", 100).unwrap();
    assert_gapless(&events);
    assert_eq!(
        events
            .iter()
            .map(|e| (e.event.kind.as_str(), e.event.external_id.as_str()))
            .collect::<Vec<_>>(),
        [
            ("created", "a-000"),
            ("created", "a-001"),
            ("created", "id:b"),
            ("deleted", "a-000")
        ]
    );
    // The global numbers do have the holes (the other tenant's event, the rolled-back batch's
    // number): a reader of `seq` could not tell a hole from an event still to commit.
    let global: Vec<i64> = events.iter().map(|e| e.event.seq).collect();
    assert!(global.windows(2).any(|w| w[1] > w[0] + 1), "{global:?}");
    assert_eq!(store.last_tenant_seq("t").unwrap(), 4);
    assert_eq!(store.last_tenant_seq("u").unwrap(), 1);
}

#[test]
fn acks_only_move_forward_and_never_past_the_last_event() {
    let db = TestDatabase::create();
    let store = db.store(Keyring::empty());
    store.apply("t", &page("a", 5), None).unwrap();
    assert_eq!(store.consumer_position("c", "t").unwrap(), 0);
    assert_eq!(store.ack("c", "t", 3).unwrap(), 3);
    assert_eq!(
        store
            .read_outbox("c", "t", 10)
            .unwrap()
            .iter()
            .map(|e| e.tenant_seq)
            .collect::<Vec<_>>(),
        [4, 5]
    );
    // Backwards: a no-op, the position stays.
    assert_eq!(store.ack("c", "t", 1).unwrap(), 3);
    assert_eq!(store.consumer_position("c", "t").unwrap(), 3);
    // Past the end: refused, the position stays.
    assert!(matches!(
        store.ack("c", "t", 6),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.ack("c", "nobody", 1),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.ack("c", "t", -1),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.consumer_position("c", "t").unwrap(), 3);
    // Positions are per consumer and per tenant.
    assert_eq!(store.consumer_position("other", "t").unwrap(), 0);
    assert_eq!(store.read_outbox("other", "t", 10).unwrap().len(), 5);
    // And survive the store: a new process continues where the consumer was.
    let restarted = db.store(Keyring::empty());
    assert_eq!(
        restarted.read_outbox("c", "t", 10).unwrap()[0].tenant_seq,
        4
    );
}

#[test]
fn concurrent_writers_and_a_reader_see_one_gapless_sequence() {
    let db = TestDatabase::create();
    const BATCHES: usize = 25;
    const PER_BATCH: usize = 6;
    let start = Arc::new(Barrier::new(3));
    let writing = Arc::new(AtomicBool::new(true));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (store, start) = (db.store(Keyring::empty()), start.clone());
            thread::spawn(move || {
                start.wait();
                for b in 0..BATCHES {
                    store
                        .apply(
                            "t",
                            &page(&format!("w{w}-b{b:02}"), PER_BATCH),
                            Some(&point("p")),
                        )
                        .unwrap();
                    // Some batches fail half-way: their numbers must not leave holes.
                    if b % 5 == 0 {
                        store.inject_apply_failure(Some((0, PER_BATCH / 2)));
                        assert!(
                            store
                                .apply("t", &page(&format!("w{w}-x{b:02}"), PER_BATCH), None)
                                .is_err()
                        );
                        store.inject_apply_failure(None);
                    }
                }
            })
        })
        .collect();
    let reader = {
        let (store, start, writing) = (db.store(Keyring::empty()), start.clone(), writing.clone());
        thread::spawn(move || {
            start.wait();
            let mut seen = Vec::new();
            let mut reads = 0;
            loop {
                let done = !writing.load(Ordering::SeqCst);
                let before = seen.len();
                drain(&store, "indexer", "t", &mut seen);
                reads += usize::from(seen.len() > before);
                if done {
                    return (seen, reads);
                }
                thread::sleep(Duration::from_millis(2));
            }
        })
    };
    for w in writers {
        w.join().expect("no panic");
    }
    writing.store(false, Ordering::SeqCst);
    let (seen, reads) = reader.join().expect("no panic");
    assert_eq!(seen.len(), 2 * BATCHES * PER_BATCH);
    assert_gapless(&seen);
    assert!(
        seen.iter().all(|e| !e.event.external_id.contains("-x")),
        "a failed batch leaked"
    );
    // Every record was created once: one event each.
    let ids: BTreeSet<&str> = seen.iter().map(|e| e.event.external_id.as_str()).collect();
    assert_eq!(ids.len(), seen.len());
    // Each batch is contiguous, and each writer's batches are in its order.
    for w in 0..2 {
        let own: Vec<&str> = seen
            .iter()
            .map(|e| e.event.external_id.as_str())
            .filter(|id| id.starts_with(&format!("w{w}-")))
            .collect();
        assert!(own.windows(2).all(|p| p[0] < p[1]));
    }
    let mut batches_done = BTreeSet::new();
    for pair in seen.windows(2) {
        if pair[0].event.batch != pair[1].event.batch {
            assert!(batches_done.insert(pair[0].event.batch), "batch split");
        }
    }
    assert!(reads > 1, "the reader ran alongside the writers");
}

#[test]
fn after_a_failover_the_reader_sees_one_gapless_duplicate_free_sequence() {
    let db = TestDatabase::create();
    let admin = Arc::new(db.store(Keyring::empty()));
    admin.set_schedule("t", Strategy::Scheduled, LONG).unwrap();
    let ttl = Duration::from_millis(500);
    let reading = Arc::new(AtomicBool::new(true));
    // The reader consumes while the workers write; it restarts half-way (a new store with the
    // same consumer name), without having acknowledged its last page.
    let reader = {
        let (url, reading) = (db.url().to_string(), reading.clone());
        thread::spawn(move || {
            let mut seen = Vec::new();
            let mut store = PgStore::connect(&url, Keyring::empty()).unwrap();
            let mut restarted = false;
            loop {
                let done = !reading.load(Ordering::SeqCst);
                if !restarted && seen.len() >= 10 {
                    // Read a page without acknowledging it, then "crash".
                    let unacked = store.read_outbox("indexer", "t", 5).unwrap();
                    if !unacked.is_empty() {
                        store = PgStore::connect(&url, Keyring::empty()).unwrap();
                        restarted = true;
                    }
                }
                drain(&store, "indexer", "t", &mut seen);
                if done {
                    return (seen, restarted);
                }
                thread::sleep(Duration::from_millis(3));
            }
        })
    };

    // Worker a syncs part of the tenant, then stops renewing (dies).
    let a = Arc::new(db.store(Keyring::empty()));
    let lease_a = a.claim_due("a", 1, ttl).unwrap().pop().expect("due");
    let fenced_a = a.fenced(&lease_a);
    for p in 0..4 {
        fenced_a
            .apply(
                "t",
                &page(&format!("a-p{p}"), 5),
                Some(&point(&format!("a{p}"))),
            )
            .unwrap();
    }
    // Worker b takes over once the lease expired, and continues from a's sync point.
    let b = Arc::new(db.store(Keyring::empty()));
    let waited = Instant::now();
    let lease_b = loop {
        if let Some(l) = b.claim_due("b", 1, LONG).unwrap().pop() {
            break l;
        }
        assert!(waited.elapsed() < Duration::from_secs(5));
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(b.get_sync_point("t").unwrap().as_deref(), Some("a3"));
    let fenced_b = b.fenced(&lease_b);
    for p in 0..4 {
        fenced_b
            .apply(
                "t",
                &page(&format!("b-p{p}"), 5),
                Some(&point(&format!("b{p}"))),
            )
            .unwrap();
        // a wakes up (a paused process, not a dead one) and tries to go on: refused.
        assert!(matches!(
            fenced_a.apply("t", &page(&format!("a-late{p}"), 5), None),
            Err(StoreError::LeaseLost(_))
        ));
    }
    b.complete(&lease_b, SyncOutcome::Ok, Some(LONG)).unwrap();
    reading.store(false, Ordering::SeqCst);
    let (seen, restarted) = reader.join().expect("no panic");
    assert!(restarted, "the reader restarted with a page unacknowledged");

    assert_gapless(&seen);
    let ids: Vec<&str> = seen.iter().map(|e| e.event.external_id.as_str()).collect();
    let expected: Vec<String> = [
        "a-p0", "a-p1", "a-p2", "a-p3", "b-p0", "b-p1", "b-p2", "b-p3",
    ]
    .iter()
    .flat_map(|p| (0..5).map(move |i| format!("{p}-{i:03}")))
    .collect();
    assert_eq!(ids, expected.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(admin.consumer_position("indexer", "t").unwrap(), 40);
}

#[test]
fn migration_2_numbers_the_events_already_stored() {
    let db = TestDatabase::create();
    let mut client = db.client();
    // A database at version 1 with events of two tenants, interleaved.
    client
        .batch_execute(
            "CREATE TABLE schema_migrations (
                 version BIGINT PRIMARY KEY, name TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .unwrap();
    client.batch_execute(schema::MIGRATIONS[0].sql).unwrap();
    client
        .batch_execute(
            "INSERT INTO schema_migrations (version, name) VALUES (1, 'v1');
             INSERT INTO tenants (name, created_at) VALUES ('t', 0), ('u', 0);
             INSERT INTO events (tenant, batch, kind, external_id, record, at) VALUES
                 ('t', 1, 'created', 't1', '{}', 0), ('u', 2, 'created', 'u1', '{}', 0),
                 ('t', 3, 'created', 't2', '{}', 0), ('t', 3, 'created', 't3', '{}', 0),
                 ('u', 4, 'created', 'u2', '{}', 0);",
        )
        .unwrap();
    let store = db.store(Keyring::empty());
    let numbered = |tenant: &str| -> Vec<(i64, String)> {
        store
            .read_outbox("c", tenant, 100)
            .unwrap()
            .into_iter()
            .map(|e| (e.tenant_seq, e.event.external_id))
            .collect()
    };
    assert_eq!(
        numbered("u"),
        [(1, "u1".to_string()), (2, "u2".to_string())]
    );
    store.apply("t", &page("new", 1), None).unwrap();
    assert_eq!(
        numbered("t"),
        [
            (1, "t1".to_string()),
            (2, "t2".to_string()),
            (3, "t3".to_string()),
            (4, "new-000".to_string())
        ]
    );
}
