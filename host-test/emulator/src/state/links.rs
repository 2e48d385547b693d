//! Shared links: the account's public links ([`SharedLinks`], by creation order and by node),
//! how a link's URL is made, and temporary links ([`TempLink`]).

use super::tree::Node;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::ops::Deref;
use std::sync::Arc;

pub(crate) struct Link {
    pub url: String,
    pub node_id: u64,
}

pub(crate) struct TempLink {
    pub node: Arc<Node>,
    pub created: i64,
}

/// The public shared links of the account, by creation order (`sharing/list_shared_links` pages
/// through them in that order, reading them through `Deref`) and by the node each one shares.
/// Changes go through the methods, which keep both in step.
#[derive(Default)]
pub(crate) struct SharedLinks {
    by_seq: BTreeMap<u64, Link>,
    of_node: HashMap<u64, u64>,
    seq: u64,
}

impl Deref for SharedLinks {
    type Target = BTreeMap<u64, Link>;
    fn deref(&self) -> &BTreeMap<u64, Link> {
        &self.by_seq
    }
}

impl SharedLinks {
    /// The link of a node, if it has one.
    pub fn of(&self, node_id: u64) -> Option<&Link> {
        self.of_node.get(&node_id).and_then(|s| self.by_seq.get(s))
    }

    /// Create the node's shared link, or return the existing one (`false` = it already existed).
    pub fn share(&mut self, node: &Node, base_url: &str) -> (&Link, bool) {
        if let Some(seq) = self.of_node.get(&node.id).copied()
            && self.by_seq.contains_key(&seq)
        {
            return (&self.by_seq[&seq], false);
        }
        self.seq += 1;
        let seq = self.seq;
        let h = Sha256::digest(format!("link {} {} {}", node.id, seq, base_url).as_bytes());
        let token: String = URL_SAFE_NO_PAD
            .encode(&h[..12])
            .chars()
            .map(|c| {
                if c == '-' || c == '_' {
                    'x'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        let rlkey: String = URL_SAFE_NO_PAD
            .encode(&h[12..30])
            .chars()
            .map(|c| {
                if c == '-' || c == '_' {
                    'k'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        let url = format!(
            "{base_url}/scl/fi/{token}/{}?rlkey={rlkey}&dl=0",
            percent_encode(node.name())
        );
        self.by_seq.insert(
            seq,
            Link {
                url,
                node_id: node.id,
            },
        );
        self.of_node.insert(node.id, seq);
        (&self.by_seq[&seq], true)
    }

    /// Remove the node's link; `None` if the node had none.
    pub fn remove_of_node(&mut self, node_id: u64) -> Option<u64> {
        let seq = self.of_node.remove(&node_id)?;
        self.by_seq.remove(&seq);
        Some(seq)
    }

    /// The URL of every node's link, by node id.
    pub fn urls_by_node(&self) -> HashMap<u64, String> {
        self.of_node
            .iter()
            .filter_map(|(id, seq)| self.by_seq.get(seq).map(|l| (*id, l.url.clone())))
            .collect()
    }
}

/// Percent-encode a path segment (RFC 3986 unreserved characters stay as they are).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
