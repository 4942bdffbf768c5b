//! Running a scenario deterministically: on a fresh [`SimNetwork`] in a single-thread runtime
//! whose clock is paused (it jumps to the next timer whenever every task waits), with the
//! engine's randomness seeded, and, for [`twice`], a second time to require the same trace.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use fota_engine::platform::{Platform, PlatformConfig};
use fota_engine::plugin::{HostConfig, PluginHost};
use fota_engine::server::{Server, ServerConfig};

use crate::SimNetwork;
use crate::store::SimStore;
use crate::trace::{FULL_TRACE, Trace};

/// Where the engine listens on a simulated network.
pub const ENGINE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5683);

/// A single-thread runtime with a paused clock and no I/O driver (nothing in a simulation does
/// real I/O through tokio; without the driver an idle runtime moves its clock without a system
/// call).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime")
}

/// Runs `scenario` once on a network seeded with `seed`; its result and the network's trace.
pub fn once<T, F, Fut>(seed: u64, scenario: F) -> (T, Trace)
where
    F: FnOnce(SimNetwork) -> Fut,
    Fut: Future<Output = T>,
{
    fota_engine::entropy::seed_this_thread(Some(seed));
    let result = runtime().block_on(async {
        let network = SimNetwork::new(seed);
        let result = scenario(network.clone()).await;
        (result, network.trace())
    });
    fota_engine::entropy::seed_this_thread(None);
    result
}

/// Runs `scenario` twice from `seed` and panics unless both runs did exactly the same on the
/// network (with `FOTA_SIM_FULL_TRACE=1`, the panic shows where they parted); the second
/// run's result.
pub fn twice<T, F, Fut>(seed: u64, scenario: F) -> T
where
    F: Fn(SimNetwork) -> Fut,
    Fut: Future<Output = T>,
{
    let (_, first) = once(seed, &scenario);
    let (result, second) = once(seed, &scenario);
    if first.digest() != second.digest() {
        panic!(
            "seed {seed}: two runs of the same scenario left different network traces \
             ({} events, then {}){}",
            first.events(),
            second.events(),
            parting(&first, &second)
        );
    }
    result
}

/// Where two full traces part, with the events just before; a hint to keep them otherwise.
fn parting(first: &Trace, second: &Trace) -> String {
    let (Some(one), Some(two)) = (first.all(), second.all()) else {
        return format!("; run with {FULL_TRACE}=1 to see where they part");
    };
    let at = one.iter().zip(two).take_while(|(a, b)| a == b).count();
    let from = at.saturating_sub(5);
    let show = |lines: &[String]| lines[from..(at + 3).min(lines.len())].join("\n    ");
    format!(
        "; they part at event {at}:\n  first run:\n    {}\n  second run:\n    {}",
        show(one),
        show(two)
    )
}

/// Starts the engine's CoAP side on `network`, at [`ENGINE`].
pub async fn engine(network: &SimNetwork, mut config: ServerConfig) -> Server {
    config.network = network.handle();
    config.coap_addr = ENGINE;
    Server::start(config).await.expect("the engine starts")
}

/// Longest the tasks of a crashed engine may go on running (simulated time): a platform that
/// is dropped stops what it started within an exchange's lifetime.
const WIND_DOWN_BOUND: Duration = Duration::from_secs(60);

thread_local! {
    /// The plugin host of every simulated engine on this thread: the reference plugins are
    /// compiled once, and calls run on the runtime's one thread, so no call's end races the
    /// simulation.
    static HOST: PluginHost = PluginHost::new(simulation_host()).expect("a plugin host");
}

/// Longest a plugin call may run in simulation. Time limits are wasmtime epochs, advanced on
/// the wall clock, which a simulated run must not depend on: a starved machine stopped 78 of
/// 100,000 seeds' reference plugins after their 100 ms. The reference plugins answer in
/// microseconds, so here the limit is only a watchdog that turns a hung call into a failed seed.
const PLUGIN_WATCHDOG: Duration = Duration::from_secs(120);

/// The host's settings for simulation: calls run inline on the runtime's one thread, and no
/// time limit is shorter than [`PLUGIN_WATCHDOG`].
fn simulation_host() -> HostConfig {
    let mut config = HostConfig {
        calls_inline: true,
        ..HostConfig::default()
    };
    for limits in [
        &mut config.differ,
        &mut config.capability,
        &mut config.policy,
        &mut config.packager,
    ] {
        limits.time = limits.time.max(PLUGIN_WATCHDOG);
    }
    config
}

/// This thread's plugin host for simulated engines.
pub fn plugin_host() -> PluginHost {
    HOST.with(PluginHost::clone)
}

/// Starts a whole engine (plugins from `host`, campaigns) on `store` as `config` says, on
/// `network` at [`ENGINE`], reading the network's wall clock (records and signed packages
/// carry the date: a run must not depend on when it is made).
pub async fn platform(
    network: &SimNetwork,
    host: &PluginHost,
    store: &SimStore,
    mut config: PlatformConfig,
) -> Result<Platform, String> {
    config.server.network = network.handle();
    config.server.coap_addr = ENGINE;
    Platform::start_on(host.clone(), network.clock(), store.open(), config)
        .await
        .map_err(|error| format!("the engine did not start: {error}"))
}

/// Crashes `platform`: its socket on `network` closes at once (nothing more goes out or comes
/// in), its store loses what was not durable and refuses it from then on, it is dropped, and
/// this waits in simulated time until its last task ended.
pub async fn crash(
    network: &SimNetwork,
    store: &SimStore,
    platform: Platform,
) -> Result<(), String> {
    let handle = std::sync::Arc::downgrade(&platform.store);
    network.close(platform.server.coap_addr());
    store.crash();
    network.note("engine crashed");
    drop(platform);
    let ended = tokio::time::timeout(WIND_DOWN_BOUND, async {
        while handle.strong_count() > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    ended.map_err(|_| format!("a crashed engine's tasks ran on for {WIND_DOWN_BOUND:?}"))
}
