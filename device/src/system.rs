//! `DeviceSystem`: the device-side system API of the GTI white paper, as a trait. The LwM2M
//! client calls it; a real port implements it over the module's flash and radio, and
//! `SimulatedFlash` implements it in memory for tests and the fleet simulator.

/// Why a system call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SystemError {
    /// The package does not fit in the download partition.
    #[error("not enough flash: {needed} bytes needed, {available} free")]
    NotEnoughFlash { needed: usize, available: usize },
    /// A write left a hole: bytes must arrive in order.
    #[error("write at offset {offset} but only {saved} bytes are stored")]
    OutOfOrder { offset: usize, saved: usize },
    /// The stored package failed its integrity check.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// The package is of a kind the device cannot install.
    #[error("unsupported package: {0}")]
    Unsupported(String),
    /// Installing failed.
    #[error("update failed: {0}")]
    UpdateFailed(String),
}

/// The calls the white paper's device system API offers to the FOTA client.
pub trait DeviceSystem: Send + 'static {
    /// Current firmware version (/3/0/3).
    fn firmware_version(&self) -> String;
    /// Battery voltage in millivolts (/3/0/7).
    fn battery_voltage_mv(&self) -> u32;
    /// Battery level in percent (/3/0/9).
    fn battery_level(&self) -> u8;
    /// Radio signal strength in dBm (/4/0/2).
    fn signal_strength_dbm(&self) -> i32;
    /// Free memory for a package, in bytes (/3/0/10 reports it in KB).
    fn free_memory(&self) -> usize;
    /// Erases the download partition.
    fn erase(&mut self);
    /// Writes package bytes at `offset` of the download partition.
    fn write_bytes(&mut self, offset: usize, bytes: &[u8]) -> Result<(), SystemError>;
    /// Package bytes stored so far (/5/0/26500); survives a reboot.
    fn saved_bytes(&self) -> usize;
    /// Checks the stored package: format, size, hash (and, for a delta, the base image). A
    /// device may keep the image it rebuilt to check it, for Update to install.
    fn validate(&mut self) -> Result<(), SystemError>;
    /// Installs the validated package; the device runs the new version after its reboot.
    fn start_update(&mut self) -> Result<(), SystemError>;
}
