//! Who is in the cluster and which node owns which device: each node's record with its
//! heartbeat (a node is alive while its last beat is younger than [`LEASE`]), each device's
//! owner, the node that received its last Register or Update, and the coordinator with its
//! epoch (raised by each node that becomes it; every node reads it with its heartbeat). All
//! live in the shared store, so every node reads the same answer.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::clock::{Clock, UnixMillis};
use crate::lwm2m::registry::{BATCH, Followed, next_events};
use crate::lwm2m::{RegistrationEvent, Registry};
use crate::store::{Batch, Store, StoreError, StoreExt, key_segment, waiting};

/// How often a node writes its heartbeat.
pub const BEAT: Duration = Duration::from_secs(1);

/// How long a node is taken for alive after its last heartbeat: its devices are offline to
/// the scheduler once it is over, until they come back through another node.
pub const LEASE: Duration = Duration::from_secs(5);

const NODES: &str = "node/";
const OWNERS: &str = "owner/";
/// Names the coordinator, written by each node that becomes it.
const COORDINATOR: &str = "cluster/coordinator";
/// The coordinator's epoch: one more than its predecessor's.
const EPOCH: &str = "cluster/epoch";

/// A node, as the others find it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeRecord {
    /// host:port of its internal link.
    internal: String,
    /// host:port of its HTTP API.
    api: String,
    /// Its last heartbeat.
    beat_at: UnixMillis,
}

/// Which node a device belongs to: the one that received its last Register or Update.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OwnerRecord {
    node: String,
}

/// Who runs a device's attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This node: the device's registration is here (or no other node claimed it).
    Here,
    /// Another node, alive, reached on its internal link at `internal`.
    Node {
        /// Its name.
        node: String,
        /// host:port of its internal link.
        internal: String,
    },
    /// Another node whose lease ran out: the device is offline until it comes back.
    Lost,
}

/// This node's view of the cluster's records. Cheap to clone.
#[derive(Clone)]
pub struct Membership {
    store: Arc<dyn Store>,
    clock: Clock,
    node: Arc<str>,
    internal: Arc<str>,
    api: Arc<str>,
    /// The newest coordinator's epoch this node has seen (0: none yet).
    epoch: Arc<watch::Sender<u64>>,
}

impl Membership {
    /// Node `node` on `store`, reached by the others at `internal` (host:port of its
    /// internal link, and of its HTTP API).
    pub fn new(
        store: Arc<dyn Store>,
        clock: Clock,
        node: &str,
        (internal, api): (&str, &str),
    ) -> Membership {
        Membership {
            store,
            clock,
            node: node.into(),
            internal: internal.into(),
            api: api.into(),
            epoch: Arc::new(watch::Sender::new(0)),
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Writes this node's heartbeat, and reads the coordinator's epoch.
    pub fn beat(&self) -> Result<(), StoreError> {
        let record = NodeRecord {
            internal: self.internal.to_string(),
            api: self.api.to_string(),
            beat_at: self.clock.now(),
        };
        self.store.put(&node_key(&self.node), &record)?;
        self.saw_epoch(self.store.get(EPOCH)?.unwrap_or_default());
        Ok(())
    }

    /// The newest coordinator's epoch this node has seen (0: none yet).
    pub fn epoch(&self) -> u64 {
        *self.epoch.borrow()
    }

    /// Follows [`Membership::epoch`].
    pub fn epochs(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    /// A coordinator of `epoch` exists (its attempt came, or the store says so).
    pub fn saw_epoch(&self, epoch: u64) {
        self.epoch.send_if_modified(|newest| {
            let newer = epoch > *newest;
            if newer {
                *newest = epoch;
            }
            newer
        });
    }

    /// `endpoint` registered or sent an Update here: it is this node's from now on.
    pub fn claim(&self, endpoint: &str) -> Result<(), StoreError> {
        self.claim_all(&[endpoint])
    }

    /// Claims each of `endpoints` for this node, in one read of their owners and one write of
    /// those this node did not hold already.
    pub fn claim_all(&self, endpoints: &[&str]) -> Result<(), StoreError> {
        if endpoints.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = endpoints
            .iter()
            .map(|endpoint| owner_key(endpoint))
            .collect();
        let owners = self.store.get_many::<OwnerRecord>(&keys)?;
        let record = OwnerRecord {
            node: self.node.to_string(),
        };
        let mut batch = Batch::new();
        for (key, owner) in keys.into_iter().zip(owners) {
            if owner.is_none_or(|owner| *owner.node != *self.node) {
                batch.put(key, &record);
            }
        }
        match batch.puts.is_empty() {
            true => Ok(()),
            false => self.store.apply(batch),
        }
    }

    /// Whether no other node claimed `endpoint` since this one did: a registration that
    /// ended here is the device's last only then.
    pub fn owns(&self, endpoint: &str) -> Result<bool, StoreError> {
        let owner = self.store.get::<OwnerRecord>(&owner_key(endpoint))?;
        Ok(owner.is_none_or(|owner| *owner.node == *self.node))
    }

    /// This node runs the scheduler from now on: the others send it what they learn, and
    /// refuse its predecessors' attempts once they see its epoch (returned).
    pub fn crown(&self) -> Result<u64, StoreError> {
        self.beat()?;
        let epoch = self.store.get::<u64>(EPOCH)?.unwrap_or_default() + 1;
        let mut batch = Batch::new();
        batch
            .put(EPOCH, &epoch)
            .put(COORDINATOR, &self.node.to_string());
        self.store.apply(batch)?;
        self.saw_epoch(epoch);
        Ok(epoch)
    }

    /// The coordinator's internal link (host:port), once one was crowned and while it beats.
    pub fn coordinator(&self) -> Result<Option<String>, StoreError> {
        Ok(self.coordinator_record()?.map(|record| record.internal))
    }

    /// The coordinator's HTTP API (host:port), once one was crowned and while it beats.
    pub fn coordinator_api(&self) -> Result<Option<String>, StoreError> {
        Ok(self.coordinator_record()?.map(|record| record.api))
    }

    fn coordinator_record(&self) -> Result<Option<NodeRecord>, StoreError> {
        match self.store.get::<String>(COORDINATOR)? {
            Some(node) => self.alive(&node),
            None => Ok(None),
        }
    }

    /// `node`'s record while its lease holds.
    fn alive(&self, node: &str) -> Result<Option<NodeRecord>, StoreError> {
        let record = self.store.get::<NodeRecord>(&node_key(node))?;
        let lease = u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX);
        let now = self.clock.now();
        Ok(record.filter(|record| now.saturating_sub(record.beat_at) < lease))
    }

    /// Who runs `endpoint`'s attempts now.
    pub fn owner(&self, endpoint: &str) -> Result<Owner, StoreError> {
        let Some(owner) = self.store.get::<OwnerRecord>(&owner_key(endpoint))? else {
            return Ok(Owner::Here);
        };
        if *owner.node == *self.node {
            return Ok(Owner::Here);
        }
        Ok(match self.alive(&owner.node)? {
            Some(node) => Owner::Node {
                node: owner.node,
                internal: node.internal,
            },
            None => Owner::Lost,
        })
    }
}

fn node_key(node: &str) -> String {
    format!("{NODES}{}", key_segment(node))
}

fn owner_key(endpoint: &str) -> String {
    format!("{OWNERS}{}", key_segment(endpoint))
}

/// Writes `membership`'s heartbeat every [`BEAT`], until aborted.
pub fn spawn_heartbeat(membership: Membership) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(BEAT);
        loop {
            tick.tick().await;
            let beating = membership.clone();
            let beat = tokio::task::spawn_blocking(move || beating.beat()).await;
            if let Ok(Err(error)) = beat {
                tracing::error!(%error, "heartbeat not written");
            }
        }
    })
}

/// Claims every device that registers or sends an Update to `registry`, until it closes;
/// passes each of the registry's events on to `claimed` once that is written (what follows it
/// there finds the device at this node). The events queued are claimed together, so a storm of
/// Registers costs a round trip to the store per batch, not per device; a follower that fell
/// so far behind that it missed some claims every device registered here.
pub async fn follow_ownership(
    registry: Arc<Registry>,
    membership: Membership,
    claimed: broadcast::Sender<RegistrationEvent>,
) {
    let mut events = registry.subscribe();
    while let Some(followed) = next_events(&mut events).await {
        let events = match followed {
            Followed::Events(events) => events,
            Followed::Missed(missed) => {
                tracing::warn!(
                    missed,
                    "registration events missed: claiming every device registered here"
                );
                registry.as_updates()
            }
        };
        for batch in events.chunks(BATCH) {
            claim_registered(&membership, batch);
            for event in batch {
                let _ = claimed.send(event.clone());
            }
            // What follows `claimed` takes its share between batches.
            tokio::task::yield_now().await;
        }
    }
}

/// Claims the devices that registered or sent an Update in `events`.
fn claim_registered(membership: &Membership, events: &[RegistrationEvent]) {
    let endpoints: Vec<&str> = (events.iter())
        .filter_map(|event| Some(event.contact()?.endpoint.as_str()))
        .collect();
    if let Err(error) = waiting(|| membership.claim_all(&endpoints)) {
        tracing::error!(devices = endpoints.len(), %error, "ownership not written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    fn store() -> Arc<dyn Store> {
        Arc::new(SledStore::temporary().unwrap())
    }

    #[tokio::test]
    async fn a_storm_of_registers_is_claimed_whole_even_past_what_the_follower_was_given() {
        use crate::lwm2m::registry::EVENTS;
        let store = store();
        let clock = Clock::starting_at(1_000_000);
        let a = Membership::new(store.clone(), clock, "a", ("x:1", "x:2"));
        a.beat().unwrap();
        let registry = Arc::new(Registry::new());
        let (claimed, _) = broadcast::channel(16);
        let follower = tokio::spawn(follow_ownership(registry.clone(), a.clone(), claimed));
        // It subscribes, then waits for the first event.
        tokio::task::yield_now().await;
        let storm = EVENTS + 100;
        registry.register_storm(storm);
        // Without yielding: its first read finds it fell behind by the oldest 100, so it
        // claims every registration held.
        let bound = tokio::time::Instant::now() + Duration::from_secs(60);
        while store.scan_raw(OWNERS).unwrap().len() < storm {
            assert!(
                tokio::time::Instant::now() < bound,
                "not every device was claimed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(a.owns("dev-0").unwrap());
        follower.abort();
    }

    #[test]
    fn a_device_belongs_to_the_node_that_claimed_it_last_while_that_node_beats() {
        let store = store();
        let clock = Clock::starting_at(1_000_000);
        let a = Membership::new(store.clone(), clock, "a", ("10.0.0.1:7000", "10.0.0.1:80"));
        let b = Membership::new(store.clone(), clock, "b", ("10.0.0.2:7000", "10.0.0.2:80"));
        a.beat().unwrap();
        b.beat().unwrap();
        assert_eq!(a.owner("dev").unwrap(), Owner::Here, "nobody claimed it");
        a.claim("dev").unwrap();
        let at_a = Owner::Node {
            node: "a".into(),
            internal: "10.0.0.1:7000".into(),
        };
        assert_eq!(b.owner("dev").unwrap(), at_a);
        assert!(a.owns("dev").unwrap() && !b.owns("dev").unwrap());
        b.claim("dev").unwrap();
        assert_eq!(b.owner("dev").unwrap(), Owner::Here);
        assert!(
            !a.owns("dev").unwrap(),
            "a's registration that ends is not the last"
        );
    }

    #[test]
    fn a_device_of_a_node_that_stopped_beating_is_lost_until_it_comes_back() {
        let store = store();
        let start = 1_000_000;
        let a = Membership::new(
            store.clone(),
            Clock::starting_at(start),
            "a",
            ("x:1", "x:2"),
        );
        a.beat().unwrap();
        a.claim("dev").unwrap();
        let later = start + u64::try_from(LEASE.as_millis()).unwrap() + 1_000;
        let b = Membership::new(
            store.clone(),
            Clock::starting_at(later),
            "b",
            ("y:1", "y:2"),
        );
        assert_eq!(b.owner("dev").unwrap(), Owner::Lost);
        b.claim("dev").unwrap();
        assert_eq!(b.owner("dev").unwrap(), Owner::Here);
    }

    #[test]
    fn each_coordinator_has_a_newer_epoch_that_the_other_nodes_read_with_their_beat() {
        let store = store();
        let clock = Clock::starting_at(1_000_000);
        let a = Membership::new(store.clone(), clock, "a", ("x:1", "x:2"));
        let b = Membership::new(store.clone(), clock, "b", ("y:1", "y:2"));
        assert_eq!(a.crown().unwrap(), 1);
        assert_eq!(b.epoch(), 0, "not read yet");
        b.beat().unwrap();
        assert_eq!(b.epoch(), 1);
        assert_eq!(b.crown().unwrap(), 2, "b takes a's place");
        assert_eq!(a.epoch(), 1);
        a.beat().unwrap();
        assert_eq!(a.epoch(), 2, "a learns it was deposed");
        a.saw_epoch(1);
        assert_eq!(a.epoch(), 2, "an older epoch lowers nothing");
        assert_eq!(b.coordinator().unwrap().as_deref(), Some("y:1"));
    }
}
