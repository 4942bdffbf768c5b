//! The LwM2M server: registration interface, whether registered devices are reachable now
//! (presence, queue mode), device management operations towards registered devices (and,
//! for integrators, the operations queued for sleeping devices and shared observations), the
//! types of the resources of the objects it knows, and the content formats devices speak.
//! Knows CoAP messages, not UDP or retransmission.

pub mod access;
pub mod admission;
pub mod content;
pub mod firmware;
pub mod management;
pub mod model;
pub mod observations;
pub mod operation;
pub mod path;
pub mod presence;
pub mod queued;
pub mod registration;
pub mod registry;
pub mod server;

pub use access::{
    DeviceAccess, DeviceFailure, DeviceOutline, FailureClass, LocalDevices, WakeUps, WokeUp,
};
pub use admission::{Admission, IdentityBinding};
pub use content::{ContentError, ContentFormat, Record, Value};
pub use management::{DeviceManagement, ManagementError};
pub use model::ResourceType;
pub use observations::{Observations, Observed, Watcher};
pub use operation::{DeviceOperation, Upgrades, Upgrading};
pub use path::LwM2mPath;
pub use presence::Presence;
pub use queued::{OperationQueue, OperationStatus, QueueError, QueuedOperation};
pub use registration::{Binding, Registration};
pub use registry::{EndpointEvents, RegistrationEvent, Registry};
pub use server::RegistrationInterface;
