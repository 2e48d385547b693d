//! The emulator's settings ([`EmulatorConfig`]): where to listen, the account to generate, and
//! every behaviour DROPBOX-API.md leaves open (its section 10), each with the recommended default.

use std::net::SocketAddr;
use std::time::Duration;

/// Emulator settings. `Default` gives the behaviour DROPBOX-API.md §10 recommends.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Where to listen; `None` = 127.0.0.1 on an ephemeral port.
    pub listen: Option<SocketAddr>,
    /// Seed for account identity and for the tree generated at start.
    pub seed: u64,
    /// Number of files to generate at start (0 = empty account).
    pub files: usize,
    /// `expires_in` of issued access tokens, seconds.
    pub token_expires_in: u64,
    /// `/oauth2/authorize` redirects at once with a code (otherwise it shows an approve/deny page).
    pub auto_approve: bool,
    /// Report case-only renames from `list_folder/continue` (the spec says they are not reported).
    pub emit_case_only_renames: bool,
    /// A recursive listing of a non-root folder includes the folder itself (observed behaviour).
    pub recursive_listing_includes_self: bool,
    /// Shuffle the entries within each listing page (parents may then follow children).
    pub shuffle_within_page: bool,
    /// Report a case-only rename of a FOLDER from `list_folder/continue` as the folder's own
    /// entry alone: one `FolderMetadata` with the new `name` / `path_display`, the same
    /// `path_lower` and the same `id`, and no entry for anything under it.
    ///
    /// Real Dropbox: the spec says casing-only changes are not returned by `continue`, yet
    /// clients see a remote case-only folder rename propagate (DROPBOX-API.md §4.4), and nothing
    /// promises entries for the folder's descendants when it does: the minimal report is the
    /// folder's own entry, and `path_display` may show stale casing in ancestor components
    /// anyway. A connector has to carry the folder's new casing down to what it holds under it.
    /// With [`emit_case_only_renames`](Self::emit_case_only_renames) alone the emulator journals
    /// the folder AND every descendant with its new casing; this option exists to test the terse
    /// form. It implies the folder's rename IS reported (it works without
    /// `emit_case_only_renames`, and wins over it for folders). Case-only renames of FILES are
    /// unaffected (still governed by `emit_case_only_renames`). Only the journal is terse: the
    /// account itself changes fully, so `get_metadata`, downloads and [`Emulator::truth`] show
    /// every descendant's new `path_display`.
    pub case_only_rename_folder_entry_only: bool,
    /// Give every file that is moved or renamed a fresh `rev` (allocated like the rev of a
    /// content change), while its bytes, `size` and `content_hash` stay as they were. This covers
    /// a moved or renamed file, every file under a moved or renamed folder, and case-only renames
    /// (of the file itself or of a folder above it): any file whose `path_display` changes.
    ///
    /// Real Dropbox: `rev` is a version identifier that may change when a file is moved;
    /// whether the content changed is told by `content_hash`, not by `rev`. By default the
    /// emulator keeps the rev across moves; this option exists so a connector is tested to cope
    /// with a new rev on a move whose `content_hash` is unchanged. The old rev stays resolvable
    /// like every earlier version (`rev:` paths, `files/download` with `rev`) and serves the same
    /// bytes, with the metadata the file had before the move; the new rev resolves to the file
    /// at its new path. `server_modified` and `client_modified` are kept. Only a file whose move
    /// the change feed reports gets a new rev (a case-only rename that is not reported, or the
    /// descendants of a folder under `case_only_rename_folder_entry_only`, keep theirs): a rev
    /// no client could ever learn would make the account unknowable.
    pub new_rev_on_move: bool,
    /// Return the initial enumeration of a RECURSIVE listing (`files/list_folder` and the
    /// `continue` pages read from its snapshot) in post-order: every folder's entry comes after
    /// the entries of all its descendants, so with small pages a child is on an earlier page
    /// than its parent. With `recursive_listing_includes_self` the listed folder's own entry is
    /// therefore the very last one. Siblings are ordered by `path_lower` bytes, except that a
    /// key sorts after every key it is a prefix of. Paging stays exact: the cursor carries the
    /// last key emitted and every live entry is returned exactly once; deleted entries
    /// (`include_deleted`) are merged into the same order.
    ///
    /// Real Dropbox promises no order of entries within a listing: its documented sync rules
    /// ("if the required parent folders don't exist yet, create them") imply a child may come
    /// before its parent (DROPBOX-API.md §3.3), so a connector must cope with that, even pages
    /// apart. The default (parents first, pre-order) is what DROPBOX-API.md §3.3 recommends for the
    /// emulator; this option exists to test the other extreme, deterministically and across page
    /// boundaries (`shuffle_within_page` only reorders within one page). Non-recursive listings
    /// ignore it (they hold no folder together with its descendants, so there is nothing to
    /// reorder), and so do the change pages of `list_folder/continue` after the enumeration
    /// (journal order).
    pub children_before_parents: bool,
    /// Add 0..90 s of random jitter to longpoll waits, as the real service may.
    pub longpoll_jitter: bool,
    /// `backoff` to return with every longpoll result, if any.
    pub longpoll_backoff: Option<u64>,
    /// Cap on how long a longpoll really blocks (tests use it to avoid 30 s waits); `None` = honour `timeout`.
    pub longpoll_max_wait: Option<Duration>,
    /// Page size of list_folder when the request has no `limit`.
    pub default_page_size: usize,
    /// Listing pages hold at most this many entries, whatever `limit` the request asks for.
    /// Dropbox documents `limit` as a maximum, not a promise; tests use a small value to put
    /// page boundaries into small accounts.
    pub max_page_size: Option<usize>,
    /// Page size of `sharing/list_shared_links` without a path.
    pub shared_links_page_size: usize,
    /// How many in-progress initial listings keep their snapshot; the oldest beyond that is
    /// evicted and its cursor answers 409 reset.
    pub snapshot_capacity: usize,
    pub client_id: String,
    pub client_secret: String,
    /// Refuse a token request whose client sends its secret in the form instead of with HTTP
    /// Basic. Dropbox accepts both; tests use this to see which one a host sends.
    pub token_requires_basic: bool,
    pub email: String,
    pub display_name: String,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            listen: None,
            seed: 1,
            files: 0,
            token_expires_in: 14_400,
            auto_approve: true,
            emit_case_only_renames: false,
            recursive_listing_includes_self: true,
            shuffle_within_page: false,
            case_only_rename_folder_entry_only: false,
            new_rev_on_move: false,
            children_before_parents: false,
            longpoll_jitter: false,
            longpoll_backoff: None,
            longpoll_max_wait: None,
            default_page_size: 500,
            max_page_size: None,
            shared_links_page_size: 200,
            snapshot_capacity: 256,
            client_id: "emu-app-key".into(),
            client_secret: "emu-app-secret".into(),
            token_requires_basic: false,
            email: "franz@example.com".into(),
            display_name: "Franz Ferdinand (Personal)".into(),
        }
    }
}
