//! What every request goes through on its way to a handler: counting, latency, fault
//! injection, then the route (DROPBOX-API.md §1.2, §1.8, §7.1): the API route table, the
//! call-style rules (Content-Type, argument location), the auth check, and decoding the argument.
//! The OAuth pages, temporary links and the control interface are routed here too.

use crate::auth;
use crate::control;
use crate::faults::{self, FaultKind};
use crate::http::{Request, Response};
use crate::routes::{ApiError, ApiResult, Ctx, content, files, oauth, sharing, users};
use crate::shared::Shared;
use crate::wire::{bad_request, decode_header_json, type_name};
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq)]
enum Style {
    Rpc,
    /// RPC with a Void argument: no body, or JSON null.
    RpcVoid,
    /// Argument in Dropbox-API-Arg (or ?arg=), result in Dropbox-API-Result, bytes in the body.
    Download,
}

#[derive(Clone, Copy)]
enum AuthKind {
    User(&'static str),
    UserAnyScope,
    NoAuth,
}

struct ApiRoute {
    name: &'static str,
    style: Style,
    auth: AuthKind,
    handler: fn(&Ctx, &Value) -> ApiResult,
}

const ROUTES: &[ApiRoute] = &[
    ApiRoute {
        name: "users/get_current_account",
        style: Style::RpcVoid,
        auth: AuthKind::User("account_info.read"),
        handler: users::get_current_account,
    },
    ApiRoute {
        name: "users/get_space_usage",
        style: Style::RpcVoid,
        auth: AuthKind::User("account_info.read"),
        handler: users::get_space_usage,
    },
    ApiRoute {
        name: "files/list_folder",
        style: Style::Rpc,
        auth: AuthKind::User("files.metadata.read"),
        handler: files::list_folder,
    },
    ApiRoute {
        name: "files/list_folder/continue",
        style: Style::Rpc,
        auth: AuthKind::User("files.metadata.read"),
        handler: files::list_folder_continue,
    },
    ApiRoute {
        name: "files/list_folder/get_latest_cursor",
        style: Style::Rpc,
        auth: AuthKind::User("files.metadata.read"),
        handler: files::get_latest_cursor,
    },
    ApiRoute {
        name: "files/list_folder/longpoll",
        style: Style::Rpc,
        auth: AuthKind::NoAuth,
        handler: files::longpoll,
    },
    ApiRoute {
        name: "files/get_metadata",
        style: Style::Rpc,
        auth: AuthKind::User("files.metadata.read"),
        handler: files::get_metadata,
    },
    ApiRoute {
        name: "files/download",
        style: Style::Download,
        auth: AuthKind::User("files.content.read"),
        handler: content::download,
    },
    ApiRoute {
        name: "files/export",
        style: Style::Download,
        auth: AuthKind::User("files.content.read"),
        handler: content::export,
    },
    ApiRoute {
        name: "files/get_temporary_link",
        style: Style::Rpc,
        auth: AuthKind::User("files.content.read"),
        handler: content::get_temporary_link,
    },
    ApiRoute {
        name: "sharing/list_shared_links",
        style: Style::Rpc,
        auth: AuthKind::User("sharing.read"),
        handler: sharing::list_shared_links,
    },
    ApiRoute {
        name: "sharing/create_shared_link_with_settings",
        style: Style::Rpc,
        auth: AuthKind::User("sharing.write"),
        handler: sharing::create_shared_link_with_settings,
    },
    ApiRoute {
        name: "auth/token/revoke",
        style: Style::RpcVoid,
        auth: AuthKind::UserAnyScope,
        handler: oauth::revoke,
    },
];

/// The name a request is counted and fault-matched under.
pub(crate) fn route_name(path: &str) -> String {
    if let Some(r) = path.strip_prefix("/2/") {
        return r.to_string();
    }
    match path {
        "/oauth2/token" => "oauth2/token".into(),
        "/oauth2/authorize" | "/oauth2/authorize/decide" => "oauth2/authorize".into(),
        p if p.starts_with("/tl/") => "temporary_link".into(),
        p => p.trim_start_matches('/').to_string(),
    }
}

pub(crate) enum Outcome {
    /// Close the connection without any response.
    Drop,
    Reply {
        resp: Response,
        delay: Duration,
        cut_body: bool,
        then_stop: bool,
    },
}

pub(crate) fn dispatch(shared: &Shared, req: &Request) -> Outcome {
    if req.path.starts_with("/__emulator/") {
        let then_stop = req.method == "POST" && req.path == "/__emulator/stop";
        return Outcome::Reply {
            resp: control::handle(shared, req),
            delay: Duration::ZERO,
            cut_body: false,
            then_stop,
        };
    }
    let name = route_name(&req.path);
    *shared
        .counts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(name.clone())
        .or_insert(0) += 1;
    let latency = Duration::from_micros(shared.latency_us.load(Ordering::Relaxed));
    if !latency.is_zero() {
        std::thread::sleep(latency);
    }
    let fault = shared.faults.take(&name);
    if let Some(FaultKind::DropConnection) = fault {
        return Outcome::Drop;
    }
    let early = match &fault {
        Some(FaultKind::NoProgress) => Some(faults::no_progress(&req.body)),
        Some(kind) => faults::early_response(kind),
        None => None,
    };
    let mut resp = match early {
        Some(r) => r,
        None => {
            // A bug in a handler must not kill the connection thread silently.
            let started = std::time::Instant::now();
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                handle(shared, req, &name)
            }));
            shared
                .handler_ns
                .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            caught.unwrap_or_else(|_| Response::text(500, "emulator handler panicked"))
        }
    };
    let (mut delay, mut cut_body) = (Duration::ZERO, false);
    if let Some(kind) = &fault {
        match kind {
            FaultKind::Slow(d) => delay = *d,
            FaultKind::DropMidBody => cut_body = true,
            other => faults::transform(other, &mut resp),
        }
    }
    Outcome::Reply {
        resp,
        delay,
        cut_body,
        then_stop: false,
    }
}

fn handle(shared: &Shared, req: &Request, name: &str) -> Response {
    match req.path.as_str() {
        "/oauth2/authorize" => return oauth::authorize(shared, req),
        "/oauth2/authorize/decide" => return oauth::decide(shared, req),
        "/oauth2/token" => return oauth::token(shared, req),
        p if p.starts_with("/tl/") => return content::serve_temporary_link(shared, req),
        _ => {}
    }
    match ROUTES
        .iter()
        .find(|r| req.path.starts_with("/2/") && r.name == name)
    {
        Some(route) => call_api(shared, req, route),
        None => Response::text(404, format!("Unknown API function: \"{name}\"")),
    }
}

/// Normalise a Content-Type for comparison: lower case, no blanks around parameters.
fn norm_ct(ct: &str) -> String {
    ct.split(';')
        .map(|p| p.trim().to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(";")
}

const RPC_TYPES: [&str; 3] = [
    "application/json",
    "application/json;charset=utf-8",
    "text/plain;charset=dropbox-cors-hack",
];
const RPC_TYPES_MSG: &str = "\"application/json\", \"application/json; charset=utf-8\", \"text/plain; charset=dropbox-cors-hack\"";
const DOWNLOAD_TYPES: [&str; 5] = [
    "",
    "text/plain",
    "text/plain;charset=utf-8",
    "application/octet-stream",
    "application/octet-stream;charset=utf-8",
];
const DOWNLOAD_TYPES_MSG: &str = "\"text/plain\", \"text/plain; charset=utf-8\", \"application/octet-stream\", \"application/octet-stream; charset=utf-8\"";

fn call_api(shared: &Shared, req: &Request, route: &ApiRoute) -> Response {
    let name = route.name;
    let allowed = match route.style {
        Style::Download => req.method == "POST" || req.method == "GET",
        _ => req.method == "POST",
    };
    if !allowed {
        return Response::text(
            405,
            format!("Error in call to API function \"{name}\": Method not allowed; use POST."),
        )
        .header("Allow", "POST");
    }
    // Call-style rules for the Content-Type header.
    let ct_raw = req
        .header("content-type")
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let ct = ct_raw.as_deref().map(norm_ct);
    let ct_ok = match (route.style, ct.as_deref()) {
        (Style::RpcVoid, None) => true,
        (Style::Rpc | Style::RpcVoid, Some(c)) => RPC_TYPES.contains(&c),
        (Style::Rpc, None) => false,
        (Style::Download, None) => true,
        (Style::Download, Some(c)) => DOWNLOAD_TYPES.contains(&c),
    };
    if !ct_ok {
        let expecting = if route.style == Style::Download {
            DOWNLOAD_TYPES_MSG
        } else {
            RPC_TYPES_MSG
        };
        let shown = ct_raw.unwrap_or_default();
        return bad_request(
            name,
            &format!(
                "Bad HTTP \"Content-Type\" header: \"{shown}\".  Expecting one of {expecting}."
            ),
        );
    }
    // Auth.
    let token = match route.auth {
        AuthKind::NoAuth => {
            if req.header("authorization").is_some() {
                return bad_request(
                    name,
                    "Your request includes an Authorization header, but this function does not use it.",
                );
            }
            None
        }
        AuthKind::User(scope) => match auth::check_bearer(shared, req, name, Some(scope)) {
            Ok(t) => Some(t),
            Err(resp) => return resp,
        },
        AuthKind::UserAnyScope => match auth::check_bearer(shared, req, name, None) {
            Ok(t) => Some(t),
            Err(resp) => return resp,
        },
    };
    // The argument, from where the call style puts it.
    let (arg, prefix) = match route.style {
        Style::Rpc => match serde_json::from_slice::<Value>(&req.body) {
            Ok(v) => (v, "request body: "),
            Err(_) => return bad_request(name, "request body: could not decode input as JSON"),
        },
        Style::RpcVoid => {
            if req.body.is_empty() && ct.is_none() {
                (Value::Null, "request body: ")
            } else {
                match serde_json::from_slice::<Value>(&req.body) {
                    Ok(Value::Null) => (Value::Null, "request body: "),
                    Ok(other) => {
                        return bad_request(
                            name,
                            &format!("request body: expected null, got {}", type_name(&other)),
                        );
                    }
                    Err(_) => {
                        return bad_request(name, "request body: could not decode input as JSON");
                    }
                }
            }
        }
        Style::Download => {
            if let Some(h) = req.header("dropbox-api-arg") {
                match decode_header_json(h) {
                    Some(v) => (v, "HTTP header \"Dropbox-API-Arg\": "),
                    None => {
                        return bad_request(
                            name,
                            "HTTP header \"Dropbox-API-Arg\": could not decode input as JSON",
                        );
                    }
                }
            } else if let Some(q) = req.query("arg") {
                match serde_json::from_str::<Value>(q) {
                    Ok(v) => (v, "URL parameter \"arg\": "),
                    Err(_) => {
                        return bad_request(
                            name,
                            "URL parameter \"arg\": could not decode input as JSON",
                        );
                    }
                }
            } else {
                return bad_request(
                    name,
                    "Must provide HTTP header \"Dropbox-API-Arg\" or URL parameter \"arg\".",
                );
            }
        }
    };
    let ctx = Ctx { shared, req, token };
    match (route.handler)(&ctx, &arg) {
        Ok(r) => r,
        Err(ApiError::Arg(msg)) => bad_request(name, &format!("{prefix}{msg}")),
        Err(ApiError::Resp(r)) => r,
    }
}
