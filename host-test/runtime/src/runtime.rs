//! The sandbox: one wasmtime engine, the component compiled and pre-instantiated once, and a
//! fresh store and instance for every invocation.
//!
//! Every guarantee the sandbox gives is configured here, in one screen:
//! - WASI with no preopened directories, no environment, no arguments, no sockets, closed stdin
//!   and discarded stdout/stderr;
//! - one cap on all of an instance's linear memories and tables together, and small counts of
//!   instances, memories and tables ([`SandboxLimiter`]): a growth past the cap traps the
//!   instance with a typed error, and the host carries on;
//! - a bound on guest computation between two host calls (an epoch deadline whose callback
//!   checks when the guest last called the host): a runaway loop that stops calling the host is
//!   interrupted, a long sync that keeps making calls never is, and time spent inside host calls
//!   (network, waits) never counts;
//! - bounded waits (`host.sleep` and the WASI clock waits, `imports/wasi_waits.rs`): each ends
//!   when the host asks the operation to stop, and an operation that waits without progress (a
//!   host call other than a wait) for longer than `max_wait_without_progress` ends with
//!   [`InvokeError::NoProgress`];
//! - bounded copies: wasmtime's hostcall fuel, the WASI resource table, the random-bytes
//!   request and the component handles are capped, and every list a host call takes or
//!   returns holds at most [`MAX_LIST_ITEMS`] items (a typed error past it, never a cut list);
//! - HTTP only through the `http` import, which applies `policy` and caps response bodies.
//!
//! A trap poisons an instance, so none is ever reused.
//!
//! The runtime loads any component of the `source-connector` world, and first checks the
//! version of the contract it was built for ([`check_contract_version`]): a component of
//! another (pre-1.0: minor) version is refused with a message naming both versions, before the
//! linker reports a missing import in its own words.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::compile_cache::{CacheOutcome, CompileCache};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::connector::{
    ChangeHint, ReindexSummary, SignedUrl, StreamSummary, SyncSummary,
};
use crate::bindings::manifest_types::ConnectorManifest;
use crate::bindings::types::{ConnectorError, User};
use crate::bindings::{CONTRACT_PACKAGE, CONTRACT_VERSION, SourceConnector, SourceConnectorPre};
use crate::imports::http::PendingRequests;
use crate::tenant::{InvocationStats, TenantContext};

/// Items one list of a host call may hold (changes of an `apply`, ids, paths, the records a
/// listing returns), the contract's figure (`wit/connector.wit`, `host.limits`).
pub const MAX_LIST_ITEMS: usize = 10_000;
/// Hostcall fuel per list item, on top of the bytes: wasmtime charges a lifted list the size of
/// its host-side items (a `records.change` is a few hundred bytes), so a list of
/// [`MAX_LIST_ITEMS`] items always fits.
pub const FUEL_PER_ITEM: usize = 1024;
/// Bytes a table element counts against [`SandboxConfig::memory_limit`] (a pointer).
pub const TABLE_ELEMENT_BYTES: usize = 8;
/// Core instances, memories and tables one component instance may create. A Rust component has
/// a handful of each (one memory; the connectors in this repository run under these); the caps
/// leave room without letting a component multiply the host's per-instance bookkeeping.
pub const MAX_INSTANCES: usize = 32;
pub const MAX_MEMORIES: usize = 4;
pub const MAX_TABLES: usize = 16;
/// WASI resources (pollables, streams) and component handles one instance may hold at once.
pub const MAX_HANDLES: usize = 1_000;
/// The largest `wasi:random` request, in bytes.
pub const MAX_RANDOM_BYTES: u64 = 1024 * 1024;
/// The longest `host.sleep` by default: five times the longest `Retry-After` the Dropbox
/// connector honours (60 s, `src/retry.rs`).
pub const DEFAULT_MAX_SLEEP: Duration = Duration::from_secs(300);

/// The limits every instance runs under.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// All of an instance's linear memories and tables together, in bytes (a table element
    /// counts [`TABLE_ELEMENT_BYTES`]).
    pub memory_limit: usize,
    /// Longest stretch of guest computation without any host call before the guest is
    /// interrupted as a runaway.
    pub max_compute_between_calls: Duration,
    /// Longest time an operation may go without progress (a host call other than a wait)
    /// while it waits (`host.sleep`, WASI clock waits); past it the operation ends with
    /// [`InvokeError::NoProgress`]. A WASI clock wait is clamped to a second past it.
    pub max_wait_without_progress: Duration,
    /// Longest single `host.sleep`: a longer one returns after this.
    pub max_sleep: Duration,
    /// Use the pooling allocator (faster instantiation, fixed reservations).
    pub pooling: bool,
    /// Instances that may run at once with the pooling allocator.
    pub max_instances: u32,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            memory_limit: 64 * 1024 * 1024,
            max_compute_between_calls: Duration::from_secs(10),
            max_wait_without_progress: Duration::from_secs(600),
            max_sleep: DEFAULT_MAX_SLEEP,
            pooling: false,
            max_instances: 64,
        }
    }
}

/// Why an invocation failed in the host (as opposed to the connector returning an error).
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("the guest computed for longer than allowed without calling the host (runaway loop?)")]
    Runaway,
    #[error("the guest exceeded its memory limit of {limit} bytes (memories and tables together)")]
    MemoryLimit { limit: usize },
    #[error("the guest exceeded a sandbox limit: {0}")]
    ResourceLimit(String),
    #[error(
        "the guest waited without making progress for longer than {bound:?} (no host call other than a wait)"
    )]
    NoProgress { bound: Duration },
    #[error("the host asked the operation to stop and the guest kept waiting")]
    Stopped,
    #[error("the guest trapped: {0}")]
    Trap(String),
    #[error("could not instantiate the component: {0}")]
    Instantiate(String),
}

/// Why a component cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read component {path}: {message}")]
    Read { path: String, message: String },
    #[error(
        "this component was built for {found}; this host runs {CONTRACT_PACKAGE}@{CONTRACT_VERSION} components"
    )]
    ContractVersion { found: String },
    #[error(
        "this component does not export {CONTRACT_PACKAGE}/connector (its exports: {exports}); \
         this host runs {CONTRACT_PACKAGE}@{CONTRACT_VERSION} components"
    )]
    NotAConnector { exports: String },
    #[error("cannot compile the component: {0}")]
    Compile(String),
    #[error("cannot link the component: {0}")]
    Link(String),
}

/// Check the component's exports for the contract this host implements: it must export
/// `pipeshub:connector/connector` at a version compatible with [`CONTRACT_VERSION`] (the same
/// major and, before 1.0, the same minor; any patch).
pub fn check_contract_version<'a>(
    export_names: impl IntoIterator<Item = &'a str>,
) -> Result<(), LoadError> {
    let names: Vec<&str> = export_names.into_iter().collect();
    let prefix = format!("{CONTRACT_PACKAGE}/connector");
    let Some(export) = names
        .iter()
        .find(|n| **n == prefix || n.starts_with(&format!("{prefix}@")))
    else {
        return Err(LoadError::NotAConnector {
            exports: if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            },
        });
    };
    let version = export.strip_prefix(&format!("{prefix}@")).unwrap_or("");
    if !compatible(version, CONTRACT_VERSION) {
        return Err(LoadError::ContractVersion {
            found: if version.is_empty() {
                format!("{CONTRACT_PACKAGE} without a version")
            } else {
                format!("{CONTRACT_PACKAGE}@{version}")
            },
        });
    }
    Ok(())
}

/// Semver compatibility as the contract states it: same major; before 1.0, same minor.
fn compatible(found: &str, wanted: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64)> {
        // Pre-release or build suffixes do not change the major and minor.
        let core = v.split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        parts.next()?.parse::<u64>().ok()?;
        Some((major, minor))
    };
    match (parse(found), parse(wanted)) {
        (Some((fm, fi)), Some((wm, wi))) => fm == wm && (wm > 0 || fi == wi),
        _ => false,
    }
}

/// One total over every linear memory and table of an instance (wasmtime asks it about every
/// creation and growth): refuses what would take the total past the cap, and remembers the
/// peak. Also caps how many instances, memories and tables a component may create.
pub struct SandboxLimiter {
    limit: usize,
    /// Bytes of the instance's memories and tables as they are now.
    total: usize,
    peak: usize,
    refused: bool,
}

impl SandboxLimiter {
    fn grow(&mut self, what: &str, current: usize, desired: usize) -> wasmtime::Result<bool> {
        let total = self.total.saturating_sub(current).saturating_add(desired);
        if total > self.limit {
            self.refused = true;
            return Err(wasmtime::Error::msg(format!(
                "memory limit exceeded: growing a {what} to {desired} bytes takes the instance to {total} bytes, {} allowed",
                self.limit
            )));
        }
        self.total = total;
        self.peak = self.peak.max(total);
        Ok(true)
    }
}

impl ResourceLimiter for SandboxLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow("memory", current, desired)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(
            "table",
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        )
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

/// Why the host ended an operation from inside a host call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    NoProgress,
    Stopped,
}

/// How a bounded wait ended (when it did not end the operation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitEnd {
    /// What was waited for is ready.
    Ready,
    /// The requested length passed.
    Elapsed,
    /// The host asked the operation to stop: the wait was cut short.
    Stopped,
}

/// A wait checks the stop flag and the no-progress bound at least this often.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// Per-invocation state of the store: WASI, limits, and the tenant's context.
pub struct TenantState {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    limiter: SandboxLimiter,
    clock: Arc<AtomicU64>,
    /// The clock's tick when the guest last called the host (or got control back from it).
    last_host_call: u64,
    runaway: bool,
    /// When the guest last made progress: a host call other than a wait.
    last_progress: Instant,
    /// A wait was cut short by a stop request since the last progress: the next one ends the
    /// operation.
    waited_after_stop: bool,
    /// Set when a host call ends the operation, so `classify` names why.
    ended: Option<Ended>,
    pub(crate) max_wait_without_progress: Duration,
    pub(crate) max_sleep: Duration,
    /// Requests begun with `http.start` and not yet waited for.
    pub(crate) http_pending: PendingRequests,
    pub tenant: TenantContext,
    pub stats: InvocationStats,
}

impl TenantState {
    /// Record that the guest is making progress through the host; every import but the waits
    /// calls this when it starts and when it is about to return.
    pub(crate) fn touch(&mut self) {
        self.last_host_call = self.clock.load(Ordering::Relaxed);
        self.last_progress = Instant::now();
        self.waited_after_stop = false;
    }

    /// End the operation from inside a host call: the error traps the guest, and `classify`
    /// turns it into the matching [`InvokeError`].
    pub(crate) fn end(&mut self, why: Ended) -> wasmtime::Error {
        self.ended = Some(why);
        match why {
            Ended::NoProgress => wasmtime::Error::msg(format!(
                "no progress for {:?}: the guest only waited",
                self.max_wait_without_progress
            )),
            Ended::Stopped => wasmtime::Error::msg("stopped: the guest kept waiting"),
        }
    }

    /// Wait in slices of at most [`WAIT_SLICE`]: `step(state, slice)` waits up to `slice` and
    /// says whether what it waits for is ready. The wait also ends when `length` (if any)
    /// passes, or when the host asks the operation to stop (once; a second wait after a stop
    /// without progress in between ends the operation). Past `max_wait_without_progress` since
    /// the last progress, the operation ends. Time spent here is not computation.
    pub(crate) fn bounded_wait(
        &mut self,
        length: Option<Duration>,
        mut step: impl FnMut(&mut TenantState, Duration) -> wasmtime::Result<bool>,
    ) -> wasmtime::Result<WaitEnd> {
        let started = Instant::now();
        let until = length.and_then(|l| started.checked_add(l));
        let result = loop {
            if self.tenant.should_stop() {
                if self.waited_after_stop {
                    break Err(self.end(Ended::Stopped));
                }
                self.waited_after_stop = true;
                break Ok(WaitEnd::Stopped);
            }
            let now = Instant::now();
            if until.is_some_and(|u| now >= u) {
                break Ok(WaitEnd::Elapsed);
            }
            let bound = self
                .last_progress
                .checked_add(self.max_wait_without_progress)
                .unwrap_or(now + WAIT_SLICE);
            if now >= bound {
                break Err(self.end(Ended::NoProgress));
            }
            let mut slice = WAIT_SLICE.min(bound - now);
            if let Some(u) = until {
                slice = slice.min(u - now);
            }
            match step(self, slice) {
                Ok(true) => break Ok(WaitEnd::Ready),
                Ok(false) => {}
                Err(e) => break Err(e),
            }
        };
        self.stats.wait_time += started.elapsed();
        // Waiting is not computation: the compute budget starts again from here.
        self.last_host_call = self.clock.load(Ordering::Relaxed);
        result
    }
}

/// Length of one epoch tick.
const TICK: Duration = Duration::from_millis(50);

/// Advances the engine's epoch and the runtime's clock every tick, for as long as the engine
/// lives.
fn start_ticker(engine: &Engine, clock: Arc<AtomicU64>) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            loop {
                std::thread::sleep(TICK);
                let Some(engine) = weak.upgrade() else { return };
                clock.fetch_add(1, Ordering::Relaxed);
                engine.increment_epoch();
            }
        })
        .ok();
}

impl WasiView for TenantState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

pub struct Runtime {
    engine: Engine,
    clock: Arc<AtomicU64>,
    pre: SourceConnectorPre<TenantState>,
    config: SandboxConfig,
    component_bytes: usize,
    cache_outcome: Option<CacheOutcome>,
}

impl Runtime {
    /// The component in the file at `path` (no cache).
    pub fn from_file(path: &Path, config: SandboxConfig) -> anyhow::Result<Runtime> {
        Runtime::from_file_cached(path, config, None)
    }

    /// The component in the file at `path`, through `cache` when given.
    pub fn from_file_cached(
        path: &Path,
        config: SandboxConfig,
        cache: Option<&CompileCache>,
    ) -> anyhow::Result<Runtime> {
        let bytes = std::fs::read(path).map_err(|e| LoadError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Runtime::build(&bytes, config, cache)
    }

    /// Compile `bytes` (no cache).
    pub fn from_bytes(bytes: &[u8], config: SandboxConfig) -> anyhow::Result<Runtime> {
        Runtime::build(bytes, config, None)
    }

    /// Load `bytes` through `cache` (compiled and stored when it holds no intact artifact).
    pub fn build(
        bytes: &[u8],
        config: SandboxConfig,
        cache: Option<&CompileCache>,
    ) -> anyhow::Result<Runtime> {
        let engine = Engine::new(&engine_config(&config))?;
        let (component, cache_outcome) = match cache {
            Some(cache) => {
                let (component, outcome) = cache.load_or_compile(&engine, bytes)?;
                // A cache that could not be used costs every command a compile: say why.
                match &outcome {
                    CacheOutcome::Bypassed(why) => tracing::warn!(
                        dir = %cache.dir().display(),
                        "compile cache not used: {why}; the component is compiled each time"
                    ),
                    CacheOutcome::Rebuilt(why) => tracing::info!(
                        dir = %cache.dir().display(),
                        "compiled artifact rebuilt: {why}"
                    ),
                    CacheOutcome::Hit | CacheOutcome::Stored => {}
                }
                (component, Some(outcome))
            }
            None => (
                Component::new(&engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?,
                None,
            ),
        };
        // The contract's version first: a component of another version would otherwise fail
        // below with "missing import" in the linker's words.
        let ty = component.component_type();
        let exports: Vec<String> = ty.exports(&engine).map(|(n, _)| n.to_string()).collect();
        check_contract_version(exports.iter().map(String::as_str))?;
        let mut linker: Linker<TenantState> = Linker::new(&engine);
        // WASI from wasmtime-wasi (the bindings map the world's WASI imports to it), then the
        // contract's own interfaces.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        // ...except the clock waits: the sandbox's own replace wasmtime-wasi's
        // `monotonic-clock` and `poll` (clamped, stop-aware, bounded without progress).
        linker.allow_shadowing(true);
        crate::imports::wasi_waits::add_to_linker(&mut linker)?;
        linker.allow_shadowing(false);
        add_contract_to_linker(&mut linker)?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(SourceConnectorPre::new)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let clock = Arc::new(AtomicU64::new(0));
        start_ticker(&engine, clock.clone());
        Ok(Runtime {
            engine,
            clock,
            pre,
            config,
            component_bytes: bytes.len(),
            cache_outcome,
        })
    }

    /// What the compile cache did when this runtime was built (`None`: no cache).
    pub fn cache_outcome(&self) -> Option<&CacheOutcome> {
        self.cache_outcome.as_ref()
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    pub fn component_size(&self) -> usize {
        self.component_bytes
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The component's imports and exports, as the component type declares them.
    pub fn component_interfaces(&self) -> (Vec<String>, Vec<String>) {
        let ty = self.pre.instance_pre().component().component_type();
        let imports = ty
            .imports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let exports = ty
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        (imports, exports)
    }

    /// A fresh, sandboxed instance for one invocation on behalf of `tenant`.
    pub fn instantiate(&self, tenant: TenantContext) -> Result<Instance, InvokeError> {
        // Nothing of the host leaks in: no args, no env, no preopens, no network, no stdio.
        let wasi = WasiCtxBuilder::new()
            .max_random_size(MAX_RANDOM_BYTES)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_HANDLES);
        let body_cap = tenant.services.http.settings().max_body_bytes;
        let state = TenantState {
            wasi,
            table,
            limiter: SandboxLimiter {
                limit: self.config.memory_limit,
                total: 0,
                peak: 0,
                refused: false,
            },
            clock: self.clock.clone(),
            last_host_call: self.clock.load(Ordering::Relaxed),
            runaway: false,
            last_progress: Instant::now(),
            waited_after_stop: false,
            ended: None,
            max_wait_without_progress: self.config.max_wait_without_progress,
            max_sleep: self.config.max_sleep,
            http_pending: PendingRequests::default(),
            tenant,
            stats: InvocationStats::default(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // What one guest-to-host call may copy: the contract's bytes (strings and byte lists,
        // twice the body cap) plus the host-side size of the most items the contract allows.
        store.set_hostcall_fuel(hostcall_fuel(body_cap));
        store.set_max_component_handles(MAX_HANDLES);
        let budget =
            (self.config.max_compute_between_calls.as_millis() / TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut ctx| {
            let state = ctx.data_mut();
            let now = state.clock.load(Ordering::Relaxed);
            if now.saturating_sub(state.last_host_call) > budget {
                state.runaway = true;
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(UpdateDeadline::Continue(1))
        });
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(&store, e))?;
        Ok(Instance { store, bindings })
    }
}

/// The contract's interfaces (not WASI, which `add_to_linker_sync` provides).
fn add_contract_to_linker(linker: &mut Linker<TenantState>) -> anyhow::Result<()> {
    use crate::bindings::pipeshub::connector as c;
    fn get(s: &mut TenantState) -> &mut TenantState {
        s
    }
    c::types::add_to_linker::<TenantState, HasSelf<TenantState>>(linker, get)?;
    c::http::add_to_linker::<TenantState, HasSelf<TenantState>>(linker, get)?;
    c::credentials::add_to_linker::<TenantState, HasSelf<TenantState>>(linker, get)?;
    c::records::add_to_linker::<TenantState, HasSelf<TenantState>>(linker, get)?;
    c::paths::add_to_linker::<TenantState, HasSelf<TenantState>>(linker, get)?;
    c::content_sink::add_to_linker::<TenantState, HasSelf<TenantState>>(linker, get)?;
    c::host::add_to_linker::<TenantState, HasSelf<TenantState>>(linker, get)?;
    c::manifest_types::add_to_linker::<TenantState, HasSelf<TenantState>>(linker, get)?;
    Ok(())
}

fn engine_config(config: &SandboxConfig) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    // A profiling build writes /tmp/perf-<pid>.map, so `perf report` names the guest's
    // functions (the component must keep its name section: build it without `strip`).
    #[cfg(feature = "profiling")]
    if std::env::var("HOST_TEST_PROFILER").as_deref() == Ok("perfmap") {
        c.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if config.pooling {
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(config.max_instances);
        pool.total_memories(config.max_instances);
        pool.total_tables(config.max_instances);
        pool.max_memory_size(config.memory_limit);
        c.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    }
    c
}

/// The hostcall fuel of an instance whose body cap is `body_cap` bytes.
pub fn hostcall_fuel(body_cap: u64) -> usize {
    usize::try_from(body_cap)
        .unwrap_or(usize::MAX)
        .saturating_mul(2)
        .saturating_add(MAX_LIST_ITEMS * FUEL_PER_ITEM)
}

fn classify(store: &Store<TenantState>, error: wasmtime::Error) -> InvokeError {
    let state = store.data();
    if state.limiter.refused {
        return InvokeError::MemoryLimit {
            limit: state.limiter.limit,
        };
    }
    match state.ended {
        Some(Ended::NoProgress) => {
            return InvokeError::NoProgress {
                bound: state.max_wait_without_progress,
            };
        }
        Some(Ended::Stopped) => return InvokeError::Stopped,
        None => {}
    }
    if state.runaway {
        return InvokeError::Runaway;
    }
    let message = format!("{error:#}");
    // wasmtime's own limits, in its words: counts of instances, memories and tables, the
    // resource table, the hostcall fuel, the random-bytes request.
    if [
        "resource limit exceeded",
        "resource table has no free keys",
        "fuel allocated for hostcalls has been exhausted",
        "exceeds limit",
    ]
    .iter()
    .any(|m| message.contains(m))
    {
        return InvokeError::ResourceLimit(message);
    }
    InvokeError::Trap(message)
}

/// One live instance. Use it for one operation, then drop it.
pub struct Instance {
    store: Store<TenantState>,
    bindings: SourceConnector,
}

macro_rules! export_call {
    ($name:ident, $call:ident, ($($arg:ident : $ty:ty),*), $ret:ty) => {
        pub fn $name(&mut self $(, $arg: $ty)*) -> Result<$ret, InvokeError> {
            let result = self.bindings.pipeshub_connector_connector().$call(&mut self.store $(, $arg)*);
            result.map_err(|e| classify(&self.store, e))
        }
    };
}

impl Instance {
    export_call!(manifest, call_manifest, (), ConnectorManifest);
    export_call!(test_connection, call_test_connection, (), Result<User, ConnectorError>);
    export_call!(sync, call_sync, (), Result<SyncSummary, ConnectorError>);
    export_call!(get_signed_url, call_get_signed_url, (id: &str), Result<SignedUrl, ConnectorError>);
    export_call!(stream_record, call_stream_record, (id: &str), Result<StreamSummary, ConnectorError>);
    export_call!(reindex_records, call_reindex_records, (ids: &[String]), Result<ReindexSummary, ConnectorError>);
    export_call!(wait_for_changes, call_wait_for_changes, (timeout_seconds: u32), Result<ChangeHint, ConnectorError>);
    export_call!(cleanup, call_cleanup, (), Result<(), ConnectorError>);

    /// The most memory (linear memories and tables together) the guest held, in bytes.
    pub fn peak_memory(&self) -> usize {
        self.store.data().limiter.peak
    }

    pub fn stats(&self) -> &InvocationStats {
        &self.store.data().stats
    }

    pub fn tenant(&self) -> &TenantContext {
        &self.store.data().tenant
    }

    pub fn into_parts(self) -> (TenantContext, InvocationStats, usize) {
        let peak = self.store.data().limiter.peak;
        let state = self.store.into_data();
        (state.tenant, state.stats, peak)
    }
}

/// Stop flag shared with a running invocation (`host.should-stop`).
pub type StopFlag = Arc<AtomicBool>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The hostcall fuel gives each list item [`FUEL_PER_ITEM`]: every item type a call may
    /// take must fit in it, or a list within the contract's count could be refused.
    #[test]
    fn every_list_item_fits_its_share_of_the_hostcall_fuel() {
        use crate::bindings::{records, types};
        for size in [
            std::mem::size_of::<records::Change>(),
            std::mem::size_of::<types::Permission>(),
            std::mem::size_of::<(String, String)>(),
            std::mem::size_of::<String>(),
        ] {
            assert!(size <= FUEL_PER_ITEM, "{size} bytes");
        }
        assert!(hostcall_fuel(1 << 20) >= 2 << 20);
    }

    #[test]
    fn only_a_compatible_contract_version_is_accepted() {
        let ok = ["wasi:cli/run@0.2.6", "pipeshub:connector/connector@0.2.0"];
        assert!(check_contract_version(ok).is_ok());
        assert!(check_contract_version(["pipeshub:connector/connector@0.2.7"]).is_ok());
        let old = check_contract_version(["pipeshub:connector/connector@0.1.1"]).unwrap_err();
        assert!(matches!(old, LoadError::ContractVersion { .. }));
        assert_eq!(
            old.to_string(),
            "this component was built for pipeshub:connector@0.1.1; this host runs pipeshub:connector@0.2.0 components"
        );
        for other in ["0.3.0", "1.2.0", "0.2", "x"] {
            let name = format!("pipeshub:connector/connector@{other}");
            assert!(
                check_contract_version([name.as_str()]).is_err(),
                "{other} accepted"
            );
        }
        assert!(matches!(
            check_contract_version(["wasi:cli/run@0.2.6"]),
            Err(LoadError::NotAConnector { .. })
        ));
    }

    /// A minimal real component exporting the 0.1.1 interface (an empty instance under that
    /// name), built here rather than kept as a binary: the runtime refuses it by version.
    #[test]
    fn a_component_of_the_previous_contract_is_refused_with_both_versions() {
        use wasm_encoder::{
            Component as Encoded, ComponentExportKind, ComponentExportSection,
            ComponentInstanceSection,
        };
        let mut component = Encoded::new();
        let mut instances = ComponentInstanceSection::new();
        instances.export_items(Vec::<(&str, ComponentExportKind, u32)>::new());
        component.section(&instances);
        let mut exports = ComponentExportSection::new();
        exports.export(
            "pipeshub:connector/connector@0.1.1",
            ComponentExportKind::Instance,
            0,
            None,
        );
        component.section(&exports);
        let bytes = component.finish();
        let err = match Runtime::from_bytes(&bytes, SandboxConfig::default()) {
            Ok(_) => panic!("a 0.1.1 component was loaded"),
            Err(e) => e,
        };
        let load = err.downcast_ref::<LoadError>().expect("a typed load error");
        assert!(matches!(load, LoadError::ContractVersion { .. }), "{load}");
        assert!(
            err.to_string().contains("pipeshub:connector@0.1.1")
                && err
                    .to_string()
                    .contains("this host runs pipeshub:connector@0.2.0"),
            "{err}"
        );
    }
}
