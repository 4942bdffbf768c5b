//! One device's progress in one task: retries, download and upgrade status, and its result in
//! the seed's terms, mapped from Update Result and from the engine's own outcomes.

use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;
use crate::lwm2m::firmware::UpdateResult;
use crate::stats::Counters;
use crate::transfer::{TransferOutcome, WireCount};

/// How a device ended (or how its last attempt ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceResult {
    /// Runs the target version.
    Successful,
    /// Not enough flash for the package.
    InsufficientSpace,
    /// Out of RAM.
    OutOfMemory,
    /// The link broke and did not come back in time.
    LinkBroke,
    /// The package failed the device's integrity check.
    IntegrityFailed,
    /// The device cannot take this package or protocol.
    NotSupported,
    /// Installing failed (or it came back on its old version).
    UpgradeFailed,
    /// The device reported the update a success, but another version than the firmware's
    /// expected /3/0/3 string: final, the package is not sent again; shown to the operator.
    UnexpectedVersion,
    /// The deadline passed first.
    TaskExpired,
    /// The download failed (bad URI, refused write).
    DownloadFailed,
}

impl DeviceResult {
    /// The result a delivery outcome stands for. Only a delivery that confirmed the target
    /// version is successful.
    pub fn of(outcome: &TransferOutcome) -> DeviceResult {
        match outcome {
            TransferOutcome::Upgraded { .. } => DeviceResult::Successful,
            TransferOutcome::DeviceFailure(result) => DeviceResult::of_failure(*result),
            TransferOutcome::UnexpectedVersion { .. } => DeviceResult::UnexpectedVersion,
            TransferOutcome::WrongVersion { .. } => DeviceResult::UpgradeFailed,
            TransferOutcome::Refused(_) => DeviceResult::DownloadFailed,
            // Not a result: an attempt that ends held is postponed, not settled.
            TransferOutcome::Interrupted(_) | TransferOutcome::Held | TransferOutcome::Asleep => {
                DeviceResult::LinkBroke
            }
        }
    }

    /// The result a failed delivery's Update Result (/5/0/5) stands for. A device that shows
    /// no failure (Initial, or a Success left from an earlier upgrade) while the delivery did
    /// not see it on the target version did not upgrade.
    pub fn of_failure(result: UpdateResult) -> DeviceResult {
        match result {
            UpdateResult::Success | UpdateResult::Initial => DeviceResult::UpgradeFailed,
            UpdateResult::NotEnoughFlash => DeviceResult::InsufficientSpace,
            UpdateResult::OutOfRam => DeviceResult::OutOfMemory,
            UpdateResult::ConnectionLost => DeviceResult::LinkBroke,
            UpdateResult::IntegrityFailure => DeviceResult::IntegrityFailed,
            UpdateResult::UnsupportedPackageType | UpdateResult::UnsupportedProtocol => {
                DeviceResult::NotSupported
            }
            UpdateResult::InvalidUri => DeviceResult::DownloadFailed,
            UpdateResult::UpdateFailed => DeviceResult::UpgradeFailed,
        }
    }
}

/// Where a device stands in the task's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// To be tried at `next_try_at`.
    Waiting,
    /// An attempt is running.
    Active,
    /// Done: `result` is final.
    Finished,
    /// Taken out of the task (its version is not the delta's base).
    Removed,
}

/// Download status, as shown per device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DownloadStatus {
    NotStarted,
    Downloading,
    Downloaded,
    Failed,
}

/// Upgrade status, as shown per device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpgradeStatus {
    NotStarted,
    Upgrading,
    Upgraded,
    Failed,
}

/// One device in one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceProgress {
    /// The task.
    pub task_id: String,
    /// The device.
    pub endpoint: String,
    /// Attempts made (retry X of `retries + 1`).
    pub attempts: u32,
    /// Schedule.
    pub phase: Phase,
    /// When a waiting device is tried next.
    pub next_try_at: UnixMillis,
    /// Download status.
    pub download: DownloadStatus,
    /// Upgrade status.
    pub upgrade: UpgradeStatus,
    /// Final result, or the last attempt's while retries remain.
    pub result: Option<DeviceResult>,
    /// Why the last attempt did not succeed, or why the device waits or was removed.
    pub note: Option<String>,
    /// The device's cell, as last surveyed.
    pub cell_id: Option<u32>,
    /// Package bytes sent for the first time, over every attempt.
    pub bytes_first: u64,
    /// Package bytes sent again.
    pub bytes_resent: u64,
    /// Times the package's transfer to the device was cut short: a delivery suspended (the
    /// device out of reach, a link that broke), a package write whose exchange gave up and
    /// was continued in a new one, an attempt that failed part way, the engine stopped
    /// mid-attempt. With /5/0/26500 the next attempt picks up where the device's flash
    /// stands, and without it from the block in flight while the device holds the sequence
    /// in RAM, so each costs at most one block sent again.
    #[serde(default)]
    pub interruptions: u32,
    /// CoAP bytes on the wire.
    pub wire_bytes: u64,
    /// When the device finished.
    #[serde(default)]
    pub finished_at: Option<UnixMillis>,
    /// The stage of the task's rollout the device is in (0 when the task has none).
    #[serde(default)]
    pub stage: usize,
}

impl DeviceProgress {
    /// A device just added to a task.
    pub fn new(task_id: &str, endpoint: &str, now: UnixMillis) -> Self {
        DeviceProgress {
            task_id: task_id.to_string(),
            endpoint: endpoint.to_string(),
            attempts: 0,
            phase: Phase::Waiting,
            next_try_at: now,
            download: DownloadStatus::NotStarted,
            upgrade: UpgradeStatus::NotStarted,
            result: None,
            note: None,
            cell_id: None,
            bytes_first: 0,
            bytes_resent: 0,
            interruptions: 0,
            wire_bytes: 0,
            finished_at: None,
            stage: 0,
        }
    }

    /// True once nothing more happens to this device in this task.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Finished | Phase::Removed)
    }

    /// Adds one delivery's bytes. A package's bytes are sent for the first time once per
    /// device and task: what a later delivery sends of a `package_size` package beyond that
    /// (a retry after a failure starts over) counts as sent again.
    pub fn add_wire(&mut self, wire: &WireCount, package_size: u64) {
        let first = wire
            .package_first
            .min(package_size.saturating_sub(self.bytes_first));
        self.bytes_first += first;
        self.bytes_resent += wire.package_resent + (wire.package_first - first);
        self.wire_bytes += wire.wire_sent;
    }

    /// What this device adds to its package's statistics.
    pub fn share(&self) -> Counters {
        if self.phase == Phase::Removed {
            return Counters::default();
        }
        let finished = self.phase == Phase::Finished;
        let successful = self.result == Some(DeviceResult::Successful);
        Counters {
            devices: 1,
            successes: u64::from(finished && successful),
            failures: u64::from(finished && !successful),
            bytes_first: self.bytes_first,
            bytes_resent: self.bytes_resent,
            wire_bytes: self.wire_bytes,
            downloads_not_installed: u64::from(
                self.download == DownloadStatus::Downloaded
                    && self.upgrade != UpgradeStatus::Upgraded,
            ),
        }
    }

    /// Ends the device with `result` at `now`.
    pub fn finish(&mut self, result: DeviceResult, note: Option<String>, now: UnixMillis) {
        self.phase = Phase::Finished;
        self.result = Some(result);
        self.note = note;
        self.finished_at = Some(now);
        if result == DeviceResult::Successful {
            self.download = DownloadStatus::Downloaded;
            self.upgrade = UpgradeStatus::Upgraded;
        } else if self.upgrade == UpgradeStatus::Upgrading {
            self.upgrade = UpgradeStatus::Failed;
        } else if self.download != DownloadStatus::Downloaded {
            self.download = DownloadStatus::Failed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_confirmed_target_version_is_successful() {
        let upgraded = TransferOutcome::Upgraded {
            version: "2.0".into(),
        };
        assert_eq!(DeviceResult::of(&upgraded), DeviceResult::Successful);
        for stale in [UpdateResult::Success, UpdateResult::Initial] {
            assert_eq!(
                DeviceResult::of(&TransferOutcome::DeviceFailure(stale)),
                DeviceResult::UpgradeFailed,
                "{stale:?} without the new version"
            );
        }
        let cases = [
            (
                UpdateResult::NotEnoughFlash,
                DeviceResult::InsufficientSpace,
            ),
            (UpdateResult::OutOfRam, DeviceResult::OutOfMemory),
            (UpdateResult::ConnectionLost, DeviceResult::LinkBroke),
            (
                UpdateResult::IntegrityFailure,
                DeviceResult::IntegrityFailed,
            ),
            (
                UpdateResult::UnsupportedPackageType,
                DeviceResult::NotSupported,
            ),
            (
                UpdateResult::UnsupportedProtocol,
                DeviceResult::NotSupported,
            ),
            (UpdateResult::InvalidUri, DeviceResult::DownloadFailed),
            (UpdateResult::UpdateFailed, DeviceResult::UpgradeFailed),
        ];
        for (update_result, expected) in cases {
            assert_eq!(DeviceResult::of_failure(update_result), expected);
        }
    }

    #[test]
    fn a_device_counts_once_with_its_result_its_bytes_and_an_uninstalled_download() {
        let mut progress = DeviceProgress::new("t", "dev", 0);
        progress.add_wire(
            &WireCount {
                package_first: 1_000,
                package_resent: 200,
                wire_sent: 1_500,
                wire_received: 400,
                retransmissions: 3,
                ..WireCount::default()
            },
            5_000,
        );
        let waiting = progress.share();
        assert_eq!(
            (waiting.devices, waiting.successes, waiting.failures),
            (1, 0, 0)
        );
        assert_eq!(
            (
                waiting.bytes_first,
                waiting.bytes_resent,
                waiting.wire_bytes
            ),
            (1_000, 200, 1_500)
        );
        progress.download = DownloadStatus::Downloaded;
        progress.upgrade = UpgradeStatus::Upgrading;
        progress.finish(DeviceResult::UpgradeFailed, None, 7);
        let failed = progress.share();
        assert_eq!((failed.failures, failed.downloads_not_installed), (1, 1));
        assert_eq!(progress.finished_at, Some(7));
        progress.finish(DeviceResult::Successful, None, 8);
        let upgraded = progress.share();
        assert_eq!(
            (
                upgraded.successes,
                upgraded.failures,
                upgraded.downloads_not_installed
            ),
            (1, 0, 0)
        );
        progress.phase = Phase::Removed;
        assert_eq!(
            progress.share(),
            Counters::default(),
            "removed: not counted"
        );
    }

    #[test]
    fn a_package_sent_again_by_a_later_delivery_counts_as_sent_again() {
        let mut progress = DeviceProgress::new("t", "dev", 0);
        let whole = |bytes| WireCount {
            package_first: bytes,
            ..WireCount::default()
        };
        progress.add_wire(&whole(4_000), 5_000);
        progress.add_wire(&whole(3_000), 5_000);
        assert_eq!(
            (progress.bytes_first, progress.bytes_resent),
            (5_000, 2_000)
        );
        progress.add_wire(&whole(5_000), 5_000);
        assert_eq!(
            (progress.bytes_first, progress.bytes_resent),
            (5_000, 7_000)
        );
    }

    #[test]
    fn progress_recorded_before_finished_at_existed_reads_back() {
        let mut recorded = serde_json::to_value(DeviceProgress::new("t", "dev", 5)).unwrap();
        recorded.as_object_mut().unwrap().remove("finished_at");
        let read: DeviceProgress = serde_json::from_value(recorded).unwrap();
        assert_eq!(read, DeviceProgress::new("t", "dev", 5));
    }
}
