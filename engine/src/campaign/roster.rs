//! A task's devices as the scheduler holds them: each device's progress at a slot (a small
//! number given as it enters the task, never reused: no device leaves a task), and the
//! endpoints in order, each with its slot. The scheduler's queues and its attempts under way
//! hold slots, so its work per attempt does not search the task's devices by name (a walk of
//! string comparisons and cache misses that lengthens with the fleet); lookups by endpoint
//! (the API, devices that join) and pages in endpoint order go through the ordered map.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::progress::DeviceProgress;
use super::ranks::Ranks;

/// Where a device's progress is in its task's [`Roster`].
pub(crate) type Slot = u32;

/// A task's devices, by slot and by endpoint.
#[derive(Default)]
pub(crate) struct Roster {
    /// Each device's progress, at its slot.
    progress: Vec<DeviceProgress>,
    /// Each endpoint's slot, in endpoint order.
    slots: BTreeMap<String, Slot>,
    /// Marks over `slots`, for a page's offset.
    ranks: Ranks,
}

impl Roster {
    /// How many devices.
    pub(crate) fn len(&self) -> usize {
        self.progress.len()
    }

    /// Makes room for `more` devices at once (a task's start, or its load), so the slots
    /// take what they need and not up to twice that.
    pub(crate) fn reserve(&mut self, more: usize) {
        self.progress.reserve_exact(more);
    }

    /// Adds a device not in the task yet (its progress replaces the one held, if it is),
    /// and gives its slot and its progress as held.
    pub(crate) fn insert(&mut self, progress: DeviceProgress) -> (Slot, &DeviceProgress) {
        let slot = match self.slots.get(&progress.endpoint) {
            Some(&slot) => {
                self.progress[slot as usize] = progress;
                slot
            }
            None => {
                let slot =
                    Slot::try_from(self.progress.len()).expect("fewer than 2^32 devices in a task");
                self.slots.insert(progress.endpoint.clone(), slot);
                self.progress.push(progress);
                slot
            }
        };
        (slot, &self.progress[slot as usize])
    }

    /// The slot of `endpoint`, when it is in the task.
    pub(crate) fn slot(&self, endpoint: &str) -> Option<Slot> {
        self.slots.get(endpoint).copied()
    }

    /// Whether `endpoint` is in the task.
    pub(crate) fn contains(&self, endpoint: &str) -> bool {
        self.slots.contains_key(endpoint)
    }

    /// The progress at `slot`.
    pub(crate) fn at(&self, slot: Slot) -> Option<&DeviceProgress> {
        self.progress.get(slot as usize)
    }

    /// The progress at `slot`, to change.
    pub(crate) fn at_mut(&mut self, slot: Slot) -> Option<&mut DeviceProgress> {
        self.progress.get_mut(slot as usize)
    }

    /// The progress of `endpoint`, when it is in the task.
    pub(crate) fn of(&self, endpoint: &str) -> Option<&DeviceProgress> {
        self.slot(endpoint).and_then(|slot| self.at(slot))
    }

    /// Every device's progress with its slot, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Slot, &DeviceProgress)> {
        (0..).zip(&self.progress)
    }

    /// Every device's progress, in no particular order.
    pub(crate) fn all(&self) -> std::slice::Iter<'_, DeviceProgress> {
        self.progress.iter()
    }

    /// Every device's progress, in endpoint order.
    pub(crate) fn in_order(&self) -> impl Iterator<Item = &DeviceProgress> {
        (self.slots.values()).map(|&slot| &self.progress[slot as usize])
    }

    /// The endpoints, in order.
    pub(crate) fn endpoints(&self) -> impl Iterator<Item = &str> {
        self.slots.keys().map(String::as_str)
    }

    /// How many devices sort at or before `endpoint`.
    pub(crate) fn at_or_before(&mut self, endpoint: &str) -> usize {
        self.ranks.at_or_before(&self.slots, endpoint)
    }

    /// The endpoint at `position` (from 0) in endpoint order, when there is one.
    pub(crate) fn endpoint_at(&mut self, position: usize) -> Option<String> {
        (self.ranks.endpoint_at(&self.slots, position)).map(str::to_string)
    }

    /// Up to `take` devices in endpoint order from `from` onwards (towards the first with
    /// `descending`, `from` being then the bound above).
    pub(crate) fn page(
        &self,
        from: Bound<&str>,
        descending: bool,
        take: usize,
    ) -> Vec<&DeviceProgress> {
        use std::ops::Bound::Unbounded;
        let slots = if descending {
            Box::new(self.slots.range::<str, _>((Unbounded, from)).rev())
                as Box<dyn Iterator<Item = (&String, &Slot)>>
        } else {
            Box::new(self.slots.range::<str, _>((from, Unbounded)))
        };
        slots
            .take(take)
            .map(|(_, &slot)| &self.progress[slot as usize])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Bound::{Excluded, Included};

    fn device(endpoint: &str) -> DeviceProgress {
        DeviceProgress::new("t", endpoint, 0)
    }

    #[test]
    fn slots_stay_with_their_devices_and_pages_follow_endpoint_order() {
        let mut roster = Roster::default();
        let slots: Vec<Slot> = ["c", "a", "d", "b"]
            .into_iter()
            .map(|e| roster.insert(device(e)).0)
            .collect();
        assert_eq!(slots, [0, 1, 2, 3]);
        let mut again = device("a");
        again.attempts = 7;
        assert_eq!(
            roster.insert(again).0,
            1,
            "a device in the task keeps its slot"
        );
        assert_eq!(
            (roster.len(), roster.at(1).map(|p| p.attempts)),
            (4, Some(7))
        );
        assert_eq!(roster.of("d").map(|p| p.endpoint.as_str()), Some("d"));
        assert_eq!(roster.slot("e"), None);
        let names = |page: Vec<&DeviceProgress>| -> Vec<String> {
            page.into_iter().map(|p| p.endpoint.clone()).collect()
        };
        assert_eq!(names(roster.page(Included("b"), false, 2)), ["b", "c"]);
        assert_eq!(names(roster.page(Excluded("c"), true, 5)), ["b", "a"]);
        assert_eq!(roster.endpoints().collect::<Vec<_>>(), ["a", "b", "c", "d"]);
        let in_order: Vec<&str> = roster.in_order().map(|p| p.endpoint.as_str()).collect();
        assert_eq!(in_order, ["a", "b", "c", "d"]);
        assert_eq!(roster.at_or_before("c"), 3);
        assert_eq!(roster.endpoint_at(0).as_deref(), Some("a"));
    }
}
