//! The campaign service's writes to the store. A device's progress (with the statistics it
//! moves and the events it makes) waits in a queue and is written with the others in one batch
//! every [`WRITE_EVERY`], or as soon as [`WRITE_AT`] changes wait, by a task of its own: not
//! under the scheduler's lock, and not one store write per change. A task's change (and a
//! batch of enrolments) is written at once, after everything queued before it, and durably
//! when asked: the journal keeps the order in which things happened. Events are announced
//! once written.
//!
//! What a crash can lose is the last interval's device changes, as sled's own flush interval
//! already allows: a device whose launch is lost is tried again as if it had not started, one
//! whose end is lost is tried again and found upgraded. The statistics are written in the
//! same batch as the progress they count, so they never disagree with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::{CampaignEvent, Inner};
use crate::store::{Batch, StoreError};
use crate::sync::lock;

/// How long a device's change waits to be written, at most.
pub const WRITE_EVERY: Duration = Duration::from_millis(50);

/// Changes waiting that make the writer write at once.
const WRITE_AT: usize = 4096;

/// Changes waiting for the next batch: the last value of each key (a device changed twice,
/// the statistics moved by many devices, are written once), and the events in order.
#[derive(Default)]
pub(crate) struct Queued {
    puts: HashMap<String, Vec<u8>>,
    events: Vec<CampaignEvent>,
    changes: usize,
}

impl Queued {
    /// Everything queued, then `batch`: one batch.
    fn then(self, batch: Batch) -> Batch {
        let mut puts: Vec<(String, Vec<u8>)> = self.puts.into_iter().collect();
        puts.extend(batch.puts);
        Batch {
            puts,
            removes: batch.removes,
        }
    }
}

/// The queue and what serializes the writes.
#[derive(Default)]
pub(crate) struct Writes {
    /// What waits.
    queued: Mutex<Queued>,
    /// Held while a batch is written: batches are written in the order they were taken.
    writing: Mutex<()>,
    /// Wakes the writer when the queue is long; its own `Arc`, so the waiting writer holds no
    /// `Inner`.
    full: Arc<Notify>,
}

impl Inner {
    /// Queues a device's change: `batch` (puts only) and the `events` it makes.
    pub(crate) fn queue(&self, batch: Batch, events: Vec<CampaignEvent>) {
        debug_assert!(batch.removes.is_empty(), "a queued change only puts");
        let mut queued = lock(&self.writes.queued);
        queued.puts.extend(batch.puts);
        queued.events.extend(events);
        queued.changes += 1;
        if queued.changes == WRITE_AT {
            self.writes.full.notify_one();
        }
    }

    /// Writes what is queued, then `batch` with the journal's record of `events`, in one
    /// batch (flushed to disk when `durable`), and announces the events.
    pub(crate) fn write_now(
        &self,
        batch: Batch,
        events: Vec<CampaignEvent>,
        durable: bool,
    ) -> Result<(), StoreError> {
        let _writing = lock(&self.writes.writing);
        let mut queued = std::mem::take(&mut *lock(&self.writes.queued));
        let mut all_events = std::mem::take(&mut queued.events);
        all_events.extend(events);
        self.write(queued.then(batch), &all_events)?;
        if durable {
            self.store.flush()?;
        }
        self.announce(all_events);
        Ok(())
    }

    /// Writes what is queued, if anything is.
    pub(crate) fn write_queued(&self) {
        let _writing = lock(&self.writes.writing);
        let mut queued = std::mem::take(&mut *lock(&self.writes.queued));
        if queued.changes == 0 {
            return;
        }
        let (events, changes) = (std::mem::take(&mut queued.events), queued.changes);
        if let Err(error) = self.write(queued.then(Batch::new()), &events) {
            tracing::error!(%error, changes, "device progress not saved");
        }
        self.announce(events);
    }
}

impl Inner {
    /// Writes `batch` with the journal's record of `events`, in one batch.
    fn write(&self, batch: Batch, events: &[CampaignEvent]) -> Result<(), StoreError> {
        let journaled = events.iter().map(CampaignEvent::journaled).collect();
        self.journal.append(batch, journaled)
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
