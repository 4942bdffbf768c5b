//! One direction of one flow: decides each arriving datagram's fate, delays it and sends it on.

use std::future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Instant, sleep_until};
use tracing::debug;

use crate::conditions::Conditions;
use crate::direction::Direction;
use crate::fate::{Decisions, Fate};
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
}

impl Pipe {
    /// The stage for `direction` whose decisions come from `decisions`.
    pub(crate) fn new(
        direction: Direction,
        decisions: Decisions,
        conditions: Arc<Conditions>,
        counters: Arc<LinkCounters>,
    ) -> Self {
        Self {
            direction,
            decisions,
            queue: DelayQueue::default(),
            conditions,
            counters,
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

    /// Decides `arrival`'s fate and queues it if it survives.
    fn admit(&mut self, arrival: Arrival) {
        self.counters().received.bump();
        // Draw first, so that a blackout does not shift the decisions of later datagrams.
        let fate = self.decisions.next(&self.conditions.impairment());
        if self.conditions.is_down(arrival.at) {
            self.counters().blacked_out.bump();
            return;
        }
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
            due: after(arrival.at, delay),
        };
        if self.queue.push(datagram, hold_back) {
            self.counters().reordered.bump();
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
            Ok(_) => self.counters().forwarded.bump(),
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
