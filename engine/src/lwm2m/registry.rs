//! `Registry`: the registrations currently alive, by id, by endpoint name and by host, with
//! lifetime expiry and events (for everyone, and per endpoint for whoever follows one device).
//! Registration ids (the location a device sends its Updates and De-register to) are 128
//! random bits: nobody off the path guesses another device's. Owns nothing about CoAP; the
//! registration handler and the expiry task drive it.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use tokio::time::Instant;

use tokio::sync::{broadcast, mpsc};

use super::registration::{RegisterRequest, Registration, UpdateRequest};
use crate::sync::lock;

/// Something that happened to a registration.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistrationEvent {
    /// A device registered (possibly replacing its earlier registration).
    Registered(Registration),
    /// A device sent an Update: it is awake and reachable right now.
    Updated(Registration),
    /// A device de-registered.
    Deregistered(Registration),
    /// A registration's lifetime ran out.
    Expired(Registration),
}

impl RegistrationEvent {
    /// The registration of a Register or an Update (the device is reachable now); `None` when
    /// the registration ended.
    pub fn contact(&self) -> Option<&Registration> {
        match self {
            RegistrationEvent::Registered(r) | RegistrationEvent::Updated(r) => Some(r),
            RegistrationEvent::Deregistered(_) | RegistrationEvent::Expired(_) => None,
        }
    }

    /// The registration the event is about.
    pub fn registration(&self) -> &Registration {
        match self {
            RegistrationEvent::Registered(r)
            | RegistrationEvent::Updated(r)
            | RegistrationEvent::Deregistered(r)
            | RegistrationEvent::Expired(r) => r,
        }
    }
}

/// The live registrations.
pub struct Registry {
    /// Everything behind one lock: each operation is a few map updates.
    state: Mutex<RegistryState>,
    /// Every event, for whoever listens (campaigns, statistics, the API).
    events: broadcast::Sender<RegistrationEvent>,
}

/// The indexes hold numbers, not copies of the id string, and the registrations are boxed so
/// a table's spare capacity (up to half its slots right after it grows) costs 16 bytes a slot,
/// not a whole registration: an idle device must cost well under 1 KiB at a million devices.
#[derive(Default)]
struct RegistryState {
    /// Registrations by the number their id is the hex form of.
    by_id: HashMap<u128, Box<Registration>>,
    /// Registration number by endpoint name: a device has at most one registration.
    by_endpoint: HashMap<String, u128>,
    /// Registrations per host the devices last spoke from: which hosts hold devices (a
    /// client may fetch a package from another port of its host than it registered from).
    by_host: HashMap<IpAddr, u32>,
    /// Registrations per address made over coaps (with an identity): those addresses are
    /// spoken to over DTLS only. Empty in a fleet on plain CoAP.
    by_secure_address: HashMap<SocketAddr, u32>,
    /// Expiry deadlines in order, so expiry never scans every registration.
    deadlines: BTreeSet<(Instant, u128)>,
    /// Followers of one endpoint's every event ([`EndpointEvents`]), by follower number.
    followers: HashMap<String, Vec<(u64, mpsc::UnboundedSender<RegistrationEvent>)>>,
    /// Source of follower numbers.
    next_follower: u64,
    /// How long an unproven registration lives at most.
    unproven_ttl: std::time::Duration,
}

/// Every event of one endpoint's registrations from the moment [`Registry::follow`] was
/// called until this is dropped: one subscription for as long as the follower needs, so no
/// event falls between two waits.
pub struct EndpointEvents {
    /// The events, in order.
    events: mpsc::UnboundedReceiver<RegistrationEvent>,
    /// Where to unsubscribe on drop.
    registry: Weak<Registry>,
    /// The endpoint followed.
    endpoint: String,
    /// This follower's number.
    number: u64,
}

impl EndpointEvents {
    /// The next event; pending forever once the registry is gone.
    pub async fn next(&mut self) -> RegistrationEvent {
        match self.events.recv().await {
            Some(event) => event,
            None => std::future::pending().await,
        }
    }

    /// The next Register or Update: the device is reachable right now.
    pub async fn next_contact(&mut self) -> Registration {
        loop {
            if let Some(registration) = self.next().await.contact() {
                return registration.clone();
            }
        }
    }

    /// The endpoint followed.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Forgets the events received so far.
    pub fn clear(&mut self) {
        while self.events.try_recv().is_ok() {}
    }
}

impl Drop for EndpointEvents {
    fn drop(&mut self) {
        let Some(registry) = self.registry.upgrade() else {
            return;
        };
        let mut state = lock(&registry.state);
        if let Some(followers) = state.followers.get_mut(&self.endpoint) {
            followers.retain(|(number, _)| *number != self.number);
            if followers.is_empty() {
                state.followers.remove(&self.endpoint);
            }
        }
    }
}

/// Registration events a follower may fall behind by before it misses some (and repairs a
/// device at its next Update). A storm of this many Registers, such as a cell's devices coming
/// back at once, reaches every follower whole, however slowly its store writes; the channel
/// holds a slot per event, about 240 bytes each (15 MiB).
pub const EVENTS: usize = 1 << 16;

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    /// An empty registry whose unproven registrations live as long as they ask.
    pub fn new() -> Self {
        Registry::with_unproven_ttl(std::time::Duration::MAX)
    }

    /// An empty registry whose registrations live at most `ttl` until their device proves
    /// its address (see [`Registration::proven`]).
    pub fn with_unproven_ttl(ttl: std::time::Duration) -> Self {
        let (events, _) = broadcast::channel(EVENTS);
        Registry {
            state: Mutex::new(RegistryState {
                unproven_ttl: ttl,
                ..RegistryState::default()
            }),
            events,
        }
    }

    /// The device of `endpoint` answered the engine: its registration lives its whole
    /// lifetime from now on.
    pub fn prove(&self, endpoint: &str) {
        let mut state = lock(&self.state);
        let Some(&number) = state.by_endpoint.get(endpoint) else {
            return;
        };
        if state.by_id.get(&number).is_some_and(|r| !r.proven)
            && let Some(mut registration) = state.remove(number)
        {
            registration.proven = true;
            state.insert(number, registration);
        }
    }

    /// Receives every registration event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RegistrationEvent> {
        self.events.subscribe()
    }
}

/// Registration events a follower takes at once: what it writes in one store call when it
/// fell behind (a storm of Registers), and what a follower that missed events goes over at
/// a time of the registrations held.
pub const BATCH: usize = 1024;

/// What a follower of the registry's events reads next.
#[derive(Debug)]
pub enum Followed {
    /// The events queued for it, in order: at least one, [`BATCH`] at most.
    Events(Vec<RegistrationEvent>),
    /// It fell behind by more than [`EVENTS`] and missed this many: what it keeps of the
    /// devices is current again only from [`Registry::as_updates`].
    Missed(u64),
}

/// What `events` holds for its follower now, waiting for one event at least; `None` once the
/// registry is gone. A follower whose store calls are round trips writes what it was given at
/// once, so it keeps up with a storm that would take one round trip per event.
pub async fn next_events(events: &mut broadcast::Receiver<RegistrationEvent>) -> Option<Followed> {
    let first = match events.recv().await {
        Ok(event) => event,
        Err(broadcast::error::RecvError::Lagged(missed)) => return Some(Followed::Missed(missed)),
        Err(broadcast::error::RecvError::Closed) => return None,
    };
    let mut taken = vec![first];
    while taken.len() < BATCH {
        match events.try_recv() {
            Ok(event) => taken.push(event),
            // What lagged or closed meanwhile is told at the next call.
            Err(_) => break,
        }
    }
    Some(Followed::Events(taken))
}

/// The next of `events` for `follower`: the events it fell behind on are passed over with a
/// warning naming it; `None` once the registry is gone.
pub async fn next_event(
    events: &mut broadcast::Receiver<RegistrationEvent>,
    follower: &str,
) -> Option<RegistrationEvent> {
    loop {
        match events.recv().await {
            Ok(event) => return Some(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, follower, "registration events missed");
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

impl Registry {
    /// Follows every event of `endpoint` from now on.
    pub fn follow(self: &Arc<Self>, endpoint: &str) -> EndpointEvents {
        let (sender, events) = mpsc::unbounded_channel();
        let mut state = lock(&self.state);
        state.next_follower += 1;
        let number = state.next_follower;
        state
            .followers
            .entry(endpoint.to_string())
            .or_default()
            .push((number, sender));
        EndpointEvents {
            events,
            registry: Arc::downgrade(self),
            endpoint: endpoint.to_string(),
            number,
        }
    }

    /// Adds a registration, replacing any earlier one of the same endpoint.
    pub fn register(
        &self,
        request: RegisterRequest,
        address: SocketAddr,
        now: Instant,
    ) -> Registration {
        let mut state = lock(&self.state);
        if let Some(old) = state.by_endpoint.get(&request.endpoint).copied() {
            state.remove(old);
        }
        let number = state.new_number();
        let registration = Registration::new(format!("{number:032x}"), request, address, now);
        state.insert(number, registration.clone());
        self.emit(
            &mut state,
            RegistrationEvent::Registered(registration.clone()),
        );
        registration
    }

    /// Applies an Update; `None` when the id is unknown (the device must register again).
    pub fn update(
        &self,
        id: &str,
        request: UpdateRequest,
        address: SocketAddr,
        now: Instant,
    ) -> Option<Registration> {
        let mut state = lock(&self.state);
        let number = state.number(id)?;
        let mut registration = state.remove(number)?;
        registration.address = address;
        // From its Register to its first Update is no cycle: a device registers when it boots
        // or lost its registration, not at a wake-up of its cycle, and stays awake after it as
        // long as it likes (a simulated fleet spreads its phases there).
        if registration.last_update > registration.registered_at {
            let interval = now.saturating_duration_since(registration.last_update);
            registration.cycle.record(interval);
        }
        registration.last_update = now;
        registration.proven = true;
        registration.lifetime = request.lifetime.unwrap_or(registration.lifetime);
        registration.binding = request.binding.unwrap_or(registration.binding);
        if let Some(objects) = request.objects {
            registration.objects = objects;
            registration.announced_format = request.announced_format;
        }
        state.insert(number, registration.clone());
        self.emit(&mut state, RegistrationEvent::Updated(registration.clone()));
        Some(registration)
    }

    /// Removes a registration on De-register; `None` when the id is unknown.
    pub fn deregister(&self, id: &str) -> Option<Registration> {
        let mut state = lock(&self.state);
        let number = state.number(id)?;
        let registration = state.remove(number)?;
        self.emit(
            &mut state,
            RegistrationEvent::Deregistered(registration.clone()),
        );
        Some(registration)
    }

    /// Removes every registration whose lifetime ended before `now`.
    pub fn expire(&self, now: Instant) -> Vec<Registration> {
        let mut state = lock(&self.state);
        let mut expired = Vec::new();
        while let Some(&(deadline, number)) = state.deadlines.first() {
            if deadline > now {
                break;
            }
            if let Some(registration) = state.remove(number) {
                self.emit(&mut state, RegistrationEvent::Expired(registration.clone()));
                expired.push(registration);
            }
        }
        expired
    }

    /// Whether a device is registered from `host` (its last Register or Update came from
    /// there, from any port).
    pub fn is_registered_host(&self, host: IpAddr) -> bool {
        lock(&self.state).by_host.contains_key(&host)
    }

    /// Whether a device registered over coaps (with an identity) from `address`.
    pub fn is_secure_address(&self, address: SocketAddr) -> bool {
        lock(&self.state).by_secure_address.contains_key(&address)
    }

    /// The registration of an endpoint, if it is registered.
    pub fn get(&self, endpoint: &str) -> Option<Registration> {
        let state = lock(&self.state);
        let number = state.by_endpoint.get(endpoint)?;
        state
            .by_id
            .get(number)
            .map(|registration| (**registration).clone())
    }

    /// The registration whose id is `id`.
    pub fn by_id(&self, id: &str) -> Option<Registration> {
        let state = lock(&self.state);
        let number = state.number(id)?;
        state.by_id.get(&number).map(|r| (**r).clone())
    }

    /// Registers `count` devices `dev-0`, `dev-1`… for ten minutes from one address, now: a
    /// storm, in tests.
    #[cfg(test)]
    pub(crate) fn register_storm(&self, count: usize) {
        let now = Instant::now();
        let address = "127.0.0.1:9".parse().expect("an address");
        for n in 0..count {
            self.register(
                RegisterRequest::for_tests(&format!("dev-{n}"), 600),
                address,
                now,
            );
        }
    }

    /// Every registration held now, each as an Update, in no order: what a follower that
    /// missed events goes on from (a device's last Register or Update, without the ones that
    /// ended meanwhile).
    pub fn as_updates(&self) -> Vec<RegistrationEvent> {
        let state = lock(&self.state);
        (state.by_id.values())
            .map(|registration| RegistrationEvent::Updated((**registration).clone()))
            .collect()
    }

    /// Number of live registrations.
    pub fn len(&self) -> usize {
        lock(&self.state).by_id.len()
    }

    /// True when no device is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn emit(&self, state: &mut RegistryState, event: RegistrationEvent) {
        let endpoint = &event.registration().endpoint;
        for (_, follower) in state.followers.get(endpoint).into_iter().flatten() {
            let _ = follower.send(event.clone());
        }
        let _ = self.events.send(event);
    }
}

impl RegistryState {
    /// The number of registration `id`, if it is live (and `id` is its canonical hex form).
    fn number(&self, id: &str) -> Option<u128> {
        let number = u128::from_str_radix(id, 16).ok()?;
        let registration = self.by_id.get(&number)?;
        (registration.id == id).then_some(number)
    }

    /// A random number no live registration has.
    fn new_number(&self) -> u128 {
        loop {
            let number: u128 = crate::entropy::random();
            if !self.by_id.contains_key(&number) {
                return number;
            }
        }
    }

    /// When `registration` ends: at the end of its lifetime, or sooner while unproven.
    fn deadline(&self, registration: &Registration) -> Instant {
        if registration.proven {
            return registration.expires_at();
        }
        let lifetime = registration.lifetime.min(self.unproven_ttl);
        registration.last_update + lifetime
    }

    fn insert(&mut self, number: u128, registration: Registration) {
        self.deadlines
            .insert((self.deadline(&registration), number));
        self.by_endpoint
            .insert(registration.endpoint.clone(), number);
        *self.by_host.entry(registration.address.ip()).or_default() += 1;
        if registration.identity.is_some() {
            *self
                .by_secure_address
                .entry(registration.address)
                .or_default() += 1;
        }
        self.by_id.insert(number, Box::new(registration));
    }

    fn remove(&mut self, number: u128) -> Option<Registration> {
        let registration = self.by_id.remove(&number)?;
        self.deadlines
            .remove(&(self.deadline(&registration), number));
        self.by_endpoint.remove(&registration.endpoint);
        release(&mut self.by_host, registration.address.ip());
        if registration.identity.is_some() {
            release(&mut self.by_secure_address, registration.address);
        }
        Some(*registration)
    }
}

/// Takes one off `key`'s count, forgetting the key at zero.
fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, u32>, key: K) {
    if let Some(count) = counts.get_mut(&key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(&key);
        }
    }
}

impl crate::coap::dtls::SecurePeers for Registry {
    fn registered_securely(&self, peer: SocketAddr) -> bool {
        self.is_secure_address(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn request(endpoint: &str, lifetime: u64) -> RegisterRequest {
        RegisterRequest::for_tests(endpoint, lifetime)
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    #[test]
    fn a_new_registration_replaces_the_old_one_of_the_same_endpoint() {
        let registry = Registry::new();
        let now = Instant::now();
        let first = registry.register(request("dev", 60), addr(), now);
        let second = registry.register(request("dev", 60), addr(), now);
        assert_ne!(first.id, second.id);
        assert_eq!(registry.len(), 1);
        assert!(
            registry
                .update(&first.id, UpdateRequest::default(), addr(), now)
                .is_none()
        );
        assert!(
            registry
                .update(&second.id, UpdateRequest::default(), addr(), now)
                .is_some()
        );
    }

    #[test]
    fn lifetimes_expire_and_updates_extend_them() {
        let registry = Registry::new();
        let t0 = Instant::now();
        let a = registry.register(request("a", 10), addr(), t0);
        registry.register(request("b", 10), addr(), t0);
        registry.update(
            &a.id,
            UpdateRequest::default(),
            addr(),
            t0 + Duration::from_secs(8),
        );
        let expired = registry.expire(t0 + Duration::from_secs(11));
        assert_eq!(
            expired
                .iter()
                .map(|r| r.endpoint.as_str())
                .collect::<Vec<_>>(),
            vec!["b"]
        );
        assert!(registry.get("a").is_some());
        assert_eq!(registry.expire(t0 + Duration::from_secs(19)).len(), 1);
        assert!(registry.is_empty());
    }

    #[test]
    fn an_id_is_known_only_in_the_form_it_was_given() {
        let registry = Registry::new();
        let registration = registry.register(request("dev", 60), addr(), Instant::now());
        assert!(
            registry
                .deregister(&format!("0{}", registration.id))
                .is_none()
        );
        assert!(registry.deregister("not hex").is_none());
        assert_eq!(
            registry.deregister(&registration.id).map(|r| r.endpoint),
            Some("dev".into())
        );
        assert!(registry.is_empty());
    }

    #[test]
    fn ids_are_128_random_bits_and_the_registered_addresses_are_known() {
        let registry = Registry::new();
        let now = Instant::now();
        let ids: Vec<String> = (0..100)
            .map(|i| {
                registry
                    .register(request(&format!("d{i}"), 60), addr(), now)
                    .id
            })
            .collect();
        assert!(
            ids.iter()
                .all(|id| id.len() == 32 && u128::from_str_radix(id, 16).is_ok())
        );
        let mut sorted = ids.clone();
        sorted.sort();
        assert_ne!(sorted, ids, "not handed out in order");
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
        let moved: SocketAddr = "127.0.0.2:9999".parse().unwrap();
        let last = ids.last().unwrap();
        assert!(!registry.is_registered_host(moved.ip()));
        registry.update(last, UpdateRequest::default(), moved, now);
        assert!(registry.is_registered_host(moved.ip()));
        assert!(
            registry.is_registered_host(addr().ip()),
            "99 are still there"
        );
        registry.deregister(last);
        assert!(!registry.is_registered_host(moved.ip()));
    }

    #[test]
    fn addresses_registered_over_coaps_are_known_until_the_registration_moves_or_ends() {
        let registry = Registry::new();
        let now = Instant::now();
        let (first, moved): (SocketAddr, SocketAddr) = (
            "127.0.0.1:5000".parse().unwrap(),
            "127.0.0.1:5001".parse().unwrap(),
        );
        registry.register(request("plain", 60), addr(), now);
        assert!(!registry.is_secure_address(addr()), "plain CoAP is not");
        let mut secure = request("secure", 60);
        secure.identity = Some("id-secure".into());
        let registration = registry.register(secure.clone(), first, now);
        assert!(registry.is_secure_address(first));
        registry.update(&registration.id, UpdateRequest::default(), moved, now);
        assert!(!registry.is_secure_address(first), "the device left it");
        assert!(registry.is_secure_address(moved));
        let again = registry.register(secure, moved, now);
        assert!(registry.is_secure_address(moved), "replaced, still there");
        registry.deregister(&again.id);
        assert!(!registry.is_secure_address(moved));
    }

    #[tokio::test]
    async fn a_follower_sees_every_event_of_its_endpoint_until_dropped() {
        let registry = Arc::new(Registry::new());
        let now = Instant::now();
        let mut events = registry.follow("dev");
        let first = registry.register(request("dev", 10), addr(), now);
        registry.register(request("other", 10), addr(), now);
        registry.update(&first.id, UpdateRequest::default(), addr(), now);
        let second = registry.register(request("dev", 10), addr(), now);
        registry.deregister(&second.id);
        let third = registry.register(request("dev", 10), addr(), now);
        registry.expire(now + Duration::from_secs(11));
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(match events.next().await {
                RegistrationEvent::Registered(r) => ("registered", r.id),
                RegistrationEvent::Updated(r) => ("updated", r.id),
                RegistrationEvent::Deregistered(r) => ("deregistered", r.id),
                RegistrationEvent::Expired(r) => ("expired", r.id),
            });
        }
        let expected = [
            ("registered", &first.id),
            ("updated", &first.id),
            ("registered", &second.id),
            ("deregistered", &second.id),
            ("registered", &third.id),
            ("expired", &third.id),
        ];
        assert_eq!(
            seen.iter().map(|(k, id)| (*k, id)).collect::<Vec<_>>(),
            expected
        );
        drop(events);
        assert!(lock(&registry.state).followers.is_empty(), "unsubscribed");
    }

    #[test]
    fn a_follower_that_reads_after_a_storm_of_registers_misses_none() {
        let registry = Registry::new();
        let mut events = registry.subscribe();
        let storm = 50_000;
        registry.register_storm(storm);
        for n in 0..storm {
            match events.try_recv() {
                Ok(RegistrationEvent::Registered(r)) => assert_eq!(r.endpoint, format!("dev-{n}")),
                other => panic!("event {n}: {other:?}"),
            }
        }
    }

    fn endpoints(followed: Option<Followed>) -> Vec<String> {
        match followed {
            Some(Followed::Events(events)) => (events.iter())
                .map(|event| event.registration().endpoint.clone())
                .collect(),
            other => panic!("events expected, not {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_follower_takes_what_is_queued_at_once_and_is_told_what_it_missed() {
        let registry = Registry::new();
        let mut events = registry.subscribe();
        let name = |n: usize| format!("dev-{n}");
        registry.register_storm(BATCH + 5);
        let first = endpoints(next_events(&mut events).await);
        assert_eq!(
            first,
            (0..BATCH).map(name).collect::<Vec<_>>(),
            "a batch, in order"
        );
        let rest = endpoints(next_events(&mut events).await);
        assert_eq!(rest, (BATCH..BATCH + 5).map(name).collect::<Vec<_>>());

        // The same devices again and more: ten events past what the broadcast holds.
        let storm = EVENTS + 10;
        registry.register_storm(storm);
        assert!(
            matches!(next_events(&mut events).await, Some(Followed::Missed(10))),
            "the follower is told it missed the oldest ten"
        );
        let after = endpoints(next_events(&mut events).await);
        assert_eq!(after[0], name(10), "then goes on from the oldest held");

        let updates = registry.as_updates();
        assert_eq!(updates.len(), storm, "every registration held");
        assert!(
            (updates.iter()).all(|event| matches!(event, RegistrationEvent::Updated(_))),
            "each as an Update"
        );
    }

    #[test]
    fn the_cycle_is_measured_between_updates_never_from_the_register() {
        let registry = Registry::new();
        let secs = Duration::from_secs;
        let start = Instant::now();
        let registered = registry.register(request("dev", 3600), addr(), start);
        let update = |at: u64| {
            let update = UpdateRequest::default();
            (registry.update(&registered.id, update, addr(), start + secs(at)))
                .expect("registered")
                .cycle
                .estimate()
        };
        // Awake 80 s longer after its Register than in its cycle of 90 s.
        assert_eq!(update(170), None, "the Register's interval is no cycle");
        assert_eq!(update(260), None, "one interval is not trusted alone");
        assert_eq!(update(350), Some(secs(90)));
        assert_eq!(update(440), Some(secs(90)));
    }
}
