//! `Server`: the engine's layers assembled on one CoAP socket: registration interface, registry
//! with lifetime expiry, presence (which devices are reachable now), device management, the
//! package server for pulling devices, and delivery (push or pull, with breakpoint resume).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::coap::dtls::{DtlsConfig, DtlsCounters, DtlsSocket, PlainAndSecure, PskKeys};
use crate::coap::{DatagramSocket, Endpoint, EndpointConfig, Network};
use crate::edge::{EdgeCounters, EdgeLimits};
use crate::lwm2m::presence::DEFAULT_QUEUE_WINDOW;
use crate::lwm2m::server::spawn_expiry;
use crate::lwm2m::{
    Admission, DeviceManagement, IdentityBinding, Presence, RegistrationInterface, Registry,
};
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
    /// coaps (CoAP over DTLS with pre-shared keys) beside plain CoAP; `None`: plain only.
    pub coaps: Option<CoapsConfig>,
    /// The devices' keys and the endpoints their identities are bound to; needed with coaps.
    pub credentials: Option<DeviceKeys>,
}

/// How the engine serves coaps.
#[derive(Debug, Clone, PartialEq)]
pub struct CoapsConfig {
    /// UDP address for coaps (LwM2M default port 5684).
    pub addr: SocketAddr,
    /// Suites, limits and timers of the DTLS server.
    pub dtls: DtlsConfig,
    /// Refuse every registration over plain CoAP (the plain socket still serves nothing else
    /// to unregistered sources than before).
    pub require: bool,
    /// host:port pulling devices on coaps reach the engine at; empty: the bound address.
    pub package_authority: String,
}

impl Default for CoapsConfig {
    fn default() -> Self {
        CoapsConfig {
            addr: "0.0.0.0:5684".parse().expect("address"),
            dtls: DtlsConfig::default(),
            require: false,
            package_authority: String::new(),
        }
    }
}

/// What the DTLS server and the registration rules read of the devices' credentials.
pub trait DeviceCredentials: PskKeys + IdentityBinding {}

impl<T: PskKeys + IdentityBinding> DeviceCredentials for T {}

/// The devices' credentials, shared. Two are equal when they are the same store.
#[derive(Clone)]
pub struct DeviceKeys(pub Arc<dyn DeviceCredentials>);

impl PartialEq for DeviceKeys {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceKeys(..)")
    }
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
            coaps: None,
            credentials: None,
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
    /// The DTLS server, when coaps is on.
    pub dtls: Option<Arc<DtlsSocket>>,
    /// Stops expiry when the server is dropped.
    expiry: tokio::task::JoinHandle<()>,
    /// Stops freeing idle DTLS sessions when the server is dropped.
    sweeper: Option<tokio::task::JoinHandle<()>>,
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
        let registry = Arc::new(Registry::with_unproven_ttl(config.edge.unproven_ttl));
        let (socket, dtls) = bind_sockets(&config, &registry).await?;
        let endpoint = Endpoint::from_socket(socket, coap);
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
        endpoint.set_handler(Arc::new(
            RegistrationInterface::new(
                registry.clone(),
                Some(Arc::new(packages)),
                config.edge.clone(),
                edge.clone(),
                admission(&config),
            )
            .carrying_estimates(endpoint.downgrade()),
        ));
        let management = DeviceManagement::new(endpoint.clone());
        let mut delivery_config = config.delivery;
        if let (Some(coaps), Some(dtls)) = (&config.coaps, &dtls) {
            delivery_config.secure_package_authority = match coaps.package_authority.as_str() {
                "" => dtls.local_addr().to_string(),
                authority => authority.to_string(),
            };
        }
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
        let sweeper = dtls
            .clone()
            .map(|dtls| spawn_sweeper(dtls, config.expiry_period));
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
            dtls,
            expiry,
            sweeper,
        })
    }

    /// The CoAP address devices register to.
    pub fn coap_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }

    /// The coaps address devices register to, when coaps is on.
    pub fn coaps_addr(&self) -> Option<SocketAddr> {
        self.dtls.as_ref().map(|dtls| dtls.local_addr())
    }

    /// What the DTLS server did, when coaps is on.
    pub fn dtls_counters(&self) -> Option<Arc<DtlsCounters>> {
        self.dtls.as_ref().map(|dtls| dtls.counters())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.expiry.abort();
        if let Some(sweeper) = &self.sweeper {
            sweeper.abort();
        }
    }
}

/// The endpoint's socket: plain CoAP, or plain and coaps seen as one (the devices `registry`
/// holds as registered over coaps never spoken to in plain).
async fn bind_sockets(
    config: &ServerConfig,
    registry: &Arc<Registry>,
) -> std::io::Result<(Arc<dyn DatagramSocket>, Option<Arc<DtlsSocket>>)> {
    let plain = config.network.bind(config.coap_addr).await?;
    let Some(coaps) = &config.coaps else {
        return Ok((plain, None));
    };
    let Some(credentials) = &config.credentials else {
        return Err(std::io::Error::other(
            "coaps needs the devices' credentials",
        ));
    };
    let raw = config.network.bind(coaps.addr).await?;
    let keys: Arc<dyn PskKeys> = credentials.0.clone();
    let secure = Arc::new(DtlsSocket::new(raw, keys, coaps.dtls.clone())?);
    let both = Arc::new(PlainAndSecure::new(plain, secure.clone(), registry.clone()));
    Ok((both, Some(secure)))
}

/// The registration rules: identities bound to endpoints when the devices have credentials.
fn admission(config: &ServerConfig) -> Admission {
    match &config.credentials {
        Some(credentials) => {
            let binding: Arc<dyn IdentityBinding> = credentials.0.clone();
            let require = config.coaps.as_ref().is_some_and(|coaps| coaps.require);
            Admission::new(binding, require)
        }
        None => Admission::default(),
    }
}

/// Frees idle DTLS sessions every `period`, until aborted.
fn spawn_sweeper(dtls: Arc<DtlsSocket>, period: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            dtls.sweep();
        }
    })
}
