//! `Trace`: what happened on a simulated network, folded into a digest, so two runs of one
//! seed can be compared exactly, with the last events kept readable for a failure report.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// Events kept readable.
const RECENT: usize = 64;

/// One thing the network did.
#[derive(Debug, Clone)]
pub enum TraceEvent {
    /// Queued for delivery, `copies` times (2: duplicated).
    Sent {
        from: SocketAddr,
        to: SocketAddr,
        payload: Bytes,
        copies: usize,
    },
    /// Dropped by the impairment's loss.
    Lost {
        from: SocketAddr,
        to: SocketAddr,
        payload: Bytes,
    },
    /// Dropped: the network was blacked out.
    Down {
        from: SocketAddr,
        to: SocketAddr,
        payload: Bytes,
    },
    /// Put in the destination socket's mailbox.
    Delivered {
        from: SocketAddr,
        to: SocketAddr,
        payload: Bytes,
    },
    /// Nobody holds the destination address (closed, rebound) or its mailbox was full.
    Unreachable {
        from: SocketAddr,
        to: SocketAddr,
        payload: Bytes,
    },
    /// A socket was given a new address (NAT rebinding).
    Rebound { old: SocketAddr, new: SocketAddr },
    /// Something the simulation did (a fault, a restart), named.
    Note(String),
}

/// The digest of every event with its time, how many there were, and the last few.
#[derive(Clone)]
pub struct Trace {
    digest: Sha256,
    events: u64,
    started: Option<Instant>,
    recent: VecDeque<String>,
    /// Every event, when [`FULL_TRACE`] is set in the environment (to find where two runs
    /// part).
    all: Option<Vec<String>>,
}

/// The environment variable that makes a trace keep every event.
pub const FULL_TRACE: &str = "FOTA_SIM_FULL_TRACE";

impl Default for Trace {
    fn default() -> Self {
        Trace {
            digest: Sha256::new(),
            events: 0,
            started: None,
            recent: VecDeque::with_capacity(RECENT),
            all: std::env::var_os(FULL_TRACE).map(|_| Vec::new()),
        }
    }
}

impl Trace {
    /// Folds `event`, which happened `at`, into the trace.
    pub fn record(&mut self, at: Instant, event: TraceEvent) {
        let started = *self.started.get_or_insert(at);
        let micros = at.saturating_duration_since(started).as_micros();
        let line = format!("{micros:>12} µs {event}");
        self.digest.update(line.as_bytes());
        if let Some(payload) = event.payload() {
            self.digest.update(payload);
        }
        self.events += 1;
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        if let Some(all) = &mut self.all {
            all.push(line.clone());
        }
        self.recent.push_back(line);
    }

    /// The digest of everything so far (hex).
    pub fn digest(&self) -> String {
        let digest = self.digest.clone().finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// How many events were recorded.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Every event, if the trace kept them ([`FULL_TRACE`]).
    pub fn all(&self) -> Option<&[String]> {
        self.all.as_deref()
    }

    /// The last events, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = &str> {
        self.recent.iter().map(String::as_str)
    }
}

impl TraceEvent {
    fn payload(&self) -> Option<&Bytes> {
        match self {
            TraceEvent::Sent { payload, .. }
            | TraceEvent::Lost { payload, .. }
            | TraceEvent::Down { payload, .. }
            | TraceEvent::Delivered { payload, .. }
            | TraceEvent::Unreachable { payload, .. } => Some(payload),
            TraceEvent::Rebound { .. } | TraceEvent::Note(_) => None,
        }
    }
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, from, to, len) = match self {
            TraceEvent::Sent {
                from,
                to,
                payload,
                copies,
            } => {
                let what = if *copies > 1 { "sent twice" } else { "sent" };
                (what, from, to, payload.len())
            }
            TraceEvent::Lost { from, to, payload } => ("lost", from, to, payload.len()),
            TraceEvent::Down { from, to, payload } => ("blacked out", from, to, payload.len()),
            TraceEvent::Delivered { from, to, payload } => ("delivered", from, to, payload.len()),
            TraceEvent::Unreachable { from, to, payload } => {
                ("unreachable", from, to, payload.len())
            }
            TraceEvent::Rebound { old, new } => return write!(f, "rebound {old} -> {new}"),
            TraceEvent::Note(note) => return write!(f, "{note}"),
        };
        write!(f, "{what} {from} -> {to} ({len} B)")
    }
}
