//! `SimStore`: the engine's store in a simulation. It lives in memory, outlasts the engines
//! started on it, and loses in a crash what sled loses when its process is killed: writes not
//! yet durable. sled makes a write durable when it is flushed, or on its own within
//! [`BACKGROUND_FLUSH`] (its `flush_every_ms`); so a crash keeps every flushed batch and every
//! batch older than that, in order, and drops the rest. An engine's handle stops working when
//! it crashes: what its last tasks try to read or write after that fails, as in a dead process.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fota_engine::store::{Batch, Store, StoreError};
use fota_engine::sync::lock;
use tokio::time::Instant;

/// How long sled leaves a write in memory before its flusher makes it durable unasked.
pub const BACKGROUND_FLUSH: Duration = Duration::from_millis(500);

type Map = BTreeMap<String, Vec<u8>>;

/// A store that engines on a simulated network start on, one after another.
#[derive(Clone, Default)]
pub struct SimStore {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// Every write, durable or not: what the running engine reads.
    live: Map,
    /// What a crash keeps.
    durable: Map,
    /// Batches applied since they last became durable, oldest first, with when.
    pending: VecDeque<(Instant, Batch)>,
    /// The engine allowed to use the store: handles of crashed ones carry an older number.
    incarnation: u64,
}

impl SimStore {
    /// An empty store.
    pub fn new() -> SimStore {
        SimStore::default()
    }

    /// The handle an engine starting now uses.
    pub fn open(&self) -> Arc<dyn Store> {
        let incarnation = lock(&self.state).incarnation;
        Arc::new(Handle {
            state: self.state.clone(),
            incarnation,
        })
    }

    /// The engine using the store crashed: what was not durable is gone, and its handle no
    /// longer works.
    pub fn crash(&self) {
        let mut state = lock(&self.state);
        state.settle(Instant::now());
        state.pending.clear();
        state.live = state.durable.clone();
        state.incarnation += 1;
    }
}

impl State {
    /// Makes durable what sled's flusher would have by `now`.
    fn settle(&mut self, now: Instant) {
        while let Some((at, _)) = self.pending.front() {
            if now.duration_since(*at) < BACKGROUND_FLUSH {
                break;
            }
            let (_, batch) = self.pending.pop_front().expect("a front batch");
            apply(&mut self.durable, batch);
        }
    }
}

fn apply(map: &mut Map, batch: Batch) {
    for key in batch.removes {
        map.remove(&key);
    }
    map.extend(batch.puts);
}

/// One engine's way into a [`SimStore`].
struct Handle {
    state: Arc<Mutex<State>>,
    incarnation: u64,
}

impl Handle {
    /// The store's state, unless this handle's engine crashed.
    fn state(&self) -> Result<std::sync::MutexGuard<'_, State>, StoreError> {
        let state = lock(&self.state);
        if state.incarnation != self.incarnation {
            return Err(StoreError::Io("the engine crashed".into()));
        }
        Ok(state)
    }
}

impl Store for Handle {
    fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.state()?.live.get(key).cloned())
    }

    fn scan_raw(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let state = self.state()?;
        let under = state.live.range(prefix.to_string()..);
        Ok(under
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut state = self.state()?;
        let now = Instant::now();
        state.settle(now);
        apply(&mut state.live, batch.clone());
        state.pending.push_back((now, batch));
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        let mut state = self.state()?;
        let pending = std::mem::take(&mut state.pending);
        for (_, batch) in pending {
            apply(&mut state.durable, batch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(store: &dyn Store, key: &str, value: &[u8]) {
        let mut batch = Batch::new();
        batch.put_bytes(key, value.to_vec());
        store.apply(batch).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_crash_keeps_flushed_and_settled_writes_and_loses_the_rest() {
        let store = SimStore::new();
        let engine = store.open();
        put(engine.as_ref(), "a/flushed", b"1");
        engine.flush().unwrap();
        put(engine.as_ref(), "a/settled", b"2");
        tokio::time::sleep(BACKGROUND_FLUSH).await;
        put(engine.as_ref(), "a/recent", b"3");
        assert_eq!(engine.scan_raw("a/").unwrap().len(), 3);

        store.crash();
        assert!(
            engine.get_raw("a/flushed").is_err(),
            "a crashed engine reads nothing"
        );
        assert!(engine.flush().is_err());
        let again = store.open();
        let keys: Vec<String> = again
            .scan_raw("a/")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["a/flushed", "a/settled"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_survives_whole_or_not_at_all_and_removes_are_kept() {
        let store = SimStore::new();
        let engine = store.open();
        put(engine.as_ref(), "k/gone", b"x");
        engine.flush().unwrap();
        let mut batch = Batch::new();
        batch
            .put_bytes("k/one", vec![1])
            .put_bytes("k/two", vec![2])
            .remove("k/gone");
        engine.apply(batch.clone()).unwrap();
        store.crash();
        let lost = store.open();
        assert!(lost.get_raw("k/one").unwrap().is_none());
        assert!(lost.get_raw("k/gone").unwrap().is_some());

        lost.apply(batch).unwrap();
        lost.flush().unwrap();
        store.crash();
        let kept = store.open();
        assert!(kept.get_raw("k/one").unwrap().is_some());
        assert!(kept.get_raw("k/two").unwrap().is_some());
        assert!(kept.get_raw("k/gone").unwrap().is_none());
    }
}
