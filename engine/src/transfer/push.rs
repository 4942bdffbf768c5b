//! The push download step: the package written to /5/0/0 with Block1, from byte 0 or, when the
//! device kept part of it (/5/0/26500), from the block of its first missing byte after Switch to
//! Download (/5/0/26501), or, on a device without 26500 still holding the sequence in RAM, from
//! the block in flight when an exchange gave up (`continuation`); then the wait for the device
//! to verify it.

use std::net::SocketAddr;

use bytes::Bytes;
use coap_lite::{RequestType, ResponseType};

use super::continuation::{CONTINUATIONS_PER_PUSH, Start, after_cut, refuses_block};
use super::outcome::TransferOutcome;
use super::resume::{ResumePoint, resume_offset};
use super::steps::{Attempt, StageError, Steps, at, device_failure};
use super::watch::FirmwareWatch;
use crate::coap::blockwise::{Block1Outcome, Block1Progress, Block1Upload, send_block1};
use crate::coap::message::code_name;
use crate::coap::qblock1::{Opening, SetPlan, send_q_block1};
use crate::coap::{CoapError, OutgoingRequest, PacketExt};
use crate::lwm2m::firmware::{self, FirmwareState, UpdateResult};
use crate::lwm2m::{ContentFormat, ManagementError};

impl Steps {
    /// Brings the package onto the device by push. `None` once the device reports Downloaded;
    /// otherwise the outcome that ends the attempt.
    pub(super) async fn push(
        &self,
        attempt: &mut Attempt<'_>,
        device: SocketAddr,
    ) -> Result<Option<TransferOutcome>, StageError> {
        let job = attempt.job;
        let known = self.book.get(&job.endpoint, &job.package.sha256);
        if let Some(point) = known {
            attempt.block_size = point.block_size;
        }
        let start = match known {
            Some(point) => self.go_on_from(attempt, device, point.acknowledged).await?,
            None => Start::Over,
        };
        let mut point = known.unwrap_or(ResumePoint {
            package: job.package.sha256,
            acknowledged: 0,
            high_water: 0,
            block_size: attempt.block_size,
        });
        tracing::debug!(endpoint = %job.endpoint, ?start, "writing the package");
        let response = self
            .write_package(attempt, &mut point, device, start)
            .await?;
        tracing::debug!(endpoint = %job.endpoint, ?response, "package written: waiting for Downloaded");
        let watch = attempt.watch();
        if let Some(code) = response.filter(|c| c.is_error()) {
            return self.refused_write(watch, code).await;
        }
        match watch
            .wait_until_settled(&self.management, self.config.verify_timeout)
            .await
        {
            Ok(FirmwareState::Downloaded) => Ok(None),
            Ok(_) => Ok(Some(device_failure(watch.result()))),
            Err(ManagementError::Missing(_)) => Ok(Some(TransferOutcome::Interrupted(
                "the device did not report Downloaded in time".into(),
            ))),
            Err(error) => Err(at("waiting for Downloaded")(error)),
        }
    }

    /// Where a push the device saw part of goes on from, `acknowledged` bytes taken: over the
    /// bytes its flash kept (26500), after Switch to Download; from the block in flight of a
    /// sequence cut on a device without 26500 that still says Downloading (`after_cut`); else
    /// from block 0.
    async fn go_on_from(
        &self,
        attempt: &mut Attempt<'_>,
        device: SocketAddr,
        acknowledged: usize,
    ) -> Result<Start, StageError> {
        let job = attempt.job;
        if job.resume
            && !attempt.lacks_26500
            && let Some(offset) = self.resume_at(device, attempt).await?
        {
            let endpoint = &job.endpoint;
            tracing::info!(%endpoint, offset, "resuming the push where the device stands");
            return Ok(Start::Resumed(offset));
        }
        if !std::mem::take(&mut attempt.sequence_cut) || !attempt.lacks_26500 {
            return Ok(Start::Over);
        }
        let watch = attempt.watch();
        let state = watch.state();
        let start = after_cut(state, watch.result(), acknowledged).unwrap_or(Start::Over);
        let why = format!("the attempt before was cut; State {state:?}");
        log_continuation(attempt, start, &why);
        Ok(start)
    }

    /// Where to go on from when the device kept part of the package: Transferred Bytes (as
    /// the watch's read of the instance just brought it, or read now), and the device
    /// switched back to Downloading over them unless it still is. `None` to start over (the
    /// device has no 26500, holds too little, or refuses to switch); a device that answers
    /// the read with 4.04 is taken to have no 26500 from then on.
    async fn resume_at(
        &self,
        device: SocketAddr,
        attempt: &mut Attempt<'_>,
    ) -> Result<Option<usize>, StageError> {
        let stored = match attempt.watch().take_transferred() {
            Some(stored) => Some(stored),
            None => self.read_transferred(device, attempt).await?,
        };
        let package_len = attempt.job.package.len();
        let Some(offset) = stored.and_then(|n| resume_offset(n, package_len, attempt.block_size))
        else {
            return Ok(None);
        };
        if attempt.watch().state() == FirmwareState::Downloading {
            return Ok(Some(offset));
        }
        match self
            .management
            .execute(device, firmware::SWITCH_TO_DOWNLOAD, None)
            .await
        {
            Ok(()) => Ok(Some(offset)),
            Err(ManagementError::Status { .. }) => Ok(None),
            Err(error) => Err(at("switching back to Downloading")(error)),
        }
    }

    /// Reads Transferred Bytes; `None` when the device answers with an error (4.04: it has
    /// no 26500, which the attempt remembers).
    async fn read_transferred(
        &self,
        device: SocketAddr,
        attempt: &mut Attempt<'_>,
    ) -> Result<Option<usize>, StageError> {
        match self
            .management
            .read_value(device, firmware::TRANSFERRED_BYTES)
            .await
        {
            Ok(value) => Ok(value.as_i64().ok().and_then(|n| usize::try_from(n).ok())),
            Err(ManagementError::Status { code, .. }) => {
                attempt.lacks_26500 |= code == ResponseType::NotFound;
                Ok(None)
            }
            Err(error) => Err(at("reading Transferred Bytes")(error)),
        }
    }

    /// Writes the package from `start` and returns the code of the device's last answer;
    /// `None` when a device whose exchange gave up had settled the download meanwhile. On a
    /// device without 26500, an exchange that gives up is continued, up to
    /// [`CONTINUATIONS_PER_PUSH`] times and each counted as an interruption, from where the
    /// device's State says (`after_cut`); a continued block refused is followed as
    /// `Start::after_refusal` says. The sequence stays cut (for the next attempt to go on
    /// from) when its last exchange gave up, or when the attempt ends around it.
    async fn write_package(
        &self,
        attempt: &mut Attempt<'_>,
        point: &mut ResumePoint,
        device: SocketAddr,
        mut start: Start,
    ) -> Result<Option<ResponseType>, StageError> {
        let mut continuations = 0;
        loop {
            if start == Start::Over {
                self.reset_for_download(attempt).await?;
            }
            attempt.sequence_cut = true;
            let written = self.send_package(attempt, point, device, start).await;
            let gave_up = matches!(&written, Err((_, error)) if exchange_gave_up(error));
            attempt.sequence_cut = gave_up;
            if gave_up {
                attempt.write_gave_up();
            }
            let next = match written {
                Err(_)
                    if gave_up && attempt.lacks_26500 && continuations < CONTINUATIONS_PER_PUSH =>
                {
                    continuations += 1;
                    match self.after_give_up(attempt, point.acknowledged).await? {
                        Some(next) => next,
                        None => return Ok(None),
                    }
                }
                Ok(Some(code))
                    if took_a_payload_whole(
                        code,
                        point.acknowledged,
                        attempt.job.package.len(),
                    ) =>
                {
                    // Reset from what the device made of the payload, and the package again
                    // with Block1 (`send_package` made the delivery's bursts stop).
                    attempt
                        .watch()
                        .read_now(&self.management)
                        .await
                        .map_err(at("reading State after a payload taken whole"))?;
                    Start::Over
                }
                Ok(Some(code)) if refuses_block(code) && point.acknowledged == start.offset() => {
                    let len = attempt.job.package.len();
                    let Some(next) = start.after_refusal(point.block_size, len) else {
                        return Ok(Some(code));
                    };
                    let why = format!("the device answered {}", code_name(code));
                    log_continuation(attempt, next, &why);
                    next
                }
                other => return other,
            };
            start = next;
        }
    }

    /// After an exchange of the write gave up on a device without 26500, `acknowledged` bytes
    /// taken: counts the interruption, reads State and Update Result, and says where to go on
    /// from (`after_cut`); `None` when the device settled the download meanwhile.
    async fn after_give_up(
        &self,
        attempt: &mut Attempt<'_>,
        acknowledged: usize,
    ) -> Result<Option<Start>, StageError> {
        attempt.interrupted();
        let watch = attempt.watch();
        let state = watch
            .read_now(&self.management)
            .await
            .map_err(at("reading State after a package write gave up"))?;
        let next = after_cut(state, watch.result(), acknowledged);
        if let Some(next) = next {
            log_continuation(
                attempt,
                next,
                &format!("an exchange gave up; State {state:?}"),
            );
        }
        Ok(next)
    }

    /// Before a download from block 0: unless the device is Idle with no result (as the watch
    /// just learned), it is reset, and State and Update Result are read again, so an old
    /// failure left in Update Result does not pass for this download's.
    async fn reset_for_download(&self, attempt: &mut Attempt<'_>) -> Result<(), StageError> {
        let reset = attempt.job.reset;
        let watch = attempt.watch();
        let was_reset = watch
            .reset_unless_idle(&self.management, reset)
            .await
            .map_err(at("resetting the device"))?;
        if was_reset {
            watch
                .read_now(&self.management)
                .await
                .map_err(at("reading State after the reset"))?;
        }
        Ok(())
    }

    /// Writes the package from `from` with Block1, or with Q-Block1 in sets of the
    /// delivery's burst, keeping the wire account and the resume point current after every
    /// block. Returns the code of the device's last answer. The burst is the capability
    /// plan's word that the device takes Q-Block1, so a write from block 0, or resumed where
    /// the device says it stands (26500), opens with a whole set; one from where the device is
    /// only inferred to stand opens with a payload alone and confirmable. A device that
    /// answers 4.02 Bad Option (the plan was wrong) has no Q-Block1: it is sent the same bytes
    /// with Block1 at once, and stop-and-wait for the rest of the delivery. So is one whose
    /// stack knows option 19 but not Q-Block1 (aiocoap's) and answers a payload with a success
    /// as if it were the whole package, once `write_package` has reset it. One that refuses
    /// a block of the opening set from block 0 with 4.08 (it takes none before block 0) is
    /// sent the body again at once, opening with block 0 alone.
    async fn send_package(
        &self,
        attempt: &mut Attempt<'_>,
        point: &mut ResumePoint,
        device: SocketAddr,
        from: Start,
    ) -> Result<Option<ResponseType>, StageError> {
        let job = attempt.job;
        let start = from.offset();
        let opening = match from.opens_with_set() {
            true => Opening::Set,
            false => Opening::Ask,
        };
        attempt.shrink_suspect_block_size();
        point.acknowledged = start;
        point.block_size = attempt.block_size;
        self.book.record(&job.endpoint, *point);
        let upload = Block1Upload {
            request: OutgoingRequest::new(RequestType::Put, &firmware::PACKAGE.segments())
                .with_payload(ContentFormat::Opaque.number(), Bytes::new()),
            body: job.package.bytes.clone(),
            block_size: attempt.block_size,
            start_offset: start,
            pacer: job.pacer.clone(),
        };
        let answers = &mut attempt.q_block1_answers;
        let wire = &mut attempt.wire;
        let size_answered = &mut attempt.block_size_answered;
        let mut record = |progress| match progress {
            Block1Progress::Sending { offset, len, again } => {
                self.shelf.record_pushed(len);
                let end = offset + len;
                let fresh = end.saturating_sub(point.high_water.max(offset));
                wire.package_first += fresh as u64;
                wire.package_resent += (len - fresh) as u64;
                if again {
                    wire.package_recovered += len as u64;
                }
                point.high_water = point.high_water.max(end);
                // Recorded before the answer: an attempt cut here must not count the
                // block as fresh again.
                self.book.record(&job.endpoint, *point);
            }
            Block1Progress::Acknowledged(acked) => {
                *size_answered = true;
                point.acknowledged = acked;
                self.book.record(&job.endpoint, *point);
            }
        };
        let endpoint = self.management.endpoint();
        let meter = &attempt.meter;
        let result = match attempt.burst {
            1 => send_block1(endpoint, device, &upload, meter, &mut record).await,
            burst => {
                let plan = SetPlan {
                    max_payloads: burst,
                    opening,
                    answers: &mut *answers,
                };
                let sent = send_q_block1(endpoint, device, &upload, plan, meter, &mut record).await;
                match sent {
                    Ok(outcome) if refused_at_start(&outcome, start, ResponseType::BadOption) => {
                        let endpoint_name = &job.endpoint;
                        tracing::info!(
                            endpoint = %endpoint_name,
                            "the device refused Q-Block1 (4.02): stop-and-wait from now on"
                        );
                        attempt.burst = 1;
                        send_block1(endpoint, device, &upload, meter, &mut record).await
                    }
                    Ok(outcome)
                        if outcome.response.response_code().is_some_and(|code| {
                            took_a_payload_whole(code, outcome.acknowledged, upload.body.len())
                        }) =>
                    {
                        let endpoint_name = &job.endpoint;
                        tracing::warn!(
                            endpoint = %endpoint_name,
                            "the device took a Q-Block1 payload as the whole package (its stack \
                             knows the option, not Q-Block1): stop-and-wait from block 0"
                        );
                        attempt.burst = 1;
                        Ok(outcome)
                    }
                    // From block 0: it takes no block before block 0 (RFC 7959 section 2.9.2).
                    Ok(outcome)
                        if opening == Opening::Set
                            && start == 0
                            && refused_at_start(
                                &outcome,
                                start,
                                ResponseType::RequestEntityIncomplete,
                            ) =>
                    {
                        let endpoint_name = &job.endpoint;
                        tracing::info!(
                            endpoint = %endpoint_name,
                            "the device takes no block before block 0: opening with it alone"
                        );
                        let plan = SetPlan {
                            max_payloads: burst,
                            opening: Opening::Ask,
                            answers,
                        };
                        send_q_block1(endpoint, device, &upload, plan, meter, &mut record).await
                    }
                    other => other,
                }
            }
        };
        self.book.record(&job.endpoint, *point);
        let outcome = result.map_err(|e| at("writing the package")(e.into()))?;
        attempt.block_size = outcome.block_size;
        point.block_size = outcome.block_size;
        self.book.record(&job.endpoint, *point);
        Ok(outcome.response.response_code())
    }

    /// The device answered a package block with an error: a failure it reports in Update
    /// Result, a device too busy for now, one that lost what it stored, or a refusal.
    async fn refused_write(
        &self,
        watch: &mut FirmwareWatch,
        code: ResponseType,
    ) -> Result<Option<TransferOutcome>, StageError> {
        let answered = crate::coap::message::code_name(code);
        match code {
            ResponseType::ServiceUnavailable => {
                return Ok(Some(TransferOutcome::Interrupted(format!(
                    "the device is busy: package write answered {answered}"
                ))));
            }
            ResponseType::RequestEntityIncomplete => {
                // The device does not hold what the block continues (it rebooted in between,
                // or lost bytes): the next attempt asks it (26500) where to go on from.
                return Ok(Some(TransferOutcome::Interrupted(format!(
                    "the device is not where the engine left it: package write answered {answered}"
                ))));
            }
            _ => {}
        }
        let result = watch
            .read_result(&self.management)
            .await
            .map_err(at("reading Update Result"))?;
        if result != UpdateResult::Initial {
            return Ok(Some(device_failure(result)));
        }
        Ok(Some(TransferOutcome::Refused(format!(
            "package write answered {answered}"
        ))))
    }
}

/// Whether a Q-Block1 upload from `start` ended with `code`, the device having taken nothing:
/// 4.02 Bad Option, it has no Q-Block1; 4.08 (without a list: a list is Q-Block1's to
/// handle) to an opening set, it refuses a block that comes before the one it expects.
fn refused_at_start(outcome: &Block1Outcome, start: usize, code: ResponseType) -> bool {
    outcome.acknowledged == start && outcome.response.response_code() == Some(code)
}

/// Whether a write ended with `code`, a success other than 2.31 Continue, `acknowledged` bytes
/// short of the package's `len`: the device took a Q-Block1 payload as a whole request body
/// (its stack knows option 19 but does not implement Q-Block1), so it holds one block as its
/// package, not the package.
fn took_a_payload_whole(code: ResponseType, acknowledged: usize, len: usize) -> bool {
    acknowledged < len
        && !code.is_error()
        && !matches!(code, ResponseType::Continue | ResponseType::UnKnown)
}

/// Whether a failed exchange gave up on the device's answer (RFC 7252's MAX_RETRANSMIT spent,
/// or an acknowledged request whose response never came), rather than failing otherwise.
fn exchange_gave_up(error: &ManagementError) -> bool {
    matches!(
        error,
        ManagementError::Coap(CoapError::Timeout { .. } | CoapError::ResponseTimeout { .. })
    )
}

/// Tells the log where a cut push goes on from, and `why`.
fn log_continuation(attempt: &Attempt<'_>, start: Start, why: &str) {
    let endpoint = &attempt.job.endpoint;
    match start {
        Start::InFlight(offset) | Start::AfterInFlight(offset) => tracing::info!(
            %endpoint, block = offset / attempt.block_size, offset, why,
            interruptions = attempt.interruptions, ?start,
            "continuing the Block1 sequence in a new exchange"
        ),
        Start::Over => tracing::info!(
            %endpoint, why, interruptions = attempt.interruptions,
            "the device lost the Block1 sequence: writing the package from block 0"
        ),
        Start::Resumed(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_success_short_of_the_package_is_a_payload_taken_whole_and_nothing_else_is() {
        let len = 60_000;
        for code in [ResponseType::Changed, ResponseType::Created] {
            assert!(took_a_payload_whole(code, 0, len), "{code:?} at block 0");
            assert!(took_a_payload_whole(code, 20_480, len), "{code:?} mid-way");
            assert!(!took_a_payload_whole(code, len, len), "{code:?} at the end");
        }
        for code in [
            ResponseType::Continue,
            ResponseType::BadOption,
            ResponseType::MethodNotAllowed,
            ResponseType::RequestEntityIncomplete,
            ResponseType::UnKnown,
        ] {
            assert!(!took_a_payload_whole(code, 0, len), "{code:?}");
        }
    }
}
