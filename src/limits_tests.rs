//! The connector under a host that allows the least the contract lets a host allow: a 1 MiB
//! response-body cap (`host.limits`). Content is read in ranges and written in chunks within the
//! cap and still verified; listing pages ask for fewer entries; a page that does not fit makes
//! the listing ask for fewer again. Also: the next listing page is requested before the current
//! one is committed (`http.start`), a sync's first requests go out together when the host lets
//! that many be pending (and calls started together refresh an expired token once), retries are
//! counted, and the sync point's status never shows the cursor.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::content_hash::content_hash;
use crate::model::{
    ApplySummary, Change, ConnectorError, HostLimits, Permission, Record, RecordGroup, RecordKind,
    StoredRecord, SyncPhase, SyncPoint, User, record_path,
};
use crate::ports::{
    Credentials, HostEnv, Http, HttpError, HttpRequest, HttpResponse, Level, Paths, Ports, Records,
    RefreshError, Sink, SinkError, StoreError,
};
use crate::sync::planner::planner_fuzz::FakeStore;

const MIB: u64 = 1 << 20;

/// What happened, in order, across the fake Dropbox and the fake store.
type Events = Rc<RefCell<Vec<String>>>;

struct FakeHost {
    limits: HostLimits,
}

impl HostEnv for FakeHost {
    fn log(&mut self, _: Level, _: &str) {}
    fn progress(&mut self, _: &str, _: u32, _: u64, _: Option<u64>) {}
    fn config(&mut self) -> Vec<(String, String)> {
        Vec::new()
    }
    fn should_stop(&mut self) -> bool {
        false
    }
    fn sleep(&mut self, _: Duration) {}
    fn limits(&mut self) -> HostLimits {
        self.limits
    }
    fn now(&mut self) -> i64 {
        1_700_000_000
    }
    fn random(&mut self) -> u64 {
        7
    }
}

struct NoRefresh;

impl Credentials for NoRefresh {
    fn refresh_access_token(&mut self) -> Result<(), RefreshError> {
        Err(RefreshError::ReauthenticationRequired(
            "not in this test".into(),
        ))
    }
}

fn host_1_mib() -> FakeHost {
    FakeHost {
        limits: HostLimits {
            max_response_body: MIB,
            ..HostLimits::default()
        },
    }
}

/// A Dropbox that serves one file and a listing of `pages`, and enforces the host's body cap
/// as a host would (`body-too-large`).
struct FakeDropbox {
    cap: u64,
    file: Vec<u8>,
    /// The file's content hash, computed once.
    file_hash: String,
    /// The listing: each page's entries; page k's cursor is `c{k+1}`.
    pages: Vec<Vec<Value>>,
    /// A `list_folder` asking for more entries than this gets a body too large for the cap.
    fits_entries: u32,
    /// Answer the first `list_folder` with a 503 (a transient failure to retry).
    fail_first_listing: bool,
    /// Answer every `sharing/list_shared_links` with `has_more`, no links and a fresh cursor.
    endless_links: bool,
    /// `sharing/list_shared_links` calls served.
    link_pages: u32,
    /// Answer a long-poll with a timeout instead of a result (the request ran out of time).
    longpoll_times_out: bool,
    events: Events,
    limits_asked: Vec<u32>,
    largest_body: usize,
    downloads: u32,
}

fn file_meta(id: &str, name: &str, size: u64, hash: &str) -> Value {
    json!({
        ".tag": "file",
        "name": name,
        "id": id,
        "path_lower": format!("/{}", name.to_lowercase()),
        "path_display": format!("/{name}"),
        "client_modified": "2024-01-01T00:00:00Z",
        "server_modified": "2024-01-01T00:00:00Z",
        "rev": "015f00000001",
        "size": size,
        "content_hash": hash,
    })
}

fn ok_json(body: &Value) -> Result<HttpResponse, HttpError> {
    Ok(HttpResponse {
        status: 200,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: body.to_string().into_bytes(),
    })
}

impl FakeDropbox {
    fn page(&self, index: usize) -> Result<HttpResponse, HttpError> {
        let Some(entries) = self.pages.get(index) else {
            return Err(HttpError::Connection(format!("no page {index}")));
        };
        ok_json(&json!({
            "entries": entries,
            "cursor": format!("c{}", index + 1),
            "has_more": index + 1 < self.pages.len(),
        }))
    }

    fn download(&mut self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        self.downloads += 1;
        let range = request
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("Range"))
            .and_then(|(_, v)| v.strip_prefix("bytes="))
            .and_then(|v| v.split_once('-'))
            .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
        let Some((first, last)) = range else {
            return Err(HttpError::InvalidRequest("this test wants ranges".into()));
        };
        let end = (last + 1).min(self.file.len());
        let body = self.file[first..end].to_vec();
        if body.len() as u64 > self.cap {
            return Err(HttpError::BodyTooLarge(self.cap));
        }
        let meta = file_meta("id:big", "big.bin", self.file.len() as u64, &self.file_hash);
        Ok(HttpResponse {
            status: 206,
            headers: vec![
                ("Dropbox-API-Result".into(), meta.to_string()),
                (
                    "Content-Range".into(),
                    format!("bytes {first}-{}/{}", end - 1, self.file.len()),
                ),
            ],
            body,
        })
    }
}

impl Http for FakeDropbox {
    fn send(&mut self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let route = route_of(&request);
        let arg: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let response = match route.as_str() {
            "users/get_current_account" => ok_json(&json!({
                "account_id": "dbid:owner",
                "name": {"display_name": "Owner"},
                "email": "owner@example.com",
            })),
            "sharing/list_shared_links" => {
                self.link_pages += 1;
                if self.link_pages > 1_000 {
                    // Far past any bound: a connector without one fails here instead of hanging.
                    Err(HttpError::InvalidRequest(
                        "no end to the shared links".into(),
                    ))
                } else if self.endless_links {
                    ok_json(&json!({
                        "links": [],
                        "has_more": true,
                        "cursor": format!("l{}", self.link_pages),
                    }))
                } else {
                    ok_json(&json!({"links": [], "has_more": false}))
                }
            }
            "files/list_folder" => {
                self.events.borrow_mut().push("list_folder".into());
                let limit = arg["limit"].as_u64().map_or(u32::MAX, |l| l as u32);
                self.limits_asked.push(limit);
                if self.fail_first_listing {
                    self.fail_first_listing = false;
                    Ok(HttpResponse {
                        status: 503,
                        headers: Vec::new(),
                        body: b"busy".to_vec(),
                    })
                } else if limit > self.fits_entries {
                    Err(HttpError::BodyTooLarge(self.cap))
                } else {
                    self.page(0)
                }
            }
            "files/list_folder/continue" => {
                let cursor = arg["cursor"].as_str().unwrap_or_default().to_string();
                self.events.borrow_mut().push(format!("continue {cursor}"));
                let index = cursor
                    .strip_prefix('c')
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(usize::MAX);
                self.page(index)
            }
            "files/download" => self.download(&request),
            "files/list_folder/longpoll" => {
                let timeout = arg["timeout"].as_u64().unwrap_or_default();
                self.events.borrow_mut().push(format!("longpoll {timeout}"));
                self.events
                    .borrow_mut()
                    .push(format!("read timeout {:?}", request.timeout_ms));
                if self.longpoll_times_out {
                    Err(HttpError::Timeout("no answer in time".into()))
                } else {
                    ok_json(&json!({"changes": false}))
                }
            }
            other => Err(HttpError::InvalidRequest(format!(
                "unexpected route {other}"
            ))),
        };
        if let Ok(r) = &response {
            self.largest_body = self.largest_body.max(r.body.len());
        }
        response
    }
}

/// The fake store, with every applied sync point recorded in the shared event log.
struct LoggedStore {
    inner: FakeStore,
    events: Events,
    points: Vec<SyncPoint>,
    /// `list-shared` refuses more shared records than this.
    shared_cap: Option<usize>,
}

impl Records for LoggedStore {
    fn apply(
        &mut self,
        changes: Vec<Change>,
        sync_point: Option<SyncPoint>,
    ) -> Result<ApplySummary, StoreError> {
        if let Some(point) = &sync_point {
            let cursor = serde_json::from_str::<Value>(&point.position)
                .ok()
                .and_then(|v| v["cursor"].as_str().map(String::from))
                .unwrap_or_default();
            self.events.borrow_mut().push(format!("commit {cursor}"));
            self.points.push(point.clone());
        }
        self.inner.apply(changes, sync_point)
    }
    fn get_sync_point(&mut self) -> Result<Option<String>, StoreError> {
        self.inner.get_sync_point()
    }
    fn get_records(&mut self, ids: Vec<String>) -> Result<Vec<StoredRecord>, StoreError> {
        self.inner.get_records(ids)
    }
    fn list_records(&mut self, after: Option<&str>, limit: u32) -> Result<Vec<Record>, StoreError> {
        self.inner.list_records(after, limit)
    }
    fn list_shared(&mut self) -> Result<Vec<Record>, StoreError> {
        let shared = self.inner.list_shared()?;
        // A host refuses more than its list cap (wit/connector.wit, `list-shared`).
        match self.shared_cap {
            Some(cap) if shared.len() > cap => Err(StoreError::Invalid(format!(
                "{} shared records, more than {cap}",
                shared.len()
            ))),
            _ => Ok(shared),
        }
    }
    fn put_owner(&mut self, o: User, g: RecordGroup, p: Vec<Permission>) -> Result<(), StoreError> {
        self.inner.put_owner(o, g, p)
    }
    fn clear(&mut self) -> Result<(), StoreError> {
        self.inner.clear()
    }
}

impl Paths for LoggedStore {
    fn find_by_paths(&mut self, paths: Vec<String>) -> Result<Vec<Option<Record>>, StoreError> {
        self.inner.find_by_paths(paths)
    }
    fn list_subtree(
        &mut self,
        path_lower: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Record>, StoreError> {
        self.inner.list_subtree(path_lower, after, limit)
    }
}

fn dropbox(cap: u64, file: Vec<u8>, pages: Vec<Vec<Value>>, events: &Events) -> FakeDropbox {
    FakeDropbox {
        cap,
        file_hash: content_hash(&file),
        file,
        pages,
        fits_entries: u32::MAX,
        fail_first_listing: false,
        endless_links: false,
        link_pages: 0,
        longpoll_times_out: false,
        events: events.clone(),
        limits_asked: Vec::new(),
        largest_body: 0,
        downloads: 0,
    }
}

fn store(events: &Events) -> LoggedStore {
    LoggedStore {
        inner: FakeStore::default(),
        events: events.clone(),
        points: Vec::new(),
        shared_cap: None,
    }
}

/// One sync through these ports.
fn sync_through(
    http: &mut dyn Http,
    credentials: &mut dyn Credentials,
    host: &mut FakeHost,
    store: &mut LoggedStore,
) -> Result<crate::model::SyncSummary, ConnectorError> {
    let mut ports = Ports {
        http,
        credentials,
        host,
        store,
    };
    crate::operations::run_sync(&mut ports)
}

/// A sink that checks chunk sizes and keeps a running hash, not the bytes.
struct CountingSink {
    largest: usize,
    total: u64,
    hasher: crate::content_hash::ContentHasher,
}

impl Sink for CountingSink {
    fn write(&mut self, chunk: &[u8]) -> Result<(), SinkError> {
        self.largest = self.largest.max(chunk.len());
        self.total += chunk.len() as u64;
        self.hasher.update(chunk);
        Ok(())
    }
}

#[test]
fn a_64_mib_file_streams_and_verifies_under_a_1_mib_cap() {
    let size = 64 * MIB as usize;
    // Not a repeating pattern of the block size, so a block read twice or skipped would show.
    let file: Vec<u8> = (0..size)
        .map(|i| ((i * 31 + i / 4099) % 251) as u8)
        .collect();
    let expected = content_hash(&file);
    let events = Events::default();
    let mut http = dropbox(MIB, file, Vec::new(), &events);
    let mut store = store(&events);
    let mut record = Record {
        external_id: "id:big".into(),
        revision: Some("015f00000001".into()),
        name: "big.bin".into(),
        path: record_path("/big.bin", "/big.bin".into()),
        parent_external_id: None,
        kind: RecordKind::File,
        mime_type: "application/octet-stream".into(),
        size: size as u64,
        content_hash: Some(expected.clone()),
        client_modified: None,
        server_modified: None,
        is_downloadable: true,
        export_format: None,
        web_url: None,
        is_shared: false,
        shared_url: None,
    };
    store
        .inner
        .records
        .insert(record.external_id.clone(), (record.clone(), false));
    let (mut creds, mut host) = (NoRefresh, host_1_mib());
    let mut sink = CountingSink {
        largest: 0,
        total: 0,
        hasher: Default::default(),
    };
    let summary = {
        let mut ports = Ports {
            http: &mut http,
            credentials: &mut creds,
            host: &mut host,
            store: &mut store,
        };
        crate::operations::stream_record(&mut ports, &mut sink, "id:big")
    }
    .unwrap_or_else(|e| panic!("stream failed: {e}"));
    assert!(summary.verified, "the hash was checked");
    assert_eq!(summary.size, size as u64);
    assert_eq!(summary.content_hash.as_deref(), Some(expected.as_str()));
    assert_eq!(sink.total, size as u64);
    assert_eq!(
        sink.hasher.finalize(),
        expected,
        "the sink got the file's bytes"
    );
    assert!(
        sink.largest as u64 <= MIB,
        "sink chunk of {} bytes",
        sink.largest
    );
    assert!(http.largest_body as u64 <= MIB);
    // One request per MiB: ranges of the cap, not of the 4 MiB hash block.
    assert_eq!(http.downloads, 64);

    // A host with a larger cap still gets 4 MiB ranges (one per hash block).
    record.external_id = "id:big".into();
    let mut http = dropbox(64 * MIB, http.file, Vec::new(), &events);
    let mut host = FakeHost {
        limits: HostLimits {
            max_response_body: 64 * MIB,
            ..HostLimits::default()
        },
    };
    let mut sink = CountingSink {
        largest: 0,
        total: 0,
        hasher: Default::default(),
    };
    let mut ports = Ports {
        http: &mut http,
        credentials: &mut creds,
        host: &mut host,
        store: &mut store,
    };
    let summary = crate::operations::stream_record(&mut ports, &mut sink, "id:big")
        .unwrap_or_else(|e| panic!("stream failed: {e}"));
    assert!(summary.verified);
    assert_eq!(http.downloads, 16);
}

fn listing(pages: usize, per_page: usize) -> Vec<Vec<Value>> {
    (0..pages)
        .map(|p| {
            (0..per_page)
                .map(|i| {
                    let name = format!("p{p}-f{i}.txt");
                    file_meta(&format!("id:{p}-{i}"), &name, 1, &content_hash(b"x"))
                })
                .collect()
        })
        .collect()
}

#[test]
fn a_sync_under_a_1_mib_cap_asks_for_small_pages_prefetches_and_counts_retries() {
    let events = Events::default();
    let mut http = dropbox(MIB, Vec::new(), listing(3, 2), &events);
    http.fail_first_listing = true;
    let mut store = store(&events);
    let (mut creds, mut host) = (NoRefresh, host_1_mib());
    let summary = sync_through(&mut http, &mut creds, &mut host, &mut store)
        .unwrap_or_else(|e| panic!("sync failed: {e}"));
    assert_eq!(summary.entries, 6);
    let live = store
        .inner
        .records
        .values()
        .filter(|(_, pending)| !pending)
        .count();
    assert_eq!(live, 6, "every listed file is stored");
    assert_eq!(summary.retries, 1, "the 503 was retried once");
    let names: Vec<&str> = summary.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["decode", "plan"]);
    // 1 MiB at an estimated 2 KiB per entry.
    assert_eq!(http.limits_asked, [512, 512]);

    // Each next page was asked for before the page before it was committed.
    let events = events.borrow().clone();
    let at = |e: &str| {
        events
            .iter()
            .position(|x| x == e)
            .unwrap_or_else(|| panic!("no {e} in {events:?}"))
    };
    assert!(at("continue c1") < at("commit c1"), "{events:?}");
    assert!(at("continue c2") < at("commit c2"), "{events:?}");
    assert!(
        !events.iter().any(|e| e == "continue c3"),
        "no page after the last"
    );

    // The status: listing while the listing is unfinished, then current; never the cursor.
    let last = store
        .points
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("no sync point"));
    assert_eq!(last.status.phase, SyncPhase::Current);
    assert!(
        store.points[..store.points.len() - 1]
            .iter()
            .all(|p| p.status.phase == SyncPhase::Listing)
    );
    assert!(
        store
            .points
            .iter()
            .any(|p| p.status.detail == "listing, 2 pages in")
    );
    for point in &store.points {
        assert!(
            !point.status.detail.contains("c1"),
            "{}",
            point.status.detail
        );
    }
    assert_eq!(
        store.inner.get_sync_point().ok().flatten(),
        Some(last.position)
    );
}

#[test]
fn a_listing_page_too_large_for_the_cap_is_asked_for_again_smaller() {
    let events = Events::default();
    let mut http = dropbox(MIB, Vec::new(), listing(1, 3), &events);
    http.fits_entries = 200;
    let mut store = store(&events);
    let (mut creds, mut host) = (NoRefresh, host_1_mib());
    let summary = sync_through(&mut http, &mut creds, &mut host, &mut store)
        .unwrap_or_else(|e| panic!("sync failed: {e}"));
    assert_eq!(summary.entries, 3);
    assert_eq!(http.limits_asked, [512, 256, 128]);
}

#[test]
fn page_limits_follow_the_cap() {
    use crate::sync::page_limit;
    assert_eq!(page_limit(MIB), 512);
    assert_eq!(page_limit(4 * MIB), 2000);
    assert_eq!(page_limit(u64::MAX), 2000);
    assert_eq!(page_limit(0), 1);
    assert_eq!(crate::content::range_size(MIB), MIB);
    assert_eq!(crate::content::range_size(64 * MIB), 4 * MIB);
}

#[test]
fn a_store_failure_is_transient() {
    let e: ConnectorError = StoreError::Storage("disk full".into()).into();
    assert!(matches!(e, ConnectorError::Transient(_)));
}

#[test]
fn a_long_poll_waits_no_longer_than_the_host_lets_a_request_last() {
    let events = Events::default();
    let mut http = dropbox(MIB, Vec::new(), Vec::new(), &events);
    let mut store = store(&events);
    store.inner.sync_point = Some(
        json!({"cursor": "c9", "filters": crate::config::Filters::default().fingerprint()})
            .to_string(),
    );
    let mut creds = NoRefresh;
    // (the host's longest request, the wait asked for, what Dropbox is asked, the cut in ms)
    for (max_timeout_ms, asked, expected, cut) in [
        (300_000, 480, 210, 300_000),
        (600_000, 480, 390, 480_000),
        (60_000, 300, 30, 60_000),
        (600_000, 5, 30, 5_000),
        (600_000, 0, 30, 1_000),
    ] {
        let mut host = FakeHost {
            limits: HostLimits {
                max_timeout_ms,
                ..HostLimits::default()
            },
        };
        let mut ports = Ports {
            http: &mut http,
            credentials: &mut creds,
            host: &mut host,
            store: &mut store,
        };
        let hint = crate::operations::wait_for_changes(&mut ports, asked)
            .unwrap_or_else(|e| panic!("long poll failed: {e}"));
        assert!(!hint.changes);
        let last = events
            .borrow()
            .iter()
            .rev()
            .find(|e| e.starts_with("longpoll"))
            .cloned();
        assert_eq!(
            last,
            Some(format!("longpoll {expected}")),
            "max {max_timeout_ms} ms"
        );
        let timeout = events.borrow().last().cloned().unwrap_or_default();
        let ms: u64 = timeout
            .strip_prefix("read timeout Some(")
            .and_then(|t| t.strip_suffix(')'))
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no read timeout in {timeout}"));
        // The budget counts down from the call's start: a few ms may have passed.
        assert!(
            ms <= cut && ms + 1_000 > cut,
            "asked {asked} s, cut at {ms} ms, not {cut}"
        );
    }
}

#[test]
fn a_long_poll_cut_at_its_timeout_reports_no_changes_without_a_retry() {
    let events = Events::default();
    let mut http = dropbox(MIB, Vec::new(), Vec::new(), &events);
    http.longpoll_times_out = true;
    let mut store = store(&events);
    store.inner.sync_point = Some(
        json!({"cursor": "c9", "filters": crate::config::Filters::default().fingerprint()})
            .to_string(),
    );
    let (mut creds, mut host) = (NoRefresh, host_1_mib());
    let mut ports = Ports {
        http: &mut http,
        credentials: &mut creds,
        host: &mut host,
        store: &mut store,
    };
    let hint = crate::operations::wait_for_changes(&mut ports, 5)
        .unwrap_or_else(|e| panic!("a cut long-poll is not an error: {e}"));
    assert!(!hint.changes);
    let polls = events
        .borrow()
        .iter()
        .filter(|e| e.starts_with("longpoll"))
        .count();
    // A retry would wait a second budget: the call would outlast its timeout.
    assert_eq!(polls, 1, "{:?}", events.borrow());
}

/// A host that runs started requests only when they are waited for (the contract allows it),
/// with the token each request carried when it was started: generation 0 has expired, a
/// refresh makes the next. Every start and every request that reaches the service is logged.
struct DeferredHost {
    inner: FakeDropbox,
    queued: std::collections::HashMap<u64, (HttpRequest, u32)>,
    next_id: u64,
    token: Rc<std::cell::Cell<u32>>,
}

fn route_of(request: &HttpRequest) -> String {
    request
        .url
        .split("/2/")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

impl DeferredHost {
    fn answer(&mut self, request: HttpRequest, token: u32) -> Result<HttpResponse, HttpError> {
        let route = route_of(&request);
        self.inner
            .events
            .borrow_mut()
            .push(format!("serve {route}"));
        if token == 0 {
            return Ok(HttpResponse {
                status: 401,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: br#"{"error_summary": "expired_access_token/.", "error": {".tag": "expired_access_token"}}"#.to_vec(),
            });
        }
        self.inner.send(request)
    }
}

impl Http for DeferredHost {
    fn send(&mut self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let token = self.token.get();
        self.answer(request, token)
    }

    fn start(&mut self, request: HttpRequest) -> Result<crate::ports::PendingRequest, HttpError> {
        self.inner
            .events
            .borrow_mut()
            .push(format!("start {}", route_of(&request)));
        let id = self.next_id;
        self.next_id += 1;
        self.queued.insert(id, (request, self.token.get()));
        Ok(crate::ports::PendingRequest::started(id))
    }

    fn wait(&mut self, pending: crate::ports::PendingRequest) -> Result<HttpResponse, HttpError> {
        let id = match pending.into_id() {
            Ok(id) => id,
            Err(outcome) => return outcome,
        };
        let Some((request, token)) = self.queued.remove(&id) else {
            return Err(HttpError::InvalidRequest(format!("unknown request {id}")));
        };
        self.answer(request, token)
    }
}

/// Refreshes make the next token generation.
struct Refresher {
    token: Rc<std::cell::Cell<u32>>,
    refreshes: u32,
}

impl Credentials for Refresher {
    fn refresh_access_token(&mut self) -> Result<(), RefreshError> {
        self.refreshes += 1;
        self.token.set(self.token.get() + 1);
        Ok(())
    }
}

/// A full sync of three pages of two files through `DeferredHost`, the host allowing
/// `max_pending` started requests; the token starts at generation `token`. Gives the log, the
/// refreshes, the summary and the store.
fn deferred_sync(
    max_pending: u32,
    token: u32,
) -> (Vec<String>, u32, crate::model::SyncSummary, LoggedStore) {
    let events = Events::default();
    let token = Rc::new(std::cell::Cell::new(token));
    let mut http = DeferredHost {
        inner: dropbox(MIB, Vec::new(), listing(3, 2), &events),
        queued: Default::default(),
        next_id: 1,
        token: token.clone(),
    };
    let mut store = store(&events);
    let mut creds = Refresher {
        token,
        refreshes: 0,
    };
    let mut host = FakeHost {
        limits: HostLimits {
            max_pending_requests: max_pending,
            ..HostLimits::default()
        },
    };
    let summary = sync_through(&mut http, &mut creds, &mut host, &mut store)
        .unwrap_or_else(|e| panic!("sync failed: {e}"));
    assert!(http.queued.is_empty(), "every started request was read");
    let log = events.borrow().clone();
    (log, creds.refreshes, summary, store)
}

#[test]
fn the_opening_requests_go_out_together_when_the_host_allows() {
    let (log, _, summary, store) = deferred_sync(4, 1);
    let opening = [
        "start users/get_current_account",
        "start sharing/list_shared_links",
        "start files/list_folder",
    ];
    assert_eq!(log[..3], opening, "{log:?}");
    assert_eq!(log[3], "serve users/get_current_account", "{log:?}");
    // The answers are read in the order they are needed; nothing is committed before.
    let served: Vec<&str> = log
        .iter()
        .filter_map(|e| e.strip_prefix("serve "))
        .take(3)
        .collect();
    assert_eq!(
        served,
        [
            "users/get_current_account",
            "sharing/list_shared_links",
            "files/list_folder"
        ]
    );
    assert_eq!(summary.entries, 6);
    assert_eq!(summary.api_calls, 5, "account, links, three pages");
    let live = store.inner.records.values().filter(|(_, p)| !p).count();
    assert_eq!(live, 6);

    // An incremental run starts its changes with the stored cursor at once too.
    let events = Events::default();
    let mut http = DeferredHost {
        inner: dropbox(MIB, Vec::new(), listing(3, 2), &events),
        queued: Default::default(),
        next_id: 1,
        token: Rc::new(std::cell::Cell::new(1)),
    };
    let mut store = store;
    store.events = events.clone();
    let mut creds = NoRefresh;
    let mut host = FakeHost {
        limits: HostLimits {
            max_pending_requests: 4,
            ..HostLimits::default()
        },
    };
    // The fake's page 2 is its last: continuing from c2 reads it.
    store.inner.sync_point = Some(
        json!({"cursor": "c2", "filters": crate::config::Filters::default().fingerprint()})
            .to_string(),
    );
    let summary = sync_through(&mut http, &mut creds, &mut host, &mut store)
        .unwrap_or_else(|e| panic!("incremental sync failed: {e}"));
    assert_eq!(summary.kind, crate::model::SyncKind::Incremental);
    assert_eq!(summary.api_calls, 3);
    let log = events.borrow().clone();
    assert_eq!(log[2], "start files/list_folder/continue", "{log:?}");
    assert!(log[..3].iter().all(|e| e.starts_with("start ")), "{log:?}");
}

#[test]
fn a_host_that_allows_one_pending_request_gets_the_opening_one_by_one() {
    let (log, _, summary, _) = deferred_sync(1, 1);
    // The only start is the listing's own prefetch, after the first page came back.
    let first_start = log
        .iter()
        .position(|e| e.starts_with("start "))
        .unwrap_or_else(|| panic!("no start in {log:?}"));
    assert_eq!(
        log[..first_start],
        [
            "serve users/get_current_account",
            "serve sharing/list_shared_links",
            "serve files/list_folder",
            "list_folder",
        ],
        "{log:?}"
    );
    assert_eq!(log[first_start], "start files/list_folder/continue");
    assert_eq!(summary.entries, 6);
}

#[test]
fn calls_started_together_refresh_an_expired_token_once() {
    let (log, refreshes, summary, store) = deferred_sync(4, 0);
    assert_eq!(refreshes, 1, "{log:?}");
    // Each of the three came back 401 once and was sent again with the new token.
    let served = |route: &str| {
        log.iter()
            .filter(|e| *e == &format!("serve {route}"))
            .count()
    };
    assert_eq!(served("users/get_current_account"), 2, "{log:?}");
    assert_eq!(served("sharing/list_shared_links"), 2, "{log:?}");
    assert_eq!(served("files/list_folder"), 2, "{log:?}");
    assert_eq!(summary.entries, 6);
    assert_eq!(
        summary.retries, 0,
        "a refresh's second attempt is not a retry"
    );
    assert_eq!(summary.api_calls, 8);
    let live = store.inner.records.values().filter(|(_, p)| !p).count();
    assert_eq!(live, 6);
}

#[test]
fn shared_links_that_never_end_stop_the_sync_after_a_bound() {
    let events = Events::default();
    let mut http = dropbox(MIB, Vec::new(), listing(1, 2), &events);
    http.endless_links = true;
    let mut store = store(&events);
    let (mut creds, mut host) = (NoRefresh, host_1_mib());
    let result = sync_through(&mut http, &mut creds, &mut host, &mut store);
    match result {
        Err(ConnectorError::Internal(m)) => {
            assert!(m.contains("no links"), "{m}")
        }
        other => panic!("expected an internal error, got {other:?}"),
    }
    assert_eq!(
        http.link_pages,
        crate::sync::MAX_EMPTY_PAGES + 1,
        "the bound, then the end"
    );
    assert!(store.points.is_empty(), "nothing was committed");
}

#[test]
fn a_resumed_listing_reports_the_kind_it_began_as() {
    for (resync, expected) in [
        (true, crate::model::SyncKind::Resync),
        (false, crate::model::SyncKind::Full),
    ] {
        let events = Events::default();
        let mut http = dropbox(MIB, Vec::new(), listing(3, 2), &events);
        let mut store = store(&events);
        // A listing interrupted after its first page: it resumes at that page's cursor.
        let mut state = json!({
            "cursor": "c1",
            "filters": crate::config::Filters::default().fingerprint(),
            "listing": true,
            "unfinished": true,
        });
        if resync {
            state["resync"] = json!(true);
        }
        store.inner.sync_point = Some(state.to_string());
        let (mut creds, mut host) = (NoRefresh, host_1_mib());
        let summary = sync_through(&mut http, &mut creds, &mut host, &mut store)
            .unwrap_or_else(|e| panic!("sync failed: {e}"));
        assert_eq!(summary.kind, expected, "resync: {resync}");
        // Once the listing is complete, the flag is gone.
        let last = store.points.last().map(|p| p.position.clone());
        assert!(
            last.as_deref().is_some_and(|p| !p.contains("resync")),
            "{last:?}"
        );
    }
}

#[test]
fn a_re_listing_after_a_filter_change_stores_that_it_is_one() {
    let events = Events::default();
    let mut http = dropbox(MIB, Vec::new(), listing(3, 2), &events);
    let mut store = store(&events);
    store.inner.sync_point = Some(json!({"cursor": "old", "filters": "other filters"}).to_string());
    let (mut creds, mut host) = (NoRefresh, host_1_mib());
    let summary = sync_through(&mut http, &mut creds, &mut host, &mut store)
        .unwrap_or_else(|e| panic!("sync failed: {e}"));
    assert_eq!(summary.kind, crate::model::SyncKind::Resync);
    let listing: Vec<&str> = store
        .points
        .iter()
        .map(|p| p.position.as_str())
        .filter(|p| p.contains("\"listing\":true"))
        .collect();
    assert!(!listing.is_empty(), "the listing took several commits");
    assert!(
        listing.iter().all(|p| p.contains("\"resync\":true")),
        "{listing:?}"
    );
}

#[test]
fn more_shared_records_than_the_hosts_list_cap_are_found_by_paging() {
    // Three stored records marked shared, a host whose list-shared answers at most two, and
    // an account with no shared link any more: every one is unshared all the same.
    let events = Events::default();
    let files: Vec<Value> = (0..3)
        .map(|i| file_meta(&format!("id:s{i}"), &format!("s{i}.txt"), 1, "h"))
        .collect();
    let mut http = dropbox(MIB, Vec::new(), vec![files], &events);
    let mut store = store(&events);
    let (mut creds, mut host) = (NoRefresh, host_1_mib());
    sync_through(&mut http, &mut creds, &mut host, &mut store)
        .unwrap_or_else(|e| panic!("first sync failed: {e}"));
    for (record, _) in store.inner.records.values_mut() {
        record.is_shared = true;
        record.shared_url = Some("https://link".into());
    }
    store.shared_cap = Some(2);
    store.inner.sync_point = None;
    sync_through(&mut http, &mut creds, &mut host, &mut store)
        .unwrap_or_else(|e| panic!("a sync past the list cap failed: {e}"));
    let still_shared = store
        .inner
        .records
        .values()
        .filter(|(r, _)| r.is_shared || r.shared_url.is_some())
        .count();
    assert_eq!(still_shared, 0);
}
