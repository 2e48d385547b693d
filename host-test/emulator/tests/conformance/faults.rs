//! Fault injection, latency and request counters.

use crate::helpers::*;
use dropbox_emulator::{Content, Fault, FaultKind};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[test]
fn fault_rate_limits_and_statuses() {
    let t = new();
    t.emu.create_file("/a.txt", bytes("a")).unwrap();
    let route = "files/list_folder";
    t.emu.inject(Fault::once(
        route,
        FaultKind::RateLimitJson {
            retry_after: 3,
            reason: "too_many_requests".into(),
            include_field: true,
        },
    ));
    let r = list_root(&t).unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.ct().as_deref(), Some("application/json"));
    assert_eq!(r.header("retry-after").as_deref(), Some("3"));
    assert_eq!(
        r.json()["error"],
        json!({"reason": {".tag": "too_many_requests"}, "retry_after": 3})
    );
    // count = 1: the next call succeeds.
    assert_eq!(list_root(&t).unwrap().status, 200);
    t.emu.inject(Fault::once(
        route,
        FaultKind::RateLimitJson {
            retry_after: 1,
            reason: "too_many_write_operations".into(),
            include_field: false,
        },
    ));
    let r = list_root(&t).unwrap();
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert_eq!(
        r.json()["error"],
        json!({"reason": {".tag": "too_many_write_operations"}})
    );
    t.emu.inject(Fault::once(
        route,
        FaultKind::RateLimitText { retry_after: 2 },
    ));
    let r = list_root(&t).unwrap();
    assert_eq!(
        (r.status, r.header("retry-after").as_deref()),
        (429, Some("2"))
    );
    assert!(r.ct().unwrap().starts_with("text/plain"));
    for code in [500, 502, 503, 504] {
        t.emu.inject(Fault::once(route, FaultKind::Status(code)));
        let r = list_root(&t).unwrap();
        assert_eq!(r.status, code);
        assert!(!r.body.is_empty() && r.body.len() < 100);
    }
    t.emu.inject(Fault::once(route, FaultKind::ExpiredToken));
    list_root(&t).unwrap().assert_401("expired_access_token");
    t.emu.inject(Fault::once(route, FaultKind::InvalidToken));
    list_root(&t).unwrap().assert_401("invalid_access_token");
    let cursor = t.list(json!({"path": ""}))["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    t.emu
        .inject(Fault::once("files/list_folder/continue", FaultKind::Reset));
    t.rpc("files/list_folder/continue", json!({"cursor": cursor}))
        .assert_409(json!({".tag": "reset"}));
    assert_eq!(
        t.rpc("files/list_folder/continue", json!({"cursor": cursor}))
            .status,
        200
    );
    // skip / count, and route None matches anything.
    t.emu.inject(Fault {
        route: Some(route.into()),
        skip: 1,
        count: 2,
        kind: FaultKind::Status(500),
    });
    let statuses: Vec<u16> = (0..4).map(|_| list_root(&t).unwrap().status).collect();
    assert_eq!(statuses, vec![200, 500, 500, 200]);
    t.emu.inject(Fault {
        route: None,
        skip: 0,
        count: 1,
        kind: FaultKind::Status(503),
    });
    assert_eq!(t.rpc("users/get_current_account", Value::Null).status, 503);
    assert_eq!(t.rpc("users/get_current_account", Value::Null).status, 200);
    t.emu.inject(Fault {
        route: None,
        skip: 0,
        count: 5,
        kind: FaultKind::Status(503),
    });
    t.emu.clear_faults();
    assert_eq!(list_root(&t).unwrap().status, 200);
}

#[test]
fn fault_json_corruptions() {
    let t = new();
    t.emu.create_file("/a.txt", bytes("a")).unwrap();
    let route = "files/list_folder";
    let real = list_root(&t).unwrap();
    t.emu.inject(Fault::once(route, FaultKind::TruncatedJson));
    let r = list_root(&t).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.len() < real.body.len());
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    t.emu.inject(Fault::once(route, FaultKind::MalformedJson));
    let r = list_root(&t).unwrap();
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    t.emu.inject(Fault::once(route, FaultKind::WrongTypeJson));
    let v = list_root(&t).unwrap().json();
    assert!(
        !v["entries"].is_array() && !v["cursor"].is_string() && !v["has_more"].is_boolean(),
        "{v}"
    );
    t.emu
        .inject(Fault::once(route, FaultKind::UnknownFieldsAndTags));
    let v = list_root(&t).unwrap().json();
    assert!(v.get("emu_unknown_field").is_some());
    let entries = v["entries"].as_array().unwrap();
    assert!(entries.iter().any(|e| e[".tag"] == "emu_future_kind"));
    assert!(
        entries
            .iter()
            .filter(|e| e[".tag"] == "file")
            .all(|e| e.get("emu_unknown_field").is_some())
    );
    t.emu
        .inject(Fault::once(route, FaultKind::HugeBody(3_000_000)));
    let r = list_root(&t).unwrap();
    assert!(r.body.len() >= 2_900_000);
    assert!(r.json()["entries"].is_array(), "still valid JSON");
    // Downloads: the Dropbox-API-Result header is the JSON that gets corrupted.
    t.emu
        .inject(Fault::once("files/download", FaultKind::TruncatedJson));
    let r = t.download("files/download", json!({"path": "/a.txt"}), &[]);
    assert!(serde_json::from_str::<Value>(&r.header("dropbox-api-result").unwrap()).is_err());
    assert_eq!(r.body, b"a");
}

#[test]
fn fault_transport_failures() {
    let t = new();
    t.emu
        .create_file(
            "/big.bin",
            Content::Pattern {
                seed: 5,
                len: 1 << 20,
            },
        )
        .unwrap();
    let route = "files/list_folder";
    t.emu.inject(Fault::once(route, FaultKind::DropConnection));
    assert!(
        list_root(&t).is_err(),
        "connection dropped before any response"
    );
    assert_eq!(list_root(&t).unwrap().status, 200);
    // Half the body, then close: the client sees a premature end.
    t.emu
        .inject(Fault::once("files/download", FaultKind::DropMidBody));
    let r = t
        .agent
        .post(&t.url("/2/files/download"))
        .header("Authorization", &format!("Bearer {}", t.token))
        .header("Dropbox-API-Arg", r#"{"path":"/big.bin"}"#)
        .send_empty();
    let failed = match r {
        Err(_) => true,
        Ok(mut resp) => resp
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .is_err(),
    };
    assert!(failed);
    // One flipped byte.
    let good = t
        .download("files/download", json!({"path": "/big.bin"}), &[])
        .body;
    t.emu
        .inject(Fault::once("files/download", FaultKind::CorruptByte));
    let bad = t
        .download("files/download", json!({"path": "/big.bin"}), &[])
        .body;
    assert_eq!(good.len(), bad.len());
    assert_eq!(good.iter().zip(&bad).filter(|(a, b)| a != b).count(), 1);
    // Slow.
    t.emu.inject(Fault::once(
        route,
        FaultKind::Slow(Duration::from_millis(400)),
    ));
    let start = Instant::now();
    assert_eq!(list_root(&t).unwrap().status, 200);
    assert!(start.elapsed() >= Duration::from_millis(400));
    // Faults on the token endpoint too.
    t.emu
        .inject(Fault::once("oauth2/token", FaultKind::Status(503)));
    assert_eq!(
        token_call(&t, &[("grant_type", "refresh_token")], None).status,
        503
    );
}

#[test]
fn latency_and_request_counts() {
    let t = new();
    t.emu.reset_counts();
    list_root(&t).unwrap();
    list_root(&t).unwrap();
    let cursor = t.list(json!({"path": ""}))["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    t.cont(&cursor);
    let counts = t.emu.request_counts();
    assert_eq!(counts.get("files/list_folder"), Some(&3));
    assert_eq!(counts.get("files/list_folder/continue"), Some(&1));
    t.emu.reset_counts();
    assert!(t.emu.request_counts().is_empty());
    t.emu.set_latency(Duration::from_millis(150));
    let start = Instant::now();
    list_root(&t).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(150));
    t.emu.set_latency(Duration::ZERO);
}
