//! The HTTP control interface, `populate`, the Rust API's errors and the server's lifecycle, odd requests.

use crate::helpers::*;
use dropbox_emulator::{EmulatorConfig, Kind, content_hash};
use serde_json::{Value, json};
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn control_interface_drives_the_account() {
    let t = new();
    let post = |op: &str, body: Value| {
        t.post_raw(
            &format!("/__emulator/{op}"),
            &[("Content-Type", "application/json")],
            Some(&body.to_string()),
        )
    };
    let r = post(
        "create_file",
        json!({"path": "/ctl/a.txt", "text": "hello"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["content_hash"], content_hash(b"hello"));
    assert_eq!(
        post("create_file", json!({"path": "/ctl/a.txt", "text": "x"})).status,
        409
    );
    assert_eq!(
        post("move", json!({"from": "/ctl/a.txt", "to": "/ctl/b.txt"})).status,
        200
    );
    assert_eq!(post("share", json!({"path": "/ctl/b.txt"})).status, 200);
    assert_eq!(post("delete", json!({"path": "/nope"})).status, 404);
    let truth = t.get(&t.url("/__emulator/truth"), &[]).json();
    assert_eq!(truth.as_array().unwrap().len(), 2);
    assert!(truth[1]["shared_url"].is_string());
    let r = post(
        "fault",
        json!({"route": "files/list_folder", "kind": {"type": "status", "value": 502}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(list_root(&t).unwrap().status, 502);
    let r = post(
        "fault",
        json!({"route": "files/list_folder", "kind": {"type": "rate_limit_json", "value": {"retry_after": 4, "reason": "too_many_requests", "include_field": false}}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        list_root(&t).unwrap().header("retry-after").as_deref(),
        Some("4")
    );
    assert_eq!(
        post("populate", json!({"files": 50, "seed": 3})).status,
        200
    );
    assert!(t.emu.truth().len() > 50);
    let counters = t.get(&t.url("/__emulator/counters"), &[]).json();
    assert!(counters["files/list_folder"].as_u64().unwrap() >= 2);
    assert!(
        counters.get("__emulator/truth").is_none(),
        "control calls are not counted"
    );
    let tok = t.get(&t.url("/__emulator/token"), &[]).json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        t.rpc_with("files/list_folder", &tok, json!({"path": ""}))
            .status,
        200
    );
    // Stop through the control interface: run_until_stopped returns.
    let emu = t.emu.clone();
    let waiter = std::thread::spawn(move || emu.run_until_stopped());
    assert_eq!(post("stop", Value::Null).status, 200);
    waiter.join().unwrap();
    assert!(t.emu.is_stopped());
}

#[test]
fn populate_is_seeded_and_realistic() {
    let a = with_cfg(EmulatorConfig {
        files: 3000,
        seed: 11,
        ..Default::default()
    });
    let b = with_cfg(EmulatorConfig {
        files: 3000,
        seed: 11,
        ..Default::default()
    });
    let ta = a.emu.truth();
    let tb = b.emu.truth();
    let key = |t: &dropbox_emulator::TruthEntry| {
        (
            t.path_display.clone(),
            t.id.clone(),
            t.content_hash.clone(),
            t.size,
        )
    };
    assert_eq!(
        ta.iter().map(key).collect::<Vec<_>>(),
        tb.iter().map(key).collect::<Vec<_>>()
    );
    let files: Vec<_> = ta.iter().filter(|e| e.kind == Kind::File).collect();
    assert_eq!(files.len(), 3000);
    assert!(
        ta.iter().any(|e| e.name.chars().any(|c| c as u32 > 0xffff)),
        "astral-plane emoji"
    );
    assert!(
        ta.iter().any(|e| e
            .name
            .chars()
            .any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))),
        "CJK"
    );
    assert!(
        ta.iter()
            .any(|e| e.name.contains('é') || e.name.contains('ü') || e.name.contains('ñ'))
    );
    assert!(ta.iter().any(|e| e.name.contains(' ')));
    assert!(
        ta.iter()
            .map(|e| e.path_lower.matches('/').count())
            .max()
            .unwrap()
            >= 8,
        "deep nesting"
    );
    assert!(ta.iter().any(|e| !e.is_downloadable));
    assert!(ta.iter().filter(|e| e.shared_url.is_some()).count() >= 3);
    // Paths are unique case-insensitively and sorted by path_lower.
    assert!(ta.windows(2).all(|w| w[0].path_lower < w[1].path_lower));
    // What the API lists is the truth, with correct hashes.
    let (entries, _) = a.list_all(json!({"path": "", "recursive": true, "limit": 2000}));
    assert_eq!(entries.len(), ta.len());
    for (e, t) in entries.iter().zip(&ta) {
        assert_eq!(e["path_lower"], t.path_lower.as_str());
        assert_eq!(e["id"], t.id.as_str());
        if t.kind == Kind::File && t.is_downloadable {
            assert_eq!(e["content_hash"].as_str(), t.content_hash.as_deref());
        }
    }
    for t in files.iter().filter(|e| e.is_downloadable).take(20) {
        let r = a.download("files/download", json!({"path": t.id}), &[]);
        assert_eq!(content_hash(&r.body), t.content_hash.clone().unwrap());
    }
}

#[test]
fn emulator_api_errors_and_drop_stops_server() {
    let t = new();
    assert!(matches!(
        t.emu.create_file("relative", bytes("x")),
        Err(dropbox_emulator::EmulatorError::InvalidPath(_))
    ));
    assert!(matches!(
        t.emu.create_file("/a/", bytes("x")),
        Err(dropbox_emulator::EmulatorError::InvalidPath(_))
    ));
    t.emu.create_file("/f", bytes("x")).unwrap();
    assert!(matches!(
        t.emu.create_file("/F", bytes("x")),
        Err(dropbox_emulator::EmulatorError::AlreadyExists(_))
    ));
    assert!(matches!(
        t.emu.create_file("/f/child", bytes("x")),
        Err(dropbox_emulator::EmulatorError::NotAFolder(_))
    ));
    assert!(matches!(
        t.emu.modify_file("/nope", bytes("x")),
        Err(dropbox_emulator::EmulatorError::NotFound(_))
    ));
    t.emu.create_folder("/d").unwrap();
    assert!(matches!(
        t.emu.move_path("/d", "/d/inner"),
        Err(dropbox_emulator::EmulatorError::InvalidPath(_))
    ));
    assert!(matches!(
        t.emu.move_path("/d", "/f"),
        Err(dropbox_emulator::EmulatorError::AlreadyExists(_))
    ));
    // Parents keep their existing case.
    let e = t.emu.create_file("/D/x.txt", bytes("x")).unwrap();
    assert_eq!(e.path_display, "/d/x.txt");
    let addr = t.emu.local_addr();
    drop(t);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
        "server stopped on drop"
    );
}

#[test]
fn odd_requests_never_crash_a_handler() {
    let t = new();
    t.emu.create_file("/a/b.txt", bytes("b")).unwrap();
    let cursor = t.list(json!({"path": ""}))["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let odd_values = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1.5),
        json!(18446744073709551615u64),
        json!("id:"),
        json!("id:!!!/x"),
        json!("rev:zzzzzzzzz"),
        json!("rev:ffffffffffffffff"),
        json!("ns:1/a"),
        json!("/a/b.txt/"),
        json!("//"),
        json!("/\u{0}"),
        json!("/😀/é"),
        json!([1, 2]),
        json!({"x": 1}),
        json!("AAE"),
        json!("AAEeyJ4Ijp0cnVlfQ"),
        json!(cursor.clone() + "x"),
    ];
    let routes = [
        (
            "files/list_folder",
            ["path", "limit", "recursive", "cursor"],
        ),
        (
            "files/list_folder/continue",
            ["cursor", "cursor", "cursor", "cursor"],
        ),
        (
            "files/list_folder/get_latest_cursor",
            ["path", "limit", "include_deleted", "shared_link"],
        ),
        (
            "files/get_metadata",
            ["path", "include_deleted", "include_property_groups", "path"],
        ),
        ("files/get_temporary_link", ["path", "path", "path", "path"]),
        (
            "sharing/list_shared_links",
            ["path", "cursor", "direct_only", "path"],
        ),
        (
            "sharing/create_shared_link_with_settings",
            ["path", "settings", "path", "path"],
        ),
    ];
    for (route, fields) in routes {
        for v in &odd_values {
            for f in fields {
                for body in [json!({f: v}), v.clone()] {
                    let r = t.rpc(route, body.clone());
                    assert!(
                        matches!(r.status, 200 | 400 | 409),
                        "{route} {body}: {} {}",
                        r.status,
                        r.text()
                    );
                }
            }
            let r = t.download(
                "files/download",
                json!({"path": v}),
                &[("Range", "bytes=5-2")],
            );
            assert!(
                matches!(r.status, 200 | 400 | 409),
                "download {v}: {} {}",
                r.status,
                r.text()
            );
        }
    }
    let lp = t.post_raw(
        "/2/files/list_folder/longpoll",
        &[("Content-Type", "application/json")],
        Some(r#"{"cursor":"AAEeyJ4Ijp0cnVlfQ"}"#),
    );
    assert_eq!(lp.status, 400);
    // Random bytes as a request.
    let (head, _) = raw(t.emu.local_addr(), b"\xff\xfe\x00garbage\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert_eq!(t.rpc("files/list_folder", json!({"path": ""})).status, 200);
}
