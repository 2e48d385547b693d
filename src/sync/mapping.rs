//! From Dropbox metadata to a record: MIME type from the extension, the display path built
//! from names (Dropbox's `path_display` casing of ancestors is unreliable), a web URL derived
//! from the path (no API call, no change to the user's Dropbox).

use crate::api::types::{FileMetadata, FolderMetadata};
use crate::model::{Record, RecordKind, RecordPath};
use crate::sync::hashing::PageMap;

pub const FOLDER_MIME: &str = "inode/directory";
const WEB_HOME: &str = "https://www.dropbox.com/home";

/// The parent folder's `path_lower` (`None` for items at the root).
pub fn parent_path(path_lower: &str) -> Option<&str> {
    match path_lower.rfind('/') {
        Some(0) | None => None,
        Some(i) => Some(&path_lower[..i]),
    }
}

/// The display path of a child named `name` inside a folder shown as `parent_display`.
pub fn child_display(parent_display: Option<&str>, name: &str, fallback: Option<&str>) -> String {
    let folder = match parent_display {
        Some(parent) => parent,
        // The parent is not known: keep Dropbox's own path but trust `name` for the last part.
        None => fallback
            .and_then(|path| path.rfind('/').map(|i| &path[..i]))
            .unwrap_or(""),
    };
    let mut display = String::with_capacity(folder.len() + 1 + name.len());
    display.push_str(folder);
    display.push('/');
    display.push_str(name);
    display
}

/// The extension of a file name, as `Path::extension` finds it: after the last dot, unless
/// that dot starts the name. A name (which holds no '/') is taken as it is, without parsing
/// it as a path (a sixtieth of a full sync's guest time went to that parsing).
fn extension(name: &str) -> Option<&str> {
    if name.contains('/') || name == ".." {
        return std::path::Path::new(name)
            .extension()
            .and_then(std::ffi::OsStr::to_str);
    }
    match name.rfind('.') {
        Some(i) if i > 0 => Some(&name[i + 1..]),
        _ => None,
    }
}

pub fn mime_for_name(name: &str) -> String {
    extension(name)
        .and_then(|ext| mime_guess::from_ext(ext).first_raw())
        .unwrap_or("application/octet-stream")
        .to_string()
}

/// What an exported document is delivered as.
pub fn mime_for_export(format: &str) -> String {
    match format.to_ascii_lowercase().as_str() {
        "markdown" | "md" => "text/markdown".into(),
        "html" => "text/html".into(),
        "txt" | "text" => "text/plain".into(),
        other => mime_guess::from_ext(other)
            .first_raw()
            .unwrap_or("application/octet-stream")
            .to_string(),
    }
}

/// The bytes a URL path segment keeps as they are (RFC 3986 unreserved), by value.
const UNRESERVED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~');
        b += 1;
    }
    table
};

/// Percent-encode one path segment for a URL (RFC 3986 unreserved characters kept). Runs of
/// unreserved characters are copied whole: a guest profile showed web URLs at a sixth of the
/// planning time when every byte was pushed on its own (and a `format!` per encoded byte).
fn encode_segment(segment: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut run_start = 0;
    for (i, byte) in segment.bytes().enumerate() {
        if UNRESERVED[usize::from(byte)] {
            continue;
        }
        // A non-empty run is ASCII, so both its ends are character boundaries.
        if let Some(run) = segment.get(run_start..i).filter(|r| !r.is_empty()) {
            out.push_str(run);
        }
        out.push('%');
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        run_start = i + 1;
    }
    if let Some(run) = segment.get(run_start..).filter(|r| !r.is_empty()) {
        out.push_str(run);
    }
}

fn encode_path(path: &str, out: &mut String) {
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        encode_segment(segment, out);
    }
}

/// Opens the item in Dropbox's web interface for its owner: a folder is browsed, a file is
/// previewed inside its folder.
pub fn web_url(kind: RecordKind, path_display: &str) -> String {
    let (folder, name) = split_display(path_display);
    let mut url = String::with_capacity(WEB_HOME.len() + path_display.len() * 5 / 4 + 16);
    url.push_str(WEB_HOME);
    encode_path(folder, &mut url);
    push_item(kind, name, &mut url);
    url
}

/// A display path as the folder that holds the item and the item's name ("" for the folder
/// of an item at the root).
fn split_display(path_display: &str) -> (&str, &str) {
    match path_display.rfind('/') {
        Some(i) => (&path_display[..i], &path_display[i + 1..]),
        None => ("", path_display),
    }
}

/// What follows the encoded path of its folder in an item's web URL: a folder is browsed, so
/// its name is one more segment (an empty name is none, as in `encode_path`); a file is
/// previewed inside its folder.
fn push_item(kind: RecordKind, name: &str, url: &mut String) {
    match kind {
        RecordKind::Folder => {
            if !name.is_empty() {
                url.push('/');
                encode_segment(name, url);
            }
        }
        RecordKind::File | RecordKind::Item => {
            url.push_str("?preview=");
            encode_segment(name, url);
        }
    }
}

/// Web URLs of one page's records: `web_url`'s, with each folder's part encoded once. A page
/// lists a folder's items together, so most of its records share their folder with others,
/// and encoding every record's whole path was a seventh of a full sync's guest time. The part
/// is keyed by the folder's display path, so a URL is the one `web_url` makes.
#[derive(Default)]
pub struct WebUrls {
    /// Display path of a folder -> `WEB_HOME` and its encoded path.
    folders: PageMap<String, String>,
}

impl WebUrls {
    /// More folders than a page can name are not kept.
    const MAX_FOLDERS: usize = 4096;

    pub fn url(&mut self, kind: RecordKind, path_display: &str) -> String {
        let (folder, name) = split_display(path_display);
        if self.folders.len() >= Self::MAX_FOLDERS {
            self.folders.clear();
        }
        let base = match self.folders.get(folder) {
            Some(base) => base,
            None => {
                let mut base = String::with_capacity(WEB_HOME.len() + folder.len() * 5 / 4);
                base.push_str(WEB_HOME);
                encode_path(folder, &mut base);
                self.folders.entry(folder.to_string()).or_insert(base)
            }
        };
        let mut url = String::with_capacity(base.len() + name.len() * 5 / 4 + 16);
        url.push_str(base);
        push_item(kind, name, &mut url);
        url
    }
}

/// The record of a file entry. The entry is taken, not borrowed: its strings become the
/// record's (a profile of a full sync found a twentieth of the guest's time in copying and
/// freeing them).
pub fn file_record(
    meta: FileMetadata,
    path_lower: String,
    path_display: String,
    parent: Option<String>,
    urls: &mut WebUrls,
) -> Record {
    let export_format = if meta.is_downloadable {
        None
    } else {
        meta.export_info.and_then(|e| {
            e.export_as
                .or_else(|| e.export_options.and_then(|o| o.into_iter().next()))
        })
    };
    let mime_type = match &export_format {
        Some(format) => mime_for_export(format),
        None => mime_for_name(&meta.name),
    };
    Record {
        external_id: meta.id,
        revision: Some(meta.rev),
        name: meta.name,
        web_url: Some(urls.url(RecordKind::File, &path_display)),
        path: Some(RecordPath {
            display: path_display,
            lower: path_lower,
        }),
        parent_external_id: parent,
        kind: RecordKind::File,
        mime_type,
        size: meta.size,
        content_hash: meta.content_hash,
        client_modified: Some(meta.client_modified),
        server_modified: Some(meta.server_modified),
        is_downloadable: meta.is_downloadable,
        export_format,
        is_shared: false,
        shared_url: None,
    }
}

/// The record of a folder entry (taken, as in `file_record`).
pub fn folder_record(
    meta: FolderMetadata,
    path_lower: String,
    path_display: String,
    parent: Option<String>,
    urls: &mut WebUrls,
) -> Record {
    Record {
        external_id: meta.id,
        revision: None,
        name: meta.name,
        web_url: Some(urls.url(RecordKind::Folder, &path_display)),
        path: Some(RecordPath {
            display: path_display,
            lower: path_lower,
        }),
        parent_external_id: parent,
        kind: RecordKind::Folder,
        mime_type: FOLDER_MIME.into(),
        size: 0,
        content_hash: None,
        // Dropbox keeps no times for folders; inventing "now" would be a lie.
        client_modified: None,
        server_modified: None,
        is_downloadable: true,
        export_format: None,
        is_shared: false,
        shared_url: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_and_display_paths() {
        assert_eq!(parent_path("/a"), None);
        assert_eq!(parent_path("/a/b c/d"), Some("/a/b c"));
        assert_eq!(
            child_display(Some("/Docs/Work"), "Résumé.PDF", None),
            "/Docs/Work/Résumé.PDF"
        );
        assert_eq!(
            child_display(None, "X.txt", Some("/docs/x.txt")),
            "/docs/X.txt"
        );
    }

    /// A web URL by its definition: the whole path of a folder encoded, or a file's folder
    /// encoded and its name as the preview (independent of `split_display` and `push_item`).
    fn reference_url(kind: RecordKind, path_display: &str) -> String {
        let mut url = WEB_HOME.to_string();
        match kind {
            RecordKind::Folder => encode_path(path_display, &mut url),
            RecordKind::File | RecordKind::Item => {
                let (dir, name) = path_display.rsplit_once('/').unwrap_or(("", path_display));
                encode_path(dir, &mut url);
                url.push_str("?preview=");
                encode_segment(name, &mut url);
            }
        }
        url
    }

    #[test]
    fn a_pages_web_urls_are_web_url_s() {
        // Paths that share folders, at the root, with empty segments, odd characters.
        let names = [
            "a",
            "B c",
            "é",
            "日本語.md",
            "x&y?z",
            "",
            ".hidden",
            "😀 ~-_.",
            "%41",
        ];
        let mut urls = WebUrls::default();
        let mut seen = 0;
        for depth in 0..4 {
            for (i, name) in names.iter().enumerate() {
                let folder: String = names
                    .iter()
                    .cycle()
                    .skip(i)
                    .take(depth)
                    .map(|n| format!("/{n}"))
                    .collect();
                for path in [
                    format!("{folder}/{name}"),
                    name.to_string(),
                    format!("{folder}//{name}"),
                ] {
                    for kind in [RecordKind::File, RecordKind::Folder, RecordKind::Item] {
                        let expected = reference_url(kind, &path);
                        assert_eq!(urls.url(kind, &path), expected, "{kind:?} {path:?}");
                        assert_eq!(web_url(kind, &path), expected, "{kind:?} {path:?}");
                        seen += 1;
                    }
                }
            }
        }
        assert!(urls.folders.len() > 1 && seen > 100);
    }

    #[test]
    fn extensions_are_paths_extensions() {
        for name in [
            "a.txt",
            "A.PDF",
            "noext",
            ".bashrc",
            "..",
            ".",
            "",
            "a.",
            "a..b",
            "x.tar.gz",
            "..x",
            "é.日本",
            "a/b.c",
            "a.b/",
            "dir/.hidden",
            "😀.jpg",
        ] {
            let by_path = std::path::Path::new(name)
                .extension()
                .and_then(std::ffi::OsStr::to_str);
            assert_eq!(extension(name), by_path, "{name:?}");
            assert_eq!(
                mime_for_name(name),
                mime_guess::from_path(name)
                    .first_raw()
                    .unwrap_or("application/octet-stream"),
                "{name:?}"
            );
        }
    }

    #[test]
    fn web_urls_are_encoded() {
        assert_eq!(
            web_url(RecordKind::Folder, "/My Docs/Ünï"),
            "https://www.dropbox.com/home/My%20Docs/%C3%9Cn%C3%AF"
        );
        assert_eq!(
            web_url(RecordKind::File, "/a b/c&d 😀.txt"),
            "https://www.dropbox.com/home/a%20b?preview=c%26d%20%F0%9F%98%80.txt"
        );
        assert_eq!(
            web_url(RecordKind::File, "/top.txt"),
            "https://www.dropbox.com/home?preview=top.txt"
        );
        // Runs of unreserved characters between and after multi-byte characters.
        assert_eq!(
            web_url(RecordKind::Folder, "/ab/é/xé/éy/ü~z/日本語.md"),
            "https://www.dropbox.com/home/ab/%C3%A9/x%C3%A9/%C3%A9y/%C3%BC~z/%E6%97%A5%E6%9C%AC%E8%AA%9E.md"
        );
    }

    #[test]
    fn mime_types() {
        assert_eq!(mime_for_name("report.PDF"), "application/pdf");
        assert_eq!(mime_for_name("noext"), "application/octet-stream");
        assert_eq!(mime_for_export("markdown"), "text/markdown");
    }
}
