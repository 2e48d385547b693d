//! Several workers sharing tenants through one database: leases with fencing epochs, the
//! schedule, and the history of who held what.
//!
//! The protocol, for a worker (`host-test watch --db postgres://...`):
//!
//! 1. [`PgStore::claim_due`] picks tenants that are due and not leased, and leases them to
//!    the worker, in one statement (`FOR NO KEY UPDATE ... SKIP LOCKED`: two workers claiming
//!    at once never wait for each other and never get the same tenant).
//!    [`PgStore::try_acquire`] leases one named tenant (a sync asked for by hand).
//! 2. The sync writes through [`FencedStore`] (`PgStore::fenced`), the `RecordStore` handed
//!    to the sandbox. Each of its writes (`apply`, `clear`, `delete_sync_point`, `put_owner`)
//!    checks, in its own transaction and under the tenant's row lock, that the lease is still
//!    the tenant's current one (its epoch, not released), right after taking the lock and
//!    again just before committing; otherwise it fails with [`LeaseLost`] and commits nothing.
//!    The commit extends the lease by its ttl, in the same statement.
//! 3. While the sync runs, the worker renews the lease ([`PgStore::renew`]) well within the
//!    ttl (every ttl/3, say). A renewal that fails with [`LeaseLost`] means another worker
//!    owns the tenant now: the worker stops the sync (its next page would be refused anyway).
//! 4. At the end, [`PgStore::complete`] (or [`PgStore::complete_failed`], which also backs
//!    the tenant off) records the outcome, sets when the tenant is next due and releases the
//!    lease, in one statement. A worker that dies (SIGKILL, a lost machine) does none of this:
//!    its lease expires after the ttl and the tenant is due again for the next `claim_due` of
//!    any worker.
//!
//! Why this is safe: the lease is on the tenant's row in `tenants`, the row every write of the
//! tenant locks. A take-over (`claim_due`, `try_acquire`) updates that row, so it waits for a
//! write in progress to commit, and a write that starts after the take-over sees the new
//! epoch. Every acquisition increments the epoch (the fencing token), and an epoch is never
//! reused, so "my epoch is the tenant's" means "nobody took the tenant since I did". Expiry is
//! decided by the database's clock (`conn_rt_now_ms()`, see migration 2), never by a worker's,
//! so clocks that disagree between machines cannot make two workers both think they hold a
//! tenant.
//!
//! Fencing is by epoch, not by clock: the expiry only says when others may take the tenant
//! over. A write whose lease ran out by the clock but was never taken over (same epoch) still
//! commits, and its commit extends the lease. This is what keeps a long batch (a big first
//! page of a re-listing, a large purge, a slow database) from wedging its tenant: the renewal
//! needs the row lock the batch holds, so it cannot run during the batch, and refusing the
//! batch at its commit would refuse it again on every retry. Nothing unsafe can slip in: a
//! take-over needs that same row lock, so it happens either before the write (which then sees
//! the new epoch and is refused) or after its commit (which then sees the extended lease).
//!
//! The schedule also carries each tenant's back-off (migration 4): consecutive failures and
//! when their exponential back-off ends, the server's rate-limit window, and, on the tenant's
//! row, whether it needs re-authentication. [`PgStore::claim_due`] claims no tenant that is
//! backing off, rate limited or waiting for re-authentication, whatever its due time, so a
//! request ([`PgStore::request_sync`], an operator's "sync now" or a change hint) waits for
//! them too; the long-polls ask [`PgStore::poll_gate`] before each request. Re-authentication
//! and a change of configuration reset the failure back-off (triggers, see `schema.rs`).
//!
//! Times are milliseconds since the Unix epoch, by the database's clock.

use std::sync::Arc;
use std::time::Duration;

use postgres::Transaction;

use super::{LockedTenant, PgStore};
use crate::store::{
    ApplySummary, Change, Event, Permission, Record, RecordGroup, RecordStore, StoreError,
    StoredCredentials, StoredRecord, SyncOutcome, SyncPoint, SyncStatus, TenantStatus, User,
};

/// A worker's lease on a tenant: the right to write its records until `expires_at`, as long
/// as `epoch` is the tenant's current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub tenant: String,
    pub worker: String,
    /// The fencing token: the tenant's epoch when this lease was granted.
    pub epoch: i64,
    pub acquired_at: i64,
    /// When the lease runs out unless renewed (updated by [`PgStore::renew`]).
    pub expires_at: i64,
}

/// Why a lease no longer lets its worker write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseLostReason {
    /// The lease ran out (at `expired_at`). Fencing is by epoch, so a lease that ran out but
    /// was not taken over still writes, renews and completes: only a lease from before
    /// migration 4 that a race left unexplained is reported so.
    Expired { expired_at: i64 },
    /// The tenant was leased again since: its epoch is now `epoch` (held by `worker` unless
    /// that lease ended too).
    Superseded { epoch: i64, worker: Option<String> },
    /// The lease was released or completed.
    Released,
    /// The tenant is not in the database any more.
    NoTenant,
}

impl std::fmt::Display for LeaseLostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseLostReason::Expired { expired_at } => write!(f, "it expired at {expired_at}"),
            LeaseLostReason::Superseded { epoch, worker } => match worker {
                Some(w) => write!(f, "the tenant was leased again (epoch {epoch}, worker {w})"),
                None => write!(f, "the tenant was leased again since (epoch {epoch})"),
            },
            LeaseLostReason::Released => write!(f, "it was released"),
            LeaseLostReason::NoTenant => write!(f, "the tenant was removed"),
        }
    }
}

/// A fenced write or a lease operation refused: the lease is not the tenant's current one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the lease of tenant {tenant} (epoch {epoch}, worker {worker}) is lost: {reason}")]
pub struct LeaseLost {
    pub tenant: String,
    pub worker: String,
    pub epoch: i64,
    pub reason: LeaseLostReason,
}

/// The host-owned sync strategies (the tenant setting `sync_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Manual,
    Scheduled,
    ChangeNotifications,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Manual => "manual",
            Strategy::Scheduled => "scheduled",
            Strategy::ChangeNotifications => "change-notifications",
        }
    }

    pub fn parse(s: &str) -> Option<Strategy> {
        match s {
            "manual" => Some(Strategy::Manual),
            "scheduled" => Some(Strategy::Scheduled),
            "change-notifications" => Some(Strategy::ChangeNotifications),
            _ => None,
        }
    }
}

/// A tenant's row of `schedules`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub tenant: String,
    pub strategy: Strategy,
    pub interval: Duration,
    /// None: not due until a sync is requested.
    pub next_due_at: Option<i64>,
    pub requested_at: Option<i64>,
    pub last_outcome: Option<SyncOutcome>,
    pub last_completed_at: Option<i64>,
    /// Consecutive failed syncs (0 after a success, a re-authentication or a change of
    /// configuration).
    pub failures: i32,
    /// No worker claims the tenant before this (the failure back-off).
    pub backoff_until: Option<i64>,
    /// The server's rate-limit window: no request of the tenant before this, sync or poll.
    pub rate_limited_until: Option<i64>,
}

/// How a failed sync backs its tenant off, for every worker (see [`PgStore::complete_failed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after one failure, doubled per consecutive failure (counted in the database,
    /// across workers) up to `cap`.
    pub base: Duration,
    pub cap: Duration,
    /// The server's Retry-After, for a rate limit: no request of the tenant before it has
    /// passed, and the back-off is at least this long.
    pub retry_after: Option<Duration>,
}

/// Whether a tenant's long-poll may send a request now (see [`PgStore::poll_gate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollGate {
    Open,
    /// Not before `for_ms` from now (a failure back-off or a rate-limit window).
    Wait {
        for_ms: i64,
    },
    /// The tenant needs re-authentication: nothing to poll until then.
    NeedsReauth,
    /// The tenant has no schedule any more (disconnected, removed or not on
    /// change-notifications).
    Unscheduled,
}

/// What [`PgStore::take_poll_capped`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollTaken {
    /// The worker holds the poll now.
    Held,
    /// The worker is at its cap: the poll is left for another worker to take over.
    Offered,
    /// The tenant is not on change-notifications: nothing to poll.
    NoPoll,
}

/// How many rows of history [`PgStore::prune_history`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Ended rows older than this go.
    pub max_age: Duration,
    /// At most this many rows per tenant (the newest) in each history.
    pub max_rows_per_tenant: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_rows_per_tenant: 1000,
        }
    }
}

/// Rows [`PgStore::prune_history`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub leases: u64,
    pub polls: u64,
}

/// One worker's holding of a tenant's long-poll (a row of `poll_history`): from `acquired_at`
/// to `expires_at` (its last renewal's expiry, or when it was released or handed over).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollRecord {
    pub tenant: String,
    pub worker: String,
    pub acquired_at: i64,
    pub expires_at: i64,
}

/// How a lease of `lease_history` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEnd {
    /// Given back by [`PgStore::release`].
    Released,
    /// Given back by [`PgStore::complete`].
    Completed,
    /// Ran out, and another acquisition followed.
    Expired,
}

/// One lease ever granted (a row of `lease_history`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub tenant: String,
    pub epoch: i64,
    pub worker: String,
    pub acquired_at: i64,
    /// The expiry its last renewal set.
    pub expires_at: i64,
    pub released_at: Option<i64>,
    /// None: still held, or expired with nobody having taken the tenant since.
    pub ended: Option<LeaseEnd>,
    /// Fenced transactions it committed, and the database's time just before the last one.
    pub commits: i64,
    pub last_commit_at: Option<i64>,
}

impl LeaseRecord {
    /// The end of the time the lease gave: its release, else its expiry.
    pub fn end(&self) -> i64 {
        self.released_at
            .unwrap_or(self.expires_at)
            .min(self.expires_at)
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The statements that grant a lease, shared by `try_acquire` and `claim_due`: `$1` the
/// worker, `$2` the ttl in milliseconds, and a CTE `wanted(name)` of tenants whose rows the
/// statement has locked and found free. The previous lease of each tenant, if it never ended,
/// is marked expired in the history.
fn grant_sql(wanted: &str) -> String {
    format!(
        "WITH wanted AS ({wanted}),
         -- An epoch is never given twice, even to a tenant whose row was deleted and made
         -- again: a worker still holding the old incarnation's epoch must stay fenced out.
         taken AS (
             UPDATE tenants t
             SET lease_epoch = GREATEST(t.lease_epoch,
                     COALESCE((SELECT max(h.epoch) FROM lease_history h WHERE h.tenant = t.name), 0)) + 1,
                 lease_worker = $1::text,
                 lease_expires_at = conn_rt_now_ms() + $2::bigint, lease_ttl_ms = $2::bigint
             FROM wanted WHERE t.name = wanted.name
             RETURNING t.name, t.lease_epoch, t.lease_expires_at
         ),
         expired AS (
             UPDATE lease_history h SET ended = 'expired'
             FROM taken WHERE h.tenant = taken.name AND h.epoch < taken.lease_epoch
               AND h.ended IS NULL
         ),
         granted AS (
             INSERT INTO lease_history (tenant, epoch, worker, acquired_at, expires_at)
             SELECT name, lease_epoch, $1::text, lease_expires_at - $2::bigint, lease_expires_at
             FROM taken
         ),
         -- The sync starting now serves every request made before it. `complete` gives a
         -- follow-up for a request made during the sync; comparing times alone could not tell
         -- a request from the lease's own millisecond apart.
         served AS (
             UPDATE schedules s SET requested_at = NULL FROM taken WHERE s.tenant = taken.name
         )
         SELECT name, lease_epoch, lease_expires_at - $2::bigint, lease_expires_at FROM taken
         ORDER BY name"
    )
}

fn leases_of(rows: &[postgres::Row], worker: &str) -> Result<Vec<Lease>, StoreError> {
    rows.iter()
        .map(|r| {
            Ok(Lease {
                tenant: r.try_get(0)?,
                worker: worker.to_string(),
                epoch: r.try_get(1)?,
                acquired_at: r.try_get(2)?,
                expires_at: r.try_get(3)?,
            })
        })
        .collect()
}

impl PgStore {
    /// Lease `tenant` to `worker` for `ttl`, if nobody holds it (never held, released, or
    /// expired). None when another lease is live or the tenant is not in the database (a
    /// lease never creates a tenant: one removed stays removed).
    pub fn try_acquire(
        &self,
        tenant: &str,
        worker: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        // The row lock comes before the expiry test (FOR NO KEY UPDATE in `wanted`, then the
        // test re-evaluated on the newest row), and conn_rt_now_ms() is read after it: a
        // take-over that waited for a write of the old holder judges expiry after that write.
        let sql = grant_sql(
            "SELECT name FROM tenants
             WHERE name = $3 AND (lease_expires_at IS NULL OR lease_expires_at <= conn_rt_now_ms())
             FOR NO KEY UPDATE",
        );
        let mut guard = self.conn()?;
        let rows = guard
            .client
            .query(&sql, &[&worker, &millis(ttl), &tenant])?;
        Ok(leases_of(&rows, worker)?.pop())
    }

    /// Lease up to `limit` tenants that are due (`schedules.next_due_at` passed) and not
    /// leased, most overdue first, to `worker` for `ttl`. Tenants another worker is claiming
    /// or writing at this moment are skipped, not waited for. A tenant added to or removed
    /// from `schedules` is seen by the next call. Never a tenant that is backing off from a
    /// failure, inside a rate-limit window, or waiting for re-authentication.
    pub fn claim_due(
        &self,
        worker: &str,
        limit: u32,
        ttl: Duration,
    ) -> Result<Vec<Lease>, StoreError> {
        self.claim_due_among(worker, limit, ttl, None)
    }

    /// [`PgStore::claim_due`], among the tenants `only` names (None: all).
    pub fn claim_due_among(
        &self,
        worker: &str,
        limit: u32,
        ttl: Duration,
        only: Option<&[String]>,
    ) -> Result<Vec<Lease>, StoreError> {
        // Both rows are locked: a `complete` that committed while this statement waited is
        // seen in full (its new due time, back-off and released lease), so a tenant just
        // synced is not claimed again at once on its stale due time.
        let sql = grant_sql(
            "SELECT t.name FROM schedules s JOIN tenants t ON t.name = s.tenant
             WHERE s.next_due_at <= conn_rt_now_ms()
               AND (t.lease_expires_at IS NULL OR t.lease_expires_at <= conn_rt_now_ms())
               AND (s.backoff_until IS NULL OR s.backoff_until <= conn_rt_now_ms())
               AND (s.rate_limited_until IS NULL OR s.rate_limited_until <= conn_rt_now_ms())
               AND NOT t.needs_reauth
               AND ($4::text[] IS NULL OR t.name = ANY($4::text[]))
             ORDER BY s.next_due_at, s.tenant
             LIMIT $3
             FOR NO KEY UPDATE OF s, t SKIP LOCKED",
        );
        let only: Option<Vec<&str>> = only.map(|o| o.iter().map(String::as_str).collect());
        let mut guard = self.conn()?;
        let rows = guard
            .client
            .query(&sql, &[&worker, &millis(ttl), &i64::from(limit), &only])?;
        leases_of(&rows, worker)
    }

    /// Extend the lease to `ttl` from now. Fails with [`LeaseLost`] when the tenant was
    /// leased again or the lease released: the worker must stop writing the tenant. A lease
    /// that ran out by the clock but that nobody took over is renewed (fencing is by epoch).
    /// Waits while a write of the tenant holds its row lock: that write's commit extends the
    /// lease itself.
    pub fn renew(&self, lease: &mut Lease, ttl: Duration) -> Result<(), StoreError> {
        let mut guard = self.conn()?;
        let row = guard.client.query_opt(
            "WITH renewed AS (
                 UPDATE tenants SET lease_expires_at = conn_rt_now_ms() + $3::bigint,
                     lease_ttl_ms = $3::bigint
                 WHERE name = $1 AND lease_epoch = $2 AND lease_expires_at IS NOT NULL
                 RETURNING lease_expires_at
             ), history AS (
                 UPDATE lease_history SET expires_at = (SELECT lease_expires_at FROM renewed)
                 WHERE tenant = $1 AND epoch = $2 AND EXISTS (SELECT 1 FROM renewed)
             )
             SELECT lease_expires_at FROM renewed",
            &[&lease.tenant, &lease.epoch, &millis(ttl)],
        )?;
        match row {
            Some(row) => {
                lease.expires_at = row.try_get(0)?;
                Ok(())
            }
            None => Err(self.why_lost(lease)?.into()),
        }
    }

    /// Give the lease back; the tenant's schedule is unchanged. False when it was no longer
    /// held (taken over or released): nothing to give back.
    pub fn release(&self, lease: &Lease) -> Result<bool, StoreError> {
        let mut guard = self.conn()?;
        let row = guard.client.query_opt(
            "WITH released AS (
                 UPDATE tenants SET lease_expires_at = NULL, lease_worker = NULL
                 WHERE name = $1 AND lease_epoch = $2 AND lease_expires_at IS NOT NULL
                 RETURNING conn_rt_now_ms() AS at
             ), history AS (
                 UPDATE lease_history SET ended = 'released', released_at = (SELECT at FROM released)
                 WHERE tenant = $1 AND epoch = $2 AND EXISTS (SELECT 1 FROM released)
             )
             SELECT at FROM released",
            &[&lease.tenant, &lease.epoch],
        )?;
        Ok(row.is_some())
    }

    /// The sync under `lease` ended with `outcome`: record it, make the tenant due again
    /// `next_due_in` from now (None: not until requested, for `manual`), and release the
    /// lease, in one statement. A sync requested after the lease was granted (a change signal
    /// during the sync) makes the tenant due at once instead: exactly one follow-up. Fails with
    /// [`LeaseLost`], changing nothing, when the lease is no longer held (the tenant's
    /// current holder completes it). `Ok` clears the tenant's failure back-off; `Failed`
    /// counts a failure (with no back-off of its own: see [`PgStore::complete_failed`]).
    pub fn complete(
        &self,
        lease: &Lease,
        outcome: SyncOutcome,
        next_due_in: Option<Duration>,
    ) -> Result<(), StoreError> {
        self.finish(lease, outcome, next_due_in, None)
    }

    /// [`PgStore::complete`] for a failed sync, backing the tenant off for every worker: one
    /// more consecutive failure, and no claim of the tenant before `backoff.base` doubled per
    /// consecutive failure (capped at `backoff.cap`, never shorter than the server's
    /// `retry_after`). With a `retry_after`, the rate-limit window is also stored: the
    /// tenant's long-polls wait for it too ([`PgStore::poll_gate`]).
    pub fn complete_failed(
        &self,
        lease: &Lease,
        next_due_in: Option<Duration>,
        backoff: &Backoff,
    ) -> Result<(), StoreError> {
        self.finish(lease, SyncOutcome::Failed, next_due_in, Some(backoff))
    }

    fn finish(
        &self,
        lease: &Lease,
        outcome: SyncOutcome,
        next_due_in: Option<Duration>,
        backoff: Option<&Backoff>,
    ) -> Result<(), StoreError> {
        let failed = outcome == SyncOutcome::Failed;
        let (base, cap, retry_after) = match backoff {
            Some(b) => (millis(b.base), millis(b.cap), b.retry_after.map(millis)),
            None => (0, 0, None),
        };
        let mut guard = self.conn()?;
        // In the SET list `failures` is the count before this sync: the back-off of the n-th
        // consecutive failure is base * 2^(n-1) (the exponent is capped, so the product cannot
        // overflow before LEAST caps it).
        let row = guard.client.query_opt(
            "WITH released AS (
                 UPDATE tenants SET lease_expires_at = NULL, lease_worker = NULL
                 WHERE name = $1 AND lease_epoch = $2 AND lease_expires_at IS NOT NULL
                 RETURNING conn_rt_now_ms() AS at
             ), history AS (
                 UPDATE lease_history SET ended = 'completed', released_at = (SELECT at FROM released)
                 WHERE tenant = $1 AND epoch = $2 AND EXISTS (SELECT 1 FROM released)
             ), scheduled AS (
                 UPDATE schedules SET last_outcome = $3, last_completed_at = (SELECT at FROM released),
                     next_due_at = CASE
                         WHEN requested_at >= $4 THEN (SELECT at FROM released)
                         WHEN $5::bigint IS NULL THEN NULL
                         ELSE (SELECT at FROM released) + $5::bigint
                     END,
                     failures = CASE
                         WHEN $3 = 'ok' THEN 0
                         WHEN $6 THEN failures + 1
                         ELSE failures
                     END,
                     backoff_until = CASE
                         WHEN $3 = 'ok' THEN NULL
                         WHEN $6 THEN (SELECT at FROM released) + GREATEST(
                             COALESCE($9::bigint, 0),
                             LEAST($8::bigint, $7::bigint * (1::bigint << LEAST(failures, 30))))
                         ELSE backoff_until
                     END,
                     rate_limited_until = CASE
                         WHEN $9::bigint IS NULL THEN rate_limited_until
                         ELSE GREATEST(COALESCE(rate_limited_until, 0),
                                       (SELECT at FROM released) + $9::bigint)
                     END
                 WHERE tenant = $1 AND EXISTS (SELECT 1 FROM released)
             )
             SELECT at FROM released",
            &[
                &lease.tenant,
                &lease.epoch,
                &outcome.as_str(),
                &lease.acquired_at,
                &next_due_in.map(millis),
                &failed,
                &base,
                &cap,
                &retry_after,
            ],
        )?;
        match row {
            Some(_) => Ok(()),
            None => Err(self.why_lost(lease)?.into()),
        }
    }

    /// The server asked to wait `retry_after` before the tenant's next request (a long-poll
    /// was rate limited): store the window with the tenant's schedule, for every worker's
    /// claims and polls. A window already longer stays. False when the tenant has no
    /// schedule.
    pub fn note_rate_limit(&self, tenant: &str, retry_after: Duration) -> Result<bool, StoreError> {
        let mut guard = self.conn()?;
        let n = guard.client.execute(
            "UPDATE schedules SET rate_limited_until =
                 GREATEST(COALESCE(rate_limited_until, 0), conn_rt_now_ms() + $2::bigint)
             WHERE tenant = $1",
            &[&tenant, &millis(retry_after)],
        )?;
        Ok(n > 0)
    }

    /// Whether the tenant's long-poll may send a request now: not while the tenant waits for
    /// re-authentication, backs off from a failed sync or is inside a rate-limit window, by
    /// the database's clock; never once it is unscheduled.
    pub fn poll_gate(&self, tenant: &str) -> Result<PollGate, StoreError> {
        let mut guard = self.conn()?;
        let row = guard.client.query_opt(
            "SELECT t.needs_reauth,
                    GREATEST(COALESCE(s.backoff_until, 0), COALESCE(s.rate_limited_until, 0))
                        - conn_rt_now_ms()
             FROM schedules s JOIN tenants t ON t.name = s.tenant
             WHERE s.tenant = $1 AND s.strategy = 'change-notifications'",
            &[&tenant],
        )?;
        let Some(row) = row else {
            return Ok(PollGate::Unscheduled);
        };
        let needs_reauth: bool = row.try_get(0)?;
        let wait: i64 = row.try_get(1)?;
        Ok(if needs_reauth {
            PollGate::NeedsReauth
        } else if wait > 0 {
            PollGate::Wait { for_ms: wait }
        } else {
            PollGate::Open
        })
    }

    /// The tenant's live lease, if any.
    pub fn lease_holder(&self, tenant: &str) -> Result<Option<Lease>, StoreError> {
        let mut guard = self.conn()?;
        let row = guard.client.query_opt(
            "SELECT t.lease_worker, t.lease_epoch, h.acquired_at, t.lease_expires_at
             FROM tenants t JOIN lease_history h ON h.tenant = t.name AND h.epoch = t.lease_epoch
             WHERE t.name = $1 AND t.lease_expires_at > conn_rt_now_ms()",
            &[&tenant],
        )?;
        row.map(|r| {
            Ok(Lease {
                tenant: tenant.to_string(),
                worker: r.try_get(0)?,
                epoch: r.try_get(1)?,
                acquired_at: r.try_get(2)?,
                expires_at: r.try_get(3)?,
            })
        })
        .transpose()
    }

    /// Why `lease` is not the tenant's live lease (read after an operation found it so).
    fn why_lost(&self, lease: &Lease) -> Result<LeaseLost, StoreError> {
        let mut guard = self.conn()?;
        let row = guard.client.query_opt(
            "SELECT lease_epoch, lease_worker, lease_expires_at, conn_rt_now_ms()
             FROM tenants WHERE name = $1",
            &[&lease.tenant],
        )?;
        let reason = match row {
            None => LeaseLostReason::NoTenant,
            Some(r) => classify(
                lease,
                &LockedTenant {
                    lease_epoch: r.try_get(0)?,
                    lease_worker: r.try_get(1)?,
                    lease_expires_at: r.try_get(2)?,
                    event_seq: 0,
                    now_ms: r.try_get(3)?,
                },
            )
            .unwrap_or(LeaseLostReason::Expired {
                // Held now by this epoch, so it was not at the moment the operation looked:
                // only this worker holds the epoch (two of its operations racing). Report
                // what the failed operation can have seen.
                expired_at: lease.expires_at,
            }),
        };
        Ok(LeaseLost {
            tenant: lease.tenant.clone(),
            worker: lease.worker.clone(),
            epoch: lease.epoch,
            reason,
        })
    }

    /// Set the tenant's strategy and interval (the tenant row is created if missing). A new
    /// schedule is due at once unless manual; an existing one keeps its due time, except that
    /// `manual` is never due and a tenant leaving `manual` is due at once.
    pub fn set_schedule(
        &self,
        tenant: &str,
        strategy: Strategy,
        interval: Duration,
    ) -> Result<(), StoreError> {
        if interval.is_zero() {
            return Err(StoreError::Invalid(
                "a schedule's interval must be longer than zero".into(),
            ));
        }
        let mut guard = self.conn()?;
        let mut tx = guard.client.transaction()?;
        tx.execute(
            "INSERT INTO tenants (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&tenant, &super::now()],
        )?;
        tx.execute(
            "INSERT INTO schedules (tenant, strategy, interval_ms, next_due_at)
             VALUES ($1, $2, $3, CASE WHEN $2 = 'manual' THEN NULL ELSE conn_rt_now_ms() END)
             ON CONFLICT (tenant) DO UPDATE SET strategy = EXCLUDED.strategy,
                 interval_ms = EXCLUDED.interval_ms,
                 next_due_at = CASE
                     WHEN EXCLUDED.strategy = 'manual' THEN NULL
                     ELSE COALESCE(schedules.next_due_at, conn_rt_now_ms())
                 END",
            &[&tenant, &strategy.as_str(), &millis(interval)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Take the tenant off the schedule (a lease it holds runs to its end). True if it was on.
    pub fn remove_schedule(&self, tenant: &str) -> Result<bool, StoreError> {
        let mut guard = self.conn()?;
        let n = guard
            .client
            .execute("DELETE FROM schedules WHERE tenant = $1", &[&tenant])?;
        Ok(n > 0)
    }

    /// Ask for a sync of the tenant as soon as a worker is free (whatever its strategy). One
    /// asked for during a sync gives one follow-up sync after it (see [`PgStore::complete`]).
    /// A request does not jump a failure back-off, a rate-limit window or a wait for
    /// re-authentication: the claim waits for them (see [`PgStore::claim_due`]). False when
    /// the tenant has no schedule.
    pub fn request_sync(&self, tenant: &str) -> Result<bool, StoreError> {
        let mut guard = self.conn()?;
        let n = guard.client.execute(
            "UPDATE schedules SET requested_at = conn_rt_now_ms(),
                 next_due_at = LEAST(COALESCE(next_due_at, conn_rt_now_ms()), conn_rt_now_ms())
             WHERE tenant = $1",
            &[&tenant],
        )?;
        Ok(n > 0)
    }

    /// `worker` just completed the sync of `tenant`: it takes the tenant's long-poll for `ttl`
    /// (the last worker to complete a sync holds the poll; a previous holder's time ends now,
    /// and it stops polling at its next [`PgStore::hold_polls`]). False when the tenant's
    /// strategy is not change-notifications (nothing to poll).
    pub fn take_poll(&self, tenant: &str, worker: &str, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.take_poll_capped(tenant, worker, ttl, u32::MAX)? == PollTaken::Held)
    }

    /// [`PgStore::take_poll`] by a worker that holds at most `cap` long-polls. At its cap, the
    /// worker offers the poll instead: it is left expired, for the next
    /// [`PgStore::hold_polls_capped`] of any worker with room to take over.
    pub fn take_poll_capped(
        &self,
        tenant: &str,
        worker: &str,
        ttl: Duration,
        cap: u32,
    ) -> Result<PollTaken, StoreError> {
        let mut guard = self.conn()?;
        let mut tx = guard.client.transaction()?;
        let Some(row) = tx.query_opt(
            "SELECT poll_worker, poll_expires_at, conn_rt_now_ms() FROM schedules
             WHERE tenant = $1 AND strategy = 'change-notifications' FOR UPDATE",
            &[&tenant],
        )?
        else {
            return Ok(PollTaken::NoPoll);
        };
        let holder: Option<String> = row.try_get(0)?;
        let expires_at: Option<i64> = row.try_get(1)?;
        let now: i64 = row.try_get(2)?;
        let live = expires_at.is_some_and(|at| at > now);
        let mine = live && holder.as_deref() == Some(worker);
        if !mine {
            let held: i64 = tx
                .query_one(
                    "SELECT count(*) FROM schedules
                     WHERE poll_worker = $1 AND poll_expires_at > $2
                       AND strategy = 'change-notifications'",
                    &[&worker, &now],
                )?
                .try_get(0)?;
            if held >= i64::from(cap) {
                if live {
                    // The previous holder's time ends here.
                    tx.execute(
                        "UPDATE poll_history SET expires_at = $2 WHERE tenant = $1 AND expires_at > $2",
                        &[&tenant, &now],
                    )?;
                }
                // Expired at once: any worker with room takes it over. Never NULL: a poll
                // nobody has held is one whose tenant was never synced.
                tx.execute(
                    "UPDATE schedules SET poll_worker = $2, poll_expires_at = $3 WHERE tenant = $1",
                    &[&tenant, &worker, &now],
                )?;
                tx.commit()?;
                return Ok(PollTaken::Offered);
            }
        }
        let until = now.saturating_add(millis(ttl));
        if mine {
            // Already this worker's: a renewal.
            tx.execute(
                "UPDATE poll_history SET expires_at = $3
                 WHERE tenant = $1 AND worker = $2 AND expires_at > $4",
                &[&tenant, &worker, &until, &now],
            )?;
        } else {
            if live {
                // The previous holder's time ends here, before this one's begins.
                tx.execute(
                    "UPDATE poll_history SET expires_at = $2 WHERE tenant = $1 AND expires_at > $2",
                    &[&tenant, &now],
                )?;
            }
            tx.execute(
                "INSERT INTO poll_history (tenant, worker, acquired_at, expires_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&tenant, &worker, &now, &until],
            )?;
        }
        tx.execute(
            "UPDATE schedules SET poll_worker = $2, poll_expires_at = $3 WHERE tenant = $1",
            &[&tenant, &worker, &until],
        )?;
        tx.commit()?;
        Ok(PollTaken::Held)
    }

    /// The long-polls `worker` holds now, renewed for `ttl`: its own live ones, plus any whose
    /// holder let them expire (a killed worker's), taken over. A tenant whose strategy is no
    /// longer change-notifications, or whose poll another worker took ([`PgStore::take_poll`]),
    /// is not returned: the worker stops polling it. A tenant never synced has no poll (its
    /// first sync's completer takes it).
    pub fn hold_polls(&self, worker: &str, ttl: Duration) -> Result<Vec<String>, StoreError> {
        self.hold_polls_capped(worker, ttl, u32::MAX, None)
    }

    /// [`PgStore::hold_polls`] for a worker that holds at most `cap` long-polls, of the
    /// tenants `only` names (None: any). Its own live polls come first; expired ones are
    /// taken over up to the cap, the longest expired first, so that after a restart of the
    /// cluster the polls spread over the workers instead of all going to the first to look.
    /// Rows another worker is taking at this moment are skipped, not waited for.
    pub fn hold_polls_capped(
        &self,
        worker: &str,
        ttl: Duration,
        cap: u32,
        only: Option<&[String]>,
    ) -> Result<Vec<String>, StoreError> {
        let only: Option<Vec<&str>> = only.map(|o| o.iter().map(String::as_str).collect());
        let mut guard = self.conn()?;
        let mut tx = guard.client.transaction()?;
        // Its own live polls first (waiting for a row another statement holds for a moment:
        // a sync's completion, a request). Then expired ones, up to the cap, skipping rows
        // another worker is taking over at this moment: it gets them.
        let mut rows = tx.query(
            "UPDATE schedules SET poll_expires_at = conn_rt_now_ms() + $2::bigint
             WHERE tenant IN (
                 SELECT tenant FROM schedules
                 WHERE strategy = 'change-notifications' AND poll_worker = $1
                   AND poll_expires_at > conn_rt_now_ms()
                   AND ($4::text[] IS NULL OR tenant = ANY($4::text[]))
                 ORDER BY tenant LIMIT $3)
               AND poll_worker = $1 AND poll_expires_at > conn_rt_now_ms()
             RETURNING tenant, poll_expires_at, poll_expires_at - $2::bigint AS now",
            &[&worker, &millis(ttl), &i64::from(cap), &only],
        )?;
        let room = i64::from(cap).saturating_sub(rows.len() as i64);
        if room > 0 {
            rows.extend(tx.query(
                "WITH wanted AS (
                     SELECT tenant FROM schedules
                     WHERE strategy = 'change-notifications' AND poll_worker IS NOT NULL
                       AND poll_expires_at <= conn_rt_now_ms()
                       AND ($4::text[] IS NULL OR tenant = ANY($4::text[]))
                     ORDER BY poll_expires_at, tenant
                     LIMIT $3
                     FOR UPDATE SKIP LOCKED
                 )
                 UPDATE schedules s SET poll_worker = $1,
                     poll_expires_at = conn_rt_now_ms() + $2::bigint
                 FROM wanted WHERE s.tenant = wanted.tenant
                 RETURNING s.tenant, s.poll_expires_at, s.poll_expires_at - $2::bigint AS now",
                &[&worker, &millis(ttl), &room, &only],
            )?);
        }
        let mut held = Vec::with_capacity(rows.len());
        for row in &rows {
            let tenant: String = row.try_get(0)?;
            let until: i64 = row.try_get(1)?;
            let now: i64 = row.try_get(2)?;
            // The live holding of this worker is renewed; else (expired, or another's) a new
            // holding begins.
            let renewed = tx.execute(
                "UPDATE poll_history SET expires_at = $3
                 WHERE tenant = $1 AND worker = $2 AND expires_at > $4",
                &[&tenant, &worker, &until, &now],
            )?;
            if renewed == 0 {
                tx.execute(
                    "INSERT INTO poll_history (tenant, worker, acquired_at, expires_at)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &[&tenant, &worker, &now, &until],
                )?;
            }
            held.push(tenant);
        }
        tx.commit()?;
        Ok(held)
    }

    /// `worker` stops: its long-polls end now, for other workers to take over at once.
    pub fn release_polls(&self, worker: &str) -> Result<(), StoreError> {
        let mut guard = self.conn()?;
        let mut tx = guard.client.transaction()?;
        tx.execute(
            "UPDATE schedules SET poll_expires_at = conn_rt_now_ms()
             WHERE poll_worker = $1 AND poll_expires_at > conn_rt_now_ms()",
            &[&worker],
        )?;
        tx.execute(
            "UPDATE poll_history SET expires_at = conn_rt_now_ms()
             WHERE worker = $1 AND expires_at > conn_rt_now_ms()",
            &[&worker],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Every holding of a long-poll, of one tenant or all, by tenant and start.
    pub fn poll_history(&self, tenant: Option<&str>) -> Result<Vec<PollRecord>, StoreError> {
        let mut guard = self.conn()?;
        let rows = guard.client.query(
            "SELECT tenant, worker, acquired_at, expires_at FROM poll_history
             WHERE $1::text IS NULL OR tenant = $1
             ORDER BY tenant COLLATE \"C\", acquired_at",
            &[&tenant],
        )?;
        rows.iter()
            .map(|r| {
                Ok(PollRecord {
                    tenant: r.try_get(0)?,
                    worker: r.try_get(1)?,
                    acquired_at: r.try_get(2)?,
                    expires_at: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Every schedule, by tenant name.
    pub fn schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        let mut guard = self.conn()?;
        let rows = guard.client.query(
            "SELECT tenant, strategy, interval_ms, next_due_at, requested_at, last_outcome,
                    last_completed_at, failures, backoff_until, rate_limited_until
             FROM schedules ORDER BY tenant COLLATE \"C\"",
            &[],
        )?;
        rows.iter()
            .map(|r| {
                let strategy: String = r.try_get(1)?;
                let interval: i64 = r.try_get(2)?;
                let outcome: Option<String> = r.try_get(5)?;
                Ok(Schedule {
                    tenant: r.try_get(0)?,
                    strategy: Strategy::parse(&strategy).ok_or_else(|| {
                        StoreError::Invalid(format!(
                            "unknown strategy '{strategy}' in the database"
                        ))
                    })?,
                    interval: Duration::from_millis(interval.max(0) as u64),
                    next_due_at: r.try_get(3)?,
                    requested_at: r.try_get(4)?,
                    last_outcome: outcome
                        .map(|o| {
                            SyncOutcome::parse(&o).ok_or_else(|| {
                                StoreError::Invalid(format!(
                                    "unknown sync outcome '{o}' in the database"
                                ))
                            })
                        })
                        .transpose()?,
                    last_completed_at: r.try_get(6)?,
                    failures: r.try_get(7)?,
                    backoff_until: r.try_get(8)?,
                    rate_limited_until: r.try_get(9)?,
                })
            })
            .collect()
    }

    /// Apply `retention` to `lease_history` and `poll_history`: delete rows that ended more
    /// than `max_age` ago, and all but the newest `max_rows_per_tenant` of each tenant. A
    /// tenant's current lease and live poll are never deleted (the current lease's row is
    /// the one [`PgStore::lease_holder`] reads).
    pub fn prune_history(&self, retention: Retention) -> Result<Pruned, StoreError> {
        let max_age = millis(retention.max_age);
        let keep = i64::from(retention.max_rows_per_tenant);
        let mut guard = self.conn()?;
        let mut tx = guard.client.transaction()?;
        let leases = tx.execute(
            "DELETE FROM lease_history h
             USING (
                 SELECT tenant, epoch,
                        row_number() OVER (PARTITION BY tenant ORDER BY epoch DESC) AS newer
                 FROM lease_history
             ) ranked
             WHERE h.tenant = ranked.tenant AND h.epoch = ranked.epoch
               AND (ranked.newer > $2
                    OR LEAST(COALESCE(h.released_at, h.expires_at), h.expires_at)
                       < conn_rt_now_ms() - $1::bigint)
               AND NOT EXISTS (SELECT 1 FROM tenants t
                               WHERE t.name = h.tenant AND t.lease_epoch = h.epoch)",
            &[&max_age, &keep],
        )?;
        let polls = tx.execute(
            "DELETE FROM poll_history h
             USING (
                 SELECT tenant, worker, acquired_at,
                        row_number() OVER (PARTITION BY tenant ORDER BY acquired_at DESC, worker)
                            AS newer
                 FROM poll_history
             ) ranked
             WHERE h.tenant = ranked.tenant AND h.worker = ranked.worker
               AND h.acquired_at = ranked.acquired_at
               AND (ranked.newer > $2 OR h.expires_at < conn_rt_now_ms() - $1::bigint)
               AND h.expires_at <= conn_rt_now_ms()",
            &[&max_age, &keep],
        )?;
        tx.commit()?;
        Ok(Pruned { leases, polls })
    }

    /// The leases granted, of one tenant or all, by tenant and epoch.
    pub fn lease_history(&self, tenant: Option<&str>) -> Result<Vec<LeaseRecord>, StoreError> {
        let mut guard = self.conn()?;
        let rows = guard.client.query(
            "SELECT tenant, epoch, worker, acquired_at, expires_at, released_at, ended, commits,
                    last_commit_at
             FROM lease_history WHERE $1::text IS NULL OR tenant = $1
             ORDER BY tenant COLLATE \"C\", epoch",
            &[&tenant],
        )?;
        rows.iter()
            .map(|r| {
                let ended: Option<String> = r.try_get(6)?;
                Ok(LeaseRecord {
                    tenant: r.try_get(0)?,
                    epoch: r.try_get(1)?,
                    worker: r.try_get(2)?,
                    acquired_at: r.try_get(3)?,
                    expires_at: r.try_get(4)?,
                    released_at: r.try_get(5)?,
                    ended: match ended.as_deref() {
                        None => None,
                        Some("released") => Some(LeaseEnd::Released),
                        Some("completed") => Some(LeaseEnd::Completed),
                        Some("expired") => Some(LeaseEnd::Expired),
                        Some(other) => {
                            return Err(StoreError::Invalid(format!(
                                "unknown lease end '{other}' in the database"
                            )));
                        }
                    },
                    commits: r.try_get(7)?,
                    last_commit_at: r.try_get(8)?,
                })
            })
            .collect()
    }

    /// The `RecordStore` a worker hands to the tenant's sandbox while it holds `lease`: the
    /// connector's writes are fenced by it, everything else is this store's.
    pub fn fenced(self: &Arc<Self>, lease: &Lease) -> FencedStore {
        FencedStore {
            store: Arc::clone(self),
            lease: lease.clone(),
        }
    }
}

/// None when `lease` is still the tenant's lease (its epoch, not released), whether or not
/// its clock time ran out; else why not. Fencing is by epoch (see the module documentation).
fn classify(lease: &Lease, row: &LockedTenant) -> Option<LeaseLostReason> {
    if row.lease_epoch != lease.epoch {
        return Some(LeaseLostReason::Superseded {
            epoch: row.lease_epoch,
            worker: row.lease_worker.clone(),
        });
    }
    match row.lease_expires_at {
        None => Some(LeaseLostReason::Released),
        Some(_) => None,
    }
}

/// The fence at the start of a write: called with the tenant's row locked.
pub(super) fn check_fence(
    lease: &Lease,
    tenant: &str,
    row: &LockedTenant,
) -> Result<(), StoreError> {
    if lease.tenant != tenant {
        return Err(StoreError::Invalid(format!(
            "a store fenced by the lease of tenant {} cannot write tenant {tenant}",
            lease.tenant
        )));
    }
    match classify(lease, row) {
        None => {
            if row.lease_expires_at.is_some_and(|at| at <= row.now_ms) {
                // Nobody took the tenant over (same epoch), and nobody can while this write
                // holds the row: it goes on, and its commit extends the lease.
                tracing::debug!(
                    tenant,
                    epoch = lease.epoch,
                    "writing past the lease's clock time; it was never taken over"
                );
            }
            Ok(())
        }
        Some(reason) => Err(LeaseLost {
            tenant: lease.tenant.clone(),
            worker: lease.worker.clone(),
            epoch: lease.epoch,
            reason,
        }
        .into()),
    }
}

/// The fence at the end of a write, just before its commit, still under the row lock: the
/// lease must still be the tenant's (its epoch, not released). Nobody can have taken it over
/// while the write ran (that waits for the lock), so this only fails if something changed the
/// row under the same transaction's lock, which nothing does; it is the commit's guarantee
/// all the same. A write that outlived its lease's clock time commits: the lease was never
/// superseded. The commit extends the lease by its ttl (a long batch renews it, since the
/// renewal waits for this lock), stores the tenant's last event number and counts the commit
/// in the lease's history, in the same statement.
pub(super) fn seal_fenced(
    tx: &mut Transaction<'_>,
    lease: &Lease,
    event_seq: i64,
) -> Result<(), StoreError> {
    let row = tx.query_opt(
        "WITH sealed AS (
             UPDATE tenants SET event_seq = $3,
                 lease_expires_at = GREATEST(lease_expires_at,
                                             conn_rt_now_ms() + COALESCE(lease_ttl_ms, 0))
             WHERE name = $1 AND lease_epoch = $2 AND lease_expires_at IS NOT NULL
             RETURNING conn_rt_now_ms() AS at, lease_expires_at
         ), history AS (
             UPDATE lease_history SET commits = commits + 1, last_commit_at = (SELECT at FROM sealed),
                 expires_at = (SELECT lease_expires_at FROM sealed)
             WHERE tenant = $1 AND epoch = $2 AND EXISTS (SELECT 1 FROM sealed)
         )
         SELECT at FROM sealed",
        &[&lease.tenant, &lease.epoch, &event_seq],
    )?;
    if row.is_some() {
        return Ok(());
    }
    let r = tx.query_one(
        "SELECT lease_epoch, lease_worker, lease_expires_at, conn_rt_now_ms()
         FROM tenants WHERE name = $1",
        &[&lease.tenant],
    )?;
    let row = LockedTenant {
        lease_epoch: r.try_get(0)?,
        lease_worker: r.try_get(1)?,
        lease_expires_at: r.try_get(2)?,
        event_seq,
        now_ms: r.try_get(3)?,
    };
    Err(LeaseLost {
        tenant: lease.tenant.clone(),
        worker: lease.worker.clone(),
        epoch: lease.epoch,
        reason: classify(lease, &row).unwrap_or(LeaseLostReason::Expired {
            expired_at: row.lease_expires_at.unwrap_or(row.now_ms),
        }),
    }
    .into())
}

/// A [`PgStore`] bound to a lease: the connector's writes (`apply`, `clear`,
/// `delete_sync_point`, `put_owner`) commit only while the lease is the tenant's live one,
/// and only for its tenant; reads and the host's own notes (credentials, settings, sync
/// results) are the store's, unfenced.
pub struct FencedStore {
    store: Arc<PgStore>,
    lease: Lease,
}

impl FencedStore {
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    pub fn store(&self) -> &Arc<PgStore> {
        &self.store
    }
}

impl RecordStore for FencedStore {
    fn apply(
        &self,
        tenant: &str,
        changes: &[Change],
        sync_point: Option<&SyncPoint>,
    ) -> Result<ApplySummary, StoreError> {
        self.store
            .apply_batch(tenant, changes, sync_point, Some(&self.lease))
    }

    fn clear(&self, tenant: &str) -> Result<(), StoreError> {
        self.store.clear_tenant(tenant, Some(&self.lease))
    }

    fn delete_sync_point(&self, tenant: &str) -> Result<(), StoreError> {
        self.store
            .in_tenant_tx(tenant, Some(&self.lease), |tx, _, _| {
                tx.execute("DELETE FROM sync_points WHERE tenant = $1", &[&tenant])?;
                Ok(())
            })
    }

    fn put_owner(
        &self,
        tenant: &str,
        owner: &User,
        group: &RecordGroup,
        permissions: &[Permission],
    ) -> Result<(), StoreError> {
        self.store
            .put_owner_fenced(tenant, owner, group, permissions, Some(&self.lease))
    }

    // ---- the rest is the store's ----

    fn ensure_tenant(&self, tenant: &str) -> Result<(), StoreError> {
        self.store.ensure_tenant(tenant)
    }
    fn set_tenant_api_url(&self, tenant: &str, api_url: Option<&str>) -> Result<(), StoreError> {
        self.store.set_tenant_api_url(tenant, api_url)
    }
    fn tenant_api_url(&self, tenant: &str) -> Result<Option<String>, StoreError> {
        self.store.tenant_api_url(tenant)
    }
    fn tenants(&self) -> Result<Vec<String>, StoreError> {
        self.store.tenants()
    }
    fn get_sync_point(&self, tenant: &str) -> Result<Option<String>, StoreError> {
        self.store.get_sync_point(tenant)
    }
    fn get_records(&self, tenant: &str, ids: &[String]) -> Result<Vec<StoredRecord>, StoreError> {
        self.store.get_records(tenant, ids)
    }
    fn list_records(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Record>, StoreError> {
        self.store.list_records(tenant, after, limit)
    }
    fn find_by_paths(
        &self,
        tenant: &str,
        paths: &[String],
    ) -> Result<Vec<Option<Record>>, StoreError> {
        self.store.find_by_paths(tenant, paths)
    }
    fn list_subtree(
        &self,
        tenant: &str,
        path: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Record>, StoreError> {
        self.store.list_subtree(tenant, path, after, limit)
    }
    fn list_shared(&self, tenant: &str, limit: u32) -> Result<Vec<Record>, StoreError> {
        self.store.list_shared(tenant, limit)
    }
    fn records(&self, tenant: &str) -> Result<Vec<Record>, StoreError> {
        self.store.records(tenant)
    }
    fn record_count(&self, tenant: &str) -> Result<u64, StoreError> {
        self.store.record_count(tenant)
    }
    fn pending_count(&self, tenant: &str) -> Result<u64, StoreError> {
        self.store.pending_count(tenant)
    }
    fn owner(&self, tenant: &str) -> Result<Option<User>, StoreError> {
        self.store.owner(tenant)
    }
    fn record_groups(
        &self,
        tenant: &str,
    ) -> Result<Vec<(RecordGroup, Vec<Permission>)>, StoreError> {
        self.store.record_groups(tenant)
    }
    fn sync_status(&self, tenant: &str) -> Result<Option<SyncStatus>, StoreError> {
        self.store.sync_status(tenant)
    }
    fn events(&self, tenant: Option<&str>, since: i64) -> Result<Vec<Event>, StoreError> {
        self.store.events(tenant, since)
    }
    fn last_event_seq(&self) -> Result<i64, StoreError> {
        self.store.last_event_seq()
    }
    fn put_credentials(&self, tenant: &str, creds: &StoredCredentials) -> Result<(), StoreError> {
        self.store.put_credentials(tenant, creds)
    }
    fn credentials(&self, tenant: &str) -> Result<Option<StoredCredentials>, StoreError> {
        self.store.credentials(tenant)
    }
    fn delete_credentials(&self, tenant: &str) -> Result<(), StoreError> {
        self.store.delete_credentials(tenant)
    }
    fn set_needs_reauth(&self, tenant: &str, needs: bool) -> Result<(), StoreError> {
        self.store.set_needs_reauth(tenant, needs)
    }
    fn record_sync_result(
        &self,
        tenant: &str,
        outcome: SyncOutcome,
        note: &str,
    ) -> Result<(), StoreError> {
        self.store.record_sync_result(tenant, outcome, note)
    }
    fn status(&self, tenant: &str) -> Result<TenantStatus, StoreError> {
        self.store.status(tenant)
    }
    fn settings(&self, tenant: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.store.settings(tenant)
    }
    fn set_setting(&self, tenant: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.store.set_setting(tenant, key, value)
    }
    fn inject_apply_failure(&self, plan: Option<(usize, usize)>) {
        self.store.inject_apply_failure(plan)
    }
}
