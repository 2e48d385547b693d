//! The tenant's writer right for a command that writes a tenant (`sync`) on PostgreSQL: a lease
//! of its own, like a `watch` worker's, with every write fenced by it and the lease renewed
//! while the command runs, then given back. A tenant that a worker (or another command) holds
//! is refused at once with who holds it (exit code 11), so an operator's run never writes
//! beside a worker's: neither can purge marks the other is still making.
//!
//! On SQLite the right is the store's own file lock (`store::writer_lock`), taken by the
//! runtime for every writing operation; this module is only for PostgreSQL, whose writers
//! agree through the database.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Result;

use crate::app::{ConnectorHost, HostError};
use crate::store::writer_lock::WriterLockError;
use crate::store::{PgStore, RecordStore};

/// How long the command's lease lasts unless renewed (renewed every third of it): a command
/// killed outright holds the tenant at most this long.
const LEASE_TTL: Duration = Duration::from_secs(60);

/// Run `op` with the tenant's writer right on the PostgreSQL database `db`: `op` gets a host
/// whose store is fenced by the command's lease.
pub(super) fn on_postgres<T>(
    host: &ConnectorHost,
    db: &str,
    tenant: &str,
    command: &str,
    op: impl FnOnce(&ConnectorHost, Arc<AtomicBool>) -> Result<T>,
) -> Result<T> {
    let pg = Arc::new(PgStore::connect(db, super::host_keyring(db)?)?);
    let worker = format!("{command}@{}", super::watch_pg::default_worker_id());
    let mut lease = pg.try_acquire(tenant, &worker, LEASE_TTL)?;
    if lease.is_none() && pg.lease_holder(tenant)?.is_none() {
        // A lease never creates a tenant: a first sync (with a token for this run) makes its
        // row, then asks again.
        pg.ensure_tenant(tenant)?;
        lease = pg.try_acquire(tenant, &worker, LEASE_TTL)?;
    }
    let Some(lease) = lease else {
        let holder = match pg.lease_holder(tenant)? {
            Some(h) => format!(
                "worker {} holds its lease (epoch {}) until {} ms of the database's clock",
                h.worker, h.epoch, h.expires_at
            ),
            None => "a writer that has just let go; try again".to_string(),
        };
        return Err(HostError::Busy(WriterLockError::Held {
            tenant: tenant.to_string(),
            holder,
        })
        .into());
    };
    let fenced: Arc<dyn RecordStore> = Arc::new(pg.fenced(&lease));
    // Never set: a command stops on Ctrl-C by its own means.
    let stopping = Arc::new(AtomicBool::new(false));
    let renewal = super::watch_pg::Renewal::start(pg.clone(), lease, LEASE_TTL, stopping);
    let result = op(&host.over_store(fenced), renewal.sync_stop.clone());
    let (lease, lost) = renewal.finish();
    if let Err(e) = pg.release(&lease) {
        // The lease runs out by itself; nothing else is owed.
        tracing::warn!(tenant, "cannot give the lease back: {e}");
    }
    if lost && result.is_ok() {
        tracing::warn!(
            tenant,
            "the lease was taken over during the run; it stopped early"
        );
    }
    result
}
