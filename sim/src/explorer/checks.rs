//! The invariants a finished run must hold:
//!
//! - every device ends on the target image with the task's result Successful, or off it with
//!   a recorded result and reason, and never one without the other;
//! - a push device with /5/0/26500 is never sent again more than one block of what it had
//!   stored (by the device's own count of what its flash was given), and the engine's count
//!   of package bytes it sent again is at most a block per interruption it counted, plus the
//!   whole package each time the device erased it whole (a failed install);
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
    /// The package's size.
    pub package_len: u64,
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
        let (on_target, resumes) = device.with_system(|s| {
            let resumes = Resumes {
                largest_rewind: s.largest_rewind,
                whole_packages_erased: s.whole_packages_erased,
            };
            (s.version == "2.0" && s.image_sha256() == target, resumes)
        });
        if let Some(problem) = ending_problem(progress, on_target) {
            problems.push(format!("{endpoint}: {problem}"));
        }
        if expected.resuming[i] {
            problems.extend(resume_problem(progress, &resumes, expected));
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

/// What a device's flash counted of the package given to it again.
struct Resumes {
    /// The most stored bytes one write gave it again.
    largest_rewind: usize,
    /// Whole packages it erased, to be sent again in full.
    whole_packages_erased: u32,
}

/// What is wrong with how a device with /5/0/26500 was resumed, if anything: by the device's
/// count or by the engine's.
fn resume_problem(
    progress: &DeviceProgress,
    resumes: &Resumes,
    expected: &Expected<'_>,
) -> Option<String> {
    let (endpoint, block) = (&progress.endpoint, expected.block);
    if resumes.largest_rewind > block {
        return Some(format!(
            "{endpoint}: a resume sent {} stored bytes again (block {block})",
            resumes.largest_rewind
        ));
    }
    let allowed = block as u64 * u64::from(progress.interruptions)
        + expected.package_len * u64::from(resumes.whole_packages_erased);
    (progress.bytes_resent > allowed).then(|| {
        format!(
            "{endpoint}: the engine sent {} package bytes again over {} interruptions and {} \
             whole packages erased (block {block})",
            progress.bytes_resent, progress.interruptions, resumes.whole_packages_erased
        )
    })
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
