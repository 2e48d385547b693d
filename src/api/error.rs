//! Classification of non-2xx Dropbox responses: the one place that decides what an error *is*.
//!
//! Dispatch is on the HTTP status and, for JSON bodies, on `error[".tag"]` (and the nested tag
//! one level down). `error_summary` is kept for logs only: its trailing dots vary between
//! responses and its text is not a contract. Bodies are quoted only as short, scrubbed excerpts.

use serde::Deserialize as _;
use serde_json::Value;

use super::text::excerpt;
use super::types::SharedLinkMetadata;

/// Longest body excerpt kept in a message.
const MESSAGE_CHARS: usize = 500;

/// A failed Dropbox API call, by HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: the request itself is wrong (plain-text explanation). Retrying won't help.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 401: token expired, invalid or lacking a scope; also the 400 that refuses a credential
    /// Dropbox cannot parse ([`AuthError::MalformedAccessToken`]).
    #[error("authentication failed: {0}")]
    Auth(AuthError),
    /// 403: the account may not use this endpoint or feature.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// 409: the route's own error union.
    #[error("{0}")]
    Route(RouteError),
    /// 422: bad `Dropbox-API-Path-Root`.
    #[error("invalid path root: {0}")]
    PathRoot(String),
    /// 429: wait `retry_after_secs` before the next call.
    #[error("rate limited ({reason}); retry after {retry_after_secs} s")]
    RateLimited {
        retry_after_secs: u64,
        reason: String,
    },
    /// 5xx.
    #[error("Dropbox server error {status}: {message}")]
    Server { status: u16, message: String },
    /// Any other status (404 unknown route, 410 expired link, 3xx, ...).
    #[error("unexpected HTTP status {status}: {message}")]
    Unexpected { status: u16, message: String },
}

impl ApiError {
    /// Whether waiting and sending the same request again can succeed: rate limits and
    /// 500/502/503/504. (An expired token is fixed by a refresh, not by a retry.)
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::RateLimited { .. } => true,
            ApiError::Server { status, .. } => matches!(status, 500 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// 401 `expired_access_token`: refresh the token once and retry the call once.
    pub fn is_expired_token(&self) -> bool {
        matches!(self, ApiError::Auth(AuthError::ExpiredAccessToken))
    }

    /// The route error, if this is a 409.
    pub fn route(&self) -> Option<&RouteError> {
        match self {
            ApiError::Route(route) => Some(route),
            _ => None,
        }
    }
}

/// 401 `AuthError` (open union).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("access token expired")]
    ExpiredAccessToken,
    /// Unknown or revoked token, or app unlinked by the user; also any 401 that isn't JSON.
    #[error("access token invalid")]
    InvalidAccessToken,
    /// The token lacks this scope: the user must re-authorize.
    #[error("missing scope {0:?}")]
    MissingScope(String),
    #[error("user suspended")]
    UserSuspended,
    /// A 400, not a 401: the Authorization header holds no token Dropbox can parse (not token
    /// shaped, not a Bearer value, or missing). Only a new token fixes it. The server's text is
    /// not kept: it may echo the header's value.
    #[error("access token malformed")]
    MalformedAccessToken,
    /// Any other tag, e.g. `route_access_denied`.
    #[error("{0}")]
    Other(String),
}

/// A 409 route error: `{"error_summary": ..., "error": {".tag": tag, tag: {".tag": inner}}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteError {
    /// `error[".tag"]`, e.g. `path`, `reset`, `unsupported_file`, `shared_link_already_exists`.
    pub tag: String,
    /// The tag nested under `tag`, e.g. `not_found` for `path`, `metadata` for
    /// `shared_link_already_exists`.
    pub inner_tag: Option<String>,
    /// `error_summary`, for logs only.
    pub summary: String,
    /// `user_message.text`, if the server sent one.
    pub user_message: Option<String>,
    /// For `shared_link_already_exists/metadata`: the existing link.
    pub existing_link: Option<Box<SharedLinkMetadata>>,
}

impl RouteError {
    pub fn new(tag: impl Into<String>, inner_tag: Option<&str>) -> Self {
        RouteError {
            tag: tag.into(),
            inner_tag: inner_tag.map(str::to_owned),
            ..Self::default()
        }
    }

    /// `reset`: the cursor is invalid; list again from scratch.
    pub fn is_reset(&self) -> bool {
        self.tag == "reset"
    }

    /// A `LookupError.not_found` under any tag (`path/not_found`, ...).
    pub fn is_not_found(&self) -> bool {
        self.inner_tag.as_deref() == Some("not_found")
    }

    /// `path/<inner>` for the given LookupError member, e.g. `not_folder`, `malformed_path`.
    pub fn is_path(&self, inner: &str) -> bool {
        self.tag == "path" && self.inner_tag.as_deref() == Some(inner)
    }

    /// `unsupported_file`: not downloadable, use `files/export`.
    pub fn is_unsupported_file(&self) -> bool {
        self.tag == "unsupported_file"
    }

    /// `Some(Some(url))` if a link already exists and Dropbox returned it, `Some(None)` if it
    /// withheld it (list_shared_links with `direct_only` finds it), `None` for other errors.
    pub fn shared_link_already_exists(&self) -> Option<Option<String>> {
        (self.tag == "shared_link_already_exists")
            .then(|| self.existing_link.as_ref().map(|link| link.url.clone()))
    }
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "route error {}", self.tag)?;
        if let Some(inner) = &self.inner_tag {
            write!(f, "/{inner}")?;
        }
        if !self.summary.is_empty() {
            write!(f, " ({})", self.summary)?;
        }
        if let Some(text) = &self.user_message {
            write!(f, ": {text}")?;
        }
        Ok(())
    }
}

/// Classifies a non-2xx response. `headers` are (name, value) pairs, names in any case.
pub fn classify(status: u16, headers: &[(String, String)], body: &[u8]) -> ApiError {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let envelope = json.as_ref().and_then(Value::as_object);
    let error = envelope.and_then(|e| e.get("error"));
    let summary = envelope
        .and_then(|e| e.get("error_summary"))
        .and_then(Value::as_str)
        .map(|s| excerpt(s.as_bytes(), MESSAGE_CHARS));
    let text = || excerpt(body, MESSAGE_CHARS);
    // "tag/inner" from the JSON error, else the summary, else the raw text.
    let described = || {
        error
            .and_then(tag_path)
            .map(|t| excerpt(t.as_bytes(), MESSAGE_CHARS))
            .or_else(|| summary.clone())
            .unwrap_or_else(text)
    };

    match status {
        400 if refuses_the_credential(body) => ApiError::Auth(AuthError::MalformedAccessToken),
        400 => ApiError::BadRequest(text()),
        401 => ApiError::Auth(auth_error(error)),
        403 => ApiError::AccessDenied(described()),
        409 => match error.and_then(route_error) {
            Some(mut route) => {
                route.summary = summary.unwrap_or_default();
                route.user_message = envelope
                    .and_then(|e| e.get("user_message"))
                    .and_then(|m| m.get("text"))
                    .and_then(Value::as_str)
                    .map(|s| excerpt(s.as_bytes(), MESSAGE_CHARS));
                ApiError::Route(route)
            }
            None => ApiError::Unexpected {
                status,
                message: text(),
            },
        },
        422 => ApiError::PathRoot(described()),
        429 => rate_limited(error, headers),
        500..=599 => ApiError::Server {
            status,
            message: summary.unwrap_or_else(text),
        },
        _ => ApiError::Unexpected {
            status,
            message: text(),
        },
    }
}

/// Whether a 400's text refuses the request's credential rather than the request: Dropbox
/// answers an Authorization header it cannot parse with 400 plain text, not a 401 JSON error
/// (observed, and documented in dropbox-api.md's authentication section and the emulator's
/// DROPBOX-API.md section 7): `Error in call to API function "<route>": ` and then one of these.
fn refuses_the_credential(body: &[u8]) -> bool {
    const REFUSALS: [&str; 3] = [
        "The given OAuth 2 access token is malformed",
        "Invalid authorization value in HTTP header \"Authorization\"",
        "Must provide HTTP header \"Authorization\"",
    ];
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let details = text
        .strip_prefix("Error in call to API function \"")
        .and_then(|rest| rest.split_once("\": "))
        .map_or(text, |(_route, details)| details);
    REFUSALS.iter().any(|refusal| details.starts_with(refusal))
}

/// The `.tag` of a union value; a bare string is the shorthand of a void member.
fn tag_of(value: &Value) -> Option<&str> {
    match value {
        Value::String(tag) => Some(tag),
        Value::Object(map) => map.get(".tag").and_then(Value::as_str),
        _ => None,
    }
}

/// The tag nested one level down: `{".tag": "path", "path": {".tag": "not_found"}}`.
fn inner_tag<'v>(error: &'v Value, tag: &str) -> Option<&'v str> {
    error.get(tag).and_then(tag_of)
}

fn tag_path(error: &Value) -> Option<String> {
    let tag = tag_of(error)?;
    Some(match inner_tag(error, tag) {
        Some(inner) => format!("{tag}/{inner}"),
        None => tag.to_owned(),
    })
}

fn auth_error(error: Option<&Value>) -> AuthError {
    let Some(error) = error else {
        return AuthError::InvalidAccessToken;
    };
    match tag_of(error) {
        Some("expired_access_token") => AuthError::ExpiredAccessToken,
        Some("invalid_access_token") | None => AuthError::InvalidAccessToken,
        Some("missing_scope") => {
            let scope = error
                .get("required_scope")
                .and_then(Value::as_str)
                .unwrap_or_default();
            AuthError::MissingScope(excerpt(scope.as_bytes(), MESSAGE_CHARS))
        }
        Some("user_suspended") => AuthError::UserSuspended,
        Some(other) => AuthError::Other(excerpt(other.as_bytes(), 100)),
    }
}

fn route_error(error: &Value) -> Option<RouteError> {
    let tag = tag_of(error)?;
    let inner = inner_tag(error, tag);
    let existing_link = match (tag, inner) {
        ("shared_link_already_exists", Some("metadata")) => error
            .get(tag)
            .and_then(|v| v.get("metadata"))
            .and_then(|m| SharedLinkMetadata::deserialize(m).ok())
            .map(Box::new),
        _ => None,
    };
    Some(RouteError {
        tag: excerpt(tag.as_bytes(), 100),
        inner_tag: inner.map(|i| excerpt(i.as_bytes(), 100)),
        existing_link,
        ..RouteError::default()
    })
}

fn rate_limited(error: Option<&Value>, headers: &[(String, String)]) -> ApiError {
    let reason = error
        .and_then(|e| e.get("reason"))
        .and_then(tag_of)
        .map(|r| excerpt(r.as_bytes(), 100))
        .unwrap_or_else(|| "too_many_requests".to_owned());
    let from_body = error
        .and_then(|e| e.get("retry_after"))
        .and_then(Value::as_u64);
    let from_header = headers
        .iter()
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, value)| value.trim().parse::<u64>().ok());
    ApiError::RateLimited {
        retry_after_secs: from_body.or(from_header).unwrap_or(1),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_409(body: &str) -> RouteError {
        match classify(409, &[], body.as_bytes()) {
            ApiError::Route(route) => route,
            other => panic!("{other:?}"),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn list_folder_409s() {
        let r = json_409(
            r#"{"error_summary":"path/not_found/..","error":{".tag":"path","path":{".tag":"not_found"}}}"#,
        );
        assert_eq!(
            (r.tag.as_str(), r.inner_tag.as_deref()),
            ("path", Some("not_found"))
        );
        assert!(r.is_not_found() && r.is_path("not_found") && !r.is_reset());
        assert_eq!(r.summary, "path/not_found/..");
        let r = json_409(
            r#"{"error_summary":"path/not_folder/...","error":{".tag":"path","path":{".tag":"not_folder"}}}"#,
        );
        assert!(r.is_path("not_folder") && !r.is_not_found());
        let r = json_409(
            r#"{"error_summary":"path/malformed_path/.","error":{".tag":"path","path":{".tag":"malformed_path"}}}"#,
        );
        assert!(r.is_path("malformed_path"));
        let r = json_409(
            r#"{"error":{".tag":"path","path":{".tag":"malformed_path","malformed_path":"x"}}}"#,
        );
        assert!(r.is_path("malformed_path"));
        assert_eq!(r.summary, "");
    }

    #[test]
    fn reset_and_unsupported_file() {
        let r = json_409(r#"{"error_summary":"reset/..","error":{".tag":"reset"}}"#);
        assert!(r.is_reset() && r.inner_tag.is_none() && !r.is_not_found());
        let r = json_409(
            r#"{"error_summary":"unsupported_file/.","error":{".tag":"unsupported_file"}}"#,
        );
        assert!(r.is_unsupported_file());
        assert_eq!(r.shared_link_already_exists(), None);
        let r = json_409(
            r#"{"error_summary":"email_not_verified/","error":{".tag":"email_not_verified"},"user_message":{"locale":"en","text":"Verify your email"}}"#,
        );
        assert_eq!(r.user_message.as_deref(), Some("Verify your email"));
        assert!(r.to_string().contains("email_not_verified"));
        // A shorthand bare-string union and an unknown future tag.
        assert_eq!(json_409(r#"{"error":"reset"}"#).tag, "reset");
        assert_eq!(
            json_409(r#"{"error":{".tag":"brand_new","extra":1}}"#).tag,
            "brand_new"
        );
    }

    #[test]
    fn shared_link_already_exists() {
        let with = r#"{"error_summary":"shared_link_already_exists/metadata/..",
   "error":{".tag":"shared_link_already_exists",
            "shared_link_already_exists":{".tag":"metadata",
                                          "metadata":{".tag":"file","url":"https://www.dropbox.com/s/abc/a.txt?dl=0","name":"a.txt","link_permissions":{}}}}}"#;
        let r = json_409(with);
        assert_eq!(r.inner_tag.as_deref(), Some("metadata"));
        assert_eq!(
            r.shared_link_already_exists(),
            Some(Some("https://www.dropbox.com/s/abc/a.txt?dl=0".to_owned()))
        );
        assert_eq!(r.existing_link.map(|l| l.tag), Some("file".to_owned()));
        let without = r#"{"error_summary":"shared_link_already_exists/.","error":{".tag":"shared_link_already_exists"}}"#;
        assert_eq!(json_409(without).shared_link_already_exists(), Some(None));
        // Metadata of an unexpected shape: still "exists", URL unknown.
        let odd = r#"{"error":{".tag":"shared_link_already_exists","shared_link_already_exists":{".tag":"metadata","metadata":{"url":5}}}}"#;
        assert_eq!(json_409(odd).shared_link_already_exists(), Some(None));
    }

    #[test]
    fn unparsable_409_is_unexpected() {
        assert!(matches!(
            classify(409, &[], b"conflict"),
            ApiError::Unexpected { status: 409, .. }
        ));
        assert!(matches!(
            classify(409, &[], br#"{"error":{}}"#),
            ApiError::Unexpected { status: 409, .. }
        ));
    }

    #[test]
    fn a_400_refusing_the_credential_is_an_auth_error_and_keeps_no_token() {
        let token = format!("sl.{}", "B".repeat(130));
        for body in [
            r#"Error in call to API function "users/get_current_account": The given OAuth 2 access token is malformed."#.to_string(),
            format!(
                r#"Error in call to API function "users/get_current_account": Invalid authorization value in HTTP header "Authorization": "{token}".  Expecting "Bearer <oauth2-access-token>"."#
            ),
            r#"Error in call to API function "files/list_folder": Must provide HTTP header "Authorization" or URL parameter "authorization"."#.to_string(),
        ] {
            let error = classify(400, &[], body.as_bytes());
            assert_eq!(error, ApiError::Auth(AuthError::MalformedAccessToken), "{body}");
            assert!(!error.to_string().contains("BBBB"), "{error}");
            assert!(!error.is_retryable() && !error.is_expired_token());
        }
        // Any other 400 is the request's fault, even when it names the header elsewhere.
        for body in [
            r#"Error in call to API function "files/list_folder": request body: path: Specify the root folder as an empty string rather than as "/"."#,
            r#"Error in call to API function "files/list_folder/longpoll": Your request includes an Authorization header, but this function does not use it."#,
            r#"Error in call to API function "files/upload": Bad HTTP "Content-Type" header: "application/json".  Expecting one of "application/octet-stream"."#,
        ] {
            let error = classify(400, &[], body.as_bytes());
            assert!(
                matches!(error, ApiError::BadRequest(_)),
                "{body}: {error:?}"
            );
        }
    }

    #[test]
    fn auth_errors() {
        let auth = |body: &str| match classify(401, &[], body.as_bytes()) {
            ApiError::Auth(a) => a,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            auth(
                r#"{"error_summary": "expired_access_token/.", "error": {".tag": "expired_access_token"}}"#
            ),
            AuthError::ExpiredAccessToken
        );
        assert_eq!(
            auth(
                r#"{"error_summary": "invalid_access_token/..", "error": {".tag": "invalid_access_token"}}"#
            ),
            AuthError::InvalidAccessToken
        );
        assert_eq!(
            auth(
                r#"{"error_summary": "missing_scope/...", "error": {".tag": "missing_scope", "required_scope": "files.content.write"}}"#
            ),
            AuthError::MissingScope("files.content.write".into())
        );
        assert_eq!(
            auth(r#"{"error":{".tag":"user_suspended"}}"#),
            AuthError::UserSuspended
        );
        assert_eq!(
            auth(r#"{"error":{".tag":"route_access_denied"}}"#),
            AuthError::Other("route_access_denied".into())
        );
        assert_eq!(auth("Unauthorized"), AuthError::InvalidAccessToken);
        assert_eq!(auth(""), AuthError::InvalidAccessToken);
        assert!(
            classify(401, &[], br#"{"error":{".tag":"expired_access_token"}}"#).is_expired_token()
        );
    }

    #[test]
    fn rate_limits() {
        let h = headers(&[("Retry-After", "7")]);
        let json = br#"{"error_summary": "too_many_requests/..", "error": {"reason": {".tag": "too_many_requests"}, "retry_after": 300}}"#;
        assert_eq!(
            classify(429, &h, json),
            ApiError::RateLimited {
                retry_after_secs: 300,
                reason: "too_many_requests".into()
            }
        );
        let write = br#"{"error_summary": "too_many_write_operations/.", "error": {"reason": {".tag": "too_many_write_operations"}}}"#;
        assert_eq!(
            classify(429, &headers(&[("retry-after", " 2 ")]), write),
            ApiError::RateLimited {
                retry_after_secs: 2,
                reason: "too_many_write_operations".into()
            }
        );
        assert_eq!(
            classify(429, &[], write),
            ApiError::RateLimited {
                retry_after_secs: 1,
                reason: "too_many_write_operations".into()
            }
        );
        assert_eq!(
            classify(
                429,
                &headers(&[("RETRY-AFTER", "15")]),
                b"Too Many Requests"
            ),
            ApiError::RateLimited {
                retry_after_secs: 15,
                reason: "too_many_requests".into()
            }
        );
        assert_eq!(
            classify(
                429,
                &headers(&[("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT")]),
                b""
            ),
            ApiError::RateLimited {
                retry_after_secs: 1,
                reason: "too_many_requests".into()
            }
        );
        assert!(classify(429, &[], b"").is_retryable());
    }

    #[test]
    fn other_statuses() {
        let text = "Error in call to API function \"files/list_folder\": request body: path: Specify the root folder as an empty string rather than as \"/\".";
        assert_eq!(
            classify(400, &[], text.as_bytes()),
            ApiError::BadRequest(text.into())
        );
        match classify(400, &[], "x".repeat(10_000).as_bytes()) {
            ApiError::BadRequest(m) => assert!(m.chars().count() <= 501),
            other => panic!("{other:?}"),
        }
        let token = format!("sl.{}", "B".repeat(150));
        match classify(
            400,
            &[],
            format!("Invalid authorization value \"{token}\"").as_bytes(),
        ) {
            ApiError::BadRequest(m) => assert!(!m.contains(&token), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            classify(403, &[], br#"{"error_summary":"invalid_account_type/endpoint/","error":{".tag":"invalid_account_type","invalid_account_type":{".tag":"endpoint"}}}"#),
            ApiError::AccessDenied("invalid_account_type/endpoint".into())
        );
        assert_eq!(
            classify(403, &[], b"Forbidden"),
            ApiError::AccessDenied("Forbidden".into())
        );
        assert_eq!(
            classify(
                422,
                &[],
                br#"{"error_summary":"no_permission/..","error":{".tag":"no_permission"}}"#
            ),
            ApiError::PathRoot("no_permission".into())
        );
        assert_eq!(
            classify(422, &[], br#"{"error_summary":"invalid_root/..","error":{".tag":"invalid_root","invalid_root":{".tag":"user","root_namespace_id":"3235641","home_namespace_id":"3235641"}}}"#),
            ApiError::PathRoot("invalid_root/user".into())
        );
        for status in [500u16, 502, 503, 504] {
            let e = classify(status, &[], b"<html>oops</html>");
            assert_eq!(
                e,
                ApiError::Server {
                    status,
                    message: "<html>oops</html>".into()
                }
            );
            assert!(e.is_retryable());
        }
        assert!(!classify(501, &[], b"").is_retryable());
        assert!(!classify(507, &[], b"").is_retryable());
        assert_eq!(
            classify(404, &[], b"Unknown API function"),
            ApiError::Unexpected {
                status: 404,
                message: "Unknown API function".into()
            }
        );
        assert!(matches!(
            classify(410, &[], b""),
            ApiError::Unexpected { status: 410, .. }
        ));
        assert!(matches!(
            classify(200, &[], b"{}"),
            ApiError::Unexpected { status: 200, .. }
        ));
        for e in [
            classify(400, &[], b""),
            classify(401, &[], b""),
            classify(403, &[], b""),
            classify(409, &[], br#"{"error":"reset"}"#),
        ] {
            assert!(!e.is_retryable(), "{e:?}");
        }
    }
}
