//! Packages: what devices receive. A full package carries a whole image and fits any device of
//! the model ("all historical versions"); a delta package takes devices from one base version to
//! one target version and is made by the differ plugin bound to the vendor and model. Every
//! package is signed with the platform key, kept in the store and put on the shelf the engine
//! delivers from.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Catalog, CatalogError, Firmware};
use crate::clock::UnixMillis;
use crate::package::{self, PackageHeader};
use crate::store::{Batch, StoreExt};
use crate::transfer::ShelvedPackage;

/// Key prefix of package records.
const PREFIX: &str = "pkg/";
/// Key prefix of package bytes.
const BYTES: &str = "pkgbytes/";

/// Full image or delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PackageKind {
    /// Any device of the model.
    Full,
    /// Devices on `from_version` only.
    Delta,
}

/// One package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageRecord {
    /// Id: the package's id on the shelf and in its Package URI.
    pub id: String,
    /// Full or delta.
    pub kind: PackageKind,
    /// Manufacturer.
    pub vendor: String,
    /// Module model.
    pub model: String,
    /// Base version of a delta.
    pub from_version: Option<String>,
    /// Version devices run afterwards.
    pub to_version: String,
    /// Firmware the delta starts from.
    pub from_firmware: Option<String>,
    /// Firmware devices end with.
    pub to_firmware: String,
    /// Bytes sent to a device.
    pub size: u64,
    /// sha256 of those bytes, hex.
    pub sha256: String,
    /// Creation time.
    pub created_at: UnixMillis,
}

impl Catalog {
    /// A full package of firmware `to`.
    pub fn create_full_package(&self, to: &str) -> Result<PackageRecord, CatalogError> {
        let target = self.firmware(to)?;
        let image = self.image(&target)?;
        let bytes = package::full(&image, &target.version)
            .map_err(|e| CatalogError::Invalid(e.to_string()))?;
        self.save_package(PackageKind::Full, None, &target, bytes)
    }

    /// A delta package from firmware `from` to firmware `to` (same vendor and model), made by
    /// the differ bound to them.
    pub async fn create_delta_package(
        &self,
        from: &str,
        to: &str,
    ) -> Result<PackageRecord, CatalogError> {
        let (base, target) = (self.firmware(from)?, self.firmware(to)?);
        if (base.vendor.as_str(), base.model.as_str()) != (&target.vendor, &target.model) {
            return Err(CatalogError::Invalid(format!(
                "a delta needs two versions of one model: {} {} and {} {}",
                base.vendor, base.model, target.vendor, target.model
            )));
        }
        if base.id == target.id {
            return Err(CatalogError::Invalid(
                "a delta needs two different versions".into(),
            ));
        }
        let old: Arc<[u8]> = self.image(&base)?.into();
        let new: Arc<[u8]> = self.image(&target)?.into();
        let patch = self
            .plugins
            .make_patch(&target.vendor, &target.model, old, new.clone())
            .await
            .map_err(|e| CatalogError::Plugin(e.to_string()))?
            .map_err(|refusal| CatalogError::Plugin(format!("the differ refused: {refusal}")))?;
        let header = PackageHeader {
            kind: package::PackageKind::Delta,
            to_version: target.version.clone(),
            from_version: Some(base.version.clone()),
            image_len: new.len() as u32,
            image_sha256: Sha256::digest(&new).into(),
        };
        let bytes =
            package::build(&header, &patch).map_err(|e| CatalogError::Invalid(e.to_string()))?;
        self.save_package(PackageKind::Delta, Some(&base), &target, bytes)
    }

    /// The package `id`.
    pub fn package(&self, id: &str) -> Result<PackageRecord, CatalogError> {
        self.store
            .get(&package_key(id))?
            .ok_or_else(|| CatalogError::NotFound {
                kind: "package",
                id: id.to_string(),
            })
    }

    /// Every package.
    pub fn packages(&self) -> Result<Vec<PackageRecord>, CatalogError> {
        Ok(self.store.scan(PREFIX)?)
    }

    /// The bytes of package `id`, as delivered.
    pub fn package_bytes(&self, id: &str) -> Result<Arc<ShelvedPackage>, CatalogError> {
        self.shelf.get(id).ok_or_else(|| CatalogError::NotFound {
            kind: "package",
            id: id.to_string(),
        })
    }

    /// Deletes a package. The caller checks no task uses it.
    pub fn delete_package(&self, id: &str) -> Result<(), CatalogError> {
        self.package(id)?;
        let mut batch = Batch::new();
        batch.remove(package_key(id)).remove(format!("{BYTES}{id}"));
        self.store.apply(batch)?;
        self.store.flush()?;
        self.shelf.remove(id);
        Ok(())
    }

    fn save_package(
        &self,
        kind: PackageKind,
        base: Option<&Firmware>,
        target: &Firmware,
        unsigned: Vec<u8>,
    ) -> Result<PackageRecord, CatalogError> {
        let signed = package::sign(&unsigned, &self.key)
            .map_err(|e| CatalogError::Invalid(e.to_string()))?;
        let shelved = self.shelf.put(Bytes::from(signed));
        let record = PackageRecord {
            id: shelved.id.clone(),
            kind,
            vendor: target.vendor.clone(),
            model: target.model.clone(),
            from_version: base.map(|b| b.version.clone()),
            to_version: target.version.clone(),
            from_firmware: base.map(|b| b.id.clone()),
            to_firmware: target.id.clone(),
            size: shelved.len() as u64,
            sha256: hex::encode(shelved.sha256),
            created_at: self.clock.now(),
        };
        let mut batch = Batch::new();
        batch
            .put(package_key(&record.id), &record)
            .put_bytes(format!("{BYTES}{}", record.id), shelved.bytes.to_vec());
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(record)
    }

    /// Puts every stored package on the shelf (at start).
    pub(super) fn shelve_all(&self) -> Result<(), CatalogError> {
        for (key, bytes) in self.store.scan_raw(BYTES)? {
            let shelved = self.shelf.put(Bytes::from(bytes));
            if key[BYTES.len()..] != shelved.id {
                return Err(CatalogError::Store(crate::store::StoreError::Corrupt {
                    key,
                    reason: "package bytes do not match their id".into(),
                }));
            }
        }
        Ok(())
    }
}

fn package_key(id: &str) -> String {
    format!("{PREFIX}{id}")
}
