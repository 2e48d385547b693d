//! Crash safety: the host process (the CLI, a child process here) is killed with SIGKILL at
//! seeded random points of full and incremental syncs, with changes to the account between
//! kills; the next run must bring the store to exactly the account: nothing lost, nothing
//! duplicated, no event emitted twice for the same change, and an event stream that replays
//! to the stored records.
//!
//! `CRASH_KILLS=N` changes the number of kills (default 15); `CRASH_SEED=S` the seed.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dropbox_emulator::{Content, Emulator, EmulatorConfig, Kind};
use e2e_tests::{
    Harness, Rng, assert_no_duplicate_events, diff_with_truth, dropbox_runtime, env_or,
};
use host_test::app::ConnectorHost;
use host_test::http::HttpSettings;
use host_test::store::{Event, RecordStore, SqliteStore, SyncPhase};

const TENANT: &str = "t";

/// `host-test sync` in a child process, as an operator would run it.
fn spawn_sync(db: &Path, emulator: &Emulator) -> Child {
    Command::new(env!("CARGO_BIN_EXE_host-test-cli"))
        .arg("sync")
        .arg("--db")
        .arg(db)
        .args([
            "--tenant",
            TENANT,
            "--api-url",
            &emulator.base_url(),
            "--quiet",
        ])
        .env("DROPBOX_ACCESS_TOKEN", emulator.access_token())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the CLI starts")
}

/// Run a sync to its end; panics with the CLI's error if it fails.
fn sync_to_completion(db: &Path, emulator: &Emulator) -> Duration {
    let started = Instant::now();
    let output = spawn_sync(db, emulator)
        .wait_with_output()
        .expect("the CLI runs");
    assert!(
        output.status.success(),
        "the sync failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    started.elapsed()
}

/// Records per store transaction: small, so a page spans many transactions and a kill can
/// land between the batches of one page (only the page's last batch carries its cursor).
fn prepare_db(db: &Path) {
    let store = SqliteStore::open(db).expect("the store opens");
    store
        .set_setting(TENANT, "batch_size", "25")
        .expect("setting stored");
}

/// What a kill left behind, read after the child is gone.
struct AfterKill {
    live: u64,
    pending: u64,
    has_cursor: bool,
    last_seq: i64,
    /// Differences from the account.
    diffs: usize,
}

fn inspect(db: &Path, emulator: &Emulator) -> AfterKill {
    let store = SqliteStore::open(db).expect("the store opens after a kill");
    let records = store.records(TENANT).expect("records");
    AfterKill {
        live: records.len() as u64,
        pending: store.pending_count(TENANT).expect("pending"),
        // What the connector said of its position (its sync status), not the position itself.
        has_cursor: store
            .sync_status(TENANT)
            .expect("sync status")
            .is_some_and(|s| s.phase == SyncPhase::Current),
        last_seq: store.last_event_seq().expect("seq"),
        diffs: diff_with_truth(&emulator.truth(), &records, |_| true).len(),
    }
}

/// Changes between kills: some small, some that touch hundreds of entries (a moved or deleted
/// folder, a burst of new files) so that incremental syncs run long enough to be killed too.
fn change_account(emulator: &Emulator, rng: &mut Rng, round: usize) -> String {
    let text = |s: &str| Content::Bytes(s.as_bytes().to_vec());
    let truth = emulator.truth();
    let files: Vec<_> = truth
        .iter()
        .filter(|t| t.kind == Kind::File && t.is_downloadable)
        .collect();
    let folders: Vec<_> = truth.iter().filter(|t| t.kind == Kind::Folder).collect();
    let mut done = Vec::new();
    // The biggest top-level folders, for the large changes.
    let mut sizes: HashMap<&str, usize> = HashMap::new();
    for t in &truth {
        if let Some(top) = t.path_display.split('/').nth(1) {
            *sizes.entry(top).or_default() += 1;
        }
    }
    let mut tops: Vec<(&str, usize)> = sizes.into_iter().filter(|(_, n)| *n > 1).collect();
    tops.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    match rng.below(4) {
        0 if !tops.is_empty() => {
            let (top, n) = tops[rng.below(tops.len().min(3))];
            if emulator
                .move_path(&format!("/{top}"), &format!("/{top} moved {round}"))
                .is_ok()
            {
                done.push(format!("moved /{top} ({n} entries)"));
            }
        }
        1 if tops.len() > 2 => {
            let (top, n) = tops[tops.len() - 1 - rng.below(tops.len() / 2)];
            if emulator.delete(&format!("/{top}")).is_ok() {
                done.push(format!("deleted /{top} ({n} entries)"));
            }
        }
        2 => {
            let n = 200 + rng.below(400);
            for i in 0..n {
                let _ = emulator.create_file(
                    &format!("/Burst {round}/d{}/f{i}.txt", i % 9),
                    text(&format!("{round}/{i}")),
                );
            }
            done.push(format!("created {n} files"));
        }
        _ => {}
    }
    // And a few small ones.
    for op in 0..rng.below(8) {
        let name = format!("k{round}o{op} ü");
        let _ = match rng.below(5) {
            0 => emulator
                .create_file(&format!("/small/{name}.txt"), text(&name))
                .map(|_| ()),
            1 if !files.is_empty() => emulator
                .modify_file(&files[rng.below(files.len())].path_display, text(&name))
                .map(|_| ()),
            2 if !files.is_empty() => {
                let dir = folders
                    .get(rng.below(folders.len()))
                    .map(|f| f.path_display.clone())
                    .unwrap_or_default();
                emulator
                    .move_path(
                        &files[rng.below(files.len())].path_display,
                        &format!("{dir}/{name}.moved"),
                    )
                    .map(|_| ())
            }
            3 if !files.is_empty() => emulator.delete(&files[rng.below(files.len())].path_display),
            _ => emulator.create_folder(&format!("/{name} dir")).map(|_| ()),
        };
        done.push("small".into());
    }
    let small = done.iter().filter(|d| *d == "small").count();
    let mut big: Vec<String> = done.into_iter().filter(|d| d != "small").collect();
    if small > 0 {
        big.push(format!("{small} small"));
    }
    big.join(", ")
}

#[derive(Clone, Copy)]
enum KillAt {
    /// This long after the process started.
    Time(Duration),
    /// Once the run has written this many events.
    Events(i64),
}

/// No change is announced twice: for each record, two events in a row of the same kind never
/// carry the same record (a replayed page that emitted again would do exactly that).
fn assert_no_repeated_updates(events: &[Event]) {
    let mut last: HashMap<&str, (&str, &serde_json::Value, i64)> = HashMap::new();
    for e in events {
        if let Some((kind, record, seq)) = last.get(e.external_id.as_str()) {
            assert!(
                !(*kind == e.kind && **record == e.record),
                "event {} repeats event {seq} for {} ({})",
                e.seq,
                e.external_id,
                e.kind
            );
        }
        last.insert(&e.external_id, (&e.kind, &e.record, e.seq));
    }
}

#[test]
fn killed_at_random_points_the_next_run_is_exact() {
    let kills: usize = env_or("CRASH_KILLS", 15);
    let seed: u64 = env_or("CRASH_SEED", 0xC0FFEE);
    let started = Instant::now();
    let emulator = Emulator::start(EmulatorConfig {
        files: 3000,
        seed: 101,
        ..Default::default()
    })
    .expect("emulator");
    // A few milliseconds per request: each page and each link page takes a moment, as on a
    // real network.
    emulator.set_latency(Duration::from_millis(5));
    let dir = tempfile::tempdir().expect("a temp dir");

    // How long an uninterrupted full sync takes here, on a scratch database: kills by time are
    // spread over that span.
    let scratch = dir.path().join("scratch.db");
    prepare_db(&scratch);
    let full = sync_to_completion(&scratch, &emulator);

    let db = dir.path().join("store.db");
    prepare_db(&db);
    // Read beside the child (SQLite's WAL lets a reader watch a writer) to kill by progress.
    let watch = SqliteStore::open(&db).expect("the store opens");
    let mut rng = Rng(seed | 1);
    let mut rows = Vec::new();
    let (mut mid_run, mut partial) = (0, 0);
    let mut last_seq = 0;
    // At least `kills` rounds, and more (up to four times as many) until enough kills landed
    // inside a sync's writes: how many do depends on this machine's timing, not on the seed.
    let mut round = 0;
    while round < kills || ((partial * 5 < kills || mid_run * 3 < kills) && round < kills * 4) {
        // The first kills hit the initial full listing; later ones incremental syncs (and the
        // re-listing a large change may need).
        let mut changes = if round >= 3 {
            change_account(&emulator, &mut rng, round)
        } else {
            String::new()
        };
        if round % 5 == 4 {
            // Dropbox resets the cursor now and then: the next run re-lists everything.
            emulator.invalidate_cursors();
            changes.push_str(", cursor reset");
        }
        // Half the kills at a random time (the process's start included), half once the run
        // has written a random share of the changes it has to write (a point inside its
        // writes, whatever the machine's speed).
        let to_write = inspect(&db, &emulator).diffs.max(1);
        let kill_at = if round % 2 == 0 {
            KillAt::Time(Duration::from_millis(
                rng.below(full.mul_f64(1.2).as_millis() as usize + 1) as u64,
            ))
        } else {
            // (Within the first two thirds: the differences overcount what a run writes.)
            KillAt::Events(1 + rng.below((to_write * 2 / 3).max(1)) as i64)
        };
        let mut child = spawn_sync(&db, &emulator);
        let spawned = Instant::now();
        let running = loop {
            if child.try_wait().expect("child status").is_some() {
                break false;
            }
            let due = match kill_at {
                KillAt::Time(d) => spawned.elapsed() >= d,
                KillAt::Events(n) => watch.last_event_seq().expect("seq") - last_seq >= n,
            };
            if due || spawned.elapsed() > Duration::from_secs(120) {
                break true;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        // SIGKILL on unix: no destructor, no flush, no rollback other than SQLite's own.
        let _ = child.kill();
        let status = child.wait().expect("the child is reaped");
        if !running && !status.success() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            panic!("round {round}: the sync failed on its own: {err}");
        }
        let after = inspect(&db, &emulator);
        let total = emulator.truth().len() as u64;
        let wrote = after.last_seq - last_seq;
        last_seq = after.last_seq;
        // Killed after the run had written something, before it had written everything.
        let cut = running && wrote > 0 && after.diffs > 0;
        mid_run += usize::from(running);
        partial += usize::from(cut);
        rows.push(format!(
            "| {round:>2} | {:>12} | {:<8} | {:>6} | {:>5} / {:>5} | {:>5} | {:<3} | {:>5} | {changes} |",
            match kill_at {
                KillAt::Time(d) => format!("{} ms", d.as_millis()),
                KillAt::Events(n) => format!("{n} events"),
            },
            if running { "killed" } else { "finished" },
            wrote,
            after.live,
            total,
            after.pending,
            if after.has_cursor { "yes" } else { "no" },
            after.diffs,
        ));
        round += 1;
    }
    drop(watch);
    // One more change, then runs to the end. The first one may finish a listing that a killed
    // run began: Dropbox lists from a snapshot, so that run ends at the snapshot's state, and
    // the next run brings what changed since (an incremental sync).
    let last_changes = change_account(&emulator, &mut rng, kills);
    sync_to_completion(&db, &emulator);
    sync_to_completion(&db, &emulator);

    println!(
        "a full sync of the initial account: {} ms (the span of kills by time)",
        full.as_millis()
    );
    println!(
        "| run | kill after | process | events written | live records / account | pending | cursor | differences | changes before the run |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!("{row}");
    }
    println!("then: {last_changes}; runs to the end");
    println!(
        "{mid_run} of {round} kills hit a running sync; {partial} of them after it had written part of its changes"
    );

    let store = Arc::new(SqliteStore::open(&db).expect("the store opens"));
    let records = store.records(TENANT).expect("records");
    let diffs = diff_with_truth(&emulator.truth(), &records, |_| true);
    assert!(
        diffs.is_empty(),
        "after the crashes, the store differs from the account:\n{}",
        diffs.join("\n")
    );
    assert_eq!(
        store.pending_count(TENANT).expect("pending"),
        0,
        "records left pending removal"
    );
    let events = store.events(Some(TENANT), 0).expect("events");
    assert_no_duplicate_events(&events);
    assert_no_repeated_updates(&events);
    // The event stream replays to the stored records (Harness's check, on this database).
    let host = ConnectorHost::new(
        dropbox_runtime(),
        store.clone(),
        Some(&emulator.base_url()),
        HttpSettings::default(),
    )
    .expect("a host on the crashed database");
    let h = Harness {
        emulator: emulator.clone(),
        host,
        tenant: TENANT.into(),
        dir,
        database: None,
    };
    h.assert_matches_truth();
    // Nothing left to do: another run emits nothing.
    let seq = h.last_seq();
    sync_to_completion(&h.dir.path().join("store.db"), &emulator);
    assert!(
        h.events_since(seq).is_empty(),
        "a run after recovery emitted {:?}",
        h.events_since(seq)
    );
    println!(
        "{} events, {} records; {:.1} s in all",
        events.len(),
        records.len(),
        started.elapsed().as_secs_f64()
    );

    // The kills must really have hit syncs at work, or this test proves nothing.
    assert!(
        mid_run * 3 >= kills,
        "only {mid_run} of {kills} kills hit a running sync"
    );
    assert!(
        partial * 5 >= kills,
        "only {partial} of {kills} kills cut a sync between its writes"
    );
}
