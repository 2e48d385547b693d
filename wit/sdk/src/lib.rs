//! The Rust guest SDK for `pipeshub:connector@0.2.0` (`wit/connector.wit`).
//!
//! A connector written with it has no WIT bindings of its own. It sees:
//!
//! - [`model`]: the contract's types as plain Rust (records with an optional [`model::RecordPath`],
//!   changes, the sync point and its status, summaries, the manifest with its typed schedule);
//! - [`ports`]: one small trait per imported interface ([`ports::Http`],
//!   [`ports::Credentials`], [`ports::Records`] and [`ports::Paths`] (together
//!   [`ports::Store`]), [`ports::Sink`], [`ports::HostEnv`]), so its logic compiles natively and
//!   tests run against in-memory fakes;
//! - [`Connector`]: one associated function per export, each given the [`Ports`] of the call.
//!   Only `manifest` and `sync` must be written; the others answer
//!   [`ConnectorError::Unsupported`] until a connector offers them;
//! - [`export_connector!`]: turns a type implementing [`Connector`] into the component's
//!   exports (on `wasm32` only; the macro expands to nothing elsewhere).
//!
//! ```ignore
//! struct MyConnector;
//! impl connector_sdk::Connector for MyConnector {
//!     fn manifest() -> connector_sdk::model::Manifest { /* ... */ }
//!     fn sync(ports: &mut connector_sdk::Ports<'_>) -> Result<SyncSummary, ConnectorError> { /* ... */ }
//! }
//! connector_sdk::export_connector!(MyConnector);
//! ```
//!
//! Every operation runs in a fresh instance, so the functions take no `self`: what must survive
//! goes into the records store (the sync point's opaque `position`).

pub mod mem;
pub mod model;
pub mod ports;

#[cfg(target_arch = "wasm32")]
mod wasm;

// Lets the bindings name this crate by its path in the caller's crate and in this one alike.
extern crate self as connector_sdk;

pub use model::ConnectorError;

use model::{ChangeHint, Manifest, ReindexSummary, SignedUrl, StreamSummary, SyncSummary, User};
use ports::{Credentials, HostEnv, Http, Sink, Store};

/// The imports one operation uses.
pub struct Ports<'a> {
    pub http: &'a mut dyn Http,
    pub credentials: &'a mut dyn Credentials,
    pub host: &'a mut dyn HostEnv,
    pub store: &'a mut dyn Store,
}

/// The error of an operation a connector does not offer.
pub fn unsupported(operation: &str) -> ConnectorError {
    ConnectorError::Unsupported(format!("this connector does not offer {operation}"))
}

/// A source connector: one function per export of the contract's `connector` interface.
pub trait Connector {
    /// Static self-description; makes no calls.
    fn manifest() -> Manifest;

    /// Bring the store up to date: a full listing when no position is stored (or it can no
    /// longer be used), the changes since the position otherwise.
    fn sync(ports: &mut Ports<'_>) -> Result<SyncSummary, ConnectorError>;

    /// Check that the credentials work; the connected account on success.
    fn test_connection(ports: &mut Ports<'_>) -> Result<User, ConnectorError> {
        let _ = ports;
        Err(unsupported("test-connection"))
    }

    /// A short-lived URL that serves the record's content without credentials.
    fn get_signed_url(
        ports: &mut Ports<'_>,
        external_id: &str,
    ) -> Result<SignedUrl, ConnectorError> {
        let _ = (ports, external_id);
        Err(unsupported("get-signed-url"))
    }

    /// Write the record's content to `sink` in chunks of at most
    /// `HostLimits::max_response_body` bytes, verifying its hash when the source publishes one.
    fn stream_record(
        ports: &mut Ports<'_>,
        sink: &mut dyn Sink,
        external_id: &str,
    ) -> Result<StreamSummary, ConnectorError> {
        let _ = (ports, sink, external_id);
        Err(unsupported("stream-record"))
    }

    /// Fetch the records' metadata again and record what changed.
    fn reindex_records(
        ports: &mut Ports<'_>,
        external_ids: &[String],
    ) -> Result<ReindexSummary, ConnectorError> {
        let _ = (ports, external_ids);
        Err(unsupported("reindex-records"))
    }

    /// Long-poll until the source reports changes since the stored position, or the timeout.
    fn wait_for_changes(
        ports: &mut Ports<'_>,
        timeout_seconds: u32,
    ) -> Result<ChangeHint, ConnectorError> {
        let _ = (ports, timeout_seconds);
        Err(unsupported("wait-for-changes"))
    }

    /// Release what the connector holds at the source for this tenant.
    fn cleanup(ports: &mut Ports<'_>) -> Result<(), ConnectorError> {
        let _ = ports;
        Err(unsupported("cleanup"))
    }
}

/// What [`export_connector!`] expands to; not part of the API.
#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::wasm::{Exported, bindings};
    #[cfg(target_arch = "wasm32")]
    pub use wit_bindgen;
}

/// Export a [`Connector`] as the component's `connector` interface:
/// `connector_sdk::export_connector!(MyConnector);` at the top level of the connector's crate.
/// Expands to nothing when not compiling for `wasm32`, so the crate also builds natively.
#[macro_export]
macro_rules! export_connector {
    ($connector:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            // The generated export macro wants a plain name for the implementing type.
            type __ConnectorSdkGuest = $crate::__private::Exported<$connector>;
            $crate::__private::bindings::export!(
                __ConnectorSdkGuest with_types_in $crate::__private::bindings
            );
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    struct Minimal;

    impl Connector for Minimal {
        fn manifest() -> Manifest {
            Manifest {
                name: "minimal".into(),
                display_name: "Minimal".into(),
                version: "0".into(),
                app_group: "Test".into(),
                description: String::new(),
                oauth: None,
                allowed_hosts: Vec::new(),
                config_fields: Vec::new(),
                schedule: Schedule {
                    strategies: vec![SyncStrategy::Manual],
                    default_strategy: SyncStrategy::Manual,
                    default_interval_minutes: 60,
                    min_interval_minutes: 1,
                    max_interval_minutes: 60,
                },
            }
        }

        fn sync(_: &mut Ports<'_>) -> Result<SyncSummary, ConnectorError> {
            Ok(SyncSummary {
                kind: SyncKind::Full,
                pages: 0,
                entries: 0,
                applied: ApplySummary::default(),
                api_calls: 0,
                retries: 0,
                interrupted: false,
                phases: Vec::new(),
            })
        }
    }

    struct Nothing;

    impl ports::Http for Nothing {
        fn send(&mut self, _: ports::HttpRequest) -> Result<ports::HttpResponse, ports::HttpError> {
            Ok(ports::HttpResponse {
                status: 204,
                headers: vec![("X-Seen".into(), "yes".into())],
                body: Vec::new(),
            })
        }
    }

    impl ports::Credentials for Nothing {
        fn refresh_access_token(&mut self) -> Result<(), ports::RefreshError> {
            Ok(())
        }
    }

    impl ports::HostEnv for Nothing {
        fn log(&mut self, _: ports::Level, _: &str) {}
        fn progress(&mut self, _: &str, _: u32, _: u64, _: Option<u64>) {}
        fn config(&mut self) -> Vec<(String, String)> {
            Vec::new()
        }
        fn should_stop(&mut self) -> bool {
            false
        }
        fn sleep(&mut self, _: std::time::Duration) {}
        fn limits(&mut self) -> HostLimits {
            HostLimits::default()
        }
        fn now(&mut self) -> i64 {
            0
        }
        fn random(&mut self) -> u64 {
            4
        }
    }

    impl ports::Records for Nothing {
        fn apply(
            &mut self,
            _: Vec<Change>,
            _: Option<SyncPoint>,
        ) -> Result<ApplySummary, ports::StoreError> {
            Ok(ApplySummary::default())
        }
        fn get_sync_point(&mut self) -> Result<Option<String>, ports::StoreError> {
            Ok(None)
        }
        fn get_records(&mut self, _: Vec<String>) -> Result<Vec<StoredRecord>, ports::StoreError> {
            Ok(Vec::new())
        }
        fn list_records(
            &mut self,
            _: Option<&str>,
            _: u32,
        ) -> Result<Vec<Record>, ports::StoreError> {
            Ok(Vec::new())
        }
        fn list_shared(&mut self) -> Result<Vec<Record>, ports::StoreError> {
            Ok(Vec::new())
        }
        fn put_owner(
            &mut self,
            _: User,
            _: RecordGroup,
            _: Vec<Permission>,
        ) -> Result<(), ports::StoreError> {
            Ok(())
        }
        fn clear(&mut self) -> Result<(), ports::StoreError> {
            Ok(())
        }
    }

    impl ports::Paths for Nothing {
        fn find_by_paths(
            &mut self,
            paths: Vec<String>,
        ) -> Result<Vec<Option<Record>>, ports::StoreError> {
            Ok(paths.iter().map(|_| None).collect())
        }
        fn list_subtree(
            &mut self,
            _: &str,
            _: Option<&str>,
            _: u32,
        ) -> Result<Vec<Record>, ports::StoreError> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn operations_not_offered_say_unsupported_and_name_themselves() {
        let (mut http, mut creds, mut host, mut store) = (Nothing, Nothing, Nothing, Nothing);
        let mut ports = Ports {
            http: &mut http,
            credentials: &mut creds,
            host: &mut host,
            store: &mut store,
        };
        let mut sink = Vec::<u8>::new();
        struct VecSink<'a>(&'a mut Vec<u8>);
        impl ports::Sink for VecSink<'_> {
            fn write(&mut self, chunk: &[u8]) -> Result<(), ports::SinkError> {
                self.0.extend_from_slice(chunk);
                Ok(())
            }
        }
        let errors = [
            (
                "test-connection",
                Minimal::test_connection(&mut ports).err(),
            ),
            (
                "get-signed-url",
                Minimal::get_signed_url(&mut ports, "x").err(),
            ),
            (
                "stream-record",
                Minimal::stream_record(&mut ports, &mut VecSink(&mut sink), "x").err(),
            ),
            (
                "reindex-records",
                Minimal::reindex_records(&mut ports, &[]).err(),
            ),
            (
                "wait-for-changes",
                Minimal::wait_for_changes(&mut ports, 30).err(),
            ),
            ("cleanup", Minimal::cleanup(&mut ports).err()),
        ];
        for (name, error) in errors {
            match error {
                Some(ConnectorError::Unsupported(m)) => assert!(m.contains(name), "{m}"),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert!(Minimal::sync(&mut ports).is_ok());
    }

    #[test]
    fn default_start_and_wait_send_through_send() {
        let mut http = Nothing;
        let request = ports::HttpRequest {
            method: ports::Method::Get,
            url: "https://example.com/".into(),
            headers: Vec::new(),
            body: Vec::new(),
            authenticated: false,
            timeout_ms: None,
        };
        let pending = ports::Http::start(&mut http, request).expect("start");
        let response = ports::Http::wait(&mut http, pending).expect("wait");
        assert_eq!(response.status, 204);
        assert_eq!(response.header("x-seen"), Some("yes"));
        // An id only a real host knows cannot be waited for on a port that never started it.
        assert!(matches!(
            ports::Http::wait(&mut http, ports::PendingRequest::started(7)),
            Err(ports::HttpError::InvalidRequest(_))
        ));
    }
}
