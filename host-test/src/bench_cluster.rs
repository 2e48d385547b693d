//! `host-test bench-cluster`: the figures of the PostgreSQL store and of watch workers sharing
//! tenants (BENCHMARKS.md, issue 14).
//!
//! 1. One full sync of a large account into SQLite and into PostgreSQL, in the same run, with
//!    the same component and emulator: entries per second and the time spent in the store.
//! 2. Many tenants (accounts served by a few emulators) synced by 1, 2, 3 `watch` worker
//!    processes on a fresh PostgreSQL database each: wall time until every tenant's first
//!    sync completed, tenants per second, whether any tenant was ever held by two workers at
//!    once (from the lease history), whether any record got two `created` events, whether
//!    every store holds its account's entry count; with the last worker count, one worker is
//!    SIGKILLed mid-sync and the time until its tenants are taken over is measured.
//!
//! Each database is created fresh on the server `--db` names and dropped afterwards.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::emulator::{Emulator, EmulatorConfig};
use crate::runtime::{Runtime, SandboxConfig};
use crate::secrets::Keyring;
use crate::store::pg::testing::TestDatabase;
use crate::store::{PgStore, RecordStore, SqliteStore, StoredCredentials, SyncOutcome};

pub struct ClusterBenchOptions {
    /// The PostgreSQL server to create the databases on.
    pub server: String,
    pub files: usize,
    pub tenants: usize,
    pub tenant_files: usize,
    pub emulators: usize,
    pub workers: Vec<usize>,
    pub lease_ttl_secs: f64,
    pub latency_ms: u64,
    pub max_concurrent: usize,
}

pub fn run(opts: &ClusterBenchOptions) -> Result<Value> {
    let runtime = Arc::new(crate::components::default_runtime(SandboxConfig::default())?);
    let full = if opts.files > 0 {
        full_syncs(&runtime, opts)?
    } else {
        Value::Null
    };
    let mut clusters = Vec::new();
    let last = opts.workers.iter().copied().max().unwrap_or(0);
    for &workers in &opts.workers {
        let kill = workers == last && workers > 1;
        clusters.push(cluster(opts, workers, kill)?);
    }
    Ok(json!({"full_sync": full, "workers": clusters}))
}

fn full_syncs(runtime: &Arc<Runtime>, opts: &ClusterBenchOptions) -> Result<Value> {
    let emulator = Emulator::start(EmulatorConfig {
        files: opts.files,
        seed: 1,
        ..Default::default()
    })?;
    let dir = tempfile::tempdir()?;
    let sqlite: Arc<dyn RecordStore> = Arc::new(SqliteStore::open(&dir.path().join("bench.db"))?);
    let db = TestDatabase::create_on(&opts.server).map_err(anyhow::Error::msg)?;
    let pg: Arc<dyn RecordStore> = Arc::new(PgStore::connect(db.url(), test_keyring()?)?);
    let mut out = Vec::new();
    for (name, store) in [("sqlite", sqlite), ("postgres", pg)] {
        let host =
            crate::bench::connected_host(runtime, store.clone(), &emulator, Default::default())?;
        let started = Instant::now();
        let outcome = host.sync("bench", None, None)?;
        let wall = started.elapsed();
        let records = store.record_count("bench")?;
        out.push(json!({
            "store": name,
            "files": opts.files,
            "entries": outcome.value.entries,
            "records": records,
            "wall_s": wall.as_secs_f64(),
            "entries_per_s": outcome.value.entries as f64 / wall.as_secs_f64().max(1e-9),
            "store_s": outcome.stats.store_time.as_secs_f64(),
            "http_s": outcome.stats.http_time.as_secs_f64(),
        }));
    }
    Ok(Value::Array(out))
}

fn test_keyring() -> Result<Keyring> {
    Ok(Keyring::parse(&Keyring::generate_key(), "a bench key")?)
}

struct WorkerProcess {
    id: String,
    child: Child,
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cluster(opts: &ClusterBenchOptions, workers: usize, kill: bool) -> Result<Value> {
    let key = Keyring::generate_key();
    let db = TestDatabase::create_on(&opts.server).map_err(anyhow::Error::msg)?;
    let store = PgStore::connect(db.url(), Keyring::parse(&key, "bench")?)?;
    let emulators: Vec<Emulator> = (0..opts.emulators.max(1))
        .map(|i| {
            let e = Emulator::start(EmulatorConfig {
                files: opts.tenant_files,
                seed: 1000 + i as u64,
                ..Default::default()
            })?;
            e.set_latency(Duration::from_millis(opts.latency_ms));
            Ok(e)
        })
        .collect::<Result<_>>()?;
    let names: Vec<String> = (0..opts.tenants).map(|i| format!("t{i:04}")).collect();
    let mut expected: HashMap<String, usize> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        let e = &emulators[i % emulators.len()];
        store.set_tenant_api_url(name, Some(&e.base_url()))?;
        store.put_credentials(
            name,
            &StoredCredentials {
                access_token: e.access_token(),
                ..Default::default()
            },
        )?;
        expected.insert(name.clone(), e.truth().len());
    }
    let exe = std::env::current_exe().context("the path of this program")?;
    let spawn = |id: &str| -> Result<WorkerProcess> {
        let child = Command::new(&exe)
            .args(["watch", "--db", db.url(), "--json", "--no-longpoll"])
            .args(["--lease-ttl", &opts.lease_ttl_secs.to_string()])
            .args(["--worker-id", id])
            .args(["--max-concurrent", &opts.max_concurrent.to_string()])
            .env("HOST_TEST_SECRET_KEY", &key)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a worker")?;
        Ok(WorkerProcess {
            id: id.to_string(),
            child,
        })
    };
    let started = Instant::now();
    let mut procs: Vec<WorkerProcess> = (1..=workers)
        .map(|i| spawn(&format!("w{i}")))
        .collect::<Result<_>>()?;
    let deadline = started + Duration::from_secs(1800);
    let completed = |store: &PgStore| -> Result<usize> {
        Ok(store
            .schedules()?
            .iter()
            .filter(|s| s.last_outcome == Some(SyncOutcome::Ok))
            .count())
    };
    let mut failover: Option<Value> = None;
    if kill {
        // Kill w1 once a third of the tenants are done, while it holds leases.
        loop {
            if Instant::now() > deadline {
                bail!("the workers made no progress");
            }
            let done = completed(&store)?;
            let held: Vec<_> = store
                .lease_history(None)?
                .into_iter()
                .filter(|l| l.worker == "w1" && l.ended.is_none() && l.released_at.is_none())
                .collect();
            if done * 3 >= opts.tenants && !held.is_empty() {
                let victim = procs.remove(0);
                let mut victim = victim;
                victim.child.kill()?;
                victim.child.wait()?;
                let mut admin = db.client();
                let killed_at: i64 = admin.query_one("SELECT conn_rt_now_ms()", &[])?.get(0);
                failover = Some(
                    json!({"killed": victim.id, "killed_at_ms": killed_at, "held": held.iter().map(|l| json!([l.tenant, l.epoch])).collect::<Vec<_>>()}),
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    while completed(&store)? < opts.tenants {
        if Instant::now() > deadline {
            bail!("not every tenant synced within 30 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let wall = started.elapsed();
    drop(procs);

    // Checks, from the database alone.
    let history = store.lease_history(None)?;
    let mut overlaps = 0;
    let mut by_tenant: HashMap<&str, Vec<_>> = HashMap::new();
    for l in &history {
        by_tenant.entry(l.tenant.as_str()).or_default().push(l);
    }
    for leases in by_tenant.values_mut() {
        leases.sort_by_key(|l| l.epoch);
        overlaps += leases
            .windows(2)
            .filter(|p| p[1].acquired_at < p[0].end())
            .count();
    }
    let mut admin = db.client();
    let duplicate_created: i64 = admin
        .query_one(
            "SELECT count(*) FROM (SELECT tenant, external_id FROM events WHERE kind = 'created'
             GROUP BY tenant, external_id HAVING count(*) > 1) d",
            &[],
        )?
        .get(0);
    let mut wrong_counts = 0;
    for name in &names {
        if store.record_count(name)? as usize != expected[name] {
            wrong_counts += 1;
        }
    }
    if let Some(f) = failover.as_mut() {
        let killed_at = f["killed_at_ms"].as_i64().unwrap_or_default();
        let mut worst = 0i64;
        for pair in f["held"].as_array().cloned().unwrap_or_default() {
            let tenant = pair[0].as_str().unwrap_or_default();
            let epoch = pair[1].as_i64().unwrap_or_default();
            let next = history
                .iter()
                .filter(|l| l.tenant == tenant && l.epoch > epoch)
                .map(|l| l.acquired_at)
                .min();
            match next {
                Some(at) => worst = worst.max(at - killed_at),
                None => worst = i64::MAX,
            }
        }
        f["takeover_after_kill_ms_max"] = json!(worst);
    }
    Ok(json!({
        "workers": workers,
        "tenants": opts.tenants,
        "files_per_tenant": opts.tenant_files,
        "wall_s": wall.as_secs_f64(),
        "tenants_per_s": opts.tenants as f64 / wall.as_secs_f64().max(1e-9),
        "leases": history.len(),
        "overlapping_leases": overlaps,
        "duplicate_created_events": duplicate_created,
        "stores_with_wrong_record_count": wrong_counts,
        "failover": failover,
    }))
}

pub fn table(report: &Value) -> String {
    let mut s = String::new();
    if let Some(full) = report["full_sync"].as_array() {
        s.push_str("Full sync, same account, same run:\n");
        s.push_str("  store     files    entries   wall s  entries/s  store s   http s\n");
        for r in full {
            s.push_str(&format!(
                "  {:<8} {:>6} {:>10} {:>8.2} {:>10.0} {:>8.2} {:>8.2}\n",
                r["store"].as_str().unwrap_or_default(),
                r["files"].as_u64().unwrap_or_default(),
                r["entries"].as_u64().unwrap_or_default(),
                r["wall_s"].as_f64().unwrap_or_default(),
                r["entries_per_s"].as_f64().unwrap_or_default(),
                r["store_s"].as_f64().unwrap_or_default(),
                r["http_s"].as_f64().unwrap_or_default(),
            ));
        }
    }
    if let Some(runs) = report["workers"].as_array() {
        s.push_str("\nWatch workers sharing tenants (PostgreSQL):\n");
        s.push_str("  workers tenants  wall s  tenants/s  leases  overlaps  dup-created  wrong-stores  failover\n");
        for r in runs {
            let failover = match r["failover"].as_object() {
                Some(f) => format!(
                    "{} killed holding {}, taken over within {} ms",
                    f["killed"].as_str().unwrap_or_default(),
                    f["held"].as_array().map_or(0, |h| h.len()),
                    f["takeover_after_kill_ms_max"]
                ),
                None => "-".into(),
            };
            s.push_str(&format!(
                "  {:>7} {:>7} {:>7.1} {:>10.2} {:>7} {:>9} {:>12} {:>13}  {}\n",
                r["workers"].as_u64().unwrap_or_default(),
                r["tenants"].as_u64().unwrap_or_default(),
                r["wall_s"].as_f64().unwrap_or_default(),
                r["tenants_per_s"].as_f64().unwrap_or_default(),
                r["leases"].as_u64().unwrap_or_default(),
                r["overlapping_leases"].as_u64().unwrap_or_default(),
                r["duplicate_created_events"].as_i64().unwrap_or_default(),
                r["stores_with_wrong_record_count"]
                    .as_u64()
                    .unwrap_or_default(),
                failover
            ));
        }
    }
    s
}
