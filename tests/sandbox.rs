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
use host_test::store::{RecordStore, StoredCredentials};
use host_test::tenant::{Services, TenantContext};

fn hostile() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::hostile(SandboxConfig {
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
                let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}", body.len(), body);
            });
        }
    });
    (format!("http://{addr}"), hits)
}

fn services(store: Arc<RecordStore>, redirect: Option<&str>) -> Arc<Services> {
    let policy = NetPolicy::new(["api.dropboxapi.com".to_string()], redirect).unwrap();
    Services::new(store, policy, HttpSettings::default(), "https://api.dropboxapi.com/oauth2/token")
}

fn run(services: &Arc<Services>, tenant: &str, command: &str) -> Result<Result<String, ConnectorError>, InvokeError> {
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
    let s = services(Arc::new(RecordStore::open_in_memory().unwrap()), None);
    let started = Instant::now();
    let err = run(&s, "a", "spin").unwrap_err();
    assert!(matches!(err, InvokeError::Runaway), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(ok(&s, "a", "config"), "");
}

#[test]
fn long_work_that_keeps_calling_the_host_is_not_stopped() {
    let s = services(Arc::new(RecordStore::open_in_memory().unwrap()), None);
    // Rounds of computation split by host calls, several times the 500 ms bound in total.
    let started = Instant::now();
    assert!(ok(&s, "a", "work 200").starts_with("work:"));
    assert!(started.elapsed() > Duration::from_millis(1500), "the work must outlast the bound to prove anything");
}

#[test]
fn allocating_past_the_memory_cap_fails_cleanly() {
    let s = services(Arc::new(RecordStore::open_in_memory().unwrap()), None);
    let err = run(&s, "a", "alloc").unwrap_err();
    assert!(matches!(err, InvokeError::MemoryLimit { limit } if limit == 32 * 1024 * 1024), "{err:?}");
    assert_eq!(ok(&s, "a", "config"), "");
}

#[test]
fn a_trap_does_not_affect_the_next_invocation() {
    let s = services(Arc::new(RecordStore::open_in_memory().unwrap()), None);
    let err = run(&s, "a", "panic").unwrap_err();
    assert!(matches!(err, InvokeError::Trap(_)), "{err:?}");
    assert_eq!(ok(&s, "a", "put id:1 /one"), "put:ok");
    assert_eq!(ok(&s, "a", "get id:1"), "get:1");
}

#[test]
fn a_host_outside_the_allowlist_is_refused_without_a_connection() {
    let (base, hits) = counting_server();
    // The allowed host is redirected to the local server; anything else is refused.
    let s = services(Arc::new(RecordStore::open_in_memory().unwrap()), Some(&base));
    let port = base.rsplit(':').next().unwrap();
    for url in [
        format!("https://127.0.0.1:{port}/x"),
        "https://evil.example/steal".to_string(),
        format!("http://127.0.0.1:{port}/x"),
        "https://api.dropboxapi.com.evil.example/".to_string(),
    ] {
        let answer = ok(&s, "a", &format!("http {url}"));
        assert!(answer.starts_with("destination-not-allowed:"), "{url}: {answer}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "no connection may be attempted");
    // The allowed host works, and reaches the server it is redirected to.
    let answer = ok(&s, "a", "http https://api.dropboxapi.com/2/ping");
    assert!(answer.starts_with("status:200"), "{answer}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[test]
fn the_guest_cannot_forge_credentials_and_the_token_is_attached_by_the_host() {
    let (base, _hits) = counting_server();
    let store = Arc::new(RecordStore::open_in_memory().unwrap());
    store.put_credentials("a", &StoredCredentials { access_token: "sl.secret-token".into(), ..Default::default() }).unwrap();
    let s = services(store, Some(&base));
    let answer = ok(&s, "a", "forge-auth https://api.dropboxapi.com/2/x");
    assert!(answer.starts_with("invalid-request:"), "{answer}");
    // An authenticated request carries the tenant's token to the server; the guest sees only
    // what the server chose to echo (this test server echoes headers, Dropbox does not).
    let echoed = ok(&s, "a", "http-auth https://api.dropboxapi.com/2/x");
    assert!(echoed.contains("authorization: Bearer sl.secret-token") || echoed.contains("Authorization: Bearer sl.secret-token"), "{echoed}");
    // Another tenant without credentials gets a typed error, not someone else's token.
    let other = ok(&s, "b", "http-auth https://api.dropboxapi.com/2/x");
    assert!(other.starts_with("no-credentials:"), "{other}");
}

#[test]
fn no_files_no_environment_no_sockets() {
    let s = services(Arc::new(RecordStore::open_in_memory().unwrap()), None);
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
    let store = Arc::new(RecordStore::open_in_memory().unwrap());
    store.put_credentials("a", &StoredCredentials { access_token: "sl.a".into(), ..Default::default() }).unwrap();
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
    assert!(refreshed.starts_with("refresh:err:") && refreshed.contains("ReauthenticationRequired"), "{refreshed}");
    assert_eq!(store.credentials("a").unwrap().unwrap().access_token, "sl.a");
}

#[test]
fn a_batch_with_its_sync_point_is_all_or_nothing() {
    let store = Arc::new(RecordStore::open_in_memory().unwrap());
    let s = services(store.clone(), None);
    assert_eq!(ok(&s, "a", "put id:1 /one"), "put:ok");
    store.inject_apply_failure(Some((0, 0)));
    assert!(ok(&s, "a", "put id:2 /two").starts_with("put:err"));
    store.inject_apply_failure(None);
    assert_eq!(ok(&s, "a", "get id:2"), "get:0");
    assert_eq!(ok(&s, "a", "sync-point hostile"), "sync-point:id:1");
}
