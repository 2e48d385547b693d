//! What goes on the wire, in one place: Stone JSON shapes of metadata, timestamps, header-safe
//! JSON (both directions), the exact error bodies (400 text, 401, 409, 429), and strict request
//! validation with Stone's own messages.
//!
//! Handlers build values with these helpers so that every route answers in exactly the same
//! dialect, and a wire detail (a header, an escaping rule, a message) is fixed in one spot.

use crate::content_hash::to_hex;
use crate::http::Response;
use crate::state::{Account, JEntry, Node, format_rev};
use serde::Serialize;
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------------
// Timestamps: "%Y-%m-%dT%H:%M:%SZ", UTC, no fractional seconds.

pub(crate) fn fmt_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parse a DropboxTimestamp; None if it is not exactly in the Stone format.
pub(crate) fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        s.get(r)
            .filter(|t| t.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|t| t.parse::<i64>().ok())
    };
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

// Howard Hinnant's civil-calendar algorithms (public domain).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// ---------------------------------------------------------------------------------------------
// Header-safe JSON (DROPBOX-API.md §1.3)

/// Escape U+007F and every non-ASCII character as `\uXXXX` (astral characters as surrogate
/// pairs), exactly as the official SDKs do. Non-ASCII can only occur inside JSON strings, so a
/// pass over the whole text is safe.
pub(crate) fn header_safe(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if (c as u32) < 0x7f {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// Decode a `Dropbox-API-Arg` value. Raw non-ASCII bytes are refused like the real service does.
pub(crate) fn decode_header_json(raw: &[u8]) -> Option<Value> {
    if !raw.is_ascii() {
        return None;
    }
    serde_json::from_slice(raw).ok()
}

pub(crate) fn to_header_json<T: Serialize>(v: &T) -> String {
    header_safe(&serde_json::to_string(v).unwrap_or_else(|_| "null".into()))
}

// ---------------------------------------------------------------------------------------------
// Metadata shapes (DROPBOX-API.md §2.1-2.4). Field order follows captured responses.

#[derive(Serialize)]
pub(crate) struct ExportInfoMd<'a> {
    pub export_as: &'a str,
    pub export_options: Vec<&'a str>,
}

#[derive(Serialize)]
pub(crate) struct FileMd<'a> {
    #[serde(rename = ".tag", skip_serializing_if = "Option::is_none")]
    pub tag: Option<&'static str>,
    pub name: &'a str,
    pub id: String,
    pub client_modified: String,
    pub server_modified: String,
    pub rev: String,
    pub size: u64,
    pub path_lower: &'a str,
    pub path_display: &'a str,
    pub is_downloadable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_info: Option<ExportInfoMd<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_explicit_shared_members: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct FolderMd<'a> {
    #[serde(rename = ".tag")]
    pub tag: &'static str,
    pub name: &'a str,
    pub id: String,
    pub path_lower: &'a str,
    pub path_display: &'a str,
}

#[derive(Serialize)]
pub(crate) struct DeletedMd<'a> {
    #[serde(rename = ".tag")]
    pub tag: &'static str,
    pub name: &'a str,
    pub path_lower: &'a str,
    pub path_display: &'a str,
}

#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum Md<'a> {
    File(FileMd<'a>),
    Folder(FolderMd<'a>),
    Deleted(DeletedMd<'a>),
}

/// FileMetadata of a file node; `tagged` = inside a polymorphic `Metadata` (lists, get_metadata),
/// untagged where the declared type is FileMetadata itself (download, temporary link).
pub(crate) fn file_md<'a>(
    acct: &Account,
    n: &'a Node,
    tagged: bool,
    explicit_members: bool,
) -> FileMd<'a> {
    let f = n.file.as_ref();
    FileMd {
        tag: tagged.then_some("file"),
        name: n.name(),
        id: acct.format_id(n.id),
        client_modified: fmt_time(f.map_or(0, |f| f.client_modified)),
        server_modified: fmt_time(f.map_or(0, |f| f.server_modified)),
        rev: format_rev(f.map_or(0, |f| f.rev)),
        size: n.size(),
        path_lower: &n.path_lower,
        path_display: &n.path_display,
        is_downloadable: n.is_downloadable(),
        export_info: f.and_then(|f| f.export.as_ref()).map(|e| ExportInfoMd {
            export_as: &e.export_as,
            export_options: vec![&e.export_as],
        }),
        has_explicit_shared_members: explicit_members.then_some(false),
        content_hash: f.and_then(|f| f.hash).map(|h| to_hex(&h)),
    }
}

pub(crate) fn node_md<'a>(acct: &Account, n: &'a Node, explicit_members: bool) -> Md<'a> {
    if n.is_folder() {
        Md::Folder(FolderMd {
            tag: "folder",
            name: n.name(),
            id: acct.format_id(n.id),
            path_lower: &n.path_lower,
            path_display: &n.path_display,
        })
    } else {
        Md::File(file_md(acct, n, true, explicit_members))
    }
}

pub(crate) fn entry_md<'a>(acct: &Account, e: &'a JEntry, explicit_members: bool) -> Md<'a> {
    match e {
        JEntry::Live(n) => node_md(acct, n, explicit_members),
        JEntry::Deleted {
            path_lower,
            path_display,
        } => Md::Deleted(DeletedMd {
            tag: "deleted",
            name: path_display.rsplit('/').next().unwrap_or(""),
            path_lower,
            path_display,
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Error bodies

/// `error_summary`: tags joined by '/', then '/' and a varying number of dots, as observed.
/// Clients must never parse it; the dots vary with the tags so nobody can rely on a fixed form.
pub(crate) fn summary(tags: &[&str]) -> String {
    let joined = tags.join("/");
    let dots = ".".repeat(joined.len() % 4);
    format!("{joined}/{dots}")
}

/// 409 route error: `{"error_summary", "error"}`.
pub(crate) fn route_error(tags: &[&str], error: Value) -> Response {
    Response::json_value(
        409,
        &json!({"error_summary": summary(tags), "error": error}),
    )
}

/// 409 `{".tag":"path","path":{".tag":<tag>}}` (LookupError under `path`).
pub(crate) fn lookup_error(tag: &str) -> Response {
    route_error(
        &["path", tag],
        json!({".tag": "path", "path": {".tag": tag}}),
    )
}

/// 409 for a void member of the route's error union.
pub(crate) fn tag_error(tag: &str) -> Response {
    route_error(&[tag], json!({".tag": tag}))
}

/// 401 AuthError, with the WWW-Authenticate header the real service sends.
pub(crate) fn auth_error(tag: &str, required_scope: Option<&str>) -> Response {
    let mut err = json!({".tag": tag});
    if let Some(s) = required_scope {
        err["required_scope"] = json!(s);
    }
    Response::json_value(
        401,
        &json!({"error_summary": summary(&[tag]), "error": err}),
    )
    .header("WWW-Authenticate", "Bearer realm=\"Dropbox-API\"")
}

/// 400 plain text: `Error in call to API function "<route>": <details>`.
pub(crate) fn bad_request(route: &str, details: &str) -> Response {
    Response::text(
        400,
        format!("Error in call to API function \"{route}\": {details}"),
    )
}

/// 429 with a JSON RateLimitError (`retry_after` present or not) and a Retry-After header.
pub(crate) fn rate_limited_json(reason: &str, retry_after: u64, include_field: bool) -> Response {
    let mut err = json!({"reason": {".tag": reason}});
    if include_field {
        err["retry_after"] = json!(retry_after);
    }
    let s = summary(&[reason]);
    let mut r = Response::json_value(429, &json!({"error_summary": s, "error": err}))
        .header("Retry-After", &retry_after.to_string());
    r.reason = Some(s);
    r
}

/// 429 with a plain-text body (clients must treat it as too_many_requests).
pub(crate) fn rate_limited_text(retry_after: u64) -> Response {
    Response::text(429, "Too Many Requests").header("Retry-After", &retry_after.to_string())
}

// ---------------------------------------------------------------------------------------------
// Strict request validation with Stone's messages (DROPBOX-API.md §1.6 rule 6)

/// Stone's `generic_type_name`.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "float",
        Value::Array(_) => "list",
        Value::String(_) => "string",
        Value::Null => "null",
        Value::Object(_) => "dict",
    }
}

/// Python's `str()` of a decoded JSON value (Stone formats values with `'%s'`).
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

/// Python's `repr()` of a decoded JSON value (Stone formats some values with `%r`).
fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("'{k}': {}", py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A Stone validation failure: the message, prefixed by the dotted field path when nested.
pub(crate) type ArgError = String;

/// A struct argument being decoded. Null fields count as absent, like Stone's decoder.
pub(crate) struct Args<'v> {
    map: &'v Map<String, Value>,
    at: String,
}

impl<'v> Args<'v> {
    /// The top-level argument must be an object.
    pub fn root(v: &'v Value) -> Result<Args<'v>, ArgError> {
        match v {
            Value::Object(map) => Ok(Args {
                map,
                at: String::new(),
            }),
            other => Err(format!("expected object, got {}", type_name(other))),
        }
    }

    fn err(&self, field: Option<&str>, msg: String) -> ArgError {
        let mut path = self.at.clone();
        if let Some(f) = field {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(f);
        }
        if path.is_empty() {
            msg
        } else {
            format!("{path}: {msg}")
        }
    }

    /// Reject any field not in `known` (the real service's strict decoding).
    pub fn only(&self, known: &[&str]) -> Result<(), ArgError> {
        for k in self.map.keys() {
            if !known.contains(&k.as_str()) {
                return Err(self.err(None, format!("unknown field '{k}'")));
            }
        }
        Ok(())
    }

    fn field(&self, name: &str) -> Option<&'v Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    pub fn has(&self, name: &str) -> bool {
        self.field(name).is_some()
    }

    pub fn opt_str(&self, name: &str) -> Result<Option<&'v str>, ArgError> {
        match self.field(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.err(
                Some(name),
                format!(
                    "'{}' expected to be a string, got {}",
                    py_str(other),
                    type_name(other)
                ),
            )),
        }
    }

    pub fn req_str(&self, name: &str) -> Result<&'v str, ArgError> {
        self.opt_str(name)?
            .ok_or_else(|| self.err(None, format!("missing required field '{name}'")))
    }

    /// A string that must satisfy `ok` (the regex `pattern` shown in the message).
    pub fn check_pattern(
        &self,
        name: &str,
        value: &str,
        pattern: &str,
        ok: bool,
    ) -> Result<(), ArgError> {
        if ok {
            Ok(())
        } else {
            Err(self.err(
                Some(name),
                format!("'{value}' did not match pattern '{pattern}'"),
            ))
        }
    }

    pub fn min_len(&self, name: &str, value: &str, min: usize) -> Result<(), ArgError> {
        let n = value.chars().count();
        if n < min {
            Err(self.err(
                Some(name),
                format!("'{value}' must be at least {min} characters, got {n}"),
            ))
        } else {
            Ok(())
        }
    }

    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, ArgError> {
        match self.field(name) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.err(
                Some(name),
                format!("{} is not a valid boolean", py_repr(other)),
            )),
        }
    }

    pub fn opt_u64(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, ArgError> {
        match self.field(name) {
            None => Ok(None),
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => {
                let v = n.as_i128().unwrap_or(0);
                if v < min as i128 || v > max as i128 {
                    Err(self.err(
                        Some(name),
                        format!("{v} is not within range [{min}, {max}]"),
                    ))
                } else {
                    Ok(Some(v as u64))
                }
            }
            Some(other) => Err(self.err(
                Some(name),
                format!("expected integer, got {}", type_name(other)),
            )),
        }
    }

    pub fn opt_obj(&self, name: &str) -> Result<Option<Args<'v>>, ArgError> {
        match self.field(name) {
            None => Ok(None),
            Some(Value::Object(map)) => {
                let at = if self.at.is_empty() {
                    name.to_string()
                } else {
                    format!("{}.{name}", self.at)
                };
                Ok(Some(Args { map, at }))
            }
            Some(other) => Err(self.err(
                Some(name),
                format!("expected object, got {}", type_name(other)),
            )),
        }
    }

    /// A union value: a bare string for a void member, or an object with `.tag`. Returns the tag,
    /// which must be one of `tags`.
    pub fn opt_union(&self, name: &str, tags: &[&str]) -> Result<Option<&'v str>, ArgError> {
        let tag = match self.field(name) {
            None => return Ok(None),
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Object(o)) => match o.get(".tag") {
                Some(Value::String(s)) => s.as_str(),
                _ => return Err(self.err(Some(name), "missing '.tag' key".into())),
            },
            Some(other) => {
                return Err(self.err(
                    Some(name),
                    format!("expected string or object, got {}", type_name(other)),
                ));
            }
        };
        if tags.contains(&tag) {
            Ok(Some(tag))
        } else {
            Err(self.err(Some(name), format!("unknown tag '{tag}'")))
        }
    }
}

// Path patterns of files.stone, and hand-written matchers equivalent to them.
pub(crate) const PATTERN_PATH_R_OR_ID: &str =
    "(/(.|[\\r\\n])*)?|id:.*|(ns:[0-9]+(/(.|[\\r\\n])*)?)";
pub(crate) const PATTERN_READ_PATH: &str =
    "(/(.|[\\r\\n])*|id:.*)|(rev:[0-9a-f]{9,})|(ns:[0-9]+(/(.|[\\r\\n])*)?)";

fn is_ns_path(p: &str) -> bool {
    p.strip_prefix("ns:").is_some_and(|rest| {
        let digits = rest.split('/').next().unwrap_or("");
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

pub(crate) fn matches_path_r_or_id(p: &str) -> bool {
    p.is_empty() || p.starts_with('/') || p.starts_with("id:") || is_ns_path(p)
}

pub(crate) fn matches_read_path(p: &str) -> bool {
    p.starts_with('/')
        || p.starts_with("id:")
        || is_ns_path(p)
        || p.strip_prefix("rev:").is_some_and(|r| {
            r.len() >= 9
                && r.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        assert_eq!(fmt_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_time(1_431_445_838), "2015-05-12T15:50:38Z");
        assert_eq!(parse_time("2015-05-12T15:50:38Z"), Some(1_431_445_838));
        assert_eq!(parse_time("2015-05-12T15:50:38.5Z"), None);
    }

    #[test]
    fn header_safe_escapes_like_the_sdks() {
        let s = serde_json::to_string(&json!({"path": "/some_üñîcødé_and_\u{7f}"})).unwrap();
        assert_eq!(
            header_safe(&s),
            r#"{"path":"/some_\u00fc\u00f1\u00eec\u00f8d\u00e9_and_\u007f"}"#
        );
        assert_eq!(header_safe("\"😀\""), r#""\ud83d\ude00""#);
        assert_eq!(decode_header_json(br#""\ud83d\ude00""#), Some(json!("😀")));
        assert_eq!(decode_header_json("\"é\"".as_bytes()), None);
    }
}
