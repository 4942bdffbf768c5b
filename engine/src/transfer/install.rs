//! The install step of a delivery: Execute Update (/5/0/2) once the device holds the package,
//! then wait for the device to be back from its install and check the version it runs. Owns
//! telling an Update the device took from one it never got: every contact of the device while
//! Update's fate is unknown is looked at, none is let go by.

use std::net::SocketAddr;

use coap_lite::ResponseType;

use super::job::DeliveryJob;
use super::outcome::TransferOutcome;
use super::steps::{StageError, Steps, at};
use super::watch::{FirmwareWatch, read_result, read_state};
use crate::coap::CoapError;
use crate::lwm2m::firmware::{self, FirmwareState, UpdateResult};
use crate::lwm2m::{EndpointEvents, ManagementError, Registration};

/// Times Execute Update is sent while the device answers, after each exchange timed out, that
/// it still holds the package untouched (Downloaded): the request itself was lost every time.
const EXECUTE_TRIES: usize = 3;

/// What the device did while Update was being sent to it.
pub(super) enum Sent {
    /// The attempt ends here (Update refused, or lost every time).
    Over(TransferOutcome),
    /// Nothing yet: Update was taken, it seems (acknowledged, or its fate unknown).
    Quiet,
    /// It registered anew: back from the install.
    Back(Registration),
    /// It made contact in the same registration, awake (queue mode: its window opened again):
    /// its State tells whether Update was taken.
    Contact(Registration),
}

/// How the wait for the device's install ended.
pub(super) enum Installed {
    /// The delivery's outcome.
    Over(TransferOutcome),
    /// The device made contact still holding the package untouched: it never took Update.
    NotTaken(Registration),
}

impl Steps {
    /// Executes Update ([`Steps::execute_update`]) while following the device's contacts. A
    /// device that contacts the server meanwhile is awake now, though its answers may have
    /// been lost with its last window: the exchanges under way stop there and its State is
    /// read at that contact, instead of waiting out their timeouts and then the device's next
    /// contact (a PSM cycle later, hours on a real module).
    pub(super) async fn send_update(
        &self,
        watch: &mut FirmwareWatch,
        registration: &Registration,
        contacts: &mut EndpointEvents,
    ) -> Result<Sent, StageError> {
        let executed = self.execute_update(watch, registration.address);
        let mut executed = std::pin::pin!(executed);
        loop {
            tokio::select! {
                biased;
                done = &mut executed => {
                    return Ok(done?.map_or(Sent::Quiet, Sent::Over));
                }
                event = contacts.next() => {
                    let Some(contact) = event.contact() else { continue };
                    if contact.id != registration.id {
                        return Ok(Sent::Back(contact.clone()));
                    }
                    tracing::debug!(
                        endpoint = %contact.endpoint,
                        "the device made contact while Update was sent: its State is read now"
                    );
                    return Ok(Sent::Contact(contact.clone()));
                }
            }
        }
    }

    /// Executes Update; `Some` when the attempt ends here. The answer can be lost while the device
    /// already reboots into the new firmware: whether it installed shows when it registers again,
    /// so a timeout is no error. After a timeout State tells which was lost: a device still
    /// Downloaded never took the request, and gets it again ([`EXECUTE_TRIES`] times in all, then
    /// at its next contact); one that does not answer (rebooting) or answers Updating took it,
    /// it seems. A device that refuses (4.05) is asked its State too.
    pub(super) async fn execute_update(
        &self,
        watch: &mut FirmwareWatch,
        device: SocketAddr,
    ) -> Result<Option<TransferOutcome>, StageError> {
        for _ in 0..EXECUTE_TRIES {
            match self
                .management
                .execute(device, firmware::UPDATE, None)
                .await
            {
                Ok(()) => return Ok(None),
                Err(ManagementError::Coap(CoapError::Timeout { .. })) => {
                    match watch.read_now(&self.management).await {
                        Ok(FirmwareState::Downloaded) => {
                            tracing::debug!(%device, "Update was lost on its way: sent again");
                        }
                        _ => return Ok(None),
                    }
                }
                Err(
                    refusal @ ManagementError::Status {
                        code: ResponseType::MethodNotAllowed,
                        ..
                    },
                ) => return self.refused(watch, refusal).await,
                Err(error) => return Err(at("executing Update")(error)),
            }
        }
        Ok(Some(TransferOutcome::Interrupted(format!(
            "Update lost {EXECUTE_TRIES} times: the device still holds the package untouched"
        ))))
    }

    /// The device refused Update: Updating means an earlier Update got through; anything but
    /// Downloaded means it no longer holds the package (a late duplicate of an old write restarted
    /// its download), which the next attempt repairs.
    async fn refused(
        &self,
        watch: &mut FirmwareWatch,
        refusal: ManagementError,
    ) -> Result<Option<TransferOutcome>, StageError> {
        let state = watch
            .read_now(&self.management)
            .await
            .map_err(at("reading State after Update was refused"))?;
        match state {
            FirmwareState::Updating => Ok(None),
            FirmwareState::Downloaded => Err(at("executing Update")(refusal)),
            other => Ok(Some(TransferOutcome::Interrupted(format!(
                "executing Update: the device no longer holds the package (State {other:?})"
            )))),
        }
    }

    /// The device's first contact, `pending` and then the ones to come, that shows it is back
    /// from the install it was asked for in `left`: a registration other than `left` (it
    /// rebooted and registered anew, or this is an Update of such a registration), or an Update
    /// of `left` itself once its State is no longer Updating. Some clients keep their
    /// registration across the reboot of a firmware update, or install without rebooting, and
    /// only send an Update: waiting for a Register alone would hold them until the install
    /// timeout. A device still Downloaded with no result then never took Update (every request
    /// of it lost, or its answer to State).
    async fn back_from_install(
        &self,
        contacts: &mut EndpointEvents,
        left: &Registration,
        mut pending: Option<Registration>,
    ) -> Back {
        loop {
            let contact = match pending.take() {
                Some(contact) => contact,
                None => contacts.next_contact().await,
            };
            if contact.id != left.id {
                return Back::In(Box::new(contact));
            }
            match read_state(&self.management, contact.address).await {
                Ok(FirmwareState::Updating) => {}
                Ok(FirmwareState::Downloaded) if self.never_tried(contact.address).await => {
                    return Back::NotTaken(Box::new(contact));
                }
                Ok(state) => {
                    tracing::info!(
                        endpoint = %contact.endpoint, ?state,
                        "back from the install in the same registration"
                    );
                    return Back::In(Box::new(contact));
                }
                Err(error) => {
                    tracing::debug!(endpoint = %contact.endpoint, %error, "State not read after the install");
                }
            }
        }
    }

    /// Waits for the device to be back from its install, from what it did while Update was
    /// sent (`sent`), then checks its version as devices report it: the target's /3/0/3 string
    /// is an upgrade; Update Result 1 (success) with another string, or a version that moved to
    /// something else, is an upgrade to an unexpected version (never to be pushed again
    /// blindly); a failure in Update Result is the device's failure; the old version back with
    /// no result is an install that did not happen. `left` is the registration the device
    /// installed from, `before` the version it ran then.
    pub(super) async fn confirm(
        &self,
        job: &DeliveryJob,
        contacts: &mut EndpointEvents,
        left: &Registration,
        sent: Sent,
        before: Option<&str>,
    ) -> Result<Installed, StageError> {
        let pending = match sent {
            Sent::Over(outcome) => return Ok(Installed::Over(outcome)),
            Sent::Back(registration) => {
                return self.check_version(job, &registration, before).await;
            }
            Sent::Quiet => None,
            Sent::Contact(contact) => Some(contact),
        };
        let timeout = self.config.install_timeout;
        match tokio::time::timeout(timeout, self.back_from_install(contacts, left, pending)).await {
            Ok(Back::In(registration)) => self.check_version(job, &registration, before).await,
            Ok(Back::NotTaken(contact)) => Ok(Installed::NotTaken(*contact)),
            Err(_) => Ok(Installed::Over(TransferOutcome::Interrupted(
                "device did not come back after the update".into(),
            ))),
        }
    }

    /// The version the device runs back from its install in `registration`, told as
    /// [`Steps::confirm`] says.
    async fn check_version(
        &self,
        job: &DeliveryJob,
        registration: &Registration,
        before: Option<&str>,
    ) -> Result<Installed, StageError> {
        let version = self.read_version(registration.address).await?;
        if version == job.target_version {
            return Ok(Installed::Over(TransferOutcome::Upgraded { version }));
        }
        let result = read_result(&self.management, registration.address)
            .await
            .map_err(at("reading Update Result"))?;
        let expected = job.target_version.clone();
        Ok(Installed::Over(match result {
            UpdateResult::Success => TransferOutcome::UnexpectedVersion {
                expected,
                found: version,
            },
            UpdateResult::Initial if before.is_some_and(|before| before != version) => {
                TransferOutcome::UnexpectedVersion {
                    expected,
                    found: version,
                }
            }
            UpdateResult::Initial => TransferOutcome::WrongVersion {
                expected,
                found: version,
            },
            failure => TransferOutcome::DeviceFailure(failure),
        }))
    }

    /// Whether Update Result says no install was tried since the download (Initial): a device
    /// back in Downloaded with a failure there (some clients keep the package after a failed
    /// install) tried it.
    async fn never_tried(&self, device: SocketAddr) -> bool {
        let result = read_result(&self.management, device).await;
        result.is_ok_and(|result| result == UpdateResult::Initial)
    }
}

/// How a device that was asked to install came back.
enum Back {
    /// In this registration: anew after its reboot, or its own once the install is over.
    In(Box<Registration>),
    /// Still holding the package untouched (Downloaded) at this contact: it never took Update.
    NotTaken(Box<Registration>),
}
