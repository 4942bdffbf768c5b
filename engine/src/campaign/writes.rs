//! The campaign service's writes to the store. A device's progress (with the statistics it
//! moves and the events it makes) waits in a queue and is written with the others in one batch
//! every [`WRITE_EVERY`], or as soon as [`WRITE_AT`] changes wait, by a task of its own: not
//! under the scheduler's lock, and not one store write per change. A task's change (and a
//! batch of enrolments) is written at once, after everything queued before it, and durably
//! when asked: the journal keeps the order in which things happened. Events are announced
//! once written.
//!
//! Each change is serialized once, as it is written: a device's progress record is the data
//! of its last event in the batch, and the statistics' records are written once per batch,
//! moved by every change in it. The statistics in memory move as they are written (and back
//! when the store refuses), so they never count what the store does not hold.
//!
//! What a crash can lose is the last interval's device changes, as sled's own flush interval
//! already allows: a device whose launch is lost is tried again as if it had not started, one
//! whose end is lost is tried again and found upgraded. The statistics are written in the
//! same batch as the progress they count, so they never disagree with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::progress::DeviceProgress;
use super::{CampaignEvent, Inner};
use crate::journal::NewEvent;
use crate::stats::{Counters, Shifts, Subject};
use crate::store::{Batch, Record, StoreError, encode, encode_json};
use crate::sync::lock;

/// How long a device's change waits to be written, at most.
pub const WRITE_EVERY: Duration = Duration::from_millis(50);

/// Changes waiting that make the writer write at once.
const WRITE_AT: usize = 4096;

/// Changes written together: records, the statistics they move, and the events they make.
#[derive(Default)]
pub(crate) struct Changes {
    /// Records, the last value of each key.
    puts: HashMap<String, Vec<u8>>,
    /// Device progress records, each the data of its device's last `Device` event: that
    /// event's index in `events`, by key.
    progress: HashMap<String, usize>,
    /// How the statistics move.
    shifts: Shifts,
    /// The events, in order.
    events: Vec<CampaignEvent>,
}

impl Changes {
    /// Sets `key` to `value`.
    pub(crate) fn put(&mut self, key: String, value: &impl Record) {
        self.puts.insert(key, encode(value));
    }

    /// A device's progress, kept at `key`, and its event.
    pub(crate) fn device(&mut self, key: String, progress: DeviceProgress) {
        self.progress.insert(key, self.events.len());
        self.events.push(CampaignEvent::Device(progress));
    }

    /// An event.
    pub(crate) fn event(&mut self, event: CampaignEvent) {
        self.events.push(event);
    }

    /// A device's share of `subject`'s statistics going from `before` to `after`.
    pub(crate) fn shift(&mut self, subject: &Subject, before: &Counters, after: &Counters) {
        self.shifts.add(subject, before, after);
    }

    /// These changes, then `later`.
    pub(crate) fn then(&mut self, later: Changes) {
        self.puts.extend(later.puts);
        let offset = self.events.len();
        (self.progress).extend(later.progress.into_iter().map(|(k, i)| (k, i + offset)));
        self.shifts.extend(later.shifts);
        self.events.extend(later.events);
    }
}

/// The queue and what serializes the writes.
#[derive(Default)]
pub(crate) struct Writes {
    /// What waits, and how many changes made it.
    queued: Mutex<(Changes, usize)>,
    /// Held while a batch is written: batches are written in the order they were taken.
    writing: Mutex<()>,
    /// Wakes the writer when the queue is long; its own `Arc`, so the waiting writer holds no
    /// `Inner`.
    full: Arc<Notify>,
}

impl Inner {
    /// Queues one change: what `change` adds to the queue.
    pub(crate) fn queue(&self, change: impl FnOnce(&mut Changes)) {
        let mut queued = lock(&self.writes.queued);
        change(&mut queued.0);
        queued.1 += 1;
        if queued.1 == WRITE_AT {
            self.writes.full.notify_one();
        }
    }

    /// Writes what is queued, then `changes`, then `batch`, in one batch (flushed to disk
    /// when `durable`), and announces the events.
    pub(crate) fn write_now(
        &self,
        batch: Batch,
        changes: Changes,
        durable: bool,
    ) -> Result<(), StoreError> {
        let _writing = lock(&self.writes.writing);
        let (mut all, _) = std::mem::take(&mut *lock(&self.writes.queued));
        all.then(changes);
        let events = self.write(all, batch)?;
        if durable {
            self.store.flush()?;
        }
        self.announce(events);
        Ok(())
    }

    /// Writes what is queued, if anything is.
    pub(crate) fn write_queued(&self) {
        let _writing = lock(&self.writes.writing);
        let (queued, changes) = {
            let mut queued = lock(&self.writes.queued);
            if queued.1 == 0 {
                return;
            }
            std::mem::take(&mut *queued)
        };
        match self.write(queued, Batch::new()) {
            Ok(events) => self.announce(events),
            Err(error) => tracing::error!(%error, changes, "device progress not saved"),
        }
    }
}

impl Inner {
    /// Writes `changes`, then `batch`, with the journal's record of the events, in one batch;
    /// the events written.
    fn write(&self, changes: Changes, batch: Batch) -> Result<Vec<CampaignEvent>, StoreError> {
        let journaled: Vec<NewEvent> = changes.events.iter().map(|e| e.journaled()).collect();
        let mut all = Batch::new();
        all.puts.extend(changes.puts);
        for (key, index) in changes.progress {
            all.put_bytes(key, encode_json(journaled[index].data.as_str()));
        }
        all.puts.extend(batch.puts);
        all.removes = batch.removes;
        let undo = changes.shifts.reversed();
        self.ledger.count(&mut all, changes.shifts);
        if let Err(error) = self.journal.append(all, journaled) {
            self.ledger.count(&mut Batch::new(), undo);
            return Err(error);
        }
        Ok(changes.events)
    }

    /// Tells the engine's own followers of `events` (after they are written).
    fn announce(&self, events: Vec<CampaignEvent>) {
        for event in events {
            let _ = self.events.send(event);
        }
    }
}

/// Writes what the campaign service queues, every [`WRITE_EVERY`] or when the queue is long,
/// until the service is dropped (which writes what is left).
pub(super) async fn run(inner: Weak<Inner>) {
    loop {
        let full = {
            let Some(inner) = inner.upgrade() else { return };
            inner.write_queued();
            inner.writes.full.clone()
        };
        tokio::select! {
            () = full.notified() => {}
            () = tokio::time::sleep(WRITE_EVERY) => {}
        }
    }
}
