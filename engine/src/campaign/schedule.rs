//! The scheduler: every tick (or when woken) it starts tasks at their execution time, expires
//! devices past the deadline, applies the rollout stages' rules (pause on a stage's failure
//! rate, open the next stage or wait for approval), starts due attempts of the open stages
//! within the pacing limits, follows each attempt's stages, applies its outcome (retry,
//! postpone, pause a cell, remove, finish), and completes tasks whose devices are all done.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use super::ahead::{self, SurveysAhead};
use super::attempt::{AttemptOutcome, AttemptRequest};
use super::progress::{DeviceProgress, DeviceResult, DownloadStatus, Phase, UpgradeStatus};
use super::stages::{StageOutcome, TooManyFailures};
use super::task::{CellPause, TaskStatus};
use super::writes::Changes;
use super::{
    Attempt, CampaignEvent, CellPaused, FailureRateAlarm, Inner, Running, Slot, TICK, queue_due,
    task_key,
};
use crate::clock::UnixMillis;
use crate::sync::lock;
use crate::transfer::{Stage, WireCount};

/// Shortest time between two ticks.
const TICK_GAP: Duration = Duration::from_millis(10);

/// How soon an offline device is looked at again, at most.
const OFFLINE_RECHECK_MS: u64 = 5_000;

/// How soon a device asleep in PSM is looked at again: every other tick, so one that wakes
/// (with an Update) starts within a second or two of its window opening.
const ASLEEP_RECHECK_MS: u64 = 1_000;

/// Runs the scheduler until the campaign service is dropped. It holds the service only while
/// it looks at the tasks, never while it waits: the service's drop is what stops it (and its
/// attempts).
pub(super) async fn run(inner: Weak<Inner>) {
    loop {
        let wake = {
            let Some(inner) = inner.upgrade() else { return };
            tick(&inner);
            inner.wake.clone()
        };
        // Wakes that come meanwhile (an attempt ends, an operator acts) are served together
        // by the next tick: a tick looks at every attempt under way of a task, so one per
        // ended attempt would cost the task's concurrency for each.
        tokio::time::sleep(TICK_GAP).await;
        tokio::select! {
            biased;
            () = wake.notified() => {}
            () = tokio::time::sleep(TICK) => {}
        }
    }
}

/// One look at every task.
fn tick(inner: &Arc<Inner>) {
    let now = inner.clock.now();
    let mut tasks = lock(&inner.tasks);
    let mut cells = transfers_per_cell(&tasks);
    for running in tasks.values_mut() {
        let status = running.task.status;
        let due = running.task.spec.execution_time.is_none_or(|t| t <= now);
        if status == TaskStatus::NotStarted
            && due
            && let Err(error) = inner.begin(running)
        {
            tracing::error!(task = %running.task.id, %error, "task did not start");
        }
        if matches!(
            running.task.status,
            TaskStatus::Upgrading | TaskStatus::Paused
        ) {
            expire_past_deadline(inner, running, now);
        }
        if running.task.status == TaskStatus::Upgrading {
            follow_stages(inner, running);
        }
        if running.task.spec.windows.is_some() {
            // An update window opens or closes with the clock, not with a status.
            running.apply_status(now);
        }
        let windows = running.task.spec.windows.as_ref();
        let downloads_open = windows.is_none_or(|windows| windows.downloads_open(now));
        let installs_open = windows.is_none_or(|windows| windows.updates_open(now));
        if running.task.status == TaskStatus::Upgrading && (downloads_open || installs_open) {
            launch_due(inner, running, now, &mut cells, downloads_open);
        }
        complete_if_done(inner, running, now);
    }
}

/// Whether a device's attempt is using the link: under way, and not past its download.
/// A device holding the package (waiting to be told to install, in a paused task or outside
/// an update window) or installing it sends no block: the cell's next device may start.
fn transferring(progress: &DeviceProgress) -> bool {
    progress.phase == Phase::Active && progress.download != DownloadStatus::Downloaded
}

/// Whether the device holds the package and was not told to install it yet.
fn holds_package(progress: &DeviceProgress) -> bool {
    progress.download == DownloadStatus::Downloaded && progress.upgrade == UpgradeStatus::NotStarted
}

/// Attempts transferring in each cell, over every task: a cell's downlink is shared by all.
/// Only the attempts under way are looked at.
fn transfers_per_cell(tasks: &BTreeMap<String, Running>) -> HashMap<u32, usize> {
    let mut cells: HashMap<u32, usize> = HashMap::new();
    let active = (tasks.values()).flat_map(|running| running.active.values());
    for cell in active.filter(|a| a.transferring).filter_map(|a| a.cell) {
        *cells.entry(cell).or_default() += 1;
    }
    cells
}

/// Past the deadline, devices not finished end as "task expired": those waiting for a try,
/// and, in a paused task, attempts held before the update step (a resume would come too
/// late). Attempts of an upgrading task end by themselves, at the deadline at the latest;
/// a device already updating finishes.
fn expire_past_deadline(inner: &Inner, running: &mut Running, now: UnixMillis) {
    if running.task.spec.deadline.is_none_or(|d| d > now) {
        return;
    }
    let paused = running.task.status == TaskStatus::Paused;
    let expires = |p: &DeviceProgress| match p.phase {
        Phase::Waiting => true,
        Phase::Active => paused && p.upgrade != UpgradeStatus::Upgrading,
        Phase::Finished | Phase::Removed => false,
    };
    // Once the waiting devices have expired (the first tick past the deadline), only attempts
    // under way are left: the next ticks look at those, not at every device of the task.
    let unfinished: u64 = (running.tallies.iter())
        .map(|t| t.devices.saturating_sub(t.successes + t.failures))
        .sum();
    let expiring: Vec<Slot> = if unfinished <= running.active.len() as u64 {
        (running.active.keys().copied())
            .filter(|&slot| running.devices.at(slot).is_some_and(expires))
            .collect()
    } else {
        (running.devices.iter())
            .filter(|(_, p)| expires(p))
            .map(|(slot, _)| slot)
            .collect()
    };
    for slot in expiring {
        if let Some(attempt) = running.active.remove(&slot) {
            attempt.abort.abort();
        }
        let Some(progress) = running.devices.at_mut(slot) else {
            continue;
        };
        let before = progress.share();
        let note = progress.note.take();
        progress.finish(DeviceResult::TaskExpired, note, now);
        inner.save_device(running, slot, before, Changes::default());
    }
}

/// Applies the rollout stages' rules to an upgrading task: it pauses when an open stage's
/// failure rate crosses its threshold; otherwise, when its furthest open stage succeeded, the
/// next one opens, or the task waits for an operator's approval (the stage asks for it, or
/// ended short of its success threshold).
fn follow_stages(inner: &Inner, running: &mut Running) {
    let stages = running.task.spec.rollout().into_owned();
    for (index, stage) in stages.iter().enumerate().take(running.task.stage + 1) {
        let baseline = (running.task.failure_baseline.get(index).copied()).unwrap_or_default();
        let counted = running.stage_tally(index);
        if let Some(failures) = stage.failures(&running.task.spec, &counted, baseline) {
            pause_on_failures(inner, running, &stage.name, failures);
            return;
        }
    }
    let mut moved = false;
    while running.task.awaiting_approval.is_none() && running.task.stage + 1 < stages.len() {
        let stage = &stages[running.task.stage];
        let counted = running.stage_tally(running.task.stage);
        let (name, upgraded, devices) = (&stage.name, counted.successes, counted.devices);
        running.task.awaiting_approval = match stage.outcome(&counted) {
            StageOutcome::UnderWay => break,
            StageOutcome::Succeeded if devices > 0 && stage.asks_approval() => Some(format!(
                "stage {name:?} upgraded {upgraded} of {devices} devices: the next stage \
                 opens when an operator approves"
            )),
            StageOutcome::Succeeded => {
                running.task.stage += 1;
                None
            }
            StageOutcome::FellShort => Some(format!(
                "stage {name:?} ended with {upgraded} of {devices} devices upgraded, short of \
                 its success threshold ({}%): approve to go on anyway, or cancel",
                // To a tenth of a percent: 0.9 × 100 is 90.00000000000001 in binary.
                (stage.success_threshold * 1000.0).round() / 10.0
            )),
        };
        moved = true;
    }
    if moved {
        inner.save_task(running, Vec::new());
    }
}

/// Pauses the task: too many devices of stage `stage` failed since it last resumed.
fn pause_on_failures(inner: &Inner, running: &mut Running, stage: &str, failures: TooManyFailures) {
    let TooManyFailures {
        finished,
        failed,
        threshold,
    } = failures;
    let rate = failed as f64 / finished as f64;
    running.task.status = TaskStatus::Paused;
    running.task.pause_reason = Some(format!(
        "stage {stage:?}: failure rate {:.0}% of {finished} finished devices reached {:.0}%",
        rate * 100.0,
        threshold * 100.0
    ));
    running.apply_status(inner.clock.now());
    let alarm = FailureRateAlarm {
        task_id: running.task.id.clone(),
        stage: stage.to_string(),
        finished,
        failed,
        failure_rate: rate,
        threshold,
    };
    inner.save_task(running, vec![CampaignEvent::FailureRateAlarm(alarm)]);
}

/// Starts every due device of the open stages the pacing limits allow: the task's own, and
/// each cell's over every task (`cells` counts the attempts under way per cell). Devices that
/// can be reached now go first: those with a download under way (it resumes from the device's
/// point, and a device left waiting awake wastes its window), then those with the most of
/// their awake window left (one about to sleep would stop before its end). A device known to
/// be asleep in PSM starts nothing until it wakes: it would hold its slot through its sleep
/// (a download its sleep cuts ends its attempt for the same reason, `AttemptOutcome::Asleep`).
/// Only due devices are looked at, earliest first, at most [`SCAN_PER_SLOT`] per free slot.
/// Outside the download windows (`downloads_open` false, in an update window) only devices
/// holding the package start, to install it.
fn launch_due(
    inner: &Arc<Inner>,
    running: &mut Running,
    now: UnixMillis,
    cells: &mut HashMap<u32, usize>,
    downloads_open: bool,
) {
    let pacing = running.task.spec.pacing;
    let transfers = (running.active.values()).filter(|a| a.transferring).count();
    let free = pacing.max_concurrent.saturating_sub(transfers);
    if free == 0 {
        return;
    }
    let cells = CellRoom {
        counts: cells,
        most: pacing.max_per_cell,
    };
    let picks = pick_due(inner, running, now, free, cells, downloads_open);
    for slot in picks.launch {
        launch(inner, running, slot);
    }
    for (slot, cell) in picks.survey_ahead {
        survey_ahead(inner, running, slot, cell);
    }
}

/// Due devices looked at per free slot of the task, at most, in one tick: enough to pass over
/// devices whose cell is full or paused, without a look at every device of a large task.
const SCAN_PER_SLOT: usize = 16;

/// The attempts transferring in each cell, against the most a cell may have.
struct CellRoom<'a> {
    counts: &'a mut HashMap<u32, usize>,
    most: usize,
}

impl CellRoom<'_> {
    /// Whether `cell` (a device's, when known) has room for one more.
    fn has_room(&self, cell: Option<u32>) -> bool {
        cell.is_none_or(|c| self.counts.get(&c).copied().unwrap_or(0) < self.most)
    }

    /// Takes one place in `cell`.
    fn take(&mut self, cell: Option<u32>) {
        if let Some(cell) = cell {
            *self.counts.entry(cell).or_default() += 1;
        }
    }
}

/// What one look at a task's due devices decided.
struct Picks {
    /// Devices to start now.
    launch: Vec<Slot>,
    /// Devices to survey while they wait for room in their cell.
    survey_ahead: Vec<(Slot, u32)>,
}

/// Up to `free` devices of the open stages to start at `now`: due, in cells not paused and
/// with room (taken as they are picked), those reachable now before those whose reach is not
/// known, among the reachable those surveyed ahead first, then those resuming a download,
/// then the longest reachable, then the earliest due; looking at `free * SCAN_PER_SLOT` queue
/// entries at most. Their entries leave the queues, and so do those of devices that moved on.
/// A device asleep is looked at again [`ASLEEP_RECHECK_MS`] later, behind those due before
/// then, so sleeping devices at the head of a queue do not hide awake ones behind them.
/// Without `downloads_open`, a device that does not hold the package is due again at the
/// download windows' next opening instead. Also the devices to survey ahead in cells with no
/// room, ranked alike ([`ahead_to_survey`]); a device whose survey ahead is under way waits
/// for it.
fn pick_due(
    inner: &Inner,
    running: &mut Running,
    now: UnixMillis,
    free: usize,
    mut cells: CellRoom,
    downloads_open: bool,
) -> Picks {
    let most = free.saturating_mul(SCAN_PER_SLOT);
    let stands_for = inner.attempts.surveys_stand_for();
    let stands_for = u64::try_from(stands_for.as_millis()).unwrap_or(u64::MAX);
    running.ahead.spend_stale(now, stands_for);
    let ahead_most = match stands_for {
        0 => 0,
        _ => ahead::per_cell(cells.most),
    };
    // Not sized by `free`: it is the task's pacing, which an operator may set to billions.
    let (mut picked, mut windowed, mut asleep) = (Vec::new(), Vec::new(), Vec::new());
    let (mut stale, mut looked, mut deferred) = (Vec::new(), 0, Vec::new());
    let (mut sleeping, mut waiting_for_room) = (Vec::new(), Vec::new());
    let open = running.due.len().min(running.task.stage + 1);
    'stages: for (stage, queue) in running.due[..open].iter().enumerate() {
        for entry in queue.iter().take_while(|(at, _)| *at <= now) {
            if looked >= most || picked.len() >= free {
                break 'stages;
            }
            looked += 1;
            let waiting = (running.devices.at(entry.1))
                .filter(|p| p.phase == Phase::Waiting && p.next_try_at == entry.0);
            let Some(progress) = waiting else {
                stale.push((stage, *entry));
                continue;
            };
            if !downloads_open && !holds_package(progress) {
                deferred.push((stage, *entry));
                continue;
            }
            let (cell, slot) = (progress.cell_id, entry.1);
            if running.task.cell_paused(cell, now) || running.ahead.under_way(slot) {
                continue;
            }
            let resuming = progress.download == DownloadStatus::Downloading;
            if !cells.has_room(cell) {
                let wants_more = |c| running.ahead.in_cell(c) < ahead_most;
                if let Some(cell) = cell.filter(|&c| wants_more(c))
                    && running.ahead.may_survey(slot)
                    && let Some(left) = inner.attempts.reachable_for(&progress.endpoint)
                    && left >= ahead::AWAKE_AT_LEAST
                {
                    waiting_for_room.push(((resuming, left), slot, cell));
                }
                continue;
            }
            match inner.attempts.reachable_for(&progress.endpoint) {
                // Reachable for as long as it stays registered: none is better.
                Some(Duration::MAX) => {
                    cells.take(cell);
                    picked.push((stage, *entry));
                }
                Some(left) => {
                    let ready = running.ahead.ready(slot);
                    windowed.push(((ready, resuming, left), stage, *entry, cell));
                }
                None if inner.attempts.asleep(&progress.endpoint) => {
                    sleeping.push((stage, *entry));
                }
                None if asleep.len() < free => asleep.push((stage, *entry, cell)),
                None => {}
            }
        }
    }
    // Stable: among devices with as long left, the earliest due first.
    windowed.sort_by_key(|(rank, ..)| std::cmp::Reverse(*rank));
    let reachable = windowed
        .into_iter()
        .map(|(_, stage, entry, cell)| (stage, entry, cell));
    for (stage, entry, cell) in reachable.chain(asleep) {
        if picked.len() < free && cells.has_room(cell) {
            cells.take(cell);
            picked.push((stage, entry));
        }
    }
    for (stage, entry) in stale
        .iter()
        .chain(&picked)
        .chain(&deferred)
        .chain(&sleeping)
    {
        running.due[*stage].remove(entry);
    }
    defer_to_download_window(running, deferred, now);
    due_again(running, sleeping, now + ASLEEP_RECHECK_MS);
    Picks {
        launch: picked.into_iter().map(|(_, (_, slot))| slot).collect(),
        survey_ahead: ahead_to_survey(&running.ahead, waiting_for_room, ahead_most),
    }
}

/// Of the devices `waiting` for room in their cells (each with its rank: resuming a download,
/// then how long it is reachable for), the best ranked of each cell, up to `most` surveyed
/// ahead in a cell with those already.
fn ahead_to_survey(
    ahead: &SurveysAhead,
    mut waiting: Vec<((bool, Duration), Slot, u32)>,
    most: usize,
) -> Vec<(Slot, u32)> {
    // Stable: among devices ranked alike, the earliest due first.
    waiting.sort_by_key(|(rank, ..)| std::cmp::Reverse(*rank));
    let mut added: HashMap<u32, usize> = HashMap::new();
    let mut chosen = Vec::new();
    for (_, slot, cell) in waiting {
        let count = added.entry(cell).or_default();
        if ahead.in_cell(cell) + *count < most {
            *count += 1;
            chosen.push((slot, cell));
        }
    }
    chosen
}

/// Surveys the device at `slot` while it waits for room in `cell`; once done, the survey
/// stands for its attempt, which goes before its cell's other devices.
fn survey_ahead(inner: &Arc<Inner>, running: &mut Running, slot: Slot, cell: u32) {
    let Some(progress) = running.devices.at(slot) else {
        return;
    };
    let Some(survey) = inner.attempts.survey_ahead(&progress.endpoint) else {
        return;
    };
    let (task, endpoint) = (&running.task.id, &progress.endpoint);
    tracing::debug!(%task, %endpoint, cell, "survey ahead");
    let (weak, task_id) = (Arc::downgrade(inner), task.clone());
    let handle = tokio::spawn(async move {
        let surveyed = survey.await;
        if let Some(inner) = weak.upgrade()
            && let Some(running) = lock(&inner.tasks).get_mut(&task_id)
        {
            running.ahead.ended(slot, surveyed);
        }
    });
    running.ahead.started(slot, cell, handle.abort_handle());
}

/// Devices that may not start a download now are due again when the download windows next
/// open (in memory: a restart looks at them once more and defers them again).
fn defer_to_download_window(
    running: &mut Running,
    deferred: Vec<(usize, (UnixMillis, Slot))>,
    now: UnixMillis,
) {
    let windows = running.task.spec.windows.as_ref();
    let reopens = windows.map_or(now, |windows| windows.next_download_opening(now));
    due_again(running, deferred, reopens);
}

/// The devices of `entries`, taken out of their queues, are due again `at` (in memory).
fn due_again(running: &mut Running, entries: Vec<(usize, (UnixMillis, Slot))>, at: UnixMillis) {
    for (_, (_, slot)) in entries {
        if let Some(progress) = running.devices.at_mut(slot) {
            progress.next_try_at = at;
            queue_due(&mut running.due, slot, progress);
        }
    }
}

/// Starts an attempt of the device at `slot`, and follows its stages until its outcome.
fn launch(inner: &Arc<Inner>, running: &mut Running, slot: Slot) {
    let Some(progress) = running.devices.at_mut(slot) else {
        return;
    };
    running.ahead.take(slot);
    let before = progress.share();
    progress.phase = Phase::Active;
    progress.attempts += 1;
    let attempt_number = progress.attempts - 1;
    let (cell, transferring) = (progress.cell_id, transferring(progress));
    let endpoint = progress.endpoint.clone();
    let (task, try_number) = (&running.task.id, progress.attempts);
    tracing::debug!(%task, %endpoint, ?cell, try_number, "attempt starts");
    inner.save_device(running, slot, before, Changes::default());
    let (stages, reported) = mpsc::unbounded_channel();
    let request = AttemptRequest {
        task: running.task.clone(),
        endpoint,
        attempt: attempt_number,
        gate: running.gate.subscribe(),
        stages,
    };
    let attempt = inner.attempts.attempt(request);
    let weak = Arc::downgrade(inner);
    let task_id = running.task.id.clone();
    let handle = tokio::spawn(async move {
        let outcome = follow(attempt, reported, |stage| {
            if let Some(inner) = weak.upgrade() {
                show_stage(&inner, &task_id, slot, stage);
            }
        })
        .await;
        if let Some(inner) = weak.upgrade() {
            finish_attempt(&inner, &task_id, slot, outcome);
        }
    });
    let attempt = Attempt {
        abort: handle.abort_handle(),
        wire: WireCount::default(),
        cell,
        transferring,
    };
    running.active.insert(slot, attempt);
}

/// Runs `attempt`, handing each stage it reports to `show` in order, the last ones before
/// its outcome is returned.
async fn follow(
    attempt: impl Future<Output = AttemptOutcome>,
    mut reported: mpsc::UnboundedReceiver<(String, Stage)>,
    mut show: impl FnMut(Stage),
) -> AttemptOutcome {
    tokio::pin!(attempt);
    let outcome = loop {
        tokio::select! {
            biased;
            Some((_, stage)) = reported.recv() => show(stage),
            outcome = &mut attempt => break outcome,
        }
    };
    while let Ok((_, stage)) = reported.try_recv() {
        show(stage);
    }
    outcome
}

/// Shows a delivery's stage in its device's progress; a suspended delivery's bytes are
/// counted at once, so they stay counted if the attempt never ends (cancel, kill).
fn show_stage(inner: &Inner, task_id: &str, slot: Slot, stage: Stage) {
    let mut tasks = lock(&inner.tasks);
    let Some(running) = tasks.get_mut(task_id) else {
        return;
    };
    let (Some(attempt), Some(progress)) =
        (running.active.get_mut(&slot), running.devices.at_mut(slot))
    else {
        return;
    };
    let before = progress.share();
    let mut count = |progress: &mut DeviceProgress, wire: WireCount| {
        progress.add_wire(&wire_since(&wire, &attempt.wire), running.package_size);
        attempt.wire = wire;
    };
    match stage {
        Stage::Downloading => progress.download = DownloadStatus::Downloading,
        Stage::Downloaded { wire } => {
            progress.download = DownloadStatus::Downloaded;
            count(progress, wire);
        }
        Stage::Installing => progress.upgrade = UpgradeStatus::Upgrading,
        Stage::Suspended { wire } => {
            progress.interruptions += 1;
            count(progress, wire);
        }
    }
    attempt.transferring = transferring(progress);
    inner.save_device(running, slot, before, Changes::default());
}

/// What `now` counts beyond `before` (both counts of one delivery, `now` the later).
fn wire_since(now: &WireCount, before: &WireCount) -> WireCount {
    WireCount {
        package_first: now.package_first.saturating_sub(before.package_first),
        package_resent: now.package_resent.saturating_sub(before.package_resent),
        package_recovered: now
            .package_recovered
            .saturating_sub(before.package_recovered),
        wire_sent: now.wire_sent.saturating_sub(before.wire_sent),
        wire_received: now.wire_received.saturating_sub(before.wire_received),
        retransmissions: now.retransmissions.saturating_sub(before.retransmissions),
    }
}

/// Applies an attempt's outcome to the device (at `slot`) and, for a weak cell, to the task,
/// in one batch. An attempt that was aborted (the task stopped, or it expired) changes
/// nothing.
fn finish_attempt(inner: &Inner, task_id: &str, slot: Slot, outcome: AttemptOutcome) {
    let now = inner.clock.now();
    let mut tasks = lock(&inner.tasks);
    let Some(running) = tasks.get_mut(task_id) else {
        return;
    };
    let Some(Attempt { wire: counted, .. }) = running.active.remove(&slot) else {
        return;
    };
    let package_size = running.package_size;
    let spec = &running.task.spec;
    let interval = spec.retry_interval_secs * 1000;
    let (retries, deadline, cell_pause) = (spec.retries, spec.deadline, spec.cell_pause_secs);
    let Some(progress) = running.devices.at_mut(slot) else {
        return;
    };
    let before = progress.share();
    let mut cell_paused = None;
    tracing::debug!(task = %task_id, endpoint = %progress.endpoint, ?outcome, "attempt ends");
    match outcome {
        AttemptOutcome::Offline => {
            let recheck = interval.clamp(1, OFFLINE_RECHECK_MS);
            postpone(progress, now + recheck, "offline".into());
        }
        AttemptOutcome::Postponed { until, note } => postpone(progress, until, note),
        AttemptOutcome::Held { until, wire, cell } => {
            took(progress, &wire, &counted, package_size, cell);
            let note = "holds the package; installs once the task lets it (its update window)";
            postpone(progress, until, note.into());
        }
        AttemptOutcome::Asleep { wire, cell } => {
            took(progress, &wire, &counted, package_size, cell);
            let note = "asleep mid-download: goes on from its point once awake";
            postpone(progress, now, note.into());
        }
        AttemptOutcome::WeakCell { cell, note } => {
            let until = now + cell_pause * 1000;
            progress.cell_id = Some(cell);
            postpone(progress, until, note.clone());
            let pause = CellPause {
                reason: note,
                until,
            };
            running.task.paused_cells.insert(cell, pause.clone());
            cell_paused = Some(CellPaused {
                task_id: task_id.to_string(),
                cell_id: cell,
                pause,
            });
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
            let sent = wire.package_first + wire.package_resent > 0;
            if sent
                && result != DeviceResult::Successful
                && progress.download != DownloadStatus::Downloaded
            {
                progress.interruptions += 1;
            }
            took(progress, &wire, &counted, package_size, cell);
            settle(progress, result, note, now, interval, retries, deadline);
        }
    }
    if progress.phase == Phase::Waiting {
        queue_due(&mut running.due, slot, progress);
    }
    let mut also = Changes::default();
    if let Some(paused) = cell_paused {
        also.put(task_key(task_id), &running.task);
        also.event(CampaignEvent::Task(Box::new(running.view())));
        also.event(CampaignEvent::CellPaused(paused));
    }
    // Queued under the lock, so events leave in the order the changes happened.
    inner.save_device(running, slot, before, also);
    drop(tasks);
    inner.wake.notify_one();
}

/// What an attempt that reached the device took: its bytes beyond those its stages
/// `counted` already, and the cell it was surveyed in (when it was).
fn took(
    progress: &mut DeviceProgress,
    wire: &WireCount,
    counted: &WireCount,
    package_size: u64,
    cell: Option<u32>,
) {
    progress.add_wire(&wire_since(wire, counted), package_size);
    progress.cell_id = cell.or(progress.cell_id);
}

/// Not tried this time: the retry is given back.
fn postpone(progress: &mut DeviceProgress, until: UnixMillis, note: String) {
    progress.attempts = progress.attempts.saturating_sub(1);
    progress.phase = Phase::Waiting;
    progress.next_try_at = until;
    progress.note = Some(note);
}

/// A finished attempt: success is final, and so is an upgrade to an unexpected version (the
/// device installed something: sending the same package again would not help); a failure
/// waits for a retry while retries and the deadline allow, and is final otherwise.
fn settle(
    progress: &mut DeviceProgress,
    result: DeviceResult,
    note: Option<String>,
    now: UnixMillis,
    interval: u64,
    retries: u32,
    deadline: Option<UnixMillis>,
) {
    if matches!(
        result,
        DeviceResult::Successful | DeviceResult::UnexpectedVersion
    ) {
        progress.finish(result, note, now);
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
        progress.finish(DeviceResult::TaskExpired, note, now);
    } else {
        progress.finish(result, note, now);
    }
}

/// Completes a task whose devices are all done.
fn complete_if_done(inner: &Inner, running: &mut Running, now: UnixMillis) {
    let live = matches!(
        running.task.status,
        TaskStatus::Upgrading | TaskStatus::Paused
    );
    if live && running.active.is_empty() && running.all_done() {
        running.task.status = TaskStatus::Completed;
        running.task.finished_at = Some(now);
        running.apply_status(now);
        inner.save_task(running, Vec::new());
    }
}
