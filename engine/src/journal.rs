//! The event journal: every event the engine tells integrators of (a task's status, a device's
//! progress, an alarm, a registration when asked), numbered in one order and kept in the store.
//! An event is written in the same store batch as the change it reports, so the store never
//! holds one without the other; its number is its id everywhere (the SSE id of `/v1/events`,
//! the `id` of a webhook delivery), and stays valid across a restart: an event is shown to
//! nobody before it is on disk ([`Journal::make_durable`]), so a number once shown is never
//! given to another event, even after a kill. The last [`DEFAULT_RETAINED`] events are shown;
//! an append's events are kept together, up to [`EVENTS_PER_RECORD`] in one store record (one
//! write for many events, not one each), and a record goes once all its events fall out.
//!
//! Owns numbering, retention and reading back; not what the events mean (their kinds and data
//! are their writers'). Taps ([`Tap`]) add their own writes to an append's batch (the webhooks'
//! outboxes), so what they keep is as durable as the event.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::watch;

use crate::clock::{Clock, UnixMillis};
use crate::store::{Batch, Store, StoreError, decode, encode};
use crate::sync::{lock, read, write};

/// Events kept by default, for clients that reconnect.
pub const DEFAULT_RETAINED: u64 = 10_000;
/// Events in one store record, at most: an append of more writes several. Small enough that a
/// sled leaf of such records (16 at most) stays under sled's blob threshold (128 KiB), which
/// a leaf of larger records crosses, making each rewrite of it a file of its own.
pub const EVENTS_PER_RECORD: usize = 8;
/// Key prefix of the journal's records.
const EVENTS: &str = "journal/";
/// Records read from the store at once.
const READ_RECORDS: usize = 8;

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
    pub data: EventData,
}

/// What an event says: JSON text, serialized once by its writer and kept as it is (clients
/// read it as text; the engine never looks into it).
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventData(Box<RawValue>);

impl EventData {
    /// `value` as an event's data.
    pub fn of(value: &impl Serialize) -> EventData {
        EventData(serde_json::value::to_raw_value(value).expect("event data serializes to JSON"))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The JSON, parsed.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.as_str()).expect("event data is JSON")
    }
}

impl PartialEq for EventData {
    fn eq(&self, other: &EventData) -> bool {
        self.as_str() == other.as_str()
    }
}

impl std::fmt::Debug for EventData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The events of the record at `key` (the first event's): many, or one alone, as releases
/// before records of many wrote.
fn stored_events(key: &str, bytes: &[u8]) -> Result<Vec<Event>, StoreError> {
    decode::<Vec<Event>>(key, bytes).or_else(|many| match decode::<Event>(key, bytes) {
        Ok(one) => Ok(vec![one]),
        Err(_) => Err(many),
    })
}

/// An event to write: its kind and data; the journal gives it its number and time.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// What happened.
    pub kind: &'static str,
    /// What its writer says of it.
    pub data: EventData,
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
    /// Events shown: those this many before the last written are not, and a record goes once
    /// all of its are out.
    retained: u64,
    /// The ids given and the records holding them, held while an append is applied, so ids
    /// reach the store in order.
    given: Mutex<Given>,
    /// The last id written, for followers to wait on.
    written: watch::Sender<u64>,
    /// The last id known to be on disk, held while the store flushes (one flush serves every
    /// caller waiting).
    durable: Mutex<u64>,
    /// Writers riding along with every append.
    taps: RwLock<Vec<Arc<dyn Tap>>>,
}

/// The ids given so far and where they are kept.
struct Given {
    /// The last id given.
    last: u64,
    /// The first and last id of each record in the store, oldest first.
    records: VecDeque<(u64, u64)>,
}

impl Given {
    /// How many of the oldest records hold only events out of retention once `newest` is
    /// written.
    fn out_of_retention(&self, newest: u64, retained: u64) -> usize {
        (self.records.iter())
            .take_while(|(_, last)| last + retained <= newest)
            .count()
    }
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
        let mut records = VecDeque::new();
        for (key, bytes) in store.scan_raw(EVENTS)? {
            let events = stored_events(&key, &bytes)?;
            if let (Some(first), Some(last)) = (events.first(), events.last()) {
                records.push_back((first.id, last.id));
            }
        }
        let last = records.back().map_or(0, |(_, last)| *last);
        let mut given = Given { last, records };
        let out = given.out_of_retention(last, retained);
        if out > 0 {
            let mut batch = Batch::new();
            for (first, _) in given.records.drain(..out) {
                batch.remove(event_key(first));
            }
            store.apply(batch)?;
        }
        Ok(Journal {
            inner: Arc::new(Inner {
                store,
                clock,
                retained,
                given: Mutex::new(given),
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
    /// with what the taps add and the removal of the records whose events all fall out of
    /// retention. When the store refuses, nothing is written and no number is used.
    pub fn append(&self, mut batch: Batch, events: Vec<NewEvent>) -> Result<(), StoreError> {
        let inner = &self.inner;
        let mut given = lock(&inner.given);
        let time = inner.clock.now();
        let events: Vec<Event> = (given.last + 1..)
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
        let mut records = Vec::new();
        for chunk in events.chunks(EVENTS_PER_RECORD) {
            let (first, last) = (chunk[0].id, chunk[chunk.len() - 1].id);
            if last + inner.retained > newest {
                batch.put_bytes(event_key(first), encode(chunk));
                records.push((first, last));
            }
        }
        let out = given.out_of_retention(newest, inner.retained);
        for (first, _) in given.records.range(..out) {
            batch.remove(event_key(*first));
        }
        let taps = read(&inner.taps).clone();
        for tap in &taps {
            tap.write(&events, &mut batch);
        }
        inner.store.apply(batch)?;
        given.records.drain(..out);
        given.records.extend(records);
        given.last = newest;
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
        let last = self.last_id();
        let durable = self.make_durable(last)?;
        let after = after.max(last.saturating_sub(self.inner.retained));
        // The record holding `after + 1` starts at most EVENTS_PER_RECORD - 1 before it.
        let mut from = (after + 1)
            .checked_sub(EVENTS_PER_RECORD as u64)
            .filter(|start| *start > 0)
            .map(event_key);
        let mut events = Vec::new();
        loop {
            let records =
                (self.inner.store).scan_after_raw(EVENTS, from.as_deref(), READ_RECORDS)?;
            let last_read = records.len() < READ_RECORDS;
            for (key, bytes) in records {
                let record = stored_events(&key, &bytes)?;
                from = Some(key);
                for event in record {
                    if event.id > durable || events.len() == limit {
                        return Ok(events);
                    }
                    if event.id > after {
                        events.push(event);
                    }
                }
            }
            if last_read {
                return Ok(events);
            }
        }
    }

    /// Waits until an event after `after` is written.
    pub async fn wait_after(&self, after: u64) {
        let mut written = self.inner.written.subscribe();
        let _ = written.wait_for(|last| *last > after).await;
    }
}

/// The key of the record whose first event is `id`: fixed width, so keys sort as ids do.
fn event_key(id: u64) -> String {
    format!("{EVENTS}{id:020}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::{SledStore, StoreExt};

    fn event(n: u64) -> NewEvent {
        NewEvent {
            kind: "test",
            data: EventData::of(&json!({ "n": n })),
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
        // The clock goes on from 5 with real time: one append, one time.
        assert!(events[0].time >= 5, "{}", events[0].time);
        assert_eq!(events[0].time, events[1].time);
        assert_eq!(events[0].kind, "test");
        assert_eq!(events[2].data.to_value(), json!({ "n": 3 }));
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
        let store: Arc<dyn Store> = Arc::new(SledStore::reopen(&dir).unwrap());
        let journal = Journal::keeping(store.clone(), Clock::starting_at(0), 2).unwrap();
        assert_eq!(journal.last_id(), 5);
        assert_eq!(ids(&journal.read_after(0, 10).unwrap()), [4, 5], "trimmed");
        journal.append(Batch::new(), vec![event(6)]).unwrap();
        assert_eq!(ids(&journal.read_after(2, 10).unwrap()), [5, 6]);
        drop((journal, store));
        std::fs::remove_dir_all(dir).unwrap();
    }

    const R: u64 = EVENTS_PER_RECORD as u64;

    fn records(store: &Arc<dyn Store>) -> usize {
        store.scan_raw(EVENTS).unwrap().len()
    }

    #[test]
    fn a_long_append_is_kept_in_records_of_many_and_read_from_any_event() {
        let store: Arc<dyn Store> = Arc::new(SledStore::temporary().unwrap());
        let journal = Journal::keeping(store.clone(), Clock::starting_at(0), 1_000).unwrap();
        let last = 2 * R + R / 2;
        journal
            .append(Batch::new(), (1..=last).map(event).collect())
            .unwrap();
        journal.append(Batch::new(), vec![event(last + 1)]).unwrap();
        assert_eq!(records(&store), 4, "R, R, R/2, then 1");
        for after in [0, 1, R - 1, R, R + 1, 2 * R, last - 1, last, last + 1] {
            let read = journal.read_after(after, 5).unwrap();
            let expected: Vec<u64> = (after + 1..=last + 1).take(5).collect();
            assert_eq!(ids(&read), expected, "after {after}");
        }
        assert_eq!(journal.read_after(0, 1_000).unwrap().len() as u64, last + 1);
        let read = journal.read_after(R + 2, 1).unwrap();
        assert_eq!(read[0].data.to_value(), json!({ "n": R + 3 }));
    }

    #[test]
    fn records_go_once_all_their_events_fall_out_and_a_reopen_finds_them() {
        let store: Arc<dyn Store> = Arc::new(SledStore::temporary().unwrap());
        let journal = Journal::keeping(store.clone(), Clock::starting_at(0), 2 * R).unwrap();
        journal
            .append(Batch::new(), (1..=3 * R).map(event).collect())
            .unwrap();
        assert_eq!(
            ids(&journal.read_after(0, 1).unwrap()),
            [R + 1],
            "the last 2R"
        );
        assert_eq!(records(&store), 2, "the first record was out as it came");
        journal
            .append(Batch::new(), vec![event(3 * R + 1)])
            .unwrap();
        assert_eq!(records(&store), 3, "R+1..2R holds 2 shown events");
        journal
            .append(Batch::new(), (3 * R + 2..=4 * R + 1).map(event).collect())
            .unwrap();
        assert_eq!(records(&store), 3, "R+1..2R went, 4R+1 made one more");
        drop(journal);
        let journal = Journal::keeping(store.clone(), Clock::starting_at(0), 1).unwrap();
        assert_eq!(journal.last_id(), 4 * R + 1);
        assert_eq!(records(&store), 1, "only the record holding the last event");
        journal
            .append(Batch::new(), vec![event(4 * R + 2)])
            .unwrap();
        assert_eq!(ids(&journal.read_after(0, 100).unwrap()), [4 * R + 2]);
    }

    #[test]
    fn events_written_one_per_record_by_an_earlier_release_are_read() {
        let store: Arc<dyn Store> = Arc::new(SledStore::temporary().unwrap());
        let mut batch = Batch::new();
        for n in 1..=3 {
            let old = Event {
                id: n,
                kind: "test".into(),
                time: 0,
                data: EventData::of(&json!({ "n": n })),
            };
            batch.put(event_key(n), &old);
        }
        store.apply(batch).unwrap();
        let journal = Journal::open(store, Clock::starting_at(0)).unwrap();
        journal.append(Batch::new(), vec![event(4)]).unwrap();
        assert_eq!(ids(&journal.read_after(1, 10).unwrap()), [2, 3, 4]);
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
