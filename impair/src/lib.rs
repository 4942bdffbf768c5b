//! fota-impair: a seeded, impaired UDP link for end-to-end tests and the fleet simulator.
//!
//! A [`Link`] is a UDP proxy on real sockets. Devices send to [`Link::local_addr`]; the link
//! forwards to the upstream (the engine) and carries the answers back, applying an
//! [`Impairment`] to each direction: loss (independent, or in bursts), duplication, reordering,
//! delay with jitter, a bandwidth limit, and blackouts (scheduled windows, or [`Link::blackout`]
//! from now). [`Link::stats`] counts what it did, per direction.
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
//! appeared), and every datagram draws the same amount whatever the impairment (the bursty-loss
//! chain from a second stream of its own, so a seed's other decisions are the same with or
//! without it). So the same seed, the same impairment and the same datagrams in the same order,
//! per flow and direction, give the same drops, duplicates, hold-backs and delays; log the seed
//! to replay a failing run. Blackouts and the bandwidth queue depend on time, not on the seed,
//! and datagrams the operating system drops before the link reads them shift the stream.
//!
//! # Bandwidth
//!
//! Each direction may have a [`Rate`] (bits per second), shared by all the link's flows as a
//! cell's radio is shared by its devices: NB-IoT gives roughly 200 kbit/s down and 60 kbit/s up
//! ([`Impairment::with_downlink_rate`], [`Impairment::with_uplink_rate`]; [`Impairment::with_rate`]
//! sets both). A datagram occupies its direction for `(length + DATAGRAM_OVERHEAD) × 8 / rate`
//! seconds, [`DATAGRAM_OVERHEAD`] being the 28 bytes of IPv4 and UDP headers, behind the
//! datagrams of every flow admitted before it (first in, first out); its delay and jitter count
//! from the moment its last bit is sent. A datagram that would wait longer than the rate's
//! [`queue_limit`](Rate::queue_limit) ([`DEFAULT_QUEUE_LIMIT`], 2 s, unless set) for its turn is
//! dropped (drop-tail) and counted in [`DirectionStats::queue_dropped`]; a datagram lost to
//! `loss` has taken its time on the link all the same. [`DirectionStats::bytes_forwarded`] and
//! [`DirectionStats::max_queue_delay`] show the rate at work. Only the flows of one link share
//! its rate: to model a cell, put the cell's devices behind one link.
//!
//! # Bursty loss
//!
//! Besides independent `loss`, [`Impairment::with_bursty_loss`] loses datagrams in runs, as
//! a [`GilbertElliott`] chain decides: a good and a bad state per direction per flow, moved at
//! every datagram, each with its own loss probability. [`GilbertElliott::from_mean`] builds it
//! from a mean loss and a mean run length (a tenth of the datagrams, in runs of three:
//! `from_mean(0.1, 3.0)`). A datagram is lost if either kind of loss drops it.
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
//! use fota_impair::{GilbertElliott, Impairment, Link, Rate};
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
//! // Later: an NB-IoT cell losing a tenth of the datagrams in runs of three, then a 5 s outage.
//! let cell = Impairment::none()
//!     .with_bursty_loss(GilbertElliott::from_mean(0.1, 3.0).unwrap())
//!     .with_uplink_rate(Rate::new(60_000))
//!     .with_downlink_rate(Rate::new(200_000));
//! link.set_impairment(cell);
//! link.blackout(Duration::from_secs(5));
//! # Ok(())
//! # }
//! ```

mod bursty;
mod conditions;
mod direction;
mod fate;
mod flow;
mod impairment;
mod link;
mod pipe;
mod rate;
mod schedule;
mod stats;
mod task;

/// The impairment model without sockets: seeded per-datagram decisions and the delay queue of
/// one direction of one flow, and the bandwidth queue of one direction. The [`Link`] runs it on
/// real UDP; a simulated network (fota-sim) runs the same model in process, on tokio's clock.
pub mod model {
    pub use crate::direction::Direction;
    pub use crate::fate::{Decisions, Fate};
    pub use crate::rate::{Admission, Bottleneck};
    pub use crate::schedule::{DelayQueue, Scheduled};
}

pub use bursty::{BurstyLossError, GilbertElliott};
pub use flow::FLOW_IDLE_TIMEOUT;
pub use impairment::{Blackout, Impairment};
pub use link::Link;
pub use rate::{DATAGRAM_OVERHEAD, DEFAULT_QUEUE_LIMIT, Rate};
pub use schedule::REORDER_HOLD;
pub use stats::{DirectionStats, LinkStats};
