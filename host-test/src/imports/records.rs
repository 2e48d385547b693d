//! `records`: the tenant's partition of the store. The tenant comes from the instance's state.

use std::time::Instant;

use crate::bindings::records::{ApplySummary, Change, Host, StoreError, StoredRecord, SyncPoint};
use crate::bindings::types::{Permission, Record, RecordGroup, User};
use crate::runtime::TenantState;
use crate::store::StoreError as DbError;

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
        f: impl FnOnce(&crate::store::RecordStore, &str) -> Result<T, DbError>,
    ) -> Result<T, StoreError> {
        self.stats.host_calls += 1;
        self.touch();
        let started = Instant::now();
        let result = f(&self.tenant.services.store, &self.tenant.tenant).map_err(to_wit);
        self.stats.store_time += started.elapsed();
        self.touch();
        result
    }
}

impl Host for TenantState {
    fn apply(
        &mut self,
        changes: Vec<Change>,
        sync_point: Option<SyncPoint>,
    ) -> Result<ApplySummary, StoreError> {
        self.timed(|store, tenant| store.apply(tenant, &changes, sync_point.as_ref()))
    }

    fn get_sync_point(&mut self, key: String) -> Result<Option<String>, StoreError> {
        self.timed(|store, tenant| store.get_sync_point(tenant, &key))
    }

    fn get_records(&mut self, external_ids: Vec<String>) -> Result<Vec<StoredRecord>, StoreError> {
        self.timed(|store, tenant| store.get_records(tenant, &external_ids))
    }

    fn find_by_paths(
        &mut self,
        paths_lower: Vec<String>,
    ) -> Result<Vec<Option<Record>>, StoreError> {
        self.timed(|store, tenant| store.find_by_paths(tenant, &paths_lower))
    }

    fn list_shared(&mut self) -> Result<Vec<Record>, StoreError> {
        self.timed(|store, tenant| store.list_shared(tenant))
    }

    fn list_subtree(
        &mut self,
        path_lower: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<Record>, StoreError> {
        self.timed(|store, tenant| store.list_subtree(tenant, &path_lower, after.as_deref(), limit))
    }

    fn put_owner(
        &mut self,
        owner: User,
        group: RecordGroup,
        permissions: Vec<Permission>,
    ) -> Result<(), StoreError> {
        self.timed(|store, tenant| store.put_owner(tenant, &owner, &group, &permissions))
    }

    fn clear(&mut self) -> Result<(), StoreError> {
        self.timed(|store, tenant| store.clear(tenant))
    }
}
