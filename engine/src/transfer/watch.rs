//! `FirmwareWatch`: the server's view of a device's Firmware Update state machine, kept current
//! by observing State (/5/0/3) and Update Result (/5/0/5), or State alone when a survey just
//! read Update Result, with reads as a fallback when a device does not notify; and the reset of
//! that state machine to Idle. A watch is made once per registration of the device and re-used
//! by the attempts that follow; it cancels its observations when the delivery is done with it,
//! so a device never holds more than one of each from the engine.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;

use crate::coap::{Observation, Packet};
use crate::lwm2m::firmware::{self, FirmwareState, ResetMethod, UpdateResult};
use crate::lwm2m::management::decode;
use crate::lwm2m::{
    ContentFormat, DeviceManagement, LwM2mPath, ManagementError, Record, Registration,
};

/// How often to read State when no notification comes.
const POLL_EVERY: Duration = Duration::from_secs(5);
/// The first read of State, after the package, of a device whose round trips are not measured.
const FIRST_POLL: Duration = Duration::from_secs(1);

/// Observed State and Update Result of one device.
pub struct FirmwareWatch {
    /// The device.
    device: SocketAddr,
    /// The registration the observations were made in: a device that registers anew has
    /// dropped them (LwM2M), one that moved sends its notifications from elsewhere.
    registration: String,
    /// Last known State.
    state: FirmwareState,
    /// Last known Update Result.
    result: UpdateResult,
    /// Notifications of State, when the device accepted the observation.
    state_observation: Option<Observation>,
    /// Notifications of Update Result, when the device accepted the observation.
    result_observation: Option<Observation>,
    /// Transferred Bytes (/5/0/26500), when the last read of the instance carried it: until
    /// taken, what the device stores now.
    transferred: Option<usize>,
}

impl FirmwareWatch {
    /// Observes State and Update Result of the device `registration` is of, learning their
    /// current values; State alone when Update Result is `known` (a survey just read it in
    /// this registration), one exchange less on a link where each is a second: a result worth
    /// knowing comes with State back at Idle (a download that failed, an install over), and
    /// is read then ([`FirmwareWatch::wait_until_settled`]; an install is checked by reads).
    pub async fn start(
        management: &DeviceManagement,
        registration: &Registration,
        known: Option<UpdateResult>,
    ) -> Result<Self, ManagementError> {
        let device = registration.address;
        let (state_records, state_observation) =
            management.observe(device, firmware::STATE).await?;
        let observed = match known {
            Some(_) => Ok((Vec::new(), None)),
            None => management.observe(device, firmware::UPDATE_RESULT).await,
        };
        let (result_records, result_observation) = match observed {
            Ok(observed) => observed,
            Err(error) => {
                cancel(management, device, firmware::STATE, state_observation).await;
                return Err(error);
            }
        };
        let mut watch = FirmwareWatch {
            device,
            registration: registration.id.clone(),
            state: FirmwareState::Idle,
            result: known.unwrap_or(UpdateResult::Initial),
            state_observation,
            result_observation,
            transferred: None,
        };
        watch.apply(&state_records);
        watch.apply(&result_records);
        Ok(watch)
    }

    /// Whether this watch still serves the device where `registration` says it is: the same
    /// registration, at the same address.
    pub fn serves(&self, registration: &Registration) -> bool {
        self.registration == registration.id && self.device == registration.address
    }

    /// Cancels the observations the device still holds (GET with Observe 1, RFC 7641 section
    /// 3.6), so they do not pile up on it; a device that does not answer has dropped them or
    /// will reset their next notification.
    pub async fn cancel(self, management: &DeviceManagement) {
        let FirmwareWatch {
            device,
            state_observation,
            result_observation,
            ..
        } = self;
        cancel(management, device, firmware::STATE, state_observation).await;
        cancel(
            management,
            device,
            firmware::UPDATE_RESULT,
            result_observation,
        )
        .await;
    }

    /// Last known State.
    pub fn state(&self) -> FirmwareState {
        self.state
    }

    /// Last known Update Result.
    pub fn result(&self) -> UpdateResult {
        self.result
    }

    /// Unless the device is Idle with no Update Result, resets it with `method`: whatever an
    /// earlier attempt or another package left is erased and the upgrade starts clean. A
    /// device that refuses that write (a pull-only device refusing writes to Package, say)
    /// gets OMA's other reset. The device is then Idle with result 0, as the object defines,
    /// whenever its notification of that comes. Whether a reset was sent.
    pub async fn reset_unless_idle(
        &mut self,
        management: &DeviceManagement,
        method: ResetMethod,
    ) -> Result<bool, ManagementError> {
        if self.state == FirmwareState::Idle && self.result == UpdateResult::Initial {
            return Ok(false);
        }
        let otherwise = match method {
            ResetMethod::EmptyUri => ResetMethod::NullByte,
            ResetMethod::NullByte | ResetMethod::EmptyWrite => ResetMethod::EmptyUri,
        };
        match reset(management, self.device, method).await {
            Err(ManagementError::Status { code, .. }) if code.is_error() => {
                tracing::debug!(device = %self.device, ?method, ?otherwise, "reset refused");
                reset(management, self.device, otherwise).await?;
            }
            done => done?,
        }
        self.state = FirmwareState::Idle;
        self.result = UpdateResult::Initial;
        Ok(true)
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
    /// with a failure in Update Result); returns the State then. State is read when no
    /// notification settled it: first after the device's retransmission timeout (a notification
    /// sent as the last block was answered has crossed the link by then; [`FIRST_POLL`] for
    /// a device not measured), then every [`POLL_EVERY`]. The time of a read is kept whatever
    /// notifications arrive before it (those queued during the transfer, of Downloading, come
    /// at once and settle nothing).
    pub async fn wait_until_settled(
        &mut self,
        management: &DeviceManagement,
        timeout: Duration,
    ) -> Result<FirmwareState, ManagementError> {
        let deadline = Instant::now() + timeout;
        let first_poll = management
            .endpoint()
            .rto(self.device)
            .unwrap_or(FIRST_POLL)
            .min(POLL_EVERY);
        let mut poll_at = Instant::now() + first_poll;
        while !self.settled() {
            if Instant::now() >= deadline {
                return Err(ManagementError::Missing(firmware::STATE));
            }
            let notified = tokio::time::timeout_at(
                poll_at.min(deadline),
                next_notification(&mut self.state_observation, &mut self.result_observation),
            )
            .await;
            match notified {
                Ok(Some((path, packet))) => {
                    if let Ok(records) = decode(path, &packet) {
                        self.apply(&records);
                    }
                    if self.result_unknown() {
                        self.read_now(management).await?;
                        poll_at = Instant::now() + POLL_EVERY;
                    }
                }
                Ok(None) => {
                    // The device dropped an observation: read from now on.
                    self.state_observation = None;
                    self.result_observation = None;
                    self.read_now(management).await?;
                    poll_at = Instant::now() + POLL_EVERY;
                }
                Err(_) => {
                    self.read_now(management).await?;
                    poll_at = Instant::now() + POLL_EVERY;
                }
            }
        }
        Ok(self.state)
    }

    /// Whether State is back at Idle while the result that says why is not observed: read it.
    fn result_unknown(&self) -> bool {
        self.state == FirmwareState::Idle
            && self.result == UpdateResult::Initial
            && self.result_observation.is_none()
    }

    fn settled(&self) -> bool {
        self.state == FirmwareState::Downloaded
            || (self.state == FirmwareState::Idle && self.result != UpdateResult::Initial)
    }

    /// Reads State and Update Result now (in one read of the instance where the device
    /// allows it, which brings Transferred Bytes along); returns the State.
    pub async fn read_now(
        &mut self,
        management: &DeviceManagement,
    ) -> Result<FirmwareState, ManagementError> {
        let records = management
            .read_instance(self.device, LwM2mPath::instance(5, 0), &[3, 5])
            .await?;
        self.apply(&records);
        self.transferred = records
            .iter()
            .find(|record| record.path == firmware::TRANSFERRED_BYTES)
            .and_then(|record| record.value.as_i64().ok())
            .and_then(|bytes| usize::try_from(bytes).ok());
        Ok(self.state)
    }

    /// Transferred Bytes as the last read of State brought it, once: a caller that needs it
    /// later reads it again.
    pub fn take_transferred(&mut self) -> Option<usize> {
        self.transferred.take()
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

/// Writes the reset `method` stands for.
async fn reset(
    management: &DeviceManagement,
    device: SocketAddr,
    method: ResetMethod,
) -> Result<(), ManagementError> {
    let (path, format, payload) = match method {
        ResetMethod::NullByte => (firmware::PACKAGE, ContentFormat::Opaque, &b"\0"[..]),
        ResetMethod::EmptyUri => (firmware::PACKAGE_URI, ContentFormat::TextPlain, &b""[..]),
        ResetMethod::EmptyWrite => (firmware::PACKAGE, ContentFormat::Opaque, &b""[..]),
    };
    management
        .write(device, path, format, Bytes::from_static(payload))
        .await
}

/// Cancels `observation` of `path`, if there is one; a failure is logged, not returned.
async fn cancel(
    management: &DeviceManagement,
    device: SocketAddr,
    path: LwM2mPath,
    observation: Option<Observation>,
) {
    let Some(observation) = observation else {
        return;
    };
    if let Err(error) = management
        .cancel_observation(device, path, observation)
        .await
    {
        tracing::debug!(%device, %path, %error, "observation not cancelled");
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
        biased;
        next = state_next => next,
        next = result_next => next,
    }
}

/// Reads /5/0/5.
pub(super) async fn read_result(
    management: &DeviceManagement,
    device: SocketAddr,
) -> Result<UpdateResult, ManagementError> {
    let number = read_number(management, device, firmware::UPDATE_RESULT).await?;
    UpdateResult::from_number(number).ok_or(ManagementError::Missing(firmware::UPDATE_RESULT))
}

/// Reads /5/0/3.
pub(super) async fn read_state(
    management: &DeviceManagement,
    device: SocketAddr,
) -> Result<FirmwareState, ManagementError> {
    let number = read_number(management, device, firmware::STATE).await?;
    FirmwareState::from_number(number).ok_or(ManagementError::Missing(firmware::STATE))
}

/// Reads the integer resource at `path`.
async fn read_number(
    management: &DeviceManagement,
    device: SocketAddr,
    path: LwM2mPath,
) -> Result<i64, ManagementError> {
    let value = management.read_value(device, path).await?;
    value
        .as_i64()
        .map_err(|source| ManagementError::Content { path, source })
}
