//! A component that misbehaves on purpose, to prove the host's sandbox. It implements the same
//! world as a real connector; `get-signed-url(command)` runs one misbehaviour named by the
//! command and reports what happened, so one component serves every sandbox test.
//! Native builds compile to nothing.

#[cfg(target_arch = "wasm32")]
mod guest {
    wit_bindgen::generate!({
        world: "source-connector",
        path: "../../../wit",
        // The world's WASI imports are the standard library's business (this guest uses
        // std's env, fs and net on purpose); generated here only because the world names them.
        generate_all,
    });

    use exports::pipeshub::connector::connector::{
        ChangeHint, Guest, ReindexSummary, SignedUrl, StreamSummary, SyncKind, SyncSummary,
    };
    use manifest_types::{Schedule, SyncStrategy};
    use pipeshub::connector::{credentials, host, http, manifest_types, paths, records, types};
    use types::ConnectorError;

    struct Hostile;
    export!(Hostile);

    fn ok(text: String) -> Result<SignedUrl, ConnectorError> {
        Ok(SignedUrl {
            url: text,
            expires_at: 0,
        })
    }

    fn http_error(e: http::HttpError) -> String {
        match e {
            http::HttpError::DestinationNotAllowed(m) => format!("destination-not-allowed:{m}"),
            http::HttpError::Timeout(m) => format!("timeout:{m}"),
            http::HttpError::Connection(m) => format!("connection:{m}"),
            http::HttpError::BodyTooLarge(n) => format!("body-too-large:{n}"),
            http::HttpError::InvalidRequest(m) => format!("invalid-request:{m}"),
            http::HttpError::NoCredentials(m) => format!("no-credentials:{m}"),
        }
    }

    fn record(id: &str, path: &str) -> types::Record {
        types::Record {
            external_id: id.into(),
            revision: None,
            name: path.rsplit('/').next().unwrap_or_default().into(),
            path: Some(types::RecordPath {
                display: path.into(),
                lower: path.into(),
            }),
            parent_external_id: None,
            kind: types::RecordKind::File,
            mime_type: "text/plain".into(),
            size: 0,
            content_hash: None,
            client_modified: None,
            server_modified: None,
            is_downloadable: true,
            export_format: None,
            web_url: None,
            is_shared: false,
            shared_url: None,
        }
    }

    fn run(command: &str) -> Result<SignedUrl, ConnectorError> {
        let (verb, rest) = command.split_once(' ').unwrap_or((command, ""));
        match verb {
            "spin" => {
                let mut x: u64 = 1;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("hostile guest panics on purpose"),
            // Computation well past one fuel slice, split by host calls: must not be stopped.
            "work" => {
                let rounds: u64 = rest.parse().unwrap_or(10);
                let mut x: u64 = 1;
                for round in 0..rounds {
                    for _ in 0..10_000_000u64 {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                    host::log(host::Level::Debug, &format!("round {round}"));
                }
                ok(format!("work:{x}"))
            }
            "http" | "http-auth" => {
                let request = http::Request {
                    method: http::Method::Get,
                    url: rest.to_string(),
                    headers: vec![],
                    body: vec![],
                    authenticated: verb == "http-auth",
                    timeout_ms: Some(5_000),
                };
                match http::send(&request) {
                    Ok(resp) => ok(format!(
                        "status:{} body:{}",
                        resp.status,
                        String::from_utf8_lossy(&resp.body)
                    )),
                    Err(e) => ok(http_error(e)),
                }
            }
            "forge-auth" => {
                let request = http::Request {
                    method: http::Method::Get,
                    url: rest.to_string(),
                    headers: vec![("Authorization".into(), "Bearer stolen".into())],
                    body: vec![],
                    authenticated: false,
                    timeout_ms: None,
                };
                match http::send(&request) {
                    Ok(resp) => ok(format!("status:{}", resp.status)),
                    Err(e) => ok(http_error(e)),
                }
            }
            // Many cheap host calls: the cost of one crossing of the sandbox boundary.
            "calls" => {
                let n: u64 = rest.parse().unwrap_or(1000);
                let mut total = 0usize;
                for _ in 0..n {
                    total += host::config().len();
                }
                ok(format!("calls:{n}:{total}"))
            }
            "env" => ok(format!(
                "env:{} args:{}",
                std::env::vars_os().count(),
                std::env::args_os().count()
            )),
            "read" => match std::fs::read(rest) {
                Ok(bytes) => ok(format!("read:ok:{}", bytes.len())),
                Err(e) => ok(format!("read:err:{e}")),
            },
            "list-dir" => match std::fs::read_dir(rest) {
                Ok(_) => ok("list-dir:ok".into()),
                Err(e) => ok(format!("list-dir:err:{e}")),
            },
            "socket" => match std::net::TcpStream::connect(rest) {
                Ok(_) => ok("socket:connected".into()),
                Err(e) => ok(format!("socket:err:{e}")),
            },
            "put" => {
                let (id, path) = rest.split_once(' ').unwrap_or((rest, "/x"));
                let change = records::Change::Upsert(records::Upsert {
                    record: record(id, path),
                    event: records::ChangeKind::Created,
                });
                let point = records::SyncPoint {
                    position: id.into(),
                    status: records::SyncStatus {
                        phase: records::SyncPhase::Current,
                        detail: format!("put {id}"),
                    },
                };
                match records::apply(&[change], Some(&point)) {
                    Ok(_) => ok("put:ok".into()),
                    Err(e) => ok(format!("put:err:{e:?}")),
                }
            }
            "get" => match records::get_records(&[rest.to_string()]) {
                Ok(found) => ok(format!("get:{}", found.len())),
                Err(e) => ok(format!("get:err:{e:?}")),
            },
            // The key is ignored since 0.2 (one sync point per tenant); kept in the command so
            // the tests read the same.
            "sync-point" => match records::get_sync_point() {
                Ok(v) => ok(format!("sync-point:{}", v.unwrap_or_else(|| "none".into()))),
                Err(e) => ok(format!("sync-point:err:{e:?}")),
            },
            "purge-all" => match records::apply(
                &[records::Change::MarkAllPending, records::Change::Purge],
                None,
            ) {
                Ok(s) => ok(format!("purged:{}", s.deletions)),
                Err(e) => ok(format!("purge:err:{e:?}")),
            },
            "remove" => match records::apply(&[records::Change::Remove(rest.to_string())], None) {
                Ok(_) => ok("remove:ok".into()),
                Err(e) => ok(format!("remove:err:{e:?}")),
            },
            "list-records" => match records::list_records(None, 1000) {
                Ok(found) => ok(format!(
                    "list-records:{}",
                    found
                        .iter()
                        .map(|r| r.external_id.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                )),
                Err(e) => ok(format!("list-records:err:{e:?}")),
            },
            "limits" => {
                let l = host::limits();
                ok(format!(
                    "limits:{}:{}:{}:{}",
                    l.max_response_body,
                    l.default_timeout_ms,
                    l.max_timeout_ms,
                    l.max_pending_requests
                ))
            }
            // `http.start` N requests to a URL without waiting (one more than allowed shows
            // the refusal), then wait for each one started, in reverse order.
            "start-many" => {
                let (n, url) = rest.split_once(' ').unwrap_or(("1", rest));
                let n: u32 = n.parse().unwrap_or(1);
                let request = http::Request {
                    method: http::Method::Get,
                    url: url.to_string(),
                    headers: vec![],
                    body: vec![],
                    authenticated: false,
                    timeout_ms: Some(10_000),
                };
                let mut ids = Vec::new();
                let mut refused = Vec::new();
                for _ in 0..n {
                    match http::start(&request) {
                        Ok(id) => ids.push(id),
                        Err(e) => refused.push(http_error(e)),
                    }
                }
                let mut statuses = Vec::new();
                for id in ids.iter().rev() {
                    match http::wait(*id) {
                        Ok(resp) => statuses.push(resp.status.to_string()),
                        Err(e) => statuses.push(http_error(e)),
                    }
                }
                // An id already collected cannot be waited for again.
                let again = ids
                    .first()
                    .map(|id| match http::wait(*id) {
                        Ok(_) => "again:ok".to_string(),
                        Err(e) => format!("again:{}", http_error(e)),
                    })
                    .unwrap_or_default();
                ok(format!(
                    "started:{} statuses:{} refused:{} {again}",
                    ids.len(),
                    statuses.join(","),
                    refused.join("|")
                ))
            }
            // Start a request and never wait for it: it is dropped with the instance.
            "start-and-leave" => {
                let request = http::Request {
                    method: http::Method::Get,
                    url: rest.to_string(),
                    headers: vec![],
                    body: vec![],
                    authenticated: false,
                    timeout_ms: Some(10_000),
                };
                match http::start(&request) {
                    Ok(id) => ok(format!("left:{id}")),
                    Err(e) => ok(http_error(e)),
                }
            }
            // Clock waits that wasmtime-wasi would make last for ever.
            "clock-block-forever" => {
                wasi::clocks::monotonic_clock::subscribe_duration(u64::MAX).block();
                ok("woke".into())
            }
            "clock-instant-forever" => {
                wasi::clocks::monotonic_clock::subscribe_instant(u64::MAX).block();
                ok("woke".into())
            }
            "poll-forever" => {
                let a = wasi::clocks::monotonic_clock::subscribe_duration(u64::MAX);
                let b = wasi::clocks::monotonic_clock::subscribe_instant(u64::MAX);
                let ready = wasi::io::poll::poll(&[&a, &b]);
                ok(format!("polled:{ready:?}"))
            }
            // `std::thread::sleep` for `rest` milliseconds (`max`: Duration::MAX, which std
            // sleeps in chunks), then how long it took.
            "std-sleep" => {
                let length = match rest {
                    "max" => std::time::Duration::MAX,
                    ms => std::time::Duration::from_millis(ms.parse().unwrap_or(0)),
                };
                let started = std::time::Instant::now();
                std::thread::sleep(length);
                ok(format!("slept:{}", started.elapsed().as_millis()))
            }
            // `host.sleep` for `rest` milliseconds (`max`: u64::MAX), then how long it took;
            // `host-sleep-loop` sleeps again and again, never calling anything else.
            "host-sleep" | "host-sleep-loop" => {
                let ms = match rest {
                    "max" => u64::MAX,
                    ms => ms.parse().unwrap_or(0),
                };
                let started = std::time::Instant::now();
                host::sleep(ms);
                if verb == "host-sleep-loop" {
                    loop {
                        host::sleep(ms);
                    }
                }
                ok(format!("slept:{}", started.elapsed().as_millis()))
            }
            // One `apply` of `rest` upserts of realistic size.
            "apply-many" => {
                let n: usize = rest.parse().unwrap_or(0);
                let changes: Vec<records::Change> = (0..n)
                    .map(|i| {
                        let mut r = record(
                            &format!("id:AAAAAAAAAAAAAAAAAAAA{i:08}"),
                            &format!("/some folder/with a longer name/file number {i:08}.txt"),
                        );
                        r.revision = Some(format!("01{i:014x}0000000012345678"));
                        r.content_hash = Some(format!("{:064x}", i));
                        r.server_modified = Some("2024-05-01T12:00:00Z".into());
                        r.client_modified = Some("2024-05-01T12:00:00Z".into());
                        r.size = i as u64;
                        records::Change::Upsert(records::Upsert {
                            record: r,
                            event: records::ChangeKind::Created,
                        })
                    })
                    .collect();
                match records::apply(&changes, None) {
                    Ok(s) => ok(format!("apply:ok:{}", s.created)),
                    Err(e) => ok(format!("apply:err:{e:?}")),
                }
            }
            "list-records-limit" => match records::list_records(None, rest.parse().unwrap_or(0)) {
                Ok(found) => ok(format!("listed:{}", found.len())),
                Err(e) => ok(format!("list:err:{e:?}")),
            },
            "list-subtree-limit" => {
                match paths::list_subtree("/some folder", None, rest.parse().unwrap_or(0)) {
                    Ok(found) => ok(format!("listed:{}", found.len())),
                    Err(e) => ok(format!("list:err:{e:?}")),
                }
            }
            "list-shared" => match records::list_shared() {
                Ok(found) => ok(format!("listed:{}", found.len())),
                Err(e) => ok(format!("list:err:{e:?}")),
            },
            "get-many" => {
                let ids: Vec<String> = (0..rest.parse::<usize>().unwrap_or(0))
                    .map(|i| format!("id:{i}"))
                    .collect();
                match records::get_records(&ids) {
                    Ok(found) => ok(format!("got:{}", found.len())),
                    Err(e) => ok(format!("get:err:{e:?}")),
                }
            }
            "random" => {
                let bytes = wasi::random::random::get_random_bytes(rest.parse().unwrap_or(0));
                ok(format!("random:{}", bytes.len()))
            }
            // Hold `rest` pollables at once.
            "pollables" => {
                let n: usize = rest.parse().unwrap_or(0);
                let held: Vec<_> = (0..n)
                    .map(|_| wasi::clocks::monotonic_clock::subscribe_duration(1))
                    .collect();
                ok(format!("pollables:{}", held.len()))
            }
            // One host call carrying a string of `rest` bytes.
            "log-bytes" => {
                let text = "x".repeat(rest.parse().unwrap_or(0));
                host::log(host::Level::Debug, &text);
                ok("logged".into())
            }
            "refresh" => match credentials::refresh_access_token() {
                Ok(()) => ok("refresh:ok".into()),
                Err(e) => ok(format!("refresh:err:{e:?}")),
            },
            "config" => ok(host::config()
                .into_iter()
                .map(|s| format!("{}={}", s.key, s.value))
                .collect::<Vec<_>>()
                .join(",")),
            // Everything a guest can read that a secret could hide in: its environment and
            // arguments, its configuration, the files it may try, an authenticated response
            // (status, headers, body), and what a refresh reports.
            "probe-secrets" => {
                let mut seen = Vec::new();
                for (k, v) in std::env::vars_os() {
                    seen.push(format!(
                        "env {}={}",
                        k.to_string_lossy(),
                        v.to_string_lossy()
                    ));
                }
                for a in std::env::args_os() {
                    seen.push(format!("arg {}", a.to_string_lossy()));
                }
                for s in host::config() {
                    seen.push(format!("config {}={}", s.key, s.value));
                }
                for path in [
                    "/proc/self/environ",
                    "/proc/self/cmdline",
                    "/etc/passwd",
                    ".",
                ] {
                    match std::fs::read(path) {
                        Ok(bytes) => {
                            seen.push(format!("file {path}: {}", String::from_utf8_lossy(&bytes)))
                        }
                        Err(e) => seen.push(format!("file {path}: err {e}")),
                    }
                }
                let request = http::Request {
                    method: http::Method::Get,
                    url: rest.to_string(),
                    headers: vec![],
                    body: vec![],
                    authenticated: true,
                    timeout_ms: Some(5_000),
                };
                match http::send(&request) {
                    Ok(resp) => {
                        seen.push(format!("status {}", resp.status));
                        for (k, v) in resp.headers {
                            seen.push(format!("header {k}: {v}"));
                        }
                        seen.push(format!("body {}", String::from_utf8_lossy(&resp.body)));
                    }
                    Err(e) => seen.push(http_error(e)),
                }
                match credentials::refresh_access_token() {
                    Ok(()) => seen.push("refresh ok".into()),
                    Err(e) => seen.push(format!("refresh {e:?}")),
                }
                ok(seen.join("\n"))
            }
            other => Err(ConnectorError::InvalidConfig(format!(
                "unknown command {other}"
            ))),
        }
    }

    impl Guest for Hostile {
        fn manifest() -> manifest_types::ConnectorManifest {
            manifest_types::ConnectorManifest {
                name: "hostile".into(),
                display_name: "Hostile test guest".into(),
                version: "0.0.0".into(),
                app_group: "Tests".into(),
                description: "Misbehaves on purpose.".into(),
                oauth: Some(manifest_types::OauthConfig {
                    authorize_url: "https://api.dropboxapi.com/oauth2/authorize".into(),
                    token_url: "https://api.dropboxapi.com/oauth2/token".into(),
                    revoke_url: None,
                    scopes: vec![],
                    extra_authorize_params: vec![],
                    pkce_required: true,
                    redirect_path: "callback".into(),
                }),
                allowed_hosts: vec!["api.dropboxapi.com".into()],
                config_fields: vec![],
                schedule: Schedule {
                    strategies: vec![SyncStrategy::Manual],
                    default_strategy: SyncStrategy::Manual,
                    default_interval_minutes: 60,
                    min_interval_minutes: 1,
                    max_interval_minutes: 60,
                },
            }
        }
        fn test_connection() -> Result<types::User, ConnectorError> {
            Err(ConnectorError::Internal("hostile".into()))
        }
        fn sync() -> Result<SyncSummary, ConnectorError> {
            run("spin").map(|_| SyncSummary {
                kind: SyncKind::Full,
                pages: 0,
                entries: 0,
                created: 0,
                content_updates: 0,
                metadata_updates: 0,
                deletions: 0,
                api_calls: 0,
                retries: 0,
                interrupted: false,
                phases: vec![],
            })
        }
        fn get_signed_url(command: String) -> Result<SignedUrl, ConnectorError> {
            run(&command)
        }
        fn stream_record(_id: String) -> Result<StreamSummary, ConnectorError> {
            Err(ConnectorError::NotFound("hostile".into()))
        }
        fn reindex_records(_ids: Vec<String>) -> Result<ReindexSummary, ConnectorError> {
            Ok(ReindexSummary {
                checked: 0,
                content_updates: 0,
                metadata_updates: 0,
                deletions: 0,
            })
        }
        fn wait_for_changes(_t: u32) -> Result<ChangeHint, ConnectorError> {
            Ok(ChangeHint {
                changes: false,
                backoff_seconds: None,
            })
        }
        fn cleanup() -> Result<(), ConnectorError> {
            Ok(())
        }
    }
}
