//! What a delivery is asked to do and under which limits: the job (one package for one
//! device, pushed or pulled), the stages it reports, and the timers every delivery runs by.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::outcome::WireCount;
use super::shelf::ShelvedPackage;
use crate::coap::blockwise::Pacer;
use crate::lwm2m::firmware::{ResetMethod, UpdateResult};

/// How the package reaches the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The engine writes it to /5/0/0 with Block1.
    Push,
    /// The engine writes its Package URI to /5/0/1 and the device fetches it with Block2.
    Pull,
}

/// One package for one device.
#[derive(Debug, Clone)]
pub struct DeliveryJob {
    /// The device's endpoint name.
    pub endpoint: String,
    /// The package, shared between every device.
    pub package: Arc<ShelvedPackage>,
    /// Version the device must report afterwards.
    pub target_version: String,
    /// Block size to start with (push) or to announce (pull).
    pub block_size: usize,
    /// Push or pull.
    pub method: Method,
    /// What the delivery's task lets it do now: a device holding the package is told to
    /// install only while it reads [`Gate::Open`]; otherwise the delivery ends there,
    /// [`TransferOutcome::Held`](super::TransferOutcome::Held). `None`: always open.
    pub gate: Option<watch::Receiver<Gate>>,
    /// Stop resuming after this instant (a task's deadline); `None`: the suspend limit.
    pub give_up_at: Option<Instant>,
    /// Told each stage the delivery reaches, for live progress.
    pub stages: Option<mpsc::UnboundedSender<(String, Stage)>>,
    /// Whether the device supports breakpoint resume (26500/26501); when false a broken push
    /// starts over without asking.
    pub resume: bool,
    /// How the device's Firmware Update object is reset before a fresh download.
    pub reset: ResetMethod,
    /// Payloads per Q-Block1 set (RFC 9177's MAX_PAYLOADS, the device's) for a push; 1:
    /// stop-and-wait Block1. A device that answers Q-Block1 with 4.02 gets Block1 anyway.
    pub burst: usize,
    /// What a survey just read: the first attempt in that registration takes the version
    /// instead of reading /3/0/3 again, and Update Result instead of observing it.
    pub surveyed: Option<SurveyedFirmware>,
    /// The airtime budget a push's payloads wait on (its cell's, its task's); `None`: none.
    pub pacer: Option<Pacer>,
    /// Whether a download cut by the device's sleep (queue mode, its window over) ends,
    /// [`TransferOutcome::Asleep`](super::TransferOutcome::Asleep), rather than waiting for
    /// the device to wake, once the device sleeps longer than [`DeliveryConfig::sleep_hold`]:
    /// a task then lends the slot to an awake device meanwhile, and a later delivery resumes
    /// from the device's point. `false`: it waits however long the device sleeps.
    pub yields_while_asleep: bool,
}

/// What a survey read of the device's firmware in one of its registrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SurveyedFirmware {
    /// The registration's id.
    pub registration: String,
    /// /3/0/3 as read.
    pub version: String,
    /// /5/0/5 as read, when the survey brought it.
    pub update_result: Option<UpdateResult>,
}

impl DeliveryJob {
    /// `package` to `endpoint`, never held, under the suspend limit, reporting to nobody,
    /// resuming where the device supports it, reset as OMA says (a '\0' to Package for a
    /// push, an empty Package URI for a pull), pushed stop-and-wait, waiting through the
    /// device's sleeps.
    pub fn new(
        endpoint: &str,
        package: Arc<ShelvedPackage>,
        target_version: &str,
        block_size: usize,
        method: Method,
    ) -> Self {
        DeliveryJob {
            endpoint: endpoint.to_string(),
            package,
            target_version: target_version.to_string(),
            block_size,
            method,
            gate: None,
            give_up_at: None,
            stages: None,
            resume: true,
            reset: match method {
                Method::Push => ResetMethod::NullByte,
                Method::Pull => ResetMethod::EmptyUri,
            },
            burst: 1,
            surveyed: None,
            pacer: None,
            yields_while_asleep: false,
        }
    }

    pub(super) fn report(&self, stage: Stage) {
        if let Some(stages) = &self.stages {
            let _ = stages.send((self.endpoint.clone(), stage));
        }
    }

    /// Whether the device may be told to install now.
    pub(super) fn may_install(&self) -> bool {
        (self.gate.as_ref()).is_none_or(|gate| *gate.borrow() == Gate::Open)
    }
}

/// What a task lets its deliveries do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// Nothing new: the task is not upgrading (paused, stopped).
    Closed,
    /// Download, not install: the task upgrades, outside its update windows.
    DownloadOnly,
    /// Download and install.
    Open,
}

impl Gate {
    /// Whether a download may start.
    pub fn downloads(self) -> bool {
        self != Gate::Closed
    }
}

/// Stages of a delivery, as reported to [`DeliveryJob::stages`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Package bytes are on their way.
    Downloading,
    /// The device holds and verified the package. `wire`: what the delivery cost so far, so
    /// a caller counts the transfer even if the attempt is cut while the device installs
    /// (in a cluster, it may come back from its reboot through another node).
    Downloaded { wire: WireCount },
    /// Update executed; waiting for the device to come back.
    Installing,
    /// The link broke: the delivery waits to resume, or (a device without 26500) goes on
    /// with the package write in a new exchange. `wire`: what the whole delivery cost so far,
    /// so a caller can count it before the delivery ends (or never does).
    Suspended { wire: WireCount },
}

/// Limits and timers of a delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryConfig {
    /// How long a device may take to verify a downloaded package and report Downloaded.
    pub verify_timeout: Duration,
    /// How long a pulling device may take to fetch the package before the attempt ends.
    pub pull_timeout: Duration,
    /// How long a device may take to install and register again.
    pub install_timeout: Duration,
    /// How long a delivery stays suspended without finishing before it gives up.
    pub suspend_limit: Duration,
    /// Wait before retrying a reachable device after an interruption; doubles up to `.1`.
    pub retry_backoff: (Duration, Duration),
    /// host:port devices reach the engine at, for Package URIs (pull).
    pub package_authority: String,
    /// host:port devices on DTLS reach the engine's coaps socket at; empty without coaps.
    pub secure_package_authority: String,
    /// The largest package blocks pushed, per cell.
    pub blocks: BlockLimits,
    /// How long the survey a device's Register started stands for the first attempt in that
    /// registration, instead of a second survey (its values are what a task started right
    /// after needs); zero: every attempt surveys.
    pub survey_max_age: Duration,
    /// Package bytes per second a cell's downlink carries over every task
    /// ([`super::Airtime`]); `None`: no cap.
    pub cell_airtime: Option<u32>,
    /// How long a delivery that yields while its device sleeps
    /// ([`DeliveryJob::yields_while_asleep`]: a task's) keeps its slot for a device gone to
    /// sleep mid-download, waiting for it to wake. A device not awake by then, or known to
    /// sleep longer (its cycle, from its Updates), ends the attempt and the slot serves an
    /// awake device meanwhile. About one NB-IoT delivery: a device back sooner would find its
    /// slot taken by one that started while it slept, one in PSM for an hour does not hold it.
    pub sleep_hold: Duration,
}

/// The largest package blocks the engine pushes, whatever a capability plugin allows: one
/// size for every cell, and another for the cells named (deep-coverage cells, say, where
/// each repetition of a large block costs airtime and a lost one costs more). A device
/// that takes smaller blocks says so and gets them.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockLimits {
    /// For cells not named: 1,024, CoAP's largest block.
    pub max: usize,
    /// Per cell id (/4/0/8).
    pub cells: HashMap<u32, usize>,
}

impl Default for BlockLimits {
    fn default() -> Self {
        BlockLimits {
            max: MAX_BLOCK_SIZE,
            cells: HashMap::new(),
        }
    }
}

impl BlockLimits {
    /// The largest block for a device in `cell` (not known: the default).
    pub fn for_cell(&self, cell: Option<u32>) -> usize {
        cell.and_then(|cell| self.cells.get(&cell))
            .copied()
            .unwrap_or(self.max)
    }

    /// Checks every size is a block size CoAP has (a power of two from 16 to 1,024).
    pub fn validate(&self) -> Result<(), String> {
        let named = self
            .cells
            .iter()
            .map(|(cell, size)| (format!("cell {cell}"), *size));
        for (what, size) in std::iter::once(("max".to_string(), self.max)).chain(named) {
            if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&size) || !size.is_power_of_two() {
                return Err(format!(
                    "block size of {what}: {size} is not a power of two from 16 to 1024"
                ));
            }
        }
        Ok(())
    }
}

/// CoAP's smallest block (SZX 0).
pub const MIN_BLOCK_SIZE: usize = 16;
/// CoAP's largest block (SZX 6).
pub const MAX_BLOCK_SIZE: usize = 1024;

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            verify_timeout: Duration::from_secs(120),
            pull_timeout: Duration::from_secs(3600),
            install_timeout: Duration::from_secs(600),
            suspend_limit: Duration::from_secs(7 * 86_400),
            retry_backoff: (Duration::from_secs(10), Duration::from_secs(600)),
            package_authority: "localhost:5683".into(),
            secure_package_authority: String::new(),
            blocks: BlockLimits::default(),
            survey_max_age: Duration::from_secs(60),
            cell_airtime: None,
            sleep_hold: Duration::from_secs(60),
        }
    }
}
