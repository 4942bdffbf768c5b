//! `FirmwareWatch`: the server's view of a device's Firmware Update state machine, kept current
//! by observing State (/5/0/3) and Update Result (/5/0/5), with reads as a fallback when a
//! device does not notify.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::push::read_result;
use crate::coap::{Observation, Packet};
use crate::lwm2m::firmware::{self, FirmwareState, UpdateResult};
use crate::lwm2m::management::decode;
use crate::lwm2m::{ContentFormat, DeviceManagement, LwM2mPath, ManagementError, Record};

/// How often to read State when no notification comes.
const POLL_EVERY: Duration = Duration::from_secs(5);

/// Observed State and Update Result of one device.
pub struct FirmwareWatch {
    /// The device.
    device: SocketAddr,
    /// Last known State.
    state: FirmwareState,
    /// Last known Update Result.
    result: UpdateResult,
    /// Notifications of State, when the device accepted the observation.
    state_observation: Option<Observation>,
    /// Notifications of Update Result, when the device accepted the observation.
    result_observation: Option<Observation>,
}

impl FirmwareWatch {
    /// Observes State and Update Result, learning their current values.
    pub async fn start(
        management: &DeviceManagement,
        device: SocketAddr,
    ) -> Result<Self, ManagementError> {
        let (state_records, state_observation) =
            management.observe(device, firmware::STATE).await?;
        let (result_records, result_observation) =
            management.observe(device, firmware::UPDATE_RESULT).await?;
        let mut watch = FirmwareWatch {
            device,
            state: FirmwareState::Idle,
            result: UpdateResult::Initial,
            state_observation,
            result_observation,
        };
        watch.apply(&state_records);
        watch.apply(&result_records);
        Ok(watch)
    }

    /// Last known State.
    pub fn state(&self) -> FirmwareState {
        self.state
    }

    /// Last known Update Result.
    pub fn result(&self) -> UpdateResult {
        self.result
    }

    /// Unless the device is Idle with no Update Result, resets it with an empty write of
    /// Package (/5/0/0): whatever an earlier attempt or another package left is erased and
    /// the upgrade starts clean. The device is then Idle with result 0, as the object
    /// defines, whenever its notification of that comes.
    pub async fn reset_unless_idle(
        &mut self,
        management: &DeviceManagement,
    ) -> Result<(), ManagementError> {
        if self.state == FirmwareState::Idle && self.result == UpdateResult::Initial {
            return Ok(());
        }
        management
            .write(
                self.device,
                firmware::PACKAGE,
                ContentFormat::Opaque,
                Bytes::new(),
            )
            .await?;
        self.state = FirmwareState::Idle;
        self.result = UpdateResult::Initial;
        Ok(())
    }

    /// Reads Update Result now.
    pub async fn read_result(
        &mut self,
        management: &DeviceManagement,
    ) -> Result<UpdateResult, ManagementError> {
        self.result = read_result(management, self.device).await?;
        Ok(self.result)
    }

    /// Waits until the device has verified the package (Downloaded) or given up on it (Idle
    /// with a failure in Update Result); returns the State then.
    pub async fn wait_until_settled(
        &mut self,
        management: &DeviceManagement,
        timeout: Duration,
    ) -> Result<FirmwareState, ManagementError> {
        let deadline = Instant::now() + timeout;
        while !self.settled() {
            if Instant::now() >= deadline {
                return Err(ManagementError::Missing(firmware::STATE));
            }
            let wait = POLL_EVERY.min(deadline.saturating_duration_since(Instant::now()));
            match tokio::time::timeout(
                wait,
                next_notification(&mut self.state_observation, &mut self.result_observation),
            )
            .await
            {
                Ok(Some((path, packet))) => {
                    if let Ok(records) = decode(path, &packet) {
                        self.apply(&records);
                    }
                }
                Ok(None) => {
                    // The device dropped an observation: read from now on.
                    self.state_observation = None;
                    self.result_observation = None;
                    self.read_now(management).await?;
                }
                Err(_) => {
                    self.read_now(management).await?;
                }
            }
        }
        Ok(self.state)
    }

    fn settled(&self) -> bool {
        self.state == FirmwareState::Downloaded
            || (self.state == FirmwareState::Idle && self.result != UpdateResult::Initial)
    }

    /// Reads State and Update Result now; returns the State.
    pub async fn read_now(
        &mut self,
        management: &DeviceManagement,
    ) -> Result<FirmwareState, ManagementError> {
        let records = management
            .read(self.device, LwM2mPath::instance(5, 0))
            .await?;
        self.apply(&records);
        Ok(self.state)
    }

    fn apply(&mut self, records: &[Record]) {
        for record in records {
            let Ok(number) = record.value.as_i64() else {
                continue;
            };
            if record.path == firmware::STATE {
                self.state = FirmwareState::from_number(number).unwrap_or(self.state);
            } else if record.path == firmware::UPDATE_RESULT {
                self.result = UpdateResult::from_number(number).unwrap_or(self.result);
            }
        }
    }
}

/// The next notification from either observation; pending forever when neither is active.
async fn next_notification(
    state: &mut Option<Observation>,
    result: &mut Option<Observation>,
) -> Option<(LwM2mPath, Packet)> {
    let state_next = async {
        match state {
            Some(observation) => observation.next().await.map(|p| (firmware::STATE, p)),
            None => std::future::pending().await,
        }
    };
    let result_next = async {
        match result {
            Some(observation) => observation
                .next()
                .await
                .map(|p| (firmware::UPDATE_RESULT, p)),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        next = state_next => next,
        next = result_next => next,
    }
}
