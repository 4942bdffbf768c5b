//! `send_q_block1`: sends one body to a peer with Q-Block1, through a [`Window`] on a
//! [`Burst`], as the module documentation (`super`) describes, keeping the caller told what
//! goes out and what the device confirmed ([`Block1Progress`]).

use std::net::SocketAddr;
use std::time::Duration;

use coap_lite::Packet;
use tokio::time::Instant;

use super::timing::Timing;
use super::window::{Reaction, Window};
use super::{MAX_RECOVERY_ROUNDS, Opening, SetPlan, blocks_of};
use crate::coap::block::{BlockOption, size_exponent};
use crate::coap::blockwise::{Block1Outcome, Block1Progress, Block1Upload};
use crate::coap::endpoint::{Burst, Endpoint};
use crate::coap::error::CoapError;
use crate::coap::message::OutgoingRequest;
use crate::coap::proto::exchange::Token;
use crate::coap::stats::WireMeter;

/// Sends `upload` to `peer` with Q-Block1 as `plan` says: in sets of its `max_payloads` (at
/// least 2), opening as its `opening` says, waiting for answers as long as its `answers` (which
/// the upload keeps teaching) say they take; telling `progress` every payload that goes out
/// (`again` for a block this upload sent before: one the device listed missing, or the probe
/// of a round left unanswered) and every block the device confirmed with every block before
/// it. Ends at 2.04, or at the first answer that is not Q-Block1's to handle (4.02 Bad Option
/// from a device without it, 4.08 without a list, 5.03, ...; a success without Q-Block1 before
/// the last block went out, from a device that took one payload as the whole body), which is
/// returned for the caller to decide, as [`crate::coap::blockwise::send_block1`] does. `Err`
/// when the device breaks the protocol (the reason says how), an exchange gives up, or
/// [`MAX_RECOVERY_ROUNDS`] pass without progress. Each round, answer and probe is traced
/// (`fota_engine::coap::qblock1=trace`), to see where an upload's time goes.
pub async fn send_q_block1(
    endpoint: &Endpoint,
    peer: SocketAddr,
    upload: &Block1Upload,
    plan: SetPlan<'_>,
    meter: &WireMeter,
    progress: impl FnMut(Block1Progress),
) -> Result<Block1Outcome, CoapError> {
    let fail = |reason: String| CoapError::Blockwise { peer, reason };
    size_exponent(upload.block_size).map_err(|e| fail(e.to_string()))?;
    let (len, size) = (upload.body.len(), upload.block_size);
    let start = upload.start_offset.min(len);
    if !start.is_multiple_of(size) {
        return Err(fail(format!(
            "start offset {start} is not a multiple of {size}"
        )));
    }
    let SetPlan {
        max_payloads,
        opening,
        answers,
    } = plan;
    if max_payloads < 2 {
        return Err(fail(format!(
            "sets of {max_payloads} payload are no bursts"
        )));
    }
    let first = (start / size) as u32;
    let window = Window::new(first, blocks_of(len, size), size, max_payloads);
    let mut sending = Sending {
        peer,
        burst: endpoint.burst(peer).await?,
        upload,
        request: tagged(&upload.request, len),
        window,
        meter,
        progress,
        acknowledged: start,
        sent_to: start,
        timing: Timing::new(endpoint, peer, answers),
        rounds: 0,
        exchange_lifetime: endpoint.config().params.exchange_lifetime(),
    };
    sending.run(opening).await
}

/// The request every payload is made from: non-confirmable, Size1 the whole body, a fresh
/// Request-Tag for this upload.
fn tagged(request: &OutgoingRequest, len: usize) -> OutgoingRequest {
    let mut request = request.clone();
    request.confirmable = false;
    request.block1 = None;
    request.size1 = u32::try_from(len).ok();
    request.request_tag = Some(crate::entropy::random::<[u8; 4]>().to_vec());
    request
}

/// One upload under way.
struct Sending<'a, 't, P> {
    /// The device.
    peer: SocketAddr,
    /// The payloads' requests and their answers.
    burst: Burst,
    /// The body.
    upload: &'a Block1Upload,
    /// What every payload's request is made from.
    request: OutgoingRequest,
    /// The payloads beyond what the device confirmed.
    window: Window,
    /// Where every byte each way is counted.
    meter: &'a WireMeter,
    /// Told what goes out and what the device confirmed.
    progress: P,
    /// Bytes the device confirmed it holds, with everything before.
    acknowledged: usize,
    /// One past the last byte this upload sent: a block below it goes out again.
    sent_to: usize,
    /// NON_TIMEOUT.
    timing: Timing<'t>,
    /// Recovery rounds since the device last confirmed a block.
    rounds: u32,
    /// EXCHANGE_LIFETIME: the longest a probe's answer is waited for.
    exchange_lifetime: Duration,
}

/// A round of non-confirmable payloads (the window's new blocks, the blocks a list named with
/// them), whose answer is
/// waited for.
struct Round {
    /// Its number ([`Window::start_round`]).
    number: u64,
    /// How many payloads it sent.
    payloads: usize,
    /// The block a probe sends again when the answer does not come: the first of a round
    /// that opens with blocks the device listed missing (the one it misses first goes again
    /// with the question), the last of one that sends blocks for the first time (the device's
    /// answer to it then speaks for the whole round).
    probed: u32,
    /// When its last payload went out.
    sent: Instant,
    /// When its answer is given up on and the round probed (NON_TIMEOUT after `sent`).
    deadline: Instant,
}

/// What the upload waits for.
enum Awaiting {
    /// Nothing: the next round goes out (so this is never waited on).
    Nothing,
    /// The answer to a round, until its deadline.
    Round(Round),
    /// The answer to a confirmable probe, sent again by the message layer until it comes or
    /// the probe gives up (its deadline is EXCHANGE_LIFETIME, for a probe acknowledged empty
    /// whose response never comes). An answer to an earlier payload that comes first (the
    /// late answer of the round probed) is taken as well, and the probe is then forgotten.
    Probe {
        /// The probe's token.
        token: Token,
        /// Its round.
        round: u64,
        /// When it is given up on.
        deadline: Instant,
    },
}

impl Awaiting {
    /// When the wait ends without an answer.
    fn deadline(&self) -> Instant {
        match self {
            Awaiting::Nothing => Instant::now(),
            Awaiting::Round(round) => round.deadline,
            Awaiting::Probe { deadline, .. } => *deadline,
        }
    }

    /// How many payloads the round waited for sent, and how long after the last of them its
    /// answer came, when an answer to round `answered` answers it in time (not a probe, whose
    /// round trip is one message's, nor a payload of an earlier round).
    fn timed(&self, answered: Option<u64>) -> Option<(usize, Duration)> {
        match self {
            Awaiting::Round(round) if Some(round.number) == answered => {
                Some((round.payloads, round.sent.elapsed()))
            }
            _ => None,
        }
    }
}

impl<P: FnMut(Block1Progress)> Sending<'_, '_, P> {
    /// The opening (the first payload alone and confirmable, or the first window), then round
    /// after round until the body is done.
    async fn run(&mut self, opening: Opening) -> Result<Block1Outcome, CoapError> {
        let mut due = Vec::new();
        let mut awaiting = match opening {
            Opening::Ask => self.probe(self.window.first()).await?,
            Opening::Set => {
                due = self.window.unsent().collect();
                Awaiting::Nothing
            }
        };
        loop {
            if !due.is_empty() || matches!(awaiting, Awaiting::Nothing) {
                awaiting = self.send_round(std::mem::take(&mut due)).await?;
            }
            let deadline = awaiting.deadline();
            let Some(packet) = self.burst.next_response(deadline, self.meter).await? else {
                awaiting = self.unanswered(awaiting).await?;
                continue;
            };
            let answered = self.window.round_of(&packet);
            let reaction = self
                .window
                .react(&packet, answered)
                .map_err(|r| self.fail(r))?;
            tracing::trace!(peer = %self.peer, ?answered, ?reaction, "answer");
            if reaction != Reaction::Stale
                && let Some((payloads, took)) = awaiting.timed(answered)
            {
                self.timing.answered(payloads, took);
            }
            match reaction {
                Reaction::Done => return Ok(self.done(packet)),
                Reaction::Stop => return Ok(self.outcome(packet)),
                Reaction::Stale => {}
                Reaction::Continue(held) => due = self.confirmed(held)?,
                Reaction::Resend { again, from } => {
                    self.recovery_round()?;
                    self.window.slide(from);
                    due = again.into_iter().chain(self.window.unsent()).collect();
                }
                Reaction::Smaller(size) => {
                    self.resize(size);
                    awaiting = self.probe(self.window.first()).await?;
                    continue;
                }
            }
            if let Awaiting::Probe { token, round, .. } = awaiting {
                if !due.is_empty() {
                    // An earlier payload's answer said what to send: the probe is moot.
                    self.burst.forget(&token);
                } else if Some(round) == answered {
                    awaiting = Awaiting::Nothing;
                }
            }
        }
    }

    /// Sends `blocks` back to back as a round, whose answer is then waited for NON_TIMEOUT.
    async fn send_round(&mut self, blocks: Vec<u32>) -> Result<Awaiting, CoapError> {
        let number = self.window.start_round();
        let payloads = blocks.len();
        let again = blocks
            .first()
            .is_some_and(|first| (*first as usize * self.window.size()) < self.sent_to);
        let probed = match again {
            true => blocks.first(),
            false => blocks.last(),
        };
        let probed = probed.copied().unwrap_or(self.window.end() - 1);
        for block in blocks {
            self.send(block).await?;
        }
        let sent = Instant::now();
        let wait = self.timing.non_timeout(payloads);
        tracing::trace!(peer = %self.peer, number, payloads, probed, ?wait, "round sent");
        Ok(Awaiting::Round(Round {
            number,
            payloads,
            probed,
            sent,
            deadline: sent + wait,
        }))
    }

    /// Nothing answered what the upload waited for by its deadline: a round is probed (one of
    /// its blocks again, confirmable: [`Round::probed`]); a probe is given up on.
    async fn unanswered(&mut self, awaiting: Awaiting) -> Result<Awaiting, CoapError> {
        let Awaiting::Round(round) = awaiting else {
            let waited = self.exchange_lifetime;
            return Err(CoapError::ResponseTimeout {
                peer: self.peer,
                waited,
            });
        };
        self.timing.timed_out();
        tracing::trace!(peer = %self.peer, round = round.number, "round unanswered: probed");
        self.recovery_round()?;
        self.probe(round.probed).await
    }

    /// The device holds every block before `held`: the account moves on, and the blocks of
    /// the window from `held` that were not sent yet are due.
    fn confirmed(&mut self, held: u32) -> Result<Vec<u32>, CoapError> {
        if held >= self.window.blocks() {
            return Err(self.fail(format!(
                "2.31 Continue for block {}, the body's last: 2.04 was due",
                held - 1
            )));
        }
        self.rounds = 0;
        self.acknowledged = (held as usize * self.window.size()).min(self.upload.body.len());
        (self.progress)(Block1Progress::Acknowledged(self.acknowledged));
        if held >= self.window.end() {
            // Every block sent is confirmed: answers about them are no longer waited for.
            self.burst.forget_all_but(0);
        }
        self.window.advance(held);
        Ok(self.window.unsent().collect())
    }

    /// Counts a round of recovery; `Err` past [`MAX_RECOVERY_ROUNDS`].
    fn recovery_round(&mut self) -> Result<(), CoapError> {
        self.rounds += 1;
        if self.rounds > MAX_RECOVERY_ROUNDS {
            return Err(self.fail(format!(
                "{MAX_RECOVERY_ROUNDS} rounds of recovery without the device confirming a block \
                 past {}",
                self.acknowledged
            )));
        }
        Ok(())
    }

    /// Goes on in blocks of `size` from what the device confirmed (4.13).
    fn resize(&mut self, size: usize) {
        let len = self.upload.body.len();
        let first = (self.acknowledged / size) as u32;
        self.window.resize(size, first, blocks_of(len, size));
        self.burst.forget_all_but(0);
    }

    /// Sends `block` non-confirmable.
    async fn send(&mut self, block: u32) -> Result<(), CoapError> {
        let request = self.payload(block).await?;
        let token = self.burst.send(&request, self.meter).await?;
        self.window.sent(block, Some(token));
        Ok(())
    }

    /// Sends `block` alone and confirmable, whose answer is then waited for: the first payload
    /// of the upload, and the probe of a round whose answer did not come.
    async fn probe(&mut self, block: u32) -> Result<Awaiting, CoapError> {
        let mut request = self.payload(block).await?;
        request.confirmable = true;
        let round = self.window.start_round();
        let token = self.burst.send(&request, self.meter).await?;
        self.window.sent(block, Some(token));
        let deadline = Instant::now() + self.exchange_lifetime;
        Ok(Awaiting::Probe {
            token,
            round,
            deadline,
        })
    }

    /// The request carrying `block`, once the upload's pacer lets its bytes go, told to
    /// `progress` as it goes out.
    async fn payload(&mut self, block: u32) -> Result<OutgoingRequest, CoapError> {
        let (size, upload) = (self.window.size(), self.upload);
        let body = &upload.body;
        let offset = block as usize * size;
        let end = (offset + size).min(body.len());
        if let Some(pacer) = &upload.pacer {
            pacer.before(end.saturating_sub(offset)).await;
        }
        let option = BlockOption::new(block, end < body.len(), size)
            .map_err(|e| self.fail(e.to_string()))?;
        let mut request = self.request.clone();
        request.q_block1 = Some(option);
        request.payload = body.slice(offset..end);
        let again = offset < self.sent_to;
        self.sent_to = self.sent_to.max(end);
        (self.progress)(Block1Progress::Sending {
            offset,
            len: end - offset,
            again,
        });
        Ok(request)
    }

    /// The body is complete.
    fn done(&mut self, response: Packet) -> Block1Outcome {
        self.acknowledged = self.upload.body.len();
        (self.progress)(Block1Progress::Acknowledged(self.acknowledged));
        self.outcome(response)
    }

    fn outcome(&self, response: Packet) -> Block1Outcome {
        Block1Outcome {
            response,
            acknowledged: self.acknowledged,
            block_size: self.window.size(),
        }
    }

    fn fail(&self, reason: String) -> CoapError {
        CoapError::Blockwise {
            peer: self.peer,
            reason: format!("Q-Block1: {reason}"),
        }
    }
}
