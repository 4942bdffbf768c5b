//! Which way a datagram travels through a link.

/// Which way a datagram travels through a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From a client (device) to the upstream (engine).
    Uplink,
    /// From the upstream (engine) back to a client (device).
    Downlink,
}
