//! No interruption may lose or invent data. A store that fails after the k-th `apply` of a sync,
//! for every k, stands for a crash at every commit boundary; each run then goes on as a user
//! would (a setting reverted, the next scheduled sync) and must end with the store equal to
//! the account and an event stream in which every record lives one valid life. Then the
//! corners an independent review found, each reproduced on its own.

use std::collections::{BTreeMap, HashSet};

use dropbox_emulator::{Content, EmulatorConfig, Fault, FaultKind};
use e2e_tests::{Backend, Harness, count};
use host_test::app::HostError;
use host_test::bindings::types::ConnectorError;
use host_test::store::Event;

fn bytes(s: &str) -> Content {
    Content::Bytes(s.as_bytes().to_vec())
}

/// An account of more than one listing page (Dropbox pages hold at most 2,000 entries).
fn two_page_account(h: &Harness) {
    for i in 0..1100 {
        h.emulator
            .create_file(&format!("/Big/f{i:04}.txt"), bytes("x"))
            .unwrap();
        h.emulator
            .create_file(&format!("/Small/Ünï {i:04}.md"), bytes("y"))
            .unwrap();
    }
}

/// The ids a sequence of events deleted.
fn deleted_ids(events: &[Event]) -> HashSet<String> {
    events
        .iter()
        .filter(|e| e.kind == "deleted")
        .map(|e| e.external_id.clone())
        .collect()
}

/// Runs `scenario` once per commit boundary: `prepare` builds the account and the store,
/// `interrupted` is the sync that fails after `k` applies, `recover` is what follows (it must
/// end with a successful sync). Checks the store against the account and every record's life.
/// Returns how many boundaries were exercised.
fn at_every_commit(
    name: &str,
    prepare: impl Fn() -> Harness,
    before_interrupted: impl Fn(&Harness),
    recover: impl Fn(&Harness),
    check: impl Fn(&Harness, &[Event]),
) -> usize {
    for k in 0.. {
        let h = prepare();
        let seq = h.last_seq();
        before_interrupted(&h);
        h.host.store().inject_apply_failure(Some((k, 0)));
        let outcome = h.try_sync();
        h.host.store().inject_apply_failure(None);
        let failed = outcome.is_err();
        recover(&h);
        let diffs = e2e_tests::diff_with_truth(&h.emulator.truth(), &h.records(), |_| true);
        assert!(
            diffs.is_empty(),
            "{name}, store failing after {k} applies: the store differs from the account:\n{}",
            diffs
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        h.assert_events_replay_to_store();
        check(&h, &h.events_since(seq));
        if !failed {
            // The sync made fewer than k applies: every boundary has been tried.
            eprintln!("{name}: {k} commit boundaries, each ends equal to the account");
            return k;
        }
    }
    unreachable!()
}

/// Small pages (Dropbox's `limit` is a maximum), so that every scenario spans page boundaries.
fn batch_harness(batch_size: &str) -> Harness {
    batch_harness_on(batch_size, Backend::Sqlite)
}

fn batch_harness_on(batch_size: &str, backend: Backend) -> Harness {
    let h = Harness::on(
        EmulatorConfig {
            seed: 5,
            max_page_size: Some(700),
            ..Default::default()
        },
        backend,
    );
    h.set("batch_size", batch_size);
    two_page_account(&h);
    h
}

/// The review's scenario: a filter change whose re-listing is interrupted while it writes its
/// first page, then the filter set back. The account never changed: nothing may be deleted.
#[test]
fn a_reverted_filter_change_interrupted_mid_relisting_deletes_nothing() {
    let boundaries = at_every_commit(
        "filter change and revert",
        || {
            let h = batch_harness("100");
            h.sync();
            h
        },
        |h| h.set("exclude_paths", "/no-such-folder"),
        |h| {
            h.set("exclude_paths", "");
            h.sync();
            h.sync();
        },
        |h, events| {
            assert_eq!(
                count(events, "deleted"),
                0,
                "the account never changed, yet records were deleted"
            );
            assert_eq!(count(events, "created"), 0);
            assert_eq!(h.records().len(), 2202);
        },
    );
    assert!(boundaries > 20, "only {boundaries} boundaries exercised");
}

#[test]
fn a_reset_interrupted_at_every_commit_loses_nothing() {
    reset_interrupted_at_every_commit(Backend::Sqlite);
}

#[test]
fn a_reset_interrupted_at_every_commit_loses_nothing_on_postgres() {
    reset_interrupted_at_every_commit(Backend::Postgres);
}

fn reset_interrupted_at_every_commit(backend: Backend) {
    at_every_commit(
        "reset",
        || {
            let h = batch_harness_on("400", backend);
            h.sync();
            h.emulator
                .move_path("/Big/f0001.txt", "/moved.txt")
                .unwrap();
            h.emulator.delete("/Small/Ünï 0002.md").unwrap();
            h.emulator.create_file("/new.txt", bytes("n")).unwrap();
            h.emulator.invalidate_cursors();
            h
        },
        |_| {},
        |h| {
            h.sync();
        },
        |_, events| {
            assert_eq!(count(events, "deleted"), 1, "only the deleted file");
        },
    );
}

#[test]
fn a_big_folder_move_across_pages_interrupted_at_every_commit_keeps_identities() {
    folder_move_interrupted_at_every_commit(Backend::Sqlite);
}

#[test]
fn a_big_folder_move_across_pages_interrupted_at_every_commit_keeps_identities_on_postgres() {
    folder_move_interrupted_at_every_commit(Backend::Postgres);
}

fn folder_move_interrupted_at_every_commit(backend: Backend) {
    at_every_commit(
        "folder move across pages",
        || {
            let h = batch_harness_on("150", backend);
            h.sync();
            h.emulator.move_path("/Big", "/Archive/Big 2026").unwrap();
            h
        },
        |_| {},
        |h| {
            h.sync();
        },
        |_, events| {
            assert!(
                deleted_ids(events).is_empty(),
                "a move became a deletion: {:?}",
                deleted_ids(events).iter().take(5).collect::<Vec<_>>()
            );
            assert_eq!(count(events, "created"), 1, "only the new /Archive folder");
        },
    );
}

/// Item 1: a reindex after a half-written page must not purge the page's marks.
#[test]
fn reindex_after_a_half_written_page_keeps_a_move_a_move() {
    let h = batch_harness("100");
    h.sync();
    let seq = h.last_seq();
    let gone = h
        .records()
        .into_iter()
        .find(|r| r.path_lower() == Some("/small/ünï 0005.md"))
        .unwrap()
        .external_id;
    h.emulator.move_path("/Big", "/Archive/Big").unwrap();
    h.emulator.delete("/Small/Ünï 0005.md").unwrap();
    // The page's first batch (the deletion of /Big, which marks its subtree) commits; the next
    // one fails.
    h.host.store().inject_apply_failure(Some((1, 0)));
    assert!(h.try_sync().is_err());
    h.host.store().inject_apply_failure(None);
    // Reindexing a record that is gone removes it; it must not purge the page's marks.
    h.host
        .reindex(&h.tenant, std::slice::from_ref(&gone))
        .expect("reindex runs");
    h.sync();
    h.assert_matches_truth();
    let events = h.events_since(seq);
    assert_eq!(
        deleted_ids(&events),
        HashSet::from([gone]),
        "only the deleted file may be deleted downstream, not the moved folder"
    );
    assert_eq!(count(&events, "created"), 1, "only /Archive");
}

/// Item 2: an entry excluded by the filters and admitted again in the same page is the same
/// record, still shared, never created a second time.
#[test]
fn an_entry_excluded_and_readmitted_within_a_page_is_not_created_again() {
    let h = Harness::new(0, 6);
    h.set("exclude_extensions", "tmp");
    h.set("include_paths", "/Keep");
    h.emulator.create_file("/Keep/a.txt", bytes("a")).unwrap();
    h.emulator.create_file("/Keep/c.txt", bytes("c")).unwrap();
    h.emulator
        .create_file("/Out/other.txt", bytes("o"))
        .unwrap();
    h.emulator.share("/Keep/a.txt").unwrap();
    let kept = |t: &dropbox_emulator::TruthEntry| {
        (t.path_lower == "/keep" || t.path_lower.starts_with("/keep/"))
            && !t.path_lower.ends_with(".tmp")
    };
    h.sync();
    h.assert_matches_truth_where(kept);
    let seq = h.last_seq();
    // Out of the kept set and back, by extension and by folder, all within one page.
    h.emulator.move_path("/Keep/a.txt", "/Keep/a.tmp").unwrap();
    h.emulator.move_path("/Keep/a.tmp", "/Keep/a.txt").unwrap();
    h.emulator.move_path("/Keep/c.txt", "/Out/c.txt").unwrap();
    h.emulator.move_path("/Out/c.txt", "/Keep/c.txt").unwrap();
    h.sync();
    let events = h.events_since(seq);
    assert_eq!(count(&events, "created"), 0, "{events:#?}");
    assert_eq!(count(&events, "deleted"), 0, "{events:#?}");
    let a = h
        .records()
        .into_iter()
        .find(|r| r.path_lower() == Some("/keep/a.txt"))
        .unwrap();
    assert!(
        a.is_shared && a.shared_url.is_some(),
        "lost its shared state"
    );
    h.assert_matches_truth_where(kept);
}

/// Item 3: a case-only folder rename reported as the folder's entry alone.
#[test]
fn descendants_follow_a_case_only_folder_rename_with_one_event_each() {
    let h = Harness::with_config(EmulatorConfig {
        case_only_rename_folder_entry_only: true,
        ..Default::default()
    });
    for i in 0..30 {
        h.emulator
            .create_file(&format!("/Docs/sub/f{i}.txt"), bytes("x"))
            .unwrap();
    }
    h.emulator.create_file("/Docs/top.txt", bytes("t")).unwrap();
    h.sync();
    let seq = h.last_seq();
    h.emulator.move_path("/Docs", "/DOCS").unwrap();
    h.sync();
    h.assert_matches_truth();
    let events = h.events_since(seq);
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &events {
        assert_eq!(e.kind, "metadata", "{e:?}");
        *per_id.entry(&e.external_id).or_default() += 1;
    }
    // The folder, /DOCS/sub, 30 files in it, top.txt.
    assert_eq!(per_id.len(), 33, "{per_id:?}");
    assert!(per_id.values().all(|n| *n == 1), "{per_id:?}");
    for r in h.records() {
        assert!(
            r.path_display().unwrap_or("<no path>").starts_with("/DOCS"),
            "{:?} still shows the old name",
            r.path_display()
        );
        assert!(r.web_url.as_deref().is_some_and(|u| u.contains("/DOCS")));
    }
}

/// Item 4: children listed on a page before their parent's.
#[test]
fn children_listed_before_their_parent_get_it_when_it_comes() {
    let h = Harness::with_config(EmulatorConfig {
        children_before_parents: true,
        ..Default::default()
    });
    h.set("batch_size", "300");
    two_page_account(&h);
    for i in 0..50 {
        h.emulator
            .create_file(&format!("/Deep/a/b/c{i}.txt"), bytes("d"))
            .unwrap();
    }
    let s = h.sync();
    assert!(s.pages >= 2, "{s:?}");
    h.assert_matches_truth();
    // Again, as a re-listing (every record pending while it runs).
    h.emulator.invalidate_cursors();
    h.emulator
        .create_file("/Deep/a/new.txt", bytes("n"))
        .unwrap();
    let seq = h.last_seq();
    h.sync();
    h.assert_matches_truth();
    let events = h.events_since(seq);
    assert_eq!(
        count(&events, "created"),
        1,
        "{:?}",
        &events[..events.len().min(5)]
    );
    assert_eq!(
        count(&events, "metadata"),
        0,
        "{:?}",
        &events[..events.len().min(5)]
    );
}

/// Item 5: a move that gets a new revision keeps its content.
#[test]
fn a_move_with_a_new_revision_is_metadata_only() {
    let h = Harness::with_config(EmulatorConfig {
        new_rev_on_move: true,
        ..Default::default()
    });
    h.emulator.create_file("/a/x.txt", bytes("same")).unwrap();
    h.emulator.create_file("/a/y.txt", bytes("y")).unwrap();
    h.sync();
    let seq = h.last_seq();
    h.emulator.move_path("/a/x.txt", "/b/x.txt").unwrap();
    h.emulator.modify_file("/a/y.txt", bytes("y2")).unwrap();
    h.sync();
    h.assert_matches_truth();
    let events = h.events_since(seq);
    let x = events
        .iter()
        .find(|e| e.path_lower.as_deref() == Some("/b/x.txt"))
        .expect("an event for the moved file");
    assert_eq!(x.kind, "metadata", "{events:#?}");
    assert_eq!(count(&events, "content"), 1, "the edit only: {events:#?}");
}

/// Item 6: `wait-for-changes` while a listing is unfinished says "sync now", without polling.
#[test]
fn wait_for_changes_during_an_unfinished_listing_says_sync_now() {
    let h = Harness::with_config(EmulatorConfig {
        longpoll_max_wait: Some(std::time::Duration::from_millis(300)),
        ..Default::default()
    });
    h.set("batch_size", "500");
    two_page_account(&h);
    // The first page commits, the second fails.
    h.host.store().inject_apply_failure(Some((5, 0)));
    assert!(h.try_sync().is_err());
    h.host.store().inject_apply_failure(None);
    h.emulator.reset_counts();
    let hint = h
        .host
        .wait_for_changes(&h.tenant, 30, None)
        .expect("wait-for-changes")
        .value;
    assert!(hint.changes, "an unfinished listing is work due now");
    assert_eq!(
        h.emulator
            .request_counts()
            .get("files/list_folder/longpoll")
            .copied()
            .unwrap_or(0),
        0
    );
    h.sync();
    h.assert_matches_truth();
}

fn connector_error(result: Result<impl std::fmt::Debug, HostError>) -> ConnectorError {
    match result {
        Err(HostError::Connector(e)) => e,
        other => panic!("expected a connector error, got {other:?}"),
    }
}

/// Item 7: a server that never lets the sync make progress ends it with a typed error, and
/// nothing is purged.
#[test]
fn a_server_that_never_progresses_ends_the_sync_with_a_typed_error() {
    let h = batch_harness("500");
    h.emulator.share("/Big/f0003.txt").unwrap();
    h.sync();
    h.assert_matches_truth();
    let seq = h.last_seq();
    let many = |route: &str, kind: FaultKind| Fault {
        route: Some(route.into()),
        skip: 0,
        count: 10_000,
        kind,
    };

    // A reset on every fresh cursor (the account needs more than one page to ask again).
    h.emulator.invalidate_cursors();
    h.emulator
        .inject(many("files/list_folder/continue", FaultKind::Reset));
    assert!(matches!(
        connector_error(h.try_sync()),
        ConnectorError::Transient(_)
    ));
    h.emulator.clear_faults();

    // `has_more` with no entries and the same cursor.
    h.sync();
    h.emulator
        .inject(many("files/list_folder/continue", FaultKind::NoProgress));
    h.emulator.create_file("/later.txt", bytes("l")).unwrap();
    assert!(matches!(
        connector_error(h.try_sync()),
        ConnectorError::Internal(_)
    ));
    h.emulator.clear_faults();

    // Shared links: `has_more` without a cursor is not a complete list.
    h.emulator
        .inject(many("sharing/list_shared_links", FaultKind::NoProgress));
    assert!(matches!(
        connector_error(h.try_sync()),
        ConnectorError::Internal(_)
    ));
    h.emulator.clear_faults();

    let events = h.events_since(seq);
    assert_eq!(count(&events, "deleted"), 0, "something was purged");
    assert!(
        events
            .iter()
            .all(|e| e.path_lower.as_deref() != Some("/big/f0003.txt")),
        "the shared file was unshared: {events:?}"
    );
    h.sync();
    h.assert_matches_truth();
}

/// Item 10: paths typed by a person (filters) meet Dropbox's lower-casing in its corners.
#[test]
fn typed_paths_match_in_the_corners_of_lower_casing() {
    let h = Harness::new(0, 8);
    h.emulator.create_file("/ΟΔΟΣ/x.txt", bytes("x")).unwrap();
    h.emulator.create_file("/Straße/y.txt", bytes("y")).unwrap();
    h.emulator.create_file("/keep.txt", bytes("k")).unwrap();
    // σ typed where Dropbox ends the word with ς; SS typed for ß.
    h.set("exclude_paths", "/οδοσ, /STRASSE");
    h.sync();
    let paths: Vec<String> = h
        .records()
        .into_iter()
        .map(|r| r.path_lower().unwrap_or("<no path>").to_string())
        .collect();
    assert_eq!(paths, ["/keep.txt"], "{paths:?}");
    h.set("exclude_paths", "");
    h.sync();
    h.assert_matches_truth();
    // The host resolves a typed path by a generic comparison (Unicode lower case of both
    // sides, which ends a word with ς): the capitals meet the stored path...
    let found = h
        .host
        .resolve_record(&h.tenant, "/ΟΔΟΣ/X.TXT")
        .expect("found by a typed path");
    let want = h
        .records()
        .into_iter()
        .find(|r| r.path_lower() == Some("/οδος/x.txt"))
        .unwrap()
        .external_id;
    assert_eq!(found, want);
    // ...but folding Dropbox's way (σ typed where Dropbox writes ς) is the source's business,
    // not the host's: the host does not guess, and says the path is not found.
    assert!(matches!(
        h.host.resolve_record(&h.tenant, "/οδοσ/X.TXT"),
        Err(host_test::app::HostError::Connector(
            ConnectorError::NotFound(_)
        ))
    ));
}
