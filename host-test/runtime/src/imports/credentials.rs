//! `credentials`: the guest may ask for a refresh, never for a token.

use crate::bindings::credentials::{Host, RefreshError};
use crate::credentials::CredentialError;
use crate::runtime::TenantState;

impl Host for TenantState {
    fn refresh_access_token(&mut self) -> Result<(), RefreshError> {
        self.stats.host_calls += 1;
        self.touch();
        let services = self.tenant.services.clone();
        let current = services
            .store
            .credentials(&self.tenant.tenant)
            .ok()
            .flatten()
            .map(|c| c.access_token);
        let result = services.credentials.refresh(
            &self.tenant.tenant,
            &services.http,
            &services.policy,
            current.as_deref(),
        );
        self.touch();
        match result {
            Ok(_) => Ok(()),
            Err(CredentialError::Transient(m)) => Err(RefreshError::Transient(m)),
            Err(CredentialError::Storage(m)) => Err(RefreshError::Transient(m)),
            Err(e @ (CredentialError::Missing(_) | CredentialError::ReauthRequired(_))) => {
                Err(RefreshError::ReauthenticationRequired(e.to_string()))
            }
        }
    }
}
