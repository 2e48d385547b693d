//! The connector's position in the service: the opaque `position` of its sync points.

use connector_sdk::model::{SyncKind, SyncPhase, SyncPoint, SyncStatus};

/// Where the tenant's sync stands: the opaque `position` of its sync point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// A full listing. `marked`: it re-lists after the service forgot our position, so its
    /// first batch marks every record pending removal and its last one purges what was not
    /// seen again. `resume` is none before its first page.
    Listing {
        marked: bool,
        resume: Option<Resume>,
    },
    /// The store reflects the service up to `since`: the next sync reads the feed from there.
    Current { since: u64 },
}

/// Where an unfinished listing continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The sequence the listing's first page reported: the feed is followed from it after.
    pub since: u64,
    /// The last id listed.
    pub after: String,
}

impl Position {
    /// The stored position; none (a new tenant) starts a full listing. A position this
    /// connector cannot read is treated like one the service forgot: list everything again.
    pub fn parse(stored: Option<&str>) -> Position {
        let Some(stored) = stored else {
            return Position::Listing {
                marked: false,
                resume: None,
            };
        };
        let mut parts = stored.splitn(3, ':');
        let word = parts.next().unwrap_or_default();
        let since = parts.next().map(str::parse::<u64>);
        let after = parts.next().map(str::to_string);
        match (word, since, after) {
            ("current", Some(Ok(since)), None) => Position::Current { since },
            ("listing" | "relisting", Some(Ok(since)), Some(after)) => Position::Listing {
                marked: word == "relisting",
                resume: Some(Resume { since, after }),
            },
            // A listing before its first page has no records to sweep.
            ("listing", None, None) => Position::Listing {
                marked: false,
                resume: None,
            },
            // Anything else (a re-listing from its start, a position this code cannot read):
            // list everything again, sweeping what is not seen.
            _ => Position::Listing {
                marked: true,
                resume: None,
            },
        }
    }

    pub fn encode(&self) -> String {
        match self {
            Position::Current { since } => format!("current:{since}"),
            Position::Listing { marked, resume } => {
                let word = if *marked { "relisting" } else { "listing" };
                match resume {
                    Some(r) => format!("{word}:{}:{}", r.since, r.after),
                    None => word.to_string(),
                }
            }
        }
    }

    pub fn kind(&self) -> SyncKind {
        match self {
            Position::Listing { marked: false, .. } => SyncKind::Full,
            Position::Listing { marked: true, .. } => SyncKind::Resync,
            Position::Current { .. } => SyncKind::Incremental,
        }
    }

    pub fn sync_point(&self, pages: u32) -> SyncPoint {
        let (phase, detail) = match self {
            Position::Listing { marked: false, .. } => {
                (SyncPhase::Listing, format!("listing, {pages} pages in"))
            }
            Position::Listing { marked: true, .. } => (
                SyncPhase::Listing,
                format!("re-listing after the service forgot the position, {pages} pages in"),
            ),
            Position::Current { .. } => (SyncPhase::Current, "current".to_string()),
        };
        SyncPoint {
            position: self.encode(),
            status: SyncStatus { phase, detail },
        }
    }
}
