//! The native decoding ceiling: how fast this machine decodes `files/list_folder` pages with the
//! connector's own decoder (`dropbox_connector::api::decode`), outside any sandbox. A sync in
//! the component cannot list faster than this; benchmarks report their rate against it.
//!
//! ```text
//! cargo run --release -p dropbox-connector --features bench --bin decode_ceiling -- [ENTRIES]
//! ```
//!
//! `ENTRIES` (default 200000) entries are synthesised as pages of 2000 (the most Dropbox sends
//! in a page), nine files to a folder, with the fields Dropbox sends for them
//! (host-test/emulator/DROPBOX-API.md §2). The pages are decoded three times; the fastest pass
//! counts. Prints one JSON line: `entries`, `pages`, `bytes`, `seconds`, `entries_per_s`.

use std::time::{Duration, Instant};

use dropbox_connector::api::decode;
use dropbox_connector::api::types::ListFolderResult;
use serde_json::{Value, json};

const PAGE: usize = 2000;

fn entry(i: usize) -> Value {
    let folder = i / 10;
    if i.is_multiple_of(10) {
        json!({
            ".tag": "folder",
            "name": format!("Folder {folder}"),
            "path_lower": format!("/projects/folder {folder}"),
            "path_display": format!("/Projects/Folder {folder}"),
            "id": format!("id:f{folder:012}"),
        })
    } else {
        json!({
            ".tag": "file",
            "name": format!("Report {i}.pdf"),
            "path_lower": format!("/projects/folder {folder}/report {i}.pdf"),
            "path_display": format!("/Projects/Folder {folder}/Report {i}.pdf"),
            "id": format!("id:a{i:012}"),
            "client_modified": "2024-03-01T10:20:30Z",
            "server_modified": "2024-03-01T10:20:31Z",
            "rev": format!("{:015x}", i + 1),
            "size": 1000 + i as u64 * 7,
            "is_downloadable": true,
            "content_hash": format!("{:064x}", i as u128 * 0x9e37_79b9_7f4a_7c15),
        })
    }
}

fn main() {
    let entries: usize = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 200_000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("ENTRIES must be a whole number: {e}");
            std::process::exit(2);
        }
    };
    let pages: Vec<Vec<u8>> = (0..entries)
        .collect::<Vec<_>>()
        .chunks(PAGE)
        .enumerate()
        .map(|(p, chunk)| {
            json!({
                "entries": chunk.iter().map(|&i| entry(i)).collect::<Vec<_>>(),
                "cursor": format!("AAE{p:040}"),
                "has_more": (p + 1) * PAGE < entries,
            })
            .to_string()
            .into_bytes()
        })
        .collect();
    let bytes: usize = pages.iter().map(Vec::len).sum();
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let mut decoded = 0usize;
        for body in &pages {
            match decode::<ListFolderResult>(body) {
                Ok(page) => decoded += page.entries.len(),
                Err(e) => {
                    eprintln!("a synthesised page did not decode: {e}");
                    std::process::exit(1);
                }
            }
        }
        assert_eq!(decoded, entries, "every entry decodes");
        best = best.min(started.elapsed());
    }
    let seconds = best.as_secs_f64().max(1e-9);
    println!(
        "{}",
        json!({
            "entries": entries,
            "pages": pages.len(),
            "bytes": bytes,
            "seconds": seconds,
            "entries_per_s": entries as f64 / seconds,
        })
    );
}
