//! The change journal and the cursors that read it: a journal entry ([`JEntry`]), the
//! [`Cursor`] a listing hands out (what it lists, and how far it has read), and one page of
//! changes after a cursor (`list_folder/continue`, longpoll).

use super::tree::Node;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One entry of the change journal, as `list_folder/continue` reports it.
#[derive(Clone, Debug)]
pub(crate) enum JEntry {
    Live(Arc<Node>),
    Deleted {
        path_lower: Arc<str>,
        path_display: Arc<str>,
    },
}

impl JEntry {
    pub fn key(&self) -> &str {
        match self {
            JEntry::Live(n) => &n.path_lower,
            JEntry::Deleted { path_lower, .. } => path_lower,
        }
    }
}

/// The parameters a cursor carries from `list_folder` to every later `continue`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Cursor {
    /// Server instance (a cursor from another run is stale).
    pub a: u64,
    /// Cursor epoch (see `invalidate_cursors`).
    pub e: u64,
    /// Listed folder's path_lower ("" = root) and id.
    pub p: String,
    pub i: Option<u64>,
    pub r: bool,
    /// include_deleted, include_non_downloadable_files, include_has_explicit_shared_members.
    pub d: bool,
    pub n: bool,
    pub h: bool,
    /// Page size.
    pub l: u32,
    /// Snapshot id and last key emitted, while the initial enumeration is being paged.
    pub s: Option<u64>,
    pub k: Option<String>,
    /// Journal position: what the listing has seen.
    pub j: u64,
}

impl Cursor {
    pub fn encode(&self) -> String {
        // Serialising a plain struct cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("AAE{}", URL_SAFE_NO_PAD.encode(json))
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let raw = URL_SAFE_NO_PAD.decode(s.strip_prefix("AAE")?).ok()?;
        serde_json::from_slice(&raw).ok()
    }

    pub(super) fn includes_self(&self, cfg_self: bool) -> bool {
        cfg_self && self.r && !self.p.is_empty()
    }

    /// Is this path reported under the cursor's folder?
    pub fn in_scope(&self, key: &str, cfg_self: bool) -> bool {
        if self.p.is_empty() {
            return key.starts_with('/') && (self.r || !key[1..].contains('/'));
        }
        if key == self.p {
            return self.includes_self(cfg_self);
        }
        match key
            .strip_prefix(self.p.as_str())
            .and_then(|r| r.strip_prefix('/'))
        {
            Some(rest) => self.r || !rest.contains('/'),
            None => false,
        }
    }

    pub fn wants(&self, e: &JEntry, cfg_self: bool) -> bool {
        self.in_scope(e.key(), cfg_self)
            && match e {
                JEntry::Live(n) => self.n || n.is_downloadable(),
                JEntry::Deleted { .. } => true,
            }
    }
}

/// One page of changes after the cursor's journal position: (entries, new position, has_more).
pub(crate) fn journal_page(
    journal: &[JEntry],
    c: &Cursor,
    cfg_self: bool,
) -> (Vec<JEntry>, u64, bool) {
    let limit = c.l.max(1) as usize;
    let mut out = Vec::new();
    let mut pos = (c.j as usize).min(journal.len());
    while pos < journal.len() {
        let e = &journal[pos];
        if c.wants(e, cfg_self) {
            if out.len() == limit {
                // There is at least one more: the next page starts here.
                return (out, pos as u64, true);
            }
            out.push(e.clone());
        }
        pos += 1;
    }
    (out, pos as u64, false)
}

/// Is there any change for this cursor at or after journal position `from`?
pub(crate) fn has_change(journal: &[JEntry], c: &Cursor, from: u64, cfg_self: bool) -> bool {
    journal
        .get(from as usize..)
        .is_some_and(|tail| tail.iter().any(|e| c.wants(e, cfg_self)))
}
