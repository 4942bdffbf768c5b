//! Persistence behind a trait: typed records under namespaced keys, written alone or in atomic
//! batches: sled as the embedded default for one node, PostgreSQL for one node or several
//! ([`StoreLocation`] says which). Owns the layout (namespaces, the value envelope with its
//! format version, the format check at open); not what the records mean.

#[cfg(test)]
mod conformance;
mod database_claim;
mod postgres_store;
mod record;
mod sled_store;
pub mod throwaway_postgres;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use postgres_store::{DEFAULT_CONNECTIONS, DatabaseHeld, PostgresStore};
pub use record::{FORMAT_VERSION, Record, decode, encode, encode_json};
pub use sled_store::SledStore;

/// Key of the records' format version.
const FORMAT_KEY: &str = "meta/schema";

/// Where the engine's store lives.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreLocation {
    /// In memory, gone with the process (tests, the demo).
    Temporary,
    /// A sled database in this directory: the embedded default, for one node.
    Directory(PathBuf),
    /// A PostgreSQL database at this URL (`postgres://user:password@host:port/database`),
    /// which several nodes may share.
    Postgres(String),
}

/// Turns true if this engine's hold on its database is lost with the connection that held it.
pub type HoldLost = tokio::sync::watch::Receiver<bool>;

/// How long an engine starting on a PostgreSQL database waits for another engine to let it
/// go (one killed just before, whose connection the server has not seen close yet).
const WAIT_FOR_DATABASE: Duration = Duration::from_secs(15);

impl StoreLocation {
    /// Opens the store (creating it, or migrating a database's schema, when needed).
    pub fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self {
            StoreLocation::Temporary => Arc::new(SledStore::temporary()?),
            StoreLocation::Directory(dir) => Arc::new(SledStore::open(dir)?),
            StoreLocation::Postgres(url) => Arc::new(PostgresStore::open_held(
                url,
                DEFAULT_CONNECTIONS,
                WAIT_FOR_DATABASE,
            )?),
        })
    }

    /// Opens the store for a node of a cluster (PostgreSQL only): holding the database when
    /// no other engine does (this node coordinates: with what turns true if the hold is
    /// lost), shared with the one that holds it otherwise (`None`).
    pub fn open_for_cluster(&self) -> Result<(Arc<dyn Store>, Option<HoldLost>), StoreError> {
        let StoreLocation::Postgres(url) = self else {
            return Err(StoreError::Io(
                "the nodes of a cluster share a PostgreSQL store (store = \"postgres://...\")"
                    .into(),
            ));
        };
        match PostgresStore::open_held(url, DEFAULT_CONNECTIONS, Duration::ZERO) {
            Ok(store) => {
                let lost = store.hold_lost();
                Ok((Arc::new(store), lost))
            }
            Err(StoreError::Held { .. }) => Ok((
                Arc::new(PostgresStore::open(url, DEFAULT_CONNECTIONS)?),
                None,
            )),
            Err(error) => Err(error),
        }
    }

    /// Where it is, for a log line: a database's host and name, never its password.
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::Temporary => "a temporary store".into(),
            StoreLocation::Directory(dir) => format!("sled, in {}", dir.display()),
            StoreLocation::Postgres(url) => match url.parse::<postgres::Config>() {
                Ok(config) => format!(
                    "PostgreSQL database {} on {:?}",
                    config.get_dbname().unwrap_or("(the user's)"),
                    config.get_hosts()
                ),
                Err(_) => "PostgreSQL (a URL that does not parse)".into(),
            },
        }
    }
}

/// Runs `calls` to the store from async code. The store's calls are synchronous: sled's take
/// microseconds, PostgreSQL's a round trip to the database, during which the calling thread
/// waits. On a multi-threaded runtime the thread hands its other tasks to another worker
/// meanwhile (tokio's `block_in_place`), so a burst of writes (a registration storm's) does
/// not hold the threads that answer devices; on a single-threaded one (the deterministic
/// simulation, some tests) the calls run as they are.
pub fn waiting<R>(calls: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|runtime| runtime.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(calls),
        _ => calls(),
    }
}

/// A new store is stamped with this release's format version; an existing one must carry it.
fn check_format(store: &dyn Store) -> Result<(), StoreError> {
    match store.get_raw(FORMAT_KEY)? {
        None => {
            let mut batch = Batch::new();
            batch.put_bytes(FORMAT_KEY, vec![FORMAT_VERSION]);
            store.apply(batch)?;
            store.flush()
        }
        Some(version) if version == [FORMAT_VERSION] => Ok(()),
        Some(version) => Err(StoreError::UnknownVersion {
            found: version.first().copied().unwrap_or(0),
        }),
    }
}

/// `text` with `%` and `/` percent-encoded, to stand as one segment of a key: no name a client
/// gives (a vendor, a model) can reach another key by holding a `/`.
pub fn key_segment(text: &str) -> String {
    text.replace('%', "%25").replace('/', "%2F")
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or written.
    #[error("store: {0}")]
    Io(String),
    /// Another engine serves from the database, and this one is not a node of its cluster.
    #[error(
        "another engine is serving from this database (waited {waited:?} for it to stop): \
         several engines share one only as the nodes of a cluster ([cluster] in fota.toml, \
         docs/deployment.md)"
    )]
    Held {
        /// How long this engine waited for the other to stop.
        waited: Duration,
    },
    /// The data was written by a release this one cannot read.
    #[error(
        "store holds data of format version {found}, this release reads version {FORMAT_VERSION}: \
         use the release that wrote it, or migrate"
    )]
    UnknownVersion {
        /// The version found.
        found: u8,
    },
    /// The database's schema was migrated by a newer release.
    #[error(
        "the database's schema is at version {found}, this release knows up to {known}: \
         use the release that migrated it"
    )]
    NewerSchema {
        /// The newest migration the database has.
        found: i32,
        /// The newest this release has.
        known: i32,
    },
    /// A value did not decode.
    #[error("store: record {key} is corrupt: {reason}")]
    Corrupt {
        /// Its key.
        key: String,
        /// What was wrong.
        reason: String,
    },
}

/// A group of writes applied together or not at all.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// Keys to set, with their encoded values.
    pub puts: Vec<(String, Vec<u8>)>,
    /// Keys to remove.
    pub removes: Vec<String>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }

    /// Sets `key` to `value`.
    pub fn put<T: Record>(&mut self, key: impl Into<String>, value: &T) -> &mut Self {
        self.puts.push((key.into(), encode(value)));
        self
    }

    /// Sets `key` to raw bytes (images, packages).
    pub fn put_bytes(&mut self, key: impl Into<String>, bytes: Vec<u8>) -> &mut Self {
        self.puts.push((key.into(), bytes));
        self
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: impl Into<String>) -> &mut Self {
        self.removes.push(key.into());
        self
    }
}

/// Where the engine keeps what must survive a restart. Keys are `namespace/id` strings.
pub trait Store: Send + Sync + 'static {
    /// The raw value at `key`.
    fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The raw value at each of `keys`, in their order: one call for many records where a
    /// store's call is a round trip (a follower catching up on a storm of registrations).
    fn get_many_raw(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        keys.iter().map(|key| self.get_raw(key)).collect()
    }
    /// Every `(key, raw value)` whose key starts with `prefix`, in key order.
    fn scan_raw(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Up to `limit` `(key, raw value)` whose key starts with `prefix` and sorts after `after`
    /// (from the first when `None`), in key order: a page of a long list.
    fn scan_after_raw(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut entries = self.scan_raw(prefix)?;
        entries.retain(|(key, _)| after.is_none_or(|after| key.as_str() > after));
        entries.truncate(limit);
        Ok(entries)
    }
    /// The last `(key, raw value)` whose key starts with `prefix`.
    fn last_raw(&self, prefix: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        Ok(self.scan_raw(prefix)?.pop())
    }
    /// Applies `batch` atomically.
    fn apply(&self, batch: Batch) -> Result<(), StoreError>;
    /// Makes every applied write durable (returns once it is on disk).
    fn flush(&self) -> Result<(), StoreError>;
}

/// Typed access on top of any [`Store`].
pub trait StoreExt: Store {
    /// The record at `key`.
    fn get<T: Record>(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.get_raw(key)?
            .map(|bytes| decode(key, &bytes))
            .transpose()
    }

    /// The record at each of `keys`, in their order.
    fn get_many<T: Record>(&self, keys: &[String]) -> Result<Vec<Option<T>>, StoreError> {
        let values = self.get_many_raw(keys)?;
        (keys.iter().zip(values))
            .map(|(key, bytes)| bytes.map(|bytes| decode(key, &bytes)).transpose())
            .collect()
    }

    /// Every record under `prefix`, in key order.
    fn scan<T: Record>(&self, prefix: &str) -> Result<Vec<T>, StoreError> {
        self.scan_raw(prefix)?
            .into_iter()
            .map(|(key, bytes)| decode(&key, &bytes))
            .collect()
    }

    /// Up to `limit` records under `prefix` after the key `after`, with their keys.
    fn scan_after<T: Record>(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, T)>, StoreError> {
        self.scan_after_raw(prefix, after, limit)?
            .into_iter()
            .map(|(key, bytes)| Ok((key.clone(), decode(&key, &bytes)?)))
            .collect()
    }

    /// The last record under `prefix`, with its key.
    fn last<T: Record>(&self, prefix: &str) -> Result<Option<(String, T)>, StoreError> {
        self.last_raw(prefix)?
            .map(|(key, bytes)| Ok((key.clone(), decode(&key, &bytes)?)))
            .transpose()
    }

    /// Writes one record.
    fn put<T: Record>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.put(key, value);
        self.apply(batch)
    }

    /// Writes one record and makes it durable: for what a caller is told is saved.
    fn put_durable<T: Record>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        self.put(key, value)?;
        self.flush()
    }
}

impl<S: Store + ?Sized> StoreExt for S {}
