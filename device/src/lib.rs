//! fota-device: the reference LwM2M device client of the FOTA engine (the white paper's device
//! system API as a trait, a simulated flash behind it) and a fleet simulator that runs thousands
//! of such devices in one process.

pub mod client;
pub mod dtls_client;
pub mod dtls_socket;
pub mod events;
pub mod firmware_update;
pub mod flash;
pub mod fleet;
pub mod patch;
pub mod pull;
pub mod qblock1;
pub mod rebuilt;
pub mod settings;
pub mod system;

pub use client::{Device, DeviceConfig};
pub use events::McuEvent;
pub use flash::SimulatedFlash;
pub use system::{DeviceSystem, SystemError};
