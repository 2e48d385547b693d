//! Small helpers that turn bytes received from the server into short, log-safe text.
//!
//! Error values end up in log lines and in errors shown to operators, so they carry an excerpt
//! of what the server sent, never the whole body, and never anything that looks like a
//! credential.

/// Runs of token-like characters at least this long are treated as possible secrets. Dropbox
/// access tokens are well over 100 characters and refresh tokens about 64; account ids
/// (`dbid:` + 35) and ordinary file names stay below it.
const SECRET_RUN: usize = 40;

/// Lossy UTF-8 text of at most `max_chars` characters, whitespace-trimmed, with control
/// characters escaped and long token-like runs redacted; `…` marks a cut.
pub(crate) fn excerpt(bytes: &[u8], max_chars: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let mut out = String::new();
    let mut chars = text.chars();
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
    scrub_secrets(&out)
}

/// Replaces every run of `[A-Za-z0-9._-]` of [`SECRET_RUN`] characters or more by its first four
/// characters and a marker. Cheap insurance against a server message echoing a token back.
pub(crate) fn scrub_secrets(text: &str) -> String {
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.chars().count() >= SECRET_RUN {
            out.extend(run.chars().take(4));
            out.push_str("…[redacted]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if is_token_char(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// True if the body names an OAuth credential field; such bodies are never excerpted.
pub(crate) fn mentions_credentials(bytes: &[u8]) -> bool {
    const KEYS: [&[u8]; 3] = [b"access_token", b"refresh_token", b"id_token"];
    KEYS.iter()
        .any(|key| bytes.windows(key.len()).any(|w| w == *key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_is_bounded_and_escapes_controls() {
        assert_eq!(excerpt(b"  abc\n", 10), "abc");
        assert_eq!(excerpt(b"a\x01b", 10), "a\\u{1}b");
        assert_eq!(excerpt("ééééé".as_bytes(), 3), "ééé…");
        assert_eq!(excerpt(&[0xff, b'a'], 10), "\u{fffd}a");
    }

    #[test]
    fn long_token_runs_are_redacted() {
        let token = format!("sl.{}", "A".repeat(120));
        let msg = format!("Invalid authorization value \"{token}\". Expecting \"Bearer\"");
        let scrubbed = scrub_secrets(&msg);
        assert!(!scrubbed.contains(&token));
        assert!(scrubbed.contains("sl.A…[redacted]"));
        assert_eq!(scrub_secrets("path/not_found/.."), "path/not_found/..");
        let account = "dbid:AAH4f99T0taONIb-OurWxbNQ6ywGRopQngc";
        assert_eq!(scrub_secrets(account), account);
    }

    #[test]
    fn credential_bodies_are_detected() {
        assert!(mentions_credentials(br#"{"access_token":"x"}"#));
        assert!(!mentions_credentials(br#"{"entries":[]}"#));
        assert!(!mentions_credentials(b""));
    }
}
