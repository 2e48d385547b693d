//! The runtime is connector-agnostic: a second connector, for a flat source (notes addressed
//! only by id, no paths), runs in the same host through the same command line, with no change
//! to either. The source is a small HTTP server written here (`fixture`), whose truth the tests
//! change between syncs; everything else is real: the notes component built by `build.rs`,
//! the `host-test` binary as a child process, SQLite.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use host_test::bindings::types::ConnectorError;
use host_test::cli::ExitClass;
use serde_json::Value;

use fixture::NotesServer;

const TENANT: &str = "t";
const TOKEN: &str = "notes-token-1";

/// A notes service, a database in a fresh directory, and the CLI pointed at both with the
/// notes component.
struct Setup {
    notes: NotesServer,
    _dir: tempfile::TempDir,
    db: PathBuf,
}

struct Run {
    output: Output,
    stdout: String,
    stderr: String,
}

impl Run {
    fn of(cmd: &mut Command) -> Run {
        let output = cmd.output().expect("the CLI runs");
        Run {
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            output,
        }
    }

    fn all(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.output.status.code(),
            self.stdout,
            self.stderr
        )
    }

    fn ok(self) -> Run {
        assert!(self.output.status.success(), "{}", self.all());
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.all()))
    }

    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("a line is not JSON ({e}): {l}\n{}", self.all()))
            })
            .collect()
    }
}

impl Setup {
    /// A service holding `notes` (title, content), and a tenant connected to it (`connect`
    /// runs the connector's test-connection).
    fn new(notes: &[(&str, &str)]) -> Setup {
        let server = NotesServer::start(TOKEN).expect("the notes service starts");
        for (title, content) in notes {
            server.create(title, content.as_bytes());
        }
        let dir = tempfile::tempdir().expect("a temp dir");
        let db = dir.path().join("notes.db");
        let setup = Setup {
            notes: server,
            _dir: dir,
            db,
        };
        let connect = setup
            .run(&["connect"], &["--access-token", TOKEN, "--json"])
            .ok();
        let account = connect.json();
        assert_eq!(
            account["email"],
            fixture::ACCOUNT_EMAIL,
            "{}",
            connect.all()
        );
        setup
    }

    /// `host-test --component <notes> <command> --db .. --tenant t --api-url .. <rest>`, with
    /// no token from the environment and no standard input.
    fn command(&self, command: &[&str], rest: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_host-test-cli"));
        cmd.arg("--component")
            .arg(host_test::components::NOTES)
            .args(command)
            .arg("--db")
            .arg(&self.db)
            .args(["--tenant", TENANT, "--api-url", &self.notes.base_url()])
            .args(rest)
            .env_remove("HOST_TEST_ACCESS_TOKEN")
            .env_remove("DROPBOX_ACCESS_TOKEN")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, command: &[&str], rest: &[&str]) -> Run {
        Run::of(&mut self.command(command, rest))
    }

    /// One `sync --json`, which must succeed: its summary.
    fn sync(&self) -> Value {
        self.run(&["sync"], &["--json", "--quiet"]).ok().json()
    }

    /// The stored records by id, from `records --json`.
    fn records(&self) -> BTreeMap<String, Value> {
        self.run(&["records"], &["--json"])
            .ok()
            .json_lines()
            .into_iter()
            .map(|r| (r["id"].as_str().expect("a record has an id").to_string(), r))
            .collect()
    }

    /// The event stream after `since`, from `events --json`: (seq, kind, id).
    fn events_after(&self, since: i64) -> Vec<(i64, String, String)> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_host-test-cli"));
        cmd.arg("--component")
            .arg(host_test::components::NOTES)
            .arg("events")
            .arg("--db")
            .arg(&self.db)
            .args(["--tenant", TENANT, "--since", &since.to_string(), "--json"])
            .stdin(Stdio::null());
        Run::of(&mut cmd)
            .ok()
            .json_lines()
            .into_iter()
            .map(|e| {
                (
                    e["seq"].as_i64().expect("an event has a seq"),
                    e["kind"].as_str().expect("an event has a kind").to_string(),
                    e["id"].as_str().expect("an event has an id").to_string(),
                )
            })
            .collect()
    }

    fn last_event_seq(&self) -> i64 {
        self.events_after(0).last().map_or(0, |e| e.0)
    }

    /// The stored records equal the service's live notes, field by field.
    fn assert_store_matches_truth(&self) {
        let records = self.records();
        let truth = self.notes.truth();
        let mut diffs = Vec::new();
        for note in &truth {
            let Some(r) = records.get(&note.id) else {
                diffs.push(format!("missing {} {:?}", note.id, note.title));
                continue;
            };
            let checks = [
                ("name", Value::from(note.title.clone()), r["name"].clone()),
                ("size", Value::from(note.content.len()), r["size"].clone()),
                ("kind", Value::from("item"), r["kind"].clone()),
                ("rev", Value::from(note.etag.clone()), r["rev"].clone()),
                ("parent", Value::Null, r["parent_id"].clone()),
            ];
            for (field, want, got) in checks {
                if want != got {
                    diffs.push(format!(
                        "{}: {field} expected {want}, stored {got}",
                        note.id
                    ));
                }
            }
            // A flat source: no path in any form the CLI prints.
            for key in ["path", "path_lower", "path_display"] {
                if !r.get(key).is_none_or(Value::is_null) {
                    diffs.push(format!(
                        "{}: {key} should be absent, is {}",
                        note.id, r[key]
                    ));
                }
            }
        }
        for id in records.keys() {
            if !truth.iter().any(|n| &n.id == id) {
                diffs.push(format!("unexpected {id}"));
            }
        }
        assert!(
            diffs.is_empty(),
            "store differs from the notes service:\n{}",
            diffs.join("\n")
        );
    }
}

/// The events after `since` as a sorted list of (kind, id), failing on any id with two events.
fn changes_after(setup: &Setup, since: i64) -> Vec<(String, String)> {
    let events = setup.events_after(since);
    let mut seen = BTreeMap::new();
    for (seq, kind, id) in &events {
        if let Some(previous) = seen.insert(id.clone(), (kind.clone(), *seq)) {
            panic!("two events for {id}: {previous:?} and {kind} (#{seq}); all: {events:?}");
        }
    }
    let mut changes: Vec<(String, String)> = events.into_iter().map(|(_, k, i)| (k, i)).collect();
    changes.sort();
    changes
}

fn expected(mut changes: Vec<(&str, &str)>) -> Vec<(String, String)> {
    changes.sort();
    changes
        .into_iter()
        .map(|(k, i)| (k.to_string(), i.to_string()))
        .collect()
}

#[test]
fn full_then_incremental_then_resync_after_the_source_forgot_its_history() {
    let s = Setup::new(&[
        ("Groceries", "milk, eggs"),
        ("Ideas", "a connector for notes"),
        ("Empty", ""),
        ("Draft", "to be edited"),
        ("Old", "to be deleted"),
    ]);
    // Several pages: the listing must follow `has_more` (page size 2 for 5 notes).
    s.run(&["config"], &["set", "page_size", "2"]).ok();

    // Full listing.
    let full = s.sync();
    assert_eq!(full["kind"], "full", "{full}");
    assert_eq!(full["created"], 5, "{full}");
    assert!(full["pages"].as_u64().unwrap() >= 3, "{full}");
    s.assert_store_matches_truth();
    let ids: BTreeMap<String, String> = s
        .notes
        .truth()
        .into_iter()
        .map(|n| (n.title.clone(), n.id.clone()))
        .collect();
    assert_eq!(
        changes_after(&s, 0),
        expected(ids.values().map(|id| ("created", id.as_str())).collect())
    );
    // The host shows what the connector said of its sync (its position stays its own), and
    // the account the listing stored as owner.
    let status = s.run(&["status"], &["--json"]).ok().json();
    assert_eq!(status["sync_status"]["phase"], "current", "{status}");
    assert_eq!(status["records"], 5, "{status}");
    assert_eq!(
        status["account"]["email"],
        fixture::ACCOUNT_EMAIL,
        "{status}"
    );

    // One of each change, then an incremental sync: exactly one event each.
    let before = s.last_event_seq();
    let created = s.notes.create("New", b"fresh");
    s.notes.set_title(&ids["Ideas"], "Ideas (renamed)");
    s.notes
        .set_content(&ids["Draft"], b"edited, and longer than before");
    s.notes.delete(&ids["Old"]);
    // Created and deleted between two syncs: the store never hears of it.
    let ephemeral = s.notes.create("Ephemeral", b"gone soon");
    s.notes.delete(&ephemeral);
    let incremental = s.sync();
    assert_eq!(incremental["kind"], "incremental", "{incremental}");
    s.assert_store_matches_truth();
    assert_eq!(
        changes_after(&s, before),
        expected(vec![
            ("created", &created),
            ("metadata", &ids["Ideas"]),
            ("content", &ids["Draft"]),
            ("deleted", &ids["Old"]),
        ])
    );
    // Nothing changed: nothing happens.
    let before = s.last_event_seq();
    let idle = s.sync();
    assert_eq!(idle["kind"], "incremental", "{idle}");
    assert_eq!(changes_after(&s, before), vec![]);

    // The service forgets its change history: the stored position is answered with 410, and
    // the connector lists everything again, sweeping exactly what vanished meanwhile.
    let before = s.last_event_seq();
    s.notes.delete(&ids["Groceries"]);
    s.notes.set_title(&ids["Empty"], "Not empty any more");
    s.notes.set_content(&ids["Empty"], b"now with content");
    let late = s.notes.create("Late", b"after the history was lost");
    s.notes.forget_history();
    let resync = s.sync();
    assert_eq!(resync["kind"], "resync", "{resync}");
    assert!(
        s.notes.gone_answers() >= 1,
        "the service answered 410 at least once"
    );
    s.assert_store_matches_truth();
    assert_eq!(
        changes_after(&s, before),
        expected(vec![
            ("deleted", &ids["Groceries"]),
            ("content_and_metadata", &ids["Empty"]),
            ("created", &late),
        ])
    );
    // And the position it stored works again.
    let before = s.last_event_seq();
    s.notes.set_title(&late, "Late, renamed");
    let after = s.sync();
    assert_eq!(after["kind"], "incremental", "{after}");
    assert_eq!(
        changes_after(&s, before),
        expected(vec![("metadata", &late)])
    );
    s.assert_store_matches_truth();
}

#[test]
fn cat_prints_the_content_and_a_signed_url_is_unsupported() {
    let s = Setup::new(&[("Hello", "hello, notes\n"), ("Nothing", "")]);
    // A note larger than the smallest response-body cap a host may have (1 MiB): the
    // connector reads it by ranges and the bytes arrive whole and in order.
    let big: Vec<u8> = (0..(3 * 1024 * 1024 + 17))
        .map(|i: u32| b'a' + (i % 26) as u8)
        .collect();
    let big_id = s.notes.create("Big", &big);
    s.sync();
    let truth = s.notes.truth();
    let hello = truth.iter().find(|n| n.title == "Hello").unwrap();
    let nothing = truth.iter().find(|n| n.title == "Nothing").unwrap();

    let cat = s.run(&["cat"], &[&hello.id]).ok();
    assert_eq!(cat.output.stdout, b"hello, notes\n", "{}", cat.all());
    let cat = s.run(&["cat"], &[&nothing.id]).ok();
    assert!(cat.output.stdout.is_empty(), "{}", cat.all());
    let cat = s.run(&["cat"], &[&big_id, "--json"]).ok();
    assert!(cat.output.stdout == big, "the big note's bytes, exactly");
    let summary: Value = serde_json::from_str(cat.stderr.trim())
        .unwrap_or_else(|e| panic!("cat's summary is JSON on stderr ({e}):\n{}", cat.all()));
    assert_eq!(summary["size"], big.len() as u64);
    assert_eq!(summary["mime_type"], "text/plain");

    // A note deleted at the source since the sync: not found, not a crash.
    s.notes.delete(&hello.id);
    let gone = s.run(&["cat"], &[&hello.id]);
    assert_eq!(
        gone.output.status.code(),
        Some(ExitClass::NotFound.code()),
        "{}",
        gone.all()
    );

    // The notes service has no signed URLs: the SDK's default answer, with its own exit code.
    let url = s.run(&["url"], &[&nothing.id]);
    let class = ExitClass::of_connector(&ConnectorError::Unsupported(String::new()));
    let stderr_lower = url.stderr.to_lowercase();
    assert_eq!(
        url.output.status.code(),
        Some(class.code()),
        "{}",
        url.all()
    );
    assert!(
        url.stderr.contains("error:")
            && (stderr_lower.contains("unsupported") || stderr_lower.contains("not supported"))
            && stderr_lower.contains("signed-url"),
        "the error says the operation is unsupported:\n{}",
        url.all()
    );
    assert!(
        !url.stderr.contains("panicked") && !url.stderr.contains("wasm trap"),
        "{}",
        url.all()
    );
}

#[test]
fn a_refused_token_is_auth_required() {
    let s = Setup::new(&[("A", "a")]);
    s.notes.set_token("another-token");
    let run = s.run(&["sync"], &["--quiet"]);
    assert_eq!(
        run.output.status.code(),
        Some(ExitClass::AuthRequired.code()),
        "{}",
        run.all()
    );
}

/// A token for one run, from the environment, for a tenant that stored none: the same
/// variable whichever component runs.
#[test]
fn a_token_from_the_environment_serves_one_run() {
    let server = NotesServer::start(TOKEN).expect("the notes service starts");
    let id = server.create("Only", b"one");
    let dir = tempfile::tempdir().expect("a temp dir");
    let s = Setup {
        notes: server,
        db: dir.path().join("env.db"),
        _dir: dir,
    };
    let sync = Run::of(
        s.command(&["sync"], &["--json", "--quiet"])
            .env("HOST_TEST_ACCESS_TOKEN", TOKEN),
    )
    .ok()
    .json();
    assert_eq!(sync["created"], 1, "{sync}");
    assert_eq!(changes_after(&s, 0), expected(vec![("created", &id)]));
    // Nothing was stored: without the variable the tenant has no credentials.
    let run = s.run(&["sync"], &["--quiet"]);
    assert_eq!(
        run.output.status.code(),
        Some(ExitClass::AuthRequired.code()),
        "{}",
        run.all()
    );
}

/// `watch` keeps the tenant current: a change at the source reaches the store without anyone
/// running `sync`.
#[test]
fn watch_picks_up_a_change() {
    let s = Setup::new(&[("First", "1")]);
    s.sync();
    let before = s.last_event_seq();
    let created = s.notes.create("Second", b"2");

    let mut watch = WatchProcess::start(&s);
    // The store's last sync is recent, so the schedule's first sync comes one interval later.
    let line = watch.next_sync_line(Duration::from_secs(150));
    assert_eq!(line["result"], "ok", "{line}");
    assert_eq!(line["kind"], "incremental", "{line}");
    assert_eq!(line["created"], 1, "{line}");
    let stdout = watch.stop();
    assert!(!stdout.is_empty());
    assert_eq!(
        changes_after(&s, before),
        expected(vec![("created", &created)])
    );
    s.assert_store_matches_truth();
}

/// `host-test watch --json` for the tenant, its stdout read line by line on a thread.
struct WatchProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl WatchProcess {
    fn start(s: &Setup) -> WatchProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_host-test-cli"))
            .arg("--component")
            .arg(host_test::components::NOTES)
            .args(["watch", "--db"])
            .arg(&s.db)
            .args([
                "--tenant",
                TENANT,
                "--api-url",
                &s.notes.base_url(),
                "--interval",
                "1",
                "--json",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("watch starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        WatchProcess {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn next_sync_line(&mut self, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("no sync within {within:?}; stdout so far: {:?}", self.seen);
                }
            };
            self.seen.push(line.clone());
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                return value;
            }
        }
    }

    /// Ctrl-C, as a person stops it; the whole of what it printed.
    fn stop(mut self) -> Vec<String> {
        let interrupted = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(interrupted.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("watch did not stop after Ctrl-C");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.seen.extend(self.lines.try_iter());
        self.seen
    }
}

/// The notes service: a real HTTP/1.1 server on 127.0.0.1, one thread per connection.
///
/// API (every route needs `Authorization: Bearer <token>`, else 401):
/// - `GET /v1/me` -> `{"id", "email", "name"}`: the account.
/// - `GET /v1/notes?limit=<n>[&after=<id>]` -> the full listing: the live notes in id order,
///   after `after`, at most n: `{"notes": [{"id", "title", "size", "updated", "deleted",
///   "etag"}], "next", "has_more"}`, where `next` is the service's current change sequence.
/// - `GET /v1/notes?since=<seq>&limit=<n>` -> the change feed: every note changed after `seq`
///   (deleted ones too, `deleted: true`) in change order; `next` is the `since` of the next
///   page: the last note's `updated` when `has_more`, the current sequence otherwise. A `since`
///   older than the service's retention ([`NotesServer::forget_history`]) is 410 Gone.
/// - `GET /v1/notes/<id>/content` -> the bytes (text/plain), honouring
///   `Range: bytes=<first>-<last>` (206 with `Content-Range`), 404 for a deleted note.
mod fixture {
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::thread::JoinHandle;

    use serde_json::json;

    pub const ACCOUNT_EMAIL: &str = "owner@notes.example.test";

    /// A note as the service holds it.
    #[derive(Debug, Clone)]
    pub struct Note {
        pub id: String,
        pub title: String,
        pub content: Vec<u8>,
        /// The sequence number of its last change (creation, edit, deletion).
        pub updated: u64,
        pub deleted: bool,
        /// Changes with the content only.
        pub etag: String,
    }

    #[derive(Default)]
    struct State {
        token: String,
        /// The last sequence number handed out.
        seq: u64,
        next_id: u64,
        notes: BTreeMap<String, Note>,
        /// A `since` below this is 410 Gone: the changes up to it are forgotten, so only a
        /// position at or after it can still be followed.
        oldest_since: u64,
        gone_answers: u64,
    }

    impl State {
        fn bump(&mut self) -> u64 {
            self.seq += 1;
            self.seq
        }
    }

    pub struct NotesServer {
        state: Arc<Mutex<State>>,
        base_url: String,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl NotesServer {
        pub fn start(token: &str) -> std::io::Result<NotesServer> {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let base_url = format!("http://{}", listener.local_addr()?);
            let state = Arc::new(Mutex::new(State {
                token: token.to_string(),
                ..State::default()
            }));
            let stop = Arc::new(AtomicBool::new(false));
            let thread = {
                let (state, stop) = (state.clone(), stop.clone());
                std::thread::spawn(move || {
                    for stream in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(stream) = stream else { continue };
                        let state = state.clone();
                        std::thread::spawn(move || serve(stream, &state));
                    }
                })
            };
            Ok(NotesServer {
                state,
                base_url,
                stop,
                thread: Some(thread),
            })
        }

        pub fn base_url(&self) -> String {
            self.base_url.clone()
        }

        fn state(&self) -> MutexGuard<'_, State> {
            self.state.lock().unwrap_or_else(|e| e.into_inner())
        }

        pub fn create(&self, title: &str, content: &[u8]) -> String {
            let mut s = self.state();
            s.next_id += 1;
            let id = format!("n{:04}", s.next_id);
            let updated = s.bump();
            let note = Note {
                id: id.clone(),
                title: title.to_string(),
                content: content.to_vec(),
                updated,
                deleted: false,
                etag: format!("e{updated}"),
            };
            s.notes.insert(id.clone(), note);
            id
        }

        fn edit(&self, id: &str, change: impl FnOnce(&mut Note, u64)) {
            let mut s = self.state();
            let updated = s.bump();
            let note = s.notes.get_mut(id).expect("the note exists");
            assert!(!note.deleted, "{id} is deleted");
            note.updated = updated;
            change(note, updated);
        }

        pub fn set_title(&self, id: &str, title: &str) {
            self.edit(id, |n, _| n.title = title.to_string());
        }

        pub fn set_content(&self, id: &str, content: &[u8]) {
            self.edit(id, |n, updated| {
                n.content = content.to_vec();
                n.etag = format!("e{updated}");
            });
        }

        /// Deletes the note; the service keeps a tombstone until it forgets its history.
        pub fn delete(&self, id: &str) {
            self.edit(id, |n, _| {
                n.deleted = true;
                n.content.clear();
            });
        }

        /// Forget every change so far (tombstones included): a `since` older than the current
        /// sequence is now 410; the current sequence itself (nothing after it is lost) is not.
        pub fn forget_history(&self) {
            let mut s = self.state();
            s.notes.retain(|_, n| !n.deleted);
            s.oldest_since = s.seq;
        }

        pub fn set_token(&self, token: &str) {
            self.state().token = token.to_string();
        }

        /// How many requests were answered 410 Gone.
        pub fn gone_answers(&self) -> u64 {
            self.state().gone_answers
        }

        /// The live notes, by id.
        pub fn truth(&self) -> Vec<Note> {
            self.state()
                .notes
                .values()
                .filter(|n| !n.deleted)
                .cloned()
                .collect()
        }
    }

    impl Drop for NotesServer {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            // Wake the accept loop so it sees the flag.
            if let Some(addr) = self.base_url.strip_prefix("http://") {
                let _ = TcpStream::connect(addr);
            }
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    struct Request {
        method: String,
        path: String,
        query: BTreeMap<String, String>,
        headers: BTreeMap<String, String>,
    }

    struct Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Response {
        fn json(status: u16, value: serde_json::Value) -> Response {
            Response {
                status,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: value.to_string().into_bytes(),
            }
        }

        fn error(status: u16, message: &str) -> Response {
            Response::json(status, json!({ "error": message }))
        }
    }

    /// One request per connection (`Connection: close`): enough for a test service.
    fn serve(stream: TcpStream, state: &Mutex<State>) {
        let Ok(reader) = stream.try_clone() else {
            return;
        };
        let response = match read_request(&mut BufReader::new(reader)) {
            Some(request) => {
                let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                handle(&request, &mut s)
            }
            None => Response::error(400, "malformed request"),
        };
        let _ = write_response(stream, &response);
    }

    fn read_request(reader: &mut impl BufRead) -> Option<Request> {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let mut parts = line.split_whitespace();
        let method = parts.next()?.to_string();
        let target = parts.next()?.to_string();
        let mut headers = BTreeMap::new();
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).ok()?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':')?;
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let query = query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(Request {
            method,
            path: path.to_string(),
            query,
            headers,
        })
    }

    fn write_response(mut stream: TcpStream, response: &Response) -> std::io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
            response.status,
            response.body.len()
        );
        for (name, value) in &response.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(&response.body)?;
        stream.flush()
    }

    fn handle(request: &Request, s: &mut State) -> Response {
        let expected = format!("Bearer {}", s.token);
        if request.headers.get("authorization") != Some(&expected) {
            return Response::error(401, "invalid token");
        }
        if request.method != "GET" {
            return Response::error(405, "GET only");
        }
        let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
        match segments.as_slice() {
            ["v1", "me"] => Response::json(
                200,
                json!({"id": "acct-1", "email": ACCOUNT_EMAIL, "name": "Note Owner"}),
            ),
            ["v1", "notes"] => list(request, s),
            ["v1", "notes", id, "content"] => content(request, s, id),
            _ => Response::error(404, "no such route"),
        }
    }

    fn list(request: &Request, s: &mut State) -> Response {
        let limit = match request.query.get("limit").map(|l| l.parse::<usize>()) {
            None => 100,
            Some(Ok(n)) if n > 0 => n,
            Some(_) => return Response::error(400, "bad limit"),
        };
        let since = match request.query.get("since").map(|v| v.parse::<u64>()) {
            None => None,
            Some(Ok(seq)) => Some(seq),
            Some(Err(_)) => return Response::error(400, "bad since"),
        };
        if let Some(seq) = since
            && seq < s.oldest_since
        {
            s.gone_answers += 1;
            return Response::error(410, "since is older than the retained history");
        }
        let after = request.query.get("after");
        let mut changed: Vec<&Note> = s
            .notes
            .values()
            .filter(|n| match since {
                Some(seq) => n.updated > seq,
                // The full listing: what exists, in id order (the map's).
                None => !n.deleted && after.is_none_or(|a| &n.id > a),
            })
            .collect();
        if since.is_some() {
            changed.sort_by_key(|n| n.updated);
        }
        let has_more = changed.len() > limit;
        changed.truncate(limit);
        let next = match (since, changed.last()) {
            (Some(_), Some(last)) if has_more => last.updated,
            (Some(seq), _) => s.seq.max(seq),
            (None, _) => s.seq,
        };
        let notes: Vec<serde_json::Value> = changed
            .iter()
            .map(|n| {
                json!({
                    "id": n.id,
                    "title": n.title,
                    "size": n.content.len(),
                    "updated": n.updated,
                    "deleted": n.deleted,
                    "etag": n.etag,
                })
            })
            .collect();
        Response::json(
            200,
            json!({"notes": notes, "next": next, "has_more": has_more}),
        )
    }

    fn content(request: &Request, s: &State, id: &str) -> Response {
        let Some(note) = s.notes.get(id).filter(|n| !n.deleted) else {
            return Response::error(404, "no such note");
        };
        let total = note.content.len();
        let plain = |status, body: &[u8], extra: Option<(String, String)>| Response {
            status,
            headers: [("Content-Type".to_string(), "text/plain".to_string())]
                .into_iter()
                .chain(extra)
                .collect(),
            body: body.to_vec(),
        };
        let Some(range) = request.headers.get("range") else {
            return plain(200, &note.content, None);
        };
        // `bytes=<first>-<last>` (inclusive); nothing fancier is needed.
        let parsed = range.strip_prefix("bytes=").and_then(|r| {
            let (first, last) = r.split_once('-')?;
            let first: usize = first.parse().ok()?;
            let last: usize = if last.is_empty() {
                usize::MAX
            } else {
                last.parse().ok()?
            };
            Some((first, last))
        });
        match parsed {
            Some((first, last)) if first < total && first <= last => {
                let last = last.min(total - 1);
                plain(
                    206,
                    &note.content[first..=last],
                    Some((
                        "Content-Range".into(),
                        format!("bytes {first}-{last}/{total}"),
                    )),
                )
            }
            _ => plain(
                416,
                b"",
                Some(("Content-Range".into(), format!("bytes */{total}"))),
            ),
        }
    }
}
