//! What the `fota bench` figures share: the engine on its own tokio runtime with named threads
//! (so its CPU time and allocations can be told from the simulated fleet's, which runs on the
//! command's runtime in the same process), a fleet registered to it, the package every figure
//! delivers, and bounded waits.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fota_device::fleet::{Fleet, FleetSpec, ModelSpec};
use fota_engine::lwm2m::Registry;
use fota_engine::package;
use fota_engine::server::{Server, ServerConfig};
use tokio::runtime::Runtime;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::alloc;
use super::procfs::{self, ThreadTimes};
use crate::open_files;

/// Name of every thread of the engine's runtime (at most 15 bytes: the kernel's `comm`).
pub const ENGINE_THREAD: &str = "fota-engine";

/// The engine, serving on loopback from its own runtime.
pub struct Engine {
    /// The running server; every task it starts runs on the engine's runtime.
    pub server: Server,
    /// The engine's runtime; shut down without waiting when the engine is dropped.
    runtime: Option<Runtime>,
}

impl Engine {
    /// Starts an engine configured by `config` on a runtime of `threads` worker threads.
    pub async fn start(threads: usize, config: ServerConfig) -> anyhow::Result<Engine> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(ENGINE_THREAD)
            .on_thread_start(alloc::mark_engine_thread)
            .enable_all()
            .build()?;
        let server = runtime.spawn(Server::start(config)).await??;
        Ok(Engine {
            server,
            runtime: Some(runtime),
        })
    }

    /// Runs `future` on the engine's runtime: whatever it spawns is the engine's work.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the engine")
            .spawn(future)
    }

    /// Scheduler times of the engine's threads so far.
    pub fn times(&self) -> anyhow::Result<ThreadTimes> {
        procfs::threads_times("self", |name| name == ENGINE_THREAD)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The package every figure delivers: a full package of a generated image of `kib` KiB.
pub fn package(kib: usize) -> anyhow::Result<Bytes> {
    Ok(Bytes::from(package::full(&image(kib), "2.0")?))
}

/// A firmware image of `kib` KiB.
pub fn image(kib: usize) -> Vec<u8> {
    (0..kib * 1024)
        .map(|i| (i as u8).wrapping_mul(13) ^ (i >> 9) as u8)
        .collect()
}

/// The model of every simulated device: a small image, version 1.0.
pub fn model() -> ModelSpec {
    ModelSpec {
        manufacturer: "Acme".into(),
        model: "NB-1".into(),
        image: vec![0; 1024],
        version: "1.0".into(),
    }
}

/// Starts `devices` reference devices on the calling runtime and waits until every one is
/// registered to `engine`.
pub async fn registered_fleet(engine: &Engine, devices: usize) -> anyhow::Result<Fleet> {
    open_files::raise(devices as u64)?;
    let spec = FleetSpec::uniform(devices, engine.server.coap_addr(), model());
    let registry = &engine.server.registry;
    let events = registry.subscribe();
    let fleet = Fleet::start(&spec).await?;
    let bound = Duration::from_secs(60) + Duration::from_millis(10) * devices as u32;
    let registered = wait_registered(registry, events, devices, bound).await;
    anyhow::ensure!(
        registered,
        "{} of {devices} devices registered within {bound:?}",
        registry.len()
    );
    Ok(fleet)
}

/// Waits until `registry` holds `count` registrations, woken by its events; a burst larger than
/// the event channel only makes the receiver lag, which wakes it too. False after `bound`.
pub async fn wait_registered(
    registry: &Registry,
    mut events: tokio::sync::broadcast::Receiver<fota_engine::lwm2m::RegistrationEvent>,
    count: usize,
    bound: Duration,
) -> bool {
    tokio::time::timeout(bound, async {
        while registry.len() < count {
            if let Err(RecvError::Closed) = events.recv().await {
                return;
            }
        }
    })
    .await
    .is_ok()
        && registry.len() >= count
}

/// Checks `done` every few milliseconds until it holds; fails after `bound`, naming `what`.
/// For conditions no event announces (a cache emptying on the engine's housekeeping tick).
pub async fn poll_until(
    bound: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + bound;
    while !done() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what} did not happen within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
