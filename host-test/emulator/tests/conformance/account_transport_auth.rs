//! The account routes, the HTTP transport, and everything every route shares: the void-argument conventions, auth failures, Content-Type rules, keep-alive, strict argument decoding, lookup errors.

use crate::helpers::*;
use serde_json::json;
use std::time::Duration;

#[test]
fn get_current_account_shape_and_void_conventions() {
    let t = new();
    let auth = format!("Bearer {}", t.token);
    // No body, no Content-Type (curl / JS SDK).
    let r = t.post_raw(
        "/2/users/get_current_account",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.ct().as_deref(), Some("application/json"));
    assert!(r.header("x-dropbox-request-id").is_some());
    assert!(r.header("dropbox-api-result").is_none());
    let v = r.json();
    let id = v["account_id"].as_str().unwrap();
    assert_eq!(id.len(), 40);
    assert!(id.starts_with("dbid:"));
    assert_eq!(id, t.emu.account_id());
    assert_eq!(v["email"], t.emu.email());
    assert_eq!(v["root_info"][".tag"], "user");
    assert_eq!(
        v["root_info"]["root_namespace_id"],
        v["root_info"]["home_namespace_id"]
    );
    assert_eq!(v["account_type"][".tag"], "basic");
    for k in [
        "given_name",
        "surname",
        "familiar_name",
        "display_name",
        "abbreviated_name",
    ] {
        assert!(v["name"][k].is_string(), "{k}");
    }
    assert!(v.get("team").is_none());
    // JSON null body (Python SDK).
    let r = t.post_raw(
        "/2/users/get_current_account",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some("null"),
    );
    assert_eq!(r.status, 200);
    // Content-Type with an empty body is refused.
    let r = t.post_raw(
        "/2/users/get_current_account",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(""),
    );
    r.assert_400("Error in call to API function \"users/get_current_account\": request body: could not decode input as JSON");
    let r = t.post_raw(
        "/2/users/get_current_account",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some("{}"),
    );
    r.assert_400("Error in call to API function \"users/get_current_account\": request body: expected null, got dict");
    let r = t.post_raw(
        "/2/users/get_space_usage",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["allocation"][".tag"], "individual");
}

#[test]
fn auth_failures_are_exact() {
    let t = new();
    let route = "/2/files/list_folder";
    let ct = ("Content-Type", "application/json");
    let body = Some(r#"{"path":""}"#);
    t.post_raw(route, &[ct], body)
        .assert_400("Error in call to API function \"files/list_folder\": Must provide HTTP header \"Authorization\" or URL parameter \"authorization\".");
    t.post_raw(route, &[ct, ("Authorization", "Basic Zm9vOmJhcg==")], body).assert_400(
        "Error in call to API function \"files/list_folder\": Invalid authorization value in HTTP header \"Authorization\": \"Basic Zm9vOmJhcg==\".  Expecting \"Bearer <oauth2-access-token>\".",
    );
    t.post_raw(route, &[ct, ("Authorization", "Bearer not-a-token")], body)
        .assert_400("Error in call to API function \"files/list_folder\": The given OAuth 2 access token is malformed.");
    t.post_raw(
        route,
        &[
            ct,
            (
                "Authorization",
                "Bearer sl.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ),
        ],
        body,
    )
    .assert_401("invalid_access_token");
    // Scope check.
    let pair = t.emu.issue_tokens(&["account_info.read"], 3600);
    let r = t.rpc_with("files/list_folder", &pair.access_token, json!({"path": ""}));
    r.assert_401("missing_scope");
    assert_eq!(r.json()["error"]["required_scope"], "files.metadata.read");
    let r = t.rpc_with(
        "files/get_temporary_link",
        &pair.access_token,
        json!({"path": "/x"}),
    );
    assert_eq!(r.json()["error"]["required_scope"], "files.content.read");
    let r = t.rpc_with("sharing/list_shared_links", &pair.access_token, json!({}));
    assert_eq!(r.json()["error"]["required_scope"], "sharing.read");
    let r = t.rpc_with(
        "sharing/create_shared_link_with_settings",
        &pair.access_token,
        json!({"path": "/x"}),
    );
    assert_eq!(r.json()["error"]["required_scope"], "sharing.write");
    // Expiry: by the hook, and by the clock.
    assert_eq!(t.rpc("files/list_folder", json!({"path": ""})).status, 200);
    t.emu.expire_access_tokens();
    t.rpc("files/list_folder", json!({"path": ""}))
        .assert_401("expired_access_token");
    let fresh = t.emu.access_token();
    assert_ne!(fresh, t.token);
    assert!(fresh.starts_with("sl."));
    assert_eq!(
        t.rpc_with("files/list_folder", &fresh, json!({"path": ""}))
            .status,
        200
    );
    t.emu.advance_clock(Duration::from_secs(14_401));
    t.rpc_with("files/list_folder", &fresh, json!({"path": ""}))
        .assert_401("expired_access_token");
    // revoke_all: everything dead.
    let t2 = new();
    t2.emu.revoke_all();
    t2.rpc("files/list_folder", json!({"path": ""}))
        .assert_401("invalid_access_token");
}

#[test]
fn content_type_rules() {
    let t = new();
    let auth = format!("Bearer {}", t.token);
    let body = Some(r#"{"path":""}"#);
    for ok in [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain; charset=dropbox-cors-hack",
    ] {
        let r = t.post_raw(
            "/2/files/list_folder",
            &[("Authorization", &auth), ("Content-Type", ok)],
            body,
        );
        assert_eq!(r.status, 200, "{ok}: {}", r.text());
    }
    t.post_raw("/2/files/list_folder", &[("Authorization", &auth), ("Content-Type", "application/x-www-form-urlencoded")], body).assert_400(
        "Error in call to API function \"files/list_folder\": Bad HTTP \"Content-Type\" header: \"application/x-www-form-urlencoded\".  Expecting one of \"application/json\", \"application/json; charset=utf-8\", \"text/plain; charset=dropbox-cors-hack\".",
    );
    t.emu.create_file("/a.txt", bytes("x")).unwrap();
    let r = t.download(
        "files/download",
        json!({"path": "/a.txt"}),
        &[("Content-Type", "application/json")],
    );
    r.assert_400(
        "Error in call to API function \"files/download\": Bad HTTP \"Content-Type\" header: \"application/json\".  Expecting one of \"text/plain\", \"text/plain; charset=utf-8\", \"application/octet-stream\", \"application/octet-stream; charset=utf-8\".",
    );
    assert_eq!(
        t.download(
            "files/download",
            json!({"path": "/a.txt"}),
            &[("Content-Type", "application/octet-stream")]
        )
        .status,
        200
    );
}

#[test]
fn transport_keep_alive_close_and_unknown_routes() {
    let t = new();
    let addr = t.emu.local_addr();
    let body = r#"{"path":""}"#;
    let one = format!(
        "POST /2/files/list_folder HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        t.token,
        body.len()
    );
    let last = format!(
        "POST /2/files/list_folder HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        t.token,
        body.len()
    );
    // Two pipelined requests on one keep-alive connection; the second asks to close, and the
    // server closes (read_to_end returns).
    let (head, rest) = raw(addr, format!("{one}{last}").as_bytes());
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let text = String::from_utf8_lossy(&rest);
    assert_eq!(
        text.matches("HTTP/1.1 200").count(),
        1,
        "second response present: {text}"
    );
    assert!(text.contains("Connection: close"));
    // Chunked request bodies are accepted too.
    let chunked = format!(
        "POST /2/files/list_folder HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        t.token,
        body.len()
    );
    let (head, _) = raw(addr, chunked.as_bytes());
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Unknown route.
    let r = t.rpc("files/nope", json!({}));
    assert_eq!(r.status, 404);
    assert!(r.header("x-dropbox-request-id").is_some());
    // Garbage request line: 400 and close, never a panic.
    let (head, _) = raw(addr, b"NONSENSE\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let (head, _) = raw(
        addr,
        b"POST /2/files/list_folder HTTP/1.1\r\nContent-Length: zz\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    // Still serving.
    assert_eq!(t.rpc("files/list_folder", json!({"path": ""})).status, 200);
}

#[test]
fn strict_request_decoding() {
    let t = new();
    let p = "Error in call to API function \"files/list_folder\": request body: ";
    t.rpc("files/list_folder", json!({"path": "", "limit": 0}))
        .assert_400(&format!("{p}limit: 0 is not within range [1, 2000]"));
    t.rpc("files/list_folder", json!({"path": "", "limit": 2001}))
        .assert_400(&format!("{p}limit: 2001 is not within range [1, 2000]"));
    t.rpc("files/list_folder", json!({"path": "", "limit": "5"}))
        .assert_400(&format!("{p}limit: expected integer, got string"));
    t.rpc("files/list_folder", json!({"path": "", "recursive": "yes"}))
        .assert_400(&format!("{p}recursive: 'yes' is not a valid boolean"));
    t.rpc("files/list_folder", json!({"path": 5}))
        .assert_400(&format!(
            "{p}path: '5' expected to be a string, got integer"
        ));
    t.rpc("files/list_folder", json!({"path": "foo"})).assert_400(&format!(
        "{p}path: 'foo' did not match pattern '(/(.|[\\r\\n])*)?|id:.*|(ns:[0-9]+(/(.|[\\r\\n])*)?)'"
    ));
    t.rpc("files/list_folder", json!({}))
        .assert_400(&format!("{p}missing required field 'path'"));
    t.rpc("files/list_folder", json!({"path": "", "bogus": 1}))
        .assert_400(&format!("{p}unknown field 'bogus'"));
    t.rpc("files/list_folder", json!([]))
        .assert_400(&format!("{p}expected object, got list"));
    t.rpc("files/list_folder", json!({"path": "/"}))
        .assert_400(&format!(
            "{p}path: Specify the root folder as an empty string rather than as \"/\"."
        ));
    let auth = format!("Bearer {}", t.token);
    t.post_raw("/2/files/list_folder", &[("Authorization", &auth), ("Content-Type", "application/json")], Some("{\"path\": "))
        .assert_400("Error in call to API function \"files/list_folder\": request body: could not decode input as JSON");
    t.post_raw("/2/files/list_folder", &[("Authorization", &auth), ("Content-Type", "application/json")], Some(""))
        .assert_400("Error in call to API function \"files/list_folder\": request body: could not decode input as JSON");
    // list_folder/continue accepts only `cursor`.
    let cursor = t.list(json!({"path": ""}))["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    t.rpc("files/list_folder/continue", json!({"cursor": cursor, "path": ""}))
        .assert_400("Error in call to API function \"files/list_folder/continue\": request body: unknown field 'path'");
    t.rpc("files/list_folder/continue", json!({"cursor": ""}))
        .assert_400("Error in call to API function \"files/list_folder/continue\": request body: cursor: '' must be at least 1 characters, got 0");
    // Nested fields carry their path.
    t.emu.create_file("/s.txt", bytes("s")).unwrap();
    t.rpc("sharing/create_shared_link_with_settings", json!({"path": "/s.txt", "settings": {"nope": true}}))
        .assert_400("Error in call to API function \"sharing/create_shared_link_with_settings\": request body: settings: unknown field 'nope'");
    t.rpc("sharing/create_shared_link_with_settings", json!({"path": "/s.txt", "settings": {"audience": "everyone"}}))
        .assert_400("Error in call to API function \"sharing/create_shared_link_with_settings\": request body: settings.audience: unknown tag 'everyone'");
}

#[test]
fn lookup_errors() {
    let t = new();
    t.emu.create_file("/Docs/a.txt", bytes("a")).unwrap();
    t.rpc("files/list_folder", json!({"path": "/Docs/a.txt"}))
        .assert_409(json!({".tag": "path", "path": {".tag": "not_folder"}}));
    t.rpc("files/list_folder", json!({"path": "/missing"}))
        .assert_409(json!({".tag": "path", "path": {".tag": "not_found"}}));
    t.rpc("files/list_folder", json!({"path": "/Docs/"}))
        .assert_409(json!({".tag": "path", "path": {".tag": "malformed_path"}}));
    t.rpc("files/get_metadata", json!({"path": "/Docs/"}))
        .assert_409(json!({".tag": "path", "path": {".tag": "malformed_path"}}));
    t.rpc("files/get_metadata", json!({"path": "/nope"}))
        .assert_409(json!({".tag": "path", "path": {".tag": "not_found"}}));
}
