//! `files/get_metadata`, downloads (ranges, etags, large patterned files), exports of non-downloadable files, temporary links.

use crate::helpers::*;
use dropbox_emulator::{Content, content_hash};
use serde_json::{Value, json};
use std::time::Duration;

#[test]
fn get_metadata_forms() {
    let t = new();
    let info = t.emu.create_file("/Docs/é.txt", bytes("x")).unwrap();
    let r = t.rpc("files/get_metadata", json!({"path": "/docs/É.TXT"}));
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v[".tag"], "file");
    assert_eq!(v["name"], "é.txt");
    assert_eq!(v["id"], info.id.as_str());
    assert_eq!(
        t.rpc("files/get_metadata", json!({"path": info.id})).json()["name"],
        "é.txt"
    );
    let by_rev = t
        .rpc(
            "files/get_metadata",
            json!({"path": format!("rev:{}", info.rev.clone().unwrap())}),
        )
        .json();
    assert_eq!(by_rev["id"], info.id.as_str());
    let docs = t.rpc("files/get_metadata", json!({"path": "/Docs"})).json();
    assert_eq!(docs[".tag"], "folder");
    let rel = t
        .rpc(
            "files/get_metadata",
            json!({"path": format!("{}/é.txt", docs["id"].as_str().unwrap())}),
        )
        .json();
    assert_eq!(rel["id"], info.id.as_str());
    t.rpc("files/get_metadata", json!({"path": ""})).assert_400(
        "Error in call to API function \"files/get_metadata\": request body: path: '' did not match pattern '(/(.|[\\r\\n])*|id:.*)|(rev:[0-9a-f]{9,})|(ns:[0-9]+(/(.|[\\r\\n])*)?)'",
    );
    t.rpc("files/get_metadata", json!({"path": "/"})).assert_400("Error in call to API function \"files/get_metadata\": request body: path: The root folder is unsupported.");
    t.emu.delete("/Docs/é.txt").unwrap();
    t.rpc("files/get_metadata", json!({"path": "/Docs/é.txt"}))
        .assert_409(json!({".tag": "path", "path": {".tag": "not_found"}}));
    let r = t.rpc(
        "files/get_metadata",
        json!({"path": "/Docs/é.txt", "include_deleted": true}),
    );
    assert_eq!(
        r.json(),
        json!({".tag": "deleted", "name": "é.txt", "path_lower": "/docs/é.txt", "path_display": "/Docs/é.txt"})
    );
}

#[test]
fn download_shapes_ranges_etags() {
    let t = new();
    let name = "/Fotos 📷/naïve ünïcödé 😀.txt";
    let info = t.emu.create_file(name, bytes("0123456789")).unwrap();
    let r = t.download("files/download", json!({"path": name}), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, b"0123456789");
    assert_eq!(r.ct().as_deref(), Some("application/octet-stream"));
    let result = r.header("dropbox-api-result").unwrap();
    assert!(result.is_ascii());
    assert!(
        result.contains("\\ud83d\\ude00"),
        "astral chars as surrogate pairs: {result}"
    );
    let md: Value = serde_json::from_str(&result).unwrap();
    assert!(md.get(".tag").is_none(), "FileMetadata is untagged here");
    assert_eq!(md["name"], "naïve ünïcödé 😀.txt");
    assert_eq!(md["path_display"], name);
    assert_eq!(md["id"], info.id.as_str());
    assert_eq!(md["content_hash"], content_hash(b"0123456789"));
    // Ranges.
    let r = t.download(
        "files/download",
        json!({"path": name}),
        &[("Range", "bytes=2-4")],
    );
    assert_eq!((r.status, r.body.as_slice()), (206, &b"234"[..]));
    assert_eq!(r.header("content-range").as_deref(), Some("bytes 2-4/10"));
    assert!(r.header("dropbox-api-result").is_some());
    let r = t.download(
        "files/download",
        json!({"path": name}),
        &[("Range", "bytes=7-")],
    );
    assert_eq!((r.status, r.body.as_slice()), (206, &b"789"[..]));
    let r = t.download(
        "files/download",
        json!({"path": name}),
        &[("Range", "bytes=-2")],
    );
    assert_eq!((r.status, r.body.as_slice()), (206, &b"89"[..]));
    assert_eq!(r.header("content-range").as_deref(), Some("bytes 8-9/10"));
    let r = t.download(
        "files/download",
        json!({"path": name}),
        &[("Range", "bytes=10-")],
    );
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range").as_deref(), Some("bytes */10"));
    // ETag / If-None-Match.
    let etag = t
        .download("files/download", json!({"path": name}), &[])
        .header("etag")
        .unwrap();
    let r = t.download(
        "files/download",
        json!({"path": name}),
        &[("If-None-Match", &etag)],
    );
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    t.emu.modify_file(name, bytes("new content")).unwrap();
    let r = t.download(
        "files/download",
        json!({"path": name}),
        &[("If-None-Match", &etag)],
    );
    assert_eq!((r.status, r.body.as_slice()), (200, &b"new content"[..]));
    // The old revision stays downloadable by rev.
    let r = t.download(
        "files/download",
        json!({"path": format!("rev:{}", info.rev.unwrap())}),
        &[],
    );
    assert_eq!(r.body, b"0123456789");
    // GET form with ?arg= and ?authorization=.
    let arg = serde_json::to_string(&json!({"path": name})).unwrap();
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("arg", &arg)
        .append_pair("authorization", &format!("Bearer {}", t.token))
        .finish();
    let r = t.get(&t.url(&format!("/2/files/download?{q}")), &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"new content"[..]));
    // Errors.
    t.download("files/download", json!({"path": "/Fotos 📷"}), &[])
        .assert_409(json!({".tag": "path", "path": {".tag": "not_file"}}));
    t.download("files/download", json!({"path": "/nope"}), &[])
        .assert_409(json!({".tag": "path", "path": {".tag": "not_found"}}));
    t.emu
        .create_non_downloadable("/Doc.paper", "markdown", b"# Doc".to_vec())
        .unwrap();
    t.download("files/download", json!({"path": "/Doc.paper"}), &[])
        .assert_409(json!({".tag": "unsupported_file"}));
    t.download("files/download", json!({"path": "/x", "extra": 1}), &[])
        .assert_400("Error in call to API function \"files/download\": HTTP header \"Dropbox-API-Arg\": unknown field 'extra'");
    let r = t.post_raw(
        "/2/files/download",
        &[("Authorization", &format!("Bearer {}", t.token))],
        None,
    );
    r.assert_400("Error in call to API function \"files/download\": Must provide HTTP header \"Dropbox-API-Arg\" or URL parameter \"arg\".");
}

#[test]
fn raw_non_ascii_arg_header_is_refused() {
    let t = new();
    t.emu.create_file("/é.txt", bytes("x")).unwrap();
    let arg = "{\"path\":\"/é.txt\"}";
    let mut req = format!("POST /2/files/download HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\nDropbox-API-Arg: ", t.token).into_bytes();
    req.extend_from_slice(arg.as_bytes()); // raw UTF-8 bytes on the wire
    req.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    let (head, body) = raw(t.emu.local_addr(), &req);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert_eq!(
        String::from_utf8_lossy(&body),
        "Error in call to API function \"files/download\": HTTP header \"Dropbox-API-Arg\": could not decode input as JSON"
    );
    // The same argument escaped is fine, and the result header is pure ASCII.
    let mut req = format!("POST /2/files/download HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\nDropbox-API-Arg: ", t.token).into_bytes();
    req.extend_from_slice(br#"{"path":"/\u00e9.txt"}"#);
    req.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    let (head, body) = raw(t.emu.local_addr(), &req);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"x");
    assert!(head.is_ascii());
    assert!(head.contains(r#""name":"\u00e9.txt""#), "{head}");
}

#[test]
fn large_pattern_file_streams() {
    let t = new();
    let content = Content::Pattern {
        seed: 42,
        len: 20 * 1024 * 1024 + 3,
    };
    let info = t.emu.create_file("/big.bin", content.clone()).unwrap();
    assert_eq!(
        info.content_hash.as_deref(),
        Some(content.content_hash().as_str())
    );
    let r = t.download("files/download", json!({"path": "/big.bin"}), &[]);
    assert_eq!(r.body.len() as u64, content.len());
    assert_eq!(content_hash(&r.body), content.content_hash());
    let r = t.download(
        "files/download",
        json!({"path": "/big.bin"}),
        &[("Range", "bytes=5000000-5000099")],
    );
    assert_eq!(r.body, content.to_bytes()[5_000_000..5_000_100]);
}

#[test]
fn export_non_downloadable() {
    let t = new();
    t.emu
        .create_non_downloadable("/Notes/Plan.paper", "markdown", b"# Plan\n".to_vec())
        .unwrap();
    let r = t.download("files/export", json!({"path": "/Notes/Plan.paper"}), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, b"# Plan\n");
    let v: Value = serde_json::from_str(&r.header("dropbox-api-result").unwrap()).unwrap();
    assert_eq!(v["export_metadata"]["name"], "Plan.md");
    assert_eq!(v["export_metadata"]["size"], 7);
    assert_eq!(
        v["export_metadata"]["export_hash"],
        content_hash(b"# Plan\n")
    );
    assert_eq!(v["file_metadata"]["is_downloadable"], false);
    assert_eq!(v["file_metadata"]["name"], "Plan.paper");
    t.download(
        "files/export",
        json!({"path": "/Notes/Plan.paper", "export_format": "html"}),
        &[],
    )
    .assert_409(json!({".tag": "invalid_export_format"}));
    t.emu.create_file("/plain.txt", bytes("p")).unwrap();
    t.download("files/export", json!({"path": "/plain.txt"}), &[])
        .assert_409(json!({".tag": "non_exportable"}));
}

#[test]
fn temporary_links() {
    let t = new();
    t.emu
        .create_file("/Pics/cat 🐱.jpg", bytes("meow-bytes"))
        .unwrap();
    let r = t.rpc(
        "files/get_temporary_link",
        json!({"path": "/Pics/cat 🐱.jpg"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert!(v["metadata"].get(".tag").is_none());
    assert_eq!(v["metadata"]["name"], "cat 🐱.jpg");
    let link = v["link"].as_str().unwrap().to_string();
    assert!(link.starts_with(&t.emu.base_url()));
    // No Authorization needed; Range supported; MIME type from the name.
    let r = t.get(&link, &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"meow-bytes"[..]));
    assert_eq!(r.ct().as_deref(), Some("image/jpeg"));
    let r = t.get(&link, &[("Range", "bytes=0-3")]);
    assert_eq!((r.status, r.body.as_slice()), (206, &b"meow"[..]));
    assert_eq!(t.get(&t.url("/tl/unknown-token"), &[]).status, 404);
    t.emu
        .create_non_downloadable("/d.paper", "html", b"<p>".to_vec())
        .unwrap();
    t.rpc("files/get_temporary_link", json!({"path": "/d.paper"}))
        .assert_409(json!({".tag": "unsupported_file"}));
    t.rpc("files/get_temporary_link", json!({"path": "/Pics"}))
        .assert_409(json!({".tag": "path", "path": {".tag": "not_file"}}));
    // Just before four hours it still works; after, 410.
    t.emu.advance_clock(Duration::from_secs(4 * 3600 - 60));
    assert_eq!(t.get(&link, &[]).status, 200);
    t.emu.advance_clock(Duration::from_secs(61));
    assert_eq!(t.get(&link, &[]).status, 410);
}
