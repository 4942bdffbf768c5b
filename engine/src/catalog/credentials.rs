//! Device credentials for DTLS 1.2 with pre-shared keys (DESIGN.md, "Security on the device
//! link"): one PSK credential per device endpoint name, the identity the device sends in its
//! handshake and the key. Owns the credentials, their rules (bounds, one endpoint per identity)
//! and their persistence: kept in the store, loaded at start into an in-memory index that the
//! handshake reads without touching the store. Not the handshake itself (`coap`), nor what a
//! registration may claim once authenticated (`lwm2m`).
//!
//! Keys are secrets: write-only through the API, never logged, never printed (`Debug` is
//! written by hand), and every copy this module hands out or keeps in memory is wiped when
//! dropped ([`Zeroizing`]); the store keeps its own, as it keeps the platform's signing key.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::CatalogError;
use crate::clock::{Clock, UnixMillis};
use crate::coap::dtls::PskKeys;
use crate::edge::endpoint_name_ok;
use crate::lwm2m::IdentityBinding;
use crate::store::{Batch, Store, StoreError, StoreExt, key_segment};
use crate::sync::{lock, read, write};

/// Key prefix of credential records.
const PREFIX: &str = "cred/";
/// Counts the writes of credentials, so another node of a cluster sees they changed.
const REVISION: &str = "cred-revision";

/// Longest endpoint name a credential is kept for, in bytes.
pub const MAX_ENDPOINT_BYTES: usize = 255;
/// Longest PSK identity, in bytes of UTF-8.
pub const MAX_IDENTITY_BYTES: usize = 128;
/// Longest key, in bytes (LwM2M modules commonly use 16).
pub const MAX_KEY_BYTES: usize = 64;

/// A device's credential as given to be set, checked against the rules when made.
#[derive(Clone)]
pub struct NewCredential {
    /// The device's endpoint name: 1 to [`MAX_ENDPOINT_BYTES`] bytes, as a registration's
    /// (no control characters, no white space).
    endpoint: String,
    /// The PSK identity the device sends: 1 to [`MAX_IDENTITY_BYTES`] bytes, no control
    /// characters.
    identity: String,
    /// The pre-shared key: 1 to [`MAX_KEY_BYTES`] bytes.
    key: Zeroizing<Vec<u8>>,
}

impl NewCredential {
    /// `endpoint`'s credential, or why it breaks a rule (`Invalid`).
    pub fn new(
        endpoint: impl Into<String>,
        identity: impl Into<String>,
        key: Zeroizing<Vec<u8>>,
    ) -> Result<Self, CatalogError> {
        let (endpoint, identity) = (endpoint.into(), identity.into());
        if !endpoint_name_ok(&endpoint, MAX_ENDPOINT_BYTES) {
            return Err(CatalogError::Invalid(format!(
                "an endpoint name is 1 to {MAX_ENDPOINT_BYTES} bytes without control characters \
                 or white space"
            )));
        }
        let wrong = if identity.chars().any(char::is_control) {
            Some("it has control characters".to_string())
        } else if identity.is_empty() || identity.len() > MAX_IDENTITY_BYTES {
            Some(format!("not {} bytes", identity.len()))
        } else {
            None
        };
        if let Some(wrong) = wrong {
            return Err(CatalogError::Invalid(format!(
                "an identity is 1 to {MAX_IDENTITY_BYTES} bytes of UTF-8 without control \
                 characters, {wrong}"
            )));
        }
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(CatalogError::Invalid(format!(
                "a key is 1 to {MAX_KEY_BYTES} bytes, not {}",
                key.len()
            )));
        }
        Ok(NewCredential {
            endpoint,
            identity,
            key,
        })
    }

    /// As [`NewCredential::new`], the key given as hex digits (two a byte, either case).
    pub fn with_hex_key(
        endpoint: impl Into<String>,
        identity: impl Into<String>,
        key_hex: &str,
    ) -> Result<Self, CatalogError> {
        let key = decode_key(key_hex).ok_or_else(|| {
            CatalogError::Invalid(
                "a key is given as hex digits, two a byte (0-9, a-f or A-F)".into(),
            )
        })?;
        NewCredential::new(endpoint, identity, key)
    }
}

impl fmt::Debug for NewCredential {
    /// Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewCredential")
            .field("endpoint", &self.endpoint)
            .field("identity", &self.identity)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// What may be shown of a credential: everything but the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialSummary {
    /// The device's endpoint name.
    pub endpoint: String,
    /// The PSK identity the device sends.
    pub identity: String,
    /// When it was last set.
    pub updated_at: UnixMillis,
}

/// A credential as the store keeps it (the key in hex, as the platform key is kept).
#[derive(Serialize, Deserialize)]
struct StoredCredential {
    endpoint: String,
    identity: String,
    key_hex: Zeroizing<String>,
    updated_at: UnixMillis,
}

/// One device's credential in the index.
struct Entry {
    /// The PSK identity.
    identity: String,
    /// The key, wiped when the entry goes.
    key: Zeroizing<Vec<u8>>,
    /// When it was last set.
    updated_at: UnixMillis,
}

/// Every credential, by endpoint and by identity; the two maps always agree.
#[derive(Default)]
struct Index {
    /// Credentials by endpoint name, in name order (pages of the list are stable).
    by_endpoint: BTreeMap<String, Entry>,
    /// The endpoint each identity is bound to: what a handshake looks up.
    by_identity: HashMap<String, String>,
}

impl Index {
    /// Sets `endpoint`'s entry, freeing the identity its previous one had.
    /// Sets `endpoint`'s entry; whether it replaced one with another identity or key.
    fn insert(&mut self, endpoint: String, entry: Entry) -> bool {
        let replaced = self.by_endpoint.get(&endpoint).is_some_and(|old| {
            old.identity != entry.identity || old.key.as_slice() != entry.key.as_slice()
        });
        self.remove(&endpoint);
        self.by_identity
            .insert(entry.identity.clone(), endpoint.clone());
        self.by_endpoint.insert(endpoint, entry);
        replaced
    }

    /// Removes `endpoint`'s entry and frees its identity, unless a batch already gave that
    /// identity to another endpoint; whether there was one.
    fn remove(&mut self, endpoint: &str) -> bool {
        let Some(old) = self.by_endpoint.remove(endpoint) else {
            return false;
        };
        if self.by_identity.get(&old.identity).map(String::as_str) == Some(endpoint) {
            self.by_identity.remove(&old.identity);
        }
        true
    }

    /// The entry bound to `identity`.
    fn entry_of(&self, identity: &str) -> Option<&Entry> {
        self.by_endpoint.get(self.by_identity.get(identity)?)
    }

    /// Why `batch` cannot be set over this index, and the first row (its position) that
    /// breaks a rule: an endpoint or an identity given twice, or an identity bound to an
    /// endpoint that keeps it (one outside the batch: an endpoint of the batch frees its old
    /// identity).
    fn refusal(&self, batch: &[NewCredential]) -> Option<(usize, CatalogError)> {
        let in_batch: HashSet<&str> = batch.iter().map(|c| c.endpoint.as_str()).collect();
        let mut endpoints = HashSet::new();
        let mut identities = HashMap::new();
        for (row, credential) in batch.iter().enumerate() {
            let (endpoint, identity) = (&credential.endpoint, &credential.identity);
            if !endpoints.insert(endpoint) {
                let error = format!("endpoint {endpoint} is given a credential twice");
                return Some((row, CatalogError::Invalid(error)));
            }
            if let Some(other) = identities.insert(identity, endpoint) {
                let error = format!("identity {identity} is also given to endpoint {other}");
                return Some((row, CatalogError::Invalid(error)));
            }
            let keeper = self
                .by_identity
                .get(identity)
                .filter(|owner| *owner != endpoint && !in_batch.contains(owner.as_str()));
            if let Some(owner) = keeper {
                let error = format!("identity {identity} is bound to endpoint {owner}");
                return Some((row, CatalogError::Duplicate(error)));
            }
        }
        None
    }
}

/// Every device's PSK credential: in the store, and in memory for the handshake. Cheap to
/// clone; every clone is the same set.
///
/// Open one per store and clone it: each handle opened keeps an index of its own, which does
/// not see another handle's writes.
#[derive(Clone)]
pub struct Credentials {
    /// The store and the index, shared by every clone.
    shared: Arc<Shared>,
}

struct Shared {
    /// Where credentials survive a restart.
    store: Arc<dyn Store>,
    /// Stamps `updated_at`.
    clock: Clock,
    /// What lookups read: a handshake's callback takes the read lock for a map lookup, never
    /// waiting on the store (a writer takes the write lock only to swap entries in).
    index: RwLock<Index>,
    /// Serializes writers, so the checks a write made against the index still hold when its
    /// entries go in, without holding the index while the store writes.
    writes: Mutex<()>,
    /// Bumped whenever a key is replaced or removed ([`PskKeys::generation`]).
    generation: AtomicU64,
}

impl Credentials {
    /// Every credential kept in `store`, loaded into the index.
    pub fn open(store: Arc<dyn Store>, clock: Clock) -> Result<Credentials, CatalogError> {
        let index = load(store.as_ref())?;
        Ok(Credentials {
            shared: Arc::new(Shared {
                store,
                clock,
                index: RwLock::new(index),
                writes: Mutex::new(()),
                generation: AtomicU64::new(0),
            }),
        })
    }

    /// How many times credentials were written, on any node.
    pub fn revision(&self) -> Result<u64, CatalogError> {
        Ok(self.shared.store.get(REVISION)?.unwrap_or(0))
    }

    /// Reads every credential again from the store (another node of a cluster changed them);
    /// sessions made with a key that changed need a new handshake.
    pub fn reload(&self) -> Result<(), CatalogError> {
        let index = load(self.shared.store.as_ref())?;
        *write(&self.shared.index) = index;
        self.shared.generation.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Adds the count of credential writes to `batch`.
    fn count_write(&self, batch: &mut Batch) -> Result<(), CatalogError> {
        batch.put(REVISION, &(self.revision()? + 1));
        Ok(())
    }

    /// The key of the device whose PSK identity is `identity`. In memory only: for the DTLS
    /// handshake's PSK callback.
    pub fn psk(&self, identity: &str) -> Option<Zeroizing<Vec<u8>>> {
        let index = read(&self.shared.index);
        index.entry_of(identity).map(|entry| entry.key.clone())
    }

    /// The endpoint name `identity` is bound to. In memory only.
    pub fn endpoint_of(&self, identity: &str) -> Option<String> {
        read(&self.shared.index).by_identity.get(identity).cloned()
    }

    /// The PSK identity of the device `endpoint`. In memory only.
    pub fn identity_of(&self, endpoint: &str) -> Option<String> {
        let index = read(&self.shared.index);
        index.by_endpoint.get(endpoint).map(|e| e.identity.clone())
    }

    /// `endpoint`'s credential, without its key.
    pub fn summary(&self, endpoint: &str) -> Result<CredentialSummary, CatalogError> {
        let index = read(&self.shared.index);
        let entry = index
            .by_endpoint
            .get(endpoint)
            .ok_or_else(|| CatalogError::NotFound {
                kind: "credential of device",
                id: endpoint.to_string(),
            })?;
        Ok(summary(endpoint, entry))
    }

    /// Every credential without its key, in endpoint order.
    pub fn summaries(&self) -> Vec<CredentialSummary> {
        let index = read(&self.shared.index);
        let entries = index.by_endpoint.iter();
        entries.map(|(endpoint, e)| summary(endpoint, e)).collect()
    }

    /// Sets (or replaces) one device's credential; its previous identity is free again. An
    /// identity bound to another device is refused (`Duplicate`).
    pub fn set(&self, credential: NewCredential) -> Result<CredentialSummary, CatalogError> {
        let (endpoint, identity) = (credential.endpoint.clone(), credential.identity.clone());
        let updated_at = self.write(vec![credential]).map_err(|(_, error)| error)?;
        tracing::info!(endpoint, identity, "PSK credential set");
        Ok(CredentialSummary {
            endpoint,
            identity,
            updated_at,
        })
    }

    /// Sets every credential of `batch` in one write, or none: the first row that breaks a
    /// rule (an endpoint or identity given twice, an identity bound to a device outside the
    /// batch) is refused with its name, `row_name` of its position, and nothing is written.
    /// Returns how many were set.
    pub fn import(
        &self,
        batch: Vec<NewCredential>,
        row_name: impl Fn(usize) -> String,
    ) -> Result<usize, CatalogError> {
        let count = batch.len();
        self.write(batch).map_err(|(row, error)| match row {
            Some(row) => in_row(&row_name(row), error),
            None => error,
        })?;
        tracing::info!(count, "PSK credentials imported");
        Ok(count)
    }

    /// Removes `endpoint`'s credential: the device can no longer complete a handshake.
    pub fn remove(&self, endpoint: &str) -> Result<(), CatalogError> {
        let _writing = lock(&self.shared.writes);
        self.summary(endpoint)?;
        let mut batch = Batch::new();
        batch.remove(credential_key(endpoint));
        self.count_write(&mut batch)?;
        self.shared.store.apply(batch)?;
        self.shared.store.flush()?;
        write(&self.shared.index).remove(endpoint);
        self.shared.generation.fetch_add(1, Ordering::Relaxed);
        tracing::info!(endpoint, "PSK credential removed");
        Ok(())
    }

    /// Checks `batch` against the index, writes it durably, then puts it in the index; returns
    /// its `updated_at`. A refusal names the row that broke a rule; a store failure names none.
    fn write(
        &self,
        batch: Vec<NewCredential>,
    ) -> Result<UnixMillis, (Option<usize>, CatalogError)> {
        let _writing = lock(&self.shared.writes);
        if let Some((row, error)) = read(&self.shared.index).refusal(&batch) {
            return Err((Some(row), error));
        }
        let updated_at = self.shared.clock.now();
        let mut records = Batch::new();
        for credential in &batch {
            let stored = StoredCredential {
                endpoint: credential.endpoint.clone(),
                identity: credential.identity.clone(),
                key_hex: Zeroizing::new(hex::encode(credential.key.as_slice())),
                updated_at,
            };
            records.put(credential_key(&credential.endpoint), &stored);
        }
        self.count_write(&mut records)
            .map_err(|error| (None, error))?;
        let store = &self.shared.store;
        store
            .apply(records)
            .and_then(|()| store.flush())
            .map_err(|error| (None, error.into()))?;
        let mut index = write(&self.shared.index);
        for NewCredential {
            endpoint,
            identity,
            key,
        } in batch
        {
            let entry = Entry {
                identity,
                key,
                updated_at,
            };
            if index.insert(endpoint, entry) {
                self.shared.generation.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(updated_at)
    }
}

impl fmt::Debug for Credentials {
    /// How many there are; never an identity's key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = read(&self.shared.index).by_endpoint.len();
        f.debug_struct("Credentials")
            .field("count", &count)
            .finish_non_exhaustive()
    }
}

fn summary(endpoint: &str, entry: &Entry) -> CredentialSummary {
    CredentialSummary {
        endpoint: endpoint.to_string(),
        identity: entry.identity.clone(),
        updated_at: entry.updated_at,
    }
}

/// `error` with the row of a batch it is about named first.
pub(crate) fn in_row(row: &str, error: CatalogError) -> CatalogError {
    match error {
        CatalogError::Invalid(why) => CatalogError::Invalid(format!("{row}: {why}")),
        CatalogError::Duplicate(why) => CatalogError::Duplicate(format!("{row}: {why}")),
        error => error,
    }
}

/// The bytes of `hex`, when it is hex digits only.
fn decode_key(hex: &str) -> Option<Zeroizing<Vec<u8>>> {
    let mut key = Zeroizing::new(vec![0; hex.len() / 2]);
    hex::decode_to_slice(hex, key.as_mut_slice()).ok()?;
    Some(key)
}

/// `cred/{endpoint}`, escaped so no name reaches another key.
/// Every credential kept in `store`.
fn load(store: &dyn Store) -> Result<Index, CatalogError> {
    let mut index = Index::default();
    for stored in store.scan::<StoredCredential>(PREFIX)? {
        let key = decode_key(&stored.key_hex).ok_or_else(|| StoreError::Corrupt {
            key: credential_key(&stored.endpoint),
            reason: "the key is not hex".into(),
        })?;
        let entry = Entry {
            identity: stored.identity,
            key,
            updated_at: stored.updated_at,
        };
        index.insert(stored.endpoint, entry);
    }
    Ok(index)
}

fn credential_key(endpoint: &str) -> String {
    format!("{PREFIX}{}", key_segment(endpoint))
}

impl PskKeys for Credentials {
    fn psk(&self, identity: &str) -> Option<Zeroizing<Vec<u8>>> {
        Credentials::psk(self, identity)
    }

    fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Relaxed)
    }
}

impl IdentityBinding for Credentials {
    fn endpoint_of(&self, identity: &str) -> Option<String> {
        Credentials::endpoint_of(self, identity)
    }

    fn identity_of(&self, endpoint: &str) -> Option<String> {
        Credentials::identity_of(self, endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    const T0: UnixMillis = 1_800_000_000_000;

    fn key(byte: u8) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(vec![byte; 16])
    }

    fn credential(endpoint: &str, identity: &str, byte: u8) -> NewCredential {
        NewCredential::new(endpoint, identity, key(byte)).expect("a valid credential")
    }

    fn open(store: &Arc<dyn Store>) -> Credentials {
        Credentials::open(store.clone(), Clock::starting_at(T0)).unwrap()
    }

    fn temporary() -> (Arc<dyn Store>, Credentials) {
        let store: Arc<dyn Store> = Arc::new(SledStore::temporary().unwrap());
        let credentials = open(&store);
        (store, credentials)
    }

    /// The detail of an `Invalid` refusal.
    fn invalid(made: Result<NewCredential, CatalogError>) -> String {
        match made {
            Err(CatalogError::Invalid(why)) => why,
            other => panic!("not refused as invalid: {other:?}"),
        }
    }

    #[test]
    fn the_bounds_of_endpoints_identities_and_keys_are_inclusive() {
        let longest = NewCredential::new(
            "e".repeat(MAX_ENDPOINT_BYTES),
            "é".repeat(MAX_IDENTITY_BYTES / 2),
            Zeroizing::new(vec![7; MAX_KEY_BYTES]),
        );
        assert!(longest.is_ok(), "{longest:?}");
        assert!(NewCredential::new("e", "i d", Zeroizing::new(vec![0])).is_ok());

        for endpoint in ["", &"e".repeat(MAX_ENDPOINT_BYTES + 1), "a b", "a\u{7}"] {
            let why = invalid(NewCredential::new(endpoint, "id", key(1)));
            assert!(why.contains("endpoint name"), "{why}");
        }
        let too_long = "é".repeat(MAX_IDENTITY_BYTES / 2) + "x";
        for identity in ["", too_long.as_str(), "id\n", "\u{0}", "id\u{85}"] {
            let why = invalid(NewCredential::new("e", identity, key(1)));
            assert!(why.contains("an identity is 1 to 128 bytes"), "{why}");
        }
        for length in [0, MAX_KEY_BYTES + 1] {
            let why = invalid(NewCredential::new(
                "e",
                "id",
                Zeroizing::new(vec![1; length]),
            ));
            assert!(why.ends_with(&format!("bytes, not {length}")), "{why}");
        }
    }

    #[test]
    fn a_hex_key_is_two_digits_a_byte_in_either_case() {
        let made = NewCredential::with_hex_key("e", "id", "00aBfF").unwrap();
        assert_eq!(made.key.as_slice(), [0x00, 0xab, 0xff]);
        for bad in ["", "abc", "zz", "0x00", "00 11"] {
            let why = invalid(NewCredential::with_hex_key("e", "id", bad));
            assert!(
                why.contains("hex") || why.ends_with("not 0"),
                "{bad}: {why}"
            );
        }
        let too_long = "00".repeat(MAX_KEY_BYTES + 1);
        assert!(invalid(NewCredential::with_hex_key("e", "id", &too_long)).ends_with("not 65"));
    }

    #[test]
    fn the_key_is_never_printed() {
        let secret = Zeroizing::new(b"SECRET-KEY-BYTES".to_vec());
        let made = NewCredential::new("urn:imei:1", "id-1", secret.clone()).unwrap();
        let (_store, credentials) = temporary();
        credentials.set(made.clone()).unwrap();
        let printed = format!("{made:?} {credentials:?} {:?}", credentials.summaries());
        assert!(
            printed.contains("<redacted>") && printed.contains("id-1"),
            "{printed}"
        );
        for leak in ["SECRET", "83, 69, 67", &hex::encode(secret.as_slice())] {
            assert!(!printed.contains(leak), "{leak} in {printed}");
        }
    }

    #[test]
    fn another_node_sees_the_revision_move_and_reads_the_credentials_again() {
        let (store, coordinator) = temporary();
        let member = open(&store);
        let (before, generation) = (member.revision().unwrap(), member.generation());
        coordinator
            .set(credential("urn:imei:1", "id-1", 0xA1))
            .unwrap();
        let set = member.revision().unwrap();
        assert!(set > before, "a write moves the revision");
        assert_eq!(member.psk("id-1"), None, "not read yet");
        member.reload().unwrap();
        assert_eq!(member.psk("id-1"), Some(key(0xA1)));
        assert!(
            member.generation() > generation,
            "sessions check their keys again"
        );
        coordinator.remove("urn:imei:1").unwrap();
        assert!(member.revision().unwrap() > set);
        member.reload().unwrap();
        assert_eq!(member.psk("id-1"), None);
    }

    #[test]
    fn a_set_credential_is_found_by_identity_and_by_endpoint() {
        let (_store, credentials) = temporary();
        let summary = credentials
            .set(credential("urn:imei:1", "id-1", 0xA1))
            .unwrap();
        // The clock runs on from T0 (a sled write and flush may take a millisecond or more).
        assert!(summary.updated_at >= T0, "{summary:?}");
        let expected = CredentialSummary {
            endpoint: "urn:imei:1".into(),
            identity: "id-1".into(),
            updated_at: summary.updated_at,
        };
        assert_eq!(summary, expected);
        assert_eq!(credentials.summary("urn:imei:1").unwrap(), expected);
        assert_eq!(credentials.psk("id-1"), Some(key(0xA1)));
        assert_eq!(
            credentials.endpoint_of("id-1").as_deref(),
            Some("urn:imei:1")
        );
        assert_eq!(
            credentials.identity_of("urn:imei:1").as_deref(),
            Some("id-1")
        );
        assert_eq!(
            credentials.psk("urn:imei:1"),
            None,
            "an endpoint is no identity"
        );
        assert_eq!(credentials.psk("id-2"), None);
        assert!(matches!(
            credentials.summary("urn:imei:2"),
            Err(CatalogError::NotFound { .. })
        ));
    }

    #[test]
    fn the_generation_moves_when_a_key_is_replaced_or_removed_only() {
        let (_store, credentials) = temporary();
        let generation = || PskKeys::generation(&credentials);
        credentials.set(credential("dev-a", "id-a", 1)).unwrap();
        let batch = vec![
            credential("dev-b", "id-b", 2),
            credential("dev-c", "id-c", 3),
        ];
        credentials
            .import(batch, |row| format!("row {row}"))
            .unwrap();
        credentials.set(credential("dev-a", "id-a", 1)).unwrap();
        assert_eq!(generation(), 0, "new keys, and a key set again as it was");
        credentials.set(credential("dev-a", "id-a", 9)).unwrap();
        assert_eq!(generation(), 1, "a key replaced");
        credentials.set(credential("dev-b", "id-b2", 2)).unwrap();
        assert_eq!(generation(), 2, "an identity replaced");
        credentials.remove("dev-c").unwrap();
        assert_eq!(generation(), 3, "a key removed");
    }

    #[test]
    fn an_identity_serves_one_device_and_a_replaced_one_is_free_again() {
        let (_store, credentials) = temporary();
        credentials.set(credential("dev-a", "id-a", 1)).unwrap();
        let refused = credentials.set(credential("dev-b", "id-a", 2));
        match refused {
            Err(CatalogError::Duplicate(why)) => assert!(why.contains("dev-a"), "{why}"),
            other => panic!("not refused as a duplicate: {other:?}"),
        }
        assert_eq!(credentials.identity_of("dev-b"), None, "nothing set");
        assert_eq!(credentials.psk("id-a"), Some(key(1)), "nothing changed");

        // The same device takes a new key under its identity, then a new identity.
        credentials.set(credential("dev-a", "id-a", 3)).unwrap();
        assert_eq!(credentials.psk("id-a"), Some(key(3)));
        credentials.set(credential("dev-a", "id-a2", 4)).unwrap();
        assert_eq!(credentials.psk("id-a"), None, "the old identity is free");
        assert_eq!(credentials.endpoint_of("id-a"), None);
        credentials.set(credential("dev-b", "id-a", 5)).unwrap();
        assert_eq!(credentials.endpoint_of("id-a").as_deref(), Some("dev-b"));
        assert_eq!(credentials.endpoint_of("id-a2").as_deref(), Some("dev-a"));
        assert_eq!(credentials.summaries().len(), 2);
    }

    #[test]
    fn a_removed_credential_is_gone_and_its_identity_free() {
        let (store, credentials) = temporary();
        credentials.set(credential("dev-a", "id-a", 1)).unwrap();
        credentials.remove("dev-a").unwrap();
        assert_eq!(credentials.psk("id-a"), None);
        assert_eq!(credentials.identity_of("dev-a"), None);
        assert!(matches!(
            credentials.remove("dev-a"),
            Err(CatalogError::NotFound { .. })
        ));
        assert!(open(&store).summaries().is_empty(), "gone from the store");
        credentials.set(credential("dev-b", "id-a", 2)).unwrap();
    }

    #[test]
    fn an_import_is_written_whole_or_not_at_all_and_names_the_row_that_breaks_a_rule() {
        let (store, credentials) = temporary();
        credentials.set(credential("kept", "id-kept", 1)).unwrap();
        let row_name = |row: usize| format!("line {}", row + 2);
        let refusals = [
            (
                vec![("a", "id-1"), ("b", "id-kept"), ("c", "id-3")],
                "line 3: identity id-kept is bound to endpoint kept",
            ),
            (
                vec![("a", "id-1"), ("b", "id-2"), ("a", "id-3")],
                "line 4: endpoint a is given a credential twice",
            ),
            (
                vec![("a", "id-1"), ("b", "id-1")],
                "line 3: identity id-1 is also given to endpoint a",
            ),
        ];
        for (rows, expected) in refusals {
            let batch = rows.iter().map(|(e, i)| credential(e, i, 9)).collect();
            let error = credentials.import(batch, row_name).unwrap_err();
            assert_eq!(error.to_string(), expected);
            let all = credentials.summaries();
            assert_eq!(all.len(), 1, "nothing written: {all:?}");
            assert_eq!(open(&store).summaries(), all, "nothing stored");
        }

        // A batch may move identities among its own devices (taken before they are freed
        // here), and replace credentials.
        let batch = vec![
            credential("b", "id-kept", 3),
            credential("kept", "id-new", 2),
            credential("c", "id-c", 4),
        ];
        assert_eq!(credentials.import(batch, row_name).unwrap(), 3);
        assert_eq!(credentials.endpoint_of("id-kept").as_deref(), Some("b"));
        assert_eq!(credentials.psk("id-kept"), Some(key(3)));
        assert_eq!(credentials.psk("id-new"), Some(key(2)));
        let swap = vec![credential("b", "id-c", 5), credential("c", "id-kept", 6)];
        credentials.import(swap, row_name).unwrap();
        assert_eq!(credentials.endpoint_of("id-c").as_deref(), Some("b"));
        assert_eq!(credentials.endpoint_of("id-kept").as_deref(), Some("c"));
        assert_eq!(open(&store).psk("id-kept"), Some(key(6)), "as stored");
        let endpoints: Vec<String> = credentials
            .summaries()
            .into_iter()
            .map(|s| s.endpoint)
            .collect();
        assert_eq!(endpoints, ["b", "c", "kept"], "in endpoint order");
        assert_eq!(credentials.import(Vec::new(), row_name).unwrap(), 0);
    }

    #[test]
    fn credentials_are_loaded_again_from_the_store_on_disk() {
        let dir = std::env::temp_dir().join(format!("fota-credentials-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir).unwrap());
            let credentials = open(&store);
            credentials
                .set(credential("urn:imei:1", "id-1", 1))
                .unwrap();
            credentials.set(credential("a/b", "id-2", 2)).unwrap();
            credentials
                .set(credential("urn:imei:3", "id-3", 3))
                .unwrap();
            credentials
                .set(credential("urn:imei:1", "id-1b", 4))
                .unwrap();
            credentials.remove("urn:imei:3").unwrap();
        }
        let store: Arc<dyn Store> = Arc::new(SledStore::reopen(&dir).unwrap());
        let again = open(&store);
        assert_eq!(again.psk("id-1b"), Some(key(4)));
        assert_eq!(again.psk("id-1"), None);
        assert_eq!(again.endpoint_of("id-2").as_deref(), Some("a/b"));
        assert_eq!(again.identity_of("urn:imei:3"), None);
        assert_eq!(again.summaries().len(), 2);
        drop((again, store));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
