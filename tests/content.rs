//! Reading content through the real component in the real host against the emulator: signed
//! URLs, streamed downloads verified against Dropbox's content hash, resumption after a dropped
//! connection, exports of non-downloadable files, re-indexing, the `cat` and `url` commands,
//! and the guest's memory while it streams a file larger than its memory cap.
//!
//! `bench_stream_throughput` (ignored) measures the sandbox's streaming rate against a plain
//! HTTP download of the same file:
//! `cargo test --release -p e2e-tests --test content -- --ignored --nocapture`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dropbox_emulator::{Content, ContentHasher, Emulator, Fault, FaultKind};
use e2e_tests::{Harness, count, dropbox_runtime};
use host_test::app::{ConnectorHost, HostError};
use host_test::bindings::connector::StreamSummary;
use host_test::bindings::types::ConnectorError;
use host_test::http::HttpSettings;
use host_test::runtime::SandboxConfig;
use host_test::store::Record;

const MIB: u64 = 1024 * 1024;
/// The connector's range size: one Dropbox hash block.
const CHUNK: u64 = 4 * MIB;

fn bytes(s: &str) -> Content {
    Content::Bytes(s.as_bytes().to_vec())
}

/// A sink the test can read back after the component wrote to it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Write for Captured {
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

/// A sink that only hashes and counts what it receives (for files too large to keep).
#[derive(Clone, Default)]
struct Hashing(Arc<Mutex<(ContentHasher, u64)>>);

impl Hashing {
    fn result(&self) -> (String, u64) {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (hasher, n) = std::mem::take(&mut *guard);
        (hasher.finalize_hex(), n)
    }
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.update(buf);
        guard.1 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn record_at(h: &Harness, path_lower: &str) -> Record {
    h.records()
        .into_iter()
        .find(|r| r.path_lower() == Some(path_lower))
        .unwrap_or_else(|| panic!("no record at {path_lower}"))
}

/// Stream a record into memory; the summary and the bytes.
fn read(h: &Harness, id: &str) -> Result<(StreamSummary, Vec<u8>), HostError> {
    let sink = Captured::default();
    let outcome = h.host.stream(&h.tenant, id, Box::new(sink.clone()))?;
    Ok((outcome.value, sink.take()))
}

/// The guest memory cap of the streaming tests.
const CAP: usize = 32 * 1024 * 1024;

/// A guest capped at `CAP` of linear memory streams `content`, stored at `path`, into a
/// hashing sink: the outcome, and the sink's (content hash, length).
fn stream_under_cap(
    seed: u64,
    path: &str,
    content: &Content,
) -> (
    Harness,
    host_test::app::Outcome<StreamSummary>,
    (String, u64),
) {
    let h = Harness::new(0, seed);
    h.emulator.create_file(path, content.clone()).unwrap();
    h.sync();
    let id = record_at(&h, &path.to_lowercase()).external_id;
    let runtime = host_test::components::default_runtime(SandboxConfig {
        memory_limit: CAP,
        ..Default::default()
    })
    .expect("the component loads");
    let host = ConnectorHost::new(
        Arc::new(runtime),
        h.host.store().clone(),
        Some(&h.emulator.base_url()),
        Default::default(),
    )
    .expect("a host with a 32 MiB guest");
    let sink = Hashing::default();
    let outcome = host
        .stream(&h.tenant, &id, Box::new(sink.clone()))
        .expect("the stream fits under the cap");
    let result = sink.result();
    (h, outcome, result)
}

fn downloads(emulator: &Emulator) -> u64 {
    emulator
        .request_counts()
        .get("files/download")
        .copied()
        .unwrap_or(0)
}

fn chunks(len: u64) -> u64 {
    len.div_ceil(CHUNK).max(1)
}

fn expect_connector_error<T: std::fmt::Debug>(result: Result<T, HostError>) -> ConnectorError {
    match result {
        Err(HostError::Connector(e)) => e,
        other => panic!("expected a connector error, got {other:?}"),
    }
}

#[test]
fn small_empty_and_multi_block_files_stream_verified_in_ranges() {
    let h = Harness::new(0, 1);
    let files: Vec<(&str, Content)> = vec![
        ("/small.txt", bytes("hello, dropbox")),
        ("/empty.bin", Content::Bytes(Vec::new())),
        ("/one byte.bin", bytes("a")),
        // Exactly one block, and one block and a byte: the block boundary on both sides.
        (
            "/block.bin",
            Content::Pattern {
                seed: 3,
                len: CHUNK,
            },
        ),
        (
            "/block plus one.bin",
            Content::Pattern {
                seed: 4,
                len: CHUNK + 1,
            },
        ),
        (
            "/nine.bin",
            Content::Pattern {
                seed: 5,
                len: 9 * MIB,
            },
        ),
    ];
    for (path, content) in &files {
        h.emulator.create_file(path, content.clone()).unwrap();
    }
    h.sync();
    for (path, content) in &files {
        let record = record_at(&h, &path.to_lowercase());
        h.emulator.reset_counts();
        let (summary, got) =
            read(&h, &record.external_id).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(
            got == content.to_bytes(),
            "{path}: the bytes written to the sink differ from the file"
        );
        assert_eq!(summary.size, content.len(), "{path}");
        assert_eq!(
            summary.content_hash.as_deref(),
            Some(content.content_hash().as_str()),
            "{path}"
        );
        assert!(
            summary.verified,
            "{path}: the hash was published, so it must have been checked"
        );
        assert_eq!(summary.mime_type, record.mime_type, "{path}");
        // One ranged request per 4 MiB block: never the whole file in one response. An empty
        // file has no byte to range over: its ranged request is refused (416), then it is read
        // whole.
        let expected = if content.is_empty() {
            2
        } else {
            chunks(content.len())
        };
        assert_eq!(
            downloads(&h.emulator),
            expected,
            "{path}: {:?}",
            h.emulator.request_counts()
        );
    }
}

#[test]
fn a_stale_stored_size_does_not_change_how_a_file_is_read() {
    let h = Harness::new(0, 14);
    h.emulator
        .create_file("/grew.bin", Content::Bytes(Vec::new()))
        .unwrap();
    h.emulator
        .create_file("/shrank.bin", bytes("not empty yet"))
        .unwrap();
    h.sync();
    let grew = record_at(&h, "/grew.bin");
    let shrank = record_at(&h, "/shrank.bin");
    assert_eq!((grew.size, shrank.size), (0, 13));
    // Changed in Dropbox after the sync: the store still has the old sizes.
    let big = Content::Pattern {
        seed: 71,
        len: 9 * MIB,
    };
    h.emulator.modify_file("/grew.bin", big.clone()).unwrap();
    h.emulator
        .modify_file("/shrank.bin", Content::Bytes(Vec::new()))
        .unwrap();

    h.emulator.reset_counts();
    let (summary, got) = read(&h, &grew.external_id).expect("the grown file is read");
    assert!(got == big.to_bytes() && summary.verified);
    assert_eq!(
        downloads(&h.emulator),
        chunks(big.len()),
        "read in ranges although the store said 0 bytes"
    );

    let (summary, got) = read(&h, &shrank.external_id).expect("the emptied file is read");
    assert!(
        got.is_empty() && summary.verified && summary.size == 0,
        "{summary:?}"
    );
}

#[test]
fn a_corrupted_byte_is_an_integrity_error() {
    let h = Harness::new(0, 2);
    let content = Content::Pattern {
        seed: 9,
        len: 9 * MIB,
    };
    h.emulator.create_file("/corrupt me.bin", content).unwrap();
    h.emulator
        .create_file("/small.txt", bytes("a small file, one response"))
        .unwrap();
    h.sync();
    let big = record_at(&h, "/corrupt me.bin").external_id;
    let small = record_at(&h, "/small.txt").external_id;
    // The middle block of the large file, and the only block of the small one.
    h.emulator.inject(Fault {
        route: Some("files/download".into()),
        skip: 1,
        count: 1,
        kind: FaultKind::CorruptByte,
    });
    let e = expect_connector_error(read(&h, &big));
    assert!(matches!(e, ConnectorError::Integrity(_)), "{e:?}");
    h.emulator
        .inject(Fault::once("files/download", FaultKind::CorruptByte));
    let e = expect_connector_error(read(&h, &small));
    assert!(matches!(e, ConnectorError::Integrity(_)), "{e:?}");
    // Without the fault the same reads succeed.
    assert!(read(&h, &big).unwrap().0.verified);
    assert!(read(&h, &small).unwrap().0.verified);
}

#[test]
fn a_dropped_connection_resumes_from_the_last_good_offset() {
    let h = Harness::new(0, 3);
    let content = Content::Pattern {
        seed: 11,
        len: 9 * MIB + 123,
    };
    h.emulator
        .create_file("/resume.bin", content.clone())
        .unwrap();
    h.sync();
    let id = record_at(&h, "/resume.bin").external_id;
    for kind in [FaultKind::DropMidBody, FaultKind::DropConnection] {
        h.emulator.reset_counts();
        // The second block's response is cut (or never sent); the first block is not read again.
        h.emulator.inject(Fault {
            route: Some("files/download".into()),
            skip: 1,
            count: 1,
            kind: kind.clone(),
        });
        let (summary, got) = read(&h, &id).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert!(
            got == content.to_bytes(),
            "{kind:?}: wrong bytes after resuming"
        );
        assert!(summary.verified, "{kind:?}");
        assert_eq!(
            downloads(&h.emulator),
            chunks(content.len()) + 1,
            "{kind:?}: one request repeated, no more"
        );
    }
    // A connection that keeps dropping outlasts the retries: a typed, retryable error.
    h.emulator.inject(Fault {
        route: Some("files/download".into()),
        skip: 1,
        count: 50,
        kind: FaultKind::DropConnection,
    });
    let e = expect_connector_error(read(&h, &id));
    assert!(matches!(e, ConnectorError::Transient(_)), "{e:?}");
    h.emulator.clear_faults();
}

#[test]
fn a_file_changed_during_a_read_is_read_at_one_revision() {
    let h = Harness::new(0, 4);
    let first = Content::Pattern {
        seed: 21,
        len: 10 * MIB,
    };
    let second = Content::Pattern {
        seed: 22,
        len: 10 * MIB,
    };
    h.emulator
        .create_file("/moving target.bin", first.clone())
        .unwrap();
    h.sync();
    let id = record_at(&h, "/moving target.bin").external_id;

    /// Rewrites the file in Dropbox as soon as the first block arrives.
    struct ChangeOnFirstWrite {
        emulator: Emulator,
        next: Option<Content>,
        inner: Hashing,
    }
    impl Write for ChangeOnFirstWrite {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some(next) = self.next.take() {
                self.emulator
                    .modify_file("/moving target.bin", next)
                    .map_err(std::io::Error::other)?;
            }
            self.inner.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let inner = Hashing::default();
    let sink = ChangeOnFirstWrite {
        emulator: h.emulator.clone(),
        next: Some(second.clone()),
        inner: inner.clone(),
    };
    let summary = h
        .host
        .stream(&h.tenant, &id, Box::new(sink))
        .expect("the read succeeds")
        .value;
    let (hash, n) = inner.result();
    assert_eq!(
        (hash.as_str(), n),
        (first.content_hash().as_str(), first.len()),
        "all blocks of the first revision"
    );
    assert!(summary.verified);

    // The next read gets the new revision (the record is behind; the read is not).
    let (summary, got) = read(&h, &id).unwrap();
    assert!(got == second.to_bytes());
    assert_eq!(
        summary.content_hash.as_deref(),
        Some(second.content_hash().as_str())
    );
}

#[test]
fn non_ascii_and_emoji_paths_and_names() {
    let h = Harness::new(0, 5);
    let paths = [
        "/Ünïcödé/Résumé 2026.txt",
        "/日本語/ファイル.txt",
        "/Emoji 😀/🎉 party 🦀.md",
        "/𝄞 music/naïve \u{7f} café.bin",
    ];
    for p in paths {
        h.emulator
            .create_file(p, bytes(&format!("content of {p}")))
            .unwrap();
    }
    h.sync();
    for p in paths {
        // Resolved by path, as `cat PATH` does (case-insensitively).
        let id = h
            .host
            .resolve_record(&h.tenant, &p.to_uppercase())
            .unwrap_or_else(|e| panic!("{p}: {e}"));
        let (summary, got) = read(&h, &id).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(String::from_utf8_lossy(&got), format!("content of {p}"));
        assert!(summary.verified, "{p}");
    }
}

#[test]
fn a_non_downloadable_file_is_exported() {
    let h = Harness::new(0, 6);
    let markdown = "# Plan\n\n- ünïcödé ✓\n- 😀\n".as_bytes().to_vec();
    h.emulator
        .create_non_downloadable("/Paper/Plan 😀.paper", "markdown", markdown.clone())
        .unwrap();
    h.sync();
    let record = record_at(&h, "/paper/plan 😀.paper");
    assert!(!record.is_downloadable);
    assert_eq!(
        record.mime_type, "text/markdown",
        "the platform is told what it will get"
    );
    h.emulator.reset_counts();
    let (summary, got) = read(&h, &record.external_id).expect("the export is read");
    assert_eq!(got, markdown);
    assert_eq!(summary.size, markdown.len() as u64);
    assert_eq!(summary.mime_type, "text/markdown");
    let counts = h.emulator.request_counts();
    assert_eq!(counts.get("files/export"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("files/download"), None, "{counts:?}");
    // Dropbox publishes an export hash (the content-hash algorithm); a damaged export is
    // caught before anything reaches the sink.
    assert!(summary.verified);
    assert_eq!(
        summary.content_hash.as_deref(),
        Some(Content::Bytes(markdown.clone()).content_hash().as_str())
    );
    h.emulator
        .inject(Fault::once("files/export", FaultKind::CorruptByte));
    let sink = Captured::default();
    let e = expect_connector_error(h.host.stream(
        &h.tenant,
        &record.external_id,
        Box::new(sink.clone()),
    ));
    assert!(matches!(e, ConnectorError::Integrity(_)), "{e:?}");
    assert!(
        sink.take().is_empty(),
        "nothing of a damaged export is written"
    );
    // No temporary link exists for such a file; the error says how to read it instead.
    let e = expect_connector_error(h.host.signed_url(&h.tenant, &record.external_id));
    assert!(
        matches!(&e, ConnectorError::Internal(m) if m.contains("stream-record")),
        "{e:?}"
    );
}

#[test]
fn records_that_no_longer_exist_are_not_found() {
    let h = Harness::new(0, 7);
    h.emulator.create_file("/keep.txt", bytes("keep")).unwrap();
    h.emulator.create_file("/gone.txt", bytes("gone")).unwrap();
    h.emulator.create_folder("/A folder").unwrap();
    h.sync();
    let gone = record_at(&h, "/gone.txt").external_id;
    let folder = record_at(&h, "/a folder").external_id;
    h.emulator.delete("/gone.txt").unwrap();

    // In the store, deleted in Dropbox since the last sync; not in the store at all; a folder.
    let missing = "id:AAAAAAAAAAAAAAAAAAAAAA".to_string();
    for id in [&gone, &missing, &folder] {
        let e = expect_connector_error(read(&h, id));
        assert!(
            matches!(e, ConnectorError::NotFound(_)),
            "stream {id}: {e:?}"
        );
        let e = expect_connector_error(h.host.signed_url(&h.tenant, id));
        assert!(
            matches!(e, ConnectorError::NotFound(_)),
            "signed url {id}: {e:?}"
        );
    }
    // The store still has the deleted file: it was Dropbox that said it is gone.
    assert!(h.records().iter().any(|r| r.external_id == gone));
    let e = expect_connector_error(h.host.signed_url(&h.tenant, &gone));
    assert!(
        matches!(&e, ConnectorError::NotFound(m) if m.contains("no longer exists in Dropbox")),
        "{e:?}"
    );
    // A path nobody has is not found either.
    let e = h
        .host
        .resolve_record(&h.tenant, "/nowhere.txt")
        .expect_err("no such path");
    assert!(
        matches!(e, HostError::Connector(ConnectorError::NotFound(_))),
        "{e:?}"
    );
    assert!(read(&h, &record_at(&h, "/keep.txt").external_id).is_ok());
}

/// A plain HTTP/1.1 GET of `url` (an emulator link), the body written to `out`; the status and
/// the number of body bytes.
fn http_get(url: &str, out: &mut dyn Write) -> (u16, u64) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = TcpStream::connect(authority).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    let mut length: Option<u64> = None;
    loop {
        line.clear();
        reader.read_line(&mut line).expect("a header line");
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok();
        }
    }
    let copied = match length {
        Some(n) => std::io::copy(&mut reader.take(n), out),
        None => std::io::copy(&mut reader, out),
    }
    .expect("the body");
    (status, copied)
}

#[test]
fn a_signed_url_serves_the_content_without_credentials() {
    let h = Harness::new(0, 8);
    let content = Content::Pattern {
        seed: 31,
        len: 5 * MIB + 7,
    };
    h.emulator
        .create_file("/Shared/Straße 😀.bin", content.clone())
        .unwrap();
    h.sync();
    let id = record_at(&h, "/shared/straße 😀.bin").external_id;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signed = h
        .host
        .signed_url(&h.tenant, &id)
        .expect("a signed URL")
        .value;
    assert!(
        signed.url.starts_with(&h.emulator.base_url()),
        "{}",
        signed.url
    );
    // Four hours, give or take the clock's second.
    assert!(
        (before + 4 * 3600 - 5..=before + 4 * 3600 + 5).contains(&signed.expires_at),
        "{}",
        signed.expires_at
    );
    let mut body = Vec::new();
    let (status, n) = http_get(&signed.url, &mut body);
    assert_eq!((status, n), (200, content.len()));
    assert!(body == content.to_bytes());
    // And it stops working after four hours.
    h.emulator
        .advance_clock(std::time::Duration::from_secs(4 * 3600 + 1));
    assert_eq!(http_get(&signed.url, &mut std::io::sink()).0, 410);
}

#[test]
fn guest_memory_stays_bounded_while_streaming_a_file_larger_than_the_cap() {
    let content = Content::Pattern {
        seed: 41,
        len: 96 * MIB,
    };
    let (_h, outcome, (hash, n)) = stream_under_cap(9, "/Video/huge.mov", &content);
    assert_eq!(n, content.len());
    assert_eq!(hash, content.content_hash());
    assert!(outcome.value.verified);
    assert!(
        outcome.peak_memory < CAP,
        "peak guest memory {} bytes",
        outcome.peak_memory
    );
    eprintln!(
        "streamed {} MiB with a peak guest memory of {:.1} MiB in {:.2}s",
        content.len() / MIB,
        outcome.peak_memory as f64 / MIB as f64,
        outcome.elapsed.as_secs_f64()
    );
}

#[test]
fn reindex_reports_only_what_changed() {
    let h = Harness::new(0, 10);
    for p in [
        "/docs/changed.txt",
        "/docs/same.txt",
        "/docs/renamed.txt",
        "/docs/gone.txt",
    ] {
        h.emulator.create_file(p, bytes(p)).unwrap();
    }
    h.sync();
    let id = |p: &str| record_at(&h, p).external_id;
    let (changed, same, renamed, gone) = (
        id("/docs/changed.txt"),
        id("/docs/same.txt"),
        id("/docs/renamed.txt"),
        id("/docs/gone.txt"),
    );

    let reindex = |ids: &[&String]| {
        let seq = h.last_seq();
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        let summary = h.host.reindex(&h.tenant, &ids).expect("reindex").value;
        (summary, h.events_since(seq))
    };

    let (summary, events) = reindex(&[&same]);
    assert!(events.is_empty(), "an unchanged file: {events:#?}");
    assert_eq!(
        (
            summary.checked,
            summary.content_updates,
            summary.metadata_updates,
            summary.deletions
        ),
        (1, 0, 0, 0)
    );

    h.emulator
        .modify_file("/docs/changed.txt", bytes("new content"))
        .unwrap();
    let (summary, events) = reindex(&[&changed, &same]);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(
        (events[0].kind.as_str(), events[0].external_id.as_str()),
        ("content", changed.as_str())
    );
    assert_eq!(summary.content_updates, 1);

    h.emulator
        .move_path("/docs/renamed.txt", "/docs/now named.txt")
        .unwrap();
    let (_, events) = reindex(&[&renamed]);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(
        (
            events[0].kind.as_str(),
            events[0].path_lower.as_deref().unwrap_or("<no path>")
        ),
        ("metadata", "/docs/now named.txt")
    );

    h.emulator.delete("/docs/gone.txt").unwrap();
    let (summary, events) = reindex(&[&gone, &same]);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(
        (events[0].kind.as_str(), events[0].external_id.as_str()),
        ("deleted", gone.as_str())
    );
    assert_eq!(summary.deletions, 1);
    // Never a re-index of what is gone: a second reindex of it does nothing.
    let (summary, events) = reindex(&[&gone]);
    assert!(events.is_empty(), "{events:#?}");
    assert_eq!(
        summary.checked, 0,
        "an id the store no longer holds is not counted"
    );

    // The contract (wit/connector.wit, reindex-records): an unknown id is skipped and not
    // counted, a repeated id is checked once.
    let unknown = "id:never-stored".to_string();
    let metadata_calls = || {
        h.emulator
            .request_counts()
            .get("files/get_metadata")
            .copied()
            .unwrap_or(0)
    };
    let calls = metadata_calls();
    let (summary, events) = reindex(&[&unknown, &same, &same]);
    assert!(events.is_empty(), "{events:#?}");
    assert_eq!(summary.checked, 1);
    assert_eq!(metadata_calls() - calls, 1);

    // What was re-indexed now matches Dropbox, and the event stream replays to the store.
    h.assert_matches_truth();
    // A sync afterwards has nothing left to report for these records.
    let seq = h.last_seq();
    h.sync();
    let later = h.events_since(seq);
    assert_eq!(count(&later, "deleted"), 0, "{later:#?}");
    assert!(later.is_empty(), "{later:#?}");
}

#[test]
fn reindex_during_an_interrupted_relisting_deletes_only_what_is_gone() {
    // A re-listing (after a reset) marks every record pending removal and restores what it sees
    // again; if it is interrupted, the records not listed yet are still marked. A reindex in
    // between must not sweep them away with the one it found deleted.
    let h = Harness::new(0, 11);
    h.emulator
        .create_file("/aa/gone.txt", bytes("gone"))
        .unwrap();
    for i in 0..2100 {
        h.emulator
            .create_file(&format!("/many/f{i:04}.txt"), bytes("x"))
            .unwrap();
    }
    let last = Content::Pattern {
        seed: 81,
        len: 5 * MIB,
    };
    h.emulator
        .create_file("/zz/last.bin", last.clone())
        .unwrap();
    h.sync();
    let gone = record_at(&h, "/aa/gone.txt").external_id;
    let unseen = record_at(&h, "/zz/last.bin").external_id;
    let total = h.records().len();
    h.emulator.invalidate_cursors();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let outcome = h
        .host
        .sync(&h.tenant, None, Some(stop))
        .expect("an interrupted sync");
    assert!(
        outcome.value.interrupted && outcome.value.pages == 1,
        "{:?}",
        outcome.value
    );
    let pending = |id: &str| {
        h.host
            .store()
            .get_records(&h.tenant, &[id.to_string()])
            .unwrap()[0]
            .pending_removal
    };
    assert!(
        !pending(&gone) && pending(&unseen),
        "the first page restored one and not the other"
    );

    // A record the listing has not reached yet is still readable: Dropbox has it.
    let (summary, got) =
        read(&h, &unseen).expect("a record marked by the unfinished listing is read");
    assert!(got == last.to_bytes() && summary.verified);

    h.emulator.delete("/aa/gone.txt").unwrap();
    let seq = h.last_seq();
    h.host
        .reindex(&h.tenant, &[gone.clone(), unseen.clone()])
        .expect("reindex");
    let events = h.events_since(seq);
    assert!(
        count(&events, "deleted") <= 1,
        "records of the unfinished listing were deleted: {} events",
        events.len()
    );
    assert!(!pending(&unseen), "re-indexing a live record confirms it");
    // The listing finishes; everything but the deleted file is there, and nothing was lost on the way.
    h.sync();
    h.sync();
    h.assert_matches_truth();
    assert_eq!(h.records().len(), total - 1);
    let deleted: Vec<_> = h
        .events_since(seq)
        .into_iter()
        .filter(|e| e.kind == "deleted")
        .collect();
    assert_eq!(deleted.len(), 1, "{deleted:#?}");
    assert_eq!(deleted[0].external_id, gone);
}

fn cli(h: &Harness, args: &[&str]) -> std::process::Output {
    let db = h.dir.path().join("store.db");
    let db = db.to_str().expect("a UTF-8 temp path");
    let mut full = vec![
        args[0],
        "--db",
        db,
        "--tenant",
        h.tenant.as_str(),
        "--api-url",
    ];
    let url = h.emulator.base_url();
    full.push(&url);
    full.extend_from_slice(&args[1..]);
    std::process::Command::new(env!("CARGO_BIN_EXE_host-test-cli"))
        .args(&full)
        .output()
        .expect("the CLI runs")
}

#[test]
fn cat_and_url_commands() {
    let h = Harness::new(0, 12);
    let content = Content::Pattern {
        seed: 51,
        len: 6 * MIB,
    };
    h.emulator
        .create_file("/CLI/Große Datei 😀.bin", content.clone())
        .unwrap();
    h.emulator
        .create_file("/CLI/note.txt", bytes("a note\n"))
        .unwrap();
    h.sync();
    let id = record_at(&h, "/cli/große datei 😀.bin").external_id;

    // By path, to a file.
    let out_path = h.dir.path().join("out.bin");
    let out = cli(
        &h,
        &[
            "cat",
            "/CLI/Große Datei 😀.bin",
            "--out",
            out_path.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(std::fs::read(&out_path).unwrap() == content.to_bytes());
    assert!(
        stderr.contains(&format!("{} bytes", content.len())),
        "{stderr}"
    );
    assert!(stderr.contains(&content.content_hash()), "{stderr}");
    assert!(
        stderr.contains("verified") && !stderr.contains("not verified"),
        "{stderr}"
    );

    // By id, to standard output.
    let note = record_at(&h, "/cli/note.txt").external_id;
    let out = cli(&h, &["cat", &note]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"a note\n");

    // A failed read leaves no partial file behind.
    h.emulator
        .inject(Fault::once("files/download", FaultKind::CorruptByte));
    let bad_path = h.dir.path().join("bad.bin");
    let out = cli(&h, &["cat", &id, "--out", bad_path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("integrity"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!bad_path.exists());

    // Unknown path: an error, not an empty file.
    let out = cli(&h, &["cat", "/CLI/none.txt"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // url: a link a plain GET can read.
    let out = cli(&h, &["url", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap();
    let mut hashing = ContentHasher::new();
    let (status, n) = http_get(url.trim(), &mut hashing);
    assert_eq!((status, n), (200, content.len()));
    assert_eq!(hashing.finalize_hex(), content.content_hash());
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Streaming through the sandbox (4 MiB ranges, hashed in the guest, written to the host's sink)
/// against a plain HTTP GET of the same file from the same emulator, with and without hashing
/// natively. Three runs each; the median is reported.
#[test]
#[ignore]
fn bench_stream_throughput() {
    const SIZE: u64 = 256 * MIB;
    let h = Harness::new(0, 13);
    let content = Content::Pattern {
        seed: 61,
        len: SIZE,
    };
    h.emulator
        .create_file("/bench/big.bin", content.clone())
        .unwrap();
    h.sync();
    let id = record_at(&h, "/bench/big.bin").external_id;
    let mib = (SIZE / MIB) as f64;
    let (mut sandbox, mut plain, mut plain_hashed) = (Vec::new(), Vec::new(), Vec::new());
    let mut peak = 0usize;
    let mut http_share = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let outcome = h
            .host
            .stream(&h.tenant, &id, Box::new(std::io::sink()))
            .expect("stream");
        let elapsed = started.elapsed().as_secs_f64();
        sandbox.push(mib / elapsed);
        // Time inside the host's HTTP import (request, emulator, reading the body); the rest is
        // the guest (hashing, copies across the boundary) and the sink.
        http_share.push(outcome.stats.http_time.as_secs_f64() / elapsed * 100.0);
        assert!(outcome.value.verified && outcome.value.size == SIZE);
        peak = peak.max(outcome.peak_memory);

        let url = h.host.signed_url(&h.tenant, &id).expect("url").value.url;
        let started = Instant::now();
        assert_eq!(http_get(&url, &mut std::io::sink()), (200, SIZE));
        plain.push(mib / started.elapsed().as_secs_f64());

        let started = Instant::now();
        let mut hasher = ContentHasher::new();
        assert_eq!(http_get(&url, &mut hasher), (200, SIZE));
        assert_eq!(hasher.finalize_hex(), content.content_hash());
        plain_hashed.push(mib / started.elapsed().as_secs_f64());
    }
    eprintln!(
        "runs (MiB/s): sandbox {sandbox:.0?}, plain GET {plain:.0?}, plain GET + native hash {plain_hashed:.0?}"
    );
    eprintln!("share of the sandbox stream spent in the host's HTTP import (%): {http_share:.0?}");
    eprintln!(
        "median MiB/s over 3 runs of {mib} MiB: sandbox stream {:.0}, plain HTTP GET {:.0}, plain GET + content hash {:.0}; peak guest memory {:.1} MiB",
        median(sandbox),
        median(plain),
        median(plain_hashed),
        peak as f64 / MIB as f64
    );
}

/// The figure: a 2 GiB file through a guest capped at 32 MiB. Ignored because it moves
/// 2 GiB twice (the emulator hashes it at creation); run with `--ignored`.
#[test]
#[ignore]
fn two_gib_stream_under_a_32_mib_cap() {
    let content = Content::Pattern {
        seed: 91,
        len: 2048 * MIB,
    };
    let (h, outcome, (hash, n)) = stream_under_cap(15, "/huge/2 GiB.bin", &content);
    assert_eq!((hash, n), (content.content_hash(), content.len()));
    assert!(outcome.value.verified && outcome.peak_memory < CAP);
    eprintln!(
        "2 GiB streamed in {:.1}s ({:.0} MiB/s), peak guest memory {:.1} MiB, {} downloads",
        outcome.elapsed.as_secs_f64(),
        2048.0 / outcome.elapsed.as_secs_f64(),
        outcome.peak_memory as f64 / MIB as f64,
        downloads(&h.emulator)
    );
}

/// Under the smallest body cap a host may set (1 MiB, `host.limits`), a file of several MiB
/// still streams whole and verified: the connector reads ranges the cap allows, and no
/// response it asked for was refused as too large.
#[test]
fn a_large_file_streams_under_the_smallest_body_cap() {
    let h = Harness::new(0, 41);
    let len = 5 * MIB + 123;
    let content = Content::Pattern { seed: 41, len };
    h.emulator.create_file("/big.bin", content.clone()).unwrap();
    h.sync();
    let id = record_at(&h, "/big.bin").external_id;
    let small = HttpSettings::default().with_body_cap(HttpSettings::MIN_BODY_CAP);
    assert_eq!(small.max_body_bytes, 1024 * 1024);
    let host = ConnectorHost::new(
        dropbox_runtime(),
        h.host.store().clone(),
        Some(&h.emulator.base_url()),
        small,
    )
    .expect("a host with a 1 MiB body cap");
    let sink = Hashing::default();
    let outcome = host
        .stream(&h.tenant, &id, Box::new(sink.clone()))
        .expect("the file streams under a 1 MiB cap");
    assert_eq!(sink.result(), (content.content_hash(), content.len()));
    assert!(outcome.value.verified, "{:?}", outcome.value);
    assert!(
        downloads(&h.emulator) >= len.div_ceil(1024 * 1024),
        "one range of at most 1 MiB per request: {} downloads",
        downloads(&h.emulator)
    );
}
