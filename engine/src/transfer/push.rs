//! Push delivery of one package to one device: Block1 writes to /5/0/0, the State and Update
//! Result observed, Update executed once Downloaded, and the new version confirmed after the
//! device registers again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coap_lite::RequestType;

use super::outcome::{TransferOutcome, TransferReport, WireCount};
use super::watch::FirmwareWatch;
use crate::coap::blockwise::{Block1Upload, send_block1};
use crate::coap::{CoapError, OutgoingRequest, PacketExt, WireMeter};
use crate::lwm2m::firmware::{self, FirmwareState, UpdateResult};
use crate::lwm2m::{
    ContentFormat, DeviceManagement, ManagementError, Registration, RegistrationEvent, Registry,
};

/// Limits of a push delivery.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PushConfig {
    /// How long a device may take to verify a downloaded package and report Downloaded.
    pub verify_timeout: Duration,
    /// How long a device may take to install and register again.
    pub install_timeout: Duration,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            verify_timeout: Duration::from_secs(120),
            install_timeout: Duration::from_secs(600),
        }
    }
}

/// One package to push to one device.
#[derive(Debug, Clone)]
pub struct PushJob {
    /// The device's endpoint name.
    pub endpoint: String,
    /// The package bytes (shared between every device, never copied per device).
    pub package: Bytes,
    /// Version the device must report afterwards.
    pub target_version: String,
    /// Block size to start with.
    pub block_size: usize,
}

/// Pushes packages to registered devices.
#[derive(Clone)]
pub struct PushTransfer {
    /// Device management requests.
    management: DeviceManagement,
    /// Where registrations and re-registrations are seen.
    registry: Arc<Registry>,
    /// Timeouts.
    config: PushConfig,
}

impl PushTransfer {
    /// Pushes through `management` to devices in `registry`.
    pub fn new(management: DeviceManagement, registry: Arc<Registry>, config: PushConfig) -> Self {
        PushTransfer {
            management,
            registry,
            config,
        }
    }

    /// Delivers and installs `job`'s package, start to end.
    pub async fn run(&self, job: &PushJob) -> TransferReport {
        let started = Instant::now();
        let meter = WireMeter::default();
        let mut wire = WireCount::default();
        let mut block_size = job.block_size;
        let outcome = match self.registry.get(&job.endpoint) {
            None => TransferOutcome::Interrupted("device not registered".into()),
            Some(registration) => self
                .deliver(job, &registration, &meter, &mut wire, &mut block_size)
                .await
                .unwrap_or_else(interrupted),
        };
        wire.wire_sent = meter.sent();
        wire.retransmissions = meter.retransmitted();
        TransferReport {
            outcome,
            wire,
            block_size,
            elapsed: started.elapsed(),
        }
    }

    async fn deliver(
        &self,
        job: &PushJob,
        registration: &Registration,
        meter: &WireMeter,
        wire: &mut WireCount,
        block_size: &mut usize,
    ) -> Result<TransferOutcome, StageError> {
        let device = registration.address;
        let mut watch = FirmwareWatch::start(&self.management, device)
            .await
            .map_err(at("observing State and Update Result"))?;
        if watch.state() != FirmwareState::Idle || watch.result() != UpdateResult::Initial {
            // Leftovers of an earlier attempt: an empty write resets the device and erases them.
            self.management
                .write(
                    device,
                    firmware::PACKAGE,
                    ContentFormat::Opaque,
                    Bytes::new(),
                )
                .await
                .map_err(at("resetting the device"))?;
        }
        let upload = Block1Upload {
            request: OutgoingRequest::new(RequestType::Put, &firmware::PACKAGE.segments())
                .with_payload(ContentFormat::Opaque.number(), Bytes::new()),
            body: job.package.clone(),
            block_size: job.block_size,
            start_offset: 0,
        };
        let mut high_water = 0usize;
        let outcome = send_block1(
            self.management.endpoint(),
            device,
            &upload,
            meter,
            |acked| {
                let new = acked.saturating_sub(high_water);
                wire.package_first += new as u64;
                high_water = high_water.max(acked);
            },
        )
        .await
        .map_err(|e| at("writing the package")(e.into()))?;
        *block_size = outcome.block_size;
        if let Some(code) = outcome.response.response_code().filter(|c| c.is_error()) {
            let result = watch
                .read_result(&self.management)
                .await
                .map_err(at("reading Update Result"))?;
            if result != UpdateResult::Initial {
                return Ok(TransferOutcome::DeviceFailure(result));
            }
            return Ok(TransferOutcome::Refused(format!(
                "package write answered {}",
                crate::coap::message::code_name(code)
            )));
        }
        let state = watch
            .wait_until_settled(&self.management, self.config.verify_timeout)
            .await
            .map_err(at("waiting for Downloaded"))?;
        if state != FirmwareState::Downloaded {
            return Ok(TransferOutcome::DeviceFailure(watch.result()));
        }
        let back = self.registry.next_contact(&job.endpoint);
        match self
            .management
            .execute(device, firmware::UPDATE, None)
            .await
        {
            // The answer to Update can be lost while the device already reboots into the new
            // firmware: whether it installed shows when it registers again.
            Ok(()) | Err(ManagementError::Coap(CoapError::Timeout { .. })) => {}
            Err(error) => return Err(at("executing Update")(error)),
        }
        drop(watch);
        self.confirm(job, back).await
    }

    /// Waits for the device to register again after installing, then checks its version.
    async fn confirm(
        &self,
        job: &PushJob,
        mut back: tokio::sync::oneshot::Receiver<RegistrationEvent>,
    ) -> Result<TransferOutcome, StageError> {
        let deadline = Instant::now() + self.config.install_timeout;
        let registration = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, back).await {
                Ok(Ok(RegistrationEvent::Registered(registration))) => break registration,
                Ok(Ok(_)) => back = self.registry.next_contact(&job.endpoint),
                Ok(Err(_)) | Err(_) => {
                    return Ok(TransferOutcome::Interrupted(
                        "device did not come back after the update".into(),
                    ));
                }
            }
        };
        let version = self
            .management
            .read_value(registration.address, firmware::FIRMWARE_VERSION)
            .await
            .and_then(|value| {
                value
                    .as_string()
                    .map_err(|source| ManagementError::Content {
                        path: firmware::FIRMWARE_VERSION,
                        source,
                    })
            })
            .map_err(at("reading the new version"))?;
        if version == job.target_version {
            return Ok(TransferOutcome::Upgraded { version });
        }
        let result = read_result(&self.management, registration.address)
            .await
            .map_err(at("reading Update Result"))?;
        if result != UpdateResult::Success && result != UpdateResult::Initial {
            return Ok(TransferOutcome::DeviceFailure(result));
        }
        Ok(TransferOutcome::WrongVersion {
            expected: job.target_version.clone(),
            found: version,
        })
    }
}

/// Reads /5/0/5.
pub(crate) async fn read_result(
    management: &DeviceManagement,
    device: std::net::SocketAddr,
) -> Result<UpdateResult, ManagementError> {
    let value = management
        .read_value(device, firmware::UPDATE_RESULT)
        .await?;
    let number = value.as_i64().map_err(|source| ManagementError::Content {
        path: firmware::UPDATE_RESULT,
        source,
    })?;
    UpdateResult::from_number(number).ok_or(ManagementError::Missing(firmware::UPDATE_RESULT))
}

/// A failed operation and the step of the delivery it belonged to.
type StageError = (&'static str, ManagementError);

fn at(stage: &'static str) -> impl FnOnce(ManagementError) -> StageError {
    move |error| (stage, error)
}

fn interrupted((stage, error): StageError) -> TransferOutcome {
    match error {
        ManagementError::Coap(error) => TransferOutcome::Interrupted(format!("{stage}: {error}")),
        other => TransferOutcome::Refused(format!("{stage}: {other}")),
    }
}
