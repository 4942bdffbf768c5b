//! Webhooks: integrators subscribe a URL to kinds of the journal's events (a task's status, a
//! device that failed and why, a failure-rate alarm, a paused cell; every device's progress
//! and registrations when asked) and the engine POSTs each one to it, signed
//! ([`signature`]), retried with backoff ([`backoff`]) until the receiver answers 2xx, in the
//! order of the events' ids, one delivery in flight per subscription ([`delivery`]).
//!
//! Every event a subscription wants is put in its outbox in the same store batch as the event
//! and the change it reports (this module is a [`Tap`] of the journal), so an event is
//! delivered if and only if it happened, and a restart, even a kill, loses none. Delivery is
//! at least once: a receiver de-duplicates by the event's `id`.
//!
//! Owns subscriptions (their secrets are never shown again after creation), outboxes, dead
//! letters and the attempts' log; not the events (the journal's) nor the HTTP API.

pub mod backoff;
pub mod delivery;
pub mod http;
pub mod registrations;
pub mod signature;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use axum::http::Uri;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::campaign::CampaignEvent;
use crate::clock::{Clock, UnixMillis};
use crate::journal::{Event, Journal, Tap};
use crate::store::{Batch, Store, StoreError, StoreExt};
use crate::sync::{read, write};
use backoff::Backoff;
use delivery::{Attempt, DeadLetter, Pending, attempts_key, dead_letters, entry_key, outbox};
use http::HttpLimits;

/// Every kind a subscription may ask for: the campaigns' and `registration`.
pub fn kinds() -> impl Iterator<Item = &'static str> {
    CampaignEvent::KINDS.into_iter().chain([REGISTRATION])
}

/// The kind of a device's registration events (opt-in: they are journaled only while a
/// subscription asks for them).
pub const REGISTRATION: &str = "registration";

/// Kinds of a subscription that names none: statuses and alarms, not every device's progress.
pub const DEFAULT_KINDS: [&str; 4] = ["task", "device_failed", "failure_rate_alarm", "cell_paused"];

/// Shortest secret taken, in characters (so at least as many bytes): counted as the OpenAPI
/// document's `minLength` counts, so that a secret the document refuses is refused here too.
pub const MIN_SECRET_CHARS: usize = 16;
/// Longest secret taken, in bytes.
pub const MAX_SECRET_BYTES: usize = 256;
/// Longest URL taken, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// How deliveries run.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// Attempts per event before it is dead-lettered.
    pub max_attempts: u32,
    /// Waits between attempts.
    pub backoff: Backoff,
    /// Timeouts and which addresses may be reached.
    pub http: HttpLimits,
    /// Events waiting per subscription at most; more are dead-lettered at once, so a receiver
    /// gone for good cannot fill the disk with its backlog.
    pub max_pending: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            max_attempts: 12,
            backoff: Backoff::default(),
            http: HttpLimits {
                connect_timeout: Duration::from_secs(5),
                request_timeout: Duration::from_secs(10),
                forbid_private: false,
            },
            max_pending: 100_000,
        }
    }
}

/// A subscription as an integrator asks for it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    /// Where events are POSTed: http or https.
    pub url: String,
    /// The HMAC key deliveries are signed with; never answered.
    pub secret: String,
    /// The kinds of events wanted ([`DEFAULT_KINDS`] when absent).
    #[serde(default)]
    pub kinds: Option<Vec<String>>,
    /// Free text for the integrator.
    #[serde(default)]
    pub description: Option<String>,
}

/// A change to a subscription: what is given is replaced, the rest kept.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionChange {
    /// A new receiver (its outbox goes there from the next attempt).
    pub url: Option<String>,
    /// New kinds (for events from now on).
    pub kinds: Option<Vec<String>>,
    /// New free text.
    pub description: Option<String>,
}

/// A subscription, as kept and shown (without its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    /// Its id in the API.
    pub id: String,
    /// Where its events are POSTed.
    pub url: String,
    /// The kinds of events it gets.
    pub kinds: Vec<String>,
    /// Free text for the integrator.
    pub description: Option<String>,
    /// When it was made: it gets the events written after.
    pub created_at: UnixMillis,
}

/// A subscription with how its deliveries stand.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionStatus {
    #[serde(flatten)]
    pub subscription: Subscription,
    /// Events waiting for the receiver's 2xx.
    pub pending: usize,
    /// Events given up after the last attempt.
    pub dead_letters: usize,
    /// The last attempts, oldest first.
    pub attempts: Vec<Attempt>,
}

/// A subscription with its secret, as stored.
#[derive(Serialize, Deserialize)]
struct Stored {
    /// What is shown.
    subscription: Subscription,
    /// The HMAC key, never shown.
    secret: String,
}

/// Why a webhook operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// No such subscription.
    #[error("webhook {0} does not exist")]
    NotFound(String),
    /// A URL, secret or kind the engine does not take.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Key prefix of subscriptions.
const SUBSCRIPTIONS: &str = "hook/sub/";

/// The webhook service. Cheap to clone; its workers stop when the last clone goes.
#[derive(Clone)]
pub struct Webhooks {
    shared: Arc<Shared>,
}

/// What the service and its workers share.
pub(crate) struct Shared {
    /// Subscriptions, outboxes, dead letters and logs.
    store: Arc<dyn Store>,
    /// Made durable up to an event before it is posted: an id once sent is never reused.
    journal: Journal,
    /// Times of attempts and the signature's timestamp.
    clock: Clock,
    /// Attempts, backoff, timeouts, backlog.
    config: WebhookConfig,
    /// Posts the deliveries; its connections are shared by every worker.
    client: http::Client,
    /// Every subscription with its worker, by id: read by every journal append.
    subscribers: RwLock<BTreeMap<String, Subscriber>>,
}

/// One subscription at work.
struct Subscriber {
    /// What is shown.
    subscription: Subscription,
    /// The HMAC key its deliveries are signed with.
    secret: String,
    /// The kinds it wants, to match events fast.
    kinds: BTreeSet<String>,
    /// Events in its outbox, so a full backlog is seen without reading the store.
    pending: AtomicUsize,
    /// Wakes its worker.
    wake: Arc<Notify>,
    /// Its worker, stopped with it.
    worker: tokio::task::AbortHandle,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

impl Webhooks {
    /// Loads the subscriptions, starts a worker for each and puts every event they want from
    /// now on in their outboxes.
    pub fn start(
        store: Arc<dyn Store>,
        journal: Journal,
        clock: Clock,
        config: WebhookConfig,
    ) -> Result<Webhooks, StoreError> {
        let shared = Arc::new(Shared {
            client: http::Client::new(config.http),
            store,
            journal: journal.clone(),
            clock,
            config,
            subscribers: RwLock::new(BTreeMap::new()),
        });
        let stored: Vec<Stored> = shared.store.scan(SUBSCRIPTIONS)?;
        for Stored {
            subscription,
            secret,
        } in stored
        {
            let pending = shared.store.scan_raw(&outbox(&subscription.id))?.len();
            shared.add(subscription, secret, pending);
        }
        journal.tap(Arc::new(Outboxes(Arc::downgrade(&shared))));
        Ok(Webhooks { shared })
    }

    /// Subscribes a URL; its events from now on are delivered.
    pub fn create(&self, new: NewSubscription) -> Result<SubscriptionStatus, WebhookError> {
        check_url(&new.url)?;
        check_secret(&new.secret)?;
        let kinds = checked_kinds(new.kinds)?;
        let subscription = Subscription {
            id: crate::catalog::new_id("hook"),
            url: new.url,
            kinds,
            description: new.description,
            created_at: self.shared.clock.now(),
        };
        let stored = Stored {
            subscription,
            secret: new.secret,
        };
        let key = subscription_key(&stored.subscription.id);
        self.shared.store.put_durable(&key, &stored)?;
        let id = stored.subscription.id.clone();
        self.shared.add(stored.subscription, stored.secret, 0);
        self.status(&id)
    }

    /// Every subscription with how its deliveries stand.
    pub fn list(&self) -> Result<Vec<SubscriptionStatus>, WebhookError> {
        let ids: Vec<String> = read(&self.shared.subscribers).keys().cloned().collect();
        ids.iter().map(|id| self.status(id)).collect()
    }

    /// Subscription `id` with how its deliveries stand.
    pub fn status(&self, id: &str) -> Result<SubscriptionStatus, WebhookError> {
        let (subscription, pending) = {
            let subscribers = read(&self.shared.subscribers);
            let subscriber = subscribers
                .get(id)
                .ok_or_else(|| WebhookError::NotFound(id.into()))?;
            let pending = subscriber.pending.load(Ordering::Relaxed);
            (subscriber.subscription.clone(), pending)
        };
        let store = &self.shared.store;
        let attempts = store.get(&attempts_key(id))?.unwrap_or_default();
        Ok(SubscriptionStatus {
            subscription,
            pending,
            dead_letters: store.scan_raw(&dead_letters(id))?.len(),
            attempts,
        })
    }

    /// Changes a subscription's URL, kinds or description (its secret stays).
    pub fn change(
        &self,
        id: &str,
        change: SubscriptionChange,
    ) -> Result<SubscriptionStatus, WebhookError> {
        if let Some(url) = &change.url {
            check_url(url)?;
        }
        let kinds = change.kinds.map(|k| checked_kinds(Some(k))).transpose()?;
        let mut subscribers = write(&self.shared.subscribers);
        let subscriber = subscribers
            .get_mut(id)
            .ok_or_else(|| WebhookError::NotFound(id.into()))?;
        let mut subscription = subscriber.subscription.clone();
        subscription.url = change.url.unwrap_or(subscription.url);
        subscription.kinds = kinds.unwrap_or(subscription.kinds);
        subscription.description = change.description.or(subscription.description);
        let stored = Stored {
            subscription,
            secret: subscriber.secret.clone(),
        };
        self.shared
            .store
            .put_durable(&subscription_key(id), &stored)?;
        subscriber.kinds = stored.subscription.kinds.iter().cloned().collect();
        subscriber.subscription = stored.subscription;
        subscriber.wake.notify_one();
        drop(subscribers);
        self.status(id)
    }

    /// Ends a subscription: its worker stops, its outbox, dead letters and log go.
    pub fn delete(&self, id: &str) -> Result<(), WebhookError> {
        let removed = write(&self.shared.subscribers).remove(id);
        if removed.is_none() {
            return Err(WebhookError::NotFound(id.into()));
        }
        let store = &self.shared.store;
        let mut batch = Batch::new();
        batch.remove(subscription_key(id)).remove(attempts_key(id));
        for prefix in [outbox(id), dead_letters(id)] {
            for (key, _) in store.scan_raw(&prefix)? {
                batch.remove(key);
            }
        }
        store.apply(batch)?;
        store.flush()?;
        Ok(())
    }

    /// Subscription `id`'s dead letters, oldest event first.
    pub fn dead_letters(&self, id: &str) -> Result<Vec<DeadLetter>, WebhookError> {
        self.status(id)?;
        let letters = self.shared.store.scan(&dead_letters(id))?;
        Ok(letters)
    }

    /// Puts subscription `id`'s dead letters back in its outbox, due now; returns how many.
    pub fn redeliver(&self, id: &str) -> Result<usize, WebhookError> {
        self.status(id)?;
        let now = self.shared.clock.now();
        Ok(delivery::requeue(&self.shared, id, now)?)
    }

    /// True when a subscription asks for events of `kind`.
    pub fn wanted(&self, kind: &str) -> bool {
        read(&self.shared.subscribers)
            .values()
            .any(|subscriber| subscriber.kinds.contains(kind))
    }
}

impl Shared {
    /// Starts the worker of `subscription`, whose outbox holds `pending` events. The worker
    /// is spawned under the lock it is inserted under, so it finds its subscription.
    fn add(self: &Arc<Self>, subscription: Subscription, secret: String, pending: usize) {
        let wake = Arc::new(Notify::new());
        let id = subscription.id.clone();
        let mut subscribers = write(&self.subscribers);
        let worker = tokio::spawn(delivery::run(
            Arc::downgrade(self),
            id.clone(),
            wake.clone(),
        ))
        .abort_handle();
        let subscriber = Subscriber {
            kinds: subscription.kinds.iter().cloned().collect(),
            subscription,
            secret,
            pending: AtomicUsize::new(pending),
            wake,
            worker,
        };
        subscribers.insert(id, subscriber);
    }

    /// The URL and secret of subscription `id`, while it exists.
    fn target(&self, id: &str) -> Option<(String, String)> {
        let subscribers = read(&self.subscribers);
        let subscriber = subscribers.get(id)?;
        Some((
            subscriber.subscription.url.clone(),
            subscriber.secret.clone(),
        ))
    }

    /// Subscription `id`'s outbox grew (events redelivered) or shrank (an event acknowledged
    /// or dead-lettered) by `by` events; its worker looks again.
    fn outbox_changed(&self, id: &str, by: isize) {
        if let Some(subscriber) = read(&self.subscribers).get(id) {
            let _ = subscriber
                .pending
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    n.checked_add_signed(by)
                });
            subscriber.wake.notify_one();
        }
    }
}

/// The tap that puts each event in the outboxes of the subscriptions that want it.
struct Outboxes(Weak<Shared>);

impl Tap for Outboxes {
    fn write(&self, events: &[Event], batch: &mut Batch) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        let now = shared.clock.now();
        for (id, subscriber) in read(&shared.subscribers).iter() {
            for event in events.iter().filter(|e| subscriber.kinds.contains(&e.kind)) {
                let waiting = subscriber.pending.fetch_add(1, Ordering::Relaxed);
                if waiting < shared.config.max_pending {
                    let pending = Pending {
                        event: event.clone(),
                        failures: 0,
                        next_at: now,
                    };
                    batch.put(entry_key(&outbox(id), event.id), &pending);
                } else {
                    subscriber.pending.fetch_sub(1, Ordering::Relaxed);
                    let dead = DeadLetter {
                        event: event.clone(),
                        attempts: 0,
                        error: format!("{waiting} events were waiting already"),
                        dead_at: now,
                    };
                    batch.put(entry_key(&dead_letters(id), event.id), &dead);
                }
            }
        }
    }

    fn written(&self, events: &[Event]) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        for subscriber in read(&shared.subscribers).values() {
            if events.iter().any(|e| subscriber.kinds.contains(&e.kind)) {
                subscriber.wake.notify_one();
            }
        }
    }
}

fn kinds_known() -> Vec<&'static str> {
    kinds().collect()
}

fn subscription_key(id: &str) -> String {
    format!("{SUBSCRIPTIONS}{id}")
}

/// A receiver URL: http or https with a host, at most [`MAX_URL_BYTES`].
fn check_url(url: &str) -> Result<(), WebhookError> {
    let invalid = |why: &str| Err(WebhookError::Invalid(format!("url {url:?}: {why}")));
    if url.len() > MAX_URL_BYTES {
        return invalid("longer than 2048 bytes");
    }
    let Ok(uri) = url.parse::<Uri>() else {
        return invalid("not a URL");
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return invalid("only http and https are delivered to");
    }
    if uri.host().is_none_or(str::is_empty) {
        return invalid("no host");
    }
    Ok(())
}

fn check_secret(secret: &str) -> Result<(), WebhookError> {
    if secret.chars().count() < MIN_SECRET_CHARS || secret.len() > MAX_SECRET_BYTES {
        return Err(WebhookError::Invalid(format!(
            "a secret is at least {MIN_SECRET_CHARS} characters and at most \
             {MAX_SECRET_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The kinds asked for, known and at least one, each once ([`DEFAULT_KINDS`] when none given).
fn checked_kinds(kinds: Option<Vec<String>>) -> Result<Vec<String>, WebhookError> {
    let Some(kinds) = kinds else {
        return Ok(DEFAULT_KINDS.iter().map(|k| k.to_string()).collect());
    };
    if let Some(unknown) = kinds.iter().find(|k| !kinds_known().contains(&k.as_str())) {
        return Err(WebhookError::Invalid(format!(
            "unknown kind {unknown:?}; kinds: {}",
            kinds_known().join(", ")
        )));
    }
    let unique: BTreeSet<String> = kinds.into_iter().collect();
    if unique.is_empty() {
        return Err(WebhookError::Invalid("a webhook needs a kind".into()));
    }
    Ok(unique.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_kinds_are_known() {
        assert!(DEFAULT_KINDS.iter().all(|k| kinds_known().contains(k)));
    }

    #[test]
    fn only_http_and_https_urls_with_a_host_are_taken() {
        for good in [
            "http://127.0.0.1:9000/hooks",
            "https://example.com/fota?x=1",
        ] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        for bad in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "/relative",
            "http://",
            &long,
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_secret_has_as_many_characters_as_the_document_asks_and_bytes_within_the_limit() {
        let ascii = "s".repeat(MIN_SECRET_CHARS);
        assert!(check_secret(&ascii).is_ok());
        // 15 characters, 30 bytes: the document's minLength counts characters, so do we
        // (schemathesis found a secret the document refuses taken).
        let short = "é".repeat(MIN_SECRET_CHARS - 1);
        assert!(short.len() >= MIN_SECRET_CHARS);
        assert!(check_secret(&short).is_err());
        let long = "é".repeat(MAX_SECRET_BYTES / 2 + 1);
        assert!(long.chars().count() <= MAX_SECRET_BYTES);
        assert!(check_secret(&long).is_err(), "bytes bound the length");
    }

    #[test]
    fn kinds_must_be_known_and_default_to_statuses_and_alarms() {
        assert_eq!(checked_kinds(None).unwrap(), DEFAULT_KINDS);
        let kinds = Some(vec!["task".into(), "device".into(), "task".into()]);
        assert_eq!(checked_kinds(kinds).unwrap(), ["device", "task"]);
        assert!(checked_kinds(Some(vec![])).is_err());
        assert!(checked_kinds(Some(vec!["tasks".into()])).is_err());
    }
}
