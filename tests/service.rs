//! Running as a service: the metrics, health and readiness endpoint of `watch` checked against
//! what happened (in process, over the library), and `sync` and `watch` as child processes with
//! JSON logs: one object per line, the tenant's and the operation's spans on the connector's
//! own lines (its retry warnings included), and no access token, refresh token or client
//! secret anywhere, with token refreshes and a refused refresh in the run.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dropbox_emulator::{Content, Emulator, EmulatorConfig, Fault, FaultKind};
use e2e_tests::SCOPES;
use e2e_tests::dropbox_runtime;
use host_test::app::ConnectorHost;
use host_test::credentials::now;
use host_test::metrics::{Metrics, MetricsServer};
use host_test::store::{RecordStore, SqliteStore, StoredCredentials};
use host_test::watch::{WatchEvent, WatchOptions, WatchTenant, Watcher};

const CLI: &str = env!("CARGO_BIN_EXE_host-test-cli");
const CLIENT_ID: &str = "service-test-app-key";
/// Distinctive, so that finding it anywhere it must not be is unambiguous.
const CLIENT_SECRET: &str = "svc-secret-Qm83xLz0Rt7v";
const TIMEOUT: Duration = Duration::from_secs(120);

/// An emulator whose long-polls with nothing to report return after half a second.
fn emulator(files: usize, seed: u64) -> Emulator {
    Emulator::start(EmulatorConfig {
        files,
        seed,
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        longpoll_max_wait: Some(Duration::from_millis(500)),
        ..Default::default()
    })
    .expect("the emulator starts")
}

/// One GET, HTTP/1.1, connection closed by the server: (status, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a response");
    let (head, body) = response.split_once("\r\n\r\n").expect("headers end");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, body.to_string())
}

/// The samples of an exposition: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    samples(&body)
}

fn value(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_no_secret(what: &str, text: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(secret.len() >= 8, "a secret worth looking for");
        if let Some(at) = text.find(secret.as_str()) {
            panic!(
                "{what} shows a secret (starting {}…) at byte {at}",
                &secret[..6]
            );
        }
    }
}

#[test]
fn watch_metrics_health_and_readiness_match_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    let host =
        Arc::new(ConnectorHost::new(dropbox_runtime(), store, None, Default::default()).unwrap());
    let healthy = emulator(300, 1);
    let flaky = emulator(2500, 2);
    let revoked = emulator(20, 3);
    for (tenant, emu) in [
        ("healthy", &healthy),
        ("flaky", &flaky),
        ("revoked", &revoked),
    ] {
        host.store()
            .set_tenant_api_url(tenant, Some(&emu.base_url()))
            .unwrap();
        host.connect(
            tenant,
            StoredCredentials {
                access_token: emu.access_token(),
                ..Default::default()
            },
        )
        .unwrap();
        // Long-polls (counted below) are the strategy `change-notifications`.
        host.set_setting(tenant, "sync_strategy", "change-notifications")
            .unwrap();
    }
    revoked.revoke_all();
    // The flaky account's first sync meets a rate limit and a server error, one retry each.
    flaky.inject(Fault::once(
        "files/list_folder",
        FaultKind::RateLimitJson {
            retry_after: 1,
            reason: "too_many_requests".into(),
            include_field: true,
        },
    ));
    flaky.inject(Fault::once(
        "files/list_folder/continue",
        FaultKind::Status(503),
    ));

    let metrics = Arc::new(Metrics::new());
    let mut server = MetricsServer::start("127.0.0.1:0", metrics.clone()).expect("listens");
    let addr = server.local_addr();
    // Before the watcher: alive, not ready.
    assert_eq!(get(addr, "/healthz").0, 200);
    assert_eq!(get(addr, "/readyz").0, 503);
    assert_eq!(get(addr, "/nothing").0, 404);

    let events: Arc<Mutex<Vec<WatchEvent>>> = Arc::default();
    let sink = {
        let events = events.clone();
        move |e| events.lock().unwrap().push(e)
    };
    let reports = |tenant: &str| -> Vec<host_test::watch::SyncReport> {
        events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                WatchEvent::SyncFinished(r) if r.tenant == tenant => Some(r.clone()),
                _ => None,
            })
            .collect()
    };
    let options = WatchOptions {
        interval: Some(Duration::from_secs(3600)),
        longpoll_min_spacing: Duration::from_millis(300),
        sync_retry_base: Duration::from_millis(500),
        stop_grace: Duration::from_secs(3),
        ..WatchOptions::default()
    };
    let tenants: Vec<WatchTenant> = ["healthy", "flaky", "revoked"]
        .iter()
        .map(|t| WatchTenant::new(t))
        .collect();
    let mut watcher =
        Watcher::start_with_metrics(host.clone(), &tenants, options, Some(metrics.clone()), sink)
            .expect("the watcher starts");
    assert_eq!(get(addr, "/readyz").0, 200, "ready once the workers run");

    wait_until(TIMEOUT, "the first syncs", || {
        reports("healthy").len() == 1
            && reports("flaky").len() == 1
            && reports("revoked").len() == 1
    });
    // A change, seen by the long-poll: a second sync of the healthy tenant.
    healthy
        .create_file("/service/new.txt", Content::Bytes(b"new".to_vec()))
        .unwrap();
    wait_until(TIMEOUT, "the change's sync", || {
        reports("healthy").len() == 2
    });
    // Long-polls are in flight most of the time: the gauge shows them while it runs.
    let mut max_in_flight = 0.0f64;
    wait_until(Duration::from_secs(20), "a long-poll in flight", || {
        let m = scrape(addr);
        let n = value(&m, "host_test_longpolls_in_flight");
        assert!((0.0..=3.0).contains(&n), "in flight {n}");
        max_in_flight = max_in_flight.max(n);
        n >= 1.0
    });
    wait_until(TIMEOUT, "a quiet watcher", || watcher.is_quiet());
    let running = scrape(addr);
    assert_eq!(get(addr, "/healthz").0, 200);
    assert_eq!(get(addr, "/readyz").0, 200);

    watcher.stop();
    assert_eq!(get(addr, "/readyz").0, 503, "not ready once stopped");
    assert_eq!(get(addr, "/healthz").0, 200, "still alive");
    // Long-polls left behind by the stop end within the emulator's half second.
    wait_until(Duration::from_secs(10), "no long-poll in flight", || {
        value(&scrape(addr), "host_test_longpolls_in_flight") == 0.0
    });
    let after = scrape(addr);
    server.stop();

    let all: Vec<_> = ["healthy", "flaky", "revoked"]
        .iter()
        .flat_map(|t| reports(t))
        .collect();
    let ok: Vec<_> = all.iter().filter_map(|r| r.outcome.as_ref().ok()).collect();
    eprintln!(
        "{} syncs ({} ok); metrics while running:\n{}",
        all.len(),
        ok.len(),
        running
            .iter()
            .filter(|(k, _)| !k.contains("_bucket"))
            .map(|(k, v)| format!("  {k} {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(ok.len(), 3, "healthy twice, flaky once");
    let finished: u64 = ["healthy", "flaky", "revoked"]
        .iter()
        .map(|t| watcher.tenant_state(t).unwrap().finished_syncs)
        .sum();
    assert_eq!(finished as usize, all.len());
    for m in [&running, &after] {
        assert_eq!(
            value(m, "host_test_syncs_total{result=\"ok\"}"),
            ok.len() as f64
        );
        assert_eq!(
            value(m, "host_test_syncs_total{result=\"auth_required\"}"),
            1.0
        );
        assert_eq!(
            value(
                m,
                "host_test_errors_total{op=\"sync\",kind=\"auth_required\"}"
            ),
            1.0
        );
        assert_eq!(
            value(m, "host_test_sync_duration_seconds_count"),
            all.len() as f64
        );
        assert_eq!(
            value(m, "host_test_sync_entries_total"),
            ok.iter().map(|s| s.entries).sum::<u64>() as f64
        );
        assert_eq!(
            value(m, "host_test_sync_changes_total{change=\"created\"}"),
            ok.iter().map(|s| s.created).sum::<u64>() as f64
        );
        assert_eq!(value(m, "host_test_tenants_watched"), 3.0);
        // One rate limit waited out and one server error retried, both by the flaky sync.
        assert_eq!(value(m, "host_test_retries_total{op=\"sync\"}"), 2.0);
        assert_eq!(
            value(m, "host_test_rate_limit_waits_total{op=\"sync\"}"),
            1.0
        );
        assert!(value(m, "host_test_retry_wait_seconds_total{op=\"sync\"}") >= 1.0);
        assert!(value(m, "host_test_longpolls_total{result=\"changes\"}") >= 1.0);
        // The revoked tenant has no success; the others' is the store's own note.
        assert!(
            !m.keys()
                .any(|k| k
                    .starts_with("host_test_last_success_timestamp_seconds{tenant=\"revoked\"")),
        );
        for tenant in ["healthy", "flaky"] {
            let at = host.store().status(tenant).unwrap().last_sync_at.unwrap();
            assert_eq!(
                value(
                    m,
                    &format!("host_test_last_success_timestamp_seconds{{tenant=\"{tenant}\"}}")
                ),
                at as f64,
                "{tenant}"
            );
        }
    }
    assert_eq!(value(&running, "host_test_ready"), 1.0);
    assert_eq!(value(&after, "host_test_ready"), 0.0);
    // Every request an emulator received was counted by the host's http import, once.
    let received: u64 = [&healthy, &flaky, &revoked]
        .iter()
        .flat_map(|e| e.request_counts().into_values())
        .sum();
    let counted = value(&after, "host_test_api_calls_total{op=\"sync\"}")
        + value(&after, "host_test_api_calls_total{op=\"wait-for-changes\"}");
    assert_eq!(counted, received as f64);
    assert!(max_in_flight >= 1.0);
}

/// A child process whose stdout and stderr lines are collected as they come.
struct Child {
    child: std::process::Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Child {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Child {
        let mut command = Command::new(CLI);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in [
            "DROPBOX_ACCESS_TOKEN",
            "DROPBOX_CLIENT_ID",
            "DROPBOX_CLIENT_SECRET",
            "RUST_LOG",
            "HOST_TEST_LOG_FORMAT",
        ] {
            command.env_remove(var);
        }
        command.envs(env.iter().copied());
        let mut child = command.spawn().expect("the CLI starts");
        let stdout: Arc<Mutex<Vec<String>>> = Arc::default();
        let stderr: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut readers = Vec::new();
        for (pipe, into) in [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
                stdout.clone(),
            ),
            (Box::new(child.stderr.take().unwrap()), stderr.clone()),
        ] {
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    into.lock().unwrap().push(line);
                }
            }));
        }
        Child {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait for the exit (after SIGINT when `interrupt`): (success, stdout, stderr).
    fn finish(mut self, interrupt: bool) -> (bool, String, String) {
        if interrupt {
            let status = Command::new("kill")
                .args(["-INT", &self.child.id().to_string()])
                .status()
                .expect("kill runs");
            assert!(status.success());
        }
        let started = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > TIMEOUT {
                let _ = self.child.kill();
                panic!("the CLI did not end:\n{}", self.stderr().join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        (
            status.success(),
            self.stdout().join("\n"),
            self.stderr().join("\n"),
        )
    }
}

/// Every line is one JSON object with a level, a target and a message; returns them.
fn json_lines(what: &str, stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{what}: a log line that is not JSON ({e}): {l}"));
            assert!(
                v["level"].is_string() && v["target"].is_string() && v["timestamp"].is_string(),
                "{what}: {l}"
            );
            v
        })
        .collect()
}

/// The span fields of a JSON line, outermost first: [(span name, its field)].
fn spans(line: &serde_json::Value) -> Vec<(String, String)> {
    line["spans"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let name = s["name"].as_str().unwrap_or("").to_string();
                    let field = s[name.as_str()].as_str().unwrap_or("").to_string();
                    (name, field)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn oauth_credentials(access: &str, refresh: &str, expires_in: i64) -> StoredCredentials {
    StoredCredentials {
        access_token: access.to_string(),
        refresh_token: Some(refresh.to_string()),
        expires_at: Some(now() + expires_in),
        client_id: Some(CLIENT_ID.into()),
        client_secret: Some(CLIENT_SECRET.into()),
        account_id: None,
    }
}

#[test]
fn json_logs_of_sync_refresh_and_watch_carry_spans_and_no_secret_and_metrics_count_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("service.db");
    let db_arg = db.to_str().unwrap();
    let alice_emu = emulator(60, 11);
    let bob_emu = emulator(20, 12);
    let alice_pair = alice_emu.issue_tokens(&SCOPES, 14_400);
    let bob_pair = bob_emu.issue_tokens(&SCOPES, 14_400);
    let store = SqliteStore::open(&db).expect("the store opens");
    store
        .set_tenant_api_url("alice", Some(&alice_emu.base_url()))
        .unwrap();
    store
        .set_tenant_api_url("bob", Some(&bob_emu.base_url()))
        .unwrap();
    // Both long-poll between syncs: the strategy `change-notifications`.
    for tenant in ["alice", "bob"] {
        store
            .set_setting(tenant, "sync_strategy", "change-notifications")
            .unwrap();
    }
    // alice's token is about to expire: the sync refreshes it first.
    store
        .put_credentials(
            "alice",
            &oauth_credentials(&alice_pair.access_token, &alice_pair.refresh_token, 60),
        )
        .unwrap();
    // bob unlinked the app: his refresh is refused, his syncs end with auth-required.
    store
        .put_credentials(
            "bob",
            &oauth_credentials(&bob_pair.access_token, &bob_pair.refresh_token, 60),
        )
        .unwrap();
    bob_emu.revoke_all();
    alice_emu.expire_access_tokens();

    // 1. One sync with a refresh, logging everything: trace, JSON by the environment.
    let sync = Child::spawn(
        &["sync", "--db", db_arg, "--tenant", "alice", "--quiet"],
        &[("HOST_TEST_LOG_FORMAT", "json"), ("RUST_LOG", "trace")],
    );
    let (ok, sync_out, sync_err) = sync.finish(false);
    assert!(ok, "{sync_out}\n{sync_err}");
    assert!(sync_out.contains("Full sync of alice"), "{sync_out}");
    let sync_lines = json_lines("sync", &sync_err);
    assert!(
        sync_lines.iter().any(|l| l["target"] == "connector"
            && spans(l)
                == [
                    ("tenant".to_string(), "alice".to_string()),
                    ("op".to_string(), "sync".to_string())
                ]),
        "the connector's lines carry the tenant and the operation:\n{sync_err}"
    );
    // The transport's byte dumps (where a token would travel) are never logged.
    assert!(
        !sync_lines.iter().any(|l| l["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("ureq") || t.starts_with("rustls"))
            && matches!(l["level"].as_str(), Some("DEBUG" | "TRACE"))),
        "transport debug lines"
    );
    let refreshed = store.credentials("alice").unwrap().unwrap().access_token;
    assert_ne!(refreshed, alice_pair.access_token, "the sync refreshed");

    // 2. watch, JSON by the flag, with the metrics endpoint on a free port. A change for alice
    // meets a server error (one retry, logged by the connector) and an expired token (a
    // refresh); bob's first sync is refused.
    let watch = Child::spawn(
        &[
            "watch",
            "--db",
            db_arg,
            "--tenant",
            "alice",
            "--tenant",
            "bob",
            "--metrics-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ],
        &[("RUST_LOG", "debug")],
    );
    let mut addr: Option<SocketAddr> = None;
    wait_until(TIMEOUT, "the metrics address in the log", || {
        addr = watch.stderr().iter().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["fields"]["addr"].as_str()?.parse().ok()
        });
        addr.is_some()
    });
    let addr = addr.unwrap();
    assert_eq!(get(addr, "/healthz").0, 200);
    wait_until(TIMEOUT, "ready", || get(addr, "/readyz").0 == 200);
    wait_until(TIMEOUT, "bob's refused sync", || {
        watch
            .stdout()
            .iter()
            .any(|l| l.starts_with("[") && l.contains("bob scheduled sync failed"))
    });
    std::thread::sleep(Duration::from_millis(500));
    alice_emu.expire_access_tokens();
    alice_emu.inject(Fault::once(
        "files/list_folder/continue",
        FaultKind::Status(503),
    ));
    alice_emu
        .create_file("/watched/new.txt", Content::Bytes(b"new".to_vec()))
        .unwrap();
    let alice_ok = || {
        watch
            .stdout()
            .iter()
            .filter(|l| l.contains(" alice ") && l.contains(" sync: "))
            .count()
    };
    wait_until(TIMEOUT, "alice's sync of the change", || alice_ok() >= 1);
    std::thread::sleep(Duration::from_millis(300));
    let seen_ok = alice_ok();
    let m = scrape(addr);
    let last_sync_at = store.status("alice").unwrap().last_sync_at.unwrap();
    assert_eq!(get(addr, "/readyz").0, 200);
    let (ok, watch_out, watch_err) = watch.finish(true);
    assert!(ok, "{watch_out}\n{watch_err}");
    let all_ok = watch_out
        .lines()
        .filter(|l| l.contains(" alice ") && l.contains(" sync: "))
        .count();
    let metric_ok = value(&m, "host_test_syncs_total{result=\"ok\"}") as usize;
    assert!(
        seen_ok <= metric_ok && metric_ok <= all_ok,
        "ok syncs: {seen_ok} printed at the scrape, {metric_ok} counted, {all_ok} printed in all"
    );
    assert_eq!(
        value(&m, "host_test_syncs_total{result=\"auth_required\"}"),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "host_test_errors_total{op=\"sync\",kind=\"auth_required\"}"
        ),
        1.0
    );
    assert_eq!(value(&m, "host_test_retries_total{op=\"sync\"}"), 1.0);
    assert_eq!(
        value(
            &m,
            "host_test_last_success_timestamp_seconds{tenant=\"alice\"}"
        ),
        last_sync_at as f64
    );
    assert!(!m.contains_key("host_test_last_success_timestamp_seconds{tenant=\"bob\"}"));
    assert_eq!(value(&m, "host_test_tenants_watched"), 2.0);

    let watch_lines = json_lines("watch", &watch_err);
    // The connector's retry warning, which `watch` used to drop, is there, in its spans.
    let retry = watch_lines
        .iter()
        .find(|l| {
            l["target"] == "connector"
                && l["level"] == "WARN"
                && l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("retrying in"))
        })
        .unwrap_or_else(|| panic!("no retry warning from the connector:\n{watch_err}"));
    assert_eq!(
        spans(retry),
        [
            ("tenant".to_string(), "alice".to_string()),
            ("op".to_string(), "sync".to_string())
        ]
    );
    // Each sync's outcome, and bob's failure, in the tenant's span.
    assert!(watch_lines.iter().any(|l| {
        l["level"] == "WARN"
            && l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("sync failed"))
            && l["fields"]["error_kind"] == "auth_required"
            && spans(l).first() == Some(&("tenant".to_string(), "bob".to_string()))
    }));
    for line in &watch_lines {
        if line["target"] == "connector" {
            let s = spans(line);
            assert!(
                s.len() == 2 && s[0].0 == "tenant" && s[1].0 == "op",
                "a connector line without its spans: {line}"
            );
        }
    }

    let refreshed_again = store.credentials("alice").unwrap().unwrap().access_token;
    assert_ne!(refreshed_again, refreshed, "the watch refreshed too");
    let secrets = vec![
        alice_pair.access_token.clone(),
        alice_pair.refresh_token.clone(),
        bob_pair.access_token.clone(),
        bob_pair.refresh_token.clone(),
        refreshed,
        refreshed_again,
        CLIENT_SECRET.to_string(),
    ];
    for (what, text) in [
        ("sync stdout", &sync_out),
        ("sync log", &sync_err),
        ("watch stdout", &watch_out),
        ("watch log", &watch_err),
    ] {
        assert_no_secret(what, text, &secrets);
    }
    eprintln!(
        "sync: {} JSON log lines; watch: {} JSON log lines; metrics: ok {metric_ok}, auth_required 1",
        sync_lines.len(),
        watch_lines.len()
    );
}
