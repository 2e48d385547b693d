//! The PostgreSQL backend against a real server: the shared contract suite, then what only
//! this backend has (migrations, sealed credentials and rotation, several workers on one
//! database, reconnecting).

use std::sync::{Arc, Barrier};

use super::testing::TestDatabase;
use super::*;
use crate::secrets::SecretError;
use crate::store::contract::{contract_tests, flat, point, rec, up};

fn new_keyring() -> Keyring {
    Keyring::parse(&Keyring::generate_key(), "test").expect("a generated key parses")
}

fn fresh() -> (TestDatabase, PgStore) {
    let db = TestDatabase::create();
    let store = db.store(new_keyring());
    (db, store)
}

contract_tests!(fresh);

#[test]
fn a_tenant_created_again_never_reuses_an_event_number() {
    let (db, store) = fresh();
    crate::store::contract::a_tenant_created_again_never_reuses_an_event_number(
        &store,
        &|tenant| {
            db.client()
                .execute("DELETE FROM tenants WHERE name = $1", &[&tenant])
                .unwrap();
        },
    );
    // The tenant's own numbering (what consumers and a relay read) went on from its earlier
    // events: 1, 2 before the row was deleted, then 3 to 6, each number once.
    let numbers: Vec<i64> = store
        .read_outbox("reader", "t", 100)
        .unwrap()
        .iter()
        .map(|o| o.tenant_seq)
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6]);
    let stored: i64 = db
        .client()
        .query_one("SELECT event_seq FROM tenants WHERE name = 't'", &[])
        .unwrap()
        .get(0);
    assert_eq!(stored, 6);
}

fn creds(access: &str) -> StoredCredentials {
    StoredCredentials {
        access_token: access.into(),
        refresh_token: Some(format!("{access}-refresh")),
        expires_at: Some(1),
        client_id: Some("app-key".into()),
        client_secret: Some(format!("{access}-client-secret")),
        account_id: Some("dbid:1".into()),
    }
}

#[test]
fn migrations_are_recorded_once_and_a_newer_database_is_refused() {
    let db = TestDatabase::create();
    let _first = db.store(Keyring::empty());
    let _second = db.store(Keyring::empty());
    let mut client = db.client();
    let versions: Vec<(i64, String)> = client
        .query(
            "SELECT version, name FROM schema_migrations ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        versions,
        schema::MIGRATIONS
            .iter()
            .map(|m| (m.version, m.name.to_string()))
            .collect::<Vec<_>>()
    );
    client
        .execute(
            "INSERT INTO schema_migrations (version, name) VALUES (99, 'from the future')",
            &[],
        )
        .unwrap();
    let err = PgStore::connect(db.url(), Keyring::empty())
        .err()
        .expect("a newer schema is refused");
    assert!(
        matches!(&err, StoreError::Open { message, .. } if message.contains("newer")),
        "{err}"
    );
}

#[test]
fn workers_starting_together_migrate_once() {
    let db = TestDatabase::create();
    let url = db.url().to_string();
    let start = Arc::new(Barrier::new(4));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (url, start) = (url.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                PgStore::connect(&url, Keyring::empty()).map(|_| ())
            })
        })
        .collect();
    for w in workers {
        w.join().expect("no panic").expect("every worker connects");
    }
    let n: i64 = db
        .client()
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, schema::MIGRATIONS.len() as i64);
}

#[test]
fn credentials_are_sealed_at_rest_and_the_database_refuses_plaintext() {
    let (db, store) = fresh();
    store
        .put_credentials("t", &creds("sl.plain-access"))
        .unwrap();
    let mut client = db.client();
    let row = client
        .query_one(
            "SELECT access_token, refresh_token, client_secret, client_id FROM credentials",
            &[],
        )
        .unwrap();
    for column in 0..3 {
        let stored: String = row.get(column);
        assert!(stored.starts_with("v1:"), "{stored}");
        assert!(!stored.contains("plain"), "plaintext at rest: {stored}");
    }
    // Not a secret: stored as given.
    assert_eq!(row.get::<_, String>(3), "app-key");
    assert_eq!(
        store.credentials("t").unwrap(),
        Some(creds("sl.plain-access"))
    );

    let err = client
        .execute(
            "UPDATE credentials SET access_token = 'sl.plaintext' WHERE tenant = 't'",
            &[],
        )
        .expect_err("the check constraint refuses plaintext");
    assert_eq!(err.code(), Some(&SqlState::CHECK_VIOLATION));
}

#[test]
fn another_key_or_a_value_moved_between_tenants_does_not_open() {
    let (db, store) = fresh();
    store.put_credentials("a", &creds("token-a")).unwrap();
    store.put_credentials("b", &creds("token-b")).unwrap();

    let stranger = db.store(new_keyring());
    assert!(matches!(
        stranger.credentials("a"),
        Err(StoreError::Secret(SecretError::WrongKey { .. }))
    ));

    // Someone with write access to the database copies a's sealed token into b's row.
    db.client()
        .execute(
            "UPDATE credentials SET access_token = (SELECT access_token FROM credentials WHERE tenant = 'a')
             WHERE tenant = 'b'",
            &[],
        )
        .unwrap();
    assert!(matches!(
        store.credentials("b"),
        Err(StoreError::Secret(SecretError::Tampered { .. }))
    ));
    assert_eq!(store.credentials("a").unwrap(), Some(creds("token-a")));
}

#[test]
fn without_a_key_records_work_and_credentials_fail_before_any_write() {
    let db = TestDatabase::create();
    let store = db.store(Keyring::empty());
    store
        .apply(
            "t",
            &[up(rec("id:a", "/a", RecordKind::File), ChangeKind::Created)],
            Some(&point("1")),
        )
        .unwrap();
    let err = store.put_credentials("t", &creds("x")).unwrap_err();
    assert!(
        matches!(err, StoreError::Secret(SecretError::MissingKey)),
        "{err}"
    );
    assert!(err.to_string().contains("HOST_TEST_SECRET_KEY"), "{err}");
    let n: i64 = db
        .client()
        .query_one("SELECT count(*) FROM credentials", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    assert!(matches!(
        store.rotate_secrets(),
        Err(StoreError::Secret(SecretError::MissingKey))
    ));
}

#[test]
fn rotation_reseals_every_secret_under_the_new_key_and_the_old_key_can_go() {
    let db = TestDatabase::create();
    let old_key = Keyring::generate_key();
    let new_key = Keyring::generate_key();
    let before = db.store(Keyring::parse(&old_key, "old").unwrap());
    before.put_credentials("a", &creds("token-a")).unwrap();
    before
        .put_credentials(
            "b",
            &StoredCredentials {
                access_token: "token-b".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let old_id = before.keyring.current_key_id().unwrap().to_string();
    assert_eq!(
        before.secret_key_ids_in_use().unwrap(),
        [(old_id.clone(), 4)]
    );

    // Step 2-3: the new key first, the old one kept; both open.
    let both = Keyring::parse(&format!("{new_key}\n{old_key}\n"), "file").unwrap();
    let during = db.store(both);
    let new_id = during.keyring.current_key_id().unwrap().to_string();
    assert_eq!(during.credentials("a").unwrap(), Some(creds("token-a")));
    // A value written now is sealed under the new key already.
    during.put_credentials("c", &creds("token-c")).unwrap();

    // Step 4: the rotate pass.
    let report = during.rotate_secrets().unwrap();
    assert_eq!((report.resealed, report.unchanged), (4, 3));
    assert_eq!(report.key_ids_in_use, [(new_id.clone(), 7)]);
    assert_eq!(
        during.secret_key_ids_in_use().unwrap(),
        [(new_id.clone(), 7)]
    );
    assert_eq!(during.rotate_secrets().unwrap().resealed, 0);

    // Step 5: without the old key, everything still opens.
    let after = db.store(Keyring::parse(&new_key, "new").unwrap());
    assert_eq!(after.credentials("a").unwrap(), Some(creds("token-a")));
    assert_eq!(
        after.credentials("b").unwrap().map(|c| c.access_token),
        Some("token-b".into())
    );
    assert_eq!(after.credentials("c").unwrap(), Some(creds("token-c")));
    // And the old key alone no longer opens anything.
    assert!(matches!(
        before.credentials("a"),
        Err(StoreError::Secret(SecretError::WrongKey { key_id })) if key_id == new_id
    ));
}

#[test]
fn a_rotate_pass_that_meets_an_unknown_key_changes_nothing() {
    let db = TestDatabase::create();
    let lost = db.store(new_keyring());
    lost.put_credentials("a", &creds("token-a")).unwrap();
    let current = db.store(new_keyring());
    current.put_credentials("b", &creds("token-b")).unwrap();
    let rotating = db.store(
        Keyring::parse(
            &format!("{}\n", Keyring::generate_key()),
            "without the lost key",
        )
        .unwrap(),
    );
    let before = current.secret_key_ids_in_use().unwrap();
    assert!(matches!(
        rotating.rotate_secrets(),
        Err(StoreError::Secret(SecretError::WrongKey { .. }))
    ));
    assert_eq!(current.secret_key_ids_in_use().unwrap(), before);
    assert_eq!(current.credentials("b").unwrap(), Some(creds("token-b")));
}

#[test]
fn two_workers_on_one_tenant_commit_whole_batches_in_order() {
    let db = TestDatabase::create();
    let key = Keyring::generate_key();
    let start = Arc::new(Barrier::new(2));
    const BATCHES: usize = 15;
    const PER_BATCH: usize = 20;
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let store = db.store(Keyring::parse(&key, "test").unwrap());
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                for b in 0..BATCHES {
                    let changes: Vec<Change> = (0..PER_BATCH)
                        .map(|i| up(flat(&format!("w{w}-b{b:02}-{i:02}")), ChangeKind::Created))
                        .collect();
                    store
                        .apply("t", &changes, Some(&point(&format!("w{w}-b{b}"))))
                        .expect("apply");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker did not panic");
    }
    let store = db.store(Keyring::empty());
    let events = store.events(Some("t"), 0).unwrap();
    assert_eq!(events.len(), 2 * BATCHES * PER_BATCH);
    // Each batch's events are contiguous: a batch never interleaves with another.
    let mut finished = std::collections::HashSet::new();
    for pair in events.windows(2) {
        if pair[0].batch != pair[1].batch {
            assert!(
                finished.insert(pair[0].batch),
                "batch {} split",
                pair[0].batch
            );
            assert!(!finished.contains(&pair[1].batch));
        }
    }
    // Within a worker, its batches are in the order it applied them.
    for w in 0..2 {
        let own: Vec<&str> = events
            .iter()
            .map(|e| e.external_id.as_str())
            .filter(|id| id.starts_with(&format!("w{w}-")))
            .collect();
        assert!(own.windows(2).all(|p| p[0] < p[1]));
    }
    assert_eq!(
        store.record_count("t").unwrap(),
        (2 * BATCHES * PER_BATCH) as u64
    );
}

#[test]
fn a_path_held_through_another_worker_is_a_conflict() {
    let db = TestDatabase::create();
    let first = db.store(Keyring::empty());
    let second = db.store(Keyring::empty());
    first
        .apply(
            "t",
            &[up(rec("id:a", "/x", RecordKind::File), ChangeKind::Created)],
            None,
        )
        .unwrap();
    let err = second.apply(
        "t",
        &[up(rec("id:b", "/x", RecordKind::File), ChangeKind::Created)],
        None,
    );
    assert!(matches!(err, Err(StoreError::Conflict(m)) if m.contains("id:a")));
    // The index itself is the guarantee when the check is bypassed.
    let err = db
        .client()
        .execute(
            "INSERT INTO records (tenant, external_id, name, path_display, path_lower, kind,
                                  mime_type, size, is_downloadable, is_shared)
             VALUES ('t', 'id:c', 'x', '/x', '/x', 'file', 'm', 0, TRUE, FALSE)",
            &[],
        )
        .expect_err("the unique index refuses a second live record at /x");
    assert_eq!(err.code(), Some(&SqlState::UNIQUE_VIOLATION));
}

#[test]
fn a_connection_the_server_closed_is_reopened() {
    let (db, store) = fresh();
    store.ensure_tenant("t").unwrap();
    let killed: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()) AS k",
            &[&db.name()],
        )
        .unwrap()
        .get(0);
    // Used by one caller at a time, the store kept to one connection.
    assert_eq!(killed, 1);
    // The call that finds the connection dead may fail; the next one reconnects.
    let _ = store.tenants();
    assert_eq!(store.tenants().unwrap(), ["t"]);
}

#[test]
fn one_store_serves_tenants_from_many_threads_within_its_pool() {
    let db = TestDatabase::create();
    let store = Arc::new(PgStore::connect_with_pool(db.url(), new_keyring(), 3).unwrap());
    let start = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (store, start) = (store.clone(), start.clone());
            std::thread::spawn(move || {
                let tenant = format!("tenant-{t}");
                start.wait();
                for b in 0..10 {
                    store
                        .apply(
                            &tenant,
                            &[up(flat(&format!("n{b}")), ChangeKind::Created)],
                            Some(&point(&b.to_string())),
                        )
                        .expect("apply");
                    store
                        .put_credentials(&tenant, &creds(&format!("tok-{t}-{b}")))
                        .expect("credentials");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("no panic");
    }
    for t in 0..8 {
        let tenant = format!("tenant-{t}");
        assert_eq!(store.record_count(&tenant).unwrap(), 10);
        assert_eq!(store.get_sync_point(&tenant).unwrap().as_deref(), Some("9"));
        assert_eq!(
            store.credentials(&tenant).unwrap(),
            Some(creds(&format!("tok-{t}-9")))
        );
    }
    let open: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db.name()],
        )
        .unwrap()
        .get(0);
    assert!(
        (1..=3).contains(&open),
        "{open} connections for a pool of 3"
    );
}

#[test]
fn only_postgres_urls_select_this_backend() {
    assert!(is_postgres_url("postgres://u@h/db"));
    assert!(is_postgres_url("postgresql://u@h:5433/db?sslmode=disable"));
    assert!(is_postgres_url("POSTGRES://u@h/db"));
    assert!(!is_postgres_url("host-test.db"));
    assert!(!is_postgres_url("/var/lib/postgres://odd/path.db"));
    assert!(!is_postgres_url("sqlite://x.db"));
}

#[test]
fn a_shown_url_never_holds_a_password() {
    for (url, shown) in [
        ("postgres://u:hunter2@h/db", "postgres://u:***@h/db"),
        (
            "postgres://u@h:5433/db?sslmode=disable&password=hunter2",
            "postgres://u@h:5433/db?sslmode=disable&password=***",
        ),
        (
            "postgresql://u@h/db?SSLPASSWORD=hunter2",
            "postgresql://u@h/db?SSLPASSWORD=***",
        ),
        ("postgres://u@h/db", "postgres://u@h/db"),
    ] {
        assert_eq!(redact(url), shown);
    }
    assert!(!redact("host=h password=hunter2").contains("hunter2"));
    assert!(!redact("postgres://u:hunter2@[bad/db").contains("hunter2"));
}

#[test]
fn a_database_error_says_what_the_server_said() {
    let db = TestDatabase::create();
    let err = db
        .client()
        .execute("SELECT no_such_column FROM pg_database", &[])
        .expect_err("the column does not exist");
    let shown = StoreError::from(err).to_string();
    assert!(shown.contains("no_such_column"), "{shown}");
}

#[test]
fn errors_never_show_the_password() {
    let err = PgStore::connect(
        "postgres://postgres:hunter2@127.0.0.1:1/postgres",
        Keyring::empty(),
    )
    .err()
    .expect("nothing listens on port 1");
    let shown = err.to_string();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("127.0.0.1:1"), "{shown}");
    let err = PgStore::connect("host=127.0.0.1 port=1 password=hunter2", Keyring::empty())
        .err()
        .expect("nothing listens on port 1");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

/// Measurement, not a check: `cargo test --release ... apply_throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn apply_throughput() {
    let (_db, store) = fresh();
    let started = std::time::Instant::now();
    for b in 0..1000u64 {
        let changes: Vec<Change> = (0..100u64)
            .map(|i| {
                up(
                    rec(
                        &format!("id:{:x}", (b * 100 + i).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                        &format!("/f{b}/x{i}"),
                        RecordKind::File,
                    ),
                    ChangeKind::Created,
                )
            })
            .collect();
        store
            .apply("t", &changes, Some(&point(&b.to_string())))
            .unwrap();
    }
    eprintln!("100k upserts in 1000 batches: {:?}", started.elapsed());
    let started = std::time::Instant::now();
    let paths: Vec<String> = (0..2000).map(|i| format!("/f1/x{i}")).collect();
    store.find_by_paths("t", &paths).unwrap();
    eprintln!("2000 path lookups: {:?}", started.elapsed());
    let started = std::time::Instant::now();
    let summary = store
        .apply("t", &[Change::MarkAllPending, Change::Purge], None)
        .unwrap();
    assert_eq!(summary.deletions, 100_000);
    eprintln!("purge of 100k records: {:?}", started.elapsed());
}

#[test]
fn prepared_lookups_stay_index_scans_after_the_table_grows_within_a_session() {
    let (_db, store) = fresh();
    let mut guard = store.conn().unwrap();
    let client = &mut guard.client;
    client
        .batch_execute(
            "PREPARE lookup(text, text) AS SELECT name FROM records WHERE tenant = $1 AND external_id = $2",
        )
        .unwrap();
    // Six runs on an empty table: without custom plans, the server settles on a generic plan
    // here and keeps it: on an empty table it picks the path index, matching the tenant alone,
    // which later walks every record of the tenant per lookup.
    for _ in 0..6 {
        client.batch_execute("EXECUTE lookup('t', 'x')").unwrap();
    }
    client
        .batch_execute(
            "INSERT INTO tenants (name, created_at) VALUES ('t', 0);
             INSERT INTO records (tenant, external_id, revision, name, path_display, path_lower, kind,
                                  mime_type, size, is_downloadable, is_shared)
             SELECT 't', 'id:' || i, 'r', 'f' || i, '/f' || i, '/f' || i, 'file', '', 0, TRUE, FALSE
             FROM generate_series(1, 20000) i",
        )
        .unwrap();
    let plan: Vec<String> = client
        .query("EXPLAIN EXECUTE lookup('t', 'id:5')", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        plan.iter().any(|l| l.contains("using records_pkey")),
        "a lookup by id does not use the primary key: {plan:?}"
    );
}
