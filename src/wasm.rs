//! The thin adapter between the WIT world and the connector's logic: the `ports` traits over
//! the imported interfaces, conversions between the generated types and `model`, and the
//! exported operations. Nothing here decides anything.

use std::time::Duration;

use crate::model;
use crate::operations::{self, Ports};
use crate::ports::{self, HttpRequest, HttpResponse, Level};

wit_bindgen::generate!({
    world: "source-connector",
    path: "wit",
});

use exports::pipeshub::connector::connector as wit_connector;
use pipeshub::connector::{content_sink, credentials, host, http, manifest_types, records, types};

struct Component;

export!(Component);

// ---- ports over the imports ----

struct WasmHttp;

impl ports::Http for WasmHttp {
    fn send(&mut self, r: HttpRequest) -> Result<HttpResponse, ports::HttpError> {
        let request = http::Request {
            method: match r.method {
                ports::Method::Get => http::Method::Get,
                ports::Method::Post => http::Method::Post,
            },
            url: r.url,
            headers: r.headers,
            body: r.body,
            authenticated: r.authenticated,
            timeout_ms: r.timeout_ms,
        };
        match http::send(&request) {
            Ok(resp) => Ok(HttpResponse {
                status: resp.status,
                headers: resp.headers,
                body: resp.body,
            }),
            Err(e) => Err(match e {
                http::HttpError::DestinationNotAllowed(m) => {
                    ports::HttpError::DestinationNotAllowed(m)
                }
                http::HttpError::Timeout(m) => ports::HttpError::Timeout(m),
                http::HttpError::Connection(m) => ports::HttpError::Connection(m),
                http::HttpError::BodyTooLarge(n) => ports::HttpError::BodyTooLarge(n),
                http::HttpError::InvalidRequest(m) => ports::HttpError::InvalidRequest(m),
                http::HttpError::NoCredentials(m) => ports::HttpError::NoCredentials(m),
            }),
        }
    }
}

struct WasmCredentials;

impl ports::Credentials for WasmCredentials {
    fn refresh_access_token(&mut self) -> Result<(), ports::RefreshError> {
        credentials::refresh_access_token().map_err(|e| match e {
            credentials::RefreshError::ReauthenticationRequired(m) => {
                ports::RefreshError::ReauthenticationRequired(m)
            }
            credentials::RefreshError::Transient(m) => ports::RefreshError::Transient(m),
        })
    }
}

struct WasmHost {
    counter: u64,
}

impl ports::HostEnv for WasmHost {
    fn log(&mut self, level: Level, message: &str) {
        let level = match level {
            Level::Debug => host::Level::Debug,
            Level::Info => host::Level::Info,
            Level::Warn => host::Level::Warn,
            Level::Error => host::Level::Error,
        };
        host::log(level, message);
    }

    fn progress(&mut self, phase: &str, pages: u32, entries: u64, total: Option<u64>) {
        host::report_progress(&host::Progress {
            phase: phase.to_string(),
            pages,
            entries,
            total,
        });
    }

    fn config(&mut self) -> Vec<(String, String)> {
        host::config()
            .into_iter()
            .map(|s| (s.key, s.value))
            .collect()
    }

    fn should_stop(&mut self) -> bool {
        host::should_stop()
    }

    fn sleep(&mut self, duration: Duration) {
        host::sleep(duration.as_millis().min(u128::from(u64::MAX)) as u64);
    }

    fn now(&mut self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    fn random(&mut self) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from WASI's random source.
        self.counter = self.counter.wrapping_add(1);
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(self.counter);
        h.finish()
    }
}

struct WasmStore;

fn store_err(e: records::StoreError) -> ports::StoreError {
    match e {
        records::StoreError::Conflict(m) => ports::StoreError::Conflict(m),
        records::StoreError::Storage(m) => ports::StoreError::Storage(m),
        records::StoreError::Invalid(m) => ports::StoreError::Invalid(m),
    }
}

impl ports::Store for WasmStore {
    fn apply(
        &mut self,
        changes: Vec<model::Change>,
        sync_point: Option<model::SyncPoint>,
    ) -> Result<model::ApplySummary, ports::StoreError> {
        let changes: Vec<records::Change> = changes.into_iter().map(change_to_wit).collect();
        let sync_point = sync_point.map(|p| records::SyncPoint {
            key: p.key,
            value: p.value,
        });
        records::apply(&changes, sync_point.as_ref())
            .map(|s| model::ApplySummary {
                created: s.created,
                content_updates: s.content_updates,
                metadata_updates: s.metadata_updates,
                deletions: s.deletions,
            })
            .map_err(store_err)
    }

    fn get_sync_point(&mut self, key: &str) -> Result<Option<String>, ports::StoreError> {
        records::get_sync_point(key).map_err(store_err)
    }

    fn get_records(
        &mut self,
        ids: Vec<String>,
    ) -> Result<Vec<model::StoredRecord>, ports::StoreError> {
        records::get_records(&ids)
            .map(|v| {
                v.into_iter()
                    .map(|s| model::StoredRecord {
                        record: record_from_wit(s.record),
                        pending_removal: s.pending_removal,
                    })
                    .collect()
            })
            .map_err(store_err)
    }

    fn find_by_paths(
        &mut self,
        paths: Vec<String>,
    ) -> Result<Vec<Option<model::Record>>, ports::StoreError> {
        records::find_by_paths(&paths)
            .map(|v| v.into_iter().map(|r| r.map(record_from_wit)).collect())
            .map_err(store_err)
    }

    fn list_shared(&mut self) -> Result<Vec<model::Record>, ports::StoreError> {
        records::list_shared()
            .map(|v| v.into_iter().map(record_from_wit).collect())
            .map_err(store_err)
    }

    fn list_subtree(
        &mut self,
        path_lower: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<model::Record>, ports::StoreError> {
        records::list_subtree(path_lower, after, limit)
            .map(|v| v.into_iter().map(record_from_wit).collect())
            .map_err(store_err)
    }

    fn put_owner(
        &mut self,
        owner: model::User,
        group: model::RecordGroup,
        permissions: Vec<model::Permission>,
    ) -> Result<(), ports::StoreError> {
        let owner = types::User {
            external_id: owner.external_id,
            email: owner.email,
            display_name: owner.display_name,
        };
        let group = types::RecordGroup {
            external_id: group.external_id,
            name: group.name,
            kind: match group.kind {
                model::GroupKind::Drive => types::GroupKind::Drive,
                model::GroupKind::Folder => types::GroupKind::Folder,
                model::GroupKind::Other => types::GroupKind::Other,
            },
        };
        let permissions: Vec<types::Permission> = permissions
            .into_iter()
            .map(|p| types::Permission {
                principal_external_id: p.principal_external_id,
                role: match p.role {
                    model::Role::Owner => types::Role::Owner,
                    model::Role::Writer => types::Role::Writer,
                    model::Role::Commenter => types::Role::Commenter,
                    model::Role::Reader => types::Role::Reader,
                },
            })
            .collect();
        records::put_owner(&owner, &group, &permissions).map_err(store_err)
    }

    fn clear(&mut self) -> Result<(), ports::StoreError> {
        records::clear().map_err(store_err)
    }
}

struct WasmSink;

impl ports::Sink for WasmSink {
    fn write(&mut self, chunk: &[u8]) -> Result<(), ports::SinkError> {
        content_sink::write(chunk).map_err(|e| match e {
            content_sink::SinkError::Closed(m) => ports::SinkError::Closed(m),
            content_sink::SinkError::Storage(m) => ports::SinkError::Storage(m),
        })
    }
}

// ---- conversions ----

fn record_to_wit(r: model::Record) -> types::Record {
    types::Record {
        external_id: r.external_id,
        revision: r.revision,
        name: r.name,
        path_display: r.path_display,
        path_lower: r.path_lower,
        parent_external_id: r.parent_external_id,
        kind: match r.kind {
            model::RecordKind::File => types::RecordKind::File,
            model::RecordKind::Folder => types::RecordKind::Folder,
        },
        mime_type: r.mime_type,
        size: r.size,
        content_hash: r.content_hash,
        client_modified: r.client_modified,
        server_modified: r.server_modified,
        is_downloadable: r.is_downloadable,
        export_format: r.export_format,
        web_url: r.web_url,
        is_shared: r.is_shared,
        shared_url: r.shared_url,
    }
}

fn record_from_wit(r: types::Record) -> model::Record {
    model::Record {
        external_id: r.external_id,
        revision: r.revision,
        name: r.name,
        path_display: r.path_display,
        path_lower: r.path_lower,
        parent_external_id: r.parent_external_id,
        kind: match r.kind {
            types::RecordKind::File => model::RecordKind::File,
            types::RecordKind::Folder => model::RecordKind::Folder,
        },
        mime_type: r.mime_type,
        size: r.size,
        content_hash: r.content_hash,
        client_modified: r.client_modified,
        server_modified: r.server_modified,
        is_downloadable: r.is_downloadable,
        export_format: r.export_format,
        web_url: r.web_url,
        is_shared: r.is_shared,
        shared_url: r.shared_url,
    }
}

fn change_to_wit(c: model::Change) -> records::Change {
    match c {
        model::Change::Upsert { record, event } => records::Change::Upsert(records::Upsert {
            record: record_to_wit(record),
            event: match event {
                model::ChangeKind::Created => records::ChangeKind::Created,
                model::ChangeKind::Content => records::ChangeKind::Content,
                model::ChangeKind::Metadata => records::ChangeKind::Metadata,
                model::ChangeKind::ContentAndMetadata => records::ChangeKind::ContentAndMetadata,
                model::ChangeKind::Unchanged => records::ChangeKind::Unchanged,
            },
        }),
        model::Change::Replace {
            path_lower,
            new_external_id,
            keep_children,
        } => records::Change::Replace(records::Replacement {
            path_lower,
            new_external_id,
            keep_children,
        }),
        model::Change::RemoveSubtree(p) => records::Change::RemoveSubtree(p),
        model::Change::MarkAllPending => records::Change::MarkAllPending,
        model::Change::Purge => records::Change::Purge,
    }
}

fn error_to_wit(e: model::ConnectorError) -> types::ConnectorError {
    use model::ConnectorError as E;
    match e {
        E::AuthRequired(m) => types::ConnectorError::AuthRequired(m),
        E::RateLimited {
            retry_after_ms,
            reason,
        } => types::ConnectorError::RateLimited(types::RateLimit {
            retry_after_ms,
            reason,
        }),
        E::NotFound(m) => types::ConnectorError::NotFound(m),
        E::InvalidConfig(m) => types::ConnectorError::InvalidConfig(m),
        E::Transient(m) => types::ConnectorError::Transient(m),
        E::Integrity(m) => types::ConnectorError::Integrity(m),
        E::Internal(m) => types::ConnectorError::Internal(m),
    }
}

fn with_ports<T>(
    f: impl FnOnce(&mut Ports<'_>) -> Result<T, model::ConnectorError>,
) -> Result<T, types::ConnectorError> {
    let (mut http, mut creds, mut host, mut store) = (
        WasmHttp,
        WasmCredentials,
        WasmHost { counter: 0 },
        WasmStore,
    );
    let mut ports = Ports {
        http: &mut http,
        credentials: &mut creds,
        host: &mut host,
        store: &mut store,
    };
    f(&mut ports).map_err(error_to_wit)
}

fn summary_to_wit(s: model::SyncSummary) -> wit_connector::SyncSummary {
    wit_connector::SyncSummary {
        kind: match s.kind {
            model::SyncKind::Full => wit_connector::SyncKind::Full,
            model::SyncKind::Incremental => wit_connector::SyncKind::Incremental,
            model::SyncKind::Resync => wit_connector::SyncKind::Resync,
        },
        pages: s.pages,
        entries: s.entries,
        created: s.applied.created,
        content_updates: s.applied.content_updates,
        metadata_updates: s.applied.metadata_updates,
        deletions: s.applied.deletions,
        api_calls: s.api_calls,
        interrupted: s.interrupted,
    }
}

fn manifest_to_wit(m: crate::manifest::Manifest) -> manifest_types::ConnectorManifest {
    use crate::manifest::FieldType;
    manifest_types::ConnectorManifest {
        name: m.name,
        display_name: m.display_name,
        version: m.version,
        app_group: m.app_group,
        description: m.description,
        oauth: manifest_types::OauthConfig {
            authorize_url: m.oauth.authorize_url,
            token_url: m.oauth.token_url,
            revoke_url: m.oauth.revoke_url,
            scopes: m.oauth.scopes,
            extra_authorize_params: m.oauth.extra_authorize_params,
            pkce_required: m.oauth.pkce_required,
            redirect_path: m.oauth.redirect_path,
        },
        allowed_hosts: m.allowed_hosts,
        config_fields: m
            .config_fields
            .into_iter()
            .map(|f| manifest_types::ConfigField {
                key: f.key,
                label: f.label,
                description: f.description,
                field_type: match f.field_type {
                    FieldType::Integer { min, max } => {
                        manifest_types::FieldType::Integer(manifest_types::IntBounds { min, max })
                    }
                    FieldType::Boolean => manifest_types::FieldType::Boolean,
                    FieldType::Text => manifest_types::FieldType::Text,
                    FieldType::Choice(c) => manifest_types::FieldType::Choice(c),
                    FieldType::TextList => manifest_types::FieldType::TextList,
                    FieldType::Date => manifest_types::FieldType::Date,
                },
                default_value: f.default_value,
            })
            .collect(),
    }
}

impl wit_connector::Guest for Component {
    fn manifest() -> manifest_types::ConnectorManifest {
        manifest_to_wit(crate::manifest::manifest())
    }

    fn test_connection() -> Result<types::User, types::ConnectorError> {
        with_ports(operations::test_connection).map(|u| types::User {
            external_id: u.external_id,
            email: u.email,
            display_name: u.display_name,
        })
    }

    fn run_sync() -> Result<wit_connector::SyncSummary, types::ConnectorError> {
        with_ports(operations::run_sync).map(summary_to_wit)
    }

    fn run_incremental_sync() -> Result<wit_connector::SyncSummary, types::ConnectorError> {
        // With no stored cursor this is a full sync, as the contract says.
        with_ports(operations::run_sync).map(summary_to_wit)
    }

    fn get_signed_url(
        external_id: String,
    ) -> Result<wit_connector::SignedUrl, types::ConnectorError> {
        with_ports(|p| operations::get_signed_url(p, &external_id)).map(|u| {
            wit_connector::SignedUrl {
                url: u.url,
                expires_at: u.expires_at,
            }
        })
    }

    fn stream_record(
        external_id: String,
    ) -> Result<wit_connector::StreamSummary, types::ConnectorError> {
        let mut sink = WasmSink;
        with_ports(|p| operations::stream_record(p, &mut sink, &external_id)).map(|s| {
            wit_connector::StreamSummary {
                size: s.size,
                content_hash: s.content_hash,
                verified: s.verified,
                mime_type: s.mime_type,
            }
        })
    }

    fn reindex_records(
        external_ids: Vec<String>,
    ) -> Result<wit_connector::ReindexSummary, types::ConnectorError> {
        with_ports(|p| operations::reindex_records(p, &external_ids)).map(|s| {
            wit_connector::ReindexSummary {
                checked: s.checked,
                content_updates: s.content_updates,
                metadata_updates: s.metadata_updates,
                deletions: s.deletions,
            }
        })
    }

    fn wait_for_changes(
        timeout_seconds: u32,
    ) -> Result<wit_connector::ChangeHint, types::ConnectorError> {
        with_ports(|p| operations::wait_for_changes(p, timeout_seconds)).map(|h| {
            wit_connector::ChangeHint {
                changes: h.changes,
                backoff_seconds: h.backoff_seconds,
            }
        })
    }

    fn cleanup() -> Result<(), types::ConnectorError> {
        with_ports(operations::cleanup)
    }
}
