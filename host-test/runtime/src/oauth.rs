//! Connecting an account: OAuth 2 authorization-code flow with PKCE (S256) and offline access,
//! run entirely by the host (RFC 6749 §4.1, RFC 7636).
//!
//! The pieces, each usable on its own (the CLI's `auth` command strings them together, tests
//! drive them one by one):
//! - [`AuthorizationRequest`]: the authorization URL built from the component's manifest, with a
//!   fresh `state` (CSRF) and PKCE verifier; the verifier never leaves this process except in
//!   the code exchange;
//! - [`CallbackListener`]: a one-shot HTTP listener on loopback at the manifest's redirect path
//!   that answers the browser with a small page and hands back the code once `state` matches;
//! - [`parse_pasted`]: the same for a redirect URL (or bare code) pasted by the user;
//! - [`exchange_code`]: the token endpoint call, with the verifier and client authentication;
//! - [`TokenResponse`]: the parsed answer, turned into the credentials the store keeps.
//!
//! Secrets (client secret, refresh and access tokens, the verifier) are never formatted into an
//! error or a `Debug` output: errors carry the endpoint's error code and description only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::Rng;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use url::Url;

use crate::bindings::manifest_types::OauthConfig;
use crate::credentials::{form_encode, now};
use crate::http::HttpClient;
use crate::policy::NetPolicy;
use crate::store::StoredCredentials;

/// The redirect base the CLI listens on unless told otherwise.
pub const DEFAULT_REDIRECT_BASE: &str = "http://127.0.0.1:8910";

/// RFC 7636 allows 43 to 128 characters; the longest gives the most entropy, as the official
/// SDKs do.
pub const VERIFIER_LEN: usize = 128;

/// The unreserved characters of RFC 3986, the alphabet RFC 7636 allows for a verifier.
const UNRESERVED: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";

/// A browser's request head is small; anything larger is not our callback.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// How long one browser connection may take to send its request.
const CONNECTION_READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    #[error("invalid redirect base {url}: {reason}")]
    InvalidRedirectBase { url: String, reason: String },
    #[error("invalid authorization URL {url}: {reason}")]
    InvalidAuthorizeUrl { url: String, reason: String },
    #[error("cannot listen for the callback on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("no authorization arrived within {0:?}")]
    TimedOut(Duration),
    #[error("the authorization was refused: {error}{}", describe_suffix(.description))]
    Denied { error: String, description: String },
    #[error(
        "the callback's state does not match this authorization request (a forged or stale redirect); nothing was exchanged"
    )]
    StateMismatch,
    #[error("the callback carries no authorization code")]
    MissingCode,
    #[error("nothing was pasted")]
    NothingPasted,
    #[error("the token endpoint could not be reached: {0}")]
    Transport(String),
    #[error("the token endpoint refused the request: {code}{}", describe_suffix(.description))]
    Refused {
        code: TokenErrorCode,
        description: String,
    },
    #[error("the token endpoint answered HTTP {status}: {excerpt}")]
    Endpoint { status: u16, excerpt: String },
    #[error("unreadable token response: {0}")]
    MalformedResponse(String),
    #[error("i/o error: {0}")]
    Io(String),
}

fn describe_suffix(description: &str) -> String {
    if description.is_empty() {
        String::new()
    } else {
        format!(" ({description})")
    }
}

/// The `error` of an RFC 6749 token-endpoint error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenErrorCode {
    /// Bad, expired, reused or revoked code or refresh token, or a wrong PKCE verifier.
    InvalidGrant,
    /// Unknown client id or wrong client secret.
    InvalidClient,
    InvalidRequest,
    InvalidScope,
    UnauthorizedClient,
    UnsupportedGrantType,
    Other(String),
}

impl TokenErrorCode {
    pub fn parse(code: &str) -> TokenErrorCode {
        match code {
            "invalid_grant" => TokenErrorCode::InvalidGrant,
            "invalid_client" => TokenErrorCode::InvalidClient,
            "invalid_request" => TokenErrorCode::InvalidRequest,
            "invalid_scope" => TokenErrorCode::InvalidScope,
            "unauthorized_client" => TokenErrorCode::UnauthorizedClient,
            "unsupported_grant_type" => TokenErrorCode::UnsupportedGrantType,
            other => TokenErrorCode::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            TokenErrorCode::InvalidGrant => "invalid_grant",
            TokenErrorCode::InvalidClient => "invalid_client",
            TokenErrorCode::InvalidRequest => "invalid_request",
            TokenErrorCode::InvalidScope => "invalid_scope",
            TokenErrorCode::UnauthorizedClient => "unauthorized_client",
            TokenErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            TokenErrorCode::Other(s) => s,
        }
    }
}

impl std::fmt::Display for TokenErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The registered app: client id = app key, client secret = app secret (absent for a public
/// client that relies on PKCE alone).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: Option<String>,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A fresh PKCE verifier: `VERIFIER_LEN` characters of the unreserved alphabet from the thread's
/// CSPRNG (ChaCha, seeded by the OS).
pub fn pkce_verifier() -> String {
    random_string(VERIFIER_LEN, UNRESERVED)
}

/// The S256 challenge of a verifier: base64url(SHA-256(verifier)) without padding.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A fresh `state` value: 32 alphanumeric characters (about 190 bits).
pub fn random_state() -> String {
    random_string(
        32,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    )
}

fn random_string(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

/// The redirect URI for a base URL and the manifest's redirect path. The path is used exactly as
/// the manifest declares it (already percent-encoded, e.g. `Example%20Source`), since
/// providers compare the registered URI character for character.
pub fn redirect_uri(base: &str, redirect_path: &str) -> Result<String, OAuthError> {
    let parsed = Url::parse(base).map_err(|e| OAuthError::InvalidRedirectBase {
        url: base.to_string(),
        reason: e.to_string(),
    })?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err(OAuthError::InvalidRedirectBase {
            url: base.to_string(),
            reason: "not an http(s) URL".into(),
        });
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(OAuthError::InvalidRedirectBase {
            url: base.to_string(),
            reason: "a base URL has no query or fragment".into(),
        });
    }
    Ok(format!(
        "{}/{}",
        base.trim_end_matches('/'),
        redirect_path.trim_start_matches('/')
    ))
}

/// One authorization attempt: the URL to open, and the `state` and verifier that belong to it.
pub struct AuthorizationRequest {
    /// The page the user opens (on the emulator's host when the policy redirects).
    pub url: String,
    pub redirect_uri: String,
    pub state: String,
    verifier: String,
}

impl std::fmt::Debug for AuthorizationRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationRequest")
            .field("url", &self.url)
            .field("redirect_uri", &self.redirect_uri)
            .field("state", &self.state)
            .field("verifier", &"<redacted>")
            .finish()
    }
}

impl AuthorizationRequest {
    /// Build the authorization URL from the manifest: `response_type=code`, the client id, the
    /// redirect URI, the scopes, the manifest's extra parameters (`token_access_type=offline`),
    /// a random `state` and a PKCE S256 challenge. The policy moves the URL onto an emulator
    /// when the host is pointed at one.
    pub fn new(
        oauth: &OauthConfig,
        client_id: &str,
        redirect_uri: &str,
        policy: &NetPolicy,
    ) -> Result<AuthorizationRequest, OAuthError> {
        let verifier = pkce_verifier();
        let state = random_state();
        let target = policy.rewrite(&oauth.authorize_url);
        let mut url = Url::parse(&target).map_err(|e| OAuthError::InvalidAuthorizeUrl {
            url: target.clone(),
            reason: e.to_string(),
        })?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", client_id)
                .append_pair("redirect_uri", redirect_uri);
            if !oauth.scopes.is_empty() {
                query.append_pair("scope", &oauth.scopes.join(" "));
            }
            for (name, value) in &oauth.extra_authorize_params {
                query.append_pair(name, value);
            }
            // Offline access is what makes unattended syncs possible; insist on it even if a
            // manifest forgot to ask.
            if !oauth
                .extra_authorize_params
                .iter()
                .any(|(name, _)| name == "token_access_type")
            {
                query.append_pair("token_access_type", "offline");
            }
            query
                .append_pair("state", &state)
                .append_pair("code_challenge", &pkce_challenge(&verifier))
                .append_pair("code_challenge_method", "S256");
        }
        Ok(AuthorizationRequest {
            url: url.to_string(),
            redirect_uri: redirect_uri.to_string(),
            state,
            verifier,
        })
    }

    /// Exchange the code this request's redirect delivered, with this request's verifier.
    pub fn exchange(
        &self,
        http: &HttpClient,
        token_url: &str,
        client: &ClientCredentials,
        code: &str,
    ) -> Result<TokenResponse, OAuthError> {
        exchange_code(
            http,
            token_url,
            client,
            code,
            Some(&self.redirect_uri),
            &self.verifier,
        )
    }
}

/// Extract the code from a callback's query string, refusing a `state` that is not ours.
pub fn callback_code(query: &str, expected_state: &str) -> Result<String, OAuthError> {
    let mut code = None;
    let mut state = None;
    let mut error = None;
    let mut description = String::new();
    for (name, value) in url::form_urlencoded::parse(query.trim_start_matches('?').as_bytes()) {
        match name.as_ref() {
            "code" => code = Some(value.into_owned()),
            "state" => state = Some(value.into_owned()),
            "error" => error = Some(value.into_owned()),
            "error_description" => description = value.into_owned(),
            _ => {}
        }
    }
    // The state is checked first, even for an error: a forged redirect must not be able to
    // make us report anything but a forgery.
    if !state
        .as_deref()
        .is_some_and(|s| constant_time_eq(s.as_bytes(), expected_state.as_bytes()))
    {
        return Err(OAuthError::StateMismatch);
    }
    if let Some(error) = error {
        return Err(OAuthError::Denied { error, description });
    }
    match code {
        Some(c) if !c.is_empty() => Ok(c),
        _ => Err(OAuthError::MissingCode),
    }
}

/// What the user pasted after authorizing without a listener: the whole redirect URL (its
/// `state` is checked) or the bare code the provider showed.
pub fn parse_pasted(input: &str, expected_state: &str) -> Result<String, OAuthError> {
    let input = input.trim();
    if input.is_empty() {
        return Err(OAuthError::NothingPasted);
    }
    if let Ok(url) = Url::parse(input)
        && url.scheme().starts_with("http")
    {
        return callback_code(url.query().unwrap_or(""), expected_state);
    }
    if input.starts_with('?') || input.contains("code=") || input.contains("error=") {
        return callback_code(input, expected_state);
    }
    if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(OAuthError::MissingCode);
    }
    Ok(input.to_string())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Listens on loopback at the redirect path for the browser's redirect. Requests to any other
/// path (a browser's `/favicon.ico`) get a 404, and requests with another `state` a 400; neither
/// ends the wait.
pub struct CallbackListener {
    listener: TcpListener,
    path: String,
    redirect_uri: String,
    /// The manifest's display name, in what the browser is told.
    display_name: String,
}

impl CallbackListener {
    /// Bind to the host and port of `redirect_base` (loopback only: nothing else may reach the
    /// listener). Port 0 picks a free port; the redirect URI then names the port in use.
    pub fn bind(redirect_base: &str, redirect_path: &str) -> Result<CallbackListener, OAuthError> {
        let invalid = |reason: &str| OAuthError::InvalidRedirectBase {
            url: redirect_base.to_string(),
            reason: reason.into(),
        };
        let base = Url::parse(redirect_base).map_err(|e| invalid(&e.to_string()))?;
        if base.scheme() != "http" {
            return Err(invalid(
                "the callback listener speaks plain http on loopback; use --no-listen for any other redirect URI",
            ));
        }
        let host = base
            .host_str()
            .ok_or_else(|| invalid("no host"))?
            .to_string();
        let port = base.port_or_known_default().unwrap_or(80);
        let bind_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let addrs: Vec<SocketAddr> = (bind_host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| OAuthError::Listen {
                addr: format!("{host}:{port}"),
                reason: e.to_string(),
            })?
            .collect();
        if addrs.is_empty() || !addrs.iter().all(|a| a.ip().is_loopback()) {
            return Err(invalid(
                "the callback listener only listens on loopback (127.0.0.1, [::1] or localhost)",
            ));
        }
        let listener = TcpListener::bind(&addrs[..]).map_err(|e| OAuthError::Listen {
            addr: format!("{host}:{port}"),
            reason: e.to_string(),
        })?;
        let actual = listener
            .local_addr()
            .map_err(|e| OAuthError::Io(e.to_string()))?
            .port();
        let mut base_with_port = base.clone();
        base_with_port
            .set_port(Some(actual))
            .map_err(|_| invalid("cannot set the port"))?;
        let base_text = base_with_port.as_str().trim_end_matches('/').to_string();
        let redirect_uri = redirect_uri(&base_text, redirect_path)?;
        let path = Url::parse(&redirect_uri)
            .map_err(|e| invalid(&e.to_string()))?
            .path()
            .to_string();
        Ok(CallbackListener {
            listener,
            path,
            redirect_uri,
            display_name: "the source".to_string(),
        })
    }

    /// Name the source in the pages the browser is shown (the manifest's display name).
    pub fn named(mut self, display_name: &str) -> CallbackListener {
        self.display_name = display_name.to_string();
        self
    }

    /// The redirect URI to register and to put in the authorization URL.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Wait for the redirect and return its code. A denial or a missing code in a redirect
    /// that carries this request's `state` ends the wait with that error (the browser is told
    /// so); so does the timeout. A request whose `state` is not ours (a forged or stale
    /// redirect, which any web page can trigger) is answered 400 and ignored: the wait goes on.
    pub fn wait(&self, expected_state: &str, timeout: Duration) -> Result<String, OAuthError> {
        self.listener
            .set_nonblocking(true)
            .map_err(|e| OAuthError::Io(e.to_string()))?;
        let deadline = Instant::now() + timeout;
        let (tx, rx) = mpsc::channel::<Result<String, OAuthError>>();
        loop {
            if let Ok(result) = rx.try_recv() {
                return result;
            }
            match self.listener.accept() {
                Ok((stream, _)) => {
                    // One thread per connection: a browser's speculative connection that never
                    // sends a request must not hold up the real one.
                    let tx = tx.clone();
                    let path = self.path.clone();
                    let state = expected_state.to_string();
                    let name = self.display_name.clone();
                    std::thread::spawn(move || {
                        if let Some(result) = serve_callback(stream, &path, &state, &name) {
                            let _ = tx.send(result);
                        }
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(OAuthError::TimedOut(timeout));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(OAuthError::Io(e.to_string())),
            }
        }
    }
}

/// Answer one connection. `None` when it was not a request for the callback path.
fn serve_callback(
    mut stream: TcpStream,
    path: &str,
    expected_state: &str,
    display_name: &str,
) -> Option<Result<String, OAuthError>> {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(CONNECTION_READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CONNECTION_READ_TIMEOUT));
    let head = read_head(&mut stream)?;
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let (request_path, query) = target.split_once('?').unwrap_or((target, ""));
    if method != "GET" || request_path != path {
        respond(
            &mut stream,
            404,
            "Not found",
            &format!("This address only receives the {display_name} authorization redirect."),
        );
        return None;
    }
    let result = callback_code(query, expected_state);
    if result == Err(OAuthError::StateMismatch) {
        // Not the answer to this authorization: any page the user visits can send the browser
        // here, so a stranger's request must not end (or decide) the wait. The browser is told
        // why, and the real redirect is still awaited.
        tracing::warn!(
            "ignored a request to the OAuth callback whose state is not this authorization's; still waiting"
        );
        respond(
            &mut stream,
            400,
            "Authorization failed",
            &OAuthError::StateMismatch.to_string(),
        );
        return None;
    }
    match &result {
        Ok(_) => respond(
            &mut stream,
            200,
            &format!("{display_name} is connected"),
            "The authorization was received. You can close this window and return to the terminal.",
        ),
        Err(e) => respond(&mut stream, 400, "Authorization failed", &e.to_string()),
    }
    Some(result)
}

fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST_HEAD {
            return None;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn respond(stream: &mut TcpStream, status: u16, title: &str, message: &str) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        _ => "Not Found",
    };
    let body = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{}</p></body></html>",
        escape_html(message)
    );
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The token endpoint's answer to a code exchange (RFC 6749 §5.1).
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    #[serde(default)]
    pub expires_in: Option<i64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub account_id: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("scope", &self.scope)
            .field("account_id", &self.account_id)
            .finish()
    }
}

impl TokenResponse {
    /// Parse a 200 answer. Only bearer tokens are usable.
    pub fn parse(body: &[u8]) -> Result<TokenResponse, OAuthError> {
        let parsed: TokenResponse = serde_json::from_slice(body)
            .map_err(|e| OAuthError::MalformedResponse(e.to_string()))?;
        if parsed.access_token.is_empty() {
            return Err(OAuthError::MalformedResponse("empty access_token".into()));
        }
        if !parsed.token_type.eq_ignore_ascii_case("bearer") {
            return Err(OAuthError::MalformedResponse(format!(
                "token_type {} is not bearer",
                parsed.token_type
            )));
        }
        if parsed.expires_in.is_some_and(|s| s <= 0) {
            return Err(OAuthError::MalformedResponse(
                "expires_in is not positive".into(),
            ));
        }
        Ok(parsed)
    }

    /// The required scopes the token was not granted (the app's permissions in the App Console
    /// lack them). Empty when the endpoint did not say which scopes it granted.
    pub fn missing_scopes(&self, required: &[String]) -> Vec<String> {
        let Some(granted) = &self.scope else {
            return Vec::new();
        };
        let granted: Vec<&str> = granted.split_whitespace().collect();
        required
            .iter()
            .filter(|s| !granted.contains(&s.as_str()))
            .cloned()
            .collect()
    }

    /// What the store keeps: the tokens, their expiry, the client (needed to refresh) and the
    /// account the tokens belong to.
    pub fn into_credentials(self, client: &ClientCredentials) -> StoredCredentials {
        StoredCredentials {
            access_token: self.access_token,
            refresh_token: self.refresh_token,
            expires_at: self.expires_in.map(|s| now() + s),
            client_id: Some(client.client_id.clone()),
            client_secret: client.client_secret.clone(),
            account_id: self.account_id,
        }
    }
}

#[derive(Deserialize)]
struct TokenErrorBody {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// How the host authenticates to a token endpoint, for every grant (wit/connector.wit,
/// `refresh-access-token`): HTTP Basic with the client id and secret when the tenant has a
/// secret (RFC 6749 §2.3.1, which every server must accept), else the `client_id` form field
/// of a public client. Adds to `form`; returns the request's headers.
pub fn token_request_auth(
    client_id: &str,
    client_secret: Option<&str>,
    form: &mut Vec<(&'static str, String)>,
) -> Vec<(String, String)> {
    let mut headers = token_request_auth_none();
    match client_secret {
        Some(secret) => {
            let basic = STANDARD.encode(format!("{client_id}:{secret}"));
            headers.push(("Authorization".to_string(), format!("Basic {basic}")));
        }
        None => form.push(("client_id", client_id.to_string())),
    }
    headers
}

/// The credentials a request's `Authorization` headers carry (the value after the scheme), to
/// be blanked out of whatever an endpoint echoes back.
pub fn authorization_values(headers: &[(String, String)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| {
            value
                .split_once(' ')
                .map_or(value.as_str(), |(_, credential)| credential)
                .to_string()
        })
        .collect()
}

/// The headers of a token request that carries no client authentication (no client id is
/// stored: a token given directly, with its refresh token).
pub fn token_request_auth_none() -> Vec<(String, String)> {
    vec![(
        "Content-Type".to_string(),
        "application/x-www-form-urlencoded".to_string(),
    )]
}

/// Exchange an authorization code at the token endpoint. Client authentication is HTTP Basic
/// (id:secret) when there is a secret, the `client_id` form field otherwise; the PKCE verifier
/// and the redirect URI used in the authorization URL go with it.
pub fn exchange_code(
    http: &HttpClient,
    token_url: &str,
    client: &ClientCredentials,
    code: &str,
    redirect_uri: Option<&str>,
    verifier: &str,
) -> Result<TokenResponse, OAuthError> {
    let mut form = vec![
        ("grant_type", "authorization_code".to_string()),
        ("code", code.to_string()),
        ("code_verifier", verifier.to_string()),
    ];
    if let Some(uri) = redirect_uri {
        form.push(("redirect_uri", uri.to_string()));
    }
    let headers = token_request_auth(
        &client.client_id,
        client.client_secret.as_deref(),
        &mut form,
    );
    let response = http
        .send(
            "POST",
            token_url,
            &headers,
            form_encode(&form).into_bytes(),
            None,
        )
        .map_err(|e| OAuthError::Transport(e.to_string()))?;
    // Whatever the endpoint echoes, none of our secrets may end up in an error message: not
    // the code, the verifier or the client secret, nor the Basic header that carries it.
    let credentials = authorization_values(&headers);
    let mut secrets = vec![code, verifier];
    secrets.extend(client.client_secret.as_deref());
    secrets.extend(credentials.iter().map(String::as_str));
    token_result(response.status, &response.body, &secrets)
}

/// Classify a token endpoint answer; `secrets` are blanked out of anything quoted in an error.
pub fn token_result(
    status: u16,
    body: &[u8],
    secrets: &[&str],
) -> Result<TokenResponse, OAuthError> {
    if status == 200 {
        return TokenResponse::parse(body);
    }
    if let Ok(error) = serde_json::from_slice::<TokenErrorBody>(body) {
        return Err(OAuthError::Refused {
            code: TokenErrorCode::parse(&excerpt(&error.error, secrets, MAX_CODE_CHARS)),
            description: excerpt(
                &error.error_description.unwrap_or_default(),
                secrets,
                MAX_EXCERPT_CHARS,
            ),
        });
    }
    Err(OAuthError::Endpoint {
        status,
        excerpt: excerpt(&String::from_utf8_lossy(body), secrets, MAX_EXCERPT_CHARS),
    })
}

/// The longest excerpt of a token endpoint's answer an error quotes.
const MAX_EXCERPT_CHARS: usize = 200;
/// The longest `error` code quoted (RFC 6749's codes are under 30 characters).
const MAX_CODE_CHARS: usize = 64;

/// At most `max_chars` of `text`, with `secrets` blanked out and control characters escaped
/// (an error stays one line, whatever the server sent). The whole text is redacted before it
/// is cut: cutting first would leave the head of a secret that straddles the cut.
pub fn excerpt(text: &str, secrets: &[&str], max_chars: usize) -> String {
    let redacted = redact(text, secrets);
    let mut chars = redacted.chars();
    let mut out = String::new();
    for c in chars.by_ref().take(max_chars) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// `text` with every secret replaced by `<redacted>`, in each form an endpoint may echo it:
/// as given, and form-encoded as it travelled in a request body.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut forms: Vec<String> = Vec::new();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        forms.push(secret.to_string());
        let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        if encoded != *secret {
            forms.push(encoded);
        }
    }
    // Longest first, so that a secret containing another is blanked whole.
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.iter().fold(text.to_string(), |acc, s| {
        acc.replace(s.as_str(), "<redacted>")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oauth() -> OauthConfig {
        OauthConfig {
            authorize_url: "https://www.example-source.com/oauth2/authorize".into(),
            token_url: "https://api.example-source.com/oauth2/token".into(),
            revoke_url: None,
            scopes: vec!["account_info.read".into(), "files.metadata.read".into()],
            extra_authorize_params: vec![("token_access_type".into(), "offline".into())],
            pkce_required: true,
            redirect_path: "connectors/oauth/callback/Example%20Source".into(),
        }
    }

    #[test]
    fn pkce_matches_the_rfc_7636_example_and_verifiers_are_well_formed() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let a = pkce_verifier();
        let b = pkce_verifier();
        assert_eq!(a.len(), VERIFIER_LEN);
        assert!(a.bytes().all(|c| UNRESERVED.contains(&c)));
        assert_ne!(a, b);
        assert_ne!(random_state(), random_state());
    }

    #[test]
    fn the_authorization_url_carries_every_parameter() {
        let policy = NetPolicy::new(Vec::<String>::new(), None).unwrap();
        let redirect = redirect_uri("http://127.0.0.1:8910/", &oauth().redirect_path).unwrap();
        assert_eq!(
            redirect,
            "http://127.0.0.1:8910/connectors/oauth/callback/Example%20Source"
        );
        let req = AuthorizationRequest::new(&oauth(), "app-key", &redirect, &policy).unwrap();
        let url = Url::parse(&req.url).unwrap();
        assert_eq!(url.host_str(), Some("www.example-source.com"));
        let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "app-key");
        assert_eq!(q["redirect_uri"], redirect);
        assert_eq!(q["scope"], "account_info.read files.metadata.read");
        assert_eq!(q["token_access_type"], "offline");
        assert_eq!(q["state"], req.state);
        assert_eq!(q["code_challenge"], pkce_challenge(&req.verifier));
        assert_eq!(q["code_challenge_method"], "S256");
        assert!(!req.url.contains(&req.verifier));
        // Pointed at an emulator, the page moves with the API.
        let emu = NetPolicy::new(Vec::<String>::new(), Some("http://127.0.0.1:5000")).unwrap();
        let req = AuthorizationRequest::new(&oauth(), "app-key", &redirect, &emu).unwrap();
        assert!(
            req.url
                .starts_with("http://127.0.0.1:5000/oauth2/authorize?"),
            "{}",
            req.url
        );
    }

    #[test]
    fn callbacks_are_checked_before_anything_is_believed() {
        assert_eq!(callback_code("code=abc&state=s1", "s1"), Ok("abc".into()));
        assert_eq!(callback_code("?state=s1&code=abc", "s1"), Ok("abc".into()));
        assert_eq!(
            callback_code("code=abc&state=s2", "s1"),
            Err(OAuthError::StateMismatch)
        );
        assert_eq!(
            callback_code("code=abc", "s1"),
            Err(OAuthError::StateMismatch)
        );
        assert_eq!(
            callback_code("error=access_denied&state=forged", "s1"),
            Err(OAuthError::StateMismatch)
        );
        assert!(matches!(
            callback_code("error=access_denied&error_description=no+thanks&state=s1", "s1"),
            Err(OAuthError::Denied { error, description }) if error == "access_denied" && description == "no thanks"
        ));
        assert_eq!(
            callback_code("state=s1", "s1"),
            Err(OAuthError::MissingCode)
        );
    }

    #[test]
    fn pasted_urls_and_bare_codes() {
        let url =
            "http://127.0.0.1:8910/connectors/oauth/callback/Example%20Source?code=c0de&state=st";
        assert_eq!(parse_pasted(url, "st"), Ok("c0de".into()));
        assert_eq!(parse_pasted(&format!("  {url}\n"), "st"), Ok("c0de".into()));
        assert_eq!(parse_pasted(url, "other"), Err(OAuthError::StateMismatch));
        assert_eq!(
            parse_pasted("c0de-from-the-page\n", "st"),
            Ok("c0de-from-the-page".into())
        );
        assert_eq!(parse_pasted("code=x&state=st", "st"), Ok("x".into()));
        assert_eq!(parse_pasted("  \n", "st"), Err(OAuthError::NothingPasted));
        assert_eq!(
            parse_pasted("two words", "st"),
            Err(OAuthError::MissingCode)
        );
    }

    #[test]
    fn token_answers_are_typed_and_errors_never_quote_secrets() {
        let ok = br#"{"access_token":"sl.A","token_type":"bearer","expires_in":14400,"refresh_token":"R","scope":"account_info.read","uid":"1","account_id":"dbid:x"}"#;
        let t = token_result(200, ok, &[]).unwrap();
        assert_eq!(t.refresh_token.as_deref(), Some("R"));
        assert_eq!(t.account_id.as_deref(), Some("dbid:x"));
        assert_eq!(
            t.missing_scopes(&["account_info.read".into(), "sharing.read".into()]),
            vec!["sharing.read".to_string()]
        );
        let debug = format!("{t:?}");
        assert!(
            !debug.contains("sl.A") && !debug.contains("\"R\""),
            "{debug}"
        );
        let creds = t.into_credentials(&ClientCredentials {
            client_id: "id".into(),
            client_secret: Some("sec".into()),
        });
        assert!(
            creds
                .expires_at
                .is_some_and(|at| (at - now() - 14400).abs() <= 5)
        );
        assert_eq!(creds.client_secret.as_deref(), Some("sec"));

        assert!(matches!(
            token_result(200, br#"{"access_token":"x","token_type":"mac"}"#, &[]),
            Err(OAuthError::MalformedResponse(_))
        ));
        assert!(matches!(
            token_result(200, b"<html>", &[]),
            Err(OAuthError::MalformedResponse(_))
        ));
        let refused = token_result(
            400,
            br#"{"error":"invalid_grant","error_description":"bad verifier VERIFIER-123"}"#,
            &["VERIFIER-123"],
        );
        match refused {
            Err(OAuthError::Refused {
                code: TokenErrorCode::InvalidGrant,
                description,
            }) => {
                assert_eq!(description, "bad verifier <redacted>");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            token_result(400, br#"{"error":"invalid_client"}"#, &[]),
            Err(OAuthError::Refused {
                code: TokenErrorCode::InvalidClient,
                ..
            })
        ));
        assert!(matches!(
            token_result(503, b"down for maintenance", &[]),
            Err(OAuthError::Endpoint { status: 503, .. })
        ));
        let client = ClientCredentials {
            client_id: "id".into(),
            client_secret: Some("topsecret".into()),
        };
        assert!(!format!("{client:?}").contains("topsecret"));
    }

    #[test]
    fn an_echoed_request_is_redacted_whole_before_it_is_cut() {
        let secret = "s3cret/with+signs=and more";
        let basic = STANDARD.encode(format!("app:{secret}"));
        let secrets = ["the-code-123", "verifier-456", secret, basic.as_str()];
        // An endpoint that echoes the request it got: headers, then the form.
        let echo = format!(
            "POST /oauth2/token HTTP/1.1\r\nAuthorization: Basic {basic}\r\n\r\n\
             grant_type=authorization_code&code=the-code-123&code_verifier=verifier-456&\
             client_secret={}",
            url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>()
        );
        let Err(OAuthError::Endpoint { excerpt, .. }) =
            token_result(500, echo.as_bytes(), &secrets)
        else {
            panic!("an endpoint error");
        };
        for s in &secrets {
            assert!(!excerpt.contains(s), "{excerpt}");
        }
        assert!(!excerpt.contains("s3cret"), "{excerpt}");
        assert!(excerpt.contains("Basic <redacted>"), "{excerpt}");
        assert!(!excerpt.contains(['\r', '\n']), "one line: {excerpt}");

        // A secret straddling the 200th character: cut first, its head would survive.
        let long = "sEcReT-StRaDdLeS-ThE-CuT-0123456789";
        let body = format!("{}{long} and more", "x".repeat(190));
        let Err(OAuthError::Endpoint { excerpt, .. }) = token_result(502, body.as_bytes(), &[long])
        else {
            panic!("an endpoint error");
        };
        assert!(!excerpt.contains("sEcReT"), "{excerpt}");
        assert!(excerpt.chars().count() <= MAX_EXCERPT_CHARS + 1);

        // The `error` code itself may be an echo.
        let body = format!(r#"{{"error":"got refresh_token={long}"}}"#);
        let err = token_result(400, body.as_bytes(), &[long]).unwrap_err();
        assert!(!err.to_string().contains("sEcReT"), "{err}");
    }

    #[test]
    fn the_listener_serves_only_loopback_and_its_path() {
        assert!(matches!(
            CallbackListener::bind("https://127.0.0.1:0", "cb"),
            Err(OAuthError::InvalidRedirectBase { .. })
        ));
        assert!(matches!(
            CallbackListener::bind("http://8.8.8.8:0", "cb"),
            Err(OAuthError::InvalidRedirectBase { .. })
        ));
        let listener = CallbackListener::bind(
            "http://127.0.0.1:0",
            "connectors/oauth/callback/Example%20Source",
        )
        .unwrap();
        let uri = listener.redirect_uri().to_string();
        assert!(
            uri.ends_with("/connectors/oauth/callback/Example%20Source") && !uri.contains(":0/"),
            "{uri}"
        );
        let addr = Url::parse(&uri).unwrap();
        let authority = format!("{}:{}", addr.host_str().unwrap(), addr.port().unwrap());
        let client = std::thread::spawn(move || {
            let get = |target: &str| {
                let mut s = TcpStream::connect(&authority).unwrap();
                write!(s, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                out
            };
            let favicon = get("/favicon.ico");
            // Another page's forged redirects (another state, or none, even with an error)
            // are answered and ignored; they neither end the wait nor decide it.
            let forged = [
                get("/connectors/oauth/callback/Example%20Source?code=evil&state=forged"),
                get("/connectors/oauth/callback/Example%20Source?error=access_denied"),
            ];
            let callback =
                get("/connectors/oauth/callback/Example%20Source?code=the-code&state=st");
            (favicon, forged, callback)
        });
        assert_eq!(
            listener.wait("st", Duration::from_secs(20)),
            Ok("the-code".into())
        );
        let (favicon, forged, callback) = client.join().unwrap();
        assert!(favicon.starts_with("HTTP/1.1 404"), "{favicon}");
        for page in forged {
            assert!(
                page.starts_with("HTTP/1.1 400") && page.contains("state does not match"),
                "{page}"
            );
        }
        assert!(
            callback.starts_with("HTTP/1.1 200") && callback.contains("connected"),
            "{callback}"
        );
        // Nobody comes: a typed timeout, not a hang.
        assert_eq!(
            listener.wait("st", Duration::from_millis(100)),
            Err(OAuthError::TimedOut(Duration::from_millis(100)))
        );
    }
}
