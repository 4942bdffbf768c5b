//! `Retransmission`: the back-off of one confirmable message (RFC 7252 section 4.2): the first
//! wait drawn from `[ACK_TIMEOUT, ACK_TIMEOUT * ACK_RANDOM_FACTOR]`, doubled after each
//! silence, until MAX_RETRANSMIT retransmissions (or a lower limit the request sets) went
//! unanswered. Owns the datagram to repeat and its deadline; reads no clock.

use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use tokio::time::Instant;

use crate::coap::params::TransmissionParams;

/// One confirmable message waiting for its ACK or RST.
#[derive(Debug)]
pub struct Retransmission {
    /// The message as it went out, to send again unchanged.
    datagram: Bytes,
    /// Transmissions so far, the first one included.
    transmissions: u32,
    /// Most transmissions allowed.
    most: u32,
    /// The wait that ends at `deadline`.
    timeout: Duration,
    /// When silence means the message was lost.
    deadline: Instant,
}

impl Retransmission {
    /// `datagram` was first sent at `now`; it is repeated at most `params.max_retransmit`
    /// times, or `limit` when lower.
    pub fn start(
        datagram: Bytes,
        params: &TransmissionParams,
        limit: Option<u32>,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Self {
        let retransmits = limit.map_or(params.max_retransmit, |n| n.min(params.max_retransmit));
        let timeout = params.initial_timeout(rng);
        Retransmission {
            datagram,
            transmissions: 1,
            most: retransmits.saturating_add(1),
            timeout,
            deadline: now + timeout,
        }
    }

    /// When silence means the message was lost.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Transmissions so far, the first one included.
    pub fn transmissions(&self) -> u32 {
        self.transmissions
    }

    /// The deadline passed at `now` without an answer: the datagram to send again, with the
    /// wait doubled from `now`, or `None` when no transmission is left.
    pub fn on_timeout(&mut self, now: Instant) -> Option<Bytes> {
        if self.transmissions >= self.most {
            return None;
        }
        self.transmissions += 1;
        self.timeout = self.timeout.saturating_mul(2);
        self.deadline = now + self.timeout;
        Some(self.datagram.clone())
    }
}
