//! Fault injection: the failures a connector must survive, applied to the next matching requests.
//!
//! A fault either replaces the response before the route runs (429, 5xx, 401, reset, a dropped
//! connection), or transforms the route's real response on its way out (truncated, malformed or
//! mistyped JSON, unknown fields and tags, a huge body, a corrupted byte, a cut body, a delay).

use crate::blob::Blob;
use crate::http::{Body, Response};
use crate::wire::{auth_error, rate_limited_json, rate_limited_text, tag_error};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Mutex;
use std::time::Duration;

/// A fault to inject: after letting `skip` matching requests pass, the next `count` matching
/// requests get `kind`. `route: None` matches every API, OAuth and temporary-link request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub route: Option<String>,
    #[serde(default)]
    pub skip: usize,
    #[serde(default = "one")]
    pub count: usize,
    pub kind: FaultKind,
}

fn one() -> usize {
    1
}

impl Fault {
    /// The next request to `route` gets `kind`.
    pub fn once(route: &str, kind: FaultKind) -> Fault {
        Fault {
            route: Some(route.to_string()),
            skip: 0,
            count: 1,
            kind,
        }
    }
}

/// In JSON (control interface): `{"type": "status", "value": 503}`,
/// `{"type": "rate_limit_json", "value": {"retry_after": 2, "reason": "too_many_requests", "include_field": true}}`,
/// `{"type": "slow", "value": {"secs": 1, "nanos": 0}}`, `{"type": "reset"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum FaultKind {
    /// 429 with a JSON RateLimitError (`retry_after` field optional) and a Retry-After header.
    RateLimitJson {
        retry_after: u64,
        reason: String,
        include_field: bool,
    },
    /// 429 with a plain-text body and a Retry-After header.
    RateLimitText { retry_after: u64 },
    /// A server error (500, 502, 503, 504) with a short text body.
    Status(u16),
    /// 409 reset.
    Reset,
    /// 401 expired_access_token.
    ExpiredToken,
    /// 401 invalid_access_token.
    InvalidToken,
    /// The JSON (body, or Dropbox-API-Result for downloads) cut in half.
    TruncatedJson,
    /// Invalid JSON of plausible length.
    MalformedJson,
    /// Valid JSON whose fields have the wrong types.
    WrongTypeJson,
    /// Close the socket before any response.
    DropConnection,
    /// Send the headers and half the body, then close.
    DropMidBody,
    /// Flip one byte of the body (downloads).
    CorruptByte,
    /// Add unknown fields to every JSON object, and an entry with an unknown `.tag` to lists.
    UnknownFieldsAndTags,
    /// Delay the response.
    Slow(Duration),
    /// A body of (at least) this many bytes: JSON padded with an extra field, bytes otherwise.
    HugeBody(usize),
    /// 200 with `has_more: true` and nothing in it: no entries (links) and the request's own
    /// cursor back, or no cursor at all when the request had none (a misbehaving server that
    /// never lets a client make progress).
    NoProgress,
}

#[derive(Default)]
pub(crate) struct Faults {
    list: Mutex<Vec<Fault>>,
}

impl Faults {
    pub fn inject(&self, f: Fault) {
        if f.count > 0 {
            self.list.lock().unwrap_or_else(|e| e.into_inner()).push(f);
        }
    }

    pub fn clear(&self) {
        self.list.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Every fault matching the route counts this request; the first one past its `skip` fires.
    pub fn take(&self, route: &str) -> Option<FaultKind> {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        let mut fired = None;
        for f in list.iter_mut() {
            if f.route.as_deref().is_some_and(|r| r != route) {
                continue;
            }
            if f.skip > 0 {
                f.skip -= 1;
            } else if fired.is_none() && f.count > 0 {
                f.count -= 1;
                fired = Some(f.kind.clone());
            }
        }
        list.retain(|f| f.count > 0);
        fired
    }
}

/// Faults that answer instead of the route.
pub(crate) fn early_response(kind: &FaultKind) -> Option<Response> {
    Some(match kind {
        FaultKind::RateLimitJson {
            retry_after,
            reason,
            include_field,
        } => rate_limited_json(reason, *retry_after, *include_field),
        FaultKind::RateLimitText { retry_after } => rate_limited_text(*retry_after),
        FaultKind::Status(code) => {
            let text = match code {
                500 => "Internal Server Error",
                502 => "Bad Gateway",
                503 => "Service Unavailable",
                504 => "Gateway Timeout",
                _ => "Server Error",
            };
            Response::text(*code, text)
        }
        FaultKind::Reset => tag_error("reset"),
        FaultKind::ExpiredToken => auth_error("expired_access_token", None),
        FaultKind::InvalidToken => auth_error("invalid_access_token", None),
        _ => return None,
    })
}

/// The `NoProgress` answer to a request: what a listing or link page says when it moves nowhere.
pub(crate) fn no_progress(request_body: &[u8]) -> Response {
    let cursor = serde_json::from_slice::<Value>(request_body)
        .ok()
        .and_then(|v| v.get("cursor").and_then(Value::as_str).map(String::from));
    let mut page = json!({"entries": [], "links": [], "has_more": true});
    if let Some(cursor) = cursor {
        page["cursor"] = json!(cursor);
    }
    Response::json_value(200, &page)
}

/// Where the JSON of a response is: the body (RPC) or the Dropbox-API-Result header (download).
enum JsonSite {
    Body,
    ResultHeader,
}

fn json_site(resp: &Response) -> Option<JsonSite> {
    if resp.is_json() && matches!(resp.body, Body::Bytes(_)) {
        Some(JsonSite::Body)
    } else if resp.get_header("Dropbox-API-Result").is_some() {
        Some(JsonSite::ResultHeader)
    } else {
        None
    }
}

fn edit_json_text(resp: &mut Response, f: impl FnOnce(String) -> String) {
    match json_site(resp) {
        Some(JsonSite::Body) => {
            if let Body::Bytes(b) = &mut resp.body {
                let text = String::from_utf8_lossy(b).into_owned();
                *b = f(text).into_bytes();
            }
        }
        Some(JsonSite::ResultHeader) => {
            let text = resp
                .get_header("Dropbox-API-Result")
                .unwrap_or("")
                .to_string();
            let edited = f(text);
            resp.set_header("Dropbox-API-Result", &edited);
        }
        None => {}
    }
}

fn edit_json_value(resp: &mut Response, f: impl FnOnce(&mut Value)) {
    let header = matches!(json_site(resp), Some(JsonSite::ResultHeader));
    edit_json_text(resp, |text| match serde_json::from_str::<Value>(&text) {
        Ok(mut v) => {
            f(&mut v);
            let s = serde_json::to_string(&v).unwrap_or(text);
            if header {
                crate::wire::header_safe(&s)
            } else {
                s
            }
        }
        Err(_) => text,
    });
}

fn add_unknowns(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (_, child) in map.iter_mut() {
                add_unknowns(child);
            }
            for key in ["entries", "links"] {
                if let Some(Value::Array(list)) = map.get_mut(key) {
                    list.push(json!({".tag": "emu_future_kind", "name": "future.bin", "path_lower": "/future.bin", "path_display": "/future.bin", "emu_future_field": 1}));
                }
            }
            map.insert(
                "emu_unknown_field".into(),
                json!({"nested_unknown": [1, "two", null], "flag": true}),
            );
        }
        Value::Array(list) => list.iter_mut().for_each(add_unknowns),
        _ => {}
    }
}

/// Swap every top-level field to a different JSON type (valid JSON, wrong shape).
fn wrong_types(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (_, child) in map.iter_mut() {
                *child = match child {
                    Value::String(_) => json!(12345),
                    Value::Number(n) => json!(n.to_string()),
                    Value::Bool(b) => json!(if *b { "yes" } else { "no" }),
                    Value::Array(_) => json!({"not": "a list"}),
                    Value::Object(_) => json!(["not", "an", "object"]),
                    Value::Null => json!(false),
                };
            }
        }
        other => *other = json!({"unexpected": ["shape"]}),
    }
}

/// Faults that alter the route's real response.
pub(crate) fn transform(kind: &FaultKind, resp: &mut Response) {
    match kind {
        FaultKind::TruncatedJson => edit_json_text(resp, |t| {
            let mut cut = t.len() / 2;
            while !t.is_char_boundary(cut) {
                cut -= 1;
            }
            t[..cut].to_string()
        }),
        FaultKind::MalformedJson => edit_json_text(resp, |t| match t.strip_prefix('{') {
            Some(rest) => format!("{{,,{rest}"),
            None => format!("{t}}}]"),
        }),
        FaultKind::WrongTypeJson => edit_json_value(resp, wrong_types),
        FaultKind::UnknownFieldsAndTags => edit_json_value(resp, add_unknowns),
        FaultKind::CorruptByte => match &mut resp.body {
            Body::Bytes(b) if !b.is_empty() => {
                let i = b.len() / 2;
                b[i] ^= 0x5a;
            }
            Body::Blob {
                len, corrupt_at, ..
            } if *len > 0 => *corrupt_at = Some(*len / 2),
            _ => {}
        },
        FaultKind::HugeBody(n) => {
            if matches!(json_site(resp), Some(JsonSite::Body)) {
                edit_json_text(resp, |t| match t.strip_prefix('{') {
                    Some(rest) => {
                        let pad = n.saturating_sub(t.len() + 20);
                        let sep = if rest.trim_start().starts_with('}') {
                            ""
                        } else {
                            ","
                        };
                        format!("{{\"emu_padding\":\"{}\"{sep}{rest}", "x".repeat(pad))
                    }
                    None => format!("{t}{}", " ".repeat(n.saturating_sub(t.len()))),
                });
            } else {
                resp.body = Body::Blob {
                    blob: Blob::Pattern {
                        seed: 0xb16,
                        len: *n as u64,
                    },
                    start: 0,
                    len: *n as u64,
                    corrupt_at: None,
                };
                resp.headers
                    .retain(|(k, _)| !k.eq_ignore_ascii_case("Content-Range"));
            }
        }
        _ => {}
    }
}
