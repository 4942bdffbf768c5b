//! `WireProbe`: a hook that sees every datagram one endpoint reads and sends, for benchmarks
//! that time the engine from its own side (when a block's ACK came in, when the next block went
//! out). Owns only the hook's contract; an endpoint without a probe pays one atomic load per
//! datagram.

use std::net::SocketAddr;

/// Sees the raw datagrams of one endpoint as they pass. Called on the endpoint's receive and
/// send paths, in the task that handles the datagram: it must be quick and must not block.
pub trait WireProbe: Send + Sync + 'static {
    /// A datagram was read from the socket, before it is parsed.
    fn received(&self, peer: SocketAddr, datagram: &[u8]);
    /// A datagram was handed to the socket.
    fn sent(&self, peer: SocketAddr, datagram: &[u8]);
}
