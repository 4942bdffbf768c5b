//! fota-impair: a seeded, impaired UDP link for end-to-end tests and the fleet simulator.
//!
//! A [`Link`] is a UDP proxy on real sockets. Devices send to [`Link::local_addr`]; the link
//! forwards to the upstream (the engine) and carries the answers back, applying an
//! [`Impairment`] to each direction: loss, duplication, reordering, delay with jitter, and
//! blackouts (scheduled windows, or [`Link::blackout`] from now). [`Link::stats`] counts what it
//! did, per direction.
//!
//! # Flows, like a NAT
//!
//! Every client address gets its own upstream socket, so the engine sees one address per device
//! socket, and a device that comes back on a new socket shows up at a new address (NAT
//! rebinding). Answers from the upstream on that socket go back to that client; datagrams from
//! any other address are ignored. A mapping closes after [`FLOW_IDLE_TIMEOUT`] without a
//! datagram from its client.
//!
//! # Replaying a run
//!
//! Decisions are seeded. Each direction of each flow draws from its own stream, seeded from the
//! link's seed, the direction and the flow's ordinal (the order in which client addresses first
//! appeared), and every datagram draws the same amount whatever the impairment. So the same
//! seed, the same impairment and the same datagrams in the same order, per flow and direction,
//! give the same drops, duplicates, hold-backs and delays; log the seed to replay a failing
//! run. Blackouts depend on time, not on the seed, and datagrams the operating system drops
//! before the link reads them shift the stream.
//!
//! # Reordering
//!
//! A datagram held back is delivered right after the next datagram of the same direction and
//! flow, or, if none comes within [`REORDER_HOLD`] of its due time, late but in order; reordering
//! alone loses nothing. Jitter reorders too, as on a real network.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use fota_impair::{Impairment, Link};
//! use tokio::net::UdpSocket;
//!
//! # #[tokio::main]
//! # async fn main() -> std::io::Result<()> {
//! // Stand-in for the engine: an echo server.
//! let engine = UdpSocket::bind("127.0.0.1:0").await?;
//! let engine_addr = engine.local_addr()?;
//! tokio::spawn(async move {
//!     let mut buffer = [0; 1500];
//!     while let Ok((length, from)) = engine.recv_from(&mut buffer).await {
//!         let _ = engine.send_to(&buffer[..length], from).await;
//!     }
//! });
//!
//! // 20–30 ms each way, and down for a second, ten seconds in.
//! let impairment = Impairment::none()
//!     .with_delay(Duration::from_millis(20), Duration::from_millis(10))
//!     .with_blackout(Duration::from_secs(10), Duration::from_secs(1));
//! let link = Link::start(engine_addr, impairment, 42).await?;
//!
//! let device = UdpSocket::bind("127.0.0.1:0").await?;
//! device.send_to(b"hello", link.local_addr()).await?;
//! let mut buffer = [0; 1500];
//! let (length, _) = device.recv_from(&mut buffer).await?;
//! assert_eq!(&buffer[..length], b"hello");
//! assert_eq!(link.stats().uplink.forwarded, 1);
//!
//! // Later: a lossier radio, then a 5 s outage.
//! link.set_impairment(Impairment::lossy(0.2));
//! link.blackout(Duration::from_secs(5));
//! # Ok(())
//! # }
//! ```

mod conditions;
mod direction;
mod fate;
mod flow;
mod impairment;
mod link;
mod pipe;
mod schedule;
mod stats;
mod task;

/// The impairment model without sockets: seeded per-datagram decisions and the delay queue of
/// one direction of one flow. The [`Link`] runs it on real UDP; a simulated network (fota-sim)
/// runs the same model in process, on tokio's clock.
pub mod model {
    pub use crate::direction::Direction;
    pub use crate::fate::{Decisions, Fate};
    pub use crate::schedule::{DelayQueue, Scheduled};
}

pub use flow::FLOW_IDLE_TIMEOUT;
pub use impairment::{Blackout, Impairment};
pub use link::Link;
pub use schedule::REORDER_HOLD;
pub use stats::{DirectionStats, LinkStats};
