//! One loaded plugin: a component compiled once, checked against its world and
//! pre-instantiated, with a pool of warm instances and a limit on concurrent calls.
//!
//! A call takes an idle instance (or makes one: instantiate, then `configure` with the
//! plugin's settings), arms the time limit, runs, and gives the instance back only if it
//! answered and its memory is small enough to keep; an instance whose call failed is dropped
//! with its store.

use super::bindings::World;
use super::check::worlds_of;
use super::host::{CallLimits, HostState, PluginHost};
use super::{PluginError, PluginKind};
use crate::sync::lock;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Semaphore;
use wasmtime::{Store, Trap};

/// Longest text (reason, error message) a plugin may answer with, as the WIT contract says.
pub(crate) const MAX_TEXT_BYTES: usize = 1024;

/// A loaded plugin of world `W`. Shared as `Arc<Plugin<W>>`: a registry swap replaces the
/// `Arc`, and calls in flight finish on the plugin they started on.
pub struct Plugin<W: World> {
    /// Name given at installation: in every log line and error about this plugin.
    name: Arc<str>,
    /// The host whose engine compiled it; makes its stores.
    host: PluginHost,
    /// The component, linked and checked against `W`: instantiating it costs no compilation.
    pre: W::Pre,
    /// Given to `configure` on every new instance.
    settings: Vec<(String, String)>,
    /// Instances that answered their last call, ready for the next one.
    idle: Mutex<Vec<Warm<W>>>,
    /// Back-pressure: at most `max_concurrent` calls of this plugin run at once.
    permits: Semaphore,
}

/// An instance with its store.
struct Warm<W> {
    /// Holds the instance's memory and its limits; dropped with the instance after a failure.
    store: Store<HostState>,
    /// The instance's typed exports.
    bindings: W,
}

impl<W: World> Plugin<W> {
    /// Compiles `wasm`, checks that it implements `W`, and makes (and configures) a first
    /// instance, so a bad component or bad settings are refused here and not at the first call.
    /// Compiling takes from milliseconds to seconds: call it off the network path.
    pub fn load(
        host: &PluginHost,
        name: &str,
        wasm: &[u8],
        settings: Vec<(String, String)>,
    ) -> Result<Self, PluginError> {
        let component = host.compile(wasm).map_err(|e| PluginError::Invalid {
            plugin: name.into(),
            reason: format!("{e:#}"),
        })?;
        let linked = host.link(name, &component)?;
        let pre = W::pre(linked.clone()).map_err(|e| {
            PluginError::wrong_world(name, W::KIND, &worlds_of(&linked), format!("{e:#}"))
        })?;
        let plugin = Plugin {
            name: name.into(),
            host: host.clone(),
            pre,
            settings,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(host.config().limits(W::KIND).max_concurrent),
        };
        let first = plugin.instantiate()?;
        plugin.give_back(first);
        Ok(plugin)
    }

    /// The same component under the same name with other settings: no compilation, a fresh
    /// pool; refused as [`Self::load`] refuses bad settings. Blocks: instantiates.
    pub fn reconfigured(&self, settings: Vec<(String, String)>) -> Result<Self, PluginError> {
        let plugin = Plugin {
            name: self.name.clone(),
            host: self.host.clone(),
            pre: self.pre.clone(),
            settings,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(self.host.config().limits(W::KIND).max_concurrent),
        };
        let first = plugin.instantiate()?;
        plugin.give_back(first);
        Ok(plugin)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> PluginKind {
        W::KIND
    }

    pub fn settings(&self) -> &[(String, String)] {
        &self.settings
    }

    fn limits(&self) -> &CallLimits {
        self.host.config().limits(W::KIND)
    }

    /// Runs one call on this thread under the kind's limits. Blocks for up to the time limit:
    /// async code uses [`Plugin::run`].
    pub(crate) fn call<R>(
        &self,
        f: impl FnOnce(&W, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let counters = self.host.counters();
        counters.called(W::KIND);
        let started = Instant::now();
        let answer = self.call_warm(f);
        counters.took(W::KIND, started.elapsed());
        answer
    }

    /// [`Plugin::call`] on an idle instance, or a new one.
    fn call_warm<R>(
        &self,
        f: impl FnOnce(&W, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        // Popped in a statement of its own: the pool's lock is not held while a new instance
        // is made (a match on `lock(..).pop()` would hold it through the arms).
        let idle = lock(&self.idle).pop();
        let mut warm = match idle {
            Some(warm) => warm,
            None => self.instantiate()?,
        };
        self.host.arm_deadline(&mut warm.store, W::KIND);
        match f(&warm.bindings, &mut warm.store) {
            Ok(answer) => {
                self.give_back(warm);
                Ok(answer)
            }
            Err(e) => Err(self.failed(e, warm.store.data())),
        }
    }

    /// Runs `job` (which makes calls of this plugin) on the blocking pool, after waiting for a
    /// permit, so neither the wait for a slow plugin nor its run blocks async tasks (inline
    /// when the host says so: [`HostConfig::calls_inline`](super::HostConfig::calls_inline)).
    pub(crate) async fn run<R: Send + 'static>(
        self: &Arc<Self>,
        job: impl FnOnce(&Self) -> Result<R, PluginError> + Send + 'static,
    ) -> Result<R, PluginError> {
        let aborted = |reason: String| PluginError::Aborted {
            plugin: self.name.to_string(),
            reason,
        };
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| aborted(e.to_string()))?;
        if self.host.config().calls_inline {
            return job(self);
        }
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || job(&this))
            .await
            .map_err(|e| aborted(e.to_string()))?
    }

    /// A new instance of the component, configured with the plugin's settings.
    fn instantiate(&self) -> Result<Warm<W>, PluginError> {
        let mut store = self.host.new_store(&self.name, W::KIND);
        self.host.arm_deadline(&mut store, W::KIND);
        let bindings =
            W::instantiate(&self.pre, &mut store).map_err(|e| self.failed(e, store.data()))?;
        match bindings.configure(&mut store, &self.settings) {
            Ok(Ok(())) => Ok(Warm { store, bindings }),
            Ok(Err(message)) => Err(PluginError::Settings {
                plugin: self.name.to_string(),
                message,
            }),
            Err(e) => Err(self.failed(e, store.data())),
        }
    }

    /// Keeps an instance that answered for the next call, unless its memory grew too large.
    fn give_back(&self, warm: Warm<W>) {
        if warm.store.data().limiter.largest <= self.limits().reuse_up_to_bytes {
            lock(&self.idle).push(warm);
        }
    }

    /// Names why a call failed: the memory limit, the time limit, or a trap (with what the
    /// plugin printed, usually its panic message). Logs it.
    fn failed(&self, error: wasmtime::Error, state: &HostState) -> PluginError {
        let plugin = self.name.to_string();
        let limits = self.limits();
        let err = if let Some(requested) = state.limiter.refused {
            PluginError::MemoryLimit {
                plugin,
                requested,
                limit: limits.memory_bytes,
            }
        } else if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            PluginError::Timeout {
                plugin,
                limit: limits.time,
            }
        } else {
            let reason = match (error.downcast_ref::<Trap>(), state.stderr_text()) {
                (Some(trap), said) if !said.is_empty() => format!("{trap}; plugin said: {said}"),
                (Some(trap), _) => trap.to_string(),
                (None, _) => format!("{error:#}"),
            };
            PluginError::Trap { plugin, reason }
        };
        self.report(err)
    }

    /// Logs and counts a failed call.
    fn report(&self, err: PluginError) -> PluginError {
        self.host.counters().failed(W::KIND);
        tracing::warn!(plugin = %self.name, kind = %W::KIND, error = %err, "plugin call failed");
        err
    }

    /// Fails with [`PluginError::OversizedResult`] if a byte or string answer is too large.
    pub(crate) fn check_size(
        &self,
        what: &'static str,
        size: usize,
        limit: usize,
    ) -> Result<(), PluginError> {
        if size <= limit {
            return Ok(());
        }
        let err = PluginError::OversizedResult {
            plugin: self.name.to_string(),
            what,
            size,
            limit,
        };
        Err(self.report(err))
    }

    /// Fails with [`PluginError::InvalidResult`], logged.
    pub(crate) fn invalid<R>(&self, reason: String) -> Result<R, PluginError> {
        let err = PluginError::InvalidResult {
            plugin: self.name.to_string(),
            reason,
        };
        Err(self.report(err))
    }

    /// The byte-result limit of this kind.
    pub(crate) fn max_result_bytes(&self) -> usize {
        self.limits().max_result_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{DifferPlugin, HostConfig, embedded};

    fn differ_keeping_up_to(bytes: usize) -> DifferPlugin {
        let mut config = HostConfig::default();
        config.differ.reuse_up_to_bytes = bytes;
        let host = PluginHost::new(config).unwrap();
        Plugin::load(&host, "bsdiff", embedded::BSDIFF, Vec::new()).unwrap()
    }

    /// Makes a patch from `old` to `new`; returns how many instances are idle afterwards.
    fn idle_after_diff(differ: &DifferPlugin, old: &[u8], new: &[u8]) -> usize {
        differ.make_patch_blocking(old, new).unwrap().unwrap();
        lock(&differ.idle).len()
    }

    #[test]
    fn an_instance_serves_the_next_call_only_while_its_memory_is_small() {
        let (small_old, small_new) = ([1; 64], [2; 64]);
        // A 1 MiB diff grows the instance's memory well past 4 MiB (suffix arrays, images).
        let big: Vec<u8> = (0..1u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();

        let differ = differ_keeping_up_to(4 << 20);
        assert_eq!(lock(&differ.idle).len(), 1, "made at load, kept");
        assert_eq!(idle_after_diff(&differ, &small_old, &small_new), 1);
        assert_eq!(idle_after_diff(&differ, &big, &big[1..]), 0, "dropped");
        assert_eq!(
            idle_after_diff(&differ, &small_old, &small_new),
            1,
            "a fresh instance, small again, is kept"
        );

        let fresh_every_call = differ_keeping_up_to(0);
        assert_eq!(
            idle_after_diff(&fresh_every_call, &small_old, &small_new),
            0
        );
    }
}
