//! The Dropbox API client: every call goes through `DropboxClient::execute`, the one loop that
//! retries (per `retry::RetryPolicy`), refreshes an expired token once, counts calls and
//! retries, and turns failures into typed errors. Nothing else in the connector sleeps or loops
//! on errors. The client also reads the host's limits, once per operation (`limits`).

#![allow(clippy::result_large_err)]

use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::error::{ApiError, AuthError};
use crate::api::header_json::{decode_api_result, to_header_safe_json};
use crate::api::{DecodeError, classify, decode};
use crate::manifest::{API_BASE, CONTENT_BASE, NOTIFY_BASE};
use crate::model::{ConnectorError, HostLimits};
use crate::ports::{
    Credentials, HostEnv, Http, HttpError, HttpRequest, HttpResponse, Level, Method,
    PendingRequest, RefreshError,
};
use crate::retry::{Decision, Failure, RetryPolicy};

/// Why a call failed, after retries. (It is large because `ApiError` carries a route error's
/// details; failures are rare next to successes, so it is not boxed.)
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("{route}: {error}")]
    Api { route: String, error: ApiError },
    #[error("{route}: {error}")]
    Transport { route: String, error: HttpError },
    #[error("{route}: unreadable response: {error}")]
    Decode { route: String, error: DecodeError },
    #[error("{route}: rate limited, the service asks to wait {wait_ms} ms ({reason})")]
    RateLimited {
        route: String,
        wait_ms: u64,
        reason: String,
    },
    #[error("{route}: authorization required: {message}")]
    AuthRequired { route: String, message: String },
}

impl CallError {
    /// The route error (409) if that is what this is.
    pub fn route_error(&self) -> Option<&crate::api::RouteError> {
        match self {
            CallError::Api { error, .. } => error.route(),
            _ => None,
        }
    }
}

impl From<CallError> for ConnectorError {
    fn from(e: CallError) -> Self {
        let message = e.to_string();
        match e {
            CallError::AuthRequired { .. } => ConnectorError::AuthRequired(message),
            CallError::RateLimited {
                wait_ms, reason, ..
            } => ConnectorError::RateLimited {
                retry_after_ms: wait_ms,
                reason,
            },
            CallError::Api { error, .. } => match error {
                ApiError::Auth(_) => ConnectorError::AuthRequired(message),
                ApiError::Route(ref r) if r.is_not_found() => ConnectorError::NotFound(message),
                ApiError::Server { .. } => ConnectorError::Transient(message),
                ApiError::RateLimited {
                    retry_after_secs,
                    reason,
                } => ConnectorError::RateLimited {
                    retry_after_ms: retry_after_secs.saturating_mul(1000),
                    reason,
                },
                _ => ConnectorError::Internal(message),
            },
            CallError::Transport { error, .. } => match error {
                HttpError::NoCredentials(_) => ConnectorError::AuthRequired(message),
                HttpError::Timeout(_) | HttpError::Connection(_) => {
                    ConnectorError::Transient(message)
                }
                _ => ConnectorError::Internal(message),
            },
            CallError::Decode { .. } => ConnectorError::Internal(message),
        }
    }
}

/// A successful download: the parsed `Dropbox-API-Result`, the status (200 or 206) and the bytes.
pub struct Download<T> {
    pub result: T,
    pub status: u16,
    pub body: Vec<u8>,
    pub content_range: Option<String>,
}

/// An RPC call begun with [`DropboxClient::start_rpc`]; [`DropboxClient::finish_rpc`] collects
/// it (and retries it like any other call if it failed).
#[must_use = "a started call is only useful once finished"]
pub struct PendingCall {
    route: String,
    request: HttpRequest,
    pending: PendingRequest,
    /// How many token refreshes this client had made when the call was sent (see
    /// `DropboxClient::refreshes`).
    sent_after_refreshes: u32,
}

pub struct DropboxClient<'a> {
    http: &'a mut dyn Http,
    credentials: &'a mut dyn Credentials,
    host: &'a mut dyn HostEnv,
    policy: RetryPolicy,
    /// What the host allows, read once when the client is made (one client per operation).
    limits: HostLimits,
    calls: u32,
    /// Requests sent again after a transient failure or a rate limit (`sync-summary.retries`).
    retries: u32,
    /// Time spent decoding JSON responses (for benchmarks: the guest's own share of a sync).
    decode_time: std::time::Duration,
    /// Token refreshes made so far. Calls started together were all sent with the same token;
    /// when it has expired, each of them comes back 401. The first one finished refreshes;
    /// the others, sent before that refresh, are sent again with the new token instead of
    /// refreshing once more each.
    refreshes: u32,
}

impl<'a> DropboxClient<'a> {
    pub fn new(
        http: &'a mut dyn Http,
        credentials: &'a mut dyn Credentials,
        host: &'a mut dyn HostEnv,
    ) -> Self {
        let limits = host.limits();
        DropboxClient {
            http,
            credentials,
            host,
            policy: RetryPolicy::default(),
            limits,
            calls: 0,
            retries: 0,
            decode_time: Default::default(),
            refreshes: 0,
        }
    }

    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// API requests sent so far (retries included).
    pub fn calls(&self) -> u32 {
        self.calls
    }

    /// Requests repeated after a transient failure or a rate limit (a token refresh's second
    /// attempt is not one: it is the first with a usable token).
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The host's limits for this operation.
    pub fn limits(&self) -> HostLimits {
        self.limits
    }

    pub fn decode_time(&self) -> std::time::Duration {
        self.decode_time
    }

    fn timed_decode<R: DeserializeOwned>(
        &mut self,
        route: &str,
        body: &[u8],
    ) -> Result<R, CallError> {
        let started = std::time::Instant::now();
        let result = decode(body).map_err(|error| CallError::Decode {
            route: route.into(),
            error,
        });
        self.decode_time += started.elapsed();
        result
    }

    pub fn host(&mut self) -> &mut dyn HostEnv {
        self.host
    }

    fn rpc_request<A: Serialize>(
        &self,
        route: &str,
        arg: Option<&A>,
    ) -> Result<HttpRequest, CallError> {
        let body = match arg {
            Some(a) => serde_json::to_vec(a).map_err(|e| CallError::Decode {
                route: route.into(),
                error: DecodeError::Malformed {
                    message: e.to_string(),
                    excerpt: String::new(),
                },
            })?,
            None => Vec::new(),
        };
        let headers = if arg.is_some() {
            vec![("Content-Type".to_string(), "application/json".to_string())]
        } else {
            Vec::new()
        };
        Ok(HttpRequest {
            method: Method::Post,
            url: format!("{API_BASE}/2/{route}"),
            headers,
            body,
            authenticated: true,
            timeout_ms: None,
        })
    }

    /// An RPC call: JSON argument in the body (none for void routes), JSON result.
    pub fn rpc<A: Serialize, R: DeserializeOwned>(
        &mut self,
        route: &str,
        arg: Option<&A>,
    ) -> Result<R, CallError> {
        let request = self.rpc_request(route, arg)?;
        let response = self.execute(route, request, None)?;
        self.timed_decode(route, &response.body)
    }

    /// Begin an RPC call without waiting for it (`http.start`), so the caller can work while
    /// the host fetches. Its first attempt counts as a call now; its outcome is judged, and
    /// retried if need be, by [`Self::finish_rpc`].
    pub fn start_rpc<A: Serialize>(
        &mut self,
        route: &str,
        arg: Option<&A>,
    ) -> Result<PendingCall, CallError> {
        let request = self.rpc_request(route, arg)?;
        self.calls += 1;
        // A start the host refuses at once (the destination, a header) is that attempt's
        // outcome, judged like any other when the call is finished.
        let pending = match self.http.start(request.clone()) {
            Ok(pending) => pending,
            Err(error) => PendingRequest::done(Err(error)),
        };
        Ok(PendingCall {
            route: route.into(),
            request,
            pending,
            sent_after_refreshes: self.refreshes,
        })
    }

    /// The result of a call begun with [`Self::start_rpc`], with the same retries, refresh and
    /// errors as [`Self::rpc`].
    pub fn finish_rpc<R: DeserializeOwned>(&mut self, call: PendingCall) -> Result<R, CallError> {
        let first = self.http.wait(call.pending);
        let first = (first, call.sent_after_refreshes);
        let response = self.execute(&call.route, call.request, Some(first))?;
        self.timed_decode(&call.route, &response.body)
    }

    /// The answer of the call for `route` that was `started` ahead (see [`Self::start_rpc`]),
    /// or, when none was, of the same call made now ([`Self::rpc`]).
    pub fn rpc_or_finish<A: Serialize, R: DeserializeOwned>(
        &mut self,
        started: Option<PendingCall>,
        route: &str,
        arg: Option<&A>,
    ) -> Result<R, CallError> {
        match started {
            Some(call) => self.finish_rpc(call),
            None => self.rpc(route, arg),
        }
    }

    /// A content-download call: argument in `Dropbox-API-Arg` (header-safe JSON), result in
    /// `Dropbox-API-Result`, bytes in the body; `range` is an HTTP byte range (start, end incl.).
    pub fn download<A: Serialize, R: DeserializeOwned>(
        &mut self,
        route: &str,
        arg: &A,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<Download<R>, CallError> {
        let arg_json = to_header_safe_json(arg).map_err(|e| CallError::Decode {
            route: route.into(),
            error: DecodeError::Malformed {
                message: e.to_string(),
                excerpt: String::new(),
            },
        })?;
        let mut headers = vec![("Dropbox-API-Arg".to_string(), arg_json)];
        if let Some((start, end)) = range {
            let value = match end {
                Some(end) => format!("bytes={start}-{end}"),
                None => format!("bytes={start}-"),
            };
            headers.push(("Range".to_string(), value));
        }
        let request = HttpRequest {
            method: Method::Post,
            url: format!("{CONTENT_BASE}/2/{route}"),
            headers,
            body: Vec::new(),
            authenticated: true,
            timeout_ms: None,
        };
        let response = self.execute(route, request, None)?;
        let Some(result_header) = response.header("Dropbox-API-Result") else {
            return Err(CallError::Decode {
                route: route.into(),
                error: DecodeError::Malformed {
                    message: "the download response has no Dropbox-API-Result header".into(),
                    excerpt: String::new(),
                },
            });
        };
        let result =
            decode_api_result(result_header.as_bytes()).map_err(|error| CallError::Decode {
                route: route.into(),
                error,
            })?;
        let content_range = response.header("Content-Range").map(String::from);
        Ok(Download {
            result,
            status: response.status,
            body: response.body,
            content_range,
        })
    }

    /// `files/list_folder/longpoll`, asking Dropbox to wait `timeout_secs`, within `budget`: no
    /// Authorization header (the route refuses one); every attempt's timeout is what is left of
    /// the budget, and no retry starts after it, so a cut wait ends as a transport timeout.
    pub fn longpoll<R: DeserializeOwned>(
        &mut self,
        cursor: &str,
        timeout_secs: u64,
        budget: Duration,
    ) -> Result<R, CallError> {
        let route = "files/list_folder/longpoll";
        let arg = crate::api::types::LongpollArg {
            cursor: cursor.to_string(),
            timeout: timeout_secs,
        };
        let body = serde_json::to_vec(&arg).unwrap_or_default();
        let request = HttpRequest {
            method: Method::Post,
            url: format!("{NOTIFY_BASE}/2/{route}"),
            headers: vec![("Content-Type".to_string(), "application/json".to_string())],
            body,
            authenticated: false,
            timeout_ms: None,
        };
        let deadline = Instant::now() + budget;
        let response = self.execute_until(route, request, None, Some(deadline))?;
        decode(&response.body).map_err(|error| CallError::Decode {
            route: route.into(),
            error,
        })
    }

    /// Send with retries. 2xx responses are returned; everything else is classified once, here.
    /// `first`: the outcome of a first attempt already made (a started call), if any, with the
    /// refreshes made before it was sent.
    fn execute(
        &mut self,
        route: &str,
        request: HttpRequest,
        first: Option<(Result<HttpResponse, HttpError>, u32)>,
    ) -> Result<HttpResponse, CallError> {
        self.execute_until(route, request, first, None)
    }

    /// [`Self::execute`], within a `deadline` when one is given: each attempt may last only
    /// what is left of it, and a retry that would start after it is not made.
    fn execute_until(
        &mut self,
        route: &str,
        mut request: HttpRequest,
        mut first: Option<(Result<HttpResponse, HttpError>, u32)>,
        deadline: Option<Instant>,
    ) -> Result<HttpResponse, CallError> {
        let mut attempt: u32 = 0;
        let mut refreshed = false;
        loop {
            attempt += 1;
            let (outcome, sent_after_refreshes) = match first.take() {
                Some(first) => first,
                None => {
                    if let Some(deadline) = deadline {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Err(CallError::Transport {
                                route: route.into(),
                                error: HttpError::Timeout("the call's time ran out".into()),
                            });
                        }
                        request.timeout_ms = Some(left.as_millis().max(1) as u64);
                    }
                    self.calls += 1;
                    (self.http.send(request.clone()), self.refreshes)
                }
            };
            let (mut failure_api, mut failure_conn) = match outcome {
                Ok(response) if (200..300).contains(&response.status) => return Ok(response),
                Ok(response) => (
                    Some(classify(response.status, &response.headers, &response.body)),
                    None,
                ),
                Err(e @ (HttpError::Timeout(_) | HttpError::Connection(_))) => (None, Some(e)),
                Err(error) => {
                    return Err(CallError::Transport {
                        route: route.into(),
                        error,
                    });
                }
            };
            // An expired token is refreshed once; so is one Dropbox no longer knows (it may have
            // been replaced by a refresh elsewhere). A refused refresh ends the call.
            if let Some(ApiError::Auth(
                AuthError::ExpiredAccessToken | AuthError::InvalidAccessToken,
            )) = &failure_api
                && request.authenticated
                && !refreshed
            {
                // Sent before a refresh that another call made: its token is already replaced.
                if sent_after_refreshes < self.refreshes {
                    attempt -= 1;
                    continue;
                }
                refreshed = true;
                self.host.log(
                    Level::Info,
                    &format!("{route}: access token expired or invalid; refreshing once"),
                );
                match self.credentials.refresh_access_token() {
                    Ok(()) => {
                        self.refreshes = self.refreshes.saturating_add(1);
                        attempt -= 1;
                        continue;
                    }
                    Err(RefreshError::ReauthenticationRequired(m)) => {
                        return Err(CallError::AuthRequired {
                            route: route.into(),
                            message: m,
                        });
                    }
                    Err(RefreshError::Transient(m)) => {
                        // The token endpoint failed in a way a wait can fix (5xx, 429, a dropped
                        // connection): the policy decides as for a dropped connection, and the
                        // next attempt may refresh again (each such attempt counts).
                        refreshed = false;
                        failure_api = None;
                        failure_conn =
                            Some(HttpError::Connection(format!("token refresh failed: {m}")));
                    }
                }
            }
            let jitter = self.host.random();
            let decision = match (&failure_api, &failure_conn) {
                (Some(api), _) => self.policy.decide(attempt, &Failure::Api(api), jitter),
                (None, Some(conn)) => {
                    let text = conn.to_string();
                    self.policy
                        .decide(attempt, &Failure::Connection(&text), jitter)
                }
                (None, None) => Decision::GiveUp,
            };
            // Within a deadline, no retry: after an attempt that timed out (it had all that was
            // left), nor one that would start past it.
            let decision = match (decision, deadline) {
                (Decision::Retry { after_ms, .. }, Some(d))
                    if matches!(failure_conn, Some(HttpError::Timeout(_)))
                        || Instant::now() + Duration::from_millis(after_ms) >= d =>
                {
                    Decision::GiveUp
                }
                (decision, _) => decision,
            };
            match decision {
                Decision::Retry { after_ms, reason } => {
                    self.retries = self.retries.saturating_add(1);
                    self.host.log(
                        Level::Warn,
                        &format!(
                            "{route}: retrying in {after_ms} ms (attempt {attempt}): {reason}"
                        ),
                    );
                    self.host.sleep(Duration::from_millis(after_ms));
                }
                Decision::GiveUp => {
                    return Err(match (failure_api, failure_conn) {
                        (
                            Some(ApiError::RateLimited {
                                retry_after_secs,
                                reason,
                            }),
                            _,
                        ) => CallError::RateLimited {
                            route: route.into(),
                            wait_ms: retry_after_secs.saturating_mul(1000),
                            reason,
                        },
                        // A missing scope stays a typed API error: a caller may carry on without
                        // the feature the scope guards (shared links); anything else of a 401
                        // means the account must be connected again.
                        (Some(error @ ApiError::Auth(AuthError::MissingScope(_))), _) => {
                            CallError::Api {
                                route: route.into(),
                                error,
                            }
                        }
                        (Some(ApiError::Auth(auth)), _) => CallError::AuthRequired {
                            route: route.into(),
                            message: format!("{auth:?}"),
                        },
                        (Some(error), _) => CallError::Api {
                            route: route.into(),
                            error,
                        },
                        (None, Some(error)) => CallError::Transport {
                            route: route.into(),
                            error,
                        },
                        (None, None) => CallError::Transport {
                            route: route.into(),
                            error: HttpError::Connection("no response".into()),
                        },
                    });
                }
            }
        }
    }
}
