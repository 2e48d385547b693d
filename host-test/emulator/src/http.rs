//! The values the transport and the handlers exchange: a parsed [`Request`], and the
//! [`Response`] with its [`Body`] (bytes, or a range of stored or generated content streamed out).
//! Reading and writing them on a socket is `server`'s job.

use crate::blob::Blob;
use serde::Serialize;
use serde_json::Value;

pub(crate) struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Header names lower-cased; values kept as raw bytes (non-ASCII must be detectable).
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// Whether the connection stays open after the answer (HTTP/1.0 and `Connection: close`).
    pub keep_alive: bool,
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
    pub fn len(&self) -> u64 {
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
