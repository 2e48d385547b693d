//! The sandbox's own `wasi:clocks/monotonic-clock` and `wasi:io/poll`, linked over
//! wasmtime-wasi's (which wait for as long as the guest asks: `subscribe-duration(u64::MAX)`
//! then `block` never returns).
//!
//! - A clock wait is clamped to a second past `max_wait_without_progress`, for
//!   `subscribe-duration` and `subscribe-instant` alike: a longer one could never end well, and
//!   the no-progress bound ends the operation before the clamped wait would end.
//! - `pollable.block` and `poll` wait one slice at a time through
//!   [`TenantState::bounded_wait`]: a stop request cuts `block` short (Rust's `sleep` then
//!   returns early) and ends a `poll` (it cannot return without a ready pollable), and waiting
//!   without progress past the bound ends the operation. Clamping alone would not do: Rust's
//!   `sleep` loops over a long duration in chunks.
//! - Waiting is neither computation (the runaway bound restarts after it) nor progress.
//!
//! The other pollables of this sandbox cannot block: stdin is closed and stdout/stderr
//! discard, so their streams are always ready.

use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime_wasi::clocks::WasiClocksView;
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::bindings::sync::io::poll;
use wasmtime_wasi::runtime::in_tokio;
use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;

use crate::runtime::{Ended, TenantState, WaitEnd};

/// Link these over wasmtime-wasi's (the linker must allow shadowing).
pub(crate) fn add_to_linker(linker: &mut Linker<TenantState>) -> wasmtime::Result<()> {
    fn get(s: &mut TenantState) -> &mut TenantState {
        s
    }
    poll::add_to_linker::<TenantState, HasSelf<TenantState>>(linker, get)?;
    monotonic_clock::add_to_linker::<TenantState, HasSelf<TenantState>>(linker, get)?;
    Ok(())
}

impl TenantState {
    fn clamp_wait(&self, nanoseconds: u64) -> u64 {
        let longest = self.max_wait_without_progress + Duration::from_secs(1);
        nanoseconds.min(u64::try_from(longest.as_nanos()).unwrap_or(u64::MAX))
    }
}

impl monotonic_clock::Host for TenantState {
    fn now(&mut self) -> wasmtime::Result<u64> {
        monotonic_clock::Host::now(&mut self.clocks())
    }

    fn resolution(&mut self) -> wasmtime::Result<u64> {
        monotonic_clock::Host::resolution(&mut self.clocks())
    }

    fn subscribe_instant(&mut self, when: u64) -> wasmtime::Result<Resource<DynPollable>> {
        let now = monotonic_clock::Host::now(&mut self.clocks())?;
        let wait = self.clamp_wait(when.saturating_sub(now));
        monotonic_clock::Host::subscribe_duration(&mut self.clocks(), wait)
    }

    fn subscribe_duration(&mut self, nanoseconds: u64) -> wasmtime::Result<Resource<DynPollable>> {
        let wait = self.clamp_wait(nanoseconds);
        monotonic_clock::Host::subscribe_duration(&mut self.clocks(), wait)
    }
}

/// Wait at most `slice` for `future`; `None` when the slice passed first.
fn within<F: Future>(slice: Duration, future: F) -> Option<F::Output> {
    in_tokio(async { tokio::time::timeout(slice, future).await.ok() })
}

impl poll::HostPollable for TenantState {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        poll::HostPollable::ready(&mut self.table, pollable)
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        let rep = pollable.rep();
        self.bounded_wait(None, |state, slice| {
            let waiting =
                async_poll::HostPollable::block(&mut state.table, Resource::new_borrow(rep));
            match within(slice, waiting) {
                Some(result) => result.map(|()| true),
                None => Ok(false),
            }
        })
        // Ready, or cut short by a stop request: either way the guest carries on.
        .map(|_| ())
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        poll::HostPollable::drop(&mut self.table, pollable)
    }
}

impl poll::Host for TenantState {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        let reps: Vec<u32> = pollables.iter().map(|p| p.rep()).collect();
        let mut ready = Vec::new();
        let end = self.bounded_wait(None, |state, slice| {
            let list = reps.iter().map(|r| Resource::new_borrow(*r)).collect();
            match within(slice, async_poll::Host::poll(&mut state.table, list)) {
                Some(result) => {
                    ready = result?;
                    Ok(true)
                }
                None => Ok(false),
            }
        })?;
        match end {
            WaitEnd::Ready => Ok(ready),
            // `poll` must name a ready pollable; none is: the operation ends here.
            WaitEnd::Stopped | WaitEnd::Elapsed => Err(self.end(Ended::Stopped)),
        }
    }
}
