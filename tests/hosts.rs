//! The connector component in foreign hosts: a Node.js host built on jco
//! (`tests/hosts/node/host.mjs`) and a Python host built on wasmtime-py
//! (`tests/hosts/python/host.py`), each driven the same way against the emulator. The contract
//! is the WIT, not this repository's wasmtime host: a platform written in another language must
//! be able to run the same component and get the same records.
//!
//! The driver protocol (one JSON object per line each way, over the host's stdin and stdout):
//! a command `{"op": ...}` is answered by `{"ok": value}` or
//! `{"err": {"kind": "<connector-error case>" | "host", "message": ...}}`. The commands are
//! `manifest`, `test-connection`, `sync`, `records`, `events`, `sync-status`,
//! `stream {id, out}`, `signed-url {id}`, `set-token {token}` and `quit`; every command that
//! calls the component runs it in a fresh instance, and the records store lives in the host
//! process (in memory).
//!
//! The hosts' pinned packages (jco and preview2-shim from `tests/hosts/node/package-lock.json`;
//! wasmtime from `tests/hosts/python/requirements.txt`) are installed once under
//! `<target>/foreign-hosts/` and reused while the pins are unchanged, so only the first run
//! needs the package registries. Node.js with npm, and Python 3 with pip, must be installed:
//! their absence fails these tests (it never skips them).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dropbox_emulator::{Content, Emulator, EmulatorConfig, Kind, TruthEntry};
use serde_json::{Value, json};

/// Files the emulator generates before the first sync.
const GENERATED_FILES: usize = 5_000;
/// The file that is streamed: larger than a Python host's 1 MiB body cap many times over, so
/// the connector must read it in ranges there.
const LARGE_FILE_LEN: u64 = 64 << 20;
const LARGE_FILE_SEED: u64 = 64;
/// How long one command may take before the host counts as hung.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

#[test]
fn node_host_runs_the_connector() {
    let node_path = install_node_packages();
    let host = ForeignHost {
        name: "node",
        program: "node".into(),
        script: workspace().join("tests/hosts/node/host.mjs"),
        extra_args: vec![],
        env: vec![("NODE_PATH".into(), node_path.into_os_string())],
    };
    run_scenario(&host);
}

/// The Node host's records store, case by case (`node --test`): rollback, two-phase removal,
/// replace, paths held only by live records, paging in UTF-8 byte order.
#[test]
fn node_records_store_follows_the_contract() {
    require_node();
    let out = Command::new("node")
        .arg("--test")
        .arg(workspace().join("tests/hosts/node/records.test.mjs"))
        .output()
        .expect("node runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && report.contains("# fail 0"),
        "the Node host's records store fails its tests:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn python_host_runs_the_connector() {
    let python_path = install_python_packages();
    let host = ForeignHost {
        name: "python",
        program: "python3".into(),
        script: workspace().join("tests/hosts/python/host.py"),
        // The smallest cap the contract allows: the connector must stream in 1 MiB ranges and
        // sink chunks of at most that.
        extra_args: vec!["--body-cap".into(), "1048576".into()],
        env: vec![("PYTHONPATH".into(), python_path.into_os_string())],
    };
    run_scenario(&host);
}

// --- the scenario, the same for every host ---------------------------------------------------

/// Paths the scenario changes between the full and the incremental sync (created before the
/// first sync, next to the generated tree).
mod paths {
    pub const MOVE_FROM: &str = "/Hosts/Move Me";
    pub const MOVE_CHILDREN: [&str; 3] = ["one.txt", "two.txt", "Sub/three.txt"];
    pub const MOVE_INTO: &str = "/Hosts/Moved Here";
    pub const MOVE_TO: &str = "/Hosts/Moved Here/Move Me";
    pub const DELETE: &str = "/Hosts/Delete Me.txt";
    pub const EDIT: &str = "/Hosts/Edit Me.txt";
    pub const RENAME_FROM: &str = "/Hosts/Rename Me.txt";
    pub const RENAME_TO: &str = "/Hosts/Renamed.txt";
    pub const CASE_FROM: &str = "/Hosts/case only.txt";
    pub const CASE_TO: &str = "/Hosts/CASE Only.TXT";
    pub const LARGE: &str = "/Hosts/Large/video.bin";
}

fn run_scenario(spec: &ForeignHost) {
    let emulator = Emulator::start(EmulatorConfig {
        files: GENERATED_FILES,
        seed: 17,
        // Case-only renames are reported by the change feed (the connector is tested on the
        // terse form elsewhere; here the hosts are under test).
        emit_case_only_renames: true,
        ..Default::default()
    })
    .expect("the emulator starts");
    let text = |s: &str| Content::Bytes(s.as_bytes().to_vec());
    for child in paths::MOVE_CHILDREN {
        emulator
            .create_file(&format!("{}/{child}", paths::MOVE_FROM), text(child))
            .expect("file created");
    }
    emulator
        .create_folder(paths::MOVE_INTO)
        .expect("folder created");
    for p in [
        paths::DELETE,
        paths::EDIT,
        paths::RENAME_FROM,
        paths::CASE_FROM,
    ] {
        emulator.create_file(p, text(p)).expect("file created");
    }
    let large = Content::Pattern {
        seed: LARGE_FILE_SEED,
        len: LARGE_FILE_LEN,
    };
    emulator
        .create_file(paths::LARGE, large.clone())
        .expect("large file created");

    let mut host = spec.start(
        &component_path(),
        &emulator.base_url(),
        &emulator.access_token(),
    );
    let name = spec.name;

    // manifest
    let manifest = host.ok(json!({"op": "manifest"}));
    assert!(
        manifest["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("dropbox")),
        "{name}: {manifest}"
    );
    let allowed: Vec<&str> = manifest["allowed_hosts"]
        .as_array()
        .expect("allowed_hosts is a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        allowed.contains(&"api.dropboxapi.com"),
        "{name}: {manifest}"
    );

    // test-connection
    let user = host.ok(json!({"op": "test-connection"}));
    assert_eq!(user["external_id"], emulator.account_id(), "{name}: {user}");
    assert_eq!(user["email"], emulator.email(), "{name}: {user}");

    // full sync
    let started = Instant::now();
    let full = host.ok(json!({"op": "sync"}));
    let full_secs = started.elapsed().as_secs_f64();
    assert_eq!(full["kind"], "full", "{name}: {full}");
    assert_eq!(full["interrupted"], false, "{name}: {full}");
    let truth = emulator.truth();
    let records = host.records();
    assert_matches_truth(name, &truth, &records);
    let events = host.events();
    assert_events_replay(name, &events, &records);
    assert_eq!(
        count(&events, "created"),
        truth.len(),
        "{name}: one created event per item after a full sync"
    );
    let status = host.ok(json!({"op": "sync-status"}));
    assert_eq!(status["phase"], "current", "{name}: {status}");
    println!(
        "{name} host: full sync of {} items ({} entries, {} pages, {} API calls) in {full_secs:.2} s",
        truth.len(),
        full["entries"],
        full["pages"],
        full["api_calls"],
    );

    // changes: a folder move, a delete, an edit, a rename, a case-only rename
    let id_at = |p: &str| id_of(&records, p);
    let mut expected: BTreeMap<String, &[&str]> = BTreeMap::new();
    const METADATA: &[&str] = &["metadata"];
    // An edit changes the content (and the modification time, which a connector may count
    // as metadata too).
    const CONTENT: &[&str] = &["content", "content-and-metadata"];
    const DELETED: &[&str] = &["deleted"];
    expected.insert(id_at(paths::MOVE_FROM), METADATA);
    for child in paths::MOVE_CHILDREN {
        expected.insert(id_at(&format!("{}/{child}", paths::MOVE_FROM)), METADATA);
    }
    // The folder holding a moved file is a record too.
    expected.insert(id_at(&format!("{}/Sub", paths::MOVE_FROM)), METADATA);
    expected.insert(id_at(paths::DELETE), DELETED);
    expected.insert(id_at(paths::EDIT), CONTENT);
    expected.insert(id_at(paths::RENAME_FROM), METADATA);
    expected.insert(id_at(paths::CASE_FROM), METADATA);
    emulator
        .move_path(paths::MOVE_FROM, paths::MOVE_TO)
        .expect("folder moved");
    emulator.delete(paths::DELETE).expect("file deleted");
    emulator
        .modify_file(paths::EDIT, text("edited"))
        .expect("file edited");
    emulator
        .move_path(paths::RENAME_FROM, paths::RENAME_TO)
        .expect("file renamed");
    emulator
        .move_path(paths::CASE_FROM, paths::CASE_TO)
        .expect("case-only rename");

    // incremental sync
    let last_seq = events.last().map_or(0, |e| e.seq);
    let incremental = host.ok(json!({"op": "sync"}));
    assert_eq!(incremental["kind"], "incremental", "{name}: {incremental}");
    let truth = emulator.truth();
    let records = host.records();
    assert_matches_truth(name, &truth, &records);
    let events = host.events();
    assert_events_replay(name, &events, &records);
    let new_events: Vec<&Event> = events.iter().filter(|e| e.seq > last_seq).collect();
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for e in &new_events {
        if let Some(earlier) = seen.insert(&e.external_id, &e.kind) {
            panic!(
                "{name}: two events for {} in one sync ({earlier}, then {}): {new_events:#?}",
                e.external_id, e.kind
            );
        }
    }
    for (id, kinds) in &expected {
        let got = seen.get(id.as_str());
        assert!(
            got.is_some_and(|k| kinds.contains(k)),
            "{name}: {id} should have one event of {kinds:?}, got {got:?}: {new_events:#?}"
        );
    }
    let unexpected: Vec<_> = new_events
        .iter()
        .filter(|e| !expected.contains_key(&e.external_id))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{name}: events no change implies: {unexpected:#?}"
    );
    assert_eq!(incremental["deletions"], 1, "{name}: {incremental}");

    // stream the large file, twice: the first run of a fresh host includes the engine's
    // compilation of the hot code (V8 tiers up as it runs), the second shows the steady rate
    let large_id = id_of(&records, paths::LARGE);
    let published_hash = truth
        .iter()
        .find(|t| t.path_display == paths::LARGE)
        .and_then(|t| t.content_hash.clone())
        .expect("the emulator publishes the large file's content hash");
    assert_eq!(published_hash, large.content_hash());
    let expected_bytes = large.to_bytes();
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut rates = Vec::new();
    for run in ["first", "second"] {
        let out = dir.path().join(format!("large-{run}.bin"));
        let streamed = host.ok(json!({"op": "stream", "id": large_id, "out": out}));
        assert_eq!(streamed["size"], LARGE_FILE_LEN, "{name}: {streamed}");
        assert_eq!(
            streamed["content_hash"], published_hash,
            "{name}: {streamed}"
        );
        assert_eq!(streamed["verified"], true, "{name}: {streamed}");
        let written = std::fs::read(&out).expect("the streamed file");
        assert!(
            written == expected_bytes,
            "{name}: the streamed bytes differ from the file's ({} bytes written)",
            written.len()
        );
        let seconds = streamed["seconds"].as_f64().expect("seconds is a number");
        rates.push(format!(
            "{run} {seconds:.2} s ({:.0} MiB/s)",
            (LARGE_FILE_LEN >> 20) as f64 / seconds
        ));
    }
    println!(
        "{name} host: streamed {} MiB: {}",
        LARGE_FILE_LEN >> 20,
        rates.join(", ")
    );

    // a signed URL serves the same bytes without credentials
    let signed = host.ok(json!({"op": "signed-url", "id": large_id}));
    let url = signed["url"].as_str().expect("url is a string");
    let (status, body) = http_get(&route_to_emulator(url, &emulator.base_url()));
    assert_eq!(status, 200, "{name}: GET {url}");
    assert!(
        body == expected_bytes,
        "{name}: the signed URL served other bytes ({} bytes)",
        body.len()
    );

    // a revoked token: the connector says the user must connect again
    emulator.revoke_all();
    let revoked = host.call(json!({"op": "sync"}));
    match &revoked {
        Reply::Err { kind, .. } => assert_eq!(kind, "auth-required", "{name}: {revoked:?}"),
        Reply::Ok(v) => panic!("{name}: sync with a revoked token succeeded: {v}"),
    }
    // ... and a new token is used at once, with nothing lost.
    host.ok(json!({"op": "set-token", "token": emulator.access_token()}));
    let again = host.ok(json!({"op": "sync"}));
    assert_eq!(again["kind"], "incremental", "{name}: {again}");
    assert_matches_truth(name, &emulator.truth(), &host.records());

    host.quit();
}

// --- comparisons ------------------------------------------------------------------------------

/// A record as the hosts print it (`records` command).
#[derive(Debug, Clone)]
struct Record(Value);

impl Record {
    fn str(&self, field: &str) -> Option<&str> {
        self.0[field].as_str()
    }
    fn id(&self) -> &str {
        self.str("external_id").unwrap_or_default()
    }
}

#[derive(Debug)]
struct Event {
    seq: u64,
    external_id: String,
    kind: String,
}

fn id_of(records: &[Record], path_display: &str) -> String {
    records
        .iter()
        .find(|r| r.str("path_display") == Some(path_display))
        .unwrap_or_else(|| panic!("no record at {path_display}"))
        .id()
        .to_string()
}

fn count(events: &[Event], kind: &str) -> usize {
    events.iter().filter(|e| e.kind == kind).count()
}

/// Every live item of the account is a record with the same fields, and nothing else is
/// (the comparison of tests/support's `diff_with_truth`, over the hosts' JSON, plus
/// `client_modified`).
fn assert_matches_truth(host: &str, truth: &[TruthEntry], records: &[Record]) {
    let by_path: HashMap<&str, &TruthEntry> =
        truth.iter().map(|t| (t.path_lower.as_str(), t)).collect();
    let stored: BTreeMap<&str, &Record> = records.iter().map(|r| (r.id(), r)).collect();
    let expected: BTreeSet<&str> = truth.iter().map(|t| t.id.as_str()).collect();
    let mut diffs = Vec::new();
    for t in truth {
        let Some(r) = stored.get(t.id.as_str()) else {
            diffs.push(format!("missing {} {}", t.id, t.path_display));
            continue;
        };
        let parent = t
            .path_lower
            .rfind('/')
            .filter(|&i| i > 0)
            .and_then(|i| by_path.get(&t.path_lower[..i]))
            .map(|p| p.id.as_str());
        let kind = match t.kind {
            Kind::File => "file",
            Kind::Folder => "folder",
        };
        let checks: [(&str, Value, &Value); 12] = [
            ("path_lower", json!(t.path_lower), &r.0["path_lower"]),
            ("path_display", json!(t.path_display), &r.0["path_display"]),
            ("name", json!(t.name), &r.0["name"]),
            ("kind", json!(kind), &r.0["kind"]),
            ("revision", json!(t.rev), &r.0["revision"]),
            ("size", json!(t.size), &r.0["size"]),
            ("content_hash", json!(t.content_hash), &r.0["content_hash"]),
            (
                "parent_external_id",
                json!(parent),
                &r.0["parent_external_id"],
            ),
            (
                "is_downloadable",
                json!(t.is_downloadable),
                &r.0["is_downloadable"],
            ),
            ("shared_url", json!(t.shared_url), &r.0["shared_url"]),
            (
                "server_modified",
                json!(t.server_modified),
                &r.0["server_modified"],
            ),
            (
                "client_modified",
                json!(t.client_modified),
                &r.0["client_modified"],
            ),
        ];
        for (field, want, got) in checks {
            if &want != got {
                diffs.push(format!(
                    "{} {}: {field} expected {want}, stored {got}",
                    t.id, t.path_display
                ));
            }
        }
    }
    for (id, r) in &stored {
        if !expected.contains(id) {
            diffs.push(format!("unexpected {id} {:?}", r.str("path_display")));
        }
    }
    assert!(
        diffs.is_empty(),
        "{host}: {} records differ from the account:\n{}",
        diffs.len(),
        diffs
            .iter()
            .take(50)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Replaying the event stream from the start gives exactly the live records: each created
/// once, updated and deleted only while known.
fn assert_events_replay(host: &str, events: &[Event], records: &[Record]) {
    let mut live: BTreeSet<&str> = BTreeSet::new();
    let mut last_seq = 0;
    for e in events {
        assert!(
            e.seq > last_seq,
            "{host}: event sequence not increasing at {e:?}"
        );
        last_seq = e.seq;
        let id = e.external_id.as_str();
        match e.kind.as_str() {
            "created" => assert!(live.insert(id), "{host}: {id} created twice (#{})", e.seq),
            "deleted" => assert!(
                live.remove(id),
                "{host}: {id} deleted but unknown (#{})",
                e.seq
            ),
            "content" | "metadata" | "content-and-metadata" => {
                assert!(
                    live.contains(id),
                    "{host}: update of unknown {id} (#{})",
                    e.seq
                )
            }
            other => panic!("{host}: unknown event kind {other:?}"),
        }
    }
    let stored: BTreeSet<&str> = records.iter().map(Record::id).collect();
    assert_eq!(
        live, stored,
        "{host}: the event stream and the store disagree"
    );
}

// --- the host process -------------------------------------------------------------------------

struct ForeignHost {
    name: &'static str,
    program: String,
    script: PathBuf,
    extra_args: Vec<String>,
    env: Vec<(String, std::ffi::OsString)>,
}

#[derive(Debug)]
enum Reply {
    Ok(Value),
    Err { kind: String, message: String },
}

/// A running host: commands go to its stdin; a thread reads its stdout line by line (so a hung
/// host fails the test after `COMMAND_TIMEOUT` instead of hanging it), another keeps its stderr
/// for failure messages.
struct RunningHost {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<std::io::Result<String>>,
    stderr: Arc<Mutex<String>>,
}

impl ForeignHost {
    fn start(&self, component: &Path, api_base: &str, token: &str) -> RunningHost {
        let mut command = Command::new(&self.program);
        command
            .arg(&self.script)
            .arg("--component")
            .arg(component)
            .args(["--api-base", api_base, "--token", token])
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "{}: cannot start `{} {}`: {e}",
                self.name,
                self.program,
                self.script.display()
            )
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut child_stderr = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = child_stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
                // Keep the tail: a long sync logs a lot.
                if s.len() > 64 * 1024 {
                    let cut = s.len() - 32 * 1024;
                    let cut = (cut..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                    s.drain(..cut);
                }
            }
        });
        RunningHost {
            name: self.name,
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
        }
    }
}

impl RunningHost {
    fn stderr_tail(&self) -> String {
        let s = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        let start = s.len().saturating_sub(4000);
        let start = (start..s.len())
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        s[start..].to_string()
    }

    fn call(&mut self, command: Value) -> Reply {
        let name = self.name;
        let stdin = self.stdin.as_mut().expect("the host's stdin is open");
        if let Err(e) = writeln!(stdin, "{command}").and_then(|()| stdin.flush()) {
            panic!(
                "{name}: cannot send {command}: {e}; the host's stderr:\n{}",
                self.stderr_tail()
            );
        }
        let line = match self.lines.recv_timeout(COMMAND_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => panic!("{name}: reading the reply to {command}: {e}"),
            Err(RecvTimeoutError::Timeout) => panic!(
                "{name}: no reply to {command} within {COMMAND_TIMEOUT:?}; the host's stderr:\n{}",
                self.stderr_tail()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                // Let the stderr reader catch up with the host's last words.
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "{name}: the host exited before answering {command}; its stderr:\n{}",
                    self.stderr_tail()
                )
            }
        };
        let reply: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{name}: the reply to {command} is not JSON ({e}): {line}"));
        if let Some(value) = reply.get("ok") {
            return Reply::Ok(value.clone());
        }
        match reply.get("err") {
            Some(err) => Reply::Err {
                kind: err["kind"].as_str().unwrap_or_default().to_string(),
                message: err["message"].as_str().unwrap_or_default().to_string(),
            },
            None => panic!("{name}: a reply without ok or err: {line}"),
        }
    }

    /// The command's value; a failure fails the test with the host's message and stderr.
    fn ok(&mut self, command: Value) -> Value {
        match self.call(command.clone()) {
            Reply::Ok(value) => value,
            Reply::Err { kind, message } => panic!(
                "{}: {command} failed: {kind}: {message}\nthe host's stderr:\n{}",
                self.name,
                self.stderr_tail()
            ),
        }
    }

    fn records(&mut self) -> Vec<Record> {
        match self.ok(json!({"op": "records"})) {
            Value::Array(items) => items.into_iter().map(Record).collect(),
            other => panic!("{}: records is not a list: {other}", self.name),
        }
    }

    fn events(&mut self) -> Vec<Event> {
        let Value::Array(items) = self.ok(json!({"op": "events"})) else {
            panic!("{}: events is not a list", self.name);
        };
        items
            .iter()
            .map(|e| Event {
                seq: e["seq"].as_u64().expect("seq is a number"),
                external_id: e["external_id"].as_str().expect("external_id").to_string(),
                kind: e["kind"].as_str().expect("kind").to_string(),
            })
            .collect()
    }

    fn quit(mut self) {
        let reply = self.call(json!({"op": "quit"}));
        assert!(
            matches!(reply, Reply::Ok(Value::Null)),
            "{}: quit: {reply:?}",
            self.name
        );
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    assert!(status.success(), "{}: exited with {status}", self.name);
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                other => panic!("{}: did not exit after quit: {other:?}", self.name),
            }
        }
    }
}

impl Drop for RunningHost {
    fn drop(&mut self) {
        // A failed test must not leave the host running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// --- a URL the connector hands out ------------------------------------------------------------

/// Where to fetch a signed URL: a link on the emulator as it is; a link on a Dropbox host goes
/// to the emulator's base URL, as the hosts route the connector's own requests.
fn route_to_emulator(url: &str, base: &str) -> String {
    let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("signed URL {url}: {e}"));
    let base_url = url::Url::parse(base).expect("the emulator's base URL");
    if parsed.host_str() == base_url.host_str()
        && parsed.port_or_known_default() == base_url.port_or_known_default()
    {
        return url.to_string();
    }
    let mut routed = base_url.clone();
    routed.set_path(parsed.path());
    routed.set_query(parsed.query());
    routed.to_string()
}

/// One plain HTTP/1.1 GET (the emulator answers with Content-Length bodies).
fn http_get(url: &str) -> (u16, Vec<u8>) {
    let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(
        parsed.scheme(),
        "http",
        "only the emulator's plain HTTP is fetched: {url}"
    );
    let host = parsed.host_str().expect("a host");
    let port = parsed.port_or_known_default().expect("a port");
    let mut target = parsed.path().to_string();
    if let Some(q) = parsed.query() {
        target.push('?');
        target.push_str(q);
    }
    let mut stream = TcpStream::connect((host, port)).unwrap_or_else(|e| panic!("{url}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("a read timeout");
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    )
    .expect("request sent");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("response read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"));
    for line in head.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        assert_ne!(
            name, "transfer-encoding",
            "chunked responses are not expected: {head}"
        );
        if name == "content-length" {
            let len: usize = value.trim().parse().expect("a numeric Content-Length");
            assert!(
                body.len() >= len,
                "a truncated body: {} of {len} bytes",
                body.len()
            );
            body.truncate(len);
        }
    }
    (status, body)
}

// --- the component and the packages -----------------------------------------------------------

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn component_path() -> PathBuf {
    PathBuf::from(host_test::components::DROPBOX)
}

/// `CARGO_TARGET_DIR` (relative to the workspace when relative), or `<workspace>/target`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace().join(dir),
        None => workspace().join("target"),
    }
}

/// Run a tool that must exist; fail with what to install when it does not.
fn require_tool(program: &str, args: &[&str], what: &str) -> String {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(out) => panic!(
            "`{program} {}` failed ({}): {}\n{what}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("`{program}` cannot be run ({e}).\n{what}"),
    }
}

/// Install `files` (copied from `source`) with `install` into `dir`, unless the same pins are
/// installed there already (a copy of the pin file, written last, says so).
fn install_once(
    what: &str,
    dir: &Path,
    pin_file: &Path,
    copy: &[&Path],
    install: impl FnOnce(&Path) -> Command,
) {
    let pins = std::fs::read(pin_file).unwrap_or_else(|e| panic!("{}: {e}", pin_file.display()));
    let marker = dir.join(".installed-pins");
    if std::fs::read(&marker).is_ok_and(|installed| installed == pins) {
        return;
    }
    // Pins changed (or a previous install was interrupted): start clean.
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for file in copy {
        let name = file.file_name().expect("a file name");
        std::fs::copy(file, dir.join(name)).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
    let mut command = install(dir);
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("installing the {what} packages: {command:?}: {e}"));
    assert!(
        out.status.success(),
        "installing the {what} packages failed ({command:?}, {}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&marker, pins).unwrap_or_else(|e| panic!("{}: {e}", marker.display()));
}

/// Node.js 20 or later, or a failure that says what to install.
fn require_node() {
    let version = require_tool(
        "node",
        &["--version"],
        "The Node host test needs Node.js 20 or later with npm (e.g. `apt-get install nodejs npm`).",
    );
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 20,
        "the Node host needs Node.js 20 or later, found {version}"
    );
}

/// jco and preview2-shim, as `tests/hosts/node/package-lock.json` pins them; returns the
/// folder for NODE_PATH.
fn install_node_packages() -> PathBuf {
    require_node();
    require_tool(
        "npm",
        &["--version"],
        "The Node host test needs npm to install jco.",
    );
    let source = workspace().join("tests/hosts/node");
    let dir = target_dir().join("foreign-hosts/node");
    let lock = source.join("package-lock.json");
    install_once(
        "Node",
        &dir,
        &lock,
        &[&source.join("package.json"), &lock],
        |dir| {
            let mut npm = Command::new("npm");
            npm.current_dir(dir)
                .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"]);
            npm
        },
    );
    dir.join("node_modules")
}

/// wasmtime-py, as `tests/hosts/python/requirements.txt` pins it; returns the folder for
/// PYTHONPATH.
fn install_python_packages() -> PathBuf {
    require_tool(
        "python3",
        &["--version"],
        "The Python host test needs Python 3 with pip (e.g. `apt-get install python3 python3-pip`).",
    );
    require_tool(
        "python3",
        &["-m", "pip", "--version"],
        "The Python host test needs pip (e.g. `apt-get install python3-pip`).",
    );
    let requirements = workspace().join("tests/hosts/python/requirements.txt");
    let dir = target_dir().join("foreign-hosts/python");
    install_once("Python", &dir, &requirements, &[], |dir| {
        let mut pip = Command::new("python3");
        pip.args([
            "-m",
            "pip",
            "install",
            "--no-input",
            "--disable-pip-version-check",
            "--target",
        ])
        .arg(dir)
        .arg("-r")
        .arg(&requirements);
        pip
    });
    dir
}
