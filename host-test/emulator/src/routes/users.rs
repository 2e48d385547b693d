//! `users/*`: the account itself (FullAccount, space usage).

use super::{ApiResult, Ctx};
use crate::http::Response;
use serde_json::{Value, json};

pub(crate) fn get_current_account(ctx: &Ctx, _arg: &Value) -> ApiResult {
    let cfg = &ctx.shared.cfg;
    let acct = &ctx.shared.account;
    // "Franz Ferdinand (Personal)" → given "Franz", surname "Ferdinand".
    let plain: Vec<&str> = cfg
        .display_name
        .split_whitespace()
        .filter(|w| !w.starts_with('('))
        .collect();
    let given = plain.first().copied().unwrap_or("");
    let surname = plain.get(1..).map(|s| s.join(" ")).unwrap_or_default();
    let abbreviated: String = plain
        .iter()
        .filter_map(|w| w.chars().next())
        .flat_map(|c| c.to_uppercase())
        .collect();
    let referral: String = acct.account_id.chars().skip(7).take(8).collect();
    Ok(Response::json_value(
        200,
        &json!({
            "account_id": acct.account_id,
            "name": {
                "given_name": given,
                "surname": surname,
                "familiar_name": given,
                "display_name": cfg.display_name,
                "abbreviated_name": abbreviated,
            },
            "email": cfg.email,
            "email_verified": true,
            "disabled": false,
            "country": "US",
            "locale": "en",
            "referral_link": format!("https://db.tt/{referral}"),
            "is_paired": false,
            "account_type": {".tag": "basic"},
            "root_info": {".tag": "user", "root_namespace_id": acct.namespace_id, "home_namespace_id": acct.namespace_id},
        }),
    ))
}

pub(crate) fn get_space_usage(ctx: &Ctx, _arg: &Value) -> ApiResult {
    let used: u64 = ctx
        .shared
        .state()
        .tree
        .live
        .values()
        .map(|n| n.size())
        .sum();
    // A basic account: 2 GiB.
    Ok(Response::json_value(
        200,
        &json!({"used": used, "allocation": {".tag": "individual", "allocated": 2u64 << 30}}),
    ))
}
