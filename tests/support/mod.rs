//! Shared pieces of the end-to-end tests: one compiled component per test binary, a harness
//! that runs the real component in the real host against a fresh emulator, and the comparison
//! of the store with the emulator's ground truth.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use dropbox_emulator::{Emulator, EmulatorConfig, Kind, TruthEntry};
use host_test::app::{ConnectorHost, HostError, Outcome};
use host_test::bindings::connector::SyncSummary;
use host_test::runtime::{Runtime, SandboxConfig};
use host_test::secrets::Keyring;
use host_test::store::pg::testing::TestDatabase;
use host_test::store::{
    Event, PgStore, Record, RecordKind, RecordStore, SqliteStore, StoredCredentials,
};

/// The scopes the connector's manifest asks for (the emulator's tokens in tests carry them).
pub const SCOPES: [&str; 5] = [
    "account_info.read",
    "files.content.read",
    "files.metadata.read",
    "sharing.read",
    "sharing.write",
];

/// The Dropbox component (the CLI's default component), compiled once per test binary.
pub fn dropbox_runtime() -> Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            Arc::new(
                host_test::components::default_runtime(SandboxConfig::default())
                    .expect("the component loads"),
            )
        })
        .clone()
}

/// Which records store a harness runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    /// A fresh database on `DATABASE_URL` or the local server, dropped with the harness.
    Postgres,
}

pub struct Harness {
    pub emulator: Emulator,
    pub host: ConnectorHost,
    pub tenant: String,
    pub dir: tempfile::TempDir,
    /// Declared last so that it is dropped after the host's connections.
    pub database: Option<TestDatabase>,
}

impl Harness {
    pub fn new(files: usize, seed: u64) -> Harness {
        Harness::with_config(EmulatorConfig {
            files,
            seed,
            ..Default::default()
        })
    }

    pub fn with_config(config: EmulatorConfig) -> Harness {
        Harness::on(config, Backend::Sqlite)
    }

    pub fn on(config: EmulatorConfig, backend: Backend) -> Harness {
        let emulator = Emulator::start(config).expect("the emulator starts");
        let dir = tempfile::tempdir().expect("a temp dir");
        let (store, database): (Arc<dyn RecordStore>, _) = match backend {
            Backend::Sqlite => (
                Arc::new(SqliteStore::open(&dir.path().join("store.db")).expect("the store opens")),
                None,
            ),
            Backend::Postgres => {
                let database = TestDatabase::create();
                let keyring =
                    Keyring::parse(&Keyring::generate_key(), "test").expect("a fresh key parses");
                let store = PgStore::connect(database.url(), keyring).expect("the store opens");
                (Arc::new(store), Some(database))
            }
        };
        let host = ConnectorHost::new(
            dropbox_runtime(),
            store,
            Some(&emulator.base_url()),
            Default::default(),
        )
        .expect("the host starts");
        let tenant = "t1".to_string();
        host.connect(
            &tenant,
            StoredCredentials {
                access_token: emulator.access_token(),
                ..Default::default()
            },
        )
        .expect("credentials stored");
        Harness {
            emulator,
            host,
            tenant,
            dir,
            database,
        }
    }

    pub fn try_sync(&self) -> Result<Outcome<SyncSummary>, HostError> {
        self.host.sync(&self.tenant, None, None)
    }

    pub fn sync(&self) -> SyncSummary {
        match self.try_sync() {
            Ok(o) => o.value,
            Err(e) => panic!("sync failed: {e}"),
        }
    }

    pub fn records(&self) -> Vec<Record> {
        self.host.store().records(&self.tenant).expect("records")
    }

    pub fn events_since(&self, seq: i64) -> Vec<Event> {
        self.host
            .store()
            .events(Some(&self.tenant), seq)
            .expect("events")
    }

    pub fn last_seq(&self) -> i64 {
        self.host.store().last_event_seq().expect("seq")
    }

    pub fn set(&self, key: &str, value: &str) {
        self.host
            .set_setting(&self.tenant, key, value)
            .expect("setting accepted");
    }

    /// Panics with every difference between the store and the emulator's account, and checks
    /// that a downstream indexer fed only the event stream would hold the same records.
    pub fn assert_matches_truth(&self) {
        self.assert_matches_truth_where(|_| true);
    }

    /// `assert_matches_truth` for an account whose filters keep only what `keep` accepts.
    pub fn assert_matches_truth_where(&self, keep: impl Fn(&TruthEntry) -> bool) {
        let diffs = diff_with_truth(&self.emulator.truth(), &self.records(), keep);
        assert!(
            diffs.is_empty(),
            "store differs from the account:\n{}",
            diffs.join("\n")
        );
        self.assert_events_replay_to_store();
    }

    /// Replaying the event stream from the start gives exactly the stored records: every
    /// creation, update and deletion reached the indexer, in an order that makes sense.
    pub fn assert_events_replay_to_store(&self) {
        assert_eq!(
            self.host.store().pending_count(&self.tenant).unwrap(),
            0,
            "records left pending removal"
        );
        let mut replayed: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        for e in self.events_since(0) {
            match e.kind.as_str() {
                "created" => {
                    let previous = replayed.insert(e.external_id.clone(), e.record.clone());
                    assert!(
                        previous.is_none(),
                        "event {}: {} created twice",
                        e.seq,
                        e.external_id
                    );
                }
                "deleted" => {
                    assert!(
                        replayed.remove(&e.external_id).is_some(),
                        "event {}: {} deleted but unknown",
                        e.seq,
                        e.external_id
                    );
                }
                _ => {
                    let slot = replayed.get_mut(&e.external_id);
                    assert!(
                        slot.is_some(),
                        "event {}: update of unknown {}",
                        e.seq,
                        e.external_id
                    );
                    if let Some(slot) = slot {
                        *slot = e.record.clone();
                    }
                }
            }
        }
        let stored: BTreeMap<String, serde_json::Value> = self
            .records()
            .iter()
            .map(|r| (r.external_id.clone(), host_test::store::record_json(r)))
            .collect();
        let missing: Vec<_> = stored
            .keys()
            .filter(|k| !replayed.contains_key(*k))
            .collect();
        let extra: Vec<_> = replayed
            .keys()
            .filter(|k| !stored.contains_key(*k))
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "event stream vs store: missing {missing:?}, extra {extra:?}"
        );
        for (id, record) in &stored {
            assert_eq!(
                replayed.get(id),
                Some(record),
                "the last event for {id} does not carry the stored record"
            );
        }
    }
}

/// Differences between the expected (truth filtered by `keep`) and the stored records.
pub fn diff_with_truth(
    truth: &[TruthEntry],
    records: &[Record],
    keep: impl Fn(&TruthEntry) -> bool,
) -> Vec<String> {
    let by_path: HashMap<&str, &TruthEntry> =
        truth.iter().map(|t| (t.path_lower.as_str(), t)).collect();
    let expected: BTreeMap<&str, &TruthEntry> = truth
        .iter()
        .filter(|t| keep(t))
        .map(|t| (t.id.as_str(), t))
        .collect();
    let stored: BTreeMap<&str, &Record> = records
        .iter()
        .map(|r| (r.external_id.as_str(), r))
        .collect();
    let mut diffs = Vec::new();
    for (id, t) in &expected {
        let Some(r) = stored.get(id) else {
            diffs.push(format!("missing {id} {}", t.path_display));
            continue;
        };
        let parent = t
            .path_lower
            .rfind('/')
            .filter(|&i| i > 0)
            .and_then(|i| by_path.get(&t.path_lower[..i]))
            .map(|p| p.id.clone());
        let kind = if t.kind == Kind::Folder {
            RecordKind::Folder
        } else {
            RecordKind::File
        };
        let checks: [(&str, String, String); 11] = [
            (
                "path_lower",
                format!("{:?}", Some(&t.path_lower)),
                format!("{:?}", r.path_lower()),
            ),
            (
                "path_display",
                format!("{:?}", Some(&t.path_display)),
                format!("{:?}", r.path_display()),
            ),
            ("name", t.name.clone(), r.name.clone()),
            ("kind", format!("{kind:?}"), format!("{:?}", r.kind)),
            ("rev", format!("{:?}", t.rev), format!("{:?}", r.revision)),
            ("size", t.size.to_string(), r.size.to_string()),
            (
                "content_hash",
                format!("{:?}", t.content_hash),
                format!("{:?}", r.content_hash),
            ),
            (
                "parent",
                format!("{parent:?}"),
                format!("{:?}", r.parent_external_id),
            ),
            (
                "is_downloadable",
                t.is_downloadable.to_string(),
                r.is_downloadable.to_string(),
            ),
            (
                "shared_url",
                format!("{:?}", t.shared_url),
                format!("{:?}", r.shared_url),
            ),
            (
                "server_modified",
                format!("{:?}", t.server_modified),
                format!("{:?}", r.server_modified),
            ),
        ];
        for (field, want, got) in checks {
            if want != got {
                diffs.push(format!(
                    "{id} {}: {field} expected {want}, stored {got}",
                    t.path_display
                ));
            }
        }
    }
    for (id, r) in &stored {
        if !expected.contains_key(id) {
            diffs.push(format!("unexpected {id} {:?}", r.path_display()));
        }
    }
    diffs
}

/// Each record id gets at most one `created` event, and none after its `deleted` unless it was
/// created again (a new id would be needed for that in Dropbox).
pub fn assert_no_duplicate_events(events: &[Event]) {
    let mut created: HashMap<&str, usize> = HashMap::new();
    let mut deleted: HashMap<&str, usize> = HashMap::new();
    for e in events {
        match e.kind.as_str() {
            "created" => *created.entry(&e.external_id).or_default() += 1,
            "deleted" => *deleted.entry(&e.external_id).or_default() += 1,
            _ => {}
        }
    }
    let dup_created: Vec<_> = created.iter().filter(|(_, n)| **n > 1).collect();
    let dup_deleted: Vec<_> = deleted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dup_created.is_empty(),
        "records created more than once: {dup_created:?}"
    );
    assert!(
        dup_deleted.is_empty(),
        "records deleted more than once: {dup_deleted:?}"
    );
}

/// A number from the environment (test budgets such as `CRASH_KILLS`), or the default.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64 for seeded random histories: reproducible from the seed a failure prints.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

pub fn count(events: &[Event], kind: &str) -> usize {
    events.iter().filter(|e| e.kind == kind).count()
}
