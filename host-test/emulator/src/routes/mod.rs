//! The API routes, one file per area. Each handler receives the decoded argument (transport,
//! call style and auth were already handled by `server`) and returns a complete response.

pub(crate) mod content;
pub(crate) mod files;
pub(crate) mod oauth;
pub(crate) mod sharing;
pub(crate) mod users;

use crate::server::ApiError;
use crate::state::Lookup;
use crate::wire::lookup_error;

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
