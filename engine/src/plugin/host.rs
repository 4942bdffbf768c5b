//! The wasmtime side: one [`Engine`] per process (per epoch tick) with the epoch ticker that
//! enforces time limits and the components it compiled, one [`Linker`] per host, the limits of
//! each plugin kind, and the per-store state ([`HostState`]) with its memory limiter, its WASI
//! sandbox and the `host-log` import.
//!
//! Every store is made by [`PluginHost::new_store`]: that is the one place where a call's limits
//! are set.

use super::bindings::{host_log, types};
use super::budget::CallBudget;
use super::counters::CallCounters;
use super::waits::{PluginClock, cut_waits};
use super::{PluginError, PluginKind};
use crate::sync::lock;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::thread;
use std::time::Duration;
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Longest log message a plugin may write; longer ones are cut.
const MAX_LOG_MESSAGE: usize = 1024;
/// Bytes of a plugin's stderr kept to explain a trap (Rust panics print there).
const STDERR_CAPTURE: usize = 4096;

/// The limits every call of one plugin kind runs under.
#[derive(Debug, Clone)]
pub struct CallLimits {
    /// Most linear memory an instance may have, in bytes: growing past it traps the call.
    pub memory_bytes: usize,
    /// Longest a call may run; it is stopped at the next epoch tick after that.
    pub time: Duration,
    /// Calls of one plugin running at once; more wait (back-pressure, not failure).
    pub max_concurrent: usize,
    /// An instance that answered serves later calls while its linear memory is at most this
    /// many bytes; a larger one is dropped with its store (Wasm memory never shrinks, and a
    /// differ's grows with the images: 8 MiB for the 600 KB corpus pair). 0: a fresh instance
    /// for every call.
    pub reuse_up_to_bytes: usize,
    /// Largest byte result (a patch, a rebuilt image) a call may return.
    pub max_result_bytes: usize,
}

/// The host's settings: time granularity and the limits of each plugin kind.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// How often the epoch advances: the resolution of every time limit.
    pub epoch_tick: Duration,
    /// A diff holds two images, a suffix array and a compressor: hundreds of MiB, seconds.
    pub differ: CallLimits,
    /// A capability check is a lookup: little memory, milliseconds at most.
    pub capability: CallLimits,
    /// A policy decision is a few comparisons: little memory, milliseconds at most.
    pub policy: CallLimits,
    /// Framing a package copies it once or twice and sums or signs it: the package's size in
    /// memory a few times over, well under a second.
    pub packager: CallLimits,
    /// Runs calls on the calling task instead of tokio's blocking pool. Only for deterministic
    /// simulation (one thread, a paused clock), where a call ending on another thread would
    /// make the order of events depend on thread timing; it blocks the async thread for as
    /// long as the call runs.
    pub calls_inline: bool,
}

impl Default for HostConfig {
    fn default() -> Self {
        let cheap = CallLimits {
            memory_bytes: 16 << 20,
            time: Duration::from_millis(100),
            max_concurrent: 64,
            reuse_up_to_bytes: 16 << 20,
            max_result_bytes: 64 << 10,
        };
        HostConfig {
            epoch_tick: Duration::from_millis(5),
            differ: CallLimits {
                memory_bytes: 1 << 30,
                time: Duration::from_secs(120),
                max_concurrent: 1,
                // Images up to a few MB: the next diff skips a fresh memory's page faults
                // (4 % of the time to make a 23 KB image's patch; BENCHMARKS.md, section 6).
                reuse_up_to_bytes: 32 << 20,
                max_result_bytes: 256 << 20,
            },
            capability: cheap.clone(),
            policy: cheap,
            packager: CallLimits {
                memory_bytes: 256 << 20,
                time: Duration::from_secs(10),
                max_concurrent: 2,
                reuse_up_to_bytes: 8 << 20,
                max_result_bytes: 64 << 20,
            },
            calls_inline: false,
        }
    }
}

impl HostConfig {
    pub fn limits(&self, kind: PluginKind) -> &CallLimits {
        match kind {
            PluginKind::Differ => &self.differ,
            PluginKind::Capability => &self.capability,
            PluginKind::Policy => &self.policy,
            PluginKind::Packager => &self.packager,
        }
    }
}

/// The plugin host: cheap to clone, shared by every plugin.
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<Inner>,
}

struct Inner {
    /// Compiles components; its epoch, advanced by the ticker, is what stops long calls.
    engine: Arc<SharedEngine>,
    /// WASI (an empty sandbox) and `host-log`, set up once for all plugins.
    linker: Linker<HostState>,
    /// The limits of each kind, read where stores are made and calls armed.
    config: HostConfig,
    /// Calls and failures of every plugin this host loaded.
    counters: CallCounters,
}

/// A wasmtime engine shared by every host of the process with the same epoch tick (wasmtime
/// means an engine to be shared), with its ticker and what it compiled.
struct SharedEngine {
    engine: Engine,
    /// Every component compiled, by the sha256 of its bytes: a component loaded again (an
    /// engine started again, a plugin installed twice, another host) is not compiled again.
    compiled: Mutex<HashMap<[u8; 32], Component>>,
}

/// The shared engines, by epoch tick.
static ENGINES: LazyLock<Mutex<HashMap<Duration, Arc<SharedEngine>>>> =
    LazyLock::new(Mutex::default);

/// The process's engine for `tick`, made (with its ticker, which runs as long as the process)
/// on first use.
fn shared_engine(tick: Duration) -> wasmtime::Result<Arc<SharedEngine>> {
    let mut engines = lock(&ENGINES);
    if let Some(shared) = engines.get(&tick) {
        return Ok(shared.clone());
    }
    let mut wasm = Config::new();
    wasm.epoch_interruption(true);
    wasm.wasm_component_model(true);
    let engine = Engine::new(&wasm)?;
    spawn_ticker(engine.clone(), tick);
    let shared = Arc::new(SharedEngine {
        engine,
        compiled: Mutex::default(),
    });
    engines.insert(tick, shared.clone());
    Ok(shared)
}

impl PluginHost {
    pub fn new(config: HostConfig) -> wasmtime::Result<Self> {
        let shared = shared_engine(config.epoch_tick)?;
        let mut linker = Linker::new(&shared.engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        cut_waits(&mut linker)?;
        type Data = wasmtime::component::HasSelf<HostState>;
        host_log::add_to_linker::<HostState, Data>(&mut linker, |s| s)?;
        types::add_to_linker::<HostState, Data>(&mut linker, |s| s)?;
        Ok(PluginHost {
            inner: Arc::new(Inner {
                engine: shared,
                linker,
                config,
                counters: CallCounters::default(),
            }),
        })
    }

    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// Calls and failures of the plugins this host loaded.
    pub fn counters(&self) -> &CallCounters {
        &self.inner.counters
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine.engine
    }

    /// Compiles a component (once per distinct bytes in the process), without linking or
    /// instantiating it.
    pub(crate) fn compile(&self, wasm: &[u8]) -> wasmtime::Result<Component> {
        let key: [u8; 32] = Sha256::digest(wasm).into();
        let compiled = &self.inner.engine.compiled;
        if let Some(component) = lock(compiled).get(&key) {
            return Ok(component.clone());
        }
        let component = Component::new(self.engine(), wasm)?;
        lock(compiled).insert(key, component.clone());
        Ok(component)
    }

    /// Links `component`'s imports (named `name` in errors), refusing one that imports what the
    /// host does not give plugins.
    pub(crate) fn link(
        &self,
        name: &str,
        component: &Component,
    ) -> Result<InstancePre<HostState>, PluginError> {
        self.inner
            .linker
            .instantiate_pre(component)
            .map_err(|error| {
                PluginError::unsupported_import(name, &self.imports(component), &error)
            })
    }

    /// The names of what `component` imports.
    pub(crate) fn imports(&self, component: &Component) -> Vec<String> {
        component
            .component_type()
            .imports(self.engine())
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// A store for one plugin of `kind`, with that kind's memory limit; the time limit is set
    /// per call by [`PluginHost::arm_deadline`].
    pub(crate) fn new_store(&self, plugin: &Arc<str>, kind: PluginKind) -> Store<HostState> {
        let limits = self.inner.config.limits(kind);
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
        let wasi = (WasiCtxBuilder::new().stderr(stderr.clone()))
            .monotonic_clock(PluginClock)
            .build();
        let state = HostState {
            plugin: plugin.clone(),
            limiter: MemoryLimiter {
                limit: limits.memory_bytes,
                refused: None,
                largest: 0,
            },
            wasi,
            table: ResourceTable::new(),
            stderr,
            budget: CallBudget::starting(limits.time),
        };
        let mut store = Store::new(self.engine(), state);
        store.limiter(|s| &mut s.limiter);
        let tick = self.inner.config.epoch_tick;
        store.epoch_deadline_callback(move |store| {
            Ok(match store.data().budget.left() {
                Some(left) => UpdateDeadline::Continue(ticks_in(left, tick)),
                None => UpdateDeadline::Interrupt,
            })
        });
        store
    }

    /// Starts a call's time budget: the kind's time limit from now, counted in the CPU time
    /// of this thread ([`CallBudget`]); first looked at once that much wall time passed.
    pub(crate) fn arm_deadline(&self, store: &mut Store<HostState>, kind: PluginKind) {
        let limit = self.inner.config.limits(kind).time;
        store.data_mut().budget = CallBudget::starting(limit);
        // One more tick: the current one may be about to end.
        store.set_epoch_deadline(ticks_in(limit, self.inner.config.epoch_tick) + 1);
    }
}

/// Epoch ticks of `tick` in `span`, rounded up.
fn ticks_in(span: Duration, tick: Duration) -> u64 {
    span.as_nanos().div_ceil(tick.as_nanos().max(1)) as u64
}

/// Advances the engine's epoch every `tick`, for as long as the process runs.
fn spawn_ticker(engine: Engine, tick: Duration) {
    thread::Builder::new()
        .name("plugin-epoch".into())
        .spawn(move || {
            loop {
                thread::sleep(tick);
                engine.increment_epoch();
            }
        })
        .expect("spawn the plugin epoch ticker");
}

/// The data of one plugin store.
pub struct HostState {
    /// Which plugin this store runs: tags its log lines.
    plugin: Arc<str>,
    /// Enforces the kind's memory limit and remembers a refusal, to name it in the error.
    pub(crate) limiter: MemoryLimiter,
    /// WASI for Rust's std on wasip2: no files, no network, no environment.
    wasi: WasiCtx,
    /// WASI's resource handles (streams, pollables).
    pub(super) table: ResourceTable,
    /// The plugin's stderr, where a Rust panic message lands: quoted when the call traps.
    stderr: MemoryOutputPipe,
    /// The running call's time limit.
    pub(super) budget: CallBudget,
}

impl HostState {
    /// What the plugin wrote to stderr, as text (the panic message of a Rust plugin).
    pub(crate) fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents())
            .trim()
            .to_string()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl host_log::Host for HostState {
    fn log(&mut self, level: host_log::Level, message: String) {
        let message = truncate(&message, MAX_LOG_MESSAGE);
        let plugin = &*self.plugin;
        match level {
            host_log::Level::Trace => tracing::trace!(plugin, "{message}"),
            host_log::Level::Debug => tracing::debug!(plugin, "{message}"),
            host_log::Level::Info => tracing::info!(plugin, "{message}"),
            host_log::Level::Warn => tracing::warn!(plugin, "{message}"),
            host_log::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

/// Cuts `s` to at most `max` bytes, on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A memory limit that traps the growing call (instead of letting `memory.grow` return -1,
/// which a Rust guest turns into an abort with no word of why) and remembers the request.
pub(crate) struct MemoryLimiter {
    /// Most bytes of linear memory an instance of this store may have.
    pub(crate) limit: usize,
    /// The request that was refused, if one was: turns a trap into a "memory limit" error.
    pub(crate) refused: Option<usize>,
    /// Bytes of the instance's largest linear memory: whether it is small enough to keep.
    pub(crate) largest: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.refused = Some(desired);
            wasmtime::bail!(
                "memory limit of {} bytes hit (asked for {desired})",
                self.limit
            );
        }
        self.largest = self.largest.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
