//! A small HTTP control interface under `/__emulator/...`, so the standalone emulator (the CLI)
//! can be driven by scripts and other processes exactly as tests drive it in-process.
//!
//! All routes take and return JSON; errors are `{"error": "..."}` with 400/404/409. Control
//! requests are never counted, delayed or faulted.
//!
//! | route | body | answer |
//! |---|---|---|
//! | POST create_file, modify_file | `{"path", "text"}` or `{"path", "base64"}` or `{"path", "pattern": {"seed", "len"}}` | EntryInfo |
//! | POST create_folder, delete, share, unshare | `{"path"}` | EntryInfo / null / `{"url"}` / null |
//! | POST move | `{"from", "to"}` | EntryInfo |
//! | POST create_non_downloadable | `{"path", "export_as", "text"}` | EntryInfo |
//! | POST populate | `{"files", "seed"}` | null |
//! | POST fault | a `Fault` (see `FaultKind` for the JSON form) | null |
//! | POST clear_faults, invalidate_cursors, expire_tokens, revoke_all, reset_counters, stop | - | null |
//! | POST latency | `{"ms"}` | null |
//! | POST advance_clock | `{"secs"}` | null |
//! | POST issue_tokens | `{"scopes": [...], "expires_in"}` | TokenPair |
//! | GET counters, truth, token | - | map / list / `{"access_token"}` |

use crate::auth;
use crate::error::EmulatorError;
use crate::faults::Fault;
use crate::http::{Request, Response};
use crate::model::Content;
use crate::shared::Shared;
use base64::Engine;
use serde_json::{Value, json};
use std::time::Duration;

fn ok<T: serde::Serialize>(v: &T) -> Response {
    Response::json(200, v)
}

fn fail(status: u16, msg: &str) -> Response {
    Response::json_value(status, &json!({"error": msg}))
}

fn from_error(e: EmulatorError) -> Response {
    let status = match e {
        EmulatorError::NotFound(_) => 404,
        EmulatorError::AlreadyExists(_) => 409,
        _ => 400,
    };
    fail(status, &e.to_string())
}

fn str_field<'a>(v: &'a Value, k: &str) -> Result<&'a str, Response> {
    v.get(k)
        .and_then(Value::as_str)
        .ok_or_else(|| fail(400, &format!("missing string field '{k}'")))
}

fn u64_field(v: &Value, k: &str) -> Result<u64, Response> {
    v.get(k)
        .and_then(Value::as_u64)
        .ok_or_else(|| fail(400, &format!("missing integer field '{k}'")))
}

fn content_of(v: &Value) -> Result<Content, Response> {
    if let Some(t) = v.get("text").and_then(Value::as_str) {
        return Ok(Content::Bytes(t.as_bytes().to_vec()));
    }
    if let Some(b) = v.get("base64").and_then(Value::as_str) {
        return base64::engine::general_purpose::STANDARD
            .decode(b)
            .map(Content::Bytes)
            .map_err(|_| fail(400, "invalid base64"));
    }
    if let Some(p) = v.get("pattern") {
        return Ok(Content::Pattern {
            seed: u64_field(p, "seed")?,
            len: u64_field(p, "len")?,
        });
    }
    Err(fail(
        400,
        "content must be given as \"text\", \"base64\" or \"pattern\"",
    ))
}

pub(crate) fn handle(shared: &Shared, req: &Request) -> Response {
    let op = req.path.trim_start_matches("/__emulator/");
    let body: Value = if req.body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => return fail(400, &format!("invalid JSON: {e}")),
        }
    };
    match run(shared, op, &req.method, &body) {
        Ok(r) | Err(r) => r,
    }
}

fn run(shared: &Shared, op: &str, method: &str, b: &Value) -> Result<Response, Response> {
    let done = || ok(&Value::Null);
    Ok(match (method, op) {
        ("POST", "create_file") => shared
            .create_file(str_field(b, "path")?, content_of(b)?)
            .map(|e| ok(&e))
            .unwrap_or_else(from_error),
        ("POST", "modify_file") => shared
            .modify_file(str_field(b, "path")?, content_of(b)?)
            .map(|e| ok(&e))
            .unwrap_or_else(from_error),
        ("POST", "create_folder") => shared
            .create_folder(str_field(b, "path")?)
            .map(|e| ok(&e))
            .unwrap_or_else(from_error),
        ("POST", "move") => shared
            .move_path(str_field(b, "from")?, str_field(b, "to")?)
            .map(|e| ok(&e))
            .unwrap_or_else(from_error),
        ("POST", "delete") => shared
            .delete(str_field(b, "path")?)
            .map(|_| done())
            .unwrap_or_else(from_error),
        ("POST", "create_non_downloadable") => {
            let text = str_field(b, "text")?.as_bytes().to_vec();
            shared
                .create_non_downloadable(str_field(b, "path")?, str_field(b, "export_as")?, text)
                .map(|e| ok(&e))
                .unwrap_or_else(from_error)
        }
        ("POST", "share") => shared
            .share(str_field(b, "path")?)
            .map(|url| ok(&json!({"url": url})))
            .unwrap_or_else(from_error),
        ("POST", "unshare") => shared
            .unshare(str_field(b, "path")?)
            .map(|_| done())
            .unwrap_or_else(from_error),
        ("POST", "populate") => {
            let files = u64_field(b, "files")? as usize;
            crate::populate::populate(
                shared,
                files,
                b.get("seed").and_then(Value::as_u64).unwrap_or(1),
            )
            .map(|_| done())
            .unwrap_or_else(from_error)
        }
        ("POST", "fault") => {
            let fault: Fault = serde_json::from_value(b.clone())
                .map_err(|e| fail(400, &format!("invalid fault: {e}")))?;
            shared.faults.inject(fault);
            done()
        }
        ("POST", "clear_faults") => {
            shared.faults.clear();
            done()
        }
        ("POST", "latency") => {
            shared.set_latency(Duration::from_millis(u64_field(b, "ms")?));
            done()
        }
        ("POST", "invalidate_cursors") => {
            shared.invalidate_cursors();
            done()
        }
        ("POST", "expire_tokens") => {
            shared.expire_access_tokens();
            done()
        }
        ("POST", "revoke_all") => {
            shared.revoke_all();
            done()
        }
        ("POST", "advance_clock") => {
            shared.advance_clock(Duration::from_secs(u64_field(b, "secs")?));
            done()
        }
        ("POST", "issue_tokens") => {
            let scopes: Vec<String> = match b.get("scopes") {
                Some(v) => serde_json::from_value(v.clone())
                    .map_err(|_| fail(400, "scopes must be a list of strings"))?,
                None => auth::ALL_SCOPES.iter().map(|s| s.to_string()).collect(),
            };
            let refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
            let expires_in = b
                .get("expires_in")
                .and_then(Value::as_u64)
                .unwrap_or(shared.cfg.token_expires_in);
            ok(&auth::issue_pair(shared, &refs, expires_in))
        }
        ("GET", "token") => ok(&json!({"access_token": auth::default_access_token(shared)})),
        ("GET", "counters") => ok(&shared.request_counts()),
        ("POST", "reset_counters") => {
            shared.reset_counts();
            done()
        }
        ("GET", "truth") => ok(&shared.truth()),
        // The server stops after writing this answer (see `router::dispatch`).
        ("POST", "stop") => done(),
        _ => fail(
            404,
            &format!("unknown control route {method} /__emulator/{op}"),
        ),
    })
}
