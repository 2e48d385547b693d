//! `files/list_folder/longpoll`: timeouts, waking on a change, refusing auth.

use crate::helpers::*;
use dropbox_emulator::{Content, EmulatorConfig};
use serde_json::json;
use std::time::{Duration, Instant};

fn longpoll(t: &T, cursor: &str, timeout: u64) -> Resp {
    t.post_raw(
        "/2/files/list_folder/longpoll",
        &[("Content-Type", "application/json")],
        Some(&json!({"cursor": cursor, "timeout": timeout}).to_string()),
    )
}

#[test]
fn longpoll_times_out_wakes_and_refuses_auth() {
    let t = with_cfg(EmulatorConfig {
        longpoll_max_wait: Some(Duration::from_millis(800)),
        longpoll_backoff: Some(7),
        ..Default::default()
    });
    t.emu.create_file("/dir/a", bytes("a")).unwrap();
    let (_, cursor) = t.list_all(json!({"path": "/dir", "recursive": true}));
    // Timeout without change.
    let start = Instant::now();
    let r = longpoll(&t, &cursor, 30);
    assert_eq!(r.status, 200);
    assert_eq!(r.ct().as_deref(), Some("application/json"));
    assert_eq!(r.json(), json!({"changes": false, "backoff": 7}));
    assert!(start.elapsed() >= Duration::from_millis(700));
    // A change outside the cursor's folder does not wake it.
    t.emu.create_file("/elsewhere", bytes("e")).unwrap();
    assert_eq!(longpoll(&t, &cursor, 30).json()["changes"], false);
    // Authorization header refused.
    let r = t.post_raw(
        "/2/files/list_folder/longpoll",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Bearer {}", t.token)),
        ],
        Some(&json!({"cursor": cursor}).to_string()),
    );
    r.assert_400("Error in call to API function \"files/list_folder/longpoll\": Your request includes an Authorization header, but this function does not use it.");
    longpoll(&t, &cursor, 10)
        .assert_400("Error in call to API function \"files/list_folder/longpoll\": request body: timeout: 10 is not within range [30, 480]");
    // A change that already happened answers at once; the cursor is not advanced by longpoll.
    t.emu.create_file("/dir/b", bytes("b")).unwrap();
    assert_eq!(longpoll(&t, &cursor, 30).json()["changes"], true);
    assert_eq!(longpoll(&t, &cursor, 30).json()["changes"], true);
}

#[test]
fn longpoll_wakes_up_on_change() {
    let t = with_cfg(EmulatorConfig {
        longpoll_max_wait: Some(Duration::from_secs(20)),
        ..Default::default()
    });
    let (_, cursor) = t.list_all(json!({"path": "", "recursive": true}));
    let emu = t.emu.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        emu.create_file("/late.txt", Content::Bytes(b"late".to_vec()))
            .unwrap();
    });
    let start = Instant::now();
    let r = longpoll(&t, &cursor, 30);
    writer.join().unwrap();
    assert_eq!(r.json()["changes"], true);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let (c, _) = t.changes(&cursor);
    assert_eq!(paths(&c), vec![("file".into(), "/late.txt".into())]);
}
