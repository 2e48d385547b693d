//! The connector's logic against in-memory ports: a fake notes service behind `Http`, and a
//! store that keeps the contract's removal rules and checks its invariant after every batch.

use std::collections::BTreeMap;
use std::time::Duration;

use connector_sdk::model::*;
use connector_sdk::ports::{self, HttpError, HttpRequest, HttpResponse, Level, Sink, SinkError};
use connector_sdk::{Connector, ConnectorError, Ports};

use super::{Notes, Position, Resume, change_kind};

#[derive(Clone)]
struct FakeNote {
    title: String,
    content: Vec<u8>,
    updated: u64,
    deleted: bool,
    etag: String,
}

/// The notes service, answering the URLs the connector builds.
#[derive(Default)]
struct Service {
    seq: u64,
    notes: BTreeMap<String, FakeNote>,
    oldest_since: u64,
}

impl Service {
    fn create(&mut self, id: &str, title: &str, content: &[u8]) {
        self.seq += 1;
        let note = FakeNote {
            title: title.into(),
            content: content.to_vec(),
            updated: self.seq,
            deleted: false,
            etag: format!("e{}", self.seq),
        };
        self.notes.insert(id.into(), note);
    }

    fn edit(&mut self, id: &str, change: impl FnOnce(&mut FakeNote, u64)) {
        self.seq += 1;
        let seq = self.seq;
        let note = self.notes.get_mut(id).expect("a known note");
        note.updated = seq;
        change(note, seq);
    }

    fn forget_history(&mut self) {
        self.notes.retain(|_, n| !n.deleted);
        self.oldest_since = self.seq;
    }

    fn json(status: u16, value: serde_json::Value) -> HttpResponse {
        HttpResponse {
            status,
            headers: Vec::new(),
            body: value.to_string().into_bytes(),
        }
    }
}

impl ports::Http for Service {
    fn send(&mut self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        assert!(request.authenticated, "every request carries the token");
        let path = request
            .url
            .strip_prefix("https://notes.example.test/v1/")
            .expect("only the declared host");
        let (route, query) = path.split_once('?').unwrap_or((path, ""));
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.parse::<u64>().unwrap())
        };
        if route == "me" {
            return Ok(Service::json(
                200,
                serde_json::json!({"id": "a1", "email": "o@x", "name": "O"}),
            ));
        }
        if route == "notes" {
            let limit = param("limit").unwrap() as usize;
            let after = query
                .split('&')
                .find_map(|p| p.strip_prefix("after="))
                .map(str::to_string);
            let since = param("since");
            if since.is_some_and(|s| s < self.oldest_since) {
                return Ok(Service::json(410, serde_json::json!({})));
            }
            let mut changed: Vec<(&String, &FakeNote)> = self
                .notes
                .iter()
                .filter(|(id, n)| match since {
                    Some(s) => n.updated > s,
                    None => !n.deleted && after.as_ref().is_none_or(|a| *id > a),
                })
                .collect();
            if since.is_some() {
                changed.sort_by_key(|(_, n)| n.updated);
            }
            let has_more = changed.len() > limit;
            changed.truncate(limit);
            let next = match (since, changed.last()) {
                (Some(_), Some((_, n))) if has_more => n.updated,
                (Some(s), _) => self.seq.max(s),
                (None, _) => self.seq,
            };
            let notes: Vec<_> = changed
                .iter()
                .map(|(id, n)| serde_json::json!({"id": id, "title": n.title, "size": n.content.len(), "updated": n.updated, "deleted": n.deleted, "etag": n.etag}))
                .collect();
            return Ok(Service::json(
                200,
                serde_json::json!({"notes": notes, "next": next, "has_more": has_more}),
            ));
        }
        let id = route
            .strip_prefix("notes/")
            .and_then(|r| r.strip_suffix("/content"))
            .expect("a known route");
        let Some(note) = self.notes.get(id).filter(|n| !n.deleted) else {
            return Ok(Service::json(404, serde_json::json!({})));
        };
        let range = request
            .headers
            .iter()
            .find(|(k, _)| k == "Range")
            .map(|(_, v)| v.clone())
            .expect("content is read by ranges");
        let (first, last) = range
            .strip_prefix("bytes=")
            .and_then(|r| r.split_once('-'))
            .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()))
            .unwrap();
        let total = note.content.len();
        if first >= total {
            return Ok(HttpResponse {
                status: 416,
                headers: vec![("Content-Range".into(), format!("bytes */{total}"))],
                body: Vec::new(),
            });
        }
        let last = last.min(total - 1);
        Ok(HttpResponse {
            status: 206,
            headers: vec![(
                "Content-Range".into(),
                format!("bytes {first}-{last}/{total}"),
            )],
            body: note.content[first..=last].to_vec(),
        })
    }
}

/// The host: config, limits, and a stop request after a number of `should_stop` calls.
struct Host {
    page_size: u32,
    max_response_body: u64,
    stop_after: Option<u32>,
}

impl ports::HostEnv for Host {
    fn log(&mut self, _: Level, _: &str) {}
    fn progress(&mut self, _: &str, _: u32, _: u64, _: Option<u64>) {}
    fn config(&mut self) -> Vec<(String, String)> {
        vec![(super::PAGE_SIZE.into(), self.page_size.to_string())]
    }
    fn should_stop(&mut self) -> bool {
        match &mut self.stop_after {
            Some(0) => true,
            Some(n) => {
                *n -= 1;
                false
            }
            None => false,
        }
    }
    fn sleep(&mut self, _: Duration) {}
    fn limits(&mut self) -> HostLimits {
        HostLimits {
            max_response_body: self.max_response_body,
            ..HostLimits::default()
        }
    }
    fn now(&mut self) -> i64 {
        0
    }
    fn random(&mut self) -> u64 {
        0
    }
}

/// The records store's id-keyed rules, with the event stream as (kind, id).
#[derive(Default)]
struct Store {
    records: BTreeMap<String, (Record, bool)>,
    sync_point: Option<SyncPoint>,
    events: Vec<(String, String)>,
}

impl ports::Records for Store {
    fn apply(
        &mut self,
        changes: Vec<Change>,
        sync_point: Option<SyncPoint>,
    ) -> Result<ApplySummary, ports::StoreError> {
        let mut summary = ApplySummary::default();
        for change in changes {
            match change {
                Change::Upsert { record, event } => {
                    assert!(record.path.is_none(), "a flat source has no paths");
                    let id = record.external_id.clone();
                    let word = match event {
                        ChangeKind::Created => "created",
                        ChangeKind::Content => "content",
                        ChangeKind::Metadata => "metadata",
                        ChangeKind::ContentAndMetadata => "content_and_metadata",
                        ChangeKind::Unchanged => "",
                    };
                    if !word.is_empty() {
                        self.events.push((word.into(), id.clone()));
                    }
                    match event {
                        ChangeKind::Created => summary.created += 1,
                        ChangeKind::Content => summary.content_updates += 1,
                        ChangeKind::Metadata => summary.metadata_updates += 1,
                        ChangeKind::ContentAndMetadata => {
                            summary.content_updates += 1;
                            summary.metadata_updates += 1;
                        }
                        ChangeKind::Unchanged => {}
                    }
                    self.records.insert(id, (record, false));
                }
                Change::Remove(id) => {
                    if let Some(slot) = self.records.get_mut(&id) {
                        slot.1 = true;
                    }
                }
                Change::MarkAllPending => self.records.values_mut().for_each(|r| r.1 = true),
                Change::Purge => {
                    let gone: Vec<String> = self
                        .records
                        .iter()
                        .filter(|(_, r)| r.1)
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in gone {
                        self.records.remove(&id);
                        self.events.push(("deleted".into(), id));
                        summary.deletions += 1;
                    }
                }
                other => panic!("a flat source sends no path change: {other:?}"),
            }
        }
        if sync_point.is_some() {
            self.sync_point = sync_point;
        }
        // The contract's invariant: marks only while the stored sync point says a sequence
        // that may restore them is unfinished.
        if self.records.values().any(|r| r.1) {
            let phase = self.sync_point.as_ref().map(|p| p.status.phase);
            assert_eq!(phase, Some(SyncPhase::Listing), "marks left behind");
        }
        Ok(summary)
    }
    fn get_sync_point(&mut self) -> Result<Option<String>, ports::StoreError> {
        Ok(self.sync_point.as_ref().map(|p| p.position.clone()))
    }
    fn get_records(&mut self, ids: Vec<String>) -> Result<Vec<StoredRecord>, ports::StoreError> {
        Ok(ids
            .iter()
            .filter_map(|id| self.records.get(id))
            .map(|(record, pending)| StoredRecord {
                record: record.clone(),
                pending_removal: *pending,
            })
            .collect())
    }
    fn list_records(&mut self, _: Option<&str>, _: u32) -> Result<Vec<Record>, ports::StoreError> {
        unreachable!("not used by the notes connector")
    }
    fn list_shared(&mut self) -> Result<Vec<Record>, ports::StoreError> {
        unreachable!("not used by the notes connector")
    }
    fn put_owner(
        &mut self,
        _: User,
        _: RecordGroup,
        _: Vec<Permission>,
    ) -> Result<(), ports::StoreError> {
        Ok(())
    }
    fn clear(&mut self) -> Result<(), ports::StoreError> {
        unreachable!("not used by the notes connector")
    }
}

impl ports::Paths for Store {
    fn find_by_paths(&mut self, _: Vec<String>) -> Result<Vec<Option<Record>>, ports::StoreError> {
        panic!("a flat source never asks for paths")
    }
    fn list_subtree(
        &mut self,
        _: &str,
        _: Option<&str>,
        _: u32,
    ) -> Result<Vec<Record>, ports::StoreError> {
        panic!("a flat source never asks for paths")
    }
}

struct World {
    service: Service,
    host: Host,
    store: Store,
}

impl World {
    fn new(page_size: u32) -> World {
        World {
            service: Service::default(),
            host: Host {
                page_size,
                max_response_body: 1 << 20,
                stop_after: None,
            },
            store: Store::default(),
        }
    }

    fn run<T>(&mut self, op: impl FnOnce(&mut Ports<'_>) -> T) -> T {
        let mut credentials = NoRefresh;
        let mut ports = Ports {
            http: &mut self.service,
            credentials: &mut credentials,
            host: &mut self.host,
            store: &mut self.store,
        };
        op(&mut ports)
    }

    fn sync(&mut self) -> SyncSummary {
        self.run(Notes::sync).expect("sync succeeds")
    }

    /// The events since the `from`-th, sorted.
    fn events_from(&self, from: usize) -> Vec<(String, String)> {
        let mut events = self.store.events[from..].to_vec();
        events.sort();
        events
    }

    fn assert_matches_service(&self) {
        let live: BTreeMap<&String, &FakeNote> = self
            .service
            .notes
            .iter()
            .filter(|(_, n)| !n.deleted)
            .collect();
        assert_eq!(
            live.keys().copied().collect::<Vec<_>>(),
            self.store.records.keys().collect::<Vec<_>>()
        );
        for (id, note) in live {
            let (record, pending) = &self.store.records[id];
            assert!(!pending);
            assert_eq!(record.name, note.title);
            assert_eq!(record.size, note.content.len() as u64);
            assert_eq!(record.revision.as_deref(), Some(note.etag.as_str()));
            assert_eq!(record.kind, RecordKind::Item);
        }
    }
}

struct NoRefresh;

impl ports::Credentials for NoRefresh {
    fn refresh_access_token(&mut self) -> Result<(), ports::RefreshError> {
        Err(ports::RefreshError::ReauthenticationRequired(
            "no OAuth".into(),
        ))
    }
}

fn events(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(k, i)| (k.to_string(), i.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn positions_round_trip_and_an_unreadable_one_lists_again() {
    let resume = |since, after: &str| {
        Some(Resume {
            since,
            after: after.into(),
        })
    };
    for p in [
        Position::Listing {
            marked: false,
            resume: None,
        },
        Position::Listing {
            marked: false,
            resume: resume(4, "n:1"),
        },
        Position::Listing {
            marked: true,
            resume: None,
        },
        Position::Listing {
            marked: true,
            resume: resume(9, "x"),
        },
        Position::Current { since: 0 },
        Position::Current { since: 77 },
    ] {
        assert_eq!(Position::parse(Some(&p.encode())), p);
    }
    assert_eq!(
        Position::parse(None),
        Position::Listing {
            marked: false,
            resume: None
        }
    );
    for junk in [
        "",
        "current",
        "current:x",
        "cursor:1",
        "listing:4",
        "listing:x:n1",
    ] {
        assert_eq!(
            Position::parse(Some(junk)),
            Position::Listing {
                marked: true,
                resume: None
            },
            "{junk:?}"
        );
    }
}

#[test]
fn the_change_kind_compares_content_and_metadata_apart() {
    let note = super::Note {
        id: "n1".into(),
        title: "T".into(),
        size: 3,
        deleted: false,
        etag: "e1".into(),
    };
    let old = super::record_of(&note);
    assert_eq!(change_kind(None, &old), ChangeKind::Created);
    assert_eq!(change_kind(Some(&old), &old), ChangeKind::Unchanged);
    let mut renamed = old.clone();
    renamed.name = "U".into();
    assert_eq!(change_kind(Some(&old), &renamed), ChangeKind::Metadata);
    let mut edited = old.clone();
    edited.revision = Some("e2".into());
    assert_eq!(change_kind(Some(&old), &edited), ChangeKind::Content);
    edited.name = "U".into();
    assert_eq!(
        change_kind(Some(&old), &edited),
        ChangeKind::ContentAndMetadata
    );
}

#[test]
fn full_incremental_and_a_relisting_after_a_forgotten_position() {
    let mut w = World::new(2);
    for (id, title) in [("a", "A"), ("b", "B"), ("c", "C"), ("d", "D"), ("e", "E")] {
        w.service.create(id, title, title.as_bytes());
    }
    let full = w.sync();
    assert_eq!(
        (full.kind, full.pages, full.applied.created),
        (SyncKind::Full, 3, 5)
    );
    w.assert_matches_service();
    assert_eq!(
        w.store.sync_point.as_ref().unwrap().status.phase,
        SyncPhase::Current
    );

    let seen = w.store.events.len();
    w.service.create("f", "F", b"new");
    w.service.edit("a", |n, _| n.title = "A2".into());
    w.service.edit("b", |n, seq| {
        n.content = b"longer".to_vec();
        n.etag = format!("e{seq}");
    });
    w.service.edit("c", |n, _| n.deleted = true);
    w.service.create("g", "G", b"");
    w.service.edit("g", |n, _| n.deleted = true);
    let incremental = w.sync();
    assert_eq!(incremental.kind, SyncKind::Incremental);
    w.assert_matches_service();
    assert_eq!(
        w.events_from(seen),
        events(&[
            ("created", "f"),
            ("metadata", "a"),
            ("content", "b"),
            ("deleted", "c")
        ])
    );

    let seen = w.store.events.len();
    w.service.edit("d", |n, _| n.deleted = true);
    w.service.edit("e", |n, _| n.title = "E2".into());
    w.service.forget_history();
    let resync = w.sync();
    assert_eq!(resync.kind, SyncKind::Resync);
    w.assert_matches_service();
    assert_eq!(
        w.events_from(seen),
        events(&[("deleted", "d"), ("metadata", "e")])
    );
    // The position the re-listing stored is followed again, without another re-listing.
    let seen = w.store.events.len();
    w.service.edit("e", |n, _| n.title = "E3".into());
    let after = w.sync();
    assert_eq!(after.kind, SyncKind::Incremental);
    assert_eq!(w.events_from(seen), events(&[("metadata", "e")]));
    w.assert_matches_service();
}

#[test]
fn an_interrupted_relisting_keeps_its_marks_under_a_listing_point_and_finishes_later() {
    let mut w = World::new(1);
    for id in ["a", "b", "c", "d"] {
        w.service.create(id, id, b"x");
    }
    w.sync();
    w.service.edit("b", |n, _| n.deleted = true);
    w.service.forget_history();
    // The 410 answer, then one page of the re-listing, then the host asks to stop.
    w.host.stop_after = Some(2);
    let seen = w.store.events.len();
    let stopped = w.sync();
    assert!(stopped.interrupted);
    assert_eq!(stopped.kind, SyncKind::Resync);
    assert!(w.store.records.values().any(|r| r.1), "marks are kept");
    let stored = w.store.sync_point.as_ref().map(|p| p.position.as_str());
    assert!(
        matches!(
            Position::parse(stored),
            Position::Listing {
                marked: true,
                resume: Some(_)
            }
        ),
        "the re-listing goes on from its page: {stored:?}"
    );
    assert!(w.events_from(seen).is_empty(), "nothing deleted yet");

    w.host.stop_after = None;
    let finished = w.sync();
    assert_eq!(finished.kind, SyncKind::Resync);
    assert!(!finished.interrupted);
    w.assert_matches_service();
    assert_eq!(w.events_from(seen), events(&[("deleted", "b")]));
}

struct Collect(Vec<Vec<u8>>);

impl Sink for Collect {
    fn write(&mut self, chunk: &[u8]) -> Result<(), SinkError> {
        self.0.push(chunk.to_vec());
        Ok(())
    }
}

#[test]
fn content_is_streamed_in_chunks_no_larger_than_the_hosts_limit() {
    let mut w = World::new(10);
    let content: Vec<u8> = (0..25u8).collect();
    w.service.create("big", "Big", &content);
    w.service.create("empty", "Empty", b"");
    w.host.max_response_body = 10;
    let mut sink = Collect(Vec::new());
    let summary = w
        .run(|p| Notes::stream_record(p, &mut sink, "big"))
        .unwrap();
    assert_eq!(summary.size, 25);
    assert!(sink.0.iter().all(|c| c.len() <= 10), "{:?}", sink.0);
    assert_eq!(sink.0.concat(), content);

    let mut sink = Collect(Vec::new());
    let summary = w
        .run(|p| Notes::stream_record(p, &mut sink, "empty"))
        .unwrap();
    assert_eq!(summary.size, 0);
    assert!(sink.0.concat().is_empty());

    let mut sink = Collect(Vec::new());
    let missing = w.run(|p| Notes::stream_record(p, &mut sink, "nope"));
    assert!(
        matches!(missing, Err(ConnectorError::NotFound(_))),
        "{missing:?}"
    );
}

#[test]
fn signed_urls_are_left_to_the_sdk_default() {
    let mut w = World::new(10);
    let answer = w.run(|p| Notes::get_signed_url(p, "a"));
    assert!(
        matches!(answer, Err(ConnectorError::Unsupported(_))),
        "{answer:?}"
    );
}
