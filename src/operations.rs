//! The connector's operations, as the contract exports them: [`DropboxConnector`] implements
//! the SDK's [`Connector`] trait over the `ports` traits. The SDK's adapter calls it in the
//! component (`connector_sdk::export_connector!` in `lib.rs`); native tests call the same
//! functions with fakes.

use std::time::Duration;

use connector_sdk::Connector;

use crate::api::types::{FullAccount, LongpollResult};
use crate::client::{CallError, DropboxClient};
use crate::model::{
    ChangeHint, ConnectorError, Manifest, ReindexSummary, SignedUrl, StreamSummary, SyncSummary,
    User,
};
use crate::ports::{HttpError, Level, Ports, Sink, Store};
use crate::sync::{self, load_state, owner_and_group};

/// Seconds Dropbox may add to a long-poll's wait (host-test/emulator/DROPBOX-API.md §3.6).
const LONGPOLL_JITTER_SECS: u64 = 90;

/// Dropbox Personal, as a source connector.
pub struct DropboxConnector;

impl Connector for DropboxConnector {
    fn manifest() -> Manifest {
        crate::manifest::manifest()
    }

    fn sync(ports: &mut Ports<'_>) -> Result<SyncSummary, ConnectorError> {
        run_sync(ports)
    }

    fn test_connection(ports: &mut Ports<'_>) -> Result<User, ConnectorError> {
        test_connection(ports)
    }

    fn get_signed_url(
        ports: &mut Ports<'_>,
        external_id: &str,
    ) -> Result<SignedUrl, ConnectorError> {
        get_signed_url(ports, external_id)
    }

    fn stream_record(
        ports: &mut Ports<'_>,
        sink: &mut dyn Sink,
        external_id: &str,
    ) -> Result<StreamSummary, ConnectorError> {
        stream_record(ports, sink, external_id)
    }

    fn reindex_records(
        ports: &mut Ports<'_>,
        external_ids: &[String],
    ) -> Result<ReindexSummary, ConnectorError> {
        reindex_records(ports, external_ids)
    }

    fn wait_for_changes(
        ports: &mut Ports<'_>,
        timeout_seconds: u32,
    ) -> Result<ChangeHint, ConnectorError> {
        wait_for_changes(ports, timeout_seconds)
    }

    fn cleanup(ports: &mut Ports<'_>) -> Result<(), ConnectorError> {
        cleanup(ports)
    }
}

/// The Dropbox client over the call's HTTP, credentials and host, and the store beside it.
/// The host's limits are read here, once per operation.
fn split<'p>(ports: &'p mut Ports<'_>) -> (DropboxClient<'p>, &'p mut dyn Store) {
    (
        DropboxClient::new(ports.http, ports.credentials, ports.host),
        ports.store,
    )
}

pub fn test_connection(ports: &mut Ports<'_>) -> Result<User, ConnectorError> {
    let (mut client, _) = split(ports);
    let account: FullAccount = client.rpc::<(), _>("users/get_current_account", None)?;
    Ok(owner_and_group(&account).0)
}

pub fn run_sync(ports: &mut Ports<'_>) -> Result<SyncSummary, ConnectorError> {
    let (mut client, store) = split(ports);
    let result = sync::run_sync(&mut client, store);
    if let Err(e) = &result {
        client
            .host()
            .log(Level::Error, &format!("sync failed: {e}"));
    }
    result
}

pub fn get_signed_url(ports: &mut Ports<'_>, id: &str) -> Result<SignedUrl, ConnectorError> {
    let (mut client, store) = split(ports);
    crate::content::get_signed_url(&mut client, store, id)
}

pub fn stream_record(
    ports: &mut Ports<'_>,
    sink: &mut dyn Sink,
    id: &str,
) -> Result<StreamSummary, ConnectorError> {
    let (mut client, store) = split(ports);
    crate::content::stream_record(&mut client, store, sink, id)
}

pub fn reindex_records(
    ports: &mut Ports<'_>,
    ids: &[String],
) -> Result<ReindexSummary, ConnectorError> {
    let (mut client, store) = split(ports);
    crate::content::reindex_records(&mut client, store, ids)
}

/// Long-poll Dropbox for changes after the stored cursor. No stored cursor means a sync is due.
pub fn wait_for_changes(
    ports: &mut Ports<'_>,
    timeout_seconds: u32,
) -> Result<ChangeHint, ConnectorError> {
    let (mut client, store) = split(ports);
    let sync_now = ChangeHint {
        changes: true,
        backoff_seconds: None,
    };
    // No position, or one that is not the end of a finished sequence (a listing or a change
    // feed is half way, or descendants still owe an update): a sync has work to do now.
    // Long-polling an unfinished listing's cursor would wait for changes that are already due.
    let Some(state) = load_state(store, client.host())? else {
        return Ok(sync_now);
    };
    let Some(cursor) = state.cursor.as_deref().filter(|_| !state.work_pending()) else {
        return Ok(sync_now);
    };
    // The contract: the call returns within `timeout_seconds` (plus connecting). Dropbox waits
    // at least 30 s and adds up to 90 s of jitter, so it is asked for what fits in the budget
    // after the jitter (30 to 480 s), and the request is cut at the budget. A wait cut short
    // reports no changes: the next long-poll, from the same cursor, answers at once for
    // anything that arrived meanwhile. The host's longest request bounds the budget too.
    let budget_ms = (u64::from(timeout_seconds.max(1)) * 1000).min(client.limits().max_timeout_ms);
    let asked = (budget_ms / 1000)
        .saturating_sub(LONGPOLL_JITTER_SECS)
        .clamp(30, 480);
    match client.longpoll::<LongpollResult>(cursor, asked, Duration::from_millis(budget_ms)) {
        Ok(result) => Ok(ChangeHint {
            changes: result.changes,
            backoff_seconds: result.backoff.map(|b| b.min(u64::from(u32::MAX)) as u32),
        }),
        // A reset cursor needs a sync (which re-lists).
        Err(e) if e.route_error().is_some_and(|r| r.is_reset()) => Ok(ChangeHint {
            changes: true,
            backoff_seconds: None,
        }),
        Err(CallError::Transport {
            error: HttpError::Timeout(_),
            ..
        }) => Ok(ChangeHint {
            changes: false,
            backoff_seconds: None,
        }),
        Err(e) => Err(e.into()),
    }
}

/// Revoke the tenant's token at Dropbox: the only thing this connector holds there.
pub fn cleanup(ports: &mut Ports<'_>) -> Result<(), ConnectorError> {
    let (mut client, _) = split(ports);
    match client.rpc::<(), serde_json::Value>("auth/token/revoke", None) {
        Ok(_) => Ok(()),
        // Already revoked or expired beyond refresh: nothing left to release.
        Err(crate::client::CallError::AuthRequired { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
