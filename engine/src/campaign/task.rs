//! An upgrade task (campaign) and its status rules: which transitions an operator may make,
//! which only the system makes, and when a task may be edited or deleted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::stages::{Finished, RolloutStage, StageProgress};
use super::window::MaintenanceWindows;
use crate::clock::UnixMillis;

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting for its execution time.
    NotStarted,
    /// Devices are being upgraded.
    Upgrading,
    /// Paused: downloads under way finish, nothing enters the update step.
    Paused,
    /// Cancelled: final.
    Stopped,
    /// Every device finished: final.
    Completed,
}

impl TaskStatus {
    /// True for Stopped and Completed.
    pub fn is_final(self) -> bool {
        matches!(self, TaskStatus::Stopped | TaskStatus::Completed)
    }
}

/// What an operator asks of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start now (only a not-started task whose execution time has come or is unset).
    Start,
    /// Pause an upgrading task.
    Pause,
    /// Resume a paused task.
    Resume,
    /// Cancel an upgrading or paused task.
    Cancel,
    /// Change name, retries, times or limits (only before it starts).
    Edit,
    /// Open the next stage, which waits for an operator's approval.
    Approve,
    /// Delete (not while upgrading or paused).
    Delete,
}

/// Limits on how many devices transfer at once: a device holding the package (told to install
/// later) or installing it transfers nothing and does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pacing {
    /// Devices of the task transferring at once.
    pub max_concurrent: usize,
    /// Devices of one cell transferring at once (an NB-IoT cell has little downlink).
    pub max_per_cell: usize,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            max_concurrent: 1000,
            max_per_cell: 50,
        }
    }
}

/// What a task is asked to do, as given at creation or edit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Name.
    pub name: String,
    /// The group whose devices are upgraded.
    pub group_id: String,
    /// The package they receive.
    pub package_id: String,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Wait before a failed device is tried again, in seconds.
    pub retry_interval_secs: u64,
    /// When the system starts the task; `None` = now.
    pub execution_time: Option<UnixMillis>,
    /// After it, devices not upgraded end as "task expired".
    pub deadline: Option<UnixMillis>,
    /// Concurrency limits.
    #[serde(default)]
    pub pacing: Pacing,
    /// A cell whose devices report a weaker signal than this pauses there automatically.
    pub min_signal_dbm: Option<i32>,
    /// How long such a cell stays paused, in seconds: its own setting, so a short retry
    /// interval does not keep hammering a cell whose radio is bad.
    #[serde(default = "default_cell_pause_secs")]
    pub cell_pause_secs: u64,
    /// The task pauses itself when this share of finished devices failed...
    pub max_failure_rate: Option<f64>,
    /// ...once at least this many devices finished.
    #[serde(default = "default_failure_sample")]
    pub failure_sample: u32,
    /// Each device's first attempt waits a random time up to this, in seconds, from when the
    /// task starts or the device joins it: a large fleet's first requests are spread out
    /// instead of landing in one tick (0: no wait).
    #[serde(default)]
    pub start_jitter_secs: u64,
    /// Package bytes per second this task's pushes may put on each cell's downlink, below the
    /// platform's cap for every task (`cell_airtime_bytes_per_sec` in fota.toml); `None`: the
    /// platform's only.
    #[serde(default)]
    pub cell_airtime_bytes_per_sec: Option<u32>,
    /// When downloads may start and when devices may be told to install; `None`: any time.
    #[serde(default)]
    pub windows: Option<Box<MaintenanceWindows>>,
    /// The rollout's stages, in order (test devices, then rising shares of the group); none:
    /// one stage over the whole group.
    #[serde(default)]
    pub stages: Vec<RolloutStage>,
}

impl TaskSpec {
    /// A task upgrading `group_id` with `package_id`, starting now, with no deadline: three
    /// retries a minute apart, default pacing, no signal or failure-rate pause.
    pub fn new(name: &str, group_id: &str, package_id: &str) -> TaskSpec {
        TaskSpec {
            name: name.to_string(),
            group_id: group_id.to_string(),
            package_id: package_id.to_string(),
            retries: 3,
            retry_interval_secs: 60,
            execution_time: None,
            deadline: None,
            pacing: Pacing::default(),
            min_signal_dbm: None,
            cell_pause_secs: DEFAULT_CELL_PAUSE_SECS,
            max_failure_rate: None,
            failure_sample: default_failure_sample(),
            start_jitter_secs: 0,
            cell_airtime_bytes_per_sec: None,
            windows: None,
            stages: Vec::new(),
        }
    }
}

fn default_failure_sample() -> u32 {
    20
}

fn default_cell_pause_secs() -> u64 {
    DEFAULT_CELL_PAUSE_SECS
}

/// How long a weak cell pauses unless the task says otherwise: ten minutes.
pub const DEFAULT_CELL_PAUSE_SECS: u64 = 600;

/// Longest retry interval or cell pause a task may ask for: a year. Longer ones mean nothing
/// to a campaign, and times computed from them would overflow.
pub const MAX_WAIT_SECS: u64 = 365 * 24 * 3600;

/// A cell paused automatically, until when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellPause {
    /// Why.
    pub reason: String,
    /// When the cell is tried again.
    pub until: UnixMillis,
}

/// An upgrade task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Id.
    pub id: String,
    /// What it does.
    pub spec: TaskSpec,
    /// Where it stands.
    pub status: TaskStatus,
    /// Why it is paused, when the system paused it.
    pub pause_reason: Option<String>,
    /// Cells paused automatically for weak signal.
    pub paused_cells: BTreeMap<u32, CellPause>,
    /// The failure rate counts devices finished since then: the last resume (or 0), so a
    /// task paused for its failure rate and resumed is judged on new results only.
    #[serde(default)]
    pub failures_counted_since: UnixMillis,
    /// Share of the task's devices (removed ones excluded) upgraded so far; `None` while it
    /// has none. Derived from the devices' progress each time the task is shown.
    #[serde(default)]
    pub success_rate: Option<f64>,
    /// The furthest stage open: devices of it and of the stages before it may start.
    #[serde(default)]
    pub stage: usize,
    /// Why the task waits for an operator's approval before it opens its next stage; `None`
    /// when it does not.
    #[serde(default)]
    pub awaiting_approval: Option<String>,
    /// Each stage's finished devices when the task last resumed (none: zero): the failure
    /// threshold judges the devices finished since.
    #[serde(default)]
    pub failure_baseline: Vec<Finished>,
    /// Each stage's devices and results. Derived from the stages' running tallies each time
    /// the task is shown.
    #[serde(default)]
    pub stage_progress: Vec<StageProgress>,
    /// Creation time.
    pub created_at: UnixMillis,
    /// When it started upgrading.
    pub started_at: Option<UnixMillis>,
    /// When it became Stopped or Completed.
    pub finished_at: Option<UnixMillis>,
}

/// Why an action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a task that is {status}: {why}")]
pub struct Refused {
    /// The action, in words.
    pub action: &'static str,
    /// The status it was refused in.
    pub status: &'static str,
    /// The rule.
    pub why: &'static str,
}

impl Task {
    /// A task `id` doing `spec`, created at `now` with `status`.
    pub fn new(id: String, spec: TaskSpec, now: UnixMillis, status: TaskStatus) -> Task {
        Task {
            id,
            spec,
            status,
            pause_reason: None,
            paused_cells: BTreeMap::new(),
            failures_counted_since: 0,
            success_rate: None,
            stage: 0,
            awaiting_approval: None,
            failure_baseline: Vec::new(),
            stage_progress: Vec::new(),
            created_at: now,
            started_at: None,
            finished_at: None,
        }
    }

    /// Checks an operator's action against the status rules; `now` decides whether a
    /// not-started task may be started.
    pub fn check(&self, action: Action, now: UnixMillis) -> Result<(), Refused> {
        use Action::*;
        use TaskStatus::*;
        let refuse = |why| {
            Err(Refused {
                action: action_name(action),
                status: status_name(self.status),
                why,
            })
        };
        match (action, self.status) {
            (Start, NotStarted) if self.spec.execution_time.is_none_or(|t| t <= now) => Ok(()),
            (Start, NotStarted) => refuse("the system starts it at its execution time"),
            (Pause, Upgrading) | (Resume, Paused) | (Cancel, Upgrading | Paused) => Ok(()),
            (Cancel, NotStarted) => refuse("a task that has not started is deleted, not cancelled"),
            (Edit, NotStarted) => Ok(()),
            (Edit, _) => refuse("only a task that has not started can be edited"),
            (Approve, Upgrading | Paused) if self.awaiting_approval.is_some() => Ok(()),
            (Approve, Upgrading | Paused) => refuse("no stage waits for approval"),
            (Delete, NotStarted | Stopped | Completed) => Ok(()),
            (Delete, _) => refuse("cancel it first"),
            (_, Stopped | Completed) => refuse("it is finished"),
            _ => refuse("that is not a transition of this status"),
        }
    }

    /// Cells paused at `now`.
    pub fn cell_paused(&self, cell: Option<u32>, now: UnixMillis) -> bool {
        cell.and_then(|c| self.paused_cells.get(&c))
            .is_some_and(|pause| pause.until > now)
    }
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Start => "start",
        Action::Pause => "pause",
        Action::Resume => "resume",
        Action::Cancel => "cancel",
        Action::Edit => "edit",
        Action::Delete => "delete",
        Action::Approve => "approve",
    }
}

/// The status in words.
pub fn status_name(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::NotStarted => "not started",
        TaskStatus::Upgrading => "upgrading",
        TaskStatus::Paused => "paused",
        TaskStatus::Stopped => "stopped",
        TaskStatus::Completed => "completed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(status: TaskStatus, execution_time: Option<UnixMillis>) -> Task {
        let mut spec = TaskSpec::new("t", "g", "p");
        spec.retries = 0;
        spec.retry_interval_secs = 0;
        spec.execution_time = execution_time;
        spec.failure_sample = 1;
        Task::new("t".into(), spec, 0, status)
    }

    #[test]
    fn every_action_in_every_status_is_allowed_or_refused_as_the_seed_says() {
        use Action::*;
        use TaskStatus::*;
        let allowed = |status, action| task(status, None).check(action, 0).is_ok();
        let table = [
            (
                NotStarted,
                [Start, Edit, Delete],
                [Pause, Resume, Cancel, Approve].as_slice(),
            ),
            (
                Upgrading,
                [Pause, Cancel, Cancel],
                [Start, Resume, Edit, Delete, Approve].as_slice(),
            ),
            (
                Paused,
                [Resume, Cancel, Cancel],
                [Start, Pause, Edit, Delete, Approve].as_slice(),
            ),
            (
                Stopped,
                [Delete, Delete, Delete],
                [Start, Pause, Resume, Cancel, Edit, Approve].as_slice(),
            ),
            (
                Completed,
                [Delete, Delete, Delete],
                [Start, Pause, Resume, Cancel, Edit, Approve].as_slice(),
            ),
        ];
        for (status, yes, no) in table {
            for action in yes {
                assert!(allowed(status, action), "{status:?} allows {action:?}");
            }
            for &action in no {
                assert!(!allowed(status, action), "{status:?} refuses {action:?}");
            }
        }
    }

    #[test]
    fn a_task_is_started_by_hand_only_once_its_execution_time_has_come() {
        let waiting = task(TaskStatus::NotStarted, Some(1_000));
        let refused = waiting.check(Action::Start, 999).unwrap_err();
        assert!(refused.to_string().contains("execution time"), "{refused}");
        assert!(waiting.check(Action::Start, 1_000).is_ok());
    }

    #[test]
    fn only_a_task_whose_stage_waits_for_approval_can_be_approved() {
        let mut waiting = task(TaskStatus::Upgrading, None);
        let refused = waiting.check(Action::Approve, 0).unwrap_err();
        assert!(refused.to_string().contains("approval"), "{refused}");
        waiting.awaiting_approval = Some("stage test succeeded".into());
        assert!(waiting.check(Action::Approve, 0).is_ok());
        waiting.status = TaskStatus::Paused;
        assert!(waiting.check(Action::Approve, 0).is_ok());
        waiting.status = TaskStatus::Stopped;
        assert!(waiting.check(Action::Approve, 0).is_err());
    }

    #[test]
    fn a_paused_cell_is_skipped_until_its_pause_ends() {
        let mut t = task(TaskStatus::Upgrading, None);
        t.paused_cells.insert(
            7,
            CellPause {
                reason: "weak".into(),
                until: 5_000,
            },
        );
        assert!(t.cell_paused(Some(7), 4_999));
        assert!(!t.cell_paused(Some(7), 5_000));
        assert!(!t.cell_paused(Some(8), 0));
        assert!(!t.cell_paused(None, 0));
    }

    #[test]
    fn a_task_recorded_before_the_newer_fields_reads_back_with_their_defaults() {
        let mut recorded = serde_json::to_value(task(TaskStatus::Upgrading, None)).unwrap();
        recorded["spec"]
            .as_object_mut()
            .unwrap()
            .remove("cell_pause_secs");
        recorded["spec"].as_object_mut().unwrap().remove("stages");
        for field in [
            "failures_counted_since",
            "success_rate",
            "stage",
            "awaiting_approval",
            "failure_baseline",
            "stage_progress",
        ] {
            recorded.as_object_mut().unwrap().remove(field);
        }
        let read: Task = serde_json::from_value(recorded).unwrap();
        assert_eq!(read, task(TaskStatus::Upgrading, None));
        assert_eq!(read.spec.cell_pause_secs, DEFAULT_CELL_PAUSE_SECS);
    }
}
