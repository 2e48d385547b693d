//! The token store: access tokens, refresh tokens, authorization codes and pending
//! authorizations, with minting, checking, expiring and revoking. Who may call which route
//! (the bearer check, the scopes) is `auth`'s job.

use rand::Rng;
use std::collections::HashMap;

pub(crate) struct AccessToken {
    pub scopes: Vec<String>,
    pub expires_at: i64,
    pub refresh: Option<String>,
    pub revoked: bool,
}

pub(crate) struct RefreshToken {
    pub scopes: Vec<String>,
    pub client_id: String,
    pub revoked: bool,
}

pub(crate) struct AuthCode {
    pub client_id: String,
    pub redirect_uri: Option<String>,
    /// (method, challenge) when the authorization used PKCE.
    pub pkce: Option<(String, String)>,
    pub scopes: Vec<String>,
    pub offline: bool,
    pub expires_at: i64,
}

/// An authorization waiting for the user's decision (when `auto_approve` is off).
pub(crate) struct PendingAuth {
    pub redirect_uri: Option<String>,
    pub state: Option<String>,
    pub code: AuthCode,
}

#[derive(Default)]
pub(crate) struct Tokens {
    pub access: HashMap<String, AccessToken>,
    pub refresh: HashMap<String, RefreshToken>,
    pub codes: HashMap<String, AuthCode>,
    pub pending: HashMap<String, PendingAuth>,
    /// The token `Emulator::access_token` hands out while it is valid (see `auth`).
    pub default_token: Option<String>,
}

/// Why a bearer token was refused.
pub(crate) enum Refusal {
    Invalid,
    Expired,
    MissingScope(String),
}

/// Random base64url-alphabet characters.
pub(crate) fn random_token(len: usize) -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHA[rng.random_range(0..ALPHA.len())] as char)
        .collect()
}

impl Tokens {
    pub fn mint_access(
        &mut self,
        scopes: Vec<String>,
        expires_at: i64,
        refresh: Option<String>,
    ) -> String {
        let token = format!("sl.{}", random_token(120));
        self.access.insert(
            token.clone(),
            AccessToken {
                scopes,
                expires_at,
                refresh,
                revoked: false,
            },
        );
        token
    }

    pub fn mint_refresh(&mut self, scopes: Vec<String>, client_id: &str) -> String {
        let token = random_token(64);
        self.refresh.insert(
            token.clone(),
            RefreshToken {
                scopes,
                client_id: client_id.to_string(),
                revoked: false,
            },
        );
        token
    }

    pub fn check(&self, token: &str, now: i64, scope: Option<&str>) -> Result<(), Refusal> {
        let t = self
            .access
            .get(token)
            .filter(|t| !t.revoked)
            .ok_or(Refusal::Invalid)?;
        if now >= t.expires_at {
            return Err(Refusal::Expired);
        }
        if let Some(s) = scope
            && !t.scopes.iter().any(|x| x == s)
        {
            return Err(Refusal::MissingScope(s.to_string()));
        }
        Ok(())
    }

    pub fn expire_all(&mut self, now: i64) {
        for t in self.access.values_mut() {
            t.expires_at = t.expires_at.min(now - 1);
        }
    }

    pub fn revoke_all(&mut self) {
        self.access.values_mut().for_each(|t| t.revoked = true);
        self.refresh.values_mut().for_each(|t| t.revoked = true);
    }

    /// `auth/token/revoke`: the token, its refresh token and every access token minted from it.
    pub fn revoke(&mut self, token: &str) {
        let refresh = self.access.get_mut(token).and_then(|t| {
            t.revoked = true;
            t.refresh.clone()
        });
        if let Some(r) = refresh {
            if let Some(rt) = self.refresh.get_mut(&r) {
                rt.revoked = true;
            }
            for t in self.access.values_mut() {
                if t.refresh.as_deref() == Some(r.as_str()) {
                    t.revoked = true;
                }
            }
        }
    }
}
