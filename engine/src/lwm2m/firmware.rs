//! The LwM2M Firmware Update object (/5) and the resources of /3 and /4 the engine reads, named
//! and numbered as the specification names them. Shared by the engine and the reference device.

use super::path::LwM2mPath;

/// /3/0/0 Manufacturer.
pub const MANUFACTURER: LwM2mPath = LwM2mPath::resource(3, 0, 0);
/// /3/0/1 Model Number.
pub const MODEL_NUMBER: LwM2mPath = LwM2mPath::resource(3, 0, 1);
/// /3/0/3 Firmware Version.
pub const FIRMWARE_VERSION: LwM2mPath = LwM2mPath::resource(3, 0, 3);
/// /3/0/6 Available Power Sources (multiple instances): 0 DC, 1 internal battery, 2 external
/// battery, 3 fuel cell, 4 power over Ethernet, 5 USB, 6 AC (mains), 7 solar.
pub const POWER_SOURCES: LwM2mPath = LwM2mPath::resource(3, 0, 6);
/// /3/0/9 Battery Level, percent.
pub const BATTERY_LEVEL: LwM2mPath = LwM2mPath::resource(3, 0, 9);
/// /3/0/10 Memory Free, KB.
pub const MEMORY_FREE: LwM2mPath = LwM2mPath::resource(3, 0, 10);
/// /4/0/2 Radio Signal Strength, dBm.
pub const RADIO_SIGNAL_STRENGTH: LwM2mPath = LwM2mPath::resource(4, 0, 2);
/// /4/0/8 Cell ID.
pub const CELL_ID: LwM2mPath = LwM2mPath::resource(4, 0, 8);
/// /5/0/0 Package: the firmware pushed with Block1.
pub const PACKAGE: LwM2mPath = LwM2mPath::resource(5, 0, 0);
/// /5/0/1 Package URI: where the device pulls the firmware from.
pub const PACKAGE_URI: LwM2mPath = LwM2mPath::resource(5, 0, 1);
/// /5/0/2 Update: executed to install a downloaded package.
pub const UPDATE: LwM2mPath = LwM2mPath::resource(5, 0, 2);
/// /5/0/3 State.
pub const STATE: LwM2mPath = LwM2mPath::resource(5, 0, 3);
/// /5/0/5 Update Result.
pub const UPDATE_RESULT: LwM2mPath = LwM2mPath::resource(5, 0, 5);
/// /5/0/8 Firmware Update Protocol Support.
pub const PROTOCOL_SUPPORT: LwM2mPath = LwM2mPath::resource(5, 0, 8);
/// /5/0/9 Firmware Update Delivery Method.
pub const DELIVERY_METHOD: LwM2mPath = LwM2mPath::resource(5, 0, 9);
/// /5/0/26500 Transferred Bytes (OneNET extension): package bytes the device holds.
pub const TRANSFERRED_BYTES: LwM2mPath = LwM2mPath::resource(5, 0, 26500);
/// /5/0/26501 Switch to Download State (OneNET extension): resume a push where it stopped.
pub const SWITCH_TO_DOWNLOAD: LwM2mPath = LwM2mPath::resource(5, 0, 26501);

/// How a device's Firmware Update object is put back to Idle (State 0, Update Result 0,
/// package erased) before a new download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResetMethod {
    /// OMA's: a single '\0' byte written to Package (/5/0/0).
    NullByte,
    /// OMA's other: an empty string written to Package URI (/5/0/1); pull-only devices may
    /// refuse every write to Package.
    EmptyUri,
    /// The white paper's: zero bytes written to Package. Stock devices do not reset on it.
    EmptyWrite,
}

/// /5/0/3 State.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum FirmwareState {
    /// 0: no package, or the last one was installed or abandoned.
    Idle,
    /// 1: a package is arriving.
    Downloading,
    /// 2: the whole package is stored and verified.
    Downloaded,
    /// 3: installing.
    Updating,
}

impl FirmwareState {
    /// The state with the specification's number.
    pub fn from_number(n: i64) -> Option<Self> {
        Some(match n {
            0 => FirmwareState::Idle,
            1 => FirmwareState::Downloading,
            2 => FirmwareState::Downloaded,
            3 => FirmwareState::Updating,
            _ => return None,
        })
    }

    /// The specification's number.
    pub fn number(self) -> i64 {
        self as i64
    }
}

/// /5/0/5 Update Result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum UpdateResult {
    /// 0: initial value; set when a download starts.
    Initial,
    /// 1: firmware updated successfully.
    Success,
    /// 2: not enough flash memory for the package.
    NotEnoughFlash,
    /// 3: out of RAM during download.
    OutOfRam,
    /// 4: connection lost during download.
    ConnectionLost,
    /// 5: integrity check failure.
    IntegrityFailure,
    /// 6: unsupported package type.
    UnsupportedPackageType,
    /// 7: invalid URI.
    InvalidUri,
    /// 8: firmware update failed.
    UpdateFailed,
    /// 9: unsupported protocol.
    UnsupportedProtocol,
}

impl UpdateResult {
    /// The result with the specification's number.
    pub fn from_number(n: i64) -> Option<Self> {
        use UpdateResult::*;
        Some(match n {
            0 => Initial,
            1 => Success,
            2 => NotEnoughFlash,
            3 => OutOfRam,
            4 => ConnectionLost,
            5 => IntegrityFailure,
            6 => UnsupportedPackageType,
            7 => InvalidUri,
            8 => UpdateFailed,
            9 => UnsupportedProtocol,
            _ => return None,
        })
    }

    /// The specification's number.
    pub fn number(self) -> i64 {
        self as i64
    }
}

/// /5/0/9 Delivery Method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DeliveryMethod {
    /// 0: the device fetches the package from the Package URI.
    Pull,
    /// 1: the server writes the package to /5/0/0.
    Push,
    /// 2: either.
    Both,
}

impl DeliveryMethod {
    /// The method with the specification's number.
    pub fn from_number(n: i64) -> Option<Self> {
        Some(match n {
            0 => DeliveryMethod::Pull,
            1 => DeliveryMethod::Push,
            2 => DeliveryMethod::Both,
            _ => return None,
        })
    }

    /// The specification's number.
    pub fn number(self) -> i64 {
        self as i64
    }

    /// True when the server may push.
    pub fn allows_push(self) -> bool {
        self != DeliveryMethod::Pull
    }

    /// True when the device can pull.
    pub fn allows_pull(self) -> bool {
        self != DeliveryMethod::Push
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_unknown_numbers_are_refused() {
        for n in 0..=3 {
            assert_eq!(FirmwareState::from_number(n).unwrap().number(), n);
        }
        for n in 0..=9 {
            assert_eq!(UpdateResult::from_number(n).unwrap().number(), n);
        }
        for n in 0..=2 {
            assert_eq!(DeliveryMethod::from_number(n).unwrap().number(), n);
        }
        assert_eq!(FirmwareState::from_number(4), None);
        assert_eq!(UpdateResult::from_number(10), None);
        assert_eq!(DeliveryMethod::from_number(-1), None);
    }
}
