//! `host`: logging, progress, the tenant's settings and the stop signal.

use std::time::Duration;

use crate::bindings::host::{Host, HostLimits, Level, Progress};
use crate::bindings::types::Setting;
use crate::runtime::TenantState;
use crate::tenant::GuestSignal;

/// A guest log line longer than this is cut: the guest must not flood the host's logs.
const MAX_LOG_LINE: usize = 4096;
/// Lines kept per invocation for inspection (tests, status).
const MAX_KEPT_LOGS: usize = 10_000;
/// The `tracing` target of the guest's lines ([`crate::telemetry::CONNECTOR_TARGET`]; the
/// macros need a literal).
const CONNECTOR: &str = "connector";

impl Host for TenantState {
    fn log(&mut self, level: Level, message: String) {
        self.stats.host_calls += 1;
        self.touch();
        let level = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        // Forwarded at the connector's own level, inside the operation's spans (the call runs
        // on the thread that invoked the component), under the target `connector`; control
        // characters escaped, so a guest cannot forge a line of its own.
        let line: String = if message.chars().any(char::is_control) {
            message
                .chars()
                .flat_map(|c| {
                    let escaped: Vec<char> = if c.is_control() {
                        c.escape_default().collect()
                    } else {
                        vec![c]
                    };
                    escaped
                })
                .collect()
        } else {
            message.clone()
        };
        match level {
            "trace" => tracing::trace!(target: CONNECTOR, "{line}"),
            "debug" => tracing::debug!(target: CONNECTOR, "{line}"),
            "info" => tracing::info!(target: CONNECTOR, "{line}"),
            "warn" => tracing::warn!(target: CONNECTOR, "{line}"),
            _ => tracing::error!(target: CONNECTOR, "{line}"),
        }
        let signal = GuestSignal::Log {
            level: level.to_string(),
            message: message.clone(),
        };
        if let Some(observer) = self.tenant.observer.as_mut() {
            observer(&signal);
        }
        if self.stats.logs.len() < MAX_KEPT_LOGS {
            self.stats.logs.push((level.to_string(), message));
        }
    }

    fn report_progress(&mut self, progress: Progress) {
        self.stats.host_calls += 1;
        self.touch();
        let signal = GuestSignal::Progress {
            phase: progress.phase,
            pages: progress.pages,
            entries: progress.entries,
            total: progress.total,
        };
        if let Some(observer) = self.tenant.observer.as_mut() {
            observer(&signal);
        }
    }

    fn config(&mut self) -> Vec<Setting> {
        self.stats.host_calls += 1;
        self.touch();
        self.tenant
            .settings
            .iter()
            .map(|(key, value)| Setting {
                key: key.clone(),
                value: value.clone(),
            })
            .collect()
    }

    fn should_stop(&mut self) -> bool {
        self.touch();
        self.tenant.should_stop()
    }

    fn sleep(&mut self, milliseconds: u64) -> wasmtime::Result<()> {
        self.stats.host_calls += 1;
        // A wait, not progress: capped at `max_sleep`, cut short when the host wants the
        // operation to stop, and ended (with the operation) past the no-progress bound.
        let length = Duration::from_millis(milliseconds).min(self.max_sleep);
        let result = self.bounded_wait(Some(length), |_, slice| {
            std::thread::sleep(slice);
            Ok(false)
        });
        // The wait asked for (after the cap), not the clock's reading: what the connector
        // decided to wait is what a test of its retry policy compares.
        self.stats.sleep_time += length;
        result.map(|_| ())
    }

    fn limits(&mut self) -> HostLimits {
        self.stats.host_calls += 1;
        self.touch();
        // The numbers the transport enforces (`crate::http`), so a connector that stays inside
        // them never meets a refusal.
        let http = self.tenant.services.http.settings();
        HostLimits {
            max_response_body: http.max_body_bytes,
            default_timeout_ms: http.read_timeout.as_millis() as u64,
            max_timeout_ms: http.max_read_timeout.as_millis() as u64,
            max_pending_requests: http.max_pending_requests.max(1),
        }
    }
}
