//! Identities: the account's ([`Account`]: account id, namespace, server instance), the ids of
//! items (`id:` + base64url, reversible), and file revisions (lowercase hex).

use super::tree::Node;
use crate::content_hash::to_hex;
use crate::model::EntryInfo;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Identity of the emulated account (derived from the seed, so it is stable across runs).
pub(crate) struct Account {
    pub account_id: String,
    pub uid: String,
    pub namespace_id: String,
    id_salt: [u8; 8],
    /// Random per server instance: a cursor from another instance is stale (409 reset).
    pub instance: u64,
}

impl Account {
    pub fn new(seed: u64) -> Account {
        let digest = Sha256::digest(format!("dropbox-emulator account {seed}").as_bytes());
        let b64 = URL_SAFE_NO_PAD.encode(digest);
        let account_id = format!("dbid:AA{}", &b64[..33]);
        let mut id_salt = [0u8; 8];
        id_salt.copy_from_slice(&digest[..8]);
        let n = u32::from_le_bytes([digest[8], digest[9], digest[10], digest[11]]);
        Account {
            account_id,
            uid: format!("{}", 10_000_000 + n % 90_000_000),
            namespace_id: format!("{}", 1_000_000_000 + n % 1_000_000_000),
            id_salt,
            instance: rand::random(),
        }
    }

    /// `id:` + 22 base64url characters, like real ids; case-sensitive and reversible.
    pub fn format_id(&self, n: u64) -> String {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&self.id_salt);
        raw[8..].copy_from_slice(&n.to_be_bytes());
        format!("id:{}", URL_SAFE_NO_PAD.encode(raw))
    }

    pub fn parse_id(&self, s: &str) -> Option<u64> {
        let raw = URL_SAFE_NO_PAD.decode(s.strip_prefix("id:")?).ok()?;
        if raw.len() != 16 || raw[..8] != self.id_salt {
            return None;
        }
        Some(u64::from_be_bytes(raw[8..].try_into().ok()?))
    }

    pub fn entry_info(&self, node: &Node) -> EntryInfo {
        EntryInfo {
            id: self.format_id(node.id),
            path_lower: node.path_lower.to_string(),
            path_display: node.path_display.to_string(),
            rev: node.file.as_ref().map(|f| format_rev(f.rev)),
            content_hash: node.file.as_ref().and_then(|f| f.hash).map(|h| to_hex(&h)),
        }
    }
}

/// Revs are lowercase hex, 12 digits (the spec asks for at least 9).
pub(crate) fn format_rev(n: u64) -> String {
    format!("{n:012x}")
}

pub(crate) fn parse_rev(s: &str) -> Option<u64> {
    if s.len() < 9
        || s.len() > 16
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// The rev of the first file version an account creates.
pub(super) const FIRST_REV: u64 = 0x015a_1c00_0001;
