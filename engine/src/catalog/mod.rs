//! The catalog: devices (learned from registrations and reads), their DTLS pre-shared key
//! credentials, groups (vendor + module model, locked at creation), firmware versions (images
//! stored once by content hash), package formats per model, and packages (full or delta, made
//! by the vendor's differ plugin in the model's format, or uploaded as the module maker made
//! them). Owns these records and their rules; persistence is the store's, delivery the
//! transfer's.

pub mod credentials;
pub mod device_index;
pub mod devices;
pub mod firmware;
pub mod formats;
pub mod groups;
pub mod packages;

use std::sync::Arc;

use crate::clock::Clock;
use crate::plugin::PluginRegistry;
use crate::signing::{PlatformKey, PlatformPublicKey};
use crate::store::{Store, StoreError, StoreExt};
use crate::transfer::PackageShelf;

pub use credentials::{CredentialSummary, Credentials, NewCredential};
pub use devices::DeviceRecord;
pub use firmware::Firmware;
pub use formats::{ModelFormat, PackageFormat};
pub use groups::{Group, GroupJoin, GroupMembers};
pub use packages::{PackageKind, PackageRecord, UploadCheck, UploadedPackage};

/// Why a catalog operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// No record with that id.
    #[error("{kind} {id} does not exist")]
    NotFound {
        /// "group", "firmware", ...
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The request breaks a rule (another vendor's device in a group, a duplicate version...).
    #[error("{0}")]
    Invalid(String),
    /// The record is in use (firmware a package was made from, a group a task upgrades...).
    #[error("{0}")]
    InUse(String),
    /// A record with that identity already exists (a version the model already has).
    #[error("{0}")]
    Duplicate(String),
    /// A plugin failed or refused.
    #[error("{0}")]
    Plugin(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Joins announced and not yet read by a slow subscriber before it lags (it then looks at
/// every group again).
const JOINS_QUEUED: usize = 1024;

/// The catalog over a store. Cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    /// Where records live.
    pub(crate) store: Arc<dyn Store>,
    /// Packages ready to deliver (loaded from the store at start).
    pub(crate) shelf: PackageShelf,
    /// Differ plugins, for delta packages.
    pub(crate) plugins: Arc<PluginRegistry>,
    /// Creation times and last-seen stamps.
    pub(crate) clock: Clock,
    /// Serializes read-modify-write of device records (registrations and surveys race).
    pub(crate) device_writes: Arc<std::sync::Mutex<()>>,
    /// Signs every package; devices trust its public half.
    pub(crate) key: Arc<PlatformKey>,
    /// Devices' PSK credentials, which the DTLS handshake looks up.
    pub(crate) credentials: Credentials,
    /// Serializes read-modify-write of group records (the API and auto-joins race).
    pub(crate) group_writes: Arc<std::sync::Mutex<()>>,
    /// Announces devices joining groups, so running tasks take them.
    pub(crate) joins: tokio::sync::broadcast::Sender<GroupJoin>,
    /// The devices as lists filter them, kept with every write of a device record.
    pub(crate) index: Arc<device_index::DeviceIndex>,
    /// Whether a device whose model a survey learned joins the groups taking such devices
    /// here; false on a cluster's member node, whose coordinator does it
    /// ([`Catalog::learn_device`]).
    pub(crate) joins_groups: bool,
}

impl Catalog {
    /// A catalog on `store`, putting every stored package on `shelf` and loading every
    /// device's credential.
    pub fn open(
        store: Arc<dyn Store>,
        shelf: PackageShelf,
        plugins: Arc<PluginRegistry>,
        clock: Clock,
    ) -> Result<Self, CatalogError> {
        let credentials = Credentials::open(store.clone(), clock)?;
        Catalog::open_with(store, shelf, plugins, clock, credentials)
    }

    /// Like [`Catalog::open`], with the devices' credentials already loaded from `store` (the
    /// DTLS server, started first, holds the same handle).
    pub fn open_with(
        store: Arc<dyn Store>,
        shelf: PackageShelf,
        plugins: Arc<PluginRegistry>,
        clock: Clock,
        credentials: Credentials,
    ) -> Result<Self, CatalogError> {
        let key = Arc::new(platform_key(store.as_ref())?);
        let index = device_index::DeviceIndex::of(store.scan::<DeviceRecord>(devices::PREFIX)?);
        groups::load_members(store.as_ref(), &index)?;
        let catalog = Catalog {
            store,
            shelf,
            plugins,
            clock,
            device_writes: Arc::default(),
            key,
            credentials,
            group_writes: Arc::default(),
            joins: tokio::sync::broadcast::channel(JOINS_QUEUED).0,
            index: Arc::new(index),
            joins_groups: true,
        };
        catalog.shelve_all()?;
        Ok(catalog)
    }

    /// This catalog on a cluster's member node: devices join groups on the coordinator, the
    /// one writer of group records, when it learns of them.
    pub fn leaving_group_joins_to_the_coordinator(mut self) -> Self {
        self.joins_groups = false;
        self
    }

    /// The key devices must trust: every package is signed with its private half.
    pub fn public_key(&self) -> PlatformPublicKey {
        self.key.public()
    }

    /// Devices' PSK credentials: the handle the DTLS layer looks identities up in (clone it;
    /// every clone sees every write).
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }
}

/// Key of the platform's signing key in the store.
const KEY: &str = "key/platform";

/// The platform's signing key: made at the first start and kept in the store.
fn platform_key(store: &dyn Store) -> Result<PlatformKey, CatalogError> {
    if let Some(secret) = store.get::<String>(KEY)? {
        let bytes: [u8; 32] = hex::decode(&secret)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| StoreError::Corrupt {
                key: KEY.into(),
                reason: "not a 32-byte hex key".into(),
            })?;
        return Ok(PlatformKey::from_bytes(&bytes));
    }
    let key = PlatformKey::generate();
    store.put_durable(KEY, &hex::encode(key.to_bytes()))?;
    Ok(key)
}

/// A new random id, `prefix-` and 12 hex digits.
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:012x}", crate::entropy::random::<u64>() >> 16)
}

/// A catalog on a temporary store, for the catalog's unit tests.
#[cfg(test)]
pub(crate) fn test_catalog(clock: Clock) -> Catalog {
    use crate::plugin::{HostConfig, PluginHost};
    let store: Arc<dyn Store> =
        Arc::new(crate::store::SledStore::temporary().expect("a temporary store"));
    let host = PluginHost::new(HostConfig::default()).expect("a plugin host");
    let plugins = Arc::new(PluginRegistry::new(host).expect("the embedded plugins"));
    Catalog::open(store, PackageShelf::new(), plugins, clock).expect("a catalog")
}
