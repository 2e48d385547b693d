//! `host-test bench`: measures the connector against its limits, against the in-process
//! emulator, and prints the figures next to their ceilings. These are measurements, not
//! tests: nothing here passes or fails on a stopwatch.
//!
//! Ceilings: the minimal number of API calls (one identity call, one listing call per 2,000
//! entries, the shared-link pages). The guest's own timings (decoding, planning) come from the
//! `phases` of its sync summary. (The native-decoding ceiling is the connector crate's own
//! benchmark: this host no longer links the connector.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};

use crate::app::ConnectorHost;
use crate::bindings::connector::PhaseTime;
use crate::emulator::{Content, Emulator, EmulatorConfig, Kind};
use crate::http::HttpSettings;
use crate::runtime::{Runtime, SandboxConfig};
use crate::store::{RecordStore, SqliteStore, StoredCredentials};

pub struct BenchOptions {
    pub files: Vec<usize>,
    pub latency_ms: Vec<u64>,
    pub incremental_base: usize,
    pub incremental_changes: Vec<usize>,
    pub stream_mib: u64,
    pub repeats: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// Resident set size now and the peak since the last reset, in bytes (Linux).
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn reset_peak_rss() {
    // "5" resets the peak RSS counter (Linux >= 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

struct SyncRun {
    wall: Duration,
    entries: u64,
    pages: u32,
    api_calls: u64,
    min_calls: u64,
    http: Duration,
    emulator: Duration,
    store: Duration,
    decode: Duration,
    plan: Duration,
    host_calls: u64,
    guest_peak: usize,
    rss_peak: u64,
    rss_before: u64,
}

/// The guest's decoding and planning time, from the phases its sync summary names ("decode",
/// "plan"; a phase it does not report counts as zero).
fn guest_timings(phases: &[PhaseTime]) -> (Duration, Duration) {
    let total = |name: &str| {
        Duration::from_micros(
            phases
                .iter()
                .filter(|p| p.name == name)
                .map(|p| p.microseconds)
                .sum(),
        )
    };
    (total("decode"), total("plan"))
}

fn host_for(
    runtime: &Arc<Runtime>,
    emulator: &Emulator,
    dir: &tempfile::TempDir,
    name: &str,
) -> Result<ConnectorHost> {
    host_with(runtime, emulator, dir, name, HttpSettings::default())
}

fn host_with(
    runtime: &Arc<Runtime>,
    emulator: &Emulator,
    dir: &tempfile::TempDir,
    name: &str,
    http: HttpSettings,
) -> Result<ConnectorHost> {
    let store = Arc::new(SqliteStore::open(&dir.path().join(format!("{name}.db")))?);
    connected_host(runtime, store, emulator, http)
}

/// A host on `store` whose tenant "bench" is connected to the emulator's account.
pub(crate) fn connected_host(
    runtime: &Arc<Runtime>,
    store: Arc<dyn RecordStore>,
    emulator: &Emulator,
    http: HttpSettings,
) -> Result<ConnectorHost> {
    let host = ConnectorHost::new(runtime.clone(), store, Some(&emulator.base_url()), http)?;
    host.connect(
        "bench",
        StoredCredentials {
            access_token: emulator.access_token(),
            ..Default::default()
        },
    )?;
    Ok(host)
}

fn one_sync(host: &ConnectorHost, emulator: &Emulator, links: usize) -> Result<SyncRun> {
    emulator.reset_counts();
    let (rss_before, _) = rss();
    reset_peak_rss();
    let started = Instant::now();
    let outcome = host.sync("bench", None, None)?;
    let wall = started.elapsed();
    let (_, rss_peak) = rss();
    let (decode, plan) = guest_timings(&outcome.value.phases);
    let entries = outcome.value.entries;
    let link_pages = (links as u64).div_ceil(200).max(1);
    Ok(SyncRun {
        wall,
        entries,
        pages: outcome.value.pages,
        api_calls: outcome.stats.total_requests(),
        min_calls: 1 + entries.div_ceil(2000).max(1) + link_pages,
        http: outcome.stats.http_time,
        emulator: emulator.handler_time(),
        store: outcome.stats.store_time,
        decode,
        plan,
        host_calls: outcome.stats.host_calls,
        guest_peak: outcome.peak_memory,
        rss_peak,
        rss_before,
    })
}

/// The network alone, as a plain client meets it: the calls a full sync makes (the identity,
/// the shared links, every listing page at 2,000 entries), one after the other over one
/// keep-alive connection, reading only what paging needs (`cursor`, `has_more`) and skipping
/// the entries unparsed. With latency per request this is the round trips plus the server's
/// own time to build each page and the transfer: what the network costs a client that does
/// nothing else. Returns the wall time and the calls made.
fn plain_client_listing(emulator: &Emulator) -> Result<(Duration, u64)> {
    #[derive(serde::Deserialize)]
    struct Page {
        cursor: Option<String>,
        has_more: bool,
    }
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(true)
        .build()
        .new_agent();
    let base = emulator.base_url();
    let auth = format!("Bearer {}", emulator.access_token());
    // The body of a call's answer (an error status is an error).
    let call = |route: &str, body: &Value| -> Result<Vec<u8>> {
        let mut resp = agent
            .post(&format!("{base}/2/{route}"))
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .send(body.to_string())?;
        Ok(resp
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()?)
    };
    let page = |route: &str, body: &Value| -> Result<Page> {
        Ok(serde_json::from_slice::<Page>(&call(route, body)?)?)
    };
    let started = Instant::now();
    let mut calls = 3u64;
    call("users/get_current_account", &Value::Null)?;
    let mut links = page("sharing/list_shared_links", &json!({}))?;
    while links.has_more {
        let Some(cursor) = links.cursor.take() else {
            anyhow::bail!("a shared-links page with has_more and no cursor");
        };
        links = page("sharing/list_shared_links", &json!({ "cursor": cursor }))?;
        calls += 1;
    }
    let mut listing = page(
        "files/list_folder",
        &json!({"path": "", "recursive": true, "limit": 2000,
                "include_mounted_folders": true, "include_non_downloadable_files": true}),
    )?;
    while listing.has_more {
        let Some(cursor) = listing.cursor.take() else {
            anyhow::bail!("a listing page with has_more and no cursor");
        };
        listing = page("files/list_folder/continue", &json!({ "cursor": cursor }))?;
        calls += 1;
    }
    Ok((started.elapsed(), calls))
}

fn sync_json(label: &str, files: usize, r: &SyncRun) -> Value {
    let eps = r.entries as f64 / r.wall.as_secs_f64().max(1e-9);
    json!({
        "run": label,
        "files": files,
        "entries": r.entries,
        "pages": r.pages,
        "wall_s": r.wall.as_secs_f64(),
        "entries_per_s": eps,
        "api_calls": r.api_calls,
        "min_api_calls": r.min_calls,
        "ratio_to_min_calls": r.api_calls as f64 / r.min_calls as f64,
        "time_s": {
            "http_total": r.http.as_secs_f64(),
            "in_emulator": r.emulator.as_secs_f64(),
            "transport": (r.http.saturating_sub(r.emulator)).as_secs_f64(),
            "guest_json_decode": r.decode.as_secs_f64(),
            "guest_planning": r.plan.as_secs_f64(),
            "sqlite": r.store.as_secs_f64(),
            "rest_guest_and_crossings": (r.wall.saturating_sub(r.http + r.store + r.decode)).as_secs_f64(),
        },
        "host_calls": r.host_calls,
        "guest_peak_memory_mib": mib(r.guest_peak as u64),
        "process_rss_before_mib": mib(r.rss_before),
        "process_peak_rss_mib": mib(r.rss_peak),
    })
}

pub fn run(opts: &BenchOptions) -> Result<Value> {
    // The bench measures the Dropbox connector against the Dropbox emulator: the default
    // component, always.
    let runtime = Arc::new(crate::components::default_runtime(SandboxConfig::default())?);
    let dir = tempfile::tempdir()?;
    let mut report = json!({});

    // The component itself.
    let wasm = std::fs::read(crate::components::default_component_path())?;
    report["component_bytes"] = json!(wasm.len());

    // Cold start: compile, or load a precompiled artifact; instantiate; first call.
    {
        let engine = runtime.engine().clone();
        let mut compile = Vec::new();
        let mut load = Vec::new();
        let mut serialized = Vec::new();
        for _ in 0..opts.repeats.max(3) {
            let t = Instant::now();
            let component = wasmtime::component::Component::new(&engine, &wasm)?;
            compile.push(t.elapsed().as_secs_f64() * 1e3);
            serialized = component.serialize()?;
            let t = Instant::now();
            // SAFETY: the bytes were produced by `serialize` on this engine a moment ago.
            let _loaded =
                unsafe { wasmtime::component::Component::deserialize(&engine, &serialized)? };
            load.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let bare = Arc::new(SqliteStore::open_in_memory()?);
        let host = ConnectorHost::new(runtime.clone(), bare, None, Default::default())?;
        let mut instantiate = Vec::new();
        let mut first_call = Vec::new();
        for _ in 0..20 {
            let ctx = host.context("cold")?;
            let t = Instant::now();
            let mut instance = runtime.instantiate(ctx)?;
            instantiate.push(t.elapsed().as_secs_f64() * 1e6);
            let t = Instant::now();
            let _ = instance.manifest()?;
            first_call.push(t.elapsed().as_secs_f64() * 1e6);
        }
        report["cold_start"] = json!({
            "compile_ms": median(compile),
            "load_precompiled_ms": median(load),
            "precompiled_bytes": serialized.len(),
            "instantiate_us": median(instantiate),
            "first_call_manifest_us": median(first_call),
        });
    }

    // One crossing of the sandbox boundary (a cheap host call), from the hostile test guest.
    {
        let hostile = crate::components::hostile_runtime(SandboxConfig::default())?;
        let store = Arc::new(SqliteStore::open_in_memory()?);
        let services = crate::tenant::Services::new(
            store,
            crate::policy::NetPolicy::new(Vec::<String>::new(), None)?,
            Default::default(),
            "",
        );
        let mut per_call = Vec::new();
        for _ in 0..opts.repeats.max(3) {
            let n = 200_000u64;
            let mut i =
                hostile.instantiate(crate::tenant::TenantContext::new("x", services.clone()))?;
            let t = Instant::now();
            let _ = i.get_signed_url(&format!("calls {n}"))?;
            per_call.push(t.elapsed().as_secs_f64() * 1e9 / n as f64);
        }
        report["host_call_ns"] = json!(median(per_call));
    }

    // Full syncs.
    let mut full = Vec::new();
    for &files in &opts.files {
        eprintln!("bench: full sync of {files} files...");
        let emulator = Emulator::start(EmulatorConfig {
            files,
            seed: 42,
            ..Default::default()
        })?;
        let links = emulator
            .truth()
            .iter()
            .filter(|t| t.shared_url.is_some())
            .count();
        let mut runs = Vec::new();
        for r in 0..opts.repeats {
            let host = host_for(&runtime, &emulator, &dir, &format!("full-{files}-{r}"))?;
            runs.push(one_sync(&host, &emulator, links)?);
        }
        runs.sort_by_key(|r| r.wall);
        let mid = &runs[runs.len() / 2];
        full.push(sync_json("full", files, mid));
        // The same sync with latency per request, with and without the overlap of the next
        // page's fetch with the current page's work. The goal is a wall time close to
        // max(network, local), not their sum: "local" is the median wall time without latency
        // above, "network" the round trips alone (calls x latency).
        let local_s = mid.wall.as_secs_f64();
        for &latency_ms in opts.latency_ms.iter().filter(|&&l| l > 0) {
            emulator.set_latency(Duration::from_millis(latency_ms));
            let mut plain = Vec::new();
            let mut plain_calls = 0;
            for _ in 0..opts.repeats {
                let (took, calls) = plain_client_listing(&emulator)?;
                plain.push(took.as_secs_f64());
                plain_calls = calls;
            }
            let plain_s = median(plain);
            for overlap in [false, true] {
                eprintln!(
                    "bench: full sync of {files} files with {latency_ms} ms per request, overlap {}...",
                    if overlap { "on" } else { "off" }
                );
                let http = HttpSettings {
                    background_requests: overlap,
                    ..HttpSettings::default()
                };
                let mut runs = Vec::new();
                for r in 0..opts.repeats {
                    let name = format!("latency-{files}-{latency_ms}-{overlap}-{r}");
                    let host = host_with(&runtime, &emulator, &dir, &name, http.clone())?;
                    runs.push(one_sync(&host, &emulator, links)?);
                }
                runs.sort_by_key(|r| r.wall);
                let r = &runs[runs.len() / 2];
                let network_s = r.api_calls as f64 * latency_ms as f64 / 1000.0;
                let mut v = sync_json(
                    if overlap {
                        "full+latency, overlapped"
                    } else {
                        "full+latency, in series"
                    },
                    files,
                    r,
                );
                v["latency_ms"] = json!(latency_ms);
                v["overlap"] = json!(overlap);
                v["round_trip_floor_s"] = json!(r.min_calls as f64 * latency_ms as f64 / 1000.0);
                v["network_s"] = json!(network_s);
                v["local_s"] = json!(local_s);
                v["ratio_to_max_network_local"] =
                    json!(r.wall.as_secs_f64() / network_s.max(local_s).max(1e-9));
                // The same with the network as a plain client meets it (latency, the server's
                // own time per page, transfer): see `plain_client_listing`.
                v["plain_client_s"] = json!(plain_s);
                v["plain_client_calls"] = json!(plain_calls);
                v["ratio_to_max_plain_client_local"] =
                    json!(r.wall.as_secs_f64() / plain_s.max(local_s).max(1e-9));
                v["ratio_to_sum_network_local"] =
                    json!(r.wall.as_secs_f64() / (network_s + local_s).max(1e-9));
                full.push(v);
            }
            emulator.set_latency(Duration::ZERO);
        }
    }
    report["full_sync"] = json!(full);

    // Incremental syncs after k changes.
    if opts.incremental_base > 0 {
        eprintln!(
            "bench: incremental syncs on a {}-file account...",
            opts.incremental_base
        );
        let emulator = Emulator::start(EmulatorConfig {
            files: opts.incremental_base,
            seed: 43,
            ..Default::default()
        })?;
        let links = emulator
            .truth()
            .iter()
            .filter(|t| t.shared_url.is_some())
            .count();
        let host = host_for(&runtime, &emulator, &dir, "incremental")?;
        host.sync("bench", None, None)?;
        let mut rows = Vec::new();
        for &k in &opts.incremental_changes {
            let files: Vec<_> = emulator
                .truth()
                .into_iter()
                .filter(|t| t.kind == Kind::File && t.is_downloadable)
                .take(k)
                .collect();
            for (i, f) in files.iter().enumerate() {
                emulator.modify_file(
                    &f.path_display,
                    Content::Bytes(format!("bench edit {i}").into_bytes()),
                )?;
            }
            let r = one_sync(&host, &emulator, links)?;
            let mut v = sync_json("incremental", opts.incremental_base, &r);
            v["changes"] = json!(k);
            rows.push(v);
        }
        report["incremental_sync"] = json!(rows);
    }

    // Streaming through the sandbox vs a plain HTTP download of the same file.
    if opts.stream_mib > 0 {
        eprintln!("bench: streaming a {} MiB file...", opts.stream_mib);
        let emulator = Emulator::start(EmulatorConfig {
            files: 0,
            seed: 44,
            ..Default::default()
        })?;
        let len = opts.stream_mib * 1024 * 1024;
        emulator.create_file("/bench/big.bin", Content::Pattern { seed: 9, len })?;
        let host = host_for(&runtime, &emulator, &dir, "stream")?;
        host.sync("bench", None, None)?;
        let id = host.resolve_record("bench", "/bench/big.bin")?;
        let mut through = Vec::new();
        let mut plain = Vec::new();
        let mut peak = 0usize;
        for _ in 0..opts.repeats.max(3) {
            let t = Instant::now();
            let o = host.stream("bench", &id, Box::new(std::io::sink()))?;
            through.push(mib(len) / t.elapsed().as_secs_f64());
            peak = peak.max(o.peak_memory);
            let url = host.signed_url("bench", &id)?.value.url;
            let agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .new_agent();
            let t = Instant::now();
            let mut resp = agent.get(&url).call()?;
            let n = std::io::copy(&mut resp.body_mut().as_reader(), &mut std::io::sink())?;
            plain.push(mib(n) / t.elapsed().as_secs_f64());
        }
        let (s, p) = (median(through), median(plain));
        report["streaming"] = json!({
            "file_mib": opts.stream_mib,
            "through_sandbox_mib_per_s": s,
            "plain_http_mib_per_s": p,
            "ratio": s / p,
            "guest_peak_memory_mib": mib(peak as u64),
        });
    }
    Ok(report)
}

/// The report as a table for people.
pub fn table(report: &Value) -> String {
    let mut out = String::new();
    let f = |v: &Value| {
        v.as_f64()
            .map(|x| format!("{x:.3}"))
            .unwrap_or_else(|| "-".into())
    };
    out.push_str(&format!("component: {} bytes\n", report["component_bytes"]));
    let c = &report["cold_start"];
    out.push_str(&format!(
        "cold start: compile {} ms | load precompiled {} ms | instantiate {} µs | first call {} µs\n",
        f(&c["compile_ms"]),
        f(&c["load_precompiled_ms"]),
        f(&c["instantiate_us"]),
        f(&c["first_call_manifest_us"])
    ));
    out.push_str(&format!(
        "one host call (boundary crossing): {} ns\n\n",
        f(&report["host_call_ns"])
    ));
    out.push_str("| run | files | changes | entries | wall s | entries/s | API calls | min | in emulator s | transport s | guest decode s | guest plan s | SQLite s | guest peak MiB | process peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    let rows = report["full_sync"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(report["incremental_sync"].as_array().into_iter().flatten());
    for r in rows {
        let t = &r["time_s"];
        let label = match r["latency_ms"].as_u64() {
            Some(l) => format!("{} ({l} ms/request)", r["run"].as_str().unwrap_or("")),
            None => r["run"].as_str().unwrap_or("").to_string(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            label,
            r["files"],
            r["changes"]
                .as_u64()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            r["entries"],
            f(&r["wall_s"]),
            r["entries_per_s"].as_f64().unwrap_or(0.0),
            r["api_calls"],
            r["min_api_calls"],
            f(&t["in_emulator"]),
            f(&t["transport"]),
            f(&t["guest_json_decode"]),
            f(&t["guest_planning"]),
            f(&t["sqlite"]),
            f(&r["guest_peak_memory_mib"]),
            f(&r["process_peak_rss_mib"]),
        ));
    }
    for r in report["full_sync"].as_array().into_iter().flatten() {
        if r.get("network_s").is_none() {
            continue;
        }
        out.push_str(&format!(
            "\n{} files, {} ms per request, overlap {}: wall {} s; network alone {} s (latency x calls), {} s (a plain client, {} calls), local alone {} s; wall / max(network, local) = {} (latency x calls), {} (plain client); wall / (network + local) = {}",
            r["files"],
            r["latency_ms"],
            if r["overlap"] == json!(true) { "on" } else { "off" },
            f(&r["wall_s"]),
            f(&r["network_s"]),
            f(&r["plain_client_s"]),
            r["plain_client_calls"],
            f(&r["local_s"]),
            f(&r["ratio_to_max_network_local"]),
            f(&r["ratio_to_max_plain_client_local"]),
            f(&r["ratio_to_sum_network_local"]),
        ));
    }
    out.push('\n');
    if let Some(s) = report.get("streaming") {
        out.push_str(&format!(
            "\nstreaming {} MiB: through the sandbox {} MiB/s, plain HTTP {} MiB/s (ratio {}), guest peak {} MiB\n",
            s["file_mib"],
            f(&s["through_sandbox_mib_per_s"]),
            f(&s["plain_http_mib_per_s"]),
            f(&s["ratio"]),
            f(&s["guest_peak_memory_mib"])
        ));
    }
    out
}
