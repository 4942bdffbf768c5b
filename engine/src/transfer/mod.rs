//! Delivering one package to one device: push with Block1 to /5/0/0 or pull through the
//! Package URI, breakpoint resume via /5/0/26500 after every interruption (or, on a device
//! without it, the Block1 sequence continued in a new exchange), queue-mode windows, the
//! Firmware Update state machine seen from the server, Update, and the version check after the
//! device comes back.

pub mod airtime;
mod continuation;
pub mod delivery;
mod install;
pub mod job;
pub mod outcome;
mod pull;
mod push;
pub mod resume;
pub mod shelf;
mod steps;
pub mod watch;

pub use airtime::Airtime;
pub use delivery::Delivery;
pub use job::{
    BlockLimits, DeliveryConfig, DeliveryJob, Gate, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, Method, Stage,
    SurveyedFirmware,
};
pub use outcome::{TransferOutcome, TransferReport, WireCount};
pub use resume::{ResumeBook, ResumePoint};
pub use shelf::{BlockCounts, PackageServer, PackageShelf, ShelvedPackage};
