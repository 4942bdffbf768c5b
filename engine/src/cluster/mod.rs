//! Several engine nodes on one PostgreSQL database, behind a UDP load balancer. Every node
//! serves CoAP and owns the devices whose last Register or Update it received
//! ([`members`]); one node, the coordinator (the one holding the database's advisory lock),
//! runs the scheduler and the API, and sends each attempt and each integrator's operation to
//! the device's owner over the internal link ([`attempts`], [`devices`], [`service`],
//! [`link`]); the other nodes, members, tell it the devices they learn of and that wake up
//! ([`notices`]) and take over when it dies ([`member`]).

pub mod attempts;
pub mod devices;
pub mod forward;
pub mod link;
pub mod member;
pub mod members;
pub mod notices;
pub mod service;
pub mod underway;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

pub use attempts::ClusterAttempts;
pub use devices::ClusterDevices;
pub use members::{Membership, Owner};
pub use notices::ClusterNeighbours;

use crate::campaign::{Attempts, DeviceAttempts};
use crate::journal::Journal;
use crate::lwm2m::registry::EVENTS;
use crate::lwm2m::{DeviceAccess, LocalDevices, RegistrationEvent};
use crate::store::Store;
use crate::webhooks::Webhooks;
use underway::Underway;

/// A node's place in a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster.
    pub node: String,
    /// TCP address the internal link is bound on (its port, once bound).
    pub internal_addr: SocketAddr,
    /// host:port the other nodes reach the internal link at.
    pub advertise: String,
    /// host:port the other nodes reach this node's HTTP API at (when it coordinates).
    pub api: String,
    /// The secret every node proves on the internal link.
    pub secret: Arc<[u8]>,
}

/// How the scheduler's attempts and the integrators' operations reach devices.
pub type Reach = (Arc<dyn Attempts>, Arc<dyn DeviceAccess>);

/// What a node does for the devices registered to it.
pub struct Local {
    /// Their attempts.
    pub attempts: DeviceAttempts,
    /// Integrators' operations on them.
    pub devices: LocalDevices,
}

/// A node's own parts in a cluster, running until its handles are aborted.
pub struct Node {
    /// Its records.
    pub membership: Membership,
    /// Its heartbeat, its ownership follower and its internal service.
    pub handles: Vec<JoinHandle<()>>,
    /// Its registration events, each passed on once the device's ownership is written.
    pub claimed: broadcast::Sender<RegistrationEvent>,
    /// Its attempts on its devices.
    attempts: Arc<DeviceAttempts>,
    /// The attempts under way on its devices, whoever asked.
    underway: Arc<Underway>,
    /// Integrators' operations on its devices.
    devices: Arc<LocalDevices>,
    /// Other nodes' devices that woke up (on the coordinator, from members' word).
    woke: broadcast::Sender<String>,
    secret: Arc<[u8]>,
}

impl Node {
    /// Joins the cluster: beats, claims the devices registering here, and serves the
    /// internal link on `listener` (attempts and operations on this node's devices with
    /// `local`; devices other nodes learned of, indexed into its catalog; on the coordinator,
    /// their registration events, written to `journal`, and their wake-ups).
    pub fn start(
        config: &ClusterConfig,
        store: &Arc<dyn Store>,
        listener: TcpListener,
        local: Local,
        journal: Option<(Journal, Webhooks)>,
    ) -> Node {
        let Local { attempts, devices } = local;
        let clock = attempts.clock;
        let addresses = (config.advertise.as_str(), config.api.as_str());
        let membership = Membership::new(store.clone(), clock, &config.node, addresses);
        let heartbeat = members::spawn_heartbeat(membership.clone());
        let registry = attempts.presence.registry().clone();
        let (claimed, _) = broadcast::channel(EVENTS);
        let following = members::follow_ownership(registry, membership.clone(), claimed.clone());
        let ownership = tokio::spawn(following);
        let (woke, _) = broadcast::channel(EVENTS);
        let catalog = attempts.catalog.clone();
        let (attempts, devices) = (Arc::new(attempts), Arc::new(devices));
        let underway = Underway::new(membership.clone(), attempts.clone());
        let service = service::Service {
            secret: config.secret.clone(),
            underway: underway.clone(),
            devices: devices.clone(),
            catalog,
            journal,
            woke: woke.clone(),
        };
        let service = Arc::new(service);
        let serving = tokio::spawn(service::serve(listener, service));
        Node {
            membership,
            handles: vec![heartbeat, ownership, serving],
            claimed,
            attempts,
            underway,
            devices,
            woke,
            secret: config.secret.clone(),
        }
    }

    /// The scheduler's attempts (those of the coordinator of `epoch`) and the integrators'
    /// operations, each sent to its device's owner.
    pub fn routed(&self, epoch: u64) -> Reach {
        let attempts = ClusterAttempts {
            local: self.attempts.clone(),
            underway: self.underway.clone(),
            epoch,
            membership: self.membership.clone(),
            secret: self.secret.clone(),
            presence: self.attempts.presence.clone(),
            catalog: self.attempts.catalog.clone(),
        };
        let devices = ClusterDevices {
            local: self.devices.clone(),
            membership: self.membership.clone(),
            secret: self.secret.clone(),
            claimed: self.claimed.clone(),
            woke: self.woke.clone(),
        };
        (Arc::new(attempts), Arc::new(devices))
    }
}
