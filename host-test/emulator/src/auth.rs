//! Who may call: access tokens, refresh tokens, authorization codes and scopes.
//!
//! Kept apart from the OAuth routes so that the bearer check every user route runs (with its
//! exact 400/401 answers, DROPBOX-API.md §7.6) and the token lifecycle live in one small place.
//! The token store itself (minting, checking, expiring, revoking) is `tokens`.

use crate::http::{Request, Response};
use crate::model::TokenPair;
use crate::shared::Shared;
use crate::tokens::Refusal;
use crate::wire::{auth_error, bad_request};

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

/// Short-lived tokens look like "sl." + base64url; anything else is "malformed" (a 400).
pub(crate) fn well_formed(token: &str) -> bool {
    token.strip_prefix("sl.").is_some_and(|t| {
        t.len() >= 20
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
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
