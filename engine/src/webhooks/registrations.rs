//! Registrations as events of the journal (`registration`): a device registered, de-registered
//! or its registration expired (not every Update: a device in queue mode sends one at every
//! wake-up). Opt-in: they are written only while a webhook subscription asks for them, so a
//! registration storm costs the journal nothing otherwise.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{REGISTRATION, Webhooks};
use crate::journal::{EventData, Journal, NewEvent};
use crate::lwm2m::registry::{Followed, next_events};
use crate::lwm2m::{RegistrationEvent, Registry};
use crate::store::Batch;

/// Writes `registry`'s registrations to `journal` while `webhooks` asks for them, until the
/// registry closes.
pub async fn journal_registrations(registry: Arc<Registry>, journal: Journal, webhooks: Webhooks) {
    let mut events = registry.subscribe();
    while let Some(followed) = next_events(&mut events).await {
        match followed {
            Followed::Events(events) => {
                let data: Vec<Value> = events.iter().filter_map(data).collect();
                record(&journal, &webhooks, &data);
            }
            Followed::Missed(missed) => {
                tracing::warn!(missed, "registration events missed by the journal");
            }
        }
    }
}

/// Writes registration events (`data`, what [`data`] says of each; a cluster's member sends
/// its own to the coordinator), in one append, while `webhooks` asks for them.
pub fn record(journal: &Journal, webhooks: &Webhooks, data: &[Value]) {
    if data.is_empty() || !webhooks.wanted(REGISTRATION) {
        return;
    }
    let events = (data.iter())
        .map(|data| NewEvent {
            kind: REGISTRATION,
            data: EventData::of(data),
        })
        .collect();
    if let Err(error) = journal.append(Batch::new(), events) {
        tracing::error!(%error, "registration events not written");
    }
}

/// What a registration event says; `None` for an Update.
pub fn data(event: &RegistrationEvent) -> Option<Value> {
    let what = match event {
        RegistrationEvent::Registered(_) => "registered",
        RegistrationEvent::Deregistered(_) => "deregistered",
        RegistrationEvent::Expired(_) => "expired",
        RegistrationEvent::Updated(_) => return None,
    };
    let registration = event.registration();
    Some(json!({
        "endpoint": registration.endpoint,
        "event": what,
        "address": registration.address.to_string(),
        "binding": if registration.binding.queue_mode { "UQ" } else { "U" },
        "lifetime_secs": registration.lifetime.as_secs(),
    }))
}
