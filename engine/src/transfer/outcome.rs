//! What delivering a package to a device came to, in terms the task layer acts on, and what it
//! cost on the wire.

use std::time::Duration;

use crate::lwm2m::firmware::UpdateResult;

/// How one upgrade attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferOutcome {
    /// The device runs the target version.
    Upgraded {
        /// Version read from /3/0/3 after the reboot.
        version: String,
    },
    /// The device reported a failure in Update Result (no flash, integrity, ...).
    DeviceFailure(UpdateResult),
    /// The device reported the update a success (or came back on a new version), but runs
    /// another version than the one expected: it installed something, so the same package
    /// is not sent again; an operator looks at it (the firmware's reported version may be
    /// set wrong).
    UnexpectedVersion {
        /// The /3/0/3 string expected.
        expected: String,
        /// What it reports.
        found: String,
    },
    /// The device came back still on its old version, with no failure reported: the install
    /// did not happen.
    WrongVersion {
        /// What it should run.
        expected: String,
        /// What it reports.
        found: String,
    },
    /// The device refused an operation (error response) in a way no retry will fix.
    Refused(String),
    /// The link broke (timeouts, not registered, device silent): resume or retry later.
    Interrupted(String),
    /// The device holds the package and was not told to install: its task's gate was not
    /// open (a paused task, outside the update windows). A later attempt installs it.
    Held,
    /// The device went to sleep (queue mode) before it held the package, and the job yields
    /// while it sleeps ([`super::DeliveryJob::yields_while_asleep`]): a later delivery
    /// resumes from the device's point once it is awake.
    Asleep,
}

impl std::fmt::Display for TransferOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferOutcome::Upgraded { version } => write!(f, "upgraded to {version}"),
            TransferOutcome::DeviceFailure(result) => {
                write!(f, "the device reported Update Result {result:?}")
            }
            TransferOutcome::UnexpectedVersion { expected, found } => write!(
                f,
                "the device reports version {found:?} after the update, expected {expected:?}"
            ),
            TransferOutcome::WrongVersion { expected, found } => write!(
                f,
                "the device came back on {found:?}, not {expected:?}: the update did not happen"
            ),
            TransferOutcome::Refused(reason) => write!(f, "refused: {reason}"),
            TransferOutcome::Interrupted(reason) => write!(f, "interrupted: {reason}"),
            TransferOutcome::Held => write!(f, "holds the package, not told to install yet"),
            TransferOutcome::Asleep => write!(f, "asleep before the download's end"),
        }
    }
}

impl TransferOutcome {
    /// True when the device ended on the target version.
    pub fn is_success(&self) -> bool {
        matches!(self, TransferOutcome::Upgraded { .. })
    }
}

/// Bytes one delivery cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WireCount {
    /// Package bytes sent for the first time (each block counted once, however often the
    /// message layer retransmitted it).
    pub package_first: u64,
    /// Package bytes sent again: blocks repeated after an interruption or a renegotiation,
    /// and (Q-Block1) those the device listed missing and the probes of unanswered sets.
    pub package_resent: u64,
    /// The part of `package_resent` a Q-Block1 upload sent again within itself: blocks the
    /// device listed missing (4.08) and probes of sets left unanswered, what stop-and-wait
    /// leaves to the message layer's retransmissions. What remains of `package_resent` is
    /// what interruptions (and renegotiations) cost.
    pub package_recovered: u64,
    /// Every byte of every CoAP message the engine sent the device for this delivery, headers
    /// and retransmissions included: the package's Block1 requests, the reads, writes,
    /// executes and observe registrations around them, the ACKs of the device's
    /// notifications, and for pull the package server's Block2 answers. No UDP/IP headers.
    pub wire_sent: u64,
    /// Every byte of every CoAP message the engine received from the device for this
    /// delivery: its answers, notifications and (pull) Block2 requests.
    pub wire_received: u64,
    /// CoAP messages the engine retransmitted.
    pub retransmissions: u64,
}

/// The full account of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferReport {
    /// How it ended.
    pub outcome: TransferOutcome,
    /// What it cost.
    pub wire: WireCount,
    /// Block size used at the end.
    pub block_size: usize,
    /// Attempts that ended in an interruption and were resumed, and package writes whose
    /// exchange gave up and were continued in a new one (a device without 26500).
    pub interruptions: u32,
    /// Wall time from start to end.
    pub elapsed: Duration,
}
