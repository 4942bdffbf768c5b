//! What the steps of one delivery attempt share: what they act with ([`Steps`], whose methods
//! the `push`, `pull` and `install` modules define), the attempt's running account, and how a
//! failed operation becomes an outcome (an interruption to resume from, or a refusal).

use std::net::SocketAddr;
use std::sync::Arc;

use coap_lite::ResponseType;
use tokio::time::Instant;

use super::job::{DeliveryConfig, DeliveryJob, MIN_BLOCK_SIZE, Stage, SurveyedFirmware};
use super::outcome::{TransferOutcome, WireCount};
use super::resume::ResumeBook;
use super::shelf::{PackageShelf, PullAccount};
use super::watch::FirmwareWatch;
use crate::coap::WireMeter;
use crate::coap::qblock1::AnswerTimes;
use crate::lwm2m::firmware::{self, UpdateResult};
use crate::lwm2m::{DeviceManagement, ManagementError, Registration};

/// What the steps of an attempt act with. Cheap to clone.
#[derive(Clone)]
pub(super) struct Steps {
    /// Device management requests.
    pub management: DeviceManagement,
    /// How far each device got.
    pub book: ResumeBook,
    /// The packages, and what the package server sent of them.
    pub shelf: PackageShelf,
    /// Timers.
    pub config: DeliveryConfig,
}

impl Steps {
    /// These steps with every device management request charged to `meter`.
    pub fn charged_to(&self, meter: Arc<WireMeter>) -> Steps {
        Steps {
            management: self.management.metered(meter),
            ..self.clone()
        }
    }

    /// Reads /3/0/3.
    pub async fn read_version(&self, device: SocketAddr) -> Result<String, StageError> {
        self.management
            .read_value(device, firmware::FIRMWARE_VERSION)
            .await
            .and_then(|value| {
                value
                    .as_string()
                    .map_err(|source| ManagementError::Content {
                        path: firmware::FIRMWARE_VERSION,
                        source,
                    })
            })
            .map_err(at("reading the firmware version"))
    }
}

/// A delivery's state across its attempts.
pub(super) struct Attempt<'a> {
    /// What is delivered to whom.
    pub job: &'a DeliveryJob,
    /// Package bytes sent so far, first time and again.
    pub wire: WireCount,
    /// Every byte each way of every exchange of the delivery.
    pub meter: Arc<WireMeter>,
    /// The package server's accounts of what it serves this device, one per address the
    /// device pulled from (it moves when it reboots).
    pub pulls: Vec<PullAccount>,
    /// Block size in use (a device may have asked for smaller blocks).
    pub block_size: usize,
    /// The device answered a block of `block_size`.
    pub block_size_answered: bool,
    /// Payloads per Q-Block1 set; 1: stop-and-wait. The job's, until the device refuses
    /// Q-Block1 (4.02): then 1 for the rest of the delivery.
    pub burst: usize,
    /// What the device's answers to rounds of Q-Block1 payloads took, across this delivery's
    /// uploads: each upload's NON_TIMEOUT starts from what the ones before it learned.
    pub q_block1_answers: AnswerTimes,
    /// Package writes that gave up on a block of `block_size` before the device ever answered
    /// one: from [`GIVE_UPS_BEFORE_SMALLER_BLOCKS`] on, it may drop datagrams that large, and
    /// the next write, once the device has answered smaller requests since, sends half.
    pub block_size_give_ups: u32,
    /// Attempts that ended in an interruption, and package writes whose exchange gave up and
    /// were continued in a new one.
    pub interruptions: u32,
    /// The device has no Transferred Bytes (/5/0/26500): the job says so, or the device
    /// answered a read of it with 4.04. A push cut short is continued (`continuation`), not
    /// resumed.
    pub lacks_26500: bool,
    /// A push left its Block1 sequence without the device's answer to the block in flight
    /// (the exchange gave up, or the attempt ended around it): the next push may go on from
    /// that block.
    pub sequence_cut: bool,
    /// The device's Firmware Update state, observed; kept from one attempt to the next while
    /// the device stays in the same registration.
    pub watch: Option<FirmwareWatch>,
    /// The version the device ran when the delivery first read it: a device that comes back
    /// from Update still on it did not install.
    pub version_before: Option<String>,
    /// Set when the device first installs: until then the delivery waits for it to confirm
    /// its version, past the delivery's own end if need be.
    pub confirm_by: Option<Instant>,
    /// The job's survey, until the first attempt takes it.
    surveyed: Option<SurveyedFirmware>,
}

/// Package writes that gave up before any block of the size in use was answered, after which
/// the size is suspect. One is no evidence: on a lossy link an exchange now and then loses
/// every transmission (at 10 % loss each way, one in about 4,000: a few devices of a
/// 10,000-device fleet, each then pushed twice the blocks for nothing), while a path that
/// drops datagrams this large loses every one.
const GIVE_UPS_BEFORE_SMALLER_BLOCKS: u32 = 2;

impl<'a> Attempt<'a> {
    /// The first attempt at `job`.
    pub fn new(job: &'a DeliveryJob) -> Self {
        Attempt {
            job,
            wire: WireCount::default(),
            meter: Arc::default(),
            pulls: Vec::new(),
            block_size: job.block_size,
            block_size_answered: false,
            burst: job.burst.max(1),
            q_block1_answers: AnswerTimes::default(),
            block_size_give_ups: 0,
            interruptions: 0,
            lacks_26500: !job.resume,
            sequence_cut: false,
            watch: None,
            version_before: None,
            confirm_by: None,
            surveyed: job.surveyed.clone(),
        }
    }

    /// The job's survey, to the first attempt, when it was read in `registration`: nothing
    /// can have changed what it read since (a reboot registers anew).
    pub fn take_survey(&mut self, registration: &Registration) -> Option<SurveyedFirmware> {
        (self.surveyed.take()).filter(|surveyed| surveyed.registration == registration.id)
    }

    /// The version this delivery read, while the device stays in the registration (and at
    /// the address) the attempt before watched it in. `None`: read it.
    pub fn version_this_boot(&self, registration: &Registration) -> Option<String> {
        let same_boot = (self.watch.as_ref()).is_some_and(|watch| watch.serves(registration));
        self.version_before.clone().filter(|_| same_boot)
    }

    /// When the delivery gives up, ending `planned` unless the device installs: a device that
    /// took Update is waited for up to the install timeout from then, so a link that broke
    /// while it rebooted (or the answer to the version read lost) does not record an install
    /// in flight as a broken link.
    pub fn gives_up_at(&self, planned: Instant) -> Instant {
        self.confirm_by.map_or(planned, |by| by.max(planned))
    }

    /// Counts an interruption, and reports the delivery suspended with what it cost so far.
    pub fn interrupted(&mut self) {
        self.interruptions += 1;
        self.job.report(Stage::Suspended {
            wire: self.wire_count(),
        });
    }

    /// A package write gave up: counted against the size in use if no block of it was ever
    /// answered.
    pub fn write_gave_up(&mut self) {
        if !self.block_size_answered {
            self.block_size_give_ups += 1;
        }
    }

    /// Before a package write: halves a suspect block size (the device answered the smaller
    /// requests since, so the link works).
    pub fn shrink_suspect_block_size(&mut self) {
        if self.block_size_give_ups < GIVE_UPS_BEFORE_SMALLER_BLOCKS
            || self.block_size <= MIN_BLOCK_SIZE
        {
            return;
        }
        self.block_size_give_ups = 0;
        let (endpoint, from) = (&self.job.endpoint, self.block_size);
        self.block_size /= 2;
        tracing::warn!(
            %endpoint, from, to = self.block_size,
            "the device never answered a block this large: trying smaller blocks"
        );
    }

    /// The watch the attempt made before its download step.
    pub fn watch(&mut self) -> &mut FirmwareWatch {
        self.watch
            .as_mut()
            .expect("the attempt watches the device before it downloads")
    }

    /// The package bytes counted, and the meter's totals.
    pub fn wire_count(&self) -> WireCount {
        WireCount {
            wire_sent: self.meter.sent(),
            wire_received: self.meter.received(),
            retransmissions: self.meter.retransmitted(),
            ..self.wire
        }
    }
}

/// A failed operation and the step of the delivery it belonged to.
pub(super) type StageError = (&'static str, ManagementError);

/// Tags an error with its step.
pub(super) fn at(stage: &'static str) -> impl FnOnce(ManagementError) -> StageError {
    move |error| (stage, error)
}

/// A failed step as an outcome: a broken link or a busy device is an interruption (resume
/// later); any other error answer is a refusal no retry fixes.
pub(super) fn interrupted((stage, error): StageError) -> TransferOutcome {
    match error {
        ManagementError::Coap(error) => TransferOutcome::Interrupted(format!("{stage}: {error}")),
        ManagementError::Status {
            code: ResponseType::ServiceUnavailable,
            ..
        } => TransferOutcome::Interrupted(format!("{stage}: {error}")),
        other => TransferOutcome::Refused(format!("{stage}: {other}")),
    }
}

/// A device that gave up a download because its link broke has not failed: resume later.
pub(super) fn device_failure(result: UpdateResult) -> TransferOutcome {
    match result {
        UpdateResult::ConnectionLost => {
            TransferOutcome::Interrupted("the device lost the connection while downloading".into())
        }
        other => TransferOutcome::DeviceFailure(other),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::transfer::{Method, PackageShelf};

    #[test]
    fn blocks_are_halved_only_after_two_writes_gave_up_before_any_block_of_their_size_was_answered()
    {
        let package = PackageShelf::new().put(Bytes::from(vec![0; 4096]));
        let job = DeliveryJob::new("dev", package, "2.0", 512, Method::Push);
        let mut attempt = Attempt::new(&job);
        attempt.write_gave_up();
        attempt.shrink_suspect_block_size();
        assert_eq!(
            attempt.block_size, 512,
            "one exchange lost whole is the loss's doing"
        );
        attempt.write_gave_up();
        attempt.shrink_suspect_block_size();
        assert_eq!(attempt.block_size, 256, "two are the size's");
        attempt.write_gave_up();
        attempt.shrink_suspect_block_size();
        assert_eq!(attempt.block_size, 256, "counted again from the new size");
        attempt.block_size_answered = true;
        attempt.write_gave_up();
        attempt.write_gave_up();
        attempt.shrink_suspect_block_size();
        assert_eq!(
            attempt.block_size, 256,
            "a size the device answered is not suspect"
        );
    }
}
