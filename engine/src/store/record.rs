//! The envelope of every stored record: one format-version byte, then the record as JSON. A
//! later release that changes a record bumps the version and migrates what it finds.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;

/// Version of the records this release writes and reads.
pub const FORMAT_VERSION: u8 = 1;

/// Anything the store keeps as a record.
pub trait Record: Serialize + DeserializeOwned {}

impl<T: Serialize + DeserializeOwned> Record for T {}

/// `value` in its envelope.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut bytes = vec![FORMAT_VERSION];
    serde_json::to_writer(&mut bytes, value).expect("records serialize to JSON");
    bytes
}

/// A record already serialized to `json` (as [`encode`] would), in its envelope.
pub fn encode_json(json: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1 + json.len());
    bytes.push(FORMAT_VERSION);
    bytes.extend_from_slice(json.as_bytes());
    bytes
}

/// The record stored at `key`.
pub fn decode<T: Record>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, json)) => {
            serde_json::from_slice(json).map_err(|error| StoreError::Corrupt {
                key: key.to_string(),
                reason: error.to_string(),
            })
        }
        Some((&found, _)) => Err(StoreError::UnknownVersion { found }),
        None => Err(StoreError::Corrupt {
            key: key.to_string(),
            reason: "empty value".into(),
        }),
    }
}
