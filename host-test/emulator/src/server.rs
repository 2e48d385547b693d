//! HTTP/1.1 transport and routing: a loopback `TcpListener`, one thread per connection,
//! keep-alive, Content-Length (and chunked) request bodies, Content-Length responses.
//!
//! Hand-rolled rather than a framework because tests need full control of the wire: dropping a
//! connection before answering, sending half a body, odd reason phrases, raw non-ASCII header
//! bytes. This module also runs everything every API route shares: request counting, latency,
//! fault injection, the call-style rules (Content-Type, argument location), and the auth check.

use crate::blob::Blob;
use crate::faults::{self, FaultKind};
use crate::routes::{content, files, oauth, sharing, users};
use crate::wire::{bad_request, decode_header_json, type_name};
use crate::{EmulatorConfig, EmulatorError, Shared, auth, control, state};
use serde::Serialize;
use serde_json::Value;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

const MAX_HEADER_BYTES: u64 = 64 * 1024;
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Requests and responses

pub(crate) struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Header names lower-cased; values kept as raw bytes (non-ASCII must be detectable).
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    keep_alive: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }
    /// A header as text, if it is valid UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) enum Body {
    Bytes(Vec<u8>),
    /// Streamed from stored or generated content; `corrupt_at` flips one byte (fault injection).
    Blob {
        blob: Blob,
        start: u64,
        len: u64,
        corrupt_at: Option<u64>,
    },
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::Blob { len, .. } => *len,
        }
    }
}

pub(crate) struct Response {
    pub status: u16,
    /// Reason phrase override (429 carries the error summary there).
    pub reason: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            reason: None,
            headers: Vec::new(),
            body: Body::Bytes(Vec::new()),
        }
    }

    /// JSON with `Content-Type: application/json` exactly (the Python SDK asserts it).
    pub fn json_bytes(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            reason: None,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: Body::Bytes(body),
        }
    }

    pub fn json<T: Serialize>(status: u16, v: &T) -> Response {
        Self::json_bytes(
            status,
            serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec()),
        )
    }

    pub fn json_value(status: u16, v: &Value) -> Response {
        Self::json(status, v)
    }

    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            reason: None,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: Body::Bytes(body.into().into_bytes()),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Response {
        self.set_header(name, value);
        self
    }

    pub fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
    }

    pub fn get_header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_json(&self) -> bool {
        self.get_header("Content-Type") == Some("application/json")
    }
}

/// How an API route fails before or inside its handler.
pub(crate) enum ApiError {
    /// A Stone validation message about the argument (prefixed by where the argument came from).
    Arg(String),
    /// A complete response (409 route errors and the like).
    Resp(Response),
}

impl From<Response> for ApiError {
    fn from(r: Response) -> ApiError {
        ApiError::Resp(r)
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// What a handler sees.
pub(crate) struct Ctx<'a> {
    pub shared: &'a Shared,
    pub req: &'a Request,
    /// The caller's access token (user routes).
    pub token: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// The API route table (DROPBOX-API.md §1.2, §1.8, §7.1)

#[derive(Clone, Copy, PartialEq)]
enum Style {
    Rpc,
    /// RPC with a Void argument: no body, or JSON null.
    RpcVoid,
    /// Argument in Dropbox-API-Arg (or ?arg=), result in Dropbox-API-Result, bytes in the body.
    Download,
}

#[derive(Clone, Copy)]
enum AuthKind {
    User(&'static str),
    UserAnyScope,
    NoAuth,
}

struct ApiRoute {
    name: &'static str,
    style: Style,
    auth: AuthKind,
    handler: fn(&Ctx, &Value) -> ApiResult,
}

const ROUTES: &[ApiRoute] = &[
    ApiRoute {
        name: "users/get_current_account",
        style: Style::RpcVoid,
        auth: AuthKind::User("account_info.read"),
        handler: users::get_current_account,
    },
    ApiRoute {
        name: "users/get_space_usage",
        style: Style::RpcVoid,
        auth: AuthKind::User("account_info.read"),
        handler: users::get_space_usage,
    },
    ApiRoute {
        name: "files/list_folder",
        style: Style::Rpc,
        auth: AuthKind::User("files.metadata.read"),
        handler: files::list_folder,
    },
    ApiRoute {
        name: "files/list_folder/continue",
        style: Style::Rpc,
        auth: AuthKind::User("files.metadata.read"),
        handler: files::list_folder_continue,
    },
    ApiRoute {
        name: "files/list_folder/get_latest_cursor",
        style: Style::Rpc,
        auth: AuthKind::User("files.metadata.read"),
        handler: files::get_latest_cursor,
    },
    ApiRoute {
        name: "files/list_folder/longpoll",
        style: Style::Rpc,
        auth: AuthKind::NoAuth,
        handler: files::longpoll,
    },
    ApiRoute {
        name: "files/get_metadata",
        style: Style::Rpc,
        auth: AuthKind::User("files.metadata.read"),
        handler: files::get_metadata,
    },
    ApiRoute {
        name: "files/download",
        style: Style::Download,
        auth: AuthKind::User("files.content.read"),
        handler: content::download,
    },
    ApiRoute {
        name: "files/export",
        style: Style::Download,
        auth: AuthKind::User("files.content.read"),
        handler: content::export,
    },
    ApiRoute {
        name: "files/get_temporary_link",
        style: Style::Rpc,
        auth: AuthKind::User("files.content.read"),
        handler: content::get_temporary_link,
    },
    ApiRoute {
        name: "sharing/list_shared_links",
        style: Style::Rpc,
        auth: AuthKind::User("sharing.read"),
        handler: sharing::list_shared_links,
    },
    ApiRoute {
        name: "sharing/create_shared_link_with_settings",
        style: Style::Rpc,
        auth: AuthKind::User("sharing.write"),
        handler: sharing::create_shared_link_with_settings,
    },
    ApiRoute {
        name: "auth/token/revoke",
        style: Style::RpcVoid,
        auth: AuthKind::UserAnyScope,
        handler: oauth::revoke,
    },
];

/// The name a request is counted and fault-matched under.
pub(crate) fn route_name(path: &str) -> String {
    if let Some(r) = path.strip_prefix("/2/") {
        return r.to_string();
    }
    match path {
        "/oauth2/token" => "oauth2/token".into(),
        "/oauth2/authorize" | "/oauth2/authorize/decide" => "oauth2/authorize".into(),
        p if p.starts_with("/tl/") => "temporary_link".into(),
        p => p.trim_start_matches('/').to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

pub(crate) fn start(cfg: EmulatorConfig) -> Result<Arc<Shared>, EmulatorError> {
    let listen = cfg
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let listener = TcpListener::bind(listen)?;
    let addr = listener.local_addr()?;
    let account = state::Account::new(cfg.seed);
    let snap_cap = cfg.snapshot_capacity;
    let shared = Arc::new(Shared {
        base_url: format!("http://{addr}"),
        addr,
        account,
        state: Mutex::new(state::State::new(snap_cap)),
        changed: Condvar::new(),
        tokens: Mutex::new(auth::Tokens::default()),
        faults: faults::Faults::default(),
        counts: Mutex::new(Default::default()),
        latency_us: AtomicU64::new(0),
        handler_ns: AtomicU64::new(0),
        clock_offset: AtomicI64::new(0),
        stopping: AtomicBool::new(false),
        stopped: (Mutex::new(false), Condvar::new()),
        conns: Mutex::new(Default::default()),
        seq: AtomicU64::new(1),
        cfg,
    });
    let sh = shared.clone();
    std::thread::Builder::new()
        .name("emu-accept".into())
        .spawn(move || accept_loop(listener, sh))?;
    Ok(shared)
}

pub(crate) fn stop(shared: &Shared) {
    if shared.stopping.swap(true, Ordering::SeqCst) {
        return;
    }
    // Wake the accept loop, close every open connection, wake every longpoll.
    let _ = TcpStream::connect_timeout(&shared.addr, Duration::from_millis(500));
    for (_, c) in shared
        .conns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain()
    {
        let _ = c.shutdown(Shutdown::Both);
    }
    {
        let _guard = shared.state();
        shared.changed.notify_all();
    }
    let (lock, cv) = &shared.stopped;
    *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
    cv.notify_all();
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let id = shared.next_seq();
        if let Ok(c) = stream.try_clone() {
            shared
                .conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, c);
        }
        let sh = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("emu-conn".into())
            .spawn(move || {
                serve_connection(&sh, stream);
                sh.conns
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
            });
        if spawned.is_err() {
            shared
                .conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connection handling

enum ReadError {
    /// Answer with this status and close.
    Reject(u16, &'static str),
    Closed,
}

fn read_line(r: &mut BufReader<TcpStream>, budget: &mut u64) -> Result<Vec<u8>, ReadError> {
    let mut line = Vec::new();
    let n = (&mut *r)
        .take(*budget + 1)
        .read_until(b'\n', &mut line)
        .map_err(|_| ReadError::Closed)?;
    if n == 0 {
        return Err(ReadError::Closed);
    }
    if n as u64 > *budget {
        return Err(ReadError::Reject(431, "Request Header Fields Too Large"));
    }
    *budget -= n as u64;
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(line)
}

fn read_request(r: &mut BufReader<TcpStream>, w: &mut TcpStream) -> Result<Request, ReadError> {
    let mut budget = MAX_HEADER_BYTES;
    let mut line = read_line(r, &mut budget)?;
    // Tolerate stray blank lines between requests (RFC 9112 2.2).
    while line.is_empty() {
        line = read_line(r, &mut budget)?;
    }
    let line = String::from_utf8(line).map_err(|_| ReadError::Reject(400, "Bad Request"))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Reject(400, "Bad Request"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(ReadError::Reject(505, "HTTP Version Not Supported"));
    }
    let mut headers = Vec::new();
    loop {
        let h = read_line(r, &mut budget)?;
        if h.is_empty() {
            break;
        }
        let Some(colon) = h.iter().position(|&b| b == b':') else {
            return Err(ReadError::Reject(400, "Bad Request"));
        };
        let name = String::from_utf8_lossy(&h[..colon])
            .trim()
            .to_ascii_lowercase();
        headers.push((name, h[colon + 1..].trim_ascii().to_vec()));
    }
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| String::from_utf8_lossy(v).to_ascii_lowercase())
    };
    let connection = get("connection").unwrap_or_default();
    let keep_alive = if version == "HTTP/1.0" {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    };
    if get("expect").is_some_and(|e| e == "100-continue") {
        let _ = w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let body = if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        read_chunked(r)?
    } else if let Some(cl) = get("content-length") {
        let n: usize = cl
            .trim()
            .parse()
            .map_err(|_| ReadError::Reject(400, "Bad Request"))?;
        if n > MAX_BODY_BYTES {
            return Err(ReadError::Reject(413, "Payload Too Large"));
        }
        let mut body = vec![0u8; n];
        r.read_exact(&mut body).map_err(|_| ReadError::Closed)?;
        body
    } else {
        Vec::new()
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (
            p.to_string(),
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect(),
        ),
        None => (target.to_string(), Vec::new()),
    };
    Ok(Request {
        method: method.to_string(),
        path,
        query,
        headers,
        body,
        keep_alive,
    })
}

fn read_chunked(r: &mut BufReader<TcpStream>) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let mut budget = 1024;
        let line = read_line(r, &mut budget)?;
        let size_hex = String::from_utf8_lossy(&line);
        let size_hex = size_hex.split(';').next().unwrap_or("").trim();
        let n = usize::from_str_radix(size_hex, 16)
            .map_err(|_| ReadError::Reject(400, "Bad Request"))?;
        if body.len() + n > MAX_BODY_BYTES {
            return Err(ReadError::Reject(413, "Payload Too Large"));
        }
        if n == 0 {
            // Trailers, up to the blank line.
            let mut budget = MAX_HEADER_BYTES;
            while !read_line(r, &mut budget)?.is_empty() {}
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + n, 0);
        r.read_exact(&mut body[start..])
            .map_err(|_| ReadError::Closed)?;
        let mut budget = 4;
        read_line(r, &mut budget)?;
    }
}

fn serve_connection(shared: &Shared, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    while !shared.stopping.load(Ordering::SeqCst) {
        let req = match read_request(&mut reader, &mut writer) {
            Ok(r) => r,
            Err(ReadError::Closed) => return,
            Err(ReadError::Reject(status, msg)) => {
                let resp = Response::text(status, msg);
                let _ = write_response(shared, &mut writer, resp, false, false, false);
                return;
            }
        };
        let head = req.method == "HEAD";
        match dispatch(shared, &req) {
            Outcome::Drop => {
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            Outcome::Reply {
                resp,
                delay,
                cut_body,
                then_stop,
            } => {
                if !delay.is_zero() {
                    std::thread::sleep(delay);
                }
                let ok = write_response(
                    shared,
                    &mut writer,
                    resp,
                    req.keep_alive && !then_stop,
                    head,
                    cut_body,
                )
                .is_ok();
                if then_stop {
                    stop(shared);
                    return;
                }
                if !ok || !req.keep_alive || cut_body {
                    let _ = writer.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        413 => "Payload Too Large",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

/// Write one response. `cut_body` sends the headers and half the body, then the caller closes.
fn write_response(
    shared: &Shared,
    w: &mut TcpStream,
    resp: Response,
    keep_alive: bool,
    head: bool,
    cut_body: bool,
) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(64 * 1024, &mut *w);
    let reason = resp
        .reason
        .as_deref()
        .unwrap_or_else(|| reason_phrase(resp.status));
    write!(out, "HTTP/1.1 {} {}\r\n", resp.status, reason)?;
    for (k, v) in &resp.headers {
        write!(out, "{k}: {v}\r\n")?;
    }
    write!(out, "X-Dropbox-Request-Id: {}\r\n", request_id(shared))?;
    let no_body = resp.status == 304 || resp.status == 204 || resp.status < 200;
    if !no_body {
        write!(out, "Content-Length: {}\r\n", resp.body.len())?;
    }
    if !keep_alive {
        out.write_all(b"Connection: close\r\n")?;
    }
    out.write_all(b"\r\n")?;
    if !head && !no_body {
        let total = resp.body.len();
        let send = if cut_body { total / 2 } else { total };
        match &resp.body {
            Body::Bytes(b) => out.write_all(&b[..send as usize])?,
            Body::Blob {
                blob,
                start,
                corrupt_at,
                ..
            } => blob.write_range(&mut out, *start, send, *corrupt_at)?,
        }
    }
    out.flush()
}

fn request_id(shared: &Shared) -> String {
    let n = shared.next_seq();
    let mixed = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ shared.account.instance;
    format!("{mixed:016x}{:016x}", n)
}

// ---------------------------------------------------------------------------------------------
// Dispatch: counting, latency, faults, then the route

enum Outcome {
    /// Close the connection without any response.
    Drop,
    Reply {
        resp: Response,
        delay: Duration,
        cut_body: bool,
        then_stop: bool,
    },
}

fn dispatch(shared: &Shared, req: &Request) -> Outcome {
    if req.path.starts_with("/__emulator/") {
        let then_stop = req.method == "POST" && req.path == "/__emulator/stop";
        return Outcome::Reply {
            resp: control::handle(shared, req),
            delay: Duration::ZERO,
            cut_body: false,
            then_stop,
        };
    }
    let name = route_name(&req.path);
    *shared
        .counts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(name.clone())
        .or_insert(0) += 1;
    let latency = Duration::from_micros(shared.latency_us.load(Ordering::Relaxed));
    if !latency.is_zero() {
        std::thread::sleep(latency);
    }
    let fault = shared.faults.take(&name);
    if let Some(FaultKind::DropConnection) = fault {
        return Outcome::Drop;
    }
    let early = match &fault {
        Some(FaultKind::NoProgress) => Some(faults::no_progress(&req.body)),
        Some(kind) => faults::early_response(kind),
        None => None,
    };
    let mut resp = match early {
        Some(r) => r,
        None => {
            // A bug in a handler must not kill the connection thread silently.
            let started = std::time::Instant::now();
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                handle(shared, req, &name)
            }));
            shared
                .handler_ns
                .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            caught.unwrap_or_else(|_| Response::text(500, "emulator handler panicked"))
        }
    };
    let (mut delay, mut cut_body) = (Duration::ZERO, false);
    if let Some(kind) = &fault {
        match kind {
            FaultKind::Slow(d) => delay = *d,
            FaultKind::DropMidBody => cut_body = true,
            other => faults::transform(other, &mut resp),
        }
    }
    Outcome::Reply {
        resp,
        delay,
        cut_body,
        then_stop: false,
    }
}

fn handle(shared: &Shared, req: &Request, name: &str) -> Response {
    match req.path.as_str() {
        "/oauth2/authorize" => return oauth::authorize(shared, req),
        "/oauth2/authorize/decide" => return oauth::decide(shared, req),
        "/oauth2/token" => return oauth::token(shared, req),
        p if p.starts_with("/tl/") => return content::serve_temporary_link(shared, req),
        _ => {}
    }
    match ROUTES
        .iter()
        .find(|r| req.path.starts_with("/2/") && r.name == name)
    {
        Some(route) => call_api(shared, req, route),
        None => Response::text(404, format!("Unknown API function: \"{name}\"")),
    }
}

/// Normalise a Content-Type for comparison: lower case, no blanks around parameters.
fn norm_ct(ct: &str) -> String {
    ct.split(';')
        .map(|p| p.trim().to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(";")
}

const RPC_TYPES: [&str; 3] = [
    "application/json",
    "application/json;charset=utf-8",
    "text/plain;charset=dropbox-cors-hack",
];
const RPC_TYPES_MSG: &str = "\"application/json\", \"application/json; charset=utf-8\", \"text/plain; charset=dropbox-cors-hack\"";
const DOWNLOAD_TYPES: [&str; 5] = [
    "",
    "text/plain",
    "text/plain;charset=utf-8",
    "application/octet-stream",
    "application/octet-stream;charset=utf-8",
];
const DOWNLOAD_TYPES_MSG: &str = "\"text/plain\", \"text/plain; charset=utf-8\", \"application/octet-stream\", \"application/octet-stream; charset=utf-8\"";

fn call_api(shared: &Shared, req: &Request, route: &ApiRoute) -> Response {
    let name = route.name;
    let allowed = match route.style {
        Style::Download => req.method == "POST" || req.method == "GET",
        _ => req.method == "POST",
    };
    if !allowed {
        return Response::text(
            405,
            format!("Error in call to API function \"{name}\": Method not allowed; use POST."),
        )
        .header("Allow", "POST");
    }
    // Call-style rules for the Content-Type header.
    let ct_raw = req
        .header("content-type")
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let ct = ct_raw.as_deref().map(norm_ct);
    let ct_ok = match (route.style, ct.as_deref()) {
        (Style::RpcVoid, None) => true,
        (Style::Rpc | Style::RpcVoid, Some(c)) => RPC_TYPES.contains(&c),
        (Style::Rpc, None) => false,
        (Style::Download, None) => true,
        (Style::Download, Some(c)) => DOWNLOAD_TYPES.contains(&c),
    };
    if !ct_ok {
        let expecting = if route.style == Style::Download {
            DOWNLOAD_TYPES_MSG
        } else {
            RPC_TYPES_MSG
        };
        let shown = ct_raw.unwrap_or_default();
        return bad_request(
            name,
            &format!(
                "Bad HTTP \"Content-Type\" header: \"{shown}\".  Expecting one of {expecting}."
            ),
        );
    }
    // Auth.
    let token = match route.auth {
        AuthKind::NoAuth => {
            if req.header("authorization").is_some() {
                return bad_request(
                    name,
                    "Your request includes an Authorization header, but this function does not use it.",
                );
            }
            None
        }
        AuthKind::User(scope) => match auth::check_bearer(shared, req, name, Some(scope)) {
            Ok(t) => Some(t),
            Err(resp) => return resp,
        },
        AuthKind::UserAnyScope => match auth::check_bearer(shared, req, name, None) {
            Ok(t) => Some(t),
            Err(resp) => return resp,
        },
    };
    // The argument, from where the call style puts it.
    let (arg, prefix) = match route.style {
        Style::Rpc => match serde_json::from_slice::<Value>(&req.body) {
            Ok(v) => (v, "request body: "),
            Err(_) => return bad_request(name, "request body: could not decode input as JSON"),
        },
        Style::RpcVoid => {
            if req.body.is_empty() && ct.is_none() {
                (Value::Null, "request body: ")
            } else {
                match serde_json::from_slice::<Value>(&req.body) {
                    Ok(Value::Null) => (Value::Null, "request body: "),
                    Ok(other) => {
                        return bad_request(
                            name,
                            &format!("request body: expected null, got {}", type_name(&other)),
                        );
                    }
                    Err(_) => {
                        return bad_request(name, "request body: could not decode input as JSON");
                    }
                }
            }
        }
        Style::Download => {
            if let Some(h) = req.header("dropbox-api-arg") {
                match decode_header_json(h) {
                    Some(v) => (v, "HTTP header \"Dropbox-API-Arg\": "),
                    None => {
                        return bad_request(
                            name,
                            "HTTP header \"Dropbox-API-Arg\": could not decode input as JSON",
                        );
                    }
                }
            } else if let Some(q) = req.query("arg") {
                match serde_json::from_str::<Value>(q) {
                    Ok(v) => (v, "URL parameter \"arg\": "),
                    Err(_) => {
                        return bad_request(
                            name,
                            "URL parameter \"arg\": could not decode input as JSON",
                        );
                    }
                }
            } else {
                return bad_request(
                    name,
                    "Must provide HTTP header \"Dropbox-API-Arg\" or URL parameter \"arg\".",
                );
            }
        }
    };
    let ctx = Ctx { shared, req, token };
    match (route.handler)(&ctx, &arg) {
        Ok(r) => r,
        Err(ApiError::Arg(msg)) => bad_request(name, &format!("{prefix}{msg}")),
        Err(ApiError::Resp(r)) => r,
    }
}
