//! The CoAP message layer (RFC 7252) with block-wise transfer (RFC 7959, and RFC 9177's
//! Q-Block1 bursts towards devices that take them), on one datagram
//! socket per endpoint (real UDP, or a simulated network's). coap-lite encodes and decodes packets; everything about exchanges,
//! retransmission, duplicates, NSTART and blocks is ours. The protocol itself lives in
//! [`proto`], free of I/O and clocks; [`endpoint`] drives it on a socket. Knows nothing of LwM2M.

pub mod block;
pub mod blockwise;
pub mod dtls;
pub mod endpoint;
pub mod error;
pub mod message;
pub mod params;
pub mod probe;
pub mod proto;
pub mod qblock1;
pub mod stats;
pub mod transport;

pub use block::BlockOption;
pub use coap_lite::{Packet, RequestType, ResponseType};
pub use endpoint::{Burst, Endpoint, HandlerFuture, Observation, RequestHandler, WeakEndpoint};
pub use error::CoapError;
pub use message::{IncomingRequest, OutgoingRequest, PacketExt, Response};
pub use params::{Congestion, DEFAULT_MIN_RTO, EndpointConfig, TransmissionParams};
pub use probe::WireProbe;
pub use stats::{Charge, RoundTrips, StatsSnapshot, WireMeter};
pub use transport::{DatagramSocket, Network};
