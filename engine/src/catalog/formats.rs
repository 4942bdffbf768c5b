//! Package formats: how a module model's packages are framed for its updater, bound per
//! vendor + model. A model nobody configured gets `raw` (the uploaded image, or the differ's
//! output, byte for byte) as a stock LwM2M device expects; the reference device takes the
//! platform's signed container; a vendor's own container is made by the packager plugin bound
//! to the model. Owns the binding and the framing; the bytes' delivery is the transfer's.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::firmware::name_ok;
use super::{Catalog, CatalogError};
use crate::package::{self, PackageHeader};
use crate::plugin::{self, PackageContents};
use crate::store::{Batch, StoreExt, key_segment};

/// Key prefix of format bindings.
const PREFIX: &str = "format/";

/// The byte layout of the packages a model receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PackageFormat {
    /// Exactly the image (full) or the differ's output (delta): what stock updaters expect.
    Raw,
    /// The platform's container (header with versions, sizes and the image's sha256), signed
    /// with the platform key: for devices that verify it, such as the reference device.
    Signed,
    /// Framed by the packager plugin bound to the model (or the packager default).
    Packager,
}

impl PackageFormat {
    /// The name the API uses.
    pub fn name(self) -> &'static str {
        match self {
            PackageFormat::Raw => "raw",
            PackageFormat::Signed => "signed",
            PackageFormat::Packager => "packager",
        }
    }

    /// The format named `name`.
    pub fn named(name: &str) -> Option<Self> {
        [Self::Raw, Self::Signed, Self::Packager]
            .into_iter()
            .find(|f| f.name() == name)
    }
}

/// A model's format binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFormat {
    /// Manufacturer (/3/0/0).
    pub vendor: String,
    /// Module model (/3/0/1).
    pub model: String,
    /// How its packages are framed.
    pub format: PackageFormat,
}

/// What a package holds, for framing it.
pub(super) struct Framing<'a> {
    /// Manufacturer and model the package is for.
    pub vendor: &'a str,
    pub model: &'a str,
    /// Full or delta.
    pub kind: package::PackageKind,
    /// A delta's base version.
    pub from_version: Option<&'a str>,
    /// The version the device ends on.
    pub to_version: &'a str,
    /// The image the device ends with.
    pub image: &'a [u8],
}

impl Catalog {
    /// The format `vendor` `model` packages are made in: `raw` unless bound.
    pub fn package_format(&self, vendor: &str, model: &str) -> Result<PackageFormat, CatalogError> {
        Ok(self
            .store
            .get::<ModelFormat>(&format_key(vendor, model))?
            .map_or(PackageFormat::Raw, |bound| bound.format))
    }

    /// Binds `format` to `vendor` `model` for the packages made from now on.
    pub fn set_package_format(
        &self,
        vendor: &str,
        model: &str,
        format: PackageFormat,
    ) -> Result<ModelFormat, CatalogError> {
        if !name_ok(vendor) || !name_ok(model) {
            return Err(CatalogError::Invalid(
                "a format is bound to a vendor and a model (1 to 255 bytes each)".into(),
            ));
        }
        let bound = ModelFormat {
            vendor: vendor.into(),
            model: model.into(),
            format,
        };
        let mut batch = Batch::new();
        batch.put(format_key(vendor, model), &bound);
        self.store.apply(batch)?;
        self.store.flush()?;
        tracing::info!(
            vendor,
            model,
            format = format.name(),
            "package format bound"
        );
        Ok(bound)
    }

    /// Unbinds `vendor` `model`'s format (it gets `raw` again); false when none was bound.
    pub fn unbind_package_format(&self, vendor: &str, model: &str) -> Result<bool, CatalogError> {
        let key = format_key(vendor, model);
        if self.store.get::<ModelFormat>(&key)?.is_none() {
            return Ok(false);
        }
        let mut batch = Batch::new();
        batch.remove(key);
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(true)
    }

    /// Every bound format.
    pub fn package_formats(&self) -> Result<Vec<ModelFormat>, CatalogError> {
        Ok(self.store.scan(PREFIX)?)
    }

    /// The bytes a device receives for `payload` (a whole image or a delta) in `format`, and
    /// for `packager` the name of the plugin that framed them.
    pub(super) async fn frame(
        &self,
        format: PackageFormat,
        framing: Framing<'_>,
        payload: Vec<u8>,
    ) -> Result<(Vec<u8>, Option<String>), CatalogError> {
        match format {
            PackageFormat::Raw => Ok((payload, None)),
            PackageFormat::Signed => Ok((self.signed(&framing, &payload)?, None)),
            PackageFormat::Packager => {
                let (framed, packager) = self.packaged(&framing, payload).await?;
                Ok((framed, Some(packager)))
            }
        }
    }

    /// `payload` in the platform's container, signed with the platform key.
    fn signed(&self, framing: &Framing<'_>, payload: &[u8]) -> Result<Vec<u8>, CatalogError> {
        let header = PackageHeader {
            kind: framing.kind,
            to_version: framing.to_version.into(),
            from_version: framing.from_version.map(Into::into),
            image_len: u32::try_from(framing.image.len())
                .map_err(|_| CatalogError::Invalid("an image over 4 GiB".into()))?,
            image_sha256: Sha256::digest(framing.image).into(),
        };
        let unsigned =
            package::build(&header, payload).map_err(|e| CatalogError::Invalid(e.to_string()))?;
        package::sign(&unsigned, &self.key).map_err(|e| CatalogError::Invalid(e.to_string()))
    }

    /// `payload` framed by the packager bound to the model, and that packager's name.
    async fn packaged(
        &self,
        framing: &Framing<'_>,
        payload: Vec<u8>,
    ) -> Result<(Vec<u8>, String), CatalogError> {
        let packager = self.plugins.packager(framing.vendor, framing.model);
        let contents = PackageContents {
            manufacturer: framing.vendor.into(),
            model: framing.model.into(),
            kind: match framing.kind {
                package::PackageKind::Full => plugin::PackageKind::Full,
                package::PackageKind::Delta => plugin::PackageKind::Delta,
            },
            from_version: framing.from_version.map(Into::into),
            to_version: framing.to_version.into(),
            image_size: framing.image.len() as u64,
            image_sha256: Sha256::digest(framing.image).to_vec(),
        };
        let framed = packager
            .frame(contents, Arc::from(payload))
            .await
            .map_err(|e| CatalogError::Plugin(e.to_string()))?
            .map_err(|refusal| CatalogError::Plugin(format!("the packager refused: {refusal}")))?;
        Ok((framed, packager.name().to_string()))
    }
}

/// `format/{vendor}/{model}`, each escaped so no name reaches another key.
fn format_key(vendor: &str, model: &str) -> String {
    format!("{PREFIX}{}/{}", key_segment(vendor), key_segment(model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::test_catalog;
    use crate::clock::Clock;

    #[test]
    fn a_model_nobody_configured_gets_raw_and_a_binding_is_kept_per_model() {
        let catalog = test_catalog(Clock::starting_at(0));
        assert_eq!(
            catalog.package_format("Acme", "NB-1").unwrap(),
            PackageFormat::Raw
        );
        catalog
            .set_package_format("Acme", "NB-1", PackageFormat::Signed)
            .unwrap();
        catalog
            .set_package_format("Acme/EU", "x", PackageFormat::Packager)
            .unwrap();
        assert_eq!(
            catalog.package_format("Acme", "NB-1").unwrap(),
            PackageFormat::Signed
        );
        assert_eq!(
            catalog.package_format("Acme", "NB-2").unwrap(),
            PackageFormat::Raw
        );
        assert_eq!(
            catalog.package_format("Acme/EU", "x").unwrap(),
            PackageFormat::Packager
        );
        assert_eq!(
            catalog.package_format("Acme", "EU/x").unwrap(),
            PackageFormat::Raw,
            "names cannot reach another model's key"
        );
        assert_eq!(catalog.package_formats().unwrap().len(), 2);
        assert!(catalog.unbind_package_format("Acme", "NB-1").unwrap());
        assert!(!catalog.unbind_package_format("Acme", "NB-1").unwrap());
        assert_eq!(
            catalog.package_format("Acme", "NB-1").unwrap(),
            PackageFormat::Raw
        );
    }
}
