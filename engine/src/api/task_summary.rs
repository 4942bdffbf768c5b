//! `GET /v1/tasks/{id}/summary`: one task's devices counted, for a person following it (the
//! console's charts) rather than for paging through them: devices per phase, download and
//! upgrade status, failures per result, the busiest cells with their progress, and the
//! upgrades and failures over time from the task's start. Computed from the task's devices
//! each time it is asked, in one pass (memory bounded by the cells kept and the time slots),
//! so a client reads this instead of every page of `/v1/tasks/{id}/devices`. Owns the
//! counting only; the devices are the campaign's.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;

use super::ApiState;
use super::extract::Checked;
use super::problem::ApiResult;
use crate::campaign::{DeviceProgress, DeviceResult, DownloadStatus, Phase, Task, UpgradeStatus};
use crate::clock::UnixMillis;

/// Most cells listed, the busiest first; the others are counted together.
pub const MAX_CELLS: usize = 50;
/// Points of the timeline, at most.
pub const TIME_SLOTS: u64 = 60;

/// What `GET /v1/tasks/{id}/summary` answers.
#[derive(Debug, Serialize)]
pub struct TaskSummary {
    /// The task.
    task_id: String,
    /// Its devices, removed ones included.
    devices: u64,
    /// Devices per phase (`waiting`, `active`, `finished`, `removed`).
    phases: BTreeMap<String, u64>,
    /// Devices per download status.
    downloads: BTreeMap<String, u64>,
    /// Devices per upgrade status.
    upgrades: BTreeMap<String, u64>,
    /// Finished devices per result (`successful`, `link_broke`, ...): why devices failed.
    results: BTreeMap<String, u64>,
    /// The [`MAX_CELLS`] cells with the most devices, most first (ties by cell id); devices
    /// whose cell is unknown are under a null cell.
    cells: Vec<CellSummary>,
    /// Devices in cells beyond those listed.
    other_cells_devices: u64,
    /// Devices upgraded and failed by each moment, from the start to the last device that
    /// finished (or now, while it runs), in up to [`TIME_SLOTS`] equal steps; empty before the
    /// task starts.
    timeline: Vec<TimePoint>,
}

/// One cell's devices in a task.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CellSummary {
    /// The cell (/4/0/8), null when not known.
    cell_id: Option<u32>,
    /// Its devices.
    devices: u64,
    /// Of them, upgraded.
    upgraded: u64,
    /// Of them, finished without an upgrade.
    failed: u64,
    /// Of them, in an attempt now.
    active: u64,
}

/// Devices finished by one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TimePoint {
    /// The moment (Unix milliseconds).
    at: UnixMillis,
    /// Devices upgraded by then.
    upgraded: u64,
    /// Devices finished without an upgrade by then.
    failed: u64,
}

/// `GET /v1/tasks/{id}/summary`.
pub async fn summary(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
) -> ApiResult<Json<TaskSummary>> {
    let now = state.platform.catalog.clock.now();
    let summary = (state.platform.campaigns)
        .read_devices(&id, |task, devices| TaskSummary::of(task, devices, now))?;
    Ok(Json(summary))
}

/// The name serde gives an enum's variant (`link_broke`), for a map key.
fn name_of(value: impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "unknown".to_string(),
    }
}

/// Devices per value of one of their statuses, in the order the values first came (a
/// status has a handful of values: a scan is cheaper than a map, and no name is made per
/// device).
struct Counts<T>(Vec<(T, u64)>);

impl<T> Default for Counts<T> {
    fn default() -> Self {
        Counts(Vec::new())
    }
}

impl<T: PartialEq> Counts<T> {
    fn add(&mut self, value: T) {
        match self.0.iter_mut().find(|(seen, _)| *seen == value) {
            Some((_, count)) => *count += 1,
            None => self.0.push((value, 1)),
        }
    }
}

/// The counts by name, as the summary shows them.
fn named<T: Serialize>(counts: Counts<T>) -> BTreeMap<String, u64> {
    counts
        .0
        .into_iter()
        .map(|(value, count)| (name_of(value), count))
        .collect()
}

/// A task's devices counted per phase, download and upgrade status, and result.
#[derive(Default)]
struct Tally {
    phases: Counts<Phase>,
    downloads: Counts<DownloadStatus>,
    upgrades: Counts<UpgradeStatus>,
    results: Counts<DeviceResult>,
}

impl Tally {
    fn count(&mut self, device: &DeviceProgress) {
        self.phases.add(device.phase);
        self.downloads.add(device.download);
        self.upgrades.add(device.upgrade);
        if let (true, Some(result)) = (finished(device), device.result) {
            self.results.add(result);
        }
    }
}

impl TaskSummary {
    /// The summary of `task` over its `devices`, at `now`.
    pub fn of<'a>(
        task: &Task,
        devices: impl ExactSizeIterator<Item = &'a DeviceProgress> + Clone,
        now: UnixMillis,
    ) -> TaskSummary {
        let mut summary = TaskSummary {
            task_id: task.id.clone(),
            devices: devices.len() as u64,
            phases: BTreeMap::new(),
            downloads: BTreeMap::new(),
            upgrades: BTreeMap::new(),
            results: BTreeMap::new(),
            cells: Vec::new(),
            other_cells_devices: 0,
            timeline: Vec::new(),
        };
        let mut tally = Tally::default();
        let mut cells: BTreeMap<Option<u32>, CellSummary> = BTreeMap::new();
        let mut slots = Slots::of(task, devices.clone(), now);
        for device in devices {
            tally.count(device);
            cells.entry(device.cell_id).or_default().count(device);
            if let Some(slots) = &mut slots {
                slots.count(device);
            }
        }
        summary.phases = named(tally.phases);
        summary.downloads = named(tally.downloads);
        summary.upgrades = named(tally.upgrades);
        summary.results = named(tally.results);
        summary.keep_busiest(cells);
        summary.timeline = slots.map(Slots::points).unwrap_or_default();
        summary
    }

    fn keep_busiest(&mut self, cells: BTreeMap<Option<u32>, CellSummary>) {
        let mut cells: Vec<CellSummary> = cells
            .into_iter()
            .map(|(cell_id, cell)| CellSummary { cell_id, ..cell })
            .collect();
        cells.sort_by(|a, b| b.devices.cmp(&a.devices).then(a.cell_id.cmp(&b.cell_id)));
        let others = cells.split_off(cells.len().min(MAX_CELLS));
        self.other_cells_devices = others.iter().map(|cell| cell.devices).sum();
        self.cells = cells;
    }
}

impl CellSummary {
    fn count(&mut self, device: &DeviceProgress) {
        self.devices += 1;
        match outcome(device) {
            Some(true) => self.upgraded += 1,
            Some(false) => self.failed += 1,
            None if device.phase == Phase::Active => self.active += 1,
            None => {}
        }
    }
}

/// True once the device finished in the task (not removed).
fn finished(device: &DeviceProgress) -> bool {
    device.phase == Phase::Finished
}

/// Whether a finished device was upgraded (`None` while it is not finished).
fn outcome(device: &DeviceProgress) -> Option<bool> {
    finished(device).then(|| device.result == Some(DeviceResult::Successful))
}

/// The moments a task's timeline counts at: from its start in equal steps up to its end.
struct Slots {
    start: UnixMillis,
    step: u64,
    /// Devices upgraded and failed in each step (the first holds those finished at the start).
    upgraded: Vec<u64>,
    failed: Vec<u64>,
}

impl Slots {
    /// The slots of `task`'s timeline: up to now while it runs, up to the last device that
    /// finished (or the task's end) once it is over; none before it starts. Only a task that
    /// is over needs a pass over its devices for that.
    fn of<'a>(
        task: &Task,
        devices: impl Iterator<Item = &'a DeviceProgress>,
        now: UnixMillis,
    ) -> Option<Slots> {
        let start = task.started_at?;
        let last_finish = || devices.filter_map(|d| d.finished_at).max();
        let end = match task.status.is_final().then(last_finish).flatten() {
            Some(last) => last.max(task.finished_at.unwrap_or(last)),
            None => now,
        }
        .max(start + 1);
        let step = (end - start).div_ceil(TIME_SLOTS).max(1);
        let slots = (end - start).div_ceil(step) as usize + 1;
        Some(Slots {
            start,
            step,
            upgraded: vec![0; slots],
            failed: vec![0; slots],
        })
    }

    fn count(&mut self, device: &DeviceProgress) {
        let (Some(at), Some(ok)) = (device.finished_at, outcome(device)) else {
            return;
        };
        let slot = at.saturating_sub(self.start).div_ceil(self.step) as usize;
        let slot = slot.min(self.upgraded.len() - 1);
        let counts = if ok {
            &mut self.upgraded
        } else {
            &mut self.failed
        };
        counts[slot] += 1;
    }

    /// Devices upgraded and failed by each moment.
    fn points(self) -> Vec<TimePoint> {
        let (mut ups, mut downs) = (0, 0);
        (self.upgraded.iter().zip(&self.failed).enumerate())
            .map(|(slot, (upgraded, failed))| {
                ups += upgraded;
                downs += failed;
                TimePoint {
                    at: self.start + slot as u64 * self.step,
                    upgraded: ups,
                    failed: downs,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::{TaskSpec, TaskStatus};

    fn device(endpoint: &str, cell: u32, result: Option<DeviceResult>, at: u64) -> DeviceProgress {
        let mut device = DeviceProgress::new("t", endpoint, 0);
        device.cell_id = Some(cell);
        if let Some(result) = result {
            device.phase = Phase::Finished;
            device.result = Some(result);
            device.finished_at = Some(at);
        }
        device
    }

    fn task(started: Option<u64>) -> Task {
        let mut task = Task::new(
            "t".into(),
            TaskSpec::new("t", "g", "p"),
            0,
            TaskStatus::Upgrading,
        );
        task.started_at = started;
        task
    }

    #[test]
    fn failures_are_counted_per_result_and_devices_per_cell() {
        let devices = [
            device("a", 1, Some(DeviceResult::Successful), 1_000),
            device("b", 1, Some(DeviceResult::LinkBroke), 2_000),
            device("c", 2, None, 0),
            device("d", 1, Some(DeviceResult::Successful), 3_000),
        ];
        let summary = TaskSummary::of(&task(Some(0)), devices.iter(), 4_000);
        assert_eq!(summary.devices, 4);
        assert_eq!(summary.results["successful"], 2);
        assert_eq!(summary.results["link_broke"], 1);
        assert_eq!(summary.phases["waiting"], 1);
        let busiest = &summary.cells[0];
        assert_eq!(
            (
                busiest.cell_id,
                busiest.devices,
                busiest.upgraded,
                busiest.failed
            ),
            (Some(1), 3, 2, 1)
        );
        assert_eq!(summary.other_cells_devices, 0);
    }

    #[test]
    fn the_timeline_accumulates_to_the_totals_from_the_start() {
        let devices = [
            device("a", 1, Some(DeviceResult::Successful), 10_000),
            device("b", 1, Some(DeviceResult::UpgradeFailed), 50_000),
            device("c", 1, Some(DeviceResult::Successful), 120_000),
        ];
        let timeline = TaskSummary::of(&task(Some(0)), devices.iter(), 120_000).timeline;
        assert!(timeline.len() as u64 <= TIME_SLOTS + 1);
        assert_eq!(timeline[0].at, 0);
        let last = timeline.last().unwrap();
        assert_eq!((last.upgraded, last.failed), (2, 1));
        assert!(timeline.windows(2).all(|w| w[0].upgraded <= w[1].upgraded));
        assert!(timeline.iter().any(|p| (p.upgraded, p.failed) == (1, 0)));
    }

    #[test]
    fn a_task_that_is_over_has_its_timeline_end_at_its_last_finished_device() {
        let devices = [
            device("a", 1, Some(DeviceResult::Successful), 10_000),
            device("b", 1, Some(DeviceResult::UpgradeFailed), 60_000),
        ];
        let mut over = task(Some(0));
        over.status = TaskStatus::Completed;
        let timeline = TaskSummary::of(&over, devices.iter(), 3_600_000).timeline;
        let last = timeline.last().unwrap();
        assert_eq!((last.at, last.upgraded, last.failed), (60_000, 1, 1));
        let running = TaskSummary::of(&task(Some(0)), devices.iter(), 3_600_000).timeline;
        assert_eq!(
            running.last().unwrap().at,
            3_600_000,
            "a running task's ends now"
        );
    }

    #[test]
    fn a_task_not_started_has_no_timeline_and_cells_beyond_the_cap_are_counted_together() {
        let devices: Vec<_> = (0..MAX_CELLS as u32 + 3)
            .map(|cell| device(&format!("d{cell}"), cell, None, 0))
            .collect();
        let summary = TaskSummary::of(&task(None), devices.iter(), 0);
        assert!(summary.timeline.is_empty());
        assert_eq!(summary.cells.len(), MAX_CELLS);
        assert_eq!(summary.other_cells_devices, 3);
    }
}
