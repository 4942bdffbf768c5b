//! The LwM2M server: registration interface, device management operations towards registered
//! devices, and the content formats they speak. Knows CoAP messages, not UDP or retransmission.

pub mod content;
pub mod path;

pub use content::{ContentError, ContentFormat, Record, Value};
pub use path::LwM2mPath;
