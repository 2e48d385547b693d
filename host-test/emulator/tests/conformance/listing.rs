//! `files/list_folder*`: shapes and order, page sizes, snapshots across pages, the change journal, case-only renames, new revs on moves, children before parents, deleted entries, scoped and invalidated cursors.

use crate::helpers::*;
use dropbox_emulator::{EmulatorConfig, content_hash};
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[test]
fn list_folder_shapes_and_order() {
    let t = new();
    let f = t
        .emu
        .create_file("/Docs/Report Q1.pdf", bytes("report"))
        .unwrap();
    t.emu.create_folder("/Docs/Sub/Deep").unwrap();
    t.emu.create_file("/top.txt", bytes("top")).unwrap();
    t.emu
        .create_non_downloadable("/Docs/Plan.paper", "markdown", b"# Plan".to_vec())
        .unwrap();
    let page = t.list(json!({"path": "", "recursive": true}));
    assert_eq!(page["has_more"], false);
    assert!(!page["cursor"].as_str().unwrap().is_empty());
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 6);
    // Parents before children.
    for (i, e) in entries.iter().enumerate() {
        let p = e["path_lower"].as_str().unwrap();
        let parent = &p[..p.rfind('/').unwrap()];
        if !parent.is_empty() {
            assert!(
                entries[..i].iter().any(|x| x["path_lower"] == parent),
                "{p} before its parent"
            );
        }
    }
    let file = entries
        .iter()
        .find(|e| e["name"] == "Report Q1.pdf")
        .unwrap();
    assert_eq!(file[".tag"], "file");
    assert_eq!(file["id"], f.id.as_str());
    assert!(file["id"].as_str().unwrap().starts_with("id:"));
    assert_eq!(file["path_lower"], "/docs/report q1.pdf");
    assert_eq!(file["path_display"], "/Docs/Report Q1.pdf");
    assert_eq!(file["size"], 6);
    assert_eq!(file["is_downloadable"], true);
    assert_eq!(file["content_hash"], content_hash(b"report"));
    let rev = file["rev"].as_str().unwrap();
    assert!(
        rev.len() >= 9
            && rev
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    for k in ["client_modified", "server_modified"] {
        let ts = file[k].as_str().unwrap();
        assert_eq!(ts.len(), 20, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T');
    }
    let folder = entries.iter().find(|e| e["name"] == "Sub").unwrap();
    assert_eq!(folder[".tag"], "folder");
    assert!(folder.get("rev").is_none() && folder.get("size").is_none());
    let paper = entries.iter().find(|e| e["name"] == "Plan.paper").unwrap();
    assert_eq!(paper["is_downloadable"], false);
    assert_eq!(paper["export_info"]["export_as"], "markdown");
    assert!(
        paper["export_info"]["export_options"]
            .as_array()
            .unwrap()
            .contains(&json!("markdown"))
    );
    // include_non_downloadable_files=false drops it.
    let page =
        t.list(json!({"path": "", "recursive": true, "include_non_downloadable_files": false}));
    assert!(
        page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["name"] != "Plan.paper")
    );
    // Non-recursive: direct children only.
    let names: Vec<String> = t.list(json!({"path": ""}))["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["Docs", "top.txt"]);
    let names: Vec<String> = t.list(json!({"path": "/docs"}))["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["Plan.paper", "Report Q1.pdf", "Sub"]);
    // Recursive non-root listing includes the folder itself; by id too.
    let docs_id = t
        .emu
        .truth()
        .into_iter()
        .find(|e| e.path_lower == "/docs")
        .unwrap()
        .id;
    for path in ["/Docs", docs_id.as_str()] {
        let page = t.list(json!({"path": path, "recursive": true}));
        let ps: Vec<&str> = page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path_lower"].as_str().unwrap())
            .collect();
        assert_eq!(
            ps,
            vec![
                "/docs",
                "/docs/plan.paper",
                "/docs/report q1.pdf",
                "/docs/sub",
                "/docs/sub/deep"
            ]
        );
    }
    // include_has_explicit_shared_members adds the field to files.
    let page = t.list(json!({"path": "/docs", "include_has_explicit_shared_members": true}));
    assert!(
        page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e[".tag"] == "file")
            .all(|e| e["has_explicit_shared_members"] == false)
    );
}

#[test]
fn recursive_listing_without_self_when_configured() {
    let t = with_cfg(EmulatorConfig {
        recursive_listing_includes_self: false,
        ..Default::default()
    });
    t.emu.create_file("/Docs/a.txt", bytes("a")).unwrap();
    let page = t.list(json!({"path": "/Docs", "recursive": true}));
    assert_eq!(
        paths(page["entries"].as_array().unwrap()),
        vec![("file".to_string(), "/Docs/a.txt".to_string())]
    );
}

#[test]
fn default_page_size_and_limits() {
    let t = with_cfg(EmulatorConfig {
        default_page_size: 10,
        ..Default::default()
    });
    for i in 0..25 {
        t.emu
            .create_file(&format!("/f{i:02}.txt"), bytes("x"))
            .unwrap();
    }
    let page = t.list(json!({"path": ""}));
    assert_eq!(page["entries"].as_array().unwrap().len(), 10);
    assert_eq!(page["has_more"], true);
    let page = t.list(json!({"path": "", "limit": 25}));
    assert_eq!(page["entries"].as_array().unwrap().len(), 25);
    assert_eq!(page["has_more"], false);
    let (all, _) = t.list_all(json!({"path": "", "limit": 1}));
    assert_eq!(all.len(), 25);
}

#[test]
fn snapshot_is_consistent_across_pages_with_mid_listing_changes() {
    let t = new();
    for i in 0..60 {
        t.emu
            .create_file(&format!("/d{}/f{i:02}.txt", i % 3), bytes(&format!("v{i}")))
            .unwrap();
    }
    let before: Vec<String> = t.emu.truth().into_iter().map(|e| e.path_lower).collect();
    let mut page = t.list(json!({"path": "", "recursive": true, "limit": 7}));
    let mut entries = page["entries"].as_array().unwrap().clone();
    // Mutate between pages: things not yet listed change or vanish, new things appear.
    t.emu.delete("/d2/f59.txt").unwrap();
    t.emu.create_file("/d2/zz-new.txt", bytes("new")).unwrap();
    t.emu.move_path("/d1", "/d9").unwrap();
    t.emu.modify_file("/d0/f57.txt", bytes("changed")).unwrap();
    while page["has_more"] == true {
        page = t.cont(page["cursor"].as_str().unwrap());
        entries.extend(page["entries"].as_array().unwrap().iter().cloned());
        // Keep changing while paging.
        let _ = t
            .emu
            .create_file(&format!("/d2/late-{}.txt", entries.len()), bytes("late"));
    }
    let listed: Vec<String> = entries
        .iter()
        .map(|e| e["path_lower"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        listed, before,
        "the initial listing is exactly the tree at the first call"
    );
    let f57 = entries
        .iter()
        .find(|e| e["path_lower"] == "/d0/f57.txt")
        .unwrap();
    assert_eq!(f57["content_hash"], content_hash(b"v57"));
    // The final cursor replays everything that happened since the snapshot.
    let mut replica = Replica::default();
    replica.apply(&entries);
    let (changes, _) = t.changes(page["cursor"].as_str().unwrap());
    assert!(!changes.is_empty());
    replica.apply(&changes);
    replica.assert_matches(&t.emu, true);
}

#[test]
fn evicted_snapshot_resets() {
    let t = with_cfg(EmulatorConfig {
        snapshot_capacity: 1,
        ..Default::default()
    });
    for i in 0..5 {
        t.emu.create_file(&format!("/f{i}"), bytes("x")).unwrap();
    }
    let first = t.list(json!({"path": "", "limit": 2}));
    let _second = t.list(json!({"path": "", "limit": 2}));
    t.rpc(
        "files/list_folder/continue",
        json!({"cursor": first["cursor"]}),
    )
    .assert_409(json!({".tag": "reset"}));
}

#[test]
fn journal_semantics() {
    let t = new();
    t.emu.create_file("/A/one.txt", bytes("1")).unwrap();
    t.emu.create_file("/A/B/two.txt", bytes("2")).unwrap();
    t.emu.create_file("/F.txt", bytes("f")).unwrap();
    let (initial, cursor) = t.list_all(json!({"path": "", "recursive": true}));
    let mut replica = Replica::default();
    replica.apply(&initial);
    let ids: BTreeMap<String, String> = t
        .emu
        .truth()
        .into_iter()
        .map(|e| (e.path_lower, e.id))
        .collect();

    // Modification: a file entry at the same path with a new rev and hash.
    let old_rev = initial
        .iter()
        .find(|e| e["path_lower"] == "/f.txt")
        .unwrap()["rev"]
        .clone();
    t.emu.modify_file("/F.txt", bytes("f2")).unwrap();
    let (c, cursor) = t.changes(&cursor);
    assert_eq!(paths(&c), vec![("file".into(), "/F.txt".into())]);
    assert_ne!(c[0]["rev"], old_rev);
    assert_eq!(c[0]["content_hash"], content_hash(b"f2"));
    assert_eq!(c[0]["id"], ids["/f.txt"].as_str());
    replica.apply(&c);

    // File rename: deleted old + file with the same id at the new path.
    t.emu.move_path("/F.txt", "/G.txt").unwrap();
    let (c, cursor) = t.changes(&cursor);
    assert_eq!(
        paths(&c),
        vec![
            ("deleted".into(), "/F.txt".into()),
            ("file".into(), "/G.txt".into())
        ]
    );
    assert_eq!(c[1]["id"], ids["/f.txt"].as_str());
    assert!(c[0].get("id").is_none() && c[0].get("rev").is_none());
    replica.apply(&c);

    // Folder move: deleted old + folder + descendants at their new paths, same ids.
    t.emu.move_path("/A", "/Moved/A2").unwrap();
    let (c, cursor) = t.changes(&cursor);
    assert_eq!(
        paths(&c),
        vec![
            ("folder".into(), "/Moved".into()),
            ("deleted".into(), "/A".into()),
            ("folder".into(), "/Moved/A2".into()),
            ("folder".into(), "/Moved/A2/B".into()),
            ("file".into(), "/Moved/A2/B/two.txt".into()),
            ("file".into(), "/Moved/A2/one.txt".into()),
        ]
    );
    assert_eq!(c[2]["id"], ids["/a"].as_str());
    assert_eq!(c[4]["id"], ids["/a/b/two.txt"].as_str());
    replica.apply(&c);

    // Case-only rename: not reported by default; the tree has the new name.
    t.emu
        .move_path("/Moved/A2/one.txt", "/Moved/A2/ONE.txt")
        .unwrap();
    let (c, cursor) = t.changes(&cursor);
    assert!(c.is_empty(), "{c:?}");
    assert!(
        t.emu
            .truth()
            .iter()
            .any(|e| e.name == "ONE.txt" && e.path_lower == "/moved/a2/one.txt")
    );
    replica.assert_matches(&t.emu, false);

    // Folder delete with descendants: ONE deleted entry, whatever include_deleted.
    t.emu.delete("/Moved").unwrap();
    let (c, cursor) = t.changes(&cursor);
    assert_eq!(paths(&c), vec![("deleted".into(), "/Moved".into())]);
    replica.apply(&c);

    // File replaces folder, folder replaces file.
    t.emu.create_file("/X/inner.txt", bytes("i")).unwrap();
    t.emu.create_file("/Y", bytes("y")).unwrap();
    let (c, cursor) = t.changes(&cursor);
    replica.apply(&c);
    t.emu.delete("/X").unwrap();
    t.emu.create_file("/X", bytes("now a file")).unwrap();
    t.emu.delete("/Y").unwrap();
    t.emu.create_folder("/Y").unwrap();
    let (c, _) = t.changes(&cursor);
    assert_eq!(
        paths(&c),
        vec![
            ("deleted".into(), "/X".into()),
            ("file".into(), "/X".into()),
            ("deleted".into(), "/Y".into()),
            ("folder".into(), "/Y".into())
        ]
    );
    replica.apply(&c);
    replica.assert_matches(&t.emu, true);
}

#[test]
fn case_only_renames_can_be_emitted() {
    let t = with_cfg(EmulatorConfig {
        emit_case_only_renames: true,
        ..Default::default()
    });
    let info = t.emu.create_file("/Dir/file.txt", bytes("x")).unwrap();
    let (_, cursor) = t.list_all(json!({"path": "", "recursive": true}));
    let moved = t.emu.move_path("/Dir/file.txt", "/Dir/File.TXT").unwrap();
    assert_eq!(moved.id, info.id);
    assert_eq!(moved.path_lower, "/dir/file.txt");
    let (c, _) = t.changes(&cursor);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["name"], "File.TXT");
    assert_eq!(c[0]["path_lower"], "/dir/file.txt");
    assert_eq!(c[0]["id"], info.id.as_str());
}

#[test]
fn case_only_folder_rename_can_be_reported_as_the_folder_alone() {
    // Without emit_case_only_renames: the option alone makes the rename reported.
    for emit_all in [false, true] {
        let t = with_cfg(EmulatorConfig {
            case_only_rename_folder_entry_only: true,
            emit_case_only_renames: emit_all,
            ..Default::default()
        });
        let folder = t.emu.create_folder("/Photos").unwrap();
        let deep = t
            .emu
            .create_file("/Photos/2024/Trip/a.jpg", bytes("a"))
            .unwrap();
        t.emu.create_file("/Photos/b.txt", bytes("b")).unwrap();
        let (_, cursor) = t.list_all(json!({"path": "", "recursive": true}));
        let moved = t.emu.move_path("/Photos", "/PHOTOS").unwrap();
        assert_eq!(moved.id, folder.id);
        let (c, cursor) = t.changes(&cursor);
        assert_eq!(c.len(), 1, "only the folder's entry: {c:?}");
        assert_eq!(c[0][".tag"], "folder");
        assert_eq!(c[0]["name"], "PHOTOS");
        assert_eq!(c[0]["path_display"], "/PHOTOS");
        assert_eq!(c[0]["path_lower"], "/photos");
        assert_eq!(c[0]["id"], folder.id.as_str());
        // The account itself changed in full: descendants show the new casing.
        let md = t
            .rpc(
                "files/get_metadata",
                json!({"path": "/photos/2024/trip/a.jpg"}),
            )
            .json();
        assert_eq!(md["path_display"], "/PHOTOS/2024/Trip/a.jpg");
        assert_eq!(md["id"], deep.id.as_str());
        let md = t.rpc("files/get_metadata", json!({"path": deep.id})).json();
        assert_eq!(md["path_display"], "/PHOTOS/2024/Trip/a.jpg");
        let md = t
            .rpc("files/get_metadata", json!({"path": "/photos/2024"}))
            .json();
        assert_eq!(md["path_display"], "/PHOTOS/2024");
        assert!(
            t.emu
                .truth()
                .iter()
                .filter(|e| e.path_lower.starts_with("/photos"))
                .all(|e| e.path_display.starts_with("/PHOTOS")),
            "truth has the new casing everywhere"
        );
        // A case-only rename of a FILE follows emit_case_only_renames only.
        t.emu.move_path("/PHOTOS/b.txt", "/PHOTOS/B.TXT").unwrap();
        let (c, _) = t.changes(&cursor);
        if emit_all {
            assert_eq!(paths(&c), vec![("file".into(), "/PHOTOS/B.TXT".into())]);
        } else {
            assert!(c.is_empty(), "{c:?}");
        }
    }
}

#[test]
fn moves_can_give_files_a_new_rev() {
    let md = |t: &T, path: &str| {
        let r = t.rpc("files/get_metadata", json!({"path": path}));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    // Default: a move keeps the rev.
    let t = new();
    let info = t.emu.create_file("/a/f.txt", bytes("hello")).unwrap();
    t.emu.move_path("/a/f.txt", "/b/g.txt").unwrap();
    assert_eq!(
        md(&t, "/b/g.txt")["rev"],
        info.rev.clone().unwrap().as_str()
    );

    let t = with_cfg(EmulatorConfig {
        new_rev_on_move: true,
        ..Default::default()
    });
    let info = t.emu.create_file("/a/f.txt", bytes("hello")).unwrap();
    let inner = t.emu.create_file("/d/sub/x.txt", bytes("inner")).unwrap();
    let before = md(&t, "/a/f.txt");
    let old_rev = before["rev"].as_str().unwrap().to_string();
    assert_eq!(Some(old_rev.clone()), info.rev);
    let (_, cursor) = t.list_all(json!({"path": "", "recursive": true}));

    let moved = t.emu.move_path("/a/f.txt", "/b/g.txt").unwrap();
    let after = md(&t, "/b/g.txt");
    let new_rev = after["rev"].as_str().unwrap().to_string();
    assert_ne!(new_rev, old_rev, "a moved file has a new rev");
    assert_eq!(moved.rev.as_deref(), Some(new_rev.as_str()));
    assert_eq!(after["id"], info.id.as_str());
    assert_eq!(after["content_hash"], before["content_hash"]);
    assert_eq!(after["content_hash"], content_hash(b"hello"));
    assert_eq!(after["size"], before["size"]);
    assert_eq!(after["server_modified"], before["server_modified"]);
    // The new rev serves the content, by `rev` argument and by `rev:` path.
    let r = t.download(
        "files/download",
        json!({"path": "/b/g.txt", "rev": new_rev}),
        &[],
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"hello"[..]),
        "{}",
        r.text()
    );
    let result: Value = serde_json::from_str(&r.header("dropbox-api-result").unwrap()).unwrap();
    assert_eq!(result["rev"], new_rev.as_str());
    assert_eq!(result["path_display"], "/b/g.txt");
    let r = t.download(
        "files/download",
        json!({"path": format!("rev:{new_rev}")}),
        &[],
    );
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    let r = t.download("files/download", json!({"path": "/b/g.txt"}), &[]);
    assert_eq!(r.body, b"hello");
    assert_eq!(r.header("etag"), Some(format!("W/\"{new_rev}\"")));
    let by_rev = md(&t, &format!("rev:{new_rev}"));
    assert_eq!(by_rev["path_display"], "/b/g.txt");
    // The old rev still serves the same bytes, like any earlier version.
    let r = t.download(
        "files/download",
        json!({"path": "/b/g.txt", "rev": old_rev}),
        &[],
    );
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    let r = t.rpc(
        "files/get_temporary_link",
        json!({"path": format!("rev:{new_rev}")}),
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // Files under a moved folder get new revs too; the journal carries them.
    t.emu.move_path("/d", "/e").unwrap();
    let x = md(&t, "/e/sub/x.txt");
    assert_ne!(x["rev"], inner.rev.clone().unwrap().as_str());
    assert_eq!(x["content_hash"], content_hash(b"inner"));
    let (c, _) = t.changes(&cursor);
    let listed = |path: &str| {
        c.iter()
            .rev()
            .find(|e| e["path_lower"] == path && e[".tag"] == "file")
            .unwrap_or_else(|| panic!("{path} not in {c:?}"))
            .clone()
    };
    assert_eq!(listed("/b/g.txt")["rev"], new_rev.as_str());
    assert_eq!(listed("/e/sub/x.txt")["rev"], x["rev"]);
    let r = t.download(
        "files/download",
        json!({"path": "/e/sub/x.txt", "rev": x["rev"]}),
        &[],
    );
    assert_eq!((r.status, r.body.as_slice()), (200, &b"inner"[..]));

    // A case-only rename of a file that the feed does not report (emit_case_only_renames is
    // off) keeps its rev: no client could learn a new one.
    t.emu.move_path("/b/g.txt", "/b/G.txt").unwrap();
    let renamed = md(&t, "/b/g.txt");
    assert_eq!(renamed["path_display"], "/b/G.txt");
    assert_eq!(renamed["rev"], new_rev.as_str());
    assert_eq!(renamed["content_hash"], content_hash(b"hello"));
    // A content change still gets a new rev and a new hash.
    let modified = t.emu.modify_file("/b/g.txt", bytes("changed")).unwrap();
    assert_ne!(modified.rev.as_deref(), renamed["rev"].as_str());
    assert_eq!(modified.content_hash, Some(content_hash(b"changed")));
}

/// Every page of a listing: each entry's path_lower with the index of its page.
fn pages(t: &T, arg: Value) -> (Vec<(String, String, usize)>, String) {
    let mut page = t.list(arg);
    let mut out = Vec::new();
    let mut n = 0;
    loop {
        for e in page["entries"].as_array().unwrap() {
            out.push((
                e[".tag"].as_str().unwrap().to_string(),
                e["path_lower"].as_str().unwrap().to_string(),
                n,
            ));
        }
        if page["has_more"] != true {
            return (out, page["cursor"].as_str().unwrap().to_string());
        }
        page = t.cont(page["cursor"].as_str().unwrap());
        n += 1;
    }
}

/// Every key once, each folder after all of its descendants, and at least one child on an
/// earlier page than its parent.
fn assert_post_order(listed: &[(String, String, usize)], expected: &[String]) {
    let keys: Vec<&str> = listed.iter().map(|e| e.1.as_str()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), keys.len(), "an entry came twice: {keys:?}");
    let mut want: Vec<&str> = expected.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(sorted, want, "entries lost or invented");
    let mut across_pages = false;
    for (i, (tag, key, page)) in listed.iter().enumerate() {
        let sub = format!("{key}/");
        for (_, later, _) in &listed[i + 1..] {
            assert!(!later.starts_with(&sub), "{key} came before {later}");
        }
        if tag == "folder" {
            across_pages |= listed[..i]
                .iter()
                .any(|(_, k, p)| k.starts_with(&sub) && p < page);
        }
    }
    assert!(across_pages, "no child on an earlier page than its parent");
}

#[test]
fn children_before_parents_across_pages() {
    let t = with_cfg(EmulatorConfig {
        children_before_parents: true,
        ..Default::default()
    });
    for p in [
        "/A/B/C/deep.txt",
        "/A/B/b.txt",
        "/A/a.txt",
        "/A b.txt",
        "/A-x/y.txt",
        "/Ab/c/d.txt",
        "/Z/z.txt",
        "/root.txt",
    ] {
        t.emu.create_file(p, bytes(p)).unwrap();
    }
    t.emu.create_folder("/A/B/C/Empty").unwrap();
    t.emu.create_folder("/A/E").unwrap();
    let truth: Vec<String> = t.emu.truth().into_iter().map(|e| e.path_lower).collect();
    let (listed, cursor) = pages(&t, json!({"path": "", "recursive": true, "limit": 2}));
    assert!(listed.iter().all(|e| e.2 < listed.len().div_ceil(2)));
    assert!(listed.chunk_by(|a, b| a.2 == b.2).all(|p| p.len() <= 2));
    assert_post_order(&listed, &truth);
    // Every page size gives the same complete order.
    for limit in [1, 3, 5, 2000] {
        let (again, _) = pages(&t, json!({"path": "", "recursive": true, "limit": limit}));
        let keys =
            |l: &[(String, String, usize)]| l.iter().map(|e| e.1.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&again), keys(&listed), "limit {limit}");
    }
    // A non-root listing: the listed folder itself comes last.
    let under_a: Vec<String> = truth
        .iter()
        .filter(|k| *k == "/a" || k.starts_with("/a/"))
        .cloned()
        .collect();
    let (listed_a, _) = pages(&t, json!({"path": "/A", "recursive": true, "limit": 2}));
    assert_post_order(&listed_a, &under_a);
    assert_eq!(listed_a.last().unwrap().1, "/a");
    // Deleted entries are merged, in the same order, and nothing is lost.
    t.emu.delete("/Z").unwrap();
    t.emu.delete("/A/B/C/deep.txt").unwrap();
    let truth: Vec<String> = t.emu.truth().into_iter().map(|e| e.path_lower).collect();
    let (with_deleted, _) = pages(
        &t,
        json!({"path": "", "recursive": true, "limit": 2, "include_deleted": true}),
    );
    let live: Vec<(String, String, usize)> = with_deleted
        .iter()
        .filter(|e| e.0 != "deleted")
        .cloned()
        .collect();
    assert_post_order(&live, &truth);
    let deleted: Vec<&str> = with_deleted
        .iter()
        .filter(|e| e.0 == "deleted")
        .map(|e| e.1.as_str())
        .collect();
    assert_eq!(deleted, vec!["/a/b/c/deep.txt", "/z/z.txt", "/z"]);
    // The cursor after the enumeration replays later changes as usual.
    t.emu.create_file("/new.txt", bytes("n")).unwrap();
    let (c, _) = t.changes(&cursor);
    assert_eq!(
        paths(&c),
        vec![
            ("deleted".into(), "/Z".into()),
            ("deleted".into(), "/A/B/C/deep.txt".into()),
            ("file".into(), "/new.txt".into())
        ]
    );
    // Non-recursive listings are unaffected (nothing to reorder).
    let (flat, _) = pages(&t, json!({"path": "/A", "limit": 2}));
    let flat: Vec<&str> = flat.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(flat, vec!["/a/a.txt", "/a/b", "/a/e"]);
}

#[test]
fn include_deleted_and_scoped_cursors() {
    let t = new();
    t.emu.create_file("/keep/a.txt", bytes("a")).unwrap();
    t.emu.create_file("/gone/b.txt", bytes("b")).unwrap();
    t.emu.create_file("/other/c.txt", bytes("c")).unwrap();
    t.emu.delete("/gone").unwrap();
    // Historical tombstones only with include_deleted.
    let (without, _) = t.list_all(json!({"path": "", "recursive": true}));
    assert!(without.iter().all(|e| e[".tag"] != "deleted"));
    let (with, _) = t.list_all(json!({"path": "", "recursive": true, "include_deleted": true}));
    let deleted: Vec<&str> = with
        .iter()
        .filter(|e| e[".tag"] == "deleted")
        .map(|e| e["path_lower"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, vec!["/gone", "/gone/b.txt"]);
    // A cursor on /keep sees only its subtree; non-recursive only direct children.
    let (_, keep_cursor) = t.list_all(json!({"path": "/keep", "recursive": true}));
    let (_, flat_cursor) = t.list_all(json!({"path": ""}));
    t.emu.create_file("/keep/sub/d.txt", bytes("d")).unwrap();
    t.emu.create_file("/other/e.txt", bytes("e")).unwrap();
    t.emu.create_file("/root.txt", bytes("r")).unwrap();
    let (c, _) = t.changes(&keep_cursor);
    assert_eq!(
        paths(&c),
        vec![
            ("folder".into(), "/keep/sub".into()),
            ("file".into(), "/keep/sub/d.txt".into())
        ]
    );
    let (c, _) = t.changes(&flat_cursor);
    assert_eq!(paths(&c), vec![("file".into(), "/root.txt".into())]);
    // The cursor's folder deleted: 409 path/not_found.
    t.emu.delete("/keep").unwrap();
    t.rpc("files/list_folder/continue", json!({"cursor": keep_cursor}))
        .assert_409(json!({".tag": "path", "path": {".tag": "not_found"}}));
}

#[test]
fn get_latest_cursor_sees_only_later_changes() {
    let t = new();
    t.emu.create_file("/old.txt", bytes("o")).unwrap();
    let r = t.rpc(
        "files/list_folder/get_latest_cursor",
        json!({"path": "", "recursive": true}),
    );
    assert_eq!(r.status, 200);
    let cursor = r.json()["cursor"].as_str().unwrap().to_string();
    let (c, _) = t.changes(&cursor);
    assert!(c.is_empty());
    t.emu.create_file("/new.txt", bytes("n")).unwrap();
    let (c, _) = t.changes(&cursor);
    assert_eq!(paths(&c), vec![("file".into(), "/new.txt".into())]);
    t.rpc("files/list_folder/get_latest_cursor", json!({"path": "/"})).assert_400(
        "Error in call to API function \"files/list_folder/get_latest_cursor\": request body: path: Specify the root folder as an empty string rather than as \"/\".",
    );
}

#[test]
fn invalidated_cursors_reset() {
    let t = new();
    t.emu.create_file("/a", bytes("a")).unwrap();
    let (_, cursor) = t.list_all(json!({"path": ""}));
    t.emu.invalidate_cursors();
    t.rpc("files/list_folder/continue", json!({"cursor": cursor}))
        .assert_409(json!({".tag": "reset"}));
    let r = t.post_raw(
        "/2/files/list_folder/longpoll",
        &[("Content-Type", "application/json")],
        Some(&json!({"cursor": cursor}).to_string()),
    );
    r.assert_409(json!({".tag": "reset"}));
    // A fresh listing works again.
    let (_, fresh) = t.list_all(json!({"path": ""}));
    assert_eq!(
        t.rpc("files/list_folder/continue", json!({"cursor": fresh}))
            .status,
        200
    );
}
