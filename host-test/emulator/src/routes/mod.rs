//! The API routes, one file per area. Each handler receives the decoded argument (transport,
//! call style and auth were already handled by `server` and `router`) and returns a complete
//! response. This file holds what they share: the context a handler sees ([`Ctx`]) and how it
//! fails ([`ApiError`]).

pub(crate) mod content;
pub(crate) mod files;
pub(crate) mod oauth;
pub(crate) mod sharing;
pub(crate) mod users;

use crate::http::{Request, Response};
use crate::shared::Shared;
use crate::state::Lookup;
use crate::wire::lookup_error;

/// How an API route fails before or inside its handler.
pub(crate) enum ApiError {
    /// A Stone validation message about the argument (prefixed by where the argument came from).
    Arg(String),
    /// A complete response (409 route errors and the like).
    Resp(Response),
}

impl From<Response> for ApiError {
    fn from(r: Response) -> ApiError {
        ApiError::Resp(r)
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// What a handler sees.
pub(crate) struct Ctx<'a> {
    pub shared: &'a Shared,
    pub req: &'a Request,
    /// The caller's access token (user routes).
    pub token: Option<String>,
}

/// Stone validation failures become 400s with the argument prefix.
impl From<String> for ApiError {
    fn from(msg: String) -> ApiError {
        ApiError::Arg(msg)
    }
}

/// The LookupError answer for a path that did not resolve to an item.
pub(crate) fn lookup_failure(l: &Lookup) -> ApiError {
    match l {
        Lookup::Malformed => lookup_error("malformed_path").into(),
        _ => lookup_error("not_found").into(),
    }
}
