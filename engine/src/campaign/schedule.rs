//! The scheduler: every tick (or when woken) it starts tasks at their execution time, expires
//! devices past the deadline, pauses tasks whose failure rate crosses their threshold, starts
//! due attempts within the pacing limits, applies each attempt's outcome (retry, postpone,
//! pause a cell, remove, finish), and completes tasks whose devices are all done.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use super::attempt::{AttemptOutcome, AttemptRequest};
use super::progress::{DeviceProgress, DeviceResult, DownloadStatus, Phase, UpgradeStatus};
use super::task::{CellPause, TaskStatus};
use super::{Inner, Running, TICK};
use crate::clock::UnixMillis;
use crate::transfer::Stage;

/// How soon an offline device is looked at again, at most.
const OFFLINE_RECHECK_MS: u64 = 5_000;

/// Runs the scheduler until the campaign service is dropped.
pub(super) async fn run(inner: Weak<Inner>) {
    loop {
        let Some(inner) = inner.upgrade() else { return };
        tick(&inner);
        tokio::select! {
            () = inner.wake.notified() => {}
            () = tokio::time::sleep(TICK) => {}
        }
    }
}

/// One look at every task.
fn tick(inner: &Arc<Inner>) {
    let now = inner.clock.now();
    let mut tasks = inner.lock();
    for running in tasks.values_mut() {
        let status = running.task.status;
        let due = running.task.spec.execution_time.is_none_or(|t| t <= now);
        if status == TaskStatus::NotStarted
            && due
            && let Err(error) = inner.begin(running)
        {
            tracing::error!(task = %running.task.id, %error, "task did not start");
        }
        if running.task.status == TaskStatus::Upgrading {
            expire_past_deadline(inner, running, now);
            pause_on_failure_rate(inner, running);
        }
        if running.task.status == TaskStatus::Upgrading {
            launch_due(inner, running, now);
        }
        complete_if_done(inner, running, now);
    }
}

/// Past the deadline, devices waiting for a retry end as "task expired".
fn expire_past_deadline(inner: &Inner, running: &mut Running, now: UnixMillis) {
    if running.task.spec.deadline.is_none_or(|d| d > now) {
        return;
    }
    for progress in running.devices.values_mut() {
        if progress.phase == Phase::Waiting {
            let note = progress.note.take();
            progress.finish(DeviceResult::TaskExpired, note);
            inner.save_progress(progress);
        }
    }
}

/// Pauses the task when too many of its finished devices failed.
fn pause_on_failure_rate(inner: &Inner, running: &mut Running) {
    let Some(max_rate) = running.task.spec.max_failure_rate else {
        return;
    };
    let finished: Vec<_> = running
        .devices
        .values()
        .filter(|p| p.phase == Phase::Finished)
        .collect();
    let failed = finished
        .iter()
        .filter(|p| p.result != Some(DeviceResult::Successful))
        .count();
    let sample = finished.len();
    if sample == 0 || sample < running.task.spec.failure_sample as usize {
        return;
    }
    let rate = failed as f64 / sample as f64;
    if rate >= max_rate {
        running.task.status = TaskStatus::Paused;
        running.task.pause_reason = Some(format!(
            "failure rate {:.0}% of {sample} finished devices reached {:.0}%",
            rate * 100.0,
            max_rate * 100.0
        ));
        running.apply_status();
        inner.save_task(&running.task);
    }
}

/// Starts every due device the pacing limits allow.
fn launch_due(inner: &Arc<Inner>, running: &mut Running, now: UnixMillis) {
    let pacing = running.task.spec.pacing;
    let mut per_cell: HashMap<u32, usize> = HashMap::new();
    for progress in running
        .devices
        .values()
        .filter(|p| p.phase == Phase::Active)
    {
        if let Some(cell) = progress.cell_id {
            *per_cell.entry(cell).or_default() += 1;
        }
    }
    let due: Vec<String> = running
        .devices
        .values()
        .filter(|p| p.phase == Phase::Waiting && p.next_try_at <= now)
        .filter(|p| !running.task.cell_paused(p.cell_id, now))
        .map(|p| p.endpoint.clone())
        .collect();
    for endpoint in due {
        if running.active.len() >= pacing.max_concurrent {
            return;
        }
        let cell = running.devices[&endpoint].cell_id;
        if let Some(cell) = cell {
            let count = per_cell.entry(cell).or_default();
            if *count >= pacing.max_per_cell {
                continue;
            }
            *count += 1;
        }
        launch(inner, running, &endpoint);
    }
}

/// Starts one attempt.
fn launch(inner: &Arc<Inner>, running: &mut Running, endpoint: &str) {
    let progress = running
        .devices
        .get_mut(endpoint)
        .expect("launching a device of the task");
    progress.phase = Phase::Active;
    progress.attempts += 1;
    inner.save_progress(progress);
    let request = AttemptRequest {
        task: running.task.clone(),
        endpoint: endpoint.to_string(),
        attempt: progress.attempts - 1,
        install_gate: running.gate.subscribe(),
        stages: inner.stages.clone(),
    };
    let attempt = inner.attempts.attempt(request);
    let weak = Arc::downgrade(inner);
    let (task_id, device) = (running.task.id.clone(), endpoint.to_string());
    let handle = tokio::spawn(async move {
        let outcome = attempt.await;
        if let Some(inner) = weak.upgrade() {
            finish_attempt(&inner, &task_id, &device, outcome);
        }
    });
    running
        .active
        .insert(endpoint.to_string(), handle.abort_handle());
}

/// Applies an attempt's outcome to the device and, for a weak cell, to the task.
fn finish_attempt(inner: &Inner, task_id: &str, endpoint: &str, outcome: AttemptOutcome) {
    let now = inner.clock.now();
    let mut tasks = inner.lock();
    let Some(running) = tasks.get_mut(task_id) else {
        return;
    };
    running.active.remove(endpoint);
    let interval = running.task.spec.retry_interval_secs * 1000;
    let Some(progress) = running.devices.get_mut(endpoint) else {
        return;
    };
    match outcome {
        AttemptOutcome::Offline => {
            let recheck = interval.clamp(1, OFFLINE_RECHECK_MS);
            postpone(progress, now + recheck, "offline".into());
        }
        AttemptOutcome::Postponed { until, note } => postpone(progress, until, note),
        AttemptOutcome::WeakCell { cell, note } => {
            progress.cell_id = Some(cell);
            postpone(progress, now + interval, note.clone());
            let pause = CellPause {
                reason: note,
                until: now + interval,
            };
            running.task.paused_cells.insert(cell, pause);
            inner.save_task(&running.task);
        }
        AttemptOutcome::Removed(reason) => {
            progress.phase = Phase::Removed;
            progress.note = Some(reason);
        }
        AttemptOutcome::Ran {
            result,
            note,
            wire,
            cell,
        } => {
            progress.add_wire(&wire);
            progress.cell_id = cell.or(progress.cell_id);
            let retries = running.task.spec.retries;
            let deadline = running.task.spec.deadline;
            settle(progress, result, note, now, interval, retries, deadline);
        }
    }
    // Saved (and announced) under the lock, so events leave in the order the changes happened.
    inner.save_progress(progress);
    drop(tasks);
    inner.wake.notify_one();
}

/// Not tried this time: the retry is given back.
fn postpone(progress: &mut DeviceProgress, until: UnixMillis, note: String) {
    progress.attempts = progress.attempts.saturating_sub(1);
    progress.phase = Phase::Waiting;
    progress.next_try_at = until;
    progress.note = Some(note);
}

/// A finished attempt: success is final; a failure waits for a retry while retries and the
/// deadline allow, and is final otherwise.
fn settle(
    progress: &mut DeviceProgress,
    result: DeviceResult,
    note: Option<String>,
    now: UnixMillis,
    interval: u64,
    retries: u32,
    deadline: Option<UnixMillis>,
) {
    if result == DeviceResult::Successful {
        progress.finish(result, note);
        return;
    }
    let next = now + interval;
    let past_deadline = deadline.is_some_and(|d| next >= d);
    if progress.attempts <= retries && !past_deadline {
        progress.phase = Phase::Waiting;
        progress.next_try_at = next;
        progress.result = Some(result);
        progress.note = note;
    } else if past_deadline {
        progress.finish(DeviceResult::TaskExpired, note);
    } else {
        progress.finish(result, note);
    }
}

/// Completes a task whose devices are all done.
fn complete_if_done(inner: &Inner, running: &mut Running, now: UnixMillis) {
    let live = matches!(
        running.task.status,
        TaskStatus::Upgrading | TaskStatus::Paused
    );
    if live && running.active.is_empty() && running.devices.values().all(DeviceProgress::is_done) {
        running.task.status = TaskStatus::Completed;
        running.task.finished_at = Some(now);
        running.apply_status();
        inner.save_task(&running.task);
    }
}

/// Shows each delivery's stage in its device's progress.
pub(super) async fn follow_stages(
    inner: Weak<Inner>,
    mut stages: mpsc::UnboundedReceiver<(String, Stage)>,
) {
    while let Some((endpoint, stage)) = stages.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        let mut tasks = inner.lock();
        let progress = tasks
            .values_mut()
            .filter(|running| running.active.contains_key(&endpoint))
            .find_map(|running| running.devices.get_mut(&endpoint));
        let Some(progress) = progress else { continue };
        match stage {
            Stage::Downloading => progress.download = DownloadStatus::Downloading,
            Stage::Downloaded => progress.download = DownloadStatus::Downloaded,
            Stage::Installing => progress.upgrade = UpgradeStatus::Upgrading,
        }
        inner.save_progress(progress);
        drop(tasks);
    }
}
