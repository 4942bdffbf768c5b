//! Upgrade tasks over groups (DESIGN.md "Upgrade tasks"): creation and the operator's actions
//! under the status rules, the scheduler that starts tasks at their execution time, runs
//! attempts within the pacing limits (per task, and per cell over every task; a device asleep
//! holds no slot unless it wakes within the sleep hold), retries failed devices after the
//! retry interval until the retries or the deadline run out, pauses cells
//! with a weak signal and whole tasks when a stage's failure rate crosses its threshold, moves
//! tasks through their stages, holds downloaded devices while a task is paused, and completes
//! tasks. Every change goes to the store with the statistics it moves in the same batch
//! (`writes`: a task's change at once, a device's with others within 50 ms), so a restarted
//! engine resumes every task and the statistics stay whole.

mod ahead;
pub mod attempt;
mod joining;
pub mod progress;
mod ranks;
mod roster;
mod schedule;
pub mod stages;
pub mod task;
mod window;
mod writes;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Notify, watch};

pub use attempt::{
    AttemptOutcome, AttemptRequest, Attempts, DeviceAttempts, Standing, SurveyAhead,
};
pub use progress::{DeviceProgress, DeviceResult, DownloadStatus, Phase, UpgradeStatus};
pub use stages::{Finished, RolloutStage, StageDevices, StageProgress};
pub use task::{
    Action, CellPause, DEFAULT_CELL_PAUSE_SECS, Pacing, Refused, Task, TaskSpec, TaskStatus,
};
pub use window::{DailyWindow, MaintenanceWindows};

use serde::Serialize;

use crate::catalog::{Catalog, CatalogError};
use crate::clock::{Clock, UnixMillis};
use crate::journal::{EventData, Journal, NewEvent};
use crate::stats::{Counters, Ledger, Statistics, Subject};
use crate::store::{Batch, Store, StoreError, StoreExt};
use crate::sync::lock;
use crate::transfer::{Gate, WireCount};
use ahead::SurveysAhead;
use roster::{Roster, Slot};
use writes::Changes;

/// Why a task operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// No such task.
    #[error("task {0} does not exist")]
    NotFound(String),
    /// The status rules forbid it.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The request is invalid (unknown group, a package of another model, ...).
    #[error("{0}")]
    Invalid(String),
    /// The catalog refused.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How often the scheduler looks at every task when nothing wakes it.
const TICK: Duration = Duration::from_millis(500);

/// A task with its devices, as the scheduler holds it.
pub(crate) struct Running {
    pub task: Task,
    /// Its devices and their progress.
    pub devices: Roster,
    /// Attempts under way, by their device's slot.
    pub active: HashMap<Slot, Attempt>,
    /// What the task lets its attempts do now (download; install).
    pub gate: watch::Sender<Gate>,
    /// Where the task's devices are counted in the statistics (its package, vendor and
    /// model); `None` before it starts, or when its package is gone.
    pub subject: Option<Subject>,
    /// Size of the task's package: a device's first-time bytes stop there (`u64::MAX` while
    /// unknown).
    pub package_size: u64,
    /// Each stage's share of the statistics (its devices, upgraded, failed, bytes), moved
    /// with every progress record: a task's counts are read without looking at its devices.
    pub tallies: Vec<Counters>,
    /// Waiting devices by when they are due, per stage: `(next_try_at, slot)`, so the
    /// scheduler looks at the due ones only. An entry whose device moved on since (launched,
    /// finished, due at another time) is dropped when it comes up.
    pub due: Vec<BTreeSet<(UnixMillis, Slot)>>,
    /// Devices surveyed ahead while their cells had no room.
    pub ahead: SurveysAhead,
}

/// An attempt under way.
pub(crate) struct Attempt {
    /// Stops it (cancel, deadline, the service's drop).
    pub abort: tokio::task::AbortHandle,
    /// Bytes it reported so far (at its suspensions), already in its device's progress: its
    /// final count adds only the rest.
    pub wire: WireCount,
    /// Its device's cell as it started.
    pub cell: Option<u32>,
    /// Using the link: not past its download (holding the package, or installing it).
    pub transferring: bool,
}

/// Shared state of the campaign service.
pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub catalog: Catalog,
    pub attempts: Arc<dyn Attempts>,
    pub clock: Clock,
    pub tasks: Mutex<BTreeMap<String, Running>>,
    /// Wakes the scheduler; its own `Arc`, so the waiting scheduler holds no `Inner`.
    pub wake: Arc<Notify>,
    /// Task changes as they happen, in memory (the engine's log).
    pub events: tokio::sync::broadcast::Sender<CampaignEvent>,
    /// Task changes as integrators read them: numbered, written with the change they report.
    pub journal: Journal,
    /// The cumulative statistics, moved with every progress record.
    pub ledger: Ledger,
    /// Device changes waiting to be written, and the order of writes.
    pub writes: writes::Writes,
}

impl Drop for Inner {
    /// The campaign service is gone (the engine stops): its attempts stop with it, so none
    /// talks to a device or writes the store on behalf of a scheduler that no longer exists,
    /// and what waits to be written is written.
    fn drop(&mut self) {
        let tasks = crate::sync::lock(&self.tasks);
        for attempt in tasks.values().flat_map(|running| running.active.values()) {
            attempt.abort.abort();
        }
        drop(tasks);
        self.write_queued();
    }
}

/// A window of a task's devices in endpoint order.
#[derive(Debug, Clone)]
pub struct DeviceWindow {
    /// The devices.
    pub devices: Vec<DeviceProgress>,
    /// How many come before them, in the order read.
    pub before: usize,
    /// How many the task has.
    pub total: usize,
}

/// Something that changed in a task, for live progress.
#[derive(Debug, Clone, PartialEq)]
pub enum CampaignEvent {
    /// A task's status changed (or its paused cells).
    Task(Box<Task>),
    /// A device's progress in a task changed.
    Device(DeviceProgress),
    /// A device ended in a task without being upgraded; its result and note say why.
    DeviceFailed(DeviceProgress),
    /// A task's failure rate reached its threshold: the task paused itself.
    FailureRateAlarm(FailureRateAlarm),
    /// A cell's devices are not tried for a while: one reported a signal below the task's
    /// minimum.
    CellPaused(CellPaused),
}

/// What a failure-rate alarm says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureRateAlarm {
    /// The task, now paused.
    pub task_id: String,
    /// The stage whose devices failed ("all" for a task without stages).
    pub stage: String,
    /// Devices of the stage finished since the task last resumed.
    pub finished: u64,
    /// Of them, those not upgraded.
    pub failed: u64,
    /// `failed / finished`.
    pub failure_rate: f64,
    /// The stage's `max_failure_rate` (by default the task's).
    pub threshold: f64,
}

/// What a cell pause says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellPaused {
    /// The task whose attempts in the cell wait.
    pub task_id: String,
    /// The cell (/4/0/8).
    pub cell_id: u32,
    /// Why, and until when.
    #[serde(flatten)]
    pub pause: CellPause,
}

impl CampaignEvent {
    /// Every kind of event, as named in the journal.
    pub const KINDS: [&'static str; 5] = [
        "task",
        "device",
        "device_failed",
        "failure_rate_alarm",
        "cell_paused",
    ];

    /// Its kind, as named in the journal (and so in `/v1/events` and webhooks).
    pub fn kind(&self) -> &'static str {
        let index = match self {
            CampaignEvent::Task(_) => 0,
            CampaignEvent::Device(_) => 1,
            CampaignEvent::DeviceFailed(_) => 2,
            CampaignEvent::FailureRateAlarm(_) => 3,
            CampaignEvent::CellPaused(_) => 4,
        };
        CampaignEvent::KINDS[index]
    }

    /// What it says, as JSON.
    pub fn data(&self) -> EventData {
        match self {
            CampaignEvent::Task(task) => EventData::of(task),
            CampaignEvent::Device(progress) | CampaignEvent::DeviceFailed(progress) => {
                EventData::of(progress)
            }
            CampaignEvent::FailureRateAlarm(alarm) => EventData::of(alarm),
            CampaignEvent::CellPaused(pause) => EventData::of(pause),
        }
    }

    fn journaled(&self) -> NewEvent {
        NewEvent {
            kind: self.kind(),
            data: self.data(),
        }
    }
}

/// The campaign service. Cheap to clone; the scheduler stops when the last clone is dropped.
#[derive(Clone)]
pub struct Campaigns {
    inner: Arc<Inner>,
}

impl crate::lwm2m::Upgrades for Campaigns {
    fn upgrading(&self, endpoint: &str) -> bool {
        Campaigns::upgrading(self, endpoint)
    }
}

impl Campaigns {
    /// Loads every task from the store (attempts that were running when the engine stopped
    /// are due again) and starts the scheduler; every change is reported in `journal`.
    pub fn start(
        store: Arc<dyn Store>,
        catalog: Catalog,
        attempts: Arc<dyn Attempts>,
        clock: Clock,
        journal: Journal,
    ) -> Result<Campaigns, CampaignError> {
        let (events, _) = tokio::sync::broadcast::channel(1024);
        let ledger = Ledger::open(store.as_ref())?;
        let inner = Arc::new(Inner {
            store,
            catalog,
            attempts,
            clock,
            tasks: Mutex::new(BTreeMap::new()),
            wake: Arc::new(Notify::new()),
            events,
            journal,
            ledger,
            writes: writes::Writes::default(),
        });
        let joins = inner.catalog.subscribe_joins();
        inner.load()?;
        // Devices that joined while the engine was down, or between a join and its enrolment.
        inner.enrol_missing();
        tokio::spawn(joining::follow(Arc::downgrade(&inner), joins));
        tokio::spawn(schedule::run(Arc::downgrade(&inner)));
        tokio::spawn(writes::run(Arc::downgrade(&inner)));
        Ok(Campaigns { inner })
    }

    /// Receives task and device changes from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<CampaignEvent> {
        self.inner.events.subscribe()
    }

    /// Creates a task; it starts at its execution time (now when unset).
    pub fn create(&self, spec: TaskSpec) -> Result<Task, CampaignError> {
        self.validate(&spec)?;
        let id = crate::catalog::new_id("task");
        let task = Task::new(id, spec, self.inner.clock.now(), TaskStatus::NotStarted);
        self.inner.store.put_durable(&task_key(&task.id), &task)?;
        let running = Running::new(task);
        let shown = running.view();
        lock(&self.inner.tasks).insert(shown.id.clone(), running);
        self.inner.wake.notify_one();
        Ok(shown)
    }

    /// Changes a task that has not started.
    pub fn edit(&self, id: &str, spec: TaskSpec) -> Result<Task, CampaignError> {
        self.validate(&spec)?;
        self.act(id, Action::Edit, |task, _| task.spec = spec)
    }

    /// Starts a not-started task whose execution time has come (or is unset) now. A task the
    /// scheduler already started at its execution time is upgrading as asked: it is returned
    /// as it is, so "create, then start" works whoever comes first.
    pub fn start_now(&self, id: &str) -> Result<Task, CampaignError> {
        let now = self.inner.clock.now();
        let mut tasks = lock(&self.inner.tasks);
        let running = tasks
            .get_mut(id)
            .ok_or_else(|| CampaignError::NotFound(id.into()))?;
        if running.task.status == TaskStatus::Upgrading {
            return Ok(running.view());
        }
        running.task.check(Action::Start, now)?;
        self.inner.begin(running)?;
        let task = running.view();
        drop(tasks);
        self.inner.wake.notify_one();
        Ok(task)
    }

    /// Pauses an upgrading task.
    pub fn pause(&self, id: &str) -> Result<Task, CampaignError> {
        self.act(id, Action::Pause, |task, _| {
            task.status = TaskStatus::Paused;
            task.pause_reason = Some("paused by an operator".into());
        })
    }

    /// Resumes a paused task (also clearing its automatic cell pauses). The failure rate
    /// counts afresh from now: the results that paused the task do not pause it again.
    pub fn resume(&self, id: &str) -> Result<Task, CampaignError> {
        let now = self.inner.clock.now();
        self.act(id, Action::Resume, |task, running| {
            task.status = TaskStatus::Upgrading;
            task.pause_reason = None;
            task.paused_cells.clear();
            task.failures_counted_since = now;
            task.failure_baseline = running.tallies.iter().map(Finished::of).collect();
        })
    }

    /// Opens the next stage of a task that waits for an operator's approval to do so.
    pub fn approve(&self, id: &str) -> Result<Task, CampaignError> {
        self.act(id, Action::Approve, |task, _| {
            task.awaiting_approval = None;
            task.stage = (task.stage + 1).min(task.spec.rollout().len() - 1);
        })
    }

    /// Cancels a task: attempts under way stop; the task is final.
    pub fn cancel(&self, id: &str) -> Result<Task, CampaignError> {
        let now = self.inner.clock.now();
        self.act(id, Action::Cancel, |task, _| {
            task.status = TaskStatus::Stopped;
            task.finished_at = Some(now);
        })
    }

    /// Deletes a task that is not running, with its progress records and what was kept to
    /// resume its deliveries. Its devices stay in the statistics.
    pub fn delete(&self, id: &str) -> Result<(), CampaignError> {
        let now = self.inner.clock.now();
        let mut tasks = lock(&self.inner.tasks);
        let running = tasks
            .get(id)
            .ok_or_else(|| CampaignError::NotFound(id.into()))?;
        running.task.check(Action::Delete, now)?;
        let mut batch = Batch::new();
        batch.remove(task_key(id));
        for endpoint in running.devices.endpoints() {
            batch.remove(progress_key(id, endpoint));
        }
        // After what is queued: a queued record of the task's does not come back.
        self.inner.write_now(batch, Changes::default(), true)?;
        let Some(deleted) = tasks.remove(id) else {
            return Ok(());
        };
        let package = &deleted.task.spec.package_id;
        let delivered_elsewhere = |endpoint: &str| {
            tasks.values().any(|other| {
                !other.task.status.is_final()
                    && &other.task.spec.package_id == package
                    && other.devices.contains(endpoint)
            })
        };
        let endpoints: Vec<String> = (deleted.devices.endpoints())
            .filter(|e| !delivered_elsewhere(e))
            .map(str::to_string)
            .collect();
        drop(tasks);
        self.inner.attempts.forget_deliveries(package, &endpoints);
        Ok(())
    }

    /// The task `id`.
    pub fn task(&self, id: &str) -> Result<Task, CampaignError> {
        let tasks = lock(&self.inner.tasks);
        let running = tasks
            .get(id)
            .ok_or_else(|| CampaignError::NotFound(id.into()))?;
        Ok(running.view())
    }

    /// Every task.
    pub fn tasks(&self) -> Vec<Task> {
        lock(&self.inner.tasks)
            .values()
            .map(Running::view)
            .collect()
    }

    /// The devices of task `id` and their progress.
    pub fn devices(&self, id: &str) -> Result<Vec<DeviceProgress>, CampaignError> {
        let tasks = lock(&self.inner.tasks);
        let running = tasks
            .get(id)
            .ok_or_else(|| CampaignError::NotFound(id.into()))?;
        Ok(running.devices.in_order().cloned().collect())
    }

    /// What `read` makes of task `id` (as shown) and its devices in no particular order, read
    /// in place: nothing is copied, and the scheduler waits meanwhile (keep `read` short).
    pub fn read_devices<R>(
        &self,
        id: &str,
        read: impl FnOnce(&Task, std::slice::Iter<'_, DeviceProgress>) -> R,
    ) -> Result<R, CampaignError> {
        let tasks = lock(&self.inner.tasks);
        let running = tasks
            .get(id)
            .ok_or_else(|| CampaignError::NotFound(id.into()))?;
        Ok(read(&running.view(), running.devices.all()))
    }

    /// Up to `take` devices of task `id` in endpoint order (from the last when `descending`),
    /// after endpoint `after` when given, else after `skip` devices; with how many come before
    /// them and how many the task has. Read through the task's index, not by a copy of every
    /// device; a cursor's offset, and the device at an offset, found from the nearest mark of
    /// [`ranks::Ranks`].
    pub fn devices_window(
        &self,
        id: &str,
        after: Option<&str>,
        skip: usize,
        descending: bool,
        take: usize,
    ) -> Result<DeviceWindow, CampaignError> {
        use std::ops::Bound::{Excluded, Included};
        let mut tasks = lock(&self.inner.tasks);
        let devices = &mut tasks
            .get_mut(id)
            .ok_or_else(|| CampaignError::NotFound(id.into()))?
            .devices;
        let total = devices.len();
        // Where the window starts (none past the end), and how many come before it.
        let (before, from) = match (after, descending) {
            (Some(after), false) => (devices.at_or_before(after), Some(Excluded(after.into()))),
            (Some(after), true) => {
                let below = devices.at_or_before(after) - usize::from(devices.contains(after));
                (total - below, Some(Excluded(after.into())))
            }
            (None, false) => (skip.min(total), devices.endpoint_at(skip).map(Included)),
            (None, true) => {
                let last = (total.checked_sub(skip + 1))
                    .and_then(|position| devices.endpoint_at(position));
                (skip.min(total), last.map(Included))
            }
        };
        let window = match &from {
            None => Vec::new(),
            Some(from) => devices.page(from.as_ref().map(String::as_str), descending, take),
        };
        Ok(DeviceWindow {
            devices: window.into_iter().cloned().collect(),
            before,
            total,
        })
    }

    /// The progress of device `endpoint` in every task it is in.
    pub fn progress_of(&self, endpoint: &str) -> Vec<DeviceProgress> {
        let tasks = lock(&self.inner.tasks);
        tasks
            .values()
            .filter_map(|running| running.devices.of(endpoint).cloned())
            .collect()
    }

    /// Attempts running now, over every task.
    pub fn attempts_under_way(&self) -> usize {
        lock(&self.inner.tasks)
            .values()
            .map(|r| r.active.len())
            .sum()
    }

    /// True when a task that is not final uses group `group_id` or package `package_id`.
    pub fn in_use(&self, group_id: Option<&str>, package_id: Option<&str>) -> bool {
        lock(&self.inner.tasks).values().any(|running| {
            let spec = &running.task.spec;
            !running.task.status.is_final()
                && (group_id == Some(spec.group_id.as_str())
                    || package_id == Some(spec.package_id.as_str()))
        })
    }

    /// True when a task that is not final holds device `endpoint`: it is among the devices
    /// of a started task, or in the group of a task (started or not) whose id is in `groups`
    /// (the groups the device is in).
    pub fn holds_device(&self, endpoint: &str, groups: &[String]) -> bool {
        lock(&self.inner.tasks).values().any(|running| {
            !running.task.status.is_final()
                && (running.devices.contains(endpoint)
                    || groups.contains(&running.task.spec.group_id))
        })
    }

    /// True while a task upgrades device `endpoint`: an attempt of it is under way, or it
    /// waits for one in a task started and not ended (asleep, perhaps mid-download, or
    /// between tries). Its Firmware Update object is the task's until then.
    pub fn upgrading(&self, endpoint: &str) -> bool {
        lock(&self.inner.tasks).values().any(|running| {
            let Some(slot) = running.devices.slot(endpoint) else {
                return false;
            };
            let started = matches!(
                running.task.status,
                TaskStatus::Upgrading | TaskStatus::Paused
            );
            let waiting = (running.devices.at(slot)).is_some_and(|p| p.phase == Phase::Waiting);
            running.active.contains_key(&slot) || (started && waiting)
        })
    }

    /// Every device progress of every task.
    pub fn all_progress(&self) -> Vec<(Task, Vec<DeviceProgress>)> {
        lock(&self.inner.tasks)
            .values()
            .map(|r| (r.view(), r.devices.in_order().cloned().collect()))
            .collect()
    }

    /// The cumulative statistics per package and per vendor and model, as stored.
    pub fn statistics(&self) -> Statistics {
        self.inner.ledger.statistics()
    }

    fn validate(&self, spec: &TaskSpec) -> Result<(), CampaignError> {
        let catalog = &self.inner.catalog;
        let group = catalog.group(&spec.group_id)?;
        let package = catalog.package(&spec.package_id)?;
        if (group.vendor.as_str(), group.model.as_str()) != (&package.vendor, &package.model) {
            return Err(CampaignError::Invalid(format!(
                "package {} is for {} {}, group {} is {} {}",
                package.id, package.vendor, package.model, group.id, group.vendor, group.model
            )));
        }
        if spec.name.trim().is_empty() {
            return Err(CampaignError::Invalid("a task needs a name".into()));
        }
        if spec.pacing.max_concurrent == 0 || spec.pacing.max_per_cell == 0 {
            return Err(CampaignError::Invalid(
                "pacing limits must be at least 1".into(),
            ));
        }
        if spec.cell_pause_secs == 0 {
            return Err(CampaignError::Invalid(
                "a weak cell pauses for at least 1 second".into(),
            ));
        }
        if spec.cell_pause_secs > task::MAX_WAIT_SECS
            || spec.retry_interval_secs > task::MAX_WAIT_SECS
            || spec.start_jitter_secs > task::MAX_WAIT_SECS
        {
            return Err(CampaignError::Invalid(format!(
                "a retry interval, a cell pause or a start jitter is at most {} seconds (a year)",
                task::MAX_WAIT_SECS
            )));
        }
        if let Some(windows) = &spec.windows {
            windows.check().map_err(CampaignError::Invalid)?;
        }
        if spec.cell_airtime_bytes_per_sec == Some(0) {
            return Err(CampaignError::Invalid(
                "a cell's airtime is at least 1 byte per second".into(),
            ));
        }
        stages::check(&spec.stages).map_err(CampaignError::Invalid)?;
        let test_stage = spec.stages.first().map(|stage| stage.devices);
        if test_stage == Some(StageDevices::TestDevices) && group.test_device_count == 0 {
            return Err(CampaignError::Invalid(format!(
                "group {} has no test devices for the test stage: mark some first \
                 (POST /v1/groups/{}/test-devices)",
                group.id, group.id
            )));
        }
        if let (Some(start), Some(deadline)) = (spec.execution_time, spec.deadline)
            && deadline <= start
        {
            return Err(CampaignError::Invalid(
                "the deadline must come after the execution time".into(),
            ));
        }
        Ok(())
    }

    /// Checks `action` and applies `change` to the task (seeing it as it runs), durably.
    fn act(
        &self,
        id: &str,
        action: Action,
        change: impl FnOnce(&mut Task, &Running),
    ) -> Result<Task, CampaignError> {
        let now = self.inner.clock.now();
        let mut tasks = lock(&self.inner.tasks);
        let running = tasks
            .get_mut(id)
            .ok_or_else(|| CampaignError::NotFound(id.into()))?;
        running.task.check(action, now)?;
        let mut task = running.task.clone();
        change(&mut task, running);
        let shown = running.shown(&task);
        let mut batch = Batch::new();
        batch.put(task_key(id), &task);
        let mut changes = Changes::default();
        changes.event(CampaignEvent::Task(Box::new(shown.clone())));
        self.inner.write_now(batch, changes, true)?;
        running.task = task;
        running.apply_status(now);
        drop(tasks);
        self.inner.wake.notify_one();
        Ok(shown)
    }
}

impl Running {
    fn new(task: Task) -> Self {
        // Its windows, if any, apply at the next tick, before it launches anything.
        let open = task.status == TaskStatus::Upgrading;
        let (gate, _) = watch::channel(if open { Gate::Open } else { Gate::Closed });
        Running {
            task,
            devices: Roster::default(),
            active: HashMap::new(),
            gate,
            subject: None,
            package_size: u64::MAX,
            tallies: Vec::new(),
            due: Vec::new(),
            ahead: SurveysAhead::default(),
        }
    }

    /// The task as shown: with its success rate.
    pub(crate) fn view(&self) -> Task {
        self.shown(&self.task)
    }

    /// `task` (this one, changed) as shown, with its success rate and its stages' progress.
    fn shown(&self, task: &Task) -> Task {
        shown(&self.tallies, task)
    }

    /// Stage `stage`'s tally (empty for a stage no device is in).
    pub(crate) fn stage_tally(&self, stage: usize) -> Counters {
        stage_tally(&self.tallies, stage)
    }

    /// True when every device of the task is done (finished or removed), by the tallies.
    pub(crate) fn all_done(&self) -> bool {
        (self.tallies.iter()).all(|tally| tally.successes + tally.failures >= tally.devices)
    }

    /// Adds (or, with `before`, moves) a device's share in its stage's tally.
    pub(crate) fn tally(&mut self, stage: usize, before: &Counters, after: &Counters) {
        shift_tally(&mut self.tallies, stage, before, after);
    }

    /// Sets the gate (downloads while the task upgrades; installs too within its update
    /// windows at `now`), and stops attempts of a stopped task.
    pub(crate) fn apply_status(&mut self, now: UnixMillis) {
        let windows = self.task.spec.windows.as_ref();
        let gate = match self.task.status {
            TaskStatus::Upgrading if windows.is_none_or(|w| w.updates_open(now)) => Gate::Open,
            TaskStatus::Upgrading => Gate::DownloadOnly,
            _ => Gate::Closed,
        };
        self.gate
            .send_if_modified(|current| std::mem::replace(current, gate) != gate);
        if self.task.status == TaskStatus::Stopped {
            for (_, attempt) in self.active.drain() {
                attempt.abort.abort();
            }
            self.ahead.clear();
        }
    }
}

/// `task` as shown, with its success rate and its stages' progress from its stages' `tallies`.
fn shown(tallies: &[Counters], task: &Task) -> Task {
    let (devices, upgraded) = (tallies.iter()).fold((0, 0), |(d, u), tally| {
        (d + tally.devices, u + tally.successes)
    });
    let stages = task.spec.rollout();
    let stage_progress = (stages.iter().enumerate())
        .map(|(index, stage)| {
            let tally = stage_tally(tallies, index);
            StageProgress {
                name: stage.name.clone(),
                open: task.status != TaskStatus::NotStarted && index <= task.stage,
                devices: tally.devices,
                upgraded: tally.successes,
                failed: tally.failures,
            }
        })
        .collect();
    Task {
        success_rate: (devices > 0).then(|| upgraded as f64 / devices as f64),
        stage_progress,
        ..task.clone()
    }
}

/// Stage `stage`'s tally in `tallies` (empty for a stage no device is in).
fn stage_tally(tallies: &[Counters], stage: usize) -> Counters {
    tallies.get(stage).cloned().unwrap_or_default()
}

/// Moves stage `stage`'s tally in `tallies` by a device's share going from `before` to `after`.
fn shift_tally(tallies: &mut Vec<Counters>, stage: usize, before: &Counters, after: &Counters) {
    if tallies.len() <= stage {
        tallies.resize(stage + 1, Counters::default());
    }
    tallies[stage].shift(before, after);
}

/// Puts a waiting device (at `slot`) in `due`, its stage's queue, at when it is due.
fn queue_due(due: &mut Vec<BTreeSet<(UnixMillis, Slot)>>, slot: Slot, progress: &DeviceProgress) {
    if due.len() <= progress.stage {
        due.resize_with(progress.stage + 1, BTreeSet::new);
    }
    due[progress.stage].insert((progress.next_try_at, slot));
}

impl Inner {
    /// Reads every task and its devices back; attempts cut by a stop are due again.
    fn load(&self) -> Result<(), CampaignError> {
        let tasks: Vec<Task> = self.store.scan(TASKS)?;
        let mut loaded = lock(&self.tasks);
        for task in tasks {
            let mut running = Running::new(task);
            if running.task.status != TaskStatus::NotStarted {
                running.subject = self.subject(&running.task.spec.package_id);
            }
            running.package_size = self.package_size(&running.task.spec.package_id);
            let devices: Vec<DeviceProgress> = self
                .store
                .scan(&format!("{PROGRESS}{}/", running.task.id))?;
            if running.task.status == TaskStatus::NotStarted {
                // Parts of a start cut by a crash: the start is made again.
                self.forget_progress(&running.task.id, &devices)?;
                loaded.insert(running.task.id.clone(), running);
                continue;
            }
            running.devices.reserve(devices.len());
            for mut progress in devices {
                running.tally(progress.stage, &Counters::default(), &progress.share());
                if progress.phase == Phase::Active {
                    // Stopped mid-attempt: tried again, the retry given back.
                    progress.phase = Phase::Waiting;
                    progress.attempts = progress.attempts.saturating_sub(1);
                    progress.interruptions += 1;
                }
                let (slot, progress) = running.devices.insert(progress);
                if progress.phase == Phase::Waiting {
                    queue_due(&mut running.due, slot, progress);
                }
            }
            loaded.insert(running.task.id.clone(), running);
        }
        Ok(())
    }

    /// Removes the progress records of `devices` in task `task_id`.
    fn forget_progress(&self, task_id: &str, devices: &[DeviceProgress]) -> Result<(), StoreError> {
        if devices.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::new();
        for progress in devices {
            batch.remove(progress_key(task_id, &progress.endpoint));
        }
        self.store.apply(batch)
    }

    /// Where the devices of a task delivering `package_id` are counted.
    fn subject(&self, package_id: &str) -> Option<Subject> {
        let package = self.catalog.package(package_id).ok()?;
        Some(Subject {
            package_id: package.id,
            vendor: package.vendor,
            model: package.model,
            to_version: package.to_version,
        })
    }

    /// The size of package `package_id`; `u64::MAX` when it is gone.
    fn package_size(&self, package_id: &str) -> u64 {
        self.catalog
            .package(package_id)
            .map_or(u64::MAX, |package| package.size)
    }

    /// Moves a task to Upgrading with a progress record for each device of its group, each in
    /// its stage, and counts those devices in the statistics, in the same batch as the task's
    /// record (a large group's records before it, in parts).
    pub(crate) fn begin(&self, running: &mut Running) -> Result<(), CampaignError> {
        let now = self.clock.now();
        let group = self.catalog.group_members(&running.task.spec.group_id)?;
        let subject = self.subject(&running.task.spec.package_id);
        let mut task = running.task.clone();
        task.status = TaskStatus::Upgrading;
        task.started_at = Some(now);
        let mut batch = Batch::new();
        let (mut devices, mut tallies, mut due) = (Roster::default(), Vec::new(), Vec::new());
        devices.reserve(group.devices.len());
        let mut added = Counters::default();
        let placement = stages::Placement::new(&task, &group.test_devices);
        for (endpoint, stage) in placement.place(&group.devices) {
            let progress = self.first_progress(&task, endpoint, stage, now);
            if batch.puts.len() == BEGIN_BATCH {
                // A task of millions is written in parts, the task's record and statistics
                // last: a crash before them leaves a task not started, begun again after.
                self.store.apply(std::mem::take(&mut batch))?;
            }
            batch.put(progress_key(&task.id, endpoint), &progress);
            let share = progress.share();
            added.shift(&Counters::default(), &share);
            shift_tally(&mut tallies, stage, &Counters::default(), &share);
            let (slot, progress) = devices.insert(progress);
            queue_due(&mut due, slot, progress);
        }
        batch.put(task_key(&task.id), &task);
        let mut changes = Changes::default();
        if let Some(subject) = &subject {
            changes.shift(subject, &Counters::default(), &added);
        }
        changes.event(CampaignEvent::Task(Box::new(shown(&tallies, &task))));
        self.write_now(batch, changes, true)?;
        running.tallies = tallies;
        running.due = due;
        running.devices = devices;
        running.subject = subject;
        running.package_size = self.package_size(&running.task.spec.package_id);
        running.task = task;
        running.apply_status(now);
        Ok(())
    }

    /// The progress of `endpoint` entering `task` in `stage` at `now`: waiting, due after the
    /// task's start jitter, in the cell the catalog last knew it in.
    pub(crate) fn first_progress(
        &self,
        task: &Task,
        endpoint: &str,
        stage: usize,
        now: UnixMillis,
    ) -> DeviceProgress {
        let mut progress = DeviceProgress::new(&task.id, endpoint, now);
        progress.stage = stage;
        let jitter_ms = task.spec.start_jitter_secs.saturating_mul(1000);
        progress.next_try_at = now + rand::rng().random_range(0..=jitter_ms);
        progress.cell_id = self.catalog.device_index().cell_of(endpoint);
        progress
    }

    /// Saves a task's record, durably (its status is what an operator acts on), with the
    /// event of its status and `also`.
    pub(crate) fn save_task(&self, running: &Running, also: Vec<CampaignEvent>) {
        let task = &running.task;
        let mut batch = Batch::new();
        batch.put(task_key(&task.id), task);
        let mut changes = Changes::default();
        changes.event(CampaignEvent::Task(Box::new(running.view())));
        also.into_iter().for_each(|event| changes.event(event));
        if let Err(error) = self.write_now(batch, changes, true) {
            tracing::error!(task = %task.id, %error, "task not saved");
        }
    }

    /// Queues the progress of the device at `slot` with what it changed in the statistics
    /// since its share was `before`, and the event of its progress (and of its failure when it
    /// just ended not upgraded), then `also`, for one batch.
    pub(crate) fn save_device(
        &self,
        running: &mut Running,
        slot: Slot,
        before: Counters,
        also: Changes,
    ) {
        let Some(progress) = running.devices.at(slot) else {
            return;
        };
        let (share, stage) = (progress.share(), progress.stage);
        self.queue(|changes| {
            if let Some(subject) = &running.subject {
                changes.shift(subject, &before, &share);
            }
            let key = progress_key(&progress.task_id, &progress.endpoint);
            changes.device(key, progress.clone());
            if share.failures > before.failures {
                changes.event(CampaignEvent::DeviceFailed(progress.clone()));
            }
            changes.then(also);
        });
        running.tally(stage, &before, &share);
    }
}

/// Progress records a task's start writes in one store batch, at most.
const BEGIN_BATCH: usize = 50_000;

/// Key prefix of tasks.
const TASKS: &str = "task/";
/// Key prefix of device progress.
const PROGRESS: &str = "prog/";

pub(crate) fn task_key(id: &str) -> String {
    format!("{TASKS}{id}")
}

fn progress_key(task: &str, endpoint: &str) -> String {
    format!("{PROGRESS}{task}/{endpoint}")
}
