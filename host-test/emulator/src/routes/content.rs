//! Content routes: `files/download`, `files/export`, `files/get_temporary_link`, and serving the
//! temporary links themselves (no auth, Range, 410 after four hours).

use super::{ApiError, ApiResult, Ctx, lookup_failure};
use crate::blob::Blob;
use crate::content_hash;
use crate::http::{Body, Request, Response};
use crate::shared::Shared;
use crate::state::{Lookup, Node, TempLink, parse_rev};
use crate::tokens::random_token;
use crate::wire::{
    Args, PATTERN_READ_PATH, file_md, lookup_error, matches_read_path, tag_error, to_header_json,
};
use serde_json::{Value, json};
use std::sync::Arc;

/// Temporary links live four hours (DROPBOX-API.md §5.3).
pub(crate) const TEMP_LINK_TTL: i64 = 4 * 3600;

/// Resolve a ReadPath to a downloadable file, or the route's error.
fn resolve_file(ctx: &Ctx, path: &str, rev: Option<&str>) -> Result<Arc<Node>, ApiError> {
    let st = ctx.shared.state();
    let found = match rev {
        Some(r) => match parse_rev(r).and_then(|r| st.node_by_rev(r)) {
            Some(n) => Lookup::Found(n.clone()),
            None => Lookup::NotFound,
        },
        None => st.resolve(&ctx.shared.account, path),
    };
    match found {
        Lookup::Found(n) if n.is_folder() => Err(lookup_error("not_file").into()),
        Lookup::Found(n) => Ok(n),
        Lookup::Root => Err(lookup_error("not_file").into()),
        other => Err(lookup_failure(&other)),
    }
}

/// Parse a single `Range: bytes=...` against a length. `None` = serve everything (no header, a
/// multi-range or unparseable value, which RFC 9110 lets a server ignore); `Some(None)` = 416.
fn parse_range(h: &str, total: u64) -> Option<Option<(u64, u64)>> {
    let spec = h.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || total == 0 {
            None
        } else {
            Some((total.saturating_sub(n), total - 1))
        }
    } else {
        let start: u64 = a.parse().ok()?;
        let end: u64 = if b.is_empty() {
            u64::MAX
        } else {
            b.parse().ok()?
        };
        if end < start {
            return None;
        }
        if start >= total {
            None
        } else {
            Some((start, end.min(total - 1)))
        }
    };
    Some(range)
}

/// Serve content with ETag / If-None-Match (304) and Range (206 / 416) handling.
fn serve_blob(req: &Request, blob: &Blob, etag: &str, headers: Vec<(String, String)>) -> Response {
    let mut resp = Response::new(200);
    resp.headers = headers;
    resp.set_header("ETag", etag);
    resp.set_header("Accept-Ranges", "bytes");
    if let Some(inm) = req.header_str("if-none-match")
        && inm.split(',').any(|t| t.trim() == etag || t.trim() == "*")
    {
        resp.status = 304;
        return resp;
    }
    let total = blob.len();
    let (start, len) = match req.header_str("range").and_then(|h| parse_range(h, total)) {
        None => (0, total),
        Some(Some((a, b))) => {
            resp.status = 206;
            resp.set_header("Content-Range", &format!("bytes {a}-{b}/{total}"));
            (a, b - a + 1)
        }
        Some(None) => {
            let mut r = Response::text(416, "Range Not Satisfiable");
            r.set_header("Content-Range", &format!("bytes */{total}"));
            return r;
        }
    };
    resp.body = Body::Blob {
        blob: blob.clone(),
        start,
        len,
        corrupt_at: None,
    };
    resp
}

fn file_blob(n: &Node) -> Blob {
    n.file
        .as_ref()
        .map_or(Blob::Bytes(Arc::from(&[][..])), |f| f.blob.clone())
}

fn etag_of(n: &Node) -> String {
    format!(
        "W/\"{}\"",
        crate::state::format_rev(n.file.as_ref().map_or(0, |f| f.rev))
    )
}

pub(crate) fn download(ctx: &Ctx, arg: &Value) -> ApiResult {
    let a = Args::root(arg)?;
    a.only(&["path", "rev"])?;
    let path = a.req_str("path")?;
    a.check_pattern("path", path, PATTERN_READ_PATH, matches_read_path(path))?;
    let rev = a.opt_str("rev")?;
    if let Some(r) = rev {
        a.min_len("rev", r, 9)?;
        a.check_pattern(
            "rev",
            r,
            "[0-9a-f]+",
            r.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        )?;
    }
    let node = resolve_file(ctx, path, rev)?;
    if !node.is_downloadable() {
        return Err(tag_error("unsupported_file").into());
    }
    let result = to_header_json(&file_md(&ctx.shared.account, &node, false, false));
    let headers = vec![
        ("Content-Type".into(), "application/octet-stream".into()),
        ("Dropbox-API-Result".into(), result),
    ];
    Ok(serve_blob(
        ctx.req,
        &file_blob(&node),
        &etag_of(&node),
        headers,
    ))
}

pub(crate) fn export(ctx: &Ctx, arg: &Value) -> ApiResult {
    let a = Args::root(arg)?;
    a.only(&["path", "export_format"])?;
    let path = a.req_str("path")?;
    a.check_pattern("path", path, PATTERN_READ_PATH, matches_read_path(path))?;
    let format = a.opt_str("export_format")?;
    let node = resolve_file(ctx, path, None)?;
    let Some(export) = node.file.as_ref().and_then(|f| f.export.clone()) else {
        return Err(tag_error("non_exportable").into());
    };
    if format.is_some_and(|f| f != export.export_as) {
        return Err(tag_error("invalid_export_format").into());
    }
    let blob = file_blob(&node);
    let data = blob.to_vec();
    let ext = match export.export_as.as_str() {
        "markdown" => "md",
        other => other,
    };
    let stem = node.name().rsplit_once('.').map_or(node.name(), |(s, _)| s);
    let result = json!({
        "export_metadata": {"name": format!("{stem}.{ext}"), "size": data.len(), "export_hash": content_hash::content_hash(&data)},
        "file_metadata": file_md(&ctx.shared.account, &node, false, false),
    });
    let headers = vec![
        ("Content-Type".into(), "application/octet-stream".into()),
        ("Dropbox-API-Result".into(), to_header_json(&result)),
    ];
    Ok(serve_blob(ctx.req, &blob, &etag_of(&node), headers))
}

pub(crate) fn get_temporary_link(ctx: &Ctx, arg: &Value) -> ApiResult {
    let a = Args::root(arg)?;
    a.only(&["path"])?;
    let path = a.req_str("path")?;
    a.check_pattern("path", path, PATTERN_READ_PATH, matches_read_path(path))?;
    let node = resolve_file(ctx, path, None)?;
    if !node.is_downloadable() {
        return Err(tag_error("unsupported_file").into());
    }
    let token = random_token(43);
    let now = ctx.shared.now();
    ctx.shared.state().temp_links.insert(
        token.clone(),
        TempLink {
            node: node.clone(),
            created: now,
        },
    );
    let link = format!(
        "{}/tl/{token}/{}",
        ctx.shared.base_url,
        crate::state::percent_encode(node.name())
    );
    Ok(Response::json_value(
        200,
        &json!({"metadata": file_md(&ctx.shared.account, &node, false, false), "link": link}),
    ))
}

/// MIME type from the extension, as the link's Content-Type is "derived from the file's MIME type".
fn mime_of(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "md" | "csv" | "log" => "text/plain; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "mp4" => "video/mp4",
        "mp3" => "audio/mpeg",
        "zip" => "application/zip",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        _ => "application/octet-stream",
    }
}

/// GET `/tl/<token>/<name>`: no Authorization needed; 410 once expired or the file is gone.
pub(crate) fn serve_temporary_link(shared: &Shared, req: &Request) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        return Response::text(405, "Method Not Allowed").header("Allow", "GET, HEAD");
    }
    let token = req
        .path
        .trim_start_matches("/tl/")
        .split('/')
        .next()
        .unwrap_or("");
    let (node, created, alive) = {
        let st = shared.state();
        let Some(l) = st.temp_links.get(token) else {
            return Response::text(404, "Not Found");
        };
        let alive = st.node_by_id(l.node.id).is_some();
        (l.node.clone(), l.created, alive)
    };
    if shared.now() - created >= TEMP_LINK_TTL || !alive {
        return Response::text(410, "Gone");
    }
    let headers = vec![("Content-Type".to_string(), mime_of(node.name()).to_string())];
    serve_blob(req, &file_blob(&node), &etag_of(&node), headers)
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Some(Some((90, 99))));
        assert_eq!(parse_range("bytes=-1000", 100), Some(Some((0, 99))));
        assert_eq!(parse_range("bytes=95-200", 100), Some(Some((95, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Some(None));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
