//! OAuth 2: the authorization page, the token endpoint, and `auth/token/revoke`
//! (DROPBOX-API.md §7). Codes are single-use and short-lived; PKCE S256 (and plain) is checked;
//! refresh returns a new access token only.

use super::{ApiResult, Ctx};
use crate::auth::{ALL_SCOPES, KNOWN_SCOPES};
use crate::http::{Request, Response};
use crate::shared::Shared;
use crate::tokens::{AuthCode, PendingAuth, random_token};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Authorization codes expire quickly.
const CODE_TTL: i64 = 600;

fn html(status: u16, body: &str) -> Response {
    Response::text(
        status,
        format!("<!DOCTYPE html><html><body>{body}</body></html>"),
    )
    .header("Content-Type", "text/html; charset=utf-8")
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Loopback redirect URIs need no registration; anything else must be HTTPS.
fn redirect_allowed(uri: &str) -> bool {
    let Ok(u) = url::Url::parse(uri) else {
        return false;
    };
    match u.scheme() {
        "https" => true,
        "http" => matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]")),
        _ => false,
    }
}

fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut u = match url::Url::parse(uri) {
        Ok(u) => u,
        Err(_) => return uri.to_string(),
    };
    {
        let mut q = u.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    u.to_string()
}

/// Hand the code to the client: a redirect, or (no redirect_uri) a page showing it.
fn deliver_code(
    shared: &Shared,
    redirect_uri: Option<&str>,
    state: Option<&str>,
    code: AuthCode,
) -> Response {
    let value = random_token(43);
    shared.tokens().codes.insert(value.clone(), code);
    match redirect_uri {
        Some(uri) => {
            let mut params = vec![("code", value.as_str())];
            if let Some(s) = state {
                params.push(("state", s));
            }
            Response::new(302).header("Location", &with_query(uri, &params))
        }
        None => html(
            200,
            &format!("<p>Enter this code into your app:</p><code id=\"code\">{value}</code>"),
        ),
    }
}

/// GET /oauth2/authorize
pub(crate) fn authorize(shared: &Shared, req: &Request) -> Response {
    if req.method != "GET" {
        return html(405, "Method not allowed");
    }
    let cfg = &shared.cfg;
    let q = |k: &str| req.query(k).filter(|v| !v.is_empty());
    if q("client_id") != Some(cfg.client_id.as_str()) {
        return html(400, "Invalid client_id.");
    }
    match q("response_type") {
        Some("code") => {}
        Some(other) => {
            return html(
                400,
                &format!("Unsupported response_type: {}", escape_html(other)),
            );
        }
        None => return html(400, "Missing response_type."),
    }
    let redirect_uri = q("redirect_uri");
    if let Some(r) = redirect_uri
        && !redirect_allowed(r)
    {
        return html(
            400,
            &format!(
                "Invalid redirect_uri: \"{}\". It must exactly match one of the redirect URIs you've pre-configured for your app (including the path).",
                escape_html(r)
            ),
        );
    }
    let pkce = match (q("code_challenge"), q("code_challenge_method")) {
        (None, _) => None,
        (Some(c), None | Some("S256")) => Some(("S256".to_string(), c.to_string())),
        (Some(c), Some("plain")) => Some(("plain".to_string(), c.to_string())),
        (Some(_), Some(m)) => {
            return html(
                400,
                &format!("Invalid code_challenge_method: {}", escape_html(m)),
            );
        }
    };
    let scopes: Vec<String> = match q("scope") {
        None => ALL_SCOPES.iter().map(|s| s.to_string()).collect(),
        Some(list) => {
            let requested: Vec<String> = list.split_whitespace().map(str::to_string).collect();
            if let Some(bad) = requested
                .iter()
                .find(|s| !KNOWN_SCOPES.contains(&s.as_str()))
            {
                return html(400, &format!("Invalid scope: {}", escape_html(bad)));
            }
            requested
        }
    };
    let offline = match q("token_access_type") {
        None | Some("offline") => true,
        Some("online" | "legacy") => false,
        Some(other) => {
            return html(
                400,
                &format!("Invalid token_access_type: {}", escape_html(other)),
            );
        }
    };
    let code = AuthCode {
        client_id: cfg.client_id.clone(),
        redirect_uri: redirect_uri.map(str::to_string),
        pkce,
        scopes,
        offline,
        expires_at: shared.now() + CODE_TTL,
    };
    let state = q("state");
    if cfg.auto_approve {
        return deliver_code(shared, redirect_uri, state, code);
    }
    let id = random_token(24);
    shared.tokens().pending.insert(
        id.clone(),
        PendingAuth {
            redirect_uri: redirect_uri.map(str::to_string),
            state: state.map(str::to_string),
            code,
        },
    );
    html(
        200,
        &format!(
            "<p>Allow this app to access your Dropbox?</p><a id=\"allow\" href=\"/oauth2/authorize/decide?request={id}&amp;approve=true\">Allow</a> <a id=\"deny\" href=\"/oauth2/authorize/decide?request={id}&amp;approve=false\">Cancel</a>"
        ),
    )
}

/// GET /oauth2/authorize/decide?request=..&approve=true|false (the approval page's buttons).
pub(crate) fn decide(shared: &Shared, req: &Request) -> Response {
    let Some(p) = req
        .query("request")
        .and_then(|id| shared.tokens().pending.remove(id))
    else {
        return html(400, "Unknown or expired authorization request.");
    };
    if req.query("approve") == Some("true") {
        return deliver_code(
            shared,
            p.redirect_uri.as_deref(),
            p.state.as_deref(),
            p.code,
        );
    }
    match p.redirect_uri {
        Some(uri) => {
            let mut params = vec![
                ("error", "access_denied"),
                (
                    "error_description",
                    "The user chose not to give your app access to their Dropbox account.",
                ),
            ];
            if let Some(s) = p.state.as_deref() {
                params.push(("state", s));
            }
            Response::new(302).header("Location", &with_query(&uri, &params))
        }
        None => html(200, "Access denied."),
    }
}

fn token_error(error: &str, description: &str) -> Response {
    Response::json_value(
        400,
        &json!({"error": error, "error_description": description}),
    )
}

/// POST /oauth2/token (form-encoded; client credentials by Basic header or form fields).
pub(crate) fn token(shared: &Shared, req: &Request) -> Response {
    if req.method != "POST" {
        return Response::text(405, "Method Not Allowed").header("Allow", "POST");
    }
    let ct = req
        .header_str("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    if !req.body.is_empty() && !ct.starts_with("application/x-www-form-urlencoded") {
        return token_error(
            "invalid_request",
            "Content-Type must be application/x-www-form-urlencoded",
        );
    }
    // Parameters may come in the body or, as some clients do, in the query string.
    let mut params: Vec<(String, String)> = url::form_urlencoded::parse(&req.body)
        .into_owned()
        .collect();
    params.extend(req.query.iter().cloned());
    let param = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    // Client authentication.
    let basic = req.header_str("authorization").and_then(|h| {
        let (scheme, b64) = h.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let raw = STANDARD.decode(b64.trim()).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (id, secret) = text.split_once(':')?;
        Some((id.to_string(), secret.to_string()))
    });
    if req.header("authorization").is_some() && basic.is_none() {
        return token_error(
            "invalid_client",
            "Invalid Authorization header; expecting HTTP Basic client credentials",
        );
    }
    if shared.cfg.token_requires_basic && basic.is_none() && param("client_secret").is_some() {
        return token_error(
            "invalid_client",
            "this server takes client credentials with HTTP Basic only",
        );
    }
    let (client_id, secret) = match &basic {
        Some((id, s)) => (Some(id.as_str()), Some(s.as_str())),
        None => (param("client_id"), param("client_secret")),
    };
    let cfg = &shared.cfg;
    let Some(client_id) = client_id else {
        return token_error("invalid_request", "No client_id provided");
    };
    if client_id != cfg.client_id || secret.is_some_and(|s| s != cfg.client_secret) {
        return token_error("invalid_client", "Invalid client_id or client_secret");
    }
    let now = shared.now();
    let expires_in = cfg.token_expires_in;
    match param("grant_type") {
        None => token_error("invalid_request", "No grant_type provided"),
        Some("authorization_code") => {
            let Some(code_value) = param("code") else {
                return token_error("invalid_request", "No code provided");
            };
            let mut tokens = shared.tokens();
            // Single use: the code is consumed by the first attempt, successful or not.
            let Some(code) = tokens
                .codes
                .remove(code_value)
                .filter(|c| c.expires_at > now)
            else {
                return token_error("invalid_grant", "code doesn't exist or has expired");
            };
            if code.client_id != client_id {
                return token_error("invalid_grant", "code was issued to another client");
            }
            if code.redirect_uri.is_some() && code.redirect_uri.as_deref() != param("redirect_uri")
            {
                return token_error("invalid_grant", "redirect_uri mismatch");
            }
            match &code.pkce {
                Some((method, challenge)) => {
                    let Some(verifier) = param("code_verifier") else {
                        return token_error(
                            "invalid_grant",
                            "code_verifier is required for this code",
                        );
                    };
                    let computed = if method == "plain" {
                        verifier.to_string()
                    } else {
                        URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
                    };
                    if &computed != challenge {
                        return token_error("invalid_grant", "invalid code verifier");
                    }
                }
                None if secret.is_none() => {
                    return token_error("invalid_client", "No client_secret provided");
                }
                None => {}
            }
            let refresh = code
                .offline
                .then(|| tokens.mint_refresh(code.scopes.clone(), client_id));
            let access = tokens.mint_access(
                code.scopes.clone(),
                now + expires_in as i64,
                refresh.clone(),
            );
            let mut body = json!({
                "access_token": access,
                "token_type": "bearer",
                "expires_in": expires_in,
                "scope": code.scopes.join(" "),
                "uid": shared.account.uid,
                "account_id": shared.account.account_id,
            });
            if let Some(r) = refresh {
                body["refresh_token"] = json!(r);
            }
            Response::json_value(200, &body)
        }
        Some("refresh_token") => {
            let Some(rt) = param("refresh_token") else {
                return token_error("invalid_request", "No refresh_token provided");
            };
            let mut tokens = shared.tokens();
            let scopes = match tokens.refresh.get(rt) {
                Some(r) if !r.revoked && r.client_id == client_id => r.scopes.clone(),
                Some(_) => {
                    return token_error("invalid_grant", "refresh token is invalid or revoked");
                }
                None if !rt
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    || rt.len() < 16 =>
                {
                    return token_error("invalid_grant", "refresh token is malformed");
                }
                None => return token_error("invalid_grant", "refresh token is invalid or revoked"),
            };
            let scopes = match param("scope") {
                None => scopes,
                Some(list) => {
                    let want: Vec<String> = list.split_whitespace().map(str::to_string).collect();
                    if want.iter().any(|s| !scopes.contains(s)) {
                        return token_error(
                            "invalid_scope",
                            "requested scope exceeds the granted scope",
                        );
                    }
                    want
                }
            };
            let access = tokens.mint_access(
                scopes.clone(),
                now + expires_in as i64,
                Some(rt.to_string()),
            );
            Response::json_value(
                200,
                &json!({"access_token": access, "token_type": "bearer", "expires_in": expires_in, "scope": scopes.join(" ")}),
            )
        }
        Some(other) => token_error(
            "unsupported_grant_type",
            &format!("grant_type \"{other}\" is not supported"),
        ),
    }
}

/// POST /2/auth/token/revoke: the token, its refresh token and sibling access tokens die.
pub(crate) fn revoke(ctx: &Ctx, _arg: &Value) -> ApiResult {
    if let Some(t) = &ctx.token {
        ctx.shared.tokens().revoke(t);
    }
    Ok(Response::json_bytes(200, b"null".to_vec()))
}
