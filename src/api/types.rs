//! Serde types for the Dropbox wire format (sections 1.6, 2, 3, 5, 6 and 7.3 of
//! host-test/emulator/DROPBOX-API.md).
//!
//! Decoding is lenient on purpose: Dropbox adds fields and union members without notice, so no
//! struct denies unknown fields, every optional field treats "absent" and `null` alike, an
//! unknown `Metadata` `.tag` becomes [`Metadata::Unknown`], and polymorphic tags we only pass on
//! (shared links, root info) are kept as strings. Only the fields the connector really needs
//! are required. Request arguments serialize with exactly the wire field names and leave out
//! optional fields that are `None`, because the server rejects unknown or misplaced fields.

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};

use super::text::{excerpt, mentions_credentials};

// ------------------------------------------------------------------------------------------
// Decoding entry point

/// Longest excerpt of a body kept in a [`DecodeError`].
const EXCERPT_CHARS: usize = 120;

/// Why a JSON body (or `Dropbox-API-Result` header) could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body was empty or only whitespace.
    #[error("empty JSON body")]
    Empty,
    /// The JSON ended early: usually a cut connection or a size cap.
    #[error("truncated JSON ({message}); body starts: {excerpt}")]
    Truncated { message: String, excerpt: String },
    /// Not JSON at all, or broken JSON.
    #[error("malformed JSON ({message}); near: {excerpt}")]
    Malformed { message: String, excerpt: String },
    /// Valid JSON of the wrong shape (missing required field, wrong type).
    #[error("unexpected JSON shape ({message}); body starts: {excerpt}")]
    Shape { message: String, excerpt: String },
}

/// Decodes a JSON response body. Errors say what was wrong and carry a short excerpt (none if
/// the body holds OAuth credentials).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    match std::str::from_utf8(body) {
        // Checked once, whole: decoding from a `str` does not check each string of the body
        // again, as decoding from bytes does.
        Ok(text) => serde_json::from_str(text),
        // Not UTF-8 somewhere: the decoder of bytes says where, as it always did.
        Err(_) => serde_json::from_slice(body),
    }
    .map_err(|err| decode_error(&err, body))
}

fn decode_error(err: &serde_json::Error, body: &[u8]) -> DecodeError {
    if body.trim_ascii().is_empty() {
        return DecodeError::Empty;
    }
    let message: String = err.to_string().chars().take(200).collect();
    let message = super::text::scrub_secrets(&message);
    if mentions_credentials(body) {
        let excerpt = "(withheld: body contains credentials)".to_owned();
        return match err.classify() {
            serde_json::error::Category::Eof => DecodeError::Truncated { message, excerpt },
            serde_json::error::Category::Data => DecodeError::Shape { message, excerpt },
            _ => DecodeError::Malformed { message, excerpt },
        };
    }
    if err.is_eof() {
        DecodeError::Truncated {
            message,
            excerpt: excerpt(body, EXCERPT_CHARS),
        }
    } else if err.is_data() {
        DecodeError::Shape {
            message,
            excerpt: excerpt(body, EXCERPT_CHARS),
        }
    } else {
        // Syntax (or, impossibly for a slice, I/O): show the bytes around the error position.
        DecodeError::Malformed {
            message,
            excerpt: excerpt_near(body, err.line(), err.column()),
        }
    }
}

/// An excerpt around a (1-based line, 1-based byte column) position; API bodies are usually a
/// single line, so this is where the syntax error is.
fn excerpt_near(body: &[u8], line: usize, column: usize) -> String {
    let line_start = if line <= 1 {
        Some(0)
    } else {
        body.iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'\n')
            .nth(line.saturating_sub(2))
            .map(|(i, _)| i.saturating_add(1))
    };
    let Some(line_start) = line_start else {
        return excerpt(body, EXCERPT_CHARS);
    };
    let pos = line_start.saturating_add(column.saturating_sub(1));
    let start = pos.saturating_sub(EXCERPT_CHARS / 2);
    let end = pos.saturating_add(EXCERPT_CHARS / 2).min(body.len());
    match body.get(start..end) {
        Some(window) if start > 0 => format!("…{}", excerpt(window, EXCERPT_CHARS)),
        Some(window) => excerpt(window, EXCERPT_CHARS),
        None => excerpt(body, EXCERPT_CHARS),
    }
}

fn default_true() -> bool {
    true
}

/// A boolean field with a spec default, where `null` means the default too.
fn bool_or_true<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(true))
}

fn bool_or_false<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

// ------------------------------------------------------------------------------------------
// Metadata (list_folder entries, get_metadata)

/// One entry of a listing: `.tag` file | folder | deleted, fields flattened next to the tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metadata {
    File(FileMetadata),
    Folder(FolderMetadata),
    Deleted(DeletedMetadata),
    /// A subtype this connector does not know yet; callers should skip it.
    Unknown {
        tag: String,
    },
}

impl Metadata {
    /// The last path component, correctly cased (`None` for unknown subtypes).
    pub fn name(&self) -> Option<&str> {
        match self {
            Metadata::File(f) => Some(&f.name),
            Metadata::Folder(f) => Some(&f.name),
            Metadata::Deleted(d) => Some(&d.name),
            Metadata::Unknown { .. } => None,
        }
    }

    /// The lower-cased full path; absent for items that are not mounted.
    pub fn path_lower(&self) -> Option<&str> {
        match self {
            Metadata::File(f) => f.path_lower.as_deref(),
            Metadata::Folder(f) => f.path_lower.as_deref(),
            Metadata::Deleted(d) => d.path_lower.as_deref(),
            Metadata::Unknown { .. } => None,
        }
    }

    pub fn path_display(&self) -> Option<&str> {
        match self {
            Metadata::File(f) => f.path_display.as_deref(),
            Metadata::Folder(f) => f.path_display.as_deref(),
            Metadata::Deleted(d) => d.path_display.as_deref(),
            Metadata::Unknown { .. } => None,
        }
    }

    /// Take the lower-cased full path out of the entry (a planner that consumes the entry
    /// keeps the string instead of copying it).
    pub fn take_path_lower(&mut self) -> Option<String> {
        match self {
            Metadata::File(f) => f.path_lower.take(),
            Metadata::Folder(f) => f.path_lower.take(),
            Metadata::Deleted(d) => d.path_lower.take(),
            Metadata::Unknown { .. } => None,
        }
    }

    /// The stable id (files and folders only; deleted entries carry none).
    pub fn id(&self) -> Option<&str> {
        match self {
            Metadata::File(f) => Some(&f.id),
            Metadata::Folder(f) => Some(&f.id),
            Metadata::Deleted(_) | Metadata::Unknown { .. } => None,
        }
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MetadataVisitor)
    }
}

/// Decodes an entry in one pass when `.tag` is its first key, as Dropbox sends it: the rest of
/// the object goes straight to the subtype's decoder. Otherwise the object is buffered, the tag
/// picked out, and the subtype decoded from the rest (serde's internally tagged enums cannot
/// keep the tag of an unknown variant). A profile of a full sync found the buffering, a map of
/// JSON values per entry, among the guest's largest costs.
struct MetadataVisitor;

impl<'de> serde::de::Visitor<'de> for MetadataVisitor {
    type Value = Metadata;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a metadata object with a `.tag`")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Metadata, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Err(A::Error::missing_field(".tag"));
        };
        if first == ".tag" {
            let tag = match map.next_value::<serde_json::Value>()? {
                serde_json::Value::String(tag) => tag,
                _ => return Err(A::Error::custom("`.tag` is not a string")),
            };
            return decode_subtype(tag, serde::de::value::MapAccessDeserializer::new(map));
        }
        let mut buffered = serde_json::Map::new();
        buffered.insert(first, map.next_value()?);
        while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
            buffered.insert(key, value);
        }
        let tag = match buffered.remove(".tag") {
            Some(serde_json::Value::String(tag)) => tag,
            Some(_) => return Err(A::Error::custom("`.tag` is not a string")),
            None => return Err(A::Error::missing_field(".tag")),
        };
        decode_subtype(tag, serde_json::Value::Object(buffered)).map_err(A::Error::custom)
    }
}

/// The subtype `tag` names, decoded from the object's other fields (any JSON for a tag this
/// connector does not know).
fn decode_subtype<'de, D: Deserializer<'de>>(tag: String, rest: D) -> Result<Metadata, D::Error> {
    let decoded = match tag.as_str() {
        "file" => FileMetadata::deserialize(rest).map(Metadata::File),
        "folder" => FolderMetadata::deserialize(rest).map(Metadata::Folder),
        "deleted" => DeletedMetadata::deserialize(rest).map(Metadata::Deleted),
        _ => {
            serde::de::IgnoredAny::deserialize(rest)?;
            return Ok(Metadata::Unknown { tag });
        }
    };
    decoded.map_err(|e| D::Error::custom(format_args!("{tag} metadata: {e}")))
}

/// `FileMetadata`. Also the plain (untagged) result of download, get_temporary_link and export;
/// a stray `.tag` is ignored like any unknown field.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FileMetadata {
    pub name: String,
    pub id: String,
    #[serde(default)]
    pub path_lower: Option<String>,
    #[serde(default)]
    pub path_display: Option<String>,
    /// Set by the uploading client, unverified: display only.
    pub client_modified: String,
    pub server_modified: String,
    pub rev: String,
    pub size: u64,
    #[serde(default)]
    pub content_hash: Option<String>,
    /// False for files that must be exported (Google Docs, Paper, ...).
    #[serde(default = "default_true", deserialize_with = "bool_or_true")]
    pub is_downloadable: bool,
    #[serde(default)]
    pub export_info: Option<ExportInfo>,
    #[serde(default)]
    pub sharing_info: Option<FileSharingInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExportInfo {
    #[serde(default)]
    pub export_as: Option<String>,
    #[serde(default)]
    pub export_options: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FileSharingInfo {
    #[serde(default, deserialize_with = "bool_or_false")]
    pub read_only: bool,
    #[serde(default)]
    pub parent_shared_folder_id: Option<String>,
    #[serde(default)]
    pub modified_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FolderMetadata {
    pub name: String,
    pub id: String,
    #[serde(default)]
    pub path_lower: Option<String>,
    #[serde(default)]
    pub path_display: Option<String>,
    #[serde(default)]
    pub sharing_info: Option<FolderSharingInfo>,
}

/// `shared_folder_id` set: this folder is a mount point; `parent_shared_folder_id` set: it lives
/// inside a shared folder.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FolderSharingInfo {
    #[serde(default, deserialize_with = "bool_or_false")]
    pub read_only: bool,
    #[serde(default)]
    pub parent_shared_folder_id: Option<String>,
    #[serde(default)]
    pub shared_folder_id: Option<String>,
    #[serde(default, deserialize_with = "bool_or_false")]
    pub traverse_only: bool,
    #[serde(default, deserialize_with = "bool_or_false")]
    pub no_access: bool,
}

/// A deleted entry: no id, no rev, no file/folder distinction; find it by `path_lower`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DeletedMetadata {
    pub name: String,
    #[serde(default)]
    pub path_lower: Option<String>,
    #[serde(default)]
    pub path_display: Option<String>,
}

/// Result of `files/list_folder` and `files/list_folder/continue`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ListFolderResult {
    pub entries: Vec<Metadata>,
    pub cursor: String,
    pub has_more: bool,
}

/// Result of `files/list_folder/get_latest_cursor`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LatestCursorResult {
    pub cursor: String,
}

/// Result of `files/list_folder/longpoll`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LongpollResult {
    pub changes: bool,
    /// Seconds to wait before the next longpoll.
    #[serde(default)]
    pub backoff: Option<u64>,
}

// ------------------------------------------------------------------------------------------
// Account

/// Only a union's `.tag`, e.g. `account_type` `{".tag":"basic"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UnionTag {
    #[serde(rename = ".tag")]
    pub tag: String,
}

/// Result of `users/get_current_account`; only `account_id`, `email` and `name.display_name`
/// are required.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FullAccount {
    pub account_id: String,
    pub name: Name,
    pub email: String,
    #[serde(default, deserialize_with = "bool_or_false")]
    pub email_verified: bool,
    #[serde(default, deserialize_with = "bool_or_false")]
    pub disabled: bool,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub locale: Option<String>,
    #[serde(default)]
    pub account_type: Option<UnionTag>,
    #[serde(default)]
    pub root_info: Option<RootInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Name {
    pub display_name: String,
    #[serde(default)]
    pub given_name: Option<String>,
    #[serde(default)]
    pub surname: Option<String>,
    #[serde(default)]
    pub familiar_name: Option<String>,
    #[serde(default)]
    pub abbreviated_name: Option<String>,
}

/// `RootInfo` (`.tag` user | team). Personal accounts: `user`, root == home.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RootInfo {
    #[serde(rename = ".tag", default)]
    pub tag: String,
    #[serde(default)]
    pub root_namespace_id: Option<String>,
    #[serde(default)]
    pub home_namespace_id: Option<String>,
    #[serde(default)]
    pub home_path: Option<String>,
}

// ------------------------------------------------------------------------------------------
// Shared links

/// `SharedLinkMetadata`; the polymorphic `.tag` (file | folder | future ones) is kept as a
/// string, empty if absent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SharedLinkMetadata {
    #[serde(rename = ".tag", default)]
    pub tag: String,
    /// Opaque; never parse it.
    pub url: String,
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub path_lower: Option<String>,
    #[serde(default)]
    pub expires: Option<String>,
}

/// Result of `sharing/list_shared_links`; `cursor` only comes when no path was given.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ListSharedLinksResult {
    pub links: Vec<SharedLinkMetadata>,
    pub has_more: bool,
    #[serde(default)]
    pub cursor: Option<String>,
}

// ------------------------------------------------------------------------------------------
// Content

/// Result of `files/get_temporary_link` (the link lives four hours).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TemporaryLinkResult {
    pub metadata: FileMetadata,
    pub link: String,
}

/// `Dropbox-API-Result` of `files/export`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExportResult {
    pub export_metadata: ExportMetadata,
    pub file_metadata: FileMetadata,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExportMetadata {
    pub name: String,
    pub size: u64,
    #[serde(default)]
    pub export_hash: Option<String>,
}

// ------------------------------------------------------------------------------------------
// OAuth

/// Success body of `POST /oauth2/token` (code exchange or refresh). A refresh returns no new
/// refresh token: keep the old one. The component never receives one (the host talks to the
/// token endpoint); the type documents the wire shape and its `Debug` never shows a token.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub token_type: String,
    /// Seconds; use the value given, don't assume four hours.
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub account_id: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("scope", &self.scope)
            .field("account_id", &self.account_id)
            .finish()
    }
}

/// Error body of the token endpoint (RFC 6749, HTTP 400): `invalid_grant`, `invalid_client`, ...
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TokenErrorResponse {
    pub error: String,
    #[serde(default)]
    pub error_description: Option<String>,
}

// ------------------------------------------------------------------------------------------
// Request arguments

/// Argument of `files/list_folder` (and `get_latest_cursor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListFolderArg {
    /// `""` is the root, never `"/"`.
    pub path: String,
    pub recursive: bool,
    pub include_deleted: bool,
    pub include_mounted_folders: bool,
    pub include_non_downloadable_files: bool,
    /// 1..=2000, approximate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl ListFolderArg {
    /// The spec defaults: not recursive, no deleted entries, mounted folders and
    /// non-downloadable files included, no limit.
    pub fn new(path: impl Into<String>) -> Self {
        ListFolderArg {
            path: path.into(),
            recursive: false,
            include_deleted: false,
            include_mounted_folders: true,
            include_non_downloadable_files: true,
            limit: None,
        }
    }
}

/// Argument of `files/list_folder/continue`: only the cursor (other fields are a 400).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListFolderContinueArg {
    pub cursor: String,
}

/// Argument of `files/list_folder/longpoll`; `timeout` in 30..=480 seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LongpollArg {
    pub cursor: String,
    pub timeout: u64,
}

/// `{"path": ...}`: get_metadata, download, get_temporary_link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathArg {
    pub path: String,
}

/// Argument of `files/export`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportArg {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_format: Option<String>,
}

/// Argument of `sharing/list_shared_links`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ListSharedLinksArg {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_only: Option<bool>,
}

/// Argument of `sharing/create_shared_link_with_settings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateSharedLinkArg {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<SharedLinkSettings>,
}

/// Settings may not be empty (`settings_error/invalid_settings`): pass `None` instead.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct SharedLinkSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_visibility: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_download: Option<bool>,
}

// ------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{".tag":"file","name":"Prime_Numbers.txt","id":"id:a4ayc_80_OEAAAAAAAAAXw",
 "client_modified":"2015-05-12T15:50:38Z","server_modified":"2015-05-12T15:50:38Z",
 "rev":"a1c10ce0dd78","size":7212,
 "path_lower":"/homework/math/prime_numbers.txt","path_display":"/Homework/math/Prime_Numbers.txt",
 "sharing_info":{"read_only":true,"parent_shared_folder_id":"84528192421","modified_by":"dbid:AAH4f99T0taONIb-OurWxbNQ6ywGRopQngc"},
 "is_downloadable":true,
 "has_explicit_shared_members":false,
 "content_hash":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}"#;
    const FOLDER: &str = r#"{".tag":"folder","name":"math","id":"id:a4ayc_80_OEAAAAAAAAAXz","path_lower":"/homework/math","path_display":"/Homework/math","sharing_info":{"read_only":false,"parent_shared_folder_id":"84528192421","traverse_only":false,"no_access":false}}"#;
    const DELETED: &str = r#"{".tag":"deleted","name":"pi.txt","path_lower":"/homework/math/pi.txt","path_display":"/Homework/math/pi.txt"}"#;

    fn file() -> FileMetadata {
        match decode::<Metadata>(FILE.as_bytes()) {
            Ok(Metadata::File(f)) => f,
            other => panic!("not a file: {other:?}"),
        }
    }

    #[test]
    fn file_example_decodes() {
        let f = file();
        assert_eq!(f.name, "Prime_Numbers.txt");
        assert_eq!(f.id, "id:a4ayc_80_OEAAAAAAAAAXw");
        assert_eq!(f.size, 7212);
        assert_eq!(f.rev, "a1c10ce0dd78");
        assert_eq!(
            f.path_lower.as_deref(),
            Some("/homework/math/prime_numbers.txt")
        );
        assert!(f.is_downloadable);
        let sharing = f
            .sharing_info
            .as_ref()
            .map(|s| (s.read_only, s.parent_shared_folder_id.as_deref()));
        assert_eq!(sharing, Some((true, Some("84528192421"))));
        assert_eq!(
            f.content_hash.as_deref(),
            Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
    }

    #[test]
    fn folder_and_deleted_examples_decode() {
        let Ok(Metadata::Folder(folder)) = decode::<Metadata>(FOLDER.as_bytes()) else {
            panic!("folder");
        };
        assert_eq!(folder.id, "id:a4ayc_80_OEAAAAAAAAAXz");
        let info = folder.sharing_info.clone();
        assert_eq!(
            info.map(|i| (i.read_only, i.shared_folder_id, i.traverse_only)),
            Some((false, None, false))
        );
        let Ok(Metadata::Deleted(deleted)) = decode::<Metadata>(DELETED.as_bytes()) else {
            panic!("deleted");
        };
        assert_eq!(deleted.name, "pi.txt");
        assert_eq!(deleted.path_lower.as_deref(), Some("/homework/math/pi.txt"));
        let m = Metadata::Deleted(deleted);
        assert_eq!(m.id(), None);
        assert_eq!(m.name(), Some("pi.txt"));
    }

    #[test]
    fn list_folder_result_decodes_with_unknown_tags_and_fields() {
        let body = format!(
            r#"{{"entries":[{FILE},{FOLDER},{DELETED},{{".tag":"symlink_v9","name":"x","whatever":[1,2]}}],
               "cursor":"ZtkX9_EHj3x7PMkVuFIhwKYXEpwpLwyxp9vMKomUhllil9q7eWiAu","has_more":false,
               "new_field":{{"nested":true}}}}"#
        );
        let result: ListFolderResult = decode(body.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(result.entries.len(), 4);
        assert!(matches!(result.entries.first(), Some(Metadata::File(_))));
        assert_eq!(
            result.entries.get(3),
            Some(&Metadata::Unknown {
                tag: "symlink_v9".into()
            })
        );
        assert!(!result.has_more);
        assert_eq!(
            result.cursor,
            "ZtkX9_EHj3x7PMkVuFIhwKYXEpwpLwyxp9vMKomUhllil9q7eWiAu"
        );
    }

    #[test]
    fn missing_optionals_and_nulls_take_defaults() {
        let body =
            br#"{".tag":"file","name":"a","id":"id:1","client_modified":"2015-05-12T15:50:38Z",
            "server_modified":"2015-05-12T15:50:38Z","rev":"0123456789","size":0,
            "path_lower":null,"is_downloadable":null,"sharing_info":{"read_only":null}}"#;
        let Ok(Metadata::File(f)) = decode::<Metadata>(body) else {
            panic!("file")
        };
        assert!(f.is_downloadable);
        assert_eq!(f.path_lower, None);
        assert_eq!(f.content_hash, None);
        assert_eq!(f.export_info, None);
        assert_eq!(f.sharing_info.map(|s| s.read_only), Some(false));

        let body = br#"{".tag":"file","name":"Doc","id":"id:2","client_modified":"2015-05-12T15:50:38Z",
            "server_modified":"2015-05-12T15:50:38Z","rev":"0123456789","size":0,
            "is_downloadable":false,"export_info":{"export_as":"docx","export_options":["docx","pdf"]}}"#;
        let Ok(Metadata::File(f)) = decode::<Metadata>(body) else {
            panic!("file")
        };
        assert!(!f.is_downloadable);
        assert_eq!(
            f.export_info
                .and_then(|e| e.export_options)
                .map(|o| o.len()),
            Some(2)
        );
    }

    #[test]
    fn plain_file_metadata_ignores_a_stray_tag() {
        let plain = FILE.replacen(r#"".tag":"file","#, "", 1);
        let from_plain: FileMetadata = decode(plain.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let from_tagged: FileMetadata = decode(FILE.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(from_plain, from_tagged);
        assert_eq!(from_plain, file());
    }

    #[test]
    fn the_tag_may_come_anywhere_in_the_entry() {
        // Dropbox sends `.tag` first, and that is decoded in one pass; elsewhere, the entry is
        // buffered first. Both must give the same result, errors included.
        let tag_last = |json: &str, tag: &str| {
            let body = json.replacen(&format!(r#"".tag":"{tag}","#), "", 1);
            let open = body.trim_end().strip_suffix('}').unwrap_or(&body);
            format!("{open},\".tag\":\"{tag}\"}}")
        };
        for (json, tag) in [(FILE, "file"), (FOLDER, "folder"), (DELETED, "deleted")] {
            let moved = tag_last(json, tag);
            assert!(!moved.starts_with(r#"{".tag""#), "{moved}");
            let first = decode::<Metadata>(json.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            let last = decode::<Metadata>(moved.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(first, last);
        }
        let unknown = r#"{".tag":"symlink_v9","target":{"deep":[1,{"x":null}]}}"#;
        let unknown_last = r#"{"target":{"deep":[1,{"x":null}]},".tag":"symlink_v9"}"#;
        for body in [unknown, unknown_last] {
            assert_eq!(
                decode::<Metadata>(body.as_bytes()),
                Ok(Metadata::Unknown {
                    tag: "symlink_v9".into()
                })
            );
        }
        // A field of the wrong type is an error that names the subtype, wherever the tag is.
        let bad_size = FILE.replace(r#""size":7212"#, r#""size":"big""#);
        for body in [bad_size.clone(), tag_last(&bad_size, "file")] {
            match decode::<Metadata>(body.as_bytes()) {
                Err(DecodeError::Shape { message, .. }) => {
                    assert!(message.contains("file metadata"), "{message}")
                }
                other => panic!("{other:?}"),
            }
        }
        // A stray second `.tag` does not change the subtype.
        let twice = FOLDER.replacen(r#""name""#, r#"".tag":"file","name""#, 1);
        assert!(matches!(
            decode::<Metadata>(twice.as_bytes()),
            Ok(Metadata::Folder(_))
        ));
    }

    #[test]
    fn metadata_shape_errors() {
        assert!(matches!(
            decode::<Metadata>(br#"{"name":"x"}"#),
            Err(DecodeError::Shape { .. })
        ));
        assert!(matches!(
            decode::<Metadata>(br#"{".tag":7}"#),
            Err(DecodeError::Shape { .. })
        ));
        let missing_size = FILE.replace(r#""size":7212,"#, "");
        match decode::<Metadata>(missing_size.as_bytes()) {
            Err(DecodeError::Shape { message, .. }) => {
                assert!(message.contains("size"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode::<Metadata>(b"[1]"),
            Err(DecodeError::Shape { .. })
        ));
    }

    #[test]
    fn decode_errors_are_classified_and_short() {
        assert_eq!(decode::<ListFolderResult>(b"  \n"), Err(DecodeError::Empty));
        assert!(matches!(
            decode::<ListFolderResult>(br#"{"entries":[{"#),
            Err(DecodeError::Truncated { .. })
        ));
        let html = format!("<html>{}</html>", "x".repeat(10_000));
        match decode::<ListFolderResult>(html.as_bytes()) {
            Err(DecodeError::Malformed { excerpt, .. }) => {
                assert!(excerpt.starts_with("<html>"));
                assert!(excerpt.chars().count() < 200);
            }
            other => panic!("{other:?}"),
        }
        let long = format!(
            r#"{{"entries":[],"cursor":"c","has_more":"yes","pad":"{}"}}"#,
            "y ".repeat(5000)
        );
        match decode::<ListFolderResult>(long.as_bytes()) {
            Err(e @ DecodeError::Shape { .. }) => assert!(e.to_string().len() < 500, "{e}"),
            other => panic!("{other:?}"),
        }
        // Syntax error deep in a long single line: the excerpt is taken around it.
        let mut deep = format!(r#"{{"entries":[],"cursor":"{}","#, "c".repeat(1000)).into_bytes();
        deep.extend_from_slice(b"!!}");
        match decode::<ListFolderResult>(&deep) {
            Err(DecodeError::Malformed { excerpt, .. }) => {
                assert!(excerpt.contains("!!"), "{excerpt}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn token_bodies_are_never_excerpted() {
        let body =
            br#"{"access_token":"sl.SECRETSECRET","token_type":"bearer","expires_in":"soon"}"#;
        match decode::<TokenResponse>(body) {
            Err(e) => assert!(!e.to_string().contains("SECRET"), "{e}"),
            Ok(t) => panic!("{t:?}"),
        }
    }

    #[test]
    fn account_decodes_and_is_lenient() {
        let body = br#"{"account_id":"dbid:AAH4f99T0taONIb-OurWxbNQ6ywGRopQngc",
 "name":{"given_name":"Franz","surname":"Ferdinand","familiar_name":"Franz",
         "display_name":"Franz Ferdinand (Personal)","abbreviated_name":"FF"},
 "email":"franz@gmail.com","email_verified":false,"disabled":false,
 "country":"US","locale":"en","referral_link":"https://db.tt/ZITNuhtI","is_paired":false,
 "account_type":{".tag":"basic"},
 "profile_photo_url":"https://dl-web.dropbox.com/account_photo/get/x",
 "root_info":{".tag":"user","root_namespace_id":"3235641","home_namespace_id":"3235641"}}"#;
        let acct: FullAccount = decode(body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(acct.name.display_name, "Franz Ferdinand (Personal)");
        assert_eq!(acct.account_type.map(|t| t.tag).as_deref(), Some("basic"));
        let root = acct.root_info.unwrap_or_else(|| panic!("root_info"));
        assert_eq!(root.tag, "user");
        assert_eq!(root.root_namespace_id, root.home_namespace_id);

        let minimal = br#"{"account_id":"dbid:x","email":"a@b.c","name":{"display_name":"A"}}"#;
        let acct: FullAccount = decode(minimal).unwrap_or_else(|e| panic!("{e}"));
        assert!(!acct.email_verified);
        assert_eq!(acct.root_info, None);
        assert!(
            decode::<FullAccount>(br#"{"account_id":"dbid:x","email":"a@b.c","name":{}}"#).is_err()
        );
    }

    #[test]
    fn shared_links_decode() {
        let body = br#"{"links":[{".tag":"file","url":"https://www.dropbox.com/s/2sn712vy1ovegw8/Prime_Numbers.txt?dl=0","id":"id:a4ayc_80_OEAAAAAAAAAXw","name":"Prime_Numbers.txt","path_lower":"/homework/math/prime_numbers.txt","link_permissions":{"can_revoke":true},"client_modified":"2015-05-12T15:50:38Z","server_modified":"2015-05-12T15:50:38Z","rev":"a1c10ce0dd78","size":7212},
            {".tag":"folder","url":"https://www.dropbox.com/scl/fo/abc/x?rlkey=k&dl=0","name":"x","expires":"2030-01-01T00:00:00Z"}],"has_more":false}"#;
        let r: ListSharedLinksResult = decode(body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.links.len(), 2);
        assert_eq!(r.cursor, None);
        let tags: Vec<&str> = r.links.iter().map(|l| l.tag.as_str()).collect();
        assert_eq!(tags, ["file", "folder"]);
        assert_eq!(
            r.links.get(1).and_then(|l| l.expires.as_deref()),
            Some("2030-01-01T00:00:00Z")
        );
    }

    #[test]
    fn content_results_decode() {
        let plain = FILE.replacen(r#"".tag":"file","#, "", 1);
        let body = format!(
            r#"{{"metadata":{plain},"link":"https://ucabc123456.dl.dropboxusercontent.com/cd/0/get/t/file"}}"#
        );
        let t: TemporaryLinkResult = decode(body.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.metadata.size, 7212);
        let body = format!(
            r#"{{"export_metadata":{{"name":"a.docx","size":12,"export_hash":"ab","paper_revision":3}},"file_metadata":{plain}}}"#
        );
        let e: ExportResult = decode(body.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (e.export_metadata.name.as_str(), e.export_metadata.size),
            ("a.docx", 12)
        );

        let l: LongpollResult = decode(br#"{"changes":false}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            l,
            LongpollResult {
                changes: false,
                backoff: None
            }
        );
        let l: LongpollResult =
            decode(br#"{"changes":true,"backoff":60}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.backoff, Some(60));
        let c: LatestCursorResult =
            decode(br#"{"cursor":"abc"}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.cursor, "abc");
    }

    #[test]
    fn token_responses_decode() {
        let body = br#"{"access_token":"sl.xxxxx","token_type":"bearer","expires_in":14400,"refresh_token":"r","scope":"account_info.read files.content.read","uid":"12345","account_id":"dbid:x"}"#;
        let t: TokenResponse = decode(body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (t.expires_in, t.refresh_token.as_deref()),
            (Some(14400), Some("r"))
        );
        let t: TokenResponse =
            decode(br#"{"access_token":"sl.y","token_type":"bearer","expires_in":14400}"#)
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.refresh_token, None);
        let e: TokenErrorResponse = decode(br#"{"error":"invalid_grant","error_description":"refresh token is invalid or revoked"}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.error, "invalid_grant");
    }

    #[test]
    fn request_args_serialize_with_wire_names() {
        let json = |v: &dyn erased::Json| v.json();
        let mut arg = ListFolderArg::new("");
        arg.recursive = true;
        arg.limit = Some(2000);
        assert_eq!(
            json(&arg),
            r#"{"path":"","recursive":true,"include_deleted":false,"include_mounted_folders":true,"include_non_downloadable_files":true,"limit":2000}"#
        );
        assert!(!json(&ListFolderArg::new("/a")).contains("limit"));
        assert_eq!(
            json(&ListFolderContinueArg { cursor: "c".into() }),
            r#"{"cursor":"c"}"#
        );
        assert_eq!(
            json(&LongpollArg {
                cursor: "c".into(),
                timeout: 30
            }),
            r#"{"cursor":"c","timeout":30}"#
        );
        assert_eq!(
            json(&PathArg {
                path: "id:x".into()
            }),
            r#"{"path":"id:x"}"#
        );
        assert_eq!(
            json(&ExportArg {
                path: "/p".into(),
                export_format: None
            }),
            r#"{"path":"/p"}"#
        );
        assert_eq!(
            json(&ExportArg {
                path: "/p".into(),
                export_format: Some("html".into())
            }),
            r#"{"path":"/p","export_format":"html"}"#
        );
        assert_eq!(json(&ListSharedLinksArg::default()), "{}");
        assert_eq!(
            json(&ListSharedLinksArg {
                path: Some("/a.txt".into()),
                cursor: None,
                direct_only: Some(true)
            }),
            r#"{"path":"/a.txt","direct_only":true}"#
        );
        assert_eq!(
            json(&CreateSharedLinkArg {
                path: "/a.txt".into(),
                settings: None
            }),
            r#"{"path":"/a.txt"}"#
        );
        let settings = SharedLinkSettings {
            audience: Some("public".into()),
            access: Some("viewer".into()),
            requested_visibility: Some("public".into()),
            allow_download: None,
        };
        assert_eq!(
            json(&CreateSharedLinkArg {
                path: "/a.txt".into(),
                settings: Some(settings)
            }),
            r#"{"path":"/a.txt","settings":{"audience":"public","access":"viewer","requested_visibility":"public"}}"#
        );
    }

    /// Serializing trait objects in the test above without extra dependencies.
    mod erased {
        pub trait Json {
            fn json(&self) -> String;
        }
        impl<T: serde::Serialize> Json for T {
            fn json(&self) -> String {
                serde_json::to_string(self).unwrap_or_else(|e| panic!("{e}"))
            }
        }
    }
}
