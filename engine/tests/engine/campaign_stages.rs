//! Rollout stages on tokio's paused clock (`campaign_bench`): the group's test devices first and
//! the operator's approval (or none, when the task says so), a stage's failure threshold that
//! pauses the task and its success threshold that opens the next stage, a stage that ends
//! short, devices that join mid-rollout, a restart in the middle of a stage, and statistics
//! that count every device once through all of it.

use std::time::Duration;

use fota_engine::campaign::stages::Placement;
use fota_engine::campaign::{
    DeviceProgress, DeviceResult, RolloutStage, StageDevices, Task, TaskSpec, TaskStatus,
};
use fota_engine::clock::UnixMillis;

use crate::campaign_bench::*;

/// The group's test devices, then everything else.
fn tests_then_rest() -> Vec<RolloutStage> {
    vec![
        RolloutStage::new("test", StageDevices::TestDevices),
        RolloutStage::new("rest", StageDevices::UpToPercent(100.0)),
    ]
}

impl Bench {
    /// Marks devices `indexes` of the bench's group as test devices.
    fn mark_tests(&self, indexes: std::ops::Range<usize>) {
        let endpoints: Vec<String> = indexes.map(endpoint).collect();
        self.catalog
            .mark_test_devices(&self.group, &endpoints, true)
            .unwrap();
    }

    /// The bench's task spec with `stages`, no retries.
    fn staged(&self, stages: Vec<RolloutStage>) -> TaskSpec {
        TaskSpec {
            stages,
            retries: 0,
            ..self.spec()
        }
    }

    /// The devices of task `id` in stage `stage`.
    fn in_stage(&self, id: &str, stage: usize) -> Vec<DeviceProgress> {
        let devices = self.campaigns.devices(id).unwrap();
        devices.into_iter().filter(|d| d.stage == stage).collect()
    }

    /// When each device of `devices` was first started, if it was.
    fn first_starts(&self, devices: &[DeviceProgress]) -> Vec<Option<UnixMillis>> {
        let first = |d: &DeviceProgress| self.script.starts_of(&d.endpoint).first().copied();
        devices.iter().map(first).collect()
    }

    /// Checks the statistics count each device of task `task` once, as its stages do.
    fn counted_once(&self, task: &Task, devices: u64, upgraded: u64) {
        let counters = self.counters();
        assert_eq!((counters.devices, counters.successes), (devices, upgraded));
        let staged: u64 = task.stage_progress.iter().map(|s| s.devices).sum();
        let staged_upgraded: u64 = task.stage_progress.iter().map(|s| s.upgraded).sum();
        assert_eq!((staged, staged_upgraded), (devices, upgraded), "{task:?}");
    }
}

async fn waiting_for_approval(b: &Bench, id: &str) -> Task {
    b.until(id, "waiting for approval", |t| {
        t.awaiting_approval.is_some()
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn test_devices_upgrade_first_and_the_rest_waits_for_the_operators_approval() {
    let b = bench(20).await;
    b.mark_tests(0..3);
    b.script.each_succeeds_after(0..40, Duration::from_secs(60));
    let task = b.campaigns.create(b.staged(tests_then_rest())).unwrap();
    let waiting = waiting_for_approval(&b, &task.id).await;
    let reason = waiting.awaiting_approval.clone().unwrap();
    assert!(reason.contains("\"test\" upgraded 3 of 3"), "{reason}");
    assert_eq!(waiting.stage, 0);
    let tests = b.in_stage(&task.id, 0);
    let names: Vec<&str> = tests.iter().map(|d| d.endpoint.as_str()).collect();
    assert_eq!(names, ["dev-0", "dev-1", "dev-2"]);
    assert!(
        tests
            .iter()
            .all(|d| d.result == Some(DeviceResult::Successful))
    );

    // Nothing else starts while the approval waits, however long; devices that join go to
    // their stage: a test device to the tests (and is upgraded), any other to the rest.
    tokio::time::sleep(Duration::from_secs(3_600)).await;
    join(&b.catalog, &b.group, 30);
    join(&b.catalog, &b.group, 31);
    b.mark_tests(31..32);
    b.until(&task.id, "the test device that joined upgraded", |_| {
        b.device_is(&task.id, 31, |d| d.result == Some(DeviceResult::Successful))
    })
    .await;
    assert_eq!(b.device(&task.id, 31).stage, 0);
    let rest = b.in_stage(&task.id, 1);
    assert_eq!(rest.len(), 18, "17, and dev-30");
    assert!(b.first_starts(&rest).iter().all(Option::is_none));

    let approved_at = b.clock.now();
    let approved = b.campaigns.approve(&task.id).unwrap();
    assert_eq!((approved.stage, approved.awaiting_approval), (1, None));
    let refused = b.campaigns.approve(&task.id).unwrap_err().to_string();
    assert!(refused.contains("no stage waits"), "{refused}");
    let done = b.finished(&task.id).await;
    assert_eq!(done.status, TaskStatus::Completed);
    let starts = b.first_starts(&b.in_stage(&task.id, 1));
    assert!(starts.iter().all(|s| s.is_some_and(|t| t >= approved_at)));
    b.counted_once(&done, 22, 22);
}

#[tokio::test(start_paused = true)]
async fn a_task_that_says_so_goes_on_from_its_test_devices_by_itself() {
    let b = bench(10).await;
    b.mark_tests(0..2);
    b.script.each_succeeds_after(0..10, Duration::from_secs(60));
    let mut stages = tests_then_rest();
    stages[0].manual_approval = Some(false);
    let task = b.campaigns.create(b.staged(stages)).unwrap();
    let done = b.finished(&task.id).await;
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.awaiting_approval, None);
    let last_test = (b
        .first_starts(&b.in_stage(&task.id, 0))
        .into_iter()
        .flatten())
    .max();
    let first_other = (b
        .first_starts(&b.in_stage(&task.id, 1))
        .into_iter()
        .flatten())
    .min();
    assert!(
        first_other.unwrap() >= last_test.unwrap() + 60_000,
        "the others start when the tests are upgraded"
    );
    b.counted_once(&done, 10, 10);
}

/// Waves over 100 devices: a pilot of 10 %, then the rest.
fn pilot_then_rest(pilot: RolloutStage) -> Vec<RolloutStage> {
    vec![
        pilot,
        RolloutStage::new("rest", StageDevices::UpToPercent(100.0)),
    ]
}

#[tokio::test(start_paused = true)]
async fn a_stages_failure_threshold_pauses_the_task_before_the_next_stage_opens() {
    let b = bench(100).await;
    for i in 0..100 {
        b.script.plan(&endpoint(i), vec![fail()]);
    }
    let mut pilot = RolloutStage::new("pilot", StageDevices::UpToPercent(10.0));
    pilot.max_failure_rate = Some(0.5);
    pilot.failure_sample = Some(4);
    let mut spec = b.staged(pilot_then_rest(pilot));
    spec.pacing.max_concurrent = 2;
    let task = b.campaigns.create(spec).unwrap();
    let paused = b
        .until(&task.id, "paused", |t| t.status == TaskStatus::Paused)
        .await;
    let reason = paused.pause_reason.unwrap();
    assert!(reason.contains("stage \"pilot\": failure rate"), "{reason}");
    assert_eq!(paused.stage, 0);
    assert_eq!(b.in_stage(&task.id, 0).len(), 10);
    let rest = b.in_stage(&task.id, 1);
    assert_eq!(rest.len(), 90);
    assert!(b.first_starts(&rest).iter().all(Option::is_none));
    let pilot_progress = &paused.stage_progress[0];
    assert!(pilot_progress.failed >= 4 && pilot_progress.upgraded == 0);
}

/// A bench of 100 devices that succeed after a minute, and a task in waves of `pilot` and
/// the rest, starting in a minute, whose pilot devices `failing` (indexes into the pilot, in
/// endpoint order) fail.
async fn pilot_with_failures(pilot: RolloutStage, failing: usize) -> (Bench, Task) {
    let b = bench(100).await;
    b.script
        .each_succeeds_after(0..100, Duration::from_secs(60));
    let mut spec = b.staged(pilot_then_rest(pilot));
    spec.execution_time = Some(T0 + 60_000);
    let task = b.campaigns.create(spec).unwrap();
    // Where the devices will go is the task's own order, known before it starts.
    let group = b.catalog.group_members(&b.group).unwrap();
    let placement = Placement::new(&task, &group.test_devices);
    let placed = placement.place(&group.devices);
    let mut pilots: Vec<&str> = (placed.iter())
        .filter(|(_, stage)| *stage == 0)
        .map(|(endpoint, _)| *endpoint)
        .collect();
    pilots.sort();
    assert_eq!(pilots.len(), 10);
    for endpoint in &pilots[..failing] {
        b.script.plan(endpoint, vec![fail()]);
    }
    (b, task)
}

#[tokio::test(start_paused = true)]
async fn a_stage_opens_the_next_at_its_success_threshold() {
    let mut pilot = RolloutStage::new("pilot", StageDevices::UpToPercent(10.0));
    pilot.success_threshold = 0.8;
    let (b, task) = pilot_with_failures(pilot, 2).await;
    let done = b.finished(&task.id).await;
    assert_eq!(done.status, TaskStatus::Completed, "{done:?}");
    assert_eq!(done.awaiting_approval, None);
    // The rest started once the pilot's eight successes were in, a minute after the start.
    let rest_starts = b.first_starts(&b.in_stage(&task.id, 1));
    assert!(
        rest_starts
            .iter()
            .all(|s| s.is_some_and(|t| t >= T0 + 120_000))
    );
    b.counted_once(&done, 100, 98);
}

#[tokio::test(start_paused = true)]
async fn a_stage_that_ends_short_of_its_threshold_waits_for_the_operator() {
    let mut pilot = RolloutStage::new("pilot", StageDevices::UpToPercent(10.0));
    pilot.success_threshold = 0.95;
    let (b, task) = pilot_with_failures(pilot, 1).await;
    let short = waiting_for_approval(&b, &task.id).await;
    let reason = short.awaiting_approval.clone().unwrap();
    let said = "9 of 10 devices upgraded, short of its success threshold (95%)";
    assert!(reason.contains(said), "{reason}");
    assert_eq!(short.status, TaskStatus::Upgrading);
    tokio::time::sleep(Duration::from_secs(3_600)).await;
    assert!(
        b.first_starts(&b.in_stage(&task.id, 1))
            .iter()
            .all(Option::is_none)
    );
    b.campaigns.approve(&task.id).unwrap();
    let done = b.finished(&task.id).await;
    assert_eq!(done.status, TaskStatus::Completed);
    b.counted_once(&done, 100, 99);
}

#[tokio::test(start_paused = true)]
async fn a_restart_in_the_middle_of_a_stage_resumes_in_the_same_stage() {
    let mut b = bench(12).await;
    b.mark_tests(0..3);
    b.script
        .each_succeeds_after(0..12, Duration::from_secs(600));
    let task = b.campaigns.create(b.staged(tests_then_rest())).unwrap();
    b.until(&task.id, "the test devices under way", |_| {
        b.script.started.lock().unwrap().len() == 3
    })
    .await;
    // The engine stops while the test devices upgrade: they start over, the others wait.
    b.restart();
    let waiting = waiting_for_approval(&b, &task.id).await;
    assert_eq!(waiting.stage, 0);
    let rest = b.in_stage(&task.id, 1);
    assert!(b.first_starts(&rest).iter().all(Option::is_none));
    // And while the approval waits: it still waits after another restart.
    b.restart();
    tokio::time::sleep(Duration::from_secs(3_600)).await;
    let after = b.campaigns.task(&task.id).unwrap();
    assert_eq!(
        (after.stage, &after.awaiting_approval),
        (0, &waiting.awaiting_approval)
    );
    assert!(b.first_starts(&rest).iter().all(Option::is_none));
    b.campaigns.approve(&task.id).unwrap();
    let done = b.finished(&task.id).await;
    assert_eq!(done.status, TaskStatus::Completed);
    for device in b.in_stage(&task.id, 0) {
        assert_eq!(
            b.script.starts_of(&device.endpoint).len(),
            2,
            "cut, then again"
        );
    }
    b.counted_once(&done, 12, 12);
}

#[tokio::test(start_paused = true)]
async fn stages_are_checked_when_the_task_is_made() {
    let b = bench(4).await;
    let refused = b.campaigns.create(b.staged(tests_then_rest())).unwrap_err();
    assert!(refused.to_string().contains("no test devices"), "{refused}");
    b.mark_tests(0..1);
    let mut backwards = tests_then_rest();
    backwards.swap(0, 1);
    let refused = b.campaigns.create(b.staged(backwards)).unwrap_err();
    assert!(refused.to_string().contains("come first"), "{refused}");
    let short = vec![RolloutStage::new("half", StageDevices::UpToPercent(50.0))];
    let refused = b.campaigns.create(b.staged(short)).unwrap_err();
    assert!(refused.to_string().contains("100"), "{refused}");
    assert!(b.campaigns.create(b.staged(tests_then_rest())).is_ok());
}
