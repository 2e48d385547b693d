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

fn hostile() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        host_test::components::hostile_runtime(SandboxConfig {
            memory_limit: 32 * 1024 * 1024,
            max_compute_between_calls: Duration::from_millis(500),
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
