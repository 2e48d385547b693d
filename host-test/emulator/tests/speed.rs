//! Speed of the emulator at scale: populating a million files, and serving 2000-entry pages of
//! that account. Run with `--release -- --nocapture` to see the figures (debug builds use a
//! smaller account and only check that things work).

use dropbox_emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[test]
fn populate_a_million_and_serve_pages() {
    let files = if cfg!(debug_assertions) {
        50_000
    } else {
        1_000_000
    };
    let emu = Emulator::start(EmulatorConfig::default()).unwrap();
    let start = Instant::now();
    emu.populate(files, 2024).unwrap();
    let populate = start.elapsed();
    println!("populate {files} files: {populate:?}");

    let agent: ureq::Agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    let token = emu.access_token();
    let url = |r: &str| format!("{}/2/{r}", emu.base_url());
    let call = |route: &str, body: Value| -> (Duration, Value) {
        let t = Instant::now();
        let mut r = agent
            .post(&url(route))
            .header("Authorization", &format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .unwrap();
        let bytes = r
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .unwrap();
        let took = t.elapsed();
        assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(&bytes));
        (took, serde_json::from_slice(&bytes).unwrap())
    };

    // First page (takes the snapshot), then continue pages.
    let (first, page) = call(
        "files/list_folder",
        json!({"path": "", "recursive": true, "limit": 2000}),
    );
    assert_eq!(page["entries"].as_array().unwrap().len(), 2000);
    let mut cursor = page["cursor"].as_str().unwrap().to_string();
    let mut times = Vec::new();
    for _ in 0..20 {
        let (took, page) = call("files/list_folder/continue", json!({"cursor": cursor}));
        assert_eq!(page["entries"].as_array().unwrap().len(), 2000);
        cursor = page["cursor"].as_str().unwrap().to_string();
        times.push(took);
    }
    times.sort();
    println!("list_folder first 2000-entry page (round trip incl. JSON transfer): {first:?}");
    println!(
        "list_folder/continue 2000-entry pages: min {:?}, median {:?}, max {:?}",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
    let (flat, page) = call("files/list_folder", json!({"path": ""}));
    println!(
        "non-recursive root listing ({} entries): {flat:?}",
        page["entries"].as_array().unwrap().len()
    );
    let t = Instant::now();
    let truth = emu.truth();
    println!("truth() of {} entries: {:?}", truth.len(), t.elapsed());
    if !cfg!(debug_assertions) {
        assert!(
            populate < Duration::from_secs(20),
            "populate took {populate:?}"
        );
        assert!(
            times[times.len() / 2] < Duration::from_millis(50),
            "median page {:?}",
            times[times.len() / 2]
        );
    }
}
