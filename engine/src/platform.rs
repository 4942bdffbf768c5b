//! `Platform`: the whole engine a host runs: the CoAP server, the store (sled or PostgreSQL),
//! the plugin registry, the catalog, the campaign scheduler, the operations queued for devices
//! and the shared observations, and onboarding (the follower that keeps the catalog's devices
//! current from registrations).

use std::sync::Arc;

use crate::campaign::{CampaignError, Campaigns, DeviceAttempts};
use crate::catalog::{Catalog, CatalogError, Credentials};
use crate::clock::Clock;
use crate::cluster::{self, ClusterConfig, ClusterNeighbours, Reach};
use crate::journal::Journal;
use crate::lwm2m::{DeviceAccess, LocalDevices, OperationQueue};
use crate::onboarding::{Neighbours, follow_registrations};
use crate::plugin::{
    HostConfig, KeptPlugins, PluginError, PluginHost, PluginRegistry, RestoreError,
};
use crate::server::{DeviceKeys, Server, ServerConfig};
use crate::store::{Store, StoreError, StoreExt, StoreLocation};
use crate::transfer::ResumeBook;
use crate::webhooks::registrations::journal_registrations;
use crate::webhooks::{WebhookConfig, Webhooks};

/// How to run the platform.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    /// The CoAP side.
    pub server: ServerConfig,
    /// Where the store lives: a temporary one (tests, demo), sled in a directory, or
    /// PostgreSQL.
    pub store: StoreLocation,
    /// Plugin limits.
    pub plugins: HostConfig,
    /// Webhook deliveries.
    pub webhooks: WebhookConfig,
}

/// Why the platform did not start.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("plugins: {0}")]
    Plugin(#[from] PluginError),
    #[error("plugin host: {0}")]
    Host(String),
    #[error("{0}: the engine does not start without a plugin it was given")]
    KeptPlugin(#[from] RestoreError),
    #[error("CoAP socket: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Campaign(#[from] CampaignError),
}

/// A running engine with its store, catalog and tasks.
pub struct Platform {
    /// CoAP: registrations, device management, delivery.
    pub server: Server,
    /// Persistence.
    pub store: Arc<dyn Store>,
    /// Plugins per vendor and model.
    pub plugins: Arc<PluginRegistry>,
    /// The plugins installed at run time, bound again at every start.
    pub kept_plugins: KeptPlugins,
    /// Devices, groups, firmware, packages.
    pub catalog: Catalog,
    /// Upgrade tasks.
    pub campaigns: Campaigns,
    /// Operations integrators queued for devices.
    pub operations: OperationQueue,
    /// Integrators' operations on devices, wherever they are registered.
    pub devices: Arc<dyn DeviceAccess>,
    /// The numbered events integrators read (`/v1/events`, webhooks).
    pub journal: Journal,
    /// Integrators' subscriptions to the journal, and their deliveries.
    pub webhooks: Webhooks,
    /// Stop with the platform: the registration follower (onboarding), the one that
    /// journals registrations, and in a cluster the node's own ([`cluster::Node`]).
    followers: Vec<tokio::task::AbortHandle>,
    /// In a cluster, this coordinator's epoch and the newest this node has seen.
    epoch: Option<(u64, tokio::sync::watch::Receiver<u64>)>,
}

impl Platform {
    /// Opens the store (refusing data it cannot read), loads the plugins, binds CoAP, and
    /// resumes every task where it stood.
    pub async fn start(config: PlatformConfig) -> Result<Platform, PlatformError> {
        let host = PluginHost::new(config.plugins.clone())
            .map_err(|e| PlatformError::Host(e.to_string()))?;
        let store = config.store.open()?;
        Platform::start_on(host, Clock::system(), store, config).await
    }

    /// Like [`Platform::start`], with plugins compiled by `host` (which compiles each
    /// component once: an engine started again on the same host starts at once), the wall
    /// time read from `clock` (a simulation pins the date, so a run does not depend on when it
    /// is made) and `store` in place of `config.store`. The host's own limits apply, not
    /// `config.plugins`.
    pub async fn start_on(
        host: PluginHost,
        clock: Clock,
        store: Arc<dyn Store>,
        config: PlatformConfig,
    ) -> Result<Platform, PlatformError> {
        let foundation = Foundation::start(host, clock, &store, config.server).await?;
        Platform::assemble(foundation, store, config.webhooks, None)
    }

    /// Like [`Platform::start`] on `store`, as the coordinator of a cluster: the scheduler's
    /// attempts run on each device's owner, and the other nodes are served on the internal
    /// link (`listener`).
    pub async fn start_coordinator(
        config: PlatformConfig,
        store: Arc<dyn Store>,
        cluster: &ClusterConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<Platform, PlatformError> {
        let host = PluginHost::new(config.plugins.clone())
            .map_err(|e| PlatformError::Host(e.to_string()))?;
        let foundation = Foundation::start(host, Clock::system(), &store, config.server).await?;
        Platform::assemble(
            foundation,
            store,
            config.webhooks,
            Some((cluster, listener)),
        )
    }

    /// The platform on `foundation`: journal, webhooks, tasks, operations, observations and
    /// onboarding; in a cluster, as its coordinator.
    pub(crate) fn assemble(
        foundation: Foundation,
        store: Arc<dyn Store>,
        webhooks: WebhookConfig,
        cluster: Option<(&ClusterConfig, tokio::net::TcpListener)>,
    ) -> Result<Platform, PlatformError> {
        let Foundation {
            server,
            kept_plugins,
            plugins,
            catalog,
            attempts,
            devices,
        } = foundation;
        let clock = attempts.clock;
        let journal = Journal::open(store.clone(), clock)?;
        // Before anything can write an event: every one goes to the outboxes that want it.
        let webhooks = Webhooks::start(store.clone(), journal.clone(), clock, webhooks)?;
        let mut followers = Vec::new();
        let mut coordinated = None;
        let ((attempts, devices), neighbours): (Reach, _) = match cluster {
            None => ((Arc::new(attempts), Arc::new(devices)), None),
            Some((cluster, listener)) => {
                let journaled = Some((journal.clone(), webhooks.clone()));
                let local = cluster::Local { attempts, devices };
                let node = cluster::Node::start(cluster, &store, listener, local, journaled);
                let epoch = node.membership.crown()?;
                coordinated = Some((epoch, node.membership.epochs()));
                tracing::info!(node = %cluster.node, epoch, "this node coordinates the cluster");
                let neighbours: Arc<dyn Neighbours> =
                    ClusterNeighbours::coordinator(node.membership.clone());
                followers.extend(node.handles.iter().map(|handle| handle.abort_handle()));
                (node.routed(epoch), Some(neighbours))
            }
        };
        let campaigns = Campaigns::start(
            store.clone(),
            catalog.clone(),
            attempts,
            clock,
            journal.clone(),
        )?;
        let upgrades = Arc::new(campaigns.clone());
        let operations = OperationQueue::open(store.clone(), devices.clone(), upgrades, clock)?;
        let journaling = tokio::spawn(journal_registrations(
            server.registry.clone(),
            journal.clone(),
            webhooks.clone(),
        ))
        .abort_handle();
        let follower = tokio::spawn(follow_registrations(
            server.registry.clone(),
            catalog.clone(),
            server.management.clone(),
            (server.edge_limits.clone(), server.edge.clone()),
            neighbours,
        ))
        .abort_handle();
        followers.extend([follower, journaling]);
        Ok(Platform {
            server,
            store,
            plugins,
            kept_plugins,
            catalog,
            campaigns,
            operations,
            devices,
            journal,
            webhooks,
            followers,
            epoch: coordinated,
        })
    }

    /// Completes once another node coordinates the cluster (this node saw a newer
    /// coordinator's epoch); never outside a cluster.
    pub async fn deposed(&self) {
        match &self.epoch {
            Some((epoch, epochs)) => cluster::underway::deposed(epochs.clone(), *epoch).await,
            None => std::future::pending().await,
        }
    }
}

/// What every node runs: CoAP, the plugins, the catalog, and attempts on the devices
/// registered to it.
pub struct Foundation {
    /// CoAP: registrations, device management, delivery.
    pub server: Server,
    /// The plugins installed at run time, bound again at every start.
    pub kept_plugins: KeptPlugins,
    /// Plugins per vendor and model.
    pub plugins: Arc<PluginRegistry>,
    /// Devices, groups, firmware, packages.
    pub catalog: Catalog,
    /// Attempts on devices registered here.
    pub attempts: DeviceAttempts,
    /// Integrators' operations on devices registered here.
    pub devices: LocalDevices,
}

impl Foundation {
    /// Binds CoAP on `store` (its resume points, credentials and Package URI secret), loads
    /// the plugins and opens the catalog.
    pub async fn start(
        host: PluginHost,
        clock: Clock,
        store: &Arc<dyn Store>,
        mut server_config: ServerConfig,
    ) -> Result<Foundation, PlatformError> {
        let book = ResumeBook::kept_in(store.clone())?;
        let credentials = Credentials::open(store.clone(), clock)?;
        server_config.package_uri_secret = Some(package_uri_secret(store.as_ref())?);
        server_config.credentials = Some(DeviceKeys(Arc::new(credentials.clone())));
        let server = Server::start_with_book(server_config, book.clone()).await?;
        let kept_plugins = KeptPlugins::new(store.clone());
        let plugins = load_plugins(host, kept_plugins.clone()).await?;
        let catalog = Catalog::open_with(
            store.clone(),
            server.shelf.clone(),
            plugins.clone(),
            clock,
            credentials,
        )?;
        Ok(Foundation::around(
            server,
            (kept_plugins, plugins),
            catalog,
            book,
            clock,
        ))
    }

    /// The same CoAP side (its registrations, its deliveries' resume points) and plugins, with
    /// the catalog read again from `store`: what other nodes wrote since this one started (a
    /// member taking the coordinator's place).
    pub fn reopened(self, store: &Arc<dyn Store>) -> Result<Foundation, PlatformError> {
        let (book, clock) = (self.attempts.book.clone(), self.attempts.clock);
        let catalog = Catalog::open_with(
            store.clone(),
            self.server.shelf.clone(),
            self.plugins.clone(),
            clock,
            self.catalog.credentials().clone(),
        )?;
        let plugins = (self.kept_plugins, self.plugins);
        Ok(Foundation::around(
            self.server,
            plugins,
            catalog,
            book,
            clock,
        ))
    }

    fn around(
        server: Server,
        (kept_plugins, plugins): (KeptPlugins, Arc<PluginRegistry>),
        catalog: Catalog,
        book: ResumeBook,
        clock: Clock,
    ) -> Foundation {
        let attempts = DeviceAttempts {
            catalog: catalog.clone(),
            presence: server.presence.clone(),
            delivery: server.delivery.clone(),
            book,
            plugins: plugins.clone(),
            clock,
        };
        let devices = LocalDevices::new(server.presence.clone(), server.management.clone());
        Foundation {
            server,
            kept_plugins,
            plugins,
            catalog,
            attempts,
            devices,
        }
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        for follower in &self.followers {
            follower.abort();
        }
    }
}

/// Compiles the embedded plugins and binds the kept ones again, off the async threads (on
/// this one when the host runs its calls inline: deterministic simulation).
async fn load_plugins(
    host: PluginHost,
    kept: KeptPlugins,
) -> Result<Arc<PluginRegistry>, PlatformError> {
    if host.config().calls_inline {
        return bind_plugins(host, &kept);
    }
    tokio::task::spawn_blocking(move || bind_plugins(host, &kept))
        .await
        .map_err(|e| PlatformError::Host(e.to_string()))?
}

fn bind_plugins(
    host: PluginHost,
    kept: &KeptPlugins,
) -> Result<Arc<PluginRegistry>, PlatformError> {
    let registry = PluginRegistry::new(host)?;
    let restored = kept.restore(&registry)?;
    if restored > 0 {
        tracing::info!(restored, "plugins installed earlier are bound again");
    }
    Ok(Arc::new(registry))
}

/// Key of the Package URI secret in the store.
const URI_SECRET: &str = "key/package-uri";

/// The secret Package URI tokens are derived from: made at the first start and kept, so a
/// device pulling a package goes on at the same URI after a restart.
fn package_uri_secret(store: &dyn Store) -> Result<[u8; 32], StoreError> {
    if let Some(secret) = store.get::<String>(URI_SECRET)? {
        return hex::decode(&secret)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| StoreError::Corrupt {
                key: URI_SECRET.into(),
                reason: "not a 32-byte hex secret".into(),
            });
    }
    let secret: [u8; 32] = crate::entropy::random();
    store.put_durable(URI_SECRET, &hex::encode(secret))?;
    Ok(secret)
}
