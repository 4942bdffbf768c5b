//! An upgrade campaign as the fleet benches (`nbiot`, `stock`) run one on an in-process
//! platform: the reference plugins bound with the bench's settings, one task over a group,
//! followed to its end; what every device's progress says when it ends.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fota_engine::campaign::{DeviceProgress, DeviceResult, Task, TaskStatus};
use fota_engine::platform::Platform;
use fota_engine::plugin::{Binding, PluginKind, embedded};

/// Binds the embedded reference plugin of `kind` as the default of every model, configured
/// with `settings`.
pub fn bind_reference(
    platform: &Platform,
    kind: PluginKind,
    settings: &[(&str, String)],
) -> anyhow::Result<()> {
    let (name, component) = embedded::reference(kind);
    let settings = settings
        .iter()
        .map(|(key, value)| (key.to_string(), value.clone()))
        .collect();
    platform
        .plugins
        .install(kind, Binding::Default, name, component, settings)?;
    Ok(())
}

/// A task that ended, with every device's progress as it ended.
pub struct Ended {
    /// The task, final.
    pub task: Task,
    /// Its devices.
    pub devices: Vec<DeviceProgress>,
}

impl Ended {
    /// Seconds from the task's creation to its end, by the engine's clock.
    pub fn duration(&self) -> f64 {
        let end = self.task.finished_at.unwrap_or(self.task.created_at);
        self.seconds_after_creation(end)
    }

    /// Seconds after the task's creation at which each upgraded device finished, by endpoint.
    pub fn upgraded_after(&self) -> HashMap<String, f64> {
        self.devices
            .iter()
            .filter(|d| d.result == Some(DeviceResult::Successful))
            .filter_map(|d| {
                let at = d.finished_at?;
                Some((d.endpoint.clone(), self.seconds_after_creation(at)))
            })
            .collect()
    }

    fn seconds_after_creation(&self, at: u64) -> f64 {
        at.saturating_sub(self.task.created_at) as f64 / 1000.0
    }
}

/// Follows task `task_id` until it is final, saying on stderr (as `label`) every ten seconds
/// how many devices are upgraded; fails unless it completed. Times come from the engine's
/// clock, so the half second between two looks costs no precision.
pub async fn follow(platform: &Platform, task_id: &str, label: &str) -> anyhow::Result<Ended> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let task = platform.campaigns.task(task_id)?;
        let devices = platform.campaigns.devices(task_id)?;
        if task.status.is_final() {
            anyhow::ensure!(
                task.status == TaskStatus::Completed,
                "the task ended {:?}",
                task.status
            );
            return Ok(Ended { task, devices });
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            let upgraded = devices
                .iter()
                .filter(|d| d.is_done() && d.result == Some(DeviceResult::Successful))
                .count();
            eprintln!(
                "{label}: {:.0} s, {upgraded} devices upgraded",
                started.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
