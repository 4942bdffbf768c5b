//! Delivering one package to one device: push with Block1 to /5/0/0, the Firmware Update state
//! machine seen from the server, Update, and the version check after the device comes back.

pub mod outcome;
pub mod push;
pub mod watch;

pub use outcome::{TransferOutcome, TransferReport, WireCount};
pub use push::{PushConfig, PushJob, PushTransfer};
