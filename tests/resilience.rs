//! Proof of resilience, through the real component in the real host against the emulator:
//!
//! - a fault matrix: every fault the emulator can inject, at every phase of a sync (identity,
//!   first, middle and last listing page, shared links, token refresh) and of a download. Each
//!   cell ends with the store equal to the account: within the same run when the client can
//!   retry, refresh or tolerate the fault, or on the next run after a typed error. A failing
//!   run never traps and never stores a cursor beyond the pages it committed;
//! - rate limits beyond the cap are reported at once, with the wait; statuses that retrying
//!   cannot fix are sent once; a tenant waiting out a rate limit does not hold up another;
//! - a bounded soak: many incremental syncs with random changes and random faults on one
//!   account, compared with the ground truth after every successful run, with a bound on the
//!   growth of the host's memory.
//!
//! `cargo test --release -p e2e-tests --test resilience -- --nocapture` prints the matrix.
//! `SOAK_SYNCS=N` changes the soak's length (default 200).

use std::collections::BTreeMap;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dropbox_emulator::{Content, Emulator, EmulatorConfig, Fault, FaultKind, Kind};
use e2e_tests::SCOPES;
use e2e_tests::{
    Harness, Rng, assert_no_duplicate_events, diff_with_truth, dropbox_runtime, env_or,
};
use host_test::app::{ConnectorHost, HostError, Outcome};
use host_test::bindings::connector::{StreamSummary, SyncKind, SyncSummary};
use host_test::bindings::types::ConnectorError;
use host_test::http::HttpSettings;
use host_test::store::{SqliteStore, StoredCredentials};
use host_test::tenant::GuestSignal;

/// The tests of this file run one at a time: the soak measures the process's memory, which
/// a matrix running beside it would blur, and the machine has two cores anyway.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A fresh store and host on an existing emulator, with credentials that can be refreshed
/// (an access token, its refresh token, and the app's client id and secret).
fn harness_on(emulator: &Emulator) -> Harness {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = Arc::new(SqliteStore::open(&dir.path().join("store.db")).expect("the store opens"));
    let host = ConnectorHost::new(
        dropbox_runtime(),
        store,
        Some(&emulator.base_url()),
        HttpSettings::default(),
    )
    .expect("the host starts");
    let tenant = "t1".to_string();
    connect_refreshable(&host, &tenant, emulator);
    Harness {
        emulator: emulator.clone(),
        host,
        tenant,
        dir,
        database: None,
    }
}

fn connect_refreshable(host: &ConnectorHost, tenant: &str, emulator: &Emulator) {
    let tokens = emulator.issue_tokens(&SCOPES, 14_400);
    let config = emulator.config();
    host.connect(
        tenant,
        StoredCredentials {
            access_token: tokens.access_token,
            refresh_token: Some(tokens.refresh_token),
            expires_at: Some(now() + 14_400),
            client_id: Some(config.client_id.clone()),
            client_secret: Some(config.client_secret.clone()),
            account_id: None,
        },
    )
    .expect("credentials stored");
}

fn cursor(h: &Harness) -> Option<String> {
    h.host
        .store()
        .get_sync_point(&h.tenant)
        .expect("sync point readable")
}

fn requests(emulator: &Emulator, route: &str) -> u64 {
    emulator.request_counts().get(route).copied().unwrap_or(0)
}

fn logs_text(logs: &[(String, String)]) -> String {
    logs.iter()
        .map(|(level, m)| format!("  {level}: {m}"))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// The fault matrix

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Identity,
    FirstPage,
    MiddlePage,
    LastPage,
    SharedLinks,
    TokenRefresh,
    Download,
}

const PHASES: [Phase; 7] = [
    Phase::Identity,
    Phase::FirstPage,
    Phase::MiddlePage,
    Phase::LastPage,
    Phase::SharedLinks,
    Phase::TokenRefresh,
    Phase::Download,
];

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::Identity => "identity",
            Phase::FirstPage => "first page",
            Phase::MiddlePage => "middle page",
            Phase::LastPage => "last page",
            Phase::SharedLinks => "shared links",
            Phase::TokenRefresh => "token refresh",
            Phase::Download => "download",
        }
    }

    /// The emulator's route name the fault is attached to.
    fn route(self) -> &'static str {
        match self {
            Phase::Identity => "users/get_current_account",
            Phase::FirstPage => "files/list_folder",
            Phase::MiddlePage | Phase::LastPage => "files/list_folder/continue",
            Phase::SharedLinks => "sharing/list_shared_links",
            Phase::TokenRefresh => "oauth2/token",
            Phase::Download => "files/download",
        }
    }

    /// Listing phases need an account of at least three pages.
    fn big_account(self) -> bool {
        matches!(self, Phase::FirstPage | Phase::MiddlePage | Phase::LastPage)
    }
}

/// Over the host's response-body cap.
fn huge() -> usize {
    HttpSettings::default().max_body_bytes as usize + (1 << 20)
}

fn kinds() -> Vec<(&'static str, FaultKind)> {
    vec![
        // 1 s with the field: the run must wait exactly that. 0 s without it: the header's 0
        // must win over the 1 s default of a 429 that names no wait.
        (
            "429 json+retry_after",
            FaultKind::RateLimitJson {
                retry_after: 1,
                reason: "too_many_requests".into(),
                include_field: true,
            },
        ),
        (
            "429 json, header only",
            FaultKind::RateLimitJson {
                retry_after: 0,
                reason: "too_many_write_operations".into(),
                include_field: false,
            },
        ),
        (
            "429 plain text",
            FaultKind::RateLimitText { retry_after: 0 },
        ),
        ("500", FaultKind::Status(500)),
        ("502", FaultKind::Status(502)),
        ("503", FaultKind::Status(503)),
        ("504", FaultKind::Status(504)),
        ("409 reset", FaultKind::Reset),
        ("401 expired token", FaultKind::ExpiredToken),
        ("401 invalid token", FaultKind::InvalidToken),
        ("truncated json", FaultKind::TruncatedJson),
        ("malformed json", FaultKind::MalformedJson),
        ("wrong-type json", FaultKind::WrongTypeJson),
        ("dropped connection", FaultKind::DropConnection),
        ("dropped mid-body", FaultKind::DropMidBody),
        ("unknown fields+tags", FaultKind::UnknownFieldsAndTags),
        ("slow (300 ms)", FaultKind::Slow(Duration::from_millis(300))),
        ("huge body (17 MiB)", FaultKind::HugeBody(huge())),
        ("corrupt byte", FaultKind::CorruptByte),
    ]
}

/// How the faulted run must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Not a meaningful fault for this phase (a flipped byte inside JSON is undetectable by
    /// design; only content carries a hash).
    NotApplicable,
    /// The faulted run itself succeeds.
    SameRun(Check),
    /// The faulted run fails with this typed error; the next run succeeds.
    NextRun(ErrorKind),
}

/// What a successful faulted run must show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// Nothing to retry (the fault is tolerated as it is).
    Tolerated,
    /// A "retrying" log line naming this reason, and the request sent again.
    Retried(&'static str),
    /// The token was refreshed once and the request sent again.
    Refreshed,
    /// The cursor was reset: the run re-listed the account.
    Relisted,
    /// The first page exceeded the host's body cap: the run asked for smaller pages (a warning
    /// naming the cap) and completed.
    SmallerPages,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ErrorKind {
    Internal,
    Integrity,
}

impl ErrorKind {
    fn matches(self, e: &ConnectorError) -> bool {
        matches!(
            (self, e),
            (ErrorKind::Internal, ConnectorError::Internal(_))
                | (ErrorKind::Integrity, ConnectorError::Integrity(_))
        )
    }
}

fn expect(kind: &FaultKind, phase: Phase) -> Expect {
    use FaultKind as K;
    if phase == Phase::TokenRefresh {
        // The host talks to the token endpoint; whatever goes wrong there reaches the guest as
        // a transient refresh failure, which the one retry policy retries like a dropped
        // connection (the next attempt refreshes again).
        return match kind {
            K::CorruptByte => Expect::NotApplicable,
            K::UnknownFieldsAndTags | K::Slow(_) => Expect::SameRun(Check::Tolerated),
            _ => Expect::SameRun(Check::Retried("token refresh failed")),
        };
    }
    match kind {
        K::RateLimitJson { .. } | K::RateLimitText { .. } => {
            Expect::SameRun(Check::Retried("rate limited"))
        }
        K::Status(_) => Expect::SameRun(Check::Retried("server error")),
        K::DropConnection | K::DropMidBody => Expect::SameRun(Check::Retried("connection failed")),
        // A 401 refreshes the token once (the tenant has a refresh token) and sends again.
        K::ExpiredToken | K::InvalidToken => Expect::SameRun(Check::Refreshed),
        K::Reset if matches!(phase, Phase::MiddlePage | Phase::LastPage) => {
            Expect::SameRun(Check::Relisted)
        }
        K::Reset => Expect::NextRun(ErrorKind::Internal),
        // A first page larger than the host's body cap is asked for again with fewer entries
        // (the limit then stays in the cursor); a later page cannot be, and ends the run.
        K::HugeBody(_) if phase == Phase::FirstPage => Expect::SameRun(Check::SmallerPages),
        K::TruncatedJson | K::MalformedJson | K::WrongTypeJson | K::HugeBody(_) => {
            Expect::NextRun(ErrorKind::Internal)
        }
        K::UnknownFieldsAndTags | K::Slow(_) => Expect::SameRun(Check::Tolerated),
        K::CorruptByte if phase == Phase::Download => Expect::NextRun(ErrorKind::Integrity),
        K::CorruptByte => Expect::NotApplicable,
        // A server that never progresses is bounded per run: tests/integrity.rs.
        K::NoProgress => Expect::NotApplicable,
    }
}

/// The accounts the matrix runs against (shared by its cells; the cells run one at a time,
/// each on a fresh store).
struct Fixture {
    /// At least three listing pages.
    big: Emulator,
    big_pages: u32,
    /// A small account with a file of two download ranges.
    small: Emulator,
    download_path: String,
    download_content: Content,
}

const DOWNLOAD_PATH: &str = "/Download/two ranges.bin";

fn fixture() -> Fixture {
    let big = Emulator::start(EmulatorConfig {
        files: 4100,
        seed: 71,
        ..Default::default()
    })
    .expect("emulator");
    let probe = harness_on(&big);
    let pages = probe.sync().pages;
    probe.assert_matches_truth();
    assert!(
        pages >= 3,
        "the big account must list in at least three pages: {pages}"
    );
    let small = Emulator::start(EmulatorConfig {
        files: 120,
        seed: 72,
        ..Default::default()
    })
    .expect("emulator");
    // 4 MiB + 1 MiB: a download of two range requests.
    let content = Content::Pattern {
        seed: 9,
        len: 5 * 1024 * 1024 + 123,
    };
    small
        .create_file(DOWNLOAD_PATH, content.clone())
        .expect("file created");
    Fixture {
        big,
        big_pages: pages,
        small,
        download_path: DOWNLOAD_PATH.to_lowercase(),
        download_content: content,
    }
}

/// A sink the test can read after the host drops its end.
#[derive(Clone, Default)]
struct SharedSink(Arc<Mutex<Vec<u8>>>);

impl Write for SharedSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What one operation of a cell did.
struct Run {
    result: Result<RunOk, HostError>,
    /// The cursor stored after each page the run committed (from its progress reports).
    committed: Vec<Option<String>>,
}

enum RunOk {
    Sync(Outcome<SyncSummary>),
    Stream(Outcome<StreamSummary>, Vec<u8>),
}

impl RunOk {
    fn logs(&self) -> &[(String, String)] {
        match self {
            RunOk::Sync(o) => &o.stats.logs,
            RunOk::Stream(o, _) => &o.stats.logs,
        }
    }
    fn sleep_time(&self) -> Duration {
        match self {
            RunOk::Sync(o) => o.stats.sleep_time,
            RunOk::Stream(o, _) => o.stats.sleep_time,
        }
    }
}

fn run_once(h: &Harness, phase: Phase, download_id: Option<&str>) -> Run {
    if phase == Phase::Download {
        let id = download_id.unwrap_or_default();
        let sink = SharedSink::default();
        let result = h
            .host
            .stream(&h.tenant, id, Box::new(sink.clone()))
            .map(|o| {
                let bytes = std::mem::take(&mut *sink.0.lock().unwrap_or_else(|p| p.into_inner()));
                RunOk::Stream(o, bytes)
            });
        return Run {
            result,
            committed: Vec::new(),
        };
    }
    let committed = Arc::new(Mutex::new(Vec::new()));
    let (store, tenant, seen) = (h.host.store().clone(), h.tenant.clone(), committed.clone());
    // A progress report follows the commit of each page: read the cursor it stored.
    let observer = Box::new(move |signal: &GuestSignal| {
        if let GuestSignal::Progress { .. } = signal {
            let point = store.get_sync_point(&tenant).ok().flatten();
            seen.lock().unwrap_or_else(|p| p.into_inner()).push(point);
        }
    });
    let result = h
        .host
        .sync(&h.tenant, Some(observer), None)
        .map(RunOk::Sync);
    let committed = std::mem::take(&mut *committed.lock().unwrap_or_else(|p| p.into_inner()));
    Run { result, committed }
}

/// Runs one cell; `Ok` is the text of the summary table, `Err` what went wrong.
fn run_cell(fx: &Fixture, kind: &FaultKind, phase: Phase) -> Result<String, String> {
    let expected = expect(kind, phase);
    if expected == Expect::NotApplicable {
        return Ok("n/a".into());
    }
    let emulator = if phase.big_account() {
        &fx.big
    } else {
        &fx.small
    };
    emulator.clear_faults();
    let h = harness_on(emulator);
    let mut download_id = None;
    if phase == Phase::Download {
        h.sync();
        let record = h
            .records()
            .into_iter()
            .find(|r| r.path_lower() == Some(fx.download_path.as_str()))
            .ok_or("download file not synced")?;
        download_id = Some(record.external_id);
    }
    if phase == Phase::TokenRefresh {
        // The next API call finds its token expired; the refresh meets the fault.
        emulator.expire_access_tokens();
    }
    let before = cursor(&h);
    let route = phase.route();
    let skip = if phase == Phase::LastPage {
        fx.big_pages as usize - 2
    } else {
        0
    };
    emulator.reset_counts();
    emulator.inject(Fault {
        route: Some(route.into()),
        skip,
        count: 1,
        kind: kind.clone(),
    });
    let run = run_once(&h, phase, download_id.as_deref());
    let sent = requests(emulator, route);
    emulator.clear_faults();
    if sent <= skip as u64 {
        return Err(format!("the fault never fired: {sent} requests to {route}"));
    }

    let text = match (expected, run.result) {
        (_, Err(HostError::Invoke(e))) => return Err(format!("the guest trapped: {e}")),
        (Expect::SameRun(check), Ok(ok)) => {
            let logs = ok.logs();
            match check {
                Check::Tolerated => {}
                Check::SmallerPages => {
                    if !logs
                        .iter()
                        .any(|(level, m)| level == "warn" && m.contains("body cap"))
                    {
                        return Err("no warning that the page exceeded the body cap".into());
                    }
                }
                Check::Retried(reason) => {
                    if !logs
                        .iter()
                        .any(|(_, m)| m.contains("retrying") && m.contains(reason))
                    {
                        return Err(format!(
                            "no 'retrying' log line naming '{reason}':\n{}",
                            logs_text(logs)
                        ));
                    }
                    if sent < skip as u64 + 2 && phase != Phase::TokenRefresh {
                        return Err(format!("the request was not sent again ({sent} requests)"));
                    }
                }
                Check::Refreshed => {
                    if !logs.iter().any(|(_, m)| m.contains("refreshing"))
                        || requests(emulator, "oauth2/token") == 0
                    {
                        return Err(format!("no token refresh:\n{}", logs_text(logs)));
                    }
                }
                Check::Relisted => match &ok {
                    RunOk::Sync(o) if o.value.kind == SyncKind::Resync => {}
                    RunOk::Sync(o) => {
                        return Err(format!("a reset must re-list: {:?}", o.value.kind));
                    }
                    RunOk::Stream(..) => return Err("a stream cannot re-list".into()),
                },
            }
            if let FaultKind::RateLimitJson { retry_after, .. }
            | FaultKind::RateLimitText { retry_after } = kind
                && phase != Phase::TokenRefresh
            {
                // Exactly the wait the server asked for, no more, no less. (A 429 of the token
                // endpoint reaches the guest as a transient refresh failure, without the wait.)
                let waited = ok.sleep_time();
                if waited != Duration::from_secs(*retry_after) {
                    return Err(format!(
                        "waited {waited:?} for a retry_after of {retry_after} s"
                    ));
                }
            }
            check_stream(fx, &ok)?;
            match check {
                Check::Retried(_) => "retried",
                Check::Refreshed => "refreshed",
                Check::Relisted => "re-listed",
                Check::SmallerPages => "smaller pages",
                Check::Tolerated => "ok",
            }
            .to_string()
        }
        (Expect::SameRun(_), Err(e)) => return Err(format!("the run should have succeeded: {e}")),
        (Expect::NextRun(want), Ok(_)) => {
            return Err(format!("the run should have failed with {want:?}"));
        }
        (Expect::NextRun(want), Err(HostError::Connector(e))) => {
            if !want.matches(&e) {
                return Err(format!("expected {want:?}, got {e:?}"));
            }
            // Nothing past the last committed page: the cursor is where the run left it
            // before the failing call (unchanged if no page was committed).
            let expected_cursor = run.committed.last().cloned().unwrap_or(before.clone());
            let after = cursor(&h);
            if after != expected_cursor {
                return Err(format!(
                    "the failing run moved the cursor: {expected_cursor:?} -> {after:?}"
                ));
            }
            if run.committed.is_empty() && after != before {
                return Err("the cursor changed although no page was committed".into());
            }
            let again = run_once(&h, phase, download_id.as_deref());
            match again.result {
                Ok(ok) => check_stream(fx, &ok)?,
                Err(e) => return Err(format!("the next run failed too: {e}")),
            }
            let moved = if run.committed.is_empty() {
                "cursor unchanged"
            } else {
                "cursor at last commit"
            };
            format!("next run ({want:?}; {moved})")
        }
        (Expect::NextRun(_), Err(e)) => return Err(format!("not a connector error: {e}")),
        (Expect::NotApplicable, _) => unreachable!("handled above"),
    };
    h.assert_matches_truth();
    assert_no_duplicate_events(&h.events_since(0));
    Ok(text)
}

fn check_stream(fx: &Fixture, ok: &RunOk) -> Result<(), String> {
    let RunOk::Stream(outcome, bytes) = ok else {
        return Ok(());
    };
    let want = fx.download_content.content_hash();
    if bytes.len() as u64 != fx.download_content.len()
        || dropbox_emulator::content_hash(bytes) != want
    {
        return Err(format!(
            "streamed {} bytes that do not hash to the file's content",
            bytes.len()
        ));
    }
    if !outcome.value.verified || outcome.value.content_hash.as_deref() != Some(want.as_str()) {
        return Err(format!("the stream was not verified: {:?}", outcome.value));
    }
    Ok(())
}

#[test]
fn fault_matrix_every_kind_at_every_phase() {
    let _serial = serial();
    let started = Instant::now();
    let fx = fixture();
    let kinds = kinds();
    let mut table: BTreeMap<(usize, usize), String> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut cells = 0;
    for (k, (name, kind)) in kinds.iter().enumerate() {
        for (p, phase) in PHASES.iter().enumerate() {
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| run_cell(&fx, kind, *phase)))
                .unwrap_or_else(|panic| {
                    let text = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    Err(format!("panicked: {text}"))
                });
            let text = match result {
                Ok(text) => {
                    if text != "n/a" {
                        cells += 1;
                    }
                    text
                }
                Err(e) => {
                    failures.push(format!("{name} at {}: {e}", phase.label()));
                    "FAILED".to_string()
                }
            };
            table.insert((k, p), text);
        }
    }
    print_matrix(&kinds, &table);
    println!(
        "{cells} cells run in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} cells failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn print_matrix(kinds: &[(&str, FaultKind)], table: &BTreeMap<(usize, usize), String>) {
    let width = |p: usize| {
        kinds
            .iter()
            .enumerate()
            .map(|(k, _)| table.get(&(k, p)).map_or(0, |t| t.chars().count()))
            .max()
            .unwrap_or(0)
            .max(PHASES[p].label().len())
    };
    let widths: Vec<usize> = (0..PHASES.len()).map(width).collect();
    let first = kinds.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let mut header = format!("| {:first$} |", "fault \\ phase");
    for (p, phase) in PHASES.iter().enumerate() {
        header.push_str(&format!(" {:w$} |", phase.label(), w = widths[p]));
    }
    println!("{header}");
    println!(
        "|{}|",
        std::iter::once(first + 2)
            .chain(widths.iter().map(|w| w + 2))
            .map(|w| "-".repeat(w))
            .collect::<Vec<_>>()
            .join("|")
    );
    for (k, (name, _)) in kinds.iter().enumerate() {
        let mut row = format!("| {name:first$} |");
        for (p, w) in widths.iter().enumerate() {
            row.push_str(&format!(
                " {:w$} |",
                table.get(&(k, p)).map(String::as_str).unwrap_or("")
            ));
        }
        println!("{row}");
    }
}

// ---------------------------------------------------------------------------------------------
// Rate limits beyond the cap, statuses that are never retried, waits that block no one else

#[test]
fn a_rate_limit_beyond_the_cap_is_reported_at_once_with_the_wait() {
    let _serial = serial();
    let h = harness_on(
        &Emulator::start(EmulatorConfig {
            files: 30,
            seed: 81,
            ..Default::default()
        })
        .expect("emulator"),
    );
    let route = "users/get_current_account";
    // The cap is 60 s: each of these asks for more, by the body's field, the header alone, or
    // a plain-text body.
    let cases = [
        (
            FaultKind::RateLimitJson {
                retry_after: 120,
                reason: "too_many_requests".into(),
                include_field: true,
            },
            120_000,
            "too_many_requests",
        ),
        (
            FaultKind::RateLimitJson {
                retry_after: 61,
                reason: "too_many_write_operations".into(),
                include_field: false,
            },
            61_000,
            "too_many_write_operations",
        ),
        (
            FaultKind::RateLimitText { retry_after: 3600 },
            3_600_000,
            "too_many_requests",
        ),
    ];
    for (kind, wait_ms, reason) in cases {
        h.emulator.reset_counts();
        h.emulator.inject(Fault::once(route, kind.clone()));
        let started = Instant::now();
        match h.try_sync() {
            Err(HostError::Connector(ConnectorError::RateLimited(r))) => {
                assert_eq!(r.retry_after_ms, wait_ms, "{kind:?}");
                assert_eq!(r.reason, reason, "{kind:?}");
            }
            other => panic!(
                "{kind:?}: expected rate-limited, got {:?}",
                other.map(|o| o.value)
            ),
        }
        // At once: the connector does not sit out a wait beyond its cap (a generous bound).
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{kind:?} took {:?}",
            started.elapsed()
        );
        assert_eq!(
            requests(&h.emulator, route),
            1,
            "{kind:?}: a wait beyond the cap is not retried"
        );
        assert_eq!(cursor(&h), None);
    }
    h.emulator.clear_faults();
    h.sync();
    h.assert_matches_truth();
}

#[test]
fn statuses_that_a_retry_cannot_fix_are_sent_once() {
    let _serial = serial();
    let h = harness_on(
        &Emulator::start(EmulatorConfig {
            files: 30,
            seed: 82,
            ..Default::default()
        })
        .expect("emulator"),
    );
    let route = "files/list_folder";
    for status in [400u16, 403, 404, 409, 410, 422, 501, 505, 507] {
        h.emulator.reset_counts();
        h.emulator
            .inject(Fault::once(route, FaultKind::Status(status)));
        // A typed error: "internal" for what the server refused, "transient" for its own trouble.
        match (status, h.try_sync()) {
            (400..=499, Err(HostError::Connector(ConnectorError::Internal(_))))
            | (500.., Err(HostError::Connector(ConnectorError::Transient(_)))) => {}
            (_, other) => panic!("{status}: got {:?}", other.map(|o| o.value)),
        }
        assert_eq!(
            requests(&h.emulator, route),
            1,
            "{status} must not be retried"
        );
        assert_eq!(cursor(&h), None, "{status}");
    }
    // A 401 is not retried as such: the token is refreshed once, then the request is sent again.
    h.emulator.reset_counts();
    h.emulator
        .inject(Fault::once(route, FaultKind::Status(401)));
    h.try_sync().expect("a refreshed token succeeds");
    assert_eq!(
        (
            requests(&h.emulator, route),
            requests(&h.emulator, "oauth2/token")
        ),
        (2, 1)
    );
    h.host
        .store()
        .delete_sync_point(&h.tenant)
        .expect("cursor cleared for the next round");
    // Twice in a row: refreshed once only, then the user must connect again.
    h.emulator.reset_counts();
    h.emulator.inject(Fault {
        route: Some(route.into()),
        skip: 0,
        count: 2,
        kind: FaultKind::Status(401),
    });
    match h.try_sync() {
        Err(HostError::Connector(ConnectorError::AuthRequired(_))) => {}
        other => panic!(
            "expected authorization required, got {:?}",
            other.map(|o| o.value)
        ),
    }
    assert_eq!(
        (
            requests(&h.emulator, route),
            requests(&h.emulator, "oauth2/token")
        ),
        (2, 1)
    );
    connect_refreshable(&h.host, &h.tenant, &h.emulator);
    // The retried statuses, for contrast: sent again within the run.
    for status in [500u16, 502, 503, 504] {
        h.emulator.reset_counts();
        h.emulator.inject(Fault {
            route: Some(route.into()),
            skip: 0,
            count: 4,
            kind: FaultKind::Status(status),
        });
        let outcome = h
            .try_sync()
            .expect("four failures are within the five attempts");
        assert_eq!(requests(&h.emulator, route), 5, "{status}");
        let retries = outcome
            .stats
            .logs
            .iter()
            .filter(|(_, m)| {
                m.contains("retrying") && m.contains(&format!("server error {status}"))
            })
            .count();
        assert_eq!(
            retries,
            4,
            "{status}: every retry is logged with its reason:\n{}",
            logs_text(&outcome.stats.logs)
        );
        h.host
            .store()
            .delete_sync_point(&h.tenant)
            .expect("cursor cleared for the next round");
    }
    // Five failures in a row exhaust the attempts: a typed transient error.
    h.emulator.reset_counts();
    h.emulator.inject(Fault {
        route: Some(route.into()),
        skip: 0,
        count: 5,
        kind: FaultKind::DropConnection,
    });
    match h.try_sync() {
        Err(HostError::Connector(ConnectorError::Transient(_))) => {}
        other => panic!(
            "expected a transient error, got {:?}",
            other.map(|o| o.value)
        ),
    }
    assert_eq!(requests(&h.emulator, route), 5);
    h.emulator.clear_faults();
    h.sync();
    h.assert_matches_truth();
}

#[test]
fn a_tenant_waiting_out_a_rate_limit_does_not_hold_up_another() {
    let _serial = serial();
    let slow = Emulator::start(EmulatorConfig {
        files: 40,
        seed: 83,
        ..Default::default()
    })
    .expect("emulator");
    let fast = Emulator::start(EmulatorConfig {
        files: 40,
        seed: 84,
        ..Default::default()
    })
    .expect("emulator");
    // One host, two tenants, each on its own account.
    let h = harness_on(&fast);
    h.host
        .store()
        .set_tenant_api_url("slow", Some(&slow.base_url()))
        .expect("api url");
    connect_refreshable(&h.host, "slow", &slow);
    let route = "users/get_current_account";
    slow.inject(Fault {
        route: Some(route.into()),
        skip: 0,
        count: 2,
        kind: FaultKind::RateLimitJson {
            retry_after: 1,
            reason: "too_many_requests".into(),
            include_field: true,
        },
    });
    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| {
            let outcome = h
                .host
                .sync("slow", None, None)
                .expect("the slow tenant syncs after its waits");
            (outcome.stats.sleep_time, Instant::now())
        });
        // Once the slow tenant has met its first 429, sync the other tenant three times.
        let deadline = Instant::now() + Duration::from_secs(20);
        while requests(&slow, route) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        for _ in 0..3 {
            h.sync();
        }
        let fast_done = Instant::now();
        let (slept, slow_done) = waiting.join().expect("the slow tenant's thread");
        assert_eq!(
            slept,
            Duration::from_secs(2),
            "the slow tenant waited exactly what it was asked"
        );
        assert!(
            fast_done < slow_done,
            "the other tenant finished three syncs while the first one waited"
        );
    });
    h.assert_matches_truth();
    let slow_records = h.host.store().records("slow").expect("records");
    let diffs = diff_with_truth(&slow.truth(), &slow_records, |_| true);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The soak

/// The process's resident memory, in KiB (Linux).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A few random changes to the account: creations, edits, moves and renames of files and
/// folders, deletions, shares.
fn random_changes(emulator: &Emulator, rng: &mut Rng, round: usize) {
    let text = |s: &str| Content::Bytes(s.as_bytes().to_vec());
    for op in 0..rng.below(6) {
        let truth = emulator.truth();
        let files: Vec<_> = truth
            .iter()
            .filter(|t| t.kind == Kind::File && t.is_downloadable)
            .collect();
        let folders: Vec<_> = truth.iter().filter(|t| t.kind == Kind::Folder).collect();
        let dir = folders
            .get(rng.below(folders.len()))
            .map(|f| f.path_display.clone())
            .unwrap_or_default();
        let name = format!("s{round}o{op} {}", ["ä", "😀", "X", "b"][rng.below(4)]);
        // Some random operations are impossible (a folder into itself): they are skipped.
        let _ = match rng.below(10) {
            0 | 1 | 8 => emulator
                .create_file(&format!("{dir}/{name}.txt"), text(&name))
                .map(|_| ()),
            9 => emulator
                .create_file(&format!("{dir}/{name}/deeper/{name}.md"), text(&name))
                .map(|_| ()),
            2 if !files.is_empty() => emulator
                .modify_file(&files[rng.below(files.len())].path_display, text(&name))
                .map(|_| ()),
            3 if !files.is_empty() => emulator
                .move_path(
                    &files[rng.below(files.len())].path_display,
                    &format!("{dir}/{name}.moved"),
                )
                .map(|_| ()),
            4 if !folders.is_empty() => emulator
                .move_path(
                    &folders[rng.below(folders.len())].path_display,
                    &format!("/{name} dir"),
                )
                .map(|_| ()),
            5 if !files.is_empty() => emulator.delete(&files[rng.below(files.len())].path_display),
            // A whole folder now and then (deleting one is what removes most at once).
            6 if !folders.is_empty() && rng.below(4) == 0 => {
                emulator.delete(&folders[rng.below(folders.len())].path_display)
            }
            7 if !files.is_empty() => {
                let f = files[rng.below(files.len())];
                if f.shared_url.is_some() {
                    emulator.unshare(&f.path_display)
                } else {
                    emulator.share(&f.path_display).map(|_| ())
                }
            }
            _ => emulator.create_folder(&format!("/{name} new")).map(|_| ()),
        };
    }
}

/// Faults the soak draws from (small waits: the soak is about many runs, not long ones).
fn soak_fault(rng: &mut Rng) -> (&'static str, FaultKind) {
    let kinds: [(&str, FaultKind); 13] = [
        (
            "429",
            FaultKind::RateLimitJson {
                retry_after: 0,
                reason: "too_many_requests".into(),
                include_field: true,
            },
        ),
        ("429 text", FaultKind::RateLimitText { retry_after: 0 }),
        ("500", FaultKind::Status(500)),
        ("503", FaultKind::Status(503)),
        ("reset", FaultKind::Reset),
        ("expired token", FaultKind::ExpiredToken),
        ("invalid token", FaultKind::InvalidToken),
        ("truncated json", FaultKind::TruncatedJson),
        ("malformed json", FaultKind::MalformedJson),
        ("wrong-type json", FaultKind::WrongTypeJson),
        ("dropped connection", FaultKind::DropConnection),
        ("dropped mid-body", FaultKind::DropMidBody),
        ("unknown fields+tags", FaultKind::UnknownFieldsAndTags),
    ];
    // No huge bodies here (the matrix has them): the 16 MiB the host reads before refusing
    // one stays resident in the allocator as free memory, which would absorb, and hide, a
    // leak of that size.
    kinds[rng.below(kinds.len())].clone()
}

#[test]
fn soak_many_incremental_syncs_with_random_changes_and_faults() {
    let _serial = serial();
    let syncs: usize = env_or("SOAK_SYNCS", 200);
    let started = Instant::now();
    let emulator = Emulator::start(EmulatorConfig {
        files: 300,
        seed: 91,
        ..Default::default()
    })
    .expect("emulator");
    let h = harness_on(&emulator);
    h.sync();
    h.assert_matches_truth();
    let records_at_start = h.records().len();
    let mut rng = Rng(0x5eed_50a6);
    let routes = [
        Some("users/get_current_account"),
        Some("files/list_folder/continue"),
        Some("sharing/list_shared_links"),
        Some("oauth2/token"),
        None,
    ];
    let (mut ok, mut failed, mut rss_early) = (0usize, BTreeMap::<String, usize>::new(), None);
    let mut injected: BTreeMap<&str, usize> = BTreeMap::new();
    for round in 1..=syncs {
        random_changes(&emulator, &mut rng, round);
        if rng.below(2) == 0 {
            let (name, kind) = soak_fault(&mut rng);
            let route = routes[rng.below(routes.len())].map(String::from);
            emulator.inject(Fault {
                route,
                skip: rng.below(3),
                count: 1 + rng.below(2),
                kind,
            });
            *injected.entry(name).or_default() += 1;
        }
        if rng.below(20) == 0 {
            emulator.expire_access_tokens();
            *injected.entry("tokens expired").or_default() += 1;
        }
        if rng.below(25) == 0 {
            emulator.invalidate_cursors();
            *injected.entry("cursors reset").or_default() += 1;
        }
        match h.try_sync() {
            Ok(_) => {
                ok += 1;
                // A run that succeeded left exactly the account (nothing changed since).
                let diffs = diff_with_truth(&emulator.truth(), &h.records(), |_| true);
                assert!(diffs.is_empty(), "sync {round}: {}", diffs.join("\n"));
                assert_eq!(
                    h.host.store().pending_count(&h.tenant).expect("pending"),
                    0,
                    "sync {round}"
                );
            }
            Err(HostError::Connector(e)) => {
                let kind = format!("{e:?}")
                    .split('(')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                *failed.entry(kind).or_default() += 1;
                if let ConnectorError::AuthRequired(_) = e {
                    // Only the user can fix that: they connect the account again.
                    connect_refreshable(&h.host, &h.tenant, &emulator);
                }
            }
            Err(e) => panic!("sync {round}: not a typed connector error: {e}"),
        }
        emulator.clear_faults();
        if round == 20.min(syncs) {
            rss_early = rss_kib();
        }
        if round % 100 == 0 {
            println!("soak: sync {round}: VmRSS {} KiB", rss_kib().unwrap_or(0));
        }
    }
    // Whatever the last run did, one clean run brings the store to the account.
    h.sync();
    let rss_late = rss_kib();
    h.assert_matches_truth();
    assert_no_duplicate_events(&h.events_since(0));
    let elapsed = started.elapsed();
    println!(
        "soak: {syncs} incremental syncs in {:.1} s: {ok} succeeded, failed with a typed error: {failed:?}",
        elapsed.as_secs_f64()
    );
    println!("soak: faults injected: {injected:?}");
    println!(
        "soak: {records_at_start} records at the start, {} at the end, {} events",
        h.records().len(),
        h.events_since(0).len()
    );
    if let (Some(early), Some(late)) = (rss_early, rss_late) {
        println!(
            "soak: VmRSS after sync 20: {} MiB, after sync {syncs}: {} MiB",
            early / 1024,
            late / 1024
        );
        // Measured: about +1 MiB per 100 runs (the growing store, event table and emulator
        // journal in this process). A leak of 100 KiB per run would pass the bound.
        assert!(
            late <= early + 16 * 1024,
            "host memory grew from {early} KiB to {late} KiB"
        );
    }
    assert!(ok >= syncs / 2, "most runs succeed: {ok} of {syncs}");
}

/// When the stored token is already past its expiry, the host refreshes before sending; a
/// transient failure of that refresh (a 503 of the token endpoint) must stay transient: not
/// `auth-required`, and the tenant is not flagged for re-authorization (nothing is wrong with
/// the grant).
#[test]
fn a_token_endpoint_outage_during_a_proactive_refresh_is_transient() {
    let _serial = serial();
    let emulator = Emulator::start(EmulatorConfig {
        files: 20,
        seed: 85,
        ..Default::default()
    })
    .expect("emulator");
    let h = harness_on(&emulator);
    let tokens = emulator.issue_tokens(&SCOPES, 14_400);
    let config = emulator.config();
    h.host
        .connect(
            &h.tenant,
            StoredCredentials {
                access_token: tokens.access_token,
                refresh_token: Some(tokens.refresh_token),
                // Already expired as far as the host knows: it refreshes before the first call.
                expires_at: Some(now() - 10),
                client_id: Some(config.client_id.clone()),
                client_secret: Some(config.client_secret.clone()),
                account_id: None,
            },
        )
        .expect("credentials stored");
    emulator.inject(Fault {
        route: Some("oauth2/token".into()),
        skip: 0,
        count: 10,
        kind: FaultKind::Status(503),
    });
    match h.try_sync() {
        Err(HostError::Connector(ConnectorError::Transient(_))) => {}
        other => panic!(
            "expected a transient error, got {:?}",
            other.map(|o| o.value)
        ),
    }
    emulator.clear_faults();
    h.sync();
    h.assert_matches_truth();
}
