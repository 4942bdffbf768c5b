//! Packages: what devices receive. A full package carries a whole image and fits any device of
//! the model ("all historical versions"); a delta package takes devices from one base version to
//! one target version and is made by the differ plugin bound to the vendor and model. A package
//! is made in its model's format (`formats`), or uploaded as the module maker made it (online or
//! offline, with its own tools) and then checked with the bound differ where it can read it.
//! Every package is kept in the store (its bytes once per content) and put on the shelf the
//! engine delivers from.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::firmware::{name_ok, version_ok};
use super::formats::{Framing, PackageFormat};
use super::{Catalog, CatalogError, Firmware, new_id};
use crate::clock::UnixMillis;
use crate::package;
use crate::store::{Batch, StoreExt};
use crate::transfer::ShelvedPackage;

/// Key prefix of package records.
const PREFIX: &str = "pkg/";
/// Key prefix of package bytes, by shelf id (the first 16 hex digits of their sha256).
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

impl PackageKind {
    fn header_kind(self) -> package::PackageKind {
        match self {
            PackageKind::Full => package::PackageKind::Full,
            PackageKind::Delta => package::PackageKind::Delta,
        }
    }
}

/// What was checked of a package a module maker uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadCheck {
    /// Whether the platform could check that it rebuilds the target image.
    pub verified: bool,
    /// What was checked, or why nothing could be.
    pub check: String,
}

/// One package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageRecord {
    /// Id, in the API.
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
    /// Firmware the delta starts from, when it is in the catalog.
    pub from_firmware: Option<String>,
    /// Firmware devices end with, when it is in the catalog.
    pub to_firmware: Option<String>,
    /// The /3/0/3 string a device reports once it runs the package's version, for a package
    /// whose target firmware is not in the catalog (otherwise the firmware's says).
    #[serde(default)]
    pub reported_version: Option<String>,
    /// How its bytes are framed (records made before formats existed were signed).
    #[serde(default = "signed")]
    pub format: PackageFormat,
    /// The packager plugin that framed it, for the `packager` format.
    #[serde(default)]
    pub packager: Option<String>,
    /// For a package uploaded as its maker made it (and sent as is): what was checked;
    /// `None` for one the platform made.
    #[serde(default)]
    pub uploaded: Option<UploadCheck>,
    /// Bytes sent to a device.
    pub size: u64,
    /// sha256 of those bytes, hex.
    pub sha256: String,
    /// Creation time.
    pub created_at: UnixMillis,
}

fn signed() -> PackageFormat {
    PackageFormat::Signed
}

impl PackageRecord {
    /// The id its bytes have on the shelf and in their Package URI.
    pub fn shelf_id(&self) -> &str {
        &self.sha256[..16]
    }
}

/// A package a module maker made, as uploaded.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadedPackage {
    /// Manufacturer.
    pub vendor: String,
    /// Module model.
    pub model: String,
    /// Full or delta.
    pub kind: PackageKind,
    /// A delta's base version.
    pub from_version: Option<String>,
    /// The version devices run afterwards.
    pub to_version: String,
    /// The /3/0/3 string devices report on `to_version`, when it is not the version itself
    /// and the firmware is not in the catalog.
    pub reported_version: Option<String>,
}

impl Catalog {
    /// A full package of firmware `to`, in its model's format (or `format`).
    pub async fn create_full_package(
        &self,
        to: &str,
        format: Option<PackageFormat>,
    ) -> Result<PackageRecord, CatalogError> {
        let target = self.firmware(to)?;
        let image = self.image(&target)?;
        let format = self.format_for(&target, format)?;
        let framing = framing(PackageKind::Full, None, &target, &image);
        let (bytes, packager) = self.frame(format, framing, image.clone()).await?;
        let record = made_record(PackageKind::Full, None, &target, format, packager);
        self.save_package(record, bytes)
    }

    /// A delta package from firmware `from` to firmware `to` (same vendor and model), made by
    /// the differ bound to them, in their model's format (or `format`).
    pub async fn create_delta_package(
        &self,
        from: &str,
        to: &str,
        format: Option<PackageFormat>,
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
        let format = self.format_for(&target, format)?;
        let old: Arc<[u8]> = self.image(&base)?.into();
        let new: Arc<[u8]> = self.image(&target)?.into();
        let patch = self
            .plugins
            .make_patch(&target.vendor, &target.model, old, new.clone())
            .await
            .map_err(|e| CatalogError::Plugin(e.to_string()))?
            .map_err(|refusal| CatalogError::Plugin(format!("the differ refused: {refusal}")))?;
        let framing = framing(PackageKind::Delta, Some(&base), &target, &new);
        let (bytes, packager) = self.frame(format, framing, patch).await?;
        let record = made_record(PackageKind::Delta, Some(&base), &target, format, packager);
        self.save_package(record, bytes)
    }

    /// Keeps a package a module maker made, sent to devices exactly as uploaded. A delta whose
    /// base firmware is in the catalog is checked with the differ bound to the model: one
    /// that reads it must rebuild the target firmware (when that is in the catalog too), or
    /// the upload is refused; one that cannot read it (the maker's own format) leaves the
    /// package unchecked, and says so.
    pub async fn upload_package(
        &self,
        upload: UploadedPackage,
        bytes: Vec<u8>,
    ) -> Result<PackageRecord, CatalogError> {
        validate_upload(&upload, &bytes)?;
        let (vendor, model) = (&upload.vendor, &upload.model);
        let target = self.find_firmware(vendor, model, &upload.to_version)?;
        let base = match &upload.from_version {
            Some(from) => self.find_firmware(vendor, model, from)?,
            None => None,
        };
        let (verified, check) = self
            .check_upload(&upload, base.as_ref(), target.as_ref(), &bytes)
            .await?;
        let record = PackageRecord {
            id: new_id("pkg"),
            kind: upload.kind,
            vendor: vendor.clone(),
            model: model.clone(),
            from_version: upload.from_version.clone(),
            to_version: upload.to_version.clone(),
            from_firmware: base.map(|f| f.id),
            to_firmware: target.map(|f| f.id),
            reported_version: upload.reported_version.clone(),
            format: PackageFormat::Raw,
            packager: None,
            uploaded: Some(UploadCheck { verified, check }),
            size: 0,
            sha256: String::new(),
            created_at: 0,
        };
        self.save_package(record, bytes)
    }

    /// Whether an uploaded package rebuilds its target: `(verified, what was checked)`.
    async fn check_upload(
        &self,
        upload: &UploadedPackage,
        base: Option<&Firmware>,
        target: Option<&Firmware>,
        bytes: &[u8],
    ) -> Result<(bool, String), CatalogError> {
        if upload.kind == PackageKind::Full {
            return Ok(match target {
                Some(target) if hex::encode(Sha256::digest(bytes)) == target.sha256 => (
                    true,
                    format!("identical to the image of firmware {}", target.id),
                ),
                _ => (false, "a vendor's full package: sent as uploaded".into()),
            });
        }
        let Some(base) = base else {
            return Ok((
                false,
                "the base version is not in the catalog: not checked".into(),
            ));
        };
        let differ = self.plugins.differ(&upload.vendor, &upload.model);
        let old: Arc<[u8]> = self.image(base)?.into();
        let rebuilt = differ
            .apply_patch(old, Arc::from(bytes))
            .await
            .map_err(|e| CatalogError::Plugin(e.to_string()))?;
        let rebuilt = match rebuilt {
            Ok(rebuilt) => rebuilt,
            Err(reason) => {
                return Ok((
                    false,
                    format!(
                        "the differ {} cannot read it ({reason}): not checked",
                        differ.name()
                    ),
                ));
            }
        };
        let sha256 = hex::encode(Sha256::digest(&rebuilt));
        match target {
            Some(target) if target.sha256 != sha256 => Err(CatalogError::Invalid(format!(
                "the package applied to firmware {} does not rebuild firmware {} \
                 (sha256 {sha256}, expected {})",
                base.id, target.id, target.sha256
            ))),
            Some(target) => Ok((
                true,
                format!(
                    "the differ {} rebuilds firmware {} from firmware {}",
                    differ.name(),
                    target.id,
                    base.id
                ),
            )),
            None => Ok((
                true,
                format!(
                    "the differ {} reads it: {} bytes (sha256 {sha256}) from firmware {}",
                    differ.name(),
                    rebuilt.len(),
                    base.id
                ),
            )),
        }
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

    /// The bytes of package `id`, as delivered. The shelf is a cache of the store: a package
    /// another node added since this one started is shelved at its first use here.
    pub fn package_bytes(&self, id: &str) -> Result<Arc<ShelvedPackage>, CatalogError> {
        let record = self.package(id)?;
        if let Some(shelved) = self.shelf.get(record.shelf_id()) {
            return Ok(shelved);
        }
        let key = format!("{BYTES}{}", record.shelf_id());
        let bytes = self
            .store
            .get_raw(&key)?
            .ok_or_else(|| CatalogError::NotFound {
                kind: "package bytes",
                id: id.to_string(),
            })?;
        self.shelve(key, bytes)
    }

    /// The /3/0/3 string a device reports once it runs `package`'s version: its target
    /// firmware's, else the one uploaded with it, else the version itself.
    pub fn reported_version(&self, package: &PackageRecord) -> String {
        let firmware = package
            .to_firmware
            .as_deref()
            .and_then(|id| self.firmware(id).ok());
        match (firmware, &package.reported_version) {
            (Some(firmware), _) => firmware.reported().to_string(),
            (None, Some(reported)) => reported.clone(),
            (None, None) => package.to_version.clone(),
        }
    }

    /// Deletes a package. The caller checks no task uses it. Its bytes go unless another
    /// package has the same.
    pub fn delete_package(&self, id: &str) -> Result<(), CatalogError> {
        let record = self.package(id)?;
        let shared = self
            .packages()?
            .iter()
            .any(|p| p.id != id && p.shelf_id() == record.shelf_id());
        let mut batch = Batch::new();
        batch.remove(package_key(id));
        if !shared {
            batch.remove(format!("{BYTES}{}", record.shelf_id()));
        }
        self.store.apply(batch)?;
        self.store.flush()?;
        if !shared {
            self.shelf.remove(record.shelf_id());
        }
        Ok(())
    }

    /// The format a package of `target` is made in: `asked`, else its model's.
    fn format_for(
        &self,
        target: &Firmware,
        asked: Option<PackageFormat>,
    ) -> Result<PackageFormat, CatalogError> {
        match asked {
            Some(format) => Ok(format),
            None => self.package_format(&target.vendor, &target.model),
        }
    }

    /// Keeps `record` with `bytes` (its size and hash filled in) and shelves the bytes.
    fn save_package(
        &self,
        mut record: PackageRecord,
        bytes: Vec<u8>,
    ) -> Result<PackageRecord, CatalogError> {
        let shelved = self.shelf.put(Bytes::from(bytes));
        record.size = shelved.len() as u64;
        record.created_at = self.clock.now();
        record.sha256 = hex::encode(shelved.sha256);
        let mut batch = Batch::new();
        batch
            .put(package_key(&record.id), &record)
            .put_bytes(format!("{BYTES}{}", shelved.id), shelved.bytes.to_vec());
        self.store.apply(batch)?;
        self.store.flush()?;
        tracing::info!(
            package = %record.id, vendor = %record.vendor, model = %record.model,
            kind = ?record.kind, format = record.format.name(), size = record.size,
            "package ready"
        );
        Ok(record)
    }

    /// Puts every stored package on the shelf (at start).
    pub(super) fn shelve_all(&self) -> Result<(), CatalogError> {
        for (key, bytes) in self.store.scan_raw(BYTES)? {
            self.shelve(key, bytes)?;
        }
        Ok(())
    }

    /// Shelves the package bytes stored at `key`, which names their hash.
    fn shelve(&self, key: String, bytes: Vec<u8>) -> Result<Arc<ShelvedPackage>, CatalogError> {
        let shelved = self.shelf.put(Bytes::from(bytes));
        if key[BYTES.len()..] != shelved.id {
            return Err(CatalogError::Store(crate::store::StoreError::Corrupt {
                key,
                reason: "package bytes do not match their id".into(),
            }));
        }
        Ok(shelved)
    }
}

/// What the platform makes a package of.
fn framing<'a>(
    kind: PackageKind,
    base: Option<&'a Firmware>,
    target: &'a Firmware,
    image: &'a [u8],
) -> Framing<'a> {
    Framing {
        vendor: &target.vendor,
        model: &target.model,
        kind: kind.header_kind(),
        from_version: base.map(|b| b.version.as_str()),
        to_version: &target.version,
        image,
    }
}

/// The record of a package the platform made (size and hash filled in when saved).
fn made_record(
    kind: PackageKind,
    base: Option<&Firmware>,
    target: &Firmware,
    format: PackageFormat,
    packager: Option<String>,
) -> PackageRecord {
    PackageRecord {
        id: new_id("pkg"),
        kind,
        vendor: target.vendor.clone(),
        model: target.model.clone(),
        from_version: base.map(|b| b.version.clone()),
        to_version: target.version.clone(),
        from_firmware: base.map(|b| b.id.clone()),
        to_firmware: Some(target.id.clone()),
        reported_version: None,
        format,
        packager,
        uploaded: None,
        size: 0,
        sha256: String::new(),
        created_at: 0,
    }
}

/// An upload names its model and versions as a package made here would, and has bytes.
fn validate_upload(upload: &UploadedPackage, bytes: &[u8]) -> Result<(), CatalogError> {
    let invalid = |reason: &str| Err(CatalogError::Invalid(reason.into()));
    if bytes.is_empty() {
        return invalid("an uploaded package needs its bytes");
    }
    if !name_ok(&upload.vendor) || !name_ok(&upload.model) {
        return invalid("an uploaded package names its vendor and model (1 to 255 bytes each)");
    }
    if !version_ok(&upload.to_version)
        || upload
            .from_version
            .as_deref()
            .is_some_and(|v| !version_ok(v))
        || upload
            .reported_version
            .as_deref()
            .is_some_and(|v| !version_ok(v))
    {
        return invalid("versions have 1 to 255 bytes");
    }
    match (upload.kind, &upload.from_version) {
        (PackageKind::Delta, None) => invalid("a delta package names its base version"),
        (PackageKind::Full, Some(_)) => invalid("a full package has no base version"),
        _ => Ok(()),
    }
}

fn package_key(id: &str) -> String {
    format!("{PREFIX}{id}")
}
