//! The LwM2M server: registration interface, whether registered devices are reachable now
//! (presence, queue mode), device management operations towards registered devices, and the
//! content formats they speak. Knows CoAP messages, not UDP or retransmission.

pub mod admission;
pub mod content;
pub mod firmware;
pub mod management;
pub mod path;
pub mod presence;
pub mod registration;
pub mod registry;
pub mod server;

pub use admission::{Admission, IdentityBinding};
pub use content::{ContentError, ContentFormat, Record, Value};
pub use management::{DeviceManagement, ManagementError};
pub use path::LwM2mPath;
pub use presence::Presence;
pub use registration::{Binding, Registration};
pub use registry::{EndpointEvents, RegistrationEvent, Registry};
pub use server::RegistrationInterface;
