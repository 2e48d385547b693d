//! Content hash (DROPBOX-API.md §9): the published test vectors, streaming, and listed hashes against downloaded bytes.

use crate::helpers::*;
use dropbox_emulator::{Content, content_hash};
use serde_json::json;
use std::io::Write;

#[test]
fn content_hash_vectors_and_streaming() {
    const B: usize = 4 * 1024 * 1024;
    assert_eq!(
        content_hash(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        content_hash(b"hello rdrop2"),
        "1aa2b7623dfff520c4abdc1227d10bc4e229b74005b66b3458345830e556f4de"
    );
    assert_eq!(
        content_hash(b"a"),
        "bf5d3affb73efd2ec6c36ad3112dd933efed63c4e1cbffcfa88e2759c144f2d8"
    );
    let ramp = |n: usize| (0..n).map(|i| (i % 256) as u8).collect::<Vec<u8>>();
    assert_eq!(
        content_hash(&ramp(B)),
        "894bbb52d1212d6bcbe9967f1a2169138c4d4af0c8dfbaeae86cd1d3f0c03faf"
    );
    let mut plus = ramp(B);
    plus.push(0xff);
    assert_eq!(
        content_hash(&plus),
        "9149387a91f71c7c2149b8427d15526b71c1a38d6c6f999ad71486a2ce788d57"
    );
    let data = ramp(14_680_064);
    let want = "f61d3ae93fa4f7646d37949fc0885141bf682faa9a130896b93459c650335d0f";
    assert_eq!(content_hash(&data), want);
    for sizes in [
        vec![B - 1],
        vec![B],
        vec![B + 1],
        vec![B - 2, 1],
        vec![B - 2, B + 3],
    ] {
        let mut h = dropbox_emulator::ContentHasher::new();
        let mut rest = &data[..];
        // The chunking repeats until the data is exhausted.
        'outer: loop {
            for &s in &sizes {
                if rest.is_empty() {
                    break 'outer;
                }
                let n = s.min(rest.len());
                h.write_all(&rest[..n]).unwrap();
                rest = &rest[n..];
            }
        }
        assert_eq!(h.finalize_hex(), want, "chunking {sizes:?}");
    }
}

#[test]
fn listed_hashes_match_downloaded_content() {
    let t = new();
    t.emu
        .create_file(
            "/a.bin",
            Content::Pattern {
                seed: 9,
                len: 9_711_423,
            },
        )
        .unwrap();
    t.emu.create_file("/empty.txt", bytes("")).unwrap();
    let (entries, _) = t.list_all(json!({"path": ""}));
    for e in entries {
        let r = t.download("files/download", json!({"path": e["path_lower"]}), &[]);
        assert_eq!(r.status, 200);
        assert_eq!(content_hash(&r.body), e["content_hash"].as_str().unwrap());
        assert_eq!(r.body.len() as u64, e["size"].as_u64().unwrap());
    }
}
