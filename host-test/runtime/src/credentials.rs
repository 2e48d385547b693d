//! The tenant's OAuth credentials, held by the host only.
//!
//! The guest never sees a token: the `http` import attaches the current access token to
//! authenticated requests, and the `credentials` import can only ask for a refresh. Refresh
//! happens proactively shortly before expiry and on request after a 401
//! `expired_access_token`; a refused refresh token (`invalid_grant`) marks the tenant as needing
//! re-authentication and is never retried in a loop.
//!
//! A token may also be given for one run only ([`RunTokens`]: an access token in the environment for
//! `host-test sync`, an `access_token` in a `watch` tenants file for a tenant that already has
//! credentials). It lives in the host's memory and is never written to the store, and it never
//! stands in for stored credentials that carry a refresh token: those always win. Otherwise (no
//! stored credentials, or only a bare access token) it is the token attached for the run; it is
//! never refreshed, and the stored row is left exactly as it was.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use crate::http::HttpClient;
use crate::policy::NetPolicy;
use crate::store::{RecordStore, StoreError, StoredCredentials};

/// Refresh this long before the token's expiry (the official SDKs use the same margin).
pub const REFRESH_MARGIN_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CredentialError {
    #[error("no credentials are stored for tenant {0}; connect the account first")]
    Missing(String),
    #[error("re-authentication required: {0}")]
    ReauthRequired(String),
    #[error("token refresh failed: {0}")]
    Transient(String),
    #[error("credential storage failed: {0}")]
    Storage(String),
}

impl From<StoreError> for CredentialError {
    fn from(e: StoreError) -> Self {
        CredentialError::Storage(e.to_string())
    }
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    error: String,
}

/// Access tokens given for one run, by tenant: held in memory only, shared by every
/// [`CredentialManager`] of a host (a tenant whose requests go to another base URL has a
/// manager of its own), and gone with the process. See the module documentation for when one
/// is used.
#[derive(Default)]
pub struct RunTokens {
    tokens: Mutex<HashMap<String, String>>,
}

impl RunTokens {
    pub fn set(&self, tenant: &str, token: String) {
        self.lock().insert(tenant.to_string(), token);
    }

    pub fn remove(&self, tenant: &str) {
        self.lock().remove(tenant);
    }

    pub fn get(&self, tenant: &str) -> Option<String> {
        self.lock().get(tenant).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The rule for a token given for one run: stored credentials with a refresh token win;
/// otherwise the run's token, when there is one, is the one to attach.
fn run_token_for(
    run_tokens: &RunTokens,
    tenant: &str,
    stored: Option<&StoredCredentials>,
) -> Option<String> {
    if stored.is_some_and(|c| c.refresh_token.is_some()) {
        return None;
    }
    run_tokens.get(tenant)
}

pub struct CredentialManager {
    store: Arc<dyn RecordStore>,
    token_url: String,
    run_tokens: Arc<RunTokens>,
    /// One refresh at a time per tenant: concurrent callers wait and reuse its result.
    refresh_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl CredentialManager {
    pub fn new(store: Arc<dyn RecordStore>, token_url: String) -> CredentialManager {
        CredentialManager::with_run_tokens(store, token_url, Arc::default())
    }

    /// A manager that also attaches the tokens given for one run in `run_tokens`.
    pub fn with_run_tokens(
        store: Arc<dyn RecordStore>,
        token_url: String,
        run_tokens: Arc<RunTokens>,
    ) -> CredentialManager {
        CredentialManager {
            store,
            token_url,
            run_tokens,
            refresh_locks: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the tenant's requests carry a token given for this run rather than stored
    /// credentials.
    pub fn run_token_in_force(&self, tenant: &str) -> Result<bool, StoreError> {
        let stored = self.store.credentials(tenant)?;
        Ok(run_token_for(&self.run_tokens, tenant, stored.as_ref()).is_some())
    }

    /// The access token to attach now, refreshed first when it is about to expire: the stored
    /// one, or a token given for this run (see the module documentation).
    pub fn access_token(
        &self,
        tenant: &str,
        http: &HttpClient,
        policy: &NetPolicy,
    ) -> Result<String, CredentialError> {
        let stored = self.store.credentials(tenant)?;
        if let Some(token) = run_token_for(&self.run_tokens, tenant, stored.as_ref()) {
            return Ok(token);
        }
        let creds = stored.ok_or_else(|| CredentialError::Missing(tenant.into()))?;
        let expiring = creds
            .expires_at
            .is_some_and(|at| at - now() <= REFRESH_MARGIN_SECS);
        if expiring && creds.refresh_token.is_some() {
            match self.refresh(tenant, http, policy, Some(&creds.access_token)) {
                Ok(token) => return Ok(token),
                // A transient failure keeps the old token while it is still valid.
                Err(CredentialError::Transient(_))
                    if creds.expires_at.is_some_and(|at| at > now()) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(creds.access_token)
    }

    /// Exchange the refresh token for a new access token. `seen_token` is the token the caller
    /// found expired: when another thread already replaced it, that result is reused instead of
    /// refreshing again. A token given for this run is never refreshed: its refusal ends the
    /// run, and nothing is written.
    pub fn refresh(
        &self,
        tenant: &str,
        http: &HttpClient,
        policy: &NetPolicy,
        seen_token: Option<&str>,
    ) -> Result<String, CredentialError> {
        let lock = {
            let mut locks = self.refresh_locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(tenant.to_string()).or_default().clone()
        };
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let stored = self.store.credentials(tenant)?;
        if run_token_for(&self.run_tokens, tenant, stored.as_ref()).is_some() {
            return Err(CredentialError::ReauthRequired(
                "the access token given for this run was refused, and it cannot be refreshed; \
                 store credentials with host-test auth or host-test connect"
                    .into(),
            ));
        }
        let creds = stored.ok_or_else(|| CredentialError::Missing(tenant.into()))?;
        if let Some(seen) = seen_token
            && seen != creds.access_token
        {
            return Ok(creds.access_token);
        }
        // Once refused, a refresh token stays refused: asking again on every run would only
        // load the token endpoint. Authorizing again stores new credentials and clears the flag.
        if self.store.status(tenant)?.needs_reauth {
            return Err(CredentialError::ReauthRequired(
                "the tenant must be authorized again (host-test auth)".into(),
            ));
        }
        let Some(refresh_token) = creds.refresh_token.clone() else {
            self.store.set_needs_reauth(tenant, true)?;
            return Err(CredentialError::ReauthRequired(
                "the access token expired and no refresh token is stored".into(),
            ));
        };
        if self.token_url.is_empty() {
            // A connector whose manifest declares no OAuth: its token was given directly, and
            // only a new one can replace it.
            self.store.set_needs_reauth(tenant, true)?;
            return Err(CredentialError::ReauthRequired(
                "this connector has no OAuth token endpoint: give a new access token".into(),
            ));
        }
        let mut form = vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", refresh_token),
        ];
        // The same client authentication as the code exchange (the contract's rule).
        let headers = match &creds.client_id {
            Some(id) => {
                crate::oauth::token_request_auth(id, creds.client_secret.as_deref(), &mut form)
            }
            None => crate::oauth::token_request_auth_none(),
        };
        let body = form_encode(&form);
        let url = policy.rewrite(&self.token_url);
        let response = http
            .send("POST", &url, &headers, body.into_bytes(), None)
            .map_err(|e| CredentialError::Transient(e.to_string()))?;
        if response.status == 200 {
            // One parser for every token response the host reads (code exchange and refresh).
            let parsed = crate::oauth::TokenResponse::parse(&response.body).map_err(|e| {
                CredentialError::Transient(format!("unreadable token response: {e}"))
            })?;
            let updated = StoredCredentials {
                access_token: parsed.access_token.clone(),
                refresh_token: parsed.refresh_token.or(creds.refresh_token),
                expires_at: parsed.expires_in.map(|s| now() + s),
                ..creds
            };
            self.store.put_credentials(tenant, &updated)?;
            return Ok(parsed.access_token);
        }
        // The code is quoted in the error below; an endpoint that echoes the request could
        // put the refresh token, the client secret or the Basic header carrying it in it.
        let credentials = crate::oauth::authorization_values(&headers);
        let mut secrets = vec![creds.access_token.as_str()];
        secrets.extend(creds.refresh_token.as_deref());
        secrets.extend(creds.client_secret.as_deref());
        secrets.extend(credentials.iter().map(String::as_str));
        let error = serde_json::from_slice::<OAuthErrorBody>(&response.body)
            .map(|b| crate::oauth::excerpt(&b.error, &secrets, 64))
            .unwrap_or_default();
        if response.status == 400 && (error == "invalid_grant" || error == "invalid_client") {
            self.store.set_needs_reauth(tenant, true)?;
            return Err(CredentialError::ReauthRequired(format!(
                "the token endpoint refused the refresh ({error})"
            )));
        }
        Err(CredentialError::Transient(format!(
            "token endpoint answered {} {}",
            response.status, error
        )))
    }
}

pub fn form_encode(pairs: &[(&str, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
        .finish()
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
