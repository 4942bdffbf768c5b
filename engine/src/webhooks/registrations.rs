//! Registrations as events of the journal (`registration`): a device registered, de-registered
//! or its registration expired (not every Update: a device in queue mode sends one at every
//! wake-up). Opt-in: they are written only while a webhook subscription asks for them, so a
//! registration storm costs the journal nothing otherwise.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{REGISTRATION, Webhooks};
use crate::journal::{EventData, Journal, NewEvent};
use crate::lwm2m::registry::next_event;
use crate::lwm2m::{RegistrationEvent, Registry};
use crate::store::Batch;

/// Writes `registry`'s registrations to `journal` while `webhooks` asks for them, until the
/// registry closes.
pub async fn journal_registrations(registry: Arc<Registry>, journal: Journal, webhooks: Webhooks) {
    let mut events = registry.subscribe();
    loop {
        let Some(event) = next_event(&mut events, "the journal").await else {
            return;
        };
        if let Some(data) = data(&event) {
            record(&journal, &webhooks, &data);
        }
    }
}

/// Writes a registration event (`data`, what [`data`] says of it; a cluster's member sends
/// its own to the coordinator) while `webhooks` asks for them.
pub fn record(journal: &Journal, webhooks: &Webhooks, data: &Value) {
    if !webhooks.wanted(REGISTRATION) {
        return;
    }
    let written = journal.append(
        Batch::new(),
        vec![NewEvent {
            kind: REGISTRATION,
            data: EventData::of(data),
        }],
    );
    if let Err(error) = written {
        tracing::error!(%error, "registration event not written");
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
