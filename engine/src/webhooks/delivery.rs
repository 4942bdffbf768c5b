//! Delivering one subscription's events: its outbox in the store (an entry per event not yet
//! acknowledged, written with the event itself), and the worker that posts them one at a time
//! in id order, signed, until the receiver answers 2xx. A failed attempt is tried again after
//! the backoff; after the last attempt the event is dead-lettered (kept, listed, redelivered
//! on request) and the next one goes. The last attempts are kept for the API. An entry leaves
//! the outbox only once acknowledged or dead-lettered, in one batch with the attempt's record,
//! so a restart, even a kill, loses none: at worst an acknowledged event is sent again, with
//! the same id.

use std::collections::VecDeque;
use std::sync::Weak;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::http::Answer;
use super::{Shared, signature};
use crate::clock::UnixMillis;
use crate::journal::Event;
use crate::store::{Batch, StoreError, StoreExt};

/// Attempts kept per subscription for the API.
pub const ATTEMPTS_KEPT: usize = 20;

/// An event waiting for its receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// The event, as it is posted.
    pub event: Event,
    /// Attempts that failed so far.
    pub failures: u32,
    /// When the next attempt may go.
    pub next_at: UnixMillis,
}

/// An event its receiver did not take within the attempts allowed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The event.
    pub event: Event,
    /// Attempts made.
    pub attempts: u32,
    /// What the last one came to.
    pub error: String,
    /// When it was given up.
    pub dead_at: UnixMillis,
}

/// One attempt to deliver an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// The event's id.
    pub event_id: u64,
    /// The event's kind.
    pub kind: String,
    /// When the attempt was made.
    pub at: UnixMillis,
    /// The receiver's status, when it answered.
    pub status: Option<u16>,
    /// Why the attempt failed, when it did.
    pub error: Option<String>,
}

/// Key prefix of a subscription's outbox.
pub(super) fn outbox(subscription: &str) -> String {
    format!("hook/out/{subscription}/")
}

/// Key prefix of a subscription's dead letters.
pub(super) fn dead_letters(subscription: &str) -> String {
    format!("hook/dead/{subscription}/")
}

/// Key of a subscription's last attempts.
pub(super) fn attempts_key(subscription: &str) -> String {
    format!("hook/log/{subscription}")
}

/// Key of event `id` under `prefix` (fixed width: keys sort as ids do).
pub(super) fn entry_key(prefix: &str, id: u64) -> String {
    format!("{prefix}{id:020}")
}

/// What the worker does next.
enum Step {
    /// Post this attempt.
    Post(Post),
    /// Nothing due: wait until then (or until woken; `None`: until woken).
    Wait(Option<Instant>),
    /// The subscription or the service is gone.
    Stop,
}

/// An attempt ready to go, holding nothing of the service.
struct Post {
    pending: Pending,
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    client: super::http::Client,
}

/// Delivers subscription `id`'s outbox until the subscription or the service goes; `wake`
/// tells it something changed (an event added, a redelivery). It holds the service only while
/// it reads or writes the store, never while it waits or posts.
pub(super) async fn run(
    shared: Weak<Shared>,
    id: String,
    wake: std::sync::Arc<tokio::sync::Notify>,
) {
    loop {
        let step = match shared.upgrade() {
            Some(shared) => next_step(&shared, &id),
            None => Step::Stop,
        };
        match step {
            Step::Stop => return,
            Step::Wait(None) => wake.notified().await,
            Step::Wait(Some(until)) => {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => {}
                    () = wake.notified() => {}
                }
            }
            Step::Post(post) => {
                let answer = post.client.post(&post.url, post.headers, post.body).await;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                if let Err(error) = settle(&shared, &id, post.pending, answer) {
                    tracing::error!(subscription = %id, %error, "webhook attempt not recorded");
                }
            }
        }
    }
}

/// The first event of the outbox, as an attempt when it is due.
fn next_step(shared: &Shared, id: &str) -> Step {
    let Some((url, secret)) = shared.target(id) else {
        return Step::Stop;
    };
    let first = shared
        .store
        .scan_after::<Pending>(&outbox(id), None, 1)
        .map(|mut first| first.pop());
    let pending = match first {
        Ok(Some((_, pending))) => pending,
        Ok(None) => return Step::Wait(None),
        Err(error) => {
            tracing::error!(subscription = %id, %error, "webhook outbox not read");
            let retry = shared.clock.now() + shared.config.backoff.first.as_millis() as u64;
            return Step::Wait(Some(shared.clock.instant_at(retry)));
        }
    };
    let now = shared.clock.now();
    if pending.next_at > now {
        return Step::Wait(Some(shared.clock.instant_at(pending.next_at)));
    }
    // Shown to nobody before it is on disk: its id is never given to another event.
    if let Err(error) = shared.journal.make_durable(pending.event.id) {
        tracing::error!(%error, "the journal could not be made durable");
        return Step::Wait(Some(shared.clock.instant_at(now + 1_000)));
    }
    let body = serde_json::to_vec(&pending.event).expect("events serialize");
    let headers = vec![
        (
            signature::HEADER,
            signature::sign(secret.as_bytes(), now / 1000, &body),
        ),
        ("Fota-Event-Id", pending.event.id.to_string()),
        ("Fota-Event-Kind", pending.event.kind.clone()),
    ];
    Step::Post(Post {
        pending,
        url,
        headers,
        body,
        client: shared.client.clone(),
    })
}

/// Records what an attempt came to: acknowledged, tried again later, or dead-lettered; with
/// the attempt in the subscription's log, in one batch.
fn settle(
    shared: &Shared,
    id: &str,
    mut pending: Pending,
    answer: Answer,
) -> Result<(), StoreError> {
    let now = shared.clock.now();
    let (status, error) = match answer {
        Answer::Status(status) if (200..300).contains(&status) => (Some(status), None),
        Answer::Status(status) => (Some(status), Some(format!("answered {status}"))),
        Answer::Failed(error) => (None, Some(error)),
    };
    let mut batch = Batch::new();
    log_attempt(
        shared,
        id,
        &mut batch,
        Attempt {
            event_id: pending.event.id,
            kind: pending.event.kind.clone(),
            at: now,
            status,
            error: error.clone(),
        },
    )?;
    let key = entry_key(&outbox(id), pending.event.id);
    let left_outbox = match error {
        None => {
            batch.remove(key);
            true
        }
        Some(error) => {
            pending.failures += 1;
            if pending.failures >= shared.config.max_attempts {
                batch.remove(key);
                bury(id, pending, error, now, &mut batch);
                true
            } else {
                let wait = shared.config.backoff.jittered(pending.failures);
                pending.next_at = now + wait.as_millis() as u64;
                batch.put(key, &pending);
                false
            }
        }
    };
    shared.store.apply(batch)?;
    if left_outbox {
        shared.outbox_changed(id, -1);
    }
    Ok(())
}

/// Adds `attempt` to subscription `id`'s log in `batch`, the oldest going past
/// [`ATTEMPTS_KEPT`].
fn log_attempt(
    shared: &Shared,
    id: &str,
    batch: &mut Batch,
    attempt: Attempt,
) -> Result<(), StoreError> {
    let mut log: VecDeque<Attempt> = shared.store.get(&attempts_key(id))?.unwrap_or_default();
    if log.len() == ATTEMPTS_KEPT {
        log.pop_front();
    }
    log.push_back(attempt);
    batch.put(attempts_key(id), &log);
    Ok(())
}

/// Dead-letters `pending` after its last attempt failed with `error`, in `batch`.
fn bury(id: &str, pending: Pending, error: String, now: UnixMillis, batch: &mut Batch) {
    tracing::warn!(subscription = %id, event = pending.event.id, %error, "webhook delivery dead-lettered");
    let key = entry_key(&dead_letters(id), pending.event.id);
    let dead = DeadLetter {
        event: pending.event,
        attempts: pending.failures,
        error,
        dead_at: now,
    };
    batch.put(key, &dead);
}

/// Moves every dead letter of subscription `id` back to its outbox, due now; returns how
/// many. They keep their ids, so they go before the events that came after them.
pub(super) fn requeue(shared: &Shared, id: &str, now: UnixMillis) -> Result<usize, StoreError> {
    let dead: Vec<(String, DeadLetter)> =
        shared
            .store
            .scan_after(&dead_letters(id), None, usize::MAX)?;
    let mut batch = Batch::new();
    for (key, letter) in &dead {
        batch.remove(key.as_str());
        let pending = Pending {
            event: letter.event.clone(),
            failures: 0,
            next_at: now,
        };
        batch.put(entry_key(&outbox(id), letter.event.id), &pending);
    }
    shared.store.apply(batch)?;
    shared.outbox_changed(id, dead.len() as isize);
    Ok(dead.len())
}
