//! What every conformance test uses: an emulator with an HTTP client and a token ([`T`]),
//! responses with exact-answer assertions ([`Resp`]), raw HTTP over TCP, and a local replica
//! that applies listing entries by the rules of DROPBOX-API.md §4.1.

use dropbox_emulator::{Content, Emulator, EmulatorConfig, Kind};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use ureq::Agent;

pub fn agent() -> Agent {
    let cfg = Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(60)))
        .build();
    Agent::new_with_config(cfg)
}

pub struct Resp {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
    pub fn ct(&self) -> Option<String> {
        self.header("content-type")
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }
    /// A 400 with the exact plain-text body.
    pub fn assert_400(&self, text: &str) {
        assert_eq!(self.status, 400, "body: {}", self.text());
        assert_eq!(self.ct().as_deref(), Some("text/plain; charset=utf-8"));
        assert_eq!(self.text(), text);
    }
    /// A 409 whose error is `error` exactly.
    pub fn assert_409(&self, error: Value) {
        assert_eq!(self.status, 409, "body: {}", self.text());
        assert_eq!(self.ct().as_deref(), Some("application/json"));
        let v = self.json();
        assert_eq!(v["error"], error);
        assert!(v["error_summary"].is_string());
    }
    pub fn assert_401(&self, tag: &str) {
        assert_eq!(self.status, 401, "body: {}", self.text());
        assert_eq!(self.ct().as_deref(), Some("application/json"));
        assert_eq!(
            self.header("www-authenticate").as_deref(),
            Some("Bearer realm=\"Dropbox-API\"")
        );
        assert_eq!(self.json()["error"][".tag"], tag);
    }
}

pub fn finish(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Resp {
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
pub fn header_safe(v: &Value) -> String {
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

pub struct T {
    pub emu: Emulator,
    pub agent: Agent,
    pub token: String,
}

pub fn with_cfg(cfg: EmulatorConfig) -> T {
    let emu = Emulator::start(cfg).expect("emulator starts");
    let token = emu.access_token();
    T {
        emu,
        agent: agent(),
        token,
    }
}

pub fn new() -> T {
    with_cfg(EmulatorConfig::default())
}

impl T {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.emu.base_url())
    }

    /// RPC with the default token.
    pub fn rpc(&self, route: &str, body: Value) -> Resp {
        self.rpc_with(route, &self.token, body)
    }

    pub fn rpc_with(&self, route: &str, token: &str, body: Value) -> Resp {
        finish(
            self.agent
                .post(&self.url(&format!("/2/{route}")))
                .header("Authorization", &format!("Bearer {token}"))
                .header("Content-Type", "application/json")
                .send(serde_json::to_string(&body).unwrap()),
        )
    }

    /// POST with exactly these headers and body.
    pub fn post_raw(&self, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
        let mut req = self.agent.post(&self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        finish(match body {
            Some(b) => req.send(b),
            None => req.send_empty(),
        })
    }

    pub fn get(&self, url: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = self.agent.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        finish(req.call())
    }

    pub fn download(&self, route: &str, arg: Value, headers: &[(&str, &str)]) -> Resp {
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

    pub fn list(&self, arg: Value) -> Value {
        let r = self.rpc("files/list_folder", arg);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    pub fn cont(&self, cursor: &str) -> Value {
        let r = self.rpc("files/list_folder/continue", json!({"cursor": cursor}));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// list_folder then continue until has_more is false.
    pub fn list_all(&self, arg: Value) -> (Vec<Value>, String) {
        let mut page = self.list(arg);
        let mut entries = page["entries"].as_array().unwrap().clone();
        while page["has_more"] == true {
            page = self.cont(page["cursor"].as_str().unwrap());
            entries.extend(page["entries"].as_array().unwrap().iter().cloned());
        }
        (entries, page["cursor"].as_str().unwrap().to_string())
    }

    /// continue until has_more is false.
    pub fn changes(&self, cursor: &str) -> (Vec<Value>, String) {
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
pub fn raw(addr: std::net::SocketAddr, request: &[u8]) -> (String, Vec<u8>) {
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
pub struct Replica {
    pub items: BTreeMap<String, (String, String, String)>, // path_lower -> (tag, id, name)
}

impl Replica {
    pub fn remove_subtree(&mut self, key: &str, include_self: bool) {
        let prefix = format!("{key}/");
        self.items
            .retain(|k, _| !(k.starts_with(&prefix) || (include_self && k == key)));
    }
    pub fn apply(&mut self, entries: &[Value]) {
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
    pub fn assert_matches(&self, emu: &Emulator, check_names: bool) {
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

pub fn bytes(s: &str) -> Content {
    Content::Bytes(s.as_bytes().to_vec())
}

pub fn paths(entries: &[Value]) -> Vec<(String, String)> {
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

pub fn list_root(t: &T) -> Result<Resp, ureq::Error> {
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

pub fn token_call(t: &T, form: &[(&str, &str)], basic: Option<&str>) -> Resp {
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
