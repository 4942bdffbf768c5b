//! Surveys ahead: while a cell has no room, the task's devices next in line there are surveyed
//! as they wait, so that when one of the cell's deliveries ends, the device that takes its
//! place starts its download at once instead of spending the slot's first seconds on a survey
//! (one to three round trips on NB-IoT, where a delivery of Q-Block1 bursts is thirty). Such a
//! survey stands for the device's attempt as a Register's does (the delivery's
//! `survey_max_age`, and the same registration), and its device goes before the others of its
//! cell when a slot frees. A device is surveyed ahead once per wait: one whose survey ahead
//! failed, or stopped standing before its turn came (its cell's slots turn over slowly, or it
//! fell asleep), is surveyed by its attempt, so a long wait costs its battery one survey at
//! most (one whose Register's survey was young enough to stand instead may be surveyed ahead
//! once that one stops standing). Owns which of a task's devices are surveyed ahead, in which
//! cell, and where each survey stands; the scheduler picks them and starts the surveys.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::task::AbortHandle;

use super::attempt::Standing;
use super::roster::Slot;
use crate::clock::UnixMillis;

/// Devices of a full cell surveyed ahead at once, done or under way, for `most` slots in it:
/// a fifth of them, one at least. A cell of 25 slots whose deliveries take 30 s frees one
/// every 1.2 s, so five ready cover the 1-4 s a survey takes; each one more is a survey that
/// may stop standing before its device's turn.
pub(crate) fn per_cell(most: usize) -> usize {
    most.div_ceil(5).max(1)
}

/// How long a device must still be awake for a survey ahead to start: three reads and a
/// retransmission at NB-IoT round trips. One its sleep cuts has cost the device its answers
/// for nothing, and leaves the attempt to survey it (13 % of them failed so, at 1,000 devices,
/// before this rule).
pub(crate) const AWAKE_AT_LEAST: Duration = Duration::from_secs(10);

/// A task's surveys ahead, by their devices' slots. Dropped with its task (or the scheduler),
/// it stops the surveys still under way.
#[derive(Default)]
pub(crate) struct SurveysAhead {
    /// Each device with a survey ahead under way or standing: its cell, and its survey. Only
    /// these are looked at every tick.
    devices: HashMap<Slot, Ahead>,
    /// How many of them each cell has.
    per_cell: HashMap<u32, usize>,
    /// Devices whose survey ahead failed or stopped standing in their current wait: not
    /// surveyed ahead again until they start.
    spent: HashSet<Slot>,
}

/// One device surveyed ahead.
struct Ahead {
    /// The cell it waits for.
    cell: u32,
    /// Its survey.
    survey: Survey,
}

/// Where a survey ahead stands.
enum Survey {
    /// Under way: the device waits for it before it may start.
    UnderWay(AbortHandle),
    /// Standing: the device's attempt finds it.
    Done(Standing),
}

impl SurveysAhead {
    /// Devices of `cell` surveyed ahead now (under way, or standing).
    pub(crate) fn in_cell(&self, cell: u32) -> usize {
        self.per_cell.get(&cell).copied().unwrap_or(0)
    }

    /// Whether the device at `slot` may be surveyed ahead: it was not in this wait.
    pub(crate) fn may_survey(&self, slot: Slot) -> bool {
        !self.devices.contains_key(&slot) && !self.spent.contains(&slot)
    }

    /// Whether the survey of the device at `slot` is under way (it is not started meanwhile:
    /// its attempt would survey it a second time).
    pub(crate) fn under_way(&self, slot: Slot) -> bool {
        self.survey(slot)
            .is_some_and(|survey| matches!(survey, Survey::UnderWay(_)))
    }

    /// Whether the device at `slot` was surveyed ahead and the survey still stands (since
    /// [`SurveysAhead::spend_stale`] spends those that no longer do).
    pub(crate) fn ready(&self, slot: Slot) -> bool {
        self.survey(slot)
            .is_some_and(|survey| matches!(survey, Survey::Done(_)))
    }

    /// The survey of the device at `slot`, waiting for room in `cell`, started; `abort` stops
    /// it.
    pub(crate) fn started(&mut self, slot: Slot, cell: u32, abort: AbortHandle) {
        self.take(slot);
        let survey = Survey::UnderWay(abort);
        self.devices.insert(slot, Ahead { cell, survey });
        *self.per_cell.entry(cell).or_default() += 1;
    }

    /// The survey of the device at `slot` ended, and `surveyed` stands for its attempt; with
    /// none, it is spent (the attempt surveys the device).
    pub(crate) fn ended(&mut self, slot: Slot, surveyed: Option<Standing>) {
        match (self.devices.get_mut(&slot), surveyed) {
            (Some(ahead), Some(standing)) => ahead.survey = Survey::Done(standing),
            (Some(_), None) => self.spend(slot),
            (None, _) => {}
        }
    }

    /// The device at `slot` starts (or will never wait again): its survey, if done, is its
    /// attempt's now; one under way is stopped. Its next wait may have a survey ahead again.
    pub(crate) fn take(&mut self, slot: Slot) {
        self.drop_survey(slot);
        self.spent.remove(&slot);
    }

    /// Spends the surveys made `stands_for` milliseconds or longer before `now` (they no
    /// longer stand for an attempt), so their cells survey others ahead; a device that had an
    /// earlier survey standing is forgotten instead (it may be surveyed ahead).
    pub(crate) fn spend_stale(&mut self, now: UnixMillis, stands_for: u64) {
        let stale = |standing: Standing| now.saturating_sub(standing.at()) >= stands_for;
        let stale: Vec<(Slot, Standing)> = (self.devices.iter())
            .filter_map(|(slot, ahead)| match ahead.survey {
                Survey::Done(standing) if stale(standing) => Some((*slot, standing)),
                _ => None,
            })
            .collect();
        for (slot, standing) in stale {
            match standing {
                Standing::Made(_) => self.spend(slot),
                Standing::Earlier(_) => self.take(slot),
            }
        }
    }

    /// Stops every survey under way and forgets them all (the task stopped).
    pub(crate) fn clear(&mut self) {
        let slots: Vec<Slot> = self.devices.keys().copied().collect();
        for slot in slots {
            self.drop_survey(slot);
        }
        self.spent.clear();
    }

    fn survey(&self, slot: Slot) -> Option<&Survey> {
        self.devices.get(&slot).map(|ahead| &ahead.survey)
    }

    /// Spends the survey of the device at `slot`: not made again in this wait.
    fn spend(&mut self, slot: Slot) {
        if self.drop_survey(slot) {
            self.spent.insert(slot);
        }
    }

    /// Drops the survey of the device at `slot` (stopped, if under way), counting it out of
    /// its cell; whether it had one.
    fn drop_survey(&mut self, slot: Slot) -> bool {
        let Some(ahead) = self.devices.remove(&slot) else {
            return false;
        };
        if let Survey::UnderWay(abort) = ahead.survey {
            abort.abort();
        }
        if let Some(count) = self.per_cell.get_mut(&ahead.cell) {
            *count -= 1;
            if *count == 0 {
                self.per_cell.remove(&ahead.cell);
            }
        }
        true
    }
}

impl Drop for SurveysAhead {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A survey that never ends, and a handle to stop it.
    fn pending_survey() -> (tokio::task::JoinHandle<()>, AbortHandle) {
        let survey = tokio::spawn(std::future::pending::<()>());
        let abort = survey.abort_handle();
        (survey, abort)
    }

    #[test]
    fn a_fifth_of_a_cells_slots_one_at_least() {
        assert_eq!(per_cell(25), 5);
        assert_eq!(per_cell(26), 6);
        assert_eq!(per_cell(1), 1);
        assert_eq!(per_cell(0), 1);
    }

    #[tokio::test]
    async fn a_survey_is_counted_in_its_cell_until_its_device_starts_or_it_stops_standing() {
        let mut ahead = SurveysAhead::default();
        let (_first, abort) = pending_survey();
        ahead.started(1, 7, abort);
        let (_second, abort) = pending_survey();
        ahead.started(2, 7, abort);
        assert_eq!(ahead.in_cell(7), 2);
        assert!(ahead.under_way(1) && !ahead.ready(1));
        ahead.ended(1, Some(Standing::Made(1_000)));
        assert!(ahead.ready(1) && !ahead.under_way(1));
        ahead.ended(2, None);
        assert!(!ahead.ready(2) && !ahead.under_way(2), "a failed survey");
        assert_eq!(ahead.in_cell(7), 1, "the failed one left its cell");
        ahead.spend_stale(1_999, 1_000);
        assert!(ahead.ready(1), "made at 1,000: stands until 2,000");
        ahead.spend_stale(2_000, 1_000);
        assert!(!ahead.ready(1), "stale");
        assert_eq!(ahead.in_cell(7), 0);
        ahead.take(1);
        assert_eq!(ahead.in_cell(7), 0, "counted out once");
    }

    #[tokio::test]
    async fn a_device_is_surveyed_ahead_once_per_wait() {
        let mut ahead = SurveysAhead::default();
        assert!(ahead.may_survey(1));
        let (_first, abort) = pending_survey();
        ahead.started(1, 7, abort);
        assert!(!ahead.may_survey(1), "under way");
        ahead.ended(1, Some(Standing::Made(10)));
        assert!(!ahead.may_survey(1), "standing");
        ahead.spend_stale(20, 10);
        assert!(!ahead.may_survey(1), "stopped standing in this wait");
        ahead.ended(1, Some(Standing::Made(30)));
        assert!(!ahead.ready(1), "a spent survey stays spent");
        ahead.take(1);
        assert!(ahead.may_survey(1), "its next wait");
    }

    #[tokio::test]
    async fn a_device_whose_register_survey_stood_may_be_surveyed_ahead_once_it_does_not() {
        let mut ahead = SurveysAhead::default();
        let (_first, abort) = pending_survey();
        ahead.started(1, 7, abort);
        ahead.ended(1, Some(Standing::Earlier(10)));
        assert!(ahead.ready(1) && ahead.in_cell(7) == 1);
        ahead.spend_stale(20, 10);
        assert!(ahead.may_survey(1) && ahead.in_cell(7) == 0);
    }

    #[tokio::test]
    async fn a_survey_under_way_stops_when_its_device_starts_or_the_task_stops() {
        let mut ahead = SurveysAhead::default();
        let (first, abort) = pending_survey();
        ahead.started(1, 3, abort);
        let (second, abort) = pending_survey();
        ahead.started(2, 4, abort);
        ahead.take(1);
        assert!(first.await.unwrap_err().is_cancelled());
        assert_eq!((ahead.in_cell(3), ahead.in_cell(4)), (0, 1));
        drop(ahead);
        assert!(second.await.unwrap_err().is_cancelled());
    }
}
