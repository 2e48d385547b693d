//! The notes service's HTTP API, as the connector uses it: typed pages, the account, and one
//! authenticated GET with retries.

use std::time::Duration;

use connector_sdk::ConnectorError;
use connector_sdk::Ports;
use connector_sdk::model::User;
use connector_sdk::ports::{HttpError, HttpRequest, HttpResponse, Method};
use serde::Deserialize;

pub(crate) const API: &str = "https://notes.example.test/v1";
/// Retries of one request after a 5xx, a 429 or a dropped connection.
const MAX_RETRIES: u32 = 3;
/// The longest wait a `Retry-After` may ask for before the connector gives up (rate-limited).
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
pub(crate) struct Account {
    pub(crate) id: String,
    pub(crate) email: String,
    pub(crate) name: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Page {
    pub(crate) notes: Vec<Note>,
    pub(crate) next: u64,
    pub(crate) has_more: bool,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Note {
    pub(crate) id: String,
    pub(crate) title: String,
    pub(crate) size: u64,
    pub(crate) deleted: bool,
    /// Changes with the content only.
    pub(crate) etag: String,
}

/// Requests made and repeated, for the summary.
#[derive(Default)]
pub(crate) struct Calls {
    pub(crate) made: u32,
    pub(crate) retries: u32,
}

/// Which page of notes to ask for.
pub(crate) enum Query<'a> {
    /// The full listing, after this id (from the start when none).
    After(Option<&'a str>),
    /// The change feed after this sequence.
    Since(u64),
}

/// One page; none when the service answered 410 (the position is too old).
pub(crate) fn list(
    ports: &mut Ports<'_>,
    calls: &mut Calls,
    query: Query<'_>,
    limit: u32,
) -> Result<Option<Page>, ConnectorError> {
    let url = match query {
        Query::Since(seq) => format!("{API}/notes?since={seq}&limit={limit}"),
        Query::After(Some(id)) => format!("{API}/notes?after={}&limit={limit}", escape(id)),
        Query::After(None) => format!("{API}/notes?limit={limit}"),
    };
    let feed = matches!(query, Query::Since(_));
    let response = get(ports, calls, &url, Vec::new())?;
    match response.status {
        200 => decode(&response).map(Some),
        410 if feed => Ok(None),
        _ => Err(status_error(&response, "the notes listing")),
    }
}

pub(crate) fn account(ports: &mut Ports<'_>, calls: &mut Calls) -> Result<User, ConnectorError> {
    let response = get(ports, calls, &format!("{API}/me"), Vec::new())?;
    if response.status != 200 {
        return Err(status_error(&response, "the account"));
    }
    let account: Account = decode(&response)?;
    Ok(User {
        external_id: account.id,
        email: account.email,
        display_name: account.name,
    })
}

/// An authenticated GET, repeated after 5xx, 429 and dropped connections (with the service's
/// `Retry-After`, else a doubling back-off); other statuses are the caller's to read.
pub(crate) fn get(
    ports: &mut Ports<'_>,
    calls: &mut Calls,
    url: &str,
    headers: Vec<(String, String)>,
) -> Result<HttpResponse, ConnectorError> {
    let request = HttpRequest {
        method: Method::Get,
        url: url.to_string(),
        headers,
        body: Vec::new(),
        authenticated: true,
        timeout_ms: None,
    };
    let mut attempt = 0;
    loop {
        calls.made += 1;
        let backoff = Duration::from_millis(250 << attempt.min(6));
        let (wait, failure) = match ports.http.send(request.clone()) {
            Ok(r) if r.status == 429 || r.status >= 500 => {
                let after = r
                    .header("retry-after")
                    .and_then(|s| s.trim().parse::<u64>().ok());
                let wait = after.map_or(backoff, Duration::from_secs);
                let failure = if r.status == 429 {
                    ConnectorError::RateLimited {
                        retry_after_ms: wait.as_millis() as u64,
                        reason: format!("HTTP 429 from {url}"),
                    }
                } else {
                    ConnectorError::Transient(format!("HTTP {} from {url}", r.status))
                };
                (wait, failure)
            }
            Ok(r) => return Ok(r),
            Err(e @ (HttpError::Timeout(_) | HttpError::Connection(_))) => {
                (backoff, ConnectorError::Transient(e.to_string()))
            }
            Err(HttpError::NoCredentials(m)) => return Err(ConnectorError::AuthRequired(m)),
            Err(e) => return Err(ConnectorError::Internal(e.to_string())),
        };
        if attempt >= MAX_RETRIES || wait > MAX_RETRY_WAIT {
            return Err(failure);
        }
        attempt += 1;
        calls.retries += 1;
        ports.host.sleep(wait);
    }
}

pub(crate) fn status_error(response: &HttpResponse, what: &str) -> ConnectorError {
    let message = format!("HTTP {} for {what}", response.status);
    match response.status {
        401 | 403 => ConnectorError::AuthRequired(message),
        404 => ConnectorError::NotFound(message),
        _ => ConnectorError::Internal(message),
    }
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    response: &HttpResponse,
) -> Result<T, ConnectorError> {
    serde_json::from_slice(&response.body)
        .map_err(|e| ConnectorError::Internal(format!("unexpected answer from the service: {e}")))
}

/// The first byte and the total of a `Content-Range: bytes <first>-<last>/<total>` (the first
/// is none for `bytes */<total>`).
pub(crate) fn content_range(response: &HttpResponse) -> Result<(Option<u64>, u64), ConnectorError> {
    let parsed = response.header("content-range").and_then(|v| {
        let (range, total) = v.trim().strip_prefix("bytes ")?.split_once('/')?;
        let first = match range.split_once('-') {
            Some((first, _)) => Some(first.parse().ok()?),
            None => None,
        };
        Some((first, total.parse().ok()?))
    });
    parsed.ok_or_else(|| {
        ConnectorError::Internal("a range answer without a valid Content-Range".into())
    })
}

/// An id as one URL path segment or query value: ids are the service's, opaque to us.
pub(crate) fn escape(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
