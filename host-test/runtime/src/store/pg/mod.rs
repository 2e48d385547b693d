//! The PostgreSQL records store: the same guarantees as the SQLite backend (see the module
//! above), in a database several host processes share, so that tenants can be spread over
//! machines.
//!
//! What differs from SQLite, and why:
//! - `apply` takes the tenant's row lock (`tenants`, `FOR NO KEY UPDATE`) before it numbers
//!   anything, and holds it to its commit. Two workers applying batches of one tenant are
//!   serialised, so the tenant's events are in commit order by `seq` and the occupant check
//!   of a path sees the other worker's committed records. Batches of different tenants run in
//!   parallel.
//! - Event numbers come from an identity column (global), batch numbers from a sequence.
//!   Across tenants, `seq` order is not commit order (two tenants' transactions may commit in
//!   the other order than they took their numbers): reading "every tenant since N" is for
//!   inspection. Each event also has its tenant's own number, `tenant_seq` (1, 2, 3, ... with
//!   no holes, assigned under the tenant's row lock): what the outbox's consumers read
//!   (`outbox.rs`).
//! - Several workers share tenants through leases with fencing epochs, and the schedule lives
//!   in the database (`lease.rs`): a worker writes a tenant's records through
//!   [`FencedStore`], whose `apply` commits only while its lease is the tenant's current one.
//! - Credentials are sealed with the host's [`Keyring`] before they are written and opened
//!   when read ([`crate::secrets`]); the columns refuse plaintext. [`PgStore::rotate_secrets`]
//!   re-seals them under the current key.
//! - The schema is created and upgraded by numbered migrations at connect (`schema.rs`).
//! - A store holds a small pool of connections (opened as operations overlap, at most
//!   [`DEFAULT_POOL_SIZE`] unless told otherwise), so tenants served by one process do not
//!   queue behind one connection. A connection the server closed (a restart, a failover) is
//!   re-opened: the operation that found it closed fails, the next one reconnects.
//!
//! The connection is plain TCP (`NoTls`): a server reached over a network needs TLS, which is
//! not wired yet.

mod lease;
#[cfg(test)]
mod lease_tests;
mod outbox;
#[cfg(test)]
mod outbox_tests;
mod schema;
pub mod testing;
#[cfg(test)]
mod tests;

pub use lease::{
    Backoff, FencedStore, Lease, LeaseEnd, LeaseLost, LeaseLostReason, LeaseRecord, PollGate,
    PollRecord, PollTaken, Pruned, Retention, Schedule, Strategy,
};
pub use outbox::OutboxEvent;

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Row, Statement, Transaction};
use serde_json::Value;

use super::{
    ApplySummary, Change, ChangeKind, Event, GroupKind, Permission, Record, RecordGroup,
    RecordKind, RecordPath, RecordStore, Role, StoreError, StoredCredentials, StoredRecord,
    SyncOutcome, SyncPhase, SyncPoint, SyncStatus, TenantStatus, User, record_json, role_str,
};
use crate::secrets::{
    Keyring, RotationReport, open_credentials, reseal_credentials, seal_credentials, sealed_key_id,
};

const RECORD_COLUMNS: &str = "external_id, revision, name, path_display, path_lower, parent_external_id, kind, \
     mime_type, size, content_hash, client_modified, server_modified, is_downloadable, export_format, \
     web_url, is_shared, shared_url, pending_removal";

/// The statements of the hot path, prepared once per connection (each saves a round trip
/// per use).
pub(crate) struct Statements {
    occupant: Statement,
    upsert: Statement,
    mark_one: Statement,
    mark_exact: Statement,
    mark_below: Statement,
    get_records: Statement,
    find_by_paths: Statement,
}

impl Statements {
    fn prepare(client: &mut Client) -> Result<Statements, postgres::Error> {
        Ok(Statements {
            occupant: client.prepare(
                "SELECT external_id FROM records
                 WHERE tenant = $1 AND path_lower = $2 AND NOT pending_removal AND external_id <> $3
                 LIMIT 1",
            )?,
            // The occupant check, the upsert and its event in one statement: one round trip
            // per record. When another live record holds the path, nothing is written and its
            // id comes back. All parameters are cast: in `INSERT ... SELECT` their types are
            // not taken from the columns.
            upsert: client.prepare(&format!(
                "WITH occupant AS (
                     SELECT external_id FROM records
                     WHERE tenant = $1 AND path_lower = $6::text AND NOT pending_removal
                       AND external_id <> $2::text
                     LIMIT 1
                 ), upserted AS (
                     INSERT INTO records (tenant, {RECORD_COLUMNS})
                     SELECT $1, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text, $8::text,
                            $9::text, $10::bigint, $11::text, $12::text, $13::text, $14::boolean,
                            $15::text, $16::text, $17::boolean, $18::text, FALSE
                     WHERE NOT EXISTS (SELECT 1 FROM occupant)
                     ON CONFLICT (tenant, external_id) DO UPDATE SET revision = EXCLUDED.revision,
                       name = EXCLUDED.name, path_display = EXCLUDED.path_display,
                       path_lower = EXCLUDED.path_lower,
                       parent_external_id = EXCLUDED.parent_external_id, kind = EXCLUDED.kind,
                       mime_type = EXCLUDED.mime_type, size = EXCLUDED.size,
                       content_hash = EXCLUDED.content_hash,
                       client_modified = EXCLUDED.client_modified,
                       server_modified = EXCLUDED.server_modified,
                       is_downloadable = EXCLUDED.is_downloadable,
                       export_format = EXCLUDED.export_format, web_url = EXCLUDED.web_url,
                       is_shared = EXCLUDED.is_shared, shared_url = EXCLUDED.shared_url,
                       pending_removal = FALSE
                     RETURNING external_id
                 ), event AS (
                     INSERT INTO events (tenant, batch, kind, external_id, path_lower, record, at,
                                         tenant_seq)
                     SELECT $1, $19::bigint, $20::text, external_id, $6::text, $21::jsonb, $22::bigint,
                            $23::bigint
                     FROM upserted WHERE $20::text IS NOT NULL
                 )
                 SELECT (SELECT external_id FROM occupant)"
            ))?,
            mark_one: client.prepare(
                "UPDATE records SET pending_removal = TRUE
                 WHERE tenant = $1 AND external_id = $2 AND NOT pending_removal",
            )?,
            mark_exact: client.prepare(
                "UPDATE records SET pending_removal = TRUE
                 WHERE tenant = $1 AND path_lower = $2 AND NOT pending_removal",
            )?,
            mark_below: client.prepare(
                "UPDATE records SET pending_removal = TRUE
                 WHERE tenant = $1 AND path_lower >= $2 AND path_lower < $3 AND NOT pending_removal",
            )?,
            // A whole list per statement: one round trip per list, not per id or path.
            get_records: client.prepare(&format!(
                "SELECT {RECORD_COLUMNS} FROM records WHERE tenant = $1 AND external_id = ANY($2)"
            ))?,
            find_by_paths: client.prepare(&format!(
                "SELECT {RECORD_COLUMNS} FROM records
                 WHERE tenant = $1 AND path_lower = ANY($2) AND NOT pending_removal"
            ))?,
        })
    }
}

/// An open connection and its prepared statements.
struct Conn {
    client: Client,
    st: Statements,
}

/// Connections a store opens at most, when none is given: enough for a `watch` process
/// running a few tenants at once, few enough that many workers stay far below the server's
/// `max_connections` (100 by default).
pub const DEFAULT_POOL_SIZE: usize = 4;

/// A connection of the pool, held for one operation (one transaction at most).
struct ConnGuard<'a>(MutexGuard<'a, Option<Conn>>);

impl Deref for ConnGuard<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        // `PgStore::conn` only hands out a slot it has filled.
        self.0.as_ref().expect("a pooled connection is open")
    }
}

impl DerefMut for ConnGuard<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.0.as_mut().expect("a pooled connection is open")
    }
}

pub struct PgStore {
    config: Config,
    /// The database as errors name it: the URL without its password.
    origin: String,
    /// The pool: a slot is opened on first use, and again after the server closed it.
    slots: Vec<Mutex<Option<Conn>>>,
    /// Which slot to wait for when all are busy (spreads the waiting over the slots).
    next_slot: AtomicUsize,
    keyring: Keyring,
    /// Test hook: (apply calls to let through, change index to fail at), to prove atomicity.
    fail_after: Mutex<Option<(usize, usize)>>,
}

impl PgStore {
    /// Connect to `url` (`postgres://user@host:port/db` or a `key=value` connection string),
    /// apply the migrations it lacks, and seal credentials with `keyring`; at most
    /// [`DEFAULT_POOL_SIZE`] connections.
    pub fn connect(url: &str, keyring: Keyring) -> Result<PgStore, StoreError> {
        PgStore::connect_with_pool(url, keyring, DEFAULT_POOL_SIZE)
    }

    /// [`PgStore::connect`] with at most `pool_size` connections (at least one).
    pub fn connect_with_pool(
        url: &str,
        keyring: Keyring,
        pool_size: usize,
    ) -> Result<PgStore, StoreError> {
        let origin = redact(url);
        let config: Config = url.parse().map_err(|e: postgres::Error| StoreError::Open {
            path: origin.clone(),
            message: e.to_string(),
        })?;
        let mut client = open_client(&config, &origin)?;
        schema::migrate(&mut client, &origin)?;
        let st = Statements::prepare(&mut client)?;
        let mut slots: Vec<Mutex<Option<Conn>>> = Vec::with_capacity(pool_size.max(1));
        slots.push(Mutex::new(Some(Conn { client, st })));
        slots.resize_with(pool_size.max(1), || Mutex::new(None));
        Ok(PgStore {
            config,
            origin,
            slots,
            next_slot: AtomicUsize::new(0),
            keyring,
            fail_after: Mutex::new(None),
        })
    }

    /// A connection for one operation: a free slot if there is one, else wait for one.
    /// Opened (or re-opened, if the server closed it) here.
    fn conn(&self) -> Result<ConnGuard<'_>, StoreError> {
        // A panic while holding a slot leaves at most an unfinished transaction, which the
        // server rolls back (the client sends ROLLBACK before its next statement), so a
        // poisoned slot is safe to reuse.
        // The first free slot: one caller at a time keeps using one connection; the others
        // are opened only when operations overlap.
        let free = self.slots.iter().find_map(|slot| match slot.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        });
        let mut guard = free.unwrap_or_else(|| {
            let wait_for = self.next_slot.fetch_add(1, Ordering::Relaxed) % self.slots.len();
            self.slots[wait_for]
                .lock()
                .unwrap_or_else(|p| p.into_inner())
        });
        if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
            let mut client = open_client(&self.config, &self.origin)?;
            let st = Statements::prepare(&mut client)?;
            *guard = Some(Conn { client, st });
        }
        Ok(ConnGuard(guard))
    }

    /// Re-seal every stored secret that is not under the keyring's current key, in one
    /// transaction (see [`crate::secrets`] for the whole procedure). Values that do not open
    /// (a key missing from the keyring, a tampered value) fail the pass and change nothing.
    pub fn rotate_secrets(&self) -> Result<RotationReport, StoreError> {
        if self.keyring.is_empty() {
            return Err(crate::secrets::SecretError::MissingKey.into());
        }
        let mut guard = self.conn()?;
        let mut tx = guard.client.transaction()?;
        let rows = tx.query(
            "SELECT tenant, access_token, refresh_token, client_secret FROM credentials
             ORDER BY tenant FOR UPDATE",
            &[],
        )?;
        let mut report = RotationReport::default();
        for row in rows {
            let tenant: String = row.try_get(0)?;
            let mut sealed = StoredCredentials {
                access_token: row.try_get(1)?,
                refresh_token: row.try_get(2)?,
                client_secret: row.try_get(3)?,
                ..Default::default()
            };
            if reseal_credentials(&self.keyring, &tenant, &mut sealed, &mut report)? {
                tx.execute(
                    "UPDATE credentials SET access_token = $2, refresh_token = $3, client_secret = $4
                     WHERE tenant = $1",
                    &[
                        &tenant,
                        &sealed.access_token,
                        &sealed.refresh_token,
                        &sealed.client_secret,
                    ],
                )?;
            }
        }
        tx.commit()?;
        Ok(report)
    }

    /// How many stored secrets each key id seals, without opening any (what step 5 of the
    /// rotation checks before an old key is removed).
    pub fn secret_key_ids_in_use(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut guard = self.conn()?;
        let rows = guard.client.query(
            "SELECT v FROM credentials,
                    LATERAL (VALUES (access_token), (refresh_token), (client_secret)) AS s(v)
             WHERE v IS NOT NULL",
            &[],
        )?;
        let mut report = RotationReport::default();
        for row in rows {
            let sealed: String = row.try_get(0)?;
            report.count_in_use(sealed_key_id(&sealed)?);
        }
        Ok(report.key_ids_in_use)
    }

    /// `apply`, fenced by `fence` when given (see `lease.rs`): the batch, its events and the
    /// sync point in one transaction, under the tenant's row lock.
    pub(crate) fn apply_batch(
        &self,
        tenant: &str,
        changes: &[Change],
        sync_point: Option<&SyncPoint>,
        fence: Option<&Lease>,
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
        self.in_tenant_tx(tenant, fence, |tx, st, event_seq| {
            let batch: i64 = tx
                .query_one("SELECT nextval('event_batches')", &[])?
                .try_get(0)?;
            let mut summary = ApplySummary::default();
            for (index, change) in changes.iter().enumerate() {
                if fail_after == Some(index) {
                    return Err(StoreError::Injected(index));
                }
                apply_change(tx, st, tenant, batch, event_seq, change, &mut summary)?;
            }
            if fail_after.is_some() {
                // The failure point lies past the last change: fail just before committing.
                return Err(StoreError::Injected(changes.len()));
            }
            if let Some(point) = sync_point {
                tx.execute(
                    "INSERT INTO sync_points (tenant, position, phase, detail, updated_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (tenant) DO UPDATE SET position = EXCLUDED.position,
                       phase = EXCLUDED.phase, detail = EXCLUDED.detail, updated_at = EXCLUDED.updated_at",
                    &[
                        &tenant,
                        &point.position,
                        &point.status.phase.as_str(),
                        &point.status.detail,
                        &now(),
                    ],
                )?;
            }
            Ok(summary)
        })
    }

    /// `put_owner`, fenced by `fence` when given (the owner is a write of the connector's).
    pub(crate) fn put_owner_fenced(
        &self,
        tenant: &str,
        owner: &User,
        group: &RecordGroup,
        permissions: &[Permission],
        fence: Option<&Lease>,
    ) -> Result<(), StoreError> {
        self.in_tenant_tx(tenant, fence, |tx, _, _| {
            tx.execute(
                "INSERT INTO users (tenant, external_id, email, display_name, is_owner)
                 VALUES ($1, $2, $3, $4, TRUE)
                 ON CONFLICT (tenant, external_id) DO UPDATE SET email = EXCLUDED.email,
                   display_name = EXCLUDED.display_name, is_owner = TRUE",
                &[
                    &tenant,
                    &owner.external_id,
                    &owner.email,
                    &owner.display_name,
                ],
            )?;
            tx.execute(
                "INSERT INTO record_groups (tenant, external_id, name, kind) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tenant, external_id) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind",
                &[
                    &tenant,
                    &group.external_id,
                    &group.name,
                    &group_kind_str(group.kind),
                ],
            )?;
            tx.execute(
                "DELETE FROM permissions WHERE tenant = $1 AND group_external_id = $2",
                &[&tenant, &group.external_id],
            )?;
            for p in permissions {
                tx.execute(
                    "INSERT INTO permissions (tenant, group_external_id, principal_external_id, role)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (tenant, group_external_id, principal_external_id)
                     DO UPDATE SET role = EXCLUDED.role",
                    &[
                        &tenant,
                        &group.external_id,
                        &p.principal_external_id,
                        &role_str(p.role),
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// `clear`, fenced by `fence` when given.
    pub(crate) fn clear_tenant(
        &self,
        tenant: &str,
        fence: Option<&Lease>,
    ) -> Result<(), StoreError> {
        // Serialised with `apply` of the same tenant: a batch never lands half before and
        // half after a clear.
        self.in_tenant_tx(tenant, fence, |tx, _, _| {
            for table in [
                "records",
                "sync_points",
                "users",
                "record_groups",
                "permissions",
            ] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE tenant = $1"),
                    &[&tenant],
                )?;
            }
            Ok(())
        })
    }

    /// Run `write` in one transaction holding the tenant's row lock (the row is created if
    /// missing). `write` numbers the events it adds from the `&mut i64` it is given (the
    /// tenant's last event number). With a `fence`, the lease is checked right after the lock
    /// and again just before the commit (`lease::check_fence`, `lease::seal_fenced`): a write
    /// whose lease is not the tenant's current one, or expired, commits nothing.
    pub(crate) fn in_tenant_tx<T>(
        &self,
        tenant: &str,
        fence: Option<&Lease>,
        write: impl FnOnce(&mut Transaction<'_>, &Statements, &mut i64) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.conn()?;
        let Conn { client, st } = &mut *guard;
        let mut tx = client.transaction()?;
        let locked = lock_tenant(&mut tx, tenant)?;
        if let Some(lease) = fence {
            lease::check_fence(lease, tenant, &locked)?;
        }
        let mut event_seq = locked.event_seq;
        let out = write(&mut tx, st, &mut event_seq)?;
        if let Some(lease) = fence {
            lease::seal_fenced(&mut tx, lease, event_seq)?;
        } else if event_seq != locked.event_seq {
            tx.execute(
                "UPDATE tenants SET event_seq = $2 WHERE name = $1",
                &[&tenant, &event_seq],
            )?;
        }
        tx.commit()?;
        Ok(out)
    }

    /// Records of one query, in its order.
    fn query_records(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Record>, StoreError> {
        let mut guard = self.conn()?;
        guard
            .client
            .query(sql, params)?
            .iter()
            .map(|row| read_stored(row).map(|s| s.record))
            .collect()
    }

    fn count(&self, sql: &str, tenant: &str) -> Result<u64, StoreError> {
        let mut guard = self.conn()?;
        let n: i64 = guard.client.query_one(sql, &[&tenant])?.try_get(0)?;
        Ok(n.max(0) as u64)
    }
}

impl RecordStore for PgStore {
    fn inject_apply_failure(&self, plan: Option<(usize, usize)>) {
        *self.fail_after.lock().unwrap_or_else(|p| p.into_inner()) = plan;
    }

    fn ensure_tenant(&self, tenant: &str) -> Result<(), StoreError> {
        let mut guard = self.conn()?;
        ensure_tenant_row(&mut guard.client, tenant)
    }

    fn set_tenant_api_url(&self, tenant: &str, api_url: Option<&str>) -> Result<(), StoreError> {
        let mut guard = self.conn()?;
        ensure_tenant_row(&mut guard.client, tenant)?;
        guard.client.execute(
            "UPDATE tenants SET api_url = $2 WHERE name = $1",
            &[&tenant, &api_url],
        )?;
        Ok(())
    }

    fn tenant_api_url(&self, tenant: &str) -> Result<Option<String>, StoreError> {
        let mut guard = self.conn()?;
        let row = guard
            .client
            .query_opt("SELECT api_url FROM tenants WHERE name = $1", &[&tenant])?;
        Ok(match row {
            Some(row) => row.try_get(0)?,
            None => None,
        })
    }

    fn tenants(&self) -> Result<Vec<String>, StoreError> {
        let mut guard = self.conn()?;
        let rows = guard
            .client
            .query("SELECT name FROM tenants ORDER BY name COLLATE \"C\"", &[])?;
        Ok(rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?)
    }

    fn apply(
        &self,
        tenant: &str,
        changes: &[Change],
        sync_point: Option<&SyncPoint>,
    ) -> Result<ApplySummary, StoreError> {
        self.apply_batch(tenant, changes, sync_point, None)
    }

    fn delete_sync_point(&self, tenant: &str) -> Result<(), StoreError> {
        self.in_tenant_tx(tenant, None, |tx, _, _| {
            tx.execute("DELETE FROM sync_points WHERE tenant = $1", &[&tenant])?;
            Ok(())
        })
    }

    fn get_sync_point(&self, tenant: &str) -> Result<Option<String>, StoreError> {
        let mut guard = self.conn()?;
        let row = guard.client.query_opt(
            "SELECT position FROM sync_points WHERE tenant = $1",
            &[&tenant],
        )?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    fn sync_status(&self, tenant: &str) -> Result<Option<SyncStatus>, StoreError> {
        let mut guard = self.conn()?;
        let row = guard.client.query_opt(
            "SELECT phase, detail FROM sync_points WHERE tenant = $1",
            &[&tenant],
        )?;
        let Some(row) = row else {
            return Ok(None);
        };
        let phase: String = row.try_get(0)?;
        let phase = SyncPhase::parse(&phase).ok_or_else(|| {
            StoreError::Invalid(format!("unknown sync phase '{phase}' in the database"))
        })?;
        Ok(Some(SyncStatus {
            phase,
            detail: row.try_get(1)?,
        }))
    }

    fn get_records(&self, tenant: &str, ids: &[String]) -> Result<Vec<StoredRecord>, StoreError> {
        let mut guard = self.conn()?;
        let Conn { client, st } = &mut *guard;
        client
            .query(&st.get_records, &[&tenant, &ids])?
            .iter()
            .map(read_stored)
            .collect()
    }

    fn list_records(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Record>, StoreError> {
        self.query_records(
            &format!(
                "SELECT {RECORD_COLUMNS} FROM records
                 WHERE tenant = $1 AND ($2::text IS NULL OR external_id > $2) AND NOT pending_removal
                 ORDER BY external_id LIMIT $3"
            ),
            &[&tenant, &after, &i64::from(limit)],
        )
    }

    fn find_by_paths(
        &self,
        tenant: &str,
        paths: &[String],
    ) -> Result<Vec<Option<Record>>, StoreError> {
        let mut guard = self.conn()?;
        let Conn { client, st } = &mut *guard;
        let mut found: HashMap<String, Record> = HashMap::with_capacity(paths.len());
        for row in client.query(&st.find_by_paths, &[&tenant, &paths])? {
            let record = read_stored(&row)?.record;
            if let Some(path) = record.path_lower() {
                found.insert(path.to_string(), record);
            }
        }
        // In the order asked (a path asked twice gets its record twice).
        Ok(paths.iter().map(|p| found.get(p).cloned()).collect())
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
        self.query_records(
            &format!(
                "SELECT {RECORD_COLUMNS} FROM records
                 WHERE tenant = $1 AND path_lower > $2 AND path_lower < $3 AND NOT pending_removal
                 ORDER BY path_lower LIMIT $4"
            ),
            &[&tenant, &from, &upper, &i64::from(limit)],
        )
    }

    fn list_shared(&self, tenant: &str, limit: u32) -> Result<Vec<Record>, StoreError> {
        self.query_records(
            &format!(
                "SELECT {RECORD_COLUMNS} FROM records
                 WHERE tenant = $1 AND is_shared AND NOT pending_removal
                 ORDER BY path_lower NULLS FIRST, external_id
                 LIMIT $2"
            ),
            &[&tenant, &i64::from(limit)],
        )
    }

    fn put_owner(
        &self,
        tenant: &str,
        owner: &User,
        group: &RecordGroup,
        permissions: &[Permission],
    ) -> Result<(), StoreError> {
        self.put_owner_fenced(tenant, owner, group, permissions, None)
    }

    fn clear(&self, tenant: &str) -> Result<(), StoreError> {
        self.clear_tenant(tenant, None)
    }

    fn records(&self, tenant: &str) -> Result<Vec<Record>, StoreError> {
        self.query_records(
            &format!(
                "SELECT {RECORD_COLUMNS} FROM records WHERE tenant = $1 AND NOT pending_removal
                 ORDER BY path_lower NULLS FIRST, external_id"
            ),
            &[&tenant],
        )
    }

    fn record_count(&self, tenant: &str) -> Result<u64, StoreError> {
        self.count(
            "SELECT COUNT(*) FROM records WHERE tenant = $1 AND NOT pending_removal",
            tenant,
        )
    }

    fn pending_count(&self, tenant: &str) -> Result<u64, StoreError> {
        self.count(
            "SELECT COUNT(*) FROM records WHERE tenant = $1 AND pending_removal",
            tenant,
        )
    }

    fn owner(&self, tenant: &str) -> Result<Option<User>, StoreError> {
        let mut guard = self.conn()?;
        let row = guard.client.query_opt(
            "SELECT external_id, email, display_name FROM users WHERE tenant = $1 AND is_owner",
            &[&tenant],
        )?;
        Ok(row
            .map(|r| -> Result<User, postgres::Error> {
                Ok(User {
                    external_id: r.try_get(0)?,
                    email: r.try_get(1)?,
                    display_name: r.try_get(2)?,
                })
            })
            .transpose()?)
    }

    fn record_groups(
        &self,
        tenant: &str,
    ) -> Result<Vec<(RecordGroup, Vec<Permission>)>, StoreError> {
        let mut guard = self.conn()?;
        let groups = guard.client.query(
            "SELECT external_id, name, kind FROM record_groups WHERE tenant = $1 ORDER BY external_id",
            &[&tenant],
        )?;
        let mut out = Vec::with_capacity(groups.len());
        for g in groups {
            let kind: String = g.try_get(2)?;
            let group = RecordGroup {
                external_id: g.try_get(0)?,
                name: g.try_get(1)?,
                kind: parse_group_kind(&kind),
            };
            let perms = guard
                .client
                .query(
                    "SELECT principal_external_id, role FROM permissions
                     WHERE tenant = $1 AND group_external_id = $2 ORDER BY principal_external_id",
                    &[&tenant, &group.external_id],
                )?
                .iter()
                .map(|r| -> Result<Permission, postgres::Error> {
                    let role: String = r.try_get(1)?;
                    Ok(Permission {
                        principal_external_id: r.try_get(0)?,
                        role: parse_role(&role),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.push((group, perms));
        }
        Ok(out)
    }

    fn events(&self, tenant: Option<&str>, since: i64) -> Result<Vec<Event>, StoreError> {
        let mut guard = self.conn()?;
        let rows = guard.client.query(
            "SELECT seq, tenant, batch, kind, external_id, path_lower, record FROM events
             WHERE seq > $1 AND ($2::text IS NULL OR tenant = $2) ORDER BY seq",
            &[&since, &tenant],
        )?;
        rows.iter()
            .map(|r| -> Result<Event, StoreError> {
                Ok(Event {
                    seq: r.try_get(0)?,
                    tenant: r.try_get(1)?,
                    batch: r.try_get(2)?,
                    kind: r.try_get(3)?,
                    external_id: r.try_get(4)?,
                    path_lower: r.try_get(5)?,
                    record: r.try_get::<_, Value>(6)?,
                })
            })
            .collect()
    }

    fn last_event_seq(&self) -> Result<i64, StoreError> {
        let mut guard = self.conn()?;
        Ok(guard
            .client
            .query_one("SELECT COALESCE(MAX(seq), 0) FROM events", &[])?
            .try_get(0)?)
    }

    fn put_credentials(&self, tenant: &str, creds: &StoredCredentials) -> Result<(), StoreError> {
        // Sealed before the connection is taken: a missing key fails before any write.
        let sealed = seal_credentials(&self.keyring, tenant, creds)?;
        let mut guard = self.conn()?;
        let mut tx = guard.client.transaction()?;
        tx.execute(
            "INSERT INTO tenants (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&tenant, &now()],
        )?;
        tx.execute(
            "INSERT INTO credentials (tenant, access_token, refresh_token, expires_at, client_id,
                                      client_secret, account_id, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (tenant) DO UPDATE SET access_token = EXCLUDED.access_token,
               refresh_token = EXCLUDED.refresh_token, expires_at = EXCLUDED.expires_at,
               client_id = EXCLUDED.client_id, client_secret = EXCLUDED.client_secret,
               account_id = EXCLUDED.account_id, updated_at = EXCLUDED.updated_at",
            &[
                &tenant,
                &sealed.access_token,
                &sealed.refresh_token,
                &sealed.expires_at,
                &sealed.client_id,
                &sealed.client_secret,
                &sealed.account_id,
                &now(),
            ],
        )?;
        tx.execute(
            "UPDATE tenants SET needs_reauth = FALSE WHERE name = $1",
            &[&tenant],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn credentials(&self, tenant: &str) -> Result<Option<StoredCredentials>, StoreError> {
        let row = {
            let mut guard = self.conn()?;
            guard.client.query_opt(
                "SELECT access_token, refresh_token, expires_at, client_id, client_secret, account_id
                 FROM credentials WHERE tenant = $1",
                &[&tenant],
            )?
        };
        let Some(row) = row else {
            return Ok(None);
        };
        let sealed = StoredCredentials {
            access_token: row.try_get(0)?,
            refresh_token: row.try_get(1)?,
            expires_at: row.try_get(2)?,
            client_id: row.try_get(3)?,
            client_secret: row.try_get(4)?,
            account_id: row.try_get(5)?,
        };
        Ok(Some(open_credentials(&self.keyring, tenant, sealed)?))
    }

    fn delete_credentials(&self, tenant: &str) -> Result<(), StoreError> {
        let mut guard = self.conn()?;
        guard
            .client
            .execute("DELETE FROM credentials WHERE tenant = $1", &[&tenant])?;
        Ok(())
    }

    fn set_needs_reauth(&self, tenant: &str, needs: bool) -> Result<(), StoreError> {
        let mut guard = self.conn()?;
        ensure_tenant_row(&mut guard.client, tenant)?;
        guard.client.execute(
            "UPDATE tenants SET needs_reauth = $2 WHERE name = $1",
            &[&tenant, &needs],
        )?;
        Ok(())
    }

    fn record_sync_result(
        &self,
        tenant: &str,
        outcome: SyncOutcome,
        note: &str,
    ) -> Result<(), StoreError> {
        let mut guard = self.conn()?;
        ensure_tenant_row(&mut guard.client, tenant)?;
        guard.client.execute(
            "UPDATE tenants SET last_sync_at = $2, last_sync_outcome = $3, last_sync_note = $4
             WHERE name = $1",
            &[&tenant, &now(), &outcome.as_str(), &note],
        )?;
        Ok(())
    }

    fn status(&self, tenant: &str) -> Result<TenantStatus, StoreError> {
        let row = {
            let mut guard = self.conn()?;
            guard.client.query_opt(
                "SELECT needs_reauth, last_sync_at, last_sync_outcome, last_sync_note
                 FROM tenants WHERE name = $1",
                &[&tenant],
            )?
        };
        let (needs_reauth, last_sync_at, outcome, last_sync_note) = match row {
            Some(r) => (
                r.try_get::<_, bool>(0)?,
                r.try_get::<_, Option<i64>>(1)?,
                r.try_get::<_, Option<String>>(2)?,
                r.try_get::<_, Option<String>>(3)?,
            ),
            None => (false, None, None, None),
        };
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

    fn settings(&self, tenant: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut guard = self.conn()?;
        let rows = guard.client.query(
            "SELECT key, value FROM settings WHERE tenant = $1 ORDER BY key COLLATE \"C\"",
            &[&tenant],
        )?;
        Ok(rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, postgres::Error>>()?)
    }

    fn set_setting(&self, tenant: &str, key: &str, value: &str) -> Result<(), StoreError> {
        let mut guard = self.conn()?;
        ensure_tenant_row(&mut guard.client, tenant)?;
        guard.client.execute(
            "INSERT INTO settings (tenant, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (tenant, key) DO UPDATE SET value = EXCLUDED.value",
            &[&tenant, &key, &value],
        )?;
        Ok(())
    }
}

fn open_client(config: &Config, origin: &str) -> Result<Client, StoreError> {
    let mut client = config.connect(NoTls).map_err(|e| StoreError::Open {
        path: origin.to_string(),
        message: describe(&e),
    })?;
    // The hot statements are prepared once per connection. Left to itself, the server switches
    // a prepared statement to a generic plan after five runs, planned with the statistics of
    // that moment: on a tenant's first sync the table is nearly empty, the generic plan of a
    // lookup by id uses the path index on the tenant alone, and every later lookup walks all
    // of the tenant's records (a 100k-file first sync went quadratic). Custom plans are
    // re-planned per run against the table's real size.
    // Notices (a migration's "already exists, skipping") are not worth a log line per command.
    client.batch_execute(
        "SET plan_cache_mode = force_custom_plan; SET client_min_messages = warning",
    )?;
    Ok(client)
}

fn ensure_tenant_row(client: &mut Client, tenant: &str) -> Result<(), StoreError> {
    client.execute(
        "INSERT INTO tenants (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        &[&tenant, &now()],
    )?;
    Ok(())
}

/// The tenant's row as `lock_tenant` found it, with the database's clock at that moment.
pub(crate) struct LockedTenant {
    pub lease_epoch: i64,
    pub lease_worker: Option<String>,
    /// Milliseconds since the epoch, by the database's clock; None while nobody holds it.
    pub lease_expires_at: Option<i64>,
    /// The number of the tenant's last event (0 before the first), past every surviving
    /// event of the tenant's name (see `lock_tenant`).
    pub event_seq: i64,
    pub now_ms: i64,
}

/// Create the tenant's row if needed and hold its lock to the end of the transaction: the
/// one point where batches of a tenant queue up behind each other, and where leases change
/// hands (`lease.rs` updates the same row), so a fenced write and a take-over never overlap.
fn lock_tenant(tx: &mut Transaction<'_>, tenant: &str) -> Result<LockedTenant, StoreError> {
    tx.execute(
        "INSERT INTO tenants (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        &[&tenant, &now()],
    )?;
    // NO KEY UPDATE: queues other batches of the tenant, but not the key-share locks of
    // unrelated writes that merely refer to the tenant.
    // The tenant's numbering never starts over: a row deleted and created again (by an
    // operator, or by whatever removes a tenant) starts at 0, while the events of its earlier
    // life are still there with their numbers; the next number is past both. So a name used
    // again continues its stream: every consumer's position (kept per tenant name) stays
    // valid, and (tenant, tenant_seq) names one event forever. One probe of the
    // `(tenant, tenant_seq)` index per transaction.
    let row = tx.query_one(
        "SELECT lease_epoch, lease_worker, lease_expires_at,
                GREATEST(event_seq,
                         COALESCE((SELECT max(tenant_seq) FROM events WHERE tenant = $1), 0)),
                conn_rt_now_ms()
         FROM tenants WHERE name = $1 FOR NO KEY UPDATE",
        &[&tenant],
    )?;
    Ok(LockedTenant {
        lease_epoch: row.try_get(0)?,
        lease_worker: row.try_get(1)?,
        lease_expires_at: row.try_get(2)?,
        event_seq: row.try_get(3)?,
        now_ms: row.try_get(4)?,
    })
}

fn apply_change(
    tx: &mut Transaction<'_>,
    st: &Statements,
    tenant: &str,
    batch: i64,
    event_seq: &mut i64,
    change: &Change,
    summary: &mut ApplySummary,
) -> Result<(), StoreError> {
    match change {
        Change::Upsert { record: r, event } => {
            if r.external_id.is_empty() {
                return Err(StoreError::Invalid("a record needs an external id".into()));
            }
            if let Some(path) = &r.path
                && path.lower.is_empty()
            {
                return Err(StoreError::Invalid(format!(
                    "{}: a record's path.lower must not be empty",
                    r.external_id
                )));
            }
            let kind = match event {
                ChangeKind::Created => Some("created"),
                ChangeKind::Content => Some("content"),
                ChangeKind::Metadata => Some("metadata"),
                ChangeKind::ContentAndMetadata => Some("content_and_metadata"),
                ChangeKind::Unchanged => None,
            };
            // BIGINT is signed: store the bits of the u64, read them back the same.
            let size = r.size as i64;
            let row = tx
                .query_one(
                    &st.upsert,
                    &[
                        &tenant,
                        &r.external_id,
                        &r.revision,
                        &r.name,
                        &r.path_display(),
                        &r.path_lower(),
                        &r.parent_external_id,
                        &r.kind.as_str(),
                        &r.mime_type,
                        &size,
                        &r.content_hash,
                        &r.client_modified,
                        &r.server_modified,
                        &r.is_downloadable,
                        &r.export_format,
                        &r.web_url,
                        &r.is_shared,
                        &r.shared_url,
                        &batch,
                        &kind,
                        &record_json(r),
                        &now(),
                        &(*event_seq + 1),
                    ],
                )
                .map_err(|e| path_conflict(e, r))?;
            if let Some(other) = row.try_get::<_, Option<String>>(0)? {
                return Err(StoreError::Conflict(format!(
                    "{} is already held by {other}; replace it before storing {}",
                    r.path_lower().unwrap_or_default(),
                    r.external_id
                )));
            }
            // Nothing was written when another record held the path (returned above); else
            // the event, if any, took the next number.
            if kind.is_some() {
                *event_seq += 1;
            }
            match event {
                ChangeKind::Created => summary.created += 1,
                ChangeKind::Content => summary.content_updates += 1,
                ChangeKind::Metadata => summary.metadata_updates += 1,
                ChangeKind::ContentAndMetadata => {
                    summary.content_updates += 1;
                    summary.metadata_updates += 1;
                }
                ChangeKind::Unchanged => {}
            }
        }
        Change::Replace {
            path_lower,
            new_external_id,
            keep_children,
        } => {
            let Some(old) = tx.query_opt(&st.occupant, &[&tenant, path_lower, new_external_id])?
            else {
                return Ok(());
            };
            let old_id: String = old.try_get(0)?;
            if *keep_children {
                // Only the replaced folder goes; its descendants stay as they are. Updating
                // their parent and display path is the connector's (one upsert, one event,
                // each), so that a child also named by the page is not reported twice.
                tx.execute(&st.mark_one, &[&tenant, &old_id])?;
            } else {
                mark_subtree(tx, st, tenant, path_lower)?;
            }
        }
        Change::Remove(id) => {
            tx.execute(&st.mark_one, &[&tenant, id])?;
        }
        Change::RemoveSubtree(path) => {
            mark_subtree(tx, st, tenant, path)?;
        }
        Change::MarkAllPending => {
            tx.execute(
                "UPDATE records SET pending_removal = TRUE WHERE tenant = $1 AND NOT pending_removal",
                &[&tenant],
            )?;
        }
        Change::Purge => {
            // One statement however large the subtree. Children before their parents (path
            // descending), records without a path last; the identity column numbers the rows
            // in the order the ordered query yields them, the tenant's numbers follow the
            // same order from the last one.
            let removed = tx.execute(
                "INSERT INTO events (tenant, batch, kind, external_id, path_lower, record, at,
                                     tenant_seq)
                 SELECT tenant, $2, 'deleted', external_id, path_lower,
                        jsonb_build_object('id', external_id, 'path_lower', path_lower, 'kind', kind), $3,
                        $4::bigint + row_number() OVER (ORDER BY path_lower DESC NULLS LAST, external_id)
                 FROM records
                 WHERE tenant = $1 AND pending_removal
                 ORDER BY path_lower DESC NULLS LAST, external_id",
                &[&tenant, &batch, &now(), &*event_seq],
            )?;
            *event_seq += removed as i64;
            tx.execute(
                "DELETE FROM records WHERE tenant = $1 AND pending_removal",
                &[&tenant],
            )?;
            summary.deletions += removed;
        }
    }
    Ok(())
}

/// A unique violation of the live-path index is the path conflict the occupant check reports
/// (it can only reach here if that check was bypassed); every other error stays a database
/// error.
fn path_conflict(e: postgres::Error, r: &Record) -> StoreError {
    let is_path = e.code() == Some(&SqlState::UNIQUE_VIOLATION)
        && e.as_db_error().and_then(|d| d.constraint()) == Some("records_live_path");
    if is_path {
        StoreError::Conflict(format!(
            "{} is already held by another record; replace it before storing {}",
            r.path_lower().unwrap_or_default(),
            r.external_id
        ))
    } else {
        StoreError::Postgres(e)
    }
}

/// Flag the live record at `path` and every live descendant. Descendants are the paths that
/// start with `path/`: the range [path + "/", path + "0") in byte order, since '0' follows '/'.
fn mark_subtree(
    tx: &mut Transaction<'_>,
    st: &Statements,
    tenant: &str,
    path: &str,
) -> Result<u64, StoreError> {
    let lower = format!("{path}/");
    let upper = format!("{path}0");
    // Two statements, each a search of the path index (an OR of both would scan the tenant).
    let exact = tx.execute(&st.mark_exact, &[&tenant, &path])?;
    let below = tx.execute(&st.mark_below, &[&tenant, &lower, &upper])?;
    Ok(exact + below)
}

fn read_stored(row: &Row) -> Result<StoredRecord, StoreError> {
    let size: i64 = row.try_get(8)?;
    let display: Option<String> = row.try_get(3)?;
    let lower: Option<String> = row.try_get(4)?;
    let kind: String = row.try_get(6)?;
    Ok(StoredRecord {
        record: Record {
            external_id: row.try_get(0)?,
            revision: row.try_get(1)?,
            name: row.try_get(2)?,
            // Both columns are written together from one `path` (a CHECK says so).
            path: match (display, lower) {
                (Some(display), Some(lower)) => Some(RecordPath { display, lower }),
                _ => None,
            },
            parent_external_id: row.try_get(5)?,
            kind: RecordKind::parse(&kind).ok_or_else(|| {
                StoreError::Invalid(format!("unknown record kind '{kind}' in the database"))
            })?,
            mime_type: row.try_get(7)?,
            size: size as u64,
            content_hash: row.try_get(9)?,
            client_modified: row.try_get(10)?,
            server_modified: row.try_get(11)?,
            is_downloadable: row.try_get(12)?,
            export_format: row.try_get(13)?,
            web_url: row.try_get(14)?,
            is_shared: row.try_get(15)?,
            shared_url: row.try_get(16)?,
        },
        pending_removal: row.try_get(17)?,
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

/// The error with its causes: the driver's own message is often only "error connecting to
/// server", the cause ("Connection refused") says what to fix.
pub fn describe(e: &postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Whether `--db` names a PostgreSQL server (`postgres://` or `postgresql://`) rather than a
/// SQLite file.
pub fn is_postgres_url(db: &str) -> bool {
    let scheme = db.split_once("://").map(|(scheme, _)| scheme);
    matches!(scheme, Some(s) if s.eq_ignore_ascii_case("postgres") || s.eq_ignore_ascii_case("postgresql"))
}

/// The URL as errors and logs may show it: the password replaced, whether in the user info
/// (`postgres://user:pass@host/db`) or in a query parameter (`?password=...`, `sslpassword`,
/// any parameter whose name mentions a password). A `key=value` connection string, or a URL
/// that does not parse, is not echoed at all (it may hold `password=`). Every place that shows
/// a `--db` value shows it through this.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if matches!(parsed.scheme(), "postgres" | "postgresql") => {
            if parsed.password().is_some() {
                // Setting a password only fails for URLs that cannot have one.
                let _ = parsed.set_password(Some("***"));
            }
            if parsed.query().is_some() {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(k, v)| {
                        let secret = k.to_ascii_lowercase().contains("pass");
                        let v = if secret {
                            "***".to_string()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        _ => "the PostgreSQL database (connection string)".to_string(),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
