//! `http`: the guest's only way out. Policy first (declared hosts only, no guest-supplied
//! credentials), then the tenant's token, then the transport.
//!
//! `send` runs a request on the calling thread. `start` runs the same checks at once (policy,
//! headers, the token) and hands the request to a thread of its own, so the guest can work
//! while the network does; `wait` collects it. At most `max_pending_requests` are pending per
//! instance. A request never waited for is cancelled when the instance ends (the operation
//! returned, trapped or was stopped): not sent if it has not been, else its connection is
//! closed at the next read of the body; a thread still waiting for the response's head ends at
//! the request's timeout at the latest. Nothing of it reaches anyone.
//! With `background_requests` off, `start` only checks and remembers the request and `wait`
//! runs it: the contract allows both, and the benchmark compares them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::bindings::http::{Host, HttpError, Method, Request, Response};
use crate::credentials::CredentialError;
use crate::http::{HttpClient, HttpResponse, TransportError};
use crate::policy::PolicyError;
use crate::runtime::{MAX_LIST_ITEMS, TenantState};

/// A request that passed every check and only needs the network.
struct Prepared {
    method: &'static str,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

/// A request begun with `start`: running on its own thread, or (when the host is set not to
/// overlap, [`crate::http::HttpSettings::background_requests`]) waiting to run in `wait`.
enum Pending {
    Running {
        response: mpsc::Receiver<Result<HttpResponse, TransportError>>,
        cancel: Arc<AtomicBool>,
    },
    Deferred(Prepared),
}

/// Requests begun with `start` and not yet collected, by id.
#[derive(Default)]
pub(crate) struct PendingRequests {
    next_id: u64,
    pending: HashMap<u64, Pending>,
}

impl Drop for PendingRequests {
    /// The instance ended: cancel every request still pending.
    fn drop(&mut self) {
        for pending in self.pending.values() {
            if let Pending::Running { cancel, .. } = pending {
                cancel.store(true, Ordering::SeqCst);
            }
        }
    }
}

fn transport_error(e: TransportError) -> HttpError {
    match e {
        TransportError::Timeout(m) => HttpError::Timeout(m),
        TransportError::Connection(m) => HttpError::Connection(m),
        TransportError::BodyTooLarge(n) => HttpError::BodyTooLarge(n),
        TransportError::InvalidRequest(m) => HttpError::InvalidRequest(m),
        TransportError::Cancelled => HttpError::Connection(TransportError::Cancelled.to_string()),
    }
}

impl TenantState {
    /// Every check that needs no network: the destination, the headers, the token.
    fn prepare(&mut self, req: Request) -> Result<Prepared, HttpError> {
        let services = self.tenant.services.clone();
        let resolved = services.policy.resolve(&req.url).map_err(|e| match e {
            PolicyError::NotAllowed(host) => HttpError::DestinationNotAllowed(host),
            PolicyError::InvalidUrl { url, reason } => {
                HttpError::InvalidRequest(format!("{url}: {reason}"))
            }
        })?;
        let cap = services.http.settings().max_body_bytes;
        if req.body.len() as u64 > cap {
            // The contract bounds every list a host call copies by the body cap.
            return Err(HttpError::InvalidRequest(format!(
                "the request body ({} bytes) exceeds the host's limit of {cap} bytes",
                req.body.len()
            )));
        }
        if req.headers.len() > MAX_LIST_ITEMS {
            return Err(HttpError::InvalidRequest(format!(
                "{} headers: at most {MAX_LIST_ITEMS} (host.limits)",
                req.headers.len()
            )));
        }
        let mut headers = Vec::with_capacity(req.headers.len() + 1);
        for (name, value) in req.headers {
            if name.eq_ignore_ascii_case("authorization") || name.eq_ignore_ascii_case("host") {
                return Err(HttpError::InvalidRequest(format!(
                    "the {name} header is set by the host"
                )));
            }
            headers.push((name, value));
        }
        if req.authenticated {
            let token = services
                .credentials
                .access_token(&self.tenant.tenant, &services.http, &services.policy)
                .map_err(|e| match e {
                    // The token endpoint failed for now: a retryable connection problem, not a
                    // reason to ask the user to connect again.
                    CredentialError::Transient(m) | CredentialError::Storage(m) => {
                        HttpError::Connection(format!("refreshing the access token failed: {m}"))
                    }
                    other => HttpError::NoCredentials(other.to_string()),
                })?;
            headers.push(("Authorization".to_string(), format!("Bearer {token}")));
        }
        let method = match req.method {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        };
        let path = url::Url::parse(&req.url)
            .map(|u| u.path().to_string())
            .unwrap_or_default();
        *self.stats.requests.entry(path).or_default() += 1;
        Ok(Prepared {
            method,
            url: resolved.url,
            headers,
            body: req.body,
            timeout: req.timeout_ms.map(Duration::from_millis),
        })
    }

    fn received(&mut self, response: HttpResponse) -> Response {
        self.stats.bytes_received += response.body.len() as u64;
        if response.status == 429 {
            self.stats.rate_limited_responses += 1;
        }
        Response {
            status: response.status,
            headers: response.headers,
            body: response.body,
        }
    }
}

fn run(client: &HttpClient, p: Prepared) -> Result<HttpResponse, TransportError> {
    client.send(p.method, &p.url, &p.headers, p.body, p.timeout)
}

impl Host for TenantState {
    fn send(&mut self, req: Request) -> Result<Response, HttpError> {
        self.stats.host_calls += 1;
        self.touch();
        let prepared = self.prepare(req);
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                self.touch();
                return Err(e);
            }
        };
        let started = Instant::now();
        let result = run(&self.tenant.services.http, prepared);
        self.stats.http_time += started.elapsed();
        self.touch();
        let response = result.map_err(transport_error)?;
        Ok(self.received(response))
    }

    fn start(&mut self, req: Request) -> Result<u64, HttpError> {
        self.stats.host_calls += 1;
        self.touch();
        let limit = self.tenant.services.http.settings().max_pending_requests as usize;
        if self.http_pending.pending.len() >= limit {
            return Err(HttpError::InvalidRequest(format!(
                "too many pending requests: at most {limit} may be started and not yet waited for"
            )));
        }
        let prepared = self.prepare(req)?;
        let pending = if self.tenant.services.http.settings().background_requests {
            let client = self.tenant.services.http.clone();
            let (tx, rx) = mpsc::sync_channel(1);
            let cancel = Arc::new(AtomicBool::new(false));
            let cancelled = cancel.clone();
            let guard = client.background_guard();
            std::thread::Builder::new()
                .name("http-start".into())
                .spawn(move || {
                    let _running = guard;
                    let p = prepared;
                    let result = client.send_cancellable(
                        p.method, &p.url, &p.headers, p.body, p.timeout, &cancelled,
                    );
                    // The receiver is gone when the instance was dropped: nothing to deliver.
                    let _ = tx.send(result);
                })
                .map_err(|e| HttpError::Connection(format!("cannot start the request: {e}")))?;
            // Let the new thread put the request on the wire now. Linux may queue a new thread
            // on its parent's core even with another core idle; it then waited for the guest's
            // time slice to end: 4 ms at the median on each page of a listing (`perf sched`),
            // a sixth of the time a 50 ms round trip's sync spent beyond its round trips.
            // Yielded to, it sends within half a millisecond and blocks on the network.
            std::thread::yield_now();
            Pending::Running {
                response: rx,
                cancel,
            }
        } else {
            Pending::Deferred(prepared)
        };
        let id = self.http_pending.next_id;
        self.http_pending.next_id += 1;
        self.http_pending.pending.insert(id, pending);
        self.touch();
        Ok(id)
    }

    fn wait(&mut self, id: u64) -> Result<Response, HttpError> {
        self.stats.host_calls += 1;
        self.touch();
        let Some(pending) = self.http_pending.pending.remove(&id) else {
            return Err(HttpError::InvalidRequest(format!(
                "no pending request with id {id} (never started, or already waited for)"
            )));
        };
        // Only the time the guest is blocked counts as its network time.
        let started = Instant::now();
        let result = match pending {
            Pending::Running { response, .. } => response.recv().unwrap_or_else(|_| {
                Err(TransportError::Connection(
                    "the request's thread ended without a response".into(),
                ))
            }),
            Pending::Deferred(prepared) => run(&self.tenant.services.http, prepared),
        };
        self.stats.http_time += started.elapsed();
        self.touch();
        let response = result.map_err(transport_error)?;
        Ok(self.received(response))
    }
}
