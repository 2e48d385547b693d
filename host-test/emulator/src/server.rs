//! HTTP/1.1 transport: a loopback `TcpListener`, one thread per connection, keep-alive,
//! Content-Length (and chunked) request bodies, Content-Length responses.
//!
//! Hand-rolled rather than a framework because tests need full control of the wire: dropping a
//! connection before answering, sending half a body, odd reason phrases, raw non-ASCII header
//! bytes. What a request goes through once read (counting, latency, faults, the route) is
//! `router`'s job.

use crate::config::EmulatorConfig;
use crate::error::EmulatorError;
use crate::http::{Body, Request, Response};
use crate::router::{Outcome, dispatch};
use crate::shared::Shared;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

const MAX_HEADER_BYTES: u64 = 64 * 1024;
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Lifecycle

pub(crate) fn start(cfg: EmulatorConfig) -> Result<Arc<Shared>, EmulatorError> {
    let listen = cfg
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let listener = TcpListener::bind(listen)?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(cfg, addr));
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
