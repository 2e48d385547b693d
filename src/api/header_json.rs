//! Header-safe JSON for `Dropbox-API-Arg` (request) and `Dropbox-API-Result` (response).
//!
//! HTTP header values must be ASCII in practice: Dropbox answers raw UTF-8 in `Dropbox-API-Arg`
//! with a 400, and some HTTP stacks refuse to send it at all. So U+007F and every non-ASCII
//! character is written as a JSON `\uXXXX` escape, astral characters as UTF-16 surrogate pairs,
//! exactly like the official JS SDK. Raw non-ASCII can only occur inside JSON strings, where
//! `\u` escapes mean the same thing, so rewriting the serialized text char by char is exact.

use std::fmt::Write as _;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{DecodeError, decode};

/// Serializes `value` as JSON that contains only printable ASCII (plus the escapes serde_json
/// already writes for control characters).
pub fn to_header_safe_json<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let json = serde_json::to_string(value)?;
    Ok(escape_non_ascii(&json))
}

fn escape_non_ascii(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if u32::from(c) < 0x7f {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out
}

/// Decodes a `Dropbox-API-Result` header value. The server sends ASCII JSON with `\u` escapes;
/// raw UTF-8 is accepted too, and bytes that are not UTF-8 are read as Latin-1 (what some HTTP
/// stacks hand over for header values).
pub fn decode_api_result<T: DeserializeOwned>(header_value: &[u8]) -> Result<T, DecodeError> {
    if std::str::from_utf8(header_value).is_ok() {
        decode(header_value)
    } else {
        let latin1: String = header_value.iter().map(|&b| char::from(b)).collect();
        decode(latin1.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{FileMetadata, PathArg};

    #[test]
    fn reference_example() {
        let arg = "some_üñîcødé_and_\u{7f}";
        let json = to_header_safe_json(&arg).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            json,
            r#""some_\u00fc\u00f1\u00eec\u00f8d\u00e9_and_\u007f""#
        );
    }

    #[test]
    fn astral_characters_become_surrogate_pairs() {
        let arg = PathArg {
            path: "/Fotos/😀 ß.jpg".into(),
        };
        let json = to_header_safe_json(&arg).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json, r#"{"path":"/Fotos/\ud83d\ude00 \u00df.jpg"}"#);
        assert!(json.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }

    #[test]
    fn existing_escapes_are_kept() {
        let json = to_header_safe_json(&"a\"b\\c\n\u{1}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json, r#""a\"b\\c\n\u0001""#);
    }

    #[test]
    fn round_trip() {
        for s in [
            "",
            "plain",
            "some_üñîcødé_and_\u{7f}",
            "😀𝄞\u{10ffff}",
            "中文/日本語",
            "\u{fffd}\u{80}",
        ] {
            let json = to_header_safe_json(&s).unwrap_or_else(|e| panic!("{e}"));
            assert!(json.is_ascii());
            let back: String = decode_api_result(json.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back, s);
        }
    }

    #[test]
    fn api_result_accepts_escaped_raw_utf8_and_latin1() {
        let escaped = br#"{"name":"\u00fc.txt","id":"id:1","client_modified":"2015-05-12T15:50:38Z","server_modified":"2015-05-12T15:50:38Z","rev":"0123456789","size":3}"#;
        let f: FileMetadata = decode_api_result(escaped).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.name, "ü.txt");
        let raw = String::from_utf8_lossy(escaped).replace("\\u00fc", "ü");
        let f: FileMetadata = decode_api_result(raw.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.name, "ü.txt");
        let latin1: Vec<u8> = raw
            .chars()
            .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
            .collect();
        let f: FileMetadata = decode_api_result(&latin1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.name, "ü.txt");
    }

    #[test]
    fn api_result_errors_are_typed() {
        assert_eq!(
            decode_api_result::<FileMetadata>(b""),
            Err(DecodeError::Empty)
        );
        assert!(matches!(
            decode_api_result::<FileMetadata>(b"{\"name\""),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            decode_api_result::<FileMetadata>(b"{\"name\":1}"),
            Err(DecodeError::Shape { .. })
        ));
        // A lone surrogate escape is invalid JSON, not a panic.
        assert!(decode_api_result::<String>(br#""\ud800""#).is_err());
    }
}
