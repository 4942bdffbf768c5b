//! Where an endpoint stands among a task's devices in endpoint order, and which endpoint stands
//! at a position, without walking every device before it: every [`STRIDE`]th endpoint is kept
//! with its position, so either walks at most one stride. Kept for the number of devices it was built for, and built again when
//! that number changes (devices join a task; none leaves its map).

use std::collections::BTreeMap;
use std::ops::Bound::{Included, Unbounded};

/// Devices between two marks.
const STRIDE: usize = 1024;

/// Marks over a task's devices.
#[derive(Default)]
pub(crate) struct Ranks {
    /// The endpoints at positions 0, STRIDE, 2 * STRIDE, ...
    marks: Vec<String>,
    /// How many devices the marks were made for.
    built_for: usize,
}

impl Ranks {
    /// How many of `devices` sort at or before `endpoint`.
    pub(crate) fn at_or_before<V>(
        &mut self,
        devices: &BTreeMap<String, V>,
        endpoint: &str,
    ) -> usize {
        self.refresh(devices);
        let marked = self.marks.partition_point(|mark| mark.as_str() <= endpoint);
        let Some(mark) = marked.checked_sub(1).map(|i| &self.marks[i]) else {
            return 0;
        };
        let from_mark = devices.range::<str, _>((Included(mark.as_str()), Included(endpoint)));
        (marked - 1) * STRIDE + from_mark.count()
    }

    /// The endpoint at `position` (from 0) in `devices`, when there is one.
    pub(crate) fn endpoint_at<'d, V>(
        &mut self,
        devices: &'d BTreeMap<String, V>,
        position: usize,
    ) -> Option<&'d str> {
        self.refresh(devices);
        let mark = self.marks.get(position / STRIDE)?;
        let from_mark = devices.range::<str, _>((Included(mark.as_str()), Unbounded));
        from_mark
            .map(|(endpoint, _)| endpoint.as_str())
            .nth(position % STRIDE)
    }

    /// Marks made again when `devices` is not what they were made for.
    fn refresh<V>(&mut self, devices: &BTreeMap<String, V>) {
        if self.built_for != devices.len() {
            self.marks = devices.keys().step_by(STRIDE).cloned().collect();
            self.built_for = devices.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many of `devices` sort at or before `endpoint`, by walking them.
    fn walked<V>(devices: &BTreeMap<String, V>, endpoint: &str) -> usize {
        devices
            .range::<str, _>((Unbounded, Included(endpoint)))
            .count()
    }

    #[test]
    fn counts_match_a_walk_before_and_after_devices_join() {
        let mut devices: BTreeMap<String, ()> = (0..5_000)
            .map(|i| (format!("ep{:06}", i * 2), ()))
            .collect();
        let mut ranks = Ranks::default();
        let probes = [
            "", "ep", "ep000000", "ep000001", "ep004095", "ep009998", "ep5", "zz",
        ];
        let check = |devices: &BTreeMap<String, ()>, ranks: &mut Ranks| {
            let more: Vec<String> = (0..10_000)
                .step_by(7)
                .map(|i| format!("ep{i:06}"))
                .collect();
            for probe in probes
                .iter()
                .copied()
                .chain(more.iter().map(String::as_str))
            {
                assert_eq!(
                    ranks.at_or_before(devices, probe),
                    walked(devices, probe),
                    "{probe}"
                );
            }
        };
        check(&devices, &mut ranks);
        devices.extend((0..300).map(|i| (format!("ep{:06}", i * 2 + 1), ())));
        check(&devices, &mut ranks);
        for position in [0, 1, 1023, 1024, 1025, 4000, devices.len() - 1] {
            let walked = devices.keys().nth(position).map(String::as_str);
            assert_eq!(ranks.endpoint_at(&devices, position), walked, "{position}");
        }
        assert_eq!(ranks.endpoint_at(&devices, devices.len()), None);
        assert_eq!(ranks.at_or_before(&BTreeMap::<String, ()>::new(), "x"), 0);
    }
}
