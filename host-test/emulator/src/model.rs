//! The values the public API takes and hands out: file [`Content`], what a mutation returns
//! ([`EntryInfo`]), the ground truth of the account ([`TruthEntry`], [`Kind`]) and issued tokens
//! ([`TokenPair`]).

use crate::blob;
use crate::content_hash;
use std::sync::Arc;

/// Content of a file created through the Rust API.
#[derive(Clone, Debug)]
pub enum Content {
    Bytes(Vec<u8>),
    /// Deterministic pseudo-random bytes generated on the fly (never held in memory).
    Pattern {
        seed: u64,
        len: u64,
    },
}

impl Content {
    /// The bytes this content stands for (materialises a pattern: for tests on small files).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_blob().to_vec()
    }
    /// The Dropbox content hash of this content.
    pub fn content_hash(&self) -> String {
        content_hash::to_hex(&self.to_blob().hash())
    }
    pub fn len(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::Pattern { len, .. } => *len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub(crate) fn to_blob(&self) -> blob::Blob {
        match self {
            Content::Bytes(b) => blob::Blob::Bytes(Arc::from(b.as_slice())),
            Content::Pattern { seed, len } => blob::Blob::Pattern {
                seed: *seed,
                len: *len,
            },
        }
    }
}

/// What a mutation returns: the identity and location of the item as Dropbox now reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EntryInfo {
    pub id: String,
    pub path_lower: String,
    pub path_display: String,
    pub rev: Option<String>,
    pub content_hash: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Kind {
    File,
    Folder,
}

/// One live item of the account, as the ground truth a connector is compared with.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TruthEntry {
    pub id: String,
    pub kind: Kind,
    pub name: String,
    pub path_lower: String,
    pub path_display: String,
    pub rev: Option<String>,
    pub size: u64,
    pub content_hash: Option<String>,
    pub client_modified: Option<String>,
    pub server_modified: Option<String>,
    pub is_downloadable: bool,
    pub shared_url: Option<String>,
}

/// Tokens as the token endpoint would return them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
}
