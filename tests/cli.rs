//! The command line as an operator or a script runs it: a child process against the built-in
//! emulator. One exit code per class of failure (README, "Exit codes"), JSON output that
//! parses with --json and words without it, and no progress noise when standard error is not
//! a terminal.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use dropbox_emulator::{Content, Emulator, EmulatorConfig, Fault, FaultKind};
use host_test::cli::ExitClass;
use host_test::store::{RecordStore, SqliteStore};
use serde_json::Value;

const TENANT: &str = "t";

/// An emulator, a database in a fresh directory, and the CLI pointed at both.
struct Setup {
    emulator: Emulator,
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

    fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    fn all(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code(),
            self.stdout,
            self.stderr
        )
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
    fn new(files: usize, seed: u64) -> Setup {
        let emulator = Emulator::start(EmulatorConfig {
            files,
            seed,
            ..Default::default()
        })
        .expect("the emulator starts");
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("cli.db");
        Setup {
            emulator,
            _dir: dir,
            db,
        }
    }

    /// `host-test <command> --db .. --tenant t --api-url .. <rest>`, with no token from the
    /// environment and no standard input.
    fn command(&self, command: &[&str], rest: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_host-test-cli"));
        cmd.args(command)
            .arg("--db")
            .arg(&self.db)
            .args(["--tenant", TENANT, "--api-url", &self.emulator.base_url()])
            .args(rest)
            .env_remove("DROPBOX_ACCESS_TOKEN")
            .stdin(Stdio::null());
        cmd
    }

    /// [`Setup::command`], run to its end, with the emulator's token in DROPBOX_ACCESS_TOKEN
    /// when `env_token`.
    fn run(&self, command: &[&str], rest: &[&str], env_token: bool) -> Run {
        let mut cmd = self.command(command, rest);
        if env_token {
            cmd.env("DROPBOX_ACCESS_TOKEN", self.emulator.access_token());
        }
        Run::of(&mut cmd)
    }

    /// As [`Setup::run`], with one environment variable set.
    fn run_with_env(&self, command: &[&str], rest: &[&str], (key, value): (&str, &str)) -> Run {
        Run::of(self.command(command, rest).env(key, value))
    }

    /// `host-test events --db .. <rest>` (no --api-url: it reads the store only).
    fn events(&self, rest: &[&str]) -> Run {
        Run::of(
            Command::new(env!("CARGO_BIN_EXE_host-test-cli"))
                .arg("events")
                .arg("--db")
                .arg(&self.db)
                .args(rest)
                .stdin(Stdio::null()),
        )
    }

    fn sync(&self, rest: &[&str]) -> Run {
        self.run(&["sync"], rest, true)
    }

    fn synced(&self) {
        let run = self.sync(&["--quiet"]);
        assert!(run.output.status.success(), "{}", run.all());
    }
}

fn assert_class(what: &str, run: &Run, class: ExitClass) {
    assert_eq!(
        run.code(),
        Some(class.code()),
        "{what}: expected exit code {} ({}):\n{}",
        class.code(),
        class.name(),
        run.all()
    );
    assert!(
        run.stderr.contains("error:"),
        "{what}: the error is said on stderr:\n{}",
        run.all()
    );
}

#[test]
fn exit_codes_are_stable_and_distinct() {
    // The numbers are a contract with scripts and service managers: README, "Exit codes".
    let table = [
        (ExitClass::Failure, 1),
        (ExitClass::Usage, 2),
        (ExitClass::AuthRequired, 3),
        (ExitClass::RateLimited, 4),
        (ExitClass::Transient, 5),
        (ExitClass::InvalidConfig, 6),
        (ExitClass::NotFound, 7),
        (ExitClass::Integrity, 8),
        (ExitClass::Internal, 9),
        (ExitClass::Unsupported, 10),
        (ExitClass::Busy, 11),
    ];
    for (class, code) in table {
        assert_eq!(class.code(), code, "{class:?}");
    }
    assert_eq!(ExitClass::ALL.len(), table.len());
    // `--help` lists them.
    let help = Command::new(env!("CARGO_BIN_EXE_host-test-cli"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for (class, code) in table {
        assert!(
            help.contains(&format!("{code}  {}", class.name())),
            "{help}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let s = Setup::new(3, 1);
    assert_class(
        "unknown flag",
        &s.run(&["sync"], &["--no-such-flag"], true),
        ExitClass::Usage,
    );
    // `connect` with no token given anywhere.
    assert_class(
        "connect without a token",
        &s.run(&["connect"], &[], false),
        ExitClass::Usage,
    );
}

#[test]
fn a_revoked_token_is_auth_required_and_so_is_a_tenant_that_needs_reauthentication() {
    let s = Setup::new(10, 2);
    let token = s.emulator.access_token();
    let connect = s.run(&["connect"], &["--access-token", &token], false);
    assert!(connect.output.status.success(), "{}", connect.all());
    s.emulator.revoke_all();

    let first = s.run(&["sync"], &["--quiet"], false);
    assert_class("revoked token", &first, ExitClass::AuthRequired);
    let status = s.run(&["status"], &["--json"], false).json();
    assert_eq!(status["needs_reauthentication"], true, "{status}");
    // The tenant is flagged: every run says the same until it is authorized again.
    let again = s.run(&["sync"], &["--quiet"], false);
    assert_class(
        "tenant needing re-authentication",
        &again,
        ExitClass::AuthRequired,
    );
    // No credentials at all: the same class.
    let none = Setup::new(3, 3);
    let run = none.run(&["sync"], &["--quiet"], false);
    assert_class("no credentials", &run, ExitClass::AuthRequired);
    // A token for one run that Dropbox refuses: the same class.
    let token = none.emulator.access_token();
    none.emulator.revoke_all();
    let run = none.run_with_env(&["sync"], &["--quiet"], ("DROPBOX_ACCESS_TOKEN", &token));
    assert_class(
        "a revoked token for this run",
        &run,
        ExitClass::AuthRequired,
    );
}

#[test]
fn a_rate_limit_beyond_the_cap_is_rate_limited() {
    let s = Setup::new(5, 4);
    s.emulator.inject(Fault {
        route: Some("users/get_current_account".into()),
        skip: 0,
        count: 1000,
        kind: FaultKind::RateLimitJson {
            retry_after: 3600,
            reason: "too_many_requests".into(),
            include_field: true,
        },
    });
    let run = s.sync(&["--quiet"]);
    assert_class("429 retry_after 3600", &run, ExitClass::RateLimited);
}

#[test]
fn server_errors_past_the_retries_are_transient() {
    let s = Setup::new(5, 5);
    s.emulator.inject(Fault {
        route: Some("users/get_current_account".into()),
        skip: 0,
        count: 1000,
        kind: FaultKind::Status(503),
    });
    let run = s.sync(&["--quiet"]);
    assert_class("503 every time", &run, ExitClass::Transient);
}

#[test]
fn a_setting_out_of_bounds_is_invalid_configuration() {
    let s = Setup::new(5, 6);
    let run = s.run(&["config"], &["set", "batch_size", "0"], false);
    assert_class("config set batch_size 0", &run, ExitClass::InvalidConfig);
    let run = s.run(&["config"], &["set", "colour", "blue"], false);
    assert_class("an unknown setting", &run, ExitClass::InvalidConfig);
    let run = s.run(&["config"], &["get", "colour"], false);
    assert_class(
        "config get of an unknown setting",
        &run,
        ExitClass::InvalidConfig,
    );

    // A bad value already in the database (written by something else than the CLI).
    SqliteStore::open(&s.db)
        .unwrap()
        .set_setting(TENANT, "batch_size", "0")
        .unwrap();
    let run = s.sync(&["--quiet"]);
    assert_class(
        "a stored setting out of bounds",
        &run,
        ExitClass::InvalidConfig,
    );
}

#[test]
fn an_unknown_record_is_not_found() {
    let s = Setup::new(5, 7);
    s.synced();
    let run = s.run(&["cat"], &["id:doesnotexist"], true);
    assert_class("cat id:doesnotexist", &run, ExitClass::NotFound);
    let run = s.run(&["cat"], &["/no/such/file.txt"], true);
    assert_class("cat of a path nobody has", &run, ExitClass::NotFound);
}

#[test]
fn corrupted_content_is_an_integrity_failure() {
    let s = Setup::new(0, 8);
    s.emulator
        .create_file(
            "/doc.txt",
            Content::Bytes(b"the content, verified\n".to_vec()),
        )
        .unwrap();
    // `cat` reads the stored credentials (DROPBOX_ACCESS_TOKEN is for `sync` only).
    let token = s.emulator.access_token();
    let connect = s.run(&["connect"], &["--access-token", &token], false);
    assert!(connect.output.status.success(), "{}", connect.all());
    s.synced();
    let ok = s.run(&["cat"], &["/doc.txt"], false);
    assert!(ok.output.status.success(), "{}", ok.all());
    s.emulator.inject(Fault {
        route: Some("files/download".into()),
        skip: 0,
        count: 1000,
        kind: FaultKind::CorruptByte,
    });
    let run = s.run(&["cat"], &["/doc.txt"], false);
    assert_class("a flipped byte", &run, ExitClass::Integrity);
}

#[test]
fn a_malformed_answer_is_internal() {
    let s = Setup::new(5, 9);
    s.emulator.inject(Fault {
        route: Some("files/list_folder".into()),
        skip: 0,
        count: 1000,
        kind: FaultKind::MalformedJson,
    });
    let run = s.sync(&["--quiet"]);
    assert_class("malformed JSON listing", &run, ExitClass::Internal);
}

#[test]
fn sync_json_is_the_summary_and_default_output_is_words() {
    let s = Setup::new(40, 10);
    let items = s.emulator.truth().len() as u64;

    let first = s.sync(&["--json"]);
    assert!(first.output.status.success(), "{}", first.all());
    let summary = first.json();
    assert_eq!(summary["tenant"], TENANT);
    assert_eq!(summary["kind"], "full");
    assert_eq!(summary["created"], items, "{summary}");
    assert!(summary["entries"].as_u64().unwrap() >= items, "{summary}");
    assert!(summary["pages"].as_u64().unwrap() >= 1, "{summary}");
    assert!(summary["api_calls"].as_u64().unwrap() >= 1, "{summary}");
    for zero in ["content_updates", "metadata_updates", "deletions"] {
        assert_eq!(summary[zero], 0, "{zero}: {summary}");
    }
    assert_eq!(summary["interrupted"], false);
    assert!(summary["elapsed_secs"].as_f64().unwrap() > 0.0);

    s.emulator
        .create_file("/new.txt", Content::Bytes(b"new".to_vec()))
        .unwrap();
    let second = s.sync(&["--json"]);
    let summary = second.json();
    assert_eq!(summary["kind"], "incremental", "{summary}");
    assert_eq!(summary["created"], 1, "{summary}");

    // Without --json: a sentence, no Rust names, no JSON.
    s.emulator
        .create_file("/newer.txt", Content::Bytes(b"newer".to_vec()))
        .unwrap();
    let words = s.sync(&[]);
    assert!(words.output.status.success(), "{}", words.all());
    assert!(
        words.stdout.starts_with("Incremental sync of t: "),
        "{}",
        words.all()
    );
    assert!(words.stdout.contains("1 created"), "{}", words.all());
    assert!(!words.all().contains("SyncKind"), "{}", words.all());
    assert!(!words.all().contains("::"), "{}", words.all());
    assert!(serde_json::from_str::<Value>(&words.stdout).is_err());
}

#[test]
fn records_and_events_are_text_by_default_and_json_lines_with_json() {
    let s = Setup::new(25, 11);
    s.synced();
    let truth = s.emulator.truth();

    let json = s.run(&["records"], &["--json"], false);
    assert!(json.output.status.success(), "{}", json.all());
    let records = json.json_lines();
    assert_eq!(records.len(), truth.len());
    for (record, t) in records.iter().zip(&truth) {
        assert_eq!(record["id"], t.id.as_str());
        assert_eq!(record["path_lower"], t.path_lower.as_str());
        assert!(record["permissions"].is_array(), "{record}");
    }

    let text = s.run(&["records"], &[], false);
    assert!(text.output.status.success(), "{}", text.all());
    assert_eq!(text.stdout.lines().count(), truth.len(), "{}", text.all());
    for (line, t) in text.stdout.lines().zip(&truth) {
        assert!(
            serde_json::from_str::<Value>(line).is_err(),
            "default records output is not JSON: {line}"
        );
        assert!(line.contains(&t.id), "{line}");
        assert!(
            line.starts_with("file ") || line.starts_with("folder "),
            "{line}"
        );
    }

    let events = s.events(&["--tenant", TENANT, "--json"]);
    assert!(events.output.status.success(), "{}", events.all());
    let events = events.json_lines();
    assert_eq!(events.len(), truth.len(), "one creation per item");
    assert!(
        events
            .iter()
            .all(|e| e["seq"].is_i64() && e["kind"].is_string())
    );
    let text = s.events(&["--tenant", TENANT]);
    assert_eq!(text.stdout.lines().count(), truth.len());
    assert!(
        text.stdout
            .lines()
            .all(|l| l.starts_with('#') && serde_json::from_str::<Value>(l).is_err()),
        "{}",
        text.all()
    );
}

#[test]
fn status_and_config_print_json_with_json() {
    let s = Setup::new(5, 12);
    s.synced();
    let status = s.run(&["status"], &["--json"], false).json();
    assert_eq!(status["tenant"], TENANT);
    assert_eq!(status["records"], s.emulator.truth().len() as u64);
    // The connector's own word on its position (never the position itself): current after a
    // completed sync.
    assert_eq!(status["sync_status"]["phase"], "current", "{status}");

    let set = s.run(&["config"], &["set", "batch_size", "50", "--json"], false);
    assert!(set.output.status.success(), "{}", set.all());
    assert_eq!(
        set.json(),
        serde_json::json!({"key": "batch_size", "value": "50"})
    );
    let get = s
        .run(&["config"], &["get", "batch_size", "--json"], false)
        .json();
    assert_eq!(
        get,
        serde_json::json!({"key": "batch_size", "value": "50", "default": false})
    );
    let list = s.run(&["config"], &["list", "--json"], false).json();
    let fields = list.as_array().expect("an array");
    assert!(
        fields
            .iter()
            .any(|f| f["key"] == "batch_size" && f["value"] == "50" && f["default"] == false),
        "{list}"
    );
    assert!(fields.iter().any(|f| f["default"] == true), "{list}");
    // Without --json: words.
    let get = s.run(&["config"], &["get", "batch_size"], false);
    assert_eq!(get.stdout.trim(), "50");
    let status = s.run(&["status"], &[], false);
    assert!(status.output.status.success(), "{}", status.all());
    assert!(
        serde_json::from_str::<Value>(&status.stdout).is_err()
            && status
                .stdout
                .contains(&format!("records:     {}", s.emulator.truth().len())),
        "{}",
        status.all()
    );
}

/// `watch --json`: one JSON object per finished sync on stdout, nothing else there.
#[test]
fn watch_json_prints_one_object_per_sync() {
    let s = Setup::new(7, 13);
    let connect = s.run(
        &["connect"],
        &["--access-token", &s.emulator.access_token()],
        false,
    );
    assert!(connect.output.status.success(), "{}", connect.all());
    let child = Command::new(env!("CARGO_BIN_EXE_host-test-cli"))
        .args(["watch", "--db"])
        .arg(&s.db)
        .args([
            "--tenant",
            TENANT,
            "--api-url",
            &s.emulator.base_url(),
            "--no-longpoll",
            "--json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("watch starts");
    let store = SqliteStore::open(&s.db).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.status(TENANT).unwrap().last_sync_at.is_none() {
        assert!(std::time::Instant::now() < deadline, "no sync within 30 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(interrupted.success());
    let output = child.wait_with_output().expect("watch ends");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let sync = &lines[0];
    assert_eq!(sync["tenant"], TENANT);
    assert_eq!(sync["result"], "ok");
    assert_eq!(sync["kind"], "full");
    assert_eq!(sync["created"], s.emulator.truth().len() as u64);
}

#[test]
fn no_progress_noise_when_stderr_is_not_a_terminal() {
    let s = Setup::new(300, 13);
    let run = s.sync(&[]);
    assert!(run.output.status.success(), "{}", run.all());
    // No redrawn line, no bar, no rate, no cursor control (erase line, hide cursor).
    assert!(!run.stderr.contains('\r'), "{:?}", run.stderr);
    assert!(!run.stderr.contains("entries/s"), "{:?}", run.stderr);
    assert!(!run.stderr.contains("pages"), "{:?}", run.stderr);
    assert!(!run.stderr.contains("\u{1b}[2K"), "{:?}", run.stderr);
    assert!(!run.stderr.contains("\u{1b}[?25l"), "{:?}", run.stderr);
}

/// `demo`, `cat` and `disconnect` also mean it with `--json`.
#[test]
fn demo_cat_and_disconnect_print_json_with_json() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let demo = Command::new(env!("CARGO_BIN_EXE_host-test-cli"))
        .args(["demo", "--files", "40", "--json", "--db"])
        .arg(&db)
        .stdin(Stdio::null())
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&demo.stdout);
    assert!(demo.status.success(), "{stdout}");
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("the demo's --json output is one object ({e}):\n{stdout}"));
    assert_eq!(report["match"], true);
    assert_eq!(report["records"], report["items"]);
    assert!(report["full"]["events"]["created"].as_u64().unwrap() >= 40);
    assert!(report["changes"].as_array().is_some_and(|c| !c.is_empty()));

    let s = Setup::new(3, 14);
    let connect = s.run(
        &["connect"],
        &["--access-token", &s.emulator.access_token()],
        false,
    );
    assert!(connect.output.status.success(), "{}", connect.all());
    s.synced();
    let file = s
        .emulator
        .truth()
        .into_iter()
        .find(|t| t.kind == dropbox_emulator::Kind::File && t.is_downloadable)
        .unwrap();
    let cat = s.run(&["cat"], &[&file.id, "--json"], false);
    assert!(cat.output.status.success(), "{}", cat.all());
    let summary: Value = serde_json::from_str(cat.stderr.trim())
        .unwrap_or_else(|e| panic!("cat's summary is JSON on stderr ({e}):\n{}", cat.all()));
    assert_eq!(summary["id"], file.id.as_str());
    assert_eq!(summary["size"], file.size);
    assert_eq!(summary["verified"], true);
    assert_eq!(cat.output.stdout.len() as u64, file.size);

    let gone = s.run(&["disconnect"], &["--json"], false).json();
    assert_eq!(
        gone,
        serde_json::json!({"tenant": TENANT, "had_credentials": true, "revoked": true})
    );
    let again = s.run(&["disconnect"], &["--json"], false).json();
    assert_eq!(again["had_credentials"], false);
}

/// One writer per tenant across processes (SQLite): while another process holds the tenant's
/// writer right, `sync` is refused with its own exit code and a message naming the holder, and
/// writes nothing; a holder that is killed releases it at once (the operating system drops the
/// lock with the process), so the next `sync` goes on.
#[test]
fn a_second_process_writing_a_tenant_is_refused_and_a_killed_holder_releases_it() {
    use host_test::store::writer_lock::WriterLocks;
    let s = Setup::new(30, 21);
    s.synced();
    let before = s.events(&["--json"]).json_lines().len();
    s.emulator
        .create_file("/new.txt", Content::Bytes(b"new".to_vec()))
        .unwrap();

    // This test process holds the tenant, as a `watch` worker in the middle of a sync would.
    let held = WriterLocks::beside(&s.db)
        .try_acquire(TENANT, "pid 4242 (watch), writing since unix time 1")
        .expect("the lock is free");
    let refused = s.sync(&[]);
    assert_class("a sync beside another writer", &refused, ExitClass::Busy);
    assert!(
        refused.stderr.contains("pid 4242 (watch)"),
        "the message names the holder:\n{}",
        refused.all()
    );
    assert_eq!(
        s.events(&["--json"]).json_lines().len(),
        before,
        "a refused sync writes nothing"
    );
    drop(held);
    s.synced();
    assert!(s.events(&["--json"]).json_lines().len() > before);

    // A holder killed in the middle of its sync: the lock goes with the process.
    let slow = Emulator::start(EmulatorConfig {
        files: 3_000,
        seed: 22,
        max_page_size: Some(50),
        ..Default::default()
    })
    .expect("the emulator starts");
    slow.set_latency(std::time::Duration::from_millis(100));
    let db = s._dir.path().join("killed.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_host-test-cli"))
        .args(["sync", "--db"])
        .arg(&db)
        .args(["--tenant", TENANT, "--api-url", &slow.base_url(), "--quiet"])
        .env("DROPBOX_ACCESS_TOKEN", slow.access_token())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sync starts");
    // Wait until it holds the tenant (it notes itself as the holder once it has the lock),
    // then kill it.
    let locks = WriterLocks::beside(&db);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !locks.noted_holder(TENANT).contains("(sync)") {
        assert!(
            std::time::Instant::now() < deadline,
            "the sync never took the tenant"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().expect("kill");
    child.wait().expect("the child ends");
    locks
        .try_acquire(TENANT, "after the kill")
        .expect("the killed process's lock is gone with it");
}

/// `connect` tests the token before it stores it: one the server refuses (a revoked token, a
/// 401; or one Dropbox cannot parse, a 400 in plain text) is an authentication failure
/// (exit 3, not an internal error) and leaves nothing behind: no tenant, no credentials, no
/// settings. A tenant connected before keeps the credentials it had.
#[test]
fn a_token_the_server_refuses_is_not_stored() {
    let s = Setup::new(5, 21);
    let revoked = s.emulator.access_token();
    s.emulator.revoke_all();
    for (what, token) in [("malformed", "not-a-token"), ("revoked", revoked.as_str())] {
        let run = s.run(&["connect"], &["--access-token", token], false);
        assert_class(what, &run, ExitClass::AuthRequired);
        assert!(run.stderr.contains("nothing was stored"), "{}", run.all());
        assert!(!run.all().contains(token), "the token is never printed");
        let store = SqliteStore::open(&s.db).unwrap();
        assert!(store.tenants().unwrap().is_empty(), "{what}");
        assert!(store.settings(TENANT).unwrap().is_empty(), "{what}");
        assert!(!store.status(TENANT).unwrap().needs_reauth, "{what}");
        drop(store);
        // No key file either: the first credentials stored would create it.
        assert!(!s.db.with_extension("db.key").exists(), "{what}");
        let status = s.run(&["status"], &["--json"], false).json();
        assert_eq!(status["connected"], false, "{what}: {status}");
    }

    let connected = Setup::new(5, 22);
    let token = connected.emulator.access_token();
    let run = connected.run(&["connect"], &["--access-token", &token], false);
    assert!(run.output.status.success(), "{}", run.all());
    let run = connected.run(&["connect"], &["--access-token", "not-a-token"], false);
    assert_class("a malformed token", &run, ExitClass::AuthRequired);
    // The stored token is still the good one: a sync without any token given works.
    let run = connected.run(&["sync"], &["--quiet"], false);
    assert!(run.output.status.success(), "{}", run.all());
}

/// The tenant's row deleted (as an operator removing the tenant would), then the tenant
/// connected again under the same name: its syncs go on, its new events come after every
/// earlier event, and the store equals the account.
#[test]
fn a_tenant_connected_again_after_its_row_was_deleted_syncs_on() {
    let s = Setup::new(30, 23);
    let token = s.emulator.access_token();
    let run = s.run(&["connect"], &["--access-token", &token], false);
    assert!(run.output.status.success(), "{}", run.all());
    let run = s.run(&["sync"], &["--quiet"], false);
    assert!(run.output.status.success(), "{}", run.all());
    let before = SqliteStore::open(&s.db).unwrap().last_event_seq().unwrap();
    rusqlite::Connection::open(&s.db)
        .unwrap()
        .execute("DELETE FROM tenants WHERE name = ?1", [TENANT])
        .unwrap();
    s.emulator
        .create_file("/after/new.txt", Content::Bytes(b"new".to_vec()))
        .unwrap();
    let run = s.run(&["connect"], &["--access-token", &token], false);
    assert!(run.output.status.success(), "{}", run.all());
    let run = s.run(&["sync"], &["--quiet"], false);
    assert!(run.output.status.success(), "{}", run.all());
    let store = SqliteStore::open(&s.db).unwrap();
    let events = store.events(Some(TENANT), 0).unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let after: Vec<&str> = events
        .iter()
        .filter(|e| e.seq > before)
        .map(|e| e.kind.as_str())
        .collect();
    assert!(after.contains(&"created"), "{after:?}");
    let diffs =
        e2e_tests::diff_with_truth(&s.emulator.truth(), &store.records(TENANT).unwrap(), |_| {
            true
        });
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// Two `sync` processes writing one SQLite file at once (two tenants, a commit per record):
/// each waits for the other's write lock instead of failing with "database is locked", and
/// both stores end equal to the account.
#[test]
fn two_sync_processes_write_one_database_file_at_once() {
    let s = Setup::new(300, 24);
    let token = s.emulator.access_token();
    let api = s.emulator.base_url();
    let db = s.db.to_str().unwrap();
    let cli = |command: &str, args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_host-test-cli"));
        cmd.arg(command)
            .args(["--db", db, "--api-url", &api])
            .args(args)
            .env_remove("DROPBOX_ACCESS_TOKEN")
            .stdin(Stdio::null());
        cmd
    };
    for tenant in ["a", "b"] {
        let run = Run::of(&mut cli(
            "connect",
            &["--tenant", tenant, "--access-token", &token],
        ));
        assert!(run.output.status.success(), "{}", run.all());
        let run = Run::of(&mut cli(
            "config",
            &["--tenant", tenant, "set", "batch_size", "1"],
        ));
        assert!(run.output.status.success(), "{}", run.all());
    }
    let children: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|tenant| {
            cli("sync", &["--tenant", tenant, "--quiet"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("the CLI starts")
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let store = SqliteStore::open(&s.db).unwrap();
    for tenant in ["a", "b"] {
        let diffs = e2e_tests::diff_with_truth(
            &s.emulator.truth(),
            &store.records(tenant).unwrap(),
            |_| true,
        );
        assert!(diffs.is_empty(), "{tenant}: {}", diffs.join("\n"));
    }
}
