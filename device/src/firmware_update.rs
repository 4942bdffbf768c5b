//! `FirmwareUpdate`: the device side of the LwM2M Firmware Update object (/5): the State and
//! Update Result state machine driven by package writes, Update and Switch to Download, on top
//! of a [`DeviceSystem`]. No I/O: the client sends the CoAP answer each write gets
//! ([`WriteAnswer::response`]).

use coap_lite::ResponseType;
use fota_engine::coap::Response;
use fota_engine::lwm2m::firmware::{FirmwareState, UpdateResult};

use crate::events::McuEvent;
use crate::system::{DeviceSystem, SystemError};

/// How the device answers one write of package bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteAnswer {
    /// Stored; send the next block (2.31 Continue).
    Continue,
    /// The last block was stored and checked (2.04 Changed; a failed check shows in Update Result).
    Complete,
    /// The block does not follow what is stored (4.08 Request Entity Incomplete).
    Incomplete(String),
    /// The package does not fit (4.13 Request Entity Too Large); Update Result is 2.
    TooLarge,
}

impl WriteAnswer {
    /// The answer to the write: 2.31, 2.04, 4.08 with the reason, or 4.13.
    pub fn response(self) -> Response {
        match self {
            WriteAnswer::Continue => Response::new(ResponseType::Continue),
            WriteAnswer::Complete => Response::new(ResponseType::Changed),
            WriteAnswer::Incomplete(reason) => {
                Response::error(ResponseType::RequestEntityIncomplete, reason)
            }
            WriteAnswer::TooLarge => {
                Response::error(ResponseType::RequestEntityTooLarge, "package does not fit")
            }
        }
    }
}

/// State of the Firmware Update object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareUpdate {
    /// /5/0/3.
    pub state: FirmwareState,
    /// /5/0/5.
    pub result: UpdateResult,
    /// /5/0/1, as last written.
    pub package_uri: String,
    /// ETag of the package being pulled, kept with its bytes: a resumed pull continues only
    /// if the server still serves the same package.
    pub package_etag: Option<Vec<u8>>,
    /// Counts pulls started; a fetch whose number is no longer current stops.
    pub pull_generation: u64,
}

/// What writing a Package URI starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullStart {
    /// Fetch the package, from `from` (bytes already stored of the same URI) onwards.
    Fetch {
        /// The pull this fetch belongs to.
        generation: u64,
        /// Package bytes already stored.
        from: usize,
    },
    /// An empty URI: download cancelled, partial package erased.
    Cancelled,
    /// A package is downloaded or installing: the URI is refused.
    Busy,
}

impl Default for FirmwareUpdate {
    fn default() -> Self {
        FirmwareUpdate {
            state: FirmwareState::Idle,
            result: UpdateResult::Initial,
            package_uri: String::new(),
            package_etag: None,
            pull_generation: 0,
        }
    }
}

impl FirmwareUpdate {
    /// Writes package bytes at `offset`; `more` is false for the last block. `total` is the
    /// package size when the server announced it (Size1).
    pub fn write(
        &mut self,
        system: &mut dyn DeviceSystem,
        offset: usize,
        bytes: &[u8],
        more: bool,
        total: Option<usize>,
        events: &mut Vec<McuEvent>,
    ) -> WriteAnswer {
        if offset == 0 {
            system.erase();
            self.state = FirmwareState::Downloading;
            self.result = UpdateResult::Initial;
            events.push(McuEvent::Downloading);
            if total.is_some_and(|t| t > system.free_memory()) {
                return self.fail(
                    system,
                    UpdateResult::NotEnoughFlash,
                    "package larger than free flash",
                    events,
                );
            }
        } else if self.state != FirmwareState::Downloading {
            return WriteAnswer::Incomplete(format!("not downloading (state {:?})", self.state));
        }
        match system.write_bytes(offset, bytes) {
            Ok(()) => {}
            Err(SystemError::NotEnoughFlash { .. }) => {
                return self.fail(system, UpdateResult::NotEnoughFlash, "flash full", events);
            }
            Err(error) => return WriteAnswer::Incomplete(error.to_string()),
        }
        if more {
            return WriteAnswer::Continue;
        }
        match system.validate() {
            Ok(()) => {
                self.state = FirmwareState::Downloaded;
                events.push(McuEvent::Downloaded);
            }
            Err(error) => {
                let result = match error {
                    SystemError::Unsupported(_) => UpdateResult::UnsupportedPackageType,
                    _ => UpdateResult::IntegrityFailure,
                };
                self.fail(system, result, &error.to_string(), events);
            }
        }
        WriteAnswer::Complete
    }

    /// Whether a pushed block at `offset` continues the body of a device that reassembles
    /// Block1 in order, as stock clients keeping it in RAM do (Wakaama, aiocoap): block 0
    /// starts a new body; any other block must start right where what it holds ends, in this
    /// exchange or a new one, while it is Downloading. A block it holds already (only the
    /// answer to it was lost) or one past a gap does not: 4.08 (RFC 7959 section 2.5 lets a
    /// server refuse any block not in sequence), with the reason.
    pub fn continues_body(&self, system: &dyn DeviceSystem, offset: usize) -> Result<(), String> {
        let held = system.saved_bytes();
        match self.state {
            _ if offset == 0 => Ok(()),
            FirmwareState::Downloading if offset == held => Ok(()),
            FirmwareState::Downloading => Err(format!(
                "a block at {offset} does not follow the {held} bytes held"
            )),
            state => Err(format!(
                "a block at {offset} while not downloading ({state:?})"
            )),
        }
    }

    fn fail(
        &mut self,
        system: &mut dyn DeviceSystem,
        result: UpdateResult,
        reason: &str,
        events: &mut Vec<McuEvent>,
    ) -> WriteAnswer {
        system.erase();
        self.state = FirmwareState::Idle;
        self.result = result;
        events.push(McuEvent::DownloadFailed(reason.to_string()));
        WriteAnswer::TooLarge
    }

    /// An empty write to /5/0/0 (or an empty Package URI): back to Idle, whatever package is
    /// stored, partial or whole, erased.
    pub fn reset(&mut self, system: &mut dyn DeviceSystem, events: &mut Vec<McuEvent>) {
        system.erase();
        self.state = FirmwareState::Idle;
        self.result = UpdateResult::Initial;
        events.push(McuEvent::DownloadCancelled);
    }

    /// A write of /5/0/1. Writing again the URI a pull was interrupted on resumes it over the
    /// bytes already stored; another URI starts from scratch.
    pub fn start_pull(
        &mut self,
        system: &mut dyn DeviceSystem,
        uri: &str,
        events: &mut Vec<McuEvent>,
    ) -> PullStart {
        if matches!(
            self.state,
            FirmwareState::Downloaded | FirmwareState::Updating
        ) {
            return PullStart::Busy;
        }
        self.pull_generation += 1;
        if uri.is_empty() {
            self.reset(system, events);
            self.package_uri.clear();
            self.package_etag = None;
            return PullStart::Cancelled;
        }
        if uri != self.package_uri {
            system.erase();
            self.package_etag = None;
            self.package_uri = uri.to_string();
        }
        self.state = FirmwareState::Downloading;
        self.result = UpdateResult::Initial;
        PullStart::Fetch {
            generation: self.pull_generation,
            from: system.saved_bytes(),
        }
    }

    /// Checks a fetched block's ETag against the package's. False when the server now serves
    /// another package: what is stored is erased and the pull starts over.
    pub fn same_package(&mut self, system: &mut dyn DeviceSystem, etag: &[u8]) -> bool {
        match &self.package_etag {
            Some(known) if known.as_slice() == etag => true,
            None => {
                self.package_etag = Some(etag.to_vec());
                true
            }
            Some(_) => {
                system.erase();
                self.package_etag = Some(etag.to_vec());
                false
            }
        }
    }

    /// A pull that cannot go on: back to Idle with `result`. A lost connection keeps the
    /// stored bytes, so writing the URI again resumes.
    pub fn abandon_pull(
        &mut self,
        system: &mut dyn DeviceSystem,
        result: UpdateResult,
        events: &mut Vec<McuEvent>,
    ) {
        if result != UpdateResult::ConnectionLost {
            system.erase();
        }
        self.state = FirmwareState::Idle;
        self.result = result;
        events.push(McuEvent::DownloadFailed(format!(
            "pull abandoned: {result:?}"
        )));
    }

    /// Execute /5/0/26501: go back to Downloading over the bytes already stored. False when
    /// there is nothing to resume.
    pub fn switch_to_download(&mut self, system: &dyn DeviceSystem) -> bool {
        let resumable =
            self.state != FirmwareState::Downloaded && self.state != FirmwareState::Updating;
        if !resumable || system.saved_bytes() == 0 {
            return false;
        }
        self.state = FirmwareState::Downloading;
        self.result = UpdateResult::Initial;
        true
    }

    /// Execute /5/0/2 accepted: Downloaded → Updating. False in any other state.
    pub fn begin_update(&mut self, events: &mut Vec<McuEvent>) -> bool {
        if self.state != FirmwareState::Downloaded {
            return false;
        }
        self.state = FirmwareState::Updating;
        events.push(McuEvent::Updating);
        true
    }

    /// Installs the package; the caller reboots the device afterwards.
    pub fn install(&mut self, system: &mut dyn DeviceSystem, events: &mut Vec<McuEvent>) {
        match system.start_update() {
            Ok(()) => {
                self.result = UpdateResult::Success;
                events.push(McuEvent::UpdateSuccess);
            }
            Err(error) => {
                system.erase();
                self.result = UpdateResult::UpdateFailed;
                events.push(McuEvent::UpdateFailed(error.to_string()));
            }
        }
        self.state = FirmwareState::Idle;
        events.push(McuEvent::UpdateOver);
    }

    /// After a reboot or power cut: a download in progress stops (its bytes stay in flash, for
    /// Switch to Download), an install in progress is lost.
    pub fn after_reboot(&mut self) {
        self.pull_generation += 1;
        if self.state != FirmwareState::Downloaded {
            self.state = FirmwareState::Idle;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flash::SimulatedFlash;

    #[test]
    fn an_in_order_body_takes_block_0_or_the_next_block_only() {
        let mut flash = SimulatedFlash::new(vec![], "1.0", 1000);
        let mut firmware = FirmwareUpdate::default();
        let mut events = Vec::new();
        assert!(firmware.continues_body(&flash, 0).is_ok());
        assert!(
            firmware.continues_body(&flash, 128).is_err(),
            "not downloading"
        );
        firmware.write(&mut flash, 0, &[7; 128], true, None, &mut events);
        firmware.write(&mut flash, 128, &[7; 128], true, None, &mut events);
        assert!(
            firmware.continues_body(&flash, 256).is_ok(),
            "the next block"
        );
        assert!(
            firmware.continues_body(&flash, 128).is_err(),
            "held already"
        );
        assert!(firmware.continues_body(&flash, 384).is_err(), "past a gap");
        assert!(firmware.continues_body(&flash, 0).is_ok(), "a new body");
        firmware.after_reboot();
        assert!(firmware.continues_body(&flash, 256).is_err(), "RAM lost");
    }

    #[test]
    fn a_reset_erases_what_is_stored_and_tells_the_mcu() {
        let mut flash = SimulatedFlash::new(vec![], "1.0", 1000);
        let mut firmware = FirmwareUpdate::default();
        let mut events = Vec::new();
        firmware.write(&mut flash, 0, &[7; 100], true, None, &mut events);
        firmware.result = UpdateResult::UpdateFailed;
        firmware.reset(&mut flash, &mut events);
        assert_eq!(flash.saved_bytes(), 0);
        assert_eq!(
            (firmware.state, firmware.result),
            (FirmwareState::Idle, UpdateResult::Initial)
        );
        assert_eq!(
            events,
            vec![McuEvent::Downloading, McuEvent::DownloadCancelled]
        );
    }
}
