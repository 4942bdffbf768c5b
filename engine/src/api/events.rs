//! `GET /v1/events`: the engine's journal ([`crate::journal`]) as server-sent events. An
//! event's SSE id is its journal id and its name its kind (`task`, `device`, `device_failed`,
//! `failure_rate_alarm`, `cell_paused`, `registration`); ids stay valid across a restart, so a
//! client that reconnects with `Last-Event-ID`, to this engine or to it started again, gets
//! exactly the events after that id. Nothing is lost unannounced: a client that asks for
//! events the journal no longer keeps, or falls further behind than it keeps, gets a `lagged`
//! event (`{"missed": N}`, no id) in their place, telling it to read the tasks it follows
//! again. Owns the stream only; numbering and retention are the journal's.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::watch;

use super::ApiState;
use crate::journal::{Event, Journal};

/// Events read from the journal at once for one client.
const PAGE: usize = 256;

/// `GET /v1/events`: the journal from after the client's `Last-Event-ID` (from now without
/// one) as server-sent events, until the client or the API goes.
pub async fn stream(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let journal = state.platform.journal.clone();
    let last = journal.last_id();
    let after = last_event_id(&headers).map_or(last, |after| after.min(last));
    let follower = Follower {
        journal,
        after,
        page: VecDeque::new(),
        shutdown: state.shutdown.clone(),
    };
    let events = futures_util::stream::unfold(follower, |mut follower| async move {
        let next = follower.next().await?;
        Some((Ok(next.to_sse()), follower))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// The id in a `Last-Event-ID` header, when it holds one.
fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// One client's position in the journal.
struct Follower {
    journal: Journal,
    /// Id of the last event sent (or skipped as missed).
    after: u64,
    /// Events read and not yet sent.
    page: VecDeque<Event>,
    /// Turns true when the API stops: the stream ends so the connection can close.
    shutdown: watch::Receiver<bool>,
}

/// What a client is sent next.
#[derive(Debug, PartialEq)]
enum Next {
    /// An event of the journal.
    Event(Event),
    /// This many events are no longer kept.
    Lagged(u64),
}

impl Follower {
    /// The next thing for this client: a notice of events no longer kept, else the next
    /// event of the journal once it is on disk; `None` when the stream ends.
    async fn next(&mut self) -> Option<Next> {
        loop {
            if let Some(event) = self.page.front() {
                let missed = event.id.saturating_sub(self.after + 1);
                self.after = event.id - 1;
                if missed > 0 {
                    return Some(Next::Lagged(missed));
                }
                let event = self.page.pop_front()?;
                self.after = event.id;
                return Some(Next::Event(event));
            }
            match self.journal.read_after(self.after, PAGE) {
                Ok(events) if !events.is_empty() => {
                    self.page = events.into();
                    continue;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(%error, "the event stream could not read the journal");
                    return None;
                }
            }
            tokio::select! {
                _ = self.shutdown.wait_for(|stop| *stop) => return None,
                () = self.journal.wait_after(self.after) => {}
            }
        }
    }
}

impl Next {
    fn to_sse(&self) -> SseEvent {
        match self {
            Next::Event(event) => SseEvent::default()
                .id(event.id.to_string())
                .event(&event.kind)
                .data(event.data.as_str()),
            Next::Lagged(missed) => SseEvent::default()
                .event(LAGGED)
                .data(format!("{{\"missed\":{missed}}}")),
        }
    }
}

/// Name of the event that tells a client it missed events: it should read the tasks it
/// follows again.
const LAGGED: &str = "lagged";

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::clock::Clock;
    use crate::journal::{EventData, NewEvent};
    use crate::store::{Batch, SledStore, Store};

    fn ids(nexts: &[Next]) -> Vec<String> {
        nexts
            .iter()
            .map(|next| match next {
                Next::Event(event) => event.id.to_string(),
                Next::Lagged(missed) => format!("lagged {missed}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_client_behind_the_journals_retention_is_told_what_it_missed_then_gets_the_rest() {
        let store: Arc<dyn Store> = Arc::new(SledStore::temporary().unwrap());
        let journal = Journal::keeping(store, Clock::starting_at(0), 3).unwrap();
        for n in 0..6 {
            let event = NewEvent {
                kind: "task",
                data: EventData::of(&json!({ "n": n })),
            };
            journal.append(Batch::new(), vec![event]).unwrap();
        }
        let (_stop, shutdown) = watch::channel(false);
        let mut follower = Follower {
            journal,
            after: 1,
            page: VecDeque::new(),
            shutdown,
        };
        let mut nexts = Vec::new();
        for _ in 0..4 {
            nexts.push(follower.next().await.unwrap());
        }
        assert_eq!(ids(&nexts), ["lagged 2", "4", "5", "6"]);
    }
}
