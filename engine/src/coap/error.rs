//! `CoapError`: why an exchange with a peer failed, as the endpoint's callers see it. Owns
//! nothing else.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Why an exchange with a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum CoapError {
    /// No ACK or response after every retransmission.
    #[error("no answer from {peer} after {transmissions} transmissions")]
    Timeout {
        peer: SocketAddr,
        transmissions: u32,
    },
    /// The peer acknowledged the request but the separate response never came.
    #[error("{peer} acknowledged the request but sent no response within {waited:?}")]
    ResponseTimeout { peer: SocketAddr, waited: Duration },
    /// The peer answered with a Reset message.
    #[error("{peer} rejected the message with Reset")]
    Reset { peer: SocketAddr },
    /// The message could not be encoded (too large, bad option).
    #[error("cannot encode the message: {0}")]
    Encode(String),
    /// A block-wise transfer broke a rule of RFC 7959.
    #[error("block-wise transfer with {peer}: {reason}")]
    Blockwise { peer: SocketAddr, reason: String },
    /// The socket failed.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// The endpoint was shut down while the exchange was outstanding.
    #[error("the CoAP endpoint is shut down")]
    Closed,
}
