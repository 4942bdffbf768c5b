//! Groups: a vendor and a module model chosen at creation and locked, a name, and the devices
//! in it (only devices of that vendor and model), added by the operator or, in a group that
//! takes them automatically, when a device's vendor and model are first learned. Every device
//! that joins is announced ([`GroupJoin`]), so a running task picks it up.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use tokio::sync::broadcast;

use super::{Catalog, CatalogError, DeviceRecord, new_id};
use crate::clock::UnixMillis;
use crate::store::{Batch, StoreExt};
use crate::sync::lock;

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
    /// Whether a device of its vendor and model joins it by itself, when its first survey
    /// learns them (a device the operator removes later stays out).
    #[serde(default)]
    pub auto_join: bool,
    /// Those of its devices marked as test devices (white paper section 9): a task can run on
    /// them first, in a stage of their own. Always members; leaving the group unmarks them.
    #[serde(default)]
    pub test_devices: BTreeSet<String>,
    /// Creation time.
    pub created_at: UnixMillis,
}

impl Group {
    /// Takes `endpoint` out of the group (and its test devices); true when it was in.
    pub fn leave(&mut self, endpoint: &str) -> bool {
        self.test_devices.remove(endpoint);
        self.devices.remove(endpoint)
    }
}

/// Devices that joined a group (announced after the group was saved).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupJoin {
    /// The group.
    pub group_id: String,
    /// The endpoints that were not in it before.
    pub endpoints: Vec<String>,
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
            auto_join: false,
            test_devices: BTreeSet::new(),
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
        let _serialized = lock(&self.group_writes);
        let mut group = self.group(id)?;
        group.name = name.to_string();
        self.save_group(&group)?;
        Ok(group)
    }

    /// Adds devices; refuses the whole request, naming the device, if one is unknown or of
    /// another vendor or model.
    pub fn add_to_group(&self, id: &str, endpoints: &[String]) -> Result<Group, CatalogError> {
        let _serialized = lock(&self.group_writes);
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
        let joined = endpoints
            .iter()
            .filter(|endpoint| group.devices.insert((*endpoint).clone()))
            .cloned()
            .collect();
        self.save_group(&group)?;
        self.announce_join(&group.id, joined);
        Ok(group)
    }

    /// Whether devices of group `id` join it by themselves when first surveyed.
    pub fn set_auto_join(&self, id: &str, auto_join: bool) -> Result<Group, CatalogError> {
        let _serialized = lock(&self.group_writes);
        let mut group = self.group(id)?;
        group.auto_join = auto_join;
        self.save_group(&group)?;
        Ok(group)
    }

    /// Puts `device`, whose vendor and model its first survey just learned, in every group of
    /// that vendor and model that takes devices by itself.
    pub(super) fn auto_join(&self, device: &DeviceRecord) -> Result<(), CatalogError> {
        let (Some(vendor), Some(model)) = (&device.manufacturer, &device.model) else {
            return Ok(());
        };
        let _serialized = lock(&self.group_writes);
        let groups: Vec<Group> = self.store.scan(PREFIX)?;
        for mut group in groups {
            let takes = group.auto_join && &group.vendor == vendor && &group.model == model;
            if takes && group.devices.insert(device.endpoint.clone()) {
                self.save_group(&group)?;
                self.announce_join(&group.id, vec![device.endpoint.clone()]);
            }
        }
        Ok(())
    }

    /// Every later join, as it happens.
    pub fn subscribe_joins(&self) -> broadcast::Receiver<GroupJoin> {
        self.joins.subscribe()
    }

    fn announce_join(&self, group_id: &str, endpoints: Vec<String>) {
        if !endpoints.is_empty() {
            let join = GroupJoin {
                group_id: group_id.to_string(),
                endpoints,
            };
            // Nobody listening (no campaigns) is fine.
            let _ = self.joins.send(join);
        }
    }

    /// Removes devices from a group (absent ones are ignored).
    pub fn remove_from_group(&self, id: &str, endpoints: &[String]) -> Result<Group, CatalogError> {
        let _serialized = lock(&self.group_writes);
        let mut group = self.group(id)?;
        for endpoint in endpoints {
            group.leave(endpoint);
        }
        self.save_group(&group)?;
        Ok(group)
    }

    /// Marks devices of group `id` as test devices (`test`) or as ordinary ones (absent ones
    /// are ignored); marking refuses the whole request, naming the device, if one is not in
    /// the group.
    pub fn mark_test_devices(
        &self,
        id: &str,
        endpoints: &[String],
        test: bool,
    ) -> Result<Group, CatalogError> {
        let _serialized = lock(&self.group_writes);
        let mut group = self.group(id)?;
        let outsider = endpoints.iter().find(|e| !group.devices.contains(*e));
        if let Some(outsider) = outsider.filter(|_| test) {
            return Err(CatalogError::Invalid(format!(
                "device {outsider} is not in group {id}: add it to the group first"
            )));
        }
        for endpoint in endpoints {
            if test {
                group.test_devices.insert(endpoint.clone());
            } else {
                group.test_devices.remove(endpoint);
            }
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
