//! The tenant's settings, read into typed values. Unknown keys are ignored (the host validates
//! keys against the manifest); a value that does not parse is an `invalid-config` error naming
//! the field, never a silent default.

use crate::api::time::parse_date;
use crate::manifest::{FieldType, keys, manifest};
use crate::model::ConnectorError;

/// What to keep of the account. The store always equals "the account, filtered": a change of
/// filters makes the next sync re-list everything and sweep what no longer matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// Lower-case extensions without the dot.
    pub include_extensions: Vec<String>,
    pub exclude_extensions: Vec<String>,
    /// Folder paths as the user wrote them, folded (`sync::filters::fold_path`) and compared
    /// with each entry's folded `path_lower`.
    pub include_paths: Vec<String>,
    pub exclude_paths: Vec<String>,
    pub modified_after: Option<i64>,
    pub modified_before: Option<i64>,
    pub created_after: Option<i64>,
    pub created_before: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    pub batch_size: usize,
    pub filters: Filters,
    pub create_preview_links: bool,
}

/// Record changes per store transaction unless the tenant says otherwise (also the manifest's
/// default): 100, the guide's. A crash repeats the page whatever the batch size (a page's
/// batches before its last store the position the page was fetched from), so the size only
/// trades the length of one transaction against the cost of committing. A whole page (2,000)
/// per commit was the default for a while, for the store's cost per commit; an independent
/// emulator measured no gain from it, and with every commit synced (the SQLite store's
/// `synchronous=FULL`) the cost of 100 is measured in BENCHMARKS.md. A tenant sets its own
/// `batch_size` (1 to 10,000).
pub const DEFAULT_BATCH_SIZE: usize = 100;

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            batch_size: DEFAULT_BATCH_SIZE,
            filters: Filters::default(),
            create_preview_links: false,
        }
    }
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        *self == Filters::default()
    }

    /// A canonical description stored with the cursor: when it differs, the filters changed.
    pub fn fingerprint(&self) -> String {
        format!(
            "ie={};ee={};ip={};ep={};ma={:?};mb={:?};ca={:?};cb={:?}",
            self.include_extensions.join(","),
            self.exclude_extensions.join(","),
            self.include_paths.join("\u{1f}"),
            self.exclude_paths.join("\u{1f}"),
            self.modified_after,
            self.modified_before,
            self.created_after,
            self.created_before
        )
    }
}

pub fn parse(settings: &[(String, String)]) -> Result<SyncConfig, ConnectorError> {
    let fields = manifest().config_fields;
    let get = |key: &str| -> Option<String> {
        settings
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim().to_string())
            .or_else(|| {
                fields
                    .iter()
                    .find(|f| f.key == key)
                    .and_then(|f| f.default_value.clone())
            })
            .filter(|v| !v.is_empty())
    };
    let invalid = |key: &str, why: String| ConnectorError::InvalidConfig(format!("{key}: {why}"));

    let batch_size = match get(keys::BATCH_SIZE) {
        None => DEFAULT_BATCH_SIZE,
        Some(v) => {
            let (min, max) = fields
                .iter()
                .find(|f| f.key == keys::BATCH_SIZE)
                .and_then(|f| match f.field_type {
                    FieldType::Integer { min, max } => Some((min, max)),
                    _ => None,
                })
                .unwrap_or((1, 10_000));
            let n: i64 = v
                .parse()
                .map_err(|_| invalid(keys::BATCH_SIZE, format!("'{v}' is not a whole number")))?;
            if n < min || n > max {
                return Err(invalid(
                    keys::BATCH_SIZE,
                    format!("{n} is not within [{min}, {max}]"),
                ));
            }
            n as usize
        }
    };
    let list = |key: &str| -> Vec<String> {
        get(key)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    let extensions = |key: &str| -> Vec<String> {
        let mut v: Vec<String> = list(key)
            .into_iter()
            .map(|e| e.trim_start_matches('.').to_lowercase())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let paths = |key: &str| -> Result<Vec<String>, ConnectorError> {
        let mut out = Vec::new();
        for p in list(key) {
            if !p.starts_with('/') {
                return Err(invalid(key, format!("'{p}' must start with '/'")));
            }
            let p = p.trim_end_matches('/');
            if p.is_empty() {
                return Err(invalid(
                    key,
                    "'/' is the whole Dropbox; leave the field empty instead".into(),
                ));
            }
            out.push(crate::sync::filters::fold_path(p));
        }
        out.sort();
        out.dedup();
        Ok(out)
    };
    let date = |key: &str| -> Result<Option<i64>, ConnectorError> {
        match get(key) {
            None => Ok(None),
            Some(v) => parse_date(&v)
                .map(Some)
                .map_err(|e| invalid(key, format!("'{v}': {e}"))),
        }
    };
    let create_preview_links = match get(keys::CREATE_PREVIEW_LINKS).as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(invalid(
                keys::CREATE_PREVIEW_LINKS,
                format!("'{other}' is not true or false"),
            ));
        }
    };
    let filters = Filters {
        include_extensions: extensions(keys::INCLUDE_EXTENSIONS),
        exclude_extensions: extensions(keys::EXCLUDE_EXTENSIONS),
        include_paths: paths(keys::INCLUDE_PATHS)?,
        exclude_paths: paths(keys::EXCLUDE_PATHS)?,
        modified_after: date(keys::MODIFIED_AFTER)?,
        modified_before: date(keys::MODIFIED_BEFORE)?,
        created_after: date(keys::CREATED_AFTER)?,
        created_before: date(keys::CREATED_BEFORE)?,
    };
    Ok(SyncConfig {
        batch_size,
        filters,
        create_preview_links,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.batch_size, 100);
        assert!(c.filters.is_empty());
        assert!(!c.create_preview_links);
        // An empty value is no value: the default again, the same as the manifest's.
        assert_eq!(parse(&s(&[("batch_size", " ")])).unwrap().batch_size, 100);
        let manifest_default = manifest()
            .config_fields
            .into_iter()
            .find(|f| f.key == keys::BATCH_SIZE)
            .and_then(|f| f.default_value);
        assert_eq!(manifest_default.as_deref(), Some("100"));
    }

    #[test]
    fn bad_values_name_the_field() {
        for (k, v) in [
            ("batch_size", "0"),
            ("batch_size", "abc"),
            ("batch_size", "10001"),
            ("modified_after", "2024-13-01"),
            ("include_paths", "docs"),
            ("create_preview_links", "yes"),
        ] {
            match parse(&s(&[(k, v)])) {
                Err(ConnectorError::InvalidConfig(m)) => assert!(m.starts_with(k), "{m}"),
                other => panic!("{k}={v}: {other:?}"),
            }
        }
    }

    #[test]
    fn lists_are_normalised() {
        let c = parse(&s(&[
            ("include_extensions", " .PDF, txt,pdf"),
            ("exclude_paths", "/Archive/, /Old"),
        ]))
        .unwrap();
        assert_eq!(c.filters.include_extensions, vec!["pdf", "txt"]);
        assert_eq!(c.filters.exclude_paths, vec!["/archive", "/old"]);
        assert_ne!(c.filters.fingerprint(), Filters::default().fingerprint());
    }
}
