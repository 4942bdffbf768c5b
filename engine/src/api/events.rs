//! `GET /v1/events`: live progress as server-sent events. One relay numbers every
//! [`CampaignEvent`] once (ids increase by one, in the order the campaigns sent them) and keeps
//! the last [`REPLAYED`] of them, so a client that reconnects with `Last-Event-ID` gets what it
//! missed; each client then follows the relay. Nothing is lost unannounced: when the relay
//! itself falls behind the campaigns, it numbers a `lagged` event in the feed where the lost
//! events were, and a client that falls behind the feed (or asks for events no longer kept)
//! gets a `lagged` event too; either tells the client to read the tasks it follows again. Owns
//! numbering, replay and the stream; the events themselves are the campaigns'.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, Weak};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::{broadcast, watch};

use super::ApiState;
use crate::campaign::{CampaignEvent, Campaigns};
use crate::sync::lock;

/// Events kept for clients that reconnect.
pub const REPLAYED: usize = 1024;
/// Events a slow client may fall behind before it is told it missed some.
const LIVE_BUFFER: usize = 4096;

/// One numbered event, serialized once for every client.
#[derive(Debug)]
pub struct Numbered {
    /// Position in the feed: 1, 2, 3, ...
    pub id: u64,
    /// SSE event name: `task` (a task's status), `device` (a device's progress in a task) or
    /// `lagged` (campaign events the relay missed).
    pub name: &'static str,
    /// The task or device progress, as JSON.
    pub data: String,
}

impl Numbered {
    fn to_sse(&self) -> Event {
        Event::default()
            .id(self.id.to_string())
            .event(self.name)
            .data(&self.data)
    }
}

/// The numbered feed of campaign events.
pub struct EventFeed {
    /// Numbering and replay, under one lock with the send, so a new follower's backlog and
    /// live events neither overlap nor leave a gap.
    state: Mutex<FeedState>,
    /// Every numbered event, to each follower.
    live: broadcast::Sender<Arc<Numbered>>,
}

struct FeedState {
    /// Id of the last event published.
    last_id: u64,
    /// The last [`REPLAYED`] events.
    recent: VecDeque<Arc<Numbered>>,
}

/// What a new follower starts from.
struct Start {
    /// Events after the client's `Last-Event-ID` still kept.
    backlog: VecDeque<Arc<Numbered>>,
    /// Events after its `Last-Event-ID` no longer kept.
    missed: u64,
    /// Events from now on.
    live: broadcast::Receiver<Arc<Numbered>>,
}

impl EventFeed {
    /// A feed of `campaigns`' events from now on, relayed by a task that ends with the feed.
    pub fn start(campaigns: &Campaigns) -> Arc<EventFeed> {
        EventFeed::relaying(campaigns.subscribe())
    }

    /// A feed of what `events` receives.
    fn relaying(events: broadcast::Receiver<CampaignEvent>) -> Arc<EventFeed> {
        let feed = Arc::new(EventFeed {
            state: Mutex::new(FeedState {
                last_id: 0,
                recent: VecDeque::with_capacity(REPLAYED),
            }),
            live: broadcast::channel(LIVE_BUFFER).0,
        });
        tokio::spawn(relay(Arc::downgrade(&feed), events));
        feed
    }

    fn publish_campaign(&self, event: &CampaignEvent) {
        let (name, data) = match event {
            CampaignEvent::Task(task) => ("task", serde_json::to_string(task)),
            CampaignEvent::Device(progress) => ("device", serde_json::to_string(progress)),
        };
        self.publish(name, data.expect("tasks and progress serialize"));
    }

    /// Numbers and keeps one event, and sends it to every follower.
    fn publish(&self, name: &'static str, data: String) {
        let mut state = lock(&self.state);
        state.last_id += 1;
        let numbered = Arc::new(Numbered {
            id: state.last_id,
            name,
            data,
        });
        if state.recent.len() == REPLAYED {
            state.recent.pop_front();
        }
        state.recent.push_back(numbered.clone());
        let _ = self.live.send(numbered);
    }

    /// Follows the feed from now on, after replaying what came after `after` (a client's
    /// `Last-Event-ID`).
    fn follow(&self, after: Option<u64>) -> Start {
        let state = lock(&self.state);
        let live = self.live.subscribe();
        let Some(after) = after.filter(|after| *after < state.last_id) else {
            return Start {
                backlog: VecDeque::new(),
                missed: 0,
                live,
            };
        };
        let backlog: VecDeque<_> = state
            .recent
            .iter()
            .filter(|event| event.id > after)
            .cloned()
            .collect();
        Start {
            missed: state.last_id - after - backlog.len() as u64,
            backlog,
            live,
        }
    }
}

/// Numbers every campaign event into the feed until the feed or the campaigns go; events it
/// fell too far behind to receive become one numbered `lagged` event in their place.
async fn relay(feed: Weak<EventFeed>, mut events: broadcast::Receiver<CampaignEvent>) {
    loop {
        let received = events.recv().await;
        let Some(feed) = feed.upgrade() else { return };
        match received {
            Ok(event) => feed.publish_campaign(&event),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "campaign events missed by the API's event feed");
                feed.publish(LAGGED, lagged_data(missed));
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// `GET /v1/events`: the feed as server-sent events, until the client or the API goes.
pub async fn stream(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let after = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok());
    let follower = Follower {
        start: state.feed.follow(after),
        shutdown: state.shutdown.clone(),
    };
    let events = futures_util::stream::unfold(follower, |mut follower| async move {
        let event = follower.next().await?;
        Some((Ok(event), follower))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// One client's position in the feed.
struct Follower {
    /// Backlog, gap and live events.
    start: Start,
    /// Turns true when the API stops: the stream ends so the connection can close.
    shutdown: watch::Receiver<bool>,
}

impl Follower {
    /// The next event for this client: a `lagged` notice of events it cannot get, then its
    /// backlog, then live events; `None` when the stream ends.
    async fn next(&mut self) -> Option<Event> {
        if self.start.missed > 0 {
            return Some(lagged(std::mem::take(&mut self.start.missed)));
        }
        if let Some(event) = self.start.backlog.pop_front() {
            return Some(event.to_sse());
        }
        tokio::select! {
            _ = self.shutdown.wait_for(|stop| *stop) => None,
            received = self.start.live.recv() => match received {
                Ok(event) => Some(event.to_sse()),
                Err(broadcast::error::RecvError::Lagged(missed)) => Some(lagged(missed)),
                Err(broadcast::error::RecvError::Closed) => None,
            },
        }
    }
}

/// Name of the event that tells a client it missed events: it should read the tasks it
/// follows again.
const LAGGED: &str = "lagged";

/// Data of a `lagged` event: how many events were missed.
fn lagged_data(missed: u64) -> String {
    format!("{{\"missed\":{missed}}}")
}

/// Tells one client it cannot get `missed` events (it fell too far behind the feed).
fn lagged(missed: u64) -> Event {
    Event::default().event(LAGGED).data(lagged_data(missed))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::campaign::DeviceProgress;

    fn progress(endpoint: &str) -> CampaignEvent {
        CampaignEvent::Device(DeviceProgress::new("task-1", endpoint, 0))
    }

    async fn next(live: &mut broadcast::Receiver<Arc<Numbered>>) -> Arc<Numbered> {
        tokio::time::timeout(Duration::from_secs(5), live.recv())
            .await
            .expect("an event in time")
            .expect("an event")
    }

    #[tokio::test]
    async fn events_the_relay_missed_are_a_numbered_lagged_event_in_their_place() {
        let (campaigns, events) = broadcast::channel(4);
        for i in 0..10 {
            campaigns.send(progress(&format!("dev-{i}"))).unwrap();
        }
        let feed = EventFeed::relaying(events);
        let mut live = feed.follow(None).live;

        let first = next(&mut live).await;
        assert_eq!((first.id, first.name), (1, LAGGED));
        assert_eq!(first.data, r#"{"missed":6}"#);
        for (id, endpoint) in (2..).zip(6..10) {
            let event = next(&mut live).await;
            assert_eq!((event.id, event.name), (id, "device"));
            assert!(
                event.data.contains(&format!("dev-{endpoint}")),
                "{}",
                event.data
            );
        }

        let replayed = feed.follow(Some(0));
        assert_eq!(replayed.missed, 0);
        let names: Vec<_> = replayed.backlog.iter().map(|e| (e.id, e.name)).collect();
        assert_eq!(
            names,
            [
                (1, LAGGED),
                (2, "device"),
                (3, "device"),
                (4, "device"),
                (5, "device")
            ]
        );
    }
}
