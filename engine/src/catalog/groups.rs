//! Groups: a vendor and a module model chosen at creation and locked, a name, and the devices
//! in it (only devices of that vendor and model).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{Catalog, CatalogError, new_id};
use crate::clock::UnixMillis;
use crate::store::{Batch, StoreExt};

/// Key prefix of group records.
const PREFIX: &str = "grp/";

/// A group of devices of one vendor and module model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Id.
    pub id: String,
    /// Name, editable.
    pub name: String,
    /// Manufacturer (/3/0/0), locked.
    pub vendor: String,
    /// Module model (/3/0/1), locked.
    pub model: String,
    /// Endpoints of its devices.
    pub devices: BTreeSet<String>,
    /// Creation time.
    pub created_at: UnixMillis,
}

impl Catalog {
    /// Creates an empty group for `vendor` and `model`.
    pub fn create_group(
        &self,
        name: &str,
        vendor: &str,
        model: &str,
    ) -> Result<Group, CatalogError> {
        if name.trim().is_empty() || vendor.trim().is_empty() || model.trim().is_empty() {
            return Err(CatalogError::Invalid(
                "a group needs a name, a vendor and a model".into(),
            ));
        }
        let group = Group {
            id: new_id("grp"),
            name: name.to_string(),
            vendor: vendor.to_string(),
            model: model.to_string(),
            devices: BTreeSet::new(),
            created_at: self.clock.now(),
        };
        self.save_group(&group)?;
        Ok(group)
    }

    /// The group `id`.
    pub fn group(&self, id: &str) -> Result<Group, CatalogError> {
        self.store
            .get(&group_key(id))?
            .ok_or_else(|| CatalogError::NotFound {
                kind: "group",
                id: id.to_string(),
            })
    }

    /// Every group.
    pub fn groups(&self) -> Result<Vec<Group>, CatalogError> {
        Ok(self.store.scan(PREFIX)?)
    }

    /// Renames a group (vendor and model stay).
    pub fn rename_group(&self, id: &str, name: &str) -> Result<Group, CatalogError> {
        if name.trim().is_empty() {
            return Err(CatalogError::Invalid("a group needs a name".into()));
        }
        let mut group = self.group(id)?;
        group.name = name.to_string();
        self.save_group(&group)?;
        Ok(group)
    }

    /// Adds devices; refuses the whole request, naming the device, if one is unknown or of
    /// another vendor or model.
    pub fn add_to_group(&self, id: &str, endpoints: &[String]) -> Result<Group, CatalogError> {
        let mut group = self.group(id)?;
        for endpoint in endpoints {
            let device = self.device(endpoint)?;
            let matches = device.manufacturer.as_deref() == Some(group.vendor.as_str())
                && device.model.as_deref() == Some(group.model.as_str());
            if !matches {
                return Err(CatalogError::Invalid(format!(
                    "device {endpoint} is {} {}, not {} {} like group {}",
                    device.manufacturer.as_deref().unwrap_or("(unknown vendor)"),
                    device.model.as_deref().unwrap_or("(unknown model)"),
                    group.vendor,
                    group.model,
                    group.id
                )));
            }
        }
        group.devices.extend(endpoints.iter().cloned());
        self.save_group(&group)?;
        Ok(group)
    }

    /// Removes devices from a group (absent ones are ignored).
    pub fn remove_from_group(&self, id: &str, endpoints: &[String]) -> Result<Group, CatalogError> {
        let mut group = self.group(id)?;
        for endpoint in endpoints {
            group.devices.remove(endpoint);
        }
        self.save_group(&group)?;
        Ok(group)
    }

    /// Deletes a group. The caller checks no task uses it.
    pub fn delete_group(&self, id: &str) -> Result<(), CatalogError> {
        self.group(id)?;
        let mut batch = Batch::new();
        batch.remove(group_key(id));
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(())
    }

    fn save_group(&self, group: &Group) -> Result<(), CatalogError> {
        Ok(self.store.put_durable(&group_key(&group.id), group)?)
    }
}

pub(super) fn group_key(id: &str) -> String {
    format!("{PREFIX}{id}")
}
