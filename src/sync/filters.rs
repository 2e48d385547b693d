//! Which entries the tenant keeps. Folder filters apply to folders and files by path; the
//! extension and date filters apply to files. Ancestors of an included folder are kept so the
//! hierarchy above it exists.

use unicode_normalization::UnicodeNormalization;

use crate::api::time::parse_timestamp;
use crate::api::types::{FileMetadata, Metadata};
use crate::config::Filters;

/// A path as a user may type it, and a `path_lower` as Dropbox sends it, reduced to one form
/// so that they compare equal whenever they name the same item. Dropbox lower-cases paths its
/// own way, and `str::to_lowercase` differs from it in corners: the final sigma (`ς` and `σ`),
/// the dotted capital I (`İ` may become `i̇` or `i`), `ß` against `SS`, ligatures such as `ﬁ`,
/// and composed against decomposed accents. Full Unicode case folding, the dot above an `i`
/// dropped, then NFC, makes all of these meet. Identity of records still uses the server's
/// `path_lower` unchanged; this is only for matching what a person typed.
pub fn fold_path(path: &str) -> String {
    let folded = caseless::default_case_fold_str(path);
    let mut out = String::with_capacity(folded.len());
    let mut previous = '\0';
    for c in folded.nfd() {
        if c == '\u{307}' && previous == 'i' {
            continue;
        }
        out.push(c);
        previous = c;
    }
    out.nfc().collect()
}

fn under(path_lower: &str, folder: &str) -> bool {
    path_lower == folder
        || (path_lower.starts_with(folder)
            && path_lower.as_bytes().get(folder.len()) == Some(&b'/'))
}

impl Filters {
    fn path_allowed(&self, path_lower: &str, is_folder: bool) -> bool {
        if self.include_paths.is_empty() && self.exclude_paths.is_empty() {
            return true;
        }
        let folded = fold_path(path_lower);
        let path_lower = folded.as_str();
        if self.exclude_paths.iter().any(|p| under(path_lower, p)) {
            return false;
        }
        if self.include_paths.is_empty() {
            return true;
        }
        self.include_paths
            .iter()
            .any(|p| under(path_lower, p) || (is_folder && under(p, path_lower)))
    }

    fn file_allowed(&self, meta: &FileMetadata) -> bool {
        let ext = meta
            .name
            .rsplit_once('.')
            .map(|(_, e)| e.to_lowercase())
            .unwrap_or_default();
        if !self.include_extensions.is_empty() && !self.include_extensions.contains(&ext) {
            return false;
        }
        if self.exclude_extensions.contains(&ext) {
            return false;
        }
        let in_range = |value: &str, after: Option<i64>, before: Option<i64>| -> bool {
            if after.is_none() && before.is_none() {
                return true;
            }
            // An unreadable timestamp cannot be shown to match a date filter.
            let Ok(t) = parse_timestamp(value) else {
                return false;
            };
            after.is_none_or(|a| t >= a) && before.is_none_or(|b| t < b)
        };
        in_range(
            &meta.server_modified,
            self.modified_after,
            self.modified_before,
        ) && in_range(
            &meta.client_modified,
            self.created_after,
            self.created_before,
        )
    }

    /// Whether a file or folder entry is kept.
    pub fn matches(&self, entry: &Metadata, path_lower: &str) -> bool {
        match entry {
            Metadata::File(f) => self.path_allowed(path_lower, false) && self.file_allowed(f),
            Metadata::Folder(_) => self.path_allowed(path_lower, true),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::FolderMetadata;

    fn file(name: &str, modified: &str) -> Metadata {
        Metadata::File(FileMetadata {
            name: name.into(),
            id: "id:x".into(),
            path_lower: None,
            path_display: None,
            client_modified: modified.into(),
            server_modified: modified.into(),
            rev: "0123456789".into(),
            size: 1,
            content_hash: None,
            is_downloadable: true,
            export_info: None,
            sharing_info: None,
        })
    }

    fn folder() -> Metadata {
        Metadata::Folder(FolderMetadata {
            name: "f".into(),
            id: "id:f".into(),
            path_lower: None,
            path_display: None,
            sharing_info: None,
        })
    }

    #[test]
    fn typed_paths_meet_dropbox_lower_casing() {
        // (what a person types, what Dropbox may send as path_lower)
        let pairs = [
            ("/ΟΔΟΣ/Φάκελος", "/οδοσ/φάκελος"),
            ("/ΟΔΟΣ", "/οδος"),
            ("/İstanbul", "/istanbul"),
            ("/İstanbul", "/i\u{307}stanbul"),
            ("/STRASSE", "/straße"),
            ("/Straße", "/strasse"),
            ("/ﬁles", "/files"),
            ("/Cafe\u{301}", "/café"),
            ("/ÅNGSTRÖM", "/ångström"),
        ];
        for (typed, server) in pairs {
            assert_eq!(fold_path(typed), fold_path(server), "{typed} vs {server}");
        }
        assert_ne!(fold_path("/a"), fold_path("/b"));
        // The config keeps typed paths folded, and entries are folded before comparing.
        let f = crate::config::parse(&[("exclude_paths".into(), "/ΟΔΟΣ, /STRASSE".into())])
            .expect("valid");
        assert!(!f.filters.matches(&folder(), "/οδος"));
        assert!(!f.filters.matches(&folder(), "/straße/x"));
        assert!(f.filters.matches(&folder(), "/other"));
    }

    #[test]
    fn paths_extensions_dates() {
        let f = Filters {
            include_paths: vec!["/docs/work".into()],
            exclude_paths: vec!["/docs/work/old".into()],
            include_extensions: vec!["pdf".into()],
            modified_after: Some(1_600_000_000),
            ..Filters::default()
        };
        assert!(
            f.matches(&folder(), "/docs"),
            "ancestor of an included folder"
        );
        assert!(f.matches(&folder(), "/docs/work/x"));
        assert!(!f.matches(&folder(), "/docs/workshop"));
        assert!(!f.matches(&folder(), "/docs/work/old"));
        assert!(f.matches(&file("a.PDF", "2021-01-01T00:00:00Z"), "/docs/work/a.pdf"));
        assert!(
            !f.matches(&file("a.pdf", "2021-01-01T00:00:00Z"), "/docs/a.pdf"),
            "file outside the included folder"
        );
        assert!(!f.matches(&file("a.txt", "2021-01-01T00:00:00Z"), "/docs/work/a.txt"));
        assert!(!f.matches(&file("a.pdf", "2019-01-01T00:00:00Z"), "/docs/work/a.pdf"));
        assert!(!f.matches(&file("a.pdf", "garbage"), "/docs/work/a.pdf"));
        assert!(Filters::default().matches(&file("a.pdf", "garbage"), "/a.pdf"));
    }
}
