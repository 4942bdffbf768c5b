//! Several engine nodes on one PostgreSQL database, behind a UDP load balancer. Every node
//! serves CoAP and owns the devices whose last Register or Update it received
//! ([`members`]); one node, the coordinator (the one holding the database's advisory lock),
//! runs the scheduler and the API, and sends each attempt to the device's owner over the
//! internal link ([`attempts`], [`service`], [`link`]); the other nodes, members, tell it the
//! devices they learn of ([`notices`]) and take over when it dies ([`member`]).

pub mod attempts;
pub mod forward;
pub mod link;
pub mod member;
pub mod members;
pub mod notices;
pub mod service;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use attempts::ClusterAttempts;
pub use members::{Membership, Owner};
pub use notices::ClusterNeighbours;

use crate::campaign::{Attempts, DeviceAttempts};
use crate::journal::Journal;
use crate::store::Store;
use crate::webhooks::Webhooks;

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

/// A node's own parts in a cluster, running until its handles are aborted.
pub struct Node {
    /// Its records.
    pub membership: Membership,
    /// Its heartbeat, its ownership follower and its internal service.
    pub handles: Vec<JoinHandle<()>>,
    /// Its attempts on its devices.
    local: Arc<DeviceAttempts>,
    secret: Arc<[u8]>,
}

impl Node {
    /// Joins the cluster: beats, claims the devices registering here, and serves the
    /// internal link on `listener` (attempts on this node's devices with `attempts`; devices
    /// other nodes learned of, indexed into its catalog; on the coordinator, their
    /// registration events, written to `journal`).
    pub fn start(
        config: &ClusterConfig,
        store: &Arc<dyn Store>,
        listener: TcpListener,
        attempts: DeviceAttempts,
        journal: Option<(Journal, Webhooks)>,
    ) -> Node {
        let clock = attempts.clock;
        let addresses = (config.advertise.as_str(), config.api.as_str());
        let membership = Membership::new(store.clone(), clock, &config.node, addresses);
        let heartbeat = members::spawn_heartbeat(membership.clone());
        let registry = attempts.presence.registry().clone();
        let ownership = tokio::spawn(members::follow_ownership(registry, membership.clone()));
        let catalog = attempts.catalog.clone();
        let local = Arc::new(attempts);
        let service = service::Service {
            secret: config.secret.clone(),
            membership: membership.clone(),
            attempts: local.clone(),
            catalog,
            journal,
            running: Default::default(),
        };
        let service = Arc::new(service);
        let serving = tokio::spawn(service::serve(listener, service));
        Node {
            membership,
            handles: vec![heartbeat, ownership, serving],
            local,
            secret: config.secret.clone(),
        }
    }

    /// The scheduler's attempts, each sent to its device's owner.
    pub fn routed_attempts(&self) -> Arc<dyn Attempts> {
        Arc::new(ClusterAttempts {
            local: self.local.clone(),
            membership: self.membership.clone(),
            secret: self.secret.clone(),
            presence: self.local.presence.clone(),
            catalog: self.local.catalog.clone(),
        })
    }
}
