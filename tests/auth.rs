//! Connecting an account, end to end against the emulator's OAuth endpoints: the `auth` command
//! as a child process (authorize URL → redirect to its loopback listener → code exchange →
//! stored tokens → first sync), the checks that refuse a forged redirect, a wrong PKCE verifier
//! or a reused code, token refresh before expiry and on a 401 in the middle of a sync, a refused
//! refresh that ends the run once (no retry storm), `disconnect`, and that no secret ever shows
//! up in logs, events, the CLI's output or anything the guest receives.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dropbox_emulator::{Emulator, EmulatorConfig, Fault, FaultKind, TokenPair};
use e2e_tests::SCOPES;
use e2e_tests::{Harness, diff_with_truth};
use host_test::app::HostError;
use host_test::bindings::types::ConnectorError;
use host_test::credentials::now;
use host_test::http::{HttpClient, HttpResponse, HttpSettings};
use host_test::oauth::{
    AuthorizationRequest, CallbackListener, ClientCredentials, OAuthError, TokenErrorCode,
    callback_code, exchange_code, pkce_verifier,
};
use host_test::policy::NetPolicy;
use host_test::runtime::SandboxConfig;
use host_test::store::{RecordStore, SqliteStore, StoredCredentials};
use host_test::tenant::{GuestSignal, Services, TenantContext};

const CLIENT_ID: &str = "auth-test-app-key";
/// Distinctive, so that finding it anywhere it must not be is unambiguous.
const CLIENT_SECRET: &str = "app-secret-7fQ2zXw9LmK4";
/// Generous bound for a child process (it compiles the component first).
const CHILD_TIMEOUT: Duration = Duration::from_secs(180);

fn config(files: usize, seed: u64) -> EmulatorConfig {
    EmulatorConfig {
        files,
        seed,
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        ..Default::default()
    }
}

fn client() -> ClientCredentials {
    ClientCredentials {
        client_id: CLIENT_ID.into(),
        client_secret: Some(CLIENT_SECRET.into()),
    }
}

/// Credentials as `auth` stores them, for a pair minted by the emulator.
fn oauth_credentials(pair: &TokenPair, expires_in: i64) -> StoredCredentials {
    StoredCredentials {
        access_token: pair.access_token.clone(),
        refresh_token: Some(pair.refresh_token.clone()),
        expires_at: Some(now() + expires_in),
        client_id: Some(CLIENT_ID.into()),
        client_secret: Some(CLIENT_SECRET.into()),
        account_id: None,
    }
}

/// A harness whose tenant is connected with a pair the emulator minted (valid for four hours
/// there), which the host believes expires in `expires_in` seconds.
fn connected(config: EmulatorConfig, expires_in: i64) -> (Harness, TokenPair) {
    let h = Harness::with_config(config);
    let pair = h.emulator.issue_tokens(&SCOPES, 14_400);
    h.host
        .connect(&h.tenant, oauth_credentials(&pair, expires_in))
        .unwrap();
    (h, pair)
}

fn http() -> HttpClient {
    HttpClient::new(HttpSettings::default())
}

fn get(url: &str) -> HttpResponse {
    http()
        .send("GET", url, &[], Vec::new(), None)
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

fn header<'a>(response: &'a HttpResponse, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// What a browser does with the authorization URL in auto-approve mode: one GET, and the 302's
/// Location (the redirect URI with the code and state). The client does not follow redirects.
fn authorize(url: &str) -> String {
    let response = get(url);
    assert_eq!(
        response.status,
        302,
        "the emulator approves at once: {}",
        String::from_utf8_lossy(&response.body)
    );
    header(&response, "location")
        .expect("a redirect carries a Location")
        .to_string()
}

fn query_of(url: &str) -> String {
    url::Url::parse(url)
        .expect("a URL")
        .query()
        .unwrap_or_default()
        .to_string()
}

fn token_calls(emulator: &Emulator) -> u64 {
    emulator
        .request_counts()
        .get("oauth2/token")
        .copied()
        .unwrap_or(0)
}

fn route_calls(emulator: &Emulator, route: &str) -> u64 {
    emulator.request_counts().get(route).copied().unwrap_or(0)
}

fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!secret.is_empty());
        if let Some(at) = text.find(secret) {
            panic!(
                "{what} shows a secret (starting {}…) at byte {at}",
                &secret[..secret.len().min(6)]
            );
        }
    }
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("the file exists")
        .permissions()
        .mode()
        & 0o777
}

// ---- the CLI as a child process ----

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Output {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// A running `host-test` whose standard output is read line by line as it comes.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut command = Command::new(env!("CARGO_BIN_EXE_host-test-cli"));
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Nothing from the test's own environment may stand in for what the test passes.
        for var in [
            "DROPBOX_ACCESS_TOKEN",
            "DROPBOX_CLIENT_ID",
            "DROPBOX_CLIENT_SECRET",
        ] {
            command.env_remove(var);
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("the CLI starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
            stderr: Some(stderr),
        }
    }

    /// The first output line that satisfies `pred` (lines before it are kept for `finish`).
    fn wait_for_line(&mut self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + CHILD_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "the CLI never printed the expected line; output so far:\n{}",
                        self.seen.join("\n")
                    );
                }
            }
        }
    }

    fn stdin(&mut self) -> &mut ChildStdin {
        self.child.stdin.as_mut().expect("piped stdin")
    }

    fn finish(mut self) -> Output {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + CHILD_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for the CLI") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the CLI did not finish within {CHILD_TIMEOUT:?}; output so far:\n{}",
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends with the pipe; collect whatever it had not handed over yet.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.seen.push(line);
        }
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        Output {
            status,
            stdout: self.seen.join("\n"),
            stderr,
        }
    }
}

fn run_cli(args: &[&str]) -> Output {
    Running::spawn(args, &[]).finish()
}

fn is_authorize_url(line: &str) -> bool {
    line.starts_with("http") && line.contains("/oauth2/authorize?")
}

#[test]
fn cli_auth_connects_syncs_and_disconnects_without_ever_showing_a_secret() {
    let emulator = Emulator::start(config(300, 21)).expect("emulator");
    let base = emulator.base_url();
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("cli.db");
    let db = db_path.to_str().unwrap();
    let mut auth = Running::spawn(
        &[
            "auth",
            "--db",
            db,
            "--tenant",
            "alice",
            "--api-url",
            &base,
            "--client-id",
            CLIENT_ID,
            "--client-secret",
            CLIENT_SECRET,
            "--redirect-base",
            "http://127.0.0.1:0",
            "--no-browser",
            "--timeout",
            "120",
        ],
        &[],
    );
    let url = auth.wait_for_line(is_authorize_url);

    // The URL: on the emulator (the host rewrote www.dropbox.com), with every parameter.
    assert!(
        url.starts_with(&format!("{base}/oauth2/authorize?")),
        "{url}"
    );
    let params: HashMap<String, String> = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["client_id"], CLIENT_ID);
    assert_eq!(params["scope"], SCOPES.join(" "));
    assert_eq!(params["token_access_type"], "offline");
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(
        params["code_challenge"].len(),
        43,
        "base64url of a SHA-256, unpadded"
    );
    assert!(params["state"].len() >= 32);
    let redirect = &params["redirect_uri"];
    assert!(
        redirect.starts_with("http://127.0.0.1:")
            && redirect.ends_with("/connectors/oauth/callback/Dropbox%20Personal"),
        "the manifest's redirect path, exactly: {redirect}"
    );

    // The browser: approve, then follow the redirect to the CLI's listener.
    let location = authorize(&url);
    assert!(location.starts_with(redirect.as_str()), "{location}");
    let page = get(&location);
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("connected"));
    let auth = auth.finish();
    assert!(auth.status.success(), "auth failed:\n{}", auth.all());
    assert!(
        auth.stdout.contains(&format!(
            "connected tenant alice to {} ({})",
            emulator.email(),
            emulator.account_id()
        )),
        "{}",
        auth.stdout
    );
    assert!(
        auth.stdout.contains("full sync of alice"),
        "the first full sync runs at once:\n{}",
        auth.all()
    );
    assert!(
        !auth.stderr.contains('\r'),
        "no progress bar when stderr is not a terminal:\n{}",
        auth.stderr
    );
    assert_eq!(token_calls(&emulator), 1, "one code exchange, no refresh");

    // What was stored: the tokens, their expiry, the client and the account; and the records.
    let store = SqliteStore::open(&db_path).unwrap();
    let creds = store
        .credentials("alice")
        .unwrap()
        .expect("credentials stored");
    let refresh_token = creds
        .refresh_token
        .clone()
        .expect("offline access gives a refresh token");
    assert_eq!(creds.client_id.as_deref(), Some(CLIENT_ID));
    assert_eq!(creds.client_secret.as_deref(), Some(CLIENT_SECRET));
    assert_eq!(
        creds.account_id.as_deref(),
        Some(emulator.account_id().as_str())
    );
    let expires_at = creds.expires_at.expect("an expiry");
    assert!(
        (expires_at - now() - 14_400).abs() < 120,
        "expires_in honoured: {expires_at}"
    );
    let diffs = diff_with_truth(&emulator.truth(), &store.records("alice").unwrap(), |_| {
        true
    });
    assert!(diffs.is_empty(), "{diffs:?}");

    // The other commands, as a user would run them next.
    let sync = run_cli(&["sync", "--db", db, "--tenant", "alice", "--api-url", &base]);
    assert!(sync.status.success(), "{}", sync.all());
    let records = run_cli(&["records", "--db", db, "--tenant", "alice"]);
    assert_eq!(records.stdout.lines().count(), emulator.truth().len());
    let events = run_cli(&["events", "--db", db, "--tenant", "alice"]);
    assert!(events.status.success());
    let status = run_cli(&["status", "--db", db, "--tenant", "alice", "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&status.stdout).expect("status is JSON");
    assert_eq!(shown["connected"], true);
    assert_eq!(shown["needs_reauthentication"], false);
    assert_eq!(shown["token_expires_at"], expires_at);
    assert_eq!(shown["account"]["account_id"], emulator.account_id());

    // The database holds credentials: owner-only, journal files included.
    #[cfg(unix)]
    for suffix in ["", "-wal", "-shm"] {
        let path = dir.path().join(format!("cli.db{suffix}"));
        if suffix.is_empty() || path.exists() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }

    // Disconnect: the component revokes the token; the credentials are gone.
    let disconnect = run_cli(&[
        "disconnect",
        "--db",
        db,
        "--tenant",
        "alice",
        "--api-url",
        &base,
    ]);
    assert!(disconnect.status.success(), "{}", disconnect.all());
    assert_eq!(route_calls(&emulator, "auth/token/revoke"), 1);
    assert!(store.credentials("alice").unwrap().is_none());
    let refused = http()
        .send(
            "POST",
            &format!("{base}/oauth2/token"),
            &[("Content-Type".into(), "application/x-www-form-urlencoded".into())],
            format!("grant_type=refresh_token&refresh_token={refresh_token}&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}")
                .into_bytes(),
            None,
        )
        .unwrap();
    assert_eq!(
        refused.status, 400,
        "the refresh token died with the revoke"
    );
    assert!(String::from_utf8_lossy(&refused.body).contains("invalid_grant"));
    let after = run_cli(&["status", "--db", db, "--tenant", "alice", "--json"]);
    let shown_after: serde_json::Value = serde_json::from_str(&after.stdout).unwrap();
    assert_eq!(shown_after["connected"], false);
    let again = run_cli(&[
        "disconnect",
        "--db",
        db,
        "--tenant",
        "alice",
        "--api-url",
        &base,
    ]);
    assert!(
        again.status.success() && again.stdout.contains("nothing to disconnect"),
        "{}",
        again.all()
    );

    let secrets = [
        CLIENT_SECRET,
        refresh_token.as_str(),
        creds.access_token.as_str(),
    ];
    for (what, output) in [
        ("auth", &auth),
        ("sync", &sync),
        ("records", &records),
        ("events", &events),
        ("status", &status),
        ("disconnect", &disconnect),
        ("status after disconnect", &after),
    ] {
        assert_no_secret(what, &output.all(), &secrets);
    }
}

#[test]
fn cli_auth_without_a_listener_takes_the_pasted_redirect_or_the_bare_code() {
    let emulator = Emulator::start(config(20, 22)).expect("emulator");
    let base = emulator.base_url();
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("paste.db");
    let db = db_path.to_str().unwrap();
    // The client comes from the environment this time (keeps the secret out of `ps`).
    let env = [
        ("DROPBOX_CLIENT_ID", CLIENT_ID),
        ("DROPBOX_CLIENT_SECRET", CLIENT_SECRET),
    ];
    for (tenant, paste_whole_url) in [("pasted-url", true), ("pasted-code", false)] {
        let mut auth = Running::spawn(
            &[
                "auth",
                "--db",
                db,
                "--tenant",
                tenant,
                "--api-url",
                &base,
                "--no-listen",
                "--no-sync",
            ],
            &env,
        );
        let url = auth.wait_for_line(is_authorize_url);
        let params: HashMap<String, String> = url::Url::parse(&url)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
        assert_eq!(
            params["redirect_uri"],
            "http://127.0.0.1:8910/connectors/oauth/callback/Dropbox%20Personal",
            "the default redirect base"
        );
        let location = authorize(&url);
        let pasted = if paste_whole_url {
            location.clone()
        } else {
            url::Url::parse(&location)
                .unwrap()
                .query_pairs()
                .find(|(k, _)| k == "code")
                .unwrap()
                .1
                .into_owned()
        };
        writeln!(auth.stdin(), "{pasted}").unwrap();
        let out = auth.finish();
        assert!(out.status.success(), "{tenant}: {}", out.all());
        assert!(
            out.stdout.contains(&format!(
                "connected tenant {tenant} to {}",
                emulator.email()
            )),
            "{}",
            out.stdout
        );
        assert_no_secret(tenant, &out.all(), &[CLIENT_SECRET]);
        let store = SqliteStore::open(&db_path).unwrap();
        assert!(
            store
                .credentials(tenant)
                .unwrap()
                .is_some_and(|c| c.refresh_token.is_some())
        );
        assert_eq!(store.record_count(tenant).unwrap(), 0, "--no-sync");
    }
    assert_eq!(token_calls(&emulator), 2);
}

#[test]
fn cli_auth_ignores_a_redirect_whose_state_is_not_its_own_and_keeps_waiting() {
    let emulator = Emulator::start(config(0, 23)).expect("emulator");
    let base = emulator.base_url();
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("state.db");
    let db = db_path.to_str().unwrap();
    let mut auth = Running::spawn(
        &[
            "auth",
            "--db",
            db,
            "--tenant",
            "bob",
            "--api-url",
            &base,
            "--client-id",
            CLIENT_ID,
            "--client-secret",
            CLIENT_SECRET,
            "--redirect-base",
            "http://127.0.0.1:0",
            "--no-browser",
            "--no-sync",
        ],
        &[],
    );
    let url = auth.wait_for_line(is_authorize_url);
    let location = authorize(&url);
    let state = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    // Any web page can send the browser to the listener: with a code of its choosing and
    // another state, or with a denial and no state at all. Neither may end the user's wait.
    let forged = location.replace(&format!("state={state}"), "state=forged-by-someone-else");
    assert_ne!(forged, location);
    let callback = location.split('?').next().unwrap().to_string();
    for attempt in [forged, format!("{callback}?error=access_denied")] {
        let page = get(&attempt);
        assert_eq!(page.status, 400, "{attempt}");
        assert!(String::from_utf8_lossy(&page.body).contains("state does not match"));
    }
    assert_eq!(
        token_calls(&emulator),
        0,
        "nothing is exchanged for a forgery"
    );
    // The real redirect still arrives and completes the authorization.
    let page = get(&location);
    assert_eq!(page.status, 200);
    let out = auth.finish();
    assert!(out.status.success(), "{}", out.all());
    assert!(
        out.stderr
            .contains("ignored a request to the OAuth callback"),
        "{}",
        out.stderr
    );
    assert_eq!(token_calls(&emulator), 1);
    assert!(
        SqliteStore::open(&db_path)
            .unwrap()
            .credentials("bob")
            .unwrap()
            .is_some_and(|c| c.refresh_token.is_some())
    );
}

/// The URL opener (`xdg-open`, found on PATH) and the browser it starts outlive the command;
/// they get none of the secrets the command read from its environment.
#[cfg(unix)]
#[test]
fn the_browser_opener_inherits_no_secret_from_the_environment() {
    use std::os::unix::fs::PermissionsExt;
    let emulator = Emulator::start(config(0, 24)).expect("emulator");
    let base = emulator.base_url();
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let seen = dir.path().join("opener-saw");
    // A stand-in opener that records its arguments and environment.
    let opener = bin.join("xdg-open");
    std::fs::write(
        &opener,
        format!(
            "#!/bin/sh\n{{ echo \"ARG=$1\"; env; }} > '{0}.tmp' && mv '{0}.tmp' '{0}'\n",
            seen.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&opener, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let db = dir.path().join("opener.db");
    let key = host_test::secrets::Keyring::generate_key();
    let secrets = [
        ("HOST_TEST_ACCESS_TOKEN", "opener-access-token-Qm7Zr2"),
        ("DROPBOX_ACCESS_TOKEN", "opener-dropbox-token-Vx9Lp4"),
        ("DROPBOX_CLIENT_SECRET", CLIENT_SECRET),
        ("HOST_TEST_SECRET_KEY", key.as_str()),
    ];
    let mut env: Vec<(&str, &str)> = vec![
        ("PATH", path.as_str()),
        ("DROPBOX_CLIENT_ID", CLIENT_ID),
        ("OPENER_TEST_MARKER", "not-a-secret"),
    ];
    env.extend(secrets);
    let mut auth = Running::spawn(
        &[
            "auth",
            "--db",
            db.to_str().unwrap(),
            "--tenant",
            "opener",
            "--api-url",
            &base,
            "--redirect-base",
            "http://127.0.0.1:0",
            "--no-sync",
        ],
        &env,
    );
    let url = auth.wait_for_line(is_authorize_url);
    let deadline = Instant::now() + CHILD_TIMEOUT;
    while !seen.exists() {
        assert!(Instant::now() < deadline, "the opener never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let saw = std::fs::read_to_string(&seen).unwrap();
    assert!(
        saw.contains(&format!("ARG={url}")),
        "the opener got the URL: {saw}"
    );
    assert!(
        saw.contains("OPENER_TEST_MARKER=not-a-secret"),
        "the rest of the environment is passed on"
    );
    for (name, value) in secrets {
        assert!(!saw.contains(&format!("{name}=")), "the opener got {name}");
        assert_no_secret("the opener's environment", &saw, &[value]);
    }
    // Finish the authorization the opener would have started.
    assert_eq!(get(&authorize(&url)).status, 200);
    let out = auth.finish();
    assert!(out.status.success(), "{}", out.all());
}

// ---- the protocol pieces against the emulator, in process ----

#[test]
fn the_token_endpoint_refuses_a_wrong_verifier_a_reused_code_and_a_wrong_secret() {
    let h = Harness::with_config(config(0, 24));
    let oauth = h
        .host
        .manifest()
        .oauth
        .clone()
        .expect("the Dropbox manifest declares OAuth");
    let policy = &h.host.services().policy;
    let token_url = policy.rewrite(&oauth.token_url);
    let redirect = "http://127.0.0.1:8910/connectors/oauth/callback/Dropbox%20Personal";
    let http = http();
    let code_for = |request: &AuthorizationRequest| {
        callback_code(&query_of(&authorize(&request.url)), &request.state).unwrap()
    };

    // A verifier that is not the one the challenge was made from.
    let first = AuthorizationRequest::new(&oauth, CLIENT_ID, redirect, policy).unwrap();
    let code = code_for(&first);
    match exchange_code(
        &http,
        &token_url,
        &client(),
        &code,
        Some(redirect),
        &pkce_verifier(),
    ) {
        Err(OAuthError::Refused {
            code: TokenErrorCode::InvalidGrant,
            ..
        }) => {}
        other => panic!("a wrong verifier must be refused: {other:?}"),
    }

    // The right verifier: tokens. The same code again: refused.
    let second = AuthorizationRequest::new(&oauth, CLIENT_ID, redirect, policy).unwrap();
    let code = code_for(&second);
    let tokens = second
        .exchange(&http, &token_url, &client(), &code)
        .expect("the exchange succeeds");
    assert!(tokens.refresh_token.is_some());
    assert_eq!(tokens.expires_in, Some(14_400));
    assert_eq!(
        tokens.account_id.as_deref(),
        Some(h.emulator.account_id().as_str())
    );
    assert!(tokens.missing_scopes(&oauth.scopes).is_empty());
    match second.exchange(&http, &token_url, &client(), &code) {
        Err(OAuthError::Refused {
            code: TokenErrorCode::InvalidGrant,
            ..
        }) => {}
        other => panic!("a code works once: {other:?}"),
    }

    // A wrong client secret.
    let third = AuthorizationRequest::new(&oauth, CLIENT_ID, redirect, policy).unwrap();
    let code = code_for(&third);
    let wrong = ClientCredentials {
        client_id: CLIENT_ID.into(),
        client_secret: Some("not-the-secret".into()),
    };
    match third.exchange(&http, &token_url, &wrong, &code) {
        Err(OAuthError::Refused {
            code: TokenErrorCode::InvalidClient,
            ..
        }) => {}
        other => panic!("a wrong secret must be refused: {other:?}"),
    }
    assert_eq!(token_calls(&h.emulator), 4);
}

#[test]
fn a_denied_authorization_reaches_the_listener_as_a_typed_error() {
    let h = Harness::with_config(EmulatorConfig {
        auto_approve: false,
        ..config(0, 25)
    });
    let oauth = h
        .host
        .manifest()
        .oauth
        .clone()
        .expect("the Dropbox manifest declares OAuth");
    let listener = CallbackListener::bind("http://127.0.0.1:0", &oauth.redirect_path).unwrap();
    let request = AuthorizationRequest::new(
        &oauth,
        CLIENT_ID,
        listener.redirect_uri(),
        &h.host.services().policy,
    )
    .unwrap();
    let base = h.emulator.base_url();
    let url = request.url.clone();
    let browser = std::thread::spawn(move || {
        let page = get(&url);
        assert_eq!(page.status, 200, "the approval page");
        let html = String::from_utf8_lossy(&page.body).into_owned();
        let href = html
            .split("id=\"deny\" href=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("a deny link");
        let denied = get(&format!("{base}{}", href.replace("&amp;", "&")));
        assert_eq!(denied.status, 302);
        let location = header(&denied, "location").unwrap().to_string();
        get(&location).status
    });
    match listener.wait(&request.state, Duration::from_secs(60)) {
        Err(OAuthError::Denied { error, .. }) => assert_eq!(error, "access_denied"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        browser.join().unwrap(),
        400,
        "the browser is told it failed"
    );
    assert_eq!(token_calls(&h.emulator), 0);
}

// ---- refresh ----

#[test]
fn a_refresh_authenticates_the_client_with_http_basic_as_the_code_exchange_does() {
    // wit/connector.wit (`refresh-access-token`): a host authenticates to the token URL with
    // HTTP Basic when the tenant has a client secret. A server that takes only Basic refuses
    // a secret sent in the form.
    let (h, _) = connected(
        EmulatorConfig {
            token_requires_basic: true,
            ..config(20, 32)
        },
        60,
    );
    h.emulator.expire_access_tokens();
    h.emulator.reset_counts();
    h.try_sync()
        .expect("the refresh is accepted by a Basic-only token endpoint");
    assert_eq!(token_calls(&h.emulator), 1);
    h.assert_matches_truth();
}

#[test]
fn a_token_about_to_expire_is_refreshed_once_before_the_sync_uses_it() {
    let (h, pair) = connected(config(200, 26), 60);
    // The service already considers the old token expired: only a fresh one can work.
    h.emulator.expire_access_tokens();
    h.emulator.reset_counts();
    let outcome = h
        .try_sync()
        .expect("the sync succeeds on the refreshed token");
    assert_eq!(token_calls(&h.emulator), 1);
    // Refreshed before the first request went out: no request met a 401.
    assert!(
        !outcome
            .stats
            .logs
            .iter()
            .any(|(_, m)| m.contains("expired")),
        "no request may have gone out with the old token: {:?}",
        outcome.stats.logs
    );
    assert_eq!(route_calls(&h.emulator, "users/get_current_account"), 1);
    let stored = h.host.store().credentials(&h.tenant).unwrap().unwrap();
    assert_ne!(stored.access_token, pair.access_token);
    assert_eq!(
        stored.refresh_token.as_deref(),
        Some(pair.refresh_token.as_str()),
        "refresh tokens do not rotate"
    );
    assert!(stored.expires_at.is_some_and(|at| at > now() + 3_600));
    h.assert_matches_truth();
    // A second sync needs no refresh.
    h.sync();
    assert_eq!(token_calls(&h.emulator), 1);
}

#[test]
fn an_expired_token_in_the_middle_of_a_multi_page_sync_is_refreshed_once_and_the_sync_completes() {
    let (h, pair) = connected(config(4_300, 27), 14_400);
    h.emulator.reset_counts();
    // The second `continue` finds the token expired.
    h.emulator.inject(Fault {
        route: Some("files/list_folder/continue".into()),
        skip: 1,
        count: 1,
        kind: FaultKind::ExpiredToken,
    });
    let summary = h.sync();
    assert!(
        summary.pages >= 3,
        "the fault must land mid-sync: {summary:?}"
    );
    assert_eq!(token_calls(&h.emulator), 1, "exactly one refresh");
    assert_eq!(
        route_calls(&h.emulator, "files/list_folder/continue"),
        u64::from(summary.pages - 1) + 1,
        "every page once, plus the one retried request"
    );
    let stored = h.host.store().credentials(&h.tenant).unwrap().unwrap();
    assert_ne!(
        stored.access_token, pair.access_token,
        "the new token is stored (and used from then on)"
    );
    h.assert_matches_truth();

    // Control: the same fault with nothing to refresh with ends the run; so the sync above
    // completed because of the refresh, not because the fault missed.
    h.host.store().delete_sync_point(&h.tenant).unwrap();
    h.host
        .connect(
            &h.tenant,
            StoredCredentials {
                refresh_token: None,
                ..stored
            },
        )
        .unwrap();
    h.emulator.reset_counts();
    h.emulator.inject(Fault {
        route: Some("files/list_folder/continue".into()),
        skip: 1,
        count: 1,
        kind: FaultKind::ExpiredToken,
    });
    assert!(matches!(
        h.try_sync(),
        Err(HostError::Connector(ConnectorError::AuthRequired(_)))
    ));
    assert_eq!(token_calls(&h.emulator), 0);
}

/// A sync's first requests go out together, all with the token the host holds. When that token
/// has expired, the three come back 401; the first answer read refreshes it, and the other two
/// are sent again with the new token, without a refresh each.
#[test]
fn requests_started_together_with_an_expired_token_refresh_it_once() {
    let (h, _) = connected(config(300, 29), 14_400);
    h.sync();
    // The service expires the token before the host expected it to.
    h.emulator.expire_access_tokens();
    h.emulator.reset_counts();
    let summary = h.sync();
    assert_eq!(token_calls(&h.emulator), 1, "one refresh for the three");
    for route in [
        "users/get_current_account",
        "sharing/list_shared_links",
        "files/list_folder/continue",
    ] {
        assert_eq!(
            route_calls(&h.emulator, route),
            2,
            "{route}: refused, then sent again"
        );
    }
    assert_eq!(summary.api_calls, 6);
    assert_eq!(summary.retries, 0);
    h.assert_matches_truth();
}

#[test]
fn a_refused_refresh_ends_the_run_with_auth_required_once_and_status_says_so() {
    // Before expiry: the host's proactive refresh is refused (the user unlinked the app).
    let (h, pair) = connected(config(50, 28), 60);
    h.emulator.revoke_all();
    h.emulator.reset_counts();
    match h.try_sync() {
        Err(HostError::Connector(ConnectorError::AuthRequired(_))) => {}
        other => panic!("expected auth-required: {other:?}"),
    }
    assert_eq!(
        token_calls(&h.emulator),
        1,
        "one refresh attempt, no retry storm"
    );
    assert!(h.host.store().status(&h.tenant).unwrap().needs_reauth);
    // The next scheduled run does not go back to the token endpoint with a refused token.
    assert!(matches!(
        h.try_sync(),
        Err(HostError::Connector(ConnectorError::AuthRequired(_)))
    ));
    assert_eq!(token_calls(&h.emulator), 1);

    let db = h.dir.path().join("store.db");
    let status = run_cli(&[
        "status",
        "--db",
        db.to_str().unwrap(),
        "--tenant",
        &h.tenant,
        "--json",
    ]);
    let shown: serde_json::Value = serde_json::from_str(&status.stdout).expect("status is JSON");
    assert_eq!(shown["needs_reauthentication"], true, "{}", status.stdout);
    assert!(
        shown["last_sync_result"]
            .as_str()
            .is_some_and(|r| r.contains("authorization required")),
        "{}",
        status.stdout
    );
    assert_no_secret(
        "status",
        &status.all(),
        &[CLIENT_SECRET, &pair.refresh_token, &pair.access_token],
    );

    // After a 401 expired_access_token: the guest asks for one refresh, which is refused.
    let h = Harness::with_config(config(50, 29));
    let live = h.emulator.issue_tokens(&SCOPES, 14_400);
    let dead = h.emulator.issue_tokens(&SCOPES, 14_400);
    let revoke = http()
        .send(
            "POST",
            &format!("{}/2/auth/token/revoke", h.emulator.base_url()),
            &[(
                "Authorization".into(),
                format!("Bearer {}", dead.access_token),
            )],
            Vec::new(),
            None,
        )
        .unwrap();
    assert_eq!(revoke.status, 200);
    let creds = StoredCredentials {
        refresh_token: Some(dead.refresh_token.clone()),
        ..oauth_credentials(&live, 14_400)
    };
    h.host.connect(&h.tenant, creds).unwrap();
    h.emulator.expire_access_tokens();
    h.emulator.reset_counts();
    match h.try_sync() {
        Err(HostError::Connector(ConnectorError::AuthRequired(_))) => {}
        other => panic!("expected auth-required: {other:?}"),
    }
    assert_eq!(
        token_calls(&h.emulator),
        1,
        "one refresh attempt, no retry storm"
    );
    assert_eq!(
        route_calls(&h.emulator, "users/get_current_account"),
        1,
        "the failed request is not retried"
    );
    assert!(h.host.store().status(&h.tenant).unwrap().needs_reauth);
}

#[test]
fn test_connection_gives_the_account_for_a_good_token_and_the_typed_error_for_a_dead_one() {
    let (h, _) = connected(config(0, 30), 14_400);
    let user = h
        .host
        .test_connection(&h.tenant)
        .expect("a good token")
        .value;
    assert_eq!(user.email, h.emulator.email());
    assert_eq!(user.external_id, h.emulator.account_id());
    h.emulator.revoke_all();
    match h.host.test_connection(&h.tenant) {
        Err(HostError::Connector(ConnectorError::AuthRequired(_))) => {}
        other => panic!("a dead token is not a working connection: {other:?}"),
    }
    assert!(h.host.store().status(&h.tenant).unwrap().needs_reauth);
}

// ---- secrets ----

#[test]
fn secrets_never_reach_logs_events_errors_or_the_guest() {
    let (h, pair) = connected(config(120, 31), 60);
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let observer = {
        let seen = seen.clone();
        Box::new(move |signal: &GuestSignal| seen.lock().unwrap().push(format!("{signal:?}")))
    };
    // A proactive refresh, then a refresh on a 401, in one run.
    h.emulator
        .inject(Fault::once("files/list_folder", FaultKind::ExpiredToken));
    let outcome = h.host.sync(&h.tenant, Some(observer), None).expect("sync");
    assert_eq!(token_calls(&h.emulator), 2);
    let refreshed = h.host.store().credentials(&h.tenant).unwrap().unwrap();

    // Then a refused refresh.
    h.emulator.revoke_all();
    h.emulator.expire_access_tokens();
    let failure = h.try_sync().expect_err("auth-required");

    // The hostile guest asks for the token endpoint itself, with and without the tenant's token.
    let hostile = host_test::components::hostile_runtime(SandboxConfig::default())
        .expect("the hostile guest loads");
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let guest_pair = h.emulator.issue_tokens(&SCOPES, 14_400);
    store
        .put_credentials("g", &oauth_credentials(&guest_pair, 60))
        .unwrap();
    let policy = NetPolicy::new(
        ["api.dropboxapi.com".to_string()],
        Some(&h.emulator.base_url()),
    )
    .unwrap();
    let services = Services::new(
        store.clone(),
        policy,
        HttpSettings::default(),
        &h.host.manifest().oauth.as_ref().expect("OAuth").token_url,
    );
    let mut guest_saw = Vec::new();
    for command in [
        "http https://api.dropboxapi.com/oauth2/token",
        "http-auth https://api.dropboxapi.com/oauth2/token",
        "http-auth https://api.dropboxapi.com/2/users/get_current_account",
    ] {
        let mut instance = hostile
            .instantiate(TenantContext::new("g", services.clone()))
            .unwrap();
        guest_saw.push(format!("{:?}", instance.get_signed_url(command).unwrap()));
    }
    let guest_refreshed = store.credentials("g").unwrap().unwrap();
    assert_ne!(
        guest_refreshed.access_token, guest_pair.access_token,
        "the host refreshed while serving the guest"
    );

    let secrets = [
        CLIENT_SECRET,
        pair.refresh_token.as_str(),
        pair.access_token.as_str(),
        refreshed.access_token.as_str(),
        guest_pair.refresh_token.as_str(),
        guest_pair.access_token.as_str(),
        guest_refreshed.access_token.as_str(),
    ];
    let logs = outcome
        .stats
        .logs
        .iter()
        .map(|(l, m)| format!("{l} {m}"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        logs.contains("expired"),
        "the 401 was logged (without the token): {logs}"
    );
    assert_no_secret("guest logs", &logs, &secrets);
    assert_no_secret("observer", &seen.lock().unwrap().join("\n"), &secrets);
    assert_no_secret("the error", &format!("{failure} {failure:?}"), &secrets);
    let events = h
        .events_since(0)
        .iter()
        .map(|e| e.record.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!events.is_empty());
    assert_no_secret("events", &events, &secrets);
    let status = h.host.store().status(&h.tenant).unwrap();
    assert_no_secret("status", &format!("{status:?}"), &secrets);
    assert_no_secret(
        "stored credentials' Debug",
        &format!("{refreshed:?}"),
        &secrets,
    );
    assert_no_secret("what the guest received", &guest_saw.join("\n"), &secrets);
}

#[test]
fn a_new_database_file_and_its_journal_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("private.db");
    let store = SqliteStore::open(&path).unwrap();
    store
        .put_credentials(
            "t",
            &StoredCredentials {
                access_token: "sl.x".into(),
                ..Default::default()
            },
        )
        .unwrap();
    #[cfg(unix)]
    for suffix in ["", "-wal", "-shm"] {
        let file = dir.path().join(format!("private.db{suffix}"));
        assert!(file.exists(), "{}", file.display());
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

// ---- a token given for one run (DROPBOX_ACCESS_TOKEN, a watch tenants file) ----

/// `auth --no-listen --no-sync` for `tenant`, as a user runs it (the redirect pasted), and what
/// it stored: an access token, its expiry, a refresh token, the client id and secret.
fn auth_by_paste(emulator: &Emulator, db: &std::path::Path, tenant: &str) -> StoredCredentials {
    let mut auth = Running::spawn(
        &[
            "auth",
            "--db",
            db.to_str().unwrap(),
            "--tenant",
            tenant,
            "--api-url",
            &emulator.base_url(),
            "--no-listen",
            "--no-sync",
        ],
        &[
            ("DROPBOX_CLIENT_ID", CLIENT_ID),
            ("DROPBOX_CLIENT_SECRET", CLIENT_SECRET),
        ],
    );
    let url = auth.wait_for_line(is_authorize_url);
    let location = authorize(&url);
    writeln!(auth.stdin(), "{location}").unwrap();
    let out = auth.finish();
    assert!(out.status.success(), "auth failed:\n{}", out.all());
    let creds = stored_credentials(db, tenant).expect("auth stored credentials");
    assert!(
        creds.refresh_token.is_some()
            && creds.expires_at.is_some()
            && creds.client_id.as_deref() == Some(CLIENT_ID)
            && creds.client_secret.as_deref() == Some(CLIENT_SECRET),
        "auth stores the whole set: {creds:?}"
    );
    creds
}

fn stored_credentials(db: &std::path::Path, tenant: &str) -> Option<StoredCredentials> {
    SqliteStore::open(db)
        .expect("the store opens")
        .credentials(tenant)
        .expect("credentials readable")
}

/// Field by field, without printing a secret when they differ.
fn assert_same_credentials(what: &str, before: &StoredCredentials, after: &StoredCredentials) {
    assert!(
        after.access_token == before.access_token,
        "{what}: the stored access token was replaced"
    );
    assert!(
        after.refresh_token == before.refresh_token,
        "{what}: the stored refresh token changed (now {})",
        if after.refresh_token.is_some() {
            "another one"
        } else {
            "gone"
        }
    );
    assert_eq!(
        after.expires_at, before.expires_at,
        "{what}: the stored expiry changed"
    );
    assert_eq!(
        after.client_id, before.client_id,
        "{what}: the stored client id changed"
    );
    assert!(
        after.client_secret == before.client_secret,
        "{what}: the stored client secret changed (now {})",
        if after.client_secret.is_some() {
            "another one"
        } else {
            "gone"
        }
    );
    assert_eq!(
        after.account_id, before.account_id,
        "{what}: the stored account id changed"
    );
}

fn sync_cli(db: &std::path::Path, tenant: &str, api_url: &str, env_token: Option<&str>) -> Output {
    let env: Vec<(&str, &str)> = env_token
        .map(|t| vec![("DROPBOX_ACCESS_TOKEN", t)])
        .unwrap_or_default();
    Running::spawn(
        &[
            "sync",
            "--db",
            db.to_str().unwrap(),
            "--tenant",
            tenant,
            "--api-url",
            api_url,
            "--quiet",
        ],
        &env,
    )
    .finish()
}

#[test]
fn sync_with_a_token_in_the_environment_keeps_the_credentials_auth_stored() {
    let emulator = Emulator::start(config(40, 41)).expect("emulator");
    let base = emulator.base_url();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("env.db");
    let before = auth_by_paste(&emulator, &db, "alice");
    assert_eq!(token_calls(&emulator), 1, "the code exchange");

    // A token Dropbox does not know: a run that used it could not sync at all.
    let env_token = "sl.from-the-environment-unknown-to-dropbox";
    let sync = sync_cli(&db, "alice", &base, Some(env_token));
    let after = stored_credentials(&db, "alice").expect("the tenant is still connected");
    assert_same_credentials("sync with DROPBOX_ACCESS_TOKEN", &before, &after);
    assert!(
        sync.status.success(),
        "the stored credentials win:\n{}",
        sync.all()
    );
    assert!(sync.stdout.contains("Full sync of alice"), "{}", sync.all());
    let notices: Vec<&str> = sync
        .stderr
        .lines()
        .filter(|l| l.contains("DROPBOX_ACCESS_TOKEN"))
        .collect();
    assert!(
        notices.len() == 1 && notices[0].contains("ignored"),
        "one line says the variable was ignored:\n{}",
        sync.stderr
    );
    assert_eq!(
        token_calls(&emulator),
        1,
        "the stored token was good: no refresh"
    );
    let store = SqliteStore::open(&db).unwrap();
    assert!(
        diff_with_truth(&emulator.truth(), &store.records("alice").unwrap(), |_| {
            true
        })
        .is_empty()
    );
    assert!(!store.status("alice").unwrap().needs_reauth);
    assert_no_secret(
        "sync",
        &sync.all(),
        &[
            env_token,
            CLIENT_SECRET,
            before.refresh_token.as_deref().unwrap(),
            &before.access_token,
        ],
    );

    // The refresh token still works: an expired access token is refreshed as before.
    emulator.expire_access_tokens();
    let again = sync_cli(&db, "alice", &base, Some(env_token));
    assert!(again.status.success(), "{}", again.all());
    assert_eq!(token_calls(&emulator), 2, "one refresh");
    let refreshed = stored_credentials(&db, "alice").unwrap();
    assert!(refreshed.access_token != before.access_token);
    assert!(refreshed.access_token != env_token);
    assert_eq!(refreshed.client_id, before.client_id);
    assert!(refreshed.client_secret == before.client_secret);
    assert!(refreshed.refresh_token.is_some());
}

#[test]
fn a_token_in_a_watch_tenants_file_never_replaces_stored_credentials() {
    let emulator = Emulator::start(config(40, 42)).expect("emulator");
    let base = emulator.base_url();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("watch.db");
    // alice: connected by `auth` (refresh token, client secret, expiry).
    let alice = auth_by_paste(&emulator, &db, "alice");
    // bob: a bare access token stored by `connect` earlier, which Dropbox no longer knows.
    let bob = StoredCredentials {
        access_token: "sl.stale-token-of-bob".into(),
        ..Default::default()
    };
    SqliteStore::open(&db)
        .unwrap()
        .put_credentials("bob", &bob)
        .unwrap();

    let file_token_alice = "sl.file-token-unknown-to-dropbox";
    let file = dir.path().join("tenants.toml");
    std::fs::write(
        &file,
        format!(
            "[[tenant]]\nname = \"alice\"\napi_url = \"{base}\"\naccess_token = \"{file_token_alice}\"\n\n\
             [[tenant]]\nname = \"bob\"\napi_url = \"{base}\"\naccess_token = \"{}\"\n",
            emulator.access_token()
        ),
    )
    .unwrap();
    let mut watch = Running::spawn(
        &[
            "watch",
            "--db",
            db.to_str().unwrap(),
            "--tenants-file",
            file.to_str().unwrap(),
            "--no-longpoll",
        ],
        &[],
    );
    let synced = |seen: &[String], tenant: &str| {
        seen.iter()
            .find(|l| l.contains(&format!("{tenant} scheduled ")) && l.contains(" sync"))
            .cloned()
    };
    while synced(&watch.seen, "alice").is_none() || synced(&watch.seen, "bob").is_none() {
        watch.wait_for_line(|l| l.contains(" sync"));
    }
    let (alice_line, bob_line) = (
        synced(&watch.seen, "alice").unwrap(),
        synced(&watch.seen, "bob").unwrap(),
    );
    let status = Command::new("kill")
        .args(["-INT", &watch.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let out = watch.finish();

    let alice_after = stored_credentials(&db, "alice").expect("alice is still connected");
    assert_same_credentials("alice after watch", &alice, &alice_after);
    let bob_after = stored_credentials(&db, "bob").expect("bob is still connected");
    assert_same_credentials("bob after watch", &bob, &bob_after);
    assert!(out.status.success(), "{}", out.all());
    assert!(
        alice_line.contains("alice scheduled full sync:"),
        "alice syncs with her stored credentials: {alice_line}\n{}",
        out.all()
    );
    assert!(
        bob_line.contains("bob scheduled full sync:"),
        "bob syncs with the file's token, for this run: {bob_line}\n{}",
        out.all()
    );
    let notices: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("access_token"))
        .collect();
    assert!(
        notices.len() == 1 && notices[0].contains("alice") && notices[0].contains("ignored"),
        "one line says alice's token in the file was ignored:\n{}",
        out.stderr
    );
    assert_eq!(
        token_calls(&emulator),
        1,
        "no refresh: alice's token was good"
    );
    let store = SqliteStore::open(&db).unwrap();
    for tenant in ["alice", "bob"] {
        assert!(
            diff_with_truth(&emulator.truth(), &store.records(tenant).unwrap(), |_| true)
                .is_empty(),
            "{tenant}"
        );
        assert!(!store.status(tenant).unwrap().needs_reauth, "{tenant}");
    }
    assert_no_secret(
        "watch",
        &out.all(),
        &[
            file_token_alice,
            &emulator.access_token(),
            CLIENT_SECRET,
            alice.refresh_token.as_deref().unwrap(),
        ],
    );
}

#[test]
fn sync_with_a_token_in_the_environment_and_no_stored_credentials_uses_it_for_that_run_only() {
    let emulator = Emulator::start(config(40, 43)).expect("emulator");
    let base = emulator.base_url();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fresh.db");
    let token = emulator.access_token();

    let first = sync_cli(&db, "t", &base, Some(&token));
    assert!(first.status.success(), "{}", first.all());
    assert!(first.stdout.contains("Full sync of t"), "{}", first.all());
    assert!(
        stored_credentials(&db, "t").is_none(),
        "the token is for that run only: nothing is written"
    );
    emulator
        .create_file(
            "/added by hand.txt",
            dropbox_emulator::Content::Bytes(b"new".to_vec()),
        )
        .expect("a new file");
    let second = sync_cli(&db, "t", &base, Some(&token));
    assert!(second.status.success(), "{}", second.all());
    assert!(
        second.stdout.contains("Incremental sync of t"),
        "{}",
        second.all()
    );
    assert!(stored_credentials(&db, "t").is_none());
    let store = SqliteStore::open(&db).unwrap();
    assert!(diff_with_truth(&emulator.truth(), &store.records("t").unwrap(), |_| true).is_empty());
    assert!(!store.status("t").unwrap().needs_reauth);

    // Without the variable, the tenant has no credentials: `connect` stores a token.
    let third = sync_cli(&db, "t", &base, None);
    assert!(!third.status.success(), "{}", third.all());
    for (what, out) in [("first", &first), ("second", &second), ("third", &third)] {
        assert_no_secret(what, &out.all(), &[&token]);
    }
}

#[test]
fn sync_with_a_token_in_the_environment_stands_in_for_a_stored_bare_token_without_replacing_it() {
    let emulator = Emulator::start(config(40, 44)).expect("emulator");
    let base = emulator.base_url();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bare.db");
    // A token stored by `connect` some time ago, which Dropbox no longer accepts.
    let stale = StoredCredentials {
        access_token: "sl.stale-token-from-connect".into(),
        ..Default::default()
    };
    SqliteStore::open(&db)
        .unwrap()
        .put_credentials("t", &stale)
        .unwrap();
    let token = emulator.access_token();
    let sync = sync_cli(&db, "t", &base, Some(&token));
    let after = stored_credentials(&db, "t").expect("still stored");
    assert_same_credentials("sync with DROPBOX_ACCESS_TOKEN", &stale, &after);
    assert!(
        sync.status.success(),
        "the variable's token is used for the run:\n{}",
        sync.all()
    );
    let store = SqliteStore::open(&db).unwrap();
    assert!(diff_with_truth(&emulator.truth(), &store.records("t").unwrap(), |_| true).is_empty());
    assert!(!store.status("t").unwrap().needs_reauth);
    assert_no_secret("sync", &sync.all(), &[&token, &stale.access_token]);
}
