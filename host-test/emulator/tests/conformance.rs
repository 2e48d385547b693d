//! Conformance of the emulator against DROPBOX-API.md, over real HTTP (ureq, or raw TCP where the
//! exact bytes matter). Every test starts its own emulator, so they run in parallel.

use dropbox_emulator::{Content, Emulator, EmulatorConfig, Fault, FaultKind, Kind, content_hash};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use ureq::Agent;

// ---------------------------------------------------------------------------------------------
// Helpers

fn agent() -> Agent {
    let cfg = Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(60)))
        .build();
    Agent::new_with_config(cfg)
}

struct Resp {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
    fn ct(&self) -> Option<String> {
        self.header("content-type")
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }
    /// A 400 with the exact plain-text body.
    fn assert_400(&self, text: &str) {
        assert_eq!(self.status, 400, "body: {}", self.text());
        assert_eq!(self.ct().as_deref(), Some("text/plain; charset=utf-8"));
        assert_eq!(self.text(), text);
    }
    /// A 409 whose error is `error` exactly.
    fn assert_409(&self, error: Value) {
        assert_eq!(self.status, 409, "body: {}", self.text());
        assert_eq!(self.ct().as_deref(), Some("application/json"));
        let v = self.json();
        assert_eq!(v["error"], error);
        assert!(v["error_summary"].is_string());
    }
    fn assert_401(&self, tag: &str) {
        assert_eq!(self.status, 401, "body: {}", self.text());
        assert_eq!(self.ct().as_deref(), Some("application/json"));
        assert_eq!(
            self.header("www-authenticate").as_deref(),
            Some("Bearer realm=\"Dropbox-API\"")
        );
        assert_eq!(self.json()["error"][".tag"], tag);
    }
}

fn finish(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Resp {
    let mut r = r.expect("request failed at transport level");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r
        .body_mut()
        .with_config()
        .limit(1 << 32)
        .read_to_vec()
        .expect("reading body");
    Resp {
        status,
        headers,
        body,
    }
}

/// The official SDKs' header-safe JSON (JS SDK: every char from U+007F up as \uXXXX).
fn header_safe(v: &Value) -> String {
    let s = serde_json::to_string(v).unwrap();
    let mut out = String::new();
    for c in s.chars() {
        if (c as u32) < 0x7f {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for u in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

struct T {
    emu: Emulator,
    agent: Agent,
    token: String,
}

fn with_cfg(cfg: EmulatorConfig) -> T {
    let emu = Emulator::start(cfg).expect("emulator starts");
    let token = emu.access_token();
    T {
        emu,
        agent: agent(),
        token,
    }
}

fn new() -> T {
    with_cfg(EmulatorConfig::default())
}

impl T {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.emu.base_url())
    }

    /// RPC with the default token.
    fn rpc(&self, route: &str, body: Value) -> Resp {
        self.rpc_with(route, &self.token, body)
    }

    fn rpc_with(&self, route: &str, token: &str, body: Value) -> Resp {
        finish(
            self.agent
                .post(&self.url(&format!("/2/{route}")))
                .header("Authorization", &format!("Bearer {token}"))
                .header("Content-Type", "application/json")
                .send(serde_json::to_string(&body).unwrap()),
        )
    }

    /// POST with exactly these headers and body.
    fn post_raw(&self, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
        let mut req = self.agent.post(&self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        finish(match body {
            Some(b) => req.send(b),
            None => req.send_empty(),
        })
    }

    fn get(&self, url: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = self.agent.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        finish(req.call())
    }

    fn download(&self, route: &str, arg: Value, headers: &[(&str, &str)]) -> Resp {
        let mut req = self
            .agent
            .post(&self.url(&format!("/2/{route}")))
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Dropbox-API-Arg", &header_safe(&arg));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        finish(req.send_empty())
    }

    fn list(&self, arg: Value) -> Value {
        let r = self.rpc("files/list_folder", arg);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    fn cont(&self, cursor: &str) -> Value {
        let r = self.rpc("files/list_folder/continue", json!({"cursor": cursor}));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// list_folder then continue until has_more is false.
    fn list_all(&self, arg: Value) -> (Vec<Value>, String) {
        let mut page = self.list(arg);
        let mut entries = page["entries"].as_array().unwrap().clone();
        while page["has_more"] == true {
            page = self.cont(page["cursor"].as_str().unwrap());
            entries.extend(page["entries"].as_array().unwrap().iter().cloned());
        }
        (entries, page["cursor"].as_str().unwrap().to_string())
    }

    /// continue until has_more is false.
    fn changes(&self, cursor: &str) -> (Vec<Value>, String) {
        let mut entries = Vec::new();
        let mut cursor = cursor.to_string();
        loop {
            let page = self.cont(&cursor);
            entries.extend(page["entries"].as_array().unwrap().iter().cloned());
            cursor = page["cursor"].as_str().unwrap().to_string();
            if page["has_more"] != true {
                return (entries, cursor);
            }
        }
    }
}

/// Raw HTTP/1.1 over TCP: (status line + headers, body). Reads until the server closes.
fn raw(addr: std::net::SocketAddr, request: &[u8]) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(all.len());
    (
        String::from_utf8_lossy(&all[..split]).into_owned(),
        all[split..].to_vec(),
    )
}

/// A local replica built by applying entries with the rules of DROPBOX-API.md §4.1.
#[derive(Default, Debug)]
struct Replica {
    items: BTreeMap<String, (String, String, String)>, // path_lower -> (tag, id, name)
}

impl Replica {
    fn remove_subtree(&mut self, key: &str, include_self: bool) {
        let prefix = format!("{key}/");
        self.items
            .retain(|k, _| !(k.starts_with(&prefix) || (include_self && k == key)));
    }
    fn apply(&mut self, entries: &[Value]) {
        for e in entries {
            let key = e["path_lower"].as_str().unwrap().to_string();
            match e[".tag"].as_str().unwrap() {
                "file" => {
                    self.remove_subtree(&key, false);
                    self.items.insert(
                        key,
                        (
                            "file".into(),
                            e["id"].as_str().unwrap().into(),
                            e["name"].as_str().unwrap().into(),
                        ),
                    );
                }
                "folder" => {
                    self.items.insert(
                        key,
                        (
                            "folder".into(),
                            e["id"].as_str().unwrap().into(),
                            e["name"].as_str().unwrap().into(),
                        ),
                    );
                }
                "deleted" => self.remove_subtree(&key, true),
                other => panic!("unexpected tag {other}"),
            }
        }
    }
    fn assert_matches(&self, emu: &Emulator, check_names: bool) {
        let truth: BTreeMap<String, (String, String, String)> = emu
            .truth()
            .into_iter()
            .map(|t| {
                (
                    t.path_lower,
                    (
                        if t.kind == Kind::File {
                            "file"
                        } else {
                            "folder"
                        }
                        .to_string(),
                        t.id,
                        t.name,
                    ),
                )
            })
            .collect();
        if check_names {
            assert_eq!(self.items, truth);
        } else {
            let strip = |m: &BTreeMap<String, (String, String, String)>| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.0.clone(), v.1.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(strip(&self.items), strip(&truth));
        }
    }
}

fn bytes(s: &str) -> Content {
    Content::Bytes(s.as_bytes().to_vec())
}

fn paths(entries: &[Value]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| {
            (
                e[".tag"].as_str().unwrap().to_string(),
                e["path_display"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Content hash (DROPBOX-API.md §9)

#[test]
fn content_hash_vectors_and_streaming() {
    const B: usize = 4 * 1024 * 1024;
    assert_eq!(
        content_hash(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        content_hash(b"hello rdrop2"),
        "1aa2b7623dfff520c4abdc1227d10bc4e229b74005b66b3458345830e556f4de"
    );
    assert_eq!(
        content_hash(b"a"),
        "bf5d3affb73efd2ec6c36ad3112dd933efed63c4e1cbffcfa88e2759c144f2d8"
    );
    let ramp = |n: usize| (0..n).map(|i| (i % 256) as u8).collect::<Vec<u8>>();
    assert_eq!(
        content_hash(&ramp(B)),
        "894bbb52d1212d6bcbe9967f1a2169138c4d4af0c8dfbaeae86cd1d3f0c03faf"
    );
    let mut plus = ramp(B);
    plus.push(0xff);
    assert_eq!(
        content_hash(&plus),
        "9149387a91f71c7c2149b8427d15526b71c1a38d6c6f999ad71486a2ce788d57"
    );
    let data = ramp(14_680_064);
    let want = "f61d3ae93fa4f7646d37949fc0885141bf682faa9a130896b93459c650335d0f";
    assert_eq!(content_hash(&data), want);
    for sizes in [
        vec![B - 1],
        vec![B],
        vec![B + 1],
        vec![B - 2, 1],
        vec![B - 2, B + 3],
    ] {
        let mut h = dropbox_emulator::ContentHasher::new();
        let mut rest = &data[..];
        // The chunking repeats until the data is exhausted.
        'outer: loop {
            for &s in &sizes {
                if rest.is_empty() {
                    break 'outer;
                }
                let n = s.min(rest.len());
                h.write_all(&rest[..n]).unwrap();
                rest = &rest[n..];
            }
        }
        assert_eq!(h.finalize_hex(), want, "chunking {sizes:?}");
    }
}

#[test]
fn listed_hashes_match_downloaded_content() {
    let t = new();
    t.emu
        .create_file(
            "/a.bin",
            Content::Pattern {
                seed: 9,
                len: 9_711_423,
            },
        )
        .unwrap();
    t.emu.create_file("/empty.txt", bytes("")).unwrap();
    let (entries, _) = t.list_all(json!({"path": ""}));
    for e in entries {
        let r = t.download("files/download", json!({"path": e["path_lower"]}), &[]);
        assert_eq!(r.status, 200);
        assert_eq!(content_hash(&r.body), e["content_hash"].as_str().unwrap());
        assert_eq!(r.body.len() as u64, e["size"].as_u64().unwrap());
    }
}

// ---------------------------------------------------------------------------------------------
// Account, transport, auth

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

// ---------------------------------------------------------------------------------------------
// Listing

#[test]
fn list_folder_shapes_and_order() {
    let t = new();
    let f = t
        .emu
        .create_file("/Docs/Report Q1.pdf", bytes("report"))
        .unwrap();
    t.emu.create_folder("/Docs/Sub/Deep").unwrap();
    t.emu.create_file("/top.txt", bytes("top")).unwrap();
    t.emu
        .create_non_downloadable("/Docs/Plan.paper", "markdown", b"# Plan".to_vec())
        .unwrap();
    let page = t.list(json!({"path": "", "recursive": true}));
    assert_eq!(page["has_more"], false);
    assert!(!page["cursor"].as_str().unwrap().is_empty());
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 6);
    // Parents before children.
    for (i, e) in entries.iter().enumerate() {
        let p = e["path_lower"].as_str().unwrap();
        let parent = &p[..p.rfind('/').unwrap()];
        if !parent.is_empty() {
            assert!(
                entries[..i].iter().any(|x| x["path_lower"] == parent),
                "{p} before its parent"
            );
        }
    }
    let file = entries
        .iter()
        .find(|e| e["name"] == "Report Q1.pdf")
        .unwrap();
    assert_eq!(file[".tag"], "file");
    assert_eq!(file["id"], f.id.as_str());
    assert!(file["id"].as_str().unwrap().starts_with("id:"));
    assert_eq!(file["path_lower"], "/docs/report q1.pdf");
    assert_eq!(file["path_display"], "/Docs/Report Q1.pdf");
    assert_eq!(file["size"], 6);
    assert_eq!(file["is_downloadable"], true);
    assert_eq!(file["content_hash"], content_hash(b"report"));
    let rev = file["rev"].as_str().unwrap();
    assert!(
        rev.len() >= 9
            && rev
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    for k in ["client_modified", "server_modified"] {
        let ts = file[k].as_str().unwrap();
        assert_eq!(ts.len(), 20, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T');
    }
    let folder = entries.iter().find(|e| e["name"] == "Sub").unwrap();
    assert_eq!(folder[".tag"], "folder");
    assert!(folder.get("rev").is_none() && folder.get("size").is_none());
    let paper = entries.iter().find(|e| e["name"] == "Plan.paper").unwrap();
    assert_eq!(paper["is_downloadable"], false);
    assert_eq!(paper["export_info"]["export_as"], "markdown");
    assert!(
        paper["export_info"]["export_options"]
            .as_array()
            .unwrap()
            .contains(&json!("markdown"))
    );
    // include_non_downloadable_files=false drops it.
    let page =
        t.list(json!({"path": "", "recursive": true, "include_non_downloadable_files": false}));
    assert!(
        page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["name"] != "Plan.paper")
    );
    // Non-recursive: direct children only.
    let names: Vec<String> = t.list(json!({"path": ""}))["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["Docs", "top.txt"]);
    let names: Vec<String> = t.list(json!({"path": "/docs"}))["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["Plan.paper", "Report Q1.pdf", "Sub"]);
    // Recursive non-root listing includes the folder itself; by id too.
    let docs_id = t
        .emu
        .truth()
        .into_iter()
        .find(|e| e.path_lower == "/docs")
        .unwrap()
        .id;
    for path in ["/Docs", docs_id.as_str()] {
        let page = t.list(json!({"path": path, "recursive": true}));
        let ps: Vec<&str> = page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path_lower"].as_str().unwrap())
            .collect();
        assert_eq!(
            ps,
            vec![
                "/docs",
                "/docs/plan.paper",
                "/docs/report q1.pdf",
                "/docs/sub",
                "/docs/sub/deep"
            ]
        );
    }
    // include_has_explicit_shared_members adds the field to files.
    let page = t.list(json!({"path": "/docs", "include_has_explicit_shared_members": true}));
    assert!(
        page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e[".tag"] == "file")
            .all(|e| e["has_explicit_shared_members"] == false)
    );
}

#[test]
fn recursive_listing_without_self_when_configured() {
    let t = with_cfg(EmulatorConfig {
        recursive_listing_includes_self: false,
        ..Default::default()
    });
    t.emu.create_file("/Docs/a.txt", bytes("a")).unwrap();
    let page = t.list(json!({"path": "/Docs", "recursive": true}));
    assert_eq!(
        paths(page["entries"].as_array().unwrap()),
        vec![("file".to_string(), "/Docs/a.txt".to_string())]
    );
}

#[test]
fn default_page_size_and_limits() {
    let t = with_cfg(EmulatorConfig {
        default_page_size: 10,
        ..Default::default()
    });
    for i in 0..25 {
        t.emu
            .create_file(&format!("/f{i:02}.txt"), bytes("x"))
            .unwrap();
    }
    let page = t.list(json!({"path": ""}));
    assert_eq!(page["entries"].as_array().unwrap().len(), 10);
    assert_eq!(page["has_more"], true);
    let page = t.list(json!({"path": "", "limit": 25}));
    assert_eq!(page["entries"].as_array().unwrap().len(), 25);
    assert_eq!(page["has_more"], false);
    let (all, _) = t.list_all(json!({"path": "", "limit": 1}));
    assert_eq!(all.len(), 25);
}

#[test]
fn snapshot_is_consistent_across_pages_with_mid_listing_changes() {
    let t = new();
    for i in 0..60 {
        t.emu
            .create_file(&format!("/d{}/f{i:02}.txt", i % 3), bytes(&format!("v{i}")))
            .unwrap();
    }
    let before: Vec<String> = t.emu.truth().into_iter().map(|e| e.path_lower).collect();
    let mut page = t.list(json!({"path": "", "recursive": true, "limit": 7}));
    let mut entries = page["entries"].as_array().unwrap().clone();
    // Mutate between pages: things not yet listed change or vanish, new things appear.
    t.emu.delete("/d2/f59.txt").unwrap();
    t.emu.create_file("/d2/zz-new.txt", bytes("new")).unwrap();
    t.emu.move_path("/d1", "/d9").unwrap();
    t.emu.modify_file("/d0/f57.txt", bytes("changed")).unwrap();
    while page["has_more"] == true {
        page = t.cont(page["cursor"].as_str().unwrap());
        entries.extend(page["entries"].as_array().unwrap().iter().cloned());
        // Keep changing while paging.
        let _ = t
            .emu
            .create_file(&format!("/d2/late-{}.txt", entries.len()), bytes("late"));
    }
    let listed: Vec<String> = entries
        .iter()
        .map(|e| e["path_lower"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        listed, before,
        "the initial listing is exactly the tree at the first call"
    );
    let f57 = entries
        .iter()
        .find(|e| e["path_lower"] == "/d0/f57.txt")
        .unwrap();
    assert_eq!(f57["content_hash"], content_hash(b"v57"));
    // The final cursor replays everything that happened since the snapshot.
    let mut replica = Replica::default();
    replica.apply(&entries);
    let (changes, _) = t.changes(page["cursor"].as_str().unwrap());
    assert!(!changes.is_empty());
    replica.apply(&changes);
    replica.assert_matches(&t.emu, true);
}

#[test]
fn evicted_snapshot_resets() {
    let t = with_cfg(EmulatorConfig {
        snapshot_capacity: 1,
        ..Default::default()
    });
    for i in 0..5 {
        t.emu.create_file(&format!("/f{i}"), bytes("x")).unwrap();
    }
    let first = t.list(json!({"path": "", "limit": 2}));
    let _second = t.list(json!({"path": "", "limit": 2}));
    t.rpc(
        "files/list_folder/continue",
        json!({"cursor": first["cursor"]}),
    )
    .assert_409(json!({".tag": "reset"}));
}

#[test]
fn journal_semantics() {
    let t = new();
    t.emu.create_file("/A/one.txt", bytes("1")).unwrap();
    t.emu.create_file("/A/B/two.txt", bytes("2")).unwrap();
    t.emu.create_file("/F.txt", bytes("f")).unwrap();
    let (initial, cursor) = t.list_all(json!({"path": "", "recursive": true}));
    let mut replica = Replica::default();
    replica.apply(&initial);
    let ids: BTreeMap<String, String> = t
        .emu
        .truth()
        .into_iter()
        .map(|e| (e.path_lower, e.id))
        .collect();

    // Modification: a file entry at the same path with a new rev and hash.
    let old_rev = initial
        .iter()
        .find(|e| e["path_lower"] == "/f.txt")
        .unwrap()["rev"]
        .clone();
    t.emu.modify_file("/F.txt", bytes("f2")).unwrap();
    let (c, cursor) = t.changes(&cursor);
    assert_eq!(paths(&c), vec![("file".into(), "/F.txt".into())]);
    assert_ne!(c[0]["rev"], old_rev);
    assert_eq!(c[0]["content_hash"], content_hash(b"f2"));
    assert_eq!(c[0]["id"], ids["/f.txt"].as_str());
    replica.apply(&c);

    // File rename: deleted old + file with the same id at the new path.
    t.emu.move_path("/F.txt", "/G.txt").unwrap();
    let (c, cursor) = t.changes(&cursor);
    assert_eq!(
        paths(&c),
        vec![
            ("deleted".into(), "/F.txt".into()),
            ("file".into(), "/G.txt".into())
        ]
    );
    assert_eq!(c[1]["id"], ids["/f.txt"].as_str());
    assert!(c[0].get("id").is_none() && c[0].get("rev").is_none());
    replica.apply(&c);

    // Folder move: deleted old + folder + descendants at their new paths, same ids.
    t.emu.move_path("/A", "/Moved/A2").unwrap();
    let (c, cursor) = t.changes(&cursor);
    assert_eq!(
        paths(&c),
        vec![
            ("folder".into(), "/Moved".into()),
            ("deleted".into(), "/A".into()),
            ("folder".into(), "/Moved/A2".into()),
            ("folder".into(), "/Moved/A2/B".into()),
            ("file".into(), "/Moved/A2/B/two.txt".into()),
            ("file".into(), "/Moved/A2/one.txt".into()),
        ]
    );
    assert_eq!(c[2]["id"], ids["/a"].as_str());
    assert_eq!(c[4]["id"], ids["/a/b/two.txt"].as_str());
    replica.apply(&c);

    // Case-only rename: not reported by default; the tree has the new name.
    t.emu
        .move_path("/Moved/A2/one.txt", "/Moved/A2/ONE.txt")
        .unwrap();
    let (c, cursor) = t.changes(&cursor);
    assert!(c.is_empty(), "{c:?}");
    assert!(
        t.emu
            .truth()
            .iter()
            .any(|e| e.name == "ONE.txt" && e.path_lower == "/moved/a2/one.txt")
    );
    replica.assert_matches(&t.emu, false);

    // Folder delete with descendants: ONE deleted entry, whatever include_deleted.
    t.emu.delete("/Moved").unwrap();
    let (c, cursor) = t.changes(&cursor);
    assert_eq!(paths(&c), vec![("deleted".into(), "/Moved".into())]);
    replica.apply(&c);

    // File replaces folder, folder replaces file.
    t.emu.create_file("/X/inner.txt", bytes("i")).unwrap();
    t.emu.create_file("/Y", bytes("y")).unwrap();
    let (c, cursor) = t.changes(&cursor);
    replica.apply(&c);
    t.emu.delete("/X").unwrap();
    t.emu.create_file("/X", bytes("now a file")).unwrap();
    t.emu.delete("/Y").unwrap();
    t.emu.create_folder("/Y").unwrap();
    let (c, _) = t.changes(&cursor);
    assert_eq!(
        paths(&c),
        vec![
            ("deleted".into(), "/X".into()),
            ("file".into(), "/X".into()),
            ("deleted".into(), "/Y".into()),
            ("folder".into(), "/Y".into())
        ]
    );
    replica.apply(&c);
    replica.assert_matches(&t.emu, true);
}

#[test]
fn case_only_renames_can_be_emitted() {
    let t = with_cfg(EmulatorConfig {
        emit_case_only_renames: true,
        ..Default::default()
    });
    let info = t.emu.create_file("/Dir/file.txt", bytes("x")).unwrap();
    let (_, cursor) = t.list_all(json!({"path": "", "recursive": true}));
    let moved = t.emu.move_path("/Dir/file.txt", "/Dir/File.TXT").unwrap();
    assert_eq!(moved.id, info.id);
    assert_eq!(moved.path_lower, "/dir/file.txt");
    let (c, _) = t.changes(&cursor);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["name"], "File.TXT");
    assert_eq!(c[0]["path_lower"], "/dir/file.txt");
    assert_eq!(c[0]["id"], info.id.as_str());
}

#[test]
fn case_only_folder_rename_can_be_reported_as_the_folder_alone() {
    // Without emit_case_only_renames: the option alone makes the rename reported.
    for emit_all in [false, true] {
        let t = with_cfg(EmulatorConfig {
            case_only_rename_folder_entry_only: true,
            emit_case_only_renames: emit_all,
            ..Default::default()
        });
        let folder = t.emu.create_folder("/Photos").unwrap();
        let deep = t
            .emu
            .create_file("/Photos/2024/Trip/a.jpg", bytes("a"))
            .unwrap();
        t.emu.create_file("/Photos/b.txt", bytes("b")).unwrap();
        let (_, cursor) = t.list_all(json!({"path": "", "recursive": true}));
        let moved = t.emu.move_path("/Photos", "/PHOTOS").unwrap();
        assert_eq!(moved.id, folder.id);
        let (c, cursor) = t.changes(&cursor);
        assert_eq!(c.len(), 1, "only the folder's entry: {c:?}");
        assert_eq!(c[0][".tag"], "folder");
        assert_eq!(c[0]["name"], "PHOTOS");
        assert_eq!(c[0]["path_display"], "/PHOTOS");
        assert_eq!(c[0]["path_lower"], "/photos");
        assert_eq!(c[0]["id"], folder.id.as_str());
        // The account itself changed in full: descendants show the new casing.
        let md = t
            .rpc(
                "files/get_metadata",
                json!({"path": "/photos/2024/trip/a.jpg"}),
            )
            .json();
        assert_eq!(md["path_display"], "/PHOTOS/2024/Trip/a.jpg");
        assert_eq!(md["id"], deep.id.as_str());
        let md = t.rpc("files/get_metadata", json!({"path": deep.id})).json();
        assert_eq!(md["path_display"], "/PHOTOS/2024/Trip/a.jpg");
        let md = t
            .rpc("files/get_metadata", json!({"path": "/photos/2024"}))
            .json();
        assert_eq!(md["path_display"], "/PHOTOS/2024");
        assert!(
            t.emu
                .truth()
                .iter()
                .filter(|e| e.path_lower.starts_with("/photos"))
                .all(|e| e.path_display.starts_with("/PHOTOS")),
            "truth has the new casing everywhere"
        );
        // A case-only rename of a FILE follows emit_case_only_renames only.
        t.emu.move_path("/PHOTOS/b.txt", "/PHOTOS/B.TXT").unwrap();
        let (c, _) = t.changes(&cursor);
        if emit_all {
            assert_eq!(paths(&c), vec![("file".into(), "/PHOTOS/B.TXT".into())]);
        } else {
            assert!(c.is_empty(), "{c:?}");
        }
    }
}

#[test]
fn moves_can_give_files_a_new_rev() {
    let md = |t: &T, path: &str| {
        let r = t.rpc("files/get_metadata", json!({"path": path}));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    // Default: a move keeps the rev.
    let t = new();
    let info = t.emu.create_file("/a/f.txt", bytes("hello")).unwrap();
    t.emu.move_path("/a/f.txt", "/b/g.txt").unwrap();
    assert_eq!(
        md(&t, "/b/g.txt")["rev"],
        info.rev.clone().unwrap().as_str()
    );

    let t = with_cfg(EmulatorConfig {
        new_rev_on_move: true,
        ..Default::default()
    });
    let info = t.emu.create_file("/a/f.txt", bytes("hello")).unwrap();
    let inner = t.emu.create_file("/d/sub/x.txt", bytes("inner")).unwrap();
    let before = md(&t, "/a/f.txt");
    let old_rev = before["rev"].as_str().unwrap().to_string();
    assert_eq!(Some(old_rev.clone()), info.rev);
    let (_, cursor) = t.list_all(json!({"path": "", "recursive": true}));

    let moved = t.emu.move_path("/a/f.txt", "/b/g.txt").unwrap();
    let after = md(&t, "/b/g.txt");
    let new_rev = after["rev"].as_str().unwrap().to_string();
    assert_ne!(new_rev, old_rev, "a moved file has a new rev");
    assert_eq!(moved.rev.as_deref(), Some(new_rev.as_str()));
    assert_eq!(after["id"], info.id.as_str());
    assert_eq!(after["content_hash"], before["content_hash"]);
    assert_eq!(after["content_hash"], content_hash(b"hello"));
    assert_eq!(after["size"], before["size"]);
    assert_eq!(after["server_modified"], before["server_modified"]);
    // The new rev serves the content, by `rev` argument and by `rev:` path.
    let r = t.download(
        "files/download",
        json!({"path": "/b/g.txt", "rev": new_rev}),
        &[],
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"hello"[..]),
        "{}",
        r.text()
    );
    let result: Value = serde_json::from_str(&r.header("dropbox-api-result").unwrap()).unwrap();
    assert_eq!(result["rev"], new_rev.as_str());
    assert_eq!(result["path_display"], "/b/g.txt");
    let r = t.download(
        "files/download",
        json!({"path": format!("rev:{new_rev}")}),
        &[],
    );
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    let r = t.download("files/download", json!({"path": "/b/g.txt"}), &[]);
    assert_eq!(r.body, b"hello");
    assert_eq!(r.header("etag"), Some(format!("W/\"{new_rev}\"")));
    let by_rev = md(&t, &format!("rev:{new_rev}"));
    assert_eq!(by_rev["path_display"], "/b/g.txt");
    // The old rev still serves the same bytes, like any earlier version.
    let r = t.download(
        "files/download",
        json!({"path": "/b/g.txt", "rev": old_rev}),
        &[],
    );
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    let r = t.rpc(
        "files/get_temporary_link",
        json!({"path": format!("rev:{new_rev}")}),
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // Files under a moved folder get new revs too; the journal carries them.
    t.emu.move_path("/d", "/e").unwrap();
    let x = md(&t, "/e/sub/x.txt");
    assert_ne!(x["rev"], inner.rev.clone().unwrap().as_str());
    assert_eq!(x["content_hash"], content_hash(b"inner"));
    let (c, _) = t.changes(&cursor);
    let listed = |path: &str| {
        c.iter()
            .rev()
            .find(|e| e["path_lower"] == path && e[".tag"] == "file")
            .unwrap_or_else(|| panic!("{path} not in {c:?}"))
            .clone()
    };
    assert_eq!(listed("/b/g.txt")["rev"], new_rev.as_str());
    assert_eq!(listed("/e/sub/x.txt")["rev"], x["rev"]);
    let r = t.download(
        "files/download",
        json!({"path": "/e/sub/x.txt", "rev": x["rev"]}),
        &[],
    );
    assert_eq!((r.status, r.body.as_slice()), (200, &b"inner"[..]));

    // A case-only rename of a file that the feed does not report (emit_case_only_renames is
    // off) keeps its rev: no client could learn a new one.
    t.emu.move_path("/b/g.txt", "/b/G.txt").unwrap();
    let renamed = md(&t, "/b/g.txt");
    assert_eq!(renamed["path_display"], "/b/G.txt");
    assert_eq!(renamed["rev"], new_rev.as_str());
    assert_eq!(renamed["content_hash"], content_hash(b"hello"));
    // A content change still gets a new rev and a new hash.
    let modified = t.emu.modify_file("/b/g.txt", bytes("changed")).unwrap();
    assert_ne!(modified.rev.as_deref(), renamed["rev"].as_str());
    assert_eq!(modified.content_hash, Some(content_hash(b"changed")));
}

/// Every page of a listing: each entry's path_lower with the index of its page.
fn pages(t: &T, arg: Value) -> (Vec<(String, String, usize)>, String) {
    let mut page = t.list(arg);
    let mut out = Vec::new();
    let mut n = 0;
    loop {
        for e in page["entries"].as_array().unwrap() {
            out.push((
                e[".tag"].as_str().unwrap().to_string(),
                e["path_lower"].as_str().unwrap().to_string(),
                n,
            ));
        }
        if page["has_more"] != true {
            return (out, page["cursor"].as_str().unwrap().to_string());
        }
        page = t.cont(page["cursor"].as_str().unwrap());
        n += 1;
    }
}

/// Every key once, each folder after all of its descendants, and at least one child on an
/// earlier page than its parent.
fn assert_post_order(listed: &[(String, String, usize)], expected: &[String]) {
    let keys: Vec<&str> = listed.iter().map(|e| e.1.as_str()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), keys.len(), "an entry came twice: {keys:?}");
    let mut want: Vec<&str> = expected.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(sorted, want, "entries lost or invented");
    let mut across_pages = false;
    for (i, (tag, key, page)) in listed.iter().enumerate() {
        let sub = format!("{key}/");
        for (_, later, _) in &listed[i + 1..] {
            assert!(!later.starts_with(&sub), "{key} came before {later}");
        }
        if tag == "folder" {
            across_pages |= listed[..i]
                .iter()
                .any(|(_, k, p)| k.starts_with(&sub) && p < page);
        }
    }
    assert!(across_pages, "no child on an earlier page than its parent");
}

#[test]
fn children_before_parents_across_pages() {
    let t = with_cfg(EmulatorConfig {
        children_before_parents: true,
        ..Default::default()
    });
    for p in [
        "/A/B/C/deep.txt",
        "/A/B/b.txt",
        "/A/a.txt",
        "/A b.txt",
        "/A-x/y.txt",
        "/Ab/c/d.txt",
        "/Z/z.txt",
        "/root.txt",
    ] {
        t.emu.create_file(p, bytes(p)).unwrap();
    }
    t.emu.create_folder("/A/B/C/Empty").unwrap();
    t.emu.create_folder("/A/E").unwrap();
    let truth: Vec<String> = t.emu.truth().into_iter().map(|e| e.path_lower).collect();
    let (listed, cursor) = pages(&t, json!({"path": "", "recursive": true, "limit": 2}));
    assert!(listed.iter().all(|e| e.2 < listed.len().div_ceil(2)));
    assert!(listed.chunk_by(|a, b| a.2 == b.2).all(|p| p.len() <= 2));
    assert_post_order(&listed, &truth);
    // Every page size gives the same complete order.
    for limit in [1, 3, 5, 2000] {
        let (again, _) = pages(&t, json!({"path": "", "recursive": true, "limit": limit}));
        let keys =
            |l: &[(String, String, usize)]| l.iter().map(|e| e.1.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&again), keys(&listed), "limit {limit}");
    }
    // A non-root listing: the listed folder itself comes last.
    let under_a: Vec<String> = truth
        .iter()
        .filter(|k| *k == "/a" || k.starts_with("/a/"))
        .cloned()
        .collect();
    let (listed_a, _) = pages(&t, json!({"path": "/A", "recursive": true, "limit": 2}));
    assert_post_order(&listed_a, &under_a);
    assert_eq!(listed_a.last().unwrap().1, "/a");
    // Deleted entries are merged, in the same order, and nothing is lost.
    t.emu.delete("/Z").unwrap();
    t.emu.delete("/A/B/C/deep.txt").unwrap();
    let truth: Vec<String> = t.emu.truth().into_iter().map(|e| e.path_lower).collect();
    let (with_deleted, _) = pages(
        &t,
        json!({"path": "", "recursive": true, "limit": 2, "include_deleted": true}),
    );
    let live: Vec<(String, String, usize)> = with_deleted
        .iter()
        .filter(|e| e.0 != "deleted")
        .cloned()
        .collect();
    assert_post_order(&live, &truth);
    let deleted: Vec<&str> = with_deleted
        .iter()
        .filter(|e| e.0 == "deleted")
        .map(|e| e.1.as_str())
        .collect();
    assert_eq!(deleted, vec!["/a/b/c/deep.txt", "/z/z.txt", "/z"]);
    // The cursor after the enumeration replays later changes as usual.
    t.emu.create_file("/new.txt", bytes("n")).unwrap();
    let (c, _) = t.changes(&cursor);
    assert_eq!(
        paths(&c),
        vec![
            ("deleted".into(), "/Z".into()),
            ("deleted".into(), "/A/B/C/deep.txt".into()),
            ("file".into(), "/new.txt".into())
        ]
    );
    // Non-recursive listings are unaffected (nothing to reorder).
    let (flat, _) = pages(&t, json!({"path": "/A", "limit": 2}));
    let flat: Vec<&str> = flat.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(flat, vec!["/a/a.txt", "/a/b", "/a/e"]);
}

#[test]
fn include_deleted_and_scoped_cursors() {
    let t = new();
    t.emu.create_file("/keep/a.txt", bytes("a")).unwrap();
    t.emu.create_file("/gone/b.txt", bytes("b")).unwrap();
    t.emu.create_file("/other/c.txt", bytes("c")).unwrap();
    t.emu.delete("/gone").unwrap();
    // Historical tombstones only with include_deleted.
    let (without, _) = t.list_all(json!({"path": "", "recursive": true}));
    assert!(without.iter().all(|e| e[".tag"] != "deleted"));
    let (with, _) = t.list_all(json!({"path": "", "recursive": true, "include_deleted": true}));
    let deleted: Vec<&str> = with
        .iter()
        .filter(|e| e[".tag"] == "deleted")
        .map(|e| e["path_lower"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, vec!["/gone", "/gone/b.txt"]);
    // A cursor on /keep sees only its subtree; non-recursive only direct children.
    let (_, keep_cursor) = t.list_all(json!({"path": "/keep", "recursive": true}));
    let (_, flat_cursor) = t.list_all(json!({"path": ""}));
    t.emu.create_file("/keep/sub/d.txt", bytes("d")).unwrap();
    t.emu.create_file("/other/e.txt", bytes("e")).unwrap();
    t.emu.create_file("/root.txt", bytes("r")).unwrap();
    let (c, _) = t.changes(&keep_cursor);
    assert_eq!(
        paths(&c),
        vec![
            ("folder".into(), "/keep/sub".into()),
            ("file".into(), "/keep/sub/d.txt".into())
        ]
    );
    let (c, _) = t.changes(&flat_cursor);
    assert_eq!(paths(&c), vec![("file".into(), "/root.txt".into())]);
    // The cursor's folder deleted: 409 path/not_found.
    t.emu.delete("/keep").unwrap();
    t.rpc("files/list_folder/continue", json!({"cursor": keep_cursor}))
        .assert_409(json!({".tag": "path", "path": {".tag": "not_found"}}));
}

#[test]
fn get_latest_cursor_sees_only_later_changes() {
    let t = new();
    t.emu.create_file("/old.txt", bytes("o")).unwrap();
    let r = t.rpc(
        "files/list_folder/get_latest_cursor",
        json!({"path": "", "recursive": true}),
    );
    assert_eq!(r.status, 200);
    let cursor = r.json()["cursor"].as_str().unwrap().to_string();
    let (c, _) = t.changes(&cursor);
    assert!(c.is_empty());
    t.emu.create_file("/new.txt", bytes("n")).unwrap();
    let (c, _) = t.changes(&cursor);
    assert_eq!(paths(&c), vec![("file".into(), "/new.txt".into())]);
    t.rpc("files/list_folder/get_latest_cursor", json!({"path": "/"})).assert_400(
        "Error in call to API function \"files/list_folder/get_latest_cursor\": request body: path: Specify the root folder as an empty string rather than as \"/\".",
    );
}

#[test]
fn invalidated_cursors_reset() {
    let t = new();
    t.emu.create_file("/a", bytes("a")).unwrap();
    let (_, cursor) = t.list_all(json!({"path": ""}));
    t.emu.invalidate_cursors();
    t.rpc("files/list_folder/continue", json!({"cursor": cursor}))
        .assert_409(json!({".tag": "reset"}));
    let r = t.post_raw(
        "/2/files/list_folder/longpoll",
        &[("Content-Type", "application/json")],
        Some(&json!({"cursor": cursor}).to_string()),
    );
    r.assert_409(json!({".tag": "reset"}));
    // A fresh listing works again.
    let (_, fresh) = t.list_all(json!({"path": ""}));
    assert_eq!(
        t.rpc("files/list_folder/continue", json!({"cursor": fresh}))
            .status,
        200
    );
}

// ---------------------------------------------------------------------------------------------
// Longpoll

fn longpoll(t: &T, cursor: &str, timeout: u64) -> Resp {
    t.post_raw(
        "/2/files/list_folder/longpoll",
        &[("Content-Type", "application/json")],
        Some(&json!({"cursor": cursor, "timeout": timeout}).to_string()),
    )
}

#[test]
fn longpoll_times_out_wakes_and_refuses_auth() {
    let t = with_cfg(EmulatorConfig {
        longpoll_max_wait: Some(Duration::from_millis(800)),
        longpoll_backoff: Some(7),
        ..Default::default()
    });
    t.emu.create_file("/dir/a", bytes("a")).unwrap();
    let (_, cursor) = t.list_all(json!({"path": "/dir", "recursive": true}));
    // Timeout without change.
    let start = Instant::now();
    let r = longpoll(&t, &cursor, 30);
    assert_eq!(r.status, 200);
    assert_eq!(r.ct().as_deref(), Some("application/json"));
    assert_eq!(r.json(), json!({"changes": false, "backoff": 7}));
    assert!(start.elapsed() >= Duration::from_millis(700));
    // A change outside the cursor's folder does not wake it.
    t.emu.create_file("/elsewhere", bytes("e")).unwrap();
    assert_eq!(longpoll(&t, &cursor, 30).json()["changes"], false);
    // Authorization header refused.
    let r = t.post_raw(
        "/2/files/list_folder/longpoll",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Bearer {}", t.token)),
        ],
        Some(&json!({"cursor": cursor}).to_string()),
    );
    r.assert_400("Error in call to API function \"files/list_folder/longpoll\": Your request includes an Authorization header, but this function does not use it.");
    longpoll(&t, &cursor, 10)
        .assert_400("Error in call to API function \"files/list_folder/longpoll\": request body: timeout: 10 is not within range [30, 480]");
    // A change that already happened answers at once; the cursor is not advanced by longpoll.
    t.emu.create_file("/dir/b", bytes("b")).unwrap();
    assert_eq!(longpoll(&t, &cursor, 30).json()["changes"], true);
    assert_eq!(longpoll(&t, &cursor, 30).json()["changes"], true);
}

#[test]
fn longpoll_wakes_up_on_change() {
    let t = with_cfg(EmulatorConfig {
        longpoll_max_wait: Some(Duration::from_secs(20)),
        ..Default::default()
    });
    let (_, cursor) = t.list_all(json!({"path": "", "recursive": true}));
    let emu = t.emu.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        emu.create_file("/late.txt", Content::Bytes(b"late".to_vec()))
            .unwrap();
    });
    let start = Instant::now();
    let r = longpoll(&t, &cursor, 30);
    writer.join().unwrap();
    assert_eq!(r.json()["changes"], true);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let (c, _) = t.changes(&cursor);
    assert_eq!(paths(&c), vec![("file".into(), "/late.txt".into())]);
}

// ---------------------------------------------------------------------------------------------
// Metadata and content

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

// ---------------------------------------------------------------------------------------------
// Sharing

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

// ---------------------------------------------------------------------------------------------
// OAuth

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

fn token_call(t: &T, form: &[(&str, &str)], basic: Option<&str>) -> Resp {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter())
        .finish();
    let mut req = t
        .agent
        .post(&t.url("/oauth2/token"))
        .header("Content-Type", "application/x-www-form-urlencoded");
    if let Some(b) = basic {
        req = req.header("Authorization", b);
    }
    finish(req.send(body))
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

// ---------------------------------------------------------------------------------------------
// Faults, latency, counters

fn list_root(t: &T) -> Result<Resp, ureq::Error> {
    let r = t
        .agent
        .post(&t.url("/2/files/list_folder"))
        .header("Authorization", &format!("Bearer {}", t.token))
        .header("Content-Type", "application/json")
        .send(r#"{"path":""}"#)?;
    let mut r = r;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.body_mut().read_to_vec()?;
    Ok(Resp {
        status,
        headers,
        body,
    })
}

#[test]
fn fault_rate_limits_and_statuses() {
    let t = new();
    t.emu.create_file("/a.txt", bytes("a")).unwrap();
    let route = "files/list_folder";
    t.emu.inject(Fault::once(
        route,
        FaultKind::RateLimitJson {
            retry_after: 3,
            reason: "too_many_requests".into(),
            include_field: true,
        },
    ));
    let r = list_root(&t).unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.ct().as_deref(), Some("application/json"));
    assert_eq!(r.header("retry-after").as_deref(), Some("3"));
    assert_eq!(
        r.json()["error"],
        json!({"reason": {".tag": "too_many_requests"}, "retry_after": 3})
    );
    // count = 1: the next call succeeds.
    assert_eq!(list_root(&t).unwrap().status, 200);
    t.emu.inject(Fault::once(
        route,
        FaultKind::RateLimitJson {
            retry_after: 1,
            reason: "too_many_write_operations".into(),
            include_field: false,
        },
    ));
    let r = list_root(&t).unwrap();
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert_eq!(
        r.json()["error"],
        json!({"reason": {".tag": "too_many_write_operations"}})
    );
    t.emu.inject(Fault::once(
        route,
        FaultKind::RateLimitText { retry_after: 2 },
    ));
    let r = list_root(&t).unwrap();
    assert_eq!(
        (r.status, r.header("retry-after").as_deref()),
        (429, Some("2"))
    );
    assert!(r.ct().unwrap().starts_with("text/plain"));
    for code in [500, 502, 503, 504] {
        t.emu.inject(Fault::once(route, FaultKind::Status(code)));
        let r = list_root(&t).unwrap();
        assert_eq!(r.status, code);
        assert!(!r.body.is_empty() && r.body.len() < 100);
    }
    t.emu.inject(Fault::once(route, FaultKind::ExpiredToken));
    list_root(&t).unwrap().assert_401("expired_access_token");
    t.emu.inject(Fault::once(route, FaultKind::InvalidToken));
    list_root(&t).unwrap().assert_401("invalid_access_token");
    let cursor = t.list(json!({"path": ""}))["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    t.emu
        .inject(Fault::once("files/list_folder/continue", FaultKind::Reset));
    t.rpc("files/list_folder/continue", json!({"cursor": cursor}))
        .assert_409(json!({".tag": "reset"}));
    assert_eq!(
        t.rpc("files/list_folder/continue", json!({"cursor": cursor}))
            .status,
        200
    );
    // skip / count, and route None matches anything.
    t.emu.inject(Fault {
        route: Some(route.into()),
        skip: 1,
        count: 2,
        kind: FaultKind::Status(500),
    });
    let statuses: Vec<u16> = (0..4).map(|_| list_root(&t).unwrap().status).collect();
    assert_eq!(statuses, vec![200, 500, 500, 200]);
    t.emu.inject(Fault {
        route: None,
        skip: 0,
        count: 1,
        kind: FaultKind::Status(503),
    });
    assert_eq!(t.rpc("users/get_current_account", Value::Null).status, 503);
    assert_eq!(t.rpc("users/get_current_account", Value::Null).status, 200);
    t.emu.inject(Fault {
        route: None,
        skip: 0,
        count: 5,
        kind: FaultKind::Status(503),
    });
    t.emu.clear_faults();
    assert_eq!(list_root(&t).unwrap().status, 200);
}

#[test]
fn fault_json_corruptions() {
    let t = new();
    t.emu.create_file("/a.txt", bytes("a")).unwrap();
    let route = "files/list_folder";
    let real = list_root(&t).unwrap();
    t.emu.inject(Fault::once(route, FaultKind::TruncatedJson));
    let r = list_root(&t).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.len() < real.body.len());
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    t.emu.inject(Fault::once(route, FaultKind::MalformedJson));
    let r = list_root(&t).unwrap();
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    t.emu.inject(Fault::once(route, FaultKind::WrongTypeJson));
    let v = list_root(&t).unwrap().json();
    assert!(
        !v["entries"].is_array() && !v["cursor"].is_string() && !v["has_more"].is_boolean(),
        "{v}"
    );
    t.emu
        .inject(Fault::once(route, FaultKind::UnknownFieldsAndTags));
    let v = list_root(&t).unwrap().json();
    assert!(v.get("emu_unknown_field").is_some());
    let entries = v["entries"].as_array().unwrap();
    assert!(entries.iter().any(|e| e[".tag"] == "emu_future_kind"));
    assert!(
        entries
            .iter()
            .filter(|e| e[".tag"] == "file")
            .all(|e| e.get("emu_unknown_field").is_some())
    );
    t.emu
        .inject(Fault::once(route, FaultKind::HugeBody(3_000_000)));
    let r = list_root(&t).unwrap();
    assert!(r.body.len() >= 2_900_000);
    assert!(r.json()["entries"].is_array(), "still valid JSON");
    // Downloads: the Dropbox-API-Result header is the JSON that gets corrupted.
    t.emu
        .inject(Fault::once("files/download", FaultKind::TruncatedJson));
    let r = t.download("files/download", json!({"path": "/a.txt"}), &[]);
    assert!(serde_json::from_str::<Value>(&r.header("dropbox-api-result").unwrap()).is_err());
    assert_eq!(r.body, b"a");
}

#[test]
fn fault_transport_failures() {
    let t = new();
    t.emu
        .create_file(
            "/big.bin",
            Content::Pattern {
                seed: 5,
                len: 1 << 20,
            },
        )
        .unwrap();
    let route = "files/list_folder";
    t.emu.inject(Fault::once(route, FaultKind::DropConnection));
    assert!(
        list_root(&t).is_err(),
        "connection dropped before any response"
    );
    assert_eq!(list_root(&t).unwrap().status, 200);
    // Half the body, then close: the client sees a premature end.
    t.emu
        .inject(Fault::once("files/download", FaultKind::DropMidBody));
    let r = t
        .agent
        .post(&t.url("/2/files/download"))
        .header("Authorization", &format!("Bearer {}", t.token))
        .header("Dropbox-API-Arg", r#"{"path":"/big.bin"}"#)
        .send_empty();
    let failed = match r {
        Err(_) => true,
        Ok(mut resp) => resp
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .is_err(),
    };
    assert!(failed);
    // One flipped byte.
    let good = t
        .download("files/download", json!({"path": "/big.bin"}), &[])
        .body;
    t.emu
        .inject(Fault::once("files/download", FaultKind::CorruptByte));
    let bad = t
        .download("files/download", json!({"path": "/big.bin"}), &[])
        .body;
    assert_eq!(good.len(), bad.len());
    assert_eq!(good.iter().zip(&bad).filter(|(a, b)| a != b).count(), 1);
    // Slow.
    t.emu.inject(Fault::once(
        route,
        FaultKind::Slow(Duration::from_millis(400)),
    ));
    let start = Instant::now();
    assert_eq!(list_root(&t).unwrap().status, 200);
    assert!(start.elapsed() >= Duration::from_millis(400));
    // Faults on the token endpoint too.
    t.emu
        .inject(Fault::once("oauth2/token", FaultKind::Status(503)));
    assert_eq!(
        token_call(&t, &[("grant_type", "refresh_token")], None).status,
        503
    );
}

#[test]
fn latency_and_request_counts() {
    let t = new();
    t.emu.reset_counts();
    list_root(&t).unwrap();
    list_root(&t).unwrap();
    let cursor = t.list(json!({"path": ""}))["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    t.cont(&cursor);
    let counts = t.emu.request_counts();
    assert_eq!(counts.get("files/list_folder"), Some(&3));
    assert_eq!(counts.get("files/list_folder/continue"), Some(&1));
    t.emu.reset_counts();
    assert!(t.emu.request_counts().is_empty());
    t.emu.set_latency(Duration::from_millis(150));
    let start = Instant::now();
    list_root(&t).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(150));
    t.emu.set_latency(Duration::ZERO);
}

// ---------------------------------------------------------------------------------------------
// Control interface, populate, lifecycle

#[test]
fn control_interface_drives_the_account() {
    let t = new();
    let post = |op: &str, body: Value| {
        t.post_raw(
            &format!("/__emulator/{op}"),
            &[("Content-Type", "application/json")],
            Some(&body.to_string()),
        )
    };
    let r = post(
        "create_file",
        json!({"path": "/ctl/a.txt", "text": "hello"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["content_hash"], content_hash(b"hello"));
    assert_eq!(
        post("create_file", json!({"path": "/ctl/a.txt", "text": "x"})).status,
        409
    );
    assert_eq!(
        post("move", json!({"from": "/ctl/a.txt", "to": "/ctl/b.txt"})).status,
        200
    );
    assert_eq!(post("share", json!({"path": "/ctl/b.txt"})).status, 200);
    assert_eq!(post("delete", json!({"path": "/nope"})).status, 404);
    let truth = t.get(&t.url("/__emulator/truth"), &[]).json();
    assert_eq!(truth.as_array().unwrap().len(), 2);
    assert!(truth[1]["shared_url"].is_string());
    let r = post(
        "fault",
        json!({"route": "files/list_folder", "kind": {"type": "status", "value": 502}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(list_root(&t).unwrap().status, 502);
    let r = post(
        "fault",
        json!({"route": "files/list_folder", "kind": {"type": "rate_limit_json", "value": {"retry_after": 4, "reason": "too_many_requests", "include_field": false}}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        list_root(&t).unwrap().header("retry-after").as_deref(),
        Some("4")
    );
    assert_eq!(
        post("populate", json!({"files": 50, "seed": 3})).status,
        200
    );
    assert!(t.emu.truth().len() > 50);
    let counters = t.get(&t.url("/__emulator/counters"), &[]).json();
    assert!(counters["files/list_folder"].as_u64().unwrap() >= 2);
    assert!(
        counters.get("__emulator/truth").is_none(),
        "control calls are not counted"
    );
    let tok = t.get(&t.url("/__emulator/token"), &[]).json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        t.rpc_with("files/list_folder", &tok, json!({"path": ""}))
            .status,
        200
    );
    // Stop through the control interface: run_until_stopped returns.
    let emu = t.emu.clone();
    let waiter = std::thread::spawn(move || emu.run_until_stopped());
    assert_eq!(post("stop", Value::Null).status, 200);
    waiter.join().unwrap();
    assert!(t.emu.is_stopped());
}

#[test]
fn populate_is_seeded_and_realistic() {
    let a = with_cfg(EmulatorConfig {
        files: 3000,
        seed: 11,
        ..Default::default()
    });
    let b = with_cfg(EmulatorConfig {
        files: 3000,
        seed: 11,
        ..Default::default()
    });
    let ta = a.emu.truth();
    let tb = b.emu.truth();
    let key = |t: &dropbox_emulator::TruthEntry| {
        (
            t.path_display.clone(),
            t.id.clone(),
            t.content_hash.clone(),
            t.size,
        )
    };
    assert_eq!(
        ta.iter().map(key).collect::<Vec<_>>(),
        tb.iter().map(key).collect::<Vec<_>>()
    );
    let files: Vec<_> = ta.iter().filter(|e| e.kind == Kind::File).collect();
    assert_eq!(files.len(), 3000);
    assert!(
        ta.iter().any(|e| e.name.chars().any(|c| c as u32 > 0xffff)),
        "astral-plane emoji"
    );
    assert!(
        ta.iter().any(|e| e
            .name
            .chars()
            .any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))),
        "CJK"
    );
    assert!(
        ta.iter()
            .any(|e| e.name.contains('é') || e.name.contains('ü') || e.name.contains('ñ'))
    );
    assert!(ta.iter().any(|e| e.name.contains(' ')));
    assert!(
        ta.iter()
            .map(|e| e.path_lower.matches('/').count())
            .max()
            .unwrap()
            >= 8,
        "deep nesting"
    );
    assert!(ta.iter().any(|e| !e.is_downloadable));
    assert!(ta.iter().filter(|e| e.shared_url.is_some()).count() >= 3);
    // Paths are unique case-insensitively and sorted by path_lower.
    assert!(ta.windows(2).all(|w| w[0].path_lower < w[1].path_lower));
    // What the API lists is the truth, with correct hashes.
    let (entries, _) = a.list_all(json!({"path": "", "recursive": true, "limit": 2000}));
    assert_eq!(entries.len(), ta.len());
    for (e, t) in entries.iter().zip(&ta) {
        assert_eq!(e["path_lower"], t.path_lower.as_str());
        assert_eq!(e["id"], t.id.as_str());
        if t.kind == Kind::File && t.is_downloadable {
            assert_eq!(e["content_hash"].as_str(), t.content_hash.as_deref());
        }
    }
    for t in files.iter().filter(|e| e.is_downloadable).take(20) {
        let r = a.download("files/download", json!({"path": t.id}), &[]);
        assert_eq!(content_hash(&r.body), t.content_hash.clone().unwrap());
    }
}

#[test]
fn emulator_api_errors_and_drop_stops_server() {
    let t = new();
    assert!(matches!(
        t.emu.create_file("relative", bytes("x")),
        Err(dropbox_emulator::EmulatorError::InvalidPath(_))
    ));
    assert!(matches!(
        t.emu.create_file("/a/", bytes("x")),
        Err(dropbox_emulator::EmulatorError::InvalidPath(_))
    ));
    t.emu.create_file("/f", bytes("x")).unwrap();
    assert!(matches!(
        t.emu.create_file("/F", bytes("x")),
        Err(dropbox_emulator::EmulatorError::AlreadyExists(_))
    ));
    assert!(matches!(
        t.emu.create_file("/f/child", bytes("x")),
        Err(dropbox_emulator::EmulatorError::NotAFolder(_))
    ));
    assert!(matches!(
        t.emu.modify_file("/nope", bytes("x")),
        Err(dropbox_emulator::EmulatorError::NotFound(_))
    ));
    t.emu.create_folder("/d").unwrap();
    assert!(matches!(
        t.emu.move_path("/d", "/d/inner"),
        Err(dropbox_emulator::EmulatorError::InvalidPath(_))
    ));
    assert!(matches!(
        t.emu.move_path("/d", "/f"),
        Err(dropbox_emulator::EmulatorError::AlreadyExists(_))
    ));
    // Parents keep their existing case.
    let e = t.emu.create_file("/D/x.txt", bytes("x")).unwrap();
    assert_eq!(e.path_display, "/d/x.txt");
    let addr = t.emu.local_addr();
    drop(t);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
        "server stopped on drop"
    );
}

#[test]
fn odd_requests_never_crash_a_handler() {
    let t = new();
    t.emu.create_file("/a/b.txt", bytes("b")).unwrap();
    let cursor = t.list(json!({"path": ""}))["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let odd_values = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1.5),
        json!(18446744073709551615u64),
        json!("id:"),
        json!("id:!!!/x"),
        json!("rev:zzzzzzzzz"),
        json!("rev:ffffffffffffffff"),
        json!("ns:1/a"),
        json!("/a/b.txt/"),
        json!("//"),
        json!("/\u{0}"),
        json!("/😀/é"),
        json!([1, 2]),
        json!({"x": 1}),
        json!("AAE"),
        json!("AAEeyJ4Ijp0cnVlfQ"),
        json!(cursor.clone() + "x"),
    ];
    let routes = [
        (
            "files/list_folder",
            ["path", "limit", "recursive", "cursor"],
        ),
        (
            "files/list_folder/continue",
            ["cursor", "cursor", "cursor", "cursor"],
        ),
        (
            "files/list_folder/get_latest_cursor",
            ["path", "limit", "include_deleted", "shared_link"],
        ),
        (
            "files/get_metadata",
            ["path", "include_deleted", "include_property_groups", "path"],
        ),
        ("files/get_temporary_link", ["path", "path", "path", "path"]),
        (
            "sharing/list_shared_links",
            ["path", "cursor", "direct_only", "path"],
        ),
        (
            "sharing/create_shared_link_with_settings",
            ["path", "settings", "path", "path"],
        ),
    ];
    for (route, fields) in routes {
        for v in &odd_values {
            for f in fields {
                for body in [json!({f: v}), v.clone()] {
                    let r = t.rpc(route, body.clone());
                    assert!(
                        matches!(r.status, 200 | 400 | 409),
                        "{route} {body}: {} {}",
                        r.status,
                        r.text()
                    );
                }
            }
            let r = t.download(
                "files/download",
                json!({"path": v}),
                &[("Range", "bytes=5-2")],
            );
            assert!(
                matches!(r.status, 200 | 400 | 409),
                "download {v}: {} {}",
                r.status,
                r.text()
            );
        }
    }
    let lp = t.post_raw(
        "/2/files/list_folder/longpoll",
        &[("Content-Type", "application/json")],
        Some(r#"{"cursor":"AAEeyJ4Ijp0cnVlfQ"}"#),
    );
    assert_eq!(lp.status, 400);
    // Random bytes as a request.
    let (head, _) = raw(t.emu.local_addr(), b"\xff\xfe\x00garbage\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert_eq!(t.rpc("files/list_folder", json!({"path": ""})).status, 200);
}
