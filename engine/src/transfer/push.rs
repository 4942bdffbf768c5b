//! The push download step: the package written to /5/0/0 with Block1, from byte 0 or, when the
//! device kept part of it (/5/0/26500), from the block of its first missing byte after Switch to
//! Download (/5/0/26501); then the wait for the device to verify it.

use std::net::SocketAddr;

use bytes::Bytes;
use coap_lite::{RequestType, ResponseType};

use super::outcome::TransferOutcome;
use super::resume::{ResumePoint, resume_offset};
use super::steps::{Attempt, StageError, Steps, at, device_failure};
use super::watch::FirmwareWatch;
use crate::coap::blockwise::{Block1Progress, Block1Upload, send_block1};
use crate::coap::{OutgoingRequest, PacketExt};
use crate::lwm2m::firmware::{self, FirmwareState, UpdateResult};
use crate::lwm2m::{ContentFormat, ManagementError};

impl Steps {
    /// Brings the package onto the device by push. `None` once the device reports Downloaded;
    /// otherwise the outcome that ends the attempt.
    pub(super) async fn push(
        &self,
        attempt: &mut Attempt<'_>,
        device: SocketAddr,
    ) -> Result<Option<TransferOutcome>, StageError> {
        let job = attempt.job;
        let known = self.book.get(&job.endpoint, &job.package.sha256);
        if let Some(point) = known {
            attempt.block_size = point.block_size;
        }
        let start = match known {
            Some(_) if job.resume => self.resume_at(device, attempt).await?,
            _ => None,
        };
        if let Some(offset) = start {
            tracing::info!(endpoint = %job.endpoint, offset, "resuming the push where the device stands");
        } else {
            let watch = attempt.watch();
            watch
                .reset_unless_idle(&self.management, job.reset)
                .await
                .map_err(at("resetting the device"))?;
            // What the watch saw is gone with them: an old failure left in Update Result
            // must not pass for this download's.
            watch
                .read_now(&self.management)
                .await
                .map_err(at("reading State after the reset"))?;
        }
        let mut point = known.unwrap_or(ResumePoint {
            package: job.package.sha256,
            acknowledged: 0,
            high_water: 0,
            block_size: attempt.block_size,
        });
        let response = self
            .send_package(attempt, &mut point, device, start.unwrap_or(0))
            .await?;
        let watch = attempt.watch();
        if let Some(code) = response.filter(|c| c.is_error()) {
            return self.refused_write(watch, code).await;
        }
        match watch
            .wait_until_settled(&self.management, self.config.verify_timeout)
            .await
        {
            Ok(FirmwareState::Downloaded) => Ok(None),
            Ok(_) => Ok(Some(device_failure(watch.result()))),
            Err(ManagementError::Missing(_)) => Ok(Some(TransferOutcome::Interrupted(
                "the device did not report Downloaded in time".into(),
            ))),
            Err(error) => Err(at("waiting for Downloaded")(error)),
        }
    }

    /// Where to go on from when the device kept part of the package: reads Transferred Bytes,
    /// and switches the device back to Downloading over them. `None` to start over (the device
    /// has no 26500, holds too little, or refuses to switch).
    async fn resume_at(
        &self,
        device: SocketAddr,
        attempt: &Attempt<'_>,
    ) -> Result<Option<usize>, StageError> {
        let stored = match self
            .management
            .read_value(device, firmware::TRANSFERRED_BYTES)
            .await
        {
            Ok(value) => value.as_i64().ok().and_then(|n| usize::try_from(n).ok()),
            Err(ManagementError::Status { .. }) => None,
            Err(error) => return Err(at("reading Transferred Bytes")(error)),
        };
        let package_len = attempt.job.package.len();
        let Some(offset) = stored.and_then(|n| resume_offset(n, package_len, attempt.block_size))
        else {
            return Ok(None);
        };
        match self
            .management
            .execute(device, firmware::SWITCH_TO_DOWNLOAD, None)
            .await
        {
            Ok(()) => Ok(Some(offset)),
            Err(ManagementError::Status { .. }) => Ok(None),
            Err(error) => Err(at("switching back to Downloading")(error)),
        }
    }

    /// Writes the package from `start` with Block1, keeping the wire account and the resume
    /// point current after every block. Returns the code of the device's last answer.
    async fn send_package(
        &self,
        attempt: &mut Attempt<'_>,
        point: &mut ResumePoint,
        device: SocketAddr,
        start: usize,
    ) -> Result<Option<ResponseType>, StageError> {
        let job = attempt.job;
        point.acknowledged = start;
        point.block_size = attempt.block_size;
        self.book.record(&job.endpoint, *point);
        let upload = Block1Upload {
            request: OutgoingRequest::new(RequestType::Put, &firmware::PACKAGE.segments())
                .with_payload(ContentFormat::Opaque.number(), Bytes::new()),
            body: job.package.bytes.clone(),
            block_size: attempt.block_size,
            start_offset: start,
        };
        let wire = &mut attempt.wire;
        let result = send_block1(
            self.management.endpoint(),
            device,
            &upload,
            &attempt.meter,
            |progress| {
                match progress {
                    Block1Progress::Sending { offset, len } => {
                        self.shelf.record_pushed(len);
                        let end = offset + len;
                        let fresh = end.saturating_sub(point.high_water.max(offset));
                        wire.package_first += fresh as u64;
                        wire.package_resent += (len - fresh) as u64;
                        point.high_water = point.high_water.max(end);
                        // Recorded before the answer: an attempt cut here must not count the
                        // block as fresh again.
                        self.book.record(&job.endpoint, *point);
                    }
                    Block1Progress::Acknowledged(acked) => {
                        point.acknowledged = acked;
                        self.book.record(&job.endpoint, *point);
                    }
                }
            },
        )
        .await;
        self.book.record(&job.endpoint, *point);
        let outcome = result.map_err(|e| at("writing the package")(e.into()))?;
        attempt.block_size = outcome.block_size;
        point.block_size = outcome.block_size;
        self.book.record(&job.endpoint, *point);
        Ok(outcome.response.response_code())
    }

    /// The device answered a package block with an error: a failure it reports in Update
    /// Result, a device too busy for now, one that lost what it stored, or a refusal.
    async fn refused_write(
        &self,
        watch: &mut FirmwareWatch,
        code: ResponseType,
    ) -> Result<Option<TransferOutcome>, StageError> {
        let answered = crate::coap::message::code_name(code);
        match code {
            ResponseType::ServiceUnavailable => {
                return Ok(Some(TransferOutcome::Interrupted(format!(
                    "the device is busy: package write answered {answered}"
                ))));
            }
            ResponseType::RequestEntityIncomplete => {
                // The device does not hold what the block continues (it rebooted in between,
                // or lost bytes): the next attempt asks it (26500) where to go on from.
                return Ok(Some(TransferOutcome::Interrupted(format!(
                    "the device is not where the engine left it: package write answered {answered}"
                ))));
            }
            _ => {}
        }
        let result = watch
            .read_result(&self.management)
            .await
            .map_err(at("reading Update Result"))?;
        if result != UpdateResult::Initial {
            return Ok(Some(device_failure(result)));
        }
        Ok(Some(TransferOutcome::Refused(format!(
            "package write answered {answered}"
        ))))
    }
}
