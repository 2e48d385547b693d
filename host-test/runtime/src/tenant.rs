//! What an instance runs on behalf of: the tenant (fixed by the host, never named by the
//! guest), the shared services it may use, and per-invocation observers.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::credentials::{CredentialManager, RunTokens};
use crate::http::{HttpClient, HttpSettings};
use crate::policy::NetPolicy;
use crate::store::RecordStore;

/// Services shared by every instance of a host: the store, the HTTP client, the network policy
/// and the credential manager.
pub struct Services {
    pub store: Arc<dyn RecordStore>,
    pub http: HttpClient,
    pub policy: NetPolicy,
    pub credentials: CredentialManager,
}

impl Services {
    pub fn new(
        store: Arc<dyn RecordStore>,
        policy: NetPolicy,
        http: HttpSettings,
        token_url: &str,
    ) -> Arc<Services> {
        Services::with_run_tokens(store, policy, http, token_url, Arc::default())
    }

    /// Services whose credential manager also attaches the tokens given for one run in
    /// `run_tokens` (shared by every set of services of one host).
    pub fn with_run_tokens(
        store: Arc<dyn RecordStore>,
        policy: NetPolicy,
        http: HttpSettings,
        token_url: &str,
        run_tokens: Arc<RunTokens>,
    ) -> Arc<Services> {
        Arc::new(Services {
            credentials: CredentialManager::with_run_tokens(
                store.clone(),
                token_url.to_string(),
                run_tokens,
            ),
            store,
            http: HttpClient::new(http),
            policy,
        })
    }
}

/// A log line or a progress report from the guest.
#[derive(Debug, Clone, PartialEq)]
pub enum GuestSignal {
    Log {
        level: String,
        message: String,
    },
    Progress {
        phase: String,
        pages: u32,
        entries: u64,
        total: Option<u64>,
    },
}

pub type Observer = Box<dyn FnMut(&GuestSignal) + Send>;

pub struct TenantContext {
    pub tenant: String,
    pub services: Arc<Services>,
    /// The tenant's settings, already validated against the manifest.
    pub settings: Vec<(String, String)>,
    /// Where `stream-record` content goes.
    pub sink: Option<Box<dyn Write + Send>>,
    pub observer: Option<Observer>,
    pub stop: Arc<AtomicBool>,
}

impl TenantContext {
    pub fn new(tenant: &str, services: Arc<Services>) -> TenantContext {
        TenantContext {
            tenant: tenant.to_string(),
            services,
            settings: Vec::new(),
            sink: None,
            observer: None,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn with_settings(mut self, settings: Vec<(String, String)>) -> Self {
        self.settings = settings;
        self
    }

    pub fn with_sink(mut self, sink: Box<dyn Write + Send>) -> Self {
        self.sink = Some(sink);
        self
    }

    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn with_stop(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = stop;
        self
    }

    pub fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// What one invocation did, measured by the host.
#[derive(Debug, Clone, Default)]
pub struct InvocationStats {
    /// Requests sent, by URL path (e.g. "/2/files/list_folder/continue").
    pub requests: BTreeMap<String, u64>,
    pub http_time: Duration,
    pub store_time: Duration,
    /// Time the guest asked to wait in `host.sleep` (retries), after the host's cap.
    pub sleep_time: Duration,
    /// Time the guest spent in any wait: `host.sleep` and the WASI clock waits.
    pub wait_time: Duration,
    pub host_calls: u64,
    pub bytes_received: u64,
    /// Responses with status 429 delivered to the guest: the source asked it to slow down.
    pub rate_limited_responses: u64,
    pub logs: Vec<(String, String)>,
}

impl InvocationStats {
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }
}
