//! `sharing/*`: creating shared links and listing them (paging, filters).

use crate::helpers::*;
use dropbox_emulator::EmulatorConfig;
use serde_json::json;

#[test]
fn create_shared_link_with_settings_rules() {
    let t = new();
    let info = t.emu.create_file("/Share/a.txt", bytes("a")).unwrap();
    let r = t.rpc(
        "sharing/create_shared_link_with_settings",
        json!({"path": "/Share/a.txt"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let md = r.json();
    assert_eq!(md[".tag"], "file");
    assert_eq!(md["id"], info.id.as_str());
    assert_eq!(md["path_lower"], "/share/a.txt");
    assert!(md["link_permissions"]["can_revoke"].is_boolean());
    let url = md["url"].as_str().unwrap().to_string();
    // Again without settings: 409 with the existing link nested twice.
    let r = t.rpc(
        "sharing/create_shared_link_with_settings",
        json!({"path": "/Share/a.txt"}),
    );
    assert_eq!(r.status, 409);
    let e = r.json()["error"].clone();
    assert_eq!(e[".tag"], "shared_link_already_exists");
    assert_eq!(e["shared_link_already_exists"][".tag"], "metadata");
    assert_eq!(
        e["shared_link_already_exists"]["metadata"]["url"],
        url.as_str()
    );
    // With settings: 409 without metadata.
    t.rpc("sharing/create_shared_link_with_settings", json!({"path": "/Share/a.txt", "settings": {"requested_visibility": "public", "audience": "public", "access": "viewer"}}))
        .assert_409(json!({".tag": "shared_link_already_exists"}));
    // Basic accounts cannot set an expiry.
    t.emu.create_file("/Share/b.txt", bytes("b")).unwrap();
    t.rpc(
        "sharing/create_shared_link_with_settings",
        json!({"path": "/Share/b.txt", "settings": {"expires": "2030-01-01T00:00:00Z"}}),
    )
    .assert_409(json!({".tag": "settings_error", "settings_error": {".tag": "not_authorized"}}));
    t.rpc(
        "sharing/create_shared_link_with_settings",
        json!({"path": "/Share/none.txt"}),
    )
    .assert_409(json!({".tag": "path", "path": {".tag": "not_found"}}));
    // Folder links.
    let r = t.rpc(
        "sharing/create_shared_link_with_settings",
        json!({"path": "/Share", "settings": {"audience": "public"}}),
    );
    assert_eq!(r.json()[".tag"], "folder");
    assert_eq!(
        t.emu
            .truth()
            .iter()
            .find(|e| e.path_lower == "/share/a.txt")
            .unwrap()
            .shared_url
            .as_deref(),
        Some(url.as_str())
    );
}

#[test]
fn list_shared_links_paging_and_filters() {
    let t = with_cfg(EmulatorConfig {
        shared_links_page_size: 2,
        ..Default::default()
    });
    for i in 0..5 {
        t.emu
            .create_file(&format!("/L/f{i}.txt"), bytes("x"))
            .unwrap();
        t.emu.share(&format!("/L/f{i}.txt")).unwrap();
    }
    let folder_url = t.emu.share("/L").unwrap();
    // All links, paged with a cursor.
    let mut all = Vec::new();
    let mut page = t.rpc("sharing/list_shared_links", json!({})).json();
    loop {
        assert!(page["cursor"].is_string());
        all.extend(page["links"].as_array().unwrap().iter().cloned());
        if page["has_more"] != true {
            break;
        }
        page = t
            .rpc(
                "sharing/list_shared_links",
                json!({"cursor": page["cursor"]}),
            )
            .json();
    }
    assert_eq!(all.len(), 6);
    // By path: its own link and its folder's; direct_only only its own; never a cursor.
    let v = t
        .rpc("sharing/list_shared_links", json!({"path": "/L/f1.txt"}))
        .json();
    let urls: Vec<&str> = v["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["url"].as_str().unwrap())
        .collect();
    assert_eq!(urls.len(), 2);
    assert!(urls.contains(&folder_url.as_str()));
    assert!(v.get("cursor").is_none());
    assert_eq!(v["has_more"], false);
    let v = t
        .rpc(
            "sharing/list_shared_links",
            json!({"path": "/L/f1.txt", "direct_only": true}),
        )
        .json();
    assert_eq!(v["links"].as_array().unwrap().len(), 1);
    assert_eq!(v["links"][0]["path_lower"], "/l/f1.txt");
    t.emu.unshare("/L/f1.txt").unwrap();
    let v = t
        .rpc(
            "sharing/list_shared_links",
            json!({"path": "/L/f1.txt", "direct_only": true}),
        )
        .json();
    assert_eq!(v["links"].as_array().unwrap().len(), 0);
    t.rpc("sharing/list_shared_links", json!({"path": "/nope"}))
        .assert_409(json!({".tag": "path", "path": {".tag": "not_found"}}));
}
