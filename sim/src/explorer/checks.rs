//! The invariants a finished run must hold:
//!
//! - every device ends on the target image with the task's result Successful, or off it with
//!   a recorded result and reason, and never one without the other;
//! - a push device with /5/0/26500 is never sent again more than one block of what it had
//!   stored (by the device's own count of what its flash was given);
//! - the statistics add up: the package's and the model's counters are the sum of the
//!   devices' shares.

use fota_device::fleet::Fleet;
use fota_engine::campaign::{DeviceProgress, DeviceResult};
use fota_engine::platform::Platform;
use fota_engine::stats::Counters;
use sha2::{Digest, Sha256};

use super::NotUpgraded;

/// What the run expects of the fleet.
pub struct Expected<'a> {
    /// The image every upgraded device must run.
    pub new_image: &'a [u8],
    /// The block size of the task.
    pub block: usize,
    /// Per device (in fleet order): whether its resumes are bounded to one block.
    pub resuming: Vec<bool>,
}

/// The verdict on a finished task.
#[derive(Default)]
pub struct Judged {
    /// Devices on the target image.
    pub upgraded: usize,
    /// Devices that ended otherwise, with what the task recorded.
    pub not_upgraded: Vec<NotUpgraded>,
    /// Invariants broken.
    pub problems: Vec<String>,
}

/// Checks every invariant.
pub fn judge(
    platform: &Platform,
    task_id: &str,
    fleets: &[Fleet],
    expected: &Expected<'_>,
) -> Judged {
    let mut problems = Vec::new();
    let progress = platform.campaigns.devices(task_id).unwrap_or_default();
    let target: [u8; 32] = Sha256::digest(expected.new_image).into();
    let devices = fleets.iter().flat_map(|fleet| &fleet.devices);
    let mut upgraded = 0;
    let mut not_upgraded = Vec::new();
    for (i, device) in devices.enumerate() {
        let endpoint = &device.config().endpoint;
        let Some(progress) = progress.iter().find(|p| &p.endpoint == endpoint) else {
            problems.push(format!("{endpoint}: not in the task"));
            continue;
        };
        let (on_target, rewind) = device.with_system(|s| {
            (
                s.version == "2.0" && s.image_sha256() == target,
                s.largest_rewind,
            )
        });
        if let Some(problem) = ending_problem(progress, on_target) {
            problems.push(format!("{endpoint}: {problem}"));
        }
        if expected.resuming[i] && rewind > expected.block {
            problems.push(format!(
                "{endpoint}: a resume sent {rewind} stored bytes again (block {})",
                expected.block
            ));
        }
        match on_target {
            true => upgraded += 1,
            false => not_upgraded.push(NotUpgraded {
                endpoint: endpoint.clone(),
                result: progress
                    .result
                    .map_or_else(|| "none".into(), |r| format!("{r:?}")),
                note: progress.note.clone().unwrap_or_default(),
            }),
        }
    }
    problems.extend(statistics_problems(platform, &progress));
    Judged {
        upgraded,
        not_upgraded,
        problems,
    }
}

/// What is wrong with how a device ended, if anything.
fn ending_problem(progress: &DeviceProgress, on_target: bool) -> Option<String> {
    let successful = progress.result == Some(DeviceResult::Successful);
    match (on_target, successful) {
        (true, true) => None,
        (true, false) => Some(format!(
            "runs the target image but the task recorded {:?} ({:?})",
            progress.result, progress.note
        )),
        (false, true) => Some("recorded Successful but does not run the target image".into()),
        (false, false) if progress.result.is_none() || progress.note.is_none() => Some(format!(
            "not upgraded, and no reason recorded: {:?} / {:?}",
            progress.result, progress.note
        )),
        (false, false) => None,
    }
}

/// Where the statistics differ from the sum of the devices' shares.
fn statistics_problems(platform: &Platform, progress: &[DeviceProgress]) -> Vec<String> {
    let mut sum = Counters::default();
    for device in progress {
        sum.shift(&Counters::default(), &device.share());
    }
    let statistics = platform.campaigns.statistics();
    let kept = statistics
        .packages
        .iter()
        .map(|p| ("package", p.counters))
        .chain(statistics.models.iter().map(|m| ("model", m.counters)));
    kept.filter(|(_, counters)| *counters != sum)
        .map(|(what, counters)| {
            format!("{what} statistics {counters:?} are not the devices' sum {sum:?}")
        })
        .collect()
}
