//! Devices that join a task's group while the task runs: the follower of the catalog's joins
//! enrols each in every running or paused task of its group, due after the task's start
//! jitter, in the task's test stage if it is a test device and its last stage otherwise;
//! after the engine starts, and when the follower fell behind the joins, every such task takes
//! the devices of its group it does not hold yet, so a join is never lost.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};

use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use super::progress::DeviceProgress;
use super::stages::Placement;
use super::task::TaskStatus;
use super::writes::Changes;
use super::{Inner, Running, TICK, progress_key, queue_due};
use crate::catalog::GroupJoin;
use crate::stats::Counters;
use crate::store::Batch;
use crate::sync::lock;

/// Enrols the devices of every join in `joins` until the campaign service is dropped.
pub(super) async fn follow(inner: Weak<Inner>, mut joins: Receiver<GroupJoin>) {
    loop {
        // Bounded, so a service dropped while no device joins is noticed.
        let received = tokio::time::timeout(TICK, joins.recv()).await;
        let Some(inner) = inner.upgrade() else { return };
        match received {
            Ok(Ok(join)) => inner.enrol_joined(&join),
            Ok(Err(RecvError::Lagged(missed))) => {
                tracing::warn!(
                    missed,
                    "group joins missed: looking at every running task's group"
                );
                inner.enrol_missing();
            }
            Ok(Err(RecvError::Closed)) => return,
            Err(_elapsed) => {}
        }
    }
}

/// Whether a task in this state takes devices that join its group: it started and is not
/// over (one not started takes its whole group when it starts).
fn takes_joins(running: &Running) -> bool {
    matches!(
        running.task.status,
        TaskStatus::Upgrading | TaskStatus::Paused
    )
}

impl Inner {
    /// Enrols the devices of `join` in every task of their group that takes them.
    fn enrol_joined(self: &Arc<Self>, join: &GroupJoin) {
        let test_devices = (self.catalog).test_devices_among(&join.group_id, &join.endpoints);
        let mut tasks = lock(&self.tasks);
        let of_group = tasks
            .values_mut()
            .filter(|running| running.task.spec.group_id == join.group_id);
        for running in of_group.filter(|running| takes_joins(running)) {
            self.enrol(running, &join.endpoints, &test_devices);
        }
        self.wake.notify_one();
    }

    /// Enrols in every task that takes joins the devices of its group it does not hold.
    pub(super) fn enrol_missing(self: &Arc<Self>) {
        let mut tasks = lock(&self.tasks);
        for running in tasks.values_mut().filter(|running| takes_joins(running)) {
            match self.catalog.group_members(&running.task.spec.group_id) {
                Ok(group) => self.enrol(running, &group.devices, &group.test_devices),
                Err(error) => {
                    tracing::warn!(task = %running.task.id, %error, "the task's group is gone");
                }
            }
        }
        self.wake.notify_one();
    }

    /// Adds those of `endpoints` the task does not hold, with their progress, their share of
    /// the statistics and their events, in one batch; `test_devices` are the group's.
    fn enrol(&self, running: &mut Running, endpoints: &[String], test_devices: &BTreeSet<String>) {
        let now = self.clock.now();
        let placement = Placement::new(&running.task, test_devices);
        let newcomers: Vec<DeviceProgress> = endpoints
            .iter()
            .filter(|endpoint| !running.devices.contains(endpoint))
            .map(|endpoint| {
                let stage = placement.of_joiner(endpoint);
                self.first_progress(&running.task, endpoint, stage, now)
            })
            .collect();
        if newcomers.is_empty() {
            return;
        }
        let mut changes = Changes::default();
        for progress in &newcomers {
            if let Some(subject) = &running.subject {
                changes.shift(subject, &Counters::default(), &progress.share());
            }
            let key = progress_key(&progress.task_id, &progress.endpoint);
            changes.device(key, progress.clone());
        }
        if let Err(error) = self.write_now(Batch::new(), changes, false) {
            tracing::error!(task = %running.task.id, %error, "joined devices not enrolled");
            return;
        }
        tracing::info!(task = %running.task.id, devices = newcomers.len(), "devices joined the task");
        for progress in newcomers {
            running.tally(progress.stage, &Counters::default(), &progress.share());
            let (slot, progress) = running.devices.insert(progress);
            queue_due(&mut running.due, slot, progress);
        }
    }
}
