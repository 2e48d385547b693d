//! The account as Dropbox would hold it: the file tree, the append-only change journal, snapshots
//! of in-progress listings, shared and temporary links, and the cursor format.
//!
//! Why a persistent map: an initial `list_folder` must be a consistent snapshot even while tests
//! mutate the account between pages. `imbl::OrdMap` clones in O(1) and shares structure, so every
//! paged listing simply keeps its own clone (in a bounded table). Keys are `path_lower`; plain
//! string order puts every parent before its children (a prefix sorts first), which is exactly
//! the order Dropbox promises, and makes a folder's subtree one contiguous key range. The
//! `children_before_parents` option pages the same map in post-order instead (`scan_post`).
//!
//! | module | its one job |
//! |---|---|
//! | `store` | [`State`], what the server holds under its lock, and the lookups on it |
//! | `changes` | changes to the tree (create, modify, move, delete, bulk insert), each journaled |
//! | `tree` | items ([`Node`]), the [`Tree`] of live items and tombstones, the rules of paths |
//! | `ids` | the [`Account`]'s identity, item ids and revs |
//! | `journal` | journal entries ([`JEntry`]), the [`Cursor`], pages of changes after a cursor |
//! | `paging` | pages of an initial enumeration from a snapshot, in pre- or post-order |
//! | `snapshots` | the bounded table of listing snapshots |
//! | `links` | shared links and temporary links |

mod changes;
mod ids;
mod journal;
mod links;
mod paging;
mod snapshots;
mod store;
mod tree;

pub(crate) use changes::MoveOptions;
pub(crate) use ids::{Account, format_rev, parse_rev};
pub(crate) use journal::{Cursor, JEntry, has_change, journal_page};
pub(crate) use links::{Link, TempLink, percent_encode};
pub(crate) use paging::snapshot_page;
pub(crate) use store::State;
pub(crate) use tree::{Export, FileInfo, Lookup, Node, Tree, lower};
