//! `Server`: the engine's layers assembled on one CoAP socket: registration interface, registry
//! with lifetime expiry, presence (which devices are reachable now), device management, the
//! package server for pulling devices, and delivery (push or pull, with breakpoint resume).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::coap::{Endpoint, EndpointConfig, Network};
use crate::edge::{EdgeCounters, EdgeLimits};
use crate::lwm2m::presence::DEFAULT_QUEUE_WINDOW;
use crate::lwm2m::server::spawn_expiry;
use crate::lwm2m::{DeviceManagement, Presence, RegistrationInterface, Registry};
use crate::transfer::{Delivery, DeliveryConfig, PackageServer, PackageShelf, ResumeBook};

/// How to run the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// UDP address for CoAP (LwM2M default port 5683).
    pub coap_addr: SocketAddr,
    /// The network the CoAP socket is bound on: real UDP, or a simulated one in tests.
    pub network: Network,
    /// CoAP timers and block size.
    pub coap: EndpointConfig,
    /// Delivery timers. An empty `package_authority` means the bound CoAP address.
    pub delivery: DeliveryConfig,
    /// How long a queue-mode device stays reachable after its last Register or Update.
    pub queue_window: Duration,
    /// How often expired registrations are removed.
    pub expiry_period: Duration,
    /// What an unauthenticated peer may make the engine do.
    pub edge: EdgeLimits,
    /// The secret Package URI tokens are derived from; `None`: a random one (URIs then change
    /// when the engine starts again).
    pub package_uri_secret: Option<[u8; 32]>,
}

impl ServerConfig {
    /// An engine on an ephemeral loopback port with loopback timers, for tests, the demo and
    /// benchmarks.
    pub fn loopback() -> Self {
        ServerConfig {
            coap_addr: "127.0.0.1:0".parse().expect("address"),
            coap: EndpointConfig {
                params: crate::coap::TransmissionParams::fast(),
                ..EndpointConfig::default()
            },
            delivery: DeliveryConfig {
                retry_backoff: (Duration::from_millis(50), Duration::from_secs(1)),
                suspend_limit: Duration::from_secs(600),
                package_authority: String::new(),
                ..DeliveryConfig::default()
            },
            edge: EdgeLimits::loopback(),
            ..ServerConfig::default()
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            coap_addr: "0.0.0.0:5683".parse().expect("address"),
            network: Network::udp(),
            coap: EndpointConfig::default(),
            delivery: DeliveryConfig {
                package_authority: String::new(),
                ..DeliveryConfig::default()
            },
            queue_window: DEFAULT_QUEUE_WINDOW,
            expiry_period: Duration::from_secs(1),
            edge: EdgeLimits::default(),
            package_uri_secret: None,
        }
    }
}

/// A running engine.
pub struct Server {
    /// The CoAP socket.
    pub endpoint: Endpoint,
    /// The network it is bound on (devices simulated beside the engine bind theirs there too).
    pub network: Network,
    /// Live registrations.
    pub registry: Arc<Registry>,
    /// Whether registered devices are reachable now (queue mode).
    pub presence: Presence,
    /// Read / Write / Execute / Observe towards devices.
    pub management: DeviceManagement,
    /// The packages the engine delivers and serves at their Package URI.
    pub shelf: PackageShelf,
    /// Push and pull delivery, with breakpoint resume.
    pub delivery: Delivery,
    /// The edge's limits, as configured.
    pub edge_limits: EdgeLimits,
    /// What the edge's defences did.
    pub edge: Arc<EdgeCounters>,
    /// Stops expiry when the server is dropped.
    expiry: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds the CoAP socket and starts serving registrations, with resume points in memory.
    pub async fn start(config: ServerConfig) -> std::io::Result<Server> {
        Server::start_with_book(config, ResumeBook::new()).await
    }

    /// Binds the CoAP socket and starts serving registrations, resuming deliveries from `book`.
    pub async fn start_with_book(
        config: ServerConfig,
        book: ResumeBook,
    ) -> std::io::Result<Server> {
        let mut coap = config.coap;
        coap.dedup_cache_bytes = config.edge.dedup_cache_bytes;
        let endpoint = Endpoint::bind_on(&config.network, config.coap_addr, coap).await?;
        let registry = Arc::new(Registry::with_unproven_ttl(config.edge.unproven_ttl));
        let edge = Arc::new(EdgeCounters::default());
        let secret = config
            .package_uri_secret
            .unwrap_or_else(crate::entropy::random);
        let shelf = PackageShelf::with_uri_secret(secret);
        let packages = PackageServer::new(
            shelf.clone(),
            config.coap.max_block_size,
            (!config.edge.packages_to_anyone).then(|| registry.clone()),
            edge.clone(),
        );
        endpoint.set_handler(Arc::new(RegistrationInterface::new(
            registry.clone(),
            Some(Arc::new(packages)),
            config.edge.clone(),
            edge.clone(),
        )));
        let management = DeviceManagement::new(endpoint.clone());
        let mut delivery_config = config.delivery;
        if delivery_config.package_authority.is_empty() {
            let bound = endpoint.local_addr();
            if bound.ip().is_unspecified() {
                tracing::warn!(
                    %bound,
                    "no package authority configured: pulling devices are given {bound}, \
                     which they cannot reach; set the host:port devices reach the engine at \
                     (fota serve --package-authority)"
                );
            }
            delivery_config.package_authority = bound.to_string();
        }
        let presence = Presence::new(registry.clone(), config.queue_window);
        let delivery = Delivery::new(
            management.clone(),
            presence.clone(),
            book,
            shelf.clone(),
            delivery_config,
        );
        let expiry = spawn_expiry(&registry, config.expiry_period);
        Ok(Server {
            endpoint,
            network: config.network,
            registry,
            presence,
            management,
            shelf,
            delivery,
            edge_limits: config.edge,
            edge,
            expiry,
        })
    }

    /// The CoAP address devices register to.
    pub fn coap_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.expiry.abort();
    }
}
