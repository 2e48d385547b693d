//! The leak hunt: every secret the host handles, put through every error path the command line
//! can reach, and none of it may show up on standard output, standard error, or in the JSON
//! log lines (`--log-format json`, everything from trace level up).
//!
//! The secrets, each distinctive so that finding a piece of one is unambiguous: an access
//! token, a refresh token, the client secret (and the HTTP Basic header it travels in), the
//! authorization code and PKCE verifier of an exchange, the sealing keys, and a database
//! password. The paths: tenants files that do not parse, database URLs that do not connect,
//! bad and wrong sealing keys, refreshes the token endpoint refuses, and servers whose errors
//! echo the request they got (headers, form and all). Not covered: the admin credential of an
//! HTTP server, since the host serves none yet.
//!
//! A secret counts as shown when any 12 consecutive characters of it appear, so a secret cut
//! short or half-redacted is caught too.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use dropbox_emulator::{Emulator, EmulatorConfig};
use host_test::credentials::now;
use host_test::secrets::Keyring;
use host_test::store::{RecordStore, SqliteStore, StoredCredentials};

const CLI: &str = env!("CARGO_BIN_EXE_host-test-cli");
const CLIENT_ID: &str = "leak-hunt-app-key";
/// The length of Dropbox's app secrets.
const CLIENT_SECRET: &str = "LkCs7Qw2Zp9Xr4T";
const DB_PASSWORD: &str = "LkDbPw-hunter2-Xq8Rm3";
/// Every environment variable a secret could come from: none is inherited from the test's
/// own environment.
const SECRET_VARIABLES: [&str; 5] = [
    "HOST_TEST_ACCESS_TOKEN",
    "DROPBOX_ACCESS_TOKEN",
    "DROPBOX_CLIENT_SECRET",
    "HOST_TEST_SECRET_KEY",
    "PGPASSWORD",
];
/// Everything at trace level, the transport and database crates included, but for the
/// compiler's and runtime's own bookkeeping (which sees no secret, and would multiply the
/// volume a hundredfold).
const LOG_FILTER: &str = "trace,wasmtime=info,wasmtime_wasi=info,wasmtime_cranelift=info,\
wasmtime_environ=info,cranelift_codegen=info,cranelift_frontend=info,cranelift_wasm=info,\
regalloc2=info,wasmparser=info";
/// The smallest run of a secret's characters that counts as showing it.
const WINDOW: usize = 12;

/// An access token shaped like Dropbox's (`sl.` and well over 100 characters).
fn access_token() -> String {
    format!("sl.LkAccess{}", "Aq3Zw8Rt5Yx1".repeat(11))
}

/// A refresh token shaped like Dropbox's (64 characters).
fn refresh_token() -> String {
    format!("LkRefresh{}", "Mn4Bv7Cx2Lp0".repeat(5))[..64].to_string()
}

fn basic_header_value() -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
}

/// Fail if any `WINDOW` consecutive characters of a secret (or the whole of a shorter one)
/// appear in `text`. The message never quotes the secret.
fn assert_hidden(what: &str, text: &str, secrets: &[(&str, &str)]) {
    for (name, secret) in secrets {
        let chars: Vec<char> = secret.chars().collect();
        let width = WINDOW.min(chars.len());
        for start in 0..=chars.len() - width {
            let piece: String = chars[start..start + width].iter().collect();
            if let Some(at) = text.find(&piece) {
                let context_start = text[..at]
                    .char_indices()
                    .rev()
                    .nth(60)
                    .map_or(0, |(i, _)| i);
                panic!(
                    "{what}: {name} shows (characters {start}.. of it, at byte {at}); the text \
                     before it: {:?}",
                    &text[context_start..at]
                );
            }
        }
    }
}

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Output {
    fn all(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// The JSON log lines of standard error (every line before the final `error: ...`),
    /// checked to be JSON, so that what was searched really is the JSON logs.
    fn log_lines(&self) -> Vec<serde_json::Value> {
        self.stderr
            .lines()
            .take_while(|l| !l.starts_with("error: "))
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {l}\n{}", self.all()))
            })
            .collect()
    }

    fn check(&self, what: &str, secrets: &[(&str, &str)]) {
        self.log_lines();
        assert_hidden(&format!("{what} (stdout)"), &self.stdout, secrets);
        assert_hidden(&format!("{what} (stderr)"), &self.stderr, secrets);
    }
}

/// The CLI with JSON logs at trace level, no secret inherited from the environment, and a
/// compile cache shared by the runs of one test.
fn command(cache: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(CLI);
    cmd.args(args)
        .args(["--log-format", "json"])
        .env("RUST_LOG", LOG_FILTER)
        .env("HOST_TEST_CACHE_DIR", cache)
        .stdin(Stdio::null());
    for name in SECRET_VARIABLES {
        cmd.env_remove(name);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn run(cache: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = command(cache, args, env).output().expect("the CLI runs");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// A temp dir, with a private cache directory inside it.
fn dirs() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    (dir, cache)
}

// ---- a server whose errors echo the request ----

/// How the echoing server answers every request.
#[derive(Clone, Copy)]
enum Echo {
    /// 500, the raw request (head and body) as plain text.
    Plain,
    /// 400, an OAuth error object whose `error` and `error_description` are the raw request.
    OAuthJson,
}

/// A real HTTP server on loopback that answers every request with the request itself (its
/// Authorization header first), and keeps what it received.
struct EchoServer {
    base_url: String,
    received: Arc<Mutex<Vec<String>>>,
}

impl EchoServer {
    fn start(style: Echo) -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let received: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let log = log.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let request = read_request(&mut stream);
                    log.lock().unwrap().push(request.clone());
                    // The credentials first (an error excerpt is short), then everything.
                    let credentials = request
                        .lines()
                        .filter(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                        .collect::<Vec<_>>()
                        .join(" ");
                    let request = format!("{credentials} {request}");
                    let (status, body) = match style {
                        Echo::Plain => ("500 Internal Server Error", request),
                        Echo::OAuthJson => (
                            "400 Bad Request",
                            serde_json::json!({"error": request, "error_description": request})
                                .to_string(),
                        ),
                    };
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        EchoServer { base_url, received }
    }

    fn received(&self) -> String {
        self.received.lock().unwrap().join("\n")
    }
}

/// One HTTP/1.1 request: the head, and as much body as Content-Length says.
fn read_request(stream: &mut std::net::TcpStream) -> String {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
        let end = line == "\r\n";
        head.push_str(&line);
        if end {
            break;
        }
    }
    let mut body = vec![0u8; length];
    let _ = reader.read_exact(&mut body);
    head + &String::from_utf8_lossy(&body)
}

// ---- stored credentials ----

/// Store `creds` for `tenant` in the SQLite database `db`, sealed with `key`.
fn store_credentials(db: &Path, key: &str, tenant: &str, creds: &StoredCredentials) {
    let keyring = Keyring::parse(key, "test").unwrap();
    let store = SqliteStore::open(db).unwrap().with_keyring(keyring);
    store.put_credentials(tenant, creds).unwrap();
}

fn oauth_credentials(expires_in: i64) -> StoredCredentials {
    StoredCredentials {
        access_token: access_token(),
        refresh_token: Some(refresh_token()),
        expires_at: Some(now() + expires_in),
        client_id: Some(CLIENT_ID.into()),
        client_secret: Some(CLIENT_SECRET.into()),
        account_id: None,
    }
}

fn token_secrets<'a>(access: &'a str, refresh: &'a str, basic: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("the access token", access),
        ("the refresh token", refresh),
        ("the client secret", CLIENT_SECRET),
        ("the Basic header's value", basic),
    ]
}

// ---- the hunt ----

#[test]
fn tenants_files_that_do_not_parse_never_show_their_tokens() {
    let (dir, cache) = dirs();
    let db = dir.path().join("watch.db");
    let token = access_token();
    let files = [
        // The reproduction of the issue: a misspelt key on the token's line.
        format!("[[tenant]]\nname = \"t\"\nacces_token = \"{token}\"\n"),
        // A string left open.
        format!("[[tenant]]\nname = \"t\"\naccess_token = \"{token}\n"),
        // A token where a number belongs, and a token in a list.
        format!("[[tenant]]\nname = \"t\"\ninterval_minutes = \"{token}\"\n"),
        format!("[[tenant]]\nname = \"t\"\naccess_token = [\"{token}\"]\n"),
        // The key twice, and a token with no key.
        format!(
            "[[tenant]]\nname = \"t\"\naccess_token = \"{token}\"\naccess_token = \"{token}\"\n"
        ),
        format!("[[tenant]]\nname = \"t\"\n\"{token}\"\n"),
        format!("[[tenant]]\nname = \"t\"\n{token}\n"),
    ];
    let mut messages = Vec::new();
    for (i, text) in files.iter().enumerate() {
        let file = dir.path().join(format!("tenants-{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let out = run(
            &cache,
            &[
                "watch",
                "--db",
                path_str(&db),
                "--tenants-file",
                path_str(&file),
            ],
            &[],
        );
        out.check(
            &format!("tenants file {i}"),
            &[("the access token", &token)],
        );
        assert_eq!(out.code, Some(6), "invalid configuration: {}", out.all());
        assert!(
            out.stderr.contains("is not a valid tenants file: line "),
            "the position is given: {}",
            out.all()
        );
        messages.push(out.stderr);
    }
    assert!(
        messages[0].contains("line 3, column 1: unknown field `acces_token`"),
        "{}",
        messages[0]
    );
}

#[test]
fn database_urls_never_show_their_password() {
    let (_dir, cache) = dirs();
    let key = Keyring::generate_key();
    let encoded: String = url::form_urlencoded::byte_serialize(DB_PASSWORD.as_bytes()).collect();
    let urls = [
        // Nothing listens on port 1: the connection is refused.
        format!("postgres://leak:{DB_PASSWORD}@127.0.0.1:1/leak"),
        format!("postgresql://leak@127.0.0.1:1/leak?sslmode=disable&password={encoded}"),
        // The server answers, and refuses: no such database.
        format!("postgres://postgres:{DB_PASSWORD}@127.0.0.1:5432/leak_hunt_no_such_db"),
        format!("postgres://postgres@127.0.0.1:5432/leak_hunt_no_such_db?password={encoded}"),
        // Not a URL the parser takes.
        format!("postgres://leak:{DB_PASSWORD}@[::1/leak"),
        // A misspelt scheme, which would otherwise be taken for a file name.
        format!("postgress://leak:{DB_PASSWORD}@127.0.0.1:1/leak"),
    ];
    let secrets = [("the database password", DB_PASSWORD)];
    for url in &urls {
        for args in [
            vec!["status", "--db", url.as_str(), "--json"],
            vec!["sync", "--db", url.as_str()],
            vec!["watch", "--db", url.as_str(), "--tenant", "t"],
            vec!["secrets", "rotate", "--db", url.as_str()],
            vec!["events", "--db", url.as_str(), "--consumer", "c"],
        ] {
            let out = run(&cache, &args, &[("HOST_TEST_SECRET_KEY", &key)]);
            assert_ne!(out.code, Some(0), "{args:?}: {}", out.all());
            out.check(&format!("{args:?}"), &secrets);
        }
        // Without a key too: the message about the missing key names no URL either.
        let out = run(&cache, &["status", "--db", url, "--json"], &[]);
        assert_ne!(out.code, Some(0), "{}", out.all());
        out.check("status without a key", &secrets);
    }
}

#[test]
fn bad_missing_and_wrong_sealing_keys_are_never_shown() {
    let (dir, cache) = dirs();
    let db = dir.path().join("keys.db");
    let key = Keyring::generate_key();
    let other = Keyring::generate_key();
    let short = base64::engine::general_purpose::STANDARD.encode(b"LkShortKey-16byt");
    let not_base64 = "LkNotBase64-Key!!-Zq7Wm2Xr9";
    let secrets = [
        ("the sealing key", key.as_str()),
        ("the other sealing key", other.as_str()),
        ("the short key", short.as_str()),
        ("the malformed key", not_base64),
        ("the access token", &access_token()),
        ("the refresh token", &refresh_token()),
        ("the client secret", CLIENT_SECRET),
    ];
    store_credentials(&db, &key, "t", &oauth_credentials(3600));
    let db = path_str(&db);

    let mut outputs = Vec::new();
    for env_key in [
        not_base64.to_string(),
        short.clone(),
        format!("{key},{not_base64}"),
        // A wrong key: the stored credentials do not open.
        other.clone(),
    ] {
        for args in [
            vec!["status", "--db", db, "--tenant", "t", "--json"],
            vec!["sync", "--db", db, "--tenant", "t"],
            vec!["secrets", "rotate", "--db", db],
        ] {
            let out = run(&cache, &args, &[("HOST_TEST_SECRET_KEY", &env_key)]);
            assert_ne!(out.code, Some(0), "{args:?}: {}", out.all());
            outputs.push(out);
        }
    }
    // Key files: open to others, holding a bad key, empty.
    let key_file = dir.path().join("keys");
    for (text, mode) in [
        (format!("{key}\n"), 0o644),
        (format!("{key}\n{not_base64}\n"), 0o600),
        (format!("{short}\n"), 0o600),
        (String::new(), 0o600),
    ] {
        std::fs::write(&key_file, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let out = run(
            &cache,
            &[
                "status",
                "--db",
                db,
                "--tenant",
                "t",
                "--secret-key-file",
                path_str(&key_file),
            ],
            &[],
        );
        assert_ne!(out.code, Some(0), "{}", out.all());
        outputs.push(out);
    }
    // Rotation that works: the keys are used, never shown.
    let out = run(
        &cache,
        &["secrets", "rotate", "--db", db, "--json"],
        &[("HOST_TEST_SECRET_KEY", &format!("{other},{key}"))],
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    outputs.push(out);
    for (i, out) in outputs.iter().enumerate() {
        out.check(&format!("key run {i}"), &secrets);
    }
    assert!(
        outputs
            .iter()
            .any(|o| o.stderr.contains("not in the keyring")),
        "the wrong key was reached"
    );
}

#[test]
fn refused_refreshes_never_show_a_token_or_the_client_secret() {
    let emulator = Emulator::start(EmulatorConfig {
        files: 5,
        seed: 41,
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        ..Default::default()
    })
    .expect("the emulator starts");
    let base = emulator.base_url();
    let (dir, cache) = dirs();
    let key = Keyring::generate_key();
    let env = [("HOST_TEST_SECRET_KEY", key.as_str())];
    let db = dir.path().join("refresh.db");
    let db_s = path_str(&db);
    let (access, refresh, basic) = (access_token(), refresh_token(), basic_header_value());
    let mut secrets = token_secrets(&access, &refresh, &basic);

    // Tokens the emulator never issued: the expired access token's refresh is refused
    // (invalid_grant), and on the next run the unexpired one is refused with a 401.
    store_credentials(&db, &key, "t", &oauth_credentials(-60));
    let refused = run(
        &cache,
        &["sync", "--db", db_s, "--tenant", "t", "--api-url", &base],
        &env,
    );
    assert_eq!(refused.code, Some(3), "auth required: {}", refused.all());
    assert!(
        refused.stderr.contains("invalid_grant"),
        "{}",
        refused.all()
    );
    store_credentials(&db, &key, "u", &oauth_credentials(3600));
    let rejected = run(
        &cache,
        &["sync", "--db", db_s, "--tenant", "u", "--api-url", &base],
        &env,
    );
    assert_eq!(rejected.code, Some(3), "auth required: {}", rejected.all());

    // Real tokens, revoked at the source.
    let pair = emulator.issue_tokens(&e2e_tests::SCOPES, 14_400);
    let mut creds = oauth_credentials(-60);
    creds.access_token = pair.access_token.clone();
    creds.refresh_token = Some(pair.refresh_token.clone());
    store_credentials(&db, &key, "v", &creds);
    emulator.revoke_all();
    let revoked = run(
        &cache,
        &["sync", "--db", db_s, "--tenant", "v", "--api-url", &base],
        &env,
    );
    assert_eq!(revoked.code, Some(3), "auth required: {}", revoked.all());
    let status = run(
        &cache,
        &["status", "--db", db_s, "--tenant", "v", "--json"],
        &env,
    );
    // A token given for one run, refused.
    let run_token = run(
        &cache,
        &["sync", "--db", db_s, "--tenant", "w", "--api-url", &base],
        &[env[0], ("HOST_TEST_ACCESS_TOKEN", &access)],
    );
    assert_ne!(run_token.code, Some(0), "{}", run_token.all());

    secrets.push(("the revoked access token", &pair.access_token));
    secrets.push(("the revoked refresh token", &pair.refresh_token));
    for (what, out) in [
        ("refused refresh", &refused),
        ("rejected token", &rejected),
        ("revoked tokens", &revoked),
        ("status", &status),
        ("refused run token", &run_token),
    ] {
        out.check(what, &secrets);
    }
}

#[test]
fn servers_that_echo_the_request_in_their_errors_never_get_a_secret_shown() {
    let (dir, cache) = dirs();
    let key = Keyring::generate_key();
    let env = [("HOST_TEST_SECRET_KEY", key.as_str())];
    let db = dir.path().join("echo.db");
    let db_s = path_str(&db);
    let (access, refresh, basic) = (access_token(), refresh_token(), basic_header_value());
    let secrets = token_secrets(&access, &refresh, &basic);

    for style in [Echo::Plain, Echo::OAuthJson] {
        let echo = EchoServer::start(style);
        // The API echoes the bearer token; then the token endpoint echoes the refresh form.
        store_credentials(&db, &key, "api", &oauth_credentials(3600));
        let api = run(
            &cache,
            &[
                "sync",
                "--db",
                db_s,
                "--tenant",
                "api",
                "--api-url",
                &echo.base_url,
            ],
            &env,
        );
        store_credentials(&db, &key, "refresh", &oauth_credentials(-60));
        let refreshed = run(
            &cache,
            &[
                "sync",
                "--db",
                db_s,
                "--tenant",
                "refresh",
                "--api-url",
                &echo.base_url,
            ],
            &env,
        );
        let received = echo.received();
        assert!(
            received.contains(&format!("Bearer {access}")),
            "the API call reached the echo"
        );
        assert!(
            received.contains(&format!("refresh_token={refresh}")),
            "the refresh reached the echo"
        );
        for (what, out) in [("API echo", &api), ("refresh echo", &refreshed)] {
            assert_ne!(out.code, Some(0), "{what}: {}", out.all());
            out.check(what, &secrets);
        }

        // `auth`: the code exchange (Basic header, code, verifier) at an echoing endpoint.
        let (out, code, verifier) = auth_against(&cache, &echo, db_s, &env);
        assert_ne!(out.code, Some(0), "{}", out.all());
        let mut all = secrets.clone();
        all.push(("the authorization code", &code));
        all.push(("the PKCE verifier", &verifier));
        out.check("code exchange echo", &all);
    }
}

/// `auth` whose redirect the test delivers with a code of its own, exchanged at `echo`.
/// Returns the output, the code, and the verifier the endpoint received.
fn auth_against(
    cache: &Path,
    echo: &EchoServer,
    db: &str,
    env: &[(&str, &str)],
) -> (Output, String, String) {
    let mut cmd = command(
        cache,
        &[
            "auth",
            "--db",
            db,
            "--tenant",
            "exchange",
            "--api-url",
            &echo.base_url,
            "--client-id",
            CLIENT_ID,
            "--redirect-base",
            "http://127.0.0.1:0",
            "--no-browser",
            "--no-sync",
        ],
        env,
    );
    cmd.env("DROPBOX_CLIENT_SECRET", CLIENT_SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the CLI starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut seen = String::new();
    let url = loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            panic!("no authorization URL: {seen}");
        }
        seen.push_str(&line);
        if line.starts_with("http") && line.contains("/oauth2/authorize?") {
            break url::Url::parse(line.trim()).unwrap();
        }
    };
    let param = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap()
    };
    let code = "LkAuthCode-Wq5Ty8Pz3Nv6".to_string();
    let redirect = format!(
        "{}?code={code}&state={}",
        param("redirect_uri"),
        param("state")
    );
    let agent = std::net::TcpStream::connect(
        url::Url::parse(&redirect)
            .unwrap()
            .socket_addrs(|| None)
            .unwrap()[0],
    );
    let mut agent = agent.expect("the listener accepts");
    let target = &redirect[redirect.find("/connectors").unwrap()..];
    write!(agent, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut page = String::new();
    let _ = agent.read_to_string(&mut page);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest);
    seen.push_str(&rest);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "auth did not finish");
        std::thread::sleep(Duration::from_millis(20));
    };
    let received = echo.received();
    let verifier = received
        .split("code_verifier=")
        .nth(1)
        .and_then(|rest| rest.split(['&', '\r', '\n']).next())
        .expect("the exchange reached the echo")
        .to_string();
    assert!(received.contains(&format!("Basic {}", basic_header_value())));
    (
        Output {
            code: status.code(),
            stdout: seen,
            stderr: stderr.join().unwrap(),
        },
        code,
        verifier,
    )
}
