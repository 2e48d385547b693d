//! Metrics and health of a running `watch`: counters kept by the host as things happen, served
//! in the Prometheus exposition format (OpenMetrics text, from `prometheus-client`) with
//! `/healthz` and `/readyz` by a small HTTP server ([`MetricsServer`]), off unless
//! `--metrics-listen` is given.
//!
//! Where each number comes from (all counted by the host, none estimated):
//! - syncs, their duration, entries and changes, errors, last success: the watcher, from what
//!   each `sync` / `wait-for-changes` returned ([`crate::watch`]);
//! - API calls: the host's `http` import, which counts every request it sends for the guest
//!   (`InvocationStats::requests`; token refreshes, sent by the host itself, are not in it);
//! - retries: the `retries` of the connector's `sync-summary` (requests it repeated after a
//!   transient failure or a rate limit); rate-limit waits: the responses with status 429 the
//!   host's `http` import delivered (the source asked to slow down); the seconds waited are
//!   what the guest asked the host's `sleep` for. Nothing is read from the connector's logs.
//!
//! Every name has the prefix `host_test_`:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `host_test_syncs_total` | counter | `result`: `ok`, `interrupted`, or the error kind |
//! | `host_test_sync_duration_seconds` | histogram | |
//! | `host_test_sync_entries_total` | counter | (listing entries the syncs processed) |
//! | `host_test_sync_changes_total` | counter | `change`: `created`, `content`, `metadata`, `deleted` |
//! | `host_test_api_calls_total` | counter | `op` |
//! | `host_test_retries_total` | counter | `op` |
//! | `host_test_rate_limit_waits_total` | counter | `op` |
//! | `host_test_retry_wait_seconds_total` | counter | `op` |
//! | `host_test_errors_total` | counter | `op`, `kind` |
//! | `host_test_last_success_timestamp_seconds` | gauge | `tenant` |
//! | `host_test_longpolls_total` | counter | `result`: `changes`, `no_changes`, `failed` |
//! | `host_test_longpolls_in_flight` | gauge | |
//! | `host_test_syncs_in_flight` | gauge | |
//! | `host_test_tenants_watched` | gauge | |
//! | `host_test_ready` | gauge | 1 while `/readyz` answers 200 |
//!
//! Error kinds: `auth_required`, `rate_limited`, `not_found`, `invalid_config`, `transient`,
//! `integrity`, `internal`, `unsupported` (the connector's typed errors), `runaway`, `memory_limit`,
//! `resource_limit`, `no_progress`, `stopped`, `trap`, `instantiate` (the sandbox), `store`,
//! `setup` (the host).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::app::HostError;
use crate::bindings::connector::SyncSummary;
use crate::bindings::types::ConnectorError;
use crate::runtime::InvokeError;
use crate::tenant::InvocationStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabel {
    change: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    op: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

/// The metrics of one watcher (and of every operation of the host it is given to), and its
/// readiness.
pub struct Metrics {
    registry: Registry,
    syncs: Family<ResultLabel, Counter>,
    sync_duration: Histogram,
    entries: Counter,
    changes: Family<ChangeLabel, Counter>,
    api_calls: Family<OpLabel, Counter>,
    retries: Family<OpLabel, Counter>,
    rate_limit_waits: Family<OpLabel, Counter>,
    retry_wait: Family<OpLabel, Counter<f64, AtomicU64>>,
    errors: Family<ErrorLabels, Counter>,
    last_success: Family<TenantLabel, Gauge>,
    longpolls: Family<ResultLabel, Counter>,
    longpolls_in_flight: Gauge,
    syncs_in_flight: Gauge,
    tenants: Gauge,
    ready_gauge: Gauge,
    ready: AtomicBool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("host_test");
        let syncs = Family::<ResultLabel, Counter>::default();
        registry.register(
            "syncs",
            "Syncs finished, by result: ok, interrupted (stopped at a page boundary), or the error kind",
            syncs.clone(),
        );
        let sync_duration = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        registry.register_with_unit(
            "sync_duration",
            "Duration of each sync, whatever its result",
            Unit::Seconds,
            sync_duration.clone(),
        );
        let entries = Counter::default();
        registry.register(
            "sync_entries",
            "Listing entries processed by syncs that returned",
            entries.clone(),
        );
        let changes = Family::<ChangeLabel, Counter>::default();
        registry.register(
            "sync_changes",
            "Record changes applied by syncs that returned, by change",
            changes.clone(),
        );
        let api_calls = Family::<OpLabel, Counter>::default();
        registry.register(
            "api_calls",
            "Requests the host sent for the connector (its http import), by operation",
            api_calls.clone(),
        );
        let retries = Family::<OpLabel, Counter>::default();
        registry.register(
            "retries",
            "Requests the connector repeated after a transient failure or a rate limit (its sync summary), by operation",
            retries.clone(),
        );
        let rate_limit_waits = Family::<OpLabel, Counter>::default();
        registry.register(
            "rate_limit_waits",
            "Retries that waited out a rate limit (429), by operation",
            rate_limit_waits.clone(),
        );
        let retry_wait = Family::<OpLabel, Counter<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "retry_wait",
            "Time the connector asked the host to wait (retries, rate limits), by operation",
            Unit::Seconds,
            retry_wait.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "errors",
            "Failed syncs and long-polls, by operation and error kind",
            errors.clone(),
        );
        let last_success = Family::<TenantLabel, Gauge>::default();
        registry.register_with_unit(
            "last_success_timestamp",
            "When the tenant's last complete sync finished (unix time)",
            Unit::Seconds,
            last_success.clone(),
        );
        let longpolls = Family::<ResultLabel, Counter>::default();
        registry.register(
            "longpolls",
            "Long-polls for changes that returned, by result: changes, no_changes, failed",
            longpolls.clone(),
        );
        let longpolls_in_flight = Gauge::default();
        registry.register(
            "longpolls_in_flight",
            "Long-polls waiting for changes now",
            longpolls_in_flight.clone(),
        );
        let syncs_in_flight = Gauge::default();
        registry.register(
            "syncs_in_flight",
            "Syncs running now",
            syncs_in_flight.clone(),
        );
        let tenants = Gauge::default();
        registry.register("tenants_watched", "Tenants being watched", tenants.clone());
        let ready_gauge = Gauge::default();
        registry.register(
            "ready",
            "1 while the watcher runs (its tenants loaded, its workers started), else 0",
            ready_gauge.clone(),
        );
        // The series a dashboard expects, present from the start.
        for result in ["ok", "interrupted"] {
            let _ = syncs.get_or_create(&ResultLabel { result });
        }
        Metrics {
            registry,
            syncs,
            sync_duration,
            entries,
            changes,
            api_calls,
            retries,
            rate_limit_waits,
            retry_wait,
            errors,
            last_success,
            longpolls,
            longpolls_in_flight,
            syncs_in_flight,
            tenants,
            ready_gauge,
            ready: AtomicBool::new(false),
        }
    }

    /// The exposition, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
        self.ready_gauge.set(i64::from(ready));
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn set_tenants(&self, n: usize) {
        self.tenants.set(n as i64);
    }

    /// A tenant's last complete sync, at `unix_secs`.
    pub fn set_last_success(&self, tenant: &str, unix_secs: i64) {
        self.last_success
            .get_or_create(&TenantLabel {
                tenant: tenant.to_string(),
            })
            .set(unix_secs);
    }

    /// A sync is running until the guard is dropped.
    pub fn sync_running(&self) -> InFlight {
        InFlight::new(self.syncs_in_flight.clone())
    }

    /// A long-poll is waiting until the guard is dropped.
    pub fn longpoll_running(&self) -> InFlight {
        InFlight::new(self.longpolls_in_flight.clone())
    }

    /// A sync returned (`Ok`) or failed.
    pub fn sync_finished(&self, result: Result<&SyncSummary, &HostError>, duration: Duration) {
        self.sync_duration.observe(duration.as_secs_f64());
        let label = match result {
            Ok(s) => {
                self.entries.inc_by(s.entries);
                for (change, n) in [
                    ("created", s.created),
                    ("content", s.content_updates),
                    ("metadata", s.metadata_updates),
                    ("deleted", s.deletions),
                ] {
                    self.changes
                        .get_or_create(&ChangeLabel { change })
                        .inc_by(n);
                }
                self.retries
                    .get_or_create(&OpLabel { op: "sync" })
                    .inc_by(u64::from(s.retries));
                if s.interrupted { "interrupted" } else { "ok" }
            }
            Err(e) => {
                let kind = error_kind(e);
                self.error("sync", kind);
                kind
            }
        };
        self.syncs
            .get_or_create(&ResultLabel { result: label })
            .inc();
    }

    /// A long-poll returned: changes or not, or failed.
    pub fn longpoll_finished(&self, result: Result<bool, &HostError>) {
        let label = match result {
            Ok(true) => "changes",
            Ok(false) => "no_changes",
            Err(e) => {
                self.error("wait-for-changes", error_kind(e));
                "failed"
            }
        };
        self.longpolls
            .get_or_create(&ResultLabel { result: label })
            .inc();
    }

    pub fn error(&self, op: &'static str, kind: &'static str) {
        self.errors.get_or_create(&ErrorLabels { op, kind }).inc();
    }

    /// What the host measured of one invocation of the component (any operation).
    pub fn record_invocation(&self, op: &'static str, stats: &InvocationStats) {
        let label = OpLabel { op };
        self.api_calls
            .get_or_create(&label)
            .inc_by(stats.total_requests());
        if stats.rate_limited_responses > 0 {
            self.rate_limit_waits
                .get_or_create(&label)
                .inc_by(stats.rate_limited_responses);
        }
        if !stats.sleep_time.is_zero() {
            self.retry_wait
                .get_or_create(&label)
                .inc_by(stats.sleep_time.as_secs_f64());
        }
    }
}

/// The kind of a failure, for labels: the connector's typed error, the sandbox's, or the
/// host's.
pub fn error_kind(e: &HostError) -> &'static str {
    match e {
        HostError::Connector(c) => match c {
            ConnectorError::AuthRequired(_) => "auth_required",
            ConnectorError::RateLimited(_) => "rate_limited",
            ConnectorError::NotFound(_) => "not_found",
            ConnectorError::InvalidConfig(_) => "invalid_config",
            ConnectorError::Transient(_) => "transient",
            ConnectorError::Integrity(_) => "integrity",
            ConnectorError::Internal(_) => "internal",
            ConnectorError::Unsupported(_) => "unsupported",
        },
        HostError::Invoke(i) => match i {
            InvokeError::Runaway => "runaway",
            InvokeError::MemoryLimit { .. } => "memory_limit",
            InvokeError::ResourceLimit(_) => "resource_limit",
            InvokeError::NoProgress { .. } => "no_progress",
            InvokeError::Stopped => "stopped",
            InvokeError::Trap(_) => "trap",
            InvokeError::Instantiate(_) => "instantiate",
        },
        HostError::Store(_) => "store",
        HostError::Setup(_) => "setup",
        HostError::Busy(_) => "busy",
    }
}

/// Decrements its gauge when dropped.
pub struct InFlight(Gauge);

impl InFlight {
    fn new(gauge: Gauge) -> InFlight {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The HTTP endpoint: `GET /metrics` (the exposition), `/healthz` (200 while the process
/// serves), `/readyz` (200 while the watcher runs, 503 before it has loaded its tenants and
/// started its workers and once it stops). One connection at a time, each closed after its
/// answer, with short timeouts: a scraper and a probe, not a web server.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A request line and headers longer than this are refused.
const MAX_REQUEST: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

impl MetricsServer {
    /// Listen on `listen` (`127.0.0.1:9898`; port 0 picks a free port, see
    /// [`MetricsServer::local_addr`]) and serve `metrics` from a thread of its own.
    pub fn start(listen: &str, metrics: Arc<Metrics>) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::SeqCst) {
                        return;
                    }
                    match conn {
                        Ok(stream) => {
                            if let Err(e) = serve(stream, &metrics) {
                                tracing::debug!(error = %e, "metrics endpoint: a request failed");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "metrics endpoint: accept failed");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop listening (idempotent).
    pub fn stop(&mut self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && !request.ends_with(b"\n\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
        if request.len() > MAX_REQUEST {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                TEXT,
                "",
                false,
            );
        }
    }
    let text = String::from_utf8_lossy(&request);
    let mut parts = text.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let head = method == "HEAD";
    if method != "GET" && !head {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            TEXT,
            "GET only\n",
            head,
        );
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => respond(
            &mut stream,
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            &metrics.encode(),
            head,
        ),
        "/healthz" => respond(&mut stream, "200 OK", TEXT, "ok\n", head),
        "/readyz" if metrics.is_ready() => respond(&mut stream, "200 OK", TEXT, "ready\n", head),
        "/readyz" => respond(
            &mut stream,
            "503 Service Unavailable",
            TEXT,
            "not ready\n",
            head,
        ),
        _ => respond(
            &mut stream,
            "404 Not Found",
            TEXT,
            "/metrics, /healthz, /readyz\n",
            head,
        ),
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
    head: bool,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head {
        out.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&out)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_family() {
        let m = Metrics::new();
        m.set_ready(true);
        m.set_last_success("alice", 1_700_000_000);
        m.error("sync", "auth_required");
        let text = m.encode();
        for name in [
            "host_test_syncs_total{result=\"ok\"} 0",
            "host_test_sync_duration_seconds_count 0",
            "host_test_last_success_timestamp_seconds{tenant=\"alice\"} 1700000000",
            "host_test_errors_total{op=\"sync\",kind=\"auth_required\"} 1",
            "host_test_longpolls_in_flight 0",
            "host_test_ready 1",
            "# EOF",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
