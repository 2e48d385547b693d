//! The embedded records store: one SQLite file holding every tenant's records, sync point and
//! status, owner, credentials, settings and the ordered event stream (see the module above for
//! what every backend guarantees).
//!
//! Schema version 2 (contract 0.2): paths are nullable (records of a flat source have none),
//! the live `path_lower` of a tenant is unique through a partial index that ignores NULLs and
//! pending records, and a tenant has one opaque sync point with its phase and detail. A file of
//! version 1 (contract 0.1) is refused with [`StoreError::SchemaVersion`]: it is not migrated
//! (its positions were the 0.1 connector's own keys, meaningless to a 0.2 connector).
//!
//! Schema version 3 (a version 2 file is migrated when opened) makes a record cheap to store:
//! - **An event's record is stored once, until it changes.** An event carries the record as it
//!   was when the event was emitted. Most records never change after their `created` event (a
//!   full sync is nothing else), so the event row does not copy them: its `record_json` (and
//!   `path_lower`) is NULL while the record's row still is that snapshot, and the row names the
//!   event in `last_event`. Before anything changes or deletes such a row (an upsert with other
//!   values or a new event, a purge, a `clear`), the snapshot is written into the event
//!   (`materialize`). Reading events joins the row for the lazy ones. What a reader sees is the
//!   same as if every event had copied its record; a full sync writes about half the bytes.
//! - **One path index.** Every path lookup is of live records, so the partial unique index of
//!   live paths serves them all; version 2 kept a second, full index of the same columns.
//!
//! Schema version 4 (a version 3 file is migrated when opened): the snapshot a lazy event gets
//! when its row changes is a copy of the row's columns in `event_records` (keyed by the event's
//! sequence number), made by one `INSERT ... SELECT` inside the database, instead of JSON the
//! host built and wrote into the event (that JSON was a sixth of an incremental sync's
//! instructions). Events that version 3 materialized keep their JSON.
//!
//! Schema version 5 (a version 4 file is migrated when opened): the id index is written many
//! commits at a time instead of at every commit. Dropbox ids are random, so a B-tree of them
//! took each commit's 2,000 new ids at 2,000 places: past 100,000 records, nearly a page of it
//! per record was written to the WAL, synced and copied at every commit. Now the index is a
//! table of its own (`record_ids`) covering the rows up to a mark (`record_ids_merged`); the
//! rows past it (rows are numbered by AUTOINCREMENT, so they are the newest) are found by id
//! through a map in memory (`recent_ids`), and are merged into the index in its key order when
//! a listing ends, when they come to an eighth of the index (`merge_at`), or at every commit
//! outside a listing. One row per (tenant, id) is kept by the store looking before it inserts
//! (one writer at a time), and by the index's primary key once merged.

use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, MutexGuard};

use rusqlite::{
    CachedStatement, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
    params,
};
use serde_json::Value;

use crate::secrets::{
    Keyring, RotationReport, open_credentials, reseal_credentials, seal_credentials,
};

use super::checkpointer::{CheckpointPolicy, Checkpointer};
use super::recent_ids::RecentIds;
use super::writer_lock::{WriterLockError, WriterLocks, WriterRight};
use super::{
    ApplySummary, Change, ChangeKind, Event, GroupKind, Permission, Record, RecordGroup,
    RecordKind, RecordPath, RecordStore, Role, StoreError, StoredCredentials, StoredRecord,
    SyncOutcome, SyncPhase, SyncPoint, SyncStatus, TenantStatus, User, record_json, role_str,
};

const SCHEMA_VERSION: i64 = 5;

pub struct SqliteStore {
    /// Checkpoints the WAL beside the writer (`checkpointer`); declared first, so it stops
    /// before the connection closes. None: a store in memory, or no thread could be had.
    checkpointer: Option<Checkpointer>,
    conn: Mutex<Connection>,
    /// Seals credentials before they are written, opens them when read (crate::secrets).
    keys: KeySource,
    /// Test hook: (apply calls to let through, change index to fail at), to prove atomicity.
    fail_after: Mutex<Option<(usize, usize)>>,
    /// The ids of the rows not yet in the id index (`recent_ids`); locked only by a holder of
    /// `conn`.
    recent: Mutex<RecentIds>,
    /// The tenants' writer locks beside the database file; None for a store in memory, which
    /// no other process can open.
    writers: Option<WriterLocks>,
}

const RECORD_COLUMNS: &str = "external_id, revision, name, path_display, path_lower, parent_external_id, kind, \
     mime_type, size, content_hash, client_modified, server_modified, is_downloadable, export_format, \
     web_url, is_shared, shared_url, pending_removal";
/// How many columns `RECORD_COLUMNS` names (`read_stored` reads them from index 0).
const RECORD_COLUMN_COUNT: usize = 18;
/// Maps and sets of a batch's ids and paths. foldhash, each map under a seed of its own: std's
/// SipHash was 1.5% of a 1,000,000-file sync's samples. The keys come from the connector, so
/// the seed is not one it could know.
type KeyMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type KeySet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Keys per statement of a lookup (`SqliteStore::lookup_each`).
const LOOKUP_CHUNK: usize = 64;
/// The list a lookup's `IN` asks: `?2` to `?65`.
static LOOKUP_KEYS: LazyLock<String> = LazyLock::new(|| {
    let keys: Vec<String> = (2..2 + LOOKUP_CHUNK).map(|n| format!("?{n}")).collect();
    format!("({})", keys.join(", "))
});
/// How many values `record_params!` gives: the tenant, the record's seventeen, its event.
const RECORD_PARAMS: usize = 19;

/// The parameters of `UPSERT_RECORD` and `INSERT_NEW_RECORD`, in their order (a macro: the
/// values are borrowed from `r` for the statement's call, without copies).
macro_rules! record_params {
    ($tenant:expr, $r:expr, $last_event:expr) => {
        params![
            $tenant,
            $r.external_id,
            $r.revision,
            $r.name,
            $r.path_display(),
            $r.path_lower(),
            $r.parent_external_id,
            $r.kind.as_str(),
            $r.mime_type,
            // SQLite integers are signed 64-bit: store the bits, read them back the same.
            $r.size as i64,
            $r.content_hash,
            $r.client_modified,
            $r.server_modified,
            $r.is_downloadable,
            $r.export_format,
            $r.web_url,
            $r.is_shared,
            $r.shared_url,
            $last_event,
        ]
    };
}

/// A new row for a record whose (tenant, id) has none (the caller has looked: see
/// `recent_ids`), naming the event it is the snapshot of (`?19`, NULL for none). Built once:
/// the statement runs for every record of a sync.
static INSERT_RECORD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO records(tenant, {RECORD_COLUMNS}, last_event)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, 0, ?19)"
    )
});

/// Give the row at rowid `?1` (the record's, by its id `?2`) every value of the record, live
/// again, and the event it is now the snapshot of. Its parameters are `INSERT_RECORD`'s, with
/// the rowid for the tenant.
const UPDATE_ROW: &str = "UPDATE records SET revision = ?3, name = ?4, path_display = ?5,
       path_lower = ?6, parent_external_id = ?7, kind = ?8, mime_type = ?9, size = ?10,
       content_hash = ?11, client_modified = ?12, server_modified = ?13, is_downloadable = ?14,
       export_format = ?15, web_url = ?16, is_shared = ?17, shared_url = ?18, pending_removal = 0,
       last_event = ?19
     WHERE rowid = ?1 AND external_id = ?2";

/// Give the row at rowid `?1` the values of a record whose id, `path_lower` and shared flag it
/// already has (so no index changes: SQLite touches only the indexes of the columns it sets), and the
/// event it is now the snapshot of. Its parameters are `INSERT_RECORD`'s, with the rowid
/// for the tenant; the indexed ones are not read.
const UPDATE_IN_PLACE: &str = "UPDATE records SET revision = ?3, name = ?4, path_display = ?5,
       parent_external_id = ?7, kind = ?8, mime_type = ?9, size = ?10, content_hash = ?11,
       client_modified = ?12, server_modified = ?13, is_downloadable = ?14, export_format = ?15,
       web_url = ?16, shared_url = ?18, last_event = ?19
     WHERE rowid = ?1 AND external_id = ?2 AND path_lower IS ?6 AND is_shared = ?17";

/// The row `?1` if it is (tenant `?2`, id `?3`)'s, as `read_row` reads it.
static SELECT_ROW: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {RECORD_COLUMNS}, rowid, last_event FROM records
         WHERE rowid = ?1 AND tenant = ?2 AND external_id = ?3"
    )
});

/// The row of (tenant `?1`, id `?2`) in the id index (rows up to the merged mark).
const SELECT_INDEXED_ROW: &str =
    "SELECT row FROM record_ids WHERE tenant = ?1 AND external_id = ?2";

/// The row the id index gives (tenant `?1`, id `?2`), as `read_row` reads it, then the index's
/// row number: one statement for both (the row's columns are NULL if the index names a row
/// that is not this record's, which is a bug).
static SELECT_INDEXED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, r.rowid, r.last_event, i.row FROM record_ids i
         LEFT JOIN records r ON r.rowid = i.row AND r.tenant = i.tenant AND r.external_id = i.external_id
         WHERE i.tenant = ?1 AND i.external_id = ?2",
        &*RECORD_COLUMNS_OF_R
    )
});

/// Whether the id index holds any of `?2` to `?65` for tenant `?1`.
static ANY_INDEXED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT 1 FROM record_ids WHERE tenant = ?1 AND external_id IN {} LIMIT 1",
        &*LOOKUP_KEYS
    )
});

/// Whether row `?1` is (tenant `?2`, id `?3`)'s.
const ROW_IS: &str = "SELECT 1 FROM records WHERE rowid = ?1 AND tenant = ?2 AND external_id = ?3";

/// `RECORD_COLUMNS` of the table named `r` (in a join with the id index, which has some of
/// the same names).
static RECORD_COLUMNS_OF_R: LazyLock<String> = LazyLock::new(|| {
    RECORD_COLUMNS
        .split(", ")
        .map(|c| format!("r.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
});

/// During a listing, the rows past the merged mark are merged into the id index once they are
/// an eighth of the rows before it (the mark estimates those: rows are numbered in order),
/// within these bounds. A merge writes nearly every page of the index, so merging a share of
/// it (not a fixed number of ids) keeps the index's writes per record the same as it grows.
/// The upper bound keeps the memory a merge needs (the map, about 20 bytes an id, and
/// SQLite's sort of the ids, in memory as temp files are) to a few tens of MiB.
const MERGE_AT: std::ops::RangeInclusive<usize> = 100_000..=250_000;

/// How many recent rows a listing's batch lets wait, with the mark at `through`.
fn merge_at(through: i64) -> usize {
    (usize::try_from(through).unwrap_or(0) / 8).clamp(*MERGE_AT.start(), *MERGE_AT.end())
}

/// A connection to the database file through `vfs` (the WAL VFS's name), or the default VFS
/// when there is none; the store and its checkpoint thread open theirs alike.
pub(super) fn open_connection(
    path: &Path,
    vfs: Option<&'static str>,
) -> rusqlite::Result<Connection> {
    match vfs {
        Some(vfs) => Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs),
        None => Connection::open(path),
    }
}

/// A transaction that writes: it takes SQLite's write lock when it begins (`BEGIN IMMEDIATE`),
/// waiting for another writer (another store or process on the file) up to the busy timeout.
/// A deferred transaction that reads first would take a snapshot, then fail at its first write
/// with SQLITE_BUSY ("database is locked") at once, without waiting, if another writer
/// committed in between: its snapshot is stale, and waiting cannot help.
fn write_transaction(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

impl SqliteStore {
    /// Open (creating and migrating) the database file. A new file is readable by its owner
    /// only: it holds credentials.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with_checkpoints(path, CheckpointPolicy::default())
    }

    fn open_with_checkpoints(
        path: &Path,
        policy: CheckpointPolicy,
    ) -> Result<SqliteStore, StoreError> {
        let existed = path.exists();
        if !existed {
            create_private_file(path).map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        }
        // The default VFS with the WAL's writes gathered (`wal_vfs`); the default VFS itself if
        // that cannot be had (the same files, the same guarantees, more system calls).
        let vfs = super::wal_vfs::register()
            .inspect_err(|why| {
                tracing::warn!(%why, "SQLite store: writing the WAL through the default VFS");
            })
            .ok();
        let opened = open_connection(path, vfs);
        let open_error = |e: rusqlite::Error| StoreError::Open {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let conn = opened.map_err(open_error)?;
        let mut store = Self::init(
            conn,
            KeySource::BesideDatabase(path.to_path_buf(), Mutex::new(None)),
        )?;
        store.writers = Some(WriterLocks::beside(path));
        let writer = store.conn.get_mut().unwrap_or_else(|p| p.into_inner());
        store.checkpointer = Checkpointer::start(writer, path, vfs, policy).map_err(open_error)?;
        Ok(store)
    }

    /// A store in memory; its credentials are sealed under a random key that lives as long as
    /// the store.
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let keyring = Keyring::parse(&Keyring::generate_key(), "a random in-memory key")?;
        Self::init(Connection::open_in_memory()?, KeySource::Given(keyring))
    }

    fn init(conn: Connection, keys: KeySource) -> Result<SqliteStore, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Every commit is synced (FULL: the WAL is fsynced before the commit returns; the WAL
        // VFS writes its buffer out before forwarding that sync), so an event, once it has a
        // sequence number, survives an OS crash or a power loss. NORMAL syncs only at
        // checkpoints: a crash could roll back committed events, and their numbers would then
        // be given to other events that a consumer could not tell from the ones it had read.
        // Its cost is measured in README (the store's durability).
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // The pages a sync keeps touching (the indexes' upper levels, the tables' last pages)
        // stay cached; 32 MiB bounds the host's memory whatever the database's size (no
        // memory-mapped reads: their resident pages grew with the file).
        conn.pragma_update(None, "cache_size", -32768)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // Fewer, larger checkpoints while a sync writes thousands of batches: a checkpoint
        // writes each page once however many commits changed it (the id index's pages change
        // in nearly every commit), and each checkpoint waits for two fsyncs. A 1,000,000-file
        // sync took 59.3, 61.0 and 64.9 s at 10,000 pages (40 MB) and 53.3, 53.5 and 54.2 s
        // at 100,000 (400 MB). The host's memory does not grow with it (the WAL is a file, its
        // index about 1 MB); the file is removed when the last connection closes. Cutting the
        // file back after each checkpoint (`journal_size_limit` 64 MB) lost the gain.
        // A file-backed store replaces this with its own hook (`Checkpointer`), which
        // checkpoints on another thread first and only then, at the same bound, inline.
        conn.pragma_update(None, "wal_autocheckpoint", 100_000)?;
        migrate(&conn)?;
        Ok(SqliteStore {
            checkpointer: None,
            conn: Mutex::new(conn),
            keys,
            fail_after: Mutex::new(None),
            writers: None,
            recent: Mutex::new(RecentIds::new()),
        })
    }

    /// Seal and open credentials with `keyring` (an empty one: storing or reading credentials
    /// fails with [`crate::secrets::SecretError::MissingKey`]; records work either way).
    /// Without this, a database file uses the key file beside it (see [`KeySource`]).
    pub fn with_keyring(mut self, keyring: Keyring) -> SqliteStore {
        self.keys = KeySource::Given(keyring);
        self
    }

    /// The keys to seal with (`create`: a write, which may create the key file beside the
    /// database) or to open with (a read, which never creates one: with no file, an empty
    /// keyring, so a sealed value fails with MissingKey).
    fn keyring(&self, create: bool) -> Result<Keyring, StoreError> {
        match &self.keys {
            KeySource::Given(keyring) => Ok(keyring.clone()),
            KeySource::BesideDatabase(db, loaded) => {
                let mut loaded = loaded.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(keyring) = loaded.as_ref() {
                    return Ok(keyring.clone());
                }
                let found = if create {
                    Some(Keyring::beside_database_or_create(db)?)
                } else {
                    Keyring::beside_database(db)?
                };
                match found {
                    Some(keyring) => {
                        *loaded = Some(keyring.clone());
                        Ok(keyring)
                    }
                    None => Ok(Keyring::empty()),
                }
            }
        }
    }

    /// Re-seal every stored secret that is not under the keyring's current key, in one
    /// transaction (see [`crate::secrets`] for the whole procedure).
    pub fn rotate_secrets(&self) -> Result<RotationReport, StoreError> {
        let keyring = self.keyring(false)?;
        if keyring.is_empty() {
            return Err(crate::secrets::SecretError::MissingKey.into());
        }
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn)?;
        let rows: Vec<(String, StoredCredentials)> = {
            let mut stmt = tx.prepare(
                "SELECT tenant, access_token, refresh_token, client_secret FROM credentials ORDER BY tenant",
            )?;
            stmt.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    StoredCredentials {
                        access_token: r.get(1)?,
                        refresh_token: r.get(2)?,
                        client_secret: r.get(3)?,
                        ..Default::default()
                    },
                ))
            })?
            .collect::<Result<_, _>>()?
        };
        let mut report = RotationReport::default();
        for (tenant, mut sealed) in rows {
            if reseal_credentials(&keyring, &tenant, &mut sealed, &mut report)? {
                tx.execute(
                    "UPDATE credentials SET access_token = ?2, refresh_token = ?3, client_secret = ?4 WHERE tenant = ?1",
                    params![tenant, sealed.access_token, sealed.refresh_token, sealed.client_secret],
                )?;
            }
        }
        tx.commit()?;
        Ok(report)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction half-applied (SQLite rolls
        // back an unfinished transaction), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The row matching each of `keys` (same order, `None` where none does; at most one row
    /// matches a key). `select` ends in `IN`, with `?1` the tenant; it is asked
    /// `LOOKUP_CHUNK` keys at a time (the last chunk repeats its last key to fill up), and
    /// `key_of` says which key a row answers. All in one read transaction: alone, each lookup
    /// would be a transaction of its own, with its own locking of the WAL (a profile of a full
    /// sync found those locks among the host's largest costs); one statement per key was
    /// nearly a tenth of a full sync's instructions.
    fn lookup_each(
        &self,
        select: &str,
        key_of: fn(&StoredRecord) -> Option<&str>,
        tenant: &str,
        keys: &[String],
        recent_ids: bool,
    ) -> Result<Vec<Option<StoredRecord>>, StoreError> {
        let mut found: Vec<Option<StoredRecord>> = vec![None; keys.len()];
        if keys.is_empty() {
            return Ok(found);
        }
        // Where each key is first asked for; a repeated key gets a copy at the end.
        let mut first: KeyMap<&str, usize> =
            KeyMap::with_capacity_and_hasher(keys.len(), Default::default());
        for (i, key) in keys.iter().enumerate() {
            first.entry(key.as_str()).or_insert(i);
        }
        let sql = format!("{select} {}", &*LOOKUP_KEYS);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        // For ids, the map of the recent rows' ids, and the keys the id index may hold (the
        // index is not asked for the others).
        let recent = if recent_ids {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            recent.catch_up(&tx)?;
            Some(recent)
        } else {
            None
        };
        let asked: Vec<&str> = match &recent {
            Some(recent) => first
                .keys()
                .copied()
                .filter(|id| recent.may_be_indexed(recent.key(tenant, id)))
                .collect(),
            None => first.keys().copied().collect(),
        };
        {
            let mut stmt = tx.prepare_cached(&sql)?;
            for chunk in asked.chunks(LOOKUP_CHUNK) {
                let last = chunk.last().copied().unwrap_or("");
                stmt.raw_bind_parameter(1, tenant)?;
                for n in 0..LOOKUP_CHUNK {
                    stmt.raw_bind_parameter(2 + n, chunk.get(n).copied().unwrap_or(last))?;
                }
                let mut rows = stmt.raw_query();
                while let Some(row) = rows.next()? {
                    let stored = read_stored(row)?;
                    if let Some(&at) = key_of(&stored).and_then(|key| first.get(key)) {
                        found[at] = Some(stored);
                    }
                }
            }
        }
        if let Some(recent) = recent {
            // `keys` are ids, and `select` reads the id index: the rows past its mark are
            // found through the map of recent ids.
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM records WHERE rowid = ?1 AND tenant = ?2 AND external_id = ?3"
            ))?;
            for (key, &at) in &first {
                if found[at].is_some() {
                    continue;
                }
                for row in recent.candidates(tenant, key) {
                    if let Some(stored) = stmt
                        .query_row(params![row, tenant, key], read_stored)
                        .optional()?
                    {
                        found[at] = Some(stored);
                        break;
                    }
                }
            }
        }
        tx.commit()?;
        for (i, key) in keys.iter().enumerate() {
            if let Some(&at) = first.get(key.as_str())
                && at != i
            {
                found[i] = found[at].clone();
            }
        }
        Ok(found)
    }
}

impl RecordStore for SqliteStore {
    fn writer_right(
        &self,
        tenant: &str,
        holder: &str,
    ) -> Result<Option<WriterRight>, WriterLockError> {
        self.writers
            .as_ref()
            .map(|locks| locks.try_acquire(tenant, holder))
            .transpose()
    }

    /// Test hook: let `calls` more `apply` calls through, then fail every later one at its
    /// change number `at_change` (None: never fail).
    fn inject_apply_failure(&self, plan: Option<(usize, usize)>) {
        *self.fail_after.lock().unwrap_or_else(|p| p.into_inner()) = plan;
    }

    fn ensure_tenant(&self, tenant: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO tenants(name, created_at) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
            params![tenant, now()],
        )?;
        Ok(())
    }

    fn set_tenant_api_url(&self, tenant: &str, api_url: Option<&str>) -> Result<(), StoreError> {
        self.ensure_tenant(tenant)?;
        self.conn().execute(
            "UPDATE tenants SET api_url = ?2 WHERE name = ?1",
            params![tenant, api_url],
        )?;
        Ok(())
    }

    fn tenant_api_url(&self, tenant: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT api_url FROM tenants WHERE name = ?1",
                params![tenant],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    fn tenants(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name FROM tenants ORDER BY name")?;
        let rows = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(rows)
    }

    /// Apply a batch of changes and the sync point atomically.
    fn apply(
        &self,
        tenant: &str,
        changes: &[Change],
        sync_point: Option<&SyncPoint>,
    ) -> Result<ApplySummary, StoreError> {
        let fail_after = {
            let mut plan = self.fail_after.lock().unwrap_or_else(|p| p.into_inner());
            match plan.as_mut() {
                Some((0, at)) => Some(*at),
                Some((calls, _)) => {
                    *calls -= 1;
                    None
                }
                None => None,
            }
        };
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn)?;
        // Taken out for the transaction and put back once it commits: on any failure the slot
        // keeps a new, empty map, loaded afresh next time (its rows may not exist).
        let mut recent_slot = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let mut recent = std::mem::replace(&mut *recent_slot, RecentIds::new());
        recent.catch_up(&tx)?;
        let listing = sync_point.is_some_and(|p| p.status.phase == SyncPhase::Listing);
        if listing {
            // A listing's ids are mostly new: the filter answers for them without the index.
            recent.filter_index(&tx)?;
        }
        // A batch is numbered by the first sequence number it may use: unique and increasing,
        // at the cost of reading the last rowid (no index on `batch` to maintain).
        let batch: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM events", [], |r| {
            r.get(0)
        })?;
        let at = now();
        let mut summary = ApplySummary {
            created: 0,
            content_updates: 0,
            metadata_updates: 0,
            deletions: 0,
        };
        let mut statements = Statements::new(&tx, recent);
        let mut index = 0;
        while index < changes.len() {
            // A run of creations goes in chunks (`create_chunk`); a chunk never reaches past
            // an injected failure, so the failure still comes before the change it names.
            let room = fail_after.map_or(usize::MAX, |at| at.saturating_sub(index));
            let run = creation_run(&changes[index..]).min(room);
            if run >= CREATION_CHUNK
                && create_chunk(
                    &mut statements,
                    tenant,
                    batch,
                    at,
                    &changes[index..index + CREATION_CHUNK],
                )?
            {
                summary.created += CREATION_CHUNK as u64;
                index += CREATION_CHUNK;
                continue;
            }
            if fail_after == Some(index) {
                return Err(StoreError::Injected(index));
            }
            apply_change(
                &mut statements,
                tenant,
                batch,
                at,
                &changes[index],
                &mut summary,
            )?;
            index += 1;
        }
        let mut recent = statements.into_recent();
        // The recent ids join the index when the listing they come from is done, or when
        // there are enough of them (`merge_at`); outside a listing, at every commit.
        if recent.len() > 0 && (!listing || recent.len() >= merge_at(recent.through())) {
            merge_recent(&tx, &mut recent)?;
        }
        if fail_after.is_some() {
            // The failure point lies past the last change: fail just before committing.
            return Err(StoreError::Injected(changes.len()));
        }
        if let Some(point) = sync_point {
            tx.execute(
                "INSERT INTO sync_points(tenant, position, phase, detail, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(tenant) DO UPDATE SET position = excluded.position, phase = excluded.phase,
                   detail = excluded.detail, updated_at = excluded.updated_at",
                params![
                    tenant,
                    point.position,
                    point.status.phase.as_str(),
                    point.status.detail,
                    now()
                ],
            )?;
        }
        tx.commit()?;
        *recent_slot = recent;
        Ok(summary)
    }

    fn get_sync_point(&self, tenant: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT position FROM sync_points WHERE tenant = ?1",
                params![tenant],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn delete_sync_point(&self, tenant: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM sync_points WHERE tenant = ?1", params![tenant])?;
        Ok(())
    }

    fn sync_status(&self, tenant: &str) -> Result<Option<SyncStatus>, StoreError> {
        let row: Option<(String, String)> = self
            .conn()
            .query_row(
                "SELECT phase, detail FROM sync_points WHERE tenant = ?1",
                params![tenant],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(phase, detail)| {
            let phase = SyncPhase::parse(&phase).ok_or_else(|| {
                StoreError::Invalid(format!("unknown sync phase '{phase}' in the database"))
            })?;
            Ok(SyncStatus { phase, detail })
        })
        .transpose()
    }

    fn list_records(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Record>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        // The id index gives the byte order of ids (BINARY collation) up to the merged mark;
        // the rows past it (at most a merge's worth, during a listing) are read and sorted.
        let of_r = &*RECORD_COLUMNS_OF_R;
        let records = {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM (
                   SELECT * FROM (
                     SELECT {of_r} FROM record_ids i JOIN records r ON r.rowid = i.row
                     WHERE i.tenant = ?1 AND (?2 IS NULL OR i.external_id > ?2) AND r.pending_removal = 0
                     ORDER BY i.external_id LIMIT ?3)
                   UNION ALL
                   SELECT * FROM (
                     SELECT {RECORD_COLUMNS} FROM records
                     WHERE rowid > (SELECT through FROM record_ids_merged) AND tenant = ?1
                       AND (?2 IS NULL OR external_id > ?2) AND pending_removal = 0
                     ORDER BY external_id LIMIT ?3))
                 ORDER BY external_id LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![tenant, after, limit], read_stored)?;
            rows.map(|r| r.map(|s| s.record))
                .collect::<Result<Vec<_>, _>>()?
        };
        tx.commit()?;
        Ok(records)
    }

    fn get_records(&self, tenant: &str, ids: &[String]) -> Result<Vec<StoredRecord>, StoreError> {
        let found = self.lookup_each(
            &format!(
                "SELECT {} FROM record_ids i JOIN records r ON r.rowid = i.row
                 WHERE i.tenant = ?1 AND i.external_id IN",
                &*RECORD_COLUMNS_OF_R
            ),
            |s| Some(s.record.external_id.as_str()),
            tenant,
            ids,
            true,
        )?;
        Ok(found.into_iter().flatten().collect())
    }

    fn find_by_paths(
        &self,
        tenant: &str,
        paths: &[String],
    ) -> Result<Vec<Option<Record>>, StoreError> {
        let found = self.lookup_each(
            &format!(
                "SELECT {RECORD_COLUMNS} FROM records INDEXED BY records_live_path WHERE tenant = ?1 AND pending_removal = 0 AND path_lower IN"
            ),
            |s| s.record.path_lower(),
            tenant,
            paths,
            false,
        )?;
        Ok(found.into_iter().map(|s| s.map(|s| s.record)).collect())
    }

    fn list_shared(&self, tenant: &str, limit: u32) -> Result<Vec<Record>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM records INDEXED BY records_shared WHERE tenant = ?1 AND is_shared = 1 AND pending_removal = 0 LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![tenant, limit], read_stored)?;
        Ok(rows
            .map(|r| r.map(|s| s.record))
            .collect::<Result<Vec<_>, _>>()?)
    }

    fn list_subtree(
        &self,
        tenant: &str,
        path: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Record>, StoreError> {
        let lower = format!("{path}/");
        // No stored path ends with '/', so "after the prefix itself" starts the subtree.
        let from = match after {
            Some(a) if a > lower.as_str() => a.to_string(),
            _ => lower,
        };
        let upper = format!("{path}0");
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM records INDEXED BY records_live_path
             WHERE tenant = ?1 AND path_lower > ?2 AND path_lower < ?3 AND pending_removal = 0
             ORDER BY path_lower LIMIT ?4"
        ))?;
        let rows = stmt.query_map(params![tenant, from, upper, limit], read_stored)?;
        Ok(rows
            .map(|r| r.map(|s| s.record))
            .collect::<Result<Vec<_>, _>>()?)
    }

    fn records(&self, tenant: &str) -> Result<Vec<Record>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {RECORD_COLUMNS} FROM records WHERE tenant = ?1 AND pending_removal = 0 ORDER BY path_lower, external_id"
        ))?;
        let rows = stmt.query_map(params![tenant], read_stored)?;
        Ok(rows
            .map(|r| r.map(|s| s.record))
            .collect::<Result<Vec<_>, _>>()?)
    }

    fn record_count(&self, tenant: &str) -> Result<u64, StoreError> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM records WHERE tenant = ?1 AND pending_removal = 0",
            params![tenant],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    fn pending_count(&self, tenant: &str) -> Result<u64, StoreError> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM records WHERE tenant = ?1 AND pending_removal = 1",
            params![tenant],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    fn put_owner(
        &self,
        tenant: &str,
        owner: &User,
        group: &RecordGroup,
        permissions: &[Permission],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn)?;
        tx.execute(
            "INSERT INTO users(tenant, external_id, email, display_name, is_owner) VALUES (?1, ?2, ?3, ?4, 1)
             ON CONFLICT(tenant, external_id) DO UPDATE SET email = excluded.email, display_name = excluded.display_name, is_owner = 1",
            params![tenant, owner.external_id, owner.email, owner.display_name],
        )?;
        tx.execute(
            "INSERT INTO record_groups(tenant, external_id, name, kind) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(tenant, external_id) DO UPDATE SET name = excluded.name, kind = excluded.kind",
            params![tenant, group.external_id, group.name, group_kind_str(group.kind)],
        )?;
        tx.execute(
            "DELETE FROM permissions WHERE tenant = ?1 AND group_external_id = ?2",
            params![tenant, group.external_id],
        )?;
        for p in permissions {
            tx.execute(
                "INSERT INTO permissions(tenant, group_external_id, principal_external_id, role) VALUES (?1, ?2, ?3, ?4)",
                params![tenant, group.external_id, p.principal_external_id, role_str(p.role)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn owner(&self, tenant: &str) -> Result<Option<User>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT external_id, email, display_name FROM users WHERE tenant = ?1 AND is_owner = 1",
                params![tenant],
                |r| Ok(User { external_id: r.get(0)?, email: r.get(1)?, display_name: r.get(2)? }),
            )
            .optional()?)
    }

    fn record_groups(
        &self,
        tenant: &str,
    ) -> Result<Vec<(RecordGroup, Vec<Permission>)>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT external_id, name, kind FROM record_groups WHERE tenant = ?1")?;
        let groups = stmt
            .query_map(params![tenant], |r| {
                Ok(RecordGroup {
                    external_id: r.get(0)?,
                    name: r.get(1)?,
                    kind: parse_group_kind(&r.get::<_, String>(2)?),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut perm_stmt = conn.prepare(
            "SELECT principal_external_id, role FROM permissions WHERE tenant = ?1 AND group_external_id = ?2",
        )?;
        let mut out = Vec::new();
        for g in groups {
            let perms = perm_stmt
                .query_map(params![tenant, g.external_id], |r| {
                    Ok(Permission {
                        principal_external_id: r.get(0)?,
                        role: parse_role(&r.get::<_, String>(1)?),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            out.push((g, perms));
        }
        Ok(out)
    }

    fn clear(&self, tenant: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn)?;
        // The event stream keeps its history: the records' snapshots go into their events.
        materialize_before_delete(&tx, tenant, false)?;
        for table in [
            "record_ids",
            "records",
            "sync_points",
            "users",
            "record_groups",
            "permissions",
        ] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE tenant = ?1"),
                params![tenant],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn events(&self, tenant: Option<&str>, since: i64) -> Result<Vec<Event>, StoreError> {
        let conn = self.conn();
        // An event without JSON has its record in its snapshot (`event_records`) once the row
        // changed, else in the row that names it (see the module's doc).
        let row_columns = RECORD_COLUMNS
            .split(", ")
            .map(|c| format!("CASE WHEN s.seq IS NULL THEN r.{c} ELSE s.{c} END"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut stmt = conn.prepare(&format!(
            "SELECT {row_columns}, e.seq, e.tenant, e.batch, e.kind, e.external_id, e.path_lower, e.record_json
             FROM events e
             LEFT JOIN event_records s ON e.record_json IS NULL AND s.seq = e.seq
             LEFT JOIN records r INDEXED BY records_by_event
               ON e.record_json IS NULL AND s.seq IS NULL AND r.tenant = e.tenant
                  AND r.external_id = e.external_id AND r.last_event = e.seq
             WHERE e.seq > ?1 AND (?2 IS NULL OR e.tenant = ?2) ORDER BY e.seq"
        ))?;
        let rows = stmt.query_map(params![since, tenant], |r| {
            let at = |i: usize| RECORD_COLUMN_COUNT + i;
            let seq: i64 = r.get(at(0))?;
            let json: Option<String> = r.get(at(6))?;
            let (path_lower, record) = match json {
                // Written by this store from `record_json`: always JSON.
                Some(json) => (
                    r.get(at(5))?,
                    serde_json::from_str(&json).unwrap_or(Value::Null),
                ),
                None => {
                    let kind: Option<String> = r.get(6)?;
                    if kind.is_none() {
                        return Err(rusqlite::Error::FromSqlConversionFailure(
                            at(6),
                            rusqlite::types::Type::Null,
                            format!("event {seq} has no record: its row is missing").into(),
                        ));
                    }
                    let stored = read_stored(r)?;
                    (
                        stored.record.path_lower().map(String::from),
                        record_json(&stored.record),
                    )
                }
            };
            Ok(Event {
                seq,
                tenant: r.get(at(1))?,
                batch: r.get(at(2))?,
                kind: r.get(at(3))?,
                external_id: r.get(at(4))?,
                path_lower,
                record,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn last_event_seq(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?)
    }

    // ---- credentials (host only; never exposed to a guest) ----

    fn put_credentials(&self, tenant: &str, creds: &StoredCredentials) -> Result<(), StoreError> {
        // Sealed first: a missing key fails before any write.
        let creds = &seal_credentials(&self.keyring(true)?, tenant, creds)?;
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn)?;
        tx.execute(
            "INSERT INTO tenants(name, created_at) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
            params![tenant, now()],
        )?;
        tx.execute(
            "INSERT INTO credentials(tenant, access_token, refresh_token, expires_at, client_id, client_secret, account_id, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT(tenant) DO UPDATE SET access_token = excluded.access_token, refresh_token = excluded.refresh_token,
               expires_at = excluded.expires_at, client_id = excluded.client_id, client_secret = excluded.client_secret,
               account_id = excluded.account_id, updated_at = excluded.updated_at",
            params![
                tenant,
                creds.access_token,
                creds.refresh_token,
                creds.expires_at,
                creds.client_id,
                creds.client_secret,
                creds.account_id,
                now()
            ],
        )?;
        tx.execute(
            "UPDATE tenants SET needs_reauth = 0 WHERE name = ?1",
            params![tenant],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn credentials(&self, tenant: &str) -> Result<Option<StoredCredentials>, StoreError> {
        let sealed = self
            .conn()
            .query_row(
                "SELECT access_token, refresh_token, expires_at, client_id, client_secret, account_id FROM credentials WHERE tenant = ?1",
                params![tenant],
                |r| {
                    Ok(StoredCredentials {
                        access_token: r.get(0)?,
                        refresh_token: r.get(1)?,
                        expires_at: r.get(2)?,
                        client_id: r.get(3)?,
                        client_secret: r.get(4)?,
                        account_id: r.get(5)?,
                    })
                },
            )
            .optional()?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        Ok(Some(open_credentials(
            &self.keyring(false)?,
            tenant,
            sealed,
        )?))
    }

    fn delete_credentials(&self, tenant: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM credentials WHERE tenant = ?1", params![tenant])?;
        Ok(())
    }

    fn set_needs_reauth(&self, tenant: &str, needs: bool) -> Result<(), StoreError> {
        self.ensure_tenant(tenant)?;
        self.conn().execute(
            "UPDATE tenants SET needs_reauth = ?2 WHERE name = ?1",
            params![tenant, needs as i64],
        )?;
        Ok(())
    }

    fn record_sync_result(
        &self,
        tenant: &str,
        outcome: SyncOutcome,
        note: &str,
    ) -> Result<(), StoreError> {
        self.ensure_tenant(tenant)?;
        self.conn().execute(
            "UPDATE tenants SET last_sync_at = ?2, last_sync_outcome = ?3, last_sync_note = ?4 WHERE name = ?1",
            params![tenant, now(), outcome.as_str(), note],
        )?;
        Ok(())
    }

    fn status(&self, tenant: &str) -> Result<TenantStatus, StoreError> {
        let (needs_reauth, last_sync_at, outcome, last_sync_note) = self
            .conn()
            .query_row(
                "SELECT needs_reauth, last_sync_at, last_sync_outcome, last_sync_note FROM tenants WHERE name = ?1",
                params![tenant],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)? != 0,
                        r.get(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get(3)?,
                    ))
                },
            )
            .optional()?
            .unwrap_or((false, None, None, None));
        let last_sync_outcome = outcome
            .map(|o| {
                SyncOutcome::parse(&o).ok_or_else(|| {
                    StoreError::Invalid(format!("unknown sync outcome '{o}' in the database"))
                })
            })
            .transpose()?;
        Ok(TenantStatus {
            tenant: tenant.to_string(),
            needs_reauth,
            last_sync_at,
            last_sync_outcome,
            last_sync_note,
            records: self.record_count(tenant)?,
            sync_status: self.sync_status(tenant)?,
            owner: self.owner(tenant)?,
        })
    }

    // ---- per-tenant settings ----

    fn settings(&self, tenant: &str) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT key, value FROM settings WHERE tenant = ?1 ORDER BY key")?;
        Ok(stmt
            .query_map(params![tenant], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?)
    }

    fn set_setting(&self, tenant: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.ensure_tenant(tenant)?;
        self.conn().execute(
            "INSERT INTO settings(tenant, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT(tenant, key) DO UPDATE SET value = excluded.value",
            params![tenant, key, value],
        )?;
        Ok(())
    }
}

/// Where a store's keys come from.
enum KeySource {
    /// Given by the host (`--secret-key-file`, `HOST_TEST_SECRET_KEY`), or a random key for a
    /// store in memory.
    Given(Keyring),
    /// No key given: the key file beside the database file (`<db>.key`), created by the first
    /// write of credentials, then kept once read.
    BesideDatabase(PathBuf, Mutex<Option<Keyring>>),
}

fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map(|_| ())
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL);")?;
    // The version is read under the write lock: two processes opening a new file at once
    // must not both find it empty and both create the schema.
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let version: Option<i64> =
        tx.query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))?;
    match version {
        None => {
            tx.execute_batch(&format!("{SCHEMA_V2} {V2_TO_V3} {V3_TO_V4} {V4_TO_V5}"))?;
        }
        Some(2) => {
            tx.execute_batch(&format!("{V2_TO_V3} {V3_TO_V4} {V4_TO_V5}"))?;
        }
        Some(3) => {
            tx.execute_batch(&format!("{V3_TO_V4} {V4_TO_V5}"))?;
        }
        Some(4) => {
            tx.execute_batch(V4_TO_V5)?;
        }
        Some(SCHEMA_VERSION) => {}
        Some(found) => {
            return Err(StoreError::SchemaVersion {
                found,
                wanted: SCHEMA_VERSION,
            });
        }
    }
    tx.commit()?;
    Ok(())
}

/// Version 2, as contract 0.2's first host created it; a new file gets it and then the
/// migrations after it, so there is one way to reach the current schema.
const SCHEMA_V2: &str = "
    CREATE TABLE tenants(
        name TEXT PRIMARY KEY, created_at INTEGER NOT NULL, needs_reauth INTEGER NOT NULL DEFAULT 0,
        last_sync_at INTEGER, last_sync_outcome TEXT, last_sync_note TEXT, api_url TEXT);
    CREATE TABLE credentials(
        tenant TEXT PRIMARY KEY, access_token TEXT NOT NULL, refresh_token TEXT, expires_at INTEGER,
        client_id TEXT, client_secret TEXT, account_id TEXT, updated_at INTEGER NOT NULL);
    CREATE TABLE settings(tenant TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY(tenant, key));
    CREATE TABLE users(
        tenant TEXT NOT NULL, external_id TEXT NOT NULL, email TEXT NOT NULL, display_name TEXT NOT NULL,
        is_owner INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(tenant, external_id));
    CREATE TABLE record_groups(
        tenant TEXT NOT NULL, external_id TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL,
        PRIMARY KEY(tenant, external_id));
    CREATE TABLE permissions(
        tenant TEXT NOT NULL, group_external_id TEXT NOT NULL, principal_external_id TEXT NOT NULL,
        role TEXT NOT NULL, PRIMARY KEY(tenant, group_external_id, principal_external_id));
    CREATE TABLE records(
        tenant TEXT NOT NULL, external_id TEXT NOT NULL, revision TEXT, name TEXT NOT NULL,
        path_display TEXT, path_lower TEXT, parent_external_id TEXT,
        kind TEXT NOT NULL, mime_type TEXT NOT NULL, size INTEGER NOT NULL, content_hash TEXT,
        client_modified TEXT, server_modified TEXT, is_downloadable INTEGER NOT NULL,
        export_format TEXT, web_url TEXT, is_shared INTEGER NOT NULL, shared_url TEXT,
        pending_removal INTEGER NOT NULL DEFAULT 0,
        UNIQUE(tenant, external_id));
    CREATE INDEX records_by_path ON records(tenant, path_lower);
    -- At most one live record per path; records without a path (flat sources) and records
    -- pending removal are outside it. `apply` checks first and says which record holds the
    -- path; this index is the guarantee.
    CREATE UNIQUE INDEX records_live_path ON records(tenant, path_lower)
        WHERE pending_removal = 0 AND path_lower IS NOT NULL;
    CREATE INDEX records_pending ON records(tenant) WHERE pending_removal = 1;
    CREATE INDEX records_shared ON records(tenant) WHERE is_shared = 1;
    CREATE TABLE sync_points(
        tenant TEXT PRIMARY KEY, position TEXT NOT NULL, phase TEXT NOT NULL, detail TEXT NOT NULL,
        updated_at INTEGER NOT NULL);
    CREATE TABLE events(
        seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, batch INTEGER NOT NULL,
        kind TEXT NOT NULL, external_id TEXT NOT NULL, path_lower TEXT,
        record_json TEXT NOT NULL, at INTEGER NOT NULL);
    CREATE INDEX events_by_tenant ON events(tenant, seq);
    INSERT INTO schema_version(version) VALUES (2);
";

/// Version 3 (see the module's doc): lazy event snapshots, one path index. The events table is
/// rebuilt because `record_json` becomes nullable; its sequence numbers are kept, and
/// AUTOINCREMENT's counter with them.
const V2_TO_V3: &str = "
    DROP INDEX records_by_path;
    ALTER TABLE records ADD COLUMN last_event INTEGER;
    CREATE TABLE events_v3(
        seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, batch INTEGER NOT NULL,
        kind TEXT NOT NULL, external_id TEXT NOT NULL, path_lower TEXT,
        record_json TEXT, at INTEGER NOT NULL);
    INSERT INTO events_v3(seq, tenant, batch, kind, external_id, path_lower, record_json, at)
        SELECT seq, tenant, batch, kind, external_id, path_lower, record_json, at FROM events;
    DROP TABLE events;
    ALTER TABLE events_v3 RENAME TO events;
    CREATE INDEX events_by_tenant ON events(tenant, seq);
    INSERT INTO schema_version(version) VALUES (3);
";

/// Version 4 (see the module's doc): an event's snapshot, once its record's row changes, is a
/// copy of the row's columns in `event_records`, made by the database (one `INSERT ... SELECT`),
/// instead of JSON built by the host. Events that version 3 materialized keep their JSON.
const V3_TO_V4: &str = "
    CREATE TABLE event_records(
        seq INTEGER PRIMARY KEY, external_id TEXT NOT NULL, revision TEXT, name TEXT NOT NULL,
        path_display TEXT, path_lower TEXT, parent_external_id TEXT,
        kind TEXT NOT NULL, mime_type TEXT NOT NULL, size INTEGER NOT NULL, content_hash TEXT,
        client_modified TEXT, server_modified TEXT, is_downloadable INTEGER NOT NULL,
        export_format TEXT, web_url TEXT, is_shared INTEGER NOT NULL, shared_url TEXT,
        pending_removal INTEGER NOT NULL);
    INSERT INTO schema_version(version) VALUES (4);
";

/// Version 5 (see the module's doc): the id index is a table of its own, `record_ids`, that
/// holds the ids of the rows up to `record_ids_merged.through`; the rows past it are found by
/// id through the store's map of recent ids (`recent_ids`) until a merge adds them. The
/// records table is rebuilt: its UNIQUE(tenant, external_id) goes (the store keeps an id to
/// one row, with the index's primary key as the guarantee once merged), and its rows are
/// numbered by AUTOINCREMENT, so that a row number is never given twice and the rows past the
/// mark are exactly the unmerged ones. Rows keep their numbers. Two indexes replace what the
/// unique one served besides ids, both appended to as rows are: the rows of a tenant
/// (`records_by_tenant`), and the row that is an event's snapshot (`records_by_event`).
const V4_TO_V5: &str = "
    CREATE TABLE records_v5(
        tenant TEXT NOT NULL, external_id TEXT NOT NULL, revision TEXT, name TEXT NOT NULL,
        path_display TEXT, path_lower TEXT, parent_external_id TEXT,
        kind TEXT NOT NULL, mime_type TEXT NOT NULL, size INTEGER NOT NULL, content_hash TEXT,
        client_modified TEXT, server_modified TEXT, is_downloadable INTEGER NOT NULL,
        export_format TEXT, web_url TEXT, is_shared INTEGER NOT NULL, shared_url TEXT,
        pending_removal INTEGER NOT NULL DEFAULT 0, last_event INTEGER,
        row INTEGER PRIMARY KEY AUTOINCREMENT);
    INSERT INTO records_v5(row, tenant, external_id, revision, name, path_display, path_lower,
        parent_external_id, kind, mime_type, size, content_hash, client_modified, server_modified,
        is_downloadable, export_format, web_url, is_shared, shared_url, pending_removal, last_event)
      SELECT rowid, tenant, external_id, revision, name, path_display, path_lower,
        parent_external_id, kind, mime_type, size, content_hash, client_modified, server_modified,
        is_downloadable, export_format, web_url, is_shared, shared_url, pending_removal, last_event
      FROM records ORDER BY rowid;
    DROP TABLE records;
    ALTER TABLE records_v5 RENAME TO records;
    CREATE UNIQUE INDEX records_live_path ON records(tenant, path_lower)
        WHERE pending_removal = 0 AND path_lower IS NOT NULL;
    CREATE INDEX records_pending ON records(tenant) WHERE pending_removal = 1;
    CREATE INDEX records_shared ON records(tenant) WHERE is_shared = 1;
    CREATE INDEX records_by_tenant ON records(tenant);
    CREATE INDEX records_by_event ON records(last_event);
    CREATE TABLE record_ids(
        tenant TEXT NOT NULL, external_id TEXT NOT NULL, row INTEGER NOT NULL,
        PRIMARY KEY(tenant, external_id)) WITHOUT ROWID;
    INSERT INTO record_ids(tenant, external_id, row)
        SELECT tenant, external_id, row FROM records ORDER BY tenant, external_id;
    CREATE TABLE record_ids_merged(through INTEGER NOT NULL);
    INSERT INTO record_ids_merged(through) SELECT COALESCE(MAX(row), 0) FROM records;
    INSERT INTO schema_version(version) VALUES (5);
";

/// The statements `apply` runs for each record, taken from the connection's statement cache
/// once per call and held until it ends. Taken per change, each use hashed the statement's
/// text to find it in the cache, and giving it back cleared its bindings and hashed the text
/// again.
struct Statements<'tx> {
    tx: &'tx Transaction<'tx>,
    /// The ids of the rows past the merged mark, this transaction's new rows included.
    recent: RecentIds,
    insert_event: Option<CachedStatement<'tx>>,
    insert_record: Option<CachedStatement<'tx>>,
    select_row: Option<CachedStatement<'tx>>,
    select_indexed_row: Option<CachedStatement<'tx>>,
    select_indexed: Option<CachedStatement<'tx>>,
    any_indexed: Option<CachedStatement<'tx>>,
    row_is: Option<CachedStatement<'tx>>,
    materialize: Option<CachedStatement<'tx>>,
    update_in_place: Option<CachedStatement<'tx>>,
    restore: Option<CachedStatement<'tx>>,
    update_row: Option<CachedStatement<'tx>>,
    next_event: Option<CachedStatement<'tx>>,
    insert_events_chunk: Option<CachedStatement<'tx>>,
    insert_records_chunk: Option<CachedStatement<'tx>>,
}

impl<'tx> Statements<'tx> {
    fn new(tx: &'tx Transaction<'tx>, recent: RecentIds) -> Self {
        Statements {
            tx,
            recent,
            insert_event: None,
            insert_record: None,
            select_row: None,
            select_indexed_row: None,
            select_indexed: None,
            any_indexed: None,
            row_is: None,
            materialize: None,
            update_in_place: None,
            restore: None,
            update_row: None,
            next_event: None,
            insert_events_chunk: None,
            insert_records_chunk: None,
        }
    }

    /// The map of recent ids, this transaction's rows included; the statements go.
    fn into_recent(self) -> RecentIds {
        self.recent
    }

    /// The row of (tenant, id), if it has one: among the recent rows (each candidate read to
    /// be sure), else in the id index.
    fn row_of(&mut self, tenant: &str, id: &str) -> Result<Option<i64>, StoreError> {
        let key = self.recent.key(tenant, id);
        if let Some(row) = self.recent_row(key, tenant, id)? {
            return Ok(Some(row));
        }
        if !self.recent.may_be_indexed(key) {
            return Ok(None);
        }
        Ok(
            Self::prepared(self.tx, &mut self.select_indexed_row, SELECT_INDEXED_ROW)?
                .query_row(params![tenant, id], |r| r.get(0))
                .optional()?,
        )
    }

    /// The row of (tenant, id) among the recent rows (`key` is theirs in the map): each
    /// candidate the map gives is read to be sure.
    fn recent_row(&mut self, key: u64, tenant: &str, id: &str) -> Result<Option<i64>, StoreError> {
        for row in self.recent.candidates_of(key) {
            if Self::prepared(self.tx, &mut self.row_is, ROW_IS)?
                .exists(params![row, tenant, id])?
            {
                return Ok(Some(row));
            }
        }
        Ok(None)
    }

    /// Flag the row of (tenant, id), if it has one, as pending removal.
    fn mark_pending(&mut self, tenant: &str, id: &str) -> Result<(), StoreError> {
        if let Some(row) = self.row_of(tenant, id)? {
            self.tx
                .prepare_cached(
                    "UPDATE records SET pending_removal = 1 WHERE rowid = ?1 AND pending_removal = 0",
                )?
                .execute(params![row])?;
        }
        Ok(())
    }

    /// A new row for `r` (whose id has none), as the newest of the recent rows. The outer
    /// error is the statement's preparation; the inner one the write's, for `write_error`.
    fn insert(
        &mut self,
        tenant: &str,
        r: &Record,
        last_event: Option<i64>,
    ) -> Result<Result<(), rusqlite::Error>, StoreError> {
        let written = Self::prepared(self.tx, &mut self.insert_record, &INSERT_RECORD)?
            .execute(record_params!(tenant, r, last_event));
        if written.is_ok() {
            self.recent
                .note(tenant, &r.external_id, self.tx.last_insert_rowid());
        }
        Ok(written.map(|_| ()))
    }

    /// The statement in `slot`, prepared (or taken from the cache) on its first use.
    fn prepared<'s>(
        tx: &'tx Transaction<'tx>,
        slot: &'s mut Option<CachedStatement<'tx>>,
        sql: &str,
    ) -> Result<&'s mut CachedStatement<'tx>, StoreError> {
        match slot {
            Some(statement) => Ok(statement),
            None => Ok(slot.insert(tx.prepare_cached(sql)?)),
        }
    }

    /// Append an event whose record is the record's row as it is now (a lazy snapshot: see
    /// the module's doc); returns its sequence number, for the row's `last_event`.
    fn insert_event(
        &mut self,
        tenant: &str,
        batch: i64,
        at: i64,
        kind: &str,
        external_id: &str,
    ) -> Result<i64, StoreError> {
        Self::prepared(
            self.tx,
            &mut self.insert_event,
            "INSERT INTO events(tenant, batch, kind, external_id, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![tenant, batch, kind, external_id, at])?;
        Ok(self.tx.last_insert_rowid())
    }

    /// The row of `r`'s id, compared with `r`.
    fn stored_row(&mut self, tenant: &str, r: &Record) -> Result<Option<StoredRow>, StoreError> {
        let id = r.external_id.as_str();
        let key = self.recent.key(tenant, id);
        for row in self.recent.candidates_of(key) {
            let found = Self::prepared(self.tx, &mut self.select_row, &SELECT_ROW)?
                .query_row(params![row, tenant, id], |row| read_row(row, r))
                .optional()?;
            if found.is_some() {
                return Ok(found);
            }
        }
        if !self.recent.may_be_indexed(key) {
            return Ok(None);
        }
        let found = Self::prepared(self.tx, &mut self.select_indexed, &SELECT_INDEXED)?
            .query_row(params![tenant, id], |row| {
                let indexed: i64 = row.get(RECORD_COLUMN_COUNT + 2)?;
                match row.get::<_, Option<i64>>(RECORD_COLUMN_COUNT)? {
                    Some(_) => Ok(Ok(read_row(row, r)?)),
                    None => Ok(Err(indexed)),
                }
            })
            .optional()?;
        match found {
            None => Ok(None),
            Some(Ok(found)) => Ok(Some(found)),
            // The index and its rows change in the same transactions: a bug, never passed over.
            Some(Err(row)) => Err(StoreError::Invalid(format!(
                "{id}: the id index names row {row}, which is not this record's"
            ))),
        }
    }

    /// Whether any of `ids` (a chunk's) has a row: the recent ones by the map, the others by
    /// one search of the index for those its filter does not rule out.
    fn any_has_row(&mut self, tenant: &str, ids: &[&str]) -> Result<bool, StoreError> {
        let mut asked: Vec<&str> = Vec::with_capacity(ids.len());
        for &id in ids {
            let key = self.recent.key(tenant, id);
            if self.recent_row(key, tenant, id)?.is_some() {
                return Ok(true);
            }
            if self.recent.may_be_indexed(key) {
                asked.push(id);
            }
        }
        let Some(&last) = asked.last() else {
            return Ok(false);
        };
        debug_assert!(asked.len() <= LOOKUP_CHUNK);
        let stmt = Self::prepared(self.tx, &mut self.any_indexed, &ANY_INDEXED)?;
        stmt.raw_bind_parameter(1, tenant)?;
        for n in 0..LOOKUP_CHUNK {
            stmt.raw_bind_parameter(2 + n, asked.get(n).copied().unwrap_or(last))?;
        }
        let mut rows = stmt.raw_query();
        Ok(rows.next()?.is_some())
    }

    /// Copy the row at `rowid` into the snapshot of its lazy event `seq`: the row is about to
    /// change or go.
    fn materialize(&mut self, seq: i64, rowid: i64) -> Result<(), StoreError> {
        Self::prepared(self.tx, &mut self.materialize, &MATERIALIZE_ROW)?
            .execute(params![seq, rowid])?;
        Ok(())
    }
}

fn apply_change(
    statements: &mut Statements<'_>,
    tenant: &str,
    batch: i64,
    at: i64,
    change: &Change,
    summary: &mut ApplySummary,
) -> Result<(), StoreError> {
    let tx = statements.tx;
    match change {
        Change::Upsert { record: r, event } => {
            validate(r)?;
            let kind = match event {
                ChangeKind::Created => {
                    summary.created += 1;
                    Some("created")
                }
                ChangeKind::Content => {
                    summary.content_updates += 1;
                    Some("content")
                }
                ChangeKind::Metadata => {
                    summary.metadata_updates += 1;
                    Some("metadata")
                }
                ChangeKind::ContentAndMetadata => {
                    summary.content_updates += 1;
                    summary.metadata_updates += 1;
                    Some("content_and_metadata")
                }
                ChangeKind::Unchanged => None,
            };
            if let Some(kind @ "created") = kind {
                let seq = statements.insert_event(tenant, batch, at, kind, &r.external_id)?;
                return create(statements, tenant, batch, at, r, seq);
            }
            upsert(statements, tenant, batch, at, r, kind, None)?;
        }
        Change::Replace {
            path_lower,
            new_external_id,
            keep_children,
        } => {
            let Some(old_id) = live_occupant(tx, tenant, path_lower, new_external_id)? else {
                return Ok(());
            };
            if *keep_children {
                // Only the replaced folder goes; its descendants stay as they are. Updating
                // their parent and display path is the connector's (one upsert, one event,
                // each), so that a child also named by the page is not reported twice.
                statements.mark_pending(tenant, &old_id)?;
            } else {
                mark_subtree(tx, tenant, path_lower)?;
            }
        }
        Change::Remove(id) => statements.mark_pending(tenant, id)?,
        Change::RemoveSubtree(path) => {
            mark_subtree(tx, tenant, path)?;
        }
        Change::MarkAllPending => {
            tx.execute(
                "UPDATE records SET pending_removal = 1 WHERE tenant = ?1 AND pending_removal = 0",
                params![tenant],
            )?;
        }
        Change::Purge => {
            // The deleted rows must not take their events' snapshots with them.
            materialize_before_delete(tx, tenant, true)?;
            let removed = tx.execute(
                "INSERT INTO events(tenant, batch, kind, external_id, path_lower, record_json, at)
                 SELECT tenant, ?2, 'deleted', external_id, path_lower,
                        json_object('id', external_id, 'path_lower', path_lower, 'kind', kind), ?3
                 FROM records INDEXED BY records_pending WHERE tenant = ?1 AND pending_removal = 1 ORDER BY path_lower DESC",
                params![tenant, batch, at],
            )?;
            // Their ids leave the index with them (ids of recent rows are not in it yet).
            tx.execute(
                "DELETE FROM record_ids WHERE tenant = ?1 AND external_id IN
                   (SELECT external_id FROM records INDEXED BY records_pending
                    WHERE tenant = ?1 AND pending_removal = 1)",
                params![tenant],
            )?;
            tx.execute(
                "DELETE FROM records WHERE tenant = ?1 AND pending_removal = 1",
                params![tenant],
            )?;
            summary.deletions += removed as u64;
        }
    }
    Ok(())
}

/// Creations written together: a run of this many creations, of distinct ids and paths, is
/// written by two statements (their events, then their rows) instead of two per record. Each
/// statement costs SQLite its cursors, and the events table its AUTOINCREMENT counter, once
/// per statement.
const CREATION_CHUNK: usize = 64;
// A chunk's ids are asked of the index in one statement (`any_has_row`).
const _: () = assert!(CREATION_CHUNK <= LOOKUP_CHUNK);

/// The next sequence number an event may take: past every event there ever was (the
/// AUTOINCREMENT counter, which a deleted last event leaves behind) and every one there is.
const NEXT_EVENT: &str = "SELECT MAX(
       COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),
       COALESCE((SELECT MAX(seq) FROM events), 0)) + 1";

/// The `created` events of a chunk, with the sequence numbers given: `?1` tenant, `?2` batch,
/// `?3` time; then, per creation, its sequence number and id.
static INSERT_EVENTS_CHUNK: LazyLock<String> = LazyLock::new(|| {
    let rows: Vec<String> = (0..CREATION_CHUNK)
        .map(|i| format!("(?{}, ?1, ?2, 'created', ?{}, ?3)", 4 + 2 * i, 5 + 2 * i))
        .collect();
    format!(
        "INSERT INTO events(seq, tenant, batch, kind, external_id, at) VALUES {}",
        rows.join(", ")
    )
});

/// The rows of a chunk's creations, as `INSERT_RECORD` writes one: `?1` tenant; then, per
/// creation, `record_params!`'s others (the record's seventeen values and its event).
static INSERT_RECORDS_CHUNK: LazyLock<String> = LazyLock::new(|| {
    let per_row = RECORD_PARAMS - 1;
    let rows: Vec<String> = (0..CREATION_CHUNK)
        .map(|i| {
            let first = 2 + per_row * i;
            let values: Vec<String> = (first..first + per_row - 1)
                .map(|n| format!("?{n}"))
                .collect();
            format!("(?1, {}, 0, ?{})", values.join(", "), first + per_row - 1)
        })
        .collect();
    format!(
        "INSERT INTO records(tenant, {RECORD_COLUMNS}, last_event) VALUES {}",
        rows.join(", ")
    )
});

/// How many of `changes`, from the first, are creations (checked as every upsert is), at most
/// a chunk's worth.
fn creation_run(changes: &[Change]) -> usize {
    changes
        .iter()
        .take(CREATION_CHUNK)
        .take_while(|c| {
            matches!(c, Change::Upsert { record, event: ChangeKind::Created } if validate(record).is_ok())
        })
        .count()
}

/// Write a chunk of `CREATION_CHUNK` creations together: their events, in order, then their
/// rows. Returns false, having written nothing, when two of them share an id or a path, or
/// one of their ids has a row after all (the chunk is then written one change at a time,
/// whose order decides what happens). A write that fails (the rows' statement is then undone
/// whole) is repeated one row at a time, so that the error names the record and path.
fn create_chunk(
    statements: &mut Statements<'_>,
    tenant: &str,
    batch: i64,
    at: i64,
    chunk: &[Change],
) -> Result<bool, StoreError> {
    let records: Vec<&Record> = chunk
        .iter()
        .filter_map(|c| match c {
            Change::Upsert { record, .. } => Some(record),
            _ => None,
        })
        .collect();
    if records.len() != CREATION_CHUNK {
        return Ok(false);
    }
    let mut ids = KeySet::with_capacity_and_hasher(CREATION_CHUNK, Default::default());
    let mut paths = KeySet::with_capacity_and_hasher(CREATION_CHUNK, Default::default());
    let mut chunk_ids: Vec<&str> = Vec::with_capacity(CREATION_CHUNK);
    for r in &records {
        let id = r.external_id.as_str();
        if !ids.insert(id) || r.path_lower().is_some_and(|p| !paths.insert(p)) {
            return Ok(false);
        }
        chunk_ids.push(id);
    }
    if statements.any_has_row(tenant, &chunk_ids)? {
        return Ok(false);
    }
    let tx = statements.tx;
    let first: i64 = Statements::prepared(tx, &mut statements.next_event, NEXT_EVENT)?
        .query_row([], |row| row.get(0))?;
    let seq = |i: usize| first + i as i64;

    let events = Statements::prepared(
        tx,
        &mut statements.insert_events_chunk,
        &INSERT_EVENTS_CHUNK,
    )?;
    events.raw_bind_parameter(1, tenant)?;
    events.raw_bind_parameter(2, batch)?;
    events.raw_bind_parameter(3, at)?;
    for (i, r) in records.iter().enumerate() {
        events.raw_bind_parameter(4 + 2 * i, seq(i))?;
        events.raw_bind_parameter(5 + 2 * i, r.external_id.as_str())?;
    }
    events.raw_execute()?;

    let rows = Statements::prepared(
        tx,
        &mut statements.insert_records_chunk,
        &INSERT_RECORDS_CHUNK,
    )?;
    rows.raw_bind_parameter(1, tenant)?;
    for (i, r) in records.iter().enumerate() {
        let values = record_params!(tenant, r, Some(seq(i)));
        for (j, value) in values.iter().enumerate().skip(1) {
            rows.raw_bind_parameter(1 + (RECORD_PARAMS - 1) * i + j, value)?;
        }
    }
    match rows.raw_execute() {
        Ok(n) if n == CREATION_CHUNK => {
            // One statement's rows are numbered one after the other (AUTOINCREMENT gives each
            // the largest number so far plus one), the last of them last.
            let last = tx.last_insert_rowid();
            let first_row = last - (CREATION_CHUNK as i64 - 1);
            for (i, r) in records.iter().enumerate() {
                statements
                    .recent
                    .note(tenant, &r.external_id, first_row + i as i64);
            }
        }
        Ok(n) => {
            return Err(StoreError::Invalid(format!(
                "a chunk of {CREATION_CHUNK} creations wrote {n} rows"
            )));
        }
        Err(_) => {
            for (i, r) in records.iter().enumerate() {
                create(statements, tenant, batch, at, r, seq(i))?;
            }
        }
    }
    #[cfg(test)]
    creation_chunks::WRITTEN.with(|n| n.set(n.get() + 1));
    Ok(true)
}

/// The checks every upsert passes before anything is written.
fn validate(r: &Record) -> Result<(), StoreError> {
    if r.external_id.is_empty() {
        return Err(StoreError::Invalid("a record needs an external id".into()));
    }
    if r.path.as_ref().is_some_and(|p| p.lower.is_empty()) {
        return Err(StoreError::Invalid(format!(
            "{}: a record's path.lower must not be empty",
            r.external_id
        )));
    }
    Ok(())
}

/// Store the row of a creation whose event `seq` is appended. A row that exists after all
/// (the connector's view was stale) goes the general way, with the event already appended.
fn create(
    statements: &mut Statements<'_>,
    tenant: &str,
    batch: i64,
    at: i64,
    r: &Record,
    seq: i64,
) -> Result<(), StoreError> {
    if statements.row_of(tenant, &r.external_id)?.is_some() {
        return upsert(statements, tenant, batch, at, r, Some("created"), Some(seq));
    }
    match statements.insert(tenant, r, Some(seq))? {
        Ok(()) => Ok(()),
        Err(e) => Err(write_error(statements.tx, tenant, r, e)?),
    }
}

/// Store `r` over whatever row its id has (the general way): its event `kind` (none for an
/// unchanged record) appended unless `appended` names it already.
fn upsert(
    statements: &mut Statements<'_>,
    tenant: &str,
    batch: i64,
    at: i64,
    r: &Record,
    kind: Option<&str>,
    appended: Option<i64>,
) -> Result<(), StoreError> {
    let tx = statements.tx;
    let existing = statements.stored_row(tenant, r)?;
    let same = existing.as_ref().is_some_and(|old| old.same);
    // The row is about to stop being the snapshot of its last event: a new event takes
    // its place, or its values change.
    if let Some(old) = &existing
        && let Some(seq) = old.last_event
        && (kind.is_some() || !same)
    {
        statements.materialize(seq, old.rowid)?;
    }
    let last_event = match (kind, appended) {
        (Some(_), Some(seq)) => Some(seq),
        (Some(kind), None) => {
            Some(statements.insert_event(tenant, batch, at, kind, &r.external_id)?)
        }
        (None, _) => existing
            .as_ref()
            .filter(|_| same)
            .and_then(|old| old.last_event),
    };
    // Another live record at the path fails the write on the index of live paths
    // (`records_live_path`); the error then says which record holds it.
    let written = match &existing {
        // A replay, or a restore of the record as it was: at most the mark goes.
        Some(old) if same && kind.is_none() => {
            if old.pending_removal {
                Statements::prepared(
                    tx,
                    &mut statements.restore,
                    "UPDATE records SET pending_removal = 0 WHERE rowid = ?1",
                )?
                .execute(params![old.rowid])
            } else {
                Ok(0)
            }
        }
        // A live row that keeps its path and shared flag (a content edit, a new
        // revision): its indexed columns stay, so it is updated in place by rowid, and
        // the indexes are not touched.
        Some(old) if !old.pending_removal && old.same_place => {
            let updated =
                Statements::prepared(tx, &mut statements.update_in_place, UPDATE_IN_PLACE)?
                    .execute(record_params!(old.rowid, r, last_event));
            if let Ok(n @ 0) | Ok(n @ 2..) = updated {
                // Read in this transaction a moment ago: a mismatch is a bug, never
                // to be passed over (the change would be lost).
                return Err(StoreError::Invalid(format!(
                    "{}: the in-place update matched {n} rows",
                    r.external_id
                )));
            }
            updated
        }
        Some(old) => {
            let updated = Statements::prepared(tx, &mut statements.update_row, UPDATE_ROW)?
                .execute(record_params!(old.rowid, r, last_event));
            if let Ok(n @ 0) | Ok(n @ 2..) = updated {
                return Err(StoreError::Invalid(format!(
                    "{}: the update of its row matched {n} rows",
                    r.external_id
                )));
            }
            updated
        }
        None => statements.insert(tenant, r, last_event)?.map(|()| 1),
    };
    if let Err(e) = written {
        return Err(write_error(tx, tenant, r, e)?);
    }
    Ok(())
}

/// What a failed write of `r`'s row means: a path held by another live record is a conflict
/// that names it; anything else is the database's error.
fn write_error(
    tx: &Transaction<'_>,
    tenant: &str,
    r: &Record,
    e: rusqlite::Error,
) -> Result<StoreError, StoreError> {
    match (e.sqlite_error_code(), &r.path) {
        (Some(rusqlite::ErrorCode::ConstraintViolation), Some(path)) => {
            path_conflict(tx, tenant, &path.lower, &r.external_id)
        }
        _ => Ok(e.into()),
    }
}

/// Flag the live record at `path` and every live descendant. Descendants are the paths that
/// start with `path/`: the range [path + "/", path + "0") in byte order, since '0' follows '/'.
fn mark_subtree(tx: &Transaction<'_>, tenant: &str, path: &str) -> Result<usize, StoreError> {
    let lower = format!("{path}/");
    let upper = format!("{path}0");
    // Two statements, each a search of the path index (an OR of both would scan the tenant).
    let exact = tx
        .prepare_cached(
            "UPDATE records INDEXED BY records_live_path SET pending_removal = 1
             WHERE tenant = ?1 AND path_lower = ?2 AND pending_removal = 0",
        )?
        .execute(params![tenant, path])?;
    let below = tx
        .prepare_cached(
            "UPDATE records INDEXED BY records_live_path SET pending_removal = 1
             WHERE tenant = ?1 AND path_lower >= ?2 AND path_lower < ?3 AND pending_removal = 0",
        )?
        .execute(params![tenant, lower, upper])?;
    Ok(exact + below)
}

/// The id of the live record at `path_lower` other than `external_id`, if any.
fn live_occupant(
    tx: &Transaction<'_>,
    tenant: &str,
    path_lower: &str,
    external_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(tx
        .prepare_cached(
            "SELECT external_id FROM records INDEXED BY records_live_path
             WHERE tenant = ?1 AND path_lower = ?2 AND pending_removal = 0 AND external_id <> ?3 LIMIT 1",
        )?
        .query_row(params![tenant, path_lower, external_id], |row| row.get(0))
        .optional()?)
}

/// The conflict of storing `external_id` at `path_lower`, naming the live record there.
fn path_conflict(
    tx: &Transaction<'_>,
    tenant: &str,
    path_lower: &str,
    external_id: &str,
) -> Result<StoreError, StoreError> {
    let other = live_occupant(tx, tenant, path_lower, external_id)?;
    Ok(StoreError::Conflict(format!(
        "{path_lower} is already held by {}; replace it before storing {external_id}",
        other.as_deref().unwrap_or("another record")
    )))
}

/// What an upsert needs to know of the row of a record's id: where it is, the event whose
/// snapshot it is (if any), its mark, and how it compares with the record about to be written.
struct StoredRow {
    rowid: i64,
    last_event: Option<i64>,
    pending_removal: bool,
    /// The row holds the record's `path_lower` and shared flag (its indexed columns).
    same_place: bool,
    /// The row holds the record as it is (`read_stored` of it would equal it).
    same: bool,
}

/// The row of `r`'s id (`SELECT_ROW`), compared with `r` column by column where it lies: an
/// update read every text column into a string of its own only to compare it, about a
/// tenth of an incremental sync's store time.
fn read_row(row: &rusqlite::Row<'_>, r: &Record) -> rusqlite::Result<StoredRow> {
    let text = |i: usize| row.get_ref(i).and_then(|v| Ok(v.as_bytes_or_null()?));
    let same_text = |i: usize, value: Option<&str>| {
        Ok::<_, rusqlite::Error>(text(i)? == value.map(str::as_bytes))
    };
    let kind = text(6)?.unwrap_or_default();
    let kind = std::str::from_utf8(kind)
        .ok()
        .and_then(RecordKind::parse)
        .ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                6,
                rusqlite::types::Type::Text,
                format!("unknown record kind '{}'", String::from_utf8_lossy(kind)).into(),
            )
        })?;
    // Both path columns are written together from one `path` (`read_stored` reads a row with
    // either missing as a record without a path).
    let path = match (text(3)?, text(4)?) {
        (Some(display), Some(lower)) => Some((display, lower)),
        _ => None,
    };
    let same_path = path
        == r.path
            .as_ref()
            .map(|p| (p.display.as_bytes(), p.lower.as_bytes()));
    let is_shared: bool = row.get(15)?;
    let size: i64 = row.get(8)?;
    let is_downloadable: bool = row.get(12)?;
    let same = same_text(0, Some(&r.external_id))?
        && same_text(1, r.revision.as_deref())?
        && same_text(2, Some(&r.name))?
        && same_path
        && same_text(5, r.parent_external_id.as_deref())?
        && kind == r.kind
        && same_text(7, Some(&r.mime_type))?
        // SQLite integers are signed 64-bit: the bits of the u64 were stored.
        && size == r.size as i64
        && same_text(9, r.content_hash.as_deref())?
        && same_text(10, r.client_modified.as_deref())?
        && same_text(11, r.server_modified.as_deref())?
        && is_downloadable == r.is_downloadable
        && same_text(13, r.export_format.as_deref())?
        && same_text(14, r.web_url.as_deref())?
        && is_shared == r.is_shared
        && same_text(16, r.shared_url.as_deref())?;
    Ok(StoredRow {
        rowid: row.get(RECORD_COLUMN_COUNT)?,
        last_event: row.get(RECORD_COLUMN_COUNT + 1)?,
        pending_removal: row.get(17)?,
        same_place: path.map(|(_, lower)| lower) == r.path_lower().map(str::as_bytes)
            && is_shared == r.is_shared,
        same,
    })
}

static MATERIALIZE_ROW: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT OR IGNORE INTO event_records(seq, {RECORD_COLUMNS})
         SELECT ?1, {RECORD_COLUMNS} FROM records WHERE rowid = ?2"
    )
});

/// Add the ids of the rows past the merged mark to the id index, in its order (so that each of
/// its pages is written once however many of the ids it takes), and move the mark past them.
fn merge_recent(tx: &Transaction<'_>, recent: &mut RecentIds) -> Result<(), StoreError> {
    let through = recent.through();
    // OR ROLLBACK: an id already in the index (a bug) undoes the whole batch, so SQLite
    // keeps no copy of each page the statement changes to undo it alone (in memory, as temp
    // files are: a merge changes nearly every page of the index).
    tx.prepare_cached(
        "INSERT OR ROLLBACK INTO record_ids(tenant, external_id, row)
         SELECT tenant, external_id, row FROM records WHERE row > ?1 ORDER BY tenant, external_id",
    )?
    .execute(params![through])?;
    let merged: i64 = tx
        // Never back: the rows at or below the mark are in the index already.
        .prepare_cached("SELECT max(?1, COALESCE(MAX(row), ?1)) FROM records")?
        .query_row(params![through], |r| r.get(0))?;
    tx.prepare_cached("UPDATE record_ids_merged SET through = ?1")?
        .execute(params![merged])?;
    recent.merged(merged);
    Ok(())
}

/// Materialize the lazy events of the tenant's rows that are about to be deleted: those
/// pending removal (a purge), or all of them (a `clear`). One statement: the database copies
/// the rows.
fn materialize_before_delete(
    tx: &Transaction<'_>,
    tenant: &str,
    pending_only: bool,
) -> Result<(), StoreError> {
    let rows = if pending_only {
        "records INDEXED BY records_pending WHERE tenant = ?1 AND pending_removal = 1 AND"
    } else {
        "records WHERE tenant = ?1 AND"
    };
    tx.prepare_cached(&format!(
        "INSERT OR IGNORE INTO event_records(seq, {RECORD_COLUMNS})
         SELECT last_event, {RECORD_COLUMNS} FROM {rows} last_event IS NOT NULL"
    ))?
    .execute(params![tenant])?;
    Ok(())
}

fn read_stored(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRecord> {
    let size: i64 = row.get(8)?;
    let display: Option<String> = row.get(3)?;
    let lower: Option<String> = row.get(4)?;
    let kind: String = row.get(6)?;
    Ok(StoredRecord {
        record: Record {
            external_id: row.get(0)?,
            revision: row.get(1)?,
            name: row.get(2)?,
            // Both columns are written together from one `path`.
            path: match (display, lower) {
                (Some(display), Some(lower)) => Some(RecordPath { display, lower }),
                _ => None,
            },
            parent_external_id: row.get(5)?,
            kind: RecordKind::parse(&kind).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    6,
                    rusqlite::types::Type::Text,
                    format!("unknown record kind '{kind}'").into(),
                )
            })?,
            mime_type: row.get(7)?,
            // SQLite integers are signed 64-bit: the bits of the u64 were stored.
            size: size as u64,
            content_hash: row.get(9)?,
            client_modified: row.get(10)?,
            server_modified: row.get(11)?,
            is_downloadable: row.get(12)?,
            export_format: row.get(13)?,
            web_url: row.get(14)?,
            is_shared: row.get(15)?,
            shared_url: row.get(16)?,
        },
        pending_removal: row.get(17)?,
    })
}

fn group_kind_str(kind: GroupKind) -> &'static str {
    match kind {
        GroupKind::Drive => "drive",
        GroupKind::Folder => "folder",
        GroupKind::Other => "other",
    }
}

fn parse_group_kind(s: &str) -> GroupKind {
    match s {
        "drive" => GroupKind::Drive,
        "folder" => GroupKind::Folder,
        _ => GroupKind::Other,
    }
}

fn parse_role(s: &str) -> Role {
    match s {
        "owner" => Role::Owner,
        "writer" => Role::Writer,
        "commenter" => Role::Commenter,
        _ => Role::Reader,
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn rec(id: &str, path: &str, kind: RecordKind) -> Record {
        Record {
            external_id: id.into(),
            revision: None,
            name: path.rsplit('/').next().unwrap_or_default().into(),
            path: Some(RecordPath {
                display: path.into(),
                lower: path.to_lowercase(),
            }),
            parent_external_id: None,
            kind,
            mime_type: "application/octet-stream".into(),
            size: 1,
            content_hash: None,
            client_modified: None,
            server_modified: None,
            is_downloadable: true,
            export_format: None,
            web_url: None,
            is_shared: false,
            shared_url: None,
        }
    }

    pub(crate) fn point(position: &str) -> SyncPoint {
        SyncPoint {
            position: position.into(),
            status: SyncStatus {
                phase: SyncPhase::Current,
                detail: format!("at {position}"),
            },
        }
    }

    pub(crate) fn up(r: Record, event: ChangeKind) -> Change {
        Change::Upsert { record: r, event }
    }

    #[test]
    fn batch_with_sync_point_is_all_or_nothing() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .apply(
                "t",
                &[up(rec("id:a", "/a", RecordKind::File), ChangeKind::Created)],
                Some(&point("1")),
            )
            .unwrap();
        store.inject_apply_failure(Some((0, 1)));
        let err = store.apply(
            "t",
            &[
                up(rec("id:b", "/b", RecordKind::File), ChangeKind::Created),
                up(rec("id:c", "/c", RecordKind::File), ChangeKind::Created),
            ],
            Some(&point("2")),
        );
        assert!(matches!(err, Err(StoreError::Injected(1))));
        store.inject_apply_failure(None);
        assert_eq!(store.records("t").unwrap().len(), 1);
        assert_eq!(store.get_sync_point("t").unwrap().as_deref(), Some("1"));
        assert_eq!(store.events(None, 0).unwrap().len(), 1);
    }

    #[test]
    fn subtree_removal_is_deferred_until_purge_and_an_upsert_restores() {
        let store = SqliteStore::open_in_memory().unwrap();
        let changes = vec![
            up(rec("id:d", "/d", RecordKind::Folder), ChangeKind::Created),
            up(rec("id:x", "/d/x", RecordKind::File), ChangeKind::Created),
            up(rec("id:y", "/d/y", RecordKind::File), ChangeKind::Created),
            up(rec("id:z", "/d z", RecordKind::File), ChangeKind::Created),
        ];
        store.apply("t", &changes, None).unwrap();
        store
            .apply("t", &[Change::RemoveSubtree("/d".into())], None)
            .unwrap();
        // "/d z" is not inside "/d".
        assert_eq!(store.records("t").unwrap().len(), 1);
        // x moved elsewhere: restored with its identity.
        store
            .apply(
                "t",
                &[up(
                    rec("id:x", "/e/x", RecordKind::File),
                    ChangeKind::Metadata,
                )],
                None,
            )
            .unwrap();
        let summary = store.apply("t", &[Change::Purge], None).unwrap();
        assert_eq!(summary.deletions, 2);
        let ids: Vec<String> = store
            .records("t")
            .unwrap()
            .into_iter()
            .map(|r| r.external_id)
            .collect();
        assert_eq!(ids, vec!["id:z".to_string(), "id:x".to_string()]);
    }

    #[test]
    fn two_live_records_at_one_path_is_a_conflict_and_replace_resolves_it() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .apply(
                "t",
                &[
                    up(rec("id:f", "/p", RecordKind::Folder), ChangeKind::Created),
                    up(rec("id:c", "/p/c", RecordKind::File), ChangeKind::Created),
                ],
                None,
            )
            .unwrap();
        let err = store.apply(
            "t",
            &[up(rec("id:g", "/p", RecordKind::File), ChangeKind::Created)],
            None,
        );
        assert!(matches!(err, Err(StoreError::Conflict(_))));
        store
            .apply(
                "t",
                &[
                    Change::Replace {
                        path_lower: "/p".into(),
                        new_external_id: "id:g".into(),
                        keep_children: false,
                    },
                    up(rec("id:g", "/p", RecordKind::File), ChangeKind::Created),
                    Change::Purge,
                ],
                None,
            )
            .unwrap();
        let ids: Vec<String> = store
            .records("t")
            .unwrap()
            .into_iter()
            .map(|r| r.external_id)
            .collect();
        assert_eq!(ids, vec!["id:g".to_string()]);
    }

    #[test]
    fn sizes_beyond_i64_round_trip() {
        let store = SqliteStore::open_in_memory().unwrap();
        let mut huge = rec("id:h", "/huge.bin", RecordKind::File);
        huge.size = u64::MAX - 7;
        let mut big = rec("id:b", "/big.bin", RecordKind::File);
        big.size = i64::MAX as u64 + 1;
        store
            .apply(
                "t",
                &[
                    up(huge.clone(), ChangeKind::Created),
                    up(big.clone(), ChangeKind::Created),
                ],
                None,
            )
            .unwrap();
        let back = store
            .get_records("t", &["id:h".into(), "id:b".into()])
            .unwrap();
        assert_eq!(back[0].record, huge);
        assert_eq!(back[1].record, big);
    }

    #[test]
    fn subtree_listing_pages_in_path_order_and_skips_pending() {
        let store = SqliteStore::open_in_memory().unwrap();
        let changes: Vec<Change> = ["/p", "/p/a", "/p/a/x", "/p b", "/p/c", "/p/d", "/q"]
            .iter()
            .enumerate()
            .map(|(i, p)| {
                up(
                    rec(&format!("id:{i}"), p, RecordKind::Folder),
                    ChangeKind::Created,
                )
            })
            .collect();
        store.apply("t", &changes, None).unwrap();
        store
            .apply("t", &[Change::RemoveSubtree("/p/c".into())], None)
            .unwrap();
        let paths = |v: Vec<Record>| {
            v.into_iter()
                .map(|r| r.path.map(|p| p.lower).unwrap_or_default())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            paths(store.list_subtree("t", "/p", None, 2).unwrap()),
            ["/p/a", "/p/a/x"]
        );
        assert_eq!(
            paths(store.list_subtree("t", "/p", Some("/p/a/x"), 2).unwrap()),
            ["/p/d"]
        );
        assert!(store.list_subtree("u", "/p", None, 10).unwrap().is_empty());
    }

    #[test]
    fn a_folder_replacing_a_folder_leaves_its_children_to_the_connector() {
        let store = SqliteStore::open_in_memory().unwrap();
        let mut child = rec("id:c", "/p/c", RecordKind::File);
        child.parent_external_id = Some("id:old".into());
        store
            .apply(
                "t",
                &[
                    up(rec("id:old", "/p", RecordKind::Folder), ChangeKind::Created),
                    up(child.clone(), ChangeKind::Created),
                ],
                None,
            )
            .unwrap();
        let seq = store.last_event_seq().unwrap();
        store
            .apply(
                "t",
                &[
                    Change::Replace {
                        path_lower: "/p".into(),
                        new_external_id: "id:new".into(),
                        keep_children: true,
                    },
                    up(rec("id:new", "/p", RecordKind::Folder), ChangeKind::Created),
                ],
                None,
            )
            .unwrap();
        let events = store.events(Some("t"), seq).unwrap();
        assert_eq!(events.len(), 1, "only the newcomer's creation: {events:?}");
        assert_eq!(
            store.get_records("t", &["id:c".into()]).unwrap()[0].record,
            child
        );
    }

    #[test]
    fn tenants_are_isolated() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .apply(
                "a",
                &[up(
                    rec("id:1", "/one", RecordKind::File),
                    ChangeKind::Created,
                )],
                Some(&point("va")),
            )
            .unwrap();
        store
            .apply("b", &[Change::MarkAllPending, Change::Purge], None)
            .unwrap();
        assert_eq!(store.records("a").unwrap().len(), 1);
        assert!(store.get_records("b", &["id:1".into()]).unwrap().is_empty());
        assert_eq!(store.get_sync_point("b").unwrap(), None);
    }

    #[test]
    fn new_database_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let _store = SqliteStore::open(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    fn flat(id: &str) -> Record {
        let mut r = rec(id, "/unused", RecordKind::Item);
        r.path = None;
        r
    }

    #[test]
    fn records_without_a_path_never_conflict_and_their_events_have_no_path() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .apply(
                "t",
                &[
                    up(flat("n1"), ChangeKind::Created),
                    up(flat("n2"), ChangeKind::Created),
                ],
                None,
            )
            .unwrap();
        let back = store.get_records("t", &["n1".into()]).unwrap();
        assert_eq!(back[0].record, flat("n1"));
        let events = store.events(Some("t"), 0).unwrap();
        assert_eq!(events.len(), 2);
        assert!(events.iter().all(|e| e.path_lower.is_none()));
    }

    #[test]
    fn remove_marks_one_record_and_not_its_descendants() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .apply(
                "t",
                &[
                    up(rec("id:d", "/d", RecordKind::Folder), ChangeKind::Created),
                    up(rec("id:x", "/d/x", RecordKind::File), ChangeKind::Created),
                ],
                None,
            )
            .unwrap();
        store
            .apply(
                "t",
                &[Change::Remove("id:d".into()), Change::Remove("nope".into())],
                None,
            )
            .unwrap();
        assert_eq!(store.pending_count("t").unwrap(), 1);
        let summary = store.apply("t", &[Change::Purge], None).unwrap();
        assert_eq!(summary.deletions, 1);
        let ids: Vec<String> = store
            .records("t")
            .unwrap()
            .into_iter()
            .map(|r| r.external_id)
            .collect();
        assert_eq!(ids, ["id:x"]);
    }

    #[test]
    fn list_records_pages_by_external_id_and_skips_pending() {
        let store = SqliteStore::open_in_memory().unwrap();
        let changes: Vec<Change> = ["c", "a", "e", "b", "d"]
            .iter()
            .map(|id| up(flat(id), ChangeKind::Created))
            .collect();
        store.apply("t", &changes, None).unwrap();
        store
            .apply("t", &[Change::Remove("d".into())], None)
            .unwrap();
        let ids = |v: Vec<Record>| v.into_iter().map(|r| r.external_id).collect::<Vec<_>>();
        assert_eq!(ids(store.list_records("t", None, 2).unwrap()), ["a", "b"]);
        assert_eq!(
            ids(store.list_records("t", Some("b"), 10).unwrap()),
            ["c", "e"]
        );
        assert!(store.list_records("u", None, 10).unwrap().is_empty());
    }

    #[test]
    fn the_sync_point_keeps_its_status_and_a_batch_without_one_keeps_it() {
        let store = SqliteStore::open_in_memory().unwrap();
        assert_eq!(store.sync_status("t").unwrap(), None);
        store.apply("t", &[], Some(&point("p1"))).unwrap();
        store.apply("t", &[], None).unwrap();
        assert_eq!(store.get_sync_point("t").unwrap().as_deref(), Some("p1"));
        assert_eq!(store.sync_status("t").unwrap(), Some(point("p1").status));
        store.clear("t").unwrap();
        assert_eq!(store.get_sync_point("t").unwrap(), None);
        assert_eq!(store.sync_status("t").unwrap(), None);
    }

    #[test]
    fn the_last_sync_outcome_is_typed() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .record_sync_result("t", SyncOutcome::Interrupted, "ok, but stopped")
            .unwrap();
        let status = store.status("t").unwrap();
        assert_eq!(status.last_sync_outcome, Some(SyncOutcome::Interrupted));
        assert_eq!(status.last_sync_note.as_deref(), Some("ok, but stopped"));
    }

    #[test]
    fn a_version_2_database_is_migrated_keeping_its_records_and_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "CREATE TABLE schema_version(version INTEGER NOT NULL); BEGIN; {SCHEMA_V2} COMMIT;"
            ))
            .unwrap();
            conn.execute_batch(
                "INSERT INTO records(tenant, external_id, name, path_display, path_lower, kind, mime_type,
                     size, is_downloadable, is_shared)
                   VALUES ('t', 'id:a', 'a', '/A', '/a', 'file', 'text/plain', 5, 1, 0);
                 INSERT INTO events(seq, tenant, batch, kind, external_id, path_lower, record_json, at)
                   VALUES (41, 't', 41, 'created', 'id:a', '/a', '{\"id\":\"id:a\",\"size\":5}', 0);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let events = store.events(None, 0).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].seq, 41);
        assert_eq!(events[0].record["size"], 5);
        assert_eq!(store.records("t").unwrap()[0].external_id, "id:a");
        // The next event follows the migrated ones, and the old event keeps its record.
        let mut a = rec("id:a", "/a", RecordKind::File);
        a.size = 6;
        store
            .apply("t", &[up(a, ChangeKind::Content)], None)
            .unwrap();
        let events = store.events(None, 0).unwrap();
        assert_eq!(events.len(), 2);
        assert!(events[1].seq > 41, "{events:?}");
        assert_eq!(events[0].record["size"], 5);
        assert_eq!(events[1].record["size"], 6);
        drop(store);
        // Opening it again changes nothing.
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.events(None, 0).unwrap(), events);
    }

    #[test]
    fn a_creation_of_an_id_the_store_has_updates_its_row_and_keeps_the_old_snapshot() {
        let store = SqliteStore::open_in_memory().unwrap();
        let first = rec("id:a", "/a", RecordKind::File);
        store
            .apply("t", &[up(first.clone(), ChangeKind::Created)], None)
            .unwrap();
        // Pending removal, then "created" again with other values (a connector whose view
        // was stale): the insert finds the row, and the general path updates and restores it.
        let mut again = first.clone();
        again.size = 2;
        store
            .apply(
                "t",
                &[
                    Change::MarkAllPending,
                    up(again.clone(), ChangeKind::Created),
                ],
                None,
            )
            .unwrap();
        let stored = store.get_records("t", &["id:a".into()]).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].record, again);
        assert!(!stored[0].pending_removal);
        let events = store.events(Some("t"), 0).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].record, record_json(&first));
        assert_eq!(events[1].record, record_json(&again));
    }

    #[test]
    fn an_update_that_keeps_the_path_writes_every_other_field() {
        let store = SqliteStore::open_in_memory().unwrap();
        let before = rec("id:a", "/d/a.txt", RecordKind::File);
        store
            .apply("t", &[up(before.clone(), ChangeKind::Created)], None)
            .unwrap();
        // Everything but the id, `path.lower` and the shared flag changes: the row is updated
        // in place, and must come back with every new value.
        let mut after = before.clone();
        after.revision = Some("r2".into());
        after.name = "A.txt".into();
        after.path = Some(RecordPath {
            display: "/D/A.txt".into(),
            lower: "/d/a.txt".into(),
        });
        after.parent_external_id = Some("id:d".into());
        after.kind = RecordKind::Folder;
        after.mime_type = "text/plain".into();
        after.size = u64::MAX;
        after.content_hash = Some("h2".into());
        after.client_modified = Some("2026-01-01T00:00:00Z".into());
        after.server_modified = Some("2026-01-02T00:00:00Z".into());
        after.is_downloadable = false;
        after.export_format = Some("pdf".into());
        after.web_url = Some("https://example.com/a".into());
        after.shared_url = Some("https://example.com/s".into());
        store
            .apply(
                "t",
                &[up(after.clone(), ChangeKind::ContentAndMetadata)],
                None,
            )
            .unwrap();
        let stored = store.get_records("t", &["id:a".into()]).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].record, after);
        assert!(!stored[0].pending_removal);
        let events = store.events(Some("t"), 0).unwrap();
        assert_eq!(events[0].record, record_json(&before));
        assert_eq!(events[1].record, record_json(&after));
        // The path still finds it, and only it.
        let found = store.find_by_paths("t", &["/d/a.txt".into()]).unwrap();
        assert_eq!(found, vec![Some(after)]);
    }

    #[test]
    fn a_version_3_database_is_migrated_keeping_its_lazy_and_materialized_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "CREATE TABLE schema_version(version INTEGER NOT NULL); BEGIN; {SCHEMA_V2} {V2_TO_V3} COMMIT;"
            ))
            .unwrap();
            // Event 7 was materialized as JSON by version 3 (the record then changed and got
            // event 8, whose snapshot is still the row).
            conn.execute_batch(
                "INSERT INTO records(tenant, external_id, name, path_display, path_lower, kind, mime_type,
                     size, is_downloadable, is_shared, last_event)
                   VALUES ('t', 'id:a', 'a', '/A', '/a', 'file', 'text/plain', 6, 1, 0, 8);
                 INSERT INTO events(seq, tenant, batch, kind, external_id, path_lower, record_json, at)
                   VALUES (7, 't', 7, 'created', 'id:a', '/a', '{\"id\":\"id:a\",\"size\":5}', 0),
                          (8, 't', 8, 'content', 'id:a', NULL, NULL, 0);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let before = store.events(None, 0).unwrap();
        assert_eq!(before.len(), 2);
        assert_eq!(before[0].record["size"], 5);
        assert_eq!(before[1].record["size"], 6);
        assert_eq!(before[1].path_lower.as_deref(), Some("/a"));
        // A change now copies the row into event 8's snapshot before it takes the new values.
        let mut a = rec("id:a", "/a", RecordKind::File);
        a.size = 9;
        store
            .apply("t", &[up(a, ChangeKind::Content)], None)
            .unwrap();
        let snapshots: i64 = store
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM event_records WHERE seq = 8",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(snapshots, 1);
        let after = store.events(None, 0).unwrap();
        assert_eq!(after[..2], before[..]);
        assert_eq!(after[2].record["size"], 9);
        // Then a purge: the last event's snapshot is copied before the row goes.
        store
            .apply(
                "t",
                &[Change::RemoveSubtree("/a".into()), Change::Purge],
                None,
            )
            .unwrap();
        let purged = store.events(None, 0).unwrap();
        assert_eq!(purged[..3], after[..]);
        assert_eq!(purged[3].kind, "deleted");
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.events(None, 0).unwrap(), purged);
    }

    #[test]
    fn a_version_1_database_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_version(version INTEGER NOT NULL);
                 INSERT INTO schema_version(version) VALUES (1);",
            )
            .unwrap();
        }
        let err = SqliteStore::open(&path).err().expect("refused");
        assert!(
            matches!(
                err,
                StoreError::SchemaVersion {
                    found: 1,
                    wanted: SCHEMA_VERSION
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("new database file"), "{err}");
    }
}

#[cfg(test)]
mod contract_suite {
    use super::SqliteStore;
    use crate::secrets::Keyring;

    fn fresh() -> ((), SqliteStore) {
        let keyring = Keyring::parse(&Keyring::generate_key(), "test").expect("a generated key");
        let store = SqliteStore::open_in_memory().expect("in-memory SQLite");
        ((), store.with_keyring(keyring))
    }

    crate::store::contract::contract_tests!(fresh);

    #[test]
    fn a_tenant_created_again_never_reuses_an_event_number() {
        let (_, store) = fresh();
        crate::store::contract::a_tenant_created_again_never_reuses_an_event_number(
            &store,
            &|tenant| {
                store
                    .conn()
                    .execute("DELETE FROM tenants WHERE name = ?1", [tenant])
                    .unwrap();
            },
        );
    }
}

#[cfg(test)]
mod sealed_credentials {
    use super::*;
    use crate::secrets::SecretError;

    fn creds() -> StoredCredentials {
        StoredCredentials {
            access_token: "sl.plain-access".into(),
            refresh_token: Some("plain-refresh".into()),
            expires_at: Some(1),
            client_id: Some("app-key".into()),
            client_secret: Some("plain-secret".into()),
            account_id: None,
        }
    }

    #[test]
    fn credentials_are_sealed_in_the_file_and_rotate_to_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let old_key = Keyring::generate_key();
        let new_key = Keyring::generate_key();
        let store = SqliteStore::open(&path)
            .unwrap()
            .with_keyring(Keyring::parse(&old_key, "old").unwrap());
        store.put_credentials("t", &creds()).unwrap();
        let raw: Vec<String> = {
            let conn = Connection::open(&path).unwrap();
            conn.query_row(
                "SELECT access_token, refresh_token, client_secret FROM credentials",
                [],
                |r| Ok(vec![r.get(0)?, r.get(1)?, r.get(2)?]),
            )
            .unwrap()
        };
        assert!(
            raw.iter()
                .all(|v| v.starts_with("v1:") && !v.contains("plain")),
            "{raw:?}"
        );
        assert_eq!(store.credentials("t").unwrap(), Some(creds()));
        drop(store);

        let both = Keyring::parse(&format!("{new_key}\n{old_key}"), "file").unwrap();
        let store = SqliteStore::open(&path).unwrap().with_keyring(both);
        let report = store.rotate_secrets().unwrap();
        assert_eq!((report.resealed, report.unchanged), (3, 0));
        drop(store);
        let store = SqliteStore::open(&path)
            .unwrap()
            .with_keyring(Keyring::parse(&new_key, "new").unwrap());
        assert_eq!(store.credentials("t").unwrap(), Some(creds()));

        let keyless = SqliteStore::open(&path)
            .unwrap()
            .with_keyring(Keyring::empty());
        assert!(matches!(
            keyless.credentials("t"),
            Err(StoreError::Secret(SecretError::MissingKey))
        ));
        assert!(matches!(
            keyless.put_credentials("u", &creds()),
            Err(StoreError::Secret(SecretError::MissingKey))
        ));
    }
}

#[cfg(test)]
mod key_beside_database {
    use super::*;

    #[test]
    fn without_a_given_key_the_first_credentials_create_a_private_key_file_beside_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let key_file = dir.path().join("h.db.key");
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.credentials("t").unwrap(), None);
        assert!(!key_file.exists(), "a read creates no key file");
        let creds = StoredCredentials {
            access_token: "sl.plain-access".into(),
            ..Default::default()
        };
        store.put_credentials("t", &creds).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let raw: String = Connection::open(&path)
            .unwrap()
            .query_row("SELECT access_token FROM credentials", [], |r| r.get(0))
            .unwrap();
        assert!(raw.starts_with("v1:") && !raw.contains("plain"), "{raw}");
        drop(store);
        // Another process (a new store on the same file) finds the same key.
        let again = SqliteStore::open(&path).unwrap();
        assert_eq!(again.credentials("t").unwrap(), Some(creds));
    }
}

#[cfg(test)]
mod background_checkpoints {
    use super::tests::{point, rec, up};
    use super::*;

    #[test]
    fn the_wal_is_copied_into_the_database_file_by_the_background_thread_while_the_store_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        // Far below the inline bound, so only the background thread can checkpoint here.
        let policy = CheckpointPolicy {
            background_at: 8,
            inline_at: i32::MAX,
        };
        let store = SqliteStore::open_with_checkpoints(&path, policy).unwrap();
        assert!(store.checkpointer.is_some(), "a file store has the thread");
        let file_len = || std::fs::metadata(&path).unwrap().len();
        let before = file_len();
        for batch in 0..20 {
            let changes: Vec<Change> = (0..50)
                .map(|i| {
                    let id = format!("id:{batch}-{i}");
                    up(
                        rec(&id, &format!("/d{batch}/f{i}"), RecordKind::File),
                        ChangeKind::Created,
                    )
                })
                .collect();
            store
                .apply("t", &changes, Some(&point(&batch.to_string())))
                .unwrap();
        }
        // Nothing but a checkpoint writes to the database file in WAL mode; without the thread
        // (and with no automatic checkpoint) it would keep its size until the close.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while file_len() <= before && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            file_len() > before,
            "the database file grew while the store was open ({before} bytes before)"
        );
        // Every record is readable, and the database is whole.
        assert_eq!(store.records("t").unwrap().len(), 1000);
        drop(store);
        let wal = dir.path().join("c.db-wal");
        assert!(!wal.exists(), "the last connection's close removes the WAL");
        let check = Connection::open(&path).unwrap();
        let integrity: String = check
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok");
        let count: i64 = check
            .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 1000);
    }
}

#[cfg(test)]
mod perf {
    use super::tests::{point, rec, up};
    use super::*;

    #[test]
    #[ignore]
    fn apply_throughput() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("p.db")).unwrap();
        let env_or = |name: &str, default: u64| -> u64 {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let per = env_or("PERF_BATCH", 100);
        let n = env_or("PERF_N", 100_000);
        let t = std::time::Instant::now();
        for b in 0..(n / per) {
            let changes: Vec<Change> = (0..per)
                .map(|i| {
                    up(
                        rec(
                            &format!("id:{:x}", (b * per + i).wrapping_mul(0x9E3779B97F4A7C15)),
                            &format!("/f{b}/x{i}"),
                            RecordKind::File,
                        ),
                        ChangeKind::Created,
                    )
                })
                .collect();
            store
                .apply("t", &changes, Some(&point(&b.to_string())))
                .unwrap();
        }
        eprintln!("100k upserts in 1000 batches: {:?}", t.elapsed());
        let t = std::time::Instant::now();
        let paths: Vec<String> = (0..2000).map(|i| format!("/f1/x{i}")).collect();
        store.find_by_paths("t", &paths).unwrap();
        eprintln!("2000 path lookups: {:?}", t.elapsed());
    }
}

/// Runs of creations are written in chunks (`create_chunk`); what a batch leaves in the store
/// and the event stream must be what writing it one change at a time leaves.
#[cfg(test)]
mod creation_chunks {
    use super::tests::{point, rec, up};
    use super::*;

    thread_local! {
        /// Chunks `create_chunk` wrote on this thread (each test runs on its own).
        pub(super) static WRITTEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    fn chunks_written() -> usize {
        WRITTEN.with(|n| n.get())
    }

    fn file(i: usize) -> Record {
        let mut r = rec(&format!("id:{i:04}"), &format!("/d/f{i}"), RecordKind::File);
        r.size = i as u64;
        r
    }

    /// The events after `since` as (kind, id, path, record): what a reader of the stream sees,
    /// without the numbers a batch gives them.
    fn stream(store: &SqliteStore, since: i64) -> Vec<(String, String, Option<String>, Value)> {
        store
            .events(Some("t"), since)
            .unwrap()
            .into_iter()
            .map(|e| (e.kind, e.external_id, e.path_lower, e.record))
            .collect()
    }

    fn all_records(store: &SqliteStore) -> Vec<Record> {
        let mut found = store.list_records("t", None, 10_000).unwrap();
        found.sort_by(|a, b| a.external_id.cmp(&b.external_id));
        found
    }

    /// Two stores with the same history: an existing record `id:0070` (at another path), and a
    /// record holding `/d/held`.
    fn seeded() -> SqliteStore {
        let store = SqliteStore::open_in_memory().unwrap();
        let mut existing = file(70);
        existing.path = Some(RecordPath {
            display: "/old/f70".into(),
            lower: "/old/f70".into(),
        });
        store
            .apply(
                "t",
                &[
                    up(existing, ChangeKind::Created),
                    up(
                        rec("id:holder", "/d/held", RecordKind::File),
                        ChangeKind::Created,
                    ),
                ],
                Some(&point("0")),
            )
            .unwrap();
        store
    }

    #[test]
    fn chunks_leave_what_one_change_at_a_time_leaves() {
        // 200 creations: chunks of 64 with an id the store already has (70) in the second, a
        // repeated id (130 twice, at two paths) in the third, then the rest one at a time.
        let mut changes: Vec<Change> = (0..200).map(|i| up(file(i), ChangeKind::Created)).collect();
        let mut again = file(130);
        again.path = Some(RecordPath {
            display: "/d/again".into(),
            lower: "/d/again".into(),
        });
        changes[140] = up(again, ChangeKind::Created);

        let chunked = seeded();
        let since = chunked.last_event_seq().unwrap();
        let written = chunks_written();
        let summary = chunked.apply("t", &changes, Some(&point("1"))).unwrap();
        assert_eq!(summary.created, 200);
        // Chunks: [0, 64); then changes 64 to 70 one at a time (a run from any of them holds
        // id 70, which has a row); [71, 135) (id 130 once); then 135 to 140 one at a time (id
        // 130 again at 140, which has a row by then), and the last 59, too few for a chunk.
        assert_eq!(chunks_written() - written, 2);

        let single = seeded();
        for change in &changes {
            single
                .apply("t", std::slice::from_ref(change), None)
                .unwrap();
        }

        assert_eq!(stream(&chunked, since), stream(&single, since));
        assert_eq!(all_records(&chunked), all_records(&single));
        // The record that existed moved to its new path; its first event kept its snapshot.
        let events = stream(&chunked, 0);
        assert_eq!(events[0].3["path_lower"], "/old/f70");
        let e70: Vec<_> = events.iter().filter(|e| e.1 == "id:0070").collect();
        assert_eq!(e70.len(), 2);
        assert_eq!(e70[1].3["path_lower"], "/d/f70");
        // Sequence numbers carry on from the last event, one per change, in order.
        let seqs: Vec<i64> = chunked
            .events(Some("t"), since)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, ((since + 1)..=(since + 200)).collect::<Vec<_>>());
    }

    #[test]
    fn a_path_held_inside_a_chunk_fails_the_batch_and_names_the_holder() {
        let store = seeded();
        let before = store.last_event_seq().unwrap();
        let mut changes: Vec<Change> = (0..64).map(|i| up(file(i), ChangeKind::Created)).collect();
        changes[5] = up(
            rec("id:newcomer", "/d/held", RecordKind::File),
            ChangeKind::Created,
        );
        let err = store.apply("t", &changes, Some(&point("1"))).unwrap_err();
        let StoreError::Conflict(message) = err else {
            panic!("expected a conflict, got {err:?}");
        };
        assert!(
            message.contains("id:holder") && message.contains("/d/held"),
            "{message}"
        );
        // Nothing of the batch is stored.
        assert_eq!(store.last_event_seq().unwrap(), before);
        assert_eq!(store.record_count("t").unwrap(), 2);
        assert_eq!(store.get_sync_point("t").unwrap().as_deref(), Some("0"));
    }

    #[test]
    fn an_injected_failure_inside_a_run_still_comes_before_its_change() {
        let store = seeded();
        let changes: Vec<Change> = (0..200).map(|i| up(file(i), ChangeKind::Created)).collect();
        store.inject_apply_failure(Some((0, 100)));
        let err = store.apply("t", &changes, Some(&point("1"))).unwrap_err();
        assert!(matches!(err, StoreError::Injected(100)), "{err:?}");
        assert_eq!(store.record_count("t").unwrap(), 2);
    }

    #[test]
    fn new_events_come_after_every_event_there_ever_was() {
        let store = seeded();
        // The AUTOINCREMENT counter ahead of the table, as when the newest events are gone.
        store
            .conn()
            .execute(
                "UPDATE sqlite_sequence SET seq = 1000 WHERE name = 'events'",
                [],
            )
            .unwrap();
        let changes: Vec<Change> = (0..64).map(|i| up(file(i), ChangeKind::Created)).collect();
        let written = chunks_written();
        store.apply("t", &changes, None).unwrap();
        assert_eq!(chunks_written() - written, 1);
        let seqs: Vec<i64> = store
            .events(Some("t"), 2)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, (1001..=1064).collect::<Vec<_>>());
    }
}

/// An upsert compares the stored row with the record column by column (`read_row`): every
/// field must count.
#[cfg(test)]
mod row_comparison {
    use super::tests::{rec, up};
    use super::*;

    fn full() -> Record {
        let mut r = rec("id:a", "/Dir/A.txt", RecordKind::File);
        r.revision = Some("r1".into());
        r.parent_external_id = Some("id:dir".into());
        r.content_hash = Some("h1".into());
        r.client_modified = Some("2024-01-01T00:00:00Z".into());
        r.server_modified = Some("2024-01-02T00:00:00Z".into());
        r.export_format = Some("md".into());
        r.web_url = Some("https://w/1".into());
        r.shared_url = Some("https://s/1".into());
        r.is_shared = true;
        r.size = u64::MAX - 1;
        r
    }

    #[test]
    fn a_record_unchanged_in_every_field_is_the_same_and_any_field_changed_is_not() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .apply("t", &[up(full(), ChangeKind::Created)], None)
            .unwrap();
        let events = |s: &SqliteStore| s.events(Some("t"), 0).unwrap().len();
        // The same record, unchanged: nothing is written, no event.
        store
            .apply("t", &[up(full(), ChangeKind::Unchanged)], None)
            .unwrap();
        assert_eq!(events(&store), 1);

        type Edit = fn(&mut Record);
        let edits: [(&str, Edit); 17] = [
            ("shared", |r| r.is_shared = false),
            ("revision", |r| r.revision = Some("r2".into())),
            ("revision gone", |r| r.revision = None),
            ("name", |r| r.name = "B.txt".into()),
            ("display path", |r| {
                r.path = Some(RecordPath {
                    display: "/dir/A.txt".into(),
                    lower: "/dir/a.txt".into(),
                })
            }),
            ("path gone", |r| r.path = None),
            ("parent", |r| r.parent_external_id = None),
            ("kind", |r| r.kind = RecordKind::Item),
            ("mime type", |r| r.mime_type = "text/plain".into()),
            ("size", |r| r.size = 7),
            ("content hash", |r| r.content_hash = Some("h2".into())),
            ("client modified", |r| r.client_modified = None),
            ("server modified", |r| {
                r.server_modified = Some("2025-01-01T00:00:00Z".into())
            }),
            ("downloadable", |r| r.is_downloadable = false),
            ("export format", |r| r.export_format = Some("html".into())),
            ("web url", |r| r.web_url = Some("https://w/2".into())),
            ("shared url", |r| r.shared_url = None),
        ];
        for (what, edit) in edits {
            let mut changed = full();
            edit(&mut changed);
            // Unchanged by the connector's account, but not what the row holds: the row takes
            // the record's values.
            store
                .apply("t", &[up(changed.clone(), ChangeKind::Unchanged)], None)
                .unwrap();
            let back = store.get_records("t", &["id:a".into()]).unwrap();
            assert_eq!(back[0].record, changed, "{what}");
            // And back, for the next field.
            store
                .apply("t", &[up(full(), ChangeKind::Unchanged)], None)
                .unwrap();
            assert_eq!(
                store.get_records("t", &["id:a".into()]).unwrap()[0].record,
                full(),
                "{what}"
            );
        }
        assert_eq!(events(&store), 1);
    }
}

/// The id index in two parts (schema version 5, `recent_ids`): rows written during a listing
/// are found by id before their ids are merged into the index, by this store and by another
/// store on the same file, across failures and reopening; a merge and a purge leave the index
/// holding exactly the ids of the rows up to the mark.
#[cfg(test)]
mod recent_id_tests {
    use super::tests::{point, rec, up};
    use super::*;

    fn listing(position: &str) -> SyncPoint {
        let mut p = point(position);
        p.status.phase = SyncPhase::Listing;
        p
    }

    fn files(ids: std::ops::Range<usize>, dir: &str) -> Vec<Change> {
        ids.map(|i| {
            up(
                rec(
                    &format!("id:{i:05}"),
                    &format!("/{dir}/f{i}"),
                    RecordKind::File,
                ),
                ChangeKind::Created,
            )
        })
        .collect()
    }

    /// (rows, ids in the index, rows past the merged mark) of a store's file.
    fn counts(store: &SqliteStore) -> (i64, i64, i64) {
        let conn = store.conn();
        let rows = conn
            .query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0))
            .unwrap();
        let indexed = conn
            .query_row("SELECT COUNT(*) FROM record_ids", [], |r| r.get(0))
            .unwrap();
        let past = conn
            .query_row(
                "SELECT COUNT(*) FROM records WHERE row > (SELECT through FROM record_ids_merged)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        (rows, indexed, past)
    }

    /// Every row's id is in the index with its row number, or the row is past the mark.
    fn index_matches_rows(store: &SqliteStore) {
        let conn = store.conn();
        let wrong: i64 = conn
            .query_row(
                "SELECT
                   (SELECT COUNT(*) FROM records r WHERE r.row <= (SELECT through FROM record_ids_merged)
                      AND NOT EXISTS (SELECT 1 FROM record_ids i WHERE i.tenant = r.tenant
                                      AND i.external_id = r.external_id AND i.row = r.row))
                 + (SELECT COUNT(*) FROM record_ids i WHERE NOT EXISTS
                      (SELECT 1 FROM records r WHERE r.row = i.row AND r.tenant = i.tenant
                       AND r.external_id = i.external_id))",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(wrong, 0, "the id index and the rows disagree");
    }

    #[test]
    fn a_listings_rows_are_found_by_id_before_and_after_their_merge() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .apply("t", &files(0..150, "a"), Some(&listing("1")))
            .unwrap();
        store
            .apply("t", &files(150..300, "b"), Some(&listing("2")))
            .unwrap();
        // Nothing merged yet: 300 rows past the mark, and the index empty.
        assert_eq!(counts(&store), (300, 0, 300));
        // Found by id (the guest's lookups) while unmerged.
        let ids: Vec<String> = ["id:00007", "id:00222", "id:99999"]
            .map(String::from)
            .to_vec();
        let found = store.get_records("t", &ids).unwrap();
        assert_eq!(
            found
                .iter()
                .map(|s| s.record.external_id.as_str())
                .collect::<Vec<_>>(),
            ["id:00007", "id:00222"]
        );
        // An update of an unmerged row changes that row (no second row for the id), and a
        // removal finds it too.
        let mut moved = rec("id:00007", "/c/moved", RecordKind::File);
        moved.size = 99;
        store
            .apply(
                "t",
                &[
                    up(moved, ChangeKind::Metadata),
                    Change::Remove("id:00222".into()),
                ],
                Some(&listing("3")),
            )
            .unwrap();
        assert_eq!(counts(&store).0, 300);
        // The listing is done: the ids join the index, which then matches the rows.
        store
            .apply("t", &[Change::Purge], Some(&point("4")))
            .unwrap();
        assert_eq!(counts(&store), (299, 299, 0));
        index_matches_rows(&store);
        let found = store.get_records("t", &ids).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].record.size, 99);
        assert_eq!(found[0].record.path_lower(), Some("/c/moved"));
        // Listing by id reads the index: every id once, in byte order.
        let listed: Vec<String> = store
            .list_records("t", None, 1000)
            .unwrap()
            .into_iter()
            .map(|r| r.external_id)
            .collect();
        let mut expected: Vec<String> = (0..300)
            .filter(|&i| i != 222)
            .map(|i| format!("id:{i:05}"))
            .collect();
        expected.sort();
        assert_eq!(listed, expected);
    }

    #[test]
    fn records_are_listed_in_id_order_across_the_index_and_the_recent_rows() {
        let store = SqliteStore::open_in_memory().unwrap();
        // Even ids merged, odd ids recent.
        let evens: Vec<Change> = files(0..40, "a").into_iter().step_by(2).collect();
        let odds: Vec<Change> = files(0..40, "a").into_iter().skip(1).step_by(2).collect();
        store.apply("t", &evens, Some(&point("1"))).unwrap();
        store.apply("t", &odds, Some(&listing("2"))).unwrap();
        assert_eq!(counts(&store), (40, 20, 20));
        let mut pages = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store.list_records("t", after.as_deref(), 7).unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.external_id.clone());
            pages.extend(page.into_iter().map(|r| r.external_id));
        }
        let expected: Vec<String> = (0..40).map(|i| format!("id:{i:05}")).collect();
        assert_eq!(pages, expected);
    }

    #[test]
    fn another_store_on_the_same_file_finds_the_unmerged_rows_and_never_doubles_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let first = SqliteStore::open(&path).unwrap();
        let second = SqliteStore::open(&path).unwrap();
        // The second store reads (and so loads its map) before the first writes.
        assert!(
            second
                .get_records("t", &["id:00001".into()])
                .unwrap()
                .is_empty()
        );
        first
            .apply("t", &files(0..100, "a"), Some(&listing("1")))
            .unwrap();
        // The second store, stale in memory, is told of creations of the same ids (a
        // connector's stale view): the rows exist, so they are updated, not doubled.
        let summary = second
            .apply("t", &files(0..100, "a"), Some(&listing("2")))
            .unwrap();
        assert_eq!(summary.created, 100);
        assert_eq!(counts(&second), (100, 0, 100));
        // And the first store sees the second's rows (new ones, too) in turn.
        second
            .apply("t", &files(100..110, "b"), Some(&listing("3")))
            .unwrap();
        first
            .apply("t", &files(105..115, "c"), Some(&listing("4")))
            .unwrap();
        assert_eq!(counts(&first), (115, 0, 115));
        // A store opened afresh loads the unmerged rows from the file.
        drop((first, second));
        let third = SqliteStore::open(&path).unwrap();
        third
            .apply("t", &files(0..115, "d"), Some(&point("5")))
            .unwrap();
        assert_eq!(counts(&third), (115, 115, 0));
        index_matches_rows(&third);
        assert_eq!(third.record_count("t").unwrap(), 115);
    }

    #[test]
    fn rows_of_a_failed_batch_are_never_taken_for_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(&path).unwrap();
        let other = SqliteStore::open(&path).unwrap();
        store
            .apply("t", &files(0..100, "a"), Some(&listing("1")))
            .unwrap();
        // A batch that writes 100 rows (chunks and single ones) and then fails: its row
        // numbers are given again, here to another store's rows, with other ids.
        store.inject_apply_failure(Some((0, 100)));
        let failed = store.apply("t", &files(100..200, "b"), Some(&listing("2")));
        assert!(matches!(failed, Err(StoreError::Injected(100))));
        store.inject_apply_failure(None);
        other
            .apply("t", &files(200..300, "c"), Some(&listing("3")))
            .unwrap();
        // The failed batch's ids have no rows; the other store's rows are found by id, so
        // their creations told to this store again update them.
        let none = store
            .get_records(
                "t",
                &(100..200).map(|i| format!("id:{i:05}")).collect::<Vec<_>>(),
            )
            .unwrap();
        assert!(none.is_empty());
        store
            .apply("t", &files(200..300, "c"), Some(&listing("4")))
            .unwrap();
        assert_eq!(counts(&store), (200, 0, 200));
        store
            .apply("t", &files(100..200, "b"), Some(&point("5")))
            .unwrap();
        assert_eq!(counts(&store), (300, 300, 0));
        index_matches_rows(&store);
    }

    /// The ids asked for, found.
    fn found(store: &SqliteStore, ids: std::ops::Range<usize>) -> usize {
        let ids: Vec<String> = ids.map(|i| format!("id:{i:05}")).collect();
        store.get_records("t", &ids).unwrap().len()
    }

    #[test]
    fn the_filter_of_indexed_ids_holds_every_merged_id_whoever_merged_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(&path).unwrap();
        let other = SqliteStore::open(&path).unwrap();
        store
            .apply("t", &files(0..100, "a"), Some(&point("1")))
            .unwrap();
        // A listing makes the filter from the index: the ids merged before are in it.
        store
            .apply("t", &files(100..200, "b"), Some(&listing("2")))
            .unwrap();
        assert_eq!(found(&store, 0..200), 200);
        // The ids this store merges join its filter.
        store.apply("t", &[], Some(&point("3"))).unwrap();
        assert_eq!(counts(&store), (200, 200, 0));
        store
            .apply("t", &files(200..250, "c"), Some(&listing("4")))
            .unwrap();
        assert_eq!(found(&store, 0..250), 250);
        // Another store merges (this store's unmerged rows and its own): its ids are found
        // here too, and told again as creations they update the rows.
        other
            .apply("t", &files(250..300, "d"), Some(&point("5")))
            .unwrap();
        assert_eq!(counts(&other), (300, 300, 0));
        assert_eq!(found(&store, 0..300), 300);
        store
            .apply("t", &files(0..300, "e"), Some(&listing("6")))
            .unwrap();
        assert_eq!(counts(&store), (300, 300, 0));
        assert_eq!(found(&store, 300..400), 0);
        index_matches_rows(&store);
    }

    #[test]
    fn an_index_entry_naming_another_row_is_an_error_not_a_second_row() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .apply("t", &files(0..2, "a"), Some(&point("1")))
            .unwrap();
        // Damage the index: id 0's entry names id 1's row.
        store
            .conn()
            .execute(
                "UPDATE record_ids SET row = (SELECT row FROM records WHERE external_id = 'id:00001')
                 WHERE external_id = 'id:00000'",
                [],
            )
            .unwrap();
        let mut edited = rec("id:00000", "/a/f0", RecordKind::File);
        edited.size = 7;
        let err = store
            .apply("t", &[up(edited, ChangeKind::Content)], Some(&point("2")))
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Invalid(m) if m.contains("the id index names row")),
            "{err}"
        );
        assert_eq!(counts(&store), (2, 2, 0));
    }

    #[test]
    fn purged_ids_leave_the_index_and_can_be_created_again() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .apply("t", &files(0..50, "a"), Some(&point("1")))
            .unwrap();
        store
            .apply("t", &files(50..100, "a"), Some(&listing("2")))
            .unwrap();
        store
            .apply(
                "t",
                &[Change::RemoveSubtree("/a".into()), Change::Purge],
                Some(&listing("3")),
            )
            .unwrap();
        assert_eq!(counts(&store), (0, 0, 0));
        store
            .apply("t", &files(0..100, "b"), Some(&point("4")))
            .unwrap();
        assert_eq!(counts(&store), (100, 100, 0));
        index_matches_rows(&store);
        // `clear` takes a tenant's ids out of the index with its rows.
        store
            .apply("u", &files(0..10, "a"), Some(&listing("1")))
            .unwrap();
        store.clear("t").unwrap();
        assert_eq!(counts(&store), (10, 0, 10));
        store.apply("u", &[], Some(&point("2"))).unwrap();
        assert_eq!(counts(&store), (10, 10, 0));
        index_matches_rows(&store);
    }
}

/// Several writers on one file (two stores stand for two processes: SQLite locks the file the
/// same way), and what a commit leaves on disk.
#[cfg(test)]
mod writers_and_durability {
    use super::tests::{point, rec, up};
    use super::*;

    fn batch(tenant: &str, round: usize) -> Vec<Change> {
        (0..5)
            .map(|i| {
                up(
                    rec(
                        &format!("id:{tenant}{round:04}{i}"),
                        &format!("/{tenant}/{round}/f{i}"),
                        RecordKind::File,
                    ),
                    ChangeKind::Created,
                )
            })
            .collect()
    }

    /// Each store's batches read before they write (the last event, the recent ids): in a
    /// deferred transaction, a commit of the other store in between failed the write at once
    /// with "database is locked". Immediate transactions wait for the lock instead.
    #[test]
    fn two_stores_writing_one_file_wait_for_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let rounds = 150;
        let writers: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .map(|tenant| {
                let path = path.clone();
                std::thread::spawn(move || -> Result<(), StoreError> {
                    let store = SqliteStore::open(&path)?;
                    for round in 0..rounds {
                        store.apply(
                            tenant,
                            &batch(tenant, round),
                            Some(&point(&round.to_string())),
                        )?;
                        store.set_setting(tenant, "k", &round.to_string())?;
                    }
                    Ok(())
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap().unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        for tenant in ["a", "b", "c"] {
            assert_eq!(store.record_count(tenant).unwrap(), 5 * rounds as u64);
            assert_eq!(store.events(Some(tenant), 0).unwrap().len(), 5 * rounds);
        }
        let seqs: Vec<i64> = store
            .events(None, 0)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, (1..=15 * rounds as i64).collect::<Vec<_>>());
    }

    /// A commit that numbers events syncs the WAL before it returns (`synchronous=FULL`): an
    /// OS crash cannot take back an event whose number a consumer may have read. With NORMAL,
    /// the WAL was synced only at checkpoints, never by a commit.
    #[test]
    fn every_commit_that_numbers_events_syncs_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("d.db")).unwrap();
        let synchronous: i64 = store
            .conn()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(synchronous, 2, "FULL");
        for round in 0..5 {
            let before = super::super::wal_vfs::tests::syncs_on_this_thread();
            store
                .apply("t", &batch("t", round), Some(&point("p")))
                .unwrap();
            let after = super::super::wal_vfs::tests::syncs_on_this_thread();
            assert!(
                after > before,
                "round {round}: no sync of the WAL at commit"
            );
        }
    }
}
