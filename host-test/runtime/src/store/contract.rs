//! The contract every [`RecordStore`] backend must pass, written once against the trait.
//!
//! A backend's tests instantiate the whole suite with [`contract_tests!`], given a function
//! that returns a fresh, empty store and whatever must live as long as it (a test database's
//! guard): `contract_tests!(fresh);` with `fn fresh() -> (G, S)` where `S: RecordStore`.
//!
//! Each check asserts something that would be false if the backend got the feature wrong:
//! atomic batches with their sync point, two-phase removal, the event stream's order, tenant
//! isolation, path conflicts, paging orders, the host's notes.

use super::{
    Change, ChangeKind, Permission, Record, RecordGroup, RecordKind, RecordPath, RecordStore, Role,
    StoreError, StoredCredentials, SyncOutcome, SyncPhase, SyncPoint, SyncStatus, User,
};

pub(crate) fn rec(id: &str, path: &str, kind: RecordKind) -> Record {
    Record {
        external_id: id.into(),
        revision: None,
        name: path.rsplit('/').next().unwrap_or_default().into(),
        path: Some(RecordPath {
            display: path.into(),
            lower: path.to_lowercase(),
        }),
        parent_external_id: None,
        kind,
        mime_type: "application/octet-stream".into(),
        size: 1,
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

pub(crate) fn flat(id: &str) -> Record {
    let mut r = rec(id, "/unused", RecordKind::Item);
    r.path = None;
    r
}

pub(crate) fn point(position: &str) -> SyncPoint {
    SyncPoint {
        position: position.into(),
        status: SyncStatus {
            phase: SyncPhase::Current,
            detail: format!("at {position}"),
        },
    }
}

pub(crate) fn up(r: Record, event: ChangeKind) -> Change {
    Change::Upsert { record: r, event }
}

fn ids(records: Vec<Record>) -> Vec<String> {
    records.into_iter().map(|r| r.external_id).collect()
}

fn paths(records: Vec<Record>) -> Vec<String> {
    records
        .into_iter()
        .filter_map(|r| r.path.map(|p| p.lower))
        .collect()
}

pub(crate) fn batch_with_sync_point_is_all_or_nothing(store: &dyn RecordStore) {
    store
        .apply(
            "t",
            &[up(rec("id:a", "/a", RecordKind::File), ChangeKind::Created)],
            Some(&point("1")),
        )
        .unwrap();
    // Fail at the second change of the next batch, then just before the commit.
    for at in [1, 2] {
        store.inject_apply_failure(Some((0, at)));
        let err = store.apply(
            "t",
            &[
                up(rec("id:b", "/b", RecordKind::File), ChangeKind::Created),
                up(rec("id:c", "/c", RecordKind::File), ChangeKind::Created),
            ],
            Some(&point("2")),
        );
        assert!(
            matches!(err, Err(StoreError::Injected(n)) if n == at),
            "{err:?}"
        );
        store.inject_apply_failure(None);
        assert_eq!(ids(store.records("t").unwrap()), ["id:a"]);
        assert_eq!(store.get_sync_point("t").unwrap().as_deref(), Some("1"));
        assert_eq!(store.events(None, 0).unwrap().len(), 1);
    }
    // A conflict part-way through a batch undoes the changes before it, too.
    let err = store.apply(
        "t",
        &[
            up(rec("id:d", "/d", RecordKind::File), ChangeKind::Created),
            up(rec("id:e", "/a", RecordKind::File), ChangeKind::Created),
        ],
        Some(&point("3")),
    );
    assert!(matches!(err, Err(StoreError::Conflict(_))), "{err:?}");
    assert_eq!(ids(store.records("t").unwrap()), ["id:a"]);
    assert_eq!(store.get_sync_point("t").unwrap().as_deref(), Some("1"));
    // The store is usable after a failed batch.
    store
        .apply(
            "t",
            &[up(rec("id:b", "/b", RecordKind::File), ChangeKind::Created)],
            Some(&point("2")),
        )
        .unwrap();
    assert_eq!(store.get_sync_point("t").unwrap().as_deref(), Some("2"));
}

pub(crate) fn the_sync_point_keeps_its_status_and_a_batch_without_one_keeps_it(
    store: &dyn RecordStore,
) {
    assert_eq!(store.get_sync_point("t").unwrap(), None);
    assert_eq!(store.sync_status("t").unwrap(), None);
    let listing = SyncPoint {
        position: "p1".into(),
        status: SyncStatus {
            phase: SyncPhase::Listing,
            detail: "listing, 1 page in".into(),
        },
    };
    store.apply("t", &[], Some(&listing)).unwrap();
    store.apply("t", &[], None).unwrap();
    assert_eq!(store.get_sync_point("t").unwrap().as_deref(), Some("p1"));
    assert_eq!(store.sync_status("t").unwrap(), Some(listing.status));
    store.apply("t", &[], Some(&point("p2"))).unwrap();
    assert_eq!(store.sync_status("t").unwrap(), Some(point("p2").status));
    store.clear("t").unwrap();
    assert_eq!(store.get_sync_point("t").unwrap(), None);
    assert_eq!(store.sync_status("t").unwrap(), None);
}

pub(crate) fn subtree_removal_is_deferred_until_purge_and_an_upsert_restores(
    store: &dyn RecordStore,
) {
    let changes = vec![
        up(rec("id:d", "/d", RecordKind::Folder), ChangeKind::Created),
        up(rec("id:x", "/d/x", RecordKind::File), ChangeKind::Created),
        up(rec("id:y", "/d/y", RecordKind::File), ChangeKind::Created),
        up(rec("id:z", "/d z", RecordKind::File), ChangeKind::Created),
    ];
    store.apply("t", &changes, None).unwrap();
    store
        .apply("t", &[Change::RemoveSubtree("/d".into())], None)
        .unwrap();
    // "/d z" is not inside "/d"; the marked records are still stored, as pending.
    assert_eq!(ids(store.records("t").unwrap()), ["id:z"]);
    assert_eq!(store.pending_count("t").unwrap(), 3);
    let stored = store.get_records("t", &["id:x".into()]).unwrap();
    assert!(stored[0].pending_removal);
    // x moved elsewhere: restored with its identity.
    store
        .apply(
            "t",
            &[up(
                rec("id:x", "/e/x", RecordKind::File),
                ChangeKind::Metadata,
            )],
            None,
        )
        .unwrap();
    let summary = store.apply("t", &[Change::Purge], None).unwrap();
    assert_eq!(summary.deletions, 2);
    assert_eq!(store.pending_count("t").unwrap(), 0);
    assert_eq!(ids(store.records("t").unwrap()), ["id:z", "id:x"]);
    assert!(store.get_records("t", &["id:y".into()]).unwrap().is_empty());
}

pub(crate) fn remove_marks_one_record_and_not_its_descendants(store: &dyn RecordStore) {
    store
        .apply(
            "t",
            &[
                up(rec("id:d", "/d", RecordKind::Folder), ChangeKind::Created),
                up(rec("id:x", "/d/x", RecordKind::File), ChangeKind::Created),
            ],
            None,
        )
        .unwrap();
    store
        .apply(
            "t",
            &[Change::Remove("id:d".into()), Change::Remove("nope".into())],
            None,
        )
        .unwrap();
    assert_eq!(store.pending_count("t").unwrap(), 1);
    assert_eq!(
        store.apply("t", &[Change::Purge], None).unwrap().deletions,
        1
    );
    assert_eq!(ids(store.records("t").unwrap()), ["id:x"]);
}

pub(crate) fn mark_all_pending_then_purge_sweeps_what_was_not_seen_again(store: &dyn RecordStore) {
    store
        .apply(
            "t",
            &[
                up(rec("id:a", "/a", RecordKind::File), ChangeKind::Created),
                up(rec("id:b", "/b", RecordKind::File), ChangeKind::Created),
                up(flat("n1"), ChangeKind::Created),
            ],
            None,
        )
        .unwrap();
    store
        .apply(
            "t",
            &[
                Change::MarkAllPending,
                up(rec("id:a", "/a", RecordKind::File), ChangeKind::Unchanged),
            ],
            None,
        )
        .unwrap();
    assert_eq!(store.record_count("t").unwrap(), 1);
    let summary = store.apply("t", &[Change::Purge], None).unwrap();
    assert_eq!(summary.deletions, 2);
    assert_eq!(ids(store.records("t").unwrap()), ["id:a"]);
}

pub(crate) fn two_live_records_at_one_path_is_a_conflict_and_replace_resolves_it(
    store: &dyn RecordStore,
) {
    store
        .apply(
            "t",
            &[
                up(rec("id:f", "/p", RecordKind::Folder), ChangeKind::Created),
                up(rec("id:c", "/p/c", RecordKind::File), ChangeKind::Created),
            ],
            None,
        )
        .unwrap();
    let err = store.apply(
        "t",
        &[up(rec("id:g", "/p", RecordKind::File), ChangeKind::Created)],
        None,
    );
    assert!(matches!(err, Err(StoreError::Conflict(_))), "{err:?}");
    store
        .apply(
            "t",
            &[
                Change::Replace {
                    path_lower: "/p".into(),
                    new_external_id: "id:g".into(),
                    keep_children: false,
                },
                up(rec("id:g", "/p", RecordKind::File), ChangeKind::Created),
                Change::Purge,
            ],
            None,
        )
        .unwrap();
    assert_eq!(ids(store.records("t").unwrap()), ["id:g"]);
    // Another tenant may hold the same path.
    store
        .apply(
            "u",
            &[up(rec("id:h", "/p", RecordKind::File), ChangeKind::Created)],
            None,
        )
        .unwrap();
}

pub(crate) fn a_folder_replacing_a_folder_leaves_its_children_to_the_connector(
    store: &dyn RecordStore,
) {
    let mut child = rec("id:c", "/p/c", RecordKind::File);
    child.parent_external_id = Some("id:old".into());
    store
        .apply(
            "t",
            &[
                up(rec("id:old", "/p", RecordKind::Folder), ChangeKind::Created),
                up(child.clone(), ChangeKind::Created),
            ],
            None,
        )
        .unwrap();
    let seq = store.last_event_seq().unwrap();
    store
        .apply(
            "t",
            &[
                Change::Replace {
                    path_lower: "/p".into(),
                    new_external_id: "id:new".into(),
                    keep_children: true,
                },
                up(rec("id:new", "/p", RecordKind::Folder), ChangeKind::Created),
            ],
            None,
        )
        .unwrap();
    let events = store.events(Some("t"), seq).unwrap();
    assert_eq!(events.len(), 1, "only the newcomer's creation: {events:?}");
    assert_eq!(
        store.get_records("t", &["id:c".into()]).unwrap()[0].record,
        child
    );
    assert_eq!(store.pending_count("t").unwrap(), 1);
}

pub(crate) fn records_without_a_path_never_conflict_and_their_events_have_no_path(
    store: &dyn RecordStore,
) {
    store
        .apply(
            "t",
            &[
                up(flat("n1"), ChangeKind::Created),
                up(flat("n2"), ChangeKind::Created),
            ],
            None,
        )
        .unwrap();
    let back = store.get_records("t", &["n1".into()]).unwrap();
    assert_eq!(back[0].record, flat("n1"));
    let events = store.events(Some("t"), 0).unwrap();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.path_lower.is_none()));
    assert_eq!(events[0].record["path_lower"], serde_json::Value::Null);
}

pub(crate) fn the_event_stream_is_in_order_with_one_event_per_change(store: &dyn RecordStore) {
    store
        .apply(
            "t",
            &[
                up(rec("id:d", "/d", RecordKind::Folder), ChangeKind::Created),
                up(rec("id:x", "/d/x", RecordKind::File), ChangeKind::Created),
                up(rec("id:y", "/d/y", RecordKind::File), ChangeKind::Created),
            ],
            None,
        )
        .unwrap();
    let mut moved = rec("id:y", "/d/y2", RecordKind::File);
    moved.size = 9;
    let summary = store
        .apply(
            "t",
            &[
                up(moved, ChangeKind::ContentAndMetadata),
                up(rec("id:x", "/d/x", RecordKind::File), ChangeKind::Unchanged),
                up(rec("id:x", "/d/x", RecordKind::File), ChangeKind::Content),
                up(rec("id:d", "/d", RecordKind::Folder), ChangeKind::Metadata),
            ],
            None,
        )
        .unwrap();
    assert_eq!(
        (
            summary.created,
            summary.content_updates,
            summary.metadata_updates
        ),
        (0, 2, 2)
    );
    store
        .apply(
            "t",
            &[Change::RemoveSubtree("/d".into()), Change::Purge],
            None,
        )
        .unwrap();
    let events = store.events(Some("t"), 0).unwrap();
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.external_id.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("created", "id:d"),
            ("created", "id:x"),
            ("created", "id:y"),
            ("content_and_metadata", "id:y"),
            ("content", "id:x"),
            ("metadata", "id:d"),
            // Children before their parent.
            ("deleted", "id:y"),
            ("deleted", "id:x"),
            ("deleted", "id:d"),
        ]
    );
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    // One batch number per apply, increasing.
    let batches: Vec<i64> = events.iter().map(|e| e.batch).collect();
    assert!(batches[..3].iter().all(|b| *b == batches[0]));
    assert!(batches[3..6].iter().all(|b| *b == batches[3]));
    assert!(batches[6..].iter().all(|b| *b == batches[6]));
    assert!(batches[0] < batches[3] && batches[3] < batches[6]);
    assert_eq!(events[3].record["size"], 9);
    assert_eq!(events[8].record["kind"], "folder");
    assert_eq!(store.last_event_seq().unwrap(), events[8].seq);
    // Reading from a position returns only what follows it.
    let tail = store.events(Some("t"), events[5].seq).unwrap();
    assert_eq!(tail, events[6..].to_vec());
}

pub(crate) fn tenants_are_isolated(store: &dyn RecordStore) {
    store
        .apply(
            "a",
            &[
                up(rec("id:1", "/one", RecordKind::File), ChangeKind::Created),
                up(flat("n1"), ChangeKind::Created),
            ],
            Some(&point("va")),
        )
        .unwrap();
    store.set_setting("a", "k", "v").unwrap();
    store
        .put_credentials(
            "a",
            &StoredCredentials {
                access_token: "tok-a".into(),
                ..Default::default()
            },
        )
        .unwrap();
    // Everything tenant b does to "its" records leaves a's alone.
    store
        .apply(
            "b",
            &[
                Change::MarkAllPending,
                Change::RemoveSubtree("/one".into()),
                Change::Remove("n1".into()),
                Change::Purge,
            ],
            None,
        )
        .unwrap();
    store.clear("b").unwrap();
    assert_eq!(store.record_count("a").unwrap(), 2);
    assert_eq!(store.pending_count("a").unwrap(), 0);
    assert!(store.get_records("b", &["id:1".into()]).unwrap().is_empty());
    assert_eq!(
        store.find_by_paths("b", &["/one".into()]).unwrap(),
        vec![None]
    );
    assert!(store.list_records("b", None, 10).unwrap().is_empty());
    assert_eq!(store.get_sync_point("b").unwrap(), None);
    assert!(store.events(Some("b"), 0).unwrap().is_empty());
    assert_eq!(store.events(Some("a"), 0).unwrap().len(), 2);
    assert!(store.settings("b").unwrap().is_empty());
    assert_eq!(store.credentials("b").unwrap(), None);
    assert_eq!(
        store.credentials("a").unwrap().map(|c| c.access_token),
        Some("tok-a".to_string())
    );
    // Clearing a keeps its event history, and its credentials and settings.
    store.clear("a").unwrap();
    assert_eq!(store.record_count("a").unwrap(), 0);
    assert_eq!(store.events(Some("a"), 0).unwrap().len(), 2);
    assert_eq!(store.settings("a").unwrap().len(), 1);
    assert!(store.credentials("a").unwrap().is_some());
}

pub(crate) fn paging_orders_are_byte_orders_and_skip_pending(store: &dyn RecordStore) {
    // Upper case sorts before lower case in byte order (not in a linguistic collation).
    let changes: Vec<Change> = ["c", "a", "e", "B", "d"]
        .iter()
        .map(|id| up(flat(id), ChangeKind::Created))
        .collect();
    store.apply("t", &changes, None).unwrap();
    store
        .apply("t", &[Change::Remove("d".into())], None)
        .unwrap();
    assert_eq!(ids(store.list_records("t", None, 2).unwrap()), ["B", "a"]);
    assert_eq!(
        ids(store.list_records("t", Some("a"), 10).unwrap()),
        ["c", "e"]
    );

    let changes: Vec<Change> = ["/p", "/p/a", "/p/a/x", "/p b", "/p/c", "/p/d", "/q", "/p/Z"]
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut r = rec(&format!("id:{i}"), p, RecordKind::Folder);
            // Paths are the source's: the store never folds case.
            r.path = Some(RecordPath {
                display: p.to_string(),
                lower: p.to_string(),
            });
            up(r, ChangeKind::Created)
        })
        .collect();
    store.apply("u", &changes, None).unwrap();
    store
        .apply("u", &[Change::RemoveSubtree("/p/c".into())], None)
        .unwrap();
    assert_eq!(
        paths(store.list_subtree("u", "/p", None, 2).unwrap()),
        ["/p/Z", "/p/a"]
    );
    assert_eq!(
        paths(store.list_subtree("u", "/p", Some("/p/a"), 10).unwrap()),
        ["/p/a/x", "/p/d"]
    );
    assert_eq!(
        store
            .find_by_paths("u", &["/q".into(), "/p/c".into(), "/P".into()])
            .unwrap()
            .into_iter()
            .map(|r| r.map(|r| r.external_id))
            .collect::<Vec<_>>(),
        [Some("id:6".to_string()), None, None]
    );
    // Answers come in the order asked, found or not, also for a path asked twice.
    assert_eq!(
        store
            .find_by_paths(
                "u",
                &["/missing".into(), "/p/d".into(), "/q".into(), "/p/d".into()]
            )
            .unwrap()
            .into_iter()
            .map(|r| r.map(|r| r.path_lower().unwrap_or_default().to_string()))
            .collect::<Vec<_>>(),
        [
            None,
            Some("/p/d".to_string()),
            Some("/q".to_string()),
            Some("/p/d".to_string())
        ]
    );
}

pub(crate) fn shared_records_are_listed_and_sizes_beyond_i64_round_trip(store: &dyn RecordStore) {
    let mut huge = rec("id:h", "/huge.bin", RecordKind::File);
    huge.size = u64::MAX - 7;
    huge.is_shared = true;
    huge.shared_url = Some("https://example.test/s/h".into());
    huge.revision = Some("r1".into());
    huge.content_hash = Some("abc".into());
    huge.client_modified = Some("2024-01-01T00:00:00Z".into());
    huge.server_modified = Some("2024-01-02T00:00:00Z".into());
    huge.web_url = Some("https://example.test/h".into());
    huge.parent_external_id = Some("id:root".into());
    let mut big = rec("id:b", "/big.bin", RecordKind::File);
    big.size = i64::MAX as u64 + 1;
    big.is_downloadable = false;
    big.export_format = Some("markdown".into());
    store
        .apply(
            "t",
            &[
                up(huge.clone(), ChangeKind::Created),
                up(big.clone(), ChangeKind::Created),
            ],
            None,
        )
        .unwrap();
    let back = store
        .get_records("t", &["id:h".into(), "id:b".into(), "absent".into()])
        .unwrap();
    assert_eq!(back.len(), 2);
    let find = |id: &str| {
        back.iter()
            .find(|s| s.record.external_id == id)
            .map(|s| s.record.clone())
    };
    assert_eq!(find("id:h"), Some(huge.clone()));
    assert_eq!(find("id:b"), Some(big));
    assert_eq!(store.list_shared("t", 2).unwrap(), vec![huge.clone()]);
    assert_eq!(store.list_shared("t", 0).unwrap(), vec![]);
}

pub(crate) fn the_host_notes_owner_settings_and_credentials_round_trip(store: &dyn RecordStore) {
    assert!(store.tenants().unwrap().is_empty());
    store.ensure_tenant("t").unwrap();
    store.ensure_tenant("t").unwrap();
    store
        .set_tenant_api_url("t", Some("http://127.0.0.1:9/"))
        .unwrap();
    assert_eq!(
        store.tenant_api_url("t").unwrap().as_deref(),
        Some("http://127.0.0.1:9/")
    );
    store.set_tenant_api_url("t", None).unwrap();
    assert_eq!(store.tenant_api_url("t").unwrap(), None);
    assert_eq!(store.tenant_api_url("nobody").unwrap(), None);

    store
        .record_sync_result("t", SyncOutcome::Interrupted, "stopped")
        .unwrap();
    store.set_needs_reauth("t", true).unwrap();
    let owner = User {
        external_id: "dbid:1".into(),
        email: "a@example.test".into(),
        display_name: "A".into(),
    };
    let group = RecordGroup {
        external_id: "g1".into(),
        name: "Drive".into(),
        kind: super::GroupKind::Drive,
    };
    let perms = vec![Permission {
        principal_external_id: "dbid:1".into(),
        role: Role::Owner,
    }];
    store.put_owner("t", &owner, &group, &perms).unwrap();
    store.put_owner("t", &owner, &group, &perms).unwrap();
    assert_eq!(store.owner("t").unwrap(), Some(owner.clone()));
    assert_eq!(store.record_groups("t").unwrap(), vec![(group, perms)]);

    store.apply("t", &[], Some(&point("p"))).unwrap();
    let status = store.status("t").unwrap();
    assert!(status.needs_reauth);
    assert_eq!(status.last_sync_outcome, Some(SyncOutcome::Interrupted));
    assert_eq!(status.last_sync_note.as_deref(), Some("stopped"));
    assert!(status.last_sync_at.is_some());
    assert_eq!(status.sync_status, Some(point("p").status));
    assert_eq!(status.owner, Some(owner));

    store.set_setting("t", "sync_strategy", "manual").unwrap();
    store
        .set_setting("t", "sync_strategy", "scheduled")
        .unwrap();
    store.set_setting("t", "a", "1").unwrap();
    assert_eq!(
        store.settings("t").unwrap(),
        [
            ("a".to_string(), "1".to_string()),
            ("sync_strategy".to_string(), "scheduled".to_string())
        ]
    );

    let creds = StoredCredentials {
        access_token: "sl.access".into(),
        refresh_token: Some("refresh".into()),
        expires_at: Some(1_700_000_000),
        client_id: Some("app-key".into()),
        client_secret: Some("app-secret".into()),
        account_id: Some("dbid:1".into()),
    };
    store.put_credentials("t", &creds).unwrap();
    assert_eq!(store.credentials("t").unwrap(), Some(creds));
    // Storing credentials means the account was connected again.
    assert!(!store.status("t").unwrap().needs_reauth);
    store.delete_credentials("t").unwrap();
    assert_eq!(store.credentials("t").unwrap(), None);
    assert_eq!(store.tenants().unwrap(), ["t"]);
}

/// An event carries the record as it was when the event was emitted, whatever happens to the
/// record later: an update (with or without an event of its own, with the same values or not),
/// a restore, a purge, a `clear`. (The SQLite store shares the record's row with its last
/// event until the row changes; this is what that must never show.)
pub(crate) fn an_event_keeps_the_record_as_it_was_when_emitted(store: &dyn RecordStore) {
    let snapshot = |id: &str, size: u64, path: &str| {
        let mut r = rec(id, path, RecordKind::File);
        r.size = size;
        r
    };
    let apply = |changes: &[Change]| store.apply("t", changes, None).unwrap();
    apply(&[
        up(snapshot("id:a", 1, "/a"), ChangeKind::Created),
        up(snapshot("id:b", 1, "/b"), ChangeKind::Created),
        up(snapshot("id:c", 1, "/c"), ChangeKind::Created),
        up(snapshot("id:d", 1, "/d"), ChangeKind::Created),
        up(rec("id:k", "/k", RecordKind::Folder), ChangeKind::Created),
    ]);
    // a: changed without an event (the connector's call); then changed with one.
    apply(&[up(snapshot("id:a", 2, "/a"), ChangeKind::Unchanged)]);
    apply(&[up(
        snapshot("id:a", 3, "/a2"),
        ChangeKind::ContentAndMetadata,
    )]);
    // b: an event with the same values; then a replay that changes nothing.
    apply(&[up(snapshot("id:b", 1, "/b"), ChangeKind::Metadata)]);
    apply(&[up(snapshot("id:b", 1, "/b"), ChangeKind::Unchanged)]);
    // c: marked, restored as it was (no event), marked again and purged.
    apply(&[Change::Remove("id:c".into())]);
    apply(&[up(snapshot("id:c", 1, "/c"), ChangeKind::Unchanged)]);
    apply(&[Change::Remove("id:c".into()), Change::Purge]);
    let before_clear = store.events(Some("t"), 0).unwrap();
    // d and k: the tenant is cleared.
    store.clear("t").unwrap();
    let events = store.events(Some("t"), 0).unwrap();
    assert_eq!(
        events, before_clear,
        "clear keeps the event stream as it was"
    );

    let seen: Vec<(&str, &str, Option<&str>, &serde_json::Value)> = events
        .iter()
        .map(|e| {
            (
                e.kind.as_str(),
                e.external_id.as_str(),
                e.path_lower.as_deref(),
                &e.record["size"],
            )
        })
        .collect();
    let size = |n: u64| serde_json::Value::from(n);
    assert_eq!(
        seen,
        [
            ("created", "id:a", Some("/a"), &size(1)),
            ("created", "id:b", Some("/b"), &size(1)),
            ("created", "id:c", Some("/c"), &size(1)),
            ("created", "id:d", Some("/d"), &size(1)),
            ("created", "id:k", Some("/k"), &size(1)),
            ("content_and_metadata", "id:a", Some("/a2"), &size(3)),
            ("metadata", "id:b", Some("/b"), &size(1)),
            ("deleted", "id:c", Some("/c"), &serde_json::Value::Null),
        ]
    );
    assert_eq!(events[0].record["path_lower"], "/a");
    assert_eq!(events[5].record["path_lower"], "/a2");
    assert_eq!(events[3].record["kind"], "file");
    assert_eq!(events[4].record["kind"], "folder");
    assert_eq!(events[7].record["kind"], "file");
    // The whole record, not only the fields checked above.
    assert_eq!(
        events[3].record,
        super::record_json(&snapshot("id:d", 1, "/d"))
    );
}

/// Lookups of many keys (more than a backend may ask in one statement) answer each key in the
/// order asked: found, missing, asked twice, pending, and in another tenant alike.
pub(crate) fn long_lookups_answer_every_key_in_order(store: &dyn RecordStore) {
    let changes: Vec<Change> = (0..300)
        .map(|i| {
            up(
                rec(&format!("id:{i}"), &format!("/f{i}"), RecordKind::File),
                ChangeKind::Created,
            )
        })
        .collect();
    store.apply("t", &changes, None).unwrap();
    store
        .apply(
            "other",
            &[up(
                rec("id:7", "/f7", RecordKind::File),
                ChangeKind::Created,
            )],
            None,
        )
        .unwrap();
    store
        .apply("t", &[Change::Remove("id:5".into())], None)
        .unwrap();
    // Every third key missing, some asked twice far apart, one pending.
    let keys: Vec<usize> = (0..450).map(|i| (i * 7) % 450).chain([3, 299, 3]).collect();
    let paths: Vec<String> = keys.iter().map(|i| format!("/f{i}")).collect();
    let found = store.find_by_paths("t", &paths).unwrap();
    assert_eq!(found.len(), paths.len());
    for (key, record) in keys.iter().zip(&found) {
        let expected = (*key < 300 && *key != 5).then(|| format!("id:{key}"));
        assert_eq!(
            record.as_ref().map(|r| r.external_id.clone()),
            expected,
            "/f{key}"
        );
    }
    let ids: Vec<String> = keys.iter().map(|i| format!("id:{i}")).collect();
    // Found records only, in no particular order (a pending one too: it is still stored).
    let mut stored: Vec<(String, bool)> = store
        .get_records("t", &ids)
        .unwrap()
        .into_iter()
        .map(|s| (s.record.external_id, s.pending_removal))
        .collect();
    stored.sort();
    stored.dedup();
    let mut expected: Vec<(String, bool)> = keys
        .iter()
        .filter(|k| **k < 300)
        .map(|k| (format!("id:{k}"), *k == 5))
        .collect();
    expected.sort();
    expected.dedup();
    assert_eq!(stored, expected);
}

/// A tenant whose row is deleted (an operator's `DELETE FROM tenants`, or whatever removes a
/// tenant; `delete_row` does it in the backend's own way) and then created again under the same
/// name: its batches apply, and its new events never take a number of its earlier ones.
pub(crate) fn a_tenant_created_again_never_reuses_an_event_number(
    store: &dyn RecordStore,
    delete_row: &dyn Fn(&str),
) {
    store
        .apply(
            "t",
            &[
                up(rec("id:a", "/a", RecordKind::File), ChangeKind::Created),
                up(rec("id:b", "/b", RecordKind::File), ChangeKind::Created),
            ],
            Some(&point("1")),
        )
        .unwrap();
    store
        .apply(
            "u",
            &[up(rec("id:u", "/u", RecordKind::File), ChangeKind::Created)],
            Some(&point("1")),
        )
        .unwrap();
    let earlier = store.events(Some("t"), 0).unwrap();
    assert_eq!(earlier.len(), 2);

    delete_row("t");
    assert!(!store.tenants().unwrap().contains(&"t".to_string()));
    // Connected again under the same name: the row is created anew.
    store.set_setting("t", "k", "v").unwrap();
    let mut changed = rec("id:a", "/a", RecordKind::File);
    changed.content_hash = Some("new".into());
    store
        .apply(
            "t",
            &[
                up(changed, ChangeKind::Content),
                up(rec("id:c", "/c", RecordKind::File), ChangeKind::Created),
                Change::Remove("id:b".into()),
                Change::Purge,
            ],
            Some(&point("2")),
        )
        .unwrap();
    store
        .apply(
            "t",
            &[up(rec("id:d", "/d", RecordKind::File), ChangeKind::Created)],
            Some(&point("3")),
        )
        .unwrap();
    let events = store.events(Some("t"), 0).unwrap();
    assert_eq!(events.len(), 6, "{events:?}");
    assert_eq!(&events[..2], &earlier[..]);
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let kinds: Vec<&str> = events[2..].iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["content", "created", "deleted", "created"]);
    assert_eq!(ids(store.records("t").unwrap()), ["id:a", "id:c", "id:d"]);
    assert_eq!(ids(store.records("u").unwrap()), ["id:u"]);
}

/// Every check above as a `#[test]`, for the backend that `$fresh()` makes.
macro_rules! contract_tests {
    ($fresh:path) => {
        $crate::store::contract::contract_tests!(
            @tests $fresh;
            batch_with_sync_point_is_all_or_nothing,
            the_sync_point_keeps_its_status_and_a_batch_without_one_keeps_it,
            subtree_removal_is_deferred_until_purge_and_an_upsert_restores,
            remove_marks_one_record_and_not_its_descendants,
            mark_all_pending_then_purge_sweeps_what_was_not_seen_again,
            two_live_records_at_one_path_is_a_conflict_and_replace_resolves_it,
            a_folder_replacing_a_folder_leaves_its_children_to_the_connector,
            records_without_a_path_never_conflict_and_their_events_have_no_path,
            the_event_stream_is_in_order_with_one_event_per_change,
            an_event_keeps_the_record_as_it_was_when_emitted,
            tenants_are_isolated,
            paging_orders_are_byte_orders_and_skip_pending,
            shared_records_are_listed_and_sizes_beyond_i64_round_trip,
            long_lookups_answer_every_key_in_order,
            the_host_notes_owner_settings_and_credentials_round_trip,
        );
    };
    (@tests $fresh:path; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let (_guard, store) = $fresh();
                $crate::store::contract::$name(&store);
            }
        )*
    };
}

pub(crate) use contract_tests;
