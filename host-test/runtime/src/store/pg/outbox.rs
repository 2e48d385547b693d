//! The event stream as an outbox: consumers read each tenant's events in order and
//! acknowledge them, and their positions are durable in the database.
//!
//! Order is per tenant (what a downstream indexer needs, and all the store can promise across
//! workers: two tenants' batches commit independently). Each event carries its tenant's own
//! number, `tenant_seq`: 1, 2, 3, ... without holes, taken under the tenant's row lock in the
//! transaction that writes the event (`PgStore::in_tenant_tx`). A number is therefore only
//! taken once every smaller one is committed, and a batch that rolls back gives its numbers
//! back. So a reader that has processed up to N and asks for `tenant_seq > N` gets the next
//! event, never one after a hole that a slower transaction fills later.
//!
//! A consumer's position is kept per (consumer, tenant) in `consumers`: the `tenant_seq` of
//! the last event it acknowledged. Nothing about it lives in a worker, so it survives worker
//! failover (a second worker continuing the tenant keeps numbering from the tenant's row) and
//! consumer restarts (a consumer that crashed before acking reads the same events again:
//! delivery is at least once, and `tenant_seq` lets it drop what it had already applied).

use super::PgStore;
use crate::store::{Event, StoreError};

/// An event with its place in its tenant's stream.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// 1, 2, 3, ... per tenant, without holes.
    pub tenant_seq: i64,
    pub event: Event,
}

impl PgStore {
    /// Up to `limit` of the tenant's events after the consumer's position, in the tenant's
    /// order. Reading does not move the position: [`PgStore::ack`] does.
    pub fn read_outbox(
        &self,
        consumer: &str,
        tenant: &str,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let mut guard = self.conn()?;
        let rows = guard.client.query(
            "SELECT e.tenant_seq, e.seq, e.tenant, e.batch, e.kind, e.external_id, e.path_lower,
                    e.record
             FROM events e
             WHERE e.tenant = $2
               AND e.tenant_seq > COALESCE(
                   (SELECT position FROM consumers WHERE consumer = $1 AND tenant = $2), 0)
             ORDER BY e.tenant_seq
             LIMIT $3",
            &[&consumer, &tenant, &i64::from(limit)],
        )?;
        rows.iter()
            .map(|r| {
                Ok(OutboxEvent {
                    tenant_seq: r.try_get(0)?,
                    event: Event {
                        seq: r.try_get(1)?,
                        tenant: r.try_get(2)?,
                        batch: r.try_get(3)?,
                        kind: r.try_get(4)?,
                        external_id: r.try_get(5)?,
                        path_lower: r.try_get(6)?,
                        record: r.try_get(7)?,
                    },
                })
            })
            .collect()
    }

    /// The consumer has processed the tenant's events up to `up_to` (a `tenant_seq`): its
    /// position moves there. Returns the position now stored. Acknowledging at or before the
    /// position is a no-op (a consumer retrying an ack after a crash does no harm: positions
    /// never go back); acknowledging past the tenant's last event is refused (it would skip
    /// events not written yet).
    pub fn ack(&self, consumer: &str, tenant: &str, up_to: i64) -> Result<i64, StoreError> {
        if up_to < 0 {
            return Err(StoreError::Invalid(format!(
                "cannot acknowledge up to {up_to}: event numbers start at 1"
            )));
        }
        let mut guard = self.conn()?;
        // The tenant's last number only grows, so checking against a snapshot of it is safe.
        let row = guard.client.query_opt(
            "INSERT INTO consumers (consumer, tenant, position, updated_at)
             SELECT $1, $2, $3, $4 FROM tenants WHERE name = $2 AND event_seq >= $3
             ON CONFLICT (consumer, tenant) DO UPDATE
                 SET position = GREATEST(consumers.position, EXCLUDED.position),
                     updated_at = EXCLUDED.updated_at
             RETURNING position",
            &[&consumer, &tenant, &up_to, &super::now()],
        )?;
        match row {
            Some(r) => Ok(r.try_get(0)?),
            None => {
                let last = self.last_tenant_seq(tenant)?;
                Err(StoreError::Invalid(format!(
                    "cannot acknowledge {tenant}'s events up to {up_to}: its last event is {last}"
                )))
            }
        }
    }

    /// The consumer's position for the tenant (0 before its first ack).
    pub fn consumer_position(&self, consumer: &str, tenant: &str) -> Result<i64, StoreError> {
        let mut guard = self.conn()?;
        let row = guard.client.query_opt(
            "SELECT position FROM consumers WHERE consumer = $1 AND tenant = $2",
            &[&consumer, &tenant],
        )?;
        Ok(match row {
            Some(r) => r.try_get(0)?,
            None => 0,
        })
    }

    /// The number of the tenant's last event (0 before the first, or for an unknown tenant).
    pub fn last_tenant_seq(&self, tenant: &str) -> Result<i64, StoreError> {
        let mut guard = self.conn()?;
        let row = guard
            .client
            .query_opt("SELECT event_seq FROM tenants WHERE name = $1", &[&tenant])?;
        Ok(match row {
            Some(r) => r.try_get(0)?,
            None => 0,
        })
    }
}
