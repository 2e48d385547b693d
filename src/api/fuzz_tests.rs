//! Property-style robustness tests: pseudo-random and mutated inputs must never panic.
//! A seeded xorshift keeps them deterministic without a fuzzing dependency.

use super::time::{parse_date, parse_timestamp};
use super::types::{FileMetadata, ListFolderResult, Metadata};
use super::{classify, decode, decode_api_result, to_header_safe_json};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
}

const SAMPLES: &[&str] = &[
    r#"{"entries":[{".tag":"file","name":"a.txt","id":"id:1","client_modified":"2015-05-12T15:50:38Z","server_modified":"2015-05-12T15:50:38Z","rev":"a1c10ce0dd78","size":7212,"path_lower":"/a.txt","content_hash":"e3b0"},{".tag":"folder","name":"m","id":"id:2","sharing_info":{"read_only":false}},{".tag":"deleted","name":"pi.txt","path_lower":"/pi.txt"}],"cursor":"Ztk","has_more":true}"#,
    r#"{"error_summary":"path/not_found/..","error":{".tag":"path","path":{".tag":"not_found"}}}"#,
    r#"{"error_summary":"shared_link_already_exists/metadata/..","error":{".tag":"shared_link_already_exists","shared_link_already_exists":{".tag":"metadata","metadata":{".tag":"file","url":"https://x","name":"a.txt"}}}}"#,
    r#"{"error_summary": "too_many_requests/..", "error": {"reason": {".tag": "too_many_requests"}, "retry_after": 300}}"#,
    r#"{"error_summary": "missing_scope/...", "error": {".tag": "missing_scope", "required_scope": "files.content.write"}}"#,
    r#"{"name":"\u00fc\ud83d\ude00.txt","id":"id:1","client_modified":"2015-05-12T15:50:38Z","server_modified":"2015-05-12T15:50:38Z","rev":"a1c10ce0dd78","size":3}"#,
    "2015-05-12T15:50:38Z",
    "2024-02-29",
];

const INTERESTING: &[u8] =
    b"{}[]\":,.-+0123456789eE\\u\" \n\tTZ:/nulltruefalse\xff\xc3\xa9\xed\xa0\x80";

/// A random input: pure noise, noise from JSON-ish bytes, or a mutated sample.
fn input(rng: &mut XorShift) -> Vec<u8> {
    match rng.below(4) {
        0 => (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
        1 => (0..rng.below(128))
            .map(|_| {
                INTERESTING
                    .get(rng.below(INTERESTING.len()))
                    .copied()
                    .unwrap_or(b'x')
            })
            .collect(),
        _ => {
            let sample = SAMPLES.get(rng.below(SAMPLES.len())).copied().unwrap_or("");
            let mut bytes = sample.as_bytes().to_vec();
            for _ in 0..=rng.below(4) {
                let len = bytes.len();
                match rng.below(4) {
                    0 => bytes.truncate(rng.below(len + 1)),
                    1 => {
                        if let Some(b) = bytes.get_mut(rng.below(len)) {
                            *b = rng.next() as u8;
                        }
                    }
                    2 => {
                        let at = rng.below(len + 1);
                        let byte = INTERESTING
                            .get(rng.below(INTERESTING.len()))
                            .copied()
                            .unwrap_or(b'x');
                        bytes.insert(at.min(len), byte);
                    }
                    _ => {
                        if len > 0 {
                            bytes.remove(rng.below(len));
                        }
                    }
                }
            }
            bytes
        }
    }
}

#[test]
fn nothing_panics_on_random_input() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let statuses = [
        0u16,
        200,
        400,
        401,
        403,
        404,
        409,
        422,
        429,
        500,
        503,
        599,
        600,
        u16::MAX,
    ];
    for _ in 0..20_000 {
        let bytes = input(&mut rng);
        let _ = decode::<ListFolderResult>(&bytes);
        let _ = decode::<Metadata>(&bytes);
        let _ = decode_api_result::<FileMetadata>(&bytes);
        let status = statuses
            .get(rng.below(statuses.len()))
            .copied()
            .unwrap_or(500);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let headers = vec![("Retry-After".to_owned(), text.clone())];
        let error = classify(status, &headers, &bytes);
        let _ = error.to_string();
        let _ = parse_timestamp(&text);
        let _ = parse_date(&text);
        if let Err(e) = decode::<ListFolderResult>(&bytes) {
            assert!(e.to_string().chars().count() < 600, "{e}");
        }
    }
}

#[test]
fn header_safe_json_round_trips_random_strings() {
    let mut rng = XorShift(42);
    for _ in 0..5_000 {
        let s: String = (0..rng.below(24))
            .filter_map(|_| {
                let cp = match rng.below(3) {
                    0 => rng.next() % 0x80,
                    1 => rng.next() % 0x800,
                    _ => rng.next() % 0x11_0000,
                };
                char::from_u32(u32::try_from(cp).unwrap_or(0))
            })
            .collect();
        let json = to_header_safe_json(&s).unwrap_or_else(|e| panic!("{e}"));
        assert!(json.bytes().all(|b| (0x20..0x7f).contains(&b)), "{json}");
        let back: String = decode_api_result(json.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, s);
    }
}
