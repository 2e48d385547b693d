//! `sharing/*`: creating and listing shared links (DROPBOX-API.md §6).

use super::{ApiError, ApiResult, Ctx, lookup_failure};
use crate::http::Response;
use crate::state::{Account, Link, Lookup, Node, State, format_rev};
use crate::wire::{
    Args, PATTERN_READ_PATH, fmt_time, matches_read_path, parse_time, route_error, summary,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// LinkPermissions of a public link on a basic account.
fn link_permissions() -> Value {
    let policy = |tag: &str, allowed: bool| {
        let mut p =
            json!({"policy": {".tag": tag}, "resolved_policy": {".tag": tag}, "allowed": allowed});
        if !allowed {
            p["disallowed_reason"] = json!({".tag": "permission_denied"});
        }
        p
    };
    json!({
        "can_revoke": true,
        "visibility_policies": [policy("public", true), policy("team_only", false), policy("password", false)],
        "can_set_expiry": false,
        "can_remove_expiry": false,
        "allow_download": true,
        "can_allow_download": true,
        "can_disallow_download": false,
        "allow_comments": true,
        "team_restricts_comments": false,
        "resolved_visibility": {".tag": "public"},
        "requested_visibility": {".tag": "public"},
        "effective_audience": {".tag": "public"},
        "link_access_level": {".tag": "viewer"},
        "can_set_password": false,
        "can_remove_password": false,
        "require_password": false,
        "can_use_extended_sharing_controls": false,
    })
}

/// SharedLinkMetadata (polymorphic: `.tag` file | folder).
pub(crate) fn link_md(acct: &Account, node: &Node, link: &Link) -> Value {
    let mut md = json!({
        ".tag": if node.is_folder() { "folder" } else { "file" },
        "url": link.url,
        "id": acct.format_id(node.id),
        "name": node.name(),
        "path_lower": node.path_lower.as_ref(),
        "link_permissions": link_permissions(),
    });
    if let Some(f) = &node.file {
        md["client_modified"] = json!(fmt_time(f.client_modified));
        md["server_modified"] = json!(fmt_time(f.server_modified));
        md["rev"] = json!(format_rev(f.rev));
        md["size"] = json!(f.blob.len());
    }
    md
}

fn settings_error(tag: &str) -> ApiError {
    route_error(
        &["settings_error", tag],
        json!({".tag": "settings_error", "settings_error": {".tag": tag}}),
    )
    .into()
}

fn resolve_item(ctx: &Ctx, st: &State, path: &str) -> Result<std::sync::Arc<Node>, ApiError> {
    match st.resolve(&ctx.shared.account, path) {
        Lookup::Found(n) => Ok(n),
        Lookup::Root => Err(crate::wire::lookup_error("not_found").into()),
        other => Err(lookup_failure(&other)),
    }
}

pub(crate) fn create_shared_link_with_settings(ctx: &Ctx, arg: &Value) -> ApiResult {
    let a = Args::root(arg)?;
    a.only(&["path", "settings"])?;
    let path = a.req_str("path")?;
    a.check_pattern("path", path, PATTERN_READ_PATH, matches_read_path(path))?;
    let settings = a.opt_obj("settings")?;
    // Validate the settings first (400s), then decide what a basic account may do (409s).
    let mut not_authorized = false;
    let mut empty_settings = false;
    if let Some(s) = &settings {
        s.only(&[
            "require_password",
            "link_password",
            "expires",
            "audience",
            "access",
            "requested_visibility",
            "allow_download",
        ])?;
        let require_password = s.bool_or("require_password", false)?;
        let password = s.opt_str("link_password")?;
        let expires = s.opt_str("expires")?;
        if let Some(e) = expires
            && parse_time(e).is_none()
        {
            return Err(ApiError::Arg(format!(
                "settings.expires: '{e}' does not match format '%Y-%m-%dT%H:%M:%SZ'"
            )));
        }
        let audience = s.opt_union(
            "audience",
            &["public", "team", "no_one", "password", "members", "other"],
        )?;
        s.opt_union("access", &["viewer", "editor", "max", "default", "other"])?;
        let visibility =
            s.opt_union("requested_visibility", &["public", "team_only", "password"])?;
        s.bool_or("allow_download", true)?;
        empty_settings = ![
            "require_password",
            "link_password",
            "expires",
            "audience",
            "access",
            "requested_visibility",
            "allow_download",
        ]
        .iter()
        .any(|f| s.has(f));
        // Basic accounts can only make public links without expiry or password.
        not_authorized = expires.is_some()
            || require_password
            || password.is_some()
            || matches!(audience, Some("team" | "password" | "members"))
            || matches!(visibility, Some("team_only" | "password"));
    }
    let shared = ctx.shared;
    let mut st = shared.state();
    let node = resolve_item(ctx, &st, path)?;
    if empty_settings {
        return Err(settings_error("invalid_settings"));
    }
    if not_authorized {
        return Err(settings_error("not_authorized"));
    }
    let (link, created) = st.share_node(&node, &shared.base_url);
    let md = link_md(&shared.account, &node, link);
    if created {
        return Ok(Response::json_value(200, &md));
    }
    // The existing link's metadata is included only when the request had no settings.
    let error = if settings.is_some() {
        route_error(
            &["shared_link_already_exists"],
            json!({".tag": "shared_link_already_exists"}),
        )
    } else {
        Response::json_value(
            409,
            &json!({
                "error_summary": summary(&["shared_link_already_exists", "metadata"]),
                "error": {".tag": "shared_link_already_exists", "shared_link_already_exists": {".tag": "metadata", "metadata": md}},
            }),
        )
    };
    Err(error.into())
}

#[derive(serde::Serialize, serde::Deserialize)]
struct LinksCursor {
    a: u64,
    o: u64,
}

pub(crate) fn list_shared_links(ctx: &Ctx, arg: &Value) -> ApiResult {
    let a = Args::root(arg)?;
    a.only(&["path", "cursor", "direct_only"])?;
    let path = a.opt_str("path")?;
    if let Some(p) = path {
        a.check_pattern("path", p, PATTERN_READ_PATH, matches_read_path(p))?;
    }
    let cursor = a.opt_str("cursor")?;
    let direct_only = a.bool_or("direct_only", false)?;
    let shared = ctx.shared;
    let acct = &shared.account;
    let st = shared.state();
    if let Some(p) = path {
        // Links giving access to the path: its own, then (unless direct_only) its folders'.
        let node = resolve_item(ctx, &st, p)?;
        let mut chain = vec![node.clone()];
        if !direct_only {
            let mut key = node.path_lower.to_string();
            while let Some(i) = key.rfind('/') {
                key.truncate(i);
                if let Some(parent) = st.get(&key) {
                    chain.push(parent.clone());
                }
            }
        }
        let links: Vec<Value> = chain
            .iter()
            .filter_map(|n| st.link_of(n.id).map(|l| link_md(acct, n, l)))
            .collect();
        return Ok(Response::json_value(
            200,
            &json!({"links": links, "has_more": false}),
        ));
    }
    let start = match cursor {
        None => 0,
        Some(c) => match URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|raw| serde_json::from_slice::<LinksCursor>(&raw).ok())
        {
            Some(lc) if lc.a == acct.instance => lc.o,
            _ => return Err(route_error(&["reset"], json!({".tag": "reset"})).into()),
        },
    };
    let page = shared.cfg.shared_links_page_size.max(1);
    let mut links = Vec::new();
    let mut next = None;
    for (seq, l) in st.links.range(start..) {
        if links.len() == page {
            next = Some(*seq);
            break;
        }
        if let Some(n) = st.node_by_id(l.node_id) {
            links.push(link_md(acct, n, l));
        }
    }
    let has_more = next.is_some();
    let resume = next.unwrap_or_else(|| st.links.keys().next_back().map_or(start, |k| k + 1));
    let cursor = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&LinksCursor {
            a: acct.instance,
            o: resume,
        })
        .unwrap_or_default(),
    );
    Ok(Response::json_value(
        200,
        &json!({"links": links, "has_more": has_more, "cursor": cursor}),
    ))
}
