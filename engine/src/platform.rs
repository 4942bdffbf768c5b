//! `Platform`: the whole engine a host runs: the CoAP server, the store in the data directory,
//! the plugin registry, the catalog, the campaign scheduler, and the follower that keeps the
//! catalog's devices current from registrations (surveying each device that registers).

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{Semaphore, broadcast};

use crate::campaign::{CampaignError, Campaigns, DeviceAttempts};
use crate::catalog::devices::survey;
use crate::catalog::{Catalog, CatalogError};
use crate::clock::Clock;
use crate::lwm2m::{DeviceManagement, RegistrationEvent};
use crate::plugin::{
    HostConfig, KeptPlugins, PluginError, PluginHost, PluginRegistry, RestoreError,
};
use crate::server::{Server, ServerConfig};
use crate::store::{SledStore, Store, StoreError};
use crate::transfer::ResumeBook;

/// Surveys of newly registered devices running at once. A survey is a few round trips, which
/// take seconds on NB-IoT: after a registration storm (a cell back from an outage) this is what
/// lets thousands of devices be surveyed inside their first awake window.
const SURVEYS_AT_ONCE: usize = 1024;

/// How to run the platform.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    /// The CoAP side.
    pub server: ServerConfig,
    /// Where the store lives; `None` keeps everything in a temporary store (tests, demo).
    pub data_dir: Option<PathBuf>,
    /// Plugin limits.
    pub plugins: HostConfig,
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
    /// Stops the registration follower with the platform.
    follower: tokio::task::AbortHandle,
}

impl Platform {
    /// Opens the store (refusing data it cannot read), loads the plugins, binds CoAP, and
    /// resumes every task where it stood.
    pub async fn start(config: PlatformConfig) -> Result<Platform, PlatformError> {
        let store: Arc<dyn Store> = Arc::new(match &config.data_dir {
            Some(dir) => SledStore::open(dir)?,
            None => SledStore::temporary()?,
        });
        let book = ResumeBook::kept_in(store.clone())?;
        let server = Server::start_with_book(config.server, book.clone()).await?;
        let kept_plugins = KeptPlugins::new(store.clone());
        let plugins = load_plugins(config.plugins, kept_plugins.clone()).await?;
        let clock = Clock::system();
        let catalog = Catalog::open(store.clone(), server.shelf.clone(), plugins.clone(), clock)?;
        let attempts = DeviceAttempts {
            catalog: catalog.clone(),
            registry: server.registry.clone(),
            delivery: server.delivery.clone(),
            book,
            plugins: plugins.clone(),
            clock,
        };
        let campaigns =
            Campaigns::start(store.clone(), catalog.clone(), Arc::new(attempts), clock)?;
        let follower = tokio::spawn(follow_registrations(
            server.registry.subscribe(),
            catalog.clone(),
            server.management.clone(),
        ))
        .abort_handle();
        Ok(Platform {
            server,
            store,
            plugins,
            kept_plugins,
            catalog,
            campaigns,
            follower,
        })
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// Compiles the embedded plugins and binds the kept ones again, off the async threads.
async fn load_plugins(
    config: HostConfig,
    kept: KeptPlugins,
) -> Result<Arc<PluginRegistry>, PlatformError> {
    tokio::task::spawn_blocking(move || {
        let host = PluginHost::new(config).map_err(|e| PlatformError::Host(e.to_string()))?;
        let registry = PluginRegistry::new(host)?;
        let restored = kept.restore(&registry)?;
        if restored > 0 {
            tracing::info!(restored, "plugins installed earlier are bound again");
        }
        Ok(Arc::new(registry))
    })
    .await
    .map_err(|e| PlatformError::Host(e.to_string()))?
}

/// Keeps the catalog's devices current: seen at every Register and Update, surveyed at every
/// Register (and at an Update until a survey succeeded), offline when their registration ends.
async fn follow_registrations(
    mut events: broadcast::Receiver<RegistrationEvent>,
    catalog: Catalog,
    management: DeviceManagement,
) {
    let surveys = Arc::new(Semaphore::new(SURVEYS_AT_ONCE));
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "registration events missed by the catalog");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let registration = event.registration().clone();
        let recorded = match event {
            // Recorded before the survey starts: a survey only records a device the catalog
            // knows, so that one under way when the device is deleted does not bring it back.
            RegistrationEvent::Registered(_) => catalog
                .device_seen(&registration)
                .map(|_| spawn_survey(&catalog, &management, &surveys, &registration)),
            // A device whose survey failed (asleep before it ran, a lost answer) or whose
            // Register this follower missed is surveyed at its next Update, in its window.
            RegistrationEvent::Updated(_) => catalog.device_seen(&registration).map(|device| {
                if device.model.is_none() {
                    spawn_survey(&catalog, &management, &surveys, &registration);
                }
            }),
            RegistrationEvent::Deregistered(_) | RegistrationEvent::Expired(_) => {
                catalog.device_gone(&registration.endpoint).map(|_| ())
            }
        };
        if let Err(error) = recorded {
            tracing::error!(endpoint = %registration.endpoint, %error, "device not recorded");
        }
    }
}

fn spawn_survey(
    catalog: &Catalog,
    management: &DeviceManagement,
    surveys: &Arc<Semaphore>,
    registration: &crate::lwm2m::Registration,
) {
    let (catalog, management, surveys) = (catalog.clone(), management.clone(), surveys.clone());
    let (endpoint, address) = (registration.endpoint.clone(), registration.address);
    tokio::spawn(async move {
        let Ok(_permit) = surveys.acquire().await else {
            return;
        };
        match survey(&management, address).await {
            Ok(found) => {
                if let Err(error) = catalog.known_device_surveyed(&endpoint, &found) {
                    tracing::error!(%endpoint, %error, "survey not recorded");
                }
            }
            Err(error) => tracing::debug!(%endpoint, %error, "survey failed"),
        }
    });
}
