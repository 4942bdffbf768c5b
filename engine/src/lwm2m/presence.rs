//! `Presence`: whether a registered device can be talked to now, as Leshan's `PresenceService`
//! knows it. A device in UDP binding is reachable while it is registered; one in queue mode
//! (binding UQ) sleeps between contacts and is reachable only in a window after its last
//! Register or Update. Owns the length of that window, when a device's window ends, and the
//! bounded wait for a sleeping device to wake; the `Registry` owns the registrations and their
//! events.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::registration::Registration;
use super::registry::{EndpointEvents, Registry};

/// How long a queue-mode device stays reachable after its last Register or Update by default:
/// LwM2M 1.1's default client awake time, CoAP MAX_TRANSMIT_WAIT.
pub const DEFAULT_QUEUE_WINDOW: Duration = Duration::from_secs(93);

/// Whether the devices of a registry are reachable now. Cheap to clone.
#[derive(Clone)]
pub struct Presence {
    /// The registrations.
    registry: Arc<Registry>,
    /// How long a queue-mode device stays reachable after its last Register or Update.
    queue_window: Duration,
}

impl Presence {
    /// The presence of `registry`'s devices, a queue-mode device being reachable for
    /// `queue_window` after its last Register or Update.
    pub fn new(registry: Arc<Registry>, queue_window: Duration) -> Self {
        Presence {
            registry,
            queue_window,
        }
    }

    /// The registrations presence is told from.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// How much longer `endpoint` can be reached from now: `None` when it is not registered
    /// or is asleep, `Duration::MAX` in UDP binding, else what is left of its queue-mode
    /// window.
    pub fn reachable_for(&self, endpoint: &str) -> Option<Duration> {
        self.time_left(&self.registry.get(endpoint)?)
    }

    /// Whether `endpoint` is registered in queue mode and asleep: its window after its last
    /// Register or Update is over, and it is reached again after its next Update.
    pub fn asleep(&self, endpoint: &str) -> bool {
        self.registry
            .get(endpoint)
            .is_some_and(|registration| !self.awake(&registration))
    }

    /// When the device of `registration`, in queue mode, should wake next: a cycle after its
    /// last contact, the cycle as its recent Updates were apart; `None` in UDP binding or
    /// before its second Update.
    pub fn expected_wake(&self, registration: &Registration) -> Option<Instant> {
        let cycle = registration
            .cycle
            .estimate()
            .filter(|_| registration.binding.queue_mode)?;
        Some(registration.last_update + cycle)
    }

    /// Whether the device of `registration` can be reached now: in UDP binding, or inside its
    /// queue-mode window.
    pub fn awake(&self, registration: &Registration) -> bool {
        self.time_left(registration).is_some()
    }

    /// How much longer the device of `registration` can be reached from now: `Duration::MAX`
    /// in UDP binding, what is left of its queue-mode window, `None` once that is over.
    fn time_left(&self, registration: &Registration) -> Option<Duration> {
        match self.window_end(registration) {
            None => Some(Duration::MAX),
            Some(end) => end
                .checked_duration_since(Instant::now())
                .filter(|left| !left.is_zero()),
        }
    }

    /// Until when a device can be reached: the end of its queue-mode window, or `None`
    /// (always, in UDP binding).
    pub fn window_end(&self, registration: &Registration) -> Option<Instant> {
        registration
            .binding
            .queue_mode
            .then(|| registration.last_update + self.queue_window)
    }

    /// `endpoint`'s registration once it is reachable (see [`Self::wait_reachable`]).
    pub async fn when_reachable(&self, endpoint: &str, give_up: Instant) -> Option<Registration> {
        self.wait_reachable(&mut self.registry.follow(endpoint), give_up)
            .await
    }

    /// The current registration of the device `contacts` follows once it is reachable: now
    /// for a device in UDP binding, in the window after its next Update for a device in queue
    /// mode. `None` past `give_up`.
    pub async fn wait_reachable(
        &self,
        contacts: &mut EndpointEvents,
        give_up: Instant,
    ) -> Option<Registration> {
        loop {
            // What happened so far is in the registry now; only later events are news.
            contacts.clear();
            if let Some(registration) = self.registry.get(contacts.endpoint())
                && self.awake(&registration)
            {
                return Some(registration);
            }
            let remaining = give_up.saturating_duration_since(Instant::now());
            tokio::time::timeout(remaining, contacts.next_contact())
                .await
                .ok()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lwm2m::Binding;
    use crate::lwm2m::registration::{RegisterRequest, UpdateRequest, WakeCycle};

    fn registration(queue_mode: bool, updated_ago: Duration) -> Registration {
        let last_update = Instant::now() - updated_ago;
        Registration {
            lifetime: Duration::from_secs(3600),
            binding: Binding {
                udp: true,
                queue_mode,
            },
            registered_at: last_update,
            last_update,
            cycle: WakeCycle::default(),
            ..Registration::for_tests("dev", ([127, 0, 0, 1], 1000).into())
        }
    }

    #[test]
    fn a_queue_mode_device_is_reachable_in_its_window_only() {
        let presence = Presence::new(Arc::new(Registry::new()), Duration::from_secs(60));
        let dozing = registration(true, Duration::from_secs(10));
        assert_eq!(
            presence.window_end(&dozing),
            Some(dozing.last_update + Duration::from_secs(60))
        );
        assert!(presence.awake(&dozing));
        assert!(!presence.awake(&registration(true, Duration::from_secs(61))));
        let always = registration(false, Duration::from_secs(3000));
        assert_eq!(presence.window_end(&always), None);
        assert!(presence.awake(&always));
    }

    #[test]
    fn a_queue_mode_device_is_expected_awake_again_a_cycle_after_its_last_contact() {
        let registry = Arc::new(Registry::new());
        let presence = Presence::new(registry.clone(), Duration::from_secs(60));
        let mut request = RegisterRequest::for_tests("dev", 3600);
        request.binding.queue_mode = true;
        let address = ([127, 0, 0, 1], 1000).into();
        let start = Instant::now() - Duration::from_secs(750);
        let registered = registry.register(request, address, start);
        assert_eq!(
            presence.expected_wake(&registered),
            None,
            "no cycle seen yet"
        );
        // It woke 50 s after its Register, then 300 s later twice, and has slept since its
        // window closed.
        let first = start + Duration::from_secs(50);
        let update = UpdateRequest::default;
        let updated = registry.update(&registered.id, update(), address, first);
        assert_eq!(
            presence.expected_wake(&updated.expect("registered")),
            None,
            "no cycle from the Register"
        );
        let second = first + Duration::from_secs(300);
        let updated = registry.update(&registered.id, update(), address, second);
        let updated = updated.expect("registered");
        assert_eq!(updated.cycle.estimate(), None, "one interval");
        let woke = second + Duration::from_secs(300);
        let updated =
            (registry.update(&registered.id, update(), address, woke)).expect("registered");
        assert_eq!(updated.cycle.estimate(), Some(Duration::from_secs(300)));
        assert_eq!(
            presence.expected_wake(&updated),
            Some(woke + Duration::from_secs(300))
        );
        assert!(presence.asleep("dev"));
        assert!(!presence.asleep("not registered"));
        let mut always = updated;
        always.binding.queue_mode = false;
        assert_eq!(presence.expected_wake(&always), None, "UDP binding: awake");
    }
}
