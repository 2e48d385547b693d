//! The CLI on a PostgreSQL store: `--db postgres://...` syncs, lists records, events and status,
//! seals credentials with the key it is given (and refuses to run without one), rotates the
//! key, and serves consumers from the outbox. Each test gets a fresh database on the server
//! `DATABASE_URL` names (else the local one), dropped at its end; without a server the tests
//! fail saying how to provide one.

use std::process::{Command, Stdio};

use dropbox_emulator::{Emulator, EmulatorConfig};
use e2e_tests::diff_with_truth;
use host_test::cli::ExitClass;
use host_test::secrets::Keyring;
use host_test::store::pg::testing::TestDatabase;
use host_test::store::{PgStore, RecordStore};
use serde_json::Value;

const TENANT: &str = "t";

fn cli(db: &TestDatabase, key: Option<&str>, args: &[&str]) -> (std::process::Output, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_host-test-cli"));
    cmd.args(args)
        .args(["--db", db.url()])
        .env_remove("DROPBOX_ACCESS_TOKEN")
        .env_remove("HOST_TEST_ACCESS_TOKEN")
        .env_remove("HOST_TEST_SECRET_KEY")
        .stdin(Stdio::null());
    if let Some(key) = key {
        cmd.env("HOST_TEST_SECRET_KEY", key);
    }
    let output = cmd.output().expect("the CLI runs");
    let all = format!(
        "{args:?}: exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, all)
}

fn ok(db: &TestDatabase, key: &str, args: &[&str]) -> String {
    let (output, all) = cli(db, Some(key), args);
    assert!(output.status.success(), "{all}");
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn the_cli_syncs_a_tenant_into_postgres_with_sealed_credentials() {
    let db = TestDatabase::create();
    let emulator = Emulator::start(EmulatorConfig {
        files: 300,
        seed: 14,
        ..Default::default()
    })
    .expect("the emulator starts");
    let api = emulator.base_url();
    let key = Keyring::generate_key();
    let target = ["--tenant", TENANT, "--api-url", api.as_str()];

    // Without a key a shared database is refused, saying how to give one.
    let (refused, all) = cli(
        &db,
        None,
        &[&["connect"][..], &target, &["--access-token", "x"]].concat(),
    );
    assert_eq!(
        refused.status.code(),
        Some(ExitClass::InvalidConfig.code()),
        "{all}"
    );
    assert!(all.contains("HOST_TEST_SECRET_KEY"), "{all}");

    let token = emulator.access_token();
    ok(
        &db,
        &key,
        &[&["connect"][..], &target, &["--access-token", &token]].concat(),
    );
    let summary: Value = serde_json::from_str(&ok(
        &db,
        &key,
        &[&["sync"][..], &target, &["--quiet", "--json"]].concat(),
    ))
    .expect("sync --json");
    assert_eq!(summary["kind"], "full", "{summary}");

    // The store equals the account; the CLI lists what the store holds.
    let store = PgStore::connect(db.url(), Keyring::parse(&key, "test").unwrap()).unwrap();
    let records = store.records(TENANT).unwrap();
    let diffs = diff_with_truth(&emulator.truth(), &records, |_| true);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    let listed = json_lines(&ok(&db, &key, &["records", "--tenant", TENANT, "--json"]));
    assert_eq!(listed.len(), records.len());
    let events = json_lines(&ok(&db, &key, &["events", "--json"]));
    assert_eq!(events.len(), records.len(), "one created event per record");
    let status: Value =
        serde_json::from_str(&ok(&db, &key, &["status", "--tenant", TENANT, "--json"]))
            .expect("status --json");
    assert_eq!(status["connected"], true, "{status}");
    assert_eq!(status["records"], records.len(), "{status}");

    // The token is sealed in the database; it opens with the key and with nothing else.
    let mut admin = db.client();
    let raw: String = admin
        .query_one(
            "SELECT access_token FROM credentials WHERE tenant = $1",
            &[&TENANT],
        )
        .unwrap()
        .get(0);
    assert!(raw.starts_with("v1:") && !raw.contains(&token), "{raw}");
    let (wrong, all) = cli(
        &db,
        Some(&Keyring::generate_key()),
        &[&["sync"][..], &target, &["--quiet"]].concat(),
    );
    assert_eq!(
        wrong.status.code(),
        Some(ExitClass::InvalidConfig.code()),
        "{all}"
    );

    // Rotation: a new key first, the old one kept; every secret moves to the new key, after
    // which the new key alone opens them.
    let new_key = Keyring::generate_key();
    let both = format!("{new_key},{key}");
    let report: Value = serde_json::from_str(&ok(&db, &both, &["secrets", "rotate", "--json"]))
        .expect("rotate --json");
    assert_eq!(report["resealed"], 1, "{report}");
    let new_id = Keyring::parse(&new_key, "new")
        .unwrap()
        .current_key_id()
        .unwrap()
        .to_string();
    assert_eq!(
        report["key_ids_in_use"][0]["key_id"],
        new_id.as_str(),
        "{report}"
    );
    assert_eq!(
        report["key_ids_in_use"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    let again: Value = serde_json::from_str(&ok(
        &db,
        &new_key,
        &[&["sync"][..], &target, &["--quiet", "--json"]].concat(),
    ))
    .unwrap();
    assert_eq!(again["kind"], "incremental", "{again}");
}

/// A fresh database, an emulator account of `files` files, and the tenant connected to it
/// through the CLI under a new key.
struct Connected {
    db: TestDatabase,
    emulator: Emulator,
    key: String,
    api: String,
}

impl Connected {
    fn new(files: usize, seed: u64) -> Connected {
        let db = TestDatabase::create();
        let emulator = Emulator::start(EmulatorConfig {
            files,
            seed,
            ..Default::default()
        })
        .expect("the emulator starts");
        let api = emulator.base_url();
        let key = Keyring::generate_key();
        let token = emulator.access_token();
        ok(
            &db,
            &key,
            &[
                "connect",
                "--tenant",
                TENANT,
                "--api-url",
                &api,
                "--access-token",
                &token,
            ],
        );
        Connected {
            db,
            emulator,
            key,
            api,
        }
    }
}

#[test]
fn a_consumer_reads_the_outbox_after_its_durable_position() {
    // The emulator is kept alive: the syncs below talk to it.
    let Connected {
        db,
        emulator: _emulator,
        key,
        api,
    } = Connected::new(40, 3);
    let target = ["--tenant", TENANT, "--api-url", api.as_str()];
    ok(&db, &key, &[&["sync"][..], &target, &["--quiet"]].concat());
    let total = PgStore::connect(db.url(), Keyring::parse(&key, "t").unwrap())
        .unwrap()
        .last_tenant_seq(TENANT)
        .unwrap();
    assert!(total > 10, "{total}");

    // Reading without --ack moves nothing; with it, the next read starts after.
    let read = |extra: &[&str]| {
        json_lines(&ok(
            &db,
            &key,
            &[&["events", "--consumer", "indexer", "--json"][..], extra].concat(),
        ))
    };
    let first = read(&["--limit", "10"]);
    assert_eq!(first.len(), 10);
    assert_eq!(
        read(&["--limit", "10"]),
        first,
        "a read without --ack moves nothing"
    );
    let acked = read(&["--limit", "10", "--ack"]);
    assert_eq!(acked, first);
    let rest = read(&["--ack"]);
    let seqs: Vec<i64> = first
        .iter()
        .chain(&rest)
        .map(|e| e["tenant_seq"].as_i64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    assert!(read(&[]).is_empty(), "everything acknowledged");
    // Another consumer has its own position.
    let other = json_lines(&ok(
        &db,
        &key,
        &["events", "--consumer", "audit", "--json", "--limit", "5"],
    ));
    assert_eq!(other.len(), 5);
}

/// A `watch --db postgres://...` worker process, its JSON lines collected as they come.
struct Worker {
    id: String,
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    fn start(db: &TestDatabase, key: &str, id: &str, ttl: &str) -> Worker {
        Worker::start_with(db, key, id, ttl, false)
    }

    /// A worker that holds long-polls when `longpoll` (else syncs on intervals only).
    fn start_with(db: &TestDatabase, key: &str, id: &str, ttl: &str, longpoll: bool) -> Worker {
        let extra: &[&str] = if longpoll { &[] } else { &["--no-longpoll"] };
        Worker::start_args(db, key, id, ttl, extra)
    }

    /// A worker with more flags of its own (`--tenant`, `--max-polls`, `--no-longpoll`).
    fn start_args(db: &TestDatabase, key: &str, id: &str, ttl: &str, extra: &[&str]) -> Worker {
        use std::io::BufRead as _;
        let mut child = Command::new(env!("CARGO_BIN_EXE_host-test-cli"))
            .args(["watch", "--db", db.url(), "--json"])
            .args(extra)
            .args([
                "--lease-ttl",
                ttl,
                "--worker-id",
                id,
                "--max-concurrent",
                "3",
            ])
            .env("HOST_TEST_SECRET_KEY", key)
            .env("RUST_LOG", "warn")
            .env_remove("DROPBOX_ACCESS_TOKEN")
            .env_remove("HOST_TEST_ACCESS_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the worker starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        Worker {
            id: id.to_string(),
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Ctrl-C, then wait for the process to end.
    fn interrupt(&mut self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "worker {} did not stop on Ctrl-C",
                self.id
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn three_workers_share_the_tenants_and_take_over_from_one_killed_mid_sync() {
    use host_test::store::pg::LeaseEnd;
    use std::time::{Duration, Instant};

    const TENANTS: usize = 24;
    const TTL_SECS: i64 = 3;
    let db = TestDatabase::create();
    let key = Keyring::generate_key();
    let store = PgStore::connect(db.url(), Keyring::parse(&key, "test").unwrap()).unwrap();
    // One emulator (one account) per tenant, slow enough that syncs overlap the kill.
    let emulators: Vec<Emulator> = (0..TENANTS)
        .map(|i| {
            let e = Emulator::start(EmulatorConfig {
                files: 200,
                seed: 100 + i as u64,
                ..Default::default()
            })
            .expect("the emulator starts");
            e.set_latency(Duration::from_millis(150));
            e
        })
        .collect();
    let names: Vec<String> = (0..TENANTS).map(|i| format!("tenant-{i:02}")).collect();
    for (name, e) in names.iter().zip(&emulators) {
        store.set_tenant_api_url(name, Some(&e.base_url())).unwrap();
        store
            .put_credentials(
                name,
                &host_test::store::StoredCredentials {
                    access_token: e.access_token(),
                    ..Default::default()
                },
            )
            .unwrap();
    }

    let ttl = TTL_SECS.to_string();
    let mut victim = Worker::start(&db, &key, "w1", &ttl);
    let mut others = [
        Worker::start(&db, &key, "w2", &ttl),
        Worker::start(&db, &key, "w3", &ttl),
    ];

    // Kill w1 while it holds a lease (mid-sync), with SIGKILL: nothing of it runs after.
    let deadline = Instant::now() + Duration::from_secs(120);
    let held_by_victim = loop {
        assert!(Instant::now() < deadline, "w1 never held a tenant");
        let held: Vec<_> = store
            .lease_history(None)
            .unwrap()
            .into_iter()
            .filter(|l| l.worker == "w1" && l.ended.is_none() && l.released_at.is_none())
            .collect();
        if !held.is_empty() {
            break held;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    victim.child.kill().expect("SIGKILL");
    victim.child.wait().unwrap();
    let mut admin = db.client();
    let killed_at: i64 = admin
        .query_one("SELECT conn_rt_now_ms()", &[])
        .unwrap()
        .get(0);

    // Every tenant ends synced, by the two survivors where w1 left off.
    let all_synced = |store: &PgStore| {
        store
            .schedules()
            .unwrap()
            .iter()
            .filter(|s| s.last_outcome == Some(host_test::store::SyncOutcome::Ok))
            .count()
            == TENANTS
    };
    while !all_synced(&store) {
        assert!(
            Instant::now() < deadline,
            "not every tenant synced: {:?}",
            store.schedules().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for w in &mut others {
        w.interrupt();
    }

    // Every store equals its account; each tenant's events replay without gap or duplicate.
    for (name, e) in names.iter().zip(&emulators) {
        let records = store.records(name).unwrap();
        let diffs = diff_with_truth(&e.truth(), &records, |_| true);
        assert!(diffs.is_empty(), "{name}:\n{}", diffs.join("\n"));
        assert_eq!(store.pending_count(name).unwrap(), 0, "{name}");
        let events = store.read_outbox("check", name, 100_000).unwrap();
        let seqs: Vec<i64> = events.iter().map(|o| o.tenant_seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "{name}");
        let plain: Vec<_> = events.into_iter().map(|o| o.event).collect();
        e2e_tests::assert_no_duplicate_events(&plain);
        assert_eq!(
            e2e_tests::count(&plain, "created"),
            records.len(),
            "{name}: one created event per record"
        );
    }

    // No tenant was ever held by two workers at once: each lease's time ends before the next
    // one of the tenant begins.
    let history = store.lease_history(None).unwrap();
    for name in &names {
        let mut leases: Vec<_> = history.iter().filter(|l| &l.tenant == name).collect();
        leases.sort_by_key(|l| l.epoch);
        for pair in leases.windows(2) {
            assert!(
                pair[1].acquired_at >= pair[0].end(),
                "{name}: lease {} ({}) overlaps lease {} ({})",
                pair[0].epoch,
                pair[0].worker,
                pair[1].epoch,
                pair[1].worker
            );
        }
    }
    // The victim's tenants were taken over by the others within the lease's expiry.
    for held in &held_by_victim {
        let next = history
            .iter()
            .filter(|l| l.tenant == held.tenant && l.epoch > held.epoch)
            .min_by_key(|l| l.epoch)
            .unwrap_or_else(|| panic!("{}: never taken over", held.tenant));
        assert_ne!(next.worker, "w1");
        let after_kill = next.acquired_at - killed_at;
        assert!(
            after_kill <= TTL_SECS * 1000 + 1500,
            "{}: taken over {after_kill} ms after the kill (TTL {TTL_SECS} s)",
            held.tenant
        );
        let old = history
            .iter()
            .find(|l| l.tenant == held.tenant && l.epoch == held.epoch)
            .unwrap();
        assert_eq!(old.ended, Some(LeaseEnd::Expired), "{}", held.tenant);
    }
    // Both survivors did work, and their output names the tenants they synced.
    for w in &others {
        let lines = w.lines.lock().unwrap();
        assert!(
            lines.iter().any(|l| l["result"] == "ok"),
            "{} synced nothing",
            w.id
        );
    }
}

#[test]
fn the_owner_of_a_change_notifications_tenant_holds_its_long_poll_and_a_change_is_synced_at_once() {
    use std::time::{Duration, Instant};

    const NAME: &str = "notified";
    let db = TestDatabase::create();
    let key = Keyring::generate_key();
    let store = PgStore::connect(db.url(), Keyring::parse(&key, "test").unwrap()).unwrap();
    let emulator = Emulator::start(EmulatorConfig {
        files: 30,
        seed: 41,
        ..Default::default()
    })
    .expect("the emulator starts");
    store
        .set_tenant_api_url(NAME, Some(&emulator.base_url()))
        .unwrap();
    store
        .put_credentials(
            NAME,
            &host_test::store::StoredCredentials {
                access_token: emulator.access_token(),
                ..Default::default()
            },
        )
        .unwrap();
    // An hour's interval: only a long-poll can bring a change in within seconds.
    store
        .set_setting(NAME, "sync_strategy", "change-notifications")
        .unwrap();
    store
        .set_setting(NAME, "sync_interval_minutes", "60")
        .unwrap();

    let mut workers = [
        Worker::start_with(&db, &key, "p1", "3", true),
        Worker::start_with(&db, &key, "p2", "3", true),
    ];
    let synced_ok =
        |store: &PgStore| {
            store.schedules().unwrap().iter().any(|s| {
                s.tenant == NAME && s.last_outcome == Some(host_test::store::SyncOutcome::Ok)
            })
        };
    let deadline = Instant::now() + Duration::from_secs(60);
    let poll_held = |store: &PgStore| !store.poll_history(Some(NAME)).unwrap().is_empty();
    while !synced_ok(&store) || !poll_held(&store) {
        assert!(
            Instant::now() < deadline,
            "the first sync, then its completer's poll: {:?} {:?}",
            store.schedules().unwrap(),
            store.poll_history(Some(NAME)).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The poll is held by the worker that completed the sync.
    let completer = store
        .lease_history(Some(NAME))
        .unwrap()
        .into_iter()
        .rfind(|l| l.ended == Some(host_test::store::pg::LeaseEnd::Completed))
        .expect("a completed lease")
        .worker;
    let first_poll = store.poll_history(Some(NAME)).unwrap()[0].clone();
    assert_eq!(first_poll.worker, completer);
    let has_path = |p: &str| {
        store
            .find_by_paths(NAME, &[p.to_string()])
            .unwrap()
            .into_iter()
            .flatten()
            .next()
            .is_some()
    };
    assert!(!has_path("/inbox/arrived.txt"));
    // Let the long-poll start on the new cursor (it would see the change anyway).
    std::thread::sleep(Duration::from_millis(500));

    let changed = Instant::now();
    emulator
        .create_file(
            "/Inbox/arrived.txt",
            dropbox_emulator::Content::Bytes(b"hello".to_vec()),
        )
        .unwrap();
    while !has_path("/inbox/arrived.txt") {
        assert!(
            changed.elapsed() < Duration::from_secs(15),
            "the change never reached the store: {:?}",
            store.schedules().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let latency = changed.elapsed();
    assert!(
        latency <= Duration::from_secs(5),
        "the change took {latency:?} to reach the store"
    );
    for w in &mut workers {
        w.interrupt();
    }
    let diffs = diff_with_truth(&emulator.truth(), &store.records(NAME).unwrap(), |_| true);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));

    // One holder at a time: each holding of the poll ends before the next begins.
    let polls = store.poll_history(Some(NAME)).unwrap();
    for pair in polls.windows(2) {
        assert!(
            pair[1].acquired_at >= pair[0].expires_at,
            "poll holdings overlap: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
    // Two syncs in all (the first, and the one the hint asked for): none came from the
    // interval, and the long-polls wrote no sync of their own.
    let ok_syncs: usize = workers
        .iter()
        .map(|w| {
            w.lines
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l["tenant"] == NAME && l["result"] == "ok")
                .count()
        })
        .sum();
    assert_eq!(ok_syncs, 2, "syncs: {ok_syncs}");
}

/// `connect` with a token the server refuses stores nothing: no tenant row, no credentials,
/// no settings (a worker would otherwise find the tenant and retry it forever). A token
/// Dropbox cannot even parse (its answer is a 400 in plain text, not a 401) is refused as an
/// authentication failure too, not as an internal error.
#[test]
fn a_refused_token_leaves_nothing_in_postgres() {
    let db = TestDatabase::create();
    let emulator = Emulator::start(EmulatorConfig {
        files: 5,
        seed: 31,
        ..Default::default()
    })
    .expect("the emulator starts");
    let api = emulator.base_url();
    let key = Keyring::generate_key();
    let target = ["--tenant", TENANT, "--api-url", api.as_str()];
    let revoked = emulator.access_token();
    emulator.revoke_all();
    for (what, token) in [("malformed", "not-a-token"), ("revoked", revoked.as_str())] {
        let (refused, all) = cli(
            &db,
            Some(&key),
            &[&["connect"][..], &target, &["--access-token", token]].concat(),
        );
        assert_eq!(
            refused.status.code(),
            Some(ExitClass::AuthRequired.code()),
            "{what}: {all}"
        );
        assert!(all.contains("nothing was stored"), "{what}: {all}");
        let mut admin = db.client();
        for table in ["tenants", "credentials", "settings", "schedules"] {
            let rows: i64 = admin
                .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
                .unwrap()
                .get(0);
            assert_eq!(rows, 0, "{what}: {table} has rows: {all}");
        }
    }
    let status: Value =
        serde_json::from_str(&ok(&db, &key, &["status", "--tenant", TENANT, "--json"]))
            .expect("status --json");
    assert_eq!(status["connected"], false, "{status}");
}

/// A tenant's row deleted (as an operator removing the tenant would) and the tenant connected
/// again under the same name: its syncs go on, its new events continue its numbering (no
/// number of its earlier events is given again), and the store equals the account.
#[test]
fn a_tenant_connected_again_after_its_row_was_deleted_continues_its_numbering() {
    let db = TestDatabase::create();
    let emulator = Emulator::start(EmulatorConfig {
        files: 30,
        seed: 32,
        ..Default::default()
    })
    .expect("the emulator starts");
    let api = emulator.base_url();
    let key = Keyring::generate_key();
    let target = ["--tenant", TENANT, "--api-url", api.as_str()];
    let token = emulator.access_token();
    let connect = [&["connect"][..], &target, &["--access-token", &token]].concat();
    let sync = [&["sync"][..], &target, &["--quiet"]].concat();
    ok(&db, &key, &connect);
    ok(&db, &key, &sync);
    let store = PgStore::connect(db.url(), Keyring::parse(&key, "t").unwrap()).unwrap();
    let before = store.last_tenant_seq(TENANT).unwrap();
    assert!(before > 10, "{before}");

    db.client()
        .execute("DELETE FROM tenants WHERE name = $1", &[&TENANT])
        .unwrap();
    emulator
        .create_file(
            "/after/new.txt",
            dropbox_emulator::Content::Bytes(b"new".to_vec()),
        )
        .unwrap();
    ok(&db, &key, &connect);
    ok(&db, &key, &sync);
    ok(&db, &key, &sync);

    let numbers: Vec<i64> = store
        .read_outbox("audit", TENANT, 100_000)
        .unwrap()
        .iter()
        .map(|o| o.tenant_seq)
        .collect();
    assert!(numbers.len() as i64 > before, "{numbers:?}");
    assert_eq!(
        numbers,
        (1..=numbers.len() as i64).collect::<Vec<_>>(),
        "one number per event, none given twice"
    );
    let records = store.records(TENANT).unwrap();
    let diffs = diff_with_truth(&emulator.truth(), &records, |_| true);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// Connect `name` to `emulator` with `token`, straight in the store (as `connect` would).
fn connect_in_store(store: &PgStore, name: &str, emulator: &Emulator, token: String) {
    store
        .set_tenant_api_url(name, Some(&emulator.base_url()))
        .unwrap();
    store
        .put_credentials(
            name,
            &host_test::store::StoredCredentials {
                access_token: token,
                ..Default::default()
            },
        )
        .unwrap();
}

/// The JSON lines of every worker about `tenant`.
fn lines_of(workers: &[&Worker], tenant: &str) -> Vec<Value> {
    workers
        .iter()
        .flat_map(|w| w.lines.lock().unwrap().clone())
        .filter(|l| l["tenant"] == tenant)
        .collect()
}

fn wait_for(what: &str, within: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Goal 3 (no wedge): a re-listing's first batch takes longer than the lease's TTL (the
/// database is slow: a lock the test holds makes its writes wait, for three TTLs). The
/// renewal cannot run meanwhile (it needs the tenant's row lock the batch holds), so the lease
/// runs out by the clock; nobody took the tenant over, so the batch commits on its first
/// attempt, and the re-listing completes under its one lease.
#[test]
fn a_relisting_whose_batch_outlives_the_lease_commits_on_its_first_attempt() {
    use std::time::Duration;

    const NAME: &str = "big";
    const TTL_SECS: u64 = 1;
    let db = TestDatabase::create();
    let key = Keyring::generate_key();
    let store = PgStore::connect(db.url(), Keyring::parse(&key, "test").unwrap()).unwrap();
    let emulator = Emulator::start(EmulatorConfig {
        files: 1500,
        seed: 77,
        ..Default::default()
    })
    .expect("the emulator starts");
    connect_in_store(&store, NAME, &emulator, emulator.access_token());
    store
        .set_setting(NAME, "sync_strategy", "scheduled")
        .unwrap();
    let mut worker = Worker::start_with(&db, &key, "slow", &TTL_SECS.to_string(), false);
    wait_for("the first sync", Duration::from_secs(120), || {
        !lines_of(&[&worker], NAME).is_empty()
    });
    assert_eq!(lines_of(&[&worker], NAME)[0]["result"], "ok");

    // The database turns slow: every write of records, sync points or events waits for the
    // test's lock. Then the filters change (a re-listing) and a sync is asked for.
    let mut admin = db.client();
    admin
        .batch_execute("BEGIN; LOCK TABLE records, sync_points, events IN EXCLUSIVE MODE")
        .unwrap();
    store
        .set_setting(NAME, "exclude_extensions", "nothing-has-this")
        .unwrap();
    assert!(store.request_sync(NAME).unwrap());
    let mut probe = db.client();
    let mut waiting = move || -> i64 {
        probe
            .query_one(
                "SELECT count(*) FROM pg_locks
                 WHERE NOT granted AND locktype = 'relation'
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[],
            )
            .unwrap()
            .get(0)
    };
    wait_for(
        "the re-listing's batch waits",
        Duration::from_secs(60),
        || waiting() > 0,
    );
    std::thread::sleep(Duration::from_secs(3 * TTL_SECS));
    // The batch has outlived its lease, by the database's clock, and still holds the
    // tenant's row (the renewal queues behind it).
    let ran_out: bool = db
        .client()
        .query_one(
            "SELECT lease_expires_at < conn_rt_now_ms() FROM tenants WHERE name = $1",
            &[&NAME],
        )
        .unwrap()
        .get(0);
    assert!(ran_out, "the lease ran out during the batch");
    assert!(waiting() > 0, "the batch still waits");
    admin.batch_execute("COMMIT").unwrap();

    wait_for("the re-listing", Duration::from_secs(120), || {
        lines_of(&[&worker], NAME).len() >= 2
    });
    worker.interrupt();
    let relisting = &lines_of(&[&worker], NAME)[1];
    assert_eq!(relisting["result"], "ok", "{relisting}");
    assert_eq!(relisting["kind"], "resync", "{relisting}");
    // One lease for the re-listing, never lost, completed; no second attempt.
    let history = store.lease_history(Some(NAME)).unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(
        history
            .iter()
            .all(|h| h.ended == Some(host_test::store::pg::LeaseEnd::Completed)),
        "{history:?}"
    );
    assert!(history[1].commits >= 1, "{history:?}");
    // The store equals the account, and nothing was deleted or created twice.
    let records = store.records(NAME).unwrap();
    let diffs = diff_with_truth(&emulator.truth(), &records, |_| true);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    let events: Vec<_> = store
        .read_outbox("check", NAME, 1_000_000)
        .unwrap()
        .into_iter()
        .map(|o| o.event)
        .collect();
    e2e_tests::assert_no_duplicate_events(&events);
    assert_eq!(e2e_tests::count(&events, "deleted"), 0);
}

/// Goal 4 and item 6: three workers (long-polls on) for 20 seconds, over a tenant whose token
/// is revoked, one the API answers 429 with `retry_after` 300, a healthy one, and one that is
/// disconnected during the run. The revoked tenant is tried once and then waits for
/// re-authentication (status says so); the rate-limited one gets no request inside the
/// window, not for a "sync now" either, nor from a long-poll; the disconnected one is
/// unscheduled. Re-authentication brings the revoked tenant back at once.
#[test]
fn failures_back_off_across_three_workers_and_a_disconnected_tenant_is_unscheduled() {
    use dropbox_emulator::{Fault, FaultKind};
    use std::time::{Duration, Instant};

    let db = TestDatabase::create();
    let key = Keyring::generate_key();
    let store = PgStore::connect(db.url(), Keyring::parse(&key, "test").unwrap()).unwrap();
    let start = |files, seed| {
        Emulator::start(EmulatorConfig {
            files,
            seed,
            ..Default::default()
        })
        .expect("the emulator starts")
    };
    let (healthy, revoked, limited, leaving) =
        (start(30, 1), start(30, 2), start(30, 3), start(20, 4));
    connect_in_store(&store, "healthy", &healthy, healthy.access_token());
    connect_in_store(&store, "revoked", &revoked, revoked.access_token());
    connect_in_store(&store, "limited", &limited, limited.access_token());
    connect_in_store(&store, "leaving", &leaving, leaving.access_token());
    revoked.revoke_all();
    limited.inject(Fault {
        route: None,
        skip: 0,
        count: 1_000_000,
        kind: FaultKind::RateLimitJson {
            retry_after: 300,
            reason: "too_many_requests".into(),
            include_field: true,
        },
    });
    for e in [&healthy, &revoked, &limited, &leaving] {
        e.reset_counts();
    }

    let started = Instant::now();
    let mut workers = [
        Worker::start_with(&db, &key, "b1", "3", true),
        Worker::start_with(&db, &key, "b2", "3", true),
        Worker::start_with(&db, &key, "b3", "3", true),
    ];
    let all = |ws: &[Worker; 3]| -> Vec<Value> {
        ws.iter()
            .flat_map(|w| w.lines.lock().unwrap().clone())
            .collect()
    };
    let synced_ok = |ws: &[Worker; 3], t: &str| {
        all(ws)
            .iter()
            .any(|l| l["tenant"] == t && l["result"] == "ok")
    };
    wait_for(
        "healthy and leaving synced",
        Duration::from_secs(60),
        || synced_ok(&workers, "healthy") && synced_ok(&workers, "leaving"),
    );
    wait_for("limited tried", Duration::from_secs(30), || {
        all(&workers).iter().any(|l| l["tenant"] == "limited")
    });
    // The first sync's requests went out together, before any answer came back: they are
    // what the 429s answered. The window starts with those answers.
    let limited_first: u64 = limited.request_counts().values().sum();
    // "Sync now" inside the window.
    assert!(store.request_sync("limited").unwrap());

    // Disconnect `leaving` with the CLI, while its long-poll is held.
    wait_for("leaving's long-poll held", Duration::from_secs(30), || {
        !store.poll_history(Some("leaving")).unwrap().is_empty()
    });
    let out = ok(
        &db,
        &key,
        &[
            "disconnect",
            "--tenant",
            "leaving",
            "--api-url",
            &leaving.base_url(),
        ],
    );
    assert!(out.contains("deleted"), "{out}");
    assert!(
        !store
            .schedules()
            .unwrap()
            .iter()
            .any(|s| s.tenant == "leaving"),
        "unscheduled at once"
    );
    assert!(
        !store.request_sync("leaving").unwrap(),
        "nothing to request"
    );
    let leases_at_disconnect = store.lease_history(Some("leaving")).unwrap().len();

    while started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let counts = |e: &Emulator| e.request_counts();
    eprintln!("requests per route after 20 s with 3 workers:");
    for (name, e) in [
        ("healthy", &healthy),
        ("revoked", &revoked),
        ("limited", &limited),
        ("leaving", &leaving),
    ] {
        eprintln!("  {name}: {:?}", counts(e));
    }
    let history = store.lease_history(None).unwrap();
    let leases = |t: &str| history.iter().filter(|h| h.tenant == t).count();
    eprintln!(
        "lease_history rows: healthy {}, revoked {}, limited {}, leaving {}",
        leases("healthy"),
        leases("revoked"),
        leases("limited"),
        leases("leaving")
    );

    // The revoked token: at most two attempts (one here), then stopped, and status says so.
    let attempts = lines_of(&workers.iter().collect::<Vec<_>>(), "revoked");
    assert!(!attempts.is_empty() && attempts.len() <= 2, "{attempts:?}");
    assert!(leases("revoked") <= 2, "{history:?}");
    let status: Value =
        serde_json::from_str(&ok(&db, &key, &["status", "--tenant", "revoked", "--json"])).unwrap();
    assert_eq!(status["needs_reauthentication"], true, "{status}");
    // The rate-limited tenant: the first sync's requests (sent at once, all answered 429),
    // then none inside the window.
    let limited_requests: u64 = counts(&limited).values().sum();
    eprintln!("limited: {limited_first} requests in its first sync, {limited_requests} in all");
    assert!((1..=3).contains(&limited_first), "{:?}", counts(&limited));
    assert_eq!(limited_requests, limited_first, "{:?}", counts(&limited));
    assert_eq!(leases("limited"), 1, "{history:?}");
    let schedules = store.schedules().unwrap();
    let of = |t: &str| schedules.iter().find(|s| s.tenant == t).unwrap().clone();
    let l = of("limited");
    assert!(
        l.rate_limited_until.unwrap() >= l.last_completed_at.unwrap() + 299_000,
        "{l:?}"
    );
    // The disconnected tenant stayed unscheduled: no lease since.
    assert_eq!(
        store.lease_history(Some("leaving")).unwrap().len(),
        leases_at_disconnect
    );
    assert!(!schedules.iter().any(|s| s.tenant == "leaving"));

    // Re-authentication: the revoked tenant is synced again at once.
    connect_in_store(&store, "revoked", &revoked, revoked.access_token());
    let back = Instant::now();
    wait_for(
        "the re-authenticated tenant synced",
        Duration::from_secs(30),
        || synced_ok(&workers, "revoked"),
    );
    eprintln!(
        "re-authenticated tenant synced {:.1}s after its new token",
        back.elapsed().as_secs_f64()
    );
    for w in &mut workers {
        w.interrupt();
    }
    let diffs = diff_with_truth(&revoked.truth(), &store.records("revoked").unwrap(), |_| {
        true
    });
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// Item 8: a worker holds at most `--max-polls` long-polls and offers the rest; a worker with
/// `--tenant` claims and polls only its tenants.
#[test]
fn long_polls_are_capped_per_worker_and_tenant_limits_what_a_worker_takes() {
    use std::time::Duration;

    let db = TestDatabase::create();
    let key = Keyring::generate_key();
    let store = PgStore::connect(db.url(), Keyring::parse(&key, "test").unwrap()).unwrap();
    let emulator = Emulator::start(EmulatorConfig {
        files: 10,
        seed: 9,
        ..Default::default()
    })
    .expect("the emulator starts");
    let names = ["p0", "p1", "p2", "p3"];
    for n in names {
        connect_in_store(&store, n, &emulator, emulator.access_token());
    }
    let mut admin = db.client();
    let mut live_polls = |worker: &str| -> Vec<String> {
        admin
            .query(
                "SELECT tenant FROM schedules
                 WHERE poll_worker = $1 AND poll_expires_at > conn_rt_now_ms() ORDER BY tenant",
                &[&worker],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let mut capped = Worker::start_args(&db, &key, "capped", "2", &["--max-polls", "2"]);
    wait_for("every tenant synced", Duration::from_secs(60), || {
        names
            .iter()
            .all(|n| lines_of(&[&capped], n).iter().any(|l| l["result"] == "ok"))
    });
    // Settled: two polls held, never more, over several renewals.
    std::thread::sleep(Duration::from_secs(2));
    for _ in 0..5 {
        assert_eq!(live_polls("capped").len(), 2, "{:?}", live_polls("capped"));
        std::thread::sleep(Duration::from_millis(500));
    }
    let held = live_polls("capped");
    let offered: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !held.iter().any(|h| h == n))
        .collect();
    assert_eq!(offered.len(), 2);

    // A worker limited to one of the offered tenants (and one of the held ones) takes that
    // poll only, and claims only its tenants.
    let mut limited = Worker::start_args(
        &db,
        &key,
        "limited",
        "2",
        &["--tenant", offered[0], "--tenant", &held[0]],
    );
    wait_for("the offered poll taken", Duration::from_secs(30), || {
        live_polls("limited") == [offered[0].to_string()]
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(live_polls("limited"), [offered[0].to_string()]);
    assert_eq!(live_polls("capped").len(), 2);
    // A sync asked for of a tenant outside its list goes to the other worker.
    let before = store.lease_history(Some(offered[1])).unwrap().len();
    assert!(store.request_sync(offered[1]).unwrap());
    wait_for("the requested sync", Duration::from_secs(30), || {
        store.lease_history(Some(offered[1])).unwrap().len() > before
    });
    limited.interrupt();
    capped.interrupt();
    let history = store.lease_history(None).unwrap();
    for h in history.iter().filter(|h| h.worker == "limited") {
        assert!(
            h.tenant == offered[0] || h.tenant == held[0],
            "limited claimed {}",
            h.tenant
        );
    }
    let requested = history.iter().rfind(|h| h.tenant == offered[1]).unwrap();
    assert_eq!(requested.worker, "capped");
}

/// The CLI's `sync` on PostgreSQL holds the tenant's writer right as a worker does: a lease of
/// its own, its writes fenced by it, given back at the end. While a worker holds the tenant,
/// the CLI is refused with exit code 11, names the worker, and writes nothing.
#[test]
fn the_cli_sync_takes_the_tenants_lease_and_is_refused_while_a_worker_holds_it() {
    let Connected {
        db,
        emulator,
        key,
        api,
    } = Connected::new(40, 33);
    let target = ["--tenant", TENANT, "--api-url", api.as_str()];
    let store = PgStore::connect(db.url(), Keyring::parse(&key, "test").unwrap()).unwrap();
    let held = store
        .try_acquire(TENANT, "worker-w7", std::time::Duration::from_secs(60))
        .unwrap()
        .expect("the tenant is free");
    let (refused, all) = cli(
        &db,
        Some(&key),
        &[&["sync"][..], &target, &["--quiet"]].concat(),
    );
    assert_eq!(refused.status.code(), Some(ExitClass::Busy.code()), "{all}");
    assert!(all.contains("worker-w7"), "the holder is named: {all}");
    assert_eq!(
        store.records(TENANT).unwrap().len(),
        0,
        "nothing was written"
    );
    assert!(store.release(&held).unwrap());

    ok(&db, &key, &[&["sync"][..], &target, &["--quiet"]].concat());
    let records = store.records(TENANT).unwrap();
    let diffs = diff_with_truth(&emulator.truth(), &records, |_| true);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    // The run held a lease of its own, and gave it back.
    let history = store.lease_history(Some(TENANT)).unwrap();
    let own: Vec<_> = history
        .iter()
        .filter(|h| h.worker.starts_with("sync@"))
        .collect();
    assert_eq!(own.len(), 1, "{history:?}");
    assert!(store.lease_holder(TENANT).unwrap().is_none(), "{history:?}");
}
