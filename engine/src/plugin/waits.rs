//! A plugin's waits on its WASI monotonic clock (`subscribe-duration` and `subscribe-instant`,
//! which Rust's `thread::sleep` and C's `nanosleep` use), cut short at what its call's budget
//! has left in wall time. A wait runs in the host, where the epoch deadline cannot stop it: a
//! plugin sleeping for an hour held its call, and a permit of its plugin, for an hour. Woken
//! early, the plugin is back in its own code, where the deadline stops it. The plugin's clock
//! is the host's own ([`PluginClock`]), so an instant it waits for is read on the same clock.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};
use wasmtime_wasi::{HostMonotonicClock, async_trait};

use super::host::HostState;

/// The interface whose waits are cut: the version wasmtime-wasi defines (a component that
/// imports an older 0.2 version is linked to it).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Replaces the monotonic clock's two waits in `linker` (which has WASI already).
pub(crate) fn cut_waits(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store: StoreContextMut<'_, HostState>, (nanos,): (u64,)| {
            Ok((wake_after(store.data_mut(), Duration::from_nanos(nanos))?,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store: StoreContextMut<'_, HostState>, (when,): (u64,)| {
            let wait = Duration::from_nanos(when.saturating_sub(PluginClock.now()));
            Ok((wake_after(store.data_mut(), wait)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A pollable ready after `wait`, or once the running call's wall time is spent if sooner.
fn wake_after(state: &mut HostState, wait: Duration) -> wasmtime::Result<Resource<DynPollable>> {
    let wait = wait.min(state.budget.wall_left());
    let now = tokio::time::Instant::now();
    let wake = state
        .table
        .push(Wake(now.checked_add(wait).unwrap_or(now)))?;
    subscribe(&mut state.table, wake)
}

/// Ready at its instant.
struct Wake(tokio::time::Instant);

#[async_trait]
impl Pollable for Wake {
    async fn ready(&mut self) {
        tokio::time::sleep_until(self.0).await;
    }
}

/// The monotonic clock plugins read: nanoseconds since the host's first look at it.
pub(crate) struct PluginClock;

/// Where [`PluginClock`] counts from.
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

impl HostMonotonicClock for PluginClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        u64::try_from(ORIGIN.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}
