//! Secrets at rest: access tokens, refresh tokens and client secrets are sealed before they are
//! written to a store (SQLite or PostgreSQL) and opened when read, with a key the host is given.
//! A database file or dump alone reveals no credential.
//!
//! # The sealed form
//!
//! `v1:<key id>:<base64 of nonce ‖ ciphertext ‖ tag>`, with XChaCha20-Poly1305 (an AEAD) and a
//! fresh random 24-byte nonce per value (random nonces of that size never collide in
//! practice, so no counter has to be kept across processes or machines). The key id is derived
//! from the key itself (a truncated SHA-256 of it under a fixed label), so it names the key
//! without revealing it and two hosts given the same key agree on its id without configuration.
//!
//! Each value is bound to where it is stored: the *context* (for example
//! `tenant-a/credentials.refresh_token`) is authenticated with the ciphertext, together with the
//! envelope's version and key id. A sealed value copied into another tenant's row or another
//! column does not open ([`SecretError::Tampered`]).
//!
//! # Keys
//!
//! A key is 32 random bytes, written in base64 (`head -c 32 /dev/urandom | base64`). The host
//! takes its keys from `--secret-key-file <file>` when given, otherwise from the environment
//! variable `HOST_TEST_SECRET_KEY`. Either holds one or more keys, one per line in the file
//! (blank lines and `#` comments are ignored) or separated by commas or whitespace in the
//! variable: the **first key is the current one** (every new value is sealed under it); the
//! others are kept only to open values sealed under them. A key file must be readable by its
//! owner only (mode 600), as for an SSH key.
//!
//! With no key configured the keyring is empty: the store still opens and serves records, but
//! storing or reading credentials fails with [`SecretError::MissingKey`], which says how to
//! provide one. Nothing falls back to plaintext.
//!
//! # Rotating the key
//!
//! 1. Generate a new key: `head -c 32 /dev/urandom | base64`.
//! 2. Put it on the **first** line of the key file (or first in `HOST_TEST_SECRET_KEY`) and keep
//!    the old key on a line below it.
//! 3. Restart every host process (every worker) with that key list. From then on new values
//!    are sealed under the new key, and values sealed under the old one still open. (Every
//!    worker first: one still running with the old key alone would go on sealing under it.)
//! 4. Run the store's rotate pass once (`rotate_secrets` of the PostgreSQL or the SQLite
//!    store). It re-seals, in one transaction, every stored secret that is not under the
//!    current key, and reports how many it re-sealed and which key ids seal the stored values.
//!    A value it cannot open (its key is not in the list) fails the pass and nothing changes.
//! 5. When only the current key id is in use (the pass's report, or
//!    `PgStore::secret_key_ids_in_use`, which opens nothing), remove the old key from the file
//!    (or variable) and restart again. A value still sealed under a removed key fails with
//!    [`SecretError::WrongKey`], naming that key's id, so nothing is lost silently: putting the
//!    old key back makes it readable again.
//!
//! A suspected key leak is handled the same way, followed by revoking the tenants' tokens at
//! the source, since whoever held the old key and a copy of the database could open them.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore as _;
use sha2::{Digest, Sha256};

use crate::store::StoredCredentials;

/// The environment variable holding the host's key list (base64 keys, current first).
pub const SECRET_KEY_ENV: &str = "HOST_TEST_SECRET_KEY";

/// The envelope's version tag, the first field of every sealed value.
const VERSION: &str = "v1";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
/// Poly1305's tag, appended to the ciphertext.
const TAG_LEN: usize = 16;
/// Hex digits of the key id: 48 bits tell a handful of keys apart with no realistic collision.
const KEY_ID_HEX_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error(
        "no secret key is configured: set {SECRET_KEY_ENV} to a base64 32-byte key or pass \
         --secret-key-file <file> (make a key with `head -c 32 /dev/urandom | base64`)"
    )]
    MissingKey,
    #[error(
        "the value was sealed under key {key_id}, which is not in the keyring; add that key \
         (below the current one) to open it"
    )]
    WrongKey { key_id: String },
    #[error(
        "the value sealed under key {key_id} does not open: it was altered, or copied from \
         another field or tenant"
    )]
    Tampered { key_id: String },
    #[error("not a sealed value: {0}")]
    Malformed(String),
    #[error("invalid secret key from {origin}: {reason}")]
    InvalidKey { origin: String, reason: String },
    #[error("cannot read the key file {path}: {message}")]
    KeyFile { path: PathBuf, message: String },
    #[error("the key file {path} may be read by other users (mode {mode:o}); run chmod 600 on it")]
    KeyFileExposed { path: PathBuf, mode: u32 },
    /// The file exists but holds nothing: a key file written in place by an older host that
    /// was interrupted leaves this. No value can have been sealed under it.
    #[error(
        "the key file {path} is empty, so no credential can have been sealed under it (an \
         interrupted creation?): put the key in it, or, for the key file beside a SQLite \
         database, delete it to have a new one made"
    )]
    EmptyKeyFile { path: PathBuf },
    #[error("the value could not be sealed")]
    SealFailed,
}

/// One key, kept only as a ready cipher (the raw bytes are not retained) and its id.
#[derive(Clone)]
struct SecretKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl SecretKey {
    fn from_bytes(bytes: &[u8; KEY_LEN]) -> SecretKey {
        let mut hasher = Sha256::new();
        // A fixed label keeps the id unrelated to any other use of a hash of the key.
        hasher.update(b"connector-runtime secret key id\0");
        hasher.update(bytes);
        let digest = hasher.finalize();
        let id: String = digest
            .iter()
            .take(KEY_ID_HEX_LEN / 2)
            .map(|b| format!("{b:02x}"))
            .collect();
        SecretKey {
            id,
            cipher: XChaCha20Poly1305::new(Key::from_slice(bytes)),
        }
    }
}

/// The keys a host holds: the current one seals, every one opens.
#[derive(Clone, Default)]
pub struct Keyring {
    /// Current key first.
    keys: Vec<SecretKey>,
}

impl std::fmt::Debug for Keyring {
    // Only the ids: key material never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.key_ids())
            .finish()
    }
}

/// The parts of a sealed value.
struct Envelope<'a> {
    key_id: &'a str,
    payload: Vec<u8>,
}

impl Keyring {
    /// A keyring without keys: every seal and open fails with [`SecretError::MissingKey`].
    pub fn empty() -> Keyring {
        Keyring::default()
    }

    /// Keys from text: base64 keys separated by newlines, commas or whitespace, `#` starting a
    /// comment to the end of its line; the first is the current key. `origin` names where the
    /// text came from, for error messages (never the text itself).
    pub fn parse(text: &str, origin: &str) -> Result<Keyring, SecretError> {
        let mut keys: Vec<SecretKey> = Vec::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            for word in line
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|w| !w.is_empty())
            {
                let position = keys.len() + 1;
                let bytes = BASE64.decode(word).map_err(|e| SecretError::InvalidKey {
                    origin: origin.to_string(),
                    reason: format!("key {position} is not base64 ({e})"),
                })?;
                let bytes: [u8; KEY_LEN] =
                    bytes
                        .try_into()
                        .map_err(|b: Vec<u8>| SecretError::InvalidKey {
                            origin: origin.to_string(),
                            reason: format!("key {position} is {} bytes, not {KEY_LEN}", b.len()),
                        })?;
                let key = SecretKey::from_bytes(&bytes);
                // The same key listed twice is harmless; keep its first (highest) place.
                if !keys.iter().any(|k| k.id == key.id) {
                    keys.push(key);
                }
            }
        }
        if keys.is_empty() {
            return Err(SecretError::InvalidKey {
                origin: origin.to_string(),
                reason: "it holds no key".into(),
            });
        }
        Ok(Keyring { keys })
    }

    /// Keys from a key file, which must not be readable by other users.
    pub fn from_file(path: &Path) -> Result<Keyring, SecretError> {
        let metadata = std::fs::metadata(path).map_err(|e| SecretError::KeyFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(SecretError::KeyFileExposed {
                    path: path.to_path_buf(),
                    mode,
                });
            }
        }
        #[cfg(not(unix))]
        let _ = metadata;
        let text = std::fs::read_to_string(path).map_err(|e| SecretError::KeyFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if text.trim().is_empty() {
            return Err(SecretError::EmptyKeyFile {
                path: path.to_path_buf(),
            });
        }
        Keyring::parse(&text, &format!("the key file {}", path.display()))
    }

    /// Keys from `HOST_TEST_SECRET_KEY`; `None` when it is unset or empty.
    pub fn from_env() -> Result<Option<Keyring>, SecretError> {
        match std::env::var(SECRET_KEY_ENV) {
            Ok(text) if !text.trim().is_empty() => Keyring::parse(&text, SECRET_KEY_ENV).map(Some),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::InvalidKey {
                origin: SECRET_KEY_ENV.into(),
                reason: "it is not valid UTF-8".into(),
            }),
        }
    }

    /// The host's keyring: the key file when one is given (it wins over the variable, being
    /// the explicit choice), else the variable, else an empty keyring.
    pub fn load(key_file: Option<&Path>) -> Result<Keyring, SecretError> {
        match key_file {
            Some(path) => Keyring::from_file(path),
            None => Ok(Keyring::from_env()?.unwrap_or_default()),
        }
    }

    /// The key file a SQLite database uses when the host is given no key: `<db>.key`, beside
    /// the database.
    pub fn beside_database_path(db: &Path) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push(".key");
        PathBuf::from(name)
    }

    /// The keys of the key file beside a SQLite database ([`Keyring::beside_database_path`]);
    /// `None` when there is no such file yet.
    pub fn beside_database(db: &Path) -> Result<Option<Keyring>, SecretError> {
        let path = Keyring::beside_database_path(db);
        if !path.exists() {
            return Ok(None);
        }
        Keyring::from_file(&path).map(Some)
    }

    /// The keys of the key file beside a SQLite database, creating it (one new random key,
    /// readable by its owner only) when there is none: the out-of-the-box setup, where the
    /// host was given no key and the database and its key live on the same machine anyway.
    ///
    /// The file appears whole or not at all: the key is written to a temporary file in the
    /// same directory (mode 0600) and synced, then hard-linked to its name, which never
    /// replaces an existing file, and the directory is synced. A crash leaves at most a
    /// stray temporary file, never an empty key file; two processes creating it at once end
    /// up with the one key whose link came first.
    pub fn beside_database_or_create(db: &Path) -> Result<Keyring, SecretError> {
        let path = Keyring::beside_database_path(db);
        if let Some(keyring) = Keyring::beside_database(db)? {
            return Ok(keyring);
        }
        let text = format!(
            "# Secret key of {} (created by host-test; keep it with the database; see \
             `host-test secrets --help` to rotate)\n{}\n",
            db.display(),
            Keyring::generate_key()
        );
        match create_no_replace(&path, text.as_bytes()) {
            Ok(()) => {
                tracing::info!(key_file = %path.display(), "no secret key given: created one beside the database to seal credentials");
                Keyring::from_file(&path)
            }
            // Another process created it first: use its key.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Keyring::from_file(&path),
            Err(e) => Err(SecretError::KeyFile {
                path,
                message: e.to_string(),
            }),
        }
    }

    /// A new random key in the form the key file and the variable take.
    pub fn generate_key() -> String {
        let mut bytes = [0u8; KEY_LEN];
        rand::rng().fill_bytes(&mut bytes);
        BASE64.encode(bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The id of the key new values are sealed under.
    pub fn current_key_id(&self) -> Option<&str> {
        self.keys.first().map(|k| k.id.as_str())
    }

    /// Every key's id, current first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// Seal `plaintext` under the current key, bound to `context` (where it will be stored).
    pub fn seal(&self, plaintext: &str, context: &str) -> Result<String, SecretError> {
        let key = self.keys.first().ok_or(SecretError::MissingKey)?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = associated_data(&key.id, context);
        let ciphertext = key
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| SecretError::SealFailed)?;
        let mut payload = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        payload.extend_from_slice(&nonce);
        payload.extend_from_slice(&ciphertext);
        Ok(format!("{VERSION}:{}:{}", key.id, BASE64.encode(payload)))
    }

    /// Open a value sealed (under any key of the keyring) for the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<String, SecretError> {
        if self.keys.is_empty() {
            return Err(SecretError::MissingKey);
        }
        let envelope = parse_envelope(sealed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == envelope.key_id)
            .ok_or_else(|| SecretError::WrongKey {
                key_id: envelope.key_id.to_string(),
            })?;
        let (nonce, ciphertext) = envelope.payload.split_at(NONCE_LEN);
        let aad = associated_data(&key.id, context);
        let plaintext = key
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| SecretError::Tampered {
                key_id: key.id.clone(),
            })?;
        // The plaintext was a `&str` when sealed; anything else is a forgery that got past
        // the tag, which cannot happen, but outside data is never unwrapped.
        String::from_utf8(plaintext).map_err(|_| SecretError::Tampered {
            key_id: key.id.clone(),
        })
    }

    /// The value re-sealed under the current key, or `None` when it already is (the rotate
    /// pass writes only what changes).
    pub fn reseal(&self, sealed: &str, context: &str) -> Result<Option<String>, SecretError> {
        let current = self.current_key_id().ok_or(SecretError::MissingKey)?;
        if sealed_key_id(sealed)? == current {
            return Ok(None);
        }
        let plaintext = self.open(sealed, context)?;
        self.seal(&plaintext, context).map(Some)
    }
}

/// Create `path` holding `contents` (mode 0600), atomically and without replacing a file that
/// is already there (`AlreadyExists`): temporary file, fsync, link(2) to the name, fsync of the
/// directory.
fn create_no_replace(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".key-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o600));
    }
    // Removed when dropped, whatever happens below: only the link keeps the key.
    let mut tmp = builder.tempfile_in(&dir)?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    std::fs::hard_link(tmp.path(), path)?;
    drop(tmp);
    sync_dir(&dir)
}

/// Make a directory's entries durable (the new name of a file linked into it).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// What a rotate pass did: how many stored secrets it re-sealed under the current key, how
/// many already were, and how many values each key id seals afterwards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationReport {
    pub resealed: u64,
    pub unchanged: u64,
    /// (key id, values sealed under it), in the order first seen.
    pub key_ids_in_use: Vec<(String, u64)>,
}

impl RotationReport {
    /// Count one stored value sealed under `key_id`.
    pub fn count_in_use(&mut self, key_id: &str) {
        match self.key_ids_in_use.iter_mut().find(|(id, _)| id == key_id) {
            Some((_, n)) => *n += 1,
            None => self.key_ids_in_use.push((key_id.to_string(), 1)),
        }
    }
}

/// Whether `value` has the sealed form (a store migrating plaintext written by an older host
/// seals the values for which this is false).
pub fn is_sealed(value: &str) -> bool {
    parse_envelope(value).is_ok()
}

/// The id of the key a sealed value was sealed under.
pub fn sealed_key_id(sealed: &str) -> Result<&str, SecretError> {
    parse_envelope(sealed).map(|e| e.key_id)
}

/// The context of a tenant's secret column, e.g. `acme/credentials.access_token`. A tenant
/// name cannot forge another's context: the name is length-prefixed.
pub fn credential_context(tenant: &str, column: &str) -> String {
    format!("{}:{tenant}/credentials.{column}", tenant.len())
}

/// The credential columns that hold secrets, by the names their contexts use.
const ACCESS: &str = "access_token";
const REFRESH: &str = "refresh_token";
const CLIENT_SECRET: &str = "client_secret";

/// `creds` as a store writes them: the access token, refresh token and client secret sealed
/// for this tenant, the other fields as they are. Both backends write through this.
pub fn seal_credentials(
    keyring: &Keyring,
    tenant: &str,
    creds: &StoredCredentials,
) -> Result<StoredCredentials, SecretError> {
    let seal = |column: &str, value: &str| keyring.seal(value, &credential_context(tenant, column));
    Ok(StoredCredentials {
        access_token: seal(ACCESS, &creds.access_token)?,
        refresh_token: creds
            .refresh_token
            .as_deref()
            .map(|v| seal(REFRESH, v))
            .transpose()?,
        client_secret: creds
            .client_secret
            .as_deref()
            .map(|v| seal(CLIENT_SECRET, v))
            .transpose()?,
        ..creds.clone()
    })
}

/// The credentials a store read (sealed), opened.
pub fn open_credentials(
    keyring: &Keyring,
    tenant: &str,
    sealed: StoredCredentials,
) -> Result<StoredCredentials, SecretError> {
    let open = |column: &str, value: &str| keyring.open(value, &credential_context(tenant, column));
    Ok(StoredCredentials {
        access_token: open(ACCESS, &sealed.access_token)?,
        refresh_token: sealed
            .refresh_token
            .as_deref()
            .map(|v| open(REFRESH, v))
            .transpose()?,
        client_secret: sealed
            .client_secret
            .as_deref()
            .map(|v| open(CLIENT_SECRET, v))
            .transpose()?,
        ..sealed
    })
}

/// One row of the rotate pass: re-seal, in place, each secret of the tenant's sealed
/// credentials that is not under the current key, counting into `report`. True when the row
/// changed and must be written back.
pub fn reseal_credentials(
    keyring: &Keyring,
    tenant: &str,
    sealed: &mut StoredCredentials,
    report: &mut RotationReport,
) -> Result<bool, SecretError> {
    let current = keyring
        .current_key_id()
        .ok_or(SecretError::MissingKey)?
        .to_string();
    let mut changed = false;
    let mut reseal = |column: &str, value: &mut String| -> Result<(), SecretError> {
        match keyring.reseal(value, &credential_context(tenant, column))? {
            Some(resealed) => {
                *value = resealed;
                report.resealed += 1;
                changed = true;
            }
            None => report.unchanged += 1,
        }
        report.count_in_use(&current);
        Ok(())
    };
    reseal(ACCESS, &mut sealed.access_token)?;
    if let Some(v) = sealed.refresh_token.as_mut() {
        reseal(REFRESH, v)?;
    }
    if let Some(v) = sealed.client_secret.as_mut() {
        reseal(CLIENT_SECRET, v)?;
    }
    Ok(changed)
}

fn associated_data(key_id: &str, context: &str) -> Vec<u8> {
    // The version and key id are authenticated too, so an envelope's header cannot be edited
    // to steer which key is tried.
    format!("{VERSION}:{key_id}:{context}").into_bytes()
}

fn parse_envelope(sealed: &str) -> Result<Envelope<'_>, SecretError> {
    let mut parts = sealed.splitn(3, ':');
    let (Some(version), Some(key_id), Some(body)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SecretError::Malformed(
            "expected v1:<key id>:<base64>".into(),
        ));
    };
    if version != VERSION {
        return Err(SecretError::Malformed(format!(
            "unknown envelope version {version:?}"
        )));
    }
    if key_id.len() != KEY_ID_HEX_LEN || !key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SecretError::Malformed(
            "the key id is not 12 hex digits".into(),
        ));
    }
    let payload = BASE64
        .decode(body)
        .map_err(|e| SecretError::Malformed(format!("the body is not base64 ({e})")))?;
    if payload.len() < NONCE_LEN + TAG_LEN {
        return Err(SecretError::Malformed("the body is too short".into()));
    }
    Ok(Envelope { key_id, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[&str]) -> Keyring {
        Keyring::parse(&keys.join("\n"), "test").unwrap()
    }

    #[test]
    fn a_sealed_value_opens_and_holds_no_plaintext() {
        let keys = ring(&[&Keyring::generate_key()]);
        let sealed = keys.seal("sl.secret-token", "ctx").unwrap();
        assert!(!sealed.contains("secret-token"));
        assert!(sealed.starts_with(&format!("v1:{}:", keys.current_key_id().unwrap())));
        assert!(is_sealed(&sealed));
        assert!(!is_sealed("sl.secret-token"));
        assert_eq!(keys.open(&sealed, "ctx").unwrap(), "sl.secret-token");
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let keys = ring(&[&Keyring::generate_key()]);
        let a = keys.seal("same", "ctx").unwrap();
        let b = keys.seal("same", "ctx").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn another_key_is_refused_as_the_wrong_key() {
        let sealed = ring(&[&Keyring::generate_key()]).seal("t", "ctx").unwrap();
        let other = ring(&[&Keyring::generate_key()]);
        assert!(matches!(
            other.open(&sealed, "ctx"),
            Err(SecretError::WrongKey { key_id }) if key_id == sealed_key_id(&sealed).unwrap()
        ));
    }

    #[test]
    fn an_altered_value_or_another_context_is_tampered() {
        let keys = ring(&[&Keyring::generate_key()]);
        let sealed = keys.seal("token", "a/credentials.access_token").unwrap();
        // Flip one bit of the ciphertext.
        let (head, body) = sealed.rsplit_once(':').unwrap();
        let mut bytes = BASE64.decode(body).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let altered = format!("{head}:{}", BASE64.encode(bytes));
        assert!(matches!(
            keys.open(&altered, "a/credentials.access_token"),
            Err(SecretError::Tampered { .. })
        ));
        assert!(matches!(
            keys.open(&sealed, "b/credentials.access_token"),
            Err(SecretError::Tampered { .. })
        ));
        assert!(matches!(
            keys.open(&sealed, "a/credentials.refresh_token"),
            Err(SecretError::Tampered { .. })
        ));
    }

    #[test]
    fn tenant_contexts_cannot_collide() {
        assert_ne!(
            credential_context("a/credentials.x", "y"),
            credential_context("a", "x/credentials.y")
        );
    }

    #[test]
    fn no_key_is_a_missing_key_error_that_says_what_to_do() {
        let empty = Keyring::empty();
        let err = empty.seal("t", "ctx").unwrap_err();
        assert_eq!(err, SecretError::MissingKey);
        assert!(err.to_string().contains(SECRET_KEY_ENV));
        assert!(err.to_string().contains("--secret-key-file"));
        let sealed = ring(&[&Keyring::generate_key()]).seal("t", "ctx").unwrap();
        assert_eq!(empty.open(&sealed, "ctx"), Err(SecretError::MissingKey));
    }

    #[test]
    fn rotation_opens_old_values_and_reseals_them_under_the_new_key() {
        let old_key = Keyring::generate_key();
        let new_key = Keyring::generate_key();
        let before = ring(&[&old_key]);
        let sealed_old = before.seal("refresh", "ctx").unwrap();

        let after = ring(&[&new_key, &old_key]);
        assert_eq!(after.key_ids().len(), 2);
        assert_eq!(after.open(&sealed_old, "ctx").unwrap(), "refresh");
        let resealed = after.reseal(&sealed_old, "ctx").unwrap().unwrap();
        assert_eq!(
            sealed_key_id(&resealed).unwrap(),
            after.current_key_id().unwrap()
        );
        assert_eq!(after.reseal(&resealed, "ctx").unwrap(), None);

        // Once the old key is dropped, the re-sealed value still opens, the old one not.
        let only_new = ring(&[&new_key]);
        assert_eq!(only_new.open(&resealed, "ctx").unwrap(), "refresh");
        assert!(matches!(
            only_new.open(&sealed_old, "ctx"),
            Err(SecretError::WrongKey { .. })
        ));
    }

    #[test]
    fn key_lists_parse_with_comments_and_separators_and_reject_bad_keys() {
        let a = Keyring::generate_key();
        let b = Keyring::generate_key();
        let keys = Keyring::parse(&format!("# current\n{a}\n\n{b}  # old\n"), "file").unwrap();
        assert_eq!(keys.key_ids(), ring(&[&a, &b]).key_ids());
        let keys = Keyring::parse(&format!("{a}, {b}"), "env").unwrap();
        assert_eq!(keys.key_ids().len(), 2);

        let short = BASE64.encode([7u8; 16]);
        let err = Keyring::parse(&short, "env").unwrap_err();
        assert!(
            matches!(&err, SecretError::InvalidKey { reason, .. } if reason.contains("16 bytes"))
        );
        // The message names the key's position, never its text.
        assert!(!err.to_string().contains(&short));
        assert!(matches!(
            Keyring::parse("not base64!", "env"),
            Err(SecretError::InvalidKey { .. })
        ));
        assert!(matches!(
            Keyring::parse("# nothing\n", "env"),
            Err(SecretError::InvalidKey { .. })
        ));
    }

    #[test]
    fn malformed_values_are_refused() {
        let keys = ring(&[&Keyring::generate_key()]);
        for bad in [
            "plaintext",
            "v2:0123456789ab:AAAA",
            "v1:xyz:AAAA",
            "v1:0123456789ab:!!!",
            "v1:0123456789ab:AAAA",
        ] {
            assert!(
                matches!(keys.open(bad, "ctx"), Err(SecretError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_key_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = Keyring::generate_key();
        std::fs::write(&path, format!("{key}\n")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                Keyring::from_file(&path),
                Err(SecretError::KeyFileExposed { mode: 0o644, .. })
            ));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let from_file = Keyring::load(Some(&path)).unwrap();
        assert_eq!(from_file.key_ids(), ring(&[&key]).key_ids());
        assert!(matches!(
            Keyring::from_file(&dir.path().join("absent")),
            Err(SecretError::KeyFile { .. })
        ));
    }

    #[test]
    fn credentials_are_sealed_field_by_field_and_open_again() {
        let old_key = Keyring::generate_key();
        let keys = ring(&[&old_key]);
        let creds = StoredCredentials {
            access_token: "sl.access".into(),
            refresh_token: Some("refresh".into()),
            expires_at: Some(42),
            client_id: Some("app-key".into()),
            client_secret: Some("app-secret".into()),
            account_id: Some("dbid:1".into()),
        };
        let sealed = seal_credentials(&keys, "t", &creds).unwrap();
        for secret in [
            Some(&sealed.access_token),
            sealed.refresh_token.as_ref(),
            sealed.client_secret.as_ref(),
        ] {
            assert!(is_sealed(secret.unwrap()));
        }
        // What is not a secret is stored as given.
        assert_eq!(sealed.client_id, creds.client_id);
        assert_eq!(sealed.account_id, creds.account_id);
        assert_eq!(sealed.expires_at, creds.expires_at);
        assert_eq!(open_credentials(&keys, "t", sealed.clone()).unwrap(), creds);
        // Another tenant's row, or the fields swapped, do not open.
        assert!(matches!(
            open_credentials(&keys, "u", sealed.clone()),
            Err(SecretError::Tampered { .. })
        ));
        let mut swapped = sealed.clone();
        swapped.refresh_token = Some(sealed.access_token.clone());
        assert!(open_credentials(&keys, "t", swapped).is_err());

        let rotated = ring(&[&Keyring::generate_key(), &old_key]);
        let mut row = sealed;
        let mut report = RotationReport::default();
        assert!(reseal_credentials(&rotated, "t", &mut row, &mut report).unwrap());
        assert_eq!((report.resealed, report.unchanged), (3, 0));
        assert_eq!(
            report.key_ids_in_use,
            [(rotated.current_key_id().unwrap().to_string(), 3)]
        );
        assert_eq!(open_credentials(&rotated, "t", row).unwrap(), creds);
    }

    #[test]
    fn debug_output_shows_ids_only() {
        let key = Keyring::generate_key();
        let keys = ring(&[&key]);
        let shown = format!("{keys:?}");
        assert!(shown.contains(keys.current_key_id().unwrap()));
        assert!(!shown.contains(&key));
    }

    #[test]
    fn the_key_beside_a_database_appears_whole_and_racing_creators_share_one_key() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join(format!("r{round}.db"));
            let start = std::sync::Arc::new(std::sync::Barrier::new(8));
            let ids: Vec<Result<Vec<String>, SecretError>> = (0..8)
                .map(|_| {
                    let (db, start) = (db.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        Keyring::beside_database_or_create(&db)
                            .map(|k| k.key_ids().iter().map(|s| s.to_string()).collect())
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect();
            // Each creator either made the key or read the one made first, never a partial
            // file.
            let first = ids[0].clone().unwrap();
            for id in &ids {
                assert_eq!(id.as_ref(), Ok(&first), "round {round}");
            }
            let path = Keyring::beside_database_path(&db);
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600);
            }
            let names: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(
                names,
                [path.file_name().unwrap()],
                "no temporary file is left"
            );
        }
    }

    #[test]
    fn an_empty_key_file_is_a_typed_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("e.db");
        let path = Keyring::beside_database_path(&db);
        // What an interrupted in-place creation left behind.
        std::fs::write(&path, b"").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let err = Keyring::beside_database_or_create(&db).unwrap_err();
        assert_eq!(err, SecretError::EmptyKeyFile { path: path.clone() });
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        // Nothing was replaced behind the operator's back.
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        // Deleting it, as the message says, gives a new key.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            Keyring::beside_database_or_create(&db)
                .unwrap()
                .key_ids()
                .len(),
            1
        );
        // A stray temporary file of a creation that crashed is no obstacle either.
        let db2 = dir.path().join("f.db");
        std::fs::write(dir.path().join(".key-crashed.tmp"), b"half").unwrap();
        assert_eq!(
            Keyring::beside_database_or_create(&db2)
                .unwrap()
                .key_ids()
                .len(),
            1
        );
    }
}
