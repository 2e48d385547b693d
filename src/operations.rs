//! The connector's operations, as the contract exports them, over the `ports` traits. The wasm
//! adapter calls these; so do native tests with fakes.

use crate::api::types::{FullAccount, LongpollResult};
use crate::client::DropboxClient;
use crate::model::{ChangeHint, ConnectorError, User};
use crate::ports::{Credentials, HostEnv, Http, Level, Sink, Store};
use crate::sync::{self, load_state, owner_and_group};

/// The ports one invocation uses.
pub struct Ports<'a> {
    pub http: &'a mut dyn Http,
    pub credentials: &'a mut dyn Credentials,
    pub host: &'a mut dyn HostEnv,
    pub store: &'a mut dyn Store,
}

impl<'a> Ports<'a> {
    fn split(&mut self) -> (DropboxClient<'_>, &mut dyn Store) {
        (
            DropboxClient::new(self.http, self.credentials, self.host),
            self.store,
        )
    }
}

pub fn test_connection(ports: &mut Ports<'_>) -> Result<User, ConnectorError> {
    let (mut client, _) = ports.split();
    let account: FullAccount = client.rpc::<(), _>("users/get_current_account", None)?;
    Ok(owner_and_group(&account).0)
}

pub fn run_sync(ports: &mut Ports<'_>) -> Result<crate::model::SyncSummary, ConnectorError> {
    let (mut client, store) = ports.split();
    let result = sync::run_sync(&mut client, store);
    if let Err(e) = &result {
        client
            .host()
            .log(Level::Error, &format!("sync failed: {e}"));
    }
    result
}

pub fn get_signed_url(
    ports: &mut Ports<'_>,
    id: &str,
) -> Result<crate::model::SignedUrl, ConnectorError> {
    let (mut client, store) = ports.split();
    crate::content::get_signed_url(&mut client, store, id)
}

pub fn stream_record(
    ports: &mut Ports<'_>,
    sink: &mut dyn Sink,
    id: &str,
) -> Result<crate::model::StreamSummary, ConnectorError> {
    let (mut client, store) = ports.split();
    crate::content::stream_record(&mut client, store, sink, id)
}

pub fn reindex_records(
    ports: &mut Ports<'_>,
    ids: &[String],
) -> Result<crate::model::ReindexSummary, ConnectorError> {
    let (mut client, store) = ports.split();
    crate::content::reindex_records(&mut client, store, ids)
}

/// Long-poll Dropbox for changes after the stored cursor. No stored cursor means a sync is due.
pub fn wait_for_changes(
    ports: &mut Ports<'_>,
    timeout_seconds: u32,
) -> Result<ChangeHint, ConnectorError> {
    let (mut client, store) = ports.split();
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
    // Dropbox accepts 30..=480 seconds.
    let timeout = u64::from(timeout_seconds).clamp(30, 480);
    match client.longpoll::<LongpollResult>(cursor, timeout) {
        Ok(result) => Ok(ChangeHint {
            changes: result.changes,
            backoff_seconds: result.backoff.map(|b| b.min(u64::from(u32::MAX)) as u32),
        }),
        // A reset cursor needs a sync (which re-lists).
        Err(e) if e.route_error().is_some_and(|r| r.is_reset()) => Ok(ChangeHint {
            changes: true,
            backoff_seconds: None,
        }),
        Err(e) => Err(e.into()),
    }
}

/// Revoke the tenant's token at Dropbox: the only thing this connector holds there.
pub fn cleanup(ports: &mut Ports<'_>) -> Result<(), ConnectorError> {
    let (mut client, _) = ports.split();
    match client.rpc::<(), serde_json::Value>("auth/token/revoke", None) {
        Ok(_) => Ok(()),
        // Already revoked or expired beyond refresh: nothing left to release.
        Err(crate::client::CallError::AuthRequired { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
