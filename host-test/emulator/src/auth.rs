//! Who may call: access tokens, refresh tokens, authorization codes and scopes.
//!
//! Kept apart from the OAuth routes so that the bearer check every user route runs (with its
//! exact 400/401 answers, DROPBOX-API.md §7.6) and the token lifecycle live in one small place.

use crate::server::{Request, Response};
use crate::wire::{auth_error, bad_request};
use crate::{Shared, TokenPair};
use rand::Rng;
use std::collections::HashMap;

/// The five scopes the connector needs (route scopes of DROPBOX-API.md §7.1, §1.8).
pub(crate) const ALL_SCOPES: [&str; 5] = [
    "account_info.read",
    "files.metadata.read",
    "files.content.read",
    "sharing.read",
    "sharing.write",
];

/// Scopes an authorization request may name (the read-only five plus common write scopes).
pub(crate) const KNOWN_SCOPES: [&str; 8] = [
    "account_info.read",
    "files.metadata.read",
    "files.content.read",
    "sharing.read",
    "sharing.write",
    "files.metadata.write",
    "files.content.write",
    "account_info.write",
];

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
    default_token: Option<String>,
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

/// Short-lived tokens look like "sl." + base64url; anything else is "malformed" (a 400).
pub(crate) fn well_formed(token: &str) -> bool {
    token.strip_prefix("sl.").is_some_and(|t| {
        t.len() >= 20
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
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

fn scopes_of(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub(crate) fn default_access_token(shared: &Shared) -> String {
    let now = shared.now();
    let mut t = shared.tokens();
    if let Some(tok) = t.default_token.clone()
        && t.check(&tok, now, None).is_ok()
    {
        return tok;
    }
    let expires = now + shared.cfg.token_expires_in as i64;
    let refresh = t.mint_refresh(scopes_of(&ALL_SCOPES), &shared.cfg.client_id);
    let tok = t.mint_access(scopes_of(&ALL_SCOPES), expires, Some(refresh));
    t.default_token = Some(tok.clone());
    tok
}

pub(crate) fn issue_pair(shared: &Shared, scopes: &[&str], expires_in: u64) -> TokenPair {
    let now = shared.now();
    let mut t = shared.tokens();
    let refresh = t.mint_refresh(scopes_of(scopes), &shared.cfg.client_id);
    let access = t.mint_access(
        scopes_of(scopes),
        now + expires_in as i64,
        Some(refresh.clone()),
    );
    TokenPair {
        access_token: access,
        refresh_token: refresh,
        expires_in,
    }
}

/// The bearer check of a user route; returns the token, or the exact refusal response.
pub(crate) fn check_bearer(
    shared: &Shared,
    req: &Request,
    route: &str,
    scope: Option<&str>,
) -> Result<String, Response> {
    let value = match (req.header("authorization"), req.query("authorization")) {
        (Some(h), _) => String::from_utf8_lossy(h).into_owned(),
        (None, Some(q)) => q.to_string(),
        (None, None) => {
            return Err(bad_request(
                route,
                "Must provide HTTP header \"Authorization\" or URL parameter \"authorization\".",
            ));
        }
    };
    let token = match value.split_once(' ') {
        Some((scheme, tok)) if scheme.eq_ignore_ascii_case("bearer") && !tok.trim().is_empty() => {
            tok.trim().to_string()
        }
        _ => {
            return Err(bad_request(
                route,
                &format!(
                    "Invalid authorization value in HTTP header \"Authorization\": \"{value}\".  Expecting \"Bearer <oauth2-access-token>\"."
                ),
            ));
        }
    };
    if !well_formed(&token) {
        return Err(bad_request(
            route,
            "The given OAuth 2 access token is malformed.",
        ));
    }
    match shared.tokens().check(&token, shared.now(), scope) {
        Ok(()) => Ok(token),
        Err(Refusal::Invalid) => Err(auth_error("invalid_access_token", None)),
        Err(Refusal::Expired) => Err(auth_error("expired_access_token", None)),
        Err(Refusal::MissingScope(s)) => Err(auth_error("missing_scope", Some(&s))),
    }
}
