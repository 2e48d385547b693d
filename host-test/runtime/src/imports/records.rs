//! `records` and `paths`: the tenant's partition of the store. The tenant comes from the
//! instance's state; the WIT types are converted to the store's own (`convert`).
//!
//! Every list these calls take or return holds at most [`MAX_LIST_ITEMS`] items, and asking
//! for more is `store-error.invalid`, never a shorter list: a connector pages through a
//! listing until a short page, so a list cut to the cap would end its walk early.

use std::time::Instant;

use super::convert;
use crate::bindings::records::{ApplySummary, Change, Host, StoreError, StoredRecord, SyncPoint};
use crate::bindings::types::{Permission, Record, RecordGroup, User};
use crate::runtime::{MAX_LIST_ITEMS, TenantState};
use crate::store::{RecordStore, StoreError as DbError};

fn to_wit(e: DbError) -> StoreError {
    match e {
        DbError::Conflict(m) => StoreError::Conflict(m),
        DbError::Invalid(m) => StoreError::Invalid(m),
        other => StoreError::Storage(other.to_string()),
    }
}

impl TenantState {
    fn timed<T>(
        &mut self,
        f: impl FnOnce(&dyn RecordStore, &str) -> Result<T, DbError>,
    ) -> Result<T, StoreError> {
        self.stats.host_calls += 1;
        self.touch();
        let started = Instant::now();
        let result = f(self.tenant.services.store.as_ref(), &self.tenant.tenant).map_err(to_wit);
        self.stats.store_time += started.elapsed();
        self.touch();
        result
    }
}

/// `Err(invalid)` when a list of `what` holds `n` items, more than a call may carry.
fn within_cap(what: &str, n: usize) -> Result<(), StoreError> {
    if n > MAX_LIST_ITEMS {
        return Err(StoreError::Invalid(format!(
            "{n} {what} in one call: at most {MAX_LIST_ITEMS} (host.limits); nothing was done"
        )));
    }
    Ok(())
}

impl TenantState {
    /// A refused call still counts as a call (and as progress).
    fn refused<T>(&mut self, error: StoreError) -> Result<T, StoreError> {
        self.stats.host_calls += 1;
        self.touch();
        Err(error)
    }
}

fn records_to_wit(records: Vec<crate::store::Record>) -> Vec<Record> {
    records.into_iter().map(convert::record_to_wit).collect()
}

impl Host for TenantState {
    fn apply(
        &mut self,
        changes: Vec<Change>,
        sync_point: Option<SyncPoint>,
    ) -> Result<ApplySummary, StoreError> {
        if let Err(e) = within_cap("changes", changes.len()) {
            return self.refused(e);
        }
        let changes: Vec<_> = changes.into_iter().map(convert::change_from_wit).collect();
        let sync_point = sync_point.map(convert::sync_point_from_wit);
        self.timed(|store, tenant| store.apply(tenant, &changes, sync_point.as_ref()))
            .map(convert::apply_summary_to_wit)
    }

    fn get_sync_point(&mut self) -> Result<Option<String>, StoreError> {
        self.timed(|store, tenant| store.get_sync_point(tenant))
    }

    fn get_records(&mut self, external_ids: Vec<String>) -> Result<Vec<StoredRecord>, StoreError> {
        if let Err(e) = within_cap("ids", external_ids.len()) {
            return self.refused(e);
        }
        let stored = self.timed(|store, tenant| store.get_records(tenant, &external_ids))?;
        Ok(stored
            .into_iter()
            .map(|s| StoredRecord {
                record: convert::record_to_wit(s.record),
                pending_removal: s.pending_removal,
            })
            .collect())
    }

    fn list_records(
        &mut self,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<Record>, StoreError> {
        if let Err(e) = within_cap("records asked for", limit as usize) {
            return self.refused(e);
        }
        self.timed(|store, tenant| store.list_records(tenant, after.as_deref(), limit))
            .map(records_to_wit)
    }

    fn list_shared(&mut self) -> Result<Vec<Record>, StoreError> {
        // One more than the cap, to tell "exactly the cap" from "more".
        let shared =
            self.timed(|store, tenant| store.list_shared(tenant, MAX_LIST_ITEMS as u32 + 1))?;
        if shared.len() > MAX_LIST_ITEMS {
            return Err(StoreError::Invalid(format!(
                "more than {MAX_LIST_ITEMS} shared records: list-shared returns at most {MAX_LIST_ITEMS} (host.limits)"
            )));
        }
        Ok(records_to_wit(shared))
    }

    fn put_owner(
        &mut self,
        owner: User,
        group: RecordGroup,
        permissions: Vec<Permission>,
    ) -> Result<(), StoreError> {
        if let Err(e) = within_cap("permissions", permissions.len()) {
            return self.refused(e);
        }
        let owner = convert::user_from_wit(owner);
        let group = convert::group_from_wit(group);
        let permissions: Vec<_> = permissions
            .into_iter()
            .map(convert::permission_from_wit)
            .collect();
        self.timed(|store, tenant| store.put_owner(tenant, &owner, &group, &permissions))
    }

    fn clear(&mut self) -> Result<(), StoreError> {
        self.timed(|store, tenant| store.clear(tenant))
    }
}

impl crate::bindings::paths::Host for TenantState {
    fn find_by_paths(
        &mut self,
        paths_lower: Vec<String>,
    ) -> Result<Vec<Option<Record>>, StoreError> {
        if let Err(e) = within_cap("paths", paths_lower.len()) {
            return self.refused(e);
        }
        let found = self.timed(|store, tenant| store.find_by_paths(tenant, &paths_lower))?;
        Ok(found
            .into_iter()
            .map(|r| r.map(convert::record_to_wit))
            .collect())
    }

    fn list_subtree(
        &mut self,
        path_lower: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<Record>, StoreError> {
        if let Err(e) = within_cap("records asked for", limit as usize) {
            return self.refused(e);
        }
        self.timed(|store, tenant| store.list_subtree(tenant, &path_lower, after.as_deref(), limit))
            .map(records_to_wit)
    }
}
