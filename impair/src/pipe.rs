//! One direction of one flow: decides each arriving datagram's fate, takes it through the
//! bandwidth queue its direction shares with the other flows, delays it and sends it on.

use std::future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Instant, sleep_until};
use tracing::debug;

use crate::conditions::{Conditions, lock};
use crate::direction::Direction;
use crate::fate::{Decisions, Fate};
use crate::rate::{Admission, Bottleneck, Rate};
use crate::schedule::{DelayQueue, Scheduled, after};
use crate::stats::{Counters, LinkCounters};

/// A datagram as it entered the link.
#[derive(Debug)]
pub(crate) struct Arrival {
    /// When the link received it.
    pub(crate) at: Instant,
    pub(crate) payload: Bytes,
}

impl Arrival {
    /// A datagram received just now.
    pub(crate) fn now(payload: &[u8]) -> Self {
        Self {
            at: Instant::now(),
            payload: Bytes::copy_from_slice(payload),
        }
    }
}

/// Where a direction's datagrams leave the link: sent from `socket` to `to`.
#[derive(Debug)]
pub(crate) struct Egress {
    pub(crate) socket: Arc<UdpSocket>,
    pub(crate) to: SocketAddr,
}

/// The impairing stage of one direction of one flow.
#[derive(Debug)]
pub(crate) struct Pipe {
    direction: Direction,
    decisions: Decisions,
    queue: DelayQueue,
    conditions: Arc<Conditions>,
    counters: Arc<LinkCounters>,
    /// The bandwidth queue of this direction, shared with every other flow's pipe of it.
    bottleneck: Arc<Mutex<Bottleneck>>,
}

impl Pipe {
    /// The stage for `direction` whose decisions come from `decisions` and whose datagrams
    /// queue for bandwidth in `bottleneck`.
    pub(crate) fn new(
        direction: Direction,
        decisions: Decisions,
        conditions: Arc<Conditions>,
        counters: Arc<LinkCounters>,
        bottleneck: Arc<Mutex<Bottleneck>>,
    ) -> Self {
        Self {
            direction,
            decisions,
            queue: DelayQueue::default(),
            conditions,
            counters,
            bottleneck,
        }
    }

    /// Impairs `arrivals` and sends them through `egress`, until the arrivals end.
    pub(crate) async fn run(mut self, mut arrivals: UnboundedReceiver<Arrival>, egress: Egress) {
        loop {
            let wakeup = self.queue.next_wakeup();
            tokio::select! {
                arrival = arrivals.recv() => match arrival {
                    Some(arrival) => self.admit(arrival),
                    None => return,
                },
                () = sleep_until_some(wakeup) => self.release(&egress).await,
            }
        }
    }

    fn counters(&self) -> &Counters {
        self.counters.of(self.direction)
    }

    /// Decides `arrival`'s fate, takes it through the bandwidth queue and queues it for
    /// delivery if it survives.
    fn admit(&mut self, arrival: Arrival) {
        self.counters().received.bump();
        let impairment = self.conditions.impairment();
        // Draw first, so that a blackout or a full queue does not shift the decisions of later
        // datagrams.
        let fate = self.decisions.next(&impairment);
        if self.conditions.is_down(arrival.at) {
            self.counters().blacked_out.bump();
            return;
        }
        // Through the queue before the loss: a datagram lost on the way took its time on the
        // link all the same, as on a radio.
        let Some(departs) = self.through_bottleneck(&arrival, impairment.rate(self.direction))
        else {
            return;
        };
        let Fate::Deliver {
            delay,
            duplicate,
            hold_back,
        } = fate
        else {
            self.counters().dropped.bump();
            return;
        };
        if duplicate {
            self.counters().duplicated.bump();
        }
        let datagram = Scheduled {
            payload: arrival.payload,
            copies: 1 + usize::from(duplicate),
            due: after(departs, delay),
        };
        if self.queue.push(datagram, hold_back) {
            self.counters().reordered.bump();
        }
    }

    /// When `arrival` has left the bandwidth queue, at `rate`: as it arrives if the direction is
    /// unlimited, never if the queue is full. A duplicate is made past the queue: the link
    /// carries the datagram once.
    fn through_bottleneck(&self, arrival: &Arrival, rate: Option<Rate>) -> Option<Instant> {
        let Some(rate) = rate else {
            return Some(arrival.at);
        };
        let admission = lock(&self.bottleneck).admit(arrival.at, arrival.payload.len(), &rate);
        match admission {
            Admission::Departs { at, waited } => {
                self.counters().queue_delay.see(waited);
                Some(at)
            }
            Admission::QueueFull => {
                self.counters().queue_dropped.bump();
                None
            }
        }
    }

    /// Sends every datagram that is due.
    async fn release(&mut self, egress: &Egress) {
        while let Some(payload) = self.queue.pop_due(Instant::now()) {
            self.send(&payload, egress).await;
        }
    }

    async fn send(&self, payload: &[u8], egress: &Egress) {
        if self.conditions.is_down(Instant::now()) {
            self.counters().blacked_out.bump();
            return;
        }
        match egress.socket.send_to(payload, egress.to).await {
            Ok(sent) => {
                self.counters().forwarded.bump();
                self.counters().bytes_forwarded.add(sent as u64);
            }
            Err(error) => {
                self.counters().send_errors.bump();
                debug!(direction = ?self.direction, to = %egress.to, %error, "impaired link: send failed");
            }
        }
    }
}

/// Sleeps until `wakeup`, or forever if there is none.
async fn sleep_until_some(wakeup: Option<Instant>) {
    match wakeup {
        Some(wakeup) => sleep_until(wakeup).await,
        None => future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::impairment::Impairment;
    use crate::stats::DirectionStats;

    const MS: Duration = Duration::from_millis(1);
    /// With the headers, 400 bytes: 50 ms at 64 kbit/s.
    const PAYLOAD: usize = 372;

    /// The pipes of one direction's flows, sharing their link's conditions, counters and
    /// bandwidth queue.
    struct Flows {
        conditions: Arc<Conditions>,
        counters: Arc<LinkCounters>,
        bottleneck: Arc<Mutex<Bottleneck>>,
    }

    impl Flows {
        fn new(impairment: Impairment) -> Self {
            Self {
                conditions: Arc::new(Conditions::new(impairment)),
                counters: Arc::default(),
                bottleneck: Arc::default(),
            }
        }

        fn pipe(&self, direction: Direction, flow: u64) -> Pipe {
            Pipe::new(
                direction,
                Decisions::new(1, direction, flow),
                Arc::clone(&self.conditions),
                Arc::clone(&self.counters),
                Arc::clone(&self.bottleneck),
            )
        }

        fn uplink(&self, flow: u64) -> Pipe {
            self.pipe(Direction::Uplink, flow)
        }

        fn stats(&self) -> DirectionStats {
            self.counters.snapshot().uplink
        }
    }

    fn arrival(at: Instant) -> Arrival {
        Arrival {
            at,
            payload: Bytes::from(vec![0; PAYLOAD]),
        }
    }

    fn uplink_at_64_kbit(queue_limit: Duration) -> Impairment {
        Impairment::none().with_uplink_rate(Rate::new(64_000).with_queue_limit(queue_limit))
    }

    /// When each datagram queued in `pipe` falls due, earliest first.
    fn due_times(pipe: &mut Pipe) -> Vec<Instant> {
        let mut due = Vec::new();
        while let Some(wakeup) = pipe.queue.next_wakeup() {
            while pipe.queue.pop_due(wakeup).is_some() {
                due.push(wakeup);
            }
        }
        due
    }

    #[test]
    fn two_flows_share_their_directions_bandwidth() {
        let t = Instant::now();
        let uplink = Flows::new(uplink_at_64_kbit(Duration::from_secs(2)));
        let (mut alice, mut bob) = (uplink.uplink(0), uplink.uplink(1));
        for _ in 0..2 {
            alice.admit(arrival(t));
            bob.admit(arrival(t));
        }
        assert_eq!(due_times(&mut alice), [t + 50 * MS, t + 150 * MS]);
        assert_eq!(due_times(&mut bob), [t + 100 * MS, t + 200 * MS]);
        assert_eq!(uplink.stats().max_queue_delay, 150 * MS);
    }

    #[test]
    fn a_rate_on_the_uplink_leaves_the_downlink_unlimited() {
        let t = Instant::now();
        let impairment = uplink_at_64_kbit(Duration::from_secs(2));
        let downlink = Flows::new(impairment);
        let mut pipe = downlink.pipe(Direction::Downlink, 0);
        pipe.admit(arrival(t));
        pipe.admit(arrival(t));
        assert_eq!(due_times(&mut pipe), [t, t], "the downlink is unlimited");
    }

    #[test]
    fn the_queue_limit_drops_the_tail_and_counts_it() {
        let t = Instant::now();
        let uplink = Flows::new(uplink_at_64_kbit(100 * MS));
        let (mut alice, mut bob) = (uplink.uplink(0), uplink.uplink(1));
        for _ in 0..3 {
            alice.admit(arrival(t));
        }
        bob.admit(arrival(t));
        bob.admit(arrival(t + 160 * MS));
        assert_eq!(
            due_times(&mut alice),
            [t + 50 * MS, t + 100 * MS, t + 150 * MS]
        );
        assert_eq!(
            due_times(&mut bob),
            [t + 210 * MS],
            "the drained queue takes more"
        );
        let stats = uplink.stats();
        assert_eq!((stats.received, stats.queue_dropped), (5, 1));
        assert_eq!(stats.max_queue_delay, 100 * MS);
    }

    #[test]
    fn the_propagation_delay_counts_from_the_departure() {
        let t = Instant::now();
        let impairment =
            uplink_at_64_kbit(Duration::from_secs(2)).with_delay(20 * MS, Duration::ZERO);
        let uplink = Flows::new(impairment);
        let mut pipe = uplink.uplink(0);
        pipe.admit(arrival(t));
        pipe.admit(arrival(t));
        assert_eq!(due_times(&mut pipe), [t + 70 * MS, t + 120 * MS]);
    }

    #[test]
    fn a_lost_datagram_took_its_time_on_the_link() {
        let t = Instant::now();
        let uplink = Flows::new(Impairment {
            loss: 1.0,
            ..uplink_at_64_kbit(Duration::from_secs(2))
        });
        let mut pipe = uplink.uplink(0);
        pipe.admit(arrival(t));
        uplink
            .conditions
            .set_impairment(uplink_at_64_kbit(Duration::from_secs(2)));
        pipe.admit(arrival(t));
        assert_eq!(due_times(&mut pipe), [t + 100 * MS]);
        assert_eq!(uplink.stats().dropped, 1);
    }
}
