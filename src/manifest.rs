//! The connector's self-description: what a platform needs to connect an account (OAuth),
//! which hosts the sandbox must allow, the configuration fields with their bounds, and the
//! schedules it supports. The sync strategy and interval are the host's tenant settings
//! (validated against `schedule`), not configuration fields of this connector.

pub use crate::model::{ConfigField, FieldType, Manifest, OAuthConfig, Schedule, SyncStrategy};

pub const API_BASE: &str = "https://api.dropboxapi.com";
pub const CONTENT_BASE: &str = "https://content.dropboxapi.com";
pub const NOTIFY_BASE: &str = "https://notify.dropboxapi.com";

pub const SCOPES: [&str; 5] = [
    "account_info.read",
    "files.content.read",
    "files.metadata.read",
    "sharing.read",
    "sharing.write",
];

/// The schedule Dropbox supports: `change-notifications` is `wait-for-changes` (Dropbox's
/// long poll, `files/list_folder/longpoll`). The interval bounds are the ones the tenant
/// setting had when the connector still owned it (a minute to a week).
pub const SCHEDULE_DEFAULT_INTERVAL_MINUTES: u32 = 60;
pub const SCHEDULE_MIN_INTERVAL_MINUTES: u32 = 1;
pub const SCHEDULE_MAX_INTERVAL_MINUTES: u32 = 10_080;

pub mod keys {
    pub const BATCH_SIZE: &str = "batch_size";
    pub const INCLUDE_EXTENSIONS: &str = "include_extensions";
    pub const EXCLUDE_EXTENSIONS: &str = "exclude_extensions";
    pub const INCLUDE_PATHS: &str = "include_paths";
    pub const EXCLUDE_PATHS: &str = "exclude_paths";
    pub const MODIFIED_AFTER: &str = "modified_after";
    pub const MODIFIED_BEFORE: &str = "modified_before";
    pub const CREATED_AFTER: &str = "created_after";
    pub const CREATED_BEFORE: &str = "created_before";
    pub const CREATE_PREVIEW_LINKS: &str = "create_preview_links";
}

fn field(
    key: &str,
    label: &str,
    description: &str,
    field_type: FieldType,
    default: Option<&str>,
) -> ConfigField {
    ConfigField {
        key: key.into(),
        label: label.into(),
        description: description.into(),
        field_type,
        default_value: default.map(String::from),
    }
}

pub fn manifest() -> Manifest {
    use keys::*;
    Manifest {
        name: "dropbox-personal".into(),
        display_name: "Dropbox Personal".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        app_group: "Dropbox".into(),
        description: "Syncs the files and folders of one person's Dropbox account, in full and then incrementally through Dropbox's change cursor, and reads any file's content on demand.".into(),
        oauth: Some(OAuthConfig {
            authorize_url: "https://www.dropbox.com/oauth2/authorize".into(),
            token_url: format!("{API_BASE}/oauth2/token"),
            revoke_url: Some(format!("{API_BASE}/2/auth/token/revoke")),
            scopes: SCOPES.iter().map(|s| s.to_string()).collect(),
            extra_authorize_params: vec![("token_access_type".into(), "offline".into())],
            pkce_required: true,
            redirect_path: "connectors/oauth/callback/Dropbox%20Personal".into(),
        }),
        allowed_hosts: vec!["api.dropboxapi.com".into(), "content.dropboxapi.com".into(), "notify.dropboxapi.com".into()],
        config_fields: vec![
            field(BATCH_SIZE, "Batch size", "Record changes written per store transaction.", FieldType::Integer { min: 1, max: 10_000 }, Some(&crate::config::DEFAULT_BATCH_SIZE.to_string())),
            field(INCLUDE_EXTENSIONS, "Include file extensions", "Only files with these extensions (comma-separated, without dots); empty for all.", FieldType::TextList, Some("")),
            field(EXCLUDE_EXTENSIONS, "Exclude file extensions", "Files with these extensions are skipped (comma-separated, without dots).", FieldType::TextList, Some("")),
            field(INCLUDE_PATHS, "Include folders", "Only these folders and what is inside them (comma-separated paths); empty for the whole Dropbox.", FieldType::TextList, Some("")),
            field(EXCLUDE_PATHS, "Exclude folders", "These folders and what is inside them are skipped (comma-separated paths).", FieldType::TextList, Some("")),
            field(MODIFIED_AFTER, "Modified on or after", "Only files Dropbox last modified on or after this date.", FieldType::Date, None),
            field(MODIFIED_BEFORE, "Modified before", "Only files Dropbox last modified before this date.", FieldType::Date, None),
            field(CREATED_AFTER, "Created on or after", "Only files whose client modification time (the closest Dropbox has to a creation time) is on or after this date.", FieldType::Date, None),
            field(CREATED_BEFORE, "Created before", "Only files whose client modification time is before this date.", FieldType::Date, None),
            field(CREATE_PREVIEW_LINKS, "Create preview links", "Create a shared link for files that have none. Off by default: it changes the user's Dropbox.", FieldType::Boolean, Some("false")),
        ],
        schedule: Schedule {
            strategies: vec![SyncStrategy::Manual, SyncStrategy::Scheduled, SyncStrategy::ChangeNotifications],
            default_strategy: SyncStrategy::ChangeNotifications,
            default_interval_minutes: SCHEDULE_DEFAULT_INTERVAL_MINUTES,
            min_interval_minutes: SCHEDULE_MIN_INTERVAL_MINUTES,
            max_interval_minutes: SCHEDULE_MAX_INTERVAL_MINUTES,
        },
    }
}
