//! The event journal: every event the engine tells integrators of (a task's status, a device's
//! progress, an alarm, a registration when asked), numbered in one order and kept in the store.
//! An event is written in the same store batch as the change it reports, so the store never
//! holds one without the other; its number is its id everywhere (the SSE id of `/v1/events`,
//! the `id` of a webhook delivery), and stays valid across a restart: an event is shown to
//! nobody before it is on disk ([`Journal::make_durable`]), so a number once shown is never
//! given to another event, even after a kill. The last [`DEFAULT_RETAINED`] events are kept;
//! each append removes the one that falls out.
//!
//! Owns numbering, retention and reading back; not what the events mean (their kinds and data
//! are their writers'). Taps ([`Tap`]) add their own writes to an append's batch (the webhooks'
//! outboxes), so what they keep is as durable as the event.

use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use crate::clock::{Clock, UnixMillis};
use crate::store::{Batch, Store, StoreError, StoreExt};
use crate::sync::{lock, read, write};

/// Events kept by default, for clients that reconnect.
pub const DEFAULT_RETAINED: u64 = 10_000;
/// Key prefix of the journal's events.
const EVENTS: &str = "journal/";

/// One event, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Its number: 1, 2, 3, ... in the order the events were written; never given twice.
    pub id: u64,
    /// What happened (`task`, `device`, `device_failed`, ...), named by its writer.
    pub kind: String,
    /// When it was written.
    pub time: UnixMillis,
    /// What its writer says of it (a task, a device's progress, ...).
    pub data: Value,
}

/// An event to write: its kind and data; the journal gives it its number and time.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// What happened.
    pub kind: &'static str,
    /// What its writer says of it.
    pub data: Value,
}

/// Something that writes with every append, in the same batch (the webhooks' outboxes).
pub trait Tap: Send + Sync {
    /// Adds its writes for `events` to `batch`.
    fn write(&self, events: &[Event], batch: &mut Batch);
    /// `events` are in the store (not yet on disk): whoever waits on them may look.
    fn written(&self, events: &[Event]);
}

/// The journal. Cheap to clone.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Clock,
    /// Events kept: an append removes the one this many before it.
    retained: u64,
    /// The last id given, held while an append is applied, so ids reach the store in order.
    last: Mutex<u64>,
    /// The last id written, for followers to wait on.
    written: watch::Sender<u64>,
    /// The last id known to be on disk, held while the store flushes (one flush serves every
    /// caller waiting).
    durable: Mutex<u64>,
    /// Writers riding along with every append.
    taps: RwLock<Vec<Arc<dyn Tap>>>,
}

impl Journal {
    /// The journal kept in `store`, keeping the last [`DEFAULT_RETAINED`] events.
    pub fn open(store: Arc<dyn Store>, clock: Clock) -> Result<Journal, StoreError> {
        Journal::keeping(store, clock, DEFAULT_RETAINED)
    }

    /// The journal kept in `store`, keeping the last `retained` events (at least one): older
    /// ones left by a larger setting go now.
    pub fn keeping(
        store: Arc<dyn Store>,
        clock: Clock,
        retained: u64,
    ) -> Result<Journal, StoreError> {
        let retained = retained.max(1);
        let last = store
            .last::<Event>(EVENTS)?
            .map_or(0, |(_, event)| event.id);
        let mut batch = Batch::new();
        for (key, _) in store.scan_after::<Event>(EVENTS, None, usize::MAX)? {
            if event_id(&key).is_some_and(|id| id + retained <= last) {
                batch.remove(key);
            }
        }
        if !batch.removes.is_empty() {
            store.apply(batch)?;
        }
        Ok(Journal {
            inner: Arc::new(Inner {
                store,
                clock,
                retained,
                last: Mutex::new(last),
                written: watch::channel(last).0,
                durable: Mutex::new(last),
                taps: RwLock::new(Vec::new()),
            }),
        })
    }

    /// Adds `tap` to every append from now on.
    pub fn tap(&self, tap: Arc<dyn Tap>) {
        write(&self.inner.taps).push(tap);
    }

    /// Numbers `events` and writes them with `batch` (the change they report) in one batch,
    /// with what the taps add and the removal of the events that fall out of retention. When
    /// the store refuses, nothing is written and no number is used.
    pub fn append(&self, mut batch: Batch, events: Vec<NewEvent>) -> Result<(), StoreError> {
        let inner = &self.inner;
        let mut last = lock(&inner.last);
        let time = inner.clock.now();
        let events: Vec<Event> = (*last + 1..)
            .zip(events)
            .map(|(id, new)| Event {
                id,
                kind: new.kind.to_string(),
                time,
                data: new.data,
            })
            .collect();
        let Some(newest) = events.last().map(|event| event.id) else {
            return inner.store.apply(batch);
        };
        for event in &events {
            batch.put(event_key(event.id), event);
            if event.id > inner.retained {
                batch.remove(event_key(event.id - inner.retained));
            }
        }
        let taps = read(&inner.taps).clone();
        for tap in &taps {
            tap.write(&events, &mut batch);
        }
        inner.store.apply(batch)?;
        *last = newest;
        for tap in &taps {
            tap.written(&events);
        }
        inner.written.send_replace(newest);
        Ok(())
    }

    /// Makes every event up to `id` durable, flushing the store if it has not been since;
    /// returns the last id on disk (`id` or later).
    pub fn make_durable(&self, id: u64) -> Result<u64, StoreError> {
        let mut durable = lock(&self.inner.durable);
        if *durable < id {
            let written = *self.inner.written.borrow();
            self.inner.store.flush()?;
            *durable = written;
        }
        Ok(*durable)
    }

    /// The id of the last event written (0 before the first).
    pub fn last_id(&self) -> u64 {
        *self.inner.written.borrow()
    }

    /// Up to `limit` events after `after`, in order, every one on disk (made so first). The
    /// first may come later than `after + 1`: the ones between fell out of retention.
    pub fn read_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let durable = self.make_durable(self.last_id())?;
        let from = event_key(after);
        let events = self
            .inner
            .store
            .scan_after::<Event>(EVENTS, Some(&from), limit)?;
        Ok(events
            .into_iter()
            .map(|(_, event)| event)
            .take_while(|event| event.id <= durable)
            .collect())
    }

    /// Waits until an event after `after` is written.
    pub async fn wait_after(&self, after: u64) {
        let mut written = self.inner.written.subscribe();
        let _ = written.wait_for(|last| *last > after).await;
    }
}

/// The key of event `id`: fixed width, so keys sort as ids do.
fn event_key(id: u64) -> String {
    format!("{EVENTS}{id:020}")
}

/// The id a journal key holds.
fn event_id(key: &str) -> Option<u64> {
    key.strip_prefix(EVENTS)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::SledStore;

    fn event(n: u64) -> NewEvent {
        NewEvent {
            kind: "test",
            data: json!({ "n": n }),
        }
    }

    fn ids(events: &[Event]) -> Vec<u64> {
        events.iter().map(|event| event.id).collect()
    }

    fn tempdir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("fota-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn events_are_numbered_in_order_with_the_change_they_report() {
        let store: Arc<dyn Store> = Arc::new(SledStore::temporary().unwrap());
        let journal = Journal::open(store.clone(), Clock::starting_at(5)).unwrap();
        let mut batch = Batch::new();
        batch.put("thing/a", &"changed".to_string());
        journal.append(batch, vec![event(1), event(2)]).unwrap();
        journal.append(Batch::new(), vec![event(3)]).unwrap();
        let events = journal.read_after(0, 10).unwrap();
        assert_eq!(ids(&events), [1, 2, 3]);
        assert_eq!((events[0].time, &events[0].kind), (5, &"test".to_string()));
        assert_eq!(events[2].data, json!({ "n": 3 }));
        assert_eq!(ids(&journal.read_after(1, 1).unwrap()), [2]);
        assert_eq!(store.get::<String>("thing/a").unwrap().unwrap(), "changed");
    }

    #[test]
    fn only_the_last_retained_events_are_kept_and_numbering_goes_on_after_a_reopen() {
        let dir = tempdir("retention");
        {
            let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir).unwrap());
            let journal = Journal::keeping(store, Clock::starting_at(0), 3).unwrap();
            for n in 1..=5 {
                journal.append(Batch::new(), vec![event(n)]).unwrap();
            }
            assert_eq!(ids(&journal.read_after(0, 10).unwrap()), [3, 4, 5]);
        }
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir).unwrap());
        let journal = Journal::keeping(store.clone(), Clock::starting_at(0), 2).unwrap();
        assert_eq!(journal.last_id(), 5);
        assert_eq!(ids(&journal.read_after(0, 10).unwrap()), [4, 5], "trimmed");
        journal.append(Batch::new(), vec![event(6)]).unwrap();
        assert_eq!(ids(&journal.read_after(2, 10).unwrap()), [5, 6]);
        drop((journal, store));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A store whose writes all fail.
    struct Refusing(SledStore);

    impl Store for Refusing {
        fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.0.get_raw(key)
        }
        fn scan_raw(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            self.0.scan_raw(prefix)
        }
        fn apply(&self, _: Batch) -> Result<(), StoreError> {
            Err(StoreError::Io("disk full".into()))
        }
        fn flush(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[test]
    fn a_refused_append_writes_nothing_and_uses_no_number() {
        let store: Arc<dyn Store> = Arc::new(Refusing(SledStore::temporary().unwrap()));
        let journal = Journal::open(store, Clock::starting_at(0)).unwrap();
        assert!(journal.append(Batch::new(), vec![event(1)]).is_err());
        assert_eq!(journal.last_id(), 0);
        assert!(journal.read_after(0, 10).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_follower_waiting_after_the_last_id_wakes_on_the_next_append() {
        let store: Arc<dyn Store> = Arc::new(SledStore::temporary().unwrap());
        let journal = Journal::open(store, Clock::starting_at(0)).unwrap();
        let waiting = tokio::spawn({
            let journal = journal.clone();
            async move { journal.wait_after(0).await }
        });
        journal.append(Batch::new(), vec![event(1)]).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken in time")
            .unwrap();
    }
}
