//! Waves: a task's ordered stages (its group's test devices first, then cumulative shares of
//! the other devices), which stage each device is in, each stage's running tally of devices
//! and results, and the rules that move a task through its stages: the failure threshold that
//! pauses it, the success threshold that opens the next stage, and the operator's approval a
//! stage may ask for before the next one opens. A task without stages is one stage over its
//! whole group, with the task's own failure threshold.

use std::borrow::Cow;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::task::{Task, TaskSpec};
use crate::stats::Counters;

/// Most stages a task may have.
pub const MAX_STAGES: usize = 16;

/// Which devices a stage covers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageDevices {
    /// The group's test devices (only as the first stage).
    TestDevices,
    /// The group's other devices, up to this share of them (in percent, counted over the
    /// stages so far): `1`, `10`, `100` is 1 %, then 9 % more, then the rest.
    UpToPercent(f64),
}

/// One stage of a task's rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutStage {
    /// Name, as events and the task show it.
    pub name: String,
    /// Its devices.
    pub devices: StageDevices,
    /// Share of its devices (removed ones excluded) that must be upgraded before the next
    /// stage opens, from 0 to 1 (default 1: all of them).
    #[serde(default = "all_of_them")]
    pub success_threshold: f64,
    /// The task pauses when this share of the stage's devices finished since the task last
    /// resumed failed; default: the task's `max_failure_rate`.
    #[serde(default)]
    pub max_failure_rate: Option<f64>,
    /// ...once at least this many of them finished; default: the task's `failure_sample`.
    #[serde(default)]
    pub failure_sample: Option<u32>,
    /// Whether the next stage waits for an operator's approval once this one met its success
    /// threshold; default: yes after the test devices, no after the others.
    #[serde(default)]
    pub manual_approval: Option<bool>,
}

fn all_of_them() -> f64 {
    1.0
}

impl RolloutStage {
    /// A stage `name` of `devices`, with the defaults: every device upgraded to move on, the
    /// task's failure threshold, approval asked only after the test devices.
    pub fn new(name: &str, devices: StageDevices) -> RolloutStage {
        RolloutStage {
            name: name.into(),
            devices,
            success_threshold: all_of_them(),
            max_failure_rate: None,
            failure_sample: None,
            manual_approval: None,
        }
    }

    /// The single stage of a task without stages: its whole group.
    fn whole_group() -> RolloutStage {
        RolloutStage {
            manual_approval: Some(false),
            ..RolloutStage::new("all", StageDevices::UpToPercent(100.0))
        }
    }

    /// Whether the next stage waits for an operator's approval.
    pub fn asks_approval(&self) -> bool {
        self.manual_approval
            .unwrap_or(self.devices == StageDevices::TestDevices)
    }
}

impl TaskSpec {
    /// The task's stages: as given, or the one stage over the whole group.
    pub fn rollout(&self) -> Cow<'_, [RolloutStage]> {
        if self.stages.is_empty() {
            Cow::Owned(vec![RolloutStage::whole_group()])
        } else {
            Cow::Borrowed(&self.stages)
        }
    }
}

/// Checks a task's stages: at most [`MAX_STAGES`], named, the test devices only first, the
/// shares rising to 100, thresholds and rates from 0 to 1.
pub fn check(stages: &[RolloutStage]) -> Result<(), String> {
    if stages.len() > MAX_STAGES {
        return Err(format!("a task has at most {MAX_STAGES} stages"));
    }
    let mut reached = 0.0;
    for (index, stage) in stages.iter().enumerate() {
        let name = &stage.name;
        if name.trim().is_empty() {
            return Err(format!("stage {index} needs a name"));
        }
        if stages[..index].iter().any(|earlier| &earlier.name == name) {
            return Err(format!("two stages are named {name:?}"));
        }
        let share = |value: f64| (0.0..=1.0).contains(&value);
        if !share(stage.success_threshold) || !stage.max_failure_rate.is_none_or(share) {
            return Err(format!(
                "stage {name:?}: a success threshold or failure rate is from 0 to 1"
            ));
        }
        match stage.devices {
            StageDevices::TestDevices if index > 0 => {
                return Err(format!("stage {name:?}: the test devices come first"));
            }
            StageDevices::TestDevices => {}
            StageDevices::UpToPercent(percent) => {
                if !(percent > reached && percent <= 100.0) {
                    return Err(format!(
                        "stage {name:?}: shares rise from stage to stage, up to 100 \
                         ({percent} after {reached})"
                    ));
                }
                reached = percent;
            }
        }
    }
    if !stages.is_empty() && reached != 100.0 {
        return Err("the last stage takes the group up to 100 percent".into());
    }
    Ok(())
}

/// Where a task's devices go: its test devices to its test stage (when it has one), the
/// others spread over its shares in an order of the task's own (a hash of the task and the
/// endpoint: stable, and not the same devices first in every task).
pub struct Placement<'a> {
    task: &'a Task,
    stages: Cow<'a, [RolloutStage]>,
    test_devices: &'a BTreeSet<String>,
}

impl<'a> Placement<'a> {
    /// The placement of `task`'s devices, `test_devices` being its group's.
    pub fn new(task: &'a Task, test_devices: &'a BTreeSet<String>) -> Placement<'a> {
        Placement {
            task,
            stages: task.spec.rollout(),
            test_devices,
        }
    }

    /// The stage of the test devices, if the task has one.
    fn test_stage(&self) -> Option<usize> {
        let first = self.stages.first()?;
        (first.devices == StageDevices::TestDevices).then_some(0)
    }

    /// The stage of each of `endpoints` (the devices of the task's group when it starts), in
    /// their order.
    pub fn place<'e>(&self, endpoints: &'e [String]) -> Vec<(&'e str, usize)> {
        let test_stage = self.test_stage();
        let mut placed: Vec<(&str, usize)> = (endpoints.iter())
            .map(|endpoint| (endpoint.as_str(), test_stage.unwrap_or(0)))
            .collect();
        let mut others: Vec<usize> = (0..endpoints.len())
            .filter(|&i| test_stage.is_none() || !self.test_devices.contains(&endpoints[i]))
            .collect();
        others.sort_by_cached_key(|&i| self.rank(&endpoints[i]));
        let shares =
            (self.stages.iter().enumerate()).filter_map(|(index, stage)| match stage.devices {
                StageDevices::UpToPercent(percent) => Some((index, percent)),
                StageDevices::TestDevices => None,
            });
        let count = others.len();
        // The shares rise (`check`), so each stage takes up from where the last one stopped.
        let mut next = 0;
        for (stage, percent) in shares {
            let up_to = ((count as f64 * percent / 100.0).ceil() as usize).min(count);
            for &i in &others[next..up_to] {
                placed[i].1 = stage;
            }
            next = up_to;
        }
        placed
    }

    /// The stage of a device that joins the running task: the test stage for a test device,
    /// the last stage for any other (it comes with the rest of the group, not before).
    pub fn of_joiner(&self, endpoint: &str) -> usize {
        match self.test_stage() {
            Some(stage) if self.test_devices.contains(endpoint) => stage,
            _ => self.stages.len() - 1,
        }
    }

    fn rank(&self, endpoint: &str) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(self.task.id.as_bytes());
        hash.update([0]);
        hash.update(endpoint.as_bytes());
        hash.finalize().into()
    }
}

/// One stage as a task shows it: its devices and their results so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageProgress {
    /// The stage's name.
    pub name: String,
    /// Whether its devices may start (it is the task's stage or an earlier one).
    pub open: bool,
    /// Its devices (removed ones excluded).
    pub devices: u64,
    /// Of them, upgraded.
    pub upgraded: u64,
    /// Of them, ended without an upgrade.
    pub failed: u64,
}

/// A stage's finished devices at one moment: what the failure threshold subtracts to judge
/// only those finished since the task last resumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    /// Upgraded.
    pub upgraded: u64,
    /// Ended without an upgrade.
    pub failed: u64,
}

impl Finished {
    /// The finished devices of a stage's tally.
    pub fn of(tally: &Counters) -> Finished {
        Finished {
            upgraded: tally.successes,
            failed: tally.failures,
        }
    }
}

/// Too many of a stage's devices failed since the task last resumed: the task pauses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TooManyFailures {
    /// Devices of the stage finished since the task last resumed.
    pub finished: u64,
    /// Of them, failed.
    pub failed: u64,
    /// The stage's failure threshold.
    pub threshold: f64,
}

/// Where a stage stands by its success threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageOutcome {
    /// Enough of its devices are upgraded for the next stage (an empty stage: at once).
    Succeeded,
    /// Every device ended, too few upgraded: the next stage waits for an operator.
    FellShort,
    /// Still under way.
    UnderWay,
}

impl RolloutStage {
    /// Whether this stage of `spec`'s task failed too often, from its `tally` and its
    /// finished devices at the task's last resume (`baseline`).
    pub fn failures(
        &self,
        spec: &TaskSpec,
        tally: &Counters,
        baseline: Finished,
    ) -> Option<TooManyFailures> {
        let threshold = self.max_failure_rate.or(spec.max_failure_rate)?;
        let sample = u64::from(self.failure_sample.unwrap_or(spec.failure_sample));
        let now = Finished::of(tally);
        let failed = now.failed.saturating_sub(baseline.failed);
        let finished = failed + now.upgraded.saturating_sub(baseline.upgraded);
        let crossed =
            finished > 0 && finished >= sample && failed as f64 / finished as f64 >= threshold;
        crossed.then_some(TooManyFailures {
            finished,
            failed,
            threshold,
        })
    }

    /// Where this stage stands by its success threshold, from its `tally`.
    pub fn outcome(&self, tally: &Counters) -> StageOutcome {
        // Less a millionth of a device: 0.7 × 10 is 7.000000000000001 in binary.
        let needed = (self.success_threshold * tally.devices as f64 - 1e-6).ceil();
        if tally.successes as f64 >= needed {
            StageOutcome::Succeeded
        } else if tally.successes + tally.failures >= tally.devices {
            StageOutcome::FellShort
        } else {
            StageOutcome::UnderWay
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::task::TaskStatus;

    fn waves() -> Vec<RolloutStage> {
        vec![
            RolloutStage::new("test", StageDevices::TestDevices),
            RolloutStage::new("1%", StageDevices::UpToPercent(1.0)),
            RolloutStage::new("10%", StageDevices::UpToPercent(10.0)),
            RolloutStage::new("rest", StageDevices::UpToPercent(100.0)),
        ]
    }

    fn task(stages: Vec<RolloutStage>) -> Task {
        let mut spec = TaskSpec::new("t", "g", "p");
        spec.stages = stages;
        Task::new("task-1".into(), spec, 0, TaskStatus::NotStarted)
    }

    #[test]
    fn stages_take_test_devices_first_then_rising_shares_up_to_all() {
        assert_eq!(check(&waves()), Ok(()));
        assert_eq!(check(&[]), Ok(()));
        let mut late_tests = waves();
        late_tests.swap(0, 1);
        assert!(check(&late_tests).unwrap_err().contains("first"));
        let mut falling = waves();
        falling[2].devices = StageDevices::UpToPercent(0.5);
        assert!(check(&falling).unwrap_err().contains("rise"));
        let mut short = waves();
        short.pop();
        assert!(check(&short).unwrap_err().contains("100"));
        let mut twins = waves();
        twins[2].name = "1%".into();
        assert!(check(&twins).unwrap_err().contains("named"));
        let mut bad_rate = waves();
        bad_rate[1].max_failure_rate = Some(1.5);
        assert!(check(&bad_rate).is_err());
        let mut nan = waves();
        nan[1].success_threshold = f64::NAN;
        assert!(check(&nan).is_err());
        let mut nan_share = waves();
        nan_share[2].devices = StageDevices::UpToPercent(f64::NAN);
        assert!(check(&nan_share).is_err());
    }

    #[test]
    fn every_device_lands_in_exactly_one_stage_in_the_asked_shares() {
        let task = task(waves());
        let endpoints: Vec<String> = (0..1000).map(|i| format!("dev-{i:04}")).collect();
        let tests: BTreeSet<String> = endpoints[..3].iter().cloned().collect();
        let placement = Placement::new(&task, &tests);
        let placed = placement.place(&endpoints);
        assert_eq!(placed.len(), 1000, "each device once");
        let per_stage = |stage| placed.iter().filter(|(_, s)| *s == stage).count();
        // 997 others: 1 % is 10 (rounded up), 10 % is 100 in all, so 90 more.
        assert_eq!((per_stage(0), per_stage(1), per_stage(2)), (3, 10, 90));
        assert_eq!(per_stage(3), 897);
        assert!(placed.iter().all(|(e, s)| (*s == 0) == tests.contains(*e)));
        // Stable for the task, different for another.
        assert_eq!(placement.place(&endpoints), placed);
        let mut other = task.clone();
        other.id = "task-2".into();
        let elsewhere = Placement::new(&other, &tests).place(&endpoints);
        assert_ne!(elsewhere, placed);
        // Joiners: a test device to the test stage, any other to the last.
        assert_eq!(placement.of_joiner("dev-0001"), 0);
        assert_eq!(placement.of_joiner("dev-new"), 3);
    }

    #[test]
    fn without_a_test_stage_test_devices_are_like_the_others() {
        let task = task(vec![]);
        let endpoints: Vec<String> = (0..5).map(|i| format!("dev-{i}")).collect();
        let tests: BTreeSet<String> = endpoints[..2].iter().cloned().collect();
        let placement = Placement::new(&task, &tests);
        assert!(placement.place(&endpoints).iter().all(|(_, s)| *s == 0));
        assert_eq!(placement.of_joiner("dev-0"), 0);
    }

    #[test]
    fn a_stage_pauses_on_failures_since_the_resume_and_advances_at_its_threshold() {
        let spec = TaskSpec::new("t", "g", "p");
        let mut pilot = RolloutStage::new("pilot", StageDevices::UpToPercent(10.0));
        pilot.success_threshold = 0.8;
        pilot.max_failure_rate = Some(0.3);
        pilot.failure_sample = Some(3);
        let tally = |devices, successes, failures| Counters {
            devices,
            successes,
            failures,
            ..Counters::default()
        };
        let none = Finished::default();
        assert_eq!(pilot.failures(&spec, &tally(10, 1, 1), none), None, "2 < 3");
        assert_eq!(
            pilot.failures(&spec, &tally(10, 1, 2), none),
            Some(TooManyFailures {
                finished: 3,
                failed: 2,
                threshold: 0.3
            })
        );
        // Resumed after those two failures: judged afresh.
        let resumed = Finished {
            upgraded: 1,
            failed: 2,
        };
        assert_eq!(pilot.failures(&spec, &tally(10, 3, 2), resumed), None);
        assert_eq!(pilot.outcome(&tally(10, 3, 2)), StageOutcome::UnderWay);
        assert_eq!(pilot.outcome(&tally(10, 8, 1)), StageOutcome::Succeeded);
        assert_eq!(pilot.outcome(&tally(10, 7, 3)), StageOutcome::FellShort);
        // A share that binary floating point cannot hold exactly still means what it says.
        let mut seventy = RolloutStage::new("70%", StageDevices::UpToPercent(100.0));
        seventy.success_threshold = 0.7;
        assert_eq!(seventy.outcome(&tally(10, 7, 3)), StageOutcome::Succeeded);
        assert_eq!(seventy.outcome(&tally(10, 6, 4)), StageOutcome::FellShort);
        // An empty stage has nothing to wait for.
        assert_eq!(pilot.outcome(&tally(0, 0, 0)), StageOutcome::Succeeded);
        // Without a rate of its own, the task's.
        let mut plain = RolloutStage::new("rest", StageDevices::UpToPercent(100.0));
        assert_eq!(plain.failures(&spec, &tally(30, 0, 30), none), None);
        plain.failure_sample = Some(1);
        let strict = TaskSpec {
            max_failure_rate: Some(0.5),
            ..spec
        };
        assert!(plain.failures(&strict, &tally(30, 1, 1), none).is_some());
    }

    #[test]
    fn the_test_stage_asks_approval_unless_told_otherwise() {
        let mut tests = RolloutStage::new("test", StageDevices::TestDevices);
        assert!(tests.asks_approval());
        tests.manual_approval = Some(false);
        assert!(!tests.asks_approval());
        let mut wave = RolloutStage::new("1%", StageDevices::UpToPercent(1.0));
        assert!(!wave.asks_approval());
        wave.manual_approval = Some(true);
        assert!(wave.asks_approval());
    }
}
