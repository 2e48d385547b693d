//! Property-style robustness tests: pseudo-random and mutated inputs must never panic.
//! A seeded xorshift keeps them deterministic without a fuzzing dependency.
//!
//! Every parser of what a server sends is covered: JSON bodies of every result type (listing
//! pages, metadata, account, shared links, temporary links, longpoll, token responses),
//! `Dropbox-API-Result` headers, error classification from any status, headers and body,
//! timestamps and dates, and the path helpers that turn names into display paths and URLs.
//! `FUZZ_ITERATIONS=N` runs N inputs per test instead of the bounded default.

use super::time::{format_timestamp, parse_date, parse_timestamp};
use super::types::{
    ExportResult, FileMetadata, FullAccount, LatestCursorResult, ListFolderResult,
    ListSharedLinksResult, LongpollResult, Metadata, SharedLinkMetadata, TemporaryLinkResult,
    TokenErrorResponse, TokenResponse,
};
use super::{ApiError, classify, decode, decode_api_result, to_header_safe_json};
use crate::test_support::{XorShift, iterations};

const SAMPLES: &[&str] = &[
    r#"{"entries":[{".tag":"file","name":"a.txt","id":"id:1","client_modified":"2015-05-12T15:50:38Z","server_modified":"2015-05-12T15:50:38Z","rev":"a1c10ce0dd78","size":7212,"path_lower":"/a.txt","content_hash":"e3b0"},{".tag":"folder","name":"m","id":"id:2","sharing_info":{"read_only":false}},{".tag":"deleted","name":"pi.txt","path_lower":"/pi.txt"}],"cursor":"Ztk","has_more":true}"#,
    r#"{"error_summary":"path/not_found/..","error":{".tag":"path","path":{".tag":"not_found"}}}"#,
    r#"{"error_summary":"shared_link_already_exists/metadata/..","error":{".tag":"shared_link_already_exists","shared_link_already_exists":{".tag":"metadata","metadata":{".tag":"file","url":"https://x","name":"a.txt"}}}}"#,
    r#"{"error_summary": "too_many_requests/..", "error": {"reason": {".tag": "too_many_requests"}, "retry_after": 300}}"#,
    r#"{"error_summary": "missing_scope/...", "error": {".tag": "missing_scope", "required_scope": "files.content.write"}}"#,
    r#"{"name":"\u00fc\ud83d\ude00.txt","id":"id:1","client_modified":"2015-05-12T15:50:38Z","server_modified":"2015-05-12T15:50:38Z","rev":"a1c10ce0dd78","size":3}"#,
    "2015-05-12T15:50:38Z",
    "2024-02-29",
    r#"{"access_token": "sl.AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOp", "token_type": "bearer", "expires_in": 14400, "refresh_token": "RtRtRtRtRtRtRtRtRtRtRtRtRtRtRtRtRtRtRtRtRtRtRt", "scope": "files.metadata.read", "uid": "12345", "account_id": "dbid:AAH4f99T0taONIb-OurWxbNQ6ywGRopQngc"}"#,
    r#"{"error": "invalid_grant", "error_description": "refresh token is invalid or revoked"}"#,
    r#"{"account_id": "dbid:AAH4f99T0taONIb-OurWxbNQ6ywGRopQngc", "name": {"given_name": "Franz", "surname": "Ferdinand", "familiar_name": "Franz", "display_name": "Franz Ferdinand (Personal)", "abbreviated_name": "FF"}, "email": "franz@dropbox.com", "email_verified": true, "disabled": false, "country": "US", "locale": "en", "account_type": {".tag": "basic"}, "root_info": {".tag": "user", "root_namespace_id": "3235641", "home_namespace_id": "3235641"}}"#,
    r#"{"links": [{".tag": "file", "url": "https://www.dropbox.com/s/2sn712vy1ovegw8/Prime_Numbers.txt?dl=0", "name": "Prime_Numbers.txt", "id": "id:a4ayc_80_OEAAAAAAAAAXw", "path_lower": "/homework/math/prime_numbers.txt", "link_permissions": {"can_revoke": false}}, {".tag": "folder", "url": "https://x", "name": "m"}], "has_more": true, "cursor": "ZtkX9_EHj3x7PMkVuFIhwKYXEpwpLwyxp9vMKomUhllil9q7eWiAu"}"#,
    r#"{"metadata": {"name": "Prime_Numbers.txt", "id": "id:a4ayc_80_OEAAAAAAAAAXw", "client_modified": "2015-05-12T15:50:38Z", "server_modified": "2015-05-12T15:50:38Z", "rev": "a1c10ce0dd78", "size": 7212}, "link": "https://ucabc123456.dl.dropboxusercontent.com/cd/0/get/abcdefg"}"#,
    r#"{"changes": true, "backoff": 60}"#,
    r#"{"export_metadata": {"name": "plan.md", "size": 12, "export_hash": "abc"}, "file_metadata": {"name": "plan.paper", "id": "id:1", "client_modified": "2015-05-12T15:50:38Z", "server_modified": "2015-05-12T15:50:38Z", "rev": "1", "size": 3, "is_downloadable": false}}"#,
];

/// A planted credential: no error message may quote it, however the body around it is broken.
const PLANTED: &str = "sl.AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOp";

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
    for _ in 0..iterations(20_000) {
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
    for _ in 0..iterations(5_000) {
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

/// Decode `bytes` as `T`; an error must be short and must not quote a planted credential.
fn decode_checked<T: serde::de::DeserializeOwned>(bytes: &[u8]) {
    if let Err(e) = decode::<T>(bytes) {
        let text = e.to_string();
        assert!(text.chars().count() < 600, "{text}");
        assert!(
            !text.contains(PLANTED),
            "an error quotes a credential: {text}"
        );
    }
    if let Err(e) = decode_api_result::<T>(bytes) {
        let text = e.to_string();
        assert!(text.chars().count() < 600, "{text}");
        assert!(
            !text.contains(PLANTED),
            "an error quotes a credential: {text}"
        );
    }
}

/// Keys and tags the decoders look for, so random trees reach their inner branches.
const KEYS: &[&str] = &[
    ".tag",
    "entries",
    "cursor",
    "has_more",
    "name",
    "id",
    "path_lower",
    "path_display",
    "rev",
    "size",
    "client_modified",
    "server_modified",
    "content_hash",
    "is_downloadable",
    "export_info",
    "export_as",
    "sharing_info",
    "read_only",
    "links",
    "url",
    "link",
    "metadata",
    "changes",
    "backoff",
    "access_token",
    "refresh_token",
    "expires_in",
    "error",
    "error_summary",
    "reason",
    "retry_after",
    "account_id",
    "email",
    "display_name",
    "root_info",
    "export_metadata",
    "file_metadata",
    "user_message",
    "text",
];
const TAGS: &[&str] = &[
    "file",
    "folder",
    "deleted",
    "path",
    "not_found",
    "reset",
    "too_many_requests",
    "expired_access_token",
    "",
    "x",
];

/// A random JSON value built from the decoders' vocabulary, nested a few levels.
fn random_json(rng: &mut XorShift, depth: usize) -> serde_json::Value {
    use serde_json::{Value, json};
    match rng.below(if depth == 0 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => json!(rng.next() as i64 >> rng.below(64)),
        3 => json!(f64::from(rng.next() as u32) / 7.0),
        4 => Value::String(TAGS[rng.below(TAGS.len())].to_string()),
        5 => Value::String(
            ["2015-05-12T15:50:38Z", "id:1", "/a/B", PLANTED, "ü😀"][rng.below(5)].to_string(),
        ),
        6 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_json(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let mut map = serde_json::Map::new();
            for _ in 0..rng.below(8) {
                let key = KEYS[rng.below(KEYS.len())].to_string();
                let value = if key == ".tag" {
                    Value::String(TAGS[rng.below(TAGS.len())].into())
                } else {
                    random_json(rng, depth - 1)
                };
                map.insert(key, value);
            }
            Value::Object(map)
        }
    }
}

#[test]
fn every_decoder_gives_a_typed_error_on_any_input() {
    let mut rng = XorShift(0x0DEC_0DE5);
    for i in 0..iterations(10_000) {
        let bytes = if i % 2 == 0 {
            input(&mut rng)
        } else {
            serde_json::to_vec(&random_json(&mut rng, 4)).unwrap_or_default()
        };
        decode_checked::<ListFolderResult>(&bytes);
        decode_checked::<Metadata>(&bytes);
        decode_checked::<FileMetadata>(&bytes);
        decode_checked::<FullAccount>(&bytes);
        decode_checked::<ListSharedLinksResult>(&bytes);
        decode_checked::<SharedLinkMetadata>(&bytes);
        decode_checked::<TemporaryLinkResult>(&bytes);
        decode_checked::<LongpollResult>(&bytes);
        decode_checked::<LatestCursorResult>(&bytes);
        decode_checked::<TokenResponse>(&bytes);
        decode_checked::<TokenErrorResponse>(&bytes);
        decode_checked::<ExportResult>(&bytes);
        decode_checked::<serde_json::Value>(&bytes);
    }
}

#[test]
fn any_status_headers_and_body_classify_by_status() {
    let mut rng = XorShift(0xC1A5_51F7);
    let names = [
        "Retry-After",
        "retry-after",
        " RETRY-AFTER ",
        "Content-Type",
        "X-Other",
    ];
    for i in 0..iterations(10_000) {
        let status = match rng.below(3) {
            0 => rng.next() as u16,
            1 => [400u16, 401, 403, 409, 422, 429, 500, 502, 503, 504][rng.below(10)],
            _ => 400 + rng.below(200) as u16,
        };
        let headers: Vec<(String, String)> = (0..rng.below(3))
            .map(|_| {
                let value = match rng.below(4) {
                    0 => (rng.next() % 100_000).to_string(),
                    1 => u64::MAX.to_string(),
                    2 => "Wed, 21 Oct 2015 07:28:00 GMT".into(),
                    _ => String::from_utf8_lossy(&input(&mut rng)).into_owned(),
                };
                (names[rng.below(names.len())].to_string(), value)
            })
            .collect();
        let body = if i % 2 == 0 {
            input(&mut rng)
        } else {
            let error = random_json(&mut rng, 3);
            serde_json::to_vec(&serde_json::json!({"error_summary": PLANTED, "error": error}))
                .unwrap_or_default()
        };
        let error = classify(status, &headers, &body);
        // The class follows the status, whatever the body says.
        let expected_class = match status {
            // (A 400 refusing the credential is an auth error: random bodies never spell it.)
            400 => matches!(error, ApiError::BadRequest(_)),
            401 => matches!(error, ApiError::Auth(_)),
            403 => matches!(error, ApiError::AccessDenied(_)),
            409 => matches!(
                error,
                ApiError::Route(_) | ApiError::Unexpected { status: 409, .. }
            ),
            422 => matches!(error, ApiError::PathRoot(_)),
            429 => matches!(error, ApiError::RateLimited { .. }),
            500..=599 => matches!(error, ApiError::Server { .. }),
            _ => matches!(error, ApiError::Unexpected { .. }),
        };
        assert!(expected_class, "{status}: {error:?}");
        assert_eq!(
            error.is_retryable(),
            matches!(status, 429 | 500 | 502 | 503 | 504),
            "{status}: {error:?}"
        );
        // (403 and 422 quote the error's tag, cut to the same length: see the test below.)
        if !matches!(status, 403 | 422) {
            let text = error.to_string();
            assert!(text.chars().count() < 1_300, "{text}");
            assert!(
                !text.contains(PLANTED),
                "an error quotes a credential: {text}"
            );
        }
    }
}

/// For 403 and 422 the message is the error's tag path; like every other status it is cut to
/// an excerpt and scrubbed of token-like runs.
#[test]
fn forbidden_and_path_root_messages_are_short_and_scrubbed() {
    let long_tag = "x".repeat(100_000);
    for status in [403u16, 422] {
        for tag in [PLANTED, long_tag.as_str()] {
            let body = serde_json::to_vec(&serde_json::json!({"error": tag})).unwrap_or_default();
            let text = classify(status, &[], &body).to_string();
            assert!(
                text.chars().count() < 600 && !text.contains(PLANTED),
                "{status}: {} chars",
                text.len()
            );
        }
    }
}

#[test]
fn timestamps_round_trip_and_garbage_is_refused() {
    let mut rng = XorShift(0x7133_57A3);
    for _ in 0..iterations(20_000) {
        let unix = match rng.below(3) {
            0 => rng.next() as i64,
            1 => (rng.next() % 253_402_300_800) as i64,
            _ => -((rng.next() % 62_167_219_200) as i64),
        };
        let text = format_timestamp(unix);
        let back = parse_timestamp(&text).unwrap_or_else(|e| panic!("{unix} -> {text}: {e}"));
        assert_eq!(back, unix.clamp(-62_167_219_200, 253_402_300_799), "{text}");
        // One character changed: parses to something else, or is refused, never panics.
        let mut bytes = text.into_bytes();
        let at = rng.below(bytes.len());
        bytes[at] = INTERESTING[rng.below(INTERESTING.len())];
        let mutated = String::from_utf8_lossy(&bytes);
        let _ = parse_timestamp(&mutated);
        let _ = parse_date(mutated.get(..10).unwrap_or(""));
    }
}

#[test]
fn paths_and_names_become_display_paths_and_urls_without_panics() {
    use crate::model::RecordKind;
    use crate::sync::mapping::{
        child_display, mime_for_export, mime_for_name, parent_path, web_url,
    };
    let mut rng = XorShift(0x9A75_0001);
    let alphabet = [
        "/", "a", "É", "😀", " ", ".", "..", "%", "?", "#", "\u{0}", "\u{202e}", "日本", "//",
    ];
    for _ in 0..iterations(20_000) {
        let path: String = (0..rng.below(12))
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        let name: String = (0..rng.below(4))
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        if let Some(parent) = parent_path(&path) {
            assert!(
                path.starts_with(parent) && parent.len() < path.len(),
                "{path:?} -> {parent:?}"
            );
        }
        let display = child_display(parent_path(&path), &name, Some(&path));
        assert!(
            display.ends_with(&name),
            "{display:?} must end with {name:?}"
        );
        for kind in [RecordKind::File, RecordKind::Folder] {
            let url = web_url(kind, &display);
            assert!(url.starts_with("https://www.dropbox.com/home"), "{url}");
            assert!(
                url.bytes().all(|b| b.is_ascii_graphic()),
                "not URL-safe: {url:?}"
            );
        }
        let _ = mime_for_name(&name);
        let _ = mime_for_export(&name);
    }
}
