//! The adapter between the WIT world and a [`Connector`]: the one `wit_bindgen::generate!` of a
//! Rust connector, the `ports` traits over the imported interfaces, conversions between the
//! generated types and `model`, and the generic `Guest` implementation that
//! [`crate::export_connector!`] exports. Nothing here decides anything.

use std::marker::PhantomData;
use std::time::Duration;

use crate::model;
use crate::ports::{self, HttpRequest, HttpResponse, Level, PendingRequest};
use crate::{Connector, Ports};

/// The generated bindings. The export macro is public so that the connector's crate expands
/// it (with the full world in its custom section); it finds the types here.
pub mod bindings {
    wit_bindgen::generate!({
        world: "source-connector",
        // wit-parser reads only `*.wit` files and `deps/` of this folder: the SDK's own
        // sources beside them are not seen.
        path: "../",
        // The world's WASI imports are std's; bindings for them are generated here (unused:
        // std calls WASI itself) because the world names them.
        generate_all,
        pub_export_macro: true,
        default_bindings_module: "::connector_sdk::__private::bindings",
        runtime_path: "::connector_sdk::__private::wit_bindgen::rt",
    });
}

use bindings::exports::pipeshub::connector::connector as wit_connector;
use bindings::pipeshub::connector::{
    content_sink, credentials, host, http, manifest_types, paths, records, types,
};

/// The `Guest` implementation for connector `C`; `export_connector!` names it.
pub struct Exported<C>(PhantomData<C>);

// ---- ports over the imports ----

struct WasmHttp;

fn http_request(r: HttpRequest) -> http::Request {
    http::Request {
        method: match r.method {
            ports::Method::Get => http::Method::Get,
            ports::Method::Head => http::Method::Head,
            ports::Method::Post => http::Method::Post,
            ports::Method::Put => http::Method::Put,
            ports::Method::Delete => http::Method::Delete,
        },
        url: r.url,
        headers: r.headers,
        body: r.body,
        authenticated: r.authenticated,
        timeout_ms: r.timeout_ms,
    }
}

fn http_error(e: http::HttpError) -> ports::HttpError {
    match e {
        http::HttpError::DestinationNotAllowed(m) => ports::HttpError::DestinationNotAllowed(m),
        http::HttpError::Timeout(m) => ports::HttpError::Timeout(m),
        http::HttpError::Connection(m) => ports::HttpError::Connection(m),
        http::HttpError::BodyTooLarge(n) => ports::HttpError::BodyTooLarge(n),
        http::HttpError::InvalidRequest(m) => ports::HttpError::InvalidRequest(m),
        http::HttpError::NoCredentials(m) => ports::HttpError::NoCredentials(m),
    }
}

fn http_response(r: http::Response) -> HttpResponse {
    HttpResponse {
        status: r.status,
        headers: r.headers,
        body: r.body,
    }
}

impl ports::Http for WasmHttp {
    fn send(&mut self, r: HttpRequest) -> Result<HttpResponse, ports::HttpError> {
        http::send(&http_request(r))
            .map(http_response)
            .map_err(http_error)
    }

    fn start(&mut self, r: HttpRequest) -> Result<PendingRequest, ports::HttpError> {
        http::start(&http_request(r))
            .map(PendingRequest::started)
            .map_err(http_error)
    }

    fn wait(&mut self, pending: PendingRequest) -> Result<HttpResponse, ports::HttpError> {
        match pending.into_id() {
            Ok(id) => http::wait(id).map(http_response).map_err(http_error),
            Err(outcome) => outcome,
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
            Level::Trace => host::Level::Trace,
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
        host::sleep(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
    }

    fn limits(&mut self) -> model::HostLimits {
        let l = host::limits();
        model::HostLimits {
            max_response_body: l.max_response_body,
            default_timeout_ms: l.default_timeout_ms,
            max_timeout_ms: l.max_timeout_ms,
            max_pending_requests: l.max_pending_requests,
        }
    }

    fn now(&mut self) -> i64 {
        // wasi:clocks/wall-clock, through std.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    fn random(&mut self) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from wasi:random.
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

fn records_from_wit(v: Vec<types::Record>) -> Vec<model::Record> {
    v.into_iter().map(record_from_wit).collect()
}

impl ports::Records for WasmStore {
    fn apply(
        &mut self,
        changes: Vec<model::Change>,
        sync_point: Option<model::SyncPoint>,
    ) -> Result<model::ApplySummary, ports::StoreError> {
        let changes: Vec<records::Change> = changes.into_iter().map(change_to_wit).collect();
        let sync_point = sync_point.map(|p| records::SyncPoint {
            position: p.position,
            status: records::SyncStatus {
                phase: match p.status.phase {
                    model::SyncPhase::Listing => records::SyncPhase::Listing,
                    model::SyncPhase::Current => records::SyncPhase::Current,
                },
                detail: p.status.detail,
            },
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

    fn get_sync_point(&mut self) -> Result<Option<String>, ports::StoreError> {
        records::get_sync_point().map_err(store_err)
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

    fn list_records(
        &mut self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<model::Record>, ports::StoreError> {
        records::list_records(after, limit)
            .map(records_from_wit)
            .map_err(store_err)
    }

    fn list_shared(&mut self) -> Result<Vec<model::Record>, ports::StoreError> {
        records::list_shared()
            .map(records_from_wit)
            .map_err(store_err)
    }

    fn put_owner(
        &mut self,
        owner: model::User,
        group: model::RecordGroup,
        permissions: Vec<model::Permission>,
    ) -> Result<(), ports::StoreError> {
        let owner = user_to_wit(owner);
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

impl ports::Paths for WasmStore {
    fn find_by_paths(
        &mut self,
        paths_lower: Vec<String>,
    ) -> Result<Vec<Option<model::Record>>, ports::StoreError> {
        paths::find_by_paths(&paths_lower)
            .map(|v| v.into_iter().map(|r| r.map(record_from_wit)).collect())
            .map_err(store_err)
    }

    fn list_subtree(
        &mut self,
        path_lower: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<model::Record>, ports::StoreError> {
        paths::list_subtree(path_lower, after, limit)
            .map(records_from_wit)
            .map_err(store_err)
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

fn user_to_wit(u: model::User) -> types::User {
    types::User {
        external_id: u.external_id,
        email: u.email,
        display_name: u.display_name,
    }
}

fn record_to_wit(r: model::Record) -> types::Record {
    types::Record {
        external_id: r.external_id,
        revision: r.revision,
        name: r.name,
        path: r.path.map(|p| types::RecordPath {
            display: p.display,
            lower: p.lower,
        }),
        parent_external_id: r.parent_external_id,
        kind: match r.kind {
            model::RecordKind::File => types::RecordKind::File,
            model::RecordKind::Folder => types::RecordKind::Folder,
            model::RecordKind::Item => types::RecordKind::Item,
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
        path: r.path.map(|p| model::RecordPath {
            display: p.display,
            lower: p.lower,
        }),
        parent_external_id: r.parent_external_id,
        kind: match r.kind {
            types::RecordKind::File => model::RecordKind::File,
            types::RecordKind::Folder => model::RecordKind::Folder,
            types::RecordKind::Item => model::RecordKind::Item,
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
        model::Change::Remove(id) => records::Change::Remove(id),
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
        E::Unsupported(m) => types::ConnectorError::Unsupported(m),
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
        retries: s.retries,
        interrupted: s.interrupted,
        phases: s
            .phases
            .into_iter()
            .map(|p| wit_connector::PhaseTime {
                name: p.name,
                microseconds: p.microseconds,
            })
            .collect(),
    }
}

fn strategy_to_wit(s: model::SyncStrategy) -> manifest_types::SyncStrategy {
    match s {
        model::SyncStrategy::Manual => manifest_types::SyncStrategy::Manual,
        model::SyncStrategy::Scheduled => manifest_types::SyncStrategy::Scheduled,
        model::SyncStrategy::ChangeNotifications => {
            manifest_types::SyncStrategy::ChangeNotifications
        }
    }
}

fn manifest_to_wit(m: model::Manifest) -> manifest_types::ConnectorManifest {
    use model::FieldType;
    manifest_types::ConnectorManifest {
        name: m.name,
        display_name: m.display_name,
        version: m.version,
        app_group: m.app_group,
        description: m.description,
        oauth: m.oauth.map(|o| manifest_types::OauthConfig {
            authorize_url: o.authorize_url,
            token_url: o.token_url,
            revoke_url: o.revoke_url,
            scopes: o.scopes,
            extra_authorize_params: o.extra_authorize_params,
            pkce_required: o.pkce_required,
            redirect_path: o.redirect_path,
        }),
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
        schedule: manifest_types::Schedule {
            strategies: m
                .schedule
                .strategies
                .into_iter()
                .map(strategy_to_wit)
                .collect(),
            default_strategy: strategy_to_wit(m.schedule.default_strategy),
            default_interval_minutes: m.schedule.default_interval_minutes,
            min_interval_minutes: m.schedule.min_interval_minutes,
            max_interval_minutes: m.schedule.max_interval_minutes,
        },
    }
}

impl<C: Connector> wit_connector::Guest for Exported<C> {
    fn manifest() -> manifest_types::ConnectorManifest {
        manifest_to_wit(C::manifest())
    }

    fn test_connection() -> Result<types::User, types::ConnectorError> {
        with_ports(C::test_connection).map(user_to_wit)
    }

    fn sync() -> Result<wit_connector::SyncSummary, types::ConnectorError> {
        with_ports(C::sync).map(summary_to_wit)
    }

    fn get_signed_url(
        external_id: String,
    ) -> Result<wit_connector::SignedUrl, types::ConnectorError> {
        with_ports(|p| C::get_signed_url(p, &external_id)).map(|u| wit_connector::SignedUrl {
            url: u.url,
            expires_at: u.expires_at,
        })
    }

    fn stream_record(
        external_id: String,
    ) -> Result<wit_connector::StreamSummary, types::ConnectorError> {
        let mut sink = WasmSink;
        with_ports(|p| C::stream_record(p, &mut sink, &external_id)).map(|s| {
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
        with_ports(|p| C::reindex_records(p, &external_ids)).map(|s| {
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
        with_ports(|p| C::wait_for_changes(p, timeout_seconds)).map(|h| wit_connector::ChangeHint {
            changes: h.changes,
            backoff_seconds: h.backoff_seconds,
        })
    }

    fn cleanup() -> Result<(), types::ConnectorError> {
        with_ports(C::cleanup)
    }
}
