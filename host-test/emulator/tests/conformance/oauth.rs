//! OAuth: the code flow with PKCE, refresh and revoke, errors, confidential clients, manual approval.

use crate::helpers::*;
use dropbox_emulator::EmulatorConfig;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

fn pkce_pair() -> (String, String) {
    use base64::Engine;
    use sha2::Digest;
    let verifier = "v".repeat(20) + "-._~abcdefghijklmnopqrstuvwxyz0123456789";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn authorize(t: &T, extra: &str) -> String {
    let r = t.get(&t.url(&format!("/oauth2/authorize?client_id=emu-app-key&response_type=code&redirect_uri=http%3A%2F%2F127.0.0.1%3A5555%2Fcb&state=xyz{extra}")), &[]);
    assert_eq!(r.status, 302, "{}", r.text());
    let loc = url::Url::parse(&r.header("location").unwrap()).unwrap();
    assert_eq!(
        (loc.host_str(), loc.port(), loc.path()),
        (Some("127.0.0.1"), Some(5555), "/cb")
    );
    let q: BTreeMap<String, String> = loc.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "xyz");
    q["code"].clone()
}

fn assert_token_error(r: &Resp, error: &str) {
    assert_eq!(r.status, 400, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"], error, "{v}");
    assert!(v["error_description"].is_string());
}

#[test]
fn oauth_code_flow_with_pkce_refresh_and_revoke() {
    let t = new();
    let (verifier, challenge) = pkce_pair();
    let code = authorize(
        &t,
        &format!(
            "&code_challenge={challenge}&code_challenge_method=S256&token_access_type=offline"
        ),
    );
    let cb = "http://127.0.0.1:5555/cb";
    // Wrong verifier: refused, and the code is spent.
    let r = token_call(
        &t,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "emu-app-key"),
            ("redirect_uri", cb),
            (
                "code_verifier",
                "wrong-verifier-wrong-verifier-wrong-verifier-x",
            ),
        ],
        None,
    );
    assert_token_error(&r, "invalid_grant");
    let r = token_call(
        &t,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "emu-app-key"),
            ("redirect_uri", cb),
            ("code_verifier", &verifier),
        ],
        None,
    );
    assert_token_error(&r, "invalid_grant");
    // A fresh code with the right verifier, public client (no secret).
    let code = authorize(
        &t,
        &format!(
            "&code_challenge={challenge}&code_challenge_method=S256&token_access_type=offline"
        ),
    );
    let r = token_call(
        &t,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "emu-app-key"),
            ("redirect_uri", "http://127.0.0.1:9/other"),
            ("code_verifier", &verifier),
        ],
        None,
    );
    assert_token_error(&r, "invalid_grant");
    let code = authorize(
        &t,
        &format!(
            "&code_challenge={challenge}&code_challenge_method=S256&token_access_type=offline"
        ),
    );
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("client_id", "emu-app-key"),
        ("redirect_uri", cb),
        ("code_verifier", verifier.as_str()),
    ];
    let r = token_call(&t, &form, None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.ct().as_deref(), Some("application/json"));
    let v = r.json();
    let access = v["access_token"].as_str().unwrap().to_string();
    let refresh = v["refresh_token"].as_str().unwrap().to_string();
    assert!(access.starts_with("sl."));
    assert_eq!(v["token_type"], "bearer");
    assert_eq!(v["expires_in"], 14_400);
    assert_eq!(v["account_id"], t.emu.account_id());
    assert!(v["uid"].is_string());
    for s in [
        "account_info.read",
        "files.metadata.read",
        "files.content.read",
        "sharing.read",
        "sharing.write",
    ] {
        assert!(
            v["scope"].as_str().unwrap().split(' ').any(|x| x == s),
            "{s}"
        );
    }
    assert_eq!(
        t.rpc_with("files/list_folder", &access, json!({"path": ""}))
            .status,
        200
    );
    // Reused code.
    assert_token_error(&token_call(&t, &form, None), "invalid_grant");
    // Refresh: a new access token only.
    let r = token_call(
        &t,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", "emu-app-key"),
        ],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert!(v.get("refresh_token").is_none());
    let access2 = v["access_token"].as_str().unwrap().to_string();
    assert_ne!(access2, access);
    assert_eq!(
        t.rpc_with("users/get_current_account", &access2, Value::Null)
            .status,
        200
    );
    // Refresh with client credentials in a Basic header.
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("emu-app-key:emu-app-secret")
    );
    let r = token_call(
        &t,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        Some(&basic),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let access3 = r.json()["access_token"].as_str().unwrap().to_string();
    // Revoke: body null; the token, its refresh token and siblings die.
    let r = t.post_raw(
        "/2/auth/token/revoke",
        &[("Authorization", &format!("Bearer {access2}"))],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.ct().as_deref(), Some("application/json"));
    assert_eq!(r.text(), "null");
    for tok in [&access, &access2, &access3] {
        t.rpc_with("files/list_folder", tok, json!({"path": ""}))
            .assert_401("invalid_access_token");
    }
    assert_token_error(
        &token_call(
            &t,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", "emu-app-key"),
            ],
            None,
        ),
        "invalid_grant",
    );
    // Unrelated tokens still work.
    assert_eq!(t.rpc("files/list_folder", json!({"path": ""})).status, 200);
}

#[test]
fn oauth_errors_and_confidential_clients() {
    let t = new();
    let code = authorize(&t, "");
    // No PKCE, no secret: the client is not authenticated.
    let r = token_call(
        &t,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "emu-app-key"),
            ("redirect_uri", "http://127.0.0.1:5555/cb"),
        ],
        None,
    );
    assert_token_error(&r, "invalid_client");
    let code = authorize(&t, "");
    let r = token_call(
        &t,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "emu-app-key"),
            ("client_secret", "wrong"),
            ("redirect_uri", "http://127.0.0.1:5555/cb"),
        ],
        None,
    );
    assert_token_error(&r, "invalid_client");
    let code = authorize(&t, "&token_access_type=online");
    let r = token_call(
        &t,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "emu-app-key"),
            ("client_secret", "emu-app-secret"),
            ("redirect_uri", "http://127.0.0.1:5555/cb"),
        ],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json().get("refresh_token").is_none(),
        "online access has no refresh token"
    );
    assert_token_error(
        &token_call(
            &t,
            &[("grant_type", "password"), ("client_id", "emu-app-key")],
            None,
        ),
        "unsupported_grant_type",
    );
    assert_token_error(
        &token_call(&t, &[("client_id", "emu-app-key")], None),
        "invalid_request",
    );
    assert_token_error(
        &token_call(
            &t,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "not a token!"),
                ("client_id", "emu-app-key"),
            ],
            None,
        ),
        "invalid_grant",
    );
    assert_token_error(
        &token_call(
            &t,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
                ("client_id", "emu-app-key"),
            ],
            None,
        ),
        "invalid_grant",
    );
    // Codes expire.
    let code = authorize(&t, "");
    t.emu.advance_clock(Duration::from_secs(3600));
    let r = token_call(
        &t,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "emu-app-key"),
            ("client_secret", "emu-app-secret"),
            ("redirect_uri", "http://127.0.0.1:5555/cb"),
        ],
        None,
    );
    assert_token_error(&r, "invalid_grant");
    // Authorization page validation.
    assert_eq!(
        t.get(
            &t.url("/oauth2/authorize?client_id=nope&response_type=code"),
            &[]
        )
        .status,
        400
    );
    assert_eq!(t.get(&t.url("/oauth2/authorize?client_id=emu-app-key&response_type=code&redirect_uri=http%3A%2F%2Fevil.example%2Fcb"), &[]).status, 400);
    // Without redirect_uri the code is shown on the page.
    let r = t.get(
        &t.url("/oauth2/authorize?client_id=emu-app-key&response_type=code"),
        &[],
    );
    assert_eq!(r.status, 200);
    assert!(r.text().contains("id=\"code\""));
    // issue_tokens + revoke_all.
    let pair = t.emu.issue_tokens(&["files.metadata.read"], 60);
    assert_eq!(pair.expires_in, 60);
    t.emu.revoke_all();
    assert_token_error(
        &token_call(
            &t,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &pair.refresh_token),
                ("client_id", "emu-app-key"),
            ],
            None,
        ),
        "invalid_grant",
    );
}

#[test]
fn oauth_manual_approval() {
    let t = with_cfg(EmulatorConfig {
        auto_approve: false,
        ..Default::default()
    });
    let r = t.get(&t.url("/oauth2/authorize?client_id=emu-app-key&response_type=code&redirect_uri=http%3A%2F%2Flocalhost%3A1%2Fcb&state=s1"), &[]);
    assert_eq!(r.status, 200);
    let page = r.text();
    let href = |id: &str| {
        let marker = format!("id=\"{id}\" href=\"");
        let start = page.find(&marker).unwrap() + marker.len();
        page[start..]
            .split('"')
            .next()
            .unwrap()
            .replace("&amp;", "&")
    };
    let deny = t.get(&t.url(&href("deny")), &[]);
    assert_eq!(deny.status, 302);
    assert!(
        deny.header("location")
            .unwrap()
            .contains("error=access_denied")
    );
    let r = t.get(&t.url("/oauth2/authorize?client_id=emu-app-key&response_type=code&redirect_uri=http%3A%2F%2Flocalhost%3A1%2Fcb&state=s2"), &[]);
    let page = r.text();
    let start = page.find("id=\"allow\" href=\"").unwrap() + "id=\"allow\" href=\"".len();
    let allow = page[start..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    let r = t.get(&t.url(&allow), &[]);
    assert_eq!(r.status, 302);
    let loc = r.header("location").unwrap();
    assert!(loc.contains("code=") && loc.contains("state=s2"), "{loc}");
}
