//! `BlockClock`: a wire probe on the engine's socket that times every Block1 block of a push
//! from the engine's side: the engine's turnaround (from reading block k's ACK to handing block
//! k+1 to the socket: what the engine adds per block) and the round trip it sees (from sending a
//! block to reading its ACK: loopback, the device, and the wait in the engine's receive queue).
//! It also counts acknowledged blocks per 100 ms, for the sustained rate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fota_engine::coap::WireProbe;

/// Width of one bucket of the acknowledgement count.
pub const BUCKET: Duration = Duration::from_millis(100);
/// A turnaround at least this long is also kept with when it happened, to tell where slow
/// ones come from.
const SLOW: Duration = Duration::from_millis(100);

/// CoAP message type of a confirmable message (RFC 7252 section 3).
const CONFIRMABLE: u8 = 0;
/// CoAP message type of an acknowledgement.
const ACKNOWLEDGEMENT: u8 = 2;
/// Code 0.03 PUT: every block of a push.
const PUT: u8 = 0x03;
/// Response codes of class 2 (success: 2.31 Continue, 2.04 Changed) are 0x40..=0x5F.
const SUCCESS: std::ops::RangeInclusive<u8> = 0x40..=0x5F;

/// Times blocks as the engine sends and acknowledges them.
pub struct BlockClock {
    /// When the clock was made: bucket 0 starts here.
    started: Instant,
    /// Everything measured, behind one lock: the engine's threads call in per datagram.
    state: Mutex<Timings>,
}

/// What the clock measured.
#[derive(Debug, Default)]
pub struct Timings {
    /// Per device: the block in flight and when its last block was acknowledged.
    peers: HashMap<SocketAddr, PeerClock>,
    /// Engine turnarounds, in nanoseconds.
    pub turnaround_ns: Vec<u32>,
    /// Turnarounds of at least `SLOW`: when the next block went out, since the clock started,
    /// and how many of the device's blocks were acknowledged before it.
    pub slow: Vec<SlowTurnaround>,
    /// Round trips from first transmission to ACK, in nanoseconds.
    pub round_trip_ns: Vec<u32>,
    /// Blocks acknowledged in each `BUCKET` since the clock started.
    pub acked_per_bucket: Vec<u64>,
}

/// One turnaround of at least `SLOW`.
#[derive(Debug, Clone, Copy)]
pub struct SlowTurnaround {
    /// When the block after it went out, since the clock started.
    pub at: Duration,
    /// Blocks of this device acknowledged before it.
    pub block: u32,
}

/// The block exchange with one device.
#[derive(Debug, Default)]
struct PeerClock {
    /// Blocks acknowledged so far.
    acked: u32,
    /// Message id and first transmission of the block in flight.
    in_flight: Option<(u16, Instant)>,
    /// When the last block was acknowledged, until the next one goes out.
    acked_at: Option<Instant>,
}

impl BlockClock {
    /// A clock expecting about `blocks` blocks (room for the samples is reserved up front, so
    /// the engine's threads do not copy large vectors while they are timed).
    pub fn new(blocks: usize) -> Self {
        BlockClock {
            started: Instant::now(),
            state: Mutex::new(Timings {
                turnaround_ns: Vec::with_capacity(blocks),
                round_trip_ns: Vec::with_capacity(blocks),
                ..Timings::default()
            }),
        }
    }

    /// Everything measured so far; the clock starts over empty.
    pub fn take(&self) -> Timings {
        std::mem::take(&mut *self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Type, code and message id of a CoAP datagram.
fn header(datagram: &[u8]) -> Option<(u8, u8, u16)> {
    let [first, code, id_high, id_low, ..] = *datagram else {
        return None;
    };
    Some((
        (first >> 4) & 0x03,
        code,
        u16::from_be_bytes([id_high, id_low]),
    ))
}

fn nanos(duration: Duration) -> u32 {
    u32::try_from(duration.as_nanos()).unwrap_or(u32::MAX)
}

impl WireProbe for BlockClock {
    fn sent(&self, peer: SocketAddr, datagram: &[u8]) {
        let Some((CONFIRMABLE, code, id)) = header(datagram) else {
            return;
        };
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Timings {
            peers,
            turnaround_ns,
            slow,
            ..
        } = &mut *state;
        let clock = peers.entry(peer).or_default();
        if code != PUT {
            // Another operation in between: the next block does not follow an ACK directly.
            clock.acked_at = None;
            return;
        }
        if clock.in_flight.is_some_and(|(sent, _)| sent == id) {
            return; // a retransmission of the block in flight
        }
        if let Some(acked) = clock.acked_at.take() {
            turnaround_ns.push(nanos(now - acked));
            if now - acked >= SLOW {
                slow.push(SlowTurnaround {
                    at: now - self.started,
                    block: clock.acked,
                });
            }
        }
        clock.in_flight = Some((id, now));
    }

    fn received(&self, peer: SocketAddr, datagram: &[u8]) {
        let Some((ACKNOWLEDGEMENT, code, id)) = header(datagram) else {
            return;
        };
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Timings {
            peers,
            round_trip_ns,
            acked_per_bucket,
            ..
        } = &mut *state;
        let Some(clock) = peers.get_mut(&peer) else {
            return;
        };
        let Some((_, sent)) = clock.in_flight.filter(|(in_flight, _)| *in_flight == id) else {
            return;
        };
        clock.in_flight = None;
        if !SUCCESS.contains(&code) {
            return;
        }
        clock.acked_at = Some(now);
        clock.acked += 1;
        round_trip_ns.push(nanos(now - sent));
        let bucket = ((now - self.started).as_nanos() / BUCKET.as_nanos()) as usize;
        if acked_per_bucket.len() <= bucket {
            acked_per_bucket.resize(bucket + 1, 0);
        }
        acked_per_bucket[bucket] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(message_type: u8, code: u8, id: u16) -> Vec<u8> {
        let [high, low] = id.to_be_bytes();
        vec![0x40 | (message_type << 4), code, high, low]
    }

    #[test]
    fn blocks_are_timed_once_however_often_they_are_retransmitted() {
        let clock = BlockClock::new(4);
        let device: SocketAddr = "127.0.0.1:9".parse().unwrap();
        clock.sent(device, &datagram(CONFIRMABLE, PUT, 1));
        clock.sent(device, &datagram(CONFIRMABLE, PUT, 1));
        clock.received(device, &datagram(ACKNOWLEDGEMENT, 0x5F, 1));
        clock.sent(device, &datagram(CONFIRMABLE, PUT, 2));
        clock.received(device, &datagram(ACKNOWLEDGEMENT, 0x44, 2));
        // A read after the last block is no block turnaround.
        clock.sent(device, &datagram(CONFIRMABLE, 0x01, 3));
        clock.received(device, &datagram(ACKNOWLEDGEMENT, 0x45, 3));
        let timings = clock.take();
        assert_eq!(timings.round_trip_ns.len(), 2);
        assert_eq!(timings.turnaround_ns.len(), 1);
        assert_eq!(timings.acked_per_bucket.iter().sum::<u64>(), 2);
    }
}
