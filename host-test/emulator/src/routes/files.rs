//! `files/list_folder*` and `files/get_metadata`: enumeration, cursors, change replay, longpoll.
//!
//! The initial listing pages through a snapshot of the tree taken at the first call, so changes
//! made between pages never tear it; its final cursor points at the journal position of that
//! snapshot, and `continue` replays the journal from there (DROPBOX-API.md §3, §3.7, §4).

use super::{ApiError, ApiResult, Ctx, lookup_failure};
use crate::http::Response;
use crate::state::{Cursor, JEntry, Lookup, has_change, journal_page, lower, snapshot_page};
use crate::wire::{
    Args, Md, PATTERN_PATH_R_OR_ID, PATTERN_READ_PATH, entry_md, lookup_error,
    matches_path_r_or_id, matches_read_path, tag_error,
};
use rand::seq::SliceRandom;
use serde::Serialize;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const LIST_FOLDER_FIELDS: &[&str] = &[
    "path",
    "recursive",
    "include_media_info",
    "include_deleted",
    "include_has_explicit_shared_members",
    "include_mounted_folders",
    "limit",
    "shared_link",
    "include_property_groups",
    "include_non_downloadable_files",
    "include_restorable_info",
];

#[derive(Serialize)]
struct ListResult<'a> {
    entries: Vec<Md<'a>>,
    cursor: String,
    has_more: bool,
}

fn list_response(ctx: &Ctx, entries: &[JEntry], cursor: &Cursor, has_more: bool) -> Response {
    let acct = &ctx.shared.account;
    let mut mds: Vec<Md> = entries
        .iter()
        .map(|e| entry_md(acct, e, cursor.h))
        .collect();
    if ctx.shared.cfg.shuffle_within_page {
        mds.shuffle(&mut rand::rng());
    }
    Response::json(
        200,
        &ListResult {
            entries: mds,
            cursor: cursor.encode(),
            has_more,
        },
    )
}

/// Decode a ListFolderArg and resolve its folder into a fresh cursor (no snapshot yet).
fn parse_list_arg(ctx: &Ctx, arg: &Value) -> Result<Cursor, ApiError> {
    let a = Args::root(arg)?;
    a.only(LIST_FOLDER_FIELDS)?;
    let path = a.req_str("path")?;
    a.check_pattern(
        "path",
        path,
        PATTERN_PATH_R_OR_ID,
        matches_path_r_or_id(path),
    )?;
    let recursive = a.bool_or("recursive", false)?;
    a.bool_or("include_media_info", false)?;
    let include_deleted = a.bool_or("include_deleted", false)?;
    let explicit = a.bool_or("include_has_explicit_shared_members", false)?;
    a.bool_or("include_mounted_folders", true)?;
    let limit = a.opt_u64("limit", 1, 2000)?;
    let shared_link = a.opt_obj("shared_link")?;
    if let Some(sl) = &shared_link {
        sl.only(&["url", "password"])?;
        sl.req_str("url")?;
        sl.opt_str("password")?;
    }
    a.opt_union("include_property_groups", &["filter_some", "other"])?;
    let non_downloadable = a.bool_or("include_non_downloadable_files", true)?;
    a.bool_or("include_restorable_info", false)?;
    if path == "/" {
        return Err(ApiError::Arg(
            "path: Specify the root folder as an empty string rather than as \"/\".".into(),
        ));
    }
    if shared_link.is_some() {
        // Listing through a shared link is outside what the emulator models.
        return Err(lookup_error("not_found").into());
    }
    let shared = ctx.shared;
    let st = shared.state();
    let (p, i) = match st.resolve(&shared.account, path) {
        Lookup::Root => (String::new(), None),
        Lookup::Found(n) if n.is_folder() => (n.path_lower.to_string(), Some(n.id)),
        Lookup::Found(_) => return Err(lookup_error("not_folder").into()),
        other => return Err(lookup_failure(&other)),
    };
    let page = limit.map_or(shared.cfg.default_page_size.max(1), |l| l as usize);
    let page = shared
        .cfg
        .max_page_size
        .map_or(page, |most| page.min(most.max(1)));
    Ok(Cursor {
        a: shared.account.instance,
        e: st.cursor_epoch,
        p,
        i,
        r: recursive,
        d: include_deleted,
        n: non_downloadable,
        h: explicit,
        l: page.min(u32::MAX as usize) as u32,
        s: None,
        k: None,
        j: st.journal_len(),
    })
}

pub(crate) fn list_folder(ctx: &Ctx, arg: &Value) -> ApiResult {
    let mut cursor = parse_list_arg(ctx, arg)?;
    let cfg_self = ctx.shared.cfg.recursive_listing_includes_self;
    let post_order = ctx.shared.cfg.children_before_parents;
    // The snapshot: an O(1) clone of the persistent tree, consistent with the journal position.
    let tree = {
        let st = ctx.shared.state();
        cursor.j = st.journal_len();
        st.tree.clone()
    };
    let (entries, last, has_more) = snapshot_page(&tree, &cursor, cfg_self, post_order);
    if has_more {
        let sid = ctx.shared.state().register_snapshot(tree, cursor.j);
        cursor.s = Some(sid);
        cursor.k = last;
    }
    Ok(list_response(ctx, &entries, &cursor, has_more))
}

/// Decode a cursor argument; a cursor from another server instance or epoch is a 409 reset.
fn take_cursor(ctx: &Ctx, a: &Args, epoch: u64) -> Result<Cursor, ApiError> {
    let s = a.req_str("cursor")?;
    a.min_len("cursor", s, 1)?;
    let c = Cursor::decode(s).ok_or_else(|| ApiError::Arg("cursor: invalid cursor".into()))?;
    if c.a != ctx.shared.account.instance || c.e != epoch {
        return Err(tag_error("reset").into());
    }
    Ok(c)
}

pub(crate) fn list_folder_continue(ctx: &Ctx, arg: &Value) -> ApiResult {
    let a = Args::root(arg)?;
    a.only(&["cursor"])?;
    let cfg_self = ctx.shared.cfg.recursive_listing_includes_self;
    let post_order = ctx.shared.cfg.children_before_parents;
    let mut st = ctx.shared.state();
    let mut c = take_cursor(ctx, &a, st.cursor_epoch)?;
    if let Some(sid) = c.s {
        // Still paging the initial enumeration: keep reading the same snapshot.
        let Some((tree, jpos)) = st.snapshot(sid) else {
            return Err(tag_error("reset").into());
        };
        drop(st);
        let (entries, last, has_more) = snapshot_page(&tree, &c, cfg_self, post_order);
        if has_more {
            c.k = last;
        } else {
            ctx.shared.state().drop_snapshot(sid);
            c.s = None;
            c.k = None;
            c.j = jpos;
        }
        return Ok(list_response(ctx, &entries, &c, has_more));
    }
    if let Some(id) = c.i
        && !st.id_at(id, &c.p)
    {
        // The listed folder itself is gone (or moved): re-list (DROPBOX-API.md §3.4).
        return Err(lookup_error("not_found").into());
    }
    let (entries, pos, has_more) = journal_page(&st.journal, &c, cfg_self);
    drop(st);
    c.j = pos;
    Ok(list_response(ctx, &entries, &c, has_more))
}

pub(crate) fn get_latest_cursor(ctx: &Ctx, arg: &Value) -> ApiResult {
    let cursor = parse_list_arg(ctx, arg)?;
    Ok(Response::json_value(
        200,
        &json!({"cursor": cursor.encode()}),
    ))
}

pub(crate) fn longpoll(ctx: &Ctx, arg: &Value) -> ApiResult {
    let a = Args::root(arg)?;
    a.only(&["cursor", "timeout"])?;
    let shared = ctx.shared;
    let mut st = shared.state();
    let c = take_cursor(ctx, &a, st.cursor_epoch)?;
    let timeout = a.opt_u64("timeout", 30, 480)?.unwrap_or(30);
    let cfg_self = shared.cfg.recursive_listing_includes_self;
    let mut wait = Duration::from_secs(timeout);
    if shared.cfg.longpoll_jitter {
        wait += Duration::from_millis(rand::random_range(0..90_000));
    }
    if let Some(cap) = shared.cfg.longpoll_max_wait {
        wait = wait.min(cap);
    }
    let deadline = Instant::now() + wait;
    let mut changes = false;
    if let Some(sid) = c.s {
        // Pages of the initial listing are still waiting to be read.
        if st.snapshot(sid).is_none() {
            return Err(tag_error("reset").into());
        }
        changes = true;
    }
    let mut scanned = c.j;
    while !changes {
        if shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        if st.cursor_epoch != c.e {
            return Err(tag_error("reset").into());
        }
        let folder_gone = c.i.is_some_and(|id| !st.id_at(id, &c.p));
        if folder_gone || has_change(&st.journal, &c, scanned, cfg_self) {
            changes = true;
            break;
        }
        scanned = st.journal_len();
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        st = shared
            .changed
            .wait_timeout(st, deadline - now)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
    drop(st);
    let mut result = json!({"changes": changes});
    if let Some(b) = shared.cfg.longpoll_backoff {
        result["backoff"] = json!(b);
    }
    Ok(Response::json_value(200, &result))
}

pub(crate) fn get_metadata(ctx: &Ctx, arg: &Value) -> ApiResult {
    let a = Args::root(arg)?;
    a.only(&[
        "path",
        "include_media_info",
        "include_deleted",
        "include_has_explicit_shared_members",
        "include_property_groups",
    ])?;
    let path = a.req_str("path")?;
    a.check_pattern("path", path, PATTERN_READ_PATH, matches_read_path(path))?;
    a.bool_or("include_media_info", false)?;
    let include_deleted = a.bool_or("include_deleted", false)?;
    let explicit = a.bool_or("include_has_explicit_shared_members", false)?;
    a.opt_union("include_property_groups", &["filter_some", "other"])?;
    if path == "/" {
        return Err(ApiError::Arg(
            "path: The root folder is unsupported.".into(),
        ));
    }
    let shared = ctx.shared;
    let st = shared.state();
    let found = match st.resolve(&shared.account, path) {
        Lookup::Found(n) => n,
        Lookup::Root => {
            return Err(ApiError::Arg(
                "path: The root folder is unsupported.".into(),
            ));
        }
        Lookup::NotFound if include_deleted && path.starts_with('/') => {
            let key = lower(path);
            return match st.tree.tombs.get_key_value(key.as_str()) {
                Some((k, d)) => {
                    let e = JEntry::Deleted {
                        path_lower: k.clone(),
                        path_display: d.clone(),
                    };
                    Ok(Response::json(
                        200,
                        &entry_md(&shared.account, &e, explicit),
                    ))
                }
                None => Err(lookup_error("not_found").into()),
            };
        }
        other => return Err(lookup_failure(&other)),
    };
    drop(st);
    Ok(Response::json(
        200,
        &entry_md(&shared.account, &JEntry::Live(found), explicit),
    ))
}
