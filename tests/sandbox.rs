//! The sandbox holds against a guest that misbehaves on purpose (tests/guests/hostile): runaway
//! loops, memory hogs, traps, forbidden destinations, the host's files, environment and
//! sockets, other tenants' data.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use host_test::bindings::types::ConnectorError;
use host_test::http::HttpSettings;
use host_test::policy::NetPolicy;
use host_test::runtime::{InvokeError, Runtime, SandboxConfig};
use host_test::store::{RecordStore, SqliteStore, StoredCredentials};
use host_test::tenant::{Services, TenantContext};

/// The hostile runtime's bound on waiting without progress (short, so the tests are).
const NO_PROGRESS: Duration = Duration::from_secs(2);

fn hostile() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        host_test::components::hostile_runtime(SandboxConfig {
            memory_limit: 32 * 1024 * 1024,
            max_compute_between_calls: Duration::from_millis(500),
            max_wait_without_progress: NO_PROGRESS,
            max_sleep: Duration::from_secs(1),
            ..Default::default()
        })
        .expect("the hostile guest loads")
    })
}

/// A loopback server that counts connections and answers every request with its headers.
fn counting_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                use std::io::{BufRead, BufReader, Write};
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let body = head.replace("\r\n", "|");
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
            });
        }
    });
    (format!("http://{addr}"), hits)
}

fn services(store: Arc<dyn RecordStore>, redirect: Option<&str>) -> Arc<Services> {
    let policy = NetPolicy::new(["api.dropboxapi.com".to_string()], redirect).unwrap();
    Services::new(
        store,
        policy,
        HttpSettings::default(),
        "https://api.dropboxapi.com/oauth2/token",
    )
}

fn run(
    services: &Arc<Services>,
    tenant: &str,
    command: &str,
) -> Result<Result<String, ConnectorError>, InvokeError> {
    let mut instance = hostile().instantiate(TenantContext::new(tenant, services.clone()))?;
    Ok(instance.get_signed_url(command)?.map(|u| u.url))
}

fn ok(services: &Arc<Services>, tenant: &str, command: &str) -> String {
    match run(services, tenant, command) {
        Ok(Ok(text)) => text,
        other => panic!("{command}: {other:?}"),
    }
}

#[test]
fn a_runaway_loop_is_stopped_and_the_host_stays_usable() {
    let s = services(Arc::new(SqliteStore::open_in_memory().unwrap()), None);
    let started = Instant::now();
    let err = run(&s, "a", "spin").unwrap_err();
    assert!(matches!(err, InvokeError::Runaway), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(ok(&s, "a", "config"), "");
}

#[test]
fn long_work_that_keeps_calling_the_host_is_not_stopped() {
    let s = services(Arc::new(SqliteStore::open_in_memory().unwrap()), None);
    // Rounds of computation split by host calls, several times the 500 ms bound in total.
    let started = Instant::now();
    assert!(ok(&s, "a", "work 400").starts_with("work:"));
    assert!(
        started.elapsed() > Duration::from_millis(1500),
        "the work must outlast the bound to prove anything"
    );
}

#[test]
fn allocating_past_the_memory_cap_fails_cleanly() {
    let s = services(Arc::new(SqliteStore::open_in_memory().unwrap()), None);
    let err = run(&s, "a", "alloc").unwrap_err();
    assert!(
        matches!(err, InvokeError::MemoryLimit { limit } if limit == 32 * 1024 * 1024),
        "{err:?}"
    );
    assert_eq!(ok(&s, "a", "config"), "");
}

#[test]
fn a_trap_does_not_affect_the_next_invocation() {
    let s = services(Arc::new(SqliteStore::open_in_memory().unwrap()), None);
    let err = run(&s, "a", "panic").unwrap_err();
    assert!(matches!(err, InvokeError::Trap(_)), "{err:?}");
    assert_eq!(ok(&s, "a", "put id:1 /one"), "put:ok");
    assert_eq!(ok(&s, "a", "get id:1"), "get:1");
}

#[test]
fn a_host_outside_the_allowlist_is_refused_without_a_connection() {
    let (base, hits) = counting_server();
    // The allowed host is redirected to the local server; anything else is refused.
    let s = services(
        Arc::new(SqliteStore::open_in_memory().unwrap()),
        Some(&base),
    );
    let port = base.rsplit(':').next().unwrap();
    for url in [
        format!("https://127.0.0.1:{port}/x"),
        "https://evil.example/steal".to_string(),
        format!("http://127.0.0.1:{port}/x"),
        "https://api.dropboxapi.com.evil.example/".to_string(),
    ] {
        let answer = ok(&s, "a", &format!("http {url}"));
        assert!(
            answer.starts_with("destination-not-allowed:"),
            "{url}: {answer}"
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "no connection may be attempted"
    );
    // The allowed host works, and reaches the server it is redirected to.
    let answer = ok(&s, "a", "http https://api.dropboxapi.com/2/ping");
    assert!(answer.starts_with("status:200"), "{answer}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[test]
fn the_guest_cannot_forge_credentials_and_the_token_is_attached_by_the_host() {
    let (base, _hits) = counting_server();
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    store
        .put_credentials(
            "a",
            &StoredCredentials {
                access_token: "sl.secret-token".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let s = services(store, Some(&base));
    let answer = ok(&s, "a", "forge-auth https://api.dropboxapi.com/2/x");
    assert!(answer.starts_with("invalid-request:"), "{answer}");
    // An authenticated request carries the tenant's token to the server; the guest sees only
    // what the server chose to echo (this test server echoes headers, Dropbox does not).
    let echoed = ok(&s, "a", "http-auth https://api.dropboxapi.com/2/x");
    assert!(
        echoed.contains("authorization: Bearer sl.secret-token")
            || echoed.contains("Authorization: Bearer sl.secret-token"),
        "{echoed}"
    );
    // Another tenant without credentials gets a typed error, not someone else's token.
    let other = ok(&s, "b", "http-auth https://api.dropboxapi.com/2/x");
    assert!(other.starts_with("no-credentials:"), "{other}");
}

#[test]
fn no_files_no_environment_no_sockets() {
    let s = services(Arc::new(SqliteStore::open_in_memory().unwrap()), None);
    // SAFETY of the claim: the host process certainly has environment variables and arguments.
    assert!(std::env::vars_os().count() > 0);
    assert_eq!(ok(&s, "a", "env"), "env:0 args:0");
    assert!(ok(&s, "a", "read /etc/passwd").starts_with("read:err"));
    assert!(ok(&s, "a", "list-dir /").starts_with("list-dir:err"));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    assert!(ok(&s, "a", &format!("socket {addr}")).starts_with("socket:err"));
}

#[test]
fn tenants_cannot_see_or_change_each_other() {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    store
        .put_credentials(
            "a",
            &StoredCredentials {
                access_token: "sl.a".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let s = services(store.clone(), None);
    assert_eq!(ok(&s, "a", "put id:secret /secret.txt"), "put:ok");
    assert_eq!(ok(&s, "a", "sync-point hostile"), "sync-point:id:secret");
    assert_eq!(ok(&s, "b", "get id:secret"), "get:0");
    assert_eq!(ok(&s, "b", "sync-point hostile"), "sync-point:none");
    // A purge of everything in tenant b leaves tenant a alone.
    assert_eq!(ok(&s, "b", "purge-all"), "purged:0");
    assert_eq!(ok(&s, "a", "get id:secret"), "get:1");
    // Tenant b cannot refresh tenant a's credentials either: it has none.
    let refreshed = ok(&s, "b", "refresh");
    assert!(
        refreshed.starts_with("refresh:err:") && refreshed.contains("ReauthenticationRequired"),
        "{refreshed}"
    );
    assert_eq!(
        store.credentials("a").unwrap().unwrap().access_token,
        "sl.a"
    );
}

#[test]
fn a_batch_with_its_sync_point_is_all_or_nothing() {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let s = services(store.clone(), None);
    assert_eq!(ok(&s, "a", "put id:1 /one"), "put:ok");
    store.inject_apply_failure(Some((0, 0)));
    assert!(ok(&s, "a", "put id:2 /two").starts_with("put:err"));
    store.inject_apply_failure(None);
    assert_eq!(ok(&s, "a", "get id:2"), "get:0");
    assert_eq!(ok(&s, "a", "sync-point hostile"), "sync-point:id:1");
}

// ---------------------------------------------------------------------------------------------
// Redirects, endless bodies, secrets

use std::io::{BufRead as _, BufReader, Write as _};
use std::sync::Mutex;

/// Read one request's head (up to the blank line); returns it as text.
fn read_head(stream: &std::net::TcpStream) -> String {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            return head;
        }
        head.push_str(&line);
    }
}

/// A loopback server that answers every request with the same raw response head and body.
fn fixed_server(response: String) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let head = read_head(&stream);
            seen.lock().unwrap().push(head);
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (format!("http://{addr}"), heads)
}

#[test]
fn a_redirect_from_an_allowed_host_is_not_followed() {
    // The place the redirect points to: a listener that counts every connection.
    let (elsewhere, hits) = counting_server();
    let (base, _) = fixed_server(format!(
        "HTTP/1.1 302 Found\r\nLocation: {elsewhere}/stolen\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ));
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    // With a token: following the redirect would also have carried it to the other host.
    store
        .put_credentials(
            "a",
            &StoredCredentials {
                access_token: "sl.redirected".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let s = services(store, Some(&base));
    for verb in ["http", "http-auth"] {
        let answer = ok(
            &s,
            "a",
            &format!("{verb} https://api.dropboxapi.com/2/files/list_folder"),
        );
        assert!(
            answer.starts_with("status:302"),
            "{verb}: the guest sees the redirect itself: {answer}"
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "nothing may connect to the redirect's target"
    );
    // The target is reachable in itself (so 0 above means something).
    let mut direct = std::net::TcpStream::connect(elsewhere.trim_start_matches("http://")).unwrap();
    let _ = direct.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    while hits.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

/// A server whose response body never ends (read-to-close or chunked); counts what it wrote.
fn endless_server(chunked: bool) -> (String, Arc<std::sync::atomic::AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let counter = counter.clone();
            std::thread::spawn(move || {
                read_head(&stream);
                let head = if chunked {
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                } else {
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
                };
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let block = vec![b' '; 64 * 1024];
                let framed = [
                    format!("{:x}\r\n", block.len()).into_bytes(),
                    block.clone(),
                    b"\r\n".to_vec(),
                ]
                .concat();
                // Until the reader goes away.
                loop {
                    let chunk = if chunked { &framed } else { &block };
                    if stream.write_all(chunk).is_err() {
                        return;
                    }
                    counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                }
            });
        }
    });
    (format!("http://{addr}"), sent)
}

#[test]
fn an_endless_response_body_is_cut_at_the_cap() {
    let cap = HttpSettings::default().max_body_bytes;
    for chunked in [false, true] {
        let (base, sent) = endless_server(chunked);
        let s = services(
            Arc::new(SqliteStore::open_in_memory().unwrap()),
            Some(&base),
        );
        let answer = ok(
            &s,
            "a",
            "http https://api.dropboxapi.com/2/files/list_folder",
        );
        assert_eq!(
            answer,
            format!("body-too-large:{cap}"),
            "chunked: {chunked}"
        );
        // The host stopped reading at the cap: the server could only fill the cap and the
        // sockets' buffers before its writes failed. (A host that kept reading would have
        // taken it to the guest's 5 s timeout, and a "timeout" answer.)
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = u64::MAX;
        while sent.load(Ordering::SeqCst) != last && Instant::now() < deadline {
            last = sent.load(Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(100));
        }
        let written = sent.load(Ordering::SeqCst);
        assert!(
            written >= cap && written < cap + 32 * 1024 * 1024,
            "chunked: {chunked}: the server wrote {written} bytes"
        );
    }
}

#[test]
fn secrets_never_reach_the_guest() {
    const ACCESS: &str = "sl.ACCESS-0a1b2c3d4e5f-secret";
    const REFRESH: &str = "REFRESH-9f8e7d6c-secret";
    const CLIENT_SECRET: &str = "CLIENT-SECRET-5a5a5a";
    // A server that answers like Dropbox: it never echoes what it received.
    let (base, heads) = fixed_server(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}".to_string(),
    );
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    store
        .put_credentials(
            "a",
            &StoredCredentials {
                access_token: ACCESS.into(),
                refresh_token: Some(REFRESH.into()),
                expires_at: None,
                client_id: Some("client-id".into()),
                client_secret: Some(CLIENT_SECRET.into()),
                account_id: None,
            },
        )
        .unwrap();
    store.set_setting("a", "batch_size", "50").unwrap();
    let s = services(store.clone(), Some(&base));
    let settings = store.settings("a").unwrap();
    let mut instance = hostile()
        .instantiate(TenantContext::new("a", s.clone()).with_settings(settings))
        .unwrap();
    let seen = match instance
        .get_signed_url("probe-secrets https://api.dropboxapi.com/2/users/get_current_account")
    {
        Ok(Ok(u)) => u.url,
        other => panic!("{other:?}"),
    };
    // The probe did see what it may see (so the absence below means something)...
    assert!(
        seen.contains("config batch_size=50")
            && seen.contains("status 200")
            && seen.contains("body {\"ok\":true}"),
        "{seen}"
    );
    // ...and the token did travel, from the host to the server.
    let received = heads.lock().unwrap().join("\n");
    assert!(received.contains(&format!("Bearer {ACCESS}")), "{received}");
    for secret in [ACCESS, REFRESH, CLIENT_SECRET, "secret"] {
        assert!(
            !seen.contains(secret),
            "the guest could read {secret}:\n{seen}"
        );
    }
}

/// Services whose transport has `http` settings (limits) of their own.
fn services_with(redirect: Option<&str>, http: HttpSettings) -> Arc<Services> {
    let policy = NetPolicy::new(["api.dropboxapi.com".to_string()], redirect).unwrap();
    Services::new(
        Arc::new(SqliteStore::open_in_memory().unwrap()),
        policy,
        http,
        "https://api.dropboxapi.com/oauth2/token",
    )
}

/// A loopback server that answers every request after `delay`, and records the most requests
/// it ever had in progress at once.
fn slow_server(delay: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let seen = most.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (in_flight, most) = (in_flight.clone(), most.clone());
            std::thread::spawn(move || {
                let _head = read_head(&stream);
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(delay);
                in_flight.fetch_sub(1, Ordering::SeqCst);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
            });
        }
    });
    (format!("http://{addr}"), seen)
}

#[test]
fn started_requests_run_in_the_background_up_to_the_pending_limit() {
    let delay = Duration::from_millis(600);
    let (base, most) = slow_server(delay);
    let s = services_with(Some(&base), HttpSettings::default());
    let limit = HttpSettings::default().max_pending_requests;
    assert_eq!(limit, 4);
    let started = Instant::now();
    // One more than allowed: the fifth is refused at `start`; the four run at once.
    let answer = ok(
        &s,
        "a",
        "start-many 5 https://api.dropboxapi.com/2/files/list_folder",
    );
    let elapsed = started.elapsed();
    assert!(
        answer.starts_with(
            "started:4 statuses:200,200,200,200 refused:invalid-request:too many pending requests"
        ),
        "{answer}"
    );
    // An id can be collected once.
    assert!(answer.contains("again:invalid-request:"), "{answer}");
    assert!(
        most.load(Ordering::SeqCst) >= 2,
        "the requests overlapped at the server"
    );
    assert!(
        elapsed < delay * 3,
        "four requests of {delay:?} took {elapsed:?}: they ran one after the other"
    );
}

#[test]
fn a_started_request_gets_the_same_checks_as_send() {
    let (base, hits) = counting_server();
    let s = services_with(Some(&base), HttpSettings::default());
    let answer = ok(&s, "a", "start-many 1 https://elsewhere.example/x");
    assert!(
        answer.starts_with("started:0 statuses: refused:destination-not-allowed:elsewhere.example"),
        "{answer}"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "no connection was attempted"
    );
    // A request never waited for is dropped with the instance; the next instance is unharmed.
    assert!(ok(&s, "a", "start-and-leave https://api.dropboxapi.com/2/x").starts_with("left:"));
    assert_eq!(ok(&s, "a", "config"), "");
}

#[test]
fn the_limits_are_the_transports() {
    let s = services_with(None, HttpSettings::default());
    let d = HttpSettings::default();
    assert_eq!(
        ok(&s, "a", "limits"),
        format!(
            "limits:{}:30000:{}:4",
            d.max_body_bytes,
            d.max_read_timeout.as_millis()
        )
    );
    // A smaller cap is stated as it is enforced, never below the contract's 1 MiB.
    let small = services_with(None, HttpSettings::default().with_body_cap(1));
    assert_eq!(
        ok(&small, "a", "limits"),
        format!("limits:1048576:30000:{}:4", d.max_read_timeout.as_millis())
    );
}

#[test]
fn remove_marks_one_record_and_list_records_pages_by_id() {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let s = services(store.clone(), None);
    assert_eq!(ok(&s, "a", "put id:2 /two"), "put:ok");
    assert_eq!(ok(&s, "a", "put id:1 /one"), "put:ok");
    assert_eq!(ok(&s, "a", "put id:3 /one/three"), "put:ok");
    assert_eq!(ok(&s, "a", "list-records"), "list-records:id:1,id:2,id:3");
    assert_eq!(ok(&s, "a", "remove id:1"), "remove:ok");
    // Only the record itself: its descendant by path stays live.
    assert_eq!(ok(&s, "a", "list-records"), "list-records:id:2,id:3");
    assert_eq!(store.pending_count("a").unwrap(), 1);
    assert_eq!(ok(&s, "b", "list-records"), "list-records:");
}

// ---------------------------------------------------------------------------------------------
// Waits (issue 31, item 1): a clock wait cannot hold a host thread, a stop request ends waits,
// and a long `sleep` is not computation.

/// What an invocation of the hostile guest answered.
type Answer = Result<Result<String, ConnectorError>, InvokeError>;

/// Run `command` on a thread of its own and give up on it after `limit` (a runtime that lets a
/// wait hold the thread for ever would otherwise hang the test): `None` when it did not end.
fn run_within(
    runtime: &'static Runtime,
    services: &Arc<Services>,
    command: &str,
    stop_after: Option<Duration>,
    limit: Duration,
) -> Option<(Answer, Duration)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let context = TenantContext::new("a", services.clone()).with_stop(stop.clone());
    let command = command.to_string();
    let started = Instant::now();
    std::thread::spawn(move || {
        let result = runtime
            .instantiate(context)
            .and_then(|mut i| i.get_signed_url(&command).map(|r| r.map(|u| u.url)));
        let _ = tx.send(result);
    });
    if let Some(after) = stop_after {
        std::thread::sleep(after);
        stop.store(true, Ordering::SeqCst);
    }
    rx.recv_timeout(limit).ok().map(|r| (r, started.elapsed()))
}

/// A runtime whose no-progress bound is long, to see what a stop request does on its own.
fn patient() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        host_test::components::hostile_runtime(SandboxConfig {
            memory_limit: 32 * 1024 * 1024,
            max_compute_between_calls: Duration::from_millis(500),
            max_wait_without_progress: Duration::from_secs(120),
            max_sleep: Duration::from_secs(120),
            ..Default::default()
        })
        .expect("the hostile guest loads")
    })
}

#[test]
fn a_clock_wait_for_ever_ends_past_the_no_progress_bound() {
    let s = services(Arc::new(SqliteStore::open_in_memory().unwrap()), None);
    for command in [
        "clock-block-forever",
        "clock-instant-forever",
        "poll-forever",
        "std-sleep max",
        "host-sleep-loop max",
    ] {
        let Some((result, took)) =
            run_within(hostile(), &s, command, None, Duration::from_secs(20))
        else {
            panic!("{command}: still waiting after 20 s: the wait holds a host thread");
        };
        assert!(
            matches!(result, Err(InvokeError::NoProgress { bound }) if bound == NO_PROGRESS),
            "{command}: {result:?}"
        );
        assert!(
            took >= NO_PROGRESS && took < NO_PROGRESS + Duration::from_secs(3),
            "{command}: ended after {took:?}"
        );
    }
    // The host carries on.
    assert_eq!(ok(&s, "a", "config"), "");
}

#[test]
fn a_stop_request_ends_every_kind_of_wait() {
    let s = services(Arc::new(SqliteStore::open_in_memory().unwrap()), None);
    let stop_after = Duration::from_millis(300);
    // A wait the guest can carry on from: cut short, the guest returns.
    for (command, expected) in [
        ("clock-block-forever", "woke"),
        ("host-sleep max", "slept:"),
    ] {
        let Some((result, took)) = run_within(
            patient(),
            &s,
            command,
            Some(stop_after),
            Duration::from_secs(20),
        ) else {
            panic!("{command}: a stop request did not end the wait");
        };
        match result {
            Ok(Ok(text)) => assert!(text.starts_with(expected), "{command}: {text}"),
            other => panic!("{command}: {other:?}"),
        }
        assert!(took < Duration::from_secs(3), "{command}: took {took:?}");
    }
    // A wait that cannot return without lying (`poll` must name a ready pollable), and a guest
    // that waits again after the stop without any progress: the operation ends.
    for command in ["poll-forever", "std-sleep max", "host-sleep-loop max"] {
        let Some((result, took)) = run_within(
            patient(),
            &s,
            command,
            Some(stop_after),
            Duration::from_secs(20),
        ) else {
            panic!("{command}: a stop request did not end the wait");
        };
        assert!(
            matches!(result, Err(InvokeError::Stopped)),
            "{command}: {result:?}"
        );
        assert!(took < Duration::from_secs(3), "{command}: took {took:?}");
    }
}

#[test]
fn a_long_sleep_is_not_a_runaway_and_host_sleep_is_capped() {
    let s = services(Arc::new(SqliteStore::open_in_memory().unwrap()), None);
    // Three times the runaway bound (500 ms), within the no-progress bound (2 s).
    let Some((result, _)) = run_within(
        hostile(),
        &s,
        "std-sleep 1500",
        None,
        Duration::from_secs(20),
    ) else {
        panic!("std-sleep 1500 did not end");
    };
    match result {
        Ok(Ok(text)) => {
            let ms: u64 = text.trim_start_matches("slept:").parse().unwrap();
            assert!((1500..1900).contains(&ms), "{text}");
        }
        other => panic!("std::thread::sleep(1.5 s): {other:?}"),
    }
    // `host.sleep(u64::MAX)` returns after the cap (1 s here).
    let Some((result, _)) = run_within(
        hostile(),
        &s,
        "host-sleep max",
        None,
        Duration::from_secs(20),
    ) else {
        panic!("host.sleep(u64::MAX) did not return");
    };
    match result {
        Ok(Ok(text)) => {
            let ms: u64 = text.trim_start_matches("slept:").parse().unwrap();
            assert!((1000..1500).contains(&ms), "{text}");
        }
        other => panic!("host.sleep(u64::MAX): {other:?}"),
    }
    assert_eq!(
        host_test::runtime::SandboxConfig::default().max_sleep,
        Duration::from_secs(300),
        "the cap the WIT states"
    );
}

// ---------------------------------------------------------------------------------------------
// Lists and wasmtime's own limits (item 3)

use host_test::runtime::MAX_LIST_ITEMS;

fn services_on(store: Arc<SqliteStore>, http: HttpSettings) -> Arc<Services> {
    let policy = NetPolicy::new(["api.dropboxapi.com".to_string()], None).unwrap();
    Services::new(
        store,
        policy,
        http,
        "https://api.dropboxapi.com/oauth2/token",
    )
}

#[test]
fn an_apply_of_the_most_changes_fits_and_one_more_is_refused() {
    for cap in [
        HttpSettings::MIN_BODY_CAP,
        HttpSettings::default().max_body_bytes,
    ] {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let s = services_on(store.clone(), HttpSettings::default().with_body_cap(cap));
        let answer = ok(&s, "a", &format!("apply-many {MAX_LIST_ITEMS}"));
        assert_eq!(answer, format!("apply:ok:{MAX_LIST_ITEMS}"), "cap {cap}");
        let answer = ok(&s, "b", &format!("apply-many {}", MAX_LIST_ITEMS + 1));
        assert!(
            answer.starts_with("apply:err:StoreError::Invalid("),
            "cap {cap}: {answer}"
        );
        assert_eq!(store.record_count("b").unwrap(), 0, "nothing of it stored");
    }
}

#[test]
fn a_list_past_the_cap_is_an_error_never_a_short_list() {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let s = services_on(store.clone(), HttpSettings::default());
    assert_eq!(
        ok(&s, "a", &format!("apply-many {}", MAX_LIST_ITEMS)),
        format!("apply:ok:{MAX_LIST_ITEMS}")
    );
    // One more, shared, by the store's own hand: the tenant has more shared records than a
    // list may hold.
    let mut changes = Vec::new();
    for i in 0..=MAX_LIST_ITEMS {
        changes.push(host_test::store::Change::Upsert {
            record: host_test::store::Record {
                external_id: format!("id:shared{i}"),
                revision: None,
                name: format!("s{i}"),
                path: Some(host_test::store::RecordPath {
                    display: format!("/shared/s{i}"),
                    lower: format!("/shared/s{i}"),
                }),
                parent_external_id: None,
                kind: host_test::store::RecordKind::File,
                mime_type: "text/plain".into(),
                size: 0,
                content_hash: None,
                client_modified: None,
                server_modified: None,
                is_downloadable: true,
                export_format: None,
                web_url: None,
                is_shared: true,
                shared_url: Some(format!("https://www.dropbox.com/s/{i}")),
            },
            event: host_test::store::ChangeKind::Created,
        });
    }
    store.apply("b", &changes[..MAX_LIST_ITEMS], None).unwrap();
    assert_eq!(
        ok(&s, "b", "list-shared"),
        format!("listed:{MAX_LIST_ITEMS}")
    );
    store.apply("b", &changes[MAX_LIST_ITEMS..], None).unwrap();
    let answer = ok(&s, "b", "list-shared");
    assert!(
        answer.starts_with("list:err:StoreError::Invalid("),
        "{answer}"
    );

    for (command, full) in [
        ("list-records-limit", format!("listed:{MAX_LIST_ITEMS}")),
        ("list-subtree-limit", format!("listed:{MAX_LIST_ITEMS}")),
    ] {
        assert_eq!(ok(&s, "a", &format!("{command} {MAX_LIST_ITEMS}")), full);
        let answer = ok(&s, "a", &format!("{command} {}", MAX_LIST_ITEMS + 1));
        assert!(
            answer.starts_with("list:err:StoreError::Invalid("),
            "{command}: {answer}"
        );
    }
    let answer = ok(&s, "a", &format!("get-many {}", MAX_LIST_ITEMS + 1));
    assert!(
        answer.starts_with("get:err:StoreError::Invalid("),
        "{answer}"
    );
    assert_eq!(ok(&s, "a", &format!("get-many {MAX_LIST_ITEMS}")), "got:0");
}

#[test]
fn wasmtime_limits_on_what_a_host_call_copies_are_set() {
    let s = services_on(
        Arc::new(SqliteStore::open_in_memory().unwrap()),
        HttpSettings::default().with_body_cap(HttpSettings::MIN_BODY_CAP),
    );
    // The largest random-bytes request.
    assert_eq!(ok(&s, "a", "random 1048576"), "random:1048576");
    let err = run(&s, "a", "random 1048577").unwrap_err();
    assert!(matches!(err, InvokeError::ResourceLimit(_)), "{err:?}");
    // The resource table: a guest cannot make the host hold a million pollables.
    assert_eq!(ok(&s, "a", "pollables 500"), "pollables:500");
    let err = run(&s, "a", "pollables 5000").unwrap_err();
    assert!(matches!(err, InvokeError::ResourceLimit(_)), "{err:?}");
    // Hostcall fuel: one call copies at most twice the body cap plus the items' share.
    let fuel = host_test::runtime::hostcall_fuel(HttpSettings::MIN_BODY_CAP);
    assert_eq!(ok(&s, "a", "log-bytes 2097152"), "logged");
    let err = run(&s, "a", &format!("log-bytes {}", fuel + 1)).unwrap_err();
    assert!(matches!(err, InvokeError::ResourceLimit(_)), "{err:?}");
    assert_eq!(ok(&s, "a", "config"), "");
}

// ---------------------------------------------------------------------------------------------
// Requests started and never waited for (item 17)

/// A server that sends a response head and then one byte of body every 50 ms, until the
/// client goes away; the flags say it is sending, and that the client went away.
fn trickle_server() -> (
    String,
    Arc<std::sync::atomic::AtomicBool>,
    Arc<std::sync::atomic::AtomicBool>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sending = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (sending_flag, closed_flag) = (sending.clone(), closed.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (sending, closed) = (sending_flag.clone(), closed_flag.clone());
            std::thread::spawn(move || {
                read_head(&stream);
                let head = "HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n";
                if stream.write_all(head.as_bytes()).is_ok() {
                    sending.store(true, Ordering::SeqCst);
                    while stream.write_all(b"x").and_then(|_| stream.flush()).is_ok() {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                closed.store(true, Ordering::SeqCst);
            });
        }
    });
    (format!("http://{addr}"), sending, closed)
}

/// Wait up to 3 s for `done`.
fn within_3s(done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

#[test]
fn a_request_never_waited_for_is_cancelled_when_the_instance_ends() {
    let (base, sending, closed) = trickle_server();
    let s = services_with(Some(&base), HttpSettings::default());
    // The guest starts a request (10 s timeout) and returns without waiting for it; the
    // instance lives on until dropped below.
    let mut instance = hostile()
        .instantiate(TenantContext::new("a", s.clone()))
        .unwrap();
    let answer = match instance
        .get_signed_url("start-and-leave https://api.dropboxapi.com/2/files/download")
    {
        Ok(Ok(u)) => u.url,
        other => panic!("{other:?}"),
    };
    assert!(answer.starts_with("left:"), "{answer}");
    assert!(
        within_3s(|| sending.load(Ordering::SeqCst)),
        "the request reached the server"
    );
    assert!(!closed.load(Ordering::SeqCst));
    assert_eq!(s.http.background_requests(), 1);
    drop(instance);
    assert!(
        within_3s(|| closed.load(Ordering::SeqCst)),
        "the server still sends to a request nobody will read"
    );
    assert!(
        within_3s(|| s.http.background_requests() == 0),
        "its thread still runs"
    );
}

// ---------------------------------------------------------------------------------------------
// Memories and tables (item 2): one total over all of an instance's memories and tables, and
// small counts of them. The Rust toolchain makes one memory and fixed tables, so these guests
// are core modules written here and made components of the contract's world by wit-component.

/// What the hand-written guest does.
enum Shape {
    /// `count` memories of `pages` 64 KiB pages each, defined at instantiation.
    Memories { count: u32, pages: u64 },
    /// One memory; `get-signed-url` grows it by `pages` pages, then its table by `elements`.
    Grow { pages: i32, elements: i32 },
}

/// A component of the `source-connector` world around a core module of `shape`. Every export
/// traps but `get-signed-url`, which (after growing what `shape` says) returns `ok("grown")`;
/// a refused growth traps.
fn hand_written_guest(shape: Shape) -> Vec<u8> {
    use wasm_encoder::*;
    let mut module = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], [ValType::I32]); // 0: () -> retptr
    types
        .ty()
        .function([ValType::I32, ValType::I32], [ValType::I32]); // 1: (ptr, len) -> retptr
    types.ty().function([ValType::I32], [ValType::I32]); // 2: (u32) -> retptr
    types.ty().function([ValType::I32; 4], [ValType::I32]); // 3: cabi_realloc
    module.section(&types);
    let exports_of_type: [(&str, u32); 8] = [
        ("manifest", 0),
        ("test-connection", 0),
        ("sync", 0),
        ("get-signed-url", 1),
        ("stream-record", 1),
        ("reindex-records", 1),
        ("wait-for-changes", 2),
        ("cleanup", 0),
    ];
    let mut functions = FunctionSection::new();
    for (_, ty) in exports_of_type {
        functions.function(ty);
    }
    functions.function(3);
    module.section(&functions);
    let mut tables = TableSection::new();
    tables.table(TableType {
        element_type: RefType::FUNCREF,
        table64: false,
        minimum: 1,
        maximum: None,
        shared: false,
    });
    module.section(&tables);
    let mut memories = MemorySection::new();
    let (count, pages) = match shape {
        Shape::Memories { count, pages } => (count, pages),
        Shape::Grow { .. } => (1, 1),
    };
    for _ in 0..count {
        memories.memory(MemoryType {
            minimum: pages,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
    }
    module.section(&memories);
    let mut exports = ExportSection::new();
    for (i, (name, _)) in exports_of_type.iter().enumerate() {
        exports.export(
            &format!("pipeshub:connector/connector@0.2.0#{name}"),
            ExportKind::Func,
            i as u32,
        );
    }
    exports.export(
        "cabi_realloc",
        ExportKind::Func,
        exports_of_type.len() as u32,
    );
    exports.export("memory", ExportKind::Memory, 0);
    module.section(&exports);
    let mut code = CodeSection::new();
    for (name, _) in exports_of_type {
        let mut f = Function::new([]);
        if name == "get-signed-url" {
            if let Shape::Grow { pages, elements } = shape {
                // A refused growth returns -1: trap then.
                let mut i = f.instructions();
                i.i32_const(pages).memory_grow(0).i32_const(-1).i32_eq();
                i.if_(BlockType::Empty).unreachable().end();
                i.ref_null(HeapType::FUNC).i32_const(elements).table_grow(0);
                i.i32_const(-1)
                    .i32_eq()
                    .if_(BlockType::Empty)
                    .unreachable()
                    .end();
            }
            // The result area (ok, url at 2048, 5 bytes) is in the data segment at 1024.
            f.instructions().i32_const(1024).end();
        } else {
            f.instructions().unreachable().end();
        }
        code.function(&f);
    }
    // cabi_realloc: hand out 4096 upwards (enough for the one string argument).
    let mut realloc = Function::new([]);
    realloc.instructions().i32_const(4096).end();
    code.function(&realloc);
    module.section(&code);
    let mut data = DataSection::new();
    let mut area = vec![0u8; 24];
    area[8..12].copy_from_slice(&2048u32.to_le_bytes());
    area[12..16].copy_from_slice(&5u32.to_le_bytes());
    data.active(0, &ConstExpr::i32_const(1024), area);
    data.active(0, &ConstExpr::i32_const(2048), b"grown".to_vec());
    module.section(&data);
    let mut core = module.finish();

    let mut resolve = wit_parser::Resolve::default();
    let wit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    let (package, _) = resolve.push_dir(&wit).expect("the contract parses");
    let world = resolve
        .select_world(&[package], Some("source-connector"))
        .expect("the world");
    wit_component::embed_component_metadata(
        &mut core,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("metadata");
    wit_component::ComponentEncoder::default()
        .module(&core)
        .expect("a module")
        .validate(true)
        .encode()
        .expect("a component")
}

const LIMIT: usize = 32 * 1024 * 1024;

fn hand_written_runtime(shape: Shape) -> Runtime {
    Runtime::from_bytes(
        &hand_written_guest(shape),
        SandboxConfig {
            memory_limit: LIMIT,
            ..Default::default()
        },
    )
    .expect("the hand-written guest loads")
}

fn grown(runtime: &Runtime) -> Result<String, InvokeError> {
    let s = services(Arc::new(SqliteStore::open_in_memory().unwrap()), None);
    let mut instance = runtime.instantiate(TenantContext::new("a", s))?;
    Ok(instance
        .get_signed_url("grow")?
        .map(|u| u.url)
        .unwrap_or_else(|e| format!("{e:?}")))
}

#[test]
fn memories_and_tables_count_against_one_total() {
    // Within the total: the hand-written guest works (so a refusal below means something).
    let small = hand_written_runtime(Shape::Grow {
        pages: 16,
        elements: 1000,
    });
    assert_eq!(grown(&small).unwrap(), "grown");
    // 25 MiB of memory and a million table elements (8 MB): each within the old per-memory
    // cap and the old table limit, together past the 32 MiB total.
    let both = hand_written_runtime(Shape::Grow {
        pages: 25 * 16 - 1,
        elements: 999_999,
    });
    let err = grown(&both).unwrap_err();
    assert!(
        matches!(err, InvokeError::MemoryLimit { limit } if limit == LIMIT),
        "{err:?}"
    );
    // Two memories of 20 MiB: each under the cap, together over it.
    let two = hand_written_runtime(Shape::Memories {
        count: 2,
        pages: 20 * 16,
    });
    let err = grown(&two).unwrap_err();
    assert!(matches!(err, InvokeError::MemoryLimit { .. }), "{err:?}");
    // More memories than an instance may have, however small.
    let many = hand_written_runtime(Shape::Memories {
        count: host_test::runtime::MAX_MEMORIES as u32 + 1,
        pages: 1,
    });
    let err = grown(&many).unwrap_err();
    assert!(matches!(err, InvokeError::ResourceLimit(_)), "{err:?}");
    // The host carries on.
    assert_eq!(grown(&small).unwrap(), "grown");
}
