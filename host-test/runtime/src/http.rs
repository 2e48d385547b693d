//! The host's HTTP client (rustls): connect and read timeouts, no redirects, a cap on response
//! bodies. Transport only: what may be requested is decided by `policy` first.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransportError {
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("connection failed: {0}")]
    Connection(String),
    #[error("response body larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("cancelled: the instance that started the request ended")]
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What the transport allows; `host.limits` tells the guest the same numbers.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub connect_timeout: Duration,
    /// A request's read timeout when it names none (the contract's default: 30 s).
    pub read_timeout: Duration,
    /// The longest read timeout a request may ask for; longer ones are clamped.
    pub max_read_timeout: Duration,
    /// The response-body cap (the contract asks for at least 1 MiB). Tests run the component
    /// under [`HttpSettings::MIN_BODY_CAP`] to prove it reads large content in ranges.
    pub max_body_bytes: u64,
    /// Requests begun with `http.start` that one instance may have pending at once.
    pub max_pending_requests: u32,
    /// Whether a request begun with `http.start` runs at once on a thread of its own (the
    /// guest's work then overlaps the network), or only when the guest waits for it.
    pub background_requests: bool,
}

impl HttpSettings {
    /// The smallest body cap the contract allows a host: 1 MiB.
    pub const MIN_BODY_CAP: u64 = 1024 * 1024;

    /// These settings with another body cap (at least [`HttpSettings::MIN_BODY_CAP`]).
    pub fn with_body_cap(mut self, bytes: u64) -> HttpSettings {
        self.max_body_bytes = bytes.max(Self::MIN_BODY_CAP);
        self
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            // Long polls ask for minutes (up to 8 minutes plus jitter in practice).
            max_read_timeout: Duration::from_secs(600),
            max_body_bytes: 16 * 1024 * 1024,
            max_pending_requests: 4,
            background_requests: true,
        }
    }
}

#[derive(Clone)]
pub struct HttpClient {
    /// Cheap to clone (shared connection pool): a request begun with `http.start` runs on a
    /// thread of its own with a clone.
    agent: ureq::Agent,
    settings: HttpSettings,
    /// Requests running on threads of their own (`http.start`), over every instance.
    background: Arc<AtomicUsize>,
}

/// Counts a background request while its thread runs.
pub struct BackgroundGuard(Arc<AtomicUsize>);

impl Drop for BackgroundGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A body is read in pieces of this size, so a cancelled request stops within one read.
const READ_PIECE: usize = 64 * 1024;

impl HttpClient {
    pub fn new(settings: HttpSettings) -> HttpClient {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Never follow redirects: a 3xx from an allowed host must not carry the request to
            // a host the policy never saw.
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_connect(Some(settings.connect_timeout))
            .user_agent("pipeshub-connector-host/0.1")
            .max_idle_connections_per_host(16)
            .build()
            .new_agent();
        HttpClient {
            agent,
            settings,
            background: Arc::default(),
        }
    }

    /// Requests started with `http.start` whose threads are still running.
    pub fn background_requests(&self) -> usize {
        self.background.load(Ordering::SeqCst)
    }

    /// Count one more background request until the guard is dropped.
    pub fn background_guard(&self) -> BackgroundGuard {
        self.background.fetch_add(1, Ordering::SeqCst);
        BackgroundGuard(self.background.clone())
    }

    pub fn settings(&self) -> &HttpSettings {
        &self.settings
    }

    /// Send one request and read the whole response, up to the body cap.
    pub fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        read_timeout: Option<Duration>,
    ) -> Result<HttpResponse, TransportError> {
        self.send_cancellable(
            method,
            url,
            headers,
            body,
            read_timeout,
            &AtomicBool::new(false),
        )
    }

    /// [`HttpClient::send`], given up as soon as `cancel` is set: before sending, or between
    /// two reads of the body (the connection is then closed, not pooled). Waiting for the
    /// response's head cannot be interrupted; the read timeout bounds it.
    pub fn send_cancellable(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        read_timeout: Option<Duration>,
        cancel: &AtomicBool,
    ) -> Result<HttpResponse, TransportError> {
        if cancel.load(Ordering::SeqCst) {
            return Err(TransportError::Cancelled);
        }
        let mut builder = ureq::http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let request = builder
            .body(body)
            .map_err(|e| TransportError::InvalidRequest(e.to_string()))?;
        let timeout = read_timeout
            .unwrap_or(self.settings.read_timeout)
            .min(self.settings.max_read_timeout);
        let request = self
            .agent
            .configure_request(request)
            .timeout_recv_response(Some(timeout))
            .timeout_recv_body(Some(timeout))
            .build();
        let mut response = self.agent.run(request).map_err(map_error)?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut reader = response
            .body_mut()
            .with_config()
            .limit(self.settings.max_body_bytes)
            .reader();
        let mut body = Vec::new();
        let mut piece = vec![0u8; READ_PIECE];
        loop {
            if cancel.load(Ordering::SeqCst) {
                return Err(TransportError::Cancelled);
            }
            match reader.read(&mut piece) {
                Ok(0) => break,
                Ok(n) => body.extend_from_slice(&piece[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(map_error(ureq::Error::from(e))),
            }
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

fn map_error(e: ureq::Error) -> TransportError {
    match e {
        ureq::Error::Timeout(t) => TransportError::Timeout(t.to_string()),
        ureq::Error::BodyExceedsLimit(n) => TransportError::BodyTooLarge(n),
        ureq::Error::Io(io)
            if io.kind() == std::io::ErrorKind::TimedOut
                || io.kind() == std::io::ErrorKind::WouldBlock =>
        {
            TransportError::Timeout(io.to_string())
        }
        ureq::Error::BadUri(u) => TransportError::InvalidRequest(u),
        ureq::Error::Http(h) => TransportError::InvalidRequest(h.to_string()),
        other => TransportError::Connection(other.to_string()),
    }
}
