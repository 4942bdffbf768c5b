//! Firmware versions per vendor and module model. The image bytes are stored once per content
//! hash, however many versions or packages refer to them.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Catalog, CatalogError, new_id};
use crate::clock::UnixMillis;
use crate::store::{Batch, StoreExt};

/// Key prefix of firmware records.
const PREFIX: &str = "fw/";
/// Key prefix of image bytes, by sha256.
const IMAGES: &str = "img/";

/// One firmware version of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Firmware {
    /// Id.
    pub id: String,
    /// Manufacturer.
    pub vendor: String,
    /// Module model.
    pub model: String,
    /// Version, as the operator names it (unique per model).
    pub version: String,
    /// The /3/0/3 string a device reports once it runs this firmware, when it is not
    /// `version` (a device may report "2.2-build7" for "2.2").
    #[serde(default)]
    pub reported_version: Option<String>,
    /// sha256 of the image, hex.
    pub sha256: String,
    /// Image size in bytes.
    pub size: u64,
    /// Upload time.
    pub created_at: UnixMillis,
}

impl Firmware {
    /// The /3/0/3 string a device reports once it runs this firmware.
    pub fn reported(&self) -> &str {
        self.reported_version.as_deref().unwrap_or(&self.version)
    }
}

impl Catalog {
    /// Adds a firmware version; refuses an empty image or a version the model already has.
    pub fn add_firmware(
        &self,
        vendor: &str,
        model: &str,
        version: &str,
        image: &[u8],
    ) -> Result<Firmware, CatalogError> {
        if image.is_empty() || !version_ok(version) || !name_ok(vendor) || !name_ok(model) {
            return Err(CatalogError::Invalid(
                "firmware needs a non-empty image, a vendor and a model of 1 to 255 bytes, and a \
                 version of 1 to 255 bytes"
                    .into(),
            ));
        }
        if self.find_firmware(vendor, model, version)?.is_some() {
            return Err(CatalogError::Duplicate(format!(
                "{vendor} {model} already has a firmware version {version}"
            )));
        }
        let sha256 = hex::encode(Sha256::digest(image));
        let firmware = Firmware {
            id: new_id("fw"),
            vendor: vendor.to_string(),
            model: model.to_string(),
            version: version.to_string(),
            reported_version: None,
            sha256: sha256.clone(),
            size: image.len() as u64,
            created_at: self.clock.now(),
        };
        let mut batch = Batch::new();
        batch
            .put(firmware_key(&firmware.id), &firmware)
            .put_bytes(format!("{IMAGES}{sha256}"), image.to_vec());
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(firmware)
    }

    /// Sets the /3/0/3 string devices report on firmware `id` (`None`: its version).
    pub fn set_reported_version(
        &self,
        id: &str,
        reported: Option<String>,
    ) -> Result<Firmware, CatalogError> {
        check_reported_version(reported.as_deref())?;
        let mut firmware = self.firmware(id)?;
        firmware.reported_version = reported.filter(|r| *r != firmware.version);
        self.store.put_durable(&firmware_key(id), &firmware)?;
        Ok(firmware)
    }

    /// The firmware `id`.
    pub fn firmware(&self, id: &str) -> Result<Firmware, CatalogError> {
        self.store
            .get(&firmware_key(id))?
            .ok_or_else(|| CatalogError::NotFound {
                kind: "firmware",
                id: id.to_string(),
            })
    }

    /// Every firmware version.
    pub fn firmwares(&self) -> Result<Vec<Firmware>, CatalogError> {
        Ok(self.store.scan(PREFIX)?)
    }

    /// The firmware of `vendor` `model` at `version`, if uploaded.
    pub fn find_firmware(
        &self,
        vendor: &str,
        model: &str,
        version: &str,
    ) -> Result<Option<Firmware>, CatalogError> {
        Ok(self
            .firmwares()?
            .into_iter()
            .find(|f| f.vendor == vendor && f.model == model && f.version == version))
    }

    /// The image of firmware `firmware`.
    pub fn image(&self, firmware: &Firmware) -> Result<Vec<u8>, CatalogError> {
        self.store
            .get_raw(&format!("{IMAGES}{}", firmware.sha256))?
            .ok_or_else(|| CatalogError::NotFound {
                kind: "image",
                id: firmware.sha256.clone(),
            })
    }

    /// Deletes a firmware version no package uses; its image goes when no version uses it.
    pub fn delete_firmware(&self, id: &str) -> Result<(), CatalogError> {
        let firmware = self.firmware(id)?;
        if let Some(package) = self.packages()?.into_iter().find(|p| {
            p.to_firmware.as_deref() == Some(id) || p.from_firmware.as_deref() == Some(id)
        }) {
            return Err(CatalogError::InUse(format!(
                "firmware {id} is used by package {}",
                package.id
            )));
        }
        let image_shared = self
            .firmwares()?
            .iter()
            .any(|f| f.id != id && f.sha256 == firmware.sha256);
        let mut batch = Batch::new();
        batch.remove(firmware_key(id));
        if !image_shared {
            batch.remove(format!("{IMAGES}{}", firmware.sha256));
        }
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(())
    }
}

/// Longest version or reported version, in bytes: the signed container gives it one length
/// byte.
pub const MAX_VERSION_BYTES: usize = 255;

/// True for a version string the catalog takes: not blank, at most [`MAX_VERSION_BYTES`].
pub fn version_ok(version: &str) -> bool {
    !is_blank(version) && version.len() <= MAX_VERSION_BYTES
}

/// Longest vendor, model or name, in bytes. They become parts of store keys (a model's
/// statistics, format, plugins), and PostgreSQL's index refuses a key of more than about
/// 2,700 bytes: a longer name would be taken, then fail every write that names it.
pub const MAX_NAME_BYTES: usize = 255;

/// True for a vendor, model or name the catalog takes: not blank, at most [`MAX_NAME_BYTES`].
pub fn name_ok(name: &str) -> bool {
    !is_blank(name) && name.len() <= MAX_NAME_BYTES
}

/// True for a string with nothing but white space (or nothing at all).
pub fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

/// A reported version (/3/0/3 string) has 1 to 255 bytes.
pub fn check_reported_version(reported: Option<&str>) -> Result<(), CatalogError> {
    match reported {
        Some(r) if !version_ok(r) => Err(CatalogError::Invalid(
            "a reported version has 1 to 255 bytes".into(),
        )),
        _ => Ok(()),
    }
}

fn firmware_key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

#[cfg(test)]
mod tests {
    use crate::catalog::test_catalog;
    use crate::clock::Clock;

    use super::*;

    fn images(catalog: &Catalog) -> usize {
        catalog.store.scan_raw(IMAGES).unwrap().len()
    }

    #[test]
    fn an_image_is_stored_once_however_many_versions_use_it_and_goes_with_the_last() {
        let catalog = test_catalog(Clock::starting_at(0));
        let image = vec![42; 10_000];
        let nb1 = catalog.add_firmware("Acme", "NB-1", "2.0", &image).unwrap();
        let nb2 = catalog.add_firmware("Acme", "NB-2", "2.0", &image).unwrap();
        let other = catalog
            .add_firmware("Acme", "NB-1", "2.1", &[7; 100])
            .unwrap();
        assert_eq!(nb1.sha256, nb2.sha256);
        assert_eq!((nb1.size, other.size), (10_000, 100));
        assert_eq!(images(&catalog), 2, "one record per content hash");
        catalog.delete_firmware(&nb1.id).unwrap();
        assert_eq!(catalog.image(&nb2).unwrap(), image, "still used by NB-2");
        catalog.delete_firmware(&nb2.id).unwrap();
        assert_eq!(images(&catalog), 1);
        assert!(catalog.image(&nb2).is_err());
    }

    #[test]
    fn a_duplicate_version_an_empty_image_or_a_blank_name_is_refused() {
        let catalog = test_catalog(Clock::starting_at(0));
        catalog
            .add_firmware("Acme", "NB-1", "2.0", &[1; 10])
            .unwrap();
        assert!(matches!(
            catalog.add_firmware("Acme", "NB-1", "2.0", &[2; 10]),
            Err(CatalogError::Duplicate(_))
        ));
        assert!(catalog.add_firmware("Acme", "NB-1", "2.1", &[]).is_err());
        for (vendor, model, version) in [
            (" ", "NB-1", "2.1"),
            ("Acme", "", "2.1"),
            ("Acme", "NB-1", "\t"),
        ] {
            assert!(matches!(
                catalog.add_firmware(vendor, model, version, &[2; 10]),
                Err(CatalogError::Invalid(_))
            ));
        }
        assert_eq!(catalog.firmwares().unwrap().len(), 1);
    }
}
