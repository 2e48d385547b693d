//! The contract's types, from the guest SDK (`connector_sdk::model`), and the one thing this
//! connector adds to them: every Dropbox record has a path, so the logic reads it as plain text.

pub use connector_sdk::model::*;

/// A Dropbox record's path, as plain text. This connector writes every record with
/// `path: Some(..)` (its identity is the path's `lower` part, Dropbox's `path_lower`); a record
/// without one can only be one it never wrote, and reads here as the root (`""`), where no
/// record lives, so no lookup ever matches it.
pub trait DropboxPath {
    /// `path.lower`: Dropbox's `path_lower`, the identity of a location.
    fn path_lower_str(&self) -> &str;
    /// `path.display`: the path built from the ancestors' names.
    fn path_display_str(&self) -> &str;
    /// Replace `path.display` (a rename of an ancestor); `path.lower` is kept.
    fn set_path_display(&mut self, display: String);
}

impl DropboxPath for Record {
    fn path_lower_str(&self) -> &str {
        self.path.as_ref().map_or("", |p| p.lower.as_str())
    }

    fn path_display_str(&self) -> &str {
        self.path.as_ref().map_or("", |p| p.display.as_str())
    }

    fn set_path_display(&mut self, display: String) {
        match &mut self.path {
            Some(path) => path.display = display,
            None => {
                self.path = Some(RecordPath {
                    display,
                    lower: String::new(),
                })
            }
        }
    }
}

/// The path of a Dropbox record.
pub fn record_path(lower: &str, display: String) -> Option<RecordPath> {
    Some(RecordPath {
        display,
        lower: lower.to_string(),
    })
}
