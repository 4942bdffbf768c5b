//! The pull download step: the package's URI written to /5/0/1, the device fetching it with
//! Block2 from the engine's package server, and the wait for the device to verify it. A device
//! interrupted in the middle resumes by asking for its next block; the engine only writes the
//! URI again when the device gave up.

use std::net::SocketAddr;

use super::outcome::TransferOutcome;
use super::resume::ResumePoint;
use super::steps::{Attempt, StageError, Steps, at, device_failure};
use crate::lwm2m::firmware::{self, FirmwareState};
use crate::lwm2m::{ContentFormat, ManagementError};

impl Steps {
    /// Has the device fetch the package (over coaps when it is `secure`: on DTLS). `None` once
    /// it reports Downloaded; otherwise the outcome that ends the attempt.
    pub(super) async fn pull(
        &self,
        attempt: &mut Attempt<'_>,
        device: SocketAddr,
        secure: bool,
    ) -> Result<Option<TransferOutcome>, StageError> {
        let job = attempt.job;
        let known = self.book.get(&job.endpoint, &job.package.sha256);
        let still_fetching =
            known.is_some() && attempt.watch().state() == FirmwareState::Downloading;
        if !still_fetching {
            if known.is_none() {
                attempt
                    .watch()
                    .reset_unless_idle(&self.management, job.reset)
                    .await
                    .map_err(at("resetting the device"))?;
            }
            let uri = match secure {
                true => job
                    .package
                    .uri("coaps", &self.config.secure_package_authority),
                false => job.package.uri("coap", &self.config.package_authority),
            };
            self.management
                .write(device, firmware::PACKAGE_URI, ContentFormat::TextPlain, uri)
                .await
                .map_err(at("writing the Package URI"))?;
        }
        if known.is_none() {
            self.book.record(
                &job.endpoint,
                ResumePoint {
                    package: job.package.sha256,
                    acknowledged: 0,
                    high_water: 0,
                    block_size: attempt.block_size,
                },
            );
        }
        let watch = attempt.watch();
        match watch
            .wait_until_settled(&self.management, self.config.pull_timeout)
            .await
        {
            Ok(FirmwareState::Downloaded) => Ok(None),
            Ok(_) => Ok(Some(device_failure(watch.result()))),
            Err(ManagementError::Missing(_)) => Ok(Some(TransferOutcome::Interrupted(
                "the device did not finish fetching in time".into(),
            ))),
            Err(error) => Err(at("waiting for the device to fetch the package")(error)),
        }
    }

    /// Adds what the package server sent the device since the last call (at any address it
    /// pulled from) to the delivery's account of package bytes.
    pub(super) fn account_served(&self, attempt: &mut Attempt<'_>) {
        let job = attempt.job;
        let Some(mut point) = self.book.get(&job.endpoint, &job.package.sha256) else {
            return;
        };
        for account in &attempt.pulls {
            let served = account.take();
            let fresh = served.high_water.saturating_sub(point.high_water) as u64;
            attempt.wire.package_first += fresh;
            attempt.wire.package_resent += served.bytes.saturating_sub(fresh);
            point.high_water = point.high_water.max(served.high_water);
        }
        point.acknowledged = point.high_water;
        self.book.record(&job.endpoint, point);
    }
}
